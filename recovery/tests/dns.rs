//! `dns_switch` and `dns_check` built from the registry, against a real moto Route53 (through
//! a loopback proxy that keeps changes PENDING where a test needs it) and against record files
//! in both formats: upserts, switches with the previous value recorded, CNAME, alias and
//! weighted records, read-back, errors sorted into fatal and retryable, and validation.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicU32, AtomicUsize, Ordering},
    },
};

use aws_sdk_route53::{
    Client,
    config::{BehaviorVersion, Credentials, Region},
    types::RrType,
};
use recovery::{
    registry::Registry,
    resources::{DnsFileFormat, DnsZoneDef, Resources},
    step::{ProgressSink, StepContext, StepError, StepOutput},
    testkit::moto,
};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

static NEXT: AtomicU32 = AtomicU32::new(1);

/// An SDK client with explicit test credentials (independent of the environment).
fn sdk(endpoint: &str) -> Client {
    let conf = aws_sdk_route53::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(moto::REGION))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new(
            moto::ACCESS_KEY_ID,
            moto::SECRET_ACCESS_KEY,
            None,
            None,
            "drbot-tests",
        ))
        .build();
    Client::from_conf(conf)
}

/// A fresh hosted zone on moto: its domain and id (`Z…`).
async fn hosted_zone(endpoint: &str) -> (String, String) {
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let domain = format!("t{}-{n}.example.com", std::process::id());
    let out = sdk(endpoint)
        .create_hosted_zone()
        .name(&domain)
        .caller_reference(format!("drbot-{}-{n}", std::process::id()))
        .send()
        .await
        .expect("create hosted zone");
    let id = out
        .hosted_zone()
        .expect("hosted zone")
        .id()
        .trim_start_matches("/hostedzone/")
        .to_string();
    (domain, id)
}

fn route53(zone_id: &str, endpoint: &str) -> DnsZoneDef {
    DnsZoneDef::Route53 {
        hosted_zone_id: zone_id.into(),
        region: Some(moto::REGION.into()),
        endpoint: Some(endpoint.into()),
    }
}

fn registry(zones: Vec<(&str, DnsZoneDef)>) -> Registry {
    let dns: BTreeMap<String, DnsZoneDef> =
        zones.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    Registry::with_resources(Arc::new(Resources {
        dns,
        ..Default::default()
    }))
}

/// Validates, builds and runs one step; returns its result and the progress lines.
async fn run(
    reg: &Registry,
    kind: &str,
    params: Value,
) -> (Result<StepOutput, StepError>, Vec<String>) {
    let k = reg.get(kind).expect("registered kind");
    k.validate(&params)
        .unwrap_or_else(|e| panic!("validate {params}: {e}"));
    let step = k
        .build(&params)
        .unwrap_or_else(|e| panic!("build {params}: {e}"));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let ctx = StepContext {
        run_id: 7,
        step_index: 2,
        attempt: 1,
        vars: BTreeMap::new(),
        progress: ProgressSink::new(tx),
        cancel: CancellationToken::new(),
        ..Default::default()
    };
    let result = step.run(&ctx).await;
    drop(ctx);
    let mut lines = Vec::new();
    while let Some(l) = rx.recv().await {
        lines.push(l);
    }
    (result, lines)
}

async fn ok(reg: &Registry, kind: &str, params: Value) -> StepOutput {
    match run(reg, kind, params.clone()).await.0 {
        Ok(out) => out,
        Err(e) => panic!("{kind} {params} failed: {e:?}"),
    }
}

async fn err(reg: &Registry, kind: &str, params: Value) -> StepError {
    match run(reg, kind, params.clone()).await.0 {
        Ok(out) => panic!("{kind} {params} succeeded: {out:?}"),
        Err(e) => e,
    }
}

