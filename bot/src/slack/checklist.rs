//! Checklists in Slack: posts a new instance as a Block Kit message with a button per item in
//! the channel `/dr checklist` was typed in, records the message so clicks can be matched to
//! it, and re-renders every message of an instance after a tick.

use super::text;
use crate::{app::App, store::checklists::ChecklistMessage};

/// Posts instance `id` to `channel` once, under the key `checklist:<id>:<channel>` claimed in
/// `outbound` (a card sync and a command's own post racing each other post it once; the one
/// that posts records it) and records the message.
pub async fn post(app: &App, id: i64, channel: &str) {
    let res = async {
        let Some(slack) = app.slack.clone() else {
            return Ok(());
        };
        let Some(view) = app.store.checklist(id).await? else {
            return Ok(());
        };
        let key = format!("checklist:{id}:{channel}");
        let Some(ts) = super::sync::post_once(
            app,
            &slack,
            &key,
            channel,
            None,
            &text::checklist_text(&view),
            &text::checklist(&view),
        )
        .await?
        else {
            // Another task or process holds the claim: it posts and records the message.
            return Ok(());
        };
        app.store
            .record_checklist_message(
                "slack",
                &ChecklistMessage {
                    channel: channel.to_string(),
                    message_id: ts,
                    instance: id,
                    part: 0,
                },
            )
            .await
    };
    if let Err(e) = res.await {
        tracing::warn!(
            checklist = id,
            error = format!("{e:#}"),
            "posting a Slack checklist failed"
        );
    }
}

/// Re-renders every Slack message of instance `id`.
pub async fn refresh(app: &App, id: i64) {
    let res = async {
        let Some(slack) = app.slack.clone() else {
            return Ok(());
        };
        let _serial = app.checklist_locks.lock(id).await;
        let Some(view) = app.store.checklist(id).await? else {
            return Ok(());
        };
        let (txt, blocks) = (text::checklist_text(&view), text::checklist(&view));
        // One message that cannot be updated (deleted, the channel archived) never keeps the
        // others stale.
        for m in app.store.checklist_messages("slack", id).await? {
            if let Err(e) = slack
                .api
                .update_message(&m.channel, &m.message_id, &txt, &blocks)
                .await
            {
                tracing::warn!(
                    checklist = id,
                    channel = %m.channel,
                    message = %m.message_id,
                    error = %e,
                    "updating a Slack checklist message failed"
                );
            }
        }
        anyhow::Ok(())
    };
    if let Err(e) = res.await {
        tracing::warn!(
            checklist = id,
            error = format!("{e:#}"),
            "updating a Slack checklist failed"
        );
    }
}
