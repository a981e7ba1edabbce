//! End-to-end: restore from the broker alone (issue 14, the changelog).
//! Engine A processes a simulator stream and stops (gracefully, or with
//! `kill -9` after a checkpoint); engine B starts with an EMPTY state
//! directory on the same group and topics, restores the state from the
//! changelog topics, and goes on: the same profiles (every identifier's One
//! ID), the same journeys and the same decisions as a one-process
//! uninterrupted run, no action id published twice. The checkpoint stall and
//! changelog volume are reported as metrics.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use onejourney_core::{Processor, State};
use onejourney_e2e::process::{free_port, EngineProcess};
use onejourney_e2e::{
    create_topics, publish_sim_on, read_all_on, settings, state_summary, TestEngine, INPUT_PARTITIONS,
};
use onejourney_engine::config::Settings;
use onejourney_engine::durable;
use onejourney_simulator::{generate, SimConfig, SimEvent};

/// A partition stalled by the broker for longer looks idle and its events
/// come in late, which changes decisions (see durability.rs).
fn tolerant(name: &str) -> Settings {
    let mut s = settings(name);
    s.timers.idle_after = Duration::from_secs(10);
    s
}

/// Everything of every profile and journey, to the last field.
fn everything(state: &State) -> BTreeMap<String, String> {
    state
        .identity
        .partition()
        .into_keys()
        .map(|one_id| {
            let profile = state.identity.profile(&one_id);
            let journey = state.journey(&one_id).map(|j| format!("{j:?}"));
            (one_id.to_string(), format!("{profile:?}\n{journey:?}"))
        })
        .collect()
}

fn same(what: &str, got: &BTreeMap<String, String>, want: &BTreeMap<String, String>) {
    let differing: Vec<&String> = want
        .iter()
        .filter(|(k, v)| got.get(*k) != Some(*v))
        .map(|(k, _)| k)
        .take(3)
        .collect();
    assert!(
        got.len() == want.len() && differing.is_empty(),
        "{what}: {} profiles vs {}; differing: {differing:?}",
        got.len(),
        want.len()
    );
}

/// Action ids on the actions topic, each with how many times it is there.
async fn action_ids(s: &Settings) -> BTreeMap<String, usize> {
    let mut ids = BTreeMap::new();
    for r in read_all_on(&s.kafka.brokers, &s.topics.next_best_actions).await {
        let id = r.json()["action_id"].as_str().unwrap().to_string();
        *ids.entry(id).or_insert(0) += 1;
    }
    ids
}

fn same_actions(case: &str, got: &BTreeMap<String, usize>, want: &BTreeMap<String, usize>) {
    let twice: Vec<_> = got.iter().filter(|(_, n)| **n > 1).map(|(k, _)| k).take(3).collect();
    let missing: Vec<_> = want.keys().filter(|k| !got.contains_key(*k)).take(3).collect();
    let extra: Vec<_> = got.keys().filter(|k| !want.contains_key(*k)).take(3).collect();
    println!("  {case}: {} action ids", got.len());
    assert!(twice.is_empty(), "{case}: action ids published twice, e.g. {twice:?}");
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{case}: the uninterrupted run's action ids: missing {missing:?}, extra {extra:?}"
    );
}

/// A state directory that does not exist yet (an empty disk).
fn empty_dir(s: &Settings, name: &str) -> PathBuf {
    let dir = s
        .state
        .dir
        .with_file_name(format!("{}-{name}", s.state.dir.file_name().unwrap().to_string_lossy()));
    assert!(!dir.exists());
    dir
}

/// How many journeys the engine logging to `log` restored from the broker.
fn restored_journeys(log: &std::path::Path) -> u64 {
    let text = std::fs::read_to_string(log).unwrap();
    // Without the terminal colours: ESC [ ... m.
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|c| *c == 'm');
        } else {
            plain.push(c);
        }
    }
    let line = plain
        .lines()
        .find(|l| l.contains("state restored from the changelog on the broker"))
        .unwrap_or_else(|| panic!("no restore from the broker in {}", log.display()));
    let at = line.find(" journeys=").expect("journeys field") + " journeys=".len();
    line[at..].split(' ').next().unwrap().parse().unwrap()
}

fn sim() -> Vec<SimEvent> {
    generate(&SimConfig {
        customers: 1_200,
        seed: 41,
        ..SimConfig::default()
    })
    .events
}

