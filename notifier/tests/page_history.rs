//! The drill history page's renderers: each chart is well-formed, titled SVG with one point per
//! measured drill (or verification) and the target line; no data or one point read well; the
//! HTML is well-formed, script-free, escapes the title and has a table under every chart.

mod page_support;

use std::time::Duration;

use chrono::TimeDelta;
use notifier::page::history::{
    Chart, DrillRecord, HistoryModel, STATUS_HREF, VerificationRecord, render_chart,
    render_history_html,
};
use page_support::{HOSTILE, now};

fn drill(days_ago: i64, passed: bool, rto: Option<f64>, rpo: Option<f64>) -> DrillRecord {
    DrillRecord {
        id: format!("{}", 100 - days_ago),
        at: now() - TimeDelta::days(days_ago),
        passed,
        rto: rto.map(Duration::from_secs_f64),
        rpo: rpo.map(Duration::from_secs_f64),
        rpo_rows: rpo.map(|s| s as u64),
    }
}

fn model(drills: Vec<DrillRecord>, verifications: Vec<VerificationRecord>) -> HistoryModel {
    HistoryModel {
        title: "Example Corp status".into(),
        generated_at: now(),
        rto_target: Duration::from_secs(4 * 3600),
        rpo_target: Duration::from_secs(15 * 60),
        drills,
        verifications,
    }
}

fn full() -> HistoryModel {
    model(
        vec![
            drill(90, true, Some(3000.0), Some(40.0)),
            drill(60, false, Some(16000.0), Some(1200.0)),
            drill(45, true, None, None),
            drill(30, true, Some(1800.0), Some(5.0)),
        ],
        (0..5)
            .map(|i| VerificationRecord {
                id: format!("v{i}"),
                at: now() - TimeDelta::days(7 * (5 - i)),
                passed: i != 2,
                duration: Duration::from_secs(300 + 30 * i as u64),
                tables: 87,
            })
            .collect(),
    )
}

/// The data series' and the target line's colours, as plotters writes them.
const SERIES: &str = "#0645AD";
const TARGET: &str = "#8A3A00";

struct Svg {
    title: String,
    desc: String,
    /// (cx, cy, filled)
    points: Vec<(f64, f64, bool)>,
    texts: Vec<String>,
    /// Lines in the series' or the target's colour.
    polylines: usize,
}

fn svg(m: &HistoryModel, chart: Chart) -> Svg {
    let s = render_chart(m, chart).expect("the chart renders");
    let doc = roxmltree::Document::parse(&s).unwrap_or_else(|e| panic!("not XML: {e}\n{s}"));
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    assert_eq!(
        root.tag_name().namespace(),
        Some("http://www.w3.org/2000/svg")
    );
    assert_eq!(root.attribute("role"), Some("img"));
    assert_eq!(root.attribute("viewBox"), Some("0 0 420 280"));
    let id = format!("chart-{}", chart.slug());
    assert_eq!(
        root.attribute("aria-labelledby"),
        Some(format!("{id}-title {id}-desc").as_str())
    );
    let child = |name: &str| {
        root.children()
            .find(|n| n.has_tag_name(name))
            .and_then(|n| n.text())
            .unwrap_or_else(|| panic!("no <{name}>"))
            .to_string()
    };
    for n in doc.descendants() {
        assert!(!n.has_tag_name("script") && !n.has_tag_name("image"));
        assert!(n.attributes().all(|a| !a.name().starts_with("on")));
    }
    Svg {
        title: child("title"),
        desc: child("desc"),
        points: root
            .descendants()
            .filter(|n| n.has_tag_name("circle"))
            .map(|n| {
                let num = |a: &str| n.attribute(a).unwrap().parse::<f64>().unwrap();
                (num("cx"), num("cy"), n.attribute("fill") != Some("none"))
            })
            .collect(),
        texts: root
            .descendants()
            .filter(|n| n.has_tag_name("text"))
            .filter_map(|n| n.text().map(|t| t.trim().to_string()))
            .collect(),
        polylines: root
            .descendants()
            .filter(|n| n.has_tag_name("polyline"))
            .filter_map(|n| n.attribute("stroke"))
            .filter(|s| [SERIES, TARGET].contains(s))
            .count(),
    }
}

#[test]
fn charts_have_one_point_per_measured_run_and_the_target() {
    let m = full();
    let rto = svg(&m, Chart::Rto);
    assert_eq!(rto.title, "Recovery time (RTO) per drill");
    assert_eq!(rto.points.len(), 3, "the unmeasured drill has no point");
    assert_eq!(
        rto.points.iter().map(|p| p.2).collect::<Vec<_>>(),
        [true, false, true],
        "the failed drill is hollow"
    );
    assert!(
        rto.points.windows(2).all(|w| w[0].0 < w[1].0),
        "oldest left"
    );
    // 16000 s is higher on the chart (smaller y) than 3000 s, which is above 1800 s.
    assert!(rto.points[1].1 < rto.points[0].1 && rto.points[0].1 < rto.points[2].1);
    assert!(rto.points.iter().all(|p| (0.0..420.0).contains(&p.0)));
    assert!(
        rto.texts.contains(&"target 4 h".to_string()),
        "{:?}",
        rto.texts
    );
    assert!(
        rto.texts.contains(&"hours".to_string()),
        "unit: {:?}",
        rto.texts
    );
    assert_eq!(rto.polylines, 2, "the series and the target");
    assert!(
        rto.desc
            .starts_with("3 points; the latest, on 2026-10-27 14:05 UTC, is 30 min"),
        "{}",
        rto.desc
    );
    let rpo = svg(&m, Chart::Rpo);
    assert_eq!(rpo.points.len(), 3);
    assert!(rpo.texts.contains(&"target 15 min".to_string()));
    assert!(
        rpo.texts.contains(&"minutes".to_string()),
        "{:?}",
        rpo.texts
    );
    let ver = svg(&m, Chart::Verification);
    assert_eq!(ver.points.len(), 5);
    assert_eq!(ver.polylines, 1, "no target");
    assert_eq!(ver.points.iter().filter(|p| !p.2).count(), 1);
}

