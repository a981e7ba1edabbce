//! The pipeline: ingest -> stitch -> journey -> decide -> emit -> ack.
//!
//! One task polls the consumer and runs the pure core on each message (the
//! single writer of the state); the records it yields are handed to the
//! producer at once, and the ack task stores each input offset once the
//! broker acknowledged everything that message caused.
//!
//! Shutdown (cancel): stop fetching, let the ack task settle every pending
//! delivery, commit the stored offsets, flush the producer.

pub mod ack;
pub mod emit;
pub mod ingest;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use onejourney_core::{Decoder, Processor, State};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{DeliveryFuture, FutureProducer, Producer};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{Settings, Topics};
use crate::health::Health;
use crate::kafka::{self, IngestConsumer, IngestContext};
use crate::logging::WarnLimiter;
use crate::metrics::Metrics;
use ingest::{Ingest, Origin, Step};

/// Runs the pipeline until `cancel`, then drains, commits and flushes.
pub async fn run(
    settings: Arc<Settings>,
    state: Arc<State>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let producer = kafka::producer(&settings)?;
    if !kafka::ensure_output_topics(&settings, &producer, &cancel).await? {
        return Ok(());
    }
    if !kafka::wait_for_input_topics(&settings, &producer, &cancel).await? {
        return Ok(());
    }
    let (assigned_tx, mut assigned) = mpsc::unbounded_channel();
    let consumer = Arc::new(kafka::consumer(
        &settings,
        IngestContext {
            health: health.clone(),
            metrics: metrics.clone(),
            warnings: std::sync::Mutex::new(WarnLimiter::new(settings.log.repeated_warnings_per_minute)),
            assigned: assigned_tx,
        },
    )?);
    let inputs: Vec<&str> = settings.topics.consumed();
    consumer.subscribe(&inputs).context("subscribing to the input topics")?;
    info!(topics = ?inputs, group = %settings.kafka.group_id, "consuming");

    let decoder = Decoder::new(settings.namespaces()?, settings.ingest.max_message_bytes)?;
    let processor = Processor::new(Arc::new(settings.core()), state);
    let mut ingest = Ingest::new(
        decoder,
        processor,
        settings.topics.clone(),
        metrics.clone(),
        WarnLimiter::new(settings.log.repeated_warnings_per_minute),
    );

    let (tx, rx) = mpsc::channel(settings.ingest.max_in_flight);
    let acker = tokio::spawn(ack::run(rx, consumer.clone(), metrics.clone(), cancel.clone()));
    let mut poll = Poll {
        consumer: &consumer,
        producer: &producer,
        tx: &tx,
        health: &health,
        metrics: &metrics,
        cancel: &cancel,
        clock: Instant::now(),
        topics: &settings.topics,
        assigned: &mut assigned,
    };
    let result = poll.run(&mut ingest).await;
    health.set_stopping();
    drop(tx);
    let acked = acker.await.context("the ack task panicked")?;
    shutdown(consumer, producer).await;
    result.and(acked)
}

/// A message taken from the consumer whose processing is not finished: its
/// event may still wait for the watermark, and its outputs for the broker.
struct InFlight {
    seq: u64,
    topic: String,
    partition: i32,
    offset: i64,
    received: Instant,
    deliveries: Vec<DeliveryFuture>,
    done: bool,
}

/// Messages in arrival order. Only the done prefix is handed to the ack
/// stage, so offsets are stored in order even though events are applied in
/// event-time order.
#[derive(Default)]
struct InFlightQueue {
    entries: VecDeque<InFlight>,
    next_seq: u64,
}

impl InFlightQueue {
    fn push(&mut self, topic: &str, partition: i32, offset: i64, received: Instant) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.entries.push_back(InFlight {
            seq,
            topic: topic.to_string(),
            partition,
            offset,
            received,
            deliveries: Vec::new(),
            done: false,
        });
        seq
    }

    fn get(&mut self, seq: u64) -> Option<&mut InFlight> {
        let front = self.entries.front()?.seq;
        let i = usize::try_from(seq.checked_sub(front)?).ok()?;
        self.entries.get_mut(i)
    }

    fn newest(&self) -> Option<u64> {
        self.entries.back().map(|e| e.seq)
    }
}

