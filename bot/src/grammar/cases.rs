//! Example-based tests: every subcommand parses, every error kind renders as documented.

use chrono::{DateTime, Utc};

use super::*;

fn vocab() -> Vocabulary {
    Vocabulary {
        regions: vec![
            "us-east-1".into(),
            "us-west-2".into(),
            "eu-central-1".into(),
        ],
        templates: vec!["outage-v1".into(), "maintenance".into()],
        checklists: vec!["failover".into(), "pitr".into()],
    }
}

fn open_vocab() -> Vocabulary {
    Vocabulary {
        regions: vec!["us-west-2".into()],
        ..Vocabulary::default()
    }
}

#[track_caller]
fn ok(input: &str) -> Command {
    match parse(input, &vocab()) {
        Ok(cmd) => cmd,
        Err(e) => panic!("{input:?} failed: {e}"),
    }
}

#[track_caller]
fn err(input: &str) -> ParseError {
    match parse(input, &vocab()) {
        Ok(cmd) => panic!("{input:?} parsed as {cmd:?}"),
        Err(e) => e,
    }
}

#[track_caller]
fn message(input: &str) -> String {
    err(input).to_string()
}

fn ts(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339)
        .expect("test timestamp")
        .with_timezone(&Utc)
}

fn run(n: i64) -> RunId {
    RunId(n)
}

#[test]
fn blank_input_and_bare_prefix_ask_for_help() {
    for input in ["", "   ", "\t\n", "/dr", "/DR  ", "--help", "-h"] {
        assert_eq!(ok(input), Command::Help { topic: None }, "{input:?}");
    }
}

#[test]
fn help_takes_an_optional_topic() {
    assert_eq!(
        ok("/dr help failover"),
        Command::Help {
            topic: Some(Subcommand::Failover)
        }
    );
    assert_eq!(
        ok("HELP Verify-Backup"),
        Command::Help {
            topic: Some(Subcommand::VerifyBackup)
        }
    );
    assert_eq!(
        ok("/dr pitr --help"),
        Command::Help {
            topic: Some(Subcommand::Pitr)
        }
    );
    assert_eq!(
        ok("--help incident"),
        Command::Help {
            topic: Some(Subcommand::Incident)
        }
    );
}

#[test]
fn status_and_runs() {
    assert_eq!(ok("/dr status"), Command::Status);
    assert_eq!(ok("STATUS"), Command::Status);
    assert_eq!(ok("runs"), Command::Runs);
}

#[test]
fn failover_and_failback() {
    let expected = Command::Failover {
        region: "us-west-2".into(),
        dry_run: false,
    };
    assert_eq!(ok("/dr failover us-west-2"), expected);
    assert_eq!(ok("Failover US-West-2"), expected);
    assert_eq!(ok("failover \"us-west-2\""), expected);
    let dry = Command::Failover {
        region: "us-west-2".into(),
        dry_run: true,
    };
    assert_eq!(ok("/dr failover us-west-2 --dry-run"), dry);
    assert_eq!(ok("/dr failover --dry-run us-west-2"), dry);
    assert_eq!(ok("failover us-west-2 --DRY-RUN"), dry);
    assert_eq!(ok("failover us-west-2 —dry-run"), dry);
    assert_eq!(ok("failback"), Command::Failback { region: None });
    assert_eq!(
        ok("failback EU-CENTRAL-1"),
        Command::Failback {
            region: Some("eu-central-1".into())
        }
    );
}

#[test]
fn regions_match_exactly_first_then_ignoring_case() {
    let vocab = Vocabulary {
        regions: vec![
            "Asia-Pacific".into(),
            "us-west-2".into(),
            "US-WEST-2".into(),
        ],
        ..Vocabulary::default()
    };
    let region = |input: &str| match parse(input, &vocab) {
        Ok(Command::Failover { region, .. }) => region,
        other => panic!("{other:?}"),
    };
    assert_eq!(region("failover asia-pacific"), "Asia-Pacific");
    assert_eq!(region("failover US-WEST-2"), "US-WEST-2");
    assert_eq!(region("failover us-west-2"), "us-west-2");
    assert_eq!(region("failover Us-West-2"), "us-west-2");
}

