//! The built-in `failback-db` and `promote-db` runbooks parse, pass `RunbookDef::problems`, and
//! resolve into plans whose steps name the region clusters and gate the risky step.

use std::{collections::BTreeMap, path::PathBuf, sync::Arc};

use recovery::{
    builtin,
    plan::Plan,
    registry::Registry,
    resources::{PgClusterDef, Resources},
    secret::Secret,
};

fn registry() -> Registry {
    let mut res = Resources::default();
    for (name, host) in [("us-east-1", "primary-db"), ("us-west-2", "dr-db")] {
        res.postgres.insert(
            name.into(),
            PgClusterDef {
                url: Secret::new(format!("postgres://postgres:pw@{host}:5432/postgres")),
                bin_dir: Some(PathBuf::from("/usr/lib/postgresql/15/bin")),
                data_dir: Some(PathBuf::from("/var/lib/postgresql/15/main")),
                os_user: Some("postgres".into()),
            },
        );
    }
    Registry::with_resources(Arc::new(res))
}

fn vars(region: Option<&str>) -> BTreeMap<String, String> {
    let mut v = BTreeMap::from([
        ("primary".to_string(), "us-east-1".to_string()),
        ("secondary".to_string(), "us-west-2".to_string()),
    ]);
    if let Some(r) = region {
        v.insert("region".into(), r.into());
    }
    v
}

#[test]
fn failback_db_parses_validates_and_gates_the_switchover() {
    let rb = builtin::get("failback-db")
        .expect("failback-db.toml is built in")
        .unwrap();
    assert_eq!(rb.command, "failback");
    let problems = rb.problems(&registry(), "failback-db");
    assert!(problems.is_empty(), "{problems:?}");
    // Placeholders are fine without any cluster configured, too.
    assert!(rb.problems(&Registry::builtin(), "failback-db").is_empty());

    let plan = Plan::resolve(&registry(), &rb, BTreeMap::new(), vars(None), "rev", false).unwrap();
    let kinds: Vec<&str> = plan.steps.iter().map(|s| s.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "pg_rebuild_replica",
            "pg_replication_check",
            "pg_switchover",
            "pg_replication_check"
        ]
    );
    assert_eq!(plan.steps[0].params["cluster"], "us-east-1");
    assert_eq!(plan.steps[0].params["source"], "us-west-2");
    let switchover = &plan.steps[2];
    assert!(switchover.gate && switchover.destructive);
    assert_eq!(switchover.params["primary"], "us-west-2");
    assert_eq!(switchover.params["replica"], "us-east-1");
    assert!(!plan.steps[1].destructive);
    // The plan never shows a password.
    assert!(!serde_json::to_string(&plan).unwrap().contains("pw@"));
}

#[test]
fn promote_db_parses_validates_and_gates_the_promotion() {
    let rb = builtin::get("promote-db")
        .expect("promote-db.toml is built in")
        .unwrap();
    assert_eq!(rb.command, "failover");
    let problems = rb.problems(&registry(), "promote-db");
    assert!(problems.is_empty(), "{problems:?}");

    let args = BTreeMap::from([("region".to_string(), "us-west-2".to_string())]);
    let plan = Plan::resolve(
        &registry(),
        &rb,
        args,
        vars(Some("us-west-2")),
        "rev",
        false,
    )
    .unwrap();
    let kinds: Vec<&str> = plan.steps.iter().map(|s| s.kind.as_str()).collect();
    assert_eq!(kinds, ["pg_replication_check", "pg_fence", "pg_promote"]);
    assert_eq!(plan.steps[1].params["cluster"], "us-east-1");
    assert_eq!(plan.steps[1].params["allow_unreachable"], true);
    let promote = &plan.steps[2];
    assert!(promote.gate, "an unknown lag must be decided by people");
    assert_eq!(promote.params["replica"], "us-west-2");
    assert_eq!(promote.params["primary"], "us-east-1");

    // Naming a cluster that is not configured is caught when the plan is resolved.
    let err = Plan::resolve(
        &registry(),
        &rb,
        BTreeMap::new(),
        vars(Some("eu-central-1")),
        "rev",
        false,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("unknown PostgreSQL cluster `eu-central-1`"),
        "{err}"
    );
}
