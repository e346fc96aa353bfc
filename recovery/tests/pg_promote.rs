//! `pg_replication_check`, `pg_fence` and `pg_promote` on real PostgreSQL 15 clusters, with a
//! writer loop recording which inserts the primary acknowledged: synchronous replication loses
//! none of them; with asynchronous replication the reported RPO matches what is missing.

mod pg_promote_support;

use std::time::Duration;

use chrono::{DateTime, Utc};
use pg_promote_support::*;
use recovery::testkit::pg::{PgCluster, PgOptions};
use serde_json::json;
use sqlx::Connection as _;

const REPLAY: Duration = Duration::from_secs(30);

fn at(v: &serde_json::Value) -> DateTime<Utc> {
    v.as_str().unwrap().parse().unwrap()
}

/// Stops the replica's WAL receiver (empty `primary_conninfo`), so it falls behind for real.
fn disconnect(replica: &PgCluster, primary: &PgCluster) {
    replica
        .psql(
            "postgres",
            "ALTER SYSTEM SET primary_conninfo = ''; SELECT pg_reload_conf();",
        )
        .unwrap();
    for _ in 0..200 {
        if primary
            .psql("postgres", "SELECT count(*) FROM pg_stat_replication")
            .unwrap()
            == "0"
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the replica kept streaming");
}

#[tokio::test(flavor = "multi_thread")]
async fn replication_check_passes_fails_on_lag_and_on_a_primary() {
    let primary = PgCluster::start().unwrap();
    create_table(&primary);
    let replica = PgCluster::start_replica_of(&primary).unwrap();
    primary
        .psql(
            "postgres",
            "INSERT INTO w SELECT g, now() FROM generate_series(1, 100) g",
        )
        .unwrap();
    replica.wait_for_replay(&primary, REPLAY).unwrap();
    let reg = registry(&[("main", &primary), ("dr", &replica)]);

    let out = run(
        &reg,
        "pg_replication_check",
        json!({"primary": "main", "replica": "dr", "max_lag": "15m"}),
    )
    .await
    .unwrap();
    assert!(
        out.summary.starts_with("replica dr: lag "),
        "{}",
        out.summary
    );
    assert!(out.summary.contains("streaming, async"), "{}", out.summary);
    assert_eq!(out.data["primary"]["reachable"], true);
    assert_eq!(
        out.data["primary"]["replication"].as_array().unwrap().len(),
        1
    );
    assert_eq!(out.data["replica"]["state"]["in_recovery"], true);
    assert!(out.data["lag_bytes"].as_u64().unwrap() < 1024 * 1024);
    assert!(out.data["lag_seconds"].as_f64().unwrap() < 15.0 * 60.0);

    // Replay paused while the primary writes: the lag grows beyond a 1 s limit.
    replica
        .psql("postgres", "SELECT pg_wal_replay_pause()")
        .unwrap();
    primary
        .psql(
            "postgres",
            "INSERT INTO w SELECT g, now() FROM generate_series(101, 200) g",
        )
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    primary
        .psql("postgres", "INSERT INTO w VALUES (201, now())")
        .unwrap();
    let err = run(
        &reg,
        "pg_replication_check",
        json!({"primary": "main", "replica": "dr", "max_lag": "1s"}),
    )
    .await
    .unwrap_err();
    assert!(err.retryable);
    assert!(err.message.contains("beyond the limit"), "{}", err.message);
    assert!(err.message.contains("replay PAUSED"), "{}", err.message);
    // A byte limit catches it too, and a generous time limit alone does not.
    let err = run(
        &reg,
        "pg_replication_check",
        json!({"primary": "main", "replica": "dr", "max_lag": "1h", "max_lag_bytes": 1}),
    )
    .await
    .unwrap_err();
    assert!(err.retryable, "{}", err.message);
    run(
        &reg,
        "pg_replication_check",
        json!({"primary": "main", "replica": "dr", "max_lag": "1h"}),
    )
    .await
    .unwrap();
    replica
        .psql("postgres", "SELECT pg_wal_replay_resume()")
        .unwrap();
    replica.wait_for_replay(&primary, REPLAY).unwrap();

    // Naming a primary as the replica is fatal.
    let err = run(
        &reg,
        "pg_replication_check",
        json!({"primary": "dr", "replica": "main"}),
    )
    .await
    .unwrap_err();
    assert!(!err.retryable);
    assert!(err.message.contains("not in recovery"), "{}", err.message);

    // Unknown clusters are named at validation.
    let e = reg
        .get("pg_replication_check")
        .unwrap()
        .validate(&json!({"primary": "main", "replica": "west"}))
        .unwrap_err();
    assert_eq!(
        e,
        "replica: unknown PostgreSQL cluster `west` (known: dr, main)"
    );
    assert!(
        reg.get("pg_replication_check")
            .unwrap()
            .validate(&json!({"primary": "{primary}", "replica": "{region}"}))
            .is_ok()
    );
    assert!(
        reg.get("pg_replication_check")
            .unwrap()
            .validate(&json!({"primary": "main", "replica": "dr", "max_lag": "soon"}))
            .is_err()
    );
}

/// On an idle primary the last commit may be hours old. WAL without a commit (here a
/// checkpoint) that the replica has not replayed yet when the check reads it is in flight, not
/// lag: the check waits a moment for it instead of reporting the time since the last commit.
#[tokio::test(flavor = "multi_thread")]
async fn wal_in_flight_on_an_idle_primary_is_not_lag() {
    let primary = PgCluster::start().unwrap();
    create_table(&primary);
    let replica = PgCluster::start_replica_of(&primary).unwrap();
    primary
        .psql("postgres", "INSERT INTO w VALUES (1, now())")
        .unwrap();
    replica.wait_for_replay(&primary, REPLAY).unwrap();
    let reg = registry(&[("main", &primary), ("dr", &replica)]);
    // The last commit is now older than the limit; then a record without a commit, held back
    // on the replica for 300 ms (the moment it is in flight).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    replica
        .psql("postgres", "SELECT pg_wal_replay_pause()")
        .unwrap();
    primary.psql("postgres", "CHECKPOINT").unwrap();
    let (out, ()) = tokio::join!(
        run(
            &reg,
            "pg_replication_check",
            json!({"primary": "main", "replica": "dr", "max_lag": "1s"}),
        ),
        async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            replica
                .psql("postgres", "SELECT pg_wal_replay_resume()")
                .unwrap();
        }
    );
    let out = out.unwrap();
    assert_eq!(out.data["lag_bytes"], 0, "{}", out.data);
    assert_eq!(out.data["lag_seconds"], 0.0, "{}", out.data);
    assert!(
        out.data["seconds_since_last_replayed_commit"]
            .as_f64()
            .unwrap()
            > 2.0,
        "{}",
        out.data
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_replication_promote_after_primary_crash_loses_no_acknowledged_row() {
    let mut primary = PgCluster::start().unwrap();
    create_table(&primary);
    let replica = PgCluster::start_replica_of(&primary).unwrap();
    primary
        .psql(
            "postgres",
            "ALTER SYSTEM SET synchronous_standby_names = '*';\n\
             ALTER SYSTEM SET synchronous_commit = 'remote_apply';\n\
             SELECT pg_reload_conf();",
        )
        .unwrap();
    let reg = registry(&[("main", &primary), ("dr", &replica)]);
    // Wait until the standby counts as synchronous.
    for _ in 0..100 {
        if primary
            .psql("postgres", "SELECT sync_state FROM pg_stat_replication")
            .unwrap()
            == "sync"
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let check = run(
        &reg,
        "pg_replication_check",
        json!({"primary": "main", "replica": "dr"}),
    )
    .await
    .unwrap();
    assert!(
        check.summary.contains("streaming, sync"),
        "{}",
        check.summary
    );

    let writer = Writer::start(primary.url("postgres"), 1).await;
    writer.wait_for(300, &primary.url("postgres")).await;
    primary.kill().unwrap();
    let (acked, err) = writer.finish().await;
    assert!(err.is_some(), "the writer should have hit the crash");
    assert!(acked.len() >= 300);

    let out = run(
        &reg,
        "pg_promote",
        json!({"replica": "dr", "primary": "main", "wait_seconds": 30}),
    )
    .await
    .unwrap();
    assert_eq!(out.data["primary_reachable"], false);
    assert_eq!(out.data["lag_known"], false);
    assert!(out.data["lsn_gap_bytes"].is_null());
    assert!(
        out.summary
            .contains("primary main unreachable: lag unknown"),
        "{}",
        out.summary
    );
    assert!(!replica.is_in_recovery().unwrap());

    let missing = lost(&acked, &replica);
    assert!(
        missing.is_empty(),
        "acknowledged rows missing after promotion: {missing:?}"
    );
    // The promoted server takes writes.
    replica
        .psql("postgres", "INSERT INTO w VALUES (-1, now())")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn async_promote_after_primary_crash_reports_unknown_gap_and_last_commit() {
    let mut primary = PgCluster::start().unwrap();
    create_table(&primary);
    let replica = PgCluster::start_replica_of(&primary).unwrap();
    let reg = registry(&[("main", &primary), ("dr", &replica)]);

    let writer = Writer::start(primary.url("postgres"), 1).await;
    writer.wait_for(200, &primary.url("postgres")).await;
    // The replica stops receiving while the writer goes on; then the primary dies.
    disconnect(&replica, &primary);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    primary.kill().unwrap();
    let (acked, _) = writer.finish().await;

    let check = run(
        &reg,
        "pg_replication_check",
        json!({"primary": "main", "replica": "dr"}),
    )
    .await
    .unwrap();
    assert_eq!(check.data["lag_known"], false);
    assert!(
        check
            .summary
            .contains("primary main unreachable: lag unknown"),
        "{}",
        check.summary
    );

    let out = run(
        &reg,
        "pg_promote",
        json!({"replica": "dr", "primary": "main"}),
    )
    .await
    .unwrap();
    assert_eq!(out.data["primary_reachable"], false);
    assert_eq!(out.data["lag_known"], false);
    assert!(out.summary.contains("lag unknown"), "{}", out.summary);
    let last_replayed = at(&out.data["last_replayed_commit_at"]);

    let present = ids(&replica);
    let missing: Vec<_> = acked.iter().filter(|a| !present.contains(&a.id)).collect();
    assert!(
        !missing.is_empty(),
        "the disconnected replica should miss rows"
    );
    // A single writer: the promoted server holds exactly a prefix of the acknowledged rows, and
    // every missing row was acknowledged after the last replayed commit.
    let first_missing = missing[0];
    assert!(
        acked
            .iter()
            .take_while(|a| a.id < first_missing.id)
            .all(|a| present.contains(&a.id))
    );
    assert!(present.iter().all(|id| *id < first_missing.id));
    assert!(
        last_replayed <= first_missing.at,
        "{last_replayed} > {}",
        first_missing.at
    );
    // The last present row is the last replayed commit (same primary clock).
    let last_present_at: DateTime<Utc> = replica
        .psql("postgres", "SELECT to_char(max(at) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') FROM w")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        last_present_at <= last_replayed,
        "{last_present_at} > {last_replayed}"
    );
    // The reported window covers what is missing.
    let window = out.data["seconds_since_last_replayed_commit"]
        .as_f64()
        .unwrap();
    let lost_span = (missing.last().unwrap().at - last_replayed).num_milliseconds() as f64 / 1e3;
    assert!(
        window >= lost_span,
        "window {window} s < lost span {lost_span} s"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn fence_then_promote_caught_up_has_zero_gap_and_is_idempotent() {
    let primary = PgCluster::start().unwrap();
    create_table(&primary);
    let replica = PgCluster::start_replica_of(&primary).unwrap();
    let reg = registry(&[("main", &primary), ("dr", &replica)]);

    let writer = Writer::start(primary.url("postgres"), 1).await;
    writer.wait_for(200, &primary.url("postgres")).await;
    // A session in the middle of a write transaction: the fence must end it.
    let mut open_tx = sqlx::PgConnection::connect(&primary.url("postgres"))
        .await
        .unwrap();
    sqlx::query("BEGIN").execute(&mut open_tx).await.unwrap();
    sqlx::query("INSERT INTO w VALUES (-2, now())")
        .execute(&mut open_tx)
        .await
        .unwrap();
    let fence = run(&reg, "pg_fence", json!({"cluster": "main"}))
        .await
        .unwrap();
    assert!(
        fence.summary.contains("default_transaction_read_only = on"),
        "{}",
        fence.summary
    );
    assert!(fence.data["detail"]["terminated"].as_i64().unwrap() >= 1);
    assert!(sqlx::query("COMMIT").execute(&mut open_tx).await.is_err());
    let (acked, err) = writer.finish().await;
    assert!(
        err.is_some(),
        "the fence should have ended the writer's session"
    );
    assert!(!ids(&primary).contains(&-2));
    // New sessions cannot write.
    let e = primary
        .psql("postgres", "INSERT INTO w VALUES (-5, now())")
        .unwrap_err();
    assert!(format!("{e:#}").contains("read-only transaction"), "{e:#}");
    // Fencing again is harmless.
    run(&reg, "pg_fence", json!({"cluster": "main"}))
        .await
        .unwrap();

    let out = run(
        &reg,
        "pg_promote",
        json!({"replica": "dr", "primary": "main", "catch_up_seconds": 30}),
    )
    .await
    .unwrap();
    assert_eq!(out.data["primary_reachable"], true);
    assert_eq!(out.data["lsn_gap_bytes"], 0);
    assert_eq!(out.data["rpo_seconds"], 0.0);
    assert!(
        out.summary.contains("RPO: 0 B behind primary main"),
        "{}",
        out.summary
    );
    let present = ids(&replica);
    assert!(acked.iter().all(|a| present.contains(&a.id)));

    // Promoting again is a no-op with the same evidence.
    let again = run(
        &reg,
        "pg_promote",
        json!({"replica": "dr", "primary": "main"}),
    )
    .await
    .unwrap();
    assert_eq!(again.data["already_promoted"], true);
    assert!(
        again.summary.starts_with("already promoted dr"),
        "{}",
        again.summary
    );
    for key in [
        "replica_replay_lsn",
        "last_replayed_commit_at",
        "lsn_gap_bytes",
    ] {
        assert_eq!(again.data[key], out.data[key], "{key}");
    }
}

/// A primary that answers and takes writes (its fence did not get through, e.g. a network
/// blip at fence time) is never promoted beside: two writable primaries would split the data.
/// Nothing is done; after fencing, the same step promotes. `allow_writable_primary` is the
/// explicit way past it.
#[tokio::test(flavor = "multi_thread")]
async fn promote_refuses_while_the_old_primary_takes_writes() {
    let primary = PgCluster::start().unwrap();
    create_table(&primary);
    let replica = PgCluster::start_replica_of(&primary).unwrap();
    let reg = registry(&[("main", &primary), ("dr", &replica)]);

    let e = run(
        &reg,
        "pg_promote",
        json!({"replica": "dr", "primary": "main"}),
    )
    .await
    .unwrap_err();
    assert!(!e.retryable, "{e:?}");
    assert!(
        e.message.contains("old primary main")
            && e.message.contains("accepts writes")
            && e.message.contains("Nothing was done"),
        "{}",
        e.message
    );
    assert!(replica.is_in_recovery().unwrap(), "promoted anyway");
    primary
        .psql("postgres", "INSERT INTO w VALUES (-7, now())")
        .unwrap();

    // Explicitly allowed: promoted, and the log says so.
    let other = PgCluster::start_replica_of(&primary).unwrap();
    let reg2 = registry(&[("main", &primary), ("dr2", &other)]);
    let out = run(
        &reg2,
        "pg_promote",
        json!({"replica": "dr2", "primary": "main", "allow_writable_primary": true}),
    )
    .await
    .unwrap();
    assert!(!other.is_in_recovery().unwrap());
    assert!(out.log.contains("allow_writable_primary"), "{}", out.log);

    // Fenced: the same step promotes.
    run(&reg, "pg_fence", json!({"cluster": "main"}))
        .await
        .unwrap();
    run(
        &reg,
        "pg_promote",
        json!({"replica": "dr", "primary": "main", "catch_up_seconds": 30}),
    )
    .await
    .unwrap();
    assert!(!replica.is_in_recovery().unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn fenced_lagging_replica_promote_measures_the_gap() {
    let primary = PgCluster::start_with(PgOptions {
        extra_conf: vec![("track_commit_timestamp".into(), "on".into())],
        ..Default::default()
    })
    .unwrap();
    create_table(&primary);
    let replica = PgCluster::start_replica_of(&primary).unwrap();
    let reg = registry(&[("main", &primary), ("dr", &replica)]);

    let writer = Writer::start(primary.url("postgres"), 1).await;
    writer.wait_for(200, &primary.url("postgres")).await;
    disconnect(&replica, &primary);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    run(&reg, "pg_fence", json!({"cluster": "main"}))
        .await
        .unwrap();
    let (acked, _) = writer.finish().await;

    let out = run(
        &reg,
        "pg_promote",
        json!({"replica": "dr", "primary": "main", "catch_up_seconds": 2}),
    )
    .await
    .unwrap();
    assert_eq!(out.data["primary_reachable"], true);
    let gap = out.data["lsn_gap_bytes"].as_u64().unwrap();
    let present = ids(&replica);
    let missing: Vec<_> = acked.iter().filter(|a| !present.contains(&a.id)).collect();
    assert!(
        !missing.is_empty() && gap > 0,
        "gap {gap} B, {} rows missing",
        missing.len()
    );
    // Each missing row carries ~250 bytes of WAL at least.
    assert!(
        gap >= 200 * missing.len() as u64,
        "gap {gap} B for {} rows",
        missing.len()
    );
    let last_replayed = at(&out.data["last_replayed_commit_at"]);
    let primary_last = at(&out.data["primary_last_commit_at"]);
    assert!(last_replayed <= missing[0].at);
    assert!(primary_last > last_replayed);
    let rpo = out.data["rpo_seconds"].as_f64().unwrap();
    let span = (primary_last - last_replayed).num_milliseconds() as f64 / 1e3;
    assert!((rpo - span).abs() < 0.01, "rpo {rpo} vs {span}");
    // The rows the writer got acknowledged after the last replayed commit span about as long.
    let lost_span = (missing.last().unwrap().at - missing[0].at).num_milliseconds() as f64 / 1e3;
    assert!(
        rpo + 0.5 >= lost_span,
        "rpo {rpo} s, missing rows span {lost_span} s"
    );
    assert!(
        out.summary.contains("behind primary main"),
        "{}",
        out.summary
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn fence_unreachable_and_stop_modes() {
    let primary = PgCluster::start().unwrap();
    let reg = registry(&[("main", &primary)]);
    run(&reg, "pg_fence", json!({"cluster": "main", "mode": "stop"}))
        .await
        .unwrap();
    assert!(primary.psql("postgres", "SELECT 1").is_err());
    let again = run(&reg, "pg_fence", json!({"cluster": "main", "mode": "stop"}))
        .await
        .unwrap();
    assert!(
        again.summary.contains("already stopped"),
        "{}",
        again.summary
    );

    let out = run(
        &reg,
        "pg_fence",
        json!({"cluster": "main", "allow_unreachable": true}),
    )
    .await
    .unwrap();
    assert!(
        out.summary.starts_with("primary unreachable: not fenced"),
        "{}",
        out.summary
    );
    assert_eq!(out.data["fenced"], false);
    let err = run(&reg, "pg_fence", json!({"cluster": "main"}))
        .await
        .unwrap_err();
    assert!(
        err.retryable && err.message.contains("cannot connect"),
        "{}",
        err.message
    );
}

/// A primary that answers but refuses drbot's session (a rotated password, a dropped role or
/// database: here a database that does not exist) is running and may take writes: a fence
/// with `allow_unreachable` does not call it unreachable, and the promotion refuses to run
/// beside it.
#[tokio::test(flavor = "multi_thread")]
async fn a_primary_that_refuses_drbot_is_not_unreachable() {
    let primary = PgCluster::start().unwrap();
    create_table(&primary);
    let replica = PgCluster::start_replica_of(&primary).unwrap();
    let mut res = recovery::resources::Resources::default();
    let mut main = def(&primary);
    main.url = recovery::secret::Secret::new(primary.url("no_such_db"));
    res.postgres.insert("main".into(), main);
    res.postgres.insert("dr".into(), def(&replica));
    let reg = recovery::registry::Registry::with_resources(std::sync::Arc::new(res));

    let e = run(
        &reg,
        "pg_fence",
        json!({"cluster": "main", "allow_unreachable": true}),
    )
    .await
    .unwrap_err();
    assert!(
        e.retryable && e.message.starts_with("refused by") && e.message.contains("no_such_db"),
        "{}",
        e.message
    );
    let e = run(
        &reg,
        "pg_promote",
        json!({"replica": "dr", "primary": "main"}),
    )
    .await
    .unwrap_err();
    assert!(
        !e.retryable
            && e.message.contains("old primary main")
            && e.message.contains("may accept writes")
            && e.message.contains("Nothing was done"),
        "{}",
        e.message
    );
    assert!(replica.is_in_recovery().unwrap(), "promoted anyway");
}
