//! `wal_archive_check` against a real archiving PostgreSQL 15 cluster: a fresh archive passes
//! (and agrees with `pg_stat_archiver`), a stale one fails on `max_age`, an empty or missing
//! directory fails, and a failing `archive_command` is reported.

mod pitr_support;

use std::time::{Duration, Instant};

use pitr_support::{run_step, s, with_cluster};
use recovery::{resources::Resources, testkit::pg::PgCluster};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn fresh_archive_passes_and_stale_or_empty_fails() {
    let pg = PgCluster::start().unwrap();
    let segment = pg.archive_current_wal(Duration::from_secs(30)).unwrap();
    let res = with_cluster("main", &pg);
    let archive = s(pg.archive_dir());

    let out = run_step(
        &res,
        "wal_archive_check",
        json!({"archive": archive, "max_age": "15m", "cluster": "main"}),
    )
    .await
    .unwrap();
    assert_eq!(out.data["newest_segment"], segment, "{:#}", out.data);
    assert!(out.data["newest_age_s"].as_f64().unwrap() < 60.0);
    assert_eq!(out.data["cluster"]["last_archived_wal"], segment);
    assert_eq!(out.data["cluster"]["failed_count"], 0);
    assert!(out.summary.contains(&segment), "{}", out.summary);

    // switch_wal: what was written since is switched out and archived first.
    pg.psql(
        "postgres",
        "CREATE TABLE t (v int); INSERT INTO t VALUES (1)",
    )
    .unwrap();
    let out = run_step(
        &res,
        "wal_archive_check",
        json!({"archive": archive, "cluster": "main", "switch_wal": true}),
    )
    .await
    .unwrap();
    let switched = out.data["switched_segment"].as_str().unwrap().to_string();
    assert!(switched > segment, "{switched} after {segment}");
    assert!(pg.archive_dir().join(&switched).is_file());
    assert_eq!(out.data["newest_segment"], switched.as_str());

    // Without a cluster, with the default max_age.
    let out = run_step(&res, "wal_archive_check", json!({"archive": archive}))
        .await
        .unwrap();
    assert_eq!(out.data["max_age_s"], 900);

    // The same archive is too old for a tiny max_age.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let err = run_step(
        &res,
        "wal_archive_check",
        json!({"archive": archive, "max_age": "1s"}),
    )
    .await
    .unwrap_err();
    assert!(
        err.message.contains(&switched) && err.message.contains("more than max_age 1s"),
        "{}",
        err.message
    );

    // An empty directory has no segments.
    let empty = tempfile::tempdir().unwrap();
    let err = run_step(
        &Resources::default(),
        "wal_archive_check",
        json!({"archive": s(empty.path())}),
    )
    .await
    .unwrap_err();
    assert!(
        err.message.contains("holds no WAL segments"),
        "{}",
        err.message
    );

    // A directory that is not there.
    let err = run_step(
        &Resources::default(),
        "wal_archive_check",
        json!({"archive": "/nonexistent/drbot-archive"}),
    )
    .await
    .unwrap_err();
    assert!(
        err.message
            .contains("cannot read the WAL archive /nonexistent/drbot-archive"),
        "{}",
        err.message
    );

    // An archive directory the cluster does not write to.
    let other = tempfile::tempdir().unwrap();
    std::fs::copy(
        pg.archive_dir().join(&segment),
        other.path().join("0000000100000000000000F0"),
    )
    .unwrap();
    let err = run_step(
        &res,
        "wal_archive_check",
        json!({"archive": s(other.path()), "cluster": "main"}),
    )
    .await
    .unwrap_err();
    assert!(
        err.message
            .contains("does archive_command write to this directory"),
        "{}",
        err.message
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_archive_command_is_reported() {
    let pg = PgCluster::start().unwrap();
    pg.archive_current_wal(Duration::from_secs(30)).unwrap();
    pg.append_conf(&[("archive_command", "false")]).unwrap();
    pg.psql("postgres", "SELECT pg_reload_conf()").unwrap();
    pg.psql("postgres", "CREATE TABLE t (v int)").unwrap();
    // New WAL to archive until the archiver, once it has read the new command, fails on it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while pg
        .psql("postgres", "SELECT failed_count FROM pg_stat_archiver")
        .unwrap()
        == "0"
    {
        assert!(Instant::now() < deadline, "archiving never failed");
        pg.psql(
            "postgres",
            "INSERT INTO t VALUES (1); SELECT pg_switch_wal()",
        )
        .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let res = with_cluster("main", &pg);
    let err = run_step(
        &res,
        "wal_archive_check",
        json!({"archive": s(pg.archive_dir()), "cluster": "main"}),
    )
    .await
    .unwrap_err();
    assert!(
        err.message.contains("archiving is failing on 127.0.0.1:"),
        "{}",
        err.message
    );
}
