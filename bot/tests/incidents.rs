//! The incident lifecycle on SQLite and on a real PostgreSQL: open → update → resolve through
//! `dispatch::handle`, refusals (one open incident, nothing to update, roles, unknown people),
//! the outbox rows each change enqueues in its own transaction (rendered Statuspage text,
//! per-platform broadcasts, ordering keys), and a failed transaction enqueueing nothing.

mod common;

use common::*;
use drbot::{
    dispatch,
    reply::{IncidentChange, Reply, UserError},
    store::{
        incidents::{self, IncidentState, NewIncident},
        now_ms,
        outbox::enqueue,
    },
};
use notifier::outbox::NewDelivery;
use serde_json::{Value, json};
use sqlx::Row;

/// The test app with `[statuspage]` and `[slack]` configured (neither is contacted here).
async fn notify_env(backend: Backend) -> Env {
    let mut env = env(backend).await;
    let text = config_text(&env.url, 1, "30m", 0, "m").replace(
        "[store]",
        "[statuspage]\nbase_url = \"http://127.0.0.1:9/v1\"\npage_id = \"p1\"\napi_key = \"k\"\n\n\
         [slack]\nsigning_secret = \"s\"\nbot_token = \"xoxb-t\"\napi_base_url = \"http://127.0.0.1:9/api\"\n\
         incident_channel = \"CINC\"\n\n[store]",
    );
    env.app = reconfigure(&env, &text);
    env
}

/// Outbox rows: (key, channel, ordering_key, payload), oldest first.
async fn outbox(env: &Env) -> Vec<(String, String, Option<String>, Value)> {
    sqlx::query("SELECT key, channel, ordering_key, payload FROM outbox ORDER BY id")
        .fetch_all(env.app.store.pool())
        .await
        .unwrap()
        .into_iter()
        .map(|r| {
            let payload: String = r.get("payload");
            (
                r.get("key"),
                r.get("channel"),
                r.get("ordering_key"),
                serde_json::from_str(&payload).unwrap(),
            )
        })
        .collect()
}

async fn say(env: &Env, person: &str, text: &str) -> Reply {
    dispatch::handle(&env.app, &cli(&env.app, person), text).await
}

