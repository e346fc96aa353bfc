//! A loopback fake of the Atlassian Statuspage REST API v1 (the calls drbot makes): checks the
//! `Authorization: OAuth <key>` header and the documented JSON shapes (422 on a bad one), keeps
//! incidents and components in memory, records every request, and can misbehave on demand:
//! answer a status (e.g. 429 with `Retry-After`) for the next requests, hang, make a change
//! and lose its answer (502), or stop listening and come back on the same port.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

const INCIDENT_STATUSES: &[&str] = &["investigating", "identified", "monitoring", "resolved"];
const IMPACTS: &[&str] = &["none", "minor", "major", "critical"];
const COMPONENT_STATUSES: &[&str] = &[
    "operational",
    "degraded_performance",
    "partial_outage",
    "major_outage",
    "under_maintenance",
];
/// The documented fields of `incident` in create/update requests.
const INCIDENT_FIELDS: &[&str] = &[
    "name",
    "status",
    "impact_override",
    "body",
    "component_ids",
    "components",
    "deliver_notifications",
    "metadata",
    "scheduled_for",
    "scheduled_until",
    "scheduled_remind_prior",
    "scheduled_auto_in_progress",
    "scheduled_auto_completed",
    "auto_transition_to_maintenance_state",
    "auto_transition_to_operational_state",
    "auto_transition_deliver_notifications_at_start",
    "auto_transition_deliver_notifications_at_end",
    "backfilled",
    "backfill_date",
];
/// The documented fields of `component` in update requests.
const COMPONENT_FIELDS: &[&str] = &[
    "name",
    "description",
    "status",
    "group_id",
    "only_show_if_degraded",
    "showcase",
    "start_date",
];

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `GET`, `POST`, `PATCH`…
    pub method: String,
    /// The path, e.g. `/v1/pages/p1/incidents`.
    pub path: String,
    /// Whether the `Authorization` header was `OAuth <the key>`.
    pub authorized: bool,
    /// The JSON body (`null` when there was none).
    pub body: Value,
    /// The status the fake answered.
    pub status: u16,
}

struct Inner {
    api_key: String,
    page_id: String,
    incidents: BTreeMap<String, Value>,
    order: Vec<String>,
    components: BTreeMap<String, Value>,
    requests: Vec<Recorded>,
    scripted: VecDeque<(u16, Option<u64>)>,
    hang_next: Option<Duration>,
    /// The next request is handled, then answered 502 (its answer lost on the way).
    lose_next: bool,
    /// The next request is handled and answered with its own status but a body that is not
    /// JSON (an answer cut short, or rewritten by a proxy).
    garble_next: bool,
    /// The next request is refused 401 with a body that quotes its `Authorization` header, as
    /// a careless proxy might.
    echo_next: bool,
}

type Shared = Arc<Mutex<Inner>>;

/// The running fake.
pub struct FakeStatuspage {
    addr: SocketAddr,
    state: Shared,
    server: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl FakeStatuspage {
    /// Starts on a free loopback port, for page `page_id` and key `api_key`.
    pub async fn start(page_id: &str, api_key: &str) -> Arc<FakeStatuspage> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(Inner {
            api_key: api_key.to_string(),
            page_id: page_id.to_string(),
            incidents: BTreeMap::new(),
            order: Vec::new(),
            components: BTreeMap::new(),
            requests: Vec::new(),
            scripted: VecDeque::new(),
            hang_next: None,
            lose_next: false,
            garble_next: false,
            echo_next: false,
        }));
        let fake = Arc::new(FakeStatuspage {
            addr,
            state,
            server: Mutex::new(None),
        });
        fake.serve(listener);
        fake
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let app = Router::new()
            .fallback(handle)
            .with_state(self.state.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        *self.server.lock().unwrap() = Some(task);
    }

    /// The API root to configure: `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Adds a component (operational).
    pub fn add_component(&self, id: &str, name: &str) {
        self.state.lock().unwrap().components.insert(
            id.to_string(),
            json!({ "id": id, "name": name, "status": "operational" }),
        );
    }

