//! Failback on real PostgreSQL 15 clusters: after a failover (old primary crashed, replica
//! promoted) and writes on the new primary, `pg_rebuild_replica` turns the old primary into a
//! streaming replica (pg_rewind, or a fresh pg_basebackup when rewinding is impossible or
//! forced), and `pg_switchover` moves the primary role back without losing a write.

mod pg_promote_support;

use std::time::Duration;

use pg_promote_support::*;
use recovery::testkit::pg::{PgCluster, PgOptions};
use serde_json::json;

const REPLAY: Duration = Duration::from_secs(30);

/// testkit keeps each cluster's port, socket and archive dir in this file: it belongs to the host.
fn keep() -> serde_json::Value {
    json!(["postgresql.conf", "pg_hba.conf", "drbot-local.conf"])
}

fn count(c: &PgCluster) -> i64 {
    c.psql("postgres", "SELECT count(*) FROM w")
        .unwrap()
        .parse()
        .unwrap()
}

/// Failover: rows 1..=100 replicated; then rows 500..=509 only on the old primary (the replica
/// is disconnected), which crashes; the replica is promoted and gets rows 1001..=1100.
async fn failover(main: &mut PgCluster, dr: &PgCluster) -> registry::Reg {
    create_table(main);
    main.psql(
        "postgres",
        "INSERT INTO w SELECT g, now() FROM generate_series(1, 100) g",
    )
    .unwrap();
    dr.wait_for_replay(main, REPLAY).unwrap();
    dr.psql(
        "postgres",
        "ALTER SYSTEM SET primary_conninfo = ''; SELECT pg_reload_conf();",
    )
    .unwrap();
    for _ in 0..200 {
        if main
            .psql("postgres", "SELECT count(*) FROM pg_stat_replication")
            .unwrap()
            == "0"
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    main.psql(
        "postgres",
        "INSERT INTO w SELECT g, now() FROM generate_series(500, 509) g",
    )
    .unwrap();
    main.kill().unwrap();
    let reg = registry(&[("main", main), ("dr", dr)]);
    run(
        &reg,
        "pg_promote",
        json!({"replica": "dr", "primary": "main"}),
    )
    .await
    .unwrap();
    dr.psql(
        "postgres",
        "INSERT INTO w SELECT g, now() FROM generate_series(1001, 1100) g",
    )
    .unwrap();
    assert_eq!(count(dr), 200);
    registry::Reg(reg)
}

mod registry {
    /// The registry of a failover scenario.
    pub struct Reg(pub recovery::registry::Registry);
}

#[tokio::test(flavor = "multi_thread")]
async fn rewind_then_switchover_back_loses_nothing() {
    let mut main = PgCluster::start().unwrap();
    let dr = PgCluster::start_replica_of(&main).unwrap();
    let registry::Reg(reg) = failover(&mut main, &dr).await;

    // The old primary comes back as a replica of the new one, through pg_rewind.
    let out = run(
        &reg,
        "pg_rebuild_replica",
        json!({"cluster": "main", "source": "dr", "keep_files": keep()}),
    )
    .await
    .unwrap();
    assert_eq!(out.data["method"], "pg_rewind", "{}", out.summary);
    assert!(out.summary.contains("streaming"), "{}", out.summary);
    assert!(main.is_in_recovery().unwrap());
    assert_eq!(count(&main), 200);
    // The diverged rows that only the crashed primary had were rewound away.
    assert_eq!(
        main.psql(
            "postgres",
            "SELECT count(*) FROM w WHERE id BETWEEN 500 AND 509"
        )
        .unwrap(),
        "0"
    );
    let check = run(
        &reg,
        "pg_replication_check",
        json!({"primary": "dr", "replica": "main", "max_lag": "1m"}),
    )
    .await
    .unwrap();
    assert!(check.summary.contains("streaming"), "{}", check.summary);

    // A forced fresh base backup works too (and re-running a rebuild is harmless).
    let out = run(
        &reg,
        "pg_rebuild_replica",
        json!({"cluster": "main", "source": "dr", "keep_files": keep(), "force_basebackup": true}),
    )
    .await
    .unwrap();
    assert_eq!(out.data["method"], "pg_basebackup");
    assert_eq!(count(&main), 200);

    // Writes keep arriving on dr until the switchover fences it.
    let writer = Writer::start(dr.url("postgres"), 2001).await;
    writer.wait_for(300, &dr.url("postgres")).await;
    let out = run(
        &reg,
        "pg_switchover",
        json!({"primary": "dr", "replica": "main", "keep_files": keep(), "catch_up_seconds": 60}),
    )
    .await
    .unwrap();
    let (acked, err) = writer.finish().await;
    assert!(err.is_some(), "the fence should end the writer's session");
    assert!(
        out.summary
            .starts_with("switched over: main is primary (gap 0 B"),
        "{}",
        out.summary
    );
    assert_eq!(out.data["promote"]["lsn_gap_bytes"], 0);

    // main is the primary again with every write; dr streams from it.
    assert!(!main.is_in_recovery().unwrap());
    assert!(dr.is_in_recovery().unwrap());
    let lost = lost(&acked, &main);
    assert!(lost.is_empty(), "writes lost in the switchover: {lost:?}");
    assert_eq!(count(&main), 200 + acked.len() as i64);
    main.psql("postgres", "INSERT INTO w VALUES (-1, now())")
        .unwrap();
    dr.wait_for_replay(&main, REPLAY).unwrap();
    assert_eq!(
        dr.psql("postgres", "SELECT count(*) FROM w WHERE id = -1")
            .unwrap(),
        "1"
    );
    run(
        &reg,
        "pg_replication_check",
        json!({"primary": "main", "replica": "dr"}),
    )
    .await
    .unwrap();

    // Again: a no-op.
    let again = run(
        &reg,
        "pg_switchover",
        json!({"primary": "dr", "replica": "main", "keep_files": keep()}),
    )
    .await
    .unwrap();
    assert!(again.summary.contains("nothing to do"), "{}", again.summary);
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_rewind_falls_back_to_a_fresh_basebackup() {
    // Without wal_log_hints (and without data checksums) pg_rewind refuses to run.
    let mut main = PgCluster::start_with(PgOptions {
        extra_conf: vec![("wal_log_hints".into(), "off".into())],
        ..Default::default()
    })
    .unwrap();
    let dr = PgCluster::start_replica_of(&main).unwrap();
    let registry::Reg(reg) = failover(&mut main, &dr).await;

    let out = run(
        &reg,
        "pg_rebuild_replica",
        json!({"cluster": "main", "source": "dr", "keep_files": keep()}),
    )
    .await
    .unwrap();
    assert_eq!(out.data["method"], "pg_basebackup", "{}", out.summary);
    let why = out.data["rewind_error"].as_str().unwrap();
    assert!(why.contains("wal_log_hints"), "{why}");
    assert!(out.summary.contains("pg_rewind failed"), "{}", out.summary);
    assert!(main.is_in_recovery().unwrap());
    assert_eq!(count(&main), 200);
    assert_eq!(
        main.psql(
            "postgres",
            "SELECT count(*) FROM w WHERE id BETWEEN 500 AND 509"
        )
        .unwrap(),
        "0"
    );

    dr.psql(
        "postgres",
        "INSERT INTO w SELECT g, now() FROM generate_series(3001, 3050) g",
    )
    .unwrap();
    let out = run(
        &reg,
        "pg_switchover",
        json!({"primary": "dr", "replica": "main", "keep_files": keep()}),
    )
    .await
    .unwrap();
    assert!(out.summary.contains("main is primary"), "{}", out.summary);
    assert!(!main.is_in_recovery().unwrap());
    assert!(dr.is_in_recovery().unwrap());
    assert_eq!(count(&main), 250);
}

/// An attempt killed while `pg_basebackup` refills the emptied data directory (the process
/// dies, the step is cancelled) leaves this host's files kept beside it: the re-run puts them
/// back, so the rebuilt server keeps its own port and settings instead of the source's.
#[tokio::test(flavor = "multi_thread")]
async fn a_rebuild_interrupted_mid_basebackup_keeps_this_hosts_files() {
    use recovery::step::{ProgressSink, StepContext};
    use tokio_util::sync::CancellationToken;

    let mut main = PgCluster::start().unwrap();
    let dr = PgCluster::start_replica_of(&main).unwrap();
    let local = main.data_dir().join("drbot-local.conf");
    let own = std::fs::read_to_string(&local).unwrap();
    let registry::Reg(reg) = failover(&mut main, &dr).await;

    let params = json!({"cluster": "main", "source": "dr", "keep_files": keep(),
                        "force_basebackup": true});
    let kind = reg.get("pg_rebuild_replica").unwrap();
    let step = kind.build(&params).unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let cancel = CancellationToken::new();
    let watcher = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            while let Some(line) = rx.recv().await {
                println!("  [first attempt] {line}");
                if line.starts_with("pg_basebackup main") {
                    cancel.cancel();
                }
            }
        })
    };
    let ctx = StepContext {
        run_id: 1,
        step_index: 0,
        attempt: 1,
        progress: ProgressSink::new(tx),
        cancel: cancel.clone(),
        ..Default::default()
    };
    let first = step.run(&ctx).await;
    drop(ctx);
    watcher.await.unwrap();
    assert!(
        cancel.is_cancelled(),
        "the first attempt reached pg_basebackup"
    );
    assert!(first.is_err(), "the first attempt was stopped");
    assert_ne!(
        std::fs::read_to_string(&local).ok().as_deref(),
        Some(own.as_str()),
        "the interrupted attempt left the directory without this host's file"
    );

    let out = run(&reg, "pg_rebuild_replica", params).await.unwrap();
    assert!(out.log.contains("drbot-kept.json"), "{}", out.log);
    assert_eq!(std::fs::read_to_string(&local).unwrap(), own);
    assert!(main.is_in_recovery().unwrap());
    assert_eq!(count(&main), 200);
    let kept = main.data_dir().with_file_name(format!(
        "{}.drbot-kept.json",
        main.data_dir().file_name().unwrap().to_string_lossy()
    ));
    assert!(!kept.exists(), "removed once the server streams");
}

