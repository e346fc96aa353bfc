//! Test helpers shared across crates: throwaway PostgreSQL clusters (a primary, streaming
//! replicas) and per-test databases on a shared cluster.

pub mod pg;
pub mod shared;
