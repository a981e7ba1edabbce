//! Harness for end-to-end tests against a real broker.
//!
//! The broker's address comes from `ONEJOURNEY_TEST_BROKERS` (`make test`
//! starts tansu and sets it). Each test gets its own topic prefix and consumer
//! group, so tests run in parallel on one broker without seeing each other.

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod process;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use onejourney_engine::config::{Settings, Topics};
use onejourney_engine::Engine;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub mod openapi;

pub const INPUT_PARTITIONS: i32 = 2;

/// The HTTP client the tests use against the engine (and Prometheus). It drops a pooled
/// connection after 5 s idle, before the engine's keep-alive idle timeout
/// (`http.header_read_timeout`, 10 s by default) closes it: otherwise a
/// request sent on a connection the engine is closing at that moment fails
/// with "connection closed before message completed" (CI saw that once,
/// after a pause of about 10 s between two requests).
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(5))
        .build()
        .expect("HTTP client")
}

/// The broker the tests run against.
pub fn brokers() -> String {
    std::env::var("ONEJOURNEY_TEST_BROKERS").expect(
        "ONEJOURNEY_TEST_BROKERS is not set: run `make test` (it starts a tansu broker) \
         or start one with `scripts/broker.sh start` and export its address",
    )
}

fn unique_prefix(name: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{name}-{}-{nanos}-{}-",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A record read back from a topic.
#[derive(Debug, Clone)]
pub struct Record {
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: BTreeMap<String, String>,
    pub partition: i32,
    pub offset: i64,
}

impl Record {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.payload).unwrap_or(Value::Null)
    }
}

/// Settings for one test: defaults with a private prefix, group and HTTP
/// port; without exploration or holdout, so each test sees the catalog's
/// first-ranked action published (the arbitration and replay tests turn both
/// back on with [`exploring`]).
pub fn settings(name: &str) -> Settings {
    let mut s = shipped(name);
    s.decide.explore = false;
    s.decide.holdout_share = 0.0;
    s
}

/// [`settings`] with the shipped exploration and holdout.
pub fn exploring(name: &str) -> Settings {
    shipped(name)
}

fn shipped(name: &str) -> Settings {
    let mut s = Settings::defaults().expect("defaults parse");
    let prefix = unique_prefix(name);
    s.kafka.brokers = brokers();
    s.kafka.group_id = format!("{prefix}group");
    s.kafka.output_partitions = 2;
    s.topics = s.topics.prefixed(&prefix);
    s.http.addr = "127.0.0.1:0".parse().expect("addr");
    s.state.dir = std::env::temp_dir().join("onejourney-e2e").join(&prefix);
    s
}

pub async fn create_topics(names: &[&str], partitions: i32) {
    create_topics_on(&brokers(), names, partitions).await;
}

/// The input topics `s` consumes, on `brokers`, with `partitions` each.
pub async fn create_inputs_on(brokers: &str, s: &Settings, partitions: i32) {
    create_topics_on(brokers, &s.topics.consumed(), partitions).await;
}

