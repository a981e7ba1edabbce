//! Frozen journeys on realistic data: every journey of a simulated
//! population (months of web, store, app and call-center history, carts,
//! decisions, outcomes) reads back equal after freezing, and the compiled-in
//! dictionary still fits them (`core/src/state/stored.rs`; retrain it with
//! the `journey_dict` example when this fails on the ratio).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use onejourney_bench::simulated::population;
use onejourney_core::EventTime;
use onejourney_engine::config::Settings;

#[test]
fn simulated_journeys_read_back_equal_and_four_times_smaller_frozen() {
    // Another seed than the dictionary was trained on.
    let (state, _) = population(&Settings::defaults().unwrap(), 2_000, 1234).unwrap();
    let mut before = state.all_journeys();
    before.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(before.len() > 1_500, "{} journeys", before.len());
    // Against what the changelog writes of them (MessagePack).
    let encoded: usize = before.iter().map(|(_, j)| rmp_serde::to_vec(&**j).unwrap().len()).sum();

    state.take_dirty();
    let live_bytes = state.size().bytes;
    let frozen = state.freeze_idle(EventTime(i64::MAX / 2));
    assert_eq!(frozen, before.len(), "every journey idle and clean is frozen");
    assert_eq!(state.size(), state.recount());

    let mut after = state.all_journeys();
    after.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(before == after, "every journey reads back equal");

    let packed: usize = state
        .journeys
        .iter()
        .map(|e| match e.value() {
            onejourney_core::state::Stored::Frozen(b) => b.len(),
            onejourney_core::state::Stored::Live(_) => unreachable!("all frozen"),
        })
        .sum();
    let ratio = encoded as f64 / packed as f64;
    eprintln!(
        "{} journeys: {:.0} bytes encoded, {:.0} frozen ({ratio:.1}x); state estimate {live_bytes} -> {}",
        before.len(),
        encoded as f64 / before.len() as f64,
        packed as f64 / before.len() as f64,
        state.size().bytes
    );
    // 4.5x when the dictionary was trained (session 11).
    assert!(ratio > 3.5, "the dictionary no longer fits the journeys: {ratio:.2}x");
    assert!(
        state.size().bytes * 2 < live_bytes,
        "the state estimate at least halves"
    );
}
