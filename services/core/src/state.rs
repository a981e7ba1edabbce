//! The state readers share with the single writer: the identity graph and
//! the journeys, both keyed for lock-free reads, with their size and the
//! most recently active profiles kept up to date as they change; and the
//! action models (learned propensities, holdout and uplift counts) behind one
//! lock, which the writer holds only for a decision or an outcome.
//!
//! In: written only by the [`Processor`](crate::processor::Processor), which
//! changes journeys through [`State::take_journey`] / [`State::put_journey`] /
//! [`State::remove_journey`] so the sizes and the recent list follow. Out:
//! read by the lookup API (see [`view`](crate::view)), by
//! [`State::recent`], by metrics ([`State::size`], constant time) and by
//! `GET /v1/models/churn` and `/actions` ([`State::churn`],
//! [`State::models`]). Keeps every profile and every journey, the churn
//! model the writer trains and the action models; and the One IDs whose journey
//! changed (or went), or whose homed timers changed, since the engine last
//! took them ([`State::take_dirty`]): what the next checkpoint writes to the
//! journeys changelog (counted in
//! [`State::size`]; not kept where no checkpoint runs, [`State::keep_dirty`]).

use std::mem::size_of;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::decide::churn_model::LiveChurn;
use crate::decide::propensity::Propensities;
use crate::decide::uplift::{ActionReport, Uplift};
use crate::decide::DecideConfig;
use crate::dirty::DirtySet;
use crate::hash::{BuildHasher, DashMap};
use crate::identity::{IdentityGraph, OneId};
use crate::ids::Namespaces;
use crate::journey::{Journey, ALLOC_OVERHEAD};
use crate::recent::Recent;
use crate::time::EventTime;

pub mod stored;

pub use stored::Stored;

/// State shared with readers (the lookup API): the identity graph and the
/// journeys, both keyed for lock-free reads.
pub struct State {
    pub identity: IdentityGraph,
    /// Read freely; the writer changes it only through the methods below,
    /// copying a journey on write (`Arc::make_mut`) only while a checkpoint
    /// still holds it: the checkpoint's barrier takes `Arc` clones of the
    /// changed journeys, which its flush encodes off the writer. A journey
    /// with no event for a while is frozen ([`State::freeze_idle`], see
    /// [`Stored`]): read it with [`State::journey`].
    pub journeys: DashMap<OneId, Stored>,
    /// The estimate of the bytes the journeys hold, kept as they change.
    journey_bytes: AtomicI64,
    /// How many journeys are frozen, kept as they change.
    frozen: AtomicI64,
    /// Frozen journeys the writer decoded back to live since the last
    /// [`State::take_thawed`].
    thawed: AtomicU64,
    /// The estimate of the bytes the processor holds for the state: its
    /// dedupe memory and its timers.
    processor_bytes: AtomicI64,
    recent: Mutex<Recent>,
    /// The churn model, its config and the event time applied (see
    /// [`LiveChurn`]); `None` until a processor is attached.
    churn: RwLock<Option<LiveChurn>>,
    models: Mutex<Models>,
    /// One IDs whose journey was taken, put, removed or changed, or whose
    /// homed timers changed ([`State::touched`]), since [`State::take_dirty`].
    dirty: Mutex<DirtySet>,
    /// False: nothing takes the dirty set (no checkpoint runs: a benchmark,
    /// a tool), so it is not kept.
    keep_dirty: AtomicBool,
}

/// The journeys' map is split into this many locked shards: a reader's
/// walk (the eviction scan, [`State::eviction_candidates`]) holds one
/// shard's lock at a time, so the writer waits at most for one shard's walk
/// (about 10,000 journeys at 10M, well under a millisecond). dashmap's
/// default is four per core, 8 here: 1.25M journeys a shard at 10M.
const JOURNEY_SHARDS: usize = 1024;

/// Bytes per One ID in the dirty set: the hash set's slot (a [`OneId`],
/// one pointer) at its load factor; the text is shared with the journeys'
/// key (see [`State::touched`]).
const DIRTY_ID_BYTES: usize = 16;

/// What the engine learned about its actions.
#[derive(Clone, Debug, Default)]
pub struct Models {
    pub propensities: Propensities,
    pub uplift: Uplift,
}

