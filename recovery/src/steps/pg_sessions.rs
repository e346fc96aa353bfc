//! Sessions of a cluster, for the seed plan's "transaction rollback": `pg_active_transactions`
//! (read-only) lists backends with an open transaction; `pg_terminate_backends` (destructive,
//! meant to be gated) terminates chosen client backends, never its own connection and never
//! server processes (walsenders, autovacuum, background workers).

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;

use super::values::{duration, is_placeholder};
use crate::{
    pg,
    registry::{StepKind, StepTraits, params},
    resources::Resources,
    step::{Step, StepContext, StepError, StepOutput},
};

/// Parameters of a `pg_active_transactions` step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActiveTransactionsParams {
    /// The `[postgres.<name>]` cluster to look at.
    pub cluster: String,
    /// Characters of each query shown (default 200).
    #[serde(default = "default_query_chars")]
    pub max_query_chars: u32,
}

fn default_query_chars() -> u32 {
    200
}

/// Parameters of a `pg_terminate_backends` step. Every given criterion must match (AND);
/// at least one is required.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TerminateParams {
    /// The `[postgres.<name>]` cluster.
    pub cluster: String,
    /// Backend pids to terminate: a list, or a string of comma/space-separated pids (so a
    /// command argument such as `{pids}` can fill it).
    #[serde(default)]
    pub pids: Option<PidList>,
    /// Only sessions idle in a transaction for longer than this, e.g. `"5m"` (`"0s"`: all
    /// idle-in-transaction sessions).
    #[serde(default)]
    pub idle_in_transaction_longer_than: Option<String>,
    /// Only sessions with this `application_name`.
    #[serde(default)]
    pub application_name: Option<String>,
    /// Only sessions connected to this database.
    #[serde(default)]
    pub database: Option<String>,
}

/// Pids as a TOML list or as a separated string.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PidList {
    /// `[123, 456]`.
    List(Vec<i64>),
    /// `"123, 456"` (or a placeholder before resolution).
    Text(String),
}

