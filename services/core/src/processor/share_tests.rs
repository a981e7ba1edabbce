//! A restored processor holds each text once, as the one that wrote the
//! snapshot or changelog does: every One ID, identifier value and event id
//! is one allocation however many maps refer to it (`identity/share.rs`).
//!
//! In: processors fed merges, carts (timers), sales and calls; their
//! snapshots and changelog restores. Out: assertions only.

use std::sync::Arc;

use serde_json::json;

use super::{CoreSnapshot, Processor};
use crate::identity::{Census, OneId};
use crate::ids::Namespaces;
use crate::state::State;
use crate::testkit::{call, core_config, pos, product, web};

/// (allocations, references) of One IDs, identifier values and event ids in
/// everything the processor keeps: the graph, the journey map, the timers.
pub(super) fn census(p: &Processor) -> [(usize, usize); 3] {
    let mut c = Census::default();
    p.state.identity.census(&mut c);
    for j in p.state.journeys.iter() {
        c.one_id(j.key());
    }
    p.timers.census(&mut c);
    c.counts()
}

/// Holds `restored` to `live`: no more allocations per kind of text (the
/// references may differ only where the restored state is smaller).
pub(super) fn shares_like(restored: &Processor, live: &Processor) -> Result<(), String> {
    let (r, l) = (census(restored), census(live));
    for (kind, (r, l)) in ["One ID", "identifier", "event id"].iter().zip(r.iter().zip(l.iter())) {
        if r.0 > l.0 {
            return Err(format!(
                "{kind} texts: {} allocations for {} references restored, {} for {} live",
                r.0, r.1, l.0, l.1
            ));
        }
    }
    Ok(())
}

fn processor() -> Processor {
    Processor::new(
        Arc::new(core_config()),
        Arc::new(State::new(Arc::new(Namespaces::with_defaults()))),
    )
}

/// 40 people on three channels each, every fifth one reached first by two
/// cookies that a login merges later, carts left (timers), sales and calls.
fn busy() -> Processor {
    let mut p = processor();
    for i in 0..40i64 {
        let (cookie, customer) = (format!("c-{i}"), format!("C{i}"));
        let e = |n: &str| format!("{n}-{i}");
        let _ = p.process(
            &web(&e("v"), i, json!({"cookie_id": cookie}), "page_view", json!({})),
            0,
        );
        if i % 5 == 0 {
            let other = json!({"device_id": format!("d-{i}"), "email": format!("p{i}@x.io")});
            let _ = p.process(&web(&e("w"), i, other, "page_view", json!({})), 0);
        }
        let login = json!({"cookie_id": cookie, "customer_id": customer, "device_id": format!("d-{i}")});
        let _ = p.process(&web(&e("l"), i + 1, login, "login", json!({})), 0);
        let both = json!({"customer_id": customer, "email": format!("p{i}@x.io")});
        let _ = p.process(&web(&e("a"), i + 2, both, "add_to_cart", product("sku-1", 9.5)), 0);
        let _ = p.process(&pos(&e("s"), i + 3, json!({"customer_id": customer}), 20.0), 0);
        let _ = p.process(
            &call(
                &e("k"),
                i + 4,
                json!({"customer_id": customer}),
                "complaint",
                "unresolved",
            ),
            0,
        );
    }
    p
}

fn through_snapshot(p: &Processor) -> Processor {
    let bytes = rmp_serde::to_vec(&p.snapshot()).expect("serialises");
    let snap: CoreSnapshot = rmp_serde::from_slice(&bytes).expect("reads back");
    let mut q = processor();
    q.restore(snap, 0).expect("restores");
    q
}

#[test]
fn a_snapshot_restore_holds_each_text_once_as_the_live_state_does() {
    let p = busy();
    let live = census(&p);
    assert!(p.pending_timers() > 0, "the carts armed timers");
    // Live, every text is shared: far fewer allocations than references.
    for (alloc, refs) in live {
        assert!(alloc > 0 && refs >= 2 * alloc, "live census {live:?}");
    }
    let q = through_snapshot(&p);
    assert_eq!(census(&q), live, "restored against live (allocations, references)");
    assert_eq!(q.state().identity.canonical(), p.state().identity.canonical());
    // And it goes on sharing: a restored state restored again is the same.
    assert_eq!(census(&through_snapshot(&q)), live);
}

#[test]
fn a_restored_journey_key_is_its_profile_s_one_id() {
    let q = through_snapshot(&busy());
    let mut profiled = 0;
    for entry in q.state().journeys.iter() {
        let one_id = entry.key();
        let shared = q
            .state()
            .identity
            .sharer()
            .profiled(one_id)
            .unwrap_or_else(|| OneId::from(&**one_id));
        if q.state().identity.profile(one_id).is_some() {
            assert!(
                OneId::ptr_eq(one_id, &shared),
                "{one_id}: the journey's key is not the profile's"
            );
            profiled += 1;
        }
    }
    assert!(profiled >= 40, "{profiled} journeys with a profile");
}

/// A format 6 snapshot (every text in full) of [`busy`], written by the
/// build before the text table (see [`write_v6_fixture`]).
const V6: &[u8] = include_bytes!("fixtures/snapshot-v6.msgpack");

