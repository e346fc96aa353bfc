//! Incidents and their timelines: the rows, the lifecycle state (`investigating → identified →
//! monitoring → resolved`, nothing after resolved) and the SQL that `crate::incidents` runs
//! inside its write transaction, plus the reads behind the public status page.
//!
//! One incident is open at a time: `incidents.open_slot` is 1 while unresolved and NULL once
//! resolved, and it is UNIQUE, so a second concurrent `open` fails in the database too.

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::{Row, any::AnyRow};

use super::{Store, Tx};

/// Where an incident is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentState {
    /// The cause is not known yet.
    Investigating,
    /// The cause is known.
    Identified,
    /// A fix is in place and watched.
    Monitoring,
    /// Over; final.
    Resolved,
}

impl IncidentState {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Investigating => "investigating",
            Self::Identified => "identified",
            Self::Monitoring => "monitoring",
            Self::Resolved => "resolved",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        Ok(match s {
            "investigating" => Self::Investigating,
            "identified" => Self::Identified,
            "monitoring" => Self::Monitoring,
            "resolved" => Self::Resolved,
            other => anyhow::bail!("unknown incident status `{other}` in the store"),
        })
    }

    /// Whether an incident may move from `self` to `to`. Any open status may follow any other
    /// (a fix that did not hold sends `monitoring` back to `investigating`); nothing follows
    /// `resolved`.
    pub fn may_become(self, _to: IncidentState) -> bool {
        self != Self::Resolved
    }
}

impl From<crate::grammar::IncidentStatus> for IncidentState {
    fn from(s: crate::grammar::IncidentStatus) -> Self {
        match s {
            crate::grammar::IncidentStatus::Investigating => Self::Investigating,
            crate::grammar::IncidentStatus::Identified => Self::Identified,
            crate::grammar::IncidentStatus::Monitoring => Self::Monitoring,
        }
    }
}

/// One incident.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IncidentRow {
    /// drbot's id.
    pub id: i64,
    /// The name people typed.
    pub name: String,
    /// Lifecycle state.
    pub status: IncidentState,
    /// `none`, `minor`, `major` or `critical`.
    pub impact: String,
    /// Affected region, if known.
    pub region: Option<String>,
    /// The run it is about, if any.
    pub run_id: Option<i64>,
    /// Person who opened it.
    pub opened_by: String,
    /// Opened, Unix ms.
    pub created_at: i64,
    /// Last change, Unix ms.
    pub updated_at: i64,
    /// Resolved, Unix ms.
    pub resolved_at: Option<i64>,
    /// Statuspage's id, once created there.
    pub statuspage_incident_id: Option<String>,
}

/// One timeline entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IncidentUpdateRow {
    /// Row id.
    pub id: i64,
    /// The incident.
    pub incident_id: i64,
    /// The status this update set.
    pub status: IncidentState,
    /// The message.
    pub body: String,
    /// Person who wrote it.
    pub author: String,
    /// Posted, Unix ms.
    pub created_at: i64,
    /// Component statuses this entry set (component name → Statuspage status name).
    pub components: BTreeMap<String, String>,
    /// The runbook step that wrote it (`run:<id>:step:<index>`), if one did.
    pub source: Option<String>,
}

/// What a timeline entry records besides its status and text.
#[derive(Debug, Clone, Default)]
pub struct UpdateExtra {
    /// Component statuses set by the entry.
    pub components: BTreeMap<String, String>,
    /// The step writing it, for idempotency.
    pub source: Option<String>,
}

/// What `insert_incident` needs.
#[derive(Debug, Clone)]
pub struct NewIncident<'a> {
    /// Name.
    pub name: &'a str,
    /// Impact name.
    pub impact: &'a str,
    /// Region.
    pub region: Option<&'a str>,
    /// Run.
    pub run_id: Option<i64>,
    /// Person.
    pub opened_by: &'a str,
    /// Unix ms.
    pub now: i64,
}

