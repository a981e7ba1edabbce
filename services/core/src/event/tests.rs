use serde_json::{json, Value};

use super::*;
use crate::ids::Namespaces;
use crate::testkit::{at, decoder};

fn base(event_type: &str) -> Value {
    json!({"event_id": "e-1", "event_type": event_type, "occurred_at": at(0),
        "identifiers": {"cookie_id": "c-1"}})
}

fn with(mut v: Value, fields: Value) -> Value {
    if let (Some(o), Value::Object(f)) = (v.as_object_mut(), fields) {
        o.extend(f);
    }
    v
}

/// One valid sample of every event type of every channel.
fn samples() -> Vec<(Channel, Value)> {
    let product = json!({"product": {"sku": "s-1", "price": 10.0, "category": "c"}});
    let mut out = Vec::new();
    for t in ["page_view", "search", "checkout_start", "login", "signup"] {
        out.push((
            Channel::Web,
            with(base(t), json!({"session_id": "s", "url": "https://shop/x"})),
        ));
    }
    for t in ["product_view", "add_to_cart", "remove_from_cart"] {
        out.push((
            Channel::Web,
            with(with(base(t), json!({"session_id": "s"})), product.clone()),
        ));
    }
    out.push((
        Channel::Web,
        with(
            base("purchase"),
            json!({"session_id": "s", "order_id": "o-1", "revenue": 12.5}),
        ),
    ));
    for t in ["sale", "return"] {
        out.push((
            Channel::Pos,
            with(
                base(t),
                json!({"transaction_id": "t", "store_id": "st", "total": 5, "currency": "EUR",
                "items": [{"sku": "a", "quantity": 1, "unit_price": 5, "category": "c"}]}),
            ),
        ));
    }
    for t in ["session_start", "screen_view", "push_opt_in", "push_opt_out"] {
        out.push((
            Channel::App,
            with(
                base(t),
                json!({"session_id": "s", "platform": "android", "screen": "home"}),
            ),
        ));
    }
    out.push((
        Channel::App,
        with(base("session_end"), json!({"session_id": "s", "duration_s": 30})),
    ));
    out.push((
        Channel::App,
        with(with(base("add_to_cart"), json!({"session_id": "s"})), product.clone()),
    ));
    out.push((
        Channel::App,
        with(base("purchase"), json!({"session_id": "s", "revenue": 3})),
    ));
    for t in ["inbound_call", "outbound_call", "callback_requested"] {
        out.push((
            Channel::CallCenter,
            with(
                base(t),
                json!({"call_id": "k", "reason": "complaint", "outcome": "unresolved",
                "duration_s": 60, "csat": 2, "sentiment": -0.4, "agent_id": "a-1"}),
            ),
        ));
    }
    out
}

#[test]
fn every_event_type_of_every_channel_decodes() {
    let d = decoder();
    let all = samples();
    assert_eq!(all.len(), 9 + 2 + 7 + 3, "one sample per event type");
    for (channel, v) in all {
        let bytes = serde_json::to_vec(&v).unwrap();
        let ev = d
            .decode(channel, &bytes)
            .unwrap_or_else(|e| panic!("{channel:?} {v}: {e}"));
        assert_eq!(ev.event_type, v["event_type"].as_str().unwrap());
    }
}

fn reason_of(channel: Channel, v: &Value) -> &'static str {
    decoder()
        .decode(channel, &serde_json::to_vec(v).unwrap())
        .expect_err("must be rejected")
        .reason()
}

