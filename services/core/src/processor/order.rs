//! The reorder buffer and the watermark.
//!
//! In: events as they arrive on input partitions, with the caller's
//! processing time; partition assignments and backlog reports. Out:
//! [`Released`] results in event-time order, events interleaved with the
//! timers that come due. Keeps each partition's clock ([`PartitionClock`]),
//! the buffered events and how far event time has been applied.
//!
//! Invariant: nothing at or before the watermark is still buffered, and
//! nothing after it has been applied, except late events (older than what
//! was applied), which are applied at once and counted.

use serde::{Deserialize, Serialize};

use crate::event::{Channel, ChannelEvent};
use crate::hash::HashSet;
use crate::identity::StitchError;
use crate::output::Output;
use crate::time::EventTime;

use super::{Processed, Processor, Resolved};

/// What the watermark released: one buffered event applied (`seq` is the
/// number the caller gave it) or, with `seq: None`, timers that came due.
#[derive(Debug)]
pub struct Released {
    pub seq: Option<u64>,
    pub result: Result<Processed, StitchError>,
}

/// An input partition's progress.
#[derive(Copy, Clone, Debug, Serialize, Deserialize)]
pub struct PartitionClock {
    /// The largest event time seen on it.
    pub(super) max: EventTime,
    /// When its last message arrived (caller's processing time, ms).
    pub(super) last_arrival_ms: u64,
    /// The broker holds messages of this partition not yet offered: it is
    /// not idle, only behind (see [`Processor::set_backlog`]).
    #[serde(default)]
    pub(super) backlog: bool,
    /// When the caller last read where the partition ends at the broker
    /// (processing time, ms; see [`Processor::report_end`]). Not in a
    /// snapshot: a processing time means nothing to the next process.
    #[serde(skip)]
    pub(super) end_read_ms: Option<u64>,
}

impl PartitionClock {
    fn new(max: EventTime, now_ms: u64) -> Self {
        PartitionClock {
            max,
            last_arrival_ms: now_ms,
            backlog: false,
            end_read_ms: None,
        }
    }

    /// Why it holds the watermark back at `now_ms`, if it does: it has a
    /// backlog, it was heard from within `idle_ms`, or its end was last
    /// read before its silence began (then a backlog may wait at the broker
    /// that no read has seen yet), for at most [`FRESH_READ_WAIT_MS`] past
    /// `idle_ms`.
    fn hold(&self, now_ms: u64, idle_ms: u64) -> Option<Hold> {
        let silent = now_ms.saturating_sub(self.last_arrival_ms);
        if self.backlog {
            Some(Hold::Backlog)
        } else if silent < idle_ms {
            Some(Hold::Recent)
        } else if silent < idle_ms.saturating_add(FRESH_READ_WAIT_MS)
            && self.end_read_ms.is_some_and(|read| read < self.last_arrival_ms)
        {
            Some(Hold::UnreadEnd)
        } else {
            None
        }
    }

    fn holds(&self, now_ms: u64, idle_ms: u64) -> bool {
        self.hold(now_ms, idle_ms).is_some()
    }

    /// Its end was read at `read_ms`: the newest read counts.
    fn read_end(&mut self, read_ms: u64) {
        self.end_read_ms = Some(self.end_read_ms.map_or(read_ms, |r| r.max(read_ms)));
    }
}

/// What one progress record says of one lane (scale-out,
/// [`Processor::advance_partitions`]).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct LaneReport {
    /// The lane's clock key.
    pub lane: u32,
    /// Its sender has sent every event it read up to one at this time.
    pub upto: EventTime,
    /// Its sender still reads its input partition: a backlog, events in
    /// flight, or events lately.
    pub active: bool,
    /// The caller has not read everything sent on the lane yet (it is
    /// behind on the routed partition, or routed messages there wait for
    /// the identity log): the lane holds, but this says nothing of its
    /// sender. (Until session 32 it counted as `active`: each time the
    /// caller was briefly behind, every lane's silence began again, and
    /// under load the lanes could hold for good.)
    pub unread: bool,
    /// When its sender last read where the input partition ends, on the
    /// caller's processing clock.
    pub read_ms: Option<u64>,
}

impl LaneReport {
    /// A sender's report, with nothing unread on the caller's side.
    pub fn sent(lane: u32, upto: EventTime, active: bool, read_ms: Option<u64>) -> Self {
        LaneReport {
            lane,
            upto,
            active,
            unread: false,
            read_ms,
        }
    }
}

