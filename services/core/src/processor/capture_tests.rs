//! Capture on first write (`capture.rs`) takes each pending record as it
//! was at the barrier, whatever the writer does to it afterwards: checked
//! against the records read at the barrier itself, over random streams of
//! events (stitches, merges, timers firing), forgets, outcomes and
//! evictions, in one process and with only some state partitions owned
//! (merges into another process's profile hand journeys, timers and applied
//! keys over), with the pending records also taken in slices of random
//! sizes between steps, with no dedupe window and with one shorter than
//! the events' spread (applied-key lists then expire between steps,
//! `moving.rs`'s `expire_kept`). And the capture changes nothing the
//! writer does.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::changelog_tests::{apply, event, ids_json, journeys, processor, processor_with, step, Step};
use super::*;
use crate::output::Output;

/// A record, comparable: journey (as text), timers and applied keys sorted.
type Plain = (Option<String>, Vec<Timer>, Vec<AppliedKey>, EventTime);

fn plain(r: Record) -> (OneId, Plain) {
    let (one_id, journey, mut timers, (mut applied, applied_to)) = r;
    timers.sort();
    applied.sort_unstable();
    (one_id, (journey.map(|j| format!("{j:?}")), timers, applied, applied_to))
}

/// The records of the changed One IDs as they are now, read one by one:
/// what the barrier took before capture on first write.
fn at_barrier(p: &mut Processor) -> BTreeMap<OneId, Plain> {
    let applied_to = p.applied_to();
    p.state()
        .take_dirty()
        .into_iter()
        .filter(|id| p.owns(id))
        .map(|id| {
            let journey = p.state().journey(&id);
            let timers = p.timers_of(&id).to_vec();
            let applied = p.applied_of(&id);
            plain((id, journey, timers, (applied, applied_to)))
        })
        .collect()
}

/// An outcome for the `n`-th action decided so far (a journey changed in
/// place by `update_journey`).
fn outcome_of(actions: &[(String, OneId)], n: usize, kind: u8) -> Option<ActionOutcome> {
    let (action_id, one_id) = actions.get(n % actions.len().max(1))?;
    let outcome = ["delivered", "clicked", "converted", "dismissed"][usize::from(kind % 4)];
    Some(ActionOutcome {
        action_id: action_id.clone(),
        one_id: one_id.to_string(),
        outcome: serde_json::from_value(serde_json::json!(outcome)).ok()?,
        at: crate::testkit::at(700),
    })
}

/// One step, then maybe an outcome of an action decided so far.
fn run(
    p: &mut Processor,
    i: usize,
    s: &Step,
    outcome: Option<(usize, u8)>,
    actions: &mut Vec<(String, OneId)>,
) -> String {
    let mut log = match s {
        Step::Event(minute, kind, ids) => {
            let r = p.process(&event(i, *minute, *kind, ids_json(ids)), 0);
            if let Ok(done) = &r {
                for o in &done.outputs {
                    if let Output::Action(a) = o {
                        actions.push((a.action_id.clone(), a.one_id.clone()));
                    }
                }
            }
            format!("{r:?}")
        }
        other => apply(p, i, other),
    };
    if let Some(o) = outcome.and_then(|(n, k)| outcome_of(actions, n, k)) {
        log.push_str(&format!("{:?}", p.outcome(&o)));
    }
    log
}

fn owning(p: &mut Processor, owned: &[u32]) {
    if !owned.is_empty() {
        p.set_ownership(Some(Ownership {
            partitions: 4,
            owned: owned.iter().copied().collect(),
        }));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn records_taken_on_first_write_are_the_records_at_the_barrier(
        steps in prop::collection::vec((step(), prop::option::of((0usize..8, 0u8..4)), 0usize..6), 1..50),
        barrier in any::<prop::sample::Index>(),
        owned in prop::sample::subsequence(vec![0u32, 1, 2, 3], 0..=4),
        window_minutes in prop::sample::select(vec![0u64, 120]),
    ) {
        let cfg = crate::CoreConfig {
            dedupe_window: Duration::from_secs(window_minutes * 60),
            ..crate::testkit::core_config()
        };
        let (mut a, mut b) = (processor_with(cfg.clone()), processor_with(cfg));
        owning(&mut a, &owned);
        owning(&mut b, &owned);
        let (mut acts_a, mut acts_b) = (Vec::new(), Vec::new());
        let k = barrier.index(steps.len() + 1);
        for (i, (s, o, _)) in steps[..k].iter().enumerate() {
            prop_assert_eq!(run(&mut a, i, s, *o, &mut acts_a), run(&mut b, i, s, *o, &mut acts_b));
        }
        let expected = at_barrier(&mut a);
        let pending = b.begin_capture();
        prop_assert!(pending >= expected.len());
        for (i, (s, o, slice)) in steps[k..].iter().enumerate() {
            let i = k + i;
            prop_assert_eq!(run(&mut a, i, s, *o, &mut acts_a), run(&mut b, i, s, *o, &mut acts_b));
            b.capture_pending(*slice);
        }
        b.capture_pending(usize::MAX);
        let captured = b.take_captured().expect("none pending");
        prop_assert!(!b.capturing());
        prop_assert!(captured.by_write <= captured.records.len());
        let got: BTreeMap<OneId, Plain> = captured.records.into_iter().map(plain).collect();
        prop_assert_eq!(got, expected);
        // The capture changed nothing the writer did or holds.
        prop_assert_eq!(journeys(&b), journeys(&a));
        prop_assert_eq!(b.timers.homes_sorted(), a.timers.homes_sorted());
        prop_assert_eq!(b.state().take_dirty(), a.state().take_dirty());
    }
}

/// A write to a pending record takes it first; the slices take the rest.
#[test]
fn a_write_takes_its_record_first_and_slices_take_the_rest() {
    let mut p = processor();
    for i in 0..3 {
        p.process(&event(i, 0, 0, ids_json(&[(0, i)])), 0).expect("applies");
    }
    let c0 = crate::testkit::one_id(&p, "cookie_id", "cookie_id-0@x.io");
    let before = p.state().journey(&c0).map(|j| format!("{j:?}"));
    assert_eq!(p.begin_capture(), 3);
    assert_eq!(p.capture_pending_count(), 3);
    assert!(p.take_captured().is_none(), "records still pending");
    // The first cookie comes back: its record is taken before the event
    // changes it.
    p.process(&event(9, 5, 0, ids_json(&[(0, 0)])), 0).expect("applies");
    assert_eq!(p.capture_pending_count(), 2);
    assert_eq!(p.capture_pending(1), 1);
    assert_eq!(p.capture_pending(10), 0);
    let captured = p.take_captured().expect("none pending");
    assert_eq!((captured.records.len(), captured.by_write), (3, 1));
    let (_, journey, _, _) = captured.records.iter().find(|r| r.0 == c0).expect("its record");
    assert_eq!(journey.as_ref().map(|j| format!("{j:?}")), before, "as at the barrier");
    assert_ne!(
        p.state().journey(&c0).map(|j| format!("{j:?}")),
        before,
        "the event changed it since"
    );
    // The event after the barrier is in the next checkpoint.
    assert_eq!(p.state().take_dirty(), vec![c0]);
}
