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
        self.post(
            key,
            json!({ "content": text, "allowed_mentions": { "parse": [] } }),
        )
        .await
    }

    async fn post_alert(
        &self,
        key: &str,
        text: &str,
        action: &notifier::chat::ChatAction,
    ) -> anyhow::Result<String> {
        // One danger-style button (component type 2, style 4) in an action row (type 1).
        self.post(
            key,
            json!({
                "content": text,
                "allowed_mentions": { "parse": [] },
                "components": [{ "type": 1, "components": [{
                    "type": 2, "style": 4, "label": action.label, "custom_id": action.value
                }]}],
            }),
        )
        .await
    }
}

impl DiscordBroadcast {
    async fn post(&self, key: &str, body: serde_json::Value) -> anyhow::Result<String> {
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
        // No pings from incident text, whatever it holds (`allowed_mentions` in every body).
        Ok(discord
            .api
            .post_message(&channel, body, &format!("status:{key}"))
            .await?)
    }
}
