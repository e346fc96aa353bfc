//! DR testing schedules (`[[schedules]]`): `serve` requests each schedule's runbook command when
//! its cron expression comes due, as the `scheduler` (platform `system`), and raises an overdue
//! alert when no run of that runbook with the schedule's arguments succeeded within
//! `overdue_after`.
//!
//! **Exactly once:** a due time fires by inserting `schedule_fires (schedule, due_at)` (UNIQUE)
//! in the same [`Store::write`](crate::store::Store::write) transaction as the run request, so
//! a restarted process or several `serve` processes on one PostgreSQL store fire it once. A
//! process that was down fires only the most recent missed due time, never a backlog.
//!
//! A scheduled run is an ordinary request: approvals, approval cards, expiry and result posts
//! are those of any other run.

use std::{collections::BTreeMap, str::FromStr, time::Duration};

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use notifier::outbox::NewDelivery;
use serde::Serialize;
use serde_json::json;
use sqlx::Row;
use tokio_util::sync::CancellationToken;

use crate::{
    actor::Actor,
    app::App,
    approvals::{self, Fail},
    config::{Config, ScheduleConfig},
    grammar::{self, BackupRef, Command, Vocabulary},
    store::{audit, outbox::enqueue},
};

/// How often `serve` looks for due schedules.
pub const CHECK_EVERY: Duration = Duration::from_secs(20);

/// The person name scheduled runs are requested by.
pub const SCHEDULER: &str = "scheduler";

/// One `[[schedules]]` entry, parsed.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// `name`.
    pub name: String,
    /// `runbook_command`, as written.
    pub text: String,
    /// The runbook command it requests (`verify-backup`, `drill`, …).
    pub command: &'static str,
    /// The runbook arguments.
    pub args: BTreeMap<String, String>,
    /// Whether it is a `--dry-run`.
    pub dry_run: bool,
    /// The cron expression.
    pub cron: Cron,
    /// The time zone it is read in.
    pub tz: Tz,
    /// `overdue_after`.
    pub overdue_after: Duration,
    /// `catch_up_within`: a due time found later than this is recorded as missed.
    pub catch_up_within: Option<Duration>,
}

/// The runbook command, arguments and dry-run flag a parsed `/dr` command requests, or `None`
/// for commands that request no runbook (status, approve, …). Mirrors `dispatch`.
pub fn runbook_request(
    cmd: &Command,
    primary: Option<&str>,
) -> Option<(&'static str, BTreeMap<String, String>, bool)> {
    let one = |k: &str, v: String| BTreeMap::from([(k.to_string(), v)]);
    Some(match cmd {
        Command::Failover { region, dry_run } => {
            ("failover", one("region", region.clone()), *dry_run)
        }
        Command::Failback { region } => (
            "failback",
            one(
                "region",
                region
                    .clone()
                    .unwrap_or_else(|| primary.unwrap_or_default().to_string()),
            ),
            false,
        ),
        Command::VerifyBackup { backup } => {
            let b = match backup {
                BackupRef::Latest => "latest".to_string(),
                BackupRef::Id(id) => id.clone(),
            };
            ("verify-backup", one("backup", b), false)
        }
        Command::Drill { dry_run } => ("drill", BTreeMap::new(), *dry_run),
        Command::Pitr { target, dry_run } => {
            ("pitr", one("timestamp", target.to_rfc3339()), *dry_run)
        }
        Command::RecoverCorruption { target } => (
            "recover-corruption",
            one("timestamp", target.to_rfc3339()),
            false,
        ),
        Command::NotifyCustomers { template } => {
            ("notify-customers", one("template", template.clone()), false)
        }
        _ => return None,
    })
}

/// The grammar's vocabulary for a config (as `Settings` builds it).
fn vocabulary(cfg: &Config) -> Vocabulary {
    Vocabulary {
        regions: cfg.regions.keys().cloned().collect(),
        templates: crate::notify::email::TEMPLATES
            .iter()
            .map(|t| t.to_string())
            .collect(),
        ..Default::default()
    }
}

fn primary(cfg: &Config) -> Option<&str> {
    cfg.regions
        .iter()
        .find(|(_, r)| r.role == "primary")
        .map(|(n, _)| n.as_str())
}

