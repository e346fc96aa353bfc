//! Two-person approval rules, on SQLite and on a real PostgreSQL: self-approval, roles,
//! one human with two accounts, expiry, deny, plan change, gates, target lock, and 100
//! concurrent approvals yielding exactly one execution.

mod common;

use std::{sync::Arc, time::Duration};

use common::*;
use drbot::{
    approvals::{self, Fail},
    dispatch,
    events::Event,
    reply::{Reply, UserError},
    store::runs::RunState,
};
use tokio_util::sync::CancellationToken;

fn refused(r: Reply) -> UserError {
    match r {
        Reply::Refused(e) => e,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn request_failover(env: &Env, who: &str) -> i64 {
    match dispatch::handle(&env.app, &cli(&env.app, who), "/dr failover us-west-2").await {
        Reply::Requested(v) => {
            assert_eq!(v.run.state, RunState::AwaitingApproval);
            v.run.id
        }
        other => panic!("request failed: {other:?}"),
    }
}

async fn self_approval_is_refused(b: Backend) {
    let env = env(b).await;
    let id = request_failover(&env, "alice").await;
    let r = dispatch::handle(
        &env.app,
        &cli(&env.app, "alice"),
        &format!("/dr approve {id}"),
    )
    .await;
    assert_eq!(refused(r), UserError::SelfApproval { run: id });
    // Same human through another account is still the requester.
    let r = approvals::approve(&env.app, &discord(&env.app, "1001"), id, None).await;
    assert!(matches!(r, Err(Fail::User(UserError::SelfApproval { .. }))));
    // The database refuses it too, whatever Rust does.
    let req = env.app.store.latest_request(id).await.unwrap().unwrap();
    let direct = sqlx::query(
        "INSERT INTO approvals (request_id, person, account, platform, role, requester, fingerprint, created_at) \
         VALUES ($1, 'alice', 'x', 'cli', 'sre-lead', 'alice', $2, 0)",
    )
    .bind(req.id)
    .bind(req.fingerprint.clone())
    .execute(env.app.store.pool())
    .await;
    assert!(
        direct.is_err(),
        "the CHECK constraint must refuse self-approval"
    );
    let forged = sqlx::query(
        "INSERT INTO approvals (request_id, person, account, platform, role, requester, fingerprint, created_at) \
         VALUES ($1, 'carol', 'x', 'cli', 'sre-lead', 'alice', 'not-the-fingerprint', 0)",
    )
    .bind(req.id)
    .execute(env.app.store.pool())
    .await;
    assert!(
        forged.is_err(),
        "an approval of another fingerprint must be refused by the FK"
    );
    let run = env.app.store.run(id).await.unwrap().unwrap();
    assert_eq!(run.state, RunState::AwaitingApproval);
}

async fn roles_are_checked(b: Backend) {
    let env = env(b).await;
    let id = request_failover(&env, "alice").await;
    // bob is oncall; failover approvals need sre-lead.
    let r = dispatch::handle(
        &env.app,
        &cli(&env.app, "bob"),
        &format!("/dr approve {id}"),
    )
    .await;
    assert!(matches!(refused(r), UserError::NotAllowedToApprove { .. }));
    // dave (viewer) may not request at all; bob may not request pitr.
    let r = dispatch::handle(
        &env.app,
        &cli(&env.app, "dave"),
        "/dr failover us-west-2 --dry-run",
    )
    .await;
    assert!(matches!(refused(r), UserError::NotAllowedToRequest { .. }));
    let r = dispatch::handle(
        &env.app,
        &cli(&env.app, "bob"),
        "/dr pitr \"2026-01-27 14:30:00\"",
    )
    .await;
    assert!(matches!(refused(r), UserError::NotAllowedToRequest { .. }));
    // Unknown accounts: read-only commands only, and they cannot approve.
    let stranger = slack(&env.app, "UNOBODY");
    assert!(matches!(
        dispatch::handle(&env.app, &stranger, "/dr status").await,
        Reply::Status(_)
    ));
    assert!(matches!(
        dispatch::handle(&env.app, &stranger, &format!("/dr run {id}")).await,
        Reply::Run(_)
    ));
    let r = dispatch::handle(&env.app, &stranger, &format!("/dr approve {id}")).await;
    assert_eq!(refused(r), UserError::UnknownAccount);
    let r = approvals::approve(&env.app, &stranger, id, None).await;
    assert!(matches!(r, Err(Fail::User(UserError::UnknownAccount))));
    // Every refusal is audited with its reason.
    let rows = env.app.store.audit_rows(None, 100).await.unwrap();
    let refusals = rows
        .iter()
        .filter(|r| r.detail.contains("\"refused\""))
        .count();
    assert_eq!(refusals, 4);
    assert_eq!(
        env.app.store.run(id).await.unwrap().unwrap().state,
        RunState::AwaitingApproval
    );
}

async fn one_human_with_two_accounts_counts_once(b: Backend) {
    let env = env_with(b, 2, "30m", 0).await;
    let id = request_failover(&env, "bob").await;
    // alice clicks ten times at once, from both of her accounts: she counts once.
    let mut tasks = Vec::new();
    for i in 0..10 {
        let app = env.app.clone();
        tasks.push(tokio::spawn(async move {
            let actor = if i % 2 == 0 {
                slack(&app, "UALICE")
            } else {
                discord(&app, "1001")
            };
            approvals::approve(&app, &actor, id, None).await
        }));
    }
    let (mut ok, mut dup) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok((_, false)) => ok += 1,
            Err(Fail::User(UserError::AlreadyApproved { .. })) => dup += 1,
            other => panic!("unexpected: {other:?}"),
        }
    }
    assert_eq!((ok, dup), (1, 9));
    let again = approvals::approve(&env.app, &discord(&env.app, "1001"), id, None).await;
    assert!(matches!(
        again,
        Err(Fail::User(UserError::AlreadyApproved { .. }))
    ));
    let view = approvals::view(&env.app.store, id).await.unwrap().unwrap();
    assert_eq!(view.approvals.len(), 1);
    assert_eq!(view.run.state, RunState::AwaitingApproval);
    let (view, quorum) = approvals::approve(&env.app, &discord(&env.app, "1003"), id, None)
        .await
        .unwrap();
    assert!(quorum);
    assert_eq!(view.run.state, RunState::Queued);
    let people: Vec<_> = view.approvals.iter().map(|a| a.person.as_str()).collect();
    assert_eq!(people, ["alice", "carol"]);
}

