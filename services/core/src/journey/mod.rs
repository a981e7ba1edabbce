//! Journey state per One ID.
//!
//! In: a validated [`ChannelEvent`](crate::event::ChannelEvent) already
//! stitched to a One ID ([`Journey::apply`], in `apply.rs`), another profile's
//! journey on a merge ([`Journey::absorb`], in `merge.rs`), and the decisions
//! taken for the customer ([`Journey::record_action`],
//! [`Journey::record_contact`]). Out: the updated [`Journey`] and the
//! [`Transition`]s an event caused, which the decision stage reads. Keeps
//! everything onejourney knows about one customer's journey; the pieces it is
//! made of are in `parts.rs`. What most customers never use is a [`Cold`]
//! part (`cold.rs`): a pointer until first written; what it all takes in
//! memory is in `size.rs`.
//!
//! Invariants: state depends only on event time, never on arrival time (an
//! out-of-order event moves `first_seen`/`last_seen` only outward); a merge
//! combines two journeys with [`Journey::absorb`] and drops nothing. The
//! journey knows nothing of decisions: it records them as data.

mod apply;
mod by_channel;
mod cold;
mod compact;
mod merge;
mod parts;
mod size;

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::event::Channel;
use crate::time::EventTime;
use crate::vocab::ContactChannel;

pub use crate::time::count_within;
pub use crate::vocab::{Band, Tier};
pub use apply::Transition;
pub use cold::{Cold, Empty};
pub use compact::{Factors, List, OptTime};
pub use parts::{
    Beaten, CallStats, Cart, CartLine, ChannelStats, ChurnPoint, ChurnState, Clv, Contact, Contribution, Factor,
    HeldBack, ProductView, RecentAction, Rfm,
};
pub use size::ALLOC_OVERHEAD;

mod churn_examples;
mod churn_history;
mod consent;
mod history;
#[cfg(test)]
mod tests;

pub use churn_examples::{ChurnExample, ChurnExamples, CHURN_FEATURES, PENDING_EXAMPLES};
pub use churn_history::{CHURN_HISTORY, CHURN_STEP};
pub use consent::{ConsentStatement, Consents, LocalClock};
pub use history::{EventType, RecentEvent, RECENT_EVENTS};

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

impl Stage {
    pub const ALL: [Stage; 5] = [Stage::New, Stage::Browsing, Stage::Cart, Stage::Customer, Stage::AtRisk];
}

/// How many timestamps a journey keeps for windowed features.
pub const KEPT_TIMES: usize = 64;
/// A gap longer than this between two events starts a new visit.
pub const VISIT_GAP: Duration = Duration::from_secs(30 * 60);
/// A product view counts for cross-channel continuity this long.
pub const CONTINUITY_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);
/// How many recent decisions a journey keeps for the lookup API.
pub const RECENT_ACTIONS: usize = 10;
/// How many beaten and how many held-back actions a recent action keeps.
pub const DECISION_CONTEXT: usize = 4;

/// Inserts `t` keeping `v` sorted and at most `KEPT_TIMES` long (oldest dropped).
fn keep_time(v: &mut List<EventTime>, t: EventTime) {
    let pos = v.partition_point(|x| *x <= t);
    v.keep_at(pos, t, KEPT_TIMES);
}

/// Inserts `c` keeping `v` sorted by time and at most `KEPT_TIMES` long.
fn keep_contact(v: &mut List<Contact>, c: Contact) {
    let pos = v.partition_point(|x| x.at <= c.at);
    v.keep_at(pos, c, KEPT_TIMES);
}

