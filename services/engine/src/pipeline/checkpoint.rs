//! Checkpoint: the state, the outputs it caused and the input offsets it
//! covers, made durable together, without stopping processing.
//!
//! In: the processor's state, the in-flight queue, the input partitions'
//! bookkeeping. Out, in two steps:
//! 1. the barrier ([`Checkpoint::begin`], in the poll loop): the input
//!    offsets covered now, a barrier in the ack stage behind every output
//!    handed over so far, and the changes since the last checkpoint taken
//!    from the processor ([`super::changelog::Changelog::capture`]). The
//!    writer waits only for this: `onejourney_checkpoint_stall_seconds`.
//! 2. the flush, a background task: waits until the outputs up to the
//!    barrier are acknowledged (and where they end), writes the changes and
//!    the marker committing them to the changelog topics, waits for their
//!    acknowledgement, and only then commits the input offsets of the
//!    barrier. The poll loop hears it end ([`Checkpoint::finish`]).
//!
//! One checkpoint at a time: a barrier due while a flush runs is skipped.
//! The full snapshot file (see [`crate::durable`]) is written by the last
//! checkpoint of a graceful stop, after its flush; a restart restores it and
//! the changelog past it.
//!
//! Invariant: a marker (and the input offsets it commits) never covers an
//! output that is not acknowledged, nor an event still waiting for the
//! watermark. A crash re-processes at most one interval (plus a flush) of
//! input. It keeps where each output partition ended at start and the
//! changelog writer between flushes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use onejourney_core::Processor;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::producer::FutureProducer;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::oneshot;
use tokio::task::{JoinError, JoinHandle};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::ack;
use super::changelog::{Capture, Changed, Changelog, Written};
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
    /// Every output partition, with where it ended at start.
    outputs: Arc<Vec<(String, i32, i64)>>,
    metrics: Arc<Metrics>,
    /// Beaten while a large snapshot is written.
    health: Arc<Health>,
    /// Cancelled when an output or a changelog record was not delivered: the engine stops.
    cancel: CancellationToken,
    /// The changelog writer: here between checkpoints, in the flush during one.
    changelog: Option<Changelog>,
    /// The flush running, if any.
    flushing: Option<JoinHandle<Flushed>>,
    /// Test hook (`state.checkpoint_hold_file`).
    hold: Option<PathBuf>,
    /// Bytes of the snapshot file, plus the changelog written since it: what a restore reads.
    durable_bytes: u64,
    /// Bytes the running flush holds (the changes it took).
    held: usize,
    /// While the writer still takes the barrier's records (capture on
    /// first write): where to hand them, the barrier's stall, the longest
    /// slice so far.
    capturing: Option<Capturing>,
}

/// A capture begun at a barrier whose records the writer still takes.
struct Capturing {
    records: oneshot::Sender<Changed>,
    barrier_s: f64,
    longest_slice_s: f64,
}

/// The bytes a record pending at a barrier holds once taken (its One ID,
/// a copy of its timers, the `Arc` of its journey), for the memory estimate.
const PENDING_RECORD_BYTES: usize = 96;

/// Pending records taken per slice between messages: about a millisecond
/// (a record costs about a microsecond: a lookup in the journeys, one in
/// the timers, a reference count).
pub const CAPTURE_SLICE: usize = 1_024;

/// A checkpoint's background work, from the barrier on.
struct Flush {
    changelog: Changelog,
    capture: Capture,
    /// The barrier's records, once the writer took them all.
    records: oneshot::Receiver<Changed>,
    inputs: HashMap<Tp, i64>,
    /// Answered by the ack stage once the outputs up to the barrier are acknowledged.
    acked: oneshot::Receiver<ack::Ends>,
    outputs: Arc<Vec<(String, i32, i64)>>,
    consumer: Arc<IngestConsumer>,
    hold: Option<PathBuf>,
    started: Instant,
}

/// What a flush hands back to the poll loop.
pub struct Flushed {
    changelog: Changelog,
    result: anyhow::Result<Done>,
}

struct Done {
    inputs: HashMap<Tp, i64>,
    written: Written,
    took: Duration,
}

