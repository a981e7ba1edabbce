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

/// A graph without the shared-device rule: every co-occurrence links.
fn linking_graph() -> IdentityGraph {
    let limits = crate::ids::IdentityLimits {
        shared_device_max_persons: 1000,
        ..Default::default()
    };
    graph_with(limits, &[])
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
    assert_eq!(login.one_id, g.derive_one_id("cookie_id", "c-1"));
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
    assert_eq!(p.households().len(), 1);
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
    assert_eq!(g.profile(&b.one_id).unwrap().ids().len(), 3);
}

#[test]
fn a_shared_device_stops_linking_and_leaves_its_profile() {
    let g = graph();
    let login = |id: &str, m, ids| web(id, m, ids, "login", json!({}));
    let a = g
        .stitch(&login("w1", 0, json!({"device_id": "tablet", "customer_id": "C-1"})))
        .unwrap();
    assert_eq!(g.one_id_of(&key(&g, "device_id", "tablet")), Some(a.one_id.clone()));
    // A second customer on the tablet: more than one customer_id (K = 1).
    let b = g
        .stitch(&login("w2", 1, json!({"device_id": "tablet", "customer_id": "C-2"})))
        .unwrap();
    assert_ne!(a.one_id, b.one_id);
    assert_eq!(b.one_id, g.derive_one_id("customer_id", "C-2"));
    assert_eq!(b.shared, vec![key(&g, "device_id", "tablet")]);
    assert_eq!(b.rejected.len(), 1);
    assert_eq!(b.rejected[0].reason, RejectReason::SharedDevice);
    // The tablet no longer speaks for C-1: it has a profile of its own.
    let tablet = g.one_id_of(&key(&g, "device_id", "tablet")).unwrap();
    assert_ne!(tablet, a.one_id);
    assert_ne!(tablet, b.one_id);
    assert_eq!(b.rejected[0].kept_in, Some(tablet.clone()));
    assert_eq!(g.profile(&a.one_id).unwrap().ids(), [key(&g, "customer_id", "C-1")]);
    // Anonymous use of the tablet lands on the tablet's own profile.
    let kiosk = g
        .stitch(&web("w3", 2, json!({"device_id": "tablet"}), "page_view", json!({})))
        .unwrap();
    assert_eq!(kiosk.one_id, tablet);
    // And it never links a person again.
    let c = g
        .stitch(&login("w4", 3, json!({"device_id": "tablet", "email": "c@x.io"})))
        .unwrap();
    assert_ne!(c.one_id, kiosk.one_id);
    assert_eq!(c.rejected[0].reason, RejectReason::SharedDevice);
    assert_eq!(g.profile_count(), 4);
}

#[test]
fn a_device_with_one_person_keeps_linking() {
    let g = graph();
    for (i, ids) in [
        json!({"device_id": "d-1", "email": "a@x.io"}),
        json!({"device_id": "d-1", "customer_id": "C-1"}),
        json!({"device_id": "d-1", "email": "a@x.io", "phone": "+44 20 7946 0000"}),
    ]
    .into_iter()
    .enumerate()
    {
        let s = g
            .stitch(&web(&format!("w{i}"), i as i64, ids, "login", json!({})))
            .unwrap();
        assert!(s.shared.is_empty());
    }
    assert_eq!(g.profile_count(), 1);
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
    assert_eq!(b.rejected[0].reason, RejectReason::UniqueConflict);
    // The refused card founds its own profile instead of joining C-1's.
    let own = g.one_id_of(&key(&g, "loyalty_id", "L-2")).unwrap();
    assert_ne!(own, a.one_id);
    assert_eq!(b.rejected[0].kept_in, Some(own));
    let p = g.profile(&a.one_id).unwrap();
    assert_eq!(
        p.ids()
            .iter()
            .filter(|k| g.namespaces().name(k.ns()) == "loyalty_id")
            .count(),
        1
    );
}

fn graph_with(limits: crate::ids::IdentityLimits, caps: &[(&str, u16)]) -> IdentityGraph {
    let rules = Namespaces::default_rules()
        .into_iter()
        .map(|mut r| {
            r.max_per_profile = caps.iter().find(|(n, _)| *n == r.name).map(|(_, c)| *c);
            r
        })
        .collect();
    let ns = Namespaces::new(rules, Default::default())
        .unwrap()
        .with_limits(limits)
        .unwrap();
    IdentityGraph::new(Arc::new(ns))
}

