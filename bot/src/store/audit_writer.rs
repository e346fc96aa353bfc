//! The audit group-commit writer: one task that appends the audit row of every command and
//! click, many rows per transaction.

use std::{sync::Arc, time::Duration};

use tokio::sync::{Notify, mpsc, oneshot};

use super::{
    Store,
    audit::{Entry, Prepared, append_chained},
};

/// Appends rows that need no other write in their transaction (the audit row of every
/// command and click), committing them in groups: concurrent callers share one transaction.
/// A caller of [`AuditWriter::append`] waits until its row is committed; rows of
/// [`AuditWriter::queue`] are committed within [`LINGER`].
///
/// **Architecture Invariant:** a queued row is not lost to a failed commit (a store
/// restarting, a lock held too long): the writer keeps the rows nobody waits for and commits
/// them again, in their own transaction, for about two and a half minutes
/// ([`RETRY_TRIES`]), while it goes on committing new rows (so they may land after newer
/// ones). A caller who waits is told of a failure at once, never held: its command stops
/// there. Rows that still fail after that (a store down that long, or a row the store
/// refuses) are dropped with an error in the log, so they never block the rows after them.
/// A commit that reported an error is looked for first (its last row and hash): one that took
/// effect anyway is not committed a second time. While the store cannot say (it stays away),
/// its rows are held with that check, and committed again only once the store answers that
/// the commit did not land.
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

/// Attempts at the queued rows of a failed commit before they are dropped (with the pauses
/// above: about two and a half minutes).
const RETRY_TRIES: u32 = 35;

