//! Discord REST client: channel messages with the bot token (post and edit cards) and
//! interaction-token webhooks (deferred answers, follow-ups). 429s (`retry_after`,
//! `X-RateLimit-Reset-After`) are honoured, an exhausted bucket (`X-RateLimit-Remaining: 0`)
//! is waited out before its next call, and transient failures are retried. Posts carry a nonce
//! with `enforce_nonce`, so Discord itself refuses to create a second message for a retried
//! post. Interaction tokens are credentials: they never appear in logs or errors.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::config::Secret;

const ATTEMPTS: u32 = 5;
const MAX_WAIT: Duration = Duration::from_secs(60);

/// Discord API errors.
#[derive(Debug, thiserror::Error)]
pub enum DiscordError {
    /// The message is gone (deleted) or cannot be edited, or the interaction token expired.
    #[error("Discord message or webhook not found")]
    Gone,
    /// Discord refused the call.
    #[error("Discord API error: HTTP {0}")]
    Api(u16),
    /// No usable answer after retries.
    #[error("Discord unreachable: {0}")]
    Transport(String),
}

/// A client for one bot token.
#[derive(Clone)]
pub struct DiscordApi {
    http: reqwest::Client,
    base: String,
    token: Secret,
    /// Per rate-limit bucket (by route): no call before this instant.
    blocked: Arc<Mutex<HashMap<String, Instant>>>,
}

/// Discord's nonce for a drbot idempotency key (at most 25 characters).
pub fn nonce(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))[..25].to_string()
}

