//! The configuration file's shape: one struct per section, every field documented.

use std::{collections::BTreeMap, path::PathBuf};

use serde::{Deserialize, Serialize};

use super::secret::Secret;

/// `[server]`: the HTTP server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on, `"127.0.0.1:8080"` style.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// URL at which users and Slack/Discord reach this server (used in links).
    #[serde(default)]
    pub public_url: Option<String>,
    /// Log format: `text` (default) or `json`.
    #[serde(default = "default_log_format")]
    pub log_format: String,
    /// Serve incident and run reports at `/reports/incidents/<id>` and `/reports/runs/<id>`
    /// (default false). Reports name the people who requested, approved and ticked: enable
    /// only when this listener is reachable by your staff alone (VPN, or a proxy that keeps
    /// `/reports/` internal). With `public_url`, the link posted on resolve points there.
    #[serde(default)]
    pub reports: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            public_url: None,
            log_format: default_log_format(),
            reports: false,
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_log_format() -> String {
    "text".into()
}

/// `[store]`: where drbot keeps runs, approvals and the audit log.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite://drbot.db` (default; the file is created if missing) or `postgres://…`.
    #[serde(default = "default_store_url")]
    pub url: Secret,
    /// Largest number of pooled connections.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: default_store_url(),
            max_connections: default_max_connections(),
        }
    }
}

fn default_store_url() -> Secret {
    Secret::new("sqlite://drbot.db")
}
fn default_max_connections() -> u32 {
    8
}

/// `[[people]]`: one human, with roles and chat accounts.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Person {
    /// Unique name (used by `drbot cmd --as`).
    pub name: String,
    /// Roles that runbooks grant requests and approvals to, e.g. `oncall`, `sre-lead`.
    pub roles: Vec<String>,
    /// Slack user id (e.g. `U024BE7LH`).
    #[serde(default)]
    pub slack: Option<String>,
    /// Discord user id (a snowflake).
    #[serde(default)]
    pub discord: Option<String>,
}

/// `[approvals]`: the two-person rule.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalsConfig {
    /// Distinct approvers needed besides the requester (default 1).
    #[serde(default = "default_required")]
    pub required: u32,
    /// How long a request stays open, `"30m"` style (default 30 minutes).
    #[serde(default = "default_expires_after")]
    pub expires_after: String,
}

impl Default for ApprovalsConfig {
    fn default() -> Self {
        Self {
            required: default_required(),
            expires_after: default_expires_after(),
        }
    }
}

fn default_required() -> u32 {
    1
}
fn default_expires_after() -> String {
    "30m".into()
}

/// `[regions.<name>]`: a region runbooks can target.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegionConfig {
    /// `primary` or `secondary`.
    pub role: String,
    /// Free text shown in `/dr status`.
    #[serde(default)]
    pub description: String,
    /// Health endpoint of the region's API (available to steps as `{region.health_url}`).
    #[serde(default)]
    pub health_url: Option<String>,
    /// Extra variables for runbook placeholders, as `{region.<key>}`.
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
}

/// `[engine]`: how runs are driven.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// How long a process's claim on a run lasts without renewal (default `"15s"`).
    #[serde(default = "default_lease")]
    pub lease: String,
    /// How often `serve` looks for runs to drive and requests to expire (default `"500ms"`).
    #[serde(default = "default_poll")]
    pub poll_interval: String,
    /// On SIGTERM, how long in-flight steps may finish before they are interrupted.
    #[serde(default = "default_grace")]
    pub shutdown_grace: String,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            lease: default_lease(),
            poll_interval: default_poll(),
            shutdown_grace: default_grace(),
        }
    }
}

fn default_lease() -> String {
    "15s".into()
}
fn default_poll() -> String {
    "500ms".into()
}
fn default_grace() -> String {
    "30s".into()
}

/// `[monitor]`: health checks of every region with a `health_url` (as Gatus does). When the
/// primary is down, drbot posts an alert with a "Start failover" button to the incident
/// channels. It only proposes: the failover still needs two-person approval.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorConfig {
    /// Time between checks of one region (default `"30s"`).
    #[serde(default = "default_monitor_interval")]
    pub interval: String,
    /// Time limit of one check (default `"5s"`).
    #[serde(default = "default_monitor_timeout")]
    pub timeout: String,
    /// Consecutive failed checks before a region counts as down (default 3).
    #[serde(default = "default_failure_threshold")]
    pub failure_threshold: u32,
    /// Consecutive passed checks before a down region counts as up again (default 2).
    #[serde(default = "default_recovery_threshold")]
    pub recovery_threshold: u32,
    /// HTTP status a healthy answer has (default 200).
    #[serde(default = "default_monitor_status")]
    pub expect_status: u16,
    /// A region down again within this long of recovering continues its last outage, with
    /// no new alert (a flapping region posts one proposal, not one per flap; default `"10m"`,
    /// `"0s"` for none).
    #[serde(default = "default_monitor_cooldown")]
    pub cooldown: String,
}

