//! The state snapshot format.
//!
//! In: the live processor ([`Processor::snapshot`] serialises it without
//! copying) or a snapshot read back ([`Processor::restore`]). Out: the
//! [`CoreSnapshot`] fields, in this order and under these names: `version`,
//! `namespaces`, `identity`, `journeys`, `seen`, `partitions`, `timers`,
//! `applied_to`, `tiers`, `propensities`, `one_ids`, `dedupe`, `churn_model`,
//! `uplift`, `value`, `timer_homes`, `journey_dict`. Keeps nothing; the engine writes and
//! reads the bytes.
//!
//! Compatibility: changing a field's name, order or type here, or in any
//! struct it holds, changes the format: bump [`SNAPSHOT_VERSION`] and say so.
//! Adding a field at the end with a default is not a change: older
//! snapshots read it as its default (`uplift`, and the per-channel counts in
//! `propensities`, came so).

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::Serialize;

use crate::decide::learned::ChurnModel;
use crate::decide::propensity::Propensities;
use crate::decide::tiers::ValueTiers;
use crate::decide::uplift::Uplift;
use crate::decide::value::{Population, ValueKey};
use crate::hash::{HashMap, HashSet};
use crate::identity::{Derivation, DerivationError, DerivationRecord, IdentitySnapshot, OneId, Sharer};
use crate::intern::TextCounts;
use crate::snapshot::{ByteBuf, Bytes, Pairs};
use crate::state::{stored, Stored};
use crate::time::EventTime;

use super::dedupe::Dedupe;
use super::timer_set::{Timer, TimerSet};
use super::write_order::{ByProfile, TimerHomes};
use super::{PartitionClock, Processor};

/// The home of timers restored from a format that did not keep homes whose
/// identifier is in no profile (see [`Processor::load_whole_timers`]): not a
/// One ID, so no journey ever has it.
pub const UNPROFILED_HOME: &str = "timers-without-profile";

/// The format version of [`CoreSnapshot`]. 7: the texts (One IDs,
/// identifier values, event ids) are a text table (`intern.rs`): each
/// allocation written in full once, where the writer first meets it, and
/// as its number after; `texts` at the end holds how many of each kind were
/// written in full, which the reader checks. The same state as 6 in a
/// smaller file that reads without a lookup per text; 6 and older are read
/// as before (texts shared by content). 6: a frozen journey is written
/// as its frozen bytes (a `bin`, see `state/stored.rs`) where a live one is
/// the journey, and `journey_dict` carries the zstd dictionary they were
/// compressed with; so neither a graceful stop's snapshot nor its restore
/// decodes the idle customers' journeys, and a restore at 10M profiles
/// holds them frozen instead of about 30 GB live. Version 5 and older
/// are read as before (every journey live; the engine's scan freezes the
/// idle ones). 5: the timers are in
/// `timer_homes`, each under its home (the One ID whose changelog record
/// carries it, see `timer_set.rs`); `timers` is written empty. Version 4
/// and older are read: their `timers` are homed with the profile their
/// identifier is in, and every home is marked changed, so that the next
/// checkpoint writes them to the changelog with their journeys (the
/// changelog that build wrote carries them in its globals only).
/// 4: the dedupe memory is kept
/// for an event-time window, in `dedupe` (buckets by event time; see
/// `dedupe.rs`); `seen` is written empty. Versions 2 and 3 are still read:
/// their flat `seen` set is kept as of the snapshot's applied-to time, so it
/// goes one window later. 4 also adds, at the end, the learned churn model
/// (`churn_model`) and each journey's `churn_examples`; versions 2 and 3 are
/// read with an untrained model and no examples. 3: `one_ids` records how the
/// graph derives One IDs and suppression entries (keyed, see
/// `identity/derive.rs`). Version 2 is still read: it has no `one_ids`, and
/// its graph keeps the plain SHA-256 derivation it was built with, so its
/// customers keep their One IDs and its suppressions keep matching. Version
/// 2's dedupe set's keys are SHA-256 based (see `dedupe_key`) like 3's;
/// version 1 used std's `DefaultHasher`, whose keys a rebuilt binary may not
/// reproduce, so it is refused. Added at the end without a version bump
/// (absent: the default): `value`, the RFM and lifetime-value population
/// (rebuilt from the journeys when absent), and each journey's `rfm` and `clv`.
pub const SNAPSHOT_VERSION: u32 = 7;

