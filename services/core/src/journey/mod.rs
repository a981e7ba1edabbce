//! Journey state per One ID.
//!
//! In: a validated [`ChannelEvent`] already stitched to a One ID. Out: the
//! updated [`Journey`] and the [`Transition`]s the event caused, which the
//! decision stage reads.
//! Invariants: state depends only on event time, never on arrival time (an
//! out-of-order event moves `first_seen`/`last_seen` only outward); a merge
//! combines two journeys with [`Journey::absorb`] and drops nothing.

use std::collections::{BTreeMap, VecDeque};

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::decide::ContactChannel;
use crate::event::{Activity, CallOutcome, CallReason, Channel, ChannelEvent};
use crate::time::EventTime;

mod history;
#[cfg(test)]
mod tests;

pub use history::{RecentEvent, RECENT_EVENTS};

/// Where a customer is in their journey.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    New,
    Browsing,
    Cart,
    Customer,
    AtRisk,
}

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
    pub outcome: Option<crate::decide::propensity::Outcome>,
    /// Counted as a trial / a response in the learned propensities.
    pub counted_trial: bool,
    pub counted_response: bool,
}

/// The churn band and what put the customer there.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Band {
    Low,
    Medium,
    High,
}

impl Band {
    pub fn label(self) -> &'static str {
        match self {
            Band::Low => "low",
            Band::Medium => "medium",
            Band::High => "high",
        }
    }
}

/// A customer's value tier: `a` for the customers who together bring the
/// first 80% of revenue, `b` for the next 15%, `c` for the rest.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    A,
    B,
    #[default]
    C,
}

impl Tier {
    pub fn label(self) -> &'static str {
        match self {
            Tier::A => "a",
            Tier::B => "b",
            Tier::C => "c",
        }
    }
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

/// How many timestamps a journey keeps for windowed features.
pub const KEPT_TIMES: usize = 64;
/// A gap longer than this between two events starts a new visit.
pub const VISIT_GAP: Duration = Duration::from_secs(30 * 60);
/// A product view counts for cross-channel continuity this long.
pub const CONTINUITY_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);

/// Inserts `t` keeping `v` sorted and at most `KEPT_TIMES` long (oldest dropped).
fn keep_time(v: &mut VecDeque<EventTime>, t: EventTime) {
    let pos = v.partition_point(|x| *x <= t);
    v.insert(pos, t);
    while v.len() > KEPT_TIMES {
        v.pop_front();
    }
}

/// How many of `v` fall within `window` before `now` (inclusive of `now`).
pub fn count_within(v: &VecDeque<EventTime>, now: EventTime, window: Duration) -> usize {
    let from = now.minus(window);
    v.iter().filter(|t| **t > from && **t <= now).count()
}

/// One feature of the churn score.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Factor {
    pub name: &'static str,
    pub value: f64,
    pub contribution: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChurnState {
    pub score: f64,
    /// The band last reported downstream; `None` until one was.
    pub band: Option<Band>,
    pub factors: Vec<Factor>,
    pub evaluated_at: Option<EventTime>,
}

/// A [`Factor`] as stored: its name is read back as the static name it was.
#[derive(Deserialize)]
struct FactorRecord {
    name: String,
    value: f64,
    contribution: f64,
}

impl<'de> Deserialize<'de> for Factor {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r = FactorRecord::deserialize(d)?;
        Ok(Factor {
            name: crate::decide::churn::factor_name(&r.name)
                .ok_or_else(|| serde::de::Error::custom(format!("unknown churn factor {:?}", r.name)))?,
            value: r.value,
            contribution: r.contribution,
        })
    }
}

/// How many recent decisions a journey keeps for the lookup API.
pub const RECENT_ACTIONS: usize = 10;

