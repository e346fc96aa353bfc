//! The PostgreSQL runbooks through the real binary: `builtin_runbooks`, `[postgres.*]` and
//! `[backups.*]` wired from the config file, `check-config` naming a missing PostgreSQL
//! program, and `/dr verify-backup latest` restoring a real backup into a scratch database
//! that is gone afterwards.

use std::{collections::BTreeMap, path::Path, sync::Arc};

use drbot_e2e::*;
use recovery::{
    registry::Registry,
    resources::{BackupStoreDef, PgClusterDef, Resources},
    secret::Secret,
    step::{ProgressSink, StepContext},
    testkit::pg::PgCluster,
};
use serde_json::json;

fn config(dir: &Path, port: u16, pg: &PgCluster, bin_dir: &Path) -> std::path::PathBuf {
    let text = format!(
        r#"
builtin_runbooks = ["verify-backup", "pitr"]
[server]
listen = "127.0.0.1:{port}"
[store]
url = "sqlite://{db}"
[[people]]
name = "alice"
roles = ["sre-lead"]
[[people]]
name = "bob"
roles = ["oncall"]
[regions.us-east-1]
role = "primary"
[regions.us-west-2]
role = "secondary"
[postgres.us-west-2]
url = "{url}"
bin_dir = "{bin}"
[postgres.pitr]
url = "{url}"
bin_dir = "{bin}"
data_dir = "{dir}/pitr-data"
os_user = "postgres"
[backups.default]
kind = "local"
path = "{dir}/backups"
"#,
        db = dir.join("drbot.db").display(),
        url = pg.url("postgres"),
        bin = bin_dir.display(),
        dir = dir.display(),
    );
    let cfg = dir.join("drbot.toml");
    std::fs::write(&cfg, text).unwrap();
    cfg
}

/// Fills the seed's tables in database `app` and stores a gzip dump of it with its manifest.
fn make_backup(pg: &PgCluster, dir: &Path) {
    pg.create_database("app").unwrap();
    pg.psql(
        "app",
        "CREATE TABLE projects (id int primary key, name text);
         CREATE TABLE project_payloads (id int primary key, body text);
         CREATE TABLE project_events (id int primary key, kind text);
         INSERT INTO projects SELECT g, 'p' || g FROM generate_series(1, 300) g;
         INSERT INTO project_payloads SELECT g, repeat('x', 50) FROM generate_series(1, 700) g;
         INSERT INTO project_events SELECT g, 'e' FROM generate_series(1, 1100) g;",
    )
    .unwrap();
    let mut postgres = BTreeMap::new();
    postgres.insert(
        "source".to_string(),
        PgClusterDef {
            url: Secret::new(pg.url("app")),
            bin_dir: Some(PgCluster::bin_dir().unwrap()),
            data_dir: None,
            os_user: None,
        },
    );
    let mut backups = BTreeMap::new();
    backups.insert(
        "default".to_string(),
        BackupStoreDef::Local {
            path: dir.join("backups"),
        },
    );
    let registry = Registry::with_resources(Arc::new(Resources {
        postgres,
        backups,
        ..Resources::default()
    }));
    let kind = registry
        .get("backup_create")
        .expect("backup_create registered");
    let params = json!({ "cluster": "source" });
    kind.validate(&params).unwrap();
    let step = kind.build(&params).unwrap();
    let ctx = StepContext {
        run_id: 0,
        step_index: 0,
        attempt: 1,
        vars: BTreeMap::new(),
        progress: ProgressSink::none(),
        cancel: Default::default(),
        ..Default::default()
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let out = rt.block_on(step.run(&ctx)).expect("backup_create");
    assert_eq!(
        out.data["row_counts"],
        json!({ "projects": 300, "project_payloads": 700, "project_events": 1100 })
    );
}

#[test]
fn verify_backup_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pg = PgCluster::start().unwrap();
    make_backup(&pg, d);
    let port = free_port();

    // A bin_dir without the PostgreSQL programs is named at check-config.
    let broken = config(d, port, &pg, &d.join("no-such-bin"));
    let o = drbot(&broken, &["check-config"]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("postgres.us-west-2.bin_dir: `psql` not found in")
            && err.contains("postgres.pitr.bin_dir: `pg_ctl` not found in"),
        "{err}"
    );
    assert!(!err.contains("postgres://"), "no URL in errors: {err}");

    let cfg = config(d, port, &pg, &PgCluster::bin_dir().unwrap());
    let o = drbot(&cfg, &["check-config"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let _server = Server::start(&cfg, port, &d.join("serve.log"));

    // Touches only a scratch database: no approval needed.
    let o = cmd(&cfg, "bob", "/dr verify-backup latest");
    assert!(o.status.success(), "{}", stderr(&o));
    let v = wait_run(&cfg, 1, 120, "verify-backup to finish", |v| {
        !matches!(state(v), "queued" | "running")
    });
    assert_eq!(state(&v), "succeeded", "{v:#}");
    let step = &v["steps"][0];
    let summary = step["summary"].as_str().unwrap_or("");
    assert!(
        summary.contains("projects") && summary.contains("300"),
        "the step summary names the counts: {summary}"
    );
    let scratch = pg
        .psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'drbot_test_%'",
        )
        .unwrap();
    assert_eq!(scratch, "0", "the scratch database was dropped");

    // A backup that does not exist: the run fails and says which.
    let o = cmd(&cfg, "bob", "/dr verify-backup nightly-1999");
    assert!(o.status.success(), "{}", stderr(&o));
    let v = wait_run(&cfg, 2, 60, "the failing verify-backup", |v| {
        !matches!(state(v), "queued" | "running")
    });
    assert_eq!(state(&v), "failed", "{v:#}");
    let error = v["steps"][0]["error"].as_str().unwrap_or("");
    assert!(error.contains("nightly-1999"), "{error}");

    // PITR is destructive: it waits for a second person.
    let o = cmd(&cfg, "bob", "/dr pitr \"2026-01-27 14:30:00\"");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(state(&show(&cfg, 3)), "awaiting_approval");
    // The plan says exactly which cluster and store each step touches, never a password.
    let o = drbot(&cfg, &["show", "3"]);
    let text = stdout(&o);
    assert!(
        text.contains(&format!(
            "→ target_cluster pitr (127.0.0.1:{}/postgres)",
            pg.port()
        )) && text.contains(&format!("→ store default (local {}/backups)", d.display())),
        "{text}"
    );
}
