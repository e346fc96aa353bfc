//! The durable runbook engine: drives a plan step by step through a [`Journal`] that persists
//! each transition before it is acted on.
//!
//! **Architecture Invariant:** a step is marked `running` in the journal before it starts, and
//! `succeeded`/`failed`/`skipped` after it ends. So after a crash a `running` step is exactly an
//! interrupted one: an idempotent step is re-run, a non-idempotent one pauses the run as
//! `needs_attention` and a person decides (retry, skip or abort, each approval-gated).
//! Completed steps are never re-run.
//!
//! Each step's [`StepContext::earlier`] holds every step before it with its recorded `data`,
//! loaded from the journal's [`RunSnapshot::records`] and kept current as steps end, so a step
//! can build on an earlier one's evidence (a drill's measurement reads its disaster's markers)
//! also after a crash and a resume by another process.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{
    plan::Plan,
    registry::Registry,
    runbook::OnFailure,
    step::{EarlierStep, ProgressSink, StepContext, StepError, StepOutput},
};

/// Persisted state of one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// Not started yet.
    Pending,
    /// Started and not known to have ended (after a crash: interrupted).
    Running,
    /// Ended well.
    Succeeded,
    /// Ended badly (the run went on only if `on_failure = "continue"`).
    Failed,
    /// Not run: dry run, or skipped by an approved decision.
    Skipped,
}

impl StepState {
    /// Name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
        }
    }
    /// Reads a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "running" => Self::Running,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            "skipped" => Self::Skipped,
            _ => return None,
        })
    }
}

/// What the engine needs to know about a step when (re)starting a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepStatus {
    /// Persisted state.
    pub state: StepState,
    /// Attempts started so far.
    pub attempts: u32,
    /// The step's gate has been approved (only meaningful for gated steps).
    pub gate_approved: bool,
}

/// A run as persisted: the approved plan and where each step stands.
#[derive(Debug, Clone)]
pub struct RunSnapshot {
    /// Run id.
    pub run_id: i64,
    /// The plan that was approved.
    pub plan: Plan,
    /// One per plan step.
    pub steps: Vec<StepStatus>,
    /// The run was approved (or needs no approval). Until then only the read-only steps
    /// before the first destructive one run (preflight).
    pub approved: bool,
    /// When the run was approved (Unix ms), if it needed an approval and got it.
    pub approved_at_ms: Option<i64>,
    /// What each finished step recorded, by plan index (missing entries: nothing yet).
    pub records: Vec<StepRecord>,
}

/// What a finished step left behind for the steps after it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepRecord {
    /// [`StepResult::data`] as persisted (`null` if none).
    pub data: serde_json::Value,
    /// When it ended (Unix ms).
    pub finished_at_ms: Option<i64>,
    /// [`StepResult::error`] as persisted: why a failed step failed.
    pub error: Option<String>,
}

/// How a step attempt ended, as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct StepResult {
    /// `Succeeded`, `Failed` or `Skipped`.
    pub state: StepState,
    /// One line for the progress card.
    pub summary: String,
    /// Captured output.
    pub log: String,
    /// Error message when failed.
    pub error: Option<String>,
    /// Structured evidence.
    pub data: serde_json::Value,
    /// Wall time of the attempt, milliseconds.
    pub duration_ms: u64,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Finish {
    /// Every step succeeded, was skipped, or failed with `on_failure = "continue"`.
    Succeeded,
    /// A step failed with `on_failure = "abort"`.
    Failed {
        /// Index of the failed step.
        step: usize,
        /// Its error.
        error: String,
    },
    /// Cancel was requested; stopped before the next step.
    Cancelled,
}

/// Journal failures.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// Another process now drives this run: stop at once, write nothing more.
    #[error("the lease on this run was lost")]
    LeaseLost,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