/// Everything onejourney knows about one customer's journey.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Journey {
    pub first_seen: Option<EventTime>,
    pub last_seen: Option<EventTime>,
    /// Indexed by [`Channel::index`]: web, pos, app, call_center.
    #[serde(serialize_with = "by_channel", deserialize_with = "from_channels")]
    pub channels: [ChannelStats; 4],
    pub purchases: u32,
    pub revenue: f64,
    /// Purchases per channel, indexed like `channels`.
    #[serde(serialize_with = "by_channel", deserialize_with = "from_channels")]
    pub purchases_by_channel: [u32; 4],
    pub last_purchase: Option<EventTime>,
    pub returns: u32,
    pub returned_value: f64,
    pub cart: Cart,
    pub checkouts_started: u32,
    pub last_checkout_start: Option<EventTime>,
    pub complaints: u32,
    pub cancel_requests: u32,
    pub last_complaint: Option<EventTime>,
    pub call: CallStats,
    pub last_csat: Option<u8>,
    pub last_sentiment: Option<f64>,
    pub push_opt_out: bool,
    /// Value tier at the last evaluation.
    pub tier: Tier,
    /// Start times of visits (events after a gap of `VISIT_GAP`), oldest first.
    pub visits: VecDeque<EventTime>,
    /// Times of complaints and of unresolved or escalated calls, oldest first.
    pub complaint_times: VecDeque<EventTime>,
    pub unresolved_times: VecDeque<EventTime>,
    /// The last complaint or cancel request: promotional actions keep quiet after it.
    pub last_service_issue: Option<EventTime>,
    pub last_product_view: Option<ProductView>,
    /// Messages decided for this customer, for contact caps; oldest first.
    pub contacts: VecDeque<Contact>,
    /// How often the customer dismissed each action.
    pub ignored: BTreeMap<String, u32>,
    pub churn: ChurnState,
    /// Event time each action was last decided, for cool-downs.
    pub last_action: BTreeMap<String, EventTime>,
    pub recent_actions: VecDeque<RecentAction>,
    /// When the profile's one live quiet-customer check is due: one timer
    /// per profile instead of one per event. `None` in snapshots written
    /// before it existed (those timers are all honoured).
    #[serde(default)]
    pub quiet_due: Option<EventTime>,
    /// The newest events, oldest first, for the timeline (see `history`).
    /// Empty in snapshots written before it existed.
    #[serde(default)]
    pub recent_events: VecDeque<RecentEvent>,
}

impl Journey {
    /// Drops the detail kept for windows, caps and the API (retention);
    /// returns false when there was none.
    pub fn compact(&mut self) -> bool {
        let had = !(self.cart.is_empty()
            && self.visits.is_empty()
            && self.complaint_times.is_empty()
            && self.unresolved_times.is_empty()
            && self.contacts.is_empty()
            && self.last_action.is_empty()
            && self.ignored.is_empty()
            && self.recent_actions.is_empty()
            && self.recent_events.is_empty()
            && self.last_product_view.is_none());
        self.cart = Cart::default();
        self.visits = VecDeque::new();
        self.complaint_times = VecDeque::new();
        self.unresolved_times = VecDeque::new();
        self.contacts = VecDeque::new();
        self.last_action = BTreeMap::new();
        self.ignored = BTreeMap::new();
        self.recent_actions = VecDeque::new();
        self.recent_events = VecDeque::new();
        self.last_product_view = None;
        had
    }
}

/// Serialises a per-channel array as a map keyed by channel label in
/// human-readable formats (the API), as the array in binary ones (snapshots).
fn by_channel<T: Serialize, S: serde::Serializer>(v: &[T; 4], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    if !s.is_human_readable() {
        return v.serialize(s);
    }
    let mut m = s.serialize_map(Some(4))?;
    for c in Channel::ALL {
        m.serialize_entry(c.label(), &v[c.index()])?;
    }
    m.end()
}

fn from_channels<'de, T, D>(d: D) -> Result<[T; 4], D::Error>
where
    T: Deserialize<'de> + Default,
    D: serde::Deserializer<'de>,
{
    if !d.is_human_readable() {
        return <[T; 4]>::deserialize(d);
    }
    let mut m = BTreeMap::<String, T>::deserialize(d)?;
    Ok(Channel::ALL.map(|c| m.remove(c.label()).unwrap_or_default()))
}