#[test]
fn verify_backup() {
    let latest = Command::VerifyBackup {
        backup: BackupRef::Latest,
    };
    assert_eq!(ok("verify-backup"), latest);
    assert_eq!(ok("verify-backup latest"), latest);
    assert_eq!(ok("VERIFY-BACKUP LATEST"), latest);
    assert_eq!(
        ok("verify-backup snap-2026.01.27:00_1"),
        Command::VerifyBackup {
            backup: BackupRef::Id("snap-2026.01.27:00_1".into())
        }
    );
}

#[test]
fn drill() {
    assert_eq!(ok("drill"), Command::Drill { dry_run: false });
    assert_eq!(ok("drill --dry-run"), Command::Drill { dry_run: true });
}

#[test]
fn pitr_accepts_every_timestamp_form() {
    let cases = [
        ("pitr 2026-01-27T14:30:00Z", "2026-01-27T14:30:00Z"),
        ("pitr 2026-01-27t14:30:00z", "2026-01-27T14:30:00Z"),
        ("pitr 2026-01-27T14:30:00+02:00", "2026-01-27T12:30:00Z"),
        ("pitr 2026-01-27T14:30:00.250Z", "2026-01-27T14:30:00.25Z"),
        (
            "pitr 2026-01-27T14:30:00.123456789-01:00",
            "2026-01-27T15:30:00.123456789Z",
        ),
        ("pitr 2026-01-27T14:30-05:00", "2026-01-27T19:30:00Z"),
        ("pitr \"2026-01-27 14:30:00\"", "2026-01-27T14:30:00Z"),
        ("pitr '2026-01-27 14:30:00Z'", "2026-01-27T14:30:00Z"),
        ("pitr “2026-01-27 14:30:00”", "2026-01-27T14:30:00Z"),
        ("pitr ‘2026-01-27 14:30’", "2026-01-27T14:30:00Z"),
        (
            "pitr \"2026-01-27 14:30:00 +02:00\"",
            "2026-01-27T12:30:00Z",
        ),
        ("pitr 2026-01-27 14:30:00", "2026-01-27T14:30:00Z"),
        ("pitr 2026-01-27 14:30", "2026-01-27T14:30:00Z"),
        ("pitr 2026-01-27 14:30 UTC", "2026-01-27T14:30:00Z"),
        ("pitr 2026-01-27 14:30:00 utc", "2026-01-27T14:30:00Z"),
        ("pitr 2026-01-27 14:30:00 Z", "2026-01-27T14:30:00Z"),
        ("pitr 2026-01-27 14:30:00UTC", "2026-01-27T14:30:00Z"),
        ("pitr 2026-01-27 14:30:00+02:00", "2026-01-27T12:30:00Z"),
        ("pitr 2026-01-27 14:30:00 +02:00", "2026-01-27T12:30:00Z"),
        ("pitr 2026-01-27 14:30:00 -05:00", "2026-01-27T19:30:00Z"),
        ("pitr 2026-01-27T14:30:00 +0530", "2026-01-27T09:00:00Z"),
        ("pitr 2026-01-27 00:30 +01", "2026-01-26T23:30:00Z"),
        ("pitr 2024-02-29 23:59:59", "2024-02-29T23:59:59Z"),
    ];
    for (input, expected) in cases {
        assert_eq!(
            ok(input),
            Command::Pitr {
                target: ts(expected),
                dry_run: false
            },
            "{input}"
        );
    }
    let dry = Command::Pitr {
        target: ts("2026-01-27T14:30:00Z"),
        dry_run: true,
    };
    assert_eq!(ok("/dr pitr 2026-01-27 14:30:00 --dry-run"), dry);
    assert_eq!(ok("/dr pitr --dry-run 2026-01-27 14:30"), dry);
    assert_eq!(ok("/dr pitr 2026-01-27 --dry-run 14:30 Z"), dry);
}

