//! Reads a report's [`Report`] from the store. An incident's scope: the runs it names (opened
//! by one, written to by one's steps) and every other run requested while it was open; the
//! audit rows of those runs; the commands, checklist ticks and incident changes made while it
//! was open (and up to [`TAIL_MS`] after); monitor alerts up to [`DETECTION_LOOKBACK_MS`]
//! before it; its outbox rows; the checklists of its runs and those posted on their own while it was open.
//! A run's scope: the run, its incident's changes, the ticks made while it ran and its
//! checklists.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::{
    Figure, NoticeCount, Report, RunPart, Subject,
    timeline::{self, Input, Notice, StepInfo},
};
use crate::{
    app::App,
    store::{
        audit::AuditRow, incidents::IncidentUpdateRow, now_ms, outbox::OutboxRow, runs::RunState,
    },
};

/// How long before an incident a monitor alert still counts as its detection.
pub const DETECTION_LOOKBACK_MS: i64 = 3_600_000;
/// How long after the end of the scope (the incident's resolve, the run's end) rows still
/// count: the resolve's own audit row and command are written just after its timestamp.
pub const TAIL_MS: i64 = 60_000;
/// Failed notifications whose errors a report lists, per channel.
const ERRORS_SHOWN: usize = 3;

/// The report on `subject`, or `None` when there is no such incident or run.
pub async fn build(app: &App, subject: Subject) -> anyhow::Result<Option<Report>> {
    let store = &app.store;
    let now = now_ms();
    let (incident, run_ids, from, to) = match subject {
        Subject::Incident(id) => {
            let Some(i) = store.incident(id).await? else {
                return Ok(None);
            };
            let updates = store.incident_updates(id).await?;
            let to = i.resolved_at.unwrap_or(now);
            let mut runs: BTreeSet<i64> = i.run_id.into_iter().collect();
            runs.extend(
                updates
                    .iter()
                    .filter_map(|u| source_run(u.source.as_deref())),
            );
            runs.extend(store.runs_created_between(i.created_at, to).await?);
            (Some((i, updates)), runs, None, to)
        }
        Subject::Run(id) => {
            let Some(r) = store.run(id).await? else {
                return Ok(None);
            };
            let incident = match store.incident_of_run(id).await? {
                Some(i) => match store.incident(i).await? {
                    Some(row) => Some((row, store.incident_updates(i).await?)),
                    None => None,
                },
                None => None,
            };
            let to = r.finished_at.unwrap_or(now);
            (incident, BTreeSet::from([id]), Some(r.created_at), to)
        }
    };
    let mut runs = Vec::new();
    let mut steps = BTreeMap::new();
    let mut records = Vec::new();
    for id in &run_ids {
        let Some(run) = store.run(*id).await? else {
            continue;
        };
        let rows = store.steps(*id).await?;
        steps.insert(
            *id,
            rows.iter()
                .map(|s| StepInfo {
                    kind: s.kind.clone(),
                    destructive: s.destructive,
                })
                .collect(),
        );
        records.extend(store.step_records(*id).await?);
        let mut requests = Vec::new();
        for req in store.requests_of(*id).await? {
            let approvals = store.approvals(req.id).await?;
            requests.push((req, approvals));
        }
        runs.push(RunPart {
            run,
            steps: rows,
            requests,
        });
    }
    let from = match (&incident, from) {
        (_, Some(f)) => f,
        (Some((i, _)), None) => runs
            .iter()
            .map(|r| r.run.created_at)
            .chain([i.created_at])
            .min()
            .unwrap_or(i.created_at),
        (None, None) => now,
    };
    let incident_id = incident.as_ref().map(|(i, _)| i.id);
    let mut audit: BTreeMap<i64, AuditRow> = BTreeMap::new();
    for id in &run_ids {
        audit.extend(
            store
                .audit_of_run(*id)
                .await?
                .into_iter()
                .map(|r| (r.seq, r)),
        );
    }
    let around = store
        .audit_between(from - DETECTION_LOOKBACK_MS, to + TAIL_MS)
        .await?;
    let by_incident = matches!(subject, Subject::Incident(_));
    for r in around {
        if in_scope(&r, from, incident_id, &run_ids, by_incident) {
            audit.insert(r.seq, r);
        }
    }
    let audit: Vec<AuditRow> = audit.into_values().collect();
    let outbox = notices(app, incident_id, &run_ids, &audit).await?;
    let recovery_run = recovery_run(&runs, incident.as_ref().and_then(|(i, _)| i.run_id));
    let timeline = timeline::build(&Input {
        audit: audit.clone(),
        declared_at: incident.as_ref().map(|(i, _)| i.created_at),
        recovery_run,
        steps,
        notices: outbox
            .iter()
            .map(|o| Notice {
                at: o.created_at,
                channel: o.channel.clone(),
                key: o.key.clone(),
                state: o.state.clone(),
                anchor: anchor(&o.key, incident.as_ref().map(|(_, u)| u.as_slice()), &audit),
            })
            .collect(),
    });
    let figures = figures(app, &records, &timeline);
    let run_list: Vec<i64> = run_ids.iter().copied().collect();
    let checklists = store
        .report_checklists(from, to + TAIL_MS, &run_list)
        .await?;
    let title = match (&incident, subject) {
        (Some((i, _)), Subject::Incident(_)) => format!("Incident {}: {}", i.id, i.name),
        (_, Subject::Run(id)) => match runs.first() {
            Some(r) => format!("Run {id}: {}", r.run.runbook),
            None => format!("Run {id}"),
        },
        (None, Subject::Incident(id)) => format!("Incident {id}"),
    };
    Ok(Some(Report {
        subject,
        title,
        generated_at: now,
        incident,
        runs,
        recovery_run,
        timeline,
        figures,
        notices: counts(&outbox),
        checklists,
    }))
}