#[test]
fn each_documented_constraint_rejects() {
    let web = with(base("page_view"), json!({"session_id": "s"}));
    let strip = |v: &Value, k: &str| {
        let mut v = v.clone();
        v.as_object_mut().unwrap().remove(k);
        v
    };
    let cases: Vec<(&str, Channel, Value, &str)> = vec![
        ("missing event_id", Channel::Web, strip(&web, "event_id"), "schema"),
        (
            "empty event_id",
            Channel::Web,
            with(web.clone(), json!({"event_id": ""})),
            "schema",
        ),
        (
            "event_id too long",
            Channel::Web,
            with(web.clone(), json!({"event_id": "x".repeat(129)})),
            "schema",
        ),
        (
            "unknown event_type",
            Channel::Web,
            with(web.clone(), json!({"event_type": "sale"})),
            "schema",
        ),
        (
            "no offset",
            Channel::Web,
            with(web.clone(), json!({"occurred_at": "2026-11-21T10:15:00"})),
            "schema",
        ),
        (
            "bad date",
            Channel::Web,
            with(web.clone(), json!({"occurred_at": "2026-13-45T10:15:00Z"})),
            "bad_timestamp",
        ),
        (
            "empty identifiers",
            Channel::Web,
            with(web.clone(), json!({"identifiers": {}})),
            "empty_identifiers",
        ),
        (
            "unknown namespace",
            Channel::Web,
            with(web.clone(), json!({"identifiers": {"ssn": "1"}})),
            "unknown_namespace",
        ),
        (
            "identifier too long",
            Channel::Web,
            with(web.clone(), json!({"identifiers": {"cookie_id": "x".repeat(257)}})),
            "schema",
        ),
        (
            "identifier not a string",
            Channel::Web,
            with(web.clone(), json!({"identifiers": {"cookie_id": 5}})),
            "schema",
        ),
        (
            "bad email hash",
            Channel::Web,
            with(web.clone(), json!({"identifiers": {"email_sha256": "xyz"}})),
            "schema",
        ),
        (
            "junk only",
            Channel::Web,
            with(
                web.clone(),
                json!({"identifiers": {"email": "null", "cookie_id": "undefined"}}),
            ),
            "no_usable_identifier",
        ),
        ("web without session", Channel::Web, strip(&web, "session_id"), "schema"),
        (
            "cart without product",
            Channel::Web,
            with(base("add_to_cart"), json!({"session_id": "s"})),
            "schema",
        ),
        (
            "negative price",
            Channel::Web,
            with(
                base("add_to_cart"),
                json!({"session_id": "s", "product": {"sku": "a", "price": -1}}),
            ),
            "schema",
        ),
        (
            "purchase without revenue",
            Channel::Web,
            with(base("purchase"), json!({"session_id": "s"})),
            "schema",
        ),
        (
            "pos without store",
            Channel::Pos,
            with(
                base("sale"),
                json!({"transaction_id": "t", "total": 1, "currency": "EUR"}),
            ),
            "schema",
        ),
        (
            "pos bad currency",
            Channel::Pos,
            with(
                base("sale"),
                json!({"transaction_id": "t", "store_id": "s", "total": 1, "currency": "euro"}),
            ),
            "schema",
        ),
        (
            "pos negative total",
            Channel::Pos,
            with(
                base("sale"),
                json!({"transaction_id": "t", "store_id": "s", "total": -1, "currency": "EUR"}),
            ),
            "schema",
        ),
        (
            "pos zero quantity",
            Channel::Pos,
            with(
                base("sale"),
                json!({"transaction_id": "t", "store_id": "s", "total": 1, "currency": "EUR", "items": [{"sku": "a", "quantity": 0, "unit_price": 1}]}),
            ),
            "schema",
        ),
        (
            "app bad platform",
            Channel::App,
            with(base("session_start"), json!({"session_id": "s", "platform": "windows"})),
            "schema",
        ),
        (
            "call without call_id",
            Channel::CallCenter,
            base("inbound_call"),
            "schema",
        ),
        (
            "call bad reason",
            Channel::CallCenter,
            with(base("inbound_call"), json!({"call_id": "k", "reason": "angry"})),
            "schema",
        ),
        (
            "call bad outcome",
            Channel::CallCenter,
            with(base("inbound_call"), json!({"call_id": "k", "outcome": "fine"})),
            "schema",
        ),
        (
            "csat out of range",
            Channel::CallCenter,
            with(base("inbound_call"), json!({"call_id": "k", "csat": 6})),
            "schema",
        ),
        (
            "csat not integer",
            Channel::CallCenter,
            with(base("inbound_call"), json!({"call_id": "k", "csat": 2.5})),
            "schema",
        ),
        (
            "sentiment out of range",
            Channel::CallCenter,
            with(base("inbound_call"), json!({"call_id": "k", "sentiment": -1.5})),
            "schema",
        ),
    ];
    for (name, channel, v, want) in cases {
        assert_eq!(reason_of(channel, &v), want, "{name}");
    }
}

