//! Argument values: run ids, backup references, regions, template and checklist names.

use std::fmt;
use std::str::FromStr;

use super::error::{NameKind, ParseError, ParseErrorKind, snippet};

/// Longest backup id, in bytes (ids are ASCII).
pub const MAX_BACKUP_ID_LEN: usize = 200;
/// Longest template or checklist name, in bytes (names are ASCII).
pub const MAX_NAME_LEN: usize = 64;

/// A run number: positive; written `42` or `#42`, displayed `42`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RunId(pub i64);

/// Whether `text` can be a checklist item id: `[a-z0-9][a-z0-9_-]*`, at most 48 bytes (any
/// case: ids are matched lower-cased).
pub fn is_item_id(text: &str) -> bool {
    let t = text.as_bytes();
    !t.is_empty()
        && t.len() <= 48
        && t[0].is_ascii_alphanumeric()
        && t.iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
}

impl RunId {
    /// Parses `42` or `#42`; `None` unless it is a positive number that fits in an `i64`.
    pub fn parse(text: &str) -> Option<RunId> {
        let digits = text.strip_prefix('#').unwrap_or(text);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse::<i64>().ok().filter(|&n| n > 0).map(RunId)
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for RunId {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<RunId, ParseError> {
        RunId::parse(text).ok_or_else(|| ParseError {
            kind: malformed_run_id(text),
            usage: None,
        })
    }
}

pub(crate) fn malformed_run_id(text: &str) -> ParseErrorKind {
    ParseErrorKind::MalformedRunId {
        input: snippet(text),
    }
}

/// Which backup `verify-backup` checks.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BackupRef {
    /// The most recent backup (`latest`, or no argument).
    Latest,
    /// A backup by id: `[A-Za-z0-9._:-]+`, at most 200 characters.
    Id(String),
}

impl fmt::Display for BackupRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackupRef::Latest => f.write_str("latest"),
            BackupRef::Id(id) => f.write_str(id),
        }
    }
}

pub(crate) fn parse_backup_ref(text: &str) -> Result<BackupRef, ParseErrorKind> {
    if text.eq_ignore_ascii_case("latest") {
        return Ok(BackupRef::Latest);
    }
    let valid = !text.is_empty()
        && text.len() <= MAX_BACKUP_ID_LEN
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if valid {
        Ok(BackupRef::Id(text.to_owned()))
    } else {
        Err(ParseErrorKind::MalformedName {
            what: NameKind::BackupId,
            input: snippet(text),
        })
    }
}

/// The configured spelling of `text`: an exact match first, then one ignoring case.
fn find_configured<'a>(text: &str, known: &'a [String]) -> Option<&'a String> {
    known.iter().find(|k| *k == text).or_else(|| {
        let lower = text.to_lowercase();
        known.iter().find(|k| k.to_lowercase() == lower)
    })
}

pub(crate) fn resolve_region(text: &str, regions: &[String]) -> Result<String, ParseErrorKind> {
    find_configured(text, regions)
        .cloned()
        .ok_or_else(|| ParseErrorKind::UnknownRegion {
            input: snippet(text),
            known: regions.to_vec(),
        })
}

/// `[a-z0-9][a-z0-9_-]*`, at most [`MAX_NAME_LEN`].
pub(crate) fn is_valid_name(text: &str) -> bool {
    text.len() <= MAX_NAME_LEN
        && text
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'))
}

/// A template or checklist name: any valid name (lowercased) when `known` is empty,
/// otherwise one of `known`.
pub(crate) fn resolve_name(
    text: &str,
    known: &[String],
    what: NameKind,
) -> Result<String, ParseErrorKind> {
    if let Some(name) = find_configured(text, known) {
        return Ok(name.clone());
    }
    if !known.is_empty() {
        let input = snippet(text);
        let known = known.to_vec();
        return Err(match what {
            NameKind::Checklist => ParseErrorKind::UnknownChecklist { input, known },
            NameKind::Template | NameKind::BackupId => {
                ParseErrorKind::UnknownTemplate { input, known }
            }
        });
    }
    let lower = text.to_ascii_lowercase();
    if is_valid_name(&lower) {
        Ok(lower)
    } else {
        Err(ParseErrorKind::MalformedName {
            what,
            input: snippet(text),
        })
    }
}
