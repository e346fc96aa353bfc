//! The HTTP server (axum): health, readiness, metrics, the public status page
//! (`crate::status_page`), the email unsubscribe endpoint (`crate::unsubscribe`) and, when
//! `[server] reports = true`, the report pages (`crate::report::http`); front-ends add their
//! routes here.

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
        .with_state(app)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(app): State<App>) -> impl IntoResponse {
    let ping = tokio::time::timeout(std::time::Duration::from_secs(2), app.store.ping());
    if ping.await.unwrap_or(false) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "store unreachable\n")
    }
}

async fn metrics(State(app): State<App>) -> impl IntoResponse {
    match app.store.run_counts().await {
        Ok(runs) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            app.metrics.render(&runs),
        ),
        Err(e) => {
            tracing::error!(
                error = format!("{e:#}"),
                "reading run counts for /metrics failed"
            );
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                "store unreachable\n".to_string(),
            )
        }
    }
}