/// The oldest format version this build reads.
pub const OLDEST_READ_VERSION: u32 = 2;

/// Serialises like [`CoreSnapshot`], from the live state (see [`Processor::snapshot`]).
pub struct CoreSnapshotRef<'a> {
    p: &'a Processor,
    /// Format 7's text table; without, format 6 (every text in full; tests
    /// of the older format's reading).
    table: bool,
}

impl Serialize for CoreSnapshotRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.table {
            crate::intern::write_scope(|| self.write(s))
        } else {
            self.write(s)
        }
    }
}

impl CoreSnapshotRef<'_> {
    fn write<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let p = self.p;
        let (version, fields) = if self.table { (SNAPSHOT_VERSION, 18) } else { (6, 17) };
        let mut st = s.serialize_struct("CoreSnapshot", fields)?;
        st.serialize_field("version", &version)?;
        st.serialize_field("namespaces", &p.state.identity.namespaces().names())?;
        st.serialize_field("identity", &p.state.identity.snapshot())?;
        let identity = &p.state.identity;
        let journeys = ByProfile {
            identity,
            map: &p.state.journeys,
        };
        st.serialize_field("journeys", &journeys)?;
        st.serialize_field("seen", &HashSet::<u64>::default())?;
        st.serialize_field("partitions", &Pairs(&p.clocks_without_pending()))?;
        st.serialize_field("timers", &BTreeSet::<Timer>::new())?;
        st.serialize_field("applied_to", &p.applied_to)?;
        st.serialize_field("tiers", &p.tiers)?;
        // Copied out, so that readers of the models do not wait for the rest.
        let models = p.state.models().clone();
        st.serialize_field("propensities", &models.propensities)?;
        st.serialize_field("one_ids", &p.state.identity.derivation().record())?;
        st.serialize_field("dedupe", &p.seen)?;
        st.serialize_field("churn_model", &p.state.churn().as_ref().map(|l| &l.model))?;
        st.serialize_field("uplift", &models.uplift)?;
        st.serialize_field("value", &p.value)?;
        let homes = TimerHomes {
            identity,
            timers: &p.timers,
        };
        st.serialize_field("timer_homes", &homes)?;
        st.serialize_field("journey_dict", &Bytes(stored::dictionary()))?;
        if self.table {
            st.serialize_field("texts", &crate::intern::written())?;
        }
        st.end()
    }
}

/// A state snapshot as read back. Decoding one shares its texts (see
/// `intern.rs`): each One ID, identifier and event id is read into one
/// allocation, as the state that wrote it held them.
#[derive(serde::Deserialize)]
#[serde(remote = "Self")]
pub struct CoreSnapshot {
    /// Read first: from format 7 on, the texts after it are a text table.
    #[serde(deserialize_with = "crate::intern::version")]
    pub(super) version: u32,
    namespaces: Vec<String>,
    identity: IdentitySnapshot,
    /// Live or, from format 6, frozen.
    #[serde(deserialize_with = "keyed")]
    pub(super) journeys: Vec<(OneId, Stored)>,
    seen: HashSet<u64>,
    partitions: Vec<(u32, PartitionClock)>,
    /// Before format 5: every timer (after: empty, see `timer_homes`).
    pub(super) timers: BTreeSet<Timer>,
    applied_to: EventTime,
    tiers: ValueTiers,
    propensities: Propensities,
    /// Absent in format 2: its plain SHA-256 derivation (the default).
    #[serde(default)]
    one_ids: DerivationRecord,
    /// Absent before format 4: the keys are in `seen`.
    #[serde(default)]
    dedupe: Dedupe,
    /// Absent before format 4: an untrained model.
    #[serde(default)]
    churn_model: Option<ChurnModel>,
    /// Absent before contract 1.4: no decision measured yet.
    #[serde(default)]
    uplift: Uplift,
    /// Absent in snapshots written before it existed: rebuilt from the journeys.
    #[serde(default)]
    value: Option<Population>,
    /// From format 5: every timer, under its home.
    #[serde(default, deserialize_with = "keyed")]
    pub(super) timer_homes: Vec<(OneId, Vec<Timer>)>,
    /// From format 6: the dictionary the frozen journeys were compressed
    /// with (absent before: no journey is frozen).
    #[serde(default)]
    pub(super) journey_dict: Option<ByteBuf>,
    /// From format 7: how many texts of each kind were written in full.
    #[serde(default)]
    texts: Option<TextCounts>,
}