/// What an event changed, for the decision stage.
#[derive(Clone, Debug, PartialEq)]
pub enum Transition {
    CartChanged {
        value: f64,
    },
    Purchased {
        value: f64,
    },
    Returned {
        value: f64,
    },
    /// A product was looked at (web product view or app add to cart).
    ProductViewed {
        at: EventTime,
    },
    /// The customer is active on another channel than the one where they
    /// last looked at a product they have not bought.
    ChannelSwitch {
        sku: String,
        from: Channel,
    },
    /// A call that left the customer unhappy: a complaint, an unresolved or
    /// escalated outcome, a low CSAT or a negative sentiment.
    ServiceIssue {
        complaint: bool,
        cancel_request: bool,
    },
    StageChanged {
        from: Stage,
        to: Stage,
    },
}

impl Journey {
    pub fn stage(&self) -> Stage {
        if self.cancel_requests > 0 || self.complaints >= 2 || self.churn.band == Some(Band::High) {
            Stage::AtRisk
        } else if !self.cart.is_empty() {
            Stage::Cart
        } else if self.purchases > 0 {
            Stage::Customer
        } else if self.total_events() > 1 {
            Stage::Browsing
        } else {
            Stage::New
        }
    }

    pub fn total_events(&self) -> u64 {
        self.channels.iter().map(|c| c.events).sum()
    }