    /// A component's current status.
    pub fn component_status(&self, id: &str) -> Option<String> {
        let s = self.state.lock().unwrap();
        Some(s.components.get(id)?["status"].as_str()?.to_string())
    }

    /// Every stored incident, in creation order.
    pub fn incidents(&self) -> Vec<Value> {
        let s = self.state.lock().unwrap();
        s.order.iter().map(|id| s.incidents[id].clone()).collect()
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    /// The next `count` requests are answered `status` (with `Retry-After: secs` if given)
    /// and change nothing.
    pub fn answer_next(&self, count: usize, status: u16, retry_after: Option<u64>) {
        let mut s = self.state.lock().unwrap();
        for _ in 0..count {
            s.scripted.push_back((status, retry_after));
        }
    }

    /// The next request is handled (its change made) and then answered 502, as a proxy
    /// answers when the answer is lost: the caller cannot tell whether it was taken.
    pub fn lose_next_answer(&self) {
        self.state.lock().unwrap().lose_next = true;
    }

    /// The next request is refused 401 with a body quoting its `Authorization` header (the API
    /// key), as a careless proxy might.
    pub fn echo_key_next(&self) {
        self.state.lock().unwrap().echo_next = true;
    }

    /// The next request is handled (its change made) and answered with its own status, but a
    /// body that is not JSON.
    pub fn garble_next_answer(&self) {
        self.state.lock().unwrap().garble_next = true;
    }

    /// The next request waits `delay` before it is handled.
    pub fn hang_next(&self, delay: Duration) {
        self.state.lock().unwrap().hang_next = Some(delay);
    }

    /// Stops listening: new connections are refused until `start_listening`.
    pub async fn stop_listening(&self) {
        let task = self.server.lock().unwrap().take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
        // The listener is closed once the task is gone; make sure of it.
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(self.addr).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("fake statuspage still accepts connections on {}", self.addr);
    }

    /// Listens again on the same port.
    pub async fn start_listening(&self) {
        let mut tries = 0;
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if tries < 100 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("cannot listen again on {}: {e}", self.addr),
            }
        };
        self.serve(listener);
    }

    /// Refuses connections for `outage`, then comes back on the same port.
    pub async fn refuse_for(self: &Arc<Self>, outage: Duration) -> tokio::task::JoinHandle<()> {
        self.stop_listening().await;
        let me = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(outage).await;
            me.start_listening().await;
        })
    }
}