/// The audit row written in the same transaction as the outbox row `key`: the incident
/// change of a chat or Statuspage update (the k-th timeline entry goes with the k-th
/// `incident.*` row), the resolve for the report link, the alert for a monitor message.
fn anchor(key: &str, updates: Option<&[IncidentUpdateRow]>, audit: &[AuditRow]) -> Option<i64> {
    let detail = |r: &AuditRow| serde_json::from_str::<Value>(&r.detail).unwrap_or(Value::Null);
    let parts: Vec<&str> = key.split(':').collect();
    match parts.as_slice() {
        ["chat", _, "incident", id, "update", uid]
        | ["statuspage", "incident", id, "update", uid] => {
            let (id, uid): (i64, i64) = (id.parse().ok()?, uid.parse().ok()?);
            let k = updates?.iter().position(|u| u.id == uid)?;
            audit
                .iter()
                .filter(|r| r.action.starts_with("incident.") && detail(r)["incident"] == id)
                .nth(k)
                .map(|r| r.seq)
        }
        ["report", _, "incident", id] => {
            let id: i64 = id.parse().ok()?;
            audit
                .iter()
                .find(|r| r.action == "incident.resolved" && detail(r)["incident"] == id)
                .map(|r| r.seq)
        }
        ["monitor", _, region, "down", episode] => audit
            .iter()
            .find(|r| {
                let d = detail(r);
                r.action == "monitor.down"
                    && d["region"] == *region
                    && d["episode"].as_i64() == episode.parse().ok()
            })
            .map(|r| r.seq),
        _ => None,
    }
}

/// The run of a timeline entry's source `run:<id>:step:<index>`.
fn source_run(source: Option<&str>) -> Option<i64> {
    source?
        .strip_prefix("run:")?
        .split(':')
        .next()?
        .parse()
        .ok()
}

