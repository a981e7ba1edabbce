//! The pipeline: restore -> ingest -> stitch -> journey -> decide -> emit ->
//! ack -> checkpoint.
//!
//! One task polls the consumer and runs the pure core on each message (the
//! single writer of the state); the records it yields are handed to the
//! producer at once, and the ack task waits for the broker's acknowledgement
//! of everything each message caused.
//!
//! Durability (see [`crate::durable`]): at start the last snapshot is
//! restored and every assigned partition resumes at the offset it covers;
//! records published after it are read back so that re-processing does not
//! publish them twice. Every `state.snapshot_interval` the checkpoint waits
//! until every output so far is acknowledged, writes a snapshot with the
//! input offsets it covers and the output end offsets, then commits those
//! input offsets. A crash re-processes at most one interval of input.
//!
//! Shutdown (cancel): stop fetching, apply every buffered event, checkpoint
//! (so a restart re-processes nothing), flush the producer.

pub mod ack;
pub mod emit;
pub mod ingest;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use onejourney_core::{Decoder, Processor, State};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::{Settings, Topics};
use crate::durable::{self, Header, Published, ResumeCheck, Resumed};
use crate::health::Health;
use crate::kafka::{self, IngestConsumer, IngestContext};
use crate::logging::WarnLimiter;
use crate::metrics::Metrics;
use ingest::{Ingest, Origin, Step};

/// Runs the pipeline until `cancel`, then drains, checkpoints and flushes.
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
    let decoder = Decoder::new(settings.namespaces()?, settings.ingest.max_message_bytes)?;
    let mut processor = Processor::new(Arc::new(settings.core()), state);
    let started = Instant::now();
    let (header, published) = restore(&settings, &mut processor).await?;
    metrics.restore_seconds.set(started.elapsed().as_secs_f64());
    health.set_restored(true);

    let (assigned_tx, mut assigned) = mpsc::unbounded_channel();
    let consumer = Arc::new(kafka::consumer(
        &settings,
        IngestContext {
            health: health.clone(),
            metrics: metrics.clone(),
            warnings: std::sync::Mutex::new(WarnLimiter::new(settings.log.repeated_warnings_per_minute)),
            assigned: assigned_tx,
            resume: std::sync::Mutex::new(header.resume_offsets()),
        },
    )?);
    let inputs: Vec<&str> = settings.topics.consumed();
    consumer.subscribe(&inputs).context("subscribing to the input topics")?;
    info!(topics = ?inputs, group = %settings.kafka.group_id, "consuming");

    let mut ingest = Ingest::new(
        decoder,
        processor,
        settings.topics.clone(),
        metrics.clone(),
        WarnLimiter::new(settings.log.repeated_warnings_per_minute),
    );
    let outputs = output_partitions(&settings, &producer).await?;
    let (tx, rx) = mpsc::channel(settings.ingest.max_in_flight);
    let delivered: ack::Delivered = Arc::default();
    let acker = tokio::spawn(ack::run(rx, metrics.clone(), delivered.clone(), cancel.clone()));
    let ends: Ends = Arc::default();
    let watcher = tokio::spawn(watch_end_offsets(
        consumer.clone(),
        settings.topics.clone(),
        ends.clone(),
        cancel.clone(),
    ));
    let mut poll = Poll {
        consumer: &consumer,
        producer: &producer,
        tx: &tx,
        health: &health,
        metrics: &metrics,
        cancel: &cancel,
        clock: Instant::now(),
        topics: &settings.topics,
        settings: &settings,
        assigned: &mut assigned,
        published,
        highest: HashMap::new(),
        covered: header.resume_offsets(),
        outputs,
        delivered,
        ends,
        resuming: HashMap::new(),
        stalls: crate::stall::StallWatch::new(settings.ingest.stall_after),
    };
    let result = poll.run(&mut ingest).await;
    watcher.abort();
    health.set_stopping();
    drop(tx);
    let acked = acker.await.context("the ack task panicked")?;
    shutdown(consumer, producer).await;
    result.and(acked)
}

