//! Freezing changes how journeys are held, never what the engine does: the
//! same events through a processor whose idle journeys are frozen after
//! every step give the same outputs, journeys, views, sizes and changelog
//! as without; a frozen journey reads back equal; one a checkpoint still
//! waits for stays live.
//!
//! In: the state proptest's operations (`tests.rs`), outcomes and timers.
//! Out: assertions only.

use std::time::Duration;

use proptest::prelude::*;
use serde_json::json;

use super::tests::{check, event, ids_json, op, processor_with, Op, NAMES};
use super::*;
use crate::event::ActionOutcome;
use crate::ids::IdentityLimits;
use crate::output::Output;
use crate::processor::{OutcomeEffect, Processor};
use crate::testkit::web;
use crate::vocab::Outcome;

/// A cutoff after every event of the tests: every journey is idle.
const LATER: EventTime = EventTime(i64::MAX / 2);

/// Every journey, the recent list, the counts, and each profile's view
/// (not the bytes: frozen journeys hold fewer).
fn everything(p: &Processor) -> String {
    let s = p.state();
    let mut journeys = s.all_journeys();
    journeys.sort_by(|a, b| a.0.cmp(&b.0));
    let views: Vec<_> = journeys
        .iter()
        .map(|(id, _)| serde_json::to_string(&s.view_one_id(id)).unwrap_or_default())
        .collect();
    let size = s.size();
    let counts = (size.profiles, size.identifiers, size.journeys);
    format!("{journeys:?}\n{:?}\n{counts:?}\n{views:?}", s.recent(50))
}

fn frozen(s: &State) -> usize {
    s.journeys.iter().filter(|e| e.value().is_frozen()).count()
}

fn outputs_of(released: Vec<crate::processor::Released>) -> Vec<String> {
    released
        .into_iter()
        .flat_map(|r| r.result.map(|p| p.outputs).unwrap_or_default())
        .map(|o: Output| format!("{o:?}"))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn freezing_idle_journeys_changes_no_output_journey_or_changelog(ops in prop::collection::vec(op(), 1..60)) {
        let limits = IdentityLimits { max_identifiers_per_profile: 4, ..Default::default() };
        let (mut a, mut b) = (processor_with(limits.clone()), processor_with(limits));
        for (i, op) in ops.into_iter().enumerate() {
            match op {
                Op::Event(minute, kind, ids) => {
                    let e = event(i, minute, kind, ids_json(&ids));
                    let (x, y) = (a.offer(e.clone(), 0, i as u64, 0), b.offer(e, 0, i as u64, 0));
                    prop_assert_eq!(outputs_of(x), outputs_of(y));
                }
                Op::Forget(ns, v) => {
                    let rules = a.state().identity.namespaces().clone();
                    if let Ok(Ok(key)) = rules.normalise(NAMES[ns], &format!("{}-{v}@x.io", NAMES[ns])) {
                        let x = a.forget(&key, crate::testkit::erasure());
                        let y = b.forget(&key, crate::testkit::erasure());
                        prop_assert_eq!(format!("{x:?}"), format!("{y:?}"));
                    }
                }
            }
            // What a checkpoint writes is the same, and freezing adds nothing.
            prop_assert_eq!(a.state().take_dirty(), b.state().take_dirty());
            b.state().freeze_idle(LATER);
            prop_assert_eq!(frozen(b.state()), b.state().journeys.len());
            prop_assert_eq!(b.state().dirty_count(), 0);
            check(b.state())?;
            prop_assert_eq!(everything(&a), everything(&b));
        }
        // A snapshot keeps them frozen (format 6): the restored processor
        // holds what b holds, in the same form, and goes on like it.
        b.state().freeze_idle(LATER);
        let mut c = restored(&b, limits_of(&b));
        prop_assert_eq!(frozen(c.state()), frozen(b.state()));
        check(c.state())?;
        prop_assert_eq!(everything(&c), everything(&b));
        let x = outputs_of(a.tick(10_000_000));
        prop_assert_eq!(&x, &outputs_of(c.tick(10_000_000)));
        prop_assert_eq!(x, outputs_of(b.tick(10_000_000)));
        let evicted = a.evict_journeys(Duration::from_secs(60));
        prop_assert_eq!(evicted, b.evict_journeys(Duration::from_secs(60)));
        prop_assert_eq!(a.state().take_dirty(), b.state().take_dirty());
        check(b.state())?;
        prop_assert_eq!(everything(&a), everything(&b));
    }
}

