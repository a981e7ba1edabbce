//! The journey's recent-event history, for the cross-channel timeline of the
//! Customer 360 page.
//!
//! In: each applied event (and, on a merge, the absorbed journey's history).
//! Out: the newest [`RECENT_EVENTS`] events of the profile, oldest first, as
//! short facts: time, channel, event id and type, a product SKU or call
//! reason, an amount. Identifiers are never copied here (they are in the
//! identity graph, hashed where they must be).
//! Invariant: the history is bounded, sorted by event time (ties: channel,
//! event id) whatever the arrival order, and counted in the memory estimate.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Journey;
use crate::event::{Activity, CallOutcome, CallReason, Channel, ChannelEvent};
use crate::time::EventTime;

/// How many recent events a journey keeps for the timeline.
pub const RECENT_EVENTS: usize = 50;

/// One event as the timeline shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecentEvent {
    pub at: EventTime,
    pub channel: Channel,
    pub event_id: Box<str>,
    /// One of the channels' event types, as its place in the list of them
    /// (not a string per event).
    pub event_type: EventType,
    /// The product's SKU, or the call's reason and outcome.
    pub detail: Option<Box<str>>,
    /// The money the event moved or was about (price, revenue, sale, return).
    pub amount: Option<f64>,
}

impl RecentEvent {
    fn of(ev: &ChannelEvent) -> Self {
        let (detail, amount) = match &ev.activity {
            Activity::ProductView(Some(p)) | Activity::AddToCart(p) | Activity::RemoveFromCart(p) => {
                (Some(p.sku.as_str().into()), Some(p.price))
            }
            Activity::Purchase { revenue } => (None, Some(*revenue)),
            Activity::Sale { total, .. } | Activity::Return { total } => (None, Some(*total)),
            Activity::Call { reason, outcome, .. } => {
                let detail = match (reason.map(reason_label), outcome.map(outcome_label)) {
                    (Some(r), Some(o)) => Some(format!("{r}, {o}").into()),
                    (r, o) => r.or(o).map(Box::from),
                };
                (detail, None)
            }
            _ => (None, None),
        };
        RecentEvent {
            at: ev.occurred_at,
            channel: ev.channel,
            event_id: ev.event_id.as_str().into(),
            event_type: EventType::of(&ev.event_type),
            detail,
            amount,
        }
    }

    fn order_key(&self) -> (EventTime, Channel, &str) {
        (self.at, self.channel, &self.event_id)
    }

    /// Heap bytes beyond the struct itself, with an allocator overhead
    /// per string.
    fn heap_bytes(&self) -> usize {
        let text = |n: usize| if n == 0 { 0 } else { n + super::size::ALLOC_OVERHEAD };
        let event_type = match &self.event_type {
            EventType::Known(_) => 0,
            EventType::Other(s) => text(s.len()),
        };
        text(self.event_id.len()) + event_type + self.detail.as_ref().map_or(0, |d| text(d.len()))
    }
}

/// The event types of every channel (see `event/fields.rs`).
const EVENT_TYPES: [&str; 19] = [
    "page_view",
    "product_view",
    "search",
    "add_to_cart",
    "remove_from_cart",
    "checkout_start",
    "purchase",
    "login",
    "signup",
    "sale",
    "return",
    "session_start",
    "screen_view",
    "session_end",
    "push_opt_in",
    "push_opt_out",
    "inbound_call",
    "outbound_call",
    "callback_requested",
];

/// An event's type: one of [`EVENT_TYPES`] by its place (one byte), or
/// anything else (none passes the decoder today) owned. Serialized as the
/// type's name.
#[derive(Clone, PartialEq, Eq)]
pub enum EventType {
    Known(u8),
    Other(Box<str>),
}

impl EventType {
    pub fn of(s: &str) -> Self {
        match EVENT_TYPES
            .iter()
            .position(|t| *t == s)
            .and_then(|i| u8::try_from(i).ok())
        {
            Some(i) => EventType::Known(i),
            None => EventType::Other(s.into()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            EventType::Known(i) => EVENT_TYPES.get(usize::from(*i)).copied().unwrap_or_default(),
            EventType::Other(s) => s,
        }
    }
}

impl fmt::Debug for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.as_str().fmt(f)
    }
}

impl Serialize for EventType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(EventType::of(&s))
    }
}

fn reason_label(r: CallReason) -> &'static str {
    match r {
        CallReason::Billing => "billing",
        CallReason::Complaint => "complaint",
        CallReason::CancelRequest => "cancel_request",
        CallReason::ProductQuestion => "product_question",
        CallReason::OrderStatus => "order_status",
        CallReason::TechnicalSupport => "technical_support",
        CallReason::Other => "other",
    }
}

fn outcome_label(o: CallOutcome) -> &'static str {
    match o {
        CallOutcome::Resolved => "resolved",
        CallOutcome::Unresolved => "unresolved",
        CallOutcome::Escalated => "escalated",
        CallOutcome::Abandoned => "abandoned",
    }
}

