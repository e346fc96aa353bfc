//! The drill history page through the real router and HTTP server, on SQLite and a real
//! PostgreSQL: finished drill and verify-backup runs in the store become one SVG point per
//! measured drill (RTO and RPO, with the `[targets]` as lines) and per verification, with a
//! table of the same numbers; no drills and one drill read well; each chart is also served as
//! `image/svg+xml`. Headless Chromium loads the page: its DOM has the tables, and a screenshot
//! is kept in `target/test-artifacts/drill-history-<backend>.png`.

mod common;

use common::*;
use drbot::store::now_ms;
use drbot_e2e::chromium;
use serde_json::{Value, json};
use sqlx::Row;

/// Inserts a finished run of runbook `runbook` ending at `finished` (Unix ms) after `secs`
/// seconds, with steps `(kind, data)`; returns its id.
async fn finished_run(
    env: &Env,
    runbook: &str,
    state: &str,
    dry_run: i64,
    finished: i64,
    secs: i64,
    steps: &[(&str, Value)],
) -> i64 {
    let r = sqlx::query(
        "INSERT INTO runs (runbook, command, plan, fingerprint, target, destructive, dry_run, \
         state, requested_by, requested_account, platform, created_at, updated_at, started_at, \
         finished_at) VALUES ($1, $1, '{}', 'f', $1, 0, $2, $3, 'bob', 'cli:bob', 'cli', \
         $4, $5, $4, $5) RETURNING id",
    )
    .bind(runbook.to_string())
    .bind(dry_run)
    .bind(state.to_string())
    .bind(finished - secs * 1000)
    .bind(finished)
    .fetch_one(env.app.store.pool())
    .await
    .unwrap();
    let id: i64 = r.get("id");
    for (i, (kind, data)) in steps.iter().enumerate() {
        sqlx::query(
            "INSERT INTO run_steps (run_id, idx, name, kind, destructive, idempotent, gate, \
             state, data) VALUES ($1, $2, $3, $4, 0, 1, 0, 'succeeded', $5)",
        )
        .bind(id)
        .bind(i as i64)
        .bind(format!("s{i}"))
        .bind(kind.to_string())
        .bind(data.to_string())
        .execute(env.app.store.pool())
        .await
        .unwrap();
    }
    id
}

fn measure(rto: f64, rpo: f64, rows: u64) -> (&'static str, Value) {
    (
        "pg_drill_measure",
        json!({ "rto_seconds": rto, "rpo_seconds": rpo, "rpo_rows": rows }),
    )
}

fn verify(duration: f64, tables: usize) -> (&'static str, Value) {
    let t: serde_json::Map<String, Value> =
        (0..tables).map(|i| (format!("t{i}"), json!({}))).collect();
    (
        "verify_backup",
        json!({ "passed": true, "duration_seconds": duration, "tables": t }),
    )
}

fn parse(doc: &str) -> roxmltree::Document<'_> {
    roxmltree::Document::parse_with_options(
        doc,
        roxmltree::ParsingOptions {
            allow_dtd: true,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("not well-formed XML: {e}\n{doc}"))
}

/// A chart fetched as a file: well-formed SVG with a title; its data points (`<circle>`) as
/// (cx, cy, filled).
async fn chart(addr: std::net::SocketAddr, slug: &str) -> (String, Vec<(f64, f64, bool)>) {
    let (code, ctype, body) = http_get(addr, &format!("/status/history/{slug}.svg")).await;
    assert_eq!((code, ctype.as_str()), (200, "image/svg+xml"), "{body}");
    let doc = parse(&body);
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    assert_eq!(
        root.tag_name().namespace(),
        Some("http://www.w3.org/2000/svg")
    );
    assert_eq!(root.attribute("role"), Some("img"));
    let title = root
        .children()
        .find(|n| n.has_tag_name("title"))
        .and_then(|n| n.text())
        .expect("the SVG has a <title>");
    assert!(!title.is_empty());
    let points = root
        .descendants()
        .filter(|n| n.has_tag_name("circle"))
        .map(|n| {
            let num = |a: &str| n.attribute(a).unwrap().parse::<f64>().unwrap();
            (num("cx"), num("cy"), n.attribute("fill") != Some("none"))
        })
        .collect();
    (body, points)
}

