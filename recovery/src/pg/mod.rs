//! PostgreSQL helpers shared by the PostgreSQL and backup step types: find a
//! `[postgres.<name>]` cluster, connect to it with sqlx, run its tools (`pg_ctl`, `pg_rewind`,
//! …) and other programs as its `os_user`, quote SQL, and read WAL positions. Each helper has
//! one home here; step types do not keep copies.
//!
//! - [`conn`]: cluster lookup and validation, sqlx connections, query errors.
//! - [`urls`]: password-free conninfo and URLs, the URL's database and port, [`scrub`].
//! - [`tool`]: [`tool`] runs a PostgreSQL program of the cluster.
//! - [`child`]: process-group guard, output capture and errors of started tools.
//! - [`owner`]: root detection, uid/gid lookup, [`owner_command`] for other programs.
//! - [`sql`]: quoting, accepted table names, row counts.
//! - [`local`]: PostgreSQL clusters run locally in a directory (`drbot demo`, the test kit).
//!
//! Passwords never leave this module except through [`urls::password`] into a child's
//! `PGPASSWORD`: tools get a libpq conninfo without the password ([`urls::conninfo`]), and
//! errors and captured output go through [`urls::scrub`].

pub mod child;
pub mod conn;
pub mod local;
pub mod lsn;
pub mod owner;
pub mod replication;
pub mod sql;
pub mod tool;
pub mod urls;

pub use child::{GroupGuard, capture, last_line, spawn_error};
pub use conn::{check_cluster, cluster, connect, connect_db, query_error, read_only_default};
pub use lsn::{Lsn, human_bytes};
pub use owner::{is_root, owner_command, user_ids, write_owned};
pub use sql::{check_tables, count_rows, quote_ident, quote_table, valid_table};
pub use tool::{PgTool, ToolOutput, tool};
pub use urls::{
    conninfo, db_conninfo, db_url_without_password, password, port, scrub, url_database,
};

/// `pg_controldata -D data_dir` of `def`'s binaries (in the C locale, so its labels are
/// English), as the cluster's OS user.
pub async fn controldata(
    def: &crate::resources::PgClusterDef,
    data_dir: &std::path::Path,
    ctx: &crate::step::StepContext,
) -> Result<ToolOutput, crate::step::StepError> {
    tool(def, "pg_controldata")
        .env("LC_ALL", "C")
        .arg("-D")
        .arg(data_dir)
        .run_ok(ctx)
        .await
}

/// The value of field `name` (`Database cluster state`, …) in `pg_controldata`'s output.
pub fn controldata_field<'a>(stdout: &'a str, name: &str) -> Option<&'a str> {
    stdout.lines().find_map(|l| {
        l.strip_prefix(name)
            .and_then(|v| v.strip_prefix(':'))
            .map(str::trim)
    })
}

/// A cluster with only a URL, for unit tests.
#[cfg(test)]
pub(crate) fn test_def(url: &str) -> crate::resources::PgClusterDef {
    crate::resources::PgClusterDef {
        url: crate::secret::Secret::new(url),
        bin_dir: None,
        data_dir: None,
        os_user: None,
    }
}
