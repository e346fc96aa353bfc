//! The replay memory of the chat front-ends: requests seen recently, so that a replayed
//! signed request (Slack or Discord) is refused and a request Slack retried is never run
//! twice. It lives in one process: see ARCHITECTURE.md on running several `serve` processes.

use std::{
    collections::{HashSet, VecDeque},
    sync::Mutex,
};

/// Requests older or newer than this are refused (Slack's and Discord's window).
pub const WINDOW_SECS: i64 = 300;
/// Most remembered requests (old ones are evicted first).
const CAPACITY: usize = 2_000_000;

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
/// signature, remembered for at least twice the replay window. Each request is one 8-byte
/// entry (48-bit keyed hash of the identity, 16-bit keyed hash of the signature) in a chunk: a
/// hash set of fixed capacity ([`CHUNK`]) holding arrivals of one minute. A whole minute is
/// forgotten at once, so there is no per-entry expiry to store. Chunks are allocated full-size
/// and never grow, so memory is about 9 bytes per remembered request with no doubling and no
/// resize copies (a single set would hold twice its entries' size, and three times while it
/// grows).
#[derive(Default)]
pub struct Memory {
    hasher: std::collections::hash_map::RandomState,
    inner: Mutex<Generations>,
}

/// Seconds of arrivals each generation holds.
const GENERATION_SECS: u32 = 60;

/// Entries per chunk: 7/8 of 2^16, the most a set of 2^16 buckets holds without growing.
const CHUNK: usize = 57_344;

/// One remembered request: identity hash in the high 48 bits, signature hash in the low 16.
/// Hashing and equality look at the identity only, so a lookup by identity finds the entry
/// and its signature. 48 bits of identity make a false "already seen" vanishingly rare (about
/// 1 in 280,000 even with a full memory of 2 million); 16 bits of signature only tell a replay
/// (same signature: 401) from a Slack retry (new signature: acknowledged), and mistaking one
/// retry in 65,536 for a replay only answers it 401, which Slack retries again.
#[derive(Clone, Copy)]
struct Entry(u64);

impl Entry {
    fn new(identity: u64, signature: u64) -> Self {
        Entry((identity & !0xffff) | (signature & 0xffff))
    }
    fn signature(self) -> u64 {
        self.0 & 0xffff
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.0 >> 16 == other.0 >> 16
    }
}

impl Eq for Entry {}

impl std::hash::Hash for Entry {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.0 >> 16);
    }
}

/// Identity hashes are already uniformly random (keyed SipHash): the set uses them as they are.
#[derive(Default, Clone, Copy)]
struct Identity;

impl std::hash::BuildHasher for Identity {
    type Hasher = IdentityHasher;
    fn build_hasher(&self) -> IdentityHasher {
        IdentityHasher(0)
    }
}

struct IdentityHasher(u64);

impl std::hash::Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        // Spread the 48 bits over all 64 (hashbrown takes control bits from the top).
        self.0.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Chunks, oldest first: (first second of their generation, entries), and the entry count.
#[derive(Default)]
struct Generations {
    gens: VecDeque<(u32, HashSet<Entry, Identity>)>,
    len: usize,
}

