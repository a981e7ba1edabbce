//! RFM scores: recency, frequency and monetary value, 1-5 each, from the
//! population's quintiles.
//!
//! In: every change of a buying customer's recency / frequency / monetary
//! key ([`RfmKey::of`] a journey; `add` / `remove`). Out: the [`Rfm`] scores
//! of a key. Keeps one count histogram per dimension (part of the state
//! snapshot; two are combined with [`RfmQuantiles::merge`], so state
//! partitions can each keep their own) and the quintile thresholds drawn from
//! them, recomputed every 64 changes: a lookup never scans the population.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::journey::Journey;
pub use crate::journey::Rfm;

const DAY_MS: i64 = 86_400_000;
/// Thresholds are recomputed after this many changes.
const RECOMPUTE_EVERY: u32 = 64;

/// Where a buying customer sits in each dimension: the day of the last
/// purchase, the number of purchases, and the quarter-octave of revenue.
/// Higher is better in all three.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct RfmKey {
    pub recency_day: i64,
    pub frequency: i64,
    pub monetary: i64,
}

impl RfmKey {
    /// The key of a journey; `None` for a customer who never bought.
    pub fn of(j: &Journey) -> Option<RfmKey> {
        let last = j.last_purchase?;
        if j.purchases == 0 {
            return None;
        }
        Some(RfmKey {
            recency_day: last.millis().div_euclid(DAY_MS),
            frequency: i64::from(j.purchases),
            monetary: monetary_bucket(j.revenue),
        })
    }
}

/// Quarter-octave bucket of a revenue (as in the value tiers); 0 for <= 1.
pub fn monetary_bucket(revenue: f64) -> i64 {
    if revenue.is_finite() {
        (revenue.max(1.0).log2() * 4.0).ceil().min(400.0) as i64
    } else {
        0
    }
}

/// Counts of one dimension's values and its quintile thresholds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Quintiles {
    counts: BTreeMap<i64, u64>,
    total: u64,
    /// `thresholds[k]`: the lowest value scoring at least `k + 2`.
    thresholds: [Option<i64>; 4],
}

impl Quintiles {
    fn shift(&mut self, value: i64, add: bool) {
        if add {
            *self.counts.entry(value).or_default() += 1;
            self.total += 1;
        } else if let Some(c) = self.counts.get_mut(&value) {
            *c -= 1;
            self.total -= 1;
            if *c == 0 {
                self.counts.remove(&value);
            }
        }
    }

    /// Value `v` scores `1 + floor(5 * below(v) / total)`, where `below(v)`
    /// counts the values strictly lower: ties share the lower score.
    fn recompute(&mut self) {
        self.thresholds = [None; 4];
        let mut below = 0u64;
        for (&v, &c) in &self.counts {
            let score = (5 * below / self.total.max(1)).min(4) as usize;
            for t in self.thresholds.iter_mut().take(score) {
                t.get_or_insert(v);
            }
            below += c;
        }
    }

    /// The score (1-5) of `value`: one plus the thresholds it reaches.
    pub fn score(&self, value: i64) -> u8 {
        1 + self.thresholds.iter().filter(|t| t.is_some_and(|t| value >= t)).count() as u8
    }

    fn merge(&mut self, other: &Quintiles) {
        for (&v, &c) in &other.counts {
            *self.counts.entry(v).or_default() += c;
        }
        self.total += other.total;
        self.recompute();
    }

    pub fn total(&self) -> u64 {
        self.total
    }
}

/// The buying population's RFM distribution.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RfmQuantiles {
    pub recency: Quintiles,
    pub frequency: Quintiles,
    pub monetary: Quintiles,
    changes: u32,
}

impl RfmQuantiles {
    /// A buying customer joins the distribution.
    pub fn add(&mut self, k: RfmKey) {
        self.shift(k, true);
    }

    /// A buying customer leaves the distribution.
    pub fn remove(&mut self, k: RfmKey) {
        self.shift(k, false);
    }

    /// Replaces a journey's old key with its new one (either may be `None`).
    pub fn update(&mut self, before: Option<RfmKey>, after: Option<RfmKey>) {
        if before == after {
            return;
        }
        if let Some(b) = before {
            self.remove(b);
        }
        if let Some(a) = after {
            self.add(a);
        }
    }

    fn shift(&mut self, k: RfmKey, add: bool) {
        self.recency.shift(k.recency_day, add);
        self.frequency.shift(k.frequency, add);
        self.monetary.shift(k.monetary, add);
        self.changes += 1;
        if self.changes >= RECOMPUTE_EVERY {
            self.recompute();
        }
    }

    /// Recomputes the thresholds now.
    pub fn recompute(&mut self) {
        self.changes = 0;
        self.recency.recompute();
        self.frequency.recompute();
        self.monetary.recompute();
    }

    /// Adds another partition's distribution to this one.
    pub fn merge(&mut self, other: &RfmQuantiles) {
        self.recency.merge(&other.recency);
        self.frequency.merge(&other.frequency);
        self.monetary.merge(&other.monetary);
        self.changes = 0;
    }

    /// The scores of a key (thresholds as of the last recomputation;
    /// computed first if changes are pending and none were ever computed).
    pub fn score(&mut self, k: RfmKey) -> Rfm {
        if self.changes > 0 && self.recency.thresholds.iter().all(Option::is_none) {
            self.recompute();
        }
        Rfm {
            r: self.recency.score(k.recency_day),
            f: self.frequency.score(k.frequency),
            m: self.monetary.score(k.monetary),
        }
    }
}

#[cfg(test)]
#[path = "rfm_tests.rs"]
mod tests;
