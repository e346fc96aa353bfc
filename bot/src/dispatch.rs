//! The one path every `/dr` command takes, whatever its front-end: parse with the shared
//! grammar, check permissions, act through the approval engine, audit, count.
//!
//! **Architecture Invariant:** Slack, Discord and `drbot cmd` all call [`handle`] (or, for
//! button clicks, the same [`crate::approvals`] functions); none has its own rules.

use std::collections::BTreeMap;

use serde_json::json;

use crate::{
    actor::Actor,
    app::App,
    approvals::{self, Fail},
    grammar::{self, BackupRef, Command},
    metrics::label,
    reply::{RegionStatus, Reply, StatusView, UserError},
    store::{audit, runs::RequestAction},
};

/// Longest command text kept in the audit log.
const AUDIT_TEXT_MAX: usize = 1000;

/// Handles one command typed by `actor`, audits it, and says what to answer.
pub async fn handle(app: &App, actor: &Actor, text: &str) -> Reply {
    let parsed = grammar::parse(text, app.settings.vocabulary());
    let (sub, reply) = match parsed {
        Err(e) => (
            "invalid",
            Reply::Refused(UserError::Parse {
                message: e.to_string(),
            }),
        ),
        Ok(cmd) => {
            let sub = cmd.subcommand().name();
            let reply = if actor.person.is_none() && !cmd.subcommand().is_read_only() {
                Reply::Refused(UserError::UnknownAccount)
            } else {
                match execute(app, actor, cmd, text).await {
                    Ok(r) => r,
                    Err(Fail::User(e)) => Reply::Refused(e),
                    Err(Fail::Internal(e)) => internal(e, "handling a command"),
                }
            };
            (sub, reply)
        }
    };
    if matches!(sub, "approve" | "deny") {
        let outcome = match (&reply, sub) {
            (Reply::Approved { .. }, _) => "approved",
            (Reply::Denied(_), _) => "denied",
            (_, "approve") => "approve_refused",
            _ => "deny_refused",
        };
        app.metrics.inc(
            "drbot_approvals_total",
            format!("outcome=\"{}\"", label(outcome)),
        );
    }
    app.metrics.inc(
        "drbot_commands_total",
        format!(
            "subcommand=\"{}\",platform=\"{}\",outcome=\"{}\"",
            sub,
            actor.platform.as_str(),
            reply.outcome()
        ),
    );
    if let Err(e) = audit_command(app, actor, text, &reply).await {
        if reply.changed() {
            // The change took effect, with its own audit row in its transaction: the person is
            // told what happened, not that it failed.
            tracing::error!(
                error = format!("{e:#}"),
                outcome = reply.outcome(),
                "the command took effect, but auditing its text failed"
            );
            return reply;
        }
        return internal(e, "auditing a command");
    }
    reply
}

/// Logs an internal error with context and gives the short generic reply.
pub fn internal(e: anyhow::Error, context: &str) -> Reply {
    let reference = format!("{:08x}", rand_u32());
    tracing::error!(
        reference,
        error = format!("{e:#}"),
        "internal error while {context}"
    );
    Reply::Internal { reference }
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish() as u32
}

async fn audit_command(app: &App, actor: &Actor, text: &str, reply: &Reply) -> anyhow::Result<()> {
    let mut t = text.to_string();
    if t.len() > AUDIT_TEXT_MAX {
        let mut end = AUDIT_TEXT_MAX;
        while !t.is_char_boundary(end) {
            end -= 1;
        }
        t.truncate(end);
    }
    let run_id = match reply {
        Reply::Run(v) | Reply::Requested(v) | Reply::Denied(v) | Reply::DecisionRequested(v) => {
            Some(v.run.id)
        }
        Reply::Approved { view, .. } | Reply::Cancelled { view, .. } => Some(view.run.id),
        _ => None,
    };
    let mut detail = json!({ "text": t, "outcome": reply.outcome() });
    if let Reply::Refused(e) = reply {
        detail["refusal"] = serde_json::to_value(e)?;
    }
    if let Reply::Internal { reference } = reply {
        detail["reference"] = json!(reference);
    }
    let entry = audit::Entry {
        actor: actor.clone(),
        action: "command".into(),
        run_id,
        detail,
    };
    // A read-only answer (help, status, run lists) changed nothing: its row is queued (in
    // order, with backpressure) without waiting for the commit. Everything else is committed
    // before the answer goes out.
    if matches!(
        reply,
        Reply::Help { .. }
            | Reply::Status(_)
            | Reply::Runs { .. }
            | Reply::Run(_)
            | Reply::Checklists { .. }
    ) {
        app.audit.queue(entry).await?;
    } else {
        app.audit.append(entry).await?;
    }
    Ok(())
}

/// A recovery target time that has already happened; a future one is refused before anything
/// is requested (the runbook would stop production first and only then find no such time).
fn past(target: chrono::DateTime<chrono::Utc>) -> Result<chrono::DateTime<chrono::Utc>, Fail> {
    let now = chrono::Utc::now();
    if target > now {
        let fmt = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d %H:%M:%S UTC").to_string();
        return Err(Fail::User(UserError::TargetInFuture {
            target: fmt(target),
            now: fmt(now),
        }));
    }
    Ok(target)
}

