//! Delivery of the outbox in `drbot serve`: the deliverers for each configured destination
//! (Statuspage, Slack, Discord, customer email) and the `notifier::outbox` worker that runs
//! them.

pub mod chat;
pub mod email;
pub mod statuspage;

use std::{sync::Arc, time::Duration};

use notifier::outbox::{
    Deliverer,
    worker::{Worker, WorkerConfig},
};
use tokio_util::sync::CancellationToken;

use crate::app::App;

/// Attempts before a delivery is marked failed (with backoff doubling from 1 s and capped at
/// 10 minutes, about an hour of trying).
pub const MAX_ATTEMPTS: u32 = 15;

/// The deliverers for what `app`'s config sets up.
pub fn deliverers(app: &App) -> Vec<Arc<dyn Deliverer>> {
    let mut out: Vec<Arc<dyn Deliverer>> = Vec::new();
    if let Some(cfg) = &app.settings.config.statuspage {
        match cfg.client() {
            Ok(client) => out.push(Arc::new(statuspage::StatuspageDeliverer::new(
                client,
                app.store.clone(),
            ))),
            // check-config refuses this; rows for Statuspage stay pending meanwhile.
            Err(e) => tracing::error!(error = %e, "[statuspage] is unusable: not delivering"),
        }
    }
    if app.slack.is_some() {
        out.push(Arc::new(chat::ChatDeliverer::new(Arc::new(
            crate::slack::sync::SlackBroadcast(app.clone()),
        ))));
    }
    if app.discord.is_some() {
        out.push(Arc::new(chat::ChatDeliverer::new(Arc::new(
            crate::discord::broadcast::DiscordBroadcast(app.clone()),
        ))));
    }
    if let Some(cfg) = &app.settings.config.email {
        match email::EmailDeliverer::new(cfg, app.store.clone()) {
            Ok(d) => out.push(Arc::new(d)),
            // check-config refuses this; email rows stay pending meanwhile.
            Err(e) => tracing::error!(error = %e, "[email] is unusable: not delivering"),
        }
    }
    out
}

/// The worker's settings for `app`'s config: 8 deliveries in flight (more when
/// `email.max_connections` is larger, so every SMTP connection is used), 64 times that many
/// rows claimed per round (a round's email rows go out together, in pipelined windows of up
/// to 64 messages per connection), and a lease of 60 s, extended every 20 s while a round runs
/// (however slow the relay or low the rate limit, no other process sends the same rows; a
/// crashed process's rows are taken over within a minute).
pub fn worker_config(app: &App, owner: &str) -> WorkerConfig {
    let email = app.settings.config.email.as_ref();
    let concurrency = email.map_or(8, |e| (e.max_connections as usize).max(8));
    let batch = concurrency * 64;
    WorkerConfig {
        owner: owner.to_string(),
        lease: Duration::from_secs(60),
        batch,
        concurrency,
        // The email deliverer gives up after `email.max_attempts` itself.
        max_attempts: MAX_ATTEMPTS.max(email.map_or(0, |e| e.max_attempts)),
        idle: Duration::from_millis(250),
    }
}

/// One worker for every configured channel, leasing rows as `owner` (`worker_config`'s
/// settings); `serve` runs [`lanes`] instead.
pub fn worker(app: &App, owner: &str) -> Worker {
    let cfg = worker_config(app, owner);
    log_started("all", &cfg);
    Worker::new(Arc::new(app.store.clone()), deliverers(app), cfg)
}

/// The workers `serve` runs, leasing rows as `owner`, each claiming only its own channels:
/// customer email in a lane of its own (its rounds take a mass send's rows by the thousand,
/// under the rate limit, and last as long as they take) and status page and chat in another
/// (8 in flight, 64 rows a round), so a status update never waits for a mass send's round.
pub fn lanes(app: &App, owner: &str) -> Vec<Worker> {
    let (bulk, status): (Vec<_>, Vec<_>) = deliverers(app)
        .into_iter()
        .partition(|d| d.channel() == email::CHANNEL);
    let mut out = Vec::new();
    if !status.is_empty() {
        let cfg = WorkerConfig {
            owner: owner.to_string(),
            lease: Duration::from_secs(60),
            batch: 64,
            concurrency: 8,
            max_attempts: MAX_ATTEMPTS,
            idle: Duration::from_millis(250),
        };
        log_started("status", &cfg);
        out.push(Worker::new(Arc::new(app.store.clone()), status, cfg));
    }
    if !bulk.is_empty() {
        let cfg = worker_config(app, owner);
        log_started("email", &cfg);
        out.push(Worker::new(Arc::new(app.store.clone()), bulk, cfg));
    }
    out
}

fn log_started(lane: &str, cfg: &WorkerConfig) {
    // The e2e crash test reads `in_flight_bound`: the most rows a crash can leave sent but not
    // recorded (a whole round's email rows, sent in bulk).
    tracing::info!(
        lane,
        in_flight_bound = cfg.batch.max(cfg.concurrency),
        concurrency = cfg.concurrency,
        batch = cfg.batch,
        lease_ms = cfg.lease.as_millis() as u64,
        "outbox worker started"
    );
}

/// Delivers outbox rows until `shutdown` fires, in [`lanes`].
pub async fn run(app: App, owner: String, shutdown: CancellationToken) {
    let lanes = lanes(&app, &owner);
    futures::future::join_all(lanes.into_iter().map(|w| w.run(shutdown.clone()))).await;
}
