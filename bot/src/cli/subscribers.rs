//! `drbot subscribers import|export|list|count`: the customer email list as CSV.
//!
//! Import reads a CSV file whose header names an `email` column (and optionally `name` and
//! `unsubscribed_at`, so an export can be imported again); every line is checked on its own
//! (addresses with lettre's parser), so a bad line is reported by number and the others are
//! still imported, in one transaction. An address that unsubscribed stays unsubscribed unless
//! `--resubscribe` is given. The texts are in `cli::text`.

use std::{io::Write, path::Path, process::ExitCode};

use clap::Subcommand;
use serde::Serialize;

use super::text;
use crate::{
    app::App,
    store::subscribers::{AddOutcome, NewSubscriber, SubscriberRow, normalize_email},
};

/// Longest address accepted (RFC 5321's path limit).
const MAX_EMAIL: usize = 254;
/// Longest display name accepted, in characters.
const MAX_NAME: usize = 200;

/// `drbot subscribers …`.
#[derive(Debug, Subcommand)]
pub enum SubscribersCmd {
    /// Add subscribers from a CSV file with the header `email,name`. Each bad line is
    /// reported with its number; the others are imported.
    Import {
        /// The CSV file.
        file: std::path::PathBuf,
        /// Subscribe again addresses that unsubscribed (otherwise they are skipped).
        #[arg(long)]
        resubscribe: bool,
    },
    /// Write every subscriber (unsubscribed ones too) as CSV: email, name, created_at,
    /// unsubscribed_at.
    Export {
        /// Output file (default: standard output).
        file: Option<std::path::PathBuf>,
    },
    /// List every subscriber.
    List,
    /// Count active and unsubscribed subscribers.
    Count,
}

/// One line the import did something notable with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImportLine {
    /// Line number in the file (the header is line 1).
    pub line: u64,
    /// What happened or what is wrong.
    pub message: String,
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    /// New subscribers.
    pub added: usize,
    /// New rows stored unsubscribed (their `unsubscribed_at` column said so).
    pub added_unsubscribed: usize,
    /// Addresses already subscribed.
    pub already_present: usize,
    /// Unsubscribed addresses left unsubscribed (no `--resubscribe`).
    pub skipped: Vec<ImportLine>,
    /// Unsubscribed addresses subscribed again (`--resubscribe`).
    pub resubscribed: usize,
    /// Subscribed addresses whose line says they unsubscribed: unsubscribed now.
    pub unsubscribed: usize,
    /// Lines that could not be imported.
    pub invalid: Vec<ImportLine>,
}

