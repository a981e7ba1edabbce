//! End-to-end: a partition that starts inside a record batch reads the rest
//! of that batch (`kafka/resume.rs`). tansu 0.6, asked for an offset in the
//! middle of a batch, delivers from the next batch: without the check the
//! records between were lost without a trace. The engine fetches again from
//! further back, skips what the start covers, and counts the re-fetch in
//! `onejourney_fetch_rewinds_total{topic="input"}`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use onejourney_e2e::{brokers, create_inputs_on, group_consumer, settings, TestEngine, INPUT_PARTITIONS};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::json;

const BATCH: i64 = 40;
const EVENTS: i64 = 50;
const START: i64 = 20;
const REWINDS: &str = "onejourney_fetch_rewinds_total{topic=\"input\"}";

/// The first offset a plain consumer gets from partition 0 of `topic` when
/// it asks for `start`.
fn first_delivered(topic: &str, start: i64) -> i64 {
    let c = group_consumer("resume-in-batch-probe");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(start)).unwrap();
    c.assign(&tpl).unwrap();
    loop {
        if let Some(m) = c.poll(Duration::from_secs(10)) {
            return m.unwrap().offset();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_inside_a_record_batch_reads_the_rest_of_the_batch() {
    if std::env::var_os("ONEJOURNEY_TEST_LOG").is_some() {
        onejourney_engine::logging::init(&settings("log").log);
    }
    // Scale-out settings (a group of one): a process without a snapshot
    // starts at the group's committed offsets (one process alone refuses
    // to, since its state would be missing).
    let mut s = settings("in-batch");
    s.scaleout.identity_log = true;
    s.scaleout.route_journeys = true;
    s.state.partitions = 4;
    let topic = s.topics.web_clicks.clone();
    create_inputs_on(&s.kafka.brokers, &s, INPUT_PARTITIONS).await;
    // Forty page views of forty cookies sent together (one batch), then ten
    // more (the next batch: a fetch that skips the rest of the first one
    // has something to deliver, and the engine sees the gap).
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("linger.ms", "500")
        .create()
        .unwrap();
    for batch in [0..BATCH, BATCH..EVENTS] {
        let mut sent = Vec::new();
        for i in batch {
            let v = json!({"event_id": format!("w-{i}"), "event_type": "page_view",
                "occurred_at": onejourney_simulator::rfc3339(1_793_491_200_000 + i * 60_000),
                "identifiers": {"cookie_id": format!("c-{i}")}, "session_id": format!("s-{i}")});
            let payload = serde_json::to_vec(&v).unwrap();
            let key = format!("c-{i}");
            let record = FutureRecord::to(&topic).partition(0).key(&key).payload(&payload);
            sent.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
        }
        for f in sent {
            f.await.unwrap().unwrap();
        }
    }
    // The group resumes at offset 20, inside that batch.
    let group = s.kafka.group_id.clone();
    let t = topic.clone();
    tokio::task::spawn_blocking(move || {
        let c = group_consumer(&group);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&t, 0, Offset::Offset(START)).unwrap();
        c.commit(&tpl, CommitMode::Sync).unwrap();
    })
    .await
    .unwrap();
    let t = topic.clone();
    let first = tokio::task::spawn_blocking(move || first_delivered(&t, START))
        .await
        .unwrap();
    eprintln!("a plain consumer asked for offset {START} gets {first} first");

    let mut e = TestEngine::start(s).await;
    // Offsets 20..49: thirty journeys; the first twenty are not applied.
    let wait = Duration::from_secs(60);
    e.eventually("the rest of the batch applied", wait, |st| {
        st.all_journeys().len() == (EVENTS - START) as usize
    })
    .await;
    let rewinds = e.metric(REWINDS).await;
    let consumed = e.metric("onejourney_events_consumed_total{channel=\"web\"}").await;
    eprintln!("{rewinds} re-fetches; {consumed} web events consumed");
    e.stop().await;
    if first > START {
        // The broker skipped the rest of the batch: the engine fetched again.
        assert!(rewinds >= 1.0, "no re-fetch counted");
    } else {
        assert_eq!(rewinds, 0.0, "a re-fetch without a gap");
    }
    assert_eq!(consumed, (EVENTS - START) as f64, "each event of the rest once");
}
