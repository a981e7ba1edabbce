//! One HTTP port: `/metrics`, `/healthz`, `/readyz` and the profile lookup
//! `GET /v1/profiles/{namespace}/{value}`.
//!
//! Raw email and phone values in a lookup path are normalised and hashed
//! before the lookup, exactly as on ingest; they are never logged.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, State as AxumState};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use onejourney_core::State;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::health::Health;
use crate::metrics::Metrics;

#[derive(Clone)]
pub struct HttpState {
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    pub state: Arc<State>,
}

pub fn router(s: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/profiles/{namespace}/{value}", get(profile))
        .with_state(s)
}

/// Binds `addr` and serves until `cancel`; returns the bound address at once.
pub async fn serve(
    addr: SocketAddr,
    s: HttpState,
    cancel: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = router(s);
    let handle = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await
    });
    Ok((bound, handle))
}

async fn metrics(AxumState(s): AxumState<HttpState>) -> Response {
    let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    s.metrics
        .profiles
        .set(count(s.state.identity.profile_count()));
    s.metrics
        .identifiers
        .set(count(s.state.identity.identifier_count()));
    s.metrics.ready.set(i64::from(s.health.ready()));
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
        .into_response()
}

async fn healthz(AxumState(s): AxumState<HttpState>) -> Response {
    if s.health.alive() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "wedged: the ingest loop has not run recently\n",
        )
            .into_response()
    }
}

async fn readyz(AxumState(s): AxumState<HttpState>) -> Response {
    if s.health.ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

async fn profile(
    AxumState(s): AxumState<HttpState>,
    Path((namespace, value)): Path<(String, String)>,
) -> Response {
    let key = match s.state.identity.namespaces().normalise(&namespace, &value) {
        Err(unknown) => return error(StatusCode::BAD_REQUEST, &unknown.to_string()),
        Ok(Err(_blocked)) => {
            return error(StatusCode::NOT_FOUND, "no profile holds this identifier")
        }
        Ok(Ok(key)) => key,
    };
    match s.state.view(&key) {
        Some(view) => Json(view).into_response(),
        None => error(StatusCode::NOT_FOUND, "no profile holds this identifier"),
    }
}
