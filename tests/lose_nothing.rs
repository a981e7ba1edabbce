//! End-to-end: lose nothing, silently lose nothing (issue #13). An engine
//! whose state is missing refuses to start instead of starting empty, and
//! `--rebuild` brings the state back from the inputs; a long phase before
//! the poll loop (waiting for a missing topic) keeps `/healthz` at 200.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use onejourney_e2e::process::{free_port, EngineProcess};
use onejourney_e2e::{create_topics_on, settings, INPUT_PARTITIONS};
use onejourney_engine::config::Settings;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{json, Value};

fn at(minute: i64) -> String {
    onejourney_simulator::rfc3339(1_793_491_200_000 + minute * 60_000)
}

async fn produce(s: &Settings, topic: &str, v: &Value) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &s.kafka.brokers)
        .create()
        .unwrap();
    let payload = serde_json::to_vec(v).unwrap();
    producer
        .send(
            FutureRecord::<str, [u8]>::to(topic).key("k").payload(&payload),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
}

/// The input topics exist, and the settings are in a config file.
async fn prepare(name: &str) -> (Settings, std::path::PathBuf) {
    let s = settings(name);
    let inputs: Vec<&str> = s.topics.consumed();
    create_topics_on(&s.kafka.brokers, &inputs, INPUT_PARTITIONS).await;
    std::fs::create_dir_all(&s.state.dir).unwrap();
    let config = s.state.dir.join("engine.toml");
    std::fs::write(&config, s.to_masked_toml().unwrap()).unwrap();
    (s, config)
}

async fn wait_profile(e: &EngineProcess, path: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (status, p) = e.get_json(path).await;
        if status == 200 {
            return p;
        }
        assert!(Instant::now() < deadline, "{path}: {status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_state_dir_restores_from_the_changelog_and_rebuild_brings_the_profile_back() {
    let (s, config) = prepare("lost-state").await;
    let log = s.state.dir.join("engine.log");
    let port = free_port();
    let first = EngineProcess::spawn(&config, port, &log);
    first.wait_ready(Duration::from_secs(120)).await;
    let web = |id: &str, minute, ids: Value| {
        json!({"event_id": id, "event_type": "page_view", "occurred_at": at(minute),
            "identifiers": ids, "session_id": format!("s-{id}")})
    };
    produce(&s, &s.topics.web_clicks, &web("w1", 0, json!({"cookie_id": "c-1"}))).await;
    produce(
        &s,
        &s.topics.web_clicks,
        &web("w2", 1, json!({"cookie_id": "c-1", "customer_id": "C-1"})),
    )
    .await;
    let profile = wait_profile(&first, "/v1/profiles/customer_id/C-1").await;
    let one_id = profile["one_id"].as_str().unwrap().to_string();
    // A graceful stop: the state is saved and the input offsets committed.
    first.terminate();

    // The state directory is lost (or the flag points elsewhere).
    let empty = s.state.dir.join("empty-state");
    let empty = empty.to_str().unwrap();
    // Since the state changelog (issue 14) the engine restores the last
    // committed checkpoint from the broker instead of refusing to start
    // (it still refuses when the group has committed offsets and the broker
    // holds no checkpoint of it).
    let restored = EngineProcess::spawn_with(&config, port, &log, &["--state-dir", empty], &[]);
    restored.wait_ready(Duration::from_secs(120)).await;
    let back = wait_profile(&restored, "/v1/profiles/customer_id/C-1").await;
    assert_eq!(back["one_id"], one_id, "the same One ID from the changelog: {back}");
    restored.terminate();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("has committed offsets"), "not refused:\n{text}");

    // A rebuild replays the inputs from their beginning into fresh state.
    let fresh = s.state.dir.join("rebuild-state");
    let fresh = fresh.to_str().unwrap();
    let rebuilt = EngineProcess::spawn_with(&config, port, &log, &["--state-dir", fresh, "--rebuild"], &[]);
    rebuilt.wait_ready(Duration::from_secs(120)).await;
    let again = wait_profile(&rebuilt, "/v1/profiles/customer_id/C-1").await;
    assert_eq!(again["one_id"], one_id, "the same One ID: {again}");
    let ids = again["identifiers"].as_array().unwrap();
    assert!(ids.iter().any(|x| x["value"] == "c-1"), "the whole profile: {again}");
    rebuilt.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_a_missing_topic_longer_than_the_liveness_window_stays_alive() {
    let s = settings("liveness");
    std::fs::create_dir_all(&s.state.dir).unwrap();
    let config = s.state.dir.join("engine.toml");
    std::fs::write(&config, s.to_masked_toml().unwrap()).unwrap();
    let log = s.state.dir.join("engine.log");
    // A 2 s liveness window; the input topics do not exist yet.
    let e = EngineProcess::spawn_with(
        &config,
        free_port(),
        &log,
        &[],
        &[("ONEJOURNEY__HTTP__LIVENESS_TIMEOUT", "2s")],
    );
    let started = Instant::now();
    let mut answered = 0;
    while started.elapsed() < Duration::from_secs(8) {
        if let Some(status) = e.status("/healthz").await {
            assert_eq!(
                status,
                200,
                "alive while waiting for the topics, after {:?}",
                started.elapsed()
            );
            answered += 1;
        }
        assert_ne!(e.status("/readyz").await, Some(200), "not ready without its topics");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(answered > 20, "/healthz answered {answered} times");
    let inputs: Vec<&str> = s.topics.consumed();
    create_topics_on(&s.kafka.brokers, &inputs, INPUT_PARTITIONS).await;
    e.wait_ready(Duration::from_secs(120)).await;
    assert_eq!(e.status("/healthz").await, Some(200));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("waiting for the input topics") && text.contains("in progress"),
        "the phase logs its start and progress:\n{text}"
    );
    e.terminate();
}
