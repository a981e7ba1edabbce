//! In flight: messages taken from the consumer whose processing is not
//! finished, in arrival order.
//!
//! In: each message as it is taken ([`InFlight::push`]), then the [`Step`]s
//! ingest makes of it and of ticks. Out: the records handed to the producer
//! (through [`super::emit`]) and, in the same order, their deliveries handed
//! to the ack stage at once; the finished prefix of messages handed to the
//! ack stage after them. It keeps the queue, which messages are unfinished
//! per input partition ([`super::unfinished`]), the records published before
//! a crash that are not to be sent twice, and the sending side of the ack
//! channel.
//!
//! A message's outputs go to the ack stage when they are made, not when the
//! message reaches the front: the queue holds every message behind the
//! oldest unfinished one (an event waiting for the watermark), and a
//! checkpoint's barrier would otherwise walk all of them to collect their
//! outputs. The ack stage settles its items in order, so a message is still
//! settled only after every output handed over before it; and a checkpoint
//! reads the first unfinished offset per partition without a walk. Only the
//! done prefix of messages goes to the ack stage, so the settled count moves
//! in offset order even though events are applied in event-time order.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use rdkafka::producer::FutureProducer;
use tokio::sync::{mpsc, oneshot};

use super::ack;
use super::emit;
use super::record::Step;
use super::unfinished::Unfinished;
use crate::durable::Published;
use crate::metrics::Metrics;

/// One message whose processing is not finished, or is finished behind one
/// that is not.
struct Entry {
    seq: u64,
    topic: Arc<str>,
    partition: i32,
    offset: i64,
    received: Instant,
    /// Its outputs, only while it is the finished front of the queue (the
    /// next [`InFlight::flush_done`] hands them over with it): every other
    /// message's outputs went to the ack stage when they were made.
    deliveries: Vec<ack::Delivery>,
    done: bool,
}

