//! Socket Mode (`slack.mode = "socket"`): for teams that cannot expose an HTTPS endpoint,
//! drbot opens a WebSocket to Slack (`apps.connections.open` with the app-level token),
//! receives slash commands and clicks as envelopes, handles them exactly as the HTTP
//! endpoints do, and acknowledges each envelope (with the command's answer as payload).
//! Reconnects on `disconnect` messages and on errors, with backoff. A command Slack re-sends
//! (its acknowledgement, which carried the answer, never reached Slack) is not run again: its
//! first answer goes to the re-sent command's `response_url`.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use slack_morphism::prelude::{SlackCommandEvent, SlackInteractionEvent};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::{Slack, verify::Seen};
use crate::app::App;

/// Keeps a Socket Mode connection open until `shutdown`.
pub async fn run(app: App, shutdown: CancellationToken) {
    let Some(slack) = app.slack.clone() else {
        return;
    };
    let Some(token) = app
        .settings
        .config
        .slack
        .as_ref()
        .and_then(|s| s.app_token.clone())
    else {
        return;
    };
    let mut backoff = Duration::from_millis(500);
    // Outlives each connection: re-sent commands come on a later one.
    let answers = Arc::new(Answers::default());
    loop {
        let session = async {
            let url = slack.api.open_socket(&token).await?;
            let (ws, _) = tokio_tungstenite::connect_async(url.as_str()).await?;
            tracing::info!("Slack Socket Mode connected");
            anyhow::Ok(serve(&app, &slack, &answers, ws, &shutdown).await?)
        };
        let result = tokio::select! {
            r = session => r,
            _ = shutdown.cancelled() => return,
        };
        match result {
            Ok(()) => backoff = Duration::from_millis(500),
            Err(e) => {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "Slack Socket Mode connection failed"
                );
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
        if shutdown.is_cancelled() {
            return;
        }
        tokio::time::sleep(backoff).await;
    }
}

/// Handles one connection until Slack asks to reconnect or it drops.
async fn serve<S>(
    app: &App,
    slack: &Arc<Slack>,
    answers: &Arc<Answers>,
    ws: tokio_tungstenite::WebSocketStream<S>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut tx, mut rx) = ws.split();
    // Each envelope is handled in its own task and acknowledged when its answer is ready, so
    // one slow envelope (a command waiting for the store) never holds back the others, nor
    // Slack's pings.
    let (acks, mut ready) = tokio::sync::mpsc::unbounded_channel::<String>();
    loop {
        let msg = tokio::select! {
            m = rx.next() => m,
            Some(ack) = ready.recv() => {
                tx.send(Message::Text(ack.into())).await?;
                continue;
            }
            _ = shutdown.cancelled() => return Ok(()),
        };
        let Some(msg) = msg else {
            anyhow::bail!("Slack closed the connection")
        };
        let text = match msg? {
            Message::Text(t) => t.to_string(),
            Message::Ping(p) => {
                tx.send(Message::Pong(p)).await?;
                continue;
            }
            Message::Close(_) => anyhow::bail!("Slack closed the connection"),
            _ => continue,
        };
        let Ok(env) = serde_json::from_str::<Value>(&text) else {
            tracing::warn!("unreadable Socket Mode message");
            continue;
        };
        match env["type"].as_str().unwrap_or("") {
            "hello" => continue,
            "disconnect" => {
                tracing::info!(
                    reason = env["reason"].as_str().unwrap_or(""),
                    "Slack asked to reconnect"
                );
                return Ok(());
            }
            _ => {}
        }
        let Some(id) = env["envelope_id"].as_str().map(str::to_string) else {
            continue;
        };
        let (app, slack, acks, answers) =
            (app.clone(), slack.clone(), acks.clone(), answers.clone());
        tokio::spawn(async move {
            let ack = handle(&app, &slack, &answers, &env).await;
            let mut reply = json!({ "envelope_id": id });
            if let Some(payload) = ack {
                reply["payload"] = payload;
            }
            // The connection may be gone by now: Slack then re-sends the envelope, which is
            // not run again; its answer goes to the response_url (see `Answers`).
            let _ = acks.send(reply.to_string());
        });
    }
}

