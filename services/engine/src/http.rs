//! One HTTP port: `/metrics`, `/healthz`, `/readyz`, the profile lookup
//! `GET /v1/profiles/{namespace}/{value}`, its `/explain`, and forget
//! (`DELETE /v1/profiles/{namespace}/{value}`); `POST /v1/profiles/lookup`
//! and `GET /v1/profiles/recent` ([`search`]), the churn model at
//! `GET /v1/models/churn` and the action models at `GET /v1/models/actions`
//! ([`models`]), the OpenAPI document at `/v1/openapi.json` ([`openapi`]),
//! and the Customer 360 page at `/ui`
//! ([`ui`]). [`server`] accepts the connections: a connection limit, the
//! header-read and per-request timeouts.
//!
//! Forget does not touch state here: the pipeline is the single writer. The
//! handler publishes the command (normalised and hashed identifier, never a
//! raw email or phone) on the `identity-control` topic, where it is ordered
//! with every other identity change and survives a restart; 202 means it is
//! on the topic. Reading and erasing are different powers: `DELETE` needs an
//! erase token (`http.erase_tokens`), whose name goes on the command as
//! `requested_by` and from there on the erasure record; the read token gets
//! 403, and without erase tokens erasure over HTTP is off (403).
//!
//! Raw email and phone values in a lookup path are normalised and hashed
//! before the lookup, exactly as on ingest; they are never logged. The lookup
//! API can require a bearer token, serves a bounded number of requests at
//! once, and answers every malformed request with a 4xx and a JSON reason.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, Request, State as AxumState};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use std::time::Duration;

use onejourney_core::decide::DecideConfig;
use onejourney_core::ids::IdKey;
use onejourney_core::State;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::health::Health;
use crate::metrics::Metrics;

pub mod forward;
pub mod models;
pub mod openapi;
pub mod search;
pub mod server;
pub mod ui;

use openapi::{AcceptedDoc, ErrorDoc, ExplainDoc, ProfileDoc};

/// Longest identifier value the contract allows, plus room for URL escapes.
const MAX_VALUE_LEN: usize = 256;

#[derive(Clone)]
pub struct HttpState {
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    pub state: Arc<State>,
    /// Empty: no token required.
    pub bearer_token: Arc<str>,
    /// (name, token) of every erase token; empty: no erasure over HTTP.
    pub erase_tokens: Arc<[(Arc<str>, String)]>,
    pub lookups: Arc<Semaphore>,
    /// Where forget commands go; `None`: forget over HTTP is unavailable.
    pub control: Option<ControlSink>,
    /// Timer delays the Customer 360 page places on its timeline.
    pub timers: ui::TimerDelays,
    /// The catalog the action models report on.
    pub decide: Arc<DecideConfig>,
    /// With `scaleout.route_journeys`: who owns which journey, so a lookup
    /// is answered by the owner (`None`: every journey is here).
    pub owners: Option<forward::Owners>,
}

/// The producer and topic for `identity-control` commands.
#[derive(Clone)]
pub struct ControlSink {
    pub producer: FutureProducer,
    pub topic: Arc<str>,
}

pub fn router(s: HttpState) -> Router {
    let api = Router::new()
        .route("/v1/profiles/lookup", post(search::lookup))
        .route("/v1/profiles/recent", get(search::recent))
        .route("/v1/profiles/{namespace}/{value}", get(profile).delete(forget))
        .route("/v1/profiles/{namespace}/{value}/explain", get(explain))
        .route("/v1/models/churn", get(models::churn))
        .route("/v1/models/actions", get(models::actions))
        .route_layer(middleware::from_fn_with_state(s.clone(), guard));
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/openapi.json", get(openapi::openapi_json))
        .merge(api)
        .merge(ui::routes())
        .fallback(not_found)
        .with_state(s)
}

/// Binds `addr` and serves until `cancel` (see [`server`]); returns the
/// bound address at once.
pub async fn serve(
    addr: SocketAddr,
    s: HttpState,
    limits: server::Limits,
    cancel: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let metrics = s.metrics.clone();
    let app = router(s);
    let handle = tokio::spawn(server::run(listener, app, limits, metrics, cancel));
    Ok((bound, handle))
}

/// The name of the erase token a `DELETE` came with (see [`guard`]).
#[derive(Clone)]
struct Eraser(Arc<str>);

/// Bearer tokens and the concurrency limit for the lookup API: the read
/// token for reads, an erase token for `DELETE`.
async fn guard(AxumState(s): AxumState<HttpState>, mut req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    if req.method() == Method::DELETE {
        match eraser(&s, given.as_deref()) {
            Ok(name) => {
                req.extensions_mut().insert(Eraser(name));
            }
            Err(r) => return r,
        }
    } else if !s.bearer_token.is_empty()
        && !given.is_some_and(|g| constant_time_eq(g.as_bytes(), s.bearer_token.as_bytes()))
    {
        return unauthorized("a valid bearer token is required");
    }
    let Ok(_permit) = s.lookups.try_acquire() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many concurrent lookups; retry shortly",
        );
    };
    next.run(req).await
}

