//! The built-in `failback` runbook as users enable it (`builtin_runbooks = ["failback"]`): it
//! validates against the real step registry (recovery's providers plus drbot's incident step)
//! and resolves into the seed's "Recovery to Primary" with the failover's infrastructure steps
//! in reverse: preflight first, the data synced before the gated cutover, the primary's Redis,
//! the DR workers stopped, the primary's API and workers and DNS after it, every destructive
//! step marked and naming what it touches.
//! A config with only the database: `failback` is refused at check-config with a pointer to
//! `failback-db`, which resolves; missing region variables are named.

mod common;

use common::*;
use drbot::{dispatch, reply::Reply};

/// What the config holds besides the people and regions.
#[derive(Clone, Copy, PartialEq)]
enum Infra {
    /// PostgreSQL, Redis, Kubernetes and DNS for both regions.
    Full,
    /// Only the two PostgreSQL clusters.
    DatabaseOnly,
}

fn failback_config(
    store: &str,
    dir: &std::path::Path,
    builtin: &str,
    infra: Infra,
    primary_dns: bool,
) -> String {
    // Without the common config's inline `failover` runbook (its steps use other variables).
    let base = config_text(store, 1, "30m", 0, "m");
    let start = base.find("[[runbooks]]\nname = \"failover\"").unwrap();
    let end = base.find("[[runbooks]]\nname = \"pitr\"").unwrap();
    let base = format!("{}{}", &base[..start], &base[end..]);
    let dns = if primary_dns {
        r#", dns_zone = "main", dns_name = "api.example.com", dns_type = "A", dns_value = "10.0.1.10""#
    } else {
        ""
    };
    let pg = r#"
[postgres.us-east-1]
url = "postgres://postgres:pw@10.0.1.5:5432/postgres"
bin_dir = "/usr/lib/postgresql/15/bin"
data_dir = "/var/lib/postgresql/15/main"
os_user = "postgres"
[postgres.us-west-2]
url = "postgres://postgres:pw@10.0.2.5:5432/postgres"
bin_dir = "/usr/lib/postgresql/15/bin"
data_dir = "/var/lib/postgresql/15/main"
os_user = "postgres"
"#;
    let infra_text = if infra == Infra::Full {
        format!(
            r#"
[redis.us-east-1]
url = "redis://:pw@10.0.1.6:6379"
[redis.us-west-2]
url = "redis://:pw@10.0.2.6:6379"
[kubernetes.us-east-1]
api_url = "http://127.0.0.1:9/east"
[kubernetes.us-west-2]
api_url = "http://127.0.0.1:9/west"
[dns.main]
provider = "file"
path = "{}"
"#,
            dir.join("hosts").display()
        )
    } else {
        String::new()
    };
    base.replace(
        "[regions.us-east-1]\nrole = \"primary\"\nvars = { marker = \"m-east\" }",
        &format!("[regions.us-east-1]\nrole = \"primary\"\nhealth_url = \"http://127.0.0.1:9/health\"\nvars = {{ namespace = \"apex\"{dns} }}"),
    )
    .replace(
        "[regions.us-west-2]\nrole = \"secondary\"\nvars = { marker = \"m\" }",
        "[regions.us-west-2]\nrole = \"secondary\"\nhealth_url = \"http://127.0.0.1:9/dr-health\"\nvars = { namespace = \"apex\" }",
    )
    .replace(
        "[store]",
        &format!("builtin_runbooks = [\"{builtin}\"]\n{pg}{infra_text}\n[store]"),
    )
}

