//! Built-in step providers.

pub mod backup_create;
pub mod backup_fetch;
pub mod dns_check;
pub mod dns_switch;
pub mod drill_disaster;
pub mod drill_measure;
pub mod exec;
pub mod http_check;
pub mod k8s_scale;
pub mod k8s_status;
pub mod pg_basebackup;
pub mod pg_fence;
pub mod pg_pitr;
pub mod pg_promote;
pub mod pg_rebuild_replica;
pub mod pg_replication;
pub mod pg_sessions;
pub mod pg_switchover;
pub mod pg_verify;
pub mod redis_check;
pub mod redis_promote;
pub mod redis_replicate;
pub(crate) mod values;
pub mod verify_backup;
pub mod wal_archive_check;
