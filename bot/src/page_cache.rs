//! One build at a time of a public page's model, shared by every request that waits for it:
//! a burst of visitors (an incident's status page in a thousand tabs) costs one set of store
//! queries at a time, never the whole pool that approvals and run leases need, and no answer
//! was built before its request arrived.

use std::{future::Future, sync::Arc, time::Instant};

/// The last model built and when its build started.
pub struct Coalesced<T>(tokio::sync::Mutex<Option<(Instant, Arc<T>)>>);

impl<T> Default for Coalesced<T> {
    fn default() -> Self {
        Coalesced(tokio::sync::Mutex::new(None))
    }
}

impl<T> Coalesced<T> {
    /// The model as it stands now: one built since this call began (by a call that was
    /// already building when it began waiting), else a fresh `build`. Errors are not kept.
    pub async fn get<F, Fut>(&self, build: F) -> anyhow::Result<Arc<T>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = anyhow::Result<T>>,
    {
        let arrived = Instant::now();
        let mut slot = self.0.lock().await;
        if let Some((started, model)) = slot.as_ref()
            && *started >= arrived
        {
            return Ok(model.clone());
        }
        let started = Instant::now();
        let model = Arc::new(build().await?);
        *slot = Some((started, model.clone()));
        Ok(model)
    }
}

/// The public pages' models.
#[derive(Default)]
pub struct PageModels {
    /// `/status`, `/status.json`, `/status/feed.atom`.
    pub status: Coalesced<notifier::page::PageModel>,
    /// `/status/history` and its charts.
    pub history: Coalesced<notifier::page::history::HistoryModel>,
}

#[cfg(test)]
mod tests {
    use std::{
        sync::atomic::{AtomicUsize, Ordering},
        time::Duration,
    };

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_shares_builds_and_no_answer_is_older_than_its_request() {
        let cache = Arc::new(Coalesced::<usize>::default());
        let builds = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (cache, builds) = (cache.clone(), builds.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .get(|| async {
                        // Long enough that all 50 ask while it runs, however slow the spawning.
                        tokio::time::sleep(Duration::from_millis(1000)).await;
                        Ok(builds.fetch_add(1, Ordering::SeqCst) + 1)
                    })
                    .await
                    .unwrap()
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let n = builds.load(Ordering::SeqCst);
        assert!(n <= 2, "50 requests at once made {n} builds");
        // A request after the burst gets a new build, not the old model.
        let later = cache
            .get(|| async { Ok(builds.fetch_add(1, Ordering::SeqCst) + 1) })
            .await
            .unwrap();
        assert_eq!(*later, n + 1);
        // Errors are not kept.
        let failed = cache.get(|| async { anyhow::bail!("store down") }).await;
        assert!(failed.is_err());
        let again = cache.get(|| async { Ok(99) }).await.unwrap();
        assert_eq!(*again, 99);
    }
}
