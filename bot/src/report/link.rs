//! The report link posted to each chat incident channel when an incident is resolved: one
//! outbox row per platform, queued in the resolve's own write transaction under the key
//! `report:<platform>:incident:<id>`, so it is posted exactly once (the outbox keeps one row
//! per key and each chat deliverer posts once per key), after the resolve message (same
//! ordering key as the incident's chat updates).

use notifier::outbox::NewDelivery;
use serde_json::json;

use crate::{
    app::App,
    store::{Tx, incidents::IncidentRow, outbox::enqueue},
};

/// The outbox key of incident `id`'s report link on `platform`.
pub fn key(platform: &str, id: i64) -> String {
    format!("report:{platform}:incident:{id}")
}

/// The report page's URL: `server.public_url` + the page's path, when reports are served.
pub fn url(app: &App, id: i64) -> Option<String> {
    let server = &app.settings.config.server;
    if !server.reports {
        return None;
    }
    let base = server.public_url.as_deref()?.trim_end_matches('/');
    Some(format!("{base}{}", super::Subject::Incident(id).path()))
}

/// The link rows for resolved incident `incident`, one per configured chat platform.
pub fn deliveries(app: &App, incident: &IncidentRow) -> Vec<NewDelivery> {
    let id = incident.id;
    let url = url(app, id);
    let mut out = Vec::new();
    if app.slack.is_some() {
        out.push((
            "slack",
            crate::slack::text::report_link(id, &incident.name, url.as_deref()),
        ));
    }
    if app.discord.is_some() {
        out.push((
            "discord",
            crate::discord::text::report_link(id, &incident.name, url.as_deref()),
        ));
    }
    out.into_iter()
        .map(|(platform, text)| NewDelivery {
            key: key(platform, id),
            channel: platform.into(),
            payload: json!({ "text": text }),
            ordering_key: Some(format!("chat:{platform}:incident:{id}")),
        })
        .collect()
}

/// Queues the link rows inside the caller's transaction; returns how many were new (a second
/// call for the same incident adds none).
pub async fn enqueue_tx(tx: &mut Tx, app: &App, incident: &IncidentRow) -> anyhow::Result<usize> {
    let mut added = 0;
    for d in deliveries(app, incident) {
        added += usize::from(enqueue(tx, &d).await?);
    }
    Ok(added)
}