#[test]
fn caps_drop_the_oldest_device_link_and_refuse_persons_that_do_not_fit() {
    let limits = crate::ids::IdentityLimits {
        max_identifiers_per_profile: 4,
        ..Default::default()
    };
    let g = graph_with(limits, &[("cookie_id", 2)]);
    let e = |i: i64, ids| web(&format!("w{i}"), i, ids, "page_view", json!({}));
    g.stitch(&e(0, json!({"email": "a@x.io", "cookie_id": "c-0"}))).unwrap();
    g.stitch(&e(1, json!({"email": "a@x.io", "cookie_id": "c-1"}))).unwrap();
    let s = g.stitch(&e(2, json!({"email": "a@x.io", "cookie_id": "c-2"}))).unwrap();
    assert_eq!(s.dropped, 1);
    assert_eq!(
        g.one_id_of(&key(&g, "cookie_id", "c-0")),
        None,
        "the oldest cookie went"
    );
    assert_eq!(g.one_id_of(&key(&g, "cookie_id", "c-2")), Some(s.one_id.clone()));
    // Two more person identifiers fill the profile (4 in all, with 2 cookies:
    // a cookie is dropped for each).
    g.stitch(&e(3, json!({"email": "a@x.io", "customer_id": "C-1"})))
        .unwrap();
    g.stitch(&e(4, json!({"email": "a@x.io", "phone": "+44 20 7946 0001"})))
        .unwrap();
    let p = g.profile(&s.one_id).unwrap();
    assert_eq!(p.ids().len(), 4);
    // A fourth person fits: the last cookie makes room.
    let s = g
        .stitch(&e(5, json!({"email": "a@x.io", "loyalty_id": "L-1"})))
        .unwrap();
    assert!(s.rejected.is_empty());
    assert_eq!(s.dropped, 1);
    // Persons are never dropped: a fifth is refused and stands alone.
    let s = g
        .stitch(&e(6, json!({"email": "a@x.io", "phone": "+44 20 7946 0002"})))
        .unwrap();
    assert_eq!(s.rejected.len(), 1);
    assert_eq!(s.rejected[0].reason, RejectReason::ProfileFull);
    let phone = g.one_id_of(&key(&g, "phone", "+44 20 7946 0002")).unwrap();
    assert_ne!(phone, s.one_id);
    assert_eq!(g.profile(&s.one_id).unwrap().ids().len(), 4);
}

#[test]
fn a_late_event_rebuilds_its_component_as_if_it_had_come_in_order() {
    let events = [
        web(
            "w1",
            10,
            json!({"email": "a@x.io", "customer_id": "C-1"}),
            "login",
            json!({}),
        ),
        web(
            "w2",
            20,
            json!({"email": "a@x.io", "customer_id": "C-2"}),
            "login",
            json!({}),
        ),
        web(
            "w0",
            5,
            json!({"email": "a@x.io", "cookie_id": "c-9"}),
            "page_view",
            json!({}),
        ),
    ];
    let in_order = graph();
    for i in [2, 0, 1] {
        in_order.stitch(&events[i]).unwrap();
    }
    let late = graph();
    let mut rebuilt = false;
    for e in &events {
        rebuilt |= late.stitch(e).unwrap().rebuilt;
    }
    assert!(rebuilt);
    assert_eq!(late.partition(), in_order.partition());
    // In order, the email first met C-1: C-2 was refused and stands alone.
    let c1 = late.one_id_of(&key(&late, "customer_id", "C-1")).unwrap();
    assert_eq!(late.one_id_of(&key(&late, "email", "a@x.io")), Some(c1.clone()));
    assert_eq!(
        c1,
        late.derive_one_id("email_sha256", &crate::ids::sha256_hex("a@x.io"))
    );
}

