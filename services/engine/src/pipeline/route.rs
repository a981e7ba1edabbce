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
//! ID); a routed event offered to the journey step, a handover absorbed, or
//! either sent on to the partition that owns its profile now; about once a
//! second a progress record to every routed partition (which input
//! partitions this process is still behind on), so that every owner's
//! watermark waits for them. Keeps the routed messages that wait until this
//! process has folded the identity-log record they were resolved at (in
//! arrival order per partition), how far the identity log is folded, and
//! which input partitions each process said it is behind on.
//!
//! Not built yet (see `docs/scaling.md`): moving a partition's journeys
//! when the group moves the partition (a new owner starts it empty), and
//! restarting in this mode.

use std::collections::VecDeque;

use onejourney_core::hash::HashMap;
use onejourney_core::processor::{state_partition, Ownership, Processed, Resolved, TOO_LATE};
use onejourney_core::routed::Routed;
use onejourney_core::ChannelEvent;

use super::evidence::RoundTrip;
use super::ingest::{Ingest, Origin};
use super::record::{OutRecord, Step};

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
    /// Routed messages waiting for the fold.
    waiting: VecDeque<Held>,
    /// The core's numbers of every input partition of the group: each
    /// holds this owner's watermark back until it delivers or goes idle.
    sources: Vec<u32>,
    /// This process's input partitions and whether each has a backlog,
    /// for the next progress record.
    backlogs: std::collections::BTreeMap<u32, bool>,
    /// When the last progress record went out (processing time).
    progress_ms: u64,
    /// Per (sender, input partition): whether the sender's last progress
    /// record said it is behind, and when that was read (ms).
    remote: HashMap<(u64, u32), (bool, u64)>,
    /// Per input partition, how many of its events this owner holds for
    /// the fold. Either holds the watermark back.
    held: HashMap<u32, usize>,
    /// Whether this process's consumer is behind on a routed partition: an
    /// input partition's events may wait there, so every one is behind.
    catching_up: bool,
}

impl Route {
    pub fn new(topic: String, partitions: u32, sources: Vec<u32>) -> Self {
        Route {
            topic,
            partitions,
            folded: 0,
            waiting: VecDeque::new(),
            sources,
            backlogs: std::collections::BTreeMap::new(),
            progress_ms: 0,
            remote: HashMap::default(),
            held: HashMap::default(),
            catching_up: false,
        }
    }

    /// Tells the processor, for every input partition, whether it holds
    /// the watermark back (after a change that concerns all of them).
    fn refresh(&self, processor: &mut onejourney_core::Processor) {
        for s in &self.sources {
            processor.set_backlog(*s, self.behind(*s));
        }
    }

    /// Whether input partition `source` holds this owner's watermark back.
    fn behind(&self, source: u32) -> bool {
        self.catching_up
            || self.held.get(&source).is_some_and(|n| *n > 0)
            || self.remote.iter().any(|((_, s), (behind, _))| *s == source && *behind)
    }

    /// Counts an event of `source` held for the fold (`+1`) or let go (`-1`).
    fn hold(&mut self, r: &Routed, by: isize) -> Option<u32> {
        let Routed::Event { source, .. } = r else {
            return None;
        };
        let n = self.held.entry(*source).or_default();
        *n = n.saturating_add_signed(by);
        Some(*source)
    }

    /// Whether input partition `source` of this process has a backlog.
    pub fn local_backlog(&mut self, source: u32, backlog: bool) {
        self.backlogs.insert(source, backlog);
    }

    pub fn sources(&self) -> &[u32] {
        &self.sources
    }

