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
    let content = serde_json::json!([
        r.seq, r.at, r.person, r.account, r.platform, r.channel, r.action, r.run_id, r.detail
    ]);
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(b"\n");
    h.update(content.to_string().as_bytes());
    hex::encode(h.finalize())
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

/// Appends a row inside the caller's write transaction.
pub async fn append(
    tx: &mut Tx,
    actor: &Actor,
    action: &str,
    run_id: Option<i64>,
    detail: serde_json::Value,
) -> anyhow::Result<i64> {
    let entry = Entry {
        actor: actor.clone(),
        action: action.to_string(),
        run_id,
        detail,
    };
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
    entries: &[Entry],
) -> anyhow::Result<Vec<i64>> {
    let head = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
        .fetch_optional(&mut **tx)
        .await?;
    let (mut prev_seq, mut prev_hash) = match head {
        Some(r) => (r.try_get::<i64, _>("seq")?, r.try_get::<String, _>("hash")?),
        None => (0, GENESIS.to_string()),
    };
    let mut rows = Vec::with_capacity(entries.len());
    for e in entries {
        let mut row = AuditRow {
            seq: prev_seq + 1,
            at: now_ms(),
            person: e.actor.person.clone(),
            account: Some(e.actor.account.clone()),
            platform: e.actor.platform.as_str().to_string(),
            channel: e.actor.channel.clone(),
            action: e.action.clone(),
            run_id: e.run_id,
            detail: e.detail.to_string(),
            prev_hash,
            hash: String::new(),
        };
        row.hash = row_hash(&row.prev_hash, &row);
        prev_seq = row.seq;
        prev_hash = row.hash.clone();
        rows.push(row);
    }
    // Multi-row INSERTs: a batch costs a few round trips, not one per row. Chunk sizes come
    // from a fixed set so only a handful of distinct statements are ever prepared and cached.
    let mut rest = rows.as_slice();
    while !rest.is_empty() {
        let size = INSERT_CHUNKS
            .iter()
            .copied()
            .find(|n| *n <= rest.len())
            .unwrap_or(1);
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        let mut sql = String::from(
            "INSERT INTO audit_log (seq, at, person, account, platform, channel, action, run_id, \
             detail, prev_hash, hash) VALUES ",
        );
        for i in 0..chunk.len() {
            let b = i * 11;
            if i > 0 {
                sql.push_str(", ");
            }
            // SQLite resolves `$N` names by a linear scan per parameter; plain `?` is O(1).
            let params: Vec<String> = match backend {
                Backend::Sqlite => vec!["?".to_string(); 11],
                Backend::Postgres => (1..=11).map(|k| format!("${}", b + k)).collect(),
            };
            sql.push('(');
            sql.push_str(&params.join(", "));
            sql.push(')');
        }
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for row in chunk {
            q = q
                .bind(row.seq)
                .bind(row.at)
                .bind(row.person.clone())
                .bind(row.account.clone())
                .bind(row.platform.clone())
                .bind(row.channel.clone())
                .bind(row.action.clone())
                .bind(row.run_id)
                .bind(row.detail.clone())
                .bind(row.prev_hash.clone())
                .bind(row.hash.clone());
        }
        q.execute(&mut **tx).await?;
    }
    let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
    if !entries.is_empty() {
        sqlx::query(
            "INSERT INTO audit_head (id, seq, hash) VALUES (1, $1, $2) \
             ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
        )
        .bind(prev_seq)
        .bind(prev_hash)
        .execute(&mut **tx)
        .await?;
    }
    Ok(seqs)
}

/// Appends rows that need no other write in their transaction (the audit row of every
/// command and click), committing them in groups: each caller waits until its row is
/// committed, and concurrent callers share one transaction.
#[derive(Clone)]
pub struct AuditWriter {
    tx: tokio::sync::mpsc::Sender<Item>,
}

/// A row to append (or, with `None`, a flush marker) and who waits for its sequence number.
type Item = (
    Option<Entry>,
    tokio::sync::oneshot::Sender<Result<i64, String>>,
);

/// Rows per INSERT statement, largest first (11 parameters per row: well under both
/// backends' limits).
const INSERT_CHUNKS: [usize; 5] = [256, 64, 16, 4, 1];

/// Most rows committed in one transaction.
const GROUP_MAX: usize = 512;

