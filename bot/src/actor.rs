//! Who is acting: the account on a platform, and the person it resolves to through `[[people]]`.

use crate::config::{Platform, Settings};

/// The author of a command or click.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The person from `[[people]]`, if the account is known.
    pub person: Option<String>,
    /// The account: a Slack or Discord user id, or `cli:<os user>:<person>`.
    pub account: String,
    /// Where the command came from.
    pub platform: Platform,
    /// Channel, if any.
    pub channel: Option<String>,
}

impl Actor {
    /// A chat account, resolved through `[[people]]`.
    pub fn chat(settings: &Settings, platform: Platform, account: &str, channel: &str) -> Actor {
        Actor {
            person: settings
                .person_by_account(platform, account)
                .map(|p| p.name.clone()),
            account: account.to_string(),
            platform,
            channel: Some(channel.to_string()),
        }
    }

    /// `drbot cmd --as <person>`: the person must be in `[[people]]` to be trusted with more than
    /// read-only commands; the OS user (from the process's real uid, not `$USER`, which anyone
    /// can set and cron and containers leave out) is recorded as the account.
    pub fn cli(settings: &Settings, as_person: &str) -> Actor {
        let os_user = os_user();
        Actor {
            person: settings.person(as_person).map(|p| p.name.clone()),
            account: format!("cli:{os_user}:{as_person}"),
            platform: Platform::Cli,
            channel: None,
        }
    }

    /// A `drbot` command run by an OS user on its own (e.g. `subscribers import`), for no
    /// person in `[[people]]`.
    pub fn cli_tool() -> Actor {
        Actor {
            person: None,
            account: format!("cli:{}", os_user()),
            platform: Platform::Cli,
            channel: None,
        }
    }

    /// drbot itself (engine, scheduler, expiry).
    pub fn system() -> Actor {
        Actor {
            person: None,
            account: "drbot".into(),
            platform: Platform::System,
            channel: None,
        }
    }
}

/// The name of this process's real user (`getpwuid_r`), or `uid<N>` when it has none.
pub fn os_user() -> String {
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    // SAFETY: a zeroed `passwd` is a valid out-parameter (plain integers and null pointers).
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call and `buf.len()` is the buffer's size; on
    // success `found` points to `pwd`, whose strings point into `buf`, alive below.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut found) };
    if rc == 0 && !found.is_null() && !pwd.pw_name.is_null() {
        // SAFETY: a NUL-terminated string inside `buf` (see above).
        let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
        if !name.is_empty() {
            return name.to_string_lossy().into_owned();
        }
    }
    format!("uid{uid}")
}

#[cfg(test)]
mod os_user_tests {
    /// The account is the real user's name, as `id -un` says, whatever `$USER` claims.
    #[test]
    fn the_os_user_comes_from_the_uid() {
        let id = std::process::Command::new("id")
            .arg("-un")
            .output()
            .unwrap();
        let expected = String::from_utf8_lossy(&id.stdout).trim().to_string();
        assert!(!expected.is_empty());
        assert_eq!(super::os_user(), expected);
    }
}