async fn handle(
    State(state): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let hang = state.lock().unwrap().hang_next.take();
    if let Some(delay) = hang {
        tokio::time::sleep(delay).await;
    }
    let mut s = state.lock().unwrap();
    let authorized = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        == Some(format!("OAuth {}", s.api_key).as_str());
    let parsed: Result<Value, _> = if body.is_empty() {
        Ok(Value::Null)
    } else {
        serde_json::from_slice(&body)
    };
    let path = uri.path().to_string();
    let mut garbled = false;
    let (status, answer, retry_after) = if std::mem::take(&mut s.echo_next) {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        (
            401,
            json!({ "error": format!("bad credentials: {given}") }),
            None,
        )
    } else if let Some((code, after)) = s.scripted.pop_front() {
        (code, json!({ "error": "scripted failure" }), after)
    } else if !authorized {
        (401, json!({ "error": "Could not authenticate" }), None)
    } else {
        match &parsed {
            Err(_) => (400, json!({ "error": "malformed JSON body" }), None),
            Ok(body) => {
                let (code, answer) = route(&mut s, &method, &path, body);
                if std::mem::take(&mut s.lose_next) {
                    (502, json!({ "error": "bad gateway" }), None)
                } else if std::mem::take(&mut s.garble_next) {
                    garbled = true;
                    (code, answer, None)
                } else {
                    (code, answer, None)
                }
            }
        }
    };
    s.requests.push(Recorded {
        method: method.to_string(),
        path,
        authorized,
        body: parsed.unwrap_or(Value::Null),
        status,
    });
    drop(s);
    let mut resp = if garbled {
        let cut = answer.to_string();
        (
            StatusCode::from_u16(status).unwrap(),
            cut[..cut.len() / 2].to_string(),
        )
            .into_response()
    } else {
        (StatusCode::from_u16(status).unwrap(), axum::Json(answer)).into_response()
    };
    // One request per connection, so that "stop listening" refuses the very next call.
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    if let Some(secs) = retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

fn route(s: &mut Inner, method: &Method, path: &str, body: &Value) -> (u16, Value) {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let ["v1", "pages", page, rest @ ..] = segments.as_slice() else {
        return not_found();
    };
    if *page != s.page_id {
        return not_found();
    }
    let result = match (method.as_str(), rest) {
        ("POST", ["incidents"]) => create_incident(s, body),
        ("GET", ["incidents", "unresolved"]) => Ok((200, unresolved(s))),
        ("GET", ["incidents", id]) => match s.incidents.get(*id) {
            Some(incident) => Ok((200, incident.clone())),
            None => Err(not_found()),
        },
        ("PATCH", ["incidents", id]) => update_incident(s, id, body),
        ("PATCH", ["components", id]) => update_component(s, id, body),
        _ => return not_found(),
    };
    result.unwrap_or_else(|e| e)
}

fn not_found() -> (u16, Value) {
    (
        404,
        json!({ "error": "The requested resource could not be found." }),
    )
}

fn unprocessable(msg: impl Into<String>) -> (u16, Value) {
    (422, json!({ "error": [msg.into()] }))
}

type Answer = Result<(u16, Value), (u16, Value)>;

fn envelope<'a>(
    body: &'a Value,
    key: &str,
    allowed: &[&str],
) -> Result<&'a Map<String, Value>, (u16, Value)> {
    let top = body
        .as_object()
        .ok_or_else(|| unprocessable("body must be a JSON object"))?;
    if let Some(extra) = top.keys().find(|k| *k != key) {
        return Err(unprocessable(format!("unknown top-level field {extra}")));
    }
    let inner = top
        .get(key)
        .and_then(Value::as_object)
        .ok_or_else(|| unprocessable(format!("{key} is missing or not an object")))?;
    if let Some(extra) = inner.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(unprocessable(format!(
            "{key}[{extra}] is not a known field"
        )));
    }
    Ok(inner)
}

fn check_enum(obj: &Map<String, Value>, field: &str, allowed: &[&str]) -> Result<(), (u16, Value)> {
    match obj.get(field) {
        None => Ok(()),
        Some(Value::String(v)) if allowed.contains(&v.as_str()) => Ok(()),
        Some(other) => Err(unprocessable(format!(
            "{field} {other} is not one of {}",
            allowed.join("|")
        ))),
    }
}

fn check_incident(s: &Inner, inc: &Map<String, Value>, creating: bool) -> Result<(), (u16, Value)> {
    match inc.get("name") {
        None if creating => return Err(unprocessable("name can't be blank")),
        None => {}
        Some(Value::String(n)) if n.trim().is_empty() => {
            return Err(unprocessable("name can't be blank"));
        }
        Some(Value::String(n)) if n.chars().count() > 255 => {
            return Err(unprocessable(
                "name is too long (maximum is 255 characters)",
            ));
        }
        Some(Value::String(_)) => {}
        Some(_) => return Err(unprocessable("name must be a string")),
    }
    check_enum(inc, "status", INCIDENT_STATUSES)?;
    check_enum(inc, "impact_override", IMPACTS)?;
    if let Some(b) = inc.get("body")
        && !b.is_string()
    {
        return Err(unprocessable("body must be a string"));
    }
    if let Some(d) = inc.get("deliver_notifications")
        && !d.is_boolean()
    {
        return Err(unprocessable("deliver_notifications must be a boolean"));
    }
    if let Some(ids) = inc.get("component_ids") {
        let ids = ids
            .as_array()
            .ok_or_else(|| unprocessable("component_ids must be an array"))?;
        for id in ids {
            let id = id
                .as_str()
                .ok_or_else(|| unprocessable("component_ids must hold strings"))?;
            if !s.components.contains_key(id) {
                return Err(unprocessable(format!("component {id} does not exist")));
            }
        }
    }
    if let Some(map) = inc.get("components") {
        let map = map
            .as_object()
            .ok_or_else(|| unprocessable("components must be an object of id: status"))?;
        for (id, status) in map {
            if !s.components.contains_key(id) {
                return Err(unprocessable(format!("component {id} does not exist")));
            }
            match status.as_str() {
                Some(v) if COMPONENT_STATUSES.contains(&v) => {}
                _ => {
                    return Err(unprocessable(format!(
                        "components[{id}] {status} is not one of {}",
                        COMPONENT_STATUSES.join("|")
                    )));
                }
            }
        }
    }
    if let Some(meta) = inc.get("metadata") {
        let ok = meta
            .as_object()
            .is_some_and(|m| m.values().all(Value::is_object));
        if !ok {
            return Err(unprocessable("metadata must be an object of objects"));
        }
    }
    Ok(())
}

