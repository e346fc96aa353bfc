//! A loopback fake of the Kubernetes API server, for tests: a test double, because no real API
//! server can be installed on the test machines. It speaks the real wire format for the calls
//! drbot makes: `apps/v1` Deployments and StatefulSets (`GET .../namespaces/{ns}/deployments/{name}`
//! and `.../statefulsets/{name}`), their `autoscaling/v1` `Scale` subresource (GET, and PATCH
//! as merge patch, strategic merge patch or JSON patch), and `Status` bodies for 401, 403, 404,
//! 415 and 422. Objects live in memory; a controller tick moves each one's `readyReplicas` one
//! step toward `spec.replicas`. Every request is recorded, a bearer token is checked when
//! configured, and a name can be made to answer 403 or to never become ready.
//!
//! It also lists the workloads' pods (`GET /api/v1/namespaces/{ns}/pods?labelSelector=…`,
//! equality, set and existence selectors): each workload has `status.replicas` pods labelled
//! `app=<name>`, the first `readyReplicas` of them ready and those beyond `spec.replicas`
//! terminating. A name can be made to leave its removed pods terminating until released (a
//! long grace period), and to have an autoscaler whose `minReplicas` raises a non-zero
//! `spec.replicas` below it back on the next tick.
//!
//! With `tls`, it serves HTTPS as a real API server does, with a certificate for `127.0.0.1`
//! signed by a test-only CA ([`FakeKube::ca_pem`], what a pod finds in its service account's
//! `ca.crt`). The certificate and key in `testkit/tls/` exist for this fake only.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

/// The user the fake claims a forbidden request came from.
const USER: &str = "system:serviceaccount:drbot:drbot";

/// How to start a [`FakeKube`].
#[derive(Debug, Clone)]
pub struct FakeKubeOptions {
    /// How often the fake controller moves `readyReplicas` one step (default 100 ms).
    pub tick: Duration,
    /// The bearer token every request must carry (default: none checked).
    pub token: Option<String>,
    /// Serve HTTPS with the test CA's certificate for `127.0.0.1` (default: plain HTTP).
    pub tls: bool,
}

impl Default for FakeKubeOptions {
    fn default() -> Self {
        Self {
            tick: Duration::from_millis(100),
            token: None,
            tls: false,
        }
    }
}

/// The test-only CA that signed the TLS fake's certificate (PEM).
const TEST_CA_PEM: &str = include_str!("tls/ca.pem");
const TEST_CERT_PEM: &str = include_str!("tls/server.pem");
const TEST_KEY_PEM: &str = include_str!("tls/server.key");

/// A TCP listener that completes a TLS handshake for each connection (failed handshakes are
/// dropped), so `axum::serve` speaks HTTPS.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.tcp.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            if let Ok(tls) = self.acceptor.accept(stream).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

fn tls_acceptor() -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(TEST_CERT_PEM.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
    let key = PrivateKeyDer::from_pem_slice(TEST_KEY_PEM.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `GET`, `PATCH`…
    pub method: String,
    /// The path, e.g. `/apis/apps/v1/namespaces/apex/deployments/apex-api/scale`.
    pub path: String,
    /// The query string, if any.
    pub query: Option<String>,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// Whether the request carried the configured bearer token (true when none is configured).
    pub authorized: bool,
    /// The body as JSON (`null` when empty; a string when it was not JSON).
    pub body: Value,
    /// The status the fake answered.
    pub status: u16,
}

/// A workload's state in the fake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FakeWorkload {
    /// `spec.replicas`.
    pub replicas: u32,
    /// `status.readyReplicas`.
    pub ready: u32,
    /// `status.replicas`: pods created and not yet deleted.
    pub current: u32,
    /// Pods no longer counted in the status that are still terminating (only while the
    /// name is held with [`FakeKube::hold_terminating`]).
    pub terminating: u32,
    /// `metadata.generation`.
    pub generation: i64,
    /// `status.observedGeneration`.
    pub observed_generation: i64,
}

#[derive(Debug, Clone)]
struct Obj {
    state: FakeWorkload,
    uid: String,
    resource_version: u64,
}

/// `(resource, namespace, name)`, resource being `deployments` or `statefulsets`.
type Key = (String, String, String);

