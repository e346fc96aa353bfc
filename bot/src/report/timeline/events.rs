//! Each audit row and notification as one timeline line: what happened, in words.

use std::collections::BTreeMap;

use super::{Event, EventKind, Notice, detail};
use crate::store::audit::AuditRow;

/// One event per audit row worth showing (lease bookkeeping is not).
pub(super) fn event(r: &AuditRow) -> Option<Event> {
    let d = detail(r);
    let s = |k: &str| d[k].as_str().unwrap_or("").to_string();
    let run = r.run_id.map(|id| format!("run {id}")).unwrap_or_default();
    let step = || {
        format!(
            "{run} step {} ({})",
            d["step"].as_i64().unwrap_or(0) + 1,
            s("name")
        )
    };
    let (kind, text) = match r.action.as_str() {
        "monitor.down" => (
            EventKind::Monitor,
            format!("{} down: {}", s("region"), s("error")),
        ),
        "monitor.up" => (EventKind::Monitor, format!("{} up again", s("region"))),
        "command" => (
            EventKind::Command,
            format!("`{}` ({})", s("text"), s("outcome")),
        ),
        "click" => (EventKind::Command, format!("button on {run}")),
        "incident.opened" | "incident.updated" | "incident.resolved" => (
            EventKind::Incident,
            format!(
                "incident {} {}: {}",
                d["incident"].as_i64().unwrap_or(0),
                s("status"),
                s("body")
            ),
        ),
        "run.requested" => (
            EventKind::Approval,
            format!(
                "{run} requested: {}{}",
                s("runbook"),
                if d["dry_run"] == true {
                    " (dry run)"
                } else {
                    ""
                }
            ),
        ),
        "approve" => (
            EventKind::Approval,
            format!(
                "approved the {} request of {run} ({} of {}, as {})",
                s("action"),
                d["approvals"].as_i64().unwrap_or(0),
                d["required"].as_i64().unwrap_or(0),
                s("role")
            ),
        ),
        "request.approved" => (
            EventKind::Approval,
            format!(
                "quorum reached: the {} request of {run} is approved",
                s("action")
            ),
        ),
        "deny" => (
            EventKind::Approval,
            format!("denied {run} {}: {}", s("action"), s("reason")),
        ),
        "cancel" => (EventKind::Approval, format!("cancelled {run}")),
        "request.expired" => (
            EventKind::Approval,
            format!("{run} {} request expired", s("action")),
        ),
        "request.void" => (
            EventKind::Approval,
            format!("{run} request void: the plan changed"),
        ),
        "gate.requested" => (
            EventKind::Approval,
            format!(
                "{run} step {} waits for its gate",
                d["step"].as_i64().unwrap_or(0) + 1
            ),
        ),
        "decision.requested" => (
            EventKind::Approval,
            format!("{run} {} requested for step {}", s("action"), d["step"]),
        ),
        "preflight.done" => (EventKind::Step, format!("{run} preflight done")),
        "step.started" => (EventKind::Step, format!("{} started", step())),
        "step.retrying" => (
            EventKind::Step,
            format!("{} retrying: {}", step(), s("error")),
        ),
        "step.finished" => (
            EventKind::Step,
            format!(
                "{} {} in {}",
                step(),
                s("state"),
                crate::report::duration(d["duration_ms"].as_i64().unwrap_or(0))
            ),
        ),
        "run.needs_attention" => (
            EventKind::Step,
            format!("{run} needs attention: {}", s("reason")),
        ),
        "run.finished" => (EventKind::Step, format!("{run} {}", s("state"))),
        "checklist.tick" => (
            EventKind::Checklist,
            format!(
                "{} {} `{}`",
                if d["ticked"] == true {
                    "ticked"
                } else {
                    "unticked"
                },
                s("checklist"),
                s("item")
            ),
        ),
        _ => return None,
    };
    Some(Event {
        at: r.at,
        kind,
        who: r.person.clone(),
        text,
    })
}

/// One event per notification, customer emails folded into one per batch (run and step).
pub(super) fn notice_events(notices: &[Notice]) -> Vec<(Option<i64>, Event)> {
    let mut out = Vec::new();
    let mut emails: BTreeMap<String, (i64, usize, usize)> = BTreeMap::new();
    for n in notices {
        if n.channel == "email" {
            let batch = n.key.split(":sub:").next().unwrap_or(&n.key).to_string();
            let e = emails.entry(batch).or_insert((n.at, 0, 0));
            e.0 = e.0.min(n.at);
            e.1 += 1;
            e.2 += usize::from(n.state == "failed");
            continue;
        }
        out.push((
            n.anchor,
            Event {
                at: n.at,
                kind: EventKind::Notification,
                who: None,
                text: format!("{} ({}): {}", n.channel, n.state, n.key),
            },
        ));
    }
    for (batch, (at, count, failed)) in emails {
        out.push((
            None,
            Event {
                at,
                kind: EventKind::Notification,
                who: None,
                text: format!("{count} customer emails ({failed} failed): {batch}"),
            },
        ));
    }
    out
}
