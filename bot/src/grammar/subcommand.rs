//! Subcommand names, usage lines and one-line summaries, plus the help text built from them.

use std::fmt;

use super::incident;

/// A `/dr` subcommand, as named on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subcommand {
    Help,
    Status,
    Failover,
    Failback,
    VerifyBackup,
    Drill,
    Pitr,
    RecoverCorruption,
    Runs,
    Run,
    Approve,
    Deny,
    Cancel,
    Retry,
    Skip,
    Abort,
    Incident,
    Notify,
    Checklist,
}

/// Largest edit distance at which an unknown name gets a "Did you mean" suggestion.
const MAX_SUGGESTION_DISTANCE: usize = 2;

impl Subcommand {
    /// Every subcommand, in help order.
    pub const ALL: [Subcommand; 19] = [
        Subcommand::Help,
        Subcommand::Status,
        Subcommand::Failover,
        Subcommand::Failback,
        Subcommand::VerifyBackup,
        Subcommand::Drill,
        Subcommand::Pitr,
        Subcommand::RecoverCorruption,
        Subcommand::Runs,
        Subcommand::Run,
        Subcommand::Approve,
        Subcommand::Deny,
        Subcommand::Cancel,
        Subcommand::Retry,
        Subcommand::Skip,
        Subcommand::Abort,
        Subcommand::Incident,
        Subcommand::Notify,
        Subcommand::Checklist,
    ];

