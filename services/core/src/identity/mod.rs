//! The identity graph: which identifiers belong to one person.
//!
//! In: a validated [`ChannelEvent`]. Out: a [`Stitch`]: the One ID the event
//! belongs to, the [`IdentityOp`]s that changed the graph, the links that were
//! refused and the profiles that were taken over by others.
//!
//! The graph changes only by applying `IdentityOp`s, in order ([`IdentityGraph::apply`]):
//! they are the one ordered stream of identity changes that a changelog or a
//! second process can replay. [`IdentityGraph::stitch`] plans the ops for one
//! event from the current graph and applies them.
//!
//! ## Order independence
//!
//! The graph is defined as a fold, in canonical order (event time, then
//! channel, then event id), over the distinct identifier sets the events
//! carried, each at its first occurrence (its *evidence*). Every rule below is
//! a step of that fold, so the partition into profiles and the One IDs are a
//! function of the set of events, not of their arrival order:
//! - an event that sorts after everything already folded into the identifiers
//!   it touches is one more fold step (the common case: the pipeline applies
//!   events in event-time order);
//! - an event that sorts earlier is inserted into the evidence and the
//!   *component* it touches is rebuilt by folding its evidence again in order.
//!   A component is a connected set of identifiers that ever appeared on one
//!   event together (whether or not the link was refused): no event outside it
//!   can change how its identifiers are split, so rebuilding it alone is
//!   enough.
//!
//! ## Rules of a fold step
//! - every linking identifier on one event ends in one profile, unless that
//!   would put two values of a unique namespace (`customer_id`, `loyalty_id`)
//!   in one profile, or more person identifiers than a profile may hold: then
//!   that link is refused, the event stays with the profile of its strongest
//!   identifier, and a refused identifier that is in no profile yet founds its
//!   own;
//! - a device identifier seen with more than K distinct values of one person
//!   namespace within a window is *shared* (a kiosk, a family tablet): it
//!   leaves the profile it was in and never links again; an event that carries
//!   only shared devices lands on the device's own profile;
//! - household identifiers (`card_token`) are recorded on the profile but never
//!   indexed, so they never link two profiles;
//! - a profile holds at most `max_per_profile` identifiers of a capped
//!   namespace and `max_identifiers_per_profile` in all: the oldest device link
//!   is dropped first;
//! - a new profile's One ID is derived from its strongest identifier (a keyed
//!   hash, see `derive.rs`); when
//!   profiles merge, the one first seen earliest (event time; ties: smaller id)
//!   survives.
//!
//! ## Refused links
//! A fold step that refuses a link emits one `Refused` op for the profile the
//! event landed on, which keeps the newest [`REFUSED_LINKS`] of them (the
//! identifier, the reason, where it was kept, the event): what `explain` shows.
//! They are part of the fold, not a log of this process: a rebuild dissolves
//! the component's profiles and folds its evidence again, so the refusals are
//! made again in canonical order, merges combine them, and the kept set is the
//! newest by (event time, channel, event id, identifier). So it is the same
//! whatever the arrival order (the order-independence proptests compare it).
//!
//! ## Forget
//! [`IdentityGraph::forget`] removes a profile and its identifiers and keeps
//! a suppression entry per identifier: a truncated HMAC-SHA256 under the
//! identity key (see `derive.rs`), never the value.
//! A suppressed identifier is ignored on every later event, so a replay cannot
//! bring it back. The engine writes every forget's entries to the erasure
//! topic and installs them (`IdentityOp::Suppress`) before any input at
//! start, so a rebuild from the inputs cannot either, whatever their order.
//!
//! Single writer: `index` and `profiles` are `DashMap`s so readers (the lookup
//! API) can read while the pipeline writes; the writer-only structures sit
//! behind one mutex that only `stitch`/`apply`/`forget` (and a snapshot)
//! take. Readers never need it: the sizes metrics read are published by the
//! writer after each change ([`IdentityGraph::tally`]).
//!
//! ## Files
//! - `types.rs`: the vocabulary (profiles, evidence, ops, the stitch result);
//! - `fold.rs`: [`IdentityGraph::stitch`]: evidence in, one fold step or a
//!   rebuild of the component out;
//! - `plan.rs`: one fold step decided from the graph, as ops (the rules above);
//! - `apply.rs`: ops applied to the graph, caps enforced;
//! - `component.rs`: a component's identifiers and its evidence, kept
//!   sorted by key (the largest key is the last evidence's);
//! - `links.rs`: a profile's links, in 24 bytes when one event made them
//!   all;
//! - `forget.rs`: erasure and suppression;
//! - `derive.rs`: One IDs and suppression entries from identifiers (keyed);
//! - `snapshot.rs`: the graph written and read back;
//! - `write_order.rs`: the order a snapshot writes the index and the
//!   components in (the profiles', for the reader's locality);
//! - `tally.rs`: the graph's size (profiles, identifiers, bytes), kept as
//!   it changes so readers never walk it.
//!
//! ## Memory
//! An identifier value is allocated once: a new evidence set takes the
//! index's `IdKey`s (`fold.rs`), so evidence, profiles, links and device
//! counts share the index's value. An `IdKey` is 8 bytes (one pointer to
//! its namespace and value in one text, `ids/key.rs`) and an event id 8
//! (`ArcStr`: one pointer, where an `Arc<str>` is a pointer and a length);
//! a graph holds about seven copies of each identifier and one of each
//! event id per link. A One ID is one pointer too ([`OneId`], `crate::one_id`).
//! A profile's rarely used lists (households, dropped, refused) sit in one
//! box allocated on first use (a profile was 144 bytes with them inline; 64
//! now). Every list of a profile, a component and a device is sized
//! exactly (most hold one to three entries). A profile one event founded
//! holds its links as that event's id, time and channel (24 bytes,
//! `links.rs`), not as a list of 40-byte links repeating its identifiers.
//! An index slot is 16 bytes: the rare profile a cap dropped an identifier
//! from sits in the writer's `formers`. None of this changes a serialised
//! form (`format_tests.rs`); `size_tests.rs` holds the budget and a resident
//! measurement of the bench's profile shape.
//!
//! This file holds the graph's state and its read-only queries.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use crate::event::ChannelEvent;
use crate::hash::{DashMap, HashMap, HashSet};
use crate::ids::{IdKey, Kind, Namespaces};
use crate::time::EventTime;

