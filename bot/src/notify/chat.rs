//! Chat broadcasts from the outbox: a row's `{"text": …}` posted to one platform's incident
//! channel through its [`ChatBroadcast`], keyed by the row's idempotency key so a retry or a
//! re-claim after a crash never posts twice.

use std::sync::Arc;

use async_trait::async_trait;
use notifier::{
    chat::ChatBroadcast,
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
        match self.broadcast.post_status(&d.key, text).await {
            Ok(id) => Outcome::Delivered { receipt: Some(id) },
            // The chat clients already retried what was quick to retry; the outbox waits longer.
            Err(e) => Outcome::Retry {
                error: format!("{e:#}"),
                after: None,
            },
        }
    }
}
