//! The data behind the drill history page: finished drills and backup verifications, oldest
//! first, and the `[targets]` they are measured against.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// Everything the drill history page shows, as of `generated_at`.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryModel {
    /// The status page's title (the history page is titled after it).
    pub title: String,
    /// When this snapshot was taken from the store.
    pub generated_at: DateTime<Utc>,
    /// Target RTO, drawn as a horizontal line on the RTO chart.
    pub rto_target: Duration,
    /// Target RPO, drawn as a horizontal line on the RPO chart.
    pub rpo_target: Duration,
    /// Finished drills, oldest first.
    pub drills: Vec<DrillRecord>,
    /// Finished backup verifications, oldest first.
    pub verifications: Vec<VerificationRecord>,
}

/// One finished DR drill and what its measurement step recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct DrillRecord {
    /// The run's id (shown in the table).
    pub id: String,
    /// When it finished.
    pub at: DateTime<Utc>,
    /// Whether the run succeeded.
    pub passed: bool,
    /// Measured recovery time; `None` when the drill recorded no measurement.
    pub rto: Option<Duration>,
    /// Measured data-loss window; `None` when the drill recorded no measurement.
    pub rpo: Option<Duration>,
    /// Acknowledged writes the DR side lacked; `None` when not measured.
    pub rpo_rows: Option<u64>,
}

/// One finished backup verification.
#[derive(Debug, Clone, PartialEq)]
pub struct VerificationRecord {
    /// The run's id (shown in the table).
    pub id: String,
    /// When it finished.
    pub at: DateTime<Utc>,
    /// Whether every check passed.
    pub passed: bool,
    /// How long the verification took.
    pub duration: Duration,
    /// How many tables were restored and checked.
    pub tables: u64,
}