/// A stops after the first part of the stream; B, on an empty disk,
/// restores A's state exactly from the broker and processes the rest like
/// one uninterrupted run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_on_an_empty_disk_restores_from_the_changelog_and_goes_on_as_one_run() {
    let events = sim();
    let n = events.len();
    let (early, late) = events.split_at(n / 2);

    // The reference: one process, the same two parts.
    let mut reference = TestEngine::start(tolerant("cl-ref")).await;
    reference.publish_sim(early).await;
    reference.wait_applied(early.len(), Duration::from_secs(300)).await;
    reference.publish_sim(late).await;
    reference.wait_applied(n, Duration::from_secs(300)).await;
    let want_state = state_summary(reference.state());
    let ref_settings = reference.settings.clone();
    reference.stop().await;
    let want_actions = action_ids(&ref_settings).await;
    assert!(want_actions.len() > 500, "{} actions", want_actions.len());

    // A: the first part, checkpointing every second.
    let mut s = tolerant("cl");
    s.state.snapshot_interval = Duration::from_secs(1);
    let mut a = TestEngine::start(s.clone()).await;
    a.publish_sim(early).await;
    a.wait_applied(early.len(), Duration::from_secs(300)).await;
    const WRITTEN: &str = "onejourney_snapshots_total{result=\"written\"}";
    let after = a.metric(WRITTEN).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while a.metric(WRITTEN).await < after + 1.0 {
        assert!(Instant::now() < deadline, "no checkpoint after the first part");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    checkpoint_metrics(&a, a.state().journeys.len(), early.len()).await;
    let a_live = a.engine.as_ref().expect("running").state.clone();
    a.stop().await;
    let a_state = everything(&a_live);
    assert!(a_state.len() > 500, "{} profiles", a_state.len());

    // B: same group and topics, an empty state directory.
    let mut s = s.clone();
    s.state.dir = empty_dir(&s, "b");
    let mut b = TestEngine::start(s.clone()).await;
    same(
        "B restored from the broker vs A at its stop",
        &everything(b.state()),
        &a_state,
    );
    b.publish_sim(late).await;
    // B's counters start at zero: it consumes the second part only.
    b.wait_applied(late.len(), Duration::from_secs(300)).await;
    same(
        "B after the rest vs the uninterrupted run",
        &state_summary(b.state()),
        &want_state,
    );
    b.stop().await;
    same_actions("A then B", &action_ids(&s).await, &want_actions);
}

/// After a checkpoint: the stall is reported, and the changelog carries at
/// least every journey once, one marker per checkpoint, and bytes.
async fn checkpoint_metrics(e: &TestEngine, journeys: usize, events: usize) {
    let stall = e.metric("onejourney_checkpoint_stall_seconds").await;
    let mut records = BTreeMap::new();
    for kind in ["journey", "marker", "globals", "identity"] {
        let sample = format!("onejourney_changelog_records_total{{kind=\"{kind}\"}}");
        records.insert(kind, e.metric(&sample).await);
    }
    let bytes = e.metric("onejourney_changelog_bytes_total{kind=\"journey\"}").await;
    let (written_journeys, markers, globals, identity) = (
        records["journey"],
        records["marker"],
        records["globals"],
        records["identity"],
    );
    let checkpoints = e.metric("onejourney_snapshots_total{result=\"written\"}").await;
    let mut all_bytes = 0.0;
    for kind in ["journey", "tombstone", "identity", "globals", "marker"] {
        let b = e
            .metric(&format!("onejourney_changelog_bytes_total{{kind=\"{kind}\"}}"))
            .await;
        print!("  {kind} {b} bytes;");
        all_bytes += b;
    }
    println!(
        " {:.0} changelog bytes per 1,000 events ({events} events, {checkpoints} checkpoints)",
        all_bytes * 1000.0 / events as f64
    );
    println!(
        "  checkpoint stall {stall:.4} s; changelog: {written_journeys} journeys ({bytes} bytes), {identity} identity \
         records, {globals} globals chunks, {markers} markers, {checkpoints} snapshots"
    );
    assert!(stall > 0.0, "the checkpoint stall is reported");
    assert!(
        written_journeys >= journeys as f64,
        "every journey written at least once"
    );
    assert!(bytes > written_journeys, "journey bytes counted");
    assert!(
        identity >= 1.0 && globals >= markers,
        "identity ops and globals written"
    );
    // The first checkpoint (the empty state's) writes no marker; each other does.
    assert!(
        markers >= 1.0 && markers + 1.0 >= checkpoints,
        "{markers} markers, {checkpoints} snapshots"
    );
}

