//! An interaction as drbot reads it: the few fields it uses, borrowed from the request body;
//! everything else Discord sends (guild, channel and member objects, locales, permissions) is
//! skipped without being built.

use std::borrow::Cow;

use serde::{Deserialize, Deserializer, de};
use serde_json::Value;

/// A string field, borrowed from the body unless it has escapes. (serde borrows a bare
/// `Cow<str>` field, but never one inside an `Option`.)
#[derive(Debug)]
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> de::Visitor<'de> for Visitor {
            type Value = Cow<'de, str>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Cow::Borrowed(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v))
            }
        }
        d.deserialize_str(Visitor).map(Text)
    }
}

/// The string of an optional field.
fn text<'s>(field: &'s Option<Text<'_>>) -> Option<&'s str> {
    field.as_ref().map(|t| t.0.as_ref())
}

/// The fields of an interaction drbot uses. A field of the wrong type makes the whole body
/// unreadable (a `400`); a missing one is `None`. Not `Debug`: it holds the interaction
/// token, a secret that must not reach a log.
#[derive(Deserialize)]
pub struct Interaction<'a> {
    /// 1 PING, 2 APPLICATION_COMMAND, 3 MESSAGE_COMPONENT, …
    #[serde(rename = "type")]
    pub kind: Option<u64>,
    /// The interaction's id.
    #[serde(borrow, default)]
    id: Option<Text<'a>>,
    /// The interaction token (for follow-ups; a secret).
    #[serde(borrow, default)]
    token: Option<Text<'a>>,
    /// The channel it came from.
    #[serde(borrow, default)]
    channel_id: Option<Text<'a>>,
    /// The member who sent it, in a guild.
    #[serde(borrow, default)]
    member: Option<Member<'a>>,
    /// The user who sent it, in a DM.
    #[serde(borrow, default)]
    user: Option<Ref<'a>>,
    /// The command's options or the component's `custom_id` (small: kept as JSON).
    #[serde(default)]
    pub data: Value,
    /// The message a clicked component belongs to.
    #[serde(borrow, default)]
    message: Option<Ref<'a>>,
}

/// A guild member: only its user.
#[derive(Debug, Deserialize)]
struct Member<'a> {
    /// The member's user.
    #[serde(borrow, default)]
    user: Option<Ref<'a>>,
}

/// An object drbot reads only the id of (a user, a message).
#[derive(Debug, Deserialize)]
struct Ref<'a> {
    /// Its id (a snowflake, as a string).
    #[serde(borrow, default)]
    id: Option<Text<'a>>,
}

impl<'a> Interaction<'a> {
    /// Reads `body`; `None` when it is not a JSON object with fields of the right types.
    pub fn parse(body: &'a [u8]) -> Option<Self> {
        serde_json::from_slice(body).ok()
    }

    /// Who sent it: the member's user in a guild, else the user.
    pub fn user_id(&self) -> Option<&str> {
        let member = self.member.as_ref().and_then(|m| m.user.as_ref());
        member
            .and_then(|u| text(&u.id))
            .or_else(|| self.user.as_ref().and_then(|u| text(&u.id)))
    }

    /// The clicked component's `custom_id`.
    pub fn custom_id(&self) -> Option<&str> {
        self.data["custom_id"].as_str()
    }

    /// The id of the message a component was clicked on.
    pub fn message_id(&self) -> Option<&str> {
        self.message.as_ref().and_then(|m| text(&m.id))
    }

    /// The interaction's id.
    pub fn id(&self) -> Option<&str> {
        text(&self.id)
    }

    /// The interaction token.
    pub fn token(&self) -> Option<&str> {
        text(&self.token)
    }