async fn requests_expire(b: Backend) {
    let env = env_with(b, 1, "300ms", 0).await;
    let id = request_failover(&env, "bob").await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = dispatch::handle(
        &env.app,
        &cli(&env.app, "carol"),
        &format!("/dr approve {id}"),
    )
    .await;
    assert_eq!(refused(r), UserError::Expired { run: id });
    let view = approvals::view(&env.app.store, id).await.unwrap().unwrap();
    assert_eq!(view.run.state, RunState::Expired);
    assert_eq!(view.request.unwrap().state, "expired");
    assert!(view.approvals.is_empty());
    // The sweeper expires the next one without any click.
    let id2 = request_failover(&env, "bob").await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(approvals::expire_due(&env.app).await.unwrap(), 1);
    assert_eq!(
        env.app.store.run(id2).await.unwrap().unwrap().state,
        RunState::Expired
    );
    let rows = env.app.store.audit_rows(Some(id2), 10).await.unwrap();
    assert!(rows.iter().any(|r| r.action == "request.expired"));
    // A run that needs attention while its run request is still pending (a preflight step
    // was interrupted), that request past due and not yet swept: asking to retry expires the
    // run with it, and no decision request is opened on the expired run.
    let id3 = request_failover(&env, "bob").await;
    sqlx::query("UPDATE runs SET state = 'needs_attention' WHERE id = $1")
        .bind(id3)
        .execute(env.app.store.pool())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = dispatch::handle(&env.app, &cli(&env.app, "bob"), &format!("/dr retry {id3}")).await;
    assert_eq!(refused(r), UserError::Expired { run: id3 });
    let view = approvals::view(&env.app.store, id3).await.unwrap().unwrap();
    assert_eq!(view.run.state, RunState::Expired);
    assert_eq!(view.request.unwrap().state, "expired");
    let r = dispatch::handle(
        &env.app,
        &cli(&env.app, "carol"),
        &format!("/dr approve {id3}"),
    )
    .await;
    assert!(
        matches!(refused(r), UserError::NothingToApprove { .. }),
        "no request is open on the expired run"
    );
    // Even a decision request left open on a run that no longer needs attention (written
    // here directly) is refused, and the run stays ended.
    let mut tx = env.app.store.write().await.unwrap();
    let far = 4_000_000_000_000;
    drbot::store::runs::insert_request(
        &mut tx,
        id3,
        drbot::store::runs::RequestAction::Retry,
        None,
        &view.run.fingerprint,
        "bob",
        "cli:unknown:bob",
        1,
        far,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let r = dispatch::handle(
        &env.app,
        &cli(&env.app, "carol"),
        &format!("/dr approve {id3}"),
    )
    .await;
    assert_eq!(
        refused(r),
        UserError::NothingToApprove {
            run: id3,
            state: "expired".into()
        }
    );
    assert_eq!(
        env.app.store.run(id3).await.unwrap().unwrap().state,
        RunState::Expired
    );
}

async fn deny_ends_the_request(b: Backend) {
    let env = env(b).await;
    let id = request_failover(&env, "bob").await;
    // bob (oncall) may not deny a failover; carol may.
    let r = dispatch::handle(&env.app, &cli(&env.app, "dave"), &format!("/dr deny {id}")).await;
    assert!(matches!(refused(r), UserError::NotAllowedToApprove { .. }));
    let r = dispatch::handle(
        &env.app,
        &cli(&env.app, "carol"),
        &format!("/dr deny {id} not during the sale"),
    )
    .await;
    let Reply::Denied(v) = r else { panic!("{r:?}") };
    assert_eq!(v.run.state, RunState::Denied);
    assert_eq!(
        v.request.as_ref().unwrap().reason.as_deref(),
        Some("not during the sale")
    );
    let r = dispatch::handle(
        &env.app,
        &cli(&env.app, "alice"),
        &format!("/dr approve {id}"),
    )
    .await;
    assert!(matches!(refused(r), UserError::NothingToApprove { .. }));
    // The target is free again.
    request_failover(&env, "bob").await;
}

async fn plan_change_voids_approvals(b: Backend) {
    let env = env_with(b, 2, "30m", 0).await;
    let id = request_failover(&env, "bob").await;
    approvals::approve(&env.app, &cli(&env.app, "alice"), id, None)
        .await
        .unwrap();
    // The runbook is edited (a step command changes): a new config revision and plan.
    let marker = env.dir.path().join("marker");
    let text = config_text(&env.url, 2, "30m", 0, &marker.display().to_string())
        .replace("echo switch", "echo switch-v2");
    let edited = reconfigure(&env, &text);
    let r = approvals::approve(&edited, &cli(&edited, "carol"), id, None).await;
    assert!(
        matches!(r, Err(Fail::User(UserError::PlanChanged { .. }))),
        "{r:?}"
    );
    let view = approvals::view(&env.app.store, id).await.unwrap().unwrap();
    assert_eq!(view.run.state, RunState::Void);
    assert_eq!(view.request.unwrap().state, "void");
    // Requesting again under the new plan works, with a new fingerprint.
    let v = match dispatch::handle(&edited, &cli(&edited, "bob"), "/dr failover us-west-2").await {
        Reply::Requested(v) => v,
        other => panic!("{other:?}"),
    };
    assert_ne!(v.run.fingerprint, view.run.fingerprint);
}

async fn one_active_destructive_run_per_target(b: Backend) {
    let env = env(b).await;
    let id = request_failover(&env, "bob").await;
    let r = dispatch::handle(&env.app, &cli(&env.app, "alice"), "/dr failover us-west-2").await;
    assert_eq!(
        refused(r),
        UserError::TargetBusy {
            target: "us-west-2".into(),
            run: id
        }
    );
    // A dry run is read-only: allowed, needs no approval.
    let r = dispatch::handle(
        &env.app,
        &cli(&env.app, "alice"),
        "/dr failover us-west-2 --dry-run",
    )
    .await;
    let Reply::Requested(v) = r else {
        panic!("{r:?}")
    };
    assert_eq!(v.run.state, RunState::Queued);
    // The requester cancels; the target is free.
    let r = dispatch::handle(&env.app, &cli(&env.app, "bob"), &format!("/dr cancel {id}")).await;
    assert!(
        matches!(
            r,
            Reply::Cancelled {
                immediate: true,
                ..
            }
        ),
        "{r:?}"
    );
    request_failover(&env, "alice").await;
}

async fn approved_run_executes_with_gate_and_preflight(b: Backend) {
    let env = env(b).await;
    let marker = env.dir.path().join("marker");
    let mut events = env.app.events.subscribe();
    let id = request_failover(&env, "bob").await;
    let stop = CancellationToken::new();
    let driver = tokio::spawn(drbot::driver::run(
        env.app.clone(),
        "test-a".into(),
        stop.clone(),
    ));
    // Preflight (read-only) runs before approval; nothing destructive does.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while lines(&marker.with_extension("pre")).is_empty() {
        assert!(std::time::Instant::now() < deadline, "preflight never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        lines(&marker).is_empty(),
        "a destructive step ran before approval"
    );
    approvals::approve(&env.app, &cli(&env.app, "carol"), id, None)
        .await
        .unwrap();
    assert_eq!(
        wait_state(&env.app, id, &[RunState::AwaitingGate], 20).await,
        RunState::AwaitingGate
    );
    assert_eq!(lines(&marker), ["promote us-west-2"]);
    // The gate needs a fresh approval by someone other than the requester.
    let r = approvals::approve(&env.app, &cli(&env.app, "bob"), id, None).await;
    assert!(matches!(r, Err(Fail::User(UserError::SelfApproval { .. }))));
    approvals::approve(&env.app, &cli(&env.app, "alice"), id, None)
        .await
        .unwrap();
    assert_eq!(
        wait_state(&env.app, id, &[RunState::Succeeded], 20).await,
        RunState::Succeeded
    );
    assert_eq!(lines(&marker), ["promote us-west-2", "switch"]);
    assert_eq!(lines(&marker.with_extension("pre")).len(), 1);
    stop.cancel();
    driver.await.unwrap();
    // The event stream saw the whole story, in order.
    let mut seen = Vec::new();
    while let Ok(e) = events.try_recv() {
        seen.push(match e {
            Event::RunRequested { needs_approval, .. } => format!("requested {needs_approval}"),
            Event::Approved { quorum, .. } => format!("approved {quorum}"),
            Event::DecisionRequested { action, .. } => format!("decision {action}"),
            Event::StepStarted { idx, .. } => format!("start {idx}"),
            Event::StepFinished { idx, state, .. } => format!("end {idx} {state}"),
            Event::RunStateChanged { state, .. } => format!("state {state}"),
            Event::StepProgress { .. } | Event::Denied { .. } | Event::Expired { .. } => continue,
        });
    }
    assert_eq!(
        seen,
        [
            "requested true",
            "start 0",
            "end 0 succeeded",
            "approved true",
            "state queued",
            "start 1",
            "end 1 succeeded",
            "decision gate",
            "approved true",
            "state queued",
            "start 2",
            "end 2 succeeded",
            "state succeeded",
        ]
    );
    let report = env.app.store.audit_verify().await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

async fn hundred_concurrent_approvals_execute_once(b: Backend) {
    let env = env_with(b, 1, "30m", 100).await;
    let marker = env.dir.path().join("marker");
    let id = request_failover(&env, "bob").await;
    // Buttons name the request they belong to, as here: the gate request that follows the
    // run's approval must not be approved by a click on the run's card.
    let req = env.app.store.latest_request(id).await.unwrap().unwrap().id;
    let app = Arc::new(env.app.clone());
    let stop = CancellationToken::new();
    // Two drivers compete for the run as well.
    let d1 = tokio::spawn(drbot::driver::run(
        env.app.clone(),
        "driver-1".into(),
        stop.clone(),
    ));
    let d2 = tokio::spawn(drbot::driver::run(
        env.app.clone(),
        "driver-2".into(),
        stop.clone(),
    ));
    let mut tasks = Vec::new();
    for i in 0..100 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let who = format!("lead{i:03}");
            approvals::approve(&app, &cli(&app, &who), id, Some(req)).await
        }));
    }
    let mut quorums = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok((_, true)) => quorums += 1,
            Ok((_, false)) => panic!("with one approval required every success is a quorum"),
            // Late clicks: the request was approved (nothing open), or the gate request
            // that followed replaced it.
            Err(Fail::User(
                UserError::NothingToApprove { .. } | UserError::StaleRequest { .. },
            )) => {}
            Err(e) => panic!("unexpected failure: {e:?}"),
        }
    }
    assert_eq!(quorums, 1, "exactly one approval must reach quorum");
    let approved = env.app.store.approvals(req).await.unwrap();
    assert_eq!(approved.len(), 1);
    wait_state(&env.app, id, &[RunState::AwaitingGate], 30).await;
    let gate_approver = approved[0].person.clone();
    let other = if gate_approver == "lead000" {
        "lead001"
    } else {
        "lead000"
    };
    approvals::approve(&env.app, &cli(&env.app, other), id, None)
        .await
        .unwrap();
    wait_state(&env.app, id, &[RunState::Succeeded], 30).await;
    stop.cancel();
    d1.await.unwrap();
    d2.await.unwrap();
    assert_eq!(
        lines(&marker),
        ["promote us-west-2", "switch"],
        "each step exactly once"
    );
}

