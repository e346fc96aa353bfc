//! Milestones and durations from hand-made audit rows: the full breakdown, missing milestones,
//! a monitor alert as detection, a drill whose incident opens after approval, and the
//! notifications folded into the timeline.

use serde_json::json;

use super::*;

fn row(seq: i64, at: i64, action: &str, run: Option<i64>, detail: Value) -> AuditRow {
    AuditRow {
        seq,
        at,
        person: Some("alice".into()),
        account: None,
        platform: "cli".into(),
        channel: None,
        action: action.into(),
        run_id: run,
        detail: detail.to_string(),
        prev_hash: String::new(),
        hash: String::new(),
    }
}

fn step(kind: &str, destructive: bool) -> StepInfo {
    StepInfo {
        kind: kind.into(),
        destructive,
    }
}

fn finished(seq: i64, at: i64, idx: i64, state: &str) -> AuditRow {
    row(
        seq,
        at,
        "step.finished",
        Some(7),
        json!({ "step": idx, "name": format!("s{idx}"), "state": state, "duration_ms": 10 }),
    )
}

/// A failover-like run 7: check, incident update, promote, DNS, health, incident update.
fn input(audit: Vec<AuditRow>) -> Input {
    Input {
        audit,
        declared_at: None,
        recovery_run: Some(7),
        steps: BTreeMap::from([(
            7,
            vec![
                step("http_check", false),
                step("incident", true),
                step("pg_promote", true),
                step("dns_switch", true),
                step("http_check", false),
                step("incident", true),
            ],
        )]),
        notices: Vec::new(),
    }
}

fn full() -> Vec<AuditRow> {
    vec![
        row(
            1,
            1_000,
            "monitor.down",
            None,
            json!({ "region": "us-east-1", "episode": 1 }),
        ),
        row(
            2,
            61_000,
            "incident.opened",
            None,
            json!({ "incident": 1, "status": "investigating" }),
        ),
        row(
            3,
            70_000,
            "run.requested",
            Some(7),
            json!({ "runbook": "failover" }),
        ),
        row(
            4,
            181_000,
            "request.approved",
            Some(7),
            json!({ "action": "run" }),
        ),
        finished(5, 182_000, 0, "succeeded"),
        finished(6, 183_000, 1, "succeeded"),
        finished(7, 200_000, 2, "succeeded"),
        finished(8, 241_000, 3, "succeeded"),
        finished(9, 301_000, 4, "succeeded"),
        finished(10, 302_000, 5, "succeeded"),
    ]
}

fn ats(t: &Timeline) -> Vec<Option<i64>> {
    t.milestones.iter().map(|m| m.at).collect()
}

#[test]
fn full_breakdown() {
    let t = build(&input(full()));
    assert_eq!(
        ats(&t),
        [
            Some(1_000),
            Some(61_000),
            Some(181_000),
            Some(241_000),
            Some(301_000)
        ]
    );
    let ms: Vec<Option<i64>> = t.segments.iter().map(|s| s.ms).collect();
    assert_eq!(
        ms,
        [Some(60_000), Some(120_000), Some(60_000), Some(60_000)]
    );
    let phases: Vec<&str> = t.segments.iter().map(|s| s.phase).collect();
    assert_eq!(
        phases,
        ["Detection", "Assessment", "Recovery", "Verification"]
    );
    assert_eq!(t.total_ms, Some(300_000));
    assert_eq!(t.milestones[0].source, "monitor alert: us-east-1 down");
    // Recovery is the DNS switch (the last destructive step that is not an incident update);
    // verification the health check after it, not the preflight check.
    assert_eq!(t.milestones[3].source, "run 7 step 4: s3");
    assert_eq!(t.milestones[4].source, "run 7 step 5: s4");
    assert_eq!(t.events.len(), 10);
    assert!(t.events.windows(2).all(|w| w[0].at <= w[1].at));
}

#[test]
fn without_a_monitor_alert_detection_is_the_first_event() {
    let mut audit = full();
    audit.remove(0);
    let t = build(&input(audit));
    assert_eq!(t.at(Milestone::Detection), Some(61_000));
    assert_eq!(t.milestones[0].source, "no monitor alert: the first event");
    assert_eq!(t.segments[0].ms, Some(0));
    assert_eq!(t.total_ms, Some(240_000));
}

/// An alert whose region came back up before the declaration (a blip an hour earlier), and a
/// lone recovery line, are no part of the response: detection is the alert still open.
#[test]
fn an_alert_that_recovered_before_declaration_is_not_the_detection() {
    let mut audit = full();
    for r in audit.iter_mut() {
        r.seq += 2;
    }
    audit[0].at = 30_000;
    audit.insert(
        0,
        row(
            2,
            -2_000_000,
            "monitor.up",
            None,
            json!({ "region": "us-west-2", "episode": 1 }),
        ),
    );
    audit.insert(
        0,
        row(
            1,
            -3_000_000,
            "monitor.down",
            None,
            json!({ "region": "us-west-2", "episode": 1 }),
        ),
    );
    let t = build(&input(audit.clone()));
    assert_eq!(t.at(Milestone::Detection), Some(30_000));
    assert_eq!(t.milestones[0].source, "monitor alert: us-east-1 down");
    // Without the open alert: the first event that is not a monitor line.
    audit.remove(2);
    let t = build(&input(audit));
    assert_eq!(t.at(Milestone::Detection), Some(61_000));
    assert_eq!(t.milestones[0].source, "no monitor alert: the first event");
}

#[test]
fn an_alert_after_declaration_is_not_the_detection() {
    let mut audit = full();
    audit[0].at = 65_000;
    audit[0].seq = 3;
    audit[2].seq = 20;
    let t = build(&input(audit));
    assert_eq!(t.at(Milestone::Detection), Some(61_000));
}

