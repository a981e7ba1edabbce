//! End-to-end: durability (issue #5). A `kill -9` at a random moment loses
//! nothing and publishes nothing twice; the broker stopping for 30 seconds
//! and a missing topic at start leave the engine alive, not ready, and
//! catching up afterwards.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use onejourney_core::{Processor, State};
use onejourney_e2e::process::{free_port, EngineProcess};
use onejourney_e2e::{
    create_topics, create_topics_on, publish_sim_on, read_all_on, settings, state_summary, Record, TestEngine,
    INPUT_PARTITIONS,
};
use onejourney_engine::config::Settings;
use onejourney_engine::durable;
use onejourney_simulator::{generate, SimConfig};
use serde_json::Value;

/// Output records of one run: next-best-actions by action id, and the other
/// two topics as sorted payloads.
#[derive(Debug, PartialEq)]
struct Outputs {
    actions: BTreeMap<String, String>,
    duplicate_action_ids: usize,
    churn: Vec<String>,
    identity: Vec<String>,
}

async fn outputs(brokers: &str, s: &Settings) -> Outputs {
    let t = &s.topics;
    let actions = read_all_on(brokers, &t.next_best_actions).await;
    let churn = read_all_on(brokers, &t.churn_risk).await;
    let identity = read_all_on(brokers, &t.identity_changes).await;
    let mut by_id = BTreeMap::new();
    let mut duplicates = 0;
    for r in &actions {
        let v: Value = r.json();
        let id = v["action_id"].as_str().unwrap().to_string();
        if by_id
            .insert(id, String::from_utf8_lossy(&r.payload).to_string())
            .is_some()
        {
            duplicates += 1;
        }
    }
    let sorted = |rs: Vec<Record>| {
        let mut v: Vec<String> = rs
            .iter()
            .map(|r| String::from_utf8_lossy(&r.payload).to_string())
            .collect();
        v.sort();
        v
    };
    Outputs {
        actions: by_id,
        duplicate_action_ids: duplicates,
        churn: sorted(churn),
        identity: sorted(identity),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_at_a_random_moment_loses_nothing_and_publishes_nothing_twice() {
    let sim = generate(&SimConfig {
        customers: 7_600,
        seed: 23,
        ..SimConfig::default()
    });
    let n = sim.events.len();
    assert!(n >= 200_000, "{n} events");
    let slow_partition_tolerance = |s: &mut Settings| {
        // A partition stalled by the broker for longer looks idle and its
        // events come in late, which changes decisions (see replay.rs).
        s.timers.idle_after = Duration::from_secs(10);
    };

    // The reference: one uninterrupted run over the same backlog (published
    // before the engine starts, as for the crash run below).
    let mut s = settings("dur-ref");
    slow_partition_tolerance(&mut s);
    let inputs: Vec<String> = s.topics.consumed().iter().map(|t| t.to_string()).collect();
    create_topics(&inputs.iter().map(String::as_str).collect::<Vec<_>>(), INPUT_PARTITIONS).await;
    publish_sim_on(&s, &sim.events).await;
    let mut reference = TestEngine::start(s).await;
    reference.wait_applied(n, Duration::from_secs(900)).await;
    println!(
        "uninterrupted run: {} late events",
        reference.metric("onejourney_events_late_total").await
    );
    let want_actions = reference.metric("onejourney_actions_emitted_total").await;
    let ref_state = state_summary(reference.state());
    let ref_settings = reference.settings.clone();
    reference.stop().await;
    let expected = outputs(&ref_settings.kafka.brokers, &ref_settings).await;
    assert!(expected.actions.len() > 10_000, "{} actions", expected.actions.len());
    assert_eq!(expected.duplicate_action_ids, 0);

    // The same input, with a kill -9 in the middle.
    let mut s = settings("dur-crash");
    slow_partition_tolerance(&mut s);
    s.state.snapshot_interval = Duration::from_secs(3);
    // Static membership, as in the Kubernetes manifests: the restarted process
    // takes the killed one's place in the group at once.
    s.kafka.group_instance_id = String::from("engine-0");
    let inputs: Vec<String> = s.topics.consumed().iter().map(|t| t.to_string()).collect();
    create_topics(&inputs.iter().map(String::as_str).collect::<Vec<_>>(), INPUT_PARTITIONS).await;
    let dir = s.state.dir.clone();
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("engine.toml");
    std::fs::write(&config, s.to_masked_toml().unwrap()).unwrap();
    let log = dir.join("engine.log");
    publish_sim_on(&s, &sim.events).await;

    let port = free_port();
    let first = EngineProcess::spawn(&config, port, &log);
    first.wait_ready(Duration::from_secs(120)).await;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let kill_at = (n as f64 * (0.3 + 0.4 * f64::from(nanos % 1000) / 1000.0)) as usize;
    let deadline = Instant::now() + Duration::from_secs(900);
    while first.metric("onejourney_events_consumed_total").await < kill_at as f64
        || first.sample("onejourney_snapshot_bytes").await < 1_000_000.0
    {
        assert!(
            Instant::now() < deadline,
            "the first run did not reach {kill_at} events"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Then a random moment within the next snapshot interval, so that some
    // outputs are published after the snapshot the restart will restore.
    tokio::time::sleep(Duration::from_millis(300 + u64::from(nanos % 2_500))).await;
    let consumed_before = first.metric("onejourney_events_consumed_total").await;
    let late_before = first.metric("onejourney_events_late_total").await;
    let published_before = first.metric("onejourney_actions_emitted_total").await;
    first.kill_9();
    println!(
        "killed with -9 after {consumed_before} of {n} events ({published_before} actions published, {late_before} late events)"
    );

    // Kept for post-mortems: the snapshot the restart restores.
    let _ = std::fs::copy(durable::path(&s), dir.join("restored.snapshot.copy"));
    let restarted_at = Instant::now();
    let second = EngineProcess::spawn(&config, port, &log);
    let ready_after = second.wait_ready(Duration::from_secs(300)).await;
    println!(
        "restarted: ready after {:.2} s (state restored in {:.2} s)",
        ready_after.as_secs_f64(),
        second.metric("onejourney_state_restore_seconds").await,
    );
    // Done when the committed offsets (written by checkpoints, after the state
    // they cover) account for every input message: the inputs hold exactly
    // the n simulator events, from offset 0.
    onejourney_e2e::wait_committed(
        &s.kafka.group_id,
        &inputs,
        INPUT_PARTITIONS,
        n,
        Duration::from_secs(900),
        "the restarted run",
    )
    .await;
    println!(
        "caught up {:.1} s after the restart ({} late events, {} identity rebuilds, {} duplicates after it); \
         {} regenerated outputs not published again",
        restarted_at.elapsed().as_secs_f64(),
        second.metric("onejourney_events_late_total").await,
        second.metric("onejourney_identity_rebuilds_total").await,
        second.metric("onejourney_events_duplicate_total").await,
        second.metric("onejourney_outputs_deduplicated_total").await,
    );
    second.terminate();

    let got = outputs(&s.kafka.brokers, &s).await;
    assert_eq!(got.duplicate_action_ids, 0, "no action published twice");
    let missing: Vec<&String> = expected
        .actions
        .keys()
        .filter(|k| !got.actions.contains_key(*k))
        .take(3)
        .collect();
    let extra: Vec<&String> = got
        .actions
        .keys()
        .filter(|k| !expected.actions.contains_key(*k))
        .take(3)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "the same action ids as the uninterrupted run ({} vs {want_actions}): missing {missing:?}, extra {extra:?}",
        got.actions.len()
    );
    let same_payload = got
        .actions
        .iter()
        .filter(|(k, v)| expected.actions.get(*k) == Some(*v))
        .count();
    println!(
        "{} actions, {same_payload} byte-identical to the uninterrupted run's; {} churn-risk records ({} in the uninterrupted run)",
        got.actions.len(),
        got.churn.len(),
        expected.churn.len()
    );
    assert!(got.identity == expected.identity, "the same identity-changes records");

    // The state the graceful stop saved equals the uninterrupted run's.
    let (_, core) = durable::read(&durable::path(&s), |_| {}).unwrap().expect("a snapshot");
    let mut p = Processor::new(Arc::new(s.core()), Arc::new(State::new(s.namespaces().unwrap())));
    p.restore(core, 0).unwrap();
    let got_state = state_summary(p.state());
    assert_eq!(got_state.len(), ref_state.len(), "profiles");
    let differing: Vec<&String> = ref_state
        .iter()
        .filter(|(k, v)| got_state.get(*k) != Some(*v))
        .map(|(k, _)| k)
        .take(3)
        .collect();
    assert!(
        differing.is_empty(),
        "profiles, identifiers and journeys equal; differing: {differing:?}"
    );
}

/// A tansu broker of its own, with its data in SQLite files that survive it.
struct OwnBroker {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
}

impl OwnBroker {
    fn start(dir: &Path, port: u16) -> OwnBroker {
        let mut b = OwnBroker {
            child: None,
            dir: dir.to_path_buf(),
            port,
        };
        b.up();
        b
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn up(&mut self) {
        let bin = std::env::var("ONEJOURNEY_TANSU")
            .expect("ONEJOURNEY_TANSU is not set: run `make test` (scripts/with-broker.sh sets it)");
        std::fs::create_dir_all(&self.dir).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("tansu.log"))
            .unwrap();
        let url = format!("tcp://{}", self.addr());
        let child = Command::new(bin)
            .current_dir(&self.dir)
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(self.addr()).is_err() {
            assert!(Instant::now() < deadline, "tansu did not listen");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            let _ = c.wait();
        }
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_topic_and_a_broker_down_for_30_seconds_lose_nothing() {
    let sim = generate(&SimConfig {
        customers: 250,
        seed: 31,
        ..SimConfig::default()
    });
    let n = sim.events.len();
    let (early, late) = sim.events.split_at(n / 2);

    // Reference: the same events on the shared broker, uninterrupted.
    let mut reference = TestEngine::start(settings("outage-ref")).await;
    reference.publish_sim(&sim.events).await;
    reference.wait_applied(n, Duration::from_secs(300)).await;
    let ref_settings = reference.settings.clone();
    reference.stop().await;
    let expected = outputs(&ref_settings.kafka.brokers, &ref_settings).await;

    let mut s = settings("outage");
    let mut broker = OwnBroker::start(&s.state.dir.join("broker"), free_port());
    s.kafka.brokers = broker.addr();
    // The engine starts before its input topics exist: alive, not ready.
    let mut e = TestEngine::launch(s.clone()).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(e.get_status("/healthz").await, 200);
    assert_eq!(
        e.get_status("/readyz").await,
        503,
        "not ready while an input topic is missing"
    );
    let inputs: Vec<String> = s.topics.consumed().iter().map(|t| t.to_string()).collect();
    create_topics_on(
        &broker.addr(),
        &inputs.iter().map(String::as_str).collect::<Vec<_>>(),
        INPUT_PARTITIONS,
    )
    .await;
    e.wait_ready(Duration::from_secs(120)).await;
    e.publish_sim(early).await;
    e.wait_applied(early.len(), Duration::from_secs(300)).await;

    // The broker goes away for 30 seconds.
    broker.down();
    let down_at = Instant::now();
    let mut went_unready = None;
    while down_at.elapsed() < Duration::from_secs(30) {
        assert_eq!(e.get_status("/healthz").await, 200, "alive while the broker is down");
        if went_unready.is_none() && e.get_status("/readyz").await == 503 {
            went_unready = Some(down_at.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let went_unready = went_unready.expect("not ready while the broker is down");
    broker.up();
    let back_at = Instant::now();
    e.wait_ready(Duration::from_secs(120)).await;
    println!(
        "broker down 30 s: not ready after {:.1} s; ready again {:.1} s after it came back",
        went_unready.as_secs_f64(),
        back_at.elapsed().as_secs_f64()
    );
    e.publish_sim(late).await;
    e.wait_applied(n, Duration::from_secs(300)).await;
    let dead = e.metric("onejourney_dead_letter_total").await;
    let text = e.metrics().await;
    let reasons: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("onejourney_events_invalid_total") && !l.ends_with(" 0"))
        .collect();
    assert_eq!(dead, 0.0, "dead-lettered after the outage, by reason: {reasons:?}");
    e.stop().await;

    let got = outputs(&broker.addr(), &s).await;
    assert_eq!(got.duplicate_action_ids, 0);
    assert_eq!(
        got.actions.len(),
        expected.actions.len(),
        "no decision lost or repeated"
    );
    assert!(
        got.actions == expected.actions,
        "the same decisions as without the outage"
    );
    assert!(got.churn == expected.churn, "the same churn-risk records");
    let ids: BTreeSet<&String> = got.actions.keys().collect();
    assert_eq!(ids.len(), got.actions.len());
}
