//! The history page's charts as self-contained SVG documents, drawn server-side with plotters'
//! SVG backend (no fonts needed: text stays `<text>` for the browser to set). Each chart has a
//! `<title>` and `<desc>` and `role="img"`, so it reads well inline in the page and on its own
//! (`/status/history/<slug>.svg`). A chart with no data is a short message, not empty axes.

use std::time::Duration;

use chrono::{DateTime, Utc};
use plotters::prelude::*;

use super::super::PageError;
use super::super::format::{escape_xml, human_duration};
use super::model::HistoryModel;

/// Width and height of every chart (the SVG scales to its container).
pub const SIZE: (u32, u32) = (420, 280);

/// One point of a chart: when the run finished, the value, whether the run passed.
pub(crate) type Point = (DateTime<Utc>, Duration, bool);

/// The charts of the history page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Chart {
    /// Measured recovery time per drill, with the RTO target.
    Rto,
    /// Measured data-loss window per drill, with the RPO target.
    Rpo,
    /// Duration of each backup verification.
    Verification,
}

impl Chart {
    /// Every chart, in page order.
    pub const ALL: [Chart; 3] = [Chart::Rto, Chart::Rpo, Chart::Verification];

    /// The file name stem, e.g. `rto` for `/status/history/rto.svg`.
    pub fn slug(self) -> &'static str {
        match self {
            Chart::Rto => "rto",
            Chart::Rpo => "rpo",
            Chart::Verification => "verification",
        }
    }

    /// The chart's title (the SVG `<title>` and the page's heading).
    pub fn title(self) -> &'static str {
        match self {
            Chart::Rto => "Recovery time (RTO) per drill",
            Chart::Rpo => "Data loss window (RPO) per drill",
            Chart::Verification => "Backup verification duration",
        }
    }

    /// The chart by its slug.
    pub fn from_slug(slug: &str) -> Option<Chart> {
        Chart::ALL.into_iter().find(|c| c.slug() == slug)
    }

    /// What the chart says when it has no data.
    pub fn empty_message(self) -> &'static str {
        match self {
            Chart::Rto | Chart::Rpo => "No measured drill recorded yet.",
            Chart::Verification => "No backup verification recorded yet.",
        }
    }

    /// The measured points (finish time, value, passed), oldest first, and the target.
    pub(crate) fn series(self, m: &HistoryModel) -> (Vec<Point>, Option<Duration>) {
        match self {
            Chart::Rto => (
                m.drills
                    .iter()
                    .filter_map(|d| Some((d.at, d.rto?, d.passed)))
                    .collect(),
                Some(m.rto_target),
            ),
            Chart::Rpo => (
                m.drills
                    .iter()
                    .filter_map(|d| Some((d.at, d.rpo?, d.passed)))
                    .collect(),
                Some(m.rpo_target),
            ),
            Chart::Verification => (
                m.verifications
                    .iter()
                    .map(|v| (v.at, v.duration, v.passed))
                    .collect(),
                None,
            ),
        }
    }
}

/// The unit a chart's values are shown in, chosen from the largest value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    Seconds,
    Minutes,
    Hours,
}

impl Unit {
    fn for_max(max_secs: f64) -> Unit {
        if max_secs < 120.0 {
            Unit::Seconds
        } else if max_secs < 2.0 * 3600.0 {
            Unit::Minutes
        } else {
            Unit::Hours
        }
    }

    fn divisor(self) -> f64 {
        match self {
            Unit::Seconds => 1.0,
            Unit::Minutes => 60.0,
            Unit::Hours => 3600.0,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Unit::Seconds => "seconds",
            Unit::Minutes => "minutes",
            Unit::Hours => "hours",
        }
    }
}

const SERIES: RGBColor = RGBColor(0x06, 0x45, 0xad);
const FAILED: RGBColor = RGBColor(0x9b, 0x11, 0x1e);
const TARGET: RGBColor = RGBColor(0x8a, 0x3a, 0x00);
const INK: RGBColor = RGBColor(0x1a, 0x1a, 0x1a);
const GRID: RGBColor = RGBColor(0xdd, 0xdf, 0xe2);

fn chart_error(e: impl std::fmt::Display) -> PageError {
    PageError::Chart(e.to_string())
}

/// Renders `chart` of `model` as a complete SVG document: one `<circle>` per measured point
/// (filled when the run passed, hollow red when it failed), a line through them, and the
/// target as a horizontal line with its label. Without points, a message. An error is a bug.
pub fn render_chart(model: &HistoryModel, chart: Chart) -> Result<String, PageError> {
    let (points, target) = chart.series(model);
    let id = format!("chart-{}", chart.slug());
    let desc = describe(chart, &points, target);
    let body = if points.is_empty() {
        message_body(chart.empty_message())
    } else {
        plot(&points, target)?
    };
    let (w, h) = SIZE;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
         viewBox=\"0 0 {w} {h}\" class=\"chart\" role=\"img\" \
         aria-labelledby=\"{id}-title {id}-desc\">\n<title id=\"{id}-title\">"
    );
    escape_xml(chart.title(), &mut out);
    out.push_str(&format!("</title>\n<desc id=\"{id}-desc\">"));
    escape_xml(&desc, &mut out);
    out.push_str("</desc>\n");
    out.push_str(&body);
    out.push_str("</svg>\n");
    Ok(out)
}

