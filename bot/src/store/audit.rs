//! The audit log: append-only rows chained by SHA-256, and the verifier that names the first
//! row that was edited, inserted or deleted.

use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::Row;

use super::{Backend, Store, Tx, now_ms};
use crate::actor::Actor;

/// `prev_hash` of the first row.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audit row.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AuditRow {
    /// 1, 2, 3, … with no gaps.
    pub seq: i64,
    /// Milliseconds since the epoch.
    pub at: i64,
    /// Person (from `[[people]]`), if known.
    pub person: Option<String>,
    /// Account that acted (`U024BE7LH`, `cli:<os user>:<person>`, …).
    pub account: Option<String>,
    /// `slack`, `discord`, `cli` or `system`.
    pub platform: String,
    /// Channel, if any.
    pub channel: Option<String>,
    /// What happened, e.g. `command`, `approve`, `step.finished`.
    pub action: String,
    /// Run concerned, if any.
    pub run_id: Option<i64>,
    /// JSON details.
    pub detail: String,
    /// Hash of the previous row.
    pub prev_hash: String,
    /// Hash of this row.
    pub hash: String,
}

fn row_hash(prev: &str, r: &AuditRow) -> String {
    Content {
        seq: r.seq,
        at: r.at,
        person: r.person.as_deref(),
        account: r.account.as_deref(),
        platform: &r.platform,
        channel: r.channel.as_deref(),
        action: &r.action,
        run_id: r.run_id,
        detail: &r.detail,
    }
    .hash(prev, &mut Vec::new())
}

/// What a row's hash covers, borrowed from wherever the row is.
struct Content<'a> {
    seq: i64,
    at: i64,
    person: Option<&'a str>,
    account: Option<&'a str>,
    platform: &'a str,
    channel: Option<&'a str>,
    action: &'a str,
    run_id: Option<i64>,
    detail: &'a str,
}

impl Content<'_> {
    /// SHA-256 (hex) of `prev`, a newline, and the fields as a compact JSON array; `buf` is
    /// scratch space, reused across rows.
    fn hash(&self, prev: &str, buf: &mut Vec<u8>) -> String {
        buf.clear();
        let fields = (
            self.seq,
            self.at,
            self.person,
            self.account,
            self.platform,
            self.channel,
            self.action,
            self.run_id,
            self.detail,
        );
        // Serializing a tuple of plain values cannot fail (no maps with non-string keys).
        let _ = serde_json::to_writer(&mut *buf, &fields);
        let mut h = Sha256::new();
        h.update(prev.as_bytes());
        h.update(b"\n");
        h.update(&buf[..]);
        let mut hex = [0u8; 64];
        // 32 bytes always fit 64 hex digits, which are ASCII.
        let _ = hex::encode_to_slice(h.finalize(), &mut hex);
        String::from_utf8_lossy(&hex).into_owned()
    }
}

/// One row to append.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Who acted.
    pub actor: Actor,
    /// What happened.
    pub action: String,
    /// Run concerned.
    pub run_id: Option<i64>,
    /// JSON details.
    pub detail: serde_json::Value,
}

/// An [`Entry`] with every field in its stored form (the detail serialized), made by the
/// caller's task so that the serial part of an append only chains, hashes and inserts.
#[derive(Debug)]
pub struct Prepared {
    person: Option<String>,
    account: String,
    platform: &'static str,
    channel: Option<String>,
    action: String,
    run_id: Option<i64>,
    detail: String,
}

impl From<Entry> for Prepared {
    fn from(e: Entry) -> Prepared {
        Prepared {
            detail: e.detail.to_string(),
            person: e.actor.person,
            account: e.actor.account,
            platform: e.actor.platform.as_str(),
            channel: e.actor.channel,
            action: e.action,
            run_id: e.run_id,
        }
    }
}

/// Appends a row inside the caller's write transaction.
pub async fn append(
    tx: &mut Tx,
    actor: &Actor,
    action: &str,
    run_id: Option<i64>,
    detail: serde_json::Value,
) -> anyhow::Result<i64> {
    let entry = Prepared::from(Entry {
        actor: actor.clone(),
        action: action.to_string(),
        run_id,
        detail,
    });
    // `$N` parameters work on both backends; the `?` form only matters for big batches.
    let seqs = append_many(tx, Backend::Postgres, std::slice::from_ref(&entry)).await?;
    seqs.first()
        .copied()
        .ok_or_else(|| anyhow::anyhow!("audit append wrote nothing"))
}