fn in_scope(
    r: &AuditRow,
    from: i64,
    incident: Option<i64>,
    runs: &BTreeSet<i64>,
    by_incident: bool,
) -> bool {
    let detail: Value = serde_json::from_str(&r.detail).unwrap_or(Value::Null);
    match r.action.as_str() {
        "monitor.down" | "monitor.up" => true,
        a if a.starts_with("incident.") => {
            incident.is_some() && detail["incident"].as_i64() == incident
        }
        "checklist.tick" => r.at >= from,
        "command" | "click" => {
            r.at >= from
                && match r.run_id {
                    Some(id) => runs.contains(&id),
                    None => by_incident,
                }
        }
        _ => false,
    }
}

/// The run whose approval and steps make the milestones: among destructive (not dry) runs,
/// one that succeeded (the incident's own first), else one that went ahead (the incident's own,
/// else the latest); a run that expired, was denied or voided before it started is taken only
/// when no run went ahead.
fn recovery_run(runs: &[RunPart], incident_run: Option<i64>) -> Option<i64> {
    let mut candidates: Vec<Candidate> = runs
        .iter()
        .filter(|r| r.run.destructive && !r.run.dry_run)
        .map(|r| Candidate {
            id: r.run.id,
            started: r.run.started_at.is_some(),
            succeeded: r.run.state == RunState::Succeeded,
        })
        .collect();
    candidates.sort_by_key(|c| c.id);
    pick_recovery_run(&candidates, incident_run)
}

/// What `recovery_run` weighs of a run.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    id: i64,
    started: bool,
    succeeded: bool,
}

fn pick_recovery_run(runs: &[Candidate], incident_run: Option<i64>) -> Option<i64> {
    let own = |ok: fn(&Candidate) -> bool| {
        incident_run.filter(|id| runs.iter().any(|r| r.id == *id && ok(r)))
    };
    own(|r| r.succeeded)
        .or_else(|| runs.iter().find(|r| r.succeeded).map(|r| r.id))
        .or_else(|| own(|r| r.started))
        .or_else(|| runs.iter().rev().find(|r| r.started).map(|r| r.id))
        .or_else(|| own(|_| true))
        .or_else(|| runs.first().map(|r| r.id))
}

async fn notices(
    app: &App,
    incident: Option<i64>,
    runs: &BTreeSet<i64>,
    audit: &[AuditRow],
) -> anyhow::Result<Vec<OutboxRow>> {
    let mut prefixes = Vec::new();
    let mut exact = BTreeSet::new();
    if let Some(id) = incident {
        prefixes.push(format!("statuspage:incident:{id}:"));
        for p in ["slack", "discord"] {
            prefixes.push(format!("chat:{p}:incident:{id}:"));
            prefixes.push(format!("reminder:{p}:incident:{id}:"));
            // The link's key ends with the id: as a prefix it also matches incidents 10-19,
            // 100… of incident 1, so only the exact key is kept below.
            let link = super::link::key(p, id);
            exact.insert(link.clone());
            prefixes.push(link);
        }
    }
    for id in runs {
        prefixes.push(format!("email:run:{id}:"));
    }
    for r in audit.iter().filter(|r| r.action == "monitor.down") {
        let d: Value = serde_json::from_str(&r.detail).unwrap_or(Value::Null);
        for p in ["slack", "discord"] {
            let key = format!(
                "monitor:{p}:{}:down:{}",
                d["region"].as_str().unwrap_or(""),
                d["episode"].as_i64().unwrap_or(0)
            );
            exact.insert(key.clone());
            prefixes.push(key);
        }
    }
    let rows = app.store.outbox_with_prefixes(&prefixes).await?;
    Ok(rows
        .into_iter()
        .filter(|o| {
            !(o.key.starts_with("monitor:") || o.key.starts_with("report:"))
                || exact.contains(&o.key)
        })
        .collect())
}

fn counts(rows: &[OutboxRow]) -> Vec<NoticeCount> {
    let mut by: BTreeMap<&str, NoticeCount> = BTreeMap::new();
    for o in rows {
        let c = by.entry(o.channel.as_str()).or_insert_with(|| NoticeCount {
            channel: o.channel.clone(),
            ..Default::default()
        });
        c.total += 1;
        match o.state.as_str() {
            "delivered" => c.delivered += 1,
            "failed" => {
                c.failed += 1;
                if c.errors.len() < ERRORS_SHOWN {
                    c.errors.push(
                        o.last_error
                            .clone()
                            .unwrap_or_else(|| "no error kept".into()),
                    );
                }
            }
            _ => c.open += 1,
        }
    }
    by.into_values().collect()
}

