//! A realistic sample [`PageModel`] (a DR failover in progress, one past incident, evidence),
//! for previews and tests.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::model::{
    BackupVerification, Component, ComponentStatus, Drill, Evidence, Impact, Incident,
    IncidentStatus, PageModel, ScheduleEvidence, ScheduleResult, Update,
};

/// A sample page as of `now`: components in several states, the seed plan's "Service
/// Degradation - DR Activated" incident with two updates, one resolved incident from last
/// week, passing backup and drill evidence, and three DR testing schedules (one passed, one
/// failed and overdue, one not due yet).
pub fn sample_model(now: DateTime<Utc>) -> PageModel {
    let ago = |minutes: i64| now - TimeDelta::minutes(minutes);
    let component = |name: &str, status, description: &str| Component {
        name: name.into(),
        status,
        description: description.into(),
    };
    PageModel {
        title: "Example Corp status".into(),
        generated_at: now,
        components: vec![
            component("API", ComponentStatus::PartialOutage, "Public REST API"),
            component("Web app", ComponentStatus::DegradedPerformance, ""),
            component(
                "Database",
                ComponentStatus::Operational,
                "PostgreSQL, two regions",
            ),
            component("Email delivery", ComponentStatus::Operational, ""),
        ],
        current: Some(Incident {
            id: "42".into(),
            name: "Service Degradation - DR Activated".into(),
            status: IncidentStatus::Identified,
            impact: Impact::Major,
            started_at: ago(35),
            resolved_at: None,
            updates: vec![
                Update {
                    at: ago(35),
                    status: IncidentStatus::Investigating,
                    body: "We are experiencing issues in our primary region. DR site activated."
                        .into(),
                },
                Update {
                    at: ago(12),
                    status: IncidentStatus::Identified,
                    body: "Traffic is moving to the DR region (us-west-2).\nExpect higher \
                           latency for up to 15 minutes. Next update within the hour."
                        .into(),
                },
            ],
        }),
        history: vec![Incident {
            id: "41".into(),
            name: "Elevated API error rates".into(),
            status: IncidentStatus::Resolved,
            impact: Impact::Minor,
            started_at: ago(7 * 24 * 60),
            resolved_at: Some(ago(7 * 24 * 60 - 47)),
            updates: vec![
                Update {
                    at: ago(7 * 24 * 60),
                    status: IncidentStatus::Investigating,
                    body: "Some API requests fail with 503.".into(),
                },
                Update {
                    at: ago(7 * 24 * 60 - 20),
                    status: IncidentStatus::Monitoring,
                    body: "A bad deploy was rolled back; error rates are back to normal.".into(),
                },
                Update {
                    at: ago(7 * 24 * 60 - 47),
                    status: IncidentStatus::Resolved,
                    body: "Resolved.".into(),
                },
            ],
        }],
        evidence: Evidence {
            last_backup_verification: Some(BackupVerification {
                at: ago(6 * 60),
                passed: true,
                duration: Duration::from_secs(312),
                tables: 87,
            }),
            last_drill: Some(Drill {
                at: ago(3 * 24 * 60),
                rto: Duration::from_secs(9 * 60 + 40),
                rpo: Some(Duration::from_secs(4)),
                rto_target: Duration::from_secs(15 * 60),
                rpo_target: Duration::from_secs(60),
                met: true,
            }),
            schedules: vec![
                ScheduleEvidence {
                    name: "weekly-verify".into(),
                    runbook: "verify-backup".into(),
                    last_result: ScheduleResult::Passed,
                    last_at: Some(ago(6 * 60)),
                    next_due: Some(ago(6 * 60) + TimeDelta::days(7)),
                    overdue: false,
                },
                ScheduleEvidence {
                    name: "monthly-failover-test".into(),
                    runbook: "failover".into(),
                    last_result: ScheduleResult::Failed,
                    last_at: Some(ago(40 * 24 * 60)),
                    next_due: Some(ago(40 * 24 * 60) + TimeDelta::days(61)),
                    overdue: true,
                },
                ScheduleEvidence {
                    name: "quarterly-drill".into(),
                    runbook: "drill".into(),
                    last_result: ScheduleResult::None,
                    last_at: None,
                    next_due: Some(ago(-(20 * 24 * 60))),
                    overdue: false,
                },
            ],
        },
    }
}