/// Durable record of a run's progress, implemented over drbot's store.
#[async_trait]
pub trait Journal: Send + Sync {
    /// Current persisted state of the run.
    async fn snapshot(&self, run_id: i64) -> Result<RunSnapshot, JournalError>;
    /// Whether someone asked to cancel the run.
    async fn cancel_requested(&self, run_id: i64) -> Result<bool, JournalError>;
    /// Persists "step `idx` attempt `attempt` is starting" (before it starts).
    async fn step_started(&self, run_id: i64, idx: usize, attempt: u32)
    -> Result<(), JournalError>;
    /// A progress line from a running step (best effort).
    async fn step_progress(&self, run_id: i64, idx: usize, line: &str);
    /// An attempt failed and will be retried after `delay_ms`.
    async fn step_retrying(
        &self,
        run_id: i64,
        idx: usize,
        attempt: u32,
        error: &StepError,
        delay_ms: u64,
    ) -> Result<(), JournalError>;
    /// Persists the end of a step.
    async fn step_finished(
        &self,
        run_id: i64,
        idx: usize,
        result: &StepResult,
    ) -> Result<(), JournalError>;
    /// Preflight is over: the next step is destructive and the run is not approved yet.
    async fn preflight_done(&self, run_id: i64) -> Result<(), JournalError>;
    /// Pauses the run before gated step `idx` and asks for its approval.
    async fn await_gate(&self, run_id: i64, idx: usize) -> Result<(), JournalError>;
    /// Step `idx` names checklist items in `requires` and is about to run (or to ask for its
    /// gate). The journal checks them; when some are not ticked it pauses the run (recording
    /// why, in the same transaction as the check) and returns the reason. `None`: go on.
    /// There is deliberately no default: a journal that cannot check must refuse.
    async fn hold_for(
        &self,
        run_id: i64,
        idx: usize,
        requires: &[String],
    ) -> Result<Option<String>, JournalError>;
    /// Pauses the run: step `idx` was interrupted and is not idempotent.
    async fn needs_attention(
        &self,
        run_id: i64,
        idx: usize,
        reason: &str,
    ) -> Result<(), JournalError>;
    /// Persists the end of the run.
    async fn finish(&self, run_id: i64, finish: &Finish) -> Result<(), JournalError>;
}

/// Where a drive stopped.
#[derive(Debug, Clone, PartialEq)]
pub enum Driven {
    /// The run ended.
    Finished(Finish),
    /// Preflight done; waiting for the run's approval before destructive step `usize`.
    AwaitingApproval(usize),
    /// Paused before a gated step; its approval request was made.
    AwaitingGate(usize),
    /// Paused: a non-idempotent step was interrupted.
    NeedsAttention(usize),
    /// Paused before a step whose required checklist items are not all ticked.
    Held(usize),
    /// Shutdown interrupted the run; it stays `running` for the next process to resume.
    Interrupted,
    /// Another process took the run over.
    LeaseLost,
}

/// Runs plans. Stateless apart from the step registry; all state lives in the journal.
#[derive(Clone)]
pub struct Engine {
    registry: Registry,
    stop_grace: Duration,
}

/// How long, by default, a step told to stop (its process lost or cannot renew its lease, or
/// shuts down) may take to return before the engine drops it ([`Engine::with_stop_grace`]).
pub const STOP_GRACE: Duration = Duration::from_secs(1);

impl Engine {
    /// An engine using these step types.
    pub fn new(registry: Registry) -> Self {
        Self {
            registry,
            stop_grace: STOP_GRACE,
        }
    }

    /// How long a step told to stop may take to return before it is dropped (which kills the
    /// tools it started). A step whose process must give up its lease has to be gone before
    /// the lease ends: keep this well inside what is left of it when the step is told.
    pub fn with_stop_grace(mut self, grace: Duration) -> Self {
        self.stop_grace = grace;
        self
    }

    /// The step types.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Drives run `run_id` from its persisted state until it ends or pauses. `drain` stops it
    /// before the next step (graceful shutdown); `stop` interrupts a running step (grace period
    /// over, or lease lost).
    pub async fn drive(
        &self,
        journal: &dyn Journal,
        run_id: i64,
        drain: CancellationToken,
        stop: CancellationToken,
    ) -> Result<Driven, anyhow::Error> {
        match self.drive_inner(journal, run_id, drain, stop).await {
            Ok(d) => Ok(d),
            Err(JournalError::LeaseLost) => Ok(Driven::LeaseLost),
            Err(JournalError::Store(e)) => Err(e),
        }
    }

