//! Configuration: one TOML file (plus an optional runbooks folder), `${ENV_VAR}` substitution
//! for secrets, validated as a whole so `check-config` lists every problem at once.

mod load;
mod model;
mod secret;
mod validate;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

pub use load::{ConfigProblems, Parsed, parse_str};
pub use model::*;
use recovery::{registry::Registry, resources::Resources, runbook::RunbookDef};
pub use secret::Secret;

use crate::grammar::Vocabulary;

/// A loaded, validated configuration and what is derived from it.
#[derive(Clone)]
pub struct Settings {
    /// The file's content.
    pub config: Config,
    /// See [`revision`]: part of every plan fingerprint.
    pub revision: String,
    /// Where it was read from.
    pub path: PathBuf,
    /// Step types: `recovery`'s providers plus drbot's own (`crate::steps`).
    pub registry: Registry,
    /// Filled by [`crate::app::App::new`]; drbot's own step types run through it.
    pub app_slot: crate::steps::AppSlot,
    /// What the config allows but an SRE should know (`validate::warnings`).
    pub warnings: Vec<String>,
    /// `server.listen`.
    pub listen: SocketAddr,
    /// `approvals.expires_after`.
    pub expires_after: Duration,
    /// `engine.lease`.
    pub lease: Duration,
    /// `engine.poll_interval`.
    pub poll_interval: Duration,
    /// `engine.shutdown_grace`.
    pub shutdown_grace: Duration,
    /// Names the grammar checks arguments against (built once).
    vocabulary: Vocabulary,
}

/// Chat platforms and other places commands come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Platform {
    /// Slack.
    Slack,
    /// Discord.
    Discord,
    /// `drbot cmd` (break-glass).
    Cli,
    /// drbot itself (scheduler, engine).
    System,
}

impl Platform {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Slack => "slack",
            Self::Discord => "discord",
            Self::Cli => "cli",
            Self::System => "system",
        }
    }
}

impl Settings {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Settings, ConfigProblems> {
        Self::from_parsed(load::parse_file(path)?, path.to_path_buf())
    }

    /// [`Settings::load`] for commands that use only the store: integration sections whose
    /// environment variables are not set are left out (see [`load::parse_file_for_store`]);
    /// also returns what was left out, and why.
    pub fn load_for_store(path: &Path) -> Result<(Settings, Vec<String>), ConfigProblems> {
        let mut parsed = load::parse_file_for_store(path)?;
        let left_out = std::mem::take(&mut parsed.left_out);
        Ok((Self::from_parsed(parsed, path.to_path_buf())?, left_out))
    }

    /// Validates a parsed config: its structural problems plus every semantic one.
    pub fn from_parsed(parsed: Parsed, path: PathBuf) -> Result<Settings, ConfigProblems> {
        let Parsed {
            config,
            mut problems,
            ..
        } = parsed;
        let app_slot = crate::steps::AppSlot::default();
        let mut registry = Registry::with_resources(std::sync::Arc::new(Resources {
            postgres: config.postgres.clone(),
            backups: config.backups.clone(),
            kubernetes: config.kubernetes.clone(),
            dns: config.dns.clone(),
            redis: config.redis.clone(),
        }));
        crate::steps::register(&mut registry, &app_slot, &config);
        // A key that already has a structural problem gets no follow-on semantic ones.
        let broken: Vec<String> = problems
            .iter()
            .filter_map(|p| p.split_once(": ").map(|(k, _)| format!("{k}:")))
            .collect();
        for p in validate::problems(&config, &registry) {
            if !problems.contains(&p) && !broken.iter().any(|k| p.starts_with(k.as_str())) {
                problems.push(p);
            }
        }
        let revision = revision(&config);
        let warnings = validate::warnings(&config);
        if !problems.is_empty() {
            return Err(ConfigProblems(problems));
        }
        let dur = |s: &str| humantime::parse_duration(s).unwrap_or_default();
        Ok(Settings {
            warnings,
            listen: config
                .server
                .listen
                .parse()
                .map_err(|_| ConfigProblems(vec!["server.listen: not an address".into()]))?,
            expires_after: dur(&config.approvals.expires_after),
            lease: dur(&config.engine.lease),
            poll_interval: dur(&config.engine.poll_interval),
            shutdown_grace: dur(&config.engine.shutdown_grace),
            vocabulary: Vocabulary {
                regions: config.regions.keys().cloned().collect(),
                templates: crate::notify::email::TEMPLATES
                    .iter()
                    .map(|t| t.to_string())
                    .collect(),
                checklists: config.checklists.iter().map(|c| c.name.clone()).collect(),
            },
            config,
            revision,
            path,
            registry,
            app_slot,
        })
    }

