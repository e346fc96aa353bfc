//! Restoring a stored dump into a database: gzip plain SQL streamed through `psql -v
//! ON_ERROR_STOP=1` (read and hashed on the async side, decompressed on a thread of its own,
//! written straight into psql's stdin), or a custom-format dump fetched to a temp file (checked)
//! and restored with `pg_restore -j N`.

use std::{
    io,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures::StreamExt as _;
use tokio::sync::mpsc;

use super::{BackupError, BackupKind, BackupStore, Manifest, gzip::spawn_gunzip, mb, step_error};
use crate::{
    pg,
    resources::PgClusterDef,
    step::{StepContext, StepError, trim_output},
};

/// Bytes of each tool's captured output kept in the log.
const MAX_LOG: usize = 8 * 1024;
/// How often a progress line is sent while restoring.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// Pipe buffer asked for on psql's stdin (fewer wake-ups than the default 64 KiB).
const PIPE_SIZE: i32 = 1024 * 1024;

/// What a restore moved.
#[derive(Debug, Clone, Default)]
pub struct RestoreStats {
    /// Bytes read from the store (compressed, for gzip dumps).
    pub stored_bytes: u64,
    /// Bytes of SQL fed to psql (plain dumps only).
    pub sql_bytes: Option<u64>,
    /// Time spent restoring.
    pub seconds: f64,
    /// The tools' output, trimmed and scrubbed.
    pub log: String,
}

/// Restores `manifest`'s dump into database `db` of `def`: plain gzip SQL through psql,
/// custom format through `pg_restore -j jobs` (downloaded into `temp_dir` first).
pub async fn restore(
    store: &BackupStore,
    manifest: &Manifest,
    def: &PgClusterDef,
    db: &str,
    jobs: u32,
    temp_dir: &Path,
    ctx: &StepContext,
) -> Result<RestoreStats, StepError> {
    match manifest.kind {
        BackupKind::SqlGzip => restore_plain(store, manifest, def, db, ctx).await,
        BackupKind::Custom => restore_custom(store, manifest, def, db, jobs, temp_dir, ctx).await,
        BackupKind::BaseTar => Err(StepError::fatal(format!(
            "backup `{}` is a base backup (base_tar); only sql_gzip and custom dumps can be \
             restored into a database",
            manifest.name
        ))),
    }
}

async fn restore_plain(
    store: &BackupStore,
    manifest: &Manifest,
    def: &PgClusterDef,
    db: &str,
    ctx: &StepContext,
) -> Result<RestoreStats, StepError> {
    let started = Instant::now();
    let file = BackupKind::SQL_GZIP_FILE;
    let total = manifest.file(file).map(|f| f.size).unwrap_or(manifest.size);
    let mut stream = store
        .open_stream(manifest, file)
        .await
        .map_err(step_error)?;
    let conninfo = pg::db_conninfo(def, db)?;
    let tool = pg::tool(def, "psql")
        .as_current_user()
        .password_of(def)
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d"])
        .arg(conninfo);
    let mut cmd = tool.command();
    cmd.stdin(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| pg::spawn_error("psql", def, e))?;
    let mut group = pg::GroupGuard::new(child.id());
    let stdin = child
        .stdin
        .take()
        .ok_or_else(|| StepError::fatal("psql has no stdin"))?
        .into_owned_fd()
        .map_err(|e| StepError::fatal(format!("psql's stdin: {e}")))?;
    let stdin = std::fs::File::from(stdin);
    // SAFETY: F_SETPIPE_SZ on a pipe we own; failure only leaves the default size.
    unsafe {
        libc::fcntl(stdin.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE);
    }

    let (tx, rx) = mpsc::channel::<io::Result<bytes::Bytes>>(8);
    let applied = Arc::new(AtomicU64::new(0));
    let read = Arc::new(AtomicU64::new(0));
    let gunzip = spawn_gunzip(rx, stdin, applied.clone());
    let read_counter = read.clone();
    let backup_name = manifest.name.clone();
    // Reads (and hashes) the next chunks while the thread decompresses the previous ones.
    let pump = async move {
        while let Some(item) = stream.next().await {
            match item {
                Ok(chunk) => {
                    read_counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    if tx.send(Ok(chunk)).await.is_err() {
                        return None; // the decompressor stopped; its error says why
                    }
                }
                Err(e) => {
                    let err = BackupError::from_io(format!("reading {backup_name}/{file}"), e);
                    let _ = tx.send(Err(io::Error::other(err.to_string()))).await;
                    return Some(err);
                }
            }
        }
        None
    };
    let out = pg::capture(child.stdout.take(), def, MAX_LOG);
    let err = pg::capture(child.stderr.take(), def, MAX_LOG);
    let all = async { tokio::join!(pump, gunzip, out, err, child.wait()) };
    tokio::pin!(all);
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    tick.tick().await;
    let (stream_err, gunzip_res, out, err, status) = loop {
        tokio::select! {
            r = &mut all => break r,
            _ = tick.tick() => {
                let r = read.load(Ordering::Relaxed);
                ctx.progress.line(format!(
                    "restoring {}: {} of {} read ({:.0}%), {} of SQL applied",
                    manifest.name,
                    mb(r),
                    mb(total),
                    100.0 * r as f64 / total.max(1) as f64,
                    mb(applied.load(Ordering::Relaxed)),
                ));
            }
            _ = ctx.cancel.cancelled() => {
                group.kill();
                return Err(StepError::retryable(format!(
                    "cancelled while restoring {} ({} of SQL applied)",
                    manifest.name,
                    mb(applied.load(Ordering::Relaxed))
                )));
            }
        }
    };
    group.kill();
    let mut log = format!("$ {}\n", tool.display());
    for part in [&out, &err] {
        if !part.is_empty() {
            log.push_str(part);
            log.push('\n');
        }
    }
    let status = status.map_err(|e| StepError::fatal(format!("waiting for psql: {e}")))?;
    log.push_str(&format!("({status})"));
    let log = trim_output(&log, 2 * MAX_LOG);
    let applied = applied.load(Ordering::Relaxed);
    if let Some(e) = stream_err {
        return Err(step_error(e).with_log(log));
    }
    let gunzip_res = gunzip_res.unwrap_or_else(|_| {
        Err(io::Error::other(
            "the decompression thread ended without a result",
        ))
    });
    match gunzip_res {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe || status.success() => {
            return Err(StepError::fatal(format!(
                "{}/{file} is not a complete gzip stream (corrupt or truncated): {e}; {} of \
                 SQL had been applied",
                manifest.name,
                mb(applied)
            ))
            .with_log(log));
        }
        _ => {}
    }
    if !status.success() {
        return Err(StepError::fatal(format!(
            "psql failed restoring {} ({status}): {}",
            manifest.name,
            pg::last_line(&err)
        ))
        .with_log(log));
    }
    Ok(RestoreStats {
        stored_bytes: read.load(Ordering::Relaxed),
        sql_bytes: Some(applied),
        seconds: started.elapsed().as_secs_f64(),
        log,
    })
}

/// A temp file removed when dropped.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        let mut partial = self.0.as_os_str().to_owned();
        partial.push(".partial");
        let _ = std::fs::remove_file(PathBuf::from(partial));
    }
}

