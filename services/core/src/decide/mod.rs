//! Decisions: which next best action, and how likely a customer is to churn.
//!
//! In: a [`Journey`], the triggers an event or timer produced, the channels the
//! customer can be reached on, and the event time `now`. Out: at most one
//! [`Choice`] (the best eligible action) and a churn [`churn::Score`].
//! Invariant: pure functions of their arguments; the same journey and time give
//! the same decision, so replaying history gives the same outputs.

pub mod churn;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::journey::Journey;
use crate::time::EventTime;

#[cfg(test)]
mod tests;

/// What can make an action eligible.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// Timer: a non-empty cart untouched for `cart_abandon_after`.
    CartAbandoned,
    /// Event: a purchase or sale.
    Purchased,
    /// Event: a complaint, cancel request, unresolved call, low CSAT.
    ServiceIssue,
    /// Timer: a customer who bought before has gone quiet.
    Lapsed,
}

/// A channel an action can be delivered on.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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

/// One entry of the action catalog.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionSpec {
    pub name: String,
    pub trigger: Trigger,
    /// Channels in order of preference; the first one the customer can be
    /// reached on is used.
    pub channels: Vec<ContactChannel>,
    /// Score before the trigger's own factors, in [0, 1].
    pub base_score: f64,
    /// No repeat of this action to the same customer within this time.
    #[serde(with = "humantime_serde")]
    pub cooldown: Duration,
    /// How long the decision stays valid for downstream.
    #[serde(with = "humantime_serde")]
    pub expires_after: Duration,
    /// Cart actions: the least cart value worth acting on.
    #[serde(default)]
    pub min_cart_value: f64,
    /// Lapse actions: the least time since the last purchase.
    #[serde(default, with = "humantime_serde::option")]
    pub min_since_purchase: Option<Duration>,
    /// A short sentence for marketers, completed with the trigger's facts.
    pub reason: String,
}

/// The decision settings of the engine's `[decide]` config section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecideConfig {
    /// A cart untouched this long is abandoned.
    #[serde(with = "humantime_serde")]
    pub cart_abandon_after: Duration,
    /// A customer with no event for this long is re-scored for churn and
    /// considered for lapse actions, and again after each further period.
    #[serde(with = "humantime_serde")]
    pub quiet_after: Duration,
    /// Quiet checks stop after this long without an event.
    #[serde(with = "humantime_serde")]
    pub quiet_checks_until: Duration,
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
    #[error("decide.churn: {0}")]
    Churn(&'static str),
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
            if !(0.0..=1.0).contains(&a.base_score) {
                return Err(bad("base_score must be within 0..=1"));
            }
            if self.actions[..index].iter().any(|b| b.name == a.name) {
                return Err(bad("name is used twice"));
            }
        }
        self.churn.validate().map_err(ConfigError::Churn)
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
    pub score: f64,
    pub reason: String,
    pub factors: Vec<NamedValue>,
    pub expires_after: Duration,
}

/// Why an action whose trigger fired was not offered.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Suppressed {
    /// Offered to this customer too recently.
    Cooldown,
    /// None of its channels reaches the customer (or consent is missing).
    Unreachable,
}

impl Suppressed {
    pub fn label(self) -> &'static str {
        match self {
            Suppressed::Cooldown => "cooldown",
            Suppressed::Unreachable => "unreachable",
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
pub fn decide(cfg: &DecideConfig, j: &Journey, reach: &Reach, triggers: &[Trigger], now: EventTime) -> Decision {
    let mut ranked: Vec<Choice> = Vec::new();
    let mut suppressed = Vec::new();
    for a in cfg.actions.iter().filter(|a| triggers.contains(&a.trigger)) {
        match candidate(cfg, a, j, reach, now) {
            Ok(c) => ranked.push(c),
            Err(Some(why)) => suppressed.push((a.name.clone(), why)),
            Err(None) => {}
        }
    }
    // Highest score first; ties by catalog name so the choice is stable.
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

/// `Ok` when the action is eligible: trigger facts hold, the cool-down has
/// passed and the customer can be reached on one of its channels.
/// `Err(None)`: the facts do not hold; `Err(Some(_))`: policy held it back.
fn candidate(
    cfg: &DecideConfig,
    a: &ActionSpec,
    j: &Journey,
    reach: &Reach,
    now: EventTime,
) -> Result<Choice, Option<Suppressed>> {
    let (boost, factors, detail) = facts(cfg, a, j, now).ok_or(None)?;
    if let Some(last) = j.last_action.get(&a.name) {
        if now < last.plus(a.cooldown) {
            return Err(Some(Suppressed::Cooldown));
        }
    }
    let channel = *a
        .channels
        .iter()
        .find(|c| reach.allows(**c))
        .ok_or(Some(Suppressed::Unreachable))?;
    Ok(Choice {
        action: a.name.clone(),
        channel,
        score: round2((a.base_score * boost).clamp(0.0, 1.0)),
        reason: format!("{}: {detail}", a.reason),
        factors,
        expires_after: a.expires_after,
    })
}

/// The trigger's facts: `None` when they do not hold, else the score boost,
/// the factors and a phrase for the reason.
fn facts(cfg: &DecideConfig, a: &ActionSpec, j: &Journey, now: EventTime) -> Option<(f64, Vec<NamedValue>, String)> {
    Some(match a.trigger {
        Trigger::CartAbandoned => {
            let value = j.cart.value();
            let updated = j.cart.updated_at?;
            if j.cart.is_empty() || value < a.min_cart_value || now < updated.plus(cfg.cart_abandon_after) {
                return None;
            }
            let minutes = (now.millis() - updated.millis()) as f64 / 60_000.0;
            (
                (0.6 + value / 250.0).min(1.25),
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
        Trigger::Purchased => {
            let first = j.purchases == 1;
            (
                if first { 1.2 } else { 1.0 },
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
                    format!("purchase number {}", j.purchases)
                },
            )
        }
        Trigger::ServiceIssue => {
            let issues = j.complaints + j.call.unresolved + j.call.escalated;
            (
                1.0 + 0.15 * f64::from(issues.min(4)) + if j.cancel_requests > 0 { 0.3 } else { 0.0 },
                vec![
                    NamedValue {
                        name: "complaints",
                        value: f64::from(j.complaints),
                    },
                    NamedValue {
                        name: "unresolved_calls",
                        value: f64::from(j.call.unresolved + j.call.escalated),
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
                    "{} complaint(s), {} unresolved call(s), {} cancel request(s)",
                    j.complaints,
                    j.call.unresolved + j.call.escalated,
                    j.cancel_requests
                ),
            )
        }
        Trigger::Lapsed => {
            let last = j.last_purchase?;
            let days = now.days_since(last);
            if let Some(min) = a.min_since_purchase {
                if now < last.plus(min) {
                    return None;
                }
            }
            (
                1.0 + j.churn.score,
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