    pub fn channels_touched(&self) -> Vec<&'static str> {
        Channel::ALL
            .iter()
            .filter(|c| self.channels[c.index()].events > 0)
            .map(|c| c.label())
            .collect()
    }

    /// Applies one event. The caller guarantees it is not a duplicate.
    pub fn apply(&mut self, ev: &ChannelEvent) -> Vec<Transition> {
        let at = ev.occurred_at;
        let before = self.stage();
        let mut out = Vec::new();
        self.remember(ev);
        if self.last_seen.is_none_or(|l| at > l.plus(VISIT_GAP)) {
            keep_time(&mut self.visits, at);
        }
        if let Some(v) = &self.last_product_view {
            let browsing = matches!(
                ev.activity,
                Activity::SessionStart | Activity::ScreenView | Activity::PageView | Activity::Login
            );
            let unbought = self.last_purchase.is_none_or(|p| p < v.at);
            if browsing && v.channel != ev.channel && at > v.at && at <= v.at.plus(CONTINUITY_WINDOW) && unbought {
                out.push(Transition::ChannelSwitch {
                    sku: v.sku.clone(),
                    from: v.channel,
                });
            }
        }
        self.first_seen = Some(self.first_seen.map_or(at, |f| f.min(at)));
        self.last_seen = Some(self.last_seen.map_or(at, |l| l.max(at)));
        let ch = &mut self.channels[ev.channel.index()];
        ch.events += 1;
        ch.last_seen = Some(ch.last_seen.map_or(at, |l| l.max(at)));

        match &ev.activity {
            Activity::AddToCart(p) => {
                self.saw_product(&p.sku, ev.channel, at, &mut out);
                let line = self.cart.items.entry(p.sku.clone()).or_insert(CartLine {
                    quantity: 0,
                    unit_price: p.price,
                    category: p.category.clone(),
                });
                line.quantity += 1;
                line.unit_price = p.price;
                self.touch_cart(at);
                out.push(Transition::CartChanged {
                    value: self.cart.value(),
                });
            }
            Activity::RemoveFromCart(p) => {
                if let Some(line) = self.cart.items.get_mut(&p.sku) {
                    line.quantity = line.quantity.saturating_sub(1);
                    if line.quantity == 0 {
                        self.cart.items.remove(&p.sku);
                    }
                }
                self.touch_cart(at);
                out.push(Transition::CartChanged {
                    value: self.cart.value(),
                });
            }
            Activity::CheckoutStart => {
                self.checkouts_started += 1;
                self.last_checkout_start = Some(self.last_checkout_start.map_or(at, |l| l.max(at)));
            }
            Activity::Purchase { revenue } => out.push(self.purchase(ev.channel, *revenue, at)),
            Activity::Sale { total, .. } => out.push(self.purchase(ev.channel, *total, at)),
            Activity::Return { total } => {
                self.returns += 1;
                self.returned_value += total;
                out.push(Transition::Returned { value: *total });
            }
            Activity::PushOptIn => self.push_opt_out = false,
            Activity::PushOptOut => self.push_opt_out = true,
            Activity::Call {
                reason,
                outcome,
                csat,
                sentiment,
                ..
            } => {
                self.call.calls += 1;
                self.call.last_call = Some(self.call.last_call.map_or(at, |l| l.max(at)));
                match outcome {
                    Some(CallOutcome::Resolved) => self.call.resolved += 1,
                    Some(CallOutcome::Unresolved) => self.call.unresolved += 1,
                    Some(CallOutcome::Escalated) => self.call.escalated += 1,
                    Some(CallOutcome::Abandoned) => self.call.abandoned += 1,
                    None => {}
                }
                let complaint = *reason == Some(CallReason::Complaint);
                let cancel_request = *reason == Some(CallReason::CancelRequest);
                if matches!(outcome, Some(CallOutcome::Unresolved | CallOutcome::Escalated)) {
                    keep_time(&mut self.unresolved_times, at);
                }
                if complaint || cancel_request {
                    self.last_service_issue = Some(self.last_service_issue.map_or(at, |l| l.max(at)));
                }
                if complaint {
                    keep_time(&mut self.complaint_times, at);
                    self.complaints += 1;
                    self.last_complaint = Some(self.last_complaint.map_or(at, |l| l.max(at)));
                }
                if cancel_request {
                    self.cancel_requests += 1;
                }
                if csat.is_some() {
                    self.last_csat = *csat;
                }
                if sentiment.is_some() {
                    self.last_sentiment = *sentiment;
                }
                let unhappy = matches!(outcome, Some(CallOutcome::Unresolved | CallOutcome::Escalated))
                    || csat.is_some_and(|c| c <= 2)
                    || sentiment.is_some_and(|s| s <= -0.5);
                if complaint || cancel_request || unhappy {
                    out.push(Transition::ServiceIssue {
                        complaint,
                        cancel_request,
                    });
                }
            }
            Activity::ProductView(Some(p)) => self.saw_product(&p.sku, ev.channel, at, &mut out),
            Activity::PageView
            | Activity::ProductView(None)
            | Activity::Search
            | Activity::Login
            | Activity::Signup
            | Activity::SessionStart
            | Activity::ScreenView
            | Activity::SessionEnd => {}
        }
        let after = self.stage();
        if after != before {
            out.push(Transition::StageChanged {
                from: before,
                to: after,
            });
        }
        out
    }

    fn saw_product(&mut self, sku: &str, channel: Channel, at: EventTime, out: &mut Vec<Transition>) {
        if self.last_product_view.as_ref().is_none_or(|v| v.at <= at) {
            self.last_product_view = Some(ProductView {
                sku: sku.to_string(),
                channel,
                at,
            });
            out.push(Transition::ProductViewed { at });
        }
    }

    /// Records a message sent on `channel`, keeping the newest `KEPT_TIMES`.
    pub fn record_contact(&mut self, at: EventTime, channel: ContactChannel) {
        let pos = self.contacts.partition_point(|c| c.at <= at);
        self.contacts.insert(pos, Contact { at, channel });
        while self.contacts.len() > KEPT_TIMES {
            self.contacts.pop_front();
        }
    }

    fn touch_cart(&mut self, at: EventTime) {
        self.cart.updated_at = Some(self.cart.updated_at.map_or(at, |u| u.max(at)));
    }

    fn purchase(&mut self, channel: Channel, value: f64, at: EventTime) -> Transition {
        self.purchases += 1;
        self.revenue += value;
        self.purchases_by_channel[channel.index()] += 1;
        self.last_purchase = Some(self.last_purchase.map_or(at, |l| l.max(at)));
        // A purchase at or after the last cart change closes the open cart.
        if self.cart.updated_at.is_none_or(|u| u <= at) {
            self.cart = Cart::default();
        }
        Transition::Purchased { value }
    }

    /// Records a decision taken for this customer.
    pub fn record_action(&mut self, action: RecentAction) {
        let at = action.decided_at;
        self.last_action
            .entry(action.action.clone())
            .and_modify(|t| *t = (*t).max(at))
            .or_insert(at);
        self.recent_actions.push_front(action);
        self.recent_actions.truncate(RECENT_ACTIONS);
    }

    /// Combines another profile's journey into this one (a merge). Counts add,
    /// times take the outer bounds, the newer cart and the newer call facts win.
    pub fn absorb(&mut self, other: Journey) {
        fn min_t(a: Option<EventTime>, b: Option<EventTime>) -> Option<EventTime> {
            match (a, b) {
                (Some(x), Some(y)) => Some(x.min(y)),
                (x, y) => x.or(y),
            }
        }
        fn max_t(a: Option<EventTime>, b: Option<EventTime>) -> Option<EventTime> {
            a.max(b)
        }
        let other_newer_call = other.call.last_call > self.call.last_call;
        let other_newer_cart = other.cart.updated_at > self.cart.updated_at;
        self.first_seen = min_t(self.first_seen, other.first_seen);
        self.last_seen = max_t(self.last_seen, other.last_seen);
        // Both profiles' quiet timers still exist; the earlier one is live
        // and re-arms for the merged journey, the other finds itself stale.
        self.quiet_due = min_t(self.quiet_due, other.quiet_due);
        for (mine, theirs) in self.channels.iter_mut().zip(other.channels) {
            mine.events += theirs.events;
            mine.last_seen = max_t(mine.last_seen, theirs.last_seen);
        }
        self.purchases += other.purchases;
        self.revenue += other.revenue;
        for (m, t) in self.purchases_by_channel.iter_mut().zip(other.purchases_by_channel) {
            *m += t;
        }
        self.last_purchase = max_t(self.last_purchase, other.last_purchase);
        self.returns += other.returns;
        self.returned_value += other.returned_value;
        if other_newer_cart {
            self.cart = other.cart;
        }
        self.checkouts_started += other.checkouts_started;
        self.last_checkout_start = max_t(self.last_checkout_start, other.last_checkout_start);
        self.complaints += other.complaints;
        self.cancel_requests += other.cancel_requests;
        self.last_complaint = max_t(self.last_complaint, other.last_complaint);
        self.call.calls += other.call.calls;
        self.call.resolved += other.call.resolved;
        self.call.unresolved += other.call.unresolved;
        self.call.escalated += other.call.escalated;
        self.call.abandoned += other.call.abandoned;
        self.call.last_call = max_t(self.call.last_call, other.call.last_call);
        if other_newer_call {
            self.last_csat = other.last_csat.or(self.last_csat);
            self.last_sentiment = other.last_sentiment.or(self.last_sentiment);
        } else {
            self.last_csat = self.last_csat.or(other.last_csat);
            self.last_sentiment = self.last_sentiment.or(other.last_sentiment);
        }
        self.push_opt_out |= other.push_opt_out;
        self.tier = self.tier.min(other.tier);
        for t in other.visits {
            keep_time(&mut self.visits, t);
        }
        for t in other.complaint_times {
            keep_time(&mut self.complaint_times, t);
        }
        for t in other.unresolved_times {
            keep_time(&mut self.unresolved_times, t);
        }
        self.last_service_issue = max_t(self.last_service_issue, other.last_service_issue);
        if other.last_product_view.as_ref().map(|v| v.at) > self.last_product_view.as_ref().map(|v| v.at) {
            self.last_product_view = other.last_product_view;
        }
        self.absorb_history(other.recent_events);
        for c in other.contacts {
            self.record_contact(c.at, c.channel);
        }
        for (action, n) in other.ignored {
            *self.ignored.entry(action).or_insert(0) += n;
        }
        // The band reported downstream stays the survivor's; the next
        // evaluation re-scores the combined journey.
        if self.churn.band.is_none() {
            self.churn.band = other.churn.band;
        }
        for (action, at) in other.last_action {
            self.last_action
                .entry(action)
                .and_modify(|t| *t = (*t).max(at))
                .or_insert(at);
        }
        let mut recent: Vec<RecentAction> = self.recent_actions.drain(..).chain(other.recent_actions).collect();
        recent.sort_by(|a, b| {
            b.decided_at
                .cmp(&a.decided_at)
                .then_with(|| a.action_id.cmp(&b.action_id))
        });
        recent.truncate(RECENT_ACTIONS);
        self.recent_actions = recent.into();
    }
}
