//! The incident lifecycle behind `/dr incident open|update|resolve`: permission, transition
//! checks, the incident and timeline rows, and — in the same write transaction — the outbox
//! deliveries that carry the change to Statuspage and to each configured chat platform.
//!
//! **Rule:** a person may manage incidents when one of their roles is in some runbook's
//! `request_roles` (whoever may start a recovery may tell customers about it).
//!
//! **Architecture Invariant:** every change is read, checked and written inside one
//! [`crate::store::Store::write`] transaction, together with its `incident.*` audit row and its
//! outbox rows; a change that does not commit sends nothing, and a committed one is delivered
//! by the outbox workers even after a crash.

use std::collections::{BTreeMap, BTreeSet};

use notifier::outbox::NewDelivery;
use notifier::templates::{Context, IncidentInfo, Templates, UpdateInfo};
use serde_json::json;

use crate::{
    actor::Actor,
    app::App,
    approvals::{Fail, Outcome},
    grammar::{Impact, IncidentCommand, IncidentStatus},
    reply::{IncidentChange, IncidentView, UserError},
    store::{
        Tx, audit,
        incidents::{
            self, IncidentRow, IncidentState, IncidentUpdateRow, NewIncident, UpdateExtra,
        },
        now_ms,
        outbox::enqueue,
    },
};

/// Outbox channel of Statuspage calls.
pub const STATUSPAGE_CHANNEL: &str = "statuspage";

/// Default text of a resolve without a message.
pub const RESOLVED_TEXT: &str = "This incident has been resolved.";

/// One change to the incident lifecycle, from a person's command or a runbook step.
#[derive(Debug, Clone)]
pub struct Change {
    /// Open, update or resolve.
    pub command: IncidentCommand,
    /// Component statuses to set (component name → Statuspage status name), on top of what
    /// the impact implies.
    pub components: BTreeMap<String, String>,
    /// The runbook step making the change (`run:<id>:step:<index>`): a change already made by
    /// it is returned instead of made twice.
    pub source: Option<String>,
    /// The run an incident opened by a step is about.
    pub run_id: Option<i64>,
    /// The affected region (default: the primary region).
    pub region: Option<String>,
    /// An open's first timeline entry as a runbook step words it (default: "We are
    /// investigating: <title>.").
    pub open_message: Option<String>,
    /// The status an open starts in (default: investigating).
    pub open_status: Option<IncidentStatus>,
    /// An update raises the incident's impact to at least this (a failover that joins a
    /// drill's "no impact" incident); never lowers it.
    pub raise_impact: Option<Impact>,
}

impl Change {
    /// A person's `/dr incident …` command.
    pub fn command(command: IncidentCommand) -> Self {
        Self {
            command,
            components: BTreeMap::new(),
            source: None,
            run_id: None,
            region: None,
            open_message: None,
            open_status: None,
            raise_impact: None,
        }
    }
}

/// Carries out one `/dr incident …` command for `actor`.
pub async fn handle(app: &App, actor: &Actor, cmd: IncidentCommand) -> Outcome<IncidentView> {
    let person = allowed(app, actor)?.to_string();
    apply(app, actor, &person, Change::command(cmd)).await
}

