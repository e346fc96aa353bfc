//! Verifies Discord interactions: Ed25519 signature (`X-Signature-Ed25519`, hex) over
//! `X-Signature-Timestamp` + raw body with the application's public key, and a timestamp
//! within 5 minutes (Discord probes endpoints with bad signatures; they must get 401), and no
//! replayed request.

use axum::http::HeaderMap;
use ed25519_dalek::VerifyingKey;

pub use crate::replay::WINDOW_SECS;

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Headers missing or not hex/number.
    MissingHeaders,
    /// Timestamp outside the window.
    Stale,
    /// Signature does not verify.
    BadSignature,
    /// This exact signed request was already accepted.
    Replay,
}

impl Rejection {
    /// For the log line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MissingHeaders => "missing or malformed signature headers",
            Self::Stale => "timestamp outside the 5 minute window",
            Self::BadSignature => "signature mismatch",
            Self::Replay => "replayed request",
        }
    }
}

/// Parses the configured hex public key.
pub fn public_key(hex_key: &str) -> Option<VerifyingKey> {
    let bytes: [u8; 32] = hex::decode(hex_key).ok()?.try_into().ok()?;
    VerifyingKey::from_bytes(&bytes).ok()
}

/// A request's signed bytes and signature, read from its headers.
pub struct Signed {
    /// `X-Signature-Timestamp` followed by the raw body: what Discord signed.
    pub msg: Vec<u8>,
    /// `X-Signature-Ed25519`, decoded.
    pub sig: [u8; 64],
    /// The timestamp, Unix seconds.
    pub ts: i64,
}

/// Reads the signature headers (the signature itself is checked by [`super::batch`]).
pub fn signed(headers: &HeaderMap, body: &[u8]) -> Result<Signed, Rejection> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(sig), Some(ts)) = (
        header("x-signature-ed25519"),
        header("x-signature-timestamp"),
    ) else {
        return Err(Rejection::MissingHeaders);
    };
    let ts_num: i64 = ts.trim().parse().map_err(|_| Rejection::MissingHeaders)?;
    let sig: [u8; 64] = hex::decode(sig)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(Rejection::MissingHeaders)?;
    let mut msg = Vec::with_capacity(ts.len() + body.len());
    msg.extend_from_slice(ts.as_bytes());
    msg.extend_from_slice(body);
    Ok(Signed {
        msg,
        sig,
        ts: ts_num,
    })
}

/// Refuses a (validly signed) timestamp more than [`WINDOW_SECS`] from `now`.
pub fn fresh(ts: i64, now: i64) -> Result<(), Rejection> {
    if now.saturating_sub(ts).saturating_abs() > WINDOW_SECS {
        return Err(Rejection::Stale);
    }
    Ok(())
}
