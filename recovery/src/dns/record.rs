//! The DNS record model shared by the providers: record types, plain values or an alias
//! target, weighted routing, parameter checks, and comparison as DNS sees records (names
//! without the trailing dot and case, values as sets).

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::steps::values::is_placeholder;

/// The record types `dns_switch` and `dns_check` handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RecordType {
    /// IPv4 addresses.
    A,
    /// IPv6 addresses.
    Aaaa,
    /// One canonical name.
    Cname,
}

impl RecordType {
    /// Parses `A`, `AAAA` or `CNAME` (any case); the error names `key` and the known types.
    pub fn parse(key: &str, value: &str) -> Result<Self, String> {
        match value.trim().to_ascii_uppercase().as_str() {
            "A" => Ok(Self::A),
            "AAAA" => Ok(Self::Aaaa),
            "CNAME" => Ok(Self::Cname),
            _ => Err(format!(
                "{key}: unsupported record type `{value}` (expected A, AAAA or CNAME)"
            )),
        }
    }
    /// The type's name as DNS spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::A => "A",
            Self::Aaaa => "AAAA",
            Self::Cname => "CNAME",
        }
    }
}

impl fmt::Display for RecordType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A Route53 alias target (the seed plan's `AliasTarget`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AliasTarget {
    /// Hosted zone id of the target (e.g. a load balancer's zone, `Z2EXAMPLE`).
    pub hosted_zone_id: String,
    /// DNS name of the target, e.g. `api-dr.example.com`.
    pub dns_name: String,
    /// Whether Route53 checks the target's health before answering with it.
    #[serde(default)]
    pub evaluate_target_health: bool,
}

/// What a record answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordData {
    /// Plain values: addresses, or one CNAME target.
    Values {
        /// Addresses (A/AAAA) or the one CNAME target.
        values: Vec<String>,
        /// Time to live in seconds.
        ttl: i64,
    },
    /// A Route53 alias to another name.
    Alias(AliasTarget),
}

/// One DNS record set: a name, a type, what it answers with and (for weighted records) its
/// routing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Record name, e.g. `api.example.com` (as given; compare with [`same_name`]).
    pub name: String,
    /// Record type.
    pub rtype: RecordType,
    /// Values or alias target.
    pub data: RecordData,
    /// Identifies one record of a weighted set.
    pub set_identifier: Option<String>,
    /// Weight of this record in its weighted set (0–255).
    pub weight: Option<i64>,
}

/// A record name as DNS compares it: trimmed, lower case, no trailing dot, Route53's `\052`
/// escape turned back into `*`.
pub fn normalize_name(name: &str) -> String {
    name.trim()
        .trim_end_matches('.')
        .replace("\\052", "*")
        .to_ascii_lowercase()
}

/// Whether two record names are the same name.
pub fn same_name(a: &str, b: &str) -> bool {
    normalize_name(a) == normalize_name(b)
}

/// Checks a record name: non-empty, no spaces, labels of at most 63 characters.
pub fn check_name(key: &str, name: &str) -> Result<(), String> {
    if is_placeholder(name) {
        return Ok(());
    }
    let n = normalize_name(name);
    if n.is_empty() {
        return Err(format!("{key}: must be a DNS name, e.g. `api.example.com`"));
    }
    if n.len() > 253
        || n.split('.').any(|l| l.is_empty() || l.len() > 63)
        || n.chars()
            .any(|c| c.is_whitespace() || c == '/' || c == '\\')
    {
        return Err(format!("{key}: `{name}` is not a valid DNS name"));
    }
    Ok(())
}