/// Runs one `drbot subscribers …` command.
pub async fn run(app: &App, action: SubscribersCmd, json: bool) -> anyhow::Result<ExitCode> {
    match action {
        SubscribersCmd::Import { file, resubscribe } => import(app, &file, resubscribe, json).await,
        SubscribersCmd::Export { file } => export(app, file.as_deref()).await,
        SubscribersCmd::List => {
            let rows = app.store.subscribers().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print!("{}", text::subscriber_list(&rows));
            }
            Ok(ExitCode::SUCCESS)
        }
        SubscribersCmd::Count => {
            let counts = app.store.subscriber_counts().await?;
            if json {
                println!("{}", serde_json::to_string(&counts)?);
            } else {
                println!("{}", text::subscriber_counts(&counts));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A checked line: the subscriber, or why the line is refused.
fn check_line(
    email: Option<&str>,
    name: Option<&str>,
    unsubscribed_at: Option<&str>,
) -> Result<NewSubscriber, String> {
    let raw = email.unwrap_or("").trim();
    if raw.is_empty() {
        return Err("no email address".into());
    }
    if raw.len() > MAX_EMAIL {
        return Err(format!(
            "the email address is longer than {MAX_EMAIL} characters"
        ));
    }
    let email = normalize_email(raw);
    if let Err(e) = email.parse::<lettre::Address>() {
        // Control characters shown escaped: the file's bytes must not drive the terminal.
        let shown: String = raw
            .chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect();
        return Err(format!("`{shown}` is not a valid email address ({e})"));
    }
    // An exported name kept safe from spreadsheets (see `spreadsheet_safe`) reads back as is.
    let name = name
        .map(str::trim)
        .map(|n| match n.strip_prefix('\'') {
            Some(rest) if rest.starts_with(FORMULA_STARTS) => rest,
            _ => n,
        })
        .filter(|n| !n.is_empty());
    if let Some(n) = name {
        if n.chars().any(char::is_control) {
            return Err("the name holds a control character (e.g. a line break)".into());
        }
        if n.chars().count() > MAX_NAME {
            return Err(format!("the name is longer than {MAX_NAME} characters"));
        }
    }
    let unsubscribed_at = match unsubscribed_at.map(str::trim).filter(|u| !u.is_empty()) {
        None => None,
        Some(u) => Some(
            chrono::DateTime::parse_from_rfc3339(u)
                .map_err(|e| {
                    format!("unsubscribed_at `{u}` is not an RFC 3339 time like 2026-01-27T14:30:00Z ({e})")
                })?
                .timestamp_millis(),
        ),
    };
    // An opt-out dated after now is a typo (or a clock far off): not taken as given.
    if let Some(at) = unsubscribed_at
        && at > chrono::Utc::now().timestamp_millis() + 60_000
    {
        return Err("unsubscribed_at is in the future".into());
    }
    Ok(NewSubscriber {
        email,
        name: name.map(str::to_string),
        unsubscribed_at,
    })
}

/// The lines of a file: checked subscribers by line number, and the refused lines.
type ReadLines = (Vec<(u64, NewSubscriber)>, Vec<ImportLine>);

/// Reads `file` into checked lines; `Err` when the file cannot be used at all.
fn read_file(file: &Path) -> Result<ReadLines, String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_path(file)
        .map_err(|e| text::subscribers_unreadable(file, &e.to_string()))?;
    let headers = reader
        .byte_headers()
        .map_err(|e| text::subscribers_unreadable(file, &e.to_string()))?
        .clone();
    // A header cell names `name`: any case, spaces and a byte-order mark aside.
    let names = |h: &[u8], name: &str| {
        String::from_utf8_lossy(h)
            .trim_start_matches('\u{feff}')
            .trim()
            .eq_ignore_ascii_case(name)
    };
    let column = |name: &str| headers.iter().position(|h| names(h, name));
    let Some(email_col) = column("email") else {
        return Err(text::subscribers_no_email_column(file));
    };
    // A column named twice would be read from its first place only: which one was meant?
    for name in ["email", "name", "unsubscribed_at"] {
        let places: Vec<usize> = headers
            .iter()
            .enumerate()
            .filter(|(_, h)| names(h, name))
            .map(|(i, _)| i + 1)
            .collect();
        if places.len() > 1 {
            return Err(text::subscribers_column_twice(file, name, &places));
        }
    }
    let name_col = column("name");
    let unsub_col = column("unsubscribed_at");
    let mut good = Vec::new();
    let mut bad = Vec::new();
    let mut record = csv::ByteRecord::new();
    loop {
        let line = reader.position().line();
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                let line = record.position().map_or(line, |p| p.line());
                // A quoted field that runs over line ends: in a subscriber file that is an
                // unclosed quote, which swallows every line up to the next quote (or the end).
                let next = reader.position().line();
                if next > line + 1 {
                    bad.push(ImportLine {
                        line,
                        message: text::subscribers_spanning_quote(line, next - 1),
                    });
                    continue;
                }
                let field = |i: Option<usize>| -> Result<Option<&str>, String> {
                    match i.and_then(|i| record.get(i)) {
                        None => Ok(None),
                        Some(b) => std::str::from_utf8(b)
                            .map(Some)
                            .map_err(|_| "the line is not valid UTF-8".to_string()),
                    }
                };
                let checked = field(Some(email_col))
                    .and_then(|email| check_line(email, field(name_col)?, field(unsub_col)?));
                match checked {
                    Ok(s) => good.push((line, s)),
                    Err(message) => bad.push(ImportLine { line, message }),
                }
            }
            Err(e) => {
                let line = e.position().map_or(line, |p| p.line());
                let io = matches!(e.kind(), csv::ErrorKind::Io(_));
                bad.push(ImportLine {
                    line,
                    message: format!("not readable as CSV: {e}"),
                });
                if io {
                    break;
                }
            }
        }
    }
    Ok((good, bad))
}