struct Inner {
    token: Option<String>,
    objects: BTreeMap<Key, Obj>,
    requests: Vec<Recorded>,
    forbidden: BTreeSet<String>,
    stalled: BTreeSet<String>,
    /// Names whose removed pods stay terminating until released.
    held: BTreeSet<String>,
    /// Names with an autoscaler, and its `minReplicas`.
    autoscaled: BTreeMap<String, u32>,
    /// Namespaces where listing pods answers 403.
    pods_forbidden: BTreeSet<String>,
    next_version: u64,
}

type Shared = Arc<Mutex<Inner>>;

/// The running fake; stops when dropped.
pub struct FakeKube {
    addr: SocketAddr,
    tls: bool,
    state: Shared,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl FakeKube {
    /// Starts on a free loopback port with the default options.
    pub async fn start() -> FakeKube {
        Self::start_with(FakeKubeOptions::default()).await
    }

    /// Starts on a free loopback port.
    pub async fn start_with(options: FakeKubeOptions) -> FakeKube {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(Inner {
            token: options.token,
            objects: BTreeMap::new(),
            requests: Vec::new(),
            forbidden: BTreeSet::new(),
            stalled: BTreeSet::new(),
            held: BTreeSet::new(),
            autoscaled: BTreeMap::new(),
            pods_forbidden: BTreeSet::new(),
            next_version: 1000,
        }));
        let app = Router::new().fallback(handle).with_state(state.clone());
        let server = if options.tls {
            let listener = TlsListener {
                tcp: listener,
                acceptor: tls_acceptor(),
            };
            tokio::spawn(async move {
                axum::serve(listener, app).await.unwrap();
            })
        } else {
            tokio::spawn(async move {
                axum::serve(listener, app).await.unwrap();
            })
        };
        let ticker_state = state.clone();
        let tick = options.tick;
        let ticker = tokio::spawn(async move {
            let mut interval = tokio::time::interval(tick);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                reconcile(&mut ticker_state.lock().unwrap());
            }
        });
        FakeKube {
            addr,
            tls: options.tls,
            state,
            tasks: vec![server, ticker],
        }
    }

    /// The API server URL to configure as `api_url` or a kubeconfig's `server`.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The loopback address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// PEM of the CA that signed the TLS fake's certificate (a service account's `ca.crt`).
    pub fn ca_pem() -> &'static str {
        TEST_CA_PEM
    }

    /// Adds a Deployment with `replicas`, all ready.
    pub fn add_deployment(&self, namespace: &str, name: &str, replicas: u32) {
        self.add("deployments", namespace, name, replicas);
    }

    /// Adds a StatefulSet with `replicas`, all ready.
    pub fn add_statefulset(&self, namespace: &str, name: &str, replicas: u32) {
        self.add("statefulsets", namespace, name, replicas);
    }

    fn add(&self, resource: &str, namespace: &str, name: &str, replicas: u32) {
        let mut s = self.state.lock().unwrap();
        s.next_version += 1;
        let obj = Obj {
            state: FakeWorkload {
                replicas,
                ready: replicas,
                current: replicas,
                terminating: 0,
                generation: 1,
                observed_generation: 1,
            },
            uid: format!("00000000-0000-4000-8000-{:012x}", s.next_version),
            resource_version: s.next_version,
        };
        s.objects
            .insert((resource.into(), namespace.into(), name.into()), obj);
    }

    /// Every request for objects called `name` is answered 403 Forbidden.
    pub fn forbid(&self, name: &str) {
        self.state.lock().unwrap().forbidden.insert(name.into());
    }

    /// Objects called `name` never change their ready count (the controller still observes
    /// new specs and creates pods, which never become ready).
    pub fn stall(&self, name: &str) {
        self.state.lock().unwrap().stalled.insert(name.into());
    }

    /// Pods of objects called `name` that stop being ready on a scale-down stay listed as
    /// terminating (with a `deletionTimestamp`) until [`FakeKube::release_terminating`], as
    /// pods with a long grace period do.
    pub fn hold_terminating(&self, name: &str) {
        self.state.lock().unwrap().held.insert(name.into());
    }

    /// Ends the grace period of the held terminating pods of objects called `name`: they are
    /// gone at once, and later ones go as they stop being ready.
    pub fn release_terminating(&self, name: &str) {
        let mut s = self.state.lock().unwrap();
        s.held.remove(name);
        s.next_version += 1;
        let version = s.next_version;
        for ((_, _, n), obj) in s.objects.iter_mut() {
            if n == name && obj.state.terminating > 0 {
                obj.state.terminating = 0;
                obj.resource_version = version;
            }
        }
    }

    /// Objects called `name` get an autoscaler with `min_replicas`: each tick raises a
    /// `spec.replicas` below it (but above 0) back to it, as a HorizontalPodAutoscaler does.
    pub fn autoscale(&self, name: &str, min_replicas: u32) {
        self.state
            .lock()
            .unwrap()
            .autoscaled
            .insert(name.into(), min_replicas);
    }

    /// Listing pods in `namespace` is answered 403 Forbidden.
    pub fn forbid_pods(&self, namespace: &str) {
        self.state
            .lock()
            .unwrap()
            .pods_forbidden
            .insert(namespace.into());
    }

    /// The state of a workload; `resource` is `deployments` or `statefulsets`.
    pub fn workload(&self, resource: &str, namespace: &str, name: &str) -> Option<FakeWorkload> {
        let s = self.state.lock().unwrap();
        s.objects
            .get(&(resource.into(), namespace.into(), name.into()))
            .map(|o| o.state)
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }
}

