//! The engine of `send_many`: a dispatcher task pulls emails from the caller's stream and
//! hands them to N connection workers, each owning one SMTP connection (reused, reconnected
//! after failures); temporary failures come back after their backoff; every settled email is
//! reported once on the output channel.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::channel::mpsc as fmpsc;
use futures::{FutureExt, SinkExt, Stream, StreamExt};
use tokio::sync::{Notify, mpsc};

use super::bulk::{BulkOptions, Delivery};
use super::error::SendError;
use super::mailer::Mailer;
use super::message::OutgoingEmail;
use super::rate::RateLimiter;
use super::smtp::{Connection, Outcome, Prepared};

/// What the engine sends: emails built one by one (`Mailer`, for `send_many`) or the
/// recipients of a campaign.
pub(super) trait Letters: Send + Sync + 'static {
    /// One message to send.
    type Item: Send + 'static;
    /// What one worker builds messages with.
    type Writer: Send + 'static;
    /// A worker's writer: its own copy of what the messages share, where they share
    /// reference-counted parts, so that workers on different threads do not contend for one
    /// counter.
    fn writer(&self) -> Self::Writer;
    /// The message on the wire (an `Invalid` error when it cannot be built).
    fn prepare(writer: &Self::Writer, item: &Self::Item) -> Result<Prepared, SendError>;
    /// Its Message-ID as given.
    fn message_id(item: &Self::Item) -> &str;
    /// Its Message-ID and recipient as given, for its `Delivery`.
    fn into_ids(item: Self::Item) -> (String, String);
}

impl Letters for Mailer {
    type Item = OutgoingEmail;
    type Writer = Mailer;

    fn writer(&self) -> Mailer {
        self.clone()
    }

    fn prepare(writer: &Mailer, item: &OutgoingEmail) -> Result<Prepared, SendError> {
        Mailer::prepare(writer, item)
    }

    fn message_id(item: &OutgoingEmail) -> &str {
        &item.message_id
    }

    fn into_ids(item: OutgoingEmail) -> (String, String) {
        (item.message_id, item.to)
    }
}

/// One message on its way, with what is kept across its attempts.
struct Job<T> {
    item: T,
    /// Built once, so every attempt carries the same Message-ID and Date.
    prepared: Option<Prepared>,
    attempts: u32,
    backoff: Duration,
}

/// What workers and retry timers tell the dispatcher.
enum Event<T> {
    /// Settled messages, a window's worth at a time.
    Done(Vec<Delivery>),
    Retry(Job<T>),
}

/// The jobs waiting for a worker: the dispatcher adds them a batch at a time, each worker
/// takes as many as it sends at once (one, or a window).
struct Queue<T> {
    state: std::sync::Mutex<(VecDeque<Job<T>>, bool)>,
    ready: Notify,
}

impl<T> Queue<T> {
    fn new() -> Self {
        Self {
            state: std::sync::Mutex::new((VecDeque::new(), false)),
            ready: Notify::new(),
        }
    }

    fn push(&self, jobs: impl IntoIterator<Item = Job<T>>) {
        self.state.lock().expect("queue lock").0.extend(jobs);
        self.ready.notify_waiters();
    }

    /// Drops the jobs not yet taken.
    fn clear(&self) {
        self.state.lock().expect("queue lock").0.clear();
    }

    /// No more jobs will come: workers finish once the queue is empty.
    fn close(&self) {
        self.state.lock().expect("queue lock").1 = true;
        self.ready.notify_waiters();
    }

    /// Up to `n` jobs, waiting for the first; none once the queue is closed and empty.
    async fn take(&self, n: usize) -> Vec<Job<T>> {
        loop {
            let notified = self.ready.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            {
                let mut state = self.state.lock().expect("queue lock");
                let (jobs, closed) = &mut *state;
                if !jobs.is_empty() {
                    let k = n.min(jobs.len());
                    return jobs.drain(..k).collect();
                }
                if *closed {
                    return Vec::new();
                }
            }
            notified.await;
        }
    }
}

/// Settings shared by the workers.
struct Shared<L: Letters> {
    mailer: Mailer,
    letters: L,
    options: BulkOptions,
    limiter: Option<RateLimiter>,
    jobs: Queue<L::Item>,
    events: mpsc::UnboundedSender<Event<L::Item>>,
}

