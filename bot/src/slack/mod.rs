//! The Slack front-end: `POST /slack/commands` (slash commands) and `POST /slack/interactions`
//! (button clicks), verified, acknowledged at once, and routed through the same dispatcher
//! and approval engine as every other front-end. Cards are posted and kept current by
//! [`sync`].

pub mod api;
pub mod checklist;
pub mod slash;
pub mod socket;
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
use slack_morphism::prelude::{SlackInteractionBlockActionsEvent, SlackInteractionEvent};

use crate::{
    actor::Actor,
    app::App,
    config::{Platform, SlackConfig},
    dispatch::{self, Click},
    reply::Reply,
};

/// Slack's state in the app: API client, verifier, replay memory.
pub struct Slack {
    /// Web API client.
    pub api: api::SlackApi,
    verifier: slack_morphism::signature_verifier::SlackEventSignatureVerifier,
    memory: verify::Memory,
    /// Channel for approval requests and status updates.
    pub incident_channel: String,
    /// Serve HTTP endpoints (`http`) or a Socket Mode connection (`socket`).
    pub socket_mode: bool,
}

impl Slack {
    /// From `[slack]`.
    pub fn new(cfg: &SlackConfig) -> Arc<Slack> {
        Arc::new(Slack {
            api: api::SlackApi::new(&cfg.api_base_url, cfg.bot_token.clone()),
            // Socket Mode has none (its traffic is not signed); its HTTP endpoints are not served.
            verifier: verify::verifier(
                cfg.signing_secret
                    .as_ref()
                    .map(|s| s.expose())
                    .unwrap_or_default(),
            ),
            memory: verify::Memory::default(),
            incident_channel: cfg.incident_channel.clone(),
            socket_mode: cfg.mode == "socket",
        })
    }
}

