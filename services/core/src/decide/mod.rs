//! Decisions: which next best action, and how likely a customer is to churn.
//!
//! In: a [`Journey`], the triggers an event or timer produced, the channels the
//! customer can be reached on, the learned propensities and the event time
//! `now`. Out: a [`Decision`]: at most one [`Choice`] (the best eligible
//! action) and the actions policy held back, with why.
//!
//! Ranking: expected value = propensity x value x weight x lever, where the
//! propensity is learned from outcomes ([`propensity`]), the value and weight
//! come from the catalog and the lever from the business (`decide.levers`).
//! Contact policy, checked for every candidate: not dismissed `ignore_limit`
//! times, past its cool-down, no promotional action within the quiet period
//! after a complaint or cancel request, a channel the customer can be reached
//! on (push needs consent) and under that channel's caps.
//!
//! Invariant: pure functions of their arguments; the same journey and time give
//! the same decision, so replaying history gives the same outputs.

pub mod churn;
pub mod propensity;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::journey::{count_within, Journey, Stage, Tier};
use crate::time::EventTime;

#[cfg(test)]
mod tests;

/// What can make an action eligible.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// Timer: a non-empty cart untouched for `cart_abandon_after`.
    CartAbandoned,
    /// Timer: a product looked at, neither put in the cart nor bought, for
    /// `browse_abandon_after`.
    BrowseAbandoned,
    /// Event: a purchase or sale.
    Purchased,
    /// Event: a complaint, cancel request, unresolved call, low CSAT.
    ServiceIssue,
    /// Event: active on another channel after looking at a product elsewhere.
    ChannelSwitch,
    /// Timer: a customer who bought before has gone quiet.
    Lapsed,
}

/// A channel an action can be delivered on.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContactChannel {
    Email,
    Push,
    Sms,
    Web,
    Store,
    CallCenter,
}

impl ContactChannel {
    pub fn label(self) -> &'static str {
        match self {
            ContactChannel::Email => "email",
            ContactChannel::Push => "push",
            ContactChannel::Sms => "sms",
            ContactChannel::Web => "web",
            ContactChannel::Store => "store",
            ContactChannel::CallCenter => "call_center",
        }
    }
}

/// Which channels a customer can be reached on.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Reach {
    pub email: bool,
    pub push: bool,
    pub sms: bool,
    pub web: bool,
    pub store: bool,
    pub call_center: bool,
}

impl Reach {
    pub fn allows(&self, c: ContactChannel) -> bool {
        match c {
            ContactChannel::Email => self.email,
            ContactChannel::Push => self.push,
            ContactChannel::Sms => self.sms,
            ContactChannel::Web => self.web,
            ContactChannel::Store => self.store,
            ContactChannel::CallCenter => self.call_center,
        }
    }
}

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
    fn hold(&self, j: &Journey, now: EventTime) -> bool {
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

pub const DAYS_30: Duration = Duration::from_secs(30 * 24 * 3600);

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
    pub actions: Vec<ActionSpec>,
    pub churn: churn::ChurnConfig,
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
        if self.policy.caps.iter().any(|c| c.max == 0 || c.per.is_zero()) {
            return Err(ConfigError::Other("policy.caps: max and per must be > 0"));
        }
        if self.prior_strength <= 0.0 {
            return Err(ConfigError::Other("prior_strength: must be > 0"));
        }
        self.churn.validate().map_err(ConfigError::Other)
    }
}

/// A named number that explains a decision.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NamedValue {
    pub name: &'static str,
    pub value: f64,
}

/// The winning action.
#[derive(Clone, Debug, PartialEq)]
pub struct Choice {
    pub action: String,
    pub channel: ContactChannel,
    /// Expected value: propensity x value x weight x lever.
    pub score: f64,
    pub reason: String,
    pub factors: Vec<NamedValue>,
    pub expires_after: Duration,
}

/// Why an action whose trigger fired and whose conditions held was not offered.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Suppressed {
    /// The customer dismissed it `ignore_limit` times.
    Ignored,
    /// Offered to this customer too recently.
    Cooldown,
    /// Promotional, within the quiet period after a complaint.
    QuietPeriod,
    /// None of its channels reaches the customer (or consent is missing).
    Unreachable,
    /// Every channel that reaches the customer is at its cap.
    Capped,
}

