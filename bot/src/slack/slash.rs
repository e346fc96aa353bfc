//! The slash command as drbot reads it: the four fields it acts on, borrowed from Slack's
//! form-encoded body (or from Socket Mode's `SlackCommandEvent`). Parsing the whole of
//! slack-morphism's `SlackCommandEvent` from the form (every field an owned string, the
//! response URL parsed as a URL) was about a sixth of a command's cost, for fields drbot
//! never reads.

use std::borrow::Cow;

use slack_morphism::prelude::SlackCommandEvent;

/// A slash command's fields that drbot uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slash<'a> {
    /// Who typed it (`U…`).
    pub user_id: Cow<'a, str>,
    /// Where (`C…`).
    pub channel_id: Cow<'a, str>,
    /// What followed `/dr` (empty when nothing did).
    pub text: Cow<'a, str>,
    /// Slack's id of this invocation: the replay memory's key.
    pub trigger_id: Cow<'a, str>,
    /// Where an answer that comes after the HTTP reply is posted (valid 30 minutes).
    pub response_url: Option<Cow<'a, str>>,
}

/// Fields Slack always sends with a slash command: a body without one of them (or with one
/// twice) is not Slack's.
const REQUIRED: [&str; 4] = ["command", "user_id", "channel_id", "trigger_id"];

impl<'a> Slash<'a> {
    /// From the `application/x-www-form-urlencoded` body; `None` when a required field is
    /// missing or repeated, or `text` is repeated.
    pub fn from_form(body: &'a [u8]) -> Option<Slash<'a>> {
        let mut found: [Option<Cow<'a, str>>; 4] = Default::default();
        let mut text = None;
        let mut response_url = None;
        // Slack never encodes the names; only the values drbot reads are decoded (a command
        // carries a dozen fields).
        for pair in body.split(|b| *b == b'&') {
            let name = pair.split(|b| *b == b'=').next().unwrap_or_default();
            let slot = if name == b"text" {
                &mut text
            } else if name == b"response_url" {
                &mut response_url
            } else if let Some(i) = REQUIRED.iter().position(|k| k.as_bytes() == name) {
                &mut found[i]
            } else {
                continue;
            };
            let value = form_urlencoded::parse(pair).next().map(|(_, v)| v);
            if slot.replace(value.unwrap_or_default()).is_some() {
                return None;
            }
        }
        let [command, user_id, channel_id, trigger_id] = found;
        command?;
        Some(Slash {
            user_id: user_id?,
            channel_id: channel_id?,
            text: text.unwrap_or_default(),
            trigger_id: trigger_id?,
            response_url,
        })
    }

    /// The same command owning its fields (to be finished in a task of its own).
    pub fn into_owned(self) -> Slash<'static> {
        Slash {
            user_id: Cow::Owned(self.user_id.into_owned()),
            channel_id: Cow::Owned(self.channel_id.into_owned()),
            text: Cow::Owned(self.text.into_owned()),
            trigger_id: Cow::Owned(self.trigger_id.into_owned()),
            response_url: self.response_url.map(|u| Cow::Owned(u.into_owned())),
        }
    }

    /// From a Socket Mode event.
    pub fn from_event(ev: &'a SlackCommandEvent) -> Slash<'a> {
        Slash {
            user_id: Cow::Borrowed(&ev.user_id.0),
            channel_id: Cow::Borrowed(&ev.channel_id.0),
            text: Cow::Borrowed(ev.text.as_deref().unwrap_or("")),
            trigger_id: Cow::Borrowed(&ev.trigger_id.0),
            response_url: Some(Cow::Borrowed(ev.response_url.0.as_str())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DOCUMENTED: &str = "token=gIkuvaNzQIHg97ATvDxqgjtO&team_id=T0001&team_domain=example\
        &enterprise_id=E0001&enterprise_name=Globular%20Construct%20Inc&channel_id=C2147483705\
        &channel_name=test&user_id=U2147483697&user_name=Steve&command=%2Fdr\
        &text=pitr+%222026-01-27+14%3A30%3A00%22&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2F1234%2F5678\
        &trigger_id=13345224609.738474920.8088930838d88f008e0&api_app_id=A123456";

    #[test]
    fn reads_slacks_documented_payload_as_slack_morphism_does() {
        let ours = Slash::from_form(DOCUMENTED.as_bytes()).unwrap();
        let theirs: SlackCommandEvent = serde_urlencoded::from_str(DOCUMENTED).unwrap();
        assert_eq!(ours, Slash::from_event(&theirs));
        assert_eq!(ours.text, "pitr \"2026-01-27 14:30:00\"");
    }

    #[test]
    fn text_may_be_absent_but_required_fields_may_not() {
        let no_text = "command=%2Fdr&user_id=U1&channel_id=C1&trigger_id=t1";
        assert_eq!(Slash::from_form(no_text.as_bytes()).unwrap().text, "");
        for missing in REQUIRED {
            let body: Vec<String> = REQUIRED
                .iter()
                .filter(|k| **k != missing)
                .map(|k| format!("{k}=x"))
                .collect();
            assert!(
                Slash::from_form(body.join("&").as_bytes()).is_none(),
                "{missing}"
            );
        }
    }

    #[test]
    fn a_repeated_field_is_refused() {
        let base = "command=%2Fdr&user_id=U1&channel_id=C1&trigger_id=t1&text=status";
        for dup in [
            "user_id=U2",
            "channel_id=C2",
            "trigger_id=t2",
            "text=drill",
            "command=x",
        ] {
            let body = format!("{base}&{dup}");
            assert!(Slash::from_form(body.as_bytes()).is_none(), "{dup}");
        }
    }

    proptest! {
        /// Any bytes: an answer, never a panic.
        #[test]
        fn garbage_never_panics(body in prop::collection::vec(any::<u8>(), 0..400)) {
            let _ = Slash::from_form(&body);
        }

        /// Any values, encoded as Slack encodes them, come back exactly.
        #[test]
        fn values_round_trip(user in ".*", channel in ".*", text in ".*", trigger in ".*") {
            let body = form_urlencoded::Serializer::new(String::new())
                .append_pair("token", "t")
                .append_pair("command", "/dr")
                .append_pair("user_id", &user)
                .append_pair("channel_id", &channel)
                .append_pair("text", &text)
                .append_pair("trigger_id", &trigger)
                .finish();
            let s = Slash::from_form(body.as_bytes()).unwrap();
            prop_assert_eq!((&*s.user_id, &*s.channel_id), (user.as_str(), channel.as_str()));
            prop_assert_eq!((&*s.text, &*s.trigger_id), (text.as_str(), trigger.as_str()));
        }
    }
}