async fn lifecycle(b: Backend) {
    let env = notify_env(b).await;
    let Reply::Incident(v) =
        say(&env, "bob", "/dr incident open --impact minor API degraded").await
    else {
        panic!("open refused");
    };
    assert_eq!(v.change, IncidentChange::Opened);
    assert_eq!(v.incident.name, "API degraded");
    assert_eq!(v.incident.impact, "minor");
    assert_eq!(v.incident.status, IncidentState::Investigating);
    assert_eq!(v.incident.region.as_deref(), Some("us-east-1"));
    assert_eq!(v.notified, vec!["slack", "statuspage"]);
    let id = v.incident.id;

    let rows = outbox(&env).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    let sp = rows.iter().find(|r| r.1 == "statuspage").unwrap();
    assert_eq!(
        sp.2.as_deref(),
        Some(format!("statuspage:incident:{id}").as_str())
    );
    assert_eq!(sp.3["op"], "create");
    assert_eq!(sp.3["name"], "API degraded", "the incident's own title");
    let body = sp.3["body"].as_str().unwrap();
    assert!(body.contains("primary region (us-east-1)"), "{body}");
    assert!(
        body.contains("We are investigating: API degraded."),
        "{body}"
    );
    assert_eq!(sp.3["impact"], "minor");
    let slack = rows.iter().find(|r| r.1 == "slack").unwrap();
    assert_eq!(
        slack.2.as_deref(),
        Some(format!("chat:slack:incident:{id}").as_str())
    );
    assert!(slack.3["text"].as_str().unwrap().contains("API degraded"));

    // A second open is refused while this one is open.
    let r = say(&env, "alice", "/dr incident open Another").await;
    assert!(
        matches!(&r, Reply::Refused(UserError::IncidentAlreadyOpen { id: i, .. }) if *i == id),
        "{r:?}"
    );

    let Reply::Incident(v) = say(
        &env,
        "alice",
        "/dr incident update --status identified Replica lag found",
    )
    .await
    else {
        panic!("update refused");
    };
    assert_eq!(v.incident.status, IncidentState::Identified);
    // An update without --status keeps the status.
    let Reply::Incident(v) = say(&env, "alice", "/dr incident update Failing over").await else {
        panic!("update refused");
    };
    assert_eq!(v.incident.status, IncidentState::Identified);
    assert_eq!(v.updates.len(), 3);

    let Reply::Incident(v) = say(&env, "bob", "/dr incident resolve").await else {
        panic!("resolve refused");
    };
    assert_eq!(v.incident.status, IncidentState::Resolved);
    assert!(v.incident.resolved_at.is_some());
    assert_eq!(
        v.updates.last().unwrap().body,
        drbot::incidents::RESOLVED_TEXT
    );

    let rows = outbox(&env).await;
    assert_eq!(rows.len(), 9);
    // The resolve also queues the report link to the chat channel, once, after the resolve
    // message (no `public_url` and `server.reports` here: it names the command).
    let (key, channel, ordering, payload) = rows.last().unwrap();
    assert_eq!(
        (key.as_str(), channel.as_str(), ordering.as_deref()),
        (
            format!("report:slack:incident:{id}").as_str(),
            "slack",
            Some(format!("chat:slack:incident:{id}").as_str())
        )
    );
    assert!(
        payload["text"]
            .as_str()
            .unwrap()
            .contains(&format!("`drbot report incident:{id}`")),
        "{payload}"
    );
    let ops: Vec<&str> = rows
        .iter()
        .filter(|r| r.1 == "statuspage")
        .map(|r| r.3["op"].as_str().unwrap())
        .collect();
    assert_eq!(ops, ["create", "update", "update", "resolve"]);
    let last = &rows.iter().rfind(|r| r.1 == "statuspage").unwrap().3;
    assert_eq!(last["status"], "resolved");
    assert!(
        last["body"]
            .as_str()
            .unwrap()
            .contains(drbot::incidents::RESOLVED_TEXT)
    );

    // Nothing is open any more: update and resolve are refused, a new incident may open.
    for text in ["/dr incident update x", "/dr incident resolve"] {
        let r = say(&env, "bob", text).await;
        assert!(
            matches!(r, Reply::Refused(UserError::NoOpenIncident)),
            "{r:?}"
        );
    }
    assert!(matches!(
        say(&env, "bob", "/dr incident open Second").await,
        Reply::Incident(_)
    ));
    assert_eq!(env.app.store.resolved_incidents(20).await.unwrap().len(), 1);

    // Each change left an audit row, and the chain holds.
    let audit = env.app.store.audit_rows(None, 100).await.unwrap();
    for action in ["incident.opened", "incident.updated", "incident.resolved"] {
        assert!(audit.iter().any(|a| a.action == action), "{action}");
    }
    assert!(
        env.app
            .store
            .audit_verify()
            .await
            .unwrap()
            .problems
            .is_empty()
    );
}

async fn permissions(b: Backend) {
    let env = notify_env(b).await;
    let r = say(&env, "dave", "/dr incident open X").await;
    let Reply::Refused(UserError::NotAllowedToManageIncidents { roles }) = r else {
        panic!("{r:?}");
    };
    assert_eq!(roles, ["oncall", "sre-lead"]);
    let r = say(&env, "mallory", "/dr incident open X").await;
    assert!(
        matches!(r, Reply::Refused(UserError::UnknownAccount)),
        "{r:?}"
    );
    assert!(outbox(&env).await.is_empty());
    assert!(env.app.store.open_incident().await.unwrap().is_none());
}

/// Without `[statuspage]`, `[slack]` or `[discord]` the incident is recorded and nothing is
/// enqueued.
async fn nothing_configured(b: Backend) {
    let env = env(b).await;
    let Reply::Incident(v) = say(&env, "bob", "/dr incident open Quiet").await else {
        panic!("open refused");
    };
    assert!(v.notified.is_empty());
    assert!(outbox(&env).await.is_empty());
}

/// A transaction that enqueued deliveries and then failed (here: a second open incident,
/// refused by the database's unique open slot) leaves neither rows nor deliveries.
async fn failed_transaction_enqueues_nothing(b: Backend) {
    let env = env(b).await;
    let new = |name: &'static str| NewIncident {
        name,
        impact: "major",
        region: None,
        run_id: None,
        opened_by: "bob",
        now: now_ms(),
    };
    let mut tx = env.app.store.write().await.unwrap();
    incidents::insert_incident(&mut tx, &new("first"))
        .await
        .unwrap();
    let d = NewDelivery {
        key: "statuspage:incident:x".into(),
        channel: "statuspage".into(),
        payload: json!({}),
        ordering_key: None,
    };
    assert!(enqueue(&mut tx, &d).await.unwrap());
    let second = incidents::insert_incident(&mut tx, &new("second")).await;
    assert!(second.is_err(), "the database allows two open incidents");
    drop(tx);
    assert!(outbox(&env).await.is_empty());
    assert!(env.app.store.open_incident().await.unwrap().is_none());
}

