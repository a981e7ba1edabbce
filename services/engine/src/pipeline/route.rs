//! Scale-out stage 2 at the engine (`scaleout.route_journeys`,
//! `docs/scaling.md` sections 2 and 3): the hop from the process that
//! resolved an event to the process that owns its profile's journey.
//!
//! In: with the identity log on, an own event record folded (its
//! [`Resolved`] profile), the handovers a fold made, the messages of the
//! routed topic (`topics.routed`, `state.partitions` partitions, consumed in
//! the engine's group with the input topics, so the group decides who owns
//! which state partition), and the identity-log offset folded so far. Out:
//! routed records to publish (partition = the state partition of the One
//! ID); a routed event offered to the journey step on its lane (routed
//! partition, input partition), a handover absorbed, or either sent on to
//! the partition that owns its profile now; twice a second a progress record
//! to every routed partition (how far this process has sent each of its
//! input partitions, and whether it still reads each), which moves the
//! owner's clocks of those lanes when it is read, in order with the events
//! sent before it. Keeps the routed messages (and progress records behind
//! them) that wait until this process has folded the identity-log record
//! they were resolved at, in arrival order per partition; how far the
//! identity log is folded; how far each own input partition was sent; and
//! per lane whether its sender last said it is active.
//!
//! A partition the group moves takes its journeys along through the
//! journeys changelog (`moving.rs`).

use std::collections::{BTreeMap, VecDeque};

use onejourney_core::hash::{HashMap, HashSet};
use onejourney_core::processor::{state_partition, LaneReport, Ownership, Processed, Resolved, TOO_LATE};
use onejourney_core::routed::{Routed, SourceProgress};
use onejourney_core::time::EventTime;
use onejourney_core::ChannelEvent;

use super::evidence::RoundTrip;
use super::handoff::Membership;
use super::ingest::{Ingest, Origin};
use super::record::{OutRecord, Step};

/// How often a process tells every owner how far it sent each of its input
/// partitions (processing time): an owner's watermark moves in these steps
/// on lanes no event arrives on.
const PROGRESS_EVERY_MS: u64 = 500;

pub(super) use super::lanes::partition_of;
pub use super::lanes::{lane, source_of};
use super::lanes::{on_this_clock, Sent};

/// A routed message kept until the identity log is folded far enough.
struct Held {
    seq: u64,
    partition: i32,
    offset: i64,
    record: Routed,
}

pub struct Route {
    topic: String,
    partitions: u32,
    /// Identity-log records below this offset are folded.
    folded: i64,
    /// Routed messages waiting for the fold, and the progress records
    /// behind them on their partition.
    waiting: VecDeque<Held>,
    /// The core's numbers of every input partition of the group.
    sources: Vec<u32>,
    /// Sender side: this process's input partitions.
    sent: BTreeMap<u32, Sent>,
    /// `timers.idle_after`: an input partition that routed nothing for this
    /// long, with no backlog, is no longer active.
    idle_ms: u64,
    /// When the last progress record went out (processing time).
    progress_ms: u64,
    /// Owner side: per lane, whether its sender's last progress record said
    /// it is active.
    active: HashMap<u32, bool>,
    /// Owned routed partitions this process's consumer is behind on: their
    /// lanes hold the watermark whatever their senders said.
    behind: HashSet<u32>,
    /// Where the owned partitions go once settled (the members topic:
    /// lookups are forwarded to the owner), and who else names one.
    membership: Option<Membership>,
    /// State partitions the last assignments gave this process, to restore
    /// before any of their messages is processed, and those they took away
    /// (`moving.rs`).
    pub(super) gained: Vec<u32>,
    pub(super) lost: Vec<u32>,
    /// The numbers of the messages dropped with partitions given up.
    pub(super) dropped: Vec<u64>,
    /// The journeys that left with them, for the new owner.
    pub(super) handed_off: Vec<onejourney_core::processor::GivenUp>,
    /// Partitions given up whose offsets the pipeline still tracks.
    pub(super) given_up: Vec<u32>,
}

impl Route {
    pub fn new(topic: String, partitions: u32, sources: Vec<u32>, idle_ms: u64) -> Self {
        Route {
            topic,
            partitions,
            folded: 0,
            waiting: VecDeque::new(),
            sources,
            sent: BTreeMap::new(),
            idle_ms,
            progress_ms: 0,
            active: HashMap::default(),
            behind: HashSet::default(),
            membership: None,
            gained: Vec::new(),
            lost: Vec::new(),
            dropped: Vec::new(),
            handed_off: Vec::new(),
            given_up: Vec::new(),
        }
    }

