//! The outbox worker: claims due rows, delivers them concurrently through the channel's
//! [`Deliverer`], and records each outcome (delivered, retry later with backoff, failed after
//! the last attempt) as soon as it is known.
//!
//! A delivery holds its place among the `concurrency` in flight until its outcome is
//! committed: outcomes that arrive while a commit runs go together in the next one (group
//! commit), so at most `concurrency` rows are ever delivered but not yet recorded. A channel
//! whose deliverer takes rows in bulk (`Deliverer::deliver_many`, customer email) gets all its
//! rows of the round at once, and at most those (`batch`) are delivered but not recorded.
//! That bounds what a crash can make a peer receive twice (see the outbox's invariant).
//!
//! A worker claims only the channels it has deliverers for: several workers over one store
//! are lanes (drbot runs customer email in one and status page and chat in another, so a
//! mass send's rounds never hold back a status update). A row of a channel no worker
//! delivers stays pending.

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures::{StreamExt, stream::BoxStream};
use tokio::sync::{mpsc, oneshot};
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

/// An outcome waiting to be committed, and whom to tell when it is.
type Pending = ((i64, Finish), oneshot::Sender<()>);

/// Delivers outbox rows until shut down.
pub struct Worker {
    store: Arc<dyn OutboxStore>,
    deliverers: HashMap<&'static str, Arc<dyn Deliverer>>,
    /// The deliverers' channels: what this worker claims.
    channels: Vec<&'static str>,
    cfg: WorkerConfig,
}

impl Worker {
    /// A worker over `store` with these deliverers.
    pub fn new(
        store: Arc<dyn OutboxStore>,
        deliverers: Vec<Arc<dyn Deliverer>>,
        cfg: WorkerConfig,
    ) -> Self {
        let deliverers: HashMap<&'static str, Arc<dyn Deliverer>> =
            deliverers.into_iter().map(|d| (d.channel(), d)).collect();
        let mut channels: Vec<&'static str> = deliverers.keys().copied().collect();
        channels.sort_unstable();
        Self {
            store,
            deliverers,
            channels,
            cfg,
        }
    }

    /// The channels this worker claims and delivers.
    pub fn channels(&self) -> &[&'static str] {
        &self.channels
    }

    /// One round: claims a batch, delivers it, records each outcome as it comes; returns how
    /// many rows it handled.
    pub async fn run_once(&self) -> anyhow::Result<usize> {
        if self.channels.is_empty() {
            return Ok(0);
        }
        let rows = self
            .store
            .claim(
                &self.cfg.owner,
                self.cfg.lease,
                self.cfg.batch,
                &self.channels,
            )
            .await?;
        let n = rows.len();
        if n == 0 {
            return Ok(0);
        }
        let (tx, rx) = mpsc::unbounded_channel::<Pending>();
        let concurrency = self.cfg.concurrency.max(1);
        let (rows, bulk) = self.split_bulk(rows);
        let bulk_tx = tx.clone();
        let bulk = async move {
            for (attempts, stream) in bulk {
                // Outcomes go to `record` as they come, a ready chunk at a time; the next
                // chunk is taken once this one is committed.
                let mut chunks = stream.ready_chunks(1024);
                while let Some(chunk) = chunks.next().await {
                    let mut last = None;
                    for (id, outcome) in chunk {
                        let attempt = attempts.get(&id).copied().unwrap_or(1);
                        let (done, recorded) = oneshot::channel();
                        if bulk_tx
                            .send(((id, self.finish_of(attempt, outcome)), done))
                            .is_ok()
                        {
                            last = Some(recorded);
                        }
                    }
                    if let Some(recorded) = last {
                        let _ = recorded.await;
                    }
                }
            }
        };
        // Owns the sender, so `record` sees the channel close once every delivery is done.
        let deliveries = async move {
            futures::stream::iter(rows)
                .map(|d| {
                    let tx = tx.clone();
                    async move {
                        let outcome = match self.deliverers.get(d.channel.as_str()) {
                            Some(deliverer) => deliverer.deliver(&d).await,
                            None => Outcome::Failed {
                                error: format!("no deliverer for channel `{}`", d.channel),
                            },
                        };
                        let (done, recorded) = oneshot::channel();
                        if tx
                            .send(((d.id, self.finish_of(d.attempt, outcome)), done))
                            .is_ok()
                        {
                            // Keep this slot until the outcome is committed.
                            let _ = recorded.await;
                        }
                    }
                })
                .buffer_unordered(concurrency)
                .collect::<()>()
                .await;
        };
        let ((), (), recorded) = tokio::select! {
            done = async { tokio::join!(deliveries, bulk, self.record(rx)) } => done,
            never = self.keep_leases() => match never {},
        };
        recorded.map(|()| n)
    }

