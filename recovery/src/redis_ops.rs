//! Redis access for the `redis_*` steps: finding a `[redis.<name>]` entry, connecting with
//! bounded timeouts, reading `INFO replication`, and errors that name the server by
//! [`RedisDef::display`], never by its URL (which may hold a password).
//!
//! Errors are classified for the engine: connection failures, timeouts and "loading" or
//! "read-only" answers are retryable; failed authentication, a bad URL and other server
//! errors are fatal.

use std::time::{Duration, Instant};

use redis::{ErrorKind, RedisError, ServerErrorKind, aio::MultiplexedConnection};
use serde::Serialize;

use crate::{
    resources::{RedisDef, Resources},
    step::{StepContext, StepError},
    steps::values::is_placeholder,
};

/// Time limit for opening a connection (TCP, TLS and AUTH).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time limit for one command's answer.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Looks a `[redis.<name>]` entry up; the error lists the known names.
pub fn server<'a>(resources: &'a Resources, name: &str) -> Result<&'a RedisDef, String> {
    resources.redis.get(name).ok_or_else(|| {
        let known: Vec<&str> = resources.redis.keys().map(String::as_str).collect();
        if known.is_empty() {
            format!("unknown Redis server `{name}` (no [redis.<name>] is configured)")
        } else {
            format!(
                "unknown Redis server `{name}` (known: {})",
                known.join(", ")
            )
        }
    })
}

/// For `StepKind::validate`: `name` must be a configured Redis server, unless it still holds
/// an unresolved `{placeholder}`. `field` prefixes the error.
pub fn check_server(resources: &Resources, field: &str, name: &str) -> Result<(), String> {
    if is_placeholder(name) {
        return Ok(());
    }
    if name.trim().is_empty() {
        return Err(format!("{field}: must name a [redis.<name>] server"));
    }
    server(resources, name)
        .map(|_| ())
        .map_err(|e| format!("{field}: {e}"))
}

/// `host:port` with the default port filled in, for comparing addresses.
pub fn normalize_addr(addr: &str) -> String {
    let addr = addr.trim();
    let has_port = match addr.rsplit_once(':') {
        Some((host, port)) => !host.ends_with(':') && port.parse::<u16>().is_ok(),
        None => false,
    };
    if has_port {
        addr.to_string()
    } else {
        format!("{addr}:6379")
    }
}

/// For `check-config`: the configured URL is one the client can use (checked offline, no
/// connection); the error never shows the URL or its password.
pub fn check_url(def: &RedisDef) -> Result<(), String> {
    let url = def.url.expose();
    redis::Client::open(url).map(|_| ()).map_err(|e| {
        format!(
            "not a usable redis:// or rediss:// URL ({})",
            scrub(&e.to_string(), &url_secrets(url))
        )
    })
}

/// One open connection to a Redis server, named by its `display()` in every error.
pub struct RedisConn {
    conn: MultiplexedConnection,
    label: String,
    secrets: Vec<String>,
}

/// Opens a connection to `def`. Failures are retryable unless authentication failed or the
/// URL is unusable; no message contains the URL or its password.
pub async fn connect(def: &RedisDef) -> Result<RedisConn, StepError> {
    connect_url(def.url.expose(), &def.display(), CONNECT_TIMEOUT).await
}

/// Opens a connection to `url`, naming it `label` in errors.
pub async fn connect_url(
    url: &str,
    label: &str,
    connect_timeout: Duration,
) -> Result<RedisConn, StepError> {
    let secrets = url_secrets(url);
    let client = redis::Client::open(url).map_err(|e| {
        StepError::fatal(format!(
            "redis {label}: the configured URL is not a usable redis:// or rediss:// URL ({})",
            scrub(&e.to_string(), &secrets)
        ))
    })?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(connect_timeout))
        .set_response_timeout(Some(RESPONSE_TIMEOUT));
    // The crate's own timeout covers TCP and TLS; this one also bounds AUTH and setup.
    let conn = tokio::time::timeout(
        connect_timeout + Duration::from_secs(1),
        client.get_multiplexed_async_connection_with_config(&config),
    )
    .await
    .map_err(|_| {
        StepError::retryable(format!(
            "redis {label}: could not connect: no answer within {} s",
            connect_timeout.as_secs()
        ))
    })?
    .map_err(|e| classify(label, "connecting", &e, &secrets))?;
    Ok(RedisConn {
        conn,
        label: label.to_string(),
        secrets,
    })
}

/// The password (and user) of a URL, to scrub from messages.
fn url_secrets(url: &str) -> Vec<String> {
    let mut out = vec![url.to_string()];
    if let Ok(u) = url::Url::parse(url)
        && let Some(p) = u.password().filter(|p| !p.is_empty())
    {
        out.push(p.to_string());
        if let Some(decoded) = percent_decode(p) {
            out.push(decoded);
        }
    }
    out.retain(|s| s.len() >= 3);
    out
}