fn apply_components(s: &mut Inner, inc: &Map<String, Value>) {
    if let Some(map) = inc.get("components").and_then(Value::as_object) {
        for (id, status) in map {
            if let Some(c) = s.components.get_mut(id) {
                c["status"] = status.clone();
            }
        }
    }
}

fn create_incident(s: &mut Inner, body: &Value) -> Answer {
    let inc = envelope(body, "incident", INCIDENT_FIELDS)?;
    check_incident(s, inc, true)?;
    let id = format!("inc{:04}", s.order.len() + 1);
    let status = inc.get("status").cloned().unwrap_or(json!("investigating"));
    let impact = inc.get("impact_override").cloned().unwrap_or(json!("none"));
    let mut updates = Vec::new();
    if let Some(b) = inc.get("body") {
        updates.push(json!({ "status": status, "body": b }));
    }
    let incident = json!({
        "id": id,
        "page_id": s.page_id,
        "name": inc["name"],
        "status": status,
        "impact": impact,
        "impact_override": inc.get("impact_override").cloned().unwrap_or(Value::Null),
        "shortlink": format!("https://stspg.io/{id}"),
        "metadata": inc.get("metadata").cloned().unwrap_or(json!({})),
        "components": inc.get("component_ids").cloned().unwrap_or(json!([])),
        "incident_updates": updates,
    });
    apply_components(s, inc);
    s.incidents.insert(id.clone(), incident.clone());
    s.order.push(id);
    Ok((201, incident))
}

fn update_incident(s: &mut Inner, id: &str, body: &Value) -> Answer {
    if !s.incidents.contains_key(id) {
        return Err(not_found());
    }
    let inc = envelope(body, "incident", INCIDENT_FIELDS)?;
    check_incident(s, inc, false)?;
    apply_components(s, inc);
    let stored = s.incidents.get_mut(id).unwrap();
    for field in ["name", "status", "impact_override", "metadata"] {
        if let Some(v) = inc.get(field) {
            stored[field] = v.clone();
        }
    }
    if let Some(b) = inc.get("body") {
        let update = json!({ "status": stored["status"], "body": b });
        stored["incident_updates"]
            .as_array_mut()
            .unwrap()
            .push(update);
    }
    Ok((200, stored.clone()))
}

fn update_component(s: &mut Inner, id: &str, body: &Value) -> Answer {
    if !s.components.contains_key(id) {
        return Err(not_found());
    }
    let comp = envelope(body, "component", COMPONENT_FIELDS)?;
    check_enum(comp, "status", COMPONENT_STATUSES)?;
    let stored = s.components.get_mut(id).unwrap();
    for (k, v) in comp {
        stored[k.as_str()] = v.clone();
    }
    Ok((200, stored.clone()))
}

fn unresolved(s: &Inner) -> Value {
    Value::Array(
        s.order
            .iter()
            .map(|id| &s.incidents[id])
            .filter(|i| i["status"] != "resolved")
            .cloned()
            .collect(),
    )
}
