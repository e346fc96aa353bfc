//! Checklists in Discord: posts a new instance in the channel `/dr checklist` was typed in, as
//! one message per 25 items (5 action rows of 5 buttons), records each message and its part so
//! clicks can be matched to it, and re-renders the other messages of an instance after a tick
//! (the clicked one is updated by the interaction's answer).

use super::text;
use crate::{app::App, store::checklists::ChecklistMessage};

/// Posts instance `id` to `channel` (each part once, by Discord's enforced nonce) and records
/// the messages.
pub async fn post(app: &App, id: i64, channel: &str) {
    let res = async {
        let Some(discord) = app.discord.clone() else {
            return Ok(());
        };
        let Some(view) = app.store.checklist(id).await? else {
            return Ok(());
        };
        for (part, body) in text::checklist_parts(&view).into_iter().enumerate() {
            let key = format!("checklist:{id}:{channel}:{part}");
            let message_id = discord.api.post_message(channel, body, &key).await?;
            app.store
                .record_checklist_message(
                    "discord",
                    &ChecklistMessage {
                        channel: channel.to_string(),
                        message_id,
                        instance: id,
                        part: part as i64,
                    },
                )
                .await?;
        }
        anyhow::Ok(())
    };
    if let Err(e) = res.await {
        tracing::warn!(
            checklist = id,
            error = format!("{e:#}"),
            "posting a Discord checklist failed"
        );
    }
}

/// The body of part `part` of instance `id` as it is now.
pub async fn part_body(app: &App, id: i64, part: i64) -> anyhow::Result<Option<serde_json::Value>> {
    let Some(view) = app.store.checklist(id).await? else {
        return Ok(None);
    };
    Ok(text::checklist_parts(&view).into_iter().nth(part as usize))
}

/// Re-renders every Discord message of instance `id` except `skip` (the message clicked).
pub async fn refresh_others(app: &App, id: i64, skip: &str) {
    let res = async {
        let Some(discord) = app.discord.clone() else {
            return Ok(());
        };
        let _serial = app.checklist_locks.lock(id).await;
        let Some(view) = app.store.checklist(id).await? else {
            return Ok(());
        };
        let parts = text::checklist_parts(&view);
        for m in app.store.checklist_messages("discord", id).await? {
            if m.message_id == skip {
                continue;
            }
            // One message that cannot be edited (deleted, its channel gone) never keeps the
            // others stale.
            if let Some(body) = parts.get(m.part as usize)
                && let Err(e) = discord
                    .api
                    .edit_message(&m.channel, &m.message_id, body)
                    .await
            {
                tracing::warn!(
                    checklist = id,
                    channel = %m.channel,
                    message = %m.message_id,
                    error = %e,
                    "updating a Discord checklist message failed"
                );
            }
        }
        anyhow::Ok(())
    };
    if let Err(e) = res.await {
        tracing::warn!(
            checklist = id,
            error = format!("{e:#}"),
            "updating a Discord checklist failed"
        );
    }
}