fn default_monitor_cooldown() -> String {
    "10m".into()
}

fn default_monitor_interval() -> String {
    "30s".into()
}
fn default_monitor_timeout() -> String {
    "5s".into()
}
fn default_failure_threshold() -> u32 {
    3
}
fn default_recovery_threshold() -> u32 {
    2
}
fn default_monitor_status() -> u16 {
    200
}

/// `[incidents]`: how often customers hear from an open incident.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncidentsConfig {
    /// Promised cadence of customer updates while an incident is open (seed: every hour). It
    /// appears in the customer texts, and when no update went out for this long drbot reminds
    /// the incident channels.
    #[serde(default = "default_update_cadence")]
    pub update_cadence: String,
}

impl Default for IncidentsConfig {
    fn default() -> Self {
        Self {
            update_cadence: default_update_cadence(),
        }
    }
}

fn default_update_cadence() -> String {
    "1h".into()
}

/// `[targets]`: the recovery objectives measured runs are compared with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetsConfig {
    /// Recovery time objective (seed: 4 h).
    #[serde(default = "default_rto")]
    pub rto: String,
    /// Recovery point objective (seed: 15 min).
    #[serde(default = "default_rpo")]
    pub rpo: String,
}

impl Default for TargetsConfig {
    fn default() -> Self {
        Self {
            rto: default_rto(),
            rpo: default_rpo(),
        }
    }
}

fn default_rto() -> String {
    "4h".into()
}
fn default_rpo() -> String {
    "15m".into()
}

/// `[slack]`: the Slack app.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    /// Signing secret that verifies Slack's requests; required with `mode = "http"` (Socket
    /// Mode traffic is not signed).
    #[serde(default)]
    pub signing_secret: Option<Secret>,
    /// Bot token (`xoxb-…`) for the Web API.
    pub bot_token: Secret,
    /// Web API prefix; drbot calls `{api_base_url}/chat.postMessage`.
    #[serde(default = "default_slack_api")]
    pub api_base_url: String,
    /// Channel id where approval requests and status updates go.
    pub incident_channel: String,
    /// `http` (default: Slack calls `/slack/commands` and `/slack/interactions`) or `socket`
    /// (drbot opens a Socket Mode connection; no public URL needed).
    #[serde(default = "default_slack_mode")]
    pub mode: String,
    /// App-level token (`xapp-…`, scope `connections:write`), required for `mode = "socket"`.
    #[serde(default)]
    pub app_token: Option<Secret>,
}

fn default_slack_mode() -> String {
    "http".into()
}

fn default_slack_api() -> String {
    "https://slack.com/api".into()
}

/// `[discord]`: the Discord application.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscordConfig {
    /// Application public key (hex) that verifies interaction signatures.
    pub public_key: String,
    /// Bot token for channel messages.
    pub bot_token: Secret,
    /// Application id.
    pub application_id: String,
    /// API prefix (default `https://discord.com/api/v10`).
    #[serde(default = "default_discord_api")]
    pub api_base_url: String,
    /// Channel id where approval requests and status updates go.
    pub incident_channel: String,
    /// Answer a command or a button click with a deferred response ("drbot is thinking…")
    /// when it takes longer than this, then edit the answer in; Discord drops answers after
    /// 3 s (default `"2s"`).
    #[serde(default = "default_defer_after")]
    pub defer_after: String,
    /// How long after a command drbot still uses its interaction token for follow-ups (Discord
    /// honours tokens for 15 minutes); later ones go to the channel (default `"14m"`).
    #[serde(default = "default_followup_window")]
    pub followup_window: String,
}

fn default_defer_after() -> String {
    "2s".into()
}

fn default_followup_window() -> String {
    "14m".into()
}

fn default_discord_api() -> String {
    "https://discord.com/api/v10".into()
}

/// `[statuspage]`: Atlassian Statuspage (`base_url`, `page_id`, `api_key`, `timeout`); the
/// notifier's own section type, so the client is built from exactly what it documents.
pub use notifier::statuspage::StatuspageConfig;

