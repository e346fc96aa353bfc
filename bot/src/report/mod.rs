//! Post-incident reports: `drbot report incident:<id>|run:<id>` writes Markdown and a
//! self-contained HTML page, `drbot timeline` prints the timeline, and `serve` shows the page
//! at `/reports/incidents/<id>` and `/reports/runs/<id>` when `[server] reports = true`.
//!
//! [`collect`] reads one incident (or run) and everything around it from the store into a
//! [`Report`]; [`timeline`] turns audit rows into the ordered timeline and the RTO breakdown
//! (pure); [`markdown`] and [`html`] render the same model; [`link`] queues the report link
//! to the incident channels when an incident is resolved; [`http`] serves the page.

pub mod collect;
pub mod doc;
pub mod html;
pub mod http;
pub mod link;
pub mod markdown;
pub mod timeline;

use std::{fmt, str::FromStr};

use serde::Serialize;

use crate::store::{
    checklists::ChecklistView,
    incidents::{IncidentRow, IncidentUpdateRow},
    runs::{ApprovalRow, RequestRow, RunRow, StepRow},
};
pub use collect::build;
use timeline::Timeline;

/// What a report is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Subject {
    /// An incident and the runs that worked on it.
    Incident(i64),
    /// One run (and its incident, if it has one).
    Run(i64),
}

impl Subject {
    /// `incident-12` / `run-34`: the report's file stem.
    pub fn file_stem(self) -> String {
        match self {
            Self::Incident(id) => format!("incident-{id}"),
            Self::Run(id) => format!("run-{id}"),
        }
    }

    /// The page's path on drbot's HTTP server.
    pub fn path(self) -> String {
        match self {
            Self::Incident(id) => format!("/reports/incidents/{id}"),
            Self::Run(id) => format!("/reports/runs/{id}"),
        }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Incident(id) => write!(f, "incident:{id}"),
            Self::Run(id) => write!(f, "run:{id}"),
        }
    }
}

impl FromStr for Subject {
    type Err = ();

    /// `incident:12` or `run:34` (also `incident/12`, `run/34`).
    fn from_str(s: &str) -> Result<Self, ()> {
        let (kind, id) = s.split_once([':', '/']).ok_or(())?;
        let id: i64 = id.trim().parse().map_err(|_| ())?;
        if id <= 0 {
            return Err(());
        }
        match kind.trim() {
            "incident" => Ok(Self::Incident(id)),
            "run" => Ok(Self::Run(id)),
            _ => Err(()),
        }
    }
}

/// A run as the report shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RunPart {
    /// The run.
    pub run: RunRow,
    /// Its steps, in order.
    pub steps: Vec<StepRow>,
    /// Every approval request, each with its approvals.
    pub requests: Vec<(RequestRow, Vec<ApprovalRow>)>,
}

/// A measured figure against its target.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Figure {
    /// What it is (`RTO`, `RPO`) and how it was measured.
    pub label: String,
    /// Seconds, if measured.
    pub seconds: Option<f64>,
    /// `seconds` is only a lower bound (more may be lost): never met, however small.
    pub at_least: bool,
    /// The target, seconds: the one the measurement was made against, else `[targets]`.
    pub target_seconds: f64,
    /// The target as configured (`4h`).
    pub target: String,
}

impl Figure {
    /// Met, missed, or not measured.
    pub fn met(&self) -> Option<bool> {
        self.seconds
            .map(|s| !self.at_least && s <= self.target_seconds)
    }
}

/// Notifications of one outbox channel.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NoticeCount {
    /// `slack`, `discord`, `statuspage`, `email`.
    pub channel: String,
    /// Rows.
    pub total: usize,
    /// Delivered.
    pub delivered: usize,
    /// Given up on.
    pub failed: usize,
    /// Still pending or being sent.
    pub open: usize,
    /// Last errors of the failed rows (at most a few).
    pub errors: Vec<String>,
}

/// Everything a report shows.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// What it is about.
    pub subject: Subject,
    /// Heading.
    pub title: String,
    /// When it was built, Unix ms.
    pub generated_at: i64,
    /// The incident and its public timeline entries.
    pub incident: Option<(IncidentRow, Vec<IncidentUpdateRow>)>,
    /// The runs, oldest first.
    pub runs: Vec<RunPart>,
    /// The run whose approval, recovery and verification are the milestones.
    pub recovery_run: Option<i64>,
    /// The timeline and milestones.
    pub timeline: Timeline,
    /// RTO and RPO against `[targets]`.
    pub figures: Vec<Figure>,
    /// Notifications per channel.
    pub notices: Vec<NoticeCount>,
    /// Checklists posted during the incident.
    pub checklists: Vec<ChecklistView>,
}

/// `850 ms`, `12.3 s`, `4 min 05 s`, `2 h 03 min`.
pub fn duration(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 1_000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{} min {:02} s", ms / 60_000, (ms % 60_000) / 1000)
    } else {
        format!("{} h {:02} min", ms / 3_600_000, (ms % 3_600_000) / 60_000)
    }
}

/// `2026-11-26 14:03:07 UTC`.
pub fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// A figure's value: `12.3 s`, or `not measured`.
pub fn seconds(s: Option<f64>) -> String {
    s.map(|s| duration((s * 1000.0).round() as i64))
        .unwrap_or_else(|| "not measured".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_parse_and_print() {
        assert_eq!("incident:12".parse(), Ok(Subject::Incident(12)));
        assert_eq!("run/34".parse(), Ok(Subject::Run(34)));
        for bad in ["incident", "incident:", "run:x", "run:-1", "job:3", "12"] {
            assert_eq!(bad.parse::<Subject>(), Err(()), "{bad}");
        }
        assert_eq!(Subject::Run(3).to_string(), "run:3");
        assert_eq!(Subject::Incident(7).path(), "/reports/incidents/7");
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(850), "850 ms");
        assert_eq!(duration(12_345), "12.3 s");
        assert_eq!(duration(245_000), "4 min 05 s");
        assert_eq!(duration(7_380_000), "2 h 03 min");
        assert_eq!(duration(-5), "0 ms");
        assert_eq!(seconds(None), "not measured");
        assert_eq!(seconds(Some(2.5)), "2.5 s");
    }
}