/// The name of the erase token `given` is; otherwise why not: 403 when
/// erasure over HTTP is off or the token only reads, 401 when none fits.
#[allow(clippy::result_large_err)]
fn eraser(s: &HttpState, given: Option<&str>) -> Result<Arc<str>, Response> {
    if s.erase_tokens.is_empty() {
        return Err(error(
            StatusCode::FORBIDDEN,
            "erasure over HTTP is disabled on this instance: no erase token is configured (http.erase_tokens)",
        ));
    }
    let Some(given) = given else {
        return Err(unauthorized("an erase token is required to erase a profile"));
    };
    // Every token is compared, so the time taken does not say which matched.
    let mut found = None;
    for (name, token) in s.erase_tokens.iter() {
        if constant_time_eq(given.as_bytes(), token.as_bytes()) {
            found = Some(name.clone());
        }
    }
    if let Some(name) = found {
        return Ok(name);
    }
    if !s.bearer_token.is_empty() && constant_time_eq(given.as_bytes(), s.bearer_token.as_bytes()) {
        return Err(error(
            StatusCode::FORBIDDEN,
            "this token may read profiles but not erase them: erasure needs an erase token (http.erase_tokens)",
        ));
    }
    Err(unauthorized("an erase token is required to erase a profile"))
}

fn unauthorized(message: &str) -> Response {
    let mut r = error(StatusCode::UNAUTHORIZED, message);
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    r
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Reads the state's size as the writer keeps it: no walk of the state and
/// no identity writer lock, so a scrape costs the same at any size and
/// answers while a snapshot is written.
async fn metrics(AxumState(s): AxumState<HttpState>) -> Response {
    let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    let size = s.state.size();
    s.metrics.profiles.set(count(size.profiles));
    s.metrics.identifiers.set(count(size.identifiers));
    s.metrics.journeys.set(count(size.journeys));
    s.metrics.journeys_frozen_now.set(count(size.frozen));
    s.metrics.journeys_thawed.inc_by(s.state.take_thawed());
    s.metrics.state_memory.set(count(size.bytes));
    s.metrics.ready.set(i64::from(s.health.ready()));
    models::export(&s.state, &s.metrics);
    s.metrics.set_actions(&s.state.action_reports(&s.decide));
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
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

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no such endpoint: see /metrics, /healthz, /readyz, /v1/profiles/{namespace}/{value}[/explain], \
         /v1/models/churn, /v1/models/actions, /v1/openapi.json, /ui",
    )
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// The profile an identifier belongs to (`one_id`: the profile with that One ID).
#[utoipa::path(
    get,
    path = "/v1/profiles/{namespace}/{value}",
    tag = "profiles",
    params(
        ("namespace" = String, Path, description = "`customer_id`, `email`, `phone`, `email_sha256`, ..., or `one_id`"),
        ("value" = String, Path, description = "The identifier (email and phone are hashed before the lookup), or the One ID"),
    ),
    responses(
        (status = 200, description = "The profile", body = ProfileDoc),
        (status = 400, description = "An invalid identifier", body = ErrorDoc),
        (status = 401, description = "A bearer token is required", body = ErrorDoc),
        (status = 404, description = "No profile holds the identifier", body = ErrorDoc),
        (status = 503, description = "Too many concurrent lookups; with scale-out, the process that owns the journey did not answer or no process owns it yet", body = ErrorDoc),
    ),
    security((), ("bearer" = []))
)]
async fn profile(
    AxumState(s): AxumState<HttpState>,
    headers: HeaderMap,
    Path((namespace, value)): Path<(String, String)>,
) -> Response {
    profile_of(&s, &namespace, &value, &headers).await
}

/// The profile response for an identifier or a One ID, whether it came in
/// the path or in a lookup body: from this process, or with scale-out from
/// the process that owns the profile's journey.
async fn profile_of(s: &HttpState, namespace: &str, value: &str, headers: &HeaderMap) -> Response {
    if let Some(owners) = &s.owners {
        let one_id = if namespace == "one_id" {
            Some(value.to_string())
        } else {
            lookup_key(s, namespace, value)
                .ok()
                .and_then(|key| s.state.identity.one_id_of(&key))
                .map(|o| o.to_string())
        };
        if let Some(one_id) = one_id {
            match owners.of(&one_id, headers) {
                forward::Owner::Here => {}
                forward::Owner::There(owner) => return owners.ask(&owner, namespace, value, headers).await,
                forward::Owner::Unknown(q) => {
                    return forward::unavailable(&format!(
                        "no process of the group has said it owns state partition {q} yet (a rebalance); retry"
                    ))
                }
            }
        }
    }
    local_profile(s, namespace, value)
}