    /// The name typed after `/dr`.
    pub fn name(self) -> &'static str {
        match self {
            Subcommand::Help => "help",
            Subcommand::Status => "status",
            Subcommand::Failover => "failover",
            Subcommand::Failback => "failback",
            Subcommand::VerifyBackup => "verify-backup",
            Subcommand::Drill => "drill",
            Subcommand::Pitr => "pitr",
            Subcommand::RecoverCorruption => "recover-corruption",
            Subcommand::Runs => "runs",
            Subcommand::Run => "run",
            Subcommand::Approve => "approve",
            Subcommand::Deny => "deny",
            Subcommand::Cancel => "cancel",
            Subcommand::Retry => "retry",
            Subcommand::Skip => "skip",
            Subcommand::Abort => "abort",
            Subcommand::Incident => "incident",
            Subcommand::Notify => "notify",
            Subcommand::Checklist => "checklist",
        }
    }

    /// The usage line, e.g. `/dr failover <region> [--dry-run]`.
    pub fn usage(self) -> &'static str {
        match self {
            Subcommand::Help => "/dr help [subcommand]",
            Subcommand::Status => "/dr status",
            Subcommand::Failover => "/dr failover <region> [--dry-run]",
            Subcommand::Failback => "/dr failback [<region>]",
            Subcommand::VerifyBackup => "/dr verify-backup [latest|<backup-id>]",
            Subcommand::Drill => "/dr drill [--dry-run]",
            Subcommand::Pitr => "/dr pitr <timestamp> [--dry-run]",
            Subcommand::RecoverCorruption => "/dr recover-corruption <timestamp>",
            Subcommand::Runs => "/dr runs",
            Subcommand::Run => "/dr run <run>",
            Subcommand::Approve => "/dr approve <run>",
            Subcommand::Deny => "/dr deny <run> [reason…]",
            Subcommand::Cancel => "/dr cancel <run>",
            Subcommand::Retry => "/dr retry <run>",
            Subcommand::Skip => "/dr skip <run>",
            Subcommand::Abort => "/dr abort <run>",
            Subcommand::Incident => incident::INCIDENT_USAGE,
            Subcommand::Notify => "/dr notify customers <template>",
            Subcommand::Checklist => {
                "/dr checklist [name] | /dr checklist tick|untick <#id> <item>"
            }
        }
    }

    /// One line saying what the subcommand does.
    pub fn summary(self) -> &'static str {
        match self {
            Subcommand::Help => "Show all subcommands, or the details of one.",
            Subcommand::Status => "Show the regions and the active runs.",
            Subcommand::Failover => "Fail over the primary database to <region>.",
            Subcommand::Failback => "Fail back to the original primary region, or to <region>.",
            Subcommand::VerifyBackup => {
                "Restore the latest or the given backup into a scratch instance and verify it."
            }
            Subcommand::Drill => "Run the disaster-recovery drill end to end.",
            Subcommand::Pitr => "Restore the database to <timestamp> (UTC unless a zone is given).",
            Subcommand::RecoverCorruption => {
                "Recover from data corruption by restoring to just before <timestamp>."
            }
            Subcommand::Runs => "List recent and active runs.",
            Subcommand::Run => "Show one run: its plan, steps, approvals and state.",
            Subcommand::Approve => "Approve a run that waits for a second person.",
            Subcommand::Deny => "Refuse to approve a run, optionally saying why.",
            Subcommand::Cancel => "Cancel a run that has not finished.",
            Subcommand::Retry => "Re-run the interrupted step of a run that needs attention.",
            Subcommand::Skip => "Skip the interrupted step of a run that needs attention.",
            Subcommand::Abort => "Abort a run that needs attention.",
            Subcommand::Incident => "Open, update or resolve the status-page incident.",
            Subcommand::Notify => "Send customers the notification made from <template>.",
            Subcommand::Checklist => {
                "Post the checklist <name>, or list them; tick or untick an item of a posted one."
            }
        }
    }

    /// True for subcommands that only read state: help, status, runs, run.
    pub fn is_read_only(self) -> bool {
        matches!(
            self,
            Subcommand::Help | Subcommand::Status | Subcommand::Runs | Subcommand::Run
        )
    }

    /// Looks a subcommand up by name, ignoring ASCII case.
    pub fn from_name(name: &str) -> Option<Subcommand> {
        Subcommand::ALL
            .into_iter()
            .find(|s| s.name().eq_ignore_ascii_case(name))
    }

    /// The subcommand whose name is closest to `name`, if within edit distance 2.
    pub fn closest(name: &str) -> Option<Subcommand> {
        let lower = name.to_lowercase();
        let max_len = Subcommand::ALL.iter().map(|s| s.name().len()).max()?;
        if lower.chars().count() > max_len + MAX_SUGGESTION_DISTANCE {
            return None;
        }
        Subcommand::ALL
            .into_iter()
            .map(|s| (edit_distance(&lower, s.name()), s))
            .filter(|&(d, _)| d <= MAX_SUGGESTION_DISTANCE)
            .min_by_key(|&(d, _)| d)
            .map(|(_, s)| s)
    }
}

impl fmt::Display for Subcommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = Vec::with_capacity(b.len() + 1);
        cur.push(i + 1);
        for (j, &cb) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(ca != cb);
            let delete = prev[j + 1] + 1;
            let insert = cur[j] + 1;
            cur.push(substitute.min(delete).min(insert));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Every subcommand: its usage line and summary, one per line.
pub fn help_text() -> String {
    Subcommand::ALL
        .iter()
        .map(|s| format!("{} — {}", s.usage(), s.summary()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Help for one subcommand: its usage (each form on its own line for `incident`), then its summary.
pub fn topic_help(topic: Subcommand) -> String {
    let usage = match topic {
        Subcommand::Incident => incident::IncidentAction::ALL
            .iter()
            .map(|a| a.usage())
            .collect::<Vec<_>>()
            .join("\n"),
        other => other.usage().to_owned(),
    };
    format!("{usage}\n{}", topic.summary())
}

/// The usage line of the subcommand an input names, for errors raised before parsing it.
pub(crate) fn guess_usage(input: &str) -> Option<&'static str> {
    let mut words = input.split_whitespace();
    let mut word = words.next()?;
    if word.eq_ignore_ascii_case("/dr") {
        word = words.next()?;
    }
    Subcommand::from_name(word).map(Subcommand::usage)
}
