//! The churn score the engine emits and shows: the learned model's
//! calibrated probability, and the labels it learns from.
//!
//! In: the `[decide.churn]` config, the [`ChurnModel`], a journey and the
//! event time `now` ([`evaluate`]); for learning, a journey's pending
//! [`ChurnExamples`] with the customer's activity ([`label_activity`]) or a
//! label timer coming due ([`label_due`]). Out: an [`Evaluation`] (the
//! probability, the hand-weighted score it is blended with, the features and
//! each factor's contribution), and the model trained on the examples that
//! got their label. Keeps nothing; [`LiveChurn`] is the model, its config
//! and the event time the engine has reached, as the processor shares them
//! with readers.
//!
//! Labels come from the stream: an example is the features a customer had
//! at an evaluation; activity after it and within `horizon` makes it a
//! negative, none by `horizon` a positive. Each is scored before it is
//! learned (prequential AUC, see [`ChurnModel::learn`]).
//!
//! Contributions: the score is `(k * hand + n * p) / (k + n)` with `k` the
//! prior strength, `n` the labelled examples and `p` the logistic part. The
//! hand part is shared out as the hand-weighted score shares it; the
//! logistic part in proportion to each feature's push toward churn
//! (weight x value, when positive). They add up to the score less the part
//! the model's base rate (its bias) carries.

use std::time::Duration;

use super::churn::{self, ChurnConfig};
use super::learned::{self, ChurnModel, Features, FACTORS, N};
use super::round2;
use crate::journey::{ChurnExample, ChurnExamples, Factor, Journey};
use crate::time::EventTime;
use crate::vocab::FactorName;

/// The model as the processor shares it with readers (the lookup API).
#[derive(Clone, Debug)]
pub struct LiveChurn {
    pub config: ChurnConfig,
    pub model: ChurnModel,
    /// How far event time has been applied; `None` before any event.
    pub now: Option<EventTime>,
}

impl LiveChurn {
    pub fn new(config: ChurnConfig) -> Self {
        let model = ChurnModel::new(config.learn.clone());
        LiveChurn {
            config,
            model,
            now: None,
        }
    }
}

/// One churn evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    /// The calibrated probability, rounded to 3 decimals.
    pub score: f64,
    /// The hand-weighted score (the prior).
    pub hand: f64,
    pub x: Features,
    pub factors: Vec<Factor>,
}

/// Scores `j` at `now` with `model`.
pub fn evaluate(cfg: &ChurnConfig, model: &ChurnModel, j: &Journey, now: EventTime) -> Evaluation {
    let hand = churn::score(cfg, j, now);
    let x = learned::features(j, now);
    let p = model.logistic(&x);
    let score = model.predict(&x, hand.score);
    let (k, n) = (model.config.prior_strength, model.examples as f64);
    let (hand_share, learned_share) = (k / (k + n), n / (k + n));
    let pushes = model.contributions(&x).map(|c| c.max(0.0));
    let push: f64 = pushes.iter().sum();
    let learned_part = |i: usize| {
        if push > 0.0 {
            learned_share * p * pushes[i] / push
        } else {
            0.0
        }
    };
    // The hand-weighted score's list, reused, with room for every factor
    // (a no-op when `churn::score` made it so; std's collect reuses its
    // features' list, a reuse std allows but does not promise).
    let mut factors = hand.factors;
    factors.reserve(FactorName::COUNT.saturating_sub(factors.len()));
    for f in &mut factors {
        f.contribution *= hand_share;
    }
    for (i, name) in FACTORS.iter().enumerate() {
        let part = learned_part(i);
        match factors.iter_mut().find(|f| f.name == *name) {
            Some(f) => f.contribution += part,
            None if x[i] != 0.0 => factors.push(Factor {
                name: *name,
                value: reported_value(*name, j, &x, i, now),
                contribution: part,
            }),
            None => {}
        }
    }
    for f in &mut factors {
        f.contribution = round2(f.contribution);
    }
    Evaluation {
        score: (score * 1000.0).round() / 1000.0,
        hand: hand.score,
        x,
        factors,
    }
}

/// The value a factor the hand-weighted score does not report is shown with.
fn reported_value(name: FactorName, j: &Journey, x: &Features, i: usize, now: EventTime) -> f64 {
    match name {
        FactorName::PurchaseFrequency => f64::from(j.purchases),
        FactorName::MonetaryValue => round2(j.revenue),
        FactorName::Tenure => j.first_seen.map_or(0.0, |t| now.days_since(t).max(0.0).floor()),
        _ => round2(x[i]),
    }
}

/// Remembers the features of an evaluation as an example, at most one per
/// `sample_every`; returns when its label is due (a timer to arm).
pub fn remember(cfg: &ChurnConfig, examples: &mut ChurnExamples, e: &Evaluation, now: EventTime) -> Option<EventTime> {
    let example = ChurnExample::new(now, &e.x, e.hand);
    examples
        .remember(example, cfg.sample_every)
        .then(|| now.plus(cfg.horizon))
}

/// Activity at `t`: the examples taken before it are labelled, negative when
/// `t` is within their horizon (positive when past it: their timer was
/// lost). Returns how many were learned.
pub fn label_activity(examples: &mut ChurnExamples, t: EventTime, horizon: Duration, model: &mut ChurnModel) -> usize {
    let mut learned = 0;
    for e in examples.pending.iter().take_while(|e| e.at < t) {
        let (x, hand) = e.features();
        model.learn(&x, hand, t > e.at.plus(horizon));
        learned += 1;
    }
    examples.pending.drop_front(learned);
    learned
}

/// A label timer at `due`: the examples whose horizon ended by then are
/// positives when the customer showed no activity after them (`last_seen`).
pub fn label_due(
    examples: &mut ChurnExamples,
    due: EventTime,
    horizon: Duration,
    last_seen: Option<EventTime>,
    model: &mut ChurnModel,
) -> usize {
    let mut learned = 0;
    for e in examples.pending.iter().take_while(|e| e.at.plus(horizon) <= due) {
        let (x, hand) = e.features();
        model.learn(&x, hand, last_seen.is_none_or(|t| t <= e.at));
        learned += 1;
    }
    examples.pending.drop_front(learned);
    learned
}

/// The features in the model's order with their names, for the model endpoint.
pub fn named_weights(model: &ChurnModel) -> Vec<(&'static str, f64)> {
    learned::FEATURES.iter().copied().zip(model.weights).collect()
}

const _: () = assert!(N == FACTORS.len());