impl AuditWriter {
    /// Starts the writer task on the current runtime.
    pub fn spawn(store: Store) -> AuditWriter {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Item>(4096);
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while batch.len() < GROUP_MAX {
                    match rx.try_recv() {
                        Ok(p) => batch.push(p),
                        Err(_) => break,
                    }
                }
                let entries: Vec<Entry> = batch.iter().filter_map(|(e, _)| e.clone()).collect();
                let res = async {
                    if entries.is_empty() {
                        return anyhow::Ok(Vec::new());
                    }
                    let mut tx = store.write().await?;
                    let seqs = append_many(&mut tx, store.backend(), &entries).await?;
                    tx.commit().await?;
                    anyhow::Ok(seqs)
                }
                .await;
                match res {
                    Ok(seqs) => {
                        let mut seqs = seqs.into_iter();
                        for (entry, done) in batch {
                            let seq = if entry.is_some() {
                                seqs.next().unwrap_or(0)
                            } else {
                                0
                            };
                            let _ = done.send(Ok(seq));
                        }
                    }
                    Err(e) => {
                        let msg = format!("{e:#}");
                        tracing::error!(
                            rows = entries.len(),
                            error = msg,
                            "audit group commit failed"
                        );
                        for (_, done) in batch {
                            let _ = done.send(Err(msg.clone()));
                        }
                    }
                }
            }
        });
        AuditWriter { tx }
    }

    /// Queues one row for the next group commit without waiting for it (for the rows of
    /// read-only commands: a crash may lose the last few milliseconds of them, never a
    /// row about a change). Waits only while the queue is full.
    pub async fn queue(&self, entry: Entry) -> anyhow::Result<()> {
        let (done, _) = tokio::sync::oneshot::channel();
        self.tx
            .send((Some(entry), done))
            .await
            .map_err(|_| anyhow::anyhow!("the audit writer stopped"))
    }

    /// Waits until every row queued before this call is committed (before the process exits).
    pub async fn flush(&self) -> anyhow::Result<()> {
        let (done, wait) = tokio::sync::oneshot::channel();
        self.tx
            .send((None, done))
            .await
            .map_err(|_| anyhow::anyhow!("the audit writer stopped"))?;
        wait.await
            .map_err(|_| anyhow::anyhow!("the audit writer stopped"))?
            .map(|_| ())
            .map_err(|e| anyhow::anyhow!("audit write failed: {e}"))
    }

    /// Appends one row; returns once it is committed.
    pub async fn append(&self, entry: Entry) -> anyhow::Result<i64> {
        let (done, wait) = tokio::sync::oneshot::channel();
        self.tx
            .send((Some(entry), done))
            .await
            .map_err(|_| anyhow::anyhow!("the audit writer stopped"))?;
        wait.await
            .map_err(|_| anyhow::anyhow!("the audit writer stopped"))?
            .map_err(|e| anyhow::anyhow!("audit write failed: {e}"))
    }
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

    /// Walks the whole chain; returns every break found, each naming the row.
    pub async fn audit_verify(&self) -> anyhow::Result<AuditReport> {
        let sql = format!("{SELECT} ORDER BY seq");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        let mut problems = Vec::new();
        let mut expected_seq = 1;
        let mut prev_hash = GENESIS.to_string();
        let mut count = 0;
        for r in &rows {
            let row = from_row(r)?;
            count += 1;
            if row.seq != expected_seq {
                if row.seq > expected_seq {
                    problems.push(format!(
                        "row {}..{} missing: the sequence jumps from {} to {} (rows deleted)",
                        expected_seq,
                        row.seq - 1,
                        expected_seq - 1,
                        row.seq
                    ));
                } else {
                    problems.push(format!("row {}: out of sequence (inserted)", row.seq));
                }
            }
            if row.prev_hash != prev_hash {
                problems.push(format!(
                    "row {}: does not follow the row before it (a row was inserted or removed before it)",
                    row.seq
                ));
            }
            if row_hash(&row.prev_hash, &row) != row.hash {
                problems.push(format!(
                    "row {}: content does not match its hash (edited)",
                    row.seq
                ));
            }
            expected_seq = row.seq + 1;
            prev_hash = row.hash.clone();
        }
        let head = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
            .fetch_optional(&self.pool)
            .await?;
        if let Some(h) = head {
            let seq: i64 = h.try_get("seq")?;
            let hash: String = h.try_get("hash")?;
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
        } else if count > 0 {
            problems.push("the audit head is missing (edited outside drbot)".into());
        }
        Ok(AuditReport {
            rows: count,
            head: prev_hash,
            problems,
        })
    }
}

/// Result of `audit --verify`.
#[derive(Debug, Clone, Serialize)]
pub struct AuditReport {
    /// Rows checked.
    pub rows: i64,
    /// Hash of the newest row.
    pub head: String,
    /// Every break found; empty when the chain is intact.
    pub problems: Vec<String>,
}
