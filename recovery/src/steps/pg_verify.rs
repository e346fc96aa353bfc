//! `pg_verify` step (read-only): counts rows of chosen tables on a cluster, checks minimums,
//! and runs SQL assertions, e.g. after `pg_pitr` or a promotion. `pg_pitr` uses the same
//! checks for its `verify_tables`/`verify_sql`.

use std::{collections::BTreeMap, sync::Arc};

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;

use crate::{
    pg,
    registry::{StepKind, StepTraits, params},
    resources::{PgClusterDef, Resources},
    step::{Step, StepContext, StepError, StepOutput},
};

/// Parameters of a `pg_verify` step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyParams {
    /// The `[postgres.<name>]` cluster (its URL names the database).
    pub cluster: String,
    /// Tables (optionally `schema.table`) whose row counts are reported.
    #[serde(default)]
    pub tables: Vec<String>,
    /// Minimum row counts (table → rows); these tables are counted too.
    #[serde(default)]
    pub min_rows: BTreeMap<String, i64>,
    /// SQL assertions; each must return one row whose first column is `true`.
    #[serde(default)]
    pub sql: Vec<String>,
}

/// The `pg_verify` step type.
pub struct VerifyKind(pub Arc<Resources>);

impl VerifyKind {
    fn parse(&self, p: &serde_json::Value) -> Result<VerifyParams, String> {
        let p: VerifyParams = params(p)?;
        pg::check_cluster(&self.0, "cluster", &p.cluster)?;
        if p.tables.is_empty() && p.min_rows.is_empty() && p.sql.is_empty() {
            return Err("name `tables`, `min_rows` or `sql`: there is nothing to verify".into());
        }
        if p.tables
            .iter()
            .chain(p.min_rows.keys())
            .any(|t| t.trim().is_empty())
        {
            return Err("tables: table names must not be empty".into());
        }
        if p.sql.iter().any(|s| s.trim().is_empty()) {
            return Err("sql: assertions must not be empty".into());
        }
        Ok(p)
    }
}

impl StepKind for VerifyKind {
    fn name(&self) -> &'static str {
        "pg_verify"
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
        Ok(Box::new(Verify {
            params: self.parse(p)?,
            resources: self.0.clone(),
        }))
    }
}

/// A runnable `pg_verify` step.
pub struct Verify {
    params: VerifyParams,
    resources: Arc<Resources>,
}

#[async_trait]
impl Step for Verify {
    async fn run(&self, _ctx: &StepContext) -> Result<StepOutput, StepError> {
        let p = &self.params;
        let def = pg::cluster(&self.resources, &p.cluster).map_err(StepError::fatal)?;
        let mut conn = pg::connect(def).await?;
        let mut tables = p.tables.clone();
        for t in p.min_rows.keys() {
            if !tables.contains(t) {
                tables.push(t.clone());
            }
        }
        let counts = check(def, &mut conn, &tables, &p.sql).await?;
        let short: Vec<String> = counts
            .iter()
            .filter_map(|(t, n)| {
                let min = *p.min_rows.get(t)?;
                (*n < min).then(|| format!("{t} has {n} rows, fewer than {min}"))
            })
            .collect();
        let counts_text = counts
            .iter()
            .map(|(t, n)| format!("{t}={n}"))
            .collect::<Vec<_>>()
            .join(", ");
        if !short.is_empty() {
            return Err(StepError::fatal(format!(
                "on {}: {}",
                def.display(),
                short.join("; ")
            )));
        }
        Ok(StepOutput {
            summary: format!(
                "{} verified: {}{} assertion(s) true",
                def.display(),
                if counts_text.is_empty() {
                    String::new()
                } else {
                    format!("{counts_text}; ")
                },
                p.sql.len()
            ),
            log: String::new(),
            data: json!({
                "cluster": p.cluster,
                "display": def.display(),
                "row_counts": counts.iter().map(|(t, n)| (t.clone(), json!(n))).collect::<serde_json::Map<_, _>>(),
                "assertions": p.sql,
            }),
        })
    }
}

/// Row counts of `tables`, then the `assertions` (each must return `true`), on `conn`.
pub(crate) async fn check(
    def: &PgClusterDef,
    conn: &mut sqlx::PgConnection,
    tables: &[String],
    assertions: &[String],
) -> Result<Vec<(String, i64)>, StepError> {
    let mut counts = Vec::new();
    for t in tables {
        let sql = format!("SELECT count(*) FROM {}", pg::quote_table(t));
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| {
                StepError::fatal(format!(
                    "tables: counting {t} on {} failed: {}",
                    def.display(),
                    pg::scrub(def, &e.to_string())
                ))
            })?;
        counts.push((t.clone(), n));
    }
    for sql in assertions {
        let ok: Option<bool> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.clone()))
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| {
                StepError::fatal(format!(
                    "sql: `{sql}` failed on {}: {}",
                    def.display(),
                    pg::scrub(def, &e.to_string())
                ))
            })?;
        if ok != Some(true) {
            return Err(StepError::fatal(format!(
                "sql: `{sql}` returned {} on {}, expected true",
                ok.map_or("NULL".to_string(), |b| b.to_string()),
                def.display()
            )));
        }
    }
    Ok(counts)
}