/// How long past `idle_after` a silent partition waits for an end read
/// made after its silence began. Its caller reads ends about once a second
/// and reports an end it could not read for longer as a backlog (the
/// engine's `ENDS_STALE_AFTER`, 5 s; a scale-out sender says such a
/// partition is active), so a partition still without a fresh read past
/// this has lost the reads themselves (its reader changed, or its reports
/// stopped): it must not hold the watermark back for good.
pub const FRESH_READ_WAIT_MS: u64 = 10_000;

/// Why an input partition (or lane) holds the watermark back
/// ([`Processor::holding`]).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Hold {
    /// The broker holds records of it not yet offered, or (a lane) its
    /// sender is still reading it.
    Backlog,
    /// Heard from within `idle_after`.
    Recent,
    /// Silent past `idle_after`, its end not read since its silence began.
    UnreadEnd,
}

/// How many partitions hold the watermark back, by [`Hold`].
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Holding {
    pub backlog: usize,
    pub recent: usize,
    pub unread_end: usize,
}

impl Holding {
    /// Each count with the name of its reason (a metric's label).
    pub fn by_reason(&self) -> [(&'static str, usize); 3] {
        [
            ("backlog", self.backlog),
            ("recent", self.recent),
            ("unread_end", self.unread_end),
        ]
    }
}

/// Buffered events in the order they are applied: event time, then channel
/// and event id, then arrival (only duplicates tie that far).
pub(super) type PendingKey = (EventTime, Channel, String, u64);

impl Processor {
    /// Events buffered until the watermark passes them.
    pub fn pending_events(&self) -> usize {
        self.pending.len()
    }

    /// The caller's numbers of the buffered events.
    pub fn pending_seqs(&self) -> impl Iterator<Item = u64> + '_ {
        self.pending.keys().map(|k| k.3)
    }

    /// The watermark of one input partition: its largest event time minus the
    /// allowed lateness.
    pub fn partition_watermark(&self, partition: u32) -> EventTime {
        self.partitions
            .get(&partition)
            .map_or(EventTime::MIN, |p| p.max.minus(self.cfg.allowed_lateness))
    }

    /// The watermark at processing time `now_ms`: the smallest partition
    /// watermark among partitions that hold it back (heard from within
    /// `idle_after`, behind, or not known to be caught up: see
    /// [`Processor::report_end`]); when none does, the largest event time
    /// seen (nothing is held back).
    pub fn watermark(&self, now_ms: u64) -> Option<EventTime> {
        let idle_ms = self.idle_ms();
        let active = self
            .partitions
            .values()
            .filter(|p| p.holds(now_ms, idle_ms))
            .map(|p| p.max.minus(self.cfg.allowed_lateness))
            .min();
        active.or_else(|| self.partitions.values().map(|p| p.max).max())
    }

    /// How many input partitions (lanes, in scale-out) hold the watermark
    /// back at `now_ms`, by why: for the metrics, so that an operator sees
    /// what buffered events wait for.
    pub fn holding(&self, now_ms: u64) -> Holding {
        let idle_ms = self.idle_ms();
        let mut h = Holding::default();
        for p in self.partitions.values() {
            match p.hold(now_ms, idle_ms) {
                Some(Hold::Backlog) => h.backlog += 1,
                Some(Hold::Recent) => h.recent += 1,
                Some(Hold::UnreadEnd) => h.unread_end += 1,
                None => {}
            }
        }
        h
    }

    /// After a pause in which every partition went idle, a new burst
    /// usually reaches all of them: give each a fresh grace period, so the
    /// first partition to deliver does not run ahead of the others.
    fn fresh_grace_after_a_pause(&mut self, now_ms: u64) {
        let idle_ms = self.idle_ms();
        if self
            .partitions
            .values()
            .all(|p| now_ms.saturating_sub(p.last_arrival_ms) >= idle_ms)
        {
            for p in self.partitions.values_mut() {
                p.last_arrival_ms = now_ms;
            }
        }
    }

    fn idle_ms(&self) -> u64 {
        u64::try_from(self.cfg.idle_after.as_millis()).unwrap_or(u64::MAX)
    }

    /// Tells whether the broker holds messages of `partition` that were not
    /// offered yet. A partition with a backlog holds the watermark back however
    /// long it stays silent: under load a consumer's prefetch queue can starve
    /// one partition for longer than `idle_after`, and its events would then
    /// arrive late.
    pub fn set_backlog(&mut self, partition: u32, backlog: bool) {
        if let Some(p) = self.partitions.get_mut(&partition) {
            p.backlog = backlog;
        }
    }