    pub fn topic(&self) -> &str {
        &self.topic
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

impl Ingest {
    /// An own event's identity step is done: its journey step goes to the
    /// owner of `resolved`'s partition, as message `seq`'s record.
    pub(super) fn route_event(
        &mut self,
        ev: ChannelEvent,
        resolved: Resolved,
        source: u32,
        evidence: i64,
    ) -> OutRecord {
        let r = Routed::Event {
            ev,
            resolved,
            source,
            evidence,
        };
        self.send("event", &r)
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
        for (seq, ev, resolved, source) in self.processor.take_moved_pending() {
            let r = Routed::Event {
                ev,
                resolved,
                source,
                evidence: offset,
            };
            let records = vec![self.send("forward", &r)];
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
        let mut steps = Vec::new();
        loop {
            let Some(route) = &mut self.route else {
                return steps;
            };
            let folded = route.folded;
            let Some(i) = route.waiting.iter().position(|h| h.record.evidence() < folded) else {
                break;
            };
            // Only the first waiting message of its partition may go.
            let partition = route.waiting[i].partition;
            if route.waiting.iter().take(i).any(|h| h.partition == partition) {
                break;
            }
            let Some(held) = route.waiting.remove(i) else {
                break;
            };
            if let Some(source) = route.hold(&held.record, -1) {
                let behind = route.behind(source);
                self.processor.set_backlog(source, behind);
            }
            self.metrics.evidence.routed_waiting.dec();
            steps.extend(self.apply_routed(held, now_ms));
        }
        steps
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

    /// Whether this process's consumer is behind on an owned routed
    /// partition (checked every tick).
    pub fn routed_backlog(&mut self, behind: bool) {
        let Some(route) = &mut self.route else {
            return;
        };
        if route.catching_up == behind {
            return;
        }
        route.catching_up = behind;
        route.refresh(&mut self.processor);
    }

    /// About once a second: this process's input partitions and their
    /// backlogs, to every routed partition (untracked: the next one
    /// replaces a lost one).
    pub(super) fn progress(&mut self, now_ms: u64) -> Vec<Step> {
        let Some(route) = &mut self.route else {
            return Vec::new();
        };
        if now_ms.saturating_sub(route.progress_ms) < 1000 {
            return Vec::new();
        }
        route.progress_ms = now_ms;
        // A sender silent for 10 s (gone from the group) stops holding.
        let before = route.remote.len();
        route.remote.retain(|_, (_, at)| now_ms.saturating_sub(*at) < 10_000);
        if route.remote.len() != before {
            route.refresh(&mut self.processor);
        }
        if route.backlogs.is_empty() && route.held.is_empty() {
            return Vec::new();
        }
        // Events still in the identity round trip are not routed yet: their
        // partitions count as behind.
        let in_trip = self
            .round_trip
            .as_ref()
            .map(|rt| rt.waiting_sources())
            .unwrap_or_default();
        let mut sources: Vec<(u32, bool)> = route
            .backlogs
            .iter()
            .map(|(s, b)| (*s, *b || in_trip.contains(s)))
            .collect();
        // Routed events held here for the fold may be sent on to another
        // owner: their partitions are behind for every owner (and said to
        // be no longer, once none is held: the count stays, at zero).
        for (s, n) in &route.held {
            match sources.iter_mut().find(|(x, _)| x == s) {
                Some((_, b)) => *b |= *n > 0,
                None => sources.push((*s, *n > 0)),
            }
        }
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
        if let (Routed::Progress { from, sources }, Some(route)) = (&r, &mut self.route) {
            for (source, backlog) in sources {
                route.remote.insert((*from, *source), (*backlog, now_ms));
                self.processor.set_backlog(*source, route.behind(*source));
            }
            return vec![Step::Done {
                seq,
                records: Vec::new(),
            }];
        }
        let Some(route) = &mut self.route else {
            return Vec::new();
        };
        let held = Held {
            seq,
            partition: m.partition,
            offset: m.offset,
            record: r,
        };
        let blocked = route.waiting.iter().any(|h| h.partition == m.partition);
        if blocked || held.record.evidence() >= route.folded {
            if let Some(source) = route.hold(&held.record, 1) {
                self.processor.set_backlog(source, true);
            }
            route.waiting.push_back(held);
            self.metrics.evidence.routed_waiting.inc();
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
                if let Some(now) = self.processor.moved_elsewhere(&resolved) {
                    // Sent on with this process's position: the receiver
                    // must have folded what moved it.
                    let evidence = evidence.max(self.route_ref().folded - 1);
                    let r = Routed::Event {
                        ev,
                        resolved: now,
                        source,
                        evidence,
                    };
                    let records = vec![self.send("forward", &r)];
                    return vec![Step::Done { seq, records }];
                }
                if self.processor.too_late(&ev) {
                    // Behind this owner's window: dead-lettered, as one
                    // process dead-letters it on arrival.
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
                    let why = "occurred_at is older than state.dedupe_window behind the events this owner applied";
                    return vec![self.invalid(&m, seq, TOO_LATE, why)];
                }
                let released = self.processor.offer_resolved(ev, resolved, source, seq, now_ms);
                self.steps(released, Some(seq))
            }
            Routed::Handover { handover, evidence } => {
                let records = match self.processor.accept_handover(handover) {
                    None => Vec::new(),
                    Some(h) => {
                        let evidence = evidence.max(self.route_ref().folded - 1);
                        vec![self.send("forward", &Routed::Handover { handover: h, evidence })]
                    }
                };
                vec![Step::Done { seq, records }]
            }
            Routed::Progress { .. } => vec![Step::Done {
                seq,
                records: Vec::new(),
            }],
        }
    }

    /// A released event whose profile's journey is on another process now:
    /// the record that sends it on.
    pub(super) fn forward(&mut self, processed: &mut Processed) -> Option<OutRecord> {
        let (ev, resolved, source) = *processed.forward.take()?;
        let evidence = self.route.as_ref().map_or(0, |r| r.folded - 1);
        let r = Routed::Event {
            ev,
            resolved,
            source,
            evidence,
        };
        Some(self.send("forward", &r))
    }
}
