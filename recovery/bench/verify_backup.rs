//! Benchmark of `verify_backup` against the seed's `gunzip < dump | psql`, in one run on one
//! throwaway PostgreSQL 15 cluster: (a) `gunzip < dump.sql.gz | psql` alone into a fresh
//! database, (b) `verify_backup` of the same plain gzip dump, (c) `verify_backup` of a
//! custom-format dump of the same data with `jobs = 2`. Goals: (b) ≤ 1.05 × (a), (c) < (a).
//!
//! The data follows the seed plan's schema: `projects`, `project_payloads` and `project_events`
//! of about the same size, each with a primary key, a secondary index (owner, project, time)
//! and, for the latter two, a foreign key to `projects`, as an application's tables have. So
//! `pg_restore -j 2` has table loads and index builds to run side by side.
//!
//! `DRBOT_BENCH_MB` sets the size of the generated SQL (default 1000 MB of plain SQL);
//! `DRBOT_BENCH_ROUNDS` repeats (a) and (b) (default 2; odd rounds time (a) first, even rounds
//! (b) first, and the server is settled before each timing). Run with `bench/run.sh`.

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

/// Bytes of COPY text per generated row of each seed table, roughly: `projects` are few and
/// wide (a description), `project_payloads` carry a 96-character body, `project_events` are
/// many and narrow. Each table gets about a third of the plain SQL.
const PROJECT_BYTES: u64 = 230;
const PAYLOAD_BYTES: u64 = 135;
const EVENT_BYTES: u64 = 75;

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
        ..Default::default()
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

/// Busy and total CPU time of the whole machine so far, in jiffies (from `/proc/stat`).
fn cpu_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// Cores kept busy on average since `since` (a [`cpu_jiffies`] reading).
fn cores_busy(since: (u64, u64)) -> f64 {
    let now = cpu_jiffies();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    (now.0 - since.0) as f64 / (now.1 - since.1).max(1) as f64 * cores
}

/// What the restore sessions did: samples, samples with 2 or more busy, the most busy at once,
/// and (for `DRBOT_BENCH_TIMELINE=1`) each change of the busy statements with its time.
struct Watched {
    samples: u32,
    parallel: u32,
    most: i64,
    timeline: Vec<String>,
}

