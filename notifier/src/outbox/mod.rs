//! The durable delivery outbox: every outbound delivery (an email to one recipient, a
//! Statuspage call, a chat broadcast) is a row written in the same transaction as the event
//! that caused it, and [`worker::Worker`]s deliver the rows. The store behind it is the bot's
//! ([`OutboxStore`]); the delivery per channel is a [`Deliverer`].
//!
//! **Architecture Invariant:** a row is claimed under a lease before it is delivered and
//! finished only by the lease holder, so a crash at any point leaves it pending or claimed by a
//! dead owner; it is then re-claimed after the lease and delivered again with the same key (an
//! email keeps its `Message-ID`). Rows sharing an `ordering_key` are delivered one at a time,
//! oldest first: a later Statuspage update never overtakes an earlier one that is retrying.

pub mod worker;

use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;

/// A delivery to make, as claimed by a worker.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// Row id.
    pub id: i64,
    /// Idempotency key: unique per delivery (e.g. `email:<blast>:<subscriber>`).
    pub key: String,
    /// Which [`Deliverer`] handles it (`email`, `statuspage`, `slack`, `discord`).
    pub channel: String,
    /// What to deliver, in the deliverer's own JSON shape.
    pub payload: serde_json::Value,
    /// Deliveries with the same ordering key go out one at a time, in id order.
    pub ordering_key: Option<String>,
    /// 1 on the first claim; more after retries or a crash.
    pub attempt: u32,
}

/// A new delivery for [`OutboxStore::enqueue`]-style writers.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDelivery {
    /// Idempotency key; a second enqueue with the same key is ignored.
    pub key: String,
    /// Deliverer name.
    pub channel: String,
    /// Payload.
    pub payload: serde_json::Value,
    /// Optional ordering group.
    pub ordering_key: Option<String>,
}

/// How one delivery attempt went.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Delivered; `receipt` is the peer's id for it (message id, incident id).
    Delivered {
        /// Peer's id, if any.
        receipt: Option<String>,
    },
    /// A temporary failure (4xx SMTP reply, 429, 5xx, connection refused): try again later.
    Retry {
        /// What went wrong (no secrets).
        error: String,
        /// The peer's own wait (`Retry-After`), if it gave one.
        after: Option<Duration>,
    },
    /// A permanent failure (5xx SMTP reply, 4xx HTTP): recorded, not retried.
    Failed {
        /// What went wrong (no secrets).
        error: String,
    },
}

/// What a worker decided for a claimed row.
#[derive(Debug, Clone, PartialEq)]
pub enum Finish {
    /// Delivered.
    Delivered {
        /// Peer's id.
        receipt: Option<String>,
    },
    /// Back to pending, not before `at_ms`.
    RetryAt {
        /// Unix milliseconds.
        at_ms: i64,
        /// Last error.
        error: String,
    },
    /// Gave up.
    Failed {
        /// Last error.
        error: String,
    },
}

/// Persistence of the outbox (implemented by the bot's store).
#[async_trait]
pub trait OutboxStore: Send + Sync {
    /// Claims up to `limit` due rows of `channels` for `owner` until `now + lease` (pending
    /// rows whose time has come, and claimed rows whose lease ran out), in id order,
    /// honouring ordering keys (across all channels). Concurrent claimers never get the same
    /// row.
    async fn claim(
        &self,
        owner: &str,
        lease: Duration,
        limit: usize,
        channels: &[&str],
    ) -> anyhow::Result<Vec<Delivery>>;

    /// Extends to `now + lease` the lease of every row of `channels` that `owner` holds: a
    /// round that takes longer than a lease (a slow mail relay) keeps its rows, and no other
    /// process re-claims and delivers them meanwhile.
    async fn extend(&self, owner: &str, lease: Duration, channels: &[&str]) -> anyhow::Result<()>;

    /// Records how claimed rows ended; a row no longer leased by `owner` is left alone.
    async fn finish(&self, owner: &str, results: &[(i64, Finish)]) -> anyhow::Result<()>;
}

/// Delivers one channel's payloads.
#[async_trait]
pub trait Deliverer: Send + Sync {
    /// The `channel` this deliverer handles.
    fn channel(&self) -> &'static str;
    /// One attempt. Must not retry internally for long: the outbox schedules retries.
    async fn deliver(&self, delivery: &Delivery) -> Outcome;

    /// One attempt of each of `rows` through one bulk stream yielding `(row id, outcome)` as
    /// each is known, one per row; or the rows back (`Err`), to be delivered one by one with
    /// `deliver` (the default). The worker records outcomes as they come, so a crash leaves
    /// at most the rows in the stream's flight delivered but not recorded.
    fn deliver_many(
        &self,
        rows: Vec<Delivery>,
    ) -> Result<BoxStream<'static, (i64, Outcome)>, Vec<Delivery>> {
        Err(rows)
    }
}

/// When to try again after attempt `attempt` failed: the peer's wait if given, else
/// exponential from 1 s, capped at 10 minutes.
pub fn backoff(attempt: u32, after: Option<Duration>) -> Duration {
    after.unwrap_or_else(|| {
        Duration::from_secs(1u64 << attempt.saturating_sub(1).min(10)).min(Duration::from_secs(600))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_honours_the_peer() {
        assert_eq!(backoff(1, None), Duration::from_secs(1));
        assert_eq!(backoff(4, None), Duration::from_secs(8));
        assert_eq!(backoff(40, None), Duration::from_secs(600));
        assert_eq!(
            backoff(3, Some(Duration::from_secs(30))),
            Duration::from_secs(30)
        );
    }
}
