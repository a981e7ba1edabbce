//! The processor keeps the value population (RFM quintiles, lifetime-value
//! parameters) in step with the journeys: scores on a known population,
//! merges and erasure, and the snapshot.

use serde_json::json;

use super::*;
use crate::decide::value::Population;
use crate::ids::Namespaces;
use crate::journey::{Journey, Rfm};
use crate::output::CommandRef;
use crate::testkit::{core_config, key, one_id, pos, web};

fn processor() -> Processor {
    let ns = Arc::new(Namespaces::with_defaults());
    Processor::new(Arc::new(core_config()), Arc::new(State::new(ns)))
}

fn run(p: &mut Processor, events: &[ChannelEvent]) {
    for e in events {
        p.process(e, 0).expect("valid test event");
    }
}

fn journey(p: &Processor, loyalty: &str) -> Journey {
    let id = one_id(p, "loyalty_id", loyalty);
    let j = p.state().journey(&id).expect("a journey").as_ref().clone();
    j
}

/// The population the processor kept equals one rebuilt from the journeys.
fn assert_in_step(p: &Processor) {
    let mut kept = p.value.clone();
    let mut rebuilt = p.rebuilt_population();
    let buying = p.state().all_journeys().iter().filter(|(_, j)| j.purchases > 0).count() as u64;
    assert_eq!(kept.buyers(), buying);
    assert_eq!(rebuilt.buyers(), buying);
    kept.rfm.recompute();
    rebuilt.rfm.recompute();
    kept.refit();
    rebuilt.refit();
    assert_eq!(kept.rfm, rebuilt.rfm);
    let (k, r) = (kept.parameters(), rebuilt.parameters());
    assert!((k.0 - r.0).abs() < 1e-9 && (k.1 - r.1).abs() < 1e-6, "{k:?} vs {r:?}");
}

#[test]
fn rfm_scores_follow_the_population_quintiles() {
    let mut p = processor();
    // Customer i buys (i / 20 + 1) times, each for 10 x (i + 1), the last at minute 1000 + i.
    let mut events = Vec::new();
    for i in 0..100i64 {
        for k in 0..(i / 20 + 1) {
            let minute = 1000 + i - 500 * (k + 1);
            events.push(pos(
                &format!("p{i}-{k}"),
                minute,
                json!({"loyalty_id": format!("L{i}")}),
                10.0 * (i + 1) as f64,
            ));
        }
        events.push(pos(
            &format!("p{i}"),
            1000 + i * 1440,
            json!({"loyalty_id": format!("L{i}")}),
            10.0 * (i + 1) as f64,
        ));
    }
    run(&mut p, &events);
    // Thresholds follow every 64 changes; bring them up to date for exact figures.
    p.value.rfm.recompute();
    p.value.refit();
    // Scores are set at each evaluation: touch everyone once more.
    let touch: Vec<ChannelEvent> = (0..100i64)
        .map(|i| {
            web(
                &format!("w{i}"),
                200_000 + i,
                json!({"loyalty_id": format!("L{i}")}),
                "page_view",
                json!({}),
            )
        })
        .collect();
    run(&mut p, &touch);
    let rfm = |i: i64| journey(&p, &format!("L{i}")).rfm.expect("a buyer has scores");
    // Last purchases on distinct days in customer order: recency by fifths.
    assert_eq!(rfm(0).r, 1);
    assert_eq!(rfm(19).r, 1);
    assert_eq!(rfm(20).r, 2);
    assert_eq!(rfm(99).r, 5);
    // Frequency: 2 purchases for 0..20, up to 6 for 80..100.
    assert_eq!(rfm(5).f, 1);
    assert_eq!(rfm(85).f, 5);
    assert_eq!(rfm(99), Rfm { r: 5, f: 5, m: 5 });
    for i in 1..100 {
        let (a, b) = (rfm(i - 1), rfm(i));
        assert!(a.r <= b.r && a.f <= b.f && a.m <= b.m, "{i}: {a:?} then {b:?}");
    }
    let clv = |i: i64| journey(&p, &format!("L{i}")).clv.expect("a buyer has a lifetime value");
    assert!(clv(99).value > clv(0).value, "{:?} vs {:?}", clv(99), clv(0));
    assert_in_step(&p);
}

#[test]
fn merges_and_erasure_keep_the_population_in_step() {
    let mut p = processor();
    run(
        &mut p,
        &[
            pos("a", 0, json!({"loyalty_id": "LA"}), 50.0),
            pos("b", 10, json!({"customer_id": "CB"}), 70.0),
            pos("c", 20, json!({"loyalty_id": "LC"}), 20.0),
        ],
    );
    assert_eq!(p.value.buyers(), 3);
    // One event carries both: the two profiles merge into one buyer.
    run(
        &mut p,
        &[pos("d", 30, json!({"loyalty_id": "LA", "customer_id": "CB"}), 5.0)],
    );
    assert_eq!(p.state().journeys.len(), 2, "the two profiles merged");
    assert_eq!(p.value.buyers(), 2);
    assert_in_step(&p);
    let key = key(&p, "loyalty_id", "LC");
    let request = ErasureRequest {
        requested_by: None,
        via: "http",
        requested_at: None,
        command: CommandRef {
            topic: "identity-control".into(),
            partition: 0,
            offset: 1,
        },
    };
    assert!(!p.forget(&key, request).is_empty());
    assert_eq!(p.value.buyers(), 1);
    assert_in_step(&p);
}

#[test]
fn the_population_survives_a_snapshot_and_is_rebuilt_when_absent() {
    let mut p = processor();
    let events: Vec<ChannelEvent> = (0..10i64)
        .map(|i| {
            pos(
                &format!("p{i}"),
                i,
                json!({"loyalty_id": format!("L{i}")}),
                10.0 * (i + 1) as f64,
            )
        })
        .collect();
    run(&mut p, &events);
    let snap: CoreSnapshot =
        rmp_serde::from_slice(&rmp_serde::to_vec(&p.snapshot()).expect("serialises")).expect("reads back");
    let mut q = processor();
    q.restore(snap, 0).expect("restores");
    assert_eq!(q.value, p.value);
    let bytes = rmp_serde::to_vec(&p.snapshot_v6()).expect("serialises");
    // A snapshot written before the population was kept (14 fields, no
    // trailing `value` nor, from format 5, `timer_homes` nor, from format 6,
    // `journey_dict`): rebuilt from the journeys.
    let tail = rmp_serde::to_vec(&p.value).expect("serialises").len()
        + rmp_serde::to_vec(&p.timers.by_home()).expect("serialises").len()
        + rmp_serde::to_vec(&crate::snapshot::Bytes(crate::state::stored::dictionary()))
            .expect("serialises")
            .len();
    assert_eq!(&bytes[..3], &[0xdc, 0, 17], "an array of 17 fields");
    let mut old = vec![0x9e];
    old.extend_from_slice(&bytes[3..bytes.len() - tail]);
    let snap: CoreSnapshot = rmp_serde::from_slice(&old).expect("reads back");
    let mut r = processor();
    r.restore(snap, 0).expect("restores");
    assert_eq!(r.value.buyers(), 10);
    let fresh = Population::default();
    assert_ne!(r.value, fresh);
    assert_in_step(&r);
}
