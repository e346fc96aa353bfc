//! Step types that act through drbot itself rather than on infrastructure: incidents (and the
//! Statuspage and chat deliveries they cause) and customer email. They are registered next to
//! `recovery`'s providers, so runbooks use them like any other step.
//!
//! Validation needs only the config; running needs the [`App`] (store, front-ends). The
//! registry is built with the settings, before any store is open, so these kinds hold an
//! [`AppSlot`] that [`App::new`] fills. A plan can be validated and previewed anywhere; it can
//! only run inside a process with an `App`.

pub mod email;
pub mod email_campaign;
pub mod incident;

use std::sync::{Arc, OnceLock};

use recovery::{registry::Registry, step::StepError};

use crate::{app::App, config::Config};

/// The running process's [`App`], once there is one.
#[derive(Clone, Default)]
pub struct AppSlot(Arc<OnceLock<App>>);

impl AppSlot {
    /// Fills the slot; a second call keeps the first app.
    pub fn set(&self, app: &App) {
        let _ = self.0.set(app.clone());
    }
    /// The app, or the error a step reports when built outside a process that has one.
    pub fn get(&self) -> Result<&App, StepError> {
        self.0
            .get()
            .ok_or_else(|| StepError::fatal("this step runs only inside drbot (no store is open)"))
    }
    /// Whether an app is set.
    pub fn is_set(&self) -> bool {
        self.0.get().is_some()
    }
}

impl std::fmt::Debug for AppSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AppSlot(set: {})", self.is_set())
    }
}

/// Adds drbot's own step types to `registry`.
pub fn register(registry: &mut Registry, slot: &AppSlot, config: &Config) {
    registry.register(Arc::new(incident::IncidentKind {
        slot: slot.clone(),
        components: config
            .status_page
            .components
            .iter()
            .map(|c| c.name.clone())
            .collect(),
    }));
    registry.register(Arc::new(email::EmailPreviewKind(slot.clone())));
    registry.register(Arc::new(email::EmailCustomersKind(slot.clone())));
}
