//! Property tests: no input panics, errors stay short, and Display round-trips through parse.

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use proptest::sample::select;

use super::*;

fn vocab() -> Vocabulary {
    Vocabulary {
        regions: vec![
            "us-east-1".into(),
            "us-west-2".into(),
            "eu-central-1".into(),
            "Asia Pacific".into(),
            "--odd".into(),
        ],
        templates: Vec::new(),
        checklists: vec!["failover".into(), "pitr-restore".into(), "Game Day".into()],
    }
}

/// Parsing never panics; an error renders non-empty, on at most two short lines; a success
/// prints as text that parses back to the same command.
fn check(input: &str, vocab: &Vocabulary) -> Result<(), TestCaseError> {
    match parse(input, vocab) {
        Ok(cmd) => {
            let text = cmd.to_string();
            prop_assert_eq!(parse(&text, vocab), Ok(cmd), "canonical text {:?}", text);
        }
        Err(e) => {
            let text = e.to_string();
            prop_assert!(!text.trim().is_empty());
            prop_assert!(text.lines().count() <= 2, "{:?}", text);
            prop_assert!(!text.contains('\r'), "{:?}", text);
            let first = text.lines().next().unwrap_or("");
            prop_assert!(first.chars().count() <= 300, "{:?}", text);
        }
    }
    Ok(())
}

const POOL: &[&str] = &[
    "/dr",
    "/DR",
    "help",
    "status",
    "failover",
    "FAILOVER",
    "failback",
    "verify-backup",
    "drill",
    "pitr",
    "recover-corruption",
    "runs",
    "run",
    "approve",
    "deny",
    "cancel",
    "retry",
    "skip",
    "abort",
    "incident",
    "notify",
    "checklist",
    "open",
    "update",
    "resolve",
    "customers",
    "latest",
    "us-west-2",
    "US-EAST-1",
    "\"Asia Pacific\"",
    "'--odd'",
    "--odd",
    "failover",
    "pitr-restore",
    "Game",
    "Day",
    "--dry-run",
    "--DRY-RUN",
    "—dry-run",
    "--dry-run=1",
    "--impact",
    "--impact=major",
    "--impact=",
    "major",
    "critical",
    "none",
    "--status",
    "--status=identified",
    "identified",
    "monitoring",
    "--help",
    "-h",
    "--bogus",
    "--",
    "-",
    "2026-01-27",
    "14:30",
    "14:30:00",
    "14:30:00.5",
    "Z",
    "UTC",
    "+02:00",
    "-05:00",
    "+0530",
    "2026-01-27T14:30:00Z",
    "\"2026-01-27 14:30:00\"",
    "2026-02-30",
    "25:00",
    "42",
    "#42",
    "0",
    "-1",
    "#",
    "99999999999999999999",
    "snap-1.2:3",
    "bad/id",
    "\"",
    "'",
    "“",
    "”",
    "‘",
    "’",
    "\"a b\"",
    "'it's'",
    "we're",
    "“smart quoted”",
    "é",
    "漢字",
    "🙂",
    "\u{202E}",
    "\u{200B}",
    "\u{a0}",
    "\t",
    "\n",
    "x",
    "outage-v1",
    "DB",
    "down",
    "`",
    "\\",
    "=",
];

fn token_line() -> impl Strategy<Value = String> {
    prop::collection::vec(
        (select(POOL), select(&[" ", " ", " ", "  ", "\t", ""][..])),
        0..12,
    )
    .prop_map(|parts| parts.into_iter().flat_map(|(t, s)| [t, s]).collect())
}

fn any_long_string() -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 3900..4300).prop_map(|c| c.into_iter().collect())
}

// ---- generators of valid commands ----

fn run_id() -> impl Strategy<Value = RunId> {
    prop_oneof![1..1000i64, 1..=i64::MAX].prop_map(RunId)
}

fn region() -> impl Strategy<Value = String> {
    select(vocab().regions)
}

fn timestamp() -> impl Strategy<Value = DateTime<Utc>> {
    // 0000-01-01T00:00:00Z ..= 9999-12-31T23:59:59Z
    let secs = prop_oneof![
        1_700_000_000i64..1_900_000_000,
        -62_167_219_200i64..=253_402_300_799
    ];
    let nanos = prop_oneof![Just(0u32), 0..1_000_000_000u32, Just(500_000_000)];
    (secs, nanos).prop_map(|(s, n)| DateTime::from_timestamp(s, n).expect("in range"))
}

fn name() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9_-]{0,63}"
}

fn backup() -> impl Strategy<Value = BackupRef> {
    prop_oneof![
        Just(BackupRef::Latest),
        "[A-Za-z0-9._:-]{1,200}"
            .prop_filter("not the keyword", |s| !s.eq_ignore_ascii_case("latest"))
            .prop_map(BackupRef::Id),
    ]
}

fn is_quote(c: char) -> bool {
    matches!(c, '"' | '“' | '”' | '\'' | '‘' | '’')
}

