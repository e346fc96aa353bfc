//! The outbox's persistence ([`notifier::outbox::OutboxStore`]) on both backends: enqueue in
//! the caller's transaction, claim under a lease (`FOR UPDATE SKIP LOCKED` on PostgreSQL; on
//! SQLite the single writer makes the claim exclusive), finish fenced by the lease owner, and
//! the listing and retry behind `drbot outbox`.
//!
//! Claims and finishes do not take the global write lock of [`Store::write`]: outbox rows are
//! independent of the approval, audit and run invariants, and row locks keep workers
//! concurrent.

use std::time::Duration;

use async_trait::async_trait;
use notifier::outbox::{Delivery, Finish, NewDelivery, OutboxStore};
use serde::Serialize;
use sqlx::{AssertSqlSafe, Row};

use super::{Backend, Store, Tx, now_ms};

/// One row as `drbot outbox` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct OutboxRow {
    /// Row id.
    pub id: i64,
    /// Idempotency key.
    pub key: String,
    /// Channel.
    pub channel: String,
    /// pending, sending, delivered or failed.
    pub state: String,
    /// Attempts so far.
    pub attempts: i64,
    /// Last error.
    pub last_error: Option<String>,
    /// Created, Unix ms.
    pub created_at: i64,
}

/// Adds a delivery in the caller's transaction; a second one with the same key is ignored.
/// Returns whether a row was added.
pub async fn enqueue(tx: &mut Tx, d: &NewDelivery) -> anyhow::Result<bool> {
    let now = now_ms();
    let r = sqlx::query(
        "INSERT INTO outbox (key, channel, payload, ordering_key, next_at, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (key) DO NOTHING",
    )
    .bind(d.key.clone())
    .bind(d.channel.clone())
    .bind(d.payload.to_string())
    .bind(d.ordering_key.clone())
    .bind(now)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Rows per statement of [`enqueue_many`].
pub const ENQUEUE_MANY_CHUNK: usize = 1000;

/// Adds deliveries in the caller's transaction, in order, in one statement per thousand
/// (a mass send adds one per recipient; one statement each cost a round trip to the database
/// each); ones whose key exists are ignored. Returns how many rows were added.
pub async fn enqueue_many(
    tx: &mut Tx,
    backend: Backend,
    items: &[NewDelivery],
) -> anyhow::Result<u64> {
    let sql = match backend {
        Backend::Postgres => {
            "INSERT INTO outbox (key, channel, payload, ordering_key, next_at, created_at) \
             SELECT e.v ->> 'key', e.v ->> 'channel', e.v ->> 'payload', e.v ->> 'ordering_key', \
             $2, $2 FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS e(v, n) \
             ORDER BY e.n ON CONFLICT (key) DO NOTHING"
        }
        Backend::Sqlite => {
            "INSERT INTO outbox (key, channel, payload, ordering_key, next_at, created_at) \
             SELECT json_extract(value, '$.key'), json_extract(value, '$.channel'), \
             json_extract(value, '$.payload'), json_extract(value, '$.ordering_key'), $2, $2 \
             FROM json_each($1) WHERE true ON CONFLICT (key) DO NOTHING"
        }
    };
    let now = now_ms();
    let mut added = 0;
    for chunk in items.chunks(ENQUEUE_MANY_CHUNK) {
        let rows: Vec<serde_json::Value> = chunk
            .iter()
            .map(|d| {
                serde_json::json!({
                    "key": d.key, "channel": d.channel, "payload": d.payload.to_string(),
                    "ordering_key": d.ordering_key,
                })
            })
            .collect();
        added += sqlx::query(sql)
            .bind(serde_json::Value::Array(rows).to_string())
            .bind(now)
            .execute(&mut **tx)
            .await?
            .rows_affected();
    }
    Ok(added)
}

/// `$first, $first+1, …`: `n` numbered placeholders (a lane's channels in `IN (…)`).
pub(crate) fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Rows that are due: pending and time has come, or claimed by an owner whose lease ran out;
/// and first of their ordering group.
const DUE: &str = "((o.state = 'pending' AND o.next_at <= $3) \
       OR (o.state = 'sending' AND o.lease_until < $3)) \
     AND (o.ordering_key IS NULL OR NOT EXISTS ( \
         SELECT 1 FROM outbox e WHERE e.ordering_key = o.ordering_key AND e.id < o.id \
         AND e.state IN ('pending', 'sending')))";

#[async_trait]
impl OutboxStore for Store {
    async fn claim(
        &self,
        owner: &str,
        lease: Duration,
        limit: usize,
        channels: &[&str],
    ) -> anyhow::Result<Vec<Delivery>> {
        if channels.is_empty() {
            return Ok(Vec::new());
        }
        let now = now_ms();
        // The open rows' index by channel (`outbox_open_channel`) gives each channel's rows in
        // id order: the first due ones are found without visiting finished rows, other
        // channels' rows (a mass send's, for the status lane) or sorting all pending ones.
        // SQLite's planner, without statistics, would rather sort, so it is told.
        let (index, lock) = match self.backend() {
            Backend::Postgres => ("", "FOR UPDATE SKIP LOCKED"),
            Backend::Sqlite => ("INDEXED BY outbox_open_channel", ""),
        };
        let sql = format!(
            "UPDATE outbox SET state = 'sending', lease_owner = $1, lease_until = $2, \
             attempts = attempts + 1 \
             WHERE id IN (SELECT o.id FROM outbox o {index} \
             WHERE o.state IN ('pending', 'sending') AND o.channel IN ({}) AND {DUE} \
             ORDER BY o.id LIMIT $4 {lock}) \
             RETURNING id, key, channel, payload, ordering_key, attempts",
            placeholders(5, channels.len())
        );
        let mut tx = self.begin_rows().await?;
        let mut query = sqlx::query(AssertSqlSafe(sql))
            .bind(owner.to_string())
            .bind(now + lease.as_millis() as i64)
            .bind(now)
            .bind(limit as i64);
        for channel in channels {
            query = query.bind(channel.to_string());
        }
        let rows = query.fetch_all(&mut *tx).await?;
        tx.commit().await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let payload: String = r.try_get("payload")?;
            out.push(Delivery {
                id: r.try_get("id")?,
                key: r.try_get("key")?,
                channel: r.try_get("channel")?,
                payload: serde_json::from_str(&payload)?,
                ordering_key: r.try_get("ordering_key")?,
                attempt: r.try_get::<i64, _>("attempts")? as u32,
            });
        }
        out.sort_by_key(|d| d.id);
        Ok(out)
    }

    async fn extend(&self, owner: &str, lease: Duration, channels: &[&str]) -> anyhow::Result<()> {
        if channels.is_empty() {
            return Ok(());
        }
        let index = match self.backend() {
            Backend::Postgres => "",
            Backend::Sqlite => "INDEXED BY outbox_open_channel",
        };
        let sql = format!(
            "UPDATE outbox SET lease_until = $1 WHERE id IN (SELECT o.id FROM outbox o {index} \
             WHERE o.state IN ('pending', 'sending') AND o.channel IN ({}) \
             AND o.state = 'sending' AND o.lease_owner = $2)",
            placeholders(3, channels.len())
        );
        let mut tx = self.begin_rows().await?;
        let mut query = sqlx::query(AssertSqlSafe(sql))
            .bind(now_ms() + lease.as_millis() as i64)
            .bind(owner.to_string());
        for channel in channels {
            query = query.bind(channel.to_string());
        }
        query.execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn finish(&self, owner: &str, results: &[(i64, Finish)]) -> anyhow::Result<()> {
        if results.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        // One statement for the whole group (a round's email rows finish by the thousand; one
        // UPDATE per row cost a round trip to the database each).
        let rows: Vec<serde_json::Value> = results
            .iter()
            .map(|(id, f)| {
                let (state, next_at, error, receipt, finished) = match f {
                    Finish::Delivered { receipt } => {
                        ("delivered", now, None, receipt.clone(), Some(now))
                    }
                    Finish::RetryAt { at_ms, error } => {
                        ("pending", *at_ms, Some(error.clone()), None, None)
                    }
                    Finish::Failed { error } => {
                        ("failed", now, Some(error.clone()), None, Some(now))
                    }
                };
                serde_json::json!({
                    "id": id, "state": state, "next_at": next_at, "error": error,
                    "receipt": receipt, "finished": finished,
                })
            })
            .collect();
        // SQLite: the `+` keeps the planner from reaching the rows by `state` (then scanning
        // the JSON once per row): each JSON row finds its outbox row by id.
        let (source, fence) = match self.backend() {
            Backend::Postgres => (
                "jsonb_to_recordset($1::jsonb) AS j(id BIGINT, state TEXT, next_at BIGINT, \
                 error TEXT, receipt TEXT, finished BIGINT)",
                "outbox.lease_owner = $2 AND outbox.state = 'sending'",
            ),
            Backend::Sqlite => (
                "(SELECT json_extract(value, '$.id') AS id, json_extract(value, '$.state') AS state, \
                 json_extract(value, '$.next_at') AS next_at, json_extract(value, '$.error') AS error, \
                 json_extract(value, '$.receipt') AS receipt, \
                 json_extract(value, '$.finished') AS finished FROM json_each($1)) AS j",
                "+outbox.lease_owner = $2 AND +outbox.state = 'sending'",
            ),
        };
        let sql = format!(
            "UPDATE outbox SET state = j.state, next_at = j.next_at, \
             last_error = COALESCE(j.error, outbox.last_error), \
             receipt = COALESCE(j.receipt, outbox.receipt), finished_at = j.finished, \
             lease_owner = NULL, lease_until = NULL \
             FROM {source} WHERE outbox.id = j.id AND {fence}"
        );
        let mut tx = self.begin_rows().await?;
        sqlx::query(AssertSqlSafe(sql))
            .bind(serde_json::Value::Array(rows).to_string())
            .bind(owner.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}

impl Store {
    /// Outbox rows, newest first: all, or only those in `state`.
    pub async fn outbox_rows(
        &self,
        state: Option<&str>,
        limit: i64,
    ) -> anyhow::Result<Vec<OutboxRow>> {
        let rows = sqlx::query(
            "SELECT id, key, channel, state, attempts, last_error, created_at FROM outbox \
             WHERE (CAST($1 AS TEXT) IS NULL OR state = $1) ORDER BY id DESC LIMIT $2",
        )
        .bind(state.map(str::to_string))
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(OutboxRow {
                    id: r.try_get("id")?,
                    key: r.try_get("key")?,
                    channel: r.try_get("channel")?,
                    state: r.try_get("state")?,
                    attempts: r.try_get("attempts")?,
                    last_error: r.try_get("last_error")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }

    /// Puts failed rows (`id`, or all failed ones) back to pending with fresh attempts;
    /// returns how many, and how many were left failed because a later row of their ordering
    /// group was delivered or is being sent (sending an old status update after a newer one
    /// would take the status page back in time; a row in flight is not waited for by an
    /// earlier one that becomes due). The count restarts at one, not zero: the next attempt is
    /// never a first one, so a deliverer still checks what the failed ones may have done (a
    /// Statuspage create that timed out after Statuspage made the incident is looked up by
    /// drbot's key, not made twice).
    pub async fn outbox_retry(&self, id: Option<i64>) -> anyhow::Result<(u64, u64)> {
        const MATCH: &str = "state = 'failed' AND (CAST($1 AS BIGINT) IS NULL OR id = $1)";
        const SUPERSEDED: &str = "ordering_key IS NOT NULL AND EXISTS (SELECT 1 FROM outbox l \
             WHERE l.ordering_key = outbox.ordering_key AND l.id > outbox.id \
             AND l.state IN ('delivered', 'sending'))";
        let mut tx = self.begin_rows().await?;
        let superseded: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM outbox WHERE {MATCH} AND {SUPERSEDED}"
        )))
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        let r = sqlx::query(AssertSqlSafe(format!(
            "UPDATE outbox SET state = 'pending', attempts = 1, next_at = $2, finished_at = NULL \
             WHERE {MATCH} AND NOT ({SUPERSEDED})"
        )))
        .bind(id)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((r.rows_affected(), superseded as u64))
    }
}

/// Where the rows whose key starts with a prefix stand (e.g. one mass send's emails).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OutboxProgress {
    /// Waiting (new, or retrying later).
    pub pending: i64,
    /// Claimed by a worker.
    pub sending: i64,
    /// Delivered.
    pub delivered: i64,
    /// Failed for good.
    pub failed: i64,
    /// One failed row's last error, if any failed.
    pub failed_example: Option<String>,
}

impl OutboxProgress {
    /// All rows.
    pub fn total(&self) -> i64 {
        self.pending + self.sending + self.delivered + self.failed
    }
    /// Rows not yet delivered or failed.
    pub fn open(&self) -> i64 {
        self.pending + self.sending
    }
}

/// Marks the customer email step with key `prefix` as having queued all its rows (for
/// `recipients` subscribers); a second mark is a no-op.
pub async fn mark_send_queued(tx: &mut Tx, prefix: &str, recipients: usize) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO email_sends (prefix, recipients, enqueued_at) VALUES ($1, $2, $3) \
         ON CONFLICT (prefix) DO NOTHING",
    )
    .bind(prefix.to_string())
    .bind(recipients as i64)
    .bind(now_ms())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Store {
    /// Whether the customer email step with key `prefix` queued all its rows.
    pub async fn email_send_queued(&self, prefix: &str) -> anyhow::Result<bool> {
        let row = sqlx::query("SELECT 1 AS one FROM email_sends WHERE prefix = $1")
            .bind(prefix.to_string())
            .fetch_optional(self.pool())
            .await?;
        Ok(row.is_some())
    }
}

