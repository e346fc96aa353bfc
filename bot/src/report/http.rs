//! `GET /reports/incidents/<id>` and `GET /reports/runs/<id>`: the report's HTML page, built
//! from the store on each request. Routed only when `[server] reports = true` (reports name
//! people; see the README's "Reports"). An unknown id is one 404 page; a store failure is
//! logged with context and answered with a short 503.

use axum::{
    Router,
    extract::{Path, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};

use super::Subject;
use crate::app::App;

/// The report routes.
pub fn routes() -> Router<App> {
    Router::new()
        .route("/reports/incidents/{id}", get(incident))
        .route("/reports/runs/{id}", get(run))
}

async fn incident(State(app): State<App>, Path(id): Path<String>) -> Response {
    page(&app, id.parse().ok().map(Subject::Incident)).await
}

async fn run(State(app): State<App>, Path(id): Path<String>) -> Response {
    page(&app, id.parse().ok().map(Subject::Run)).await
}

fn plain(status: StatusCode, body: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

async fn page(app: &App, subject: Option<Subject>) -> Response {
    let Some(subject) = subject else {
        return plain(StatusCode::NOT_FOUND, "no such report\n");
    };
    match super::build(app, subject).await {
        Ok(Some(report)) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            super::html::render(&report),
        )
            .into_response(),
        Ok(None) => plain(StatusCode::NOT_FOUND, "no such report\n"),
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), %subject, "building a report failed");
            plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "report temporarily unavailable\n",
            )
        }
    }
}
