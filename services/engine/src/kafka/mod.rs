//! The Kafka edge: client configuration, topic set-up, and (in [`edge`]) the
//! consumer context that turns rebalances and end offsets into events for the
//! poll loop; broker quirks are worked around here ([`resume`]).
//!
//! In: [`Settings`]. Out: configured producers and consumers, topics that
//! exist, partition end offsets. It keeps nothing. Blocking librdkafka calls
//! (metadata, commit, flush) run on `spawn_blocking`, never on an async
//! worker.

pub mod edge;
pub mod evidence;
pub mod members;
pub mod resume;

pub use edge::{EdgeEvent, IngestConsumer, IngestContext};

use std::time::Duration;

use anyhow::Context as _;
use onejourney_core::Channel;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};

use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, Producer as _};
use rdkafka::types::RDKafkaErrorCode;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Settings;

/// The settings every client shares: brokers and the pass-through properties.
pub fn base_config(s: &Settings) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &s.kafka.brokers);
    for (k, v) in &s.kafka.client {
        c.set(k, v);
    }
    if !s.kafka.sasl_password.is_empty() {
        c.set("sasl.password", &s.kafka.sasl_password);
    }
    crate::tls::trust_store_default(&mut c);
    c
}

pub fn producer(s: &Settings) -> anyhow::Result<FutureProducer> {
    let mut c = base_config(s);
    set_default(&mut c, "acks", "all");
    // A retried produce can neither duplicate nor reorder outputs. Off with
    // `"enable.idempotence" = "false"` in [kafka.client] for a broker
    // without InitProducerId (tansu 0.6 has it).
    set_default(&mut c, "enable.idempotence", "true");
    set_default(&mut c, "linger.ms", "5");
    set_default(&mut c, "queue.buffering.max.messages", "1000000");
    c.create().context("creating the Kafka producer")
}

pub fn consumer(s: &Settings, ctx: IngestContext) -> anyhow::Result<IngestConsumer> {
    let mut c = base_config(s);
    c.set("group.id", &s.kafka.group_id);
    if !s.kafka.group_instance_id.is_empty() {
        c.set("group.instance.id", &s.kafka.group_instance_id);
    }
    fetch_defaults(&mut c);
    set_default(&mut c, "statistics.interval.ms", "5000");
    // Offsets are committed only by the checkpoint, after the state and every
    // output they cover are durable (see `durable`); never in the background.
    c.set("enable.auto.offset.store", "false");
    c.set("enable.auto.commit", "false");
    set_default(&mut c, "auto.offset.reset", "earliest");
    set_default(&mut c, "enable.partition.eof", "false");
    // `cooperative-sticky` in [kafka.client] makes rebalancing incremental
    // (`docs/scaling.md` section 4); not the default: librdkafka's sticky
    // assignor balances the count over all topics, and a process was left
    // with no state partition (measured).
    let cooperative = c
        .get("partition.assignment.strategy")
        .is_some_and(|s| s.contains("cooperative"));
    c.create_with_context(ctx.with_cooperative(cooperative))
        .context("creating the Kafka consumer")
}

/// A consumer of partition 0 of `topic`, assigned from its start outside
/// the consumer group, so that every process reads every record; it never
/// commits. `what` names it in errors and in its group id (librdkafka wants
/// one; an assigning consumer never joins it).
pub fn whole_topic_reader(s: &Settings, what: &str, topic: &str) -> anyhow::Result<StreamConsumer> {
    let mut c = base_config(s);
    c.set("group.id", format!("{}-{what}", s.kafka.group_id));
    c.set("enable.auto.commit", "false");
    c.set("enable.auto.offset.store", "false");
    c.set("auto.offset.reset", "earliest");
    c.set("enable.partition.eof", "false");
    // The engine's short fetch wait (tansu holds an empty fetch for all of
    // it): the identity round trip of every event waits for this fetch.
    fetch_defaults(&mut c);
    let consumer: StreamConsumer = c.create().with_context(|| format!("creating the {what} reader"))?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .with_context(|| format!("naming the {what} partition"))?;
    consumer
        .assign(&tpl)
        .with_context(|| format!("assigning the {what} partition"))?;
    Ok(consumer)
}