fn restored(bytes: &[u8]) -> Processor {
    let snap: CoreSnapshot = rmp_serde::from_slice(bytes).expect("reads back");
    let mut q = processor();
    q.restore(snap, 0).expect("restores");
    q
}

#[test]
fn a_format_6_snapshot_is_shared_by_content_and_written_again_in_a_smaller_format_7() {
    let p = busy();
    let v6 = restored(V6);
    assert_eq!(v6.state().identity.canonical(), p.state().identity.canonical());
    assert_eq!(census(&v6), census(&p), "every text once, as the live state");
    let (seven, six) = (
        rmp_serde::to_vec(&v6.snapshot()).expect("serialises"),
        rmp_serde::to_vec(&v6.snapshot_v6()).expect("serialises"),
    );
    assert_eq!(
        &seven[..4],
        &[0xdc, 0, 18, super::SNAPSHOT_VERSION as u8],
        "18 fields, format 7"
    );
    // The zstd dictionary (about 100 KB) is in both; the texts are not.
    let dict = crate::state::stored::dictionary().len();
    let (t7, t6) = (seven.len() - dict, six.len() - dict);
    assert!(
        t7 * 10 < t6 * 9,
        "format 7 {t7} bytes besides the dictionary, format 6 {t6}"
    );
    let q = restored(&seven);
    assert_eq!(census(&q), census(&p));
    assert_eq!(q.state().identity.canonical(), p.state().identity.canonical());
    let journeys = |p: &Processor| {
        let mut all = p.state().all_journeys();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    };
    assert!(journeys(&q) == journeys(&p), "the same journeys");
    assert_eq!(q.pending_timers(), p.pending_timers());
}

#[test]
fn a_snapshot_writes_the_same_bytes_whichever_form_holds_the_links() {
    let mut p = busy();
    // Besides busy's merged profiles, some of one login each.
    for i in 0..30i64 {
        let ids = json!({"customer_id": format!("L{i}"), "email": format!("l.{i}@example.com"),
            "cookie_id": format!("lc-{i}")});
        let _ = p.process(&web(&format!("one-{i}"), 100 + i, ids, "login", json!({})), 0);
    }
    let compact = p.state().identity.one_event_links();
    assert!(compact >= 20, "{compact} profiles hold one event's links");
    let before = rmp_serde::to_vec(&p.snapshot()).expect("serialises");
    p.state().identity.spell_out_links();
    assert_eq!(p.state().identity.one_event_links(), 0);
    let after = rmp_serde::to_vec(&p.snapshot()).expect("serialises");
    assert!(
        before == after,
        "{} bytes compact, {} listed",
        before.len(),
        after.len()
    );
    // Read back, the links are one event's again.
    assert_eq!(restored(&after).state().identity.one_event_links(), compact);
}

/// Writes `processor/fixtures/snapshot-v6.msgpack` (run once, by hand; the
/// file in the tree was written by the build before format 7, 4750a80).
#[test]
#[ignore = "writes a fixture"]
fn write_v6_fixture() {
    let dir = std::env::var("FIXTURE_DIR").expect("FIXTURE_DIR");
    let bytes = rmp_serde::to_vec(&busy().snapshot_v6()).expect("serialises");
    std::fs::write(format!("{dir}/snapshot-v6.msgpack"), bytes).expect("writes");
}

/// By hand (`cargo test -p onejourney-core --release -- --ignored
/// references_per_profile --nocapture`): how many references each text of
/// a profile of the bench's shape has (customer id, e-mail, cookie; one
/// login), and how long the texts are: what integer handles into one table
/// of texts would save (`docs/state-v2.md`, section 1).
#[test]
#[ignore = "prints figures"]
fn references_per_profile_of_the_bench_shape() {
    let n = 20_000;
    let mut p = processor();
    for i in 0..n {
        let ids = json!({"customer_id": format!("B{i:09}"), "email": format!("bench.{i}@example.com"),
            "cookie_id": format!("bc-{i:09}")});
        p.process(&web(&format!("pre-{i}"), i as i64 % 1_440, ids, "login", json!({})), 0)
            .expect("applies");
    }
    let [one_ids, ids, events] = census(&p);
    let per = |(allocs, refs): (usize, usize)| (allocs as f64 / n as f64, refs as f64 / n as f64);
    println!(
        "per profile (texts, references): One IDs {:?}, identifiers {:?}, event ids {:?}",
        per(one_ids),
        per(ids),
        per(events)
    );
    let ns = Namespaces::with_defaults();
    let keys: Vec<_> = [
        ("customer_id", "B000000000"),
        ("email", "bench.0@example.com"),
        ("cookie_id", "bc-000000000"),
    ]
    .iter()
    .map(|(name, v)| ns.normalise(name, v).expect("known").expect("valid"))
    .collect();
    let one_id = p.state.identity.one_id_of(&keys[0]).expect("held");
    println!(
        "text bytes: identifier values {:?}, One ID {}",
        keys.iter().map(|k| k.value().len()).collect::<Vec<_>>(),
        one_id.len()
    );
    assert_eq!(one_ids.0, n, "one One ID a profile");
}
