//! Verifies Slack requests: `X-Slack-Signature` (HMAC-SHA256 of `v0:{timestamp}:{body}` with
//! the signing secret, compared in constant time), timestamps within 5 minutes, no replayed
//! signature, and no second execution of a request Slack retried.

use axum::http::HeaderMap;
use slack_morphism::{
    prelude::SlackSigningSecret, signature_verifier::SlackEventSignatureVerifier,
};

pub use crate::replay::{Memory, Seen, WINDOW_SECS};

/// Why a request was refused (logged; never with secrets or bodies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// A signature or timestamp header is missing or unreadable.
    MissingHeaders,
    /// The timestamp is more than 5 minutes from now.
    Stale,
    /// The signature does not match.
    BadSignature,
    /// This exact signature was already accepted.
    Replay,
}

impl Rejection {
    /// For the log line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MissingHeaders => "missing or malformed signature headers",
            Self::Stale => "timestamp outside the 5 minute window",
            Self::BadSignature => "signature mismatch",
            Self::Replay => "replayed signature",
        }
    }
}

/// Checks a request's signature headers and raw body at time `now` (Unix seconds); returns
/// the signature for the replay memory.
pub fn check<'h>(
    verifier: &SlackEventSignatureVerifier,
    headers: &'h HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<&'h str, Rejection> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(sig), Some(ts)) = (
        header("x-slack-signature"),
        header("x-slack-request-timestamp"),
    ) else {
        return Err(Rejection::MissingHeaders);
    };
    let ts_num: i64 = ts.trim().parse().map_err(|_| Rejection::MissingHeaders)?;
    if now.saturating_sub(ts_num).saturating_abs() > WINDOW_SECS {
        return Err(Rejection::Stale);
    }
    let body = std::str::from_utf8(body).map_err(|_| Rejection::BadSignature)?;
    verifier
        .verify(sig, body, ts)
        .map_err(|_| Rejection::BadSignature)?;
    Ok(sig)
}

/// A verifier for the configured signing secret.
pub fn verifier(secret: &str) -> SlackEventSignatureVerifier {
    SlackEventSignatureVerifier::new(&SlackSigningSecret::new(secret.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(ts: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-slack-signature", "v0=00".parse().unwrap());
        h.insert("x-slack-request-timestamp", ts.parse().unwrap());
        h
    }

    #[test]
    fn extreme_timestamps_are_stale_not_a_panic() {
        let v = verifier("secret");
        for ts in [i64::MIN, i64::MAX] {
            let h = headers(&ts.to_string());
            let got = check(&v, &h, b"x", 1_700_000_000);
            assert_eq!(got, Err(Rejection::Stale), "{ts}");
        }
        let h = headers("1700000000");
        let got = check(&v, &h, b"x", 1_700_000_000);
        assert_eq!(got, Err(Rejection::BadSignature));
    }
}