pub async fn create_topics_on(brokers: &str, names: &[&str], partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client");
    let topics: Vec<NewTopic> = names
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
        .collect();
    let res = admin
        .create_topics(
            &topics,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("create topics");
    for r in res {
        if let Err((t, e)) = r {
            assert_eq!(e, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists, "creating {t}");
        }
    }
}

/// An engine running in this process against the test broker.
pub struct TestEngine {
    pub engine: Option<Engine>,
    pub topics: Topics,
    pub http: SocketAddr,
    pub settings: Settings,
    producer: FutureProducer,
    client: reqwest::Client,
}

impl TestEngine {
    /// Creates the input topics, starts the engine and waits until it is ready.
    pub async fn start(settings: Settings) -> TestEngine {
        create_inputs_on(&settings.kafka.brokers, &settings, INPUT_PARTITIONS).await;
        let t = TestEngine::launch(settings).await;
        t.wait_ready(Duration::from_secs(90)).await;
        t
    }

    /// Starts the engine as it is: no topics created, not waiting for ready.
    pub async fn launch(settings: Settings) -> TestEngine {
        // `ONEJOURNEY_TEST_LOG=1` (with `RUST_LOG` to filter, `--nocapture`
        // to see it): the engines' logs on stderr, to follow a failure.
        if std::env::var_os("ONEJOURNEY_TEST_LOG").is_some() {
            onejourney_engine::logging::init(&settings.log);
        }
        let engine = Engine::start(settings.clone(), CancellationToken::new())
            .await
            .expect("engine starts");
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &settings.kafka.brokers)
            .set("linger.ms", "1")
            .set("message.timeout.ms", "120000")
            .create()
            .expect("producer");
        TestEngine {
            http: engine.http_addr,
            engine: Some(engine),
            topics: settings.topics.clone(),
            settings,
            producer,
            client: http_client(),
        }
    }

    pub async fn wait_ready(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.get_status("/readyz").await == 200 {
                return;
            }
            assert!(Instant::now() < deadline, "engine not ready within {timeout:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn state(&self) -> &onejourney_core::State {
        &self.engine.as_ref().expect("running").state
    }

    /// Publishes raw bytes and waits for the broker's acknowledgement.
    pub async fn produce(&self, topic: &str, key: Option<&[u8]>, payload: &[u8]) {
        let mut r: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).payload(payload);
        if let Some(k) = key {
            r = r.key(k);
        }
        self.producer
            .send(r, Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)
            .expect("produce");
    }

    /// Publishes JSON with an explicit key (events with one key share a partition).
    pub async fn produce_keyed(&self, topic: &str, key: &str, v: &Value) {
        self.produce(topic, Some(key.as_bytes()), &serde_json::to_vec(v).unwrap())
            .await;
    }

    pub async fn produce_json(&self, topic: &str, v: &Value) {
        let key = v["event_id"].as_str().unwrap_or("k").to_string();
        self.produce(topic, Some(key.as_bytes()), &serde_json::to_vec(v).unwrap())
            .await;
    }

    pub fn flush(&self) {
        self.producer.flush(Duration::from_secs(10)).expect("flush");
    }

    /// Publishes simulated events to this engine's input topics, at full speed.
    pub async fn publish_sim(&self, events: &[onejourney_simulator::SimEvent]) {
        publish_sim_on(&self.settings, events).await;
    }

    /// Waits until `n` channel events were consumed and none waits for the watermark.
    pub async fn wait_applied(&self, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let mut consumed = 0.0;
            for c in ["web", "pos", "app", "call_center"] {
                consumed += self
                    .metric(&format!("onejourney_events_consumed_total{{channel=\"{c}\"}}"))
                    .await;
            }
            if consumed >= n as f64 && self.metric("onejourney_events_buffered").await == 0.0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "consumed {consumed} of {n} within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    pub async fn get_status(&self, path: &str) -> u16 {
        match self.client.get(format!("http://{}{path}", self.http)).send().await {
            Ok(r) => r.status().as_u16(),
            Err(e) => {
                eprintln!("GET {path}: {e:?}");
                0
            }
        }
    }

    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let r = self
            .client
            .get(format!("http://{}{path}", self.http))
            .send()
            .await
            .expect("http request");
        let status = r.status().as_u16();
        let body = r.json().await.unwrap_or(Value::Null);
        openapi::check("GET", path, status, &body);
        (status, body)
    }

    /// POSTs a JSON body; the response is checked against the OpenAPI document.
    pub async fn post_json(&self, path: &str, v: &Value) -> (u16, Value) {
        let r = self
            .client
            .post(format!("http://{}{path}", self.http))
            .json(v)
            .send()
            .await
            .expect("http request");
        let status = r.status().as_u16();
        let body = r.json().await.unwrap_or(Value::Null);
        openapi::check("POST", path, status, &body);
        (status, body)
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.delete_as(path, None).await
    }

    /// `DELETE` with a bearer token (erasure needs an erase token).
    pub async fn delete_as(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = self.client.delete(format!("http://{}{path}", self.http));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.expect("http request");
        let status = r.status().as_u16();
        let body = r.json().await.unwrap_or(Value::Null);
        openapi::check("DELETE", path, status, &body);
        (status, body)
    }

    pub async fn metrics(&self) -> String {
        self.client
            .get(format!("http://{}/metrics", self.http))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// The value of one sample line of `/metrics`, e.g.
    /// `onejourney_dead_letter_total` or `onejourney_events_invalid_total{channel="web",reason="schema"}`.
    pub async fn metric(&self, sample: &str) -> f64 {
        let text = self.metrics().await;
        text.lines()
            .find_map(|l| l.strip_prefix(sample).and_then(|rest| rest.trim().parse::<f64>().ok()))
            .unwrap_or(0.0)
    }

    /// Reads `topic` from the beginning until `done` holds for what was read.
    pub async fn read_until(&self, topic: &str, timeout: Duration, done: impl Fn(&[Record]) -> bool) -> Vec<Record> {
        read_until_on(&self.settings.kafka.brokers, topic, timeout, done).await
    }

    /// Waits until `check` holds for the value of `sample` (see
    /// [`TestEngine::metric`]), naming `what` if `timeout` passes first;
    /// returns the value.
    pub async fn wait_metric(&self, sample: &str, what: &str, timeout: Duration, check: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.metric(sample).await;
            if check(v) {
                return v;
            }
            assert!(Instant::now() < deadline, "{what}: {sample} is {v}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `check` holds for the engine's state.
    pub async fn eventually(&self, what: &str, timeout: Duration, check: impl Fn(&onejourney_core::State) -> bool) {
        let deadline = Instant::now() + timeout;
        while !check(self.state()) {
            assert!(Instant::now() < deadline, "timed out waiting for: {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the engine gracefully (drain, flush, commit).
    pub async fn stop(&mut self) {
        if let Some(e) = self.engine.take() {
            e.stop().await.expect("engine stops cleanly");
        }
    }
}

/// Stops the members of one group one at a time, each after the others have
/// taken their new assignment (their `onejourney_rebalances_total{kind="assign"}`
/// moved, or 60 s passed) and are ready again (restored what it gave them),
/// as a rolling stop of a deployment does.
///
/// Why not one after another: tansu 0.6 forgets to clear the group's leader
/// when the leader leaves while the group is re-forming, so a group whose
/// members all left in quick succession can keep naming a departed leader,
/// and a later member never gets an assignment (`tansu-broker` 0.6.0,
/// `coordinator/group/administrator.rs`: a leave in the forming state never
/// touches `state.leader`). Real Kafka has no such state. A member that
/// leaves a formed group is handled correctly, so waiting avoids it.
pub async fn stop_one_at_a_time(engines: &mut [TestEngine]) {
    const ASSIGN: &str = "onejourney_rebalances_total{kind=\"assign\"}";
    for i in 0..engines.len() {
        let (stopping, rest) = engines[i..].split_first_mut().expect("a member to stop");
        let mut before = Vec::new();
        for e in rest.iter() {
            before.push(e.metric(ASSIGN).await);
        }
        stopping.stop().await;
        let deadline = Instant::now() + Duration::from_secs(60);
        for (e, was) in rest.iter().zip(before) {
            while e.metric(ASSIGN).await <= was && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            e.wait_ready(Duration::from_secs(90)).await;
        }
    }
}

/// Publishes simulated events to the input topics of `settings`, at full speed.
pub async fn publish_sim_on(settings: &Settings, events: &[onejourney_simulator::SimEvent]) {
    let producer = onejourney_simulator::kafka::producer(&settings.kafka.brokers).expect("producer");
    let topics = settings.topics.clone();
    let topic_of = move |s: onejourney_simulator::Stream| topics.for_channel(s.channel()).to_string();
    onejourney_simulator::kafka::publish(&producer, events, &topic_of, 0)
        .await
        .expect("publish");
}

/// Every record `topic` holds now: at least as many as its end offsets say,
/// then until nothing new arrives for 2 s (tansu 0.6 can report a high
/// watermark a record or two short when the last batch held several).
pub async fn read_all_on(brokers: &str, topic: &str) -> Vec<Record> {
    let want = record_count(brokers, topic).await;
    let last = std::sync::Mutex::new((0usize, Instant::now()));
    let records = read_until_on(brokers, topic, Duration::from_secs(180), move |r| {
        let mut l = last.lock().unwrap();
        if r.len() != l.0 {
            *l = (r.len(), Instant::now());
        }
        r.len() >= want && l.1.elapsed() > Duration::from_secs(2)
    })
    .await;
    assert!(
        records.len() >= want,
        "read only {} of {want} records of {topic}",
        records.len()
    );
    records
}

async fn record_count(brokers: &str, topic: &str) -> usize {
    let (b, t) = (brokers.to_string(), topic.to_string());
    let total: i64 = tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &b)
            .set("group.id", "watermarks")
            .create()
            .expect("consumer");
        let md = consumer
            .fetch_metadata(Some(&t), Duration::from_secs(10))
            .expect("metadata");
        let parts: Vec<i32> = md
            .topics()
            .iter()
            .flat_map(|x| x.partitions().iter().map(|p| p.id()))
            .collect();
        parts
            .into_iter()
            .map(|p| {
                let (low, high) = consumer
                    .fetch_watermarks(&t, p, Duration::from_secs(10))
                    .expect("watermarks");
                high - low
            })
            .sum()
    })
    .await
    .expect("watermarks task");
    usize::try_from(total).unwrap_or(0)
}

/// Reads every partition of `topic` from the beginning until `done` holds
/// for all records read, or the timeout passes (then returns what it has).
pub async fn read_until(topic: &str, timeout: Duration, done: impl Fn(&[Record]) -> bool) -> Vec<Record> {
    read_until_on(&brokers(), topic, timeout, done).await
}

/// [`read_until`] on another broker.
pub async fn read_until_on(
    brokers: &str,
    topic: &str,
    timeout: Duration,
    done: impl Fn(&[Record]) -> bool,
) -> Vec<Record> {
    let topic = topic.to_string();
    let brokers = brokers.to_string();
    let (tx, rx) = std::sync::mpsc::channel::<Vec<Record>>();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let reader = std::thread::spawn(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", format!("reader-{}", unique_prefix("r")))
            .set("enable.auto.commit", "false")
            .create()
            .expect("reader");
        let deadline = Instant::now() + Duration::from_secs(30);
        let partitions = loop {
            let n = consumer
                .fetch_metadata(Some(&topic), Duration::from_secs(5))
                .ok()
                .and_then(|m| m.topics().first().map(|t| t.partitions().len()))
                .unwrap_or(0);
            if n > 0 || Instant::now() > deadline {
                break n;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(&topic, p as i32, Offset::Beginning)
                .expect("tpl");
        }
        consumer.assign(&tpl).expect("assign");
        let mut batch = Vec::new();
        while stop_rx.try_recv().is_err() {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    let mut headers = BTreeMap::new();
                    if let Some(h) = m.headers() {
                        for i in 0..h.count() {
                            let hd = h.get(i);
                            headers.insert(
                                hd.key.to_string(),
                                hd.value
                                    .map(|v| String::from_utf8_lossy(v).to_string())
                                    .unwrap_or_default(),
                            );
                        }
                    }
                    batch.push(Record {
                        key: m.key().map(<[u8]>::to_vec),
                        payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                        headers,
                        partition: m.partition(),
                        offset: m.offset(),
                    });
                }
                _ => {
                    if !batch.is_empty() && tx.send(std::mem::take(&mut batch)).is_err() {
                        return;
                    }
                }
            }
        }
    });
    let deadline = Instant::now() + timeout;
    let mut all = Vec::new();
    loop {
        while let Ok(b) = rx.try_recv() {
            all.extend(b);
        }
        if done(&all) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop_tx.send(());
    let _ = tokio::task::spawn_blocking(move || reader.join()).await;
    all
}

/// A consumer of `group` on the test broker, neither subscribed nor assigned.
pub fn group_consumer(group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", group)
        .create()
        .expect("consumer")
}

/// The committed offsets of `group` on `topic`, per partition.
pub async fn committed(group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let group = group.to_string();
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let consumer = group_consumer(&group);
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(&topic, p);
        }
        let c = consumer
            .committed_offsets(tpl, Duration::from_secs(10))
            .expect("committed offsets");
        (0..partitions)
            .map(|p| match c.find_partition(&topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => -1,
            })
            .collect()
    })
    .await
    .expect("committed task")
}