/// One controller tick: observe the latest spec, then move `readyReplicas` one step.
fn reconcile(s: &mut Inner) {
    let mut changed = 0;
    for ((_, _, name), obj) in s.objects.iter_mut() {
        let w = &mut obj.state;
        let before = *w;
        // A HorizontalPodAutoscaler leaves a workload scaled to 0 alone.
        if let Some(&min) = s.autoscaled.get(name)
            && w.replicas > 0
            && w.replicas < min
        {
            w.replicas = min;
            w.generation += 1;
        }
        w.observed_generation = w.generation;
        if !s.stalled.contains(name) {
            if w.ready < w.replicas {
                w.ready += 1;
            } else if w.ready > w.replicas {
                w.ready -= 1;
                if s.held.contains(name) {
                    w.terminating += 1;
                }
            }
        }
        // Pods beyond the spec are still terminating while they count as ready.
        w.current = w.replicas.max(w.ready);
        if *w != before {
            changed += 1;
            obj.resource_version = s.next_version + changed;
        }
    }
    s.next_version += changed;
}

async fn handle(
    State(state): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut s = state.lock().unwrap();
    let authorized = match &s.token {
        None => true,
        Some(t) => {
            headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                == Some(format!("Bearer {t}").as_str())
        }
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let parsed = if body.is_empty() {
        Some(Value::Null)
    } else {
        serde_json::from_slice::<Value>(&body).ok()
    };
    let path = uri.path().to_string();
    let (status, answer) = if !authorized {
        status_body(401, "Unauthorized", "Unauthorized", None)
    } else {
        route(
            &mut s,
            &method,
            &path,
            uri.query(),
            content_type.as_deref(),
            parsed.as_ref(),
        )
    };
    s.requests.push(Recorded {
        method: method.to_string(),
        path,
        query: uri.query().map(str::to_string),
        content_type,
        authorized,
        body: parsed.unwrap_or_else(|| Value::String(String::from_utf8_lossy(&body).into())),
        status,
    });
    drop(s);
    let mut resp = (StatusCode::from_u16(status).unwrap(), axum::Json(answer)).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn route(
    s: &mut Inner,
    method: &Method,
    path: &str,
    query: Option<&str>,
    content_type: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    if let ["api", "v1", "namespaces", ns, "pods"] = segments.as_slice() {
        return list_pods(s, method, ns, query);
    }
    let (resource, ns, name, sub) = match segments.as_slice() {
        ["apis", "apps", "v1", "namespaces", ns, res, name] => (*res, *ns, *name, None),
        ["apis", "apps", "v1", "namespaces", ns, res, name, sub] => (*res, *ns, *name, Some(*sub)),
        _ => return page_not_found(),
    };
    if !matches!(resource, "deployments" | "statefulsets") || !matches!(sub, None | Some("scale")) {
        return page_not_found();
    }
    let verb = match (method.as_str(), sub) {
        ("GET", _) => "get",
        ("PATCH", Some("scale")) => "patch",
        _ => {
            return status_body(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
                None,
            );
        }
    };
    let full_resource = match sub {
        Some(sub) => format!("{resource}/{sub}"),
        None => resource.to_string(),
    };
    if s.forbidden.contains(name) {
        return status_body(
            403,
            "Forbidden",
            &format!(
                "{resource}.apps \"{name}\" is forbidden: User \"{USER}\" cannot {verb} resource \
                 \"{full_resource}\" in API group \"apps\" in the namespace \"{ns}\""
            ),
            Some(json!({ "name": name, "group": "apps", "kind": resource })),
        );
    }
    let key = (resource.to_string(), ns.to_string(), name.to_string());
    if !s.objects.contains_key(&key) {
        return status_body(
            404,
            "NotFound",
            &format!("{resource}.apps \"{name}\" not found"),
            Some(json!({ "name": name, "group": "apps", "kind": resource })),
        );
    }
    if verb == "patch" {
        let replicas = match patched_replicas(content_type, body, name) {
            Ok(r) => r,
            Err(answer) => return answer,
        };
        if let Some(r) = replicas {
            s.next_version += 1;
            let version = s.next_version;
            let obj = s.objects.get_mut(&key).unwrap();
            if obj.state.replicas != r {
                obj.state.replicas = r;
                obj.state.generation += 1;
                obj.resource_version = version;
            }
        }
    }
    let obj = &s.objects[&key];
    match sub {
        Some(_) => (200, scale_json(ns, name, obj)),
        None if resource == "deployments" => (200, deployment_json(ns, name, obj)),
        None => (200, statefulset_json(ns, name, obj)),
    }
}

/// `GET /api/v1/namespaces/{ns}/pods[?labelSelector=…]`: a `PodList` of the workloads' pods.
fn list_pods(s: &Inner, method: &Method, ns: &str, query: Option<&str>) -> (u16, Value) {
    if method != Method::GET {
        return status_body(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
            None,
        );
    }
    if s.pods_forbidden.contains(ns) {
        return status_body(
            403,
            "Forbidden",
            &format!(
                "pods is forbidden: User \"{USER}\" cannot list resource \"pods\" in API group \
                 \"\" in the namespace \"{ns}\""
            ),
            Some(json!({ "kind": "pods" })),
        );
    }
    let selector = url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(k, _)| k == "labelSelector")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let requirements = match parse_selector(&selector) {
        Ok(r) => r,
        Err(e) => {
            return bad_request(&format!(
                "unable to parse requirement: {e} (labelSelector {selector:?})"
            ));
        }
    };
    let mut items = Vec::new();
    for ((resource, obj_ns, name), obj) in &s.objects {
        if obj_ns != ns {
            continue;
        }
        for pod in pods_of(resource, ns, name, obj) {
            let labels = pod["metadata"]["labels"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            if requirements.iter().all(|r| r.matches(&labels)) {
                items.push(pod);
            }
        }
    }
    (
        200,
        json!({
            "kind": "PodList",
            "apiVersion": "v1",
            "metadata": { "resourceVersion": s.next_version.to_string() },
            "items": items,
        }),
    )
}

/// One requirement of a label selector.
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

impl Requirement {
    fn matches(&self, labels: &Map<String, Value>) -> bool {
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        match self {
            Self::Equals(k, v) => get(k) == Some(v.as_str()),
            Self::NotEquals(k, v) => get(k) != Some(v.as_str()),
            Self::In(k, vs) => get(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Self::NotIn(k, vs) => get(k).is_none_or(|l| vs.iter().all(|v| v != l)),
            Self::Exists(k) => get(k).is_some(),
            Self::DoesNotExist(k) => get(k).is_none(),
        }
    }
}

/// Parses `a=b,c!=d,e in (f,g),h notin (i),j,!k`; an empty selector matches everything.
fn parse_selector(selector: &str) -> Result<Vec<Requirement>, String> {
    // Split at the commas outside parentheses.
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&selector[start..]);
    let set = |rest: &str| -> Result<Vec<String>, String> {
        let inner = rest
            .trim()
            .strip_prefix('(')
            .and_then(|r| r.strip_suffix(')'))
            .ok_or_else(|| format!("expected a parenthesised set, found {rest:?}"))?;
        Ok(inner.split(',').map(|v| v.trim().to_string()).collect())
    };
    let mut out = Vec::new();
    for part in parts.into_iter().map(str::trim).filter(|p| !p.is_empty()) {
        let req = if let Some((k, v)) = part.split_once("!=") {
            Requirement::NotEquals(k.trim().into(), v.trim().into())
        } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
            Requirement::Equals(k.trim().into(), v.trim().into())
        } else if let Some((k, rest)) = part.split_once(" notin ") {
            Requirement::NotIn(k.trim().into(), set(rest)?)
        } else if let Some((k, rest)) = part.split_once(" in ") {
            Requirement::In(k.trim().into(), set(rest)?)
        } else if let Some(k) = part.strip_prefix('!') {
            Requirement::DoesNotExist(k.trim().into())
        } else if part.contains(|c: char| c.is_whitespace() || "()".contains(c)) {
            return Err(format!("{part:?}"));
        } else {
            Requirement::Exists(part.into())
        };
        out.push(req);
    }
    Ok(out)
}

/// The pods of one workload: `status.replicas` counted ones (the first `readyReplicas` ready,
/// those beyond `spec.replicas` terminating), then the held terminating ones.
fn pods_of(resource: &str, ns: &str, name: &str, obj: &Obj) -> Vec<Value> {
    let w = &obj.state;
    let total = w.current + w.terminating;
    (0..total)
        .map(|i| {
            let ready = i < w.ready.min(w.current);
            let terminating = i >= w.replicas;
            let (pod_name, labels) = if resource == "statefulsets" {
                let pod_name = format!("{name}-{i}");
                let labels = json!({
                    "app": name,
                    "statefulset.kubernetes.io/pod-name": pod_name,
                });
                (pod_name, labels)
            } else {
                (
                    format!("{name}-5d8f7c9b6-p{i:04}"),
                    json!({ "app": name, "pod-template-hash": "5d8f7c9b6" }),
                )
            };
            let mut metadata = json!({
                "name": pod_name,
                "namespace": ns,
                "uid": format!("{}-{i:04}", &obj.uid[..obj.uid.len() - 4]),
                "resourceVersion": obj.resource_version.to_string(),
                "creationTimestamp": CREATED,
                "labels": labels,
            });
            if terminating {
                metadata["deletionTimestamp"] = json!("2026-01-01T01:00:00Z");
                metadata["deletionGracePeriodSeconds"] = json!(30);
            }
            let ready_status = if ready { "True" } else { "False" };
            json!({
                "kind": "Pod",
                "apiVersion": "v1",
                "metadata": metadata,
                "spec": pod_template(name)["spec"].clone(),
                "status": {
                    "phase": "Running",
                    "conditions": [{ "type": "Ready", "status": ready_status }],
                },
            })
        })
        .collect()
}

/// The replicas a PATCH on a Scale sets (`None`: it changes nothing), or the error answer.
fn patched_replicas(
    content_type: Option<&str>,
    body: Option<&Value>,
    name: &str,
) -> Result<Option<u32>, (u16, Value)> {
    let media = content_type
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let Some(body) = body else {
        return Err(status_body(
            400,
            "BadRequest",
            "the body of the request was in an unknown format - accepted media types include: \
             application/json-patch+json, application/merge-patch+json, \
             application/apply-patch+yaml",
            None,
        ));
    };
    let value = match media.as_str() {
        "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
            let Some(obj) = body.as_object() else {
                return Err(bad_request("merge patch must be a JSON object"));
            };
            match obj.get("spec") {
                None => return Ok(None),
                Some(Value::Object(spec)) => match spec.get("replicas") {
                    None => return Ok(None),
                    Some(v) => v.clone(),
                },
                Some(_) => return Err(bad_request("spec must be an object")),
            }
        }
        "application/json-patch+json" => {
            let Some(ops) = body.as_array() else {
                return Err(bad_request("JSON patch must be an array of operations"));
            };
            let mut value = None;
            for op in ops {
                let kind = op.get("op").and_then(Value::as_str);
                let path = op.get("path").and_then(Value::as_str);
                match (kind, path) {
                    (Some("replace" | "add"), Some("/spec/replicas")) => {
                        value = op.get("value").cloned();
                    }
                    (Some("test"), _) => {}
                    _ => {
                        return Err(bad_request(&format!(
                            "unsupported JSON patch operation {op}"
                        )));
                    }
                }
            }
            match value {
                Some(v) => v,
                None => return Ok(None),
            }
        }
        other => {
            return Err(status_body(
                415,
                "UnsupportedMediaType",
                &format!(
                    "the body of the request was in an unknown format - content type {other:?}"
                ),
                None,
            ));
        }
    };
    match value.as_i64() {
        Some(n) if (0..=i32::MAX as i64).contains(&n) => Ok(Some(n as u32)),
        _ => Err(status_body(
            422,
            "Invalid",
            &format!(
                "Scale.autoscaling \"{name}\" is invalid: spec.replicas: Invalid value: {value}: \
                 must be greater than or equal to 0"
            ),
            Some(json!({ "name": name, "group": "autoscaling", "kind": "Scale" })),
        )),
    }
}