    /// Extends the round's leases every third of a lease, for as long as the round runs
    /// (never returns): a round may outlast its lease, its rows must not be re-claimed.
    async fn keep_leases(&self) -> std::convert::Infallible {
        let every = (self.cfg.lease / 3).max(Duration::from_millis(10));
        loop {
            tokio::time::sleep(every).await;
            if let Err(e) = self
                .store
                .extend(&self.cfg.owner, self.cfg.lease, &self.channels)
                .await
            {
                tracing::warn!(error = format!("{e:#}"), "extending outbox leases failed");
            }
        }
    }

    /// Hands the rows of each channel whose deliverer takes them in bulk to it (with each
    /// row's attempt number, by id); returns the other rows, in id order, and the streams.
    #[allow(clippy::type_complexity)]
    fn split_bulk(
        &self,
        rows: Vec<Delivery>,
    ) -> (
        Vec<Delivery>,
        Vec<(HashMap<i64, u32>, BoxStream<'static, (i64, Outcome)>)>,
    ) {
        let mut by_channel: HashMap<String, Vec<Delivery>> = HashMap::new();
        for row in rows {
            by_channel.entry(row.channel.clone()).or_default().push(row);
        }
        let mut single = Vec::new();
        let mut bulk = Vec::new();
        for (channel, group) in by_channel {
            let Some(deliverer) = self.deliverers.get(channel.as_str()) else {
                single.extend(group);
                continue;
            };
            let attempts: HashMap<i64, u32> = group.iter().map(|d| (d.id, d.attempt)).collect();
            match deliverer.deliver_many(group) {
                Ok(stream) => bulk.push((attempts, stream)),
                Err(group) => single.extend(group),
            }
        }
        single.sort_by_key(|d| d.id);
        (single, bulk)
    }

    /// Commits outcomes as they arrive, each commit taking all that are waiting; returns the
    /// first store error (the rows it concerned stay claimed and are re-delivered after the
    /// lease).
    async fn record(&self, mut rx: mpsc::UnboundedReceiver<Pending>) -> anyhow::Result<()> {
        let mut first_error = None;
        while let Some(first) = rx.recv().await {
            let mut group = vec![first];
            while let Ok(more) = rx.try_recv() {
                group.push(more);
            }
            let (results, acks): (Vec<(i64, Finish)>, Vec<oneshot::Sender<()>>) =
                group.into_iter().unzip();
            if let Err(e) = self.store.finish(&self.cfg.owner, &results).await {
                first_error.get_or_insert(e);
            }
            for ack in acks {
                let _ = ack.send(());
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// What to record for a row whose attempt number `attempt` ended in `outcome`.
    fn finish_of(&self, attempt: u32, outcome: Outcome) -> Finish {
        match outcome {
            Outcome::Delivered { receipt } => Finish::Delivered { receipt },
            Outcome::Failed { error } => Finish::Failed { error },
            Outcome::Retry { error, .. } if attempt >= self.cfg.max_attempts => Finish::Failed {
                error: format!("gave up after {attempt} attempts: {error}"),
            },
            Outcome::Retry { error, after } => {
                let wait = backoff(attempt, after);
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
