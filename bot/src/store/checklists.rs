//! Checklist instances (`/dr checklist <name>`, or opened for a run of a runbook with
//! `checklists`), their ticks, and the chat messages showing them. A tick toggles inside one
//! write transaction that also appends its `checklist.tick` audit row, so the log holds exactly
//! the ticks that happened, with who and when. A tick on a run's checklist also queues the run
//! again if it is held for checklist items, in that same transaction.

use serde::Serialize;
use sqlx::{Row, any::AnyRow};

use super::{Store, Tx, audit, now_ms};
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
    /// The run it was opened for (a runbook's `checklists`); `None` for `/dr checklist`.
    pub run: Option<i64>,
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
    /// [`Store::set_tick`]: the item was in that state already (`true`: ticked); unchanged.
    Already(bool),
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
        run: r.try_get("run_id")?,
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

async fn ticks_of<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
    ex: E,
    id: i64,
) -> anyhow::Result<Vec<TickRow>> {
    sqlx::query("SELECT item_id, ticked_by, ticked_at FROM checklist_ticks WHERE instance_id = $1")
        .bind(id)
        .fetch_all(ex)
        .await?
        .iter()
        .map(|r| {
            Ok(TickRow {
                item_id: r.try_get("item_id")?,
                ticked_by: r.try_get("ticked_by")?,
                ticked_at: r.try_get("ticked_at")?,
            })
        })
        .collect()
}

/// The checklists opened for run `run`, with their ticks, read on `conn` (a transaction's
/// connection when the caller must act on what it read).
pub async fn run_checklists_in(
    conn: &mut sqlx::AnyConnection,
    run: i64,
) -> anyhow::Result<Vec<ChecklistView>> {
    let rows = sqlx::query("SELECT * FROM checklist_instances WHERE run_id = $1 ORDER BY id")
        .bind(run)
        .fetch_all(&mut *conn)
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let instance = instance_from(r)?;
        let ticks = ticks_of(&mut *conn, instance.id).await?;
        out.push(ChecklistView { instance, ticks });
    }
    Ok(out)
}

