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
    /// read-only commands; the OS user is recorded as the account.
    pub fn cli(settings: &Settings, as_person: &str) -> Actor {
        let os_user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
        Actor {
            person: settings.person(as_person).map(|p| p.name.clone()),
            account: format!("cli:{os_user}:{as_person}"),
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
