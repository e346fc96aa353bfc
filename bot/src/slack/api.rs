//! Slack Web API client: `chat.postMessage`, `chat.update`, `chat.postEphemeral`,
//! `conversations.history`, and `response_url` replies, with Slack's rate limits honoured.
//!
//! Retry policy: 429 waits `Retry-After` and tries again; transport errors and 5xx are retried
//! with backoff. A post is never duplicated by a retry: each post carries a drbot key in its
//! message metadata, and after an ambiguous failure (5xx, timeout) the channel history is
//! searched for that key before posting again.

use std::time::Duration;

use serde_json::{Value, json};

use crate::config::Secret;

/// How many attempts one call gets.
const ATTEMPTS: u32 = 5;
/// Longest `Retry-After` honoured before giving up on a call.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// Metadata event type marking drbot's own messages.
const EVENT_TYPE: &str = "drbot_message";

/// Slack Web API errors.
#[derive(Debug, thiserror::Error)]
pub enum SlackError {
    /// Slack answered `ok: false` with this error code.
    #[error("Slack API error `{0}`")]
    Api(String),
    /// No usable answer after retries.
    #[error("Slack unreachable: {0}")]
    Transport(String),
}

impl SlackError {
    /// The message cannot be edited any more (deleted, too old, not ours): post a new one.
    pub fn cannot_update(&self) -> bool {
        matches!(self, SlackError::Api(code) if matches!(code.as_str(),
            "cant_update_message" | "message_not_found" | "edit_window_closed" | "msg_too_long"))
    }
}

/// A Web API client for one bot token.
#[derive(Clone)]
pub struct SlackApi {
    http: reqwest::Client,
    base: String,
    token: Secret,
}

