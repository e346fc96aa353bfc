//! The drill history page (`GET /status/history`): RTO and RPO measured by each DR drill and the
//! duration of each backup verification, as server-side SVG charts ([`render_chart`], plotters'
//! SVG backend, no JavaScript) with an accessible table of the same numbers under each. Pure
//! rendering: the bot builds the [`HistoryModel`] from its store.

mod chart;
mod html;
mod model;

pub use chart::{Chart, render_chart};
pub use html::{HISTORY_TEMPLATE, render_history_html};
pub use model::{DrillRecord, HistoryModel, VerificationRecord};

/// Where the history page is served.
pub const HISTORY_PATH: &str = "/status/history";

/// [`super::PAGE_PATH`] relative to [`HISTORY_PATH`], as the history page links back.
pub const STATUS_HREF: &str = "../status";
