//! Ed25519 verification of Discord interactions in opportunistic batches: requests that
//! arrive while a verification is running are checked together in one multi-scalar
//! multiplication, several times cheaper per signature than one at a time.
//!
//! All signatures come from one key (the application's), so the batch equation has one
//! term for the base point, one for the key, and one per signature's `R`:
//! `[8]([Σ zᵢsᵢ]B − [Σ zᵢkᵢ]A − Σ [zᵢ]Rᵢ) = 0` with fresh random 128-bit `zᵢ`. A batch that
//! fails is re-checked one signature at a time with `verify_strict`'s equation
//! (`R = [s]B − [k]A`, compared encoded), so a bad signature only ever fails itself. The batch equation is the cofactored one: it accepts a signature that
//! strict verification refuses only when the signer deliberately added a small-order
//! component, which needs Discord's private key, so it admits no forgery. `R` of small order
//! and non-canonical `s` are refused before batching, as `verify_strict` refuses them.

use curve25519_dalek::{
    constants::ED25519_BASEPOINT_POINT,
    edwards::{CompressedEdwardsY, EdwardsPoint},
    scalar::Scalar,
    traits::{IsIdentity, VartimeMultiscalarMul},
};
use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha512};
use tokio::sync::{mpsc, oneshot};

/// At most this many signatures are checked in one batch.
pub const MAX_BATCH: usize = 64;

/// The public key with its point, decompressed once.
#[derive(Clone)]
pub struct Key {
    key: VerifyingKey,
    point: EdwardsPoint,
}

impl Key {
    /// `None` for a key `verify_strict` would refuse everything with (small order).
    pub fn new(key: VerifyingKey) -> Option<Key> {
        let point = CompressedEdwardsY(key.to_bytes()).decompress()?;
        (!point.is_small_order()).then_some(Key { key, point })
    }
}

/// A signature's parts, checked for form and hashed with its message: what the batch
/// equation needs, computed by each request's own task before it queues.
pub struct Prepared {
    s: Scalar,
    k: Scalar,
    r: EdwardsPoint,
    r_bytes: [u8; 32],
}

/// Whether each prepared signature is valid (`None`: refused by [`prepare`]).
fn verify_prepared(key: &Key, items: &[Option<Prepared>]) -> Vec<bool> {
    let candidates: Vec<&Prepared> = items.iter().flatten().collect();
    if candidates.len() >= 2 && batch_holds(key, &candidates) {
        return items.iter().map(Option::is_some).collect();
    }
    items
        .iter()
        .map(|p| p.as_ref().is_some_and(|p| strict(key, p)))
        .collect()
}

/// `verify_strict`'s equation for one signature: `R == [s]B − [k]A`, compared encoded.
fn strict(key: &Key, p: &Prepared) -> bool {
    EdwardsPoint::vartime_double_scalar_mul_basepoint(&p.k, &-key.point, &p.s)
        .compress()
        .0
        == p.r_bytes
}

/// `(s, k, R)` of a signature, or `None` when it cannot be valid: `s` not canonical, `R` not
/// a point or of small order.
pub fn prepare(key: &Key, msg: &[u8], sig: &[u8; 64]) -> Option<Prepared> {
    let r_bytes: [u8; 32] = sig[..32].try_into().ok()?;
    let s_bytes: [u8; 32] = sig[32..].try_into().ok()?;
    let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_bytes))?;
    let r = CompressedEdwardsY(r_bytes).decompress()?;
    if r.is_small_order() {
        return None;
    }
    let mut h = Sha512::new();
    h.update(r_bytes);
    h.update(key.key.as_bytes());
    h.update(msg);
    let k = Scalar::from_bytes_mod_order_wide(&h.finalize().into());
    Some(Prepared { s, k, r, r_bytes })
}

fn batch_holds(key: &Key, sigs: &[&Prepared]) -> bool {
    let mut random = vec![0u8; 16 * sigs.len()];
    if getrandom::fill(&mut random).is_err() {
        return false; // falls back to one at a time
    }
    let (mut b, mut a) = (Scalar::ZERO, Scalar::ZERO);
    let mut scalars = Vec::with_capacity(sigs.len() + 2);
    let mut points = Vec::with_capacity(sigs.len() + 2);
    for (p, z) in sigs.iter().zip(random.chunks_exact(16)) {
        let mut wide = [0u8; 32];
        wide[..16].copy_from_slice(z);
        let z = Scalar::from_bytes_mod_order(wide);
        b += z * p.s;
        a += z * p.k;
        scalars.push(-z);
        points.push(p.r);
    }
    scalars.extend([b, -a]);
    points.extend([ED25519_BASEPOINT_POINT, key.point]);
    EdwardsPoint::vartime_multiscalar_mul(scalars, points)
        .mul_by_cofactor()
        .is_identity()
}

struct Job {
    prepared: Prepared,
    done: oneshot::Sender<bool>,
}

/// A task that checks queued signatures, all that are waiting at once. Form checks and
/// hashing happen in each request's task ([`Verifier::verify`]); only the shared
/// multiplication is serial.
pub struct Verifier {
    key: Key,
    jobs: mpsc::UnboundedSender<Job>,
}

