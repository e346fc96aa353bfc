//! What `drbot demo` prints: one line per finished step, the measured RPO and RTO against the
//! targets, the failover time without the configured waits, and (with `--json`) the whole
//! report as one JSON object, which `bot/bench/demo/run.sh` aggregates.

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

/// One step of a run, as the report shows it.
#[derive(Debug, Clone, Serialize)]
pub struct StepLine {
    /// Position, from 1.
    pub n: usize,
    /// Step name.
    pub name: String,
    /// Step type.
    pub kind: String,
    /// Final state.
    pub state: String,
    /// Wall time of the last attempt, ms.
    pub duration_ms: i64,
    /// Of that, the wait its parameters configure ([`step_wait`]), ms.
    pub configured_wait_ms: i64,
    /// The step's one-line summary.
    pub summary: String,
}

/// One run of the demo.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// Run id.
    pub run: i64,
    /// Final run state.
    pub state: String,
    /// Its steps.
    pub steps: Vec<StepLine>,
}

/// The drill's measured figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Figures {
    /// Acknowledged markers missing on DR.
    pub rpo_rows: i64,
    /// Their time gap, s.
    pub rpo_seconds: f64,
    /// Approval to health green, s.
    pub rto_seconds: f64,
    /// Disaster to health green, s.
    pub outage_seconds: f64,
    /// Waits the runbook configures inside that time (disaster warmup, health-check
    /// intervals), s.
    pub configured_waits_seconds: f64,
    /// `rto_seconds` minus `configured_waits_seconds`: what drbot and PostgreSQL took.
    pub failover_seconds_excluding_waits: f64,
    /// `[targets] rto`, s.
    pub rto_target_seconds: f64,
    /// `[targets] rpo`, s.
    pub rpo_target_seconds: f64,
    /// Both within target.
    pub met: bool,
}

/// The whole demo, for `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct DemoReport {
    /// Everything worked and the drill met its targets.
    pub ok: bool,
    /// The demo's directory.
    pub root: String,
    /// The config written for it.
    pub config: String,
    /// The status page.
    pub status_url: String,
    /// The backup verification.
    pub verify_backup: Option<RunReport>,
    /// The drill.
    pub drill: Option<RunReport>,
    /// The drill's figures.
    pub figures: Option<Figures>,
    /// What went wrong, if something did.
    pub error: Option<String>,
}

/// A step line for the terminal.
pub fn step_text(s: &StepLine) -> String {
    let mark = match s.state.as_str() {
        "succeeded" => "ok  ",
        "failed" => "FAIL",
        "skipped" => "skip",
        _ => "... ",
    };
    format!(
        "  {mark} {:>2}. {:<62} {:>7.2} s  {}",
        s.n,
        s.name,
        s.duration_ms as f64 / 1000.0,
        s.summary
    )
}

fn seconds(v: &Value) -> Option<Duration> {
    v.as_str()
        .and_then(|s| humantime::parse_duration(s.trim()).ok())
}

/// The wait a step's parameters configure: a disaster's warmup; for an `until` health check,
/// the intervals between the passes it needs.
pub fn step_wait(s: &recovery::plan::PlannedStep) -> Duration {
    match s.kind.as_str() {
        "pg_drill_disaster" => seconds(&s.params["warmup"]).unwrap_or(Duration::from_secs(2)),
        "http_check" if s.params["mode"] == "until" => {
            let count = s.params["count"].as_u64().unwrap_or(1).max(1) as u32;
            let interval = seconds(&s.params["interval"]).unwrap_or(Duration::from_secs(5));
            interval * (count - 1)
        }
        _ => Duration::ZERO,
    }
}

/// Waits a drill plan configures between approval and health green (the steps before its
/// measurement).
pub fn configured_waits(plan: &recovery::plan::Plan) -> Duration {
    plan.steps
        .iter()
        .take_while(|s| s.kind != "pg_drill_measure")
        .map(step_wait)
        .sum()
}

/// The figures from the measurement step's data and the plan's waits.
pub fn figures(measured: &Value, waits: Duration) -> Option<Figures> {
    if measured["measured"] != true {
        return None;
    }
    let f = |k: &str| measured[k].as_f64().unwrap_or(0.0);
    let rto = f("rto_seconds");
    Some(Figures {
        rpo_rows: measured["rpo_rows"].as_i64().unwrap_or(0),
        rpo_seconds: f("rpo_seconds"),
        rto_seconds: rto,
        outage_seconds: f("outage_seconds"),
        configured_waits_seconds: waits.as_secs_f64(),
        failover_seconds_excluding_waits: (rto - waits.as_secs_f64()).max(0.0),
        rto_target_seconds: f("rto_target_seconds"),
        rpo_target_seconds: f("rpo_target_seconds"),
        met: measured["met"] == true,
    })
}

fn human(secs: f64) -> String {
    match Duration::try_from_secs_f64(secs.max(0.0)) {
        Ok(d) => humantime::format_duration(d).to_string(),
        Err(_) => format!("{secs} s"),
    }
}

/// The result lines (`RPO: …`, `RTO: …`, failover without waits).
pub fn figures_text(f: &Figures) -> String {
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    format!(
        "  RPO: {} rows ({:.2} s of acknowledged commits lost); target {}: {}\n\
         \x20 RTO: {:.2} s from approval to health green on the DR side; target {}: {}\n\
         \x20 failover without configured waits: {:.2} s ({:.2} s of waits: disaster warmup, \
         health-check intervals); outage seen by clients: {:.2} s",
        f.rpo_rows,
        f.rpo_seconds,
        human(f.rpo_target_seconds),
        verdict(f.rpo_seconds <= f.rpo_target_seconds),
        f.rto_seconds,
        human(f.rto_target_seconds),
        verdict(f.rto_seconds <= f.rto_target_seconds),
        f.failover_seconds_excluding_waits,
        f.configured_waits_seconds,
        f.outage_seconds,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn figures_subtract_the_configured_waits() {
        let m = json!({ "measured": true, "rpo_rows": 0, "rpo_seconds": 0.0, "rto_seconds": 3.1,
                        "outage_seconds": 1.0, "rto_target_seconds": 14400.0,
                        "rpo_target_seconds": 900.0, "met": true });
        let f = figures(&m, Duration::from_millis(2_400)).unwrap();
        assert!((f.failover_seconds_excluding_waits - 0.7).abs() < 1e-9);
        let t = figures_text(&f);
        assert!(t.contains("RPO: 0 rows"), "{t}");
        assert!(t.contains("RTO: 3.10 s"), "{t}");
        assert!(t.contains("target 4h: met"), "{t}");
        assert!(figures(&json!({ "measured": false }), Duration::ZERO).is_none());
    }
}
