//! What a journey costs for the most common customer: one login, as the
//! bench preloads (three identifiers, one event), through the real
//! processor (stitch, journey, churn evaluation, decisions).

use std::mem::size_of;
use std::sync::Arc;

use serde_json::json;

use crate::ids::Namespaces;
use crate::journey::*;
use crate::processor::Processor;
use crate::state::{journey_bytes, State};
use crate::testkit::{core_config, web};
use crate::time::EventTime;

fn one_login() -> (String, Journey) {
    let state = Arc::new(State::new(Arc::new(Namespaces::with_defaults())));
    let mut p = Processor::new(Arc::new(core_config()), state.clone());
    let ids = json!({"customer_id": "B000000001", "email": "bench.1@example.com", "cookie_id": "bc-000000001"});
    p.process(&web("pre-1", 0, ids, "login", json!({})), 0).unwrap();
    let (one_id, j) = state.all_journeys().pop().expect("one journey");
    (one_id.to_string(), (*j).clone())
}

#[test]
fn a_one_login_journey_allocates_only_what_it_uses() {
    // Session 6: 936 bytes, every part inline; session 7: 552 (a 640-byte
    // size class); session 8: compact lists, times and factors, within the
    // allocator's 448-byte class.
    assert!(size_of::<Journey>() <= 448, "Journey is {} bytes", size_of::<Journey>());
    let (_, j) = one_login();
    assert_eq!(j.total_events(), 1);
    let unused = [
        j.cart.is_allocated(),
        j.call.is_allocated(),
        j.complaint_times.is_allocated(),
        j.unresolved_times.is_allocated(),
        j.last_product_view.is_allocated(),
        j.contacts.is_allocated(),
        j.responses.is_allocated(),
        j.ignored.is_allocated(),
        j.last_action.is_allocated(),
        j.recent_actions.is_allocated(),
        j.consent.is_allocated(),
        j.local_clock.is_allocated(),
        j.clv.is_allocated(),
        j.last_checkout_start.is_allocated(),
        j.last_complaint.is_allocated(),
        j.last_sentiment.is_allocated(),
        j.last_service_issue.is_allocated(),
    ];
    assert_eq!(unused, [false; 17], "no part a login does not use is allocated");
    // Lists hold what they keep (a `List` has no spare capacity: compact.rs).
    assert_eq!(j.visits.len(), 1);
    assert_eq!(j.recent_events.len(), 1);
    assert_eq!(j.churn.history.len(), 1);
    assert_eq!(j.churn_examples.pending.len(), 1);
}

#[test]
fn the_estimate_follows_the_layout() {
    let (one_id, j) = one_login();
    // The state holds it in an `Arc`: one allocation of the strong and weak
    // counts and the journey (no padding between them at this alignment).
    assert!(std::mem::align_of::<Journey>() <= size_of::<usize>());
    let own = 2 * size_of::<std::sync::atomic::AtomicUsize>() + size_of::<Journey>() + ALLOC_OVERHEAD;
    let heap = j.heap_bytes();
    // The visit, the event (its id; the type is shared), the factors, the
    // churn point and its contribution, the example: nothing else.
    let expected = (size_of::<EventTime>() + ALLOC_OVERHEAD)
        + (size_of::<RecentEvent>() + ALLOC_OVERHEAD)
        + ("pre-1".len() + ALLOC_OVERHEAD)
        + (j.churn.factors.len() * 16 + ALLOC_OVERHEAD)
        + (size_of::<ChurnPoint>() + ALLOC_OVERHEAD)
        + (j.churn.history[0].contributions.len() * size_of::<Contribution>() + ALLOC_OVERHEAD)
        + (size_of::<ChurnExample>() + ALLOC_OVERHEAD);
    assert_eq!(heap, expected);
    assert_eq!(journey_bytes(&one_id, &j), own + one_id.len() + 16 + heap);
    assert!(journey_bytes(&one_id, &j) < 1_300, "{}", journey_bytes(&one_id, &j));

    // A part written and emptied again counts as it would read back.
    let mut k = j.clone();
    k.recent_actions.clear();
    assert!(k.recent_actions.is_allocated());
    assert_eq!(k.heap_bytes(), heap);
    let back: Journey = rmp_serde::from_slice(&rmp_serde::to_vec(&k).unwrap()).unwrap();
    assert!(!back.recent_actions.is_allocated());
    assert_eq!(back.heap_bytes(), heap);
}