#[test]
fn forget_erases_the_profile_and_replays_do_not_bring_it_back() {
    let g = graph();
    let first = web(
        "w1",
        0,
        json!({"email": "a@x.io", "cookie_id": "c-1"}),
        "login",
        json!({}),
    );
    let other = web(
        "w2",
        1,
        json!({"email": "b@x.io", "cookie_id": "c-2"}),
        "login",
        json!({}),
    );
    let a = g.stitch(&first).unwrap();
    let b = g.stitch(&other).unwrap();
    let (op, gone) = g.forget(&key(&g, "cookie_id", "c-1")).unwrap();
    assert_eq!(
        op,
        IdentityOp::Forget {
            one_id: a.one_id.clone()
        }
    );
    assert_eq!(gone.ids.len(), 2);
    assert!(g.profile(&a.one_id).is_none());
    assert_eq!(g.one_id_of(&key(&g, "email", "a@x.io")), None);
    assert!(g.is_suppressed(&key(&g, "email", "a@x.io")));
    assert!(g.forget(&key(&g, "cookie_id", "c-1")).is_none());
    // The same event again, and a new one that mixes a forgotten identifier with a new one.
    assert_eq!(g.stitch(&first), Err(StitchError::Forgotten));
    let mixed = g
        .stitch(&web(
            "w3",
            2,
            json!({"email": "a@x.io", "cookie_id": "c-3"}),
            "login",
            json!({}),
        ))
        .unwrap();
    assert_eq!(mixed.one_id, g.derive_one_id("cookie_id", "c-3"));
    assert_eq!(g.one_id_of(&key(&g, "email", "a@x.io")), None);
    assert_eq!(g.profile(&b.one_id).unwrap().ids().len(), 2, "others untouched");
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
            let g = linking_graph();
            for &i in order {
                let e = ev(Channel::Web, json!({"event_id": format!("e{i}"), "event_type": "page_view",
                    "occurred_at": crate::testkit::at(i as i64), "session_id": "s",
                    "identifiers": ids_json(&events[i], &names)}));
                g.stitch(&e).unwrap();
            }
            g
        };
        let forward: Vec<usize> = (0..events.len()).collect();
        let a = run(&forward);
        let b = run(&shuffle(forward.clone(), seed));
        let expected = components(&events, &names, &a);
        prop_assert_eq!(partition_sets(&a), expected.clone());
        prop_assert_eq!(partition_sets(&b), expected);
        prop_assert_eq!(b.partition(), a.partition(), "same One IDs");
        // Replaying the same order gives the same One IDs.
        prop_assert_eq!(run(&forward).partition(), a.partition());
    }

    #[test]
    fn with_merge_protection_any_order_gives_the_same_profiles_and_one_ids(
        events in prop::collection::vec(
            (0i64..8, prop::collection::vec((0usize..5, 0usize..4), 1..4)), 1..30),
        seed in any::<u64>(),
    ) {
        check_order_independence(&events, seed, graph)?;
    }

    #[test]
    fn with_caps_any_order_gives_the_same_profiles_and_one_ids(
        events in prop::collection::vec(
            (0i64..8, prop::collection::vec((0usize..5, 0usize..4), 1..4)), 1..30),
        seed in any::<u64>(),
    ) {
        let capped = || {
            let limits = crate::ids::IdentityLimits {
                max_identifiers_per_profile: 4,
                ..Default::default()
            };
            graph_with(limits, &[("cookie_id", 2), ("device_id", 1)])
        };
        check_order_independence(&events, seed, capped)?;
    }
}

proptest! {
    /// Scale-out skips the round trip of an event `resolve_known` resolves:
    /// stitching it records nothing and gives that profile, and a graph
    /// that never saw the skipped events is the graph that saw them all.
    #[test]
    fn an_event_resolved_as_known_changes_nothing_and_can_be_left_out(
        events in prop::collection::vec(
            (0i64..8, prop::collection::vec((0usize..5, 0usize..3), 1..4)), 1..25),
        repeats in prop::collection::vec((0usize..25, 0i64..8), 0..25),
        seed in any::<u64>(),
        capped in any::<bool>(),
    ) {
        let names = ["cookie_id", "device_id", "email", "customer_id", "loyalty_id"];
        let mut all = events.clone();
        for (i, minute) in &repeats {
            all.push((*minute, events[i % events.len()].1.clone()));
        }
        let make = || if capped {
            let limits = crate::ids::IdentityLimits { max_identifiers_per_profile: 4, ..Default::default() };
            graph_with(limits, &[("cookie_id", 2), ("device_id", 1)])
        } else {
            graph()
        };
        let order = shuffle((0..all.len()).collect(), seed);
        let event = |i: usize| web(&format!("e{i}"), all[i].0, ids_json(&all[i].1, &names), "login", json!({}));
        let (every, skipping) = (make(), make());
        let mut skipped = 0;
        for &i in &order {
            let e = event(i);
            let known = every.resolve_known(&e);
            let stitched = every.stitch(&e).unwrap();
            if let Some((one_id, anchor)) = known {
                prop_assert!(stitched.ops.is_empty(), "a known event recorded {:?}", stitched.ops);
                prop_assert_eq!((&stitched.one_id, &stitched.anchor), (&one_id, &anchor));
            }
            if skipping.resolve_known(&e).is_some() {
                skipped += 1;
            } else {
                skipping.stitch(&e).unwrap();
            }
        }
        prop_assert_eq!(skipping.partition(), every.partition());
        prop_assert_eq!(refused_of(&skipping), refused_of(&every));
        prop_assert!(skipped <= all.len());
    }
}