/// Decodes `%XX` escapes (a URL's password is stored encoded).
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn scrub(msg: &str, secrets: &[String]) -> String {
    let mut out = msg.to_string();
    for s in secrets {
        out = out.replace(s.as_str(), "***");
    }
    out
}

/// Turns a client error into a step error: authentication and configuration problems are
/// fatal, connection problems retryable.
fn classify(label: &str, doing: &str, e: &RedisError, secrets: &[String]) -> StepError {
    let msg = scrub(&e.to_string(), secrets);
    let code = e.code().unwrap_or("");
    if e.kind() == ErrorKind::AuthenticationFailed
        || matches!(code, "WRONGPASS" | "NOAUTH" | "NOPERM")
    {
        return StepError::fatal(format!(
            "redis {label}: authentication failed while {doing}: {msg}"
        ));
    }
    let retryable = e.is_io_error()
        || e.is_timeout()
        || e.is_connection_refusal()
        || e.is_connection_dropped()
        || matches!(
            e.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ReadOnly
            )
        );
    let message = format!("redis {label}: {doing} failed: {msg}");
    if retryable {
        StepError::retryable(message)
    } else {
        StepError::fatal(message)
    }
}

impl RedisConn {
    /// The server's `display()` name.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Runs one command and converts the answer; `doing` names it in errors.
    pub async fn query<T: redis::FromRedisValue>(
        &mut self,
        cmd: &redis::Cmd,
        doing: &str,
    ) -> Result<T, StepError> {
        let r = tokio::time::timeout(
            RESPONSE_TIMEOUT + Duration::from_secs(1),
            cmd.query_async::<T>(&mut self.conn),
        )
        .await
        .map_err(|_| {
            StepError::retryable(format!(
                "redis {}: {doing} failed: no answer within {} s",
                self.label,
                RESPONSE_TIMEOUT.as_secs()
            ))
        })?;
        r.map_err(|e| classify(&self.label, doing, &e, &self.secrets))
    }

    /// Reads and parses `INFO replication`.
    pub async fn replication(&mut self) -> Result<ReplicationInfo, StepError> {
        let text: String = self
            .query(
                redis::cmd("INFO").arg("replication"),
                "reading INFO replication",
            )
            .await?;
        ReplicationInfo::parse(&text).map_err(|e| {
            StepError::fatal(format!(
                "redis {}: unexpected INFO replication answer: {e}",
                self.label
            ))
        })
    }
}

/// Waits for `fut` unless the step is cancelled.
pub async fn or_cancel<T>(
    ctx: &StepContext,
    fut: impl Future<Output = Result<T, StepError>>,
) -> Result<T, StepError> {
    tokio::select! {
        r = fut => r,
        _ = ctx.cancel.cancelled() => Err(StepError::retryable("cancelled")),
    }
}

/// Polls `INFO replication` until the server says it is a master, for at most `within`.
pub async fn wait_for_master(
    conn: &mut RedisConn,
    within: Duration,
    ctx: &StepContext,
) -> Result<ReplicationInfo, StepError> {
    let start = Instant::now();
    loop {
        let info = or_cancel(ctx, conn.replication()).await?;
        if info.role == Role::Master {
            return Ok(info);
        }
        if start.elapsed() >= within {
            return Err(StepError::retryable(format!(
                "redis {}: still a {} {} s after REPLICAOF NO ONE",
                conn.label,
                info.role,
                within.as_secs()
            )));
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = ctx.cancel.cancelled() => return Err(StepError::retryable("cancelled")),
        }
    }
}

/// Polls `INFO replication` until the replica follows `master` (`host:port`) with its link up
/// and no full sync in progress, for at most `within`. The timeout is retryable and says how
/// far it got (a link that never comes up usually means a missing `masterauth`).
pub async fn wait_for_link(
    conn: &mut RedisConn,
    master: &str,
    within: Duration,
    ctx: &StepContext,
) -> Result<ReplicationInfo, StepError> {
    let start = Instant::now();
    let wanted = normalize_addr(master);
    loop {
        let info = or_cancel(ctx, conn.replication()).await?;
        let follows = info.role == Role::Replica
            && info.master_addr().map(|a| normalize_addr(&a)) == Some(wanted.clone());
        if follows
            && info.master_link_status.as_deref() == Some("up")
            && !info.master_sync_in_progress
        {
            return Ok(info);
        }
        if start.elapsed() >= within {
            let state = if !follows {
                format!(
                    "it is a {} following {}",
                    info.role,
                    info.master_addr().unwrap_or_else(|| "nothing".into())
                )
            } else if info.master_sync_in_progress {
                "the full sync from the master is still running".to_string()
            } else {
                format!(
                    "its link to the master is {} (does it have `masterauth` for the master's \
                     password, and can it reach {wanted}?)",
                    info.master_link_status.as_deref().unwrap_or("unknown")
                )
            };
            return Err(StepError::retryable(format!(
                "redis {}: not replicating from {wanted} {} s after REPLICAOF: {state}",
                conn.label,
                within.as_secs()
            )));
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = ctx.cancel.cancelled() => return Err(StepError::retryable("cancelled")),
        }
    }
}

