//! What a command produces, as data: each front-end renders it in its own text module.
//! User errors (fixable by the person typing) are typed here; internal errors become
//! [`Reply::Internal`] with a reference to the log line.

use serde::Serialize;

use crate::store::{
    incidents::{IncidentRow, IncidentUpdateRow},
    runs::{ApprovalRow, RequestRow, RunRow, StepRow},
};

/// A mistake the person typing can fix, or a refusal they should understand.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum UserError {
    /// The command did not parse; `message` is the grammar's sentence plus usage line.
    Parse { message: String },
    /// The account is not in `[[people]]`: only read-only commands are allowed.
    UnknownAccount,
    /// The person's roles do not allow requesting this runbook.
    NotAllowedToRequest { runbook: String, roles: Vec<String> },
    /// The person's roles do not allow approving (or denying) this run.
    NotAllowedToApprove { runbook: String, roles: Vec<String> },
    /// Only the requester or an approver may cancel.
    NotAllowedToCancel { run: i64 },
    /// Requesters cannot approve their own request.
    SelfApproval { run: i64 },
    /// This person already approved; one person counts once.
    AlreadyApproved { run: i64 },
    /// No such run.
    UnknownRun { run: i64 },
    /// No runbook is bound to this command.
    NoRunbook { command: String },
    /// The runbook could not be resolved into a plan.
    PlanFailed { message: String },
    /// Another destructive run is active on the same target.
    TargetBusy { target: String, run: i64 },
    /// The run has no open approval request.
    NothingToApprove { run: i64, state: String },
    /// The request expired before enough approvals.
    Expired { run: i64 },
    /// A retry/skip/abort request expired; the run still needs attention.
    DecisionExpired { run: i64, action: String },
    /// A button of an earlier request of the run, which another request replaced.
    StaleRequest { run: i64, action: String },
    /// Retry or skip of a run whose runbook left the config: only abort is possible.
    RunbookRemoved { run: i64, runbook: String },
    /// The plan changed since the request; approvals were voided.
    PlanChanged { run: i64 },
    /// The run cannot be cancelled in its state.
    CannotCancel { run: i64, state: String },
    /// retry/skip/abort only apply to runs that need attention.
    NotNeedingAttention { run: i64, state: String },
    /// A decision is already waiting for approval on this run.
    RequestOpen { run: i64, action: String },
    /// A bare `/dr approve` met a retry/skip/abort request: it is approved by naming it.
    NameTheDecision { run: i64, action: String },
    /// The feature arrives with a later part of drbot (named).
    Unavailable { feature: String },
    /// A button was clicked on a card it does not belong to.
    ForeignButton,
    /// The person's roles do not allow managing incidents (any runbook's request roles do).
    NotAllowedToManageIncidents { roles: Vec<String> },
    /// An incident is already open; update or resolve it first.
    IncidentAlreadyOpen { id: i64, name: String },
    /// There is no open incident to update or resolve.
    NoOpenIncident,
    /// The incident cannot move from `from` to `to`.
    BadIncidentTransition { id: i64, from: String, to: String },
    /// A checklist button names an item its checklist does not have.
    UnknownChecklistItem { item: String },
    /// `/dr checklist tick` names a checklist that was never posted.
    UnknownChecklist { instance: i64 },
    /// A recovery target time (`pitr`, `recover-corruption`) that has not happened yet.
    TargetInFuture { target: String, now: String },
}