#[test]
fn recover_corruption() {
    assert_eq!(
        ok("recover-corruption 2026-01-27 14:30"),
        Command::RecoverCorruption {
            target: ts("2026-01-27T14:30:00Z")
        }
    );
}

#[test]
fn run_commands_accept_plain_and_hash_ids() {
    assert_eq!(ok("run 42"), Command::Run { run: run(42) });
    assert_eq!(ok("run #42"), Command::Run { run: run(42) });
    assert_eq!(ok("approve #7"), Command::Approve { run: run(7) });
    assert_eq!(ok("cancel 3"), Command::Cancel { run: run(3) });
    assert_eq!(ok("retry 3"), Command::Retry { run: run(3) });
    assert_eq!(ok("skip #3"), Command::Skip { run: run(3) });
    assert_eq!(ok("abort 3"), Command::Abort { run: run(3) });
    assert_eq!(
        ok(&format!("run {}", i64::MAX)),
        Command::Run { run: run(i64::MAX) }
    );
    assert_eq!(RunId(42).to_string(), "42");
    assert_eq!("#42".parse::<RunId>(), Ok(RunId(42)));
}

#[test]
fn deny_takes_the_rest_as_reason() {
    assert_eq!(
        ok("deny 42"),
        Command::Deny {
            run: run(42),
            reason: None
        }
    );
    assert_eq!(
        ok("deny #42 wrong   region"),
        Command::Deny {
            run: run(42),
            reason: Some("wrong region".into())
        }
    );
    assert_eq!(
        ok("deny 42 we’re not ready, it's 5pm"),
        Command::Deny {
            run: run(42),
            reason: Some("we’re not ready, it's 5pm".into())
        }
    );
    assert_eq!(
        ok("deny 42 'keep  the \"spaces\"'"),
        Command::Deny {
            run: run(42),
            reason: Some("keep  the \"spaces\"".into())
        }
    );
    assert_eq!(
        ok("deny 42 \"--dry-run\" -- is not a flag"),
        Command::Deny {
            run: run(42),
            reason: Some("--dry-run -- is not a flag".into())
        }
    );
    assert_eq!(
        ok("deny 42 \"\""),
        Command::Deny {
            run: run(42),
            reason: None
        }
    );
}

#[test]
fn incident_open_update_resolve() {
    assert_eq!(
        ok("incident open Database is down"),
        Command::Incident(IncidentCommand::Open {
            title: "Database is down".into(),
            impact: Impact::Major
        })
    );
    assert_eq!(
        ok("incident OPEN --impact critical “DB down” in eu"),
        Command::Incident(IncidentCommand::Open {
            title: "DB down in eu".into(),
            impact: Impact::Critical
        })
    );
    assert_eq!(
        ok("incident open DB slow --impact=Minor"),
        Command::Incident(IncidentCommand::Open {
            title: "DB slow".into(),
            impact: Impact::Minor
        })
    );
    assert_eq!(
        ok("incident open --impact none Planned work"),
        Command::Incident(IncidentCommand::Open {
            title: "Planned work".into(),
            impact: Impact::None
        })
    );
    assert_eq!(
        ok("incident update --status identified Root cause found"),
        Command::Incident(IncidentCommand::Update {
            status: Some(IncidentStatus::Identified),
            message: "Root cause found".into()
        })
    );
    assert_eq!(
        ok("incident update Still looking"),
        Command::Incident(IncidentCommand::Update {
            status: None,
            message: "Still looking".into()
        })
    );
    assert_eq!(
        ok("incident resolve"),
        Command::Incident(IncidentCommand::Resolve { message: None })
    );
    assert_eq!(
        ok("incident resolve All good now"),
        Command::Incident(IncidentCommand::Resolve {
            message: Some("All good now".into())
        })
    );
    assert_eq!(Impact::Critical.as_str(), "critical");
    assert_eq!(IncidentStatus::Monitoring.as_str(), "monitoring");
}

