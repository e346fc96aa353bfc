//! The audit group-commit writer: one task that appends the audit row of every command and
//! click, many rows per transaction.

use std::{sync::Arc, time::Duration};

use tokio::sync::{Notify, mpsc, oneshot};

use super::{
    Store,
    audit::{Entry, Prepared, append_many},
};

/// Appends rows that need no other write in their transaction (the audit row of every
/// command and click), committing them in groups: concurrent callers share one transaction.
/// A caller of [`AuditWriter::append`] waits until its row is committed; rows of
/// [`AuditWriter::queue`] are committed within [`LINGER`].
///
/// **Architecture Invariant:** a queued row is never lost to a failed commit (a store
/// restarting, a lock held too long): the writer keeps the rows nobody waits for and commits
/// them again, first and alone, until they are in, before it takes anything else. A caller
/// who waits is told of the failure instead, so its command stops there.
#[derive(Clone)]
pub struct AuditWriter {
    tx: mpsc::Sender<Item>,
    /// Wakes a lingering writer when someone waits for a commit.
    waiting: Arc<Notify>,
}

/// A row to append (or, with `None`, a flush marker) and who waits for its sequence number
/// (`None`: nobody, a queued row).
type Item = (Option<Prepared>, Option<Waiter>);

type Waiter = oneshot::Sender<Result<i64, String>>;

/// Rows queued at most this many at once in the channel (callers then wait: backpressure).
const QUEUE: usize = 4096;

/// Most rows committed in one transaction.
const GROUP_MAX: usize = 512;

/// How long queued rows may wait for more rows to share their transaction when nobody waits
/// for them. Under a burst of read-only commands this turns thousands of small transactions a
/// second (each a WAL commit and several round trips to SQLite's thread, each a thread
/// wake-up competing with request handling for the CPU) into about a hundred. It is also
/// the most a crash can lose of them (rows about a change are always awaited).
pub const LINGER: Duration = Duration::from_millis(10);

/// The first pause before committing again the queued rows of a failed commit; it doubles
/// up to [`RETRY_MAX`] while the store keeps failing.
const RETRY_FIRST: Duration = Duration::from_millis(100);

/// The longest pause between two attempts at the queued rows of a failed commit.
const RETRY_MAX: Duration = Duration::from_secs(5);

/// The longest [`AuditWriter::flush`] waits: a store that stays unreachable must not hold a
/// process's exit forever.
const FLUSH_LIMIT: Duration = Duration::from_secs(30);

impl AuditWriter {
    /// Starts the writer task on the current runtime.
    pub fn spawn(store: Store) -> AuditWriter {
        AuditWriter::spawn_with(store, LINGER)
    }

    /// [`AuditWriter::spawn`] with another linger (tests).
    pub fn spawn_with(store: Store, linger: Duration) -> AuditWriter {
        let (tx, mut rx) = mpsc::channel::<Item>(QUEUE);
        let waiting = Arc::new(Notify::new());
        let wake = waiting.clone();
        tokio::spawn(async move {
            // Queued rows of a failed commit, oldest first: committed before anything else.
            let mut failed: Vec<Prepared> = Vec::new();
            let mut pause = RETRY_FIRST;
            loop {
                if !failed.is_empty() {
                    tokio::time::sleep(pause).await;
                    match insert(&store, &failed).await {
                        Ok(_) => {
                            tracing::info!(
                                rows = failed.len(),
                                "queued audit rows committed after a failed group commit"
                            );
                            failed.clear();
                            pause = RETRY_FIRST;
                        }
                        Err(e) => {
                            tracing::error!(
                                rows = failed.len(),
                                error = format!("{e:#}"),
                                retry_in_ms = pause.as_millis() as u64,
                                "queued audit rows still not committed"
                            );
                            pause = (pause * 2).min(RETRY_MAX);
                        }
                    }
                    continue;
                }
                let Some(first) = rx.recv().await else { break };
                let batch = gather(&mut rx, &wake, first, linger).await;
                commit(&store, batch, &mut failed).await;
            }
        });
        AuditWriter { tx, waiting }
    }

    /// Queues one row for the next group commit without waiting for it (for the rows of
    /// read-only commands: a crash may lose the last [`LINGER`] of them, never a row about a
    /// change). Waits only while the queue is full.
    pub async fn queue(&self, entry: Entry) -> anyhow::Result<()> {
        self.tx
            .send((Some(entry.into()), None))
            .await
            .map_err(|_| anyhow::anyhow!("the audit writer stopped"))
    }

