//! The journey's serialized forms across the compact layout: a journey
//! written by the code before it (session 6: `fixtures/journey-v1.*`, a
//! MessagePack record as snapshots and the journeys changelog hold it, and
//! the JSON the lookup API shows) reads back and writes the same bytes.

use std::time::Duration;

use serde_json::json;

use super::*;
use crate::testkit::{app, call, pos, product, t, web};
use crate::vocab::{FactorName, Outcome, Suppressed};

const V1_MSGPACK: &[u8] = include_bytes!("fixtures/journey-v1.msgpack");
const V1_JSON: &str = include_str!("fixtures/journey-v1.json");

fn ids() -> serde_json::Value {
    json!({"cookie_id": "c-1"})
}

fn action(id: &str, name: &str, minute: i64) -> RecentAction {
    RecentAction {
        action_id: id.into(),
        action: name.into(),
        channel: "email".into(),
        reason: "because".into(),
        decided_at: t(minute),
        tier: Tier::B,
        outcome: Some(Outcome::Dismissed),
        counted_trial: true,
        counted_response: false,
        score: Some(0.25),
        beaten: vec![Beaten {
            action: "other".into(),
            score: 0.125,
        }],
        held_back: vec![HeldBack {
            action: "quiet".into(),
            rule: Suppressed::Cooldown,
        }],
        held_out: false,
        converted: true,
    }
}

/// A journey that uses every part: every event kind, decisions, contacts,
/// responses, consent, churn, examples, value.
pub(crate) fn rich() -> Journey {
    let mut j = Journey::default();
    j.apply(&web("1", 0, ids(), "product_view", product("a", 40.0)));
    j.apply(&web("2", 1, ids(), "add_to_cart", product("a", 40.0)));
    j.apply(&web("3", 2, ids(), "add_to_cart", product("b", 20.0)));
    j.apply(&web("4", 3, ids(), "checkout_start", json!({})));
    j.apply(&app("5", 50, ids(), "session_start", json!({"utc_offset_minutes": 60})));
    j.apply(&pos("6", 90, ids(), 15.0));
    j.apply(&web("10", 95, ids(), "add_to_cart", product("c", 5.0)));
    j.apply(&call("7", 100, ids(), "complaint", "unresolved"));
    j.apply(&call("8", 200, ids(), "cancel_request", "escalated"));
    j.apply(&app("9", 300, ids(), "push_opt_out", json!({})));
    j.record_action(action("a-1", "cart_recovery", 10));
    j.record_action(action("a-2", "win_back", 20));
    j.record_contact(t(10), ContactChannel::Email);
    j.record_response(t(11), ContactChannel::Email);
    j.record_consent(ContactChannel::Sms, true, t(12));
    j.churn.score = 0.5;
    j.churn.band = Some(Band::Medium);
    j.churn.evaluated_at = t(300).into();
    let factors = vec![Factor {
        name: FactorName::Complaints30d,
        value: 1.0,
        contribution: 0.5,
    }];
    j.record_churn(ChurnPoint::of(t(300), 0.5, Some(Band::Medium), &factors));
    j.churn.factors = factors.into();
    let example = ChurnExample::new(t(300), &[0.5; CHURN_FEATURES], 0.5);
    j.churn_examples.remember(example, Duration::from_secs(3600));
    j.quiet_due = Some(t(400));
    j.tier = Tier::A;
    *j.ignored.entry("win_back".into()).or_insert(0) += 1;
    j.rfm = Some(Rfm { r: 5, f: 1, m: 2 });
    j.clv.set(Some(Clv {
        expected_purchases: 1.5,
        order_value: 20.0,
        p_active: 0.5,
        value: 30.0,
        horizon_days: 365.0,
    }));
    j
}

#[test]
#[ignore = "writes the fixtures: run once on the code whose format they pin"]
fn write_fixtures() {
    let j = rich();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/journey/fixtures");
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(format!("{dir}/journey-v1.msgpack"), rmp_serde::to_vec(&j).unwrap()).unwrap();
    std::fs::write(
        format!("{dir}/journey-v1.json"),
        serde_json::to_string_pretty(&j).unwrap(),
    )
    .unwrap();
}

#[test]
fn a_journey_written_before_the_compact_layout_reads_back_the_same() {
    let j: Journey = rmp_serde::from_slice(V1_MSGPACK).expect("the v1 record reads");
    assert_eq!(j, rich(), "the same journey as the same events make today");
    assert_eq!(rmp_serde::to_vec(&j).unwrap(), V1_MSGPACK, "and writes the same bytes");
    assert_eq!(
        serde_json::to_string_pretty(&j).unwrap(),
        V1_JSON,
        "and shows the same JSON"
    );
    let from_json: Journey = serde_json::from_str(V1_JSON).unwrap();
    assert_eq!(from_json, j);
}