#[test]
fn notify_customers_and_checklist() {
    assert_eq!(
        ok("notify customers outage-v1"),
        Command::NotifyCustomers {
            template: "outage-v1".into()
        }
    );
    assert_eq!(
        ok("NOTIFY Customers OUTAGE-V1"),
        Command::NotifyCustomers {
            template: "outage-v1".into()
        }
    );
    assert_eq!(ok("checklist"), Command::Checklist { name: None });
    assert_eq!(
        ok("checklist pitr"),
        Command::Checklist {
            name: Some("pitr".into())
        }
    );
    assert_eq!(
        ok("checklist tick #12 Stop-Writes"),
        Command::Tick {
            checklist: run(12),
            item: "stop-writes".into(),
            ticked: true
        }
    );
    assert_eq!(
        ok("CHECKLIST untick 3 a_b"),
        Command::Tick {
            checklist: run(3),
            item: "a_b".into(),
            ticked: false
        }
    );
    for bad in [
        "checklist tick",
        "checklist tick 12",
        "checklist tick x stop-writes",
        "checklist tick 0 stop-writes",
        "checklist tick 12 stop:writes",
        "checklist tick 12 stop-writes extra",
    ] {
        assert!(parse(bad, &vocab()).is_err(), "{bad}");
    }
    // Quoted, `tick` is a name, not the verb.
    assert!(parse("checklist \"tick\" 1 a", &vocab()).is_err());
}

#[test]
fn empty_lists_accept_any_valid_name() {
    let vocab = open_vocab();
    assert_eq!(
        parse("notify customers db_outage-2", &vocab),
        Ok(Command::NotifyCustomers {
            template: "db_outage-2".into()
        })
    );
    assert_eq!(
        parse("checklist Quarterly_DR", &vocab),
        Ok(Command::Checklist {
            name: Some("quarterly_dr".into())
        })
    );
}

#[test]
fn display_is_canonical() {
    let cases = [
        (
            Command::Failover {
                region: "us-west-2".into(),
                dry_run: true,
            },
            "/dr failover us-west-2 --dry-run",
        ),
        (
            Command::Pitr {
                target: ts("2026-01-27T14:30:00Z"),
                dry_run: false,
            },
            "/dr pitr \"2026-01-27 14:30:00\"",
        ),
        (
            Command::Pitr {
                target: ts("2026-01-27T14:30:00.5Z"),
                dry_run: true,
            },
            "/dr pitr \"2026-01-27 14:30:00.5\" --dry-run",
        ),
        (
            Command::VerifyBackup {
                backup: BackupRef::Latest,
            },
            "/dr verify-backup latest",
        ),
        (Command::Run { run: run(42) }, "/dr run 42"),
        (
            Command::Deny {
                run: run(42),
                reason: Some("say \"no\" now".into()),
            },
            "/dr deny 42 'say \"no\" now'",
        ),
        (
            Command::Incident(IncidentCommand::Open {
                title: "Database is down".into(),
                impact: Impact::Major,
            }),
            "/dr incident open --impact major \"Database is down\"",
        ),
        (
            Command::Incident(IncidentCommand::Update {
                status: Some(IncidentStatus::Monitoring),
                message: "Fixed".into(),
            }),
            "/dr incident update --status monitoring Fixed",
        ),
        (
            Command::NotifyCustomers {
                template: "outage-v1".into(),
            },
            "/dr notify customers outage-v1",
        ),
        (
            Command::Help {
                topic: Some(Subcommand::RecoverCorruption),
            },
            "/dr help recover-corruption",
        ),
    ];
    for (cmd, text) in cases {
        assert_eq!(cmd.to_string(), text);
        assert_eq!(parse(text, &vocab()), Ok(cmd));
    }
}

#[test]
fn free_text_with_both_quote_kinds_round_trips() {
    let reason = "it's \"bad\" really, it' s \"odd\" \nok";
    let cmd = Command::Deny {
        run: run(1),
        reason: Some(reason.into()),
    };
    assert_eq!(parse(&cmd.to_string(), &vocab()), Ok(cmd));
}

