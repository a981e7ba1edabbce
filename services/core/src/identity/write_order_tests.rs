use std::collections::HashSet;
use std::sync::Arc;

use serde_json::json;

use super::super::format_tests::busy_graph;
use super::super::snapshot::{IdentitySnapshot, WrittenOrder};
use super::super::IdentityGraph;
use crate::ids::{IdKey, Namespaces};
use crate::testkit::web;

/// A graph of `n` customers, each a cookie and a customer id.
fn customers(n: i64) -> IdentityGraph {
    let g = IdentityGraph::new(Arc::new(Namespaces::with_defaults()));
    for i in 0..n {
        let ids = json!({"cookie_id": format!("c-{i}"), "customer_id": format!("C-{i}")});
        g.stitch(&web(&format!("w{i}"), i, ids, "page_view", json!({})))
            .expect("stitches");
    }
    g
}

fn written(g: &IdentityGraph) -> (IdentitySnapshot, WrittenOrder) {
    let bytes = rmp_serde::to_vec(&g.snapshot()).expect("the snapshot serialises");
    let snap: IdentitySnapshot = rmp_serde::from_slice(&bytes).expect("and reads back");
    let order = snap.written_order();
    (snap, order)
}

/// The index entries the first pass should hand out, in order: per profile
/// of the snapshot, its identifiers (first place) whose slot names it.
fn reached_in_profile_order(g: &IdentityGraph, order: &WrittenOrder) -> Vec<IdKey> {
    let mut out = Vec::new();
    for (one_id, ids) in &order.profiles {
        for (i, k) in ids.iter().enumerate() {
            let names_it = g.index.get(k).is_some_and(|s| s.one_id.as_ref() == Some(one_id));
            if !ids[..i].contains(k) && names_it {
                out.push(k.clone());
            }
        }
    }
    out
}

#[test]
fn every_entry_and_component_is_written_once_those_of_profiles_first_in_their_order() {
    let (g, _) = busy_graph();
    let (snap, order) = written(&g);

    let keys: Vec<IdKey> = order.index.iter().map(|(k, _)| k.clone()).collect();
    let distinct: HashSet<&IdKey> = keys.iter().collect();
    let live: HashSet<IdKey> = g.index.iter().map(|r| r.key().clone()).collect();
    assert_eq!(distinct.len(), keys.len(), "no entry twice");
    assert_eq!(keys.iter().cloned().collect::<HashSet<_>>(), live, "every entry");

    let reached = reached_in_profile_order(&g, &order);
    assert!(
        reached.len() < keys.len(),
        "the busy graph has entries no profile reaches (dropped, shared), so the second pass runs"
    );
    assert_eq!(
        keys[..reached.len()],
        reached[..],
        "profiles' entries first, in their order"
    );

    let w = g.lock();
    let components: HashSet<u32> = order.components.iter().copied().collect();
    assert_eq!(components.len(), order.components.len(), "no component twice");
    assert_eq!(components, w.components.keys().copied().collect::<HashSet<_>>());
    let devices: HashSet<&IdKey> = order.devices.iter().collect();
    assert_eq!(devices.len(), order.devices.len(), "no device twice");
    assert_eq!(devices, w.devices.keys().collect::<HashSet<_>>());
    assert!(!devices.is_empty());
    drop(w);

    let restored = IdentityGraph::new(g.namespaces().clone());
    restored.restore(snap, g.derivation());
    assert_eq!(restored.canonical(), g.canonical());
}

#[test]
fn many_profiles_write_their_index_and_components_in_the_profiles_order() {
    let g = customers(300);
    let (_, order) = written(&g);
    assert_eq!(order.profiles.len(), 300);

    let keys: Vec<IdKey> = order.index.iter().map(|(k, _)| k.clone()).collect();
    let expected: Vec<IdKey> = order.profiles.iter().flat_map(|(_, ids)| ids.iter().cloned()).collect();
    assert_eq!(keys, expected, "the index follows the profiles");
    assert_eq!(keys, reached_in_profile_order(&g, &order));

    let mut first_reached = Vec::new();
    for k in &expected {
        let c = g.index.get(k).expect("indexed").component;
        if !first_reached.contains(&c) {
            first_reached.push(c);
        }
    }
    assert_eq!(order.components, first_reached, "the components follow the profiles");

    let cookies: Vec<IdKey> = expected
        .iter()
        .filter(|k| g.lock().devices.contains_key(*k))
        .cloned()
        .collect();
    assert_eq!(cookies.len(), 300, "each cookie a device");
    assert_eq!(order.devices, cookies, "the devices follow the profiles");
}

