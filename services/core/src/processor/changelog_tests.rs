//! A processor rebuilt from what its checkpoints wrote to the changelog
//! (identity ops in order, the latest journey per One ID with tombstones,
//! the last globals) is the processor that wrote them: the same graph, to
//! the last writer structure, the same journeys, and the same outputs for
//! whatever comes next; whatever stitches, merges, rebuilds (events out of
//! order), caps, shared devices and forgets happened, and wherever the
//! checkpoints fell.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use proptest::prelude::*;
use serde_json::{json, Map, Value};

use super::*;
use crate::identity::IdentityOp;
use crate::ids::{IdentityLimits, Namespaces};
use crate::journey::Journey;
use crate::testkit::{app, call, core_config, key, pos, product, web};

pub(super) fn processor() -> Processor {
    processor_with(core_config())
}

pub(super) fn processor_with(cfg: crate::CoreConfig) -> Processor {
    let limits = IdentityLimits {
        max_identifiers_per_profile: 4,
        ..Default::default()
    };
    let ns = Namespaces::with_defaults().with_limits(limits).expect("valid limits");
    Processor::new(Arc::new(cfg), Arc::new(State::new(Arc::new(ns))))
}

const NAMES: [&str; 6] = [
    "cookie_id",
    "device_id",
    "email",
    "customer_id",
    "loyalty_id",
    "card_token",
];

fn value(ns: usize, v: usize) -> String {
    format!("{}-{v}@x.io", NAMES[ns])
}

pub(super) fn ids_json(parts: &[(usize, usize)]) -> Value {
    let mut m = Map::new();
    for (ns, v) in parts {
        m.insert(NAMES[*ns].to_string(), Value::from(value(*ns, *v)));
    }
    Value::Object(m)
}

#[derive(Clone, Debug)]
pub(super) enum Step {
    /// Minute, kind (page view, cart, sale, call, app), identifiers.
    Event(i64, u8, Vec<(usize, usize)>),
    Forget(usize, usize),
    /// Evict journey detail older than this many minutes of event time.
    Evict(u64),
    Checkpoint,
}

pub(super) fn step() -> impl Strategy<Value = Step> {
    let ids = prop::collection::vec((0usize..6, 0usize..5), 1..4);
    prop_oneof![
        12 => (0i64..600, 0u8..5, ids).prop_map(|(m, k, ids)| Step::Event(m, k, ids)),
        1 => (0usize..5, 0usize..5).prop_map(|(ns, v)| Step::Forget(ns, v)),
        1 => (1u64..300).prop_map(Step::Evict),
        2 => Just(Step::Checkpoint),
    ]
}

pub(super) fn event(i: usize, minute: i64, kind: u8, ids: Value) -> ChannelEvent {
    let id = format!("e{i}");
    match kind {
        0 => web(&id, minute, ids, "page_view", json!({})),
        1 => web(&id, minute, ids, "add_to_cart", product(&format!("sku-{i}"), 9.5)),
        2 => pos(&id, minute, ids, 20.0 + i as f64),
        3 => call(&id, minute, ids, "complaint", "unresolved"),
        _ => app(&id, minute, ids, "add_to_cart", product("sku-1", 5.0)),
    }
}

/// A journey record as the engine writes it: the journey (none: it went)
/// and the timers homed there.
type Record = (Option<Journey>, Vec<Timer>);

/// What the changelog topics hold, as a restore reads them.
#[derive(Clone, Default)]
struct Changelog {
    identity: Vec<IdentityOp>,
    /// The latest record per One ID; `None`: a tombstone (no journey, no timer).
    journeys: BTreeMap<OneId, Option<Vec<u8>>>,
    globals: Vec<u8>,
    dedupe: DedupeDelta,
    /// The last globals were written by the previous format (version 2):
    /// every timer in them, none in the records.
    legacy_timers: Option<BTreeSet<Timer>>,
}

/// Every armed timer, with its home.
fn timer_homes(p: &Processor) -> Vec<(OneId, Vec<Timer>)> {
    p.timers.homes_sorted()
}

