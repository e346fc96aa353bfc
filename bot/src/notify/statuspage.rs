//! Statuspage calls from the outbox: create on open, update on update, resolve on resolve.
//!
//! The create stores Statuspage's incident id in the incident row, so later calls find it; an
//! update claimed before that id is known waits (`Retry`). A create tried again (any attempt
//! after the first, e.g. after a timeout or a 5xx that Statuspage may have acted on) first
//! looks for an unresolved incident carrying drbot's key (`find_unresolved_by_key`) and adopts
//! it instead of creating a second one. Likewise every update writes its outbox key to the
//! incident's metadata (`drbot.update`), and an update tried again first reads the incident:
//! when Statuspage already has it, it is not posted (and notified) a second time.

use std::time::Duration;

use async_trait::async_trait;
use notifier::{
    outbox::{Deliverer, Delivery, Outcome},
    statuspage::{
        ComponentStatus, Impact, IncidentStatus, IncidentUpdate, NewIncident, StatuspageClient,
        StatuspageError, UpdateKeys,
    },
};
use serde::Deserialize;

use crate::store::Store;

/// How long an update waits for its incident's create.
const WAIT_FOR_CREATE: Duration = Duration::from_secs(2);

/// The payload `crate::incidents` enqueues.
#[derive(Debug, Deserialize)]
struct Payload {
    op: Op,
    incident: i64,
    key: String,
    name: String,
    body: String,
    status: String,
    impact: String,
    /// Statuspage component ids and the status each takes.
    #[serde(default)]
    components: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Op {
    Create,
    Update,
    Resolve,
}

/// Delivers `statuspage` rows.
pub struct StatuspageDeliverer {
    client: StatuspageClient,
    store: Store,
}

impl StatuspageDeliverer {
    /// A deliverer calling `client` and recording ids in `store`.
    pub fn new(client: StatuspageClient, store: Store) -> Self {
        Self { client, store }
    }

    async fn attempt(&self, d: &Delivery, p: Payload) -> anyhow::Result<Outcome> {
        let status: IncidentStatus = p.status.parse().map_err(anyhow::Error::msg)?;
        let components = p
            .components
            .iter()
            .map(|(id, s)| Ok((id.clone(), s.parse::<ComponentStatus>()?)))
            .collect::<Result<Vec<_>, String>>()
            .map_err(anyhow::Error::msg)?;
        let Some(incident) = self.store.incident(p.incident).await? else {
            return Ok(Outcome::Failed {
                error: format!("incident {} is not in the store", p.incident),
            });
        };
        if p.op == Op::Create {
            if let Some(id) = incident.statuspage_incident_id {
                return Ok(delivered(id));
            }
            if d.attempt > 1 {
                match self.client.find_unresolved_by_key(&p.key).await {
                    Ok(Some(found)) => {
                        let id = self.store.set_statuspage_id(p.incident, &found.id).await?;
                        return Ok(delivered(id));
                    }
                    Ok(None) => {}
                    Err(e) => return Ok(outcome(e)),
                }
            }
            let impact: Impact = p.impact.parse().map_err(anyhow::Error::msg)?;
            let new = NewIncident {
                name: p.name,
                status,
                impact: Some(impact),
                body: p.body,
                components,
                deliver_notifications: true,
                key: Some(p.key),
            };
            return Ok(match self.client.create_incident(&new).await {
                Ok(created) => {
                    let id = self
                        .store
                        .set_statuspage_id(p.incident, &created.id)
                        .await?;
                    delivered(id)
                }
                Err(e) => outcome(e),
            });
        }
        let Some(id) = incident.statuspage_incident_id else {
            return Ok(Outcome::Retry {
                error: format!("incident {} is not created on Statuspage yet", incident.id),
                after: Some(WAIT_FOR_CREATE),
            });
        };
        if d.attempt > 1 {
            match self.client.get_incident(&id).await {
                Ok(current) if current.drbot_update() == Some(d.key.as_str()) => {
                    return Ok(delivered(id));
                }
                Ok(_) => {}
                Err(e) => return Ok(outcome(e)),
            }
        }
        // The incident's impact as it stands (a failover joining a drill's incident raises it).
        let impact: Impact = p.impact.parse().map_err(anyhow::Error::msg)?;
        let update = IncidentUpdate {
            status,
            body: p.body,
            components,
            impact: Some(impact),
            deliver_notifications: true,
            keys: Some(UpdateKeys {
                incident: p.key,
                update: d.key.clone(),
            }),
        };
        Ok(match self.client.update_incident(&id, &update).await {
            Ok(_) => delivered(id),
            Err(e) => outcome(e),
        })
    }
}

fn delivered(id: String) -> Outcome {
    Outcome::Delivered { receipt: Some(id) }
}

/// Statuspage's answer as an outbox outcome.
fn outcome(e: StatuspageError) -> Outcome {
    match e {
        StatuspageError::Retry { after, .. } => Outcome::Retry {
            error: e.to_string(),
            after,
        },
        StatuspageError::Permanent { .. } | StatuspageError::Invalid(_) => Outcome::Failed {
            error: e.to_string(),
        },
    }
}

#[async_trait]
impl Deliverer for StatuspageDeliverer {
    fn channel(&self) -> &'static str {
        crate::incidents::STATUSPAGE_CHANNEL
    }

    async fn deliver(&self, d: &Delivery) -> Outcome {
        let p: Payload = match serde_json::from_value(d.payload.clone()) {
            Ok(p) => p,
            Err(e) => {
                return Outcome::Failed {
                    error: format!("unreadable payload: {e}"),
                };
            }
        };
        match self.attempt(d, p).await {
            Ok(o) => o,
            // The store (or a bad stored value): try again later.
            Err(e) => Outcome::Retry {
                error: format!("{e:#}"),
                after: None,
            },
        }
    }
}
