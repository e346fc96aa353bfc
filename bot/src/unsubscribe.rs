//! The unsubscribe endpoint of customer email: `GET /unsubscribe?token=…` shows a small page
//! with a confirm button, `POST /unsubscribe?token=…` unsubscribes (RFC 8058 one-click, whose
//! body is `List-Unsubscribe=One-Click`, and the page's own form).
//!
//! A GET never unsubscribes: mail scanners and link previews fetch the links of a message, and
//! must not unsubscribe its reader. A POST is idempotent (a second one keeps the first time).
//! An unknown or malformed token gets one 404 page that says nothing about why. Pages are
//! plain server-rendered HTML (no JavaScript), and are neither cached, indexed nor sent as a
//! referrer, since their URL holds the token.

use axum::{
    Router,
    extract::{RawQuery, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};

use crate::{app::App, store::subscribers::Unsubscribed};

/// Where the endpoint is served; an email's link is `server.public_url` + this.
pub const PATH: &str = "/unsubscribe";

/// The unsubscribe link of the subscriber holding `token`, under `public_url`.
pub fn url(public_url: &str, token: &str) -> String {
    format!("{}{PATH}?token={token}", public_url.trim_end_matches('/'))
}

/// The routes (always present: links in sent email must keep working).
pub fn routes() -> Router<App> {
    Router::new().route(PATH, get(confirm_page).post(unsubscribe))
}

/// The `token` query parameter; empty when absent or unreadable (which then names no one).
fn token(query: Option<String>) -> String {
    query
        .and_then(|q| serde_urlencoded::from_str::<Vec<(String, String)>>(&q).ok())
        .and_then(|pairs| pairs.into_iter().find(|(k, _)| k == "token"))
        .map(|(_, v)| v)
        .unwrap_or_default()
}

async fn confirm_page(State(app): State<App>, RawQuery(q): RawQuery) -> Response {
    let token = token(q);
    match app.store.subscriber_by_token(&token).await {
        Ok(Some(s)) if s.unsubscribed_at.is_some() => page(
            &app,
            StatusCode::OK,
            "You are unsubscribed",
            &format!(
                "<p><strong>{}</strong> no longer receives service update emails.</p>",
                escape(&s.email)
            ),
        ),
        Ok(Some(s)) => page(
            &app,
            StatusCode::OK,
            "Unsubscribe from service updates?",
            &format!(
                "<p>Stop sending service update emails to <strong>{}</strong>?</p>\n\
                 <form method=\"post\" action=\"{}?token={}\">\n\
                 <button type=\"submit\">Unsubscribe</button>\n</form>",
                escape(&s.email),
                PATH.trim_start_matches('/'),
                escape(&token)
            ),
        ),
        Ok(None) => not_found(&app),
        Err(e) => failed(&app, &e),
    }
}

async fn unsubscribe(State(app): State<App>, RawQuery(q): RawQuery) -> Response {
    let token = token(q);
    match app.store.unsubscribe(&token).await {
        Ok(Unsubscribed::Now(s)) | Ok(Unsubscribed::Already(s)) => page(
            &app,
            StatusCode::OK,
            "You are unsubscribed",
            &format!(
                "<p><strong>{}</strong> will no longer receive service update emails.</p>",
                escape(&s.email)
            ),
        ),
        Ok(Unsubscribed::Unknown) => not_found(&app),
        Err(e) => failed(&app, &e),
    }
}

fn not_found(app: &App) -> Response {
    page(
        app,
        StatusCode::NOT_FOUND,
        "Link not valid",
        "<p>This unsubscribe link is not valid. Use the link from your most recent email.</p>",
    )
}

fn failed(app: &App, e: &anyhow::Error) -> Response {
    tracing::error!(error = format!("{e:#}"), "unsubscribe: store error");
    page(
        app,
        StatusCode::SERVICE_UNAVAILABLE,
        "Please try again",
        "<p>Your request could not be handled just now. Please try again in a few minutes.</p>",
    )
}

/// A complete page: `heading` is plain text, `body` is HTML already escaped.
fn page(app: &App, status: StatusCode, heading: &str, body: &str) -> Response {
    let site = escape(&app.settings.config.status_page.title);
    let heading = escape(heading);
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"robots\" content=\"noindex\">\n\
         <title>{heading} · {site}</title>\n\
         <style>body{{font-family:system-ui,sans-serif;line-height:1.5;color:#1a1a1a;\
         max-width:32em;margin:2em auto;padding:0 1em}}\
         button{{font-size:1.1em;padding:.6em 1.4em;border:2px solid #1a1a1a;border-radius:.3em;\
         background:#fff;color:#1a1a1a;cursor:pointer}}\
         button:focus{{outline:3px solid #1d4ed8;outline-offset:2px}}</style>\n\
         </head>\n<body>\n<main>\n<h1>{heading}</h1>\n{body}\n</main>\n\
         <footer><p>{site}</p></footer>\n</body>\n</html>\n"
    );
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::HeaderName::from_static("x-robots-tag"), "noindex"),
        ],
        html,
    )
        .into_response()
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_and_escaping() {
        assert_eq!(
            url("https://status.example.com/", "ab12"),
            "https://status.example.com/unsubscribe?token=ab12"
        );
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(token(Some("token=ab&x=1".into())), "ab");
        assert_eq!(token(Some("x=1".into())), "");
        assert_eq!(token(Some("%zz".into())), "");
        assert_eq!(token(None), "");
    }
}