/// A recovery target that has not happened yet is refused before anything is requested: the
/// runbook would stop production first and only then find nothing to recover to.
async fn future_recovery_targets_are_refused(b: Backend) {
    let env = env(b).await;
    let alice = cli(&env.app, "alice");
    let later = (chrono::Utc::now() + chrono::Duration::hours(2))
        .format("%Y-%m-%d %H:%M:%S")
        .to_string();
    for cmd in [
        format!("/dr pitr \"{later}\""),
        format!("/dr recover-corruption \"{later}\""),
    ] {
        match refused(dispatch::handle(&env.app, &alice, &cmd).await) {
            UserError::TargetInFuture { target, .. } => {
                assert_eq!(target, format!("{later} UTC"), "{cmd}")
            }
            other => panic!("{cmd}: {other:?}"),
        }
    }
    assert!(env.app.store.runs(20, false).await.unwrap().is_empty());
    // A past target is requested as before.
    match dispatch::handle(&env.app, &alice, "/dr pitr \"2026-01-27 14:30:00\"").await {
        Reply::Requested(v) => assert_eq!(v.run.state, RunState::AwaitingApproval),
        other => panic!("{other:?}"),
    }
}

/// A failover requested by bob and approved by carol, then paused (needs attention) as after
/// an interrupted step.
async fn paused_failover(env: &Env) -> i64 {
    let id = request_failover(env, "bob").await;
    approvals::approve(&env.app, &cli(&env.app, "carol"), id, None)
        .await
        .unwrap();
    sqlx::query("UPDATE runs SET state = 'needs_attention' WHERE id = $1")
        .bind(id)
        .execute(env.app.store.pool())
        .await
        .unwrap();
    id
}

