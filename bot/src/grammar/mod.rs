//! The `/dr` command grammar shared by every front-end (Slack, Discord, CLI break-glass).
//!
//! [`parse`] turns one line of user text into a [`Command`]; it does no I/O and never panics.
//! What it needs from config (regions, templates, checklists) comes in a [`Vocabulary`].
//! `Display` on [`Command`] prints the canonical text, and `parse` reads it back unchanged.
//!
//! Files: `lex` (tokenizer: quotes, smart quotes, size and control-character limits), `args`
//! (flags and positional arguments), `commands` (one parser per subcommand), `incident` (the
//! `incident` group), `values` (run ids, backup refs, regions, names), `timestamp` (PITR
//! timestamps), `display` (canonical text), `subcommand` (names, usage lines, help) and
//! `error` ([`ParseError`]).

mod args;
mod commands;
mod display;
mod error;
mod incident;
pub(crate) mod lex;
mod subcommand;
mod timestamp;
mod values;

#[cfg(test)]
mod cases;
#[cfg(test)]
mod tests;

use chrono::{DateTime, Utc};

pub use error::{NameKind, ParseError, ParseErrorKind};
pub use incident::{Impact, IncidentAction, IncidentCommand, IncidentStatus, MAX_TITLE_CHARS};
pub use lex::MAX_INPUT_BYTES;
pub use subcommand::{Subcommand, help_text, topic_help};
pub use values::{BackupRef, MAX_BACKUP_ID_LEN, MAX_NAME_LEN, RunId};

/// What the parser needs to know from config (no I/O).
#[derive(Debug, Clone, Default)]
pub struct Vocabulary {
    /// Known region names; `failover`/`failback` accept only these.
    pub regions: Vec<String>,
    /// Customer-notification templates. Empty: any valid name (`[a-z0-9][a-z0-9_-]*`, max 64).
    pub templates: Vec<String>,
    /// Checklists. Empty: any valid name (`[a-z0-9][a-z0-9_-]*`, max 64).
    pub checklists: Vec<String>,
}

/// A parsed `/dr` command, one variant per subcommand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Show every subcommand's usage, or the details of one subcommand.
    Help { topic: Option<Subcommand> },
    /// Show replication, backup and active-run status.
    Status,
    /// Promote the standby in `region` to primary (with `dry_run`, only plan it).
    Failover { region: String, dry_run: bool },
    /// Return the primary to the original region, or to `region` if given.
    Failback { region: Option<String> },
    /// Restore a backup into a scratch instance and verify it.
    VerifyBackup { backup: BackupRef },
    /// Run the disaster-recovery drill (with `dry_run`, only plan it).
    Drill { dry_run: bool },
    /// Point-in-time restore to `target` (with `dry_run`, only plan it).
    Pitr {
        target: DateTime<Utc>,
        dry_run: bool,
    },
    /// Recover from data corruption by restoring to just before `target`.
    RecoverCorruption { target: DateTime<Utc> },
    /// List recent and active runs.
    Runs,
    /// Show one run: its plan, steps, approvals and state.
    Run { run: RunId },
    /// Give the second-person approval a pending run waits for.
    Approve { run: RunId },
    /// Refuse approval of a pending run, optionally saying why.
    Deny { run: RunId, reason: Option<String> },
    /// Cancel a run that has not finished.
    Cancel { run: RunId },
    /// Re-run the interrupted step of a run that needs attention.
    Retry { run: RunId },
    /// Skip the interrupted step of a run that needs attention and go on.
    Skip { run: RunId },
    /// Abort a run that needs attention.
    Abort { run: RunId },
    /// Open, update or resolve the status-page incident.
    Incident(IncidentCommand),
    /// Send the customer notification made from `template`.
    NotifyCustomers { template: String },
    /// Show the checklist `name`, or list the checklists.
    Checklist { name: Option<String> },
    /// Tick (or, with `ticked = false`, untick) item `item` of the posted checklist
    /// `checklist` (its `#id`): what its buttons do, for when chat is down (`drbot cmd`).
    Tick {
        checklist: RunId,
        item: String,
        ticked: bool,
    },
}

impl Command {
    /// The subcommand this command was parsed from.
    pub fn subcommand(&self) -> Subcommand {
        match self {
            Command::Help { .. } => Subcommand::Help,
            Command::Status => Subcommand::Status,
            Command::Failover { .. } => Subcommand::Failover,
            Command::Failback { .. } => Subcommand::Failback,
            Command::VerifyBackup { .. } => Subcommand::VerifyBackup,
            Command::Drill { .. } => Subcommand::Drill,
            Command::Pitr { .. } => Subcommand::Pitr,
            Command::RecoverCorruption { .. } => Subcommand::RecoverCorruption,
            Command::Runs => Subcommand::Runs,
            Command::Run { .. } => Subcommand::Run,
            Command::Approve { .. } => Subcommand::Approve,
            Command::Deny { .. } => Subcommand::Deny,
            Command::Cancel { .. } => Subcommand::Cancel,
            Command::Retry { .. } => Subcommand::Retry,
            Command::Skip { .. } => Subcommand::Skip,
            Command::Abort { .. } => Subcommand::Abort,
            Command::Incident(_) => Subcommand::Incident,
            Command::NotifyCustomers { .. } => Subcommand::Notify,
            Command::Checklist { .. } | Command::Tick { .. } => Subcommand::Checklist,
        }
    }

    /// True when the command only reads state (help, status, runs, run).
    pub fn is_read_only(&self) -> bool {
        self.subcommand().is_read_only()
    }
}

/// Parses one `/dr` command line. A leading `/dr` is optional; blank input asks for help.
pub fn parse(input: &str, vocab: &Vocabulary) -> Result<Command, ParseError> {
    let tokens = lex::tokenize(input).map_err(|kind| ParseError {
        kind,
        usage: subcommand::guess_usage(input),
    })?;
    let mut tokens = tokens.into_iter();
    let mut first = tokens.next();
    if first
        .as_ref()
        .is_some_and(|t| !t.quoted && t.text.eq_ignore_ascii_case("/dr"))
    {
        first = tokens.next();
    }
    let Some(first) = first else {
        return Ok(Command::Help { topic: None });
    };
    let sub = if !first.quoted && (first.text == "--help" || first.text == "-h") {
        Subcommand::Help
    } else {
        Subcommand::from_name(&first.text).ok_or_else(|| ParseError {
            kind: ParseErrorKind::unknown_subcommand(&first.text),
            usage: None,
        })?
    };
    let args = args::Args::split(tokens.collect()).map_err(|kind| ParseError {
        kind,
        usage: Some(sub.usage()),
    })?;
    if args.has(args::Flag::Help) {
        return Ok(Command::Help { topic: Some(sub) });
    }
    commands::parse_subcommand(sub, args, vocab)
}