/// The profile as this process holds it.
fn local_profile(s: &HttpState, namespace: &str, value: &str) -> Response {
    if namespace == "one_id" && !value.is_empty() && value.len() <= MAX_VALUE_LEN {
        return match s.state.view_one_id(value) {
            Some(view) => Json(view).into_response(),
            None => error(StatusCode::NOT_FOUND, "no profile has this One ID"),
        };
    }
    let key = match lookup_key(s, namespace, value) {
        Ok(key) => key,
        Err(r) => return r,
    };
    match s.state.view(&key) {
        Some(view) => Json(view).into_response(),
        None => error(StatusCode::NOT_FOUND, "no profile holds this identifier"),
    }
}

/// The identifier of a lookup path, normalised and hashed as on ingest; a
/// `one_id` path resolves to the profile's strongest identifier.
#[allow(clippy::result_large_err)]
fn lookup_key(s: &HttpState, namespace: &str, value: &str) -> Result<IdKey, Response> {
    if value.is_empty() || value.len() > MAX_VALUE_LEN {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "the identifier value must be 1 to 256 characters",
        ));
    }
    let unknown = || error(StatusCode::NOT_FOUND, "no profile holds this identifier");
    if namespace == "one_id" {
        return s
            .state
            .identity
            .with_profile(value, |p| p.ids().first().cloned())
            .flatten()
            .ok_or_else(unknown);
    }
    match s.state.identity.namespaces().normalise(namespace, value) {
        Err(e) => Err(error(StatusCode::BAD_REQUEST, &e.to_string())),
        Ok(Err(_blocked)) => Err(unknown()),
        Ok(Ok(key)) => Ok(key),
    }
}

/// Why the identifiers of a profile are one profile: every link in order.
#[utoipa::path(
    get,
    path = "/v1/profiles/{namespace}/{value}/explain",
    tag = "profiles",
    params(
        ("namespace" = String, Path, description = "An identifier namespace, or `one_id`"),
        ("value" = String, Path, description = "The identifier, or the One ID"),
    ),
    responses(
        (status = 200, description = "The profile's links", body = ExplainDoc),
        (status = 400, description = "An invalid identifier", body = ErrorDoc),
        (status = 401, description = "A bearer token is required", body = ErrorDoc),
        (status = 404, description = "No profile holds the identifier", body = ErrorDoc),
        (status = 503, description = "Too many concurrent lookups", body = ErrorDoc),
    ),
    security((), ("bearer" = []))
)]
async fn explain(AxumState(s): AxumState<HttpState>, Path((namespace, value)): Path<(String, String)>) -> Response {
    let key = match lookup_key(&s, &namespace, &value) {
        Ok(key) => key,
        Err(r) => return r,
    };
    match s.state.explain(&key) {
        Some(view) => Json(view).into_response(),
        None => error(StatusCode::NOT_FOUND, "no profile holds this identifier"),
    }
}

/// Publishes a forget command for the profile the identifier belongs to.
#[utoipa::path(
    delete,
    path = "/v1/profiles/{namespace}/{value}",
    tag = "profiles",
    params(
        ("namespace" = String, Path, description = "An identifier namespace, or `one_id`"),
        ("value" = String, Path, description = "The identifier, or the One ID"),
    ),
    responses(
        (status = 202, description = "The forget command is on `identity-control`; the profile goes when the pipeline applies it, and the erasure is recorded on the erasures topic", body = AcceptedDoc),
        (status = 400, description = "An invalid identifier", body = ErrorDoc),
        (status = 401, description = "An erase token is required", body = ErrorDoc),
        (status = 403, description = "Erasure over HTTP is disabled (no erase token configured), or the token given may only read", body = ErrorDoc),
        (status = 404, description = "No profile holds the identifier", body = ErrorDoc),
        (status = 503, description = "Forget is unavailable, or the command could not be published", body = ErrorDoc),
    ),
    security(("erase" = []))
)]
async fn forget(
    AxumState(s): AxumState<HttpState>,
    Extension(Eraser(requested_by)): Extension<Eraser>,
    Path((namespace, value)): Path<(String, String)>,
) -> Response {
    let key = match lookup_key(&s, &namespace, &value) {
        Ok(key) => key,
        Err(r) => return r,
    };
    let Some(one_id) = s.state.identity.one_id_of(&key) else {
        return error(StatusCode::NOT_FOUND, "no profile holds this identifier");
    };
    let Some(control) = &s.control else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "forget is not available on this instance",
        );
    };
    let command = json!({
        "command": "forget",
        "namespace": s.state.identity.namespaces().name(key.ns()),
        "value": key.value(),
        "requested_by": &*requested_by,
        "via": "http",
    })
    .to_string();
    let record = FutureRecord::to(&control.topic).key(&*one_id).payload(&command);
    match control.producer.send(record, Duration::from_secs(10)).await {
        Ok(_) => (
            StatusCode::ACCEPTED,
            Json(json!({ "one_id": &*one_id, "status": "accepted" })),
        )
            .into_response(),
        Err((e, _)) => {
            warn!(error = %e, "publishing a forget command failed");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the forget command could not be published; retry",
            )
        }
    }
}
