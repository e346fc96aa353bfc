//! The status page's HTML and Atom renderers: hostile input is escaped everywhere, the HTML is
//! well-formed, script-free and accessible, and the feed is valid Atom 1.0.

mod page_support;

use chrono::DateTime;
use notifier::page::{
    ComponentStatus, FEED_HREF, HISTORY_HREF, JSON_HREF, PageModel, render_atom, render_html,
    sample_model,
};
use page_support::{HOSTILE, empty_model, hostile_model, now, odd_model};

const ATOM: &str = "http://www.w3.org/2005/Atom";

fn html(m: &PageModel) -> String {
    render_html(m).expect("the built-in template renders")
}

/// Checks what must hold for any rendered page, and returns its parsed text content.
fn check_page(page: &str) -> String {
    let doc = roxmltree::Document::parse_with_options(
        page,
        roxmltree::ParsingOptions {
            allow_dtd: true,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("page is not well-formed: {e}\n{page}"));
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "html");
    assert_eq!(root.attribute("lang"), Some("en"));
    let mut last_heading = 0;
    let mut h1 = 0;
    let mut landmarks = Vec::new();
    let mut text = String::new();
    for node in doc.descendants() {
        if node.is_text() {
            text.push_str(node.text().unwrap_or(""));
            continue;
        }
        if !node.is_element() {
            continue;
        }
        let name = node.tag_name().name();
        assert!(
            !matches!(
                name,
                "script" | "iframe" | "object" | "embed" | "img" | "form"
            ),
            "<{name}> in the page"
        );
        for a in node.attributes() {
            assert!(
                !a.name().starts_with("on"),
                "event handler attribute {}",
                a.name()
            );
            assert!(
                !a.value()
                    .trim_start()
                    .to_ascii_lowercase()
                    .starts_with("javascript:")
            );
            if a.name() == "href" || a.name() == "src" {
                assert!(
                    a.value().starts_with('#')
                        || [FEED_HREF, JSON_HREF, HISTORY_HREF].contains(&a.value()),
                    "external or unexpected link {}",
                    a.value()
                );
            }
        }
        if let Some(level) = name.strip_prefix('h').and_then(|l| l.parse::<u32>().ok()) {
            assert!(
                level <= last_heading + 1,
                "<{name}> after <h{last_heading}>: skipped level"
            );
            last_heading = level;
            h1 += u32::from(level == 1);
        }
        if matches!(name, "header" | "main" | "footer") {
            landmarks.push(name);
        }
        if name == "time" {
            let dt = node.attribute("datetime").expect("<time> has datetime");
            DateTime::parse_from_rfc3339(dt).unwrap_or_else(|e| panic!("datetime {dt}: {e}"));
            assert!(dt.ends_with('Z'), "{dt} is UTC");
        }
        if name == "meta" && node.attribute("name") == Some("viewport") {
            landmarks.push("viewport");
        }
        if name == "style" {
            let css = node.text().unwrap_or("");
            assert!(css.contains("@media"), "responsive CSS");
            assert!(
                !css.contains("url(") && !css.contains("@import"),
                "no external assets"
            );
        }
    }
    assert_eq!(h1, 1, "exactly one <h1>");
    assert_eq!(landmarks, ["viewport", "header", "main", "footer"]);
    text
}

