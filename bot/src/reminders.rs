//! Customer-update reminders (the seed's communication plan: "update customers every hour"):
//! while an incident is open and nothing was posted to it for `[incidents] update_cadence`,
//! `serve` reminds every configured chat incident channel, once per silent period.
//!
//! The reminder is an outbox row keyed by incident, last timeline entry and period number, so
//! several `serve` processes sharing a store, or one restarted, remind once.

use std::time::Duration;

use notifier::outbox::NewDelivery;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::{
    app::App,
    incidents::update_cadence,
    store::{incidents, outbox::enqueue},
};

/// How often `serve` looks (at most; a shorter cadence looks more often).
pub const CHECK_EVERY: Duration = Duration::from_secs(30);

/// Enqueues the reminders due at `now_ms`; returns how many were new.
pub async fn check(app: &App, now_ms: i64) -> anyhow::Result<usize> {
    let platforms: Vec<&str> = [
        app.slack.is_some().then_some("slack"),
        app.discord.is_some().then_some("discord"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if platforms.is_empty() {
        return Ok(0);
    }
    let cadence = update_cadence(app).as_millis() as i64;
    let mut tx = app.store.write().await?;
    let Some(incident) = incidents::open_incident_tx(&mut tx).await? else {
        return Ok(0);
    };
    let updates = incidents::updates_tx(&mut tx, incident.id).await?;
    let (last_id, last_at) = updates
        .last()
        .map(|u| (u.id, u.created_at))
        .unwrap_or((0, incident.created_at));
    let silent = now_ms - last_at;
    let period = silent / cadence.max(1);
    if period < 1 {
        return Ok(0);
    }
    let silent_for =
        humantime::format_duration(Duration::from_secs((silent / 60_000 * 60) as u64)).to_string();
    let mut added = 0;
    for platform in platforms {
        let text = match platform {
            "slack" => crate::slack::text::incident_reminder(&incident, &silent_for),
            _ => crate::discord::text::incident_reminder(&incident, &silent_for),
        };
        let new = enqueue(
            &mut tx,
            &NewDelivery {
                key: format!(
                    "reminder:{platform}:incident:{}:after:{last_id}:{period}",
                    incident.id
                ),
                channel: platform.into(),
                payload: json!({ "text": text }),
                ordering_key: Some(format!("chat:{platform}:incident:{}", incident.id)),
            },
        )
        .await?;
        added += usize::from(new);
    }
    tx.commit().await?;
    Ok(added)
}

/// Checks for due reminders until `shutdown` fires.
pub async fn run(app: App, shutdown: CancellationToken) {
    let every = (update_cadence(&app) / 4).clamp(Duration::from_millis(200), CHECK_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        match check(&app, crate::store::now_ms()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(reminders = n, "reminded the incident channels"),
            Err(e) => tracing::warn!(
                error = format!("{e:#}"),
                "checking incident reminders failed"
            ),
        }
    }
}
