//! What the chat front-ends' card loops share: following the event stream (and, for changes
//! made by other processes, the store) and syncing each run whose state moved.

use std::{
    collections::{BTreeMap, BTreeSet},
    future::Future,
    time::Duration,
};

use sqlx::Row;
use tokio_util::sync::CancellationToken;

use crate::{
    actor::Actor,
    app::App,
    dispatch::{self, Click},
    events::Event,
    reply::{Reply, UserError},
    store::now_ms,
};

/// How many locks [`CardLocks`] stripes runs over.
const STRIPES: usize = 64;

/// Serialises the card edits of one run within this process, so two concurrent refreshes
/// (a click's and the event loop's) never both re-post a deleted card or leave a stale one
/// last. Runs share a lock when their ids are equal modulo [`STRIPES`]; that only costs a wait.
pub struct CardLocks([tokio::sync::Mutex<()>; STRIPES]);

impl Default for CardLocks {
    fn default() -> Self {
        CardLocks(std::array::from_fn(|_| tokio::sync::Mutex::new(())))
    }
}

impl CardLocks {
    /// Holds run `run`'s card lock until the guard drops.
    pub async fn lock(&self, run: i64) -> tokio::sync::MutexGuard<'_, ()> {
        self.0[run.rem_euclid(STRIPES as i64) as usize].lock().await
    }
}

/// A click on the button `click` of message `id` in `channel` on `platform`: through the
/// approval engine when that message is a card of the run the button names, else refused as a
/// foreign button (and audited). A button's value is never trusted alone.
pub async fn click_on_card(
    app: &App,
    actor: &Actor,
    platform: &str,
    channel: &str,
    id: &str,
    click: &Click,
) -> Reply {
    match card_run(app, platform, channel, id, click.run).await {
        Ok(Some(run)) if run == click.run => dispatch::click(app, actor, click).await,
        Ok(_) => {
            let reply = Reply::Refused(UserError::ForeignButton);
            dispatch::audit_click(app, actor, click, &reply).await;
            reply
        }
        Err(e) => dispatch::internal(e, &format!("looking up a {platform} card")),
    }
}

/// The run whose card on `platform` is message `id` in `channel` (see `Store::card_run`),
/// for a click whose button names run `run`. A card this process has just posted for that run
/// but not yet recorded (the click came within milliseconds of the post) is waited for: its
/// post holds the run's card lock until the card is recorded.
async fn card_run(
    app: &App,
    platform: &str,
    channel: &str,
    id: &str,
    run: i64,
) -> anyhow::Result<Option<i64>> {
    if let Some(found) = app.store.card_run(platform, channel, id).await? {
        return Ok(Some(found));
    }
    let _recorded = app.card_locks.lock(run).await;
    app.store.card_run(platform, channel, id).await
}

/// Calls `sync` for every run that changed, batched every 300 ms, until `shutdown`. Changes are
/// seen from this process's events at once and from the store (other processes) within 2 s.
/// `on_event` sees every event first (e.g. to post step details).
pub async fn follow<S, Fut>(
    app: App,
    shutdown: CancellationToken,
    platform: &'static str,
    on_event: impl Fn(&App, &Event),
    sync: S,
) where
    S: Fn(App, i64) -> Fut,
    Fut: Future<Output = bool>,
{
    let mut events = app.events.subscribe();
    let mut dirty: BTreeSet<i64> = BTreeSet::new();
    // Runs whose last sync failed (chat API down, rate limited past the client's patience):
    // synced again after a growing pause, so a card never freezes on an old state.
    let mut retry: BTreeMap<i64, Retry> = BTreeMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(300));
    let mut poll = Poll::new(now_ms() - 60_000);
    let mut last_poll = std::time::Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            e = events.recv() => match e {
                Ok(Event::StepProgress { .. }) => {}
                Ok(e) => {
                    on_event(&app, &e);
                    if let Some(id) = run_of(&e) { dirty.insert(id); }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => { poll = Poll::new(now_ms() - 60_000); }
                Err(_) => return,
            },
            _ = tick.tick() => {
                if last_poll.elapsed() >= Duration::from_secs(2) {
                    last_poll = std::time::Instant::now();
                    match changed_since(&app, poll.from()).await {
                        Ok(rows) => dirty.extend(poll.take(rows)),
                        Err(e) => tracing::warn!(platform, error = format!("{e:#}"), "polling runs for cards failed"),
                    }
                }
                let now = std::time::Instant::now();
                dirty.extend(retry.iter().filter(|(_, r)| r.at <= now).map(|(id, _)| *id));
                for run in std::mem::take(&mut dirty) {
                    if sync(app.clone(), run).await {
                        retry.remove(&run);
                        continue;
                    }
                    let r = retry.entry(run).or_insert(Retry { at: now, failures: 0 });
                    r.failures += 1;
                    if r.failures > RETRIES {
                        tracing::error!(platform, run, "giving up on updating the run's cards");
                        retry.remove(&run);
                    } else {
                        r.at = std::time::Instant::now() + retry_pause(r.failures);
                    }
                }
            }
        }
    }
}