/// A run that needs attention under a runbook since removed from the config (renamed here)
/// can still be ended: abort is asked and approved by two people with roles of the runbooks
/// configured now. Nothing else (retry, skip) can be done to it.
async fn a_run_whose_runbook_left_the_config_can_still_be_aborted(b: Backend) {
    let env = env(b).await;
    let id = paused_failover(&env).await;
    let marker = env.dir.path().join("marker").display().to_string();
    let text = config_text(&env.url, 1, "30m", 0, &marker).replace(
        "name = \"failover\"\ncommand = \"failover\"",
        "name = \"failover-v2\"\ncommand = \"failover\"",
    );
    assert!(text.contains("failover-v2"));
    let app = reconfigure(&env, &text);
    let r = dispatch::handle(&app, &cli(&app, "bob"), &format!("/dr retry {id}")).await;
    let e = refused(r);
    assert!(
        matches!(&e, UserError::RunbookRemoved { runbook, .. } if runbook == "failover"),
        "retry needs the runbook: {e:?}"
    );
    assert!(
        e.to_string().contains("can only be aborted"),
        "{}",
        e.to_string()
    );
    let abort = |who: &'static str| {
        let app = app.clone();
        async move { dispatch::handle(&app, &cli(&app, who), &format!("/dr abort {id}")).await }
    };
    let r = abort("bob").await;
    assert!(matches!(r, Reply::DecisionRequested(_)), "{r:?}");
    assert!(matches!(
        refused(abort("bob").await),
        UserError::SelfApproval { .. }
    ));
    assert!(
        matches!(
            refused(abort("dave").await),
            UserError::NotAllowedToApprove { .. }
        ),
        "a viewer still cannot"
    );
    let r = abort("carol").await;
    assert!(matches!(r, Reply::Approved { quorum: true, .. }), "{r:?}");
    assert_eq!(
        app.store.run(id).await.unwrap().unwrap().state,
        RunState::Aborted
    );
}

