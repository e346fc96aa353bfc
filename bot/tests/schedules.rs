//! DR testing schedules with a controlled clock, on SQLite and a real PostgreSQL: a due time
//! fires once (also from a new App on the same store, and from two Apps ticking concurrently),
//! a process that was down fires only the most recent missed due time, the overdue alert is
//! raised once per period, a scheduled run needing approval expires like any other, `/dr status`
//! shows each schedule, and so does the status page's DR evidence (`/status.json`, `/status`,
//! through the real router); and the config errors of `[[schedules]]`.

mod common;

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use common::*;
use drbot::{
    app::App,
    approvals, dispatch,
    reply::{Reply, UserError},
    schedule::{self, Tick},
    store::{Store, runs::RunState},
};
use sqlx::Row;
use tokio_util::sync::CancellationToken;

const SLACK: &str = r#"
[slack]
signing_secret = "s"
bot_token = "xoxb-t"
api_base_url = "http://127.0.0.1:9/api"
incident_channel = "CINC"

[[runbooks]]
name = "verify-backup"
command = "verify-backup"
request_roles = ["oncall"]
approve_roles = ["sre-lead"]

[[runbooks.steps]]
name = "verify"
type = "exec"
with = { command = "true" }
destructive = false
idempotent = true
"#;

fn text(env: &Env, expires: &str, schedules: &str) -> String {
    format!(
        "{}{SLACK}{schedules}",
        config_text(&env.url, 1, expires, 0, "m")
    )
}

fn daily(name: &str, command: &str, overdue: &str) -> String {
    format!(
        "\n[[schedules]]\nname = \"{name}\"\nrunbook_command = \"{command}\"\n\
         cron = \"0 3 * * *\"\ntimezone = \"UTC\"\noverdue_after = \"{overdue}\"\n"
    )
}

async fn sched_env(b: Backend, expires: &str, schedules: &str) -> Env {
    let mut env = env(b).await;
    env.app = reconfigure(&env, &text(&env, expires, schedules));
    env
}

fn at(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, min, 0).unwrap()
}

async fn fires(store: &Store) -> Vec<(String, i64, Option<i64>)> {
    sqlx::query("SELECT schedule, due_at, run_id FROM schedule_fires ORDER BY due_at")
        .fetch_all(store.pool())
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.get("schedule"), r.get("due_at"), r.get("run_id")))
        .collect()
}

async fn scheduler_runs(store: &Store) -> i64 {
    sqlx::query("SELECT COUNT(*) AS n FROM runs WHERE requested_by = 'scheduler'")
        .fetch_one(store.pool())
        .await
        .unwrap()
        .get("n")
}

fn fired(t: &Tick) -> usize {
    t.fired.len()
}

async fn due_runs_fire_once(b: Backend) {
    let env = sched_env(b, "30m", &daily("verify", "/dr verify-backup latest", "8d")).await;
    let t = at(2030, 1, 7, 3, 0);
    let first = schedule::tick(&env.app, t + chrono::Duration::seconds(30))
        .await
        .unwrap();
    assert_eq!(fired(&first), 1, "{first:?}");
    let run = first.fired[0].1.expect("a run was requested");
    let view = approvals::view(&env.app.store, run).await.unwrap().unwrap();
    assert_eq!(view.run.requested_by, "scheduler");
    assert_eq!(view.run.runbook, "verify-backup");
    assert_eq!(view.run.state, RunState::Queued, "read-only: no approval");
    // The same due time, checked again and from a restarted process: nothing new.
    for m in [1, 5, 59] {
        let again = schedule::tick(&env.app, t + chrono::Duration::minutes(m))
            .await
            .unwrap();
        assert_eq!(fired(&again), 0, "{again:?}");
    }
    let restarted = reconfigure(
        &env,
        &text(
            &env,
            "30m",
            &daily("verify", "/dr verify-backup latest", "8d"),
        ),
    );
    assert_eq!(
        fired(
            &schedule::tick(&restarted, t + chrono::Duration::hours(2))
                .await
                .unwrap()
        ),
        0
    );
    // Before the next due time nothing; at it, once.
    let before = at(2030, 1, 8, 2, 59);
    assert_eq!(fired(&schedule::tick(&restarted, before).await.unwrap()), 0);
    let next = at(2030, 1, 8, 3, 0);
    assert_eq!(fired(&schedule::tick(&restarted, next).await.unwrap()), 1);
    assert_eq!(fired(&schedule::tick(&env.app, next).await.unwrap()), 0);
    let rows = fires(&env.app.store).await;
    assert_eq!(
        rows.iter().map(|r| r.1).collect::<Vec<_>>(),
        vec![t.timestamp_millis(), next.timestamp_millis()]
    );
    assert_eq!(scheduler_runs(&env.app.store).await, 2);
}

