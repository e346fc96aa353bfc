//! The driver's guarantees when things go wrong around a step: a panic while driving a run
//! pauses it for a person (never `running` forever behind a lease renewed by nobody's
//! drive), and a process that cannot renew its lease stops its step before the lease lapses,
//! so another process can never run the same step alongside it.

mod common;

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use common::*;
use drbot::{
    app::App,
    approvals, dispatch,
    reply::Reply,
    store::{Store, runs::RunState},
};
use recovery::{
    registry::{StepKind, StepTraits},
    step::{Step, StepContext, StepError, StepOutput},
};
use sqlx::{Connection, Row};
use tokio_util::sync::CancellationToken;

/// Stands in for `exec`: every step it builds panics when run.
struct PanickingExec;

struct Panics;

impl StepKind for PanickingExec {
    fn name(&self) -> &'static str {
        "exec"
    }
    fn traits(&self) -> StepTraits {
        StepTraits {
            destructive: true,
            idempotent: false,
            overridable: true,
        }
    }
    fn validate(&self, _: &serde_json::Value) -> Result<(), String> {
        Ok(())
    }
    fn build(&self, _: &serde_json::Value) -> Result<Box<dyn Step>, String> {
        Ok(Box::new(Panics))
    }
}

#[async_trait]
impl Step for Panics {
    async fn run(&self, _: &StepContext) -> Result<StepOutput, StepError> {
        panic!("injected panic in a step")
    }
}

async fn request_failover(app: &App) -> i64 {
    match dispatch::handle(app, &cli(app, "bob"), "/dr failover us-west-2").await {
        Reply::Requested(v) => v.run.id,
        other => panic!("{other:?}"),
    }
}

/// A driver (lease owner `test-a`) over `app`, and the token that stops it.
fn spawn_driver(app: &App) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let stop = CancellationToken::new();
    let driver = tokio::spawn(drbot::driver::run(
        app.clone(),
        "test-a".into(),
        stop.clone(),
    ));
    (stop, driver)
}

async fn lease_owner(app: &App, id: i64) -> Option<String> {
    sqlx::query("SELECT lease_owner FROM runs WHERE id = $1")
        .bind(id)
        .fetch_one(app.store.pool())
        .await
        .unwrap()
        .get("lease_owner")
}

/// A step that panics leaves its run needing attention at that step, with its lease
/// released; the driver itself goes on and does not drive the run again.
async fn a_panic_while_driving_pauses_the_run_for_a_person(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let url = store_url(b, dir.path());
    let marker = dir.path().join("marker").display().to_string();
    let mut settings = settings(&config_text(&url, 1, "30m", 0, &marker));
    settings.registry.register(Arc::new(PanickingExec));
    let app = App::new(settings, Store::connect(&url, 16).await.unwrap());
    let id = request_failover(&app).await;
    let (stop, driver) = spawn_driver(&app);
    // The first step (the read-only preflight) panics.
    assert_eq!(
        wait_state(&app, id, &[RunState::NeedsAttention], 30).await,
        RunState::NeedsAttention
    );
    let run = app.store.run(id).await.unwrap().unwrap();
    let detail = run.detail.unwrap_or_default();
    assert!(
        detail.contains("failed internally while driving step 1"),
        "{detail}"
    );
    assert!(
        !detail.contains("injected panic"),
        "the panic stays in the log"
    );
    assert_eq!(lease_owner(&app, id).await, None, "lease released");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        app.store.run(id).await.unwrap().unwrap().state,
        RunState::NeedsAttention
    );
    stop.cancel();
    driver.await.expect("the driver survives a run's panic");
}

both_backends!(a_panic_while_driving_pauses_the_run_for_a_person);

/// While the store refuses this process's lease renewals (here another connection holds
/// SQLite's write lock for twice the lease), the process stops its step before the lease
/// can lapse: the step never reaches its end, and the run waits for a person instead of
/// going on as if nothing happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_process_that_cannot_renew_its_lease_stops_its_step() {
    let dir = tempfile::tempdir().unwrap();
    let url = store_url(Backend::Sqlite, dir.path());
    let marker = dir.path().join("marker");
    let text = config_text(&url, 1, "30m", 0, &marker.display().to_string()).replace(
        "echo promote {region} >> {region.marker}",
        "echo start >> {region.marker}; sleep 8; echo end >> {region.marker}",
    );
    assert!(text.contains("sleep 8"), "{text}");
    let app = App::new(settings(&text), Store::connect(&url, 16).await.unwrap());
    let id = request_failover(&app).await;
    let (stop, driver) = spawn_driver(&app);
    assert_eq!(
        wait_state(&app, id, &[RunState::AwaitingApproval], 20).await,
        RunState::AwaitingApproval
    );
    approvals::approve(&app, &cli(&app, "carol"), id, None)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while lines(&marker) != ["start"] {
        assert!(
            std::time::Instant::now() < deadline,
            "the step never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = std::time::Instant::now();
    // Another process takes the store's write lock for 6 s (the lease is 3 s).
    let mut other = sqlx::sqlite::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    let state = wait_state(
        &app,
        id,
        &[
            RunState::NeedsAttention,
            RunState::AwaitingGate,
            RunState::Failed,
        ],
        30,
    )
    .await;
    assert_eq!(state, RunState::NeedsAttention);
    // Past the time the step would have ended had it not been stopped.
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(started.elapsed())).await;
    assert_eq!(
        lines(&marker),
        ["start"],
        "the step was stopped, not finished"
    );
    stop.cancel();
    driver.await.unwrap();
}
