//! Drives runs: claims them through a lease row (so among several `drbot serve` processes on
//! one PostgreSQL store exactly one drives a run at a time), renews the lease while the
//! engine works, and implements the engine's [`Journal`] over the store.
//!
//! **Architecture Invariant:** every journal write checks, inside its write transaction, that
//! this process still holds the run's lease; a process that lost it writes nothing more and
//! stops its step. A process that cannot renew its lease (the store unreachable from it, the
//! renewal stuck) stops its step itself at two thirds of the lease, before another process
//! may take the run over, so a step never runs in two processes at once: a step that does not
//! return when told is dropped by the engine a sixth of the lease later (its tools killed).
//! A takeover then resumes under the engine's rules.
//!
//! **Architecture Invariant:** a panic while driving a run never leaves it `running` with a
//! lease renewed forever: the run is paused for a person (needs attention at the step it
//! was on) and its lease released.

use std::{
    collections::HashSet,
    panic::AssertUnwindSafe,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use futures::FutureExt;
use recovery::{
    engine::{
        Driven, Engine, Finish, Journal, JournalError, RunSnapshot, StepRecord, StepResult,
        StepState, StepStatus,
    },
    step::StepError,
};
use serde_json::json;
use sqlx::Row;
use tokio_util::sync::CancellationToken;

use crate::{
    actor::Actor,
    app::App,
    approvals,
    events::Event,
    store::{
        Store, Tx, audit, checklists, now_ms,
        runs::{self, RequestAction, RunState},
    },
};

/// A unique name for this process's leases.
pub fn owner_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    format!("{}:{}:{:x}", host.trim(), std::process::id(), now_ms())
}

/// Claims and drives runs until `shutdown` fires, then lets in-flight steps finish for the
/// grace period, interrupts what is left, and releases its leases.
pub async fn run(app: App, owner: String, shutdown: CancellationToken) {
    // A step is told to stop with a third of its lease left (see `keep_lease`); it must be
    // gone with half of that still to spare.
    let engine = Engine::new(app.settings.registry.clone()).with_stop_grace(app.settings.lease / 6);
    let in_flight = InFlight::default();
    let stop_steps = CancellationToken::new();
    let tasks = tokio_util::task::TaskTracker::new();
    let poll = app.settings.poll_interval.max(Duration::from_millis(50));
    loop {
        if let Err(e) = approvals::expire_due(&app).await {
            tracing::error!(
                error = format!("{e:#}"),
                "expiring approval requests failed"
            );
        }
        match claim(&app, &owner, &in_flight).await {
            Ok(ids) => {
                for (id, claimed_at, driving) in ids {
                    let (app, owner, engine) = (app.clone(), owner.clone(), engine.clone());
                    let stop = stop_steps.child_token();
                    let drain = shutdown.clone();
                    tasks.spawn(async move {
                        // Dropped when the task ends, however it ends.
                        let _driving = driving;
                        drive_one(&app, &owner, &engine, id, claimed_at, drain, stop).await;
                    });
                }
            }
            Err(e) => tracing::error!(error = format!("{e:#}"), "claiming runs failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            _ = shutdown.cancelled() => break,
        }
    }
    tasks.close();
    let grace = app.settings.shutdown_grace;
    tracing::info!(grace = ?grace, "shutting down: letting in-flight steps finish");
    if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
        tracing::warn!("grace period over: interrupting in-flight steps");
        stop_steps.cancel();
        tasks.wait().await;
    }
}

/// The runs this process is driving: a run stays here until its drive's task ends (however it
/// ends: the [`Driving`] entry is removed on drop), so it is never claimed twice by one process.
#[derive(Clone, Default)]
struct InFlight(Arc<Mutex<HashSet<i64>>>);

impl InFlight {
    fn set(&self) -> std::sync::MutexGuard<'_, HashSet<i64>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn contains(&self, id: i64) -> bool {
        self.set().contains(&id)
    }
    fn enter(&self, id: i64) -> Driving {
        self.set().insert(id);
        Driving {
            set: self.clone(),
            id,
        }
    }
}

/// Run `id` being driven by this process, until dropped.
struct Driving {
    set: InFlight,
    id: i64,
}

