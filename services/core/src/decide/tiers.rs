//! Value tiers: which customers bring most of the revenue.
//!
//! In: every change of a customer's revenue (`add` / `remove`). Out: the
//! [`Tier`] of a revenue. Keeps the customers' revenue in quarter-octave
//! buckets (part of the state snapshot) and the A/B thresholds drawn from
//! them.

use serde::{Deserialize, Serialize};

use crate::vocab::Tier;

/// Customers' revenue in quarter-octave buckets, to place each customer in the
/// A/B/C value tiers: A holds the customers who bring the first 80% of revenue,
/// B the next 15%, C the rest. Thresholds are recomputed every 64 changes.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ValueTiers {
    buckets: Vec<(u64, f64)>,
    total: f64,
    a_min: f64,
    b_min: f64,
    /// Changes since the thresholds were last computed.
    changes: u32,
    computed: bool,
}

impl ValueTiers {
    const MAX_BUCKET: usize = 200;

    fn bucket(revenue: f64) -> usize {
        // Bucket b holds revenues in [2^((b-1)/4), 2^(b/4)); revenue <= 1 is bucket 0.
        ((revenue.max(1.0).log2() * 4.0).ceil() as usize).min(Self::MAX_BUCKET)
    }

    fn lower_bound(b: usize) -> f64 {
        if b == 0 {
            0.0
        } else {
            2f64.powf((b as f64 - 1.0) / 4.0)
        }
    }

    /// A customer's revenue joins the distribution.
    pub fn add(&mut self, revenue: f64) {
        self.shift(revenue, 1.0);
    }

    /// A customer's revenue leaves the distribution.
    pub fn remove(&mut self, revenue: f64) {
        self.shift(revenue, -1.0);
    }

    fn shift(&mut self, revenue: f64, sign: f64) {
        if revenue <= 0.0 {
            return;
        }
        let b = Self::bucket(revenue);
        if self.buckets.len() <= b {
            self.buckets.resize(b + 1, (0, 0.0));
        }
        let slot = &mut self.buckets[b];
        slot.0 = if sign > 0.0 {
            slot.0 + 1
        } else {
            slot.0.saturating_sub(1)
        };
        slot.1 = (slot.1 + sign * revenue).max(0.0);
        self.total = (self.total + sign * revenue).max(0.0);
        self.changes += 1;
        if self.changes >= 64 {
            self.recompute();
        }
    }

    fn recompute(&mut self) {
        self.changes = 0;
        self.computed = true;
        let (mut cum, mut a_min, mut b_min) = (0.0, f64::INFINITY, f64::INFINITY);
        for (b, (_, sum)) in self.buckets.iter().enumerate().rev() {
            if *sum <= 0.0 {
                continue;
            }
            if cum < 0.80 * self.total {
                a_min = Self::lower_bound(b);
            } else if cum < 0.95 * self.total {
                b_min = Self::lower_bound(b);
            }
            cum += sum;
        }
        self.a_min = a_min;
        self.b_min = b_min.min(a_min);
    }

    /// The tier of `revenue` (computes the thresholds first if never done).
    pub fn tier_of(&mut self, revenue: f64) -> Tier {
        if !self.computed && self.changes > 0 {
            self.recompute();
        }
        if revenue <= 0.0 {
            Tier::C
        } else if revenue >= self.a_min {
            Tier::A
        } else if revenue >= self.b_min {
            Tier::B
        } else {
            Tier::C
        }
    }
}