/// `host:port` of a `redis://` URL (default port 6379), for `REPLICAOF`; `None` when the URL
/// has no host.
pub fn url_addr(url: &str) -> Option<(String, u16)> {
    let u = url::Url::parse(url).ok()?;
    let host = u.host_str()?.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return None;
    }
    Some((host.to_string(), u.port().unwrap_or(6379)))
}

/// Splits `host:port` (port required; `[v6]:port` accepted).
pub fn split_addr(addr: &str) -> Result<(String, u16), String> {
    let (host, port) = addr
        .trim()
        .rsplit_once(':')
        .ok_or_else(|| format!("`{addr}` is not host:port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("`{addr}`: the port is not a number from 1 to 65535"))?;
    if host.is_empty() {
        return Err(format!("`{addr}` has no host"));
    }
    Ok((host.to_string(), port))
}

/// A server's replication role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Accepts writes (`role:master`).
    Master,
    /// Follows a master (`role:slave`).
    Replica,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Master => "master",
            Self::Replica => "replica",
        })
    }
}

/// One `slaveN:` line of a master's `INFO replication`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplicaEntry {
    /// Address the replica announced.
    pub ip: String,
    /// Port the replica announced.
    pub port: u16,
    /// `online`, `wait_bgsave`, `send_bulk`, …
    pub state: String,
    /// Replication offset the replica acknowledged.
    pub offset: u64,
    /// Seconds since its last acknowledgement.
    pub lag: Option<i64>,
}

/// The parts of `INFO replication` the steps use.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplicationInfo {
    /// Master or replica.
    pub role: Role,
    /// Replica only: the master it follows.
    pub master_host: Option<String>,
    /// Replica only: the master's port.
    pub master_port: Option<u16>,
    /// Replica only: `up` or `down`.
    pub master_link_status: Option<String>,
    /// Replica only: seconds since the last interaction with the master.
    pub master_last_io_seconds_ago: Option<i64>,
    /// Replica only: seconds the link has been down.
    pub master_link_down_since_seconds: Option<i64>,
    /// Replica only: a full sync from the master is in progress.
    pub master_sync_in_progress: bool,
    /// The server's replication offset (on a replica: how far it has processed the stream).
    pub master_repl_offset: Option<u64>,
    /// Replica only: its processed offset.
    pub slave_repl_offset: Option<u64>,
    /// Master only: its connected replicas.
    pub replicas: Vec<ReplicaEntry>,
}

impl ReplicationInfo {
    /// Parses the text of `INFO replication`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut role = None;
        let mut info = ReplicationInfo {
            role: Role::Master,
            master_host: None,
            master_port: None,
            master_link_status: None,
            master_last_io_seconds_ago: None,
            master_link_down_since_seconds: None,
            master_sync_in_progress: false,
            master_repl_offset: None,
            slave_repl_offset: None,
            replicas: vec![],
        };
        for line in text.lines() {
            let Some((key, value)) = line.trim().split_once(':') else {
                continue;
            };
            match key {
                "role" => {
                    role = Some(match value {
                        "master" => Role::Master,
                        "slave" | "replica" => Role::Replica,
                        other => return Err(format!("unknown role `{other}`")),
                    })
                }
                "master_host" => info.master_host = Some(value.to_string()),
                "master_port" => info.master_port = value.parse().ok(),
                "master_link_status" => info.master_link_status = Some(value.to_string()),
                "master_last_io_seconds_ago" => {
                    info.master_last_io_seconds_ago = value.parse().ok().filter(|v: &i64| *v >= 0)
                }
                "master_link_down_since_seconds" => {
                    info.master_link_down_since_seconds =
                        value.parse().ok().filter(|v: &i64| *v >= 0)
                }
                "master_sync_in_progress" => info.master_sync_in_progress = value == "1",
                "master_repl_offset" => info.master_repl_offset = value.parse().ok(),
                "slave_repl_offset" => info.slave_repl_offset = value.parse().ok(),
                k if k.starts_with("slave") && k[5..].chars().all(|c| c.is_ascii_digit()) => {
                    if let Some(r) = parse_replica(value) {
                        info.replicas.push(r);
                    }
                }
                _ => {}
            }
        }
        info.role = role.ok_or("no `role:` line")?;
        Ok(info)
    }

    /// Replica only: `host:port` of its master.
    pub fn master_addr(&self) -> Option<String> {
        let host = self.master_host.as_deref()?;
        Some(format!("{host}:{}", self.master_port.unwrap_or(6379)))
    }

    /// The offset this server has processed: `slave_repl_offset` on a replica, else
    /// `master_repl_offset`.
    pub fn offset(&self) -> Option<u64> {
        match self.role {
            Role::Replica => self.slave_repl_offset.or(self.master_repl_offset),
            Role::Master => self.master_repl_offset,
        }
    }
}