/// Typed, a decision is approved by naming it: a bare `/dr approve` is refused (it could
/// approve a retry that replaced the skip its approver was reading), and `/dr skip` by a
/// second person approves only an open skip, never the retry that replaced it.
async fn a_typed_decision_approval_names_the_decision(b: Backend) {
    let env = env(b).await;
    let id = paused_failover(&env).await;
    let say = |who: &'static str, verb: &'static str| {
        let app = env.app.clone();
        async move { dispatch::handle(&app, &cli(&app, who), &format!("/dr {verb} {id}")).await }
    };
    assert!(matches!(
        say("alice", "skip").await,
        Reply::DecisionRequested(_)
    ));
    // carol denies the skip and asks for a retry instead.
    assert!(matches!(say("carol", "deny").await, Reply::Denied(_)));
    assert!(matches!(
        say("carol", "retry").await,
        Reply::DecisionRequested(_)
    ));
    // bob, still reading the skip card, types a bare approve: refused, naming the retry.
    let e = refused(say("bob", "approve").await);
    assert_eq!(
        e,
        UserError::NameTheDecision {
            run: id,
            action: "retry".into()
        }
    );
    // `/dr skip` asks for a skip, which cannot open beside the retry: nothing approved.
    assert!(matches!(
        refused(say("bob", "skip").await),
        UserError::RequestOpen { .. }
    ));
    assert_eq!(
        env.app.store.run(id).await.unwrap().unwrap().state,
        RunState::NeedsAttention
    );
    // Naming the retry approves it.
    let r = say("alice", "retry").await;
    assert!(matches!(r, Reply::Approved { quorum: true, .. }), "{r:?}");
    assert_eq!(
        env.app.store.run(id).await.unwrap().unwrap().state,
        RunState::Queued
    );
}

