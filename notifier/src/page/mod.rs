//! drbot's own public status page: the [`PageModel`] and three pure renderers, HTML
//! ([`render_html`]), JSON ([`render_json`]) and Atom ([`render_atom`]); and the drill history
//! page with its SVG charts ([`history`]). No I/O: the caller
//! builds the model from drbot's own store (so the page keeps working when the primary region
//! is gone) and serves the strings at [`PAGE_PATH`], [`JSON_PATH`] and [`FEED_PATH`].

mod atom;
pub(crate) mod format;
pub mod history;
mod html;
mod json;
mod model;
mod sample;

pub use atom::{FEED_MAX_ENTRIES, render_atom};
pub use html::{PALETTE, Swatch, TEMPLATE, render_html};
pub use json::{SCHEMA, SCHEMA_VERSION, render_json};
pub use model::{
    BackupVerification, Component, ComponentStatus, Drill, Evidence, Impact, Incident,
    IncidentStatus, PageModel, ScheduleEvidence, ScheduleResult, Update,
};
pub use sample::sample_model;

/// Where the HTML page is served.
pub const PAGE_PATH: &str = "/status";
/// Where the JSON document is served.
pub const JSON_PATH: &str = "/status.json";
/// Where the Atom feed is served.
pub const FEED_PATH: &str = "/status/feed.atom";
pub use history::HISTORY_PATH;
/// [`JSON_PATH`] relative to [`PAGE_PATH`], as the page links it.
pub const JSON_HREF: &str = "status.json";
/// [`FEED_PATH`] relative to [`PAGE_PATH`], as the page links it.
pub const FEED_HREF: &str = "status/feed.atom";
/// [`HISTORY_PATH`] relative to [`PAGE_PATH`], as the page links it.
pub const HISTORY_HREF: &str = "status/history";

/// Why a page could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    /// The built-in HTML template failed to compile or render (a bug in drbot).
    #[error("status page template: {0}")]
    Template(String),
    /// A history chart could not be drawn (a bug in drbot).
    #[error("history chart: {0}")]
    Chart(String),
}
