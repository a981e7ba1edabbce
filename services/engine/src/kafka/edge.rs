//! The consumer's edge: what librdkafka tells the engine besides messages.
//!
//! In: librdkafka's callbacks (rebalances, client errors, statistics) and,
//! every second, the end offset of each assigned input partition. Out:
//! [`EdgeEvent`]s on one bounded channel to the poll loop (assignments,
//! revocations, end offsets), and readiness, lag and rebalance metrics. What
//! it keeps: where each input partition resumes (the offsets of the last
//! snapshot), which the assignment callback needs at once.
//!
//! Callbacks run on the polling thread, which is the poll loop itself
//! (`StreamConsumer::recv` serves them): they never block, and never wait for
//! the channel they feed. A callback sends with `try_send`; the end-offset
//! watcher leaves [`REBALANCE_SLOTS`] free for them (it skips a second rather
//! than fill the channel), so a rebalance event finds room unless more than
//! that many rebalances happen between two drains of the loop (it drains every
//! 250 ms and after every message). Should one still find the channel full,
//! the callback raises [`IngestContext::missed`] and the loop rebuilds the
//! assignment from the consumer itself.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::Topics;
use crate::health::Health;
use crate::logging::WarnLimiter;
use crate::metrics::Metrics;

pub type IngestConsumer = StreamConsumer<IngestContext>;

/// A topic and partition.
pub type Tp = (String, i32);

/// How many events the channel holds.
pub const CAPACITY: usize = 64;

/// Slots the end-offset watcher leaves to the rebalance callbacks.
pub const REBALANCE_SLOTS: usize = 32;
const _: () = assert!(REBALANCE_SLOTS < CAPACITY);

/// What the Kafka edge tells the poll loop, in the order it happened.
#[derive(Debug, PartialEq)]
pub enum EdgeEvent {
    /// Partitions assigned, each with the offset it was set to start at (the
    /// last snapshot's) when it has one. Eager rebalancing: the whole
    /// assignment.
    Assigned(Vec<(Tp, Option<i64>)>),
    /// Partitions taken away.
    Revoked(Vec<Tp>),
    /// Where assigned input partitions end, each read from the broker from
    /// its `Instant` on (a record published before it is inside that end).
    Ends(HashMap<Tp, (i64, Instant)>),
}

/// With incremental (cooperative) rebalancing a callback names only the
/// partitions added or taken away; the pipeline works on the whole
/// assignment (as eager rebalancing gives it). Returns every partition now
/// assigned: those just added with their starts, the others with none
/// (they go on where they are).
fn whole_assignment<C: ConsumerContext>(c: &BaseConsumer<C>, added: Vec<(Tp, Option<i64>)>) -> Vec<(Tp, Option<i64>)> {
    let mut whole = added;
    if let Ok(now) = c.assignment() {
        for tp in partitions(&now) {
            if !whole.iter().any(|(t, _)| *t == tp) {
                whole.push((tp, None));
            }
        }
    }
    whole
}

/// Partitions without a resume offset of this process (a scale-out routed
/// partition, a first start) start where the group committed: that offset
/// is read here so the pipeline checks where fetching really starts (see
/// `resume`): tansu 0.6, asked for an offset in the middle of a record
/// batch, delivers from the next batch, and the records between were lost
/// without a trace (measured: a routed partition re-read after a `kill -9`
/// lost the first event of a journey). Without a committed offset, or when
/// it cannot be read within 2 s (the callback runs on the poll loop, which
/// waits meanwhile), the partition starts as the group says, unchecked.
fn committed_starts<C: ConsumerContext>(c: &BaseConsumer<C>, starts: Vec<(Tp, Option<i64>)>) -> Vec<(Tp, Option<i64>)> {
    let mut ask = TopicPartitionList::new();
    for ((topic, partition), start) in &starts {
        if start.is_none() {
            ask.add_partition(topic, *partition);
        }
    }
    if ask.count() == 0 {
        return starts;
    }
    let committed = match c.committed_offsets(ask, Duration::from_secs(2)) {
        Ok(list) => list,
        Err(e) => {
            warn!(error = %e, "could not read the group's committed offsets; those partitions start unchecked");
            return starts;
        }
    };
    starts
        .into_iter()
        .map(|(tp, start)| {
            let start = start.or_else(|| match committed.find_partition(&tp.0, tp.1).map(|e| e.offset()) {
                Some(Offset::Offset(o)) if o >= 0 => Some(o),
                _ => None,
            });
            (tp, start)
        })
        .collect()
}

/// The bounded channel from the edge to the poll loop.
pub fn channel() -> (mpsc::Sender<EdgeEvent>, mpsc::Receiver<EdgeEvent>) {
    mpsc::channel(CAPACITY)
}

