//! The `incident` step type in a real runbook, driven by the real driver on SQLite and on a
//! real PostgreSQL: a drill that opens, updates and resolves the incident; component statuses
//! reaching the Statuspage payload and drbot's own page; a re-run of a step (as after a crash)
//! posting nothing twice; an open while a person's incident is open becoming an update; and
//! parameter validation.

mod common;

use std::time::Duration;

use common::*;
use drbot::{
    approvals, dispatch,
    reply::Reply,
    steps::incident::STARTED_TEXT,
    store::{incidents::IncidentState, runs::RunState},
};
use notifier::page::ComponentStatus;
use recovery::step::{ProgressSink, StepContext};
use serde_json::{Value, json};
use sqlx::Row;
use tokio_util::sync::CancellationToken;

const COMMS: &str = r#"
[[status_page.components]]
name = "API"
statuspage_id = "cmp-api"

[[status_page.components]]
name = "Dashboard"

[[runbooks]]
name = "drill"
command = "drill"
request_roles = ["oncall", "sre-lead"]
approve_roles = ["sre-lead"]

[[runbooks.steps]]
name = "open"
type = "incident"
with = { action = "open", impact = "minor", components = { API = "partial_outage" } }

[[runbooks.steps]]
name = "identified"
type = "incident"
with = { action = "update", status = "identified", message = "Database promoted in {secondary}." }

[[runbooks.steps]]
name = "monitoring"
type = "incident"
with = { action = "update", status = "monitoring", message = "Traffic is on {secondary}.", components = { API = "operational" } }

[[runbooks.steps]]
name = "resolve"
type = "incident"
with = { action = "resolve", message = "Drill over." }
"#;

async fn comms_env(b: Backend) -> Env {
    let mut env = env(b).await;
    let text = config_text(&env.url, 1, "30m", 0, "m").replace(
        "[store]",
        &format!(
            "[statuspage]\nbase_url = \"http://127.0.0.1:9/v1\"\npage_id = \"p1\"\napi_key = \"k\"\n\n\
             {COMMS}\n[store]"
        ),
    );
    env.app = reconfigure(&env, &text);
    env
}

async fn statuspage_rows(env: &Env) -> Vec<Value> {
    sqlx::query("SELECT payload FROM outbox WHERE channel = 'statuspage' ORDER BY id")
        .fetch_all(env.app.store.pool())
        .await
        .unwrap()
        .into_iter()
        .map(|r| serde_json::from_str(&r.get::<String, _>("payload")).unwrap())
        .collect()
}

