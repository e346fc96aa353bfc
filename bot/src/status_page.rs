//! drbot's own public status page: `GET /status` (HTML), `/status.json` and
//! `/status/feed.atom`, built from drbot's store alone (so the page keeps working when the
//! primary region is gone, and without Slack, Discord or Statuspage) and rendered by
//! `notifier::page`.
//!
//! Components come from `[[status_page.components]]`: each is operational, or while an
//! incident is open takes the status its impact maps to (none → operational, minor → degraded
//! performance, major → partial outage, critical → major outage). Evidence: the last finished
//! `verify-backup` and `drill` runs (dry runs excluded) and each `[[schedules]]` entry's last
//! result and next due date. The drill history page is `drill_history`.

use std::time::Duration;

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use chrono::{DateTime, Utc};
use notifier::page::{
    self, BackupVerification, Component, ComponentStatus, Drill, Evidence, Impact, Incident,
    IncidentStatus, PageModel, ScheduleEvidence, ScheduleResult, Update,
};

use crate::{
    app::App,
    schedule::ScheduleStatus,
    store::{
        evidence::FinishedRun,
        incidents::{IncidentRow, IncidentState, IncidentUpdateRow},
        runs::RunState,
    },
};

/// Resolved incidents shown in the history.
pub const HISTORY_LIMIT: i64 = 20;

/// The page's routes (always present).
pub fn routes() -> Router<App> {
    Router::new()
        .route(page::PAGE_PATH, get(html))
        .route(page::JSON_PATH, get(json))
        .route(page::FEED_PATH, get(atom))
        .merge(crate::drill_history::routes())
}

async fn html(State(app): State<App>) -> Response {
    respond(&app, "text/html; charset=utf-8", |m| {
        page::render_html(m).map_err(anyhow::Error::from)
    })
    .await
}

async fn json(State(app): State<App>) -> Response {
    respond(&app, "application/json", |m| {
        Ok(page::render_json(m).to_string())
    })
    .await
}

async fn atom(State(app): State<App>, headers: HeaderMap) -> Response {
    let base = base_url(&app, &headers);
    respond(&app, "application/atom+xml; charset=utf-8", |m| {
        Ok(page::render_atom(m, &base))
    })
    .await
}

/// `server.public_url`, else the URL the request was addressed to.
fn base_url(app: &App, headers: &HeaderMap) -> String {
    if let Some(u) = &app.settings.config.server.public_url {
        return u.trim_end_matches('/').to_string();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })
        .map(str::to_string)
        .unwrap_or_else(|| app.settings.listen.to_string());
    format!("http://{host}")
}

async fn respond(
    app: &App,
    content_type: &'static str,
    render: impl FnOnce(&PageModel) -> anyhow::Result<String>,
) -> Response {
    let model = app.pages.status.get(|| model(app)).await;
    page_response(model.and_then(|m| render(&m)), content_type, "status page")
}

/// A rendered public page (`body`) as a no-cache response of `content_type`; a failure is
/// logged with its context and answered 503 "<what> temporarily unavailable". Shared by the
/// status page and the drill history.
pub(crate) fn page_response(
    body: anyhow::Result<String>,
    content_type: &'static str,
    what: &str,
) -> Response {
    match body {
        Ok(body) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, content_type),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            body,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "building the {what} failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                format!("{what} temporarily unavailable\n"),
            )
                .into_response()
        }
    }
}

/// The page as it stands in the store.
pub async fn model(app: &App) -> anyhow::Result<PageModel> {
    let store = &app.store;
    // Evidence is found by the runbook bound to the command (its name if none is).
    let runbook = |command: &str| {
        app.settings
            .runbook_for(command)
            .map_or_else(|| command.to_string(), |r| r.name.clone())
    };
    let open = match store.open_incident().await? {
        Some(i) => {
            let updates = store.incident_updates(i.id).await?;
            Some((i, updates))
        }
        None => None,
    };
    let current = open.as_ref().map(|(i, u)| incident(i, u));
    let mut history = Vec::new();
    for i in store.resolved_incidents(HISTORY_LIMIT).await? {
        let updates = store.incident_updates(i.id).await?;
        history.push(incident(&i, &updates));
    }
    let cfg = &app.settings.config;
    let statuses = component_statuses(
        &cfg.status_page,
        open.as_ref().map(|(i, u)| (i, u.as_slice())),
    );
    let components = cfg
        .status_page
        .components
        .iter()
        .zip(statuses)
        .map(|(c, status)| Component {
            name: c.name.clone(),
            status,
            description: c.description.clone(),
        })
        .collect();
    let targets = targets(app);
    let now = Utc::now();
    let schedules = crate::schedule::status(app, now)
        .await?
        .iter()
        .map(schedule_evidence)
        .collect();
    Ok(PageModel {
        title: cfg.status_page.title.clone(),
        generated_at: now,
        components,
        current,
        history,
        evidence: Evidence {
            last_backup_verification: store
                .last_finished_run(&runbook("verify-backup"))
                .await?
                .map(|r| verification(&r)),
            last_drill: store
                .last_finished_run(&runbook("drill"))
                .await?
                .map(|r| drill(&r, targets)),
            schedules,
        },
    })
}