/// How a key prefix is matched, so that the key's unique index serves it: SQLite's `LIKE`
/// ignores case and cannot use a BINARY index, its `GLOB` does not; PostgreSQL's `LIKE`
/// uses the `text_pattern_ops` index of migration 0018.
fn prefix_match(backend: Backend, prefix: &str) -> anyhow::Result<(&'static str, String)> {
    anyhow::ensure!(
        !prefix.contains(['%', '_', '\\', '*', '?', '[', ']']),
        "outbox key prefix `{prefix}` holds a wildcard"
    );
    Ok(match backend {
        Backend::Sqlite => ("key GLOB $1", format!("{prefix}*")),
        Backend::Postgres => ("key LIKE $1", format!("{prefix}%")),
    })
}

fn progress_of(rows: &[sqlx::any::AnyRow]) -> anyhow::Result<OutboxProgress> {
    let mut p = OutboxProgress::default();
    for r in rows {
        let n: i64 = r.try_get("n")?;
        match r.try_get::<String, _>("state")?.as_str() {
            "pending" => p.pending = n,
            "sending" => p.sending = n,
            "delivered" => p.delivered = n,
            _ => p.failed += n,
        }
    }
    Ok(p)
}

impl Store {
    /// Counts by state of the rows whose key starts with `prefix` (no `%` or `_` in it).
    pub async fn outbox_progress(&self, prefix: &str) -> anyhow::Result<OutboxProgress> {
        let (matches, pattern) = prefix_match(self.backend(), prefix)?;
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT state, COUNT(*) AS n FROM outbox WHERE {matches} GROUP BY state"
        )))
        .bind(pattern.clone())
        .fetch_all(self.pool())
        .await?;
        let mut p = progress_of(&rows)?;
        if p.failed > 0 {
            p.failed_example = sqlx::query(AssertSqlSafe(format!(
                "SELECT last_error FROM outbox WHERE {matches} AND state = 'failed' \
                 ORDER BY id LIMIT 1"
            )))
            .bind(pattern)
            .fetch_optional(self.pool())
            .await?
            .map(|r| r.try_get::<Option<String>, _>("last_error"))
            .transpose()?
            .flatten();
        }
        Ok(p)
    }
}