async fn execute(app: &App, actor: &Actor, cmd: Command, text: &str) -> Result<Reply, Fail> {
    let one = |k: &str, v: String| BTreeMap::from([(k.to_string(), v)]);
    Ok(match cmd {
        Command::Help { topic } => Reply::Help {
            topic: topic.map(|t| t.name().to_string()),
            text: match topic {
                Some(t) => grammar::topic_help(t),
                None => grammar::help_text(),
            },
        },
        Command::Status => Reply::Status(status(app).await?),
        Command::Runs => Reply::Runs {
            runs: app.store.runs(20, false).await?,
        },
        Command::Run { run } => Reply::Run(
            approvals::view(&app.store, run.0)
                .await?
                .ok_or(Fail::User(UserError::UnknownRun { run: run.0 }))?,
        ),
        Command::Failover { region, dry_run } => {
            let v =
                approvals::request(app, actor, "failover", one("region", region), dry_run, text)
                    .await?;
            Reply::Requested(v)
        }
        Command::Failback { region } => {
            let region = match region {
                Some(r) => r,
                None => app
                    .settings
                    .primary_region()
                    .unwrap_or_default()
                    .to_string(),
            };
            Reply::Requested(
                approvals::request(app, actor, "failback", one("region", region), false, text)
                    .await?,
            )
        }
        Command::VerifyBackup { backup } => {
            let b = match backup {
                BackupRef::Latest => "latest".to_string(),
                BackupRef::Id(id) => id,
            };
            Reply::Requested(
                approvals::request(app, actor, "verify-backup", one("backup", b), false, text)
                    .await?,
            )
        }
        Command::Drill { dry_run } => Reply::Requested(
            approvals::request(app, actor, "drill", BTreeMap::new(), dry_run, text).await?,
        ),
        Command::Pitr { target, dry_run } => Reply::Requested(
            approvals::request(
                app,
                actor,
                "pitr",
                one("timestamp", past(target)?.to_rfc3339()),
                dry_run,
                text,
            )
            .await?,
        ),
        Command::RecoverCorruption { target } => Reply::Requested(
            approvals::request(
                app,
                actor,
                "recover-corruption",
                one("timestamp", past(target)?.to_rfc3339()),
                false,
                text,
            )
            .await?,
        ),
        Command::NotifyCustomers { template } => Reply::Requested(
            approvals::request(
                app,
                actor,
                "notify-customers",
                one("template", template),
                false,
                text,
            )
            .await?,
        ),
        Command::Approve { run } => {
            let (view, quorum) = approvals::approve(app, actor, run.0, None).await?;
            Reply::Approved { view, quorum }
        }
        Command::Deny { run, reason } => {
            Reply::Denied(approvals::deny(app, actor, run.0, None, reason.as_deref()).await?)
        }
        Command::Cancel { run } => {
            let (view, immediate) = approvals::cancel(app, actor, run.0).await?;
            Reply::Cancelled { view, immediate }
        }
        Command::Retry { run } => decision(app, actor, run.0, RequestAction::Retry).await?,
        Command::Skip { run } => decision(app, actor, run.0, RequestAction::Skip).await?,
        Command::Abort { run } => decision(app, actor, run.0, RequestAction::Abort).await?,
        Command::Incident(c) => Reply::Incident(crate::incidents::handle(app, actor, c).await?),
        Command::Checklist { name: None } => Reply::Checklists {
            checklists: app.settings.config.checklists.clone(),
        },
        Command::Checklist { name: Some(name) } => {
            let def = app
                .settings
                .config
                .checklists
                .iter()
                .find(|c| c.name == name)
                .ok_or_else(|| {
                    anyhow::anyhow!("checklist `{name}` passed the grammar but is not configured")
                })?;
            let person = actor.person.as_deref().unwrap_or(&actor.account);
            Reply::Checklist(app.store.create_checklist(def, person).await?)
        }
        Command::Tick {
            checklist,
            item,
            ticked,
        } => crate::checklists::tick::typed(app, actor, checklist.0, &item, ticked).await?,
    })
}

/// `/dr retry|skip|abort <run>`: asks for the decision, or approves it when someone else
/// asked for the same one.
async fn decision(
    app: &App,
    actor: &Actor,
    run: i64,
    action: RequestAction,
) -> Result<Reply, Fail> {
    Ok(
        match approvals::decide_or_approve(app, actor, run, action).await? {
            approvals::Decided::Requested(view) => Reply::DecisionRequested(view),
            approvals::Decided::Approved(view, quorum) => Reply::Approved { view, quorum },
        },
    )
}