/// Makes `change` as `author` (a person, or a runbook step acting for its approvers): the
/// transition checks, the rows, the audit entry and the outbox deliveries, in one transaction.
pub async fn apply(
    app: &App,
    actor: &Actor,
    author: &str,
    change: Change,
) -> Outcome<IncidentView> {
    let person = author;
    let templates = Templates::load(app.settings.config.templates_dir.as_deref())
        .map_err(|e| anyhow::anyhow!("loading notification templates: {e}"))?;
    let mut tx = app.store.write().await?;
    if let Some(source) = &change.source
        && let Some(done) = incidents::update_by_source_tx(&mut tx, source).await?
    {
        let incident = incidents::incident_tx(&mut tx, done.incident_id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("incident {} vanished", done.incident_id))?;
        let updates = incidents::updates_tx(&mut tx, done.incident_id).await?;
        let kind = if done.status == IncidentState::Resolved {
            IncidentChange::Resolved
        } else if updates.first().map(|u| u.id) == Some(done.id) {
            IncidentChange::Opened
        } else {
            IncidentChange::Updated
        };
        return Ok(IncidentView {
            change: kind,
            incident,
            updates,
            notified: Vec::new(),
        });
    }
    let now = now_ms();
    let open = incidents::open_incident_tx(&mut tx).await?;
    let region = change
        .region
        .clone()
        .or_else(|| app.settings.primary_region().map(str::to_string));
    let (kind, id, status, body) = match change.command {
        IncidentCommand::Open { title, impact } => {
            if let Some(o) = open {
                return Err(UserError::IncidentAlreadyOpen {
                    id: o.id,
                    name: o.name,
                }
                .into());
            }
            let id = incidents::insert_incident(
                &mut tx,
                &NewIncident {
                    name: &title,
                    impact: impact.as_str(),
                    region: region.as_deref(),
                    run_id: change.run_id,
                    opened_by: person,
                    now,
                },
            )
            .await?;
            let body = change
                .open_message
                .unwrap_or_else(|| format!("We are investigating: {title}."));
            let status = change
                .open_status
                .map_or(IncidentState::Investigating, IncidentState::from);
            (IncidentChange::Opened, id, status, body)
        }
        IncidentCommand::Update { status, message } => {
            let o = open.ok_or(UserError::NoOpenIncident)?;
            let to = status.map(IncidentState::from).unwrap_or(o.status);
            transition(&o, to)?;
            let current = Impact::from_name(&o.impact).unwrap_or_default();
            if let Some(raised) = change.raise_impact.filter(|i| rank(*i) > rank(current)) {
                incidents::set_impact(&mut tx, o.id, raised.as_str()).await?;
            }
            (IncidentChange::Updated, o.id, to, message)
        }
        IncidentCommand::Resolve { message } => {
            let o = open.ok_or(UserError::NoOpenIncident)?;
            transition(&o, IncidentState::Resolved)?;
            let body = message.unwrap_or_else(|| RESOLVED_TEXT.to_string());
            (
                IncidentChange::Resolved,
                o.id,
                IncidentState::Resolved,
                body,
            )
        }
    };
    let change_kind = kind;
    let extra = UpdateExtra {
        components: change.components.clone(),
        source: change.source.clone(),
    };
    incidents::set_status(&mut tx, id, status, now).await?;
    let entry = incidents::insert_update(&mut tx, id, status, &body, person, now, &extra).await?;
    let incident = incidents::incident_tx(&mut tx, id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("incident {id} vanished inside its transaction"))?;
    let updates = incidents::updates_tx(&mut tx, id).await?;
    let deliveries = deliveries(app, &templates, change_kind, &incident, &updates, &entry)?;
    let notified: Vec<String> = deliveries
        .iter()
        .map(|d| d.channel.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    for d in &deliveries {
        enqueue(&mut tx, d).await?;
    }
    if change_kind == IncidentChange::Resolved {
        crate::report::link::enqueue_tx(&mut tx, app, &incident).await?;
    }
    let action = match change_kind {
        IncidentChange::Opened => "incident.opened",
        IncidentChange::Updated => "incident.updated",
        IncidentChange::Resolved => "incident.resolved",
    };
    audit::append(
        &mut tx,
        actor,
        action,
        incident.run_id,
        json!({ "incident": id, "status": status.as_str(), "body": body, "notified": notified }),
    )
    .await?;
    commit(tx).await?;
    Ok(IncidentView {
        change: change_kind,
        incident,
        updates,
        notified,
    })
}

/// `impact`'s place from least to most severe.
fn rank(impact: Impact) -> usize {
    Impact::ALL.iter().position(|i| *i == impact).unwrap_or(0)
}

async fn commit(tx: Tx) -> anyhow::Result<()> {
    tx.commit().await?;
    Ok(())
}

/// The person acting, if their roles allow managing incidents.
fn allowed<'a>(app: &App, actor: &'a Actor) -> Outcome<&'a str> {
    let person = actor
        .person
        .as_deref()
        .ok_or(Fail::User(UserError::UnknownAccount))?;
    let roles = incident_roles(app);
    let mine = app
        .settings
        .person(person)
        .map(|p| p.roles.as_slice())
        .unwrap_or(&[]);
    if mine.iter().any(|r| roles.contains(r)) {
        Ok(person)
    } else {
        Err(UserError::NotAllowedToManageIncidents {
            roles: roles.into_iter().collect(),
        }
        .into())
    }
}

/// Roles that may manage incidents: every runbook's `request_roles`.
pub fn incident_roles(app: &App) -> BTreeSet<String> {
    app.settings
        .config
        .runbooks
        .iter()
        .flat_map(|r| r.request_roles.iter().cloned())
        .collect()
}