/// Concurrent opens: exactly one incident, and only its deliveries.
async fn concurrent_opens(b: Backend) {
    let env = notify_env(b).await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let app = env.app.clone();
        tasks.push(tokio::spawn(async move {
            let actor = cli(&app, "bob");
            dispatch::handle(&app, &actor, &format!("/dr incident open Outage {i}")).await
        }));
    }
    let mut opened = 0;
    for t in tasks {
        match t.await.unwrap() {
            Reply::Incident(_) => opened += 1,
            Reply::Refused(UserError::IncidentAlreadyOpen { .. }) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(opened, 1);
    assert_eq!(outbox(&env).await.len(), 2);
}

/// Inserts a finished run of `command` with one step carrying `data`.
async fn finished_run(env: &Env, command: &str, dry_run: i64, finished: i64, data: Value) {
    let r = sqlx::query(
        "INSERT INTO runs (runbook, command, plan, fingerprint, target, destructive, dry_run, \
         state, requested_by, requested_account, platform, created_at, updated_at, started_at, \
         finished_at) VALUES ($1, $1, '{}', 'f', $1, 0, $2, 'succeeded', 'bob', 'cli:bob', 'cli', \
         $3, $3, $3, $4) RETURNING id",
    )
    .bind(command.to_string())
    .bind(dry_run)
    .bind(finished - 90_000)
    .bind(finished)
    .fetch_one(env.app.store.pool())
    .await
    .unwrap();
    let id: i64 = r.get("id");
    sqlx::query(
        "INSERT INTO run_steps (run_id, idx, name, kind, destructive, idempotent, gate, state, \
         data) VALUES ($1, 0, 's', $2, 0, 1, 0, 'succeeded', $3)",
    )
    .bind(id)
    .bind(if command == "verify-backup" {
        "verify_backup"
    } else {
        "exec"
    })
    .bind(data.to_string())
    .execute(env.app.store.pool())
    .await
    .unwrap();
}

/// The public page's model from the store: current incident, history, evidence (the last
/// finished runs, dry runs excluded).
async fn status_page_model(b: Backend) {
    let env = env(b).await;
    let m = drbot::status_page::model(&env.app).await.unwrap();
    assert!(m.current.is_none() && m.history.is_empty());
    assert!(m.evidence.last_backup_verification.is_none() && m.evidence.last_drill.is_none());

    say(&env, "bob", "/dr incident open First").await;
    say(&env, "bob", "/dr incident resolve").await;
    say(&env, "bob", "/dr incident open --impact minor Second").await;
    say(
        &env,
        "bob",
        "/dr incident update --status monitoring Watching",
    )
    .await;
    let now = now_ms();
    let report =
        json!({ "passed": true, "duration_seconds": 42.0, "tables": { "t1": {}, "t2": {} } });
    finished_run(&env, "verify-backup", 0, now - 10_000, report).await;
    finished_run(&env, "drill", 0, now - 5_000, json!({ "rpo_seconds": 3.0 })).await;
    finished_run(&env, "drill", 1, now, json!({})).await;

    let m = drbot::status_page::model(&env.app).await.unwrap();
    let current = m.current.unwrap();
    assert_eq!(current.name, "Second");
    assert_eq!(current.updates.len(), 2);
    assert_eq!(current.updates[1].body, "Watching");
    assert_eq!(m.history.len(), 1);
    assert_eq!(m.history[0].name, "First");
    let v = m.evidence.last_backup_verification.unwrap();
    assert!(v.passed);
    assert_eq!(v.tables, 2);
    assert_eq!(v.duration.as_secs(), 42);
    let d = m.evidence.last_drill.unwrap();
    assert_eq!(d.rto.as_secs(), 90, "the dry run is not evidence");
    assert_eq!(d.rpo.map(|r| r.as_secs()), Some(3));
    assert!(d.met);
}

#[test]
fn resolved_is_final() {
    for to in [
        IncidentState::Investigating,
        IncidentState::Monitoring,
        IncidentState::Resolved,
    ] {
        assert!(!IncidentState::Resolved.may_become(to));
        assert!(IncidentState::Monitoring.may_become(to));
    }
}

both_backends!(
    lifecycle,
    permissions,
    nothing_configured,
    failed_transaction_enqueues_nothing,
    concurrent_opens,
    status_page_model
);