impl Drop for Driving {
    fn drop(&mut self) {
        self.set.set().remove(&self.id);
    }
}

/// Claims runnable runs; each with the moment just before its lease was computed (the
/// lease runs until at most then plus the lease).
async fn claim(
    app: &App,
    owner: &str,
    in_flight: &InFlight,
) -> anyhow::Result<Vec<(i64, tokio::time::Instant, Driving)>> {
    let now = now_ms();
    let candidates = sqlx::query(
        "SELECT id FROM runs WHERE (state IN ('queued', 'running') \
         OR (state = 'awaiting_approval' AND preflight_done = 0)) \
         AND (lease_owner IS NULL OR lease_until < $1) ORDER BY id LIMIT 16",
    )
    .bind(now)
    .fetch_all(app.store.pool())
    .await?;
    let mut claimed = Vec::new();
    for r in candidates {
        let id: i64 = r.try_get("id")?;
        if in_flight.contains(id) {
            continue;
        }
        let mut tx = app.store.write().await?;
        let claimed_at = tokio::time::Instant::now();
        let until = now_ms() + app.settings.lease.as_millis() as i64;
        let res = sqlx::query(
            "UPDATE runs SET lease_owner = $1, lease_until = $2 WHERE id = $3 \
             AND (lease_owner IS NULL OR lease_until < $4) AND (state IN ('queued', 'running') \
             OR (state = 'awaiting_approval' AND preflight_done = 0))",
        )
        .bind(owner.to_string())
        .bind(until)
        .bind(id)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        if res.rows_affected() == 1 {
            audit::append(
                &mut tx,
                &Actor::system(),
                "lease.claimed",
                Some(id),
                json!({ "owner": owner }),
            )
            .await?;
            tx.commit().await?;
            claimed.push((id, claimed_at, in_flight.enter(id)));
        }
    }
    Ok(claimed)
}

async fn drive_one(
    app: &App,
    owner: &str,
    engine: &Engine,
    id: i64,
    claimed_at: tokio::time::Instant,
    drain: CancellationToken,
    stop: CancellationToken,
) {
    let lost = CancellationToken::new();
    // Aborted when dropped: also when the drive below panics.
    let heartbeat = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(keep_lease(
        app.clone(),
        owner.to_string(),
        id,
        claimed_at,
        lost.clone(),
        stop.clone(),
    )));
    let journal = StoreJournal {
        app: app.clone(),
        owner: owner.to_string(),
    };
    let driven = AssertUnwindSafe(engine.drive(&journal, id, drain, stop))
        .catch_unwind()
        .await;
    drop(heartbeat);
    let result = match driven {
        Ok(result) => result,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(run = id, panic = what, "driving the run panicked");
            pause_after_panic(&journal, id).await
        }
    };
    match &result {
        Ok(d) => tracing::info!(run = id, outcome = ?d, "drive ended"),
        Err(e) => tracing::error!(run = id, error = format!("{e:#}"), "driving the run failed"),
    }
    if !lost.is_cancelled() && !matches!(result, Ok(Driven::LeaseLost)) {
        let _ = sqlx::query(
            "UPDATE runs SET lease_owner = NULL, lease_until = NULL WHERE id = $1 AND lease_owner = $2",
        )
        .bind(id)
        .bind(owner.to_string())
        .execute(app.store.pool())
        .await;
    }
}

