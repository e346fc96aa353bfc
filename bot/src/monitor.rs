//! Detection: `serve` checks every region's `health_url` on `[monitor] interval`. After
//! `failure_threshold` failed checks in a row a region is *down*; after `recovery_threshold`
//! passed checks it is *up* again (the Gatus model). When the primary goes down, the incident
//! channels get an alert with a "Start failover to <secondary>" button.
//!
//! **Architecture Invariant:** the monitor only proposes. The button is the same as typing
//! `/dr failover <region>`: the clicker becomes the requester and the run still needs its
//! approvals. Nothing destructive ever starts from a health check.
//!
//! Counters live in each process; the up/down state lives in `monitor_state`, changed by a
//! compare-and-set inside one write transaction that also enqueues the alert (keyed by region
//! and episode), so processes sharing a store alert once per outage.

use std::time::Duration;

use notifier::{chat::ChatAction, outbox::NewDelivery};
use serde_json::json;
use sqlx::Row;
use tokio_util::sync::CancellationToken;

use crate::{
    actor::Actor,
    app::App,
    config::MonitorConfig,
    store::{audit, now_ms, outbox::enqueue},
};

/// A region's consecutive check results in this process.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counters {
    /// Failed checks in a row.
    pub failures: u32,
    /// Passed checks in a row.
    pub successes: u32,
    /// When the current run of equal results began (ms). A process only moves the shared
    /// state with a run of results that began after the state's last change, so two processes
    /// that see a region differently (a partition between them and it) never flip it back and
    /// forth, each flip a new outage and a new failover proposal.
    pub streak_since: i64,
}

/// What one observation changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Nothing.
    None,
    /// The region just went down (this process alerted, for outage `episode`).
    Down {
        /// Outage number of this region.
        episode: i64,
    },
    /// The region is back up after outage `episode`.
    Up {
        /// Outage number of this region.
        episode: i64,
    },
}

/// The value of a "Start failover" button.
pub fn proposal_value(region: &str) -> String {
    format!("propose:failover:{region}")
}

/// The region a "Start failover" button value names, if it is one.
pub fn parse_proposal(value: &str) -> Option<&str> {
    let region = value.strip_prefix("propose:failover:")?;
    (!region.is_empty()
        && region.len() <= 64
        && region
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
    .then_some(region)
}

/// Records one check of `region` and makes the transition it causes.
pub async fn observe(
    app: &App,
    cfg: &MonitorConfig,
    region: &str,
    result: Result<(), String>,
    counters: &mut Counters,
    now: i64,
) -> anyhow::Result<Transition> {
    match &result {
        Ok(()) => {
            if counters.successes == 0 {
                counters.streak_since = now;
            }
            counters.successes = counters.successes.saturating_add(1);
            counters.failures = 0;
        }
        Err(_) => {
            if counters.failures == 0 {
                counters.streak_since = now;
            }
            counters.failures = counters.failures.saturating_add(1);
            counters.successes = 0;
        }
    }
    let want_down = counters.failures >= cfg.failure_threshold;
    let want_up = counters.successes >= cfg.recovery_threshold;
    if !want_down && !want_up {
        return Ok(Transition::None);
    }
    // A plain read first: while a region stays down (or up), no check takes the writer lock
    // that run journals and approvals need.
    let (state, _, since) = monitor_state(app.store.pool(), region).await?;
    if (want_down && state == "down") || (want_up && state != "down") {
        return Ok(Transition::None);
    }
    let mut tx = app.store.write().await?;
    let (state, episode, since_now) = monitor_state(&mut *tx, region).await?;
    if since_now != since || counters.streak_since < since {
        // Changed meanwhile, or this run of results began before the state's last change
        // (another process saw the region differently since): not this process's call.
        return Ok(Transition::None);
    }
    let cooldown = humantime::parse_duration(&cfg.cooldown)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    if want_down && state != "down" && episode > 0 && now.saturating_sub(since_now) < cooldown {
        // Down again soon after recovering: the same outage goes on, already alerted.
        sqlx::query("UPDATE monitor_state SET state = 'down', since = $1 WHERE region = $2")
            .bind(now)
            .bind(region.to_string())
            .execute(&mut *tx)
            .await?;
        audit::append(
            &mut tx,
            &Actor::system(),
            "monitor.down",
            None,
            json!({
                "region": region, "episode": episode, "error": result.as_ref().err(),
                "reopened": true,
            }),
        )
        .await?;
        tx.commit().await?;
        return Ok(Transition::None);
    }
    let transition = if want_down && state != "down" {
        Transition::Down {
            episode: episode + 1,
        }
    } else if want_up && state == "down" {
        Transition::Up { episode }
    } else {
        return Ok(Transition::None);
    };
    let (new_state, new_episode, error) = match (transition, &result) {
        (Transition::Down { episode }, Err(e)) => ("down", episode, Some(e.clone())),
        (Transition::Up { episode }, _) => ("up", episode, None),
        _ => return Ok(Transition::None),
    };
    sqlx::query(
        "INSERT INTO monitor_state (region, state, since, episode, last_error) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (region) DO UPDATE SET \
         state = excluded.state, since = excluded.since, episode = excluded.episode, \
         last_error = excluded.last_error",
    )
    .bind(region.to_string())
    .bind(new_state)
    .bind(now)
    .bind(new_episode)
    .bind(error.clone())
    .execute(&mut *tx)
    .await?;
    for d in alerts(
        app,
        region,
        transition,
        error.as_deref().unwrap_or_default(),
    ) {
        enqueue(&mut tx, &d).await?;
    }
    audit::append(
        &mut tx,
        &Actor::system(),
        if new_state == "down" {
            "monitor.down"
        } else {
            "monitor.up"
        },
        None,
        json!({ "region": region, "episode": new_episode, "error": error }),
    )
    .await?;
    tx.commit().await?;
    Ok(transition)
}

/// `(state, episode, since)` of `region`'s shared monitor state; `("up", 0, i64::MIN)` before
/// its first change.
async fn monitor_state<'e, E>(db: E, region: &str) -> anyhow::Result<(String, i64, i64)>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let row = sqlx::query("SELECT state, episode, since FROM monitor_state WHERE region = $1")
        .bind(region.to_string())
        .fetch_optional(db)
        .await?;
    Ok(match row {
        Some(r) => (
            r.try_get("state")?,
            r.try_get("episode")?,
            r.try_get("since")?,
        ),
        None => ("up".into(), 0, i64::MIN),
    })
}

