//! Customer-update reminders with a controlled clock, on SQLite and a real PostgreSQL: nothing
//! before the cadence passes, one reminder per platform per silent period (also when checked
//! twice, as two `serve` processes would), none after an update until the cadence passes again,
//! none once resolved; and the cadence text customers see.

mod common;

use std::time::Duration;

use common::*;
use drbot::{dispatch, incidents::cadence_text, reminders, reply::Reply, store::now_ms};
use serde_json::Value;
use sqlx::Row;

const HOUR: i64 = 3_600_000;

async fn reminder_env(b: Backend) -> Env {
    let mut env = env(b).await;
    let text = config_text(&env.url, 1, "30m", 0, "m").replace(
        "[store]",
        "[incidents]\nupdate_cadence = \"1h\"\n\n\
         [slack]\nsigning_secret = \"s\"\nbot_token = \"xoxb-t\"\napi_base_url = \"http://127.0.0.1:9/api\"\n\
         incident_channel = \"CINC\"\n\n[store]",
    );
    env.app = reconfigure(&env, &text);
    env
}

async fn reminders_sent(env: &Env) -> Vec<(String, Value)> {
    sqlx::query("SELECT key, payload FROM outbox WHERE key LIKE 'reminder:%' ORDER BY id")
        .fetch_all(env.app.store.pool())
        .await
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                r.get("key"),
                serde_json::from_str(&r.get::<String, _>("payload")).unwrap(),
            )
        })
        .collect()
}

async fn say(env: &Env, text: &str) {
    let r = dispatch::handle(&env.app, &cli(&env.app, "bob"), text).await;
    assert!(matches!(r, Reply::Incident(_)), "{text}: {r:?}");
}

async fn once_per_silent_hour(b: Backend) {
    let env = reminder_env(b).await;
    let t0 = now_ms();
    assert_eq!(
        reminders::check(&env.app, t0 + 2 * HOUR).await.unwrap(),
        0,
        "no incident"
    );
    say(&env, "/dr incident open Region down").await;
    assert_eq!(reminders::check(&env.app, t0 + HOUR / 2).await.unwrap(), 0);
    assert_eq!(
        reminders::check(&env.app, t0 + HOUR + 60_000)
            .await
            .unwrap(),
        1
    );
    // Checked again in the same period (another serve process): nothing new.
    assert_eq!(
        reminders::check(&env.app, t0 + HOUR + 120_000)
            .await
            .unwrap(),
        0
    );
    let sent = reminders_sent(&env).await;
    assert_eq!(sent.len(), 1);
    let text = sent[0].1["text"].as_str().unwrap();
    assert!(
        text.contains("Region down") && text.contains("1h"),
        "{text}"
    );
    // Still silent an hour later: a second reminder.
    assert_eq!(
        reminders::check(&env.app, t0 + 2 * HOUR + 60_000)
            .await
            .unwrap(),
        1
    );
    // An update restarts the clock.
    say(&env, "/dr incident update Still working on it").await;
    let t1 = now_ms();
    assert_eq!(reminders::check(&env.app, t1 + HOUR / 2).await.unwrap(), 0);
    assert_eq!(
        reminders::check(&env.app, t1 + HOUR + 1000).await.unwrap(),
        1
    );
    // Resolved: no more reminders.
    say(&env, "/dr incident resolve").await;
    assert_eq!(reminders::check(&env.app, t1 + 5 * HOUR).await.unwrap(), 0);
    assert_eq!(reminders_sent(&env).await.len(), 3);
}

both_backends!(once_per_silent_hour);

#[test]
fn cadence_texts() {
    assert_eq!(cadence_text(Duration::from_secs(3600)), "every hour");
    assert_eq!(cadence_text(Duration::from_secs(1800)), "every 30 minutes");
    assert_eq!(cadence_text(Duration::from_secs(7200)), "every 2 hours");
    assert_eq!(cadence_text(Duration::from_secs(5)), "every minute");
}

#[test]
fn a_bad_cadence_is_a_config_error() {
    let text = config_text("sqlite://x.db", 1, "30m", 0, "m").replace(
        "[store]",
        "[incidents]\nupdate_cadence = \"often\"\n\n[store]",
    );
    let parsed = drbot::config::parse_str(&text, std::path::Path::new("."), &|_| None).unwrap();
    let err = drbot::config::Settings::from_parsed(parsed, "t.toml".into())
        .err()
        .expect("refused");
    assert!(
        err.to_string().contains("incidents.update_cadence"),
        "{err}"
    );
}
