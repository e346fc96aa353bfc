//! The `incident` step type: opens, updates or resolves the incident from a runbook, as the
//! seed plan's communication plan does during a failover ("incident opened at start, updates
//! at each phase, monitoring at the end"). The change goes through [`crate::incidents::apply`],
//! so Statuspage, the chat channels and drbot's own page get it through the outbox exactly as
//! they get a person's `/dr incident …`.
//!
//! The step is idempotent: its timeline entry carries the step's key, and a re-run after a
//! crash finds the entry instead of posting a second one.

use std::collections::BTreeMap;

use async_trait::async_trait;
use recovery::{
    registry::{StepKind, StepTraits, params},
    step::{Step, StepContext, StepError, StepOutput},
};
use serde::Deserialize;

use super::AppSlot;
use crate::{
    actor::Actor,
    approvals::Fail,
    grammar::{Impact, IncidentCommand, IncidentStatus},
    incidents::{Change, apply},
    reply::UserError,
};

/// What the step does to the incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Open an incident; when one is already open (someone declared it by hand), post an
    /// update to it instead.
    Open,
    /// Post an update to the open incident (nothing to do when none is open).
    Update,
    /// Resolve the open incident (nothing to do when none is open).
    Resolve,
}

/// Parameters of an `incident` step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncidentParams {
    /// `open`, `update` or `resolve`.
    pub action: Action,
    /// Title of an opened incident (default: "Service Degradation - DR Activated").
    #[serde(default)]
    pub title: Option<String>,
    /// The update's text (an open's default says the incident is being investigated).
    #[serde(default)]
    pub message: Option<String>,
    /// `investigating`, `identified` or `monitoring` (updates; default: unchanged).
    #[serde(default)]
    pub status: Option<String>,
    /// Impact of an opened incident: `none`, `minor`, `major` (default) or `critical`. An open
    /// that joins an open incident raises its impact to this (never lowers it).
    #[serde(default)]
    pub impact: Option<String>,
    /// Component statuses to set, by `[[status_page.components]]` name: `operational`,
    /// `degraded_performance`, `partial_outage`, `major_outage`, `under_maintenance`.
    #[serde(default)]
    pub components: BTreeMap<String, String>,
}

/// Default title of an incident a runbook opens (the seed's status page incident).
pub const DEFAULT_TITLE: &str = "Service Degradation - DR Activated";

/// Default text of an open that joins an incident already open. Public (status page, feed,
/// Statuspage, customer email): no run ids or other internals.
pub const STARTED_TEXT: &str = "Disaster recovery has started.";

/// Default text of a resolve that leaves open an incident the run did not open. Public, as
/// [`STARTED_TEXT`].
pub const MONITORING_TEXT: &str = "Recovery steps are complete; we are monitoring.";

/// The `incident` step type.
pub struct IncidentKind {
    /// The process's app, once there is one.
    pub slot: AppSlot,
    /// Component names from `[[status_page.components]]`.
    pub components: Vec<String>,
}

struct Checked {
    action: Action,
    title: String,
    message: Option<String>,
    status: Option<IncidentStatus>,
    impact: Impact,
    components: BTreeMap<String, String>,
}

fn check(kind: &IncidentKind, p: &serde_json::Value) -> Result<Checked, String> {
    let p: IncidentParams = params(p)?;
    let status = match p.status.as_deref() {
        None => None,
        Some(s) => Some(parse_status(s)?),
    };
    if p.action == Action::Resolve && status.is_some() {
        return Err("status: a resolve always moves the incident to resolved".into());
    }
    let impact = match p.impact.as_deref() {
        None => Impact::Major,
        Some(s) => parse_impact(s)?,
    };
    for (name, st) in &p.components {
        if !kind.components.contains(name) {
            return Err(format!(
                "components.{name}: not a [[status_page.components]] name (known: {})",
                if kind.components.is_empty() {
                    "none configured".to_string()
                } else {
                    kind.components.join(", ")
                }
            ));
        }
        st.parse::<notifier::statuspage::ComponentStatus>()
            .map_err(|_| format!("components.{name}: unknown status {st:?} (expected one of: operational, degraded_performance, partial_outage, major_outage, under_maintenance)"))?;
    }
    if p.action == Action::Update && p.message.as_deref().is_none_or(|m| m.trim().is_empty()) {
        return Err("message: an update needs a message".into());
    }
    Ok(Checked {
        action: p.action,
        title: p.title.unwrap_or_else(|| DEFAULT_TITLE.to_string()),
        message: p.message,
        status,
        impact,
        components: p.components,
    })
}

fn parse_status(s: &str) -> Result<IncidentStatus, String> {
    match s {
        "investigating" => Ok(IncidentStatus::Investigating),
        "identified" => Ok(IncidentStatus::Identified),
        "monitoring" => Ok(IncidentStatus::Monitoring),
        other => Err(format!(
            "status: unknown status {other:?} (expected investigating, identified or monitoring)"
        )),
    }
}

fn parse_impact(s: &str) -> Result<Impact, String> {
    match s {
        "none" => Ok(Impact::None),
        "minor" => Ok(Impact::Minor),
        "major" => Ok(Impact::Major),
        "critical" => Ok(Impact::Critical),
        other => Err(format!(
            "impact: unknown impact {other:?} (expected none, minor, major or critical)"
        )),
    }
}