/// Every armed timer.
fn all_timers(p: &Processor) -> BTreeSet<Timer> {
    timer_homes(p).into_iter().flat_map(|(_, t)| t).collect()
}

impl Changelog {
    /// What a checkpoint writes.
    fn checkpoint(&mut self, p: &mut Processor) {
        self.identity.extend(p.take_identity_ops());
        for one_id in p.state().take_dirty() {
            let journey = p.state().journey(&one_id).map(|j| (*j).clone());
            let timers = p.timers_of(&one_id).to_vec();
            let value = (journey.is_some() || !timers.is_empty())
                .then(|| rmp_serde::to_vec_named(&(journey, timers)).expect("encodes"));
            self.journeys.insert(one_id, value);
        }
        self.globals = rmp_serde::to_vec_named(&p.globals()).expect("encodes");
        self.dedupe.extend(p.take_dedupe_delta().0);
        self.legacy_timers = None;
    }

    /// What a checkpoint of the previous format (main before the timers
    /// moved) wrote: each changed journey alone, every timer in the globals.
    fn legacy_checkpoint(&mut self, p: &mut Processor) {
        self.identity.extend(p.take_identity_ops());
        for one_id in p.state().take_dirty() {
            let journey: Option<Journey> = p.state().journey(&one_id).map(|j| (*j).clone());
            let value = journey.map(|j| rmp_serde::to_vec_named(&(Some(j), Vec::<Timer>::new())).expect("encodes"));
            self.journeys.insert(one_id, value);
        }
        self.globals = rmp_serde::to_vec_named(&p.globals()).expect("encodes");
        self.dedupe.extend(p.take_dedupe_delta().0);
        self.legacy_timers = Some(all_timers(p));
    }

    fn globals(&self) -> CoreGlobals {
        let mut globals: CoreGlobals = rmp_serde::from_slice(&self.globals).expect("decodes");
        globals.add_dedupe(self.dedupe.clone());
        if let Some(t) = &self.legacy_timers {
            globals.version = 2;
            globals.timers = t.clone();
        }
        globals
    }

    /// The latest records: journeys, tombstoned One IDs (no journey), timers.
    #[allow(clippy::type_complexity)]
    fn records(&self) -> (Vec<(OneId, Journey)>, Vec<OneId>, Vec<(OneId, Vec<Timer>)>) {
        let (mut journeys, mut gone, mut timers) = (Vec::new(), Vec::new(), Vec::new());
        for (id, v) in &self.journeys {
            let (j, t): Record = match v {
                Some(v) => rmp_serde::from_slice(v).expect("decodes"),
                None => (None, Vec::new()),
            };
            match j {
                Some(j) => journeys.push((id.clone(), j)),
                None => gone.push(id.clone()),
            }
            if !t.is_empty() {
                timers.push((id.clone(), t));
            }
        }
        (journeys, gone, timers)
    }

    fn restore(&self) -> Processor {
        let mut p = processor();
        let globals = self.globals();
        let (journeys, _, timers) = self.records();
        p.restore_changelog(globals, &self.identity, journeys, timers, 0)
            .expect("restores");
        p
    }
}

pub(super) fn journeys(p: &Processor) -> BTreeMap<OneId, String> {
    p.state()
        .journeys
        .iter()
        .map(|j| (j.key().clone(), format!("{:?}", j.value())))
        .collect()
}

