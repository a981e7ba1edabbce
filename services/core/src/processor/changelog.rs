//! What the changelog holds besides journeys and identity ops: the
//! processor's "globals", each record's timers, and loading a state back
//! from a changelog.
//!
//! In: the live processor ([`Processor::globals`] serialises without
//! copying; [`Processor::take_identity_ops`] hands over the identity ops
//! applied since the last call; `State::take_dirty` the changed records, and
//! [`Processor::timers_of`] the timers each carries besides its journey), or
//! what a restore read back from the broker ([`Processor::restore_changelog`]:
//! the identity ops of every committed checkpoint in order, the latest
//! journey and timers per One ID, the last checkpoint's globals). Out: a
//! processor in the state that wrote them. Keeps nothing.
//!
//! The globals are everything of [`CoreSnapshot`](super::CoreSnapshot) that
//! is neither the identity graph, a journey nor a timer, under the same names:
//! `version`, `namespaces`, `dedupe`, `partitions`, `timers` (empty from
//! version 3), `applied_to`, `tiers`, `propensities`, `one_ids`,
//! `churn_model`, `uplift`, `value`. Changing a field is a bump of
//! [`GLOBALS_VERSION`]. The dedupe memory (8 bytes an
//! event applied within `state.dedupe_window`) is not in the globals: each
//! checkpoint writes the keys inserted since the last one, per bucket
//! ([`Processor::take_dedupe_delta`]); a restore adds the deltas of the
//! chain to the globals ([`CoreGlobals::add_dedupe`]) and drops the buckets
//! out of the window. The timers are not in the globals either: each is
//! written with the record of its home (see `timer_set.rs`) whenever the
//! home's set changes, so a checkpoint's cost follows what changed.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::Serialize;

use super::OpLog;
use crate::decide::learned::ChurnModel;
use crate::decide::propensity::Propensities;
use crate::decide::tiers::ValueTiers;
use crate::decide::uplift::Uplift;
use crate::decide::value::Population;
use crate::hash::HashSet;
use crate::identity::{Derivation, DerivationRecord, IdentityOp, OneId};
use crate::snapshot::Pairs;
use crate::state::Stored;
use crate::time::EventTime;

use super::dedupe::{Dedupe, DedupeDelta};
use super::timer_set::Timer;
use super::{PartitionClock, Processor, RestoreError};

/// The format version of [`CoreGlobals`]. 3: `timers` is empty (each
/// timer goes with its home's journey record, see
/// [`Processor::timers_of`]). 2, still read: every timer in `timers` (and
/// none in the journey records): loaded with
/// [`Processor::load_whole_timers`], which marks every home changed so the
/// next checkpoint writes them. 2: `dedupe` carries the window
/// and no key (the keys go to the changelog as deltas, see
/// [`Processor::take_dedupe_delta`]). 1, still read: every key in `dedupe`.
pub const GLOBALS_VERSION: u32 = 3;
/// The oldest globals version this build reads.
const OLDEST_GLOBALS_VERSION: u32 = 1;

/// Serialises like [`CoreGlobals`], from the live processor.
pub struct CoreGlobalsRef<'a> {
    p: &'a Processor,
}

impl Serialize for CoreGlobalsRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let p = self.p;
        let mut st = s.serialize_struct("CoreGlobals", 12)?;
        st.serialize_field("version", &GLOBALS_VERSION)?;
        st.serialize_field("namespaces", &p.state.identity.namespaces().names())?;
        st.serialize_field("dedupe", &p.seen.without_keys())?;
        st.serialize_field("partitions", &Pairs(&p.clocks_without_pending()))?;
        st.serialize_field("timers", &BTreeSet::<Timer>::new())?;
        st.serialize_field("applied_to", &p.applied_to)?;
        st.serialize_field("tiers", &p.tiers)?;
        // Copied out, so that readers of the models do not wait for the rest.
        let models = p.state.models().clone();
        st.serialize_field("propensities", &models.propensities)?;
        st.serialize_field("one_ids", &p.state.identity.derivation().record())?;
        st.serialize_field("churn_model", &p.state.churn().as_ref().map(|l| &l.model))?;
        st.serialize_field("uplift", &models.uplift)?;
        st.serialize_field("value", &Some(&p.value))?;
        st.end()
    }
}

