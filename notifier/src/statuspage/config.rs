//! The `[statuspage]` configuration section and how it becomes a client.

use std::time::Duration;

use recovery::secret::Secret;
use serde::Deserialize;

use super::{StatuspageClient, StatuspageError};

/// Statuspage's public API.
pub const DEFAULT_BASE_URL: &str = "https://api.statuspage.io/v1";

/// Atlassian Statuspage settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatuspageConfig {
    /// The API root; default `https://api.statuspage.io/v1`.
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// The page id (from the page's API settings).
    pub page_id: String,
    /// The API key, sent as `Authorization: OAuth <key>`.
    pub api_key: Secret,
    /// How long one call may take, e.g. `10s`; default 10 seconds.
    #[serde(default = "default_timeout")]
    pub timeout: String,
}

fn default_base_url() -> String {
    DEFAULT_BASE_URL.to_string()
}

fn default_timeout() -> String {
    "10s".to_string()
}

impl StatuspageConfig {
    /// Checks the section and builds the client.
    pub fn client(&self) -> Result<StatuspageClient, StatuspageError> {
        let timeout = humantime::parse_duration(&self.timeout)
            .map_err(|e| StatuspageError::Invalid(format!("timeout {:?}: {e}", self.timeout)))?;
        if timeout.is_zero() || timeout > Duration::from_secs(300) {
            return Err(StatuspageError::Invalid(format!(
                "timeout {:?} must be between 1ms and 5m",
                self.timeout
            )));
        }
        StatuspageClient::new(&self.base_url, &self.page_id, self.api_key.clone(), timeout)
    }
}
