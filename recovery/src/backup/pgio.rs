//! PostgreSQL plumbing of the backup steps: connecting to one database of a cluster, libpq
//! conninfo for tools, row counts, table-name checks, child process groups and bounded
//! capture of a tool's stderr. Passwords stay out of argv, logs and errors (see [`crate::pg`]).

use std::{collections::BTreeMap, str::FromStr};

use sqlx::{ConnectOptions, Connection, PgConnection, postgres::PgConnectOptions};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::{
    pg::{self, conn::CONNECT_TIMEOUT},
    resources::PgClusterDef,
    step::{StepError, trim_output},
};

/// The seed plan's tables: counted into manifests and checked by `verify_backup` by default.
pub const DEFAULT_TABLES: [&str; 3] = ["projects", "project_payloads", "project_events"];

/// The default table list as owned strings (for serde defaults).
pub fn default_tables() -> Vec<String> {
    DEFAULT_TABLES.iter().map(|s| s.to_string()).collect()
}

/// Whether `name` is an accepted table name: `table` or `schema.table`, each part lowercase
/// letters, digits and `_`, not starting with a digit.
pub fn valid_table(name: &str) -> bool {
    let parts: Vec<&str> = name.split('.').collect();
    parts.len() <= 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.len() <= 63
                && !p.starts_with(|c: char| c.is_ascii_digit())
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
}

/// For `validate`: every table name is accepted by [`valid_table`].
pub fn check_tables<'a>(
    field: &str,
    names: impl IntoIterator<Item = &'a String>,
) -> Result<(), String> {
    for t in names {
        if !valid_table(t) {
            return Err(format!(
                "{field}: `{t}` is not a table name drbot accepts (`table` or `schema.table`, \
                 lowercase letters, digits and `_`)"
            ));
        }
    }
    Ok(())
}

/// A SQL identifier in double quotes.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `schema.table` quoted part by part.
pub fn quote_table(name: &str) -> String {
    name.split('.')
        .map(quote_ident)
        .collect::<Vec<_>>()
        .join(".")
}

/// The database named in the cluster's URL (`postgres` when it names none).
pub fn url_database(def: &PgClusterDef) -> String {
    url::Url::parse(def.url.expose())
        .ok()
        .map(|u| u.path().trim_start_matches('/').to_string())
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "postgres".to_string())
}

/// One connection to database `db` of the cluster (retryable error when unreachable).
pub async fn connect_db(def: &PgClusterDef, db: &str) -> Result<PgConnection, StepError> {
    let where_ = format!("{} (database {db})", def.display());
    let opts = PgConnectOptions::from_str(def.url.expose())
        .map_err(|e| {
            StepError::fatal(format!(
                "the URL of PostgreSQL cluster {} is invalid: {}",
                def.display(),
                pg::scrub(def, &e.to_string())
            ))
        })?
        .database(db)
        .application_name("drbot")
        .disable_statement_logging();
    match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&opts)).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(StepError::retryable(format!(
            "cannot connect to {where_}: {}",
            pg::scrub(def, &e.to_string())
        ))),
        Err(_) => Err(StepError::retryable(format!(
            "cannot connect to {where_}: no answer within {}s",
            CONNECT_TIMEOUT.as_secs()
        ))),
    }
}

/// A failed query as a step error with the password scrubbed.
pub fn query_error(def: &PgClusterDef, what: &str, e: &sqlx::Error) -> StepError {
    StepError::retryable(format!(
        "{what} on {} failed: {}",
        def.display(),
        pg::scrub(def, &e.to_string())
    ))
}

/// libpq conninfo for database `db` of the cluster, without the password (pass that with
/// [`crate::pg::PgTool::password_of`]).
pub fn db_conninfo(def: &PgClusterDef, db: &str) -> Result<String, StepError> {
    let base = pg::conninfo(def).map_err(StepError::fatal)?;
    // In a conninfo string a later keyword wins.
    Ok(format!(
        "{base} dbname='{}'",
        db.replace('\\', "\\\\").replace('\'', "\\'")
    ))
}

/// `postgres://user@host:port/db` for database `db`: the cluster URL without the password
/// (children get it as `PGPASSWORD`).
pub fn db_url_without_password(def: &PgClusterDef, db: &str) -> Result<String, StepError> {
    let mut url = url::Url::parse(def.url.expose()).map_err(|_| {
        StepError::fatal(format!(
            "the URL of PostgreSQL cluster {} is invalid",
            def.display()
        ))
    })?;
    let _ = url.set_password(None);
    url.set_path(&format!("/{db}"));
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != "password")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if pairs.is_empty() {
        url.set_query(None);
    } else {
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    Ok(url.to_string())
}

/// Row counts of `tables` (`None` for a table that does not exist).
pub async fn count_rows(
    conn: &mut PgConnection,
    tables: &[String],
) -> Result<BTreeMap<String, Option<i64>>, sqlx::Error> {
    let mut out = BTreeMap::new();
    for t in tables {
        let exists: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
            .bind(t)
            .fetch_one(&mut *conn)
            .await?;
        let count = match exists {
            None => None,
            Some(_) => {
                let sql = format!("SELECT count(*) FROM {}", quote_table(t));
                Some(
                    sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql))
                        .fetch_one(&mut *conn)
                        .await?,
                )
            }
        };
        out.insert(t.clone(), count);
    }
    Ok(out)
}

/// Kills a child's whole process group when dropped (cancel, timeout, error paths).
pub struct GroupGuard(Option<i32>);

impl GroupGuard {
    /// Guards the process group led by the child with pid `pid` (spawned with `process_group(0)`).
    pub fn new(pid: Option<u32>) -> Self {
        GroupGuard(pid.map(|p| p as i32))
    }
    /// Kills the group now.
    pub fn kill(&mut self) {
        if let Some(pgid) = self.0.take() {
            // SAFETY: kill(2) with a negative pid signals the process group we created.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads a child's stderr (or stdout) to the end, keeping at most about `max` bytes (head and
/// tail), scrubbed of the cluster's password.
pub async fn capture(
    stream: Option<impl AsyncRead + Unpin>,
    def: &PgClusterDef,
    max: usize,
) -> String {
    let Some(mut stream) = stream else {
        return String::new();
    };
    let mut out: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        if out.len() > 4 * max {
            let text = trim_output(&String::from_utf8_lossy(&out), 2 * max);
            out = text.into_bytes();
        }
    }
    let text = pg::scrub(def, &String::from_utf8_lossy(&out));
    trim_output(text.trim_end(), max)
}

/// The last non-empty line of `text` (a tool's error, for one-line messages).
pub fn last_line(text: &str) -> &str {
    text.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('…'))
        .unwrap_or("")
}

/// Megabytes with one decimal, for summaries.
pub fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1_000_000.0)
}
