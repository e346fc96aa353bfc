//! The HTTP server (axum): health, readiness, metrics, the public status page
//! (`crate::status_page`), the email unsubscribe endpoint (`crate::unsubscribe`) and, when
//! `[server] reports = true`, the report pages (`crate::report::http`); front-ends add their
//! routes here. `crate::http_serve` serves it (connection cap, header timeout, shutdown
//! deadline); every request is answered within [`REQUEST_TIMEOUT`].

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};

use crate::app::App;

/// The router with every route drbot serves.
pub fn router(app: App) -> Router {
    let mut router = Router::new();
    if app.discord.is_some() {
        router = router.merge(crate::discord::routes());
    }
    if app.slack.as_ref().is_some_and(|s| !s.socket_mode) {
        router = router.merge(crate::slack::routes());
    }
    if app.settings.config.server.reports {
        router = router.merge(crate::report::http::routes());
    }
    router
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(crate::status_page::routes())
        .merge(crate::unsubscribe::routes())
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn(deadline))
        .with_state(app)
}

/// Largest request body read (413 beyond it), before any signature is checked: Slack's and
/// Discord's payloads stay well under it (a block_actions payload carries the whole card, at
/// most 50 blocks of 3,000 characters), and an unauthenticated client can make drbot buffer at
/// most this much per connection.
pub const MAX_BODY: usize = 512 * 1024;

/// Longest a request may take, its body included (a client sending its body a byte at a
/// time, a page stuck on the store): then 408 and the handler is dropped.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

async fn deadline(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(r) => r,
        Err(_) => (StatusCode::REQUEST_TIMEOUT, "request took too long\n").into_response(),
    }
}

/// How long `/readyz` and `/metrics` wait for the store: well inside any prober's or
/// scraper's timeout (Prometheus's default is 10 s), so they answer "unreachable" rather than
/// nothing.
const STORE_PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(app): State<App>) -> impl IntoResponse {
    let ping = tokio::time::timeout(STORE_PROBE_TIMEOUT, app.store.ping());
    if ping.await.unwrap_or(false) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "store unreachable\n")
    }
}

/// Prometheus text. A store that cannot be read is `drbot_store_up 0`, the process's own
/// counters still rendered: an outage is when they are wanted. The store gets
/// [`STORE_PROBE_TIMEOUT`], like `/readyz`.
async fn metrics(State(app): State<App>) -> impl IntoResponse {
    let runs = tokio::time::timeout(STORE_PROBE_TIMEOUT, app.store.run_counts())
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {STORE_PROBE_TIMEOUT:?}"))
        .and_then(|r| r);
    let runs = match runs {
        Ok(runs) => Some(runs),
        Err(e) => {
            tracing::error!(
                error = format!("{e:#}"),
                "reading run counts for /metrics failed"
            );
            None
        }
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(runs.as_deref()),
    )
}
