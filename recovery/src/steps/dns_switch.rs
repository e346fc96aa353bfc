//! `dns_switch` step (destructive, idempotent): points a DNS record at new values or an alias
//! target with one UPSERT, waits until the change is applied, reads the record back and
//! records what it was before, so a failback can switch it back.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;

use super::values::{duration, is_placeholder};
use crate::{
    dns::{
        self, Timing, Zone,
        file::FileZone,
        record::{
            AliasTarget, Record, RecordData, RecordType, check_name, check_routing, check_values,
        },
    },
    registry::{StepKind, StepTraits, params},
    resources::{DnsZoneDef, Resources},
    step::{Step, StepContext, StepError, StepOutput},
};

/// Parameters of a `dns_switch` step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsSwitchParams {
    /// The `[dns.<name>]` zone the record is in.
    pub zone: String,
    /// Record name, e.g. `api.example.com`.
    pub name: String,
    /// Record type: `A`, `AAAA` or `CNAME`.
    #[serde(rename = "type")]
    pub rtype: String,
    /// New values: addresses (A/AAAA) or the one CNAME target. Either this or `alias`.
    #[serde(default)]
    pub values: Option<Vec<String>>,
    /// Time to live of `values` in seconds (default 60). Not allowed with `alias`.
    #[serde(default)]
    pub ttl: Option<i64>,
    /// A Route53 alias target instead of `values` (the seed plan's `AliasTarget`).
    #[serde(default)]
    pub alias: Option<AliasTarget>,
    /// For a weighted record: which member of the weighted set (needs `weight`).
    #[serde(default)]
    pub set_identifier: Option<String>,
    /// For a weighted record: its weight, 0–255 (needs `set_identifier`).
    #[serde(default)]
    pub weight: Option<i64>,
    /// How long to wait for the change to be in sync, e.g. `"5m"` (the default).
    #[serde(default = "default_wait")]
    pub wait: String,
    /// Time between two status checks, e.g. `"2s"` (the default).
    #[serde(default = "default_poll")]
    pub poll: String,
    /// Comment stored with the change (default: the run and step).
    #[serde(default)]
    pub comment: Option<String>,
}

fn default_wait() -> String {
    "5m".into()
}

fn default_poll() -> String {
    "2s".into()
}

/// Default TTL of a record set with `values`.
pub const DEFAULT_TTL: i64 = 60;

/// The record type, unless it still holds a placeholder.
pub(crate) fn record_type(value: &str) -> Result<Option<RecordType>, String> {
    if is_placeholder(value) {
        return Ok(None);
    }
    RecordType::parse("type", value).map(Some)
}

/// Checks a positive duration parameter.
pub(crate) fn positive(key: &str, value: &str) -> Result<Option<Duration>, String> {
    if is_placeholder(value) {
        return Ok(None);
    }
    let d = duration(key, value)?;
    if d.is_zero() {
        return Err(format!("{key}: must be more than zero"));
    }
    Ok(Some(d))
}

/// The `dns_switch` step type.
pub struct DnsSwitchKind(pub Arc<Resources>);

impl DnsSwitchKind {
    fn parse(&self, p: &serde_json::Value) -> Result<DnsSwitchParams, String> {
        let p: DnsSwitchParams = params(p)?;
        let zone = dns::check_zone(&self.0, "zone", &p.zone)?;
        check_name("name", &p.name)?;
        let rtype = record_type(&p.rtype)?;
        match (&p.values, &p.alias) {
            (Some(_), Some(_)) => {
                return Err("give either `values` or `alias`, not both".into());
            }
            (None, None) => {
                return Err(
                    "needs `values` (addresses or a CNAME target) or `alias` (a Route53 alias \
                     target)"
                        .into(),
                );
            }
            (Some(values), None) => {
                if let Some(t) = rtype {
                    check_values("values", t, values)?;
                }
                if let Some(ttl) = p.ttl
                    && !(0..=2_147_483_647).contains(&ttl)
                {
                    return Err(format!("ttl: {ttl} is out of range (0 to 2147483647)"));
                }
            }
            (None, Some(alias)) => {
                if p.ttl.is_some() {
                    return Err(
                        "ttl: an alias record has no TTL of its own (Route53 uses the target's)"
                            .into(),
                    );
                }
                if alias.hosted_zone_id.trim().is_empty() {
                    return Err("alias.hosted_zone_id: must not be empty".into());
                }
                check_name("alias.dns_name", &alias.dns_name)?;
            }
        }
        check_routing(&p.set_identifier, p.weight)?;
        positive("wait", &p.wait)?;
        positive("poll", &p.poll)?;
        if let (Some(DnsZoneDef::File { format, .. }), Some(t)) = (zone, rtype) {
            FileZone::supports(*format, t, p.alias.is_some(), p.set_identifier.is_some())
                .map_err(|e| format!("{e} (zone `{}` is a file)", p.zone))?;
        }
        Ok(p)
    }
}

