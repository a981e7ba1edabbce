//! Scale-out stage 1 in the pure core: evidence from several processes,
//! interleaved into one log in any order and folded by each, gives every
//! process the graph one process stitching every event holds: the same
//! partition into profiles and the same One IDs.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;
use crate::evidence::{EvidenceBody, EvidenceRecord, Origin};
use crate::ids::Namespaces;
use crate::output::CommandRef;
use crate::testkit::{core_config, ids_of, web};

/// One event: its minute, its identifiers (namespace, value index), and
/// which process consumes it.
type Ev = (i64, Vec<(usize, usize)>, usize);

const NAMES: [&str; 5] = ["cookie_id", "device_id", "email", "customer_id", "loyalty_id"];

fn processor() -> Processor {
    let ns = Arc::new(Namespaces::with_defaults());
    Processor::new(Arc::new(core_config()), Arc::new(State::new(ns)))
}

fn ids_json(parts: &[(usize, usize)]) -> Value {
    ids_of(&NAMES, parts)
}

fn request() -> ErasureRequest {
    ErasureRequest {
        requested_by: None,
        via: "identity_control",
        requested_at: None,
        command: CommandRef {
            topic: "identity-control".into(),
            partition: 0,
            offset: 0,
        },
    }
}

/// A deterministic shuffle (xorshift), so a failing case replays.
fn shuffle<T>(mut v: Vec<T>, mut seed: u64) -> Vec<T> {
    if seed == 0 {
        return v;
    }
    for i in (1..v.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let j = usize::try_from(seed % (i as u64 + 1)).unwrap_or(0);
        v.swap(i, j);
    }
    v
}

/// What one process of the scale-out run ends with.
struct Ended {
    partition: BTreeMap<OneId, Vec<IdKey>>,
    /// Own events whose journey step ran (not duplicates; erased ones count).
    applied: usize,
    /// Journeys whose One ID is no profile of the graph.
    orphans: usize,
    announced_merges: usize,
    erasures: usize,
}

/// Runs `events` (minute, identifiers, which process consumes it) through
/// `processes` processes sharing one log in the order `seed` interleaves
/// them, each folding the whole log; `forget`: process 0 then publishes a
/// forget of that event's first identifier.
fn scale_out(events: &[Ev], processes: usize, seed: u64, forget: Option<usize>) -> Vec<Ended> {
    let ns = Namespaces::with_defaults();
    let decoded: Vec<ChannelEvent> = events
        .iter()
        .enumerate()
        .map(|(i, (m, parts, _))| web(&format!("e{i}"), *m, ids_json(parts), "login", json!({})))
        .collect();
    // Each process publishes its events' evidence in its consumption order;
    // the log interleaves the processes' records in any order (seed 0: in
    // the order of `events`).
    let mut log: Vec<Vec<u8>> = shuffle(
        decoded
            .iter()
            .enumerate()
            .map(|(i, ev)| {
                let origin = Origin {
                    process: events[i].2 as u64 % processes as u64,
                    seq: i as u64,
                };
                EvidenceRecord::of_event(origin, ev).encode(&ns)
            })
            .collect(),
        seed,
    );
    if let Some(i) = forget {
        let key = decoded[i].ids[0].clone();
        let rec = EvidenceRecord {
            origin: Origin {
                process: 0,
                seq: u64::MAX,
            },
            body: EvidenceBody::Forget { key },
        };
        log.push(rec.encode(&ns));
    }
    (0..processes as u64)
        .map(|me| run_process(me, &log, &decoded, &ns))
        .collect()
}

