//! The pieces a [`Journey`](super::Journey) is made of: per-channel counts,
//! the cart, call counts, the product looked at last, contacts and decisions
//! taken with what they beat and what was held back, and the churn state with
//! its recent history.
//!
//! In / out: plain data, read by the decision stage and the lookup API and
//! written into snapshots. Keeps nothing beyond the values themselves.

use std::collections::BTreeMap;
use std::mem::size_of;

use serde::{Deserialize, Serialize};

use super::compact::{Factors, List, OptTime};
use crate::event::Channel;
use crate::time::EventTime;
use crate::vocab::{Band, ContactChannel, FactorName, Outcome, Suppressed, Tier};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChannelStats {
    pub events: u64,
    pub last_seen: OptTime,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CartLine {
    pub quantity: u32,
    pub unit_price: f64,
    pub category: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Cart {
    pub items: BTreeMap<String, CartLine>,
    /// Event time of the last change to the cart.
    pub updated_at: Option<EventTime>,
}

impl Cart {
    pub fn value(&self) -> f64 {
        self.items.values().map(|l| f64::from(l.quantity) * l.unit_price).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// Counts of call outcomes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CallStats {
    pub calls: u32,
    pub resolved: u32,
    pub unresolved: u32,
    pub escalated: u32,
    pub abandoned: u32,
    pub last_call: Option<EventTime>,
}

/// A decision already taken for this customer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecentAction {
    pub action_id: String,
    pub action: String,
    pub channel: String,
    pub reason: String,
    pub decided_at: EventTime,
    /// The customer's tier when it was decided (propensities learn per tier).
    pub tier: Tier,
    /// The last outcome reported for it, if any.
    pub outcome: Option<Outcome>,
    /// Counted as a trial / a response in the learned propensities.
    pub counted_trial: bool,
    pub counted_response: bool,
    /// Its expected value when it was chosen. `None` in snapshots written
    /// before the decision context was kept (as are the two lists below).
    #[serde(default)]
    pub score: Option<f64>,
    /// The other eligible actions it beat, best first (at most
    /// [`DECISION_CONTEXT`](super::DECISION_CONTEXT)).
    #[serde(default)]
    pub beaten: Vec<Beaten>,
    /// The actions whose trigger fired too but that a contact rule held back
    /// (at most [`DECISION_CONTEXT`](super::DECISION_CONTEXT)).
    #[serde(default)]
    pub held_back: Vec<HeldBack>,
    /// Withheld as the control group: recorded, never published. (This and
    /// `converted`: false in snapshots written before they were kept.)
    #[serde(default)]
    pub held_out: bool,
    /// The customer bought within the action's conversion window after it.
    #[serde(default)]
    pub converted: bool,
}

impl RecentAction {
    /// Heap bytes beyond the struct itself, for the memory estimate.
    pub fn heap_bytes(&self) -> usize {
        self.action_id.len()
            + self.action.len()
            + self.reason.len()
            + self.channel.len()
            + self
                .beaten
                .iter()
                .map(|b| size_of::<Beaten>() + b.action.len())
                .sum::<usize>()
            + self
                .held_back
                .iter()
                .map(|h| size_of::<HeldBack>() + h.action.len())
                .sum::<usize>()
    }
}

/// An eligible action that lost to the one chosen: its expected value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Beaten {
    pub action: String,
    pub score: f64,
}

/// An action whose trigger fired and whose conditions held, but that a
/// contact rule (cool-down, quiet period, caps, reach or consent, dismissals)
/// held back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeldBack {
    pub action: String,
    pub rule: Suppressed,
}

/// The product a customer looked at last.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProductView {
    pub sku: String,
    pub channel: Channel,
    pub at: EventTime,
}

/// A message sent to the customer, for contact-policy caps.
#[derive(Copy, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Contact {
    pub at: EventTime,
    pub channel: ContactChannel,
}

/// One feature of the churn score.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Factor {
    pub name: FactorName,
    pub value: f64,
    pub contribution: f64,
}

/// The churn band and what put the customer there.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChurnState {
    pub score: f64,
    /// The band last reported downstream; `None` until one was.
    pub band: Option<Band>,
    /// Exactly as many as the score has (no spare capacity), compact.
    pub factors: Factors,
    pub evaluated_at: OptTime,
    /// The last evaluations, oldest first (see `churn_history.rs`). Empty in
    /// snapshots written before it existed.
    #[serde(default)]
    pub history: List<ChurnPoint>,
}

/// One churn evaluation, as the history keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChurnPoint {
    pub at: EventTime,
    pub score: f64,
    /// The band after this evaluation (`None` until one was reported).
    pub band: Option<Band>,
    /// The factors that contributed (non-zero contributions only).
    pub contributions: Box<[Contribution]>,
}

/// One factor's share of a churn score (rounded to 0.01 by the score, so an
/// `f32` holds it: 8 bytes a factor instead of 16).
#[derive(Copy, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Contribution {
    pub name: FactorName,
    pub contribution: f32,
}

/// A customer's RFM scores, 1 (lowest fifth of buyers) to 5 (highest fifth).
/// Recency: 5 for the most recent last purchase.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rfm {
    pub r: u8,
    pub f: u8,
    pub m: u8,
}

/// A customer's expected lifetime value over the configured horizon.
#[derive(Copy, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Clv {
    /// Expected purchases over the horizon.
    pub expected_purchases: f64,
    /// Expected value of one order (shrunk toward the population's mean).
    pub order_value: f64,
    /// Probability the customer is still active (1 - churn score).
    pub p_active: f64,
    /// `expected_purchases * order_value`.
    pub value: f64,
    pub horizon_days: f64,
}
