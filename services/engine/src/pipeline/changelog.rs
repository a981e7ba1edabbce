//! The checkpoint's changelog step: the state changed since the last
//! checkpoint, produced to the broker and acknowledged.
//!
//! In: the processor (the journeys its state marks dirty, the identity ops
//! it applied since the last checkpoint, its globals) and the checkpoint's
//! [`Header`]. Out: journey records (tombstones for journeys that went) on
//! their state partitions, identity-op batches, the globals in chunks and,
//! once all of them are acknowledged, the marker that commits them (see
//! [`crate::durable::changelog`] for the format). Keeps the [`Chain`] of
//! the last committed checkpoint, which the next marker extends.
//!
//! Invariant: a marker is produced only after every record it commits is
//! acknowledged; the caller writes the snapshot file and commits the input
//! offsets only after the marker is. A failure cancels the engine (the
//! changes taken from the processor cannot be handed back): the restart
//! resumes from the last committed checkpoint.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context as _;
use onejourney_core::identity::IdentityOp;
use onejourney_core::Processor;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};

use super::emit::enqueue;
use crate::config::Settings;
use crate::durable::changelog::{self, serde_bytes_vec::BytesRef, Chain, Marker};
use crate::durable::Header;
use crate::metrics::Metrics;

pub struct Changelog {
    producer: FutureProducer,
    group: String,
    journeys_topic: String,
    identity_topic: String,
    checkpoints_topic: String,
    partitions: u32,
    /// What the committed checkpoints so far wrote.
    chain: Chain,
    metrics: Arc<Metrics>,
}

/// What one checkpoint wrote to the changelog.
#[derive(Debug, Default)]
pub struct Written {
    pub records: u64,
    pub bytes: u64,
    /// The globals record's size (dominated by the dedupe set).
    pub globals_bytes: u64,
    /// The header as the marker carries it (the chain including this checkpoint).
    pub header: Header,
}

/// The records handed to the producer, waiting for their acknowledgement.
#[derive(Default)]
struct Sent {
    /// Per (topic, partition): the delivery futures, in send order.
    pending: BTreeMap<(String, i32), Vec<DeliveryFuture>>,
    records: u64,
    bytes: u64,
}

impl Changelog {
    /// `chain`: what the state restored at start builds on.
    pub fn new(settings: &Settings, producer: FutureProducer, chain: Chain, metrics: Arc<Metrics>) -> Self {
        Changelog {
            producer,
            group: settings.kafka.group_id.clone(),
            journeys_topic: settings.topics.journeys_changelog.clone(),
            identity_topic: settings.topics.identity_log.clone(),
            checkpoints_topic: settings.topics.state_checkpoints.clone(),
            partitions: settings.state.partitions,
            chain,
            metrics,
        }
    }

    /// Produces every change since the last call and the marker that
    /// commits them with `header`; returns once the marker is acknowledged.
    pub async fn write(&mut self, processor: &mut Processor, header: &Header) -> anyhow::Result<Written> {
        let mut chain = self.chain.clone();
        let mut sent = Sent::default();
        self.send_journeys(processor, &mut sent).await?;
        self.send_identity(processor.take_identity_ops(), &mut sent).await?;
        let (records, bytes) = (sent.records, sent.bytes);
        for ((topic, partition), futures) in std::mem::take(&mut sent.pending) {
            let (from, to) = acknowledged(futures).await?;
            if topic == self.identity_topic {
                chain.identity.add(from, to);
            } else if let Some(r) = usize::try_from(partition).ok().and_then(|p| chain.journeys.get_mut(p)) {
                r.add(from, to);
            }
        }
        let globals = super::blocking(|| rmp_serde::to_vec(&processor.globals())).context("encoding the globals")?;
        let mut sent = Sent::default();
        for chunk in globals.chunks(changelog::CHUNK) {
            let value = changelog::encode(&BytesRef(chunk))?;
            self.send(
                &mut sent,
                "globals",
                (&self.checkpoints_topic, 0),
                &changelog::globals_key(&self.group),
                Some(&value),
            )
            .await?;
        }
        let mut globals_at = (0, 0);
        for (_, futures) in std::mem::take(&mut sent.pending) {
            globals_at = acknowledged(futures).await?;
        }
        let header = Header {
            changelog: Some(chain.clone()),
            ..header.clone()
        };
        let marker = Marker {
            group: self.group.clone(),
            header: header.clone(),
            globals: globals_at,
        };
        let value = changelog::encode(&marker)?;
        self.send(
            &mut sent,
            "marker",
            (&self.checkpoints_topic, 0),
            &changelog::marker_key(&self.group),
            Some(&value),
        )
        .await?;
        for (_, futures) in std::mem::take(&mut sent.pending) {
            acknowledged(futures).await?;
        }
        self.chain = chain;
        Ok(Written {
            records: records + sent.records,
            bytes: bytes + sent.bytes,
            globals_bytes: globals.len() as u64,
            header,
        })
    }

