//! Keeps Discord cards current: each run that waits for a person (approval, gate, decision)
//! gets a card in the Discord incident channel, edited in place as the run moves, whatever
//! platform the request or the approvals came from.

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::{api::DiscordError, text};
use crate::{
    app::App,
    approvals,
    store::{now_ms, runs::RunState},
};

async fn cards_of(app: &App, run: i64) -> anyhow::Result<Vec<(String, String)>> {
    app.store.cards_of("discord", run).await
}

async fn record(app: &App, channel: &str, id: &str, run: i64) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO messages (platform, channel, message_id, run_id, created_at) \
         VALUES ('discord', $1, $2, $3, $4) ON CONFLICT DO NOTHING",
    )
    .bind(channel.to_string())
    .bind(id.to_string())
    .bind(run)
    .bind(now_ms())
    .execute(app.store.pool())
    .await?;
    Ok(())
}

/// Posts the run's card to `channel` (where `/dr` was typed) unless it already has one there.
pub async fn ensure_card(app: &App, run: i64, channel: &str) {
    let res = async {
        let Some(discord) = app.discord.clone() else {
            return Ok(());
        };
        let _serial = app.card_locks.lock(run).await;
        if cards_of(app, run).await?.iter().any(|(c, _)| c == channel) {
            return Ok(());
        }
        let Some(view) = approvals::view(&app.store, run).await? else {
            return Ok(());
        };
        let key = format!("card:{run}:{channel}");
        let id = discord
            .api
            .post_message(channel, text::card(&view), &key)
            .await?;
        record(app, channel, &id, run).await
    };
    if let Err(e) = res.await {
        tracing::warn!(
            run,
            error = format!("{e:#}"),
            "posting the Discord card failed"
        );
    }
}

/// Posts the run's card to the incident channel if it has none, else edits it in place;
/// false when that failed (logged).
pub async fn sync_run(app: &App, run: i64) -> bool {
    if let Err(e) = sync_inner(app, run).await {
        tracing::warn!(
            run,
            error = format!("{e:#}"),
            "updating the Discord card failed"
        );
        return false;
    }
    true
}

async fn sync_inner(app: &App, run: i64) -> anyhow::Result<()> {
    let (Some(discord), Some(cfg)) = (app.discord.clone(), app.settings.config.discord.as_ref())
    else {
        return Ok(());
    };
    let _serial = app.card_locks.lock(run).await;
    let Some(view) = approvals::view(&app.store, run).await? else {
        return Ok(());
    };
    // Not told now: the card is still synced, and the follow loop syncs again later.
    let told = super::followup::notify_requester(app, &view).await;
    let body = text::card(&view);
    let cards = cards_of(app, run).await?;
    let waits = matches!(
        view.run.state,
        RunState::AwaitingApproval | RunState::AwaitingGate | RunState::NeedsAttention
    );
    let ch = &cfg.incident_channel;
    if waits && !cards.iter().any(|(c, _)| c == ch) {
        let id = discord
            .api
            .post_message(ch, body.clone(), &format!("card:{run}:{ch}"))
            .await?;
        record(app, ch, &id, run).await?;
    }
    for (ch, id) in cards {
        match discord.api.edit_message(&ch, &id, &body).await {
            Ok(()) => {}
            Err(DiscordError::Gone) => {
                let new_id = discord
                    .api
                    .post_message(&ch, body.clone(), &format!("card:{run}:{ch}:{id}"))
                    .await?;
                app.store.replace_card("discord", &ch, &id, &new_id).await?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    post_checklists(app, run).await?;
    told.context("telling the requester")
}

/// Posts each checklist opened for run `run` (a runbook's `checklists`) in each channel that
/// has the run's card, once per instance and channel (Discord's enforced nonce backs this).
async fn post_checklists(app: &App, run: i64) -> anyhow::Result<()> {
    if app.discord.is_none() {
        return Ok(());
    }
    let views = app.store.run_checklists(run).await?;
    if views.is_empty() {
        return Ok(());
    }
    let cards = cards_of(app, run).await?;
    for v in &views {
        let have = app
            .store
            .checklist_messages("discord", v.instance.id)
            .await?;
        for (ch, _) in &cards {
            if !have.iter().any(|m| &m.channel == ch) {
                super::checklist::post(app, v.instance.id, ch).await;
            }
        }
    }
    Ok(())
}

/// Posts a finished step's details as a reply to each of the run's cards.
async fn step_details(app: &App, run: i64, idx: usize) -> anyhow::Result<()> {
    let Some(discord) = app.discord.clone() else {
        return Ok(());
    };
    let steps = app.store.steps(run).await?;
    let Some(s) = steps.iter().find(|s| s.idx == idx as i64) else {
        return Ok(());
    };
    let content = text::step_detail(
        &s.name,
        s.idx,
        s.state,
        s.summary.as_deref(),
        s.error.as_deref(),
        s.log.as_deref(),
    );
    for (ch, id) in cards_of(app, run).await? {
        let body = serde_json::json!({
            "content": content,
            "message_reference": { "message_id": id, "fail_if_not_exists": false },
            "allowed_mentions": { "parse": [] },
        });
        let key = format!("step:{run}:{idx}:{}:{}:{ch}", s.attempts, s.state.as_str());
        discord.api.post_message(&ch, body, &key).await?;
    }
    Ok(())
}

/// Keeps Discord cards current until `shutdown`; step details go out as replies to the cards.
pub async fn run_loop(app: App, shutdown: CancellationToken) {
    let on_event = |app: &App, e: &crate::events::Event| {
        if let crate::events::Event::StepFinished { run_id, idx, .. } = *e {
            let app = app.clone();
            tokio::spawn(async move {
                if let Err(e) = step_details(&app, run_id, idx).await {
                    tracing::warn!(
                        run = run_id,
                        error = format!("{e:#}"),
                        "posting Discord step details failed"
                    );
                }
                // The step may have ticked checklist items (`ticks`).
                match app.store.run_checklists(run_id).await {
                    Ok(views) => {
                        for v in views {
                            super::checklist::refresh_others(&app, v.instance.id, "").await;
                        }
                    }
                    Err(e) => tracing::warn!(
                        run = run_id,
                        error = format!("{e:#}"),
                        "reading the run's checklists failed"
                    ),
                }
            });
        }
    };
    crate::cards::follow(app, shutdown, "Discord", on_event, |app, run| async move {
        sync_run(&app, run).await
    })
    .await
}
