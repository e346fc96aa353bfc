//! The Discord front-end: `POST /discord/interactions` (verified with Ed25519; PING answered
//! with PONG; `/dr` commands mapped to the shared grammar and answered ephemerally), and
//! `drbot discord register` for the `/dr` application command.

pub mod api;
pub mod batch;
pub mod broadcast;
pub mod checklist;
pub mod commands;
pub mod followup;
pub mod interaction;
pub mod sync;
pub mod text;
pub mod verify;

use std::sync::Arc;

use axum::{
    Json, Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};
use serde_json::json;

use crate::{
    actor::Actor,
    app::App,
    config::{DiscordConfig, Platform},
    dispatch,
};

use interaction::Interaction;

/// Interaction types and response types (Discord's numbers).
const PING: u64 = 1;
const APPLICATION_COMMAND: u64 = 2;
const MESSAGE_COMPONENT: u64 = 3;
const UPDATE_MESSAGE: u64 = 7;
const PONG: u64 = 1;
const CHANNEL_MESSAGE_WITH_SOURCE: u64 = 4;
const DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE: u64 = 5;
/// Interaction response: acknowledge a click now, edit its message later.
const DEFERRED_UPDATE_MESSAGE: u64 = 6;
/// Message flag: only the invoking user sees it.
pub const EPHEMERAL: u64 = 64;

/// Discord's state in the app.
pub struct Discord {
    key: batch::Key,
    /// Verifies signatures in batches; started on the first request (inside the runtime).
    verifier: std::sync::OnceLock<batch::Verifier>,
    /// API prefix.
    pub api_base_url: String,
    /// Application id.
    pub application_id: String,
    /// Bot token.
    pub bot_token: crate::config::Secret,
    /// REST client for channel messages and interaction webhooks.
    pub api: api::DiscordApi,
    /// A command slower than this gets a deferred response first.
    pub defer_after: std::time::Duration,
    /// Interaction tokens are used this long; later follow-ups go to the channel.
    pub followup_window: std::time::Duration,
    /// Interactions that started runs, for follow-ups to their requesters.
    pub origins: followup::Origins,
    /// Signed requests accepted recently: the same one again is a replay.
    memory: crate::replay::Memory,
}

impl Discord {
    /// From `[discord]` (already validated by `check-config`).
    pub fn new(cfg: &DiscordConfig) -> Option<Arc<Discord>> {
        Some(Arc::new(Discord {
            key: batch::Key::new(verify::public_key(&cfg.public_key)?)?,
            verifier: std::sync::OnceLock::new(),
            api_base_url: cfg.api_base_url.trim_end_matches('/').to_string(),
            application_id: cfg.application_id.clone(),
            bot_token: cfg.bot_token.clone(),
            api: api::DiscordApi::new(&cfg.api_base_url, cfg.bot_token.clone()),
            defer_after: humantime::parse_duration(&cfg.defer_after).ok()?,
            followup_window: humantime::parse_duration(&cfg.followup_window).ok()?,
            origins: followup::Origins::default(),
            memory: crate::replay::Memory::default(),
        }))
    }
}

/// Routes, present when `[discord]` is configured.
pub fn routes() -> Router<App> {
    Router::new().route("/discord/interactions", post(interactions))
}

fn ephemeral(text: String) -> Response {
    Json(json!({ "type": CHANNEL_MESSAGE_WITH_SOURCE, "data": { "content": text, "flags": EPHEMERAL } }))
        .into_response()
}

async fn interactions(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(discord) = app.discord.clone() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if let Err(why) = check(&discord, &headers, &body).await {
        tracing::warn!(reason = why.as_str(), "refused a Discord interaction");
        return (StatusCode::UNAUTHORIZED, "invalid request signature\n").into_response();
    }
    let Some(ix) = Interaction::parse(&body) else {
        return (StatusCode::BAD_REQUEST, "malformed interaction\n").into_response();
    };
    match ix.kind {
        Some(PING) => Json(json!({ "type": PONG })).into_response(),
        Some(APPLICATION_COMMAND) => command(&app, &discord, &ix).await,
        Some(MESSAGE_COMPONENT) => component(&app, &discord, &ix).await,
        _ => ephemeral(text::MALFORMED.into()),
    }
}

