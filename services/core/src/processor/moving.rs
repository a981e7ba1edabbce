//! Scale-out: state partitions moving between processes with the consumer
//! group (`docs/scaling.md` section 4).
//!
//! In: the dedupe key of every event applied to a journey (while this
//! process owns only some state partitions), the journeys changelog records
//! of partitions newly assigned here ([`Processor::install_partition`]), and
//! the ownership after an assignment ([`Processor::drop_unowned`]). Out: per
//! journey, the keys of the events applied to it within the dedupe window
//! ([`Processor::applied_of`], written with its changelog record and carried
//! by its handover); the restored journeys, timers and dedupe keys; the
//! numbers of the buffered events of partitions given up (their messages
//! are read again by the new owner). Keeps nothing of its own: the applied
//! keys per journey are kept, and counted, by `applied.rs`.
//!
//! Why the keys travel with the journey: a journey record and the keys of
//! the events in it are written as one record, so whichever of its records
//! a restore finds, an event re-read after it (a routed record past the
//! committed offset, or the same event routed again by a restarted stage 1)
//! is in that journey exactly when its key is there. No marker has to tie
//! journey records and dedupe records together. A handover's own key
//! ([`handover_key`]) is kept the same way, so a handover read twice (a
//! replay, or a restarted sender that hands the same journey over again) is
//! absorbed once.

use std::sync::Arc;

use crate::decide::value::ValueKey;
use crate::hash::HashSet;
use crate::identity::OneId;
use crate::journey::Journey;
use crate::time::EventTime;

use super::applied::AppliedKeys;
use super::moves::EXPIRE_SLICE;
use super::timer_set::Timer;
use super::{Handover, Processor};

/// An applied event's dedupe key with its event time (ms): what a journey
/// record carries.
pub type AppliedKey = (i64, u64);

/// One journeys changelog record read back: One ID, journey (none: only
/// timers), timers homed there, the applied keys.
pub type PartitionRecord = (OneId, Option<Journey>, Vec<Timer>, Vec<AppliedKey>);

/// A journey that left with its state partition: One ID, journey (none:
/// only timers), timers, the applied keys.
pub type GivenUp = (OneId, Option<Arc<Journey>>, Vec<Timer>, Vec<AppliedKey>);

/// What installing a partition's records did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Installed {
    pub journeys: usize,
    pub timers: usize,
    pub keys: usize,
    /// Records of a One ID that is no profile any more (merged away or
    /// forgotten since they were written): not installed, tombstoned at the
    /// next checkpoint.
    pub orphans: usize,
    /// Of those, the ones merged away: handed over to their survivor.
    pub handed_over: usize,
}

/// The dedupe key of a handover: a profile is merged away once, so its One
/// ID names the handover, whoever sends it and however often.
pub fn handover_key(from: &str) -> u64 {
    let h = xxhash_rust::xxh3::xxh3_64(format!("handover {from}").as_bytes());
    // Not an event key's value space in practice (SHA-256 based there).
    h | 1
}

impl Processor {
    /// Starts keeping the applied keys per journey (scale-out stage 2).
    pub(super) fn keep_applied(&mut self) {
        if self.applied.is_none() {
            // No window: nothing expires. Else a list goes at most a
            // thirty-second of the window (about a day of 30) after its
            // newest key left it.
            self.applied = Some(match self.window_ms() {
                0 => AppliedKeys::default(),
                w => AppliedKeys::expiring((w / 32).max(1_000)),
            });
        }
    }

    /// Drops, a slice at a time, what the dedupe window no longer covers:
    /// the moves of scale-out's folds (`moves.rs`) and the applied-key
    /// lists whose newest key is older than the window (their records
    /// carry none of those keys either way). Called as the applied-to time
    /// moves.
    pub(super) fn expire_kept(&mut self) {
        let oldest = self.oldest_kept();
        self.moves.expire(oldest, EXPIRE_SLICE);
        let Some(applied) = self.applied.as_mut() else { return };
        for one_id in applied.expired(oldest, EXPIRE_SLICE) {
            // A record a checkpoint still has to take is taken first, with
            // its keys as of its barrier.
            self.take_applied(&one_id);
        }
    }

    /// An event (or handover) with `key` at `at` was applied to `one_id`.
    pub(super) fn note_applied(&mut self, one_id: &OneId, key: u64, at: EventTime) {
        if self.applied.is_some() {
            self.before_write(one_id);
        }
        let oldest = self.oldest_kept();
        if let Some(applied) = self.applied.as_mut() {
            applied.note(one_id, (at.0, key), oldest);
        }
    }

    /// `state.dedupe_window` in ms (0: no window).
    fn window_ms(&self) -> i64 {
        i64::try_from(self.cfg.dedupe_window.as_millis()).unwrap_or(i64::MAX)
    }

    /// The oldest event time the dedupe window still covers (ms).
    fn oldest_kept(&self) -> i64 {
        self.oldest_kept_at(self.applied_to)
    }