mod apply;
mod component;
mod derive;
mod fold;
mod forget;
mod links;
mod members;
mod plan;
mod profile;
mod replay;
mod share;
mod snapshot;
mod tally;
mod types;
mod write_order;
#[cfg(test)]
pub(crate) use share::Census;

#[cfg(test)]
mod format_tests;
#[cfg(test)]
mod links_tests;
#[cfg(test)]
mod size_tests;
#[cfg(test)]
mod tests;

pub use derive::{Derivation, DerivationError, DerivationRecord, IdentityKey, KeyError};
pub use share::Sharer;
pub use snapshot::{IdentitySnapshot, IdentitySnapshotRef};
pub use tally::Tally;
pub use types::{
    Evidence, EvidenceKey, Forgotten, IdentityOp, LinkRecord, Moved, OneId, Profile, Provenance, RefusedLink,
    RejectReason, Rejection, Rule, Stitch, StitchError, Suppression, REFUSED_LINKS,
};

/// What the index holds for one identifier (16 bytes). The profile a cap
/// dropped it from, rare, is in [`Writer::formers`]; a snapshot writes both
/// as one slot (see `snapshot.rs`).
#[derive(Clone, Debug)]
struct Slot {
    /// The profile it is in; `None` when it was dropped by a cap or left as
    /// a shared device.
    one_id: Option<OneId>,
    /// Its component.
    component: u32,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct DeviceStat {
    /// Person identifiers first seen with the device, within the window.
    persons: crate::journey::List<(EventTime, IdKey)>,
    shared: bool,
}

/// Structures only the writer touches.
#[derive(Debug, Default)]
struct Writer {
    components: HashMap<u32, component::Component>,
    next_component: u32,
    /// Fingerprint of an identifier set -> its first occurrence.
    known: HashMap<Fingerprint, EvidenceKey>,
    devices: HashMap<IdKey, DeviceStat>,
    /// Identifiers a cap dropped, in no profile -> the profile it dropped
    /// them from: events that carry only dropped identifiers are attributed
    /// there, without changing the graph.
    formers: HashMap<IdKey, OneId>,
    /// Suppression entries of forgotten identifiers.
    suppressed: HashSet<[u8; 16]>,
    /// The graph's size, kept as it changes (see `tally.rs`).
    sums: tally::Sums,
    /// How One IDs and suppression entries are derived.
    derivation: Derivation,
}

/// The in-memory identity graph.
pub struct IdentityGraph {
    rules: Arc<Namespaces>,
    index: DashMap<IdKey, Slot>,
    profiles: DashMap<OneId, Profile>,
    writer: Mutex<Writer>,
    /// The writer's sums as readers see them.
    published: tally::Published,
}

impl IdentityGraph {
    /// A graph deriving One IDs under the namespace table's identity key.
    pub fn new(rules: Arc<Namespaces>) -> Self {
        let writer = Writer {
            derivation: Derivation::Keyed(rules.identity_key().clone()),
            ..Writer::default()
        };
        IdentityGraph {
            rules,
            index: DashMap::default(),
            profiles: DashMap::default(),
            writer: Mutex::new(writer),
            published: tally::Published::default(),
        }
    }

