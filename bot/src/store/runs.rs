//! Runs, their steps and approval requests: rows, states and the queries the approval engine
//! and the run driver share.

use recovery::{engine::StepState, plan::Plan};
use serde::Serialize;
use sqlx::{Any, Executor, Row, any::AnyRow};

use super::{Store, Tx, now_ms};

/// Lifecycle of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Waiting for two-person approval.
    AwaitingApproval,
    /// Approved (or needs none); waiting for a process to drive it.
    Queued,
    /// Being driven.
    Running,
    /// Paused before a gated step, waiting for its approval.
    AwaitingGate,
    /// Paused: an interrupted non-idempotent step needs a person's decision.
    NeedsAttention,
    /// Ended well.
    Succeeded,
    /// A step failed.
    Failed,
    /// Cancelled by a person.
    Cancelled,
    /// The request was denied.
    Denied,
    /// The request expired unapproved.
    Expired,
    /// The plan changed before approval; request again.
    Void,
    /// Aborted after needing attention.
    Aborted,
}

impl RunState {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AwaitingApproval => "awaiting_approval",
            Self::Queued => "queued",
            Self::Running => "running",
            Self::AwaitingGate => "awaiting_gate",
            Self::NeedsAttention => "needs_attention",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Denied => "denied",
            Self::Expired => "expired",
            Self::Void => "void",
            Self::Aborted => "aborted",
        }
    }
    /// Reads a stored name.
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        Ok(match s {
            "awaiting_approval" => Self::AwaitingApproval,
            "queued" => Self::Queued,
            "running" => Self::Running,
            "awaiting_gate" => Self::AwaitingGate,
            "needs_attention" => Self::NeedsAttention,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            "denied" => Self::Denied,
            "expired" => Self::Expired,
            "void" => Self::Void,
            "aborted" => Self::Aborted,
            other => anyhow::bail!("unknown run state `{other}` in the store"),
        })
    }
    /// Not yet ended.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            Self::AwaitingApproval
                | Self::Queued
                | Self::Running
                | Self::AwaitingGate
                | Self::NeedsAttention
        )
    }
}

/// What an approval request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestAction {
    /// Run the runbook.
    Run,
    /// Run gated step `step_idx`.
    Gate,
    /// Re-run interrupted step `step_idx`.
    Retry,
    /// Skip interrupted step `step_idx`.
    Skip,
    /// Abort the run.
    Abort,
}

impl RequestAction {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Run => "run",
            Self::Gate => "gate",
            Self::Retry => "retry",
            Self::Skip => "skip",
            Self::Abort => "abort",
        }
    }
    fn parse(s: &str) -> anyhow::Result<Self> {
        Ok(match s {
            "run" => Self::Run,
            "gate" => Self::Gate,
            "retry" => Self::Retry,
            "skip" => Self::Skip,
            "abort" => Self::Abort,
            other => anyhow::bail!("unknown request action `{other}` in the store"),
        })
    }
}

/// A run as stored.
#[derive(Debug, Clone, Serialize)]
pub struct RunRow {
    /// Id shown to users.
    pub id: i64,
    /// Runbook name.
    pub runbook: String,
    /// The command as typed.
    pub command: String,
    /// The plan as approved.
    pub plan: Plan,
    /// Plan fingerprint.
    pub fingerprint: String,
    /// Lock key.
    pub target: String,
    /// Has destructive steps.
    pub destructive: bool,
    /// Dry run.
    pub dry_run: bool,
    /// Lifecycle state.
    pub state: RunState,
    /// Requesting person.
    pub requested_by: String,
    /// Requesting account.
    pub requested_account: String,
    /// Platform of the request.
    pub platform: String,
    /// Channel of the request.
    pub channel: Option<String>,
    /// Cancel was asked for.
    pub cancel_requested: bool,
    /// Process driving it.
    pub lease_owner: Option<String>,
    /// Why it ended or paused.
    pub detail: Option<String>,
    /// While it waits (`needs_attention`) for checklist items a step requires: that step.
    pub held_step: Option<i64>,
    /// Times, ms since the epoch.
    pub created_at: i64,
    /// Last change.
    pub updated_at: i64,
    /// First step started.
    pub started_at: Option<i64>,
    /// Ended.
    pub finished_at: Option<i64>,
}

