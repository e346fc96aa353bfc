//! Keeps Slack cards current: posts a run's card (approval request, then live progress) to
//! the channel it was requested in and to the incident channel, updates it in place as the
//! run moves, and puts step details in its thread. Posts are idempotent through the
//! `outbound` table and Slack message metadata, so retries and restarts never post twice.

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use recovery::engine::StepState;

use super::{Slack, text};
use crate::{
    app::App,
    approvals,
    events::Event,
    store::{checklists::ChecklistMessage, now_ms, runs::RunState},
};

async fn cards_of(app: &App, run: i64) -> anyhow::Result<Vec<(String, String)>> {
    app.store.cards_of("slack", run).await
}

/// How long a claim on a post lasts unless renewed: a post in flight renews it every third of
/// this, so only a claim whose process stopped lapses.
const CLAIM_LEASE_MS: i64 = 90_000;

/// Posts once per `key`: claims the key, posts (Slack metadata carries it), records the ts.
/// Returns `None` while another process holds a live claim on the key (its post is under way;
/// that process records it). A lapsed claim (its process stopped mid-post) is taken over: the
/// channel is searched for the post first, so it is never made twice.
pub(crate) async fn post_once(
    app: &App,
    slack: &Slack,
    key: &str,
    channel: &str,
    thread_ts: Option<&str>,
    text: &str,
    blocks: &serde_json::Value,
) -> anyhow::Result<Option<String>> {
    match app.store.outbound_message(key).await? {
        Some(Some(ts)) => return Ok(Some(ts)),
        Some(None) => {
            let now = now_ms();
            let taken = sqlx::query(
                "UPDATE outbound SET claimed_until = $1 WHERE key = $2 AND message_id IS NULL \
                 AND (claimed_until IS NULL OR claimed_until < $3)",
            )
            .bind(now + CLAIM_LEASE_MS)
            .bind(key.to_string())
            .bind(now)
            .execute(app.store.pool())
            .await?;
            if taken.rows_affected() == 0 {
                return Ok(None);
            }
            // The claim lapsed (its process stopped mid-post): Slack may have the post.
            let found = renewing(app, key, slack.api.find_posted(channel, thread_ts, key))
                .await
                .or_release(app, key)
                .await?;
            if let Some(ts) = found {
                complete(app, key, &ts).await?;
                return Ok(Some(ts));
            }
        }
        None => {
            let claimed = sqlx::query(
                "INSERT INTO outbound (key, platform, channel, created_at, claimed_until) \
                 VALUES ($1, 'slack', $2, $3, $4) ON CONFLICT (key) DO NOTHING",
            )
            .bind(key.to_string())
            .bind(channel.to_string())
            .bind(now_ms())
            .bind(now_ms() + CLAIM_LEASE_MS)
            .execute(app.store.pool())
            .await?;
            if claimed.rows_affected() == 0 {
                return Ok(None);
            }
        }
    }
    let post = slack
        .api
        .post_message(channel, text, blocks, thread_ts, key);
    let ts = renewing(app, key, post).await.or_release(app, key).await?;
    complete(app, key, &ts).await?;
    Ok(Some(ts))
}

/// After a failed post (or search), the claim is let go at once: the next attempt, here or in
/// another process, takes it over and searches the channel first, instead of waiting for the
/// lease to lapse.
trait OrRelease<T> {
    async fn or_release(self, app: &App, key: &str) -> anyhow::Result<T>;
}

impl<T, E: Into<anyhow::Error>> OrRelease<T> for Result<T, E> {
    async fn or_release(self, app: &App, key: &str) -> anyhow::Result<T> {
        match self {
            Ok(v) => Ok(v),
            Err(e) => {
                let released = sqlx::query(
                    "UPDATE outbound SET claimed_until = NULL WHERE key = $1 AND message_id IS NULL",
                )
                .bind(key.to_string())
                .execute(app.store.pool())
                .await;
                if let Err(r) = released {
                    tracing::warn!(key, error = %r, "releasing a Slack post's claim failed");
                }
                Err(e.into())
            }
        }
    }
}