/// Appends rows in order inside the caller's write transaction, chaining each to the one
/// before; returns their sequence numbers.
pub async fn append_many(
    tx: &mut Tx,
    backend: Backend,
    entries: &[Prepared],
) -> anyhow::Result<Vec<i64>> {
    Ok(append_chained(tx, backend, entries).await?.0)
}

/// [`append_many`], also returning the new head's hash (the last row's): with its sequence
/// number it tells whether a commit whose answer was lost took effect ([`Store::audit_has`]).
pub async fn append_chained(
    tx: &mut Tx,
    backend: Backend,
    entries: &[Prepared],
) -> anyhow::Result<(Vec<i64>, String)> {
    if entries.is_empty() {
        return Ok((Vec::new(), String::new()));
    }
    let head = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
        .fetch_optional(&mut **tx)
        .await?;
    let (first_seq, mut prev_hash) = match head {
        Some(r) => (
            r.try_get::<i64, _>("seq")? + 1,
            r.try_get::<String, _>("hash")?,
        ),
        None => (1, GENESIS.to_string()),
    };
    // Chain first (each row's hash is the next one's `prev_hash`), then bind every value by
    // reference: nothing is copied, and the caller keeps the rows (to try them again).
    // One time for the group: the moment its rows are chained.
    let at = now_ms();
    let mut buf = Vec::with_capacity(512);
    let mut chained = Vec::with_capacity(entries.len());
    for (seq, e) in (first_seq..).zip(entries) {
        let hash = Content {
            seq,
            at,
            person: e.person.as_deref(),
            account: Some(&e.account),
            platform: e.platform,
            channel: e.channel.as_deref(),
            action: &e.action,
            run_id: e.run_id,
            detail: &e.detail,
        }
        .hash(&prev_hash, &mut buf);
        let prev = std::mem::replace(&mut prev_hash, hash.clone());
        chained.push((seq, e, prev, hash));
    }
    let last_seq = first_seq + chained.len() as i64 - 1;
    let seqs: Vec<i64> = (first_seq..=last_seq).collect();
    // Multi-row INSERTs: a batch costs a few round trips, not one per row. Chunk sizes come
    // from a fixed set so only a handful of distinct statements are ever prepared and cached.
    let mut rows = chained.into_iter();
    let mut left = seqs.len();
    while left > 0 {
        let size = INSERT_CHUNKS
            .iter()
            .copied()
            .find(|n| *n <= left)
            .unwrap_or(1);
        left -= size;
        let mut q = sqlx::query(sqlx::AssertSqlSafe(insert_sql(backend, size)));
        for (seq, e, prev, hash) in rows.by_ref().take(size) {
            q = q
                .bind(seq)
                .bind(at)
                .bind(e.person.as_deref())
                .bind(Some(e.account.as_str()))
                .bind(e.platform)
                .bind(e.channel.as_deref())
                .bind(e.action.as_str())
                .bind(e.run_id)
                .bind(e.detail.as_str())
                .bind(prev)
                .bind(hash);
        }
        q.execute(&mut **tx).await?;
    }
    sqlx::query(
        "INSERT INTO audit_head (id, seq, hash) VALUES (1, $1, $2) \
         ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
    )
    .bind(last_seq)
    .bind(prev_hash.clone())
    .execute(&mut **tx)
    .await?;
    Ok((seqs, prev_hash))
}

/// Rows per INSERT statement, largest first (11 parameters per row: well under both
/// backends' limits).
const INSERT_CHUNKS: [usize; 5] = [256, 64, 16, 4, 1];

/// The INSERT of `rows` audit rows (11 parameters each).
fn insert_sql(backend: Backend, rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO audit_log (seq, at, person, account, platform, channel, action, run_id, \
         detail, prev_hash, hash) VALUES ",
    );
    for i in 0..rows {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for k in 1..=11 {
            if k > 1 {
                sql.push_str(", ");
            }
            // SQLite resolves `$N` names by a linear scan per parameter; plain `?` is O(1).
            match backend {
                Backend::Sqlite => sql.push('?'),
                Backend::Postgres => {
                    use std::fmt::Write;
                    let _ = write!(sql, "${}", i * 11 + k);
                }
            }
        }
        sql.push(')');
    }
    sql
}