async fn missed_fires_fire_once(b: Backend) {
    let env = sched_env(b, "30m", &daily("verify", "/dr verify-backup latest", "8d")).await;
    assert_eq!(
        fired(
            &schedule::tick(&env.app, at(2030, 1, 7, 3, 1))
                .await
                .unwrap()
        ),
        1
    );
    // Down from the 7th to the 11th at 10:00: four due times passed; only the latest fires.
    let back = at(2030, 1, 11, 10, 0);
    let t = schedule::tick(&env.app, back).await.unwrap();
    assert_eq!(fired(&t), 1, "{t:?}");
    assert_eq!(fired(&schedule::tick(&env.app, back).await.unwrap()), 0);
    let rows = fires(&env.app.store).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[1].1, at(2030, 1, 11, 3, 0).timestamp_millis());
    assert_eq!(scheduler_runs(&env.app.store).await, 2);
}

/// With `catch_up_within`, a due time found later than that (drbot was down) is recorded as
/// missed and audited, not requested at an hour nobody planned for; one found in time still
/// fires.
async fn a_due_time_found_too_late_is_missed(b: Backend) {
    let sched = format!(
        "{}catch_up_within = \"6h\"\n",
        daily("verify", "/dr verify-backup latest", "8d")
    );
    let env = sched_env(b, "30m", &sched).await;
    // Back at 10:00, seven hours after the 03:00 due time.
    let back = at(2030, 1, 11, 10, 0);
    let t = schedule::tick(&env.app, back).await.unwrap();
    assert_eq!(t.fired, vec![("verify".to_string(), None)], "{t:?}");
    assert_eq!(fired(&schedule::tick(&env.app, back).await.unwrap()), 0);
    assert_eq!(scheduler_runs(&env.app.store).await, 0);
    let status = schedule::status(&env.app, back).await.unwrap();
    let error = status[0].last_error.clone().unwrap();
    assert!(
        error.starts_with("missed: came due at 2030-01-11T03:00:00Z while drbot was not running"),
        "{error}"
    );
    assert!(
        drbot::slack::text::schedule_last(&status[0]).starts_with("last due time missed"),
        "{error}"
    );
    let audited = env.app.store.audit_rows(None, 100).await.unwrap();
    assert!(
        audited.iter().any(|r| r.action == "schedule.missed"),
        "{audited:?}"
    );
    // The next day, two hours late: in time, requested.
    let t = schedule::tick(&env.app, at(2030, 1, 12, 5, 0))
        .await
        .unwrap();
    assert!(matches!(t.fired.as_slice(), [(_, Some(_))]), "{t:?}");
    assert_eq!(scheduler_runs(&env.app.store).await, 1);
}

/// A process whose clock runs a year ahead fires next year's due time; the others still fire
/// today's, and next year's is not fired again when it comes.
async fn a_clock_far_ahead_does_not_stop_the_schedule(b: Backend) {
    let env = sched_env(b, "30m", &daily("verify", "/dr verify-backup latest", "8d")).await;
    let ahead = at(2031, 1, 7, 3, 1);
    assert_eq!(fired(&schedule::tick(&env.app, ahead).await.unwrap()), 1);
    let today = at(2030, 1, 7, 3, 1);
    assert_eq!(fired(&schedule::tick(&env.app, today).await.unwrap()), 1);
    assert_eq!(fired(&schedule::tick(&env.app, today).await.unwrap()), 0);
    assert_eq!(fired(&schedule::tick(&env.app, ahead).await.unwrap()), 0);
    assert_eq!(scheduler_runs(&env.app.store).await, 2);
}

