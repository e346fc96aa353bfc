//! Semantic checks of a parsed config: every problem, each with its key path.

use std::{collections::BTreeMap, collections::BTreeSet, net::SocketAddr};

use recovery::{plan::Plan, registry::Registry};

use super::{Config, model::RegionConfig, sample_args, vars_for};

/// The longest duration setting: far beyond any use, and far from overflowing a time.
const MAX_SETTING: std::time::Duration = std::time::Duration::from_secs(100 * 366 * 24 * 3600);

/// Every semantic problem in `cfg`.
/// What a valid config allows but an SRE should know before 3 a.m.: `check-config` prints
/// these and `serve` logs them, neither refuses to run.
pub fn warnings(cfg: &Config) -> Vec<String> {
    let mut out = Vec::new();
    for (i, rb) in cfg.runbooks.iter().enumerate() {
        let approvers = cfg
            .people
            .iter()
            .filter(|p| p.roles.iter().any(|r| rb.approve_roles.contains(r)))
            .count();
        let required = cfg.approvals.required as usize;
        // A requester never approves their own request: count the others.
        let stuck: Vec<&str> = cfg
            .people
            .iter()
            .filter(|p| {
                p.roles.iter().any(|r| rb.request_roles.contains(r))
                    && p.roles.iter().any(|r| rb.approve_roles.contains(r))
                    && approvers >= required
                    && approvers - 1 < required
            })
            .map(|p| p.name.as_str())
            .collect();
        if !stuck.is_empty() {
            out.push(format!(
                "{} ({}): a request by {} cannot reach its {required} approval(s): \
                 nobody else holds {}",
                runbook_at(i, rb),
                rb.name,
                stuck.join(" or "),
                rb.approve_roles.join(" or ")
            ));
        }
    }
    // Region fields become plan variables, which plans store and `show` prints: a password in
    // a URL there would be too.
    for (name, r) in &cfg.regions {
        let fields = r
            .health_url
            .iter()
            .map(|u| ("health_url".to_string(), u))
            .chain(r.vars.iter().map(|(k, v)| (format!("vars.{k}"), v)));
        for (key, value) in fields {
            if reqwest::Url::parse(value).is_ok_and(|u| u.password().is_some()) {
                out.push(format!(
                    "regions.{name}.{key}: holds a password, which every plan using it stores \
                     and `drbot show` prints; give it to the step instead, e.g. as a header \
                     `Authorization = \"Basic ${{HEALTH_AUTH}}\"` in its `with`"
                ));
            }
        }
    }
    out
}

