//! The report as one self-contained HTML page: inline CSS, no external assets, no JavaScript.
//! Every text from the store is escaped; tables have captions and column headers, sections
//! are labelled by their headings, and the page reads well on a phone and in print.

use super::{
    Report,
    doc::{self, Block},
};

const STYLE: &str = "\
body{font:16px/1.5 system-ui,-apple-system,'Segoe UI',sans-serif;color:#1b1f24;background:#fff;margin:0}\
main{max-width:72rem;margin:0 auto;padding:1rem 1.25rem 3rem}\
h1{font-size:1.7rem;margin:.5rem 0}h2{font-size:1.3rem;margin-top:2rem;border-bottom:2px solid #d0d7de}\
h3{font-size:1.05rem;margin:1.25rem 0 .5rem}\
.byline{color:#57606a}\
.table{overflow-x:auto}\
table{border-collapse:collapse;width:100%;margin:.5rem 0 1rem;font-size:.93rem}\
caption{text-align:left;font-weight:600;padding:.25rem 0;color:#57606a}\
th,td{border:1px solid #d0d7de;padding:.3rem .5rem;text-align:left;vertical-align:top;overflow-wrap:break-word}td:last-child{overflow-wrap:anywhere}\
th{background:#f6f8fa}\
tr:nth-child(even) td{background:#fafbfc}\
ul.checks{list-style:none;padding-left:.5rem}\
ul.checks li::before{content:'\\2610\\00a0'}ul.checks li.done::before{content:'\\2611\\00a0'}\
.sr{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}\
@media print{main{max-width:none}.table{overflow:visible}}";

/// Escapes text for HTML element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Renders `report`.
pub fn render(report: &Report) -> String {
    let d = doc::build(report);
    let mut out = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n\
         <h1>{}</h1>\n<p class=\"byline\">{}</p>\n",
        esc(&d.title),
        esc(&d.title),
        esc(&d.byline)
    );
    for s in &d.sections {
        out.push_str(&format!(
            "<section aria-labelledby=\"{id}\">\n<h2 id=\"{id}\">{}</h2>\n",
            esc(&s.heading),
            id = s.id
        ));
        for b in &s.blocks {
            match b {
                Block::Para(p) => out.push_str(&format!("<p>{}</p>\n", esc(p))),
                Block::Heading(h) => out.push_str(&format!("<h3>{}</h3>\n", esc(h))),
                Block::List(items) => {
                    out.push_str("<ul>\n");
                    for i in items {
                        out.push_str(&format!("<li>{}</li>\n", esc(i)));
                    }
                    out.push_str("</ul>\n");
                }
                Block::Checks(items) => {
                    out.push_str("<ul class=\"checks\">\n");
                    for (done, i) in items {
                        let (class, state) = if *done {
                            (" class=\"done\"", "done")
                        } else {
                            ("", "not done")
                        };
                        out.push_str(&format!(
                            "<li{class}><span class=\"sr\">{state}: </span>{}</li>\n",
                            esc(i)
                        ));
                    }
                    out.push_str("</ul>\n");
                }
                Block::Table {
                    caption,
                    head,
                    rows,
                } => {
                    out.push_str(&format!(
                        "<div class=\"table\"><table>\n<caption>{}</caption>\n<thead><tr>",
                        esc(caption)
                    ));
                    for h in head {
                        out.push_str(&format!("<th scope=\"col\">{}</th>", esc(h)));
                    }
                    out.push_str("</tr></thead>\n<tbody>\n");
                    for r in rows {
                        out.push_str("<tr>");
                        for c in r {
                            out.push_str(&format!("<td>{}</td>", esc(c)));
                        }
                        out.push_str("</tr>\n");
                    }
                    out.push_str("</tbody>\n</table></div>\n");
                }
            }
        }
        out.push_str("</section>\n");
    }
    out.push_str("</main>\n</body>\n</html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
    }
}
