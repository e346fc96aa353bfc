//! A loopback fake of the Slack Web API (a test double: Slack cannot be reached from here).
//! It speaks Slack's documented wire format for the methods drbot calls, records every call,
//! and can be told to answer the next call of a method with a 429 (`Retry-After`) or a 5xx,
//! optionally after acting on it (the ambiguous failure that could cause duplicate posts).

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};
use serde_json::{Value, json};

/// One recorded Web API call.
#[derive(Debug, Clone)]
pub struct Call {
    /// Method name, e.g. `chat.postMessage`.
    pub method: String,
    /// JSON body.
    pub body: Value,
}

/// A message in the fake workspace.
#[derive(Debug, Clone)]
pub struct Message {
    /// Channel id.
    pub channel: String,
    /// Message ts.
    pub ts: String,
    /// Thread parent, if a reply.
    pub thread_ts: Option<String>,
    /// Fallback text.
    pub text: String,
    /// Block Kit blocks.
    pub blocks: Value,
    /// Message metadata.
    pub metadata: Value,
    /// How many times `chat.update` changed it.
    pub updates: usize,
}

/// A failure to inject.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// 429 with `Retry-After: secs`; nothing done.
    RateLimited(u64),
    /// 500; nothing done.
    ServerError,
    /// 500 after the call took effect.
    ServerErrorAfterActing,
    /// 200 with a body that is not JSON, after the call took effect (a proxy's page, a
    /// truncated answer).
    GarbledAfterActing,
    /// Acts and answers normally, after waiting this many milliseconds.
    Slow(u64),
}

#[derive(Default)]
struct Inner {
    /// Socket Mode: sender to the connected client, messages received, connections made.
    socket: Option<tokio::sync::mpsc::UnboundedSender<String>>,
    socket_received: Vec<Value>,
    socket_connections: usize,
    ws_port: u16,
    calls: Vec<Call>,
    messages: Vec<Message>,
    responses: Vec<(String, Value)>,
    faults: VecDeque<(String, Fault)>,
    next_ts: u64,
    /// Channels the app is not in: posts there answer `not_in_channel`.
    outside: Vec<String>,
}

/// The running fake.
pub struct FakeSlack {
    /// Port on 127.0.0.1.
    pub port: u16,
    inner: Arc<Mutex<Inner>>,
    _thread: std::thread::JoinHandle<()>,
}

#[derive(Clone)]
struct Ctx {
    inner: Arc<Mutex<Inner>>,
    token: String,
}