/// Everything onejourney knows about one customer's journey.
///
/// Layout: what every customer has (times, per-channel counts, visits, the
/// recent events, churn) is inline; the `Cold` fields are allocated on their
/// first write and read as empty before. A new field that most customers
/// leave empty belongs in a `Cold` (and in `size.rs`). The serialized form
/// is the same as with every field inline (`compat_tests.rs`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Journey {
    pub first_seen: Option<EventTime>,
    pub last_seen: Option<EventTime>,
    /// Indexed by [`Channel::index`]: web, pos, app, call_center.
    #[serde(
        serialize_with = "by_channel::serialize",
        deserialize_with = "by_channel::deserialize"
    )]
    pub channels: [ChannelStats; Channel::COUNT],
    pub purchases: u32,
    pub revenue: f64,
    /// Purchases per channel, indexed like `channels`.
    #[serde(
        serialize_with = "by_channel::serialize",
        deserialize_with = "by_channel::deserialize"
    )]
    pub purchases_by_channel: [u32; Channel::COUNT],
    pub last_purchase: Option<EventTime>,
    pub returns: u32,
    pub returned_value: f64,
    pub cart: Cold<Cart>,
    pub checkouts_started: u32,
    pub last_checkout_start: Cold<Option<EventTime>>,
    pub complaints: u32,
    pub cancel_requests: u32,
    pub last_complaint: Cold<Option<EventTime>>,
    pub call: Cold<CallStats>,
    pub last_csat: Option<u8>,
    pub last_sentiment: Cold<Option<f64>>,
    pub push_opt_out: bool,
    /// Value tier at the last evaluation.
    pub tier: Tier,
    /// Start times of visits (events after a gap of `VISIT_GAP`), oldest first.
    pub visits: List<EventTime>,
    /// Times of complaints and of unresolved or escalated calls, oldest first.
    pub complaint_times: Cold<List<EventTime>>,
    pub unresolved_times: Cold<List<EventTime>>,
    /// The last complaint or cancel request: promotional actions keep quiet after it.
    pub last_service_issue: Cold<Option<EventTime>>,
    pub last_product_view: Cold<Option<ProductView>>,
    /// Messages decided for this customer, for contact caps; oldest first.
    pub contacts: Cold<List<Contact>>,
    /// How often the customer dismissed each action.
    pub ignored: Cold<BTreeMap<String, u32>>,
    pub churn: ChurnState,
    /// Event time each action was last decided, for cool-downs.
    pub last_action: Cold<BTreeMap<String, EventTime>>,
    pub recent_actions: Cold<VecDeque<RecentAction>>,
    /// When the profile's one live quiet-customer check is due: one timer
    /// per profile instead of one per event. `None` in snapshots written
    /// before it existed (those timers are all honoured).
    #[serde(default)]
    pub quiet_due: Option<EventTime>,
    /// The newest events, oldest first, for the timeline (see `history`).
    /// Empty in snapshots written before it existed.
    #[serde(default)]
    pub recent_events: List<RecentEvent>,
    /// Consent per channel: the newest statement each (see `consent.rs`).
    /// Empty in snapshots written before it existed.
    #[serde(default)]
    pub consent: Cold<Consents>,
    /// The customer's UTC offset, from the newest event that carried one.
    #[serde(default)]
    pub local_clock: Cold<Option<LocalClock>>,
    /// Engagements with messages (opened, clicked, converted), by the
    /// channel the message went on, oldest first; the no-response rule
    /// reads them.
    #[serde(default)]
    pub responses: Cold<List<Contact>>,
    /// The churn model's examples waiting for their label (see
    /// `churn_examples.rs`). Empty in snapshots written before it existed.
    #[serde(default)]
    pub churn_examples: ChurnExamples,
    /// RFM scores at the last evaluation (see `decide::rfm`); `None` for a
    /// customer who never bought, and in snapshots written before it existed.
    #[serde(default)]
    pub rfm: Option<Rfm>,
    /// Expected lifetime value at the last evaluation (see `decide::value`);
    /// `None` for a customer who never bought.
    #[serde(default)]
    pub clv: Cold<Option<Clv>>,
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

    /// Whether it loses its detail at `cutoff`: no event after it, and
    /// detail to drop (see [`Journey::compact`]).
    pub fn evictable(&self, cutoff: EventTime) -> bool {
        self.last_seen.is_some_and(|t| t < cutoff) && self.has_detail()
    }

    /// Whether it keeps detail that [`Journey::compact`] drops.
    pub fn has_detail(&self) -> bool {
        !(self.cart.is_empty()
            && self.visits.is_empty()
            && self.complaint_times.is_empty()
            && self.unresolved_times.is_empty()
            && self.contacts.is_empty()
            && self.responses.is_empty()
            && self.last_action.is_empty()
            && self.ignored.is_empty()
            && self.recent_actions.is_empty()
            && self.recent_events.is_empty()
            && self.churn.history.is_empty()
            && self.last_product_view.is_none())
    }

    /// Drops the detail kept for windows, caps and the API (retention);
    /// returns false when there was none.
    pub fn compact(&mut self) -> bool {
        let had = self.has_detail();
        self.cart.free();
        self.visits = List::new();
        self.complaint_times.free();
        self.unresolved_times.free();
        self.contacts.free();
        self.responses.free();
        self.last_action.free();
        self.ignored.free();
        self.recent_actions.free();
        self.recent_events = List::new();
        self.churn.history = List::new();
        self.last_product_view.free();
        had
    }

    /// Records a message sent on `channel`, keeping the newest `KEPT_TIMES`.
    pub fn record_contact(&mut self, at: EventTime, channel: ContactChannel) {
        keep_contact(&mut self.contacts, Contact { at, channel });
    }

    /// Records an engagement (opened, clicked, converted) with a message
    /// sent on `channel`, keeping the newest `KEPT_TIMES`.
    pub fn record_response(&mut self, at: EventTime, channel: ContactChannel) {
        keep_contact(&mut self.responses, Contact { at, channel });
    }

    /// Records a consent statement on `channel` (see [`Consents::record`]);
    /// push also sets the older `push_opt_out` flag.
    pub fn record_consent(&mut self, channel: ContactChannel, granted: bool, at: EventTime) {
        if self.consent.record(channel, ConsentStatement { granted, at }) && channel == ContactChannel::Push {
            self.push_opt_out = !granted;
        }
    }

    /// Records a decision taken for this customer (its context bounded to
    /// [`DECISION_CONTEXT`] entries each).
    pub fn record_action(&mut self, mut action: RecentAction) {
        action.beaten.truncate(DECISION_CONTEXT);
        action.held_back.truncate(DECISION_CONTEXT);
        let at = action.decided_at;
        self.last_action
            .entry(action.action.clone())
            .and_modify(|t| *t = (*t).max(at))
            .or_insert(at);
        self.recent_actions.push_front(action);
        self.recent_actions.truncate(RECENT_ACTIONS);
    }
}

#[cfg(test)]
pub(crate) mod compat_tests;
