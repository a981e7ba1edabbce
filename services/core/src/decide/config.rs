//! The `[decide]` config section: the action catalog, its conditions, the
//! contact policy and the timer periods.
//!
//! In: the section as parsed by the engine's config layers. Out:
//! [`DecideConfig`], checked by [`DecideConfig::validate`] (a bad value fails
//! at start with its key and the reason). Keeps nothing beyond the values.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::journey::{Journey, Stage};
use crate::time::{count_within, EventTime};
use crate::vocab::{ContactChannel, Tier};

use super::policy::{Budget, ConsentDefaults, NoResponse};
use super::quiet::QuietHours;
use super::{churn, Trigger, DAYS_30};

/// Conditions on journey state; every one given must hold.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conditions {
    /// One of these stages (empty: any).
    #[serde(default)]
    pub stages: Vec<Stage>,
    /// One of these value tiers (empty: any).
    #[serde(default)]
    pub tiers: Vec<Tier>,
    pub min_cart_value: Option<f64>,
    pub min_purchases: Option<u32>,
    #[serde(default, with = "humantime_serde::option")]
    pub min_since_purchase: Option<Duration>,
    #[serde(default, with = "humantime_serde::option")]
    pub max_since_purchase: Option<Duration>,
    /// At most this many complaints in the last 30 days.
    pub max_complaints_30d: Option<u32>,
}

impl Conditions {
    pub(super) fn hold(&self, j: &Journey, now: EventTime) -> bool {
        let since_purchase = |min: bool, d: Duration| match j.last_purchase {
            Some(p) if min => now >= p.plus(d),
            Some(p) => now <= p.plus(d),
            None => false,
        };
        (self.stages.is_empty() || self.stages.contains(&j.stage()))
            && (self.tiers.is_empty() || self.tiers.contains(&j.tier))
            && self.min_cart_value.is_none_or(|v| j.cart.value() >= v)
            && self.min_purchases.is_none_or(|n| j.purchases >= n)
            && self.min_since_purchase.is_none_or(|d| since_purchase(true, d))
            && self.max_since_purchase.is_none_or(|d| since_purchase(false, d))
            && self
                .max_complaints_30d
                .is_none_or(|n| count_within(&j.complaint_times, now, DAYS_30) <= n as usize)
    }
}

/// One entry of the action catalog.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionSpec {
    pub name: String,
    pub trigger: Trigger,
    /// Channels in order of preference; the first one the customer can be
    /// reached on and that is under its caps is used.
    pub channels: Vec<ContactChannel>,
    /// Business value of a success (a conversion), in currency units.
    pub value: f64,
    /// Cart actions: value added per unit of cart value.
    #[serde(default)]
    pub value_per_cart_unit: f64,
    /// Share of the customer's expected lifetime value (`journey.clv`) a
    /// success keeps: added to `value`, so a customer worth more has more
    /// at stake (retention, win-back and service actions). Default 0.
    #[serde(default)]
    pub clv_share: f64,
    /// Prior probability of success, before outcomes are learned.
    pub propensity: f64,
    /// Business weight (default 1).
    #[serde(default = "one")]
    pub weight: f64,
    /// No repeat of this action to the same customer within this time.
    #[serde(with = "humantime_serde")]
    pub cooldown: Duration,
    /// How long the decision stays valid for downstream.
    #[serde(with = "humantime_serde")]
    pub expires_after: Duration,
    /// A purchase this long after the decision counts as its conversion, for
    /// the uplift against the holdout (default: `expires_after`).
    #[serde(default, with = "humantime_serde::option")]
    pub conversion_window: Option<Duration>,
    /// Promotional actions keep quiet after a complaint or cancel request.
    #[serde(default)]
    pub promotional: bool,
    #[serde(default)]
    pub when: Conditions,
    /// A short sentence for marketers, completed with the trigger's facts.
    pub reason: String,
}

fn one() -> f64 {
    1.0
}

fn yes() -> bool {
    true
}

impl ActionSpec {
    /// How long after the decision a purchase counts as its conversion.
    pub fn conversion_window(&self) -> Duration {
        self.conversion_window.unwrap_or(self.expires_after)
    }
}

/// A cap: at most `max` messages on `channel` in any window of `per`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cap {
    pub channel: ContactChannel,
    pub max: u32,
    #[serde(with = "humantime_serde")]
    pub per: Duration,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContactPolicy {
    pub caps: Vec<Cap>,
    /// Promotional actions are held back this long after a complaint or
    /// cancel request; service actions still go.
    #[serde(with = "humantime_serde")]
    pub quiet_after_complaint: Duration,
    /// An action the customer dismissed this many times is not offered again.
    pub ignore_limit: u32,
    /// At most this many messages over all channels in a window (none: no
    /// cross-channel budget).
    #[serde(default)]
    pub budget: Option<Budget>,
    /// The consent of e-mail, SMS and push when the customer said nothing
    /// (default: opt-in on all three).
    #[serde(default)]
    pub consent: ConsentDefaults,
    /// Rest a channel after messages with no response (none: never).
    #[serde(default)]
    pub no_response: Option<NoResponse>,
    /// No message on some channels at night, customer's local time (none:
    /// no quiet hours).
    #[serde(default)]
    pub quiet_hours: Option<QuietHours>,
}

