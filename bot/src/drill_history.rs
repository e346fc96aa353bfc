//! The drill history page: `GET /status/history` (HTML with inline SVG charts) and each chart
//! alone as `image/svg+xml` at `/status/history/{rto,rpo,verification}.svg`, so reports can
//! embed them. Built from drbot's store alone: the newest [`HISTORY_RUNS`] finished (not dry)
//! runs of the runbooks bound to `drill` and `verify-backup`, drawn by
//! `notifier::page::history`.
//!
//! A drill's RTO, RPO and lost writes are what its `pg_drill_measure` step recorded
//! (`rto_seconds`, `rpo_seconds`, `rpo_rows`); a drill without that record (a custom runbook, or
//! one that failed before measuring) is listed as not measured and has no point on the charts.

use std::time::Duration;

use axum::{Router, extract::State, response::Response, routing::get};
use chrono::Utc;
use notifier::page::history::{
    Chart, DrillRecord, HISTORY_PATH, HistoryModel, VerificationRecord, render_chart,
    render_history_html,
};

use crate::{
    app::App,
    status_page::{targets, time, verification},
    store::evidence::FinishedRun,
};

/// How many of the newest finished runs of each runbook the page shows.
pub const HISTORY_RUNS: i64 = 200;

/// The step type whose record holds a drill's measurements.
pub const MEASURE_KIND: &str = "pg_drill_measure";

/// The page's routes (always present).
pub fn routes() -> Router<App> {
    let mut r = Router::new().route(HISTORY_PATH, get(html));
    for chart in Chart::ALL {
        r = r.route(
            &format!("{HISTORY_PATH}/{}.svg", chart.slug()),
            get(move |State(app): State<App>| svg(app, chart)),
        );
    }
    r
}

async fn html(State(app): State<App>) -> Response {
    respond(&app, "text/html; charset=utf-8", |m| {
        render_history_html(m).map_err(anyhow::Error::from)
    })
    .await
}

async fn svg(app: App, chart: Chart) -> Response {
    respond(&app, "image/svg+xml", |m| {
        render_chart(m, chart).map_err(anyhow::Error::from)
    })
    .await
}

async fn respond(
    app: &App,
    content_type: &'static str,
    render: impl FnOnce(&HistoryModel) -> anyhow::Result<String>,
) -> Response {
    let model = app.pages.history.get(|| model(app)).await;
    crate::status_page::page_response(
        model.and_then(|m| render(&m)),
        content_type,
        "drill history",
    )
}

/// The history as it stands in the store.
pub async fn model(app: &App) -> anyhow::Result<HistoryModel> {
    let runbook = |command: &str| {
        app.settings
            .runbook_for(command)
            .map_or_else(|| command.to_string(), |r| r.name.clone())
    };
    let (rto_target, rpo_target) = targets(app);
    let drills = app
        .store
        .finished_runs(&runbook("drill"), HISTORY_RUNS)
        .await?;
    let verifications = app
        .store
        .finished_runs(&runbook("verify-backup"), HISTORY_RUNS)
        .await?;
    Ok(HistoryModel {
        title: app.settings.config.status_page.title.clone(),
        generated_at: Utc::now(),
        rto_target,
        rpo_target,
        drills: drills.iter().map(drill_record).collect(),
        verifications: verifications.iter().map(verification_record).collect(),
    })
}

fn seconds(v: &serde_json::Value) -> Option<Duration> {
    v.as_f64().and_then(|s| Duration::try_from_secs_f64(s).ok())
}

/// A finished drill run as a history record: its [`MEASURE_KIND`] step's numbers (the last
/// such step with data), or none.
pub fn drill_record(r: &FinishedRun) -> DrillRecord {
    let measured = r
        .steps
        .iter()
        .rev()
        .find(|(kind, data)| kind == MEASURE_KIND && data.is_some())
        .and_then(|(_, d)| d.as_ref());
    DrillRecord {
        id: r.id.to_string(),
        at: time(r.finished_at),
        passed: r.state == "succeeded",
        rto: measured.and_then(|d| seconds(&d["rto_seconds"])),
        rpo: measured.and_then(|d| seconds(&d["rpo_seconds"])),
        rpo_rows: measured.and_then(|d| d["rpo_rows"].as_u64()),
    }
}

