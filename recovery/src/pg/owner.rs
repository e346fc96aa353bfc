//! Acting as a cluster's `os_user`: whether drbot is root (and so must switch user), the
//! user's uid/gid, commands run through `runuser -u USER --`, and files handed to the owner of
//! a data directory. [`super::tool`] builds on this for the PostgreSQL programs;
//! [`owner_command`] is for other programs (`tar`) that must run as the cluster's owner.

use std::path::Path;

use crate::resources::PgClusterDef;

/// Whether drbot runs as root (and so must switch to a cluster's `os_user`).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// `(uid, gid)` of user `name` from the passwd database; `Ok(None)` when there is no such
/// user.
pub fn user_ids(name: &str) -> std::io::Result<Option<(u32, u32)>> {
    let cname = std::ffi::CString::new(name).map_err(std::io::Error::other)?;
    let mut buf_len = 16 * 1024;
    loop {
        let mut buf: Vec<libc::c_char> = vec![0; buf_len];
        // SAFETY: passwd is plain old data (integers and pointers); all-zero is a valid value.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call, and buf outlives the read of pwd below.
        let rc = unsafe {
            libc::getpwnam_r(
                cname.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        if rc == libc::ERANGE && buf_len < (1 << 20) {
            buf_len *= 4;
            continue;
        }
        if rc != 0 {
            let e = std::io::Error::from_raw_os_error(rc);
            return Err(std::io::Error::new(
                e.kind(),
                format!("getpwnam_r({name}): {e}"),
            ));
        }
        if result.is_null() {
            return Ok(None);
        }
        return Ok(Some((pwd.pw_uid, pwd.pw_gid)));
    }
}

/// A command running `program` (not a PostgreSQL program: those go through [`super::tool`]) as
/// the cluster's `os_user` (through `runuser` when drbot is root), with a minimal environment,
/// cwd `/`, in its own process group, killed with drbot. Stdio is left to the caller.
pub fn owner_command(def: &PgClusterDef, program: &Path) -> tokio::process::Command {
    command_as(def.os_user.as_deref(), program)
}

/// [`owner_command`] for an explicit user (`None`: the current user).
pub(crate) fn command_as(os_user: Option<&str>, program: &Path) -> tokio::process::Command {
    let mut cmd = match os_user.filter(|_| is_root()) {
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

/// Writes `text` to `path` and, when drbot is root, gives the file to the owner of `dir` (the
/// cluster's data directory), so the server and its tools can rewrite it later.
pub fn write_owned(dir: &Path, path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    std::fs::write(path, text)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    if is_root() {
        let meta = std::fs::metadata(dir)?;
        std::os::unix::fs::chown(path, Some(meta.uid()), Some(meta.gid()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_looked_up() {
        assert_eq!(user_ids("root").unwrap(), Some((0, 0)));
        assert_eq!(user_ids("no-such-user-drbot").unwrap(), None);
        assert!(user_ids("nul\0byte").is_err());
    }
}
