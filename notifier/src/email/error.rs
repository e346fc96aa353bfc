//! Errors of the email module: a refused configuration, and the outcome of a failed send
//! split into temporary (retry later), permanent (record, never retry) and invalid input.

use super::url::UrlError;

/// Why a `Mailer` could not be built. Never contains the SMTP password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The SMTP URL was refused.
    #[error(transparent)]
    Url(#[from] UrlError),
    /// The `from` address does not parse.
    #[error("email `from` address `{from}` is invalid: {reason}")]
    From {
        /// The address as configured.
        from: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A numeric setting out of range.
    #[error("email setting `{0}` is out of range: {1}")]
    Range(&'static str, String),
    /// `Mailer::new` was called outside a Tokio runtime (the pool needs one).
    #[error("the mailer must be created inside a Tokio runtime (its connection pool runs on it)")]
    NoRuntime,
    /// TLS could not be set up for the server name.
    #[error("TLS setup for SMTP host `{host}` failed: {reason}")]
    Tls {
        /// The SMTP host.
        host: String,
        /// What failed.
        reason: String,
    },
}

/// Why one message was not delivered. Messages never contain the SMTP password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// A 4xx reply, or no usable connection (refused, reset, timed out, TLS failure): the same
    /// message may go through later, so the caller retries with backoff.
    #[error("temporary SMTP failure{}: {message}", code_text(*code))]
    Temporary {
        /// The SMTP reply code, when the server answered.
        code: Option<u16>,
        /// What happened, with the server's text.
        message: String,
    },
    /// A 5xx reply (e.g. `550` unknown user) or a message the server cannot take: record it,
    /// do not retry.
    #[error("permanent SMTP failure{}: {message}", code_text(*code))]
    Permanent {
        /// The SMTP reply code, when the server answered.
        code: Option<u16>,
        /// What happened, with the server's text.
        message: String,
    },
    /// The email itself is malformed (bad recipient address, Message-ID, unsubscribe URL):
    /// it was not sent and retrying will not help.
    #[error("email not sent: {0}")]
    Invalid(String),
}

impl SendError {
    /// True for failures that a later attempt may overcome.
    pub fn is_temporary(&self) -> bool {
        matches!(self, SendError::Temporary { .. })
    }

    /// The SMTP reply code, if the server answered.
    pub fn code(&self) -> Option<u16> {
        match self {
            SendError::Temporary { code, .. } | SendError::Permanent { code, .. } => *code,
            SendError::Invalid(_) => None,
        }
    }
}

fn code_text(code: Option<u16>) -> String {
    code.map(|c| format!(" {c}")).unwrap_or_default()
}
