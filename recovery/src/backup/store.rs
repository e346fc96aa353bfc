//! [`BackupStore`]: backups and their manifests in a local directory or S3-compatible storage,
//! streamed in both directions with SHA-256 computed or checked on the way.
//!
//! Layout: `<prefix>/<backup name>/<file>` plus `<prefix>/<backup name>/manifest.json`, which is
//! written last: a backup without a manifest is incomplete and never listed.
//!
//! A manifest that is there but unusable (not JSON, not a manifest, naming another backup) is
//! left out of listings with a warning, but never silently passed over by "latest": see
//! [`Listing::newest`].

use std::{io, path::Path as FsPath, pin::Pin, sync::Arc};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt, TryStreamExt, stream::BoxStream};
use object_store::{
    GetResultPayload, ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart,
    aws::AmazonS3Builder, local::LocalFileSystem, path::Path,
};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::{
    BackupError,
    manifest::{BackupKind, MANIFEST_FILE, Manifest, ManifestFile, valid_name},
};
use crate::resources::BackupStoreDef;

/// Size of each multipart upload part (S3 needs at least 5 MiB).
const PART_SIZE: usize = 16 * 1024 * 1024;
/// Parts uploaded at the same time.
const UPLOAD_CONCURRENCY: usize = 4;
/// Read size when streaming into or out of the store.
pub(crate) const CHUNK: usize = 1024 * 1024;
/// Manifests fetched at the same time when listing.
const LIST_CONCURRENCY: usize = 16;

/// A backup whose `manifest.json` exists but cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnusableManifest {
    /// The backup's name (its directory).
    pub name: String,
    /// Where the manifest is, e.g. `backups/20261126T101500Z/manifest.json`.
    pub path: String,
    /// What is wrong with it, e.g. `expected value at line 1 column 1`.
    pub problem: String,
    /// Its `kind`, when that much can still be read from it.
    pub kind: Option<BackupKind>,
    /// Its `created_at`, when that much can still be read from it.
    pub created_at: Option<DateTime<Utc>>,
}

/// What a store holds: the complete backups, newest first, and those whose manifest is
/// unusable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// Backups with a valid manifest, newest first by `created_at` (then name).
    pub complete: Vec<Manifest>,
    /// Backups whose manifest exists but cannot be used, by name.
    pub unusable: Vec<UnusableManifest>,
}

impl Listing {
    /// The newest complete backup whose kind `wanted` accepts, finished at or before
    /// `not_after` when given (`Ok(None)`: there is none).
    ///
    /// A backup with an unusable manifest might be the one meant: when it could be newer than
    /// the one chosen (its `created_at` is later, or cannot be read) and of a wanted kind (or
    /// its kind cannot be read), this fails with an error naming its manifest rather than
    /// quietly picking an older backup. A backup named explicitly is not affected, and an
    /// unusable manifest that is certainly older or of another kind does not get in the way.
    pub fn newest(
        &self,
        wanted: impl Fn(BackupKind) -> bool,
        not_after: Option<DateTime<Utc>>,
    ) -> Result<Option<&Manifest>, BackupError> {
        let in_time = |t: DateTime<Utc>| not_after.is_none_or(|limit| t <= limit);
        let chosen = self
            .complete
            .iter()
            .find(|m| wanted(m.kind) && in_time(m.created_at));
        let blocking: Vec<&UnusableManifest> = self
            .unusable
            .iter()
            .filter(|u| {
                u.kind.is_none_or(&wanted)
                    && u.created_at
                        .is_none_or(|t| in_time(t) && chosen.is_none_or(|c| t >= c.created_at))
            })
            .collect();
        let Some(first) = blocking.first() else {
            return Ok(chosen);
        };
        let newest_readable = match chosen {
            Some(c) => format!("the newest readable one is `{}`", c.name),
            None => "no readable one qualifies".to_string(),
        };
        let mut message = format!(
            "{}. Backup `{}` may be the latest one ({newest_readable}), so `latest` picks \
             none: repair or remove that manifest, or name the backup to use",
            first.problem, first.name
        );
        if blocking.len() > 1 {
            let others: Vec<String> = blocking[1..]
                .iter()
                .map(|u| format!("`{}`", u.name))
                .collect();
            message.push_str(&format!(
                " (other unusable manifests: {})",
                others.join(", ")
            ));
        }
        Err(BackupError::Manifest {
            path: first.path.clone(),
            message,
        })
    }
}