/// A finished verify-backup run as a history record (as the status page reads it).
pub fn verification_record(r: &FinishedRun) -> VerificationRecord {
    let v = verification(r);
    VerificationRecord {
        id: r.id.to_string(),
        at: v.at,
        passed: v.passed,
        duration: v.duration,
        tables: v.tables,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(id: i64, state: &str, steps: Vec<(&str, Option<serde_json::Value>)>) -> FinishedRun {
        FinishedRun {
            id,
            state: state.into(),
            started_at: Some(1_000),
            finished_at: 61_000,
            steps: steps.into_iter().map(|(k, d)| (k.to_string(), d)).collect(),
        }
    }

    #[test]
    fn a_measured_drill_has_its_numbers() {
        let r = run(
            7,
            "succeeded",
            vec![
                ("pg_drill_disaster", Some(json!({ "rpo_seconds": 99.0 }))),
                (
                    MEASURE_KIND,
                    Some(json!({ "rto_seconds": 5.41, "rpo_seconds": 1.5, "rpo_rows": 3 })),
                ),
                ("notify", None),
            ],
        );
        let d = drill_record(&r);
        assert_eq!(d.id, "7");
        assert!(d.passed);
        assert_eq!(d.at, time(61_000));
        assert_eq!(d.rto, Some(Duration::from_millis(5_410)));
        assert_eq!(
            d.rpo,
            Some(Duration::from_millis(1_500)),
            "not the other step's"
        );
        assert_eq!(d.rpo_rows, Some(3));
    }

    #[test]
    fn a_drill_without_a_measure_step_is_not_measured() {
        // Another step's `rto_seconds` is not a drill measurement, nor is the run's duration.
        let r = run(
            8,
            "succeeded",
            vec![
                (
                    "exec",
                    Some(json!({ "rto_seconds": 12.0, "rpo_seconds": 1.0 })),
                ),
                (MEASURE_KIND, None),
            ],
        );
        let d = drill_record(&r);
        assert!(d.passed);
        assert_eq!((d.rto, d.rpo, d.rpo_rows), (None, None, None));
    }

    #[test]
    fn a_failed_drill_keeps_what_it_measured() {
        let failed_early = drill_record(&run(9, "failed", vec![("pg_promote", None)]));
        assert!(!failed_early.passed);
        assert_eq!(failed_early.rto, None);
        // Failed after measuring (e.g. a later check): the numbers are still evidence.
        let r = run(
            10,
            "failed",
            vec![(
                MEASURE_KIND,
                Some(json!({ "rto_seconds": 30, "rpo_seconds": 0.0, "rpo_rows": 0 })),
            )],
        );
        let d = drill_record(&r);
        assert!(!d.passed);
        assert_eq!(d.rto, Some(Duration::from_secs(30)));
        assert_eq!(d.rpo, Some(Duration::ZERO));
        assert_eq!(d.rpo_rows, Some(0));
        // Nonsense values are not plotted.
        let r = run(
            11,
            "succeeded",
            vec![(
                MEASURE_KIND,
                Some(json!({ "rto_seconds": -1.0, "rpo_seconds": "soon", "rpo_rows": -2 })),
            )],
        );
        let d = drill_record(&r);
        assert_eq!((d.rto, d.rpo, d.rpo_rows), (None, None, None));
    }

    #[test]
    fn verification_records_follow_the_status_page() {
        let r = run(
            12,
            "succeeded",
            vec![(
                "verify_backup",
                Some(json!({ "passed": false, "duration_seconds": 8.0, "tables": { "a": {} } })),
            )],
        );
        let v = verification_record(&r);
        assert_eq!(v.id, "12");
        assert!(!v.passed, "the report failed");
        assert_eq!(v.duration, Duration::from_secs(8));
        assert_eq!(v.tables, 1);
        let v = verification_record(&run(13, "failed", vec![]));
        assert!(!v.passed);
        assert_eq!(v.duration, Duration::from_secs(60), "the run's duration");
    }
}
