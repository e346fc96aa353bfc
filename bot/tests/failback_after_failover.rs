//! The built-in `failover` and then the built-in `failback`, requested and approved by two
//! people through `dispatch::handle` and driven by drbot's real driver in this process, on real
//! peers: a PostgreSQL 15 primary (us-east-1) and its streaming replica (us-west-2), a Redis
//! master and its replica, moto's Route53, the apex-api health service per region (200 only
//! while its region's database takes writes) and the loopback fake of each region's
//! Kubernetes API (the documented test double). After both runs everything is back as it was:
//! the database and Redis roles, the DNS record, the replica counts (the fake saw each scale in
//! the seed's order), data written on the DR side during the outage kept on the primary, and
//! the incident's timeline telling the whole story.

mod common;

use std::time::{Duration, Instant};

use common::*;
use drbot::{app::App, dispatch, reply::Reply, store::runs::RunState};
use recovery::testkit::{
    kube::FakeKube, kube::FakeKubeOptions, moto, pg::PgCluster, redis::RedisServer,
};
use tokio_util::sync::CancellationToken;

/// moto routes a request to a service by the credential scope of its (unchecked) signature.
const ROUTE53_AUTH: &str = "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/route53/aws4_request, SignedHeaders=host, Signature=0";

/// Creates `example.com.` in moto's Route53; returns the zone id.
async fn hosted_zone(endpoint: &str) -> String {
    let body = r#"<?xml version="1.0" encoding="UTF-8"?>
<CreateHostedZoneRequest xmlns="https://route53.amazonaws.com/doc/2013-04-01/"><Name>example.com.</Name><CallerReference>drbot-failback</CallerReference></CreateHostedZoneRequest>"#;
    let resp = reqwest::Client::new()
        .post(format!("{endpoint}/2013-04-01/hostedzone"))
        .header("Content-Type", "application/xml")
        .header("Authorization", ROUTE53_AUTH)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert!(status.is_success(), "CreateHostedZone: {status} {text}");
    let start = text.find("<Id>/hostedzone/").expect("zone id") + "<Id>/hostedzone/".len();
    let end = start + text[start..].find("</Id>").unwrap();
    text[start..end].to_string()
}

/// The A record values of `api.example.com.` as moto holds them.
async fn api_record(endpoint: &str, zone: &str) -> Vec<String> {
    let text = reqwest::Client::new()
        .get(format!("{endpoint}/2013-04-01/hostedzone/{zone}/rrset"))
        .header("Authorization", ROUTE53_AUTH)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let Some(at) = text.find("<Name>api.example.com.</Name>") else {
        return vec![];
    };
    let set = &text[at..];
    let set = &set[..set.find("</ResourceRecordSet>").unwrap_or(set.len())];
    set.split("<Value>")
        .skip(1)
        .filter_map(|v| v.split("</Value>").next())
        .map(str::to_string)
        .collect()
}

struct Peers {
    east_pg: PgCluster,
    west_pg: PgCluster,
    east_redis: RedisServer,
    west_redis: RedisServer,
    east_kube: FakeKube,
    west_kube: FakeKube,
    east_health: String,
    west_health: String,
    zone: String,
    moto: String,
}

fn pg_section(name: &str, c: &PgCluster) -> String {
    format!(
        "[postgres.{name}]\nurl = \"{}\"\nbin_dir = \"{}\"\ndata_dir = \"{}\"\nos_user = \"postgres\"\n",
        c.url("postgres"),
        PgCluster::bin_dir().unwrap().display(),
        c.data_dir().display()
    )
}

fn config(store: &str, p: &Peers) -> String {
    format!(
        r#"builtin_runbooks = ["failover", "failback"]

[server]
public_url = "https://status.example.com"

[store]
url = "{store}"

[approvals]
required = 1

[engine]
lease = "5s"
poll_interval = "50ms"

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
        east_health = p.east_health,
        west_health = p.west_health,
        east_pg = pg_section("us-east-1", &p.east_pg),
        west_pg = pg_section("us-west-2", &p.west_pg),
        east_redis = p.east_redis.url(),
        west_redis = p.west_redis.url(),
        east_kube = p.east_kube.url(),
        west_kube = p.west_kube.url(),
        zone = p.zone,
        moto = p.moto,
    )
}