/// An opened backup store.
#[derive(Clone)]
pub struct BackupStore {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    display: String,
    /// The directory of a local store.
    local_root: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for BackupStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupStore")
            .field("display", &self.display)
            .finish()
    }
}

/// Opens the store `def` describes: a local directory (created when missing) or an S3 bucket
/// (credentials from the standard AWS environment: `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`,
/// web identity, container or instance credentials).
pub async fn open(def: &BackupStoreDef) -> Result<BackupStore, BackupError> {
    match def {
        BackupStoreDef::Local { path } => {
            tokio::fs::create_dir_all(path)
                .await
                .map_err(|e| BackupError::io(format!("creating {}", path.display()), e))?;
            let store = LocalFileSystem::new_with_prefix(path).map_err(|e| {
                BackupError::store(format!("opening local store {}", path.display()), e)
            })?;
            Ok(BackupStore {
                store: Arc::new(store),
                prefix: Path::default(),
                display: format!("local:{}", path.display()),
                local_root: Some(path.clone()),
            })
        }
        BackupStoreDef::S3 {
            bucket,
            prefix,
            region,
            endpoint,
        } => {
            if bucket.trim().is_empty() {
                return Err(BackupError::Invalid("S3 store: bucket is empty".into()));
            }
            let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
            if let Some(region) = region {
                builder = builder.with_region(region);
            }
            if let Some(endpoint) = endpoint {
                builder = builder
                    .with_endpoint(endpoint)
                    .with_virtual_hosted_style_request(false)
                    .with_allow_http(endpoint.starts_with("http://"));
            }
            let store = builder
                .build()
                .map_err(|e| BackupError::store(format!("opening S3 bucket {bucket}"), e))?;
            let parts: Vec<&str> = prefix.split('/').filter(|p| !p.is_empty()).collect();
            let display = match endpoint {
                Some(ep) => format!("s3://{bucket}/{} ({ep})", parts.join("/")),
                None => format!("s3://{bucket}/{}", parts.join("/")),
            };
            Ok(BackupStore {
                store: Arc::new(store),
                prefix: Path::from_iter(parts),
                display,
                local_root: None,
            })
        }
    }
}

/// An unusable manifest, with its kind and time when those fields can still be read.
fn unusable(name: &str, path: String, e: BackupError, bytes: &[u8]) -> UnusableManifest {
    let problem = match e {
        BackupError::Manifest { message, .. } => message,
        other => other.to_string(),
    };
    let doc: Option<serde_json::Value> = serde_json::from_slice(bytes).ok();
    let field = |key: &str| {
        doc.as_ref()
            .and_then(|d| d.get(key))
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
    };
    UnusableManifest {
        name: name.to_string(),
        path,
        problem,
        kind: field("kind").and_then(|k| BackupKind::parse(&k)),
        created_at: field("created_at")
            .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
            .map(|t| t.with_timezone(&Utc)),
    }
}

impl BackupStore {
    /// Where this store is, for logs and plans: `local:/var/backups` or `s3://bucket/prefix`.
    pub fn display(&self) -> &str {
        &self.display
    }

    /// The file's path on disk when this is a local store and the file exists (tools that
    /// need a file can read it in place; its checksum must still be checked).
    pub fn local_file(&self, manifest: &Manifest, file: &str) -> Option<std::path::PathBuf> {
        let root = self.local_root.as_ref()?;
        if !valid_name(&manifest.name) || !valid_name(file) || manifest.file(file).is_none() {
            return None;
        }
        let path = root.join(&manifest.name).join(file);
        path.is_file().then_some(path)
    }

    fn dir_path(&self, backup: &str) -> Path {
        self.prefix.clone().join(backup)
    }

    fn file_path(&self, backup: &str, file: &str) -> Path {
        self.prefix.clone().join(backup).join(file)
    }

