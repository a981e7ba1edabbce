//! The churn model's examples waiting for their label, per journey.
//!
//! In: the features a churn evaluation saw ([`ChurnExamples::remember`]) and,
//! on a merge, the absorbed journey's examples. Out: the examples, oldest
//! first, which the processor labels later (`decide::churn_model`): the
//! customer came back within the churn horizon, or did not. Keeps at most
//! [`PENDING_EXAMPLES`] examples and when the last one was taken; a journey
//! gives at most one example per `decide.churn.sample_every` of event time.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::compact::{List, OptTime};
use crate::time::EventTime;

/// How many features the learned churn model reads (see `decide::learned`).
pub const CHURN_FEATURES: usize = 15;

/// How many unlabelled examples a journey keeps (the oldest go first).
pub const PENDING_EXAMPLES: usize = 16;

/// The features of a journey at one event time, and the hand-weighted score
/// then, waiting for the label; as `f32` (the features are scaled to about
/// 0..4: single precision loses nothing the model can use, and halves what
/// each journey keeps).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChurnExample {
    pub at: EventTime,
    pub x: [f32; CHURN_FEATURES],
    pub hand: f32,
}

impl ChurnExample {
    pub fn new(at: EventTime, x: &[f64; CHURN_FEATURES], hand: f64) -> Self {
        ChurnExample {
            at,
            x: x.map(|v| v as f32),
            hand: hand as f32,
        }
    }

    /// The features and the hand-weighted score, as the model reads them.
    pub fn features(&self) -> ([f64; CHURN_FEATURES], f64) {
        (self.x.map(f64::from), f64::from(self.hand))
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChurnExamples {
    /// Oldest first.
    pub pending: List<ChurnExample>,
    /// When the last example was taken.
    pub last_taken: OptTime,
}

impl ChurnExamples {
    /// Keeps `example` unless one was taken less than `every` before it;
    /// returns whether it was kept.
    pub fn remember(&mut self, example: ChurnExample, every: Duration) -> bool {
        if self.last_taken.get().is_some_and(|t| example.at < t.plus(every)) {
            return false;
        }
        self.last_taken = example.at.into();
        self.insert(example);
        true
    }

    fn insert(&mut self, example: ChurnExample) {
        let pos = self.pending.partition_point(|e| e.at <= example.at);
        self.pending.keep_at(pos, example, PENDING_EXAMPLES);
    }

    /// Takes the examples of a merged-away journey of the same customer.
    pub fn absorb(&mut self, other: ChurnExamples) {
        for e in other.pending {
            self.insert(e);
        }
        self.last_taken = self.last_taken.get().max(other.last_taken.get()).into();
    }

    pub fn heap_bytes(&self) -> usize {
        self.pending.len() * std::mem::size_of::<ChurnExample>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(day: i64) -> ChurnExample {
        ChurnExample {
            at: EventTime::from_millis(day * 86_400_000),
            x: [0.0; CHURN_FEATURES],
            hand: 0.0,
        }
    }

    #[test]
    fn one_example_per_period_bounded_and_in_order() {
        let week = Duration::from_secs(7 * 86_400);
        let mut e = ChurnExamples::default();
        assert!(e.remember(ex(10), week));
        assert!(!e.remember(ex(16), week));
        assert!(e.remember(ex(17), week));
        for d in 0..40i64 {
            e.remember(ex(24 + 7 * d), week);
        }
        assert_eq!(e.pending.len(), PENDING_EXAMPLES);
        assert!(e
            .pending
            .iter()
            .zip(e.pending.iter().skip(1))
            .all(|(a, b)| a.at <= b.at));
        let mut other = ChurnExamples::default();
        other.remember(ex(1000), week);
        e.absorb(other);
        assert_eq!(e.pending.last().map(|x| x.at), Some(ex(1000).at));
        assert_eq!(e.last_taken.get(), Some(ex(1000).at));
    }
}
