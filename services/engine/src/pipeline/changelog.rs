//! The checkpoint's changelog step: the state changed since the last
//! checkpoint, produced to the broker and acknowledged.
//!
//! In: the processor (the journeys its state marks dirty, the identity ops
//! it applied since the last checkpoint, its globals) and the checkpoint's
//! [`Header`]. Out: journey records (tombstones for journeys that went) on
//! their state partitions, identity-op batches, the dedupe keys added since
//! the last checkpoint (per bucket; tombstones for the records of buckets
//! gone out of the window), the globals in chunks and,
//! once all of them are acknowledged, the marker that commits them (see
//! [`crate::durable::changelog`] for the format). Keeps the [`Chain`] of
//! the last committed checkpoint, which the next marker extends.
//!
//! Two steps: [`Changelog::capture`] takes the changes from the processor at
//! the checkpoint's barrier (the writer waits only for this; the changed
//! journey records become pending in the processor, which takes each before
//! its first write after the barrier and the rest in slices between
//! messages, as `Arc` clones, not encoded); [`Changelog::write`] encodes and
//! produces them in the background while processing goes on.
//!
//! Invariant: a marker is produced only after every record it commits is
//! acknowledged; the caller commits the input offsets only after the marker
//! is. A failure cancels the engine (the changes taken from the processor
//! cannot be handed back): the restart resumes from the last committed
//! checkpoint.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context as _;
use onejourney_core::identity::{IdentityOp, OneId};
use onejourney_core::processor::{DedupeDelta, OpLog, Record, Timer};
use onejourney_core::Processor;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};

use super::emit::enqueue;
use crate::config::Settings;
use crate::durable::changelog::{self, serde_bytes_vec::BytesRef, Chain, Marker};
use crate::durable::journey_record;
use crate::durable::partition::{PartitionMarker, MARKER_KEY};
use crate::durable::Header;
use crate::metrics::Metrics;

pub struct Changelog {
    producer: FutureProducer,
    group: String,
    journeys_topic: String,
    identity_topic: String,
    checkpoints_topic: String,
    partitions: u32,
    /// This process, named in partition markers.
    instance: String,
    routed_topic: String,
    /// What the committed checkpoints so far wrote.
    chain: Chain,
    /// The keys of the dedupe delta records this process wrote, per bucket:
    /// tombstoned once the bucket leaves the window.
    dedupe_keys: BTreeMap<i64, Vec<String>>,
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

/// Per record changed: its One ID, its journey (none: it went), its timers
/// and (scale-out) the dedupe keys of the events in it with the applied-to
/// time they stop at.
pub(super) type Changed = Vec<Record>;

/// A journey record encoded: its state partition, its One ID, its value
/// (none: a tombstone).
type Encoded = (i32, OneId, Option<Vec<u8>>);

/// What one checkpoint covers, taken from the processor at its barrier.
pub struct Capture {
    /// Per record changed (its journey or the timers homed there): its One
    /// ID, its journey as at the barrier (none: it went; shared with the
    /// state, which copies it if the writer changes it before the flush
    /// encodes it) and its timers. Empty at the barrier: the writer takes
    /// them after it (capture on first write, see
    /// `onejourney_core::processor::Processor::begin_capture`) and hands
    /// them to the flush ([`Capture::set_records`]); [`Changelog::write`]
    /// refuses a capture whose records were not set.
    journeys: Option<Changed>,
    /// How many records were pending at the barrier.
    pending: usize,
    ops: OpLog,
    /// The globals, encoded.
    globals: Vec<u8>,
    /// The dedupe keys inserted since the last checkpoint, per bucket.
    dedupe: DedupeDelta,
    /// The oldest dedupe bucket kept.
    oldest_bucket: Option<i64>,
    /// Scale-out: the state partitions owned at the barrier, each of which
    /// gets a partition marker after its records.
    owned: Option<Vec<u32>>,
}

impl Capture {
    /// Changed journey records (journeys, timers, tombstones) pending at
    /// the barrier.
    pub fn records(&self) -> usize {
        self.pending
    }

    /// The records the writer took after the barrier.
    pub fn set_records(&mut self, records: Changed) {
        self.journeys = Some(records);
    }

