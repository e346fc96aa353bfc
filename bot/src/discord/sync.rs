//! Keeps Discord cards current: each run that waits for a person (approval, gate, decision)
//! gets a card in the Discord incident channel, edited in place as the run moves, whatever
//! platform the request or the approvals came from.

use tokio_util::sync::CancellationToken;

use super::{api::DiscordError, text};
use crate::{
    app::App,
    approvals,
    store::{now_ms, runs::RunState},
};

/// The run whose card is message `id` in `channel`, if it is one of drbot's cards.
pub async fn card_run(app: &App, channel: &str, id: &str) -> anyhow::Result<Option<i64>> {
    app.store.card_run("discord", channel, id).await
}

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

/// Posts the run's card to the incident channel if it has none, else edits it in place.
pub async fn sync_run(app: &App, run: i64) {
    if let Err(e) = sync_inner(app, run).await {
        tracing::warn!(
            run,
            error = format!("{e:#}"),
            "updating the Discord card failed"
        );
    }
}

async fn sync_inner(app: &App, run: i64) -> anyhow::Result<()> {
    let (Some(discord), Some(cfg)) = (app.discord.clone(), app.settings.config.discord.as_ref())
    else {
        return Ok(());
    };
    let Some(view) = approvals::view(&app.store, run).await? else {
        return Ok(());
    };
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
                    .post_message(&ch, body.clone(), &format!("card:{run}:{ch}:{}", now_ms()))
                    .await?;
                sqlx::query(
                    "UPDATE messages SET message_id = $1 WHERE platform = 'discord' AND channel = $2 AND message_id = $3",
                )
                .bind(new_id)
                .bind(ch.clone())
                .bind(id.clone())
                .execute(app.store.pool())
                .await?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Keeps Discord cards current until `shutdown`.
pub async fn run_loop(app: App, shutdown: CancellationToken) {
    crate::cards::follow(
        app,
        shutdown,
        "Discord",
        |_, _| {},
        |app, run| async move { sync_run(&app, run).await },
    )
    .await
}