    /// Person by `[[people]].name`.
    pub fn person(&self, name: &str) -> Option<&Person> {
        self.config.people.iter().find(|p| p.name == name)
    }

    /// Person owning a chat account.
    pub fn person_by_account(&self, platform: Platform, id: &str) -> Option<&Person> {
        self.config.people.iter().find(|p| match platform {
            Platform::Slack => p.slack.as_deref() == Some(id),
            Platform::Discord => p.discord.as_deref() == Some(id),
            Platform::Cli | Platform::System => false,
        })
    }

    /// Runbook bound to a `/dr` command.
    pub fn runbook_for(&self, command: &str) -> Option<&RunbookDef> {
        self.config.runbooks.iter().find(|r| r.command == command)
    }

    /// What the grammar needs to know.
    pub fn vocabulary(&self) -> &Vocabulary {
        &self.vocabulary
    }

    /// Variables for runbook placeholders.
    pub fn vars(&self, region: Option<&str>) -> BTreeMap<String, String> {
        vars_for(&self.config, region)
    }

    /// The region with `role = "primary"`.
    pub fn primary_region(&self) -> Option<&str> {
        self.config
            .regions
            .iter()
            .find(|(_, r)| r.role == "primary")
            .map(|(n, _)| n.as_str())
    }
}

/// The config revision that plan fingerprints include: SHA-256 over what decides a plan and
/// who may approve it (people, approval rules, regions, runbooks). Listen addresses, comments,
/// secrets and file paths do not change it, so processes sharing a store agree on it.
pub fn revision(cfg: &Config) -> String {
    use sha2::{Digest, Sha256};
    let v = serde_json::json!({
        "people": cfg.people,
        "approvals": cfg.approvals,
        "regions": cfg.regions,
        "runbooks": cfg.runbooks,
        // What steps act on, without secrets (a changed password does not void approvals).
        "postgres": cfg.postgres.iter().map(|(k, c)| (k, format!("{} {:?} {:?} {:?}", c.display(), c.bin_dir, c.data_dir, c.os_user))).collect::<BTreeMap<_, _>>(),
        "backups": format!("{:?}", cfg.backups),
        "kubernetes": cfg.kubernetes,
        "dns": cfg.dns,
        "redis": cfg.redis.iter().map(|(k, r)| (k, r.display())).collect::<BTreeMap<_, _>>(),
    });
    hex::encode(Sha256::digest(v.to_string().as_bytes()))
}

/// Variables for runbook placeholders: `primary`, `secondary`, `regions.<name>.<field>`, the
/// primary's and first secondary's fields as `primary.<field>` and `secondary.<field>`, and
/// for a command naming a region, `region` plus `region.<field>`; `targets.rto` and
/// `targets.rpo` from `[targets]`.
pub fn vars_for(cfg: &Config, region: Option<&str>) -> BTreeMap<String, String> {
    let mut vars = BTreeMap::new();
    vars.insert("targets.rto".to_string(), cfg.targets.rto.clone());
    vars.insert("targets.rpo".to_string(), cfg.targets.rpo.clone());
    for (name, r) in &cfg.regions {
        match r.role.as_str() {
            "primary" => {
                vars.insert("primary".to_string(), name.clone());
            }
            _ => {
                vars.entry("secondary".to_string())
                    .or_insert_with(|| name.clone());
            }
        }
        let role = match r.role.as_str() {
            "primary" => Some("primary"),
            _ if vars.get("secondary") == Some(name) => Some("secondary"),
            _ => None,
        };
        for (k, v) in region_fields(name, r) {
            if let Some(role) = role {
                vars.insert(format!("{role}.{k}"), v.clone());
            }
            vars.insert(format!("regions.{name}.{k}"), v);
        }
    }
    if let Some(name) = region
        && let Some(r) = cfg.regions.get(name)
    {
        vars.insert("region".into(), name.to_string());
        for (k, v) in region_fields(name, r) {
            vars.insert(format!("region.{k}"), v);
        }
    }
    vars
}

