//! Test helpers shared across crates: throwaway PostgreSQL clusters.
pub mod pg;