/// A call's arguments: JSON (write methods) or a form (read methods, which take no JSON).
#[derive(Clone, Copy)]
enum Body<'a> {
    Json(&'a Value),
    Form(&'a [(&'a str, &'a str)]),
}

enum Outcome {
    Done(Value),
    /// Slack may or may not have acted (5xx, timeout after sending).
    Ambiguous(String),
}

impl SlackApi {
    /// A client for `base` (e.g. `https://slack.com/api`).
    pub fn new(base: &str, token: Secret) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(4)
            .build()
            .unwrap_or_default();
        Self {
            http,
            base: base.trim_end_matches('/').to_string(),
            token,
        }
    }

    /// One call with the retry policy; `safe` calls (edits, reads) retry 5xx freely, unsafe
    /// ones (posts) report ambiguity instead.
    async fn call(&self, method: &str, body: Body<'_>, safe: bool) -> Result<Outcome, SlackError> {
        let url = format!("{}/{method}", self.base);
        let mut backoff = Duration::from_millis(200);
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            let req = self.http.post(&url).bearer_auth(self.token.expose());
            let req = match body {
                Body::Json(v) => req.json(v),
                Body::Form(pairs) => req
                    .header(
                        reqwest::header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded",
                    )
                    .body(
                        form_urlencoded::Serializer::new(String::new())
                            .extend_pairs(pairs)
                            .finish(),
                    ),
            };
            let res = req.send().await;
            match res {
                Ok(r) if r.status().as_u16() == 429 => {
                    let wait = r
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs)
                        .unwrap_or(Duration::from_secs(1));
                    if wait > MAX_RETRY_AFTER {
                        return Err(SlackError::Transport(format!(
                            "{method}: rate limited for {wait:?}"
                        )));
                    }
                    tracing::warn!(method, wait_s = wait.as_secs(), "Slack rate limit: waiting");
                    tokio::time::sleep(wait).await;
                    continue;
                }
                Ok(r) if r.status().is_server_error() => {
                    last = format!("{method}: HTTP {}", r.status().as_u16());
                    if !safe {
                        return Ok(Outcome::Ambiguous(last));
                    }
                }
                Ok(r) => {
                    let status = r.status();
                    match r.json::<Value>().await {
                        Ok(v) if v["ok"] == true => return Ok(Outcome::Done(v)),
                        Ok(v) => {
                            let code = v["error"].as_str().unwrap_or("unknown_error").to_string();
                            return Err(SlackError::Api(code));
                        }
                        Err(e) => {
                            last = format!("{method}: HTTP {status}, unreadable body: {e}");
                            // A 2xx whose body cannot be read may still have acted: a post is
                            // looked for, never sent again blindly.
                            if !safe && status.is_success() {
                                return Ok(Outcome::Ambiguous(last));
                            }
                        }
                    }
                }
                Err(e) if e.is_connect() => last = format!("{method}: {e}"),
                Err(e) => {
                    last = format!("{method}: {e}");
                    if !safe {
                        return Ok(Outcome::Ambiguous(last));
                    }
                }
            }
            if attempt < ATTEMPTS {
                tracing::warn!(method, attempt, error = %last, "Slack call failed: retrying");
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
        }
        Err(SlackError::Transport(last))
    }

    async fn call_safe(&self, method: &str, body: Body<'_>) -> Result<Value, SlackError> {
        match self.call(method, body, true).await? {
            Outcome::Done(v) => Ok(v),
            Outcome::Ambiguous(e) => Err(SlackError::Transport(e)),
        }
    }

    /// Posts a message carrying `key` in its metadata; returns its `ts`. Never posts twice:
    /// after an ambiguous failure it looks for `key` in the channel before trying again.
    pub async fn post_message(
        &self,
        channel: &str,
        text: &str,
        blocks: &Value,
        thread_ts: Option<&str>,
        key: &str,
    ) -> Result<String, SlackError> {
        let mut body = json!({
            "channel": channel,
            "text": text,
            "blocks": blocks,
            "metadata": { "event_type": EVENT_TYPE, "event_payload": { "key": key } },
        });
        if let Some(ts) = thread_ts {
            body["thread_ts"] = json!(ts);
        }
        let mut last = String::new();
        for _ in 0..ATTEMPTS {
            match self
                .call("chat.postMessage", Body::Json(&body), false)
                .await?
            {
                Outcome::Done(v) => {
                    return v["ts"].as_str().map(str::to_string).ok_or_else(|| {
                        SlackError::Transport("chat.postMessage: answer without ts".into())
                    });
                }
                Outcome::Ambiguous(e) => {
                    last = e;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    if let Some(ts) = self.find_posted(channel, thread_ts, key).await? {
                        return Ok(ts);
                    }
                }
            }
        }
        Err(SlackError::Transport(last))
    }

    /// The `ts` of drbot's message with `key` in `channel` (or its thread), if Slack has it.
    pub async fn find_posted(
        &self,
        channel: &str,
        thread_ts: Option<&str>,
        key: &str,
    ) -> Result<Option<String>, SlackError> {
        // Read methods take form arguments only: Slack ignores a JSON body there.
        let mut args = vec![
            ("channel", channel),
            ("include_all_metadata", "true"),
            ("limit", "50"),
        ];
        let method = match thread_ts {
            Some(ts) => {
                args.push(("ts", ts));
                args[2].1 = "200";
                "conversations.replies"
            }
            None => "conversations.history",
        };
        let v = self.call_safe(method, Body::Form(&args)).await?;
        let found = v["messages"].as_array().into_iter().flatten().find(|m| {
            m["metadata"]["event_type"] == EVENT_TYPE
                && m["metadata"]["event_payload"]["key"] == key
        });
        Ok(found.and_then(|m| m["ts"].as_str()).map(str::to_string))
    }

    /// A Socket Mode WebSocket URL (`apps.connections.open`, with the app-level token).
    pub async fn open_socket(&self, app_token: &Secret) -> Result<String, SlackError> {
        let r = self
            .http
            .post(format!("{}/apps.connections.open", self.base))
            .bearer_auth(app_token.expose())
            .send()
            .await
            .map_err(|e| SlackError::Transport(format!("apps.connections.open: {e}")))?;
        let v: Value = r
            .json()
            .await
            .map_err(|e| SlackError::Transport(format!("apps.connections.open: {e}")))?;
        if v["ok"] != true {
            return Err(SlackError::Api(
                v["error"].as_str().unwrap_or("unknown_error").into(),
            ));
        }
        v["url"].as_str().map(str::to_string).ok_or_else(|| {
            SlackError::Transport("apps.connections.open: answer without url".into())
        })
    }

    /// Replaces a message's text and blocks.
    pub async fn update_message(
        &self,
        channel: &str,
        ts: &str,
        text: &str,
        blocks: &Value,
    ) -> Result<(), SlackError> {
        let body = json!({ "channel": channel, "ts": ts, "text": text, "blocks": blocks });
        self.call_safe("chat.update", Body::Json(&body))
            .await
            .map(|_| ())
    }

    /// A message only `user` sees.
    pub async fn post_ephemeral(
        &self,
        channel: &str,
        user: &str,
        text: &str,
    ) -> Result<(), SlackError> {
        let body = json!({ "channel": channel, "user": user, "text": text });
        self.call_safe("chat.postEphemeral", Body::Json(&body))
            .await
            .map(|_| ())
    }

    /// Answers through an interaction's `response_url` (no token needed; the URL comes from
    /// a verified request). The URL is itself a credential (anyone holding it can post in the
    /// channel for 30 minutes), so errors leave it out.
    pub async fn respond(&self, response_url: &str, body: &Value) -> Result<(), SlackError> {
        let r = self
            .http
            .post(response_url)
            .json(body)
            .send()
            .await
            .map_err(|e| SlackError::Transport(format!("response_url: {}", e.without_url())))?;
        if r.status().is_success() {
            Ok(())
        } else {
            Err(SlackError::Transport(format!(
                "response_url: HTTP {}",
                r.status().as_u16()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failed_response_url_answer_does_not_show_the_url() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let api = SlackApi::new("http://127.0.0.1:9/api", Secret::new("xoxb-test"));
        let url = format!("http://127.0.0.1:{port}/actions/T1/42/HOOKSECRET");
        let e = api
            .respond(&url, &json!({ "text": "x" }))
            .await
            .unwrap_err();
        let text = e.to_string();
        assert!(text.contains("response_url: "), "{text}");
        assert!(
            !text.contains("HOOKSECRET") && !text.contains("/actions/"),
            "{text}"
        );
    }
}