/// A one-sentence summary for screen readers: how many points, the latest, the target.
fn describe(chart: Chart, points: &[Point], t: Option<Duration>) -> String {
    let Some((at, v, _)) = points.last() else {
        return chart.empty_message().into();
    };
    let mut s = format!(
        "{} point{}; the latest, on {}, is {}",
        points.len(),
        if points.len() == 1 { "" } else { "s" },
        at.format("%Y-%m-%d %H:%M UTC"),
        human_duration(*v)
    );
    if let Some(t) = t {
        s.push_str(&format!("; the target is {}", human_duration(t)));
    }
    s.push_str(". The table below the chart has every value.");
    s
}

fn message_body(text: &str) -> String {
    let (w, h) = SIZE;
    let mut s = format!(
        "<rect x=\"0\" y=\"0\" width=\"{w}\" height=\"{h}\" fill=\"#ffffff\" stroke=\"#c4c7cc\"/>\n\
         <text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-family=\"sans-serif\" \
         font-size=\"16\" fill=\"#1a1a1a\">",
        w / 2,
        h / 2
    );
    escape_xml(text, &mut s);
    s.push_str("</text>\n");
    s
}

/// The plot itself: plotters' SVG without its own `<svg>` wrapper.
fn plot(points: &[Point], target: Option<Duration>) -> Result<String, PageError> {
    let max = points
        .iter()
        .map(|p| p.1.as_secs_f64())
        .chain(target.map(|t| t.as_secs_f64()))
        .fold(0.0, f64::max);
    let unit = Unit::for_max(max);
    let y = |d: Duration| d.as_secs_f64() / unit.divisor();
    let y_max = (max / unit.divisor() * 1.15).max(1.0);
    let x = |t: &DateTime<Utc>| t.timestamp() as f64;
    let (first, last) = (x(&points[0].0), x(&points[points.len() - 1].0));
    // One point (or several at one time) gets a day either side; else 5 % padding.
    let pad = if last - first < 1.0 {
        86_400.0
    } else {
        (last - first) * 0.05
    };
    let (x0, x1) = (first - pad, last + pad);
    let short_span = x1 - x0 < 3.0 * 86_400.0;
    let x_label = move |v: &f64| {
        DateTime::from_timestamp(*v as i64, 0)
            .map(|t| {
                t.format(if short_span {
                    "%m-%d %H:%M"
                } else {
                    "%Y-%m-%d"
                })
                .to_string()
            })
            .unwrap_or_default()
    };
    let y_label = |v: &f64| {
        if (v - v.round()).abs() < 1e-9 {
            format!("{v:.0}")
        } else {
            format!("{v:.1}")
        }
    };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(chart_error)?;
        let mut c = ChartBuilder::on(&root)
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(x0..x1, 0f64..y_max)
            .map_err(chart_error)?;
        c.configure_mesh()
            .disable_x_mesh()
            .light_line_style(TRANSPARENT)
            .bold_line_style(GRID)
            .axis_style(INK)
            .x_labels(3)
            .y_labels(5)
            .x_label_formatter(&x_label)
            .y_label_formatter(&y_label)
            .label_style(("sans-serif", 16).into_font().color(&INK))
            .axis_desc_style(("sans-serif", 17).into_font().color(&INK))
            .y_desc(unit.name())
            .draw()
            .map_err(chart_error)?;
        if let Some(t) = target {
            let ty = y(t);
            c.draw_series(LineSeries::new(
                [(x0, ty), (x1, ty)],
                TARGET.stroke_width(2),
            ))
            .map_err(chart_error)?;
            c.draw_series(std::iter::once(Text::new(
                format!("target {}", human_duration(t)),
                (x0 + (x1 - x0) * 0.01, ty),
                ("sans-serif", 16).into_font().color(&TARGET).pos(
                    plotters::style::text_anchor::Pos::new(
                        plotters::style::text_anchor::HPos::Left,
                        plotters::style::text_anchor::VPos::Bottom,
                    ),
                ),
            )))
            .map_err(chart_error)?;
        }
        if points.len() > 1 {
            c.draw_series(LineSeries::new(
                points.iter().map(|p| (x(&p.0), y(p.1))),
                SERIES.stroke_width(2),
            ))
            .map_err(chart_error)?;
        }
        // Filled when the run passed, a hollow red ring when it failed (shape, not colour alone).
        c.draw_series(points.iter().map(|p| {
            let style = if p.2 {
                SERIES.filled()
            } else {
                FAILED.stroke_width(2)
            };
            Circle::new((x(&p.0), y(p.1)), 5, style)
        }))
        .map_err(chart_error)?;
        root.present().map_err(chart_error)?;
    }
    // Drop plotters' own `<svg …>` line and closing tag: `render_chart` writes its own.
    let start = svg.find('>').map_or(0, |i| i + 1);
    let end = svg.rfind("</svg>").unwrap_or(svg.len());
    Ok(svg[start..end].trim_start_matches('\n').to_string())
}