fn check(text: &str) -> Result<drbot::config::Settings, String> {
    let parsed = drbot::config::parse_str(text, std::path::Path::new("."), &|_| None)
        .map_err(|e| e.to_string())?;
    drbot::config::Settings::from_parsed(parsed, "t.toml".into()).map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_failback_plans_the_reverse_of_the_failover() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("d.db").display());
    let settings = settings(&failback_config(
        &url,
        dir.path(),
        "failback",
        Infra::Full,
        true,
    ));
    let store = drbot::store::Store::connect(&url, 4).await.unwrap();
    let app = drbot::app::App::new(settings, store);
    let r = dispatch::handle(&app, &cli(&app, "bob"), "/dr failback").await;
    let Reply::Requested(v) = r else {
        panic!("{r:?}")
    };
    let steps = &v.run.plan.steps;
    let kinds: Vec<&str> = steps.iter().map(|s| s.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "k8s_status",
            "http_check",
            "incident",
            "pg_rebuild_replica",
            "pg_replication_check",
            "redis_replicate",
            "pg_switchover",
            "redis_promote",
            "redis_replicate",
            "incident",
            "k8s_scale",
            "k8s_scale",
            "k8s_scale",
            "dns_switch",
            "http_check",
            "k8s_scale",
            "pg_replication_check",
            "incident"
        ]
    );
    // Preflight is read-only and comes first; every change is approved before it runs.
    assert!(steps[..2].iter().all(|s| !s.destructive), "{steps:#?}");
    for i in [2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13, 15, 17] {
        assert!(steps[i].destructive, "step {i}: {:#?}", steps[i]);
    }
    // The cutover waits for its own approval; nothing else does.
    let gated: Vec<&str> = steps
        .iter()
        .filter(|s| s.gate)
        .map(|s| s.kind.as_str())
        .collect();
    assert_eq!(gated, ["pg_switchover"]);
    let p = |i: usize| &steps[i].params;
    // Preflight: the primary region's cluster answers for apex-api.
    assert_eq!(p(0)["kube"], "us-east-1");
    assert_eq!(p(0)["name"], "apex-api");
    assert_eq!(p(1)["url"], "http://127.0.0.1:9/dr-health");
    // Sync from the DR side, then the cutover back to the primary.
    assert_eq!(
        (&p(3)["cluster"], &p(3)["source"]),
        (&"us-east-1".into(), &"us-west-2".into())
    );
    assert_eq!(
        (&p(5)["redis"], &p(5)["master"]),
        (&"us-east-1".into(), &"us-west-2".into())
    );
    assert_eq!(
        (&p(6)["primary"], &p(6)["replica"]),
        (&"us-west-2".into(), &"us-east-1".into())
    );
    assert_eq!(p(6)["rebuild_old"], true);
    // After it: the primary's Redis, the DR Redis following it, apps, DNS, health, standby.
    assert_eq!(p(7)["redis"], "us-east-1");
    assert_eq!(
        (&p(8)["redis"], &p(8)["master"]),
        (&"us-west-2".into(), &"us-east-1".into())
    );
    // The workers the failover started in the DR region stop before the primary's start, so
    // background jobs never run in both regions.
    assert_eq!(
        (&p(10)["kube"], &p(10)["name"], &p(10)["replicas"]),
        (&"us-west-2".into(), &"apex-worker".into(), &0.into())
    );
    assert_eq!(steps[10].on_failure, recovery::runbook::OnFailure::Continue);
    assert_eq!(
        (&p(11)["kube"], &p(11)["name"], &p(11)["replicas"]),
        (&"us-east-1".into(), &"apex-api".into(), &5.into())
    );
    assert_eq!(
        (&p(12)["kube"], &p(12)["name"], &p(12)["replicas"]),
        (&"us-east-1".into(), &"apex-worker".into(), &2.into())
    );
    assert_eq!(p(13)["values"][0], "10.0.1.10");
    assert_eq!(p(13)["name"], "api.example.com");
    assert_eq!(p(13)["zone"], "main");
    assert_eq!(p(14)["url"], "http://127.0.0.1:9/health");
    assert_eq!(
        (&p(15)["kube"], &p(15)["name"], &p(15)["replicas"]),
        (&"us-west-2".into(), &"apex-api".into(), &1.into())
    );
    assert_eq!(steps[15].on_failure, recovery::runbook::OnFailure::Continue);
    assert_eq!(p(17)["status"], "monitoring");
    let touches = |i: usize| steps[i].touches.join(" | ");
    assert!(
        touches(5).contains("redis us-east-1 (10.0.1.6:6379)"),
        "{}",
        touches(5)
    );
    assert!(
        touches(5).contains("master us-west-2 (10.0.2.6:6379)"),
        "{}",
        touches(5)
    );
    assert!(
        touches(3).contains("cluster us-east-1 (10.0.1.5:5432/postgres)"),
        "{}",
        touches(3)
    );
    assert!(
        touches(10).contains("kubernetes us-west-2"),
        "{}",
        touches(10)
    );
    assert!(
        touches(11).contains("kubernetes us-east-1"),
        "{}",
        touches(11)
    );
    assert!(touches(13).contains("dns main (file "), "{}", touches(13));
    // No secret reaches the plan.
    let plan = serde_json::to_string(&v.run.plan).unwrap();
    assert!(!plan.contains(":pw@") && !plan.contains("pw@"), "{plan}");
}

#[test]
fn database_only_configs_use_failback_db() {
    let dir = tempfile::tempdir().unwrap();
    // The full runbook needs the infrastructure: check-config names what is missing and
    // points at the database-only built-in.
    let err = check(&failback_config(
        "sqlite://x.db",
        dir.path(),
        "failback",
        Infra::DatabaseOnly,
        true,
    ))
    .err()
    .expect("refused");
    assert!(err.contains("(region us-east-1)"), "{err}");
    assert!(
        err.contains(
            "unknown Kubernetes cluster `us-east-1` (no [kubernetes.<name>] is configured)"
        ),
        "{err}"
    );
    assert!(
        err.contains("enable the built-in `failback-db` instead of `failback`"),
        "{err}"
    );

    // `failback-db` with the same config resolves to the database steps only.
    let settings = check(&failback_config(
        "sqlite://x.db",
        dir.path(),
        "failback-db",
        Infra::DatabaseOnly,
        false,
    ))
    .expect("failback-db needs only the databases");
    let rb = settings
        .config
        .runbooks
        .iter()
        .find(|r| r.command == "failback")
        .unwrap();
    assert_eq!(rb.name, "failback-db");
    let kinds: Vec<&str> = rb.steps.iter().map(|s| s.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "pg_rebuild_replica",
            "pg_replication_check",
            "pg_switchover",
            "pg_replication_check"
        ]
    );
}

#[test]
fn missing_primary_dns_variables_are_named_at_check_config() {
    let dir = tempfile::tempdir().unwrap();
    let err = check(&failback_config(
        "sqlite://x.db",
        dir.path(),
        "failback",
        Infra::Full,
        false,
    ))
    .err()
    .expect("refused");
    assert!(err.contains("Switch DNS"), "{err}");
    assert!(
        err.contains("primary.dns_name") || err.contains("primary.dns_zone"),
        "{err}"
    );
    // A missing Kubernetes cluster is not the problem here, so no database-only hint.
    assert!(!err.contains("failback-db"), "{err}");
}
