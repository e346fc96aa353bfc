//! The built-in `pitr` and `recover-corruption` runbooks parse, pass `RunbookDef::problems`
//! with the clusters and store they name, resolve into plans that show which cluster each
//! step touches, gate what they should, and name the missing resources when there are none.
//! `recover-corruption` stops and restarts apex-api and apex-worker with `k8s_scale` in the
//! primary region, repoints them with a kubectl that names its context and namespace, and ends
//! on a health check; a region without the variables that needs is named.

use std::{collections::BTreeMap, sync::Arc};

use recovery::{
    builtin,
    plan::Plan,
    plan::PlanError,
    registry::Registry,
    resources::{BackupStoreDef, KubeClusterDef, PgClusterDef, Resources},
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
    r.kubernetes.insert(
        "us-east-1".into(),
        KubeClusterDef {
            api_url: Some("http://127.0.0.1:9/east".into()),
            ..Default::default()
        },
    );
    r
}

/// The primary region's variables `recover-corruption` uses (as the bot's `vars_for` makes
/// them from `[regions.us-east-1]`).
fn region_vars() -> BTreeMap<String, String> {
    [
        ("primary", "us-east-1"),
        ("primary.namespace", "apex"),
        ("primary.health_url", "https://api-east.example.com/health"),
        ("primary.kube_context", "east-ctx"),
        ("primary.pitr_db_host", "pitr-db.apex.svc"),
        ("primary.pitr_db_port", "5433"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn load(name: &str) -> RunbookDef {
    builtin::get(name)
        .unwrap_or_else(|| panic!("no built-in runbook {name}"))
        .unwrap_or_else(|e| panic!("{name}.toml: {e}"))
}

fn resolve(
    rb: &RunbookDef,
    registry: &Registry,
    vars: BTreeMap<String, String>,
) -> Result<Plan, PlanError> {
    let args = BTreeMap::from([("timestamp".to_string(), "2026-01-27T14:30:00Z".to_string())]);
    Plan::resolve(registry, rb, args, vars, "rev", false)
}

fn plan(rb: &RunbookDef, registry: &Registry) -> Plan {
    resolve(rb, registry, region_vars()).unwrap()
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
            "k8s_scale",
            "k8s_scale",
            "pg_active_transactions",
            "pg_terminate_backends",
            "pg_fence",
            "wal_archive_check",
            "pg_pitr",
            "pg_verify",
            "exec",
            "k8s_scale",
            "k8s_scale",
            "http_check"
        ]
    );
    let gated: Vec<&str> = plan
        .steps
        .iter()
        .filter(|s| s.gate)
        .map(|s| s.kind.as_str())
        .collect();
    assert_eq!(gated, ["pg_terminate_backends", "exec"]);
    let p = |i: usize| &plan.steps[i].params;
    // Writes stop in the primary region: its API and its workers, through the Kubernetes API.
    let scale = |i: usize| {
        (
            p(i)["kube"].as_str().unwrap(),
            p(i)["namespace"].as_str().unwrap(),
            p(i)["name"].as_str().unwrap(),
            p(i)["replicas"].as_u64().unwrap(),
        )
    };
    assert_eq!(scale(0), ("us-east-1", "apex", "apex-api", 0));
    assert_eq!(scale(1), ("us-east-1", "apex", "apex-worker", 0));
    assert!(
        plan.steps[0]
            .touches
            .join(" ")
            .contains("kubernetes us-east-1"),
        "{:?}",
        plan.steps[0].touches
    );
    // Every PostgreSQL step names the cluster it touches.
    assert_eq!(p(2)["cluster"], "us-east-1");
    assert_eq!(p(3)["cluster"], "us-east-1");
    assert_eq!(p(4)["cluster"], "us-east-1");
    assert_eq!(p(6)["target_cluster"], "pitr");
    assert_eq!(p(6)["inclusive"], false);
    // The recovered cluster becomes production at the cut-over: it must keep archiving WAL,
    // or no point-in-time recovery is possible afterwards.
    assert_eq!(p(6)["keep_archiving"], true);
    assert!(!plan.steps[2].destructive && plan.steps[3].destructive);
    // The cut-over: kubectl with the region's context and namespace (never the current
    // context), both workloads, the address configured for the pitr cluster.
    let cut = &plan.steps[8];
    assert!(cut.name.starts_with("Cut over"), "{}", cut.name);
    assert!(cut.name.contains("pitr-db.apex.svc:5433"), "{}", cut.name);
    assert!(cut.destructive && cut.idempotent);
    assert_eq!(p(8)["command"], "kubectl");
    assert_eq!(
        p(8)["args"],
        serde_json::json!([
            "--context",
            "east-ctx",
            "--namespace",
            "apex",
            "set",
            "env",
            "deployment/apex-api",
            "deployment/apex-worker",
            "DATABASE_HOST=pitr-db.apex.svc",
            "DATABASE_PORT=5433"
        ])
    );
    // Then both start again, and the run ends only once the service is healthy.
    assert_eq!(scale(9), ("us-east-1", "apex", "apex-api", 5));
    assert_eq!(scale(10), ("us-east-1", "apex", "apex-worker", 2));
    assert_eq!(p(11)["url"], "https://api-east.example.com/health");
    assert_eq!(p(11)["mode"], "until");
    assert!(!plan.steps[11].destructive);
    // No password anywhere in the plan.
    assert!(!serde_json::to_string(&plan).unwrap().contains("hunter2"));
}

#[test]
fn recover_corruption_names_missing_region_variables_and_kubernetes() {
    let registry = Registry::with_resources(Arc::new(resources()));
    let rb = load("recover-corruption");
    for var in [
        "primary.namespace",
        "primary.health_url",
        "primary.kube_context",
        "primary.pitr_db_host",
        "primary.pitr_db_port",
    ] {
        let mut vars = region_vars();
        vars.remove(var);
        match resolve(&rb, &registry, vars) {
            Err(PlanError::UnknownPlaceholder { name, .. }) => assert_eq!(name, var),
            other => panic!("without {var}: {other:?}"),
        }
    }
    let mut res = resources();
    res.kubernetes.clear();
    let registry = Registry::with_resources(Arc::new(res));
    let err = resolve(&rb, &registry, region_vars())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Stop writes") && err.contains("unknown Kubernetes cluster `us-east-1`"),
        "{err}"
    );
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