    /// The oldest event time the dedupe window covers when everything up
    /// to `applied_to` is applied (ms).
    fn oldest_kept_at(&self, applied_to: EventTime) -> i64 {
        let window = self.window_ms();
        if window == 0 || applied_to == EventTime::MIN {
            return i64::MIN;
        }
        applied_to.0.saturating_sub(window)
    }

    /// Everything at or before this event time has been applied.
    pub fn applied_to(&self) -> EventTime {
        self.applied_to
    }

    /// The keys of the events applied to `one_id` within the window: what
    /// its changelog record carries.
    pub fn applied_of(&self, one_id: &str) -> Vec<AppliedKey> {
        self.applied_at(one_id, self.applied_to)
    }

    /// How many applied keys the journeys hold in all (counted in the
    /// state's size estimate).
    pub fn applied_keys(&self) -> usize {
        self.applied.as_ref().map_or(0, AppliedKeys::keys)
    }

    /// How many journeys' moves scale-out's folds keep (`moves.rs`).
    pub fn kept_moves(&self) -> usize {
        self.moves.len()
    }

    /// As [`Processor::applied_of`], with the window as of `applied_to`
    /// (a capture's barrier).
    pub(super) fn applied_at(&self, one_id: &str, applied_to: EventTime) -> Vec<AppliedKey> {
        let oldest = self.oldest_kept_at(applied_to);
        self.applied
            .as_ref()
            .and_then(|a| a.get(one_id))
            .map(|k| k.iter().filter(|(t, _)| *t >= oldest).copied().collect())
            .unwrap_or_default()
    }

    /// `from`'s keys go to `to` (a merge on this process).
    pub(super) fn move_applied(&mut self, from: &str, to: &OneId) {
        if self.applied.is_none() {
            return;
        }
        self.before_write(from);
        self.before_write(to);
        if let Some(applied) = self.applied.as_mut() {
            applied.move_to(from, to);
        }
    }

    /// `one_id`'s keys, taken (a handover, a forget).
    pub(super) fn take_applied(&mut self, one_id: &str) -> Vec<AppliedKey> {
        self.before_write(one_id);
        self.applied.as_mut().and_then(|a| a.remove(one_id)).unwrap_or_default()
    }

    /// `from`'s journey, last seen at `last_seen`, is absorbed into `to`:
    /// its handover key stays with `to`'s keys, so a handover of `from`
    /// read (or restored) later is absorbed once.
    pub(super) fn mark_handed_over(&mut self, to: &OneId, from: &str, last_seen: Option<EventTime>) {
        let at = last_seen.map_or(self.applied_to, |t| t.max(self.applied_to));
        self.add_applied(to, vec![(at.0, handover_key(from))]);
    }

    /// Keys that arrived with a handover, absorbed into `to`: remembered
    /// for dedupe and kept with `to`'s journey.
    pub(super) fn add_applied(&mut self, to: &OneId, keys: Vec<AppliedKey>) {
        self.before_write(to);
        for (at, key) in &keys {
            self.seen.insert(*key, EventTime(*at));
        }
        if let Some(applied) = self.applied.as_mut() {
            applied.extend(to, keys);
        }
        self.sync_sizes();
    }

    /// Installs the journeys changelog records of a state partition just
    /// assigned here (the latest record per One ID). A record whose One ID
    /// is no profile in the graph (merged away or forgotten after it was
    /// written) is left out and its record tombstoned by the next
    /// checkpoint; its keys are still remembered (those events were applied).
    ///
    /// `applied_to`: the largest applied-to time of the processes that
    /// wrote the records. Their keys stop at that time's dedupe window, so
    /// this process's applied-to time moves up to it: an event older than
    /// the window is too late here too, not applied a second time.
    pub fn install_partition(&mut self, records: Vec<PartitionRecord>, applied_to: EventTime) -> Installed {
        // Not piecewise: a capture pending is taken whole first.
        self.capture_pending(usize::MAX);
        self.applied_to = self.applied_to.max(applied_to);
        let mut done = Installed::default();
        // The live journeys first: an orphan absorbed into its survivor
        // before the survivor's own record is installed would be lost when
        // that record replaced the journey.
        let (live, orphans): (Vec<_>, Vec<_>) = records
            .into_iter()
            .partition(|r| self.state.identity.with_profile(&r.0, |_| ()).is_some());
        for (one_id, journey, timers, keys) in live {
            self.remember_keys(&keys, &mut done);
            // What is here already came in between the assignment and this
            // install (the identity log folded meanwhile merged a journey
            // of a kept partition into this one): it joins the record.
            if let Some(applied) = self.applied.as_mut() {
                applied.extend(&one_id, keys);
            }
            if let Some(mut j) = journey {
                if let Some(here) = self.state.take_journey(&one_id) {
                    self.tiers.remove(here.revenue);
                    self.value.update(ValueKey::of(&here), None);
                    j.absorb(Arc::unwrap_or_clone(here));
                }
                self.tiers.add(j.revenue);
                self.value.update(None, ValueKey::of(&j));
                self.state.journeys.insert(one_id.clone(), j.into());
                done.journeys += 1;
            }
            done.timers += timers.len();
            for t in timers {
                self.timers.insert(t, &one_id);
            }
        }
        self.state.journeys_loaded();
        for (one_id, journey, timers, keys) in orphans {
            self.remember_keys(&keys, &mut done);
            done.orphans += 1;
            self.state.touched(&one_id);
            // Merged away while the partition was between owners: no one
            // handed it over then. Absorbed here, or sent on, once (the
            // handover key tells one that arrived before).
            if let Some((to, via)) = self.moved_to(&one_id) {
                let h = Handover {
                    to,
                    via,
                    from: one_id,
                    journey: journey.map(Arc::new),
                    timers,
                    applied: keys,
                };
                if let Some(h) = self.accept_handover(h) {
                    self.handovers.push(h);
                }
                done.handed_over += 1;
            }
        }
        self.sync_sizes();
        done
    }