impl FakeSlack {
    /// Starts the fake; it accepts only `Authorization: Bearer <token>`.
    pub fn start(token: &str) -> FakeSlack {
        let inner = Arc::new(Mutex::new(Inner {
            next_ts: 1,
            ..Default::default()
        }));
        let ctx = Ctx {
            inner: inner.clone(),
            token: token.to_string(),
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind fake slack");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let ws_listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("bind fake socket mode");
        ws_listener.set_nonblocking(true).expect("nonblocking");
        inner.lock().unwrap().ws_port = ws_listener.local_addr().expect("addr").port();
        let ws_inner = inner.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("rt");
            rt.spawn(async move {
                let l = tokio::net::TcpListener::from_std(ws_listener).expect("ws listener");
                socket_mode(l, ws_inner).await
            });
            rt.block_on(async move {
                let app = Router::new()
                    .route("/api/{method}", post(api))
                    .route("/respond/{id}", post(respond))
                    .with_state(ctx);
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                axum::serve(listener, app).await.expect("serve fake slack");
            });
        });
        FakeSlack {
            port,
            inner,
            _thread: thread,
        }
    }

    /// `slack.api_base_url` for drbot.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/api", self.port)
    }

    /// A `response_url` that records what is posted to it.
    pub fn response_url(&self, id: &str) -> String {
        format!("http://127.0.0.1:{}/respond/{id}", self.port)
    }

    /// The app is not in `channel` (a DM, a private channel): posts there are refused with
    /// `not_in_channel`, as Slack does.
    pub fn not_in_channel(&self, channel: &str) {
        self.inner.lock().unwrap().outside.push(channel.to_string());
    }

    /// The next call of `method` fails with `fault`.
    pub fn inject(&self, method: &str, fault: Fault) {
        self.inner
            .lock()
            .unwrap()
            .faults
            .push_back((method.to_string(), fault));
    }

    /// Calls of `method` so far.
    pub fn calls(&self, method: &str) -> Vec<Call> {
        self.inner
            .lock()
            .unwrap()
            .calls
            .iter()
            .filter(|c| c.method == method)
            .cloned()
            .collect()
    }

    /// Messages in `channel` (top level and replies).
    pub fn messages(&self, channel: &str) -> Vec<Message> {
        self.inner
            .lock()
            .unwrap()
            .messages
            .iter()
            .filter(|m| m.channel == channel)
            .cloned()
            .collect()
    }

    /// Socket Mode: sends an envelope to the connected client (waits for a connection).
    pub fn socket_send(&self, envelope: Value) {
        self.socket()
            .send(envelope.to_string())
            .expect("socket send");
    }

    /// The connected client's queue (waits for a connection).
    fn socket(&self) -> tokio::sync::mpsc::UnboundedSender<String> {
        self.wait(20, "a Socket Mode connection", |s| {
            s.inner.lock().unwrap().socket.is_some()
        });
        self.inner
            .lock()
            .unwrap()
            .socket
            .clone()
            .expect("connected")
    }

    /// Socket Mode: sends an envelope, then drops the connection at once, as a network failure
    /// would: the client's acknowledgement never arrives (Slack then re-sends the envelope on
    /// a later connection).
    pub fn socket_send_and_drop(&self, envelope: Value) {
        self.socket()
            .send(format!("{DROP}{envelope}"))
            .expect("socket send");
        self.wait(20, "the dropped connection", |s| {
            s.inner.lock().unwrap().socket.is_none()
        });
    }

    /// Socket Mode: messages the client sent (acks), in order.
    pub fn socket_received(&self) -> Vec<Value> {
        self.inner.lock().unwrap().socket_received.clone()
    }

    /// Socket Mode: how many connections the client opened.
    pub fn socket_connections(&self) -> usize {
        self.inner.lock().unwrap().socket_connections
    }

    /// Deletes a message (as a user would), so later `chat.update` calls fail.
    pub fn delete(&self, channel: &str, ts: &str) {
        self.inner
            .lock()
            .unwrap()
            .messages
            .retain(|m| !(m.channel == channel && m.ts == ts));
    }

    /// Bodies posted to response URL `id`.
    pub fn responses(&self, id: &str) -> Vec<Value> {
        self.inner
            .lock()
            .unwrap()
            .responses
            .iter()
            .filter(|(i, _)| i == id)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Waits until `pred` holds, or panics with `what`.
    pub fn wait(&self, secs: u64, what: &str, pred: impl Fn(&FakeSlack) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !pred(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

fn ok(v: Value) -> Response {
    Json(v).into_response()
}

fn err(code: &str) -> Response {
    Json(json!({ "ok": false, "error": code })).into_response()
}

async fn respond(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    ctx.inner.lock().unwrap().responses.push((id, body));
    StatusCode::OK.into_response()
}

/// Prefix of what `socket_send_and_drop` queues: the connection's task sends the rest, then
/// drops the connection.
const DROP: &str = "\u{0}drop after:";

/// Accepts Socket Mode connections: greets with `hello`, forwards queued envelopes, records
/// what the client sends.
async fn socket_mode(listener: tokio::net::TcpListener, inner: Arc<Mutex<Inner>>) {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message as Ws;
    while let Ok((tcp, _)) = listener.accept().await {
        let Ok(ws) = tokio_tungstenite::accept_async(tcp).await else {
            continue;
        };
        let (mut sink, mut stream) = ws.split();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        {
            let mut g = inner.lock().unwrap();
            g.socket = Some(tx);
            g.socket_connections += 1;
        }
        let hello = json!({ "type": "hello", "num_connections": 1 });
        if sink.send(Ws::Text(hello.to_string().into())).await.is_err() {
            continue;
        }
        let inner2 = inner.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    out = rx.recv() => match out {
                        Some(t) if t.starts_with(DROP) => {
                            // Sent, and the connection dropped before anything is read.
                            let _ = sink.send(Ws::Text(t[DROP.len()..].to_string().into())).await;
                            inner2.lock().unwrap().socket = None;
                            break;
                        }
                        Some(t) => if sink.send(Ws::Text(t.into())).await.is_err() { break },
                        None => break,
                    },
                    got = stream.next() => match got {
                        Some(Ok(Ws::Text(t))) => {
                            if let Ok(v) = serde_json::from_str::<Value>(&t) {
                                inner2.lock().unwrap().socket_received.push(v);
                            }
                        }
                        Some(Ok(_)) => {}
                        _ => break,
                    },
                }
            }
        });
    }
}

