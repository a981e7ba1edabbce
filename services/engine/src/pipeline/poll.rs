//! The poll loop: the single writer of the state.
//!
//! In: messages from the consumer, the Kafka edge's events (assignments,
//! revocations, end offsets), with `scaleout.identity_log` the records of
//! the identity evidence topic, a 250 ms tick, the snapshot interval, the end
//! of a checkpoint's background flush or of an eviction scan, the
//! memory-budget check, and cancel. Out: each message run through ingest
//! and its records through the in-flight queue; checkpoints; evictions;
//! readiness. It keeps the processing clock the core's idle-partition rule
//! is measured on, and whether consuming is paused for the memory budget.
//!
//! Data path of one message: [`Partitions::admit`] -> [`Ingest::handle`]
//! -> [`InFlight::apply`] (emit) -> [`InFlight::flush_done`] (ack). With the
//! identity log, [`Ingest::handle`] publishes the event's evidence and the
//! event waits; [`Ingest::fold`] of its own record read back continues it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::Offset;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use super::checkpoint::Checkpoint;
use super::evict::Eviction;
use super::inflight::InFlight;
use super::ingest::{Ingest, Origin};
use super::partitions::{Admit, Partitions};
use crate::config::Settings;
use crate::health::Health;
use crate::kafka::evidence::EvidenceReader;
use crate::kafka::{edge, EdgeEvent, IngestConsumer};
use crate::metrics::Metrics;

pub struct Poll {
    pub consumer: Arc<IngestConsumer>,
    pub edge: mpsc::Receiver<EdgeEvent>,
    pub ingest: Ingest,
    /// With `scaleout.identity_log`: the identity evidence topic, folded as
    /// it comes.
    pub evidence: Option<EvidenceReader>,
    pub partitions: Partitions,
    pub in_flight: InFlight,
    pub checkpoint: Checkpoint,
    pub eviction: Eviction,
    pub settings: Arc<Settings>,
    pub health: Arc<Health>,
    pub metrics: Arc<Metrics>,
    pub cancel: CancellationToken,
    /// Processing time for the core's idle-partition rule starts here.
    pub clock: Instant,
}

impl Poll {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.clock.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Runs until cancel (then drains and checkpoints) or until the ack
    /// stage stops.
    pub async fn run(&mut self) -> anyhow::Result<()> {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut snapshot = tokio::time::interval(self.settings.state.snapshot_interval);
        // A checkpoint longer than the interval must not be followed by a
        // burst of the missed ones: the next waits a whole interval.
        snapshot.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        snapshot.tick().await;
        // The first scan at once: it freezes what a restore brought back idle.
        self.eviction.start(self.ingest.processor());
        let mut budget = tokio::time::interval(Duration::from_secs(10));
        let mut paused = false;
        loop {
            // Capture on first write: a slice of the last barrier's records
            // between messages (about a millisecond).
            self.checkpoint.capture_step(self.ingest.processor_mut());
            let msg = tokio::select! {
                _ = self.cancel.cancelled() => return self.drain().await,
                _ = tick.tick() => {
                    if !self.tick(paused).await? {
                        return Ok(());
                    }
                    continue;
                }
                _ = snapshot.tick() => {
                    self.eviction.start(self.ingest.processor());
                    self.checkpoint().await?;
                    continue;
                }
                joined = self.eviction.scanned(), if self.eviction.busy() => {
                    self.eviction.finish(joined, self.ingest.processor_mut(), &self.metrics);
                    continue;
                }
                joined = self.checkpoint.flushed(), if self.checkpoint.busy() => {
                    let finished = self.checkpoint.finish(joined, &mut self.partitions);
                    if let Err(e) = finished {
                        self.metrics.snapshots.with_label_values(&["failed"]).inc();
                        return Err(e);
                    }
                    continue;
                }
                _ = budget.tick() => {
                    paused = self.over_budget();
                    continue;
                }
                // More records to take: come back at once when nothing else is ready.
                () = std::future::ready(()), if self.checkpoint.capturing() => continue,
                r = next_evidence(&mut self.evidence) => {
                    self.health.beat();
                    if !self.evidence_record(r).await? {
                        return Ok(());
                    }
                    continue;
                }
                m = self.consumer.recv(), if !paused => m,
            };
            self.health.beat();
            match msg {
                Ok(m) => {
                    if !self.message(m.detach()).await? {
                        // The ack task stopped: it failed and cancelled; its error is reported.
                        return Ok(());
                    }
                }
                Err(e) => {
                    // A batch librdkafka cannot decode comes back here, again on
                    // every fetch, naming no partition: count it, log it a few
                    // times a minute; `stall` finds the partition.
                    self.metrics.consumer_errors.inc();
                    let reason = crate::stall::fetch_error_reason(&e);
                    self.metrics.input_fetch_errors.with_label_values(&[reason]).inc();
                    if self.consumer.context().allow_warning("consume_failed", reason) {
                        warn!(error = %e, reason, "consume failed");
                    }
                }
            }
        }
    }