fn bad_request(message: &str) -> (u16, Value) {
    status_body(400, "BadRequest", message, None)
}

fn page_not_found() -> (u16, Value) {
    status_body(
        404,
        "NotFound",
        "the server could not find the requested resource",
        None,
    )
}

/// A `v1` `Status` failure body, as the API server sends it.
fn status_body(code: u16, reason: &str, message: &str, details: Option<Value>) -> (u16, Value) {
    let mut status = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    });
    if let Some(d) = details {
        status["details"] = d;
    }
    (code, status)
}

const CREATED: &str = "2026-01-01T00:00:00Z";

fn metadata(ns: &str, name: &str, obj: &Obj, with_generation: bool) -> Value {
    let mut m = json!({
        "name": name,
        "namespace": ns,
        "uid": obj.uid,
        "resourceVersion": obj.resource_version.to_string(),
        "creationTimestamp": CREATED,
    });
    if with_generation {
        m["generation"] = json!(obj.state.generation);
        m["labels"] = json!({ "app": name });
    }
    m
}

/// Sets `key` unless `value` is 0 (Go's `omitempty` on the status counters).
fn put_nonzero(map: &mut Map<String, Value>, key: &str, value: u32) {
    if value != 0 {
        map.insert(key.into(), json!(value));
    }
}

