//! The shared context every front-end and background task gets: settings, store, events,
//! metrics.

use std::sync::Arc;

use crate::{config::Settings, events::EventBus, metrics::Metrics, store::Store};

/// A read of the active runs.
pub struct StatusCache {
    /// Event generation when read.
    pub generation: u64,
    /// When read.
    pub at: std::time::Instant,
    /// The runs.
    pub active: Vec<crate::store::runs::RunRow>,
}

/// How long `/dr status` may reuse a read of the active runs when this process published no
/// event since (changes made by other processes show within this time).
pub const STATUS_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// Shared application state.
#[derive(Clone)]
pub struct App {
    /// Validated configuration.
    pub settings: Arc<Settings>,
    /// The database.
    pub store: Store,
    /// Event stream.
    pub events: EventBus,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Group-committing writer of per-command audit rows.
    pub audit: crate::store::audit_writer::AuditWriter,
    /// Active runs for `/dr status`, with the event generation and time they were read.
    pub status_cache: Arc<std::sync::Mutex<Option<StatusCache>>>,
    /// The Discord front-end, when `[discord]` is configured.
    pub discord: Option<Arc<crate::discord::Discord>>,
    /// The Slack front-end, when `[slack]` is configured.
    pub slack: Option<Arc<crate::slack::Slack>>,
    /// Per-run locks around card edits (see [`crate::cards::CardLocks`]).
    pub card_locks: Arc<crate::cards::CardLocks>,
    /// Per-checklist locks around checklist message edits: a refresh reads the checklist
    /// under it, so an older render never lands after a newer one.
    pub checklist_locks: Arc<crate::cards::CardLocks>,
    /// The public pages' models, one build at a time (see [`crate::page_cache`]).
    pub pages: Arc<crate::page_cache::PageModels>,
}

impl App {
    /// Connects the store named by the settings.
    pub async fn open(settings: Settings) -> anyhow::Result<App> {
        let store = Store::connect(
            settings.config.store.url.expose(),
            settings.config.store.max_connections,
        )
        .await?;
        Ok(App::new(settings, store))
    }

    /// Wraps an open store.
    pub fn new(settings: Settings, store: Store) -> App {
        let app = App {
            status_cache: Arc::default(),
            card_locks: Arc::default(),
            checklist_locks: Arc::default(),
            pages: Arc::default(),
            audit: crate::store::audit_writer::AuditWriter::spawn(store.clone()),
            discord: settings
                .config
                .discord
                .as_ref()
                .and_then(crate::discord::Discord::new),
            slack: settings.config.slack.as_ref().map(crate::slack::Slack::new),
            settings: Arc::new(settings),
            store,
            events: EventBus::default(),
            metrics: Arc::new(Metrics::default()),
        };
        app.settings.app_slot.set(&app);
        app
    }
}
