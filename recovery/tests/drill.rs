//! `pg_drill_disaster` and `pg_drill_measure` on real PostgreSQL 15 clusters: the disaster kills
//! (or blocks) the primary while its marker writer commits, the replica is promoted with
//! `pg_promote`, and the measurement's RPO matches the markers really missing on the promoted
//! database (none while streaming, all of them with the replica cut off); bad parameters and a
//! measurement without a disaster are clear errors.

mod pg_promote_support;

use std::{collections::BTreeMap, time::Duration};

use pg_promote_support::{def, registry, run};
use recovery::{
    engine::StepState,
    registry::Registry,
    resources::Resources,
    step::{EarlierStep, ProgressSink, StepContext, StepError, StepOutput},
    testkit::pg::PgCluster,
};
use serde_json::{Value, json};

const REPLAY: Duration = Duration::from_secs(30);
const TABLE: &str = "drbot_drill_markers";

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Runs `pg_drill_measure` with `earlier` as the steps before it.
async fn measure(
    reg: &Registry,
    params: Value,
    earlier: Vec<EarlierStep>,
    approved_at_ms: Option<i64>,
) -> Result<StepOutput, StepError> {
    let kind = reg.get("pg_drill_measure").expect("registered");
    kind.validate(&params).expect("valid params");
    let step = kind.build(&params).unwrap();
    let ctx = StepContext {
        run_id: 1,
        step_index: earlier.len(),
        attempt: 1,
        vars: BTreeMap::new(),
        progress: ProgressSink::none(),
        earlier,
        approved_at_ms,
        ..Default::default()
    };
    let out = step.run(&ctx).await;
    match &out {
        Ok(o) => println!("pg_drill_measure: {}\n{}", o.summary, o.data),
        Err(e) => println!("pg_drill_measure failed: {}", e.message),
    }
    out
}

fn earlier(kind: &str, state: StepState, data: Value, finished_at_ms: Option<i64>) -> EarlierStep {
    EarlierStep {
        kind: kind.into(),
        name: kind.into(),
        state,
        data,
        finished_at_ms,
    }
}