impl StepKind for IncidentKind {
    fn name(&self) -> &'static str {
        "incident"
    }
    fn traits(&self) -> StepTraits {
        // Customers see it: never in a dry run, only after approval. Keyed, so re-runnable.
        StepTraits {
            destructive: true,
            idempotent: true,
            overridable: false,
        }
    }
    fn validate(&self, p: &serde_json::Value) -> Result<(), String> {
        check(self, p).map(|_| ())
    }
    fn build(&self, p: &serde_json::Value) -> Result<Box<dyn Step>, String> {
        Ok(Box::new(IncidentStep {
            slot: self.slot.clone(),
            p: check(self, p)?,
        }))
    }
}

struct IncidentStep {
    slot: AppSlot,
    p: Checked,
}

#[async_trait]
impl Step for IncidentStep {
    async fn run(&self, ctx: &StepContext) -> Result<StepOutput, StepError> {
        let app = self.slot.get()?;
        let source = format!("run:{}:step:{}", ctx.run_id, ctx.step_index);
        let done = app
            .store
            .incident_update_by_source(&source)
            .await
            .map_err(|e| StepError::retryable(format!("reading the incident timeline: {e:#}")))?;
        if let Some(entry) = done {
            return Ok(StepOutput {
                summary: format!(
                    "incident {}: already posted ({})",
                    entry.incident_id,
                    entry.status.as_str()
                ),
                log: entry.body,
                data: serde_json::json!({
                    "incident": entry.incident_id,
                    "status": entry.status.as_str(),
                    "update": entry.id,
                    "notified": [],
                }),
            });
        }
        let open = app
            .store
            .open_incident()
            .await
            .map_err(|e| StepError::retryable(format!("reading the open incident: {e:#}")))?;
        let runbook = ctx.vars.get("runbook").cloned().unwrap_or_default();
        // An open's message and status make the new incident's first timeline entry. An open
        // that joins an incident raises its impact to its own: a failover joining a failed
        // drill's "no impact" incident must not leave every component shown operational.
        let (open_message, open_status) = match (self.p.action, &open) {
            (Action::Open, None) => (self.p.message.clone(), self.p.status),
            _ => (None, None),
        };
        let raise_impact = match (self.p.action, &open) {
            (Action::Open, Some(_)) => Some(self.p.impact),
            _ => None,
        };
        let command = match (self.p.action, &open) {
            (Action::Open, None) => IncidentCommand::Open {
                title: self.p.title.clone(),
                impact: self.p.impact,
            },
            (Action::Open, Some(_)) => IncidentCommand::Update {
                status: self.p.status,
                message: self
                    .p
                    .message
                    .clone()
                    .unwrap_or_else(|| STARTED_TEXT.to_string()),
            },
            (Action::Update, Some(_)) => IncidentCommand::Update {
                status: self.p.status,
                message: self.p.message.clone().unwrap_or_default(),
            },
            // Only the incident this run opened: one that was open before it (a person's,
            // which the run adopted) is resolved by people, never by a runbook's last step
            // (a drill run during a real incident must not close it).
            (Action::Resolve, Some(open)) if open.run_id == Some(ctx.run_id) => {
                IncidentCommand::Resolve {
                    message: self.p.message.clone(),
                }
            }
            // The run's part is done: as close to resolved as the run may take it.
            (Action::Resolve, Some(_)) => IncidentCommand::Update {
                status: Some(IncidentStatus::Monitoring),
                message: self
                    .p
                    .message
                    .clone()
                    .unwrap_or_else(|| MONITORING_TEXT.to_string()),
            },
            (Action::Update | Action::Resolve, None) => {
                return Ok(StepOutput {
                    summary: "no open incident: nothing to post".into(),
                    log: String::new(),
                    data: serde_json::json!({ "incident": null }),
                });
            }
        };
        let change = Change {
            command,
            components: self.p.components.clone(),
            source: Some(source),
            run_id: Some(ctx.run_id),
            region: ctx.vars.get("region").cloned(),
            open_message,
            open_status,
            raise_impact,
        };
        let author = if runbook.is_empty() {
            format!("run {}", ctx.run_id)
        } else {
            format!("{runbook} (run {})", ctx.run_id)
        };
        let view = apply(app, &Actor::system(), &author, change)
            .await
            .map_err(|e| match e {
                Fail::User(u) => StepError::fatal(user_error(&u)),
                Fail::Internal(e) => StepError::retryable(format!("changing the incident: {e:#}")),
            })?;
        let entry = view.updates.last();
        Ok(StepOutput {
            summary: format!(
                "incident {} ({}) is {}{}",
                view.incident.id,
                view.incident.name,
                view.incident.status.as_str(),
                if view.notified.is_empty() {
                    String::new()
                } else {
                    format!("; sending to {}", view.notified.join(", "))
                }
            ),
            log: entry.map(|e| e.body.clone()).unwrap_or_default(),
            data: serde_json::json!({
                "incident": view.incident.id,
                "status": view.incident.status.as_str(),
                "update": entry.map(|e| e.id),
                "notified": view.notified,
            }),
        })
    }
}

/// A refusal of the lifecycle rules, as one sentence for the run log.
fn user_error(e: &UserError) -> String {
    match e {
        UserError::IncidentAlreadyOpen { id, name } => {
            format!("incident {id} (\"{name}\") is already open")
        }
        UserError::NoOpenIncident => "no incident is open".into(),
        UserError::BadIncidentTransition { id, from, to } => {
            format!("incident {id} cannot go from {from} to {to}")
        }
        other => format!("{other:?}"),
    }
}
