//! Checklists people tick in chat: the built-in ones ([`builtin`]) merged with `[[checklists]]`
//! and checked at load time ([`complete`]), runbooks' references to them checked
//! ([`runbook_problems`]), the one path a tick click takes whatever the platform ([`tick`]), and
//! the checklists of runs in chat ([`runs`]).

pub mod builtin;
pub mod runs;
pub mod tick;

use recovery::runbook::RunbookDef;

use crate::config::ChecklistDef;

/// Most items one checklist may have (Slack allows 50 blocks per message: a header, the
/// items, a footer).
pub const MAX_ITEMS: usize = 45;
/// Longest item id, in bytes (a Discord custom_id `tick:<instance>:<item>` must fit in 100).
pub const MAX_ITEM_ID: usize = 48;
/// Longest item text, in characters.
pub const MAX_ITEM_TEXT: usize = 300;
/// Longest title, in characters.
pub const MAX_TITLE: usize = 150;

fn valid_name(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// The problems of one checklist definition, each prefixed with `at`.
pub fn problems(c: &ChecklistDef, at: &str) -> Vec<String> {
    let mut out = Vec::new();
    if !valid_name(&c.name, crate::grammar::MAX_NAME_LEN) {
        out.push(format!(
            "{at}.name: `{}` is not a valid checklist name (lowercase letters, digits, `-` and \
             `_`, starting with a letter or digit, at most {} bytes)",
            c.name,
            crate::grammar::MAX_NAME_LEN
        ));
    }
    if ["tick", "untick"].contains(&c.name.as_str()) {
        out.push(format!(
            "{at}.name: `{}` is taken by `/dr checklist tick|untick`; choose another name",
            c.name
        ));
    }
    if c.title.trim().is_empty() || c.title.chars().count() > MAX_TITLE {
        out.push(format!("{at}.title: must be 1 to {MAX_TITLE} characters"));
    }
    if c.items.is_empty() || c.items.len() > MAX_ITEMS {
        out.push(format!(
            "{at}.items: a checklist has 1 to {MAX_ITEMS} items (found {})",
            c.items.len()
        ));
    }
    for (i, item) in c.items.iter().enumerate() {
        if !valid_name(&item.id, MAX_ITEM_ID) {
            out.push(format!(
                "{at}.items[{i}].id: `{}` is not a valid item id (lowercase letters, digits, `-` \
                 and `_`, at most {MAX_ITEM_ID} bytes)",
                item.id
            ));
        } else if c.items[..i].iter().any(|o| o.id == item.id) {
            out.push(format!(
                "{at}.items[{i}].id: `{}` is used twice in this checklist",
                item.id
            ));
        }
        if item.text.trim().is_empty() || item.text.chars().count() > MAX_ITEM_TEXT {
            out.push(format!(
                "{at}.items[{i}].text: must be 1 to {MAX_ITEM_TEXT} characters"
            ));
        }
    }
    out
}

/// Checks the `[[checklists]]` of the file, then appends every built-in checklist they do not
/// replace (by name).
pub fn complete(list: &mut Vec<ChecklistDef>, problems_out: &mut Vec<String>) {
    for (i, c) in list.iter().enumerate() {
        problems_out.extend(problems(c, &format!("checklists[{i}]")));
        if list[..i].iter().any(|o| o.name == c.name) {
            problems_out.push(format!(
                "checklists[{i}].name: `{}` is defined twice",
                c.name
            ));
        }
    }
    for name in builtin::names() {
        if list.iter().any(|c| c.name == name) {
            continue;
        }
        match builtin::get(name) {
            Some(Ok(c)) => list.push(c),
            Some(Err(e)) => {
                problems_out.push(format!("checklists: built-in `{name}` is broken: {e}"))
            }
            None => {}
        }
    }
}

/// The problems of runbook `rb`'s checklist references (at `at`): every name in `checklists`
/// is a configured checklist, once; every `ticks` and `requires` entry of a step is
/// `<checklist>:<item>` naming an item of a checklist the runbook attaches.
pub fn runbook_problems(rb: &RunbookDef, all: &[ChecklistDef], at: &str, out: &mut Vec<String>) {
    for (i, name) in rb.checklists.iter().enumerate() {
        if !all.iter().any(|c| &c.name == name) {
            let mut known: Vec<&str> = all.iter().map(|c| c.name.as_str()).collect();
            known.sort();
            out.push(format!(
                "{at}.checklists[{i}]: no checklist `{name}` (known: {})",
                known.join(", ")
            ));
        } else if rb.checklists[..i].contains(name) {
            out.push(format!("{at}.checklists[{i}]: `{name}` is attached twice"));
        }
    }
    for (j, step) in rb.steps.iter().enumerate() {
        for (key, list) in [("ticks", &step.ticks), ("requires", &step.requires)] {
            for (k, entry) in list.iter().enumerate() {
                let at = format!("{at}.steps[{j}].{key}[{k}]");
                let Some((name, item)) = entry.split_once(':') else {
                    out.push(format!(
                        "{at}: `{entry}` is not `<checklist>:<item>` (e.g. `pre-failover:notify-ic`)"
                    ));
                    continue;
                };
                if !rb.checklists.iter().any(|c| c == name) {
                    out.push(format!(
                        "{at}: checklist `{name}` is not attached to this runbook (add it to \
                         the runbook's `checklists`)"
                    ));
                    continue;
                }
                let Some(def) = all.iter().find(|c| c.name == name) else {
                    continue;
                };
                if !def.items.iter().any(|i| i.id == item) {
                    let ids: Vec<&str> = def.items.iter().map(|i| i.id.as_str()).collect();
                    out.push(format!(
                        "{at}: checklist `{name}` has no item `{item}` (items: {})",
                        ids.join(", ")
                    ));
                }
            }
        }
    }
}