fn pod_template(name: &str) -> Value {
    json!({
        "metadata": { "labels": { "app": name } },
        "spec": {
            "containers": [{
                "name": name,
                "image": format!("registry.example/{name}:1.0"),
                "resources": {},
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File",
                "imagePullPolicy": "IfNotPresent",
            }],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "securityContext": {},
            "schedulerName": "default-scheduler",
        },
    })
}

fn deployment_json(ns: &str, name: &str, obj: &Obj) -> Value {
    let w = &obj.state;
    let mut status = Map::new();
    status.insert("observedGeneration".into(), json!(w.observed_generation));
    put_nonzero(&mut status, "replicas", w.current);
    put_nonzero(&mut status, "updatedReplicas", w.current);
    put_nonzero(&mut status, "readyReplicas", w.ready);
    put_nonzero(&mut status, "availableReplicas", w.ready);
    put_nonzero(
        &mut status,
        "unavailableReplicas",
        w.current.saturating_sub(w.ready),
    );
    json!({
        "kind": "Deployment",
        "apiVersion": "apps/v1",
        "metadata": metadata(ns, name, obj, true),
        "spec": {
            "replicas": w.replicas,
            "selector": { "matchLabels": { "app": name } },
            "template": pod_template(name),
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": { "maxUnavailable": "25%", "maxSurge": "25%" },
            },
            "revisionHistoryLimit": 10,
            "progressDeadlineSeconds": 600,
        },
        "status": status,
    })
}

