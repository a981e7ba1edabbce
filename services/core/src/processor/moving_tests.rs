//! State partitions moving between processes (`moving.rs`): a journey
//! restored on a new owner brings the keys of its events, so a message read
//! again there is a duplicate; a handover read twice is absorbed once; a
//! partition given up leaves with its journeys and keys.

use serde_json::json;

use super::*;
use crate::evidence::{EvidenceBody, EvidenceRecord, Origin};
use crate::hash::HashSet;
use crate::ids::Namespaces;
use crate::testkit::{core_config, pos, web};

const PARTITIONS: u32 = 4;

fn owner(owned: impl IntoIterator<Item = u32>) -> Processor {
    owner_with(core_config(), owned)
}

fn owner_with(cfg: crate::CoreConfig, owned: impl IntoIterator<Item = u32>) -> Processor {
    let state = Arc::new(State::new(Arc::new(Namespaces::with_defaults())));
    let mut p = Processor::new(Arc::new(cfg), state);
    p.set_ownership(Some(Ownership {
        partitions: PARTITIONS,
        owned: owned.into_iter().collect::<HashSet<u32>>(),
    }));
    p
}

/// Folds `ev`'s evidence (as read back from the identity log) and returns
/// where it resolves.
fn fold(p: &mut Processor, ev: &ChannelEvent, seq: u64) -> Resolved {
    let ns = Namespaces::with_defaults();
    let bytes = EvidenceRecord::of_event(Origin { process: 0, seq }, ev).encode(&ns);
    let rec = EvidenceRecord::decode(&bytes, &ns).expect("reads back");
    let EvidenceBody::Event(e) = &rec.body else {
        unreachable!("an event record")
    };
    p.fold_event(e, true).resolved.expect("resolves")
}

/// Offers a routed event and releases everything: whether it was a duplicate.
fn offer(p: &mut Processor, ev: &ChannelEvent, r: &Resolved, seq: u64) -> bool {
    let mut out = p.offer_resolved(ev.clone(), r.clone(), 0, seq, 0);
    out.extend(p.tick(u64::MAX));
    let own = out.into_iter().find(|x| x.seq == Some(seq)).expect("released");
    own.result.expect("applied").duplicate
}

/// Its record as the changelog carries it (a journey, its timers, its keys).
fn record(p: &Processor, one_id: &OneId) -> PartitionRecord {
    let j = p.state().journey(one_id).map(|j| (*j).clone());
    (one_id.clone(), j, p.timers_of(one_id).to_vec(), p.applied_of(one_id))
}

#[test]
fn a_restored_journey_remembers_its_events_so_a_message_read_again_is_a_duplicate() {
    let ev = pos("p-1", 5, json!({"loyalty_id": "L-1"}), 30.0);
    let mut old = owner(0..PARTITIONS);
    let r = fold(&mut old, &ev, 0);
    assert!(!offer(&mut old, &ev, &r, 1), "applied once");
    let rec = record(&old, &r.one_id);
    assert_eq!(rec.3.len(), 1, "the record carries the event's key");

    // The new owner folds the same log, restores the record, reads the message again.
    let mut new = owner(0..PARTITIONS);
    let r2 = fold(&mut new, &ev, 0);
    assert_eq!(r2.one_id, r.one_id);
    let done = new.install_partition(vec![rec.clone()], old.applied_to());
    assert_eq!((done.journeys, done.keys, done.orphans), (1, 1, 0));
    assert!(offer(&mut new, &ev, &r2, 2), "a duplicate on the new owner");
    assert_eq!(new.state().journey(&r.one_id), old.state().journey(&r.one_id));

    // Without the keys the same message would be applied a second time.
    let mut keyless = owner(0..PARTITIONS);
    let r3 = fold(&mut keyless, &ev, 0);
    keyless.install_partition(vec![(rec.0, rec.1, rec.2, Vec::new())], old.applied_to());
    assert!(!offer(&mut keyless, &ev, &r3, 3));
    assert_eq!(keyless.state().journey(&r.one_id).expect("held").purchases, 2);
}

