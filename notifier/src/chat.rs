//! Chat broadcasts: the notifier posts status updates to each platform's incident channel
//! through this trait, which the chat front-ends implement (it knows nothing of commands).

use async_trait::async_trait;

/// An incident channel on one chat platform.
#[async_trait]
pub trait ChatBroadcast: Send + Sync {
    /// `slack`, `discord`, …
    fn platform(&self) -> &'static str;

    /// Posts `text` to the incident channel once per `key` (a retry or a restart with the same
    /// key never posts twice) and returns the platform's message id.
    async fn post_status(&self, key: &str, text: &str) -> anyhow::Result<String>;

    /// Like [`ChatBroadcast::post_status`], with one button under the text that sends
    /// `action.value` back when clicked (e.g. the health monitor's "Start failover"). Platforms
    /// without buttons post the text alone.
    async fn post_alert(
        &self,
        key: &str,
        text: &str,
        action: &ChatAction,
    ) -> anyhow::Result<String> {
        let _ = action;
        self.post_status(key, text).await
    }
}

/// A button under a broadcast.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChatAction {
    /// The button's label, e.g. `Start failover to us-west-2`.
    pub label: String,
    /// What a click sends back (the platform's button value / custom id).
    pub value: String,
}
