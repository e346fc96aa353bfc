//! `/status.json`: the page as JSON with a stable schema, described by the JSON Schema in
//! `notifier/templates/page/status.schema.json` ([`SCHEMA`]). Built field by field, so changes
//! to the Rust model never change the wire format by accident.

use serde_json::{Value, json};

use super::format::rfc3339;
use super::model::{ComponentStatus, Incident, PageModel};

/// The JSON Schema (draft 2020-12) that every [`render_json`] output satisfies.
pub const SCHEMA: &str = include_str!("../../templates/page/status.schema.json");

/// The value of the document's `schema_version`; bumped on any incompatible change.
pub const SCHEMA_VERSION: u64 = 1;

/// Renders the page as JSON. Times are RFC 3339 UTC strings (`…Z`), durations are seconds as
/// numbers, enums are the snake_case wire names (as on Atlassian Statuspage); `overall_status`
/// is the worst component status (`operational` when there are no components). Incident
/// updates are oldest first; `history` is newest first; `evidence.schedules` in config order.
pub fn render_json(model: &PageModel) -> Value {
    let overall = model
        .components
        .iter()
        .map(|c| c.status)
        .max_by_key(|s| s.severity())
        .unwrap_or(ComponentStatus::Operational);
    let ev = &model.evidence;
    json!({
        "schema_version": SCHEMA_VERSION,
        "title": model.title,
        "generated_at": rfc3339(&model.generated_at),
        "overall_status": overall.as_str(),
        "components": model.components.iter().map(|c| json!({
            "name": c.name,
            "status": c.status.as_str(),
            "description": c.description,
        })).collect::<Vec<_>>(),
        "current": model.current.as_ref().map(incident),
        "history": model.history.iter().map(incident).collect::<Vec<_>>(),
        "evidence": {
            "last_backup_verification": ev.last_backup_verification.as_ref().map(|b| json!({
                "at": rfc3339(&b.at),
                "passed": b.passed,
                "duration_seconds": b.duration.as_secs_f64(),
                "tables": b.tables,
            })),
            "last_drill": ev.last_drill.as_ref().map(|d| json!({
                "at": rfc3339(&d.at),
                "rto_seconds": d.rto.as_secs_f64(),
                "rpo_seconds": d.rpo.map(|r| r.as_secs_f64()),
                "rto_target_seconds": d.rto_target.as_secs_f64(),
                "rpo_target_seconds": d.rpo_target.as_secs_f64(),
                "met": d.met,
            })),
            "schedules": ev.schedules.iter().map(|s| json!({
                "name": s.name,
                "runbook": s.runbook,
                "last_result": s.last_result.as_str(),
                "last_at": s.last_at.as_ref().map(rfc3339),
                "next_due": s.next_due.as_ref().map(rfc3339),
                "overdue": s.overdue,
            })).collect::<Vec<_>>(),
        },
    })
}

fn incident(i: &Incident) -> Value {
    json!({
        "id": i.id,
        "name": i.name,
        "status": i.status.as_str(),
        "impact": i.impact.as_str(),
        "started_at": rfc3339(&i.started_at),
        "resolved_at": i.resolved_at.as_ref().map(rfc3339),
        "updates": i.updates.iter().map(|u| json!({
            "at": rfc3339(&u.at),
            "status": u.status.as_str(),
            "body": u.body,
        })).collect::<Vec<_>>(),
    })
}
