//! One person's journey as events: the segments' behaviour and the four
//! channels' event shapes.
//!
//! In: a [`Person`] and the random generator. Out: [`SimEvent`]s appended to
//! the simulation, in no particular order (the caller sorts). It keeps
//! nothing between people but the event counter that makes ids unique.

use rand::rngs::StdRng;
use rand::Rng;
use serde_json::{json, Value};

use crate::{rfc3339, Person, Segment, SimConfig, SimEvent, Stream};

pub(crate) const MINUTE: i64 = 60_000;
pub(crate) const DAY: i64 = 24 * 60 * MINUTE;

const CATEGORIES: [(&str, f64); 6] = [
    ("shoes", 89.0),
    ("jackets", 149.0),
    ("shirts", 35.0),
    ("bags", 120.0),
    ("accessories", 19.0),
    ("electronics", 249.0),
];

pub(crate) struct Gen<'a> {
    pub(crate) rng: &'a mut StdRng,
    pub(crate) person: &'a Person,
    pub(crate) index: usize,
    pub(crate) n: u32,
    /// The harder mix: shared tablets and junk values are used.
    pub(crate) harder: bool,
    pub(crate) out: &'a mut Vec<SimEvent>,
}

impl Gen<'_> {
    pub(crate) fn journey(&mut self, cfg: &SimConfig) {
        let span = i64::from(cfg.days) * DAY;
        let mut t = cfg.start_ms + self.rng.gen_range(0..(span / 6).max(1));
        let end = cfg.start_ms + span;
        match self.person.segment {
            Segment::Seasonal
            | Segment::Irregular
            | Segment::LongGapLoyal
            | Segment::LastBuyChurner
            | Segment::StayingComplainer => self.harder_journey(cfg, t),
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

    pub(crate) fn cookie(&mut self) -> String {
        let n = self.person.cookies.len();
        self.person.cookies[self.rng.gen_range(0..n)].clone()
    }

    pub(crate) fn product(&mut self) -> Value {
        let (cat, price) = CATEGORIES[self.rng.gen_range(0..CATEGORIES.len())];
        let sku = format!("{cat}-{:03}", self.rng.gen_range(0..200));
        json!({"sku": sku, "price": price, "category": cat})
    }

    /// One shopping occasion on a random channel.
    pub(crate) fn visit(&mut self, t: i64, buys: bool) {
        match self.rng.gen_range(0..10) {
            0..=4 => self.web_visit(t, buys),
            5..=6 if self.person.device_id.is_some() || self.person.shared_device.is_some() => {
                self.app_session(t, buys)
            }
            7..=8 => self.store_sale(t),
            _ => self.call_or_search(t),
        }
    }

    /// A web visit: page view, login, product view, then maybe cart and purchase.
    pub(crate) fn web_visit(&mut self, t: i64, buys: bool) {
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
    pub(crate) fn app_session(&mut self, t: i64, buys: bool) {
        let p = self.person;
        let device = match &p.shared_device {
            Some(tablet) if p.device_id.is_none() || self.rng.gen_bool(0.5) => Some(tablet),
            _ => p.device_id.as_ref(),
        };
        let mut ids = json!({"device_id": device});
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
    pub(crate) fn store_sale(&mut self, t: i64) {
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
        if self.harder && ids.contains_key("email") && self.rng.gen_bool(0.08) {
            // The cashier types a placeholder instead of the customer's address.
            ids.insert("email".into(), json!(crate::harder::junk_email(self.rng)));
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
    pub(crate) fn call_or_search(&mut self, t: i64) {
        if self.rng.gen_bool(0.3) {
            let csat = self.rng.gen_range(3..=5);
            self.call(t, "order_status", "resolved", Some(csat), 0.4);
        } else {
            let cookie = self.cookie();
            self.web(t, "search", json!({"cookie_id": cookie}), json!({}));
        }
    }

    pub(crate) fn abandon(&mut self, t: i64) {
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
            late_ms: 0,
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

    pub(crate) fn call(&mut self, t: i64, reason: &str, outcome: &str, csat: Option<u8>, sentiment: f64) {
        let p = self.person;
        let mut ids = serde_json::Map::new();
        if let Some(ph) = &p.phone {
            ids.insert("phone".into(), json!(ph));
            if self.harder && self.rng.gen_bool(0.05) {
                // The agent's form fills in a placeholder number.
                ids.insert("phone".into(), json!(crate::harder::JUNK_PHONE));
            }
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
