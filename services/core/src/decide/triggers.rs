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

/// Why a trigger's action is worth taking: the value its facts add, and
/// what they were, from which [`Facts::factors`] and [`Facts::detail`] make
/// the factors and the phrase of the reason, only for the action chosen.
pub(super) struct Facts<'a> {
    pub extra_value: f64,
    what: What<'a>,
}

/// The numbers behind each trigger's facts.
enum What<'a> {
    Cart {
        value: f64,
        items: usize,
        minutes: f64,
    },
    Browse {
        sku: &'a str,
        hours: f64,
    },
    Purchase {
        purchases: u32,
        revenue: f64,
        tier: &'static str,
    },
    Service {
        complaints: usize,
        unresolved: usize,
        cancels: u32,
        csat: f64,
    },
    Switch {
        sku: &'a str,
        channel: &'static str,
        days: f64,
    },
    Lapsed {
        days: f64,
        purchases: u32,
        churn: f64,
    },
}

fn named(name: &'static str, value: f64) -> NamedValue {
    NamedValue { name, value }
}

impl Facts<'_> {
    /// The named numbers that explain the facts.
    pub fn factors(&self) -> Vec<NamedValue> {
        match self.what {
            What::Cart { value, items, minutes } => vec![
                named("cart_value", round2(value)),
                named("cart_items", items as f64),
                named("minutes_since_cart_change", minutes.round()),
            ],
            What::Browse { hours, .. } => vec![named("hours_since_product_view", round2(hours))],
            What::Purchase { purchases, revenue, .. } => vec![
                named("purchases", f64::from(purchases)),
                named("revenue", round2(revenue)),
            ],
            What::Service {
                complaints,
                unresolved,
                cancels,
                csat,
            } => vec![
                named("complaints_30d", complaints as f64),
                named("unresolved_calls_30d", unresolved as f64),
                named("cancel_requests", f64::from(cancels)),
                named("last_csat", csat),
            ],
            What::Switch { days, .. } => vec![named("days_since_product_view", round2(days))],
            What::Lapsed { days, purchases, churn } => vec![
                named("days_since_last_purchase", days.floor()),
                named("purchases", f64::from(purchases)),
                named("churn_score", round2(churn)),
            ],
        }
    }

    /// The phrase of the reason.
    pub fn detail(&self) -> String {
        match self.what {
            What::Cart { value, minutes, .. } => format!("cart of {value:.2} untouched for {minutes:.0} minutes"),
            What::Browse { sku, hours } => format!("looked at {sku} {hours:.0} hours ago and left"),
            What::Purchase { purchases: 1, .. } => String::from("first purchase"),
            What::Purchase { purchases, tier, .. } => format!("purchase number {purchases}, tier {tier}"),
            What::Service {
                complaints,
                unresolved,
                cancels,
                ..
            } => format!(
                "{complaints} complaint(s) and {unresolved} unresolved call(s) in 30 days, {cancels} cancel request(s)"
            ),
            What::Switch { sku, channel, .. } => format!("looked at {sku} on {channel} and is now on another channel"),
            What::Lapsed { days, purchases, .. } => {
                format!("no purchase for {days:.0} days after {purchases} purchase(s)")
            }
        }
    }
}

fn facts_of(what: What<'_>) -> Facts<'_> {
    Facts { extra_value: 0.0, what }
}

/// The trigger's facts at `now`: `None` when they do not hold.
/// `value_per_cart_unit` is the action's, for cart actions.
pub(super) fn facts<'a>(
    cfg: &DecideConfig,
    trigger: Trigger,
    value_per_cart_unit: f64,
    j: &'a Journey,
    now: EventTime,
) -> Option<Facts<'a>> {
    match trigger {
        Trigger::CartAbandoned => cart_facts(cfg, value_per_cart_unit, j, now),
        Trigger::BrowseAbandoned => browse_facts(cfg, j, now),
        Trigger::Purchased => Some(purchase_facts(j)),
        Trigger::ServiceIssue => Some(service_facts(j, now)),
        Trigger::ChannelSwitch => switch_facts(j, now),
        Trigger::Lapsed => lapsed_facts(j, now),
    }
}

fn cart_facts<'a>(cfg: &DecideConfig, value_per_cart_unit: f64, j: &'a Journey, now: EventTime) -> Option<Facts<'a>> {
    let value = j.cart.value();
    let updated = j.cart.updated_at?;
    if !cart_abandoned(j, cfg.cart_abandon_after, now) {
        return None;
    }
    let minutes = (now.millis() - updated.millis()) as f64 / 60_000.0;
    Some(Facts {
        extra_value: value_per_cart_unit * value,
        what: What::Cart {
            value,
            items: j.cart.items.len(),
            minutes,
        },
    })
}

fn browse_facts<'a>(cfg: &DecideConfig, j: &'a Journey, now: EventTime) -> Option<Facts<'a>> {
    let v = browse_abandoned(j, cfg.browse_abandon_after, now)?;
    let hours = (now.millis() - v.at.millis()) as f64 / 3_600_000.0;
    Some(facts_of(What::Browse { sku: &v.sku, hours }))
}

fn purchase_facts(j: &Journey) -> Facts<'_> {
    facts_of(What::Purchase {
        purchases: j.purchases,
        revenue: j.revenue,
        tier: j.tier.label(),
    })
}

fn service_facts(j: &Journey, now: EventTime) -> Facts<'_> {
    facts_of(What::Service {
        complaints: count_within(&j.complaint_times, now, DAYS_30),
        unresolved: count_within(&j.unresolved_times, now, DAYS_30),
        cancels: j.cancel_requests,
        csat: j.last_csat.map_or(0.0, f64::from),
    })
}

fn switch_facts(j: &Journey, now: EventTime) -> Option<Facts<'_>> {
    let v = j.last_product_view.as_ref()?;
    Some(facts_of(What::Switch {
        sku: &v.sku,
        channel: v.channel.label(),
        days: now.days_since(v.at),
    }))
}

fn lapsed_facts(j: &Journey, now: EventTime) -> Option<Facts<'_>> {
    let last = j.last_purchase?;
    Some(facts_of(What::Lapsed {
        days: now.days_since(last),
        purchases: j.purchases,
        churn: j.churn.score,
    }))
}
