//! The HTML status page: the model is turned into a view of display-ready strings, then
//! rendered by minijinja from `notifier/templates/page/status.html` with HTML autoescaping.
//! No JavaScript, no external assets: the CSS is inlined from [`PALETTE`] and the template.

use std::sync::LazyLock;

use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde::Serialize;

use super::format::{Time, clean, human_duration};
use super::model::{
    ComponentStatus, Incident, IncidentStatus, PageModel, ScheduleEvidence, ScheduleResult,
};
use super::{FEED_HREF, HISTORY_HREF, JSON_HREF, PageError};

/// The template source, compiled into the binary.
pub const TEMPLATE: &str = include_str!("../../templates/page/status.html");

const TEMPLATE_NAME: &str = "status.html";

/// Colours of a status badge: text on background, with a border in the text colour.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Swatch {
    /// CSS class suffix: the status wire name, or `page`, `muted`, `link` for the page itself.
    pub class: &'static str,
    /// Text colour, `#rrggbb`.
    pub fg: &'static str,
    /// Background colour, `#rrggbb`.
    pub bg: &'static str,
}

/// Every colour pair the page uses. Each must reach WCAG AA contrast (4.5:1); a unit test checks.
pub const PALETTE: [Swatch; 8] = [
    Swatch {
        class: "page",
        fg: "#1a1a1a",
        bg: "#ffffff",
    },
    Swatch {
        class: "muted",
        fg: "#4a4a4a",
        bg: "#ffffff",
    },
    Swatch {
        class: "link",
        fg: "#0645ad",
        bg: "#ffffff",
    },
    Swatch {
        class: "operational",
        fg: "#0b5323",
        bg: "#e3f4e8",
    },
    Swatch {
        class: "degraded_performance",
        fg: "#6b4500",
        bg: "#fff4d6",
    },
    Swatch {
        class: "partial_outage",
        fg: "#8a3a00",
        bg: "#ffe8d9",
    },
    Swatch {
        class: "major_outage",
        fg: "#9b111e",
        bg: "#fde7e9",
    },
    Swatch {
        class: "under_maintenance",
        fg: "#1d4f91",
        bg: "#e4eefb",
    },
];

static ENV: LazyLock<Result<Environment<'static>, minijinja::Error>> = LazyLock::new(|| {
    let mut env = Environment::new();
    env.set_auto_escape_callback(|_| AutoEscape::Html);
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.add_template(TEMPLATE_NAME, TEMPLATE)?;
    Ok(env)
});

/// Renders the public status page as a complete HTML5 document.
///
/// All user text (incident names, update bodies, component names) is HTML-escaped. The page
/// links to its JSON and Atom siblings relatively ([`JSON_HREF`], [`FEED_HREF`]), so it must be
/// served at [`super::PAGE_PATH`]. An error means the built-in template is broken: a bug.
pub fn render_html(model: &PageModel) -> Result<String, PageError> {
    let env = ENV
        .as_ref()
        .map_err(|e| PageError::Template(e.to_string()))?;
    let template = env
        .get_template(TEMPLATE_NAME)
        .map_err(|e| PageError::Template(e.to_string()))?;
    template
        .render(minijinja::value::Serde(View::new(model)))
        .map_err(|e| PageError::Template(format!("{e:#}")))
}

#[derive(Serialize)]
struct View {
    title: String,
    generated: Time,
    overall: Overall,
    palette: &'static [Swatch],
    components: Vec<ComponentView>,
    current: Option<IncidentView>,
    history: Vec<IncidentView>,
    backup: Option<BackupView>,
    drill: Option<DrillView>,
    schedules: Vec<ScheduleView>,
    json_href: &'static str,
    feed_href: &'static str,
    history_href: &'static str,
}

#[derive(Serialize)]
struct Overall {
    class: &'static str,
    label: String,
}

#[derive(Serialize)]
struct ComponentView {
    name: String,
    class: &'static str,
    label: &'static str,
    description: String,
}

#[derive(Serialize)]
struct IncidentView {
    anchor: String,
    name: String,
    status_class: &'static str,
    status_label: &'static str,
    impact: &'static str,
    started: Time,
    resolved: Option<Time>,
    lasted: Option<String>,
    updates: Vec<UpdateView>,
}

#[derive(Serialize)]
struct UpdateView {
    at: Time,
    status_label: &'static str,
    body: String,
}

#[derive(Serialize)]
struct BackupView {
    at: Time,
    passed: bool,
    duration: String,
    tables: u64,
}

#[derive(Serialize)]
struct DrillView {
    at: Time,
    met: bool,
    measured: bool,
    rto: String,
    rpo: String,
    rto_target: String,
    rpo_target: String,
}

#[derive(Serialize)]
struct ScheduleView {
    name: String,
    runbook: String,
    result_class: &'static str,
    result_label: &'static str,
    last_at: Option<Time>,
    next_due: Option<Time>,
    overdue: bool,
}

fn schedule(s: &ScheduleEvidence) -> ScheduleView {
    ScheduleView {
        name: clean(&s.name),
        runbook: clean(&s.runbook),
        result_class: match s.last_result {
            ScheduleResult::Passed => "operational",
            ScheduleResult::Failed => "major_outage",
            ScheduleResult::Pending => "under_maintenance",
            ScheduleResult::None => "muted",
        },
        result_label: s.last_result.label(),
        last_at: s.last_at.as_ref().map(Time::new),
        next_due: s.next_due.as_ref().map(Time::new),
        overdue: s.overdue,
    }
}

