//! One PostgreSQL cluster shared by all tests of a test binary, with a fresh database per test
//! (per-test databases, as bors does). Stopped and removed when the test binary exits.

use std::sync::{
    Mutex, OnceLock,
    atomic::{AtomicU32, Ordering},
};

use super::pg::PgCluster;

static CLUSTER: OnceLock<Mutex<Option<PgCluster>>> = OnceLock::new();
static NEXT_DB: AtomicU32 = AtomicU32::new(1);

extern "C" fn stop_shared() {
    if let Some(m) = CLUSTER.get()
        && let Ok(mut guard) = m.lock()
    {
        // Dropping stops the server (immediate) and removes its directory.
        guard.take();
    }
}

/// Creates a new empty database on the shared cluster (started on first use) and returns
/// its URL.
pub fn fresh_database(prefix: &str) -> anyhow::Result<String> {
    let cell = CLUSTER.get_or_init(|| {
        let cluster = PgCluster::start().expect("starting the shared PostgreSQL test cluster");
        // SAFETY: registering a plain extern "C" function to run at process exit.
        unsafe {
            libc::atexit(stop_shared);
        }
        Mutex::new(Some(cluster))
    });
    let guard = cell
        .lock()
        .map_err(|_| anyhow::anyhow!("shared cluster lock poisoned"))?;
    let cluster = guard
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("shared cluster stopped"))?;
    let name = format!(
        "{prefix}_{}_{}",
        std::process::id(),
        NEXT_DB.fetch_add(1, Ordering::SeqCst)
    );
    cluster.create_database(&name)?;
    Ok(cluster.url(&name))
}
