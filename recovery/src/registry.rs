//! The step types drbot knows, by name; later providers (PostgreSQL, Kubernetes, DNS,
//! notifications) register here.

use std::{collections::BTreeMap, sync::Arc};

use crate::{resources::Resources, step::Step};

/// Safety traits of a step type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepTraits {
    /// Changes production: needs approval before it runs, skipped in dry runs.
    pub destructive: bool,
    /// Running it twice is harmless: an interrupted attempt is simply re-run on resume.
    pub idempotent: bool,
    /// Whether a runbook may override the two flags above (e.g. `exec` runs anything).
    pub overridable: bool,
}

/// A step type: validates parameters and builds runnable steps.
pub trait StepKind: Send + Sync {
    /// Name used in runbooks' `type`.
    fn name(&self) -> &'static str;
    /// Default safety traits.
    fn traits(&self) -> StepTraits;
    /// Checks parameters (placeholders still unresolved are fine where strings are expected).
    fn validate(&self, params: &serde_json::Value) -> Result<(), String>;
    /// Builds a runnable step from resolved parameters.
    fn build(&self, params: &serde_json::Value) -> Result<Box<dyn Step>, String>;
    /// PostgreSQL programs this step type runs from its clusters' `bin_dir` (checked by
    /// `check-config`).
    fn tools(&self) -> &'static [&'static str] {
        &[]
    }
}

/// Step types by name.
#[derive(Clone, Default)]
pub struct Registry {
    kinds: BTreeMap<&'static str, Arc<dyn StepKind>>,
    resources: Arc<Resources>,
}

impl Registry {
    /// The built-in step types, with no clusters or backup stores configured.
    pub fn builtin() -> Self {
        Self::with_resources(Arc::new(Resources::default()))
    }
    /// The built-in step types; providers that act on named clusters or stores get them
    /// from `resources`.
    pub fn with_resources(resources: Arc<Resources>) -> Self {
        let mut r = Self {
            resources: resources.clone(),
            ..Self::default()
        };
        r.register(Arc::new(crate::steps::exec::ExecKind));
        r.register(Arc::new(crate::steps::http_check::HttpCheckKind));
        r.register(Arc::new(crate::steps::backup_create::BackupCreateKind(
            resources.clone(),
        )));
        r.register(Arc::new(crate::steps::backup_fetch::BackupFetchKind(
            resources.clone(),
        )));
        r.register(Arc::new(crate::steps::verify_backup::VerifyBackupKind(
            resources.clone(),
        )));
        r.register(Arc::new(
            crate::steps::wal_archive_check::WalArchiveCheckKind(resources.clone()),
        ));
        r.register(Arc::new(crate::steps::pg_sessions::ActiveTransactionsKind(
            resources.clone(),
        )));
        r.register(Arc::new(crate::steps::pg_sessions::TerminateBackendsKind(
            resources.clone(),
        )));
        r.register(Arc::new(crate::steps::pg_basebackup::BaseBackupKind(
            resources.clone(),
        )));
        r.register(Arc::new(crate::steps::pg_pitr::PitrKind(resources.clone())));
        r.register(Arc::new(crate::steps::pg_verify::VerifyKind(
            resources.clone(),
        )));
        r.register(Arc::new(
            crate::steps::pg_replication::ReplicationCheckKind(resources.clone()),
        ));
        r.register(Arc::new(crate::steps::pg_fence::FenceKind(
            resources.clone(),
        )));
        r.register(Arc::new(crate::steps::pg_promote::PromoteKind(
            resources.clone(),
        )));
        r.register(Arc::new(
            crate::steps::pg_rebuild_replica::RebuildReplicaKind(resources.clone()),
        ));
        r.register(Arc::new(crate::steps::pg_switchover::SwitchoverKind(
            resources.clone(),
        )));
        r.register(Arc::new(crate::steps::dns_switch::DnsSwitchKind(
            resources.clone(),
        )));
        r.register(Arc::new(crate::steps::dns_check::DnsCheckKind(
            resources.clone(),
        )));
        r.register(Arc::new(crate::steps::k8s_scale::ScaleKind(
            resources.clone(),
        )));
        r.register(Arc::new(crate::steps::k8s_status::StatusKind(
            resources.clone(),
        )));
        r.register(Arc::new(crate::steps::drill_disaster::DisasterKind(
            resources.clone(),
        )));
        r.register(Arc::new(crate::steps::drill_measure::MeasureKind(
            resources.clone(),
        )));
        r.register(Arc::new(crate::steps::redis_check::RedisCheckKind(
            resources.clone(),
        )));
        r.register(Arc::new(crate::steps::redis_promote::RedisPromoteKind(
            resources.clone(),
        )));
        r.register(Arc::new(crate::steps::redis_replicate::RedisReplicateKind(
            resources.clone(),
        )));
        r
    }
    /// Adds (or replaces) a step type.
    pub fn register(&mut self, kind: Arc<dyn StepKind>) {
        self.kinds.insert(kind.name(), kind);
    }
    /// The clusters and stores steps may name.
    pub fn resources(&self) -> &Resources {
        &self.resources
    }
    /// Looks a step type up.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn StepKind>> {
        self.kinds.get(name)
    }
    /// Known names, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        self.kinds.keys().copied().collect()
    }
}

/// Deserializes step parameters, naming the offending key in the error.
pub fn params<T: serde::de::DeserializeOwned>(value: &serde_json::Value) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        if path == "." || path.is_empty() {
            e.inner().to_string()
        } else {
            format!("{path}: {}", e.inner())
        }
    })
}
