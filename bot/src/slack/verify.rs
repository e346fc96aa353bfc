//! Verifies Slack requests: `X-Slack-Signature` (HMAC-SHA256 of `v0:{timestamp}:{body}` with
//! the signing secret, compared in constant time), timestamps within 5 minutes, no replayed
//! signature, and no second execution of a request Slack retried.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
};

use axum::http::HeaderMap;
use slack_morphism::{
    prelude::SlackSigningSecret, signature_verifier::SlackEventSignatureVerifier,
};

/// Requests older or newer than this are refused.
pub const WINDOW_SECS: i64 = 300;
/// Most remembered signatures and trigger ids (old ones are evicted first).
const CAPACITY: usize = 500_000;

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

/// Key → expiry, plus keys in expiry order for eviction.
type SeenMap = (HashMap<String, i64>, VecDeque<(i64, String)>);

/// Keys seen recently, each forgotten after the replay window.
#[derive(Default)]
pub struct Seen {
    inner: Mutex<SeenMap>,
}

impl Seen {
    /// Records `key`; false if it was already there (and not expired).
    pub fn first_time(&self, key: &str, now: i64) -> bool {
        let Ok(mut g) = self.inner.lock() else {
            return false;
        };
        let (map, order) = &mut *g;
        while order
            .front()
            .is_some_and(|(exp, _)| *exp <= now || map.len() >= CAPACITY)
        {
            if let Some((exp, k)) = order.pop_front()
                && map.get(&k) == Some(&exp)
            {
                map.remove(&k);
            }
        }
        if map.contains_key(key) {
            return false;
        }
        let exp = now + 2 * WINDOW_SECS;
        map.insert(key.to_string(), exp);
        order.push_back((exp, key.to_string()));
        true
    }
}

/// Checks a request's headers and raw body at time `now` (Unix seconds).
pub fn check(
    verifier: &SlackEventSignatureVerifier,
    seen: &Seen,
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<(), Rejection> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(sig), Some(ts)) = (
        header("x-slack-signature"),
        header("x-slack-request-timestamp"),
    ) else {
        return Err(Rejection::MissingHeaders);
    };
    let ts_num: i64 = ts.trim().parse().map_err(|_| Rejection::MissingHeaders)?;
    if (now - ts_num).abs() > WINDOW_SECS {
        return Err(Rejection::Stale);
    }
    let body = std::str::from_utf8(body).map_err(|_| Rejection::BadSignature)?;
    verifier
        .verify(sig, body, ts)
        .map_err(|_| Rejection::BadSignature)?;
    if !seen.first_time(sig, now) {
        return Err(Rejection::Replay);
    }
    Ok(())
}

/// A verifier for the configured signing secret.
pub fn verifier(secret: &str) -> SlackEventSignatureVerifier {
    SlackEventSignatureVerifier::new(&SlackSigningSecret::new(secret.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_forgets_after_the_window() {
        let s = Seen::default();
        assert!(s.first_time("a", 1000));
        assert!(!s.first_time("a", 1001));
        assert!(s.first_time("b", 1001));
        assert!(s.first_time("a", 1000 + 2 * WINDOW_SECS + 1));
    }
}