/// The one rendering of user errors, shared by every front-end: one or two plain sentences.
impl std::fmt::Display for UserError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text: String = match self {
        Self::Parse { message } => message.clone(),
        Self::UnknownAccount => {
            "You are not in drbot's [[people]] list, so you may only use help, status, runs and run."
                .into()
        }
        Self::NotAllowedToRequest { runbook, roles } => format!(
            "You may not request `{runbook}`: it needs one of the roles {}.",
            roles.join(", ")
        ),
        Self::NotAllowedToApprove { runbook, roles } => format!(
            "You may not approve or deny `{runbook}`: it needs one of the roles {}.",
            roles.join(", ")
        ),
        Self::NotAllowedToCancel { run } => {
            format!("Only the requester or an approver may cancel run {run}.")
        }
        Self::SelfApproval { run } => format!(
            "You requested run {run}, so you cannot approve it: a second person must."
        ),
        Self::AlreadyApproved { run } => {
            format!("You already approved run {run}; each person counts once.")
        }
        Self::UnknownRun { run } => format!("There is no run {run}."),
        Self::NoRunbook { command } => {
            format!("No runbook is configured for `{command}` (see [[runbooks]] in the config).")
        }
        Self::PlanFailed { message } => format!("The runbook cannot be planned: {message}."),
        Self::TargetBusy { target, run } => format!(
            "Run {run} is already active on `{target}`; finish or cancel it first (`/dr run {run}`)."
        ),
        Self::NothingToApprove { run, state } => {
            format!("Run {run} has no open approval request (it is {state}).")
        }
        Self::Expired { run } => format!(
            "The approval request of run {run} has expired; request the runbook again."
        ),
        Self::DecisionExpired { run, action } => format!(
            "The {action} request of run {run} has expired. The run is still paused and holds \
             its target: ask again with `/dr retry {run}`, `/dr skip {run}` or `/dr abort {run}`."
        ),
        Self::StaleRequest { run, action } => format!(
            "This is an earlier request of run {run}; it was replaced by a {action} request. Use \
             its newest card, or `/dr run {run}`."
        ),
        Self::RunbookRemoved { run, runbook } => format!(
            "The runbook `{runbook}` of run {run} is no longer in the config: the run can only be \
             aborted (`/dr abort {run}`, approved by a second person)."
        ),
        Self::PlanChanged { run } => format!(
            "The plan of run {run} changed since it was requested (config or runbook edited), so \
             its approvals are void; request it again."
        ),
        Self::CannotCancel { run, state } => {
            format!("Run {run} cannot be cancelled: it is {state}.")
        }
        Self::NotNeedingAttention { run, state } => format!(
            "Run {run} does not need attention (it is {state}); retry, skip and abort apply only \
             to runs paused after an interrupted step."
        ),
        Self::RequestOpen { run, action } => format!(
            "Run {run} already has an open `{action}` request; approve or deny it first."
        ),
        Self::NameTheDecision { run, action } => format!(
            "Run {run} waits for approval of a `{action}`. Approve it by naming it: \
             `/dr {action} {run}` (or the card's button), so that what you approve is what you \
             meant to, even if the request changed meanwhile."
        ),
        Self::ForeignButton => {
            "This button does not belong to this card; nothing was changed.".into()
        }
        Self::NotAllowedToManageIncidents { roles } => format!(
            "You may not open, update or resolve incidents: it needs one of the roles {}.",
            roles.join(", ")
        ),
        Self::IncidentAlreadyOpen { id, name } => format!(
            "Incident {id} (\"{name}\") is still open; update or resolve it before opening another."
        ),
        Self::NoOpenIncident => {
            "There is no open incident; open one with `/dr incident open <title…>`.".into()
        }
        Self::BadIncidentTransition { id, from, to } => {
            format!("Incident {id} cannot go from {from} to {to}.")
        }
        Self::UnknownChecklistItem { item } => {
            format!("This checklist has no item `{item}`; nothing was changed.")
        }
        Self::UnknownChecklist { instance } => format!(
            "There is no posted checklist #{instance} (its number is in its title); nothing \
             was changed."
        ),
        Self::TargetInFuture { target, now } => format!(
            "The recovery target {target} is in the future (now {now}; a time without a zone \
             is read as UTC), so there is nothing to recover to yet. Nothing was requested."
        ),
        Self::Unavailable { feature } => {
            format!("{feature} are not available in this drbot build yet.")
        }
        };
        f.write_str(&text)
    }
}

/// What a run looks like to a reader.
#[derive(Debug, Clone, Serialize)]
pub struct RunView {
    /// The run.
    pub run: RunRow,
    /// Its steps.
    pub steps: Vec<StepRow>,
    /// Its newest approval request.
    pub request: Option<RequestRow>,
    /// That request's approvals.
    pub approvals: Vec<ApprovalRow>,
}

