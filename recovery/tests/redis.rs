//! `redis_check`, `redis_promote` and `redis_replicate` against real `redis-server` processes (a
//! password-protected master and its replica), built through the step registry as a runbook
//! would.

use std::{sync::Arc, time::Duration};

use recovery::{
    registry::Registry,
    resources::{RedisDef, Resources},
    secret::Secret,
    step::{ProgressSink, StepContext, StepError, StepOutput},
    testkit::redis::{RedisOptions, RedisServer},
};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const PASSWORD: &str = "Pw-9f2c-TopSecret";

fn master() -> RedisServer {
    RedisServer::start_with(RedisOptions {
        password: Some(PASSWORD.into()),
    })
    .unwrap()
}

fn registry_of(entries: &[(&str, String)]) -> Registry {
    let mut res = Resources::default();
    for (name, url) in entries {
        res.redis.insert(
            name.to_string(),
            RedisDef {
                url: Secret::new(url.clone()),
            },
        );
    }
    Registry::with_resources(Arc::new(res))
}

fn registry(servers: &[(&str, &RedisServer)]) -> Registry {
    let entries: Vec<(&str, String)> = servers.iter().map(|(n, s)| (*n, s.url())).collect();
    registry_of(&entries)
}

/// Validates, builds and runs one step; progress lines are printed.
async fn run(
    reg: &Registry,
    kind: &str,
    params: serde_json::Value,
) -> Result<StepOutput, StepError> {
    let k = reg
        .get(kind)
        .unwrap_or_else(|| panic!("{kind} not registered"));
    k.validate(&params)
        .unwrap_or_else(|e| panic!("{kind} {params}: {e}"));
    let step = k.build(&params).unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let printer = tokio::spawn(async move {
        while let Some(l) = rx.recv().await {
            println!("  [step] {l}");
        }
    });
    let ctx = StepContext {
        run_id: 7,
        step_index: 0,
        attempt: 1,
        vars: Default::default(),
        progress: ProgressSink::new(tx),
        cancel: CancellationToken::new(),
        ..Default::default()
    };
    let r = step.run(&ctx).await;
    drop(ctx);
    printer.await.unwrap();
    if let Err(e) = &r {
        println!("  [step] error: {} (retryable: {})", e.message, e.retryable);
    }
    r
}

fn big_value() -> String {
    "x".repeat(20_000)
}

