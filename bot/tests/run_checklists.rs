//! Checklists attached to runbooks, on SQLite and on a real PostgreSQL, driven by the real
//! driver: a run opens the runbook's checklists; a step with `ticks` ticks its item as drbot
//! when it succeeds (with a `checklist.tick` audit row); a step with `requires` does not run,
//! whatever was approved (the run, a retry decision), until people tick the items; then it asks
//! for its gate and runs exactly once. Config checks of `checklists`, `ticks` and `requires`.

mod common;

use common::*;
use drbot::{
    app::App,
    approvals,
    config::Settings,
    dispatch,
    reply::Reply,
    store::{
        checklists::Toggle,
        runs::{RequestAction, RunState},
    },
};
use tokio_util::sync::CancellationToken;

/// The test config's failover runbook with checklists: `promote` ticks
/// `during-failover:promote-db`; the gated `switch` requires two pre-failover items.
fn with_checklists(text: &str) -> String {
    let out = text
        .replacen(
            "name = \"failover\"\ncommand = \"failover\"\n",
            "name = \"failover\"\ncommand = \"failover\"\n\
             checklists = [\"pre-failover\", \"during-failover\"]\n",
            1,
        )
        .replacen(
            ">> {region.marker}\"] }\n\n[[runbooks.steps]]\nname = \"switch\"",
            ">> {region.marker}\"] }\nticks = [\"during-failover:promote-db\"]\n\n\
             [[runbooks.steps]]\nname = \"switch\"",
            1,
        )
        .replacen(
            "gate = true\n",
            "gate = true\nrequires = [\"pre-failover:notify-ic\", \"pre-failover:activate-dr-team\"]\n",
            1,
        );
    assert_eq!(out.matches("checklists = ").count(), 1, "{out}");
    assert_eq!(out.matches("ticks = ").count(), 1, "{out}");
    assert_eq!(out.matches("requires = ").count(), 1, "{out}");
    out
}

async fn audit(app: &App, action: &str) -> Vec<(drbot::store::audit::AuditRow, serde_json::Value)> {
    app.audit.flush().await.unwrap();
    let mut rows: Vec<_> = app
        .store
        .audit_rows(None, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.action == action)
        .map(|r| {
            let d = serde_json::from_str(&r.detail).unwrap();
            (r, d)
        })
        .collect();
    rows.sort_by_key(|(r, _)| r.seq);
    rows
}

/// Waits until the run is held again for checklist items (after it was queued).
async fn held(app: &App, id: i64) -> String {
    assert_eq!(
        wait_state(app, id, &[RunState::NeedsAttention], 20).await,
        RunState::NeedsAttention
    );
    let run = app.store.run(id).await.unwrap().unwrap();
    assert_eq!(run.held_step, Some(2), "held before `switch`");
    run.detail.unwrap_or_default()
}

