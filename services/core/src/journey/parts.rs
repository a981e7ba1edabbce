//! The pieces a [`Journey`](super::Journey) is made of: per-channel counts,
//! the cart, call counts, the product looked at last, contacts and decisions
//! taken, and the churn state.
//!
//! In / out: plain data, read by the decision stage and the lookup API and
//! written into snapshots. Keeps nothing beyond the values themselves.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::event::Channel;
use crate::time::EventTime;
use crate::vocab::{Band, ContactChannel, FactorName, Outcome, Tier};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChannelStats {
    pub events: u64,
    pub last_seen: Option<EventTime>,
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
    pub factors: Vec<Factor>,
    pub evaluated_at: Option<EventTime>,
}
