//! The sizes and the recent list kept as the state changes equal what a
//! walk of everything computes, whatever stitches, merges, rebuilds, caps,
//! shared devices, timers and forgets happened.

use std::cmp::Reverse;
use std::sync::Arc;

use proptest::prelude::*;
use serde_json::{json, Map, Value};

use super::*;
use crate::ids::{IdentityLimits, Namespaces};
use crate::processor::Processor;
use crate::testkit::{app, call, core_config, pos, product, web};
use crate::time::EventTime;

pub(super) fn processor_with(limits: IdentityLimits) -> Processor {
    let ns = Namespaces::with_defaults().with_limits(limits).expect("valid limits");
    Processor::new(Arc::new(core_config()), Arc::new(State::new(Arc::new(ns))))
}

/// What the recent list must be: every journey sorted newest first, then by
/// One ID (the walk `GET /v1/profiles/recent` used to do).
fn scan_recent(state: &State, n: usize) -> Vec<OneId> {
    let mut all: Vec<(Reverse<Option<EventTime>>, OneId)> = state
        .journeys
        .iter()
        .map(|j| (Reverse(j.value().last_seen()), j.key().clone()))
        .collect();
    all.sort();
    all.into_iter().take(n).map(|(_, id)| id).collect()
}

pub(super) fn check(state: &State) -> Result<(), TestCaseError> {
    prop_assert_eq!(state.size(), state.recount());
    for n in [1, 7, crate::recent::RECENT_MAX] {
        let recent = state.recent(n);
        prop_assert_eq!(&recent, &scan_recent(state, n));
        for id in &recent {
            prop_assert!(
                state.identity.profile(id).is_some(),
                "{} is merged away or forgotten",
                id
            );
        }
    }
    Ok(())
}

pub(super) const NAMES: [&str; 6] = [
    "cookie_id",
    "device_id",
    "email",
    "customer_id",
    "loyalty_id",
    "card_token",
];

pub(super) fn ids_json(parts: &[(usize, usize)]) -> Value {
    let mut m = Map::new();
    for (ns, v) in parts {
        m.insert(NAMES[*ns].to_string(), Value::from(format!("{}-{v}@x.io", NAMES[*ns])));
    }
    Value::Object(m)
}

#[derive(Clone, Debug)]
pub(super) enum Op {
    /// Minute, kind (page view, cart, sale, call, app), identifiers.
    Event(i64, u8, Vec<(usize, usize)>),
    Forget(usize, usize),
}

pub(super) fn op() -> impl Strategy<Value = Op> {
    let ids = prop::collection::vec((0usize..6, 0usize..5), 1..4);
    prop_oneof![
        8 => (0i64..600, 0u8..5, ids).prop_map(|(m, k, ids)| Op::Event(m, k, ids)),
        1 => (0usize..5, 0usize..5).prop_map(|(ns, v)| Op::Forget(ns, v)),
    ]
}

pub(super) fn event(i: usize, minute: i64, kind: u8, ids: Value) -> crate::event::ChannelEvent {
    let id = format!("e{i}");
    match kind {
        0 => web(&id, minute, ids, "page_view", json!({})),
        1 => web(&id, minute, ids, "add_to_cart", product(&format!("sku-{i}"), 9.5)),
        2 => pos(&id, minute, ids, 20.0 + i as f64),
        3 => call(&id, minute, ids, "complaint", "unresolved"),
        _ => app(&id, minute, ids, "add_to_cart", product("sku-1", 5.0)),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// After every stitch, merge, rebuild (events out of order), capped or
    /// shared device and forget, the kept sizes equal a full walk and the
    /// recent list equals a sort of every journey.
    #[test]
    fn kept_sizes_and_recent_list_equal_a_full_walk(ops in prop::collection::vec(op(), 1..60)) {
        let limits = IdentityLimits { max_identifiers_per_profile: 4, ..Default::default() };
        let mut p = processor_with(limits);
        for (i, op) in ops.into_iter().enumerate() {
            match op {
                Op::Event(minute, kind, ids) => {
                    let _ = p.process(&event(i, minute, kind, ids_json(&ids)), 0);
                }
                Op::Forget(ns, v) => {
                    let ns_rules = p.state().identity.namespaces().clone();
                    if let Ok(Ok(key)) = ns_rules.normalise(NAMES[ns], &format!("{}-{v}@x.io", NAMES[ns])) {
                        p.forget(&key, crate::testkit::erasure());
                    }
                }
            }
            check(p.state())?;
        }
        let _ = p.evict_journeys(std::time::Duration::from_secs(60));
        check(p.state())?;
    }
}

/// More profiles than the recent list holds; the newest are forgotten and
/// merged away until it must refill from the journeys; late events do not
/// push old profiles in.
#[test]
fn the_recent_list_refills_after_the_newest_profiles_go() {
    let mut p = processor_with(IdentityLimits::default());
    let cookie = |i: usize| json!({ "cookie_id": format!("k-{i}") });
    for i in 0..600 {
        p.process(&web(&format!("a{i}"), i as i64, cookie(i), "page_view", json!({})), 0)
            .expect("stitched");
    }
    check(p.state()).expect("after 600 profiles");
    let ns = p.state().identity.namespaces().clone();
    for i in (250..600).rev() {
        let key = ns
            .normalise("cookie_id", &format!("k-{i}"))
            .expect("valid")
            .expect("not blocked");
        assert!(!p.forget(&key, crate::testkit::erasure()).is_empty());
        check(p.state()).expect("after a forget");
    }
    // Merges: each event joins two older profiles; the later-founded one goes.
    for (n, i) in (0..120).step_by(2).enumerate() {
        let both = json!({ "cookie_id": format!("k-{i}"), "device_id": format!("d-{i}") });
        p.process(&web(&format!("m{n}a"), 700 + n as i64, both, "page_view", json!({})), 0)
            .expect("stitched");
        let join = json!({ "device_id": format!("d-{i}"), "email": format!("e{}@x.io", i + 1) });
        p.process(&web(&format!("m{n}b"), 700 + n as i64, join, "page_view", json!({})), 0)
            .expect("stitched");
        let other = json!({ "cookie_id": format!("k-{}", i + 1), "email": format!("e{}@x.io", i + 1) });
        p.process(
            &web(&format!("m{n}c"), 700 + n as i64, other, "page_view", json!({})),
            0,
        )
        .expect("stitched");
        check(p.state()).expect("after a merge");
    }
    // A late event for an old profile.
    p.process(&web("late", 3, cookie(200), "page_view", json!({})), 0)
        .expect("stitched");
    check(p.state()).expect("after a late event");
}

/// The dirty set counts in the state's size until a checkpoint takes it;
/// where no checkpoint runs it is not kept.
#[test]
fn the_dirty_set_counts_in_the_size_and_is_not_kept_without_checkpoints() {
    let mut p = processor_with(IdentityLimits::default());
    p.process(&web("a", 0, json!({"cookie_id": "c-a"}), "page_view", json!({})), 0)
        .expect("stitched");
    let with_dirty = p.state().size().bytes;
    assert_eq!(p.state().dirty_count(), 1);
    p.state().take_dirty();
    assert_eq!(p.state().size().bytes + DIRTY_ID_BYTES, with_dirty);
    assert_eq!(p.state().size(), p.state().recount());
    p.state().keep_dirty(false);
    p.process(&web("b", 1, json!({"cookie_id": "c-b"}), "page_view", json!({})), 0)
        .expect("stitched");
    assert_eq!(p.state().dirty_count(), 0, "not kept");
}