/// Checks the values of a plain record: at least one, addresses of the right family for
/// A/AAAA, exactly one name for CNAME. Values holding `{placeholders}` pass.
pub fn check_values(key: &str, rtype: RecordType, values: &[String]) -> Result<(), String> {
    if values.is_empty() {
        return Err(format!("{key}: needs at least one value"));
    }
    for (i, v) in values.iter().enumerate() {
        if is_placeholder(v) {
            continue;
        }
        let ok = match rtype {
            RecordType::A => v.trim().parse::<Ipv4Addr>().is_ok(),
            RecordType::Aaaa => v.trim().parse::<Ipv6Addr>().is_ok(),
            RecordType::Cname => check_name(key, v).is_ok(),
        };
        if !ok {
            let what = match rtype {
                RecordType::A => "an IPv4 address",
                RecordType::Aaaa => "an IPv6 address",
                RecordType::Cname => "a DNS name",
            };
            return Err(format!("{key}[{i}]: `{v}` is not {what}"));
        }
    }
    if rtype == RecordType::Cname && values.len() != 1 {
        return Err(format!(
            "{key}: a CNAME record has exactly one target, got {}",
            values.len()
        ));
    }
    Ok(())
}

/// Checks weighted routing: `set_identifier` and `weight` come together, weight 0–255.
pub fn check_routing(set_identifier: &Option<String>, weight: Option<i64>) -> Result<(), String> {
    match (set_identifier, weight) {
        (None, None) => Ok(()),
        (Some(id), Some(w)) => {
            if id.trim().is_empty() {
                return Err("set_identifier: must not be empty".into());
            }
            if !(0..=255).contains(&w) {
                return Err(format!("weight: {w} is out of range (0 to 255)"));
            }
            Ok(())
        }
        (Some(_), None) => Err("set_identifier: needs `weight` (a weighted record)".into()),
        (None, Some(_)) => {
            Err("weight: needs `set_identifier` (which record of the weighted set)".into())
        }
    }
}

/// One value as DNS compares it: addresses in canonical form, names normalized.
fn canonical_value(rtype: RecordType, v: &str) -> String {
    match rtype {
        RecordType::A | RecordType::Aaaa => v
            .trim()
            .parse::<IpAddr>()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| v.trim().to_string()),
        RecordType::Cname => normalize_name(v),
    }
}

impl RecordData {
    /// The values or alias target in one short phrase: `10.0.2.10, 10.0.2.11` or
    /// `alias api-dr.example.com (zone Z2EXAMPLE)`.
    pub fn describe(&self) -> String {
        match self {
            Self::Values { values, .. } => values.join(", "),
            Self::Alias(a) => format!(
                "alias {} (zone {})",
                a.dns_name.trim_end_matches('.'),
                a.hosted_zone_id
            ),
        }
    }
}