#[test]
fn a_handover_read_twice_is_absorbed_once() {
    let ev = web("w-1", 1, json!({"cookie_id": "c-1"}), "login", json!({}));
    let mut p = owner(0..PARTITIONS);
    let r = fold(&mut p, &ev, 0);
    offer(&mut p, &ev, &r, 1);
    let mut gone = Journey::default();
    gone.apply(&pos("p-9", 2, json!({"loyalty_id": "L-9"}), 50.0));
    let h = Handover {
        to: r.one_id.clone(),
        via: r.anchor.clone(),
        from: "oj-merged-away".into(),
        journey: Some(Arc::new(gone)),
        timers: Vec::new(),
        applied: vec![(2, 77)],
    };
    assert!(p.accept_handover(h.clone()).is_none());
    assert!(p.accept_handover(h).is_none());
    let j = p.state().journey(&r.one_id).expect("held");
    assert_eq!((j.purchases, j.total_events()), (1, 2), "absorbed once");
    // Its events' keys came along: a re-read event of it is a duplicate.
    assert!(p.applied_of(&r.one_id).iter().any(|(_, k)| *k == 77));
}

#[test]
fn a_partition_given_up_leaves_with_its_journeys_and_keys() {
    let ev = pos("p-1", 5, json!({"loyalty_id": "L-1"}), 30.0);
    let mut p = owner(0..PARTITIONS);
    let r = fold(&mut p, &ev, 0);
    offer(&mut p, &ev, &r, 1);
    // A second event of the same customer: two keys held, and counted.
    let second = pos("p-2", 6, json!({"loyalty_id": "L-1"}), 10.0);
    let r2 = fold(&mut p, &second, 2);
    offer(&mut p, &second, &r2, 3);
    assert_eq!(p.applied_keys(), 2);
    let q = state_partition(&r.one_id, PARTITIONS);
    p.set_ownership(Some(Ownership {
        partitions: PARTITIONS,
        owned: (0..PARTITIONS).filter(|x| *x != q).collect(),
    }));
    let (left, dropped) = p.drop_unowned(|_| false);
    assert!(dropped.is_empty());
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].0, r.one_id);
    assert_eq!(left[0].3.len(), 2, "its keys go with it");
    assert_eq!(p.applied_keys(), 0, "and are no longer counted here");
    assert!(p.state().journey(&r.one_id).is_none());
    // Back here later, from its record: the event is remembered again, once.
    p.set_ownership(Some(Ownership {
        partitions: PARTITIONS,
        owned: (0..PARTITIONS).collect(),
    }));
    let (one_id, j, timers, keys) = left.into_iter().next().expect("one");
    p.install_partition(vec![(one_id, j.map(|j| (*j).clone()), timers, keys)], p.applied_to());
    assert_eq!(p.applied_keys(), 2);
    assert!(offer(&mut p, &ev, &r, 4), "a duplicate again");
}

#[test]
fn an_orphan_restored_before_its_survivor_is_absorbed_into_it() {
    let e1 = web("w-1", 1, json!({"cookie_id": "c-1"}), "login", json!({}));
    let e2 = pos("p-2", 2, json!({"loyalty_id": "L-2"}), 40.0);
    let link = web(
        "w-3",
        3,
        json!({"cookie_id": "c-1", "loyalty_id": "L-2"}),
        "login",
        json!({}),
    );
    let mut old = owner(0..PARTITIONS);
    let r1 = fold(&mut old, &e1, 0);
    offer(&mut old, &e1, &r1, 1);
    let r2 = fold(&mut old, &e2, 1);
    offer(&mut old, &e2, &r2, 2);
    assert_ne!(r1.one_id, r2.one_id);
    // Both records as written before the merge; the new owner folds the
    // merge before it restores them, orphan first.
    let mut records = vec![record(&old, &r1.one_id), record(&old, &r2.one_id)];
    let mut new = owner(0..PARTITIONS);
    fold(&mut new, &e1, 0);
    fold(&mut new, &e2, 1);
    let survivor = fold(&mut new, &link, 2).one_id;
    records.sort_by_key(|r| r.0 == survivor);
    let done = new.install_partition(records, old.applied_to());
    assert_eq!((done.journeys, done.orphans, done.handed_over), (1, 1, 1));
    let j = new.state().journey(&survivor).expect("the survivor's journey");
    assert_eq!((j.total_events(), j.purchases), (2, 1), "both pieces, once");
}