async fn api(
    State(ctx): State<Ctx>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if method == "apps.connections.open" {
        if !auth.starts_with("Bearer xapp-") {
            return err("invalid_auth");
        }
        let port = ctx.inner.lock().unwrap().ws_port;
        return ok(json!({ "ok": true, "url": format!("ws://127.0.0.1:{port}/link/?ticket=t") }));
    }
    if auth != format!("Bearer {}", ctx.token) {
        return err(if auth.is_empty() {
            "not_authed"
        } else {
            "invalid_auth"
        });
    }
    // As Slack: write methods take JSON or a form; read methods (`conversations.*`) take form
    // arguments only and ignore a JSON body, so their required arguments are missing.
    let json_body = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let body = if json_body {
        if method.starts_with("conversations.") {
            return err("invalid_arguments");
        }
        match serde_json::from_str::<Value>(&body) {
            Ok(v) => v,
            Err(_) => return err("invalid_json"),
        }
    } else {
        match serde_urlencoded::from_str::<Vec<(String, String)>>(&body) {
            Ok(pairs) => Value::Object(
                pairs
                    .into_iter()
                    .map(|(k, v)| (k, Value::String(v)))
                    .collect(),
            ),
            Err(_) => return err("invalid_form_data"),
        }
    };
    let fault = {
        let mut g = ctx.inner.lock().unwrap();
        g.calls.push(Call {
            method: method.clone(),
            body: body.clone(),
        });
        match g.faults.iter().position(|(m, _)| *m == method) {
            Some(i) => g.faults.remove(i).map(|(_, f)| f),
            None => None,
        }
    };
    if let Some(Fault::Slow(ms)) = fault {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    let mut g = ctx.inner.lock().unwrap();
    match fault {
        Some(Fault::RateLimited(secs)) => {
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", secs.to_string())],
                "",
            )
                .into_response();
        }
        Some(Fault::ServerError) => {
            return (StatusCode::INTERNAL_SERVER_ERROR, "upstream error").into_response();
        }
        _ => {}
    }
    let answer = handle(&mut g, &method, &body);
    match fault {
        Some(Fault::ServerErrorAfterActing) => {
            return (StatusCode::INTERNAL_SERVER_ERROR, "upstream error").into_response();
        }
        Some(Fault::GarbledAfterActing) => {
            return (StatusCode::OK, "<html>upstream answered</html>").into_response();
        }
        _ => {}
    }
    answer
}

/// Slack refuses a message whose section text is over 3,000 characters.
fn blocks_too_long(body: &Value) -> bool {
    body["blocks"].as_array().into_iter().flatten().any(|b| {
        b["text"]["text"]
            .as_str()
            .is_some_and(|t| t.chars().count() > 3_000)
    })
}

fn handle(g: &mut Inner, method: &str, body: &Value) -> Response {
    let channel = body["channel"].as_str().unwrap_or("").to_string();
    if method.starts_with("chat.") && blocks_too_long(body) {
        return err("invalid_blocks");
    }
    match method {
        "chat.postMessage" => {
            if channel.is_empty() {
                return err("channel_not_found");
            }
            if g.outside.contains(&channel) {
                return err("not_in_channel");
            }
            if body["text"].as_str().unwrap_or("").is_empty() && !body["blocks"].is_array() {
                return err("no_text");
            }
            let ts = format!("1700000000.{:06}", g.next_ts);
            g.next_ts += 1;
            let m = Message {
                channel: channel.clone(),
                ts: ts.clone(),
                thread_ts: body["thread_ts"].as_str().map(str::to_string),
                text: body["text"].as_str().unwrap_or("").to_string(),
                blocks: body["blocks"].clone(),
                metadata: body["metadata"].clone(),
                updates: 0,
            };
            g.messages.push(m);
            ok(
                json!({ "ok": true, "channel": channel, "ts": ts, "message": { "type": "message", "text": body["text"], "ts": ts } }),
            )
        }
        "chat.update" => {
            let ts = body["ts"].as_str().unwrap_or("");
            match g
                .messages
                .iter_mut()
                .find(|m| m.channel == channel && m.ts == ts)
            {
                Some(m) => {
                    m.text = body["text"].as_str().unwrap_or("").to_string();
                    m.blocks = body["blocks"].clone();
                    m.updates += 1;
                    ok(json!({ "ok": true, "channel": channel, "ts": ts, "text": m.text }))
                }
                None => err("message_not_found"),
            }
        }
        "chat.postEphemeral" => {
            let ts = format!("1700000000.{:06}", g.next_ts);
            g.next_ts += 1;
            ok(json!({ "ok": true, "message_ts": ts }))
        }
        "conversations.history" | "conversations.replies" => {
            let parent = body["ts"].as_str();
            let mut msgs: Vec<Value> = g
                .messages
                .iter()
                .filter(|m| m.channel == channel)
                .filter(|m| match parent {
                    Some(p) => m.thread_ts.as_deref() == Some(p) || m.ts == p,
                    None => m.thread_ts.is_none(),
                })
                .map(|m| {
                    let mut v = json!({ "type": "message", "ts": m.ts, "text": m.text });
                    if body["include_all_metadata"] == true
                        || body["include_all_metadata"] == "true"
                    {
                        v["metadata"] = m.metadata.clone();
                    }
                    v
                })
                .collect();
            msgs.reverse();
            ok(json!({ "ok": true, "messages": msgs, "has_more": false }))
        }
        _ => err("unknown_method"),
    }
}
