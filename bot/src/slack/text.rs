//! Every user-facing text of the Slack front-end: ephemeral replies and the Block Kit card that
//! is first the approval request and then the run's live progress card.

use chrono::DateTime;
use serde_json::{Value, json};
use slack_morphism::prelude::*;

use crate::{
    reply::{Reply, RunView},
    store::runs::{RequestAction, RunState},
};
use recovery::engine::StepState;

/// Button values: `<verb>:<run>:<request>` (request 0 for retry/skip/abort).
pub fn button_value(verb: &str, run: i64, request: i64) -> String {
    format!("{verb}:{run}:{request}")
}

fn when(ms: i64) -> String {
    let secs = ms / 1000;
    let fallback = DateTime::from_timestamp(secs, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default();
    format!("<!date^{secs}^{{date_short_pretty}} {{time}}|{fallback}>")
}

/// Escapes text for mrkdwn (`&`, `<`, `>`).
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `c` as mrkdwn: its escape, or itself (encoded in `buf`).
fn esc_char(c: char, buf: &mut [u8; 4]) -> &str {
    match c {
        '&' => "&amp;",
        '<' => "&lt;",
        '>' => "&gt;",
        c => c.encode_utf8(buf),
    }
}

/// `esc(s)` cut to at most `max` bytes (then ending in `…`), never inside an escape: keeps
/// a section within Slack's 3,000-character limit whatever a step or a person wrote.
pub fn esc_clip(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max));
    let mut buf = [0u8; 4];
    for c in s.chars() {
        let piece = esc_char(c, &mut buf);
        if out.len() + piece.len() > max.saturating_sub('…'.len_utf8()) {
            out.push('…');
            break;
        }
        out.push_str(piece);
    }
    out
}

/// Longest text drbot puts in one section block (Slack refuses a section over 3,000
/// characters with `invalid_blocks`, and the whole message with it).
pub const SECTION_MAX: usize = 2_900;

/// A person's text (an incident update, an alert) as section blocks: escaped, split into
/// sections of at most [`SECTION_MAX`] bytes between characters (never inside an escape), so a
/// long update is posted whole instead of refused.
pub fn text_sections(s: &str) -> Value {
    let mut sections = vec![String::new()];
    let mut buf = [0u8; 4];
    for c in s.chars() {
        let piece = esc_char(c, &mut buf);
        let last = sections.last_mut().expect("never empty");
        if last.len() + piece.len() > SECTION_MAX {
            sections.push(piece.to_string());
        } else {
            last.push_str(piece);
        }
    }
    Value::Array(
        sections
            .into_iter()
            .map(|t| json!({ "type": "section", "text": { "type": "mrkdwn", "text": t } }))
            .collect(),
    )
}

fn state_mark(s: StepState) -> &'static str {
    match s {
        StepState::Pending => "○",
        StepState::Running => "▶",
        StepState::Succeeded => "✓",
        StepState::Failed => "✗",
        StepState::Skipped => "↷",
    }
}

fn run_headline(v: &RunView) -> String {
    let r = &v.run;
    let what = match r.state {
        RunState::AwaitingApproval => "Approval needed",
        RunState::AwaitingGate => "Approval needed before a gated step",
        RunState::NeedsAttention if r.held_step.is_some() => "Waiting for checklist items",
        RunState::NeedsAttention => "Needs attention",
        RunState::Queued => "Approved, starting",
        RunState::Running => "Running",
        RunState::Succeeded if v.missed_target() => "Done, drill targets MISSED",
        RunState::Succeeded => "Done",
        RunState::Failed => "Failed",
        RunState::Cancelled => "Cancelled",
        RunState::Denied => "Denied",
        RunState::Expired => "Expired",
        RunState::Void => "Void: plan changed",
        RunState::Aborted => "Aborted",
    };
    format!("{what}: {} (run {})", r.runbook, r.id)
}

/// Plain-text fallback of the card (notifications, screen readers).
pub fn card_text(v: &RunView) -> String {
    run_headline(v)
}

