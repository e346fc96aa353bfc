//! Chat broadcasts from the outbox: a row's `{"text": …}` posted to one platform's incident
//! channel through its [`ChatBroadcast`], keyed by the row's idempotency key so a retry or a
//! re-claim after a crash never posts twice. A row with an `action` gets a button.

use std::sync::Arc;

use async_trait::async_trait;
use notifier::{
    chat::{ChatAction, ChatBroadcast},
    outbox::{Deliverer, Delivery, Outcome},
};

/// Delivers one platform's broadcasts (its outbox channel is the platform's name).
pub struct ChatDeliverer {
    broadcast: Arc<dyn ChatBroadcast>,
}

impl ChatDeliverer {
    /// A deliverer over `broadcast`.
    pub fn new(broadcast: Arc<dyn ChatBroadcast>) -> Self {
        Self { broadcast }
    }
}

#[async_trait]
impl Deliverer for ChatDeliverer {
    fn channel(&self) -> &'static str {
        self.broadcast.platform()
    }

    async fn deliver(&self, d: &Delivery) -> Outcome {
        let Some(text) = d.payload.get("text").and_then(|t| t.as_str()) else {
            return Outcome::Failed {
                error: "payload has no `text`".into(),
            };
        };
        let action = d
            .payload
            .get("action")
            .and_then(|a| serde_json::from_value::<ChatAction>(a.clone()).ok());
        let posted = match &action {
            Some(a) => self.broadcast.post_alert(&d.key, text, a).await,
            None => self.broadcast.post_status(&d.key, text).await,
        };
        match posted {
            Ok(id) => Outcome::Delivered { receipt: Some(id) },
            // The chat clients already retried what was quick to retry; the outbox waits longer.
            Err(e) => Outcome::Retry {
                error: format!("{e:#}"),
                after: None,
            },
        }
    }
}