/// A step of a run as stored.
#[derive(Debug, Clone, Serialize)]
pub struct StepRow {
    /// Position.
    pub idx: i64,
    /// Name.
    pub name: String,
    /// Step type.
    pub kind: String,
    /// Changes production.
    pub destructive: bool,
    /// Safe to run twice.
    pub idempotent: bool,
    /// Needs its own approval.
    pub gate: bool,
    /// Its gate was approved.
    pub gate_approved: bool,
    /// State.
    pub state: StepState,
    /// Attempts started.
    pub attempts: i64,
    /// Times.
    pub started_at: Option<i64>,
    /// Times.
    pub finished_at: Option<i64>,
    /// Duration of the last attempt.
    pub duration_ms: Option<i64>,
    /// One line.
    pub summary: Option<String>,
    /// Output.
    pub log: Option<String>,
    /// Error.
    pub error: Option<String>,
    /// It measured a drill (`pg_drill_measure`) and a target was missed.
    pub missed_target: bool,
}

/// An approval request as stored.
#[derive(Debug, Clone, Serialize)]
pub struct RequestRow {
    /// Id.
    pub id: i64,
    /// Run.
    pub run_id: i64,
    /// What it asks for.
    pub action: RequestAction,
    /// Step concerned (gate, retry, skip).
    pub step_idx: Option<i64>,
    /// Fingerprint of the plan it approves.
    pub fingerprint: String,
    /// Person who asked.
    pub requester: String,
    /// Their account.
    pub requester_account: String,
    /// Approvals needed.
    pub required: i64,
    /// `pending`, `approved`, `denied`, `expired`, `cancelled`, `void`.
    pub state: String,
    /// Times.
    pub created_at: i64,
    /// Deadline.
    pub expires_at: i64,
    /// Who ended it (denier, canceller).
    pub decided_by: Option<String>,
    /// Deny reason.
    pub reason: Option<String>,
}

/// One approval.
#[derive(Debug, Clone, Serialize)]
pub struct ApprovalRow {
    /// Person.
    pub person: String,
    /// Account used.
    pub account: String,
    /// Platform used.
    pub platform: String,
    /// Role that allowed it.
    pub role: String,
    /// When.
    pub created_at: i64,
}

/// Booleans are stored as 0/1 integers on both backends (the `Any` driver maps no BOOLEAN).
pub fn flag(r: &AnyRow, col: &str) -> Result<bool, sqlx::Error> {
    Ok(r.try_get::<i64, _>(col)? != 0)
}

fn run_from(r: &AnyRow) -> anyhow::Result<RunRow> {
    let plan: String = r.try_get("plan")?;
    Ok(RunRow {
        id: r.try_get("id")?,
        runbook: r.try_get("runbook")?,
        command: r.try_get("command")?,
        plan: serde_json::from_str(&plan)?,
        fingerprint: r.try_get("fingerprint")?,
        target: r.try_get("target")?,
        destructive: flag(r, "destructive")?,
        dry_run: flag(r, "dry_run")?,
        state: RunState::parse(&r.try_get::<String, _>("state")?)?,
        requested_by: r.try_get("requested_by")?,
        requested_account: r.try_get("requested_account")?,
        platform: r.try_get("platform")?,
        channel: r.try_get("channel")?,
        cancel_requested: flag(r, "cancel_requested")?,
        lease_owner: r.try_get("lease_owner")?,
        detail: r.try_get("detail")?,
        held_step: r.try_get("held_step")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        started_at: r.try_get("started_at")?,
        finished_at: r.try_get("finished_at")?,
    })
}

pub(crate) fn step_from(r: &AnyRow) -> anyhow::Result<StepRow> {
    let state: String = r.try_get("state")?;
    Ok(StepRow {
        idx: r.try_get("idx")?,
        name: r.try_get("name")?,
        kind: r.try_get("kind")?,
        destructive: flag(r, "destructive")?,
        idempotent: flag(r, "idempotent")?,
        gate: flag(r, "gate")?,
        gate_approved: flag(r, "gate_approved")?,
        state: StepState::parse(&state)
            .ok_or_else(|| anyhow::anyhow!("unknown step state `{state}`"))?,
        attempts: r.try_get("attempts")?,
        started_at: r.try_get("started_at")?,
        finished_at: r.try_get("finished_at")?,
        duration_ms: r.try_get("duration_ms")?,
        summary: r.try_get("summary")?,
        log: r.try_get("log")?,
        error: r.try_get("error")?,
        missed_target: r
            .try_get::<Option<String>, _>("data")?
            .and_then(|d| serde_json::from_str::<serde_json::Value>(&d).ok())
            .is_some_and(|d| d["measured"] == true && d["met"] == false),
    })
}