    async fn drive_inner(
        &self,
        journal: &dyn Journal,
        run_id: i64,
        drain: CancellationToken,
        stop: CancellationToken,
    ) -> Result<Driven, JournalError> {
        let snap = journal.snapshot(run_id).await?;
        let plan = &snap.plan;
        // Every step's state and record, kept current in memory as steps end during this drive.
        let mut earlier: Vec<EarlierStep> = plan
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let rec = snap.records.get(i).cloned().unwrap_or_default();
                EarlierStep {
                    kind: s.kind.clone(),
                    name: s.name.clone(),
                    state: snap.steps.get(i).map_or(StepState::Pending, |st| st.state),
                    data: rec.data,
                    finished_at_ms: rec.finished_at_ms,
                }
            })
            .collect();
        for (idx, step) in plan.steps.iter().enumerate() {
            let status = snap.steps.get(idx).copied().unwrap_or(StepStatus {
                state: StepState::Pending,
                attempts: 0,
                gate_approved: false,
            });
            match status.state {
                // Recording a failure and ending the run are two writes: when a crash (or a
                // store error, or a lost lease) came between them, the run ends here, so the
                // steps after a failed `abort` step never run.
                StepState::Failed if step.on_failure == OnFailure::Abort => {
                    let error = snap
                        .records
                        .get(idx)
                        .and_then(|r| r.error.clone())
                        .unwrap_or_else(|| "failed".into());
                    let finish = Finish::Failed { step: idx, error };
                    journal.finish(run_id, &finish).await?;
                    return Ok(Driven::Finished(finish));
                }
                StepState::Succeeded | StepState::Skipped | StepState::Failed => continue,
                StepState::Running if !step.idempotent => {
                    let reason = format!(
                        "step {} `{}` was interrupted while running and is not idempotent: \
                         check what it did, then retry, skip or abort",
                        idx + 1,
                        step.name
                    );
                    journal.needs_attention(run_id, idx, &reason).await?;
                    return Ok(Driven::NeedsAttention(idx));
                }
                StepState::Running | StepState::Pending => {}
            }
            if stop.is_cancelled() || drain.is_cancelled() {
                return Ok(Driven::Interrupted);
            }
            if journal.cancel_requested(run_id).await? {
                journal.finish(run_id, &Finish::Cancelled).await?;
                return Ok(Driven::Finished(Finish::Cancelled));
            }
            // A step that requires checklist items, or has a gate, ends preflight like a
            // destructive one: the run waits for its approval before anything is checked or
            // held, and a gate is asked for only on an approved run (its request would
            // otherwise stand beside the run's own, still pending).
            if (step.destructive || step.gate || !step.requires.is_empty())
                && !snap.approved
                && !plan.dry_run
            {
                journal.preflight_done(run_id).await?;
                return Ok(Driven::AwaitingApproval(idx));
            }
            if plan.dry_run && step.destructive {
                let result = StepResult {
                    state: StepState::Skipped,
                    summary: "dry run: not executed".into(),
                    log: String::new(),
                    error: None,
                    data: serde_json::Value::Null,
                    duration_ms: 0,
                };
                journal.step_finished(run_id, idx, &result).await?;
                record(&mut earlier[idx], &result);
                continue;
            }
            // Checked before the gate is asked for and again after it is approved (every drive
            // passes here), so neither approval can stand in for the ticks.
            if !step.requires.is_empty()
                && journal
                    .hold_for(run_id, idx, &step.requires)
                    .await?
                    .is_some()
            {
                return Ok(Driven::Held(idx));
            }
            if step.gate && !status.gate_approved && !plan.dry_run {
                journal.await_gate(run_id, idx).await?;
                return Ok(Driven::AwaitingGate(idx));
            }
            let mut attempt = status.attempts;
            let mut failures = 0u32;
            loop {
                attempt += 1;
                journal.step_started(run_id, idx, attempt).await?;
                let started = Instant::now();
                let outcome = self
                    .attempt(journal, &snap, &earlier[..idx], idx, attempt, &stop)
                    .await?;
                let duration_ms = started.elapsed().as_millis() as u64;
                let (err, ends_run) = match outcome {
                    Attempt::Interrupted => return Ok(Driven::Interrupted),
                    Attempt::Done(Ok(out)) => {
                        let result = StepResult {
                            state: StepState::Succeeded,
                            summary: out.summary,
                            log: out.log,
                            error: None,
                            data: out.data,
                            duration_ms,
                        };
                        journal.step_finished(run_id, idx, &result).await?;
                        record(&mut earlier[idx], &result);
                        break;
                    }
                    Attempt::Done(Err(e)) => (e, false),
                    // The steps after it were approved for the old resources too.
                    Attempt::Refused(e) => (e, true),
                };
                failures += 1;
                if err.retryable && failures <= step.retries && !ends_run {
                    let delay = step.backoff(failures);
                    journal
                        .step_retrying(run_id, idx, attempt, &err, delay.as_millis() as u64)
                        .await?;
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stop.cancelled() => return Ok(Driven::Interrupted),
                        _ = drain.cancelled() => {}
                    }
                    if drain.is_cancelled() {
                        // Shutting down: leave the step for the next process to retry.
                        let result = StepResult {
                            state: StepState::Pending,
                            summary: format!(
                                "attempt {attempt} failed; retry left to the next process"
                            ),
                            log: err.log.clone(),
                            error: Some(err.message.clone()),
                            data: serde_json::Value::Null,
                            duration_ms,
                        };
                        journal.step_finished(run_id, idx, &result).await?;
                        return Ok(Driven::Interrupted);
                    }
                    continue;
                }
                let result = StepResult {
                    state: StepState::Failed,
                    summary: err.message.clone(),
                    log: err.log.clone(),
                    error: Some(err.message.clone()),
                    data: serde_json::Value::Null,
                    duration_ms,
                };
                journal.step_finished(run_id, idx, &result).await?;
                record(&mut earlier[idx], &result);
                if step.on_failure == OnFailure::Abort || ends_run {
                    let finish = Finish::Failed {
                        step: idx,
                        error: err.message,
                    };
                    journal.finish(run_id, &finish).await?;
                    return Ok(Driven::Finished(finish));
                }
                break;
            }
        }
        journal.finish(run_id, &Finish::Succeeded).await?;
        Ok(Driven::Finished(Finish::Succeeded))
    }

    async fn attempt(
        &self,
        journal: &dyn Journal,
        snap: &RunSnapshot,
        earlier: &[EarlierStep],
        idx: usize,
        attempt: u32,
        stop: &CancellationToken,
    ) -> Result<Attempt, JournalError> {
        let step = &snap.plan.steps[idx];
        // Environment references (`${NAME}`) are read now: the plan never holds their values.
        let params = match crate::env::expand_value(&step.params, &crate::env::process) {
            Ok(p) => p,
            Err(e) => return Ok(Attempt::Done(Err(StepError::fatal(e)))),
        };
        let resources = self.registry.resources();
        if !step.resources.is_empty() && resources.identity(&params) != step.resources {
            return Ok(Attempt::Refused(StepError::fatal(format!(
                "the configuration of what this step acts on changed since the plan was \
                 approved (now: {}); nothing was done: request the runbook again to approve the \
                 new plan",
                resources.describe(&params).join(", ")
            ))));
        }
        let built = match self.registry.get(&step.kind) {
            None => Err(StepError::fatal(format!(
                "unknown step type `{}`",
                step.kind
            ))),
            Some(kind) => kind.build(&params).map_err(StepError::fatal),
        };
        let runnable = match built {
            Ok(s) => s,
            Err(e) => return Ok(Attempt::Done(Err(e))),
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        let ctx = StepContext {
            run_id: snap.run_id,
            step_index: idx,
            attempt,
            vars: snap.plan.vars.clone(),
            progress: ProgressSink::new(tx),
            cancel: stop.child_token(),
            earlier: earlier.to_vec(),
            approved_at_ms: snap.approved_at_ms,
        };
        let timeout = step.timeout();
        let fut = tokio::time::timeout(timeout, runnable.run(&ctx));
        tokio::pin!(fut);
        // A step told to stop gets the stop grace to return; one that does not (a connect or
        // a statement that never looks at its token) is dropped then, which kills its tools,
        // so that it never outlives the lease of the process running it.
        let abandon = async {
            stop.cancelled().await;
            tokio::time::sleep(self.stop_grace).await;
        };
        tokio::pin!(abandon);
        let result = loop {
            tokio::select! {
                r = &mut fut => break Some(r),
                Some(line) = rx.recv() => journal.step_progress(snap.run_id, idx, &line).await,
                () = &mut abandon => break None,
            }
        };
        while let Ok(line) = rx.try_recv() {
            journal.step_progress(snap.run_id, idx, &line).await;
        }
        let Some(result) = result else {
            tracing::warn!(
                run = snap.run_id,
                step = idx,
                grace_ms = self.stop_grace.as_millis() as u64,
                "the step did not stop when told to: abandoned"
            );
            return Ok(Attempt::Interrupted);
        };
        if stop.is_cancelled() {
            return Ok(Attempt::Interrupted);
        }
        Ok(Attempt::Done(match result {
            Ok(r) => r,
            Err(_) => Err(StepError {
                message: format!("timed out after {}", humantime::format_duration(timeout)),
                log: String::new(),
                // Re-running a timed-out step is only safe when it is idempotent.
                retryable: step.idempotent,
            }),
        }))
    }
}

/// Keeps the in-memory view of a step that just ended current for the steps after it.
fn record(step: &mut EarlierStep, result: &StepResult) {
    step.state = result.state;
    step.data = result.data.clone();
    step.finished_at_ms = Some(now_ms());
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

enum Attempt {
    /// The step ran: its result.
    Done(Result<StepOutput, StepError>),
    /// The step was not run because what it acts on changed since the plan was approved: a
    /// failure that ends the run whatever the step's `on_failure`.
    Refused(StepError),
    /// The drive was stopped mid-step.
    Interrupted,
}
