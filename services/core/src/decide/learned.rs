//! Churn that learns: a logistic model over a customer's journey features,
//! trained online from the stream's own delayed labels, with the
//! hand-weighted score as its prior.
//!
//! In: [`features`] of a journey at a check time, and later the label: did
//! the customer come back within the churn horizon (negative) or not
//! (positive). Out: a probability ([`ChurnModel::predict`]) with per-feature
//! contributions, and the model's prequential (test-then-train) AUC next to
//! the AUCs of the hand-weighted score and of recency alone on the same
//! examples ([`Prequential`]).
//!
//! What it keeps: the weights, the number of labelled examples, and score
//! histograms for the AUCs; all of it is plain data (serde), mergeable
//! ([`ChurnModel::merge`]: weights averaged by examples, histograms added) so
//! that state partitions can each learn and be combined. Until enough labels
//! exist the hand-weighted score dominates: the prediction is a blend of the
//! two, weighted `prior_strength : examples`.
//!
//! Pure: no clock, no randomness; the same examples in the same order give
//! the same model.

use serde::{Deserialize, Serialize};

use super::churn::visit_frequency_drop;
use super::DAYS_30;
use crate::journey::{Journey, CHURN_FEATURES};
use crate::time::{count_within, EventTime};
use crate::vocab::FactorName;

/// The model's features, in order.
pub const FEATURES: [&str; N] = [
    "days_since_last_activity",
    "days_since_last_purchase",
    "never_purchased",
    "purchase_frequency",
    "monetary_value",
    "purchase_rhythm_overdue",
    "tenure",
    "channels_used",
    "complaints_30d",
    "unresolved_calls_30d",
    "cancel_requests",
    "low_csat",
    "negative_sentiment",
    "returns",
    "visit_frequency_drop",
];

pub const N: usize = CHURN_FEATURES;

/// The factor each feature is reported as, in the order of [`FEATURES`].
pub const FACTORS: [FactorName; N] = [
    FactorName::DaysSinceLastActivity,
    FactorName::DaysSinceLastPurchase,
    FactorName::NeverPurchased,
    FactorName::PurchaseFrequency,
    FactorName::MonetaryValue,
    FactorName::PurchaseRhythmOverdue,
    FactorName::Tenure,
    FactorName::ChannelsUsed,
    FactorName::Complaints30d,
    FactorName::UnresolvedCalls30d,
    FactorName::CancelRequests,
    FactorName::LastCsat,
    FactorName::LastSentiment,
    FactorName::Returns,
    FactorName::VisitFrequencyDrop,
];

/// A feature vector, each feature scaled to about 0..4.
pub type Features = [f64; N];

/// The features of `j` at event time `now`.
pub fn features(j: &Journey, now: EventTime) -> Features {
    let days = |t: Option<EventTime>| t.map(|t| now.days_since(t).max(0.0));
    let recency = days(j.last_seen).unwrap_or(0.0);
    let tenure = days(j.first_seen).unwrap_or(0.0);
    let since_purchase = days(j.last_purchase);
    // The customer's own rhythm: the mean gap between purchases so far; how
    // many of those gaps the current silence is.
    let overdue = match (since_purchase, j.purchases) {
        (Some(d), n) if n >= 2 => {
            let span = (tenure - d).max(1.0);
            d / (span / f64::from(n - 1)).max(1.0)
        }
        _ => 0.0,
    };
    let channels = j.channels.iter().filter(|c| c.events > 0).count() as f64;
    let unresolved = count_within(&j.unresolved_times, now, DAYS_30) as f64;
    let complaints = count_within(&j.complaint_times, now, DAYS_30) as f64;
    [
        (recency / 30.0).min(4.0),
        since_purchase.map_or(0.0, |d| (d / 30.0).min(4.0)),
        f64::from(u8::from(j.purchases == 0)),
        (f64::from(j.purchases)).ln_1p().min(4.0),
        j.revenue.max(0.0).ln_1p() / 2.0,
        overdue.min(4.0),
        (tenure / 365.0).min(4.0),
        channels,
        complaints.min(5.0),
        unresolved.min(5.0),
        f64::from(j.cancel_requests.min(3)),
        f64::from(u8::from(j.last_csat.is_some_and(|c| c <= 2))),
        j.last_sentiment.map_or(0.0, |s| (-s).max(0.0)),
        f64::from(j.returns.min(5)),
        visit_frequency_drop(j, now).unwrap_or(0.0),
    ]
}

