use std::collections::HashSet;
use std::sync::Arc;

use serde_json::json;

use super::super::{CoreSnapshot, Processor, Timer};
use crate::identity::OneId;
use crate::ids::{IdKey, Namespaces};
use crate::state::State;
use crate::testkit::{core_config, product, web};

/// A processor with `n` customers, each with a journey; every third also
/// has a cart, so a timer home.
fn busy(n: i64) -> Processor {
    let mut p = Processor::new(
        Arc::new(core_config()),
        Arc::new(State::new(Arc::new(Namespaces::with_defaults()))),
    );
    for i in 0..n {
        let ids = json!({"customer_id": format!("W{i}"), "cookie_id": format!("wc-{i}")});
        let (kind, props) = if i % 3 == 0 {
            ("add_to_cart", product("a", 10.0))
        } else {
            ("login", json!({}))
        };
        p.process(&web(&format!("e{i}"), i, ids, kind, props), 0)
            .expect("processed");
    }
    p
}

fn read(p: &Processor) -> CoreSnapshot {
    let bytes = rmp_serde::to_vec(&p.snapshot()).expect("serialises");
    rmp_serde::from_slice(&bytes).expect("reads back")
}

/// `keys` in the order of `profiles`, each once, those of no profile last.
fn assert_in_profile_order(keys: &[OneId], profiles: &[OneId], what: &str) {
    let distinct: HashSet<&OneId> = keys.iter().collect();
    assert_eq!(distinct.len(), keys.len(), "{what}: each once");
    let of_profiles: HashSet<&OneId> = profiles.iter().collect();
    let expected: Vec<&OneId> = profiles.iter().filter(|o| distinct.contains(o)).collect();
    let head: Vec<&OneId> = keys.iter().take(expected.len()).collect();
    assert_eq!(head, expected, "{what}: the profiles' order first");
    assert!(
        keys[expected.len()..].iter().all(|k| !of_profiles.contains(k)),
        "{what}: then only those of no profile"
    );
}

#[test]
fn journeys_and_timer_homes_are_written_in_the_profiles_order() {
    let p = busy(200);
    let snap = read(&p);
    let profiles = snap.profile_one_ids();
    assert_eq!(profiles.len(), 200);

    let journeys: Vec<OneId> = snap.journeys.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(journeys.len(), p.state().journeys.len());
    assert_in_profile_order(&journeys, &profiles, "journeys");

    let homes: Vec<OneId> = snap.timer_homes.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(homes.len(), p.timers.home_count());
    assert!(homes.len() >= 60, "carts arm timers: {}", homes.len());
    assert_in_profile_order(&homes, &profiles, "timer homes");
}

#[test]
fn a_journey_or_timer_home_of_no_profile_is_written_after_the_others_and_restores() {
    let mut p = busy(30);
    let (home, timers) = {
        let (h, t) = p.timers.entries().next().expect("a timer home");
        // The same timers for another identifier: a timer is armed once.
        let other = |(due, kind, key): &Timer| (*due, *kind, IdKey::new(key.ns(), "orphan"));
        (h.clone(), t.iter().map(other).collect::<Vec<_>>())
    };
    let orphan = OneId::from("no-such-profile");
    let journey = p.state().journeys.get(&home).expect("its journey").value().clone();
    p.state().journeys.insert(orphan.clone(), journey);
    p.timers.replace(orphan.clone(), timers);

    let snap = read(&p);
    let profiles = snap.profile_one_ids();
    let journeys: Vec<OneId> = snap.journeys.iter().map(|(k, _)| k.clone()).collect();
    let homes: Vec<OneId> = snap.timer_homes.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(journeys.last(), Some(&orphan));
    assert_eq!(homes.last(), Some(&orphan));
    assert_in_profile_order(&journeys, &profiles, "journeys");
    assert_in_profile_order(&homes, &profiles, "timer homes");

    let mut restored = Processor::new(
        Arc::new(core_config()),
        Arc::new(State::new(Arc::new(Namespaces::with_defaults()))),
    );
    restored.restore(snap, 0).expect("restores");
    assert!(restored.state().journeys.contains_key(&orphan));
    assert_eq!(restored.timers.homes_sorted(), p.timers.homes_sorted());
}