/// A is killed with -9 after a checkpoint, in the middle of the backlog; B
/// on an empty disk restores the last committed checkpoint from the broker
/// and finishes: the uninterrupted run's actions, each once, and its state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_kill_9_an_engine_on_an_empty_disk_restores_the_last_checkpoint_from_the_broker() {
    let events = sim();
    let n = events.len();
    let s = tolerant("clk-ref");
    let inputs: Vec<&str> = s.topics.consumed();
    create_topics(&inputs, INPUT_PARTITIONS).await;
    publish_sim_on(&s, &events).await;
    let mut reference = TestEngine::start(s).await;
    reference.wait_applied(n, Duration::from_secs(300)).await;
    let want_state = state_summary(reference.state());
    let ref_settings = reference.settings.clone();
    reference.stop().await;
    let want_actions = action_ids(&ref_settings).await;

    let mut s = tolerant("clk");
    s.state.snapshot_interval = Duration::from_secs(2);
    s.kafka.group_instance_id = String::from("engine-0");
    let inputs: Vec<&str> = s.topics.consumed();
    create_topics(&inputs, INPUT_PARTITIONS).await;
    std::fs::create_dir_all(&s.state.dir).unwrap();
    let config = s.state.dir.join("engine.toml");
    std::fs::write(&config, s.to_masked_toml().unwrap()).unwrap();
    publish_sim_on(&s, &events).await;
    let log = s.state.dir.join("engine.log");
    let a = EngineProcess::spawn(&config, free_port(), &log);
    a.wait_ready(Duration::from_secs(120)).await;
    // Wait for 40% of the backlog and markers that commit at least 200
    // journey records: the first checkpoints (while the consumer joins)
    // commit an empty state, and one that took its barrier before the
    // backlog was applied commits a handful (12 in a run on a loaded
    // machine, session 25), fewer than B must restore below.
    const JOURNEYS: &str = "onejourney_changelog_records_total{kind=\"journey\"}";
    const MARKERS: &str = "onejourney_changelog_records_total{kind=\"marker\"}";
    let deadline = Instant::now() + Duration::from_secs(300);
    while a.metric("onejourney_events_consumed_total").await < 0.4 * n as f64 || a.sample(JOURNEYS).await < 200.0 {
        assert!(
            Instant::now() < deadline,
            "A did not reach 40% of the backlog and write journeys"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let markers = a.sample(MARKERS).await;
    while a.sample(MARKERS).await < markers + 1.0 {
        assert!(Instant::now() < deadline, "A wrote no marker after its first journeys");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let consumed = a.metric("onejourney_events_consumed_total").await;
    a.kill_9();
    println!("A killed with -9 after {consumed} of {n} events");

    let b_dir = empty_dir(&s, "b");
    let b_log = s.state.dir.join("engine-b.log");
    let b = EngineProcess::spawn_with(
        &config,
        free_port(),
        &b_log,
        &[],
        &[
            ("ONEJOURNEY__STATE__DIR", b_dir.to_str().unwrap()),
            ("ONEJOURNEY__STATE__SNAPSHOT_INTERVAL", "1s"),
        ],
    );
    b.wait_ready(Duration::from_secs(120)).await;
    let journeys = restored_journeys(&b_log);
    println!("B restored {journeys} journeys from the broker");
    assert!(
        journeys > 100,
        "B restored A's journeys from the broker (see {})",
        b_log.display()
    );
    onejourney_e2e::wait_committed(
        &s.kafka.group_id,
        &s.topics.consumed(),
        INPUT_PARTITIONS,
        n,
        Duration::from_secs(300),
        "B",
    )
    .await;
    b.terminate();
    same_actions("A killed, B from the broker", &action_ids(&s).await, &want_actions);

    let mut b_settings = s.clone();
    b_settings.state.dir = b_dir;
    let (_, core) = durable::read(&durable::path(&b_settings), |_| {})
        .unwrap()
        .expect("B's snapshot");
    let mut p = Processor::new(Arc::new(s.core()), Arc::new(State::new(s.namespaces().unwrap())));
    p.restore(core, 0).unwrap();
    same(
        "B's state at its stop vs the uninterrupted run",
        &state_summary(p.state()),
        &want_state,
    );
}
