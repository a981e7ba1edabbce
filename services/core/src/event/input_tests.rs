//! Bad input at the decoder: event times out of bounds, amounts, values
//! never quoted in error texts, and fuzzing of every decoder.

use std::time::Duration;

use proptest::prelude::*;
use serde_json::{json, Map, Value};

use super::*;
use crate::testkit::{at, core_config, decoder, t};

fn bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

fn page_view(occurred_at: &str) -> Value {
    json!({"event_id": "e-1", "event_type": "page_view", "occurred_at": occurred_at,
        "identifiers": {"cookie_id": "c-1"}, "session_id": "s"})
}

#[test]
fn event_times_ahead_of_the_clock_or_beyond_the_horizon_are_refused() {
    let now = t(0);
    let d = decoder();
    let reason = |d: &Decoder, v: &Value| {
        d.decode_at(Channel::Web, &bytes(v), now)
            .map(|_| ())
            .map_err(|e| e.reason())
    };
    assert_eq!(reason(&d, &page_view("2099-01-01T00:00:00Z")), Err("future_timestamp"));
    assert_eq!(reason(&d, &page_view(&at(6))), Err("future_timestamp"));
    assert_eq!(reason(&d, &page_view(&at(4))), Ok(()), "within the 5 min skew");
    assert_eq!(
        reason(&d, &page_view("1990-01-01T00:00:00Z")),
        Ok(()),
        "no horizon by default"
    );
    let strict = decoder().with_limits(InputLimits {
        max_event_age: Duration::from_secs(400 * 86_400),
        ..InputLimits::default()
    });
    assert_eq!(reason(&strict, &page_view("1990-01-01T00:00:00Z")), Err("too_old"));
    assert_eq!(reason(&strict, &page_view(&at(-399 * 24 * 60))), Ok(()));
    // `decode` (replays, tools) has no clock and no window.
    assert!(d
        .decode(Channel::Web, &bytes(&page_view("2099-01-01T00:00:00Z")))
        .is_ok());
}

fn with(mut v: Value, extra: Value) -> Value {
    if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
        o.extend(e);
    }
    v
}

#[test]
fn absurd_amounts_are_refused_and_undeclared_fields_are_not_read() {
    let d = decoder();
    let reason = |c: Channel, v: Value| d.decode(c, &bytes(&v)).map(|_| ()).map_err(|e| e.reason());
    let web = |t: &str, extra: Value| with(with(page_view(&at(0)), json!({"event_type": t})), extra);
    let sale = |total: f64, qty: u64, unit: f64| {
        json!({"event_id": "p", "event_type": "sale", "occurred_at": at(0), "identifiers": {"loyalty_id": "L"},
            "transaction_id": "t", "store_id": "s", "total": total, "currency": "EUR",
            "items": [{"sku": "a", "quantity": qty, "unit_price": unit}]})
    };
    let price = |p: f64| json!({"product": {"sku": "s", "price": p}});
    assert_eq!(
        reason(Channel::Web, web("add_to_cart", price(1e300))),
        Err("bad_amount")
    );
    assert_eq!(
        reason(Channel::Web, web("add_to_cart", price(1.7e308))),
        Err("bad_amount")
    );
    assert_eq!(reason(Channel::Web, web("add_to_cart", price(1e9))), Ok(()));
    assert_eq!(
        reason(Channel::Web, web("purchase", json!({"revenue": 2e9}))),
        Err("bad_amount")
    );
    assert_eq!(reason(Channel::Pos, sale(1e300, 1, 1.0)), Err("bad_amount"));
    assert_eq!(reason(Channel::Pos, sale(10.0, 4_000_000_000, 1e9)), Err("bad_amount"));
    assert_eq!(reason(Channel::Pos, sale(10.0, 2, 5.0)), Ok(()));
    assert_eq!(
        reason(Channel::Pos, sale(-1.0, 1, 1.0)),
        Err("schema"),
        "negative: the schema's minimum"
    );
    // Fields this channel's schema does not declare are not read at all.
    let stray = json!({"total": "ann@example.com", "csat": "x", "items": 3, "sentiment": {}});
    assert_eq!(reason(Channel::Web, web("page_view", stray)), Ok(()));
    // A lower configured maximum applies.
    let small = decoder().with_limits(InputLimits {
        max_amount: 100.0,
        ..InputLimits::default()
    });
    let v = bytes(&web("purchase", json!({"revenue": 101})));
    assert_eq!(small.decode(Channel::Web, &v).unwrap_err().reason(), "bad_amount");
}

