//! Checkpoint: the state, the outputs it caused and the input offsets it
//! covers, made durable together.
//!
//! In: the processor's state, the in-flight queue, the input partitions'
//! bookkeeping. Out: the changes since the last checkpoint on the
//! changelog topics with the marker that commits them (see
//! [`super::changelog`]), then a snapshot file (see [`crate::durable`]) and,
//! only once both are written, the committed input offsets. It keeps where each output
//! partition ended at start and where this process's acknowledged outputs
//! end, which a restart after a crash reads back from.
//!
//! Invariant: a snapshot or a changelog marker (and the input offsets they
//! commit) never covers an output that is not acknowledged, nor an event
//! still waiting for the watermark. A crash re-processes at most one
//! interval of input. Processing waits for the whole checkpoint:
//! `onejourney_checkpoint_stall_seconds` reports how long.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::producer::FutureProducer;
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::ack;
use super::changelog::Changelog;
use super::inflight::InFlight;
use super::ingest::Ingest;
use super::partitions::Partitions;
use crate::config::Settings;
use crate::durable::{self, Header};
use crate::health::Health;
use crate::kafka::edge::Tp;
use crate::kafka::{self, IngestConsumer};
use crate::metrics::Metrics;

pub struct Checkpoint {
    path: PathBuf,
    /// Journey detail older than this goes before the state is saved (zero: kept).
    evict_after: Duration,
    /// Every output partition, with where it ended at start.
    outputs: Vec<(String, i32, i64)>,
    /// Where this process's acknowledged outputs end.
    delivered: ack::Delivered,
    metrics: Arc<Metrics>,
    /// Beaten while a large snapshot is written.
    health: Arc<Health>,
    /// Cancelled when an output was not delivered: the engine stops.
    cancel: CancellationToken,
    changelog: Changelog,
}

impl Checkpoint {
    /// Reads where every output partition ends now: the lower bound of what
    /// this process publishes (tansu can report an end a record or two
    /// short, which only makes a restart read back a little more).
    pub async fn new(
        settings: &Settings,
        producer: &FutureProducer,
        delivered: ack::Delivered,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
        cancel: CancellationToken,
        chain: durable::changelog::Chain,
    ) -> anyhow::Result<Self> {
        let topics: Vec<String> = settings.topics.outputs().iter().map(|t| t.to_string()).collect();
        let changelog = Changelog::new(settings, producer.clone(), chain, metrics.clone());
        Ok(Checkpoint {
            path: durable::path(settings),
            evict_after: settings.state.evict_journeys_after,
            outputs: kafka::partition_ends(producer, topics).await?,
            delivered,
            metrics,
            health,
            cancel,
            changelog,
        })
    }

    /// Writes the changes since the last checkpoint to the changelog, a
    /// snapshot of the state, and commits the input offsets they cover, once
    /// every output so far is acknowledged. `last`: the final
    /// checkpoint of a graceful stop (every input is applied). A failed
    /// delivery cancels the engine; other errors can be retried.
    pub async fn run(
        &mut self,
        ingest: &mut Ingest,
        in_flight: &mut InFlight,
        partitions: &mut Partitions,
        consumer: &Arc<IngestConsumer>,
        last: bool,
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        // Journey detail past its retention goes before the state is saved.
        if !self.evict_after.is_zero() {
            let evicted = ingest.processor_mut().evict_journeys(self.evict_after);
            self.metrics.journeys_evicted.inc_by(evicted as u64);
        }
        // 1. Every output handed to the producer is acknowledged, and every
        //    buffered event still holds its message back.
        if let Err(e) = in_flight.settle_all(&self.delivered).await {
            self.cancel.cancel();
            return Err(e);
        }
        check_held(ingest, in_flight)?;
        // 2. The input offsets the state covers.
        let inputs = partitions.covered_now(in_flight.unfinished());
        // 3. Where our outputs end now: what a restart after a crash reads back.
        let header = Header {
            written_at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            inputs: inputs.iter().map(|((t, p), o)| (t.clone(), *p, *o)).collect(),
            outputs: self.output_ends(),
            changelog: None,
        };
        // 4. The changes since the last checkpoint and the marker committing
        //    them, acknowledged by the broker: what an empty disk restores.
        let written = match self.changelog.write(ingest.processor_mut(), &header).await {
            Ok(w) => w,
            Err(e) => {
                self.cancel.cancel();
                return Err(e.context("writing the state changelog"));
            }
        };
        let header = written.header;
        // 5. The snapshot file: the fast local restore.
        let beat = |_| self.health.beat();
        let size = super::blocking(|| durable::write(&self.path, &header, &ingest.processor().snapshot(), beat))?;
        // 6. Only now the input offsets: the state and outputs they cover are durable.
        commit(consumer, &inputs).await?;
        consumer.context().set_resume(&inputs);
        partitions.checkpointed(inputs);
        let took = started.elapsed();
        self.metrics.checkpoint_stall.set(took.as_secs_f64());
        self.written(&header, size, took, last);
        info!(
            records = written.records,
            bytes = written.bytes,
            globals_bytes = written.globals_bytes,
            "state changelog written"
        );
        Ok(())
    }

    /// Per output partition, where it ends now: from our own acknowledged
    /// deliveries; partitions we have not written to: where they ended at
    /// start.
    fn output_ends(&self) -> Vec<(String, i32, i64)> {
        let delivered = self.delivered.lock().map(|m| m.clone()).unwrap_or_default();
        self.outputs
            .iter()
            .map(|(t, p, start)| {
                let end = delivered.get(&(t.clone(), *p)).copied().unwrap_or(*start).max(*start);
                (t.clone(), *p, end)
            })
            .collect()
    }

    fn written(&self, header: &Header, size: u64, took: Duration, last: bool) {
        self.metrics.snapshots.with_label_values(&["written"]).inc();
        self.metrics.snapshot_seconds.set(took.as_secs_f64());
        self.metrics.snapshot_bytes.set(i64::try_from(size).unwrap_or(i64::MAX));
        self.metrics
            .snapshot_last_success
            .set(i64::try_from(header.written_at_ms / 1000).unwrap_or(0));
        info!(
            bytes = size,
            seconds = took.as_secs_f64(),
            last,
            inputs = ?header.inputs,
            "state snapshot written"
        );
    }
}

/// Every event the core buffers must still hold its message back, or the
/// snapshot would skip it.
fn check_held(ingest: &Ingest, in_flight: &mut InFlight) -> anyhow::Result<()> {
    for seq in ingest.processor().pending_seqs() {
        if !in_flight.holds(seq) {
            error!(
                seq,
                "a buffered event's message is not held back: the snapshot would skip it"
            );
            anyhow::bail!("inconsistent in-flight bookkeeping at checkpoint (seq {seq})");
        }
    }
    Ok(())
}

/// Commits the input offsets, off the async workers. A failed commit is
/// harmless: on restart the snapshot's offsets win over the group's.
async fn commit(consumer: &Arc<IngestConsumer>, inputs: &HashMap<Tp, i64>) -> anyhow::Result<()> {
    let mut tpl = TopicPartitionList::new();
    for ((t, p), o) in inputs {
        tpl.add_partition_offset(t, *p, Offset::Offset(*o))?;
    }
    let consumer = consumer.clone();
    let committed = tokio::task::spawn_blocking(move || consumer.commit(&tpl, CommitMode::Sync)).await;
    if let Ok(Err(e)) = committed {
        warn!(error = %e, "committing input offsets failed");
    }
    Ok(())
}