/// `ip=10.0.1.6,port=6379,state=online,offset=123,lag=0`.
fn parse_replica(value: &str) -> Option<ReplicaEntry> {
    let mut ip = None;
    let mut port = None;
    let mut state = String::new();
    let mut offset = 0;
    let mut lag = None;
    for part in value.split(',') {
        let (k, v) = part.split_once('=')?;
        match k {
            "ip" => ip = Some(v.to_string()),
            "port" => port = v.parse().ok(),
            "state" => state = v.to_string(),
            "offset" => offset = v.parse().unwrap_or(0),
            "lag" => lag = v.parse().ok(),
            _ => {}
        }
    }
    Some(ReplicaEntry {
        ip: ip?,
        port: port?,
        state,
        offset,
        lag,
    })
}

/// `0 bytes`, `512 bytes`, `3.2 MiB`.
pub fn bytes(n: u64) -> String {
    if n < 1024 {
        format!("{n} bytes")
    } else {
        crate::pg::human_bytes(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_replica_and_master_info() {
        let replica = "# Replication\r\nrole:slave\r\nmaster_host:10.0.1.5\r\nmaster_port:6379\r\n\
            master_link_status:down\r\nmaster_last_io_seconds_ago:-1\r\n\
            master_sync_in_progress:0\r\nslave_repl_offset:1234\r\n\
            master_link_down_since_seconds:12\r\nmaster_repl_offset:1234\r\n";
        let info = ReplicationInfo::parse(replica).unwrap();
        assert_eq!(info.role, Role::Replica);
        assert_eq!(info.master_addr().as_deref(), Some("10.0.1.5:6379"));
        assert_eq!(info.master_link_status.as_deref(), Some("down"));
        assert_eq!(info.master_last_io_seconds_ago, None);
        assert_eq!(info.master_link_down_since_seconds, Some(12));
        assert_eq!(info.offset(), Some(1234));

        let master = "role:master\nconnected_slaves:2\n\
            slave0:ip=10.0.1.6,port=6380,state=online,offset=100,lag=0\n\
            slave1:ip=10.0.1.7,port=6381,state=wait_bgsave,offset=0,lag=3\n\
            master_repl_offset:150\n";
        let info = ReplicationInfo::parse(master).unwrap();
        assert_eq!(info.role, Role::Master);
        assert_eq!(info.replicas.len(), 2);
        assert_eq!(info.replicas[1].state, "wait_bgsave");
        assert_eq!(info.replicas[0].offset, 100);
        assert_eq!(info.offset(), Some(150));

        assert_eq!(
            ReplicationInfo::parse("foo:bar").unwrap_err(),
            "no `role:` line"
        );
        assert_eq!(
            ReplicationInfo::parse("role:sentinel").unwrap_err(),
            "unknown role `sentinel`"
        );
    }

    #[test]
    fn addresses_and_secrets() {
        assert_eq!(normalize_addr("db"), "db:6379");
        assert_eq!(normalize_addr("db:6380"), "db:6380");
        let secrets = url_secrets("redis://:s3cr%40t@db:6379/0");
        let msg = scrub(
            "failed for redis://:s3cr%40t@db:6379/0 with s3cr@t",
            &secrets,
        );
        assert!(!msg.contains("s3cr"), "{msg}");
        assert_eq!(bytes(0), "0 bytes");
        assert_eq!(
            url_addr("redis://:pw@10.0.1.5:6380/2"),
            Some(("10.0.1.5".into(), 6380))
        );
        assert_eq!(url_addr("redis://db"), Some(("db".into(), 6379)));
        assert_eq!(split_addr("10.0.1.5:6379"), Ok(("10.0.1.5".into(), 6379)));
        assert_eq!(split_addr("[::1]:7000"), Ok(("::1".into(), 7000)));
        assert!(split_addr("db").is_err());
        assert!(split_addr("db:0").is_err());
        assert_eq!(bytes(2048), "2.0 KiB");
    }
}