    /// A restored record's keys: its events were applied.
    fn remember_keys(&mut self, keys: &[AppliedKey], done: &mut Installed) {
        for (at, key) in keys {
            self.seen.insert(*key, EventTime(*at));
        }
        done.keys += keys.len();
    }

    /// The profile a merged-away One ID's journey belongs to now, through
    /// the moves this process folded, with an identifier of it.
    fn moved_to(&self, from: &OneId) -> Option<(OneId, crate::ids::IdKey)> {
        let mut one_id = from.clone();
        // A chain of moves is short; the bound only guards against a cycle.
        for _ in 0..64 {
            match self.moves.get(&one_id) {
                Some(Some(to)) => one_id = to.clone(),
                _ => return None,
            }
            if let Some(Some(via)) = self.state.identity.with_profile(&one_id, |p| p.ids().first().cloned()) {
                return Some((one_id, via));
            }
        }
        None
    }

    /// After an assignment: the journeys, timers and applied keys of the
    /// state partitions this process no longer owns go, without a
    /// tombstone (the new owner writes that changelog partition now), and
    /// so do the buffered events that came on a lane `lost` names (a lane
    /// of a partition given up: the new owner reads their messages again).
    /// A buffered event of a lane kept stays, whatever profile it belongs
    /// to now: its message is committed here, so it is applied or sent on
    /// from here. Returns what left, as changelog records (the caller
    /// writes them for the new owner: changes since the last checkpoint
    /// may come from messages of partitions kept here), and the caller's
    /// numbers of the events dropped.
    pub fn drop_unowned(&mut self, lost: impl Fn(u32) -> bool) -> (Vec<GivenUp>, Vec<u64>) {
        self.capture_pending(usize::MAX);
        if self.ownership.is_none() {
            return (Vec::new(), Vec::new());
        }
        let mut gone: Vec<OneId> = self
            .state
            .journeys
            .iter()
            .filter(|e| !self.owns(e.key()))
            .map(|e| e.key().clone())
            .collect();
        gone.extend(self.timers.homes().filter(|h| !self.owns(h)).cloned());
        gone.sort_unstable();
        gone.dedup();
        let mut records = Vec::with_capacity(gone.len());
        for one_id in gone {
            let journey = self.state.journeys.remove(&one_id).and_then(|(_, s)| s.journey());
            if let Some(j) = &journey {
                self.tiers.remove(j.revenue);
                self.value.update(ValueKey::of(j), None);
            }
            let timers = self.timers.of(&one_id).to_vec();
            self.timers.replace(one_id.clone(), Vec::new());
            let keys = self.applied_of(&one_id);
            records.push((one_id, journey, timers, keys));
        }
        self.state.journeys_loaded();
        // Their events' effects go with the journeys: should the partition
        // come back, those events are applied again from its changelog.
        let ownership = self.ownership.clone();
        let owned = |k: &str| ownership.as_ref().is_none_or(|o| o.owns(k));
        let forgotten = self.applied.as_mut().map(|a| a.retain(owned)).unwrap_or_default();
        for (at, key) in forgotten {
            self.seen.remove(key, EventTime(at));
        }
        let dropped: HashSet<u64> = self
            .pending
            .iter()
            .filter(|(_, (lane, _))| lost(*lane))
            .map(|(k, _)| k.3)
            .collect();
        self.pending.retain(|k, _| !dropped.contains(&k.3));
        self.pending_bytes = self.pending.values().map(|(_, e)| e.approx_bytes()).sum();
        self.resolved.retain(|seq, _| !dropped.contains(seq));
        self.sync_sizes();
        let mut seqs: Vec<u64> = dropped.into_iter().collect();
        seqs.sort_unstable();
        (records, seqs)
    }
}