/// Runs `work` while renewing the claim on `key` every third of its lease, so a post slowed
/// by rate limits and retries is never taken for a lost one.
async fn renewing<T, E>(
    app: &App,
    key: &str,
    work: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E> {
    tokio::select! {
        done = work => done,
        never = renew_claim(app, key) => match never {},
    }
}

async fn renew_claim(app: &App, key: &str) -> std::convert::Infallible {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(
        (CLAIM_LEASE_MS / 3) as u64,
    ));
    tick.tick().await;
    loop {
        tick.tick().await;
        let renewed = sqlx::query(
            "UPDATE outbound SET claimed_until = $1 WHERE key = $2 AND message_id IS NULL",
        )
        .bind(now_ms() + CLAIM_LEASE_MS)
        .bind(key.to_string())
        .execute(app.store.pool())
        .await;
        if let Err(e) = renewed {
            tracing::warn!(key, error = %e, "renewing a Slack post's claim failed");
        }
    }
}

async fn complete(app: &App, key: &str, ts: &str) -> anyhow::Result<()> {
    sqlx::query("UPDATE outbound SET message_id = $1 WHERE key = $2")
        .bind(ts.to_string())
        .bind(key.to_string())
        .execute(app.store.pool())
        .await?;
    Ok(())
}

/// Makes sure run `run` has a card in `origin` (if given) and in the incident channel; false
/// when that failed (logged) or another process is still posting one.
pub async fn ensure_cards(app: &App, run: i64, origin: Option<&str>) -> bool {
    match ensure_cards_inner(app, run, origin).await {
        Ok(done) => done,
        Err(e) => {
            tracing::error!(
                run,
                error = format!("{e:#}"),
                "posting the Slack card failed"
            );
            false
        }
    }
}

