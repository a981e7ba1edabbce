//! Capture on first write: a checkpoint's journey records taken as they
//! were at its barrier, without visiting each one at the barrier.
//!
//! In: the barrier ([`Processor::begin_capture`]: the One IDs whose record
//! changed since the last checkpoint become *pending*, the applied-to time
//! of the barrier is kept), every change the writer makes to a record
//! afterwards (its journey, the timers homed there, its applied keys: each
//! change calls [`Processor::before_write`] first), and the poll loop's
//! slices ([`Processor::capture_pending`]). Out: per pending One ID its
//! [`Record`] as at the barrier ([`Processor::take_captured`]). Keeps the
//! pending One IDs and the records taken so far.
//!
//! Why: taking every changed record at the barrier costs about a
//! microsecond a record (a lookup in the journeys, one in the timers, a
//! reference count: cache misses), and the writer waited for all of them:
//! 43-94 ms for about 54,000 records in `make bench`'s state run at 1M
//! profiles (`docs/benchmarks.md`, session 24), growing with the change per
//! interval. Flink's
//! copy-on-write snapshots do the same: a record is copied before its first
//! write after the barrier, the rest later. Here the barrier moves the
//! changed set (constant time); a write to a pending record takes the whole
//! record first (none of its parts changed since the barrier, since this is
//! its first write); the poll loop takes the rest about a thousand at a time
//! between messages.
//!
//! Invariant: while a capture is pending, no part of a record changes
//! without [`Processor::before_write`] of its One ID first. The mutators of
//! the journeys ([`Processor::take_journey`] and its siblings) and of the
//! timers ([`Processor::arm_timer`] and its siblings) below call it; the
//! applied keys' mutators in `moving.rs` call it; a restore and an
//! ownership change run with no capture pending (the engine finishes a
//! capture first, and `set_ownership`, `install_partition` and
//! `drop_unowned` take a pending one whole themselves). `capture_tests.rs` checks it against the records taken at
//! the barrier, for random streams with merges, forgets, outcomes, timers
//! and evictions.

use std::sync::Arc;

use crate::dirty::DirtySet;
use crate::identity::OneId;
use crate::journey::Journey;
use crate::time::EventTime;

use super::moving::AppliedKey;
use super::timer_set::Timer;
use super::Processor;

/// One changelog record as at a barrier: its One ID, its journey (none: it
/// went), the timers homed there and (scale-out) the applied keys with the
/// applied-to time they stop at.
pub type Record = (OneId, Option<Arc<Journey>>, Vec<Timer>, (Vec<AppliedKey>, EventTime));

/// A capture begun at a barrier and not finished.
pub(super) struct Pending {
    /// Changed before the barrier, not taken yet.
    ids: DirtySet,
    applied_to: EventTime,
    /// Taken: by a first write, or by a slice.
    taken: Vec<Record>,
    /// Of those, taken by a first write (for the metrics).
    by_write: usize,
}

/// What a finished capture holds.
#[derive(Debug, Default)]
pub struct Captured {
    pub records: Vec<Record>,
    /// Taken before the writer's first change to them (the rest by slices).
    pub by_write: usize,
}

impl Processor {
    /// The barrier: the records changed since the last checkpoint become
    /// pending, to be taken as they are now (constant time: the changed set
    /// is moved, not visited). Returns how many. A capture still pending is
    /// finished first (its records stay in [`Processor::take_captured`]).
    pub fn begin_capture(&mut self) -> usize {
        if self.capture.is_some() {
            self.capture_pending(usize::MAX);
        }
        let ids = self.state.take_dirty_unordered();
        let n = ids.len();
        let mut taken = match self.capture.take() {
            Some(p) => p.taken,
            None => Vec::new(),
        };
        taken.reserve(n);
        self.capture = Some(Pending {
            ids,
            applied_to: self.applied_to,
            taken,
            by_write: 0,
        });
        n
    }

    /// Whether a capture has records still to take.
    pub fn capture_pending_count(&self) -> usize {
        self.capture.as_ref().map_or(0, |p| p.ids.len())
    }