#[test]
fn malformed_bytes_and_oversized_messages_are_rejected() {
    let d = Decoder::new(Arc::new(Namespaces::with_defaults()), 100).unwrap();
    assert_eq!(
        d.decode(Channel::Web, b"{not json").unwrap_err().reason(),
        "invalid_json"
    );
    assert_eq!(
        d.decode(Channel::Web, &[0xff, 0xfe]).unwrap_err().reason(),
        "invalid_json"
    );
    let big = vec![b' '; 101];
    assert_eq!(
        d.decode(Channel::Web, &big).unwrap_err(),
        DecodeError::TooLarge { size: 101, limit: 100 }
    );
}

#[test]
fn schema_errors_do_not_quote_values() {
    let v = with(
        base("page_view"),
        json!({"session_id": "s", "identifiers": {"email": format!("{}@secret.example", "a".repeat(300))}}),
    );
    let err = decoder()
        .decode(Channel::Web, &serde_json::to_vec(&v).unwrap())
        .unwrap_err();
    assert_eq!(err.reason(), "schema");
    assert!(!err.to_string().contains("secret.example"), "{err}");
}

#[test]
fn raw_email_and_phone_are_hashed_and_junk_dropped() {
    let v = with(
        base("page_view"),
        json!({"session_id": "s", "identifiers": {"email": "Ann@Example.com", "phone": "+44 7700 900123", "cookie_id": "null", "device_id": "d-1"}}),
    );
    let ev = decoder()
        .decode(Channel::Web, &serde_json::to_vec(&v).unwrap())
        .unwrap();
    let ns = Namespaces::with_defaults();
    let names: Vec<&str> = ev.ids.iter().map(|k| ns.name(k.ns())).collect();
    assert_eq!(names.len(), 3);
    assert!(names.contains(&"email_sha256") && names.contains(&"phone_sha256") && names.contains(&"device_id"));
    assert!(ev
        .ids
        .iter()
        .all(|k| !k.value().contains("Example") && !k.value().contains("7700")));
    assert_eq!(
        ev.blocked,
        vec![("cookie_id".to_string(), crate::ids::BlockReason::Junk)]
    );
}

#[test]
fn action_outcomes_are_validated() {
    let d = decoder();
    let ok = json!({"action_id": "act-1", "one_id": "oj-1", "outcome": "clicked", "at": at(3)});
    let o = d.decode_outcome(&serde_json::to_vec(&ok).unwrap()).unwrap();
    assert_eq!(o.outcome, crate::decide::propensity::Outcome::Clicked);
    for bad in [
        json!({"action_id": "act-1", "one_id": "oj-1", "outcome": "loved", "at": at(3)}),
        json!({"action_id": "", "one_id": "oj-1", "outcome": "clicked", "at": at(3)}),
        json!({"one_id": "oj-1", "outcome": "clicked", "at": at(3)}),
        json!({"action_id": "a", "one_id": "oj-1", "outcome": "clicked", "at": "yesterday"}),
    ] {
        assert_eq!(
            d.decode_outcome(&serde_json::to_vec(&bad).unwrap())
                .unwrap_err()
                .reason(),
            "schema",
            "{bad}"
        );
    }
    assert_eq!(d.decode_outcome(b"nope").unwrap_err().reason(), "invalid_json");
}
