//! End-to-end: connecting as a real cluster needs it.
//!
//! - Input compressed with every codec an upstream producer may pick (gzip,
//!   snappy, lz4, zstd) is processed, published through the simulator's
//!   publisher with `compression.type` (its client settings pass through).
//! - A record batch librdkafka cannot decode (it says zstd; its bytes are
//!   not) is counted, and the partition it blocks is reported stalled and
//!   stops holding back the other partitions' decisions.
//! - The engine connects with SASL SCRAM-SHA-512 over TLS (`SASL_SSL`, the
//!   README's managed-cluster example): tansu checks the SCRAM credentials;
//!   TLS is terminated in front of it by a test proxy, because tansu 0.6
//!   accepts `--cert`/`--key` but serves plain TCP whatever they say (its
//!   broker builds a TLS acceptor and never uses it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use onejourney_e2e::{create_topics_on, settings, TestEngine};
use onejourney_simulator::{generate, SimConfig};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(120);

fn at(minute: i64) -> String {
    onejourney_simulator::rfc3339(1_793_491_200_000 + minute * 60_000)
}

fn page_view(id: &str, minute: i64, cookie: &str) -> Vec<u8> {
    serde_json::to_vec(
        &json!({"event_id": id, "event_type": "page_view", "occurred_at": at(minute),
        "identifiers": {"cookie_id": cookie}, "session_id": "s-1"}),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_compressed_with_every_codec_is_processed() {
    let e = TestEngine::start(settings("codecs")).await;
    let sim = generate(&SimConfig {
        customers: 40,
        seed: 17,
        ..SimConfig::default()
    });
    let codecs = ["gzip", "snappy", "lz4", "zstd"];
    let chunk = sim.events.len().div_ceil(codecs.len());
    let topics = e.topics.clone();
    let topic_of = move |s: onejourney_simulator::Stream| topics.for_channel(s.channel()).to_string();
    for (codec, events) in codecs.iter().zip(sim.events.chunks(chunk)) {
        let client: BTreeMap<String, String> = [("compression.type", *codec), ("linger.ms", "20")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let producer = onejourney_simulator::kafka::producer_with(&e.settings.kafka.brokers, &client)
            .unwrap_or_else(|err| panic!("a producer compressing with {codec}: {err:#}"));
        onejourney_simulator::kafka::publish(&producer, events, &topic_of, 0)
            .await
            .unwrap_or_else(|err| panic!("publishing with {codec}: {err:#}"));
    }
    e.wait_applied(sim.events.len(), WAIT).await;
    for reason in onejourney_engine::stall::FETCH_ERROR_REASONS {
        let sample = format!("onejourney_input_fetch_errors_total{{reason=\"{reason}\"}}");
        assert_eq!(e.metric(&sample).await, 0.0, "{sample}");
    }
    // Every output of every event was acknowledged by the broker, through the
    // engine's idempotent producer.
    let deadline = Instant::now() + WAIT;
    while e.metric("onejourney_events_settled_total").await < sim.events.len() as f64 {
        assert!(Instant::now() < deadline, "not every event settled");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_batch_is_counted_and_does_not_hold_back_the_other_partitions() {
    let mut s = settings("undecodable");
    s.ingest.stall_after = Duration::from_secs(3);
    let e = TestEngine::start(s).await;
    let web = e.topics.web_clicks.clone();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &e.settings.kafka.brokers)
        .set("linger.ms", "0")
        .create()
        .unwrap();
    let send = |partition: i32, payload: Vec<u8>| {
        let producer = producer.clone();
        let web = web.clone();
        async move {
            producer
                .send(
                    FutureRecord::<(), [u8]>::to(&web)
                        .partition(partition)
                        .payload(&payload),
                    Duration::from_secs(10),
                )
                .await
                .map_err(|(err, _)| err)
                .expect("produce");
        }
    };
    send(0, page_view("before", 0, "c-before")).await;
    let code = produce_raw(&e.settings.kafka.brokers, &web, 0, &undecodable_zstd_batch());
    assert_eq!(code, 0, "the broker stores the batch as it is");
    send(0, page_view("behind", 2, "c-behind")).await;
    send(1, page_view("other", 1, "c-other")).await;

    // The batch is counted as it fails, again and again.
    let deadline = Instant::now() + WAIT;
    loop {
        let metrics = e.metrics().await;
        let errors: f64 = metrics
            .lines()
            .filter(|l| l.starts_with("onejourney_input_fetch_errors_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        let stalled = e.metric("onejourney_input_partitions_stalled").await;
        if errors > 0.0 && stalled == 1.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "fetch errors {errors}, stalled partitions {stalled}:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The other partition's event is applied: the stalled one no longer
    // holds the watermark back.
    e.wait_applied(2, WAIT).await;
    e.eventually("the events around the bad batch are applied", WAIT, |s| {
        s.identity.identifier_count() == 2
    })
    .await;
}

/// A record batch (magic 2) of one record whose attributes say zstd and
/// whose bytes are no zstd frame, with a correct CRC-32C: what a broker
/// stores and serves, and librdkafka cannot decompress.
fn undecodable_zstd_batch() -> Vec<u8> {
    let now = 1_793_491_200_000i64;
    let mut after_crc = Vec::new();
    after_crc.extend(4i16.to_be_bytes()); // attributes: compression zstd
    after_crc.extend(0i32.to_be_bytes()); // last offset delta
    after_crc.extend(now.to_be_bytes()); // base timestamp
    after_crc.extend(now.to_be_bytes()); // max timestamp
    after_crc.extend((-1i64).to_be_bytes()); // producer id
    after_crc.extend((-1i16).to_be_bytes()); // producer epoch
    after_crc.extend((-1i32).to_be_bytes()); // base sequence
    after_crc.extend(1i32.to_be_bytes()); // records
    after_crc.extend(b"these bytes are not a zstd frame");
    let mut batch = Vec::new();
    batch.extend(0i64.to_be_bytes()); // base offset
    let length = 4 + 1 + 4 + after_crc.len();
    batch.extend(i32::try_from(length).unwrap().to_be_bytes());
    batch.extend((-1i32).to_be_bytes()); // partition leader epoch
    batch.push(2); // magic
    batch.extend(crc32c(&after_crc).to_be_bytes());
    batch.extend(after_crc);
    batch
}

fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Sends one Produce request (v3) with `batch` to partition `partition` of
/// `topic` and returns the partition's error code.
fn produce_raw(brokers: &str, topic: &str, partition: i32, batch: &[u8]) -> i16 {
    let string = |s: &str, out: &mut Vec<u8>| {
        out.extend(i16::try_from(s.len()).unwrap().to_be_bytes());
        out.extend(s.as_bytes());
    };
    let mut req = Vec::new();
    req.extend(0i16.to_be_bytes()); // api key: Produce
    req.extend(3i16.to_be_bytes()); // api version
    req.extend(7i32.to_be_bytes()); // correlation id
    string("onejourney-e2e", &mut req);
    req.extend((-1i16).to_be_bytes()); // transactional id: null
    req.extend((-1i16).to_be_bytes()); // acks: all
    req.extend(10_000i32.to_be_bytes()); // timeout
    req.extend(1i32.to_be_bytes()); // topics
    string(topic, &mut req);
    req.extend(1i32.to_be_bytes()); // partitions
    req.extend(partition.to_be_bytes());
    req.extend(i32::try_from(batch.len()).unwrap().to_be_bytes());
    req.extend(batch);
    let addr = brokers.split(',').next().unwrap();
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    conn.write_all(&i32::try_from(req.len()).unwrap().to_be_bytes())
        .unwrap();
    conn.write_all(&req).unwrap();
    let mut size = [0u8; 4];
    conn.read_exact(&mut size).unwrap();
    let mut resp = vec![0u8; usize::try_from(i32::from_be_bytes(size)).unwrap()];
    conn.read_exact(&mut resp).unwrap();
    // correlation id, topics count, topic name, partitions count, index, error code
    let at = 4 + 4 + 2 + topic.len() + 4 + 4;
    i16::from_be_bytes([resp[at], resp[at + 1]])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_connects_with_sasl_scram_over_tls() {
    let dir = std::env::temp_dir().join(format!("onejourney-e2e-sasl-ssl-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let plain = free_port();
    let tls = free_port();
    let plain_addr = format!("127.0.0.1:{plain}");
    let tls_addr = format!("127.0.0.1:{tls}");
    let mut s = settings("sasl-ssl");

    // Without authentication yet: the SCRAM user and the topics.
    let mut broker = Tansu::start(&dir, plain, plain, false);
    broker.create_user("oj-engine", "s3cret-pass");
    let mut names: Vec<&str> = s.topics.consumed();
    names.extend(s.topics.outputs());
    create_topics_on(&plain_addr, &names, 2).await;
    broker.stop();

    // Then with authentication, advertised behind the TLS proxy.
    let _broker = Tansu::start(&dir, plain, tls, true);
    let ca = tls_proxy(&dir, tls, plain).await;

    s.kafka.brokers = tls_addr.clone();
    let client: [(&str, &str); 4] = [
        ("security.protocol", "SASL_SSL"),
        ("sasl.mechanisms", "SCRAM-SHA-512"),
        ("sasl.username", "oj-engine"),
        ("ssl.ca.location", ca.to_str().unwrap()),
    ];
    for (k, v) in client {
        s.kafka.client.insert(k.to_string(), v.to_string());
    }

    // A wrong password: the broker refuses, the engine is not ready.
    let mut wrong = s.clone();
    wrong.kafka.sasl_password = "not-the-password".into();
    wrong.kafka.group_id = format!("{}-wrong", s.kafka.group_id);
    let mut refused = TestEngine::launch(wrong).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(refused.get_status("/readyz").await, 503);
    refused.stop().await;

    s.kafka.sasl_password = "s3cret-pass".into();
    let e = TestEngine::launch(s.clone()).await;
    e.wait_ready(WAIT).await;
    let producer: FutureProducer = onejourney_engine::kafka::base_config(&s).create().unwrap();
    for (i, cookie) in ["c-1", "c-2", "c-3"].iter().enumerate() {
        producer
            .send(
                FutureRecord::to(&s.topics.web_clicks).key(*cookie).payload(&page_view(
                    &format!("tls-{i}"),
                    i as i64,
                    cookie,
                )),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(err, _)| err)
            .expect("produce over SASL_SSL");
    }
    e.wait_applied(3, WAIT).await;
    assert_eq!(e.state().identity.identifier_count(), 3);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A tansu broker of this test's own, its data in SQLite files that survive a restart.
struct Tansu {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
}

impl Tansu {
    fn bin() -> String {
        std::env::var("ONEJOURNEY_TANSU")
            .expect("ONEJOURNEY_TANSU is not set: run `make test` (scripts/with-broker.sh sets it)")
    }

    fn start(dir: &Path, port: u16, advertised: u16, authentication: bool) -> Tansu {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("tansu.log"))
            .unwrap();
        let mut cmd = Command::new(Tansu::bin());
        cmd.current_dir(dir)
            .args(["broker", "--listener-url", &format!("tcp://127.0.0.1:{port}")])
            .args(["--advertised-listener-url", &format!("tcp://127.0.0.1:{advertised}")])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log));
        if authentication {
            cmd.arg("--authentication");
        }
        let child = cmd.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not listen");
            std::thread::sleep(Duration::from_millis(100));
        }
        Tansu {
            child: Some(child),
            dir: dir.to_path_buf(),
            port,
        }
    }

    fn create_user(&self, name: &str, password: &str) {
        let out = Command::new(Tansu::bin())
            .current_dir(&self.dir)
            .args(["user", "create", "--broker", &format!("tcp://127.0.0.1:{}", self.port)])
            .args(["--mechanism", "scram512", name, password])
            .output()
            .unwrap();
        assert!(out.status.success(), "tansu user create: {out:?}");
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            let _ = c.wait();
        }
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Terminates TLS on `port` with a certificate for 127.0.0.1 signed by a
/// fresh CA, and forwards each connection to the broker on `to`. Returns
/// the CA certificate's file.
async fn tls_proxy(dir: &Path, port: u16, to: u16) -> PathBuf {
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
        KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name = DistinguishedName::new();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "onejourney test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, "127.0.0.1");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params
        .signed_by(&key, &Issuer::from_params(&ca_params, &ca_key))
        .unwrap();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, ca_cert.pem()).unwrap();

    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut broker) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut broker).await;
            });
        }
    });
    ca
}