    /// The channel it came from.
    pub fn channel_id(&self) -> Option<&str> {
        text(&self.channel_id)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    /// The fixture files the end-to-end tests send, placeholders filled.
    fn fixture(name: &str) -> String {
        let path = format!(
            "{}/../tests/fixtures/discord/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(path)
            .unwrap()
            .replace("{channel_id}", "1200000000000000000")
            .replace("{custom_id}", "approve:7")
            .replace("{interaction_id}", "1180000000000000001")
            .replace("{user_id}", "2002")
            .replace("{message_id}", "1300000000000000000")
            .replace("{options}", r#"[{"type":1,"name":"status","options":[]}]"#)
    }

    #[test]
    fn discords_documented_payloads_are_read() {
        let body = fixture("message_component");
        let ix = Interaction::parse(body.as_bytes()).expect("the fixture reads");
        assert_eq!(ix.kind, Some(3));
        assert_eq!(ix.user_id(), Some("2002"));
        assert_eq!(ix.channel_id(), Some("1200000000000000000"));
        assert_eq!(ix.message_id(), Some("1300000000000000000"));
        assert_eq!(ix.custom_id(), Some("approve:7"));
        assert_eq!(ix.id(), Some("1180000000000000001"));
        assert!(
            matches!(ix.channel_id, Some(Text(Cow::Borrowed(_)))),
            "borrowed"
        );

        let body = fixture("application_command");
        let ix = Interaction::parse(body.as_bytes()).unwrap();
        assert_eq!(ix.kind, Some(2));
        assert!(ix.data["options"].is_array());
        assert!(ix.token().is_some());

        let body = fixture("ping");
        let ix = Interaction::parse(body.as_bytes()).unwrap();
        assert_eq!(ix.kind, Some(1));
    }

    #[test]
    fn a_dm_has_a_user_and_no_member() {
        let body = json!({ "type": 2, "user": { "id": "42" }, "data": {} }).to_string();
        let ix = Interaction::parse(body.as_bytes()).unwrap();
        assert_eq!(ix.user_id(), Some("42"));
        // An escaped string is read too (owned, not borrowed).
        let body = br#"{"type":3,"channel_id":"12\u0033","member":{"user":{"id":"7"}}}"#;
        let ix = Interaction::parse(body).unwrap();
        assert_eq!(ix.channel_id(), Some("123"));
        assert!(matches!(ix.channel_id, Some(Text(Cow::Owned(_)))));
        assert_eq!(ix.user_id(), Some("7"));
        assert_eq!(ix.custom_id(), None);
    }

    #[test]
    fn wrong_types_and_garbage_are_unreadable() {
        for body in [
            &b"{not json"[..],
            b"[]",
            b"2",
            br#"{"type":"2"}"#,
            br#"{"type":2,"channel_id":5}"#,
            br#"{"type":2,"member":{"user":{"id":2001}}}"#,
        ] {
            assert!(Interaction::parse(body).is_none(), "{body:?}");
        }
        // Nulls are absent fields.
        let ix = Interaction::parse(br#"{"type":2,"member":null,"data":null}"#).unwrap();
        assert_eq!(ix.user_id(), None);
    }

    /// The reading the handlers did before, on a `serde_json::Value`.
    fn by_value(v: &Value) -> (Option<u64>, Option<&str>, Option<&str>, Option<&str>) {
        (
            v["type"].as_u64(),
            v["member"]["user"]["id"]
                .as_str()
                .or(v["user"]["id"].as_str()),
            v["channel_id"].as_str(),
            v["message"]["id"].as_str(),
        )
    }

    fn snowflake() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            "[0-9]{1,19}".prop_map(Value::from),
            "[a-z\"\\\\é]{0,6}".prop_map(Value::from),
        ]
    }

    proptest! {
        #[test]
        fn garbage_never_panics(body in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Interaction::parse(&body);
        }

        /// Any well-typed interaction, with or without each field, reads as the `Value`
        /// reading did.
        #[test]
        fn typed_reading_agrees_with_the_value_reading(
            kind in proptest::option::of(0u64..6),
            member in proptest::option::of(snowflake()),
            user in proptest::option::of(snowflake()),
            channel in snowflake(),
            message in proptest::option::of(snowflake()),
            custom_id in snowflake(),
        ) {
            let mut v = json!({ "id": "1", "version": 1, "guild": { "id": "5", "x": [1, 2] } });
            if let Some(k) = kind { v["type"] = k.into(); }
            if let Some(m) = member { v["member"] = json!({ "roles": [], "user": { "id": m } }); }
            if let Some(u) = user { v["user"] = json!({ "id": u, "username": "x" }); }
            v["channel_id"] = channel;
            if let Some(m) = message { v["message"] = json!({ "id": m, "embeds": [] }); }
            v["data"] = json!({ "custom_id": custom_id, "component_type": 2 });
            let body = v.to_string();
            let ix = Interaction::parse(body.as_bytes()).expect("well typed");
            let typed = (ix.kind, ix.user_id(), ix.channel_id(), ix.message_id());
            prop_assert_eq!(typed, by_value(&v));
            prop_assert_eq!(ix.custom_id(), v["data"]["custom_id"].as_str());
        }
    }
}