/// How the engine's consumer fetches (also used by `onejourney bench`, so
/// its baseline consumers fetch the same way). Properties set in
/// `[kafka.client]` win.
pub fn fetch_defaults(c: &mut ClientConfig) {
    // A small prefetch queue keeps partitions interleaved: with librdkafka's
    // defaults (100k messages per partition) one partition's backlog can
    // starve another for longer than `timers.idle_after`, which then looks
    // idle and its events arrive behind the watermark.
    set_default(c, "queued.min.messages", "5000");
    set_default(c, "queued.max.messages.kbytes", "4096");
    // librdkafka postpones a partition's next fetch by `fetch.queue.backoff.ms`
    // (1 s by default) whenever its queue is over those limits: with the small
    // queue above that capped a consumer at about 17k messages/s against
    // tansu, and stalled it for a second at a time (make bench: drain 17,771
    // -> 148,625 events/s, engine 15,793 -> 30,324).
    set_default(c, "fetch.queue.backoff.ms", "10");
    // tansu holds a fetch for the whole wait when a partition has nothing new
    // (librdkafka's default is 500 ms): decisions would wait for it.
    set_default(c, "fetch.wait.max.ms", "10");
}

/// How the start's readers fetch (the changelog, the identity log, the
/// outputs read back, the erasures: `durable::published::read_since`): each
/// reads many partitions to their ends, and a partition at its end would
/// hold every fetch for the whole `fetch.wait.max.ms` against tansu (500 ms
/// by librdkafka's default), and a full prefetch queue postpone it by
/// `fetch.queue.backoff.ms` (1 s). Both short; the queue keeps librdkafka's
/// size, since nothing interleaves here. Properties set in `[kafka.client]`
/// win.
pub fn reader_defaults(c: &mut ClientConfig) {
    set_default(c, "fetch.queue.backoff.ms", "10");
    set_default(c, "fetch.wait.max.ms", "10");
}

fn set_default(c: &mut ClientConfig, key: &str, value: &str) {
    if c.get(key).is_none() {
        c.set(key, value);
    }
}

/// The output and internal state topics that do not exist yet, as they are
/// created: outputs with `kafka.output_partitions`; the erasure topic, the
/// identity log and the checkpoint topic never expire; the journeys
/// changelog has `state.partitions` partitions and is compacted. With
/// `scaleout.identity_log`, the identity evidence topic too: 1 partition,
/// never expires; with `scaleout.route_journeys` the routed topic
/// (`state.partitions` partitions) and the members topic (1, compacted).
fn missing_topics<'a>(s: &'a Settings, existing: &[String]) -> Vec<NewTopic<'a>> {
    let replication = s.kafka.replication_factor;
    let outputs = s.topics.outputs().map(|t| (t, s.kafka.output_partitions));
    let internal = s
        .topics
        .changelog(s.state.partitions)
        .map(|(t, p)| (t, i32::try_from(p).unwrap_or(i32::MAX)));
    let evidence = s
        .scaleout
        .identity_log
        .then_some((s.topics.identity_evidence.as_str(), 1));
    let routed = s.scaleout.route_journeys.then_some((
        s.topics.routed.as_str(),
        i32::try_from(s.state.partitions).unwrap_or(i32::MAX),
    ));
    let members = s.scaleout.route_journeys.then_some((s.topics.members.as_str(), 1));
    outputs
        .into_iter()
        .chain(internal)
        .chain(evidence)
        .chain(routed)
        .chain(members)
        .filter(|(t, _)| !existing.iter().any(|e| e == t))
        .map(|(t, partitions)| {
            let topic = NewTopic::new(t, partitions, TopicReplication::Fixed(replication));
            // The erasure records keep a forgotten customer out of a
            // rebuild; the identity log and the checkpoints are what a
            // restore from the broker folds: none of them may expire.
            if t == s.topics.erasures
                || t == s.topics.identity_log
                || t == s.topics.state_checkpoints
                || t == s.topics.identity_evidence
            {
                topic.set("retention.ms", "-1")
            } else if t == s.topics.journeys_changelog || t == s.topics.members {
                topic.set("cleanup.policy", "compact")
            } else {
                topic
            }
        })
        .collect()
}