/// Signature first (so a forged request is told nothing more), then the timestamp, then the
/// replay memory (a signature is the same for the same timestamp and body, so a replay
/// carries the same one: only the first is handled).
async fn check(
    discord: &Discord,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), verify::Rejection> {
    let signed = verify::signed(headers, body)?;
    let verifier = discord
        .verifier
        .get_or_init(|| batch::Verifier::start(discord.key.clone()));
    if !verifier.verify(&signed.msg, &signed.sig).await {
        return Err(verify::Rejection::BadSignature);
    }
    let now = chrono::Utc::now().timestamp();
    verify::fresh(signed.ts, now)?;
    match discord.memory.record(&hex::encode(signed.sig), "", now) {
        crate::replay::Seen::New => Ok(()),
        _ => Err(verify::Rejection::Replay),
    }
}

/// `/dr …`: answered at once when the work is quick, else with a deferred response whose
/// answer is edited in through the interaction's webhook when the work is done.
async fn command(app: &App, discord: &Arc<Discord>, ix: &Interaction<'_>) -> Response {
    let (Some(user), Ok(text)) = (ix.user_id(), commands::to_text(&ix.data)) else {
        return ephemeral(text::MALFORMED.into());
    };
    let channel = ix.channel_id().unwrap_or("").to_string();
    let origin = ix.token().map(|t| followup::Origin {
        token: crate::config::Secret::new(t),
        at: std::time::Instant::now(),
        channel: channel.clone(),
        user: user.to_string(),
    });
    let actor = Actor::chat(&app.settings, Platform::Discord, user, &channel);
    let work = {
        let (app, origin) = (app.clone(), origin.clone());
        let channel = channel.clone();
        async move {
            let reply = dispatch::handle(&app, &actor, &text).await;
            if let crate::reply::Reply::Requested(v) = &reply {
                if let (Some(d), Some(o)) = (&app.discord, origin) {
                    d.origins.insert(v.run.id, o);
                }
                if v.request.as_ref().is_some_and(|r| r.state == "pending") && !channel.is_empty() {
                    let (app2, run, channel) = (app.clone(), v.run.id, channel.clone());
                    tokio::spawn(async move { sync::ensure_card(&app2, run, &channel).await });
                }
            }
            if let crate::reply::Reply::Checklist(v) = &reply
                && !channel.is_empty()
            {
                checklist::post(&app, v.instance.id, &channel).await;
            }
            text::command_reply(&reply)
        }
    };
    let mut work = Box::pin(work);
    // Quick commands (help, status, errors) finish on their first poll: answered here, with
    // no task to spawn. `defer_after = "0s"` defers every command.
    if !discord.defer_after.is_zero()
        && let std::task::Poll::Ready(content) = futures::poll!(&mut work)
    {
        return ephemeral(content);
    }
    // Otherwise the work runs in its own task (no await between the poll and the spawn, so
    // a dropped connection cannot cut it short) and is answered in time or deferred.
    let mut work = tokio::spawn(work);
    let answer = |r: Result<String, tokio::task::JoinError>| {
        r.unwrap_or_else(|e| {
            tracing::error!(error = %e, "a Discord command's handler failed");
            text::command_reply(&dispatch::internal(
                anyhow::anyhow!("handler failed"),
                "answering a Discord command",
            ))
        })
    };
    if !discord.defer_after.is_zero()
        && let Ok(done) = tokio::time::timeout(discord.defer_after, &mut work).await
    {
        return ephemeral(answer(done));
    }
    let Some(origin) = origin else {
        // No token to answer later with: wait (Discord may already have given up).
        return ephemeral(answer(work.await));
    };
    let discord = discord.clone();
    let interaction = ix.id().unwrap_or("").to_string();
    tokio::spawn(async move {
        let content = answer(work.await);
        let body = json!({ "content": content, "allowed_mentions": { "parse": [] } });
        let fallback = format!("<@{}> {content}", origin.user);
        let key = format!("deferred:{interaction}");
        if let Err(e) = followup::deliver(&discord, &origin, true, body, fallback, &key).await {
            tracing::warn!(
                error = format!("{e:#}"),
                "answering a deferred Discord command failed"
            );
        }
    });
    Json(json!({ "type": DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE, "data": { "flags": EPHEMERAL } }))
        .into_response()
}

