//! Runbooks and the durable engine that runs them, plus the step providers. Knows nothing of chat.
//!
//! - [`runbook`]: runbooks as data (TOML), validated against the step [`registry`].
//! - [`backup`]: backup storage (local directory or S3) with manifests and SHA-256 checks.
//! - [`builtin`]: the built-in runbooks (the seed plan's procedures as data files).
//! - [`plan`]: a runbook resolved with a command's arguments into the exact [`plan::Plan`]
//!   that people approve; its fingerprint binds approvals to it.
//! - [`resources`]: the PostgreSQL clusters and backup stores steps refer to by name.
//! - [`k8s`]: Kubernetes clients for `[kubernetes.<name>]` entries; reading and scaling workloads.
//! - [`drill`]: the measured drill's marker writer and its RPO/RTO arithmetic.
//! - [`dns`]: DNS zones (Route53 or a record file) that `dns_switch`/`dns_check` act on.
//! - [`step`]: the [`step::Step`] trait that providers implement.
//! - [`engine`]: drives a plan step by step through a [`engine::Journal`] that persists every
//!   transition before it is acted on, so a crash never runs a non-idempotent step twice.

pub mod backup;
pub mod builtin;
pub mod dns;
pub mod drill;
pub mod engine;
pub mod env;
pub mod k8s;
pub mod pg;
pub mod plan;
pub mod redis_ops;
pub mod registry;
pub mod resources;
pub mod runbook;
pub mod secret;
pub mod step;
pub mod steps;

#[cfg(feature = "testkit")]
pub mod testkit;