async fn concurrent_processes_fire_once(b: Backend) {
    let env = sched_env(b, "30m", &daily("verify", "/dr verify-backup latest", "8d")).await;
    // A second process: its own pool on the same database.
    let other = App::new(
        settings(&text(
            &env,
            "30m",
            &daily("verify", "/dr verify-backup latest", "8d"),
        )),
        Store::connect(&env.url, 8).await.unwrap(),
    );
    for day in 7..10 {
        let t = at(2030, 1, day, 3, 0) + chrono::Duration::seconds(1);
        let mut tasks = Vec::new();
        for i in 0..8 {
            let app = if i % 2 == 0 {
                env.app.clone()
            } else {
                other.clone()
            };
            tasks.push(tokio::spawn(async move {
                schedule::tick(&app, t).await.unwrap()
            }));
        }
        let mut total = 0;
        for task in tasks {
            total += fired(&task.await.unwrap());
        }
        assert_eq!(total, 1, "day {day}: exactly one process fires");
    }
    assert_eq!(fires(&env.app.store).await.len(), 3);
    assert_eq!(scheduler_runs(&env.app.store).await, 3);
}

async fn overdue_keys(store: &Store) -> Vec<(String, String)> {
    sqlx::query("SELECT key, payload FROM outbox WHERE key LIKE 'schedule:%' ORDER BY id")
        .fetch_all(store.pool())
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.get("key"), r.get("payload")))
        .collect()
}

async fn overdue_alert_once_per_period(b: Backend) {
    // Due once a year (Jan 1st): the ticks below, hours apart, never reach another due time.
    let sched = "\n[[schedules]]\nname = \"verify\"\nrunbook_command = \"/dr verify-backup latest\"\n\
                 cron = \"0 3 1 1 *\"\ntimezone = \"Europe/Berlin\"\noverdue_after = \"1h\"\n";
    let env = sched_env(b, "30m", sched).await;
    let now = Utc::now();
    let hour = chrono::Duration::hours(1);
    let first = schedule::tick(&env.app, now).await.unwrap();
    assert_eq!(fired(&first), 1);
    assert_eq!(first.overdue_alerts, 0, "just fired: not overdue yet");
    // The run never ran (no driver): an hour later the schedule is overdue.
    let t = schedule::tick(&env.app, now + hour + chrono::Duration::minutes(1))
        .await
        .unwrap();
    assert_eq!((fired(&t), t.overdue_alerts), (0, 1), "{t:?}");
    let t = schedule::tick(&env.app, now + hour + chrono::Duration::minutes(2))
        .await
        .unwrap();
    assert_eq!(t.overdue_alerts, 0, "once per period");
    let alerts = overdue_keys(&env.app.store).await;
    assert_eq!(alerts.len(), 1);
    assert!(
        alerts[0].1.contains("verify") && alerts[0].1.contains("never"),
        "{alerts:?}"
    );
    // Now the run passes: the clock restarts from its success.
    let stop = CancellationToken::new();
    let driver = tokio::spawn(drbot::driver::run(
        env.app.clone(),
        "sched-test".into(),
        stop.clone(),
    ));
    let run = first.fired[0].1.unwrap();
    wait_state(&env.app, run, &[RunState::Succeeded], 30).await;
    stop.cancel();
    driver.await.unwrap();
    let done = Utc::now();
    let t = schedule::tick(&env.app, done + chrono::Duration::minutes(30))
        .await
        .unwrap();
    assert_eq!(t.overdue_alerts, 0, "passed within the hour");
    let t = schedule::tick(&env.app, done + hour + chrono::Duration::minutes(1))
        .await
        .unwrap();
    assert_eq!(t.overdue_alerts, 1);
    assert_eq!(
        schedule::tick(&env.app, done + hour + chrono::Duration::minutes(3))
            .await
            .unwrap()
            .overdue_alerts,
        0
    );
    let t = schedule::tick(&env.app, done + hour * 2 + chrono::Duration::minutes(1))
        .await
        .unwrap();
    assert_eq!(t.overdue_alerts, 1, "the next period alerts again");
    let alerts = overdue_keys(&env.app.store).await;
    assert_eq!(alerts.len(), 3, "{alerts:?}");
    assert!(!alerts[1].1.contains("never"), "{alerts:?}");
    // `/dr status` shows the last result and the next due date (Jan 1st, 03:00 Berlin).
    let r = dispatch::handle(&env.app, &cli(&env.app, "bob"), "/dr status").await;
    let Reply::Status(s) = &r else {
        panic!("{r:?}")
    };
    assert_eq!(s.schedules.len(), 1);
    let st = &s.schedules[0];
    assert_eq!(st.last_run, Some((run, "succeeded".to_string())));
    assert!(!st.overdue);
    let next = st.next_due.as_deref().unwrap();
    assert!(next.ends_with("-01-01T02:00:00Z"), "{next}");
    let shown = drbot::cli::text::reply(&r, None);
    assert!(
        shown.contains("verify") && shown.contains("succeeded") && shown.contains(next),
        "{shown}"
    );
}

