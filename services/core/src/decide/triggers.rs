//! Triggers: what makes an action eligible, and the facts behind each.
//!
//! In: a [`Journey`], the [`Transition`]s an event caused, the event time
//! `now`. Out: the [`Trigger`]s an event fires, when the abandonment timers
//! are due, whether a trigger's facts hold at `now` and, if so, the
//! [`Facts`] that explain and value it. Keeps nothing.
//!
//! The abandonment rules are written here once: the processor arms and
//! re-checks its timers with [`cart_due`], [`cart_abandoned`] and
//! [`browse_due`], and the decision reads the same functions.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::journey::{Journey, ProductView, Transition};
use crate::time::{count_within, EventTime};

use super::{round2, DecideConfig, NamedValue, DAYS_30};

/// What can make an action eligible.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
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

impl Trigger {
    /// Every trigger, in their order.
    pub const ALL: [Trigger; 6] = [
        Trigger::CartAbandoned,
        Trigger::BrowseAbandoned,
        Trigger::Purchased,
        Trigger::ServiceIssue,
        Trigger::ChannelSwitch,
        Trigger::Lapsed,
    ];
}

/// The triggers an event fires, from what it changed (timers fire the others).
pub fn triggers_of(transitions: &[Transition]) -> Vec<Trigger> {
    transitions
        .iter()
        .filter_map(|t| match t {
            Transition::Purchased { .. } => Some(Trigger::Purchased),
            Transition::ServiceIssue { .. } => Some(Trigger::ServiceIssue),
            Transition::ChannelSwitch { .. } => Some(Trigger::ChannelSwitch),
            _ => None,
        })
        .collect()
}

/// When a non-empty cart counts as abandoned: `after` past its last change.
pub fn cart_due(j: &Journey, after: Duration) -> Option<EventTime> {
    if j.cart.is_empty() {
        return None;
    }
    j.cart.updated_at.map(|u| u.plus(after))
}

/// The cart is non-empty and untouched for `after` at `now`.
pub fn cart_abandoned(j: &Journey, after: Duration, now: EventTime) -> bool {
    cart_due(j, after).is_some_and(|due| due <= now)
}

/// When the last product looked at counts as left: `after` past the view.
pub fn browse_due(j: &Journey, after: Duration) -> Option<EventTime> {
    j.last_product_view.as_ref().map(|v| v.at.plus(after))
}

/// The last product looked at, when it was left for `after` at `now`:
/// neither the cart nor a purchase changed since.
pub fn browse_abandoned(j: &Journey, after: Duration, now: EventTime) -> Option<&ProductView> {
    let v = j.last_product_view.as_ref()?;
    let untouched = j.cart.updated_at.is_none_or(|u| u < v.at) && j.last_purchase.is_none_or(|p| p < v.at);
    (untouched && browse_due(j, after).is_some_and(|due| due <= now)).then_some(v)
}

/// Why a trigger's action is worth taking: the value its facts add, the
/// factors and a phrase for the reason.
pub(super) struct Facts {
    pub extra_value: f64,
    pub factors: Vec<NamedValue>,
    pub detail: String,
}

fn named(name: &'static str, value: f64) -> NamedValue {
    NamedValue { name, value }
}

/// The trigger's facts at `now`: `None` when they do not hold.
/// `value_per_cart_unit` is the action's, for cart actions.
pub(super) fn facts(
    cfg: &DecideConfig,
    trigger: Trigger,
    value_per_cart_unit: f64,
    j: &Journey,
    now: EventTime,
) -> Option<Facts> {
    match trigger {
        Trigger::CartAbandoned => cart_facts(cfg, value_per_cart_unit, j, now),
        Trigger::BrowseAbandoned => browse_facts(cfg, j, now),
        Trigger::Purchased => Some(purchase_facts(j)),
        Trigger::ServiceIssue => Some(service_facts(j, now)),
        Trigger::ChannelSwitch => switch_facts(j, now),
        Trigger::Lapsed => lapsed_facts(j, now),
    }
}

fn cart_facts(cfg: &DecideConfig, value_per_cart_unit: f64, j: &Journey, now: EventTime) -> Option<Facts> {
    let value = j.cart.value();
    let updated = j.cart.updated_at?;
    if !cart_abandoned(j, cfg.cart_abandon_after, now) {
        return None;
    }
    let minutes = (now.millis() - updated.millis()) as f64 / 60_000.0;
    Some(Facts {
        extra_value: value_per_cart_unit * value,
        factors: vec![
            named("cart_value", round2(value)),
            named("cart_items", j.cart.items.len() as f64),
            named("minutes_since_cart_change", minutes.round()),
        ],
        detail: format!("cart of {value:.2} untouched for {minutes:.0} minutes"),
    })
}

fn browse_facts(cfg: &DecideConfig, j: &Journey, now: EventTime) -> Option<Facts> {
    let v = browse_abandoned(j, cfg.browse_abandon_after, now)?;
    let hours = (now.millis() - v.at.millis()) as f64 / 3_600_000.0;
    Some(Facts {
        extra_value: 0.0,
        factors: vec![named("hours_since_product_view", round2(hours))],
        detail: format!("looked at {} {hours:.0} hours ago and left", v.sku),
    })
}

fn purchase_facts(j: &Journey) -> Facts {
    Facts {
        extra_value: 0.0,
        factors: vec![
            named("purchases", f64::from(j.purchases)),
            named("revenue", round2(j.revenue)),
        ],
        detail: if j.purchases == 1 {
            String::from("first purchase")
        } else {
            format!("purchase number {}, tier {}", j.purchases, j.tier.label())
        },
    }
}

fn service_facts(j: &Journey, now: EventTime) -> Facts {
    let complaints = count_within(&j.complaint_times, now, DAYS_30);
    let unresolved = count_within(&j.unresolved_times, now, DAYS_30);
    Facts {
        extra_value: 0.0,
        factors: vec![
            named("complaints_30d", complaints as f64),
            named("unresolved_calls_30d", unresolved as f64),
            named("cancel_requests", f64::from(j.cancel_requests)),
            named("last_csat", j.last_csat.map_or(0.0, f64::from)),
        ],
        detail: format!(
            "{complaints} complaint(s) and {unresolved} unresolved call(s) in 30 days, {} cancel request(s)",
            j.cancel_requests
        ),
    }
}

fn switch_facts(j: &Journey, now: EventTime) -> Option<Facts> {
    let v = j.last_product_view.as_ref()?;
    Some(Facts {
        extra_value: 0.0,
        factors: vec![named("days_since_product_view", round2(now.days_since(v.at)))],
        detail: format!(
            "looked at {} on {} and is now on another channel",
            v.sku,
            v.channel.label()
        ),
    })
}

fn lapsed_facts(j: &Journey, now: EventTime) -> Option<Facts> {
    let last = j.last_purchase?;
    let days = now.days_since(last);
    Some(Facts {
        extra_value: 0.0,
        factors: vec![
            named("days_since_last_purchase", days.floor()),
            named("purchases", f64::from(j.purchases)),
            named("churn_score", round2(j.churn.score)),
        ],
        detail: format!("no purchase for {days:.0} days after {} purchase(s)", j.purchases),
    })
}
