//! Reads the config file: `${ENV_VAR}` substitution, section-by-section parsing that names the
//! offending key path, and a list of every problem found (not just the first).

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use super::model::*;

/// Every problem found in a config file, each starting with the key path it concerns.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigProblems(pub Vec<String>);

impl std::fmt::Display for ConfigProblems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for p in &self.0 {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigProblems {}

/// The parsed file plus what was read alongside it.
pub struct Parsed {
    /// The config (sections that failed to parse keep their defaults).
    pub config: Config,
    /// Structural problems found while parsing (unknown keys, wrong types, missing variables).
    pub problems: Vec<String>,
    /// Integration sections left out, and why (see [`parse_file_for_store`]).
    pub left_out: Vec<String>,
}

/// The integrations only `serve`, `cmd` and their own commands use: the commands that only read
/// or write the store (`runs`, `audit`, `subscribers`, …) work without their secrets.
const INTEGRATIONS: [&str; 4] = ["slack", "discord", "statuspage", "email"];

/// [`parse_file`] for commands that use only the store: an integration section whose
/// environment variables are not set is left out (named in `Parsed::left_out`) instead of
/// being a problem, so that a break-glass shell without chat or mail secrets can still read
/// the audit log, runs and subscribers.
pub fn parse_file_for_store(path: &Path) -> Result<Parsed, ConfigProblems> {
    parse_path(path, true)
}

/// Reads and parses `path`, collecting every structural problem (in `Parsed::problems`);
/// only an unreadable file or broken TOML syntax is an error. Semantic checks are in
/// `validate`.
pub fn parse_file(path: &Path) -> Result<Parsed, ConfigProblems> {
    parse_path(path, false)
}

/// Reads `path` (relative paths in it are read from its folder) with this process's
/// environment.
fn parse_path(path: &Path, store_only: bool) -> Result<Parsed, ConfigProblems> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigProblems(vec![format!(
            "cannot read config file {}: {e}",
            path.display()
        )])
    })?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    parse_str_with(&text, &base, &|k| std::env::var(k).ok(), store_only)
}

