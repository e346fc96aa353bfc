//! Delivery of the outbox in `drbot serve`: the deliverers for each configured destination
//! (Statuspage, Slack, Discord) and the `notifier::outbox` worker that runs them.

pub mod chat;
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
    out
}

/// The worker `serve` runs, leasing rows as `owner`.
pub fn worker(app: &App, owner: &str) -> Worker {
    Worker::new(
        Arc::new(app.store.clone()),
        deliverers(app),
        WorkerConfig {
            owner: owner.to_string(),
            lease: Duration::from_secs(60),
            batch: 32,
            concurrency: 8,
            max_attempts: MAX_ATTEMPTS,
            idle: Duration::from_millis(250),
        },
    )
}

/// Delivers outbox rows until `shutdown` fires.
pub async fn run(app: App, owner: String, shutdown: CancellationToken) {
    let worker = worker(&app, &owner);
    worker.run(shutdown).await;
}
