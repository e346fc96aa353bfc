//! `dns_check` step (read-only): reads one DNS record from a `[dns.<name>]` zone and reports
//! it, optionally failing (retryably) when it does not have the expected values. Placed
//! before the first destructive step it runs as preflight, so the approval card shows where
//! a name points now.

use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;

use super::dns_switch::record_type;
use crate::{
    dns::{
        self, Zone,
        record::{Record, RecordData, RecordType, check_name, same_name},
    },
    registry::{StepKind, StepTraits, params},
    resources::{DnsZoneDef, Resources},
    step::{Step, StepContext, StepError, StepOutput},
};

/// Parameters of a `dns_check` step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsCheckParams {
    /// The `[dns.<name>]` zone the record is in.
    pub zone: String,
    /// Record name, e.g. `api.example.com`.
    pub name: String,
    /// Record type: `A`, `AAAA` or `CNAME`.
    #[serde(rename = "type")]
    pub rtype: String,
    /// For a weighted record: which member of the weighted set.
    #[serde(default)]
    pub set_identifier: Option<String>,
    /// Values the record must have (compared as a set); for an alias record, its target's
    /// DNS name. Default: any value, or no record at all, passes.
    #[serde(default)]
    pub expect: Option<Vec<String>>,
}

/// The `dns_check` step type.
pub struct DnsCheckKind(pub Arc<Resources>);

impl DnsCheckKind {
    fn parse(&self, p: &serde_json::Value) -> Result<DnsCheckParams, String> {
        let p: DnsCheckParams = params(p)?;
        dns::check_zone(&self.0, "zone", &p.zone)?;
        check_name("name", &p.name)?;
        record_type(&p.rtype)?;
        if p.set_identifier
            .as_deref()
            .is_some_and(|s| s.trim().is_empty())
        {
            return Err("set_identifier: must not be empty".into());
        }
        if p.expect.as_ref().is_some_and(|e| e.is_empty()) {
            return Err("expect: needs at least one value (leave it out to accept any)".into());
        }
        Ok(p)
    }
}

impl StepKind for DnsCheckKind {
    fn name(&self) -> &'static str {
        "dns_check"
    }
    fn traits(&self) -> StepTraits {
        StepTraits {
            destructive: false,
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
        Ok(Box::new(DnsCheck {
            zone_name: p.zone.clone(),
            def: def.clone(),
            name: p.name.trim().to_string(),
            rtype: RecordType::parse("type", &p.rtype)?,
            set_identifier: p.set_identifier,
            expect: p.expect,
        }))
    }
}

/// A runnable `dns_check` step.
pub struct DnsCheck {
    zone_name: String,
    def: DnsZoneDef,
    name: String,
    rtype: RecordType,
    set_identifier: Option<String>,
    expect: Option<Vec<String>>,
}

/// Whether `record` answers with exactly `expect` (as a set; an alias by its target name).
pub fn has_values(record: &Record, expect: &[String]) -> bool {
    match &record.data {
        RecordData::Values { values, .. } => {
            let probe = Record {
                data: RecordData::Values {
                    values: expect.to_vec(),
                    ttl: 0,
                },
                ..record.clone()
            };
            let actual = Record {
                data: RecordData::Values {
                    values: values.clone(),
                    ttl: 0,
                },
                ..record.clone()
            };
            probe.same_as(&actual)
        }
        RecordData::Alias(a) => expect.len() == 1 && same_name(&expect[0], &a.dns_name),
    }
}

#[async_trait]
impl Step for DnsCheck {
    async fn run(&self, ctx: &StepContext) -> Result<StepOutput, StepError> {
        let zone = Zone::open(&self.def).await;
        let found = zone
            .read(&self.name, self.rtype, self.set_identifier.as_deref(), ctx)
            .await?;
        let key = Record {
            name: self.name.clone(),
            rtype: self.rtype,
            data: RecordData::Values {
                values: vec![],
                ttl: 0,
            },
            set_identifier: self.set_identifier.clone(),
            weight: None,
        }
        .key();
        let data = json!({
            "zone": self.zone_name,
            "where": self.def.display(),
            "name": self.name,
            "type": self.rtype.as_str(),
            "record": found.as_ref().map(Record::to_json),
        });
        let summary = match &found {
            None => format!("{key}: no record"),
            Some(r) => match &r.data {
                RecordData::Values { ttl, .. } if zone.keeps_ttl() => {
                    format!("{key} = {} (ttl {ttl})", r.data.describe())
                }
                _ => format!("{key} = {}", r.data.describe()),
            },
        };
        if let Some(expect) = &self.expect {
            let ok = found.as_ref().is_some_and(|r| has_values(r, expect));
            if !ok {
                return Err(StepError::retryable(format!(
                    "{summary}, expected {}",
                    expect.join(", ")
                )));
            }
        }
        Ok(StepOutput {
            summary,
            log: String::new(),
            data,
        })
    }
}