async fn import(app: &App, file: &Path, resubscribe: bool, json: bool) -> anyhow::Result<ExitCode> {
    let (good, invalid) = match read_file(file) {
        Ok(read) => read,
        Err(message) => {
            eprintln!("{message}");
            return Ok(ExitCode::from(2));
        }
    };
    let entries: Vec<NewSubscriber> = good.iter().map(|(_, s)| s.clone()).collect();
    // The batches committed before a failure are reported and audited like a whole import.
    let (outcomes, failure) = app
        .store
        .import_subscribers_partly(&entries, resubscribe)
        .await;
    let mut report = ImportReport {
        invalid,
        ..ImportReport::default()
    };
    for ((line, s), outcome) in good.iter().zip(outcomes) {
        match outcome {
            AddOutcome::Added => report.added += 1,
            AddOutcome::AddedUnsubscribed => report.added_unsubscribed += 1,
            AddOutcome::AlreadyPresent => report.already_present += 1,
            AddOutcome::Resubscribed => report.resubscribed += 1,
            AddOutcome::Unsubscribed => report.unsubscribed += 1,
            AddOutcome::SkippedUnsubscribed => report.skipped.push(ImportLine {
                line: *line,
                message: text::subscriber_skipped(&s.email, s.unsubscribed_at.is_some()),
            }),
        }
    }
    report.invalid.sort_by_key(|l| l.line);
    // Who changed the customer list, and how: audited like every other change.
    app.audit
        .append(crate::store::audit::Entry {
            actor: crate::actor::Actor::cli_tool(),
            action: "subscribers.import".into(),
            run_id: None,
            detail: serde_json::json!({
                "file": file.display().to_string(),
                "resubscribe": resubscribe,
                "added": report.added,
                "added_unsubscribed": report.added_unsubscribed,
                "already_present": report.already_present,
                "resubscribed": report.resubscribed,
                "unsubscribed": report.unsubscribed,
                "skipped": report.skipped.len(),
                "invalid": report.invalid.len(),
                "failed": failure.as_ref().map(|e| format!("{e:#}")),
            }),
        })
        .await?;
    if let Some(e) = failure {
        return Err(e);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", text::subscriber_import(file, &report));
    }
    Ok(if report.invalid.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

/// A cell a spreadsheet will not run as a formula: text starting with `=`, `+`, `-`, `@`, a
/// tab or a carriage return gets a leading `'` (which import takes off again).
fn spreadsheet_safe(text: &str) -> std::borrow::Cow<'_, str> {
    if text.starts_with(FORMULA_STARTS) {
        format!("'{text}").into()
    } else {
        text.into()
    }
}

/// What makes a spreadsheet read a cell as a formula.
const FORMULA_STARTS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// `time` as RFC 3339 UTC (seconds), or empty.
fn rfc3339(ms: Option<i64>) -> String {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// The CSV of `rows`.
pub fn to_csv(rows: &[SubscriberRow]) -> anyhow::Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(["email", "name", "created_at", "unsubscribed_at"])?;
    for r in rows {
        w.write_record([
            r.email.as_str(),
            &spreadsheet_safe(r.name.as_deref().unwrap_or("")),
            &rfc3339(Some(r.created_at)),
            &rfc3339(r.unsubscribed_at),
        ])?;
    }
    Ok(w.into_inner()?)
}

async fn export(app: &App, file: Option<&Path>) -> anyhow::Result<ExitCode> {
    let rows = app.store.subscribers().await?;
    let bytes = to_csv(&rows)?;
    match file {
        None => std::io::stdout().write_all(&bytes)?,
        Some(path) => {
            std::fs::write(path, &bytes)
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
            eprintln!("{}", text::subscribers_exported(rows.len(), path));
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_checked_one_by_one() {
        let s = check_line(Some(" Ann@Example.ORG "), Some(" Ann "), None).unwrap();
        assert_eq!(s.email, "ann@example.org");
        assert_eq!(s.name.as_deref(), Some("Ann"));
        assert_eq!(s.unsubscribed_at, None);
        assert_eq!(
            check_line(Some("b@x.org"), Some(""), None).unwrap().name,
            None
        );
        let e = check_line(Some("not-an-address"), None, None).unwrap_err();
        assert!(
            e.contains("`not-an-address` is not a valid email address"),
            "{e}"
        );
        assert_eq!(
            check_line(Some(" "), None, None).unwrap_err(),
            "no email address"
        );
        assert!(check_line(Some("a@x.org"), Some("a\nb"), None).is_err());
        let e = check_line(Some("\u{1b}]0;pwned\u{7}@x.org"), None, None).unwrap_err();
        assert!(
            !e.contains('\u{1b}') && e.contains("\\u{1b}]0;pwned"),
            "{e}"
        );
        let s = check_line(Some("a@x.org"), None, Some("2026-01-27T14:30:00Z")).unwrap();
        assert_eq!(s.unsubscribed_at, Some(1_769_524_200_000));
        assert!(check_line(Some("a@x.org"), None, Some("yesterday")).is_err());
        assert_eq!(
            check_line(Some("a@x.org"), None, Some("2999-01-01T00:00:00Z")).unwrap_err(),
            "unsubscribed_at is in the future"
        );
    }

    /// A header naming a column twice is refused, naming both places.
    #[test]
    fn a_column_named_twice_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.csv");
        std::fs::write(&path, "email,name,Email\na@x.org,A,b@x.org\n").unwrap();
        let e = read_file(&path).unwrap_err();
        assert!(e.contains("`email` twice (columns 1 and 3)"), "{e}");
    }

    /// An unclosed quote swallows the lines after it: they are reported, never lost silently.
    #[test]
    fn an_unclosed_quote_is_reported_with_the_lines_it_swallows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.csv");
        let mut text = String::from("email,name\nfirst@example.org,First\nu1@example.com,\"Ann\n");
        for i in 0..500 {
            text.push_str(&format!("a{i}@example.com,A\n"));
        }
        std::fs::write(&path, &text).unwrap();
        let (good, bad) = read_file(&path).unwrap();
        assert_eq!(good.len(), 1, "{good:?}");
        assert_eq!(good[0].1.email, "first@example.org");
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert_eq!(bad[0].line, 3);
        assert!(
            bad[0]
                .message
                .contains("a quote opened on line 3 runs to line 503"),
            "{}",
            bad[0].message
        );
        // Closed further down: only the lines up to the closing quote.
        let text = "email,name\nu1@example.com,\"Ann\nb@example.com,B\"\nc@example.com,C\n";
        std::fs::write(&path, text).unwrap();
        let (good, bad) = read_file(&path).unwrap();
        assert_eq!(good.len(), 1, "{good:?}");
        assert_eq!(good[0].0, 4);
        assert!(bad[0].message.contains("lines 2-3"), "{}", bad[0].message);
    }

    #[test]
    fn export_round_trips_through_the_reader() {
        let rows = vec![SubscriberRow {
            id: 1,
            email: "ann@example.org".into(),
            name: Some("Ann, \"Sales\"".into()),
            token: "t".into(),
            created_at: 1_769_524_200_000,
            unsubscribed_at: Some(1_769_524_260_000),
        }];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.csv");
        std::fs::write(&path, to_csv(&rows).unwrap()).unwrap();
        let (good, bad) = read_file(&path).unwrap();
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(good.len(), 1);
        assert_eq!(good[0].0, 2);
        assert_eq!(good[0].1.name.as_deref(), Some("Ann, \"Sales\""));
        assert_eq!(good[0].1.unsubscribed_at, Some(1_769_524_260_000));
    }

    /// A name a spreadsheet would run as a formula is exported with a leading `'`, and reads
    /// back as it was.
    #[test]
    fn formula_names_are_exported_safely_and_read_back() {
        let name = "=HYPERLINK(\"https://evil.example\",\"x\")";
        let rows = vec![SubscriberRow {
            id: 1,
            email: "eve@example.org".into(),
            name: Some(name.into()),
            token: "t".into(),
            created_at: 1_769_524_200_000,
            unsubscribed_at: None,
        }];
        let csv = String::from_utf8(to_csv(&rows).unwrap()).unwrap();
        assert!(csv.contains("\"'=HYPERLINK("), "{csv}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.csv");
        std::fs::write(&path, &csv).unwrap();
        let (good, bad) = read_file(&path).unwrap();
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(good[0].1.name.as_deref(), Some(name));
        assert_eq!(spreadsheet_safe("Ann"), "Ann");
        assert_eq!(spreadsheet_safe("-1"), "'-1");
    }
}
