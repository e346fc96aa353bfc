//! The incident timeline as data, built from audit rows without I/O: every event in order
//! (commands, approvals, steps, incident updates, checklist ticks, monitor alerts and the
//! notifications the outbox carried), and the seed plan's RTO breakdown as milestones
//! (detection → declaration → approval → recovery → verification) with the durations between
//! them. A milestone that did not happen is `None`, and so is every duration touching it.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::store::audit::AuditRow;
use events::{event, notice_events};

mod events;

/// Step types that talk to people rather than recover anything: never the recovery milestone.
pub const COMMUNICATION_KINDS: &[&str] = &["incident", "email_preview", "email_customers"];
/// Step types whose success is the verification milestone (health green, data verified).
pub const VERIFY_KINDS: &[&str] = &["http_check", "pg_verify", "verify_backup"];

/// What kind of thing an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A health monitor alert.
    Monitor,
    /// A typed command or a button click.
    Command,
    /// An incident opened, updated or resolved.
    Incident,
    /// A run or gate requested, approved, denied, cancelled, expired.
    Approval,
    /// A step started, retried or finished; a run finished.
    Step,
    /// A checklist item ticked or unticked.
    Checklist,
    /// A notification queued by the outbox.
    Notification,
}

/// One line of the timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// Unix ms.
    pub at: i64,
    /// What kind.
    pub kind: EventKind,
    /// The person acting, if a person did.
    pub who: Option<String>,
    /// What happened, one line.
    pub text: String,
}

/// The seed plan's RTO breakdown points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Milestone {
    /// A monitor alert, else the first event.
    Detection,
    /// The incident opened.
    Declaration,
    /// Quorum reached on the recovery run.
    Approval,
    /// The recovery run's last destructive (non-communication) step done.
    Recovery,
    /// Health green or data verified after recovery.
    Verification,
}

impl Milestone {
    /// In order.
    pub const ALL: [Milestone; 5] = [
        Self::Detection,
        Self::Declaration,
        Self::Approval,
        Self::Recovery,
        Self::Verification,
    ];

    /// Display name.
    pub fn label(self) -> &'static str {
        match self {
            Self::Detection => "Detection",
            Self::Declaration => "Declaration",
            Self::Approval => "Approval",
            Self::Recovery => "Recovery",
            Self::Verification => "Verification",
        }
    }
}

/// When a milestone was reached, and by what.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MilestoneAt {
    /// Which.
    pub milestone: Milestone,
    /// Unix ms; `None` when it did not happen.
    pub at: Option<i64>,
    /// What marked it (or why it is missing).
    pub source: String,
}

/// The time between two consecutive milestones (the seed's phase names).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Segment {
    /// Phase: `Detection`, `Assessment`, `Recovery`, `Verification`.
    pub phase: &'static str,
    /// Starting milestone.
    pub from: Milestone,
    /// Ending milestone.
    pub to: Milestone,
    /// Milliseconds, when both happened and in this order.
    pub ms: Option<i64>,
    /// Both happened, but `to` came first (e.g. a drill's incident opened after approval).
    pub reversed: bool,
}

/// A step of a run as the milestones need it.
#[derive(Debug, Clone, PartialEq)]
pub struct StepInfo {
    /// Step type.
    pub kind: String,
    /// Changes production.
    pub destructive: bool,
}

/// A notification the outbox holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    /// Queued, Unix ms.
    pub at: i64,
    /// Outbox channel (`slack`, `statuspage`, `email`, …).
    pub channel: String,
    /// Idempotency key.
    pub key: String,
    /// Outbox state.
    pub state: String,
    /// The audit row written in the same transaction (an incident change, a monitor alert):
    /// the notification is listed right after it.
    pub anchor: Option<i64>,
}

