//! Parse errors: what went wrong, rendered as one short sentence plus the usage line.
//!
//! User input is echoed only through [`snippet`], which caps it at [`MAX_ECHO_CHARS`]
//! characters and flattens whitespace, so a message is always at most two lines.

use std::fmt;

use super::subcommand::Subcommand;

/// Most characters of user input an error message repeats back.
pub(crate) const MAX_ECHO_CHARS: usize = 64;
/// Most names from config an error message lists.
const MAX_LISTED: usize = 20;

/// Why a command line did not parse, with the usage line of the subcommand involved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// What went wrong.
    pub kind: ParseErrorKind,
    /// Usage line of the subcommand involved, if one was recognised.
    pub usage: Option<&'static str>,
}

/// Which kind of name was malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NameKind {
    BackupId,
    Template,
    Checklist,
}

impl NameKind {
    fn label(self) -> &'static str {
        match self {
            NameKind::BackupId => "backup id",
            NameKind::Template => "template name",
            NameKind::Checklist => "checklist name",
        }
    }

    fn rule(self) -> &'static str {
        match self {
            NameKind::BackupId => "letters, digits, `.`, `_`, `:` and `-`, at most 200",
            NameKind::Template | NameKind::Checklist => {
                "lowercase letters, digits, `-` and `_`, at most 64, starting with a letter or digit"
            }
        }
    }
}