/// The text of every table row under the element with id `section` (whitespace-collapsed).
fn table_rows(doc: &roxmltree::Document, section: &str) -> Vec<String> {
    let sec = doc
        .descendants()
        .find(|n| n.attribute("aria-labelledby") == Some(section))
        .unwrap_or_else(|| panic!("no section {section}"));
    sec.descendants()
        .filter(|n| n.has_tag_name("tr") && n.parent().is_some_and(|p| p.has_tag_name("tbody")))
        .map(|r| {
            r.descendants()
                .filter(|n| n.is_text())
                .filter_map(|n| n.text())
                .collect::<Vec<_>>()
                .join(" ")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

fn human(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .format("%Y-%m-%d %H:%M UTC")
        .to_string()
}

async fn drill_history(b: Backend) {
    let mut env = env(b).await;
    let text = format!(
        "{}\n[targets]\nrto = \"15s\"\nrpo = \"2s\"\n",
        config_text(&env.url, 1, "30m", 0, "m")
    );
    env.app = reconfigure(&env, &text);
    let addr = serve(&env.app).await;

    // No runs yet: messages, not empty charts; the SVG files say so too.
    let (code, _, page) = http_get(addr, "/status/history").await;
    assert_eq!(code, 200);
    let doc = parse(&page);
    let empties: Vec<&str> = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("empty"))
        .filter_map(|n| n.text())
        .collect();
    assert_eq!(
        empties,
        [
            "No measured drill recorded yet.",
            "No measured drill recorded yet.",
            "No backup verification recorded yet."
        ]
    );
    assert!(!page.contains("<svg"), "no empty chart");
    let (svg, points) = chart(addr, "rto").await;
    assert!(points.is_empty());
    assert!(svg.contains("No measured drill recorded yet."), "{svg}");

    // One drill: one point, with the target line and its label.
    let day = 86_400_000;
    let t0 = now_ms() - 30 * day;
    let first = finished_run(
        &env,
        "drill",
        "succeeded",
        0,
        t0,
        400,
        &[measure(6.0, 0.0, 0)],
    )
    .await;
    let (svg, points) = chart(addr, "rto").await;
    assert_eq!(points.len(), 1, "{svg}");
    assert!(svg.contains("\ntarget 15 s\n</text>"), "{svg}");

    // More history: a drill that failed after measuring, one without a measurement, a dry run
    // (not evidence), and three backup verifications (one failed).
    let second = finished_run(
        &env,
        "drill",
        "failed",
        0,
        t0 + 10 * day,
        900,
        &[
            ("pg_drill_disaster", json!({ "rpo_seconds": 999.0 })),
            measure(20.5, 3.0, 12),
        ],
    )
    .await;
    let third = finished_run(
        &env,
        "drill",
        "succeeded",
        0,
        t0 + 20 * day,
        300,
        &[("exec", json!({}))],
    )
    .await;
    let fourth = finished_run(
        &env,
        "drill",
        "succeeded",
        0,
        t0 + 25 * day,
        300,
        &[measure(4.25, 0.5, 1)],
    )
    .await;
    finished_run(
        &env,
        "drill",
        "succeeded",
        1,
        t0 + 26 * day,
        300,
        &[measure(1.0, 0.0, 0)],
    )
    .await;
    let v1 = finished_run(
        &env,
        "verify-backup",
        "succeeded",
        0,
        t0 + day,
        90,
        &[verify(42.0, 3)],
    )
    .await;
    let v2 = finished_run(&env, "verify-backup", "failed", 0, t0 + 8 * day, 75, &[]).await;
    let v3 = finished_run(
        &env,
        "verify-backup",
        "succeeded",
        0,
        t0 + 15 * day,
        130,
        &[verify(125.0, 4)],
    )
    .await;

    // RTO: one point per measured drill, oldest left; the failed one hollow; higher is longer.
    let (_, rto) = chart(addr, "rto").await;
    assert_eq!(rto.len(), 3, "{rto:?}");
    assert!(rto[0].0 < rto[1].0 && rto[1].0 < rto[2].0, "{rto:?}");
    assert_eq!(
        rto.iter().map(|p| p.2).collect::<Vec<_>>(),
        [true, false, true]
    );
    assert!(
        rto[1].1 < rto[0].1 && rto[0].1 < rto[2].1,
        "20.5 s above 6 s above 4.25 s"
    );
    let (svg, rpo) = chart(addr, "rpo").await;
    assert_eq!(rpo.len(), 3, "{rpo:?}");
    assert!(svg.contains("\ntarget 2 s\n</text>"), "{svg}");
    let (_, ver) = chart(addr, "verification").await;
    assert_eq!(ver.len(), 3, "{ver:?}");
    assert_eq!(
        ver.iter().map(|p| p.2).collect::<Vec<_>>(),
        [true, false, true]
    );

    // The page: each chart inline and a table with the same numbers, oldest first.
    let (code, ctype, page) = http_get(addr, "/status/history").await;
    assert_eq!((code, ctype.as_str()), (200, "text/html; charset=utf-8"));
    let doc = parse(&page);
    assert_eq!(
        doc.descendants().filter(|n| n.has_tag_name("svg")).count(),
        3
    );
    assert_eq!(
        doc.descendants()
            .filter(|n| n.has_tag_name("circle"))
            .count(),
        9
    );
    let rto_rows = [
        format!("{} #{first} Passed 6 s yes", human(t0)),
        format!("{} #{second} Failed 20 s no", human(t0 + 10 * day)),
        format!(
            "{} #{third} Passed not measured not measured",
            human(t0 + 20 * day)
        ),
        format!("{} #{fourth} Passed 4.3 s yes", human(t0 + 25 * day)),
    ];
    assert_eq!(table_rows(&doc, "rto-heading"), rto_rows);
    assert_eq!(
        table_rows(&doc, "rpo-heading"),
        [
            format!("{} #{first} Passed 0 s 0 yes", human(t0)),
            format!("{} #{second} Failed 3 s 12 no", human(t0 + 10 * day)),
            format!(
                "{} #{third} Passed not measured not measured not measured",
                human(t0 + 20 * day)
            ),
            format!("{} #{fourth} Passed 0.5 s 1 yes", human(t0 + 25 * day)),
        ]
    );
    let ver_rows = [
        format!("{} #{v1} Passed 42 s 3", human(t0 + day)),
        format!("{} #{v2} Failed 1 min 15 s 0", human(t0 + 8 * day)),
        format!("{} #{v3} Passed 2 min 5 s 4", human(t0 + 15 * day)),
    ];
    assert_eq!(table_rows(&doc, "verification-heading"), ver_rows);

    // In a real browser: the DOM as Chromium built it, and a screenshot.
    let url = format!("http://{addr}/status/history");
    let profile = tempfile::tempdir().unwrap();
    let dom = tokio::task::spawn_blocking({
        let (url, profile) = (url.clone(), profile.path().to_path_buf());
        move || chromium::run(&profile, &["--dump-dom", &url])
    })
    .await
    .unwrap();
    let shown = parse_html_text(&dom);
    for row in rto_rows.iter().chain(&ver_rows) {
        assert!(shown.contains(row.as_str()), "missing {row:?} in\n{shown}");
    }
    assert_eq!(dom.matches("<circle").count(), 9, "{dom}");
    assert!(dom.contains("<title id=\"chart-rto-title\">Recovery time (RTO) per drill</title>"));
    let png = chromium::artifact_dir().join(format!("drill-history-{b:?}.png").to_lowercase());
    // A blank page compresses to a few kB; charts and tables do not.
    let bytes = tokio::task::spawn_blocking({
        let (png, profile) = (png.clone(), profile.path().to_path_buf());
        move || chromium::screenshot(&profile, &url, &png, (800, 1600), 30_000)
    })
    .await
    .unwrap();
    eprintln!("screenshot: {} ({bytes} bytes)", png.display());

    // The status page links here.
    let (_, _, status) = http_get(addr, "/status").await;
    assert!(
        parse(&status)
            .descendants()
            .any(|n| n.attribute("href") == Some("status/history")),
        "/status links to the history"
    );
}

/// The text content of Chromium's DOM dump with tags removed and whitespace collapsed.
fn parse_html_text(dom: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in dom.chars() {
        match c {
            '<' => {
                in_tag = true;
                out.push(' ');
            }
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A drill aborted (after needing attention) or cancelled once it started is the last drill
/// on `/status` and in the history, not met and without figures, instead of leaving an older
/// drill there as "met"; a run cancelled before it started tested nothing and is not listed.
async fn an_aborted_drill_is_the_last_drill(b: Backend) {
    let env = env(b).await;
    let day = 86_400_000;
    let t0 = now_ms() - 10 * day;
    let met = finished_run(
        &env,
        "drill",
        "succeeded",
        0,
        t0,
        400,
        &[measure(6.0, 0.0, 0)],
    )
    .await;
    let page = drbot::status_page::model(&env.app).await.unwrap();
    assert!(page.evidence.last_drill.unwrap().met, "the baseline is met");
    let aborted = finished_run(
        &env,
        "drill",
        "aborted",
        0,
        t0 + day,
        300,
        &[("pg_drill_disaster", json!({ "disaster_at_ms": t0 }))],
    )
    .await;
    let never_started = finished_run(&env, "drill", "cancelled", 0, t0 + 3 * day, 0, &[]).await;
    sqlx::query("UPDATE runs SET started_at = NULL WHERE id = $1")
        .bind(never_started)
        .execute(env.app.store.pool())
        .await
        .unwrap();
    let verified = finished_run(
        &env,
        "verify-backup",
        "succeeded",
        0,
        t0,
        90,
        &[verify(42.0, 3)],
    )
    .await;
    let cancelled =
        finished_run(&env, "verify-backup", "cancelled", 0, t0 + 2 * day, 60, &[]).await;

    let page = drbot::status_page::model(&env.app).await.unwrap();
    let drill = page.evidence.last_drill.unwrap();
    assert_eq!(
        drill.at.timestamp_millis(),
        t0 + day,
        "the aborted drill, not the older one nor the never-started one"
    );
    assert!(!drill.met);
    assert_eq!(drill.rpo, None, "nothing measured");
    let v = page.evidence.last_backup_verification.unwrap();
    assert_eq!(v.at.timestamp_millis(), t0 + 2 * day);
    assert!(!v.passed);

    let history = drbot::drill_history::model(&env.app).await.unwrap();
    let drills: Vec<_> = history
        .drills
        .iter()
        .map(|d| (d.id.clone(), d.passed, d.rto, d.rpo))
        .collect();
    assert_eq!(
        drills,
        [
            (
                met.to_string(),
                true,
                Some(std::time::Duration::from_secs(6)),
                Some(std::time::Duration::ZERO)
            ),
            (aborted.to_string(), false, None, None),
        ]
    );
    let verifications: Vec<_> = history
        .verifications
        .iter()
        .map(|v| (v.id.clone(), v.passed))
        .collect();
    assert_eq!(
        verifications,
        [(verified.to_string(), true), (cancelled.to_string(), false)]
    );
}

both_backends!(drill_history, an_aborted_drill_is_the_last_drill);
