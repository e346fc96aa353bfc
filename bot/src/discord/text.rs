//! Every user-facing text of the Discord front-end (ephemeral replies to `/dr`).

use crate::reply::{IncidentChange, Reply};
use crate::store::incidents::{IncidentRow, IncidentUpdateRow};

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
            if !s.schedules.is_empty() {
                t.push_str("\n**DR test schedules**\n");
                for sc in &s.schedules {
                    t.push_str(&format!(
                        "• `{}` `{}`: {}; next due {}{}\n",
                        sc.name,
                        sc.command,
                        crate::slack::text::schedule_last(sc),
                        sc.next_due.as_deref().unwrap_or("never"),
                        if sc.overdue {
                            " ⚠️ **overdue**"
                        } else {
                            ""
                        }
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
        Reply::Incident(v) => {
            let i = &v.incident;
            let mut t = match v.change {
                IncidentChange::Opened => format!("Incident {} opened: **{}**.", i.id, i.name),
                IncidentChange::Updated => {
                    format!("Incident {} updated ({}).", i.id, i.status.as_str())
                }
                IncidentChange::Resolved => format!("Incident {} resolved.", i.id),
            };
            if !v.notified.is_empty() {
                t.push_str(&format!(" Sending to {}.", v.notified.join(", ")));
            }
            t
        }
        Reply::Checklist(v) => format!(
            "Posted checklist **{}** ({} items) in this channel; anyone in drbot's people list can tick its items.",
            v.instance.title,
            v.instance.items.len()
        ),
        Reply::Checklists { checklists } => {
            let mut t = String::from("**Checklists** (post one with `/dr checklist <name>`)\n");
            for c in checklists {
                t.push_str(&format!(
                    "- `{}` {} ({} items)\n",
                    c.name,
                    c.title,
                    c.items.len()
                ));
            }
            t
        }
        Reply::Ticked { item, ticked, .. } => {
            format!("{} `{item}`.", if *ticked { "Ticked" } else { "Unticked" })
        }
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

/// The card for a run (embed plus the buttons that apply now), as a message body.
pub fn card(v: &crate::reply::RunView) -> serde_json::Value {
    use crate::store::runs::RunState;
    use recovery::engine::StepState;
    use serde_json::json;
    let r = &v.run;
    let (what, color) = match r.state {
        RunState::AwaitingApproval => ("Approval needed", 0xE0A800),
        RunState::AwaitingGate => ("Approval needed before a gated step", 0xE0A800),
        RunState::NeedsAttention if r.held_step.is_some() => {
            ("Waiting for checklist items", 0xE0A800)
        }
        RunState::NeedsAttention => ("Needs attention", 0xD9480F),
        RunState::Queued => ("Approved, starting", 0x1C7ED6),
        RunState::Running => ("Running", 0x1C7ED6),
        RunState::Succeeded if v.missed_target() => ("Done, drill targets MISSED", 0xD9480F),
        RunState::Succeeded => ("Done", 0x2F9E44),
        RunState::Failed => ("Failed", 0xC92A2A),
        RunState::Cancelled => ("Cancelled", 0x868E96),
        RunState::Denied => ("Denied", 0x868E96),
        RunState::Expired => ("Expired", 0x868E96),
        RunState::Void => ("Void: plan changed", 0x868E96),
        RunState::Aborted => ("Aborted", 0x868E96),
    };
    let mut plan = String::new();
    for s in &v.steps {
        let mark = match s.state {
            StepState::Pending => "○",
            StepState::Running => "▶",
            StepState::Succeeded => "✓",
            StepState::Failed => "✗",
            StepState::Skipped => "↷",
        };
        let dur = s
            .duration_ms
            .map(|d| format!(" — {d} ms"))
            .unwrap_or_default();
        plan.push_str(&format!(
            "{mark} {}. {}{}{}{dur}\n",
            s.idx + 1,
            s.name,
            if s.destructive {
                " ⚠ destructive"
            } else {
                ""
            },
            if s.gate { " 🔒 gate" } else { "" }
        ));
        if let Some(p) = r.plan.steps.get(s.idx as usize) {
            for t in &p.touches {
                plan.push_str(&format!("  → {t}\n"));
            }
        }
    }
    let args: Vec<String> = r
        .plan
        .args
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let mut fields = vec![
        json!({ "name": "Requested by", "value": format!("{} ({} via {})", r.requested_by, r.requested_account, r.platform), "inline": true }),
        json!({ "name": "Arguments", "value": if args.is_empty() { "none".into() } else { args.join(", ") }, "inline": true }),
        json!({ "name": "Fingerprint", "value": format!("`{}`", &r.fingerprint[..12.min(r.fingerprint.len())]), "inline": true }),
    ];
    if let Some(held) = r.held_step.and(r.detail.as_deref()) {
        // Why the run waits: the unticked checklist items its next step requires.
        fields.push(json!({ "name": "Waiting for", "value": truncate(held, 1000) }));
    }
    let mut components = Vec::new();
    if let Some(req) = &v.request {
        let mut line = format!(
            "{} of {} approval(s), {}",
            v.approvals.len(),
            req.required,
            req.state
        );
        if req.state == "pending" {
            line.push_str(&format!(", expires <t:{}:R>", req.expires_at / 1000));
        }
        for a in &v.approvals {
            line.push_str(&format!("\n✓ approved by {} ({})", a.person, a.role));
        }
        if let (Some(by), "denied") = (&req.decided_by, req.state.as_str()) {
            line.push_str(&format!("\n✗ denied by {by}"));
        }
        fields.push(json!({ "name": format!("Request: {}", req.action.as_str()), "value": line }));
        if req.state == "pending" {
            components.push(json!({ "type": 1, "components": [
                { "type": 2, "style": 3, "label": "Approve", "custom_id": format!("approve:{}:{}", r.id, req.id) },
                { "type": 2, "style": 4, "label": "Deny", "custom_id": format!("deny:{}:{}", r.id, req.id) },
            ]}));
        }
    }
    let open = v.request.as_ref().is_some_and(|q| q.state == "pending");
    if r.state == RunState::NeedsAttention && !open {
        components.push(json!({ "type": 1, "components": [
            { "type": 2, "style": 2, "label": "Retry step", "custom_id": format!("retry:{}:0", r.id) },
            { "type": 2, "style": 2, "label": "Skip step", "custom_id": format!("skip:{}:0", r.id) },
            { "type": 2, "style": 4, "label": "Abort run", "custom_id": format!("abort:{}:0", r.id) },
        ]}));
    }
    json!({
        "content": "",
        "embeds": [{
            "title": format!("{what}: {} (run {})", r.runbook, r.id),
            "description": truncate(&plan, 4000),
            "color": color,
            "fields": fields,
            "footer": { "text": format!("drbot run {} · target {}", r.id, r.target) },
        }],
        "components": components,
        "allowed_mentions": { "parse": [] },
    })
}

/// A finished step's details, posted as a reply to the run's cards.
pub fn step_detail(
    name: &str,
    idx: i64,
    state: recovery::engine::StepState,
    summary: Option<&str>,
    error: Option<&str>,
    log: Option<&str>,
) -> String {
    let mut t = format!("Step {}. **{}** {}", idx + 1, name, state.as_str());
    if let Some(s) = summary.filter(|s| !s.trim().is_empty()) {
        t.push_str(&format!("\n{s}"));
    }
    if let Some(e) = error {
        t.push_str(&format!("\n**Error:** {e}"));
    }
    if let Some(l) = log.filter(|l| !l.trim().is_empty()) {
        t.push_str(&format!(
            "\n```\n{}\n```",
            truncate(&l.replace("```", "'''"), 1500)
        ));
    }
    truncate(&t, 2000)
}

/// Tells the person who typed the command how their run ended (or that it waits for a
/// person). `mention` is set when it goes to the channel instead of the interaction.
pub fn outcome(v: &crate::reply::RunView, mention: Option<&str>) -> String {
    use crate::store::runs::RunState;
    let r = &v.run;
    let what = match r.state {
        RunState::Succeeded if v.missed_target() => {
            "succeeded, but the drill MISSED its RTO or RPO target (see the measurement step)"
        }
        RunState::Succeeded => "succeeded",
        RunState::Failed => "failed",
        RunState::NeedsAttention if r.held_step.is_some() => {
            "is waiting for checklist items to be ticked"
        }
        RunState::NeedsAttention => "needs attention: a person must retry, skip or abort a step",
        RunState::AwaitingGate => "is waiting for approval of a gated step",
        RunState::Cancelled => "was cancelled",
        RunState::Denied => "was denied",
        RunState::Expired => "expired without approval",
        RunState::Void => "is void: the plan changed before approval",
        RunState::Aborted => "was aborted",
        _ => "changed state",
    };
    let took = match (r.started_at, r.finished_at) {
        (Some(s), Some(f)) => format!(
            " in {}",
            humantime::format_duration(std::time::Duration::from_secs(
                ((f - s).max(0) / 1000) as u64
            ))
        ),
        _ => String::new(),
    };
    let mut t = String::new();
    if let Some(user) = mention {
        t.push_str(&format!("<@{user}> "));
    }
    t.push_str(&format!("Run {} `{}` {what}{took}.", r.id, r.runbook));
    if let Some(d) = r.detail.as_deref().filter(|d| !d.is_empty()) {
        t.push_str(&format!("\n{d}"));
    }
    truncate(&t, 2000)
}

/// The health monitor's alert that `region` is down, proposing a failover to `target`.
pub fn region_down(region: &str, error: &str, target: Option<&str>) -> String {
    truncate(
        &match target {
            Some(to) => format!(
                "🚨 **Region {region} is down** ({error}). If this is a disaster, start a \
                 failover to {to} below: it still needs two-person approval."
            ),
            None => format!("⚠️ **Region {region} is down** ({error})."),
        },
        2000,
    )
}

/// The health monitor's notice that `region` is healthy again.
pub fn region_up(region: &str) -> String {
    format!("✅ Region {region} passes its health checks again.")
}

/// The reminder that customers have not heard from an open incident for a while.
pub fn incident_reminder(i: &IncidentRow, silent_for: &str) -> String {
    truncate(
        &format!(
            "⏰ **Incident {} ({}) is still {}** and customers have had no update for {silent_for}. \
             Post one: `/dr incident update <message>`",
            i.id,
            i.name,
            i.status.as_str()
        ),
        2000,
    )
}

/// The incident channel message of one incident change (Discord markdown, at most 2000
/// characters).
pub fn incident_news(change: IncidentChange, i: &IncidentRow, u: &IncidentUpdateRow) -> String {
    let head = match change {
        IncidentChange::Opened => {
            format!(
                "**Incident {} opened:** {} (impact {})",
                i.id, i.name, i.impact
            )
        }
        IncidentChange::Updated => format!("**Incident {} update:** {}", i.id, u.status.as_str()),
        IncidentChange::Resolved => format!("**Incident {} resolved**", i.id),
    };
    truncate(&format!("{head}\n{}\n— {}", u.body, u.author), 2000)
}

/// The post-incident report's link, posted once when incident `id` is resolved: the page on
/// drbot's server (`url`), else the command that writes it.
pub fn report_link(id: i64, name: &str, url: Option<&str>) -> String {
    let head = format!("**Incident {id} report** ({name})");
    let text = match url {
        Some(u) => format!(
            "{head}: {u}\nTimeline, RTO/RPO against targets, approvals, notifications and \
             checklists. Fill in the lessons learned in the Markdown copy: \
             `drbot report incident:{id}`"
        ),
        None => format!(
            "{head}: write it with `drbot report incident:{id}` (Markdown and HTML), then \
             fill in the lessons learned."
        ),
    };
    truncate(&text, 2000)
}

/// Buttons per action row and rows per message (Discord's limits).
const BUTTONS_PER_ROW: usize = 5;
const ROWS_PER_MESSAGE: usize = 5;
/// Items one checklist message holds.
pub const CHECKLIST_ITEMS_PER_MESSAGE: usize = BUTTONS_PER_ROW * ROWS_PER_MESSAGE;

/// A checklist as Discord message bodies, one per [`CHECKLIST_ITEMS_PER_MESSAGE`] items
/// (part `k` is element `k`): the items with who ticked them, and a button per item
/// (custom_id `tick:<instance>:<item>`, green once ticked).
pub fn checklist_parts(v: &crate::store::checklists::ChecklistView) -> Vec<serde_json::Value> {
    use serde_json::json;
    let i = &v.instance;
    let chunks: Vec<_> = i.items.chunks(CHECKLIST_ITEMS_PER_MESSAGE).collect();
    let parts = chunks.len();
    let mut out = Vec::with_capacity(parts);
    for (k, chunk) in chunks.into_iter().enumerate() {
        let first = k * CHECKLIST_ITEMS_PER_MESSAGE;
        let mut content = format!(
            "**Checklist: {}** (`{}`, #{}{}) — {}/{} done",
            i.title,
            i.name,
            i.id,
            i.run.map(|r| format!(", run {r}")).unwrap_or_default(),
            v.done(),
            i.items.len()
        );
        if parts > 1 {
            content.push_str(&format!(" · part {}/{parts}", k + 1));
        }
        content.push('\n');
        for (n, item) in chunk.iter().enumerate() {
            match v.tick(&item.id) {
                Some(t) => content.push_str(&format!(
                    "✅ {}. ~~{}~~ — {} <t:{}:t>\n",
                    first + n + 1,
                    item.text,
                    t.ticked_by,
                    t.ticked_at / 1000
                )),
                None => content.push_str(&format!("⬜ {}. {}\n", first + n + 1, item.text)),
            }
        }
        let rows: Vec<serde_json::Value> = chunk
            .chunks(BUTTONS_PER_ROW)
            .enumerate()
            .map(|(r, row)| {
                let buttons: Vec<serde_json::Value> = row
                    .iter()
                    .enumerate()
                    .map(|(n, item)| {
                        let ticked = v.tick(&item.id).is_some();
                        let label = format!(
                            "{} {}. {}",
                            if ticked { "✓" } else { "☐" },
                            first + r * BUTTONS_PER_ROW + n + 1,
                            item.text
                        );
                        json!({
                            "type": 2,
                            "style": if ticked { 3 } else { 2 },
                            "label": truncate(&label, 80),
                            "custom_id": crate::checklists::tick::TickClick::value(i.id, &item.id),
                        })
                    })
                    .collect();
                json!({ "type": 1, "components": buttons })
            })
            .collect();
        out.push(json!({
            "content": truncate(&content, 2000),
            "components": rows,
            "allowed_mentions": { "parse": [] },
        }));
    }
    out
}

/// The incident channel alert when a DR test schedule has had no passing run for too long
/// (Discord markdown, at most 2000 characters).
pub fn schedule_overdue(
    name: &str,
    command: &str,
    last_success: Option<&str>,
    overdue_after: &str,
) -> String {
    truncate(
        &format!(
            "⚠️ **DR test schedule `{name}` is overdue:** no passing `{command}` run in \
             {overdue_after} (last success: {}). Run it: `{command}`",
            last_success.unwrap_or("never")
        ),
        2000,
    )
}