/// Handles one envelope; returns the ack payload (a command's answer), if any.
async fn handle(app: &App, slack: &Arc<Slack>, answers: &Answers, env: &Value) -> Option<Value> {
    let now = chrono::Utc::now().timestamp();
    match env["type"].as_str()? {
        "slash_commands" => {
            let cmd: SlackCommandEvent = match serde_json::from_value(env["payload"].clone()) {
                Ok(c) => c,
                Err(_) => {
                    tracing::warn!("malformed Socket Mode slash command");
                    return None;
                }
            };
            // The connection is authenticated by the app token; envelopes Slack re-sends
            // (retry_attempt > 0) carry the same trigger id and are not run again.
            let trigger = cmd.trigger_id.0.as_str();
            match slack
                .memory
                .record(&format!("command:{trigger}"), "socket", now)
            {
                Seen::New => {
                    let first = answers.start(trigger);
                    let cmd = super::slash::Slash::from_event(&cmd).into_owned();
                    let answer = super::command_in_time(app, slack, cmd).await;
                    first.send_replace(Some(answer.clone()));
                    Some(answer)
                }
                Seen::Replay | Seen::Retry => {
                    if let Some(first) = answers.get(trigger) {
                        let (api, url) = (slack.api.clone(), cmd.response_url.0.to_string());
                        let trigger = trigger.to_owned();
                        tokio::spawn(resend(api, first, url, trigger));
                    }
                    None
                }
            }
        }
        "interactive" => {
            let Ok(SlackInteractionEvent::BlockActions(ev)) =
                serde_json::from_value::<SlackInteractionEvent>(env["payload"].clone())
            else {
                return None;
            };
            let identity = super::click_identity(&ev)?;
            if slack.memory.record(&identity, "socket", now) == Seen::New {
                super::block_actions_in_time(app, slack, ev).await;
            }
            None
        }
        _ => None,
    }
}

/// Sends a re-sent command's first answer to its `response_url`, once that answer is ready.
/// "Working on it" is not repeated: the real answer goes to the response_url by itself.
async fn resend(
    api: super::api::SlackApi,
    mut first: watch::Receiver<Option<Value>>,
    url: String,
    trigger: String,
) {
    let answer = match tokio::time::timeout(
        Duration::from_secs(30),
        first.wait_for(Option::is_some),
    )
    .await
    {
        Ok(Ok(a)) => a.clone(),
        _ => None,
    };
    let Some(answer) = answer.filter(|a| *a != super::text::working()) else {
        return;
    };
    if let Err(e) = api.respond(&url, &answer).await {
        tracing::warn!(trigger = %trigger, error = %e, "could not send a re-sent command's answer");
    }
}

/// How long first answers are kept for re-sends (Slack re-sends within minutes).
const KEEP_ANSWERS: Duration = Duration::from_secs(15 * 60);

/// The first answer to each command, by trigger id, for [`KEEP_ANSWERS`]: Slack re-sends an
/// envelope whose acknowledgement it did not get, and that acknowledgement carried the answer.
#[derive(Default)]
struct Answers(Mutex<AnswersInner>);

#[derive(Default)]
struct AnswersInner {
    by_trigger: HashMap<String, watch::Receiver<Option<Value>>>,
    /// Insertion order, for expiry.
    order: VecDeque<(Instant, String)>,
}

impl Answers {
    /// Records that `trigger`'s command is being answered; send the answer through the result.
    fn start(&self, trigger: &str) -> watch::Sender<Option<Value>> {
        let (tx, rx) = watch::channel(None);
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((at, _)) = g.order.front()
            && at.elapsed() >= KEEP_ANSWERS
        {
            if let Some((_, old)) = g.order.pop_front() {
                g.by_trigger.remove(&old);
            }
        }
        g.by_trigger.insert(trigger.to_owned(), rx);
        g.order.push_back((Instant::now(), trigger.to_owned()));
        tx
    }

    /// The first answer to `trigger`'s command (possibly not ready yet), if still kept.
    fn get(&self, trigger: &str) -> Option<watch::Receiver<Option<Value>>> {
        let g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        g.by_trigger.get(trigger).cloned()
    }
}