/// Polls `pg_stat_activity` for sessions in scratch databases named `<prefix>_test_…` until
/// `stop`.
async fn watch_restore(url: String, prefix: &str, stop: CancellationToken) -> Watched {
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(&url)
        .await
        .expect("watcher connection");
    let pattern = format!("{prefix}\\_test\\_%");
    let started = Instant::now();
    let mut w = Watched {
        samples: 0,
        parallel: 0,
        most: 0,
        timeline: Vec::new(),
    };
    let mut last = String::new();
    loop {
        let (busy, what): (i64, Option<String>) = sqlx::query_as(
            "SELECT count(*), string_agg(left(regexp_replace(query, '\\s+', ' ', 'g'), 70), \
                 ' || ' ORDER BY query)
             FROM pg_stat_activity WHERE datname LIKE $1 \
             AND backend_type = 'client backend' AND state = 'active'",
        )
        .bind(&pattern)
        .fetch_one(&mut conn)
        .await
        .expect("pg_stat_activity");
        w.samples += 1;
        if busy >= 2 {
            w.parallel += 1;
        }
        w.most = w.most.max(busy);
        let what = what.unwrap_or_default();
        if what != last {
            w.timeline.push(format!(
                "{:6.1}s [{busy}] {what}",
                started.elapsed().as_secs_f64()
            ));
            last = what;
        }
        tokio::select! {
            _ = stop.cancelled() => return w,
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}

/// Brings the server to the same quiet state before each timed measurement: dirty pages
/// written (`CHECKPOINT`), the kernel's dirty pages flushed (`sync`), no autovacuum worker
/// busy (up to 2 minutes), then a short pause.
async fn settle(pg: &PgCluster) {
    pg.psql("postgres", "CHECKPOINT").expect("checkpoint");
    let _ = Command::new("sync").status();
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let busy = pg
            .psql(
                "postgres",
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'",
            )
            .expect("pg_stat_activity");
        if busy.trim() == "0" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let target_mb = env_u64("DRBOT_BENCH_MB", 1000);
    let rounds = env_u64("DRBOT_BENCH_ROUNDS", 2).max(1);
    let third = target_mb * 1_000_000 / 3;
    let (projects, payloads, events) = (
        third / PROJECT_BYTES,
        third / PAYLOAD_BYTES,
        third / EVENT_BYTES,
    );
    println!(
        "verify_backup benchmark: ~{target_mb} MB of plain SQL ({projects} projects, {payloads} \
         payloads, {events} events), {rounds} round(s)"
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
            "CREATE TABLE projects (id bigint PRIMARY KEY, name text NOT NULL,
                 owner text NOT NULL, created_at timestamptz NOT NULL, description text NOT NULL);
             INSERT INTO projects
                 SELECT g, 'Project ' || g, 'owner' || (g % 997) || '@example.com',
                     timestamptz '2024-01-01 00:00:00+00' + g * interval '7 seconds',
                     md5(g::text) || ' ' || md5((g * 3)::text) || ' ' || md5((g * 5)::text)
                         || ' ' || md5((g * 7)::text) || ' ' || md5((g * 11)::text)
                 FROM generate_series(1::bigint, {projects}) g;
             CREATE INDEX projects_owner_idx ON projects (owner);
             CREATE TABLE project_payloads (id bigint PRIMARY KEY,
                 project_id bigint NOT NULL REFERENCES projects,
                 created_at timestamptz NOT NULL, body text NOT NULL);
             INSERT INTO project_payloads
                 SELECT g, 1 + (g * 7919) % {projects},
                     timestamptz '2024-01-01 00:00:00+00' + g * interval '3 seconds',
                     md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text)
                 FROM generate_series(1::bigint, {payloads}) g;
             CREATE INDEX project_payloads_project_id_idx ON project_payloads (project_id);
             CREATE TABLE project_events (id bigint PRIMARY KEY,
                 project_id bigint NOT NULL REFERENCES projects,
                 kind text NOT NULL, created_at timestamptz NOT NULL, detail text NOT NULL);
             INSERT INTO project_events
                 SELECT g, 1 + (g * 104729) % {projects}, 'event-' || (g % 7),
                     timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second',
                     'actor=user' || (g % 5003) || ' ip=10.' || (g % 256) || '.'
                         || (g * 7 % 256) || '.' || (g * 13 % 256)
                 FROM generate_series(1::bigint, {events}) g;
             CREATE INDEX project_events_created_at_idx ON project_events (created_at);
             ANALYZE;"
        ),
    )
    .expect("filling the source database");
    println!(
        "filled the source database in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    let sizes = pg
        .psql(
            "bench_src",
            "SELECT relname || ': ' || reltuples::bigint || ' rows, table '
                 || pg_size_pretty(pg_table_size(oid)) || ', indexes '
                 || pg_size_pretty(pg_indexes_size(oid))
             FROM pg_class WHERE relname IN ('projects', 'project_payloads', 'project_events')
             ORDER BY relname",
        )
        .expect("table sizes");
    for line in sizes.lines().filter(|l| !l.trim().is_empty()) {
        println!("  {}", line.trim());
    }

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
        // Odd rounds run (a) first, even rounds (b) first, so that neither always inherits
        // the other's after-effects (dirty pages, autovacuum of what was just loaded).
        let order: [bool; 2] = if round % 2 == 1 {
            [true, false]
        } else {
            [false, true]
        };
        for is_a in order {
            settle(&pg).await;
            let cpu = cpu_jiffies();
            if is_a {
                let a = baseline(&pg, &dump, &format!("bench_baseline_{round}"));
                println!(
                    "round {round}: (a) gunzip | psql            {:7.2}s ({:.2} cores busy)",
                    a.as_secs_f64(),
                    cores_busy(cpu)
                );
                a_times.push(a.as_secs_f64());
                continue;
            }
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
                "round {round}: (b) verify_backup sql_gzip   {b:7.2}s (restore {:.2}s, {:.1} MB/s \
                 of gzip, {:.2} cores busy)",
                out.data["restore_seconds"],
                out.data["throughput_mb_s"],
                cores_busy(cpu)
            );
            b_times.push(b);
            b_restore.push(out.data["restore_seconds"].as_f64().unwrap_or(0.0));
        }
        let (a, b) = (a_times[a_times.len() - 1], b_times[b_times.len() - 1]);
        println!("round {round}: b/a = {:.3}", b / a);
    }
    settle(&pg).await;
    let stop = CancellationToken::new();
    let watcher = tokio::spawn(watch_restore(pg.url("postgres"), "benchc", stop.clone()));
    let cpu = cpu_jiffies();
    let t = Instant::now();
    let out = step(
        &reg,
        "verify_backup",
        json!({ "cluster": "bench", "backup": custom_name, "prefix": "benchc", "jobs": 2 }),
    )
    .await;
    let c = t.elapsed().as_secs_f64();
    let c_cores = cores_busy(cpu);
    stop.cancel();
    let w = watcher.await.expect("watcher");
    println!(
        "(c) verify_backup custom -j 2            {c:7.2}s (restore {:.2}s, {c_cores:.2} cores \
         busy; {} sessions busy at most, 2+ busy in {} of {} samples)",
        out.data["restore_seconds"], w.most, w.parallel, w.samples
    );
    if std::env::var("DRBOT_BENCH_TIMELINE").is_ok_and(|v| v == "1") {
        for line in &w.timeline {
            println!("    {line}");
        }
    }

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
