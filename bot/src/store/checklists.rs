//! Checklist instances (`/dr checklist <name>`), their ticks, and the chat messages showing
//! them. A tick toggles inside one write transaction that also appends its `checklist.tick`
//! audit row, so the log holds exactly the ticks that happened, with who and when.

use serde::Serialize;
use sqlx::{Row, any::AnyRow};

use super::{Store, audit, now_ms};
use crate::{
    actor::Actor,
    config::{ChecklistDef, ChecklistItemDef},
};

/// A posted checklist, with the items it was created with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChecklistInstance {
    /// Id, named by buttons (`tick:<id>:<item>`).
    pub id: i64,
    /// The checklist's name (`pre-failover`).
    pub name: String,
    /// Its title.
    pub title: String,
    /// Its items, in order (a copy: later config edits do not change a posted checklist).
    pub items: Vec<ChecklistItemDef>,
    /// The person who posted it.
    pub created_by: String,
    /// When (ms since the epoch).
    pub created_at: i64,
}

/// An item that is ticked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TickRow {
    /// The item's id.
    pub item_id: String,
    /// The person who ticked it.
    pub ticked_by: String,
    /// When (ms since the epoch).
    pub ticked_at: i64,
}

/// A checklist instance and its ticked items.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChecklistView {
    /// The instance.
    pub instance: ChecklistInstance,
    /// Ticked items (any order).
    pub ticks: Vec<TickRow>,
}

impl ChecklistView {
    /// The tick of item `id`, if it is ticked.
    pub fn tick(&self, id: &str) -> Option<&TickRow> {
        self.ticks.iter().find(|t| t.item_id == id)
    }

    /// How many items are ticked.
    pub fn done(&self) -> usize {
        self.instance
            .items
            .iter()
            .filter(|i| self.tick(&i.id).is_some())
            .count()
    }
}

/// What a tick click did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Toggle {
    /// The item is now ticked.
    Ticked,
    /// The item was ticked and is now not.
    Unticked,
    /// No such instance.
    UnknownInstance,
    /// The instance has no such item.
    UnknownItem,
}

/// A chat message showing (part of) a checklist instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChecklistMessage {
    /// Channel.
    pub channel: String,
    /// Message id (Slack `ts`, Discord id).
    pub message_id: String,
    /// The instance shown.
    pub instance: i64,
    /// Which part of the instance's items (0 unless the checklist spans several messages).
    pub part: i64,
}

fn instance_from(r: &AnyRow) -> anyhow::Result<ChecklistInstance> {
    let items: String = r.try_get("items")?;
    Ok(ChecklistInstance {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        title: r.try_get("title")?,
        items: serde_json::from_str(&items)?,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
    })
}

fn message_from(r: &AnyRow) -> anyhow::Result<ChecklistMessage> {
    Ok(ChecklistMessage {
        channel: r.try_get("channel")?,
        message_id: r.try_get("message_id")?,
        instance: r.try_get("instance_id")?,
        part: r.try_get("part")?,
    })
}

