use std::collections::{BTreeMap, BTreeSet, HashMap};

use proptest::prelude::*;
use serde_json::{json, Map, Value};

use super::*;
use crate::event::Channel;
use crate::ids::Namespaces;
use crate::testkit::{call, ev, pos, web};

fn graph() -> IdentityGraph {
    IdentityGraph::new(Arc::new(Namespaces::with_defaults()))
}

fn key(g: &IdentityGraph, ns: &str, v: &str) -> IdKey {
    g.namespaces().normalise(ns, v).unwrap().unwrap()
}

#[test]
fn the_story_ends_on_one_one_id() {
    let g = graph();
    let e = |id: &str, m, ids| web(id, m, ids, "page_view", json!({}));
    g.stitch(&e("w1", 0, json!({"cookie_id": "c-1"}))).unwrap();
    let login = g
        .stitch(&e(
            "w2",
            5,
            json!({"cookie_id": "c-1", "email": "Ann@x.com", "customer_id": "C-1"}),
        ))
        .unwrap();
    g.stitch(&crate::testkit::app(
        "a1",
        60,
        json!({"device_id": "d-1", "customer_id": "C-1"}),
        "session_start",
        json!({}),
    ))
    .unwrap();
    g.stitch(&pos(
        "p1",
        120,
        json!({"loyalty_id": "L-1", "email": "ann@x.com", "card_token": "tok-1"}),
        20.0,
    ))
    .unwrap();
    let last = g
        .stitch(&call(
            "k1",
            200,
            json!({"phone": "+1 555 0100 200", "customer_id": "C-1"}),
            "billing",
            "resolved",
        ))
        .unwrap();
    assert_eq!(g.profile_count(), 1);
    assert_eq!(last.one_id, login.one_id);
    // The cookie came first, so its profile's One ID is the cookie's.
    assert_eq!(login.one_id, derive_one_id("cookie_id", "c-1"));
    for (ns, v) in [
        ("cookie_id", "c-1"),
        ("email", "ann@x.com"),
        ("customer_id", "C-1"),
        ("device_id", "d-1"),
        ("loyalty_id", "L-1"),
        ("phone", "+15550100200"),
    ] {
        assert_eq!(g.one_id_of(&key(&g, ns, v)), Some(login.one_id.clone()), "{ns}");
    }
    // card_token is recorded but not indexed.
    let p = g.profile(&login.one_id).unwrap();
    assert_eq!(p.households.len(), 1);
    assert_eq!(g.one_id_of(&key(&g, "card_token", "tok-1")), None);
}

#[test]
fn merge_keeps_the_earliest_profile_and_reports_it() {
    let g = graph();
    let a = g
        .stitch(&web("w1", 10, json!({"cookie_id": "c-1"}), "page_view", json!({})))
        .unwrap();
    let b = g
        .stitch(&web("w2", 0, json!({"cookie_id": "c-2"}), "page_view", json!({})))
        .unwrap();
    let m = g
        .stitch(&web(
            "w3",
            20,
            json!({"cookie_id": "c-1", "email": "a@b.c"}),
            "login",
            json!({}),
        ))
        .unwrap();
    assert_eq!(m.one_id, a.one_id);
    let m2 = g
        .stitch(&web(
            "w4",
            30,
            json!({"cookie_id": "c-2", "email": "a@b.c"}),
            "login",
            json!({}),
        ))
        .unwrap();
    // b was first seen at minute 0, earlier than a: b survives.
    assert_eq!(m2.one_id, b.one_id);
    let merged: Vec<_> = m2.merged().map(|(id, _)| id.clone()).collect();
    assert_eq!(merged, vec![a.one_id.clone()]);
    assert_eq!(g.profile_count(), 1);
    assert!(g.profile(&a.one_id).is_none());
    assert_eq!(g.profile(&b.one_id).unwrap().ids.len(), 3);
}