/// Routes, present when `[slack]` is configured.
pub fn routes() -> Router<App> {
    Router::new()
        .route("/slack/commands", post(commands))
        .route("/slack/interactions", post(interactions))
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn unauthorized(path: &str, why: verify::Rejection) -> Response {
    tracing::warn!(path, reason = why.as_str(), "refused a Slack request");
    (StatusCode::UNAUTHORIZED, "invalid request signature\n").into_response()
}

/// Looks the request up in the replay memory: `None` to go on, or the answer to give
/// (401 for a replay, an empty 200 for a request Slack retried, which is never run twice).
fn remember(
    slack: &Slack,
    path: &str,
    identity: &str,
    sig: &str,
    headers: &HeaderMap,
) -> Option<Response> {
    match slack.memory.record(identity, sig, now()) {
        verify::Seen::New => None,
        verify::Seen::Replay => Some(unauthorized(path, verify::Rejection::Replay)),
        verify::Seen::Retry => {
            tracing::info!(path, retry = ?headers.get("x-slack-retry-num"), "Slack retry acknowledged, not run again");
            Some(StatusCode::OK.into_response())
        }
    }
}

fn bad_request(what: &str) -> Response {
    tracing::warn!(what, "malformed Slack payload");
    (StatusCode::BAD_REQUEST, format!("malformed {what}\n")).into_response()
}

async fn commands(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(slack) = app.slack.clone() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let sig = match verify::check(&slack.verifier, &headers, &body, now()) {
        Ok(sig) => sig,
        Err(why) => return unauthorized("/slack/commands", why),
    };
    let Some(cmd) = slash::Slash::from_form(&body) else {
        return bad_request("slash command");
    };
    let identity = format!("command:{}", cmd.trigger_id);
    if let Some(r) = remember(&slack, "/slack/commands", &identity, sig, &headers) {
        return r;
    }
    Json(command_in_time(&app, &slack, cmd.into_owned()).await).into_response()
}

/// How long a command's answer is waited for: Slack gives up on an answer after 3 s.
pub const ANSWER_WITHIN: std::time::Duration = std::time::Duration::from_millis(2_500);

/// [`command`], answered within [`ANSWER_WITHIN`] however long the work takes (a store slow or
/// locked during an outage): then the answer is "working on it", the work goes on, and its
/// answer follows through the command's `response_url`. Shared by HTTP and Socket Mode.
pub async fn command_in_time(
    app: &App,
    slack: &Slack,
    cmd: slash::Slash<'static>,
) -> serde_json::Value {
    let response_url = cmd.response_url.clone();
    let (app, trigger) = (app.clone(), cmd.trigger_id.clone());
    let mut work = Box::pin(async move { command(&app, cmd).await });
    if let Ok(answer) = tokio::time::timeout(ANSWER_WITHIN, &mut work).await {
        return answer;
    }
    let api = slack.api.clone();
    tokio::spawn(async move {
        let answer = work.await;
        let sent = match &response_url {
            Some(url) => api.respond(url, &answer).await,
            None => Err(api::SlackError::Transport("no response_url".into())),
        };
        if let Err(e) = sent {
            tracing::warn!(trigger = %trigger, error = %e, "could not send a slow command's answer");
        }
    });
    text::working()
}

/// Runs a verified, first-seen slash command and returns the immediate (ephemeral) answer;
/// the approval card is posted afterwards. Shared by HTTP and Socket Mode.
pub async fn command(app: &App, cmd: slash::Slash<'_>) -> serde_json::Value {
    let actor = Actor::chat(
        &app.settings,
        Platform::Slack,
        &cmd.user_id,
        &cmd.channel_id,
    );
    let reply = dispatch::handle(app, &actor, &cmd.text).await;
    if let Reply::Requested(v) = &reply
        && v.request.as_ref().is_some_and(|r| r.state == "pending")
    {
        let (app2, run, channel) = (app.clone(), v.run.id, cmd.channel_id.to_string());
        tokio::spawn(async move { sync::ensure_cards(&app2, run, Some(&channel)).await });
    }
    if let Reply::Checklist(v) = &reply {
        let (app2, id, channel) = (app.clone(), v.instance.id, cmd.channel_id.to_string());
        tokio::spawn(async move { checklist::post(&app2, id, &channel).await });
    }
    text::command_reply(&reply)
}

/// The replay-memory identity of a click.
pub fn click_identity(ev: &SlackInteractionBlockActionsEvent) -> Option<String> {
    let action = ev.actions.as_ref().and_then(|a| a.first())?;
    Some(format!(
        "action:{}:{}",
        ev.trigger_id.0,
        action
            .action_ts
            .as_ref()
            .map(|t| t.0.as_str())
            .unwrap_or("")
    ))
}

#[derive(serde::Deserialize)]
struct InteractionForm {
    payload: String,
}

async fn interactions(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(slack) = app.slack.clone() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let sig = match verify::check(&slack.verifier, &headers, &body, now()) {
        Ok(sig) => sig,
        Err(why) => return unauthorized("/slack/interactions", why),
    };
    let Ok(form) = serde_urlencoded::from_bytes::<InteractionForm>(&body) else {
        return bad_request("interaction form");
    };
    let Ok(event) = serde_json::from_str::<SlackInteractionEvent>(&form.payload) else {
        return bad_request("interaction payload");
    };
    let SlackInteractionEvent::BlockActions(ev) = event else {
        return StatusCode::OK.into_response();
    };
    let Some(identity) = click_identity(&ev) else {
        return StatusCode::OK.into_response();
    };
    if let Some(r) = remember(&slack, "/slack/interactions", &identity, sig, &headers) {
        return r;
    }
    block_actions_in_time(&app, &slack, ev).await;
    StatusCode::OK.into_response()
}

/// [`block_actions`], waited for at most [`ANSWER_WITHIN`] (Slack wants the click acknowledged
/// within 3 s); a slower click goes on in its own task, its outcome shown by the card update or
/// the ephemeral note it sends anyway. Shared by HTTP and Socket Mode.
pub async fn block_actions_in_time(
    app: &App,
    slack: &Arc<Slack>,
    ev: SlackInteractionBlockActionsEvent,
) {
    let (app, slack) = (app.clone(), slack.clone());
    let work = tokio::spawn(async move { block_actions(&app, &slack, ev).await });
    if tokio::time::timeout(ANSWER_WITHIN, work).await.is_err() {
        tracing::info!("a Slack click outlasts Slack's deadline: acknowledged, still at work");
    }
}

/// Handles a verified, first-seen button click: through the approval engine, then an
/// ephemeral explanation of a refusal, or a card refresh. Shared by HTTP and Socket Mode.
pub async fn block_actions(app: &App, slack: &Slack, ev: SlackInteractionBlockActionsEvent) {
    let Some(action) = ev.actions.as_ref().and_then(|a| a.first()) else {
        return;
    };
    let (Some(user), slack_morphism::prelude::SlackInteractionActionContainer::Message(container)) =
        (ev.user.as_ref(), &ev.container)
    else {
        return;
    };
    let channel = container
        .channel_id
        .as_ref()
        .map(|c| c.0.clone())
        .or_else(|| ev.channel.as_ref().map(|c| c.id.0.clone()))
        .unwrap_or_default();
    let actor = Actor::chat(&app.settings, Platform::Slack, &user.id.0, &channel);
    if let Some(region) = action
        .value
        .as_deref()
        .and_then(crate::monitor::parse_proposal)
    {
        let reply = dispatch::propose_failover(app, &actor, region).await;
        let mut body = text::command_reply(&reply);
        body["replace_original"] = json!(false);
        let (api, user, url) = (
            slack.api.clone(),
            user.id.0.clone(),
            ev.response_url.clone(),
        );
        tokio::spawn(async move {
            let sent = match url {
                Some(u) => api.respond(u.0.as_ref(), &body).await,
                None => {
                    let note = body["text"].as_str().unwrap_or_default();
                    api.post_ephemeral(&channel, &user, note).await
                }
            };
            if let Err(e) = sent {
                tracing::warn!(error = %e, "could not answer a failover proposal click");
            }
        });
        return;
    }
    if let Some(tick) = action
        .value
        .as_deref()
        .and_then(crate::checklists::tick::TickClick::parse)
    {
        let reply = crate::checklists::tick::click(
            app,
            &actor,
            "slack",
            &channel,
            &container.message_ts.0,
            &tick,
        )
        .await;
        let note = text::click_refused(&reply);
        if note.is_empty() {
            let app2 = app.clone();
            tokio::spawn(async move { checklist::refresh(&app2, tick.instance).await });
        } else {
            tell(slack, &user.id.0, &channel, ev.response_url.as_ref(), note);
        }
        return;
    }
    let Some(click) = action.value.as_deref().and_then(Click::parse) else {
        tracing::warn!("malformed Slack button value");
        return;
    };
    let reply = crate::cards::click_on_card(
        app,
        &actor,
        "slack",
        &channel,
        &container.message_ts.0,
        &click,
    )
    .await;
    let note = text::click_refused(&reply);
    if !note.is_empty() {
        let (api, user, url) = (
            slack.api.clone(),
            user.id.0.clone(),
            ev.response_url.clone(),
        );
        tokio::spawn(async move {
            let body =
                json!({ "response_type": "ephemeral", "replace_original": false, "text": note });
            let sent = match url {
                Some(u) => api.respond(u.0.as_ref(), &body).await,
                None => api.post_ephemeral(&channel, &user, &note).await,
            };
            if let Err(e) = sent {
                tracing::warn!(error = %e, "could not tell a Slack user why their click was refused");
            }
        });
    } else {
        let (app2, run) = (app.clone(), click.run);
        tokio::spawn(async move { sync::refresh(&app2, run).await });
    }
}

/// Tells `user` why their click was refused, through the interaction's `response_url` (else
/// an ephemeral message).
fn tell(
    slack: &Slack,
    user: &str,
    channel: &str,
    url: Option<&slack_morphism::prelude::SlackResponseUrl>,
    note: String,
) {
    let (api, user, channel, url) = (
        slack.api.clone(),
        user.to_string(),
        channel.to_string(),
        url.cloned(),
    );
    tokio::spawn(async move {
        let body = json!({ "response_type": "ephemeral", "replace_original": false, "text": note });
        let sent = match url {
            Some(u) => api.respond(u.0.as_ref(), &body).await,
            None => api.post_ephemeral(&channel, &user, &note).await,
        };
        if let Err(e) = sent {
            tracing::warn!(error = %e, "could not tell a Slack user why their click was refused");
        }
    });
}