async fn attached_checklists_tick_and_hold(b: Backend) {
    let env = env(b).await;
    let app = reconfigure(
        &env,
        &with_checklists(&config_text(
            &env.url,
            1,
            "30m",
            0,
            &env.dir.path().join("marker").display().to_string(),
        )),
    );
    let marker = env.dir.path().join("marker");
    let id = match dispatch::handle(&app, &cli(&app, "bob"), "/dr failover us-west-2").await {
        Reply::Requested(v) => v.run.id,
        other => panic!("{other:?}"),
    };
    // The run's checklists are open from the request on, linked to the run.
    let views = app.store.run_checklists(id).await.unwrap();
    let names: Vec<&str> = views.iter().map(|v| v.instance.name.as_str()).collect();
    assert_eq!(names, ["pre-failover", "during-failover"]);
    assert!(views.iter().all(|v| v.instance.run == Some(id)));
    let (pre, during) = (views[0].instance.id, views[1].instance.id);

    let stop = CancellationToken::new();
    let driver = tokio::spawn(drbot::driver::run(app.clone(), "test".into(), stop.clone()));
    approvals::approve(&app, &cli(&app, "carol"), id, None)
        .await
        .unwrap();
    let detail = held(&app, id).await;
    assert!(
        detail.contains("step 3 `switch` waits for checklist items to be ticked")
            && detail
                .contains("Pre-Failover: Notify incident commander (`pre-failover:notify-ic`)")
            && detail.contains("Activate DR team (`pre-failover:activate-dr-team`)"),
        "{detail}"
    );
    assert_eq!(lines(&marker), ["promote us-west-2"], "switch did not run");
    // No gate was asked for: the items come first.
    let view = approvals::view(&app.store, id).await.unwrap().unwrap();
    assert!(
        view.request.as_ref().is_none_or(|q| q.state != "pending"),
        "{:?}",
        view.request
    );

    // `promote` succeeded: drbot ticked its item, audited like a person's tick.
    let v = app.store.checklist(during).await.unwrap().unwrap();
    assert_eq!(v.tick("promote-db").unwrap().ticked_by, "drbot");
    assert_eq!(v.done(), 1);
    let ticks = audit(&app, "checklist.tick").await;
    assert_eq!(ticks.len(), 1, "{ticks:?}");
    assert_eq!(ticks[0].0.platform, "system");
    assert_eq!(ticks[0].0.account.as_deref(), Some("drbot"));
    assert_eq!(ticks[0].0.run_id, Some(id));
    assert_eq!(ticks[0].1["item"], "promote-db");
    assert_eq!(ticks[0].1["by"], "drbot");
    assert_eq!(ticks[0].1["step"], 1);

    // Approval alone does not get past the hold: an approved retry only checks again.
    approvals::decide(&app, &cli(&app, "alice"), id, RequestAction::Retry)
        .await
        .unwrap();
    approvals::decide_or_approve(&app, &cli(&app, "carol"), id, RequestAction::Retry)
        .await
        .unwrap();
    held(&app, id).await;
    assert_eq!(audit(&app, "run.held").await.len(), 2);
    assert_eq!(lines(&marker), ["promote us-west-2"]);

    // One item ticked: queued, checked, held again for the other one only.
    assert_eq!(
        app.store
            .toggle_tick(pre, "notify-ic", &slack(&app, "UBOB"))
            .await
            .unwrap(),
        Toggle::Ticked
    );
    let detail = held(&app, id).await;
    assert!(
        detail.contains("activate-dr-team") && !detail.contains("notify-ic"),
        "{detail}"
    );
    assert_eq!(audit(&app, "run.held").await.len(), 3);
    assert_eq!(lines(&marker), ["promote us-west-2"]);

    // Both ticked (the second typed, as `drbot cmd` does when chat is down): the gate is asked
    // for; still nothing ran until it is approved.
    let reply = drbot::dispatch::handle(
        &app,
        &cli(&app, "bob"),
        &format!("/dr checklist tick #{pre} Activate-DR-Team"),
    )
    .await;
    assert!(
        matches!(&reply, drbot::reply::Reply::Ticked { ticked: true, item, .. } if item == "activate-dr-team"),
        "{reply:?}"
    );
    assert_eq!(
        wait_state(&app, id, &[RunState::AwaitingGate], 20).await,
        RunState::AwaitingGate
    );
    assert_eq!(lines(&marker), ["promote us-west-2"]);
    approvals::approve(&app, &cli(&app, "alice"), id, None)
        .await
        .unwrap();
    assert_eq!(
        wait_state(&app, id, &[RunState::Succeeded], 20).await,
        RunState::Succeeded
    );
    assert_eq!(
        lines(&marker),
        ["promote us-west-2", "switch"],
        "exactly once"
    );
    stop.cancel();
    driver.await.unwrap();

    let requeued = audit(&app, "run.requeued").await;
    assert_eq!(requeued.len(), 2, "{requeued:?}");
    assert!(requeued.iter().all(|(_, d)| d["instance"] == pre));
    let held_rows = audit(&app, "run.held").await;
    assert_eq!(
        held_rows.last().unwrap().1["unticked"],
        serde_json::json!(["pre-failover:activate-dr-team"])
    );
    // A tick on a run that is no longer held changes nothing about the run.
    app.store
        .toggle_tick(pre, "document-state", &cli(&app, "alice"))
        .await
        .unwrap();
    assert_eq!(
        app.store.run(id).await.unwrap().unwrap().state,
        RunState::Succeeded
    );
    assert_eq!(audit(&app, "run.requeued").await.len(), 2);
    let report = app.store.audit_verify().await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

/// A report takes the checklists linked to its runs and the standalone ones posted in its
/// window, never another run's checklists posted at the same time.
async fn report_checklists_follow_the_run_link(b: Backend) {
    let env = env(b).await;
    let app = reconfigure(
        &env,
        &with_checklists(&config_text(
            &env.url,
            1,
            "30m",
            0,
            &env.dir.path().join("marker").display().to_string(),
        )),
    );
    let from = drbot::store::now_ms();
    let mut runs = Vec::new();
    for who in ["bob", "alice"] {
        match dispatch::handle(&app, &cli(&app, who), "/dr failover us-west-2").await {
            Reply::Requested(v) => runs.push(v.run.id),
            other => panic!("{other:?}"),
        }
        // One run per target at a time: cancel it so the next can be requested.
        let id = runs.last().unwrap();
        let r = dispatch::handle(&app, &cli(&app, who), &format!("/dr cancel {id}")).await;
        assert!(!matches!(r, Reply::Refused(_)), "{r:?}");
    }
    let standalone =
        match dispatch::handle(&app, &cli(&app, "alice"), "/dr checklist post-failover").await {
            Reply::Checklist(v) => v.instance.id,
            other => panic!("{other:?}"),
        };
    let to = drbot::store::now_ms();
    let of = |views: Vec<drbot::store::checklists::ChecklistView>| -> Vec<(Option<i64>, String)> {
        views
            .into_iter()
            .map(|v| (v.instance.run, v.instance.name))
            .collect()
    };
    let first = of(app
        .store
        .report_checklists(from, to, &runs[..1])
        .await
        .unwrap());
    assert_eq!(
        first,
        [
            (Some(runs[0]), "pre-failover".to_string()),
            (Some(runs[0]), "during-failover".to_string()),
            (None, "post-failover".to_string()),
        ]
    );
    // Outside the window only the linked ones remain; with no runs, only standalone ones.
    let later = of(app
        .store
        .report_checklists(to + 1, to + 2, &runs[1..])
        .await
        .unwrap());
    assert_eq!(
        later,
        [
            (Some(runs[1]), "pre-failover".to_string()),
            (Some(runs[1]), "during-failover".to_string()),
        ]
    );
    let alone = app.store.report_checklists(from, to, &[]).await.unwrap();
    assert_eq!(alone.len(), 1);
    assert_eq!(alone[0].instance.id, standalone);
}

both_backends!(
    attached_checklists_tick_and_hold,
    report_checklists_follow_the_run_link
);

#[test]
fn checklist_references_are_checked() {
    let base = config_text("sqlite://unused.db", 1, "30m", 0, "m");
    // The good config validates.
    settings(&with_checklists(&base));
    let bad = with_checklists(&base)
        .replacen(
            "checklists = [\"pre-failover\", \"during-failover\"]",
            "checklists = [\"pre-failover\", \"nope\", \"pre-failover\"]",
            1,
        )
        .replacen(
            "ticks = [\"during-failover:promote-db\"]",
            "ticks = [\"pre-failover:nope\", \"post-failover:verify\", \"pre-failover\"]",
            1,
        )
        .replacen(
            "\"pre-failover:notify-ic\"",
            "\"during-failover:stop-writes\"",
            1,
        );
    let parsed = drbot::config::parse_str(&bad, std::path::Path::new("."), &|_| None).unwrap();
    let Err(problems) = Settings::from_parsed(parsed, "t.toml".into()) else {
        panic!("a bad config validated");
    };
    let p = problems.0.join("\n");
    for want in [
        "runbooks[0].checklists[1]: no checklist `nope` (known: during-failover, post-failover, \
         pre-failover, recovery-to-primary)",
        "runbooks[0].checklists[2]: `pre-failover` is attached twice",
        "runbooks[0].steps[1].ticks[0]: checklist `pre-failover` has no item `nope` (items: \
         primary-unrecoverable, notify-ic, activate-dr-team, document-state)",
        "runbooks[0].steps[1].ticks[1]: checklist `post-failover` is not attached to this runbook",
        "runbooks[0].steps[1].ticks[2]: `pre-failover` is not `<checklist>:<item>`",
        "runbooks[0].steps[2].requires[0]: checklist `during-failover` is not attached",
    ] {
        assert!(p.contains(want), "missing {want:?} in:\n{p}");
    }
}
