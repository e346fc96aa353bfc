//! Campaign messages parsed back with mailparse: headers, both bodies decoded to the text with
//! each recipient's values, the same as `send_many`'s message for the same text, and every
//! invalid recipient or content refused with its reason.

use mailparse::{MailHeaderMap, ParsedMail, parse_mail};

use super::*;
use crate::email::{EmailConfig, OutgoingEmail, SmtpUrl};

fn mailer() -> Mailer {
    let url = SmtpUrl::parse("smtp://127.0.0.1:25").unwrap();
    Mailer::new(&EmailConfig::new(
        url,
        "Example Status <status@example.com>",
    ))
    .unwrap()
}

fn content() -> CampaignContent {
    CampaignContent {
        subject: "Service Update - DR Activation".into(),
        text:
            "Dear {{name}},\n\nRegion {{region}} failed over.\nStatus: https://status.example.com\n"
                .into(),
        html: Some("<p>Dear {{name}},</p><p>Region {{region}} failed over.</p>".into()),
        slots: vec!["{{name}}".into(), "{{region}}".into()],
        unsubscribe_prefix: Some("https://status.example.com/unsubscribe?token=".into()),
    }
}

fn recipient(name: &str) -> Recipient {
    Recipient {
        to: "ann@customer.example".into(),
        message_id: "run1-7".into(),
        unsubscribe_token: Some("tok-7".into()),
        values: vec![name.into(), "us-west-2".into()],
    }
}

fn header(mail: &ParsedMail<'_>, name: &str) -> String {
    mail.headers.get_first_value(name).unwrap_or_default()
}

fn bodies(mail: &ParsedMail<'_>) -> Vec<(String, String)> {
    let parts: Vec<&ParsedMail<'_>> = if mail.subparts.is_empty() {
        vec![mail]
    } else {
        mail.subparts.iter().collect()
    };
    parts
        .iter()
        .map(|p| (p.ctype.mimetype.clone(), p.get_body().unwrap()))
        .collect()
}

#[tokio::test]
async fn a_campaign_message_has_every_header_and_decodes_to_the_recipients_text() {
    let mailer = mailer();
    let campaign = mailer.campaign(content()).unwrap();
    let raw = mailer
        .format_campaign(&campaign, &recipient("Ann & <Bob>"))
        .unwrap();
    let text = String::from_utf8(raw.clone()).unwrap();
    assert!(text.split("\r\n").all(|l| l.len() <= 76), "{text}");
    let mail = parse_mail(&raw).unwrap();
    assert_eq!(
        header(&mail, "From"),
        "\"Example Status\" <status@example.com>"
    );
    assert_eq!(header(&mail, "To"), "ann@customer.example");
    assert_eq!(header(&mail, "Subject"), "Service Update - DR Activation");
    assert_eq!(header(&mail, "Message-ID"), "<run1-7@example.com>");
    assert_eq!(
        header(&mail, "List-Unsubscribe"),
        "<https://status.example.com/unsubscribe?token=tok-7>"
    );
    assert_eq!(
        header(&mail, "List-Unsubscribe-Post"),
        "List-Unsubscribe=One-Click"
    );
    assert_eq!(header(&mail, "MIME-Version"), "1.0");
    assert!(mailparse::dateparse(&header(&mail, "Date")).is_ok());
    assert_eq!(mail.ctype.mimetype, "multipart/alternative");
    assert_eq!(
        bodies(&mail),
        vec![
            (
                "text/plain".to_string(),
                "Dear Ann & <Bob>,\r\n\r\nRegion us-west-2 failed over.\r\nStatus: https://status.example.com\r\n"
                    .to_string()
            ),
            (
                "text/html".to_string(),
                "<p>Dear Ann &amp; &lt;Bob&gt;,</p><p>Region us-west-2 failed over.</p>".to_string()
            ),
        ]
    );
}

#[tokio::test]
async fn it_matches_send_manys_message_for_the_same_text() {
    let mailer = mailer();
    let campaign = mailer.campaign(content()).unwrap();
    let r = recipient("Zoë");
    let raw = mailer.format_campaign(&campaign, &r).unwrap();
    let email = OutgoingEmail {
        to: r.to.clone(),
        subject: "Service Update - DR Activation".into(),
        text: content()
            .text
            .replace("{{name}}", "Zoë")
            .replace("{{region}}", "us-west-2"),
        html: content().html.map(|h| {
            h.replace("{{name}}", "Zoë")
                .replace("{{region}}", "us-west-2")
        }),
        unsubscribe_url: Some("https://status.example.com/unsubscribe?token=tok-7".into()),
        unsubscribe_mailto: None,
        message_id: r.message_id.clone(),
    };
    let single = mailer.format(&email).unwrap();
    let (a, b) = (parse_mail(&raw).unwrap(), parse_mail(&single).unwrap());
    for name in [
        "From",
        "To",
        "Subject",
        "Message-ID",
        "List-Unsubscribe",
        "List-Unsubscribe-Post",
        "MIME-Version",
    ] {
        assert_eq!(header(&a, name), header(&b, name), "{name}");
    }
    // lettre writes the text part with LF kept as CRLF too.
    assert_eq!(bodies(&a), bodies(&b));
}

