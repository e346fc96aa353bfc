//! One customer email as data (`OutgoingEmail`) and its MIME form: multipart/alternative text
//! and HTML, RFC 2369 `List-Unsubscribe`, RFC 8058 one-click `List-Unsubscribe-Post`, and the
//! caller's deterministic `Message-ID`.

use lettre::Message;
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};

use super::error::SendError;

/// One email to one recipient, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingEmail {
    /// Recipient, `addr@example.com` or `Name <addr@example.com>`.
    pub to: String,
    /// Subject line; any Unicode (encoded as RFC 2047 when not ASCII).
    pub subject: String,
    /// Plain-text body.
    pub text: String,
    /// HTML body; with it the message is multipart/alternative (text first, then HTML).
    pub html: Option<String>,
    /// One-click unsubscribe URL (`https://…/unsubscribe?token=…`): sent as `List-Unsubscribe`
    /// with `List-Unsubscribe-Post: List-Unsubscribe=One-Click` (RFC 8058).
    pub unsubscribe_url: Option<String>,
    /// Optional `mailto:` unsubscribe address, listed after the URL in `List-Unsubscribe`.
    pub unsubscribe_mailto: Option<String>,
    /// Idempotency key of this delivery (e.g. the outbox row's), sent as the `Message-ID` so a
    /// resend after a crash carries the same id. `local@domain`, or just `local`, which is
    /// completed with the sender's domain. Letters, digits and ``.!#$%&'*+/=?^_`{|}~-``.
    pub message_id: String,
}

/// The longest Message-ID accepted (well under the 998-octet header line limit).
const MAX_ID_LEN: usize = 250;

fn atext(b: u8) -> bool {
    ATEXT_OR_DOT[usize::from(b)]
}

/// Letters, digits and the given bytes, as a table indexed by byte.
pub(crate) const fn byte_class(extra: &[u8]) -> [bool; 256] {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let mut i = 0;
    while i < extra.len() {
        table[extra[i] as usize] = true;
        i += 1;
    }
    table
}

/// RFC 5322 `atext` and `.`.
const ATEXT_OR_DOT: [bool; 256] = byte_class(b"!#$%&'*+/=?^_`{|}~.-");

/// `<local@domain>` from the caller's id, completed with `domain` when it has no `@`.
pub(crate) fn message_id_header(id: &str, domain: &str) -> Result<String, SendError> {
    let (local, right) = message_id_parts(id, domain)?;
    Ok(format!("<{local}@{right}>"))
}

/// The local part and domain of the Message-ID for the caller's id (see `message_id_header`).
pub(crate) fn message_id_parts<'a>(
    id: &'a str,
    domain: &'a str,
) -> Result<(&'a str, &'a str), SendError> {
    let invalid = |why: &str| SendError::Invalid(format!("Message-ID `{id}` {why}"));
    if id.is_empty() {
        return Err(SendError::Invalid("Message-ID is empty".into()));
    }
    if id.len() > MAX_ID_LEN {
        return Err(invalid(&format!("is longer than {MAX_ID_LEN} characters")));
    }
    let (local, right) = match id.bytes().position(|b| b == b'@') {
        Some(at) => (&id[..at], &id[at + 1..]),
        None => (id, domain),
    };
    // `@` is not `atext`, so a second one fails `right`.
    let part_ok = |p: &str| !p.is_empty() && p.bytes().all(atext);
    if !part_ok(local) || !part_ok(right) {
        return Err(invalid(
            "must be `local@domain` or `local` with only letters, digits and .!#$%&'*+/=?^_`{|}~-",
        ));
    }
    Ok((local, right))
}

/// `<url>` after checking it is an absolute http(s) URL that needs no quoting.
pub(crate) fn unsubscribe_entry(
    url: &str,
    scheme_ok: &[&str],
    what: &str,
) -> Result<String, SendError> {
    let parsed = url::Url::parse(url)
        .map_err(|e| SendError::Invalid(format!("{what} `{url}` is not a URL: {e}")))?;
    if !scheme_ok.contains(&parsed.scheme()) {
        return Err(SendError::Invalid(format!(
            "{what} `{url}` must use {}",
            scheme_ok.join(" or ")
        )));
    }
    Ok(format!("<{}>", parsed.as_str()))
}

fn header(name: &'static str, value: String) -> HeaderValue {
    HeaderValue::new(HeaderName::new_from_ascii_str(name), value)
}