impl View {
    fn new(m: &PageModel) -> View {
        View {
            title: clean(&m.title),
            generated: Time::new(&m.generated_at),
            overall: overall(m),
            palette: &PALETTE,
            components: m
                .components
                .iter()
                .map(|c| ComponentView {
                    name: clean(&c.name),
                    class: c.status.as_str(),
                    label: c.status.label(),
                    description: clean(&c.description),
                })
                .collect(),
            current: m.current.as_ref().map(incident),
            history: m.history.iter().map(incident).collect(),
            backup: m
                .evidence
                .last_backup_verification
                .as_ref()
                .map(|b| BackupView {
                    at: Time::new(&b.at),
                    passed: b.passed,
                    duration: human_duration(b.duration),
                    tables: b.tables,
                }),
            drill: m.evidence.last_drill.as_ref().map(|d| DrillView {
                at: Time::new(&d.at),
                met: d.met,
                measured: d.rpo.is_some(),
                rto: human_duration(d.rto),
                rpo: d
                    .rpo
                    .map(human_duration)
                    .unwrap_or_else(|| "not measured".to_string()),
                rto_target: human_duration(d.rto_target),
                rpo_target: human_duration(d.rpo_target),
            }),
            schedules: m.evidence.schedules.iter().map(schedule).collect(),
            json_href: JSON_HREF,
            feed_href: FEED_HREF,
            history_href: HISTORY_HREF,
        }
    }
}

/// The banner: the worst component status, or "incident in progress" when components are all
/// operational but an incident is open.
fn overall(m: &PageModel) -> Overall {
    let worst = m
        .components
        .iter()
        .map(|c| c.status)
        .max_by_key(|s| s.severity())
        .unwrap_or(ComponentStatus::Operational);
    match (worst, &m.current) {
        (ComponentStatus::Operational, None) => Overall {
            class: worst.as_str(),
            label: "All systems operational".into(),
        },
        (ComponentStatus::Operational, Some(i)) => Overall {
            class: ComponentStatus::DegradedPerformance.as_str(),
            label: format!("Incident in progress: {}", i.status.label()),
        },
        (s, _) => Overall {
            class: s.as_str(),
            label: s.label().into(),
        },
    }
}

/// A fragment id that is safe in an attribute and a URL: the id's ASCII alphanumerics,
/// `-` and `_`, everything else as `-`.
pub(crate) fn anchor(id: &str) -> String {
    let safe: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("incident-{safe}")
}

fn incident(i: &Incident) -> IncidentView {
    IncidentView {
        anchor: anchor(&i.id),
        name: clean(&i.name),
        status_class: match i.status {
            IncidentStatus::Investigating | IncidentStatus::Identified => "partial_outage",
            IncidentStatus::Monitoring => "under_maintenance",
            IncidentStatus::Resolved => "operational",
        },
        status_label: i.status.label(),
        impact: i.impact.label(),
        started: Time::new(&i.started_at),
        resolved: i.resolved_at.as_ref().map(Time::new),
        lasted: i
            .resolved_at
            .and_then(|r| (r - i.started_at).to_std().ok())
            .map(human_duration),
        updates: i
            .updates
            .iter()
            .rev()
            .map(|u| UpdateView {
                at: Time::new(&u.at),
                status_label: u.status.label(),
                body: clean(&u.body),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn luminance(hex: &str) -> f64 {
        let v = u32::from_str_radix(hex.trim_start_matches('#'), 16).unwrap();
        let ch = |shift: u32| {
            let c = f64::from((v >> shift) & 0xff) / 255.0;
            if c <= 0.03928 {
                c / 12.92
            } else {
                ((c + 0.055) / 1.055).powf(2.4)
            }
        };
        0.2126 * ch(16) + 0.7152 * ch(8) + 0.0722 * ch(0)
    }

    fn contrast(a: &str, b: &str) -> f64 {
        let (x, y) = (luminance(a), luminance(b));
        (x.max(y) + 0.05) / (x.min(y) + 0.05)
    }

    #[test]
    fn every_colour_pair_meets_wcag_aa() {
        for s in PALETTE {
            let r = contrast(s.fg, s.bg);
            assert!(
                r >= 4.5,
                "{}: {} on {} has contrast {r:.2}",
                s.class,
                s.fg,
                s.bg
            );
        }
        // And the contrast function itself is right: black on white is 21:1.
        assert!((contrast("#000000", "#ffffff") - 21.0).abs() < 1e-9);
        assert!(contrast("#777777", "#ffffff") < 4.5);
    }

    #[test]
    fn every_status_has_a_swatch() {
        for s in ComponentStatus::ALL {
            assert!(PALETTE.iter().any(|p| p.class == s.as_str()), "{s:?}");
        }
    }

    #[test]
    fn anchors_are_attribute_safe() {
        assert_eq!(anchor("42"), "incident-42");
        assert_eq!(anchor("a\"b <c>"), "incident-a-b--c-");
    }
}