/// What a click is answered with.
enum ClickAnswer {
    /// The clicked message, re-rendered.
    Update(serde_json::Value),
    /// A message for the clicker alone (a refusal).
    Ephemeral(String),
}

impl ClickAnswer {
    fn response(self) -> Response {
        match self {
            ClickAnswer::Update(data) => {
                Json(json!({ "type": UPDATE_MESSAGE, "data": data })).into_response()
            }
            ClickAnswer::Ephemeral(text) => ephemeral(text),
        }
    }
}

/// A button click: never trusted by its custom_id alone (the card it was clicked on must be
/// the named run's card); refusals are answered ephemerally, successes update the card. Like a
/// command, a click not handled within `discord.defer_after` (a store slow to answer during an
/// outage) is acknowledged at once (DEFERRED_UPDATE_MESSAGE), and its answer follows through
/// the interaction's webhook: Discord gives up on an answer after 3 s.
async fn component(app: &App, discord: &Arc<Discord>, ix: &Interaction<'_>) -> Response {
    let (Some(user), Some(channel), Some(message)) =
        (ix.user_id(), ix.channel_id(), ix.message_id())
    else {
        return ephemeral(text::MALFORMED.into());
    };
    let custom_id = ix.custom_id().unwrap_or_default().to_string();
    let (user, channel, message) = (user.to_string(), channel.to_string(), message.to_string());
    let work = {
        let (app, channel) = (app.clone(), channel.clone());
        let user = user.clone();
        async move { click_answer(&app, &user, &channel, &message, &custom_id).await }
    };
    // In its own task: a dropped connection never cuts a click short.
    let mut work = tokio::spawn(work);
    let answer = |r: Result<ClickAnswer, tokio::task::JoinError>| {
        r.unwrap_or_else(|e| {
            tracing::error!(error = %e, "a Discord click's handler failed");
            ClickAnswer::Ephemeral(text::command_reply(&dispatch::internal(
                anyhow::anyhow!("handler failed"),
                "answering a Discord click",
            )))
        })
    };
    if !discord.defer_after.is_zero()
        && let Ok(done) = tokio::time::timeout(discord.defer_after, &mut work).await
    {
        return answer(done).response();
    }
    let Some(token) = ix.token() else {
        return answer(work.await).response();
    };
    let origin = followup::Origin {
        token: crate::config::Secret::new(token),
        at: std::time::Instant::now(),
        channel,
        user,
    };
    let (discord, interaction) = (discord.clone(), ix.id().unwrap_or("").to_string());
    tokio::spawn(async move {
        let sent = match answer(work.await) {
            // The clicked message, edited in place (asked again while Discord does not know
            // it yet).
            ClickAnswer::Update(data) => followup::edit_original(&discord, &origin, &data).await,
            ClickAnswer::Ephemeral(content) => {
                let body = json!({
                    "content": content,
                    "flags": EPHEMERAL,
                    "allowed_mentions": { "parse": [] },
                });
                let fallback = format!("<@{}> {content}", origin.user);
                let key = format!("click:{interaction}");
                followup::deliver(&discord, &origin, false, body, fallback, &key).await
            }
        };
        if let Err(e) = sent {
            tracing::warn!(
                error = format!("{e:#}"),
                "answering a deferred Discord click failed"
            );
        }
    });
    Json(json!({ "type": DEFERRED_UPDATE_MESSAGE })).into_response()
}