    /// Complete backups (those with a valid manifest), newest first by the manifest's
    /// `created_at` (then name). Backups whose manifest is unusable are left out with a
    /// warning (use [`BackupStore::list_all`] to see them, and [`Listing::newest`] to pick
    /// the latest backup); a store error (access denied, network) fails the listing, so no
    /// backup is left out because it could not be read.
    pub async fn list(&self) -> Result<Vec<Manifest>, BackupError> {
        let listing = self.list_all().await?;
        for u in &listing.unusable {
            tracing::warn!(backup = %u.name, manifest = %u.path, problem = %u.problem, "leaving out backup with an unusable manifest");
        }
        Ok(listing.complete)
    }

    /// Every backup with a manifest: the complete ones newest first, and those whose manifest
    /// exists but cannot be used. A store error reading any manifest fails the listing.
    pub async fn list_all(&self) -> Result<Listing, BackupError> {
        let prefix = (!self.prefix.as_ref().is_empty()).then_some(&self.prefix);
        let listing = self
            .store
            .list_with_delimiter(prefix)
            .await
            .map_err(|e| BackupError::store(format!("listing {}", self.display), e))?;
        let names: Vec<String> = listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_owned))
            .filter(|n| valid_name(n))
            .collect();
        let read: Vec<(String, Option<Bytes>)> = futures::stream::iter(names)
            .map(|name| async move {
                let bytes = self.manifest_bytes(&name).await?;
                Ok::<_, BackupError>((name, bytes))
            })
            .buffer_unordered(LIST_CONCURRENCY)
            .try_collect()
            .await?;
        let mut out = Listing::default();
        for (name, bytes) in read {
            let Some(bytes) = bytes else { continue };
            match self.parse_manifest(&name, &bytes) {
                Ok(m) => out.complete.push(m),
                Err(e) => out.unusable.push(unusable(
                    &name,
                    self.file_path(&name, MANIFEST_FILE).to_string(),
                    e,
                    &bytes,
                )),
            }
        }
        out.complete.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then_with(|| b.name.cmp(&a.name))
        });
        out.unusable.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The manifest of backup `name`, `None` when it has none (missing or incomplete).
    pub async fn read_manifest(&self, name: &str) -> Result<Option<Manifest>, BackupError> {
        match self.manifest_bytes(name).await? {
            Some(bytes) => self.parse_manifest(name, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// The bytes of backup `name`'s manifest, `None` when it has none.
    async fn manifest_bytes(&self, name: &str) -> Result<Option<Bytes>, BackupError> {
        if !valid_name(name) {
            return Err(BackupError::Invalid(format!(
                "`{name}` is not a valid backup name (letters, digits, `.`, `_`, `-`)"
            )));
        }
        let path = self.file_path(name, MANIFEST_FILE);
        match self.store.get(&path).await {
            Ok(r) => r
                .bytes()
                .await
                .map(Some)
                .map_err(|e| BackupError::store(format!("reading {path}"), e)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(BackupError::store(format!("reading {path}"), e)),
        }
    }

    /// Backup `name`'s manifest from its bytes.
    fn parse_manifest(&self, name: &str, bytes: &[u8]) -> Result<Manifest, BackupError> {
        let path = self.file_path(name, MANIFEST_FILE);
        let manifest: Manifest =
            serde_json::from_slice(bytes).map_err(|e| BackupError::Manifest {
                path: path.to_string(),
                message: e.to_string(),
            })?;
        if manifest.name != name {
            return Err(BackupError::Manifest {
                path: path.to_string(),
                message: format!("it names backup `{}`", manifest.name),
            });
        }
        // File names become paths when a backup is fetched: `../x` would write outside it.
        if let Some(f) = manifest
            .files
            .iter()
            .find(|f| !valid_name(&f.name) || f.name == MANIFEST_FILE)
        {
            return Err(BackupError::Manifest {
                path: path.to_string(),
                message: format!("`{}` is not a valid file name", f.name.escape_debug()),
            });
        }
        Ok(manifest)
    }

    /// Finds a backup: `latest` is the newest complete one (of `kind`, when given; it fails
    /// when an unusable manifest might be newer, see [`Listing::newest`]); anything else is a
    /// backup name, which must be of `kind` when given.
    pub async fn resolve(
        &self,
        name_or_latest: &str,
        kind: Option<BackupKind>,
    ) -> Result<Manifest, BackupError> {
        if name_or_latest == "latest" {
            let all = self.list_all().await?;
            return all
                .newest(|k2| kind.is_none_or(|k| k2 == k), None)?
                .cloned()
                .ok_or_else(|| {
                    BackupError::NotFound(match kind {
                        Some(k) => format!("no complete {k} backup in {}", self.display),
                        None => format!("no complete backup in {}", self.display),
                    })
                });
        }
        match self.read_manifest(name_or_latest).await? {
            Some(m) => match kind {
                Some(k) if m.kind != k => Err(BackupError::WrongKind {
                    backup: m.name,
                    found: m.kind,
                    wanted: k,
                }),
                _ => Ok(m),
            },
            None => {
                let newest: Vec<String> = self
                    .list()
                    .await
                    .unwrap_or_default()
                    .into_iter()
                    .take(5)
                    .map(|m| m.name)
                    .collect();
                Err(BackupError::NotFound(format!(
                    "backup `{name_or_latest}` not found (or incomplete) in {}; newest: {}",
                    self.display,
                    if newest.is_empty() {
                        "none".to_string()
                    } else {
                        newest.join(", ")
                    }
                )))
            }
        }
    }

    /// Whether anything is stored under backup `name` (complete or not).
    pub async fn exists(&self, name: &str) -> Result<bool, BackupError> {
        let path = self.dir_path(name);
        let mut listing = self.store.list(Some(&path));
        match listing.next().await {
            None => Ok(false),
            Some(Ok(_)) => Ok(true),
            Some(Err(object_store::Error::NotFound { .. })) => Ok(false),
            Some(Err(e)) => Err(BackupError::store(format!("listing {path}"), e)),
        }
    }

    /// Deletes everything stored under backup `name` (its manifest first, so it stops being
    /// complete before its files go). Used to clean up after a failed backup.
    pub async fn remove(&self, name: &str) -> Result<(), BackupError> {
        check_names(name, MANIFEST_FILE)?;
        match self
            .store
            .delete(&self.file_path(name, MANIFEST_FILE))
            .await
        {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(BackupError::store(format!("deleting {name}"), e)),
        }
        let dir = self.dir_path(name);
        let paths: Vec<Path> = match self.store.list(Some(&dir)).try_collect::<Vec<_>>().await {
            Ok(metas) => metas.into_iter().map(|m| m.location).collect(),
            Err(object_store::Error::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(BackupError::store(format!("listing {dir}"), e)),
        };
        for path in paths {
            match self.store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(BackupError::store(format!("deleting {path}"), e)),
            }
        }
        Ok(())
    }

    /// Streams `reader` into `<backup>/<file>` as a multipart upload, computing its SHA-256 and
    /// size on the way; never holds the whole file in memory. An error aborts the upload.
    pub async fn put_file<R>(
        &self,
        backup: &str,
        file: &str,
        mut reader: R,
    ) -> Result<ManifestFile, BackupError>
    where
        R: AsyncRead + Unpin + Send,
    {
        check_names(backup, file)?;
        if file == MANIFEST_FILE {
            return Err(BackupError::Invalid(format!(
                "`{MANIFEST_FILE}` is written by put_manifest"
            )));
        }
        let path = self.file_path(backup, file);
        let upload = self
            .store
            .put_multipart(&path)
            .await
            .map_err(|e| BackupError::store(format!("starting upload of {path}"), e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match reader.read(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(BackupError::io(format!("reading the data for {path}"), e));
                }
            };
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            size += n as u64;
            if let Err(e) = writer.wait_for_capacity(UPLOAD_CONCURRENCY).await {
                let _ = writer.abort().await;
                return Err(BackupError::store(format!("uploading {path}"), e));
            }
            writer.write(&buf[..n]);
        }
        writer
            .finish()
            .await
            .map_err(|e| BackupError::store(format!("completing upload of {path}"), e))?;
        Ok(ManifestFile {
            name: file.to_string(),
            size,
            sha256: hex::encode(hasher.finalize()),
        })
    }

    /// Writes `manifest` as `<name>/manifest.json`, which makes the backup complete. Call it
    /// after every file is stored: each file must exist with the size the manifest says.
    pub async fn put_manifest(&self, manifest: &Manifest) -> Result<(), BackupError> {
        if !valid_name(&manifest.name) {
            return Err(BackupError::Invalid(format!(
                "`{}` is not a valid backup name",
                manifest.name
            )));
        }
        if manifest.files.is_empty() {
            return Err(BackupError::Invalid(format!(
                "manifest of `{}` lists no files",
                manifest.name
            )));
        }
        for f in &manifest.files {
            check_names(&manifest.name, &f.name)?;
            let path = self.file_path(&manifest.name, &f.name);
            let meta = self.store.head(&path).await.map_err(|e| {
                BackupError::store(format!("manifest lists {path}, which cannot be read"), e)
            })?;
            if meta.size != f.size {
                return Err(BackupError::Size {
                    backup: manifest.name.clone(),
                    file: f.name.clone(),
                    expected: f.size,
                    actual: meta.size,
                });
            }
        }
        let json = serde_json::to_vec_pretty(manifest).map_err(|e| BackupError::Manifest {
            path: manifest.name.clone(),
            message: e.to_string(),
        })?;
        let path = self.file_path(&manifest.name, MANIFEST_FILE);
        self.store
            .put(&path, PutPayload::from(json))
            .await
            .map_err(|e| BackupError::store(format!("writing {path}"), e))?;
        Ok(())
    }

    /// Streams `<backup>/<file>` as chunks; the stream ends with an error (wrapping
    /// [`BackupError::Checksum`] or [`BackupError::Size`]) when the bytes do not match the
    /// manifest.
    pub async fn open_stream(
        &self,
        manifest: &Manifest,
        file: &str,
    ) -> Result<BoxStream<'static, io::Result<Bytes>>, BackupError> {
        let entry = manifest
            .file(file)
            .ok_or_else(|| {
                BackupError::NotFound(format!(
                    "backup `{}` has no file `{file}` (it has: {})",
                    manifest.name,
                    manifest
                        .files
                        .iter()
                        .map(|f| f.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?
            .clone();
        let path = self.file_path(&manifest.name, file);
        let got = self
            .store
            .get(&path)
            .await
            .map_err(|e| BackupError::store(format!("reading {path}"), e))?;
        let raw: BoxStream<'static, io::Result<Bytes>> = match got.payload {
            GetResultPayload::File(f, _) => file_stream(f),
            GetResultPayload::Stream(s) => s.map_err(io::Error::other).boxed(),
        };
        Ok(verified(raw, manifest.name.clone(), entry).boxed())
    }

    /// Streams `<backup>/<file>` as an [`AsyncRead`] (for piping into `psql`/`pg_restore`); a
    /// read fails at the end when the SHA-256 or size does not match the manifest.
    pub async fn open_read(
        &self,
        manifest: &Manifest,
        file: &str,
    ) -> Result<impl AsyncRead + Send + Unpin + 'static, BackupError> {
        let stream = self.open_stream(manifest, file).await?;
        Ok(tokio_util::io::StreamReader::new(stream))
    }

    /// Downloads `<backup>/<file>` to `dest`, checking size and SHA-256; `dest` only appears
    /// once the bytes are verified (they are written to `dest.partial` first). Returns the
    /// bytes written.
    pub async fn fetch_to(
        &self,
        manifest: &Manifest,
        file: &str,
        dest: &FsPath,
    ) -> Result<u64, BackupError> {
        let mut stream = self.open_stream(manifest, file).await?;
        let mut partial = dest.as_os_str().to_owned();
        partial.push(".partial");
        let partial = std::path::PathBuf::from(partial);
        let mut out = tokio::fs::File::create(&partial)
            .await
            .map_err(|e| BackupError::io(format!("creating {}", partial.display()), e))?;
        let mut written = 0u64;
        let result: Result<(), BackupError> = async {
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| {
                    BackupError::from_io(format!("downloading {}/{file}", manifest.name), e)
                })?;
                out.write_all(&chunk)
                    .await
                    .map_err(|e| BackupError::io(format!("writing {}", partial.display()), e))?;
                written += chunk.len() as u64;
            }
            out.flush()
                .await
                .map_err(|e| BackupError::io(format!("writing {}", partial.display()), e))?;
            Ok(())
        }
        .await;
        drop(out);
        if let Err(e) = result {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(e);
        }
        tokio::fs::rename(&partial, dest)
            .await
            .map_err(|e| BackupError::io(format!("renaming to {}", dest.display()), e))?;
        Ok(written)
    }
}

fn check_names(backup: &str, file: &str) -> Result<(), BackupError> {
    if !valid_name(backup) {
        return Err(BackupError::Invalid(format!(
            "`{backup}` is not a valid backup name (letters, digits, `.`, `_`, `-`)"
        )));
    }
    if !valid_name(file) {
        return Err(BackupError::Invalid(format!(
            "`{file}` is not a valid file name (letters, digits, `.`, `_`, `-`)"
        )));
    }
    Ok(())
}

/// A local file read in large chunks on the blocking pool (object_store's own stream reads
/// 8 KiB at a time).
fn file_stream(file: std::fs::File) -> BoxStream<'static, io::Result<Bytes>> {
    futures::stream::try_unfold(Some(file), |state| async move {
        let Some(mut file) = state else {
            return Ok(None);
        };
        let (file, chunk) = tokio::task::spawn_blocking(move || {
            use std::io::Read as _;
            let mut buf = vec![0u8; CHUNK];
            let mut filled = 0;
            while filled < buf.len() {
                match file.read(&mut buf[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            }
            buf.truncate(filled);
            Ok((file, buf))
        })
        .await
        .map_err(io::Error::other)??;
        if chunk.is_empty() {
            Ok(None)
        } else {
            Ok(Some((Bytes::from(chunk), Some(file))))
        }
    })
    .boxed()
}

/// Passes `inner` through, hashing it; ends with an error if size or SHA-256 differ from
/// `entry`.
fn verified(
    inner: BoxStream<'static, io::Result<Bytes>>,
    backup: String,
    entry: ManifestFile,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    struct State {
        inner: Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>,
        hasher: Option<Sha256>,
        size: u64,
        backup: String,
        entry: ManifestFile,
    }
    let state = State {
        inner,
        hasher: Some(Sha256::new()),
        size: 0,
        backup,
        entry,
    };
    futures::stream::unfold(state, |mut st| async move {
        let hasher = st.hasher.as_mut()?;
        match st.inner.next().await {
            Some(Ok(bytes)) => {
                hasher.update(&bytes);
                st.size += bytes.len() as u64;
                if st.size > st.entry.size {
                    st.hasher = None;
                    let err = BackupError::Size {
                        backup: st.backup.clone(),
                        file: st.entry.name.clone(),
                        expected: st.entry.size,
                        actual: st.size,
                    };
                    return Some((Err(io::Error::new(io::ErrorKind::InvalidData, err)), st));
                }
                Some((Ok(bytes), st))
            }
            Some(Err(e)) => {
                st.hasher = None;
                Some((Err(e), st))
            }
            None => {
                let hasher = st.hasher.take()?;
                let actual = hex::encode(hasher.finalize());
                let err = if st.size != st.entry.size {
                    BackupError::Size {
                        backup: st.backup.clone(),
                        file: st.entry.name.clone(),
                        expected: st.entry.size,
                        actual: st.size,
                    }
                } else if !actual.eq_ignore_ascii_case(&st.entry.sha256) {
                    BackupError::Checksum {
                        backup: st.backup.clone(),
                        file: st.entry.name.clone(),
                        expected: st.entry.sha256.clone(),
                        actual,
                    }
                } else {
                    return None;
                };
                Some((Err(io::Error::new(io::ErrorKind::InvalidData, err)), st))
            }
        }
    })
}
