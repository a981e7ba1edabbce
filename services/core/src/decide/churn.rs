//! Churn risk: a score in [0, 1] from journey features, and bands with
//! hysteresis so a customer on a boundary does not flap.
//!
//! In: a [`Journey`] and the event time `now`. Out: a [`Score`] with its
//! [`Factor`]s (named by [`FactorName`]), and the band for a score given the
//! band last reported. Keeps nothing.
//!
//! score = 1 - exp(-sum(weight_i * x_i)); each feature's contribution is its
//! share of the sum times the score, so the contributions add up to the score.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::learned::LearnConfig;
use super::DAYS_30;
use crate::journey::{Factor, Journey};
use crate::time::{count_within, EventTime};
use crate::vocab::{Band, FactorName};

/// Weights of the churn features (per unit of each feature's `x`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChurnWeights {
    /// x = days since the last event / 30, at most 4.
    pub days_since_last_activity: f64,
    /// x = days since the last purchase / 30, at most 4 (customers only).
    pub days_since_last_purchase: f64,
    /// x = 1 when the customer never bought.
    pub never_purchased: f64,
    /// x = complaints in the last 30 days, at most 5.
    pub complaints_30d: f64,
    /// x = cancel requests, at most 3.
    pub cancel_requests: f64,
    /// x = unresolved or escalated calls in the last 30 days, at most 5.
    pub unresolved_calls_30d: f64,
    /// x = 1 - (visits in the last 30 days / the customer's own 30-day average
    /// over the 150 days before), when that baseline is at least one visit.
    pub visit_frequency_drop: f64,
    /// x = 1 when the last CSAT was 1 or 2.
    pub low_csat: f64,
    /// x = -sentiment of the last call when negative.
    pub negative_sentiment: f64,
    /// x = returns, at most 5.
    pub returns: f64,
    /// x = checkouts started but not completed, at most 5.
    pub abandoned_checkouts: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChurnConfig {
    pub weights: ChurnWeights,
    /// Scores at or above this are `medium`.
    pub medium: f64,
    /// Scores at or above this are `high`.
    pub high: f64,
    /// A band is left downward only once the score is this far below its threshold.
    pub hysteresis: f64,
    /// The learned model's labels: a customer with no activity for this long
    /// after an example churned (a positive); one back within it did not.
    #[serde(default = "default_horizon", with = "humantime_serde")]
    pub horizon: Duration,
    /// A journey gives at most one example per this much event time.
    #[serde(default = "default_sample_every", with = "humantime_serde")]
    pub sample_every: Duration,
    /// How the model learns (see [`LearnConfig`]).
    #[serde(default)]
    pub learn: LearnConfig,
}

fn default_horizon() -> Duration {
    Duration::from_secs(42 * 24 * 3600)
}

fn default_sample_every() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}

impl ChurnConfig {
    pub fn validate(&self) -> Result<(), &'static str> {
        if !(0.0 < self.medium && self.medium < self.high && self.high < 1.0) {
            return Err("thresholds must satisfy 0 < medium < high < 1");
        }
        if !(0.0..0.5).contains(&self.hysteresis) {
            return Err("hysteresis must be within 0..0.5");
        }
        if self.horizon.is_zero() || self.sample_every.is_zero() {
            return Err("churn.horizon and churn.sample_every must be > 0");
        }
        self.learn.validate()
    }

    fn raw_band(&self, score: f64) -> Band {
        if score >= self.high {
            Band::High
        } else if score >= self.medium {
            Band::Medium
        } else {
            Band::Low
        }
    }

    /// The band for `score`, given the band last reported.
    pub fn band(&self, score: f64, previous: Option<Band>) -> Band {
        let raw = self.raw_band(score);
        match previous {
            Some(prev) if raw < prev => raw.max(prev.min(self.raw_band(score + self.hysteresis))),
            _ => raw,
        }
    }
}

/// A churn evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct Score {
    pub score: f64,
    pub factors: Vec<Factor>,
}

