//! Every user-facing text of the command-line front-end (`drbot cmd`, `runs`, `show`,
//! `audit`, `check-config`). Other front-ends have their own text module.

use std::path::Path;

use crate::{
    config::{ConfigProblems, Settings},
    reply::{Reply, RunView, UserError},
    store::{
        audit::{AuditReport, AuditRow},
        runs::RunRow,
    },
};

fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| ms.to_string())
}

fn opt_time(ms: Option<i64>) -> String {
    ms.map(time).unwrap_or_else(|| "-".into())
}

/// `check-config` failure.
pub fn config_problems(path: &Path, p: &ConfigProblems) -> String {
    let n = p.0.len();
    format!(
        "{}: {n} problem{}:\n{p}",
        path.display(),
        if n == 1 { "" } else { "s" }
    )
}

/// `check-config` success.
pub fn config_ok(s: &Settings, json: bool) -> String {
    let c = &s.config;
    if json {
        return serde_json::json!({
            "ok": true, "revision": s.revision, "people": c.people.len(),
            "warnings": s.warnings,
            "regions": c.regions.keys().collect::<Vec<_>>(),
            "runbooks": c.runbooks.iter().map(|r| &r.name).collect::<Vec<_>>(),
        })
        .to_string();
    }
    let mut out = format!(
        "{}: OK ({} people, {} regions, {} runbooks; revision {})",
        s.path.display(),
        c.people.len(),
        c.regions.len(),
        c.runbooks.len(),
        &s.revision[..12]
    );
    for w in &s.warnings {
        out.push_str(&format!("\n  warning: {w}"));
    }
    out
}

/// Any reply, for the terminal. `unknown_as` names a `--as` person not in `[[people]]`.
pub fn reply(r: &Reply, unknown_as: Option<&str>) -> String {
    match r {
        Reply::Help { text, .. } => format!("{text}\n"),
        Reply::Status(s) => {
            let mut out = String::from("Regions:\n");
            for r in &s.regions {
                out.push_str(&format!(
                    "  {:<14} {:<10} {}\n",
                    r.name, r.role, r.description
                ));
            }
            if s.active.is_empty() {
                out.push_str("No active runs.\n");
            } else {
                out.push_str("Active runs:\n");
                out.push_str(&run_list(&s.active));
            }
            if !s.schedules.is_empty() {
                out.push_str("DR test schedules:\n");
                for sc in &s.schedules {
                    out.push_str(&format!(
                        "  {:<28} {}: {}; next due {}{}\n",
                        sc.name,
                        sc.command,
                        crate::slack::text::schedule_last(sc),
                        sc.next_due.as_deref().unwrap_or("never"),
                        if sc.overdue { "  OVERDUE" } else { "" }
                    ));
                }
            }
            out
        }
        Reply::Runs { runs } => run_list(runs),
        Reply::Run(v) => run_view(v),
        Reply::Requested(v) => {
            let head = if v.run.state.as_str() == "awaiting_approval" {
                format!(
                    "Run {} requested: waiting for approval by another person (`/dr approve {}`).\n",
                    v.run.id, v.run.id
                )
            } else {
                format!("Run {} queued.\n", v.run.id)
            };
            head + &run_view(v)
        }
        Reply::Approved { view, quorum } => {
            if *quorum {
                format!(
                    "Approved: run {} goes ahead ({}).\n",
                    view.run.id,
                    view.run.state.as_str()
                )
            } else {
                let req = view.request.as_ref().map(|r| r.required).unwrap_or(1);
                format!(
                    "Approval recorded for run {}: {} of {req}.\n",
                    view.run.id,
                    view.approvals.len()
                )
            }
        }
        Reply::Denied(v) => format!("Denied: run {} will not go ahead.\n", v.run.id),
        Reply::Cancelled { view, immediate } => {
            if *immediate {
                format!("Run {} cancelled.\n", view.run.id)
            } else {
                format!("Run {} will stop before its next step.\n", view.run.id)
            }
        }
        Reply::DecisionRequested(v) => {
            let action = v
                .request
                .as_ref()
                .map(|r| r.action.as_str())
                .unwrap_or("decision");
            format!(
                "Requested `{action}` on run {}: another person must approve it (`/dr {action} {}`).\n",
                v.run.id, v.run.id
            )
        }
        Reply::Incident(v) => incident_view(v),
        Reply::Checklist(v) | Reply::Ticked { view: v, .. } => checklist_view(v),
        Reply::Checklists { checklists } => {
            let mut t = String::from("Checklists (post one with `/dr checklist <name>`):\n");
            for c in checklists {
                t.push_str(&format!(
                    "  {:<22} {} ({} items)\n",
                    c.name,
                    c.title,
                    c.items.len()
                ));
            }
            t
        }
        Reply::Refused(UserError::UnknownAccount) if unknown_as.is_some() => format!(
            "`{}` is not in [[people]], so only help, status, runs and run are allowed.\n",
            unknown_as.unwrap_or_default()
        ),
        Reply::Refused(e) => format!("{e}\n"),
        Reply::Internal { reference } => {
            format!("Something went wrong inside drbot (reference {reference}); see its log.\n")
        }
    }
}

