//! The learned models, as the engine runs them: `GET /v1/models/churn` and
//! `GET /v1/models/actions`.
//!
//! In: the shared state's churn model (trained by the pipeline, the single
//! writer), its action models (learned propensities, holdout and uplift
//! counts) and the `[decide]` catalog. Out: the churn model's weights per
//! feature, labelled examples and the prequential AUC of the model, of the
//! hand-weighted score and of recency alone on the same examples
//! ([`ChurnModelView`](onejourney_core::view::ChurnModelView)), the same
//! figures as metrics at each scrape ([`export`]); per catalog action,
//! decisions sent and held out, conversions within the action's window, both
//! rates, the uplift (sent minus held out) with its 95% confidence interval,
//! and the learned response rate. Keeps nothing: the models lock is held
//! only to copy the counts out.

use axum::extract::State as AxumState;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use onejourney_core::decide::DecideConfig;
use onejourney_core::State;
use serde_json::{json, Value};

use super::openapi::{ActionModelsDoc, ChurnModelDoc, ErrorDoc};
use super::{error, HttpState};
use crate::metrics::Metrics;

/// The learned churn model.
#[utoipa::path(
    get,
    path = "/v1/models/churn",
    tag = "models",
    responses(
        (status = 200, description = "The churn model: weights, labelled examples, prequential AUCs", body = ChurnModelDoc),
        (status = 401, description = "A bearer token is required", body = ErrorDoc),
        (status = 503, description = "No model yet (the pipeline has not started)", body = ErrorDoc),
    ),
    security((), ("bearer" = []))
)]
pub(super) async fn churn(AxumState(s): AxumState<HttpState>) -> Response {
    match s.state.churn_model_view() {
        Some(view) => Json(view).into_response(),
        None => error(StatusCode::SERVICE_UNAVAILABLE, "the churn model is not running yet"),
    }
}

/// Sets the churn model's metrics from the state: the AUCs (NaN until both
/// labels were seen) and the labelled examples.
pub(super) fn export(state: &State, m: &Metrics) {
    let Some(view) = state.churn_model_view() else {
        return;
    };
    for (model, auc) in [
        ("learned", view.auc.learned),
        ("hand", view.auc.hand),
        ("recency", view.auc.recency),
    ] {
        m.churn_model_auc
            .with_label_values(&[model])
            .set(auc.unwrap_or(f64::NAN));
    }
    let counted = m.churn_model_examples.get();
    m.churn_model_examples.inc_by(view.examples.saturating_sub(counted));
}

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