async fn drill_opens_updates_and_resolves(b: Backend) {
    let env = comms_env(b).await;
    let Reply::Requested(v) = dispatch::handle(&env.app, &cli(&env.app, "bob"), "/dr drill").await
    else {
        panic!("drill request refused");
    };
    let id = v.run.id;
    let stop = CancellationToken::new();
    let driver = tokio::spawn(drbot::driver::run(
        env.app.clone(),
        "test".into(),
        stop.clone(),
    ));
    // Incident steps tell customers: nothing is posted before approval.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(env.app.store.open_incident().await.unwrap().is_none());
    assert!(statuspage_rows(&env).await.is_empty());
    approvals::approve(&env.app, &cli(&env.app, "alice"), id, None)
        .await
        .unwrap();
    assert_eq!(
        wait_state(
            &env.app,
            id,
            &[
                RunState::Succeeded,
                RunState::Failed,
                RunState::NeedsAttention
            ],
            30
        )
        .await,
        RunState::Succeeded
    );
    stop.cancel();
    driver.await.unwrap();

    let incident = env.app.store.resolved_incidents(5).await.unwrap();
    assert_eq!(incident.len(), 1);
    let inc = &incident[0];
    assert_eq!(inc.run_id, Some(id));
    assert_eq!(inc.impact, "minor");
    assert_eq!(inc.name, "Service Degradation - DR Activated");
    let updates = env.app.store.incident_updates(inc.id).await.unwrap();
    let statuses: Vec<_> = updates.iter().map(|u| u.status).collect();
    assert_eq!(
        statuses,
        [
            IncidentState::Investigating,
            IncidentState::Identified,
            IncidentState::Monitoring,
            IncidentState::Resolved
        ]
    );
    assert_eq!(updates[1].body, "Database promoted in us-west-2.");
    assert_eq!(
        updates[0].source.as_deref(),
        Some(format!("run:{id}:step:0").as_str())
    );
    assert!(
        updates
            .iter()
            .all(|u| u.author == format!("drill (run {id})") || u.author == format!("run {id}")),
        "{updates:?}"
    );

    // Statuspage: API (the only component with a Statuspage id) follows the timeline.
    let rows = statuspage_rows(&env).await;
    let ops: Vec<_> = rows.iter().map(|r| r["op"].as_str().unwrap()).collect();
    assert_eq!(ops, ["create", "update", "update", "resolve"]);
    let comps: Vec<_> = rows.iter().map(|r| r["components"].clone()).collect();
    assert_eq!(
        comps,
        [
            json!([["cmp-api", "partial_outage"]]),
            json!([["cmp-api", "partial_outage"]]),
            json!([["cmp-api", "operational"]]),
            json!([["cmp-api", "operational"]]),
        ]
    );

    // Re-running a finished step (as a resumed run would) posts nothing new.
    let kind = env.app.settings.registry.get("incident").unwrap();
    let step = kind
        .build(&json!({ "action": "update", "status": "identified", "message": "again" }))
        .unwrap();
    let ctx = StepContext {
        run_id: id,
        step_index: 1,
        attempt: 2,
        vars: Default::default(),
        progress: ProgressSink::none(),
        cancel: CancellationToken::new(),
        ..Default::default()
    };
    let out = step.run(&ctx).await.unwrap();
    assert_eq!(out.data["incident"], inc.id);
    assert_eq!(
        env.app.store.incident_updates(inc.id).await.unwrap().len(),
        4
    );
    assert_eq!(statuspage_rows(&env).await.len(), 4);
}

async fn components_on_the_page_and_open_joins_a_declared_incident(b: Backend) {
    let env = comms_env(b).await;
    let say = |who: &'static str, text: &'static str| {
        let app = env.app.clone();
        async move { dispatch::handle(&app, &cli(&app, who), text).await }
    };
    let r = say("bob", "/dr incident open --impact critical Region down").await;
    let Reply::Incident(v) = r else {
        panic!("{r:?}")
    };
    let page = drbot::status_page::model(&env.app).await.unwrap();
    let st: Vec<_> = page.components.iter().map(|c| c.status).collect();
    assert_eq!(
        st,
        [ComponentStatus::MajorOutage, ComponentStatus::MajorOutage]
    );

    // A runbook's open joins the declared incident as an update, with its component change.
    let kind = env.app.settings.registry.get("incident").unwrap();
    let step = kind
        .build(&json!({ "action": "open", "components": { "Dashboard": "degraded_performance" } }))
        .unwrap();
    let Reply::Requested(req) = say("bob", "/dr drill").await else {
        panic!("drill refused")
    };
    let ctx = StepContext {
        run_id: req.run.id,
        step_index: 0,
        attempt: 1,
        vars: Default::default(),
        progress: ProgressSink::none(),
        cancel: CancellationToken::new(),
        ..Default::default()
    };
    let out = step.run(&ctx).await.unwrap();
    assert_eq!(out.data["incident"], v.incident.id);
    let updates = env.app.store.incident_updates(v.incident.id).await.unwrap();
    assert_eq!(updates.len(), 2);
    assert_eq!(updates[1].body, STARTED_TEXT);
    let page = drbot::status_page::model(&env.app).await.unwrap();
    let st: Vec<_> = page.components.iter().map(|c| c.status).collect();
    assert_eq!(
        st,
        [
            ComponentStatus::MajorOutage,
            ComponentStatus::DegradedPerformance
        ]
    );

    // The run's resolve step does not close the incident it joined (a person declared it):
    // it moves it to monitoring and the incident stays open, for people to resolve.
    let resolve = kind
        .build(&json!({ "action": "resolve", "message": "Drill over." }))
        .unwrap();
    let out = resolve
        .run(&StepContext {
            step_index: 1,
            ..ctx.clone()
        })
        .await
        .unwrap();
    assert_eq!(out.data["incident"], v.incident.id);
    let row = env
        .app
        .store
        .incident(v.incident.id)
        .await
        .unwrap()
        .unwrap();
    assert!(row.resolved_at.is_none(), "{row:?}");
    let updates = env.app.store.incident_updates(v.incident.id).await.unwrap();
    assert_eq!(updates.len(), 3);
    assert_eq!(updates[2].body, "Drill over.");
    assert_eq!(updates[2].status.as_str(), "monitoring");

    // Resolving puts every component back to operational.
    let r = say("bob", "/dr incident resolve").await;
    assert!(matches!(r, Reply::Incident(_)), "{r:?}");
    let page = drbot::status_page::model(&env.app).await.unwrap();
    assert!(
        page.components
            .iter()
            .all(|c| c.status == ComponentStatus::Operational)
    );

    // Update and resolve with no open incident are no-ops, not failures.
    let step = kind.build(&json!({ "action": "resolve" })).unwrap();
    let ctx = StepContext {
        step_index: 3,
        ..ctx
    };
    let out = step.run(&ctx).await.unwrap();
    assert!(out.summary.contains("no open incident"), "{}", out.summary);
}