/// Parses config text; `base` resolves relative paths; `env` looks variables up.
pub fn parse_str(
    text: &str,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Parsed, ConfigProblems> {
    parse_str_with(text, base, env, false)
}

/// [`parse_str`]; with `store_only`, integration sections whose variables are not set are
/// left out (see [`parse_file_for_store`]).
pub fn parse_str_with(
    text: &str,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    store_only: bool,
) -> Result<Parsed, ConfigProblems> {
    let mut problems = Vec::new();
    let mut left_out = Vec::new();
    let mut root: toml::Table = match text.parse() {
        Ok(t) => t,
        Err(e) => {
            return Err(ConfigProblems(vec![format!(
                "not valid TOML: {}",
                toml_error(&e)
            )]));
        }
    };
    let mut unused = Vec::new();
    for (key, value) in root.iter_mut() {
        if store_only && INTEGRATIONS.contains(&key.as_str()) {
            let mut missing = Vec::new();
            substitute_env(value, key, env, &mut missing);
            if !missing.is_empty() {
                left_out.push(format!("[{key}] ({})", missing.join("; ")));
                unused.push(key.clone());
            }
            continue;
        }
        substitute_env(value, key, env, &mut problems);
    }
    for key in unused {
        root.remove(&key);
    }
    let mut cfg = Config::default();
    for (key, value) in root {
        let v = value;
        match key.as_str() {
            "server" => section(v, "server", &mut problems).map(|s| cfg.server = s),
            "store" => section(v, "store", &mut problems).map(|s| cfg.store = s),
            "approvals" => section(v, "approvals", &mut problems).map(|s| cfg.approvals = s),
            "engine" => section(v, "engine", &mut problems).map(|s| cfg.engine = s),
            "targets" => section(v, "targets", &mut problems).map(|s| cfg.targets = s),
            "incidents" => section(v, "incidents", &mut problems).map(|s| cfg.incidents = s),
            "monitor" => section(v, "monitor", &mut problems).map(|s| cfg.monitor = Some(s)),
            "slack" => section(v, "slack", &mut problems).map(|s| cfg.slack = Some(s)),
            "discord" => section(v, "discord", &mut problems).map(|s| cfg.discord = Some(s)),
            "statuspage" => {
                section(v, "statuspage", &mut problems).map(|s| cfg.statuspage = Some(s))
            }
            "status_page" => section(v, "status_page", &mut problems).map(|s| cfg.status_page = s),
            "email" => section(v, "email", &mut problems).map(|s| cfg.email = Some(s)),
            "templates_dir" => section::<PathBuf>(v, "templates_dir", &mut problems)
                .map(|p| cfg.templates_dir = Some(base.join(p))),
            "runbooks_dir" => section::<PathBuf>(v, "runbooks_dir", &mut problems)
                .map(|p| cfg.runbooks_dir = Some(base.join(p))),
            "people" => array(v, "people", &mut problems).map(|p| cfg.people = p),
            "runbooks" => array(v, "runbooks", &mut problems).map(|r| cfg.runbooks = r),
            "schedules" => array(v, "schedules", &mut problems).map(|r| cfg.schedules = r),
            "builtin_runbooks" => {
                section(v, "builtin_runbooks", &mut problems).map(|b| cfg.builtin_runbooks = b)
            }
            "regions" => named(v, "regions", &mut problems).map(|m| cfg.regions = m),
            "postgres" => named(v, "postgres", &mut problems).map(|m| cfg.postgres = m),
            "backups" => named(v, "backups", &mut problems).map(|m| cfg.backups = m),
            "kubernetes" => named(v, "kubernetes", &mut problems).map(|m| cfg.kubernetes = m),
            "dns" => named(v, "dns", &mut problems).map(|m| cfg.dns = m),
            "redis" => named(v, "redis", &mut problems).map(|m| cfg.redis = m),
            "checklists" => array(v, "checklists", &mut problems).map(|c| cfg.checklists = c),
            other => {
                problems.push(format!(
                    "{other}: unknown key (expected one of: {})",
                    SECTIONS.join(", ")
                ));
                None
            }
        };
    }
    if let Some(dir) = cfg.runbooks_dir.clone() {
        read_runbook_dir(&dir, env, &mut cfg, &mut problems);
    }
    add_builtin_runbooks(&mut cfg, &mut problems);
    crate::checklists::complete(&mut cfg.checklists, &mut problems);
    Ok(Parsed {
        config: cfg,
        problems,
        left_out,
    })
}

/// A table of `[<key>.<name>]` sections, each parsed on its own so every problem is named.
fn named<T: DeserializeOwned>(
    v: toml::Value,
    key: &str,
    problems: &mut Vec<String>,
) -> Option<std::collections::BTreeMap<String, T>> {
    match v {
        toml::Value::Table(t) => {
            let mut out = std::collections::BTreeMap::new();
            for (name, item) in t {
                if let Some(item) = section(item, &format!("{key}.{name}"), problems) {
                    out.insert(name, item);
                }
            }
            Some(out)
        }
        _ => {
            problems.push(format!("{key}: expected a table of `[{key}.<name>]`"));
            None
        }
    }
}

/// Appends the enabled built-in runbooks that the file does not replace with its own.
fn add_builtin_runbooks(cfg: &mut Config, problems: &mut Vec<String>) {
    for name in cfg.builtin_runbooks.clone() {
        match recovery::builtin::get(&name) {
            None => problems.push(format!(
                "builtin_runbooks: no built-in runbook `{name}` (available: {})",
                recovery::builtin::names().join(", ")
            )),
            Some(_) if cfg.runbooks.iter().any(|r| r.name == name) => {}
            Some(Ok(mut rb)) => {
                rb.source = Some(format!("builtin_runbooks.{name}"));
                cfg.runbooks.push(rb)
            }
            Some(Err(e)) => problems.push(format!("builtin_runbooks: `{name}` is broken: {e}")),
        }
    }
}

fn read_runbook_dir(
    dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    cfg: &mut Config,
    problems: &mut Vec<String>,
) {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect(),
        Err(e) => {
            problems.push(format!("runbooks_dir: cannot read {}: {e}", dir.display()));
            return;
        }
    };
    files.sort();
    for file in files {
        let at = format!(
            "runbooks_dir/{}",
            file.file_name().unwrap_or_default().to_string_lossy()
        );
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) => {
                problems.push(format!("{at}: cannot read: {e}"));
                continue;
            }
        };
        match text.parse::<toml::Table>() {
            Ok(t) => {
                let mut v = toml::Value::Table(t);
                substitute_env(&mut v, &at, env, problems);
                if let Some(mut rb) = section::<recovery::runbook::RunbookDef>(v, &at, problems) {
                    rb.source = Some(at.clone());
                    cfg.runbooks.push(rb);
                }
            }
            Err(e) => problems.push(format!("{at}: not valid TOML: {}", toml_error(&e))),
        }
    }
}

