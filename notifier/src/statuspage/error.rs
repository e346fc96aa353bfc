//! What a Statuspage call can fail with, split by what the delivery outbox should do: retry
//! (later, possibly after `after`) or give up and record it. No error ever holds the API key.

use std::time::Duration;

/// A failed Statuspage call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatuspageError {
    /// Worth trying again: 429, 5xx, 408, a refused connection or a timeout.
    #[error("statuspage: temporary failure ({reason}){}", after_text(*after))]
    Retry {
        /// How long Statuspage asked to wait (`Retry-After`), if it said.
        after: Option<Duration>,
        /// What happened, e.g. `HTTP 429` or `connection refused`.
        reason: String,
        /// `true` when the request may have been applied anyway (timeout, 5xx, connection
        /// lost mid-request): before re-creating an incident, look for it
        /// (`find_unresolved_by_key`). `false` when it surely was not (refused, 429).
        ambiguous: bool,
    },
    /// Retrying will not help: Statuspage refused the request (4xx other than 408/429). (A
    /// 2xx with a body drbot cannot read is an ambiguous `Retry`: the request was taken.)
    #[error("statuspage: HTTP {status}: {message}")]
    Permanent {
        /// The HTTP status.
        status: u16,
        /// Statuspage's explanation (its `error` field), cut to a few hundred characters.
        message: String,
    },
    /// The request was not sent: a bad base URL, page id or object id.
    #[error("statuspage: {0}")]
    Invalid(String),
}

impl StatuspageError {
    /// Whether the outbox should try again.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StatuspageError::Retry { .. })
    }

    /// The error with every occurrence of `secret` (the API key, should an answer quote it)
    /// replaced by `[redacted]`.
    pub fn without(self, secret: &str) -> StatuspageError {
        if secret.is_empty() {
            return self;
        }
        let scrub = |s: String| s.replace(secret, "[redacted]");
        match self {
            StatuspageError::Retry {
                after,
                reason,
                ambiguous,
            } => StatuspageError::Retry {
                after,
                reason: scrub(reason),
                ambiguous,
            },
            StatuspageError::Permanent { status, message } => StatuspageError::Permanent {
                status,
                message: scrub(message),
            },
            StatuspageError::Invalid(m) => StatuspageError::Invalid(scrub(m)),
        }
    }

    /// How long Statuspage asked to wait, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            StatuspageError::Retry { after, .. } => *after,
            _ => None,
        }
    }
}

fn after_text(after: Option<Duration>) -> String {
    match after {
        Some(d) => format!(", retry after {}s", d.as_secs()),
        None => String::new(),
    }
}