const COLS: &str = "id, name, status, impact, region, run_id, opened_by, created_at, updated_at, \
                    resolved_at, statuspage_incident_id";
const UPDATE_COLS: &str = "id, incident_id, status, body, author, created_at, components, source";

fn incident(r: &AnyRow) -> anyhow::Result<IncidentRow> {
    Ok(IncidentRow {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        status: IncidentState::parse(&r.try_get::<String, _>("status")?)?,
        impact: r.try_get("impact")?,
        region: r.try_get("region")?,
        run_id: r.try_get("run_id")?,
        opened_by: r.try_get("opened_by")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        resolved_at: r.try_get("resolved_at")?,
        statuspage_incident_id: r.try_get("statuspage_incident_id")?,
    })
}

fn update(r: &AnyRow) -> anyhow::Result<IncidentUpdateRow> {
    Ok(IncidentUpdateRow {
        id: r.try_get("id")?,
        incident_id: r.try_get("incident_id")?,
        status: IncidentState::parse(&r.try_get::<String, _>("status")?)?,
        body: r.try_get("body")?,
        author: r.try_get("author")?,
        created_at: r.try_get("created_at")?,
        components: match r.try_get::<Option<String>, _>("components")? {
            Some(json) => serde_json::from_str(&json)?,
            None => BTreeMap::new(),
        },
        source: r.try_get("source")?,
    })
}

/// The timeline entry a runbook step wrote, if it did (inside the caller's transaction).
pub async fn update_by_source_tx(
    tx: &mut Tx,
    source: &str,
) -> anyhow::Result<Option<IncidentUpdateRow>> {
    let sql = format!("SELECT {UPDATE_COLS} FROM incident_updates WHERE source = $1");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(source.to_string())
        .fetch_optional(&mut **tx)
        .await?
        .as_ref()
        .map(update)
        .transpose()
}

/// The unresolved incident, if any, read inside the caller's transaction.
pub async fn open_incident_tx(tx: &mut Tx) -> anyhow::Result<Option<IncidentRow>> {
    let sql = format!("SELECT {COLS} FROM incidents WHERE open_slot = 1");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_optional(&mut **tx)
        .await?
        .as_ref()
        .map(incident)
        .transpose()
}

/// Inserts an open incident (`investigating`); returns its id.
pub async fn insert_incident(tx: &mut Tx, new: &NewIncident<'_>) -> anyhow::Result<i64> {
    let row = sqlx::query(
        "INSERT INTO incidents (name, status, impact, region, run_id, opened_by, created_at, \
         updated_at, open_slot) VALUES ($1, 'investigating', $2, $3, $4, $5, $6, $6, 1) \
         RETURNING id",
    )
    .bind(new.name.to_string())
    .bind(new.impact.to_string())
    .bind(new.region.map(str::to_string))
    .bind(new.run_id)
    .bind(new.opened_by.to_string())
    .bind(new.now)
    .fetch_one(&mut **tx)
    .await?;
    Ok(row.try_get("id")?)
}

