//! Test helpers shared across crates: throwaway PostgreSQL clusters (a primary, streaming
//! replicas), per-test databases on a shared cluster, a moto server (fake S3 and Route53),
//! and a fake Kubernetes API server.

pub mod kube;
pub mod moto;
pub mod pg;
pub mod redis;
pub mod shared;