#[test]
fn subcommand_table() {
    assert_eq!(Subcommand::ALL.len(), 19);
    for sub in Subcommand::ALL {
        assert_eq!(Subcommand::from_name(sub.name()), Some(sub));
        assert!(sub.usage().starts_with(&format!("/dr {}", sub.name())));
        assert!(!sub.summary().is_empty());
        assert!(!sub.usage().contains('\n'));
    }
    let read_only: Vec<_> = Subcommand::ALL
        .into_iter()
        .filter(|s| s.is_read_only())
        .collect();
    assert_eq!(
        read_only,
        [
            Subcommand::Help,
            Subcommand::Status,
            Subcommand::Runs,
            Subcommand::Run
        ]
    );
    assert!(ok("run 1").is_read_only());
    assert!(!ok("approve 1").is_read_only());
    assert_eq!(help_text().lines().count(), 19);
    assert!(help_text().contains("/dr pitr <timestamp> [--dry-run] — "));
    assert_eq!(topic_help(Subcommand::Incident).lines().count(), 4);
    assert_eq!(
        Subcommand::Incident.usage(),
        "/dr incident open [--impact none|minor|major|critical] <title…> | update \
         [--status investigating|identified|monitoring] <message…> | resolve [message…]"
    );
}

// ---- errors: one per kind, exact text for representative ones ----

#[test]
fn unknown_subcommand_suggests_the_closest_name() {
    assert_eq!(
        message("/dr falover us-west-2"),
        "Unknown subcommand `falover`. Did you mean `failover`?\nSee `/dr help` for all subcommands."
    );
    assert_eq!(
        message("xyzzy"),
        "Unknown subcommand `xyzzy`.\nSee `/dr help` for all subcommands."
    );
    let e = err("help verfy-backup");
    assert_eq!(
        e.kind,
        ParseErrorKind::UnknownSubcommand {
            input: "verfy-backup".into(),
            suggestion: Some(Subcommand::VerifyBackup)
        }
    );
    assert_eq!(e.usage, Some("/dr help [subcommand]"));
}

#[test]
fn unknown_region_lists_known_regions() {
    assert_eq!(
        message("failover mars-1"),
        "Unknown region `mars-1`. Known regions: us-east-1, us-west-2, eu-central-1.\n\
         Usage: /dr failover <region> [--dry-run]"
    );
    let e = parse("failover x", &Vocabulary::default()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Unknown region `x`; no regions are configured.\nUsage: /dr failover <region> [--dry-run]"
    );
    assert!(matches!(
        err("failback mars-1").kind,
        ParseErrorKind::UnknownRegion { .. }
    ));
}

#[test]
fn missing_arguments_are_named() {
    assert_eq!(
        message("failover"),
        "Missing argument `<region>`.\nUsage: /dr failover <region> [--dry-run]"
    );
    assert_eq!(
        message("pitr --dry-run"),
        "Missing argument `<timestamp>`.\nUsage: /dr pitr <timestamp> [--dry-run]"
    );
    for (input, name) in [
        ("approve", "<run>"),
        ("deny", "<run>"),
        ("notify", "customers"),
        ("notify customers", "<template>"),
        ("incident", "open|update|resolve"),
        ("incident open --impact minor", "<title…>"),
        ("incident update --status monitoring \" \"", "<message…>"),
    ] {
        assert_eq!(
            err(input).kind,
            ParseErrorKind::MissingArgument { name },
            "{input}"
        );
    }
    assert_eq!(
        err("incident open").usage,
        Some("/dr incident open [--impact none|minor|major|critical] <title…>")
    );
}

#[test]
fn unexpected_arguments() {
    assert_eq!(
        message("status now"),
        "Unexpected argument `now`.\nUsage: /dr status"
    );
    for input in [
        "failover us-west-2 us-east-1",
        "run 1 2",
        "help status runs",
        "notify clients outage-v1",
        "notify customers outage-v1 now",
        "checklist pitr failover",
        "pitr 2026-01-27 14:30Z extra",
        "pitr 2026-01-27 14:30 +01:00 Z",
    ] {
        assert!(
            matches!(err(input).kind, ParseErrorKind::UnexpectedArgument { .. }),
            "{input}"
        );
    }
    let e = err("incident close");
    assert_eq!(
        e.kind,
        ParseErrorKind::UnexpectedArgument {
            input: "close".into()
        }
    );
    assert_eq!(e.usage, Some(Subcommand::Incident.usage()));
}

