//! Small helpers shared by the PITR, WAL-archive and session steps, on top of [`crate::pg`]:
//! cluster and store lookups for `validate`/`run`, durations, the port of a cluster's URL,
//! quoting table names, and running a non-PostgreSQL program (`tar`) as a cluster's `os_user`.

use std::{path::Path, time::Duration};

use crate::{
    resources::{PgClusterDef, Resources},
    step::StepError,
};

/// Whether a parameter still holds an unresolved `{placeholder}` (accepted by `validate`).
pub(crate) fn is_placeholder(value: &str) -> bool {
    value.contains('{')
}

/// For `validate`: `name` (the value of parameter `key`) names a configured cluster.
pub(crate) fn check_cluster(res: &Resources, key: &str, name: &str) -> Result<(), String> {
    crate::pg::check_cluster(res, key, name)
}

/// For `validate`: `name` (the value of parameter `key`) names a configured backup store.
pub(crate) fn check_store(res: &Resources, key: &str, name: &str) -> Result<(), String> {
    if is_placeholder(name) || res.backups.contains_key(name) {
        return Ok(());
    }
    let known: Vec<&str> = res.backups.keys().map(String::as_str).collect();
    Err(format!(
        "{key}: unknown backup store `{name}` (configured [backups.<name>] entries: {})",
        if known.is_empty() {
            "none".to_string()
        } else {
            known.join(", ")
        }
    ))
}

/// The cluster named `name`, or a fatal error naming the known ones.
pub(crate) fn cluster<'a>(res: &'a Resources, name: &str) -> Result<&'a PgClusterDef, StepError> {
    crate::pg::cluster(res, name).map_err(StepError::fatal)
}

/// Parses a `"15m"`-style duration parameter.
pub(crate) fn duration(key: &str, value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value.trim()).map_err(|e| format!("{key}: `{value}`: {e}"))
}

/// A query error as a retryable step error, with the password scrubbed.
pub(crate) fn query_error(def: &PgClusterDef, what: &str, e: sqlx::Error) -> StepError {
    StepError::retryable(format!(
        "{what} on {} failed: {}",
        def.display(),
        crate::pg::scrub(def, &e.to_string())
    ))
}

/// A backup-store error as a step error (retryable for I/O and network trouble).
pub(crate) fn backup_error(e: crate::backup::BackupError) -> StepError {
    if e.is_retryable() {
        StepError::retryable(e.to_string())
    } else {
        StepError::fatal(e.to_string())
    }
}

/// The TCP port in the cluster's URL (default 5432).
pub(crate) fn port(def: &PgClusterDef) -> Result<u16, StepError> {
    let url = url::Url::parse(def.url.expose()).map_err(|_| {
        StepError::fatal(format!(
            "the URL of cluster {} is not a valid URL",
            def.display()
        ))
    })?;
    Ok(url.port().unwrap_or(5432))
}

/// Double-quotes a (possibly schema-qualified) table name as SQL identifiers.
pub(crate) fn quote_table(name: &str) -> String {
    name.split('.')
        .map(|p| format!("\"{}\"", p.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(".")
}

/// Whether drbot runs as root (and so must switch to a cluster's `os_user`).
pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A command running `program` as the cluster's `os_user` (through `runuser` when drbot is
/// root), with a minimal environment, in its own process group, killed with drbot.
pub(crate) fn owner_command(def: &PgClusterDef, program: &Path) -> tokio::process::Command {
    let mut cmd = match def.os_user.as_deref().filter(|_| is_root()) {
        Some(user) => {
            let mut c = tokio::process::Command::new("runuser");
            c.args(["-u", user, "--"]).arg(program);
            c
        }
        None => tokio::process::Command::new(program),
    };
    cmd.env_clear()
        .current_dir("/")
        .env("LC_ALL", "C")
        .env("LANG", "C")
        .kill_on_drop(true)
        .process_group(0);
    if let Ok(path) = std::env::var("PATH") {
        cmd.env("PATH", path);
    }
    // SAFETY: prctl is async-signal-safe; it asks the kernel to kill the child if drbot dies.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd
}

/// `(uid, gid)` of a user from the passwd database.
pub(crate) fn user_ids(name: &str) -> Option<(u32, u32)> {
    let cname = std::ffi::CString::new(name).ok()?;
    let mut buf: Vec<libc::c_char> = vec![0; 16 * 1024];
    // SAFETY: passwd is plain old data; all-zero is a valid value.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; buf outlives the read of pwd.
    let rc = unsafe {
        libc::getpwnam_r(
            cname.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return None;
    }
    Some((pwd.pw_uid, pwd.pw_gid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    #[test]
    fn ports_and_tables() {
        let def = |url: &str| PgClusterDef {
            url: Secret::new(url),
            bin_dir: None,
            data_dir: None,
            os_user: None,
        };
        assert_eq!(port(&def("postgres://a:b@db:6543/app")).unwrap(), 6543);
        assert_eq!(port(&def("postgres://db/app")).unwrap(), 5432);
        assert_eq!(quote_table("public.projects"), "\"public\".\"projects\"");
        assert_eq!(quote_table("we\"ird"), "\"we\"\"ird\"");
        assert!(user_ids("root").is_some());
        assert!(user_ids("no-such-user-drbot").is_none());
    }
}