#[test]
fn missing_milestones_leave_their_durations_empty() {
    // Not approved yet: no approval, recovery or verification.
    let audit: Vec<AuditRow> = full().into_iter().take(3).collect();
    let t = build(&input(audit));
    assert_eq!(ats(&t), [Some(1_000), Some(61_000), None, None, None]);
    let ms: Vec<Option<i64>> = t.segments.iter().map(|s| s.ms).collect();
    assert_eq!(ms, [Some(60_000), None, None, None]);
    assert!(t.segments.iter().all(|s| !s.reversed));
    assert_eq!(t.total_ms, None);
    assert_eq!(t.milestones[2].source, "not reached");

    // No run at all, no incident: only detection (the first event).
    let t = build(&Input {
        audit: vec![row(
            1,
            5,
            "checklist.tick",
            None,
            json!({ "item": "a", "ticked": true }),
        )],
        ..Input::default()
    });
    assert_eq!(ats(&t), [Some(5), None, None, None, None]);
    assert_eq!(t.milestones[1].source, "no incident");
    assert_eq!(t.milestones[2].source, "no recovery run");

    // Nothing at all.
    let t = build(&Input::default());
    assert!(t.milestones.iter().all(|m| m.at.is_none()));
    assert_eq!(t.milestones[0].source, "no events");
}

#[test]
fn a_failed_recovery_step_is_not_recovery() {
    let mut audit = full();
    audit[7] = finished(8, 241_000, 3, "failed");
    audit.truncate(8);
    let t = build(&input(audit));
    // The promote is the last destructive step done; no health check followed it.
    assert_eq!(t.at(Milestone::Recovery), Some(200_000));
    assert_eq!(t.at(Milestone::Verification), None);
    assert_eq!(t.segments[2].ms, Some(19_000));
    assert_eq!(t.segments[3].ms, None);
}

#[test]
fn incident_opened_after_approval_is_reported_reversed() {
    // A drill: requested and approved first, its own step opens the incident.
    let mut audit = full();
    audit.remove(0);
    audit[0] = row(
        2,
        190_000,
        "incident.opened",
        None,
        json!({ "incident": 1 }),
    );
    audit[0].seq = 30;
    let t = build(&input(audit));
    assert_eq!(t.at(Milestone::Declaration), Some(190_000));
    assert_eq!(t.at(Milestone::Approval), Some(181_000));
    assert_eq!(t.segments[1].ms, None);
    assert!(t.segments[1].reversed);
    // Detection is the run request, the first event.
    assert_eq!(t.at(Milestone::Detection), Some(70_000));
}

#[test]
fn declared_at_stands_in_for_a_missing_audit_row() {
    let mut i = input(Vec::new());
    i.declared_at = Some(42);
    let t = build(&i);
    assert_eq!(t.at(Milestone::Declaration), Some(42));
}

#[test]
fn notifications_join_the_timeline_and_emails_are_folded() {
    let mut i = input(full());
    i.notices = vec![
        Notice {
            at: 62_000,
            channel: "slack".into(),
            key: "chat:slack:incident:1:update:1".into(),
            state: "delivered".into(),
            anchor: None,
        },
        Notice {
            at: 250_000,
            channel: "email".into(),
            key: "email:run:7:step:9:sub:1".into(),
            state: "delivered".into(),
            anchor: None,
        },
        Notice {
            at: 250_001,
            channel: "email".into(),
            key: "email:run:7:step:9:sub:2".into(),
            state: "failed".into(),
            anchor: None,
        },
    ];
    let t = build(&i);
    let notes: Vec<&Event> = t
        .events
        .iter()
        .filter(|e| e.kind == EventKind::Notification)
        .collect();
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert_eq!(notes[0].at, 62_000);
    assert_eq!(
        notes[1].text,
        "2 customer emails (1 failed): email:run:7:step:9"
    );
    // Ordered among the audit events.
    let pos = t.events.iter().position(|e| e.at == 62_000).unwrap();
    assert_eq!(t.events[pos - 1].at, 61_000);
}

#[test]
fn a_notification_follows_the_row_of_its_transaction() {
    // Queued a millisecond before its incident row was stamped, and tied with the next row:
    // still listed right after the incident row.
    let audit = vec![
        row(1, 100, "incident.opened", None, json!({ "incident": 1 })),
        row(
            2,
            100,
            "command",
            None,
            json!({ "text": "/dr incident open x" }),
        ),
        row(
            3,
            101,
            "checklist.tick",
            None,
            json!({ "item": "a", "ticked": true }),
        ),
    ];
    let notice = |at, anchor| Notice {
        at,
        channel: "slack".into(),
        key: "chat:slack:incident:1:update:1".into(),
        state: "delivered".into(),
        anchor,
    };
    for at in [99, 100, 101] {
        let t = build(&Input {
            audit: audit.clone(),
            notices: vec![notice(at, Some(1))],
            ..Input::default()
        });
        let kinds: Vec<EventKind> = t.events.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            [
                EventKind::Incident,
                EventKind::Notification,
                EventKind::Command,
                EventKind::Checklist
            ],
            "queued at {at}"
        );
    }
    // Without an anchor: by its own time, after the rows of that millisecond.
    let t = build(&Input {
        audit,
        notices: vec![notice(100, None)],
        ..Input::default()
    });
    assert_eq!(t.events[2].kind, EventKind::Notification);
}

#[test]
fn lease_bookkeeping_is_not_an_event() {
    let t = build(&Input {
        audit: vec![row(1, 1, "lease.claimed", Some(7), json!({ "owner": "x" }))],
        ..Input::default()
    });
    assert!(t.events.is_empty());
}
