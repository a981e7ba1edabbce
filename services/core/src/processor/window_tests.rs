//! The dedupe window in the processor: duplicates inside it are dropped,
//! events older than it are refused, expired keys leave the memory (and the
//! size estimate), and the window survives a snapshot.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::{CoreConfig, CoreSnapshot, Processor};
use crate::ids::Namespaces;
use crate::state::State;
use crate::testkit::{core_config, web};

const DAY_MIN: i64 = 24 * 60;

fn processor(window_days: u64) -> Processor {
    let cfg = CoreConfig {
        dedupe_window: Duration::from_secs(window_days * 86_400),
        ..core_config()
    };
    Processor::new(
        Arc::new(cfg),
        Arc::new(State::new(Arc::new(Namespaces::with_defaults()))),
    )
}

fn view(id: &str, day: i64) -> crate::event::ChannelEvent {
    web(
        id,
        day * DAY_MIN,
        json!({"cookie_id": format!("c-{id}")}),
        "page_view",
        json!({}),
    )
}

#[test]
fn a_copy_inside_the_window_is_a_duplicate_and_an_event_older_than_it_is_refused() {
    let mut p = processor(8);
    assert!(!p.process(&view("a", 0), 0).unwrap().duplicate);
    assert!(p.process(&view("a", 0), 0).unwrap().duplicate);
    // Time moves on 7 days: "a" is still remembered.
    p.process(&view("b", 7), 0).unwrap();
    assert!(p.process(&view("a", 0), 0).unwrap().duplicate);
    // 20 days on: "a" is older than the window; it is refused, not applied again.
    p.process(&view("c", 20), 0).unwrap();
    let again = view("a", 0);
    assert!(p.too_late(&again));
    let r = p.process(&again, 0).unwrap();
    assert!(r.too_late && !r.duplicate && r.one_id.is_none());
    // A new event 5 days late is inside the window: applied.
    let late = view("d", 15);
    assert!(!p.too_late(&late));
    assert!(p.process(&late, 0).unwrap().one_id.is_some());
}

#[test]
fn expired_keys_leave_the_memory_and_the_size_estimate() {
    let mut p = processor(2);
    for i in 0..200 {
        p.process(&view(&format!("e{i}"), 0), 0).unwrap();
    }
    assert_eq!(p.dedupe_keys(), 200);
    let before = p.state().size().bytes;
    // Ten more events of one known customer, ten days on.
    for i in 0..10 {
        let ev = web(
            &format!("later{i}"),
            10 * DAY_MIN,
            json!({"cookie_id": "c-e0"}),
            "page_view",
            json!({}),
        );
        p.process(&ev, 0).unwrap();
    }
    // The day-0 bucket is gone; the ten new keys stay.
    assert_eq!(p.dedupe_keys(), 10);
    assert!(p.state().size().bytes < before, "the estimate follows");
    assert_eq!(p.state().size(), p.state().recount());
    // Unbounded (0): nothing goes.
    let mut q = processor(0);
    for i in 0..50 {
        q.process(&view(&format!("e{i}"), i * 30), 0).unwrap();
    }
    assert_eq!(q.dedupe_keys(), 50);
}

#[test]
fn the_window_survives_a_snapshot() {
    let mut p = processor(8);
    p.process(&view("a", 0), 0).unwrap();
    p.process(&view("b", 3), 0).unwrap();
    let bytes = rmp_serde::to_vec(&p.snapshot()).unwrap();
    let snap: CoreSnapshot = rmp_serde::from_slice(&bytes).unwrap();
    let mut q = processor(8);
    q.restore(snap, 0).unwrap();
    assert_eq!(q.dedupe_keys(), 2);
    assert!(q.process(&view("a", 0), 0).unwrap().duplicate);
    assert!(q.process(&view("b", 3), 0).unwrap().duplicate);
    assert_eq!(q.state().size(), q.state().recount());
}