    /// Tells `membership` the owned partitions once settled
    /// (`moving.rs`).
    pub fn announcing(mut self, membership: Option<Membership>) -> Self {
        self.membership = membership;
        self
    }

    pub(super) fn membership(&self) -> Option<&Membership> {
        self.membership.as_ref()
    }

    /// The assignment gave this process `owned`: what it kept of the
    /// partitions it gave up goes.
    pub fn owning(&mut self, owned: &Ownership) {
        self.behind.retain(|q| owned.owned.contains(q));
        self.active
            .retain(|l, _| partition_of(*l).is_some_and(|q| owned.owned.contains(&q)));
    }

    /// An assignment changed the owned partitions from `before` to `now`.
    pub(super) fn moved(&mut self, before: &HashSet<u32>, now: &HashSet<u32>) {
        self.gained.retain(|q| now.contains(q));
        self.gained.extend(now.iter().filter(|q| !before.contains(q)));
        self.lost.extend(before.iter().filter(|q| !now.contains(q)));
    }

    /// Takes the held messages of partitions this process gave up; returns
    /// their numbers (the new owner reads them again).
    pub(super) fn drop_waiting(&mut self, lost: &[u32]) -> Vec<u64> {
        let gone = |h: &Held| u32::try_from(h.partition).is_ok_and(|q| lost.contains(&q));
        let seqs = self.waiting.iter().filter(|h| gone(h)).map(|h| h.seq).collect();
        self.waiting.retain(|h| !gone(h));
        seqs
    }

    /// The lanes of the owned routed partitions: the clocks the owner's
    /// watermark waits for.
    pub fn lanes(&self, owned: &Ownership) -> Vec<u32> {
        let mut owned: Vec<u32> = owned.owned.iter().copied().collect();
        owned.sort_unstable();
        owned
            .into_iter()
            .flat_map(|q| self.sources.iter().map(move |s| lane(q, *s)))
            .collect()
    }

    /// This process reads these input partitions now (its assignment).
    pub fn reading(&mut self, sources: &[u32]) {
        self.sent.retain(|s, _| sources.contains(s));
        for s in sources {
            self.sent.entry(*s).or_default();
        }
    }

    /// A read of where input partition `source` of this process ends, at
    /// `read_ms` (processing time; none while not read since it was
    /// assigned): `backlog` when records wait at the broker.
    pub fn local_end(&mut self, source: u32, backlog: bool, read_ms: Option<u64>) {
        if let Some(sent) = self.sent.get_mut(&source) {
            sent.end_read(backlog, read_ms);
        }
    }

    /// An event of input partition `source` at `at` was routed.
    fn routed_one(&mut self, source: u32, at: EventTime, now_ms: u64) {
        if let Some(sent) = self.sent.get_mut(&source) {
            sent.routed(at, now_ms);
        }
    }