/// The replica is a primary already (promoted by hand, say): the step is a no-op only when
/// the old primary cannot take writes (a standby, or fenced read-only when it is not to be
/// rebuilt); a writable old primary, or one that cannot be reached, is refused, never
/// reported done.
#[tokio::test(flavor = "multi_thread")]
async fn switchover_never_reports_done_beside_a_writable_primary() {
    let mut old = PgCluster::start().unwrap();
    let new = PgCluster::start().unwrap();
    let reg = registry(&[("old", &old), ("new", &new)]);
    let no_rebuild = json!({"primary": "old", "replica": "new", "rebuild_old": false});
    let e = run(&reg, "pg_switchover", no_rebuild.clone())
        .await
        .unwrap_err();
    assert!(e.message.contains("two primaries"), "{}", e.message);
    old.psql(
        "postgres",
        "ALTER SYSTEM SET default_transaction_read_only = on",
    )
    .unwrap();
    old.psql("postgres", "SELECT pg_reload_conf()").unwrap();
    let out = run(&reg, "pg_switchover", no_rebuild.clone())
        .await
        .unwrap();
    assert!(
        out.summary.contains("old fenced read-only"),
        "{}",
        out.summary
    );
    assert_eq!(out.data["already_done"], true);
    // To be rebuilt, a fenced old primary that is not a standby is still refused.
    let e = run(
        &reg,
        "pg_switchover",
        json!({"primary": "old", "replica": "new", "keep_files": keep()}),
    )
    .await
    .unwrap_err();
    assert!(e.message.contains("two primaries"), "{}", e.message);
    old.stop().unwrap();
    // Stopped (as a switchover with `fence = "stop"` leaves it): done.
    let out = run(&reg, "pg_switchover", no_rebuild.clone())
        .await
        .unwrap();
    assert!(out.summary.contains("old stopped"), "{}", out.summary);
    // To be rebuilt, a stopped old primary is left to pg_rebuild_replica, never guessed at:
    // one primary, so done, and the summary says the rebuild is still to do.
    let out = run(
        &reg,
        "pg_switchover",
        json!({"primary": "old", "replica": "new", "keep_files": keep()}),
    )
    .await
    .unwrap();
    assert!(
        out.summary.contains("old stopped, not rebuilt")
            && out.summary.contains("pg_rebuild_replica"),
        "{}",
        out.summary
    );
    assert!(old.psql("postgres", "SELECT 1").is_err(), "left stopped");
    // Without its data_dir a stopped server cannot be told from an unreachable one.
    let mut res = recovery::resources::Resources::default();
    res.postgres.insert(
        "old".into(),
        recovery::resources::PgClusterDef {
            data_dir: None,
            ..def(&old)
        },
    );
    res.postgres.insert("new".into(), def(&new));
    let reg = recovery::registry::Registry::with_resources(std::sync::Arc::new(res));
    let e = run(&reg, "pg_switchover", no_rebuild).await.unwrap_err();
    assert!(e.message.contains("cannot be reached"), "{}", e.message);
}