    /// Whether a capture was begun and not taken.
    pub fn capturing(&self) -> bool {
        self.capture.is_some()
    }

    /// Takes up to `n` pending records as they are (none of them changed
    /// since the barrier); returns how many are still pending.
    pub fn capture_pending(&mut self, n: usize) -> usize {
        let Some(mut p) = self.capture.take() else {
            return 0;
        };
        for one_id in p.ids.take_some(n) {
            if let Some(r) = self.record_at(one_id, p.applied_to) {
                p.taken.push(r);
            }
        }
        let left = p.ids.len();
        self.capture = Some(p);
        left
    }

    /// The records of a capture once none is pending (`None` while some
    /// are, or when none was begun); the capture ends.
    pub fn take_captured(&mut self) -> Option<Captured> {
        if self.capture.as_ref().is_some_and(|p| !p.ids.is_empty()) {
            return None;
        }
        self.capture.take().map(|p| Captured {
            records: p.taken,
            by_write: p.by_write,
        })
    }

    /// Before any part of `one_id`'s record changes: if it is pending,
    /// take it now, as it was at the barrier.
    pub(super) fn before_write(&mut self, one_id: &str) {
        let Some(p) = self.capture.as_mut() else { return };
        let Some(id) = p.ids.take(one_id) else { return };
        let applied_to = p.applied_to;
        let record = self.record_at(id, applied_to);
        if let (Some(p), Some(r)) = (self.capture.as_mut(), record) {
            p.taken.push(r);
            p.by_write += 1;
        }
    }

    /// `one_id`'s record as it is now, with the applied keys as of
    /// `applied_to`; `None` for a record of a partition this process does
    /// not own (scale-out: the new owner writes it).
    fn record_at(&self, one_id: OneId, applied_to: EventTime) -> Option<Record> {
        if !self.owns(&one_id) {
            return None;
        }
        let journey = self.state.journey(&one_id);
        let timers = self.timers.of(&one_id).to_vec();
        let applied = self.applied_at(&one_id, applied_to);
        Some((one_id, journey, timers, (applied, applied_to)))
    }

    /// Takes a journey out to change it ([`crate::State::take_journey`]).
    pub(super) fn take_journey(&mut self, one_id: &str) -> Option<Arc<Journey>> {
        self.before_write(one_id);
        self.state.take_journey(one_id)
    }

    /// Puts a journey (back) ([`crate::State::put_journey`]).
    pub(super) fn put_journey(&mut self, one_id: OneId, j: Arc<Journey>) {
        self.before_write(&one_id);
        self.state.put_journey(one_id, j);
    }

    /// Removes a journey for good ([`crate::State::remove_journey`]).
    pub(super) fn remove_journey(&mut self, one_id: &str) -> Option<Arc<Journey>> {
        self.before_write(one_id);
        self.state.remove_journey(one_id)
    }

    /// Changes a journey in place ([`crate::State::update_journey`]).
    pub(super) fn update_journey<R>(&mut self, one_id: &str, f: impl FnOnce(&mut Journey) -> Option<R>) -> Option<R> {
        self.before_write(one_id);
        self.state.update_journey(one_id, f)
    }

    /// Arms a timer homed at `home` ([`super::timer_set::TimerSet::insert`]).
    pub(super) fn arm_timer(&mut self, t: Timer, home: &OneId) -> bool {
        self.before_write(home);
        self.timers.insert(t, home)
    }

    /// Takes the earliest timer, with its home.
    pub(super) fn pop_timer(&mut self) -> Option<(Timer, OneId)> {
        if let Some(home) = self.timers.first_home() {
            self.before_write(&home);
        }
        self.timers.pop_first()
    }

    /// Removes and returns every timer whose identifier `gone` matches,
    /// each with its home.
    pub(super) fn take_timers(&mut self, gone: impl Fn(&crate::ids::IdKey) -> bool) -> Vec<(Timer, OneId)> {
        let listed = self.timers.matching(gone);
        if self.capture.is_some() {
            for (_, home) in &listed {
                self.before_write(home);
            }
        }
        self.timers.remove_listed(&listed);
        listed
    }
}
