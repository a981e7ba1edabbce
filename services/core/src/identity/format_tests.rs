//! The serialised forms did not change with the compact in-memory layout.
//!
//! In: a graph with every kind of entry (households, cap-dropped identifiers,
//! refused links, shared devices, a suppression). Out: assertions that its
//! snapshot and its ops serialise byte for byte as the layout before
//! (identifier values and event ids as `Arc<str>`, a profile's seven lists
//! as plain fields), mirrored here with serde's derives as the code before
//! wrote them, and that bytes in that layout restore to the same graph.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::*;
use crate::event::Channel;
use crate::ids::{Namespaces, Ns};
use crate::testkit::{pos, web};

#[derive(Serialize, Deserialize)]
struct OldKey {
    ns: Ns,
    value: Arc<str>,
}

#[derive(Serialize, Deserialize)]
struct OldProvenance {
    event_id: Arc<str>,
    channel: Channel,
    at: EventTime,
    rule: Rule,
}

#[derive(Serialize, Deserialize)]
struct OldLink {
    from: OldKey,
    to: Option<OldKey>,
    provenance: OldProvenance,
}

#[derive(Serialize, Deserialize)]
struct OldRefused {
    key: OldKey,
    reason: RejectReason,
    kept_in: Option<Arc<str>>,
    event_id: Arc<str>,
    channel: Channel,
    at: EventTime,
}

#[derive(Serialize, Deserialize)]
struct OldProfile {
    one_id: Arc<str>,
    first_seen: EventTime,
    ids: Vec<OldKey>,
    households: Vec<OldKey>,
    links: Vec<OldLink>,
    dropped: Vec<OldKey>,
    #[serde(default)]
    refused: Vec<OldRefused>,
}

#[derive(Serialize, Deserialize)]
struct OldEvidenceKey {
    at: EventTime,
    channel: Channel,
    event_id: Arc<str>,
}

#[derive(Serialize, Deserialize)]
struct OldEvidence {
    key: OldEvidenceKey,
    ids: Arc<[OldKey]>,
}

#[derive(Serialize, Deserialize)]
struct OldComponent {
    ids: Vec<OldKey>,
    evidence: Vec<OldEvidence>,
    last: Option<OldEvidenceKey>,
}

#[derive(Serialize, Deserialize)]
struct OldDevice {
    persons: Vec<(EventTime, OldKey)>,
    shared: bool,
}

#[derive(Serialize, Deserialize)]
struct OldSlot {
    one_id: Option<Arc<str>>,
    former: Option<Arc<str>>,
    component: u32,
}

#[derive(Serialize, Deserialize)]
struct OldSnapshot {
    profiles: Vec<OldProfile>,
    index: Vec<(OldKey, OldSlot)>,
    components: Vec<(u32, OldComponent)>,
    next_component: u32,
    devices: Vec<(OldKey, OldDevice)>,
    suppressed: Vec<[u8; 16]>,
}

/// `IdentityOp` as the identity log held it before.
#[derive(Serialize, Deserialize)]
enum OldOp {
    Record(OldEvidence),
    Create {
        one_id: Arc<str>,
        at: EventTime,
    },
    Attach {
        one_id: Arc<str>,
        link: OldLink,
    },
    Merge {
        survivor: Arc<str>,
        merged: Arc<str>,
        link: OldLink,
    },
    Seen {
        one_id: Arc<str>,
        at: EventTime,
    },
    DevicePerson {
        device: OldKey,
        person: OldKey,
        at: EventTime,
    },
    Shared {
        device: OldKey,
    },
    Refold {
        component: u32,
    },
    Folded {
        component: u32,
        last: Option<OldEvidenceKey>,
    },
    Dissolve {
        one_id: Arc<str>,
    },
    Forget {
        one_id: Arc<str>,
    },
    Refused {
        one_id: Arc<str>,
        refused: OldRefused,
    },
    Suppress {
        entries: Vec<[u8; 16]>,
    },
}

/// A graph with households, a cap-dropped cookie, refused links (a unique
/// conflict, a shared device), a late event's rebuild and a forget; and
/// every op it applied.
pub(super) fn busy_graph() -> (IdentityGraph, Vec<IdentityOp>) {
    let mut rules = Namespaces::default_rules();
    for r in &mut rules {
        if r.name == "cookie_id" {
            r.max_per_profile = Some(1);
        }
    }
    let g = IdentityGraph::new(Arc::new(Namespaces::new(rules, Default::default()).unwrap()));
    let e = |id: &str, m, ids| web(id, m, ids, "page_view", json!({}));
    let events = [
        e("w0", 0, json!({"cookie_id": "c-1", "customer_id": "C-1"})),
        e("w1", 2, json!({"cookie_id": "c-2", "customer_id": "C-1"})),
        pos("p1", 3, json!({"customer_id": "C-1", "card_token": "t-1"}), 10.0),
        e("w2", 4, json!({"customer_id": "C-1", "loyalty_id": "L-1"})),
        e("w3", 5, json!({"loyalty_id": "L-2", "customer_id": "C-1"})),
        e("w4", 6, json!({"device_id": "d-1", "email": "a@x.com"})),
        e("w5", 7, json!({"device_id": "d-1", "email": "b@x.com"})),
        // Late: rebuilds its component.
        e("w6", 1, json!({"cookie_id": "c-3", "customer_id": "C-1"})),
        e("w7", 8, json!({"email": "gone@x.com", "cookie_id": "c-9"})),
    ];
    let mut ops = Vec::new();
    for ev in &events {
        ops.extend(g.stitch(ev).unwrap().ops);
    }
    let gone = g.namespaces().normalise("email", "gone@x.com").unwrap().unwrap();
    ops.push(g.forget(&gone).unwrap().0);
    (g, ops)
}