/// How much less often the customer visits now than they used to: `None`
/// until there is a baseline of at least one visit per 30 days.
pub fn visit_frequency_drop(j: &Journey, now: EventTime) -> Option<f64> {
    let recent = count_within(&j.visits, now, DAYS_30) as f64;
    let before = now.minus(DAYS_30);
    let baseline_window = std::time::Duration::from_secs(150 * 24 * 3600);
    let first = j.first_seen?;
    // The baseline covers the part of those 150 days the customer existed.
    let covered_days = before.days_since(first.max(before.minus(baseline_window)));
    if covered_days < 30.0 {
        return None;
    }
    let baseline = count_within(&j.visits, before, baseline_window) as f64 / (covered_days / 30.0);
    if baseline < 1.0 {
        return None;
    }
    Some((1.0 - recent / baseline).clamp(0.0, 1.0))
}

/// Scores a journey at event time `now`.
pub fn score(cfg: &ChurnConfig, j: &Journey, now: EventTime) -> Score {
    let feats = features(&cfg.weights, j, now);
    let raw: f64 = feats.iter().map(|f| f.2).sum();
    let score = if raw > 0.0 { 1.0 - (-raw).exp() } else { 0.0 };
    let factors = feats
        .into_iter()
        .map(|(name, value, x)| Factor {
            name,
            value,
            contribution: if raw > 0.0 { super::round2(score * x / raw) } else { 0.0 },
        })
        .collect();
    Score {
        score: (score * 1000.0).round() / 1000.0,
        factors,
    }
}

/// The features that apply to `j` at `now`: (name, reported value, weighted x).
fn features(w: &ChurnWeights, j: &Journey, now: EventTime) -> Vec<(FactorName, f64, f64)> {
    // Room for every factor: the score's list becomes the reported factors
    // (std's collect reuses it: allowed, not promised), and the learned
    // model adds its own to it (`churn_model::evaluate`) without growing it.
    let mut feats: Vec<(FactorName, f64, f64)> = Vec::with_capacity(FactorName::COUNT);
    if let Some(last) = j.last_seen {
        let d = now.days_since(last);
        feats.push((
            FactorName::DaysSinceLastActivity,
            d.floor(),
            w.days_since_last_activity * (d / 30.0).min(4.0),
        ));
    }
    match j.last_purchase {
        Some(last) => {
            let d = now.days_since(last);
            feats.push((
                FactorName::DaysSinceLastPurchase,
                d.floor(),
                w.days_since_last_purchase * (d / 30.0).min(4.0),
            ));
        }
        None => feats.push((FactorName::NeverPurchased, 1.0, w.never_purchased)),
    }
    let count = |name, n: u32, cap: u32, weight: f64| (name, f64::from(n), weight * f64::from(n.min(cap)));
    let in_30d = |v| u32::try_from(count_within(v, now, DAYS_30)).unwrap_or(u32::MAX);
    feats.push(count(
        FactorName::Complaints30d,
        in_30d(&j.complaint_times),
        5,
        w.complaints_30d,
    ));
    feats.push(count(
        FactorName::CancelRequests,
        j.cancel_requests,
        3,
        w.cancel_requests,
    ));
    feats.push(count(
        FactorName::UnresolvedCalls30d,
        in_30d(&j.unresolved_times),
        5,
        w.unresolved_calls_30d,
    ));
    if let Some(drop) = visit_frequency_drop(j, now) {
        feats.push((
            FactorName::VisitFrequencyDrop,
            super::round2(drop),
            w.visit_frequency_drop * drop,
        ));
    }
    feats.push(count(FactorName::Returns, j.returns, 5, w.returns));
    feats.push(count(
        FactorName::AbandonedCheckouts,
        j.checkouts_started.saturating_sub(j.purchases),
        5,
        w.abandoned_checkouts,
    ));
    if let Some(c) = j.last_csat {
        feats.push((
            FactorName::LastCsat,
            f64::from(c),
            if c <= 2 { w.low_csat } else { 0.0 },
        ));
    }
    if let Some(s) = *j.last_sentiment {
        feats.push((FactorName::LastSentiment, s, w.negative_sentiment * (-s).max(0.0)));
    }
    feats
}