/// Ok(false): a post is still under another process's claim.
async fn ensure_cards_inner(app: &App, run: i64, origin: Option<&str>) -> anyhow::Result<bool> {
    let Some(slack) = app.slack.clone() else {
        return Ok(true);
    };
    let _serial = app.card_locks.lock(run).await;
    let Some(view) = approvals::view(&app.store, run).await? else {
        return Ok(true);
    };
    let mut done = true;
    let have = cards_of(app, run).await?;
    let mut channels: Vec<String> = origin.map(str::to_string).into_iter().collect();
    channels.push(slack.incident_channel.clone());
    channels.dedup();
    let (txt, blocks) = (text::card_text(&view), text::card(&view));
    let mut posted = false;
    // A channel drbot cannot post in (a DM, a private channel without the app) never keeps
    // the card from the others, the incident channel's above all: its error comes at the end.
    let mut failed = None;
    for ch in channels {
        if have.iter().any(|(c, _)| *c == ch) {
            continue;
        }
        posted = true;
        let key = format!("card:{run}:{ch}");
        let ts = match post_once(app, &slack, &key, &ch, None, &txt, &blocks).await {
            Ok(Some(ts)) => ts,
            Ok(None) => {
                done = false;
                continue;
            }
            Err(e) => {
                failed.get_or_insert(e.context(format!("posting the card in {ch}")));
                continue;
            }
        };
        sqlx::query(
            "INSERT INTO messages (platform, channel, message_id, run_id, request_id, created_at) \
             VALUES ('slack', $1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(ch.clone())
        .bind(ts)
        .bind(run)
        .bind(view.request.as_ref().map(|r| r.id))
        .bind(now_ms())
        .execute(app.store.pool())
        .await
        .context("recording the card")?;
    }
    if posted {
        post_checklists(app, run).await?;
        // Steps that finished before the card existed (preflight) get their details too.
        done &= all_step_details(app, run).await?;
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(done),
    }
}

/// Posts each checklist opened for run `run` (a runbook's `checklists`) in each channel that
/// has the run's card, once per instance and channel (claimed in `outbound` like a card).
async fn post_checklists(app: &App, run: i64) -> anyhow::Result<()> {
    let Some(slack) = app.slack.clone() else {
        return Ok(());
    };
    let views = app.store.run_checklists(run).await?;
    if views.is_empty() {
        return Ok(());
    }
    let cards = cards_of(app, run).await?;
    for v in &views {
        let have = app.store.checklist_messages("slack", v.instance.id).await?;
        for (ch, _) in &cards {
            if have.iter().any(|m| &m.channel == ch) {
                continue;
            }
            let key = format!("checklist:{}:{ch}", v.instance.id);
            let (txt, blocks) = (text::checklist_text(v), text::checklist(v));
            if let Some(ts) = post_once(app, &slack, &key, ch, None, &txt, &blocks).await? {
                app.store
                    .record_checklist_message(
                        "slack",
                        &ChecklistMessage {
                            channel: ch.clone(),
                            message_id: ts,
                            instance: v.instance.id,
                            part: 0,
                        },
                    )
                    .await?;
            }
        }
    }
    Ok(())
}

/// Re-renders the Slack messages of every checklist opened for run `run`.
async fn refresh_checklists(app: &App, run: i64) -> anyhow::Result<()> {
    for v in app.store.run_checklists(run).await? {
        super::checklist::refresh(app, v.instance.id).await;
    }
    Ok(())
}

/// Re-renders every Slack card of run `run`; false when a card could not be (logged).
pub async fn refresh(app: &App, run: i64) -> bool {
    if let Err(e) = refresh_inner(app, run).await {
        tracing::warn!(
            run,
            error = format!("{e:#}"),
            "updating the Slack card failed"
        );
        return false;
    }
    true
}

async fn refresh_inner(app: &App, run: i64) -> anyhow::Result<()> {
    let Some(slack) = app.slack.clone() else {
        return Ok(());
    };
    let _serial = app.card_locks.lock(run).await;
    let Some(view) = approvals::view(&app.store, run).await? else {
        return Ok(());
    };
    let (txt, blocks) = (text::card_text(&view), text::card(&view));
    // One channel's failure does not keep the others' cards old; the first error is returned.
    let mut first_error = None;
    for (ch, ts) in cards_of(app, run).await? {
        let done: anyhow::Result<()> = async {
            match slack.api.update_message(&ch, &ts, &txt, &blocks).await {
                Ok(()) => {}
                Err(e) if e.cannot_update() => {
                    tracing::warn!(run, error = %e, "card cannot be updated: posting a new one");
                    // Keyed by the card it replaces: a retry or restart re-uses the same
                    // replacement.
                    let key = format!("card:{run}:{ch}:{ts}");
                    if let Some(new_ts) =
                        post_once(app, &slack, &key, &ch, None, &txt, &blocks).await?
                    {
                        app.store.replace_card("slack", &ch, &ts, &new_ts).await?;
                    }
                }
                Err(e) => return Err(e.into()),
            }
            Ok(())
        }
        .await;
        if let Err(e) = done {
            first_error.get_or_insert(e.context(format!("channel {ch}")));
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Posts a finished step's details in each card's thread.
/// Ok(false): a reply is still under another process's claim.
async fn step_details(app: &App, run: i64, idx: usize) -> anyhow::Result<bool> {
    details_of(app, run, Some(idx)).await
}

/// Posts the details of step `only` (or of every finished step) of run `run` in its cards'
/// threads. Ok(false): some reply is still under another process's claim.
async fn details_of(app: &App, run: i64, only: Option<usize>) -> anyhow::Result<bool> {
    let Some(slack) = app.slack.clone() else {
        return Ok(true);
    };
    let cards = cards_of(app, run).await?;
    if cards.is_empty() {
        return Ok(true);
    }
    let mut done = true;
    for s in app.store.steps(run).await? {
        if only.is_some_and(|i| s.idx != i as i64)
            || matches!(s.state, StepState::Pending | StepState::Running)
        {
            continue;
        }
        let body = text::step_detail(
            &s.name,
            s.idx,
            s.state,
            s.error.as_deref(),
            s.log.as_deref(),
        );
        let blocks =
            serde_json::json!([{ "type": "section", "text": { "type": "mrkdwn", "text": body } }]);
        for (ch, ts) in &cards {
            let key = format!(
                "step:{run}:{}:{}:{}:{ch}",
                s.idx,
                s.attempts,
                s.state.as_str()
            );
            done &= post_once(app, &slack, &key, ch, Some(ts), &body, &blocks)
                .await?
                .is_some();
        }
    }
    Ok(done)
}

/// Keeps Slack cards current until `shutdown`: step details go to the cards' threads.
pub async fn run_loop(app: App, shutdown: CancellationToken) {
    let on_event = |app: &App, e: &Event| {
        if let Event::StepFinished { run_id, idx, .. } = *e {
            let app = app.clone();
            tokio::spawn(async move {
                if let Err(e) = step_details(&app, run_id, idx).await {
                    tracing::warn!(
                        run = run_id,
                        error = format!("{e:#}"),
                        "posting step details to Slack failed"
                    );
                }
                // The step may have ticked checklist items (`ticks`).
                if let Err(e) = refresh_checklists(&app, run_id).await {
                    tracing::warn!(
                        run = run_id,
                        error = format!("{e:#}"),
                        "updating the run's Slack checklists failed"
                    );
                }
            });
        }
    };
    crate::cards::follow(app, shutdown, "Slack", on_event, |app, run| async move {
        sync_run(&app, run).await
    })
    .await
}

/// Brings run `run`'s Slack presence up to date: its cards (posted if it waits for people),
/// their content, every finished step's thread reply (one lost to a crash or a failed post is
/// made now; each is keyed, so none twice) and its checklists. False when something failed.
async fn sync_run(app: &App, run: i64) -> bool {
    let needs_card = match app.store.run(run).await {
        Ok(Some(r)) => matches!(
            r.state,
            RunState::AwaitingApproval | RunState::AwaitingGate | RunState::NeedsAttention
        ),
        _ => false,
    };
    let mut ok = !needs_card || ensure_cards(app, run, None).await;
    ok &= refresh(app, run).await;
    match all_step_details(app, run).await {
        Ok(done) => ok &= done,
        Err(e) => {
            tracing::warn!(
                run,
                error = format!("{e:#}"),
                "posting step details to Slack failed"
            );
            ok = false;
        }
    }
    if let Err(e) = post_checklists(app, run).await {
        tracing::warn!(
            run,
            error = format!("{e:#}"),
            "posting the run's Slack checklists failed"
        );
        ok = false;
    }
    ok
}

/// Every finished step's details in the cards' threads (each post keyed: none made twice).
/// Ok(false): some reply is still under another process's claim.
async fn all_step_details(app: &App, run: i64) -> anyhow::Result<bool> {
    details_of(app, run, None).await
}

/// Status updates to the incident channel, for the notifier.
pub struct SlackBroadcast(pub App);

#[async_trait::async_trait]
impl notifier::chat::ChatBroadcast for SlackBroadcast {
    fn platform(&self) -> &'static str {
        "slack"
    }

    async fn post_status(&self, key: &str, text: &str) -> anyhow::Result<String> {
        let slack = self.0.slack.clone().context("Slack is not configured")?;
        let blocks = text::text_sections(text);
        let key = format!("status:{key}");
        let channel = slack.incident_channel.clone();
        post_once(&self.0, &slack, &key, &channel, None, text, &blocks)
            .await?
            .context("another drbot process is posting this update")
    }

    async fn post_alert(
        &self,
        key: &str,
        text: &str,
        action: &notifier::chat::ChatAction,
    ) -> anyhow::Result<String> {
        let slack = self.0.slack.clone().context("Slack is not configured")?;
        let mut blocks = text::text_sections(text);
        if let Some(blocks) = blocks.as_array_mut() {
            blocks.push(serde_json::json!({ "type": "actions", "elements": [{
                "type": "button", "style": "danger", "action_id": "propose",
                "text": { "type": "plain_text", "text": action.label },
                "value": action.value,
            }]}));
        }
        let key = format!("status:{key}");
        let channel = slack.incident_channel.clone();
        post_once(&self.0, &slack, &key, &channel, None, text, &blocks)
            .await?
            .context("another drbot process is posting this alert")
    }
}