pub(crate) fn from_row(r: &sqlx::any::AnyRow) -> Result<AuditRow, sqlx::Error> {
    Ok(AuditRow {
        seq: r.try_get("seq")?,
        at: r.try_get("at")?,
        person: r.try_get("person")?,
        account: r.try_get("account")?,
        platform: r.try_get("platform")?,
        channel: r.try_get("channel")?,
        action: r.try_get("action")?,
        run_id: r.try_get("run_id")?,
        detail: r.try_get("detail")?,
        prev_hash: r.try_get("prev_hash")?,
        hash: r.try_get("hash")?,
    })
}

const SELECT: &str = "SELECT seq, at, person, account, platform, channel, action, run_id, detail, \
                      prev_hash, hash FROM audit_log";

impl Store {
    /// Audit rows, newest last; `run` filters to one run; `limit` keeps the newest N.
    pub async fn audit_rows(&self, run: Option<i64>, limit: i64) -> anyhow::Result<Vec<AuditRow>> {
        let rows =
            match run {
                Some(id) => sqlx::query(
                    "SELECT * FROM (SELECT seq, at, person, account, platform, channel, action, \
                     run_id, detail, prev_hash, hash FROM audit_log WHERE run_id = $1 \
                     ORDER BY seq DESC LIMIT $2) t ORDER BY seq",
                )
                .bind(id)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?,
                None => sqlx::query(
                    "SELECT * FROM (SELECT seq, at, person, account, platform, channel, action, \
                     run_id, detail, prev_hash, hash FROM audit_log ORDER BY seq DESC LIMIT $1) t \
                     ORDER BY seq",
                )
                .bind(limit)
                .fetch_all(&self.pool)
                .await?,
            };
        Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
    }

    /// Whether row `seq` is there with hash `hash`: after a commit that reported an error,
    /// whether it took effect anyway.
    pub async fn audit_has(&self, seq: i64, hash: &str) -> anyhow::Result<bool> {
        let found: Option<String> = sqlx::query_scalar("SELECT hash FROM audit_log WHERE seq = $1")
            .bind(seq)
            .fetch_optional(self.pool())
            .await?;
        Ok(found.as_deref() == Some(hash))
    }

    /// Walks the whole chain; returns every break found, each naming the row.
    pub async fn audit_verify(&self) -> anyhow::Result<AuditReport> {
        self.audit_verify_against(None).await
    }

    /// Walks the chain up to the head read at the start (rows appended meanwhile by a running
    /// drbot are left for the next check), a page at a time; `anchor` is a head recorded
    /// earlier (`seq`, `hash`): that row must still be there with that hash, which catches a
    /// log cut back and its head rewritten, or rows rewritten with their hashes recomputed.
    pub async fn audit_verify_against(
        &self,
        anchor: Option<(i64, &str)>,
    ) -> anyhow::Result<AuditReport> {
        const PAGE: i64 = 5_000;
        let mut problems = Vec::new();
        // One statement, one snapshot: the head and the newest row agree unless rows were
        // written outside drbot (drbot moves both in one transaction).
        let head = sqlx::query(
            "SELECT h.seq, h.hash, (SELECT MAX(seq) FROM audit_log) AS newest \
             FROM audit_head h WHERE h.id = 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        let head = match head {
            Some(h) => {
                let seq: i64 = h.try_get("seq")?;
                let newest: Option<i64> = h.try_get("newest")?;
                if let Some(n) = newest.filter(|n| *n > seq) {
                    problems.push(format!(
                        "rows {}..{n} follow the recorded head {seq} (appended outside drbot)",
                        seq + 1
                    ));
                }
                Some((seq, h.try_get::<String, _>("hash")?))
            }
            None => None,
        };
        let last = match &head {
            Some((seq, _)) => *seq,
            None => i64::MAX,
        };
        let mut expected_seq = 1;
        let mut prev_hash = GENESIS.to_string();
        let mut count = 0;
        let mut after = i64::MIN;
        // Row 0 is the empty log's head (the genesis hash): every log holds it.
        let mut anchor_seen = anchor.is_some_and(|(seq, _)| seq == 0);
        loop {
            let sql = format!("{SELECT} WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3");
            let page = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(after)
                .bind(last)
                .bind(PAGE)
                .fetch_all(&self.pool)
                .await?;
            for r in &page {
                let row = from_row(r)?;
                count += 1;
                check_row(&row, expected_seq, &prev_hash, &mut problems);
                if let Some((seq, hash)) = anchor
                    && row.seq == seq
                {
                    anchor_seen = true;
                    if row.hash != hash {
                        problems.push(format!(
                            "row {seq}: its hash is not the one recorded earlier (rewritten)"
                        ));
                    }
                }
                expected_seq = row.seq + 1;
                after = row.seq;
                prev_hash = row.hash;
            }
            if (page.len() as i64) < PAGE {
                break;
            }
        }
        if let Some((seq, _)) = anchor
            && !anchor_seen
        {
            problems.push(format!(
                "row {seq}, recorded earlier, is missing (the log was cut back)"
            ));
        }
        match head {
            Some((seq, hash)) => {
                if seq != expected_seq - 1 {
                    problems.push(format!(
                        "the newest row should be {seq} but the log ends at {} (rows deleted or appended outside drbot)",
                        expected_seq - 1
                    ));
                } else if hash != prev_hash {
                    problems.push(format!(
                        "row {seq}: does not match the recorded head hash (edited)"
                    ));
                }
            }
            None if count > 0 => {
                problems.push("the audit head is missing (edited outside drbot)".into())
            }
            None => {}
        }
        Ok(AuditReport {
            rows: count,
            head_seq: expected_seq - 1,
            head: prev_hash,
            problems,
        })
    }
}

