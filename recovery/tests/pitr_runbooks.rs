//! The built-in `pitr` and `recover-corruption` runbooks parse, pass `RunbookDef::problems`
//! with the clusters and store they name, resolve into plans that show which cluster each
//! step touches, gate what they should, and name the missing resources when there are none.

use std::{collections::BTreeMap, sync::Arc};

use recovery::{
    builtin,
    plan::Plan,
    registry::Registry,
    resources::{BackupStoreDef, PgClusterDef, Resources},
    runbook::RunbookDef,
    secret::Secret,
};

fn def(port: u16, dir: &str) -> PgClusterDef {
    PgClusterDef {
        url: Secret::new(format!("postgres://postgres:hunter2@db:{port}/app")),
        bin_dir: None,
        data_dir: Some(dir.into()),
        os_user: Some("postgres".into()),
    }
}

fn resources() -> Resources {
    let mut r = Resources::default();
    r.postgres
        .insert("us-east-1".into(), def(5432, "/srv/pg/main"));
    r.postgres.insert("pitr".into(), def(5433, "/srv/pg/pitr"));
    r.backups.insert(
        "default".into(),
        BackupStoreDef::Local {
            path: "/var/backups/drbot".into(),
        },
    );
    r
}

fn load(name: &str) -> RunbookDef {
    builtin::get(name)
        .unwrap_or_else(|| panic!("no built-in runbook {name}"))
        .unwrap_or_else(|e| panic!("{name}.toml: {e}"))
}

fn plan(rb: &RunbookDef, registry: &Registry) -> Plan {
    let args = BTreeMap::from([("timestamp".to_string(), "2026-01-27T14:30:00Z".to_string())]);
    let vars = BTreeMap::from([("primary".to_string(), "us-east-1".to_string())]);
    Plan::resolve(registry, rb, args, vars, "rev", false).unwrap()
}

#[test]
fn pitr_runbook_is_valid_and_gates_the_recovery() {
    let registry = Registry::with_resources(Arc::new(resources()));
    let rb = load("pitr");
    assert_eq!(rb.command, "pitr");
    assert_eq!(rb.problems(&registry, "pitr"), Vec::<String>::new());
    let plan = plan(&rb, &registry);
    let kinds: Vec<&str> = plan.steps.iter().map(|s| s.kind.as_str()).collect();
    assert_eq!(kinds, ["wal_archive_check", "pg_pitr", "pg_verify"]);
    let pitr = &plan.steps[1];
    assert!(pitr.gate && pitr.destructive && !pitr.idempotent);
    assert_eq!(pitr.params["target_time"], "2026-01-27T14:30:00Z");
    assert_eq!(pitr.params["target_cluster"], "pitr");
    assert!(pitr.name.contains("2026-01-27T14:30:00Z"), "{}", pitr.name);
    assert!(!plan.steps[0].destructive && !plan.steps[2].destructive);
    // No password anywhere in the plan.
    assert!(!serde_json::to_string(&plan).unwrap().contains("hunter2"));
}

#[test]
fn recover_corruption_runbook_is_valid_and_gates_terminate_and_cutover() {
    let registry = Registry::with_resources(Arc::new(resources()));
    let rb = load("recover-corruption");
    assert_eq!(rb.command, "recover-corruption");
    assert_eq!(
        rb.problems(&registry, "recover-corruption"),
        Vec::<String>::new()
    );
    let plan = plan(&rb, &registry);
    let kinds: Vec<&str> = plan.steps.iter().map(|s| s.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "exec",
            "pg_active_transactions",
            "pg_terminate_backends",
            "pg_fence",
            "wal_archive_check",
            "pg_pitr",
            "pg_verify",
            "exec",
            "exec"
        ]
    );
    let gated: Vec<&str> = plan
        .steps
        .iter()
        .filter(|s| s.gate)
        .map(|s| s.kind.as_str())
        .collect();
    assert_eq!(gated, ["pg_terminate_backends", "exec"]);
    assert!(
        plan.steps[7].name.starts_with("Cut over"),
        "{}",
        plan.steps[7].name
    );
    // Every PostgreSQL step names the cluster it touches.
    assert_eq!(plan.steps[1].params["cluster"], "us-east-1");
    assert_eq!(plan.steps[2].params["cluster"], "us-east-1");
    assert_eq!(plan.steps[3].params["cluster"], "us-east-1");
    assert_eq!(plan.steps[5].params["target_cluster"], "pitr");
    assert_eq!(plan.steps[5].params["inclusive"], false);
    // The recovered cluster becomes production at the cut-over: it must keep archiving WAL,
    // or no point-in-time recovery is possible afterwards.
    assert_eq!(plan.steps[5].params["keep_archiving"], true);
    assert!(!plan.steps[1].destructive && plan.steps[2].destructive);
}

#[test]
fn missing_clusters_and_store_are_named() {
    let mut res = resources();
    res.postgres.remove("pitr");
    res.backups.clear();
    let registry = Registry::with_resources(Arc::new(res));
    for name in ["pitr", "recover-corruption"] {
        let problems = load(name).problems(&registry, name).join("\n");
        assert!(
            problems.contains("unknown PostgreSQL cluster `pitr`"),
            "{problems}"
        );
        assert!(
            problems.contains("unknown backup store `default`"),
            "{problems}"
        );
    }
}