/// What [`build`] needs.
#[derive(Debug, Clone, Default)]
pub struct Input {
    /// The audit rows of the scope, any order.
    pub audit: Vec<AuditRow>,
    /// The incident's opening time, if there is an incident.
    pub declared_at: Option<i64>,
    /// The run whose approval and steps are the approval, recovery and verification.
    pub recovery_run: Option<i64>,
    /// The steps of each run, by index.
    pub steps: BTreeMap<i64, Vec<StepInfo>>,
    /// Notifications of the scope.
    pub notices: Vec<Notice>,
}

/// The timeline and its milestones.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Timeline {
    /// Every event, oldest first.
    pub events: Vec<Event>,
    /// The five milestones, in order.
    pub milestones: Vec<MilestoneAt>,
    /// The four phases between them.
    pub segments: Vec<Segment>,
    /// Detection to verification, when both happened.
    pub total_ms: Option<i64>,
}

impl Timeline {
    /// The time of `m`, if it happened.
    pub fn at(&self, m: Milestone) -> Option<i64> {
        self.milestones
            .iter()
            .find(|x| x.milestone == m)
            .and_then(|x| x.at)
    }
}

/// Builds the timeline.
pub fn build(input: &Input) -> Timeline {
    let mut audit = input.audit.clone();
    audit.sort_by_key(|r| r.seq);
    // Sorted by time, then audit order; a notification right after the row it belongs to
    // (times alone would tie or swap within a millisecond).
    let mut keyed: Vec<((i64, i64, u8), Event)> = audit
        .iter()
        .filter_map(|r| Some(((r.at, r.seq, 0), event(r)?)))
        .collect();
    keyed.extend(
        notice_events(&input.notices)
            .into_iter()
            .map(|(anchor, e)| {
                let key = anchor
                    .and_then(|seq| audit.iter().find(|r| r.seq == seq))
                    .map_or((e.at, i64::MAX, 1), |r| (r.at, r.seq, 1));
                (key, e)
            }),
    );
    keyed.sort_by_key(|(k, _)| *k);
    let events: Vec<Event> = keyed.into_iter().map(|(_, e)| e).collect();
    // Monitor lines are not "the first event" of a response: an alert that counts is the
    // detection, and one that recovered before the declaration is no part of it.
    let first = events.iter().find(|e| e.kind != EventKind::Monitor);
    let milestones = milestones(input, &audit, first.map(|e| e.at));
    let at = |m: Milestone| {
        milestones
            .iter()
            .find(|x| x.milestone == m)
            .and_then(|x| x.at)
    };
    let phases = ["Detection", "Assessment", "Recovery", "Verification"];
    let segments = Milestone::ALL
        .windows(2)
        .zip(phases)
        .map(|(w, phase)| {
            let (from, to) = (w[0], w[1]);
            let (ms, reversed) = match (at(from), at(to)) {
                (Some(a), Some(b)) if b >= a => (Some(b - a), false),
                (Some(_), Some(_)) => (None, true),
                _ => (None, false),
            };
            Segment {
                phase,
                from,
                to,
                ms,
                reversed,
            }
        })
        .collect();
    let total_ms = match (at(Milestone::Detection), at(Milestone::Verification)) {
        (Some(a), Some(b)) if b >= a => Some(b - a),
        _ => None,
    };
    Timeline {
        events,
        milestones,
        segments,
        total_ms,
    }
}

fn detail(r: &AuditRow) -> Value {
    serde_json::from_str(&r.detail).unwrap_or(Value::Null)
}

fn step_of(input: &Input, run: Option<i64>, d: &Value) -> Option<StepInfo> {
    let idx = d["step"].as_i64()?;
    input
        .steps
        .get(&run?)?
        .get(usize::try_from(idx).ok()?)
        .cloned()
}

