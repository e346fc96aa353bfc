//! Named things steps act on, from the `[postgres.<name>]`, `[backups.<name>]`,
//! `[kubernetes.<name>]`, `[dns.<name>]` and `[redis.<name>]` config sections: PostgreSQL
//! clusters (connection, tool paths, data directory), backup stores, Kubernetes clusters, DNS
//! zones and Redis servers.
//! Steps name them in their parameters (`cluster = "{region}"`, `store = "default"`), so a
//! plan preview says exactly which cluster each step touches without showing any password.

use std::{collections::BTreeMap, path::PathBuf};

use serde::Deserialize;

use crate::secret::Secret;

mod infra;
pub use infra::{DnsFileFormat, DnsZoneDef, KubeClusterDef, RedisDef};

/// Everything steps may refer to by name.
#[derive(Debug, Clone, Default)]
pub struct Resources {
    /// PostgreSQL clusters by name (by convention, a region's cluster is named after it).
    pub postgres: BTreeMap<String, PgClusterDef>,
    /// Backup stores by name (`default` is used when a step names none).
    pub backups: BTreeMap<String, BackupStoreDef>,
    /// Kubernetes clusters by name (steps name them with `kube = "{region}"`).
    pub kubernetes: BTreeMap<String, KubeClusterDef>,
    /// DNS zones by name (steps name them with `zone = "..."`).
    pub dns: BTreeMap<String, DnsZoneDef>,
    /// Redis servers by name (steps name them with `redis = "{region}"`).
    pub redis: BTreeMap<String, RedisDef>,
}

/// `[postgres.<name>]`: one PostgreSQL cluster.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PgClusterDef {
    /// Connection URL of a superuser-capable role, e.g.
    /// `postgres://postgres:${PG_PASSWORD}@dr-db:5432/postgres`. Never shown or logged.
    pub url: Secret,
    /// Directory holding `psql`, `pg_dump`, `pg_restore`, `pg_basebackup`, `pg_rewind`,
    /// `pg_ctl` for this cluster's major version. Default: found on `PATH`.
    #[serde(default)]
    pub bin_dir: Option<PathBuf>,
    /// The cluster's data directory, for steps that run server-side tools on this host
    /// (`pg_ctl`, `pg_rewind`, `pg_basebackup` targets).
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// Operating-system user that owns `data_dir` and runs the server-side tools
    /// (PostgreSQL refuses to run as root). Default: the user drbot runs as.
    #[serde(default)]
    pub os_user: Option<String>,
}

/// `[backups.<name>]`: where backups and their manifests live.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "snake_case")]
pub enum BackupStoreDef {
    /// A local (or mounted) directory.
    Local {
        /// The directory; created when missing.
        path: PathBuf,
    },
    /// S3 or an S3-compatible service (MinIO). Credentials come from the standard AWS chain.
    S3 {
        /// Bucket name.
        bucket: String,
        /// Key prefix inside the bucket, e.g. `backups/`.
        #[serde(default)]
        prefix: String,
        /// AWS region of the bucket.
        #[serde(default)]
        region: Option<String>,
        /// Endpoint override (MinIO, moto, other S3-compatible services).
        #[serde(default)]
        endpoint: Option<String>,
    },
}

/// Step parameters that name a `[postgres.<name>]` cluster.
const CLUSTER_KEYS: &[&str] = &["cluster", "primary", "replica", "source", "target_cluster"];

impl Resources {
    /// What a step with these (resolved) parameters acts on, one line each, for plan previews:
    /// `replica us-west-2 (dr-db:5432/postgres)`, `store default (local /var/backups)`.
    pub fn describe(&self, params: &serde_json::Value) -> Vec<String> {
        let mut out = Vec::new();
        self.each_named(params, &mut |label, name, display, _| {
            out.push(format!("{label} {name} ({display})"));
        });
        out
    }

    /// Everything the definitions a step names are, credentials aside (hex SHA-256 of each
    /// one's display and fields, a `Secret` reading as `[redacted]`); empty when it names
    /// none. Recorded in the plan, and checked again before the step runs: a config changed
    /// since approval never points an approved step at another cluster, data directory,
    /// bucket, context, zone or server. A rotated password changes nothing.
    pub fn identity(&self, params: &serde_json::Value) -> String {
        use sha2::{Digest, Sha256};
        let mut text = String::new();
        self.each_named(params, &mut |label, name, display, fields| {
            text.push_str(&format!("{label} {name} ({display}) {fields}\n"));
        });
        if text.is_empty() {
            return text;
        }
        hex::encode(Sha256::digest(text.as_bytes()))
    }

    /// Calls `f(label, name, display, fields)` for each definition `params` names, in a fixed
    /// order (`fields`: the definition's `Debug`, credentials redacted).
    fn each_named(
        &self,
        params: &serde_json::Value,
        f: &mut dyn FnMut(&str, &str, String, String),
    ) {
        let named = |key: &str| params.get(key).and_then(|v| v.as_str());
        for key in CLUSTER_KEYS {
            if let Some(name) = named(key)
                && let Some(def) = self.postgres.get(name)
            {
                f(key, name, def.display(), format!("{def:?}"));
            }
        }
        if let Some(name) = named("store")
            && let Some(def) = self.backups.get(name)
        {
            f("store", name, def.display(), format!("{def:?}"));
        }
        if let Some(name) = named("kube")
            && let Some(def) = self.kubernetes.get(name)
        {
            f("kubernetes", name, def.display(), format!("{def:?}"));
        }
        if let Some(name) = named("zone")
            && let Some(def) = self.dns.get(name)
        {
            f("dns", name, def.display(), format!("{def:?}"));
        }
        for key in ["redis", "primary_redis", "master"] {
            if let Some(name) = named(key)
                && let Some(def) = self.redis.get(name)
            {
                f(key, name, def.display(), format!("{def:?}"));
            }
        }
    }
}

impl BackupStoreDef {
    /// Where the store is, for plans and logs.
    pub fn display(&self) -> String {
        match self {
            Self::Local { path } => format!("local {}", path.display()),
            Self::S3 { bucket, prefix, .. } => format!("s3://{bucket}/{prefix}"),
        }
    }
}

impl PgClusterDef {
    /// `host:port/dbname` of the URL without user or password, for plans and logs.
    pub fn display(&self) -> String {
        let url = self.url.expose();
        let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
        let rest = rest.rsplit_once('@').map(|(_, r)| r).unwrap_or(rest);
        rest.split('?').next().unwrap_or(rest).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_never_shows_credentials() {
        let def = PgClusterDef {
            url: Secret::new("postgres://postgres:hunter2@dr-db:5432/app?sslmode=require"),
            bin_dir: None,
            data_dir: None,
            os_user: None,
        };
        assert_eq!(def.display(), "dr-db:5432/app");
        let mut r = Resources::default();
        r.postgres.insert("us-west-2".into(), def);
        r.backups.insert(
            "default".into(),
            BackupStoreDef::Local {
                path: "/var/backups".into(),
            },
        );
        let params =
            serde_json::json!({ "replica": "us-west-2", "primary": "gone", "store": "default" });
        assert_eq!(
            r.describe(&params),
            [
                "replica us-west-2 (dr-db:5432/app)",
                "store default (local /var/backups)"
            ]
        );
    }
}
