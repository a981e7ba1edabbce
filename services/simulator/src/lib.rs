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

pub mod kafka;

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use onejourney_core::Channel;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{json, Value};

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
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            customers: 1000,
            seed: 7,
            // 2026-08-01T00:00:00Z
            start_ms: 1_785_542_400_000,
            days: 90,
        }
    }
}

pub struct Simulation {
    pub people: Vec<Person>,
    /// Sorted by event time.
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

const MINUTE: i64 = 60_000;
const DAY: i64 = 24 * 60 * MINUTE;

const CATEGORIES: [(&str, f64); 6] = [
    ("shoes", 89.0),
    ("jackets", 149.0),
    ("shirts", 35.0),
    ("bags", 120.0),
    ("accessories", 19.0),
    ("electronics", 249.0),
];

pub fn generate(cfg: &SimConfig) -> Simulation {
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let mut people = Vec::with_capacity(cfg.customers);
    let mut events = Vec::new();
    for i in 0..cfg.customers {
        let segment = match rng.gen_range(0..100) {
            0..=44 => Segment::Loyal,
            45..=64 => Segment::Churning,
            65..=79 => Segment::CartAbandoner,
            _ => Segment::Browser,
        };
        let person = make_person(&mut rng, i, segment);
        let mut gen = Gen {
            rng: &mut rng,
            person: &person,
            index: i,
            n: 0,
            out: &mut events,
        };
        gen.journey(cfg);
        people.push(person);
    }
    events.sort_by(|a, b| a.at_ms.cmp(&b.at_ms).then_with(|| a.key.cmp(&b.key)));
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
    }
}

struct Gen<'a> {
    rng: &'a mut StdRng,
    person: &'a Person,
    index: usize,
    n: u32,
    out: &'a mut Vec<SimEvent>,
}