/// How large the state is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Size {
    pub profiles: usize,
    /// Identifiers in a profile (household identifiers excluded).
    pub identifiers: usize,
    pub journeys: usize,
    /// Journeys kept frozen ([`Stored::Frozen`]), among `journeys`.
    pub frozen: usize,
    /// The estimate of the bytes the identity graph, the journeys, the
    /// dedupe memory, the timers and the dirty set hold.
    pub bytes: usize,
}

/// A fixed per-entry overhead for the hash maps.
const MAP_ENTRY: usize = 16;

/// The strong and weak counts in front of an `Arc`'s value.
const ARC_COUNTS: usize = 2 * size_of::<usize>();

/// The estimate of the bytes one journey holds: its structure, its key, and
/// the strings and history it owns.
pub fn journey_bytes(one_id: &str, j: &Journey) -> usize {
    // The `Arc` (its two counts), the key's share (the One ID text is shared
    // with the graph's profile), the map entry, and what the journey owns
    // (see `journey/size.rs`).
    size_of::<Journey>() + ARC_COUNTS + ALLOC_OVERHEAD + one_id.len() + MAP_ENTRY + j.heap_bytes()
}

/// The estimate of the bytes one stored journey holds: as
/// [`journey_bytes`] when live; its key's share, the map entry and the
/// encoded bytes' allocation when frozen.
pub fn stored_bytes(one_id: &str, s: &Stored) -> usize {
    match s {
        Stored::Live(j) => journey_bytes(one_id, j),
        Stored::Frozen(b) => one_id.len() + MAP_ENTRY + b.len() + ALLOC_OVERHEAD,
    }
}

