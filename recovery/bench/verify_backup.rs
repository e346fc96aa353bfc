//! Benchmark of `verify_backup` against the seed's `gunzip < dump | psql`, in one run on one
//! throwaway PostgreSQL 15 cluster: (a) `gunzip < dump.sql.gz | psql` alone into a fresh
//! database, (b) `verify_backup` of the same plain gzip dump, (c) `verify_backup` of a
//! custom-format dump of the same data with `jobs = 2`. Goals: (b) ≤ 1.05 × (a), (c) < (a).
//!
//! `DRBOT_BENCH_MB` sets the size of the generated SQL (default 1000 MB of plain SQL);
//! `DRBOT_BENCH_ROUNDS` repeats (a) and (b) alternately (default 1). Run with `bench/run.sh`.

use std::{
    collections::BTreeMap,
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use recovery::{
    registry::Registry,
    resources::{BackupStoreDef, PgClusterDef, Resources},
    secret::Secret,
    step::{ProgressSink, StepContext, StepOutput},
    testkit::pg::{PgCluster, PgOptions},
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// Bytes of COPY text per generated row, roughly (id, project id, 96-char body).
const ROW_BYTES: u64 = 112;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn ctx() -> StepContext {
    StepContext {
        run_id: 1,
        step_index: 0,
        attempt: 1,
        vars: BTreeMap::new(),
        progress: ProgressSink::none(),
        cancel: CancellationToken::new(),
    }
}

async fn step(reg: &Registry, kind: &str, params: Value) -> StepOutput {
    let step = reg
        .get(kind)
        .expect("registered")
        .build(&params)
        .unwrap_or_else(|e| panic!("{kind}: {e}"));
    step.run(&ctx())
        .await
        .unwrap_or_else(|e| panic!("{kind} failed: {e}\n{}", e.log))
}

fn mb(bytes: u64) -> String {
    format!("{:.0} MB", bytes as f64 / 1e6)
}

/// (a): `gunzip < dump | psql` into a new database; returns the pipeline's time.
fn baseline(pg: &PgCluster, dump: &std::path::Path, db: &str) -> Duration {
    pg.create_database(db).expect("create baseline db");
    let psql = PgCluster::bin("psql").expect("psql");
    let script = format!(
        "set -o pipefail; gunzip < '{}' | '{}' -X -q -v ON_ERROR_STOP=1 -d '{}' >/dev/null",
        dump.display(),
        psql.display(),
        pg.conninfo(db)
    );
    let started = Instant::now();
    let status = Command::new("bash")
        .args(["-c", &script])
        .status()
        .expect("running the baseline");
    let took = started.elapsed();
    assert!(status.success(), "baseline restore failed: {status}");
    pg.psql("postgres", &format!("DROP DATABASE \"{db}\" WITH (FORCE)"))
        .expect("drop baseline db");
    took
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let target_mb = env_u64("DRBOT_BENCH_MB", 1000);
    let rounds = env_u64("DRBOT_BENCH_ROUNDS", 1).max(1);
    let rows = target_mb * 1_000_000 / ROW_BYTES;
    println!(
        "verify_backup benchmark: ~{target_mb} MB of plain SQL ({rows} payload rows), {rounds} round(s)"
    );

    let pg = PgCluster::start_with(PgOptions {
        archive: false,
        extra_conf: vec![
            ("shared_buffers".into(), "256MB".into()),
            ("max_wal_size".into(), "4GB".into()),
            ("maintenance_work_mem".into(), "256MB".into()),
            ("max_connections".into(), "40".into()),
        ],
    })
    .expect("starting PostgreSQL");
    pg.create_database("bench_src").expect("create source");
    let t = Instant::now();
    pg.psql(
        "bench_src",
        &format!(
            "CREATE TABLE projects (id bigint PRIMARY KEY, name text NOT NULL);
             INSERT INTO projects SELECT g, 'project ' || g FROM generate_series(1, 1000) g;
             CREATE TABLE project_payloads (id bigint PRIMARY KEY, project_id bigint NOT NULL,
                 body text NOT NULL);
             INSERT INTO project_payloads
                 SELECT g, 1 + g % 1000, md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text)
                 FROM generate_series(1, {rows}) g;
             CREATE TABLE project_events (id bigint PRIMARY KEY, project_id bigint NOT NULL,
                 kind text NOT NULL);
             INSERT INTO project_events SELECT g, 1 + g % 1000, 'event-' || (g % 7)
                 FROM generate_series(1, {}) g;
             ANALYZE;",
            rows / 10
        ),
    )
    .expect("filling the source database");
    println!(
        "filled the source database in {:.1}s",
        t.elapsed().as_secs_f64()
    );

    let store_dir = tempfile::Builder::new()
        .prefix("drbot-bench-")
        .tempdir_in(std::env::var("DRBOT_BENCH_DIR").unwrap_or_else(|_| "/tmp".into()))
        .expect("store dir");
    let store = BackupStoreDef::Local {
        path: store_dir.path().to_path_buf(),
    };
    let mut res = Resources::default();
    for (name, db) in [("src", "bench_src"), ("bench", "postgres")] {
        res.postgres.insert(
            name.into(),
            PgClusterDef {
                url: Secret::new(pg.url(db)),
                bin_dir: Some(PgCluster::bin_dir().expect("bin dir")),
                data_dir: None,
                os_user: None,
            },
        );
    }
    res.backups.insert("default".into(), store);
    let reg = Registry::with_resources(Arc::new(res));

    let t = Instant::now();
    let plain = step(&reg, "backup_create", json!({ "cluster": "src" })).await;
    println!(
        "backup_create sql_gzip: {} in {:.1}s",
        plain.summary,
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let custom = step(
        &reg,
        "backup_create",
        json!({ "cluster": "src", "format": "custom" }),
    )
    .await;
    println!(
        "backup_create custom:   {} in {:.1}s",
        custom.summary,
        t.elapsed().as_secs_f64()
    );
    pg.psql("postgres", "DROP DATABASE bench_src")
        .expect("drop source");
    let plain_name = plain.data["name"].as_str().unwrap().to_string();
    let custom_name = custom.data["name"].as_str().unwrap().to_string();
    let dump = store_dir.path().join(&plain_name).join("dump.sql.gz");
    let gz_bytes = std::fs::metadata(&dump).expect("dump").len();

    let mut a_times = Vec::new();
    let mut b_times = Vec::new();
    let mut b_restore = Vec::new();
    let mut sql_bytes = 0;
    for round in 1..=rounds {
        let a = baseline(&pg, &dump, &format!("bench_baseline_{round}"));
        println!(
            "round {round}: (a) gunzip | psql            {:7.2}s",
            a.as_secs_f64()
        );
        a_times.push(a.as_secs_f64());

        let t = Instant::now();
        let out = step(
            &reg,
            "verify_backup",
            json!({ "cluster": "bench", "backup": plain_name, "prefix": "benchb" }),
        )
        .await;
        let b = t.elapsed().as_secs_f64();
        sql_bytes = out.data["sql_bytes"].as_u64().unwrap_or(0);
        println!(
            "round {round}: (b) verify_backup sql_gzip   {b:7.2}s (restore {:.2}s, {:.1} MB/s of gzip)",
            out.data["restore_seconds"], out.data["throughput_mb_s"]
        );
        b_times.push(b);
        b_restore.push(out.data["restore_seconds"].as_f64().unwrap_or(0.0));
    }
    let t = Instant::now();
    let out = step(
        &reg,
        "verify_backup",
        json!({ "cluster": "bench", "backup": custom_name, "prefix": "benchc", "jobs": 2 }),
    )
    .await;
    let c = t.elapsed().as_secs_f64();
    println!(
        "(c) verify_backup custom -j 2            {c:7.2}s (restore {:.2}s)",
        out.data["restore_seconds"]
    );

    let avg = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (a, b) = (avg(&a_times), avg(&b_times));
    println!();
    println!(
        "plain SQL {} (gzip {}), custom dump {}",
        mb(sql_bytes),
        mb(gz_bytes),
        mb(custom.data["size"].as_u64().unwrap_or(0))
    );
    println!("(a) gunzip < dump | psql           {a:7.2}s");
    println!(
        "(b) verify_backup sql_gzip         {b:7.2}s  ratio b/a = {:.3} (goal <= 1.05){}",
        b / a,
        if b / a <= 1.05 { "  OK" } else { "  MISSED" }
    );
    println!(
        "    of which restore               {:7.2}s  ratio = {:.3}",
        avg(&b_restore),
        avg(&b_restore) / a
    );
    println!(
        "(c) verify_backup custom -j 2      {c:7.2}s  ratio c/a = {:.3} (goal < 1){}",
        c / a,
        if c < a { "  OK" } else { "  MISSED" }
    );
}