    /// One message; false when the ack stage has stopped.
    async fn message(&mut self, msg: OwnedMessage) -> anyhow::Result<bool> {
        self.health.set_connected(true);
        self.drain_edge().await?;
        let (topic, partition, offset) = (msg.topic(), msg.partition(), msg.offset());
        match self.partitions.admit(topic, partition, offset) {
            Admit::Process => {}
            Admit::Skip => return Ok(true),
            Admit::Rewind(back) => {
                let kind = if topic == self.settings.topics.routed {
                    "routed"
                } else {
                    "input"
                };
                self.metrics.fetch_rewinds.with_label_values(&[kind]).inc();
                self.rewind(topic, partition, back);
                return Ok(true);
            }
        }
        self.partitions.taken(topic, partition, offset);
        let seq = self.in_flight.push(topic, partition, offset, Instant::now());
        let origin = Origin {
            topic,
            partition,
            offset,
            key: msg.key(),
            payload: msg.payload(),
            timestamp: msg.timestamp().to_millis(),
        };
        let steps = self.ingest.handle(&origin, seq, self.now_ms());
        self.in_flight.apply(steps).await?;
        Ok(self.in_flight.flush_done().await)
    }

    /// One record of the identity evidence topic (or the error reading it);
    /// false when the ack stage has stopped.
    pub(super) async fn evidence_record(&mut self, r: Result<(i64, Vec<u8>), KafkaError>) -> anyhow::Result<bool> {
        match r {
            Ok((offset, payload)) => {
                let steps = self
                    .ingest
                    .fold(offset, &payload, self.now_ms(), self.in_flight.newest());
                self.in_flight.apply(steps).await?;
                Ok(self.in_flight.flush_done().await)
            }
            Err(e) => {
                self.metrics.consumer_errors.inc();
                if self.consumer.context().allow_warning("evidence_failed", "fetch") {
                    warn!(error = %e, "reading the identity evidence failed");
                }
                Ok(true)
            }
        }
    }

    /// Every 250 ms: liveness, the edge's events, backlogs, and what the
    /// watermark releases as partitions go idle. False when the ack stage
    /// has stopped.
    async fn tick(&mut self, paused: bool) -> anyhow::Result<bool> {
        self.health.beat();
        self.metrics
            .producer_queue
            .set(i64::from(self.in_flight.producer_queue()));
        self.drain_edge().await?;
        let now_ms = self.now_ms();
        let stalled = self.partitions.update_backlogs(&mut self.ingest, paused, now_ms);
        self.metrics.partitions_stalled.set(stalled as i64);
        let steps = self.ingest.tick(now_ms, self.in_flight.newest());
        self.metrics.set_holding(self.ingest.processor().holding(now_ms));
        self.in_flight.apply(steps).await?;
        Ok(self.in_flight.flush_done().await)
    }

    /// Cancel: apply every buffered event (as if every partition were idle),
    /// then checkpoint, so a graceful stop leaves nothing to re-process.
    async fn drain(&mut self) -> anyhow::Result<()> {
        self.drain_evidence().await?;
        let steps = self.ingest.tick(u64::MAX, self.in_flight.newest());
        self.in_flight.apply(steps).await?;
        self.in_flight.flush_done().await;
        self.checkpoint
            .last(
                &mut self.ingest,
                &mut self.in_flight,
                &mut self.partitions,
                &self.consumer,
            )
            .await
    }