/// `drbot runs`.
pub fn run_list(runs: &[RunRow]) -> String {
    if runs.is_empty() {
        return "No runs.\n".into();
    }
    let mut out = format!(
        "{:>5}  {:<18} {:<20} {:<14} {}\n",
        "RUN", "STATE", "RUNBOOK", "BY", "CREATED"
    );
    for r in runs {
        out.push_str(&format!(
            "{:>5}  {:<18} {:<20} {:<14} {}\n",
            r.id,
            r.state.as_str(),
            r.runbook,
            r.requested_by,
            time(r.created_at)
        ));
    }
    out
}

/// `drbot show <run>`.
pub fn run_view(v: &RunView) -> String {
    let r = &v.run;
    let mut out = format!(
        "Run {}: {} — {}{}\n  command:     {}\n  requested:   {} ({} via {}) at {}\n  target:      {}\n  fingerprint: {}\n",
        r.id,
        r.runbook,
        r.state.as_str(),
        if v.missed_target() {
            " (drill targets MISSED)"
        } else {
            ""
        },
        r.command,
        r.requested_by,
        r.requested_account,
        r.platform,
        time(r.created_at),
        r.target,
        &r.fingerprint[..12.min(r.fingerprint.len())],
    );
    if r.dry_run {
        out.push_str("  dry run:     only read-only steps run\n");
    }
    if let Some(d) = &r.detail {
        out.push_str(&format!("  detail:      {d}\n"));
    }
    if let Some(req) = &v.request {
        out.push_str(&format!(
            "  request:     {} {} ({} of {} approvals; expires {})\n",
            req.action.as_str(),
            req.state,
            v.approvals.len(),
            req.required,
            time(req.expires_at)
        ));
        for a in &v.approvals {
            out.push_str(&format!(
                "    approved by {} ({} via {}) as {} at {}\n",
                a.person,
                a.account,
                a.platform,
                a.role,
                time(a.created_at)
            ));
        }
    }
    out.push_str("  steps:\n");
    for s in &v.steps {
        let marks = format!(
            "{}{}",
            if s.destructive { " [destructive]" } else { "" },
            if s.gate { " [gate]" } else { "" }
        );
        let dur = s
            .duration_ms
            .map(|d| format!(" {d} ms"))
            .unwrap_or_default();
        out.push_str(&format!(
            "    {}. {:<10} {}{}{}\n",
            s.idx + 1,
            s.state.as_str(),
            s.name,
            marks,
            dur
        ));
        if let Some(p) = r.plan.steps.get(s.idx as usize) {
            for t in &p.touches {
                out.push_str(&format!("         → {t}\n"));
            }
        }
        if let Some(e) = &s.error {
            out.push_str(&format!("         error: {e}\n"));
        }
    }
    out.push_str(&format!(
        "  started: {}  finished: {}\n",
        opt_time(r.started_at),
        opt_time(r.finished_at)
    ));
    out
}

