//! The checklists opened for runs (a runbook's `checklists`), in chat: each is posted next to
//! the run's cards by the platform's card sync (`slack::sync`, `discord::sync`), and re-rendered
//! on the other platforms after a person ticks an item on one (the platform clicked on updates
//! its own messages). After drbot ticks items because a step finished, each platform's card
//! loop re-renders the run's checklists.

use crate::app::App;

/// Re-renders instance `instance` on every platform but `clicked_on` (which already did).
pub async fn refresh(app: &App, instance: i64, clicked_on: Option<&str>) {
    if clicked_on != Some("slack") {
        crate::slack::checklist::refresh(app, instance).await;
    }
    if clicked_on != Some("discord") {
        crate::discord::checklist::refresh_others(app, instance, "").await;
    }
}