fn toml_error(e: &toml::de::Error) -> String {
    // Keep the message and position, not the echoed source line (it may hold a secret).
    let msg = e.message().trim().to_string();
    match e.span() {
        Some(span) => format!("{msg} (at byte {})", span.start),
        None => msg,
    }
}

/// Deserializes one value, recording a problem with its full key path on failure.
fn section<T: DeserializeOwned>(
    value: toml::Value,
    at: &str,
    problems: &mut Vec<String>,
) -> Option<T> {
    let mut value = value;
    // serde stops at the first bad key: take it out and try again, so that every bad key of
    // the section is named at once (up to a bound), not one per edit.
    let mut failed = false;
    for _ in 0..MAX_PROBLEMS_PER_SECTION {
        match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(v) => return (!failed).then_some(v),
            Err(e) => {
                let inner = redact_values(&e.inner().to_string());
                // toml adds the key again on a line of its own; the path below says it.
                let inner = inner.split("\nin `").next().unwrap_or_default().trim_end();
                // A required key taken out above is missing now: already named.
                if failed && inner.starts_with("missing field") {
                    return None;
                }
                failed = true;
                let path = e.path().to_string();
                if path.is_empty() || path == "." {
                    problems.push(format!("{at}: {inner}"));
                } else {
                    problems.push(format!("{at}.{path}: {inner}"));
                }
                if !remove_at(&mut value, e.path()) {
                    return None;
                }
            }
        }
    }
    None
}

/// The most problems named in one section before its first ones must be fixed.
const MAX_PROBLEMS_PER_SECTION: usize = 16;

/// Removes the key (or array element) `path` names; `false` when there is none to remove (a
/// missing field, a problem of the section as a whole).
fn remove_at(value: &mut toml::Value, path: &serde_path_to_error::Path) -> bool {
    use serde_path_to_error::Segment;
    let segments: Vec<&Segment> = path.iter().collect();
    let Some((last, parents)) = segments.split_last() else {
        return false;
    };
    let mut v = value;
    for seg in parents {
        v = match (seg, v) {
            (Segment::Map { key }, toml::Value::Table(t)) => match t.get_mut(key.as_str()) {
                Some(x) => x,
                None => return false,
            },
            (Segment::Seq { index }, toml::Value::Array(a)) => match a.get_mut(*index) {
                Some(x) => x,
                None => return false,
            },
            _ => return false,
        };
    }
    match (last, v) {
        (Segment::Map { key }, toml::Value::Table(t)) => t.remove(key.as_str()).is_some(),
        _ => false,
    }
}

/// Deserializes each element of an array on its own, so every bad element is reported.
fn array<T: DeserializeOwned>(
    value: toml::Value,
    at: &str,
    problems: &mut Vec<String>,
) -> Option<Vec<T>> {
    let toml::Value::Array(items) = value else {
        problems.push(format!("{at}: expected an array (`[[{at}]]`)"));
        return None;
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        if let Some(v) = section(item, &format!("{at}[{i}]"), problems) {
            out.push(v);
        }
    }
    Some(out)
}

/// serde echoes bad values (`invalid type: string "xoxb-…"`); a value may be a secret, so
/// errors name the kind of value, never the value.
fn redact_values(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(pos) = rest.find("string \"") {
        out.push_str(&rest[..pos]);
        out.push_str("a string");
        // serde prints the value as Rust debug text: a quote inside it is `\"`, so the value
        // ends at the first quote that is not escaped.
        let after = &rest[pos + "string \"".len()..];
        let mut end = None;
        let mut chars = after.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => {
                    end = Some(i);
                    break;
                }
                _ => {}
            }
        }
        rest = end.map_or("", |e| &after[e + 1..]);
    }
    out.push_str(rest);
    redact_plain_values(&out)
}