#[tokio::test]
async fn generated_texts_and_values_decode_exactly() {
    let mailer = mailer();
    let mut rng = fastrand::Rng::with_seed(7);
    let alphabet: Vec<char> = "ab =.\t\n\r\u{e9}\u{1F680}<&>\"'x{}".chars().collect();
    let text = |rng: &mut fastrand::Rng, max: usize| -> String {
        let n = rng.usize(0..max);
        (0..n)
            .map(|_| alphabet[rng.usize(0..alphabet.len())])
            .collect()
    };
    for case in 0..300 {
        let (a, b, c) = (text(&mut rng, 120), text(&mut rng, 200), text(&mut rng, 90));
        let plain = format!("{a}[[v]]{b}[[v]][[w]]{c}");
        let html = format!("<p>{c}[[w]]</p>{a}");
        let campaign = mailer
            .campaign(CampaignContent {
                subject: format!("Case {case} \u{e9}"),
                text: plain.clone(),
                html: Some(html.clone()),
                slots: vec!["[[v]]".into(), "[[w]]".into()],
                unsubscribe_prefix: None,
            })
            .unwrap();
        let (v, w) = (text(&mut rng, 100), text(&mut rng, 30));
        let r = Recipient {
            to: format!("u{case}@example.org"),
            message_id: format!("case-{case}"),
            unsubscribe_token: None,
            values: vec![v.clone(), w.clone()],
        };
        let raw = mailer.format_campaign(&campaign, &r).unwrap();
        assert!(raw.is_ascii(), "case {case}");
        let as_text = String::from_utf8(raw.clone()).unwrap();
        assert!(
            as_text.split("\r\n").all(|l| l.len() <= 78),
            "case {case}: {as_text}"
        );
        let mail = parse_mail(&raw).unwrap();
        assert_eq!(header(&mail, "Subject"), format!("Case {case} \u{e9}"));
        // Each piece (fixed text or value) is encoded alone: its line breaks (LF or CRLF)
        // come back as CRLF, and a CR that does not start one in that piece stays a CR.
        let crlf = |s: &str| s.replace("\r\n", "\n").replace('\n', "\r\n");
        let escape = |s: &str| {
            s.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
                .replace('"', "&quot;")
                .replace('\'', "&#39;")
        };
        let expect_text = [&a, &v, &b, &v, &w, &c].map(|p| crlf(p)).concat();
        let expect_html = [
            crlf(&format!("<p>{c}")),
            crlf(&escape(&w)),
            crlf(&format!("</p>{a}")),
        ]
        .concat();
        let got = bodies(&mail);
        assert_eq!(got[0].1, expect_text, "case {case}");
        assert_eq!(got[1].1, expect_html, "case {case}");
    }
}

#[tokio::test]
async fn a_named_recipient_is_encoded_and_the_envelope_has_the_address() {
    let mailer = mailer();
    let campaign = mailer.campaign(content()).unwrap();
    let mut r = recipient("Ann");
    r.to = "Zoë Example <zoe@customer.example>".into();
    let prepared = campaign.prepare(&r).unwrap();
    assert_eq!(
        prepared
            .recipients()
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>(),
        vec!["zoe@customer.example"]
    );
    let bytes = prepared.content();
    let mail = parse_mail(&bytes).unwrap();
    assert_eq!(header(&mail, "To"), "Zoë Example <zoe@customer.example>");
}