/// Flips readiness, counts rebalances and reports them to the poll loop;
/// never blocks.
pub struct IngestContext {
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    /// Client errors repeat while a broker is down: log each kind a few times a minute.
    warnings: Mutex<WarnLimiter>,
    events: mpsc::Sender<EdgeEvent>,
    /// Where each input partition resumes: the offsets of the last snapshot.
    /// An assigned partition starts there, whatever the group committed.
    resume: Mutex<HashMap<Tp, i64>>,
    /// An assignment did not fit in the channel: the loop must read it from
    /// the consumer.
    missed: AtomicBool,
    /// Scale-out (`scaleout.route_journeys`): a partition taken away
    /// forgets its resume offset: when it comes back, it starts where its
    /// readers committed meanwhile.
    scaleout: bool,
    /// The group rebalances incrementally (`cooperative-sticky`): a
    /// callback names only the partitions that change. Known from the
    /// configuration: asking librdkafka from inside the callback can hang
    /// while the consumer closes (librdkafka issue 4041).
    cooperative: bool,
}

impl IngestContext {
    pub fn new(
        health: Arc<Health>,
        metrics: Arc<Metrics>,
        warnings: WarnLimiter,
        events: mpsc::Sender<EdgeEvent>,
        resume: HashMap<Tp, i64>,
    ) -> Self {
        IngestContext {
            health,
            metrics,
            warnings: Mutex::new(warnings),
            events,
            resume: Mutex::new(resume),
            missed: AtomicBool::new(false),
            scaleout: false,
            cooperative: false,
        }
    }

    /// See the `cooperative` field.
    pub fn with_cooperative(mut self, cooperative: bool) -> Self {
        self.cooperative = cooperative;
        self
    }

    /// See the `scaleout` field.
    pub fn with_scaleout(mut self, scaleout: bool) -> Self {
        self.scaleout = scaleout;
        self
    }

    /// Where partitions resume from now on (after a checkpoint).
    pub fn set_resume(&self, offsets: &HashMap<Tp, i64>) {
        if let Ok(mut resume) = self.resume.lock() {
            resume.clone_from(offsets);
        }
    }

    /// Each partition with the offset it resumes at, if it has one.
    pub fn starts(&self, partitions: impl Iterator<Item = Tp>) -> Vec<(Tp, Option<i64>)> {
        let resume = self.resume.lock().map(|r| r.clone()).unwrap_or_default();
        partitions
            .map(|tp| {
                let start = resume.get(&tp).copied();
                (tp, start)
            })
            .collect()
    }

    /// True once after an assignment was not delivered as an event.
    pub fn take_missed(&self) -> bool {
        self.missed.swap(false, Ordering::AcqRel)
    }

    fn send(&self, event: EdgeEvent) {
        match self.events.try_send(event) {
            Ok(()) => {}
            // The pipeline has stopped: nothing to tell it.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(event)) => {
                error!(
                    ?event,
                    "the edge channel is full; the poll loop reads the assignment itself"
                );
                self.missed.store(true, Ordering::Release);
            }
        }
    }
}

/// The topic and partition of each element.
pub fn partitions(tpl: &TopicPartitionList) -> impl Iterator<Item = Tp> + '_ {
    tpl.elements()
        .into_iter()
        .map(|e| (e.topic().to_string(), e.partition()))
}

impl IngestContext {
    /// Whether a warning of this kind and key may be logged now (a few a
    /// minute); otherwise it is counted as suppressed.
    pub fn allow_warning(&self, kind: &'static str, key: &str) -> bool {
        let allowed = self.warnings.lock().map(|mut w| w.allow(kind, key)).unwrap_or(true);
        if !allowed {
            self.metrics.warnings_suppressed.inc();
        }
        allowed
    }
}

impl ClientContext for IngestContext {
    fn error(&self, error: KafkaError, reason: &str) {
        self.metrics.consumer_errors.inc();
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.health.set_connected(false);
        }
        let code = error.rdkafka_error_code().map(|c| format!("{c:?}")).unwrap_or_default();
        let allowed = self
            .warnings
            .lock()
            .map(|mut w| w.allow("kafka_client_error", &code))
            .unwrap_or(true);
        if allowed {
            warn!(error = %error, reason, "kafka consumer error");
        } else {
            self.metrics.warnings_suppressed.inc();
        }
    }

    /// Consumer lag per partition from librdkafka's statistics, and whether
    /// any broker is up.
    fn stats(&self, stats: Statistics) {
        if stats.brokers.values().any(|b| b.state == "UP") {
            self.health.set_connected(true);
        }
        for (topic, t) in &stats.topics {
            for (id, p) in &t.partitions {
                // Partition -1 is librdkafka's internal "unassigned" queue.
                if *id < 0 {
                    continue;
                }
                // Messages not yet taken by the pipeline: offsets are committed
                // only at checkpoints, so the committed lag would overstate it.
                let lag = if p.hi_offset >= 0 && p.app_offset >= 0 {
                    (p.hi_offset - p.app_offset).max(0)
                } else {
                    p.consumer_lag
                };
                if lag < 0 {
                    continue;
                }
                self.metrics
                    .consumer_lag
                    .with_label_values(&[topic, &id.to_string()])
                    .set(lag);
            }
        }
    }
}