/// `[targets]`: (RTO, RPO).
pub fn targets(app: &App) -> (Duration, Duration) {
    let t = &app.settings.config.targets;
    (
        humantime::parse_duration(&t.rto).unwrap_or_default(),
        humantime::parse_duration(&t.rpo).unwrap_or_default(),
    )
}

/// A schedule's line of `/dr status` as page evidence: the newest fire's run state as a
/// result (a refused fire failed), without run ids or links.
pub fn schedule_evidence(s: &ScheduleStatus) -> ScheduleEvidence {
    let last_result = match (&s.last_run, &s.last_error) {
        (Some((_, state)), _) => match RunState::parse(state) {
            Ok(RunState::Succeeded) => ScheduleResult::Passed,
            Ok(
                RunState::AwaitingApproval
                | RunState::Queued
                | RunState::Running
                | RunState::AwaitingGate
                | RunState::NeedsAttention,
            ) => ScheduleResult::Pending,
            Ok(
                RunState::Failed
                | RunState::Cancelled
                | RunState::Denied
                | RunState::Expired
                | RunState::Void
                | RunState::Aborted,
            )
            | Err(_) => ScheduleResult::Failed,
        },
        (None, Some(_)) => ScheduleResult::Failed,
        (None, None) => ScheduleResult::None,
    };
    ScheduleEvidence {
        name: s.name.clone(),
        runbook: s.runbook.clone(),
        last_result,
        last_at: s.last_at,
        next_due: s
            .next_due
            .as_deref()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc)),
        overdue: s.overdue,
    }
}

/// Each `[[status_page.components]]` entry's status, in order: operational unless `open` is an
/// unresolved incident; then what its impact implies, overridden by the component statuses its
/// timeline entries set (the latest wins).
pub fn component_statuses(
    cfg: &crate::config::PublicPageConfig,
    open: Option<(&IncidentRow, &[IncidentUpdateRow])>,
) -> Vec<ComponentStatus> {
    let Some((incident, updates)) = open.filter(|(i, _)| i.status != IncidentState::Resolved)
    else {
        return vec![ComponentStatus::Operational; cfg.components.len()];
    };
    let base = component_status(impact(&incident.impact));
    cfg.components
        .iter()
        .map(|c| {
            updates
                .iter()
                .rev()
                .find_map(|u| u.components.get(&c.name))
                .and_then(|s| ComponentStatus::ALL.into_iter().find(|x| x.as_str() == s))
                .unwrap_or(base)
        })
        .collect()
}

/// What an open incident's impact does to the components.
pub fn component_status(impact: Impact) -> ComponentStatus {
    match impact {
        Impact::None => ComponentStatus::Operational,
        Impact::Minor => ComponentStatus::DegradedPerformance,
        Impact::Major => ComponentStatus::PartialOutage,
        Impact::Critical => ComponentStatus::MajorOutage,
    }
}

pub(crate) fn time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

fn state(s: IncidentState) -> IncidentStatus {
    match s {
        IncidentState::Investigating => IncidentStatus::Investigating,
        IncidentState::Identified => IncidentStatus::Identified,
        IncidentState::Monitoring => IncidentStatus::Monitoring,
        IncidentState::Resolved => IncidentStatus::Resolved,
    }
}

fn impact(s: &str) -> Impact {
    match s {
        "none" => Impact::None,
        "minor" => Impact::Minor,
        "critical" => Impact::Critical,
        _ => Impact::Major,
    }
}

fn incident(i: &IncidentRow, updates: &[IncidentUpdateRow]) -> Incident {
    Incident {
        id: i.id.to_string(),
        name: i.name.clone(),
        status: state(i.status),
        impact: impact(&i.impact),
        started_at: time(i.created_at),
        resolved_at: i.resolved_at.map(time),
        updates: updates
            .iter()
            .map(|u| Update {
                at: time(u.created_at),
                status: state(u.status),
                body: u.body.clone(),
            })
            .collect(),
    }
}

fn run_duration(r: &FinishedRun) -> Duration {
    let ms = r.finished_at - r.started_at.unwrap_or(r.finished_at);
    Duration::from_millis(ms.max(0) as u64)
}