    /// [`Processor::set_backlog`] from a read of where `partition` ends at
    /// the broker, made at processing time `read_ms`: `behind` when records
    /// wait there. From its first such report on, the partition counts idle
    /// only on a read made after its silence began (its last event, or the
    /// fresh grace after a pause): a read from before may predate records
    /// published since, and trusting it let the watermark run past them.
    /// (After a broker outage, the first partition to deliver again started
    /// every partition's grace; one that delivered more than `idle_after`
    /// later, its end last read before the burst, counted idle, and its
    /// events came too late: 636 dead-lettered in one run of the
    /// broker-outage test, session 29.)
    pub fn report_end(&mut self, partition: u32, behind: bool, read_ms: u64) {
        if let Some(p) = self.partitions.get_mut(&partition) {
            p.backlog = behind;
            p.read_end(read_ms);
        }
    }

    /// Scale-out: what the processes that read input partitions say of
    /// them, each a [`LaneReport`] read in order with the events sent on
    /// the same lane (a progress record on the routed partition;
    /// `docs/scaling.md`, "Watermarks across processes"). Its sender has
    /// sent every event it read up to one at `upto`, its largest event time
    /// so far: the partition's clock moves there as if that event had
    /// arrived. `active`: it is still reading the partition (a backlog,
    /// events in flight, or events lately), so the partition holds the
    /// watermark back however long this lane stays silent, as
    /// [`Processor::set_backlog`] does for a local one; once not, it goes
    /// idle `idle_after` past the last active report. `read_ms`: when the
    /// sender last read where the partition ends, on this caller's
    /// processing clock (as [`Processor::report_end`]'s): from the first
    /// such report on, the lane counts idle only on a read made after its
    /// silence began (its last active report, or the fresh grace after a
    /// pause); a sender's "not active" on an older read may predate a burst
    /// (`docs/scaling.md`, item 9). `unread`: the caller is behind on the
    /// lane; it holds the lane as a backlog does but is not a sign that its
    /// sender reads it, so it neither restarts the lane's silence nor gives
    /// every lane a fresh grace. Returns what the watermark then releases
    /// (once, for all of them).
    pub fn advance_partitions(&mut self, lanes: &[LaneReport], now_ms: u64) -> Vec<Released> {
        // A report that a lane is read again after a pause starts a burst,
        // as a first event does: the other senders' reports are on their
        // way (without it the first sender to report ran the watermark
        // ahead, and a slower sender's first events came too late:
        // tests/scaleout.rs under load, session 20).
        if lanes.iter().any(|l| l.active) {
            self.fresh_grace_after_a_pause(now_ms);
        }
        for &LaneReport {
            lane,
            upto,
            active,
            unread,
            read_ms,
        } in lanes
        {
            let clock = self
                .partitions
                .entry(lane)
                .or_insert(PartitionClock::new(EventTime::MIN, now_ms));
            clock.max = clock.max.max(upto);
            clock.backlog = active || unread;
            if active {
                // Its silence is counted from the last sign that it is read.
                clock.last_arrival_ms = clock.last_arrival_ms.max(now_ms);
            }
            if let Some(read) = read_ms {
                clock.read_end(read);
            }
        }
        self.release(now_ms)
    }

    /// Keeps the clocks of these input partitions only: partitions no longer
    /// assigned to this process must not hold the watermark back.
    pub fn retain_partitions(&mut self, assigned: &HashSet<u32>) {
        self.partitions.retain(|p, _| assigned.contains(p));
    }

    /// Declares an input partition (when it is assigned): until it delivers an
    /// event or stays silent for `idle_after`, it holds the watermark back, so
    /// a partition consumed late cannot be overtaken by the others.
    pub fn register_partition(&mut self, partition: u32, now_ms: u64) {
        let clock = self
            .partitions
            .entry(partition)
            .or_insert(PartitionClock::new(EventTime::MIN, now_ms));
        // A re-assigned partition gets a fresh grace period.
        clock.last_arrival_ms = clock.last_arrival_ms.max(now_ms);
    }

    /// Buffers one event that arrived on input `partition` at processing
    /// time `now_ms`, and applies whatever the watermark now releases. `seq`
    /// is the caller's number for the event, returned with its result.
    pub fn offer(&mut self, ev: ChannelEvent, partition: u32, seq: u64, now_ms: u64) -> Vec<Released> {
        self.offer_with(ev, None, partition, seq, now_ms)
    }

    /// [`Processor::offer`] for an event whose evidence was folded from the
    /// identity log (scale-out): when released, only its journey step runs,
    /// on the profile `resolved`'s anchor is in by then.
    pub fn offer_resolved(
        &mut self,
        ev: ChannelEvent,
        resolved: Resolved,
        partition: u32,
        seq: u64,
        now_ms: u64,
    ) -> Vec<Released> {
        self.offer_with(ev, Some(resolved), partition, seq, now_ms)
    }

