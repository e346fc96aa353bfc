//! A loopback fake of the Discord REST API for channel messages and interaction webhooks (a
//! test double: Discord cannot be reached from here). Records messages and webhook calls,
//! honours `nonce` + `enforce_nonce` as Discord documents (a second post with the same nonce
//! returns the first message), can answer the next call with a 429 carrying `retry_after` or
//! report an exhausted bucket (`X-RateLimit-Remaining: 0`), and treats interaction tokens
//! starting with `expired` as Discord treats tokens older than 15 minutes (401, code 50027);
//! tokens starting with `broken` get a 502 every time (webhooks down).

use std::{
    sync::{Arc, Mutex},
    time::Instant,
};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{patch, post},
};
use serde_json::{Value, json};

/// A message in the fake guild.
#[derive(Debug, Clone)]
pub struct DMessage {
    /// Channel id.
    pub channel: String,
    /// Message id.
    pub id: String,
    /// Last body (content, embeds, components).
    pub body: Value,
    /// Edits so far.
    pub edits: usize,
}

/// A call to an interaction webhook.
#[derive(Debug, Clone)]
pub struct WebhookCall {
    /// `POST` (follow-up) or `PATCH` (edit of `@original`).
    pub method: String,
    /// The interaction token in the path.
    pub token: String,
    /// The body.
    pub body: Value,
}

#[derive(Default)]
struct Inner {
    messages: Vec<(Option<String>, DMessage)>,
    rate_limit_next: bool,
    exhaust_next: Option<f64>,
    next_id: u64,
    posts: usize,
    post_times: Vec<Instant>,
    webhooks: Vec<WebhookCall>,
    unknown_original: usize,
    refused_original: usize,
}

/// The running fake.
pub struct FakeDiscord {
    /// Port on 127.0.0.1.
    pub port: u16,
    inner: Arc<Mutex<Inner>>,
}

#[derive(Clone)]
struct Ctx {
    inner: Arc<Mutex<Inner>>,
    token: String,
}