/// Starts the dispatcher and `workers` workers on the current runtime; the returned stream
/// yields one `Delivery` per email. Dropping it stops the send after the messages in flight.
pub(super) fn start<L: Letters, S>(
    mailer: Mailer,
    letters: L,
    emails: S,
    options: BulkOptions,
    workers: usize,
) -> impl Stream<Item = Delivery> + Send + 'static
where
    S: Stream<Item = L::Item> + Send + 'static,
{
    // Emails taken from the input and not yet reported: two windows per worker, so each
    // worker has its next window at hand while retries wait; with very many workers, fewer
    // (a few thousand emails in memory at most).
    let cap = (workers * WINDOW * 2).min(workers * 2 + 4096);
    let (event_tx, event_rx) = mpsc::unbounded_channel();
    let (out_tx, out_rx) = fmpsc::channel::<Vec<Delivery>>(workers);
    let limiter = options.rate_limit.and_then(RateLimiter::new);
    let shared = Arc::new(Shared {
        mailer,
        letters,
        options,
        limiter,
        jobs: Queue::new(),
        events: event_tx,
    });
    for _ in 0..workers {
        tokio::spawn(worker(shared.clone()));
    }
    tokio::spawn(dispatch(emails, shared, event_rx, out_tx, cap));
    out_rx.flat_map(futures::stream::iter)
}

async fn dispatch<L: Letters, S>(
    emails: S,
    shared: Arc<Shared<L>>,
    mut events: mpsc::UnboundedReceiver<Event<L::Item>>,
    mut out: fmpsc::Sender<Vec<Delivery>>,
    cap: usize,
) where
    S: Stream<Item = L::Item> + Send + 'static,
{
    let backoff = shared.options.retry_backoff;
    let jobs = &shared.jobs;
    let mut emails = std::pin::pin!(emails);
    let mut input_done = false;
    let mut outstanding = 0usize;
    while !(input_done && outstanding == 0) {
        tokio::select! {
            biased;
            event = events.recv() => match event {
                Some(Event::Done(done)) => {
                    outstanding -= done.len();
                    if out.send(done).await.is_err() {
                        // The caller dropped the stream: only the messages in flight finish.
                        jobs.clear();
                        break;
                    }
                }
                Some(Event::Retry(job)) => jobs.push([job]),
                None => break,
            },
            email = emails.next(), if !input_done && outstanding < cap => match email {
                Some(email) => {
                    // This one and those already at hand, up to a window, go as one batch.
                    let mut batch = Vec::with_capacity(WINDOW);
                    let mut email = Some(email);
                    while let Some(item) = email.take() {
                        outstanding += 1;
                        batch.push(Job { item, prepared: None, attempts: 0, backoff });
                        if batch.len() == WINDOW || outstanding >= cap {
                            break;
                        }
                        match emails.next().now_or_never() {
                            Some(Some(next)) => email = Some(next),
                            Some(None) => input_done = true,
                            None => {}
                        }
                    }
                    jobs.push(batch);
                }
                None => input_done = true,
            },
        }
    }
    // Closing the queue lets the workers finish and QUIT; the events channel closes when the
    // last one is done, and only then does the caller's stream end (with every connection
    // closed, so a caller that exits or blocks next cuts no session short).
    jobs.close();
    drop(shared);
    while events.recv().await.is_some() {}
}

/// Messages one worker sends as one window when its server offers CHUNKING and PIPELINING.
pub(super) const WINDOW: usize = 64;

