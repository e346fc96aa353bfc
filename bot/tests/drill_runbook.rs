//! The built-in `drill` runbook as users enable it (`builtin_runbooks = ["drill"]`): it validates
//! against the real step registry (recovery's providers plus drbot's `incident` step), resolves
//! with the replication check as its only preflight step, the disaster non-idempotent and the
//! `[targets]` passed to the measurement; the store journal hands a resumed run what its
//! finished steps recorded and when it was approved; a secondary region missing the variables
//! the drill needs is a check-config error that names them.

mod common;

use common::*;
use drbot::{approvals, dispatch, driver::StoreJournal, reply::Reply};
use recovery::engine::Journal;

fn drill_config(store: &str, dir: &std::path::Path, dns_vars: bool) -> String {
    let base = config_text(store, 1, "30m", 0, "m");
    let dns = if dns_vars {
        r#", dns_zone = "main", dns_name = "api.example.com", dns_type = "A", dns_value = "10.0.2.10""#
    } else {
        ""
    };
    base.replace(
        "[regions.us-west-2]\nrole = \"secondary\"\nvars = { marker = \"m\" }",
        &format!(
            "[regions.us-west-2]\nrole = \"secondary\"\nhealth_url = \"http://127.0.0.1:9/dr-health\"\nvars = {{ marker = \"m\"{dns} }}"
        ),
    )
    .replace(
        "[store]",
        &format!(
            r#"builtin_runbooks = ["drill"]

[targets]
rto = "1h"
rpo = "5m"

[postgres.us-east-1]
url = "postgres://postgres:pw@10.0.1.5:5432/postgres"
data_dir = "/var/lib/postgresql/15/main"
[postgres.us-west-2]
url = "postgres://postgres:pw@10.0.2.5:5432/postgres"
[dns.main]
provider = "file"
path = "{}"

[store]"#,
            dir.join("hosts").display()
        ),
    )
}

async fn plans_the_drill_and_the_journal_loads_records(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let url = store_url(b, dir.path());
    let settings = settings(&drill_config(&url, dir.path(), true));
    let store = drbot::store::Store::connect(&url, 4).await.unwrap();
    let app = drbot::app::App::new(settings, store);
    let r = dispatch::handle(&app, &cli(&app, "bob"), "/dr drill").await;
    let Reply::Requested(v) = r else {
        panic!("{r:?}")
    };
    let steps = &v.run.plan.steps;
    let kinds: Vec<&str> = steps.iter().map(|s| s.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "pg_replication_check",
            "incident",
            "pg_drill_disaster",
            "pg_promote",
            "dns_switch",
            "http_check",
            "pg_drill_measure",
            "incident"
        ]
    );
    // Only the replication check runs before approval; the disaster is never re-run blindly.
    assert!(!steps[0].destructive);
    assert!(steps[1..5].iter().all(|s| s.destructive), "{steps:#?}");
    assert!(!steps[5].destructive && steps[7].destructive);
    assert!(!steps[2].idempotent);
    assert!(!steps[6].destructive && steps[6].idempotent);
    assert_eq!(steps[0].params["max_lag"], "5m");
    assert_eq!(steps[2].params["primary"], "us-east-1");
    assert_eq!(steps[3].params["replica"], "us-west-2");
    assert_eq!(steps[4].params["values"][0], "10.0.2.10");
    assert_eq!(steps[5].params["url"], "http://127.0.0.1:9/dr-health");
    assert_eq!(steps[6].params["rto_target"], "1h");
    assert_eq!(steps[6].params["rpo_target"], "5m");
    // The drill resolves its own incident: it never lingers for a real failover to post into.
    assert_eq!(steps[1].params["action"], "open");
    assert_eq!(steps[7].params["action"], "resolve");
    assert_eq!(v.run.plan.target, "failover");
    let touches = steps[2].touches.join(" | ");
    assert!(touches.contains("10.0.1.5:5432/postgres"), "{touches}");
    let plan = serde_json::to_string(&v.run.plan).unwrap();
    assert!(!plan.contains(":pw@"), "{plan}");

    // What a finished step recorded and the approval time reach a resumed drive.
    let run = v.run.id;
    sqlx::query(
        "UPDATE run_steps SET state = 'succeeded', data = $1, finished_at = $2 \
         WHERE run_id = $3 AND idx = 0",
    )
    .bind(r#"{"lag_bytes":0}"#.to_string())
    .bind(1_234_i64)
    .bind(run)
    .execute(app.store.pool())
    .await
    .unwrap();
    let journal = StoreJournal::new(app.clone(), "test".into());
    let snap = journal.snapshot(run).await.unwrap();
    assert_eq!(snap.approved_at_ms, None);
    let before = drbot::store::now_ms();
    let req = v.request.as_ref().expect("a request").id;
    approvals::approve(&app, &cli(&app, "alice"), run, Some(req))
        .await
        .unwrap();
    let snap = journal.snapshot(run).await.unwrap();
    let at = snap.approved_at_ms.expect("approved");
    assert!(at >= before && at <= drbot::store::now_ms(), "{at}");
    assert_eq!(snap.records.len(), 8);
    assert_eq!(snap.records[0].data["lag_bytes"], 0);
    assert_eq!(snap.records[0].finished_at_ms, Some(1_234));
    assert_eq!(snap.records[1].data, serde_json::Value::Null);
    assert_eq!(snap.records[1].finished_at_ms, None);
}

both_backends!(plans_the_drill_and_the_journal_loads_records);

#[test]
fn missing_secondary_variables_are_named_at_check_config() {
    let dir = tempfile::tempdir().unwrap();
    let text = drill_config("sqlite://x.db", dir.path(), false);
    let parsed = drbot::config::parse_str(&text, std::path::Path::new("."), &|_| None).unwrap();
    let err = drbot::config::Settings::from_parsed(parsed, "t.toml".into())
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("Switch DNS"), "{err}");
    assert!(err.contains("secondary.dns_"), "{err}");
}

/// A client-key passphrase in a cluster URL would go on the command line of every PostgreSQL
/// tool drbot runs: refused at check-config, without showing it.
#[test]
fn an_sslpassword_in_a_cluster_url_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let text = drill_config("sqlite://x.db", dir.path(), true).replace(
        "10.0.2.5:5432/postgres\"",
        "10.0.2.5:5432/postgres?sslmode=verify-full&sslpassword=k3y-s3cret\"",
    );
    assert!(text.contains("k3y-s3cret"));
    let parsed = drbot::config::parse_str(&text, std::path::Path::new("."), &|_| None).unwrap();
    let err = drbot::config::Settings::from_parsed(parsed, "t.toml".into())
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("postgres.us-west-2.url: `sslpassword` would show in process listings"),
        "{err}"
    );
    assert!(!err.contains("k3y-s3cret"), "{err}");
}
