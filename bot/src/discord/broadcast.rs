//! Incident status updates to the Discord incident channel, for the notifier's chat
//! broadcasts: one message per key, made idempotent by Discord's enforced nonce.

use anyhow::Context;
use serde_json::json;

use crate::app::App;

/// Posts status updates to `[discord].incident_channel`.
pub struct DiscordBroadcast(pub App);

#[async_trait::async_trait]
impl notifier::chat::ChatBroadcast for DiscordBroadcast {
    fn platform(&self) -> &'static str {
        "discord"
    }

    async fn post_status(&self, key: &str, text: &str) -> anyhow::Result<String> {
        let discord = self
            .0
            .discord
            .clone()
            .context("Discord is not configured")?;
        let channel = self
            .0
            .settings
            .config
            .discord
            .as_ref()
            .map(|d| d.incident_channel.clone())
            .context("Discord is not configured")?;
        // No pings from incident text, whatever it holds.
        let body = json!({ "content": text, "allowed_mentions": { "parse": [] } });
        Ok(discord
            .api
            .post_message(&channel, body, &format!("status:{key}"))
            .await?)
    }
}
