//! Publishing a simulation to Kafka, with many sends in flight.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use crate::{SimEvent, Stream};

/// Maps a stream to its topic name.
pub type TopicOf = dyn Fn(Stream) -> String + Send + Sync;

pub fn producer(brokers: &str) -> anyhow::Result<FutureProducer> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .context("creating the simulator's producer")
}

/// Publishes `events` in order; `rate` events per second at most (0: as fast
/// as possible). Returns once every event is acknowledged.
pub async fn publish(
    producer: &FutureProducer,
    events: &[SimEvent],
    topic_of: &TopicOf,
    rate: u32,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut pending = Vec::with_capacity(4096);
    for (i, e) in events.iter().enumerate() {
        if rate > 0 {
            let due = Duration::from_secs_f64(i as f64 / f64::from(rate));
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        let topic = topic_of(e.stream);
        let payload = e.bytes();
        let fut = loop {
            let record = FutureRecord::to(&topic).key(&e.key).payload(&payload);
            match producer.send_result(record) {
                Ok(f) => break f,
                Err((
                    rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                    _,
                )) => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => return Err(e).context("producing a simulated event"),
            }
        };
        pending.push(fut);
        if pending.len() >= 4096 {
            for f in pending.drain(..) {
                f.await
                    .context("delivery cancelled")?
                    .map_err(|(e, _)| e)
                    .context("delivering a simulated event")?;
            }
        }
    }
    for f in pending {
        f.await
            .context("delivery cancelled")?
            .map_err(|(e, _)| e)
            .context("delivering a simulated event")?;
    }
    let p = producer.clone();
    tokio::task::spawn_blocking(move || p.flush(Duration::from_secs(30)))
        .await?
        .context("flushing the simulator's producer")?;
    Ok(())
}