pub(super) fn apply(p: &mut Processor, i: usize, s: &Step) -> String {
    match s {
        Step::Event(minute, kind, ids) => format!("{:?}", p.process(&event(i, *minute, *kind, ids_json(ids)), 0)),
        Step::Forget(ns, v) => {
            let rules = p.state().identity.namespaces().clone();
            match rules.normalise(NAMES[*ns], &value(*ns, *v)) {
                Ok(Ok(key)) => format!("{:?}", p.forget(&key, crate::testkit::erasure())),
                _ => String::new(),
            }
        }
        Step::Evict(minutes) => format!("{}", p.evict_journeys(std::time::Duration::from_secs(minutes * 60))),
        Step::Checkpoint => String::new(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn a_processor_restored_from_its_changelog_is_the_one_that_wrote_it(
        steps in prop::collection::vec(step(), 1..60),
        then in prop::collection::vec(step(), 1..15),
    ) {
        let mut a = processor();
        let mut log = Changelog::default();
        for (i, s) in steps.iter().enumerate() {
            if matches!(s, Step::Checkpoint) {
                log.checkpoint(&mut a);
            } else {
                apply(&mut a, i, s);
            }
        }
        log.checkpoint(&mut a);
        prop_assert_eq!(a.state().dirty_count(), 0);
        let mut b = log.restore();
        prop_assert_eq!(b.state().identity.canonical(), a.state().identity.canonical());
        // Each text once, as in the processor that wrote the log.
        super::share_tests::shares_like(&b, &a).map_err(TestCaseError::fail)?;
        prop_assert_eq!(journeys(&b), journeys(&a));
        prop_assert_eq!(b.state().recount(), a.state().recount());
        prop_assert_eq!(b.state().size(), a.state().size());
        prop_assert_eq!(b.state().recent(50), a.state().recent(50));
        prop_assert_eq!(b.pending_timers(), a.pending_timers());
        prop_assert_eq!(timer_homes(&b), timer_homes(&a));
        // The same outputs for what comes next, and the same state after it.
        for (i, s) in then.iter().enumerate() {
            let i = steps.len() + i;
            prop_assert_eq!(apply(&mut b, i, s), apply(&mut a, i, s), "step {} {:?}", i, s);
        }
        prop_assert_eq!(b.state().identity.canonical(), a.state().identity.canonical());
        prop_assert_eq!(journeys(&b), journeys(&a));
    }
}

fn without_sums(p: &Processor) -> String {
    let c = p.state().identity.canonical();
    c.split("\nsums ").next().unwrap_or_default().to_string()
}

/// The tail a local snapshot taken at a checkpoint misses: what the
/// checkpoints after it wrote.
fn restore_with_tail(snapshot: &[u8], tail: &Changelog) -> Processor {
    let mut p = processor();
    let snap: CoreSnapshot = rmp_serde::from_slice(snapshot).expect("decodes");
    p.restore(snap, 0).expect("restores");
    let globals = tail.globals();
    let (journeys, gone, timers) = tail.records();
    p.apply_changelog_tail(globals, &tail.identity, journeys, gone, timers, 0)
        .expect("applies");
    p
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A local snapshot taken at one checkpoint plus the changelog the later
    /// checkpoints wrote (the tail) is the processor that wrote them.
    #[test]
    fn a_local_snapshot_plus_the_changelog_tail_is_the_processor_that_wrote_them(
        before in prop::collection::vec(step(), 0..40),
        after in prop::collection::vec(step(), 1..40),
        then in prop::collection::vec(step(), 1..10),
    ) {
        let mut a = processor();
        let mut log = Changelog::default();
        for (i, s) in before.iter().enumerate() {
            if matches!(s, Step::Checkpoint) { log.checkpoint(&mut a) } else { apply(&mut a, i, s); }
        }
        log.checkpoint(&mut a);
        let snapshot = rmp_serde::to_vec_named(&a.snapshot()).expect("encodes");
        let mut tail = Changelog::default();
        for (i, s) in after.iter().enumerate() {
            let i = before.len() + i;
            if matches!(s, Step::Checkpoint) { tail.checkpoint(&mut a) } else { apply(&mut a, i, s); }
        }
        tail.checkpoint(&mut a);
        let mut b = restore_with_tail(&snapshot, &tail);
        // The graph's size sums left out: a snapshot restore recounts them
        // by a walk that differs from the writer's running sums (as before).
        prop_assert_eq!(without_sums(&b), without_sums(&a));
        prop_assert_eq!(journeys(&b), journeys(&a));
        super::share_tests::shares_like(&b, &a).map_err(TestCaseError::fail)?;
        prop_assert_eq!(b.state().recent(50), a.state().recent(50));
        prop_assert_eq!(b.pending_timers(), a.pending_timers());
        prop_assert_eq!(timer_homes(&b), timer_homes(&a));
        for (i, s) in then.iter().enumerate() {
            let i = before.len() + after.len() + i;
            prop_assert_eq!(apply(&mut b, i, s), apply(&mut a, i, s), "step {} {:?}", i, s);
        }
        prop_assert_eq!(journeys(&b), journeys(&a));
    }
}

/// Only the journeys that changed since the last checkpoint are dirty: a
/// put, a merge-away (gone: tombstone), a forget and an eviction each mark
/// theirs; an untouched journey is not written again.
#[test]
fn only_journeys_changed_since_the_last_take_are_dirty() {
    let mut p = processor();
    let one = |p: &mut Processor, id: &str, minute, ids| {
        p.process(&web(id, minute, ids, "page_view", json!({})), 0)
            .expect("stitched")
            .one_id
            .expect("one id")
    };
    let a = one(&mut p, "a", 0, json!({"cookie_id": "c-a"}));
    let b = one(&mut p, "b", 1, json!({"cookie_id": "c-b"}));
    let c = one(&mut p, "c", 2, json!({"cookie_id": "c-c"}));
    let mut all = vec![a.clone(), b.clone(), c.clone()];
    all.sort();
    assert_eq!(p.state().take_dirty(), all);
    assert!(p.state().take_dirty().is_empty(), "taken");
    one(&mut p, "a2", 3, json!({"cookie_id": "c-a"}));
    assert_eq!(p.state().take_dirty(), vec![a.clone()]);
    // b's profile merges into a's: both change, b's journey goes.
    one(&mut p, "ab", 4, json!({"cookie_id": "c-a", "customer_id": "k-1"}));
    one(&mut p, "ba", 5, json!({"cookie_id": "c-b", "customer_id": "k-1"}));
    let dirty = p.state().take_dirty();
    assert!(dirty.contains(&a) || dirty.contains(&b), "{dirty:?}");
    assert!(!dirty.contains(&c), "c did not change: {dirty:?}");
    let key = key(&p, "cookie_id", "c-c");
    p.forget(&key, crate::testkit::erasure());
    assert_eq!(p.state().take_dirty(), vec![c.clone()]);
    assert!(!p.state().journeys.contains_key(&c), "a tombstone: no journey");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A changelog written by the previous format (every timer in the
    /// globals, journey records without timers) restores to the processor
    /// that wrote it; the restore marks every timer's home changed, so the
    /// next checkpoint writes them with their records, and from then on a
    /// restore from that changelog (old records and new) is that processor
    /// too.
    #[test]
    fn a_changelog_of_the_previous_format_restores_and_is_converted_by_the_next_checkpoint(
        steps in prop::collection::vec(step(), 1..50),
        more in prop::collection::vec(step(), 0..10),
        then in prop::collection::vec(step(), 1..10),
    ) {
        let mut a = processor();
        let mut log = Changelog::default();
        for (i, s) in steps.iter().enumerate() {
            if matches!(s, Step::Checkpoint) { log.legacy_checkpoint(&mut a) } else { apply(&mut a, i, s); }
        }
        log.legacy_checkpoint(&mut a);
        let mut b = log.restore();
        prop_assert_eq!(journeys(&b), journeys(&a));
        prop_assert_eq!(all_timers(&b), all_timers(&a));
        let dirty = b.state().take_dirty();
        for (home, _) in timer_homes(&b) {
            prop_assert!(dirty.contains(&home), "{} not marked changed", home);
        }
        for h in dirty {
            b.state().touched(&h);
        }
        // b goes on, checkpointing in the new format on top of the old records.
        let mut next = log.clone();
        for (i, s) in more.iter().enumerate() {
            let i = steps.len() + i;
            if matches!(s, Step::Checkpoint) {
                next.checkpoint(&mut b);
            } else {
                prop_assert_eq!(apply(&mut b, i, s), apply(&mut a, i, s), "step {} {:?}", i, s);
            }
        }
        next.checkpoint(&mut b);
        let mut c = next.restore();
        prop_assert_eq!(journeys(&c), journeys(&b));
        prop_assert_eq!(timer_homes(&c), timer_homes(&b));
        for (i, s) in then.iter().enumerate() {
            let i = steps.len() + more.len() + i;
            let out = apply(&mut a, i, s);
            prop_assert_eq!(apply(&mut b, i, s), out.clone(), "step {} {:?}", i, s);
            prop_assert_eq!(apply(&mut c, i, s), out, "step {} {:?}", i, s);
        }
    }

    /// A snapshot of format 4 (every timer in `timers`, no homes) restores
    /// to the processor that wrote it, every timer's home marked changed.
    #[test]
    fn a_snapshot_of_format_4_restores_its_timers(
        steps in prop::collection::vec(step(), 1..50),
        then in prop::collection::vec(step(), 1..10),
    ) {
        let mut a = processor();
        for (i, s) in steps.iter().enumerate() {
            apply(&mut a, i, s);
        }
        let bytes = rmp_serde::to_vec_named(&a.snapshot()).expect("encodes");
        let mut snap: CoreSnapshot = rmp_serde::from_slice(&bytes).expect("decodes");
        prop_assert!(snap.timers.is_empty(), "format 5 writes them under their homes");
        snap.version = 4;
        snap.timers = all_timers(&a);
        snap.timer_homes = Vec::new();
        let mut b = processor();
        b.restore(snap, 0).expect("restores");
        prop_assert_eq!(all_timers(&b), all_timers(&a));
        let dirty = b.state().take_dirty();
        for (home, _) in timer_homes(&b) {
            prop_assert!(dirty.contains(&home), "{} not marked changed", home);
        }
        for (i, s) in then.iter().enumerate() {
            let i = steps.len() + i;
            prop_assert_eq!(apply(&mut b, i, s), apply(&mut a, i, s), "step {} {:?}", i, s);
        }
    }
}

/// A timer stays with the record of the journey that armed it: its home's
/// record carries it until it fires, and the firing marks the home changed
/// even when the profile was merged away meanwhile (its record then carries
/// timers and no journey).
#[test]
fn a_timer_is_written_with_its_home_until_it_fires() {
    let mut p = processor();
    let cart = |id: &str, minute, ids| web(id, minute, ids, "add_to_cart", product("sku-1", 9.5));
    let a = p
        .process(&cart("a", 0, json!({"cookie_id": "c-a"})), 0)
        .expect("stitched")
        .one_id
        .expect("one id");
    p.state().take_dirty();
    let armed = p.timers_of(&a).to_vec();
    assert!(
        armed.iter().any(|t| t.1 == TimerKind::Cart),
        "a cart check is armed at its journey: {armed:?}"
    );
    // The profile merges into an older one (customer id first seen there).
    let b = p
        .process(&web("b", 1, json!({"customer_id": "k-1"}), "page_view", json!({})), 0)
        .expect("stitched")
        .one_id
        .expect("one id");
    p.process(
        &web(
            "ab",
            2,
            json!({"cookie_id": "c-a", "customer_id": "k-1"}),
            "page_view",
            json!({}),
        ),
        0,
    )
    .expect("stitched");
    let gone = if p.state().journeys.contains_key(&a) { b } else { a };
    assert!(!p.state().journeys.contains_key(&gone));
    p.state().take_dirty();
    let before = p.timers_of(&gone).to_vec();
    assert!(!before.is_empty(), "its quiet check stays homed there");
    // An event far later releases what is due.
    p.process(
        &web("z", 100_000, json!({"cookie_id": "c-z"}), "page_view", json!({})),
        0,
    )
    .expect("stitched");
    assert!(
        p.state().take_dirty().contains(&gone),
        "its fired timers changed its record"
    );
    let after = p.timers_of(&gone);
    assert!(after.len() < before.len(), "{before:?} -> {after:?}");
    assert!(
        after.iter().all(|t| before.contains(t)),
        "nothing new is homed at a profile merged away"
    );
}