impl Checkpoint {
    /// Reads where every output partition ends now: the lower bound of what
    /// this process publishes (tansu can report an end a record or two
    /// short, which only makes a restart read back a little more).
    pub async fn new(
        settings: &Settings,
        producer: &FutureProducer,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
        cancel: CancellationToken,
        chain: durable::changelog::Chain,
    ) -> anyhow::Result<Self> {
        let topics: Vec<String> = settings.topics.outputs().iter().map(|t| t.to_string()).collect();
        let changelog = Changelog::new(settings, producer.clone(), chain, metrics.clone());
        let hold = &settings.state.checkpoint_hold_file;
        let path = durable::path(settings);
        let durable_bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
        Ok(Checkpoint {
            path,
            outputs: Arc::new(kafka::partition_ends(producer, topics).await?),
            metrics,
            health,
            cancel,
            changelog: Some(changelog),
            flushing: None,
            hold: (!hold.as_os_str().is_empty()).then(|| hold.clone()),
            durable_bytes,
            held: 0,
            capturing: None,
        })
    }

    /// Whether a flush runs.
    pub fn busy(&self) -> bool {
        self.flushing.is_some()
    }

    /// Bytes a running flush holds (for the memory estimate).
    pub fn held_bytes(&self) -> usize {
        self.held
    }

    /// The checkpoint's barrier: takes what it covers and starts its flush.
    /// A failure after the changes were taken cancels the engine.
    pub async fn begin(
        &mut self,
        ingest: &mut Ingest,
        in_flight: &mut InFlight,
        partitions: &Partitions,
        consumer: &Arc<IngestConsumer>,
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        anyhow::ensure!(self.flushing.is_none(), "a checkpoint is already being written");
        check_held(ingest, in_flight)?;
        let held_at = started.elapsed();
        let inputs = partitions.covered_now(in_flight.unfinished());
        let covered_at = started.elapsed();
        let acked = match in_flight.barrier().await {
            Ok(a) => a,
            Err(e) => {
                self.cancel.cancel();
                return Err(e);
            }
        };
        let barrier_at = started.elapsed();
        let changelog = self.changelog.take().context("the changelog writer is missing")?;
        let capture_from = started.elapsed();
        let capture = match changelog.capture(ingest.processor_mut()) {
            Ok(c) => c,
            Err(e) => {
                self.cancel.cancel();
                return Err(e.context("taking the changes for the changelog"));
            }
        };
        let stall = started.elapsed().as_secs_f64();
        self.metrics.checkpoint_stall.set(stall);
        let (drain_s, capture_s) = (capture_from.as_secs_f64(), stall - capture_from.as_secs_f64());
        for (phase, s) in crate::metrics::STALL_PHASES.into_iter().zip([drain_s, capture_s, 0.0]) {
            self.metrics.checkpoint_stall_phase.with_label_values(&[phase]).set(s);
        }
        info!(
            stall_seconds = stall,
            drain_seconds = drain_s,
            held_checked_seconds = held_at.as_secs_f64(),
            inputs_covered_seconds = (covered_at - held_at).as_secs_f64(),
            barrier_seconds = (barrier_at - covered_at).as_secs_f64(),
            in_flight = in_flight.held(),
            unfinished = in_flight.unfinished_count(),
            capture_seconds = capture_s,
            records = capture.records(),
            "checkpoint barrier: the writer goes on while the flush writes"
        );
        self.metrics.checkpoint_in_progress.set(1);
        self.held = capture.bytes() + capture.records() * PENDING_RECORD_BYTES;
        let (tx, records) = oneshot::channel();
        self.capturing = Some(Capturing {
            records: tx,
            barrier_s: stall,
            longest_slice_s: 0.0,
        });
        let flush = Flush {
            changelog,
            capture,
            records,
            inputs,
            acked,
            outputs: self.outputs.clone(),
            consumer: consumer.clone(),
            hold: self.hold.clone(),
            started,
        };
        self.flushing = Some(tokio::spawn(flush.run()));
        Ok(())
    }

    /// Whether the writer still takes the last barrier's records.
    pub fn capturing(&self) -> bool {
        self.capturing.is_some()
    }

    /// Between messages: takes a slice of the last barrier's records still
    /// pending; once none is, hands them all to the flush.
    pub fn capture_step(&mut self, processor: &mut Processor) {
        self.take_records(processor, CAPTURE_SLICE, true);
    }

    /// Takes every record of the last barrier still pending and hands them
    /// to the flush: before the writer waits for the flush, and before an
    /// assignment changes what this process owns.
    pub fn capture_rest(&mut self, processor: &mut Processor) {
        self.take_records(processor, usize::MAX, true);
    }

