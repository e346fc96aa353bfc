//! The drill history page as HTML: each chart inline (its SVG from [`render_chart`]) with a
//! link to the SVG file and a table of the same numbers, rendered by minijinja from
//! `notifier/templates/page/history.html` with HTML autoescaping. No JavaScript.

use std::sync::LazyLock;

use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde::Serialize;

use super::super::format::{Time, clean, human_duration};
use super::super::{PALETTE, PageError, Swatch};
use super::STATUS_HREF;
use super::chart::{Chart, render_chart};
use super::model::HistoryModel;

/// The template source, compiled into the binary.
pub const HISTORY_TEMPLATE: &str = include_str!("../../../templates/page/history.html");

const TEMPLATE_NAME: &str = "history.html";

static ENV: LazyLock<Result<Environment<'static>, minijinja::Error>> = LazyLock::new(|| {
    let mut env = Environment::new();
    env.set_auto_escape_callback(|_| AutoEscape::Html);
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.add_template(TEMPLATE_NAME, HISTORY_TEMPLATE)?;
    Ok(env)
});

/// Renders the drill history page as a complete HTML5 document (well-formed XML). It links to
/// its charts relatively (`history/<slug>.svg`) and back to the status page, so it must be
/// served at [`super::HISTORY_PATH`]. An error means the template or a chart is broken: a bug.
pub fn render_history_html(model: &HistoryModel) -> Result<String, PageError> {
    let env = ENV
        .as_ref()
        .map_err(|e| PageError::Template(e.to_string()))?;
    let template = env
        .get_template(TEMPLATE_NAME)
        .map_err(|e| PageError::Template(e.to_string()))?;
    let view = View::new(model)?;
    template
        .render(minijinja::value::Serde(view))
        .map_err(|e| PageError::Template(format!("{e:#}")))
}

#[derive(Serialize)]
struct View {
    title: String,
    generated: Time,
    palette: &'static [Swatch],
    status_href: &'static str,
    rto_target: String,
    rpo_target: String,
    charts: Vec<ChartView>,
}

#[derive(Serialize)]
struct ChartView {
    slug: &'static str,
    title: &'static str,
    href: String,
    /// The inline SVG; `None` when there is nothing to draw (the message is shown instead).
    svg: Option<String>,
    message: &'static str,
    caption: String,
    columns: Vec<&'static str>,
    rows: Vec<Row>,
}

#[derive(Serialize)]
struct Row {
    at: Time,
    run: String,
    passed: bool,
    cells: Vec<String>,
}

fn or_not_measured(d: Option<std::time::Duration>) -> String {
    d.map_or_else(|| "not measured".into(), human_duration)
}

fn met(value: Option<std::time::Duration>, target: std::time::Duration) -> String {
    match value {
        Some(v) if v <= target => "yes".into(),
        Some(_) => "no".into(),
        None => "not measured".into(),
    }
}

impl View {
    fn new(m: &HistoryModel) -> Result<View, PageError> {
        let mut charts = Vec::new();
        for chart in Chart::ALL {
            let (points, _) = chart.series(m);
            let svg = if points.is_empty() {
                None
            } else {
                Some(render_chart(m, chart)?)
            };
            let (caption, columns, rows): (String, Vec<&'static str>, Vec<Row>) = match chart {
                Chart::Rto => (
                    format!(
                        "Recovery time of each drill, oldest first, against the {} target",
                        human_duration(m.rto_target)
                    ),
                    vec!["RTO", "Within target"],
                    m.drills
                        .iter()
                        .map(|d| Row {
                            at: Time::new(&d.at),
                            run: clean(&d.id),
                            passed: d.passed,
                            cells: vec![or_not_measured(d.rto), met(d.rto, m.rto_target)],
                        })
                        .collect(),
                ),
                Chart::Rpo => (
                    format!(
                        "Data loss window of each drill, oldest first, against the {} target",
                        human_duration(m.rpo_target)
                    ),
                    vec!["RPO", "Writes lost", "Within target"],
                    m.drills
                        .iter()
                        .map(|d| Row {
                            at: Time::new(&d.at),
                            run: clean(&d.id),
                            passed: d.passed,
                            cells: vec![
                                or_not_measured(d.rpo),
                                d.rpo_rows
                                    .map_or_else(|| "not measured".into(), |n| n.to_string()),
                                met(d.rpo, m.rpo_target),
                            ],
                        })
                        .collect(),
                ),
                Chart::Verification => (
                    "Duration of each backup verification, oldest first".to_string(),
                    vec!["Duration", "Tables checked"],
                    m.verifications
                        .iter()
                        .map(|v| Row {
                            at: Time::new(&v.at),
                            run: clean(&v.id),
                            passed: v.passed,
                            cells: vec![human_duration(v.duration), v.tables.to_string()],
                        })
                        .collect(),
                ),
            };
            charts.push(ChartView {
                slug: chart.slug(),
                title: chart.title(),
                href: format!("history/{}.svg", chart.slug()),
                svg,
                message: chart.empty_message(),
                caption,
                columns,
                rows,
            });
        }
        Ok(View {
            title: clean(&m.title),
            generated: Time::new(&m.generated_at),
            palette: &PALETTE,
            status_href: STATUS_HREF,
            rto_target: human_duration(m.rto_target),
            rpo_target: human_duration(m.rpo_target),
            charts,
        })
    }
}