/// A run whose cards are to be synced again.
struct Retry {
    /// Not before.
    at: std::time::Instant,
    /// Failed syncs in a row.
    failures: u32,
}

/// Failed syncs of a run before its cards are left as they are (about 15 minutes).
const RETRIES: u32 = 20;

/// The pause after the `failures`-th failed sync in a row: 1 s, doubled, at most 60 s.
fn retry_pause(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(6)).min(Duration::from_secs(60))
}

/// The run an event is about.
pub fn run_of(e: &Event) -> Option<i64> {
    match e {
        Event::RunRequested { run_id, .. }
        | Event::Approved { run_id, .. }
        | Event::Denied { run_id, .. }
        | Event::Expired { run_id, .. }
        | Event::DecisionRequested { run_id, .. }
        | Event::StepStarted { run_id, .. }
        | Event::StepProgress { run_id, .. }
        | Event::StepFinished { run_id, .. }
        | Event::RunStateChanged { run_id, .. } => Some(*run_id),
    }
}

/// How far back each poll looks again before the newest change it has seen (ms).
const POLL_OVERLAP_MS: i64 = 5_000;

/// The poll of changed runs: a change stamped in the same millisecond as the newest one seen,
/// or a little earlier (another host's clock, a `drbot cmd` on a bastion), is still picked up,
/// and a change is taken once.
struct Poll {
    since: i64,
    /// Runs seen in the overlap, with their change.
    seen: std::collections::HashMap<i64, i64>,
}

impl Poll {
    fn new(since: i64) -> Self {
        Poll {
            since,
            seen: Default::default(),
        }
    }

    /// Where the next query starts.
    fn from(&self) -> i64 {
        self.since - POLL_OVERLAP_MS
    }

    /// The runs of `rows` (id, change) whose change is new.
    fn take(&mut self, rows: Vec<(i64, i64)>) -> Vec<i64> {
        let mut new = Vec::new();
        for (id, at) in rows {
            if self.seen.insert(id, at) != Some(at) {
                new.push(id);
            }
            self.since = self.since.max(at);
        }
        let from = self.from();
        self.seen.retain(|_, at| *at >= from);
        new
    }
}

/// Runs changed at or after `since` (ms), each with when it last changed.
pub async fn changed_since(app: &App, since: i64) -> anyhow::Result<Vec<(i64, i64)>> {
    let rows = sqlx::query("SELECT id, updated_at FROM runs WHERE updated_at >= $1 ORDER BY id")
        .bind(since)
        .fetch_all(app.store.pool())
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("id")?, r.try_get("updated_at")?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A change in the same millisecond as the newest seen, or a little earlier, is taken;
    /// one already taken is not taken again.
    #[test]
    fn the_poll_misses_no_tie_and_takes_a_change_once() {
        let mut p = Poll::new(1_000_000);
        assert_eq!(p.take(vec![(1, 1_000_100)]), [1]);
        assert!(p.from() <= 1_000_100);
        // Run 2 changed in the same millisecond; run 3 a little earlier (another clock).
        assert_eq!(
            p.take(vec![(1, 1_000_100), (2, 1_000_100), (3, 1_000_090)]),
            [2, 3]
        );
        assert!(p.take(vec![(1, 1_000_100), (2, 1_000_100)]).is_empty());
        assert_eq!(p.take(vec![(1, 1_000_200)]), [1], "a new change of run 1");
    }
}