    /// What the next progress record says of each input partition read
    /// here; `in_trip`: those with events in the identity round trip;
    /// `wall_now_ms`: the wall clock at `now_ms`.
    fn progress_of(&self, in_trip: &HashSet<u32>, now_ms: u64, wall_now_ms: u64) -> Vec<SourceProgress> {
        self.sent
            .iter()
            .map(|(s, sent)| sent.progress(*s, in_trip.contains(s), (now_ms, wall_now_ms), self.idle_ms))
            .collect()
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Whether every lane of routed partition `partition` holds the
    /// watermark whatever its sender said: this process's consumer is
    /// behind on it, or messages of it wait here for the fold (their lanes
    /// must not go idle meanwhile).
    fn holds_all(&self, partition: i32) -> bool {
        u32::try_from(partition).is_ok_and(|q| self.behind.contains(&q))
            || self.waiting.iter().any(|h| h.partition == partition)
    }

    /// The last identity-log record folded here (-1: none): an event
    /// resolved now needs its owner to have folded that far.
    pub fn folded_to(&self) -> i64 {
        self.folded - 1
    }

    /// The ownership the assigned routed partitions give.
    pub fn ownership(&self, assigned: impl Iterator<Item = i32>) -> Ownership {
        Ownership {
            partitions: self.partitions,
            owned: assigned.filter_map(|p| u32::try_from(p).ok()).collect(),
        }
    }

    /// The record that carries `r` to the owner of its profile (progress:
    /// to partition 0).
    fn record(&self, ns: &onejourney_core::ids::Namespaces, r: &Routed) -> OutRecord {
        let partition = r.one_id().map_or(0, |o| state_partition(o, self.partitions));
        OutRecord {
            topic: self.topic.clone(),
            key: r.one_id().map(|o| o.as_bytes().to_vec()),
            payload: r.encode(ns),
            headers: None,
            partition: i32::try_from(partition).ok(),
        }
    }
}

/// A handover `sent` or `read`, at debug level (who went where, with how many events).
fn debug_handover(step: &str, h: &onejourney_core::processor::Handover) {
    let events = h.journey.as_ref().map_or(0, |j| j.total_events());
    tracing::debug!(step, from = %h.from, to = %h.to, events, "handover");
}

impl Ingest {
    /// An own event's identity step is done: its journey step goes to the
    /// owner of `resolved`'s partition, as message `seq`'s record.
    pub(super) fn route_event(
        &mut self,
        ev: ChannelEvent,
        resolved: Resolved,
        source: u32,
        evidence: i64,
        now_ms: u64,
    ) -> OutRecord {
        if let Some(route) = &mut self.route {
            route.routed_one(source, ev.occurred_at, now_ms);
        }
        tracing::debug!(process = self.process_id(), event_id = %ev.event_id, one_id = %resolved.one_id, source, evidence, "event routed");
        let r = Routed::Event {
            ev,
            resolved,
            source,
            evidence,
        };
        self.send("event", &r)
    }

    /// The record that sends an event on to the owner of `resolved`, whose
    /// profile moved there (with at least this process's fold position:
    /// the receiver must have folded what moved it).
    fn forward_event(&self, ev: ChannelEvent, resolved: Resolved, source: u32, evidence: i64) -> OutRecord {
        tracing::debug!(event_id = %ev.event_id, to = %resolved.one_id, "event forwarded");
        let r = Routed::Event {
            ev,
            resolved,
            source,
            evidence: evidence.max(self.route_ref().folded_to()),
        };
        self.send("forward", &r)
    }

    /// The record that carries `r` to its partition, counted by `kind`
    /// (event, handover, forward).
    fn send(&self, kind: &str, r: &Routed) -> OutRecord {
        self.metrics.evidence.routed.with_label_values(&[kind]).inc();
        self.route_ref().record(self.decoder.namespaces(), r)
    }

    fn route_ref(&self) -> &Route {
        match &self.route {
            Some(r) => r,
            None => unreachable!("routing is on when a routed record is made"),
        }
    }

    /// After folding identity-log record `offset`: the handovers it made
    /// (attached to message `attach_to`), then the routed messages that
    /// waited for it.
    pub(super) fn after_fold(&mut self, offset: i64, now_ms: u64, attach_to: Option<u64>) -> Vec<Step> {
        let Some(route) = &mut self.route else {
            return Vec::new();
        };
        route.folded = route.folded.max(offset + 1);
        let mut steps = Vec::new();
        let records = self.handover_records(offset);
        if !records.is_empty() {
            steps.push(Step::Attach {
                seq: attach_to,
                records,
            });
        }
        // Buffered events whose profile this fold moved to another owner.
        for (seq, ev, resolved, lane) in self.processor.take_moved_pending() {
            let records = vec![self.forward_event(ev, resolved, source_of(lane), offset)];
            steps.push(Step::Done { seq, records });
        }
        steps.extend(self.release_routed(now_ms));
        steps
    }

    /// The records of the handovers the fold of identity-log record
    /// `offset` made.
    pub(super) fn handover_records(&mut self, offset: i64) -> Vec<OutRecord> {
        self.processor
            .take_handovers()
            .into_iter()
            .map(|handover| {
                debug_handover("sent", &handover);
                let r = Routed::Handover {
                    handover,
                    evidence: offset,
                };
                self.send("handover", &r)
            })
            .collect()
    }

