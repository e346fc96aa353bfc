//! The campaigns the email deliverer sends from: read from the store on first use, built for
//! the mailer, and kept (a few at a time) while their rows go out.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use notifier::email::{Campaign, CampaignContent, Mailer};

use super::payload::StoredCampaign;
use crate::store::Store;

/// Campaigns kept at once; more are read again when needed.
const KEPT: usize = 16;

/// A campaign as the deliverer uses it.
#[derive(Debug)]
pub struct Loaded {
    /// The content, for sending a row as an ordinary email.
    pub content: CampaignContent,
    /// Built for the mailer, or why the mailer refused it (its rows then go out as ordinary
    /// emails, which check the same things per message).
    pub built: Result<Arc<Campaign>, String>,
}

/// What looking up a campaign found.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// The campaign.
    Found(Arc<Loaded>),
    /// It cannot be used: missing from the store, or unreadable. Its rows fail with this.
    Unusable(String),
}

/// The campaigns of one deliverer.
#[derive(Clone)]
pub struct Campaigns {
    store: Store,
    mailer: Mailer,
    kept: Arc<Mutex<HashMap<i64, Arc<Loaded>>>>,
}

impl Campaigns {
    /// Campaigns read from `store`, built for `mailer`.
    pub fn new(store: Store, mailer: Mailer) -> Self {
        Self {
            store,
            mailer,
            kept: Arc::default(),
        }
    }

    /// The store the campaigns are read from.
    pub fn store(&self) -> &Store {
        &self.store
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Arc<Loaded>>> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Campaign `id`; `Err` only when the store could not be read (try again later).
    pub async fn get(&self, id: i64) -> anyhow::Result<Lookup> {
        if let Some(l) = self.kept().get(&id) {
            return Ok(Lookup::Found(l.clone()));
        }
        let Some(json) = self.store.email_campaign(id).await? else {
            return Ok(Lookup::Unusable(format!(
                "email campaign {id} is not in the store"
            )));
        };
        let stored: StoredCampaign = match serde_json::from_str(&json) {
            Ok(s) => s,
            Err(e) => {
                return Ok(Lookup::Unusable(format!(
                    "email campaign {id} is unreadable: {e}"
                )));
            }
        };
        let content = CampaignContent::from(stored);
        let built = self
            .mailer
            .campaign(content.clone())
            .map_err(|e| e.to_string());
        if let Err(why) = &built {
            tracing::warn!(campaign = id, error = %why, "email campaign refused: sending its rows one by one");
        }
        let loaded = Arc::new(Loaded { content, built });
        let mut kept = self.kept();
        if kept.len() >= KEPT {
            kept.clear();
        }
        kept.insert(id, loaded.clone());
        Ok(Lookup::Found(loaded))
    }
}