/// The alert that stands for detection: among the regions still down when the incident was
/// declared (or at the end of the scope), the one down longest. A region that came back up
/// before then (a blip an hour earlier) does not count.
fn detection_alert(audit: &[AuditRow], until: Option<i64>) -> Option<&AuditRow> {
    let mut down: std::collections::BTreeMap<String, &AuditRow> = Default::default();
    for r in audit.iter().filter(|r| until.is_none_or(|t| r.at <= t)) {
        let region = || detail(r)["region"].as_str().unwrap_or("").to_string();
        match r.action.as_str() {
            "monitor.down" => {
                down.entry(region()).or_insert(r);
            }
            "monitor.up" => {
                down.remove(&region());
            }
            _ => {}
        }
    }
    down.into_values().min_by_key(|r| (r.at, r.seq))
}

fn milestones(input: &Input, audit: &[AuditRow], first: Option<i64>) -> Vec<MilestoneAt> {
    let declared = audit
        .iter()
        .find(|r| r.action == "incident.opened")
        .map(|r| (r.at, "incident opened".to_string()))
        .or_else(|| input.declared_at.map(|at| (at, "incident opened".into())));
    let alert = detection_alert(audit, declared.as_ref().map(|(at, _)| *at));
    let detection = match (alert, first) {
        (Some(r), _) => (
            Some(r.at),
            format!(
                "monitor alert: {} down",
                detail(r)["region"].as_str().unwrap_or("?")
            ),
        ),
        (None, Some(at)) => (Some(at), "no monitor alert: the first event".into()),
        (None, None) => (None, "no events".into()),
    };
    let run = input.recovery_run;
    let of_run = |r: &&AuditRow| run.is_some() && r.run_id == run;
    let approval = audit
        .iter()
        .filter(of_run)
        .find(|r| r.action == "request.approved" && detail(r)["action"] == "run")
        .map(|r| {
            (
                Some(r.at),
                format!("run {} approved", r.run_id.unwrap_or(0)),
            )
        });
    let succeeded =
        |r: &&AuditRow| r.action == "step.finished" && detail(r)["state"] == "succeeded";
    let recovery = audit.iter().filter(of_run).filter(succeeded).rfind(|r| {
        step_of(input, r.run_id, &detail(r))
            .is_some_and(|s| s.destructive && !COMMUNICATION_KINDS.contains(&s.kind.as_str()))
    });
    let recovery_idx = recovery.and_then(|r| detail(r)["step"].as_i64());
    let after_at = recovery
        .map(|r| r.at)
        .or(approval.as_ref().and_then(|a| a.0));
    let verification = audit.iter().filter(of_run).filter(succeeded).find(|r| {
        let d = detail(r);
        let later = match recovery_idx {
            Some(i) => d["step"].as_i64().is_some_and(|s| s > i),
            None => after_at.is_none_or(|t| r.at >= t),
        };
        later
            && step_of(input, r.run_id, &d).is_some_and(|s| VERIFY_KINDS.contains(&s.kind.as_str()))
    });
    let named = |r: &AuditRow| {
        let d = detail(r);
        format!(
            "run {} step {}: {}",
            r.run_id.unwrap_or(0),
            d["step"].as_i64().unwrap_or(0) + 1,
            d["name"].as_str().unwrap_or("?")
        )
    };
    let missing = |why: &str| (None, why.to_string());
    let run_missing = if run.is_none() {
        "no recovery run"
    } else {
        "not reached"
    };
    let pairs = [
        detection,
        declared
            .map(|(at, s)| (Some(at), s))
            .unwrap_or_else(|| missing("no incident")),
        approval.unwrap_or_else(|| missing(run_missing)),
        recovery
            .map(|r| (Some(r.at), named(r)))
            .unwrap_or_else(|| missing(run_missing)),
        verification
            .map(|r| (Some(r.at), named(r)))
            .unwrap_or_else(|| missing(run_missing)),
    ];
    Milestone::ALL
        .into_iter()
        .zip(pairs)
        .map(|(milestone, (at, source))| MilestoneAt {
            milestone,
            at,
            source,
        })
        .collect()
}

#[cfg(test)]
mod tests;