/// An open with a message (and a status) when no incident is open: the new incident's first
/// timeline entry is the step's own text and status, on the page and in the Statuspage create.
async fn open_posts_its_message_as_the_first_update(b: Backend) {
    let env = comms_env(b).await;
    let Reply::Requested(req) =
        dispatch::handle(&env.app, &cli(&env.app, "bob"), "/dr drill").await
    else {
        panic!("drill refused")
    };
    let kind = env.app.settings.registry.get("incident").unwrap();
    let step = kind
        .build(&json!({ "action": "open", "title": "DR drill",
                        "message": "Scheduled DR drill: traffic moves to DR.",
                        "status": "identified" }))
        .unwrap();
    let ctx = StepContext {
        run_id: req.run.id,
        step_index: 0,
        attempt: 1,
        vars: Default::default(),
        progress: ProgressSink::none(),
        cancel: CancellationToken::new(),
        ..Default::default()
    };
    let out = step.run(&ctx).await.unwrap();
    let open = env.app.store.open_incident().await.unwrap().unwrap();
    assert_eq!(out.data["incident"], open.id);
    assert_eq!(open.name, "DR drill");
    assert_eq!(open.status, IncidentState::Identified);
    let updates = env.app.store.incident_updates(open.id).await.unwrap();
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].body, "Scheduled DR drill: traffic moves to DR.");
    assert_eq!(updates[0].status, IncidentState::Identified);
    let page = drbot::status_page::model(&env.app).await.unwrap();
    let current = page.current.unwrap();
    assert_eq!(
        current.updates[0].body,
        "Scheduled DR drill: traffic moves to DR."
    );
    let rows = statuspage_rows(&env).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["op"], "create");
    assert_eq!(rows[0]["status"], "identified");
    assert!(
        rows[0]["body"]
            .as_str()
            .unwrap()
            .contains("Scheduled DR drill: traffic moves to DR."),
        "{}",
        rows[0]
    );

    // Without a message, an opened incident says it is being investigated.
    let r = dispatch::handle(&env.app, &cli(&env.app, "bob"), "/dr incident resolve").await;
    assert!(matches!(r, Reply::Incident(_)), "{r:?}");
    let step = kind.build(&json!({ "action": "open" })).unwrap();
    step.run(&StepContext {
        step_index: 1,
        ..ctx
    })
    .await
    .unwrap();
    let open = env.app.store.open_incident().await.unwrap().unwrap();
    let updates = env.app.store.incident_updates(open.id).await.unwrap();
    assert_eq!(
        updates[0].body,
        "We are investigating: Service Degradation - DR Activated."
    );
    assert_eq!(updates[0].status, IncidentState::Investigating);
}

