//! Scale-out (issue 15, `docs/scaling.md` section 4): a process that gives
//! a state partition up while a checkpoint's flush is still being written
//! leaves the newest journeys of that partition in the changelog.
//!
//! The flush took the journeys as they were at its barrier. Handed off
//! before the flush wrote them, the newer journeys would be followed in
//! the changelog partition by those older ones, and the next restore of
//! the partition (it takes the latest record per One ID) would bring the
//! older ones back, without the events applied since: their routed
//! offsets are committed by then. Found by reading the code while looking
//! for the cause of a rare failure of `tests/scaleout_moves.rs` (a journey
//! without its latest events after a member left; that one was tansu
//! skipping routed records, `docs/scaling.md` section 4). A test binary of
//! its own, so that it does not share the two cores with the other
//! scale-out tests.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use onejourney_e2e::{settings, TestEngine};

#[path = "shared/scaleout.rs"]
mod shared;
use shared::*;

const IN_PROGRESS: &str = "onejourney_checkpoint_in_progress";
const DROPPED: &str = "onejourney_state_partitions_moved_total{change=\"dropped\"}";
const ASSIGN: &str = "onejourney_rebalances_total{kind=\"assign\"}";

/// How long each wait for a metric may take.
const WAIT: Duration = Duration::from_secs(120);

/// x holds every state partition and a checkpoint whose flush is held
/// (`state.checkpoint_hold_file`) while more events change the journeys it
/// took; y joins and takes some partitions; the flush is released. Then y
/// leaves and x restores y's partitions from the changelog: the journeys x
/// holds then are the ones the two held between them before.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partition_given_up_during_a_flush_is_restored_with_its_newest_journeys() {
    if std::env::var_os("ONEJOURNEY_TEST_LOG").is_some() {
        onejourney_engine::logging::init(&settings("log").log);
    }
    let sim = sim();
    let n = sim.events.len();
    let (early, rest) = sim.events.split_at(n / 3);
    let (mid, late) = rest.split_at(rest.len() / 2);

    let mut group = settings("handoff");
    // Every event is published at once, weeks of event time in a second:
    // the window keeps a re-read event a duplicate, not too late (as in
    // `tests/scaleout_moves.rs`).
    group.state.dedupe_window = Duration::from_secs(400 * 86_400);
    group.scaleout.identity_log = true;
    group.scaleout.route_journeys = true;
    group.state.partitions = 8;
    group.state.snapshot_interval = Duration::from_secs(1);
    create_inputs(&group).await;
    let mut xs = member(&group, "x");
    std::fs::create_dir_all(&xs.state.dir).unwrap();
    let hold = xs.state.dir.join("hold-checkpoint");
    xs.state.checkpoint_hold_file = hold.clone();
    let mut x = TestEngine::start(xs).await;

    x.publish_sim(early).await;
    wait_drained(&[&x], early.len(), true).await;
    // The next barrier takes what `mid` changes as it is then; its flush
    // waits for the file while `late` changes the same journeys again.
    std::fs::write(&hold, b"held by the test").unwrap();
    x.publish_sim(mid).await;
    x.wait_metric(IN_PROGRESS, "a flush held", WAIT, |v| v == 1.0).await;
    wait_drained(&[&x], early.len() + mid.len(), true).await;
    x.publish_sim(late).await;
    wait_drained(&[&x], n, true).await;

    // y joins: x gives partitions up while its flush is held.
    let dropped = x.metric(DROPPED).await;
    let mut y = TestEngine::launch(member(&group, "y")).await;
    x.wait_metric(DROPPED, "x gave partitions up", WAIT, |v| v > dropped)
        .await;
    // Released once y has restored what x handed off (x did not wait for
    // its flush), or after 8 s (x waits for it, and y for x: the hand-off
    // wait is 15 s).
    let deadline = Instant::now() + Duration::from_secs(8);
    while y.get_status("/readyz").await != 200 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    std::fs::remove_file(&hold).unwrap();
    y.wait_ready(Duration::from_secs(90)).await;
    wait_drained(&[&x, &y], n, true).await;
    // A few checkpoints: y commits the routed offsets it read again.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut before: BTreeMap<String, String> = journeys_of(&x);
    let of_y = journeys_of(&y);
    let held = (before.len(), of_y.len());
    before.extend(of_y);

    // y leaves: x restores y's partitions from the changelog.
    let assigned = x.metric(ASSIGN).await;
    y.stop().await;
    x.wait_metric(ASSIGN, "x took y's partitions back", WAIT, |v| v > assigned)
        .await;
    x.wait_ready(Duration::from_secs(90)).await;
    wait_drained(&[&x], n, true).await;
    let after = journeys_of(&x);
    x.stop().await;

    let differ = differing(&before, &after);
    eprintln!(
        "journeys held by x, y before y left: {held:?}; {} of {} differ after x restored y's partitions",
        differ.len(),
        before.len()
    );
    for k in differ.iter().take(5) {
        eprintln!("{k}: before {:?}, after {:?}", before.get(*k), after.get(*k));
    }
    assert!(held.1 > 0, "y held no journey: no partition moved");
    assert!(differ.is_empty(), "{} journeys differ after the restore", differ.len());
}
