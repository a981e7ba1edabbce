//! The OpenAPI mirrors of the model endpoints: `GET /v1/models/churn`
//! ([`ChurnModelDoc`]) and `GET /v1/models/actions` ([`ActionModelsDoc`]).
//!
//! In: nothing at run time (documentation types, held to the real bodies by
//! the tests). Out: schemas for the OpenAPI document. Keeps nothing.

use serde::Deserialize;
use utoipa::ToSchema;

/// `GET /v1/models/actions`: what the engine learned about each action and
/// its measured uplift against the holdout.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct ActionModelsDoc {
    /// `decide.holdout_share`: the share of decisions withheld as the control group.
    pub holdout_share: f64,
    /// `decide.min_expected_value`: below it nothing is sent.
    pub min_expected_value: f64,
    /// `decide.explore`: candidates ranked on a Thompson draw.
    pub explore: bool,
    /// The confidence level of the uplift intervals (0.95).
    pub confidence: f64,
    /// One per catalog action, in catalog order.
    pub actions: Vec<ActionModelDoc>,
}

/// One catalog action: decisions, conversions, uplift and learned rate.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct ActionModelDoc {
    pub action: String,
    /// The trigger it answers (`cart_abandoned`, `service_issue`, ...).
    pub trigger: String,
    /// Decisions published.
    pub sent: u64,
    /// Decisions withheld as the control group.
    pub held_out: u64,
    /// Published decisions followed by a purchase within the action's conversion window.
    pub conversions_sent: u64,
    /// Held-out decisions followed by a purchase within the window.
    pub conversions_held_out: u64,
    /// `conversions_sent / sent` (null without decisions).
    pub rate_sent: Option<f64>,
    /// `conversions_held_out / held_out` (null without decisions).
    pub rate_held_out: Option<f64>,
    /// `rate_sent - rate_held_out` (null until both groups have decisions).
    pub uplift: Option<f64>,
    /// The 95% confidence interval of the uplift (Newcombe's hybrid score interval).
    pub uplift_ci_low: Option<f64>,
    pub uplift_ci_high: Option<f64>,
    /// The learned response rate over every tier and channel (Beta posterior mean).
    pub posterior_mean: f64,
    /// Outcomes learned from (decisions with any outcome), and those that were responses.
    pub outcomes: u64,
    pub responses: u64,
}

/// The body of `GET /v1/models/churn`: the learned churn model.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct ChurnModelDoc {
    /// One weight per feature (on features scaled to about 0..4), in the model's order.
    pub weights: Vec<WeightDoc>,
    pub bias: f64,
    /// Labelled examples learned from.
    pub examples: u64,
    /// Examples whose customer showed no activity for the horizon (churned).
    pub positives: u64,
    /// Examples whose customer came back within the horizon.
    pub negatives: u64,
    pub auc: AucDoc,
    /// Labelled examples the hand-weighted prior counts as.
    pub prior_strength: f64,
    /// The learned part's share of the score: examples / (examples + prior_strength).
    pub learned_share: f64,
    /// `decide.churn.horizon` in days.
    pub horizon_days: f64,
    /// The event time the engine has applied.
    #[schema(format = DateTime)]
    pub evaluated_to: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct WeightDoc {
    pub feature: String,
    pub weight: f64,
}

/// Prequential (test-then-train) AUCs on the same labelled examples; `null`
/// until both labels were seen.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct AucDoc {
    /// The model's score before it learned each example.
    pub learned: Option<f64>,
    /// The hand-weighted score.
    pub hand: Option<f64>,
    /// Days since the last activity alone.
    pub recency: Option<f64>,
}
