//! Helpers shared by the PITR and corruption-recovery tests: a `[postgres.<name>]` definition
//! for a testkit cluster, a step context, and running a step type by name.

#![allow(dead_code)]

use std::{path::PathBuf, sync::Arc};

use recovery::{
    registry::Registry,
    resources::{PgClusterDef, Resources},
    secret::Secret,
    step::{ProgressSink, StepContext, StepError, StepOutput},
    testkit::pg::PgCluster,
};
use tokio_util::sync::CancellationToken;

/// The `[postgres.<name>]` entry for a testkit cluster (runs as `postgres` when we are root).
pub fn cluster_def(pg: &PgCluster) -> PgClusterDef {
    PgClusterDef {
        url: Secret::new(pg.url("postgres")),
        bin_dir: Some(PgCluster::bin_dir().unwrap()),
        data_dir: Some(pg.data_dir().to_path_buf()),
        os_user: os_user(),
    }
}

/// `Some("postgres")` when running as root, as the testkit does.
pub fn os_user() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    (unsafe { libc::geteuid() } == 0).then(|| "postgres".to_string())
}

/// A context whose progress lines are dropped.
pub fn ctx() -> StepContext {
    StepContext {
        run_id: 1,
        step_index: 0,
        attempt: 1,
        vars: Default::default(),
        progress: ProgressSink::none(),
        cancel: CancellationToken::new(),
        ..Default::default()
    }
}

/// Validates, builds and runs step type `kind` with `params` against `resources`.
pub async fn run_step(
    resources: &Resources,
    kind: &str,
    params: serde_json::Value,
) -> Result<StepOutput, StepError> {
    run_in(resources, kind, params, ctx()).await
}

/// [`run_step`], its progress lines sent to `progress`.
pub async fn run_step_with_progress(
    resources: &Resources,
    kind: &str,
    params: serde_json::Value,
    progress: tokio::sync::mpsc::UnboundedSender<String>,
) -> Result<StepOutput, StepError> {
    let ctx = StepContext {
        progress: ProgressSink::new(progress),
        ..ctx()
    };
    run_in(resources, kind, params, ctx).await
}

async fn run_in(
    resources: &Resources,
    kind: &str,
    params: serde_json::Value,
    ctx: StepContext,
) -> Result<StepOutput, StepError> {
    let registry = Registry::with_resources(Arc::new(resources.clone()));
    let k = registry
        .get(kind)
        .unwrap_or_else(|| panic!("no step type {kind}"));
    k.validate(&params)
        .unwrap_or_else(|e| panic!("{kind} rejected {params}: {e}"));
    let step = k.build(&params).unwrap_or_else(|e| panic!("{kind}: {e}"));
    step.run(&ctx).await
}

/// Resources with one cluster called `name`.
pub fn with_cluster(name: &str, pg: &PgCluster) -> Resources {
    let mut r = Resources::default();
    r.postgres.insert(name.into(), cluster_def(pg));
    r
}

/// A fresh empty directory under /tmp owned by the cluster owner (mode 700), removed on drop.
pub fn owned_temp_dir(prefix: &str) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    if os_user().is_some() {
        let status = std::process::Command::new("chown")
            .args(["postgres:postgres"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success());
    }
    dir
}

/// Path as `String` for JSON params.
pub fn s(p: impl Into<PathBuf>) -> String {
    p.into().display().to_string()
}
