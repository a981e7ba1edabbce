//! Uplift: does an action work? Treated against held out, per action.
//!
//! A configured share of eligible decisions (`decide.holdout_share`) is
//! withheld: chosen, recorded on the journey, never published. Which ones is
//! a stable hash of the One ID and the action ([`held_out`]), so a person is
//! always in the same group for an action and a replay withholds the same
//! decisions. A decision converts when the customer buys within the
//! action's conversion window after it, in either group; the difference of
//! the two conversion rates is the action's uplift.
//!
//! In: each decision (`decided`, with its group) and each conversion
//! (`converted`). Out: [`ActionReport`]s: per action the counts, both rates,
//! the uplift with a 95% confidence interval and the propensity's posterior
//! mean. Keeps four counts per action, part of the state snapshot.
//!
//! The interval is Newcombe's hybrid score interval for a difference of two
//! proportions (from each group's Wilson interval): unlike the plain normal
//! approximation it stays sensible at 0 or 100% conversion and for a small
//! control group. It treats decisions as independent; a person's repeated
//! decisions for one action are all in one group, so with many repeats the
//! interval is somewhat too narrow.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::propensity::Propensities;
use super::DecideConfig;

/// The counts of one action.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arm {
    pub sent: u64,
    pub held_out: u64,
    pub sent_converted: u64,
    pub held_out_converted: u64,
}

/// Treated and held-out decisions and their conversions, per action name.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Uplift {
    arms: BTreeMap<String, Arm>,
}

/// True when the decision of `action` for `one_id` is withheld at `share`.
pub fn held_out(share: f64, one_id: &str, action: &str) -> bool {
    share > 0.0 && super::explore::unit(&["holdout", one_id, action]) < share
}

/// What the engine knows about one action: `GET /v1/models/actions`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ActionReport {
    pub action: String,
    pub trigger: super::Trigger,
    /// Decisions published, and withheld as the control group.
    pub sent: u64,
    pub held_out: u64,
    /// Of those, how many converted within the action's window.
    pub conversions_sent: u64,
    pub conversions_held_out: u64,
    /// Conversion rates (`None` without decisions in the group).
    pub rate_sent: Option<f64>,
    pub rate_held_out: Option<f64>,
    /// `rate_sent - rate_held_out`, with its 95% confidence interval.
    pub uplift: Option<f64>,
    pub uplift_ci_low: Option<f64>,
    pub uplift_ci_high: Option<f64>,
    /// The learned response rate over every tier and channel, and the
    /// outcomes it learned from.
    pub posterior_mean: f64,
    pub outcomes: u64,
    pub responses: u64,
}

impl Uplift {
    pub fn decided(&mut self, action: &str, held_out: bool) {
        let a = self.arms.entry(action.to_string()).or_default();
        if held_out {
            a.held_out += 1;
        } else {
            a.sent += 1;
        }
    }

    pub fn converted(&mut self, action: &str, held_out: bool) {
        let a = self.arms.entry(action.to_string()).or_default();
        if held_out {
            a.held_out_converted += 1;
        } else {
            a.sent_converted += 1;
        }
    }

    pub fn arm(&self, action: &str) -> Arm {
        self.arms.get(action).copied().unwrap_or_default()
    }

