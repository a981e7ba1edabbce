//! Finding a customer without putting their identifier in a URL, and the
//! customers active most recently: what the Customer 360 page starts from.
//!
//! In: `POST /v1/profiles/lookup` with `{namespace, value}` in the body (a raw
//! email or phone is normalised and hashed exactly as on ingest, and never
//! logged); `GET /v1/profiles/recent?limit=N`. Out: the same profile view as
//! `GET /v1/profiles/{namespace}/{value}`; the `N` profiles with the latest
//! event time, newest first.
//! Invariant: read-only; the recent list reads the core's index of recently
//! active profiles ([`State::recent`](onejourney_core::State::recent), kept
//! as events are applied), so it costs O(N) whatever the number of profiles,
//! and takes one map guard at a time.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Query, State as AxumState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use onejourney_core::journey::{Stage, Tier};
use onejourney_core::recent::RECENT_MAX;
use onejourney_core::{EventTime, OneId};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::openapi::{ErrorDoc, IdentifierDoc, ProfileDoc, StageDoc, TierDoc};
use super::{error, profile_of, HttpState};

/// An identifier to look up. For `one_id`, `value` is the One ID.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LookupRequest {
    /// `customer_id`, `email`, `phone`, `email_sha256`, ..., or `one_id`.
    pub namespace: String,
    pub value: String,
}

/// The profile an identifier in the body belongs to.
#[utoipa::path(
    post,
    path = "/v1/profiles/lookup",
    tag = "profiles",
    request_body = LookupRequest,
    responses(
        (status = 200, description = "The profile", body = ProfileDoc),
        (status = 400, description = "A malformed body or an invalid identifier", body = ErrorDoc),
        (status = 401, description = "A bearer token is required", body = ErrorDoc),
        (status = 404, description = "No profile holds the identifier", body = ErrorDoc),
        (status = 503, description = "Too many concurrent lookups; with scale-out, the process that owns the journey did not answer or no process owns it yet", body = ErrorDoc),
    ),
    security((), ("bearer" = []))
)]
pub(super) async fn lookup(
    AxumState(s): AxumState<HttpState>,
    headers: HeaderMap,
    body: Result<Json<LookupRequest>, JsonRejection>,
) -> Response {
    let Json(req) = match body {
        Ok(b) => b,
        Err(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "the body must be JSON {\"namespace\": ..., \"value\": ...}",
            )
        }
    };
    profile_of(&s, &req.namespace, &req.value, &headers).await
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct RecentQuery {
    /// How many profiles (1 to 100, default 20).
    limit: Option<usize>,
}

/// The customers active most recently.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecentList {
    /// Newest event time first.
    pub profiles: Vec<RecentProfile>,
}

/// A profile in the recent list.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecentProfile {
    #[schema(value_type = String)]
    pub one_id: OneId,
    /// The event time of its latest event.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_seen: Option<EventTime>,
    #[schema(value_type = StageDoc)]
    pub stage: Stage,
    #[schema(value_type = TierDoc)]
    pub tier: Tier,
    pub channels_touched: Vec<String>,
    /// The profile's strongest identifier (a hash for email and phone).
    pub identifier: Option<IdentifierDoc>,
}

/// The customers with the latest event time, newest first.
#[utoipa::path(
    get,
    path = "/v1/profiles/recent",
    tag = "profiles",
    params(RecentQuery),
    responses(
        (status = 200, description = "Recently active profiles", body = RecentList),
        (status = 400, description = "A malformed query", body = ErrorDoc),
        (status = 401, description = "A bearer token is required", body = ErrorDoc),
        (status = 503, description = "Too many concurrent lookups", body = ErrorDoc),
    ),
    security((), ("bearer" = []))
)]
pub(super) async fn recent(
    AxumState(s): AxumState<HttpState>,
    query: Result<Query<RecentQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return error(StatusCode::BAD_REQUEST, "limit must be a number from 1 to 100");
    };
    let limit = q.limit.unwrap_or(20).clamp(1, RECENT_MAX);
    // The newest `limit` by last event time (ties: smaller One ID first).
    let mut newest = s.state.recent(limit);
    let ns = s.state.identity.namespaces();
    let mut profiles: Vec<RecentProfile> = Vec::with_capacity(newest.len());
    for one_id in newest.drain(..) {
        let Some(j) = s.state.journey(&one_id) else {
            continue;
        };
        let identifier = s
            .state
            .identity
            .with_profile(&one_id, |p| {
                p.ids().first().map(|k| IdentifierDoc {
                    namespace: ns.name(k.ns()).to_string(),
                    value: k.value().to_string(),
                })
            })
            .flatten();
        profiles.push(RecentProfile {
            last_seen: j.last_seen,
            stage: j.stage(),
            tier: j.tier,
            channels_touched: j.channels_touched().into_iter().map(str::to_string).collect(),
            identifier,
            one_id,
        });
    }
    profiles.sort_by(|a, b| b.last_seen.cmp(&a.last_seen).then_with(|| a.one_id.cmp(&b.one_id)));
    Json(RecentList { profiles }).into_response()
}