impl DiscordApi {
    /// A client for `base` (e.g. `https://discord.com/api/v10`).
    pub fn new(base: &str, token: Secret) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Self {
            http,
            base: base.trim_end_matches('/').to_string(),
            token,
            blocked: Arc::default(),
        }
    }

    /// Waits until `route`'s bucket has calls left.
    async fn wait_for_bucket(&self, route: &str) {
        let until = self.blocked.lock().ok().and_then(|b| b.get(route).copied());
        if let Some(until) = until {
            let now = Instant::now();
            if until > now {
                let wait = (until - now).min(MAX_WAIT);
                tracing::debug!(
                    route,
                    wait_ms = wait.as_millis() as u64,
                    "Discord bucket empty: waiting"
                );
                tokio::time::sleep(wait).await;
            }
        }
    }

    /// Remembers an exhausted bucket from a response's `X-RateLimit-*` headers.
    fn note_bucket(&self, route: &str, headers: &reqwest::header::HeaderMap) {
        let get = |k: &str| headers.get(k).and_then(|v| v.to_str().ok());
        if get("x-ratelimit-remaining") == Some("0")
            && let Some(secs) = get("x-ratelimit-reset-after").and_then(|v| v.parse::<f64>().ok())
            && let Ok(mut b) = self.blocked.lock()
        {
            let wait = wait_of(secs, MAX_WAIT);
            b.insert(route.to_string(), Instant::now() + wait);
        }
    }

    /// One API call. `route` names the rate-limit bucket and is what logs show (the path may
    /// hold an interaction token).
    async fn call(
        &self,
        method: reqwest::Method,
        route: &str,
        path: &str,
        body: &Value,
    ) -> Result<Value, DiscordError> {
        let url = format!("{}{path}", self.base);
        let mut backoff = Duration::from_millis(200);
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            self.wait_for_bucket(route).await;
            let res = self
                .http
                .request(method.clone(), &url)
                .header("Authorization", format!("Bot {}", self.token.expose()))
                .json(body)
                .send()
                .await;
            if let Ok(r) = &res {
                self.note_bucket(route, r.headers());
            }
            match res {
                Ok(r) if r.status().as_u16() == 429 => {
                    let header = r
                        .headers()
                        .get("x-ratelimit-reset-after")
                        .or_else(|| r.headers().get("retry-after"))
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<f64>().ok());
                    let body: Value = r.json().await.unwrap_or(Value::Null);
                    let secs = body["retry_after"].as_f64().or(header).unwrap_or(1.0);
                    let wait = wait_of(secs, Duration::from_secs(3600));
                    if wait > MAX_WAIT {
                        return Err(DiscordError::Transport(format!(
                            "rate limited for {wait:?}"
                        )));
                    }
                    tracing::warn!(
                        route,
                        wait_ms = wait.as_millis() as u64,
                        "Discord rate limit: waiting"
                    );
                    tokio::time::sleep(wait).await;
                    continue;
                }
                Ok(r) if r.status().is_server_error() => {
                    last = format!("HTTP {}", r.status().as_u16())
                }
                // An expired interaction token answers 401 "Invalid Webhook Token" (50027).
                Ok(r)
                    if r.status().as_u16() == 404
                        || (r.status().as_u16() == 401 && route.starts_with("webhook:")) =>
                {
                    return Err(DiscordError::Gone);
                }
                Ok(r) if !r.status().is_success() => {
                    return Err(DiscordError::Api(r.status().as_u16()));
                }
                Ok(r) => {
                    return r
                        .json()
                        .await
                        .map_err(|e| DiscordError::Transport(transport_kind(&e)));
                }
                // reqwest's error text holds the URL (and so a webhook token): keep the kind only.
                Err(e) => last = transport_kind(&e),
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
        }
        Err(DiscordError::Transport(last))
    }

    /// Posts a message (idempotent by `key` through Discord's enforced nonce); returns its id.
    pub async fn post_message(
        &self,
        channel: &str,
        mut body: Value,
        key: &str,
    ) -> Result<String, DiscordError> {
        body["nonce"] = Value::String(nonce(key));
        body["enforce_nonce"] = Value::Bool(true);
        let v = self
            .call(
                reqwest::Method::POST,
                &format!("channel:{channel}"),
                &format!("/channels/{channel}/messages"),
                &body,
            )
            .await?;
        v["id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| DiscordError::Transport("answer without id".into()))
    }

    /// Replaces a message's content, embeds and components.
    pub async fn edit_message(
        &self,
        channel: &str,
        id: &str,
        body: &Value,
    ) -> Result<(), DiscordError> {
        self.call(
            reqwest::Method::PATCH,
            &format!("channel:{channel}"),
            &format!("/channels/{channel}/messages/{id}"),
            body,
        )
        .await
        .map(|_| ())
    }

    /// Edits the answer to an interaction (`@original`), e.g. after a deferred response.
    pub async fn edit_original(
        &self,
        application: &str,
        token: &Secret,
        body: &Value,
    ) -> Result<(), DiscordError> {
        self.call(
            reqwest::Method::PATCH,
            &format!("webhook:{application}"),
            &format!(
                "/webhooks/{application}/{}/messages/@original",
                token.expose()
            ),
            body,
        )
        .await
        .map(|_| ())
    }

    /// Sends a follow-up message through an interaction's webhook; `Gone` once the token
    /// expired.
    pub async fn followup(
        &self,
        application: &str,
        token: &Secret,
        body: &Value,
    ) -> Result<(), DiscordError> {
        self.call(
            reqwest::Method::POST,
            &format!("webhook:{application}"),
            &format!("/webhooks/{application}/{}?wait=true", token.expose()),
            body,
        )
        .await
        .map(|_| ())
    }
}

/// What went wrong with a request, without its URL.
fn transport_kind(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection failed".into()
    } else if e.is_decode() {
        "unreadable answer".into()
    } else {
        "request failed".into()
    }
}

/// The wait Discord asked for, `secs` (from a header or the body; a header may read `nan` or
/// `inf`), within `0..=max`; one second when it is not a number.
fn wait_of(secs: f64, max: Duration) -> Duration {
    if secs.is_nan() {
        return Duration::from_secs(1);
    }
    Duration::try_from_secs_f64(secs.clamp(0.0, max.as_secs_f64())).unwrap_or(max)
}

#[cfg(test)]
mod wait_tests {
    use super::*;

    #[test]
    fn any_wait_discord_sends_is_a_duration() {
        let max = Duration::from_secs(60);
        assert_eq!(wait_of(1.5, max), Duration::from_millis(1_500));
        assert_eq!(wait_of(-3.0, max), Duration::ZERO);
        assert_eq!(wait_of(1e300, max), max);
        assert_eq!(wait_of(f64::INFINITY, max), max);
        assert_eq!(wait_of(f64::NAN, max), Duration::from_secs(1));
        assert_eq!(
            "nan".parse::<f64>().map(|s| wait_of(s, max)),
            Ok(Duration::from_secs(1))
        );
    }
}
