//! Notification templates: the defaults carry the seed plan's texts, overrides replace one
//! template, and bad templates fail with errors that name the template, line and variable.

use std::path::Path;

use notifier::templates::{
    Context, EMAIL_HTML, EMAIL_SUBJECT, EMAIL_TEXT, Origin, STATUSPAGE_BODY, STATUSPAGE_TITLE,
    TemplateError, Templates,
};

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

#[test]
fn defaults_render_the_seed_texts() {
    let t = Templates::load(None).unwrap();
    t.check_all().unwrap();

    let ctx = Templates::sample_context(STATUSPAGE_BODY);
    let incident = t.incident_text(&ctx).unwrap();
    assert_eq!(incident.title, "Service Degradation - DR Activated");
    assert!(
        incident
            .body
            .contains("We are experiencing issues in our primary region (us-east-1)."),
        "{}",
        incident.body
    );
    assert!(incident.body.contains("DR site activated."));
    assert!(
        incident
            .body
            .contains("failover, started 2026-11-26 14:05 UTC")
    );
    assert!(
        incident
            .body
            .contains("Latest update (2026-11-26 14:20 UTC): Traffic is moving to the DR region.")
    );

    let email = t.email(&Templates::sample_context(EMAIL_TEXT)).unwrap();
    assert_eq!(email.subject, "Service Update - DR Activation");
    for part in [&email.text, &email.html] {
        assert!(part.contains("Dear Jane Doe,"), "{part}");
        assert!(part.contains("Our disaster recovery site has been activated"));
        assert!(part.contains("Recent data may be delayed"));
        assert!(part.contains("will provide updates every hour"));
        assert!(part.contains("https://status.example.com"));
        assert!(part.contains("https://status.example.com/unsubscribe?token=sample-token"));
    }
    assert!(
        email
            .text
            .contains("Expected Impact:\n- Brief service interruption (<15 minutes)")
    );
    assert!(
        email
            .text
            .contains("Status Page: https://status.example.com\n")
    );
    assert!(email.html.contains("(&lt;15 minutes)"));
    assert!(
        email
            .html
            .contains("<a href=\"https://status.example.com\">")
    );
    assert!(email.html.starts_with("<!DOCTYPE html>"));
}

/// The Statuspage title is the incident's own (the DR runbooks' default is the seed's
/// "Service Degradation - DR Activated"), and an incident without impact (a drill) does not
/// announce that the DR site is activated.
#[test]
fn a_drill_is_not_announced_as_a_dr_activation() {
    let t = Templates::load(None).unwrap();
    let mut ctx = Templates::sample_context(STATUSPAGE_BODY);
    ctx.incident.name = "DR drill: failover to us-west-2".into();
    ctx.incident.impact = "none".into();
    let text = t.incident_text(&ctx).unwrap();
    assert_eq!(text.title, "DR drill: failover to us-west-2");
    assert!(!text.body.contains("DR site activated"), "{}", text.body);
    assert!(!text.body.contains("experiencing issues"), "{}", text.body);
    assert!(
        text.body.starts_with("Recovery is under way") || text.body.starts_with("Latest update"),
        "{}",
        text.body
    );
}

#[test]
fn absent_optional_values_render_as_nothing() {
    let t = Templates::load(None).unwrap();
    let ctx = Context::sample_minimal(true);
    let email = t.email(&ctx).unwrap();
    assert!(email.text.starts_with("Dear Customer,\n"), "{}", email.text);
    assert!(!email.text.contains("fully restored"), "{}", email.text);
    assert!(!email.text.contains("Latest update"));
    assert!(!email.text.contains("none"), "{}", email.text);

    let body = t
        .render(STATUSPAGE_BODY, &Context::sample_minimal(false))
        .unwrap();
    assert_eq!(
        body.trim_end(),
        "We are experiencing issues in our primary region (us-east-1). DR site activated."
    );
}

#[test]
fn an_override_replaces_only_its_template() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        EMAIL_SUBJECT,
        "[{{ incident.impact | upper }}] {{ incident.name }}\n",
    );
    write(dir.path(), ".swp-ignored", "{{ nonsense");
    std::fs::create_dir(dir.path().join("page")).unwrap();
    let t = Templates::load(Some(dir.path())).unwrap();
    t.check_all().unwrap();
    let ctx = Templates::sample_context(EMAIL_SUBJECT);
    assert_eq!(
        t.render(EMAIL_SUBJECT, &ctx).unwrap(),
        "[MAJOR] Service Degradation - DR Activated"
    );
    assert_eq!(
        t.origin(EMAIL_SUBJECT),
        Some(&Origin::Override(dir.path().join(EMAIL_SUBJECT)))
    );
    assert_eq!(t.origin(EMAIL_TEXT), Some(&Origin::Builtin));
    assert!(
        t.render(EMAIL_TEXT, &ctx)
            .unwrap()
            .contains("Dear Jane Doe")
    );
}

#[test]
fn subjects_and_titles_stay_on_one_line() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), STATUSPAGE_TITLE, "{{ incident.name }}");
    let t = Templates::load(Some(dir.path())).unwrap();
    let mut ctx = Templates::sample_context(STATUSPAGE_TITLE);
    ctx.incident.name = "DB down\r\nBcc: everyone@example.com".into();
    assert_eq!(
        t.render(STATUSPAGE_TITLE, &ctx).unwrap(),
        "DB down Bcc: everyone@example.com"
    );
}