/// The default switchover stops the old primary cleanly (its shutdown waits until the replica
/// has all its WAL), so even a client that turns `default_transaction_read_only` off again after
/// being cut off loses no acknowledged write; a soft read-only fence would let it write on until
/// the rebuild, and those writes would be rewound away.
#[tokio::test(flavor = "multi_thread")]
async fn switchover_stops_the_old_primary_so_an_insistent_client_loses_nothing() {
    let main = PgCluster::start().unwrap();
    let dr = PgCluster::start_replica_of(&main).unwrap();
    create_table(&main);
    dr.wait_for_replay(&main, REPLAY).unwrap();
    let reg = registry(&[("main", &main), ("dr", &dr)]);
    let writer = Writer::start_insistent(main.url("postgres"), 1).await;
    writer.wait_for(200, &main.url("postgres")).await;
    let out = run(
        &reg,
        "pg_switchover",
        json!({"primary": "main", "replica": "dr", "keep_files": keep(), "catch_up_seconds": 60}),
    )
    .await
    .unwrap();
    // The writer keeps trying against the old primary, now a standby.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (acked, err) = writer.finish().await;
    assert!(err.is_some(), "the stop should cut the writer off");
    assert!(acked.len() >= 200, "{}", acked.len());
    assert_eq!(out.data["fence"]["mode"], "stop", "{}", out.data);
    assert_eq!(out.data["promote"]["lsn_gap_bytes"], 0, "{}", out.data);
    assert!(
        out.summary
            .starts_with("switched over: dr is primary (gap 0 B"),
        "{}",
        out.summary
    );
    assert!(!dr.is_in_recovery().unwrap());
    assert!(main.is_in_recovery().unwrap());
    let lost = lost(&acked, &dr);
    assert!(lost.is_empty(), "writes lost in the switchover: {lost:?}");
}