pub struct InFlight {
    entries: VecDeque<Entry>,
    /// The unfinished messages' offsets per input partition.
    unfinished: Unfinished,
    next_seq: u64,
    producer: FutureProducer,
    /// Records published after the restored snapshot, not to publish twice.
    published: Published,
    ack: mpsc::Sender<ack::Item>,
    metrics: Arc<Metrics>,
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
            unfinished: Unfinished::default(),
            next_seq: 0,
            producer,
            published,
            ack,
            metrics,
        }
    }

    /// Takes a message in; returns its sequence number.
    pub fn push(&mut self, topic: &str, partition: i32, offset: i64, received: Instant) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let topic = self.unfinished.taken(topic, partition, offset);
        self.entries.push_back(Entry {
            seq,
            topic,
            partition,
            offset,
            received,
            deliveries: Vec::new(),
            done: false,
        });
        seq
    }

    /// Where message `seq` is in the queue (0: the front).
    fn position(&self, seq: u64) -> Option<usize> {
        let front = self.entries.front()?.seq;
        let i = usize::try_from(seq.checked_sub(front)?).ok()?;
        (i < self.entries.len()).then_some(i)
    }

    fn get(&mut self, seq: u64) -> Option<&mut Entry> {
        self.position(seq).and_then(|i| self.entries.get_mut(i))
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

    /// Messages not finished (each holds its partition's offsets back).
    pub fn unfinished_count(&self) -> usize {
        self.unfinished.count()
    }

    /// Whether message `seq` is still held back (not finished).
    pub fn holds(&mut self, seq: u64) -> bool {
        self.get(seq).is_some_and(|e| !e.done)
    }

    /// Per input partition with an unfinished message, the first one's
    /// offset: (topic, partition, offset). O(partitions), not a walk.
    pub fn unfinished(&self) -> impl Iterator<Item = (&str, i32, i64)> {
        self.unfinished.first()
    }

    /// Sends the steps' records and marks finished messages. A record that
    /// was already published before a crash (regenerated while
    /// re-processing) is skipped once. The deliveries go to the ack stage at
    /// once, unless their message is the finished front of the queue (then
    /// with it, by the [`InFlight::flush_done`] that follows). So do those
    /// no message holds (timer outputs with no message left, scale-out's
    /// hand-overs and progress records): a checkpoint's barrier waits for
    /// them too (a hand-over lost in a crash after the checkpoint that
    /// tombstoned its journey would lose the journey).
    pub async fn apply(&mut self, steps: Vec<Step>) -> anyhow::Result<()> {
        for step in steps {
            let (seq, records, done) = match step {
                Step::Done { seq, records } => (Some(seq), records, true),
                Step::Attach { seq, records } => (seq, records, false),
            };
            let deliveries = self.send(&records).await?;
            let mut received = None;
            if let Some(i) = seq.and_then(|s| self.position(s)) {
                let entry = &mut self.entries[i];
                if done && !entry.done {
                    entry.done = true;
                    received = Some(entry.received);
                    self.unfinished.finished(&entry.topic, entry.partition, entry.offset);
                }
                if done && i == 0 {
                    entry.deliveries.extend(deliveries);
                    continue;
                }
            }
            if !deliveries.is_empty() {
                let outputs = ack::Item::Outputs { deliveries, received };
                if self.ack.send(outputs).await.is_err() {
                    anyhow::bail!("the ack stage has stopped; an output would not be awaited");
                }
            }
        }
        Ok(())
    }

    /// Hands the records to the producer, but those published before a crash.
    async fn send(&mut self, records: &[super::record::OutRecord]) -> anyhow::Result<Vec<ack::Delivery>> {
        let mut deliveries = Vec::with_capacity(records.len());
        for r in records {
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
        Ok(deliveries)
    }

    /// Hands the finished prefix to the ack stage; false when it has stopped.
    pub async fn flush_done(&mut self) -> bool {
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

    /// The barrier of a checkpoint, without waiting and without a walk: the
    /// finished front goes to the ack stage (every other output is there
    /// already), then a barrier behind it. The receiver answers, with where
    /// the outputs end, once every output handed to the producer so far is
    /// acknowledged; it fails when an output was not (the ack task stopped).
    pub async fn barrier(&mut self) -> anyhow::Result<oneshot::Receiver<ack::Ends>> {
        let (reply, acked) = oneshot::channel();
        let sent = self.flush_done().await && self.ack.send(ack::Item::Barrier(reply)).await.is_ok();
        if !sent {
            anyhow::bail!("an output was not delivered; the state is not saved");
        }
        debug_assert!(
            self.entries.iter().all(|e| e.deliveries.is_empty()),
            "only the finished front holds its outputs"
        );
        Ok(acked)
    }

    /// How many messages the producer holds, for the queue gauge.
    pub fn producer_queue(&self) -> i32 {
        use rdkafka::producer::Producer as _;
        self.producer.in_flight_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::record::OutRecord;

    /// A producer with no broker: records sit in its queue, their delivery
    /// futures unresolved, which is all the queue's bookkeeping needs.
    fn in_flight(capacity: usize) -> (InFlight, mpsc::Receiver<ack::Item>) {
        let producer: FutureProducer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:9")
            .set("message.timeout.ms", "600000")
            .create()
            .expect("a producer needs no broker to be created");
        let cfg = crate::config::Settings::defaults().expect("defaults");
        let metrics = Arc::new(Metrics::new(&cfg.decide).expect("metrics"));
        let (tx, rx) = mpsc::channel(capacity);
        (InFlight::new(producer, Published::default(), tx, metrics), rx)
    }

    /// Message `seq` finishes with `records`.
    async fn finish(f: &mut InFlight, seq: u64, records: Vec<OutRecord>) {
        f.apply(vec![Step::Done { seq, records }]).await.unwrap();
    }

    fn record(n: u8) -> OutRecord {
        OutRecord {
            topic: "onejourney.next-best-actions".into(),
            key: Some(vec![n]),
            payload: vec![n],
            headers: None,
            partition: Some(0),
        }
    }

    /// What the ack stage has been handed so far: `O<n>` outputs (`n`
    /// deliveries, `+` when they carry a receive time), `D<offset>/<n>` a
    /// finished message with `n` deliveries of its own, `B` a barrier.
    fn items(rx: &mut mpsc::Receiver<ack::Item>) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(item) = rx.try_recv() {
            out.push(match item {
                ack::Item::Outputs { deliveries, received } => {
                    format!("O{}{}", deliveries.len(), if received.is_some() { "+" } else { "" })
                }
                ack::Item::Done(p) => format!("D{}/{}", p.offset, p.deliveries.len()),
                ack::Item::Barrier(_) => "B".to_string(),
            });
        }
        out
    }

    #[tokio::test]
    async fn outputs_behind_an_unfinished_message_reach_the_ack_stage_at_once() {
        let (mut f, mut rx) = in_flight(64);
        let now = Instant::now();
        let waiting = f.push("web", 0, 10, now);
        let second = f.push("web", 0, 11, now);
        let third = f.push("pos", 2, 7, now);
        // The second and third finish while the first waits for the watermark.
        finish(&mut f, second, vec![record(1), record(2)]).await;
        finish(&mut f, third, vec![record(3)]).await;
        assert!(f.flush_done().await);
        assert_eq!(items(&mut rx), ["O2+", "O1+"], "outputs handed over, messages held");
        let first: Vec<_> = f.unfinished().map(|(t, p, o)| (t.to_string(), p, o)).collect();
        assert_eq!(first, [("web".to_string(), 0, 10)], "pos 2 has nothing unfinished");
        assert_eq!((f.held(), f.unfinished_count()), (3, 1));

        // A timer's outputs attached to the newest message go at once too.
        f.apply(vec![Step::Attach {
            seq: Some(third),
            records: vec![record(4)],
        }])
        .await
        .unwrap();
        // The barrier has nothing to collect: only itself goes.
        let _acked = f.barrier().await.unwrap();
        assert_eq!(items(&mut rx), ["O1", "B"]);

        // The first finishes: it is the front, its outputs go with it, and
        // the finished messages behind it follow, in order.
        finish(&mut f, waiting, vec![record(5)]).await;
        assert!(f.flush_done().await);
        assert_eq!(items(&mut rx), ["D10/1", "D11/0", "D7/0"]);
        assert_eq!((f.held(), f.unfinished_count(), f.unfinished().count()), (0, 0, 0));
    }

    #[tokio::test]
    async fn a_barrier_hands_over_the_finished_front_before_itself() {
        let (mut f, mut rx) = in_flight(64);
        let seq = f.push("web", 1, 3, Instant::now());
        finish(&mut f, seq, vec![record(1)]).await;
        // No flush in between (scale-out's reassignment applies without one).
        let _acked = f.barrier().await.unwrap();
        assert_eq!(items(&mut rx), ["D3/1", "B"], "the front's output precedes the barrier");
    }
}
