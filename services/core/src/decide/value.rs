//! Customer value: RFM scores and expected lifetime value (CLV).
//!
//! In: every change of a buying customer's value key ([`ValueKey::of`] a
//! journey, through [`Population::update`]), and a journey with its churn
//! score at an event time ([`Population::clv`]). Out: the customer's [`Rfm`]
//! scores and [`Clv`]. Keeps the population: the RFM quintiles (`rfm.rs`)
//! and the sums the CLV parameters are refit from (buyers, purchases,
//! revenue, days observed), with the parameters refit every 64 changes.
//! Part of the state snapshot; [`Population::merge`] adds another
//! partition's.
//!
//! The CLV model (a documented, simpler equivalent of BG/NBD + Gamma-Gamma):
//! - purchase rate: Gamma-Poisson posterior mean with the population's pooled
//!   rate as prior worth `prior_days` days of observation:
//!   `rate = (purchases + prior_days * pop_rate) / (days_known + prior_days)`;
//! - probability the customer is still active: `1 - churn score` (the
//!   engine's calibrated churn probability) in place of BG/NBD's P(alive);
//! - order value: Gamma-Gamma style shrinkage toward the population's mean
//!   order value, worth `prior_orders` orders:
//!   `aov = (revenue + prior_orders * pop_aov) / (purchases + prior_orders)`;
//! - `value = p_active * rate * horizon_days * aov`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::rfm::{Rfm, RfmKey, RfmQuantiles};
pub use crate::journey::Clv;
use crate::journey::Journey;
use crate::time::EventTime;

/// Parameters are refit after this many changes.
const REFIT_EVERY: u32 = 64;

/// How expected lifetime value is computed (`decide.value`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueConfig {
    /// Expected purchases are counted over this horizon.
    #[serde(with = "humantime_serde")]
    pub horizon: Duration,
    /// Days of observation the population's purchase rate counts for.
    pub prior_days: f64,
    /// Orders the population's mean order value counts for.
    pub prior_orders: f64,
}

impl Default for ValueConfig {
    fn default() -> Self {
        ValueConfig {
            horizon: Duration::from_secs(365 * 24 * 3600),
            prior_days: 90.0,
            prior_orders: 3.0,
        }
    }
}

impl ValueConfig {
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.horizon.is_zero() {
            return Err("value.horizon: must be > 0");
        }
        if !(self.prior_days > 0.0 && self.prior_orders > 0.0) {
            return Err("value: prior_days and prior_orders must be > 0");
        }
        Ok(())
    }
}

/// What the population keeps of one buying customer.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct ValueKey {
    pub rfm: RfmKey,
    pub purchases: u32,
    pub revenue: f64,
    /// Days from first seen to the last purchase, at least 1.
    pub observed_days: f64,
}

impl ValueKey {
    /// The key of a journey; `None` for a customer who never bought.
    pub fn of(j: &Journey) -> Option<ValueKey> {
        let rfm = RfmKey::of(j)?;
        let last = j.last_purchase?;
        let first = j.first_seen.unwrap_or(last).min(last);
        Some(ValueKey {
            rfm,
            purchases: j.purchases,
            revenue: j.revenue.max(0.0),
            observed_days: last.days_since(first).max(1.0),
        })
    }
}

/// The buying population: RFM quintiles and the CLV parameters' sums.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Population {
    pub rfm: RfmQuantiles,
    buyers: u64,
    purchases: f64,
    revenue: f64,
    observed_days: f64,
    /// Refit parameters: purchases per day and mean order value.
    rate: f64,
    aov: f64,
    changes: u32,
}

impl Population {
    /// Replaces a journey's old key with its new one (either may be `None`).
    pub fn update(&mut self, before: Option<ValueKey>, after: Option<ValueKey>) {
        if before == after {
            return;
        }
        self.rfm.update(before.map(|k| k.rfm), after.map(|k| k.rfm));
        if let Some(b) = before {
            self.shift(b, -1.0);
        }
        if let Some(a) = after {
            self.shift(a, 1.0);
        }
    }

    fn shift(&mut self, k: ValueKey, sign: f64) {
        if sign > 0.0 {
            self.buyers += 1;
        } else {
            self.buyers = self.buyers.saturating_sub(1);
        }
        self.purchases = (self.purchases + sign * f64::from(k.purchases)).max(0.0);
        self.revenue = (self.revenue + sign * k.revenue).max(0.0);
        self.observed_days = (self.observed_days + sign * k.observed_days).max(0.0);
        self.changes += 1;
        if self.changes >= REFIT_EVERY {
            self.refit();
        }
    }

    /// Refits the population parameters from the sums now.
    pub fn refit(&mut self) {
        self.changes = 0;
        self.rate = if self.observed_days > 0.0 {
            self.purchases / self.observed_days
        } else {
            0.0
        };
        self.aov = if self.purchases > 0.0 {
            self.revenue / self.purchases
        } else {
            0.0
        };
    }

    /// Adds another partition's population to this one.
    pub fn merge(&mut self, other: &Population) {
        self.rfm.merge(&other.rfm);
        self.buyers += other.buyers;
        self.purchases += other.purchases;
        self.revenue += other.revenue;
        self.observed_days += other.observed_days;
        self.refit();
    }

    pub fn buyers(&self) -> u64 {
        self.buyers
    }

    /// The refit parameters: (purchases per day, mean order value).
    pub fn parameters(&mut self) -> (f64, f64) {
        if self.changes > 0 && self.buyers > 0 && self.aov == 0.0 {
            self.refit();
        }
        (self.rate, self.aov)
    }

    /// The RFM scores of a journey (`None` for a customer who never bought).
    pub fn rfm_of(&mut self, j: &Journey) -> Option<Rfm> {
        RfmKey::of(j).map(|k| self.rfm.score(k))
    }

    /// The expected lifetime value of a journey at `now` (`None` for a
    /// customer who never bought).
    pub fn clv(&mut self, cfg: &ValueConfig, j: &Journey, now: EventTime) -> Option<Clv> {
        let k = ValueKey::of(j)?;
        let (pop_rate, pop_aov) = self.parameters();
        let first = j.first_seen.unwrap_or(now);
        let known_days = now.max(first).days_since(first).max(k.observed_days);
        let n = f64::from(k.purchases);
        let rate = (n + cfg.prior_days * pop_rate) / (known_days + cfg.prior_days);
        let p_active = (1.0 - j.churn.score).clamp(0.0, 1.0);
        let horizon_days = cfg.horizon.as_secs_f64() / 86_400.0;
        let expected_purchases = p_active * rate * horizon_days;
        let order_value = (k.revenue + cfg.prior_orders * pop_aov) / (n + cfg.prior_orders);
        Some(Clv {
            expected_purchases,
            order_value,
            p_active,
            value: expected_purchases * order_value,
            horizon_days,
        })
    }
}

#[cfg(test)]
#[path = "value_tests.rs"]
mod tests;
