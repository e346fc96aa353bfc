//! The `/dr` application command as Discord sees it (subcommands with typed options), and the
//! one mapping from an interaction's options to the shared grammar's text. The grammar stays
//! the single source of truth: options are only turned into `/dr …` text and parsed by it.

use serde_json::{Value, json};

/// Discord option types used here.
const SUB_COMMAND: u8 = 1;
const SUB_COMMAND_GROUP: u8 = 2;
const STRING: u8 = 3;
const INTEGER: u8 = 4;
const BOOLEAN: u8 = 5;

/// How an option becomes grammar text.
#[derive(Clone, Copy)]
enum Kind {
    /// A positional argument (string), quoted when needed.
    Text,
    /// A positional run id.
    Run,
    /// A boolean flag: `--name` when true.
    Flag(&'static str),
    /// A flag with a value: `--name value`.
    Valued(&'static str),
    /// Region: a string with the configured regions as choices.
    Region,
}

struct Opt {
    name: &'static str,
    description: &'static str,
    kind: Kind,
    required: bool,
}

const fn opt(name: &'static str, description: &'static str, kind: Kind, required: bool) -> Opt {
    Opt {
        name,
        description,
        kind,
        required,
    }
}

/// (subcommand path, description, options) — `path` has two words for groups
/// (`incident open`, `notify customers`).
const SUBCOMMANDS: &[(&str, &str, &[Opt])] = &[
    (
        "help",
        "Show all subcommands, or the details of one",
        &[opt(
            "subcommand",
            "Subcommand to explain",
            Kind::Text,
            false,
        )],
    ),
    ("status", "Show the regions and the active runs", &[]),
    (
        "failover",
        "Fail over to a region (needs a second person's approval)",
        &[
            opt("region", "Region to fail over to", Kind::Region, true),
            opt(
                "dry_run",
                "Only show the plan and run read-only steps",
                Kind::Flag("--dry-run"),
                false,
            ),
        ],
    ),
    (
        "failback",
        "Fail back to the primary region, or to a region",
        &[opt("region", "Region to fail back to", Kind::Region, false)],
    ),
    (
        "verify-backup",
        "Restore a backup into a scratch database and check it",
        &[opt("backup", "`latest` or a backup id", Kind::Text, false)],
    ),
    (
        "drill",
        "Run the disaster-recovery drill",
        &[opt(
            "dry_run",
            "Only show the plan and run read-only steps",
            Kind::Flag("--dry-run"),
            false,
        )],
    ),
    (
        "pitr",
        "Point-in-time recovery to a timestamp",
        &[
            opt(
                "timestamp",
                "e.g. 2026-01-27 14:30:00 (UTC unless a zone is given)",
                Kind::Text,
                true,
            ),
            opt(
                "dry_run",
                "Only show the plan and run read-only steps",
                Kind::Flag("--dry-run"),
                false,
            ),
        ],
    ),
    (
        "recover-corruption",
        "Recover from data corruption detected at a timestamp",
        &[opt(
            "timestamp",
            "When the corruption was detected",
            Kind::Text,
            true,
        )],
    ),
    ("runs", "List recent and active runs", &[]),
    (
        "run",
        "Show one run",
        &[opt("run", "Run id", Kind::Run, true)],
    ),
    (
        "approve",
        "Approve a run's open request",
        &[opt("run", "Run id", Kind::Run, true)],
    ),
    (
        "deny",
        "Deny a run's open request",
        &[
            opt("run", "Run id", Kind::Run, true),
            opt("reason", "Why", Kind::Text, false),
        ],
    ),
    (
        "cancel",
        "Cancel a run",
        &[opt("run", "Run id", Kind::Run, true)],
    ),
    (
        "retry",
        "Ask to retry a run's interrupted step",
        &[opt("run", "Run id", Kind::Run, true)],
    ),
    (
        "skip",
        "Ask to skip a run's interrupted step",
        &[opt("run", "Run id", Kind::Run, true)],
    ),
    (
        "abort",
        "Ask to abort a run that needs attention",
        &[opt("run", "Run id", Kind::Run, true)],
    ),
    (
        "incident open",
        "Open an incident",
        &[
            opt("title", "Incident title", Kind::Text, true),
            opt(
                "impact",
                "none, minor, major or critical",
                Kind::Valued("--impact"),
                false,
            ),
        ],
    ),
    (
        "incident update",
        "Post an incident update",
        &[
            opt("message", "Update text", Kind::Text, true),
            opt(
                "status",
                "investigating, identified or monitoring",
                Kind::Valued("--status"),
                false,
            ),
        ],
    ),
    (
        "incident resolve",
        "Resolve the incident",
        &[opt("message", "Closing text", Kind::Text, false)],
    ),
    (
        "notify customers",
        "Email customers from a template (needs approval)",
        &[opt("template", "Template name", Kind::Text, true)],
    ),
    (
        "checklist",
        "Post a checklist",
        &[opt("name", "Checklist name", Kind::Text, false)],
    ),
];

/// The `/dr` command definition for `PUT /applications/{id}/commands`.
pub fn definition(regions: &[String]) -> Value {
    let mut top: Vec<Value> = Vec::new();
    let mut groups: Vec<(String, Vec<Value>)> = Vec::new();
    for (path, description, opts) in SUBCOMMANDS {
        let options: Vec<Value> = opts.iter().map(|o| option_json(o, regions)).collect();
        let words: Vec<&str> = path.split(' ').collect();
        let leaf = json!({ "type": SUB_COMMAND, "name": words[words.len() - 1], "description": description, "options": options });
        if words.len() == 2 {
            match groups.iter_mut().find(|(g, _)| g == words[0]) {
                Some((_, subs)) => subs.push(leaf),
                None => groups.push((words[0].to_string(), vec![leaf])),
            }
        } else {
            top.push(leaf);
        }
    }
    for (name, subs) in groups {
        top.push(json!({ "type": SUB_COMMAND_GROUP, "name": name, "description": format!("{name} commands"), "options": subs }));
    }
    json!({ "name": "dr", "type": 1, "description": "Disaster recovery with two-person approval", "options": top })
}

fn option_json(o: &Opt, regions: &[String]) -> Value {
    let (kind, choices): (u8, Option<Vec<Value>>) = match o.kind {
        Kind::Text | Kind::Valued(_) => (STRING, None),
        Kind::Run => (INTEGER, None),
        Kind::Flag(_) => (BOOLEAN, None),
        Kind::Region => (
            STRING,
            Some(
                regions
                    .iter()
                    .take(25)
                    .map(|r| json!({ "name": r, "value": r }))
                    .collect(),
            ),
        ),
    };
    let mut v = json!({ "type": kind, "name": o.name, "description": o.description, "required": o.required });
    if let Some(c) = choices {
        v["choices"] = Value::Array(c);
    }
    if matches!(o.kind, Kind::Run) {
        v["min_value"] = json!(1);
    }
    v
}

/// Turns an APPLICATION_COMMAND's `data` into `/dr …` text for the grammar, or says which
/// part of the payload is malformed.
pub fn to_text(data: &Value) -> Result<String, &'static str> {
    let first = data["options"]
        .as_array()
        .and_then(|o| o.first())
        .ok_or("no subcommand")?;
    let (path, given) = match first["type"].as_u64() {
        Some(t) if t == SUB_COMMAND_GROUP as u64 => {
            let sub = first["options"]
                .as_array()
                .and_then(|o| o.first())
                .ok_or("empty group")?;
            (
                format!(
                    "{} {}",
                    first["name"].as_str().ok_or("group name")?,
                    sub["name"].as_str().ok_or("name")?
                ),
                sub["options"].as_array().cloned().unwrap_or_default(),
            )
        }
        Some(t) if t == SUB_COMMAND as u64 => (
            first["name"].as_str().ok_or("subcommand name")?.to_string(),
            first["options"].as_array().cloned().unwrap_or_default(),
        ),
        _ => return Err("option is not a subcommand"),
    };
    let mut words = vec![path.clone()];
    let mut flags = Vec::new();
    let schema = SUBCOMMANDS
        .iter()
        .find(|(p, _, _)| *p == path)
        .map(|(_, _, o)| *o);
    // Unknown subcommands go to the grammar as typed: it names the problem.
    for o in schema.unwrap_or(&[]) {
        let Some(v) = given
            .iter()
            .find(|g| g["name"] == o.name)
            .map(|g| &g["value"])
        else {
            continue;
        };
        match o.kind {
            Kind::Flag(flag) => {
                if v.as_bool() == Some(true) {
                    flags.push(flag.to_string());
                }
            }
            Kind::Valued(flag) => flags.push(format!("{flag} {}", quote(&value_text(v)))),
            Kind::Run => words.push(value_text(v)),
            Kind::Text | Kind::Region => words.push(quote(&value_text(v))),
        }
    }
    words.extend(flags);
    Ok(words.join(" "))
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A typed option value as one word of the grammar, read back exactly as typed: quoted when
/// it is empty, holds whitespace, or starts like a flag or a quote (`--status` typed as a
/// message is text, not a flag). The grammar closes a quote at a quote of the same family
/// followed by whitespace, so the family the value does not close is used (`"` else `'`);
/// only a value that holds both ("a” b ’c d") has its double quotes made single.
fn quote(s: &str) -> String {
    use crate::grammar::lex::{QuoteFamily, quote_family};
    let plain = s
        .chars()
        .next()
        .is_some_and(|c| !matches!(c, '-' | '—' | '–') && quote_family(c).is_none())
        && !s.chars().any(char::is_whitespace);
    if plain {
        return s.to_string();
    }
    let closes = |family| {
        s.chars()
            .zip(s.chars().skip(1))
            .any(|(c, next)| quote_family(c) == Some(family) && next.is_whitespace())
    };
    if !closes(QuoteFamily::Double) {
        format!("\"{s}\"")
    } else if !closes(QuoteFamily::Single) {
        format!("'{s}'")
    } else {
        format!("\"{}\"", s.replace(['"', '“', '”'], "'"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_map_to_grammar_text() {
        let data = json!({ "name": "dr", "options": [{ "type": 1, "name": "failover", "options": [
            { "type": 5, "name": "dry_run", "value": true }, { "type": 3, "name": "region", "value": "us-west-2" }
        ]}]});
        assert_eq!(to_text(&data).unwrap(), "failover us-west-2 --dry-run");
        let data = json!({ "options": [{ "type": 1, "name": "pitr", "options": [
            { "type": 3, "name": "timestamp", "value": "2026-01-27 14:30:00" }
        ]}]});
        assert_eq!(to_text(&data).unwrap(), "pitr \"2026-01-27 14:30:00\"");
        let data = json!({ "options": [{ "type": 2, "name": "incident", "options": [{ "type": 1, "name": "open", "options": [
            { "type": 3, "name": "title", "value": "API down" }, { "type": 3, "name": "impact", "value": "critical" }
        ]}]}]});
        assert_eq!(
            to_text(&data).unwrap(),
            "incident open \"API down\" --impact critical"
        );
        let data = json!({ "options": [{ "type": 1, "name": "deny", "options": [
            { "type": 4, "name": "run", "value": 12 }, { "type": 3, "name": "reason", "value": "not now" }
        ]}]});
        assert_eq!(to_text(&data).unwrap(), "deny 12 \"not now\"");
        assert!(to_text(&json!({})).is_err());
    }

    /// What a person types into a text option reaches the grammar unchanged: quotes of any
    /// kind, a word that looks like a flag, a lone dash.
    #[test]
    fn text_options_reach_the_grammar_as_typed() {
        use crate::grammar::{Command, IncidentCommand};
        let vocab = crate::grammar::Vocabulary::default();
        for message in [
            "Fix is “live” now",
            "we're \"almost\" done",
            "--status",
            "—dry-run",
            "-",
            "'single' and \"double\" quotes",
            "ends with a quote\"",
            "a ” b ’ c",
        ] {
            let data = json!({ "options": [{ "type": 2, "name": "incident", "options": [
                { "type": 1, "name": "update", "options": [
                    { "type": 3, "name": "message", "value": message }
                ]}
            ]}]});
            let text = to_text(&data).unwrap();
            let parsed = crate::grammar::parse(&text, &vocab);
            let Ok(Command::Incident(IncidentCommand::Update { message: got, .. })) = parsed else {
                panic!("{message:?} → {text:?} → {parsed:?}");
            };
            // Both families close inside these: their double quotes become single ones.
            if message == "a ” b ’ c" {
                assert_eq!(got, "a ' b ’ c", "{text}");
            } else if message.starts_with("'single'") {
                assert_eq!(got, "'single' and 'double' quotes", "{text}");
            } else {
                assert_eq!(got, message, "{text}");
            }
        }
    }

    #[test]
    fn every_subcommand_parses_through_the_grammar() {
        let vocab = crate::grammar::Vocabulary {
            regions: vec!["us-west-2".into()],
            ..Default::default()
        };
        for (path, _, opts) in SUBCOMMANDS {
            let mut words = vec![path.to_string()];
            for o in opts.iter().filter(|o| o.required) {
                words.push(match (o.name, o.kind) {
                    (_, Kind::Region) => "us-west-2".into(),
                    (_, Kind::Run) => "3".into(),
                    ("timestamp", _) => "\"2026-01-27 14:30:00\"".into(),
                    ("template", _) => "dr-activated".into(),
                    _ => "text".into(),
                });
            }
            let text = words.join(" ");
            assert!(crate::grammar::parse(&text, &vocab).is_ok(), "{text}");
        }
    }
}