/// Stitches `events` (minute, identifiers) in their order and in a shuffled
/// order: the partitions, One IDs included, must be equal, and the merge
/// protection invariants must hold.
fn check_order_independence(
    events: &[(i64, Vec<(usize, usize)>)],
    seed: u64,
    make: impl Fn() -> IdentityGraph,
) -> Result<(), TestCaseError> {
    let names = ["cookie_id", "device_id", "email", "customer_id", "loyalty_id"];
    let run = |order: &[usize]| {
        let g = make();
        for &i in order {
            let (minute, parts) = &events[i];
            g.stitch(&web(
                &format!("e{i}"),
                *minute,
                ids_json(parts, &names),
                "login",
                json!({}),
            ))
            .unwrap();
        }
        g
    };
    let forward: Vec<usize> = (0..events.len()).collect();
    let a = run(&forward);
    let b = run(&shuffle(forward.clone(), seed));
    prop_assert_eq!(a.partition(), b.partition());
    prop_assert_eq!(refused_of(&a), refused_of(&b), "the same refused links are kept");
    for g in [&a, &b] {
        for (one_id, ids) in g.partition() {
            for unique in ["customer_id", "loyalty_id"] {
                let ns = g.namespaces().lookup(unique).unwrap();
                prop_assert!(ids.iter().filter(|k| k.ns() == ns).count() <= 1);
            }
            prop_assert!(ids.len() <= g.namespaces().limits().max_identifiers_per_profile);
            for k in &ids {
                prop_assert_eq!(g.one_id_of(k), Some(one_id.clone()));
            }
        }
    }
    Ok(())
}

/// Every profile's kept refused links.
fn refused_of(g: &IdentityGraph) -> BTreeMap<OneId, Vec<RefusedLink>> {
    g.profiles
        .iter()
        .map(|p| (p.one_id.clone(), p.refused().to_vec()))
        .collect()
}

fn shuffle(mut v: Vec<usize>, seed: u64) -> Vec<usize> {
    // Fisher-Yates with a simple LCG from the seed.
    let mut s = seed | 1;
    for i in (1..v.len()).rev() {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        v.swap(i, (s >> 33) as usize % (i + 1));
    }
    v
}

/// Two devices of one profile become shared on one event (here while a
/// rebuild folds an earlier event in): the first leaves for a profile of its
/// own, the second then holds the old profile alone and keeps it. Each
/// identifier ends in exactly one profile, and the index says which.
#[test]
fn two_devices_of_one_profile_shared_at_once_each_end_in_one_profile() {
    let events: Vec<(i64, Vec<(usize, usize)>)> = vec![
        (2, vec![(0, 1), (1, 2)]),
        (2, vec![(2, 2), (1, 2), (0, 1)]),
        (1, vec![(3, 1), (1, 0), (0, 2)]),
        (0, vec![(2, 1), (3, 1)]),
        (0, vec![(2, 1), (0, 1), (1, 2)]),
    ];
    let names = ["cookie_id", "device_id", "email", "customer_id", "loyalty_id"];
    let limits = crate::ids::IdentityLimits {
        max_identifiers_per_profile: 4,
        ..Default::default()
    };
    let g = graph_with(limits, &[("cookie_id", 2), ("device_id", 1)]);
    for (i, (minute, parts)) in events.iter().enumerate() {
        g.stitch(&web(
            &format!("e{i}"),
            *minute,
            ids_json(parts, &names),
            "login",
            json!({}),
        ))
        .unwrap();
    }
    let mut seen = BTreeSet::new();
    for (one_id, ids) in g.partition() {
        for k in ids {
            assert_eq!(g.one_id_of(&k), Some(one_id.clone()), "{k:?}");
            assert!(seen.insert(k.clone()), "{k:?} is in two profiles");
        }
    }
    let cookie = key(&g, "cookie_id", "cookie_id-1@x.io");
    let device = key(&g, "device_id", "device_id-2@x.io");
    // Both are shared: each sits in a profile of its own.
    for k in [&cookie, &device] {
        let one_id = g.one_id_of(k).unwrap();
        assert_eq!(g.profile(&one_id).unwrap().ids(), std::slice::from_ref(k));
    }
}