/// A run paused between steps (drbot failed after step 1 finished and before step 2 started:
/// no step is running or held) is skipped at the step it would resume at, never at its first.
async fn a_skip_between_steps_skips_the_next_step(b: Backend) {
    let env = env(b).await;
    let id = paused_failover(&env).await;
    sqlx::query("UPDATE run_steps SET state = 'succeeded' WHERE run_id = $1 AND idx = 0")
        .bind(id)
        .execute(env.app.store.pool())
        .await
        .unwrap();
    for who in ["alice", "carol"] {
        let r = dispatch::handle(&env.app, &cli(&env.app, who), &format!("/dr skip {id}")).await;
        assert!(
            matches!(r, Reply::DecisionRequested(_) | Reply::Approved { .. }),
            "{r:?}"
        );
    }
    let steps = env.app.store.steps(id).await.unwrap();
    let states: Vec<_> = steps.iter().map(|s| s.state.as_str()).take(2).collect();
    assert_eq!(states, ["succeeded", "skipped"]);
    assert_eq!(
        env.app.store.run(id).await.unwrap().unwrap().state,
        RunState::Queued
    );
}

/// An expired retry/skip/abort says the run is still paused and how to ask again (not
/// "request the runbook again", which its held target refuses); a button of a request that a
/// newer one replaced says so and names the newer one.
async fn an_expired_or_replaced_decision_says_what_to_do(b: Backend) {
    let env = env(b).await;
    let id = paused_failover(&env).await;
    let say = |who: &'static str, text: String| {
        let app = env.app.clone();
        async move { dispatch::handle(&app, &cli(&app, who), &text).await }
    };
    let Reply::DecisionRequested(first) = say("alice", format!("/dr skip {id}")).await else {
        panic!("skip refused")
    };
    let old = first.request.unwrap().id;
    sqlx::query("UPDATE approval_requests SET expires_at = 0 WHERE id = $1")
        .bind(old)
        .execute(env.app.store.pool())
        .await
        .unwrap();
    let e = refused(say("carol", format!("/dr approve {id}")).await);
    assert_eq!(
        e,
        UserError::DecisionExpired {
            run: id,
            action: "skip".into()
        }
    );
    assert!(
        e.to_string().contains("still paused")
            && e.to_string().contains(&format!("/dr retry {id}"))
    );
    assert_eq!(
        env.app.store.run(id).await.unwrap().unwrap().state,
        RunState::NeedsAttention
    );
    // A new request; the old card's button is refused, naming what replaced it.
    assert!(matches!(
        say("alice", format!("/dr retry {id}")).await,
        Reply::DecisionRequested(_)
    ));
    let r = approvals::approve(&env.app, &cli(&env.app, "carol"), id, Some(old)).await;
    let Err(approvals::Fail::User(e)) = r else {
        panic!("{r:?}")
    };
    assert_eq!(
        e,
        UserError::StaleRequest {
            run: id,
            action: "retry".into()
        }
    );
}