/// Score histograms of labelled examples: the AUC without keeping the examples.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    positives: Vec<u64>,
    negatives: Vec<u64>,
}

const BINS: usize = 200;

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            positives: vec![0; BINS],
            negatives: vec![0; BINS],
        }
    }
}

impl Histogram {
    /// Records a score in [0, 1] with its label.
    pub fn add(&mut self, score: f64, positive: bool) {
        let bin = ((score.clamp(0.0, 1.0) * BINS as f64) as usize).min(BINS - 1);
        let side = if positive {
            &mut self.positives
        } else {
            &mut self.negatives
        };
        if let Some(b) = side.get_mut(bin) {
            *b += 1;
        }
    }

    pub fn count(&self) -> (u64, u64) {
        (self.positives.iter().sum(), self.negatives.iter().sum())
    }

    /// P(a positive scores above a negative), ties (one bin) half; `None`
    /// until both kinds were seen.
    pub fn auc(&self) -> Option<f64> {
        let (p, n) = self.count();
        if p == 0 || n == 0 {
            return None;
        }
        let mut below = 0u64;
        let mut wins = 0.0;
        for (pos, neg) in self.positives.iter().zip(&self.negatives) {
            wins += *pos as f64 * (below as f64 + *neg as f64 / 2.0);
            below += neg;
        }
        Some(wins / (p as f64 * n as f64))
    }

    fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.positives.iter_mut().zip(&other.positives) {
            *a += b;
        }
        for (a, b) in self.negatives.iter_mut().zip(&other.negatives) {
            *a += b;
        }
    }
}

/// Test-then-train AUCs on the same labelled examples.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Prequential {
    /// The model's prediction, before it learned from the example.
    pub learned: Histogram,
    /// The hand-weighted score.
    pub hand: Histogram,
    /// Days since the last activity alone.
    pub recency: Histogram,
}

/// How the model learns (`[decide.churn.learn]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LearnConfig {
    /// Labelled examples the hand-weighted prior counts as.
    pub prior_strength: f64,
    pub learning_rate: f64,
    /// L2 penalty on the weights.
    pub l2: f64,
}

impl LearnConfig {
    pub fn validate(&self) -> Result<(), &'static str> {
        let ok = |v: f64| v.is_finite() && v >= 0.0;
        if !(ok(self.prior_strength) && self.prior_strength > 0.0) {
            return Err("churn.learn.prior_strength must be > 0");
        }
        if !(ok(self.learning_rate) && self.learning_rate > 0.0 && self.learning_rate <= 1.0) {
            return Err("churn.learn.learning_rate must be within (0, 1]");
        }
        if !(ok(self.l2) && self.l2 < 1.0) {
            return Err("churn.learn.l2 must be within [0, 1)");
        }
        Ok(())
    }
}

impl Default for LearnConfig {
    fn default() -> Self {
        LearnConfig {
            prior_strength: 500.0,
            learning_rate: 0.05,
            l2: 1e-4,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChurnModel {
    pub weights: Features,
    pub bias: f64,
    pub examples: u64,
    pub positives: u64,
    pub config: LearnConfig,
    pub auc: Prequential,
}

impl ChurnModel {
    pub fn new(config: LearnConfig) -> Self {
        ChurnModel {
            weights: [0.0; N],
            bias: 0.0,
            examples: 0,
            positives: 0,
            config,
            auc: Prequential::default(),
        }
    }

    /// The logistic part alone.
    pub fn logistic(&self, x: &Features) -> f64 {
        sigmoid(self.bias + dot(&self.weights, x))
    }

    /// The churn probability: the learned model blended with the
    /// hand-weighted score `hand` by how many labels it has seen.
    pub fn predict(&self, x: &Features, hand: f64) -> f64 {
        let n = self.examples as f64;
        let k = self.config.prior_strength;
        (k * hand + n * self.logistic(x)) / (k + n)
    }

    /// Each feature's push on the log-odds (weight x value).
    pub fn contributions(&self, x: &Features) -> Features {
        let mut c = [0.0; N];
        for (i, v) in c.iter_mut().enumerate() {
            *v = self.weights[i] * x[i];
        }
        c
    }

    /// One labelled example: scored first (the prequential AUCs), then learned.
    pub fn learn(&mut self, x: &Features, hand: f64, churned: bool) {
        self.auc.learned.add(self.predict(x, hand), churned);
        self.auc.hand.add(hand, churned);
        self.auc.recency.add(x[0] / 4.0, churned);
        let y = f64::from(u8::from(churned));
        let err = self.logistic(x) - y;
        let lr = self.config.learning_rate;
        for (w, xi) in self.weights.iter_mut().zip(x) {
            *w -= lr * (err * xi + self.config.l2 * *w);
        }
        self.bias -= lr * err;
        self.examples += 1;
        self.positives += u64::from(churned);
    }

    /// Combines the model another partition learned: weights averaged by
    /// examples, counts and histograms added.
    pub fn merge(&mut self, other: &ChurnModel) {
        let (a, b) = (self.examples as f64, other.examples as f64);
        if a + b > 0.0 {
            for (w, o) in self.weights.iter_mut().zip(&other.weights) {
                *w = (*w * a + o * b) / (a + b);
            }
            self.bias = (self.bias * a + other.bias * b) / (a + b);
        }
        self.examples += other.examples;
        self.positives += other.positives;
        self.auc.learned.merge(&other.auc.learned);
        self.auc.hand.merge(&other.auc.hand);
        self.auc.recency.merge(&other.auc.recency);
    }
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z.clamp(-30.0, 30.0)).exp())
}

fn dot(a: &Features, b: &Features) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn the_histogram_auc_is_the_pairwise_probability() {
        let mut h = Histogram::default();
        assert_eq!(h.auc(), None);
        for s in [0.9, 0.8, 0.3] {
            h.add(s, true);
        }
        for s in [0.1, 0.4, 0.85] {
            h.add(s, false);
        }
        // Pairs won: 0.9 beats 3, 0.8 beats 2, 0.3 beats 1: 6 of 9.
        assert!((h.auc().unwrap() - 6.0 / 9.0).abs() < 1e-12);
        let mut ties = Histogram::default();
        ties.add(0.5, true);
        ties.add(0.5, false);
        assert_eq!(ties.auc(), Some(0.5));
    }