impl<'de> serde::Deserialize<'de> for CoreSnapshot {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::intern::scope(|| {
            let snap = CoreSnapshot::deserialize(d)?;
            crate::intern::end_table(snap.texts)?;
            Ok(snap)
        })
    }
}

/// Pairs keyed by a One ID, the One ID shared (`intern.rs`); the vector is
/// reused in place.
fn keyed<'de, D: serde::Deserializer<'de>, T: serde::Deserialize<'de>>(d: D) -> Result<Vec<(OneId, T)>, D::Error> {
    let pairs: Vec<(crate::intern::OneIdText, T)> = crate::snapshot::presized(d)?;
    Ok(pairs.into_iter().map(|(k, v)| (k.0, v)).collect())
}

impl CoreSnapshot {
    pub fn profiles(&self) -> usize {
        self.identity.profile_count()
    }
}

#[cfg(test)]
impl CoreSnapshot {
    /// Its profiles' One IDs, in the order it holds them.
    pub(super) fn profile_one_ids(&self) -> Vec<OneId> {
        self.identity.profile_one_ids()
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RestoreError {
    #[error(
        "snapshot format version {0} is not one this build reads ({OLDEST_READ_VERSION} to {SNAPSHOT_VERSION}); \
         run the version that wrote it, or start once with `onejourney run --rebuild` to rebuild the state \
         from the input topics"
    )]
    Version(u32),
    #[error(
        "the identifier namespace table changed since the snapshot (snapshot: {snapshot}; configured: {configured}); \
         restore the table, or move the state directory away to rebuild state from the input topics"
    )]
    Namespaces { snapshot: String, configured: String },
    #[error("state is not empty: a snapshot is restored into a new processor only")]
    NotEmpty,
    #[error("{0}")]
    Derivation(#[from] DerivationError),
    #[error(
        "the snapshot's frozen journeys do not decode ({0}); move the state directory away to restore the state \
         from the changelog on the broker, or start once with `onejourney run --rebuild`"
    )]
    Frozen(String),
}

impl Processor {
    /// The value population from the journeys in the state (snapshots
    /// written before it was kept).
    pub(super) fn rebuilt_population(&self) -> Population {
        let mut pop = Population::default();
        for entry in self.state.journeys.iter() {
            if let Some(j) = entry.value().journey() {
                pop.update(None, ValueKey::of(&j));
            }
        }
        pop
    }

