//! End-to-end: erasure (issue #13). Reading and erasing are different powers
//! (the read token gets 403 on `DELETE`, an erase token is accepted); every
//! applied forget, over HTTP or on `identity-control`, is recorded on the
//! erasures topic (who, how, when, which hashed identifiers; no value); and a
//! forget survives a rebuild from offset 0: the forgotten customer stays 404
//! and an event carrying only their identifiers creates no profile.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use onejourney_e2e::process::{free_port, EngineProcess};
use onejourney_e2e::{
    create_topics_on, openapi, read_all_on, read_until_on, settings, Record, TestEngine, INPUT_PARTITIONS,
};
use onejourney_engine::config::Settings;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(120);
const READ: &str = "erasure-read-token";
const ERASE: &str = "erasure-erase-token";
const EMAIL: &str = "Ann.Lee@Example.com";

fn at(minute: i64) -> String {
    onejourney_simulator::rfc3339(1_793_491_200_000 + minute * 60_000)
}

fn web(id: &str, minute: i64, ids: Value) -> Value {
    json!({"event_id": id, "event_type": "login", "occurred_at": at(minute),
        "identifiers": ids, "session_id": format!("s-{id}")})
}

fn app(id: &str, minute: i64, ids: Value) -> Value {
    json!({"event_id": id, "event_type": "session_start", "occurred_at": at(minute),
        "identifiers": ids, "session_id": format!("as-{id}"), "platform": "ios"})
}

/// A `/v1` call with a bearer token, checked against the OpenAPI document.
async fn call(e: &TestEngine, method: reqwest::Method, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = reqwest::Client::new().request(method.clone(), format!("http://{}{path}", e.http));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.expect("http");
    let status = r.status().as_u16();
    let body = r.json().await.unwrap_or(Value::Null);
    openapi::check(method.as_str(), path, status, &body);
    (status, body)
}

async fn get(e: &TestEngine, path: &str) -> u16 {
    call(e, reqwest::Method::GET, path, Some(READ)).await.0
}