/// Requests `text` as bob, approves it (and each gate) as alice, and waits until it succeeds.
async fn run_to_end(app: &App, text: &str) -> i64 {
    let r = dispatch::handle(app, &cli(app, "bob"), text).await;
    let Reply::Requested(v) = r else {
        panic!("{text}: {r:?}")
    };
    let id = v.run.id;
    let approve = format!("/dr approve {id}");
    let r = dispatch::handle(app, &cli(app, "alice"), &approve).await;
    assert!(matches!(r, Reply::Approved { .. }), "{approve}: {r:?}");
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut gates = 0;
    loop {
        let run = app.store.run(id).await.unwrap().unwrap();
        match run.state {
            RunState::Succeeded => break,
            RunState::AwaitingGate => {
                gates += 1;
                assert!(gates < 5, "{text}: too many gates");
                let r = dispatch::handle(app, &cli(app, "alice"), &approve).await;
                assert!(matches!(r, Reply::Approved { .. }), "gate: {r:?}");
            }
            s if !s.is_active() || s == RunState::NeedsAttention => {
                panic!(
                    "{text} ended {}:\n{}",
                    s.as_str(),
                    steps_text(app, id).await
                )
            }
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "{text} did not finish:\n{}",
            steps_text(app, id).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("{text}:\n{}", steps_text(app, id).await);
    id
}

async fn steps_text(app: &App, id: i64) -> String {
    app.store
        .steps(id)
        .await
        .unwrap()
        .iter()
        .map(|s| {
            format!(
                "  {:>2}. {:<10} {:<22} {:>6} ms  {}",
                s.idx + 1,
                s.state.as_str(),
                s.kind,
                s.duration_ms.unwrap_or(0),
                s.error
                    .clone()
                    .or_else(|| s.summary.clone())
                    .unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `(workload, replicas)` of each scale PATCH the fake saw, in order.
fn scale_patches(k: &FakeKube) -> Vec<(String, u64)> {
    k.requests()
        .iter()
        .filter(|r| r.method == "PATCH" && r.path.ends_with("/scale") && r.status < 300)
        .map(|r| {
            let name = r.path.rsplit('/').nth(1).unwrap().to_string();
            (name, r.body["spec"]["replicas"].as_u64().unwrap())
        })
        .collect()
}

#[test]
fn failback_after_a_failover_puts_everything_back() {
    let moto_url = moto::endpoint();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let east_pg = PgCluster::start().unwrap();
        east_pg
            .psql(
                "postgres",
                "CREATE TABLE projects (id int primary key); INSERT INTO projects VALUES (1)",
            )
            .unwrap();
        let west_pg = PgCluster::start_replica_of(&east_pg).unwrap();
        west_pg
            .wait_for_replay(&east_pg, Duration::from_secs(30))
            .unwrap();
        let east_redis = RedisServer::start().unwrap();
        let west_redis = RedisServer::start_replica_of(&east_redis).unwrap();
        let fast = || FakeKubeOptions {
            tick: Duration::from_millis(20),
            ..Default::default()
        };
        let east_kube = FakeKube::start_with(fast()).await;
        east_kube.add_deployment("apex", "apex-api", 5);
        east_kube.add_deployment("apex", "apex-worker", 2);
        let west_kube = FakeKube::start_with(fast()).await;
        west_kube.add_deployment("apex", "apex-api", 1);
        // The DR region's workers stand at 0 until a failover starts them.
        west_kube.add_deployment("apex", "apex-worker", 0);
        let stop = CancellationToken::new();
        let east_health = drbot::demo::apex::start(
            "us-east-1",
            "127.0.0.1",
            &east_pg.url("postgres"),
            stop.clone(),
        )
        .await
        .unwrap()
        .health_url;
        let west_health = drbot::demo::apex::start(
            "us-west-2",
            "127.0.0.1",
            &west_pg.url("postgres"),
            stop.clone(),
        )
        .await
        .unwrap()
        .health_url;
        let zone = hosted_zone(&moto_url).await;
        let peers = Peers {
            east_pg,
            west_pg,
            east_redis,
            west_redis,
            east_kube,
            west_kube,
            east_health,
            west_health,
            zone,
            moto: moto_url,
        };

        let dir = tempfile::tempdir().unwrap();
        let store_url = format!("sqlite://{}", dir.path().join("drbot.db").display());
        let settings = settings(&config(&store_url, &peers));
        let store = drbot::store::Store::connect(&store_url, 8).await.unwrap();
        let app = App::new(settings, store);
        let driver = tokio::spawn(drbot::driver::run(
            app.clone(),
            drbot::driver::owner_id(),
            stop.clone(),
        ));

        // The outage: fail over to us-west-2, which then takes writes of its own.
        run_to_end(&app, "/dr failover us-west-2").await;
        assert!(!peers.west_pg.is_in_recovery().unwrap());
        peers
            .west_pg
            .psql("postgres", "INSERT INTO projects VALUES (2)")
            .unwrap();
        assert_eq!(peers.west_redis.role().unwrap(), "master");
        peers
            .west_redis
            .cmd::<String>(&["SET", "written-in-dr", "yes"])
            .unwrap();
        assert_eq!(api_record(&peers.moto, &peers.zone).await, ["10.0.2.10"]);

        // Recovery to Primary.
        let failback = run_to_end(&app, "/dr failback").await;

        // PostgreSQL: us-east-1 is the primary again, with the DR side's writes; us-west-2
        // streams from it.
        assert!(!peers.east_pg.is_in_recovery().unwrap());
        assert!(peers.west_pg.is_in_recovery().unwrap());
        assert_eq!(
            peers
                .east_pg
                .psql(
                    "postgres",
                    "SELECT string_agg(id::text, ',' ORDER BY id) FROM projects"
                )
                .unwrap(),
            "1,2"
        );
        peers
            .east_pg
            .psql("postgres", "INSERT INTO projects VALUES (3)")
            .unwrap();
        peers
            .west_pg
            .wait_for_replay(&peers.east_pg, Duration::from_secs(30))
            .unwrap();
        assert_eq!(
            peers
                .west_pg
                .psql("postgres", "SELECT count(*) FROM projects")
                .unwrap(),
            "3"
        );
        // Redis: us-east-1 master with what was written in the DR region; us-west-2 follows.
        assert_eq!(peers.east_redis.role().unwrap(), "master");
        assert_eq!(peers.west_redis.role().unwrap(), "slave");
        assert_eq!(
            peers
                .east_redis
                .cmd::<String>(&["GET", "written-in-dr"])
                .unwrap(),
            "yes"
        );
        peers
            .east_redis
            .cmd::<String>(&["SET", "after-failback", "1"])
            .unwrap();
        peers
            .west_redis
            .wait_caught_up(&peers.east_redis, Duration::from_secs(10))
            .unwrap();
        assert_eq!(
            peers
                .west_redis
                .cmd::<String>(&["GET", "after-failback"])
                .unwrap(),
            "1"
        );
        // DNS points at the primary region again.
        assert_eq!(api_record(&peers.moto, &peers.zone).await, ["10.0.1.10"]);
        // Kubernetes, in order: the failover stopped the primary's API and workers, the
        // failback started them again at the seed's sizes; the DR API and workers went up,
        // then the DR workers stopped (before the primary's started) and the DR API went back
        // to its standby size.
        let pairs = |v: &[(&str, u64)]| -> Vec<(String, u64)> {
            v.iter().map(|(n, r)| (n.to_string(), *r)).collect()
        };
        assert_eq!(
            scale_patches(&peers.east_kube),
            pairs(&[
                ("apex-api", 0),
                ("apex-worker", 0),
                ("apex-api", 5),
                ("apex-worker", 2)
            ])
        );
        assert_eq!(
            scale_patches(&peers.west_kube),
            pairs(&[
                ("apex-api", 5),
                ("apex-worker", 2),
                ("apex-worker", 0),
                ("apex-api", 1)
            ])
        );
        let ready = |k: &FakeKube, name: &str| k.workload("deployments", "apex", name).unwrap();
        assert_eq!(ready(&peers.east_kube, "apex-api").ready, 5);
        assert_eq!(ready(&peers.east_kube, "apex-worker").ready, 2);
        assert_eq!(ready(&peers.west_kube, "apex-api").replicas, 1);
        assert_eq!(ready(&peers.west_kube, "apex-worker").replicas, 0);
        // The primary's API was scaled up only after its database was promoted back.
        let steps = app.store.steps(failback).await.unwrap();
        let finished = |kind: &str| {
            steps
                .iter()
                .find(|s| s.kind == kind)
                .and_then(|s| s.finished_at)
                .unwrap()
        };
        let scale_start = steps
            .iter()
            .find(|s| s.kind == "k8s_scale" && s.name.contains("in us-east-1"))
            .and_then(|s| s.started_at)
            .unwrap();
        assert!(finished("pg_switchover") <= scale_start);
        assert!(finished("redis_promote") <= scale_start);

        // The incident: opened by the failover, told about the failback, left in monitoring.
        let open = app
            .store
            .open_incident()
            .await
            .unwrap()
            .expect("open incident");
        assert_eq!(open.status.as_str(), "monitoring");
        let updates = app.store.incident_updates(open.id).await.unwrap();
        let from_failback: Vec<&str> = updates
            .iter()
            .filter(|u| u.author.contains(&format!("run {failback}")))
            .map(|u| u.body.as_str())
            .collect();
        assert_eq!(from_failback.len(), 3, "{updates:#?}");
        assert!(from_failback[0].contains("moving service back to our primary region (us-east-1)"));
        assert!(from_failback[1].contains("in us-east-1 have taken over again"));
        assert!(from_failback[2].contains("running from our primary region (us-east-1) again"));
        assert_eq!(updates.last().unwrap().status.as_str(), "monitoring");

        stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), driver).await;
        app.audit.flush().await.unwrap();
        drop(peers);
    });
}