    /// As [`Checkpoint::capture_rest`] at a graceful stop, after the last
    /// events were applied: nothing waits for it, so it is not a stall of
    /// processing (logged, not in the stall metrics).
    fn capture_at_stop(&mut self, processor: &mut Processor) {
        self.take_records(processor, usize::MAX, false);
    }

    /// Takes up to `n` pending records; `stall`: the time counts as a pause
    /// of processing.
    fn take_records(&mut self, processor: &mut Processor, n: usize, stall: bool) {
        let Some(c) = self.capturing.as_mut() else { return };
        let started = Instant::now();
        let left = processor.capture_pending(n);
        let took = started.elapsed().as_secs_f64();
        if stall {
            c.longest_slice_s = c.longest_slice_s.max(took);
        } else if n == usize::MAX {
            info!(seconds = took, "checkpoint records still pending taken at the stop");
        }
        if left > 0 {
            return;
        }
        let Some(c) = self.capturing.take() else { return };
        let Some(captured) = processor.take_captured() else {
            return;
        };
        // The longest time processing waited for this checkpoint: its
        // barrier or one of its slices.
        self.metrics.checkpoint_stall.set(c.barrier_s.max(c.longest_slice_s));
        self.metrics
            .checkpoint_stall_phase
            .with_label_values(&[crate::metrics::STALL_PHASES[2]])
            .set(c.longest_slice_s);
        debug!(
            records = captured.records.len(),
            taken_by_write = captured.by_write,
            longest_slice_seconds = c.longest_slice_s,
            "checkpoint records taken"
        );
        // A flush that ended (failed) meanwhile no longer waits for them.
        let _ = c.records.send(captured.records);
    }

    /// Waits for the running flush (pending for ever when none runs: call
    /// it only while [`Checkpoint::busy`]). Cancel-safe.
    pub async fn flushed(&mut self) -> Result<Flushed, JoinError> {
        match self.flushing.as_mut() {
            Some(h) => h.await,
            None => std::future::pending().await,
        }
    }

    /// The flush ended: on success the input offsets it committed are the
    /// covered ones; a failure cancels the engine (the changes it took
    /// cannot be handed back), and the restart resumes from the last
    /// committed checkpoint. Returns the header the marker carries.
    pub fn finish(
        &mut self,
        joined: Result<Flushed, JoinError>,
        partitions: &mut Partitions,
    ) -> anyhow::Result<Header> {
        self.flushing = None;
        self.metrics.checkpoint_in_progress.set(0);
        self.held = 0;
        let flushed = match joined {
            Ok(f) => f,
            Err(e) => {
                self.cancel.cancel();
                anyhow::bail!("the checkpoint task failed: {e}");
            }
        };
        self.changelog = Some(flushed.changelog);
        let done = match flushed.result {
            Ok(d) => d,
            Err(e) => {
                self.cancel.cancel();
                return Err(e.context("writing the checkpoint"));
            }
        };
        partitions.checkpointed(done.inputs);
        self.durable_bytes += done.written.bytes;
        self.written(&done.written, done.took, false);
        Ok(done.written.header)
    }

    /// Waits for the running flush, if any, and finishes it (see
    /// [`Checkpoint::finish`]).
    pub async fn wait_flush(&mut self, processor: &mut Processor, partitions: &mut Partitions) -> anyhow::Result<()> {
        self.capture_rest(processor);
        if self.busy() {
            let joined = self.flushed().await;
            self.finish(joined, partitions)?;
        }
        Ok(())
    }

    /// The last checkpoint of a graceful stop: after the running flush, one
    /// more covering every input applied, then the full snapshot file.
    pub async fn last(
        &mut self,
        ingest: &mut Ingest,
        in_flight: &mut InFlight,
        partitions: &mut Partitions,
        consumer: &Arc<IngestConsumer>,
    ) -> anyhow::Result<()> {
        self.capture_at_stop(ingest.processor_mut());
        self.wait_flush(ingest.processor_mut(), partitions).await?;
        let started = Instant::now();
        self.begin(ingest, in_flight, partitions, consumer).await?;
        self.capture_at_stop(ingest.processor_mut());
        let joined = self.flushed().await;
        let header = self.finish(joined, partitions)?;
        let beat = |_| self.health.beat();
        let size = super::blocking(|| durable::write(&self.path, &header, &ingest.processor().snapshot(), beat))?;
        self.durable_bytes = size;
        self.metrics.snapshot_bytes.set(i64::try_from(size).unwrap_or(i64::MAX));
        info!(
            bytes = size,
            seconds = started.elapsed().as_secs_f64(),
            last = true,
            inputs = ?header.inputs,
            "state snapshot written"
        );
        Ok(())
    }

