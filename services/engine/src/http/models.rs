//! The learned models, as the engine runs them: `GET /v1/models/churn`.
//!
//! In: the shared state's churn model (trained by the pipeline, the single
//! writer). Out: its weights per feature, its labelled examples and the
//! prequential AUC of the model, of the hand-weighted score and of recency
//! alone on the same examples ([`ChurnModelView`](onejourney_core::view::ChurnModelView));
//! the same figures as metrics at each scrape ([`export`]). Keeps nothing.

use axum::extract::State as AxumState;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use onejourney_core::State;

use super::openapi::{ChurnModelDoc, ErrorDoc};
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