    /// Bytes held, for the memory estimate while a flush runs.
    pub fn bytes(&self) -> usize {
        // The journeys themselves are shared with the state (until the
        // writer changes one, which then exists twice for a while).
        let journeys: usize = self
            .journeys
            .iter()
            .flatten()
            .map(|(id, _, t, _)| id.len() + t.len() * std::mem::size_of::<Timer>() + 64)
            .sum();
        let dedupe: usize = self.dedupe.iter().map(|(_, k)| k.len() * 8 + 32).sum();
        journeys + self.globals.len() + dedupe + self.ops.len() * std::mem::size_of::<IdentityOp>()
    }
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
            instance: settings.kafka.group_instance_id.clone(),
            routed_topic: settings.topics.routed.clone(),
            chain,
            dedupe_keys: BTreeMap::new(),
            metrics,
        }
    }

    /// Takes what the next checkpoint writes from the processor, at the
    /// barrier: the changed records become pending in the processor (each
    /// taken on its first write after the barrier, the rest by the poll
    /// loop in slices: [`Capture::set_records`]); the identity ops and
    /// dedupe keys taken; the globals encoded (small: no journey, no
    /// timer). [`Changelog::write`] encodes the journeys off the writer.
    /// The processor forgets them: a failure after this must stop the
    /// engine.
    pub fn capture(&self, processor: &mut Processor) -> anyhow::Result<Capture> {
        barrier(processor)
    }

    /// [`Changelog::capture`] with every record taken at once: for a
    /// writer that stops meanwhile (a tool, the bench's own checkpoint).
    pub fn capture_now(&self, processor: &mut Processor) -> anyhow::Result<Capture> {
        take_all_changes(processor)
    }

    /// Produces a capture and the marker that commits it with `header`;
    /// returns once the marker is acknowledged. Runs off the writer.
    pub async fn write(&mut self, mut capture: Capture, header: &Header) -> anyhow::Result<Written> {
        let mut chain = self.chain.clone();
        let mut sent = Sent::default();
        let journeys = capture
            .journeys
            .take()
            .context("the checkpoint's journey records were not taken from the processor")?;
        self.send_journeys(journeys, &mut sent).await?;
        if capture.owned.is_none() {
            // Scale-out: the identity evidence topic is the graph's log.
            self.send_identity(&capture.ops, &mut sent).await?;
        }
        let dedupe_keys = self.send_dedupe(&capture, header.written_at_ms, &mut sent).await?;
        let (records, bytes) = (sent.records, sent.bytes);
        for ((topic, partition), futures) in std::mem::take(&mut sent.pending) {
            let (from, to) = acknowledged(futures).await?;
            if topic == self.identity_topic {
                chain.identity.add(from, to);
            } else if topic == self.checkpoints_topic {
                chain.dedupe.add(from, to);
            } else if let Some(r) = usize::try_from(partition).ok().and_then(|p| chain.journeys.get_mut(p)) {
                r.add(from, to);
            }
        }
        if let Some(owned) = &capture.owned {
            self.send_markers(owned, header).await?;
        }
        for (bucket, key) in dedupe_keys {
            self.dedupe_keys.entry(bucket).or_default().push(key);
        }
        let globals = &capture.globals;
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

    /// The changed journey records, encoded off the async workers (a
    /// checkpoint of a whole state encodes a million journeys).
    async fn send_journeys(&self, changed: Changed, sent: &mut Sent) -> anyhow::Result<()> {
        let partitions = self.partitions;
        if tracing::enabled!(tracing::Level::DEBUG) {
            for (one_id, journey, _, _) in &changed {
                let events = journey.as_ref().map_or(0, |j| j.total_events());
                tracing::debug!(partition = changelog::partition_of(one_id, partitions), %one_id, events, "changelog record");
            }
        }
        let records = tokio::task::spawn_blocking(move || encode_records(changed, partitions))
            .await
            .context("encoding the journey records: the task panicked")??;
        for (partition, one_id, value) in &records {
            let kind = if value.is_some() { "journey" } else { "tombstone" };
            self.send(sent, kind, (&self.journeys_topic, *partition), one_id, value.as_deref())
                .await?;
        }
        Ok(())
    }

    /// Scale-out: a partition marker on every owned journeys changelog
    /// partition, after its records are acknowledged (see
    /// [`crate::durable::partition`]).
    async fn send_markers(&self, owned: &[u32], header: &Header) -> anyhow::Result<()> {
        let mut sent = Sent::default();
        for q in owned {
            let q = i32::try_from(*q).context("a state partition number")?;
            let routed_offset = header
                .inputs
                .iter()
                .find(|(t, p, _)| *t == self.routed_topic && *p == q)
                .map(|(_, _, o)| *o);
            let marker = PartitionMarker {
                outputs: header.outputs.clone(),
                written_at_ms: header.written_at_ms,
                routed_offset,
                instance: self.instance.clone(),
            }
            .encode()?;
            self.send(
                &mut sent,
                "marker",
                (&self.journeys_topic, q),
                MARKER_KEY,
                Some(&marker),
            )
            .await?;
        }
        for (_, futures) in sent.pending {
            acknowledged(futures).await?;
        }
        Ok(())
    }

    /// The dedupe delta, in records of at most `KEYS_PER_RECORD` keys, and
    /// tombstones for the records of buckets gone out of the window. Returns
    /// the keys of the records written, with their bucket.
    async fn send_dedupe(&mut self, capture: &Capture, at: u64, sent: &mut Sent) -> anyhow::Result<Vec<(i64, String)>> {
        let gone: Vec<i64> = match capture.oldest_bucket {
            Some(oldest) => self.dedupe_keys.range(..oldest).map(|(b, _)| *b).collect(),
            None => self.dedupe_keys.keys().copied().collect(),
        };
        for bucket in gone {
            for key in self.dedupe_keys.remove(&bucket).unwrap_or_default() {
                self.send(sent, "dedupe", (&self.checkpoints_topic, 0), &key, None)
                    .await?;
            }
        }
        let mut written = Vec::new();
        for (bucket, keys) in &capture.dedupe {
            for chunk in keys.chunks(changelog::KEYS_PER_RECORD) {
                let key = changelog::dedupe_key(&self.group, *bucket, at, written.len());
                let value = changelog::encode(&[(*bucket, chunk)])?;
                self.send(sent, "dedupe", (&self.checkpoints_topic, 0), &key, Some(&value))
                    .await?;
                written.push((*bucket, key));
            }
        }
        Ok(written)
    }

    async fn send_identity(&self, ops: &OpLog, sent: &mut Sent) -> anyhow::Result<()> {
        for value in changelog::identity_records(ops.iter()) {
            let value = value?;
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

/// See [`Changelog::capture_now`].
fn take_all_changes(processor: &mut Processor) -> anyhow::Result<Capture> {
    let mut capture = barrier(processor)?;
    processor.capture_pending(usize::MAX);
    let captured = processor
        .take_captured()
        .context("the records of the capture just begun are still pending")?;
    capture.set_records(captured.records);
    Ok(capture)
}

/// See [`Changelog::capture`], which needs no writer: the bench times the
/// writer's part of a checkpoint with it on the core alone.
pub fn barrier(processor: &mut Processor) -> anyhow::Result<Capture> {
    let pending = processor.begin_capture();
    let owned = processor.ownership().map(|o| {
        let mut owned: Vec<u32> = o.owned.iter().copied().collect();
        owned.sort_unstable();
        owned
    });
    let globals = rmp_serde::to_vec(&processor.globals()).context("encoding the globals")?;
    let (dedupe, oldest_bucket) = processor.take_dedupe_delta();
    Ok(Capture {
        journeys: None,
        pending,
        ops: processor.take_identity_ops(),
        globals,
        dedupe,
        oldest_bucket,
        owned,
    })
}

/// The journey records of a capture, encoded (off the writer): per record,
/// its state partition, its One ID and its value (none: a tombstone).
pub(super) fn encode_records(changed: Changed, partitions: u32) -> anyhow::Result<Vec<Encoded>> {
    changed
        .into_iter()
        .map(|(one_id, journey, timers, (applied, applied_to))| {
            let value = journey_record::encode_journey(journey.as_deref(), &timers, &applied, applied_to)?;
            Ok((changelog::partition_of(&one_id, partitions), one_id, value))
        })
        .collect()
}

/// Waits for every delivery of one partition; returns the offsets `[from,
/// to)` they span.
pub(super) async fn acknowledged(futures: Vec<DeliveryFuture>) -> anyhow::Result<(i64, i64)> {
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
    use onejourney_core::event::ChannelEvent;
    use onejourney_core::journey::Journey;
    use onejourney_core::{Decoder, State};
    use onejourney_simulator::{generate, SimConfig};

    use super::*;
    use crate::config::Settings;

    /// The decoded events of a simulation of `customers`, and a new
    /// processor with the default settings and its state.
    fn simulated(customers: usize, seed: u64) -> (Vec<ChannelEvent>, Arc<State>, Processor) {
        let s = Settings::defaults().unwrap();
        let ns = s.namespaces().unwrap();
        let d = Decoder::new(ns.clone(), 1 << 20).unwrap();
        let sim = generate(&SimConfig {
            customers,
            seed,
            ..SimConfig::default()
        });
        let events = sim
            .events
            .iter()
            .map(|e| d.decode(e.stream.channel(), &e.bytes()).unwrap())
            .collect();
        let state = Arc::new(State::new(ns));
        let p = Processor::new(Arc::new(s.core()), state.clone());
        (events, state, p)
    }

    /// The barrier takes the changed journeys without copying them; the
    /// writer goes on changing them while the flush encodes: the flush
    /// writes each as it was at the barrier, the state keeps the new one,
    /// marked changed for the next checkpoint.
    #[test]
    fn a_capture_encodes_the_journeys_as_at_the_barrier_while_the_writer_changes_them() {
        let (events, state, mut p) = simulated(40, 5);
        let (first, rest) = events.split_at(events.len() / 2);
        let mut offset = 0;
        let mut apply = |p: &mut Processor, events: &[ChannelEvent]| {
            for e in events {
                for r in p.offer(e.clone(), 0, offset, 0) {
                    r.result.unwrap();
                }
                offset += 1;
            }
        };
        apply(&mut p, first);
        let at_barrier: BTreeMap<OneId, Journey> = state
            .all_journeys()
            .into_iter()
            .map(|(id, j)| (id, (*j).clone()))
            .collect();

        let mut capture = barrier(&mut p).unwrap();
        // Every journey is new, and merged-away One IDs went (tombstones or
        // records of timers homed there).
        let taken = capture.records();
        assert!(taken >= at_barrier.len(), "every journey is pending: {taken}");
        assert_eq!(state.dirty_count(), 0, "taken: the next checkpoint starts afresh");
        // The writer goes on, taking a few pending records between events
        // as the poll loop does; a record it changes is taken first.
        for chunk in rest.chunks(3) {
            apply(&mut p, chunk);
            p.capture_pending(2);
        }
        for r in p.tick(u64::MAX) {
            r.result.unwrap();
        }
        p.capture_pending(usize::MAX);
        let captured = p.take_captured().expect("none pending");
        assert!(captured.by_write > 0, "the writer changed pending records");
        capture.set_records(captured.records);
        let changed: Vec<OneId> = at_barrier
            .iter()
            .filter(|(id, j)| state.journey(id).is_some_and(|now| *now != **j))
            .map(|(id, _)| id.clone())
            .collect();
        assert!(!changed.is_empty(), "the writer changed journeys the capture holds");
        let dirty = state.take_dirty();
        assert!(
            changed.iter().all(|id| dirty.contains(id)),
            "changed since: marked for the next checkpoint"
        );

        let records = encode_records(capture.journeys.take().unwrap(), 4).unwrap();
        assert_eq!(records.len(), taken);
        let mut journeys = 0;
        for (partition, one_id, value) in records {
            assert_eq!(partition, changelog::partition_of(&one_id, 4));
            let journey = match value {
                Some(v) => crate::durable::journey_record::decode_journey(&v).unwrap().0,
                None => None,
            };
            assert!(
                journey.as_ref() == at_barrier.get(&one_id),
                "{one_id}: written as at the barrier"
            );
            journeys += usize::from(journey.is_some());
        }
        assert_eq!(journeys, at_barrier.len(), "every journey written");
    }

    /// A capture taken at once (the bench, a tool) holds every changed
    /// record; one begun at a barrier holds none until they are set.
    #[test]
    fn a_capture_taken_now_holds_every_record_and_a_barriers_none_until_set() {
        let (events, state, mut p) = simulated(30, 3);
        for (offset, e) in events.into_iter().enumerate() {
            for r in p.offer(e, 0, offset as u64, 0) {
                r.result.unwrap();
            }
        }
        let changed = state.dirty_count();
        assert!(changed > 10, "{changed} changed records");
        let now = take_all_changes(&mut p).unwrap();
        assert_eq!(
            (now.records(), now.journeys.as_ref().map(Vec::len)),
            (changed, Some(changed))
        );
        assert!(!p.capturing(), "nothing left pending");
        let at_barrier = barrier(&mut p).unwrap();
        assert!(at_barrier.journeys.is_none(), "records not taken yet: write refuses it");
    }

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