both_backends!(
    an_expired_or_replaced_decision_says_what_to_do,
    a_skip_between_steps_skips_the_next_step,
    a_typed_decision_approval_names_the_decision,
    a_run_whose_runbook_left_the_config_can_still_be_aborted,
    future_recovery_targets_are_refused,
    self_approval_is_refused,
    roles_are_checked,
    one_human_with_two_accounts_counts_once,
    requests_expire,
    deny_ends_the_request,
    plan_change_voids_approvals,
    one_active_destructive_run_per_target,
    approved_run_executes_with_gate_and_preflight,
    hundred_concurrent_approvals_execute_once,
);

/// An approval that took effect is reported as such even when the audit row of the typed
/// command text cannot be written afterwards (the approval's own audit row is in its
/// transaction).
#[tokio::test]
async fn a_change_that_took_effect_is_not_reported_as_failed() {
    let env = env(Backend::Sqlite).await;
    let id = request_failover(&env, "bob").await;
    sqlx::query(
        "CREATE TRIGGER no_command_rows BEFORE INSERT ON audit_log \
         WHEN NEW.action = 'command' BEGIN SELECT RAISE(ABORT, 'refused'); END",
    )
    .execute(env.app.store.pool())
    .await
    .unwrap();
    let r = dispatch::handle(
        &env.app,
        &cli(&env.app, "carol"),
        &format!("/dr approve {id}"),
    )
    .await;
    assert!(matches!(r, Reply::Approved { quorum: true, .. }), "{r:?}");
    let approvals: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM audit_log WHERE action = 'approve' AND run_id = $1",
    )
    .bind(id)
    .fetch_one(env.app.store.pool())
    .await
    .unwrap();
    assert_eq!(approvals, 1, "the approval itself is audited");
}
