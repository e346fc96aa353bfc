//! Customer email campaigns (`email_campaigns`): the message of one mass send, stored once in
//! the transaction that enqueues its outbox rows, and read back by the email deliverer.

use sqlx::Row;

use super::{Store, Tx, now_ms};

/// Stores a campaign's `content` (JSON) under `key` in the caller's transaction; its id.
pub async fn insert_tx(tx: &mut Tx, key: &str, content: &str) -> anyhow::Result<i64> {
    // A step queueing its rows again (after a crash between batches) finds its campaign.
    sqlx::query(
        "INSERT INTO email_campaigns (key, content, created_at) VALUES ($1, $2, $3) \
         ON CONFLICT (key) DO NOTHING",
    )
    .bind(key.to_string())
    .bind(content.to_string())
    .bind(now_ms())
    .execute(&mut **tx)
    .await?;
    let row = sqlx::query("SELECT id, content FROM email_campaigns WHERE key = $1")
        .bind(key.to_string())
        .fetch_one(&mut **tx)
        .await?;
    let stored: String = row.try_get("content")?;
    anyhow::ensure!(
        stored == content,
        "email campaign `{key}` is stored with other content"
    );
    Ok(row.try_get("id")?)
}

impl Store {
    /// The content (JSON) of campaign `id`, if it exists.
    pub async fn email_campaign(&self, id: i64) -> anyhow::Result<Option<String>> {
        let row = sqlx::query("SELECT content FROM email_campaigns WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.map(|r| r.try_get("content")).transpose()?)
    }
}
