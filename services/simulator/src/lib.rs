//! Realistic omnichannel traffic with ground truth.
//!
//! [`generate`] makes, for N people, the events their journeys produce on the
//! four channels over a span of event time, sorted by event time, plus the
//! ground truth: which identifiers belong to whom and which segment each person
//! is in. Deterministic for a seed. [`kafka`] writes it to a broker.
//!
//! Segments:
//! - `loyal`: logs in, browses, buys on web, app and in store, rare calls;
//! - `churning`: active at first, then complaints, an unresolved call, often a
//!   cancel request, then silence;
//! - `cart_abandoner`: adds to cart and leaves, now and then buys;
//! - `browser`: anonymous page views, a few sign up.
//!
//! With [`SimConfig::harder`] (the mix identity and churn are scored on),
//! more of what real traffic does: seasonal and irregular shoppers, loyal
//! customers with long gaps, churners who buy once more before leaving,
//! complainers who stay (`harder.rs`); families sharing a tablet, junk values
//! typed at the till and the call center, and events published late and out
//! of order. The ground truth then also says which identifiers belong to
//! nobody in particular (shared devices, junk): see [`truth`].
//!
//! Files: `journey.rs` (segments and channel events), `harder.rs` (the harder
//! mix), `truth.rs` (identity truth and pairwise scoring), `kafka.rs`.

mod harder;
mod journey;
pub mod kafka;
pub mod truth;

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use onejourney_core::Channel;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{json, Value};

use crate::journey::Gen;

/// The four input streams, with the contract's default topic names.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    Web,
    Pos,
    App,
    CallCenter,
}

impl Stream {
    pub const ALL: [Stream; 4] = [Stream::Web, Stream::Pos, Stream::App, Stream::CallCenter];

    pub fn default_topic(self) -> &'static str {
        match self {
            Stream::Web => "web-clicks",
            Stream::Pos => "pos-transactions",
            Stream::App => "app-sessions",
            Stream::CallCenter => "call-center-events",
        }
    }

    /// The core channel this stream feeds.
    pub fn channel(self) -> Channel {
        match self {
            Stream::Web => Channel::Web,
            Stream::Pos => Channel::Pos,
            Stream::App => Channel::App,
            Stream::CallCenter => Channel::CallCenter,
        }
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Segment {
    Loyal,
    Churning,
    CartAbandoner,
    Browser,
    /// Harder mix: buys in bursts around two seasons a year, quiet between.
    Seasonal,
    /// Harder mix: gaps from days to two months, at random.
    Irregular,
    /// Harder mix: loyal, but 30-70 days between visits.
    LongGapLoyal,
    /// Harder mix: active, buys once more, then silence.
    LastBuyChurner,
    /// Harder mix: complains often, stays and keeps buying.
    StayingComplainer,
}

impl Segment {
    /// True for the segments whose people leave (the churn ground truth).
    pub fn churns(self) -> bool {
        matches!(self, Segment::Churning | Segment::LastBuyChurner)
    }
}

/// One simulated person and every identifier they use.
#[derive(Clone, Debug, Serialize)]
pub struct Person {
    pub person_id: String,
    pub segment: Segment,
    pub customer_id: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub loyalty_id: Option<String>,
    pub card_token: Option<String>,
    pub cookies: Vec<String>,
    pub device_id: Option<String>,
    /// A tablet the person's household shares (harder mix): it belongs to no
    /// one person.
    pub shared_device: Option<String>,
}

/// One event to publish.
#[derive(Clone, Debug, Serialize)]
pub struct SimEvent {
    pub stream: Stream,
    pub key: String,
    #[serde(skip)]
    pub at_ms: i64,
    pub person: usize,
    pub value: Value,
    /// How long after its event time the event is published (harder mix:
    /// late and out-of-order arrivals); `events` are in publication order.
    #[serde(skip)]
    pub late_ms: i64,
}

impl SimEvent {
    pub fn bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.value).unwrap_or_default()
    }

    /// Which of `partitions` partitions the key picks (a stable hash, like a
    /// Kafka partitioner): for feeding the core without a broker.
    pub fn key_partition(&self, partitions: u32) -> u32 {
        let h = self
            .key
            .bytes()
            .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
        h % partitions.max(1)
    }
}