/// Handles one click; what to answer it with.
async fn click_answer(
    app: &App,
    user: &str,
    channel: &str,
    message: &str,
    custom_id: &str,
) -> ClickAnswer {
    let actor = Actor::chat(&app.settings, Platform::Discord, user, channel);
    if let Some(region) = crate::monitor::parse_proposal(custom_id) {
        let reply = dispatch::propose_failover(app, &actor, region).await;
        return ClickAnswer::Ephemeral(text::command_reply(&reply));
    }
    if let Some(tick) = crate::checklists::tick::TickClick::parse(custom_id) {
        return tick_click(app, &actor, channel, message, &tick).await;
    }
    let Some(click) = dispatch::Click::parse(custom_id) else {
        return ClickAnswer::Ephemeral(text::MALFORMED.into());
    };
    let reply = crate::cards::click_on_card(app, &actor, "discord", channel, message, &click).await;
    if matches!(
        reply,
        crate::reply::Reply::Refused(_) | crate::reply::Reply::Internal { .. }
    ) {
        return ClickAnswer::Ephemeral(text::command_reply(&reply));
    }
    match crate::approvals::view(&app.store, click.run).await {
        Ok(Some(view)) => ClickAnswer::Update(text::card(&view)),
        _ => ClickAnswer::Ephemeral(text::command_reply(&reply)),
    }
}

/// A checklist button: ticks through [`crate::checklists::tick`], then answers with the clicked
/// message re-rendered (the other messages of the instance are edited in the background).
async fn tick_click(
    app: &App,
    actor: &Actor,
    channel: &str,
    message: &str,
    tick: &crate::checklists::tick::TickClick,
) -> ClickAnswer {
    let reply = crate::checklists::tick::click(app, actor, "discord", channel, message, tick).await;
    if !matches!(reply, crate::reply::Reply::Ticked { .. }) {
        return ClickAnswer::Ephemeral(text::command_reply(&reply));
    }
    let part = match app
        .store
        .checklist_message("discord", channel, message)
        .await
    {
        Ok(Some(m)) => m.part,
        _ => 0,
    };
    let (app2, id, skip) = (app.clone(), tick.instance, message.to_string());
    tokio::spawn(async move { checklist::refresh_others(&app2, id, &skip).await });
    match checklist::part_body(app, tick.instance, part).await {
        Ok(Some(body)) => ClickAnswer::Update(body),
        _ => ClickAnswer::Ephemeral(text::command_reply(&reply)),
    }
}

/// `drbot discord register [--guild <id>]`: creates or replaces the `/dr` command.
pub async fn register(app: &App, guild: Option<u64>) -> anyhow::Result<String> {
    let discord = app
        .discord
        .clone()
        .ok_or_else(|| anyhow::anyhow!("[discord] is not configured"))?;
    let url = match guild {
        Some(g) => format!(
            "{}/applications/{}/guilds/{g}/commands",
            discord.api_base_url, discord.application_id
        ),
        None => format!(
            "{}/applications/{}/commands",
            discord.api_base_url, discord.application_id
        ),
    };
    let regions: Vec<String> = app.settings.config.regions.keys().cloned().collect();
    let body = json!([commands::definition(&regions)]);
    let r = reqwest::Client::new()
        .put(&url)
        .header(
            "Authorization",
            format!("Bot {}", discord.bot_token.expose()),
        )
        .json(&body)
        .send()
        .await
        // With its causes (connection refused, DNS, TLS): reqwest's own text names none.
        .map_err(|e| anyhow::Error::new(e).context("Discord unreachable"))?;
    let status = r.status();
    if !status.is_success() {
        let text = r.text().await.unwrap_or_default();
        anyhow::bail!(
            "Discord refused the command registration (HTTP {status}): {}",
            text.chars().take(300).collect::<String>()
        );
    }
    Ok(match guild {
        Some(g) => format!("registered /dr in guild {g}"),
        None => {
            "registered /dr globally (Discord may take up to an hour to show it everywhere)".into()
        }
    })
}