fn transition(o: &IncidentRow, to: IncidentState) -> Outcome<()> {
    if o.status.may_become(to) {
        Ok(())
    } else {
        Err(UserError::BadIncidentTransition {
            id: o.id,
            from: o.status.as_str().into(),
            to: to.as_str().into(),
        }
        .into())
    }
}

/// `2026-11-26 14:03 UTC`, as templates show times.
pub fn template_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default()
}

/// `[incidents] update_cadence`.
pub fn update_cadence(app: &App) -> std::time::Duration {
    humantime::parse_duration(&app.settings.config.incidents.update_cadence)
        .unwrap_or(std::time::Duration::from_secs(3600))
}

/// A cadence as customer text: "every hour", "every 30 minutes", "every 2 hours".
pub fn cadence_text(d: std::time::Duration) -> String {
    let mins = (d.as_secs() / 60).max(1);
    match mins {
        60 => "every hour".into(),
        m if m % 60 == 0 => format!("every {} hours", m / 60),
        1 => "every minute".into(),
        m => format!("every {m} minutes"),
    }
}

/// The template context of an incident as it stands.
pub fn context(app: &App, incident: &IncidentRow, updates: &[IncidentUpdateRow]) -> Context {
    let status_url = app
        .settings
        .config
        .server
        .public_url
        .as_deref()
        .map(|u| format!("{}{}", u.trim_end_matches('/'), notifier::page::PAGE_PATH))
        .unwrap_or_default();
    Context {
        incident: IncidentInfo {
            id: incident.id.to_string(),
            name: incident.name.clone(),
            status: incident.status.as_str().into(),
            impact: incident.impact.clone(),
            started_at: template_time(incident.created_at),
            resolved_at: incident.resolved_at.map(template_time),
            updates: updates
                .iter()
                .map(|u| UpdateInfo {
                    at: template_time(u.created_at),
                    status: u.status.as_str().into(),
                    body: u.body.clone(),
                })
                .collect(),
        },
        region: incident.region.clone().unwrap_or_default(),
        runbook: None,
        started: template_time(incident.created_at),
        eta: None,
        status_url,
        cadence: cadence_text(update_cadence(app)),
        recipient: None,
    }
}

/// The outbox rows one change causes: a Statuspage call when `[statuspage]` is configured, and
/// a broadcast per configured chat platform. Keys are unique per timeline entry; ordering keys
/// per incident and destination, so updates never overtake each other.
pub fn deliveries(
    app: &App,
    templates: &Templates,
    change: IncidentChange,
    incident: &IncidentRow,
    updates: &[IncidentUpdateRow],
    entry: &IncidentUpdateRow,
) -> anyhow::Result<Vec<NewDelivery>> {
    let id = incident.id;
    let mut out = Vec::new();
    if app.settings.config.statuspage.is_some() {
        let text = templates
            .incident_text(&context(app, incident, updates))
            .map_err(|e| anyhow::anyhow!("rendering the Statuspage text: {e}"))?;
        let op = match change {
            IncidentChange::Opened => "create",
            IncidentChange::Updated => "update",
            IncidentChange::Resolved => "resolve",
        };
        let cfg = &app.settings.config.status_page;
        let statuses = crate::status_page::component_statuses(cfg, Some((incident, updates)));
        let components: Vec<(String, &str)> = cfg
            .components
            .iter()
            .zip(statuses)
            .filter_map(|(c, s)| Some((c.statuspage_id.clone()?, s.as_str())))
            .collect();
        out.push(NewDelivery {
            key: format!("statuspage:incident:{id}:update:{}", entry.id),
            channel: STATUSPAGE_CHANNEL.into(),
            payload: json!({
                "op": op,
                "incident": id,
                "key": format!("drbot:incident:{id}"),
                "name": text.title,
                "body": text.body,
                "status": entry.status.as_str(),
                "impact": incident.impact,
                "components": components,
            }),
            ordering_key: Some(format!("statuspage:incident:{id}")),
        });
    }
    let mut chat = Vec::new();
    if app.slack.is_some() {
        chat.push((
            "slack",
            crate::slack::text::incident_news(change, incident, entry),
        ));
    }
    if app.discord.is_some() {
        chat.push((
            "discord",
            crate::discord::text::incident_news(change, incident, entry),
        ));
    }
    for (platform, text) in chat {
        out.push(NewDelivery {
            key: format!("chat:{platform}:incident:{id}:update:{}", entry.id),
            channel: platform.into(),
            payload: json!({ "text": text }),
            ordering_key: Some(format!("chat:{platform}:incident:{id}")),
        });
    }
    Ok(out)
}