/// Renews run `id`'s lease every third of it while the engine drives the run. When another
/// process took the run over, or when no renewal got through for two thirds of the lease (so
/// it may lapse soon and another process take the run), cancels `stop`: the step is stopped
/// before anyone else can start it again.
async fn keep_lease(
    app: App,
    owner: String,
    id: i64,
    claimed_at: tokio::time::Instant,
    lost: CancellationToken,
    stop: CancellationToken,
) {
    let lease = app.settings.lease;
    let every = lease / 3;
    // The claim, or the last renewal that got through, was computed at `renewed`: the lease
    // runs until at most `renewed + lease`.
    let mut renewed = claimed_at;
    loop {
        tokio::time::sleep(every).await;
        let sent = tokio::time::Instant::now();
        let until = now_ms() + lease.as_millis() as i64;
        // A renewal waits at most until two thirds of the lease since the last one that got
        // through: one stuck longer would tell the step to stop only at the lease's end.
        let wait = (renewed + lease * 2 / 3)
            .saturating_duration_since(sent)
            .min(every);
        let res = tokio::time::timeout(
            wait,
            sqlx::query("UPDATE runs SET lease_until = $1 WHERE id = $2 AND lease_owner = $3")
                .bind(until)
                .bind(id)
                .bind(owner.clone())
                .execute(app.store.pool()),
        )
        .await;
        match res {
            Ok(Ok(r)) if r.rows_affected() == 1 => renewed = sent,
            Ok(Ok(_)) => {
                tracing::warn!(run = id, "lease lost: another process took the run over");
                lost.cancel();
                stop.cancel();
                return;
            }
            Ok(Err(e)) => tracing::warn!(run = id, error = %e, "renewing the lease failed"),
            Err(_) => tracing::warn!(
                run = id,
                waited_ms = wait.as_millis() as u64,
                "renewing the lease got no answer"
            ),
        }
        if renewed.elapsed() >= lease * 2 / 3 {
            tracing::error!(
                run = id,
                since_ms = renewed.elapsed().as_millis() as u64,
                "the lease could not be renewed: stopping the run's step before the lease \
                 lapses and another process may take the run over"
            );
            lost.cancel();
            stop.cancel();
            return;
        }
    }
}

/// After a panic while driving run `id`: pauses it for a person at the step it was on
/// (needs attention: retry, skip or abort, each approved), so that it neither stays
/// `running` with nobody driving it nor is re-driven at once into the same panic.
async fn pause_after_panic(journal: &StoreJournal, id: i64) -> anyhow::Result<Driven> {
    let snap = journal.snapshot(id).await?;
    let idx = snap
        .steps
        .iter()
        .position(|s| s.state == StepState::Running)
        .or_else(|| {
            snap.steps
                .iter()
                .position(|s| s.state == StepState::Pending)
        })
        .unwrap_or(0);
    let reason = format!(
        "drbot failed internally while driving step {} (see its log); what the step did is \
         unknown: retry, skip or abort it",
        idx + 1
    );
    journal.needs_attention(id, idx, &reason).await?;
    Ok(Driven::NeedsAttention(idx))
}

/// The engine's journal over the store, fenced by this process's lease.
pub struct StoreJournal {
    app: App,
    owner: String,
}

impl StoreJournal {
    /// Journal writing as lease owner `owner` (tests drive runs through it directly).
    pub fn new(app: App, owner: String) -> Self {
        Self { app, owner }
    }

    async fn fenced(&self, run_id: i64) -> Result<Tx, JournalError> {
        let mut tx = self.app.store.write().await?;
        let r = sqlx::query("SELECT lease_owner FROM runs WHERE id = $1")
            .bind(run_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(anyhow::Error::from)?;
        let holder: Option<String> = match r {
            Some(r) => r.try_get("lease_owner").map_err(anyhow::Error::from)?,
            None => None,
        };
        if holder.as_deref() != Some(self.owner.as_str()) {
            return Err(JournalError::LeaseLost);
        }
        Ok(tx)
    }

    async fn commit(tx: Tx) -> Result<(), JournalError> {
        tx.commit().await.map_err(anyhow::Error::from)?;
        Ok(())
    }
}

fn system() -> Actor {
    Actor::system()
}

#[async_trait]
impl Journal for StoreJournal {
    async fn snapshot(&self, run_id: i64) -> Result<RunSnapshot, JournalError> {
        let run = self
            .app
            .store
            .run(run_id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("run {run_id} vanished from the store"))?;
        let steps = self.app.store.steps(run_id).await?;
        let records = sqlx::query(
            "SELECT idx, data, finished_at, error FROM run_steps WHERE run_id = $1 ORDER BY idx",
        )
        .bind(run_id)
        .fetch_all(self.app.store.pool())
        .await
        .map_err(anyhow::Error::from)?;
        let mut recorded = vec![StepRecord::default(); steps.len()];
        for r in records {
            let idx: i64 = r.try_get("idx").map_err(anyhow::Error::from)?;
            let data: Option<String> = r.try_get("data").map_err(anyhow::Error::from)?;
            if let Some(slot) = recorded.get_mut(idx as usize) {
                *slot = StepRecord {
                    data: data
                        .and_then(|d| serde_json::from_str(&d).ok())
                        .unwrap_or_default(),
                    finished_at_ms: r.try_get("finished_at").map_err(anyhow::Error::from)?,
                    error: r.try_get("error").map_err(anyhow::Error::from)?,
                };
            }
        }
        let approved_at_ms: Option<i64> = sqlx::query(
            "SELECT MAX(decided_at) AS at FROM approval_requests \
             WHERE run_id = $1 AND action = 'run' AND state = 'approved'",
        )
        .bind(run_id)
        .fetch_one(self.app.store.pool())
        .await
        .and_then(|r| r.try_get("at"))
        .map_err(anyhow::Error::from)?;
        Ok(RunSnapshot {
            run_id,
            approved: run.state != RunState::AwaitingApproval,
            approved_at_ms,
            records: recorded,
            plan: run.plan,
            steps: steps
                .iter()
                .map(|s| StepStatus {
                    state: s.state,
                    attempts: s.attempts as u32,
                    gate_approved: s.gate_approved,
                })
                .collect(),
        })
    }