/// Parses one entry; every problem is named with `at` (e.g. `schedules[0]`) and the key.
pub fn compile(cfg: &Config, s: &ScheduleConfig, at: &str) -> Result<Schedule, Vec<String>> {
    let mut problems = Vec::new();
    if s.name.is_empty()
        || s.name.len() > 64
        || !s
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        problems.push(format!(
            "{at}.name: `{}` must be 1 to 64 letters, digits, `-` or `_`",
            s.name
        ));
    }
    let cron = Cron::from_str(&s.cron)
        .map_err(|e| {
            problems.push(format!(
                "{at}.cron: `{}` is not a cron expression: {e}",
                s.cron
            ))
        })
        .ok();
    let tz = Tz::from_str(&s.timezone)
        .map_err(|_| {
            problems.push(format!(
                "{at}.timezone: `{}` is not an IANA time zone name like \"Europe/Berlin\"",
                s.timezone
            ))
        })
        .ok();
    // croner accepts patterns no date matches (30 February): such a schedule would never
    // fire, and never be overdue either.
    if let (Some(cron), Some(tz)) = (&cron, &tz)
        && cron
            .find_next_occurrence(&Utc::now().with_timezone(tz), false)
            .is_err()
    {
        problems.push(format!(
            "{at}.cron: `{}` never comes due (no date matches it)",
            s.cron
        ));
    }
    let overdue_after = match humantime::parse_duration(&s.overdue_after) {
        Ok(d) if d.is_zero() => {
            problems.push(format!("{at}.overdue_after: must be more than zero"));
            None
        }
        Ok(d) => Some(d),
        Err(e) => {
            problems.push(format!(
                "{at}.overdue_after: `{}` is not a duration like \"8d\": {e}",
                s.overdue_after
            ));
            None
        }
    };
    let catch_up_within = match s.catch_up_within.as_deref().map(humantime::parse_duration) {
        None => None,
        Some(Ok(d)) if !d.is_zero() => Some(d),
        Some(Ok(_)) => {
            problems.push(format!("{at}.catch_up_within: must be more than zero"));
            None
        }
        Some(Err(e)) => {
            problems.push(format!(
                "{at}.catch_up_within: `{}` is not a duration like \"6h\": {e}",
                s.catch_up_within.as_deref().unwrap_or_default()
            ));
            None
        }
    };
    let request = match grammar::parse(&s.runbook_command, &vocabulary(cfg)) {
        Err(e) => {
            problems.push(format!("{at}.runbook_command: {e}"));
            None
        }
        Ok(cmd) => match runbook_request(&cmd, primary(cfg)) {
            None => {
                problems.push(format!(
                    "{at}.runbook_command: `{}` requests no runbook (use verify-backup, drill, \
                     failover, failback, pitr, recover-corruption or notify-customers)",
                    s.runbook_command
                ));
                None
            }
            Some((command, ..)) if !cfg.runbooks.iter().any(|r| r.command == command) => {
                problems.push(format!(
                    "{at}.runbook_command: no runbook is bound to `{command}`"
                ));
                None
            }
            Some(r) => Some(r),
        },
    };
    match (cron, tz, overdue_after, request) {
        (Some(cron), Some(tz), Some(overdue_after), Some((command, args, dry_run)))
            if problems.is_empty() =>
        {
            Ok(Schedule {
                name: s.name.clone(),
                text: s.runbook_command.clone(),
                command,
                args,
                dry_run,
                cron,
                tz,
                overdue_after,
                catch_up_within,
            })
        }
        _ => Err(problems),
    }
}

/// Every problem of `[[schedules]]` (used by config validation).
pub fn problems(cfg: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let mut names = std::collections::BTreeSet::new();
    for (i, s) in cfg.schedules.iter().enumerate() {
        let at = format!("schedules[{i}]");
        if !names.insert(s.name.as_str()) {
            out.push(format!("{at}.name: `{}` is listed twice", s.name));
        }
        if let Err(p) = compile(cfg, s, &at) {
            out.extend(p);
        }
    }
    out
}