impl Journey {
    /// Keeps `ev` in the recent-event history.
    pub(super) fn remember(&mut self, ev: &ChannelEvent) {
        self.keep_event(RecentEvent::of(ev));
    }

    fn keep_event(&mut self, e: RecentEvent) {
        let pos = self.recent_events.partition_point(|x| x.order_key() <= e.order_key());
        self.recent_events.keep_at(pos, e, RECENT_EVENTS);
    }

    /// Takes the absorbed journey's history into this one (a merge).
    pub(super) fn absorb_events(&mut self, other: impl IntoIterator<Item = RecentEvent>) {
        for e in other {
            self.keep_event(e);
        }
    }

    /// An estimate of the bytes the history holds, for the memory estimate.
    pub fn history_bytes(&self) -> usize {
        let strings: usize = self.recent_events.iter().map(RecentEvent::heap_bytes).sum();
        match self.recent_events.len() {
            0 => strings,
            n => n * std::mem::size_of::<RecentEvent>() + super::size::ALLOC_OVERHEAD + strings,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::testkit::{call, pos, product, web};

    fn ids() -> serde_json::Value {
        json!({"cookie_id": "c-1"})
    }

    #[test]
    fn keeps_the_newest_events_in_time_order_whatever_the_arrival_order() {
        let mut j = Journey::default();
        j.apply(&web("b", 5, ids(), "add_to_cart", product("<script>x</script>", 9.5)));
        j.apply(&pos("a", 1, ids(), 20.0));
        j.apply(&call("c", 3, ids(), "complaint", "unresolved"));
        let got: Vec<(&str, &str)> = j
            .recent_events
            .iter()
            .map(|e| (&*e.event_id, e.channel.label()))
            .collect();
        assert_eq!(got, [("a", "pos"), ("c", "call_center"), ("b", "web")]);
        assert_eq!(j.recent_events[0].amount, Some(20.0));
        assert_eq!(j.recent_events[1].detail.as_deref(), Some("complaint, unresolved"));
        assert_eq!(j.recent_events[2].detail.as_deref(), Some("<script>x</script>"));

        for i in 0..(RECENT_EVENTS as i64 + 5) {
            j.apply(&web(&format!("p{i}"), 10 + i, ids(), "page_view", json!({})));
        }
        assert_eq!(j.recent_events.len(), RECENT_EVENTS);
        assert_eq!(&*j.recent_events[0].event_id, "p5", "the oldest go first");
        assert_eq!(j.recent_events[0].event_type, EventType::Known(0));
        assert_eq!(j.recent_events[0].event_type.as_str(), "page_view");
        assert_eq!(EventType::of("made_up").as_str(), "made_up");
        assert!(
            std::mem::size_of::<RecentEvent>() <= 80,
            "{}",
            std::mem::size_of::<RecentEvent>()
        );
        assert!(j.history_bytes() > RECENT_EVENTS * std::mem::size_of::<RecentEvent>());
    }

    #[test]
    fn a_merge_interleaves_both_histories_and_compaction_drops_them() {
        let mut a = Journey::default();
        a.apply(&web("1", 1, ids(), "page_view", json!({})));
        a.apply(&web("3", 3, ids(), "page_view", json!({})));
        let mut b = Journey::default();
        b.apply(&pos("2", 2, ids(), 5.0));
        a.absorb(b);
        let got: Vec<&str> = a.recent_events.iter().map(|e| &*e.event_id).collect();
        assert_eq!(got, ["1", "2", "3"]);
        assert!(a.compact());
        assert!(a.recent_events.is_empty());
    }

    #[test]
    fn journeys_saved_before_the_history_existed_still_load() {
        // JSON (human-readable) without the field.
        let mut v = serde_json::to_value(Journey::default()).unwrap();
        v.as_object_mut().unwrap().remove("recent_events");
        let j: Journey = serde_json::from_value(v).unwrap();
        assert!(j.recent_events.is_empty());

        // A snapshot (MessagePack, a struct as an array) without the last
        // fields: the responses (an empty array), the churn examples (an
        // array of an empty array and nil), then `rfm` and `clv` (nil each)
        // end the record. Without the value fields, also without the
        // examples, or also without the responses, it still loads.
        let full = rmp_serde::to_vec(&Journey::default()).unwrap();
        assert!(
            full.ends_with(&[0x90, 0x92, 0x90, 0xc0, 0xc0, 0xc0]),
            "the last fields end the record"
        );
        for (fields, tail) in [(2u16, 2usize), (3, 5), (4, 6)] {
            let mut bytes = full[..full.len() - tail].to_vec();
            match bytes[0] {
                0xdc => {
                    let n = u16::from_be_bytes([bytes[1], bytes[2]]) - fields;
                    bytes[1..3].copy_from_slice(&n.to_be_bytes());
                }
                b if b & 0xf0 == 0x90 => bytes[0] = b - fields as u8,
                b => panic!("unexpected header {b:#x}"),
            }
            let j: Journey = rmp_serde::from_slice(&bytes).unwrap();
            assert_eq!(j, Journey::default());
        }
    }
}