/// The card for a run: request details, plan with destructive steps marked, preflight and
/// progress, approvals, and the buttons that apply now.
pub fn card(v: &RunView) -> Value {
    let r = &v.run;
    let mut blocks: Vec<SlackBlock> = vec![SlackHeaderBlock::new(pt!(run_headline(v))).into()];
    let args = if r.plan.args.is_empty() {
        "none".to_string()
    } else {
        r.plan
            .args
            .iter()
            .map(|(k, v)| format!("{k}=`{}`", esc(v)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut facts = format!(
        "*Runbook:* {} v{}{}\n*Arguments:* {args}\n*Requested by:* {} ({} via {})\n*Fingerprint:* `{}`",
        esc(&r.runbook),
        r.plan.version,
        if r.dry_run { " (dry run)" } else { "" },
        esc(&r.requested_by),
        esc(&r.requested_account),
        r.platform,
        &r.fingerprint[..12.min(r.fingerprint.len())],
    );
    if let Some(d) = &r.detail {
        facts.push_str(&format!("\n*Note:* {}", esc_clip(d, 1500)));
    }
    blocks.push(SlackSectionBlock::new().with_text(md!(facts)).into());
    let mut plan = String::from("*Plan*\n");
    for s in &v.steps {
        let mut marks = String::new();
        if s.destructive {
            marks.push_str(" ⚠ _destructive_");
        }
        if s.gate {
            marks.push_str(" 🔒 _gate_");
        }
        let dur = s
            .duration_ms
            .map(|d| format!(" — {}", duration(d)))
            .unwrap_or_default();
        plan.push_str(&format!(
            "{} {}. {}{marks}{dur}\n",
            state_mark(s.state),
            s.idx + 1,
            esc(&s.name)
        ));
        for t in touches(r, s.idx) {
            plan.push_str(&format!("      → {}\n", esc(t)));
        }
        if let Some(sum) = s
            .summary
            .as_deref()
            .filter(|_| s.state != StepState::Pending)
        {
            plan.push_str(&format!("      _{}_\n", esc(&truncate(sum, 150))));
        }
    }
    blocks.push(
        SlackSectionBlock::new()
            .with_text(md!(truncate(&plan, 2900)))
            .into(),
    );
    if let Some(req) = &v.request {
        let mut line = format!(
            "*{}* — {} of {} approval(s)",
            request_label(req.action, req.step_idx),
            v.approvals.len(),
            req.required
        );
        if req.state == "pending" {
            line.push_str(&format!(", expires {}", when(req.expires_at)));
        } else {
            line.push_str(&format!(", {}", req.state));
        }
        for a in &v.approvals {
            line.push_str(&format!(
                "\n✓ approved by *{}* ({}) {}",
                esc(&a.person),
                esc(&a.role),
                when(a.created_at)
            ));
        }
        if let (Some(by), "denied") = (&req.decided_by, req.state.as_str()) {
            line.push_str(&format!("\n✗ denied by *{}*", esc(by)));
            if let Some(reason) = &req.reason {
                // The whole reason is in the audit log; the card keeps within Slack's limit.
                line.push_str(&format!(": {}", esc_clip(reason, 1_000)));
            }
        }
        blocks.push(SlackSectionBlock::new().with_text(md!(line)).into());
        if req.state == "pending" {
            blocks.push(approve_deny(r.id, req.id, req.action).into());
        }
    }
    let open = v.request.as_ref().is_some_and(|q| q.state == "pending");
    if r.state == RunState::NeedsAttention && !open {
        blocks.push(attention_buttons(r.id).into());
    }
    blocks.push(
        SlackContextBlock::new(vec![SlackContextBlockElement::MarkDown(
            SlackBlockMarkDownText::new(format!(
                "drbot run {} · target `{}` · requested {}",
                r.id,
                esc(&r.target),
                when(r.created_at)
            )),
        )])
        .into(),
    );
    serde_json::to_value(&blocks).unwrap_or_else(|_| json!([]))
}

fn request_label(action: RequestAction, step: Option<i64>) -> String {
    let step = step.map(|s| format!(" step {}", s + 1)).unwrap_or_default();
    match action {
        RequestAction::Run => "Run approval".into(),
        RequestAction::Gate => format!("Gate before{step}"),
        RequestAction::Retry => format!("Retry{step}"),
        RequestAction::Skip => format!("Skip{step}"),
        RequestAction::Abort => "Abort the run".into(),
    }
}

fn approve_deny(run: i64, request: i64, action: RequestAction) -> SlackActionsBlock {
    let approve = match action {
        RequestAction::Run | RequestAction::Gate => "Approve".to_string(),
        other => format!("Approve {}", other.as_str()),
    };
    let deny_confirm = SlackBlockConfirmItem::new(
        pt!("Deny this request?"),
        md!("The request ends at once; the requester must ask again."),
        pt!("Deny"),
        pt!("Keep it"),
    )
    .with_style("danger".into());
    SlackActionsBlock::new(vec![
        SlackBlockButtonElement::new(pt!(approve))
            .with_action_id("approve".into())
            .with_value(button_value("approve", run, request))
            .with_style(SlackBlockButtonStyle::Primary)
            .into(),
        SlackBlockButtonElement::new(pt!("Deny"))
            .with_action_id("deny".into())
            .with_value(button_value("deny", run, request))
            .with_style(SlackBlockButtonStyle::Danger)
            .with_confirm(deny_confirm)
            .into(),
    ])
}

fn attention_buttons(run: i64) -> SlackActionsBlock {
    SlackActionsBlock::new(vec![
        SlackBlockButtonElement::new(pt!("Retry step"))
            .with_action_id("retry".into())
            .with_value(button_value("retry", run, 0))
            .into(),
        SlackBlockButtonElement::new(pt!("Skip step"))
            .with_action_id("skip".into())
            .with_value(button_value("skip", run, 0))
            .into(),
        SlackBlockButtonElement::new(pt!("Abort run"))
            .with_action_id("abort".into())
            .with_value(button_value("abort", run, 0))
            .with_style(SlackBlockButtonStyle::Danger)
            .into(),
    ])
}

fn duration(ms: i64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 120_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        format!("{} min {} s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// A thread reply with a step's details (output, error).
pub fn step_detail(
    name: &str,
    idx: i64,
    state: StepState,
    error: Option<&str>,
    log: Option<&str>,
) -> String {
    // One section holds it all: Slack refuses a section over 3,000 characters.
    let mut t = format!(
        "{} Step {}. *{}* {}",
        state_mark(state),
        idx + 1,
        esc_clip(name, 200),
        state.as_str()
    );
    if let Some(e) = error {
        t.push_str(&format!("\n*Error:* {}", esc_clip(e, 800)));
    }
    if let Some(l) = log.filter(|l| !l.trim().is_empty()) {
        let room = 2990usize.saturating_sub(t.len() + 8);
        t.push_str(&format!(
            "\n```{}```",
            esc_clip(&l.replace("```", "'''"), room)
        ));
    }
    t
}

/// The answer to a command whose work outlasts Slack's 3 s: its own answer follows.
pub fn working() -> Value {
    json!({
        "response_type": "ephemeral",
        "text": "Working on it: drbot's answer will follow here in a moment."
    })
}

/// The immediate (ephemeral) answer to a slash command.
pub fn command_reply(r: &Reply) -> Value {
    let text = match r {
        Reply::Help { text, .. } => format!("```{text}```"),
        Reply::Status(s) => {
            let mut t = String::from("*Regions*\n");
            for r in &s.regions {
                t.push_str(&format!(
                    "• `{}` {} {}\n",
                    r.name,
                    r.role,
                    esc(&r.description)
                ));
            }
            if s.active.is_empty() {
                t.push_str("No active runs.");
            } else {
                t.push_str("*Active runs*\n");
                for r in &s.active {
                    t.push_str(&format!(
                        "• run {} `{}` {} (by {})\n",
                        r.id,
                        r.runbook,
                        r.state.as_str(),
                        esc(&r.requested_by)
                    ));
                }
            }
            if !s.schedules.is_empty() {
                t.push_str("\n*DR test schedules*\n");
                for sc in &s.schedules {
                    t.push_str(&format!(
                        "• `{}` `{}`: {}; next due {}{}\n",
                        esc(&sc.name),
                        esc(&sc.command),
                        esc(&schedule_last(sc)),
                        sc.next_due.as_deref().unwrap_or("never"),
                        if sc.overdue {
                            " :warning: *overdue*"
                        } else {
                            ""
                        }
                    ));
                }
            }
            t
        }
        Reply::Runs { runs } => {
            if runs.is_empty() {
                "No runs yet.".into()
            } else {
                runs.iter()
                    .map(|r| {
                        format!(
                            "• run {} `{}` {} (by {})",
                            r.id,
                            r.runbook,
                            r.state.as_str(),
                            esc(&r.requested_by)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            }
        }
        Reply::Run(v) => {
            return json!({ "response_type": "ephemeral", "text": card_text(v), "blocks": card_static(v) });
        }
        Reply::Requested(v) => {
            let head = if v.run.state == RunState::AwaitingApproval {
                format!(
                    "Run {} requested. Its approval request goes to this channel and the incident channel; another allowed person must approve it.",
                    v.run.id
                )
            } else {
                format!("Run {} queued (no approval needed).", v.run.id)
            };
            return json!({ "response_type": "ephemeral", "text": head, "blocks": preview(&head, v) });
        }
        Reply::Approved { view, quorum } => {
            if *quorum {
                format!("Approved: run {} goes ahead.", view.run.id)
            } else {
                format!("Approval recorded for run {}.", view.run.id)
            }
        }
        Reply::Denied(v) => format!("Denied: run {} will not go ahead.", v.run.id),
        Reply::Cancelled { view, immediate } => {
            if *immediate {
                format!("Run {} cancelled.", view.run.id)
            } else {
                format!("Run {} will stop before its next step.", view.run.id)
            }
        }
        Reply::DecisionRequested(v) => format!(
            "Requested on run {}: another person must approve it on the run's card.",
            v.run.id
        ),
        Reply::Incident(v) => incident_reply(v),
        Reply::Checklist(v) => format!(
            "Posted checklist *{}* ({} items) in this channel; anyone in drbot's people list can tick its items.",
            esc(&v.instance.title),
            v.instance.items.len()
        ),
        Reply::Checklists { checklists } => {
            let mut t = String::from("*Checklists* (post one with `/dr checklist <name>`)\n");
            for c in checklists {
                t.push_str(&format!(
                    "• `{}` {} ({} items)\n",
                    c.name,
                    esc(&c.title),
                    c.items.len()
                ));
            }
            t
        }
        Reply::Ticked { item, ticked, .. } => format!(
            "{} `{}`.",
            if *ticked { "Ticked" } else { "Unticked" },
            esc(item)
        ),
        Reply::Refused(e) => esc(&e.to_string()),
        Reply::Internal { reference } => format!(
            "Something went wrong inside drbot (reference `{reference}`); the on-call engineer can find it in drbot's log."
        ),
    };
    json!({ "response_type": "ephemeral", "text": text })
}

fn preview(head: &str, v: &RunView) -> Value {
    let mut blocks =
        vec![json!({ "type": "section", "text": { "type": "mrkdwn", "text": esc(head) } })];
    if let Value::Array(card) = card_static(v) {
        blocks.extend(card);
    }
    Value::Array(blocks)
}

/// The card without buttons (for ephemeral previews and `/dr run`).
fn card_static(v: &RunView) -> Value {
    match card(v) {
        Value::Array(b) => Value::Array(b.into_iter().filter(|b| b["type"] != "actions").collect()),
        other => other,
    }
}

/// Ephemeral answer to a click that was refused.
pub fn click_refused(r: &Reply) -> String {
    match r {
        Reply::Refused(e) => e.to_string(),
        Reply::Internal { reference } => {
            format!("Something went wrong inside drbot (reference {reference}).")
        }
        _ => String::new(),
    }
}

/// What step `idx` of the run's plan acts on (clusters, backup stores).
fn touches(r: &crate::store::runs::RunRow, idx: i64) -> &[String] {
    r.plan
        .steps
        .get(idx as usize)
        .map(|p| p.touches.as_slice())
        .unwrap_or_default()
}

fn incident_reply(v: &crate::reply::IncidentView) -> String {
    use crate::reply::IncidentChange;
    let i = &v.incident;
    let mut t = match v.change {
        IncidentChange::Opened => format!("Incident {} opened: *{}*.", i.id, esc(&i.name)),
        IncidentChange::Updated => format!("Incident {} updated ({}).", i.id, i.status.as_str()),
        IncidentChange::Resolved => format!("Incident {} resolved.", i.id),
    };
    if !v.notified.is_empty() {
        t.push_str(&format!(" Sending to {}.", v.notified.join(", ")));
    }
    t
}

/// The health monitor's alert that `region` is down, proposing a failover to `target`.
pub fn region_down(region: &str, error: &str, target: Option<&str>) -> String {
    match target {
        Some(to) => format!(
            ":rotating_light: Region {region} is down ({error}). If this is a disaster, start a \
             failover to {to} below: it still needs two-person approval."
        ),
        None => format!(":warning: Region {region} is down ({error})."),
    }
}

/// The health monitor's notice that `region` is healthy again.
pub fn region_up(region: &str) -> String {
    format!(":white_check_mark: Region {region} passes its health checks again.")
}

/// The reminder that customers have not heard from an open incident for a while.
pub fn incident_reminder(i: &crate::store::incidents::IncidentRow, silent_for: &str) -> String {
    format!(
        ":alarm_clock: Incident {} ({}) is still {} and customers have had no update for {silent_for}. \
         Post one: `/dr incident update <message>`",
        i.id,
        i.name,
        i.status.as_str()
    )
}

/// The incident channel broadcast of one incident change (plain text; `SlackBroadcast`
/// escapes it).
pub fn incident_news(
    change: crate::reply::IncidentChange,
    i: &crate::store::incidents::IncidentRow,
    u: &crate::store::incidents::IncidentUpdateRow,
) -> String {
    use crate::reply::IncidentChange;
    let head = match change {
        IncidentChange::Opened => {
            format!("Incident {} opened: {} (impact {})", i.id, i.name, i.impact)
        }
        IncidentChange::Updated => format!("Incident {} update: {}", i.id, u.status.as_str()),
        IncidentChange::Resolved => format!("Incident {} resolved", i.id),
    };
    format!("{head}\n{}\n— {}", u.body, u.author)
}

/// The post-incident report's link, posted once when incident `id` is resolved: the page on
/// drbot's server (`url`), else the command that writes it.
pub fn report_link(id: i64, name: &str, url: Option<&str>) -> String {
    let head = format!("Incident {id} report ({name})");
    match url {
        Some(u) => format!(
            "{head}: {u}\nTimeline, RTO/RPO against targets, approvals, notifications and \
             checklists. Fill in the lessons learned in the Markdown copy: \
             `drbot report incident:{id}`"
        ),
        None => format!(
            "{head}: write it with `drbot report incident:{id}` (Markdown and HTML), then \
             fill in the lessons learned."
        ),
    }
}

/// The notification text of a checklist message.
pub fn checklist_text(v: &crate::store::checklists::ChecklistView) -> String {
    format!(
        "Checklist {}: {}/{} done",
        v.instance.title,
        v.done(),
        v.instance.items.len()
    )
}

/// A checklist as Block Kit: a header, one section per item with a Tick/Untick button
/// (value `tick:<instance>:<item>`), and who ticked it when.
pub fn checklist(v: &crate::store::checklists::ChecklistView) -> Value {
    let i = &v.instance;
    let mut blocks = vec![json!({
        "type": "section",
        "text": { "type": "mrkdwn", "text": format!(
            "*Checklist: {}* (`{}`, #{}{}) — {}/{} done",
            esc(&i.title), i.name, i.id,
            i.run.map(|r| format!(", run {r}")).unwrap_or_default(),
            v.done(), i.items.len()
        )}
    })];
    for item in &i.items {
        let tick = v.tick(&item.id);
        let line = match tick {
            Some(t) => format!(
                ":white_check_mark: ~{}~\n_ticked by {} {}_",
                esc(&item.text),
                esc(&t.ticked_by),
                when(t.ticked_at)
            ),
            None => format!(":white_large_square: {}", esc(&item.text)),
        };
        let mut button = json!({
            "type": "button",
            "action_id": format!("tick-{}", item.id),
            "text": { "type": "plain_text", "text": if tick.is_some() { "Untick" } else { "Tick" } },
            "value": crate::checklists::tick::TickClick::value(i.id, &item.id),
        });
        if tick.is_none() {
            button["style"] = json!("primary");
        }
        blocks.push(json!({
            "type": "section",
            "block_id": format!("item-{}", item.id),
            "text": { "type": "mrkdwn", "text": line },
            "accessory": button,
        }));
    }
    blocks.push(json!({
        "type": "context",
        "elements": [{ "type": "mrkdwn", "text": format!(
            "Posted by {} {}. Ticks are recorded in drbot's audit log.",
            esc(&i.created_by), when(i.created_at)
        )}]
    }));
    Value::Array(blocks)
}

/// A schedule's last result in words (shared by the Slack, Discord and CLI status texts).
pub fn schedule_last(s: &crate::schedule::ScheduleStatus) -> String {
    match (&s.last_run, &s.last_error) {
        (Some((id, state)), _) => format!("last run {id} {state}"),
        (None, Some(e)) => match e.strip_prefix("missed: ") {
            Some(why) => format!("last due time missed ({why})"),
            None => format!("last fire refused ({e})"),
        },
        (None, None) => "not run yet".into(),
    }
}

/// The incident channel alert when a DR test schedule has had no passing run for too long.
pub fn schedule_overdue(
    name: &str,
    command: &str,
    last_success: Option<&str>,
    overdue_after: &str,
) -> String {
    format!(
        ":warning: DR test schedule `{name}` is overdue: no passing `{command}` run in {overdue_after} \
         (last success: {}). Run it: `{command}`",
        last_success.unwrap_or("never")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_detail_fits_one_section_whatever_the_step_wrote() {
        let error = "<!channel> & ".repeat(500);
        let log = "line <@U1> ``` & more\n".repeat(1000);
        let t = step_detail(
            &"n".repeat(400),
            2,
            StepState::Failed,
            Some(&error),
            Some(&log),
        );
        assert!(t.chars().count() <= 3000, "{} chars", t.chars().count());
        assert!(!t.contains("<!channel>") && !t.contains("<@U1>"), "{t}");
        assert!(t.contains("&lt;!channel&gt;") && t.contains("```line &lt;@U1&gt;"));
        assert!(t.ends_with("…```"), "{}", &t[t.len() - 20..]);
    }

    #[test]
    fn long_texts_are_split_into_sections_slack_accepts() {
        let text = "<!channel> a & b ü ".repeat(400);
        let blocks = text_sections(&text);
        let sections = blocks.as_array().unwrap();
        assert!(sections.len() >= 3, "{}", sections.len());
        let mut joined = String::new();
        for s in sections {
            let t = s["text"]["text"].as_str().unwrap();
            assert!(t.len() <= SECTION_MAX, "{}", t.len());
            assert!(!t.is_empty());
            joined.push_str(t);
        }
        assert_eq!(
            joined,
            esc(&text),
            "nothing lost, nothing cut inside an escape"
        );
        assert_eq!(text_sections("").as_array().unwrap().len(), 1);
    }

    #[test]
    fn clipping_never_cuts_an_escape() {
        for max in 0..40 {
            let c = esc_clip("a<b>&c<<>>&&ü€", max);
            assert!(c.len() <= max.max('…'.len_utf8()), "{max}: {c}");
            let body = c.trim_end_matches('…');
            assert!(
                esc(&body
                    .replace("&lt;", "<")
                    .replace("&gt;", ">")
                    .replace("&amp;", "&"))
                    == body,
                "{max}: {c}"
            );
        }
        assert_eq!(esc_clip("a<b", 100), "a&lt;b");
    }
}
