//! The data behind drbot's public status page: components, the current incident with its
//! timeline, resolved history and disaster-recovery evidence. Plain data; the renderers in
//! this module turn it into HTML, JSON and Atom.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer};

/// Everything the public status page shows, as of `generated_at`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PageModel {
    /// Page title, e.g. `Example Corp status`.
    pub title: String,
    /// When this snapshot was taken from the store.
    pub generated_at: DateTime<Utc>,
    /// The services shown, in display order.
    pub components: Vec<Component>,
    /// The open incident, if any.
    pub current: Option<Incident>,
    /// Resolved incidents, newest first (the renderers keep this order).
    pub history: Vec<Incident>,
    /// Proof that recovery works: the last backup verification and the last drill.
    pub evidence: Evidence,
}

/// One service on the page.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Component {
    /// Display name, e.g. `API`.
    pub name: String,
    /// Current status.
    pub status: ComponentStatus,
    /// Optional one-line description; empty for none.
    pub description: String,
}

/// A component's status, with the same names as Atlassian Statuspage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ComponentStatus {
    /// Working normally.
    Operational,
    /// Working, but slower or less reliable than usual.
    DegradedPerformance,
    /// Some functions or some users affected.
    PartialOutage,
    /// Not working.
    MajorOutage,
    /// Planned maintenance.
    UnderMaintenance,
}

impl ComponentStatus {
    /// Every status, for exhaustive tests and documentation.
    pub const ALL: [ComponentStatus; 5] = [
        ComponentStatus::Operational,
        ComponentStatus::DegradedPerformance,
        ComponentStatus::PartialOutage,
        ComponentStatus::MajorOutage,
        ComponentStatus::UnderMaintenance,
    ];

    /// The wire name (`degraded_performance`, …), as in JSON and on Statuspage.
    pub fn as_str(self) -> &'static str {
        match self {
            ComponentStatus::Operational => "operational",
            ComponentStatus::DegradedPerformance => "degraded_performance",
            ComponentStatus::PartialOutage => "partial_outage",
            ComponentStatus::MajorOutage => "major_outage",
            ComponentStatus::UnderMaintenance => "under_maintenance",
        }
    }

    /// The human label, e.g. `Degraded performance`.
    pub fn label(self) -> &'static str {
        match self {
            ComponentStatus::Operational => "Operational",
            ComponentStatus::DegradedPerformance => "Degraded performance",
            ComponentStatus::PartialOutage => "Partial outage",
            ComponentStatus::MajorOutage => "Major outage",
            ComponentStatus::UnderMaintenance => "Under maintenance",
        }
    }

    /// How bad it is, for picking the page's overall status (higher is worse).
    pub fn severity(self) -> u8 {
        match self {
            ComponentStatus::Operational => 0,
            ComponentStatus::UnderMaintenance => 1,
            ComponentStatus::DegradedPerformance => 2,
            ComponentStatus::PartialOutage => 3,
            ComponentStatus::MajorOutage => 4,
        }
    }
}

/// An incident with its update timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Incident {
    /// Stable identifier from the store; used in anchors and feed entry ids.
    pub id: String,
    /// Title shown to customers (user input: always escaped by the renderers).
    pub name: String,
    /// Where the incident is in its lifecycle.
    pub status: IncidentStatus,
    /// How bad it is.
    pub impact: Impact,
    /// When it was opened.
    pub started_at: DateTime<Utc>,
    /// When it was resolved; `None` while open.
    pub resolved_at: Option<DateTime<Utc>>,
    /// Updates, oldest first, as posted.
    pub updates: Vec<Update>,
}

/// The incident lifecycle: investigating → identified → monitoring → resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentStatus {
    /// The cause is not known yet.
    Investigating,
    /// The cause is known and a fix is under way.
    Identified,
    /// A fix is in place and being watched.
    Monitoring,
    /// Over.
    Resolved,
}

impl IncidentStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [IncidentStatus; 4] = [
        IncidentStatus::Investigating,
        IncidentStatus::Identified,
        IncidentStatus::Monitoring,
        IncidentStatus::Resolved,
    ];

    /// The wire name, e.g. `investigating`.
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentStatus::Investigating => "investigating",
            IncidentStatus::Identified => "identified",
            IncidentStatus::Monitoring => "monitoring",
            IncidentStatus::Resolved => "resolved",
        }
    }

    /// The human label, e.g. `Investigating`.
    pub fn label(self) -> &'static str {
        match self {
            IncidentStatus::Investigating => "Investigating",
            IncidentStatus::Identified => "Identified",
            IncidentStatus::Monitoring => "Monitoring",
            IncidentStatus::Resolved => "Resolved",
        }
    }
}