/// The default texts of an open joining a person's incident and of a resolve that leaves it
/// open are public: they name no run.
async fn default_texts_name_no_run(b: Backend) {
    let env = comms_env(b).await;
    let r = dispatch::handle(
        &env.app,
        &cli(&env.app, "bob"),
        "/dr incident open Region down",
    )
    .await;
    let Reply::Incident(v) = r else {
        panic!("{r:?}")
    };
    let Reply::Requested(req) =
        dispatch::handle(&env.app, &cli(&env.app, "bob"), "/dr drill").await
    else {
        panic!("drill refused")
    };
    let kind = env.app.settings.registry.get("incident").unwrap();
    let ctx = StepContext {
        run_id: req.run.id,
        step_index: 0,
        attempt: 1,
        vars: Default::default(),
        progress: ProgressSink::none(),
        cancel: CancellationToken::new(),
        ..Default::default()
    };
    for (i, action) in ["open", "resolve"].into_iter().enumerate() {
        let step = kind.build(&json!({ "action": action })).unwrap();
        step.run(&StepContext {
            step_index: i,
            ..ctx.clone()
        })
        .await
        .unwrap();
    }
    let updates = env.app.store.incident_updates(v.incident.id).await.unwrap();
    let bodies: Vec<_> = updates.iter().skip(1).map(|u| u.body.as_str()).collect();
    assert_eq!(
        bodies,
        [
            "Disaster recovery has started.",
            "Recovery steps are complete; we are monitoring."
        ]
    );
    let run = req.run.id.to_string();
    assert!(
        bodies.iter().all(|b| !b.contains(&run)),
        "{bodies:?} name run {run}"
    );
}

/// A drill that failed before its resolve step leaves its "no impact" incident open; a real
/// failover's open then joins it and raises its impact, so the page and Statuspage stop
/// showing every component operational. An open never lowers an impact.
async fn a_failover_joining_a_drills_incident_raises_its_impact(b: Backend) {
    let env = comms_env(b).await;
    let kind = env.app.settings.registry.get("incident").unwrap();
    let ctx = |run_id: i64, step_index: usize| StepContext {
        run_id,
        step_index,
        attempt: 1,
        vars: Default::default(),
        progress: ProgressSink::none(),
        cancel: CancellationToken::new(),
        ..Default::default()
    };
    // One run stands for both (whose run an open joins does not matter to the impact).
    let Reply::Requested(req) =
        dispatch::handle(&env.app, &cli(&env.app, "bob"), "/dr drill").await
    else {
        panic!("drill refused")
    };
    let run = req.run.id;
    let drill = kind
        .build(&json!({ "action": "open", "title": "DR drill", "impact": "none" }))
        .unwrap();
    let out = drill.run(&ctx(run, 0)).await.unwrap();
    let id = out.data["incident"].as_i64().unwrap();
    let page = drbot::status_page::model(&env.app).await.unwrap();
    assert!(
        page.components
            .iter()
            .all(|c| c.status == ComponentStatus::Operational)
    );
    // The drill's run ended without resolving it; the real failover comes.
    let failover = kind
        .build(&json!({ "action": "open", "impact": "major" }))
        .unwrap();
    let out = failover.run(&ctx(run, 1)).await.unwrap();
    assert_eq!(out.data["incident"], id, "joined");
    let row = env.app.store.incident(id).await.unwrap().unwrap();
    assert_eq!(row.impact, "major");
    let page = drbot::status_page::model(&env.app).await.unwrap();
    assert!(
        page.components
            .iter()
            .all(|c| c.status != ComponentStatus::Operational),
        "{:?}",
        page.components
    );
    let rows = statuspage_rows(&env).await;
    let last = rows.last().unwrap();
    assert_eq!(
        (last["op"].as_str(), last["impact"].as_str()),
        (Some("update"), Some("major"))
    );
    assert!(
        last["components"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c[1] != "operational"),
        "{last}"
    );
    // A lesser open joining it leaves the impact as it is.
    let minor = kind
        .build(&json!({ "action": "open", "impact": "minor" }))
        .unwrap();
    minor.run(&ctx(run, 2)).await.unwrap();
    let row = env.app.store.incident(id).await.unwrap().unwrap();
    assert_eq!(row.impact, "major");
}

