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
}