impl StepKind for DnsSwitchKind {
    fn name(&self) -> &'static str {
        "dns_switch"
    }
    fn traits(&self) -> StepTraits {
        StepTraits {
            destructive: true,
            idempotent: true,
            overridable: false,
        }
    }
    fn validate(&self, p: &serde_json::Value) -> Result<(), String> {
        self.parse(p).map(|_| ())
    }
    fn build(&self, p: &serde_json::Value) -> Result<Box<dyn Step>, String> {
        let p = self.parse(p)?;
        let def = dns::zone(&self.0, &p.zone).map_err(|e| format!("zone: {e}"))?;
        let rtype = RecordType::parse("type", &p.rtype)?;
        let data = match (&p.values, &p.alias) {
            (Some(values), _) => RecordData::Values {
                values: values.iter().map(|v| v.trim().to_string()).collect(),
                ttl: p.ttl.unwrap_or(DEFAULT_TTL),
            },
            (None, Some(alias)) => RecordData::Alias(alias.clone()),
            (None, None) => return Err("needs `values` or `alias`".into()),
        };
        let record = Record {
            name: p.name.trim().to_string(),
            rtype,
            data,
            set_identifier: p.set_identifier.clone(),
            weight: p.weight,
        };
        Ok(Box::new(DnsSwitch {
            zone_name: p.zone.clone(),
            def: def.clone(),
            record,
            timing: Timing {
                wait: duration("wait", &p.wait)?,
                poll: duration("poll", &p.poll)?,
            },
            comment: p.comment,
        }))
    }
}

/// A runnable `dns_switch` step.
pub struct DnsSwitch {
    zone_name: String,
    def: DnsZoneDef,
    record: Record,
    timing: Timing,
    comment: Option<String>,
}

/// `10.0.2.10` or `no record`.
fn describe(r: Option<&Record>) -> String {
    r.map(|r| r.data.describe())
        .unwrap_or_else(|| "no record".into())
}

/// Whether `found` is `wanted`, ignoring the TTL when the zone stores none.
fn matches(wanted: &Record, found: &Record, keeps_ttl: bool) -> bool {
    if keeps_ttl {
        return wanted.same_as(found);
    }
    let mut w = wanted.clone();
    if let (RecordData::Values { ttl: a, .. }, RecordData::Values { ttl: b, .. }) =
        (&mut w.data, &found.data)
    {
        *a = *b;
    }
    w.same_as(found)
}

#[async_trait]
impl Step for DnsSwitch {
    async fn run(&self, ctx: &StepContext) -> Result<StepOutput, StepError> {
        let rec = &self.record;
        let key = rec.key();
        let set_id = rec.set_identifier.as_deref();
        let zone = Zone::open(&self.def).await;
        let previous = zone.read(&rec.name, rec.rtype, set_id, ctx).await?;
        ctx.progress.line(format!(
            "{key} in {} is {}; setting {}",
            self.def.display(),
            describe(previous.as_ref()),
            rec.data.describe()
        ));
        let comment = self.comment.clone().unwrap_or_else(|| {
            format!(
                "drbot run {} step {} ({key})",
                ctx.run_id,
                ctx.step_index + 1
            )
        });
        let applied = zone
            .upsert(rec, &comment, self.timing, ctx)
            .await
            .map_err(|e| {
                let log = format!("previous value of {key}: {}", describe(previous.as_ref()));
                e.with_log(log)
            })?;
        let found = zone.read(&rec.name, rec.rtype, set_id, ctx).await?;
        let change = applied.change_id.as_deref().unwrap_or("-");
        match &found {
            Some(f) if matches(rec, f, zone.keeps_ttl()) => {}
            Some(f) => {
                return Err(StepError::fatal(format!(
                    "after change {change} ({}), {key} is {} (ttl {}), not {}",
                    applied.status,
                    f.data.describe(),
                    ttl_of(f),
                    rec.data.describe()
                )));
            }
            None => {
                return Err(StepError::fatal(format!(
                    "after change {change} ({}), {key} does not exist in {}",
                    applied.status,
                    self.def.display()
                )));
            }
        }
        let was = match &previous {
            None => "was: no record".to_string(),
            Some(p) if matches(rec, p, zone.keeps_ttl()) => "unchanged".to_string(),
            Some(p) => format!("was {}", p.data.describe()),
        };
        let secs = applied.elapsed.as_secs_f64();
        let summary = format!(
            "{} {}{} → {} ({was}), {} in {secs:.1}s",
            rec.name,
            rec.rtype,
            rec.set_identifier
                .as_deref()
                .map(|id| format!(" [{id}]"))
                .unwrap_or_default(),
            rec.data.describe(),
            applied.status,
        );
        Ok(StepOutput {
            summary,
            log: String::new(),
            data: json!({
                "zone": self.zone_name,
                "where": self.def.display(),
                "name": rec.name,
                "type": rec.rtype.as_str(),
                "previous": previous.as_ref().map(Record::to_json),
                "new": rec.to_json(),
                "change_id": applied.change_id,
                "status": applied.status,
                "elapsed_ms": applied.elapsed.as_millis() as u64,
            }),
        })
    }
}

/// The TTL of a plain record, `-` for an alias.
fn ttl_of(r: &Record) -> String {
    match &r.data {
        RecordData::Values { ttl, .. } => ttl.to_string(),
        RecordData::Alias(_) => "-".into(),
    }
}