/// `(count, max seq)` of drill `drill`'s markers on `c`, read with psql.
fn markers_on(c: &PgCluster, drill: &str) -> (i64, i64) {
    let row = c
        .psql(
            "postgres",
            &format!("SELECT count(*), coalesce(max(seq), 0) FROM {TABLE} WHERE drill = '{drill}'"),
        )
        .unwrap();
    let (n, max) = row.split_once('|').unwrap();
    (n.parse().unwrap(), max.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn disaster_kills_the_primary_mid_write_and_the_promoted_replica_is_measured() {
    let primary = PgCluster::start().unwrap();
    let replica = PgCluster::start_replica_of(&primary).unwrap();
    let reg = registry(&[("main", &primary), ("dr", &replica)]);
    let approved = now_ms();

    let d = run(
        &reg,
        "pg_drill_disaster",
        json!({ "primary": "main", "warmup": "1s", "rate": 100 }),
    )
    .await
    .unwrap();
    let data = d.data.clone();
    let written = data["markers_written"].as_i64().unwrap();
    assert!(written >= 20, "about 100 markers in 1 s, got {written}");
    assert_eq!(
        data["last_acked_seq"], written,
        "acknowledged seqs are 1..n"
    );
    assert!(data["last_acked_marker"].as_i64().unwrap() > 0);
    let disaster_at = data["disaster_at_ms"].as_i64().unwrap();
    let last_at = data["last_acked_at_ms"].as_i64().unwrap();
    assert!(
        last_at <= disaster_at + 1_000 && last_at >= approved - 1_000,
        "{data}"
    );
    assert_eq!(data["how"], "stop_immediate");
    assert!(d.summary.contains("killed"), "{}", d.summary);
    // The primary is down for real.
    assert!(primary.psql("postgres", "SELECT 1").is_err());

    let p = run(
        &reg,
        "pg_promote",
        json!({ "replica": "dr", "primary": "main", "wait_seconds": 60 }),
    )
    .await
    .unwrap();
    assert_eq!(p.data["primary_reachable"], false);
    assert!(!replica.is_in_recovery().unwrap());

    let green = now_ms();
    let steps = vec![
        earlier(
            "pg_drill_disaster",
            StepState::Succeeded,
            data.clone(),
            Some(disaster_at),
        ),
        earlier(
            "pg_promote",
            StepState::Succeeded,
            p.data.clone(),
            Some(green - 10),
        ),
        earlier("http_check", StepState::Succeeded, Value::Null, Some(green)),
    ];
    let m = measure(&reg, json!({ "cluster": "dr" }), steps, Some(approved))
        .await
        .unwrap();
    let drill = data["drill"].as_str().unwrap();
    let (count, max_seq) = markers_on(&replica, drill);
    assert_eq!(count, max_seq, "markers on DR are a prefix 1..n");
    let missing = (written - max_seq).max(0);
    assert_eq!(m.data["rpo_rows"], missing, "{}", m.data);
    assert!(m.data["rpo_rows"].as_i64().unwrap() >= 0);
    let rpo_s = m.data["rpo_seconds"].as_f64().unwrap();
    assert!((0.0..5.0).contains(&rpo_s), "{rpo_s}");
    assert_eq!(rpo_s == 0.0, missing == 0);
    // RTO: approval to the health check's end, which the test set to `green`.
    let rto = m.data["rto_seconds"].as_f64().unwrap();
    assert_eq!(rto, (green - approved) as f64 / 1000.0);
    assert!(rto > 0.0 && rto < 120.0, "{rto}");
    assert_eq!(m.data["rto_from"], "approval");
    assert_eq!(m.data["green_at"], "http_check");
    assert_eq!(m.data["met"], true);
    assert_eq!(m.data["dr_in_recovery"], false);
    assert!(
        m.summary.starts_with(&format!("RPO {missing} rows (")),
        "{}",
        m.summary
    );
    assert!(
        m.summary.contains("within targets (RTO 4h / RPO 15m)"),
        "{}",
        m.summary
    );

    // A passing health check from before the disaster (a preflight of the primary) is not
    // health green: with only a failed one after it, green is the measurement's time.
    let steps = vec![
        earlier(
            "http_check",
            StepState::Succeeded,
            Value::Null,
            Some(disaster_at - 5_000),
        ),
        earlier(
            "pg_drill_disaster",
            StepState::Succeeded,
            data.clone(),
            Some(disaster_at),
        ),
        earlier("http_check", StepState::Failed, Value::Null, Some(now_ms())),
    ];
    let m = measure(&reg, json!({ "cluster": "dr" }), steps, Some(approved))
        .await
        .unwrap();
    assert_eq!(m.data["green_at"], "measurement", "{}", m.data);
    assert!(m.data["rto_seconds"].as_f64().unwrap() > 0.0);

    // Tight targets are reported as missed; without an approval RTO counts from the disaster.
    let steps = vec![earlier(
        "pg_drill_disaster",
        StepState::Succeeded,
        data,
        Some(disaster_at),
    )];
    let m = measure(
        &reg,
        json!({ "cluster": "dr", "rto_target": "1ms", "rpo_target": "15m" }),
        steps,
        None,
    )
    .await
    .unwrap();
    assert_eq!(m.data["rto_from"], "disaster");
    assert_eq!(m.data["green_at"], "measurement");
    assert_eq!(m.data["met"], false);
    assert!(m.summary.contains("RTO over target"), "{}", m.summary);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cut_off_replica_misses_every_marker_and_the_measure_says_so() {
    let primary = PgCluster::start().unwrap();
    let replica = PgCluster::start_replica_of(&primary).unwrap();
    // The table reaches the replica; then the replica stops receiving WAL.
    primary
        .psql(
            "postgres",
            &format!(
                "CREATE TABLE {TABLE} (id bigserial PRIMARY KEY, drill text, seq bigint, \
                 written_at timestamptz NOT NULL DEFAULT clock_timestamp())"
            ),
        )
        .unwrap();
    replica.wait_for_replay(&primary, REPLAY).unwrap();
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
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // The replica falls behind for a while before the disaster (the commits of that time are
    // lost too, not only the markers').
    std::thread::sleep(Duration::from_secs(2));
    primary
        .psql(
            "postgres",
            "CREATE TABLE lost_meanwhile (x int); INSERT INTO lost_meanwhile VALUES (1)",
        )
        .unwrap();
    let reg = registry(&[("main", &primary), ("dr", &replica)]);
    let d = run(
        &reg,
        "pg_drill_disaster",
        json!({ "primary": "main", "warmup": "500ms", "rate": 50 }),
    )
    .await
    .unwrap();
    let written = d.data["markers_written"].as_i64().unwrap();
    assert!(written > 5, "{written}");
    let promoted = run(
        &reg,
        "pg_promote",
        json!({ "replica": "dr", "wait_seconds": 60 }),
    )
    .await
    .unwrap();
    let disaster = earlier(
        "pg_drill_disaster",
        StepState::Succeeded,
        d.data.clone(),
        Some(now_ms()),
    );
    let last_acked = d.data["last_acked_at_ms"].as_i64().unwrap();
    let span = (last_acked - d.data["first_acked_at_ms"].as_i64().unwrap()) as f64 / 1000.0;
    assert!(span > 0.2 && span < 5.0, "{span}");

    // Without the promotion's evidence the markers' span is only a lower bound: never "met".
    let m = measure(
        &reg,
        json!({ "cluster": "dr" }),
        vec![disaster.clone()],
        Some(now_ms()),
    )
    .await
    .unwrap();
    assert_eq!(m.data["rpo_rows"], written, "{}", m.data);
    assert_eq!(m.data["markers_on_dr"], 0);
    assert_eq!(m.data["rpo_seconds"].as_f64().unwrap(), span);
    assert_eq!(m.data["rpo_at_least"], true);
    assert_eq!(m.data["met"], false, "{}", m.summary);
    assert!(m.summary.contains("(at least "), "{}", m.summary);

    // With it: what DR holds ends at its last replayed commit, before the replica fell behind.
    let replayed = promoted.data["last_replayed_commit_at"].as_str().unwrap();
    let replayed_ms = chrono::DateTime::parse_from_rfc3339(replayed)
        .unwrap()
        .timestamp_millis();
    let promote = earlier(
        "pg_promote",
        StepState::Succeeded,
        promoted.data.clone(),
        Some(now_ms()),
    );
    let m = measure(
        &reg,
        json!({ "cluster": "dr" }),
        vec![disaster, promote],
        Some(now_ms()),
    )
    .await
    .unwrap();
    let rpo = m.data["rpo_seconds"].as_f64().unwrap();
    assert_eq!(rpo, (last_acked - replayed_ms) as f64 / 1000.0);
    assert!(
        rpo >= span + 2.0,
        "RPO {rpo} s covers the time behind, span {span} s"
    );
    assert_eq!(m.data["rpo_at_least"], false);
    assert_eq!(m.data["met"], true, "well within 15 min: {}", m.summary);
}

#[tokio::test(flavor = "multi_thread")]
async fn block_leaves_the_primary_up_but_read_only() {
    let primary = PgCluster::start().unwrap();
    let replica = PgCluster::start_replica_of(&primary).unwrap();
    let reg = registry(&[("main", &primary), ("dr", &replica)]);
    // A standby is not a primary to kill.
    let e = run(
        &reg,
        "pg_drill_disaster",
        json!({ "primary": "dr", "warmup": "100ms" }),
    )
    .await
    .unwrap_err();
    assert!(e.message.contains("is a standby"), "{}", e.message);
    assert!(!e.retryable);

    let d = run(
        &reg,
        "pg_drill_disaster",
        json!({ "primary": "main", "warmup": "300ms", "how": "block", "table": "public.drill_m" }),
    )
    .await
    .unwrap();
    assert_eq!(d.data["how"], "block");
    assert!(d.data["markers_written"].as_i64().unwrap() > 0);
    assert_eq!(primary.psql("postgres", "SELECT 1").unwrap(), "1");
    let err = primary
        .psql(
            "postgres",
            "INSERT INTO drill_m (drill, seq) VALUES ('x', 1)",
        )
        .unwrap_err();
    assert!(format!("{err:#}").contains("read-only"), "{err:#}");
    // A second disaster on the blocked primary cannot even prepare its table.
    let e = run(
        &reg,
        "pg_drill_disaster",
        json!({ "primary": "main", "warmup": "100ms", "how": "block", "table": "public.drill_m2" }),
    )
    .await
    .unwrap_err();
    assert!(e.message.contains("read-only"), "{}", e.message);
}

#[tokio::test]
async fn measure_without_a_disaster_is_a_clear_error_and_a_dry_run_measures_nothing() {
    let mut res = Resources::default();
    let mut d = def(&PgCluster::start().unwrap());
    // Never reached: the checks come before any connection.
    d.url = recovery::secret::Secret::new("postgres://postgres@127.0.0.1:1/postgres");
    res.postgres.insert("dr".into(), d);
    let reg = Registry::with_resources(std::sync::Arc::new(res));
    let e = measure(&reg, json!({ "cluster": "dr" }), vec![], None)
        .await
        .unwrap_err();
    assert!(
        e.message
            .contains("no `pg_drill_disaster` step succeeded earlier in this run"),
        "{}",
        e.message
    );
    assert!(!e.retryable);
    // A failed disaster is no disaster to measure either.
    let failed = earlier("pg_drill_disaster", StepState::Failed, Value::Null, Some(1));
    let e = measure(&reg, json!({ "cluster": "dr" }), vec![failed], None)
        .await
        .unwrap_err();
    assert!(
        e.message.contains("no `pg_drill_disaster`"),
        "{}",
        e.message
    );
    let skipped = earlier("pg_drill_disaster", StepState::Skipped, Value::Null, None);
    let m = measure(&reg, json!({ "cluster": "dr" }), vec![skipped], None)
        .await
        .unwrap();
    assert!(m.summary.contains("dry run"), "{}", m.summary);
    assert_eq!(m.data["measured"], false);
    // A record that is not a drill's.
    let odd = earlier(
        "pg_drill_disaster",
        StepState::Succeeded,
        json!({ "x": 1 }),
        None,
    );
    let e = measure(&reg, json!({ "cluster": "dr" }), vec![odd], None)
        .await
        .unwrap_err();
    assert!(e.message.contains("is not a drill record"), "{}", e.message);
}

#[test]
fn parameters_are_checked() {
    let primary = PgCluster::start().unwrap();
    let reg = registry(&[("main", &primary)]);
    let disaster = reg.get("pg_drill_disaster").unwrap();
    let measure = reg.get("pg_drill_measure").unwrap();
    assert!(!disaster.traits().idempotent && disaster.traits().destructive);
    assert!(measure.traits().idempotent && !measure.traits().destructive);
    let err = |k: &std::sync::Arc<dyn recovery::registry::StepKind>, p: Value| {
        k.validate(&p).unwrap_err()
    };
    assert_eq!(
        err(disaster, json!({ "primary": "west" })),
        "primary: unknown PostgreSQL cluster `west` (known: main)"
    );
    assert!(
        disaster
            .validate(&json!({ "primary": "{primary}" }))
            .is_ok()
    );
    assert!(err(disaster, json!({ "primary": "main", "table": "x; drop" })).contains("table:"));
    assert!(err(disaster, json!({ "primary": "main", "rate": 0 })).starts_with("rate:"));
    assert!(err(disaster, json!({ "primary": "main", "warmup": "soon" })).starts_with("warmup:"));
    assert!(err(disaster, json!({ "primary": "main", "warmup": "0s" })).starts_with("warmup:"));
    assert!(err(disaster, json!({ "primary": "main", "how": "nuke" })).contains("how"));
    assert!(err(disaster, json!({ "primary": "main", "bogus": 1 })).contains("bogus"));
    // stop_immediate needs a data_dir; block does not.
    let mut res = Resources::default();
    let mut d = def(&primary);
    d.data_dir = None;
    res.postgres.insert("main".into(), d);
    let reg2 = Registry::with_resources(std::sync::Arc::new(res));
    let k = reg2.get("pg_drill_disaster").unwrap();
    assert!(err(k, json!({ "primary": "main" })).contains("needs data_dir"));
    assert!(
        k.validate(&json!({ "primary": "main", "how": "block" }))
            .is_ok()
    );
    assert!(
        err(measure, json!({ "cluster": "main", "rto_target": "never" }))
            .starts_with("rto_target:")
    );
    assert!(
        measure
            .validate(&json!({ "cluster": "main", "rto_target": "{targets.rto}" }))
            .is_ok()
    );
}