#[test]
fn a_journey_that_arrived_before_its_partition_was_installed_joins_the_record() {
    // The old owner applied one sale; the record of it is in the changelog.
    let first = pos("p-1", 5, json!({"loyalty_id": "L-9"}), 30.0);
    let second = pos("p-2", 6, json!({"loyalty_id": "L-9"}), 12.0);
    let mut old = owner(0..PARTITIONS);
    let r = fold(&mut old, &first, 0);
    assert!(!offer(&mut old, &first, &r, 1));
    let rec = record(&old, &r.one_id);

    // The new owner applies a second sale to that profile between the
    // assignment and the install (as a merge folded meanwhile would).
    let mut new = owner(0..PARTITIONS);
    let r2 = fold(&mut new, &first, 0);
    let r3 = fold(&mut new, &second, 1);
    assert_eq!(r3.one_id, r2.one_id);
    assert!(!offer(&mut new, &second, &r3, 2));
    new.install_partition(vec![rec], old.applied_to());
    let j = new.state().journey(&r.one_id).expect("held");
    assert_eq!(j.purchases, 2, "the record and what came before it, both");
    // And the first sale read again is a duplicate: its key came with the record.
    assert!(offer(&mut new, &first, &r2, 3));
    assert_eq!(new.state().journey(&r.one_id).expect("held").purchases, 2);
}

#[test]
fn moves_and_the_keys_of_a_journey_left_alone_go_once_the_window_passes_them() {
    let mut cfg = core_config();
    cfg.dedupe_window = Duration::from_secs(86_400);
    let mut p = owner_with(cfg, 0..PARTITIONS);
    let (a, b) = (
        web("w-1", 0, json!({"cookie_id": "c-1"}), "login", json!({})),
        pos("p-2", 1, json!({"loyalty_id": "L-2"}), 40.0),
    );
    let link = web(
        "w-3",
        2,
        json!({"cookie_id": "c-1", "loyalty_id": "L-2"}),
        "login",
        json!({}),
    );
    for (seq, ev) in [&a, &b, &link].into_iter().enumerate() {
        let r = fold(&mut p, ev, seq as u64);
        assert!(!offer(&mut p, ev, &r, 10 + seq as u64));
    }
    let survivor = p.state().identity.one_id_of(&a.ids[0]).expect("held");
    assert_eq!(
        (p.kept_moves(), p.applied_keys()),
        (1, 4),
        "one merge; on the survivor three events and the merge's handover key"
    );

    // A day later (the window) another customer's events move the applied-to
    // time on: one inside the window of the next, one two days on.
    let d = pos("p-4", 2_000, json!({"loyalty_id": "L-4"}), 5.0);
    let e = pos("p-5", 2 + 2 * 1_440, json!({"loyalty_id": "L-5"}), 5.0);
    for (seq, ev) in [&d, &e].into_iter().enumerate() {
        let r = fold(&mut p, ev, 20 + seq as u64);
        assert!(!offer(&mut p, ev, &r, 30 + seq as u64));
    }
    assert_eq!(p.kept_moves(), 0, "the merge's move is behind the window");
    assert_eq!(p.applied_keys(), 2, "the survivor's keys went; d's and e's stay");
    assert!(p.applied_of(&survivor).is_empty());
    let d_id = p.state().identity.one_id_of(&d.ids[0]).expect("held");
    assert_eq!(p.applied_of(&d_id).len(), 1, "inside the window: kept");
    // What the window covers still behaves as before: the survivor's first
    // event read again is too late, not applied a second time.
    let r = fold(&mut p, &a, 40);
    let mut out = p.offer_resolved(a.clone(), r, 0, 41, 0);
    out.extend(p.tick(u64::MAX));
    let own = out.into_iter().find(|x| x.seq == Some(41)).expect("released");
    assert!(own.result.expect("handled").too_late);
}