/// The verify step's report (`passed`, `duration_seconds`, `tables`), else the run's outcome.
pub(crate) fn verification(r: &FinishedRun) -> BackupVerification {
    let report = r
        .steps
        .iter()
        .find(|(kind, data)| kind == "verify_backup" && data.is_some())
        .and_then(|(_, d)| d.as_ref());
    let passed =
        r.state == "succeeded" && report.and_then(|d| d["passed"].as_bool()).unwrap_or(true);
    let duration = report
        .and_then(|d| d["duration_seconds"].as_f64())
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .unwrap_or_else(|| run_duration(r));
    let tables = report
        .and_then(|d| d["tables"].as_object())
        .map(|t| t.len() as u64)
        .unwrap_or(0);
    BackupVerification {
        at: time(r.finished_at),
        passed,
        duration,
        tables,
    }
}

/// The largest finite, non-negative number any step recorded under `key` (e.g. the drill's
/// `rto_seconds` and `rpo_seconds`, from `pg_drill_measure`); reports use it too.
pub fn recorded(steps: &[(String, Option<serde_json::Value>)], key: &str) -> Option<f64> {
    steps
        .iter()
        .filter_map(|(_, d)| d.as_ref()?[key].as_f64())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .reduce(f64::max)
}

/// [`recorded`] as a duration: a number too large for one (a step may record anything)
/// counts as none. The drill's targets are the ones its measurement was made against, when a
/// step recorded them (`rto_target_seconds`, `rpo_target_seconds`; a runbook may set its own,
/// e.g. the seed's 1 h for a failover test). Reports use it too, so they judge a drill as the
/// page does.
pub fn recorded_duration(
    steps: &[(String, Option<serde_json::Value>)],
    key: &str,
) -> Option<Duration> {
    recorded(steps, key).and_then(|s| Duration::try_from_secs_f64(s).ok())
}

/// Whether a step could only bound the RPO from below (`pg_drill_measure`'s `rpo_at_least`: no
/// marker reached DR): such an RPO is never met, however small. Reports use it too.
pub fn rpo_lower_bound_only(steps: &[(String, Option<serde_json::Value>)]) -> bool {
    steps
        .iter()
        .any(|(_, d)| d.as_ref().is_some_and(|d| d["rpo_at_least"] == true))
}