#[test]
fn the_busy_graph_has_every_kind_of_entry() {
    let (g, ops) = busy_graph();
    let profiles: Vec<Profile> = g.profiles.iter().map(|p| p.value().clone()).collect();
    assert!(profiles.iter().any(|p| !p.households().is_empty()), "households");
    assert!(profiles.iter().any(|p| !p.dropped().is_empty()), "cap-dropped");
    assert!(profiles.iter().any(|p| !p.refused().is_empty()), "refused links");
    assert!(
        profiles.iter().any(|p| p.rare_box_bytes() == 0),
        "a profile without the box"
    );
    assert!(
        ops.iter().any(|op| matches!(op, IdentityOp::Refold { .. })),
        "a rebuild"
    );
    assert!(
        ops.iter().any(|op| matches!(op, IdentityOp::Shared { .. })),
        "a shared device"
    );
    assert_eq!(g.suppressed_count(), 2);
}

#[test]
fn a_snapshot_serialises_byte_for_byte_as_before_and_the_old_bytes_restore() {
    let (g, _) = busy_graph();
    let bytes = rmp_serde::to_vec(&g.snapshot()).unwrap();
    let old: OldSnapshot = rmp_serde::from_slice(&bytes).unwrap();
    let old_bytes = rmp_serde::to_vec(&old).unwrap();
    assert_eq!(bytes, old_bytes, "the old layout reads and writes the same bytes");
    let restored = IdentityGraph::new(g.namespaces().clone());
    restored.restore(rmp_serde::from_slice(&old_bytes).unwrap(), g.derivation());
    assert_eq!(restored.canonical(), g.canonical());
    assert_eq!(restored.tally(), g.tally());
    // Profiles written with the named-field (map) layout too.
    let named = rmp_serde::to_vec_named(&old.profiles).unwrap();
    let back: Vec<Profile> = rmp_serde::from_slice(&named).unwrap();
    assert_eq!(rmp_serde::to_vec_named(&back).unwrap(), named);
}

#[test]
fn identity_ops_serialise_byte_for_byte_as_before_and_the_old_bytes_replay() {
    let (g, ops) = busy_graph();
    let bytes = rmp_serde::to_vec(&ops).unwrap();
    let old: Vec<OldOp> = rmp_serde::from_slice(&bytes).unwrap();
    assert_eq!(rmp_serde::to_vec(&old).unwrap(), bytes);
    let back: Vec<IdentityOp> = rmp_serde::from_slice(&bytes).unwrap();
    assert_eq!(back, ops);
    let replayed = IdentityGraph::new(g.namespaces().clone());
    replayed.replay(g.derivation(), &back);
    assert_eq!(replayed.canonical(), g.canonical());
}

#[test]
fn a_profile_holds_the_box_only_while_a_rarely_used_list_is_not_empty() {
    let (g, _) = busy_graph();
    for p in g.profiles.iter() {
        let empty = p.households().is_empty() && p.dropped().is_empty() && p.refused().is_empty();
        assert_eq!(p.rare_box_bytes() == 0, empty, "{}", p.one_id);
    }
}

#[test]
fn the_compact_layout_holds_its_sizes() {
    use std::mem::size_of;
    assert_eq!(size_of::<IdKey>(), 8);
    assert_eq!(size_of::<Option<IdKey>>(), 8);
    assert_eq!(size_of::<EvidenceKey>(), 24);
    assert_eq!(size_of::<Provenance>(), 24);
    assert_eq!(size_of::<LinkRecord>(), 40);
    // The links in 24 bytes (`links.rs`): a list took 16, and a profile of
    // one event's three links allocated 120 more.
    assert_eq!(size_of::<super::links::Links>(), 24);
    assert_eq!(size_of::<Profile>(), 64);
    assert_eq!(size_of::<super::Slot>(), 16);
    assert_eq!(size_of::<OneId>(), 8);
    assert_eq!(
        size_of::<(super::Fingerprint, EvidenceKey)>(),
        40,
        "an entry of `known`"
    );
    assert_eq!(size_of::<super::DeviceStat>(), 24);
    // Exact lists, the last key not held apart: 64 bytes before.
    assert_eq!(size_of::<super::component::Component>(), 32);
    assert_eq!(
        size_of::<(u32, super::component::Component)>(),
        40,
        "an entry of `components`"
    );
}
