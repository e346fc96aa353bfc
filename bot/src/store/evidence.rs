//! Disaster-recovery evidence for the public status page and the drill history: the finished
//! (not dry) runs of a runbook, with the data their steps recorded. A run that started and
//! was then aborted or cancelled finished too (it is evidence of a failed test, never "met").

use sqlx::Row;

use super::Store;

/// A finished run as evidence.
#[derive(Debug, Clone, PartialEq)]
pub struct FinishedRun {
    /// Run id.
    pub id: i64,
    /// `succeeded`, `failed`, or `aborted` / `cancelled` (after it started).
    pub state: String,
    /// Started, Unix ms (`None` if no step ever started).
    pub started_at: Option<i64>,
    /// Finished, Unix ms.
    pub finished_at: i64,
    /// Each step's kind and recorded data (JSON), in plan order.
    pub steps: Vec<(String, Option<serde_json::Value>)>,
}

/// The columns [`Store::last_finished_run`] and [`Store::finished_runs`] select: finished
/// (succeeded or failed; aborted or cancelled once started), not dry runs of one runbook. A
/// request denied, expired or cancelled before it started tested nothing.
const FINISHED: &str = "SELECT id, state, started_at, finished_at FROM runs WHERE runbook = $1 \
     AND dry_run = 0 AND (state IN ('succeeded', 'failed') \
     OR (state IN ('aborted', 'cancelled') AND started_at IS NOT NULL)) \
     AND finished_at IS NOT NULL ORDER BY finished_at DESC, id DESC LIMIT $2";

impl Store {
    /// The last run of runbook `runbook` that finished (succeeded or failed; aborted or
    /// cancelled after it started), dry runs excluded. (By runbook, not by the stored command
    /// text, which is as typed: `/dr drill` from the CLI, `drill` from Slack.)
    pub async fn last_finished_run(&self, runbook: &str) -> anyhow::Result<Option<FinishedRun>> {
        Ok(self.finished_runs(runbook, 1).await?.pop())
    }

    /// The newest `limit` finished runs of runbook `runbook` (as [`Store::last_finished_run`]),
    /// returned oldest first, each with its steps' data.
    pub async fn finished_runs(
        &self,
        runbook: &str,
        limit: i64,
    ) -> anyhow::Result<Vec<FinishedRun>> {
        let rows = sqlx::query(FINISHED)
            .bind(runbook.to_string())
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        // Every run's steps in one query (the page is public: a few queries per view, not one
        // per run).
        let steps_sql = format!(
            "SELECT s.run_id, s.kind, s.data FROM run_steps s JOIN ({FINISHED}) r \
             ON s.run_id = r.id ORDER BY s.run_id, s.idx"
        );
        let mut steps: std::collections::HashMap<i64, Vec<(String, Option<serde_json::Value>)>> =
            std::collections::HashMap::new();
        for s in sqlx::query(sqlx::AssertSqlSafe(steps_sql))
            .bind(runbook.to_string())
            .bind(limit)
            .fetch_all(self.pool())
            .await?
        {
            let data: Option<String> = s.try_get("data")?;
            steps.entry(s.try_get("run_id")?).or_default().push((
                s.try_get("kind")?,
                data.and_then(|d| serde_json::from_str(&d).ok()),
            ));
        }
        let mut out = Vec::with_capacity(rows.len());
        for r in rows.into_iter().rev() {
            let id: i64 = r.try_get("id")?;
            out.push(FinishedRun {
                id,
                state: r.try_get("state")?,
                started_at: r.try_get("started_at")?,
                finished_at: r.try_get("finished_at")?,
                steps: steps.remove(&id).unwrap_or_default(),
            });
        }
        Ok(out)
    }
}
