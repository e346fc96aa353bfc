//! The variables a template sees (`Context`), and the sample values used by previews and by
//! `check-config`.

use serde::Serialize;

/// Everything a template can use. Times are preformatted by the caller (e.g.
/// `2026-11-26 14:03 UTC`); an absent optional value renders as nothing.
#[derive(Debug, Clone, Serialize)]
pub struct Context {
    /// The incident this notification is about.
    pub incident: IncidentInfo,
    /// The affected (primary) region, e.g. `us-east-1`.
    pub region: String,
    /// The runbook driving the recovery, if one is running.
    pub runbook: Option<String>,
    /// When the DR activation (the run) started.
    pub started: String,
    /// When service is expected to be restored, if anyone dares say.
    pub eta: Option<String>,
    /// The public status page, e.g. `https://status.example.com`.
    pub status_url: String,
    /// How often customers get updates, as a phrase: `every hour`.
    pub cadence: String,
    /// The email recipient; set for `email_*` templates, `None` for the others.
    pub recipient: Option<Recipient>,
}

/// An incident as templates see it.
#[derive(Debug, Clone, Serialize)]
pub struct IncidentInfo {
    /// drbot's incident id.
    pub id: String,
    /// The incident's name, as people typed it.
    pub name: String,
    /// `investigating`, `identified`, `monitoring` or `resolved`.
    pub status: String,
    /// `none`, `minor`, `major` or `critical`.
    pub impact: String,
    /// When the incident was opened.
    pub started_at: String,
    /// When it was resolved, if it was.
    pub resolved_at: Option<String>,
    /// Its timeline, oldest first.
    pub updates: Vec<UpdateInfo>,
}

/// One entry of an incident's timeline.
#[derive(Debug, Clone, Serialize)]
pub struct UpdateInfo {
    /// When it was posted.
    pub at: String,
    /// The incident status it set.
    pub status: String,
    /// What it said.
    pub body: String,
}

/// Who an email goes to.
#[derive(Debug, Clone, Serialize)]
pub struct Recipient {
    /// The address.
    pub email: String,
    /// The subscriber's name, if known.
    pub name: Option<String>,
    /// The subscriber's own one-click unsubscribe link.
    pub unsubscribe_url: String,
}

impl Context {
    /// Sample data with every optional value set: what `drbot notify preview` shows.
    pub fn sample() -> Self {
        Context {
            incident: IncidentInfo {
                id: "inc-42".into(),
                name: "Service Degradation - DR Activated".into(),
                status: "identified".into(),
                impact: "major".into(),
                started_at: "2026-11-26 14:03 UTC".into(),
                resolved_at: Some("2026-11-26 15:10 UTC".into()),
                updates: vec![
                    UpdateInfo {
                        at: "2026-11-26 14:03 UTC".into(),
                        status: "investigating".into(),
                        body: "We are investigating elevated error rates.".into(),
                    },
                    UpdateInfo {
                        at: "2026-11-26 14:20 UTC".into(),
                        status: "identified".into(),
                        body: "Traffic is moving to the DR region.".into(),
                    },
                ],
            },
            region: "us-east-1".into(),
            runbook: Some("failover".into()),
            started: "2026-11-26 14:05 UTC".into(),
            eta: Some("2026-11-26 15:00 UTC".into()),
            status_url: "https://status.example.com".into(),
            cadence: "every hour".into(),
            recipient: Some(Recipient {
                email: "jane@example.com".into(),
                name: Some("Jane Doe".into()),
                unsubscribe_url: "https://status.example.com/unsubscribe?token=sample-token".into(),
            }),
        }
    }

    /// Sample data with every optional value absent (no runbook, no ETA, no updates, an
    /// anonymous recipient), so a template that assumes one of them fails at check time.
    /// `recipient` is kept only for email templates.
    pub fn sample_minimal(email: bool) -> Self {
        let mut ctx = Self::sample();
        ctx.runbook = None;
        ctx.eta = None;
        ctx.incident.resolved_at = None;
        ctx.incident.updates.clear();
        ctx.recipient = if email {
            ctx.recipient.map(|r| Recipient { name: None, ..r })
        } else {
            None
        };
        ctx
    }
}