    fn written(&self, written: &Written, took: Duration, last: bool) {
        let header = &written.header;
        self.metrics.snapshots.with_label_values(&["written"]).inc();
        self.metrics.snapshot_seconds.set(took.as_secs_f64());
        self.metrics
            .snapshot_bytes
            .set(i64::try_from(self.durable_bytes).unwrap_or(i64::MAX));
        self.metrics
            .snapshot_last_success
            .set(i64::try_from(header.written_at_ms / 1000).unwrap_or(0));
        info!(
            records = written.records,
            bytes = written.bytes,
            globals_bytes = written.globals_bytes,
            seconds = took.as_secs_f64(),
            last,
            inputs = ?header.inputs,
            "checkpoint written to the state changelog"
        );
    }
}

impl Flush {
    async fn run(self) -> Flushed {
        let Flush {
            mut changelog,
            mut capture,
            records,
            inputs,
            acked,
            outputs,
            consumer,
            hold,
            started,
        } = self;
        let result = async {
            // 1. Every output up to the barrier is acknowledged; where they end.
            let ends = acked
                .await
                .map_err(|_| anyhow::anyhow!("an output was not delivered; the state is not saved"))?;
            wait_while_held(hold.as_deref()).await;
            let header = Header {
                written_at_ms: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                inputs: inputs.iter().map(|((t, p), o)| (t.clone(), *p, *o)).collect(),
                outputs: output_ends(&outputs, &ends),
                changelog: None,
            };
            // 2. The changes and the marker committing them, acknowledged.
            let records = records
                .await
                .map_err(|_| anyhow::anyhow!("the writer stopped before it took the checkpoint's records"))?;
            capture.set_records(records);
            let written = changelog
                .write(capture, &header)
                .await
                .context("writing the state changelog")?;
            // 3. Only now the input offsets: the state and outputs they cover are durable.
            commit(&consumer, &inputs).await?;
            consumer.context().set_resume(&inputs);
            Ok(Done {
                inputs,
                written,
                took: started.elapsed(),
            })
        }
        .await;
        Flushed { changelog, result }
    }
}

/// Per output partition, where it ends as of the barrier: this process's
/// acknowledged deliveries then; partitions it had not written to: where
/// they ended at start.
fn output_ends(outputs: &[(String, i32, i64)], ends: &ack::Ends) -> Vec<(String, i32, i64)> {
    outputs
        .iter()
        .map(|(t, p, start)| {
            let end = ends.get(&(t.clone(), *p)).copied().unwrap_or(*start).max(*start);
            (t.clone(), *p, end)
        })
        .collect()
}

/// The test hook: waits while the file exists.
async fn wait_while_held(hold: Option<&std::path::Path>) {
    let Some(path) = hold else { return };
    while path.exists() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every event the core buffers must still hold its message back, or the
/// checkpoint would skip it.
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
    // Nothing read yet (a process that owns nothing, or starts idle).
    if inputs.is_empty() {
        return Ok(());
    }
    let mut tpl = TopicPartitionList::new();
    for ((t, p), o) in inputs {
        tpl.add_partition_offset(t, *p, Offset::Offset(*o))?;
    }
    let consumer = consumer.clone();
    let committed = tokio::task::spawn_blocking(move || {
        // Only partitions still assigned: one the group moved to another
        // process (scale-out) is that process's to commit, and an offset
        // from here would set it back.
        let tpl = match consumer.assignment() {
            Ok(assigned) => {
                let mut mine = TopicPartitionList::new();
                for e in tpl.elements() {
                    if assigned.find_partition(e.topic(), e.partition()).is_some() {
                        mine.add_partition_offset(e.topic(), e.partition(), e.offset())?;
                    }
                }
                mine
            }
            Err(_) => tpl,
        };
        if tpl.count() == 0 {
            return Ok(());
        }
        consumer.commit(&tpl, CommitMode::Sync)
    })
    .await;
    if let Ok(Err(e)) = committed {
        warn!(error = %e, "committing input offsets failed");
    }
    Ok(())
}
