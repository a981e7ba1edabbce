//! Lanes: the owner's clock keys in scale-out (`docs/scaling.md` section
//! 3), and what a sender says of each of its input partitions. In: a
//! routed partition and an input partition; per own input partition, the
//! end reads and the events routed. Out: one number naming the pair, and
//! back; per own input partition, the [`SourceProgress`] a progress record
//! carries. Keeps, per own input partition ([`Sent`]), how far it was
//! routed and what its last end read said.

use onejourney_core::routed::SourceProgress;
use onejourney_core::EventTime;

/// Sender side: one of this process's input partitions.
#[derive(Default)]
pub(super) struct Sent {
    /// The broker holds records of it this process has not read.
    backlog: bool,
    /// The largest event time of its events routed so far.
    upto: Option<EventTime>,
    /// When the last of them was routed (processing time, ms).
    at_ms: u64,
    /// When its end was last read (processing time, ms).
    read: Option<u64>,
}

impl Sent {
    /// A read of where it ends at the broker, asked at `read_ms`
    /// (processing time): `backlog` when records wait there. Without a
    /// read (`None`: its end not read since this process was given it),
    /// only `backlog` changes.
    pub(super) fn end_read(&mut self, backlog: bool, read_ms: Option<u64>) {
        self.backlog = backlog;
        if let Some(read_ms) = read_ms {
            self.read = Some(self.read.map_or(read_ms, |r| r.max(read_ms)));
        }
    }

    /// An event of it at `at` was routed at `now_ms`.
    pub(super) fn routed(&mut self, at: EventTime, now_ms: u64) {
        self.upto = Some(self.upto.map_or(at, |u| u.max(at)));
        self.at_ms = now_ms;
    }

    /// What the next progress record says of it (input partition
    /// `source`). Active: a backlog, events in the identity round trip
    /// (`in_trip`), an event routed within `idle_ms`, or an end last read
    /// before the last event was routed (as one process holds a partition
    /// whose last read predates its last message, `order.rs`). `now`: the
    /// processing time and the wall clock now; the read goes out on the
    /// wall clock, which the owners share.
    pub(super) fn progress(&self, source: u32, in_trip: bool, now: (u64, u64), idle_ms: u64) -> SourceProgress {
        let (now_ms, wall_now_ms) = now;
        let routed = self.upto.is_some();
        SourceProgress {
            source,
            upto: self.upto.unwrap_or(EventTime::MIN),
            active: self.backlog
                || in_trip
                || (routed && now_ms.saturating_sub(self.at_ms) < idle_ms)
                || (routed && self.read.is_some_and(|r| r < self.at_ms)),
            read_at_ms: self.read.map(|r| on_the_wall(r, now_ms, wall_now_ms)),
        }
    }
}

/// A processing time of this process on the wall clock, given both clocks
/// now: as long before `wall_now_ms` as it was before `now_ms`. The inverse
/// of [`on_this_clock`].
fn on_the_wall(ms: u64, now_ms: u64, wall_now_ms: u64) -> u64 {
    wall_now_ms.saturating_sub(now_ms.saturating_sub(ms))
}

/// A sender's read time (wall clock, ms since the epoch) on this
/// process's processing clock, given both clocks now: as long before
/// `now_ms` as it was before `wall_now_ms` (at `now_ms` when the sender's
/// clock is ahead of this one's). Processes share no processing clock;
/// their wall clocks are assumed to agree to well within
/// `timers.idle_after`.
pub(super) fn on_this_clock(read_wall_ms: u64, now_ms: u64, wall_now_ms: u64) -> u64 {
    now_ms.saturating_sub(wall_now_ms.saturating_sub(read_wall_ms))
}

/// The owner's clock key (the core's "partition") for the events of input
/// partition `source` that arrive on routed partition `q`: a lane. Events of
/// one input partition arrive in order on each routed partition, not across
/// them, so each pair has its own clock, as each channel has in Flink.
/// Sources use 23 bits (`ingest::source_id`), so `q` < 511.
pub fn lane(q: u32, source: u32) -> u32 {
    ((q + 1) << 23) | (source & SOURCE_BITS)
}