    /// The routed messages whose identity-log record is folded, in order.
    fn release_routed(&mut self, now_ms: u64) -> Vec<Step> {
        let Some(route) = &mut self.route else {
            return Vec::new();
        };
        // In arrival order; a message goes only when none before it on its
        // partition still waits, and a blocked partition blocks no other.
        let folded = route.folded;
        let mut blocked = HashSet::default();
        let mut go = Vec::new();
        let mut keep = VecDeque::new();
        for h in std::mem::take(&mut route.waiting) {
            if blocked.contains(&h.partition) || h.record.evidence() >= folded {
                blocked.insert(h.partition);
                keep.push_back(h);
            } else {
                go.push(h);
            }
        }
        route.waiting = keep;
        let mut freed: Vec<i32> = go.iter().map(|h| h.partition).collect();
        freed.sort_unstable();
        freed.dedup();
        let mut steps = Vec::new();
        for held in go {
            self.metrics.evidence.routed_waiting.dec();
            steps.extend(self.apply_routed(held, now_ms));
        }
        for p in freed {
            self.refresh_lanes(p);
        }
        steps
    }

    /// Recomputes whether each lane of routed partition `partition` holds
    /// the watermark: its sender said it is active, or
    /// [`Route::holds_all`].
    fn refresh_lanes(&mut self, partition: i32) {
        let (Some(route), Ok(q)) = (&self.route, u32::try_from(partition)) else {
            return;
        };
        let all = route.holds_all(partition);
        for s in &route.sources {
            let l = lane(q, *s);
            let active = route.active.get(&l).copied().unwrap_or(false);
            self.processor.set_backlog(l, all || active);
        }
    }

    /// Whether `partition` of `topic` is a routed partition this process
    /// owns now (the edge may still report ends of ones it gave up).
    pub fn owns_routed(&self, topic: &str, partition: i32) -> bool {
        self.route.as_ref().is_some_and(|r| r.topic == topic)
            && self
                .processor
                .ownership()
                .is_some_and(|o| u32::try_from(partition).is_ok_and(|p| o.owned.contains(&p)))
    }

    /// Whether this process's consumer is behind on owned routed partition
    /// `partition` (checked every tick): its lanes hold the watermark, as a
    /// local input partition with a backlog does.
    pub fn routed_backlog(&mut self, partition: i32, behind: bool) {
        let (Some(route), Ok(q)) = (&mut self.route, u32::try_from(partition)) else {
            return;
        };
        let changed = if behind {
            route.behind.insert(q)
        } else {
            route.behind.remove(&q)
        };
        if changed {
            self.refresh_lanes(partition);
        }
    }

    /// Twice a second: how far this process sent each of its input
    /// partitions, to every routed partition (untracked: the next one
    /// replaces a lost one). Each goes after the events this process sent
    /// there, on the same partition, so an owner reads it in order with them.
    pub(super) fn progress(&mut self, now_ms: u64) -> Vec<Step> {
        let Some(route) = &mut self.route else {
            return Vec::new();
        };
        if now_ms.saturating_sub(route.progress_ms) < PROGRESS_EVERY_MS || route.sent.is_empty() {
            return Vec::new();
        }
        route.progress_ms = now_ms;
        let in_trip = self
            .round_trip
            .as_ref()
            .map(|rt| rt.waiting_sources())
            .unwrap_or_default();
        let sources = route.progress_of(&in_trip, now_ms, crate::clock::unix_ms());
        let from = self.round_trip.as_ref().map_or(0, RoundTrip::process);
        let payload = Routed::Progress { from, sources }.encode(self.decoder.namespaces());
        let records = (0..route.partitions)
            .map(|q| OutRecord {
                topic: route.topic.clone(),
                key: None,
                payload: payload.clone(),
                headers: None,
                partition: i32::try_from(q).ok(),
            })
            .collect();
        vec![Step::Attach { seq: None, records }]
    }

    /// A message of the routed topic: applied now, or kept until this
    /// process has folded the identity-log record it depends on.
    pub(super) fn routed(&mut self, m: &Origin<'_>, seq: u64, now_ms: u64) -> Vec<Step> {
        let payload = m.payload.unwrap_or_default();
        let r = match Routed::decode(payload, self.decoder.namespaces()) {
            Ok(r) => r,
            Err(e) => return vec![self.invalid(m, seq, e.reason(), &e.to_string())],
        };
        let Some(route) = &mut self.route else {
            return Vec::new();
        };
        let held = Held {
            seq,
            partition: m.partition,
            offset: m.offset,
            record: r,
        };
        // A progress record waits behind the events before it, so that the
        // lanes it moves have delivered them.
        let blocked = route.waiting.iter().any(|h| h.partition == m.partition);
        if blocked || held.record.evidence() >= route.folded {
            route.waiting.push_back(held);
            self.metrics.evidence.routed_waiting.inc();
            if !blocked {
                self.refresh_lanes(m.partition);
            }
            return Vec::new();
        }
        self.apply_routed(held, now_ms)
    }