/// Sets incident `id`'s impact (Statuspage's value).
pub async fn set_impact(tx: &mut Tx, id: i64, impact: &str) -> anyhow::Result<()> {
    sqlx::query("UPDATE incidents SET impact = $1 WHERE id = $2")
        .bind(impact.to_string())
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Moves an incident to `status` (resolving it clears its open slot).
pub async fn set_status(
    tx: &mut Tx,
    id: i64,
    status: IncidentState,
    now: i64,
) -> anyhow::Result<()> {
    let resolved = status == IncidentState::Resolved;
    sqlx::query(
        "UPDATE incidents SET status = $1, updated_at = $2, \
         resolved_at = CASE WHEN $3 = 1 THEN $2 ELSE resolved_at END, \
         open_slot = CASE WHEN $3 = 1 THEN NULL ELSE open_slot END WHERE id = $4",
    )
    .bind(status.as_str())
    .bind(now)
    .bind(i64::from(resolved))
    .bind(id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Appends a timeline entry; returns it.
pub async fn insert_update(
    tx: &mut Tx,
    incident_id: i64,
    status: IncidentState,
    body: &str,
    author: &str,
    now: i64,
    extra: &UpdateExtra,
) -> anyhow::Result<IncidentUpdateRow> {
    let sql = format!(
        "INSERT INTO incident_updates (incident_id, status, body, author, created_at, \
         components, source) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {UPDATE_COLS}"
    );
    let components =
        (!extra.components.is_empty()).then(|| serde_json::json!(extra.components).to_string());
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(incident_id)
        .bind(status.as_str())
        .bind(body.to_string())
        .bind(author.to_string())
        .bind(now)
        .bind(components)
        .bind(extra.source.clone())
        .fetch_one(&mut **tx)
        .await?;
    update(&row)
}

/// An incident, read inside the caller's transaction.
pub async fn incident_tx(tx: &mut Tx, id: i64) -> anyhow::Result<Option<IncidentRow>> {
    let sql = format!("SELECT {COLS} FROM incidents WHERE id = $1");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?
        .as_ref()
        .map(incident)
        .transpose()
}

/// An incident's timeline, oldest first, inside the caller's transaction.
pub async fn updates_tx(tx: &mut Tx, id: i64) -> anyhow::Result<Vec<IncidentUpdateRow>> {
    let sql =
        format!("SELECT {UPDATE_COLS} FROM incident_updates WHERE incident_id = $1 ORDER BY id");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_all(&mut **tx)
        .await?;
    rows.iter().map(update).collect()
}

impl Store {
    /// The timeline entry a runbook step wrote, if it did.
    pub async fn incident_update_by_source(
        &self,
        source: &str,
    ) -> anyhow::Result<Option<IncidentUpdateRow>> {
        let sql = format!("SELECT {UPDATE_COLS} FROM incident_updates WHERE source = $1");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(source.to_string())
            .fetch_optional(self.pool())
            .await?
            .as_ref()
            .map(update)
            .transpose()
    }

    /// An incident.
    pub async fn incident(&self, id: i64) -> anyhow::Result<Option<IncidentRow>> {
        let sql = format!("SELECT {COLS} FROM incidents WHERE id = $1");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .as_ref()
            .map(incident)
            .transpose()
    }

    /// The unresolved incident, if any.
    pub async fn open_incident(&self) -> anyhow::Result<Option<IncidentRow>> {
        let sql = format!("SELECT {COLS} FROM incidents WHERE open_slot = 1");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_optional(self.pool())
            .await?
            .as_ref()
            .map(incident)
            .transpose()
    }

    /// Resolved incidents, newest first.
    pub async fn resolved_incidents(&self, limit: i64) -> anyhow::Result<Vec<IncidentRow>> {
        let sql = format!(
            "SELECT {COLS} FROM incidents WHERE resolved_at IS NOT NULL \
             ORDER BY resolved_at DESC, id DESC LIMIT $1"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(incident).collect()
    }

    /// An incident's timeline, oldest first.
    pub async fn incident_updates(&self, id: i64) -> anyhow::Result<Vec<IncidentUpdateRow>> {
        let sql = format!(
            "SELECT {UPDATE_COLS} FROM incident_updates WHERE incident_id = $1 ORDER BY id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(update).collect()
    }

    /// Records Statuspage's id for an incident, unless one is already recorded (a single
    /// compare-and-set statement, like lease renewal). Returns the id now recorded.
    pub async fn set_statuspage_id(&self, id: i64, statuspage_id: &str) -> anyhow::Result<String> {
        sqlx::query(
            "UPDATE incidents SET statuspage_incident_id = $1 \
             WHERE id = $2 AND statuspage_incident_id IS NULL",
        )
        .bind(statuspage_id.to_string())
        .bind(id)
        .execute(self.pool())
        .await?;
        self.incident(id)
            .await?
            .and_then(|i| i.statuspage_incident_id)
            .ok_or_else(|| anyhow::anyhow!("incident {id} is not in the store"))
    }
}
