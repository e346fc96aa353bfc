//! The command-line front-end through the real binary: `migrate` creates the SQLite file,
//! `runbooks_dir`, the texts of common replies, `--json` output and exit codes.

use std::{path::Path, process::Command};

fn drbot(cfg: &Path, args: &[&str]) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_drbot"))
        .arg("--config")
        .arg(cfg)
        .args(args)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn setup(dir: &Path) -> std::path::PathBuf {
    let books = dir.join("runbooks");
    std::fs::create_dir(&books).unwrap();
    std::fs::write(
        books.join("drill.toml"),
        r#"
name = "drill"
description = "Quarterly drill"
command = "drill"
request_roles = ["oncall"]
approve_roles = ["lead"]

[[steps]]
name = "simulate"
type = "exec"
with = { command = "true" }
"#,
    )
    .unwrap();
    std::fs::write(books.join("README.md"), "not a runbook").unwrap();
    let db = dir.join("sub").join("state.db");
    std::fs::create_dir(dir.join("sub")).unwrap();
    let cfg = dir.join("drbot.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
runbooks_dir = "runbooks"

[store]
url = "sqlite://{}"

[[people]]
name = "alice"
roles = ["lead"]

[[people]]
name = "bob"
roles = ["oncall"]

[regions.us-east-1]
role = "primary"
description = "primary region"
"#,
            db.display()
        ),
    )
    .unwrap();
    cfg
}

#[test]
fn migrate_creates_the_store_and_runbooks_dir_loads() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = setup(dir.path());
    let (code, out, _) = drbot(&cfg, &["check-config"]);
    assert_eq!(code, 0);
    assert!(out.contains("1 runbooks"), "{out}");
    assert!(!dir.path().join("sub/state.db").exists());
    let (code, out, err) = drbot(&cfg, &["migrate"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "migrations applied\n");
    assert!(dir.path().join("sub/state.db").exists());
}

#[test]
fn replies_and_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = setup(dir.path());
    let (code, out, _) = drbot(&cfg, &["cmd", "--as", "bob", "/dr drill"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with(
            "Run 1 requested: waiting for approval by another person (`/dr approve 1`).\n"
        ),
        "{out}"
    );
    assert!(
        out.contains("1. pending    simulate [destructive]"),
        "{out}"
    );

    let (code, out, _) = drbot(&cfg, &["cmd", "--as", "bob", "/dr", "approve", "1"]);
    assert_eq!(
        (code, out.as_str()),
        (
            2,
            "You requested run 1, so you cannot approve it: a second person must.\n"
        )
    );
    // Unquoted words that look like drbot's own flags are the command's text: they never
    // switch the config (or the output format) under the person typing.
    let (code, out, err) = drbot(
        &cfg,
        &[
            "cmd",
            "--as",
            "alice",
            "/dr",
            "deny",
            "1",
            "wrong",
            "--config",
            "/nonexistent.toml",
            "--json",
        ],
    );
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.contains("Unknown flag `--config`"), "{out}{err}");
    assert!(!err.contains("nonexistent"), "{err}");
    let (code, out, _) = drbot(&cfg, &["cmd", "--as", "bob", "/dr failover mars"]);
    assert_eq!(code, 2);
    assert!(
        out.contains("Unknown region") && out.contains("Usage: /dr failover <region> [--dry-run]"),
        "{out}"
    );
    let (code, out, _) = drbot(&cfg, &["cmd", "--as", "bob", "/dr failover us-east-1"]);
    assert_eq!(
        (code, out.as_str()),
        (
            2,
            "No runbook is configured for `failover` (see [[runbooks]] in the config).\n"
        )
    );
    let (code, out, _) = drbot(&cfg, &["cmd", "--as", "eve", "/dr approve 1"]);
    assert_eq!(
        (code, out.as_str()),
        (
            2,
            "`eve` is not in [[people]], so only help, status, runs and run are allowed.\n"
        )
    );
    let (code, out, _) = drbot(&cfg, &["cmd", "--as", "eve", "/dr status"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("us-east-1")
            && out.contains("primary region")
            && out.contains("awaiting_approval"),
        "{out}"
    );

    let (code, out, _) = drbot(&cfg, &["--json", "cmd", "--as", "alice", "/dr approve 1"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["reply"], "approved");
    assert_eq!(v["view"]["run"]["state"], "queued");
    assert_eq!(v["view"]["approvals"][0]["person"], "alice");

    let (code, out, _) = drbot(&cfg, &["--json", "runs"]);
    assert_eq!(code, 0);
    let runs: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(runs[0]["runbook"], "drill");
    let (code, out, _) = drbot(&cfg, &["show", "1"]);
    assert_eq!(code, 0);
    assert!(out.contains("approved by alice"), "{out}");
    let (code, _, err) = drbot(&cfg, &["show", "99"]);
    assert_eq!((code, err.as_str()), (2, "No run 99.\n"));
    let (code, out, _) = drbot(&cfg, &["--json", "show", "#99"]);
    assert_eq!((code, out.as_str()), (2, "{\"error\":\"No run 99.\"}\n"));
    let (code, out, _) = drbot(&cfg, &["--json", "audit", "--verify"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["problems"].as_array().unwrap().len(), 0);
    assert!(v["rows"].as_i64().unwrap() >= 8);
    // A read-only command's row is only queued for the group commit: `drbot cmd` commits it
    // before it exits.
    let (code, out, _) = drbot(&cfg, &["--json", "audit"]);
    assert_eq!(code, 0);
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    let statuses: Vec<_> = rows
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            let detail: serde_json::Value =
                serde_json::from_str(r["detail"].as_str().unwrap()).unwrap();
            r["action"] == "command" && detail["text"] == "/dr status"
        })
        .collect();
    assert_eq!(statuses.len(), 1, "{rows:#}");
    let (code, out, _) = drbot(&cfg, &["cmd", "--as", "bob", "/dr help pitr"]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("/dr pitr <timestamp> [--dry-run]\n"),
        "{out}"
    );
}

