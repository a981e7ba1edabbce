//! End-to-end: a checkpoint does not stop processing (issue 14).
//!
//! A checkpoint's background flush is held (the `state.checkpoint_hold_file`
//! test hook) while more input arrives: the engine settles every new event
//! while the checkpoint is still being written, reported through the
//! metrics (`onejourney_checkpoint_in_progress`,
//! `onejourney_events_settled_total`); the writer's stall
//! (`onejourney_checkpoint_stall_seconds`) is the longer of the barrier and
//! the longest slice of records taken after it, shorter than the flush it
//! did not wait for, as its phases
//! (`onejourney_checkpoint_stall_phase_seconds`) say. Released,
//! the checkpoint commits, and a restart restores exactly the state the
//! engine stopped with, the journeys the eviction scan (beside the writer,
//! not at the barrier) compacted and the ones it froze (idle for
//! `state.freeze_journeys_after`, kept compressed) included.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use onejourney_e2e::{settings, state_summary, TestEngine};
use onejourney_simulator::{generate, SimConfig};

const IN_PROGRESS: &str = "onejourney_checkpoint_in_progress";
const SETTLED: &str = "onejourney_events_settled_total";
const WRITTEN: &str = "onejourney_snapshots_total{result=\"written\"}";
const STALL: &str = "onejourney_checkpoint_stall_seconds";

const EVICTED: &str = "onejourney_journeys_evicted_total";
const FROZEN: &str = "onejourney_journeys_frozen_total";
const FROZEN_NOW: &str = "onejourney_journeys_frozen";

/// How many journeys keep detail (cart, visits, contact history...).
fn detailed(state: &onejourney_core::State) -> usize {
    state.all_journeys().iter().filter(|(_, j)| j.has_detail()).count()
}

/// How long each wait for a metric may take.
const WAIT: Duration = Duration::from_secs(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_settled_while_a_checkpoint_is_written() {
    let events = generate(&SimConfig {
        customers: 400,
        seed: 7,
        ..SimConfig::default()
    })
    .events;
    let (early, late) = events.split_at(events.len() / 2);
    let mut s = settings("ckpt");
    s.state.snapshot_interval = Duration::from_secs(1);
    // The simulation spans 90 days: customers quiet for 30 lose their
    // journey detail, found by the eviction scan beside the writer.
    s.state.evict_journeys_after = Duration::from_secs(30 * 86_400);
    std::fs::create_dir_all(&s.state.dir).unwrap();
    let hold = s.state.dir.join("hold-checkpoint");
    s.state.checkpoint_hold_file = hold.clone();
    std::fs::write(&hold, b"held by the test").unwrap();

    let mut e = TestEngine::start(s.clone()).await;
    e.publish_sim(early).await;
    e.wait_applied(early.len(), Duration::from_secs(300)).await;
    // A checkpoint's barrier has passed; its flush waits for the hold file.
    e.wait_metric(IN_PROGRESS, "a checkpoint held", WAIT, |v| v == 1.0)
        .await;
    // The writer took the barrier's records after it (capture on first
    // write), in slices between messages; the stall is final once it has.
    e.wait_metric(
        "onejourney_checkpoint_stall_phase_seconds{phase=\"slice\"}",
        "the barrier's records taken",
        WAIT,
        |v| v > 0.0,
    )
    .await;
    let held_at = Instant::now();
    let written = e.metric(WRITTEN).await;
    let settled = e.metric(SETTLED).await;
    let stall = e.metric(STALL).await;
    // The stall by phase, set by the same checkpoint (no other can pass
    // while this flush is held; the flush waits for the slices, so they are
    // done): the barrier's phases add up, and the stall is the longer of the
    // barrier and the longest slice after it.
    let mut phases = Vec::new();
    for phase in ["drain", "capture", "slice"] {
        let v = e
            .metric(&format!(
                "onejourney_checkpoint_stall_phase_seconds{{phase=\"{phase}\"}}"
            ))
            .await;
        assert!(v >= 0.0, "phase {phase}: {v} s");
        phases.push(v);
    }
    let longest = (phases[0] + phases[1]).max(phases[2]);
    assert!(
        (longest - stall).abs() < 1e-6,
        "the stall {stall} is the barrier (drain + capture) or the longest slice, the longer: {phases:?}"
    );

    // More input while the checkpoint is being written: every event settles.
    e.publish_sim(late).await;
    let after = e
        .wait_metric(SETTLED, "the late events settled during the checkpoint", WAIT, |v| {
            v >= settled + late.len() as f64
        })
        .await;
    assert_eq!(
        e.metric(IN_PROGRESS).await,
        1.0,
        "the checkpoint is still being written"
    );
    assert_eq!(e.metric(WRITTEN).await, written, "no checkpoint finished meanwhile");
    let held = held_at.elapsed().as_secs_f64();
    println!(
        "{} events settled while one checkpoint was written (held {held:.2} s); the writer's stall: {:.6} s",
        after - settled,
        stall
    );
    assert!(stall > 0.0, "the barrier's stall is reported");
    assert!(
        stall < held,
        "the writer waited {stall} s: not for the flush, held {held} s"
    );

    // Released: the checkpoint commits; the ones after it too.
    std::fs::remove_file(&hold).unwrap();
    e.wait_metric(WRITTEN, "the held checkpoint written", WAIT, |v| v >= written + 1.0)
        .await;
    e.wait_applied(events.len(), Duration::from_secs(300)).await;
    // Every event is applied: the next scan lists what is past retention,
    // the writer evicts it, and the count stops moving.
    let mut evicted = e.wait_metric(EVICTED, "journeys evicted", WAIT, |v| v > 0.0).await;
    loop {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let now = e.metric(EVICTED).await;
        if now == evicted {
            break;
        }
        evicted = now;
    }
    // The same scan froze the idle journeys (default: an hour without an
    // event, of 90 simulated days).
    // The gauge counts what a walk counts (a scan may run between the two
    // reads: retried).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let walked = e.state().journeys.iter().filter(|j| j.value().is_frozen()).count();
        let (frozen, gauge) = (e.metric(FROZEN).await, e.metric(FROZEN_NOW).await);
        if frozen > 0.0 && walked > 0 && gauge == walked as f64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{frozen} frozen in all, {walked} frozen now, the gauge says {gauge}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let want = state_summary(e.state());
    let want_detailed = detailed(e.state());
    assert!(
        want_detailed < want.len(),
        "{want_detailed} of {} journeys keep detail after {evicted} evictions",
        want.len()
    );
    e.stop().await;

    // A restart restores what the engine stopped with.
    let mut s = s.clone();
    s.state.checkpoint_hold_file = Default::default();
    let mut again = TestEngine::start(s).await;
    let got = state_summary(again.state());
    let got_detailed = detailed(again.state());
    again.stop().await;
    assert_eq!(got.len(), want.len(), "profiles after the restart");
    assert!(got == want, "the same profiles and journeys after the restart");
    assert_eq!(got_detailed, want_detailed, "the evictions were checkpointed");
}