    /// Waits until every row queued before this call is committed (before the process
    /// exits), at most [`FLUSH_LIMIT`].
    pub async fn flush(&self) -> anyhow::Result<()> {
        tokio::time::timeout(FLUSH_LIMIT, self.wait_for(None))
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "queued audit rows are still not committed after {} s (is the store \
                     reachable?)",
                    FLUSH_LIMIT.as_secs()
                )
            })?
            .map(|_| ())
    }

    /// Appends one row; returns its sequence number once it is committed.
    pub async fn append(&self, entry: Entry) -> anyhow::Result<i64> {
        self.wait_for(Some(entry.into())).await
    }

    async fn wait_for(&self, row: Option<Prepared>) -> anyhow::Result<i64> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send((row, Some(done)))
            .await
            .map_err(|_| anyhow::anyhow!("the audit writer stopped"))?;
        self.waiting.notify_one();
        wait.await
            .map_err(|_| anyhow::anyhow!("the audit writer stopped"))?
            .map_err(|e| anyhow::anyhow!("audit write failed: {e}"))
    }
}

/// Takes what is queued after `first`, up to [`GROUP_MAX`]. While nobody waits, lingers up to
/// `linger` for more; an item someone waits for ends the wait at once.
async fn gather(
    rx: &mut mpsc::Receiver<Item>,
    waiting: &Notify,
    first: Item,
    linger: Duration,
) -> Vec<Item> {
    let deadline = tokio::time::sleep(linger);
    tokio::pin!(deadline);
    let mut awaited = first.1.is_some();
    let mut batch = vec![first];
    let mut last_pass = false;
    loop {
        while batch.len() < GROUP_MAX {
            let Ok(item) = rx.try_recv() else { break };
            awaited |= item.1.is_some();
            batch.push(item);
        }
        if awaited || last_pass || batch.len() >= GROUP_MAX {
            return batch;
        }
        tokio::select! {
            // A waiter announces itself after its item is in the channel: the next pass
            // takes it.
            _ = waiting.notified() => {}
            // One last pass for what came during the sleep, then commit.
            _ = &mut deadline => last_pass = true,
        }
    }
}

/// Appends the batch's rows in one transaction and answers everyone waiting. The rows nobody
/// waits for are moved to `failed` when the commit fails.
async fn commit(store: &Store, mut batch: Vec<Item>, failed: &mut Vec<Prepared>) {
    // Which items are rows (the others are flush markers), then the rows themselves, moved
    // out, and whether someone waits for each.
    let is_row: Vec<bool> = batch.iter().map(|(e, _)| e.is_some()).collect();
    let mut rows = Vec::with_capacity(batch.len());
    let mut awaited = Vec::with_capacity(batch.len());
    for (row, done) in &mut batch {
        if let Some(row) = row.take() {
            rows.push(row);
            awaited.push(done.is_some());
        }
    }
    match insert(store, &rows).await {
        Ok(seqs) => {
            let mut seqs = seqs.into_iter();
            for ((_, done), row) in batch.into_iter().zip(is_row) {
                let seq = if row { seqs.next().unwrap_or(0) } else { 0 };
                if let Some(done) = done {
                    let _ = done.send(Ok(seq));
                }
            }
        }
        Err(e) => {
            let msg = format!("{e:#}");
            let queued = awaited.iter().filter(|a| !**a).count();
            tracing::error!(
                rows = rows.len(),
                queued,
                error = msg,
                "audit group commit failed; its queued rows will be committed again"
            );
            failed.extend(
                rows.into_iter()
                    .zip(awaited)
                    .filter(|(_, awaited)| !awaited)
                    .map(|(row, _)| row),
            );
            for (_, done) in batch {
                if let Some(done) = done {
                    let _ = done.send(Err(msg.clone()));
                }
            }
        }
    }
}

/// Appends `rows` in one transaction; their sequence numbers.
async fn insert(store: &Store, rows: &[Prepared]) -> anyhow::Result<Vec<i64>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let mut tx = store.write().await?;
    let seqs = append_many(&mut tx, store.backend(), rows).await?;
    tx.commit().await?;
    Ok(seqs)
}