/// Sends the steps' records and marks finished messages.
async fn apply_steps(producer: &FutureProducer, queue: &mut InFlightQueue, steps: Vec<Step>) -> anyhow::Result<()> {
    for step in steps {
        let (seq, records, done) = match step {
            Step::Done { seq, records } => (Some(seq), records, true),
            Step::Attach { seq, records } => (seq, records, false),
        };
        let mut deliveries = Vec::with_capacity(records.len());
        for r in &records {
            deliveries.push(
                emit::send(producer, r)
                    .await
                    .context("handing a record to the producer")?,
            );
        }
        // Timer outputs with no message left to hold are sent untracked.
        if let Some(entry) = seq.and_then(|s| queue.get(s)) {
            entry.deliveries.extend(deliveries);
            entry.done |= done;
        }
    }
    Ok(())
}

/// Hands the finished prefix to the ack stage; false when it has stopped.
async fn flush_done(queue: &mut InFlightQueue, tx: &mpsc::Sender<ack::Pending>, metrics: &Metrics) -> bool {
    while queue.entries.front().is_some_and(|e| e.done) {
        let Some(e) = queue.entries.pop_front() else {
            break;
        };
        metrics.in_flight.inc();
        let pending = ack::Pending {
            topic: e.topic,
            partition: e.partition,
            offset: e.offset,
            deliveries: e.deliveries,
            received: e.received,
        };
        if tx.send(pending).await.is_err() {
            return false;
        }
    }
    true
}

/// The poll loop's surroundings.
struct Poll<'a> {
    consumer: &'a IngestConsumer,
    producer: &'a FutureProducer,
    tx: &'a mpsc::Sender<ack::Pending>,
    health: &'a Health,
    metrics: &'a Metrics,
    cancel: &'a CancellationToken,
    /// Processing time for the core's idle-partition rule starts here.
    clock: Instant,
    topics: &'a Topics,
    assigned: &'a mut mpsc::UnboundedReceiver<Vec<(String, i32)>>,
}

impl Poll<'_> {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.clock.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Partitions just assigned hold the watermark back until they deliver
    /// or stay silent for `idle_after`.
    fn register_assigned(&mut self, ingest: &mut Ingest) {
        let now = self.now_ms();
        while let Ok(parts) = self.assigned.try_recv() {
            for (topic, partition) in parts {
                if let Some(channel) = self.topics.channel_of(&topic) {
                    ingest.register_partition(channel, partition, now);
                }
            }
        }
    }

    async fn run(&mut self, ingest: &mut Ingest) -> anyhow::Result<()> {
        let (producer, tx, metrics) = (self.producer, self.tx, self.metrics);
        let mut queue = InFlightQueue::default();
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            let msg = tokio::select! {
                _ = self.cancel.cancelled() => {
                    // Drain: apply every buffered event (as if every partition
                    // were idle) so a graceful stop leaves nothing half-done.
                    let steps = ingest.tick(u64::MAX, queue.newest());
                    apply_steps(producer, &mut queue, steps).await?;
                    flush_done(&mut queue, tx, metrics).await;
                    return Ok(());
                }
                _ = tick.tick() => {
                    self.health.beat();
                    metrics.producer_queue.set(i64::from(producer.in_flight_count()));
                    self.register_assigned(ingest);
                    let steps = ingest.tick(self.now_ms(), queue.newest());
                    apply_steps(producer, &mut queue, steps).await?;
                    if !flush_done(&mut queue, tx, metrics).await {
                        return Ok(());
                    }
                    continue;
                }
                m = self.consumer.recv() => m,
            };
            self.health.beat();
            let msg = match msg {
                Ok(m) => m.detach(),
                Err(e) => {
                    metrics.consumer_errors.inc();
                    warn!(error = %e, "consume failed");
                    continue;
                }
            };
            self.register_assigned(ingest);
            let seq = queue.push(msg.topic(), msg.partition(), msg.offset(), Instant::now());
            let origin = Origin {
                topic: msg.topic(),
                partition: msg.partition(),
                offset: msg.offset(),
                key: msg.key(),
                payload: msg.payload(),
            };
            let steps = ingest.handle(&origin, seq, self.now_ms());
            apply_steps(producer, &mut queue, steps).await?;
            if !flush_done(&mut queue, tx, metrics).await {
                // The ack task stopped: it failed and cancelled; its error is reported.
                return Ok(());
            }
        }
    }
}

/// Commits stored offsets and flushes the producer, off the async workers.
async fn shutdown(consumer: Arc<IngestConsumer>, producer: FutureProducer) {
    let done = tokio::task::spawn_blocking(move || {
        if let Err(e) = producer.flush(Duration::from_secs(30)) {
            warn!(error = %e, "producer flush incomplete");
        }
        match consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => info!("offsets committed"),
            Err(e) => info!(error = %e, "no offsets committed at shutdown"),
        }
        consumer.unsubscribe();
        drop(consumer);
    })
    .await;
    if done.is_err() {
        warn!("shutdown task panicked");
    }
}