/// Creates the output and internal state topics that are missing, retrying
/// while the broker is unreachable. Returns `false` when cancelled first.
pub async fn ensure_output_topics(
    s: &Settings,
    producer: &FutureProducer,
    cancel: &CancellationToken,
) -> anyhow::Result<bool> {
    let admin: AdminClient<DefaultClientContext> =
        base_config(s).create().context("creating the Kafka admin client")?;
    let opts = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(10)))
        .request_timeout(Some(Duration::from_secs(10)));
    loop {
        let problem = match topic_names(producer).await? {
            Err(e) => format!("could not read topic metadata: {e}"),
            Ok(existing) => {
                let missing = missing_topics(s, &existing);
                if missing.is_empty() {
                    return Ok(true);
                }
                let created = tokio::select! {
                    _ = cancel.cancelled() => return Ok(false),
                    r = admin.create_topics(&missing, &opts) => r,
                };
                match created {
                    Ok(results) => {
                        let mut failed = Vec::new();
                        for r in results {
                            match r {
                                Ok(t) => info!(topic = %t, "created output topic"),
                                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                                Err((t, e)) => failed.push(format!("{t}: {e}")),
                            }
                        }
                        if failed.is_empty() {
                            return Ok(true);
                        }
                        format!("could not create output topics: {}", failed.join(", "))
                    }
                    Err(e) => format!("could not create output topics: {e}"),
                }
            }
        };
        warn!(problem = %problem, "output topics not ready; retrying");
        tokio::select! {
            _ = cancel.cancelled() => return Ok(false),
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

/// Every partition of `topics` with its end offset now, asked on a blocking
/// thread.
pub async fn partition_ends(producer: &FutureProducer, topics: Vec<String>) -> anyhow::Result<Vec<(String, i32, i64)>> {
    let p = producer.clone();
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        for t in topics {
            let md = p
                .client()
                .fetch_metadata(Some(&t), Duration::from_secs(30))
                .with_context(|| format!("reading the metadata of {t}"))?;
            for topic in md.topics() {
                for part in topic.partitions() {
                    let (_, high) = p
                        .client()
                        .fetch_watermarks(&t, part.id(), Duration::from_secs(30))
                        .with_context(|| format!("reading the end offsets of {t}"))?;
                    out.push((t.clone(), part.id(), high));
                }
            }
        }
        Ok(out)
    })
    .await
    .context("the metadata reader panicked")?
}

/// The names of every topic the cluster knows.
async fn topic_names(producer: &FutureProducer) -> anyhow::Result<Result<Vec<String>, KafkaError>> {
    let p = producer.clone();
    Ok(tokio::task::spawn_blocking(move || {
        p.client()
            .fetch_metadata(None, Duration::from_secs(5))
            .map(|m| m.topics().iter().map(|t| t.name().to_string()).collect::<Vec<_>>())
    })
    .await?)
}

/// Every partition of the four input topics, as they are now.
pub async fn input_partitions(s: &Settings, producer: &FutureProducer) -> anyhow::Result<Vec<(Channel, i32)>> {
    let p = producer.clone();
    let metadata = tokio::task::spawn_blocking(move || p.client().fetch_metadata(None, Duration::from_secs(10)))
        .await?
        .context("reading the input topics' partitions")?;
    let mut out = Vec::new();
    for t in metadata.topics() {
        if let Some(channel) = s.topics.channel_of(t.name()) {
            out.extend(t.partitions().iter().map(|p| (channel, p.id())));
        }
    }
    Ok(out)
}

/// Waits until every input topic exists. Returns `false` when cancelled first.
pub async fn wait_for_input_topics(
    s: &Settings,
    producer: &FutureProducer,
    cancel: &CancellationToken,
) -> anyhow::Result<bool> {
    let wanted: Vec<String> = s.topics.consumed().iter().map(|t| t.to_string()).collect();
    loop {
        match topic_names(producer).await? {
            Ok(names) => {
                let missing: Vec<&String> = wanted.iter().filter(|t| !names.contains(t)).collect();
                if missing.is_empty() {
                    return Ok(true);
                }
                warn!(missing = ?missing, "waiting for input topics; not ready");
            }
            Err(e) => warn!(error = %e, "could not read topic metadata; not ready"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return Ok(false),
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_readers_fetch_without_holding_and_the_operator_wins() {
        let mut c = ClientConfig::new();
        reader_defaults(&mut c);
        assert_eq!(c.get("fetch.wait.max.ms"), Some("10"));
        assert_eq!(c.get("fetch.queue.backoff.ms"), Some("10"));
        let mut c = ClientConfig::new();
        c.set("fetch.wait.max.ms", "200");
        reader_defaults(&mut c);
        assert_eq!(c.get("fetch.wait.max.ms"), Some("200"));
    }
}
