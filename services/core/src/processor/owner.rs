//! Scale-out stage 2 (`docs/scaling.md` sections 2 and 3): journeys owned
//! per state partition, and the handover of a journey whose profile was
//! merged into a profile of a partition another process owns.
//!
//! In: which state partitions this process owns ([`Ownership`], from the
//! consumer group's assignment of the routed topic), the merges the identity
//! fold makes (`merge_journeys` asks [`Processor::owns`]), and handovers read
//! from the routed topic. Out: the handovers to send
//! ([`Processor::take_handovers`]): a merged-away journey and its timers,
//! bound for the partition of the profile that absorbed it; a handover that
//! reached a process that no longer owns its profile comes back to be sent on.
//! Keeps the ownership and the handovers not yet taken.
//!
//! Why it is enough: every process folds the same identity log, so every
//! process sees the same merge at the same offset. Only the process that
//! holds the merged-away journey (the owner of its partition) has anything
//! to move; it removes the journey and its timers (the next checkpoint writes
//! the tombstone to its own changelog partition) and sends them to the
//! survivor's partition, whose owner absorbs them as one process absorbs a
//! merged journey (`Journey::absorb`). Without an [`Ownership`] (one
//! process) every partition is owned and nothing is handed over.

use std::sync::Arc;

use crate::decide::value::ValueKey;
use crate::hash::HashSet;
use crate::identity::OneId;
use crate::ids::IdKey;
use crate::journey::Journey;

use super::order::PendingKey;
use super::timer_set::Timer;
use super::{Processor, Resolved};
use crate::event::ChannelEvent;

/// The state partition of a One ID: `xxh3_64(one_id) % partitions`. Stable
/// across Rust releases and processes (the changelog and the routed topic
/// are partitioned by it); `partitions` is fixed for a deployment's life.
pub fn state_partition(one_id: &str, partitions: u32) -> u32 {
    let p = xxhash_rust::xxh3::xxh3_64(one_id.as_bytes()) % u64::from(partitions.max(1));
    // Below `partitions`, a u32.
    u32::try_from(p).unwrap_or(0)
}

/// The state partitions this process owns, of `partitions`.
#[derive(Clone, Debug, PartialEq)]
pub struct Ownership {
    pub partitions: u32,
    pub owned: HashSet<u32>,
}

impl Ownership {
    pub fn owns(&self, one_id: &str) -> bool {
        self.owned.contains(&state_partition(one_id, self.partitions))
    }
}

/// A journey and the timers it armed, on their way to the profile that
/// absorbed theirs.
#[derive(Clone, Debug, PartialEq)]
pub struct Handover {
    /// The profile that absorbed `from`, as the sender's graph had it.
    pub to: OneId,
    /// An identifier of `to` at the merge: a receiver whose graph moved on
    /// (a later merge of `to`) follows it to the profile that holds it now.
    pub via: IdKey,
    /// The profile merged away.
    pub from: OneId,
    /// `None` when only timers move.
    pub journey: Option<Arc<Journey>>,
    pub timers: Vec<Timer>,
    /// The keys of the events applied to the journey (within the dedupe
    /// window): the receiver remembers them, so a re-read event of `from`
    /// is a duplicate there too (`moving.rs`).
    pub applied: Vec<super::AppliedKey>,
}

impl Processor {
    /// Sets the state partitions this process owns; `None`: all of them
    /// (one process). Journeys of partitions no longer owned are not
    /// dropped here (the caller restores and drops on assignment changes).
    pub fn set_ownership(&mut self, ownership: Option<Ownership>) {
        // A capture pending takes its records with the ownership of its
        // barrier: whole, before the ownership changes.
        self.capture_pending(usize::MAX);
        if ownership.is_some() {
            self.keep_applied();
        }
        self.ownership = ownership;
    }

    pub fn ownership(&self) -> Option<&Ownership> {
        self.ownership.as_ref()
    }

    /// Whether this process holds the journey of `one_id`.
    pub fn owns(&self, one_id: &str) -> bool {
        self.ownership.as_ref().is_none_or(|o| o.owns(one_id))
    }

