//! The Kafka clients every broker figure shares, all with the engine's own
//! client settings (`kafka::base_config`, its consumer prefetch and producer
//! batching).
//!
//! In: the bench's settings, topic names and messages. Out: topics created,
//! consumers assigned to explicit partitions, the upstream producer, and the
//! two plain rates: `produce` ([`publish`]) and `drain` ([`drain`]). Keeps
//! nothing: every client belongs to its caller.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;

use onejourney_engine::config::Settings;
use onejourney_engine::kafka;
use onejourney_engine::pipeline::emit::enqueue;

use super::Msg;

pub(crate) async fn create_topics(s: &Settings, names: &[String], partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = kafka::base_config(s).create().context("admin client")?;
    let topics: Vec<NewTopic> = names
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for r in admin.create_topics(&topics, &opts).await.context("creating topics")? {
        if let Err((t, e)) = r {
            anyhow::ensure!(e == RDKafkaErrorCode::TopicAlreadyExists, "creating {t}: {e}");
        }
    }
    Ok(())
}

/// A consumer with the engine's settings, reading `partitions` from `offset`.
pub(super) fn consumer(
    s: &Settings,
    group: &str,
    partitions: &[(String, i32)],
    offset: Offset,
) -> anyhow::Result<StreamConsumer> {
    let mut c = kafka::base_config(s);
    c.set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest");
    kafka::fetch_defaults(&mut c);
    let consumer: StreamConsumer = c.create().context("bench consumer")?;
    let mut tpl = TopicPartitionList::new();
    for (t, p) in partitions {
        tpl.add_partition_offset(t, *p, offset).context("partition list")?;
    }
    consumer.assign(&tpl).context("assigning partitions")?;
    Ok(consumer)
}

/// The upstream producer, with librdkafka's default batching delay (5 ms).
/// Sending every message on its own (`linger.ms=0`) at thousands a second
/// floods tansu with tiny produce requests: acknowledgements then stall for
/// seconds and every figure downstream measures that instead.
pub(crate) fn upstream(s: &Settings) -> anyhow::Result<FutureProducer> {
    let mut c: ClientConfig = kafka::base_config(s);
    c.set("linger.ms", "5")
        .set("queue.buffering.max.messages", "2000000")
        .set("message.timeout.ms", "120000");
    c.create().context("bench producer")
}

pub(super) fn all_partitions(topics: &[String], partitions: i32) -> Vec<(String, i32)> {
    topics
        .iter()
        .flat_map(|t| (0..partitions).map(move |p| (t.clone(), p)))
        .collect()
}

/// Publishes every message and waits for every acknowledgement; events/s.
pub(crate) async fn publish(producer: &FutureProducer, inputs: &[String], msgs: &[Msg]) -> anyhow::Result<f64> {
    let (tx, mut rx) = mpsc::channel(100_000);
    let acks = tokio::spawn(async move {
        let mut failed = 0usize;
        while let Some(f) = rx.recv().await {
            let f: rdkafka::producer::DeliveryFuture = f;
            if !matches!(f.await, Ok(Ok(_))) {
                failed += 1;
            }
        }
        failed
    });
    let t = Instant::now();
    for m in msgs {
        let rec = FutureRecord::to(&inputs[m.channel])
            .partition(m.partition)
            .key(m.key.as_str())
            .payload(m.payload.as_slice());
        let f = enqueue(producer, rec).await.context("producing")?;
        tx.send(f).await.context("ack task ended")?;
    }
    drop(tx);
    let failed = acks.await.context("ack task panicked")?;
    anyhow::ensure!(failed == 0, "{failed} messages not acknowledged");
    Ok(msgs.len() as f64 / t.elapsed().as_secs_f64())
}

/// Reads `n` messages; events/s from the first message to the last.
pub(super) async fn drain(consumer: &StreamConsumer, n: usize) -> anyhow::Result<f64> {
    let t = Instant::now();
    for _ in 0..n {
        let m = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .context("the drain stalled for 30 s")?
            .context("consuming")?;
        std::hint::black_box(m.payload().map(<[u8]>::len));
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}