/// The configured schedules (validation already passed, so none is dropped in practice).
pub fn schedules(app: &App) -> Vec<Schedule> {
    let cfg = &app.settings.config;
    cfg.schedules
        .iter()
        .enumerate()
        .filter_map(|(i, s)| compile(cfg, s, &format!("schedules[{i}]")).ok())
        .collect()
}

impl Schedule {
    /// The most recent due time at or before `now`.
    pub fn last_due(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_previous_occurrence(&now.with_timezone(&self.tz), true)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The first due time after `now`.
    pub fn next_due(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&now.with_timezone(&self.tz), false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    fn actor(&self) -> Actor {
        Actor {
            person: Some(SCHEDULER.into()),
            account: format!("schedule:{}", self.name),
            ..Actor::system()
        }
    }
}

/// What one tick did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tick {
    /// Schedules fired by this tick: (schedule, run id; `None` when the request was refused or
    /// the due time was missed).
    pub fired: Vec<(String, Option<i64>)>,
    /// Overdue alerts enqueued (one per chat platform and schedule).
    pub overdue_alerts: usize,
    /// Schedules this tick could not handle (a store error), with the error; each is logged
    /// and tried again next tick, and never keeps the other schedules from theirs.
    pub failed: Vec<(String, String)>,
}

/// Fires every schedule due at `now` that has not fired yet and raises overdue alerts.
pub async fn tick(app: &App, now: DateTime<Utc>) -> anyhow::Result<Tick> {
    let mut out = Tick::default();
    for s in schedules(app) {
        let done = async {
            if let Some(run) = fire_due(app, &s, now).await? {
                out.fired.push((s.name.clone(), run));
            }
            out.overdue_alerts += check_overdue(app, &s, now).await?;
            anyhow::Ok(())
        }
        .await;
        if let Err(e) = done {
            let error = format!("{e:#}");
            tracing::error!(schedule = %s.name, error, "a schedule's tick failed");
            out.failed.push((s.name.clone(), error));
        }
    }
    Ok(out)
}

/// How far ahead of this process's clock another process's fire may be dated and still count.
const CLOCK_SKEW_MS: i64 = 5 * 60_000;

/// Fires `s`'s most recent due time at or before `now` unless it (or a later one, dated at
/// most `CLOCK_SKEW_MS` ahead) already fired. Returns `Some(run id or None when refused, or
/// recorded as missed: found later than `catch_up_within`)` when this call fired it.
pub async fn fire_due(
    app: &App,
    s: &Schedule,
    now: DateTime<Utc>,
) -> anyhow::Result<Option<Option<i64>>> {
    let Some(due) = s.last_due(now) else {
        return Ok(None);
    };
    let due_ms = due.timestamp_millis();
    let actor = s.actor();
    // Resolve the plan before taking the writer lock (a config problem refuses, recorded).
    let prepared = approvals::prepare(app, &actor, s.command, s.args.clone(), s.dry_run);
    let mut tx = app.store.write().await?;
    // A fire dated well after `now` came from a process whose clock runs ahead: it does not
    // stand for this due time (else one bad clock would stop the schedule until its date).
    let latest: Option<i64> = sqlx::query(
        "SELECT MAX(due_at) AS due FROM schedule_fires WHERE schedule = $1 AND due_at <= $2",
    )
    .bind(s.name.clone())
    .bind(now.timestamp_millis() + CLOCK_SKEW_MS)
    .fetch_one(&mut *tx)
    .await?
    .try_get("due")?;
    if latest.is_some_and(|l| l >= due_ms) {
        return Ok(None);
    }
    // Found too late (drbot was down): recorded as missed, not requested at an hour nobody
    // planned for.
    let late = now - due;
    let missed = s
        .catch_up_within
        .filter(|limit| late.to_std().is_ok_and(|l| l > *limit));
    let (action, run_id, error) = match missed {
        Some(limit) => {
            let error = format!(
                "missed: came due at {} while drbot was not running, and {} is later than \
                 catch_up_within ({})",
                due.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                humantime::format_duration(Duration::from_secs(late.num_seconds().max(0) as u64)),
                humantime::format_duration(limit)
            );
            tracing::warn!(schedule = %s.name, error, "a scheduled DR test was missed");
            ("schedule.missed", None, Some(error))
        }
        None => {
            let outcome = match &prepared {
                Ok(p) => approvals::insert_request(app, &mut tx, &actor, p, &s.text).await,
                Err(Fail::User(e)) => Err(Fail::User(e.clone())),
                Err(Fail::Internal(e)) => Err(Fail::Internal(anyhow::anyhow!("{e:#}"))),
            };
            match outcome {
                Ok(id) => ("schedule.fired", Some(id), None),
                Err(Fail::User(e)) => ("schedule.fired", None, Some(serde_json::to_string(&e)?)),
                Err(Fail::Internal(e)) => return Err(e),
            }
        }
    };
    sqlx::query(
        "INSERT INTO schedule_fires (schedule, due_at, run_id, error, fired_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(s.name.clone())
    .bind(due_ms)
    .bind(run_id)
    .bind(error.clone())
    .bind(now.timestamp_millis())
    .execute(&mut *tx)
    .await?;
    audit::append(
        &mut tx,
        &actor,
        action,
        run_id,
        json!({ "schedule": s.name, "due_at": due.to_rfc3339(), "command": s.text, "error": error }),
    )
    .await?;
    tx.commit().await?;
    if let (Some(id), Ok(p)) = (run_id, &prepared) {
        approvals::publish_requested(app, p, id);
    }
    Ok(Some(run_id))
}

/// When the last run of `s`'s runbook with `s`'s arguments succeeded (ms), if any: a drill
/// of another region, or a check of another backup, does not prove this schedule's test.
async fn last_success(app: &App, s: &Schedule) -> anyhow::Result<Option<i64>> {
    use futures::TryStreamExt;
    let Some(rb) = app.settings.runbook_for(s.command) else {
        return Ok(None);
    };
    let mut rows = sqlx::query(
        "SELECT plan, COALESCE(finished_at, updated_at) AS at FROM runs \
         WHERE runbook = $1 AND state = 'succeeded' AND dry_run = $2 ORDER BY at DESC",
    )
    .bind(rb.name.clone())
    .bind(i64::from(s.dry_run))
    .fetch(app.store.pool());
    while let Some(row) = rows.try_next().await? {
        let plan: String = row.try_get("plan")?;
        let args = serde_json::from_str::<serde_json::Value>(&plan)
            .ok()
            .and_then(|p| {
                serde_json::from_value::<BTreeMap<String, String>>(p["args"].clone()).ok()
            });
        if args.as_ref() == Some(&s.args) {
            return Ok(Some(row.try_get("at")?));
        }
    }
    Ok(None)
}

/// When this schedule first fired (ms), if it ever did.
async fn first_fire(app: &App, s: &Schedule) -> anyhow::Result<Option<i64>> {
    Ok(
        sqlx::query("SELECT MIN(fired_at) AS due FROM schedule_fires WHERE schedule = $1")
            .bind(s.name.clone())
            .fetch_one(app.store.pool())
            .await?
            .try_get("due")?,
    )
}

/// Since when (ms) `s` counts as unproven at `now`, and how many whole `overdue_after`
/// periods have passed: overdue when the count is at least 1. The clock starts at the last
/// success of the runbook, else at the schedule's first fire (nothing is overdue before a
/// schedule first came due).
pub async fn overdue_period(
    app: &App,
    s: &Schedule,
    now: DateTime<Utc>,
) -> anyhow::Result<Option<(i64, i64)>> {
    let since = match last_success(app, s).await? {
        Some(t) => t,
        None => match first_fire(app, s).await? {
            Some(t) => t,
            None => return Ok(None),
        },
    };
    let period = (now.timestamp_millis() - since) / (s.overdue_after.as_millis() as i64).max(1);
    Ok((period >= 1).then_some((since, period)))
}

/// Enqueues one overdue alert per chat platform for each new overdue period of `s`.
pub async fn check_overdue(app: &App, s: &Schedule, now: DateTime<Utc>) -> anyhow::Result<usize> {
    let platforms: Vec<&str> = [
        app.slack.is_some().then_some("slack"),
        app.discord.is_some().then_some("discord"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if platforms.is_empty() {
        return Ok(0);
    }
    let Some((since, period)) = overdue_period(app, s, now).await? else {
        return Ok(0);
    };
    let last = last_success(app, s)
        .await?
        .and_then(|t| Utc.timestamp_millis_opt(t).single())
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string());
    let after = humantime::format_duration(s.overdue_after).to_string();
    let mut tx = app.store.write().await?;
    let mut added = 0;
    for platform in platforms {
        let text = match platform {
            "slack" => {
                crate::slack::text::schedule_overdue(&s.name, &s.text, last.as_deref(), &after)
            }
            _ => crate::discord::text::schedule_overdue(&s.name, &s.text, last.as_deref(), &after),
        };
        let new = enqueue(
            &mut tx,
            &NewDelivery {
                key: format!("schedule:{platform}:{}:overdue:{since}:{period}", s.name),
                channel: platform.into(),
                payload: json!({ "text": text }),
                ordering_key: Some(format!("chat:{platform}:schedule:{}", s.name)),
            },
        )
        .await?;
        added += usize::from(new);
    }
    tx.commit().await?;
    Ok(added)
}

/// One schedule's line of `/dr status` and of the status page's DR evidence.
#[derive(Debug, Clone, Serialize)]
pub struct ScheduleStatus {
    /// Schedule name.
    pub name: String,
    /// The command it runs.
    pub command: String,
    /// The runbook bound to that command (its name).
    pub runbook: String,
    /// The newest fired run (id and state), if any.
    pub last_run: Option<(i64, String)>,
    /// When the newest fire's run finished (else last changed), or when a refused fire
    /// happened; `None` if it never fired.
    pub last_at: Option<DateTime<Utc>>,
    /// Why the newest fire requested no run, if it was refused.
    pub last_error: Option<String>,
    /// When it next comes due (RFC 3339, UTC).
    pub next_due: Option<String>,
    /// Whether no run of its runbook with its arguments succeeded within `overdue_after`.
    pub overdue: bool,
}

/// Each schedule's last result and next due time at `now`.
pub async fn status(app: &App, now: DateTime<Utc>) -> anyhow::Result<Vec<ScheduleStatus>> {
    let mut out = Vec::new();
    for s in schedules(app) {
        let row = sqlx::query(
            "SELECT f.run_id, f.error, f.fired_at, r.state, \
             COALESCE(r.finished_at, r.updated_at) AS run_at FROM schedule_fires f \
             LEFT JOIN runs r ON r.id = f.run_id WHERE f.schedule = $1 \
             ORDER BY f.due_at DESC LIMIT 1",
        )
        .bind(s.name.clone())
        .fetch_optional(app.store.pool())
        .await?;
        let (last_run, last_error, last_at) = match row {
            Some(r) => {
                let id: Option<i64> = r.try_get("run_id")?;
                let state: Option<String> = r.try_get("state")?;
                let run_at: Option<i64> = r.try_get("run_at")?;
                let fired_at: i64 = r.try_get("fired_at")?;
                let at = Utc
                    .timestamp_millis_opt(run_at.unwrap_or(fired_at))
                    .single();
                (id.zip(state), r.try_get("error")?, at)
            }
            None => (None, None, None),
        };
        out.push(ScheduleStatus {
            name: s.name.clone(),
            command: s.text.clone(),
            runbook: app
                .settings
                .runbook_for(s.command)
                .map_or_else(|| s.command.to_string(), |r| r.name.clone()),
            last_run,
            last_at,
            last_error,
            next_due: s
                .next_due(now)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            overdue: overdue_period(app, &s, now).await?.is_some(),
        });
    }
    Ok(out)
}

/// Ticks every [`CHECK_EVERY`] until `shutdown` fires (nothing without `[[schedules]]`).
pub async fn run(app: App, shutdown: CancellationToken) {
    if app.settings.config.schedules.is_empty() {
        return;
    }
    loop {
        match tick(&app, Utc::now()).await {
            Ok(t) => {
                for (name, run) in &t.fired {
                    tracing::info!(schedule = name, run, "schedule fired");
                }
                if t.overdue_alerts > 0 {
                    tracing::warn!(alerts = t.overdue_alerts, "DR schedule overdue: alerted");
                }
            }
            Err(e) => tracing::warn!(error = format!("{e:#}"), "schedule tick failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(CHECK_EVERY) => {}
        }
    }
}
