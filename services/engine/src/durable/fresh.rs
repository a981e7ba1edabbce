//! Starting without a snapshot: a new consumer group, a lost state, or a
//! rebuild.
//!
//! In: the settings and the broker. Out: for a start without a snapshot,
//! whether the group already committed input offsets ([`committed_inputs`]):
//! then the state it built is missing (a lost volume, a wrong `state.dir`)
//! and starting empty would silently wipe it, so the engine refuses; and for
//! `--rebuild` ([`beginnings`]), where every input partition starts (its
//! first offset at the broker) and where every output partition's retained
//! records start, so that everything re-processing regenerates is read back
//! and not published again; [`starts`] also tells where the erasure topic
//! begins; for a new group ([`output_ends`]), where every output partition
//! ends before it publishes anything, which the snapshot it writes at once
//! records (see `pipeline::restore`). It keeps nothing. Blocking: call it off
//! the async workers.

use std::time::Duration;

use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use super::Header;
use crate::config::Settings;

const TIMEOUT: Duration = Duration::from_secs(30);

fn consumer(settings: &Settings) -> anyhow::Result<BaseConsumer> {
    crate::kafka::base_config(settings)
        .set("group.id", &settings.kafka.group_id)
        .set("enable.auto.commit", "false")
        .create()
        .context("creating a consumer to read the group's offsets")
}

/// Every partition of `topic`.
fn partitions(c: &BaseConsumer, topic: &str) -> anyhow::Result<Vec<i32>> {
    let md = c
        .fetch_metadata(Some(topic), TIMEOUT)
        .with_context(|| format!("reading the metadata of {topic}"))?;
    Ok(md
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect())
}

/// The input partitions on which the consumer group has committed an offset.
pub fn committed_inputs(settings: &Settings) -> anyhow::Result<Vec<(String, i32, i64)>> {
    let c = consumer(settings)?;
    let mut tpl = TopicPartitionList::new();
    for topic in settings.topics.consumed() {
        for p in partitions(&c, topic)? {
            tpl.add_partition(topic, p);
        }
    }
    let committed = c
        .committed_offsets(tpl, TIMEOUT)
        .context("reading the consumer group's committed offsets")?;
    Ok(committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) if o >= 0 => Some((e.topic().to_string(), e.partition(), o)),
            _ => None,
        })
        .collect())
}

/// Which end of a partition [`watermarks`] reads.
#[derive(Clone, Copy)]
enum End {
    /// Its first retained offset.
    Low,
    /// The offset its next record gets.
    High,
}

/// Per partition of `topics`: its `end` offset at the broker.
fn watermarks(c: &BaseConsumer, topics: &[&str], end: End) -> anyhow::Result<Vec<(String, i32, i64)>> {
    let mut out = Vec::new();
    for topic in topics {
        for p in partitions(c, topic)? {
            let (low, high) = c
                .fetch_watermarks(topic, p, TIMEOUT)
                .with_context(|| format!("reading the offsets of {topic}"))?;
            let offset = match end {
                End::Low => low,
                End::High => high,
            };
            out.push((topic.to_string(), p, offset));
        }
    }
    Ok(out)
}

/// A header for a rebuild: every input partition from its first offset at
/// the broker, every output partition from its first retained record.
pub fn beginnings(settings: &Settings) -> anyhow::Result<Header> {
    let c = consumer(settings)?;
    Ok(Header {
        written_at_ms: 0,
        inputs: watermarks(&c, &settings.topics.consumed(), End::Low)?,
        outputs: watermarks(&c, &settings.topics.outputs(), End::Low)?,
        changelog: Some(super::changelog::Chain::empty(settings.state.partitions)),
    })
}

/// Every partition of `topics` with its first offset at the broker.
pub fn starts(settings: &Settings, topics: &[&str]) -> anyhow::Result<Vec<(String, i32, i64)>> {
    watermarks(&consumer(settings)?, topics, End::Low)
}

/// Where every output partition ends now. The broker may report an end a
/// record or two short (tansu 0.6 does), which only makes a restart read
/// back a little more.
pub fn output_ends(settings: &Settings) -> anyhow::Result<Vec<(String, i32, i64)>> {
    watermarks(&consumer(settings)?, &settings.topics.outputs(), End::High)
}