/// RTO as the drill measured it (approval to health green) and as the timeline shows it
/// (detection to verification); RPO as a step recorded it. The measured figures are judged as
/// the status page judges the drill: against the targets the measurement was made against
/// (else `[targets]`), and an RPO known only as a lower bound is never met. The timeline's RTO
/// is against `[targets]`.
fn figures(app: &App, records: &[(String, Option<Value>)], t: &timeline::Timeline) -> Vec<Figure> {
    use crate::status_page::{recorded, recorded_duration, rpo_lower_bound_only};
    let targets = &app.settings.config.targets;
    let secs = |s: &str| {
        humantime::parse_duration(s)
            .unwrap_or_default()
            .as_secs_f64()
    };
    let measured_target = |key: &str, configured: &str| match recorded_duration(records, key) {
        Some(d) => (d.as_secs_f64(), humantime::format_duration(d).to_string()),
        None => (secs(configured), configured.to_string()),
    };
    let mut out = Vec::new();
    if let Some(rto) = recorded(records, "rto_seconds") {
        let (target_seconds, target) = measured_target("rto_target_seconds", &targets.rto);
        out.push(Figure {
            label: "RTO, measured by the drill (approval → health green)".into(),
            seconds: Some(rto),
            at_least: false,
            target_seconds,
            target,
        });
    }
    out.push(Figure {
        label: "RTO, from the timeline (detection → verification)".into(),
        seconds: t.total_ms.map(|ms| ms as f64 / 1000.0),
        at_least: false,
        target_seconds: secs(&targets.rto),
        target: targets.rto.clone(),
    });
    let at_least = rpo_lower_bound_only(records);
    let (target_seconds, target) = measured_target("rpo_target_seconds", &targets.rpo);
    out.push(Figure {
        label: if at_least {
            "RPO, measured (data lost before the disaster; at least this, more may be lost)"
        } else {
            "RPO, measured (data lost before the disaster)"
        }
        .into(),
        seconds: recorded(records, "rpo_seconds"),
        at_least,
        target_seconds,
        target,
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recovery_run_is_one_that_went_ahead() {
        let c = |id, started, succeeded| Candidate {
            id,
            started,
            succeeded,
        };
        // Run 5 expired unapproved, run 6 succeeded: 6, whichever the incident names.
        let runs = [c(5, false, false), c(6, true, true)];
        assert_eq!(pick_recovery_run(&runs, None), Some(6));
        assert_eq!(pick_recovery_run(&runs, Some(5)), Some(6));
        // A drill that failed (the incident's run), then a recovery that succeeded.
        let runs = [c(3, true, false), c(4, true, true)];
        assert_eq!(pick_recovery_run(&runs, Some(3)), Some(4));
        // Nothing succeeded: the incident's own run if it went ahead, else the latest that did.
        let runs = [c(3, true, false), c(4, true, false), c(5, false, false)];
        assert_eq!(pick_recovery_run(&runs, Some(3)), Some(3));
        assert_eq!(pick_recovery_run(&runs, None), Some(4));
        // Nothing went ahead: the incident's run, else the first.
        let runs = [c(7, false, false), c(8, false, false)];
        assert_eq!(pick_recovery_run(&runs, Some(8)), Some(8));
        assert_eq!(pick_recovery_run(&runs, None), Some(7));
        assert_eq!(pick_recovery_run(&[], Some(1)), None);
    }

    #[test]
    fn step_sources_name_their_run() {
        assert_eq!(source_run(Some("run:12:step:3")), Some(12));
        assert_eq!(source_run(Some("x:12")), None);
        assert_eq!(source_run(None), None);
    }
}
