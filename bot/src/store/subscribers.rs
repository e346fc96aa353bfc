//! Customer email subscribers: one row per (lower-cased) address with its unsubscribe token,
//! the import behind `drbot subscribers import`, the reads behind `export`, `list`, `count` and
//! the mass send, and the one-click unsubscribe.
//!
//! An unsubscribed row is kept with its time: importing the address again reports it and leaves
//! it unsubscribed unless the import explicitly resubscribes. Unsubscribing is a single
//! compare-and-set statement on the pool (like the outbox's bookkeeping, it touches no row the
//! approval, audit or run invariants read), so a burst of clicks never waits for the global
//! write lock.

use serde::Serialize;
use sqlx::Row;

use anyhow::Context as _;

use super::{Store, Tx, now_ms};

/// Addresses per transaction of an import.
pub const IMPORT_BATCH: usize = 1000;

/// One subscriber.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubscriberRow {
    /// Row id.
    pub id: i64,
    /// Address, lower-cased.
    pub email: String,
    /// Display name, if known.
    pub name: Option<String>,
    /// Unsubscribe token (64 hex digits). Not serialized: listings and exports never show it.
    #[serde(skip)]
    pub token: String,
    /// Subscribed, Unix ms.
    pub created_at: i64,
    /// Unsubscribed, Unix ms; `None` while active.
    pub unsubscribed_at: Option<i64>,
}

/// A subscriber to add, already validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSubscriber {
    /// Address; lower-cased before it is stored.
    pub email: String,
    /// Display name.
    pub name: Option<String>,
    /// Store a new address as already unsubscribed at this time (an export re-imported).
    pub unsubscribed_at: Option<i64>,
}

/// What adding one address did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AddOutcome {
    /// A new subscriber row.
    Added,
    /// A new row, stored unsubscribed (the input said so).
    AddedUnsubscribed,
    /// The address is already subscribed; nothing changed.
    AlreadyPresent,
    /// The address unsubscribed earlier and stays unsubscribed (no `resubscribe`).
    SkippedUnsubscribed,
    /// The address had unsubscribed and is subscribed again (`resubscribe`).
    Resubscribed,
    /// The address was subscribed and the input says it unsubscribed: it is unsubscribed
    /// now, at the input's time (an opt-out recorded elsewhere is honoured here).
    Unsubscribed,
}

/// Active and unsubscribed counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SubscriberCounts {
    /// Receiving email.
    pub active: i64,
    /// Unsubscribed.
    pub unsubscribed: i64,
}

/// The result of [`Store::unsubscribe`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unsubscribed {
    /// The token named no subscriber.
    Unknown,
    /// Unsubscribed now.
    Now(SubscriberRow),
    /// Was already unsubscribed (the earlier time is kept).
    Already(SubscriberRow),
}

/// A fresh unsubscribe token: 32 bytes from the operating system's CSPRNG, as 64 hex digits.
pub fn new_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| anyhow::anyhow!("no randomness for a subscriber token: {e}"))?;
    Ok(hex::encode(bytes))
}

/// Whether `token` has the shape of a token (64 lower-case hex digits): anything else is
/// refused before it reaches the database.
pub fn token_shape_ok(token: &str) -> bool {
    token.len() == 64
        && token
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The form every address is stored in.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// The columns every read selects, in [`row`]'s order.
macro_rules! columns {
    () => {
        "id, email, name, token, created_at, unsubscribed_at"
    };
}

fn row(r: &sqlx::any::AnyRow) -> anyhow::Result<SubscriberRow> {
    Ok(SubscriberRow {
        id: r.try_get("id")?,
        email: r.try_get("email")?,
        name: r.try_get("name")?,
        token: r.try_get("token")?,
        created_at: r.try_get("created_at")?,
        unsubscribed_at: r.try_get("unsubscribed_at")?,
    })
}

/// Adds one subscriber in the caller's transaction (see [`AddOutcome`]).
pub async fn add(
    tx: &mut Tx,
    new: &NewSubscriber,
    resubscribe: bool,
) -> anyhow::Result<AddOutcome> {
    let email = normalize_email(&new.email);
    let existing = sqlx::query("SELECT id, unsubscribed_at FROM subscribers WHERE email = $1")
        .bind(email.clone())
        .fetch_optional(&mut **tx)
        .await?;
    if let Some(r) = existing {
        let id: i64 = r.try_get("id")?;
        let unsubscribed: Option<i64> = r.try_get("unsubscribed_at")?;
        // An opt-out in the input always wins: it unsubscribes an active address, and
        // `resubscribe` never subscribes an address the input says unsubscribed.
        return Ok(match (unsubscribed, new.unsubscribed_at, resubscribe) {
            (None, None, _) => AddOutcome::AlreadyPresent,
            (None, Some(at), _) => {
                sqlx::query(
                    "UPDATE subscribers SET unsubscribed_at = $1 \
                     WHERE id = $2 AND unsubscribed_at IS NULL",
                )
                .bind(at)
                .bind(id)
                .execute(&mut **tx)
                .await?;
                AddOutcome::Unsubscribed
            }
            (Some(_), Some(_), _) | (Some(_), None, false) => AddOutcome::SkippedUnsubscribed,
            (Some(_), None, true) => {
                sqlx::query("UPDATE subscribers SET unsubscribed_at = NULL WHERE id = $1")
                    .bind(id)
                    .execute(&mut **tx)
                    .await?;
                AddOutcome::Resubscribed
            }
        });
    }
    sqlx::query(
        "INSERT INTO subscribers (email, name, token, created_at, unsubscribed_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(email)
    .bind(new.name.clone())
    .bind(new_token()?)
    // Stored unsubscribed as of an earlier time: it was subscribed by then, not after.
    .bind(new.unsubscribed_at.map_or(now_ms(), |at| at.min(now_ms())))
    .bind(new.unsubscribed_at)
    .execute(&mut **tx)
    .await?;
    Ok(if new.unsubscribed_at.is_some() {
        AddOutcome::AddedUnsubscribed
    } else {
        AddOutcome::Added
    })
}

impl Store {
    /// Every active subscriber, by id (what a mass send enqueues).
    pub async fn active_subscribers(&self) -> anyhow::Result<Vec<SubscriberRow>> {
        use futures::TryStreamExt;
        let mut rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM subscribers WHERE unsubscribed_at IS NULL ORDER BY id"
        ))
        .fetch(self.pool());
        let mut out = Vec::new();
        while let Some(r) = rows.try_next().await? {
            out.push(row(&r)?);
        }
        Ok(out)
    }
}

