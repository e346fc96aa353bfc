//! The `incident` command group: open, update and resolve the status-page incident.

use std::fmt;

use super::args::{Args, Flag};
use super::error::{ParseError, ParseErrorKind, snippet};

/// Usage of the whole group, all three forms.
pub(crate) const INCIDENT_USAGE: &str = "/dr incident open [--impact none|minor|major|critical] \
     <title…> | update [--status investigating|identified|monitoring] <message…> | resolve [message…]";
const OPEN_USAGE: &str = "/dr incident open [--impact none|minor|major|critical] <title…>";
const UPDATE_USAGE: &str =
    "/dr incident update [--status investigating|identified|monitoring] <message…>";
const RESOLVE_USAGE: &str = "/dr incident resolve [message…]";

/// Longest incident title, in characters.
pub const MAX_TITLE_CHARS: usize = 255;

/// What to do with the status-page incident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IncidentCommand {
    /// Open an incident titled `title` (the rest of the text) with `impact` (default major).
    Open { title: String, impact: Impact },
    /// Post `message` to the open incident, optionally moving it to `status`.
    Update {
        status: Option<IncidentStatus>,
        message: String,
    },
    /// Resolve the open incident, optionally posting `message`.
    Resolve { message: Option<String> },
}

impl IncidentCommand {
    /// Which of open, update and resolve this is.
    pub fn action(&self) -> IncidentAction {
        match self {
            IncidentCommand::Open { .. } => IncidentAction::Open,
            IncidentCommand::Update { .. } => IncidentAction::Update,
            IncidentCommand::Resolve { .. } => IncidentAction::Resolve,
        }
    }
}

/// The three `incident` forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IncidentAction {
    Open,
    Update,
    Resolve,
}

impl IncidentAction {
    /// All forms, in help order.
    pub const ALL: [IncidentAction; 3] = [
        IncidentAction::Open,
        IncidentAction::Update,
        IncidentAction::Resolve,
    ];

    /// The word after `incident`.
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentAction::Open => "open",
            IncidentAction::Update => "update",
            IncidentAction::Resolve => "resolve",
        }
    }

    /// The usage line of this form.
    pub fn usage(self) -> &'static str {
        match self {
            IncidentAction::Open => OPEN_USAGE,
            IncidentAction::Update => UPDATE_USAGE,
            IncidentAction::Resolve => RESOLVE_USAGE,
        }
    }

    fn label(self) -> &'static str {
        match self {
            IncidentAction::Open => "incident open",
            IncidentAction::Update => "incident update",
            IncidentAction::Resolve => "incident resolve",
        }
    }

    fn from_name(name: &str) -> Option<IncidentAction> {
        IncidentAction::ALL
            .into_iter()
            .find(|a| a.as_str().eq_ignore_ascii_case(name))
    }
}

/// Incident impact, with Statuspage's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Impact {
    None,
    Minor,
    #[default]
    Major,
    Critical,
}

impl Impact {
    /// All impacts, least to most severe.
    pub const ALL: [Impact; 4] = [Impact::None, Impact::Minor, Impact::Major, Impact::Critical];
    const EXPECTED: &str = "none, minor, major or critical";

    /// Statuspage's value: `none`, `minor`, `major` or `critical`.
    pub fn as_str(self) -> &'static str {
        match self {
            Impact::None => "none",
            Impact::Minor => "minor",
            Impact::Major => "major",
            Impact::Critical => "critical",
        }
    }

    /// Looks an impact up by name, ignoring ASCII case.
    pub fn from_name(name: &str) -> Option<Impact> {
        Impact::ALL
            .into_iter()
            .find(|i| i.as_str().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for Impact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Status of an unresolved incident, with Statuspage's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IncidentStatus {
    Investigating,
    Identified,
    Monitoring,
}

impl IncidentStatus {
    /// All statuses, in incident order.
    pub const ALL: [IncidentStatus; 3] = [
        IncidentStatus::Investigating,
        IncidentStatus::Identified,
        IncidentStatus::Monitoring,
    ];
    const EXPECTED: &str = "investigating, identified or monitoring";

    /// Statuspage's value: `investigating`, `identified` or `monitoring`.
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentStatus::Investigating => "investigating",
            IncidentStatus::Identified => "identified",
            IncidentStatus::Monitoring => "monitoring",
        }
    }

    /// Looks a status up by name, ignoring ASCII case.
    pub fn from_name(name: &str) -> Option<IncidentStatus> {
        IncidentStatus::ALL
            .into_iter()
            .find(|s| s.as_str().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for IncidentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parses the arguments after `incident`.
pub(crate) fn parse(mut args: Args) -> Result<IncidentCommand, ParseError> {
    let Some(word) = args.positionals.next() else {
        return Err(ParseError {
            kind: ParseErrorKind::MissingArgument {
                name: "open|update|resolve",
            },
            usage: Some(INCIDENT_USAGE),
        });
    };
    let Some(action) = IncidentAction::from_name(&word.text) else {
        return Err(ParseError {
            kind: ParseErrorKind::UnexpectedArgument {
                input: snippet(&word.text),
            },
            usage: Some(INCIDENT_USAGE),
        });
    };
    parse_action(action, args).map_err(|kind| ParseError {
        kind,
        usage: Some(action.usage()),
    })
}

fn parse_action(action: IncidentAction, mut args: Args) -> Result<IncidentCommand, ParseErrorKind> {
    match action {
        IncidentAction::Open => {
            args.check_flags(&[Flag::Impact], action.label())?;
            let impact = match args.value(Flag::Impact) {
                Some(v) => {
                    Impact::from_name(v).ok_or_else(|| ParseErrorKind::InvalidFlagValue {
                        flag: Flag::Impact.name(),
                        value: snippet(v),
                        expected: Impact::EXPECTED,
                    })?
                }
                None => Impact::default(),
            };
            let title = args
                .positionals
                .rest_text()
                .ok_or(ParseErrorKind::MissingArgument { name: "<title…>" })?;
            let len = title.chars().count();
            if len > MAX_TITLE_CHARS {
                return Err(ParseErrorKind::ArgumentTooLong {
                    what: "incident title",
                    len,
                    max: MAX_TITLE_CHARS,
                });
            }
            Ok(IncidentCommand::Open { title, impact })
        }
        IncidentAction::Update => {
            args.check_flags(&[Flag::Status], action.label())?;
            let status = args
                .value(Flag::Status)
                .map(|v| {
                    IncidentStatus::from_name(v).ok_or_else(|| ParseErrorKind::InvalidFlagValue {
                        flag: Flag::Status.name(),
                        value: snippet(v),
                        expected: IncidentStatus::EXPECTED,
                    })
                })
                .transpose()?;
            let message = args
                .positionals
                .rest_text()
                .ok_or(ParseErrorKind::MissingArgument {
                    name: "<message…>"
                })?;
            Ok(IncidentCommand::Update { status, message })
        }
        IncidentAction::Resolve => {
            args.check_flags(&[], action.label())?;
            Ok(IncidentCommand::Resolve {
                message: args.positionals.rest_text(),
            })
        }
    }
}