/// Waits until the committed offsets of `group` on `topics` (each with
/// `partitions` partitions, filled from offset 0) account for `n` input
/// messages: a run is done when its checkpoints cover every input. Panics,
/// naming `what`, after `timeout`.
pub async fn wait_committed<T: AsRef<str>>(
    group: &str,
    topics: &[T],
    partitions: i32,
    n: usize,
    timeout: Duration,
    what: &str,
) {
    let deadline = Instant::now() + timeout;
    loop {
        let mut covered = 0;
        for t in topics {
            let done = committed(group, t.as_ref(), partitions).await;
            covered += done.iter().filter(|c| **c > 0).sum::<i64>();
        }
        if covered == n as i64 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not finish: {covered} of {n} committed"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The end offsets (high watermarks) of `topic`, per partition.
pub async fn end_offsets(topic: &str, partitions: i32) -> Vec<i64> {
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers())
            .set("group.id", "watermarks")
            .create()
            .expect("consumer");
        (0..partitions)
            .map(|p| {
                consumer
                    .fetch_watermarks(&topic, p, Duration::from_secs(10))
                    .map(|(_, high)| high)
                    .expect("watermarks")
            })
            .collect()
    })
    .await
    .expect("watermarks task")
}

/// Per One ID: its identifiers and journey counts, as comparable text (the
/// durability and changelog tests compare runs by it).
pub fn state_summary(state: &onejourney_core::State) -> BTreeMap<String, String> {
    let partition = state.identity.partition();
    partition
        .into_iter()
        .map(|(one_id, ids)| {
            let journey = state
                .journey(&one_id)
                .map(|j| {
                    let events: Vec<u64> = j.channels.iter().map(|c| c.events).collect();
                    format!(
                        "events {events:?} purchases {} revenue {:.2} returns {} complaints {} calls {} first {:?} last {:?}",
                        j.purchases, j.revenue, j.returns, j.complaints, j.call.calls, j.first_seen, j.last_seen
                    )
                })
                .unwrap_or_default();
            (one_id.to_string(), format!("{ids:?} {journey}"))
        })
        .collect()
}