/// A drill whose steps all worked but whose measurement missed a target says so wherever the
/// run's end is shown: the Slack card's headline, the Discord card and outcome, `drbot show`.
async fn a_drill_that_missed_its_targets_says_so(b: Backend) {
    let env = comms_env(b).await;
    let Reply::Requested(v) = dispatch::handle(&env.app, &cli(&env.app, "bob"), "/dr drill").await
    else {
        panic!("drill request refused");
    };
    let id = v.run.id;
    let stop = CancellationToken::new();
    let driver = tokio::spawn(drbot::driver::run(
        env.app.clone(),
        "test".into(),
        stop.clone(),
    ));
    approvals::approve(&env.app, &cli(&env.app, "alice"), id, None)
        .await
        .unwrap();
    wait_state(&env.app, id, &[RunState::Succeeded], 30).await;
    stop.cancel();
    driver.await.unwrap();
    let shown = |v: &drbot::reply::RunView| {
        (
            drbot::slack::text::card_text(v),
            drbot::discord::text::card(v)["embeds"][0]["title"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            drbot::discord::text::outcome(v, None),
            drbot::cli::text::run_view(v),
        )
    };
    let view = approvals::view(&env.app.store, id).await.unwrap().unwrap();
    assert!(!view.missed_target());
    let (slack, discord, outcome, cli_text) = shown(&view);
    assert!(slack.starts_with("Done: drill"), "{slack}");
    assert!(!format!("{discord}{outcome}{cli_text}").contains("MISSED"));
    // What pg_drill_measure records for a drill over its RTO.
    sqlx::query("UPDATE run_steps SET data = $1 WHERE run_id = $2 AND idx = 2")
        .bind(json!({ "measured": true, "met": false, "rto_met": false }).to_string())
        .bind(id)
        .execute(env.app.store.pool())
        .await
        .unwrap();
    let view = approvals::view(&env.app.store, id).await.unwrap().unwrap();
    assert!(view.missed_target());
    let (slack, discord, outcome, cli_text) = shown(&view);
    assert!(
        slack.starts_with("Done, drill targets MISSED: drill"),
        "{slack}"
    );
    assert!(discord.contains("targets MISSED"), "{discord}");
    assert!(
        outcome.contains("MISSED its RTO or RPO target"),
        "{outcome}"
    );
    assert!(
        cli_text.contains("succeeded (drill targets MISSED)"),
        "{cli_text}"
    );
}

both_backends!(
    drill_opens_updates_and_resolves,
    components_on_the_page_and_open_joins_a_declared_incident,
    open_posts_its_message_as_the_first_update,
    default_texts_name_no_run,
    a_failover_joining_a_drills_incident_raises_its_impact,
    a_drill_that_missed_its_targets_says_so
);

#[test]
fn parameters_are_validated() {
    let s = settings(
        &config_text("sqlite://unused.db", 1, "30m", 0, "m")
            .replace("[store]", &format!("{COMMS}\n[store]")),
    );
    let kind = s.registry.get("incident").unwrap();
    let err = |p: Value| kind.validate(&p).unwrap_err();
    assert!(err(json!({ "action": "close" })).contains("action"));
    assert!(err(json!({ "action": "update" })).contains("needs a message"));
    assert!(err(json!({ "action": "open", "impact": "huge" })).contains("unknown impact"));
    assert!(
        err(json!({ "action": "update", "message": "m", "status": "resolved" }))
            .contains("unknown status")
    );
    assert!(err(json!({ "action": "resolve", "status": "monitoring" })).contains("always moves"));
    let e = err(json!({ "action": "open", "components": { "Web": "operational" } }));
    assert!(
        e.contains("components.Web") && e.contains("API, Dashboard"),
        "{e}"
    );
    let e = err(json!({ "action": "open", "components": { "API": "down" } }));
    assert!(e.contains("unknown status \"down\""), "{e}");
    assert!(err(json!({ "action": "open", "colour": "red" })).contains("colour"));
    kind.validate(&json!({ "action": "open" })).unwrap();
}
