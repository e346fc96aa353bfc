//! The report as Markdown (GitHub-flavoured tables and task lists), for the post-incident
//! review: people fill in its "Lessons learned" section.

use super::{
    Report,
    doc::{self, Block},
};

/// A table cell: one line, pipes escaped.
fn cell(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace(['\r', '\n'], " ")
}

/// One line of running text.
fn line(s: &str) -> String {
    s.replace(['\r', '\n'], " ")
}

/// Renders `report`.
pub fn render(report: &Report) -> String {
    let d = doc::build(report);
    let mut out = format!("# {}\n\n{}\n", line(&d.title), line(&d.byline));
    for s in &d.sections {
        out.push_str(&format!("\n## {}\n", line(&s.heading)));
        for b in &s.blocks {
            out.push('\n');
            match b {
                Block::Para(p) => out.push_str(&format!("{}\n", line(p))),
                Block::Heading(h) => out.push_str(&format!("### {}\n", line(h))),
                Block::List(items) => {
                    for i in items {
                        out.push_str(&format!("- {}\n", line(i)));
                    }
                }
                Block::Checks(items) => {
                    for (done, i) in items {
                        let mark = if *done { "x" } else { " " };
                        out.push_str(&format!("- [{mark}] {}\n", line(i)));
                    }
                }
                Block::Table {
                    caption,
                    head,
                    rows,
                } => {
                    out.push_str(&format!("{}:\n\n", line(caption)));
                    let head: Vec<String> = head.iter().map(|h| cell(h)).collect();
                    out.push_str(&format!("| {} |\n", head.join(" | ")));
                    out.push_str(&format!("|{}\n", "---|".repeat(head.len())));
                    for r in rows {
                        let r: Vec<String> = r.iter().map(|c| cell(c)).collect();
                        out.push_str(&format!("| {} |\n", r.join(" | ")));
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_stay_in_their_column() {
        assert_eq!(cell("a | b\nc"), "a \\| b c");
        assert_eq!(line("x\r\ny"), "x  y");
    }
}