#[test]
fn refused_links_are_kept_on_the_profile_the_event_landed_on() {
    let g = graph();
    let login = |id: &str, m, ids| web(id, m, ids, "login", json!({}));
    let c1 = g
        .stitch(&login(
            "w1",
            0,
            json!({"customer_id": "C-1", "loyalty_id": "L-1", "device_id": "tab"}),
        ))
        .unwrap()
        .one_id;
    let c2 = g
        .stitch(&login(
            "w2",
            1,
            json!({"customer_id": "C-2", "loyalty_id": "L-2", "device_id": "tab"}),
        ))
        .unwrap();
    let tab = key(&g, "device_id", "tab");
    let tablet = g.one_id_of(&tab).unwrap();
    // The event that made the tablet shared landed on C-2: the refusal is kept there.
    let kept = g.profile(&c2.one_id).unwrap().refused().to_vec();
    assert_eq!(kept.len(), 1);
    assert_eq!(
        (kept[0].key.clone(), kept[0].reason, kept[0].kept_in.clone()),
        (tab.clone(), RejectReason::SharedDevice, Some(tablet.clone()))
    );
    assert_eq!((&*kept[0].event_id, kept[0].channel), ("w2", Channel::Web));
    assert_eq!(
        g.shared_devices([&tab, &key(&g, "customer_id", "C-1")]),
        vec![tab.clone()]
    );
    // C-1 with C-2's loyalty card and the tablet: a unique conflict and a shared device.
    g.stitch(&login(
        "w3",
        2,
        json!({"customer_id": "C-1", "loyalty_id": "L-2", "device_id": "tab"}),
    ))
    .unwrap();
    let kept = g.profile(&c1).unwrap().refused().to_vec();
    let got: Vec<(String, RejectReason, Option<OneId>)> = kept
        .iter()
        .map(|r| (g.namespaces().name(r.key.ns()).to_string(), r.reason, r.kept_in.clone()))
        .collect();
    assert_eq!(
        got,
        [
            (
                "loyalty_id".into(),
                RejectReason::UniqueConflict,
                Some(c2.one_id.clone())
            ),
            ("device_id".into(), RejectReason::SharedDevice, Some(tablet)),
        ],
        "sorted by event, then identifier"
    );
    // Bounded: the newest REFUSED_LINKS stay, whatever the arrival order.
    for i in 0..(REFUSED_LINKS as i64 + 3) {
        g.stitch(&login(
            &format!("x{i}"),
            10 + i,
            json!({"customer_id": "C-1", "loyalty_id": format!("L-x{i}")}),
        ))
        .unwrap();
    }
    let kept = g.profile(&c1).unwrap().refused().to_vec();
    assert_eq!(kept.len(), REFUSED_LINKS);
    assert_eq!(&*kept[0].event_id, "x3", "the oldest went first");
    // Serialised with the reason's label.
    let json = serde_json::to_value(&kept[0]).unwrap();
    assert_eq!(json["reason"], "unique_conflict");
}

#[test]
fn forgetting_a_person_drops_the_refused_links_that_name_them() {
    let g = graph();
    let login = |id: &str, m, ids| web(id, m, ids, "login", json!({}));
    g.stitch(&login("w1", 0, json!({"customer_id": "C-2", "loyalty_id": "L-2"})))
        .unwrap();
    let c1 = g
        .stitch(&login("w2", 1, json!({"customer_id": "C-1", "loyalty_id": "L-2"})))
        .unwrap()
        .one_id;
    assert_eq!(g.profile(&c1).unwrap().refused().len(), 1);
    g.forget(&key(&g, "customer_id", "C-2")).unwrap();
    assert!(
        g.profile(&c1).unwrap().refused().is_empty(),
        "no trace of the erased card"
    );
}