async fn wait_status(e: &TestEngine, path: &str, want: u16) {
    let deadline = Instant::now() + WAIT;
    loop {
        let status = get(e, path).await;
        if status == want {
            return;
        }
        assert!(Instant::now() < deadline, "{path}: {status}, not {want}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn with_tokens(mut s: Settings) -> Settings {
    s.http.bearer_token = READ.into();
    s.http.erase_tokens.insert("privacy_office".into(), ERASE.into());
    s
}

async fn erasures(s: &Settings, n: usize) -> Vec<Record> {
    read_until_on(&s.kafka.brokers, &s.topics.erasures, WAIT, |r| r.len() >= n).await
}

/// Ann's identifiers, as lookup paths.
fn ann_paths() -> Vec<String> {
    vec![
        "/v1/profiles/customer_id/C-ann".into(),
        format!("/v1/profiles/email/{EMAIL}"),
        "/v1/profiles/cookie_id/c-ann".into(),
        "/v1/profiles/device_id/d-ann".into(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_needs_its_own_token_is_recorded_and_survives_a_rebuild() {
    let s = with_tokens(settings("erasure"));
    let mut e = TestEngine::start(s.clone()).await;
    let t = e.topics.clone();
    e.produce_json(
        &t.web_clicks,
        &web(
            "w1",
            0,
            json!({"cookie_id": "c-ann", "email": EMAIL, "customer_id": "C-ann"}),
        ),
    )
    .await;
    e.produce_json(
        &t.app_sessions,
        &app("a1", 1, json!({"device_id": "d-ann", "customer_id": "C-ann"})),
    )
    .await;
    e.produce_json(
        &t.web_clicks,
        &web("w2", 2, json!({"customer_id": "C-bob", "cookie_id": "c-bob"})),
    )
    .await;
    e.produce_json(&t.web_clicks, &web("w3", 3, json!({"customer_id": "C-cy"})))
        .await;
    e.wait_applied(4, WAIT).await;
    let (status, ann) = call(&e, reqwest::Method::GET, "/v1/profiles/customer_id/C-ann", Some(READ)).await;
    assert_eq!(status, 200, "{ann}");
    let ann_id = ann["one_id"].as_str().unwrap().to_string();
    assert_eq!(ann["identifiers"].as_array().unwrap().len(), 4, "{ann}");

    // Reading is not erasing.
    let path = format!("/v1/profiles/one_id/{ann_id}");
    let (status, body) = call(&e, reqwest::Method::DELETE, &path, Some(READ)).await;
    assert_eq!(status, 403, "the read token may not erase: {body}");
    assert!(body["error"].as_str().unwrap().contains("erase token"), "{body}");
    let (status, body) = call(&e, reqwest::Method::DELETE, &path, None).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = call(&e, reqwest::Method::DELETE, &path, Some("guess")).await;
    assert_eq!(status, 401, "{body}");
    let (status, _) = call(&e, reqwest::Method::GET, &path, Some(ERASE)).await;
    assert_eq!(status, 401, "the erase token does not read");
    assert_eq!(get(&e, &path).await, 200, "refused requests erased nothing");

    // The erase token can; Bob goes through identity-control, named by its sender.
    let (status, body) = call(&e, reqwest::Method::DELETE, &path, Some(ERASE)).await;
    assert_eq!(status, 202, "{body}");
    e.produce_json(
        &t.identity_control,
        &json!({"command": "forget", "namespace": "customer_id", "value": "C-bob", "requested_by": "crm-batch"}),
    )
    .await;
    for p in ann_paths()
        .iter()
        .chain([&"/v1/profiles/customer_id/C-bob".to_string()])
    {
        wait_status(&e, p, 404).await;
    }

    // Every erasure is on the erasures topic: who, how, when, which hashed identifiers.
    let records = erasures(&s, 2).await;
    assert_eq!(records.len(), 2, "{records:?}");
    let schema: Value = serde_json::from_str(include_str!("../schemas/erasure.v1.json")).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let by_one_id = |id: &str| records.iter().find(|r| r.json()["one_id"] == id).map(Record::json);
    let ann_record = by_one_id(&ann_id).expect("Ann's erasure");
    assert_eq!(ann_record["via"], "http");
    assert_eq!(ann_record["requested_by"], "privacy_office");
    assert_eq!(ann_record["suppressed"].as_array().unwrap().len(), 4, "{ann_record}");
    assert!(ann_record["requested_at"].is_string(), "{ann_record}");
    let bob_record = records
        .iter()
        .map(Record::json)
        .find(|v| v["requested_by"] == "crm-batch")
        .expect("Bob's erasure");
    assert_eq!(bob_record["via"], "identity_control");
    assert_eq!(bob_record["command"]["topic"], t.identity_control.as_str());
    for r in &records {
        assert_eq!(r.key.as_deref(), Some(r.json()["one_id"].as_str().unwrap().as_bytes()));
        let v = r.json();
        if let Err(err) = validator.validate(&v) {
            panic!("{err}: {v}");
        }
        let text = String::from_utf8_lossy(&r.payload).to_lowercase();
        for value in ["c-ann", "ann.lee", "d-ann", "c-bob"] {
            assert!(!text.contains(value), "no identifier value in {text}");
        }
    }
    e.stop().await;

    // Rebuild from offset 0 into fresh state: identity-control and the inputs
    // are replayed in whatever order, and the forget holds.
    let mut rebuild = s.clone();
    rebuild.state.rebuild = true;
    rebuild.state.dir = s.state.dir.join("rebuilt");
    let e = TestEngine::start(rebuild).await;
    e.wait_applied(4, WAIT).await;
    let deadline = Instant::now() + WAIT;
    while e.metric("onejourney_forget_requests_total{result=\"unknown\"}").await < 2.0 {
        assert!(Instant::now() < deadline, "both forget commands replayed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        get(&e, "/v1/profiles/customer_id/C-cy").await,
        200,
        "the others are rebuilt"
    );
    for p in ann_paths()
        .iter()
        .chain([&"/v1/profiles/customer_id/C-bob".to_string()])
    {
        assert_eq!(get(&e, p).await, 404, "{p} stays forgotten after the rebuild");
    }
    assert_eq!(get(&e, &path).await, 404);
    // A new event carrying only Ann's identifiers creates no profile.
    e.produce_json(
        &t.web_clicks,
        &web("w9", 10, json!({"cookie_id": "c-ann", "email": EMAIL})),
    )
    .await;
    e.wait_applied(5, WAIT).await;
    assert_eq!(
        e.metric("onejourney_events_forgotten_total").await,
        4.0,
        "w1, a1, w2 and w9 ignored"
    );
    for p in ann_paths() {
        assert_eq!(get(&e, &p).await, 404, "{p} stays forgotten");
    }
    assert_eq!(
        e.state().identity.profile_count(),
        1,
        "only C-cy: {:?}",
        e.state().identity.partition()
    );
    // Nothing was erased twice: still two records.
    assert_eq!(read_all_on(&s.kafka.brokers, &s.topics.erasures).await.len(), 2);
    let mut e = e;
    e.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_erase_token_http_erasure_is_disabled() {
    let mut s = settings("no-erase");
    s.http.bearer_token = READ.into();
    let mut e = TestEngine::start(s).await;
    e.produce_json(
        &e.topics.web_clicks.clone(),
        &web("w1", 0, json!({"customer_id": "C-1"})),
    )
    .await;
    e.wait_applied(1, WAIT).await;
    for token in [Some(READ), None, Some("anything")] {
        let (status, body) = call(&e, reqwest::Method::DELETE, "/v1/profiles/customer_id/C-1", token).await;
        assert_eq!(status, 403, "{body}");
        assert!(body["error"].as_str().unwrap().contains("disabled"), "{body}");
    }
    assert_eq!(get(&e, "/v1/profiles/customer_id/C-1").await, 200);
    e.stop().await;
}

async fn produce(s: &Settings, topic: &str, v: &Value) {
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &s.kafka.brokers)
        .create()
        .unwrap();
    let payload = serde_json::to_vec(v).unwrap();
    p.send(
        FutureRecord::<str, [u8]>::to(topic).key("k").payload(&payload),
        Duration::from_secs(30),
    )
    .await
    .map_err(|(e, _)| e)
    .unwrap();
}

async fn wait_process(e: &EngineProcess, path: &str, want: u16) {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, _) = e.get_json(path).await;
        if status == want {
            return;
        }
        assert!(Instant::now() < deadline, "{path}: {status}, not {want}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A crash after a forget and before the next checkpoint: the restart restores
/// a snapshot that still holds the profile (without the identifier an event
/// added after it), installs the recorded entries, replays that event (now
/// ignored) and the forget command, and regenerates the erasure record with
/// one identifier fewer: it is recognised by the command it records and not
/// published again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_a_forget_does_not_record_the_erasure_twice() {
    let mut s = settings("erasure-crash");
    s.http.erase_tokens.insert("privacy_office".into(), ERASE.into());
    s.state.snapshot_interval = Duration::from_secs(3600);
    // Static membership: the restarted process takes the killed one's place at once.
    s.kafka.group_instance_id = String::from("engine-0");
    let inputs: Vec<&str> = s.topics.consumed();
    create_topics_on(&s.kafka.brokers, &inputs, INPUT_PARTITIONS).await;
    std::fs::create_dir_all(&s.state.dir).unwrap();
    let config = s.state.dir.join("engine.toml");
    std::fs::write(&config, s.to_masked_toml().unwrap()).unwrap();
    let log = s.state.dir.join("engine.log");
    let port = free_port();
    let t = s.topics.clone();
    // The config file has the token masked: it comes by environment, as in production.
    let env = [("ONEJOURNEY__HTTP__ERASE_TOKENS__PRIVACY_OFFICE", ERASE)];
    let spawn = || EngineProcess::spawn_with(&config, port, &log, &[], &env);

    // Ann is in the snapshot a graceful stop writes.
    let first = spawn();
    first.wait_ready(WAIT).await;
    produce(
        &s,
        &t.web_clicks,
        &web("w1", 0, json!({"cookie_id": "c-ann", "customer_id": "C-ann"})),
    )
    .await;
    wait_process(&first, "/v1/profiles/customer_id/C-ann", 200).await;
    first.terminate();

    // After the snapshot she gains a device; then she is forgotten, and the engine dies.
    let second = spawn();
    second.wait_ready(WAIT).await;
    produce(
        &s,
        &t.app_sessions,
        &app("a1", 1, json!({"device_id": "d-ann", "customer_id": "C-ann"})),
    )
    .await;
    wait_process(&second, "/v1/profiles/device_id/d-ann", 200).await;
    let r = reqwest::Client::new()
        .delete(format!("http://127.0.0.1:{port}/v1/profiles/customer_id/C-ann"))
        .bearer_auth(ERASE)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    wait_process(&second, "/v1/profiles/customer_id/C-ann", 404).await;
    let recorded = erasures(&s, 1).await;
    assert_eq!(recorded.len(), 1);
    assert_eq!(
        recorded[0].json()["suppressed"].as_array().unwrap().len(),
        3,
        "cookie, customer id, device"
    );
    second.kill_9();

    // The restart re-processes the device event and the forget command.
    let third = spawn();
    third.wait_ready(WAIT).await;
    let deadline = Instant::now() + WAIT;
    while third
        .sample("onejourney_forget_requests_total{result=\"forgotten\"}")
        .await
        < 1.0
    {
        assert!(Instant::now() < deadline, "the forget command is re-processed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for path in [
        "/v1/profiles/customer_id/C-ann",
        "/v1/profiles/cookie_id/c-ann",
        "/v1/profiles/device_id/d-ann",
    ] {
        assert_eq!(third.get_json(path).await.0, 404, "{path}");
    }
    assert_eq!(
        third.sample("onejourney_outputs_deduplicated_total").await,
        2.0,
        "the notice and the erasure record, each recognised"
    );
    let all = read_all_on(&s.kafka.brokers, &t.erasures).await;
    let notices = read_all_on(&s.kafka.brokers, &t.identity_changes).await;
    assert_eq!(all.len(), 1, "recorded once: {all:?}");
    assert_eq!(
        notices.iter().filter(|r| r.json()["change"] == "forget").count(),
        1,
        "one forget notice"
    );
    third.terminate();
    // One info line per applied erasure (the first run's; the replay found it
    // recorded): the One ID and the count, no value.
    let text = plain(&std::fs::read_to_string(&log).unwrap());
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("profile erased on request"))
        .collect();
    assert_eq!(lines.len(), 2, "the erasure and its re-processing: {lines:?}");
    for l in &lines {
        assert!(
            l.contains(recorded[0].json()["one_id"].as_str().unwrap()) && l.contains("identifiers="),
            "{l}"
        );
        for value in ["c-ann", "C-ann", "d-ann", "privacy_office"] {
            assert!(!l.contains(value), "{l}");
        }
    }
}

/// A log without its colour codes.
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