fn limits_of(p: &Processor) -> IdentityLimits {
    p.state().identity.namespaces().limits().clone()
}

/// `p` through a snapshot: serialised as the engine writes it, read back
/// into a new processor.
fn restored(p: &Processor, limits: IdentityLimits) -> Processor {
    let bytes = rmp_serde::to_vec(&p.snapshot()).expect("serialises");
    let snap: crate::processor::CoreSnapshot = rmp_serde::from_slice(&bytes).expect("reads back");
    let mut q = processor_with(limits);
    q.restore(snap, 0).expect("restores");
    q
}

#[test]
fn a_snapshot_writes_frozen_journeys_as_they_are_and_smaller() {
    let mut p = processor_with(IdentityLimits::default());
    for i in 0..20 {
        let ids = json!({"customer_id": format!("B{i}"), "cookie_id": format!("bc-{i}")});
        p.process(&web(&format!("e{i}"), i, ids, "login", json!({})), 0)
            .expect("stitched");
    }
    p.state().take_dirty();
    let live = rmp_serde::to_vec(&p.snapshot()).expect("serialises").len();
    assert_eq!(p.state().freeze_idle(LATER), 20);
    let frozen_bytes = rmp_serde::to_vec(&p.snapshot()).expect("serialises").len();
    let q = restored(&p, IdentityLimits::default());
    assert_eq!(frozen(q.state()), 20, "restored frozen, not decoded");
    assert_eq!(everything(&q), everything(&p));
    assert_eq!(q.state().size(), q.state().recount());
    // The dictionary (32 KB) is written once; each journey is smaller.
    let dict = stored::dictionary().len();
    assert!(
        frozen_bytes - dict < live,
        "{frozen_bytes} bytes frozen ({dict} of them the dictionary), {live} live"
    );
}

#[test]
fn a_journey_a_checkpoint_waits_for_stays_live_until_taken() {
    let mut p = processor_with(IdentityLimits::default());
    p.process(&web("a", 0, json!({"cookie_id": "c-a"}), "page_view", json!({})), 0)
        .expect("stitched");
    assert_eq!(p.state().freeze_idle(LATER), 0, "dirty: the barrier reads it live");
    p.state().take_dirty();
    assert_eq!(p.state().freeze_idle(LATER), 1);
    assert_eq!(p.state().freeze_idle(LATER), 0, "frozen once");
    assert_eq!((p.state().size().frozen, p.state().size()), (1, p.state().recount()));
    // Not idle after the cutoff: stays live.
    p.process(&web("b", 5, json!({"cookie_id": "c-b"}), "page_view", json!({})), 0)
        .expect("stitched");
    p.state().take_dirty();
    assert_eq!(
        p.state().freeze_idle(EventTime(0)),
        0,
        "an event at minute 5 is after the cutoff"
    );
}

#[test]
fn a_frozen_value_reads_back_equal_and_smaller() {
    let mut p = processor_with(IdentityLimits::default());
    let ids = json!({"customer_id": "B1", "email": "b.1@example.com", "cookie_id": "bc-1"});
    p.process(&web("pre-1", 0, ids, "login", json!({})), 0)
        .expect("stitched");
    let (one_id, live) = p.state().all_journeys().pop().expect("one journey");
    let s = Stored::freeze(&live).expect("encodes");
    assert!(s.is_frozen());
    assert_eq!(s.journey(), Some(live.clone()));
    assert_eq!(s.last_seen(), live.last_seen);
    assert_eq!(s.evictable(LATER), live.evictable(LATER));
    assert!(s.evictable(LATER), "a login keeps a visit: detail");
    let (was, now) = (stored_bytes(&one_id, &Stored::Live(live)), stored_bytes(&one_id, &s));
    assert!(now * 3 < was, "{now} bytes frozen, {was} live");
}

/// Cookie `c` adds one item to its cart at `minute`.
fn cart(id: &str, minute: i64, c: &str) -> crate::event::ChannelEvent {
    web(
        id,
        minute,
        json!({"cookie_id": c}),
        "add_to_cart",
        crate::testkit::product("s", 9.0),
    )
}