/// Only a run with the schedule's own arguments proves it: a passing check of another backup
/// leaves `verify-backup latest` overdue; a typed `verify-backup latest` counts like a
/// scheduled one.
async fn only_a_run_with_the_schedules_arguments_proves_it(b: Backend) {
    let sched = "\n[[schedules]]\nname = \"verify\"\nrunbook_command = \"/dr verify-backup latest\"\n\
                 cron = \"0 3 1 1 *\"\ntimezone = \"UTC\"\noverdue_after = \"1h\"\n";
    let env = sched_env(b, "30m", sched).await;
    let now = Utc::now();
    let minutes = chrono::Duration::minutes;
    // First due 50 minutes ago; its run is cancelled, so only the typed runs below can pass.
    let first = schedule::tick(&env.app, now - minutes(50)).await.unwrap();
    let scheduled = first.fired[0].1.unwrap();
    let r = dispatch::handle(
        &env.app,
        &cli(&env.app, "alice"),
        &format!("/dr cancel {scheduled}"),
    )
    .await;
    assert_eq!(
        approvals::view(&env.app.store, scheduled)
            .await
            .unwrap()
            .unwrap()
            .run
            .state,
        RunState::Cancelled,
        "{r:?}"
    );
    let drive = |typed: &'static str| {
        let app = env.app.clone();
        async move {
            let Reply::Requested(req) = dispatch::handle(&app, &cli(&app, "bob"), typed).await
            else {
                panic!("{typed} was not requested")
            };
            let stop = CancellationToken::new();
            let driver = tokio::spawn(drbot::driver::run(app.clone(), "t".into(), stop.clone()));
            wait_state(&app, req.run.id, &[RunState::Succeeded], 30).await;
            stop.cancel();
            driver.await.unwrap();
        }
    };
    drive("/dr verify-backup nightly-2026-11-01").await;
    let t = schedule::tick(&env.app, now + minutes(15)).await.unwrap();
    assert_eq!(
        t.overdue_alerts, 1,
        "an hour since the first due time, and no check of the latest backup passed"
    );
    drive("/dr verify-backup latest").await;
    let st = schedule::status(&env.app, Utc::now() + minutes(16))
        .await
        .unwrap();
    assert!(!st[0].overdue, "{st:?}");
    let t = schedule::tick(&env.app, Utc::now() + minutes(59))
        .await
        .unwrap();
    assert_eq!(t.overdue_alerts, 0, "a typed run with its arguments counts");
}

