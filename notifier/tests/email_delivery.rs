//! Customer email through a real SMTP server (aiosmtpd on loopback): the Maildir it writes is
//! parsed to check multipart parts, unsubscribe headers, Message-ID and an encoded subject;
//! plus connection failures and the password staying out of errors.

mod email_common;

use email_common::{Smtpd, closed_port, header};
use mailparse::{MailHeaderMap, parse_mail};
use notifier::email::{EmailConfig, Mailer, OutgoingEmail, SendError, SmtpUrl};

const SUBJECT: &str = "Mise à jour du service – reprise après sinistre activée ✓";
const TEXT: &str = "Dear Customer,\n\nWe have activated our disaster recovery site in eu-west-1.\nÉtat: dégradé.\n";
const HTML: &str = "<p>Dear Customer,</p><p>We have activated our <b>disaster recovery</b> site. État: dégradé.</p>";

fn email(to: &str, id: &str) -> OutgoingEmail {
    OutgoingEmail {
        to: to.into(),
        subject: SUBJECT.into(),
        text: TEXT.into(),
        html: Some(HTML.into()),
        unsubscribe_url: Some("https://status.example.com/unsubscribe?token=tok-123".into()),
        unsubscribe_mailto: Some("mailto:unsubscribe@example.com?subject=unsubscribe".into()),
        message_id: id.into(),
    }
}

fn body(part: &mailparse::ParsedMail<'_>) -> String {
    part.get_body().unwrap().replace("\r\n", "\n")
}

#[tokio::test]
async fn delivers_multipart_with_unsubscribe_headers_and_fixed_message_id() {
    let dir = tempfile::tempdir().unwrap();
    let smtpd = Smtpd::mailbox(dir.path());
    let mailer = Mailer::from_url(&smtpd.url(), "Example Status <status@example.com>").unwrap();

    let first = email("Ann Customer <ann@customer.example>", "outbox-7-ann");
    mailer.send(&first).await.unwrap();
    // A resend (e.g. after a crash) carries the same Message-ID.
    mailer.send(&first).await.unwrap();

    let raw = smtpd.messages();
    assert_eq!(raw.len(), 2);
    for raw in &raw {
        let mail = parse_mail(raw).unwrap();
        assert_eq!(header(&mail, "Subject"), SUBJECT);
        assert_eq!(header(&mail, "Message-ID"), "<outbox-7-ann@example.com>");
        assert_eq!(
            header(&mail, "From"),
            "\"Example Status\" <status@example.com>"
        );
        assert_eq!(
            header(&mail, "To"),
            "\"Ann Customer\" <ann@customer.example>"
        );
        assert_eq!(
            header(&mail, "List-Unsubscribe"),
            "<https://status.example.com/unsubscribe?token=tok-123>, \
             <mailto:unsubscribe@example.com?subject=unsubscribe>"
        );
        assert_eq!(
            header(&mail, "List-Unsubscribe-Post"),
            "List-Unsubscribe=One-Click"
        );
        let date = mailparse::dateparse(&header(&mail, "Date")).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!((now - date).abs() < 120, "Date {date} is not now ({now})");
        // The raw header is ASCII (RFC 2047), not 8-bit.
        let raw_subject = mail.headers.get_first_header("Subject").unwrap();
        assert!(raw_subject.get_value_raw().is_ascii());

        assert_eq!(mail.ctype.mimetype, "multipart/alternative");
        assert_eq!(mail.subparts.len(), 2);
        assert_eq!(mail.subparts[0].ctype.mimetype, "text/plain");
        assert_eq!(mail.subparts[0].ctype.charset, "utf-8");
        assert_eq!(body(&mail.subparts[0]).trim_end(), TEXT.trim_end());
        assert_eq!(mail.subparts[1].ctype.mimetype, "text/html");
        assert_eq!(body(&mail.subparts[1]).trim_end(), HTML);
        // aiosmtpd's Mailbox handler records the envelope recipient.
        assert_eq!(header(&mail, "X-RcptTo"), "ann@customer.example");
    }
}