/// The region a failover away from `region` would go to: a secondary, when `region` is the
/// primary.
fn failover_target<'a>(app: &'a App, region: &str) -> Option<&'a str> {
    let regions = &app.settings.config.regions;
    if regions.get(region)?.role != "primary" {
        return None;
    }
    regions
        .iter()
        .find(|(name, r)| r.role == "secondary" && name.as_str() != region)
        .map(|(name, _)| name.as_str())
}

/// One outbox row per configured chat platform.
fn alerts(app: &App, region: &str, t: Transition, error: &str) -> Vec<NewDelivery> {
    let target = failover_target(app, region);
    let mut out = Vec::new();
    for platform in [
        app.slack.is_some().then_some("slack"),
        app.discord.is_some().then_some("discord"),
    ]
    .into_iter()
    .flatten()
    {
        let (key, text, action) = match t {
            Transition::Down { episode } => (
                format!("monitor:{platform}:{region}:down:{episode}"),
                match platform {
                    "slack" => crate::slack::text::region_down(region, error, target),
                    _ => crate::discord::text::region_down(region, error, target),
                },
                target.map(|to| ChatAction {
                    label: format!("Start failover to {to}"),
                    value: proposal_value(to),
                }),
            ),
            Transition::Up { episode } => (
                format!("monitor:{platform}:{region}:up:{episode}"),
                match platform {
                    "slack" => crate::slack::text::region_up(region),
                    _ => crate::discord::text::region_up(region),
                },
                None,
            ),
            Transition::None => continue,
        };
        let mut payload = json!({ "text": text });
        if let Some(a) = action {
            payload["action"] = json!(a);
        }
        out.push(NewDelivery {
            key,
            channel: platform.into(),
            payload,
            ordering_key: Some(format!("chat:{platform}:monitor:{region}")),
        });
    }
    out
}

/// One check: GET the URL; healthy when the status is the expected one.
pub async fn probe(
    client: &reqwest::Client,
    url: &str,
    expect: u16,
    timeout: Duration,
) -> Result<(), String> {
    match client.get(url).timeout(timeout).send().await {
        Ok(r) if r.status().as_u16() == expect => Ok(()),
        Ok(r) => Err(format!("HTTP {} (expected {expect})", r.status().as_u16())),
        Err(e) if e.is_timeout() => Err(format!("no answer within {timeout:?}")),
        Err(e) if e.is_connect() => Err("connection refused or unreachable".into()),
        Err(_) => Err("request failed".into()),
    }
}

/// Checks every region with a `health_url` until `shutdown` fires (nothing without `[monitor]`).
pub async fn run(app: App, shutdown: CancellationToken) {
    let Some(cfg) = app.settings.config.monitor.clone() else {
        return;
    };
    let interval = humantime::parse_duration(&cfg.interval).unwrap_or(Duration::from_secs(30));
    let timeout = humantime::parse_duration(&cfg.timeout).unwrap_or(Duration::from_secs(5));
    let client = reqwest::Client::new();
    let regions: Vec<(String, String)> = app
        .settings
        .config
        .regions
        .iter()
        .filter_map(|(n, r)| Some((n.clone(), r.health_url.clone()?)))
        .collect();
    let mut counters = vec![Counters::default(); regions.len()];
    loop {
        for ((region, url), c) in regions.iter().zip(counters.iter_mut()) {
            let result = probe(&client, url, cfg.expect_status, timeout).await;
            match observe(&app, &cfg, region, result, c, now_ms()).await {
                Ok(Transition::Down { episode }) => {
                    tracing::warn!(region, episode, "region is down: alerted")
                }
                Ok(Transition::Up { episode }) => tracing::info!(region, episode, "region is up"),
                Ok(Transition::None) => {}
                Err(e) => tracing::warn!(region, error = format!("{e:#}"), "monitor update failed"),
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}