pub(crate) fn request_from(r: &AnyRow) -> anyhow::Result<RequestRow> {
    Ok(RequestRow {
        id: r.try_get("id")?,
        run_id: r.try_get("run_id")?,
        action: RequestAction::parse(&r.try_get::<String, _>("action")?)?,
        step_idx: r.try_get("step_idx")?,
        fingerprint: r.try_get("fingerprint")?,
        requester: r.try_get("requester")?,
        requester_account: r.try_get("requester_account")?,
        required: r.try_get("required")?,
        state: r.try_get("state")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        decided_by: r.try_get("decided_by")?,
        reason: r.try_get("reason")?,
    })
}

/// A run to insert.
pub struct NewRun<'a> {
    /// The resolved plan.
    pub plan: &'a Plan,
    /// The command as typed.
    pub command: &'a str,
    /// Initial state (`awaiting_approval` or `queued`).
    pub state: RunState,
    /// Requesting person (or account, for read-only runs by unknown accounts).
    pub requested_by: &'a str,
    /// Requesting account.
    pub requested_account: &'a str,
    /// Platform.
    pub platform: &'a str,
    /// Channel.
    pub channel: Option<&'a str>,
}

/// Runs a query returning rows through any executor.
async fn rows<'e, E: Executor<'e, Database = Any>>(
    e: E,
    q: sqlx::query::Query<'e, Any, sqlx::any::AnyArguments>,
) -> anyhow::Result<Vec<AnyRow>> {
    Ok(q.fetch_all(e).await?)
}

const RUN_COLS: &str = "id, runbook, command, plan, fingerprint, target, destructive, dry_run, state, \
     requested_by, requested_account, platform, channel, cancel_requested, lease_owner, detail, \
     held_step, created_at, updated_at, started_at, finished_at";

/// The run holding `target`, if one is active and destructive.
pub async fn active_on_target(tx: &mut Tx, target: &str) -> anyhow::Result<Option<i64>> {
    let r = sqlx::query("SELECT id FROM runs WHERE active_target = $1")
        .bind(target.to_string())
        .fetch_optional(&mut **tx)
        .await?;
    Ok(match r {
        Some(r) => Some(r.try_get("id")?),
        None => None,
    })
}

