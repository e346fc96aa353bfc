//! Canonical text of a [`Command`]: `parse(&cmd.to_string(), vocab) == Ok(cmd)`.
//!
//! Words that need it are quoted so that the tokenizer reads them back as one word; free text
//! (titles, messages, reasons) is written as one quoted word, or split at spaces into as few
//! words as the quoting rules allow.

use std::fmt;

use super::args::flag_body;
use super::incident::IncidentCommand;
use super::lex::{QuoteFamily, quote_family};
use super::{Command, timestamp};

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/dr {}", self.subcommand().name())?;
        match self {
            Command::Help { topic } => {
                if let Some(topic) = topic {
                    write!(f, " {}", topic.name())?;
                }
            }
            Command::Status | Command::Runs => {}
            Command::Failover { region, dry_run } => {
                write!(f, " {}", word(region))?;
                dry_run_flag(f, *dry_run)?;
            }
            Command::Failback { region } => {
                if let Some(region) = region {
                    write!(f, " {}", word(region))?;
                }
            }
            Command::VerifyBackup { backup } => write!(f, " {}", word(&backup.to_string()))?,
            Command::Drill { dry_run } => dry_run_flag(f, *dry_run)?,
            Command::Pitr { target, dry_run } => {
                write!(f, " {}", word(&timestamp::format(target)))?;
                dry_run_flag(f, *dry_run)?;
            }
            Command::RecoverCorruption { target } => {
                write!(f, " {}", word(&timestamp::format(target)))?;
            }
            Command::Run { run }
            | Command::Approve { run }
            | Command::Cancel { run }
            | Command::Retry { run }
            | Command::Skip { run }
            | Command::Abort { run } => write!(f, " {run}")?,
            Command::Deny { run, reason } => {
                write!(f, " {run}")?;
                if let Some(reason) = reason {
                    write!(f, " {}", text(reason))?;
                }
            }
            Command::Incident(incident) => {
                write!(f, " {}", incident.action().as_str())?;
                match incident {
                    IncidentCommand::Open { title, impact } => {
                        write!(f, " --impact {impact} {}", text(title))?;
                    }
                    IncidentCommand::Update { status, message } => {
                        if let Some(status) = status {
                            write!(f, " --status {status}")?;
                        }
                        write!(f, " {}", text(message))?;
                    }
                    IncidentCommand::Resolve { message } => {
                        if let Some(message) = message {
                            write!(f, " {}", text(message))?;
                        }
                    }
                }
            }
            Command::NotifyCustomers { template } => write!(f, " customers {}", word(template))?,
            Command::Checklist { name } => {
                if let Some(name) = name {
                    write!(f, " {}", word(name))?;
                }
            }
            Command::Tick {
                checklist,
                item,
                ticked,
            } => {
                let verb = if *ticked { "tick" } else { "untick" };
                write!(f, " {verb} {} {}", checklist.0, word(item))?;
            }
        }
        Ok(())
    }
}

fn dry_run_flag(f: &mut fmt::Formatter<'_>, dry_run: bool) -> fmt::Result {
    if dry_run {
        f.write_str(" --dry-run")?;
    }
    Ok(())
}

/// `s` as one word: bare if the tokenizer reads it back unchanged, else quoted.
fn word(s: &str) -> String {
    // Lossy fallback only for strings the tokenizer could never have produced as one word.
    single_word(s).unwrap_or_else(|| format!("\"{s}\""))
}

/// `s` as one word, or `None` if no quoting keeps it one word.
fn single_word(s: &str) -> Option<String> {
    let needs_quotes = s.is_empty()
        || s.chars().any(char::is_whitespace)
        || s.starts_with(|c| quote_family(c).is_some())
        || flag_body(s).is_some();
    if !needs_quotes {
        return Some(s.to_owned());
    }
    [(QuoteFamily::Double, '"'), (QuoteFamily::Single, '\'')]
        .into_iter()
        .find(|&(family, _)| quotable(s, family))
        .map(|(_, q)| format!("{q}{s}{q}"))
}

/// Whether `s` survives being quoted with `family`: none of its quotes of that family may be
/// followed by whitespace, as such a quote would close the word early.
fn quotable(s: &str, family: QuoteFamily) -> bool {
    let chars: Vec<char> = s.chars().collect();
    chars
        .windows(2)
        .all(|w| !(quote_family(w[0]) == Some(family) && w[1].is_whitespace()))
}

/// Free text as words that the parser joins back with single spaces into `s`.
fn text(s: &str) -> String {
    let mut words = Vec::new();
    let mut rest = s;
    loop {
        if let Some(w) = single_word(rest) {
            words.push(w);
            break;
        }
        let split =
            longest_quotable_prefix(rest).and_then(|i| Some((i, single_word(rest.get(..i)?)?)));
        match split {
            Some((i, w)) => {
                words.push(w);
                rest = rest.get(i + 1..).unwrap_or("");
            }
            None => {
                words.push(word(rest));
                break;
            }
        }
    }
    words.join(" ")
}

/// Byte index of the last space that ends a prefix quotable with some family.
///
/// A prefix fits a family exactly when it ends at or before the whitespace that follows the
/// first quote of that family followed by whitespace.
fn longest_quotable_prefix(s: &str) -> Option<usize> {
    let limit = [QuoteFamily::Double, QuoteFamily::Single]
        .into_iter()
        .map(|family| first_closing_whitespace(s, family).unwrap_or(s.len()))
        .max()?;
    s.char_indices()
        .rev()
        .find(|&(i, c)| c == ' ' && i <= limit)
        .map(|(i, _)| i)
}

/// Byte index of the first whitespace that follows a quote of `family`.
fn first_closing_whitespace(s: &str, family: QuoteFamily) -> Option<usize> {
    let mut chars = s.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        if quote_family(c) == Some(family)
            && let Some(&(i, next)) = chars.peek()
            && next.is_whitespace()
        {
            return Some(i);
        }
    }
    None
}
