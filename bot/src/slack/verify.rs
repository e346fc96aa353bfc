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
const CAPACITY: usize = 2_000_000;

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

/// What the replay memory says about a verified request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// First time: handle it.
    New,
    /// Same request, same signature: a replay (refuse with 401).
    Replay,
    /// Same request, new signature: Slack retried it (acknowledge, do nothing).
    Retry,
}

/// Requests seen recently, keyed by their identity (trigger id, action time), each with its
/// signature, forgotten after twice the replay window. Keys and signatures are kept as 64-bit
/// keyed hashes, one entry per request, so memory stays small at high request rates.
pub struct Memory {
    hasher: std::collections::hash_map::RandomState,
    inner: Mutex<MemoryMap>,
}

/// Identity hash → (32-bit signature hash, expiry), plus identities in expiry order for
/// eviction. 32 bits of the signature suffice: a replay carries the very same signature, and
/// a retry mistaken for a replay (1 in 4 billion) is only answered 401 instead of 200.
type MemoryMap = (HashMap<u64, (u32, u32)>, VecDeque<(u32, u64)>);

impl Default for Memory {
    fn default() -> Self {
        Self {
            hasher: Default::default(),
            inner: Mutex::new(Default::default()),
        }
    }
}

impl Memory {
    /// Records request `identity` signed with `signature` at `now` (Unix seconds).
    pub fn record(&self, identity: &str, signature: &str, now: i64) -> Seen {
        use std::hash::BuildHasher;
        let id = self.hasher.hash_one(identity);
        let sig = self.hasher.hash_one(signature) as u32;
        let now = now.max(0) as u32;
        let Ok(mut g) = self.inner.lock() else {
            return Seen::Replay;
        };
        let (map, order) = &mut *g;
        while order
            .front()
            .is_some_and(|(exp, _)| *exp <= now || map.len() >= CAPACITY)
        {
            if let Some((exp, k)) = order.pop_front()
                && map.get(&k).is_some_and(|(_, e)| *e == exp)
            {
                map.remove(&k);
            }
        }
        match map.get(&id) {
            Some((s, _)) if *s == sig => Seen::Replay,
            Some(_) => Seen::Retry,
            None => {
                let exp = now + 2 * WINDOW_SECS as u32;
                map.insert(id, (sig, exp));
                order.push_back((exp, id));
                Seen::New
            }
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
    if (now - ts_num).abs() > WINDOW_SECS {
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

    #[test]
    fn memory_tells_replays_from_retries_and_forgets() {
        let m = Memory::default();
        assert_eq!(m.record("t1", "v0=aa", 1000), Seen::New);
        assert_eq!(m.record("t1", "v0=aa", 1001), Seen::Replay);
        assert_eq!(m.record("t1", "v0=bb", 1002), Seen::Retry);
        assert_eq!(m.record("t2", "v0=aa", 1002), Seen::New);
        assert_eq!(
            m.record("t1", "v0=aa", 1000 + 2 * WINDOW_SECS + 1),
            Seen::New
        );
    }
}
