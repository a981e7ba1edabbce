//! The embedded default, with no broker to install.
//!
//! Starts librdkafka's in-process mock cluster (it speaks the real protocol
//! on a loopback port), runs the engine against it, publishes simulated
//! traffic at a steady rate (small backlog: the mock cluster is not built for
//! large ones), and prints every decision as a readable line.

use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use anyhow::Context as _;
use onejourney_simulator::{generate, kafka as sim_kafka, SimConfig, Stream};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use onejourney_engine::config::Settings;
use onejourney_engine::Engine;

const PARTITIONS: i32 = 2;
/// State partitions of the demo (the journeys changelog's partitions).
const STATE_PARTITIONS: u32 = 4;

/// Runs the mock cluster on its own thread until `stop` is dropped or sent.
fn start_mock_cluster(topics: Vec<(String, i32)>) -> anyhow::Result<(String, std_mpsc::Sender<()>)> {
    let (addr_tx, addr_rx) = std_mpsc::channel();
    let (stop_tx, stop_rx) = std_mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("mock-kafka".into())
        .spawn(move || {
            let cluster = match MockCluster::new(1) {
                Ok(c) => c,
                Err(e) => {
                    let _ = addr_tx.send(Err(anyhow::anyhow!("starting the mock cluster: {e}")));
                    return;
                }
            };
            for (t, partitions) in &topics {
                if let Err(e) = cluster.create_topic(t, *partitions, 1) {
                    let _ = addr_tx.send(Err(anyhow::anyhow!("creating topic {t}: {e}")));
                    return;
                }
            }
            let _ = addr_tx.send(Ok(cluster.bootstrap_servers()));
            let _ = stop_rx.recv();
        })
        .context("spawning the mock cluster thread")?;
    let addr = addr_rx.recv().context("the mock cluster thread ended")??;
    Ok((addr, stop_tx))
}

/// Every topic the engine reads or writes, with its partitions. The mock
/// cluster cannot create topics on request (with configs) in time: every
/// topic is made up front, the state changelog's too.
fn mock_topics(settings: &Settings) -> Vec<(String, i32)> {
    let t = &settings.topics;
    let mut topics: Vec<(String, i32)> = t.consumed().iter().map(|t| (t.to_string(), PARTITIONS)).collect();
    topics.extend(t.outputs().iter().map(|t| (t.to_string(), PARTITIONS)));
    topics.extend(
        t.changelog(settings.state.partitions)
            .iter()
            .map(|(t, p)| (t.to_string(), i32::try_from(*p).unwrap_or(1))),
    );
    topics
}

pub async fn run(mut settings: Settings, customers: usize, rate: u32, cancel: CancellationToken) -> anyhow::Result<()> {
    settings.state.partitions = STATE_PARTITIONS;
    let (brokers, stop_cluster) = start_mock_cluster(mock_topics(&settings))?;
    settings.kafka.brokers = brokers.clone();
    settings.kafka.output_partitions = PARTITIONS;
    // The embedded broker starts empty every time: so does the demo's state.
    settings.state.dir = std::env::temp_dir().join(format!("onejourney-demo-{}", std::process::id()));
    let topic_names = settings.topics.clone();
    // Erasing needs an erase token of its own: one for this run, unless set.
    let erase_token = if settings.http.erase_tokens.is_empty() {
        let token = new_token();
        settings.http.erase_tokens.insert("demo".into(), token.clone());
        Some(token)
    } else {
        None
    };
    let read_token = !settings.http.bearer_token.is_empty();

    let engine = Engine::start(settings, cancel.clone()).await?;
    let http = engine.http_addr;
    println!("onejourney demo: embedded Kafka at {brokers}");
    println!("  metrics    http://{http}/metrics");
    println!("  readiness  http://{http}/readyz");
    println!("  page       http://{http}/ui   (the Customer 360 page)");
    println!("  api        http://{http}/v1/openapi.json");
    if read_token {
        println!("  read token as configured (http.bearer_token)");
    } else {
        println!("  read token none: lookups are open in the demo");
    }
    match &erase_token {
        Some(t) => println!("  erase token {t}   (name \"demo\": the page's erase button asks for it)"),
        None => println!("  erase token as configured (http.erase_tokens)"),
    }
    println!("  {customers} simulated people, {rate} events/s; Ctrl-C stops\n");

    let printer = tokio::spawn(print_decisions(
        brokers.clone(),
        vec![topic_names.next_best_actions.clone(), topic_names.churn_risk.clone()],
        cancel.clone(),
    ));

    let sim = generate(&SimConfig {
        customers,
        ..SimConfig::default()
    });
    let customer_ids: Vec<String> = sim.people.iter().filter_map(|p| p.customer_id.clone()).collect();
    let links = tokio::spawn(print_people_seen(
        engine.state.clone(),
        http,
        customer_ids,
        cancel.clone(),
    ));
    let producer = sim_kafka::producer(&brokers)?;
    let names = topic_names.clone();
    let topic_of = move |s: Stream| names.for_channel(s.channel()).to_string();
    let total = sim.events.len();
    tokio::select! {
        _ = cancel.cancelled() => {}
        r = sim_kafka::publish(&producer, &sim.events, &topic_of, rate) => {
            r?;
            println!("\n-- all {total} simulated events published; the engine keeps serving until Ctrl-C --\n");
        }
    }
    let result = engine.wait().await;
    // Stop every client of the mock cluster before the cluster itself, so
    // Ctrl-C ends quietly (no `AllBrokersDown` from clients left behind).
    printer.abort();
    links.abort();
    let _ = printer.await;
    let _ = links.await;
    drop(producer);
    drop(stop_cluster);
    result
}