    /// Everything the processor and its state hold except events waiting for
    /// the watermark, to serialise as a [`CoreSnapshot`]. The caller resumes
    /// each input partition at its first message not fully processed, so the
    /// waiting events are read again (and the applied ones after them are
    /// recognised as duplicates).
    pub fn snapshot(&self) -> CoreSnapshotRef<'_> {
        CoreSnapshotRef { p: self, table: true }
    }

    /// The snapshot in format 6, every text in full: what the build before
    /// the text table wrote.
    #[cfg(test)]
    pub(crate) fn snapshot_v6(&self) -> CoreSnapshotRef<'_> {
        CoreSnapshotRef { p: self, table: false }
    }

    /// The partition clocks as if the buffered events had not arrived: a
    /// snapshot leaves them out (they are read again after a restore), so
    /// their partitions must not count them as seen, or the watermark would
    /// pass them before they come back.
    pub(super) fn clocks_without_pending(&self) -> HashMap<u32, PartitionClock> {
        let mut clocks = self.partitions.clone();
        for ((at, ..), (partition, _)) in &self.pending {
            if let Some(c) = clocks.get_mut(partition) {
                c.max = c.max.min(EventTime(at.0.saturating_sub(1)));
            }
        }
        clocks
    }

    /// Loads a snapshot into this processor, which must be new (empty state).
    /// `now_ms` starts every partition's idle clock afresh.
    pub fn restore(&mut self, snap: CoreSnapshot, now_ms: u64) -> Result<(), RestoreError> {
        if !(OLDEST_READ_VERSION..=SNAPSHOT_VERSION).contains(&snap.version) {
            return Err(RestoreError::Version(snap.version));
        }
        self.check_loadable(&snap.namespaces)?;
        let derivation = Derivation::continuing(&snap.one_ids, self.state.identity.namespaces().identity_key())?;
        // Decoding shared the snapshot's texts (`intern.rs`): the maps
        // take them as they are. The graph and the journeys are maps apart:
        // each is filled on a thread of its own.
        let (state, journeys, dict) = (&self.state, snap.journeys, snap.journey_dict);
        let identity = snap.identity;
        std::thread::scope(|s| {
            let other = s.spawn(move || restore_journeys(state, journeys, dict));
            state.identity.restore(identity, derivation);
            other.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })?;
        let dedupe = if snap.version < 4 {
            Dedupe::from_flat(self.cfg.dedupe_window, snap.seen, snap.applied_to)
        } else {
            snap.dedupe.rewindowed(self.cfg.dedupe_window, snap.applied_to)
        };
        self.load_globals(dedupe, snap.partitions, snap.applied_to, snap.tiers, now_ms);
        if snap.version >= 5 {
            self.timers.restore(snap.timer_homes);
        } else {
            let state = Arc::clone(&self.state);
            self.load_whole_timers(&mut state.identity.sharer(), snap.timers);
        }
        self.load_models((snap.propensities, snap.uplift), snap.churn_model, snap.value);
        self.sync_sizes();
        Ok(())
    }

    /// A state written under `namespaces` may be loaded into this processor:
    /// the same namespace table, and nothing loaded or processed yet.
    pub(super) fn check_loadable(&self, namespaces: &[String]) -> Result<(), RestoreError> {
        let names = self.state.identity.namespaces().names();
        if namespaces != names.as_slice() {
            return Err(RestoreError::Namespaces {
                snapshot: namespaces.join(","),
                configured: names.join(","),
            });
        }
        if self.state.identity.profile_count() > 0 || !self.state.journeys.is_empty() || !self.pending.is_empty() {
            return Err(RestoreError::NotEmpty);
        }
        Ok(())
    }

    /// Loads timers written whole, without their homes (a snapshot before
    /// format 5, globals before version 3), into a processor whose graph is
    /// loaded: each is homed with the profile its identifier is in now (one
    /// in no profile, which fires nothing while it stays so, at
    /// [`UNPROFILED_HOME`]), and every home is marked changed, so that the
    /// next checkpoint writes them all to the changelog with their records.
    pub(super) fn load_whole_timers(&mut self, texts: &mut Sharer<'_>, timers: BTreeSet<Timer>) {
        self.timers = TimerSet::default();
        let unprofiled: OneId = OneId::from(UNPROFILED_HOME);
        for t in timers {
            let home = self
                .state
                .identity
                .one_id_of(&t.2)
                .unwrap_or_else(|| unprofiled.clone());
            let (at, kind, key) = t;
            self.timers.insert((at, kind, texts.key(key)), &home);
        }
        for home in self.timers.homes() {
            self.state.touched(home);
        }
    }

    /// Loads the timers of one home (replacing any it had), their texts
    /// shared with the graph's.
    pub(super) fn load_timer_home(&mut self, texts: &mut Sharer<'_>, home: OneId, timers: Vec<Timer>) {
        let (home, timers) = self.shared_timers(texts, home, timers);
        self.timers.replace(home, timers);
    }

    /// `home` and its `timers`, their texts shared with the graph's.
    pub(super) fn shared_timers(&self, texts: &mut Sharer<'_>, home: OneId, timers: Vec<Timer>) -> (OneId, Vec<Timer>) {
        let timers = timers
            .into_iter()
            .map(|(at, kind, key)| (at, kind, texts.key(key)))
            .collect();
        (self.shared_home(texts, home), timers)
    }

    /// The One ID as the state holds it: the profile's, else the journey's
    /// key (a profile merged away), else as `texts` first met it.
    pub(super) fn shared_home(&self, texts: &mut Sharer<'_>, one_id: OneId) -> OneId {
        if let Some(p) = texts.profiled(&one_id) {
            return p;
        }
        match self.state.journeys.get(&*one_id) {
            Some(j) => j.key().clone(),
            None => texts.one_id(one_id),
        }
    }

    /// Loads what is neither graph, journey, timer nor model (a snapshot's
    /// or the changelog's globals).
    pub(super) fn load_globals(
        &mut self,
        dedupe: Dedupe,
        partitions: Vec<(u32, PartitionClock)>,
        applied_to: EventTime,
        tiers: ValueTiers,
        now_ms: u64,
    ) {
        self.seen = dedupe;
        self.sync_sizes();
        self.partitions = partitions
            .into_iter()
            .map(|(p, c)| {
                (
                    p,
                    // Behind until the caller reports otherwise (`set_backlog`):
                    // a restored partition must not go idle while the consumer
                    // is still joining its group, or the watermark would jump
                    // past everything it has yet to re-read.
                    PartitionClock {
                        last_arrival_ms: now_ms,
                        backlog: true,
                        ..c
                    },
                )
            })
            .collect();
        self.applied_to = applied_to;
        self.tiers = tiers;
    }

    /// Loads the learned models (a snapshot's or the changelog's globals):
    /// the propensities and uplift counts readers share, and the churn model
    /// (what it learned is kept; how it learns from now on is configured).
    /// The value population too: absent (older formats), it is rebuilt
    /// from the journeys, which are loaded first.
    pub(super) fn load_models(
        &mut self,
        (propensities, uplift): (Propensities, Uplift),
        churn: Option<ChurnModel>,
        value: Option<Population>,
    ) {
        self.value = match value {
            Some(v) => v,
            None => self.rebuilt_population(),
        };
        if let (Some(mut model), Some(live)) = (churn, self.state.churn_mut().as_mut()) {
            model.config = live.config.learn.clone();
            live.model = model;
        }
        self.share_now();
        *self.state.models() = crate::state::Models { propensities, uplift };
    }
}

/// Fills the journey map from a snapshot's journeys, re-freezing the frozen
/// ones when `dict` is not this build's dictionary.
fn restore_journeys(
    state: &crate::state::State,
    journeys: Vec<(OneId, Stored)>,
    dict: Option<ByteBuf>,
) -> Result<(), RestoreError> {
    let dict = dict.unwrap_or_default();
    let mut refreezer = stored::Refreezer::new(&dict.0).map_err(RestoreError::Frozen)?;
    crate::hash::reserve(&state.journeys, journeys.len());
    for (one_id, s) in journeys {
        if let Some(theirs) = s.foreign_layout() {
            return Err(RestoreError::Frozen(format!(
                "the journey of {one_id} was frozen in journey layout {theirs}, this build reads layout {}",
                stored::LAYOUT
            )));
        }
        let s = match refreezer.as_mut() {
            Some(r) => r
                .refreeze(s)
                .ok_or_else(|| RestoreError::Frozen(format!("the journey of {one_id}")))?,
            None => s,
        };
        state.journeys.insert(one_id, s);
    }
    state.journeys_loaded();
    Ok(())
}