    async fn cancel_requested(&self, run_id: i64) -> Result<bool, JournalError> {
        let r = sqlx::query("SELECT cancel_requested FROM runs WHERE id = $1")
            .bind(run_id)
            .fetch_one(self.app.store.pool())
            .await
            .map_err(anyhow::Error::from)?;
        Ok(runs::flag(&r, "cancel_requested").map_err(anyhow::Error::from)?)
    }

    async fn step_started(
        &self,
        run_id: i64,
        idx: usize,
        attempt: u32,
    ) -> Result<(), JournalError> {
        let mut tx = self.fenced(run_id).await?;
        let now = now_ms();
        sqlx::query(
            "UPDATE run_steps SET state = 'running', attempts = $1, started_at = $2, \
             finished_at = NULL, error = NULL WHERE run_id = $3 AND idx = $4",
        )
        .bind(attempt as i64)
        .bind(now)
        .bind(run_id)
        .bind(idx as i64)
        .execute(&mut *tx)
        .await
        .map_err(anyhow::Error::from)?;
        sqlx::query(
            "UPDATE runs SET state = CASE WHEN state = 'queued' THEN 'running' ELSE state END, \
             updated_at = $1, started_at = COALESCE(started_at, $1) WHERE id = $2",
        )
        .bind(now)
        .bind(run_id)
        .execute(&mut *tx)
        .await
        .map_err(anyhow::Error::from)?;
        let snap_name = Store::steps_tx(&mut tx, run_id)
            .await?
            .into_iter()
            .find(|s| s.idx == idx as i64)
            .map(|s| s.name)
            .unwrap_or_default();
        audit::append(
            &mut tx,
            &system(),
            "step.started",
            Some(run_id),
            json!({ "step": idx, "name": snap_name, "attempt": attempt }),
        )
        .await?;
        Self::commit(tx).await?;
        self.app.events.publish(Event::StepStarted {
            run_id,
            idx,
            name: snap_name,
            attempt,
        });
        Ok(())
    }

    async fn step_progress(&self, run_id: i64, idx: usize, line: &str) {
        self.app.events.publish(Event::StepProgress {
            run_id,
            idx,
            line: line.to_string(),
        });
    }

    async fn step_retrying(
        &self,
        run_id: i64,
        idx: usize,
        attempt: u32,
        error: &StepError,
        delay_ms: u64,
    ) -> Result<(), JournalError> {
        let mut tx = self.fenced(run_id).await?;
        audit::append(
            &mut tx,
            &system(),
            "step.retrying",
            Some(run_id),
            json!({ "step": idx, "attempt": attempt, "error": error.message, "delay_ms": delay_ms }),
        )
        .await?;
        Self::commit(tx).await?;
        self.app.events.publish(Event::StepProgress {
            run_id,
            idx,
            line: format!(
                "attempt {attempt} failed: {}; retrying in {delay_ms} ms",
                error.message
            ),
        });
        Ok(())
    }