    /// Examples where churn depends on one feature the prior ignores: the
    /// model learns it, and once it has, it beats the prior.
    #[test]
    fn it_learns_what_the_prior_misses_and_then_beats_it() {
        let mut m = ChurnModel::new(LearnConfig {
            prior_strength: 50.0,
            ..LearnConfig::default()
        });
        let mut late = ChurnModel::new(LearnConfig::default());
        let mut s = 7u64;
        let mut next = || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (s >> 11) as f64 / (1u64 << 53) as f64
        };
        for i in 0..20_000 {
            let mut x = [0.0; N];
            x[0] = next() * 4.0;
            x[10] = f64::from(u8::from(next() < 0.3));
            // Churn: mostly the cancel request, a little recency.
            let p = 0.05 + 0.8 * x[10] + 0.03 * x[0];
            let y = next() < p;
            let hand = 1.0 - (-0.3 * x[0]).exp();
            m.learn(&x, hand, y);
            if i >= 10_000 {
                late.learn(&x, hand, y);
            }
        }
        assert!(m.weights[10] > 2.0, "{:?}", m.weights);
        let learned = m.auc.learned.auc().unwrap();
        let hand = m.auc.hand.auc().unwrap();
        let recency = m.auc.recency.auc().unwrap();
        assert!(learned > hand + 0.1, "learned {learned} hand {hand}");
        // The hand score and recency order examples alike.
        assert!((hand - recency).abs() < 0.02, "{hand} {recency}");
        // Calibrated: among cancel requests the prediction is near 0.85.
        let mut x = [0.0; N];
        x[10] = 1.0;
        x[0] = 1.0;
        let p = m.predict(&x, 1.0 - (-0.3f64).exp());
        assert!((p - 0.88).abs() < 0.08, "{p}");
        // Merged with a partition that learned the second half: still learned.
        m.merge(&late);
        assert_eq!(m.examples, 30_000);
        assert!(m.weights[10] > 2.0);
    }

    proptest! {
        #[test]
        fn predictions_are_probabilities_and_the_prior_rules_without_labels(
            x in prop::array::uniform15(0.0f64..4.0),
            hand in 0.0f64..1.0,
            labels in prop::collection::vec(any::<bool>(), 0..50),
        ) {
            let mut m = ChurnModel::new(LearnConfig::default());
            prop_assert!((m.predict(&x, hand) - hand).abs() < 1e-12);
            for y in &labels {
                m.learn(&x, hand, *y);
            }
            let p = m.predict(&x, hand);
            prop_assert!((0.0..=1.0).contains(&p));
            prop_assert_eq!(m.examples as usize, labels.len());
            let (pos, neg) = m.auc.learned.count();
            prop_assert_eq!((pos + neg) as usize, labels.len());
        }
    }
}