/// `[status_page]`: drbot's own public status page at `/status`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicPageConfig {
    /// Page title (default `Service status`).
    #[serde(default = "default_page_title")]
    pub title: String,
    /// `[[status_page.components]]`: the services shown, in order. Each is operational unless
    /// an incident is open, then it takes the status matching the incident's impact.
    #[serde(default)]
    pub components: Vec<PageComponentConfig>,
}

impl Default for PublicPageConfig {
    fn default() -> Self {
        Self {
            title: default_page_title(),
            components: Vec::new(),
        }
    }
}

fn default_page_title() -> String {
    "Service status".into()
}

/// `[[status_page.components]]`: one service on the public status page.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageComponentConfig {
    /// Display name, e.g. `API`.
    pub name: String,
    /// One line shown under the name (optional).
    #[serde(default)]
    pub description: String,
    /// The matching component's id on Statuspage (`[statuspage]`), whose status drbot then
    /// keeps in step with this one (optional).
    #[serde(default)]
    pub statuspage_id: Option<String>,
}

/// `[email]`: customer email (`/dr notify customers`), sent through the outbox.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// `smtp://user:pass@host:port` (plain), `…?tls=required|opportunistic` (STARTTLS) or
    /// `smtps://…` (implicit TLS); may hold credentials.
    pub smtp_url: Secret,
    /// Sender address, e.g. `"Status <status@example.com>"`; its domain completes Message-IDs.
    pub from: String,
    /// Most SMTP connections open at once (default 8); also the outbox worker's deliveries in
    /// flight when larger than 8.
    #[serde(default = "default_email_connections")]
    pub max_connections: u32,
    /// Most messages started per second, retries included (default: no limit). Each `serve`
    /// process sending email applies it on its own.
    #[serde(default)]
    pub rate_limit: Option<f64>,
    /// Attempts per message before a temporary (4xx) failure is recorded as failed (default
    /// 10: with the default backoff, about 40 minutes of retries, past greylisting and a
    /// relay's restart or throttling).
    #[serde(default = "default_email_attempts")]
    pub max_attempts: u32,
    /// Wait before retrying a temporary failure, doubled at each retry (default `"10s"`).
    #[serde(default = "default_email_backoff")]
    pub retry_backoff: String,
    /// Longest wait between two retries (default `"10m"`).
    #[serde(default = "default_email_max_backoff")]
    pub max_backoff: String,
    /// Longest wait for any one SMTP reply or connection (default `"30s"`).
    #[serde(default = "default_email_timeout")]
    pub timeout: String,
}

fn default_email_connections() -> u32 {
    8
}
fn default_email_attempts() -> u32 {
    10
}
fn default_email_backoff() -> String {
    "10s".into()
}
fn default_email_max_backoff() -> String {
    "10m".into()
}
fn default_email_timeout() -> String {
    "30s".into()
}