/// Every amount the decoder lets through, at its largest and repeated,
/// still gives finite scores: every output validates against its schema.
#[test]
fn outputs_validate_with_the_largest_amounts_the_decoder_accepts() {
    use crate::output::Output;
    let d = decoder();
    let ns = d.namespaces().clone();
    let mut p = crate::Processor::new(
        std::sync::Arc::new(core_config()),
        std::sync::Arc::new(crate::State::new(ns)),
    );
    let schema = |text: &str| jsonschema::validator_for(&serde_json::from_str(text).unwrap()).unwrap();
    let nba = schema(include_str!("../../../../schemas/next-best-action.v1.json"));
    let churn = schema(include_str!("../../../../schemas/churn-risk.v1.json"));
    let ident = schema(include_str!("../../../../schemas/identity-change.v1.json"));
    let mut checked = 0;
    for (i, amount) in [1.7e308, 1e300, 1e9, 1e9, 1e9].into_iter().enumerate() {
        let cart = json!({"event_id": format!("c{i}"), "event_type": "add_to_cart", "occurred_at": at(i as i64),
            "identifiers": {"customer_id": "C-1"}, "session_id": "s",
            "product": {"sku": format!("sku-{i}"), "price": amount}});
        let buy = json!({"event_id": format!("b{i}"), "event_type": "purchase", "occurred_at": at(i as i64 + 100),
            "identifiers": {"customer_id": "C-2"}, "session_id": "s", "revenue": amount});
        let late = page_view(&at(24 * 60 * 70));
        for v in [cart, buy, late] {
            let Ok(ev) = d.decode(Channel::Web, &bytes(&v)) else {
                continue;
            };
            for o in p.process(&ev, 0).unwrap().outputs {
                let out: Value = serde_json::from_slice(&o.to_json()).unwrap();
                let validator = match o {
                    Output::Action(_) => &nba,
                    Output::Churn(_) => &churn,
                    Output::Identity(_) => &ident,
                    Output::Erasure(_) => unreachable!("events cause no erasure"),
                };
                assert!(validator.is_valid(&out), "{out}");
                checked += 1;
            }
        }
    }
    assert!(checked > 0);
}

// ---- values never quoted -------------------------------------------------

fn pii() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{3,8}\\.[a-z]{2,8}@[a-z]{3,8}\\.(com|de|org)",
        "\\+[1-9][0-9]{9,12}",
        "\\+44 7[0-9]{3} [0-9]{6}",
    ]
}

/// Every field any channel, control command or outcome reads or declares.
const FIELDS: [&str; 25] = [
    "event_id",
    "event_type",
    "occurred_at",
    "identifiers",
    "session_id",
    "url",
    "product",
    "order_id",
    "revenue",
    "transaction_id",
    "store_id",
    "total",
    "currency",
    "items",
    "platform",
    "app_version",
    "screen",
    "duration_s",
    "call_id",
    "reason",
    "outcome",
    "csat",
    "sentiment",
    "agent_id",
    "at",
];