    /// Cancel with the identity log: folds the evidence topic until every
    /// event and forget of this process has its own record back (30 s at
    /// most; what still waits is read again after a restart).
    async fn drain_evidence(&mut self) -> anyhow::Result<()> {
        let Some(mut reader) = self.evidence.take() else {
            return Ok(());
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.ingest.waiting_for_evidence() > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(r) = tokio::time::timeout(left, reader.recv()).await else {
                warn!(
                    waiting = self.ingest.waiting_for_evidence(),
                    "stopping with events whose identity evidence was not read back"
                );
                break;
            };
            self.health.beat();
            self.evidence_record(r).await?;
        }
        self.evidence = Some(reader);
        Ok(())
    }

    /// The periodic checkpoint's barrier; its flush runs in the background.
    /// Skipped while the previous flush runs. A failure after the changes
    /// were taken stops the engine; anything before is retried at the next
    /// interval.
    async fn checkpoint(&mut self) -> anyhow::Result<()> {
        if self.checkpoint.busy() {
            self.metrics.snapshots.with_label_values(&["skipped"]).inc();
            return Ok(());
        }
        let begun = self
            .checkpoint
            .begin(&mut self.ingest, &mut self.in_flight, &self.partitions, &self.consumer)
            .await;
        if let Err(e) = begun {
            if self.cancel.is_cancelled() {
                return Err(e);
            }
            self.metrics.snapshots.with_label_values(&["failed"]).inc();
            warn!(error = %format!("{e:#}"), "checkpoint failed; retrying at the next interval");
        }
        Ok(())
    }

    /// Applies the Kafka edge's events in order, then settles what they
    /// moved ([`Self::settle_moves`]) and tells the health which
    /// assignments are settled. An assignment the edge could not send is
    /// read from the consumer instead.
    async fn drain_edge(&mut self) -> anyhow::Result<()> {
        let now = self.now_ms();
        let mut assignments = 0;
        while let Ok(event) = self.edge.try_recv() {
            if !matches!(event, EdgeEvent::Ends(..)) {
                // What this process owns may change: the last barrier's
                // records are taken with the ownership of the barrier.
                self.checkpoint.capture_rest(self.ingest.processor_mut());
            }
            assignments += u64::from(matches!(event, EdgeEvent::Assigned(_)));
            self.partitions.on_event(event, &mut self.ingest, now);
        }
        let missed = self.consumer.context().take_missed();
        if missed {
            self.checkpoint.capture_rest(self.ingest.processor_mut());
            let assigned = self
                .consumer
                .assignment()
                .map(|tpl| self.consumer.context().starts(edge::partitions(&tpl)))
                .unwrap_or_default();
            self.partitions
                .on_event(EdgeEvent::Assigned(assigned), &mut self.ingest, now);
        }
        self.settle_moves().await?;
        if missed {
            self.health.all_assignments_settled();
        } else if assignments > 0 {
            self.health.assignments_settled(assignments);
        }
        Ok(())
    }

    /// Fetches a partition again from `back` (see [`Partitions::admit`]).
    fn rewind(&mut self, topic: &str, partition: i32, back: i64) {
        let consumer = self.consumer.clone();
        let t = topic.to_string();
        let sought =
            super::blocking(move || consumer.seek(&t, partition, Offset::Offset(back), Duration::from_secs(10)));
        if let Err(e) = sought {
            warn!(topic, partition, error = %e, "seeking back failed; retrying on the next message");
            self.partitions.rewind_failed(topic, partition);
        }
    }

    /// Checks the memory budget; true while consuming must stay paused.
    fn over_budget(&mut self) -> bool {
        let limit = self.settings.state.max_memory_bytes;
        if limit == 0 {
            return false;
        }
        // The changes a running flush holds count until it ends.
        let bytes = (self.ingest.processor().state().approx_bytes() + self.checkpoint.held_bytes()) as u64;
        let over = bytes >= limit;
        self.metrics.memory_budget_exceeded.set(i64::from(over));
        self.health.set_within_budget(!over);
        if over {
            error!(
                state_bytes = bytes,
                max_memory_bytes = limit,
                "state is over its memory budget: consuming paused, not ready. Raise state.max_memory_bytes, \
                 shorten state.evict_journeys_after, or add memory"
            );
        }
        over
    }
}

/// The next record of the identity evidence topic; never, without one.
async fn next_evidence(reader: &mut Option<EvidenceReader>) -> Result<(i64, Vec<u8>), KafkaError> {
    match reader {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}