/// `drbot audit`.
pub fn audit_rows(rows: &[AuditRow]) -> String {
    let mut out = String::new();
    for r in rows {
        out.push_str(&format!(
            "{:>6} {} {:<8} {:<20} {:<20} run={} {}\n",
            r.seq,
            time(r.at),
            r.platform,
            r.person.as_deref().or(r.account.as_deref()).unwrap_or("-"),
            r.action,
            r.run_id
                .map(|i| i.to_string())
                .unwrap_or_else(|| "-".into()),
            r.detail
        ));
    }
    out
}

/// `drbot audit --verify`.
pub fn audit_report(r: &AuditReport) -> String {
    if r.problems.is_empty() {
        format!(
            "audit log intact: {} rows, head {}:{}\n",
            r.rows, r.head_seq, r.head
        )
    } else {
        let mut out = format!(
            "audit log TAMPERED: {} problem(s) in {} rows\n",
            r.problems.len(),
            r.rows
        );
        for p in &r.problems {
            out.push_str(&format!("  - {p}\n"));
        }
        out
    }
}

/// `drbot outbox --retry` with something other than an id or `all`.
pub const OUTBOX_RETRY_USAGE: &str =
    "error: --retry takes a row id from `drbot outbox` or `all` (every failed row)";
/// `drbot outbox --state` with an unknown state.
pub const OUTBOX_STATE_USAGE: &str = "--state is one of pending, sending, delivered, failed";

/// How many failed deliveries went back in the queue, and how many were left failed because
/// a later delivery of their ordering group went out.
pub fn outbox_retried(n: u64, superseded: u64) -> String {
    let mut out = match (n, superseded) {
        (0, 0) => "No failed delivery matched; nothing to retry.".to_string(),
        (0, _) => "Nothing to retry.".to_string(),
        (1, _) => "1 failed delivery is queued again.".to_string(),
        (n, _) => format!("{n} failed deliveries are queued again."),
    };
    match superseded {
        0 => {}
        1 => out.push_str(
            " 1 stays failed: a later delivery of its group (a newer status update) already \
             went out or is going out, and sending it now would take the status back in time.",
        ),
        k => out.push_str(&format!(
            " {k} stay failed: a later delivery of their group (a newer status update) already \
             went out or is going out, and sending them now would take the status back in time."
        )),
    }
    out
}

/// The outbox listing.
pub fn outbox_rows(rows: &[crate::store::outbox::OutboxRow]) -> String {
    if rows.is_empty() {
        return "The outbox is empty.\n".into();
    }
    let mut out = String::new();
    for r in rows {
        out.push_str(&format!(
            "{:>6}  {:<9} {:<10} attempts {:<3} {}  {}\n",
            r.id,
            r.state,
            r.channel,
            r.attempts,
            time(r.created_at),
            r.key
        ));
        if let Some(e) = r.last_error.as_deref().filter(|_| r.state != "delivered") {
            out.push_str(&format!("        last error: {e}\n"));
        }
    }
    out
}

/// `drbot notify preview` without a name.
pub fn template_list(names: &[&str]) -> String {
    let mut out = String::from("Templates (drbot notify preview <name>):\n");
    for n in names {
        out.push_str(&format!("  {n}\n"));
    }
    out
}

/// `drbot notify preview` with a name that is not a template.
pub fn unknown_template(name: &str, names: &[&str]) -> String {
    format!(
        "error: no template `{name}` (templates: {})",
        names.join(", ")
    )
}

/// `/dr incident …` answered in the terminal: what changed, the timeline, where it is sent.
pub fn incident_view(v: &crate::reply::IncidentView) -> String {
    use crate::reply::IncidentChange;
    let i = &v.incident;
    let head = match v.change {
        IncidentChange::Opened => format!(
            "Incident {} opened: {} (impact {}).\n",
            i.id, i.name, i.impact
        ),
        IncidentChange::Updated => format!("Incident {} updated: {}.\n", i.id, i.status.as_str()),
        IncidentChange::Resolved => format!("Incident {} resolved.\n", i.id),
    };
    let mut out = head;
    for u in &v.updates {
        out.push_str(&format!(
            "  {}  {:<13} {} ({})\n",
            time(u.created_at),
            u.status.as_str(),
            u.body,
            u.author
        ));
    }
    if v.notified.is_empty() {
        out.push_str("Nothing to notify (no [statuspage], [slack] or [discord] configured).\n");
    } else {
        out.push_str(&format!("Sending to: {}.\n", v.notified.join(", ")));
    }
    out
}

