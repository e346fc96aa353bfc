//! DNS zones that steps read and change records in, from `[dns.<name>]` entries: Route53
//! ([`route53`]) or a local record file ([`file`]), over one [`record`] model.
//!
//! A change is an UPSERT (idempotent); Route53 changes are waited for until `INSYNC`.

pub mod file;
pub mod record;
pub mod route53;

use std::time::{Duration, Instant};

use record::{Record, RecordType};

use crate::{
    resources::{DnsZoneDef, Resources},
    step::{StepContext, StepError},
    steps::values::is_placeholder,
};

/// The zone called `name`, or an error naming the known ones.
pub fn zone<'a>(resources: &'a Resources, name: &str) -> Result<&'a DnsZoneDef, String> {
    resources.dns.get(name).ok_or_else(|| {
        let known: Vec<&str> = resources.dns.keys().map(String::as_str).collect();
        if known.is_empty() {
            format!("unknown DNS zone `{name}` (no [dns.<name>] is configured)")
        } else {
            format!("unknown DNS zone `{name}` (known: {})", known.join(", "))
        }
    })
}

/// For `StepKind::validate`: `name` must be a configured zone, unless it still holds an
/// unresolved `{placeholder}` (then `None`: checked again once the plan is resolved). `field`
/// prefixes the error.
pub fn check_zone<'a>(
    resources: &'a Resources,
    field: &str,
    name: &str,
) -> Result<Option<&'a DnsZoneDef>, String> {
    if is_placeholder(name) {
        return Ok(None);
    }
    if name.trim().is_empty() {
        return Err(format!("{field}: must name a [dns.<name>] zone"));
    }
    zone(resources, name)
        .map(Some)
        .map_err(|e| format!("{field}: {e}"))
}

/// How long to wait for a change to be applied, and how often to ask.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Give up (retryable) when the change is not applied after this long.
    pub wait: Duration,
    /// Time between two status checks.
    pub poll: Duration,
}

/// A change that was applied.
#[derive(Debug, Clone)]
pub struct Applied {
    /// Route53's change id (`C123…`), `None` for a record file.
    pub change_id: Option<String>,
    /// Final status: `INSYNC`, or `WRITTEN` for a record file.
    pub status: String,
    /// From submitting the change until it was applied.
    pub elapsed: Duration,
}

/// An opened DNS zone.
pub enum Zone {
    /// A Route53 hosted zone.
    Route53(route53::Route53Zone),
    /// A local record file.
    File(file::FileZone),
}

impl Zone {
    /// Opens the zone a config entry describes (Route53 credentials from the standard AWS
    /// chain; nothing is sent yet).
    pub async fn open(def: &DnsZoneDef) -> Self {
        match def {
            DnsZoneDef::Route53 {
                hosted_zone_id,
                region,
                endpoint,
            } => Self::Route53(
                route53::Route53Zone::connect(
                    hosted_zone_id,
                    region.as_deref(),
                    endpoint.as_deref(),
                )
                .await,
            ),
            DnsZoneDef::File { path, format } => Self::File(file::FileZone::new(path, *format)),
        }
    }

    /// Whether the zone stores TTLs (a hosts file does not).
    pub fn keeps_ttl(&self) -> bool {
        match self {
            Self::Route53(_) => true,
            Self::File(f) => f.keeps_ttl(),
        }
    }

    /// The record `name`/`rtype` (of weighted set member `set_identifier`), if it exists.
    pub async fn read(
        &self,
        name: &str,
        rtype: RecordType,
        set_identifier: Option<&str>,
        ctx: &StepContext,
    ) -> Result<Option<Record>, StepError> {
        let fut = async {
            match self {
                Self::Route53(z) => z.read(name, rtype, set_identifier).await,
                Self::File(f) => f.read(name, rtype).await,
            }
        };
        tokio::select! {
            r = fut => r,
            _ = ctx.cancel.cancelled() => Err(StepError::retryable("cancelled")),
        }
    }

    /// Creates or replaces `record` and waits until the change is applied.
    pub async fn upsert(
        &self,
        record: &Record,
        comment: &str,
        timing: Timing,
        ctx: &StepContext,
    ) -> Result<Applied, StepError> {
        let started = Instant::now();
        match self {
            Self::Route53(z) => z.upsert(record, comment, timing, ctx).await,
            Self::File(f) => {
                tokio::select! {
                    r = f.upsert(record) => r?,
                    _ = ctx.cancel.cancelled() => return Err(StepError::retryable("cancelled")),
                }
                Ok(Applied {
                    change_id: None,
                    status: "WRITTEN".into(),
                    elapsed: started.elapsed(),
                })
            }
        }
    }
}