/// A rebuild that fails after the promotion (here pg_ctl cannot open its log file) does not fail
/// the switchover: the new primary takes writes, the old one stays stopped, and the summary
/// says the rebuild FAILED. Run again, the step is done, and says the rebuild is left to do.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_rebuild_does_not_undo_the_switchover() {
    let main = PgCluster::start().unwrap();
    let dr = PgCluster::start_replica_of(&main).unwrap();
    create_table(&main);
    dr.wait_for_replay(&main, REPLAY).unwrap();
    let reg = registry(&[("main", &main), ("dr", &dr)]);
    let params = json!({"primary": "main", "replica": "dr", "keep_files": keep(),
        "catch_up_seconds": 60, "log_file": "/nonexistent-drbot-dir/pg_ctl.log"});
    let out = run(&reg, "pg_switchover", params.clone()).await.unwrap();
    assert!(
        out.summary
            .starts_with("switched over: dr is primary (gap 0 B")
            && out.summary.contains("rebuilding main FAILED")
            && out.summary.contains("pg_rebuild_replica"),
        "{}",
        out.summary
    );
    assert!(out.data["rebuild_error"].is_string(), "{}", out.data);
    assert!(!dr.is_in_recovery().unwrap());
    dr.psql("postgres", "INSERT INTO w VALUES (-1, now())")
        .unwrap();
    assert!(
        main.psql("postgres", "SELECT 1").is_err(),
        "main stays stopped"
    );
    let again = run(&reg, "pg_switchover", params).await.unwrap();
    assert!(
        again.summary.contains("main stopped, not rebuilt"),
        "{}",
        again.summary
    );
}