/// `drbot subscribers import` with a file that cannot be read as CSV at all.
pub fn subscribers_unreadable(file: &Path, reason: &str) -> String {
    format!("error: cannot read {}: {reason}", file.display())
}

/// `drbot subscribers import` with a header that names a column twice.
pub fn subscribers_column_twice(file: &Path, name: &str, places: &[usize]) -> String {
    let places: Vec<String> = places.iter().map(usize::to_string).collect();
    format!(
        "error: {}: the header names `{name}` twice (columns {}); keep one",
        file.display(),
        places.join(" and ")
    )
}

/// `drbot subscribers import`: a quoted field runs from `from` to `to` (an unclosed quote).
pub fn subscribers_spanning_quote(from: u64, to: u64) -> String {
    format!(
        "a quote opened on line {from} runs to line {to} (an unclosed quote?): nothing on lines \
         {from}-{to} was imported; close the quote and import the file again (addresses already \
         imported are reported as already present)"
    )
}

/// `drbot subscribers import` with a file whose header has no `email` column.
pub fn subscribers_no_email_column(file: &Path) -> String {
    format!(
        "error: {}: the first line must be a header with an `email` column, e.g. `email,name`",
        file.display()
    )
}

/// An unsubscribed address the import left alone (`in_file`: the line says it unsubscribed,
/// which `--resubscribe` does not override).
pub fn subscriber_skipped(email: &str, in_file: bool) -> String {
    if in_file {
        format!("{email} is unsubscribed, as the file says; skipped")
    } else {
        format!("{email} unsubscribed earlier; skipped (--resubscribe subscribes it again)")
    }
}

/// What `drbot subscribers import` did.
pub fn subscriber_import(file: &Path, r: &crate::cli::subscribers::ImportReport) -> String {
    let mut parts = vec![
        format!("{} added", r.added),
        format!("{} already present", r.already_present),
    ];
    if r.added_unsubscribed > 0 {
        parts.push(format!("{} added as unsubscribed", r.added_unsubscribed));
    }
    if r.resubscribed > 0 {
        parts.push(format!("{} resubscribed", r.resubscribed));
    }
    if r.unsubscribed > 0 {
        parts.push(format!("{} unsubscribed as the file says", r.unsubscribed));
    }
    parts.push(format!("{} unsubscribed (skipped)", r.skipped.len()));
    parts.push(format!("{} invalid", r.invalid.len()));
    let mut out = format!("{}: {}.\n", file.display(), parts.join(", "));
    let mut lines: Vec<&crate::cli::subscribers::ImportLine> =
        r.invalid.iter().chain(&r.skipped).collect();
    lines.sort_by_key(|l| l.line);
    for l in lines {
        out.push_str(&format!("  line {}: {}\n", l.line, l.message));
    }
    if !r.invalid.is_empty() {
        out.push_str(
            "The other lines were imported; fix the invalid ones and import the file again.\n",
        );
    }
    out
}

/// `drbot subscribers list`.
pub fn subscriber_list(rows: &[crate::store::subscribers::SubscriberRow]) -> String {
    if rows.is_empty() {
        return "No subscribers (drbot subscribers import <file.csv> adds them).\n".into();
    }
    let mut out = format!(
        "{:>7}  {:<32} {:<24} {:<24} {}\n",
        "ID", "EMAIL", "NAME", "SUBSCRIBED", "UNSUBSCRIBED"
    );
    for r in rows {
        out.push_str(&format!(
            "{:>7}  {:<32} {:<24} {:<24} {}\n",
            r.id,
            r.email,
            r.name.as_deref().unwrap_or("-"),
            time(r.created_at),
            opt_time(r.unsubscribed_at)
        ));
    }
    out
}