impl Memory {
    /// Records request `identity` signed with `signature` at `now` (Unix seconds).
    pub fn record(&self, identity: &str, signature: &str, now: i64) -> Seen {
        use std::hash::BuildHasher;
        let entry = Entry::new(
            self.hasher.hash_one(identity),
            self.hasher.hash_one(signature),
        );
        let now = now.max(0) as u32;
        let Ok(mut g) = self.inner.lock() else {
            return Seen::Replay;
        };
        let g = &mut *g;
        // Forget generations whose newest arrival is older than twice the window, and the
        // oldest ones while the memory is full.
        let keep = 2 * WINDOW_SECS as u32;
        while let Some((start, set)) = g.gens.front() {
            let expired = start.saturating_add(GENERATION_SECS + keep) <= now;
            if !(expired || g.len >= CAPACITY) {
                break;
            }
            g.len -= set.len();
            g.gens.pop_front();
        }
        if let Some(seen) = g.gens.iter().rev().find_map(|(_, set)| set.get(&entry)) {
            return if seen.signature() == entry.signature() {
                Seen::Replay
            } else {
                Seen::Retry
            };
        }
        let current = now - now % GENERATION_SECS;
        if g.gens
            .back()
            .is_none_or(|(start, set)| *start < current || set.len() >= CHUNK)
        {
            let set = HashSet::with_capacity_and_hasher(CHUNK, Identity);
            g.gens.push_back((current, set));
        }
        if let Some((_, set)) = g.gens.back_mut() {
            set.insert(entry);
            g.len += 1;
        }
        Seen::New
    }
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
        // Still remembered at twice the window, forgotten a generation later.
        assert_eq!(
            m.record("t1", "v0=aa", 1000 + 2 * WINDOW_SECS),
            Seen::Replay
        );
        assert_eq!(
            m.record(
                "t1",
                "v0=aa",
                1000 + 2 * WINDOW_SECS + GENERATION_SECS as i64
            ),
            Seen::New
        );
    }

    proptest::proptest! {
        /// Against a plain map of full strings: a request is told apart exactly (new, replay,
        /// retry) for twice the window after it arrived, and forgotten a generation later,
        /// whatever the order and timing.
        #[test]
        fn memory_matches_a_reference(
            ops in proptest::collection::vec((0u8..40, 0u8..3, 0i64..40), 1..400)
        ) {
            let m = Memory::default();
            let mut reference: std::collections::HashMap<String, (String, i64)> = Default::default();
            let mut now = 1_000_000;
            let keep = 2 * WINDOW_SECS;
            for (id, sig, dt) in ops {
                now += dt;
                let (id, sig) = (format!("trigger-{id}"), format!("v0={sig}"));
                let got = m.record(&id, &sig, now);
                match reference.get(&id) {
                    Some((s, at)) if now - at < keep => {
                        let expected = if *s == sig { Seen::Replay } else { Seen::Retry };
                        proptest::prop_assert_eq!(got, expected);
                    }
                    Some((_, at)) if now - at < keep + GENERATION_SECS as i64 => {
                        // Either still remembered or just forgotten.
                        if got == Seen::New {
                            reference.insert(id, (sig, now));
                        }
                    }
                    _ => {
                        proptest::prop_assert_eq!(got, Seen::New);
                        reference.insert(id, (sig, now));
                    }
                }
            }
        }
    }

    #[test]
    fn memory_is_capped() {
        let m = Memory::default();
        for i in 0..(CAPACITY + 10) {
            // Spread over generations so the oldest can be dropped.
            let now = 1_000 + (i / 100_000) as i64 * GENERATION_SECS as i64;
            m.record(&format!("t{i}"), "v0=aa", now);
        }
        let g = m.inner.lock().unwrap();
        assert!(g.len <= CAPACITY, "{} entries", g.len);
        assert_eq!(g.len, g.gens.iter().map(|(_, s)| s.len()).sum::<usize>());
        // Chunks were allocated once at full size and never grew.
        let full = HashSet::<Entry, Identity>::with_capacity_and_hasher(CHUNK, Identity).capacity();
        assert!(
            g.gens
                .iter()
                .all(|(_, s)| s.len() <= CHUNK && s.capacity() == full)
        );
    }

    #[test]
    fn a_busy_minute_spans_chunks_and_all_of_them_are_searched() {
        let m = Memory::default();
        let n = 2 * CHUNK + 5;
        for i in 0..n {
            assert_eq!(m.record(&format!("t{i}"), "v0=aa", 5_000), Seen::New);
        }
        assert_eq!(m.inner.lock().unwrap().gens.len(), 3);
        for i in [0, CHUNK - 1, CHUNK, 2 * CHUNK, n - 1] {
            assert_eq!(m.record(&format!("t{i}"), "v0=aa", 5_001), Seen::Replay);
            assert_eq!(m.record(&format!("t{i}"), "v0=bb", 5_002), Seen::Retry);
        }
    }
}
