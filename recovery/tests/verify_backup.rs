//! `backup_create`, `backup_fetch` and `verify_backup` on a real PostgreSQL 15 cluster, with
//! backups in a local directory and in a moto S3 bucket: a populated database dumped and
//! verified (counts match, scratch database gone); truncated gzip, a missing table, failed
//! minimums and smoke checks, and checksum mismatches all fail clearly with the scratch
//! database gone; cancel and timeout mid-restore drop it too; custom format with `-j 2`; a hot
//! standby is refused before anything is created. Also: the built-in `verify-backup` runbook
//! parses and validates.

mod backup_support;

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use recovery::{
    backup::{self, BackupKind, Manifest},
    registry::Registry,
    resources::{BackupStoreDef, PgClusterDef, Resources},
    runbook::RunbookDef,
    secret::Secret,
    step::{ProgressSink, StepContext, StepError, StepOutput},
    testkit::{pg::PgCluster, shared::fresh_database},
};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A database on the shared cluster, seeded with the seed plan's three tables.
struct Source {
    url: String,
}

impl Source {
    async fn new(
        prefix: &str,
        projects: i64,
        payloads: i64,
        events: i64,
        with_events: bool,
    ) -> Source {
        let url = fresh_database(prefix).expect("fresh database");
        let mut conn = PgConnection::connect(&url).await.unwrap();
        let mut sql = format!(
            "CREATE TABLE projects (id bigint PRIMARY KEY, name text NOT NULL);
             CREATE TABLE project_payloads (id bigint PRIMARY KEY,
                 project_id bigint NOT NULL REFERENCES projects, body text NOT NULL);
             INSERT INTO projects SELECT g, 'project ' || g FROM generate_series(1, {projects}) g;
             INSERT INTO project_payloads
                 SELECT g, 1 + g % {projects}, repeat(md5(g::text), 3) FROM generate_series(1, {payloads}) g;"
        );
        if with_events {
            sql.push_str(&format!(
                "CREATE TABLE project_events (id bigint PRIMARY KEY, project_id bigint NOT NULL,
                     kind text NOT NULL, at timestamptz NOT NULL DEFAULT now());
                 INSERT INTO project_events (id, project_id, kind)
                     SELECT g, 1 + g % {projects}, 'event-' || (g % 7) FROM generate_series(1, {events}) g;"
            ));
        }
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        Source { url }
    }

    /// The URL of the cluster's `postgres` database.
    fn admin_url(&self) -> String {
        let (base, _) = self.url.rsplit_once('/').unwrap();
        format!("{base}/postgres")
    }

    fn cluster_def(&self) -> PgClusterDef {
        PgClusterDef {
            url: Secret::new(self.url.clone()),
            bin_dir: Some(PgCluster::bin_dir().unwrap()),
            data_dir: None,
            os_user: None,
        }
    }

    /// Scratch databases left with this prefix.
    async fn leftovers(&self, prefix: &str) -> Vec<String> {
        let mut conn = PgConnection::connect(&self.admin_url()).await.unwrap();
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT datname::text FROM pg_database WHERE datname LIKE $1 || '\\_test\\_%'",
        )
        .bind(prefix)
        .fetch_all(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();
        names
    }

    async fn wait_no_leftovers(&self, prefix: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = self.leftovers(prefix).await;
            if left.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "scratch databases left behind: {left:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn registry(source: &Source, store: &BackupStoreDef) -> Registry {
    let mut res = Resources::default();
    res.postgres.insert("dr".into(), source.cluster_def());
    res.backups.insert("default".into(), store.clone());
    Registry::with_resources(Arc::new(res))
}

fn new_ctx() -> (
    StepContext,
    mpsc::UnboundedReceiver<String>,
    CancellationToken,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let cancel = CancellationToken::new();
    (
        StepContext {
            run_id: 1,
            step_index: 0,
            attempt: 1,
            vars: BTreeMap::new(),
            progress: ProgressSink::new(tx),
            cancel: cancel.clone(),
            ..Default::default()
        },
        rx,
        cancel,
    )
}

