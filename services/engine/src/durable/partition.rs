//! One state partition on the broker (scale-out, `scaleout.route_journeys`):
//! what a new owner reads when the consumer group assigns it the partition.
//!
//! In: the journeys changelog partition q, from its beginning to its end
//! as of now. Out: the latest record per One ID (journey, timers, and the
//! dedupe keys of the events in it: see core `processor/moving.rs`) and the
//! last [`PartitionMarker`] its owners wrote, which says from where on the
//! output topics a decision of this partition may have been published after
//! the state the records hold. It keeps nothing.
//!
//! The marker is a record of partition q itself, key [`MARKER_KEY`] (not a
//! One ID), written by each checkpoint after that checkpoint's journey
//! records of q are acknowledged. Compaction keeps the latest.

use std::collections::HashMap;

use anyhow::Context as _;
use onejourney_core::identity::OneId;
use onejourney_core::processor::PartitionRecord;
use onejourney_core::EventTime;
use rdkafka::Message as _;
use serde::{Deserialize, Serialize};

use super::changelog::{decode, encode};
use super::journey_record::decode_journey_applied;
use super::{fresh, published};
use crate::config::Settings;

/// The key of the marker record in a journeys changelog partition.
pub const MARKER_KEY: &str = "~marker";

/// Written by the owner of a state partition at each checkpoint, after the
/// partition's records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PartitionMarker {
    /// Per output partition, where it ended at the checkpoint's barrier:
    /// outputs after these were published after the state the records hold.
    pub outputs: Vec<(String, i32, i64)>,
    pub written_at_ms: u64,
    /// The routed partition's offset the checkpoint committed: its
    /// records hold every message before it. Recorded for diagnosis; a new
    /// owner starts at the group's committed offset (starting here was
    /// tried and measured worse in session 17: `docs/scaling.md` section 4).
    #[serde(default)]
    pub routed_offset: Option<i64>,
    /// The process that wrote it (`kafka.group_instance_id` or its members id).
    pub instance: String,
}

impl PartitionMarker {
    pub fn encode(&self) -> anyhow::Result<Vec<u8>> {
        encode(self)
    }
}

/// What a new owner reads of one partition.
#[derive(Debug, Default)]
pub struct ReadPartition {
    pub records: Vec<PartitionRecord>,
    /// The largest applied-to time of the records' writers.
    pub applied_to: EventTime,
    pub marker: Option<PartitionMarker>,
    /// Records read (every version of every key).
    pub read: u64,
}

/// Reads journeys changelog partitions `qs` to their ends, in one pass
/// (blocking). One [`ReadPartition`] per partition, in the order of `qs`.
pub fn read_partitions(
    settings: &Settings,
    qs: &[i32],
    progress: impl FnMut(u64),
) -> anyhow::Result<Vec<ReadPartition>> {
    let topic = settings.topics.journeys_changelog.as_str();
    let since: Vec<(String, i32, i64)> = fresh::starts(settings, &[topic])?
        .into_iter()
        .filter(|(_, p, _)| qs.contains(p))
        .collect();
    let mut each: HashMap<i32, Latest> = qs.iter().map(|q| (*q, Latest::default())).collect();
    let mut failed = None;
    published::read_since(settings, &since, progress, |m| {
        let Some(part) = each.get_mut(&m.partition()) else {
            return;
        };
        part.read += 1;
        let Some(key) = m.key().and_then(|k| std::str::from_utf8(k).ok()) else {
            return;
        };
        if key == MARKER_KEY {
            match m.payload().map(decode_marker) {
                Some(Ok(mk)) => part.marker = Some(mk),
                Some(Err(e)) if failed.is_none() => {
                    failed = Some(e.context(format!("{topic} partition {}: a damaged marker", m.partition())));
                }
                _ => {}
            }
            return;
        }
        part.latest.insert(OneId::from(key), m.payload().map(<[u8]>::to_vec));
    })?;
    if let Some(e) = failed {
        return Err(e);
    }
    qs.iter().map(|q| decoded(each.remove(q).unwrap_or_default())).collect()
}

/// One partition's records as read: the latest value per key.
#[derive(Default)]
struct Latest {
    latest: HashMap<OneId, Option<Vec<u8>>>,
    marker: Option<PartitionMarker>,
    read: u64,
}

fn decoded(part: Latest) -> anyhow::Result<ReadPartition> {
    let Latest { latest, marker, read } = part;
    let mut records = Vec::with_capacity(latest.len());
    let mut applied_to = EventTime::MIN;
    for (one_id, value) in latest {
        let Some(bytes) = value else { continue };
        let (journey, timers, applied, to) =
            decode_journey_applied(&bytes).with_context(|| format!("the journey record of {one_id}"))?;
        applied_to = applied_to.max(EventTime(to));
        records.push((one_id, journey, timers, applied));
    }
    Ok(ReadPartition {
        records,
        applied_to,
        marker,
        read,
    })
}

fn decode_marker(bytes: &[u8]) -> anyhow::Result<PartitionMarker> {
    decode(bytes, "partition marker")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_reads_back() {
        let m = PartitionMarker {
            outputs: vec![("next-best-actions".into(), 0, 17)],
            written_at_ms: 5,
            routed_offset: Some(40),
            instance: "a".into(),
        };
        assert_eq!(decode_marker(&m.encode().unwrap()).unwrap(), m);
        assert!(decode_marker(&[9, 1, 2]).is_err());
    }
}
