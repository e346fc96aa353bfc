//! PostgreSQL helpers shared by the PostgreSQL step types: find a `[postgres.<name>]` cluster,
//! connect to it with sqlx, run its tools (`pg_ctl`, `pg_rewind`, …) as its `os_user`, and
//! read WAL positions.
//!
//! Passwords never leave this module except through [`conn::password`] into a child's
//! `PGPASSWORD`: tools get a libpq conninfo without the password ([`conn::conninfo`]), and
//! errors and captured output go through [`conn::scrub`].

pub mod conn;
pub mod lsn;
pub mod replication;
pub mod tool;

pub use conn::{check_cluster, cluster, connect, conninfo, query_error, scrub};
pub use lsn::{Lsn, human_bytes};
pub use tool::{PgTool, ToolOutput, tool, write_owned};