pub fn problems(cfg: &Config, registry: &Registry) -> Vec<String> {
    let mut out = Vec::new();
    if cfg.server.listen.parse::<SocketAddr>().is_err() {
        out.push(format!(
            "server.listen: `{}` is not an address like \"127.0.0.1:8080\"",
            cfg.server.listen
        ));
    }
    if let Some(u) = &cfg.server.public_url {
        check_public_url(u, &mut out);
    }
    if !matches!(cfg.server.log_format.as_str(), "text" | "json") {
        out.push(format!(
            "server.log_format: `{}` is not `text` or `json`",
            cfg.server.log_format
        ));
    }
    let store = cfg.store.url.expose();
    if !(store.starts_with("sqlite:")
        || store.starts_with("postgres://")
        || store.starts_with("postgresql://"))
    {
        out.push("store.url: must start with `sqlite:`, `postgres://` or `postgresql://`".into());
    }
    if cfg.store.max_connections == 0 {
        out.push("store.max_connections: must be at least 1".into());
    }
    check_people(cfg, &mut out);
    for (name, def) in &cfg.redis {
        if let Err(e) = recovery::redis_ops::check_url(def) {
            out.push(format!("redis.{name}.url: {e}"));
        }
    }
    for (name, def) in &cfg.kubernetes {
        if let Err(e) = recovery::k8s::client::check_kubeconfig(def) {
            out.push(format!("kubernetes.{name}: {e}"));
        }
    }
    if cfg.approvals.required == 0 {
        out.push("approvals.required: must be at least 1 (two-person approval)".into());
    }
    for (key, value) in [
        ("approvals.expires_after", &cfg.approvals.expires_after),
        ("engine.lease", &cfg.engine.lease),
        ("engine.poll_interval", &cfg.engine.poll_interval),
        ("engine.shutdown_grace", &cfg.engine.shutdown_grace),
        ("targets.rto", &cfg.targets.rto),
        ("targets.rpo", &cfg.targets.rpo),
        ("incidents.update_cadence", &cfg.incidents.update_cadence),
    ] {
        match humantime::parse_duration(value) {
            Ok(d) if d.is_zero() && key != "engine.shutdown_grace" => {
                out.push(format!("{key}: must be more than zero"))
            }
            // Beyond this, times computed from it overflow (a request expired at once).
            Ok(d) if d > MAX_SETTING => out.push(format!("{key}: must be at most 100 years")),
            Ok(_) => {}
            Err(e) => out.push(format!(
                "{key}: `{value}` is not a duration like \"30m\": {e}"
            )),
        }
    }
    if let Some(m) = &cfg.monitor {
        check_monitor(cfg, m, &mut out);
    }
    check_regions(&cfg.regions, &mut out);
    check_runbooks(cfg, registry, &mut out);
    out.extend(crate::schedule::problems(cfg));
    check_postgres(cfg, registry, &mut out);
    // Every template renders with sample data; unknown variables and syntax errors are named.
    match notifier::templates::Templates::load(cfg.templates_dir.as_deref()) {
        Ok(t) => {
            if let Err(errs) = t.check_all() {
                out.extend(errs.0.iter().map(|e| format!("templates: {e}")));
            }
        }
        Err(errs) => out.extend(errs.0.iter().map(|e| format!("templates_dir: {e}"))),
    }
    if let Some(s) = &cfg.slack {
        check_url("slack.api_base_url", &s.api_base_url, &mut out);
        non_empty("slack.incident_channel", &s.incident_channel, &mut out);
        non_empty("slack.bot_token", s.bot_token.expose(), &mut out);
        match (s.mode.as_str(), &s.app_token) {
            ("http", _) => match &s.signing_secret {
                Some(secret) => non_empty("slack.signing_secret", secret.expose(), &mut out),
                None => out.push(
                    "slack.signing_secret: required with mode = \"http\" (it verifies Slack's \
                     requests)"
                        .into(),
                ),
            },
            ("socket", Some(t)) if t.expose().starts_with("xapp-") => {}
            ("socket", _) => {
                out.push("slack.app_token: Socket Mode needs the app-level token (`xapp-…`)".into())
            }
            (other, _) => out.push(format!("slack.mode: `{other}` is not `http` or `socket`")),
        }
    }
    if let Some(d) = &cfg.discord {
        check_url("discord.api_base_url", &d.api_base_url, &mut out);
        non_empty("discord.incident_channel", &d.incident_channel, &mut out);
        non_empty("discord.application_id", &d.application_id, &mut out);
        non_empty("discord.bot_token", d.bot_token.expose(), &mut out);
        for (key, value, max) in [
            ("discord.defer_after", &d.defer_after, 2_500u64),
            ("discord.followup_window", &d.followup_window, 15 * 60_000),
        ] {
            match humantime::parse_duration(value) {
                Ok(v) if v.as_millis() as u64 > max => out.push(format!(
                    "{key}: at most {} (Discord's limit)",
                    humantime::format_duration(std::time::Duration::from_millis(max))
                )),
                Ok(_) => {}
                Err(e) => out.push(format!(
                    "{key}: `{value}` is not a duration like \"2s\": {e}"
                )),
            }
        }
        if hex::decode(&d.public_key).map(|k| k.len()) != Ok(32) {
            out.push(
                "discord.public_key: must be the application's 64-hex-digit public key".into(),
            );
        } else if crate::discord::verify::public_key(&d.public_key)
            .and_then(crate::discord::batch::Key::new)
            .is_none()
        {
            // 64 hex digits that no Ed25519 key has: every request would be refused.
            out.push(
                "discord.public_key: not a valid Ed25519 public key (64 hex digits, but no \
                 application's key); copy the Public Key from the Discord Developer Portal again"
                    .into(),
            );
        }
    }
    if let Some(s) = &cfg.statuspage {
        check_url("statuspage.base_url", &s.base_url, &mut out);
        if let Err(e) = s.client() {
            // The error names its origin already ("statuspage: …").
            out.push(e.to_string());
        }
    }
    for (i, c) in cfg.status_page.components.iter().enumerate() {
        non_empty(
            &format!("status_page.components[{i}].name"),
            &c.name,
            &mut out,
        );
    }
    if let Some(e) = &cfg.email {
        check_email(e, &mut out);
    }
    check_email_public_url(cfg, &mut out);
    out
}