/// The globals as read back from the changelog.
#[derive(serde::Deserialize)]
pub struct CoreGlobals {
    pub(super) version: u32,
    namespaces: Vec<String>,
    dedupe: Dedupe,
    partitions: Vec<(u32, PartitionClock)>,
    /// Before version 3: every timer (from 3: empty, they are in the
    /// journey records).
    pub(super) timers: BTreeSet<Timer>,
    applied_to: EventTime,
    tiers: ValueTiers,
    propensities: Propensities,
    one_ids: DerivationRecord,
    churn_model: Option<ChurnModel>,
    uplift: Uplift,
    value: Option<Population>,
}

impl CoreGlobals {
    /// The cutoff a restore freezes journeys before, as the engine's scan
    /// would right after it ([`Processor::eviction_cutoff`] of the state
    /// these globals are of); `None` when `after` is zero (freezing off) or
    /// nothing was applied.
    pub fn freeze_cutoff(&self, after: std::time::Duration) -> Option<EventTime> {
        (!after.is_zero() && self.applied_to != EventTime::MIN).then(|| self.applied_to.minus(after))
    }

    /// Adds the dedupe deltas the changelog holds for these globals (every
    /// one in the chain, in any order).
    pub fn add_dedupe(&mut self, delta: impl IntoIterator<Item = (i64, Vec<u64>)>) {
        self.dedupe.add_delta(delta);
    }

    fn check_version(&self) -> Result<(), RestoreError> {
        if (OLDEST_GLOBALS_VERSION..=GLOBALS_VERSION).contains(&self.version) {
            Ok(())
        } else {
            Err(RestoreError::Version(self.version))
        }
    }
}

impl Processor {
    /// The dedupe keys inserted since the last call, per bucket: this
    /// checkpoint's dedupe delta; forgets them.
    /// Also the start of the oldest bucket kept (the ones before it are
    /// gone: their deltas can go from the changelog).
    pub fn take_dedupe_delta(&mut self) -> (DedupeDelta, Option<i64>) {
        let delta = self.seen.take_fresh();
        self.sync_sizes();
        (delta, self.seen.oldest_bucket())
    }

    /// The next [`Processor::take_dedupe_delta`] returns every key: after a
    /// restore from a state whose changelog holds no dedupe delta (written
    /// before they existed), so that the changelog gets them once.
    pub fn mark_dedupe_fresh(&mut self) {
        self.seen.mark_all_fresh();
        self.sync_sizes();
    }