    /// How this graph derives One IDs and suppression entries.
    pub fn derivation(&self) -> Derivation {
        self.lock().derivation.clone()
    }

    /// The One ID a profile founded by `namespace:value` gets (unless taken).
    pub fn derive_one_id(&self, namespace: &str, value: &str) -> OneId {
        self.lock().derivation.one_id(namespace, value)
    }

    pub fn namespaces(&self) -> &Arc<Namespaces> {
        &self.rules
    }

    pub fn profile_count(&self) -> usize {
        self.profiles.len()
    }

    /// Identifiers that are in a profile (household identifiers excluded);
    /// constant time (see [`IdentityGraph::tally`]).
    pub fn identifier_count(&self) -> usize {
        self.tally().identifiers
    }

    fn lock(&self) -> MutexGuard<'_, Writer> {
        // A panic while holding the lock leaves plain data behind; keep using it.
        self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// An estimate of the bytes the graph holds; constant time (see
    /// [`IdentityGraph::tally`]).
    pub fn approx_bytes(&self) -> usize {
        self.tally().bytes
    }

    /// The One ID an identifier belongs to.
    pub fn one_id_of(&self, key: &IdKey) -> Option<OneId> {
        self.index.get(key).and_then(|r| r.value().one_id.clone())
    }

    /// Whether a profile has this One ID.
    pub fn has_profile(&self, one_id: &OneId) -> bool {
        self.profiles.contains_key(one_id)
    }

    /// A copy of a profile.
    pub fn profile(&self, one_id: &str) -> Option<Profile> {
        self.profiles.get(one_id).map(|p| p.value().clone())
    }

    /// Calls `f` with the profile, without copying it.
    pub fn with_profile<T>(&self, one_id: &str, f: impl FnOnce(&Profile) -> T) -> Option<T> {
        self.profiles.get(one_id).map(|p| f(p.value()))
    }

    /// Which of `keys` are shared devices (they no longer link). Takes the
    /// writer lock: call it holding no profile or index guard.
    pub fn shared_devices<'a>(&self, keys: impl IntoIterator<Item = &'a IdKey>) -> Vec<IdKey> {
        let w = self.lock();
        keys.into_iter()
            .filter(|k| w.devices.get(*k).is_some_and(|d| d.shared))
            .cloned()
            .collect()
    }

    /// Every profile's identifiers, sorted: the partition into profiles.
    pub fn partition(&self) -> BTreeMap<OneId, Vec<IdKey>> {
        self.profiles
            .iter()
            .map(|p| {
                let mut ids = p.ids().to_vec();
                ids.sort();
                (p.one_id.clone(), ids)
            })
            .collect()
    }

    /// True when `ev` has an identifier that can anchor it to a profile (not
    /// only household identifiers); `stitch` fails otherwise.
    pub fn can_link(&self, ev: &ChannelEvent) -> bool {
        ev.ids.iter().any(|k| self.links(k))
    }

    fn links(&self, k: &IdKey) -> bool {
        let r = self.rules.rule(k.ns());
        r.links && r.kind != Kind::Household
    }

    fn priority(&self, k: &IdKey) -> u8 {
        self.rules.rule(k.ns()).priority
    }

    /// Strongest first; ties by namespace and value so the order is total.
    fn by_strength(&self, a: &IdKey, b: &IdKey) -> std::cmp::Ordering {
        self.priority(b).cmp(&self.priority(a)).then_with(|| a.cmp(b))
    }
}

/// A 128-bit fingerprint of a sorted identifier set, as two `u64`s: a
/// `u128` is aligned to 16 bytes, which pads an entry of `known` (with its
/// 24-byte key) from 40 to 48 bytes, one entry per distinct identifier set.
type Fingerprint = [u64; 2];

fn fingerprint(ids: &[IdKey]) -> Fingerprint {
    let half = |salt: u8| {
        let mut h = std::hash::DefaultHasher::new();
        salt.hash(&mut h);
        ids.hash(&mut h);
        h.finish()
    };
    [half(1), half(2)]
}