fn region_fields(name: &str, r: &RegionConfig) -> Vec<(String, String)> {
    let mut f = vec![
        ("name".to_string(), name.to_string()),
        ("role".into(), r.role.clone()),
    ];
    if let Some(h) = &r.health_url {
        f.push(("health_url".into(), h.clone()));
    }
    f.extend(r.vars.iter().map(|(k, v)| (k.clone(), v.clone())));
    f
}

/// Arguments used to check a runbook's placeholders at `check-config` time.
pub fn sample_args(command: &str, region: Option<&str>) -> BTreeMap<String, String> {
    let mut a = BTreeMap::new();
    if let Some(r) = region {
        a.insert("region".into(), r.to_string());
    }
    match command {
        "verify-backup" => {
            a.insert("backup".into(), "latest".into());
        }
        "pitr" | "recover-corruption" => {
            a.insert("timestamp".into(), "2026-01-27T14:30:00Z".into());
        }
        "notify-customers" => {
            a.insert("template".into(), "dr-activated".into());
        }
        _ => {}
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[server]
listen = "127.0.0.1:8080"
[[people]]
name = "alice"
roles = ["lead"]
[regions.r1]
role = "primary"
[[runbooks]]
name = "failover"
command = "failover"
request_roles = ["lead"]
approve_roles = ["lead"]
[[runbooks.steps]]
name = "x"
type = "exec"
with = { command = "true" }
"#;

    fn rev(text: &str) -> String {
        revision(&parse_str(text, Path::new("."), &|_| None).unwrap().config)
    }

    #[test]
    fn revision_ignores_what_does_not_change_a_plan() {
        let base = rev(BASE);
        assert_eq!(base, rev(&BASE.replace("8080", "9090")));
        assert_eq!(base, rev(&format!("# a comment\n{BASE}")));
        assert_ne!(
            base,
            rev(&BASE.replace("command = \"true\"", "command = \"false\""))
        );
        assert_ne!(
            base,
            rev(&BASE.replace(
                "roles = [\"lead\"]\n[regions",
                "roles = [\"lead\", \"x\"]\n[regions"
            ))
        );
    }

    /// `${NAME}` is read at load time everywhere except in runbook step parameters, which keep
    /// the reference (the plan, its fingerprint and the config revision never hold the value)
    /// and still have it checked.
    #[test]
    fn step_parameters_keep_their_environment_references() {
        let text = BASE.replace(
            "with = { command = \"true\" }",
            "with = { command = \"true\", args = [\"Bearer ${TOKEN}\"] }",
        );
        let text = format!("{text}\n[store]\nurl = \"sqlite://${{DB}}\"\n");
        let env = |k: &str| match k {
            "TOKEN" => Some("sekret-1".to_string()),
            "DB" => Some("/tmp/x.db".to_string()),
            _ => None,
        };
        let parsed = parse_str(&text, Path::new("."), &env).unwrap();
        assert!(parsed.problems.is_empty(), "{:?}", parsed.problems);
        let with = &parsed.config.runbooks[0].steps[0].with;
        assert_eq!(with["args"][0], "Bearer ${TOKEN}");
        assert_eq!(parsed.config.store.url.expose(), "sqlite:///tmp/x.db");
        let rotated = |k: &str| match k {
            "TOKEN" => Some("sekret-2".to_string()),
            other => env(other),
        };
        assert_eq!(
            revision(&parsed.config),
            revision(&parse_str(&text, Path::new("."), &rotated).unwrap().config),
            "a rotated secret does not void pending requests"
        );
        let unset = |k: &str| (k == "DB").then(|| "/tmp/x.db".to_string());
        let problems = match parse_str(&text, Path::new("."), &unset) {
            Ok(p) => p.problems,
            Err(e) => e.0,
        };
        assert!(
            problems
                .iter()
                .any(|p| p
                    == "runbooks[0].steps[0].with.args[0]: environment variable TOKEN is not set"),
            "{problems:?}"
        );
    }

    #[test]
    fn unknown_builtin_runbook_is_named_with_the_available_ones() {
        let text = format!("builtin_runbooks = [\"nope\"]\n{BASE}");
        let parsed = parse_str(&text, Path::new("."), &|_| None).unwrap();
        let p = parsed
            .problems
            .iter()
            .find(|p| p.starts_with("builtin_runbooks:"))
            .expect("a problem about builtin_runbooks");
        assert!(p.contains("no built-in runbook `nope`"), "{p}");
        assert!(p.contains("available:"), "{p}");
    }
}
