//! The built-in templates, embedded from `notifier/templates/`, and which of them are for email.

/// Status page incident title.
pub const STATUSPAGE_TITLE: &str = "statuspage_title.txt";
/// Status page incident body.
pub const STATUSPAGE_BODY: &str = "statuspage_body.txt";
/// Customer email subject.
pub const EMAIL_SUBJECT: &str = "email_subject.txt";
/// Customer email, plain-text part.
pub const EMAIL_TEXT: &str = "email_body.txt";
/// Customer email, HTML part (autoescaped).
pub const EMAIL_HTML: &str = "email_body.html";

/// Every template: its file name and its built-in source.
pub(crate) const DEFAULTS: &[(&str, &str)] = &[
    (
        STATUSPAGE_TITLE,
        include_str!("../../templates/statuspage_title.txt"),
    ),
    (
        STATUSPAGE_BODY,
        include_str!("../../templates/statuspage_body.txt"),
    ),
    (
        EMAIL_SUBJECT,
        include_str!("../../templates/email_subject.txt"),
    ),
    (EMAIL_TEXT, include_str!("../../templates/email_body.txt")),
    (EMAIL_HTML, include_str!("../../templates/email_body.html")),
];

/// Email templates are rendered once per recipient, so `recipient` is set for them; the others
/// are rendered once per update and must not use it.
pub(crate) fn is_email(name: &str) -> bool {
    name.starts_with("email_")
}

/// Titles and subjects are one line: the rendered text is trimmed and its line breaks become
/// spaces (a header can never be split by a hostile incident name).
pub(crate) fn is_single_line(name: &str) -> bool {
    name.ends_with("_title.txt") || name.ends_with("_subject.txt")
}