fn statefulset_json(ns: &str, name: &str, obj: &Obj) -> Value {
    let w = &obj.state;
    let mut status = Map::new();
    status.insert("observedGeneration".into(), json!(w.observed_generation));
    // `replicas` has no omitempty on StatefulSetStatus.
    status.insert("replicas".into(), json!(w.current));
    put_nonzero(&mut status, "readyReplicas", w.ready);
    put_nonzero(&mut status, "currentReplicas", w.current);
    put_nonzero(&mut status, "updatedReplicas", w.current);
    put_nonzero(&mut status, "availableReplicas", w.ready);
    status.insert("currentRevision".into(), json!(format!("{name}-5d8f7c9b6")));
    status.insert("updateRevision".into(), json!(format!("{name}-5d8f7c9b6")));
    status.insert("collisionCount".into(), json!(0));
    json!({
        "kind": "StatefulSet",
        "apiVersion": "apps/v1",
        "metadata": metadata(ns, name, obj, true),
        "spec": {
            "replicas": w.replicas,
            "selector": { "matchLabels": { "app": name } },
            "template": pod_template(name),
            "serviceName": name,
            "podManagementPolicy": "OrderedReady",
            "updateStrategy": {
                "type": "RollingUpdate",
                "rollingUpdate": { "partition": 0 },
            },
            "revisionHistoryLimit": 10,
            "persistentVolumeClaimRetentionPolicy": {
                "whenDeleted": "Retain",
                "whenScaled": "Retain",
            },
        },
        "status": status,
    })
}

fn scale_json(ns: &str, name: &str, obj: &Obj) -> Value {
    let mut spec = Map::new();
    // `ScaleSpec.replicas` is omitempty.
    put_nonzero(&mut spec, "replicas", obj.state.replicas);
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": metadata(ns, name, obj, false),
        "spec": spec,
        "status": { "replicas": obj.state.current, "selector": format!("app={name}") },
    })
}