    /// Buffered events whose profile moved to another process since they
    /// were offered (a merge folded meanwhile): taken out of the buffer, to
    /// send on now rather than when the watermark releases them, each with
    /// the caller's number and the partition it came from. Looks only at
    /// the events resolved to a profile a fold moved since the last call;
    /// those that stay are restated to where their profile is now, so a
    /// later move of that one finds them too.
    pub fn take_moved_pending(&mut self) -> Vec<(u64, ChannelEvent, Resolved, u32)> {
        let moved_ids = std::mem::take(&mut self.moved_since_scan);
        if moved_ids.is_empty() || self.resolved.is_empty() {
            return Vec::new();
        }
        let mut moved: Vec<(PendingKey, Resolved)> = Vec::new();
        let mut restated: Vec<(u64, Resolved)> = Vec::new();
        for k in self.pending.keys() {
            let Some(r) = self.resolved.get(&k.3) else { continue };
            if !moved_ids.contains(&r.one_id) {
                continue;
            }
            match self.current(r) {
                Some((one_id, anchor)) if !self.owns(&one_id) => moved.push((k.clone(), Resolved { one_id, anchor })),
                Some((one_id, anchor)) => restated.push((k.3, Resolved { one_id, anchor })),
                None => {}
            }
        }
        for (seq, r) in restated {
            self.resolved.insert(seq, r);
        }
        let mut out = Vec::with_capacity(moved.len());
        for (key, now) in moved {
            self.resolved.remove(&key.3);
            if let Some((source, ev)) = self.pending.remove(&key) {
                self.pending_bytes = self.pending_bytes.saturating_sub(ev.approx_bytes());
                out.push((key.3, ev, now, source));
            }
        }
        out
    }

    /// The handovers made since the last call, to send to the partition of
    /// each one's `to`.
    pub fn take_handovers(&mut self) -> Vec<Handover> {
        std::mem::take(&mut self.handovers)
    }

    /// Called by `merge_journeys` for a merge of `from` into `to` (through
    /// `via`) where this process owns `from` but not `to`: the journey
    /// merged away and the timers it armed leave this process.
    pub(super) fn hand_over(&mut self, from: &OneId, to: &OneId, via: &IdKey, journey: Option<Arc<Journey>>) {
        // Every timer that now follows `to` leaves: `from`'s own, and those
        // of profiles `from` absorbed earlier on this process (homed at
        // them). A scan of the timers, once per merge across processes.
        let state = self.state.clone();
        let taken = self.take_timers(|k| state.identity.one_id_of(k).is_some_and(|o| o == *to));
        let applied = self.take_applied(from);
        if journey.is_none() && taken.is_empty() {
            return;
        }
        let mut timers = Vec::with_capacity(taken.len());
        for (t, home) in taken {
            // Its record no longer carries the timer.
            self.state.touched(&home);
            timers.push(t);
        }
        self.sync_sizes();
        self.handovers.push(Handover {
            to: to.clone(),
            via: via.clone(),
            from: from.clone(),
            journey,
            timers,
            applied,
        });
    }

    /// A handover read from the routed topic: absorbed into the profile
    /// that holds `via` now (or `to`, while it exists). Returned, with its
    /// `to` updated, when this process does not own that profile (send it
    /// on); `None` when absorbed, or when the profile was forgotten since
    /// (nothing to absorb into).
    pub fn accept_handover(&mut self, mut h: Handover) -> Option<Handover> {
        let graph = &self.state.identity;
        let target = graph
            .one_id_of(&h.via)
            .or_else(|| graph.with_profile(&h.to, |_| ()).map(|()| h.to.clone()))?;
        if !self.owns(&target) {
            h.to = target;
            return Some(h);
        }
        // Read before (a replay, or a sender that restarted and handed
        // the same journey over again): absorbed once.
        if self.seen.contains(super::handover_key(&h.from)) {
            return None;
        }
        self.mark_handed_over(&target, &h.from, h.journey.as_ref().and_then(|j| j.last_seen));
        self.add_applied(&target, std::mem::take(&mut h.applied));
        if let Some(gone) = h.journey {
            self.absorb_into(&target, Arc::unwrap_or_clone(gone));
        }
        if !h.timers.is_empty() {
            for t in h.timers {
                self.arm_timer(t, &target);
            }
            self.state.touched(&target);
            self.sync_sizes();
        }
        None
    }

    /// Absorbs a merged-away journey into `to`'s, keeping the value tiers
    /// and the population in step.
    pub(super) fn absorb_into(&mut self, to: &OneId, gone: Journey) {
        let mut taken = self.take_journey(to).unwrap_or_default();
        let survivor = Arc::make_mut(&mut taken);
        self.tiers.remove(survivor.revenue);
        let survivor_before = ValueKey::of(survivor);
        survivor.absorb(gone);
        self.tiers.add(survivor.revenue);
        self.value.update(survivor_before, ValueKey::of(survivor));
        self.put_journey(to.clone(), taken);
    }
}
