//! The built-in `failover` runbook end to end through the real binary (`drbot cmd` to request
//! and approve, `drbot serve` to drive): a real PostgreSQL primary and streaming replica, real
//! Redis master and replica, moto's Route53, a loopback fake of each region's Kubernetes API
//! (the documented test double), and real HTTP health endpoints. `serve` is SIGKILLed after
//! every step in turn and restarted; the run still finishes, and each change happened once:
//! one scale PATCH per workload, one timeline entry per incident step, the DR database and
//! Redis promoted, the primary fenced, DNS pointing at the DR region. Then the built-in
//! `failback`, killed after every step the same way: everything is back in the primary region
//! (its database rebuilt from the DR one, keeping what was written there during the outage,
//! and promoted; Redis; the replica counts, one scale PATCH each; DNS), each change made once.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use drbot_e2e::*;
use recovery::testkit::{kube::FakeKube, moto, pg::PgCluster, redis::RedisServer};

/// A `/health` endpoint answering 200 on a loopback port (in the test's runtime).
async fn health() -> String {
    let app = axum::Router::new().route(
        "/health",
        axum::routing::get(|| async { axum::Json(serde_json::json!({ "status": "ok" })) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/health")
}

/// moto routes a request to a service by the credential scope of its (unchecked) signature.
const ROUTE53_AUTH: &str = "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/route53/aws4_request, SignedHeaders=host, Signature=0";

/// Creates `example.com.` in moto's Route53 through its REST API; returns the zone id.
fn hosted_zone(endpoint: &str) -> String {
    let port: u16 = endpoint.rsplit(':').next().unwrap().parse().unwrap();
    let body = r#"<?xml version="1.0" encoding="UTF-8"?>
<CreateHostedZoneRequest xmlns="https://route53.amazonaws.com/doc/2013-04-01/"><Name>example.com.</Name><CallerReference>drbot-failover-e2e</CallerReference></CreateHostedZoneRequest>"#;
    let (status, text) = http_post(
        port,
        "/2013-04-01/hostedzone",
        body,
        &[
            ("Content-Type", "application/xml".to_string()),
            ("Authorization", ROUTE53_AUTH.to_string()),
        ],
    );
    assert!(status < 300, "CreateHostedZone: {status} {text}");
    let doc = roxmltree::Document::parse(&text).unwrap();
    let id = doc
        .descendants()
        .find(|n| n.has_tag_name("Id") && n.text().is_some_and(|t| t.contains("hostedzone")))
        .and_then(|n| n.text())
        .unwrap();
    id.trim_start_matches("/hostedzone/").to_string()
}

/// A GET with an Authorization header.
fn http_get_with(port: u16, path: &str, auth: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    let status = buf
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn write_config(dir: &Path, port: u16, env: &Env) -> PathBuf {
    let text = format!(
        r#"builtin_runbooks = ["failover", "failback"]

[server]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}"

[store]
url = "sqlite://{db}"

[engine]
lease = "2s"
poll_interval = "100ms"
shutdown_grace = "5s"

[[people]]
name = "alice"
roles = ["sre-lead"]

[[people]]
name = "bob"
roles = ["oncall"]

[regions.us-east-1]
role = "primary"
health_url = "{east_health}"
vars = {{ namespace = "apex", dns_zone = "main", dns_name = "api.example.com", dns_type = "A", dns_value = "10.0.1.10" }}

[regions.us-west-2]
role = "secondary"
health_url = "{west_health}"
vars = {{ namespace = "apex", dns_zone = "main", dns_name = "api.example.com", dns_type = "A", dns_value = "10.0.2.10" }}

{east_pg}
{west_pg}
[redis.us-east-1]
url = "{east_redis}"

[redis.us-west-2]
url = "{west_redis}"

[kubernetes.us-east-1]
api_url = "{east_kube}"

[kubernetes.us-west-2]
api_url = "{west_kube}"

[dns.main]
provider = "route53"
hosted_zone_id = "{zone}"
endpoint = "{moto}"

[email]
smtp_url = "smtp://127.0.0.1:9"
from = "Status <status@example.com>"
"#,
        db = dir.join("drbot.db").display(),
        east_health = env.east_health,
        west_health = env.west_health,
        east_pg = pg_section("us-east-1", &env.primary),
        west_pg = pg_section("us-west-2", &env.replica),
        east_redis = env.redis_master.url(),
        west_redis = env.redis_replica.url(),
        east_kube = env.east_kube.url(),
        west_kube = env.west_kube.url(),
        zone = env.zone,
        moto = env.moto,
    );
    let path = dir.join("drbot.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A `[postgres.<name>]` section with what rebuilding `c` as a replica needs.
fn pg_section(name: &str, c: &PgCluster) -> String {
    format!(
        "[postgres.{name}]\nurl = \"{}\"\nbin_dir = \"{}\"\ndata_dir = \"{}\"\nos_user = \"postgres\"\n",
        c.url("postgres"),
        PgCluster::bin_dir().unwrap().display(),
        c.data_dir().display()
    )
}

/// The hosted zone's record sets, as moto lists them.
fn rrsets(env: &Env) -> String {
    let moto_port: u16 = env.moto.rsplit(':').next().unwrap().parse().unwrap();
    let (status, rrsets) = http_get_with(
        moto_port,
        &format!("/2013-04-01/hostedzone/{}/rrset", env.zone),
        ROUTE53_AUTH,
    );
    assert_eq!(status, 200, "{rrsets}");
    rrsets
}

struct Env {
    primary: PgCluster,
    replica: PgCluster,
    redis_master: RedisServer,
    redis_replica: RedisServer,
    east_kube: FakeKube,
    west_kube: FakeKube,
    east_health: String,
    west_health: String,
    zone: String,
    moto: String,
}

fn finished_steps(v: &serde_json::Value) -> usize {
    v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["state"] == "succeeded" || s["state"] == "failed")
        .count()
}

/// Polls run `id` until it succeeds, approving its gates, and SIGKILLs `serve` each time a
/// step has just finished (then starts a new one); returns the server and the kills.
fn drive_with_kills(
    cfg: &Path,
    port: u16,
    log: &Path,
    mut server: Server,
    id: i64,
) -> (Server, usize) {
    let total = show(cfg, id)["steps"].as_array().unwrap().len();
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut kills = 0;
    let mut seen = finished_steps(&show(cfg, id));
    loop {
        let v = show(cfg, id);
        match state(&v) {
            "succeeded" => return (server, kills),
            "failed" | "cancelled" | "needs_attention" => panic!(
                "run {id} ended {}: {}\n{}",
                state(&v),
                serde_json::to_string_pretty(&v["steps"]).unwrap(),
                server.log_text()
            ),
            _ => {}
        }
        let done = finished_steps(&v);
        if done > seen && done < total {
            // A step just finished: kill the server at this boundary and start a new one.
            // Then look again before approving a gate: approving first would start the gated
            // (destructive, not idempotent) step, and the kill could land in it.
            seen = done;
            server.kill9();
            kills += 1;
            server = Server::start(cfg, port, log);
        } else if state(&v) == "awaiting_gate" {
            // A gated step (the customer email, the cutover) waits for its own approval.
            let o = cmd(cfg, "alice", &format!("/dr approve {id}"));
            assert!(o.status.success(), "gate: {}{}", stdout(&o), stderr(&o));
        }
        assert!(
            Instant::now() < deadline,
            "run {id} did not finish: {}\n{}",
            serde_json::to_string_pretty(&v["steps"]).unwrap(),
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn failover_survives_a_kill_after_every_step() {
    let moto_url = moto::endpoint();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let primary = PgCluster::start().unwrap();
    primary
        .psql(
            "postgres",
            "CREATE TABLE projects (id int primary key); INSERT INTO projects VALUES (1)",
        )
        .unwrap();
    let replica = PgCluster::start_replica_of(&primary).unwrap();
    replica
        .wait_for_replay(&primary, Duration::from_secs(30))
        .unwrap();
    let redis_master = RedisServer::start().unwrap();
    let redis_replica = RedisServer::start_replica_of(&redis_master).unwrap();
    redis_replica.wait_link_up(Duration::from_secs(20)).unwrap();
    let (east_kube, west_kube, east_health, west_health) = rt.block_on(async {
        let east = FakeKube::start().await;
        east.add_deployment("apex", "apex-api", 3);
        east.add_deployment("apex", "apex-worker", 2);
        let west = FakeKube::start().await;
        west.add_deployment("apex", "apex-api", 1);
        // The DR region's workers stand at 0 until the failover starts them.
        west.add_deployment("apex", "apex-worker", 0);
        (east, west, health().await, health().await)
    });
    let env = Env {
        zone: hosted_zone(&moto_url),
        moto: moto_url,
        primary,
        replica,
        redis_master,
        redis_replica,
        east_kube,
        west_kube,
        east_health,
        west_health,
    };

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = write_config(dir.path(), port, &env);
    let o = drbot(&cfg, &["check-config"]);
    assert!(
        o.status.success(),
        "check-config: {}{}",
        stdout(&o),
        stderr(&o)
    );
    let o = cmd(&cfg, "bob", "/dr failover us-west-2");
    assert!(o.status.success(), "request: {}{}", stdout(&o), stderr(&o));
    let o = cmd(&cfg, "alice", "/dr approve 1");
    assert!(o.status.success(), "approve: {}{}", stdout(&o), stderr(&o));

    let log = dir.path().join("serve.log");
    let server = Server::start(&cfg, port, &log);
    let total = show(&cfg, 1)["steps"].as_array().unwrap().len();
    assert_eq!(total, 16);
    let (server, kills) = drive_with_kills(&cfg, port, &log, server, 1);
    assert!(kills >= 5, "only {kills} kills");

    let v = show(&cfg, 1);
    let states: Vec<&str> = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["state"].as_str().unwrap())
        .collect();
    assert!(states.iter().all(|s| *s == "succeeded"), "{states:?}");

    // The database: DR promoted and writable; the old primary fenced read-only.
    assert!(!env.replica.is_in_recovery().unwrap());
    env.replica
        .psql("postgres", "INSERT INTO projects VALUES (2)")
        .unwrap();
    assert_eq!(
        env.primary
            .psql("postgres", "SHOW default_transaction_read_only")
            .unwrap(),
        "on"
    );
    // Redis: the DR replica is a master.
    assert_eq!(env.redis_replica.role().unwrap(), "master");
    // Kubernetes: one scale PATCH per workload, whatever the kills.
    let patches = |k: &FakeKube, name: &str| {
        k.requests()
            .iter()
            .filter(|r| r.method == "PATCH" && r.path.ends_with(&format!("/{name}/scale")))
            .count()
    };
    assert_eq!(patches(&env.east_kube, "apex-api"), 1);
    assert_eq!(patches(&env.east_kube, "apex-worker"), 1);
    assert_eq!(patches(&env.west_kube, "apex-api"), 1);
    assert_eq!(patches(&env.west_kube, "apex-worker"), 1);
    assert_eq!(
        env.west_kube
            .workload("deployments", "apex", "apex-api")
            .unwrap()
            .ready,
        5
    );
    // Background jobs run in the DR region too.
    assert_eq!(
        env.west_kube
            .workload("deployments", "apex", "apex-worker")
            .unwrap()
            .ready,
        2
    );
    assert_eq!(
        env.east_kube
            .workload("deployments", "apex", "apex-api")
            .unwrap()
            .replicas,
        0
    );
    // DNS: the record points at the DR region.
    let records = rrsets(&env);
    assert!(
        records.contains("api.example.com") && records.contains("10.0.2.10"),
        "{records}"
    );
    // The incident: one timeline entry per incident step (open, identified, monitoring).
    let o = drbot(&cfg, &["--json", "audit", "--run", "1", "--limit", "10000"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let audit = stdout(&o);
    assert_eq!(audit.matches("incident.opened").count(), 1, "{audit}");
    assert_eq!(audit.matches("incident.updated").count(), 2, "{audit}");
    let o = drbot(&cfg, &["audit", "--verify"]);
    assert!(
        o.status.success(),
        "audit chain: {}{}",
        stdout(&o),
        stderr(&o)
    );

    // Failback, killed after every step too.
    let o = cmd(&cfg, "bob", "/dr failback");
    assert!(o.status.success(), "failback: {}{}", stdout(&o), stderr(&o));
    let o = cmd(&cfg, "alice", "/dr approve 2");
    assert!(o.status.success(), "approve: {}{}", stdout(&o), stderr(&o));
    let (mut server, kills) = drive_with_kills(&cfg, port, &log, server, 2);
    server.terminate(20);
    assert!(kills >= 5, "only {kills} kills in the failback");
    let v = show(&cfg, 2);
    assert!(
        v["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["state"] == "succeeded"),
        "{:#}",
        v["steps"]
    );
    // The database is back in us-east-1, with the row written on the DR side during the
    // outage; us-west-2 streams from it again.
    assert!(!env.primary.is_in_recovery().unwrap());
    assert_eq!(
        env.primary
            .psql("postgres", "SELECT count(*) FROM projects WHERE id = 2")
            .unwrap(),
        "1"
    );
    env.primary
        .psql("postgres", "INSERT INTO projects VALUES (3)")
        .unwrap();
    assert!(env.replica.is_in_recovery().unwrap());
    assert_eq!(env.redis_master.role().unwrap(), "master");
    assert_eq!(env.redis_replica.role().unwrap(), "slave");
    // One more scale PATCH per workload, whatever the kills; the counts as before the outage.
    assert_eq!(patches(&env.east_kube, "apex-api"), 2);
    assert_eq!(patches(&env.east_kube, "apex-worker"), 2);
    assert_eq!(patches(&env.west_kube, "apex-api"), 2);
    assert_eq!(patches(&env.west_kube, "apex-worker"), 2);
    let replicas =
        |k: &FakeKube, name: &str| k.workload("deployments", "apex", name).unwrap().replicas;
    assert_eq!(replicas(&env.east_kube, "apex-api"), 5);
    assert_eq!(replicas(&env.east_kube, "apex-worker"), 2);
    assert_eq!(replicas(&env.west_kube, "apex-api"), 1);
    assert_eq!(replicas(&env.west_kube, "apex-worker"), 0);
    // DNS back at the primary region.
    let records = rrsets(&env);
    assert!(
        records.contains("10.0.1.10") && !records.contains("10.0.2.10"),
        "{records}"
    );
    let o = drbot(&cfg, &["audit", "--verify"]);
    assert!(o.status.success(), "audit chain: {}", stdout(&o));
}