/// `[email]`: a usable SMTP URL, a sender address, sane pool, rate and retry values.
fn check_email(e: &super::EmailConfig, out: &mut Vec<String>) {
    let url = e.smtp_url.expose();
    if !(url.starts_with("smtp://") || url.starts_with("smtps://")) {
        out.push("email.smtp_url: must start with `smtp://` or `smtps://`".into());
    } else if let Err(p) = e.mailer_config() {
        out.push(p);
    }
    match e.from.parse::<lettre::message::Mailbox>() {
        Err(err) => out.push(format!(
            "email.from: `{}` is not an email address ({err})",
            e.from
        )),
        // Its domain is also every Message-ID's right-hand side, which must be plain text.
        Ok(mb)
            if !mb
                .email
                .domain()
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-') =>
        {
            out.push(format!(
                "email.from: the domain `{}` must be a plain ASCII domain name (no IP literal, \
                 no non-ASCII letters: write those as punycode, xn--…); it is also every \
                 Message-ID's domain",
                mb.email.domain()
            ))
        }
        Ok(_) => {}
    }
    if !(1..=1000).contains(&e.max_connections) {
        out.push(format!(
            "email.max_connections: {} is out of range (1 to 1000)",
            e.max_connections
        ));
    }
    if !(1..=100).contains(&e.max_attempts) {
        out.push(format!(
            "email.max_attempts: {} is out of range (1 to 100)",
            e.max_attempts
        ));
    }
    if let Some(r) = e.rate_limit
        && !(0.001..=1_000_000.0).contains(&r)
    {
        out.push(format!(
            "email.rate_limit: {r} is out of range (0.001 to 1000000 messages per second)"
        ));
    }
    if humantime::parse_duration(&e.timeout).is_ok_and(|d| d.is_zero()) {
        out.push("email.timeout: must be more than zero".into());
    }
}

/// Customer email needs `server.public_url`: every message's unsubscribe link points there.
fn check_email_public_url(cfg: &Config, out: &mut Vec<String>) {
    if cfg.email.is_some() && cfg.server.public_url.is_none() {
        out.push(
            "email: set `server.public_url`; every customer email's unsubscribe link points there"
                .into(),
        );
    }
}

fn non_empty(key: &str, v: &str, out: &mut Vec<String>) {
    if v.trim().is_empty() {
        out.push(format!("{key}: must not be empty"));
    }
}

fn check_url(key: &str, u: &str, out: &mut Vec<String>) {
    let ok = (u.starts_with("http://") || u.starts_with("https://"))
        && u.split("://")
            .nth(1)
            .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'));
    if !ok {
        out.push(format!("{key}: `{u}` is not an http(s) URL"));
        return;
    }
    if let Err(e) = reqwest::Url::parse(u) {
        out.push(format!("{key}: `{u}` is not a valid URL ({e})"));
    }
}

/// `server.public_url` is the base of every unsubscribe link and status page link: a query or
/// a fragment would break them.
fn check_public_url(u: &str, out: &mut Vec<String>) {
    let before = out.len();
    check_url("server.public_url", u, out);
    if out.len() > before {
        return;
    }
    if let Ok(url) = reqwest::Url::parse(u)
        && (url.query().is_some() || url.fragment().is_some())
    {
        out.push(format!(
            "server.public_url: `{u}` must have no `?query` or `#fragment` (links are built \
             by appending paths to it)"
        ));
    }
}

fn check_people(cfg: &Config, out: &mut Vec<String>) {
    let mut names = BTreeSet::new();
    let mut accounts: BTreeMap<String, &str> = BTreeMap::new();
    for (i, p) in cfg.people.iter().enumerate() {
        let at = format!("people[{i}]");
        if p.name.trim().is_empty() {
            out.push(format!("{at}.name: must not be empty"));
        } else if !names.insert(p.name.as_str()) {
            out.push(format!("{at}.name: `{}` is listed twice", p.name));
        }
        if p.roles.is_empty() {
            out.push(format!("{at}.roles: give at least one role"));
        }
        for (platform, id) in [("slack", &p.slack), ("discord", &p.discord)] {
            if let Some(id) = id {
                if id.trim().is_empty() {
                    out.push(format!("{at}.{platform}: must not be empty"));
                }
                let key = format!("{platform}:{id}");
                if let Some(other) = accounts.insert(key, &p.name) {
                    out.push(format!(
                        "{at}.{platform}: account `{id}` already belongs to `{other}`"
                    ));
                }
            }
        }
    }
}