/// `drbot subscribers count`.
pub fn subscriber_counts(c: &crate::store::subscribers::SubscriberCounts) -> String {
    format!(
        "{} active subscriber{}, {} unsubscribed",
        c.active,
        if c.active == 1 { "" } else { "s" },
        c.unsubscribed
    )
}

/// `drbot subscribers export <file>` done.
pub fn subscribers_exported(n: usize, file: &Path) -> String {
    format!("Exported {n} subscriber(s) to {}.", file.display())
}

/// A checklist instance: its items, ticked or not, and by whom. Ticking needs a chat button.
fn checklist_view(v: &crate::store::checklists::ChecklistView) -> String {
    let i = &v.instance;
    let mut t = format!(
        "Checklist #{} {} ({}): {}/{} done, posted by {} at {}\n",
        i.id,
        i.title,
        i.name,
        v.done(),
        i.items.len(),
        i.created_by,
        time(i.created_at)
    );
    for item in &i.items {
        match v.tick(&item.id) {
            Some(tk) => t.push_str(&format!(
                "  [x] {} ({}, ticked by {} at {})\n",
                item.text,
                item.id,
                tk.ticked_by,
                time(tk.ticked_at)
            )),
            None => t.push_str(&format!("  [ ] {} ({})\n", item.text, item.id)),
        }
    }
    t.push_str(&format!(
        "Tick items on the message drbot posts in Slack or Discord, or with `/dr checklist tick \
         {} <item>`.\n",
        i.id
    ));
    t
}

/// `drbot report`/`timeline` with a subject that is not `incident:<id>` or `run:<id>`.
pub fn report_subject_usage(command: &str, given: &str) -> String {
    format!(
        "`{given}` is not a report subject: use incident:<id> or run:<id>, e.g. \
         `drbot {command} incident:12`"
    )
}

/// No such incident or run.
pub fn report_not_found(subject: crate::report::Subject) -> String {
    match subject {
        crate::report::Subject::Incident(id) => format!("No incident {id}."),
        crate::report::Subject::Run(id) => format!("No run {id}."),
    }
}

/// One part of a customer notice's preview.
pub fn template_part(file: &str, rendered: &str) -> String {
    format!("==> {file}\n{rendered}\n")
}

/// A store-only command ran without an integration whose secrets are not set.
pub fn section_left_out(section: &str) -> String {
    format!("note: {section}: left out; this command does not need it")
}

/// `drbot report` onto a report that exists.
pub fn report_exists(path: &Path) -> String {
    format!(
        "{} exists already and may hold your edits (\"Lessons learned\"): nothing was written. \
         Write to another directory with --out, or replace it with --force.",
        path.display()
    )
}

/// `drbot report` done.
pub fn report_written(md: &Path, html: &Path) -> String {
    format!(
        "Wrote {} and {} (fill in \"Lessons learned\" in the Markdown).",
        md.display(),
        html.display()
    )
}

/// `drbot timeline`: milestones, the time between them, then every event.
pub fn timeline(title: &str, t: &crate::report::timeline::Timeline) -> String {
    use crate::report::duration;
    let mut out = format!("{title}\n\nMilestones:\n");
    for m in &t.milestones {
        out.push_str(&format!(
            "  {:<13} {:<24} {}\n",
            m.milestone.label(),
            opt_time(m.at),
            m.source
        ));
    }
    out.push_str("Between them:\n");
    for s in &t.segments {
        let d = match (s.ms, s.reversed) {
            (Some(ms), _) => duration(ms),
            (None, true) => format!("- ({} came first)", s.to.label().to_lowercase()),
            (None, false) => "-".into(),
        };
        out.push_str(&format!(
            "  {:<13} {:<29} {d}\n",
            s.phase,
            format!("{} → {}", s.from.label(), s.to.label())
        ));
    }
    out.push_str(&format!(
        "  Detection → verification: {}\n\nEvents:\n",
        t.total_ms.map(duration).unwrap_or_else(|| "-".into())
    ));
    for e in &t.events {
        out.push_str(&format!(
            "  {}  {:<10} {}\n",
            time(e.at),
            e.who.as_deref().unwrap_or("drbot"),
            e.text
        ));
    }
    out
}