/// The non-string values serde echoes between backticks (`integer `1234``, `boolean `true``,
/// `floating point `1.5``, `character `x``), named by their kind only.
fn redact_plain_values(msg: &str) -> String {
    const KINDS: [(&str, &str); 4] = [
        ("integer `", "an integer"),
        ("boolean `", "a boolean"),
        ("floating point `", "a number"),
        ("character `", "a character"),
    ];
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    loop {
        let next = KINDS
            .iter()
            .filter_map(|(k, name)| rest.find(k).map(|p| (p, *k, *name)))
            .min_by_key(|(p, _, _)| *p);
        let Some((pos, kind, name)) = next else { break };
        out.push_str(&rest[..pos]);
        out.push_str(name);
        let after = &rest[pos + kind.len()..];
        rest = after.find('`').map_or("", |e| &after[e + 1..]);
    }
    out.push_str(rest);
    out
}

/// Replaces `${NAME}` in every string with the environment variable's value; `$${` is a
/// literal `${`. A missing variable is a problem naming the key and the variable. Runbook step
/// parameters (`with`) are only checked: they keep their references, read when a plan is
/// checked and when the step runs (see [`recovery::env`]).
fn substitute_env(
    value: &mut toml::Value,
    at: &str,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<String>,
) {
    match value {
        toml::Value::String(s) if s.contains("${") => match recovery::env::expand(s, env) {
            Ok(v) => *s = v,
            Err(e) => problems.push(format!("{at}: {e}")),
        },
        toml::Value::Array(a) => {
            for (i, v) in a.iter_mut().enumerate() {
                substitute_env(v, &format!("{at}[{i}]"), env, problems);
            }
        }
        toml::Value::Table(t) => {
            for (k, v) in t.iter_mut() {
                let path = format!("{at}.{k}");
                if k == "with" && is_runbook_step(at) {
                    check_env(v, &path, env, problems);
                } else {
                    substitute_env(v, &path, env, problems);
                }
            }
        }
        _ => {}
    }
}

/// Whether `at` names a runbook step: `runbooks[0].steps[2]`, `runbooks_dir/x.toml.steps[2]`.
fn is_runbook_step(at: &str) -> bool {
    at.starts_with("runbooks")
        && at.rsplit_once(".steps[").is_some_and(|(_, i)| {
            i.strip_suffix(']')
                .is_some_and(|n| n.parse::<usize>().is_ok())
        })
}

/// Reports the `${NAME}` references in `value` that cannot be read, leaving them as written.
fn check_env(
    value: &toml::Value,
    at: &str,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<String>,
) {
    match value {
        toml::Value::String(s) if s.contains("${") => {
            if let Err(e) = recovery::env::expand(s, env) {
                problems.push(format!("{at}: {e}"));
            }
        }
        toml::Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                check_env(v, &format!("{at}[{i}]"), env, problems);
            }
        }
        toml::Value::Table(t) => {
            for (k, v) in t {
                check_env(v, &format!("{at}.{k}"), env, problems);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_string_values() {
        assert_eq!(
            redact_values("invalid type: string \"xoxb-secret\", expected u32"),
            "invalid type: a string, expected u32"
        );
        assert_eq!(
            redact_values(r#"invalid type: string "abc\"de\\f\"ghi", expected u32"#),
            "invalid type: a string, expected u32"
        );
    }

    #[test]
    fn redacts_other_values() {
        assert_eq!(
            redact_values("invalid type: integer `987654321`, expected a string"),
            "invalid type: an integer, expected a string"
        );
        assert_eq!(
            redact_values("invalid type: boolean `true`, expected a string"),
            "invalid type: a boolean, expected a string"
        );
        assert_eq!(
            redact_values("invalid type: floating point `1.5`, expected a string"),
            "invalid type: a number, expected a string"
        );
    }

    proptest::proptest! {
        /// Whatever the value, serde's message about it never carries any of it.
        #[test]
        fn no_value_survives_redaction(v in ".*") {
            let msg = format!("invalid type: string {v:?}, expected u32");
            proptest::prop_assert_eq!(redact_values(&msg), "invalid type: a string, expected u32");
        }

        /// Nor of a number.
        #[test]
        fn no_number_survives_redaction(n in proptest::num::i64::ANY, f in proptest::num::f64::NORMAL) {
            let msg = format!("invalid type: integer `{n}`, expected a string");
            proptest::prop_assert_eq!(redact_values(&msg), "invalid type: an integer, expected a string");
            let msg = format!("invalid value: floating point `{f}`, expected u8");
            proptest::prop_assert_eq!(redact_values(&msg), "invalid value: a number, expected u8");
        }
    }
}
