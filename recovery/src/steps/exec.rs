//! `exec` step: runs a command with arguments and environment, captures its output.
//!
//! The child gets a clean environment (PATH, HOME, LANG, the run's `DRBOT_*` variables and the
//! step's `env`), so drbot's own secrets never reach scripts. It runs in its own process
//! group, which is killed on timeout, cancel, or when drbot dies.
//!
//! Output is read as bytes, line by line, whatever it holds: invalid UTF-8 is shown with
//! replacement characters, a line longer than [`MAX_LINE`] keeps its start (the rest is read
//! and dropped), and the pipes are read until the command is done with them, so it never dies
//! of a closed pipe. Once the command has exited its pipes are read for at most
//! [`DRAIN_AFTER_EXIT`]: a background process it left holding them does not keep the step
//! waiting until its timeout.

use std::{collections::BTreeMap, collections::VecDeque, process::Stdio, time::Duration};

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

/// Bytes of one output line kept in memory; the rest of a longer line is read and dropped.
pub const MAX_LINE: usize = 8 * 1024;

/// How long the pipes are still read after the command exits.
pub const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

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
                let mut pumps = std::pin::pin!(async {
                    tokio::join!(out, err);
                });
                let mut drained = false;
                let status = loop {
                    tokio::select! {
                        () = &mut pumps, if !drained => drained = true,
                        s = child.wait() => break s,
                    }
                };
                // Output written just before the exit is still in the pipes; a background
                // process may hold them open for much longer.
                if !drained
                    && tokio::time::timeout(DRAIN_AFTER_EXIT, &mut pumps).await.is_err()
                    && let Ok(mut l) = log.lock()
                {
                    l.push(format!(
                        "… [stopped reading output {} after `{}` exited: a background process \
                         it started still holds its stdout or stderr]",
                        humantime::format_duration(DRAIN_AFTER_EXIT),
                        p.command
                    ));
                }
                status
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

/// Reads `stream` to its end, line by line as bytes, into `log` and the progress lines.
async fn pump(
    stream: Option<impl AsyncRead + Unpin>,
    log: std::sync::Arc<std::sync::Mutex<BoundedLog>>,
    ctx: StepContext,
) {
    let Some(stream) = stream else { return };
    let mut reader = BufReader::new(stream);
    let mut line = LineBuf::default();
    let emit = |line: &mut LineBuf| {
        let text = line.take();
        ctx.progress.line(text.clone());
        if let Ok(mut l) = log.lock() {
            l.push(text);
        }
    };
    loop {
        let buf = match reader.fill_buf().await {
            Ok([]) => break,
            Ok(buf) => buf,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // The pipe itself failed: nothing more can be read from it.
            Err(_) => break,
        };
        let (used, complete) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => {
                line.extend(&buf[..i]);
                (i + 1, true)
            }
            None => {
                line.extend(buf);
                (buf.len(), false)
            }
        };
        reader.consume(used);
        if complete {
            emit(&mut line);
        }
    }
    if !line.is_empty() {
        emit(&mut line);
    }
}

/// One output line as it arrives: at most [`MAX_LINE`] bytes kept, the rest counted.
#[derive(Default)]
struct LineBuf {
    kept: Vec<u8>,
    dropped: usize,
}

impl LineBuf {
    fn extend(&mut self, bytes: &[u8]) {
        let room = MAX_LINE.saturating_sub(self.kept.len());
        let keep = room.min(bytes.len());
        self.kept.extend_from_slice(&bytes[..keep]);
        self.dropped = self.dropped.saturating_add(bytes.len() - keep);
    }
    fn is_empty(&self) -> bool {
        self.kept.is_empty() && self.dropped == 0
    }
    /// The line as text (invalid UTF-8 replaced), noting what was dropped; empties the buffer.
    fn take(&mut self) -> String {
        let kept = std::mem::take(&mut self.kept);
        let mut text = match String::from_utf8(kept) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        };
        let dropped = std::mem::take(&mut self.dropped);
        if dropped == 0 && text.ends_with('\r') {
            text.pop();
        }
        if dropped > 0 {
            text.push_str(&format!(" … [{dropped} more bytes of this line dropped]"));
        }
        text
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
            // Room for trim_output's marker, so the trimmed line fits in half the budget
            // rather than being dropped whole.
            line = crate::step::trim_output(&line, half.saturating_sub(64).max(16));
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
