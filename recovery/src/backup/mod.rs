//! Backup storage: backups (pg_dump output, base backups) and their manifests in a local
//! directory or S3-compatible storage, streamed end to end with SHA-256 checks.
//!
//! - [`manifest`]: [`Manifest`], [`BackupKind`], [`ManifestFile`].
//! - [`store`]: [`open`] and [`BackupStore`] (list, resolve "latest", put, fetch, stream),
//!   [`Listing`] (complete backups and unusable manifests).
//! - [`gzip`]: gzip on threads of its own between streams and child pipes.
//! - [`restore`]: a stored dump into a database (psql or pg_restore -j).
//! - [`scratch`]: the scratch database of `verify_backup`, always dropped.

pub mod gzip;
pub mod manifest;
pub mod restore;
pub mod scratch;
pub mod store;

pub use manifest::{BackupKind, MANIFEST_FILE, Manifest, ManifestFile};
pub use store::{BackupStore, Listing, UnusableManifest, open};

use crate::{resources::Resources, step::StepError, steps::values::is_placeholder};

/// The seed plan's tables: counted into manifests and checked by `verify_backup` by default.
pub const DEFAULT_TABLES: [&str; 3] = ["projects", "project_payloads", "project_events"];

/// The default table list as owned strings (for serde defaults).
pub fn default_tables() -> Vec<String> {
    DEFAULT_TABLES.iter().map(|s| s.to_string()).collect()
}

/// For `StepKind::validate`: `name` (the value of parameter `key`) names a configured
/// `[backups.<name>]` store, or still holds an unresolved `{placeholder}`.
pub fn check_store(res: &Resources, key: &str, name: &str) -> Result<(), String> {
    if is_placeholder(name) || res.backups.contains_key(name) {
        return Ok(());
    }
    let known: Vec<&str> = res.backups.keys().map(String::as_str).collect();
    Err(format!(
        "{key}: unknown backup store `{name}` (configured [backups.<name>] entries: {})",
        if known.is_empty() {
            "none".to_string()
        } else {
            known.join(", ")
        }
    ))
}

/// A backup error as a step error: storage trouble (I/O, network) may pass on retry, bad data
/// will not.
pub fn step_error(e: BackupError) -> StepError {
    if e.is_retryable() {
        StepError::retryable(e.to_string())
    } else {
        StepError::fatal(e.to_string())
    }
}

/// Megabytes with one decimal, for summaries.
pub fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1_000_000.0)
}

/// What can go wrong with backup storage.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// A bad name or argument.
    #[error("{0}")]
    Invalid(String),
    /// No such backup (or file), with what exists.
    #[error("{0}")]
    NotFound(String),
    /// The backup exists but is of another kind.
    #[error("backup `{backup}` is a {found} backup, not {wanted}")]
    WrongKind {
        /// The backup's name.
        backup: String,
        /// Its kind.
        found: BackupKind,
        /// The kind asked for.
        wanted: BackupKind,
    },
    /// The stored bytes do not hash to the manifest's SHA-256.
    #[error(
        "checksum mismatch for {backup}/{file}: the manifest says sha256 {expected}, the stored bytes hash to {actual}"
    )]
    Checksum {
        /// The backup's name.
        backup: String,
        /// The file.
        file: String,
        /// SHA-256 in the manifest.
        expected: String,
        /// SHA-256 of what was read.
        actual: String,
    },
    /// The stored file has another size than the manifest says.
    #[error(
        "size mismatch for {backup}/{file}: the manifest says {expected} bytes, the store holds {actual}"
    )]
    Size {
        /// The backup's name.
        backup: String,
        /// The file.
        file: String,
        /// Size in the manifest.
        expected: u64,
        /// Size read (or, when reading stopped early, read so far).
        actual: u64,
    },
    /// A manifest that cannot be read or written.
    #[error("invalid manifest {path}: {message}")]
    Manifest {
        /// Where it is.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The object store failed.
    #[error("{context}: {source}")]
    Store {
        /// What was being done.
        context: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
    /// Local I/O failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl BackupError {
    /// A store error with context.
    pub fn store(context: impl Into<String>, source: object_store::Error) -> Self {
        BackupError::Store {
            context: context.into(),
            source,
        }
    }
    /// An I/O error with context.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        BackupError::Io {
            context: context.into(),
            source,
        }
    }
    /// An I/O error from a stream of this module: a checksum or size error carried inside it
    /// comes back out as itself, anything else gets `context`.
    pub fn from_io(context: impl Into<String>, e: std::io::Error) -> Self {
        if !e.get_ref().is_some_and(|inner| inner.is::<BackupError>()) {
            return BackupError::io(context, e);
        }
        let kind = e.kind();
        match e.into_inner().map(|inner| inner.downcast::<BackupError>()) {
            Some(Ok(inner)) => *inner,
            Some(Err(other)) => BackupError::io(context, std::io::Error::new(kind, other)),
            None => BackupError::io(context, std::io::Error::from(kind)),
        }
    }
    /// Whether another attempt may succeed (network and I/O trouble, not bad data).
    pub fn is_retryable(&self) -> bool {
        matches!(self, BackupError::Store { .. } | BackupError::Io { .. })
    }
}
