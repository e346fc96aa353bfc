//! Disaster-recovery evidence for the public status page: the last finished (not dry) run of a
//! command, with the data its steps recorded.

use sqlx::Row;

use super::Store;

/// A finished run as evidence.
#[derive(Debug, Clone, PartialEq)]
pub struct FinishedRun {
    /// Run id.
    pub id: i64,
    /// `succeeded` or `failed`.
    pub state: String,
    /// Started, Unix ms (`None` if no step ever started).
    pub started_at: Option<i64>,
    /// Finished, Unix ms.
    pub finished_at: i64,
    /// Each step's kind and recorded data (JSON), in plan order.
    pub steps: Vec<(String, Option<serde_json::Value>)>,
}

impl Store {
    /// The last run of runbook `runbook` that finished (succeeded or failed), dry runs
    /// excluded. (By runbook, not by the stored command text, which is as typed: `/dr drill`
    /// from the CLI, `drill` from Slack.)
    pub async fn last_finished_run(&self, runbook: &str) -> anyhow::Result<Option<FinishedRun>> {
        let Some(r) = sqlx::query(
            "SELECT id, state, started_at, finished_at FROM runs WHERE runbook = $1 \
             AND dry_run = 0 AND state IN ('succeeded', 'failed') AND finished_at IS NOT NULL \
             ORDER BY finished_at DESC, id DESC LIMIT 1",
        )
        .bind(runbook.to_string())
        .fetch_optional(self.pool())
        .await?
        else {
            return Ok(None);
        };
        let id: i64 = r.try_get("id")?;
        let steps = self.step_records(id).await?;
        Ok(Some(FinishedRun {
            id,
            state: r.try_get("state")?,
            started_at: r.try_get("started_at")?,
            finished_at: r.try_get("finished_at")?,
            steps,
        }))
    }
}
