//! The built-in `failover` runbook as users enable it (`builtin_runbooks = ["failover"]`): it
//! validates against the real step registry (recovery's providers plus drbot's incident and
//! email steps), resolves into the seed's order with preflight first, destructive steps
//! marked, the DR region's API and workers both started, the customer email behind its own
//! gate, and every step naming what it touches; a region missing the variables it needs is a
//! check-config error that names them.

mod common;

use common::*;
use drbot::{dispatch, reply::Reply};

fn failover_config(store: &str, dir: &std::path::Path, dns_vars: bool) -> String {
    // Without the common config's inline `failover` runbook, which would replace the built-in.
    let base = config_text(store, 1, "30m", 0, "m");
    let start = base.find("[[runbooks]]\nname = \"failover\"").unwrap();
    let end = base.find("[[runbooks]]\nname = \"pitr\"").unwrap();
    let base = format!("{}{}", &base[..start], &base[end..]);
    let dns = if dns_vars {
        r#", dns_zone = "main", dns_name = "api.example.com", dns_type = "A", dns_value = "10.0.2.10""#
    } else {
        ""
    };
    base.replace(
            "[regions.us-east-1]\nrole = \"primary\"\nvars = { marker = \"m-east\" }",
            "[regions.us-east-1]\nrole = \"primary\"\nhealth_url = \"http://127.0.0.1:9/health\"\nvars = { namespace = \"apex\" }",
        )
        .replace(
            "[regions.us-west-2]\nrole = \"secondary\"\nvars = { marker = \"m\" }",
            &format!("[regions.us-west-2]\nrole = \"secondary\"\nhealth_url = \"http://127.0.0.1:9/dr-health\"\nvars = {{ namespace = \"apex\"{dns} }}"),
        )
        .replace(
            "[store]",
            &format!(
                r#"builtin_runbooks = ["failover"]

[postgres.us-east-1]
url = "postgres://postgres:pw@10.0.1.5:5432/postgres"
[postgres.us-west-2]
url = "postgres://postgres:pw@10.0.2.5:5432/postgres"
[redis.us-west-2]
url = "redis://:pw@10.0.2.6:6379"
[kubernetes.us-east-1]
api_url = "http://127.0.0.1:9/east"
[kubernetes.us-west-2]
api_url = "http://127.0.0.1:9/west"
[dns.main]
provider = "file"
path = "{}"
[server]
public_url = "https://status.example.com"

[email]
smtp_url = "smtp://127.0.0.1:9"
from = "Status <status@example.com>"

[store]"#,
                dir.join("hosts").display()
            ),
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_failover_plans_the_seed_order() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("d.db").display());
    let settings = settings(&failover_config(&url, dir.path(), true));
    let store = drbot::store::Store::connect(&url, 4).await.unwrap();
    let app = drbot::app::App::new(settings, store);
    let r = dispatch::handle(&app, &cli(&app, "bob"), "/dr failover us-west-2").await;
    let Reply::Requested(v) = r else {
        panic!("{r:?}")
    };
    let steps = &v.run.plan.steps;
    let kinds: Vec<&str> = steps.iter().map(|s| s.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "http_check",
            "pg_replication_check",
            "k8s_status",
            "incident",
            "k8s_scale",
            "k8s_scale",
            "pg_fence",
            "pg_promote",
            "redis_promote",
            "incident",
            "k8s_scale",
            "k8s_scale",
            "dns_switch",
            "http_check",
            "email_customers",
            "incident"
        ]
    );
    // Preflight is read-only; every change after it is destructive.
    assert!(steps[..3].iter().all(|s| !s.destructive), "{steps:#?}");
    assert!(steps[3..13].iter().all(|s| s.destructive), "{steps:#?}");
    // Only the customer email waits for its own approval.
    let gated: Vec<&str> = steps
        .iter()
        .filter(|s| s.gate)
        .map(|s| s.kind.as_str())
        .collect();
    assert_eq!(gated, ["email_customers"]);
    assert_eq!(steps[0].params["url"], "http://127.0.0.1:9/health");
    assert_eq!(steps[12].params["values"][0], "10.0.2.10");
    assert_eq!(steps[12].params["name"], "api.example.com");
    // The DR region runs the API and the background workers, as the primary did.
    let scale = |i: usize| {
        (
            steps[i].params["kube"].as_str().unwrap(),
            steps[i].params["namespace"].as_str().unwrap(),
            steps[i].params["name"].as_str().unwrap(),
            steps[i].params["replicas"].as_u64().unwrap(),
        )
    };
    assert_eq!(scale(10), ("us-west-2", "apex", "apex-api", 5));
    assert_eq!(scale(11), ("us-west-2", "apex", "apex-worker", 2));
    let touches = |i: usize| steps[i].touches.join(" | ");
    assert!(
        touches(7).contains("replica us-west-2 (10.0.2.5:5432/postgres)"),
        "{}",
        touches(7)
    );
    assert!(
        touches(8).contains("redis us-west-2 (10.0.2.6:6379)"),
        "{}",
        touches(8)
    );
    assert!(touches(12).contains("dns main (file "), "{}", touches(12));
    assert!(
        touches(11).contains("kubernetes us-west-2"),
        "{}",
        touches(11)
    );
    assert!(
        touches(4).contains("kubernetes us-east-1"),
        "{}",
        touches(4)
    );
    // No secret reaches the plan.
    let plan = serde_json::to_string(&v.run.plan).unwrap();
    assert!(!plan.contains(":pw@"), "{plan}");
}

#[test]
fn missing_region_variables_are_named_at_check_config() {
    let dir = tempfile::tempdir().unwrap();
    let text = failover_config("sqlite://x.db", dir.path(), false);
    let parsed = drbot::config::parse_str(&text, std::path::Path::new("."), &|_| None).unwrap();
    let err = drbot::config::Settings::from_parsed(parsed, "t.toml".into())
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("(region us-west-2)") && err.contains("Switch DNS"),
        "{err}"
    );
    assert!(
        err.contains("region.dns_name") || err.contains("region.dns_zone"),
        "{err}"
    );
}