impl ConsumerContext for IngestContext {
    /// As the default, except that assigned partitions start at the offsets
    /// of the restored snapshot.
    fn rebalance(&self, c: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let cooperative = self.cooperative;
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                // Not ready until the poll loop has settled it (restored the
                // state partitions it brings): counted before it counts as held.
                self.health.assignment_coming();
                let starts = committed_starts(c, self.starts(partitions(tpl)));
                for ((topic, partition), offset) in &starts {
                    let Some(offset) = offset else { continue };
                    if let Err(e) = tpl.set_partition_offset(topic, *partition, Offset::Offset(*offset)) {
                        warn!(topic, partition, error = %e, "could not set the resume offset");
                    }
                }
                let r = if cooperative {
                    c.incremental_assign(tpl)
                } else {
                    c.assign(tpl)
                };
                if let Err(e) = r {
                    warn!(error = %e, "assigning partitions failed");
                }
                self.post_rebalance(c, &Rebalance::Assign(tpl));
                if cooperative {
                    self.send(EdgeEvent::Assigned(whole_assignment(c, starts)));
                } else {
                    self.send(EdgeEvent::Assigned(starts));
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let r = if cooperative {
                    c.incremental_unassign(tpl)
                } else {
                    c.unassign()
                };
                if let Err(e) = r {
                    warn!(error = %e, "revoking partitions failed");
                }
                self.post_rebalance(c, &Rebalance::Revoke(tpl));
                // Scale-out: a partition taken away may be read by another
                // process meanwhile; when it comes back it starts where the
                // group committed, not at this process's older checkpoint.
                if let (true, Ok(mut resume)) = (self.scaleout, self.resume.lock()) {
                    for tp in partitions(tpl) {
                        resume.remove(&tp);
                    }
                }
                self.send(EdgeEvent::Revoked(partitions(tpl).collect()));
                if cooperative {
                    // What stays: no assignment may follow a revocation.
                    self.health.assignment_coming();
                    self.send(EdgeEvent::Assigned(whole_assignment(c, Vec::new())));
                }
            }
            other => {
                let code: RDKafkaErrorCode = other.into();
                self.post_rebalance(c, &Rebalance::Error(KafkaError::Rebalance(code)));
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                self.metrics.rebalances.with_label_values(&["assign"]).inc();
                // A member with no partition makes no progress: not ready.
                let held = consumer.assignment().map_or(tpl.count(), |a| a.count());
                self.health.set_assigned(held > 0);
                info!(partitions = tpl.count(), "partitions assigned");
            }
            Rebalance::Revoke(tpl) => {
                self.metrics.rebalances.with_label_values(&["revoke"]).inc();
                info!(partitions = tpl.count(), "partitions revoked");
            }
            Rebalance::Error(e) => warn!(error = %e, "rebalance error"),
        }
    }
}

/// Asks the broker every second where each assigned input partition ends and
/// sends it as [`EdgeEvent::Ends`]. (librdkafka's statistics carry a high
/// watermark too, but tansu 0.6 reports one that can trail far behind the
/// partition's real end.) A second whose answer finds fewer than
/// [`REBALANCE_SLOTS`] free slots is skipped: the next one is fresher.
pub async fn watch_end_offsets(
    consumer: Arc<IngestConsumer>,
    topics: Topics,
    events: mpsc::Sender<EdgeEvent>,
    cancel: CancellationToken,
) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = every.tick() => {}
        }
        let c = consumer.clone();
        let t = topics.clone();
        let found = tokio::task::spawn_blocking(move || end_offsets(&c, &t))
            .await
            .unwrap_or_default();
        if events.is_closed() {
            return;
        }
        if events.capacity() > REBALANCE_SLOTS {
            let _ = events.try_send(EdgeEvent::Ends(found));
        }
    }
}

/// The end offset of each assigned input partition and when it was asked
/// for (blocking). Each is stamped on its own: the partitions are asked one
/// after the other, up to 2 s each, and a stamp taken before the sweep made
/// every end of a slow sweep look old (past `ENDS_STALE_AFTER`, all of them
/// counted as a backlog).
fn end_offsets(c: &IngestConsumer, topics: &Topics) -> HashMap<Tp, (i64, Instant)> {
    let mut found = HashMap::new();
    let Ok(assigned) = c.assignment() else {
        return found;
    };
    for e in assigned.elements() {
        if topics.channel_of(e.topic()).is_none() && e.topic() != topics.routed {
            continue;
        }
        let asked = Instant::now();
        if let Ok((_, high)) = c.fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(2)) {
            found.insert((e.topic().to_string(), e.partition()), (high, asked));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watcher_leaves_room_for_rebalances() {
        let (tx, _rx) = channel();
        // Fill as the watcher would, then a callback still finds room.
        while tx.capacity() > REBALANCE_SLOTS {
            tx.try_send(EdgeEvent::Ends(HashMap::new())).unwrap();
        }
        for _ in 0..REBALANCE_SLOTS {
            assert!(tx.try_send(EdgeEvent::Revoked(Vec::new())).is_ok());
        }
    }
}