impl Suppressed {
    pub const ALL: [Suppressed; 5] = [
        Suppressed::Ignored,
        Suppressed::Cooldown,
        Suppressed::QuietPeriod,
        Suppressed::Unreachable,
        Suppressed::Capped,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Suppressed::Ignored => "ignored",
            Suppressed::Cooldown => "cooldown",
            Suppressed::QuietPeriod => "quiet_period",
            Suppressed::Unreachable => "unreachable",
            Suppressed::Capped => "capped",
        }
    }
}

/// The outcome of arbitration: the winner, if any, and the actions whose
/// facts held but that policy held back.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Decision {
    pub choice: Option<Choice>,
    pub suppressed: Vec<(String, Suppressed)>,
}

/// Picks the best eligible action for the triggers that fired at `now`.
/// `propensity(action)` is the learned success probability for this customer's tier.
pub fn decide(
    cfg: &DecideConfig,
    j: &Journey,
    reach: &Reach,
    triggers: &[Trigger],
    now: EventTime,
    propensity: &dyn Fn(&ActionSpec) -> f64,
) -> Decision {
    let mut ranked: Vec<Choice> = Vec::new();
    let mut suppressed = Vec::new();
    for a in cfg.actions.iter().filter(|a| triggers.contains(&a.trigger)) {
        match candidate(cfg, a, j, reach, now, propensity(a)) {
            Ok(c) => ranked.push(c),
            Err(Some(why)) => suppressed.push((a.name.clone(), why)),
            Err(None) => {}
        }
    }
    // Highest expected value first; ties by catalog name so the choice is stable.
    ranked.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.action.cmp(&b.action)));
    let mut it = ranked.into_iter();
    let choice = it.next().map(|mut best| {
        let beaten: Vec<String> = it.map(|c| format!("{} ({:.2})", c.action, c.score)).collect();
        if !beaten.is_empty() {
            best.reason = format!("{}; chosen over {}", best.reason, beaten.join(", "));
        }
        best
    });
    Decision { choice, suppressed }
}

/// `Ok` when the action is eligible. `Err(None)`: its facts or conditions do
/// not hold; `Err(Some(_))`: contact policy held it back.
fn candidate(
    cfg: &DecideConfig,
    a: &ActionSpec,
    j: &Journey,
    reach: &Reach,
    now: EventTime,
    propensity: f64,
) -> Result<Choice, Option<Suppressed>> {
    let (extra_value, mut factors, detail) = facts(cfg, a, j, now).ok_or(None)?;
    if !a.when.hold(j, now) {
        return Err(None);
    }
    if j.ignored.get(&a.name).is_some_and(|n| *n >= cfg.policy.ignore_limit) {
        return Err(Some(Suppressed::Ignored));
    }
    if j.last_action
        .get(&a.name)
        .is_some_and(|last| now < last.plus(a.cooldown))
    {
        return Err(Some(Suppressed::Cooldown));
    }
    if a.promotional
        && j.last_service_issue
            .is_some_and(|t| t <= now && now < t.plus(cfg.policy.quiet_after_complaint))
    {
        return Err(Some(Suppressed::QuietPeriod));
    }
    let reachable: Vec<ContactChannel> = a.channels.iter().copied().filter(|c| reach.allows(*c)).collect();
    if reachable.is_empty() {
        return Err(Some(Suppressed::Unreachable));
    }
    let channel = reachable
        .into_iter()
        .find(|c| under_caps(cfg, j, *c, now))
        .ok_or(Some(Suppressed::Capped))?;
    let value = a.value + extra_value;
    let lever = cfg.levers.get(&a.name).copied().unwrap_or(1.0);
    let score = propensity * value * a.weight * lever;
    factors.extend([
        NamedValue {
            name: "propensity",
            value: round4(propensity),
        },
        NamedValue {
            name: "value",
            value: round2(value),
        },
        NamedValue {
            name: "weight",
            value: a.weight,
        },
        NamedValue {
            name: "lever",
            value: lever,
        },
    ]);
    Ok(Choice {
        action: a.name.clone(),
        channel,
        score: round4(score),
        reason: format!(
            "{}: {detail}; expected value {:.2} (propensity {:.3} x value {:.2})",
            a.reason, score, propensity, value
        ),
        factors,
        expires_after: a.expires_after,
    })
}