/// `[monitor]`: durations, thresholds, and something to watch.
fn check_monitor(cfg: &Config, m: &super::MonitorConfig, out: &mut Vec<String>) {
    for (key, value) in [
        ("monitor.interval", &m.interval),
        ("monitor.timeout", &m.timeout),
    ] {
        match humantime::parse_duration(value) {
            Ok(d) if d.is_zero() => out.push(format!("{key}: must be more than zero")),
            Ok(_) => {}
            Err(e) => out.push(format!(
                "{key}: `{value}` is not a duration like \"30s\": {e}"
            )),
        }
    }
    if let Err(e) = humantime::parse_duration(&m.cooldown) {
        out.push(format!(
            "monitor.cooldown: `{}` is not a duration like \"10m\": {e}",
            m.cooldown
        ));
    }
    if m.failure_threshold == 0 {
        out.push("monitor.failure_threshold: must be at least 1".into());
    }
    if m.recovery_threshold == 0 {
        out.push("monitor.recovery_threshold: must be at least 1".into());
    }
    if !(100..=599).contains(&m.expect_status) {
        out.push(format!(
            "monitor.expect_status: {} is not an HTTP status",
            m.expect_status
        ));
    }
    if !cfg.regions.values().any(|r| r.health_url.is_some()) {
        out.push("monitor: no region has a `health_url` to check".into());
    }
}

fn check_regions(regions: &BTreeMap<String, RegionConfig>, out: &mut Vec<String>) {
    if regions.is_empty() {
        out.push("regions: define at least one `[regions.<name>]`".into());
    }
    let mut primaries = 0;
    let mut secondaries = Vec::new();
    for (name, r) in regions {
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            out.push(format!(
                "regions.{name}: region names use letters, digits, `-` and `_`"
            ));
        }
        match r.role.as_str() {
            "primary" => primaries += 1,
            "secondary" => secondaries.push(name.as_str()),
            other => out.push(format!(
                "regions.{name}.role: `{other}` is not `primary` or `secondary`"
            )),
        }
        if let Some(u) = &r.health_url {
            check_url(&format!("regions.{name}.health_url"), u, out);
        }
    }
    if primaries > 1 {
        out.push("regions: only one region can have role = \"primary\"".into());
    }
    // `{secondary}` (the drill's DR region, the monitor's failover target) must name one.
    if secondaries.len() > 1 {
        out.push(format!(
            "regions: only one region can have role = \"secondary\" (the DR region), not {}: \
             describe another environment, such as staging, in its own drbot config, where \
             its own primary and secondary are",
            secondaries.join(", ")
        ));
    }
}

/// Each `[postgres.<name>]` has a usable URL and the programs the enabled runbooks' steps run.
fn check_postgres(cfg: &Config, registry: &Registry, out: &mut Vec<String>) {
    let needed: BTreeSet<&str> = cfg
        .runbooks
        .iter()
        .flat_map(|rb| rb.steps.iter())
        .filter_map(|s| registry.get(&s.kind))
        .flat_map(|k| k.tools().iter().copied())
        .collect();
    for (name, c) in &cfg.postgres {
        let url = c.url.expose();
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            out.push(format!(
                "postgres.{name}.url: expected a `postgres://user:password@host:port/db` URL"
            ));
        }
        // libpq takes `sslpassword` only in the conninfo, which is on the command line of
        // every tool drbot runs (seen by `ps`) and in its logged command lines.
        if let Some((_, query)) = url.split_once('?')
            && form_urlencoded::parse(query.as_bytes()).any(|(k, _)| k == "sslpassword")
        {
            out.push(format!(
                "postgres.{name}.url: `sslpassword` would show in process listings and logs of \
                 the PostgreSQL tools drbot runs; give drbot a client key without a passphrase \
                 (readable only by its user) instead"
            ));
        }
        for tool in &needed {
            let found = match &c.bin_dir {
                Some(dir) => dir.join(tool).is_file(),
                None => std::env::var_os("PATH").is_some_and(|path| {
                    std::env::split_paths(&path).any(|d| d.join(tool).is_file())
                }),
            };
            if !found {
                let place = match &c.bin_dir {
                    Some(dir) => format!("in {}", dir.display()),
                    None => "on PATH (set bin_dir)".to_string(),
                };
                out.push(format!(
                    "postgres.{name}.bin_dir: `{tool}` not found {place}; the enabled runbooks run it"
                ));
            }
        }
    }
}

