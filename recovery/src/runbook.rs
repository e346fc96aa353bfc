//! Runbooks as data: the TOML shape users write, checked against the step registry.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::registry::Registry;

/// A runbook: named, versioned, made of typed steps.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RunbookDef {
    /// Unique name, e.g. `failover`.
    pub name: String,
    /// Where it is defined, for problems (`runbooks_dir/failover.toml`,
    /// `builtin_runbooks.failover`); `None` inline. Not part of the runbook.
    #[serde(skip)]
    pub source: Option<String>,
    /// Bump when the steps change; part of the plan fingerprint, so approvals of an older
    /// version become void.
    #[serde(default = "one")]
    pub version: u32,
    /// One line shown in help and on approval cards.
    #[serde(default)]
    pub description: String,
    /// The `/dr` subcommand that starts it: `failover`, `failback`, `verify-backup`, `drill`,
    /// `pitr`, `recover-corruption` or `notify-customers`.
    pub command: String,
    /// Roles (from `[[people]]`) allowed to request this runbook.
    pub request_roles: Vec<String>,
    /// Roles allowed to approve this runbook's requests (never the requester themself).
    pub approve_roles: Vec<String>,
    /// Lock key: at most one active destructive run per target. Placeholders allowed.
    /// Default: `{region}` when the command names a region, else the runbook name.
    #[serde(default)]
    pub target: Option<String>,
    /// Checklists opened for each run of this runbook (opaque names: the bot resolves and
    /// checks them). Steps refer to their items with `ticks` and `requires`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checklists: Vec<String>,
    /// The steps, run in order.
    pub steps: Vec<StepDef>,
}

fn one() -> u32 {
    1
}

/// What to do when a step fails after its retries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Stop the run; it ends `failed`.
    #[default]
    Abort,
    /// Record the failure and go on with the next step.
    Continue,
}

/// One step of a runbook.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StepDef {
    /// Shown in the plan and the progress card.
    pub name: String,
    /// Step type, e.g. `exec` or `http_check`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Parameters of the step type; string values may hold placeholders like `{region}`.
    #[serde(default = "empty_table")]
    pub with: serde_json::Value,
    /// Override the step type's default: does this step change production?
    #[serde(default)]
    pub destructive: Option<bool>,
    /// Override the step type's default: is running it twice harmless?
    #[serde(default)]
    pub idempotent: Option<bool>,
    /// Pause before this step for a fresh two-person approval of the step itself.
    #[serde(default)]
    pub gate: bool,
    /// Time limit for one attempt, e.g. `"5m"`.
    #[serde(default, with = "opt_duration")]
    pub timeout: Option<Duration>,
    /// Extra attempts after a retryable failure.
    #[serde(default)]
    pub retries: u32,
    /// First pause between attempts, doubled each time, e.g. `"2s"`.
    #[serde(default, with = "opt_duration")]
    pub backoff: Option<Duration>,
    /// `abort` (default) or `continue`.
    #[serde(default)]
    pub on_failure: OnFailure,
    /// Checklist items (`"<checklist>:<item>"`, opaque here) ticked for the run when this step
    /// succeeds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ticks: Vec<String>,
    /// Checklist items (`"<checklist>:<item>"`, opaque here) that must be ticked before this
    /// step runs; the engine asks the journal ([`crate::engine::Journal::hold_for`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requires: Vec<String>,
}

fn empty_table() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

/// Default time limit of a step attempt.
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(600);
/// Default first backoff between attempts.
pub const DEFAULT_BACKOFF: Duration = Duration::from_secs(2);

/// `"30s"`-style optional durations in TOML.
pub mod opt_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Reads `"5m"`, `"30s"`, `"1h 30m"`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        s.map(|s| humantime::parse_duration(&s).map_err(serde::de::Error::custom))
            .transpose()
    }

    /// Writes the humantime form.
    pub fn serialize<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }
}

/// Commands a runbook can be bound to.
pub const RUNBOOK_COMMANDS: &[&str] = &[
    "failover",
    "failback",
    "verify-backup",
    "drill",
    "pitr",
    "recover-corruption",
    "notify-customers",
];

impl RunbookDef {
    /// Every problem with this runbook (not just the first), each prefixed with where it is.
    pub fn problems(&self, registry: &Registry, at: &str) -> Vec<String> {
        let mut out = Vec::new();
        if self.name.trim().is_empty() {
            out.push(format!("{at}.name: must not be empty"));
        }
        if !RUNBOOK_COMMANDS.contains(&self.command.as_str()) {
            out.push(format!(
                "{at}.command: unknown command `{}` (expected one of: {})",
                self.command,
                RUNBOOK_COMMANDS.join(", ")
            ));
        }
        if self.request_roles.is_empty() {
            out.push(format!("{at}.request_roles: name at least one role"));
        }
        if self.approve_roles.is_empty() {
            out.push(format!("{at}.approve_roles: name at least one role"));
        }
        if self.steps.is_empty() {
            out.push(format!("{at}.steps: a runbook needs at least one step"));
        }
        for (i, step) in self.steps.iter().enumerate() {
            let at = format!("{at}.steps[{i}]");
            match registry.get(&step.kind) {
                None => out.push(format!(
                    "{at}.type: unknown step type `{}` (known: {})",
                    step.kind,
                    registry.names().join(", ")
                )),
                Some(kind) => {
                    // Environment references are checked with their values (an unset one is
                    // the config loader's problem to report).
                    let with = crate::env::expand_value(&step.with, &crate::env::process)
                        .unwrap_or_else(|_| step.with.clone());
                    if let Err(e) = kind.validate(&with) {
                        // Parameter errors read "key.path: message"; fold the path into ours.
                        match e.split_once(": ") {
                            Some((path, msg)) if !path.is_empty() && !path.contains(' ') => {
                                out.push(format!("{at}.with.{path}: {msg}"))
                            }
                            _ => out.push(format!("{at}.with: {e}")),
                        }
                    }
                    let traits = kind.traits();
                    if !traits.overridable
                        && (step.destructive.is_some_and(|d| d != traits.destructive)
                            || step.idempotent.is_some_and(|d| d != traits.idempotent))
                    {
                        out.push(format!(
                            "{at}: step type `{}` does not allow overriding destructive/idempotent",
                            step.kind
                        ));
                    }
                }
            }
            if step.timeout.is_some_and(|t| t.is_zero()) {
                out.push(format!("{at}.timeout: must be more than zero"));
            }
        }
        out
    }
}