#[tokio::test]
async fn invalid_recipients_and_content_are_refused_with_their_reason() {
    let mailer = mailer();
    let campaign = mailer.campaign(content()).unwrap();
    let refused = |edit: fn(&mut Recipient), why: &str| {
        let mut r = recipient("Ann");
        edit(&mut r);
        match campaign.prepare(&r) {
            Err(SendError::Invalid(m)) => assert!(m.contains(why), "{m}"),
            Err(e) => panic!("{e:?}"),
            Ok(_) => panic!("accepted {r:?}"),
        }
    };
    refused(
        |r| r.values.pop().map(drop).unwrap_or(()),
        "has 1 values for 2 slots",
    );
    refused(
        |r| r.to = "not an address".into(),
        "is not an email address",
    );
    refused(|r| r.message_id = "a b".into(), "Message-ID");
    refused(|r| r.unsubscribe_token = None, "needs an unsubscribe token");
    refused(
        |r| r.unsubscribe_token = Some("a&b=c".into()),
        "needs an unsubscribe token",
    );
    let mut no_prefix = content();
    no_prefix.unsubscribe_prefix = None;
    let campaign = mailer.campaign(no_prefix).unwrap();
    let Err(err) = campaign.prepare(&recipient("Ann")) else {
        panic!("a token without a prefix was accepted")
    };
    assert!(
        err.to_string().contains("campaign has no unsubscribe URL"),
        "{err}"
    );

    for (edit, why) in [
        (
            (|c: &mut CampaignContent| c.slots.push(String::new())) as fn(&mut CampaignContent),
            "is empty",
        ),
        (
            |c| c.unsubscribe_prefix = Some("ftp://x.example/u?t=".into()),
            "must use https or http",
        ),
        (
            |c| c.unsubscribe_prefix = Some("https://x.example/a b?t=".into()),
            "needing no quoting",
        ),
    ] {
        let mut c = content();
        edit(&mut c);
        let err = mailer.campaign(c).unwrap_err();
        assert!(err.to_string().contains(why), "{err}");
    }
}

#[tokio::test]
async fn without_html_it_is_a_single_text_part() {
    let mailer = mailer();
    let mut c = content();
    c.html = None;
    let campaign = mailer.campaign(c).unwrap();
    let raw = mailer
        .format_campaign(&campaign, &recipient("Ann"))
        .unwrap();
    let mail = parse_mail(&raw).unwrap();
    assert_eq!(mail.ctype.mimetype, "text/plain");
    assert!(bodies(&mail)[0].1.starts_with("Dear Ann,\r\n"));
}

#[tokio::test]
async fn email_for_is_the_campaigns_message_as_an_ordinary_email() {
    let mailer = mailer();
    let mut rng = fastrand::Rng::with_seed(11);
    // No CR: a piece's lone CR is kept as it is, lettre's is not (see above).
    let alphabet: Vec<char> = "ab =.\t\n\u{e9}\u{1F680}<&>\"'/x{}".chars().collect();
    let text = |rng: &mut fastrand::Rng, max: usize| -> String {
        let n = rng.usize(0..max);
        (0..n)
            .map(|_| alphabet[rng.usize(0..alphabet.len())])
            .collect()
    };
    for case in 0..200 {
        let (a, b, c) = (text(&mut rng, 120), text(&mut rng, 200), text(&mut rng, 90));
        let content = CampaignContent {
            subject: format!("Case {case}"),
            text: format!("{a}[[v]]{b}[[v]][[w]]{c}"),
            html: Some(format!("<p>{c}[[w]]</p>{a}[[v]]")),
            slots: vec!["[[v]]".into(), "[[w]]".into()],
            unsubscribe_prefix: Some("https://status.example.com/unsubscribe?token=".into()),
        };
        let campaign = mailer.campaign(content.clone()).unwrap();
        let r = Recipient {
            to: format!("\"User {case}\" <u{case}@example.org>"),
            message_id: format!("case-{case}"),
            unsubscribe_token: Some(format!("tok-{case}")),
            values: vec![text(&mut rng, 100), text(&mut rng, 30)],
        };
        let email = content.email_for(&r);
        assert_eq!(
            email.unsubscribe_url.as_deref(),
            Some(format!("https://status.example.com/unsubscribe?token=tok-{case}").as_str())
        );
        let html = email.html.clone().unwrap();
        let escaped_w = {
            let mut s = String::new();
            crate::page::format::escape_xml(&r.values[1], &mut s);
            s
        };
        assert!(
            html.starts_with(&format!("<p>{c}{escaped_w}</p>")),
            "case {case}"
        );
        let raw = mailer.format_campaign(&campaign, &r).unwrap();
        let single = mailer.format(&email).unwrap();
        let (a, b) = (parse_mail(&raw).unwrap(), parse_mail(&single).unwrap());
        for name in ["From", "To", "Subject", "Message-ID", "List-Unsubscribe"] {
            assert_eq!(header(&a, name), header(&b, name), "case {case}: {name}");
        }
        assert_eq!(bodies(&a), bodies(&b), "case {case}");
    }
}
