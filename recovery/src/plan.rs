//! A runbook resolved with a command's arguments: the exact plan people approve, and its
//! fingerprint (SHA-256 over runbook, version, arguments, resolved steps and config revision).

use std::{collections::BTreeMap, time::Duration};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{
    registry::Registry,
    runbook::{DEFAULT_BACKOFF, DEFAULT_STEP_TIMEOUT, OnFailure, RunbookDef},
};

/// A resolved, fingerprinted plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Runbook name.
    pub runbook: String,
    /// Runbook version.
    pub version: u32,
    /// Runbook description.
    pub description: String,
    /// Command arguments (e.g. `region`, `timestamp`).
    pub args: BTreeMap<String, String>,
    /// Every variable the steps could use (arguments plus region fields).
    pub vars: BTreeMap<String, String>,
    /// Lock key: one active destructive run per target.
    pub target: String,
    /// Only read-only steps run.
    pub dry_run: bool,
    /// Revision of the configuration the plan was resolved from.
    pub config_revision: String,
    /// Checklists opened for the run (the runbook's `checklists`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checklists: Vec<String>,
    /// Steps with parameters resolved.
    pub steps: Vec<PlannedStep>,
    /// Hex SHA-256 over all of the above.
    pub fingerprint: String,
}

/// A step with its parameters resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedStep {
    /// Display name.
    pub name: String,
    /// Step type.
    pub kind: String,
    /// Resolved parameters.
    pub params: serde_json::Value,
    /// Changes production.
    pub destructive: bool,
    /// Safe to run twice.
    pub idempotent: bool,
    /// Needs its own fresh approval before it runs.
    pub gate: bool,
    /// Time limit of one attempt, milliseconds.
    pub timeout_ms: u64,
    /// Extra attempts after a retryable failure.
    pub retries: u32,
    /// First backoff, milliseconds.
    pub backoff_ms: u64,
    /// What a failure does to the run.
    pub on_failure: OnFailure,
    /// What the step acts on (clusters, backup stores), shown in plan previews.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub touches: Vec<String>,
    /// [`crate::resources::Resources::identity`] of what the step names, when the plan was
    /// made: the engine refuses to run the step if it differs when the step is about to run
    /// (empty: names nothing, or a plan made before this was recorded).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resources: String,
    /// Checklist items ticked for the run when the step succeeds (`"<checklist>:<item>"`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ticks: Vec<String>,
    /// Checklist items that must be ticked before the step runs (`"<checklist>:<item>"`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requires: Vec<String>,
}

impl PlannedStep {
    /// Time limit of one attempt.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
    /// Pause before retry `n` (1-based), doubling, capped at 5 minutes.
    pub fn backoff(&self, n: u32) -> Duration {
        let factor = 1u64 << n.saturating_sub(1).min(16);
        Duration::from_millis(self.backoff_ms.saturating_mul(factor).min(300_000))
    }
}

/// Why a runbook could not be resolved into a plan.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    /// A placeholder names no known variable.
    #[error("step `{step}` uses `{{{name}}}`, which is not set for this command (known: {known})")]
    UnknownPlaceholder {
        step: String,
        name: String,
        known: String,
    },
    /// A `{` without its `}`.
    #[error("step `{step}` has an unclosed `{{` in `{text}`")]
    Unclosed { step: String, text: String },
    /// The step type is unknown or rejects the resolved parameters.
    #[error("step `{step}`: {message}")]
    Step { step: String, message: String },
}