impl EmailConfig {
    /// The notifier's settings for these values, or the first problem (key: message).
    pub fn mailer_config(&self) -> Result<notifier::email::EmailConfig, String> {
        let url = notifier::email::SmtpUrl::parse(self.smtp_url.expose())
            .map_err(|e| format!("email.smtp_url: {e}"))?;
        let dur = |key: &str, v: &str| {
            humantime::parse_duration(v)
                .map_err(|e| format!("email.{key}: `{v}` is not a duration like \"1s\": {e}"))
        };
        let mut c = notifier::email::EmailConfig::new(url, self.from.clone());
        c.max_connections = self.max_connections;
        c.rate_limit = self.rate_limit;
        c.max_attempts = self.max_attempts;
        c.retry_backoff = dur("retry_backoff", &self.retry_backoff)?;
        c.max_backoff = dur("max_backoff", &self.max_backoff)?;
        c.timeout = dur("timeout", &self.timeout)?;
        Ok(c)
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// `[server]`.
    pub server: ServerConfig,
    /// `[store]`.
    pub store: StoreConfig,
    /// `[[people]]`.
    pub people: Vec<Person>,
    /// `[approvals]`.
    pub approvals: ApprovalsConfig,
    /// `[regions.<name>]`.
    pub regions: BTreeMap<String, RegionConfig>,
    /// `[[runbooks]]` plus those from `runbooks_dir`.
    pub runbooks: Vec<recovery::runbook::RunbookDef>,
    /// `templates_dir`: folder whose files replace the built-in notification templates of the
    /// same name (relative to the config file); `drbot notify preview` shows the result.
    pub templates_dir: Option<PathBuf>,
    /// `builtin_runbooks`: built-in runbooks to enable by name (check-config lists the names);
    /// a `[[runbooks]]` entry with the same name replaces the built-in one.
    pub builtin_runbooks: Vec<String>,
    /// `runbooks_dir`: folder of `*.toml` files, one runbook each (relative to the config file).
    pub runbooks_dir: Option<PathBuf>,
    /// `[engine]`.
    pub engine: EngineConfig,
    /// `[targets]`.
    pub targets: TargetsConfig,
    /// `[incidents]`.
    pub incidents: IncidentsConfig,
    /// `[monitor]` (no health monitoring when absent).
    pub monitor: Option<MonitorConfig>,
    /// `[slack]`.
    pub slack: Option<SlackConfig>,
    /// `[discord]`.
    pub discord: Option<DiscordConfig>,
    /// `[statuspage]`.
    pub statuspage: Option<StatuspageConfig>,
    /// `[status_page]`: drbot's own public page (defaults when absent).
    pub status_page: PublicPageConfig,
    /// `[email]`.
    pub email: Option<EmailConfig>,
    /// `[postgres.<name>]`: PostgreSQL clusters steps act on (a region's is named after it).
    pub postgres: BTreeMap<String, recovery::resources::PgClusterDef>,
    /// `[backups.<name>]`: backup stores (`default` unless a step names another).
    pub backups: BTreeMap<String, recovery::resources::BackupStoreDef>,
    /// `[kubernetes.<name>]`: Kubernetes clusters steps act on (a region's is named after it).
    pub kubernetes: BTreeMap<String, recovery::resources::KubeClusterDef>,
    /// `[dns.<name>]`: DNS zones `dns_switch` steps change (`route53` or `file` provider).
    pub dns: BTreeMap<String, recovery::resources::DnsZoneDef>,
    /// `[redis.<name>]`: Redis servers steps act on (a region's is named after it).
    pub redis: BTreeMap<String, recovery::resources::RedisDef>,
    /// `[[schedules]]`: DR tests drbot requests on a cron schedule (none by default).
    pub schedules: Vec<ScheduleConfig>,
    /// `[[checklists]]` plus the built-in checklists they do not replace (by name).
    pub checklists: Vec<ChecklistDef>,
}

/// Top-level keys the file may hold.
pub const SECTIONS: &[&str] = &[
    "server",
    "store",
    "people",
    "approvals",
    "regions",
    "runbooks",
    "runbooks_dir",
    "builtin_runbooks",
    "templates_dir",
    "engine",
    "targets",
    "incidents",
    "monitor",
    "slack",
    "discord",
    "statuspage",
    "status_page",
    "email",
    "postgres",
    "backups",
    "kubernetes",
    "dns",
    "redis",
    "schedules",
    "checklists",
];

/// `[[checklists]]`: a checklist people tick in chat (`/dr checklist <name>`). An entry with
/// the name of a built-in checklist replaces it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChecklistDef {
    /// Name used in `/dr checklist <name>` (`[a-z0-9][a-z0-9_-]*`, at most 64 bytes).
    pub name: String,
    /// Heading shown above the items.
    pub title: String,
    /// The items, in order (1 to 45; ids unique within the checklist).
    pub items: Vec<ChecklistItemDef>,
}

/// One item of a checklist.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChecklistItemDef {
    /// Stable id (`[a-z0-9][a-z0-9_-]*`, at most 48 bytes), named by buttons and the audit log.
    pub id: String,
    /// What to do (at most 300 characters).
    pub text: String,
}

/// `[[schedules]]`: a DR test requested on a cron schedule, as if typed by the `scheduler`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Unique name, e.g. `weekly-backup-verification` (letters, digits, `-`, `_`).
    pub name: String,
    /// The `/dr` command run, e.g. `/dr verify-backup latest`; it must request a runbook.
    pub runbook_command: String,
    /// Cron expression (5 fields, or 6 with seconds first), e.g. `0 3 * * MON`.
    pub cron: String,
    /// IANA time zone the cron expression is read in, e.g. `Europe/Berlin`.
    #[serde(default = "default_schedule_timezone")]
    pub timezone: String,
    /// Raise an overdue alert when no run of this command (same arguments) succeeded for this
    /// long, e.g. `8d`.
    pub overdue_after: String,
    /// How late a due time may still be requested after drbot was down, e.g. `"6h"`; a later
    /// one is recorded as missed, not requested (the overdue alert then reminds people).
    /// Default: no limit (the latest missed due time is requested when drbot is back).
    #[serde(default)]
    pub catch_up_within: Option<String>,
}

fn default_schedule_timezone() -> String {
    "UTC".into()
}
