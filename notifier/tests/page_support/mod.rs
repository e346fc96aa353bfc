//! Shared fixtures for the status page tests: a fixed clock and a model full of hostile text.
#![allow(dead_code)]

use chrono::{DateTime, TimeDelta, Utc};
use notifier::page::{
    Component, ComponentStatus, Evidence, Impact, Incident, IncidentStatus, PageModel, Update,
    sample_model,
};

/// Markup, quotes, an entity, a `javascript:` URL and control characters.
pub const HOSTILE: &str = "<script>alert('x')</script><img src=x onerror=alert(1)> \"q\" &amp; ]]> \u{1b}\u{0} javascript:alert(2)";

/// A fixed instant so output is reproducible.
pub fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-26T14:05:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

/// The sample model with hostile text in every user-controlled string.
pub fn hostile_model() -> PageModel {
    let mut m = sample_model(now());
    m.title = format!("Status {HOSTILE}");
    m.components.push(Component {
        name: format!("Comp {HOSTILE}"),
        status: ComponentStatus::MajorOutage,
        description: format!("Desc {HOSTILE}"),
    });
    let current = m.current.as_mut().unwrap();
    current.id = format!("id {HOSTILE}");
    current.name = format!("Incident {HOSTILE}");
    current.updates.push(Update {
        at: now() - TimeDelta::minutes(1),
        status: IncidentStatus::Monitoring,
        body: format!("Body {HOSTILE}\nsecond line"),
    });
    m.history[0].name = format!("Old {HOSTILE}");
    m
}

/// No components, no incidents, no evidence.
pub fn empty_model() -> PageModel {
    PageModel {
        title: "Quiet status".into(),
        generated_at: now(),
        components: vec![],
        current: None,
        history: vec![],
        evidence: Evidence::default(),
    }
}

/// An open incident with no updates yet and an unresolved history entry: edge cases.
pub fn odd_model() -> PageModel {
    let mut m = empty_model();
    m.current = Some(Incident {
        id: "7".into(),
        name: "Just opened".into(),
        status: IncidentStatus::Investigating,
        impact: Impact::None,
        started_at: now(),
        resolved_at: None,
        updates: vec![],
    });
    m
}