fn signed(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The change in the frozen count when a stored journey goes from
/// `before` to `after` (`None`: none there).
fn frozen_change(before: Option<&Stored>, after: Option<&Stored>) -> i64 {
    let f = |s: Option<&Stored>| i64::from(s.is_some_and(Stored::is_frozen));
    f(after) - f(before)
}

impl State {
    pub fn new(namespaces: Arc<Namespaces>) -> Self {
        State {
            identity: IdentityGraph::new(namespaces),
            journeys: DashMap::with_hasher_and_shard_amount(BuildHasher::default(), JOURNEY_SHARDS),
            journey_bytes: AtomicI64::new(0),
            frozen: AtomicI64::new(0),
            thawed: AtomicU64::new(0),
            processor_bytes: AtomicI64::new(0),
            recent: Mutex::new(Recent::default()),
            churn: RwLock::new(None),
            models: Mutex::new(Models::default()),
            dirty: Mutex::new(DirtySet::default()),
            keep_dirty: AtomicBool::new(true),
        }
    }

    /// The churn model as readers see it (see [`LiveChurn`]).
    pub fn churn(&self) -> RwLockReadGuard<'_, Option<LiveChurn>> {
        // A panic while holding the lock leaves plain data behind; keep using it.
        self.churn.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The churn model to change (writer only).
    pub(crate) fn churn_mut(&self) -> RwLockWriteGuard<'_, Option<LiveChurn>> {
        self.churn.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn dirty_set(&self) -> MutexGuard<'_, DirtySet> {
        // A panic while holding the lock leaves plain data behind; keep using it.
        self.dirty.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether the One IDs of changed journeys are kept for a checkpoint
    /// ([`State::take_dirty`]); on by default. Off: where no checkpoint runs
    /// (a benchmark, a tool), so that the set does not grow; the set empties.
    pub fn keep_dirty(&self, on: bool) {
        self.keep_dirty.store(on, Ordering::Relaxed);
        if !on {
            *self.dirty_set() = DirtySet::default();
        }
    }

    /// Marks `one_id`'s changelog record changed, for a change made in
    /// place: its journey changed where it lies, or a timer homed there was
    /// armed or went (writer only).
    ///
    /// The set keeps a clone of `one_id`'s `Arc`, not a copy of its text:
    /// callers pass the journeys' key (or the One ID the journey is put
    /// under), so the set costs a slot per entry and the barrier's lookups
    /// mostly compare pointers.
    pub(crate) fn touched(&self, one_id: &OneId) {
        if !self.keep_dirty.load(Ordering::Relaxed) {
            return;
        }
        self.dirty_set().insert(one_id);
    }

    /// The One IDs whose journey changed or went since the last call, sorted,
    /// and forgets them: the checkpoint writes each one's journey now (or a
    /// tombstone when it has none) to the journeys changelog (writer only).
    pub fn take_dirty(&self) -> Vec<OneId> {
        let mut ids = self.dirty_set().drain();
        ids.sort_unstable();
        ids
    }

    /// As [`State::take_dirty`], in no order: at a checkpoint's barrier,
    /// where sorting a million One IDs would stop the writer for nothing.
    pub fn take_dirty_unordered(&self) -> DirtySet {
        std::mem::take(&mut *self.dirty_set())
    }

    /// How many journeys changed since [`State::take_dirty`].
    pub fn dirty_count(&self) -> usize {
        self.dirty_set().len()
    }

    /// The size of the state as the writer left it: no walk, no writer lock.
    pub fn size(&self) -> Size {
        let identity = self.identity.tally();
        let journeys = usize::try_from(self.journey_bytes.load(Ordering::Relaxed)).unwrap_or(0);
        Size {
            profiles: identity.profiles,
            identifiers: identity.identifiers,
            journeys: self.journeys.len(),
            frozen: usize::try_from(self.frozen.load(Ordering::Relaxed)).unwrap_or(0),
            bytes: identity
                .bytes
                .saturating_add(journeys)
                .saturating_add(self.processor_bytes())
                .saturating_add(self.dirty_bytes()),
        }
    }

    /// The estimate of the bytes the dirty set holds (counted in the state's
    /// size until a checkpoint takes it).
    fn dirty_bytes(&self) -> usize {
        self.dirty_count() * DIRTY_ID_BYTES
    }

    /// The same as [`State::size`] by walking every entry (and taking the
    /// identity writer lock): for tests and checks, never per scrape.
    pub fn recount(&self) -> Size {
        let identity = self.identity.recount();
        let journeys: usize = self.journeys.iter().map(|j| stored_bytes(j.key(), j.value())).sum();
        Size {
            profiles: identity.profiles,
            identifiers: identity.identifiers,
            journeys: self.journeys.len(),
            frozen: self.journeys.iter().filter(|j| j.value().is_frozen()).count(),
            bytes: identity.bytes + journeys + self.processor_bytes() + self.dirty_bytes(),
        }
    }

    /// The processor's dedupe memory and timers (it owns them; the size is
    /// kept here so that readers see one total).
    fn processor_bytes(&self) -> usize {
        usize::try_from(self.processor_bytes.load(Ordering::Relaxed)).unwrap_or(0)
    }

    /// Sets the estimate of the bytes of the processor's dedupe memory and
    /// timers (writer only).
    pub fn set_processor_bytes(&self, bytes: usize) {
        self.processor_bytes.store(signed(bytes), Ordering::Relaxed);
    }

    /// An estimate of the bytes the state holds; constant time.
    pub fn approx_bytes(&self) -> usize {
        self.size().bytes
    }

    /// The One IDs of the `n` journeys with the latest event time (at most
    /// [`RECENT_MAX`](crate::recent::RECENT_MAX)), newest first, ties by One
    /// ID; O(n).
    pub fn recent(&self, n: usize) -> Vec<OneId> {
        self.recent_list().newest(n)
    }

    /// The action models (the writer changes them; readers copy out).
    pub fn models(&self) -> MutexGuard<'_, Models> {
        // A panic while holding the lock leaves plain counts behind; keep using them.
        self.models.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Per catalog action: decisions sent and held out, conversions, uplift
    /// and the learned propensity.
    pub fn action_reports(&self, cfg: &DecideConfig) -> Vec<ActionReport> {
        let m = self.models();
        m.uplift.report(cfg, &m.propensities)
    }

    fn recent_list(&self) -> MutexGuard<'_, Recent> {
        // A panic while holding the lock leaves plain data behind; keep using it.
        self.recent.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes a journey out to change it; put it back with
    /// [`State::put_journey`] (writer only).
    pub fn take_journey(&self, one_id: &str) -> Option<Arc<Journey>> {
        let (key, s) = self.journeys.remove(one_id)?;
        self.touched(&key);
        self.journey_bytes
            .fetch_sub(signed(stored_bytes(&key, &s)), Ordering::Relaxed);
        self.frozen.fetch_add(frozen_change(Some(&s), None), Ordering::Relaxed);
        self.thawed.fetch_add(u64::from(s.is_frozen()), Ordering::Relaxed);
        s.journey()
    }

    /// How many frozen journeys the writer decoded back to live (an
    /// event, timer, outcome, merge, forget or eviction touched them) since
    /// the last call; the metrics add it to `onejourney_journeys_thawed_total`.
    pub fn take_thawed(&self) -> u64 {
        self.thawed.swap(0, Ordering::Relaxed)
    }

    /// Every journey with its One ID, frozen ones decoded: a copy for tests
    /// and tools (the lookup API reads one at a time with
    /// [`State::journey`]).
    pub fn all_journeys(&self) -> Vec<(OneId, Arc<Journey>)> {
        self.journeys
            .iter()
            .filter_map(|e| Some((e.key().clone(), e.value().journey()?)))
            .collect()
    }

    /// `one_id`'s entry with its journey live: thawed in place if it was
    /// frozen (writer only). `None` also when a frozen one does not decode.
    pub(crate) fn live_entry(&self, one_id: &str) -> Option<dashmap::mapref::one::RefMut<'_, OneId, Stored>> {
        let mut e = self.journeys.get_mut(one_id)?;
        if e.value().is_frozen() {
            let j = e.value().journey()?;
            let (key, s) = e.pair_mut();
            let before = stored_bytes(key, s);
            *s = Stored::Live(j);
            self.journey_bytes
                .fetch_add(signed(stored_bytes(key, s)) - signed(before), Ordering::Relaxed);
            self.frozen.fetch_sub(1, Ordering::Relaxed);
            self.thawed.fetch_add(1, Ordering::Relaxed);
        }
        Some(e)
    }

    /// Changes `one_id`'s journey in place with `f`, which returns `None`
    /// when it changed nothing; otherwise the journey is marked for the
    /// next checkpoint and its size counted again (writer only). `None`
    /// when there is no journey.
    pub(crate) fn update_journey<R>(&self, one_id: &str, f: impl FnOnce(&mut Journey) -> Option<R>) -> Option<R> {
        let mut e = self.live_entry(one_id)?;
        let (key, s) = e.pair_mut();
        let before = stored_bytes(key, s);
        let Stored::Live(j) = s else {
            return None;
        };
        // Copied only when a checkpoint still holds it.
        let r = f(Arc::make_mut(j))?;
        self.journey_bytes
            .fetch_add(signed(stored_bytes(key, s)) - signed(before), Ordering::Relaxed);
        self.touched(key);
        Some(r)
    }

    /// `one_id`'s journey as it is now, for any thread: shared when live,
    /// decoded when frozen.
    pub fn journey(&self, one_id: &str) -> Option<Arc<Journey>> {
        self.journeys.get(one_id).and_then(|s| s.value().journey())
    }

    /// `f` of `one_id`'s journey as it is now, read where it lies: borrowed
    /// when live (no copy of the `Arc`, which would make the writer's next
    /// change copy the journey), decoded into a temporary when frozen (left
    /// frozen). `None` when there is none. A live one's `f` runs under its
    /// shard's read lock: it must not reach the journeys' map (writer only).
    pub(crate) fn with_journey<R>(&self, one_id: &str, f: impl FnOnce(&Journey) -> R) -> Option<R> {
        let e = self.journeys.get(one_id)?;
        match e.value() {
            Stored::Live(j) => Some(f(j)),
            frozen => {
                let j = frozen.journey()?;
                // Not under the shard's lock while `f` runs.
                drop(e);
                Some(f(&j))
            }
        }
    }

    /// Puts a journey (back) in place (writer only).
    pub fn put_journey(&self, one_id: OneId, j: Arc<Journey>) {
        self.journey_bytes
            .fetch_add(signed(journey_bytes(&one_id, &j)), Ordering::Relaxed);
        let last_seen = j.last_seen;
        self.touched(&one_id);
        if let Some(old) = self.journeys.insert(one_id.clone(), Stored::Live(j)) {
            self.journey_bytes
                .fetch_sub(signed(stored_bytes(&one_id, &old)), Ordering::Relaxed);
            self.frozen
                .fetch_add(frozen_change(Some(&old), None), Ordering::Relaxed);
        }
        self.recent_list().touch(&one_id, last_seen);
    }

    /// Removes a journey for good: its profile was merged away or forgotten
    /// (writer only).
    pub fn remove_journey(&self, one_id: &str) -> Option<Arc<Journey>> {
        let j = self.take_journey(one_id)?;
        let mut recent = self.recent_list();
        recent.remove(&OneId::from(one_id));
        if recent.needs_refill() {
            recent.refill(self.journeys.iter().map(|j| (j.key().clone(), j.value().last_seen())));
        }
        Some(j)
    }

    /// The One IDs of the journeys with no event after `cutoff` that still
    /// keep detail: a read-only walk of every journey, for any thread
    /// (readers never block the writer for longer than one shard's walk).
    pub fn eviction_candidates(&self, cutoff: EventTime) -> Vec<OneId> {
        self.journeys
            .iter()
            .filter(|j| j.value().evictable(cutoff))
            .map(|j| j.key().clone())
            .collect()
    }

    /// Freezes the live journeys with no event after `cutoff` that no
    /// checkpoint waits for (none in the dirty set); returns how many.
    ///
    /// For any thread, beside the writer: it changes how a journey is held,
    /// never what it holds. Each one is encoded from a shared copy outside
    /// the map's lock, then swapped in under one shard's lock only if the
    /// journey is still that copy: one the writer changed (`Arc::make_mut`
    /// copied it), took or put back meanwhile stays live.
    pub fn freeze_idle(&self, cutoff: EventTime) -> usize {
        let idle = |j: &Journey| stored::idle_before(j, cutoff);
        let listed: Vec<OneId> = self
            .journeys
            .iter()
            .filter(|e| matches!(e.value(), Stored::Live(j) if idle(j)))
            .map(|e| e.key().clone())
            .collect();
        let mut n = 0;
        for one_id in listed {
            let Some(Stored::Live(j)) = self.journeys.get(&one_id).map(|e| e.value().clone()) else {
                continue;
            };
            let Some(frozen) = Stored::freeze(&j).filter(|_| idle(&j)) else {
                continue;
            };
            let Some(mut entry) = self.journeys.get_mut(&one_id) else {
                continue;
            };
            let (key, s) = entry.pair_mut();
            if !matches!(s, Stored::Live(now) if Arc::ptr_eq(now, &j)) || self.dirty_set().contains(key) {
                continue;
            }
            let before = stored_bytes(key, s);
            *s = frozen;
            self.journey_bytes
                .fetch_add(signed(stored_bytes(key, s)) - signed(before), Ordering::Relaxed);
            self.frozen.fetch_add(1, Ordering::Relaxed);
            n += 1;
        }
        n
    }

    /// Changes the `listed` journeys that are there and that `which` picks
    /// in place with `f` (true: it changed); returns how many changed
    /// (writer only; `f` must not change `last_seen`). A journey `which`
    /// passes over is not copied.
    pub fn update_listed(
        &self,
        listed: &[OneId],
        which: impl Fn(&Journey) -> bool,
        mut f: impl FnMut(&mut Journey) -> bool,
    ) -> usize {
        let mut n = 0;
        for one_id in listed {
            let Some(mut entry) = self.journeys.get_mut(one_id) else {
                continue;
            };
            let (key, s) = entry.pair_mut();
            let before = stored_bytes(key, s);
            match s {
                Stored::Live(j) if !which(j) => continue,
                Stored::Live(_) => {}
                // Thawed only when `which` picks it.
                Stored::Frozen(_) => match s.journey() {
                    Some(j) if which(&j) => {
                        *s = Stored::Live(j);
                        self.frozen.fetch_sub(1, Ordering::Relaxed);
                        self.thawed.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => continue,
                },
            }
            let Stored::Live(j) = s else {
                continue;
            };
            if f(Arc::make_mut(j)) {
                n += 1;
                self.touched(key);
            }
            let after = stored_bytes(key, s);
            self.journey_bytes
                .fetch_add(signed(after) - signed(before), Ordering::Relaxed);
        }
        n
    }

    /// Counts the journeys again and rebuilds the recent list: after loading
    /// them from a snapshot or a changelog (writer only). Loaded journeys are
    /// not dirty: they are durable already.
    pub fn journeys_loaded(&self) {
        let bytes: usize = self.journeys.iter().map(|j| stored_bytes(j.key(), j.value())).sum();
        self.journey_bytes.store(signed(bytes), Ordering::Relaxed);
        let frozen = self.journeys.iter().filter(|j| j.value().is_frozen()).count();
        self.frozen.store(signed(frozen), Ordering::Relaxed);
        self.recent_list()
            .refill(self.journeys.iter().map(|j| (j.key().clone(), j.value().last_seen())));
    }
}

#[cfg(test)]
mod freeze_tests;
#[cfg(test)]
mod tests;