impl Verifier {
    /// Starts the verifying task on the current Tokio runtime.
    pub fn start(key: Key) -> Verifier {
        let (jobs, mut rx) = mpsc::unbounded_channel::<Job>();
        let task_key = key.clone();
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(MAX_BATCH);
            while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
                // Under load, the requests being read right now join this batch: let the
                // runtime run them first (when idle, this returns at once).
                tokio::task::yield_now().await;
                while batch.len() < MAX_BATCH {
                    let Ok(job) = rx.try_recv() else { break };
                    batch.push(job);
                }
                let (items, done): (Vec<Option<Prepared>>, Vec<_>) =
                    batch.drain(..).map(|j| (Some(j.prepared), j.done)).unzip();
                let ok = verify_prepared(&task_key, &items);
                for (done, ok) in done.into_iter().zip(ok) {
                    let _ = done.send(ok);
                }
            }
        });
        Verifier { key, jobs }
    }

    /// Whether `sig` is a valid signature of `msg`.
    pub async fn verify(&self, msg: &[u8], sig: &[u8; 64]) -> bool {
        let Some(prepared) = prepare(&self.key, msg, sig) else {
            return false;
        };
        let (done, answer) = oneshot::channel();
        if self.jobs.send(Job { prepared, done }).is_err() {
            return false;
        }
        answer.await.unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signature, Signer, SigningKey};
    use proptest::prelude::*;

    /// Whether each signature is valid, all checked as one batch would be.
    fn verify_all(key: &Key, items: &[(Vec<u8>, [u8; 64])]) -> Vec<bool> {
        let prepared: Vec<Option<Prepared>> =
            items.iter().map(|(m, s)| prepare(key, m, s)).collect();
        verify_prepared(key, &prepared)
    }

    fn signer() -> SigningKey {
        SigningKey::from_bytes(&[7u8; 32])
    }

    /// How a generated request is damaged (0 = intact).
    fn damaged(sk: &SigningKey, i: usize, damage: u8, pos: usize) -> (Vec<u8>, [u8; 64]) {
        let mut msg = format!("1764201600{{\"type\":2,\"id\":\"{i}\"}}").into_bytes();
        let mut sig = sk.sign(&msg).to_bytes();
        match damage {
            1 => {
                let at = pos % msg.len();
                msg[at] ^= 1;
            }
            2 => sig[pos % 64] ^= 1 << (pos % 8),
            3 => sig[32..].copy_from_slice(&[0xff; 32]), // s not canonical
            4 => sig = SigningKey::from_bytes(&[9u8; 32]).sign(&msg).to_bytes(),
            5 => sig[..32].copy_from_slice(&[0; 32]), // R not on the curve / small order
            _ => {}
        }
        (msg, sig)
    }

    proptest! {
        // Curve arithmetic is slow in unoptimised test builds; each case is a whole batch.
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Batched verification answers exactly as strict verification one at a time, for
        /// any mix of valid and damaged signatures.
        #[test]
        fn batch_agrees_with_strict(reqs in prop::collection::vec((0u8..8, 0usize..200), 0..24)) {
            let sk = signer();
            let key = Key::new(sk.verifying_key()).unwrap();
            let owned: Vec<_> = reqs.iter().enumerate()
                .map(|(i, &(d, pos))| damaged(&sk, i, if d > 5 { 0 } else { d }, pos)).collect();
            let expected: Vec<bool> = owned.iter()
                .map(|(m, s)| sk.verifying_key().verify_strict(m, &Signature::from_bytes(s)).is_ok())
                .collect();
            prop_assert_eq!(verify_all(&key, &owned), expected);
        }
    }

    #[test]
    fn an_all_valid_batch_passes_and_one_bad_signature_fails_only_itself() {
        let sk = signer();
        let key = Key::new(sk.verifying_key()).unwrap();
        let mut owned: Vec<_> = (0..40).map(|i| damaged(&sk, i, 0, 0)).collect();
        assert!(verify_all(&key, &owned).iter().all(|&ok| ok));
        owned[17].1[40] ^= 4;
        let ok = verify_all(&key, &owned);
        assert!(!ok[17]);
        assert_eq!(ok.iter().filter(|&&ok| ok).count(), 39);
    }

    #[test]
    fn a_small_order_key_is_refused() {
        use curve25519_dalek::traits::Identity;
        let identity = VerifyingKey::from_bytes(&CompressedEdwardsY::identity().0).unwrap();
        assert!(Key::new(identity).is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_are_answered_each_with_its_own_result() {
        let sk = signer();
        let v = std::sync::Arc::new(Verifier::start(Key::new(sk.verifying_key()).unwrap()));
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let (msg, sig) = damaged(&sk, i, if i % 7 == 3 { 2 } else { 0 }, i);
                let v = v.clone();
                tokio::spawn(async move { (i, v.verify(&msg, &sig).await) })
            })
            .collect();
        for t in tasks {
            let (i, ok) = t.await.unwrap();
            assert_eq!(ok, i % 7 != 3, "request {i}");
        }
    }
}