impl PidList {
    /// The pids, or an error naming the bad item. A placeholder yields `None`.
    fn parse(&self) -> Result<Option<Vec<i32>>, String> {
        let items: Vec<i64> = match self {
            PidList::List(v) => v.clone(),
            PidList::Text(s) if is_placeholder(s) => return Ok(None),
            PidList::Text(s) => s
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|t| !t.is_empty())
                .map(|t| {
                    t.parse::<i64>()
                        .map_err(|_| format!("pids: `{t}` is not a process id"))
                })
                .collect::<Result<_, _>>()?,
        };
        if items.is_empty() {
            return Err("pids: name at least one process id".into());
        }
        items
            .into_iter()
            .map(|p| {
                i32::try_from(p)
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| format!("pids: {p} is not a process id"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }
}

/// The `pg_active_transactions` step type.
pub struct ActiveTransactionsKind(pub Arc<Resources>);

impl ActiveTransactionsKind {
    fn parse(&self, p: &serde_json::Value) -> Result<ActiveTransactionsParams, String> {
        let p: ActiveTransactionsParams = params(p)?;
        pg::check_cluster(&self.0, "cluster", &p.cluster)?;
        Ok(p)
    }
}

impl StepKind for ActiveTransactionsKind {
    fn name(&self) -> &'static str {
        "pg_active_transactions"
    }
    fn traits(&self) -> StepTraits {
        StepTraits {
            destructive: false,
            idempotent: true,
            overridable: false,
        }
    }
    fn validate(&self, p: &serde_json::Value) -> Result<(), String> {
        self.parse(p).map(|_| ())
    }
    fn build(&self, p: &serde_json::Value) -> Result<Box<dyn Step>, String> {
        Ok(Box::new(ActiveTransactions {
            params: self.parse(p)?,
            resources: self.0.clone(),
        }))
    }
}

/// A runnable `pg_active_transactions` step.
pub struct ActiveTransactions {
    params: ActiveTransactionsParams,
    resources: Arc<Resources>,
}

/// One backend as listed or terminated.
#[derive(Debug, Clone, sqlx::FromRow)]
struct Backend {
    pid: i32,
    usename: Option<String>,
    application_name: Option<String>,
    datname: Option<String>,
    client_addr: Option<String>,
    state: Option<String>,
    xact_start: Option<String>,
    xact_age_s: Option<f64>,
    state_age_s: Option<f64>,
    backend_xid: Option<String>,
    query: Option<String>,
}

impl Backend {
    fn json(&self) -> serde_json::Value {
        json!({
            "pid": self.pid,
            "user": self.usename,
            "application": self.application_name,
            "database": self.datname,
            "client_addr": self.client_addr,
            "state": self.state,
            "xact_start": self.xact_start,
            "xact_age_s": self.xact_age_s,
            "state_age_s": self.state_age_s,
            "backend_xid": self.backend_xid,
            "query": self.query.as_deref().map(mask_literals),
        })
    }
    fn line(&self) -> String {
        format!(
            "pid {} user={} app={} db={} state={} xact_start={} ({}s) xid={} query: {}",
            self.pid,
            self.usename.as_deref().unwrap_or("-"),
            self.application_name.as_deref().unwrap_or("-"),
            self.datname.as_deref().unwrap_or("-"),
            self.state.as_deref().unwrap_or("-"),
            self.xact_start.as_deref().unwrap_or("-"),
            self.xact_age_s.map(|s| s.round() as i64).unwrap_or(0),
            self.backend_xid.as_deref().unwrap_or("-"),
            mask_literals(self.query.as_deref().unwrap_or("")).replace(['\n', '\r'], " ")
        )
    }
}

/// A session's query as drbot shows it (progress, log, step data): its string literals
/// (`'…'`, `E'…'`, `$tag$…$tag$`) replaced by `***`, so `ALTER ROLE … PASSWORD '…'` or a
/// customer's data in a `WHERE` never reaches chat. A literal cut off by the length limit is
/// masked to the end.
fn mask_literals(q: &str) -> String {
    let mut out = String::with_capacity(q.len());
    let mut rest = q;
    while let Some(i) = rest.find(['\'', '$']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(body) = tail.strip_prefix('\'') {
            // Ends at a quote not doubled; a backslash escapes the next character (E'' strings;
            // in a plain string that only masks more).
            let mut end = None;
            let mut chars = body.char_indices().peekable();
            while let Some((j, c)) = chars.next() {
                match c {
                    '\\' => {
                        chars.next();
                    }
                    '\'' if chars.peek().is_some_and(|(_, n)| *n == '\'') => {
                        chars.next();
                    }
                    '\'' => {
                        end = Some(j);
                        break;
                    }
                    _ => {}
                }
            }
            match end {
                Some(j) => {
                    out.push_str("'***'");
                    rest = &body[j + 1..];
                }
                None => {
                    out.push_str("'***");
                    rest = "";
                }
            }
            continue;
        }
        // `$tag$` opens a dollar-quoted string (`tag` letters, digits, `_`); `$1` does not.
        let after = &tail[1..];
        let tag_len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        let opens =
            after[tag_len..].starts_with('$') && !after.starts_with(|c: char| c.is_ascii_digit());
        if !opens {
            out.push('$');
            rest = after;
            continue;
        }
        let tag = &tail[..tag_len + 2];
        let body = &tail[tag.len()..];
        match body.find(tag) {
            Some(j) => {
                out.push_str(tag);
                out.push_str("***");
                out.push_str(tag);
                rest = &body[j + tag.len()..];
            }
            None => {
                out.push_str(tag);
                out.push_str("***");
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Columns of [`Backend`] from `pg_stat_activity` (`$1` = query characters).
const BACKEND_COLUMNS: &str = "pid, usename::text, application_name, datname::text, \
     client_addr::text, state, \
     to_char(xact_start AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS xact_start, \
     extract(epoch FROM now() - xact_start)::float8 AS xact_age_s, \
     extract(epoch FROM now() - state_change)::float8 AS state_age_s, \
     backend_xid::text, left(query, $1) AS query";

#[async_trait]
impl Step for ActiveTransactions {
    async fn run(&self, _ctx: &StepContext) -> Result<StepOutput, StepError> {
        let def = pg::cluster(&self.resources, &self.params.cluster).map_err(StepError::fatal)?;
        let mut conn = crate::pg::connect(def).await?;
        let sql = format!(
            "SELECT {BACKEND_COLUMNS} FROM pg_stat_activity \
             WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() \
               AND xact_start IS NOT NULL AND state IS DISTINCT FROM 'idle' \
             ORDER BY xact_start, pid"
        );
        let rows: Vec<Backend> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(self.params.max_query_chars as i32)
            .fetch_all(&mut conn)
            .await
            .map_err(|e| pg::query_error(def, "reading pg_stat_activity", e))?;
        let idle = rows
            .iter()
            .filter(|b| {
                b.state
                    .as_deref()
                    .is_some_and(|s| s.starts_with("idle in transaction"))
            })
            .count();
        let summary = match rows.first() {
            None => format!("no open transactions on {}", def.display()),
            Some(oldest) => format!(
                "{} open transaction(s) on {} ({} active, {idle} idle in transaction); oldest: \
                 pid {} ({}, {}s)",
                rows.len(),
                def.display(),
                rows.len() - idle,
                oldest.pid,
                oldest.state.as_deref().unwrap_or("-"),
                oldest.xact_age_s.map(|s| s.round() as i64).unwrap_or(0)
            ),
        };
        Ok(StepOutput {
            summary,
            log: crate::step::trim_output(
                &rows
                    .iter()
                    .map(Backend::line)
                    .collect::<Vec<_>>()
                    .join("\n"),
                16 * 1024,
            ),
            data: json!({
                "cluster": self.params.cluster,
                "display": def.display(),
                "transactions": rows.iter().map(Backend::json).collect::<Vec<_>>(),
            }),
        })
    }
}

/// The `pg_terminate_backends` step type.
pub struct TerminateBackendsKind(pub Arc<Resources>);

/// Validated criteria of a terminate step.
struct Criteria {
    pids: Option<Vec<i32>>,
    idle_longer_than: Option<Duration>,
}

impl TerminateBackendsKind {
    fn parse(&self, p: &serde_json::Value) -> Result<(TerminateParams, Criteria), String> {
        let p: TerminateParams = params(p)?;
        pg::check_cluster(&self.0, "cluster", &p.cluster)?;
        let pids = match &p.pids {
            Some(list) => list.parse()?,
            None => None,
        };
        let idle_longer_than = match &p.idle_in_transaction_longer_than {
            Some(s) if !is_placeholder(s) => Some(duration("idle_in_transaction_longer_than", s)?),
            _ => None,
        };
        if p.pids.is_none()
            && p.idle_in_transaction_longer_than.is_none()
            && p.application_name.is_none()
            && p.database.is_none()
        {
            return Err(
                "name `pids` or a filter (`idle_in_transaction_longer_than`, \
                 `application_name`, `database`): terminating every session is not allowed"
                    .into(),
            );
        }
        Ok((
            p,
            Criteria {
                pids,
                idle_longer_than,
            },
        ))
    }
}

impl StepKind for TerminateBackendsKind {
    fn name(&self) -> &'static str {
        "pg_terminate_backends"
    }
    fn traits(&self) -> StepTraits {
        // Terminating a session a second time is harmless (it is gone), but the set a filter
        // matches changes, so a resumed run asks before re-running it.
        StepTraits {
            destructive: true,
            idempotent: false,
            overridable: false,
        }
    }
    fn validate(&self, p: &serde_json::Value) -> Result<(), String> {
        self.parse(p).map(|_| ())
    }
    fn build(&self, p: &serde_json::Value) -> Result<Box<dyn Step>, String> {
        let (params, criteria) = self.parse(p)?;
        if params.pids.is_some() && criteria.pids.is_none() {
            return Err("pids: unresolved placeholder".into());
        }
        Ok(Box::new(TerminateBackends {
            params,
            criteria,
            resources: self.0.clone(),
        }))
    }
}

/// A runnable `pg_terminate_backends` step.
pub struct TerminateBackends {
    params: TerminateParams,
    criteria: Criteria,
    resources: Arc<Resources>,
}

/// How long terminated backends get to exit before the step reports them as lingering.
const EXIT_WAIT: Duration = Duration::from_secs(10);

#[async_trait]
impl Step for TerminateBackends {
    async fn run(&self, ctx: &StepContext) -> Result<StepOutput, StepError> {
        let def = pg::cluster(&self.resources, &self.params.cluster).map_err(StepError::fatal)?;
        let mut conn = crate::pg::connect(def).await?;
        // Filter and terminate in one statement, so a pid cannot change hands in between.
        let sql = format!(
            "SELECT {BACKEND_COLUMNS}, pg_terminate_backend(pid) AS signalled \
             FROM pg_stat_activity \
             WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() \
               AND ($2::int4[] IS NULL OR pid = ANY($2)) \
               AND ($3::float8 IS NULL OR (state LIKE 'idle in transaction%' \
                    AND now() - state_change > make_interval(secs => $3))) \
               AND ($4::text IS NULL OR application_name = $4) \
               AND ($5::text IS NULL OR datname = $5) \
             ORDER BY pid"
        );
        let rows: Vec<(bool, Backend)> = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(200i32)
            .bind(self.criteria.pids.clone())
            .bind(self.criteria.idle_longer_than.map(|d| d.as_secs_f64()))
            .bind(self.params.application_name.clone())
            .bind(self.params.database.clone())
            .fetch_all(&mut conn)
            .await
            .map_err(|e| pg::query_error(def, "terminating backends", e))?
            .into_iter()
            .map(|row| {
                use sqlx::{FromRow, Row};
                let signalled: bool = row.try_get("signalled").unwrap_or(false);
                Backend::from_row(&row).map(|b| (signalled, b))
            })
            .collect::<Result<_, _>>()
            .map_err(|e| pg::query_error(def, "reading terminated backends", e))?;
        for (_, b) in &rows {
            ctx.progress.line(format!("terminating {}", b.line()));
        }
        let signalled: Vec<i32> = rows
            .iter()
            .filter(|(s, _)| *s)
            .map(|(_, b)| b.pid)
            .collect();
        // Wait until they are gone.
        let deadline = tokio::time::Instant::now() + EXIT_WAIT;
        let mut lingering: Vec<i32> = signalled.clone();
        while !lingering.is_empty() {
            lingering = sqlx::query_scalar(
                "SELECT pid FROM pg_stat_activity WHERE pid = ANY($1) ORDER BY pid",
            )
            .bind(&signalled)
            .fetch_all(&mut conn)
            .await
            .map_err(|e| pg::query_error(def, "reading pg_stat_activity", e))?;
            if lingering.is_empty() || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = ctx.cancel.cancelled() => return Err(StepError::retryable("cancelled")),
            }
        }
        // Explicit pids that were not terminated, and why.
        let mut skipped = Vec::new();
        if let Some(pids) = &self.criteria.pids {
            let done: BTreeSet<i32> = rows.iter().map(|(_, b)| b.pid).collect();
            let missing: Vec<i32> = pids.iter().copied().filter(|p| !done.contains(p)).collect();
            if !missing.is_empty() {
                let found: Vec<(i32, Option<String>, bool)> = sqlx::query_as(
                    "SELECT pid, backend_type, pid = pg_backend_pid() FROM pg_stat_activity \
                     WHERE pid = ANY($1)",
                )
                .bind(&missing)
                .fetch_all(&mut conn)
                .await
                .map_err(|e| pg::query_error(def, "reading pg_stat_activity", e))?;
                for pid in missing {
                    let reason = match found.iter().find(|(p, _, _)| *p == pid) {
                        None => "no such backend (already gone?)".to_string(),
                        Some((_, _, true)) => "drbot's own connection".to_string(),
                        Some((_, Some(t), _)) if t != "client backend" => {
                            format!("not a client backend ({t})")
                        }
                        Some(_) => "does not match the other filters".to_string(),
                    };
                    skipped.push(json!({"pid": pid, "reason": reason}));
                }
            }
        }
        let mut summary = format!(
            "terminated {} backend(s) on {}{}",
            signalled.len(),
            def.display(),
            if signalled.is_empty() {
                String::new()
            } else {
                format!(
                    ": pids {}",
                    signalled
                        .iter()
                        .map(|p| p.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        );
        if !skipped.is_empty() {
            summary.push_str(&format!("; {} named pid(s) skipped", skipped.len()));
        }
        let data = json!({
            "cluster": self.params.cluster,
            "display": def.display(),
            "terminated": rows.iter().filter(|(s, _)| *s).map(|(_, b)| b.json()).collect::<Vec<_>>(),
            "skipped": skipped,
            "lingering": lingering,
        });
        let log = rows
            .iter()
            .map(|(s, b)| {
                format!(
                    "{} {}",
                    if *s { "terminated" } else { "NOT signalled" },
                    b.line()
                )
            })
            .chain(skipped.iter().map(|s| format!("skipped {s}")))
            .collect::<Vec<_>>()
            .join("\n");
        if !lingering.is_empty() {
            return Err(StepError::retryable(format!(
                "backend(s) {lingering:?} on {} were signalled but still run after {}s",
                def.display(),
                EXIT_WAIT.as_secs()
            ))
            .with_log(log));
        }
        Ok(StepOutput { summary, log, data })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Any text (a query cut anywhere, any characters) is masked without a panic, and a
        /// literal after plain text never shows.
        #[test]
        fn masking_any_text_never_panics_nor_shows_a_literal(
            any in "\\PC{0,80}",
            plain in "[a-zA-Z0-9 ,=()]{0,40}",
            secret in "[a-z0-9]{1,20}",
        ) {
            let _ = mask_literals(&any);
            let q = format!("{plain}'{secret}'");
            proptest::prop_assert_eq!(mask_literals(&q), format!("{plain}'***'"));
            let q = format!("{plain}$t${secret}$t$");
            proptest::prop_assert_eq!(mask_literals(&q), format!("{plain}$t$***$t$"));
        }
    }

    #[test]
    fn literals_in_shown_queries_are_masked() {
        for (q, shown) in [
            (
                "ALTER ROLE app PASSWORD 'zz9'",
                "ALTER ROLE app PASSWORD '***'",
            ),
            (
                "SELECT 'it''s', 2 WHERE a = 'x'",
                "SELECT '***', 2 WHERE a = '***'",
            ),
            (r"SELECT E'a\'b' || 'c'", "SELECT E'***' || '***'"),
            (
                "DO $$ BEGIN secret; END $$; SELECT $1",
                "DO $$***$$; SELECT $1",
            ),
            ("SELECT $f$x$y$f$, $2", "SELECT $f$***$f$, $2"),
            (
                "UPDATE t SET v = 'cut off by left(",
                "UPDATE t SET v = '***",
            ),
            ("SELECT $ab$never closed", "SELECT $ab$***"),
            ("SELECT 1 $", "SELECT 1 $"),
            ("", ""),
        ] {
            assert_eq!(mask_literals(q), shown, "{q}");
        }
    }

    #[test]
    fn pid_lists() {
        let p = |v: serde_json::Value| -> Result<Option<Vec<i32>>, String> {
            serde_json::from_value::<PidList>(v).unwrap().parse()
        };
        assert_eq!(p(json!([1, 2])).unwrap(), Some(vec![1, 2]));
        assert_eq!(p(json!("12, 34 56")).unwrap(), Some(vec![12, 34, 56]));
        assert_eq!(p(json!("{pids}")).unwrap(), None);
        assert!(p(json!("12,x")).unwrap_err().contains("`x`"));
        assert!(p(json!([0])).unwrap_err().contains("0 is not"));
        assert!(p(json!("")).unwrap_err().contains("at least one"));
    }

    #[test]
    fn terminate_needs_a_criterion() {
        let mut res = Resources::default();
        res.postgres.insert(
            "db".into(),
            crate::resources::PgClusterDef {
                url: crate::secret::Secret::new("postgres://x@h/db"),
                bin_dir: None,
                data_dir: None,
                os_user: None,
            },
        );
        let kind = TerminateBackendsKind(Arc::new(res));
        let err = kind.validate(&json!({"cluster": "db"})).unwrap_err();
        assert!(err.contains("terminating every session"), "{err}");
        assert!(
            kind.validate(&json!({"cluster": "db", "pids": "{pids}"}))
                .is_ok()
        );
        let err = kind
            .validate(&json!({"cluster": "db", "idle_in_transaction_longer_than": "x"}))
            .unwrap_err();
        assert!(err.starts_with("idle_in_transaction_longer_than:"), "{err}");
    }
}