    fn apply_routed(&mut self, held: Held, now_ms: u64) -> Vec<Step> {
        let Held {
            seq,
            partition,
            offset,
            record,
        } = held;
        match record {
            Routed::Event {
                ev,
                resolved,
                source,
                evidence,
            } => {
                // Where its profile is now (a merge may have moved it since
                // it was resolved): offered under that name, so that only a
                // later move of that profile looks at it again.
                let now = self.processor.follow(&resolved);
                tracing::debug!(process = self.process_id(), event_id = %ev.event_id, partition, offset, seq, one_id = %resolved.one_id, now = ?now.as_ref().map(|n| n.one_id.to_string()), "routed event read");
                if let Some(now) = now.clone().filter(|n| !self.processor.owns(&n.one_id)) {
                    let records = vec![self.forward_event(ev, now, source, evidence)];
                    return vec![Step::Done { seq, records }];
                }
                let resolved = now.unwrap_or(resolved);
                if self.processor.too_late(&ev) {
                    // Behind this owner's window: dead-lettered, as one
                    // process dead-letters it on arrival.
                    let why = self.processor.too_late_text(&ev, "this owner");
                    let record = Routed::Event {
                        ev,
                        resolved,
                        source,
                        evidence,
                    };
                    let payload = record.encode(self.decoder.namespaces());
                    let topic = self.route_ref().topic().to_string();
                    let m = Origin {
                        topic: &topic,
                        partition,
                        offset,
                        key: None,
                        payload: Some(&payload),
                        timestamp: None,
                    };
                    return vec![self.invalid(&m, seq, TOO_LATE, &why)];
                }
                let lane = u32::try_from(partition).map_or(source, |q| lane(q, source));
                let released = self.processor.offer_resolved(ev, resolved, lane, seq, now_ms);
                self.steps(released, Some(seq))
            }
            Routed::Handover { handover, evidence } => {
                debug_handover("read", &handover);
                let records = match self.processor.accept_handover(handover) {
                    None => Vec::new(),
                    Some(h) => {
                        let evidence = evidence.max(self.route_ref().folded_to());
                        vec![self.send("forward", &Routed::Handover { handover: h, evidence })]
                    }
                };
                vec![Step::Done { seq, records }]
            }
            Routed::Progress { sources, .. } => self.progress_read(seq, partition, &sources, now_ms),
        }
    }

    /// A progress record read on routed partition `partition` (message
    /// `seq`): each lane it names moves to where its sender has sent.
    fn progress_read(&mut self, seq: u64, partition: i32, sources: &[SourceProgress], now_ms: u64) -> Vec<Step> {
        let mut steps = Vec::new();
        if let (Ok(q), Some(route)) = (u32::try_from(partition), &mut self.route) {
            let all = route.holds_all(partition);
            let wall_now = crate::clock::unix_ms();
            let mut lanes = Vec::with_capacity(sources.len());
            for p in sources {
                let l = lane(q, p.source);
                route.active.insert(l, p.active);
                let read = p.read_at_ms.map(|w| on_this_clock(w, now_ms, wall_now));
                lanes.push(LaneReport {
                    unread: all,
                    ..LaneReport::sent(l, p.upto, p.active, read)
                });
            }
            let released = self.processor.advance_partitions(&lanes, now_ms);
            steps.extend(self.steps(released, Some(seq)));
        }
        // Done after the outputs it released are attached to it.
        steps.push(Step::Done {
            seq,
            records: Vec::new(),
        });
        steps
    }

    /// A released event whose profile's journey is on another process now:
    /// the record that sends it on.
    pub(super) fn forward(&mut self, processed: &mut Processed) -> Option<OutRecord> {
        let (ev, resolved, lane) = *processed.forward.take()?;
        Some(self.forward_event(ev, resolved, source_of(lane), -1))
    }
}