async fn worker<L: Letters>(shared: Arc<Shared<L>>) {
    let writer = shared.letters.writer();
    let mut conn: Option<Connection> = None;
    // One message at a time until a connection shows it takes windows.
    let mut window = 1;
    loop {
        let mut jobs = shared.jobs.take(window).await;
        if jobs.is_empty() {
            break;
        }
        // Each job keeps its message in `prepared` (built on its first attempt); jobs stay
        // where they are, since moving them is a good part of the cost of a message.
        let mut done = Vec::with_capacity(jobs.len());
        let mut invalid = Vec::new();
        for (k, job) in jobs.iter_mut().enumerate() {
            if job.prepared.is_none() {
                match L::prepare(&writer, &job.item) {
                    Ok(p) => job.prepared = Some(p),
                    Err(e) => {
                        invalid.push((k, e));
                        continue;
                    }
                }
            }
            job.attempts += 1;
            if let Some(l) = &shared.limiter {
                l.acquire().await;
            }
        }
        for (k, e) in invalid.into_iter().rev() {
            done.push(delivery::<L>(jobs.remove(k), Err(e)));
        }
        let messages: Vec<&Prepared> = jobs.iter().filter_map(|j| j.prepared.as_ref()).collect();
        let results = if messages.is_empty() {
            Vec::new()
        } else {
            attempt(&shared, &mut conn, &messages).await
        };
        drop(messages);
        if let Some(c) = &conn {
            window = if c.windowed() { WINDOW } else { 1 };
        }
        for (mut job, result) in jobs.into_iter().zip(results) {
            match result {
                Err(e) if e.is_temporary() && job.attempts < shared.options.max_attempts => {
                    tracing::debug!(message_id = %L::message_id(&job.item), attempts = job.attempts,
                        error = %e, "email retry");
                    let wait = job.backoff;
                    job.backoff = (job.backoff * 2).min(shared.options.max_backoff);
                    let events = shared.events.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(wait).await;
                        let _ = events.send(Event::Retry(job));
                    });
                }
                result => done.push(delivery::<L>(job, result)),
            }
        }
        if !done.is_empty() {
            let _ = shared.events.send(Event::Done(done));
        }
    }
    if let Some(c) = conn {
        c.quit().await;
    }
}

/// One attempt of each message on the worker's connection, opening it when needed: one
/// pipelined window when the server offers CHUNKING, else one transaction after another.
/// Messages that a broken connection left surely not taken (nothing of theirs written, or
/// nothing answered on a reused connection that the server had closed) are sent again at
/// once on a new connection, as part of the same attempt.
async fn attempt<L: Letters>(
    shared: &Shared<L>,
    conn: &mut Option<Connection>,
    messages: &[&Prepared],
) -> Vec<Result<(), SendError>> {
    let target = shared.mailer.target();
    let mut reused = conn.is_some();
    let mut results: Vec<Option<Result<(), SendError>>> = messages.iter().map(|_| None).collect();
    let mut pending: Vec<usize> = (0..messages.len()).collect();
    while !pending.is_empty() {
        let c = match conn {
            Some(c) => c,
            None => match Connection::connect(target).await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    let e = shared.mailer.scrub(e);
                    for i in pending {
                        results[i] = Some(Err(e.clone()));
                    }
                    break;
                }
            },
        };
        let mut again = Vec::new();
        let mut usable = true;
        if c.windowed() {
            let list: Vec<&Prepared> = pending.iter().map(|&i| messages[i]).collect();
            let window = c.send_window(&list).await;
            usable = window.reusable;
            for (&i, outcome) in pending.iter().zip(window.outcomes) {
                settle(shared, &mut results[i], &mut again, i, outcome, reused);
            }
        } else {
            for &i in &pending {
                if !usable {
                    again.push(i); // not tried: the connection broke before it
                    continue;
                }
                let outcome = c.send(messages[i]).await;
                usable = outcome.reusable;
                settle(shared, &mut results[i], &mut again, i, outcome, reused);
            }
        }
        if !usable {
            *conn = None;
        }
        reused = false;
        pending = again;
    }
    results
        .into_iter()
        .map(|r| r.expect("every message has a result"))
        .collect()
}

/// Records `outcome` as message `i`'s result, or queues it in `again` when a reused
/// connection broke before the server could take it.
fn settle<L: Letters>(
    shared: &Shared<L>,
    result: &mut Option<Result<(), SendError>>,
    again: &mut Vec<usize>,
    i: usize,
    outcome: Outcome,
    reused: bool,
) {
    let broken = matches!(
        &outcome.result,
        Err(SendError::Temporary { code: None, .. })
    );
    if reused && broken && outcome.before_content && !outcome.reusable {
        again.push(i);
    } else {
        *result = Some(outcome.result.map_err(|e| shared.mailer.scrub(e)));
    }
}

fn delivery<L: Letters>(job: Job<L::Item>, result: Result<(), SendError>) -> Delivery {
    let (message_id, to) = L::into_ids(job.item);
    Delivery {
        message_id,
        to,
        attempts: job.attempts,
        result,
    }
}
