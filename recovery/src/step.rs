//! The `Step` trait that providers implement, and what a step gets and gives back.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What a running step may use. `StepContext { run_id, .., ..Default::default() }` fills the
/// rest with "nothing recorded" values.
#[derive(Debug, Clone, Default)]
pub struct StepContext {
    /// The run this step belongs to.
    pub run_id: i64,
    /// Position of the step in the plan.
    pub step_index: usize,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// Variables of the run (command arguments, region fields), exported to child processes
    /// as `DRBOT_*` environment variables.
    pub vars: BTreeMap<String, String>,
    /// Progress lines for the live progress card.
    pub progress: ProgressSink,
    /// Cancelled when the run is cancelled or this process shuts down.
    pub cancel: CancellationToken,
    /// Every step before this one, in plan order, with what it recorded (loaded with the
    /// run, so it survives a crash and a resume by another process).
    pub earlier: Vec<EarlierStep>,
    /// When the run was approved (Unix ms), if it needed and got an approval.
    pub approved_at_ms: Option<i64>,
}

impl StepContext {
    /// The recorded data of the last earlier step of type `kind` that succeeded.
    pub fn last_data_of_kind(&self, kind: &str) -> Option<&serde_json::Value> {
        self.last_of_kind(kind).map(|s| &s.data)
    }
    /// The last earlier step of type `kind` that succeeded.
    pub fn last_of_kind(&self, kind: &str) -> Option<&EarlierStep> {
        self.earlier
            .iter()
            .rev()
            .find(|s| s.kind == kind && s.state == crate::engine::StepState::Succeeded)
    }
}

/// A step before the running one, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EarlierStep {
    /// Step type.
    pub kind: String,
    /// Step name as planned.
    pub name: String,
    /// Its state (`pending` for one never run, e.g. in a dry run).
    pub state: crate::engine::StepState,
    /// What it recorded ([`StepOutput::data`]; `null` if nothing).
    pub data: serde_json::Value,
    /// When it ended (Unix ms), if it did.
    pub finished_at_ms: Option<i64>,
}

/// Where a step reports progress lines; dropping lines is fine, blocking is not. The default
/// drops everything.
#[derive(Debug, Clone, Default)]
pub struct ProgressSink(Option<mpsc::UnboundedSender<String>>);

impl ProgressSink {
    /// A sink that sends lines to `tx`.
    pub fn new(tx: mpsc::UnboundedSender<String>) -> Self {
        Self(Some(tx))
    }
    /// A sink that drops everything.
    pub fn none() -> Self {
        Self(None)
    }
    /// Reports one line.
    pub fn line(&self, line: impl Into<String>) {
        if let Some(tx) = &self.0 {
            let _ = tx.send(line.into());
        }
    }
}

/// A finished step's result.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepOutput {
    /// One line for the progress card.
    pub summary: String,
    /// Captured output, already trimmed to a bounded size.
    pub log: String,
    /// Structured evidence (e.g. measured lag), stored with the step.
    pub data: serde_json::Value,
}

/// A failed step attempt.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct StepError {
    /// One sentence: what went wrong.
    pub message: String,
    /// Captured output, trimmed.
    pub log: String,
    /// Whether another attempt may succeed (network errors, non-zero exits).
    pub retryable: bool,
}

impl StepError {
    /// A failure that another attempt will not fix.
    pub fn fatal(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            log: String::new(),
            retryable: false,
        }
    }
    /// A failure another attempt may fix.
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            log: String::new(),
            retryable: true,
        }
    }
    /// Adds captured output.
    pub fn with_log(mut self, log: String) -> Self {
        self.log = log;
        self
    }
}

/// A step ready to run, built from resolved parameters.
#[async_trait]
pub trait Step: Send + Sync {
    /// Runs one attempt. Must stop promptly when `ctx.cancel` fires.
    async fn run(&self, ctx: &StepContext) -> Result<StepOutput, StepError>;
}

/// Keeps the head and tail of long output so logs stay bounded.
pub fn trim_output(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let half = max / 2;
    let mut head_end = half;
    while !s.is_char_boundary(head_end) {
        head_end -= 1;
    }
    let mut tail_start = s.len() - half;
    while !s.is_char_boundary(tail_start) {
        tail_start += 1;
    }
    format!(
        "{}\n… [{} bytes trimmed] …\n{}",
        &s[..head_end],
        tail_start - head_end,
        &s[tail_start..]
    )
}