#[test]
fn outcomes_and_merges_thaw_what_they_change() {
    let mut p = processor_with(IdentityLimits::default());
    let mut outputs = Vec::new();
    // The third event, hours later, takes the watermark past both carts' timers.
    let later = web("z", 600, json!({"cookie_id": "c-3"}), "page_view", json!({}));
    for (i, e) in [cart("a", 0, "c-1"), cart("b", 1, "c-2"), later]
        .into_iter()
        .enumerate()
    {
        outputs.extend(outputs_of(p.offer(e, 0, i as u64, 0)));
    }
    outputs.extend(outputs_of(p.tick(10_000_000)));
    let action = p.state().all_journeys().into_iter().find_map(|(id, j)| {
        j.recent_actions
            .iter()
            .find(|r| !r.held_out)
            .map(|r| (id, r.action_id.clone()))
    });
    p.state().take_dirty();
    assert_eq!(p.state().freeze_idle(LATER), 3);
    let Some((one_id, action_id)) = action else {
        panic!("no decision to learn from: {outputs:?}")
    };
    let o = ActionOutcome {
        action_id,
        one_id: one_id.to_string(),
        outcome: Outcome::Clicked,
        at: "2026-01-01T00:00:00Z".into(),
    };
    p.state().take_thawed();
    assert!(matches!(p.outcome(&o), OutcomeEffect::Learned));
    assert_eq!(frozen(p.state()), 2, "the outcome thawed its journey");
    assert_eq!(p.state().take_thawed(), 1, "one thaw counted");
    assert_eq!(p.state().take_thawed(), 0, "and taken");
    assert_eq!(p.state().size(), p.state().recount());
    assert_eq!(p.state().take_dirty(), vec![one_id.clone()]);
    let j = p.state().journey(&one_id).expect("journey");
    assert!(j.recent_actions.iter().any(|r| r.outcome == Some(Outcome::Clicked)));
    // One event with both cookies merges the two profiles, both frozen.
    p.state().freeze_idle(LATER);
    let both = json!({"cookie_id": "c-1", "email": "m@x.io"});
    p.process(&web("c", 2, both, "page_view", json!({})), 0)
        .expect("stitched");
    let join = json!({"cookie_id": "c-2", "email": "m@x.io"});
    p.process(&web("d", 3, join, "page_view", json!({})), 0)
        .expect("stitched");
    let all = p.state().all_journeys();
    assert_eq!(all.len(), 2, "c-1 and c-2 merged; c-3 apart");
    assert_eq!(p.state().take_thawed(), 2, "the merge thawed both cookies' journeys");
    assert!(all.iter().any(|(_, j)| j.total_events() == 4));
    assert_eq!(p.state().size(), p.state().recount());
}

/// A timer whose condition no longer holds (the cart changed after it was
/// armed) decides nothing and changes nothing: it leaves a frozen journey
/// frozen, where it used to take it out, thaw it and put it back (session
/// 36). The check that still holds thaws it and runs.
#[test]
fn a_stale_cart_check_leaves_its_frozen_journey_frozen() {
    let mut p = processor_with(IdentityLimits::default());
    // The cart changes at minute 10: the check armed at minute 0 (due at
    // 30) is stale, the one armed at 10 is due at 40.
    p.process(&cart("a", 0, "c-1"), 0).expect("stitched");
    p.process(&cart("b", 10, "c-1"), 0).expect("stitched");
    p.state().take_dirty();
    assert_eq!(p.state().freeze_idle(LATER), 1);
    p.state().take_thawed();
    // Another customer's event at minute 35 takes event time past the
    // stale check only.
    let other = |id: &str, m| web(id, m, json!({"cookie_id": "c-2"}), "page_view", json!({}));
    let out = p.process(&other("z", 35), 0).expect("stitched");
    assert!(
        out.outputs.is_empty(),
        "the stale check decides nothing: {:?}",
        out.outputs
    );
    assert_eq!(p.state().take_thawed(), 0, "nothing thawed");
    assert_eq!(frozen(p.state()), 1, "c-1's journey stays frozen");
    assert_eq!(p.state().size(), p.state().recount());
    p.process(&other("y", 45), 0).expect("stitched");
    assert_eq!(p.state().take_thawed(), 1, "the live check took c-1's journey");
    assert_eq!(frozen(p.state()), 0);
}