/// What Route53 (moto) holds for `name`/`rtype`, read with the SDK directly:
/// `(values, ttl, alias dns name, set identifier, weight)` per record set.
#[allow(clippy::type_complexity)]
async fn stored(
    endpoint: &str,
    zone_id: &str,
    name: &str,
    rtype: RrType,
) -> Vec<(
    Vec<String>,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<i64>,
)> {
    let out = sdk(endpoint)
        .list_resource_record_sets()
        .hosted_zone_id(zone_id)
        .send()
        .await
        .expect("list record sets");
    out.resource_record_sets()
        .iter()
        .filter(|s| s.name().trim_end_matches('.') == name && *s.r#type() == rtype)
        .map(|s| {
            (
                s.resource_records()
                    .iter()
                    .map(|r| r.value().to_string())
                    .collect(),
                s.ttl(),
                s.alias_target()
                    .map(|a| a.dns_name().trim_end_matches('.').to_string()),
                s.set_identifier().map(str::to_string),
                s.weight(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_is_upserted_switched_and_checked() {
    let endpoint = moto::endpoint();
    let (domain, zone_id) = hosted_zone(&endpoint).await;
    let reg = registry(vec![("main", route53(&zone_id, &endpoint))]);
    let name = format!("api.{domain}");

    let first = ok(
        &reg,
        "dns_switch",
        json!({ "zone": "main", "name": name, "type": "A", "values": ["10.0.1.10"] }),
    )
    .await;
    assert!(
        first.summary.starts_with(&format!(
            "{name} A → 10.0.1.10 (was: no record), INSYNC in "
        )),
        "{}",
        first.summary
    );
    assert_eq!(first.data["previous"], Value::Null);
    assert!(
        first.data["change_id"]
            .as_str()
            .is_some_and(|c| !c.is_empty())
    );

    let (out, lines) = run(
        &reg,
        "dns_switch",
        json!({ "zone": "main", "name": name, "type": "a", "values": ["10.0.2.10", "10.0.2.11"],
                "ttl": 30, "comment": "failover to DR" }),
    )
    .await;
    let out = out.expect("switch");
    assert!(
        out.summary.starts_with(&format!(
            "{name} A → 10.0.2.10, 10.0.2.11 (was 10.0.1.10), INSYNC in "
        )),
        "{}",
        out.summary
    );
    assert_eq!(
        out.data["previous"],
        json!({ "values": ["10.0.1.10"], "ttl": 60 })
    );
    assert_eq!(
        out.data["new"],
        json!({ "values": ["10.0.2.10", "10.0.2.11"], "ttl": 30 })
    );
    assert_eq!(out.data["status"], "INSYNC");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("is 10.0.1.10; setting 10.0.2.10")),
        "{lines:?}"
    );
    let mut held = stored(&endpoint, &zone_id, &name, RrType::A).await;
    held[0].0.sort();
    assert_eq!(
        held,
        [(
            vec!["10.0.2.10".to_string(), "10.0.2.11".to_string()],
            Some(30),
            None,
            None,
            None
        )]
    );

    // Idempotent: the same switch again changes nothing and says so.
    let again = ok(
        &reg,
        "dns_switch",
        json!({ "zone": "main", "name": name, "type": "A", "values": ["10.0.2.11", "10.0.2.10"],
                "ttl": 30 }),
    )
    .await;
    assert!(again.summary.contains("(unchanged)"), "{}", again.summary);

    // dns_check reads it back; a wrong expectation is a retryable failure.
    let check = ok(
        &reg,
        "dns_check",
        json!({ "zone": "main", "name": name, "type": "A", "expect": ["10.0.2.11", "10.0.2.10"] }),
    )
    .await;
    assert_eq!(
        check.summary,
        format!("{name} A = 10.0.2.11, 10.0.2.10 (ttl 30)")
    );
    let e = err(
        &reg,
        "dns_check",
        json!({ "zone": "main", "name": name, "type": "A", "expect": ["10.0.1.10"] }),
    )
    .await;
    assert!(e.retryable);
    assert_eq!(
        e.message,
        format!("{name} A = 10.0.2.11, 10.0.2.10 (ttl 30), expected 10.0.1.10")
    );
    let none = ok(
        &reg,
        "dns_check",
        json!({ "zone": "main", "name": format!("nothing.{domain}"), "type": "A" }),
    )
    .await;
    assert_eq!(none.summary, format!("nothing.{domain} A: no record"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cname_alias_and_weighted_records() {
    let endpoint = moto::endpoint();
    let (domain, zone_id) = hosted_zone(&endpoint).await;
    let reg = registry(vec![("main", route53(&zone_id, &endpoint))]);

    // CNAME
    let www = format!("www.{domain}");
    let out = ok(
        &reg,
        "dns_switch",
        json!({ "zone": "main", "name": www, "type": "CNAME", "values": [format!("api.{domain}")],
                "ttl": 300 }),
    )
    .await;
    assert!(
        out.summary
            .starts_with(&format!("{www} CNAME → api.{domain} (was: no record)")),
        "{}",
        out.summary
    );
    assert_eq!(
        stored(&endpoint, &zone_id, &www, RrType::Cname).await,
        [(vec![format!("api.{domain}")], Some(300), None, None, None)]
    );

    // Alias A record, as in the seed plan's change batch.
    let api = format!("api.{domain}");
    ok(
        &reg,
        "dns_switch",
        json!({ "zone": "main", "name": api, "type": "A", "values": ["10.0.1.10"] }),
    )
    .await;
    let out = ok(
        &reg,
        "dns_switch",
        json!({ "zone": "main", "name": api, "type": "A",
                "alias": { "hosted_zone_id": zone_id, "dns_name": format!("api-dr.{domain}"),
                           "evaluate_target_health": true } }),
    )
    .await;
    assert!(
        out.summary.starts_with(&format!(
            "{api} A → alias api-dr.{domain} (zone {zone_id}) (was 10.0.1.10), INSYNC in "
        )),
        "{}",
        out.summary
    );
    assert_eq!(
        out.data["new"]["alias"],
        json!({ "hosted_zone_id": zone_id, "dns_name": format!("api-dr.{domain}"),
                "evaluate_target_health": true })
    );
    let held = stored(&endpoint, &zone_id, &api, RrType::A).await;
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(
        held[0].2.as_deref(),
        Some(format!("api-dr.{domain}").as_str())
    );
    let check = ok(
        &reg,
        "dns_check",
        json!({ "zone": "main", "name": api, "type": "A", "expect": [format!("api-dr.{domain}.")] }),
    )
    .await;
    assert_eq!(
        check.summary,
        format!("{api} A = alias api-dr.{domain} (zone {zone_id})")
    );

    // Weighted: two members, then the weights are swapped one member at a time.
    let lb = format!("lb.{domain}");
    for (id, ip, weight) in [("primary", "10.0.1.20", 100), ("dr", "10.0.2.20", 0)] {
        ok(
            &reg,
            "dns_switch",
            json!({ "zone": "main", "name": lb, "type": "A", "values": [ip],
                    "set_identifier": id, "weight": weight }),
        )
        .await;
    }
    let out = ok(
        &reg,
        "dns_switch",
        json!({ "zone": "main", "name": lb, "type": "A", "values": ["10.0.2.20"],
                "set_identifier": "dr", "weight": 100 }),
    )
    .await;
    assert!(
        out.summary
            .starts_with(&format!("{lb} A [dr] → 10.0.2.20 (was 10.0.2.20), INSYNC")),
        "{}",
        out.summary
    );
    assert_eq!(out.data["previous"]["weight"], 0);
    assert_eq!(out.data["new"]["weight"], 100);
    ok(
        &reg,
        "dns_switch",
        json!({ "zone": "main", "name": lb, "type": "A", "values": ["10.0.1.20"],
                "set_identifier": "primary", "weight": 0 }),
    )
    .await;
    let mut held = stored(&endpoint, &zone_id, &lb, RrType::A).await;
    held.sort_by(|a, b| a.3.cmp(&b.3));
    assert_eq!(
        held,
        [
            (
                vec!["10.0.2.20".to_string()],
                Some(60),
                None,
                Some("dr".to_string()),
                Some(100)
            ),
            (
                vec!["10.0.1.20".to_string()],
                Some(60),
                None,
                Some("primary".to_string()),
                Some(0)
            ),
        ]
    );
    let check = ok(
        &reg,
        "dns_check",
        json!({ "zone": "main", "name": lb, "type": "A", "set_identifier": "primary",
                "expect": ["10.0.1.20"] }),
    )
    .await;
    assert_eq!(check.data["record"]["weight"], 0);
}

/// A loopback proxy in front of moto that forwards everything, but answers a submitted change
/// and the first `pending_for` `GetChange` calls with `<Status>PENDING</Status>`.
struct PendingProxy {
    upstream: String,
    pending_for: usize,
    /// After a change was submitted, record listings show this value instead of that one (a
    /// zone that did not take the change).
    stale: Option<(&'static str, &'static str)>,
    submitted: AtomicUsize,
    get_change: AtomicUsize,
    rewritten: AtomicUsize,
    http: reqwest::Client,
}

async fn forward(
    axum::extract::State(p): axum::extract::State<Arc<PendingProxy>>,
    req: axum::extract::Request,
) -> axum::response::Response {
    use axum::http::header;
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 16 << 20)
        .await
        .expect("request body");
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut rb = p
        .http
        .request(parts.method.clone(), format!("{}{path}", p.upstream));
    for (k, v) in &parts.headers {
        if k != header::HOST && k != header::CONTENT_LENGTH {
            rb = rb.header(k, v);
        }
    }
    let resp = rb.body(body).send().await.expect("moto answers");
    let status = resp.status();
    let headers = resp.headers().clone();
    let mut bytes = resp.bytes().await.expect("moto body").to_vec();
    let is_get_change =
        parts.method == axum::http::Method::GET && parts.uri.path().contains("/change/");
    let is_submit = parts.method == axum::http::Method::POST
        && parts.uri.path().trim_end_matches('/').ends_with("/rrset");
    if is_submit {
        p.submitted.fetch_add(1, Ordering::SeqCst);
    }
    let is_listing =
        parts.method == axum::http::Method::GET && parts.uri.path().ends_with("/rrset");
    if let Some((new, old)) = p.stale
        && is_listing
        && p.submitted.load(Ordering::SeqCst) > 0
    {
        let text = String::from_utf8(bytes).expect("utf-8 XML");
        bytes = text.replace(new, old).into_bytes();
    }
    let pending = if is_get_change {
        p.get_change.fetch_add(1, Ordering::SeqCst) < p.pending_for
    } else {
        is_submit
    };
    if pending {
        let text = String::from_utf8(bytes).expect("utf-8 XML");
        if text.contains("<Status>INSYNC</Status>") {
            p.rewritten.fetch_add(1, Ordering::SeqCst);
        }
        bytes = text
            .replace("<Status>INSYNC</Status>", "<Status>PENDING</Status>")
            .into_bytes();
    }
    let mut out = axum::response::Response::builder().status(status);
    for (k, v) in &headers {
        if k != header::CONTENT_LENGTH && k != header::TRANSFER_ENCODING {
            out = out.header(k, v);
        }
    }
    out.body(axum::body::Body::from(bytes)).expect("response")
}

async fn pending_proxy(upstream: &str, pending_for: usize) -> (String, Arc<PendingProxy>) {
    proxy(upstream, pending_for, None).await
}

async fn proxy(
    upstream: &str,
    pending_for: usize,
    stale: Option<(&'static str, &'static str)>,
) -> (String, Arc<PendingProxy>) {
    let state = Arc::new(PendingProxy {
        upstream: upstream.to_string(),
        pending_for,
        stale,
        submitted: AtomicUsize::new(0),
        get_change: AtomicUsize::new(0),
        rewritten: AtomicUsize::new(0),
        http: reqwest::Client::new(),
    });
    let app = axum::Router::new()
        .fallback(forward)
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind proxy");
    let addr = listener.local_addr().expect("proxy address");
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("proxy serves");
    });
    (format!("http://{addr}"), state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_change_is_polled_until_insync() {
    let endpoint = moto::endpoint();
    let (domain, zone_id) = hosted_zone(&endpoint).await;
    let (proxy, state) = pending_proxy(&endpoint, 3).await;
    let reg = registry(vec![("main", route53(&zone_id, &proxy))]);
    let name = format!("api.{domain}");
    let (out, lines) = run(
        &reg,
        "dns_switch",
        json!({ "zone": "main", "name": name, "type": "A", "values": ["10.0.2.10"],
                "poll": "300ms", "wait": "30s" }),
    )
    .await;
    let out = out.expect("switch through the proxy");
    let change = out.data["change_id"]
        .as_str()
        .expect("change id")
        .to_string();
    assert!(out.summary.contains(", INSYNC in "), "{}", out.summary);
    // The submission and three GetChange answers were PENDING, the fourth INSYNC.
    assert_eq!(state.get_change.load(Ordering::SeqCst), 4);
    assert_eq!(state.rewritten.load(Ordering::SeqCst), 4);
    let pending: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with(&format!("change {change} PENDING (")) && l.ends_with("s)"))
        .collect();
    assert_eq!(pending.len(), 4, "{lines:?}");
    assert!(
        out.data["elapsed_ms"].as_u64().unwrap() >= 900,
        "{}",
        out.data
    );
    assert_eq!(
        stored(&endpoint, &zone_id, &name, RrType::A).await[0].0,
        ["10.0.2.10"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_pending_past_wait_is_retryable() {
    let endpoint = moto::endpoint();
    let (domain, zone_id) = hosted_zone(&endpoint).await;
    let (proxy, state) = pending_proxy(&endpoint, usize::MAX).await;
    let reg = registry(vec![("main", route53(&zone_id, &proxy))]);
    let name = format!("api.{domain}");
    ok(
        &reg,
        "dns_check",
        json!({ "zone": "main", "name": name, "type": "A" }),
    )
    .await;
    let started = std::time::Instant::now();
    let e = err(
        &reg,
        "dns_switch",
        json!({ "zone": "main", "name": name, "type": "A", "values": ["10.0.2.10"],
                "poll": "200ms", "wait": "3s" }),
    )
    .await;
    assert!(e.retryable, "{e:?}");
    // The elapsed time is read after the last poll's answer: a slow machine may say more.
    let after = e
        .message
        .strip_prefix("Route53 change ")
        .and_then(|m| m.split_once(" is still PENDING after "))
        .map(|(_, rest)| rest);
    let secs = after
        .and_then(|r| r.split_once("s (wait 3s): "))
        .and_then(|(n, _)| n.parse::<u64>().ok());
    assert!(secs.is_some_and(|n| n >= 3), "{}", e.message);
    assert!(e.log.contains("previous value of"), "{}", e.log);
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
    assert!(state.get_change.load(Ordering::SeqCst) >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_does_not_read_back_is_fatal() {
    let endpoint = moto::endpoint();
    let (domain, zone_id) = hosted_zone(&endpoint).await;
    let name = format!("api.{domain}");
    let direct = registry(vec![("main", route53(&zone_id, &endpoint))]);
    ok(
        &direct,
        "dns_switch",
        json!({ "zone": "main", "name": name, "type": "A", "values": ["10.0.1.10"] }),
    )
    .await;
    let (proxy, state) = proxy(&endpoint, 0, Some(("10.0.2.10", "10.0.1.10"))).await;
    let reg = registry(vec![("main", route53(&zone_id, &proxy))]);
    let e = err(
        &reg,
        "dns_switch",
        json!({ "zone": "main", "name": name, "type": "A", "values": ["10.0.2.10"] }),
    )
    .await;
    assert_eq!(state.submitted.load(Ordering::SeqCst), 1);
    assert!(!e.retryable, "{e:?}");
    assert!(
        e.message.starts_with("after change ")
            && e.message.ends_with(&format!(
                "(INSYNC), {name} A is 10.0.1.10 (ttl 60), not 10.0.2.10"
            )),
        "{}",
        e.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_hosted_zone_is_fatal_and_unreachable_endpoint_retryable() {
    let endpoint = moto::endpoint();
    let reg = registry(vec![
        ("gone", route53("ZNOSUCHZONE123", &endpoint)),
        ("down", route53("Z1", "http://127.0.0.1:9")),
    ]);
    let params = |zone: &str| json!({ "zone": zone, "name": "api.example.com", "type": "A", "values": ["10.0.2.10"] });
    let e = err(&reg, "dns_switch", params("gone")).await;
    assert!(!e.retryable, "{e:?}");
    assert!(
        e.message
            .starts_with("Route53 hosted zone ZNOSUCHZONE123 does not exist"),
        "{}",
        e.message
    );
    let e = err(
        &reg,
        "dns_check",
        json!({ "zone": "down", "name": "api.example.com", "type": "A" }),
    )
    .await;
    println!("error: {}", e.message);
    assert!(e.retryable, "{e:?}");
    assert!(
        e.message
            .starts_with("cannot reach Route53 for ListResourceRecordSets on hosted zone Z1"),
        "{}",
        e.message
    );
}

/// Without credentials anywhere in the standard chain, a switch fails at once with a fatal
/// error. Runs in a child copy of this test binary whose environment has no AWS credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_credentials_is_fatal() {
    const CHILD: &str = "DRBOT_DNS_TEST_NO_CREDENTIALS";
    if let Ok(endpoint) = std::env::var(CHILD) {
        assert!(std::env::var_os("AWS_ACCESS_KEY_ID").is_none());
        let reg = registry(vec![("main", route53("Z1", &endpoint))]);
        let e = err(
            &reg,
            "dns_switch",
            json!({ "zone": "main", "name": "api.example.com", "type": "A", "values": ["10.0.2.10"] }),
        )
        .await;
        println!("error: {}", e.message);
        assert!(!e.retryable, "{e:?}");
        assert!(
            e.message.starts_with(
                "no AWS credentials for Route53 ListResourceRecordSets on hosted zone Z1"
            ),
            "{}",
            e.message
        );
        return;
    }
    let endpoint = moto::endpoint();
    let home = tempfile::tempdir().expect("temp home");
    let mut cmd = std::process::Command::new(std::env::current_exe().expect("test binary"));
    cmd.args(["--exact", "no_credentials_is_fatal", "--test-threads", "1"]);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    cmd.env(CHILD, &endpoint)
        .env("HOME", home.path())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", home.path().join("none"))
        .env("AWS_SHARED_CREDENTIALS_FILE", home.path().join("none"));
    let out = cmd.output().expect("run the child test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn file_zones_in_hosts_and_json_format() {
    let dir = tempfile::tempdir().expect("temp dir");
    let hosts = dir.path().join("hosts");
    std::fs::write(
        &hosts,
        "# managed partly by drbot\n127.0.0.1\tlocalhost\n10.0.1.10 api.example.com\n\
         10.0.1.11 api.example.com # second\n::1 localhost ip6-localhost\n\n10.9.9.9 db.example.com\n",
    )
    .unwrap();
    let json_path = dir.path().join("new/dir/records.json");
    let reg = registry(vec![
        (
            "hosts",
            DnsZoneDef::File {
                path: hosts.clone(),
                format: DnsFileFormat::Hosts,
            },
        ),
        (
            "json",
            DnsZoneDef::File {
                path: json_path.clone(),
                format: DnsFileFormat::Json,
            },
        ),
    ]);

    let out = ok(
        &reg,
        "dns_switch",
        json!({ "zone": "hosts", "name": "api.example.com", "type": "A", "values": ["10.0.2.10"] }),
    )
    .await;
    assert!(
        out.summary
            .starts_with("api.example.com A → 10.0.2.10 (was 10.0.1.10, 10.0.1.11), WRITTEN in "),
        "{}",
        out.summary
    );
    assert_eq!(out.data["change_id"], Value::Null);
    assert_eq!(
        std::fs::read_to_string(&hosts).unwrap(),
        "# managed partly by drbot\n127.0.0.1\tlocalhost\n10.0.2.10\tapi.example.com\n\
         ::1 localhost ip6-localhost\n\n10.9.9.9 db.example.com\n"
    );
    let check = ok(
        &reg,
        "dns_check",
        json!({ "zone": "hosts", "name": "db.example.com", "type": "A", "expect": ["10.9.9.9"] }),
    )
    .await;
    assert_eq!(check.summary, "db.example.com A = 10.9.9.9");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // JSON: created with its directory when missing; other entries are kept.
    ok(
        &reg,
        "dns_switch",
        json!({ "zone": "json", "name": "www.example.com", "type": "CNAME",
                "values": ["api.example.com"], "ttl": 300 }),
    )
    .await;
    ok(
        &reg,
        "dns_switch",
        json!({ "zone": "json", "name": "api.example.com", "type": "A", "values": ["10.0.1.10"] }),
    )
    .await;
    let out = ok(
        &reg,
        "dns_switch",
        json!({ "zone": "json", "name": "api.example.com", "type": "A", "values": ["10.0.2.10"] }),
    )
    .await;
    assert!(
        out.summary
            .starts_with("api.example.com A → 10.0.2.10 (was 10.0.1.10), WRITTEN in "),
        "{}",
        out.summary
    );
    assert_eq!(
        out.data["previous"],
        json!({ "values": ["10.0.1.10"], "ttl": 60 })
    );
    let file: Value = serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    assert_eq!(
        file,
        json!({
            "api.example.com": { "type": "A", "values": ["10.0.2.10"], "ttl": 60 },
            "www.example.com": { "type": "CNAME", "values": ["api.example.com"], "ttl": 300 },
        })
    );
    let check = ok(
        &reg,
        "dns_check",
        json!({ "zone": "json", "name": "www.example.com", "type": "CNAME" }),
    )
    .await;
    assert_eq!(
        check.summary,
        "www.example.com CNAME = api.example.com (ttl 300)"
    );

    // A file that is not a record file is a fatal error, and it is left alone.
    std::fs::write(&json_path, "[1, 2]").unwrap();
    let e = err(
        &reg,
        "dns_switch",
        json!({ "zone": "json", "name": "api.example.com", "type": "A", "values": ["10.0.3.10"] }),
    )
    .await;
    assert!(!e.retryable);
    assert!(
        e.message
            .ends_with("records.json: not a JSON object of records keyed by name"),
        "{}",
        e.message
    );
    assert_eq!(std::fs::read_to_string(&json_path).unwrap(), "[1, 2]");
}

#[test]
fn parameters_are_validated_with_clear_errors() {
    let reg = registry(vec![
        ("main", route53("Z1", "http://127.0.0.1:9")),
        (
            "hosts",
            DnsZoneDef::File {
                path: "/tmp/none".into(),
                format: DnsFileFormat::Hosts,
            },
        ),
    ]);
    let switch = reg.get("dns_switch").unwrap();
    let check = reg.get("dns_check").unwrap();
    let base =
        json!({ "zone": "main", "name": "api.example.com", "type": "A", "values": ["10.0.0.1"] });
    let with = |patch: Value| {
        let mut v = base.clone();
        for (k, x) in patch.as_object().unwrap() {
            if x.is_null() {
                v.as_object_mut().unwrap().remove(k);
            } else {
                v[k] = x.clone();
            }
        }
        v
    };
    let bad = |patch: Value| switch.validate(&with(patch)).unwrap_err();

    assert!(switch.validate(&base).is_ok());
    assert!(switch.traits().destructive && switch.traits().idempotent);
    assert!(!check.traits().destructive);
    assert!(
        switch
            .validate(&with(json!({ "zone": "{region}", "values": ["{dr_ip}"] })))
            .is_ok()
    );
    assert_eq!(
        bad(json!({ "zone": "nope" })),
        "zone: unknown DNS zone `nope` (known: hosts, main)"
    );
    assert_eq!(
        registry(vec![])
            .get("dns_switch")
            .unwrap()
            .validate(&base)
            .unwrap_err(),
        "zone: unknown DNS zone `main` (no [dns.<name>] is configured)"
    );
    assert_eq!(
        bad(json!({ "type": "MX" })),
        "type: unsupported record type `MX` (expected A, AAAA or CNAME)"
    );
    assert_eq!(
        bad(json!({ "values": ["10.0.0.300"] })),
        "values[0]: `10.0.0.300` is not an IPv4 address"
    );
    assert_eq!(
        bad(json!({ "type": "CNAME", "values": ["a.example.com", "b.example.com"] })),
        "values: a CNAME record has exactly one target, got 2"
    );
    assert_eq!(
        bad(json!({ "alias": { "hosted_zone_id": "Z2", "dns_name": "x.example.com" } })),
        "give either `values` or `alias`, not both"
    );
    assert_eq!(
        bad(json!({ "values": null })),
        "needs `values` (addresses or a CNAME target) or `alias` (a Route53 alias target)"
    );
    assert_eq!(
        bad(json!({ "values": null, "ttl": 60,
                    "alias": { "hosted_zone_id": "Z2", "dns_name": "x.example.com" } })),
        "ttl: an alias record has no TTL of its own (Route53 uses the target's)"
    );
    assert_eq!(
        bad(json!({ "values": null, "alias": { "hosted_zone_id": "Z2", "dns": "x" } })),
        "alias.dns: unknown field `dns`, expected one of `hosted_zone_id`, `dns_name`, `evaluate_target_health`"
    );
    assert_eq!(
        bad(json!({ "set_identifier": "dr" })),
        "set_identifier: needs `weight` (a weighted record)"
    );
    assert_eq!(
        bad(json!({ "set_identifier": "dr", "weight": 300 })),
        "weight: 300 is out of range (0 to 255)"
    );
    assert_eq!(bad(json!({ "wait": "0s" })), "wait: must be more than zero");
    assert_eq!(
        bad(json!({ "poll": "soon" })),
        "poll: `soon`: expected number at 0"
    );
    assert_eq!(
        bad(json!({ "name": "bad name.example.com" })),
        "name: `bad name.example.com` is not a valid DNS name"
    );
    let e = bad(json!({ "recrod": 1 }));
    assert!(e.starts_with("recrod: unknown field `recrod`"), "{e}");
    assert_eq!(
        bad(json!({ "zone": "hosts", "type": "CNAME", "values": ["a.example.com"] })),
        "type: a hosts-format DNS file holds only addresses (A, AAAA), not CNAME (zone `hosts` is a file)"
    );
    assert_eq!(
        bad(json!({ "zone": "hosts", "set_identifier": "dr", "weight": 1 })),
        "set_identifier: a file DNS zone cannot hold weighted records (zone `hosts` is a file)"
    );
    assert_eq!(
        check
            .validate(
                &json!({ "zone": "main", "name": "api.example.com", "type": "A", "expect": [] })
            )
            .unwrap_err(),
        "expect: needs at least one value (leave it out to accept any)"
    );
    // A placeholder left in the zone is fine for validate but not for build.
    let e = switch
        .build(&with(json!({ "zone": "{region}" })))
        .err()
        .expect("build with a placeholder zone fails");
    assert_eq!(e, "zone: unknown DNS zone `{region}` (known: hosts, main)");
}