/// A right-shaped message of some input whose fields (and nested fields,
/// and some keys) are replaced by e-mail and phone strings.
fn message_with(values: &[String], picks: &[u8]) -> Value {
    let mut pick = picks.iter().copied().cycle();
    let mut next = |n: usize| usize::from(pick.next().unwrap_or(0)) % n.max(1);
    let v = |i: usize| Value::String(values[i % values.len()].clone());
    let mut m = Map::new();
    for (i, f) in FIELDS.iter().enumerate() {
        let field = match next(6) {
            0 => continue,
            1 => v(i),
            2 => {
                json!({"sku": v(i), "price": v(i + 1), "quantity": v(i + 2), "unit_price": v(i), "category": v(i + 1)})
            }
            3 => json!([{"sku": v(i), "quantity": v(i + 1), "unit_price": v(i + 2)}]),
            4 => {
                let mut ids = Map::new();
                ids.insert(
                    ["email", "phone", "customer_id", "cookie_id"][next(4)].to_string(),
                    v(i),
                );
                if next(2) == 0 {
                    ids.insert(values[(i + 1) % values.len()].clone(), v(i + 2));
                }
                Value::Object(ids)
            }
            _ => json!({ values[i % values.len()].clone(): v(i + 1) }),
        };
        m.insert((*f).to_string(), field);
    }
    // Keep most messages right-shaped enough to reach the later checks.
    if next(2) == 0 {
        m.insert(
            "event_type".into(),
            json!(["page_view", "purchase", "sale", "add_to_cart", "inbound_call"][next(5)]),
        );
        m.insert("occurred_at".into(), json!(at(0)));
        m.insert("command".into(), json!("forget"));
    }
    Value::Object(m)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// No value of the message appears in any error text of any decoder
    /// (the text is also the dead-letter header and the warn log's `error`).
    #[test]
    fn error_texts_never_quote_input_values(
        values in prop::collection::vec(pii(), 3..6),
        picks in prop::collection::vec(any::<u8>(), 40..80),
    ) {
        let d = decoder();
        let msg = bytes(&message_with(&values, &picks));
        let mut texts = Vec::new();
        for c in Channel::ALL {
            if let Err(e) = d.decode_at(c, &msg, t(0)) {
                texts.push(e.to_string());
            }
        }
        if let Err(e) = d.decode_control(&msg) {
            texts.push(e.to_string());
        }
        if let Err(e) = d.decode_outcome(&msg) {
            texts.push(e.to_string());
        }
        for text in &texts {
            for value in &values {
                prop_assert!(!text.contains(value.as_str()), "{:?} quoted in {:?}", value, text);
                let digits: String = value.chars().filter(char::is_ascii_digit).collect();
                prop_assert!(digits.len() < 9 || !text.contains(&digits), "{:?} quoted in {:?}", value, text);
            }
        }
    }
}

#[test]
fn a_type_error_names_the_field_not_the_value() {
    let d = decoder();
    let v = json!({"event_id": "e", "event_type": "sale", "occurred_at": at(0), "identifiers": {"loyalty_id": "L"},
        "transaction_id": "t", "store_id": "s", "total": 1, "currency": "EUR",
        "items": [{"sku": "a", "quantity": 1, "unit_price": 1}, {"sku": "b", "quantity": 1, "unit_price": 1, "category": 7}]});
    let e = d.decode(Channel::Pos, &bytes(&v)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "schema violation: at /items/1/category: fails /properties/items/items/properties/category/type"
    );
    let control = json!({"command": "forget", "namespace": "ann@example.com", "value": "x"});
    let e = d.decode_control(&bytes(&control)).unwrap_err();
    assert_eq!(e.reason(), "unknown_namespace");
    assert!(!e.to_string().contains("ann@"), "{e}");
}

// ---- fuzzing -------------------------------------------------------------

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,20}".prop_map(Value::String),
        pii().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_@.]{0,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// The envelope of every input, each field a random JSON value.
fn shaped() -> impl Strategy<Value = Value> {
    (
        prop::collection::vec(any_json(), FIELDS.len()),
        prop::collection::vec(any::<bool>(), FIELDS.len()),
    )
        .prop_map(|(values, keep)| {
            let mut m = Map::new();
            for ((f, v), k) in FIELDS.iter().zip(values).zip(keep) {
                if k {
                    m.insert((*f).to_string(), v);
                }
            }
            m.insert("command".into(), json!("forget"));
            Value::Object(m)
        })
}

fn every_decoder_refuses_with_a_label(d: &Decoder, msg: &[u8]) -> Result<(), TestCaseError> {
    let known = |e: &DecodeError| DecodeError::REASONS.contains(&e.reason());
    for c in Channel::ALL {
        if let Err(e) = d.decode_at(c, msg, t(0)) {
            prop_assert!(known(&e), "{e}");
        }
    }
    if let Err(e) = d.decode_control(msg) {
        prop_assert!(known(&e), "{e}");
    }
    if let Err(e) = d.decode_outcome(msg) {
        prop_assert!(known(&e), "{e}");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn fuzz_arbitrary_bytes(msg in prop::collection::vec(any::<u8>(), 0..512)) {
        every_decoder_refuses_with_a_label(&decoder(), &msg)?;
    }

    #[test]
    fn fuzz_arbitrary_json(v in any_json()) {
        every_decoder_refuses_with_a_label(&decoder(), &bytes(&v))?;
    }

    #[test]
    fn fuzz_right_shaped_envelopes_with_random_field_types(v in shaped()) {
        every_decoder_refuses_with_a_label(&decoder(), &bytes(&v))?;
    }
}