/// How problems name the `i`th runbook: by its file (`runbooks_dir/x.toml`), as a built-in
/// (`builtin_runbooks.failover`), or by its place among the inline ones.
fn runbook_at(i: usize, rb: &recovery::runbook::RunbookDef) -> String {
    rb.source
        .clone()
        .unwrap_or_else(|| format!("runbooks[{i}]"))
}

fn check_runbooks(cfg: &Config, registry: &Registry, out: &mut Vec<String>) {
    let roles: BTreeSet<&str> = cfg
        .people
        .iter()
        .flat_map(|p| p.roles.iter().map(String::as_str))
        .collect();
    let mut by_command: BTreeMap<&str, &str> = BTreeMap::new();
    let mut names = BTreeSet::new();
    for (i, rb) in cfg.runbooks.iter().enumerate() {
        let at = runbook_at(i, rb);
        let structural = rb.problems(registry, &at);
        let well_formed = structural.is_empty();
        out.extend(structural);
        if !names.insert(rb.name.as_str()) {
            out.push(format!("{at}.name: runbook `{}` is defined twice", rb.name));
        }
        if let Some(other) = by_command.insert(rb.command.as_str(), rb.name.as_str()) {
            out.push(format!(
                "{at}.command: `{}` is already bound to runbook `{other}`",
                rb.command
            ));
        }
        for (key, list) in [
            ("request_roles", &rb.request_roles),
            ("approve_roles", &rb.approve_roles),
        ] {
            for role in list {
                if !roles.contains(role.as_str()) {
                    out.push(format!("{at}.{key}: no person has role `{role}`"));
                }
            }
        }
        let approvers = cfg
            .people
            .iter()
            .filter(|p| p.roles.iter().any(|r| rb.approve_roles.contains(r)))
            .count();
        if approvers < cfg.approvals.required as usize {
            out.push(format!(
                "{at}.approve_roles: {} approval(s) are required but only {approvers} person(s) hold these roles",
                cfg.approvals.required
            ));
        }
        crate::checklists::runbook_problems(rb, &cfg.checklists, &at, out);
        if !well_formed {
            continue;
        }
        // Resolve the plan for every region it could target, to catch bad placeholders now.
        // A failover targets a region other than the primary; a failback may name any.
        let regions: Vec<Option<&str>> = if rb.command == "failover" {
            cfg.regions
                .iter()
                .filter(|(_, r)| r.role != "primary")
                .map(|(n, _)| Some(n.as_str()))
                .collect()
        } else if rb.command == "failback" {
            cfg.regions.keys().map(|r| Some(r.as_str())).collect()
        } else {
            vec![None]
        };
        for region in regions {
            let args = sample_args(&rb.command, region);
            let vars = vars_for(cfg, region);
            if let Err(e) = Plan::resolve(registry, rb, args, vars, "check", false) {
                let at = match region {
                    Some(r) => format!("{at} (region {r})"),
                    None => at.clone(),
                };
                let mut msg = format!("{at}: {e}");
                if let Some(hint) = database_only_hint(cfg, rb, &msg) {
                    msg.push_str(hint);
                }
                if !out.contains(&msg) {
                    out.push(msg);
                }
            }
        }
    }
}

/// For the built-in `failover` and `failback` on a config without the Kubernetes, Redis or DNS
/// entries they need: point at their database-only built-ins.
fn database_only_hint(
    cfg: &Config,
    rb: &recovery::runbook::RunbookDef,
    msg: &str,
) -> Option<&'static str> {
    let missing_infra = [
        "no [kubernetes.",
        "no [redis.",
        "no [dns.",
        "unknown Kubernetes cluster",
        "unknown Redis server",
        "unknown DNS zone",
    ]
    .iter()
    .any(|m| msg.contains(m));
    if !missing_infra || !cfg.builtin_runbooks.contains(&rb.name) {
        return None;
    }
    match rb.name.as_str() {
        "failover" => Some(
            " (only the database configured? enable the built-in `promote-db` instead of `failover`)",
        ),
        "failback" => Some(
            " (only the database configured? enable the built-in `failback-db` instead of `failback`)",
        ),
        _ => None,
    }
}
