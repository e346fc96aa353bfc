//! Running a cluster's PostgreSQL tools (`pg_ctl`, `pg_rewind`, `pg_basebackup`, `psql`, …):
//! found in its `bin_dir` (else `PATH`), run as its `os_user` (`runuser -u USER --` when drbot
//! is root, see [`super::owner`]), with a clean environment, in their own process group
//! (killed on cancel, timeout or drop), output captured, trimmed and scrubbed of passwords.

use std::{
    ffi::OsString,
    path::PathBuf,
    process::{ExitStatus, Stdio},
};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use super::child::{GroupGuard, last_line};
use crate::{
    resources::PgClusterDef,
    step::{StepContext, StepError, trim_output},
};

/// Bytes of captured output kept (head and tail) in [`ToolOutput::log`].
const MAX_LOG: usize = 16 * 1024;

/// Starts building a run of `name` (e.g. `"pg_ctl"`) for `cluster`: from its `bin_dir`, as its
/// `os_user`. Add arguments, then [`PgTool::run`] or [`PgTool::run_ok`].
pub fn tool(cluster: &PgClusterDef, name: &str) -> PgTool {
    let program = match &cluster.bin_dir {
        Some(dir) => dir.join(name),
        None => PathBuf::from(name),
    };
    PgTool {
        name: name.to_string(),
        program,
        args: Vec::new(),
        env: Vec::new(),
        os_user: cluster.os_user.clone(),
        secrets: Vec::new(),
        progress: false,
    }
}

/// One tool invocation being built.
#[derive(Debug, Clone)]
pub struct PgTool {
    name: String,
    program: PathBuf,
    args: Vec<OsString>,
    env: Vec<(String, String)>,
    os_user: Option<String>,
    /// Strings scrubbed from captured output and errors (passwords).
    secrets: Vec<String>,
    progress: bool,
}

/// What a finished tool printed.
#[derive(Debug, Clone)]
pub struct ToolOutput {
    /// Exit status.
    pub status: ExitStatus,
    /// Standard output, scrubbed (not trimmed).
    pub stdout: String,
    /// Standard error, scrubbed (not trimmed).
    pub stderr: String,
    /// The command line and both streams, scrubbed and trimmed, for the run log.
    pub log: String,
}

impl PgTool {
    /// Adds one argument.
    pub fn arg(mut self, a: impl Into<OsString>) -> Self {
        self.args.push(a.into());
        self
    }
    /// Adds arguments.
    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, a: I) -> Self {
        self.args.extend(a.into_iter().map(Into::into));
        self
    }
    /// Sets an environment variable for the child.
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.to_string(), v.to_string()));
        self
    }
    /// Passes `source`'s password (if its URL has one) as `PGPASSWORD`, and scrubs it from
    /// the captured output. Use with a conninfo from [`super::conninfo`].
    pub fn password_of(mut self, source: &PgClusterDef) -> Self {
        if let Some(p) = super::urls::password(source) {
            self.env.push(("PGPASSWORD".into(), p.clone()));
            self.secrets.push(p);
        }
        self
    }
    /// Sends each output line to the step's progress sink as it arrives.
    pub fn progress(mut self, on: bool) -> Self {
        self.progress = on;
        self
    }
    /// Runs as the current user even when the cluster has an `os_user` (client tools).
    pub fn as_current_user(mut self) -> Self {
        self.os_user = None;
        self
    }

    /// The command line for logs (no environment, so no password).
    pub fn display(&self) -> String {
        let mut s = self.program.display().to_string();
        for a in &self.args {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        self.scrub(&s)
    }

    fn scrub(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in self.secrets.iter().filter(|s| !s.is_empty()) {
            out = out.replace(s.as_str(), "[redacted]");
        }
        out
    }

    /// A prepared command (runuser wrapper, clean environment, own process group, killed when
    /// drbot dies; cwd `/`; stdin null, stdout and stderr piped) for callers that need to
    /// handle the child themselves, e.g. to feed stdin. Kill its process group when done.
    pub fn command(&self) -> tokio::process::Command {
        let mut cmd = super::owner::command_as(self.os_user.as_deref(), &self.program);
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("PGCONNECT_TIMEOUT", "10");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs to completion; a non-zero exit is returned in [`ToolOutput::status`], not as an
    /// error. Errors: the tool cannot be started (fatal), or the step was cancelled.
    pub async fn run(&self, ctx: &StepContext) -> Result<ToolOutput, StepError> {
        let mut child = self.command().spawn().map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::NotFound {
                " (set bin_dir of the cluster, or put it on PATH)"
            } else {
                ""
            };
            StepError::fatal(format!(
                "could not start `{}`: {e}{hint}",
                self.program.display()
            ))
        })?;
        let _group = GroupGuard::new(child.id());
        let progress = self.progress.then_some(ctx);
        let out = pump(child.stdout.take(), progress, self);
        let err = pump(child.stderr.take(), progress, self);
        let (stdout, stderr, status) = tokio::select! {
            r = async { tokio::join!(out, err, child.wait()) } => r,
            _ = ctx.cancel.cancelled() => {
                return Err(StepError::retryable(format!("cancelled while `{}` ran", self.name)));
            }
        };
        let status = status
            .map_err(|e| StepError::fatal(format!("waiting for `{}` failed: {e}", self.name)))?;
        let stdout = self.scrub(&stdout);
        let stderr = self.scrub(&stderr);
        let mut log = format!("$ {}\n", self.display());
        for part in [&stdout, &stderr] {
            if !part.trim().is_empty() {
                log.push_str(part.trim_end());
                log.push('\n');
            }
        }
        log.push_str(&format!("({status})"));
        Ok(ToolOutput {
            status,
            stdout,
            stderr,
            log: trim_output(&log, MAX_LOG),
        })
    }

    /// Like [`PgTool::run`], but a non-zero exit is a retryable error carrying the output.
    pub async fn run_ok(&self, ctx: &StepContext) -> Result<ToolOutput, StepError> {
        let out = self.run(ctx).await?;
        if out.status.success() {
            return Ok(out);
        }
        let last = last_line(&out.stderr);
        Err(StepError::retryable(format!(
            "`{}` failed ({}){}",
            self.name,
            out.status,
            if last.is_empty() {
                String::new()
            } else {
                format!(": {last}")
            }
        ))
        .with_log(out.log))
    }
}

async fn pump(
    stream: Option<impl AsyncRead + Unpin>,
    progress: Option<&StepContext>,
    tool: &PgTool,
) -> String {
    let Some(stream) = stream else {
        return String::new();
    };
    let mut out = String::new();
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(ctx) = progress {
            ctx.progress.line(tool.scrub(&line));
        }
        // Bounded: keep the head and the tail of very chatty tools.
        if out.len() > 4 * MAX_LOG {
            out = trim_output(&out, 2 * MAX_LOG);
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}