    /// Every journey changed since the last checkpoint: its value now, or a
    /// tombstone when it went.
    async fn send_journeys(&self, processor: &Processor, sent: &mut Sent) -> anyhow::Result<()> {
        let state = processor.state();
        for one_id in state.take_dirty() {
            let value = match state.journeys.get(&one_id) {
                Some(j) => Some(changelog::encode(&**j.value())?),
                None => None,
            };
            let partition = changelog::partition_of(&one_id, self.partitions);
            let kind = if value.is_some() { "journey" } else { "tombstone" };
            self.send(sent, kind, (&self.journeys_topic, partition), &one_id, value.as_deref())
                .await?;
        }
        Ok(())
    }

    async fn send_identity(&self, ops: Vec<IdentityOp>, sent: &mut Sent) -> anyhow::Result<()> {
        for batch in ops.chunks(changelog::OPS_PER_RECORD) {
            let value = changelog::encode(batch)?;
            self.send(sent, "identity", (&self.identity_topic, 0), &self.group, Some(&value))
                .await?;
        }
        Ok(())
    }

    async fn send(
        &self,
        sent: &mut Sent,
        kind: &str,
        (topic, partition): (&str, i32),
        key: &str,
        value: Option<&[u8]>,
    ) -> anyhow::Result<()> {
        let mut rec: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic).partition(partition).key(key);
        if let Some(v) = value {
            rec = rec.payload(v);
        }
        let f = enqueue(&self.producer, rec)
            .await
            .with_context(|| format!("producing to {topic}"))?;
        let bytes = (key.len() + value.map_or(0, <[u8]>::len)) as u64;
        sent.pending.entry((topic.to_string(), partition)).or_default().push(f);
        sent.records += 1;
        sent.bytes += bytes;
        self.metrics.changelog_records.with_label_values(&[kind]).inc();
        self.metrics.changelog_bytes.with_label_values(&[kind]).inc_by(bytes);
        Ok(())
    }
}

/// Waits for every delivery of one partition; returns the offsets `[from,
/// to)` they span.
async fn acknowledged(futures: Vec<DeliveryFuture>) -> anyhow::Result<(i64, i64)> {
    let (mut from, mut to) = (i64::MAX, i64::MIN);
    for f in futures {
        let delivery = f
            .await
            .context("the producer dropped a changelog record")?
            .map_err(|(e, _)| anyhow::anyhow!("a changelog record was not delivered: {e}"))?;
        from = from.min(delivery.offset);
        to = to.max(delivery.offset + 1);
    }
    Ok(if from <= to { (from, to) } else { (0, 0) })
}

/// The chain a restored state builds on: the snapshot's, or for a snapshot
/// written before the changelog existed, an empty chain that is complete
/// only if the state is empty.
pub fn chain_at_start(header: &Header, partitions: u32, profiles: usize) -> anyhow::Result<Chain> {
    match &header.changelog {
        Some(c) if c.partitions != partitions => anyhow::bail!(
            "state.partitions is {partitions} but the state was written with {} state partitions: the number is \
             fixed for the life of a deployment; set it back to {}",
            c.partitions,
            c.partitions
        ),
        Some(c) => Ok(c.clone()),
        None => Ok(Chain {
            complete: profiles == 0,
            ..Chain::empty(partitions)
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(chain: Option<Chain>) -> Header {
        Header {
            changelog: chain,
            ..Header::default()
        }
    }

    #[test]
    fn the_chain_at_start_is_the_snapshots_and_p_cannot_change() {
        let mut written = Chain::empty(32);
        written.identity.add(0, 10);
        assert_eq!(
            chain_at_start(&header(Some(written.clone())), 32, 5).expect("same P"),
            written
        );
        let e = chain_at_start(&header(Some(written)), 16, 5)
            .expect_err("P changed")
            .to_string();
        assert!(
            e.contains("state.partitions is 16") && e.contains("set it back to 32"),
            "{e}"
        );
    }

    #[test]
    fn a_snapshot_older_than_the_changelog_gives_a_complete_chain_only_when_empty() {
        let empty = chain_at_start(&header(None), 8, 0).expect("chain");
        assert!(empty.complete);
        assert_eq!(empty.journeys.len(), 8);
        assert!(!chain_at_start(&header(None), 8, 3).expect("chain").complete);
    }
}