#[derive(Clone, Debug)]
pub struct SimConfig {
    pub customers: usize,
    pub seed: u64,
    /// Event time of the first day, ms since the epoch.
    pub start_ms: i64,
    pub days: u32,
    /// The harder mix (see the module doc); off: the classic four segments,
    /// in event-time order.
    pub harder: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            customers: 1000,
            seed: 7,
            // 2026-08-01T00:00:00Z
            start_ms: 1_785_542_400_000,
            days: 90,
            harder: false,
        }
    }
}

pub struct Simulation {
    pub people: Vec<Person>,
    /// In publication order: by event time plus lateness (without the harder
    /// mix, by event time).
    pub events: Vec<SimEvent>,
}

impl Simulation {
    /// Ground truth as JSON lines: one person a line.
    pub fn truth_jsonl(&self) -> String {
        self.people
            .iter()
            .map(|p| serde_json::to_string(p).unwrap_or_default() + "\n")
            .collect()
    }

    pub fn events_jsonl(&self) -> String {
        self.events
            .iter()
            .map(|e| {
                serde_json::to_string(&json!({"topic": e.stream.default_topic(), "key": e.key, "value": e.value}))
                    .unwrap_or_default()
                    + "\n"
            })
            .collect()
    }

    pub fn segment_counts(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for p in &self.people {
            *m.entry(format!("{:?}", p.segment).to_lowercase()).or_default() += 1;
        }
        m
    }
}

pub fn generate(cfg: &SimConfig) -> Simulation {
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let mut people = Vec::with_capacity(cfg.customers);
    let mut events = Vec::new();
    let mut household = harder::Households::default();
    for i in 0..cfg.customers {
        let segment = if cfg.harder {
            harder::segment(&mut rng)
        } else {
            match rng.gen_range(0..100) {
                0..=44 => Segment::Loyal,
                45..=64 => Segment::Churning,
                65..=79 => Segment::CartAbandoner,
                _ => Segment::Browser,
            }
        };
        let mut person = make_person(&mut rng, i, segment);
        if cfg.harder {
            person.shared_device = household.next(&mut rng, &person);
        }
        let mut gen = Gen {
            rng: &mut rng,
            person: &person,
            index: i,
            n: 0,
            harder: cfg.harder,
            out: &mut events,
        };
        gen.journey(cfg);
        people.push(person);
    }
    if cfg.harder {
        harder::delay(&mut rng, &mut events);
    }
    events.sort_by(|a, b| {
        (a.at_ms + a.late_ms)
            .cmp(&(b.at_ms + b.late_ms))
            .then_with(|| a.key.cmp(&b.key))
    });
    Simulation { people, events }
}

fn make_person(rng: &mut StdRng, i: usize, segment: Segment) -> Person {
    let known = segment != Segment::Browser;
    let cookies = (0..rng.gen_range(1..=3)).map(|c| format!("ck-{i:06}-{c}")).collect();
    Person {
        person_id: format!("p{i:06}"),
        segment,
        customer_id: known.then(|| format!("C{i:07}")),
        email: known.then(|| format!("Person.{i}@Example.com")),
        phone: (known && rng.gen_bool(0.8)).then(|| format!("+44 7700 {:06}", i % 1_000_000)),
        loyalty_id: (known && rng.gen_bool(0.6)).then(|| format!("L{i:08}")),
        card_token: (known && rng.gen_bool(0.7)).then(|| format!("tok_{i:08x}")),
        cookies,
        device_id: (known && rng.gen_bool(0.5)).then(|| format!("dev-{i:06}")),
        shared_device: None,
    }
}

