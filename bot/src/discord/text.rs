//! Every user-facing text of the Discord front-end (ephemeral replies to `/dr`).

use crate::reply::Reply;

/// The ephemeral answer to a `/dr` command (Discord markdown, at most 2000 characters).
pub fn command_reply(r: &Reply) -> String {
    let text = match r {
        Reply::Help { text, .. } => format!("```\n{text}\n```"),
        Reply::Status(s) => {
            let mut t = String::from("**Regions**\n");
            for r in &s.regions {
                t.push_str(&format!("• `{}` {} {}\n", r.name, r.role, r.description));
            }
            if s.active.is_empty() {
                t.push_str("No active runs.");
            } else {
                t.push_str("**Active runs**\n");
                for r in &s.active {
                    t.push_str(&format!(
                        "• run {} `{}` {} (by {})\n",
                        r.id,
                        r.runbook,
                        r.state.as_str(),
                        r.requested_by
                    ));
                }
            }
            t
        }
        Reply::Runs { runs } if runs.is_empty() => "No runs yet.".into(),
        Reply::Runs { runs } => runs
            .iter()
            .map(|r| {
                format!(
                    "• run {} `{}` {} (by {})",
                    r.id,
                    r.runbook,
                    r.state.as_str(),
                    r.requested_by
                )
            })
            .collect::<Vec<_>>()
            .join("\n"),
        Reply::Run(v) => format!(
            "Run {}: `{}` {}",
            v.run.id,
            v.run.runbook,
            v.run.state.as_str()
        ),
        Reply::Requested(v) if v.run.state.as_str() == "awaiting_approval" => format!(
            "Run {} requested: another allowed person must approve it (`/dr approve {}`).",
            v.run.id, v.run.id
        ),
        Reply::Requested(v) => format!("Run {} queued (no approval needed).", v.run.id),
        Reply::Approved { view, quorum: true } => {
            format!("Approved: run {} goes ahead.", view.run.id)
        }
        Reply::Approved { view, .. } => format!("Approval recorded for run {}.", view.run.id),
        Reply::Denied(v) => format!("Denied: run {} will not go ahead.", v.run.id),
        Reply::Cancelled {
            view,
            immediate: true,
        } => format!("Run {} cancelled.", view.run.id),
        Reply::Cancelled { view, .. } => {
            format!("Run {} will stop before its next step.", view.run.id)
        }
        Reply::DecisionRequested(v) => format!(
            "Requested on run {}: another person must approve it.",
            v.run.id
        ),
        Reply::Refused(e) => e.to_string(),
        Reply::Internal { reference } => {
            format!("Something went wrong inside drbot (reference `{reference}`).")
        }
    };
    truncate(&text, 2000)
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
}

/// A malformed interaction payload.
pub const MALFORMED: &str = "drbot could not read this interaction.";
