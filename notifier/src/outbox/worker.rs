//! The outbox worker: claims due rows, delivers them concurrently through the channel's
//! [`Deliverer`], and records each outcome (delivered, retry later with backoff, failed after
//! the last attempt).

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::{Deliverer, Delivery, Finish, OutboxStore, Outcome, backoff};

/// Settings of a worker.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Lease owner name (unique per process).
    pub owner: String,
    /// How long a claim lasts; a crashed worker's rows are re-claimed after it.
    pub lease: Duration,
    /// Rows claimed at once.
    pub batch: usize,
    /// Deliveries in flight at once.
    pub concurrency: usize,
    /// Attempts before a row is marked failed.
    pub max_attempts: u32,
    /// Pause when nothing was due.
    pub idle: Duration,
}

/// Delivers outbox rows until shut down.
pub struct Worker {
    store: Arc<dyn OutboxStore>,
    deliverers: HashMap<&'static str, Arc<dyn Deliverer>>,
    cfg: WorkerConfig,
}

impl Worker {
    /// A worker over `store` with these deliverers.
    pub fn new(
        store: Arc<dyn OutboxStore>,
        deliverers: Vec<Arc<dyn Deliverer>>,
        cfg: WorkerConfig,
    ) -> Self {
        Self {
            store,
            deliverers: deliverers.into_iter().map(|d| (d.channel(), d)).collect(),
            cfg,
        }
    }

    /// One round: claims a batch, delivers it, records the outcomes; returns how many rows
    /// it handled.
    pub async fn run_once(&self) -> anyhow::Result<usize> {
        let rows = self
            .store
            .claim(&self.cfg.owner, self.cfg.lease, self.cfg.batch)
            .await?;
        let n = rows.len();
        let results: Vec<(i64, Finish)> = futures::stream::iter(rows)
            .map(|d| async move {
                let outcome = match self.deliverers.get(d.channel.as_str()) {
                    Some(deliverer) => deliverer.deliver(&d).await,
                    None => Outcome::Failed {
                        error: format!("no deliverer for channel `{}`", d.channel),
                    },
                };
                (d.id, self.finish_of(&d, outcome))
            })
            .buffer_unordered(self.cfg.concurrency.max(1))
            .collect()
            .await;
        if !results.is_empty() {
            self.store.finish(&self.cfg.owner, &results).await?;
        }
        Ok(n)
    }

    fn finish_of(&self, d: &Delivery, outcome: Outcome) -> Finish {
        match outcome {
            Outcome::Delivered { receipt } => Finish::Delivered { receipt },
            Outcome::Failed { error } => Finish::Failed { error },
            Outcome::Retry { error, .. } if d.attempt >= self.cfg.max_attempts => Finish::Failed {
                error: format!("gave up after {} attempts: {error}", d.attempt),
            },
            Outcome::Retry { error, after } => {
                let wait = backoff(d.attempt, after);
                Finish::RetryAt {
                    at_ms: chrono::Utc::now().timestamp_millis() + wait.as_millis() as i64,
                    error,
                }
            }
        }
    }

    /// Runs rounds until `shutdown`; store errors are logged and retried.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            let pause = match self.run_once().await {
                Ok(0) => self.cfg.idle,
                Ok(_) => Duration::ZERO,
                Err(e) => {
                    tracing::warn!(error = format!("{e:#}"), "outbox round failed");
                    self.cfg.idle.max(Duration::from_secs(1))
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }
}