pub fn rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journey::DAY;

    #[test]
    fn deterministic_for_a_seed_and_sorted_by_time() {
        let cfg = SimConfig {
            customers: 200,
            ..SimConfig::default()
        };
        let a = generate(&cfg);
        let b = generate(&cfg);
        assert_eq!(a.events_jsonl(), b.events_jsonl());
        assert!(a.events.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
        let other = generate(&SimConfig { seed: 8, ..cfg });
        assert_ne!(a.events_jsonl(), other.events_jsonl());
    }

    #[test]
    fn every_segment_and_channel_appears_with_unique_event_ids() {
        let sim = generate(&SimConfig {
            customers: 300,
            ..SimConfig::default()
        });
        assert_eq!(sim.segment_counts().len(), 4);
        for s in Stream::ALL {
            assert!(sim.events.iter().any(|e| e.stream == s), "{s:?}");
        }
        let mut ids: Vec<(Stream, &str)> = sim
            .events
            .iter()
            .map(|e| (e.stream, e.value["event_id"].as_str().unwrap()))
            .collect();
        let n = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), n);
        let sizes: Vec<usize> = sim.events.iter().map(|e| e.bytes().len()).collect();
        let mean = sizes.iter().sum::<usize>() / sizes.len();
        assert!((150..600).contains(&mean), "mean event size {mean}");
    }

    #[test]
    fn churners_go_quiet_some_after_complaints_some_without_a_word() {
        let cfg = SimConfig {
            customers: 300,
            ..SimConfig::default()
        };
        let sim = generate(&cfg);
        let span_end = cfg.start_ms + i64::from(cfg.days) * DAY;
        let (mut loud, mut silent) = (0, 0);
        for (i, p) in sim
            .people
            .iter()
            .enumerate()
            .filter(|(_, p)| p.segment == Segment::Churning)
        {
            let mine: Vec<&SimEvent> = sim.events.iter().filter(|e| e.person == i).collect();
            let last = mine.last().unwrap();
            // Every churner is silent for at least the last third of the period.
            assert!(last.at_ms < span_end - 25 * DAY, "{}", p.person_id);
            if last.stream == Stream::CallCenter {
                loud += 1;
            } else {
                silent += 1;
            }
        }
        assert!(
            loud > 10 && silent > 10,
            "both kinds of churners: {loud} loud, {silent} silent"
        );
    }

    #[test]
    fn the_harder_mix_has_its_segments_shared_tablets_junk_and_late_events() {
        let cfg = SimConfig {
            customers: 600,
            harder: true,
            ..SimConfig::default()
        };
        let sim = generate(&cfg);
        let counts = sim.segment_counts();
        for s in [
            "seasonal",
            "irregular",
            "longgaployal",
            "lastbuychurner",
            "stayingcomplainer",
        ] {
            assert!(counts.get(s).is_some_and(|n| *n > 10), "{s}: {counts:?}");
        }
        let truth = crate::truth::IdentityTruth::from_simulation(&sim);
        let (_, shared, junk) = truth.counts();
        assert!(shared >= 5, "{shared} shared tablets");
        assert!(junk >= 2, "{junk} junk values");
        // Published out of event-time order, but never before it happened.
        let out_of_order = sim.events.windows(2).filter(|w| w[0].at_ms > w[1].at_ms).count();
        assert!(out_of_order > 50, "{out_of_order} events arrive after later ones");
        assert!(sim.events.iter().all(|e| e.late_ms >= 0));
        assert!(sim
            .events
            .windows(2)
            .all(|w| w[0].at_ms + w[0].late_ms <= w[1].at_ms + w[1].late_ms));
        // Deterministic, and the classic mix is unchanged by the option.
        assert_eq!(generate(&cfg).events_jsonl(), sim.events_jsonl());
        let classic = generate(&SimConfig { harder: false, ..cfg });
        assert!(classic.events.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
        assert!(classic.people.iter().all(|p| p.shared_device.is_none()));
    }

    #[test]
    fn last_buy_churners_buy_then_go_quiet() {
        let cfg = SimConfig {
            customers: 600,
            harder: true,
            ..SimConfig::default()
        };
        let sim = generate(&cfg);
        let span_end = cfg.start_ms + i64::from(cfg.days) * DAY;
        let mut n = 0;
        for (i, _) in sim
            .people
            .iter()
            .enumerate()
            .filter(|(_, p)| p.segment == Segment::LastBuyChurner)
        {
            let mut mine: Vec<&SimEvent> = sim.events.iter().filter(|e| e.person == i).collect();
            mine.sort_by_key(|e| e.at_ms);
            let last_buy = mine
                .iter()
                .rposition(|e| matches!(e.value["event_type"].as_str(), Some("sale" | "purchase")));
            let last_buy = last_buy.expect("a last purchase");
            // Nothing but the rest of that visit after the last purchase.
            assert!(mine[last_buy].at_ms >= mine[mine.len() - 1].at_ms - 2 * DAY);
            assert!(mine[mine.len() - 1].at_ms < span_end - 25 * DAY);
            n += 1;
        }
        assert!(n > 10);
    }
}