#[test]
fn a_shared_device_does_not_merge_two_customers() {
    let g = graph();
    let a = g
        .stitch(&web(
            "w1",
            0,
            json!({"device_id": "tablet", "customer_id": "C-1"}),
            "login",
            json!({}),
        ))
        .unwrap();
    let b = g
        .stitch(&web(
            "w2",
            1,
            json!({"device_id": "tablet", "customer_id": "C-2"}),
            "login",
            json!({}),
        ))
        .unwrap();
    assert_ne!(a.one_id, b.one_id);
    assert_eq!(b.one_id, derive_one_id("customer_id", "C-2"));
    assert_eq!(b.rejected.len(), 1);
    assert_eq!(b.rejected[0].reason, RejectReason::UniqueConflict);
    assert_eq!(b.rejected[0].kept_in, Some(a.one_id.clone()));
    assert_eq!(g.profile_count(), 2);
}

#[test]
fn a_conflicting_unique_value_on_the_event_is_refused() {
    let g = graph();
    let a = g
        .stitch(&web(
            "w1",
            0,
            json!({"customer_id": "C-1", "loyalty_id": "L-1"}),
            "login",
            json!({}),
        ))
        .unwrap();
    let b = g
        .stitch(&web(
            "w2",
            1,
            json!({"customer_id": "C-1", "loyalty_id": "L-2"}),
            "login",
            json!({}),
        ))
        .unwrap();
    assert_eq!(a.one_id, b.one_id, "attached to the strongest identifier's profile");
    assert_eq!(b.rejected.len(), 1);
    assert_eq!(g.one_id_of(&key(&g, "loyalty_id", "L-2")), None);
    let p = g.profile(&a.one_id).unwrap();
    assert_eq!(
        p.ids
            .iter()
            .filter(|k| g.namespaces().name(k.ns) == "loyalty_id")
            .count(),
        1
    );
}

#[test]
fn household_only_events_cannot_be_stitched() {
    let g = graph();
    let e = pos("p1", 0, json!({"card_token": "tok"}), 1.0);
    assert_eq!(g.stitch(&e), Err(StitchError::NoLinkableIdentifier));
    assert_eq!(g.profile_count(), 0);
}

#[test]
fn replaying_the_ops_rebuilds_the_same_graph() {
    let g = graph();
    let mut log = Vec::new();
    for (i, ids) in [
        json!({"cookie_id": "c-1"}),
        json!({"cookie_id": "c-2", "email": "x@y.z"}),
        json!({"cookie_id": "c-1", "email": "x@y.z", "customer_id": "C-9"}),
        json!({"device_id": "d-1", "customer_id": "C-9", "card_token": "t"}),
    ]
    .into_iter()
    .enumerate()
    {
        let s = g
            .stitch(&web(&format!("w{i}"), i as i64, ids, "login", json!({})))
            .unwrap();
        log.extend(s.ops);
    }
    let replica = graph();
    for op in &log {
        replica.apply(op);
    }
    assert_eq!(replica.partition(), g.partition());
    let one = g.partition().into_keys().next().unwrap();
    assert_eq!(replica.profile(&one), g.profile(&one));
}

// ---- properties -------------------------------------------------------------

/// An event: indexes into small pools of cookies, devices and emails (no
/// unique namespaces), so every link is allowed and the partition must be the
/// connected components of the co-occurrence graph.
fn free_event() -> impl Strategy<Value = Vec<(usize, usize)>> {
    prop::collection::vec((0usize..3, 0usize..6), 1..4)
}

fn ids_json(parts: &[(usize, usize)], names: &[&str]) -> Value {
    let mut m = Map::new();
    for (ns, v) in parts {
        m.insert(names[*ns].to_string(), Value::from(format!("{}-{v}@x.io", names[*ns])));
    }
    Value::Object(m)
}

