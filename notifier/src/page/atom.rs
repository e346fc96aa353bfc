//! The Atom 1.0 feed (RFC 4287) of the status page: one entry per incident update, newest
//! first, written with a small escaping writer.

use chrono::{DateTime, Utc};

use super::format::{escape_xml, rfc3339, xml};
use super::html::anchor;
use super::model::{Incident, PageModel, Update};
use super::{FEED_PATH, PAGE_PATH};

/// At most this many entries (the newest updates) are in the feed.
pub const FEED_MAX_ENTRIES: usize = 100;

/// Renders the Atom feed. `base_url` is the absolute URL drbot is reached at, e.g.
/// `https://status.example.com` (a trailing `/` is ignored); the feed's links and ids are built
/// from it with [`PAGE_PATH`] and [`FEED_PATH`].
///
/// Entry ids are `<base>/status#incident-<id>-update-<n>`, `n` counting the incident's updates
/// from 0, so they stay the same as updates are added. Entry content is `type="html"`: the
/// update body HTML-escaped, then XML-escaped. Feed `updated` is the newest time in the model
/// (falling back to `generated_at` when there is no incident).
pub fn render_atom(model: &PageModel, base_url: &str) -> String {
    let base = base_url.trim_end_matches('/');
    let page = format!("{base}{PAGE_PATH}");
    let mut entries: Vec<(&Incident, usize, &Update)> = model
        .current
        .iter()
        .chain(&model.history)
        .flat_map(|i| i.updates.iter().enumerate().map(move |(n, u)| (i, n, u)))
        .collect();
    entries.sort_by_key(|e| std::cmp::Reverse(e.2.at));
    entries.truncate(FEED_MAX_ENTRIES);
    let updated = newest(model).unwrap_or(model.generated_at);

    let mut out = String::with_capacity(1024 + entries.len() * 512);
    out.push_str("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n");
    out.push_str("<feed xmlns=\"http://www.w3.org/2005/Atom\">\n");
    element(&mut out, "id", &page);
    element(&mut out, "title", &model.title);
    element(&mut out, "updated", &rfc3339(&updated));
    link(&mut out, "alternate", "text/html", &page);
    link(
        &mut out,
        "self",
        "application/atom+xml",
        &format!("{base}{FEED_PATH}"),
    );
    out.push_str("<author>");
    element(&mut out, "name", &model.title);
    out.push_str("</author>\n");
    element(&mut out, "generator", "drbot");
    for (incident, n, update) in entries {
        let anchor = anchor(&incident.id);
        out.push_str("<entry>\n");
        element(&mut out, "id", &format!("{page}#{anchor}-update-{n}"));
        element(
            &mut out,
            "title",
            &format!("{}: {}", incident.name, update.status.label()),
        );
        element(&mut out, "updated", &rfc3339(&update.at));
        link(
            &mut out,
            "alternate",
            "text/html",
            &format!("{page}#{anchor}"),
        );
        out.push_str("<content type=\"html\">");
        escape_xml(&content_html(incident, update), &mut out);
        out.push_str("</content>\n</entry>\n");
    }
    out.push_str("</feed>\n");
    out
}

/// The newest instant in the model's incidents.
fn newest(model: &PageModel) -> Option<DateTime<Utc>> {
    model
        .current
        .iter()
        .chain(&model.history)
        .flat_map(|i| {
            let ups = i.updates.iter().map(|u| u.at);
            std::iter::once(i.started_at)
                .chain(i.resolved_at)
                .chain(ups)
        })
        .max()
}

/// The entry's HTML: status, impact and the body with line breaks (all escaped).
fn content_html(incident: &Incident, update: &Update) -> String {
    let body = xml(&update.body)
        .replace("\r\n", "\n")
        .replace('\n', "<br />");
    format!(
        "<p><strong>{}</strong> (impact: {})</p><p>{}</p>",
        update.status.label(),
        incident.impact.label(),
        body
    )
}

fn element(out: &mut String, name: &str, text: &str) {
    out.push('<');
    out.push_str(name);
    out.push('>');
    escape_xml(text, out);
    out.push_str("</");
    out.push_str(name);
    out.push_str(">\n");
}

fn link(out: &mut String, rel: &str, kind: &str, href: &str) {
    out.push_str("<link rel=\"");
    out.push_str(rel);
    out.push_str("\" type=\"");
    out.push_str(kind);
    out.push_str("\" href=\"");
    escape_xml(href, out);
    out.push_str("\" />\n");
}