/// True when one more message on `channel` at `now` keeps every window of
/// every cap on that channel within its maximum. Counts messages within `per`
/// on either side of `now`, so decisions taken out of event-time order (late
/// events, timers) cannot overfill a window either.
pub fn under_caps(cfg: &DecideConfig, j: &Journey, channel: ContactChannel, now: EventTime) -> bool {
    cfg.policy.caps.iter().filter(|c| c.channel == channel).all(|cap| {
        let (from, to) = (now.minus(cap.per), now.plus(cap.per));
        let n = j
            .contacts
            .iter()
            .filter(|c| c.channel == channel && c.at > from && c.at < to)
            .count();
        n < cap.max as usize
    })
}

/// The trigger's facts: `None` when they do not hold, else the value the facts
/// add, the factors and a phrase for the reason.
fn facts(cfg: &DecideConfig, a: &ActionSpec, j: &Journey, now: EventTime) -> Option<(f64, Vec<NamedValue>, String)> {
    Some(match a.trigger {
        Trigger::CartAbandoned => {
            let value = j.cart.value();
            let updated = j.cart.updated_at?;
            if j.cart.is_empty() || now < updated.plus(cfg.cart_abandon_after) {
                return None;
            }
            let minutes = (now.millis() - updated.millis()) as f64 / 60_000.0;
            (
                a.value_per_cart_unit * value,
                vec![
                    NamedValue {
                        name: "cart_value",
                        value: round2(value),
                    },
                    NamedValue {
                        name: "cart_items",
                        value: j.cart.items.len() as f64,
                    },
                    NamedValue {
                        name: "minutes_since_cart_change",
                        value: minutes.round(),
                    },
                ],
                format!("cart of {value:.2} untouched for {minutes:.0} minutes"),
            )
        }
        Trigger::BrowseAbandoned => {
            let v = j.last_product_view.as_ref()?;
            let untouched = j.cart.updated_at.is_none_or(|u| u < v.at) && j.last_purchase.is_none_or(|p| p < v.at);
            if !untouched || now < v.at.plus(cfg.browse_abandon_after) {
                return None;
            }
            let hours = (now.millis() - v.at.millis()) as f64 / 3_600_000.0;
            (
                0.0,
                vec![NamedValue {
                    name: "hours_since_product_view",
                    value: round2(hours),
                }],
                format!("looked at {} {hours:.0} hours ago and left", v.sku),
            )
        }
        Trigger::Purchased => {
            let first = j.purchases == 1;
            (
                0.0,
                vec![
                    NamedValue {
                        name: "purchases",
                        value: f64::from(j.purchases),
                    },
                    NamedValue {
                        name: "revenue",
                        value: round2(j.revenue),
                    },
                ],
                if first {
                    String::from("first purchase")
                } else {
                    format!("purchase number {}, tier {}", j.purchases, j.tier.label())
                },
            )
        }
        Trigger::ServiceIssue => {
            let complaints = count_within(&j.complaint_times, now, DAYS_30);
            let unresolved = count_within(&j.unresolved_times, now, DAYS_30);
            (
                0.0,
                vec![
                    NamedValue {
                        name: "complaints_30d",
                        value: complaints as f64,
                    },
                    NamedValue {
                        name: "unresolved_calls_30d",
                        value: unresolved as f64,
                    },
                    NamedValue {
                        name: "cancel_requests",
                        value: f64::from(j.cancel_requests),
                    },
                    NamedValue {
                        name: "last_csat",
                        value: j.last_csat.map_or(0.0, f64::from),
                    },
                ],
                format!(
                    "{complaints} complaint(s) and {unresolved} unresolved call(s) in 30 days, {} cancel request(s)",
                    j.cancel_requests
                ),
            )
        }
        Trigger::ChannelSwitch => {
            let v = j.last_product_view.as_ref()?;
            (
                0.0,
                vec![NamedValue {
                    name: "days_since_product_view",
                    value: round2(now.days_since(v.at)),
                }],
                format!(
                    "looked at {} on {} and is now on another channel",
                    v.sku,
                    v.channel.label()
                ),
            )
        }
        Trigger::Lapsed => {
            let last = j.last_purchase?;
            let days = now.days_since(last);
            (
                0.0,
                vec![
                    NamedValue {
                        name: "days_since_last_purchase",
                        value: days.floor(),
                    },
                    NamedValue {
                        name: "purchases",
                        value: f64::from(j.purchases),
                    },
                    NamedValue {
                        name: "churn_score",
                        value: round2(j.churn.score),
                    },
                ],
                format!("no purchase for {days:.0} days after {} purchase(s)", j.purchases),
            )
        }
    })
}

pub(crate) fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

pub(crate) fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}