async fn scheduled_run_needing_approval_expires(b: Backend) {
    let env = sched_env(
        b,
        "1s",
        &daily("failover-test", "/dr failover us-west-2", "40d"),
    )
    .await;
    let t = schedule::tick(&env.app, at(2030, 2, 1, 3, 0))
        .await
        .unwrap();
    let run = t.fired[0].1.expect("requested");
    let view = approvals::view(&env.app.store, run).await.unwrap().unwrap();
    assert_eq!(view.run.state, RunState::AwaitingApproval);
    let req = view.request.expect("an approval request");
    assert_eq!(
        (req.requester.as_str(), req.state.as_str()),
        ("scheduler", "pending")
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(approvals::expire_due(&env.app).await.unwrap() >= 1);
    let r = dispatch::handle(
        &env.app,
        &cli(&env.app, "alice"),
        &format!("/dr approve {run}"),
    )
    .await;
    assert!(
        matches!(
            r,
            Reply::Refused(UserError::NothingToApprove { .. } | UserError::Expired { .. })
        ),
        "{r:?}"
    );
    let view = approvals::view(&env.app.store, run).await.unwrap().unwrap();
    assert_eq!(view.run.state, RunState::Expired);
    // The next due time requests again (the expired run no longer holds the target).
    let t = schedule::tick(&env.app, at(2030, 2, 2, 3, 0))
        .await
        .unwrap();
    assert!(t.fired[0].1.is_some(), "{t:?}");
}

/// Ends run `id` in `state` at `finished` (Unix ms), as the driver would have.
async fn finish(store: &Store, id: i64, state: &str, finished: i64) {
    sqlx::query(
        "UPDATE runs SET state = $1, started_at = $2, finished_at = $3, updated_at = $3 \
         WHERE id = $4",
    )
    .bind(state.to_string())
    .bind(finished - 30_000)
    .bind(finished)
    .bind(id)
    .execute(store.pool())
    .await
    .unwrap();
}

/// The text of every element below `node`, whitespace-collapsed.
fn text_of(node: roxmltree::Node) -> String {
    node.descendants()
        .filter(|n| n.is_text())
        .filter_map(|n| n.text())
        .collect::<Vec<_>>()
        .join(" ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The status page's DR evidence, served by the real router: `/status.json` and `/status`
/// show each schedule with its runbook, last result and when, next due date and overdue flag.
/// A passing weekly verification, a failed failover test that is overdue, a schedule that
/// never came due.
async fn status_page_shows_schedules(b: Backend) {
    let scheds = format!(
        "{}{}{}",
        daily("weekly-verify", "/dr verify-backup latest", "8d"),
        daily("failover-test", "/dr failover us-west-2", "1h"),
        daily("spare-verify", "/dr verify-backup latest", "8d"),
    );
    let env = sched_env(b, "30m", &scheds).await;
    let now = Utc::now();
    let fired_at = now - chrono::Duration::hours(2);
    let all = schedule::schedules(&env.app);
    let mut runs = Vec::new();
    for s in &all[..2] {
        let fired = schedule::fire_due(&env.app, s, fired_at).await.unwrap();
        runs.push(fired.flatten().expect("a run was requested"));
    }
    let passed_at = (now - chrono::Duration::minutes(1)).timestamp_millis() / 1000 * 1000;
    let failed_at = (now - chrono::Duration::minutes(90)).timestamp_millis() / 1000 * 1000;
    finish(&env.app.store, runs[0], "succeeded", passed_at).await;
    finish(&env.app.store, runs[1], "failed", failed_at).await;
    let iso = |ms: i64| {
        Utc.timestamp_millis_opt(ms)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    // Daily at 03:00 UTC: the first 03:00 after now.
    let mut next = now.date_naive().and_hms_opt(3, 0, 0).unwrap().and_utc();
    if next <= now {
        next += chrono::Duration::days(1);
    }
    let next = next.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);

    let addr = serve(&env.app).await;
    let (code, ctype, body) = http_get(addr, "/status.json").await;
    assert_eq!((code, ctype.as_str()), (200, "application/json"), "{body}");
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        doc["evidence"]["schedules"],
        serde_json::json!([
            { "name": "weekly-verify", "runbook": "verify-backup", "last_result": "passed",
              "last_at": iso(passed_at), "next_due": next, "overdue": false },
            { "name": "failover-test", "runbook": "failover", "last_result": "failed",
              "last_at": iso(failed_at), "next_due": next, "overdue": true },
            { "name": "spare-verify", "runbook": "verify-backup", "last_result": "none",
              "last_at": null, "next_due": next, "overdue": false },
        ]),
        "{doc:#}"
    );

    let (code, ctype, page) = http_get(addr, "/status").await;
    assert_eq!((code, ctype.as_str()), (200, "text/html; charset=utf-8"));
    let html = roxmltree::Document::parse_with_options(
        &page,
        roxmltree::ParsingOptions {
            allow_dtd: true,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("/status is not well-formed: {e}\n{page}"));
    let table = html
        .descendants()
        .find(|n| n.has_tag_name("table") && n.attribute("class") == Some("schedules"))
        .unwrap_or_else(|| panic!("no schedules table in\n{page}"));
    let headers: Vec<String> = table
        .descendants()
        .filter(|n| n.has_tag_name("th") && n.attribute("scope") == Some("col"))
        .map(text_of)
        .collect();
    assert_eq!(
        headers,
        ["Schedule", "Runbook", "Last result", "Next due", "Overdue?"]
    );
    let rows: Vec<String> = table
        .descendants()
        .filter(|n| n.has_tag_name("tr") && n.parent().is_some_and(|p| p.has_tag_name("tbody")))
        .map(text_of)
        .collect();
    let human = |ms: i64| {
        Utc.timestamp_millis_opt(ms)
            .unwrap()
            .format("%Y-%m-%d %H:%M UTC")
            .to_string()
    };
    let next_human = DateTime::parse_from_rfc3339(&next)
        .unwrap()
        .format("%Y-%m-%d %H:%M UTC")
        .to_string();
    assert_eq!(
        rows,
        [
            format!(
                "weekly-verify verify-backup Passed {} {next_human} On time",
                human(passed_at)
            ),
            format!(
                "failover-test failover Failed {} {next_human} Overdue",
                human(failed_at)
            ),
            format!("spare-verify verify-backup Not run yet {next_human} On time"),
        ]
    );
    // Each time is machine-readable too, and the page links to the drill history.
    let times: Vec<&str> = table
        .descendants()
        .filter(|n| n.has_tag_name("time"))
        .filter_map(|n| n.attribute("datetime"))
        .collect();
    assert!(times.contains(&iso(passed_at).as_str()), "{times:?}");
    assert!(times.contains(&next.as_str()), "{times:?}");
    assert!(
        html.descendants()
            .any(|n| n.has_tag_name("a") && n.attribute("href") == Some("status/history")),
        "no link to the drill history"
    );
}

both_backends!(
    a_clock_far_ahead_does_not_stop_the_schedule,
    due_runs_fire_once,
    missed_fires_fire_once,
    a_due_time_found_too_late_is_missed,
    concurrent_processes_fire_once,
    overdue_alert_once_per_period,
    only_a_run_with_the_schedules_arguments_proves_it,
    scheduled_run_needing_approval_expires,
    status_page_shows_schedules,
);

/// One schedule the store refuses (here a trigger fails its fire) is reported and retried;
/// the schedules after it still fire in the same tick.
#[tokio::test]
async fn a_failing_schedule_does_not_stop_the_others() {
    let schedules = format!(
        "{}{}",
        daily("a-broken", "/dr verify-backup latest", "8d"),
        daily("b-fine", "/dr verify-backup latest", "8d")
    );
    let env = sched_env(Backend::Sqlite, "30m", &schedules).await;
    sqlx::query(
        "CREATE TRIGGER refuse_a BEFORE INSERT ON schedule_fires WHEN NEW.schedule = 'a-broken' \
         BEGIN SELECT RAISE(ABORT, 'refused for the test'); END",
    )
    .execute(env.app.store.pool())
    .await
    .unwrap();
    let t = at(2030, 1, 7, 3, 0);
    let tick = schedule::tick(&env.app, t).await.unwrap();
    assert_eq!(
        tick.fired.iter().map(|f| f.0.as_str()).collect::<Vec<_>>(),
        ["b-fine"],
        "{tick:?}"
    );
    assert_eq!(tick.failed.len(), 1, "{tick:?}");
    assert_eq!(tick.failed[0].0, "a-broken");
    assert!(
        tick.failed[0].1.contains("refused for the test"),
        "{tick:?}"
    );
    // Once the store takes it, the broken one fires on the next tick, and only it.
    sqlx::query("DROP TRIGGER refuse_a")
        .execute(env.app.store.pool())
        .await
        .unwrap();
    let tick = schedule::tick(&env.app, t + chrono::Duration::minutes(1))
        .await
        .unwrap();
    assert_eq!(
        tick.fired.iter().map(|f| f.0.as_str()).collect::<Vec<_>>(),
        ["a-broken"],
        "{tick:?}"
    );
    assert!(tick.failed.is_empty());
}

fn problems(extra: &str) -> String {
    let base = config_text("sqlite://x.db", 1, "30m", 0, "m");
    let parsed = drbot::config::parse_str(
        &format!("{base}{SLACK}{extra}"),
        std::path::Path::new("."),
        &|_| None,
    )
    .unwrap();
    match drbot::config::Settings::from_parsed(parsed, "t.toml".into()) {
        Ok(_) => String::new(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn config_errors() {
    assert_eq!(problems(&daily("ok", "/dr verify-backup latest", "8d")), "");
    let bad = "\n[[schedules]]\nname = \"a\"\nruncmd = \"/dr verify-backup latest\"\ncron = \"0 3 * * MON\"\noverdue_after = \"8d\"\n";
    let p = problems(bad);
    assert!(p.contains("schedules[0]") && p.contains("runcmd"), "{p}");
    for (field, value, expect) in [
        (
            "cron",
            "0 3 * * FUNDAY",
            "schedules[0].cron: `0 3 * * FUNDAY` is not a cron expression",
        ),
        ("cron", "61 * * * *", "schedules[0].cron"),
        (
            "cron",
            "0 3 30 2 *",
            "schedules[0].cron: `0 3 30 2 *` never comes due",
        ),
        (
            "cron",
            "0 3 31 4 *",
            "schedules[0].cron: `0 3 31 4 *` never comes due",
        ),
        (
            "timezone",
            "Mars/Olympus",
            "schedules[0].timezone: `Mars/Olympus` is not an IANA time zone",
        ),
        (
            "overdue_after",
            "eight days",
            "schedules[0].overdue_after: `eight days` is not a duration",
        ),
        (
            "overdue_after",
            "0s",
            "schedules[0].overdue_after: must be more than zero",
        ),
        (
            "runbook_command",
            "/dr verify-bakup latest",
            "schedules[0].runbook_command:",
        ),
        (
            "runbook_command",
            "/dr status",
            "`/dr status` requests no runbook",
        ),
        (
            "runbook_command",
            "/dr drill",
            "no runbook is bound to `drill`",
        ),
        (
            "runbook_command",
            "/dr failover mars-1",
            "schedules[0].runbook_command:",
        ),
        (
            "name",
            "weekly verify",
            "schedules[0].name: `weekly verify` must be",
        ),
    ] {
        let mut s =
            "\n[[schedules]]\nname = \"n\"\nrunbook_command = \"/dr verify-backup latest\"\n\
             cron = \"0 3 * * MON\"\ntimezone = \"UTC\"\noverdue_after = \"8d\"\n"
                .to_string();
        let line = s
            .lines()
            .find(|l| l.starts_with(&format!("{field} =")))
            .unwrap()
            .to_string();
        s = s.replace(&line, &format!("{field} = \"{value}\""));
        let p = problems(&s);
        assert!(p.contains(expect), "{field} = {value}: {p}");
    }
    for (value, expect) in [
        (
            "soon",
            "schedules[0].catch_up_within: `soon` is not a duration",
        ),
        ("0s", "schedules[0].catch_up_within: must be more than zero"),
    ] {
        let s = format!(
            "{}catch_up_within = \"{value}\"\n",
            daily("n", "/dr verify-backup latest", "8d")
        );
        let p = problems(&s);
        assert!(p.contains(expect), "{value}: {p}");
    }
    // The README's suggested schedules.
    for cron in ["0 3 * * MON", "0 10 * * TUE#1", "0 10 1 1,4,7,10 *"] {
        let s = daily("n", "/dr verify-backup latest", "8d").replace("0 3 * * *", cron);
        assert_eq!(problems(&s), "", "{cron}");
    }
    let twice = format!(
        "{}{}",
        daily("same", "/dr verify-backup latest", "8d"),
        daily("same", "/dr verify-backup latest", "8d")
    );
    assert!(problems(&twice).contains("schedules[1].name: `same` is listed twice"));
}