/// A random token for this run, in hex.
fn new_token() -> String {
    use rand::Rng as _;
    let bytes: [u8; 16] = rand::thread_rng().gen();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Prints page links for up to three simulated people the engine has already
/// stitched (a person shows up only with their first event): after 10 s, then
/// every 10 s until three are printed.
async fn print_people_seen(
    state: std::sync::Arc<onejourney_core::State>,
    http: std::net::SocketAddr,
    customer_ids: Vec<String>,
    cancel: CancellationToken,
) {
    let mut printed = std::collections::HashSet::new();
    while printed.len() < 3 {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
        for cid in &customer_ids {
            if printed.len() >= 3 {
                break;
            }
            let Ok(Ok(key)) = state.identity.namespaces().normalise("customer_id", cid) else {
                continue;
            };
            if let Some(one_id) = state.identity.one_id_of(&key) {
                if printed.insert(cid.clone()) {
                    println!("  try  http://{http}/ui/profiles/customer_id/{cid}   One ID {one_id}");
                }
            }
        }
    }
}

/// Prints every record of `topics` as one readable line.
async fn print_decisions(brokers: String, topics: Vec<String>, cancel: CancellationToken) -> anyhow::Result<()> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "onejourney-demo-printer")
        .set("enable.auto.commit", "false")
        .create()
        .context("creating the demo printer")?;
    let mut tpl = TopicPartitionList::new();
    for t in &topics {
        for p in 0..PARTITIONS {
            tpl.add_partition_offset(t, p, Offset::Beginning)?;
        }
    }
    consumer.assign(&tpl)?;
    loop {
        let m = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            m = consumer.recv() => m,
        };
        let Ok(m) = m else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let Some(v) = m.payload().and_then(|p| serde_json::from_slice::<Value>(p).ok()) else {
            continue;
        };
        println!("{}", describe(&v));
    }
}

fn describe(v: &Value) -> String {
    let s = |k: &str| v[k].as_str().unwrap_or("-").to_string();
    if v.get("action").is_some() {
        let when = s("decided_at");
        format!(
            "{}  ACTION {:<24} via {:<11} score {:.2}  {}  {}",
            &when[..16.min(when.len())],
            s("action"),
            s("channel"),
            v["score"].as_f64().unwrap_or(0.0),
            s("one_id"),
            s("reason"),
        )
    } else {
        let when = s("evaluated_at");
        let top: Vec<String> = v["factors"]
            .as_array()
            .map(|f| {
                let mut f = f.clone();
                f.sort_by(|a, b| {
                    b["contribution"]
                        .as_f64()
                        .unwrap_or(0.0)
                        .total_cmp(&a["contribution"].as_f64().unwrap_or(0.0))
                });
                f.iter()
                    .take(2)
                    .map(|x| format!("{}={}", x["name"].as_str().unwrap_or(""), x["value"]))
                    .collect()
            })
            .unwrap_or_default();
        format!(
            "{}  CHURN  {:>6} -> {:<6}                 score {:.2}  {}  top factors: {}",
            &when[..16.min(when.len())],
            v["previous_band"].as_str().unwrap_or("none"),
            s("band"),
            v["score"].as_f64().unwrap_or(0.0),
            s("one_id"),
            top.join(", "),
        )
    }
}
