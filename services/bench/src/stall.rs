//! The writer's pauses for checkpoints on the core alone:
//! `checkpoint_stall_core_ms`.
//!
//! In: the core's processor while `core`'s one-thread run applies events.
//! Out: the longest time a checkpoint stopped the writer: its barrier (the
//! engine's own, `pipeline::changelog::barrier`) or one slice of the records
//! pending after it (`pipeline::checkpoint::CAPTURE_SLICE` records, one
//! slice between two events, as the engine's poll loop takes them). Keeps
//! the longest barrier and slice, and how many barriers and records.
//!
//! The run's events change journeys of the simulated people, recent and
//! hot in the caches; an interval of the engine (5 minutes) changes
//! journeys all over the state. So before each barrier (untimed) as many
//! preloaded profiles as events since the last one, picked at random,
//! have their journey changed (thawed when frozen and put back, as an
//! event's change does), and the slices take those too.
//!
//! Unlike `checkpoint_stall_ms` (the engine on a broker, at the state
//! figures' size), nothing runs beside the writer here: no flush encoding
//! the records, no librdkafka threads, no broker. On the 2-core machine the
//! engine's longest slice was mostly time waiting for a core (session 30);
//! this is the writer's own work, with every profile of the run loaded, so
//! it reaches 10M profiles, which the state figures do not fit.

use std::time::{Duration, Instant};

use onejourney_core::Processor;
use onejourney_engine::pipeline::changelog;
use onejourney_engine::pipeline::checkpoint::CAPTURE_SLICE;

use crate::Figure;

/// Events between two barriers: a checkpoint interval of the engine
/// (5 minutes by default) holds far more, but the records a slice takes,
/// and so its time, do not depend on how many are pending.
pub(crate) const BARRIER_EVERY: usize = 4_096;

pub(crate) struct Checkpoints {
    /// The preloaded profiles, numbered from 0, and the customer id of each.
    preloaded: usize,
    customer: fn(usize) -> String,
    /// Picks them (xorshift64).
    random: u64,
    /// Preloaded journeys changed before the barriers.
    pub(crate) changed: usize,
    since: usize,
    pub(crate) barriers: usize,
    /// Records pending at the barriers, and taken since.
    pub(crate) pending: usize,
    pub(crate) records: usize,
    pub(crate) slices: usize,
    pub(crate) longest_barrier: Duration,
    pub(crate) longest_slice: Duration,
}

impl Checkpoints {
    /// `preloaded` profiles loaded, profile `i` with the customer id
    /// `customer(i)`.
    pub(crate) fn new(preloaded: usize, customer: fn(usize) -> String) -> Self {
        Checkpoints {
            preloaded,
            customer,
            random: 0x9E37_79B9_7F4A_7C15,
            changed: 0,
            since: 0,
            barriers: 0,
            pending: 0,
            records: 0,
            slices: 0,
            longest_barrier: Duration::ZERO,
            longest_slice: Duration::ZERO,
        }
    }

    /// Changes the journeys of `n` preloaded profiles picked at random, as
    /// events would (untimed).
    fn change_preloaded(&mut self, processor: &Processor, n: usize) {
        let state = processor.state();
        let ns = state.identity.namespaces().clone();
        for _ in 0..n.min(self.preloaded) {
            self.random ^= self.random << 13;
            self.random ^= self.random >> 7;
            self.random ^= self.random << 17;
            let i = usize::try_from(self.random % self.preloaded as u64).unwrap_or(0);
            let Ok(Ok(key)) = ns.normalise("customer_id", &(self.customer)(i)) else {
                continue;
            };
            let Some(one_id) = state.identity.one_id_of(&key) else {
                continue;
            };
            if let Some(journey) = state.journey(&one_id) {
                state.put_journey(one_id, journey);
                self.changed += 1;
            }
        }
    }

    /// Between two events: a slice of the last barrier's records while any
    /// is pending, and a barrier every [`BARRIER_EVERY`] events once none
    /// is (the engine skips a barrier while the last one's flush runs).
    pub(crate) fn between_events(&mut self, processor: &mut Processor) -> anyhow::Result<()> {
        self.since += 1;
        if processor.capturing() {
            let t = Instant::now();
            let left = processor.capture_pending(CAPTURE_SLICE);
            self.longest_slice = self.longest_slice.max(t.elapsed());
            self.slices += 1;
            if left == 0 {
                // The engine hands them to the flush, off the writer.
                self.records += processor.take_captured().map_or(0, |c| c.records.len());
            }
        } else if self.since >= BARRIER_EVERY {
            // No capture is pending: nothing to take before these writes.
            self.change_preloaded(processor, self.since);
            let t = Instant::now();
            let capture = changelog::barrier(processor)?;
            self.longest_barrier = self.longest_barrier.max(t.elapsed());
            self.barriers += 1;
            self.pending += capture.records();
            self.since = 0;
            // The flush's to drop, off the writer.
            drop(capture);
        }
        Ok(())
    }

    /// The figure; none when the run was too short for a barrier.
    pub(crate) fn figure(&self, profiles: usize) -> Option<Figure> {
        if self.barriers == 0 {
            return None;
        }
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        Some(Figure {
            name: "checkpoint_stall_core_ms",
            value: ms(self.longest_barrier.max(self.longest_slice)),
            unit: "ms",
            note: format!(
                "the core alone during `core`'s one-thread run, {profiles} profiles loaded, {} of their journeys changed \
                 (untimed) before the barriers as well as the events': the longest of {} barriers \
                 (one every {BARRIER_EVERY} events: {:.2} ms) and of {} slices of {CAPTURE_SLICE} records between events \
                 ({:.2} ms; {} records pending at the barriers, {} taken); nothing runs beside the writer (no flush, no broker), unlike \
                 checkpoint_stall_ms",
                self.changed,
                self.barriers,
                ms(self.longest_barrier),
                self.slices,
                ms(self.longest_slice),
                self.pending,
                self.records
            ),
        })
    }
}
