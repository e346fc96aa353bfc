//! Atlassian Statuspage REST API v1 client: create an incident, post updates, resolve it, set
//! component statuses. One attempt per call; the delivery outbox decides about retries from the
//! typed error (`Retry` with `Retry-After`, or `Permanent`). The API key is sent as
//! `Authorization: OAuth <key>` and never appears in Debug output, logs or errors.

mod config;
mod error;
mod model;

use std::time::Duration;

use recovery::secret::Secret;
use reqwest::header::{AUTHORIZATION, HeaderMap, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use config::{DEFAULT_BASE_URL, StatuspageConfig};
pub use error::StatuspageError;
pub use model::{
    Component, ComponentStatus, Impact, Incident, IncidentStatus, IncidentUpdate, MAX_NAME_CHARS,
    NewIncident, UpdateKeys, truncate_name,
};

use model::{ComponentEnvelope, WireComponent};

/// Longest server message kept in an error, in characters.
const MAX_MESSAGE_CHARS: usize = 300;

/// A Statuspage client for one page.
#[derive(Debug, Clone)]
pub struct StatuspageClient {
    http: reqwest::Client,
    base: String,
    page_id: String,
    api_key: Secret,
}

impl StatuspageClient {
    /// A client for `page_id` at `base_url` (e.g. `https://api.statuspage.io/v1`); each call
    /// gives up after `timeout`.
    pub fn new(
        base_url: &str,
        page_id: &str,
        api_key: Secret,
        timeout: Duration,
    ) -> Result<Self, StatuspageError> {
        let url = url::Url::parse(base_url)
            .map_err(|e| StatuspageError::Invalid(format!("base_url {base_url:?}: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.query().is_some() {
            return Err(StatuspageError::Invalid(format!(
                "base_url {base_url:?} must be an http(s) URL without a query"
            )));
        }
        check_id("page_id", page_id)?;
        if api_key.expose().trim().is_empty() {
            return Err(StatuspageError::Invalid("api_key is empty".into()));
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("drbot/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| StatuspageError::Invalid(format!("HTTP client: {e}")))?;
        Ok(StatuspageClient {
            http,
            base: base_url.trim_end_matches('/').to_string(),
            page_id: page_id.to_string(),
            api_key,
        })
    }

    /// Creates a realtime incident (`POST /pages/{page_id}/incidents`).
    pub async fn create_incident(&self, new: &NewIncident) -> Result<Incident, StatuspageError> {
        let path = format!("/pages/{}/incidents", self.page_id);
        self.call(Method::POST, &path, "incidents.create", Some(&new.wire()))
            .await
    }

    /// Posts an update to an incident: new status, text, component changes
    /// (`PATCH /pages/{page_id}/incidents/{incident_id}`).
    pub async fn update_incident(
        &self,
        incident_id: &str,
        update: &IncidentUpdate,
    ) -> Result<Incident, StatuspageError> {
        check_id("incident id", incident_id)?;
        let path = format!("/pages/{}/incidents/{incident_id}", self.page_id);
        self.call(
            Method::PATCH,
            &path,
            "incidents.update",
            Some(&update.wire()),
        )
        .await
    }

    /// Resolves an incident with a last update; `components` usually go back to operational.
    pub async fn resolve_incident(
        &self,
        incident_id: &str,
        body: &str,
        components: Vec<(String, ComponentStatus)>,
        deliver_notifications: bool,
    ) -> Result<Incident, StatuspageError> {
        let update = IncidentUpdate {
            status: IncidentStatus::Resolved,
            body: body.to_string(),
            components,
            impact: None,
            deliver_notifications,
            keys: None,
        };
        self.update_incident(incident_id, &update).await
    }

    /// One incident (`GET /pages/{page_id}/incidents/{incident_id}`).
    pub async fn get_incident(&self, incident_id: &str) -> Result<Incident, StatuspageError> {
        check_id("incident id", incident_id)?;
        let path = format!("/pages/{}/incidents/{incident_id}", self.page_id);
        self.call::<(), _>(Method::GET, &path, "incidents.get", None)
            .await
    }

    /// Sets one component's status (`PATCH /pages/{page_id}/components/{component_id}`).
    pub async fn set_component_status(
        &self,
        component_id: &str,
        status: ComponentStatus,
    ) -> Result<Component, StatuspageError> {
        check_id("component id", component_id)?;
        let path = format!("/pages/{}/components/{component_id}", self.page_id);
        let body = ComponentEnvelope {
            component: WireComponent { status },
        };
        self.call(Method::PATCH, &path, "components.update", Some(&body))
            .await
    }

    /// The unresolved incident created with drbot idempotency key `key`, if any
    /// (`GET /pages/{page_id}/incidents/unresolved`). After an ambiguous failure of
    /// `create_incident`, this tells whether to create it again.
    pub async fn find_unresolved_by_key(
        &self,
        key: &str,
    ) -> Result<Option<Incident>, StatuspageError> {
        let path = format!("/pages/{}/incidents/unresolved", self.page_id);
        let all: Vec<Incident> = self
            .call::<(), _>(Method::GET, &path, "incidents.unresolved", None)
            .await?;
        Ok(all.into_iter().find(|i| i.drbot_key() == Some(key)))
    }

    /// One request, one attempt. `route` names the call in logs (paths hold ids, not secrets,
    /// but the route is what matters).
    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        route: &'static str,
        body: Option<&B>,
    ) -> Result<T, StatuspageError> {
        let url = format!("{}{path}", self.base);
        let mut req = self
            .http
            .request(method, &url)
            .header(AUTHORIZATION, format!("OAuth {}", self.api_key.expose()));
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = match req.send().await {
            Ok(resp) => resp,
            Err(e) => {
                let err = transport_error(&e);
                tracing::warn!(route, error = %err, "statuspage call failed");
                return Err(err);
            }
        };
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = match resp.text().await {
            Ok(text) => text,
            Err(e) => {
                // The status line arrived, so the request reached Statuspage.
                let err = StatuspageError::Retry {
                    after: None,
                    reason: format!(
                        "reading the answer to HTTP {}: {}",
                        status.as_u16(),
                        kind(&e)
                    ),
                    ambiguous: true,
                };
                tracing::warn!(route, error = %err, "statuspage call failed");
                return Err(err);
            }
        };
        tracing::debug!(route, status = status.as_u16(), "statuspage call");
        if status.is_success() {
            // Statuspage took the request; only its answer is unusable. Retrying is safe
            // because it is ambiguous: a create is looked for by key first, and an update
            // by its key in the incident's metadata.
            return serde_json::from_str(&text).map_err(|e| {
                let err = StatuspageError::Retry {
                    after: None,
                    reason: format!("unreadable answer to HTTP {}: {e}", status.as_u16()),
                    ambiguous: true,
                };
                tracing::warn!(route, error = %err, "statuspage call failed");
                err
            });
        }
        let err = classify(status, &headers, &text).without(self.api_key.expose());
        tracing::warn!(route, error = %err, "statuspage call refused");
        Err(err)
    }
}

/// Ids go into the URL path: only the characters Statuspage ids use.
fn check_id(what: &str, id: &str) -> Result<(), StatuspageError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(StatuspageError::Invalid(format!(
            "{what} {id:?} must be 1-64 letters, digits, '-' or '_'"
        )))
    }
}

/// A non-2xx answer: retry on 408, 429 and 5xx, give up on the rest.
fn classify(status: StatusCode, headers: &HeaderMap, body: &str) -> StatuspageError {
    let code = status.as_u16();
    if code == 429 || code == 408 || status.is_server_error() {
        StatuspageError::Retry {
            after: retry_after(headers),
            reason: format!("HTTP {code}"),
            ambiguous: code != 429,
        }
    } else {
        StatuspageError::Permanent {
            status: code,
            message: server_message(body),
        }
    }
}

/// `Retry-After` as seconds or as an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = at.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

/// Statuspage answers `{"error": "..."}` or `{"error": ["...", ...]}`; anything else is shown
/// as text, cut short.
fn server_message(body: &str) -> String {
    let from_json = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| match v.get("error")? {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Array(items) => Some(
                items
                    .iter()
                    .map(|i| {
                        i.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| i.to_string())
                    })
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            other => Some(other.to_string()),
        });
    let text = from_json.unwrap_or_else(|| body.trim().to_string());
    let text = if text.is_empty() {
        "(no message)".to_string()
    } else {
        text
    };
    if text.chars().count() > MAX_MESSAGE_CHARS {
        let mut cut: String = text.chars().take(MAX_MESSAGE_CHARS).collect();
        cut.push('…');
        cut
    } else {
        text
    }
}

/// A request that got no answer. Refused connections were never applied; anything else may
/// have been.
fn transport_error(e: &reqwest::Error) -> StatuspageError {
    StatuspageError::Retry {
        after: None,
        reason: kind(e).to_string(),
        ambiguous: !e.is_connect(),
    }
}

/// Names the failure without the URL or any header.
fn kind(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection refused or unreachable"
    } else if e.is_body() || e.is_decode() {
        "connection lost while reading"
    } else if e.is_request() {
        "connection lost while sending"
    } else {
        "transport error"
    }
}