#[test]
fn flags() {
    assert_eq!(
        message("failover us-west-2 --force"),
        "Unknown flag `--force`.\nUsage: /dr failover <region> [--dry-run]"
    );
    assert_eq!(
        err("failover us-west-2 --force=yes").kind,
        ParseErrorKind::UnknownFlag {
            flag: "--force".into()
        }
    );
    assert_eq!(
        message("status --dry-run"),
        "`status` does not take `--dry-run`.\nUsage: /dr status"
    );
    assert_eq!(
        err("incident resolve --impact major").kind,
        ParseErrorKind::UnsupportedFlag {
            flag: "--impact".into(),
            command: "incident resolve"
        }
    );
    assert_eq!(
        message("incident open --impact huge DB down"),
        "Invalid value `huge` for `--impact`; expected none, minor, major or critical.\n\
         Usage: /dr incident open [--impact none|minor|major|critical] <title…>"
    );
    assert!(matches!(
        err("incident update --status fixed Done").kind,
        ParseErrorKind::InvalidFlagValue { .. }
    ));
    assert!(matches!(
        err("drill --dry-run=yes").kind,
        ParseErrorKind::InvalidFlagValue { .. }
    ));
    for input in [
        "incident open DB down --impact",
        "incident open --impact= DB down",
    ] {
        assert_eq!(
            err(input).kind,
            ParseErrorKind::MissingFlagValue {
                flag: "--impact",
                expected: "none, minor, major or critical"
            },
            "{input}"
        );
    }
    assert_eq!(
        err("incident open --impact --dry-run DB down").kind,
        ParseErrorKind::UnsupportedFlag {
            flag: "--dry-run".into(),
            command: "incident open"
        }
    );
    assert_eq!(
        message("run 1 --impact"),
        "`run` does not take `--impact`.\nUsage: /dr run <run>"
    );
    assert!(matches!(
        err("status --dry-run=yes").kind,
        ParseErrorKind::UnsupportedFlag { .. }
    ));
    assert_eq!(
        message("drill --dry-run --dry-run"),
        "Flag `--dry-run` is given more than once.\nUsage: /dr drill [--dry-run]"
    );
}

#[test]
fn malformed_timestamps() {
    assert_eq!(
        message("pitr 2026-02-30 10:00"),
        "Malformed timestamp `2026-02-30 10:00`; use `YYYY-MM-DD HH:MM[:SS]` (UTC unless a zone \
         like `Z` or `+02:00` follows) or RFC 3339 like `2026-01-27T14:30:00Z`.\n\
         Usage: /dr pitr <timestamp> [--dry-run]"
    );
    for input in [
        "pitr yesterday",
        "pitr 2026-01-27",
        "pitr 2026-01-27 25:00",
        "pitr 2026-01-27 14:60",
        "pitr 2026-01-27 14:30:60",
        "pitr 2026-13-01 10:00",
        "pitr 2026-1-27 10:00",
        "pitr 2026-01-27T14:30:00+24:00",
        "pitr 2026-01-27T14:30:00.1234567891Z",
        "pitr 2026-01-27T14:30:00.Z",
        "pitr 2026-01-27T14:30:00 PST",
        "pitr 9999-12-31T23:30:00-05:00",
        "recover-corruption 2026-01-27x14:30",
        "recover-corruption ２０２６-01-27 10:00",
    ] {
        assert!(
            matches!(err(input).kind, ParseErrorKind::MalformedTimestamp { .. }),
            "{input}: {}",
            message(input)
        );
    }
}

