//! Chat cards drbot posted (one per run per channel and platform), so clicks can be matched
//! to the card they were made on and cards can be edited as runs move.

use sqlx::Row;

use super::Store;

impl Store {
    /// The message posted under `outbound` key `key`: `None` when nothing was claimed under
    /// it, `Some(None)` while its post is in flight.
    pub async fn outbound_message(&self, key: &str) -> anyhow::Result<Option<Option<String>>> {
        let row = sqlx::query("SELECT message_id FROM outbound WHERE key = $1")
            .bind(key.to_string())
            .fetch_optional(self.pool())
            .await?;
        Ok(row
            .map(|r| r.try_get::<Option<String>, _>("message_id"))
            .transpose()?)
    }

    /// Records that the card `old` in `channel` was posted again as `new` (it could not be
    /// edited): `new` is the card from now on, and `old` is remembered as a replaced card of
    /// the same run, so a click made on it still reaches the run. Repeating it is harmless.
    pub async fn replace_card(
        &self,
        platform: &str,
        channel: &str,
        old: &str,
        new: &str,
    ) -> anyhow::Result<()> {
        let mut tx = self.pool().begin().await?;
        sqlx::query(
            "INSERT INTO replaced_cards \
                 (platform, channel, message_id, run_id, replaced_by, replaced_at) \
             SELECT platform, channel, message_id, run_id, $1, $2 FROM messages \
             WHERE platform = $3 AND channel = $4 AND message_id = $5 \
             ON CONFLICT DO NOTHING",
        )
        .bind(new.to_string())
        .bind(super::now_ms())
        .bind(platform.to_string())
        .bind(channel.to_string())
        .bind(old.to_string())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE messages SET message_id = $1 WHERE platform = $2 AND channel = $3 AND message_id = $4",
        )
        .bind(new.to_string())
        .bind(platform.to_string())
        .bind(channel.to_string())
        .bind(old.to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The run whose card is message `id` in `channel` on `platform` (its current card or one
    /// it replaced), if it is one of drbot's.
    pub async fn card_run(
        &self,
        platform: &str,
        channel: &str,
        id: &str,
    ) -> anyhow::Result<Option<i64>> {
        let r = sqlx::query(
            "SELECT run_id FROM messages WHERE platform = $1 AND channel = $2 AND message_id = $3 \
             UNION ALL \
             SELECT run_id FROM replaced_cards \
             WHERE platform = $1 AND channel = $2 AND message_id = $3 \
             LIMIT 1",
        )
        .bind(platform.to_string())
        .bind(channel.to_string())
        .bind(id.to_string())
        .fetch_optional(self.pool())
        .await?;
        Ok(match r {
            Some(r) => Some(r.try_get("run_id")?),
            None => None,
        })
    }

    /// The (channel, message id) of every card of `run` on `platform`.
    pub async fn cards_of(
        &self,
        platform: &str,
        run: i64,
    ) -> anyhow::Result<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT channel, message_id FROM messages WHERE platform = $1 AND run_id = $2",
        )
        .bind(platform.to_string())
        .bind(run)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|r| Ok((r.try_get("channel")?, r.try_get("message_id")?)))
            .collect::<Result<_, sqlx::Error>>()?)
    }
}