/// A primary found stopped uncleanly (crashed) may not have sent its last WAL: the switchover
/// refuses and promotes nothing (that is a failover, `pg_promote`, with its RPO evidence).
#[tokio::test(flavor = "multi_thread")]
async fn switchover_refuses_a_primary_that_crashed() {
    let mut main = PgCluster::start().unwrap();
    let dr = PgCluster::start_replica_of(&main).unwrap();
    create_table(&main);
    dr.wait_for_replay(&main, REPLAY).unwrap();
    main.kill().unwrap();
    let reg = registry(&[("main", &main), ("dr", &dr)]);
    let e = run(
        &reg,
        "pg_switchover",
        json!({"primary": "main", "replica": "dr", "keep_files": keep()}),
    )
    .await
    .unwrap_err();
    assert!(e.message.contains("not shut down cleanly"), "{}", e.message);
    assert!(e.message.contains("Nothing was promoted"), "{}", e.message);
    assert!(dr.is_in_recovery().unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn rebuild_and_switchover_params_are_checked() {
    let main = PgCluster::start().unwrap();
    let reg = registry(&[("main", &main)]);
    let kind = reg.get("pg_rebuild_replica").unwrap();
    assert!(
        kind.validate(&json!({"cluster": "main", "source": "main"}))
            .unwrap_err()
            .contains("must differ")
    );
    assert!(
        kind.validate(&json!({"cluster": "main", "source": "x"}))
            .unwrap_err()
            .contains("unknown PostgreSQL cluster `x`")
    );
    assert!(
        kind.validate(&json!({"cluster": "{primary}", "source": "{secondary}"}))
            .is_ok()
    );
    assert!(
        kind.validate(
            &json!({"cluster": "main", "source": "{secondary}", "keep_files": ["../etc/passwd"]})
        )
        .is_err()
    );
    assert!(
        kind.validate(&json!({"cluster": "main", "source": "{secondary}", "bogus": 1}))
            .unwrap_err()
            .contains("bogus")
    );
    let sw = reg.get("pg_switchover").unwrap();
    assert!(
        sw.validate(&json!({"primary": "{secondary}", "replica": "{primary}"}))
            .is_ok()
    );
    assert!(
        sw.validate(&json!({"primary": "main", "replica": "main"}))
            .is_err()
    );
    // A cluster without data_dir cannot be rebuilt.
    let mut res = recovery::resources::Resources::default();
    let mut d = def(&main);
    d.data_dir = None;
    res.postgres.insert("remote".into(), d);
    res.postgres.insert("main".into(), def(&main));
    let reg = recovery::registry::Registry::with_resources(std::sync::Arc::new(res));
    let e = reg
        .get("pg_rebuild_replica")
        .unwrap()
        .validate(&json!({"cluster": "remote", "source": "main"}))
        .unwrap_err();
    assert!(e.contains("needs data_dir"), "{e}");
    let e = reg
        .get("pg_fence")
        .unwrap()
        .validate(&json!({"cluster": "remote", "mode": "stop"}))
        .unwrap_err();
    assert!(e.contains("needs data_dir"), "{e}");
}