impl Plan {
    /// Resolves `runbook` with `vars` (arguments plus region fields; `args` are the subset that
    /// came from the command).
    pub fn resolve(
        registry: &Registry,
        runbook: &RunbookDef,
        args: BTreeMap<String, String>,
        mut vars: BTreeMap<String, String>,
        config_revision: &str,
        dry_run: bool,
    ) -> Result<Plan, PlanError> {
        for (k, v) in &args {
            vars.entry(k.clone()).or_insert_with(|| v.clone());
        }
        let mut steps = Vec::with_capacity(runbook.steps.len());
        for def in &runbook.steps {
            // The plan keeps environment references as written; they are checked (and what
            // the step acts on is found) with their values.
            let params = substitute_value(&def.with, &vars, &def.name)?;
            let step_error = |message| PlanError::Step {
                step: def.name.clone(),
                message,
            };
            let expanded =
                crate::env::expand_value(&params, &crate::env::process).map_err(step_error)?;
            let kind = registry
                .get(&def.kind)
                .ok_or_else(|| step_error(format!("unknown step type `{}`", def.kind)))?;
            kind.validate(&expanded).map_err(step_error)?;
            let traits = kind.traits();
            let (destructive, idempotent) = if traits.overridable {
                (
                    def.destructive.unwrap_or(traits.destructive),
                    def.idempotent.unwrap_or(traits.idempotent),
                )
            } else {
                (traits.destructive, traits.idempotent)
            };
            steps.push(PlannedStep {
                name: substitute(&def.name, &vars, &def.name)?,
                kind: def.kind.clone(),
                params: params.clone(),
                destructive,
                idempotent,
                gate: def.gate,
                timeout_ms: def.timeout.unwrap_or(DEFAULT_STEP_TIMEOUT).as_millis() as u64,
                retries: def.retries,
                backoff_ms: def.backoff.unwrap_or(DEFAULT_BACKOFF).as_millis() as u64,
                on_failure: def.on_failure,
                touches: registry.resources().describe(&expanded),
                resources: registry.resources().identity(&expanded),
                ticks: def.ticks.clone(),
                requires: def.requires.clone(),
            });
        }
        let default_target = match args.get("region") {
            Some(r) => r.clone(),
            None => runbook.name.clone(),
        };
        let target = match &runbook.target {
            Some(t) => substitute(t, &vars, "target")?,
            None => default_target,
        };
        let mut plan = Plan {
            runbook: runbook.name.clone(),
            version: runbook.version,
            description: runbook.description.clone(),
            args,
            vars,
            target,
            dry_run,
            config_revision: config_revision.to_string(),
            checklists: runbook.checklists.clone(),
            steps,
            fingerprint: String::new(),
        };
        plan.fingerprint = plan.compute_fingerprint();
        Ok(plan)
    }

    /// SHA-256 over everything in the plan but the fingerprint itself.
    pub fn compute_fingerprint(&self) -> String {
        let mut copy = self.clone();
        copy.fingerprint = String::new();
        // serde_json writes maps from BTreeMap in key order and struct fields in declaration
        // order: a stable encoding.
        let bytes = serde_json::to_vec(&copy).unwrap_or_default();
        hex::encode(Sha256::digest(&bytes))
    }

    /// Whether any step changes production (then the run needs approval).
    pub fn is_destructive(&self) -> bool {
        self.steps.iter().any(|s| s.destructive)
    }

    /// First 12 hex digits, for cards.
    pub fn short_fingerprint(&self) -> &str {
        self.fingerprint.get(..12).unwrap_or(&self.fingerprint)
    }
}

fn substitute_value(
    v: &serde_json::Value,
    vars: &BTreeMap<String, String>,
    step: &str,
) -> Result<serde_json::Value, PlanError> {
    use serde_json::Value;
    Ok(match v {
        Value::String(s) => Value::String(substitute(s, vars, step)?),
        Value::Array(a) => Value::Array(
            a.iter()
                .map(|x| substitute_value(x, vars, step))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| Ok((k.clone(), substitute_value(x, vars, step)?)))
                .collect::<Result<_, PlanError>>()?,
        ),
        other => other.clone(),
    })
}