#[test]
fn no_data_is_a_message_and_one_point_is_a_chart() {
    let empty = model(vec![], vec![]);
    for chart in Chart::ALL {
        let s = svg(&empty, chart);
        assert!(s.points.is_empty());
        assert_eq!(s.texts, [chart.empty_message()]);
        assert_eq!(s.desc, chart.empty_message());
        assert_eq!(Chart::from_slug(chart.slug()), Some(chart));
    }
    let page = render_history_html(&empty).unwrap();
    assert!(!page.contains("<svg"), "no empty charts");
    assert_eq!(page.matches("<p class=\"empty\">").count(), 3);
    assert!(!page.contains("<table"), "no empty tables");

    let one = model(vec![drill(3, true, Some(5.41), Some(0.0))], vec![]);
    let s = svg(&one, Chart::Rto);
    assert_eq!(s.points.len(), 1);
    // Padded either side: the point is inside the plot, not on an axis.
    let (cx, cy, _) = s.points[0];
    assert!((70.0..350.0).contains(&cx), "{cx}");
    assert!((10.0..270.0).contains(&cy), "{cy}");
    assert_eq!(
        s.polylines, 1,
        "a single point has no line, only the target"
    );
    assert!(s.desc.starts_with("1 point; "), "{}", s.desc);
    // A drill measured as zero data loss sits on the axis, still a point.
    assert_eq!(svg(&one, Chart::Rpo).points.len(), 1);
}

#[test]
fn page_is_well_formed_with_a_table_under_each_chart() {
    let mut m = full();
    m.title = format!("Status {HOSTILE}");
    let page = render_history_html(&m).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(!page.contains("<script"), "raw markup from the title");
    let doc = roxmltree::Document::parse_with_options(
        &page,
        roxmltree::ParsingOptions {
            allow_dtd: true,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("page is not well-formed: {e}\n{page}"));
    let title = doc
        .descendants()
        .find(|n| n.has_tag_name("title") && n.parent().is_some_and(|p| p.has_tag_name("head")))
        .and_then(|n| n.text())
        .unwrap();
    assert!(
        title.starts_with("Status <script>alert('x')</script>"),
        "{title}"
    );
    assert!(title.ends_with(": drill history"));
    for n in doc.descendants().filter(|n| n.is_element()) {
        assert!(!n.has_tag_name("script") && !n.has_tag_name("img"));
        for a in n.attributes() {
            assert!(!a.name().starts_with("on"), "{}", a.name());
            if a.name() == "href" {
                let ok = a.value() == "#main"
                    || a.value() == STATUS_HREF
                    || Chart::ALL
                        .iter()
                        .any(|c| a.value() == format!("history/{}.svg", c.slug()));
                assert!(ok, "unexpected link {}", a.value());
            }
        }
    }
    assert_eq!(
        doc.descendants().filter(|n| n.has_tag_name("svg")).count(),
        3
    );
    assert_eq!(
        doc.descendants()
            .filter(|n| n.has_tag_name("circle"))
            .count(),
        3 + 3 + 5
    );
    let tables: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("table"))
        .collect();
    assert_eq!(tables.len(), 3);
    let rows = |t: &roxmltree::Node| {
        t.descendants()
            .filter(|n| n.has_tag_name("tr") && n.parent().is_some_and(|p| p.has_tag_name("tbody")))
            .map(|r| {
                r.descendants()
                    .filter(|n| n.is_text())
                    .filter_map(|n| n.text())
                    .collect::<Vec<_>>()
                    .join(" ")
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        rows(&tables[0]),
        [
            "2026-08-28 14:05 UTC #10 Passed 50 min yes",
            "2026-09-27 14:05 UTC #40 Failed 4 h 26 min no",
            "2026-10-12 14:05 UTC #55 Passed not measured not measured",
            "2026-10-27 14:05 UTC #70 Passed 30 min yes",
        ]
    );
    assert_eq!(
        rows(&tables[1])[1],
        "2026-09-27 14:05 UTC #40 Failed 20 min 1200 no"
    );
    assert_eq!(rows(&tables[2]).len(), 5);
    assert_eq!(
        rows(&tables[2])[2],
        "2026-11-05 14:05 UTC #v2 Failed 6 min 87"
    );
    for t in &tables {
        assert!(
            t.descendants().any(|n| n.has_tag_name("caption")),
            "a caption"
        );
        let scoped = t
            .descendants()
            .filter(|n| n.has_tag_name("th"))
            .all(|n| n.attribute("scope").is_some());
        assert!(scoped, "every header cell has a scope");
    }
}