#[test]
fn profiles_saved_before_refused_links_existed_still_load() {
    let g = graph();
    let one_id = g
        .stitch(&web("w1", 0, json!({"customer_id": "C-1"}), "login", json!({})))
        .unwrap()
        .one_id;
    let p = g.profile(&one_id).unwrap();
    let mut bytes = rmp_serde::to_vec(&p).unwrap();
    assert_eq!(bytes.pop(), Some(0x90), "an empty list ends the record");
    assert_eq!(bytes[0] & 0xf0, 0x90);
    bytes[0] -= 1;
    let back: Profile = rmp_serde::from_slice(&bytes).unwrap();
    assert_eq!(back, p);
}

/// A rebuild installs the entries of earlier forgets before any input: the
/// forgotten identifiers never come back, whatever order the events arrive
/// in, and nothing else changes.
#[test]
fn installed_suppressions_keep_forgotten_identifiers_out_of_a_replay() {
    let events = [
        web("w1", 0, json!({"cookie_id": "c-1"}), "page_view", json!({})),
        web(
            "w2",
            1,
            json!({"email": "a@x.io", "cookie_id": "c-1", "customer_id": "C-1"}),
            "login",
            json!({}),
        ),
        web(
            "w3",
            2,
            json!({"email": "b@x.io", "cookie_id": "c-2"}),
            "login",
            json!({}),
        ),
        call(
            "k1",
            3,
            json!({"phone": "+44 20 7946 0018", "customer_id": "C-1"}),
            "billing",
            "resolved",
        ),
    ];
    let first = graph();
    for e in &events {
        first.stitch(e).unwrap();
    }
    let (_, gone) = first.forget(&key(&first, "customer_id", "C-1")).unwrap();
    assert_eq!(gone.suppressed.len(), 4, "cookie, email, customer id, phone");
    assert!(gone.suppressed.windows(2).all(|w| w[0] < w[1]), "sorted, no repeats");
    for k in &gone.ids {
        let entry = first.suppression_entry(&first.lock(), k);
        assert!(gone.suppressed.iter().any(|s| s.entry == entry && s.ns == k.ns()));
    }
    let entries: Vec<[u8; 16]> = gone.suppressed.iter().map(|s| s.entry).collect();

    // Replayed into a fresh graph, in both orders, after installing them (twice).
    for order in [events.to_vec(), events.iter().rev().cloned().collect()] {
        let rebuilt = graph();
        let op = IdentityOp::Suppress {
            entries: entries.clone(),
        };
        rebuilt.apply(&op);
        rebuilt.apply(&op);
        assert_eq!(rebuilt.suppressed_count(), 4, "idempotent");
        assert_eq!(rebuilt.profile_count(), 0, "installing touches no profile");
        for e in &order {
            match rebuilt.stitch(e) {
                Ok(_) | Err(StitchError::Forgotten) => {}
                Err(other) => panic!("{other}"),
            }
        }
        assert_eq!(
            rebuilt.partition(),
            first.partition(),
            "the same graph as after the forget"
        );
        for k in &gone.ids {
            assert_eq!(rebuilt.one_id_of(k), None);
            assert!(rebuilt.is_suppressed(k));
        }
        assert_eq!(rebuilt.stitch(&events[0]), Err(StitchError::Forgotten));
    }
    // Without them, the same replay brings the customer back.
    let naive = graph();
    for e in &events {
        naive.stitch(e).unwrap();
    }
    assert!(naive.one_id_of(&key(&naive, "customer_id", "C-1")).is_some());
}

/// An early event whose rebuild folds it into a profile that a later
/// evidence then merges away belongs to the profile that remains (it was
/// attributed to the merged-away One ID, whose journey then had no profile).
#[test]
fn a_rebuilt_event_belongs_to_the_profile_that_remains() {
    let g = graph();
    let both = json!({"device_id": "d-3", "email": "e1@x.io"});
    g.stitch(&web("e0", 150, both, "page_view", json!({}))).unwrap();
    g.stitch(&web("e1", 0, json!({"device_id": "d-3"}), "page_view", json!({})))
        .unwrap();
    let s = g
        .stitch(&web("e2", 0, json!({"email": "e1@x.io"}), "page_view", json!({})))
        .unwrap();
    assert!(s.rebuilt);
    assert!(g.profile(&s.one_id).is_some(), "{} has no profile", s.one_id);
    assert_eq!(g.one_id_of(&key(&g, "email", "e1@x.io")), Some(s.one_id));
}