/// Loads the last snapshot into `processor` and reads back what was published
/// after it. No snapshot: empty state, nothing to skip.
async fn restore(settings: &Arc<Settings>, processor: &mut Processor) -> anyhow::Result<(Header, Published)> {
    let path = durable::path(settings);
    let started = Instant::now();
    let read_path = path.clone();
    let loaded = tokio::task::spawn_blocking(move || durable::read(&read_path))
        .await
        .context("the snapshot reader panicked")??;
    let Some((header, core)) = loaded else {
        info!(path = %path.display(), "no state snapshot: starting with empty state");
        return Ok((Header::default(), Published::default()));
    };
    let profiles = core.profiles();
    processor
        .restore(core, 0)
        .with_context(|| format!("restoring {}", path.display()))?;
    let read_at = started.elapsed();
    let s = settings.clone();
    let since = header.outputs.clone();
    let published = tokio::task::spawn_blocking(move || durable::read_published(&s, &since))
        .await
        .context("reading back published outputs panicked")?
        .context("reading back the outputs published after the snapshot")?;
    info!(
        path = %path.display(),
        profiles,
        read_seconds = read_at.as_secs_f64(),
        total_seconds = started.elapsed().as_secs_f64(),
        published_after_snapshot = published.len(),
        "state restored"
    );
    Ok((header, published))
}

/// Every partition of the output topics with where it ends now: the lower
/// bound of what this process publishes (tansu can report an end a record or
/// two short, which only makes a restart read back a little more).
async fn output_partitions(settings: &Settings, producer: &FutureProducer) -> anyhow::Result<Vec<(String, i32, i64)>> {
    let topics: Vec<String> = settings.topics.outputs().iter().map(|t| t.to_string()).collect();
    kafka::partition_ends(producer, topics).await
}