#[test]
fn marks_beyond_their_cap_are_left_to_the_second_pass() {
    let mut marks = super::Marks(vec![0; 2]);
    assert!(marks.mark(0) && marks.mark(127));
    assert!(!marks.mark(0), "once");
    assert!(!marks.mark(128), "beyond the bits: never marked");
    assert!(marks.is_marked(127) && !marks.is_marked(128) && !marks.is_marked(5));
}

/// Shapes a well-kept graph does not have, written all the same: a profile
/// that lists its identifiers twice, one that lists another profile's
/// identifiers, a component numbered far past the others (beyond the
/// marks). Each entry, component and device once, under the profile its
/// slot names; the restore holds them all.
#[test]
fn odd_shapes_are_written_once_each() {
    let g = customers(50);
    let (_, before) = written(&g);
    let a = before.profiles[0].0.clone();
    let (a_ids, b_ids) = (before.profiles[0].1.clone(), before.profiles[1].1.clone());
    let b_first = b_ids[0].clone();
    {
        // b's identifiers, then a's own twice (customer id and cookie).
        let mut p = g.profiles.get_mut(&a).expect("a");
        p.replace_ids(
            b_ids
                .iter()
                .chain(&a_ids)
                .chain(&a_ids)
                .cloned()
                .collect::<Vec<_>>()
                .into(),
        );
    }
    let far = u32::MAX - 7;
    {
        let mut w = g.lock();
        let c = g.index.get(&b_first).expect("indexed").component;
        let moved = w.components.remove(&c).expect("its component");
        w.components.insert(far, moved);
        for mut slot in g.index.iter_mut() {
            if slot.component == c {
                slot.component = far;
            }
        }
    }

    let (snap, order) = written(&g);
    let keys: Vec<IdKey> = order.index.iter().map(|(k, _)| k.clone()).collect();
    let distinct: HashSet<&IdKey> = keys.iter().collect();
    assert_eq!(distinct.len(), keys.len(), "no entry twice");
    assert_eq!(keys.len(), g.index.len(), "every entry");
    let at = |k: &IdKey| keys.iter().position(|x| x == k).expect("written");
    // a's own two first, then b's: b_first where b lists it, not first.
    assert_eq!(at(&b_first), 2, "under the profile its slot names (b), not under a");
    let components: HashSet<u32> = order.components.iter().copied().collect();
    assert_eq!(components.len(), order.components.len(), "no component twice");
    assert_eq!(components.len(), g.lock().components.len(), "every component");
    assert_eq!(order.components.last(), Some(&far), "past the cap: the second pass");
    let devices: HashSet<&IdKey> = order.devices.iter().collect();
    assert_eq!(devices.len(), order.devices.len(), "no device twice");
    assert_eq!(devices.len(), g.lock().devices.len(), "every device");
    let cookie = |ids: &[IdKey]| ids.iter().find(|k| g.lock().devices.contains_key(*k)).cloned();
    assert_eq!(
        order.devices[..2],
        [cookie(&a_ids).expect("a's cookie"), cookie(&b_ids).expect("b's cookie")],
        "a's cookie under a, b's under b"
    );

    let restored = IdentityGraph::new(g.namespaces().clone());
    restored.restore(snap, g.derivation());
    assert_eq!(restored.index.len(), g.index.len());
    assert!(restored.lock().components.contains_key(&far));
}

/// A device recorded while its namespace was a device's, written after the
/// table made it a person's (the restore does not check kinds): every
/// device still once.
#[test]
fn a_device_whose_namespace_is_no_longer_a_devices_is_still_written() {
    let g = customers(20);
    let (snap, _) = written(&g);
    let rules = Namespaces::default_rules()
        .into_iter()
        .map(|mut r| {
            if r.name == "cookie_id" {
                r.kind = crate::ids::Kind::Person;
            }
            r
        })
        .collect();
    let changed = IdentityGraph::new(Arc::new(Namespaces::new(rules, Default::default()).expect("valid")));
    changed.restore(snap, g.derivation());
    assert_eq!(changed.lock().devices.len(), 20);
    let (_, order) = written(&changed);
    let devices: HashSet<&IdKey> = order.devices.iter().collect();
    assert_eq!((devices.len(), order.devices.len()), (20, 20), "each device once");
}