/// Builds the MIME message for `email` from `from`; `domain` completes bare Message-IDs.
pub(crate) fn build(
    from: &Mailbox,
    domain: &str,
    email: &OutgoingEmail,
) -> Result<Message, SendError> {
    let to: Mailbox = email.to.parse().map_err(|e| {
        SendError::Invalid(format!(
            "recipient `{}` is not an email address: {e}",
            email.to
        ))
    })?;
    if email.subject.contains(['\r', '\n']) {
        return Err(SendError::Invalid("subject contains a line break".into()));
    }
    let mut builder = Message::builder()
        .from(from.clone())
        .to(to)
        .subject(email.subject.clone())
        .message_id(Some(message_id_header(&email.message_id, domain)?))
        .date_now();
    let mut entries = Vec::new();
    if let Some(url) = &email.unsubscribe_url {
        entries.push(unsubscribe_entry(
            url,
            &["https", "http"],
            "unsubscribe URL",
        )?);
    }
    if let Some(mailto) = &email.unsubscribe_mailto {
        entries.push(unsubscribe_entry(
            mailto,
            &["mailto"],
            "unsubscribe mailto",
        )?);
    }
    if !entries.is_empty() {
        builder = builder.raw_header(header("List-Unsubscribe", entries.join(", ")));
    }
    if email.unsubscribe_url.is_some() {
        builder = builder.raw_header(header(
            "List-Unsubscribe-Post",
            "List-Unsubscribe=One-Click".into(),
        ));
    }
    let built = match &email.html {
        Some(html) => builder.multipart(MultiPart::alternative_plain_html(
            email.text.clone(),
            html.clone(),
        )),
        None => builder.singlepart(
            SinglePart::builder()
                .header(ContentType::TEXT_PLAIN)
                .body(email.text.clone()),
        ),
    };
    built.map_err(|e| SendError::Invalid(format!("email cannot be built: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn email() -> OutgoingEmail {
        OutgoingEmail {
            to: "Ann <ann@example.org>".into(),
            subject: "Service Update - DR Activation".into(),
            text: "Dear Customer".into(),
            html: Some("<p>Dear Customer</p>".into()),
            unsubscribe_url: Some("https://status.example.com/unsubscribe?token=t1".into()),
            unsubscribe_mailto: None,
            message_id: "outbox-42".into(),
        }
    }

    fn build_one(e: &OutgoingEmail) -> Result<String, SendError> {
        let from: Mailbox = "Status <status@example.com>".parse().unwrap();
        build(&from, "example.com", e).map(|m| String::from_utf8(m.formatted()).unwrap())
    }

    #[test]
    fn message_ids_are_completed_and_checked() {
        assert_eq!(message_id_header("k1", "x.org").unwrap(), "<k1@x.org>");
        assert_eq!(
            message_id_header("k1@y.net", "x.org").unwrap(),
            "<k1@y.net>"
        );
        for bad in ["", "a b", "a@b@c", "<a>", "a@", "@b", "é"] {
            assert!(
                matches!(message_id_header(bad, "x.org"), Err(SendError::Invalid(_))),
                "{bad}"
            );
        }
        let long = "a".repeat(300);
        assert!(message_id_header(&long, "x.org").is_err());
    }

    #[test]
    fn headers_are_written() {
        let text = build_one(&email()).unwrap();
        assert!(
            text.contains("Message-ID: <outbox-42@example.com>\r\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "List-Unsubscribe: <https://status.example.com/unsubscribe?token=t1>\r\n"
            )
        );
        assert!(text.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"));
        assert!(text.contains("multipart/alternative"));
    }

    #[test]
    fn bad_input_is_a_specific_error() {
        let mut e = email();
        e.to = "not an address".into();
        let err = build_one(&e).unwrap_err().to_string();
        assert!(err.contains("recipient `not an address`"), "{err}");
        let mut e = email();
        e.unsubscribe_url = Some("javascript:alert(1)".into());
        assert!(
            build_one(&e)
                .unwrap_err()
                .to_string()
                .contains("must use https or http")
        );
        let mut e = email();
        e.unsubscribe_mailto = Some("https://x".into());
        assert!(
            build_one(&e)
                .unwrap_err()
                .to_string()
                .contains("must use mailto")
        );
        let mut e = email();
        e.subject = "a\r\nBcc: evil@x".into();
        assert!(
            build_one(&e)
                .unwrap_err()
                .to_string()
                .contains("line break")
        );
    }
}