    async fn step_finished(
        &self,
        run_id: i64,
        idx: usize,
        result: &StepResult,
    ) -> Result<(), JournalError> {
        let mut tx = self.fenced(run_id).await?;
        sqlx::query(
            "UPDATE run_steps SET state = $1, finished_at = $2, duration_ms = $3, summary = $4, \
             log = $5, error = $6, data = $7 WHERE run_id = $8 AND idx = $9",
        )
        .bind(result.state.as_str())
        .bind(now_ms())
        .bind(result.duration_ms as i64)
        .bind(result.summary.clone())
        .bind(result.log.clone())
        .bind(result.error.clone())
        .bind(result.data.to_string())
        .bind(run_id)
        .bind(idx as i64)
        .execute(&mut *tx)
        .await
        .map_err(anyhow::Error::from)?;
        sqlx::query("UPDATE runs SET updated_at = $1 WHERE id = $2")
            .bind(now_ms())
            .bind(run_id)
            .execute(&mut *tx)
            .await
            .map_err(anyhow::Error::from)?;
        let step = Store::steps_tx(&mut tx, run_id)
            .await?
            .into_iter()
            .find(|s| s.idx == idx as i64);
        let (name, kind) = step.map(|s| (s.name, s.kind)).unwrap_or_default();
        if result.state == StepState::Succeeded {
            let run = Store::run_tx(&mut tx, run_id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("run {run_id} vanished"))?;
            if let Some(ticks) = run.plan.steps.get(idx).map(|s| &s.ticks)
                && !ticks.is_empty()
            {
                checklists::tick_for_step(&mut tx, run_id, idx, ticks).await?;
            }
        }
        audit::append(
            &mut tx,
            &system(),
            "step.finished",
            Some(run_id),
            json!({
                "step": idx, "name": name, "state": result.state.as_str(),
                "duration_ms": result.duration_ms, "error": result.error,
            }),
        )
        .await?;
        Self::commit(tx).await?;
        self.app
            .metrics
            .step_duration(&kind, result.duration_ms as f64 / 1000.0);
        self.app.events.publish(Event::StepFinished {
            run_id,
            idx,
            name,
            state: result.state.as_str().to_string(),
            duration_ms: result.duration_ms,
        });
        Ok(())
    }

    async fn preflight_done(&self, run_id: i64) -> Result<(), JournalError> {
        let mut tx = self.fenced(run_id).await?;
        sqlx::query("UPDATE runs SET preflight_done = 1, updated_at = $1 WHERE id = $2")
            .bind(now_ms())
            .bind(run_id)
            .execute(&mut *tx)
            .await
            .map_err(anyhow::Error::from)?;
        audit::append(
            &mut tx,
            &system(),
            "preflight.done",
            Some(run_id),
            json!({}),
        )
        .await?;
        Self::commit(tx).await
    }

    async fn await_gate(&self, run_id: i64, idx: usize) -> Result<(), JournalError> {
        let mut tx = self.fenced(run_id).await?;
        let run = Store::run_tx(&mut tx, run_id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("run {run_id} vanished"))?;
        let expires = now_ms() + self.app.settings.expires_after.as_millis() as i64;
        let req = runs::insert_request(
            &mut tx,
            run_id,
            RequestAction::Gate,
            Some(idx as i64),
            &run.fingerprint,
            &run.requested_by,
            &run.requested_account,
            self.app.settings.config.approvals.required as i64,
            expires,
        )
        .await?;
        runs::set_run_state(&mut tx, run_id, RunState::AwaitingGate, None).await?;
        audit::append(
            &mut tx,
            &system(),
            "gate.requested",
            Some(run_id),
            json!({ "step": idx, "request_id": req }),
        )
        .await?;
        Self::commit(tx).await?;
        self.app.events.publish(Event::DecisionRequested {
            run_id,
            request_id: req,
            action: "gate".into(),
        });
        Ok(())
    }

