//! Arguments after the subcommand: flags pulled out from anywhere, the rest kept in order.
//!
//! A flag is an unquoted word `--name`, `--name=value` (or `—name`, as chat apps "fix" `--`),
//! whose name starts with a letter. Quoting a word (`"--x"`) makes it an ordinary argument.

use super::error::{ParseErrorKind, snippet};
use super::lex::Token;

/// Every flag any subcommand takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Flag {
    DryRun,
    Impact,
    Status,
    Help,
}

impl Flag {
    const ALL: [Flag; 4] = [Flag::DryRun, Flag::Impact, Flag::Status, Flag::Help];

    /// The flag as written in usage lines.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Flag::DryRun => "--dry-run",
            Flag::Impact => "--impact",
            Flag::Status => "--status",
            Flag::Help => "--help",
        }
    }

    /// For flags that take a value: the accepted values, for error messages.
    fn expected(self) -> Option<&'static str> {
        match self {
            Flag::Impact => Some("none, minor, major or critical"),
            Flag::Status => Some("investigating, identified or monitoring"),
            Flag::DryRun | Flag::Help => None,
        }
    }

    fn from_name(name: &str) -> Option<Flag> {
        Flag::ALL.into_iter().find(|f| {
            f.name()
                .strip_prefix("--")
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        })
    }
}

/// The name part of a flag-like word (`--dry-run` → `dry-run`), if it is one.
pub(crate) fn flag_body(text: &str) -> Option<&str> {
    let body = text
        .strip_prefix("--")
        .or_else(|| text.strip_prefix('—'))
        .or_else(|| text.strip_prefix('–'))?;
    body.starts_with(|c: char| c.is_ascii_alphabetic())
        .then_some(body)
}

/// Positional arguments, consumed front to back.
#[derive(Debug, Default)]
pub(crate) struct Positionals {
    tokens: std::collections::VecDeque<Token>,
}

impl Positionals {
    pub(crate) fn next(&mut self) -> Option<Token> {
        self.tokens.pop_front()
    }

    pub(crate) fn peek(&self) -> Option<&Token> {
        self.tokens.front()
    }

    /// The next argument, or a `MissingArgument` error naming it.
    pub(crate) fn required(&mut self, name: &'static str) -> Result<Token, ParseErrorKind> {
        self.next().ok_or(ParseErrorKind::MissingArgument { name })
    }

    /// All remaining arguments joined by single spaces; `None` when that is blank.
    pub(crate) fn rest_text(&mut self) -> Option<String> {
        let words: Vec<String> = self.tokens.drain(..).map(|t| t.text).collect();
        let text = words.join(" ");
        (!text.trim().is_empty()).then_some(text)
    }

    /// Fails on the first argument left over.
    pub(crate) fn finish(mut self) -> Result<(), ParseErrorKind> {
        match self.next() {
            Some(extra) => Err(ParseErrorKind::UnexpectedArgument {
                input: snippet(&extra.text),
            }),
            None => Ok(()),
        }
    }
}

/// One flag as given.
#[derive(Debug)]
struct FlagUse {
    flag: Flag,
    /// The value, or the error to report if this subcommand takes the flag at all.
    value: Result<Option<String>, ParseErrorKind>,
    /// The flag as typed, without any `=value`.
    typed: String,
}

/// The arguments after the subcommand, split into flags and positionals.
#[derive(Debug, Default)]
pub(crate) struct Args {
    flags: Vec<FlagUse>,
    pub positionals: Positionals,
}

impl Args {
    /// Splits flags from positionals. Unknown and repeated flags fail here; a bad or missing
    /// value fails in [`Args::check_flags`], after a flag the subcommand does not take.
    pub(crate) fn split(tokens: Vec<Token>) -> Result<Args, ParseErrorKind> {
        let mut args = Args::default();
        let mut tokens = tokens.into_iter().peekable();
        while let Some(token) = tokens.next() {
            let body = if token.quoted {
                None
            } else {
                flag_body(&token.text)
            };
            let Some(body) = body else {
                args.positionals.tokens.push_back(token);
                continue;
            };
            let (name, inline) = match body.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (body, None),
            };
            // `body` is a suffix of the word and `name` a prefix of `body`: char boundaries.
            let typed_len = token.text.len() - body.len() + name.len();
            let typed = token.text.get(..typed_len).unwrap_or(&token.text);
            let flag = Flag::from_name(name).ok_or_else(|| ParseErrorKind::UnknownFlag {
                flag: snippet(typed),
            })?;
            if args.has(flag) {
                return Err(ParseErrorKind::DuplicateFlag { flag: flag.name() });
            }
            let missing = |expected| ParseErrorKind::MissingFlagValue {
                flag: flag.name(),
                expected,
            };
            let value = match (flag.expected(), inline) {
                (None, None) => Ok(None),
                (None, Some(value)) => Err(ParseErrorKind::InvalidFlagValue {
                    flag: flag.name(),
                    value: snippet(value),
                    expected: "no value",
                }),
                (Some(expected), Some("")) => Err(missing(expected)),
                (Some(_), Some(value)) => Ok(Some(value.to_owned())),
                (Some(expected), None) => tokens
                    .next_if(|t| t.quoted || flag_body(&t.text).is_none())
                    .map(|t| Some(t.text))
                    .ok_or_else(|| missing(expected)),
            };
            args.flags.push(FlagUse {
                flag,
                value,
                typed: typed.to_owned(),
            });
        }
        Ok(args)
    }

    pub(crate) fn has(&self, flag: Flag) -> bool {
        self.flags.iter().any(|u| u.flag == flag)
    }

    /// The value given to `flag`, if it was given (call after [`Args::check_flags`]).
    pub(crate) fn value(&self, flag: Flag) -> Option<&str> {
        self.flags
            .iter()
            .find(|u| u.flag == flag)
            .and_then(|u| u.value.as_ref().ok()?.as_deref())
    }

    /// Fails on the first flag (other than `--help`) not in `allowed`, then on the first
    /// flag with a bad or missing value.
    pub(crate) fn check_flags(
        &self,
        allowed: &[Flag],
        command: &'static str,
    ) -> Result<(), ParseErrorKind> {
        let unsupported = self
            .flags
            .iter()
            .find(|u| u.flag != Flag::Help && !allowed.contains(&u.flag));
        if let Some(u) = unsupported {
            return Err(ParseErrorKind::UnsupportedFlag {
                flag: snippet(&u.typed),
                command,
            });
        }
        match self.flags.iter().find_map(|u| u.value.as_ref().err()) {
            Some(error) => Err(error.clone()),
            None => Ok(()),
        }
    }
}