async fn run(reg: &Registry, kind: &str, params: Value) -> Result<StepOutput, StepError> {
    let kind_ = reg
        .get(kind)
        .unwrap_or_else(|| panic!("{kind} is not registered"));
    kind_
        .validate(&params)
        .unwrap_or_else(|e| panic!("{kind} params: {e}"));
    let step = kind_.build(&params).unwrap();
    let (ctx, _rx, _cancel) = new_ctx();
    step.run(&ctx).await
}

fn lines(rx: &mut mpsc::UnboundedReceiver<String>) -> Vec<String> {
    let mut out = Vec::new();
    while let Ok(l) = rx.try_recv() {
        out.push(l);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn plain_dump_round_trip_on_local_and_s3() {
    let (defs, _dir) = backup_support::stores();
    let source = Source::new("vb_plain", 500, 3000, 4000, true).await;
    let psql = PgCluster::bin("psql").unwrap();
    for (label, store) in defs {
        let reg = registry(&source, &store);
        let created = run(&reg, "backup_create", json!({ "cluster": "dr" }))
            .await
            .expect(label);
        let name = created.data["name"].as_str().unwrap().to_string();
        assert_eq!(created.data["kind"], "sql_gzip");
        assert_eq!(
            created.data["row_counts"],
            json!({ "projects": 500, "project_payloads": 3000, "project_events": 4000 })
        );
        assert!(
            created.summary.contains("projects 500"),
            "{}",
            created.summary
        );
        assert!(!created.data["source"].as_str().unwrap().contains('@'));

        let prefix = format!("vbplain{label}");
        let params = json!({
            "cluster": "dr",
            "backup": "latest",
            "prefix": prefix,
            "min_rows": { "projects": 100 },
            "smoke_sql": [
                { "label": "every payload has a project",
                  "sql": "SELECT NOT EXISTS (SELECT 1 FROM project_payloads p LEFT JOIN projects j ON j.id = p.project_id WHERE j.id IS NULL)" },
            ],
            "smoke_command": {
                "command": "sh",
                "args": ["-c", "\"$PSQL\" \"$DRBOT_SCRATCH_DB_URL\" -XAtc 'SELECT count(*) FROM project_events' | grep -qx 4000"],
                "env": { "PSQL": psql.to_str().unwrap() },
            },
        });
        // A scratch database a killed verification left behind days ago is dropped; a recent
        // one (maybe another verification's, running) is left alone.
        let old = format!("{prefix}_test_20000101000000");
        let recent = format!(
            "{prefix}_test_{}",
            (chrono::Utc::now() - chrono::TimeDelta::hours(1)).format("%Y%m%d%H%M%S")
        );
        let mut admin = PgConnection::connect(&source.admin_url()).await.unwrap();
        for db in [&old, &recent] {
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{db}\"")))
                .execute(&mut admin)
                .await
                .unwrap();
        }
        let kind = reg.get("verify_backup").unwrap();
        kind.validate(&params).unwrap();
        let step = kind.build(&params).unwrap();
        let (ctx, mut rx, _cancel) = new_ctx();
        let out = step
            .run(&ctx)
            .await
            .unwrap_or_else(|e| panic!("{label}: {e}\n{}", e.log));
        assert_eq!(
            source.leftovers(&prefix).await,
            std::slice::from_ref(&recent),
            "{label}"
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE \"{recent}\"")))
            .execute(&mut admin)
            .await
            .unwrap();
        admin.close().await.unwrap();
        let d = &out.data;
        assert_eq!(d["passed"], true, "{d}");
        assert_eq!(d["backup"], name.as_str());
        assert_eq!(d["scratch_dropped"], true);
        for (t, n) in [
            ("projects", 500),
            ("project_payloads", 3000),
            ("project_events", 4000),
        ] {
            assert_eq!(
                d["tables"][t],
                json!({ "expected": n, "min": if t == "projects" { json!(100) } else { Value::Null }, "got": n, "ok": true }),
                "{t}"
            );
        }
        assert_eq!(d["smoke"].as_array().unwrap().len(), 2, "{d}");
        assert!(
            d["smoke"]
                .as_array()
                .unwrap()
                .iter()
                .all(|s| s["ok"] == true),
            "{d}"
        );
        assert!(d["bytes"].as_u64().unwrap() > 1000);
        assert!(d["sql_bytes"].as_u64().unwrap() > d["bytes"].as_u64().unwrap());
        assert!(d["throughput_mb_s"].as_f64().unwrap() > 0.0);
        assert!(
            out.summary.contains(&format!("backup {name} verified")),
            "{}",
            out.summary
        );
        assert!(
            out.summary.contains("project_events 4000"),
            "{}",
            out.summary
        );
        let progress = lines(&mut rx);
        assert!(
            progress
                .iter()
                .any(|l| l.starts_with("created scratch database vbplain")),
            "{progress:?}"
        );
        assert!(
            progress.contains(&format!(
                "dropped scratch database {old}, left behind by a verification that died"
            )),
            "{progress:?}"
        );
        assert!(
            progress
                .iter()
                .any(|l| l.starts_with("dropped scratch database")),
            "{progress:?}"
        );
        assert!(source.leftovers(&prefix).await.is_empty());

        // backup_fetch downloads it, checked, next to a copy of the manifest.
        let dest = tempfile::tempdir().unwrap();
        let fetched = run(
            &reg,
            "backup_fetch",
            json!({ "backup": name, "kind": "sql_gzip", "dest": dest.path() }),
        )
        .await
        .expect(label);
        let file = dest.path().join(&name).join("dump.sql.gz");
        let bytes = std::fs::read(&file).unwrap();
        assert_eq!(
            fetched.data["files"][0]["sha256"],
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes))
        );
        let copy: Manifest = serde_json::from_slice(
            &std::fs::read(dest.path().join(&name).join("manifest.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(copy.name, name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn custom_format_with_parallel_restore() {
    let (defs, _dir) = backup_support::stores();
    let source = Source::new("vb_custom", 300, 5000, 2000, true).await;
    // Local: pg_restore reads the stored file in place; S3: downloaded to a temp file first.
    for (label, store) in &defs {
        let reg = registry(&source, store);
        // A plain backup too, newer than the custom one: kind = custom must skip it.
        let custom = run(
            &reg,
            "backup_create",
            json!({ "cluster": "dr", "format": "custom" }),
        )
        .await
        .unwrap();
        run(&reg, "backup_create", json!({ "cluster": "dr" }))
            .await
            .unwrap();
        assert_eq!(custom.data["kind"], "custom");
        let step = reg
            .get("verify_backup")
            .unwrap()
            .build(&json!({ "cluster": "dr", "kind": "custom", "jobs": 2, "prefix": "vbcustom" }))
            .unwrap();
        let (ctx, mut rx, _cancel) = new_ctx();
        let out = step
            .run(&ctx)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", e.log));
        assert_eq!(out.data["passed"], true);
        assert_eq!(out.data["kind"], "custom");
        assert_eq!(out.data["backup"], custom.data["name"]);
        assert_eq!(out.data["tables"]["project_payloads"]["got"], 5000);
        assert!(out.data["sql_bytes"].is_null());
        let progress = lines(&mut rx);
        assert!(
            progress.iter().any(|l| l.contains("pg_restore -j 2")),
            "{progress:?}"
        );
        assert!(source.leftovers("vbcustom").await.is_empty());

        // One byte flipped in the stored dump: caught by the checksum before pg_restore runs.
        let st = backup::open(store).await.unwrap();
        let m = st
            .resolve(custom.data["name"].as_str().unwrap(), None)
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d");
        st.fetch_to(&m, "dump.pgdump", &path).await.unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        st.put_file(&m.name, "dump.pgdump", &bytes[..])
            .await
            .unwrap();
        let err = run(
            &reg,
            "verify_backup",
            json!({ "cluster": "dr", "backup": m.name, "prefix": "vbcustom" }),
        )
        .await
        .unwrap_err();
        assert!(
            err.message.contains("checksum mismatch for"),
            "{}",
            err.message
        );
        assert!(!err.retryable);
        assert!(source.leftovers("vbcustom").await.is_empty(), "{label}");
    }
}

/// Stores `bytes` as a new sql_gzip backup with the given row counts.
async fn put_backup(store: &BackupStoreDef, name: &str, bytes: &[u8], counts: &[(&str, i64)]) {
    let st = backup::open(store).await.unwrap();
    let file = st.put_file(name, "dump.sql.gz", bytes).await.unwrap();
    let counts = counts.iter().map(|(t, n)| (t.to_string(), *n)).collect();
    let m = Manifest::new(
        name,
        BackupKind::SqlGzip,
        chrono::Utc::now(),
        "test",
        vec![file],
        counts,
    );
    st.put_manifest(&m).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_backups_fail_clearly_and_leave_no_scratch_database() {
    let (defs, _dir) = backup_support::stores();
    let (_, store) = &defs[0];
    let source = Source::new("vb_bad", 200, 4000, 1000, true).await;
    let reg = registry(&source, store);
    let good = run(&reg, "backup_create", json!({ "cluster": "dr" }))
        .await
        .unwrap();
    let name = good.data["name"].as_str().unwrap().to_string();
    let st = backup::open(store).await.unwrap();
    let m = st.resolve(&name, None).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.gz");
    st.fetch_to(&m, "dump.sql.gz", &path).await.unwrap();
    let gz = std::fs::read(&path).unwrap();
    let counts = [
        ("projects", 200),
        ("project_payloads", 4000),
        ("project_events", 1000),
    ];
    let verify = |backup: &str, extra: Value| {
        let mut p = json!({ "cluster": "dr", "backup": backup, "prefix": "vbbad" });
        p.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        p
    };

    // Truncated gzip.
    put_backup(store, "truncated", &gz[..gz.len() / 2], &counts).await;
    let err = run(&reg, "verify_backup", verify("truncated", json!({})))
        .await
        .unwrap_err();
    assert!(
        err.message
            .contains("truncated/dump.sql.gz is not a complete gzip stream (corrupt or truncated)"),
        "{}",
        err.message
    );
    assert!(!err.retryable);
    assert!(source.leftovers("vbbad").await.is_empty());

    // The manifest's checksum does not match the (intact) bytes: restored, then refused.
    let file = st.put_file("badsum", "dump.sql.gz", &gz[..]).await.unwrap();
    let mut bad = Manifest::new(
        "badsum",
        BackupKind::SqlGzip,
        chrono::Utc::now(),
        "t",
        vec![file],
        BTreeMap::new(),
    );
    bad.files[0].sha256 = "00".repeat(32);
    st.put_manifest(&bad).await.unwrap();
    let err = run(&reg, "verify_backup", verify("badsum", json!({})))
        .await
        .unwrap_err();
    assert!(
        err.message
            .starts_with("checksum mismatch for badsum/dump.sql.gz: the manifest says sha256 0000"),
        "{}",
        err.message
    );
    assert!(source.leftovers("vbbad").await.is_empty());

    // A dump that lost a table the manifest counted.
    let two = Source::new("vb_two", 10, 20, 0, false).await;
    let reg_two = registry(&two, store);
    let partial = run(&reg_two, "backup_create", json!({ "cluster": "dr" }))
        .await
        .unwrap();
    assert_eq!(
        partial.data["row_counts"],
        json!({ "projects": 10, "project_payloads": 20 })
    );
    let pm = st
        .resolve(partial.data["name"].as_str().unwrap(), None)
        .await
        .unwrap();
    st.fetch_to(&pm, "dump.sql.gz", &path).await.unwrap();
    put_backup(
        store,
        "lost-table",
        &std::fs::read(&path).unwrap(),
        &[
            ("projects", 10),
            ("project_payloads", 20),
            ("project_events", 5),
        ],
    )
    .await;
    let err = run(&reg, "verify_backup", verify("lost-table", json!({})))
        .await
        .unwrap_err();
    assert_eq!(
        err.message,
        "backup lost-table failed verification: table project_events is missing from the restored database (the source had 5 rows)"
    );
    assert!(err.log.contains("\"passed\": false"), "{}", err.log);
    assert!(source.leftovers("vbbad").await.is_empty());

    // The source never had the table, but it is a configured table: still missing.
    let err = run(
        &reg_two,
        "verify_backup",
        json!({ "cluster": "dr", "backup": partial.data["name"], "prefix": "vbbad" }),
    )
    .await
    .unwrap_err();
    assert!(
        err.message
            .ends_with("table project_events is missing from the restored database"),
        "{}",
        err.message
    );
    assert!(two.leftovers("vbbad").await.is_empty());

    // Counts that differ from the manifest, a minimum not met, a failing smoke check and
    // smoke command: every problem listed.
    put_backup(
        store,
        "wrong-counts",
        &gz,
        &[
            ("projects", 201),
            ("project_payloads", 4000),
            ("project_events", 1000),
        ],
    )
    .await;
    let err = run(
        &reg,
        "verify_backup",
        verify(
            "wrong-counts",
            json!({
                "min_rows": { "project_events": 5000 },
                "smoke_sql": [{ "label": "no events", "sql": "SELECT count(*) = 0 FROM project_events" }],
                "smoke_command": { "command": "sh", "args": ["-c", "echo smoke broke >&2; exit 3"] },
            }),
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.message,
        "backup wrong-counts failed verification: table project_events has 1000 rows, fewer than the minimum 5000; \
         table projects has 200 rows, the manifest says 201; smoke check `no events` failed: returned Some(false); \
         smoke command failed: `sh -c echo smoke broke >&2; exit 3` exited with status 3: smoke broke"
    );
    assert!(source.leftovers("vbbad").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_or_timeout_mid_restore_drops_the_scratch_database() {
    let (defs, _dir) = backup_support::stores();
    let (_, store) = &defs[0];
    // Big enough that the restore takes seconds.
    let source = Source::new("vb_cancel", 1000, 400_000, 200_000, true).await;
    let reg = registry(&source, store);
    run(
        &reg,
        "backup_create",
        json!({ "cluster": "dr", "gzip_level": 1 }),
    )
    .await
    .unwrap();

    // Cancel token fired while psql is restoring.
    let step = reg
        .get("verify_backup")
        .unwrap()
        .build(&json!({ "cluster": "dr", "prefix": "vbcancel" }))
        .unwrap();
    let (ctx, _rx, cancel) = new_ctx();
    let task = tokio::spawn(async move { step.run(&ctx).await });
    wait_for_restore(&source, "vbcancel").await;
    cancel.cancel();
    let err = task.await.unwrap().unwrap_err();
    assert!(
        err.message.starts_with("cancelled while restoring"),
        "{}",
        err.message
    );
    assert!(err.retryable);
    assert!(
        source.leftovers("vbcancel").await.is_empty(),
        "dropped before returning"
    );

    // The step's future dropped mid-restore (an engine timeout): the guard drops it.
    let step = reg
        .get("verify_backup")
        .unwrap()
        .build(&json!({ "cluster": "dr", "prefix": "vbtimeout" }))
        .unwrap();
    let (ctx, _rx, _cancel) = new_ctx();
    let run = async move { step.run(&ctx).await };
    let timed = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::select! {
            _ = run => panic!("the restore finished before it could be interrupted"),
            _ = wait_for_restore(&source, "vbtimeout") => {}
        }
    })
    .await;
    assert!(timed.is_ok());
    source.wait_no_leftovers("vbtimeout").await;
}

/// The `[postgres.<name>]` entry of a testkit cluster (its `postgres` database).
fn testkit_def(c: &PgCluster) -> PgClusterDef {
    PgClusterDef {
        url: Secret::new(c.url("postgres")),
        bin_dir: Some(PgCluster::bin_dir().unwrap()),
        data_dir: None,
        os_user: None,
    }
}

/// In the seed's active-passive layout the DR cluster is a hot standby: `verify_backup` on it
/// fails at once, fatally, saying what to do, and creates nothing; on a primary the same
/// backup verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hot_standby_is_refused_before_anything_is_created() {
    let primary = PgCluster::start().unwrap();
    primary
        .psql(
            "postgres",
            "CREATE TABLE projects (id bigint PRIMARY KEY);
             CREATE TABLE project_payloads (id bigint PRIMARY KEY);
             CREATE TABLE project_events (id bigint PRIMARY KEY);
             INSERT INTO projects SELECT g FROM generate_series(1, 20) g;
             INSERT INTO project_payloads SELECT g FROM generate_series(1, 30) g;
             INSERT INTO project_events SELECT g FROM generate_series(1, 40) g;",
        )
        .unwrap();
    let replica = PgCluster::start_replica_of(&primary).unwrap();
    replica
        .wait_for_replay(&primary, Duration::from_secs(30))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut res = Resources::default();
    res.postgres.insert("main".into(), testkit_def(&primary));
    res.postgres
        .insert("us-west-2".into(), testkit_def(&replica));
    res.backups.insert(
        "default".into(),
        BackupStoreDef::Local {
            path: dir.path().join("backups"),
        },
    );
    let reg = Registry::with_resources(Arc::new(res));
    run(&reg, "backup_create", json!({ "cluster": "main" }))
        .await
        .unwrap();

    let started = Instant::now();
    let err = run(
        &reg,
        "verify_backup",
        json!({ "cluster": "us-west-2", "prefix": "vbstandby" }),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.message,
        format!(
            "cluster `us-west-2` (127.0.0.1:{}/postgres) is a hot standby (read-only): restore \
             tests need a cluster that takes writes; point verify_backup's `cluster` at one \
             (e.g. a [postgres.verify] cluster)",
            replica.port()
        )
    );
    assert!(!err.retryable, "a standby stays one: no retry");
    assert!(started.elapsed() < Duration::from_secs(20));
    let scratch = "SELECT count(*) FROM pg_database WHERE datname LIKE 'vbstandby%'";
    assert_eq!(primary.psql("postgres", scratch).unwrap(), "0");
    assert_eq!(replica.psql("postgres", scratch).unwrap(), "0");

    // The backup itself is fine: on the primary it verifies.
    let out = run(
        &reg,
        "verify_backup",
        json!({ "cluster": "main", "prefix": "vbstandby" }),
    )
    .await
    .unwrap();
    assert!(out.summary.contains("projects 20"), "{}", out.summary);
    assert_eq!(primary.psql("postgres", scratch).unwrap(), "0");
}

/// Waits until a scratch database with `prefix` exists and rows are arriving in it.
async fn wait_for_restore(source: &Source, prefix: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            Instant::now() < deadline,
            "no restore into a {prefix} scratch database started"
        );
        if let Some(db) = source.leftovers(prefix).await.first() {
            let url = format!("{}/{db}", source.url.rsplit_once('/').unwrap().0);
            if let Ok(mut conn) = PgConnection::connect(&url).await {
                let rows: Option<i64> =
                    sqlx::query_scalar("SELECT sum(n_tup_ins)::bigint FROM pg_stat_user_tables")
                        .fetch_one(&mut conn)
                        .await
                        .ok()
                        .flatten();
                let _ = conn.close().await;
                if rows.unwrap_or(0) > 0 {
                    return;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn parameters_are_validated() {
    let mut res = Resources::default();
    res.postgres.insert(
        "dr".into(),
        PgClusterDef {
            url: Secret::new("postgres://u:pw@h:5432/app"),
            bin_dir: None,
            data_dir: None,
            os_user: None,
        },
    );
    res.backups.insert(
        "default".into(),
        BackupStoreDef::Local {
            path: "/tmp/x".into(),
        },
    );
    let reg = Registry::with_resources(Arc::new(res));
    let v = |kind: &str, p: Value| reg.get(kind).unwrap().validate(&p);
    assert!(v("verify_backup", json!({ "cluster": "dr" })).is_ok());
    assert!(
        v(
            "verify_backup",
            json!({ "cluster": "{secondary}", "backup": "{backup}" })
        )
        .is_ok()
    );
    assert_eq!(
        v("verify_backup", json!({ "cluster": "west" })).unwrap_err(),
        "cluster: unknown PostgreSQL cluster `west` (known: dr)"
    );
    assert!(
        v("verify_backup", json!({ "cluster": "dr", "store": "s3" }))
            .unwrap_err()
            .contains("unknown backup store `s3`")
    );
    assert!(
        v(
            "verify_backup",
            json!({ "cluster": "dr", "kind": "base_tar" })
        )
        .unwrap_err()
        .starts_with("kind:")
    );
    assert!(
        v(
            "verify_backup",
            json!({ "cluster": "dr", "prefix": "Bad-Prefix" })
        )
        .unwrap_err()
        .starts_with("prefix:")
    );
    assert!(
        v("verify_backup", json!({ "cluster": "dr", "jobs": 0 }))
            .unwrap_err()
            .starts_with("jobs:")
    );
    assert!(
        v(
            "verify_backup",
            json!({ "cluster": "dr", "tables": ["x; drop"] })
        )
        .unwrap_err()
        .starts_with("tables:")
    );
    assert!(
        v(
            "verify_backup",
            json!({ "cluster": "dr", "backup": "../x" })
        )
        .unwrap_err()
        .starts_with("backup:")
    );
    assert!(
        v(
            "verify_backup",
            json!({ "cluster": "dr", "smoke_sql": [{ "label": "", "sql": "select true" }] })
        )
        .is_err()
    );
    assert!(
        v(
            "verify_backup",
            json!({ "cluster": "dr", "smoke_command": { "command": "x", "timeout": "soon" } })
        )
        .is_err()
    );
    assert!(
        v("verify_backup", json!({ "cluster": "dr", "bogus": 1 }))
            .unwrap_err()
            .contains("unknown field `bogus`")
    );
    assert!(
        v(
            "backup_create",
            json!({ "cluster": "dr", "format": "custom" })
        )
        .is_ok()
    );
    assert!(
        v(
            "backup_create",
            json!({ "cluster": "dr", "format": "base_tar" })
        )
        .unwrap_err()
        .starts_with("format:")
    );
    assert!(
        v(
            "backup_create",
            json!({ "cluster": "dr", "gzip_level": 10 })
        )
        .unwrap_err()
        .starts_with("gzip_level:")
    );
    assert!(
        v(
            "backup_fetch",
            json!({ "dest": "/tmp/x", "kind": "base_tar" })
        )
        .is_ok()
    );
    assert!(
        v("backup_fetch", json!({ "dest": "/tmp/x", "kind": "zip" }))
            .unwrap_err()
            .starts_with("kind:")
    );
    assert!(
        v("backup_fetch", json!({}))
            .unwrap_err()
            .contains("missing field `dest`")
    );
    for kind in ["verify_backup", "backup_create", "backup_fetch"] {
        let t = reg.get(kind).unwrap().traits();
        assert!(!t.destructive && t.idempotent && !t.overridable, "{kind}");
    }
}

#[test]
fn builtin_verify_backup_runbook_parses_and_validates() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/runbooks/verify-backup.toml"
    ))
    .unwrap();
    let rb: RunbookDef = toml::from_str(&text).unwrap();
    assert_eq!(rb.command, "verify-backup");
    assert_eq!(rb.request_roles, ["oncall", "sre-lead"]);
    assert_eq!(rb.approve_roles, ["sre-lead"]);
    assert_eq!(rb.steps.len(), 1);
    assert_eq!(rb.steps[0].kind, "verify_backup");
    assert_eq!(rb.steps[0].with["backup"], "{backup}");
    assert_eq!(rb.steps[0].with["cluster"], "{secondary}");
    let mut res = Resources::default();
    res.postgres.insert(
        "us-west-2".into(),
        PgClusterDef {
            url: Secret::new("postgres://postgres@dr-db/app"),
            bin_dir: None,
            data_dir: None,
            os_user: None,
        },
    );
    res.backups.insert(
        "default".into(),
        BackupStoreDef::Local {
            path: "/var/backups/drbot".into(),
        },
    );
    let reg = Registry::with_resources(Arc::new(res));
    assert_eq!(rb.problems(&reg, "verify-backup"), Vec::<String>::new());
    // Without a `default` store it says so.
    let reg = Registry::with_resources(Arc::new(Resources::default()));
    let problems = rb.problems(&reg, "verify-backup");
    assert!(
        problems
            .iter()
            .any(|p| p.contains("unknown backup store `default`")),
        "{problems:?}"
    );
}