/// Checks one row against the one before it: sequence, link, and its own hash.
fn check_row(row: &AuditRow, expected_seq: i64, prev_hash: &str, problems: &mut Vec<String>) {
    if row.seq > expected_seq {
        problems.push(format!(
            "row {}..{} missing: the sequence jumps from {} to {} (rows deleted)",
            expected_seq,
            row.seq - 1,
            expected_seq - 1,
            row.seq
        ));
    } else if row.seq < expected_seq {
        problems.push(format!("row {}: out of sequence (inserted)", row.seq));
    }
    if row.prev_hash != prev_hash {
        problems.push(format!(
            "row {}: does not follow the row before it (a row was inserted or removed before it)",
            row.seq
        ));
    }
    if row_hash(&row.prev_hash, row) != row.hash {
        problems.push(format!(
            "row {}: content does not match its hash (edited)",
            row.seq
        ));
    }
}

/// Result of `audit --verify`.
#[derive(Debug, Clone, Serialize)]
pub struct AuditReport {
    /// Rows checked.
    pub rows: i64,
    /// Sequence number of the newest row checked (0 for an empty log).
    pub head_seq: i64,
    /// Hash of the newest row checked: with `head_seq`, the anchor to keep outside drbot
    /// and pass to a later `audit --verify --expect-head`.
    pub head: String,
    /// Every break found; empty when the chain is intact.
    pub problems: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The hash as first defined (a `serde_json::Value` array printed compactly): rows
    /// written by earlier versions must keep verifying.
    fn first_definition(prev: &str, r: &AuditRow) -> String {
        let content = serde_json::json!([
            r.seq, r.at, r.person, r.account, r.platform, r.channel, r.action, r.run_id, r.detail
        ]);
        let mut h = Sha256::new();
        h.update(prev.as_bytes());
        h.update(b"\n");
        h.update(content.to_string().as_bytes());
        hex::encode(h.finalize())
    }

    proptest! {
        #[test]
        fn row_hash_is_unchanged_from_its_first_definition(
            seq in any::<i64>(), at in any::<i64>(), run_id in any::<Option<i64>>(),
            person in any::<Option<String>>(), account in any::<Option<String>>(),
            platform in ".*", channel in any::<Option<String>>(), action in "\\PC*",
            detail in any::<String>(), prev in "[0-9a-f]{64}",
        ) {
            let row = AuditRow {
                seq, at, person, account, platform, channel, action, run_id, detail,
                prev_hash: prev.clone(), hash: String::new(),
            };
            prop_assert_eq!(row_hash(&prev, &row), first_definition(&prev, &row));
        }
    }
}