async fn restore_custom(
    store: &BackupStore,
    manifest: &Manifest,
    def: &PgClusterDef,
    db: &str,
    jobs: u32,
    temp_dir: &Path,
    ctx: &StepContext,
) -> Result<RestoreStats, StepError> {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let started = Instant::now();
    let file = BackupKind::CUSTOM_FILE;
    let tmp = TempFile(temp_dir.join(format!(
        "drbot-verify-{}-{}-{}.pgdump",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        manifest.name
    )));
    let conninfo = pg::db_conninfo(def, db)?;
    let pg_restore = |path: &Path| {
        pg::tool(def, "pg_restore")
            .as_current_user()
            .password_of(def)
            .args(["--exit-on-error", "-j", &jobs.to_string(), "-d"])
            .arg(&conninfo)
            .arg(path)
    };
    let (stored_bytes, out) = match store.local_file(manifest, file) {
        // A local store already holds a file: pg_restore reads it in place while the
        // checksum is computed alongside; a mismatch fails the restore all the same.
        Some(path) => {
            ctx.progress.line(format!(
                "restoring {} ({}) with pg_restore -j {jobs}, checking its checksum alongside",
                manifest.name,
                mb(manifest.size)
            ));
            let check = async {
                let mut stream = store.open_stream(manifest, file).await?;
                let mut n = 0u64;
                while let Some(chunk) = stream.next().await {
                    n += chunk
                        .map_err(|e| BackupError::from_io(format!("reading {}", manifest.name), e))?
                        .len() as u64;
                }
                Ok::<u64, BackupError>(n)
            };
            let tool = pg_restore(&path);
            let (checked, out) = tokio::select! {
                r = async { tokio::join!(check, tool.run(ctx)) } => r,
                _ = ctx.cancel.cancelled() => {
                    return Err(StepError::retryable(format!("cancelled while restoring {}", manifest.name)));
                }
            };
            (checked.map_err(step_error)?, out?)
        }
        None => {
            ctx.progress.line(format!(
                "downloading {} ({}) to {}",
                manifest.name,
                mb(manifest.size),
                temp_dir.display()
            ));
            let n = tokio::select! {
                r = store.fetch_to(manifest, file, &tmp.0) => r.map_err(step_error)?,
                _ = ctx.cancel.cancelled() => {
                    return Err(StepError::retryable(format!("cancelled while downloading {}", manifest.name)));
                }
            };
            ctx.progress.line(format!(
                "checksum ok; restoring {} with pg_restore -j {jobs}",
                manifest.name
            ));
            (n, pg_restore(&tmp.0).run(ctx).await?)
        }
    };
    if !out.status.success() {
        return Err(StepError::fatal(format!(
            "pg_restore failed restoring {} ({}): {}",
            manifest.name,
            out.status,
            pg::last_line(&out.stderr)
        ))
        .with_log(out.log));
    }
    Ok(RestoreStats {
        stored_bytes,
        sql_bytes: None,
        seconds: started.elapsed().as_secs_f64(),
        log: out.log,
    })
}