#[test]
fn sample_page_shows_everything_as_text() {
    let m = sample_model(now());
    let page = html(&m);
    let text = check_page(&page);
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(page.contains(r#"<meta http-equiv="refresh" content="60" />"#));
    for needle in [
        "Example Corp status",
        "Current status: Partial outage",
        "Service Degradation - DR Activated",
        "We are experiencing issues in our primary region. DR site activated.",
        "Traffic is moving to the DR region (us-west-2).\nExpect higher latency",
        "Impact: Major",
        "Elevated API error rates",
        "2026-11-19 14:05 UTC to 2026-11-19 14:52 UTC (47 min)",
        "Passed on 2026-11-26 08:05 UTC: 87 tables restored and checked in 5 min 12 s",
        "Targets met on 2026-11-23 14:05 UTC: recovery time (RTO) 9 min 40 s against a target of 15 min",
        "(RPO) 4 s against a target of 1 min",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    // Status is conveyed as text next to each component, not by colour alone.
    for c in &m.components {
        assert!(
            text.contains(&format!("{} {}", c.name, c.status.label())),
            "{}",
            c.name
        );
    }
    // The current timeline is newest first.
    let identified = text.find("Traffic is moving").unwrap();
    let investigating = text.find("We are experiencing").unwrap();
    assert!(identified < investigating);
    // The DR testing schedule: one table row per schedule, result and overdue as text.
    for row in [
        "weekly-verify verify-backup Passed 2026-11-26 08:05 UTC 2026-12-03 08:05 UTC On time",
        "monthly-failover-test failover Failed 2026-10-17 14:05 UTC 2026-12-17 14:05 UTC Overdue",
        "quarterly-drill drill Not run yet 2026-12-16 14:05 UTC On time",
    ] {
        assert!(collapsed(&text).contains(row), "missing {row:?} in\n{text}");
    }
    assert!(
        text.contains("Each scheduled disaster-recovery test"),
        "a caption"
    );
    assert!(page.contains("<th scope=\"row\" role=\"rowheader\">weekly-verify</th>"));
    let doc = roxmltree::Document::parse_with_options(
        &page,
        roxmltree::ParsingOptions {
            allow_dtd: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(
        doc.descendants()
            .any(|n| n.attribute("href") == Some(HISTORY_HREF)),
        "links to the drill history"
    );
    // Every component status has styling and a label.
    for s in ComponentStatus::ALL {
        assert!(page.contains(&format!(".s-{} {{", s.as_str())), "{s:?}");
    }
}

#[test]
fn hostile_text_is_escaped_in_html() {
    let page = html(&hostile_model());
    let text = check_page(&page);
    assert!(!page.contains("<script"), "raw <script> in\n{page}");
    assert!(!page.contains("<img"));
    assert!(page.contains("&lt;script&gt;"));
    // The text round-trips (minus the control characters, shown as U+FFFD).
    let shown = "<script>alert('x')</script><img src=x onerror=alert(1)> \"q\" &amp; ]]> \u{FFFD}\u{FFFD} javascript:alert(2)";
    for prefix in ["Status ", "Comp ", "Desc ", "Incident ", "Body ", "Old "] {
        assert!(text.contains(&format!("{prefix}{shown}")), "{prefix}…");
    }
    // The hostile id became a safe anchor.
    let anchor = page
        .split("id=\"incident-id-")
        .nth(1)
        .expect("anchor")
        .split('"')
        .next()
        .unwrap();
    assert!(anchor.len() > 40, "{anchor}");
    assert!(
        anchor
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "{anchor}"
    );
}

#[test]
fn empty_and_odd_pages_render() {
    let text = check_page(&html(&empty_model()));
    for needle in [
        "All systems operational",
        "No incident is in progress.",
        "No components are listed.",
        "No backup verification recorded yet.",
        "No recovery drill recorded yet.",
        "No past incidents.",
        "No DR tests are scheduled.",
    ] {
        assert!(text.contains(needle), "missing {needle:?}");
    }
    let text = check_page(&html(&odd_model()));
    assert!(text.contains("Incident in progress: Investigating"));
    assert!(text.contains("Just opened"));
}

/// `s` with every run of whitespace as one space.
fn collapsed(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

struct Entry {
    id: String,
    title: String,
    updated: String,
    content: String,
}

/// Parses a feed, checks the required Atom elements, and returns its entries.
fn check_feed(feed: &str, base: &str) -> Vec<Entry> {
    let doc = roxmltree::Document::parse(feed)
        .unwrap_or_else(|e| panic!("feed is not well-formed XML: {e}\n{feed}"));
    let root = doc.root_element();
    assert_eq!(root.tag_name().namespace(), Some(ATOM));
    assert_eq!(root.tag_name().name(), "feed");
    let child = |n: roxmltree::Node<'_, '_>, name: &str| -> Vec<String> {
        n.children()
            .filter(|c| c.is_element() && c.has_tag_name((ATOM, name)))
            .map(|c| c.text().unwrap_or("").to_owned())
            .collect()
    };
    let one = |n: roxmltree::Node<'_, '_>, name: &str| -> String {
        let v = child(n, name);
        assert_eq!(
            v.len(),
            1,
            "exactly one <{name}> in <{}>",
            n.tag_name().name()
        );
        v.into_iter().next().unwrap()
    };
    assert_eq!(one(root, "id"), format!("{base}/status"));
    assert!(!one(root, "title").is_empty());
    DateTime::parse_from_rfc3339(&one(root, "updated")).expect("feed updated is RFC 3339");
    let links: Vec<_> = root
        .children()
        .filter(|c| c.has_tag_name((ATOM, "link")))
        .collect();
    let rel = |r: &str| {
        links
            .iter()
            .find(|l| l.attribute("rel") == Some(r))
            .map(|l| l.attribute("href"))
    };
    assert_eq!(
        rel("alternate"),
        Some(Some(format!("{base}/status").as_str()))
    );
    assert_eq!(
        rel("self"),
        Some(Some(format!("{base}/status/feed.atom").as_str()))
    );
    let author = root
        .children()
        .find(|c| c.has_tag_name((ATOM, "author")))
        .expect("author");
    assert!(!one(author, "name").is_empty());
    let mut entries = Vec::new();
    for e in root.children().filter(|c| c.has_tag_name((ATOM, "entry"))) {
        let content = e
            .children()
            .find(|c| c.has_tag_name((ATOM, "content")))
            .expect("content");
        assert_eq!(content.attribute("type"), Some("html"));
        let entry = Entry {
            id: one(e, "id"),
            title: one(e, "title"),
            updated: one(e, "updated"),
            content: content.text().unwrap_or("").to_owned(),
        };
        DateTime::parse_from_rfc3339(&entry.updated).expect("entry updated is RFC 3339");
        assert!(
            entry.id.starts_with(&format!("{base}/status#incident-")),
            "{}",
            entry.id
        );
        let link = e
            .children()
            .find(|c| c.has_tag_name((ATOM, "link")))
            .expect("entry link");
        assert!(
            link.attribute("href")
                .unwrap()
                .starts_with(&format!("{base}/status#"))
        );
        entries.push(entry);
    }
    let mut ids: Vec<_> = entries.iter().map(|e| e.id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), entries.len(), "entry ids are unique");
    entries
}

#[test]
fn atom_feed_has_one_entry_per_update_newest_first() {
    let m = sample_model(now());
    let feed = render_atom(&m, "https://status.example.com/");
    let entries = check_feed(&feed, "https://status.example.com");
    assert_eq!(entries.len(), 5);
    let updated: Vec<_> = entries.iter().map(|e| e.updated.clone()).collect();
    let mut sorted = updated.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(updated, sorted, "newest first");
    assert_eq!(
        entries[0].title,
        "Service Degradation - DR Activated: Identified"
    );
    assert_eq!(
        entries[0].id,
        "https://status.example.com/status#incident-42-update-1"
    );
    assert_eq!(entries[0].updated, "2026-11-26T13:53:00Z");
    assert_eq!(
        entries[0].content,
        "<p><strong>Identified</strong> (impact: Major)</p><p>Traffic is moving to the DR region \
         (us-west-2).<br />Expect higher latency for up to 15 minutes. Next update within the hour.</p>"
    );
    assert!(feed.contains("<updated>2026-11-26T13:53:00Z</updated>\n<link rel=\"alternate\""));
}

#[test]
fn hostile_text_is_escaped_in_atom() {
    let feed = render_atom(&hostile_model(), "https://status.example.com");
    assert!(!feed.contains("<script"), "raw <script> in\n{feed}");
    let entries = check_feed(&feed, "https://status.example.com");
    assert_eq!(entries.len(), 6);
    let body = entries
        .iter()
        .find(|e| e.title.starts_with("Incident <script>"))
        .unwrap();
    // After XML parsing the content is HTML in which the markup is still escaped.
    assert!(!body.content.contains("<script"), "{}", body.content);
    assert!(
        body.content
            .contains("Body &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;")
    );
    assert!(body.content.contains("&lt;img src=x onerror=alert(1)&gt;"));
    assert!(body.content.contains("&amp;amp; ]]&gt;"));
    assert!(body.content.contains("<br />second line"));
    assert!(HOSTILE.contains('\u{1b}') && !feed.contains('\u{1b}'));
}

#[test]
fn empty_feed_is_valid() {
    let entries = check_feed(
        &render_atom(&empty_model(), "http://127.0.0.1:8080"),
        "http://127.0.0.1:8080",
    );
    assert!(entries.is_empty());
    let feed = render_atom(&empty_model(), "http://127.0.0.1:8080");
    assert!(
        feed.contains("<updated>2026-11-26T14:05:00Z</updated>"),
        "falls back to generated_at"
    );
}