/// One process: folds the whole log, hands its own events to the journey
/// step as their records come back, then releases everything.
fn run_process(me: u64, log: &[Vec<u8>], decoded: &[ChannelEvent], ns: &Namespaces) -> Ended {
    let mut p = processor();
    let mut applied = 0;
    let mut announced_merges = 0;
    let mut erasures = 0;
    let count = |released: Vec<Released>, applied: &mut usize| {
        for r in released {
            if r.seq.is_some() {
                let done = r.result.expect("applied");
                // Forgotten counts: its step ran and found it erased.
                if !done.duplicate {
                    *applied += 1;
                }
            }
        }
    };
    for bytes in log {
        let rec = EvidenceRecord::decode(bytes, ns).expect("reads back");
        let own = rec.origin.process == me;
        let folded = match &rec.body {
            EvidenceBody::Forget { key } if own => Folded {
                processed: Processed {
                    outputs: p.fold_forget(key, Some(request())),
                    ..Processed::default()
                },
                resolved: None,
            },
            body => p.fold_evidence(body, own),
        };
        for o in &folded.processed.outputs {
            match o {
                Output::Identity(c) if c.change == "merge" => announced_merges += 1,
                Output::Erasure(_) => erasures += 1,
                _ => {}
            }
        }
        if !own {
            assert!(folded.processed.outputs.is_empty(), "only the publisher announces");
        }
        if let (true, Some(resolved), EvidenceBody::Event(_)) = (own, folded.resolved, &rec.body) {
            let seq = rec.origin.seq;
            let ev = decoded[usize::try_from(seq).expect("seq")].clone();
            count(p.offer_resolved(ev, resolved, 0, seq, 0), &mut applied);
        }
    }
    count(p.tick(u64::MAX), &mut applied);
    let graph = &p.state().identity;
    let orphans = p
        .state()
        .journeys
        .iter()
        .filter(|j| graph.profile(j.key()).is_none())
        .count();
    Ended {
        partition: graph.partition(),
        applied,
        orphans,
        announced_merges,
        erasures,
    }
}

/// One process stitching every event in the given order.
fn one_process(events: &[Ev], forget: Option<usize>) -> (BTreeMap<OneId, Vec<IdKey>>, usize) {
    let mut p = processor();
    let mut merges = 0;
    let decoded: Vec<ChannelEvent> = events
        .iter()
        .enumerate()
        .map(|(i, (m, parts, _))| web(&format!("e{i}"), *m, ids_json(parts), "login", json!({})))
        .collect();
    for ev in &decoded {
        merges += p.process(ev, 0).expect("processed").merges;
    }
    if let Some(i) = forget {
        p.forget(&decoded[i].ids[0], request());
    }
    (p.state().identity.partition(), merges)
}

fn event() -> impl Strategy<Value = Ev> {
    (0i64..8, prop::collection::vec((0usize..5, 0usize..4), 1..4), 0usize..3)
}

proptest! {
    #[test]
    fn processes_folding_one_log_hold_the_graph_of_one_process(
        events in prop::collection::vec(event(), 1..30),
        processes in 1usize..4,
        seed in any::<u64>(),
        forget in prop::option::of(any::<prop::sample::Index>()),
    ) {
        let forget = forget.map(|i| i.index(events.len()));
        let (expected, _) = one_process(&events, forget);
        let ended = scale_out(&events, processes, seed, forget);
        let mut applied = 0;
        for (k, e) in ended.iter().enumerate() {
            prop_assert_eq!(&e.partition, &expected, "process {} of {}", k, processes);
            prop_assert_eq!(e.orphans, 0, "a journey left on a profile that went");
            applied += e.applied;
        }
        // Every event's journey step ran on exactly one process.
        prop_assert_eq!(applied, events.len());
        // The forget is announced once, by its publisher.
        let erasures: usize = ended.iter().map(|e| e.erasures).sum();
        prop_assert!(erasures <= 1);
        // Another interleaving of the same records gives the same graph.
        let again = scale_out(&events, processes, (seed.rotate_left(17) ^ 0x9e37) | 1, forget);
        prop_assert_eq!(&again[0].partition, &expected);
    }
}

#[test]
fn a_merge_seen_by_two_processes_is_announced_once_and_moves_the_journey() {
    // Process 0 consumes the web visit, process 1 the login that links it.
    let events = vec![(0, vec![(0, 1)], 0), (1, vec![(3, 1)], 1), (2, vec![(0, 1), (3, 1)], 1)];
    // In this order: the login merges the two profiles (a late event would
    // rebuild the component instead, with no merge to announce).
    let ended = scale_out(&events, 2, 0, None);
    let (expected, merges) = one_process(&events, None);
    assert_eq!(merges, 1);
    assert_eq!(expected.len(), 1, "one person");
    for e in &ended {
        assert_eq!(e.partition, expected);
        assert_eq!(e.orphans, 0);
    }
    let announced: usize = ended.iter().map(|e| e.announced_merges).sum();
    assert_eq!(announced, 1);
}