impl Store {
    /// Adds `entries`, [`IMPORT_BATCH`] per write transaction; one outcome per entry, in order.
    /// On a failure the batches before it stay imported, and the error says how many.
    pub async fn import_subscribers(
        &self,
        entries: &[NewSubscriber],
        resubscribe: bool,
    ) -> anyhow::Result<Vec<AddOutcome>> {
        match self.import_subscribers_partly(entries, resubscribe).await {
            (out, None) => Ok(out),
            (_, Some(e)) => Err(e),
        }
    }

    /// [`Store::import_subscribers`], with the outcomes of the batches committed before a
    /// failure (so that they are reported and audited) beside the failure.
    pub async fn import_subscribers_partly(
        &self,
        entries: &[NewSubscriber],
        resubscribe: bool,
    ) -> (Vec<AddOutcome>, Option<anyhow::Error>) {
        // In batches: one transaction for a whole file would hold the store's write lock (on
        // SQLite, every writer's) for as long as it takes, and break-glass commands wait.
        let mut out = Vec::with_capacity(entries.len());
        for chunk in entries.chunks(IMPORT_BATCH) {
            let done = out.len();
            let batch = async {
                let mut tx = self.write().await?;
                let mut got = Vec::with_capacity(chunk.len());
                for e in chunk {
                    got.push(add(&mut tx, e, resubscribe).await?);
                }
                tx.commit().await?;
                anyhow::Ok(got)
            }
            .await
            .with_context(|| {
                format!(
                    "{done} of {} addresses were imported before this failed; importing the \
                     file again adds the rest (those already here are reported as present)",
                    entries.len()
                )
            });
            match batch {
                Ok(batch) => out.extend(batch),
                Err(e) => return (out, Some(e)),
            }
        }
        (out, None)
    }

    /// Every subscriber, active or not, by id.
    pub async fn subscribers(&self) -> anyhow::Result<Vec<SubscriberRow>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM subscribers ORDER BY id"
        ))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(row).collect()
    }

    /// How many subscribers are active and unsubscribed.
    pub async fn subscriber_counts(&self) -> anyhow::Result<SubscriberCounts> {
        let r = sqlx::query(
            "SELECT COUNT(*) AS total, COUNT(unsubscribed_at) AS unsubscribed FROM subscribers",
        )
        .fetch_one(self.pool())
        .await?;
        let total: i64 = r.try_get("total")?;
        let unsubscribed: i64 = r.try_get("unsubscribed")?;
        Ok(SubscriberCounts {
            active: total - unsubscribed,
            unsubscribed,
        })
    }

    /// The subscriber holding `token`; `None` for an unknown or malformed token.
    pub async fn subscriber_by_token(&self, token: &str) -> anyhow::Result<Option<SubscriberRow>> {
        if !token_shape_ok(token) {
            return Ok(None);
        }
        let r = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM subscribers WHERE token = $1"
        ))
        .bind(token.to_string())
        .fetch_optional(self.pool())
        .await?;
        r.as_ref().map(row).transpose()
    }

    /// Which of the subscribers `ids` have unsubscribed (a mass send skips them, however long
    /// ago their row was queued).
    pub async fn unsubscribed_among(
        &self,
        ids: &[i64],
    ) -> anyhow::Result<std::collections::HashSet<i64>> {
        let mut out = std::collections::HashSet::new();
        // Well under either backend's limit on bound values.
        for chunk in ids.chunks(1000) {
            let sql = format!(
                "SELECT id FROM subscribers WHERE unsubscribed_at IS NOT NULL AND id IN ({})",
                super::outbox::placeholders(1, chunk.len())
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for id in chunk {
                q = q.bind(*id);
            }
            for r in q.fetch_all(self.pool()).await? {
                out.insert(r.try_get::<i64, _>("id")?);
            }
        }
        Ok(out)
    }

    /// Unsubscribes the holder of `token`. Idempotent: a second call keeps the first time.
    pub async fn unsubscribe(&self, token: &str) -> anyhow::Result<Unsubscribed> {
        if !token_shape_ok(token) {
            return Ok(Unsubscribed::Unknown);
        }
        // Read first (a read takes no write lock): a guessed token, or a second click, never
        // queues behind approvals and run journal writes for SQLite's one writer.
        match self.subscriber_by_token(token).await? {
            None => return Ok(Unsubscribed::Unknown),
            Some(s) if s.unsubscribed_at.is_some() => return Ok(Unsubscribed::Already(s)),
            Some(_) => {}
        }
        let changed = sqlx::query(
            "UPDATE subscribers SET unsubscribed_at = $1 \
             WHERE token = $2 AND unsubscribed_at IS NULL",
        )
        .bind(now_ms())
        .bind(token.to_string())
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(match self.subscriber_by_token(token).await? {
            None => Unsubscribed::Unknown,
            Some(s) if changed == 1 => Unsubscribed::Now(s),
            Some(s) => Unsubscribed::Already(s),
        })
    }
}