    /// Everything but the graph and the journeys, to serialise as
    /// [`CoreGlobals`] (events waiting for the watermark left out, as in a
    /// snapshot).
    pub fn globals(&self) -> CoreGlobalsRef<'_> {
        CoreGlobalsRef { p: self }
    }

    /// The timers the changelog record of `one_id` carries besides its
    /// journey (a record whose One ID has no journey may carry some: a
    /// profile merged away or forgotten, until they go).
    pub fn timers_of(&self, one_id: &str) -> &[Timer] {
        self.timers.of(one_id)
    }

    /// The identity ops applied since the last call, in order; forgets them.
    pub fn take_identity_ops(&mut self) -> OpLog {
        let ops = std::mem::take(&mut self.identity_log);
        self.sync_sizes();
        ops
    }

    /// Loads a state read back from the changelog into this processor, which
    /// must be new: the graph from `ops` (every committed identity op, in
    /// order), the journeys, the timers of every record (its home), then the
    /// globals. `now_ms` starts every partition's idle clock afresh.
    pub fn restore_changelog<'a>(
        &mut self,
        globals: CoreGlobals,
        ops: impl IntoIterator<Item = &'a IdentityOp, IntoIter: Clone>,
        journeys: impl IntoIterator<Item = (OneId, impl Into<Stored>)>,
        timers: impl IntoIterator<Item = (OneId, Vec<Timer>)>,
        now_ms: u64,
    ) -> Result<(), RestoreError> {
        globals.check_version()?;
        self.check_loadable(&globals.namespaces)?;
        let derivation = Derivation::continuing(&globals.one_ids, self.state.identity.namespaces().identity_key())?;
        let state = Arc::clone(&self.state);
        state.identity.replay(derivation, ops);
        let mut texts = state.identity.reshare();
        for (one_id, j) in journeys {
            state.journeys.insert(texts.one_id(one_id), j.into());
        }
        self.state.journeys_loaded();
        let mut dedupe = globals.dedupe.rewindowed(self.cfg.dedupe_window, globals.applied_to);
        dedupe.expire(globals.applied_to);
        self.load_globals(dedupe, globals.partitions, globals.applied_to, globals.tiers, now_ms);
        if globals.version >= 3 {
            let homes = timers
                .into_iter()
                .map(|(home, t)| self.shared_timers(&mut texts, home, t))
                .collect();
            self.timers.restore(homes);
        } else {
            self.load_whole_timers(&mut texts, globals.timers);
        }
        self.load_models(
            (globals.propensities, globals.uplift),
            globals.churn_model,
            globals.value,
        );
        self.sync_sizes();
        Ok(())
    }

    /// Brings a processor restored from a local snapshot to a later
    /// checkpoint of the same lineage: the identity ops written after the
    /// snapshot (in order), the journeys written after it (their latest
    /// value, or gone), the timers of those records (each record's replace
    /// the snapshot's timers of its home; a record in none of them carries
    /// none), then that checkpoint's globals, which replace the snapshot's.
    /// `now_ms` starts every partition's idle clock afresh.
    pub fn apply_changelog_tail<'a>(
        &mut self,
        globals: CoreGlobals,
        ops: impl IntoIterator<Item = &'a IdentityOp, IntoIter: Clone>,
        journeys: impl IntoIterator<Item = (OneId, impl Into<Stored>)>,
        gone: impl IntoIterator<Item = OneId>,
        timers: impl IntoIterator<Item = (OneId, Vec<Timer>)>,
        now_ms: u64,
    ) -> Result<(), RestoreError> {
        globals.check_version()?;
        let names = self.state.identity.namespaces().names();
        if globals.namespaces != names.as_slice() {
            return Err(RestoreError::Namespaces {
                snapshot: globals.namespaces.join(","),
                configured: names.join(","),
            });
        }
        let derivation = Derivation::continuing(&globals.one_ids, self.state.identity.namespaces().identity_key())?;
        let state = Arc::clone(&self.state);
        state.identity.replay(derivation, ops);
        let mut texts = state.identity.reshare();
        let mut records: HashSet<OneId> = HashSet::default();
        for one_id in gone {
            self.state.journeys.remove(&one_id);
            records.insert(one_id);
        }
        for (one_id, j) in journeys {
            let one_id = self.shared_home(&mut texts, one_id);
            records.insert(one_id.clone());
            // A map keeps the key it has: one the tail's ops made anew
            // (a profile rebuilt) replaces it.
            if state
                .journeys
                .get(&*one_id)
                .is_some_and(|e| !OneId::ptr_eq(e.key(), &one_id))
            {
                state.journeys.remove(&one_id);
            }
            state.journeys.insert(one_id, j.into());
        }
        self.state.journeys_loaded();
        // Version 1 carries every key; 2 the deltas past the snapshot's.
        let dedupe = if globals.version >= 2 {
            let mut d = std::mem::take(&mut self.seen);
            d.add_delta(globals.dedupe.into_delta());
            d
        } else {
            globals.dedupe
        };
        let mut dedupe = dedupe.rewindowed(self.cfg.dedupe_window, globals.applied_to);
        dedupe.expire(globals.applied_to);
        self.load_globals(dedupe, globals.partitions, globals.applied_to, globals.tiers, now_ms);
        if globals.version >= 3 {
            for (home, t) in timers {
                records.remove(&home);
                self.load_timer_home(&mut texts, home, t);
            }
            // Records that carry no timer: their homes have none now.
            for home in records {
                self.load_timer_home(&mut texts, home, Vec::new());
            }
        } else {
            self.load_whole_timers(&mut texts, globals.timers);
        }
        self.load_models(
            (globals.propensities, globals.uplift),
            globals.churn_model,
            globals.value,
        );
        self.sync_sizes();
        Ok(())
    }
}
