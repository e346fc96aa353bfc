//! The child processes of the PostgreSQL tools once started: a guard that kills a child's
//! process group, bounded capture of its output scrubbed of the cluster's password, the last
//! line of an error, and the error for a tool that cannot be started.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt};

use super::urls::scrub;
use crate::{
    resources::PgClusterDef,
    step::{StepError, trim_output},
};

/// Kills a child's whole process group when dropped (cancel, timeout, error paths). `pg_ctl
/// start` puts the server in a session of its own, so a started server survives this.
#[derive(Debug)]
pub struct GroupGuard(Option<i32>);

impl GroupGuard {
    /// Guards the process group led by the child with pid `pid` (spawned with `process_group(0)`).
    pub fn new(pid: Option<u32>) -> Self {
        GroupGuard(pid.map(|p| p as i32))
    }
    /// Kills the group now.
    pub fn kill(&mut self) {
        if let Some(pgid) = self.0.take() {
            // SAFETY: kill(2) with a negative pid signals the process group we created.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads a child's stderr (or stdout) to the end, keeping at most about `max` bytes (head and
/// tail), scrubbed of the cluster's password.
pub async fn capture(
    stream: Option<impl AsyncRead + Unpin>,
    def: &PgClusterDef,
    max: usize,
) -> String {
    let Some(mut stream) = stream else {
        return String::new();
    };
    let mut out: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        if out.len() > 4 * max {
            let text = trim_output(&String::from_utf8_lossy(&out), 2 * max);
            out = text.into_bytes();
        }
    }
    let text = scrub(def, &String::from_utf8_lossy(&out));
    trim_output(text.trim_end(), max)
}

/// The last non-empty line of `text` (a tool's error, for one-line messages), trimmed; the
/// marker [`trim_output`] leaves is skipped.
pub fn last_line(text: &str) -> &str {
    text.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('…'))
        .unwrap_or("")
}

/// The cluster's tool `name` could not be started, with a hint when it is not installed.
pub fn spawn_error(name: &str, def: &PgClusterDef, e: io::Error) -> StepError {
    let hint = if e.kind() == io::ErrorKind::NotFound {
        match &def.bin_dir {
            Some(dir) => format!(" (not in bin_dir {})", dir.display()),
            None => " (set bin_dir of the cluster, or put it on PATH)".to_string(),
        }
    } else {
        String::new()
    };
    StepError::fatal(format!("could not start `{name}`: {e}{hint}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_lines() {
        assert_eq!(last_line("a\n  b  \n\n"), "b");
        assert_eq!(last_line("err\n… [10 bytes trimmed] …\n"), "err");
        assert_eq!(last_line(""), "");
    }
}