impl FakeDiscord {
    /// Starts the fake; it accepts only `Authorization: Bot <token>`.
    pub fn start(token: &str) -> FakeDiscord {
        let inner = Arc::new(Mutex::new(Inner {
            next_id: 1_300_000_000_000_000_000,
            ..Default::default()
        }));
        let ctx = Ctx {
            inner: inner.clone(),
            token: token.to_string(),
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind fake discord");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("rt");
            rt.block_on(async move {
                let app = Router::new()
                    .route("/api/v10/channels/{channel}/messages", post(create))
                    .route("/api/v10/channels/{channel}/messages/{id}", patch(edit))
                    .route("/api/v10/webhooks/{app}/{token}", post(followup))
                    .route(
                        "/api/v10/webhooks/{app}/{token}/messages/{msg}",
                        patch(edit_original),
                    )
                    .with_state(ctx);
                let l = tokio::net::TcpListener::from_std(listener).expect("listener");
                axum::serve(l, app).await.expect("serve fake discord");
            });
        });
        FakeDiscord { port, inner }
    }

    /// `discord.api_base_url` for drbot.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/api/v10", self.port)
    }

    /// The next `n` edits of `@original` answer 404 Unknown Webhook (10015), as Discord does
    /// before it has registered the deferred response.
    pub fn original_not_yet_known(&self, n: usize) {
        self.inner.lock().unwrap().unknown_original = n;
    }

    /// Edits of `@original` refused with 404 so far.
    pub fn refused_original(&self) -> usize {
        self.inner.lock().unwrap().refused_original
    }

    /// The next call answers 429 with `retry_after`.
    pub fn rate_limit_next(&self) {
        self.inner.lock().unwrap().rate_limit_next = true;
    }

    /// Messages in `channel`.
    pub fn messages(&self, channel: &str) -> Vec<DMessage> {
        self.inner
            .lock()
            .unwrap()
            .messages
            .iter()
            .filter(|(_, m)| m.channel == channel)
            .map(|(_, m)| m.clone())
            .collect()
    }

    /// POST calls received (including rate-limited and deduplicated ones).
    pub fn posts(&self) -> usize {
        self.inner.lock().unwrap().posts
    }

    /// When each channel-message POST arrived.
    pub fn post_times(&self) -> Vec<Instant> {
        self.inner.lock().unwrap().post_times.clone()
    }

    /// The next successful channel-message POST reports its bucket exhausted for `secs`.
    pub fn exhaust_bucket_next(&self, secs: f64) {
        self.inner.lock().unwrap().exhaust_next = Some(secs);
    }

    /// Interaction-webhook calls accepted so far (expired tokens are refused, not recorded).
    pub fn webhooks(&self) -> Vec<WebhookCall> {
        self.inner.lock().unwrap().webhooks.clone()
    }

    /// The text of drbot's ephemeral answer `v` to an interaction: `v`'s own (type 4, answered
    /// at once) or, when drbot deferred it (type 5: the machine was slower than
    /// `discord.defer_after`), the edit of `@original` made after the first `seen` webhook
    /// calls, waited for up to 30 s.
    pub fn answer_text(&self, v: &Value, seen: usize) -> String {
        if v["type"] == 5 {
            let deadline = Instant::now() + std::time::Duration::from_secs(30);
            loop {
                if let Some(edit) = self.webhooks()[seen..].iter().find(|c| c.method == "PATCH") {
                    return edit.body["content"].as_str().unwrap_or("").to_string();
                }
                assert!(Instant::now() < deadline, "deferred answer never sent: {v}");
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
        assert_eq!(v["type"], 4, "{v}");
        assert_eq!(v["data"]["flags"], 64, "ephemeral: {v}");
        v["data"]["content"].as_str().unwrap_or("").to_string()
    }
}

fn expired(token: &str) -> Option<Response> {
    if token.starts_with("broken") {
        return Some((StatusCode::BAD_GATEWAY, "upstream unavailable").into_response());
    }
    token.starts_with("expired").then(|| {
        (
            StatusCode::UNAUTHORIZED,
            Json(json!({ "message": "Invalid Webhook Token", "code": 50027 })),
        )
            .into_response()
    })
}

async fn followup(
    State(ctx): State<Ctx>,
    Path((_app, token)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> Response {
    if let Some(r) = expired(&token) {
        return r;
    }
    let mut g = ctx.inner.lock().unwrap();
    g.next_id += 1;
    let id = g.next_id.to_string();
    g.webhooks.push(WebhookCall {
        method: "POST".into(),
        token,
        body,
    });
    Json(json!({ "id": id })).into_response()
}

async fn edit_original(
    State(ctx): State<Ctx>,
    Path((_app, token, msg)): Path<(String, String, String)>,
    Json(body): Json<Value>,
) -> Response {
    if msg != "@original" {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({ "message": "Unknown Message", "code": 10008 })),
        )
            .into_response();
    }
    if let Some(r) = expired(&token) {
        return r;
    }
    {
        let mut g = ctx.inner.lock().unwrap();
        if g.unknown_original > 0 {
            g.unknown_original -= 1;
            g.refused_original += 1;
            return (
                StatusCode::NOT_FOUND,
                Json(json!({ "message": "Unknown Webhook", "code": 10015 })),
            )
                .into_response();
        }
    }
    ctx.inner.lock().unwrap().webhooks.push(WebhookCall {
        method: "PATCH".into(),
        token,
        body,
    });
    Json(json!({ "id": "0" })).into_response()
}

fn authorized(ctx: &Ctx, headers: &HeaderMap) -> bool {
    headers.get("authorization").and_then(|v| v.to_str().ok())
        == Some(&format!("Bot {}", ctx.token))
}

fn limited(g: &mut Inner) -> Option<Response> {
    if std::mem::take(&mut g.rate_limit_next) {
        let body = json!({ "message": "You are being rate limited.", "retry_after": 0.25, "global": false });
        return Some(
            (
                StatusCode::TOO_MANY_REQUESTS,
                [("x-ratelimit-reset-after", "0.250")],
                Json(body),
            )
                .into_response(),
        );
    }
    None
}

async fn create(
    State(ctx): State<Ctx>,
    Path(channel): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if !authorized(&ctx, &headers) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({ "message": "401: Unauthorized", "code": 0 })),
        )
            .into_response();
    }
    let mut g = ctx.inner.lock().unwrap();
    g.posts += 1;
    g.post_times.push(Instant::now());
    if let Some(r) = limited(&mut g) {
        return r;
    }
    let nonce = body["nonce"].as_str().map(str::to_string);
    if body["enforce_nonce"] == true
        && let Some(n) = &nonce
        && let Some((_, m)) = g
            .messages
            .iter()
            .find(|(k, m)| k.as_ref() == Some(n) && m.channel == channel)
    {
        return Json(json!({ "id": m.id, "channel_id": channel })).into_response();
    }
    g.next_id += 1;
    let id = g.next_id.to_string();
    g.messages.push((
        nonce,
        DMessage {
            channel: channel.clone(),
            id: id.clone(),
            body,
            edits: 0,
        },
    ));
    let answer = Json(json!({ "id": id, "channel_id": channel }));
    match g.exhaust_next.take() {
        Some(secs) => (
            [
                ("x-ratelimit-limit", "5".to_string()),
                ("x-ratelimit-remaining", "0".to_string()),
                ("x-ratelimit-reset-after", format!("{secs:.3}")),
                ("x-ratelimit-bucket", "fake-bucket".to_string()),
            ],
            answer,
        )
            .into_response(),
        None => answer.into_response(),
    }
}

async fn edit(
    State(ctx): State<Ctx>,
    Path((channel, id)): Path<(String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if !authorized(&ctx, &headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let mut g = ctx.inner.lock().unwrap();
    if let Some(r) = limited(&mut g) {
        return r;
    }
    match g
        .messages
        .iter_mut()
        .find(|(_, m)| m.channel == channel && m.id == id)
    {
        Some((_, m)) => {
            m.body = body;
            m.edits += 1;
            Json(json!({ "id": id, "channel_id": channel })).into_response()
        }
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({ "message": "Unknown Message", "code": 10008 })),
        )
            .into_response(),
    }
}