/// The input partition of a lane (a plain source number is its own).
pub fn source_of(lane: u32) -> u32 {
    lane & SOURCE_BITS
}

/// The routed partition of a lane (`None`: a plain source number).
pub(super) fn partition_of(lane: u32) -> Option<u32> {
    (lane >> 23).checked_sub(1)
}

const SOURCE_BITS: u32 = (1 << 23) - 1;

/// [`lane`] tells apart up to [`crate::config::MAX_ROUTED_PARTITIONS`]
/// routed partitions: `(q + 1) << 23` fits in 32 bits for q < 511.
const _: () = assert!((crate::config::MAX_ROUTED_PARTITIONS + 1) < (1 << 9));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sender_says_active_until_a_read_after_its_last_event_finds_nothing() {
        let idle = 2_000;
        // Processing time 5,000 is this wall-clock time.
        let at_5s = (5_000, 1_700_000_005_000);
        let mut s = Sent::default();
        assert!(
            !s.progress(3, false, (0, 1_700_000_000_000), idle).active,
            "nothing routed, nothing read"
        );
        s.end_read(false, Some(100));
        s.routed(EventTime(50), 1_000);
        // Past idle_after, but the last read (at 100) predates the event.
        let p = s.progress(3, false, at_5s, idle);
        assert!(p.active);
        assert_eq!(
            (p.source, p.upto, p.read_at_ms),
            (3, EventTime(50), Some(1_700_000_000_100))
        );
        // An older read arriving late does not replace a newer one.
        s.end_read(false, Some(4_000));
        s.end_read(false, Some(3_000));
        let p = s.progress(3, false, at_5s, idle);
        assert!(!p.active, "read after the event, nothing waits");
        assert_eq!(p.read_at_ms, Some(1_700_000_004_000));
        assert!(s.progress(3, true, at_5s, idle).active, "events in the round trip");
        s.end_read(true, Some(4_500));
        assert!(s.progress(3, false, at_5s, idle).active, "a backlog");
        // A partition this process was just given, its end not read yet.
        let mut fresh = Sent::default();
        fresh.end_read(true, None);
        let p = fresh.progress(4, false, at_5s, idle);
        assert!(p.active, "records may wait that it does not know of");
        assert_eq!(p.read_at_ms, None);
        s.end_read(true, None);
        assert_eq!(
            s.progress(3, false, at_5s, idle).read_at_ms,
            Some(1_700_000_004_500),
            "no read keeps the last one"
        );
    }

    #[test]
    fn a_senders_read_time_is_put_on_this_processes_clock() {
        // Read 700 ms ago on the wall clock: 700 ms before now here.
        assert_eq!(on_this_clock(9_300, 50_000, 10_000), 49_300);
        // A sender's clock ahead of this one's: not later than now.
        assert_eq!(on_this_clock(10_500, 50_000, 10_000), 50_000);
        // Before this process's clock began: its start.
        assert_eq!(on_this_clock(0, 500, 10_000), 0);
        // And back: a processing time on the wall clock, and home again.
        assert_eq!(on_the_wall(49_300, 50_000, 10_000), 9_300);
        assert_eq!(
            on_this_clock(on_the_wall(49_300, 50_000, 10_000), 50_000, 10_000),
            49_300
        );
    }

    #[test]
    fn a_lane_names_one_routed_partition_and_one_input_partition() {
        let sources = [0, 1, (1 << 20) | 3, (4 << 20) | 0xF_FFFF];
        let mut seen = std::collections::HashSet::new();
        for q in [0, 1, 31, crate::config::MAX_ROUTED_PARTITIONS - 1] {
            for s in sources {
                let l = lane(q, s);
                assert_eq!(source_of(l), s);
                assert!(!sources.contains(&l), "lane {l} is also an input partition's number");
                assert!(seen.insert(l), "lane ({q}, {s}) named twice");
            }
        }
    }
}