    /// One report per catalog action, in catalog order.
    pub fn report(&self, cfg: &DecideConfig, learned: &Propensities) -> Vec<ActionReport> {
        cfg.actions
            .iter()
            .map(|spec| {
                let a = self.arm(&spec.name);
                let (post, trials, responses) = learned.overall(spec, cfg.prior_strength);
                let rate = |conv: u64, n: u64| (n > 0).then(|| conv as f64 / n as f64);
                let (rs, rh) = (rate(a.sent_converted, a.sent), rate(a.held_out_converted, a.held_out));
                let (uplift, low, high) = match (rs, rh) {
                    (Some(p1), Some(p0)) => {
                        let (l1, u1) = wilson(p1, a.sent);
                        let (l0, u0) = wilson(p0, a.held_out);
                        let d = p1 - p0;
                        let low = d - ((p1 - l1).powi(2) + (u0 - p0).powi(2)).sqrt();
                        let high = d + ((u1 - p1).powi(2) + (p0 - l0).powi(2)).sqrt();
                        (Some(r4(d)), Some(r4(low)), Some(r4(high)))
                    }
                    _ => (None, None, None),
                };
                ActionReport {
                    action: spec.name.clone(),
                    trigger: spec.trigger,
                    sent: a.sent,
                    held_out: a.held_out,
                    conversions_sent: a.sent_converted,
                    conversions_held_out: a.held_out_converted,
                    rate_sent: rs.map(r4),
                    rate_held_out: rh.map(r4),
                    uplift,
                    uplift_ci_low: low,
                    uplift_ci_high: high,
                    posterior_mean: r4(post.mean()),
                    outcomes: trials as u64,
                    responses: responses as u64,
                }
            })
            .collect()
    }
}

/// The 95% Wilson score interval of a proportion `p` out of `n` (> 0).
fn wilson(p: f64, n: u64) -> (f64, f64) {
    const Z: f64 = 1.96;
    let n = n as f64;
    let d = 1.0 + Z * Z / n;
    let center = (p + Z * Z / (2.0 * n)) / d;
    let half = Z / d * (p * (1.0 - p) / n + Z * Z / (4.0 * n * n)).sqrt();
    (center - half, center + half)
}

fn r4(x: f64) -> f64 {
    super::round4(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::default_decide;

    #[test]
    fn the_holdout_is_stable_per_person_and_action_and_near_its_share() {
        assert_eq!(held_out(0.1, "o-1", "a"), held_out(0.1, "o-1", "a"));
        assert!(!held_out(0.0, "o-1", "a"));
        assert!(held_out(1.0, "o-1", "a"));
        let n = 10_000;
        let withheld = (0..n).filter(|i| held_out(0.1, &format!("o-{i}"), "a")).count();
        // Binomial(10000, 0.1): sd 30; a fixed set of ids, so no flakiness.
        assert!((850..1150).contains(&withheld), "{withheld}");
    }

    #[test]
    fn the_report_gives_rates_uplift_and_interval() {
        let cfg = default_decide();
        let name = cfg.actions[0].name.clone();
        let mut u = Uplift::default();
        for i in 0..1000 {
            u.decided(&name, false);
            if i % 5 == 0 {
                u.converted(&name, false);
            }
        }
        for i in 0..100 {
            u.decided(&name, true);
            if i % 10 == 0 {
                u.converted(&name, true);
            }
        }
        let r = &u.report(&cfg, &Propensities::default())[0];
        assert_eq!(
            (r.sent, r.held_out, r.conversions_sent, r.conversions_held_out),
            (1000, 100, 200, 10)
        );
        assert_eq!((r.rate_sent, r.rate_held_out), (Some(0.2), Some(0.1)));
        assert_eq!(r.uplift, Some(0.1));
        // Newcombe's hybrid score interval (python3, from the two Wilson intervals).
        assert_eq!((r.uplift_ci_low, r.uplift_ci_high), (Some(0.022), Some(0.1517)));
        assert!((r.posterior_mean - cfg.actions[0].propensity).abs() < 1e-9);
        let other = &u.report(&cfg, &Propensities::default())[1];
        assert_eq!((other.sent, other.uplift), (0, None));
        // No conversion in either group: still an interval around 0, not a point.
        let mut none = Uplift::default();
        for held in [false, false, true] {
            none.decided(&name, held);
        }
        let r = &none.report(&cfg, &Propensities::default())[0];
        assert_eq!(r.uplift, Some(0.0));
        assert!(
            r.uplift_ci_low.unwrap() < -0.3 && r.uplift_ci_high.unwrap() > 0.3,
            "{r:?}"
        );
    }
}