/// What went wrong. Strings taken from user input are already shortened for echoing.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseErrorKind {
    /// The first word is not a subcommand (also `help <topic>` with an unknown topic).
    UnknownSubcommand {
        input: String,
        suggestion: Option<Subcommand>,
    },
    /// The region is not one of the configured regions.
    UnknownRegion { input: String, known: Vec<String> },
    /// A required argument is missing; `name` is as written in the usage line.
    MissingArgument { name: &'static str },
    /// More arguments than the subcommand takes, or the wrong keyword.
    UnexpectedArgument { input: String },
    /// A `--flag` no subcommand knows.
    UnknownFlag { flag: String },
    /// A known flag that this subcommand does not take.
    UnsupportedFlag { flag: String, command: &'static str },
    /// A flag that takes a value was given none.
    MissingFlagValue {
        flag: &'static str,
        expected: &'static str,
    },
    /// A flag value outside the accepted set (or a value given to a switch).
    InvalidFlagValue {
        flag: &'static str,
        value: String,
        expected: &'static str,
    },
    /// The same flag given twice.
    DuplicateFlag { flag: &'static str },
    /// Not a timestamp in an accepted format, or not a real date/time.
    MalformedTimestamp { input: String },
    /// Not a positive run number.
    MalformedRunId { input: String },
    /// A backup id, template or checklist name with characters or length not allowed.
    MalformedName { what: NameKind, input: String },
    /// A template not in the configured list.
    UnknownTemplate { input: String, known: Vec<String> },
    /// A checklist not in the configured list.
    UnknownChecklist { input: String, known: Vec<String> },
    /// An argument longer than allowed (e.g. an incident title over 255 characters).
    ArgumentTooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    /// A quote was opened and never closed.
    UnterminatedQuote { quote: char },
    /// The whole input is longer than [`super::MAX_INPUT_BYTES`].
    TooLong { len: usize, max: usize },
    /// The input holds a control character that is not whitespace.
    ControlCharacter { ch: char },
}

impl ParseErrorKind {
    pub(crate) fn unknown_subcommand(input: &str) -> Self {
        ParseErrorKind::UnknownSubcommand {
            input: snippet(input),
            suggestion: Subcommand::closest(input),
        }
    }
}

impl fmt::Display for ParseErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseErrorKind::UnknownSubcommand { input, suggestion } => {
                write!(f, "Unknown subcommand `{input}`.")?;
                if let Some(s) = suggestion {
                    write!(f, " Did you mean `{}`?", s.name())?;
                }
                Ok(())
            }
            ParseErrorKind::UnknownRegion { input, known } => {
                if known.is_empty() {
                    write!(f, "Unknown region `{input}`; no regions are configured.")
                } else {
                    write!(
                        f,
                        "Unknown region `{input}`. Known regions: {}.",
                        list(known)
                    )
                }
            }
            ParseErrorKind::MissingArgument { name } => write!(f, "Missing argument `{name}`."),
            ParseErrorKind::UnexpectedArgument { input } => {
                write!(f, "Unexpected argument `{input}`.")
            }
            ParseErrorKind::UnknownFlag { flag } => write!(f, "Unknown flag `{flag}`."),
            ParseErrorKind::UnsupportedFlag { flag, command } => {
                write!(f, "`{command}` does not take `{flag}`.")
            }
            ParseErrorKind::MissingFlagValue { flag, expected } => {
                write!(f, "Flag `{flag}` needs a value: {expected}.")
            }
            ParseErrorKind::InvalidFlagValue {
                flag,
                value,
                expected,
            } => write!(
                f,
                "Invalid value `{value}` for `{flag}`; expected {expected}."
            ),
            ParseErrorKind::DuplicateFlag { flag } => {
                write!(f, "Flag `{flag}` is given more than once.")
            }
            ParseErrorKind::MalformedTimestamp { input } => write!(
                f,
                "Malformed timestamp `{input}`; use `YYYY-MM-DD HH:MM[:SS]` (UTC unless a zone \
                 like `Z` or `+02:00` follows) or RFC 3339 like `2026-01-27T14:30:00Z`."
            ),
            ParseErrorKind::MalformedRunId { input } => write!(
                f,
                "Malformed run id `{input}`; expected a positive number like `42` or `#42`."
            ),
            ParseErrorKind::MalformedName { what, input } => write!(
                f,
                "Malformed {} `{input}`; use {}.",
                what.label(),
                what.rule()
            ),
            ParseErrorKind::UnknownTemplate { input, known } => {
                write!(
                    f,
                    "Unknown template `{input}`. Known templates: {}.",
                    list(known)
                )
            }
            ParseErrorKind::UnknownChecklist { input, known } => write!(
                f,
                "Unknown checklist `{input}`. Known checklists: {}.",
                list(known)
            ),
            ParseErrorKind::ArgumentTooLong { what, len, max } => write!(
                f,
                "The {what} is too long ({len} characters; at most {max})."
            ),
            ParseErrorKind::UnterminatedQuote { quote } => write!(
                f,
                "Unterminated quote: a {quote} is never closed (a closing quote must end a word)."
            ),
            ParseErrorKind::TooLong { len, max } => {
                write!(f, "The command is too long ({len} bytes; at most {max}).")
            }
            ParseErrorKind::ControlCharacter { ch } => write!(
                f,
                "The command contains a control character (U+{:04X}); remove it.",
                u32::from(*ch)
            ),
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind)?;
        match self.usage {
            Some(usage) => write!(f, "\nUsage: {usage}"),
            None => write!(f, "\nSee `/dr help` for all subcommands."),
        }
    }
}

impl std::error::Error for ParseError {}

/// User input made safe to echo: one line, no backticks or invisible characters, and at
/// most [`MAX_ECHO_CHARS`] characters (cut at a character boundary, marked with `…`).
pub(crate) fn snippet(input: &str) -> String {
    let mut out = String::new();
    for (n, c) in input.chars().enumerate() {
        if n == MAX_ECHO_CHARS {
            out.push('…');
            break;
        }
        out.push(match c {
            '`' => '\'',
            c if c.is_whitespace() => ' ',
            c if c.is_control() || is_invisible(c) => '\u{FFFD}',
            c => c,
        });
    }
    out
}

/// Zero-width and bidirectional-override characters, which could disguise echoed text.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}'
    )
}

/// Names from config, shortened and capped at [`MAX_LISTED`], comma-separated.
fn list(names: &[String]) -> String {
    let mut shown: Vec<String> = names.iter().take(MAX_LISTED).map(|n| snippet(n)).collect();
    if names.len() > MAX_LISTED {
        shown.push("…".to_owned());
    }
    shown.join(", ")
}
