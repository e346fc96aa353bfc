//! Discord REST client for channel messages (bot token): post and edit cards, with 429
//! (`retry_after`, `X-RateLimit-Reset-After`) honoured and transient failures retried. Posts
//! carry a nonce with `enforce_nonce`, so Discord itself refuses to create a second message
//! for a retried post.

use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::config::Secret;

const ATTEMPTS: u32 = 5;
const MAX_WAIT: Duration = Duration::from_secs(60);

/// Discord API errors.
#[derive(Debug, thiserror::Error)]
pub enum DiscordError {
    /// The message is gone (deleted) or cannot be edited.
    #[error("Discord message not found")]
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
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &Value,
    ) -> Result<Value, DiscordError> {
        let url = format!("{}{path}", self.base);
        let mut backoff = Duration::from_millis(200);
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            let res = self
                .http
                .request(method.clone(), &url)
                .header("Authorization", format!("Bot {}", self.token.expose()))
                .json(body)
                .send()
                .await;
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
                    let wait = Duration::from_secs_f64(secs.clamp(0.0, 3600.0));
                    if wait > MAX_WAIT {
                        return Err(DiscordError::Transport(format!(
                            "rate limited for {wait:?}"
                        )));
                    }
                    tracing::warn!(
                        path,
                        wait_ms = wait.as_millis() as u64,
                        "Discord rate limit: waiting"
                    );
                    tokio::time::sleep(wait).await;
                    continue;
                }
                Ok(r) if r.status().is_server_error() => {
                    last = format!("HTTP {}", r.status().as_u16())
                }
                Ok(r) if r.status().as_u16() == 404 => return Err(DiscordError::Gone),
                Ok(r) if !r.status().is_success() => {
                    return Err(DiscordError::Api(r.status().as_u16()));
                }
                Ok(r) => {
                    return r
                        .json()
                        .await
                        .map_err(|e| DiscordError::Transport(e.to_string()));
                }
                Err(e) => last = e.to_string(),
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
            &format!("/channels/{channel}/messages/{id}"),
            body,
        )
        .await
        .map(|_| ())
    }
}