    fn offer_with(
        &mut self,
        ev: ChannelEvent,
        resolved: Option<Resolved>,
        partition: u32,
        seq: u64,
        now_ms: u64,
    ) -> Vec<Released> {
        self.fresh_grace_after_a_pause(now_ms);
        let clock = self
            .partitions
            .entry(partition)
            .or_insert(PartitionClock::new(ev.occurred_at, now_ms));
        clock.max = clock.max.max(ev.occurred_at);
        clock.last_arrival_ms = clock.last_arrival_ms.max(now_ms);
        let mut out = Vec::new();
        if ev.occurred_at < self.applied_to {
            let result = self.apply(&ev, resolved.as_ref(), partition).map(|mut p| {
                p.late = true;
                p
            });
            out.push(Released { seq: Some(seq), result });
        } else {
            let key = (ev.occurred_at, ev.channel, ev.event_id.clone(), seq);
            if let Some(r) = resolved {
                self.resolved.insert(seq, r);
            }
            self.pending_bytes += ev.approx_bytes();
            self.pending.insert(key, (partition, ev));
        }
        out.extend(self.release(now_ms));
        out
    }

    /// Applies what the watermark releases at processing time `now_ms`
    /// without a new event: partitions may have gone idle.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Released> {
        self.release(now_ms)
    }

    /// Applies buffered events and due timers up to the watermark, in
    /// event-time order. Every event offered and every tick ends here, so
    /// this is where the state's size estimate is synced: events applied,
    /// buffered, or released without being applied (a duplicate, too late,
    /// forgotten).
    fn release(&mut self, now_ms: u64) -> Vec<Released> {
        let Some(wm) = self.watermark(now_ms) else {
            self.sync_sizes();
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut timer_outputs = Vec::new();
        let mut fired = 0;
        loop {
            let next_event = self.pending.first_key_value().map(|(k, _)| k.0).filter(|t| *t <= wm);
            let next_timer = self.timers.first_due().filter(|t| *t <= wm);
            match (next_event, next_timer) {
                (None, None) => break,
                // A timer strictly before the next event fires first; on a tie the event goes first.
                (Some(te), Some(tt)) if tt < te => {
                    fired += self.fire_next(&mut timer_outputs);
                }
                (None, Some(_)) => {
                    fired += self.fire_next(&mut timer_outputs);
                }
                (Some(_), _) => {
                    if !timer_outputs.is_empty() || fired > 0 {
                        out.push(self.timer_release(std::mem::take(&mut timer_outputs), fired));
                        fired = 0;
                    }
                    let Some(((at, _, _, seq), (source, ev))) = self.pending.pop_first() else {
                        break;
                    };
                    self.pending_bytes = self.pending_bytes.saturating_sub(ev.approx_bytes());
                    self.applied_to = self.applied_to.max(at);
                    let resolved = if self.resolved.is_empty() {
                        None
                    } else {
                        self.resolved.remove(&seq)
                    };
                    out.push(Released {
                        seq: Some(seq),
                        result: self.apply(&ev, resolved.as_ref(), source),
                    });
                }
            }
        }
        if !timer_outputs.is_empty() || fired > 0 {
            out.push(self.timer_release(timer_outputs, fired));
        }
        self.applied_to = self.applied_to.max(wm);
        self.expire_kept();
        self.share_now();
        self.sync_sizes();
        out
    }

    fn timer_release(&mut self, outputs: Vec<Output>, fired: usize) -> Released {
        Released {
            seq: None,
            result: Ok(Processed {
                outputs,
                timers_fired: fired,
                suppressed: std::mem::take(&mut self.suppressed),
                ..Processed::default()
            }),
        }
    }

    /// Offers `ev` and applies what that releases at once, as one result: the
    /// event's own outcome plus every output released with it. For callers
    /// without processing time (tests, tools): partitions never go idle.
    pub fn process(&mut self, ev: &ChannelEvent, partition: u32) -> Result<Processed, StitchError> {
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut merged = Processed::default();
        let mut own = None;
        for r in self.offer(ev.clone(), partition, seq, 0) {
            let p = r.result?;
            if r.seq == Some(seq) {
                own = Some((
                    p.one_id.clone(),
                    p.duplicate,
                    p.late,
                    p.too_late,
                    p.merges,
                    p.rejected.clone(),
                ));
            }
            merged.outputs.extend(p.outputs);
            merged.timers_fired += p.timers_fired;
            merged.suppressed.extend(p.suppressed);
        }
        if let Some((one_id, duplicate, late, too_late, merges, rejected)) = own {
            merged.one_id = one_id;
            merged.duplicate = duplicate;
            merged.late = late;
            merged.too_late = too_late;
            merged.merges = merges;
            merged.rejected = rejected;
        }
        Ok(merged)
    }
}