/// RTO is the measured `rto_seconds` a step recorded (`pg_drill_measure`: approval to health
/// green), else the drill's duration; RPO the largest `rpo_seconds` a step recorded, none if no
/// step recorded one (the measuring step was skipped): then the targets are not called met.
/// The targets are the ones the measurement was made against ([`recorded_duration`]), else
/// `[targets]`.
fn drill(r: &FinishedRun, targets: (Duration, Duration)) -> Drill {
    let rto_target = recorded_duration(&r.steps, "rto_target_seconds").unwrap_or(targets.0);
    let rpo_target = recorded_duration(&r.steps, "rpo_target_seconds").unwrap_or(targets.1);
    let rto = recorded_duration(&r.steps, "rto_seconds").unwrap_or_else(|| run_duration(r));
    let rpo = recorded_duration(&r.steps, "rpo_seconds");
    let rpo_bound_only = rpo_lower_bound_only(&r.steps);
    Drill {
        at: time(r.finished_at),
        rto,
        rpo,
        rto_target,
        rpo_target,
        met: r.state == "succeeded"
            && rto <= rto_target
            && rpo.is_some_and(|p| p <= rpo_target)
            && !rpo_bound_only,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(state: &str, steps: Vec<(&str, Option<serde_json::Value>)>) -> FinishedRun {
        FinishedRun {
            id: 1,
            state: state.into(),
            started_at: Some(1_000),
            finished_at: 61_000,
            steps: steps.into_iter().map(|(k, d)| (k.to_string(), d)).collect(),
        }
    }

    #[test]
    fn verification_reads_the_verify_step_report() {
        let r = run(
            "succeeded",
            vec![
                ("exec", None),
                (
                    "verify_backup",
                    Some(json!({ "passed": true, "duration_seconds": 12.5,
                                 "tables": { "a": {}, "b": {}, "c": {} } })),
                ),
            ],
        );
        let v = verification(&r);
        assert!(v.passed);
        assert_eq!(v.tables, 3);
        assert_eq!(v.duration, Duration::from_millis(12_500));
        assert_eq!(v.at, time(61_000));
        // A failed run failed, whatever its report says; no report: the run's duration.
        let v = verification(&run("failed", vec![("exec", None)]));
        assert!(!v.passed);
        assert_eq!(v.duration, Duration::from_secs(60));
        assert_eq!(v.tables, 0);
    }

    #[test]
    fn drill_compares_with_targets() {
        let targets = (Duration::from_secs(120), Duration::from_secs(30));
        let r = run(
            "succeeded",
            vec![("exec", Some(json!({ "rpo_seconds": 20.0 })))],
        );
        let d = drill(&r, targets);
        assert_eq!(d.rto, Duration::from_secs(60));
        assert_eq!(d.rpo, Some(Duration::from_secs(20)));
        assert!(d.met);
        let r = run(
            "succeeded",
            vec![("exec", Some(json!({ "rpo_seconds": 31 })))],
        );
        assert!(!drill(&r, targets).met);
        assert!(!drill(&run("failed", vec![]), targets).met);
        // The targets a measurement was made against win over `[targets]`.
        let r = run(
            "succeeded",
            vec![(
                "pg_drill_measure",
                Some(json!({ "rpo_seconds": 0.0, "rto_seconds": 100.0,
                             "rto_target_seconds": 60.0, "rpo_target_seconds": 900.0 })),
            )],
        );
        let d = drill(&r, targets);
        assert_eq!(d.rto_target, Duration::from_secs(60));
        assert!(!d.met, "100 s over the step's own 60 s target");
        // A measured RTO wins over the run's duration.
        let r = run(
            "succeeded",
            vec![(
                "pg_drill_measure",
                Some(json!({ "rpo_seconds": 0.0, "rto_seconds": 2.5 })),
            )],
        );
        let d = drill(&r, targets);
        assert_eq!(d.rto, Duration::from_millis(2_500));
        assert_eq!(d.rpo, Some(Duration::ZERO));
        // A drill whose measuring step was skipped (it records `measured: false`) measured
        // nothing: not met, and no RPO of 0 shown.
        let r = run(
            "succeeded",
            vec![("pg_drill_measure", Some(json!({ "measured": false })))],
        );
        let d = drill(&r, targets);
        assert_eq!(d.rpo, None);
        assert!(!d.met);
        // An RPO known only as a lower bound is not met, however small.
        let r = run(
            "succeeded",
            vec![(
                "pg_drill_measure",
                Some(json!({ "rpo_seconds": 1.5, "rpo_at_least": true, "rto_seconds": 2.5 })),
            )],
        );
        assert!(!drill(&r, targets).met);
        // Numbers no duration can hold (a step may record anything) neither panic nor count.
        let r = run(
            "succeeded",
            vec![(
                "exec",
                Some(
                    json!({ "rpo_seconds": 1e300, "rto_seconds": 1e300, "passed": true,
                             "duration_seconds": 1e300 }),
                ),
            )],
        );
        let d = drill(&r, targets);
        assert_eq!((d.rto, d.rpo), (Duration::from_secs(60), None));
        assert!(!d.met);
    }

    #[test]
    fn schedule_results_from_the_newest_fire() {
        let status = |run: Option<&str>, error: Option<&str>| ScheduleStatus {
            name: "weekly".into(),
            command: "/dr verify-backup latest".into(),
            runbook: "verify-backup".into(),
            last_run: run.map(|s| (3, s.to_string())),
            last_at: Some(time(61_000)),
            last_error: error.map(str::to_string),
            next_due: Some("2030-01-07T03:00:00Z".into()),
            overdue: true,
        };
        let cases = [
            (Some("succeeded"), None, ScheduleResult::Passed),
            (Some("awaiting_approval"), None, ScheduleResult::Pending),
            (Some("running"), None, ScheduleResult::Pending),
            (Some("failed"), None, ScheduleResult::Failed),
            (Some("expired"), None, ScheduleResult::Failed),
            (Some("denied"), None, ScheduleResult::Failed),
            (None, Some("{\"NoSuchRunbook\":{}}"), ScheduleResult::Failed),
            (None, None, ScheduleResult::None),
        ];
        for (run, error, want) in cases {
            let e = schedule_evidence(&status(run, error));
            assert_eq!(e.last_result, want, "{run:?} {error:?}");
        }
        let e = schedule_evidence(&status(Some("succeeded"), None));
        assert_eq!(e.runbook, "verify-backup");
        assert_eq!(e.last_at, Some(time(61_000)));
        assert_eq!(
            e.next_due.unwrap().to_rfc3339(),
            "2030-01-07T03:00:00+00:00"
        );
        assert!(e.overdue);
    }

    #[test]
    fn impact_sets_component_status() {
        assert_eq!(component_status(Impact::None), ComponentStatus::Operational);
        assert_eq!(
            component_status(Impact::Critical),
            ComponentStatus::MajorOutage
        );
    }
}
