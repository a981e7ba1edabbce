//! Publishing a simulation to Kafka, with many sends in flight.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use crate::{SimEvent, Stream};

/// Maps a stream to its topic name.
pub type TopicOf = dyn Fn(Stream) -> String + Send + Sync;

pub fn producer(brokers: &str) -> anyhow::Result<FutureProducer> {
    producer_with(brokers, &BTreeMap::new())
}

/// A producer with extra librdkafka properties (TLS, SASL, ...), the same
/// `[kafka.client]` settings the engine takes; they win over the defaults.
pub fn producer_with(brokers: &str, client: &BTreeMap<String, String>) -> anyhow::Result<FutureProducer> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000");
    for (k, v) in client {
        c.set(k, v);
    }
    c.create().context("creating the simulator's producer")
}

/// The environment rule for librdkafka properties, shared with the engine.
pub use onejourney_core::client_env::{client_properties_from_env, CLIENT_ENV_PREFIX};

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

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn environment_names_map_to_dotted_librdkafka_properties() {
        let props = client_properties_from_env(vars(&[
            ("ONEJOURNEY_KAFKA_CLIENT_SSL_CA_LOCATION", "/etc/ca.pem"),
            ("ONEJOURNEY_KAFKA_CLIENT_SECURITY_PROTOCOL", "SASL_SSL"),
            ("ONEJOURNEY_KAFKA_CLIENT_SASL_MECHANISMS", "SCRAM-SHA-512"),
            ("ONEJOURNEY_KAFKA_CLIENT_ENABLE_SSL_CERTIFICATE_VERIFICATION", "false"),
            ("ONEJOURNEY_KAFKA_CLIENT_LOG__LEVEL", "7"),
            ("ONEJOURNEY_KAFKA_CLIENT_", "ignored: no name"),
            ("ONEJOURNEY__KAFKA__BROKERS", "not a client property"),
            ("PATH", "/usr/bin"),
        ]));
        let want: BTreeMap<String, String> = [
            ("ssl.ca.location", "/etc/ca.pem"),
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanisms", "SCRAM-SHA-512"),
            ("enable.ssl.certificate.verification", "false"),
            ("log_level", "7"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(props, want);
    }

    #[test]
    fn mapped_properties_are_accepted_by_librdkafka() {
        let props = client_properties_from_env(vars(&[
            ("ONEJOURNEY_KAFKA_CLIENT_SSL_CA_LOCATION", "probe"),
            ("ONEJOURNEY_KAFKA_CLIENT_SASL_OAUTHBEARER_CONFIG", "principal=x"),
            ("ONEJOURNEY_KAFKA_CLIENT_LOG__LEVEL", "6"),
        ]));
        let mut c = ClientConfig::new();
        for (k, v) in &props {
            c.set(k, v);
        }
        let native = c.create_native_config().expect("librdkafka knows every mapped name");
        assert_eq!(native.get("log_level").expect("log_level"), "6");
    }
}