async fn status(app: &App) -> anyhow::Result<StatusView> {
    let regions = app
        .settings
        .config
        .regions
        .iter()
        .map(|(name, r)| RegionStatus {
            name: name.clone(),
            role: r.role.clone(),
            description: r.description.clone(),
        })
        .collect();
    let schedules = crate::schedule::status(app, chrono::Utc::now()).await?;
    let generation = app.events.generation();
    if let Ok(cache) = app.status_cache.lock()
        && let Some(c) = cache.as_ref()
        && c.generation == generation
        && c.at.elapsed() < crate::app::STATUS_CACHE_TTL
    {
        return Ok(StatusView {
            regions,
            active: c.active.clone(),
            schedules,
        });
    }
    let active = app.store.runs(20, true).await?;
    if let Ok(mut cache) = app.status_cache.lock() {
        *cache = Some(crate::app::StatusCache {
            generation,
            at: std::time::Instant::now(),
            active: active.clone(),
        });
    }
    Ok(StatusView {
        regions,
        active,
        schedules,
    })
}

/// A click on the health monitor's "Start failover to <region>" button: exactly as if the
/// clicker typed `/dr failover <region>` (they become the requester; approvals still apply).
pub async fn propose_failover(app: &App, actor: &Actor, region: &str) -> Reply {
    handle(app, actor, &format!("/dr failover {region}")).await
}

/// What a chat button asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClickVerb {
    /// Approve the named request.
    Approve,
    /// Deny the named request.
    Deny,
    /// Ask to retry the interrupted step.
    Retry,
    /// Ask to skip the interrupted step.
    Skip,
    /// Ask to abort the run.
    Abort,
}

/// A button click: verb, run, and the request the button was rendered for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Click {
    /// What it asks.
    pub verb: ClickVerb,
    /// The run the button names (checked against the card it was clicked on).
    pub run: i64,
    /// The request the button names (0 for retry/skip/abort).
    pub request: i64,
}

impl Click {
    /// Reads a button value `<verb>:<run>:<request>`.
    pub fn parse(value: &str) -> Option<Click> {
        let mut it = value.split(':');
        let verb = match it.next()? {
            "approve" => ClickVerb::Approve,
            "deny" => ClickVerb::Deny,
            "retry" => ClickVerb::Retry,
            "skip" => ClickVerb::Skip,
            "abort" => ClickVerb::Abort,
            _ => return None,
        };
        let run = it.next()?.parse().ok().filter(|r: &i64| *r > 0)?;
        let request = it.next()?.parse().ok().filter(|r: &i64| *r >= 0)?;
        if it.next().is_some() {
            return None;
        }
        Some(Click { verb, run, request })
    }

    fn name(&self) -> &'static str {
        match self.verb {
            ClickVerb::Approve => "approve",
            ClickVerb::Deny => "deny",
            ClickVerb::Retry => "retry",
            ClickVerb::Skip => "skip",
            ClickVerb::Abort => "abort",
        }
    }
}

/// Handles a button click through the approval engine (never trusting the button alone: the
/// engine re-checks the person, role, request and fingerprint), audits and counts it.
pub async fn click(app: &App, actor: &Actor, c: &Click) -> Reply {
    let res = match c.verb {
        ClickVerb::Approve => approvals::approve(app, actor, c.run, Some(c.request))
            .await
            .map(|(view, quorum)| Reply::Approved { view, quorum }),
        ClickVerb::Deny => approvals::deny(app, actor, c.run, Some(c.request), None)
            .await
            .map(Reply::Denied),
        ClickVerb::Retry => approvals::decide(app, actor, c.run, RequestAction::Retry)
            .await
            .map(Reply::DecisionRequested),
        ClickVerb::Skip => approvals::decide(app, actor, c.run, RequestAction::Skip)
            .await
            .map(Reply::DecisionRequested),
        ClickVerb::Abort => approvals::decide(app, actor, c.run, RequestAction::Abort)
            .await
            .map(Reply::DecisionRequested),
    };
    let reply = match res {
        Ok(r) => r,
        Err(Fail::User(e)) => Reply::Refused(e),
        Err(Fail::Internal(e)) => internal(e, "handling a click"),
    };
    audit_click(app, actor, c, &reply).await;
    reply
}

/// Audits and counts a click and its outcome.
pub async fn audit_click(app: &App, actor: &Actor, c: &Click, reply: &Reply) {
    if matches!(c.verb, ClickVerb::Approve | ClickVerb::Deny) {
        let outcome = match reply {
            Reply::Approved { .. } => "approved",
            Reply::Denied(_) => "denied",
            _ if c.verb == ClickVerb::Approve => "approve_refused",
            _ => "deny_refused",
        };
        app.metrics
            .inc("drbot_approvals_total", format!("outcome=\"{outcome}\""));
    }
    let mut detail = json!({
        "click": c.name(), "request_id": c.request, "outcome": reply.outcome(),
    });
    if let Reply::Refused(e) = reply {
        detail["refusal"] = serde_json::to_value(e).unwrap_or_default();
    }
    let entry = audit::Entry {
        actor: actor.clone(),
        action: "click".into(),
        run_id: Some(c.run),
        detail,
    };
    if let Err(e) = app.audit.append(entry).await {
        tracing::error!(error = format!("{e:#}"), "auditing a click failed");
    }
}
