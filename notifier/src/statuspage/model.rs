//! Statuspage API v1 types: the status enums, what drbot asks for (`NewIncident`,
//! `IncidentUpdate`), the JSON bodies sent, and the parts of the answers drbot reads.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The longest incident name Statuspage accepts, in characters.
pub const MAX_NAME_CHARS: usize = 255;

macro_rules! api_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vdoc])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every value, in the API's order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The API's spelling.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(format!(
                        "unknown {} {s:?} (expected one of: {})",
                        stringify!($name),
                        [$($text),+].join(", ")
                    )),
                }
            }
        }
    };
}

api_enum! {
    /// A realtime incident's status.
    IncidentStatus {
        /// Looking into it.
        Investigating = "investigating",
        /// The cause is known.
        Identified = "identified",
        /// A fix is in place; watching.
        Monitoring = "monitoring",
        /// Over.
        Resolved = "resolved",
    }
}

api_enum! {
    /// An incident's impact (sent as `impact_override`).
    Impact {
        /// No impact.
        None = "none",
        /// Minor.
        Minor = "minor",
        /// Major.
        Major = "major",
        /// Critical.
        Critical = "critical",
    }
}

api_enum! {
    /// A component's status.
    ComponentStatus {
        /// Working.
        Operational = "operational",
        /// Slow.
        DegradedPerformance = "degraded_performance",
        /// Partly down.
        PartialOutage = "partial_outage",
        /// Down.
        MajorOutage = "major_outage",
        /// Planned work.
        UnderMaintenance = "under_maintenance",
    }
}

/// A new realtime incident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewIncident {
    /// The title; cut to 255 characters (on a character boundary, ending in `…`).
    pub name: String,
    /// The initial status.
    pub status: IncidentStatus,
    /// The impact shown, instead of the one Statuspage computes from components.
    pub impact: Option<Impact>,
    /// The first update's text.
    pub body: String,
    /// Affected components and the status each is set to.
    pub components: Vec<(String, ComponentStatus)>,
    /// Whether Statuspage notifies its own subscribers.
    pub deliver_notifications: bool,
    /// drbot's idempotency key, stored in the incident's metadata so that after an ambiguous
    /// failure `find_unresolved_by_key` tells whether the incident was created.
    pub key: Option<String>,
}

/// An update to an existing incident (also used to resolve it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentUpdate {
    /// The incident's new status.
    pub status: IncidentStatus,
    /// The update's text.
    pub body: String,
    /// Components whose status changes with this update.
    pub components: Vec<(String, ComponentStatus)>,
    /// The impact shown from now on (`None`: unchanged).
    pub impact: Option<Impact>,
    /// Whether Statuspage notifies its own subscribers.
    pub deliver_notifications: bool,
    /// drbot's idempotency keys, written to the incident's metadata with the update, so that
    /// after an ambiguous failure `get_incident` tells whether the update was taken.
    pub keys: Option<UpdateKeys>,
}

/// drbot's keys of an incident update, kept in the incident's metadata: `drbot.key` (the
/// incident's, as written at its creation) and `drbot.update` (the last update's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateKeys {
    /// The incident's key (`NewIncident::key`).
    pub incident: String,
    /// This update's key.
    pub update: String,
}

/// An incident as Statuspage returns it (the fields drbot reads).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Incident {
    /// Statuspage's incident id.
    pub id: String,
    /// The title.
    pub name: String,
    /// The status, as Statuspage spells it (scheduled incidents have others).
    pub status: String,
    /// The public link, if any.
    #[serde(default)]
    pub shortlink: Option<String>,
    /// The metadata (drbot's key lives under `drbot.key`).
    #[serde(default)]
    pub metadata: Option<serde_json::Value>,
}

impl Incident {
    /// drbot's idempotency key, if this incident carries one.
    pub fn drbot_key(&self) -> Option<&str> {
        self.metadata.as_ref()?.get("drbot")?.get("key")?.as_str()
    }