/// Opens an instance of each of `defs` for run `run` (requested by `person`), in the caller's
/// transaction (the one inserting the run).
pub async fn open_for_run(
    tx: &mut Tx,
    run: i64,
    defs: &[&ChecklistDef],
    person: &str,
) -> anyhow::Result<Vec<i64>> {
    let mut ids = Vec::with_capacity(defs.len());
    for def in defs {
        let row = sqlx::query(
            "INSERT INTO checklist_instances (name, title, items, created_by, created_at, run_id) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(def.name.clone())
        .bind(def.title.clone())
        .bind(serde_json::to_string(&def.items)?)
        .bind(person.to_string())
        .bind(now_ms())
        .bind(run)
        .fetch_one(&mut **tx)
        .await?;
        ids.push(row.try_get("id")?);
    }
    Ok(ids)
}

/// Ticks `items` (`"<checklist>:<item>"`) of run `run`'s checklists as drbot, because step
/// `step` succeeded: each item not ticked yet gets a tick by `drbot` and a `checklist.tick`
/// audit row (system actor), in the caller's transaction. Returns the instances changed.
pub async fn tick_for_step(
    tx: &mut Tx,
    run: i64,
    step: usize,
    items: &[String],
) -> anyhow::Result<Vec<i64>> {
    let views = run_checklists_in(tx, run).await?;
    let mut changed = Vec::new();
    for want in items {
        let Some((name, item)) = want.split_once(':') else {
            continue;
        };
        let Some(v) = views.iter().find(|v| v.instance.name == name) else {
            continue;
        };
        if v.tick(item).is_some() || !v.instance.items.iter().any(|i| i.id == item) {
            continue;
        }
        sqlx::query(
            "INSERT INTO checklist_ticks (instance_id, item_id, ticked_by, ticked_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(v.instance.id)
        .bind(item.to_string())
        .bind(SYSTEM_TICKER)
        .bind(now_ms())
        .execute(&mut **tx)
        .await?;
        audit::append(
            tx,
            &Actor::system(),
            "checklist.tick",
            Some(run),
            serde_json::json!({
                "checklist": name,
                "instance": v.instance.id,
                "item": item,
                "ticked": true,
                "by": SYSTEM_TICKER,
                "step": step,
            }),
        )
        .await?;
        if !changed.contains(&v.instance.id) {
            changed.push(v.instance.id);
        }
    }
    Ok(changed)
}

/// Who ticks an item when a step finishes.
pub const SYSTEM_TICKER: &str = "drbot";

/// The items of `requires` (`"<checklist>:<item>"`) not ticked in `views`, each as
/// `(requirement, item text)`; an item of a checklist the run lacks counts as not ticked.
pub fn unticked(views: &[ChecklistView], requires: &[String]) -> Vec<(String, String)> {
    requires
        .iter()
        .filter_map(|req| {
            let (name, item) = req.split_once(':').unwrap_or((req.as_str(), ""));
            let view = views.iter().find(|v| v.instance.name == name);
            let text = view
                .and_then(|v| v.instance.items.iter().find(|i| i.id == item))
                .map(|i| i.text.clone());
            match (view, text) {
                (Some(v), Some(_)) if v.tick(item).is_some() => None,
                (Some(v), Some(t)) => Some((req.clone(), format!("{}: {t}", v.instance.title))),
                _ => Some((req.clone(), "(not a checklist of this run)".to_string())),
            }
        })
        .collect()
}

/// Run `run` waits for checklist items: queue it again (its pending decision request, if any,
/// is cancelled) so the engine checks once more. A no-op for a run not held.
async fn requeue_held(tx: &mut Tx, run: i64, instance: i64) -> anyhow::Result<()> {
    let held = sqlx::query(
        "SELECT held_step FROM runs WHERE id = $1 AND state = 'needs_attention' \
         AND held_step IS NOT NULL",
    )
    .bind(run)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(held) = held else {
        return Ok(());
    };
    let step: i64 = held.try_get("held_step")?;
    if let Some(req) = Store::pending_request_tx(tx, run).await? {
        super::runs::close_request(tx, req.id, "cancelled", None, Some("checklist ticked")).await?;
    }
    sqlx::query(
        "UPDATE runs SET state = 'queued', held_step = NULL, detail = NULL, updated_at = $1 \
         WHERE id = $2",
    )
    .bind(now_ms())
    .bind(run)
    .execute(&mut **tx)
    .await?;
    audit::append(
        tx,
        &Actor::system(),
        "run.requeued",
        Some(run),
        serde_json::json!({ "step": step, "instance": instance, "reason": "checklist ticked" }),
    )
    .await?;
    Ok(())
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
                run: None,
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
        let ticks = ticks_of(self.pool(), id).await?;
        Ok(Some(ChecklistView { instance, ticks }))
    }

    /// The checklists opened for run `run`, by id.
    pub async fn run_checklists(&self, run: i64) -> anyhow::Result<Vec<ChecklistView>> {
        let mut conn = self.pool().acquire().await?;
        run_checklists_in(&mut conn, run).await
    }

    /// Toggles item `item` of instance `id` for `actor` (who must be a person) and appends
    /// the `checklist.tick` audit row, in one transaction.
    pub async fn toggle_tick(&self, id: i64, item: &str, actor: &Actor) -> anyhow::Result<Toggle> {
        self.set_tick(id, item, actor, None).await
    }

    /// Like [`Store::toggle_tick`], but to a given state (`Some(true)`: ticked): an item
    /// already in that state is left alone ([`Toggle::Already`]; nothing audited).
    pub async fn set_tick(
        &self,
        id: i64,
        item: &str,
        actor: &Actor,
        want: Option<bool>,
    ) -> anyhow::Result<Toggle> {
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
        if let Some(want) = want {
            let ticked = sqlx::query(
                "SELECT 1 AS x FROM checklist_ticks WHERE instance_id = $1 AND item_id = $2",
            )
            .bind(id)
            .bind(item.to_string())
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
            if ticked == want {
                return Ok(Toggle::Already(want));
            }
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
        if let Some(run) = instance.run {
            requeue_held(&mut tx, run, id).await?;
        }
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
