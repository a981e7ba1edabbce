//! `GET /v1/models/actions`: what the engine learned about its actions and
//! whether they work.
//!
//! In: the state's action models (learned propensities, holdout and uplift
//! counts) and the `[decide]` catalog. Out: per catalog action, decisions
//! sent and held out, conversions within the action's window, both rates,
//! the uplift (sent minus held out) with its 95% confidence interval, and the
//! learned response rate; with the settings they were measured under.
//! Keeps nothing: the models lock is held only to copy the counts out.

use axum::extract::State as AxumState;
use axum::response::{IntoResponse, Response};
use axum::Json;
use onejourney_core::decide::DecideConfig;
use onejourney_core::State;
use serde_json::{json, Value};

use super::openapi::{ActionModelsDoc, ErrorDoc};
use super::HttpState;

/// Per catalog action: sent, held out, conversions, rates, uplift with its
/// confidence interval, and the learned response rate.
#[utoipa::path(
    get,
    path = "/v1/models/actions",
    tag = "models",
    responses(
        (status = 200, description = "The action models", body = ActionModelsDoc),
        (status = 401, description = "A bearer token is required", body = ErrorDoc),
        (status = 503, description = "Too many concurrent lookups", body = ErrorDoc),
    ),
    security((), ("bearer" = []))
)]
pub(super) async fn actions(AxumState(s): AxumState<HttpState>) -> Response {
    Json(body(&s.state, &s.decide)).into_response()
}

/// The response body (see [`ActionModelsDoc`]).
pub fn body(state: &State, decide: &DecideConfig) -> Value {
    json!({
        "holdout_share": decide.holdout_share,
        "min_expected_value": decide.min_expected_value,
        "explore": decide.explore,
        "confidence": 0.95,
        "actions": state.action_reports(decide),
    })
}
