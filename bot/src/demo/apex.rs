//! The demo's "apex-api" services: one tiny in-process HTTP server per region, on loopback,
//! standing in for the seed plan's API. `GET /health` answers with JSON saying whether the
//! region's database is reachable and writable: 200 when it is writable (a primary), 503
//! otherwise (a standby, or a dead server). So the DR side's health turns green exactly when its
//! database has been promoted, which is what the drill waits for.

use std::{net::SocketAddr, str::FromStr, sync::Arc, time::Duration};

use axum::{Json, Router, extract::State, http::StatusCode, routing::get};
use serde_json::{Value, json};
use sqlx::{ConnectOptions, Connection, postgres::PgConnectOptions};
use tokio_util::sync::CancellationToken;

/// How long a health request waits for the database.
const DB_TIMEOUT: Duration = Duration::from_secs(1);

struct Region {
    name: String,
    db_url: String,
}

/// A running apex-api service.
pub struct Apex {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its health URL.
    pub health_url: String,
}

/// Starts the service of region `name` on `ip` (a free port), checking the database at
/// `db_url`; it stops when `shutdown` fires.
pub async fn start(
    name: &str,
    ip: &str,
    db_url: &str,
    shutdown: CancellationToken,
) -> anyhow::Result<Apex> {
    let listener = tokio::net::TcpListener::bind((ip, 0))
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {ip} for apex-api {name}: {e}"))?;
    let addr = listener.local_addr()?;
    let region = Arc::new(Region {
        name: name.to_string(),
        db_url: db_url.to_string(),
    });
    let app = Router::new()
        .route("/health", get(health))
        .with_state(region);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
    });
    Ok(Apex {
        addr,
        health_url: format!("http://{addr}/health"),
    })
}

async fn health(State(r): State<Arc<Region>>) -> (StatusCode, Json<Value>) {
    let (reachable, writable, error) = match check(&r.db_url).await {
        Ok(writable) => (true, writable, None),
        Err(e) => (false, false, Some(e)),
    };
    let status = match (reachable, writable) {
        (true, true) => "ok",
        (true, false) => "standby",
        _ => "down",
    };
    let code = if writable {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(json!({
            "service": "apex-api",
            "region": r.name,
            "status": status,
            "database": { "reachable": reachable, "writable": writable, "error": error },
        })),
    )
}

/// Whether the database answers and takes writes (is not in recovery).
async fn check(url: &str) -> Result<bool, String> {
    let opts = PgConnectOptions::from_str(url)
        .map_err(|e| e.to_string())?
        .application_name("apex-api")
        .disable_statement_logging();
    let q = async {
        let mut conn = sqlx::PgConnection::connect_with(&opts).await?;
        let in_recovery: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
            .fetch_one(&mut conn)
            .await?;
        let _ = conn.close().await;
        Ok::<bool, sqlx::Error>(!in_recovery)
    };
    match tokio::time::timeout(DB_TIMEOUT, q).await {
        Ok(Ok(w)) => Ok(w),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {}s", DB_TIMEOUT.as_secs())),
    }
}
