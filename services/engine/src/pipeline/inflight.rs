//! In flight: messages taken from the consumer whose processing is not
//! finished, in arrival order.
//!
//! In: each message as it is taken ([`InFlight::push`]), then the [`Step`]s
//! ingest makes of it and of ticks. Out: the records handed to the producer
//! (through [`super::emit`]), and the finished prefix of messages handed to
//! the ack stage with the deliveries of their outputs. It keeps the queue,
//! the records published before a crash that are not to be sent twice, and
//! the sending side of the ack channel.
//!
//! Only the done prefix goes to the ack stage, so offsets are stored in order
//! even though events are applied in event-time order: a message's event may
//! still wait for the watermark, and its outputs for the broker.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use rdkafka::producer::FutureProducer;
use tokio::sync::{mpsc, oneshot};

use super::ack;
use super::emit;
use super::record::Step;
use crate::durable::Published;
use crate::metrics::Metrics;

/// One message whose processing is not finished.
struct Entry {
    seq: u64,
    topic: String,
    partition: i32,
    offset: i64,
    received: Instant,
    deliveries: Vec<ack::Delivery>,
    done: bool,
}

pub struct InFlight {
    entries: VecDeque<Entry>,
    next_seq: u64,
    producer: FutureProducer,
    /// Records published after the restored snapshot, not to publish twice.
    published: Published,
    ack: mpsc::Sender<ack::Item>,
    metrics: Arc<Metrics>,
    /// Deliveries no message holds (timer outputs with no message left,
    /// handovers and progress records of scale-out): handed to the ack
    /// stage with the next finished messages, so a checkpoint's barrier
    /// waits for them too (a handover lost in a crash after the checkpoint
    /// that tombstoned its journey would lose the journey).
    untracked: Vec<ack::Delivery>,
}

impl InFlight {
    pub fn new(
        producer: FutureProducer,
        published: Published,
        ack: mpsc::Sender<ack::Item>,
        metrics: Arc<Metrics>,
    ) -> Self {
        InFlight {
            entries: VecDeque::new(),
            next_seq: 0,
            producer,
            published,
            ack,
            metrics,
            untracked: Vec::new(),
        }
    }

    /// Takes a message in; returns its sequence number.
    pub fn push(&mut self, topic: &str, partition: i32, offset: i64, received: Instant) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.entries.push_back(Entry {
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

    fn get(&mut self, seq: u64) -> Option<&mut Entry> {
        let front = self.entries.front()?.seq;
        let i = usize::try_from(seq.checked_sub(front)?).ok()?;
        self.entries.get_mut(i)
    }

    /// More records already published (a state partition restored here):
    /// each is skipped once when regenerated.
    pub fn also_published(&mut self, more: Published) {
        self.published.merge(more);
    }

    /// The producer the outputs go through.
    pub fn producer(&self) -> &FutureProducer {
        &self.producer
    }

    /// The newest message still in flight.
    pub fn newest(&self) -> Option<u64> {
        self.entries.back().map(|e| e.seq)
    }

    /// Messages held (finished or not) not yet handed to the ack stage.
    pub fn held(&self) -> usize {
        self.entries.len()
    }

    /// Whether message `seq` is still held back (not finished).
    pub fn holds(&mut self, seq: u64) -> bool {
        self.get(seq).is_some_and(|e| !e.done)
    }

    /// Where each unfinished message was read: (topic, partition, offset).
    pub fn unfinished(&self) -> impl Iterator<Item = (&str, i32, i64)> {
        self.entries
            .iter()
            .filter(|e| !e.done)
            .map(|e| (e.topic.as_str(), e.partition, e.offset))
    }

    /// Sends the steps' records and marks finished messages. A record that
    /// was already published before a crash (regenerated while
    /// re-processing) is skipped once.
    pub async fn apply(&mut self, steps: Vec<Step>) -> anyhow::Result<()> {
        for step in steps {
            let (seq, records, done) = match step {
                Step::Done { seq, records } => (Some(seq), records, true),
                Step::Attach { seq, records } => (seq, records, false),
            };
            let mut deliveries = Vec::with_capacity(records.len());
            for r in &records {
                if !self.published.is_empty()
                    && self
                        .published
                        .take(&r.topic, r.key.as_deref(), &r.payload, &r.header_pairs())
                {
                    self.metrics.outputs_deduplicated.inc();
                    continue;
                }
                deliveries.push(ack::Delivery {
                    topic: Arc::from(r.topic.as_str()),
                    future: emit::send(&self.producer, r)
                        .await
                        .context("handing a record to the producer")?,
                });
            }
            match seq.and_then(|s| self.get(s)) {
                Some(entry) => {
                    entry.deliveries.extend(deliveries);
                    entry.done |= done;
                }
                None => self.untracked.extend(deliveries),
            }
        }
        Ok(())
    }

    /// Hands the finished prefix to the ack stage; false when it has stopped.
    pub async fn flush_done(&mut self) -> bool {
        if !self.untracked.is_empty() {
            let untracked = std::mem::take(&mut self.untracked);
            if self.ack.send(ack::Item::Outputs(untracked)).await.is_err() {
                return false;
            }
        }
        while self.entries.front().is_some_and(|e| e.done) {
            let Some(e) = self.entries.pop_front() else {
                break;
            };
            self.metrics.in_flight.inc();
            let pending = ack::Pending {
                topic: e.topic,
                partition: e.partition,
                offset: e.offset,
                deliveries: e.deliveries,
                received: e.received,
            };
            if self.ack.send(ack::Item::Done(pending)).await.is_err() {
                return false;
            }
        }
        true
    }

    /// The barrier of a checkpoint, without waiting: the outputs of
    /// unfinished messages go to the ack stage, then a barrier behind them
    /// and everything the ack stage holds. The receiver answers, with where
    /// the outputs end, once every output handed to the producer so far is
    /// acknowledged; it fails when an output was not (the ack task stopped).
    pub async fn barrier(&mut self) -> anyhow::Result<oneshot::Receiver<ack::Ends>> {
        let mut outputs: Vec<ack::Delivery> = self.entries.iter_mut().flat_map(|e| e.deliveries.drain(..)).collect();
        outputs.append(&mut self.untracked);
        let (reply, acked) = oneshot::channel();
        let sent = self.ack.send(ack::Item::Outputs(outputs)).await.is_ok()
            && self.ack.send(ack::Item::Barrier(reply)).await.is_ok();
        if !sent {
            anyhow::bail!("an output was not delivered; the state is not saved");
        }
        Ok(acked)
    }

    /// How many messages the producer holds, for the queue gauge.
    pub fn producer_queue(&self) -> i32 {
        use rdkafka::producer::Producer as _;
        self.producer.in_flight_count()
    }
}