#[test]
fn an_unknown_variable_names_template_line_and_variable() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        EMAIL_TEXT,
        "Hello {{ recipient.email }},\n\nThe incident {{ incident.nme }} is ongoing.\n",
    );
    let t = Templates::load(Some(dir.path())).unwrap();
    let errors = t.check_all().unwrap_err();
    assert_eq!(errors.0.len(), 1, "{errors}");
    match &errors.0[0] {
        TemplateError::UnknownVariable {
            template,
            origin,
            line,
            variable,
        } => {
            assert_eq!(template, EMAIL_TEXT);
            assert_eq!(origin, &Origin::Override(dir.path().join(EMAIL_TEXT)));
            assert_eq!(*line, Some(3));
            assert_eq!(variable, "incident.nme");
        }
        other => panic!("unexpected error {other:?}"),
    }
    let text = errors.to_string();
    assert!(
        text.contains("email_body.txt")
            && text.contains("line 3")
            && text.contains("`incident.nme`"),
        "{text}"
    );
}

#[test]
fn status_templates_may_not_use_the_recipient() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), STATUSPAGE_BODY, "Hi {{ recipient.email }}");
    let t = Templates::load(Some(dir.path())).unwrap();
    let errors = t.check_all().unwrap_err();
    assert_eq!(errors.0.len(), 1, "{errors}");
    let text = errors.to_string();
    assert!(text.contains("statuspage_body.txt"), "{text}");
    assert!(text.contains("line 1"), "{text}");
}

#[test]
fn an_optional_value_used_without_a_guard_fails_the_check() {
    // Fine with the full sample, broken when there are no updates yet.
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        STATUSPAGE_BODY,
        "Latest: {{ incident.updates[0].body }}",
    );
    let t = Templates::load(Some(dir.path())).unwrap();
    let full = Templates::sample_context(STATUSPAGE_BODY);
    assert!(t.render(STATUSPAGE_BODY, &full).is_ok());
    let errors = t.check_all().unwrap_err();
    assert!(
        errors.to_string().contains("incident.updates[0]"),
        "{errors}"
    );
}

#[test]
fn a_syntax_error_is_reported_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        EMAIL_HTML,
        "<p>ok</p>\n<p>{% if eta %}soon</p>\n",
    );
    write(dir.path(), EMAIL_SUBJECT, "{{ incident.name ");
    let errors = Templates::load(Some(dir.path())).unwrap_err();
    assert_eq!(errors.0.len(), 2, "{errors}");
    let html = errors
        .0
        .iter()
        .find(|e| matches!(e, TemplateError::Syntax { template, .. } if template == EMAIL_HTML))
        .unwrap_or_else(|| panic!("no syntax error for the HTML template: {errors}"));
    let TemplateError::Syntax { line, message, .. } = html else {
        unreachable!()
    };
    assert!(line.is_some());
    assert!(
        message.contains("endif") || message.contains("end of input"),
        "{message}"
    );
    let text = errors.to_string();
    assert!(
        text.contains("email_subject.txt") && text.contains("syntax error"),
        "{text}"
    );
}

#[test]
fn html_escapes_a_hostile_incident_name_but_text_does_not() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), EMAIL_HTML, "<h1>{{ incident.name }}</h1>");
    write(dir.path(), EMAIL_TEXT, "{{ incident.name }}");
    let t = Templates::load(Some(dir.path())).unwrap();
    let mut ctx = Templates::sample_context(EMAIL_HTML);
    ctx.incident.name = "<script>alert(\"x\")</script> & <b>".into();
    let html = t.render(EMAIL_HTML, &ctx).unwrap();
    assert!(!html.contains("<script>"), "{html}");
    assert!(html.contains("&lt;script&gt;"), "{html}");
    assert!(html.contains("&amp; &lt;b&gt;"), "{html}");
    assert_eq!(
        t.render(EMAIL_TEXT, &ctx).unwrap(),
        "<script>alert(\"x\")</script> & <b>"
    );

    // The default HTML template escapes the latest update's text too.
    let t = Templates::load(None).unwrap();
    ctx.incident.updates[1].body = "<img src=x onerror=alert(1)>".into();
    let html = t.render(EMAIL_HTML, &ctx).unwrap();
    assert!(!html.contains("<img"), "{html}");
    assert!(
        html.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "{html}"
    );
}

#[test]
fn unknown_files_and_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "email_subjet.txt", "typo");
    let errors = Templates::load(Some(dir.path())).unwrap_err();
    let text = errors.to_string();
    assert!(
        text.contains("email_subjet.txt") && text.contains("not a known template"),
        "{text}"
    );
    assert!(
        text.contains("email_subject.txt"),
        "lists the known names: {text}"
    );

    let missing = dir.path().join("nope");
    let errors = Templates::load(Some(&missing)).unwrap_err();
    assert!(errors.to_string().contains("nope"), "{errors}");

    let t = Templates::load(None).unwrap();
    let err = t
        .render("email.txt", &Context::sample())
        .unwrap_err()
        .to_string();
    assert!(err.contains("no template named \"email.txt\""), "{err}");
}

#[test]
fn non_utf8_override_is_a_read_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(EMAIL_TEXT), b"caf\xe9").unwrap();
    let errors = Templates::load(Some(dir.path())).unwrap_err();
    assert!(
        matches!(&errors.0[0], TemplateError::Read { reason, .. } if reason.contains("not UTF-8")),
        "{errors}"
    );
}

#[test]
fn names_lists_every_template() {
    let names: Vec<_> = Templates::names().collect();
    assert_eq!(
        names,
        [
            STATUSPAGE_TITLE,
            STATUSPAGE_BODY,
            EMAIL_SUBJECT,
            EMAIL_TEXT,
            EMAIL_HTML
        ]
    );
}

#[test]
fn templates_can_be_shared_between_tasks() {
    fn shared<T: Send + Sync + 'static>() {}
    shared::<Templates>();
    shared::<notifier::statuspage::StatuspageClient>();
}
