//! The measured disaster-recovery drill: a marker writer that commits one numbered row per tick
//! on the primary while the disaster is simulated ([`markers`]), and the arithmetic that turns
//! what the promoted DR database holds into RPO and RTO figures ([`measure`]).
//!
//! The steps built on this are `pg_drill_disaster` and `pg_drill_measure`
//! (`crate::steps::drill_disaster`, `crate::steps::drill_measure`).

pub mod markers;
pub mod measure;

/// Default marker table of a drill.
pub const DEFAULT_TABLE: &str = "drbot_drill_markers";