impl Gen<'_> {
    fn journey(&mut self, cfg: &SimConfig) {
        let span = i64::from(cfg.days) * DAY;
        let mut t = cfg.start_ms + self.rng.gen_range(0..(span / 6).max(1));
        let end = cfg.start_ms + span;
        match self.person.segment {
            Segment::Loyal => {
                // Some loyal customers have a bad experience too, and stay.
                let hiccup = self
                    .rng
                    .gen_bool(0.15)
                    .then(|| cfg.start_ms + self.rng.gen_range(0..span));
                while t < end {
                    self.visit(t, true);
                    if hiccup.is_some_and(|h| h >= t && h < t + 3 * DAY) {
                        let (outcome, csat) = if self.rng.gen_bool(0.5) {
                            ("resolved", 3)
                        } else {
                            ("unresolved", 2)
                        };
                        self.call(t + DAY, "complaint", outcome, Some(csat), -0.3);
                    }
                    t += self.rng.gen_range(3..12) * DAY + self.rng.gen_range(0..DAY);
                }
            }
            Segment::Churning => {
                let quiet_from = cfg.start_ms + span * self.rng.gen_range(35..55) / 100;
                while t < quiet_from {
                    self.visit(t, true);
                    t += self.rng.gen_range(4..12) * DAY;
                }
                // Four in ten just drift away without a word; the rest fall out:
                // complaints, a bad call, often a cancel request, then silence.
                if self.rng.gen_bool(0.6) {
                    for k in 0..self.rng.gen_range(1..=3) {
                        let csat = self.rng.gen_range(1..=2);
                        self.call(t + k * DAY, "complaint", "unresolved", Some(csat), -0.7);
                    }
                    if self.rng.gen_bool(0.7) {
                        self.call(t + 4 * DAY, "cancel_request", "escalated", Some(1), -0.9);
                    }
                }
            }
            Segment::CartAbandoner => {
                while t < end {
                    self.abandon(t);
                    if self.rng.gen_bool(0.25) {
                        self.visit(t + 2 * DAY, true);
                    }
                    t += self.rng.gen_range(5..20) * DAY;
                }
            }
            Segment::Browser => {
                while t < end {
                    let cookie = self.cookie();
                    for k in 0..self.rng.gen_range(1..5) {
                        self.web(
                            t + k * MINUTE,
                            "page_view",
                            json!({"cookie_id": cookie}),
                            json!({"url": "https://shop.example/"}),
                        );
                    }
                    t += self.rng.gen_range(5..25) * DAY;
                }
            }
        }
    }

    fn cookie(&mut self) -> String {
        let n = self.person.cookies.len();
        self.person.cookies[self.rng.gen_range(0..n)].clone()
    }

    fn product(&mut self) -> Value {
        let (cat, price) = CATEGORIES[self.rng.gen_range(0..CATEGORIES.len())];
        let sku = format!("{cat}-{:03}", self.rng.gen_range(0..200));
        json!({"sku": sku, "price": price, "category": cat})
    }

    /// One shopping occasion on a random channel.
    fn visit(&mut self, t: i64, buys: bool) {
        match self.rng.gen_range(0..10) {
            0..=4 => self.web_visit(t, buys),
            5..=6 if self.person.device_id.is_some() => self.app_session(t, buys),
            7..=8 => self.store_sale(t),
            _ => self.call_or_search(t),
        }
    }

    /// A web visit: page view, login, product view, then maybe cart and purchase.
    fn web_visit(&mut self, t: i64, buys: bool) {
        let p = self.person;
        let cookie = self.cookie();
        let anon = json!({"cookie_id": cookie});
        self.web(t, "page_view", anon.clone(), json!({"url": "https://shop.example/"}));
        let mut login = json!({"cookie_id": cookie});
        if let (Some(c), Some(e)) = (&p.customer_id, &p.email) {
            login["customer_id"] = json!(c);
            login["email"] = json!(e);
        }
        self.web(t + MINUTE, "login", login, json!({}));
        let prod = self.product();
        self.web(t + 2 * MINUTE, "product_view", anon.clone(), json!({"product": prod}));
        if self.rng.gen_bool(0.3) {
            // Just looking: no cart, no purchase this time.
            return;
        }
        self.web(t + 3 * MINUTE, "add_to_cart", anon.clone(), json!({"product": prod}));
        if buys && self.rng.gen_bool(0.7) {
            self.web(t + 5 * MINUTE, "checkout_start", anon.clone(), json!({}));
            let price = prod["price"].as_f64().unwrap_or(0.0);
            let order = format!("o-{}-{}", self.index, self.n);
            self.web(
                t + 7 * MINUTE,
                "purchase",
                anon,
                json!({"order_id": order, "revenue": price}),
            );
        }
    }

    /// An app session (the person has a device): start, home screen, maybe a purchase, end.
    fn app_session(&mut self, t: i64, buys: bool) {
        let p = self.person;
        let mut ids = json!({"device_id": p.device_id});
        if let Some(c) = &p.customer_id {
            ids["customer_id"] = json!(c);
        }
        self.app(t, "session_start", ids.clone(), json!({}));
        self.app(t + MINUTE, "screen_view", ids.clone(), json!({"screen": "home"}));
        if buys && self.rng.gen_bool(0.5) {
            let prod = self.product();
            self.app(t + 2 * MINUTE, "add_to_cart", ids.clone(), json!({"product": prod}));
            self.app(
                t + 4 * MINUTE,
                "purchase",
                ids.clone(),
                json!({"revenue": prod["price"]}),
            );
        }
        self.app(t + 6 * MINUTE, "session_end", ids, json!({"duration_s": 360}));
    }

    /// A store sale, when the person shows an identifier besides a card token.
    fn store_sale(&mut self, t: i64) {
        let p = self.person;
        let mut ids = serde_json::Map::new();
        if let Some(l) = &p.loyalty_id {
            ids.insert("loyalty_id".into(), json!(l));
            if self.rng.gen_bool(0.5) {
                if let Some(e) = &p.email {
                    ids.insert("email".into(), json!(e));
                }
            }
        } else if let Some(e) = &p.email {
            ids.insert("email".into(), json!(e));
        }
        if let Some(tok) = &p.card_token {
            ids.insert("card_token".into(), json!(tok));
        }
        if ids.keys().any(|k| k != "card_token") {
            let prod = self.product();
            self.pos(t, Value::Object(ids), &prod);
        }
    }

    /// An order-status call now and then, otherwise an anonymous web search.
    fn call_or_search(&mut self, t: i64) {
        if self.rng.gen_bool(0.3) {
            let csat = self.rng.gen_range(3..=5);
            self.call(t, "order_status", "resolved", Some(csat), 0.4);
        } else {
            let cookie = self.cookie();
            self.web(t, "search", json!({"cookie_id": cookie}), json!({}));
        }
    }

    fn abandon(&mut self, t: i64) {
        let cookie = self.cookie();
        let mut login = json!({"cookie_id": cookie});
        if let (Some(c), Some(e)) = (&self.person.customer_id, &self.person.email) {
            login["customer_id"] = json!(c);
            login["email"] = json!(e);
        }
        self.web(t, "login", login, json!({}));
        let prod = self.product();
        self.web(
            t + MINUTE,
            "add_to_cart",
            json!({"cookie_id": cookie}),
            json!({"product": prod}),
        );
        if self.rng.gen_bool(0.4) {
            self.web(
                t + 3 * MINUTE,
                "checkout_start",
                json!({"cookie_id": cookie}),
                json!({}),
            );
        }
    }

    fn id(&mut self, prefix: &str) -> String {
        self.n += 1;
        format!("{prefix}-{:06}-{:04}", self.index, self.n)
    }

    fn push(&mut self, stream: Stream, key: String, t: i64, value: Value) {
        self.out.push(SimEvent {
            stream,
            key,
            at_ms: t,
            person: self.index,
            value,
        });
    }

    fn envelope(&mut self, prefix: &str, t: i64, event_type: &str, ids: Value, extra: Value) -> (String, Value) {
        let id = self.id(prefix);
        let mut v = json!({"event_id": id, "event_type": event_type, "occurred_at": rfc3339(t), "identifiers": ids});
        if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
            o.extend(e);
        }
        (id, v)
    }

    fn web(&mut self, t: i64, event_type: &str, ids: Value, extra: Value) {
        let session = format!("ws-{}-{}", self.index, t / DAY);
        let (_, mut v) = self.envelope("web", t, event_type, ids.clone(), extra);
        v["session_id"] = json!(session);
        let key = ids["cookie_id"].as_str().unwrap_or_default().to_string();
        self.push(Stream::Web, key, t, v);
    }

    fn app(&mut self, t: i64, event_type: &str, ids: Value, extra: Value) {
        let (_, mut v) = self.envelope("app", t, event_type, ids.clone(), extra);
        v["session_id"] = json!(format!("as-{}-{}", self.index, t / DAY));
        v["platform"] = json!(if self.index.is_multiple_of(2) { "ios" } else { "android" });
        v["app_version"] = json!("5.2.1");
        let key = ids["device_id"].as_str().unwrap_or_default().to_string();
        self.push(Stream::App, key, t, v);
    }

    fn pos(&mut self, t: i64, ids: Value, prod: &Value) {
        let price = prod["price"].as_f64().unwrap_or(0.0);
        let qty = self.rng.gen_range(1..=2);
        let store = format!("st-{:03}", self.index % 40);
        let (id, mut v) = self.envelope("pos", t, "sale", ids, json!({}));
        v["transaction_id"] = json!(format!("tx-{id}"));
        v["store_id"] = json!(store);
        v["total"] = json!(price * f64::from(qty));
        v["currency"] = json!("EUR");
        v["items"] = json!([{"sku": prod["sku"], "quantity": qty, "unit_price": price, "category": prod["category"]}]);
        self.push(Stream::Pos, store, t, v);
    }

    fn call(&mut self, t: i64, reason: &str, outcome: &str, csat: Option<u8>, sentiment: f64) {
        let p = self.person;
        let mut ids = serde_json::Map::new();
        if let Some(ph) = &p.phone {
            ids.insert("phone".into(), json!(ph));
        }
        if let Some(c) = &p.customer_id {
            ids.insert("customer_id".into(), json!(c));
        }
        if ids.is_empty() {
            return;
        }
        let (id, mut v) = self.envelope("call", t, "inbound_call", Value::Object(ids), json!({}));
        v["call_id"] = json!(format!("k-{id}"));
        v["reason"] = json!(reason);
        v["outcome"] = json!(outcome);
        v["duration_s"] = json!(self.rng.gen_range(60..900));
        if let Some(c) = csat {
            v["csat"] = json!(c);
        }
        v["sentiment"] = json!(sentiment);
        v["agent_id"] = json!(format!("agent-{}", self.index % 25));
        let key = format!("k-{id}");
        self.push(Stream::CallCenter, key, t, v);
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
}
