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

#[derive(Default)]
pub(crate) struct Checkpoints {
    since: usize,
    barriers: usize,
    /// Records pending at the barriers, and taken since.
    pending: usize,
    records: usize,
    slices: usize,
    longest_barrier: Duration,
    longest_slice: Duration,
}

impl Checkpoints {
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

    pub(crate) fn figure(&self, profiles: usize) -> Figure {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        Figure {
            name: "checkpoint_stall_core_ms",
            value: ms(self.longest_barrier.max(self.longest_slice)),
            unit: "ms",
            note: format!(
                "the core alone during `core`'s one-thread run, {profiles} profiles loaded: the longest of {} barriers \
                 (one every {BARRIER_EVERY} events: {:.2} ms) and of {} slices of {CAPTURE_SLICE} records between events \
                 ({:.2} ms; {} records pending at the barriers, {} taken); nothing runs beside the writer (no flush, no broker), unlike \
                 checkpoint_stall_ms",
                self.barriers,
                ms(self.longest_barrier),
                self.slices,
                ms(self.longest_slice),
                self.pending,
                self.records
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preloaded::Core;
    use onejourney_engine::config::Settings;

    #[test]
    fn every_record_pending_at_a_barrier_is_taken_and_the_longest_pause_is_the_figure() -> anyhow::Result<()> {
        let settings = Settings::defaults()?;
        let (mut core, _) = Core::preload(&settings, 50, None, false)?;
        let backlog = crate::simulate(2 * BARRIER_EVERY + 200, false);
        let events = crate::core_events(&backlog);
        let (_, mut checkpoints) = core.one_thread(&events, 50)?;
        assert_eq!(checkpoints.barriers, 2, "one barrier every {BARRIER_EVERY} events");
        while core.processor.capturing() {
            checkpoints.between_events(&mut core.processor)?;
        }
        assert!(
            checkpoints.pending > CAPTURE_SLICE,
            "changed journeys pending: {}",
            checkpoints.pending
        );
        assert_eq!(
            checkpoints.records, checkpoints.pending,
            "every pending record taken, once"
        );
        assert!(checkpoints.slices >= 2);
        let figure = checkpoints.figure(50);
        assert!(figure.value > 0.0);
        assert_eq!(
            figure.value,
            checkpoints.longest_barrier.max(checkpoints.longest_slice).as_secs_f64() * 1e3
        );
        Ok(())
    }
}