#[test]
fn malformed_run_ids() {
    assert_eq!(
        message("approve abc"),
        "Malformed run id `abc`; expected a positive number like `42` or `#42`.\n\
         Usage: /dr approve <run>"
    );
    for input in [
        "run 0",
        "run -1",
        "run #",
        "run +4",
        "run ##4",
        "run 4.0",
        "run 99999999999999999999",
        "deny x reason",
    ] {
        assert!(
            matches!(err(input).kind, ParseErrorKind::MalformedRunId { .. }),
            "{input}"
        );
    }
}

#[test]
fn malformed_and_unknown_names() {
    assert_eq!(
        message("verify-backup snap/1"),
        "Malformed backup id `snap/1`; use letters, digits, `.`, `_`, `:` and `-`, at most 200.\n\
         Usage: /dr verify-backup [latest|<backup-id>]"
    );
    assert!(matches!(
        err(&format!("verify-backup {}", "a".repeat(201))).kind,
        ParseErrorKind::MalformedName {
            what: NameKind::BackupId,
            ..
        }
    ));
    let vocab = open_vocab();
    let kind = |input: &str| parse(input, &vocab).unwrap_err().kind;
    assert!(matches!(
        kind("notify customers -bad"),
        ParseErrorKind::MalformedName {
            what: NameKind::Template,
            ..
        }
    ));
    assert!(matches!(
        kind(&format!("checklist {}", "a".repeat(65))),
        ParseErrorKind::MalformedName {
            what: NameKind::Checklist,
            ..
        }
    ));
    assert_eq!(
        message("notify customers nope"),
        "Unknown template `nope`. Known templates: outage-v1, maintenance.\n\
         Usage: /dr notify customers <template>"
    );
    assert_eq!(
        message("checklist nope"),
        "Unknown checklist `nope`. Known checklists: failover, pitr.\nUsage: /dr checklist [name] | /dr checklist tick|untick <#id> <item>"
    );
}

#[test]
fn incident_title_is_limited() {
    assert!(matches!(
        ok(&format!("incident open {}", "é".repeat(255))),
        Command::Incident(IncidentCommand::Open { .. })
    ));
    assert_eq!(
        message(&format!("incident open {}", "é".repeat(256))),
        "The incident title is too long (256 characters; at most 255).\n\
         Usage: /dr incident open [--impact none|minor|major|critical] <title…>"
    );
}

#[test]
fn tokenizer_errors() {
    let e = err("incident open \"DB down");
    assert_eq!(
        e.to_string(),
        "Unterminated quote: a \" is never closed (a closing quote must end a word).\n\
         Usage: /dr incident open [--impact none|minor|major|critical] <title…> | update \
         [--status investigating|identified|monitoring] <message…> | resolve [message…]"
    );
    assert_eq!(
        err("deny 4 “nope").kind,
        ParseErrorKind::UnterminatedQuote { quote: '“' }
    );
    assert_eq!(
        err("'").kind,
        ParseErrorKind::UnterminatedQuote { quote: '\'' }
    );
    assert_eq!(
        message(&format!("status {}", "x".repeat(4096))),
        "The command is too long (4103 bytes; at most 4096).\nUsage: /dr status"
    );
    assert!(parse(&format!("deny 1 {}", "x".repeat(4089)), &vocab()).is_ok());
    assert_eq!(
        message("status\u{7}"),
        "The command contains a control character (U+0007); remove it.\n\
         See `/dr help` for all subcommands."
    );
    assert_eq!(
        err("deny 1 \u{1b}[31m").kind,
        ParseErrorKind::ControlCharacter { ch: '\u{1b}' }
    );
}

#[test]
fn errors_echo_little_and_stay_on_two_lines() {
    let long = "é".repeat(500);
    let text = message(&long);
    assert!(text.contains('…'));
    assert!(text.chars().count() < 200, "{text}");
    let text = message("failover \"us-\nwest `2`\u{202E}\"");
    assert_eq!(text.lines().count(), 2);
    assert!(
        text.starts_with("Unknown region `us- west '2'\u{FFFD}`."),
        "{text}"
    );
    let e = err(&format!("run {}", "9".repeat(300)));
    assert!(e.to_string().lines().all(|l| l.chars().count() < 200));
}
