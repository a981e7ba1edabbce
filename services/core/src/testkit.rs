//! Helpers for the core's tests: events from JSON and the shipped defaults.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::decide::DecideConfig;
use crate::event::{Channel, ChannelEvent, Decoder};
use crate::identity::OneId;
use crate::ids::{IdKey, Namespaces};
use crate::processor::{CoreConfig, Processor};
use crate::time::EventTime;

/// The identifier `value` of namespace `ns`, as `p`'s state keys it.
pub fn key(p: &Processor, ns: &str, value: &str) -> IdKey {
    p.state()
        .identity
        .namespaces()
        .normalise(ns, value)
        .expect("a known namespace")
        .expect("a valid identifier")
}

/// The One ID of the profile holding identifier `value` of namespace `ns`.
pub fn one_id(p: &Processor, ns: &str, value: &str) -> OneId {
    p.state().identity.one_id_of(&key(p, ns, value)).expect("a profile")
}

pub fn decoder() -> Decoder {
    Decoder::new(Arc::new(Namespaces::with_defaults()), 1 << 20).expect("schemas compile")
}

/// The `[decide]` section of the engine's shipped `default.toml`.
pub fn default_decide() -> DecideConfig {
    let text = include_str!("../../engine/src/default.toml");
    let doc: toml::Table = toml::from_str(text).expect("default.toml parses");
    let section = doc.get("decide").expect("[decide] present").clone();
    let cfg: DecideConfig = section.try_into().expect("[decide] matches DecideConfig");
    cfg.validate().expect("default catalog is valid");
    cfg
}

/// The shipped config without exploration or holdout: the processor's rule
/// tests decide on the catalog's ranking and see every chosen action
/// published. The arbitration tests turn both on ([`exploring_config`]).
pub fn core_config() -> CoreConfig {
    let mut decide = default_decide();
    decide.explore = false;
    decide.holdout_share = 0.0;
    CoreConfig {
        decide,
        allowed_lateness: Duration::ZERO,
        idle_after: Duration::from_secs(2),
        dedupe_window: Duration::ZERO,
    }
}

/// The shipped config as it is: exploration and the holdout on.
pub fn exploring_config() -> CoreConfig {
    CoreConfig {
        decide: default_decide(),
        ..core_config()
    }
}

/// 2026-11-01T00:00:00Z plus `minutes`.
pub fn at(minutes: i64) -> String {
    EventTime(1_793_491_200_000 + minutes * 60_000).to_rfc3339()
}

pub fn t(minutes: i64) -> EventTime {
    EventTime(1_793_491_200_000 + minutes * 60_000)
}

/// Decodes a JSON event of `channel`, panicking on a decode error.
pub fn ev(channel: Channel, v: Value) -> ChannelEvent {
    let bytes = serde_json::to_vec(&v).expect("json");
    decoder().decode(channel, &bytes).unwrap_or_else(|e| panic!("{e}: {v}"))
}

pub fn web(id: &str, minute: i64, ids: Value, event_type: &str, extra: Value) -> ChannelEvent {
    let mut v = json!({"event_id": id, "event_type": event_type, "occurred_at": at(minute),
        "identifiers": ids, "session_id": "s-1"});
    merge(&mut v, extra);
    ev(Channel::Web, v)
}

pub fn app(id: &str, minute: i64, ids: Value, event_type: &str, extra: Value) -> ChannelEvent {
    let mut v = json!({"event_id": id, "event_type": event_type, "occurred_at": at(minute),
        "identifiers": ids, "session_id": "as-1", "platform": "ios"});
    merge(&mut v, extra);
    ev(Channel::App, v)
}

pub fn pos(id: &str, minute: i64, ids: Value, total: f64) -> ChannelEvent {
    ev(
        Channel::Pos,
        json!({"event_id": id, "event_type": "sale", "occurred_at": at(minute), "identifiers": ids,
            "transaction_id": format!("tx-{id}"), "store_id": "st-1", "total": total, "currency": "EUR",
            "items": [{"sku": "sku-1", "quantity": 1, "unit_price": total}]}),
    )
}

pub fn call(id: &str, minute: i64, ids: Value, reason: &str, outcome: &str) -> ChannelEvent {
    ev(
        Channel::CallCenter,
        json!({"event_id": id, "event_type": "inbound_call", "occurred_at": at(minute), "identifiers": ids,
            "call_id": format!("call-{id}"), "reason": reason, "outcome": outcome}),
    )
}

/// An `identifiers` object from (namespace index into `names`, value
/// index) pairs: `u<v>@x.com` for e-mail, `<namespace>-<v>` otherwise.
pub fn ids_of(names: &[&str], parts: &[(usize, usize)]) -> Value {
    let mut m = serde_json::Map::new();
    for &(n, v) in parts {
        let value = if names[n] == "email" {
            format!("u{v}@x.com")
        } else {
            format!("{}-{v}", names[n])
        };
        m.insert(names[n].to_string(), Value::String(value));
    }
    Value::Object(m)
}

pub fn product(sku: &str, price: f64) -> Value {
    json!({"product": {"sku": sku, "price": price, "category": "shoes"}})
}

fn merge(v: &mut Value, extra: Value) {
    if let (Some(obj), Value::Object(more)) = (v.as_object_mut(), extra) {
        obj.extend(more);
    }
}

/// A forget request as the HTTP API makes it, for tests that forget.
pub fn erasure() -> crate::output::ErasureRequest {
    crate::output::ErasureRequest {
        requested_by: None,
        via: "http",
        requested_at: None,
        command: crate::output::CommandRef {
            topic: "t".into(),
            partition: 0,
            offset: 0,
        },
    }
}

/// This process's resident bytes now (0 where `/proc` is not there): for
/// the measurements run by hand.
pub fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * 4096
}