/// Whether some quote family can wrap `s` (none of its quotes followed by whitespace).
fn wrappable(s: &str) -> bool {
    let chars: Vec<char> = s.chars().collect();
    let blocked = |family: &[char]| {
        chars
            .windows(2)
            .any(|w| family.contains(&w[0]) && w[1].is_whitespace())
    };
    !blocked(&['"', '“', '”']) || !blocked(&['\'', '‘', '’'])
}

/// Free text the parser can produce: words as the tokenizer yields them, joined by spaces.
fn free_text(max_chars: usize) -> impl Strategy<Value = String> {
    let bare = "[a-zA-Z0-9#.,!?:;()é漢🙂'’\"“—=-]{1,10}".prop_filter("a bare word", |w| {
        !w.starts_with(is_quote)
            && !["--", "—"].iter().any(|p| {
                w.strip_prefix(p)
                    .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_alphabetic()))
            })
    });
    let quoted = "[a-zA-Z0-9 \u{a0}\t\n'\"“”‘’—-]{0,14}".prop_filter("quotable", |w| wrappable(w));
    prop::collection::vec(prop_oneof![bare, quoted], 1..8)
        .prop_map(|words| words.join(" "))
        .prop_filter("not blank, not too long", move |t| {
            !t.trim().is_empty() && t.chars().count() <= max_chars
        })
}

fn incident() -> impl Strategy<Value = IncidentCommand> {
    let impact = select(Impact::ALL.to_vec());
    let status = prop::option::of(select(IncidentStatus::ALL.to_vec()));
    prop_oneof![
        (free_text(MAX_TITLE_CHARS), impact)
            .prop_map(|(title, impact)| IncidentCommand::Open { title, impact }),
        (status, free_text(1000))
            .prop_map(|(status, message)| IncidentCommand::Update { status, message }),
        prop::option::of(free_text(1000)).prop_map(|message| IncidentCommand::Resolve { message }),
    ]
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        prop::option::of(select(Subcommand::ALL.to_vec()))
            .prop_map(|topic| Command::Help { topic }),
        Just(Command::Status),
        (region(), any::<bool>())
            .prop_map(|(region, dry_run)| Command::Failover { region, dry_run }),
        prop::option::of(region()).prop_map(|region| Command::Failback { region }),
        backup().prop_map(|backup| Command::VerifyBackup { backup }),
        any::<bool>().prop_map(|dry_run| Command::Drill { dry_run }),
        (timestamp(), any::<bool>())
            .prop_map(|(target, dry_run)| Command::Pitr { target, dry_run }),
        timestamp().prop_map(|target| Command::RecoverCorruption { target }),
        Just(Command::Runs),
        run_id().prop_map(|run| Command::Run { run }),
        run_id().prop_map(|run| Command::Approve { run }),
        (run_id(), prop::option::of(free_text(1000)))
            .prop_map(|(run, reason)| Command::Deny { run, reason }),
        run_id().prop_map(|run| Command::Cancel { run }),
        run_id().prop_map(|run| Command::Retry { run }),
        run_id().prop_map(|run| Command::Skip { run }),
        run_id().prop_map(|run| Command::Abort { run }),
        incident().prop_map(Command::Incident),
        name().prop_map(|template| Command::NotifyCustomers { template }),
        prop::option::of(select(vocab().checklists)).prop_map(|name| Command::Checklist { name }),
        (run_id(), "[a-z0-9][a-z0-9_-]{0,47}", any::<bool>()).prop_map(
            |(checklist, item, ticked)| Command::Tick {
                checklist,
                item,
                ticked
            }
        ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_strings_never_panic(input in any::<String>()) {
        check(&input, &vocab())?;
    }

    #[test]
    fn arbitrary_printable_strings_never_panic(input in "\\PC{0,300}") {
        check(&input, &vocab())?;
        check(&format!("/dr {input}"), &Vocabulary::default())?;
    }

    #[test]
    fn long_strings_never_panic(input in any_long_string()) {
        check(&input, &vocab())?;
    }

    #[test]
    fn token_sequences_never_panic(line in token_line()) {
        check(&line, &vocab())?;
        check(&line, &Vocabulary::default())?;
    }

    #[test]
    fn display_round_trips(cmd in command()) {
        let text = cmd.to_string();
        prop_assert!(text.starts_with("/dr "));
        prop_assert_eq!(parse(&text, &vocab()), Ok(cmd), "canonical text {:?}", text);
    }

    #[test]
    fn subcommand_typos_are_suggested(index in 0..Subcommand::ALL.len(), drop in 0usize..20) {
        let sub = Subcommand::ALL[index];
        let mut name: Vec<char> = sub.name().chars().collect();
        name.remove(drop % name.len());
        let typo: String = name.into_iter().collect();
        if Subcommand::from_name(&typo).is_none() {
            let e = parse(&typo, &vocab()).unwrap_err();
            prop_assert!(
                matches!(e.kind, ParseErrorKind::UnknownSubcommand { suggestion: Some(_), .. }),
                "{:?}", e
            );
        }
    }
}