impl Record {
    /// `api.example.com A` (with `[set_identifier]` for a weighted record).
    pub fn key(&self) -> String {
        let mut s = format!("{} {}", normalize_name(&self.name), self.rtype);
        if let Some(id) = &self.set_identifier {
            s.push_str(&format!(" [{id}]"));
        }
        s
    }
    /// Whether `self` and `other` are the same record with the same answer: names and types
    /// equal, values equal as sets, same TTL, alias target and routing.
    pub fn same_as(&self, other: &Record) -> bool {
        if !same_name(&self.name, &other.name)
            || self.rtype != other.rtype
            || self.set_identifier != other.set_identifier
            || self.weight != other.weight
        {
            return false;
        }
        match (&self.data, &other.data) {
            (
                RecordData::Values { values: a, ttl: ta },
                RecordData::Values { values: b, ttl: tb },
            ) => {
                let set = |v: &[String]| {
                    let mut v: Vec<String> =
                        v.iter().map(|x| canonical_value(self.rtype, x)).collect();
                    v.sort();
                    v.dedup();
                    v
                };
                ta == tb && set(a) == set(b)
            }
            (RecordData::Alias(a), RecordData::Alias(b)) => {
                a.hosted_zone_id.trim() == b.hosted_zone_id.trim()
                    && same_name(&a.dns_name, &b.dns_name)
                    && a.evaluate_target_health == b.evaluate_target_health
            }
            _ => false,
        }
    }
    /// The record's values as structured evidence for step output.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = match &self.data {
            RecordData::Values { values, ttl } => json!({ "values": values, "ttl": ttl }),
            RecordData::Alias(a) => json!({ "alias": a }),
        };
        if let Some(id) = &self.set_identifier {
            v["set_identifier"] = json!(id);
        }
        if let Some(w) = self.weight {
            v["weight"] = json!(w);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(values: &[&str], ttl: i64) -> Record {
        Record {
            name: "api.example.com".into(),
            rtype: RecordType::A,
            data: RecordData::Values {
                values: values.iter().map(|v| v.to_string()).collect(),
                ttl,
            },
            set_identifier: None,
            weight: None,
        }
    }

    #[test]
    fn names_compare_as_dns_does() {
        assert!(same_name("API.example.com.", "api.example.com"));
        assert!(same_name("\\052.example.com.", "*.example.com"));
        assert!(!same_name("api.example.com", "api2.example.com"));
        assert!(check_name("name", "api.example.com").is_ok());
        assert!(check_name("name", "{region}.example.com").is_ok());
        assert_eq!(
            check_name("name", "api..example.com").unwrap_err(),
            "name: `api..example.com` is not a valid DNS name"
        );
        assert!(check_name("name", " ").is_err());
    }

    #[test]
    fn values_are_checked_by_type() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(check_values("values", RecordType::A, &v(&["10.0.0.1", "{ip}"])).is_ok());
        assert_eq!(
            check_values("values", RecordType::A, &v(&["10.0.0.1", "::1"])).unwrap_err(),
            "values[1]: `::1` is not an IPv4 address"
        );
        assert!(check_values("values", RecordType::Aaaa, &v(&["2001:db8::1"])).is_ok());
        assert_eq!(
            check_values(
                "values",
                RecordType::Cname,
                &v(&["a.example.com", "b.example.com"])
            )
            .unwrap_err(),
            "values: a CNAME record has exactly one target, got 2"
        );
        assert_eq!(
            check_values("values", RecordType::A, &[]).unwrap_err(),
            "values: needs at least one value"
        );
        assert_eq!(
            RecordType::parse("type", "mx").unwrap_err(),
            "type: unsupported record type `mx` (expected A, AAAA or CNAME)"
        );
        assert_eq!(RecordType::parse("type", "aaaa").unwrap(), RecordType::Aaaa);
    }

    #[test]
    fn routing_needs_both_halves() {
        assert!(check_routing(&None, None).is_ok());
        assert!(check_routing(&Some("dr".into()), Some(10)).is_ok());
        assert!(check_routing(&Some("dr".into()), None).is_err());
        assert!(check_routing(&None, Some(1)).is_err());
        assert_eq!(
            check_routing(&Some("dr".into()), Some(256)).unwrap_err(),
            "weight: 256 is out of range (0 to 255)"
        );
    }

    #[test]
    fn records_compare_as_sets() {
        assert!(rec(&["10.0.0.1", "10.0.0.2"], 60).same_as(&rec(&["10.0.0.2", "10.0.0.1"], 60)));
        assert!(!rec(&["10.0.0.1"], 60).same_as(&rec(&["10.0.0.1"], 300)));
        assert!(!rec(&["10.0.0.1"], 60).same_as(&rec(&["10.0.0.3"], 60)));
        let alias = |name: &str| Record {
            data: RecordData::Alias(AliasTarget {
                hosted_zone_id: "Z2EXAMPLE".into(),
                dns_name: name.into(),
                evaluate_target_health: true,
            }),
            ..rec(&[], 0)
        };
        assert!(alias("api-dr.example.com").same_as(&alias("API-DR.example.com.")));
        assert!(!alias("api-dr.example.com").same_as(&rec(&["10.0.0.1"], 60)));
        assert_eq!(
            alias("api-dr.example.com.").data.describe(),
            "alias api-dr.example.com (zone Z2EXAMPLE)"
        );
    }
}