/// Most queued rows of failed commits kept for another attempt (the oldest go beyond it).
const RETRY_KEEP: usize = 100_000;

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
            let mut retry = Retry::default();
            loop {
                if retry.due() {
                    retry.attempt(&store).await;
                    continue;
                }
                let first = match retry.at {
                    None => rx.recv().await,
                    Some(at) => match tokio::time::timeout_at(at, rx.recv()).await {
                        Ok(first) => first,
                        Err(_) => continue,
                    },
                };
                let Some(first) = first else { break };
                let mut batch = gather(&mut rx, &wake, first, linger).await;
                // A flush waits for the rows queued before it, retried ones included.
                let flushes: Vec<Waiter> = batch
                    .extract_if(.., |(row, done)| row.is_none() && done.is_some())
                    .filter_map(|(_, done)| done)
                    .collect();
                let failed = commit(&store, batch).await;
                retry.keep(failed);
                retry.hold(flushes);
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

/// The queued rows of failed commits, oldest first, and when to try them again.
#[derive(Default)]
struct Retry {
    groups: Vec<Kept>,
    at: Option<tokio::time::Instant>,
    pause: Duration,
    tries: u32,
    /// Flushes waiting for these rows.
    flushes: Vec<Waiter>,
}

impl Retry {
    fn due(&self) -> bool {
        self.at.is_some_and(|at| tokio::time::Instant::now() >= at)
    }

    /// The rows kept for another attempt.
    fn rows(&self) -> usize {
        self.groups.iter().map(|g| g.rows.len()).sum()
    }

    /// Keeps the queued rows of a commit that just failed.
    fn keep(&mut self, failed: Option<Kept>) {
        let Some(failed) = failed.filter(|k| !k.rows.is_empty()) else {
            return;
        };
        self.groups.push(failed);
        let mut over = self.rows().saturating_sub(RETRY_KEEP);
        if over > 0 {
            tracing::error!(
                rows = over,
                "queued audit rows dropped: too many failed commits"
            );
        }
        while over > 0 {
            let oldest = &mut self.groups[0];
            let n = over.min(oldest.rows.len());
            oldest.rows.drain(..n);
            if oldest.rows.is_empty() {
                self.groups.remove(0);
            }
            over -= n;
        }
        if self.at.is_none() {
            self.pause = RETRY_FIRST;
            self.tries = 0;
            self.at = Some(tokio::time::Instant::now() + self.pause);
        }
    }

    /// Answers `flushes` at once when no row waits for another attempt, else when they are
    /// committed (or dropped).
    fn hold(&mut self, flushes: Vec<Waiter>) {
        if self.groups.is_empty() {
            for done in flushes {
                let _ = done.send(Ok(0));
            }
        } else {
            self.flushes.extend(flushes);
        }
    }

    /// Ends the retry: answers the flushes waiting for it.
    fn end(&mut self, result: Result<i64, String>) {
        for done in std::mem::take(&mut self.flushes) {
            let _ = done.send(result.clone());
        }
        *self = Retry::default();
    }

    /// Commits the kept rows in their own transaction; on failure waits longer, and after
    /// [`RETRY_TRIES`] attempts drops them. The kept rows of a commit whose outcome was not
    /// known are first looked for: they are dropped if it landed, and the attempt waits while
    /// the store cannot say.
    async fn attempt(&mut self, store: &Store) {
        let mut unsettled = None;
        let mut landed = Vec::new();
        for (i, group) in self.groups.iter_mut().enumerate() {
            let Some((seq, hash)) = &group.check else {
                continue;
            };
            match store.audit_has(*seq, hash).await {
                Ok(true) => landed.push(i),
                Ok(false) => group.check = None,
                Err(e) => {
                    unsettled = Some(e);
                    break;
                }
            }
        }
        for i in landed.into_iter().rev() {
            let group = self.groups.remove(i);
            tracing::warn!(
                rows = group.rows.len(),
                "audit commit reported an error but took effect; its rows are not committed again"
            );
        }
        if let Some(e) = unsettled {
            self.failed(e.context("the store cannot say yet whether a failed audit commit landed"));
            return;
        }
        if self.groups.is_empty() {
            self.end(Ok(0));
            return;
        }
        let rows: Vec<Prepared> = std::mem::take(&mut self.groups)
            .into_iter()
            .flat_map(|g| g.rows)
            .collect();
        match insert(store, &rows).await {
            Ok(_) => {
                tracing::info!(
                    rows = rows.len(),
                    "queued audit rows committed after a failed group commit"
                );
                self.end(Ok(0));
            }
            Err(e) => {
                self.groups = vec![Kept {
                    rows,
                    check: e.check,
                }];
                self.failed(e.error);
            }
        }
    }

    /// Counts a failed attempt: waits longer before the next, or drops the rows after
    /// [`RETRY_TRIES`].
    fn failed(&mut self, e: anyhow::Error) {
        let rows = self.rows();
        self.tries += 1;
        if self.tries >= RETRY_TRIES {
            tracing::error!(
                rows,
                tries = self.tries,
                error = format!("{e:#}"),
                "queued audit rows dropped: their commit kept failing"
            );
            self.end(Err(format!(
                "{rows} queued audit rows could not be committed"
            )));
            return;
        }
        self.pause = (self.pause * 2).min(RETRY_MAX);
        tracing::error!(
            rows,
            error = format!("{e:#}"),
            retry_in_ms = self.pause.as_millis() as u64,
            "queued audit rows still not committed"
        );
        self.at = Some(tokio::time::Instant::now() + self.pause);
    }
}

/// Queued rows of a failed commit, kept for another attempt.
struct Kept {
    rows: Vec<Prepared>,
    /// The last row's sequence number and hash when the commit failed at `COMMIT` and the
    /// store could not say whether it took effect: looked for before the rows go again.
    check: Option<(i64, String)>,
}

/// A failed [`insert`].
struct InsertError {
    error: anyhow::Error,
    /// Set when the outcome is unknown (see [`Kept::check`]).
    check: Option<(i64, String)>,
}

impl From<anyhow::Error> for InsertError {
    fn from(error: anyhow::Error) -> Self {
        InsertError { error, check: None }
    }
}

impl From<sqlx::Error> for InsertError {
    fn from(error: sqlx::Error) -> Self {
        InsertError {
            error: error.into(),
            check: None,
        }
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
/// waits for are returned when the commit fails.
async fn commit(store: &Store, mut batch: Vec<Item>) -> Option<Kept> {
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
            None
        }
        Err(InsertError { error: e, check }) => {
            let msg = format!("{e:#}");
            let queued = awaited.iter().filter(|a| !**a).count();
            tracing::error!(
                rows = rows.len(),
                queued,
                error = msg,
                "audit group commit failed; its queued rows will be committed again"
            );
            for (_, done) in batch {
                if let Some(done) = done {
                    let _ = done.send(Err(msg.clone()));
                }
            }
            let rows = rows
                .into_iter()
                .zip(awaited)
                .filter(|(_, awaited)| !awaited)
                .map(|(row, _)| row)
                .collect();
            Some(Kept { rows, check })
        }
    }
}

/// Appends `rows` in one transaction; their sequence numbers.
///
/// A commit can fail after it took effect (its answer lost with the connection). Committing
/// the rows again would then append them twice, so a failed commit is checked first: when the
/// group's last row is there with its hash, it landed. When the store cannot say within about
/// a second, the error carries that check for the caller to make later.
async fn insert(store: &Store, rows: &[Prepared]) -> Result<Vec<i64>, InsertError> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let mut tx = store.write().await?;
    let (seqs, head) = append_chained(&mut tx, store.backend(), rows).await?;
    let Err(e) = tx.commit().await else {
        return Ok(seqs);
    };
    let last = seqs.last().copied().unwrap_or_default();
    for pause in [0, 200, 800] {
        tokio::time::sleep(Duration::from_millis(pause)).await;
        match store.audit_has(last, &head).await {
            Ok(true) => {
                tracing::warn!(
                    rows = rows.len(),
                    error = %e,
                    "audit commit reported an error but took effect"
                );
                return Ok(seqs);
            }
            Ok(false) => return Err(e.into()),
            // The store is still away: look again (or leave the check to a later attempt).
            Err(_) => {}
        }
    }
    Err(InsertError {
        error: e.into(),
        check: Some((last, head)),
    })
}