#[tokio::test]
async fn plain_text_without_unsubscribe_has_neither_header() {
    let dir = tempfile::tempdir().unwrap();
    let smtpd = Smtpd::mailbox(dir.path());
    let mailer = Mailer::from_url(&smtpd.url(), "status@example.com").unwrap();
    let mut e = email("bob@customer.example", "k-1@ids.example.com");
    e.html = None;
    e.unsubscribe_url = None;
    e.unsubscribe_mailto = None;
    mailer.send(&e).await.unwrap();
    let raw = smtpd.messages();
    assert_eq!(raw.len(), 1);
    let mail = parse_mail(&raw[0]).unwrap();
    assert_eq!(mail.ctype.mimetype, "text/plain");
    assert_eq!(body(&mail).trim_end(), TEXT.trim_end());
    assert_eq!(header(&mail, "Message-ID"), "<k-1@ids.example.com>");
    assert!(mail.headers.get_first_value("List-Unsubscribe").is_none());
    assert!(
        mail.headers
            .get_first_value("List-Unsubscribe-Post")
            .is_none()
    );
}

#[tokio::test]
async fn invalid_email_is_refused_before_any_connection() {
    // Nothing listens here: an Invalid error proves the message was refused before sending.
    let mailer = Mailer::from_url(
        &format!("smtp://127.0.0.1:{}", closed_port()),
        "s@example.com",
    )
    .unwrap();
    let mut e = email("not-an-address", "id-1");
    let err = mailer.send(&e).await.unwrap_err();
    assert!(
        matches!(&err, SendError::Invalid(m) if m.contains("`not-an-address`")),
        "{err}"
    );
    e.to = "ok@example.com".into();
    e.message_id = "has space".into();
    let err = mailer.send(&e).await.unwrap_err();
    assert!(
        matches!(&err, SendError::Invalid(m) if m.contains("Message-ID")),
        "{err}"
    );
}

#[tokio::test]
async fn refused_connection_is_temporary_and_never_shows_the_password() {
    let url = format!("smtp://mailer:hunter2-secret@127.0.0.1:{}", closed_port());
    let mailer = Mailer::from_url(&url, "s@example.com").unwrap();
    let err = mailer
        .send(&email("a@example.com", "id-2"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, SendError::Temporary { code: None, .. }),
        "{err:?}"
    );
    for text in [err.to_string(), format!("{err:?}"), format!("{mailer:?}")] {
        assert!(!text.contains("hunter2"), "{text}");
    }
    assert!(format!("{mailer:?}").contains("smtp://mailer:***@127.0.0.1"));
}

#[test]
fn mailer_outside_a_runtime_is_an_error_not_a_panic() {
    let err = Mailer::from_url("smtp://127.0.0.1:25", "a@b.example").unwrap_err();
    assert!(err.to_string().contains("inside a Tokio runtime"), "{err}");
}

#[tokio::test]
async fn config_deserializes_with_defaults_and_refuses_unknown_keys() {
    let cfg: EmailConfig = serde_json::from_str(
        r#"{"url": "smtps://u:hunter2@mail.example.com", "from": "s@example.com",
            "rate_limit": 50, "retry_backoff": "250ms"}"#,
    )
    .unwrap();
    assert_eq!(cfg.max_connections, 8);
    assert_eq!(cfg.rate_limit, Some(50.0));
    assert_eq!(cfg.retry_backoff, std::time::Duration::from_millis(250));
    assert_eq!(
        cfg.url,
        SmtpUrl::parse("smtps://u:hunter2@mail.example.com:465").unwrap()
    );
    assert!(!format!("{cfg:?}").contains("hunter2"));

    let err =
        serde_json::from_str::<EmailConfig>(r#"{"url": "smtp://x", "from": "a@b", "pool": 3}"#)
            .unwrap_err();
    assert!(err.to_string().contains("unknown field `pool`"), "{err}");
    let err = serde_json::from_str::<EmailConfig>(r#"{"url": "ftp://u:hunter2@x", "from": "a@b"}"#)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("scheme `ftp`") && !err.contains("hunter2"),
        "{err}"
    );

    let mut cfg = EmailConfig::new(SmtpUrl::parse("smtp://x").unwrap(), "a@b.example");
    cfg.rate_limit = Some(0.0);
    assert!(
        Mailer::new(&cfg)
            .unwrap_err()
            .to_string()
            .contains("rate_limit")
    );
    cfg.rate_limit = None;
    cfg.max_connections = 0;
    assert!(
        Mailer::new(&cfg)
            .unwrap_err()
            .to_string()
            .contains("max_connections")
    );
    cfg.max_connections = 4;
    cfg.from = "nobody".into();
    assert!(
        Mailer::new(&cfg)
            .unwrap_err()
            .to_string()
            .contains("`nobody`")
    );
    // TLS modes build (connections are lazy).
    for url in [
        "smtp://m.example.com?tls=required",
        "smtp://m.example.com?tls=opportunistic",
        "smtps://m.example.com",
    ] {
        Mailer::from_url(url, "a@b.example").unwrap();
    }
}