impl Store {
    /// Creates an instance of checklist `def`, posted by `person`.
    pub async fn create_checklist(
        &self,
        def: &ChecklistDef,
        person: &str,
    ) -> anyhow::Result<ChecklistView> {
        let mut tx = self.write().await?;
        let now = now_ms();
        let row = sqlx::query(
            "INSERT INTO checklist_instances (name, title, items, created_by, created_at) \
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(def.name.clone())
        .bind(def.title.clone())
        .bind(serde_json::to_string(&def.items)?)
        .bind(person.to_string())
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let id: i64 = row.try_get("id")?;
        tx.commit().await?;
        Ok(ChecklistView {
            instance: ChecklistInstance {
                id,
                name: def.name.clone(),
                title: def.title.clone(),
                items: def.items.clone(),
                created_by: person.to_string(),
                created_at: now,
            },
            ticks: Vec::new(),
        })
    }

    /// Instance `id` and its ticks.
    pub async fn checklist(&self, id: i64) -> anyhow::Result<Option<ChecklistView>> {
        let Some(r) = sqlx::query("SELECT * FROM checklist_instances WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await?
        else {
            return Ok(None);
        };
        let instance = instance_from(&r)?;
        let ticks = sqlx::query(
            "SELECT item_id, ticked_by, ticked_at FROM checklist_ticks WHERE instance_id = $1",
        )
        .bind(id)
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(|r| {
            Ok(TickRow {
                item_id: r.try_get("item_id")?,
                ticked_by: r.try_get("ticked_by")?,
                ticked_at: r.try_get("ticked_at")?,
            })
        })
        .collect::<anyhow::Result<_>>()?;
        Ok(Some(ChecklistView { instance, ticks }))
    }

    /// Toggles item `item` of instance `id` for `actor` (who must be a person) and appends
    /// the `checklist.tick` audit row, in one transaction.
    pub async fn toggle_tick(&self, id: i64, item: &str, actor: &Actor) -> anyhow::Result<Toggle> {
        let person = actor
            .person
            .clone()
            .ok_or_else(|| anyhow::anyhow!("only people in [[people]] may tick"))?;
        let mut tx = self.write().await?;
        let Some(r) = sqlx::query("SELECT * FROM checklist_instances WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(Toggle::UnknownInstance);
        };
        let instance = instance_from(&r)?;
        if !instance.items.iter().any(|i| i.id == item) {
            return Ok(Toggle::UnknownItem);
        }
        let removed =
            sqlx::query("DELETE FROM checklist_ticks WHERE instance_id = $1 AND item_id = $2")
                .bind(id)
                .bind(item.to_string())
                .execute(&mut *tx)
                .await?
                .rows_affected();
        let outcome = if removed == 0 {
            sqlx::query(
                "INSERT INTO checklist_ticks (instance_id, item_id, ticked_by, ticked_at) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(id)
            .bind(item.to_string())
            .bind(person.clone())
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
            Toggle::Ticked
        } else {
            Toggle::Unticked
        };
        audit::append(
            &mut tx,
            actor,
            "checklist.tick",
            None,
            serde_json::json!({
                "checklist": instance.name,
                "instance": id,
                "item": item,
                "ticked": outcome == Toggle::Ticked,
                "by": person,
            }),
        )
        .await?;
        tx.commit().await?;
        Ok(outcome)
    }

    /// Records that `message_id` in `channel` on `platform` shows part `part` of instance `id`.
    pub async fn record_checklist_message(
        &self,
        platform: &str,
        m: &ChecklistMessage,
    ) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO checklist_messages (platform, channel, message_id, instance_id, part, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        )
        .bind(platform.to_string())
        .bind(m.channel.clone())
        .bind(m.message_id.clone())
        .bind(m.instance)
        .bind(m.part)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The checklist message `id` in `channel` on `platform`, if it is one of drbot's.
    pub async fn checklist_message(
        &self,
        platform: &str,
        channel: &str,
        id: &str,
    ) -> anyhow::Result<Option<ChecklistMessage>> {
        sqlx::query(
            "SELECT * FROM checklist_messages WHERE platform = $1 AND channel = $2 \
             AND message_id = $3",
        )
        .bind(platform.to_string())
        .bind(channel.to_string())
        .bind(id.to_string())
        .fetch_optional(self.pool())
        .await?
        .as_ref()
        .map(message_from)
        .transpose()
    }

    /// Every message showing instance `id` on `platform`, by channel and part.
    pub async fn checklist_messages(
        &self,
        platform: &str,
        id: i64,
    ) -> anyhow::Result<Vec<ChecklistMessage>> {
        sqlx::query(
            "SELECT * FROM checklist_messages WHERE platform = $1 AND instance_id = $2 \
             ORDER BY channel, part",
        )
        .bind(platform.to_string())
        .bind(id)
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(message_from)
        .collect()
    }
}