/// A message taken from the consumer whose processing is not finished: its
/// event may still wait for the watermark, and its outputs for the broker.
struct InFlight {
    seq: u64,
    topic: String,
    partition: i32,
    offset: i64,
    received: Instant,
    deliveries: Vec<ack::Delivery>,
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

/// Sends the steps' records and marks finished messages. A record that was
/// already published before a crash (regenerated while re-processing) is
/// skipped once.
async fn apply_steps(
    producer: &FutureProducer,
    queue: &mut InFlightQueue,
    published: &mut Published,
    metrics: &Metrics,
    steps: Vec<Step>,
) -> anyhow::Result<()> {
    for step in steps {
        let (seq, records, done) = match step {
            Step::Done { seq, records } => (Some(seq), records, true),
            Step::Attach { seq, records } => (seq, records, false),
        };
        let mut deliveries = Vec::with_capacity(records.len());
        for r in &records {
            if !published.is_empty() && published.take(&r.topic, r.key.as_deref(), &r.payload, &r.header_pairs()) {
                metrics.outputs_deduplicated.inc();
                continue;
            }
            deliveries.push(ack::Delivery {
                topic: Arc::from(r.topic.as_str()),
                future: emit::send(producer, r)
                    .await
                    .context("handing a record to the producer")?,
            });
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
async fn flush_done(queue: &mut InFlightQueue, tx: &mpsc::Sender<ack::Item>, metrics: &Metrics) -> bool {
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
        if tx.send(ack::Item::Done(pending)).await.is_err() {
            return false;
        }
    }
    true
}

/// The poll loop's surroundings.
struct Poll<'a> {
    consumer: &'a Arc<IngestConsumer>,
    producer: &'a FutureProducer,
    tx: &'a mpsc::Sender<ack::Item>,
    health: &'a Health,
    metrics: &'a Metrics,
    cancel: &'a CancellationToken,
    /// Processing time for the core's idle-partition rule starts here.
    clock: Instant,
    topics: &'a Topics,
    settings: &'a Settings,
    assigned: &'a mut mpsc::UnboundedReceiver<Vec<(String, i32)>>,
    /// Records published after the restored snapshot, not to publish twice.
    published: Published,
    /// The largest offset taken from each input partition.
    highest: HashMap<(String, i32), i64>,
    /// Per input partition, the first offset the last snapshot does not cover.
    covered: HashMap<(String, i32), i64>,
    /// Every output partition, with where it ended at start.
    outputs: Vec<(String, i32, i64)>,
    /// Where this process's acknowledged outputs end.
    delivered: ack::Delivered,
    /// The end offset of each assigned input partition, refreshed every second.
    ends: Ends,
    /// Partitions just assigned whose first message has not shown yet that
    /// fetching started at the resume offset.
    resuming: HashMap<(String, i32), ResumeCheck>,
    /// Partitions with records at the broker that none arrives from.
    stalls: crate::stall::StallWatch,
}

type Ends = Arc<std::sync::Mutex<HashMap<(String, i32), i64>>>;

/// Asks the broker every second where each assigned input partition ends.
/// (librdkafka's statistics carry a high watermark too, but tansu 0.6 reports
/// one that can trail far behind the partition's real end.)
async fn watch_end_offsets(consumer: Arc<IngestConsumer>, topics: Topics, ends: Ends, cancel: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = every.tick() => {}
        }
        let c = consumer.clone();
        let t = topics.clone();
        let found = tokio::task::spawn_blocking(move || {
            let mut found = HashMap::new();
            let Ok(assigned) = c.assignment() else {
                return found;
            };
            for e in assigned.elements() {
                if t.channel_of(e.topic()).is_none() {
                    continue;
                }
                if let Ok((_, high)) = c.fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(2)) {
                    found.insert((e.topic().to_string(), e.partition()), high);
                }
            }
            found
        })
        .await
        .unwrap_or_default();
        if let Ok(mut e) = ends.lock() {
            e.extend(found);
        }
    }
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
            // Eager rebalancing: each assignment is the whole set.
            let inputs: Vec<(onejourney_core::Channel, i32)> = parts
                .iter()
                .filter_map(|(t, p)| self.topics.channel_of(t).map(|c| (c, *p)))
                .collect();
            ingest.retain_partitions(&inputs);
            for (channel, partition) in inputs {
                ingest.register_partition(channel, partition, now);
            }
            // Every assigned partition starts at its resume offset: watch that
            // the broker really delivers from there.
            let resume = self
                .consumer
                .context()
                .resume
                .lock()
                .map(|r| r.clone())
                .unwrap_or_default();
            self.resuming.clear();
            for tp in parts {
                if let Some(start) = resume.get(&tp) {
                    self.resuming.insert(tp, ResumeCheck::new(*start));
                }
            }
        }
    }

    /// Checks where a resumed partition's first messages start (see
    /// [`durable::ResumeCheck`]). Returns whether to process the message.
    fn check_resume(&mut self, topic: &str, partition: i32, offset: i64) -> bool {
        let tp = (topic.to_string(), partition);
        let Some(check) = self.resuming.get_mut(&tp) else {
            return true;
        };
        let start = check.start();
        match check.record(offset) {
            Resumed::Skip => false,
            Resumed::Contiguous => {
                self.resuming.remove(&tp);
                true
            }
            Resumed::Missing => {
                error!(
                    topic,
                    partition,
                    from = start,
                    to = offset,
                    "the broker has no records between the resume offset and the first one it delivers"
                );
                self.resuming.remove(&tp);
                true
            }
            Resumed::Rewind(back) => {
                warn!(
                    topic,
                    partition,
                    asked = start,
                    got = offset,
                    rewind_to = back,
                    "the broker skipped records after the resume offset; fetching again from further back"
                );
                let consumer = self.consumer.clone();
                let t = topic.to_string();
                let sought =
                    blocking(move || consumer.seek(&t, partition, Offset::Offset(back), Duration::from_secs(10)));
                if let Err(e) = sought {
                    warn!(topic, partition, error = %e, "seeking back failed; retrying on the next message");
                    check.rewind_failed();
                }
                false
            }
        }
    }

    /// A partition with messages still at the broker is behind, not idle.
    /// The end offsets come from the broker every second (see
    /// `watch_end_offsets`): a partition whose next offset is below its end
    /// has a backlog.
    /// A partition that makes no progress for `ingest.stall_after` despite
    /// a backlog is stalled (see `stall`): it stops holding the watermark.
    fn update_backlogs(&mut self, ingest: &mut Ingest, paused: bool) {
        let Ok(ends) = self.ends.lock() else {
            return;
        };
        for ((topic, partition), end) in ends.iter() {
            let Some(channel) = self.topics.channel_of(topic) else {
                continue;
            };
            let k = (topic.clone(), *partition);
            let next = self
                .highest
                .get(&k)
                .map(|h| h + 1)
                .or_else(|| self.covered.get(&k).copied())
                .unwrap_or(0);
            let stalled = self
                .stalls
                .observe(topic, *partition, next, *end, Instant::now(), paused);
            ingest.set_backlog(channel, *partition, next < *end && !stalled);
        }
        self.metrics.partitions_stalled.set(self.stalls.count() as i64);
    }

    async fn run(&mut self, ingest: &mut Ingest) -> anyhow::Result<()> {
        let mut queue = InFlightQueue::default();
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut snapshot = tokio::time::interval(self.settings.state.snapshot_interval);
        snapshot.tick().await;
        let mut budget = tokio::time::interval(Duration::from_secs(10));
        let mut paused = false;
        loop {
            let msg = tokio::select! {
                _ = self.cancel.cancelled() => {
                    // Drain: apply every buffered event (as if every partition
                    // were idle), then checkpoint, so a graceful stop leaves
                    // nothing to re-process.
                    let steps = ingest.tick(u64::MAX, queue.newest());
                    apply_steps(self.producer, &mut queue, &mut self.published, self.metrics, steps).await?;
                    flush_done(&mut queue, self.tx, self.metrics).await;
                    return self.checkpoint(ingest, &mut queue, true).await;
                }
                _ = tick.tick() => {
                    self.health.beat();
                    self.metrics.producer_queue.set(i64::from(self.producer.in_flight_count()));
                    self.register_assigned(ingest);
                    self.update_backlogs(ingest, paused);
                    let steps = ingest.tick(self.now_ms(), queue.newest());
                    apply_steps(self.producer, &mut queue, &mut self.published, self.metrics, steps).await?;
                    if !flush_done(&mut queue, self.tx, self.metrics).await {
                        return Ok(());
                    }
                    continue;
                }
                _ = snapshot.tick() => {
                    if let Err(e) = self.checkpoint(ingest, &mut queue, false).await {
                        // A failed output delivery stops the engine; anything else is retried.
                        if self.cancel.is_cancelled() {
                            return Err(e);
                        }
                        self.metrics.snapshots.with_label_values(&["failed"]).inc();
                        warn!(error = %format!("{e:#}"), "state snapshot failed; retrying at the next interval");
                    }
                    continue;
                }
                _ = budget.tick() => {
                    paused = self.over_budget(ingest);
                    continue;
                }
                m = self.consumer.recv(), if !paused => m,
            };
            self.health.beat();
            let msg = match msg {
                Ok(m) => m.detach(),
                Err(e) => {
                    // A batch librdkafka cannot decode comes back here, again on
                    // every fetch, naming no partition: count it, log it a few
                    // times a minute; `stall` finds the partition.
                    self.metrics.consumer_errors.inc();
                    let reason = crate::stall::fetch_error_reason(&e);
                    self.metrics.input_fetch_errors.with_label_values(&[reason]).inc();
                    let allowed = self
                        .consumer
                        .context()
                        .warnings
                        .lock()
                        .map(|mut w| w.allow("consume_failed", reason))
                        .unwrap_or(true);
                    if allowed {
                        warn!(error = %e, reason, "consume failed");
                    } else {
                        self.metrics.warnings_suppressed.inc();
                    }
                    continue;
                }
            };
            self.health.set_connected(true);
            self.register_assigned(ingest);
            if !self.check_resume(msg.topic(), msg.partition(), msg.offset()) {
                continue;
            }
            let tp = (msg.topic().to_string(), msg.partition());
            let high = self.highest.entry(tp).or_insert(msg.offset());
            *high = (*high).max(msg.offset());
            let seq = queue.push(msg.topic(), msg.partition(), msg.offset(), Instant::now());
            let origin = Origin {
                topic: msg.topic(),
                partition: msg.partition(),
                offset: msg.offset(),
                key: msg.key(),
                payload: msg.payload(),
            };
            let steps = ingest.handle(&origin, seq, self.now_ms());
            apply_steps(self.producer, &mut queue, &mut self.published, self.metrics, steps).await?;
            if !flush_done(&mut queue, self.tx, self.metrics).await {
                // The ack task stopped: it failed and cancelled; its error is reported.
                return Ok(());
            }
        }
    }

    /// Checks the memory budget; true while consuming must stay paused.
    fn over_budget(&mut self, ingest: &Ingest) -> bool {
        let limit = self.settings.state.max_memory_bytes;
        if limit == 0 {
            return false;
        }
        let bytes = ingest.processor().state().approx_bytes() as u64;
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

    /// Writes a snapshot of the state and commits the input offsets it
    /// covers, once every output so far is acknowledged. `last`: the final
    /// checkpoint of a graceful stop (every input is applied).
    async fn checkpoint(&mut self, ingest: &mut Ingest, queue: &mut InFlightQueue, last: bool) -> anyhow::Result<()> {
        let started = Instant::now();
        // Journey detail past its retention goes before the state is saved.
        let after = self.settings.state.evict_journeys_after;
        if !after.is_zero() {
            let evicted = ingest.processor_mut().evict_journeys(after);
            self.metrics.journeys_evicted.inc_by(evicted as u64);
        }
        // 1. Every output handed to the producer is acknowledged.
        for e in queue.entries.iter_mut() {
            for d in e.deliveries.drain(..) {
                if let Err(err) = ack::settle(d, &self.delivered).await {
                    self.metrics.delivery_errors.inc();
                    self.cancel.cancel();
                    anyhow::bail!("output delivery failed: {err}");
                }
            }
        }
        let (reply, acked) = oneshot::channel();
        if self.tx.send(ack::Item::Barrier(reply)).await.is_err() || acked.await.is_err() {
            // The ack task failed (a delivery error): it has cancelled.
            self.cancel.cancel();
            anyhow::bail!("an output was not delivered; the state is not saved");
        }
        // Every buffered event must still hold its message back.
        for seq in ingest.processor().pending_seqs() {
            let held = queue.get(seq).is_some_and(|e| !e.done);
            if !held {
                error!(
                    seq,
                    "a buffered event's message is not held back: the snapshot would skip it"
                );
                anyhow::bail!("inconsistent in-flight bookkeeping at checkpoint (seq {seq})");
            }
        }
        // 2. The input offsets the state covers: past everything taken, except
        //    events still waiting for the watermark (they are read again).
        let mut inputs = self.covered.clone();
        for (tp, high) in &self.highest {
            inputs.insert(tp.clone(), high + 1);
        }
        for e in queue.entries.iter().filter(|e| !e.done) {
            let k = (e.topic.clone(), e.partition);
            let o = inputs.entry(k).or_insert(e.offset);
            *o = (*o).min(e.offset);
        }
        // 3. Where our outputs end now (from our own acknowledged deliveries;
        //    partitions we have not written to: where they ended at start):
        //    what a restart after a crash reads back.
        let outputs: Vec<(String, i32, i64)> = {
            let delivered = self.delivered.lock().map(|m| m.clone()).unwrap_or_default();
            self.outputs
                .iter()
                .map(|(t, p, start)| {
                    let end = delivered.get(&(t.clone(), *p)).copied().unwrap_or(*start).max(*start);
                    (t.clone(), *p, end)
                })
                .collect()
        };
        let header = Header {
            written_at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            inputs: inputs.iter().map(|((t, p), o)| (t.clone(), *p, *o)).collect(),
            outputs,
        };
        let path = durable::path(self.settings);
        let size = blocking(|| durable::write(&path, &header, &ingest.processor().snapshot()))?;
        // 4. Only now the input offsets: the state and outputs they cover are durable.
        let mut tpl = TopicPartitionList::new();
        for ((t, p), o) in &inputs {
            tpl.add_partition_offset(t, *p, Offset::Offset(*o))?;
        }
        let consumer = self.consumer.clone();
        let committed = tokio::task::spawn_blocking(move || consumer.commit(&tpl, CommitMode::Sync)).await;
        if let Ok(Err(e)) = committed {
            // Harmless: on restart the snapshot's offsets win over the group's.
            warn!(error = %e, "committing input offsets failed");
        }
        if let Ok(mut resume) = self.consumer.context().resume.lock() {
            resume.clone_from(&inputs);
        }
        self.covered = inputs;
        let took = started.elapsed();
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
        Ok(())
    }
}

/// Runs CPU-heavy work (serialising the state) without starving the other
/// tasks of a multi-threaded runtime.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Flushes the producer and leaves the group, off the async workers.
async fn shutdown(consumer: Arc<IngestConsumer>, producer: FutureProducer) {
    let done = tokio::task::spawn_blocking(move || {
        if let Err(e) = producer.flush(Duration::from_secs(30)) {
            warn!(error = %e, "producer flush incomplete");
        }
        consumer.unsubscribe();
        drop(consumer);
    })
    .await;
    if done.is_err() {
        warn!("shutdown task panicked");
    }
}
