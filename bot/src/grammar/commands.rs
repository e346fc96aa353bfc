//! One parser per subcommand: checks its flags, then takes its positional arguments in order.

use super::args::{Args, Flag};
use super::error::{NameKind, ParseError, ParseErrorKind, snippet};
use super::subcommand::Subcommand;
use super::values::{self, BackupRef, RunId};
use super::{Command, Vocabulary, incident, timestamp};

/// Parses the arguments of `sub`; errors carry the usage line of `sub` (or of the
/// `incident` form involved).
pub(crate) fn parse_subcommand(
    sub: Subcommand,
    args: Args,
    vocab: &Vocabulary,
) -> Result<Command, ParseError> {
    if sub == Subcommand::Incident {
        return incident::parse(args).map(Command::Incident);
    }
    parse_simple(sub, args, vocab).map_err(|kind| ParseError {
        kind,
        usage: Some(sub.usage()),
    })
}

fn parse_simple(
    sub: Subcommand,
    args: Args,
    vocab: &Vocabulary,
) -> Result<Command, ParseErrorKind> {
    let allowed: &[Flag] = match sub {
        Subcommand::Failover | Subcommand::Drill | Subcommand::Pitr => &[Flag::DryRun],
        _ => &[],
    };
    args.check_flags(allowed, sub.name())?;
    let dry_run = args.has(Flag::DryRun);
    let mut pos = args.positionals;
    let command = match sub {
        Subcommand::Help => Command::Help {
            topic: pos.next().map(|t| help_topic(&t.text)).transpose()?,
        },
        Subcommand::Status => Command::Status,
        Subcommand::Failover => Command::Failover {
            region: values::resolve_region(&pos.required("<region>")?.text, &vocab.regions)?,
            dry_run,
        },
        Subcommand::Failback => Command::Failback {
            region: pos
                .next()
                .map(|t| values::resolve_region(&t.text, &vocab.regions))
                .transpose()?,
        },
        Subcommand::VerifyBackup => Command::VerifyBackup {
            backup: match pos.next() {
                Some(t) => values::parse_backup_ref(&t.text)?,
                None => BackupRef::Latest,
            },
        },
        Subcommand::Drill => Command::Drill { dry_run },
        Subcommand::Pitr => Command::Pitr {
            target: timestamp::take(&mut pos)?,
            dry_run,
        },
        Subcommand::RecoverCorruption => Command::RecoverCorruption {
            target: timestamp::take(&mut pos)?,
        },
        Subcommand::Runs => Command::Runs,
        Subcommand::Run => Command::Run {
            run: run_id(&mut pos)?,
        },
        Subcommand::Approve => Command::Approve {
            run: run_id(&mut pos)?,
        },
        Subcommand::Deny => Command::Deny {
            run: run_id(&mut pos)?,
            reason: pos.rest_text(),
        },
        Subcommand::Cancel => Command::Cancel {
            run: run_id(&mut pos)?,
        },
        Subcommand::Retry => Command::Retry {
            run: run_id(&mut pos)?,
        },
        Subcommand::Skip => Command::Skip {
            run: run_id(&mut pos)?,
        },
        Subcommand::Abort => Command::Abort {
            run: run_id(&mut pos)?,
        },
        Subcommand::Notify => {
            let word = pos.required("customers")?;
            if !word.text.eq_ignore_ascii_case("customers") {
                return Err(ParseErrorKind::UnexpectedArgument {
                    input: snippet(&word.text),
                });
            }
            let template = pos.required("<template>")?;
            Command::NotifyCustomers {
                template: values::resolve_name(
                    &template.text,
                    &vocab.templates,
                    NameKind::Template,
                )?,
            }
        }
        Subcommand::Checklist => match pos.next() {
            Some(t)
                if !t.quoted
                    && ["tick", "untick"].contains(&t.text.to_ascii_lowercase().as_str()) =>
            {
                let id = pos.required("<checklist>")?;
                let checklist =
                    RunId::parse(&id.text).ok_or_else(|| ParseErrorKind::UnexpectedArgument {
                        input: snippet(&id.text),
                    })?;
                let item = pos.required("<item>")?;
                if !values::is_item_id(&item.text) {
                    return Err(ParseErrorKind::UnexpectedArgument {
                        input: snippet(&item.text),
                    });
                }
                Command::Tick {
                    checklist,
                    item: item.text.to_ascii_lowercase(),
                    ticked: t.text.eq_ignore_ascii_case("tick"),
                }
            }
            Some(t) => Command::Checklist {
                name: Some(values::resolve_name(
                    &t.text,
                    &vocab.checklists,
                    NameKind::Checklist,
                )?),
            },
            None => Command::Checklist { name: None },
        },
        Subcommand::Incident => {
            // Handled by `parse_subcommand`; kept total so no input can panic here.
            return Err(ParseErrorKind::MissingArgument {
                name: "open|update|resolve",
            });
        }
    };
    pos.finish()?;
    Ok(command)
}

fn help_topic(text: &str) -> Result<Subcommand, ParseErrorKind> {
    Subcommand::from_name(text).ok_or_else(|| ParseErrorKind::unknown_subcommand(text))
}

fn run_id(pos: &mut super::args::Positionals) -> Result<RunId, ParseErrorKind> {
    let token = pos.required("<run>")?;
    RunId::parse(&token.text).ok_or_else(|| values::malformed_run_id(&token.text))
}
