//! Email delivery settings: the SMTP server, the sender, the connection pool, the rate limit
//! and the retry policy of bulk sends.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::url::SmtpUrl;

/// How drbot reaches its SMTP server and how fast it sends. `Debug` never shows the password.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// SMTP server: `smtp://user:pass@host:port` (plain), `…?tls=required` or
    /// `…?tls=opportunistic` (STARTTLS), `smtps://…` (implicit TLS). User and password are
    /// percent-encoded; the URL's path, if any, is the EHLO name.
    pub url: SmtpUrl,
    /// Sender, e.g. `"Example Status <status@example.com>"`. Its domain also completes
    /// Message-IDs that have none.
    pub from: String,
    /// Most SMTP connections open at once (the pool size and the bulk send's concurrency).
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// Most messages started per second in a bulk send (retries included); none = unlimited.
    #[serde(default)]
    pub rate_limit: Option<f64>,
    /// Attempts per message in a bulk send before a temporary failure is reported (≥ 1).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Wait before the first retry of a temporary failure; doubled at each further retry.
    #[serde(default = "default_retry_backoff", deserialize_with = "duration")]
    pub retry_backoff: Duration,
    /// Longest wait between two retries.
    #[serde(default = "default_max_backoff", deserialize_with = "duration")]
    pub max_backoff: Duration,
    /// Longest wait for any one SMTP reply or connection.
    #[serde(default = "default_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
}

impl EmailConfig {
    /// A config with every optional setting at its default.
    pub fn new(url: SmtpUrl, from: impl Into<String>) -> Self {
        Self {
            url,
            from: from.into(),
            max_connections: default_max_connections(),
            rate_limit: None,
            max_attempts: default_max_attempts(),
            retry_backoff: default_retry_backoff(),
            max_backoff: default_max_backoff(),
            timeout: default_timeout(),
        }
    }
}

fn default_max_connections() -> u32 {
    8
}
fn default_max_attempts() -> u32 {
    5
}
fn default_retry_backoff() -> Duration {
    Duration::from_secs(1)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(60)
}
fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

/// Reads a human duration such as `"500ms"` or `"2m"`.
fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text)
        .map_err(|e| serde::de::Error::custom(format!("`{text}` is not a duration: {e}")))
}