    /// The key of the last update drbot posted to this incident, if any.
    pub fn drbot_update(&self) -> Option<&str> {
        self.metadata
            .as_ref()?
            .get("drbot")?
            .get("update")?
            .as_str()
    }
}

/// A component as Statuspage returns it (the fields drbot reads).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Component {
    /// Statuspage's component id.
    pub id: String,
    /// Its name.
    #[serde(default)]
    pub name: String,
    /// Its status.
    pub status: ComponentStatus,
}

/// Cuts `name` to at most `MAX_NAME_CHARS` characters, ending in `…` when cut.
pub fn truncate_name(name: &str) -> String {
    let name = name.trim();
    if name.chars().count() <= MAX_NAME_CHARS {
        return name.to_string();
    }
    let mut cut: String = name.chars().take(MAX_NAME_CHARS - 1).collect();
    cut.truncate(cut.trim_end().len());
    cut.push('…');
    cut
}

/// `{"incident": {...}}` as sent.
#[derive(Serialize)]
pub(crate) struct IncidentEnvelope<'a> {
    pub(crate) incident: WireIncident<'a>,
}

#[derive(Serialize)]
pub(crate) struct WireIncident<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    status: IncidentStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    impact_override: Option<Impact>,
    body: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    component_ids: Vec<&'a str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    components: BTreeMap<&'a str, ComponentStatus>,
    deliver_notifications: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<serde_json::Value>,
}

fn component_fields(
    components: &[(String, ComponentStatus)],
) -> (Vec<&str>, BTreeMap<&str, ComponentStatus>) {
    let ids = components.iter().map(|(id, _)| id.as_str()).collect();
    let map = components.iter().map(|(id, s)| (id.as_str(), *s)).collect();
    (ids, map)
}

impl NewIncident {
    pub(crate) fn wire(&self) -> IncidentEnvelope<'_> {
        let (component_ids, components) = component_fields(&self.components);
        IncidentEnvelope {
            incident: WireIncident {
                name: Some(truncate_name(&self.name)),
                status: self.status,
                impact_override: self.impact,
                body: &self.body,
                component_ids,
                components,
                deliver_notifications: self.deliver_notifications,
                metadata: self
                    .key
                    .as_ref()
                    .map(|k| serde_json::json!({ "drbot": { "key": k } })),
            },
        }
    }
}

impl IncidentUpdate {
    pub(crate) fn wire(&self) -> IncidentEnvelope<'_> {
        let (component_ids, components) = component_fields(&self.components);
        IncidentEnvelope {
            incident: WireIncident {
                name: None,
                status: self.status,
                impact_override: self.impact,
                body: &self.body,
                component_ids,
                components,
                deliver_notifications: self.deliver_notifications,
                metadata: self.keys.as_ref().map(
                    |k| serde_json::json!({ "drbot": { "key": k.incident, "update": k.update } }),
                ),
            },
        }
    }
}

/// `{"component": {"status": ...}}` as sent.
#[derive(Serialize)]
pub(crate) struct ComponentEnvelope {
    pub(crate) component: WireComponent,
}

#[derive(Serialize)]
pub(crate) struct WireComponent {
    pub(crate) status: ComponentStatus,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_round_trip_their_api_spelling() {
        for s in ComponentStatus::ALL {
            assert_eq!(s.as_str().parse::<ComponentStatus>().unwrap(), *s);
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                serde_json::json!(s.as_str())
            );
        }
        let err = "down".parse::<IncidentStatus>().unwrap_err();
        assert!(err.contains("investigating, identified"), "{err}");
    }

    #[test]
    fn short_names_are_kept_and_long_ones_cut_on_a_char_boundary() {
        assert_eq!(truncate_name("  DR  "), "DR");
        let long = "é".repeat(300);
        let cut = truncate_name(&long);
        assert_eq!(cut.chars().count(), MAX_NAME_CHARS);
        assert!(cut.ends_with('…'));
        assert!(cut.starts_with("éé"));
        let exact = "x".repeat(MAX_NAME_CHARS);
        assert_eq!(truncate_name(&exact), exact);
    }
}