/// An incident's impact, with the same names as Atlassian Statuspage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Impact {
    /// No customer impact.
    None,
    /// Minor impact.
    Minor,
    /// Major impact.
    Major,
    /// Critical impact.
    Critical,
}

impl Impact {
    /// Every impact, from least to most severe.
    pub const ALL: [Impact; 4] = [Impact::None, Impact::Minor, Impact::Major, Impact::Critical];

    /// The wire name, e.g. `major`.
    pub fn as_str(self) -> &'static str {
        match self {
            Impact::None => "none",
            Impact::Minor => "minor",
            Impact::Major => "major",
            Impact::Critical => "critical",
        }
    }

    /// The human label, e.g. `Major`.
    pub fn label(self) -> &'static str {
        match self {
            Impact::None => "None",
            Impact::Minor => "Minor",
            Impact::Major => "Major",
            Impact::Critical => "Critical",
        }
    }
}

/// One entry of an incident's timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Update {
    /// When it was posted.
    pub at: DateTime<Utc>,
    /// The incident status this update set.
    pub status: IncidentStatus,
    /// The message to customers (user input: always escaped by the renderers). Line breaks are
    /// kept.
    pub body: String,
}

/// Disaster-recovery evidence shown on the page.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Evidence {
    /// The most recent backup restore test, if any ran.
    pub last_backup_verification: Option<BackupVerification>,
    /// The most recent DR drill, if any ran.
    pub last_drill: Option<Drill>,
    /// Each configured DR testing schedule's last result and next due date, in config order.
    pub schedules: Vec<ScheduleEvidence>,
}

/// One DR testing schedule (`[[schedules]]`) as evidence: what it last produced and when it is
/// next due.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScheduleEvidence {
    /// Schedule name, e.g. `weekly-verify`.
    pub name: String,
    /// The runbook it runs, e.g. `verify-backup`.
    pub runbook: String,
    /// The outcome of its most recent due time.
    pub last_result: ScheduleResult,
    /// When that outcome happened (the run finished, else it was requested); `None` if it
    /// never came due.
    pub last_at: Option<DateTime<Utc>>,
    /// When it next comes due; `None` if its cron expression never fires again.
    pub next_due: Option<DateTime<Utc>>,
    /// Whether no run of its runbook passed within its `overdue_after`.
    pub overdue: bool,
}

/// What a schedule's most recent due time produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleResult {
    /// It never came due.
    None,
    /// Its run is still waiting for approval or running.
    Pending,
    /// Its run succeeded.
    Passed,
    /// Its run failed, was refused, denied, expired or cancelled.
    Failed,
}

impl ScheduleResult {
    /// Every result, for exhaustive tests and documentation.
    pub const ALL: [ScheduleResult; 4] = [
        ScheduleResult::None,
        ScheduleResult::Pending,
        ScheduleResult::Passed,
        ScheduleResult::Failed,
    ];

    /// The wire name, e.g. `passed`.
    pub fn as_str(self) -> &'static str {
        match self {
            ScheduleResult::None => "none",
            ScheduleResult::Pending => "pending",
            ScheduleResult::Passed => "passed",
            ScheduleResult::Failed => "failed",
        }
    }

    /// The human label, e.g. `Passed`.
    pub fn label(self) -> &'static str {
        match self {
            ScheduleResult::None => "Not run yet",
            ScheduleResult::Pending => "In progress",
            ScheduleResult::Passed => "Passed",
            ScheduleResult::Failed => "Failed",
        }
    }
}

/// The result of the last backup verification (restore into scratch and check).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackupVerification {
    /// When it finished.
    pub at: DateTime<Utc>,
    /// Whether every check passed.
    pub passed: bool,
    /// How long the verification took (serialized as seconds).
    #[serde(serialize_with = "seconds")]
    pub duration: Duration,
    /// How many tables were restored and checked.
    pub tables: u64,
}

/// The result of the last DR drill: measured recovery time and data-loss window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Drill {
    /// When it finished.
    pub at: DateTime<Utc>,
    /// Measured recovery time objective (serialized as seconds).
    #[serde(serialize_with = "seconds")]
    pub rto: Duration,
    /// Measured recovery point objective (serialized as seconds); `None` when the drill
    /// recorded none (its measuring step was skipped), shown as not measured.
    #[serde(serialize_with = "opt_seconds")]
    pub rpo: Option<Duration>,
    /// Target RTO (serialized as seconds).
    #[serde(serialize_with = "seconds")]
    pub rto_target: Duration,
    /// Target RPO (serialized as seconds).
    #[serde(serialize_with = "seconds")]
    pub rpo_target: Duration,
    /// Whether both targets were met (never when the RPO was not measured).
    pub met: bool,
}

fn opt_seconds<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_f64(d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

fn seconds<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}
