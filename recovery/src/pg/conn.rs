//! Finding a `[postgres.<name>]` cluster and connecting to it with sqlx without ever showing its
//! password; failed queries as step errors.

use std::{str::FromStr, time::Duration};

use sqlx::{ConnectOptions, Connection, PgConnection, postgres::PgConnectOptions};

use super::urls::scrub;
use crate::{
    resources::{PgClusterDef, Resources},
    step::StepError,
    steps::values::is_placeholder,
};

/// How long a connection attempt may take before the cluster counts as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The oldest server the PostgreSQL steps work with (`server_version_num`): 14. Older ones
/// lack functions the steps use, and 12 and 13 are past their end of life.
pub const MIN_SERVER_VERSION: u32 = 140_000;

/// How a connection failure from [`connect`] starts when nothing answered (refused, reset,
/// timed out, no route), so callers can tell "unreachable" from other errors.
pub const CANNOT_CONNECT: &str = "cannot connect to";

/// How a connection failure from [`connect`] starts when the server answered and refused the
/// session (a login it rejects, too many clients, starting up): the server is alive, so it is
/// never "unreachable".
pub const REFUSED: &str = "refused by";

/// The cluster called `name`, or an error naming the known ones.
pub fn cluster<'a>(resources: &'a Resources, name: &str) -> Result<&'a PgClusterDef, String> {
    resources.postgres.get(name).ok_or_else(|| {
        let known: Vec<&str> = resources.postgres.keys().map(String::as_str).collect();
        if known.is_empty() {
            format!("unknown PostgreSQL cluster `{name}` (no [postgres.<name>] is configured)")
        } else {
            format!(
                "unknown PostgreSQL cluster `{name}` (known: {})",
                known.join(", ")
            )
        }
    })
}

/// For `StepKind::validate`: `name` must be a configured cluster, unless it still holds an
/// unresolved `{placeholder}` (checked again once the plan is resolved). `field` prefixes the
/// error, e.g. `replica: unknown PostgreSQL cluster …`.
pub fn check_cluster(resources: &Resources, field: &str, name: &str) -> Result<(), String> {
    if is_placeholder(name) {
        return Ok(());
    }
    if name.trim().is_empty() {
        return Err(format!("{field}: must name a [postgres.<name>] cluster"));
    }
    cluster(resources, name)
        .map(|_| ())
        .map_err(|e| format!("{field}: {e}"))
}

/// Opens one connection to the database the URL names (application name `drbot`, statement
/// logging off). Failures are retryable and name the cluster by `display()`, never by URL;
/// they start with [`CANNOT_CONNECT`] when nothing answered and with [`REFUSED`] when the
/// server did.
pub async fn connect(def: &PgClusterDef) -> Result<PgConnection, StepError> {
    open(def, None).await
}

/// Like [`connect`], to database `db` of the cluster instead of the one its URL names.
pub async fn connect_db(def: &PgClusterDef, db: &str) -> Result<PgConnection, StepError> {
    open(def, Some(db)).await
}

async fn open(def: &PgClusterDef, db: Option<&str>) -> Result<PgConnection, StepError> {
    let where_ = match db {
        Some(db) => format!("{} (database {db})", def.display()),
        None => def.display(),
    };
    let mut opts = PgConnectOptions::from_str(def.url.expose()).map_err(|e| {
        StepError::fatal(format!(
            "the URL of PostgreSQL cluster {} is invalid: {}",
            def.display(),
            scrub(def, &e.to_string())
        ))
    })?;
    if let Some(db) = db {
        opts = opts.database(db);
    }
    let opts = opts.application_name("drbot").disable_statement_logging();
    match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&opts)).await {
        Ok(Ok(conn)) => match too_old(&where_, conn.server_version_num()) {
            Some(e) => Err(e),
            None => Ok(conn),
        },
        Ok(Err(e @ sqlx::Error::Database(_))) => Err(StepError::retryable(format!(
            "{REFUSED} {where_} (the server answered, so it is running): {}",
            scrub(def, &e.to_string())
        ))),
        Ok(Err(e)) => Err(StepError::retryable(format!(
            "{CANNOT_CONNECT} {where_}: {}",
            scrub(def, &e.to_string())
        ))),
        Err(_) => Err(StepError::retryable(format!(
            "{CANNOT_CONNECT} {where_}: no answer within {}s",
            CONNECT_TIMEOUT.as_secs()
        ))),
    }
}

/// The error for a server older than [`MIN_SERVER_VERSION`] (`server_version_num`, e.g.
/// 130012 for 13.12), if it is.
fn too_old(where_: &str, version: Option<u32>) -> Option<StepError> {
    let v = version.filter(|v| *v < MIN_SERVER_VERSION)?;
    Some(StepError::fatal(format!(
        "{where_} runs PostgreSQL {}.{}: drbot's PostgreSQL steps need 14 or later (they use \
         pg_terminate_backend with a timeout, pg_current_xact_id, DROP DATABASE … WITH (FORCE) \
         and pg_rewind --write-recovery-conf). Nothing was done on it",
        v / 10_000,
        v % 10_000
    )))
}

/// Whether new sessions on `conn`'s server are read-only (`default_transaction_read_only`, as
/// a fence sets it).
pub async fn read_only_default(
    conn: &mut PgConnection,
    def: &PgClusterDef,
) -> Result<bool, StepError> {
    let v: String = sqlx::query_scalar("SHOW default_transaction_read_only")
        .fetch_one(conn)
        .await
        .map_err(|e| query_error(def, "SHOW default_transaction_read_only", e))?;
    Ok(v == "on")
}

/// A failed query on `def` as a retryable step error (password scrubbed), prefixed by `what`.
pub fn query_error(def: &PgClusterDef, what: &str, e: sqlx::Error) -> StepError {
    StepError::retryable(format!(
        "{what} on {} failed: {}",
        def.display(),
        scrub(def, &e.to_string())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::test_def as def;

    #[test]
    fn servers_older_than_14_are_refused() {
        let e = too_old("db:5432/app", Some(130_012)).unwrap();
        assert!(!e.retryable);
        assert!(
            e.message
                .starts_with("db:5432/app runs PostgreSQL 13.12: drbot's PostgreSQL steps need 14"),
            "{}",
            e.message
        );
        assert!(
            too_old("x", Some(120_022))
                .unwrap()
                .message
                .contains("12.22")
        );
        assert!(too_old("x", Some(140_000)).is_none());
        assert!(too_old("x", Some(150_010)).is_none());
        assert!(
            too_old("x", None).is_none(),
            "unknown: the steps find out themselves"
        );
    }

    #[test]
    fn unknown_clusters_are_named() {
        let mut r = Resources::default();
        assert!(
            check_cluster(&r, "replica", "dr")
                .unwrap_err()
                .contains("no [postgres")
        );
        r.postgres.insert("dr".into(), def("postgres://u@h/d"));
        r.postgres.insert("main".into(), def("postgres://u@h/d"));
        assert_eq!(
            check_cluster(&r, "replica", "west").unwrap_err(),
            "replica: unknown PostgreSQL cluster `west` (known: dr, main)"
        );
        assert!(check_cluster(&r, "replica", "{region}").is_ok());
        assert!(check_cluster(&r, "replica", "dr").is_ok());
        assert!(check_cluster(&r, "replica", " ").is_err());
    }
}