/// Inserts a run and its steps.
pub async fn insert_run(tx: &mut Tx, new: &NewRun<'_>) -> anyhow::Result<i64> {
    let now = now_ms();
    let holds_target = new.plan.is_destructive() && !new.plan.dry_run && new.state.is_active();
    let row = sqlx::query(
        "INSERT INTO runs (runbook, command, plan, fingerprint, target, destructive, dry_run, state, \
         active_target, requested_by, requested_account, platform, channel, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14) RETURNING id",
    )
    .bind(new.plan.runbook.clone())
    .bind(new.command.to_string())
    .bind(serde_json::to_string(new.plan)?)
    .bind(new.plan.fingerprint.clone())
    .bind(new.plan.target.clone())
    .bind(new.plan.is_destructive() as i64)
    .bind(new.plan.dry_run as i64)
    .bind(new.state.as_str())
    .bind(holds_target.then(|| new.plan.target.clone()))
    .bind(new.requested_by.to_string())
    .bind(new.requested_account.to_string())
    .bind(new.platform.to_string())
    .bind(new.channel.map(str::to_string))
    .bind(now)
    .fetch_one(&mut **tx)
    .await?;
    let id: i64 = row.try_get("id")?;
    for (i, s) in new.plan.steps.iter().enumerate() {
        sqlx::query(
            "INSERT INTO run_steps (run_id, idx, name, kind, destructive, idempotent, gate) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id)
        .bind(i as i64)
        .bind(s.name.clone())
        .bind(s.kind.clone())
        .bind(s.destructive as i64)
        .bind(s.idempotent as i64)
        .bind(s.gate as i64)
        .execute(&mut **tx)
        .await?;
    }
    Ok(id)
}

/// Moves a run to `state`, releasing its target when it ends.
pub async fn set_run_state(
    tx: &mut Tx,
    id: i64,
    state: RunState,
    detail: Option<&str>,
) -> anyhow::Result<()> {
    let now = now_ms();
    let ended = !state.is_active();
    sqlx::query(
        "UPDATE runs SET state = $1, updated_at = $2, detail = COALESCE($3, detail), \
         held_step = CASE WHEN $1 = 'needs_attention' THEN held_step ELSE NULL END, \
         active_target = CASE WHEN $4 = 1 THEN NULL ELSE active_target END, \
         finished_at = CASE WHEN $4 = 1 THEN $2 ELSE finished_at END, \
         lease_owner = CASE WHEN $4 = 1 THEN NULL ELSE lease_owner END \
         WHERE id = $5",
    )
    .bind(state.as_str())
    .bind(now)
    .bind(detail.map(str::to_string))
    .bind(ended as i64)
    .bind(id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Inserts a pending approval request; fails if the run already has one open.
#[allow(clippy::too_many_arguments)]
pub async fn insert_request(
    tx: &mut Tx,
    run_id: i64,
    action: RequestAction,
    step_idx: Option<i64>,
    fingerprint: &str,
    requester: &str,
    requester_account: &str,
    required: i64,
    expires_at: i64,
) -> anyhow::Result<i64> {
    let row = sqlx::query(
        "INSERT INTO approval_requests (run_id, action, step_idx, fingerprint, requester, \
         requester_account, required, state, pending_run, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $1, $8, $9) RETURNING id",
    )
    .bind(run_id)
    .bind(action.as_str())
    .bind(step_idx)
    .bind(fingerprint.to_string())
    .bind(requester.to_string())
    .bind(requester_account.to_string())
    .bind(required)
    .bind(now_ms())
    .bind(expires_at)
    .fetch_one(&mut **tx)
    .await?;
    Ok(row.try_get("id")?)
}

/// Ends a pending request.
pub async fn close_request(
    tx: &mut Tx,
    id: i64,
    state: &str,
    decided_by: Option<&str>,
    reason: Option<&str>,
) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE approval_requests SET state = $1, pending_run = NULL, decided_at = $2, \
         decided_by = $3, reason = $4 WHERE id = $5 AND state = 'pending'",
    )
    .bind(state.to_string())
    .bind(now_ms())
    .bind(decided_by.map(str::to_string))
    .bind(reason.map(str::to_string))
    .bind(id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Records one approval; returns false if this person had already approved.
pub async fn insert_approval(
    tx: &mut Tx,
    req: &RequestRow,
    person: &str,
    account: &str,
    platform: &str,
    role: &str,
) -> anyhow::Result<bool> {
    let res = sqlx::query(
        "INSERT INTO approvals (request_id, person, account, platform, role, requester, \
         fingerprint, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (request_id, person) DO NOTHING",
    )
    .bind(req.id)
    .bind(person.to_string())
    .bind(account.to_string())
    .bind(platform.to_string())
    .bind(role.to_string())
    .bind(req.requester.clone())
    .bind(req.fingerprint.clone())
    .bind(now_ms())
    .execute(&mut **tx)
    .await?;
    Ok(res.rows_affected() == 1)
}

/// Sets fields of a step.
pub async fn mark_gate_approved(tx: &mut Tx, run_id: i64, idx: i64) -> anyhow::Result<()> {
    sqlx::query("UPDATE run_steps SET gate_approved = 1 WHERE run_id = $1 AND idx = $2")
        .bind(run_id)
        .bind(idx)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Resets an interrupted step so it runs again, or marks it (interrupted, or held for
/// checklist items) skipped: a skipped step never runs.
pub async fn resolve_interrupted_step(
    tx: &mut Tx,
    run_id: i64,
    idx: i64,
    skip: bool,
) -> anyhow::Result<()> {
    let (state, summary) = if skip {
        ("skipped", Some("skipped by approved decision"))
    } else {
        ("pending", None)
    };
    sqlx::query(
        "UPDATE run_steps SET state = $1, summary = COALESCE($2, summary), \
         finished_at = CASE WHEN $1 = 'skipped' THEN $3 ELSE finished_at END \
         WHERE run_id = $4 AND idx = $5 AND state IN ('running', 'pending')",
    )
    .bind(state)
    .bind(summary)
    .bind(now_ms())
    .bind(run_id)
    .bind(idx)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Store {
    /// One run.
    pub async fn run(&self, id: i64) -> anyhow::Result<Option<RunRow>> {
        let sql = format!("SELECT {RUN_COLS} FROM runs WHERE id = $1");
        let r = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        r.as_ref().map(run_from).transpose()
    }

    /// One run, inside a write transaction.
    pub async fn run_tx(tx: &mut Tx, id: i64) -> anyhow::Result<Option<RunRow>> {
        let sql = format!("SELECT {RUN_COLS} FROM runs WHERE id = $1");
        let r = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&mut **tx)
            .await?;
        r.as_ref().map(run_from).transpose()
    }

    /// Newest runs first.
    pub async fn runs(&self, limit: i64, active_only: bool) -> anyhow::Result<Vec<RunRow>> {
        let sql = if active_only {
            format!(
                "SELECT {RUN_COLS} FROM runs WHERE state IN ('awaiting_approval', 'queued', \
                 'running', 'awaiting_gate', 'needs_attention') ORDER BY id DESC LIMIT $1"
            )
        } else {
            format!("SELECT {RUN_COLS} FROM runs ORDER BY id DESC LIMIT $1")
        };
        let q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(limit);
        rows(&self.pool, q).await?.iter().map(run_from).collect()
    }

    /// Steps of a run, in order.
    pub async fn steps(&self, run_id: i64) -> anyhow::Result<Vec<StepRow>> {
        let q = sqlx::query("SELECT * FROM run_steps WHERE run_id = $1 ORDER BY idx").bind(run_id);
        rows(&self.pool, q).await?.iter().map(step_from).collect()
    }

    /// Steps of a run inside a transaction.
    pub async fn steps_tx(tx: &mut Tx, run_id: i64) -> anyhow::Result<Vec<StepRow>> {
        let q = sqlx::query("SELECT * FROM run_steps WHERE run_id = $1 ORDER BY idx").bind(run_id);
        rows(&mut **tx, q).await?.iter().map(step_from).collect()
    }

    /// The newest request of a run (pending or not).
    pub async fn latest_request(&self, run_id: i64) -> anyhow::Result<Option<RequestRow>> {
        let r = sqlx::query(
            "SELECT * FROM approval_requests WHERE run_id = $1 ORDER BY id DESC LIMIT 1",
        )
        .bind(run_id)
        .fetch_optional(&self.pool)
        .await?;
        r.as_ref().map(request_from).transpose()
    }

    /// A request by id, inside a transaction.
    pub async fn request_tx(tx: &mut Tx, id: i64) -> anyhow::Result<Option<RequestRow>> {
        let r = sqlx::query("SELECT * FROM approval_requests WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut **tx)
            .await?;
        r.as_ref().map(request_from).transpose()
    }

    /// The open request of a run, inside a transaction.
    pub async fn pending_request_tx(
        tx: &mut Tx,
        run_id: i64,
    ) -> anyhow::Result<Option<RequestRow>> {
        let r = sqlx::query("SELECT * FROM approval_requests WHERE pending_run = $1")
            .bind(run_id)
            .fetch_optional(&mut **tx)
            .await?;
        r.as_ref().map(request_from).transpose()
    }

    /// Approvals of a request.
    pub async fn approvals(&self, request_id: i64) -> anyhow::Result<Vec<ApprovalRow>> {
        approvals_of(&self.pool, request_id).await
    }

    /// Pending requests past their deadline.
    pub async fn expired_requests(&self, now: i64) -> anyhow::Result<Vec<i64>> {
        let rs = sqlx::query(
            "SELECT id FROM approval_requests WHERE state = 'pending' AND expires_at <= $1",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        Ok(rs
            .iter()
            .map(|r| r.try_get("id"))
            .collect::<Result<_, _>>()?)
    }

    /// Count of runs by state (for metrics).
    pub async fn run_counts(&self) -> anyhow::Result<Vec<(String, i64)>> {
        let rs = sqlx::query("SELECT state, COUNT(*) AS n FROM runs GROUP BY state ORDER BY state")
            .fetch_all(&self.pool)
            .await?;
        Ok(rs
            .iter()
            .map(|r| Ok((r.try_get("state")?, r.try_get("n")?)))
            .collect::<Result<_, sqlx::Error>>()?)
    }
}

/// Approvals of a request through any executor.
pub async fn approvals_of<'e, E: Executor<'e, Database = Any>>(
    e: E,
    request_id: i64,
) -> anyhow::Result<Vec<ApprovalRow>> {
    let q = sqlx::query(
        "SELECT person, account, platform, role, created_at FROM approvals \
         WHERE request_id = $1 ORDER BY created_at, person",
    )
    .bind(request_id);
    rows(e, q)
        .await?
        .iter()
        .map(|r| {
            Ok(ApprovalRow {
                person: r.try_get("person")?,
                account: r.try_get("account")?,
                platform: r.try_get("platform")?,
                role: r.try_get("role")?,
                created_at: r.try_get("created_at")?,
            })
        })
        .collect()
}