impl ContactPolicy {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.caps.iter().any(|c| c.max == 0 || c.per.is_zero()) {
            return Err(ConfigError::Other("policy.caps: max and per must be > 0"));
        }
        if self.budget.as_ref().is_some_and(|b| b.max == 0 || b.per.is_zero()) {
            return Err(ConfigError::Other("policy.budget: max and per must be > 0"));
        }
        if let Some(r) = &self.no_response {
            if r.after == 0 || r.within.is_zero() || r.suppress_for.is_zero() {
                return Err(ConfigError::Other(
                    "policy.no_response: after, within and suppress_for must be > 0",
                ));
            }
        }
        match &self.quiet_hours {
            Some(q) => q.validate().map_err(ConfigError::Other),
            None => Ok(()),
        }
    }
}

/// The decision settings of the engine's `[decide]` config section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecideConfig {
    /// A cart untouched this long is abandoned.
    #[serde(with = "humantime_serde")]
    pub cart_abandon_after: Duration,
    /// A product looked at and left this long is an abandoned browse.
    #[serde(with = "humantime_serde")]
    pub browse_abandon_after: Duration,
    /// A customer with no event for this long is re-scored for churn and
    /// considered for lapse actions, and again after each further period.
    #[serde(with = "humantime_serde")]
    pub quiet_after: Duration,
    /// Quiet checks stop after this long without an event.
    #[serde(with = "humantime_serde")]
    pub quiet_checks_until: Duration,
    /// Business levers per action name (default 1): multiply its expected value.
    #[serde(default)]
    pub levers: BTreeMap<String, f64>,
    pub policy: ContactPolicy,
    /// How many pseudo-observations the catalog propensity counts for when
    /// outcomes are learned (see `propensity`).
    pub prior_strength: f64,
    /// Rank on a Thompson draw from each action's posterior (true) or on its
    /// mean (false: no exploration).
    #[serde(default = "yes")]
    pub explore: bool,
    /// Actions whose expected value (posterior mean x value x weight x
    /// lever) is below this are not sent (suppressed as `below_minimum`).
    #[serde(default)]
    pub min_expected_value: f64,
    /// The share of decisions withheld as the control group (stable per One
    /// ID and action), to measure each action's uplift. 0: none.
    #[serde(default)]
    pub holdout_share: f64,
    pub actions: Vec<ActionSpec>,
    pub churn: churn::ChurnConfig,
    /// Expected lifetime value (see `value.rs`); defaults when absent.
    #[serde(default)]
    pub value: super::value::ValueConfig,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("decide.actions[{index}] ({name}): {problem}")]
    Action {
        index: usize,
        name: String,
        problem: &'static str,
    },
    #[error("decide.{0}")]
    Other(&'static str),
}

impl DecideConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (index, a) in self.actions.iter().enumerate() {
            let bad = |problem| ConfigError::Action {
                index,
                name: a.name.clone(),
                problem,
            };
            if a.name.is_empty() {
                return Err(bad("name is empty"));
            }
            if a.channels.is_empty() {
                return Err(bad("channels is empty"));
            }
            if !(0.0..=1.0).contains(&a.propensity) {
                return Err(bad("propensity must be within 0..=1"));
            }
            if a.value < 0.0 || a.weight < 0.0 || a.value_per_cart_unit < 0.0 {
                return Err(bad("value, value_per_cart_unit and weight must be >= 0"));
            }
            if !(0.0..=1.0).contains(&a.clv_share) {
                return Err(bad("clv_share must be within 0..=1"));
            }
            if self.actions[..index].iter().any(|b| b.name == a.name) {
                return Err(bad("name is used twice"));
            }
        }
        if self.levers.keys().any(|k| !self.actions.iter().any(|a| &a.name == k)) {
            return Err(ConfigError::Other("levers: a lever names an action not in the catalog"));
        }
        if self.levers.values().any(|l| *l < 0.0) {
            return Err(ConfigError::Other("levers: must be >= 0"));
        }
        self.policy.validate()?;
        if !(self.min_expected_value >= 0.0 && self.min_expected_value.is_finite()) {
            return Err(ConfigError::Other("min_expected_value: must be >= 0"));
        }
        if !(0.0..1.0).contains(&self.holdout_share) {
            return Err(ConfigError::Other("holdout_share: must be within 0..1"));
        }
        if self.prior_strength <= 0.0 {
            return Err(ConfigError::Other("prior_strength: must be > 0"));
        }
        self.value.validate().map_err(ConfigError::Other)?;
        self.churn.validate().map_err(ConfigError::Other)
    }
}