    async fn hold_for(
        &self,
        run_id: i64,
        idx: usize,
        requires: &[String],
    ) -> Result<Option<String>, JournalError> {
        // The check and the hold share one write transaction, serialised with ticks: a tick
        // either commits before (and is seen here) or after (and finds the run held, and
        // queues it again). No tick is lost between the two.
        let mut tx = self.fenced(run_id).await?;
        let views = checklists::run_checklists_in(&mut tx, run_id).await?;
        let missing = checklists::unticked(&views, requires);
        if missing.is_empty() {
            return Ok(None);
        }
        let name = Store::steps_tx(&mut tx, run_id)
            .await?
            .into_iter()
            .find(|s| s.idx == idx as i64)
            .map(|s| s.name)
            .unwrap_or_default();
        let list: Vec<String> = missing
            .iter()
            .map(|(req, text)| format!("{text} (`{req}`)"))
            .collect();
        let reason = format!(
            "step {} `{name}` waits for checklist items to be ticked: {}",
            idx + 1,
            list.join("; ")
        );
        runs::set_run_state(&mut tx, run_id, RunState::NeedsAttention, Some(&reason)).await?;
        sqlx::query("UPDATE runs SET held_step = $1 WHERE id = $2")
            .bind(idx as i64)
            .bind(run_id)
            .execute(&mut *tx)
            .await
            .map_err(anyhow::Error::from)?;
        let unticked: Vec<&str> = missing.iter().map(|(r, _)| r.as_str()).collect();
        audit::append(
            &mut tx,
            &system(),
            "run.held",
            Some(run_id),
            json!({ "step": idx, "name": name, "unticked": unticked }),
        )
        .await?;
        Self::commit(tx).await?;
        self.app.events.publish(Event::RunStateChanged {
            run_id,
            state: "needs_attention".into(),
            detail: Some(reason.clone()),
        });
        Ok(Some(reason))
    }

    async fn needs_attention(
        &self,
        run_id: i64,
        idx: usize,
        reason: &str,
    ) -> Result<(), JournalError> {
        let mut tx = self.fenced(run_id).await?;
        runs::set_run_state(&mut tx, run_id, RunState::NeedsAttention, Some(reason)).await?;
        audit::append(
            &mut tx,
            &system(),
            "run.needs_attention",
            Some(run_id),
            json!({ "step": idx, "reason": reason }),
        )
        .await?;
        Self::commit(tx).await?;
        self.app.events.publish(Event::RunStateChanged {
            run_id,
            state: "needs_attention".into(),
            detail: Some(reason.to_string()),
        });
        Ok(())
    }

    async fn finish(&self, run_id: i64, finish: &Finish) -> Result<(), JournalError> {
        let mut tx = self.fenced(run_id).await?;
        let (state, detail) = match finish {
            Finish::Succeeded => (RunState::Succeeded, None),
            Finish::Failed { step, error } => (
                RunState::Failed,
                Some(format!("step {} failed: {error}", step + 1)),
            ),
            Finish::Cancelled => (RunState::Cancelled, Some("cancelled".to_string())),
        };
        if let Some(req) = Store::pending_request_tx(&mut tx, run_id).await? {
            runs::close_request(&mut tx, req.id, "cancelled", None, Some("run ended")).await?;
        }
        runs::set_run_state(&mut tx, run_id, state, detail.as_deref()).await?;
        audit::append(
            &mut tx,
            &system(),
            "run.finished",
            Some(run_id),
            json!({ "state": state.as_str(), "detail": detail }),
        )
        .await?;
        Self::commit(tx).await?;
        self.app.events.publish(Event::RunStateChanged {
            run_id,
            state: state.as_str().to_string(),
            detail,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A drive's task that dies (a panic outside the engine's own catch, a cancelled task)
    /// still lets its run go: else this process would never claim the run again.
    #[tokio::test]
    async fn a_drive_that_dies_leaves_the_in_flight_set() {
        let in_flight = InFlight::default();
        let driving = in_flight.enter(7);
        let _other = in_flight.enter(8);
        assert!(in_flight.contains(7));
        let task = tokio::spawn(async move {
            let _driving = driving;
            panic!("drive_one failed outside catch_unwind");
        });
        assert!(task.await.unwrap_err().is_panic());
        assert!(!in_flight.contains(7));
        assert!(in_flight.contains(8));
    }
}
