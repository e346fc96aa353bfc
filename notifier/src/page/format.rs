//! Text helpers shared by the renderers: timestamps, durations, XML escaping and the
//! cleaning of user text (control characters that XML 1.0 forbids).

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};

/// A timestamp as the HTML templates show it: machine-readable for `<time datetime>` and as
/// text for people.
#[derive(serde::Serialize)]
pub(crate) struct Time {
    iso: String,
    human: String,
}

impl Time {
    pub(crate) fn new(t: &DateTime<Utc>) -> Time {
        Time {
            iso: rfc3339(t),
            human: human_time(t),
        }
    }
}

/// RFC 3339 in UTC with a `Z` and whole seconds, e.g. `2026-11-26T14:05:00Z`.
pub(crate) fn rfc3339(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// For people: `2026-11-26 14:05 UTC`.
pub(crate) fn human_time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// For people: `0.8 s`, `42 s`, `12 min 5 s`, `2 h 3 min`, `3 d 4 h`.
pub(crate) fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs < 10 {
        let tenths = d.as_millis().div_ceil(100);
        if tenths.is_multiple_of(10) {
            return format!("{} s", tenths / 10);
        }
        return format!("{}.{} s", tenths / 10, tenths % 10);
    }
    let (d_, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    let mut parts = Vec::new();
    for (n, unit) in [(d_, "d"), (h, "h"), (m, "min"), (s, "s")] {
        if n > 0 || !parts.is_empty() {
            parts.push((n, unit));
        }
    }
    parts
        .iter()
        .take(2)
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n} {unit}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Replaces characters that XML 1.0 forbids (most C0 controls, U+FFFE, U+FFFF) with U+FFFD so
/// hostile input cannot make the HTML or the feed unparseable. Tab, LF and CR stay.
pub(crate) fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if forbidden(c) { '\u{FFFD}' } else { c })
        .collect()
}

/// A character XML 1.0 forbids (see [`clean`]).
fn forbidden(c: char) -> bool {
    ((c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r')) || c == '\u{FFFE}' || c == '\u{FFFF}'
}

/// Whether [`escape_xml`] would change `s`.
pub(crate) fn needs_xml_escape(s: &str) -> bool {
    s.chars()
        .any(|c| forbidden(c) || matches!(c, '&' | '<' | '>' | '"' | '\''))
}

/// Appends `s` to `out` escaped for XML text and attribute values (cleaned as by [`clean`]).
pub(crate) fn escape_xml(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            c if forbidden(c) => out.push('\u{FFFD}'),
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

/// `s` escaped for XML (see [`escape_xml`]).
pub(crate) fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    escape_xml(s, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needing_escape_is_escaping_changing_the_text() {
        for s in [
            "", "Ann", "Zo\u{eb}", "a&b", "<", ">", "\"", "'", "\u{1}", "\t\n\r", "\u{FFFE}",
            "\u{FFFF}", "\u{FFFD}", "\u{7f}",
        ] {
            assert_eq!(needs_xml_escape(s), xml(s) != s, "{s:?}");
        }
    }

    #[test]
    fn durations_read_naturally() {
        let cases = [
            (Duration::from_millis(0), "0 s"),
            (Duration::from_millis(800), "0.8 s"),
            (Duration::from_millis(2000), "2 s"),
            (Duration::from_secs(42), "42 s"),
            (Duration::from_secs(60), "1 min"),
            (Duration::from_secs(725), "12 min 5 s"),
            (Duration::from_secs(2 * 3600 + 3 * 60 + 9), "2 h 3 min"),
            (Duration::from_secs(3600 + 5), "1 h"),
            (Duration::from_secs(3 * 86_400 + 4 * 3600), "3 d 4 h"),
        ];
        for (d, want) in cases {
            assert_eq!(human_duration(d), want, "{d:?}");
        }
    }

    #[test]
    fn xml_escaping_covers_markup_and_controls() {
        assert_eq!(
            xml("<a href=\"x\" title='y'>&</a>\u{1b}\u{0}\tz"),
            "&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;&amp;&lt;/a&gt;\u{FFFD}\u{FFFD}\tz"
        );
    }

    #[test]
    fn times_are_utc_with_z() {
        let t = DateTime::parse_from_rfc3339("2026-11-26T15:05:09+01:00")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(rfc3339(&t), "2026-11-26T14:05:09Z");
        assert_eq!(human_time(&t), "2026-11-26 14:05 UTC");
    }
}
