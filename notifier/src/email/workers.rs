//! The engine of `send_many`: a dispatcher task pulls emails from the caller's stream and
//! hands them to N connection workers, each owning one SMTP connection (reused, reconnected
//! after failures); temporary failures come back after their backoff; every settled email is
//! reported once on the output channel.

use std::sync::Arc;
use std::time::Duration;

use futures::channel::mpsc as fmpsc;
use futures::{SinkExt, Stream, StreamExt};
use tokio::sync::{Mutex, mpsc};

use super::bulk::{BulkOptions, Delivery};
use super::error::SendError;
use super::mailer::Mailer;
use super::message::OutgoingEmail;
use super::rate::RateLimiter;
use super::smtp::{Connection, Prepared};

/// One email on its way, with what is kept across its attempts.
struct Job {
    email: OutgoingEmail,
    /// Built once, so every attempt carries the same Message-ID and Date.
    prepared: Option<Prepared>,
    attempts: u32,
    backoff: Duration,
}

/// What workers and retry timers tell the dispatcher.
enum Event {
    Done(Delivery),
    Retry(Job),
}

/// Settings shared by the workers.
struct Shared {
    mailer: Mailer,
    options: BulkOptions,
    limiter: Option<RateLimiter>,
    jobs: Mutex<mpsc::Receiver<Job>>,
    events: mpsc::UnboundedSender<Event>,
}

/// Starts the dispatcher and `workers` workers on the current runtime; the returned stream
/// yields one `Delivery` per email. Dropping it stops the send after the messages in flight.
pub(super) fn start<S>(
    mailer: Mailer,
    emails: S,
    options: BulkOptions,
    workers: usize,
) -> impl Stream<Item = Delivery> + Send + 'static
where
    S: Stream<Item = OutgoingEmail> + Send + 'static,
{
    let (job_tx, job_rx) = mpsc::channel(workers);
    let (event_tx, event_rx) = mpsc::unbounded_channel();
    let (out_tx, out_rx) = fmpsc::channel(workers);
    let limiter = options.rate_limit.and_then(RateLimiter::new);
    let shared = Arc::new(Shared {
        mailer,
        options,
        limiter,
        jobs: Mutex::new(job_rx),
        events: event_tx,
    });
    for _ in 0..workers {
        tokio::spawn(worker(shared.clone()));
    }
    let backoff = shared.options.retry_backoff;
    drop(shared);
    // Emails taken from the input and not yet reported: twice the workers, so each worker has
    // its next email at hand while retries wait.
    let cap = workers * 2;
    tokio::spawn(dispatch(emails, job_tx, event_rx, out_tx, cap, backoff));
    out_rx
}

async fn dispatch<S>(
    emails: S,
    jobs: mpsc::Sender<Job>,
    mut events: mpsc::UnboundedReceiver<Event>,
    mut out: fmpsc::Sender<Delivery>,
    cap: usize,
    backoff: Duration,
) where
    S: Stream<Item = OutgoingEmail> + Send + 'static,
{
    let mut emails = std::pin::pin!(emails);
    let mut input_done = false;
    let mut outstanding = 0usize;
    while !(input_done && outstanding == 0) {
        tokio::select! {
            biased;
            event = events.recv() => match event {
                Some(Event::Done(d)) => {
                    outstanding -= 1;
                    if out.send(d).await.is_err() {
                        return; // the caller dropped the stream
                    }
                }
                Some(Event::Retry(job)) => {
                    if jobs.send(job).await.is_err() {
                        return;
                    }
                }
                None => return,
            },
            email = emails.next(), if !input_done && outstanding < cap => match email {
                Some(email) => {
                    outstanding += 1;
                    let job = Job { email, prepared: None, attempts: 0, backoff };
                    if jobs.send(job).await.is_err() {
                        return;
                    }
                }
                None => input_done = true,
            },
        }
    }
    // Dropping `jobs` lets the workers finish and QUIT.
}

async fn worker(shared: Arc<Shared>) {
    let mut conn: Option<Connection> = None;
    loop {
        let next = shared.jobs.lock().await.recv().await;
        let Some(mut job) = next else { break };
        let prepared = match job.prepared.take() {
            Some(p) => Ok(p),
            None => shared.mailer.message(&job.email).map(|m| Prepared::new(&m)),
        };
        let prepared = match prepared {
            Ok(p) => p,
            Err(e) => {
                report(&shared, job, Err(e));
                continue;
            }
        };
        job.attempts += 1;
        if let Some(l) = &shared.limiter {
            l.acquire().await;
        }
        let result = attempt(&shared, &mut conn, &prepared).await;
        match result {
            Err(e) if e.is_temporary() && job.attempts < shared.options.max_attempts => {
                tracing::debug!(message_id = %job.email.message_id, attempts = job.attempts,
                    error = %e, "email retry");
                let wait = job.backoff;
                job.backoff = (job.backoff * 2).min(shared.options.max_backoff);
                job.prepared = Some(prepared);
                let events = shared.events.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    let _ = events.send(Event::Retry(job));
                });
            }
            result => report(&shared, job, result),
        }
    }
    if let Some(c) = conn {
        c.quit().await;
    }
}

/// One attempt on the worker's connection, opening it when needed. A connection that broke
/// before any content was written is replaced and the message sent again at once, as part of
/// the same attempt (the server cannot have it).
async fn attempt(
    shared: &Shared,
    conn: &mut Option<Connection>,
    prepared: &Prepared,
) -> Result<(), SendError> {
    let target = shared.mailer.target();
    let mut reused = conn.is_some();
    loop {
        let c = match conn {
            Some(c) => c,
            None => match Connection::connect(target).await {
                Ok(c) => conn.insert(c),
                Err(e) => return Err(shared.mailer.scrub(e)),
            },
        };
        let outcome = c.send(prepared).await;
        if !outcome.reusable {
            *conn = None;
        }
        let broken = matches!(
            &outcome.result,
            Err(SendError::Temporary { code: None, .. })
        );
        if reused && broken && outcome.before_content && !outcome.reusable {
            reused = false;
            continue;
        }
        return outcome.result.map_err(|e| shared.mailer.scrub(e));
    }
}

fn report(shared: &Shared, job: Job, result: Result<(), SendError>) {
    let OutgoingEmail { message_id, to, .. } = job.email;
    let delivery = Delivery {
        message_id,
        to,
        attempts: job.attempts,
        result,
    };
    let _ = shared.events.send(Event::Done(delivery));
}