#[tokio::test(flavor = "multi_thread")]
async fn check_reports_roles_links_and_lag() {
    let m = master();
    let r = RedisServer::start_replica_of(&m).unwrap();
    m.cmd::<String>(&["SET", "a", "1"]).unwrap();
    r.wait_caught_up(&m, Duration::from_secs(10)).unwrap();
    let reg = registry(&[("main", &m), ("dr", &r)]);

    let out = run(
        &reg,
        "redis_check",
        json!({"redis": "dr", "expect_role": "replica"}),
    )
    .await
    .unwrap();
    assert_eq!(
        out.summary,
        format!("redis dr: replica of {}, link up, 0 bytes behind", m.addr())
    );
    assert_eq!(out.data["master"]["name"], "main");
    assert_eq!(out.data["master"]["reachable"], true);
    assert_eq!(out.data["lag_bytes"], 0);
    assert_eq!(out.data["info"]["role"], "replica");
    assert!(!out.summary.contains(PASSWORD) && !out.log.contains(PASSWORD));

    let out = run(
        &reg,
        "redis_check",
        json!({"redis": "main", "expect_role": "master"}),
    )
    .await
    .unwrap();
    assert!(
        out.summary.starts_with(&format!(
            "redis main: master, 1 replica ({} online, ",
            r.addr()
        )),
        "{}",
        out.summary
    );
    assert_eq!(out.data["info"]["replicas"].as_array().unwrap().len(), 1);

    // The wrong role is a fatal mismatch.
    let e = run(
        &reg,
        "redis_check",
        json!({"redis": "dr", "expect_role": "master"}),
    )
    .await
    .unwrap_err();
    assert!(!e.retryable);
    assert!(
        e.message.ends_with("expected a master, it is a replica"),
        "{}",
        e.message
    );

    // The replica stops applying the stream (a paused replica holds its master's writes):
    // both views of the lag exceed a 1000-byte limit, and that is worth retrying.
    r.cmd::<String>(&["CLIENT", "PAUSE", "20000", "WRITE"])
        .unwrap();
    m.cmd::<String>(&["SET", "big", &big_value()]).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let e = run(
        &reg,
        "redis_check",
        json!({"redis": "dr", "max_lag_bytes": 1000}),
    )
    .await
    .unwrap_err();
    assert!(e.retryable);
    assert!(
        e.message.contains("link up, 19.") && e.message.ends_with("beyond the limit of 1000 bytes"),
        "{}",
        e.message
    );
    let e = run(
        &reg,
        "redis_check",
        json!({"redis": "main", "max_lag_bytes": 1000}),
    )
    .await
    .unwrap_err();
    assert!(e.retryable);
    assert!(e.message.contains("beyond the limit"), "{}", e.message);

    // Unpaused, it catches up and the same check passes.
    r.cmd::<String>(&["CLIENT", "UNPAUSE"]).unwrap();
    r.wait_caught_up(&m, Duration::from_secs(10)).unwrap();
    let out = run(
        &reg,
        "redis_check",
        json!({"redis": "dr", "max_lag_bytes": 1000}),
    )
    .await
    .unwrap();
    assert!(
        out.summary.ends_with("link up, 0 bytes behind"),
        "{}",
        out.summary
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn replica_without_a_configured_master_and_with_its_master_down() {
    let mut m = master();
    let r = RedisServer::start_replica_of(&m).unwrap();
    r.wait_caught_up(&m, Duration::from_secs(10)).unwrap();
    // Only the replica is configured: its master is reached with the replica's credentials.
    let reg = registry(&[("dr", &r)]);
    let out = run(&reg, "redis_check", json!({"redis": "dr"}))
        .await
        .unwrap();
    assert_eq!(
        out.summary,
        format!("redis dr: replica of {}, link up, 0 bytes behind", m.addr())
    );
    assert_eq!(out.data["master"]["name"], serde_json::Value::Null);
    assert_eq!(out.data["master"]["reachable"], true);

    m.kill();
    for _ in 0..100 {
        if r.info_replication()
            .unwrap()
            .contains("master_link_status:down")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = run(
        &reg,
        "redis_check",
        json!({"redis": "dr", "expect_role": "replica", "max_lag_bytes": 0}),
    )
    .await
    .unwrap();
    assert!(
        out.summary.starts_with(&format!(
            "redis dr: replica of {}, link down for ",
            m.addr()
        )) && out.summary.ends_with(", lag unknown (master unreachable)"),
        "{}",
        out.summary
    );
    assert_eq!(out.data["master"]["reachable"], false);
    assert_eq!(out.data["lag_bytes"], serde_json::Value::Null);
    let err = out.data["master"]["error"].as_str().unwrap();
    assert!(!err.contains(PASSWORD), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn promote_replica_then_it_accepts_writes() {
    let mut m = master();
    let r = RedisServer::start_replica_of(&m).unwrap();
    m.cmd::<String>(&["SET", "a", "1"]).unwrap();
    r.wait_caught_up(&m, Duration::from_secs(10)).unwrap();
    let reg = registry(&[("main", &m), ("dr", &r)]);
    let refused = r.cmd::<String>(&["SET", "b", "2"]).unwrap_err().to_string();
    assert!(refused.contains("read only replica"), "{refused}");
    let master_addr = m.addr();
    m.kill();

    let out = run(&reg, "redis_promote", json!({"redis": "dr"}))
        .await
        .unwrap();
    assert!(
        out.summary.starts_with(&format!(
            "redis dr: promoted to master (was replica of {master_addr}, link "
        )) && out.summary.ends_with("writes accepted"),
        "{}",
        out.summary
    );
    assert_eq!(out.data["promoted"], true);
    assert_eq!(out.data["previous_role"], "replica");
    assert_eq!(out.data["previous_master"], master_addr);
    assert!(out.data["offset_at_promotion"].as_u64().unwrap() > 0);
    assert_eq!(out.data["after"]["role"], "master");
    assert!(!out.log.contains(PASSWORD));

    assert_eq!(r.role().unwrap(), "master");
    assert_eq!(r.cmd::<String>(&["SET", "b", "2"]).unwrap(), "OK");
    assert_eq!(r.cmd::<String>(&["GET", "a"]).unwrap(), "1");
    let ttl: i64 = r.cmd(&["TTL", "drbot:promoted:7"]).unwrap();
    assert!((1..=60).contains(&ttl), "ttl {ttl}");

    // A re-run (e.g. after an interrupted attempt) finds a master and only checks writes.
    let out = run(&reg, "redis_promote", json!({"redis": "dr"}))
        .await
        .unwrap();
    assert!(
        out.summary
            .starts_with("redis dr: already a master, nothing to promote; writes accepted"),
        "{}",
        out.summary
    );
    assert_eq!(out.data["promoted"], false);
    assert_eq!(out.data["previous_role"], "master");
}

#[tokio::test(flavor = "multi_thread")]
async fn promoting_a_master_is_a_no_op() {
    let m = master();
    let r = RedisServer::start_replica_of(&m).unwrap();
    let reg = registry(&[("main", &m)]);
    let out = run(&reg, "redis_promote", json!({"redis": "main"}))
        .await
        .unwrap();
    assert_eq!(
        out.summary,
        "redis main: already a master, nothing to promote; writes accepted (1 replica connected)"
    );
    assert_eq!(m.role().unwrap(), "master");
    // Its replica still follows it.
    assert_eq!(r.role().unwrap(), "slave");
    r.wait_link_up(Duration::from_secs(5)).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_and_unauthorized_servers_never_show_the_password() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let reg = registry_of(&[("gone", format!("redis://:{PASSWORD}@127.0.0.1:{port}/0"))]);
    for kind in ["redis_check", "redis_promote"] {
        let e = run(&reg, kind, json!({"redis": "gone"})).await.unwrap_err();
        assert!(e.retryable, "{kind}: {e:?}");
        assert!(
            e.message
                .starts_with(&format!("redis 127.0.0.1:{port}: connecting failed: ")),
            "{}",
            e.message
        );
        assert!(!e.message.contains(PASSWORD) && !e.log.contains(PASSWORD));
    }

    // A wrong password is fatal: retrying will not fix it.
    let m = master();
    let wrong = format!("redis://:{PASSWORD}-wrong@{}", m.addr());
    let reg = registry_of(&[("main", wrong)]);
    let e = run(&reg, "redis_check", json!({"redis": "main"}))
        .await
        .unwrap_err();
    assert!(!e.retryable, "{e:?}");
    assert!(e.message.contains("authentication failed"), "{}", e.message);
    assert!(!e.message.contains(PASSWORD));

    // A URL the client cannot use is fatal too, and not echoed.
    let reg = registry_of(&[("bad", format!("http://:{PASSWORD}@{}", m.addr()))]);
    let e = run(&reg, "redis_check", json!({"redis": "bad"}))
        .await
        .unwrap_err();
    assert!(!e.retryable, "{e:?}");
    assert!(e.message.contains("not a usable"), "{}", e.message);
    assert!(!e.message.contains(PASSWORD));
}

#[test]
fn validate_errors_and_traits() {
    let reg = registry_of(&[
        ("main", "redis://127.0.0.1:1".into()),
        ("dr", "redis://127.0.0.1:2".into()),
    ]);
    let check = reg.get("redis_check").unwrap();
    let promote = reg.get("redis_promote").unwrap();
    assert!(!check.traits().destructive && check.traits().idempotent);
    assert!(promote.traits().destructive && promote.traits().idempotent);

    assert_eq!(
        check.validate(&json!({"redis": "nope"})).unwrap_err(),
        "redis: unknown Redis server `nope` (known: dr, main)"
    );
    assert_eq!(
        promote.validate(&json!({"redis": "nope"})).unwrap_err(),
        "redis: unknown Redis server `nope` (known: dr, main)"
    );
    check.validate(&json!({"redis": "{region}"})).unwrap();
    promote.validate(&json!({"redis": "{region}"})).unwrap();
    check
        .validate(&json!({"redis": "dr", "expect_role": "replica", "max_lag_bytes": 0}))
        .unwrap();
    assert_eq!(
        check
            .validate(&json!({"redis": "dr", "expect_role": "leader"}))
            .unwrap_err(),
        "expect_role: `leader` is not a role (master or replica)"
    );
    let e = check
        .validate(&json!({"redis": "dr", "cluster": "x"}))
        .unwrap_err();
    assert!(e.contains("unknown field `cluster`"), "{e}");
    let e = promote.validate(&json!({})).unwrap_err();
    assert!(e.contains("missing field `redis`"), "{e}");
    let e = check
        .validate(&json!({"redis": "dr", "max_lag_bytes": -1}))
        .unwrap_err();
    assert!(e.starts_with("max_lag_bytes: "), "{e}");
    assert_eq!(
        promote.validate(&json!({"redis": " "})).unwrap_err(),
        "redis: must name a [redis.<name>] server"
    );

    let empty = Registry::builtin();
    assert_eq!(
        empty
            .get("redis_check")
            .unwrap()
            .validate(&json!({"redis": "dr"}))
            .unwrap_err(),
        "redis: unknown Redis server `dr` (no [redis.<name>] is configured)"
    );
}

/// A failover then a failback with the Redis steps: the old master, still up and holding stale
/// data, syncs from the promoted DR server (`redis_replicate`), is promoted back, and the DR
/// server follows it again; re-runs change nothing, and following a replica is refused.
#[tokio::test(flavor = "multi_thread")]
async fn replicate_swaps_roles_back_after_a_failover() {
    let m = master();
    let r = RedisServer::start_replica_of(&m).unwrap();
    m.cmd::<String>(&["SET", "a", "1"]).unwrap();
    r.wait_caught_up(&m, Duration::from_secs(10)).unwrap();
    let reg = registry(&[("main", &m), ("dr", &r)]);

    // Failover: the DR server is promoted and takes writes; the old master (cut off, still
    // up) takes a write the DR side never sees.
    run(&reg, "redis_promote", json!({"redis": "dr"}))
        .await
        .unwrap();
    r.cmd::<String>(&["SET", "b", "2"]).unwrap();
    m.cmd::<String>(&["SET", "stale", "x"]).unwrap();
    assert_eq!(m.role().unwrap(), "master");

    // "Sync data from secondary": the old master follows the DR server.
    let out = run(
        &reg,
        "redis_replicate",
        json!({"redis": "main", "master": "dr", "wait": "20s"}),
    )
    .await
    .unwrap();
    assert_eq!(out.data["changed"], true);
    assert_eq!(out.data["previous_role"], "master");
    assert_eq!(out.data["master_address"], r.addr());
    assert!(
        out.summary.starts_with(&format!(
            "redis main: now a replica of dr ({}), link up, synced at offset ",
            r.addr()
        )),
        "{}",
        out.summary
    );
    assert!(!out.log.contains(PASSWORD));
    assert_eq!(m.role().unwrap(), "slave");
    assert_eq!(m.cmd::<String>(&["GET", "b"]).unwrap(), "2");
    let stale: Option<String> = m.cmd(&["GET", "stale"]).unwrap();
    assert_eq!(stale, None, "the old master's own data is replaced");

    // A re-run finds it following `dr` and changes nothing.
    let out = run(
        &reg,
        "redis_replicate",
        json!({"redis": "main", "master": "dr"}),
    )
    .await
    .unwrap();
    assert_eq!(out.data["changed"], false);
    assert_eq!(
        out.summary,
        format!(
            "redis main: already a replica of dr ({}), link up",
            r.addr()
        )
    );

    // Following a replica would build a loop: refused, and `dr` stays a master.
    let err = run(
        &reg,
        "redis_replicate",
        json!({"redis": "dr", "master": "main"}),
    )
    .await
    .unwrap_err();
    assert!(!err.retryable);
    assert!(
        err.message.starts_with(&format!(
            "redis main ({}) is a replica of {}, not a master: promote it first",
            m.addr(),
            r.addr()
        )),
        "{}",
        err.message
    );
    assert_eq!(r.role().unwrap(), "master");

    // Failback: promote `main`, then `dr` follows it; writes on `main` reach `dr`.
    run(&reg, "redis_promote", json!({"redis": "main"}))
        .await
        .unwrap();
    let out = run(
        &reg,
        "redis_replicate",
        json!({"redis": "dr", "master": "main", "wait": "20s"}),
    )
    .await
    .unwrap();
    assert_eq!(out.data["changed"], true);
    assert_eq!(out.data["after"]["master_link_status"], "up");
    assert_eq!(m.role().unwrap(), "master");
    assert_eq!(r.role().unwrap(), "slave");
    m.cmd::<String>(&["SET", "c", "3"]).unwrap();
    r.wait_caught_up(&m, Duration::from_secs(10)).unwrap();
    assert_eq!(r.cmd::<String>(&["GET", "c"]).unwrap(), "3");
    assert_eq!(r.cmd::<String>(&["GET", "b"]).unwrap(), "2");
}

#[tokio::test(flavor = "multi_thread")]
async fn replicate_validates_and_times_out_clearly() {
    let m = master();
    let other = master();
    let reg = registry(&[("main", &m), ("other", &other)]);
    let kind = reg.get("redis_replicate").unwrap();
    assert!(!kind.traits().overridable && kind.traits().destructive && kind.traits().idempotent);
    assert_eq!(
        kind.validate(&json!({"redis": "main", "master": "main"}))
            .unwrap_err(),
        "master: `main` cannot be a replica of itself"
    );
    assert!(
        kind.validate(&json!({"redis": "main", "master": "nope"}))
            .unwrap_err()
            .starts_with("master: unknown Redis server `nope` (known: main, other)")
    );
    assert!(
        kind.validate(&json!({"redis": "main", "master": "other", "master_address": "db"}))
            .unwrap_err()
            .starts_with("master_address: ")
    );
    assert!(
        kind.validate(&json!({"redis": "{primary}", "master": "{secondary}"}))
            .is_ok()
    );

    // The replica is told an address where no master answers: the link never comes up, and
    // the error says so (and what to look at) without the password.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap().to_string();
    drop(dead);
    let err = run(
        &reg,
        "redis_replicate",
        json!({"redis": "main", "master": "other", "master_address": dead_addr, "wait": "1s"}),
    )
    .await
    .unwrap_err();
    assert!(err.retryable);
    assert!(
        err.message.starts_with(&format!(
            "redis {}: not replicating from {dead_addr} 1 s after REPLICAOF: its link to the \
             master is down",
            m.addr()
        )) && err.message.contains("masterauth"),
        "{}",
        err.message
    );
    assert!(!err.message.contains(PASSWORD));
}
