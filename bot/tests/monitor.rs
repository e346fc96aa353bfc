//! Detection: the health monitor against a real loopback HTTP health endpoint, on SQLite and a
//! real PostgreSQL. Down only after `failure_threshold` failures in a row, one alert per
//! outage even when a second process observes it too, the primary's alert carries a
//! "Start failover" button, a secondary's does not, recovery after `recovery_threshold`
//! passes; the button only *requests* a failover (the clicker is the requester and cannot
//! approve it); the alert reaches the fake Slack with its button; garbage button values are
//! ignored.

mod common;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU16, Ordering},
    },
    time::Duration,
};

use common::*;
use drbot::{
    approvals::{self, Fail},
    dispatch,
    monitor::{self, Counters, Transition},
    reply::{Reply, UserError},
    store::now_ms,
};
use drbot_e2e::fake_slack::FakeSlack;
use serde_json::Value;
use sqlx::Row;

/// A health endpoint whose answer the test sets.
async fn health_server() -> (String, Arc<AtomicU16>) {
    let status = Arc::new(AtomicU16::new(200));
    let s = status.clone();
    let app = axum::Router::new().route(
        "/health",
        axum::routing::get(move || {
            let s = s.clone();
            async move { axum::http::StatusCode::from_u16(s.load(Ordering::SeqCst)).unwrap() }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/health"), status)
}

async fn monitor_env(b: Backend, health: &str, slack_url: &str) -> Env {
    let mut env = env(b).await;
    let text = config_text(&env.url, 1, "30m", 0, "m")
        .replace(
            "[regions.us-east-1]\nrole = \"primary\"",
            &format!("[regions.us-east-1]\nrole = \"primary\"\nhealth_url = \"{health}\""),
        )
        .replace(
            "[regions.us-west-2]\nrole = \"secondary\"",
            &format!("[regions.us-west-2]\nrole = \"secondary\"\nhealth_url = \"{health}\""),
        )
        .replace(
            "[store]",
            &format!(
                "[monitor]\ninterval = \"50ms\"\ntimeout = \"1s\"\nfailure_threshold = 3\nrecovery_threshold = 2\ncooldown = \"0s\"\n\n\
                 [slack]\nsigning_secret = \"s\"\nbot_token = \"xoxb-t\"\napi_base_url = \"{slack_url}\"\n\
                 incident_channel = \"CINC\"\n\n[store]"
            ),
        );
    env.app = reconfigure(&env, &text);
    env
}

async fn alerts(env: &Env) -> Vec<(String, Value)> {
    sqlx::query("SELECT key, payload FROM outbox WHERE key LIKE 'monitor:%' ORDER BY id")
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

async fn check(env: &Env, url: &str, region: &str, c: &mut Counters) -> Transition {
    let cfg = env.app.settings.config.monitor.clone().unwrap();
    let client = reqwest::Client::new();
    let result = monitor::probe(&client, url, 200, Duration::from_secs(10)).await;
    monitor::observe(&env.app, &cfg, region, result, c, now_ms())
        .await
        .unwrap()
}

async fn detects_once_and_only_proposes(b: Backend) {
    let (url, status) = health_server().await;
    let env = monitor_env(b, &url, "http://127.0.0.1:9/api").await;
    let mut mine = Counters::default();
    assert_eq!(
        check(&env, &url, "us-east-1", &mut mine).await,
        Transition::None
    );
    status.store(503, Ordering::SeqCst);
    assert_eq!(
        check(&env, &url, "us-east-1", &mut mine).await,
        Transition::None
    );
    assert_eq!(
        check(&env, &url, "us-east-1", &mut mine).await,
        Transition::None
    );
    assert!(
        alerts(&env).await.is_empty(),
        "alerted before the threshold"
    );
    assert_eq!(
        check(&env, &url, "us-east-1", &mut mine).await,
        Transition::Down { episode: 1 }
    );
    assert_eq!(
        check(&env, &url, "us-east-1", &mut mine).await,
        Transition::None
    );
    // A second process sees the same outage: no second alert.
    let mut theirs = Counters::default();
    for _ in 0..4 {
        assert_eq!(
            check(&env, &url, "us-east-1", &mut theirs).await,
            Transition::None
        );
    }
    let a = alerts(&env).await;
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(a[0].0, "monitor:slack:us-east-1:down:1");
    assert!(
        a[0].1["text"].as_str().unwrap().contains("HTTP 503"),
        "{a:?}"
    );
    assert_eq!(a[0].1["action"]["value"], "propose:failover:us-west-2");
    assert_eq!(a[0].1["action"]["label"], "Start failover to us-west-2");
    // Nothing was requested, let alone run.
    assert!(env.app.store.runs(10, true).await.unwrap().is_empty());

    // The secondary going down is reported without a button.
    let mut sec = Counters::default();
    for _ in 0..3 {
        check(&env, &url, "us-west-2", &mut sec).await;
    }
    let a = alerts(&env).await;
    assert_eq!(a.len(), 2);
    assert!(a[1].1.get("action").is_none(), "{a:?}");

    // Recovery after two passes; a new outage is a new episode.
    status.store(200, Ordering::SeqCst);
    assert_eq!(
        check(&env, &url, "us-east-1", &mut mine).await,
        Transition::None
    );
    assert_eq!(
        check(&env, &url, "us-east-1", &mut mine).await,
        Transition::Up { episode: 1 }
    );
    status.store(500, Ordering::SeqCst);
    for _ in 0..2 {
        check(&env, &url, "us-east-1", &mut mine).await;
    }
    assert_eq!(
        check(&env, &url, "us-east-1", &mut mine).await,
        Transition::Down { episode: 2 }
    );

    // The button requests a failover as the clicker; approval rules still hold.
    let bob = slack(&env.app, "UBOB");
    let r = dispatch::propose_failover(&env.app, &bob, "us-west-2").await;
    let Reply::Requested(v) = r else {
        panic!("{r:?}")
    };
    assert_eq!(v.run.requested_by, "bob");
    let alice = slack(&env.app, "UALICE");
    let r = approvals::approve(&env.app, &bob, v.run.id, None).await;
    assert!(
        matches!(r, Err(Fail::User(UserError::SelfApproval { .. }))),
        "{r:?}"
    );
    approvals::approve(&env.app, &alice, v.run.id, None)
        .await
        .unwrap();
    // An unknown account's click is refused like its typed command.
    let stranger = slack(&env.app, "UNOBODY");
    let r = dispatch::propose_failover(&env.app, &stranger, "us-west-2").await;
    assert!(matches!(r, Reply::Refused(_)), "{r:?}");
}

/// Two processes that see a region differently (one is cut off from it, the other is not)
/// never flip it back and forth: each flip would be a new outage and a new failover proposal.
async fn processes_that_disagree_do_not_flap(b: Backend) {
    let (url, _) = health_server().await;
    let env = monitor_env(b, &url, "http://127.0.0.1:9/api").await;
    let cfg = env.app.settings.config.monitor.clone().unwrap();
    let (mut a, mut b) = (Counters::default(), Counters::default());
    let mut t = 1_000_000;
    let mut step = |c: &mut Counters, ok: bool| {
        t += 1_000;
        let result = if ok {
            Ok(())
        } else {
            Err("HTTP 503".to_string())
        };
        let app = env.app.clone();
        let (cfg, now) = (cfg.clone(), t);
        let mut counters = *c;
        async move {
            let out = monitor::observe(&app, &cfg, "us-east-1", result, &mut counters, now)
                .await
                .unwrap();
            (out, counters)
        }
    };
    // Both fail: one outage, declared once.
    let mut downs = Vec::new();
    for _ in 0..cfg.failure_threshold {
        let (o, c) = step(&mut a, false).await;
        a = c;
        downs.push(o);
        let (o, c) = step(&mut b, false).await;
        b = c;
        downs.push(o);
    }
    assert_eq!(
        downs.iter().filter(|o| **o != Transition::None).count(),
        1,
        "{downs:?}"
    );
    // A sees the region again; B still cannot reach it.
    let mut last = Transition::None;
    for _ in 0..cfg.recovery_threshold {
        let (o, c) = step(&mut a, true).await;
        a = c;
        last = o;
    }
    assert_eq!(last, Transition::Up { episode: 1 });
    for _ in 0..5 {
        let (o, c) = step(&mut b, false).await;
        b = c;
        assert_eq!(
            o,
            Transition::None,
            "B's old failures re-declared the outage"
        );
    }
    let keys: Vec<String> = alerts(&env).await.into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        keys,
        [
            "monitor:slack:us-east-1:down:1",
            "monitor:slack:us-east-1:up:1"
        ]
    );
    // A new outage both see is declared, as a new episode.
    let (o, c) = step(&mut b, true).await;
    b = c;
    assert_eq!(o, Transition::None);
    let mut seen = Vec::new();
    for _ in 0..cfg.failure_threshold {
        let (o, c) = step(&mut b, false).await;
        b = c;
        seen.push(o);
    }
    assert_eq!(
        seen.last(),
        Some(&Transition::Down { episode: 2 }),
        "{seen:?}"
    );
}

/// A region down again within `cooldown` of recovering continues its outage: a flapping
/// region posts one proposal, not one per flap; after the cooldown a new outage is new.
async fn a_flapping_region_is_one_outage(b: Backend) {
    let (url, _) = health_server().await;
    let env = monitor_env(b, &url, "http://127.0.0.1:9/api").await;
    let mut cfg = env.app.settings.config.monitor.clone().unwrap();
    cfg.cooldown = "10m".into();
    let mut c = Counters::default();
    let mut t = 1_000_000;
    let mut seen = Vec::new();
    for _ in 0..3 {
        for ok in [false, false, false, true, true] {
            t += 30_000;
            let result = if ok {
                Ok(())
            } else {
                Err("HTTP 503".to_string())
            };
            let o = monitor::observe(&env.app, &cfg, "us-east-1", result, &mut c, t)
                .await
                .unwrap();
            if o != Transition::None {
                seen.push(o);
            }
        }
    }
    assert_eq!(
        seen,
        [
            Transition::Down { episode: 1 },
            Transition::Up { episode: 1 },
            Transition::Up { episode: 1 },
            Transition::Up { episode: 1 },
        ]
    );
    let keys: Vec<String> = alerts(&env).await.into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        keys,
        [
            "monitor:slack:us-east-1:down:1",
            "monitor:slack:us-east-1:up:1"
        ]
    );
    // Down again after the cooldown: a new outage, alerted.
    t += 11 * 60_000;
    let mut last = Transition::None;
    for _ in 0..3 {
        t += 30_000;
        last = monitor::observe(&env.app, &cfg, "us-east-1", Err("x".into()), &mut c, t)
            .await
            .unwrap();
    }
    assert_eq!(last, Transition::Down { episode: 2 });
}

both_backends!(
    detects_once_and_only_proposes,
    processes_that_disagree_do_not_flap,
    a_flapping_region_is_one_outage
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alert_reaches_slack_with_its_button() {
    use notifier::outbox::{Deliverer, Delivery, Outcome};
    let fake = FakeSlack::start("xoxb-t");
    let (url, status) = health_server().await;
    let env = monitor_env(Backend::Sqlite, &url, &fake.base_url()).await;
    status.store(503, Ordering::SeqCst);
    let mut c = Counters::default();
    for _ in 0..3 {
        check(&env, &url, "us-east-1", &mut c).await;
    }
    let (key, payload) = alerts(&env).await.remove(0);
    let deliverer = drbot::notify::chat::ChatDeliverer::new(Arc::new(
        drbot::slack::sync::SlackBroadcast(env.app.clone()),
    ));
    let d = Delivery {
        id: 1,
        key,
        channel: "slack".into(),
        payload,
        ordering_key: None,
        attempt: 1,
    };
    assert!(matches!(
        deliverer.deliver(&d).await,
        Outcome::Delivered { .. }
    ));
    let msgs = fake.messages("CINC");
    assert_eq!(msgs.len(), 1);
    let blocks = msgs[0].blocks.to_string();
    assert!(
        blocks.contains("\"value\":\"propose:failover:us-west-2\""),
        "{blocks}"
    );
    assert!(blocks.contains("Start failover to us-west-2"), "{blocks}");
}

#[test]
fn button_values_are_checked() {
    assert_eq!(
        monitor::parse_proposal("propose:failover:us-west-2"),
        Some("us-west-2")
    );
    for bad in [
        "",
        "propose:failover:",
        "propose:failover:us west",
        "propose:failover:a;b",
        "approve:1:2",
        "propose:drill:x",
        "propose:failover:é",
    ] {
        assert_eq!(monitor::parse_proposal(bad), None, "{bad}");
    }
    assert_eq!(
        monitor::parse_proposal(&monitor::proposal_value("eu-1")),
        Some("eu-1")
    );
}

#[test]
fn monitor_config_is_checked() {
    let text = config_text("sqlite://x.db", 1, "30m", 0, "m").replace(
        "[store]",
        "[monitor]\ninterval = \"soon\"\nfailure_threshold = 0\ncooldown = \"later\"\n\n[store]",
    );
    let parsed = drbot::config::parse_str(&text, std::path::Path::new("."), &|_| None).unwrap();
    let err = drbot::config::Settings::from_parsed(parsed, "t.toml".into())
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("monitor.interval"), "{err}");
    assert!(err.contains("monitor.failure_threshold"), "{err}");
    assert!(
        err.contains("monitor.cooldown: `later` is not a duration"),
        "{err}"
    );
    assert!(err.contains("no region has a `health_url`"), "{err}");
}