#[test]
fn outbox_lists_and_retries_failed_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = setup(dir.path());
    assert_eq!(drbot(&cfg, &["migrate"]).0, 0);
    let db = dir.path().join("sub").join("state.db");
    // Two deliveries, one of them failed, written as the outbox worker leaves them.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = drbot::store::Store::connect(&format!("sqlite://{}", db.display()), 1)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO outbox (key, channel, payload, state, attempts, next_at, last_error, created_at) VALUES \
             ('email:1:ann@example.com', 'email', '{}', 'failed', 5, 0, '550 no such user', 0), \
             ('statuspage:incident:1', 'statuspage', '{}', 'delivered', 1, 0, NULL, 0)",
        )
        .execute(store.pool())
        .await
        .unwrap();
    });
    let (code, out, _) = drbot(&cfg, &["outbox", "--state", "failed"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("failed") && out.contains("email:1:ann@example.com"),
        "{out}"
    );
    assert!(out.contains("last error: 550 no such user"), "{out}");
    assert!(!out.contains("statuspage:incident:1"), "{out}");
    let (code, _, err) = drbot(&cfg, &["outbox", "--state", "lost"]);
    assert_eq!(code, 2);
    assert!(err.contains("--state is one of"), "{err}");
    // Any case; limits from 1; run ids as people write them.
    let (code, out, err) = drbot(&cfg, &["outbox", "--state", "FAILED"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("last error: 550 no such user"), "{out}");
    for bad in ["--limit=-1", "--limit=0"] {
        let (code, _, err) = drbot(&cfg, &["audit", bad]);
        assert_eq!(code, 2, "{bad}: {err}");
        assert!(err.contains("is not a number from 1 to 100000"), "{err}");
    }
    let (code, _, err) = drbot(&cfg, &["audit", "--run", "#1"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = drbot(&cfg, &["outbox", "--retry", "x"]);
    assert_eq!(code, 2);
    assert!(err.contains("--retry takes a row id"), "{err}");
    let (code, out, _) = drbot(&cfg, &["outbox", "--retry", "all"]);
    assert_eq!(
        (code, out.trim()),
        (0, "1 failed delivery is queued again.")
    );
    let (_, out, _) = drbot(&cfg, &["--json", "outbox", "--state", "pending"]);
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rows[0]["key"], "email:1:ann@example.com");
    // Reset to one: the next attempt is never taken for a first one.
    assert_eq!(rows[0]["attempts"], 1);
}

#[test]
fn notify_preview_and_template_checks() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = setup(dir.path());
    let (code, out, _) = drbot(&cfg, &["notify", "preview"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("email_subject") && out.contains("statuspage_title"),
        "{out}"
    );
    let (code, out, _) = drbot(&cfg, &["notify", "preview", "email_subject"]);
    assert_eq!(code, 0);
    assert!(out.contains("Service Update - DR Activation"), "{out}");
    // The notice's name as `/dr notify customers` takes it: subject, text and HTML.
    let (code, out, err) = drbot(&cfg, &["notify", "preview", "dr-activated"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("==> email_subject.txt\nService Update - DR Activation"),
        "{out}"
    );
    assert!(
        out.contains("==> email_body.txt\n") && out.contains("==> email_body.html\n"),
        "{out}"
    );
    assert!(out.contains("<html"), "{out}");
    let (code, _, err) = drbot(&cfg, &["notify", "preview", "nope"]);
    assert_eq!(code, 2);
    assert!(err.contains("no template `nope`"), "{err}");

    // An override with an unknown variable fails check-config, naming template and line.
    let tdir = dir.path().join("templates");
    std::fs::create_dir(&tdir).unwrap();
    std::fs::write(
        tdir.join("email_subject.txt"),
        "Update for {{ incident.nme }}\n",
    )
    .unwrap();
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("templates_dir = \"templates\"\n{text}")).unwrap();
    let (code, _, err) = drbot(&cfg, &["check-config"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("email_subject") && err.contains("line 1") && err.contains("incident.nme"),
        "{err}"
    );
    // A good override is what preview shows.
    std::fs::write(
        tdir.join("email_subject.txt"),
        "Our update: {{ incident.name }}\n",
    )
    .unwrap();
    assert_eq!(drbot(&cfg, &["check-config"]).0, 0);
    let (_, out, _) = drbot(&cfg, &["notify", "preview", "email_subject"]);
    assert!(out.starts_with("Our update: "), "{out}");
}

#[test]
fn report_and_timeline_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = setup(dir.path());
    let (code, out, _) = drbot(&cfg, &["cmd", "--as", "bob", "/dr incident open DB down"]);
    assert_eq!(code, 0, "{out}");
    let (code, out, _) = drbot(&cfg, &["cmd", "--as", "bob", "/dr drill"]);
    assert_eq!(code, 0, "{out}");

    // Requested, not approved: detection and declaration happened, the rest did not.
    let (code, out, err) = drbot(&cfg, &["timeline", "incident:1"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("Incident 1: DB down\n\nMilestones:\n"),
        "{out}"
    );
    assert!(out.contains("  Approval      -"), "{out}");
    assert!(out.contains("not reached"), "{out}");
    assert!(out.contains("  Detection → verification: -\n"), "{out}");
    assert!(out.contains("run 1 requested: drill"), "{out}");
    assert!(out.contains("`/dr drill` (ok)"), "{out}");
    let json = |subject: &str| {
        let (code, out, _) = drbot(&cfg, &["--json", "timeline", subject]);
        assert_eq!(code, 0);
        serde_json::from_str::<serde_json::Value>(&out).unwrap()
    };
    let t = json("incident:1");
    assert_eq!(t["milestones"][1]["milestone"], "declaration");
    assert!(t["milestones"][1]["at"].is_i64(), "{t}");
    assert!(t["milestones"][2]["at"].is_null(), "{t}");
    assert!(t["total_ms"].is_null());
    // The run alone: no step of it wrote to the incident, so it has none.
    let t = json("run:1");
    assert!(t["milestones"][1]["at"].is_null(), "{t}");
    assert_eq!(t["milestones"][1]["source"], "no incident");
    assert_eq!(t["events"].as_array().unwrap().len(), 2, "{t}");

    let out_dir = dir.path().join("reports");
    let (code, out, err) = drbot(
        &cfg,
        &["report", "run:1", "--out", out_dir.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("Wrote "), "{out}");
    let md = std::fs::read_to_string(out_dir.join("run-1.md")).unwrap();
    assert!(md.starts_with("# Run 1: drill\n"), "{md}");
    assert!(md.contains("| 1 | run | bob |"), "{md}");
    assert!(md.contains("\n## Lessons learned\n"), "{md}");
    let html = std::fs::read_to_string(out_dir.join("run-1.html")).unwrap();
    assert!(html.contains("<h1>Run 1: drill</h1>"));
    // The team's edits are never overwritten without --force.
    let edited = md.replace(
        "## Lessons learned\n",
        "## Lessons learned\n\nPage the DBA sooner.\n",
    );
    std::fs::write(out_dir.join("run-1.md"), &edited).unwrap();
    let (code, _, err) = drbot(
        &cfg,
        &["report", "run:1", "--out", out_dir.to_str().unwrap()],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("run-1.md exists already"), "{err}");
    assert!(err.contains("--force"), "{err}");
    assert_eq!(
        std::fs::read_to_string(out_dir.join("run-1.md")).unwrap(),
        edited
    );
    let (code, _, err) = drbot(
        &cfg,
        &[
            "report",
            "run:1",
            "--out",
            out_dir.to_str().unwrap(),
            "--force",
        ],
    );
    assert_eq!(code, 0, "{err}");
    // Written again from the store: the same report but for when it was generated.
    let generated = |s: &str| {
        s.lines()
            .filter(|l| !l.contains("generated by drbot at"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let rewritten = std::fs::read_to_string(out_dir.join("run-1.md")).unwrap();
    assert_ne!(rewritten, edited);
    assert_eq!(generated(&rewritten), generated(&md));

    let (code, _, err) = drbot(&cfg, &["report", "incident:9"]);
    assert_eq!((code, err.as_str()), (2, "No incident 9.\n"));
    let (code, _, err) = drbot(&cfg, &["timeline", "job:1"]);
    assert_eq!(code, 2);
    assert!(err.contains("`job:1` is not a report subject"), "{err}");
    assert!(err.contains("`drbot timeline incident:12`"), "{err}");
}

/// A PostgreSQL store that refuses connections is named with the cause (the pool alone retried
/// for 30 s, then said only that it timed out), and its password is not.
#[test]
fn an_unreachable_postgres_store_says_why() {
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = dir.path().join("drbot.toml");
    std::fs::write(
        &cfg,
        format!(
            "[store]\nurl = \"postgres://drbot:sekret-pg-42@127.0.0.1:{port}/drbot\"\n\
             [[people]]\nname = \"alice\"\nroles = [\"lead\"]\n[regions.r1]\nrole = \"primary\"\n"
        ),
    )
    .unwrap();
    let (code, out, err) = drbot(&cfg, &["runs"]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.contains("cannot open the store"), "{err}");
    assert!(err.to_lowercase().contains("refused"), "{err}");
    assert!(
        !err.contains("sekret-pg-42") && !out.contains("sekret-pg-42"),
        "{err}"
    );
}

/// Break-glass from a shell without the chat and mail secrets: the commands that only use the
/// store work (naming what they left out); the ones that plan runs or serve still need them.
#[test]
fn store_only_commands_work_without_integration_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("drbot.toml");
    std::fs::write(
        &cfg,
        format!(
            "[store]\nurl = \"sqlite://{db}\"\n\
             [[people]]\nname = \"alice\"\nroles = [\"lead\"]\n[regions.r1]\nrole = \"primary\"\n\
             [slack]\nsigning_secret = \"${{DRBOT_TEST_UNSET_SIGNING}}\"\n\
             bot_token = \"${{DRBOT_TEST_UNSET_TOKEN}}\"\nincident_channel = \"C1\"\n",
            db = dir.path().join("drbot.db").display()
        ),
    )
    .unwrap();
    for args in [
        &["runs"][..],
        &["audit", "--verify"],
        &["subscribers", "count"],
    ] {
        let (code, out, err) = drbot(&cfg, args);
        assert_eq!(code, 0, "{args:?}: {out}{err}");
        assert!(
            err.contains("note: [slack] (slack.bot_token: environment variable DRBOT_TEST_UNSET_TOKEN is not set"),
            "{err}"
        );
        assert!(
            err.contains("left out; this command does not need it"),
            "{err}"
        );
    }
    let (code, _, err) = drbot(&cfg, &["cmd", "--as", "alice", "/dr status"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("environment variable DRBOT_TEST_UNSET_TOKEN is not set"),
        "{err}"
    );
}

/// Break-glass ticking, through the binary: `/dr checklist tick|untick <#id> <item>` sets an
/// item (typing it twice changes nothing), names what it cannot find, and is audited.
#[test]
fn checklist_items_are_ticked_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = setup(dir.path());
    let (code, out, err) = drbot(
        &cfg,
        &["cmd", "--as", "alice", "/dr checklist pre-failover"],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("Checklist #1 Pre-Failover"), "{out}");
    assert!(out.contains("`/dr checklist tick 1 <item>`"), "{out}");
    for _ in 0..2 {
        let (code, out, err) = drbot(
            &cfg,
            &["cmd", "--as", "bob", "/dr checklist tick #1 notify-ic"],
        );
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("1/4 done"), "{out}");
        assert!(
            out.contains("[x] Notify incident commander (notify-ic, ticked by bob"),
            "{out}"
        );
    }
    let (code, out, _) = drbot(
        &cfg,
        &["cmd", "--as", "alice", "/dr checklist untick 1 notify-ic"],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("0/4 done"), "{out}");
    let (code, out, _) = drbot(&cfg, &["cmd", "--as", "alice", "/dr checklist tick 1 nope"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("no item `nope`"), "{out}");
    let (code, out, _) = drbot(
        &cfg,
        &["cmd", "--as", "alice", "/dr checklist tick 99 notify-ic"],
    );
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("no posted checklist #99"), "{out}");
    let (code, out, _) = drbot(&cfg, &["--json", "audit", "--limit", "100"]);
    assert_eq!(code, 0);
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    let ticks = rows
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "checklist.tick")
        .count();
    assert_eq!(ticks, 2, "one tick and one untick: {rows}");
}

/// An import that fails part-way (here a trigger refuses one address of the second batch) is
/// audited with what its committed batches changed and the failure, and exits non-zero.
#[test]
fn an_import_that_fails_part_way_is_audited() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = setup(dir.path());
    assert_eq!(drbot(&cfg, &["migrate"]).0, 0);
    let db = dir.path().join("sub").join("state.db");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = rt.block_on(async {
        let store = drbot::store::Store::connect(&format!("sqlite://{}", db.display()), 1)
            .await
            .unwrap();
        sqlx::query(
            "CREATE TRIGGER poison BEFORE INSERT ON subscribers \
             WHEN NEW.email = 'poison@example.org' BEGIN SELECT RAISE(ABORT, 'refused'); END",
        )
        .execute(store.pool())
        .await
        .unwrap();
        store
    });
    let batch = drbot::store::subscribers::IMPORT_BATCH;
    let mut csv = String::from("email\n");
    for i in 0..batch + 10 {
        csv.push_str(&format!("user{i}@example.org\n"));
    }
    csv.push_str("poison@example.org\n");
    let file = dir.path().join("list.csv");
    std::fs::write(&file, csv).unwrap();
    let (code, _, err) = drbot(&cfg, &["subscribers", "import", file.to_str().unwrap()]);
    assert_ne!(code, 0, "{err}");
    assert!(
        err.contains(&format!(
            "{batch} of {} addresses were imported",
            batch + 11
        )),
        "{err}"
    );
    let detail: String = rt.block_on(async {
        sqlx::query_scalar("SELECT detail FROM audit_log WHERE action = 'subscribers.import'")
            .fetch_one(store.pool())
            .await
            .unwrap()
    });
    let detail: serde_json::Value = serde_json::from_str(&detail).unwrap();
    assert_eq!(detail["added"], batch, "{detail}");
    assert!(
        detail["failed"]
            .as_str()
            .is_some_and(|f| f.contains("addresses were imported")),
        "{detail}"
    );
}
