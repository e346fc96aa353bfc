//! `exec` step: runs a command with arguments and environment, captures its output.
//!
//! The child gets a clean environment (PATH, HOME, LANG, the run's `DRBOT_*` variables and the
//! step's `env`), so drbot's own secrets never reach scripts. It runs in its own process
//! group, which is killed on timeout, cancel, or when drbot dies.

use std::{collections::BTreeMap, collections::VecDeque, process::Stdio};

use async_trait::async_trait;
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use crate::{
    registry::{StepKind, StepTraits, params},
    step::{Step, StepContext, StepError, StepOutput},
};

/// Parameters of an `exec` step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecParams {
    /// Program to run (looked up in PATH).
    pub command: String,
    /// Arguments, passed as they are (no shell).
    #[serde(default)]
    pub args: Vec<String>,
    /// Extra environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory.
    #[serde(default)]
    pub cwd: Option<String>,
    /// Bytes of output kept in the run log (head and tail), default 16 KiB.
    #[serde(default = "default_max_output")]
    pub max_output: usize,
}

fn default_max_output() -> usize {
    16 * 1024
}

/// The `exec` step type.
pub struct ExecKind;

impl StepKind for ExecKind {
    fn name(&self) -> &'static str {
        "exec"
    }
    fn traits(&self) -> StepTraits {
        // A command can do anything: destructive and not idempotent unless the runbook says so.
        StepTraits {
            destructive: true,
            idempotent: false,
            overridable: true,
        }
    }
    fn validate(&self, p: &serde_json::Value) -> Result<(), String> {
        let p: ExecParams = params(p)?;
        if p.command.trim().is_empty() {
            return Err("command: must not be empty".into());
        }
        Ok(())
    }
    fn build(&self, p: &serde_json::Value) -> Result<Box<dyn Step>, String> {
        Ok(Box::new(Exec(params(p)?)))
    }
}

/// A runnable `exec` step.
pub struct Exec(pub ExecParams);

/// Kills the child's whole process group when dropped (timeout, cancel, shutdown).
struct GroupGuard(Option<i32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            // SAFETY: kill(2) with a negative pid signals the process group we created.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }
}

#[async_trait]
impl Step for Exec {
    async fn run(&self, ctx: &StepContext) -> Result<StepOutput, StepError> {
        let p = &self.0;
        let mut cmd = tokio::process::Command::new(&p.command);
        cmd.args(&p.args)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        for key in ["PATH", "HOME", "LANG", "TMPDIR"] {
            if let Ok(v) = std::env::var(key) {
                cmd.env(key, v);
            }
        }
        for (k, v) in &ctx.vars {
            cmd.env(env_name(k), v);
        }
        cmd.env("DRBOT_RUN_ID", ctx.run_id.to_string())
            .env("DRBOT_STEP_INDEX", ctx.step_index.to_string())
            .env("DRBOT_ATTEMPT", ctx.attempt.to_string());
        cmd.envs(&p.env);
        if let Some(cwd) = &p.cwd {
            cmd.current_dir(cwd);
        }
        // SAFETY: prctl is async-signal-safe; it asks the kernel to kill the child if drbot dies.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| StepError::fatal(format!("could not start `{}`: {e}", p.command)))?;
        let _guard = GroupGuard(child.id().map(|id| id as i32));
        let log = std::sync::Arc::new(std::sync::Mutex::new(BoundedLog::new(p.max_output)));
        let out = pump(child.stdout.take(), log.clone(), ctx.clone());
        let err = pump(child.stderr.take(), log.clone(), ctx.clone());
        let status = tokio::select! {
            s = async {
                let (_, _, s) = tokio::join!(out, err, child.wait());
                s
            } => s,
            _ = ctx.cancel.cancelled() => {
                return Err(StepError::retryable("cancelled").with_log(take(&log)));
            }
        };
        let text = take(&log);
        match status {
            Ok(s) if s.success() => Ok(StepOutput {
                summary: format!("`{}` exited 0", p.command),
                log: text,
                data: serde_json::Value::Null,
            }),
            Ok(s) => Err(StepError::retryable(match s.code() {
                Some(code) => format!("`{}` exited with status {code}", p.command),
                None => format!("`{}` was killed by a signal", p.command),
            })
            .with_log(text)),
            Err(e) => Err(
                StepError::fatal(format!("waiting for `{}` failed: {e}", p.command)).with_log(text),
            ),
        }
    }
}

fn env_name(var: &str) -> String {
    let mut s = String::from("DRBOT_");
    for c in var.chars() {
        s.push(if c.is_ascii_alphanumeric() {
            c.to_ascii_uppercase()
        } else {
            '_'
        });
    }
    s
}

fn take(log: &std::sync::Mutex<BoundedLog>) -> String {
    log.lock().map(|l| l.render()).unwrap_or_default()
}

async fn pump(
    stream: Option<impl AsyncRead + Unpin>,
    log: std::sync::Arc<std::sync::Mutex<BoundedLog>>,
    ctx: StepContext,
) {
    let Some(stream) = stream else { return };
    let mut lines = BufReader::new(stream).lines();
    loop {
        match lines.next_line().await {
            Ok(Some(line)) => {
                ctx.progress.line(line.clone());
                if let Ok(mut l) = log.lock() {
                    l.push(line);
                }
            }
            // Non-UTF-8 output or a closed pipe ends capture; the exit status still counts.
            Ok(None) | Err(_) => return,
        }
    }
}

/// Keeps the first and last lines of output within a byte budget.
struct BoundedLog {
    budget: usize,
    head: Vec<String>,
    head_bytes: usize,
    tail: VecDeque<String>,
    tail_bytes: usize,
    dropped: usize,
}

impl BoundedLog {
    fn new(budget: usize) -> Self {
        Self {
            budget,
            head: vec![],
            head_bytes: 0,
            tail: VecDeque::new(),
            tail_bytes: 0,
            dropped: 0,
        }
    }
    fn push(&mut self, mut line: String) {
        let half = self.budget / 2;
        if line.len() > half {
            line = crate::step::trim_output(&line, half.max(16));
        }
        if self.head_bytes + line.len() <= half && self.dropped == 0 && self.tail.is_empty() {
            self.head_bytes += line.len() + 1;
            self.head.push(line);
            return;
        }
        self.tail_bytes += line.len() + 1;
        self.tail.push_back(line);
        while self.tail_bytes > half {
            match self.tail.pop_front() {
                Some(l) => {
                    self.tail_bytes -= l.len() + 1;
                    self.dropped += 1;
                }
                None => break,
            }
        }
    }
    fn render(&self) -> String {
        let mut out = self.head.join("\n");
        if self.dropped > 0 {
            out.push_str(&format!("\n… [{} lines trimmed] …", self.dropped));
        }
        for l in &self.tail {
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(l);
        }
        out
    }
}
