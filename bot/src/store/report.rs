//! The reads behind incident and run reports (`crate::report`): audit rows and runs in a time
//! window, every approval request of a run, each step's recorded data, the incident a run
//! belongs to, the outbox rows of an incident, and the checklists posted in a window. Reads
//! only; no write transaction.

use sqlx::Row;

use super::{
    Store, audit::AuditRow, checklists::ChecklistView, outbox::OutboxRow, runs::RequestRow,
};

impl Store {
    /// Audit rows with `from <= at <= to`, oldest first.
    pub async fn audit_between(&self, from: i64, to: i64) -> anyhow::Result<Vec<AuditRow>> {
        let rows = sqlx::query(
            "SELECT seq, at, person, account, platform, channel, action, run_id, detail, \
             prev_hash, hash FROM audit_log WHERE at >= $1 AND at <= $2 ORDER BY seq",
        )
        .bind(from)
        .bind(to)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(super::audit::from_row)
            .collect::<Result<_, _>>()?)
    }

    /// Every audit row of run `run`, oldest first.
    pub async fn audit_of_run(&self, run: i64) -> anyhow::Result<Vec<AuditRow>> {
        self.audit_rows(Some(run), i64::MAX).await
    }

    /// Ids of the runs (dry runs excluded) created with `from <= created_at <= to`.
    pub async fn runs_created_between(&self, from: i64, to: i64) -> anyhow::Result<Vec<i64>> {
        sqlx::query(
            "SELECT id FROM runs WHERE created_at >= $1 AND created_at <= $2 AND dry_run = 0 \
             ORDER BY id",
        )
        .bind(from)
        .bind(to)
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(|r| Ok(r.try_get("id")?))
        .collect()
    }

    /// Every approval request of run `run` (run, gate, retry, skip, abort), oldest first.
    pub async fn requests_of(&self, run: i64) -> anyhow::Result<Vec<RequestRow>> {
        sqlx::query("SELECT * FROM approval_requests WHERE run_id = $1 ORDER BY id")
            .bind(run)
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(super::runs::request_from)
            .collect()
    }

    /// Each step's type and recorded data (JSON), in plan order.
    pub async fn step_records(
        &self,
        run: i64,
    ) -> anyhow::Result<Vec<(String, Option<serde_json::Value>)>> {
        sqlx::query("SELECT kind, data FROM run_steps WHERE run_id = $1 ORDER BY idx")
            .bind(run)
            .fetch_all(self.pool())
            .await?
            .into_iter()
            .map(|s| {
                let data: Option<String> = s.try_get("data")?;
                Ok((
                    s.try_get("kind")?,
                    data.and_then(|d| serde_json::from_str(&d).ok()),
                ))
            })
            .collect()
    }

    /// The incident run `run` belongs to: opened for it, or written to by one of its steps.
    pub async fn incident_of_run(&self, run: i64) -> anyhow::Result<Option<i64>> {
        let r = sqlx::query(
            "SELECT id FROM incidents WHERE run_id = $1 UNION \
             SELECT incident_id AS id FROM incident_updates WHERE source LIKE $2 \
             ORDER BY id LIMIT 1",
        )
        .bind(run)
        .bind(format!("run:{run}:step:%"))
        .fetch_optional(self.pool())
        .await?;
        Ok(r.map(|r| r.try_get::<i64, _>("id")).transpose()?)
    }

    /// Outbox rows whose key starts with one of `prefixes`, oldest first, each once.
    pub async fn outbox_with_prefixes(
        &self,
        prefixes: &[String],
    ) -> anyhow::Result<Vec<OutboxRow>> {
        let mut out: Vec<OutboxRow> = Vec::new();
        for p in prefixes {
            let escaped = p
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            let rows = sqlx::query(
                "SELECT id, key, channel, state, attempts, last_error, created_at FROM outbox \
                 WHERE key LIKE $1 ESCAPE '\\' ORDER BY id",
            )
            .bind(format!("{escaped}%"))
            .fetch_all(self.pool())
            .await?;
            for r in rows {
                let row = OutboxRow {
                    id: r.try_get("id")?,
                    key: r.try_get("key")?,
                    channel: r.try_get("channel")?,
                    state: r.try_get("state")?,
                    attempts: r.try_get("attempts")?,
                    last_error: r.try_get("last_error")?,
                    created_at: r.try_get("created_at")?,
                };
                if !out.iter().any(|o| o.id == row.id) {
                    out.push(row);
                }
            }
        }
        out.sort_by_key(|o| o.id);
        Ok(out)
    }

    /// A report's checklists, oldest first, with their ticks: those opened for one of `runs`
    /// (linked by `run_id`, whenever they were posted), and the standalone ones (`/dr
    /// checklist`, no run) posted with `from <= created_at <= to`. Another run's checklists
    /// are left out even when posted in the window.
    pub async fn report_checklists(
        &self,
        from: i64,
        to: i64,
        runs: &[i64],
    ) -> anyhow::Result<Vec<ChecklistView>> {
        // Run ids are integers from the store, so they are inlined (the Any driver has no
        // array binds).
        let linked = if runs.is_empty() {
            String::new()
        } else {
            let list: Vec<String> = runs.iter().map(i64::to_string).collect();
            format!("run_id IN ({}) OR ", list.join(", "))
        };
        let sql = format!(
            "SELECT id FROM checklist_instances WHERE {linked}(run_id IS NULL AND \
             created_at >= $1 AND created_at <= $2) ORDER BY id"
        );
        let ids: Vec<i64> = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(from)
            .bind(to)
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(|r| r.try_get("id"))
            .collect::<Result<_, _>>()?;
        let mut out = Vec::new();
        for id in ids {
            if let Some(v) = self.checklist(id).await? {
                out.push(v);
            }
        }
        Ok(out)
    }
}
