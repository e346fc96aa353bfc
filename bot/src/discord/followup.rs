//! Interaction-token follow-ups: the answer to a slow command (after a deferred response) and
//! the message telling the person who started a run how it ended. The token is valid for 15
//! minutes; within `discord.followup_window` drbot uses it, later (or when Discord says the
//! token expired) it falls back to a channel message that mentions the person.
//!
//! Tokens live only in memory: after a restart, follow-ups go to the channel.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use super::{Discord, EPHEMERAL, api::DiscordError, text};
use crate::{app::App, config::Secret, reply::RunView, store::runs::RunState};

/// Where a command came from: the interaction to answer and the person to tell.
#[derive(Clone)]
pub struct Origin {
    /// The interaction token (a credential: never logged).
    pub token: Secret,
    /// When the interaction arrived.
    pub at: Instant,
    /// Channel the command was typed in.
    pub channel: String,
    /// Discord user id of the person who typed it.
    pub user: String,
}

/// What a requester was told of: the run's state and how many of its steps had ended, so that
/// a second pause in the same state (a second gate, another interrupted step) is news too.
type Told = (RunState, usize);

/// Runs started from Discord, by run id, with the last state their requester was told of.
#[derive(Default)]
pub struct Origins(Mutex<HashMap<i64, (Origin, Option<Told>)>>);

impl Origins {
    /// Remembers that `run` was started by the interaction `origin`.
    pub fn insert(&self, run: i64, origin: Origin) {
        if let Ok(mut m) = self.0.lock() {
            // Forget origins whose tokens are long dead, so the map stays small.
            m.retain(|_, (o, _)| o.at.elapsed() < Duration::from_secs(24 * 3600));
            m.insert(run, (origin, None));
        }
    }

    /// The origin of `run` if its requester has not yet been told about `state`, with what
    /// they were told before (for [`Origins::release`]).
    fn claim(&self, run: i64, state: Told) -> Option<(Origin, Option<Told>)> {
        let mut m = self.0.lock().ok()?;
        let (origin, told) = m.get_mut(&run)?;
        if *told == Some(state) {
            return None;
        }
        let before = told.replace(state);
        let origin = origin.clone();
        if !state.0.is_active() {
            m.remove(&run);
        }
        Some((origin, before))
    }

    /// Undoes a claim whose message could not be delivered, so the next sync tries again
    /// (unless a newer state was claimed meanwhile).
    fn release(&self, run: i64, origin: Origin, state: Told, before: Option<Told>) {
        if let Ok(mut m) = self.0.lock() {
            match m.get_mut(&run) {
                Some((_, told)) if *told == Some(state) => *told = before,
                Some(_) => {}
                None => {
                    m.insert(run, (origin, before));
                }
            }
        }
    }
}

/// How long after an interaction its webhook's "unknown" is taken for "not registered yet"
/// rather than "expired".
const NOT_YET_KNOWN: Duration = Duration::from_secs(8);

/// Edits the interaction's `@original` message to `body`, asking again for a few seconds while
/// Discord does not know it yet (just after a deferred answer). No channel fallback: for a
/// clicked card, the card sync edits it too.
pub async fn edit_original(
    discord: &Discord,
    origin: &Origin,
    body: &Value,
) -> Result<(), DiscordError> {
    let mut pause = Duration::from_millis(250);
    loop {
        match discord
            .api
            .edit_original(&discord.application_id, &origin.token, body)
            .await
        {
            Err(DiscordError::Gone) if origin.at.elapsed() < NOT_YET_KNOWN => {
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            other => return other,
        }
    }
}

/// Sends `body` through the interaction's webhook while the token is fresh (`edit` replaces
/// the deferred answer, else a follow-up message is added); otherwise, or if the webhook
/// fails for any reason (an expired token, an outage), posts `fallback` to the origin channel:
/// told twice beats never told. `key` makes the channel post idempotent.
pub async fn deliver(
    discord: &Discord,
    origin: &Origin,
    edit: bool,
    body: Value,
    fallback: String,
    key: &str,
) -> Result<(), DiscordError> {
    let mut pause = Duration::from_millis(250);
    while origin.at.elapsed() < discord.followup_window {
        let sent = if edit {
            discord
                .api
                .edit_original(&discord.application_id, &origin.token, &body)
                .await
        } else {
            discord
                .api
                .followup(&discord.application_id, &origin.token, &body)
                .await
        };
        match sent {
            Ok(()) => return Ok(()),
            // Just after the deferred answer, Discord may not know `@original` yet (Unknown
            // Webhook): asked again for a few seconds before the answer goes to the channel,
            // where everyone would read what was meant for one person.
            Err(DiscordError::Gone) if origin.at.elapsed() < NOT_YET_KNOWN => {
                tokio::time::sleep(pause).await;
                pause *= 2;
                continue;
            }
            Err(DiscordError::Gone) => {
                tracing::info!("Discord interaction token expired: answering in the channel")
            }
            Err(e) => tracing::warn!(
                error = format!("{e:#}"),
                "Discord interaction follow-up failed: answering in the channel"
            ),
        }
        break;
    }
    let msg = json!({
        "content": fallback,
        "allowed_mentions": { "users": [origin.user] },
    });
    discord
        .api
        .post_message(&origin.channel, msg, key)
        .await
        .map(|_| ())
}

/// Tells the requester of a Discord-started run that it ended or waits for a person, once per
/// state. An error means they were not told; the next call tries again.
pub async fn notify_requester(app: &App, view: &RunView) -> Result<(), DiscordError> {
    let Some(discord) = app.discord.clone() else {
        return Ok(());
    };
    let state = view.run.state;
    let tell =
        !state.is_active() || matches!(state, RunState::NeedsAttention | RunState::AwaitingGate);
    if !tell || view.run.platform != "discord" {
        return Ok(());
    }
    let ended = view
        .steps
        .iter()
        .filter(|s| s.finished_at.is_some())
        .count();
    let told = (state, ended);
    let Some((origin, before)) = discord.origins.claim(view.run.id, told) else {
        return Ok(());
    };
    let body = json!({
        "content": text::outcome(view, None),
        "flags": EPHEMERAL,
        "allowed_mentions": { "parse": [] },
    });
    let fallback = text::outcome(view, Some(&origin.user));
    let key = format!("outcome:{}:{}:{ended}", view.run.id, state.as_str());
    if let Err(e) = deliver(&discord, &origin, false, body, fallback, &key).await {
        tracing::warn!(
            run = view.run.id,
            error = format!("{e:#}"),
            "telling the requester on Discord failed"
        );
        discord.origins.release(view.run.id, origin, told, before);
        return Err(e);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Origin {
        Origin {
            token: Secret::new("t"),
            at: Instant::now(),
            channel: "c".into(),
            user: "u".into(),
        }
    }

    /// A second gate (or a second interrupted step) is told too: the same state after more
    /// steps ended is news; the same state again is not.
    #[test]
    fn a_second_pause_in_the_same_state_is_news() {
        let o = Origins::default();
        o.insert(7, origin());
        assert!(o.claim(7, (RunState::AwaitingGate, 2)).is_some());
        assert!(o.claim(7, (RunState::AwaitingGate, 2)).is_none());
        assert!(o.claim(7, (RunState::AwaitingGate, 5)).is_some());
        assert!(o.claim(7, (RunState::Succeeded, 9)).is_some());
        assert!(
            o.claim(7, (RunState::Succeeded, 9)).is_none(),
            "forgotten once ended"
        );
    }
}