/// Replaces `{name}` with `vars[name]`; `{{` and `}}` stand for literal braces. An
/// environment reference `${NAME}` written in `text` is kept as written (see [`crate::env`]);
/// one that a value would form (a value holding `${`, or ending in `$` before a `{`) is escaped
/// as `$${`, so it stays literal text: a value never reads the environment.
pub fn substitute(
    text: &str,
    vars: &BTreeMap<String, String>,
    step: &str,
) -> Result<String, PlanError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find(['{', '}']) {
        let literal = &rest[..pos];
        out.push_str(literal);
        let tail = &rest[pos..];
        if tail.starts_with('{')
            && literal.ends_with('$')
            && let Some(end) = tail.find('}')
        {
            out.push_str(&tail[..=end]);
            rest = &tail[end + 1..];
        } else if let Some(t) = tail.strip_prefix("{{") {
            if out.ends_with('$') {
                out.push('$');
            }
            out.push('{');
            rest = t;
        } else if let Some(t) = tail.strip_prefix("}}") {
            out.push('}');
            rest = t;
        } else if let Some(t) = tail.strip_prefix('}') {
            out.push('}');
            rest = t;
        } else {
            let Some(end) = tail.find('}') else {
                return Err(PlanError::Unclosed {
                    step: step.into(),
                    text: text.into(),
                });
            };
            let name = tail[1..end].trim();
            match vars.get(name) {
                Some(v) => {
                    let v = v.replace("${", "$${");
                    if out.ends_with('$') && v.starts_with('{') {
                        out.push('$');
                    }
                    out.push_str(&v);
                }
                None => {
                    return Err(PlanError::UnknownPlaceholder {
                        step: step.into(),
                        name: name.into(),
                        known: vars.keys().cloned().collect::<Vec<_>>().join(", "),
                    });
                }
            }
            rest = &tail[end + 1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> BTreeMap<String, String> {
        [("region".to_string(), "us-west-2".to_string())]
            .into_iter()
            .collect()
    }

    #[test]
    fn substitutes_and_escapes() {
        assert_eq!(
            substitute("to {region}", &vars(), "s").unwrap(),
            "to us-west-2"
        );
        assert_eq!(
            substitute("{{json}} {region}", &vars(), "s").unwrap(),
            "{json} us-west-2"
        );
        assert!(matches!(
            substitute("{nope}", &vars(), "s"),
            Err(PlanError::UnknownPlaceholder { .. })
        ));
        assert!(matches!(
            substitute("{region", &vars(), "s"),
            Err(PlanError::Unclosed { .. })
        ));
        // Environment references stay for the step to read when it runs.
        assert_eq!(
            substitute("Bearer ${TOKEN} $${X} {region}", &vars(), "s").unwrap(),
            "Bearer ${TOKEN} $${X} us-west-2"
        );
        // A value never forms one: it stays literal text once expanded.
        let env = |k: &str| Some(format!("<{k}>"));
        let tricky: BTreeMap<String, String> = [
            ("a", "${SECRET}"),
            ("d", "cost 5$"),
            ("b", "{SECRET}"),
            ("region", "x"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (text, shown) in [
            ("{a}", "${SECRET}"),
            ("{d}{b}", "cost 5${SECRET}"),
            ("{d}{{SECRET}}", "cost 5${SECRET}"),
            ("{d}{region}", "cost 5$x"),
            ("${TOKEN} {a}", "<TOKEN> ${SECRET}"),
        ] {
            let planned = substitute(text, &tricky, "s").unwrap();
            assert_eq!(crate::env::expand(&planned, &env).unwrap(), shown, "{text}");
        }
    }

    proptest::proptest! {
        /// Whatever the values, none reads the environment.
        #[test]
        fn values_never_read_the_environment(a in "\\PC{0,12}", b in "\\PC{0,12}") {
            let vars: BTreeMap<String, String> =
                [("a".to_string(), a.clone()), ("b".to_string(), b.clone())].into_iter().collect();
            let env = |_: &str| Some("SECRET".to_string());
            for text in ["{a}{b}", "{a}{{b}}", "x{a}y{b}z"] {
                let planned = substitute(text, &vars, "s").unwrap();
                if let Ok(shown) = crate::env::expand(&planned, &env) {
                    proptest::prop_assert!(!shown.contains("SECRET") || a.contains("SECRET") || b.contains("SECRET"), "{text}: {shown}");
                }
            }
        }
    }

    fn runbook(cmd: &str) -> RunbookDef {
        toml::from_str(&format!(
            r#"
            name = "failover"
            command = "failover"
            request_roles = ["oncall"]
            approve_roles = ["oncall"]
            [[steps]]
            name = "promote"
            type = "exec"
            with = {{ command = "{cmd}", args = ["{{region}}"] }}
            "#
        ))
        .unwrap()
    }

    #[test]
    fn fingerprint_changes_with_anything_approved() {
        let reg = Registry::builtin();
        let args: BTreeMap<_, _> = vars();
        let a = Plan::resolve(&reg, &runbook("true"), args.clone(), vars(), "rev1", false).unwrap();
        assert_eq!(a.steps[0].params["args"][0], "us-west-2");
        assert!(a.is_destructive());
        let same =
            Plan::resolve(&reg, &runbook("true"), args.clone(), vars(), "rev1", false).unwrap();
        assert_eq!(a.fingerprint, same.fingerprint);
        let other_cmd =
            Plan::resolve(&reg, &runbook("false"), args.clone(), vars(), "rev1", false).unwrap();
        let other_rev =
            Plan::resolve(&reg, &runbook("true"), args.clone(), vars(), "rev2", false).unwrap();
        let dry = Plan::resolve(&reg, &runbook("true"), args, vars(), "rev1", true).unwrap();
        for p in [&other_cmd, &other_rev, &dry] {
            assert_ne!(a.fingerprint, p.fingerprint);
        }
        assert_eq!(a.fingerprint, a.compute_fingerprint());
    }
}
