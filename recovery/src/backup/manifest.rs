//! The manifest written next to every backup: what it holds, when it was made, checksums and
//! the source's row counts. "latest" is decided by the manifest's time, never by file mtime.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// File name of the manifest inside a backup's directory; written last.
pub const MANIFEST_FILE: &str = "manifest.json";

/// What kind of backup a manifest describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupKind {
    /// `pg_dump` plain SQL, gzip-compressed: one file, [`BackupKind::SQL_GZIP_FILE`].
    SqlGzip,
    /// `pg_dump -Fc` custom format: one file, [`BackupKind::CUSTOM_FILE`].
    Custom,
    /// `pg_basebackup -Ft -z` output: `base.tar.gz` and `pg_wal.tar.gz`.
    BaseTar,
}

impl BackupKind {
    /// File name of a [`BackupKind::SqlGzip`] backup's dump.
    pub const SQL_GZIP_FILE: &'static str = "dump.sql.gz";
    /// File name of a [`BackupKind::Custom`] backup's dump.
    pub const CUSTOM_FILE: &'static str = "dump.pgdump";
    /// File name of a [`BackupKind::BaseTar`] backup's data directory tarball.
    pub const BASE_TAR_FILE: &'static str = "base.tar.gz";
    /// File name of a [`BackupKind::BaseTar`] backup's WAL tarball.
    pub const WAL_TAR_FILE: &'static str = "pg_wal.tar.gz";

    /// The kind's name as written in manifests and step parameters (`sql_gzip`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            BackupKind::SqlGzip => "sql_gzip",
            BackupKind::Custom => "custom",
            BackupKind::BaseTar => "base_tar",
        }
    }

    /// Parses `sql_gzip`, `custom` or `base_tar`.
    pub fn parse(s: &str) -> Option<BackupKind> {
        match s {
            "sql_gzip" => Some(BackupKind::SqlGzip),
            "custom" => Some(BackupKind::Custom),
            "base_tar" => Some(BackupKind::BaseTar),
            _ => None,
        }
    }

    /// The main file of a backup of this kind (the dump, or the base tarball).
    pub fn main_file(self) -> &'static str {
        match self {
            BackupKind::SqlGzip => Self::SQL_GZIP_FILE,
            BackupKind::Custom => Self::CUSTOM_FILE,
            BackupKind::BaseTar => Self::BASE_TAR_FILE,
        }
    }
}

impl std::fmt::Display for BackupKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One file of a backup, with its size and checksum as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestFile {
    /// File name inside the backup's directory, e.g. `dump.sql.gz`.
    pub name: String,
    /// Size in bytes, as stored (compressed where the file is).
    pub size: u64,
    /// SHA-256 of the stored bytes, lowercase hex.
    pub sha256: String,
}

/// `<name>/manifest.json`: describes one complete backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The backup's name (its directory in the store), e.g. `20261126T101500Z`.
    pub name: String,
    /// What the files are.
    pub kind: BackupKind,
    /// When the backup was taken (UTC); orders backups for "latest".
    pub created_at: DateTime<Utc>,
    /// Where it was taken from: `host:port/db`, never with credentials.
    pub source: String,
    /// The files, each with size and SHA-256.
    pub files: Vec<ManifestFile>,
    /// Row counts of the source's tables at the dump's snapshot (table → rows).
    #[serde(default)]
    pub row_counts: BTreeMap<String, i64>,
    /// Total size of the files in bytes.
    pub size: u64,
}

impl Manifest {
    /// A manifest for `files`, with `size` summed from them.
    pub fn new(
        name: impl Into<String>,
        kind: BackupKind,
        created_at: DateTime<Utc>,
        source: impl Into<String>,
        files: Vec<ManifestFile>,
        row_counts: BTreeMap<String, i64>,
    ) -> Manifest {
        let size = files.iter().map(|f| f.size).sum();
        Manifest {
            name: name.into(),
            kind,
            created_at,
            source: source.into(),
            files,
            row_counts,
            size,
        }
    }

    /// The entry for `file_name`, if the backup has it.
    pub fn file(&self, file_name: &str) -> Option<&ManifestFile> {
        self.files.iter().find(|f| f.name == file_name)
    }
}

/// Whether `s` is usable as a backup or file name: 1–200 characters of `A–Z a–z 0–9 . _ -`,
/// not starting with a dot.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 200
        && !s.starts_with('.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}