impl RunView {
    /// The run succeeded, but a drill it measured missed its RTO or RPO target: every step
    /// worked, the test did not pass.
    pub fn missed_target(&self) -> bool {
        self.run.state == crate::store::runs::RunState::Succeeded
            && self.steps.iter().any(|s| s.missed_target)
    }
}

/// A region line of `/dr status`.
#[derive(Debug, Clone, Serialize)]
pub struct RegionStatus {
    /// Name.
    pub name: String,
    /// `primary` or `secondary`.
    pub role: String,
    /// Description.
    pub description: String,
}

/// `/dr status`.
#[derive(Debug, Clone, Serialize)]
pub struct StatusView {
    /// Configured regions.
    pub regions: Vec<RegionStatus>,
    /// Active runs, newest first.
    pub active: Vec<RunRow>,
    /// `[[schedules]]`: each one's last result and next due time.
    pub schedules: Vec<crate::schedule::ScheduleStatus>,
}

/// What happened to an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentChange {
    /// `/dr incident open`.
    Opened,
    /// `/dr incident update`.
    Updated,
    /// `/dr incident resolve`.
    Resolved,
}

/// An incident after a change, with its timeline and where the news goes.
#[derive(Debug, Clone, Serialize)]
pub struct IncidentView {
    /// What happened.
    pub change: IncidentChange,
    /// The incident after the change.
    pub incident: IncidentRow,
    /// Its timeline, oldest first (the last entry is this change).
    pub updates: Vec<IncidentUpdateRow>,
    /// Where the change is being sent (`statuspage`, `slack`, `discord`), through the outbox.
    pub notified: Vec<String>,
}

/// The outcome of one command.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    /// Help text.
    Help {
        /// Subcommand asked about.
        topic: Option<String>,
        /// The text.
        text: String,
    },
    /// `/dr status`.
    Status(StatusView),
    /// `/dr runs`.
    Runs {
        /// Newest first.
        runs: Vec<RunRow>,
    },
    /// `/dr run <id>`.
    Run(RunView),
    /// A runbook was requested: awaiting approval, or queued when it needs none.
    Requested(RunView),
    /// An approval was recorded.
    Approved {
        /// The run after the approval.
        view: RunView,
        /// Quorum reached: the action goes ahead.
        quorum: bool,
    },
    /// A request was denied.
    Denied(RunView),
    /// A run was cancelled, or will stop before its next step.
    Cancelled {
        /// The run.
        view: RunView,
        /// Stopped at once (false: stops before the next step).
        immediate: bool,
    },
    /// A retry/skip/abort decision now awaits approval.
    DecisionRequested(RunView),
    /// An incident was opened, updated or resolved.
    Incident(IncidentView),
    /// `/dr checklist <name>`: a new checklist instance, posted as an interactive message.
    Checklist(crate::store::checklists::ChecklistView),
    /// `/dr checklist`: the checklists that can be posted.
    Checklists {
        /// Config entries first, then the built-in ones they do not replace.
        checklists: Vec<crate::config::ChecklistDef>,
    },
    /// A checklist item was ticked or unticked.
    Ticked {
        /// The checklist after the change.
        view: crate::store::checklists::ChecklistView,
        /// The item clicked.
        item: String,
        /// Whether it is now ticked.
        ticked: bool,
    },
    /// A refusal or user mistake.
    Refused(UserError),
    /// Something broke inside drbot; details are in the log under `reference`.
    Internal {
        /// Correlates with the log line.
        reference: String,
    },
}

impl Reply {
    /// Whether the command changed something (committed with its own audit row) rather than
    /// only read or was refused.
    pub fn changed(&self) -> bool {
        matches!(
            self,
            Reply::Requested(_)
                | Reply::Approved { .. }
                | Reply::Denied(_)
                | Reply::Cancelled { .. }
                | Reply::DecisionRequested(_)
                | Reply::Incident(_)
                | Reply::Checklist(_)
                | Reply::Ticked { .. }
        )
    }

    /// Short outcome label for metrics and the audit log.
    pub fn outcome(&self) -> &'static str {
        match self {
            Reply::Refused(_) => "refused",
            Reply::Internal { .. } => "error",
            _ => "ok",
        }
    }
}