fn components(events: &[Vec<(usize, usize)>], names: &[&str], g: &IdentityGraph) -> BTreeSet<BTreeSet<IdKey>> {
    let mut parent: HashMap<IdKey, IdKey> = HashMap::new();
    fn find(p: &mut HashMap<IdKey, IdKey>, k: &IdKey) -> IdKey {
        let up = p.get(k).cloned().unwrap_or_else(|| k.clone());
        if &up == k {
            return up;
        }
        let root = find(p, &up);
        p.insert(k.clone(), root.clone());
        root
    }
    for e in events {
        let keys: Vec<IdKey> = e
            .iter()
            .map(|(ns, v)| key(g, names[*ns], &format!("{}-{v}@x.io", names[*ns])))
            .collect();
        for k in &keys {
            parent.entry(k.clone()).or_insert_with(|| k.clone());
        }
        for w in keys.windows(2) {
            let (a, b) = (find(&mut parent, &w[0]), find(&mut parent, &w[1]));
            parent.insert(a, b);
        }
    }
    let keys: Vec<IdKey> = parent.keys().cloned().collect();
    let mut groups: BTreeMap<IdKey, BTreeSet<IdKey>> = BTreeMap::new();
    for k in keys {
        let r = find(&mut parent, &k);
        groups.entry(r).or_default().insert(k);
    }
    groups.into_values().collect()
}

fn partition_sets(g: &IdentityGraph) -> BTreeSet<BTreeSet<IdKey>> {
    g.partition().into_values().map(|v| v.into_iter().collect()).collect()
}

proptest! {
    #[test]
    fn without_unique_namespaces_any_order_gives_the_connected_components(
        events in prop::collection::vec(free_event(), 1..25),
        seed in any::<u64>(),
    ) {
        let names = ["cookie_id", "device_id", "email"];
        // A JSON object keeps one value per namespace: the last one.
        let events: Vec<Vec<(usize, usize)>> = events
            .iter()
            .map(|e| e.iter().copied().collect::<BTreeMap<usize, usize>>().into_iter().collect())
            .collect();
        let run = |order: &[usize]| {
            let g = graph();
            for &i in order {
                let e = ev(Channel::Web, json!({"event_id": format!("e{i}"), "event_type": "page_view",
                    "occurred_at": crate::testkit::at(i as i64), "session_id": "s",
                    "identifiers": ids_json(&events[i], &names)}));
                g.stitch(&e).unwrap();
            }
            g
        };
        let forward: Vec<usize> = (0..events.len()).collect();
        let mut shuffled = forward.clone();
        // Fisher-Yates with a simple LCG from the seed.
        let mut s = seed | 1;
        for i in (1..shuffled.len()).rev() {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            shuffled.swap(i, (s >> 33) as usize % (i + 1));
        }
        let a = run(&forward);
        let b = run(&shuffled);
        let expected = components(&events, &names, &a);
        prop_assert_eq!(partition_sets(&a), expected.clone());
        prop_assert_eq!(partition_sets(&b), expected);
        // Replaying the same order gives the same One IDs.
        prop_assert_eq!(run(&forward).partition(), a.partition());
    }

    #[test]
    fn no_profile_ever_holds_two_values_of_a_unique_namespace(
        events in prop::collection::vec(prop::collection::vec((0usize..4, 0usize..4), 1..4), 1..30),
    ) {
        let names = ["cookie_id", "device_id", "customer_id", "loyalty_id"];
        let g = graph();
        for (i, e) in events.iter().enumerate() {
            let ids = ids_json(e, &names);
            g.stitch(&web(&format!("e{i}"), i as i64, ids, "login", json!({}))).unwrap();
        }
        for ids in g.partition().values() {
            for unique in ["customer_id", "loyalty_id"] {
                let ns = g.namespaces().lookup(unique).unwrap();
                prop_assert!(ids.iter().filter(|k| k.ns == ns).count() <= 1);
            }
        }
        // Every identifier is in exactly one profile.
        let total: usize = g.partition().values().map(Vec::len).sum();
        prop_assert_eq!(total, g.identifier_count());
    }
}
