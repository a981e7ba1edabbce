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
//! - a new profile's One ID is derived from its strongest identifier; when
//!   profiles merge, the one first seen earliest (event time; ties: smaller id)
//!   survives.
//!
//! ## Forget
//! [`IdentityGraph::forget`] removes a profile and its identifiers and keeps
//! a suppression entry per identifier: a truncated SHA-256, never the value.
//! A suppressed identifier is ignored on every later event, so a replay cannot
//! bring it back.
//!
//! Single writer: `index` and `profiles` are `DashMap`s so readers (the lookup
//! API) can read while the pipeline writes; the writer-only structures sit
//! behind one mutex that only `stitch`/`apply`/`forget` take.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::hash::{DashMap, HashMap, HashSet};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::event::{Channel, ChannelEvent};
use crate::ids::{IdKey, Kind, Namespaces, Ns};
use crate::time::EventTime;

#[cfg(test)]
mod tests;

/// The opaque, stable id of one profile.
pub type OneId = Arc<str>;

/// Which rule made a link.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// The identifier founded a new profile.
    Founder,
    /// The identifier appeared on one event with an identifier of the profile.
    SameEvent,
    /// Two profiles were joined because one event carried identifiers of both.
    Merge,
    /// A household identifier: recorded on the profile, never used to link.
    Household,
}

/// Where a link came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    pub event_id: Arc<str>,
    pub channel: Channel,
    pub at: EventTime,
    pub rule: Rule,
}

/// One edge of a profile: `from` joined the profile through `to`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinkRecord {
    pub from: IdKey,
    /// The identifier it was linked to; `None` for the founder of a profile.
    pub to: Option<IdKey>,
    pub provenance: Provenance,
}

/// A profile: a set of identifiers that belong to one person.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub one_id: OneId,
    pub first_seen: EventTime,
    /// Linking identifiers, in the order they joined.
    pub ids: Vec<IdKey>,
    /// Household identifiers, recorded but never linking.
    pub households: Vec<IdKey>,
    /// How every identifier joined, for `explain`.
    pub links: Vec<LinkRecord>,
    /// Identifiers a cap dropped from it: events that carry only those are
    /// still attributed here (and follow it through merges).
    pub dropped: Vec<IdKey>,
}

/// The canonical position of an event: event time, channel, event id.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EvidenceKey {
    pub at: EventTime,
    pub channel: Channel,
    pub event_id: Arc<str>,
}

/// One distinct identifier set, at its first occurrence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    pub key: EvidenceKey,
    /// Sorted, no repeats.
    pub ids: Arc<[IdKey]>,
}

/// A change to the graph. Applying the same ops in the same order to the same
/// graph gives the same graph.
#[derive(Clone, Debug, PartialEq)]
pub enum IdentityOp {
    /// Adds an identifier set to the evidence (and joins the components of
    /// its identifiers).
    Record(Evidence),
    Create {
        one_id: OneId,
        at: EventTime,
    },
    /// Adds an identifier to a profile; caps may drop the profile's oldest
    /// device link.
    Attach {
        one_id: OneId,
        link: LinkRecord,
    },
    Merge {
        survivor: OneId,
        merged: OneId,
        link: LinkRecord,
    },
    Seen {
        one_id: OneId,
        at: EventTime,
    },
    /// A person identifier was first seen with a device at `at`.
    DevicePerson {
        device: IdKey,
        person: IdKey,
        at: EventTime,
    },
    /// The device is shared from now on: it leaves its profile and never links.
    Shared {
        device: IdKey,
    },
    /// Removes a profile before its component is folded again.
    Dissolve {
        one_id: OneId,
    },
    /// Erases a profile and suppresses its identifiers.
    Forget {
        one_id: OneId,
    },
}

/// Why a link was refused.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// Two different values of a unique namespace would share a profile.
    UniqueConflict,
    /// The device is shared by several people and no longer links.
    SharedDevice,
    /// The profile holds as many person identifiers as it may.
    ProfileFull,
}

impl RejectReason {
    pub const ALL: [RejectReason; 3] = [
        RejectReason::UniqueConflict,
        RejectReason::SharedDevice,
        RejectReason::ProfileFull,
    ];

    pub fn label(self) -> &'static str {
        match self {
            RejectReason::UniqueConflict => "unique_conflict",
            RejectReason::SharedDevice => "shared_device",
            RejectReason::ProfileFull => "profile_full",
        }
    }
}

/// A refused link: `key` stays where it is (`kept_in`).
#[derive(Clone, Debug, PartialEq)]
pub struct Rejection {
    pub key: IdKey,
    pub reason: RejectReason,
    pub kept_in: Option<OneId>,
}

/// A profile that no longer exists and the profile that took over its
/// identifiers (`None`: none of them is in a profile any more).
#[derive(Clone, Debug, PartialEq)]
pub struct Moved {
    pub from: OneId,
    pub to: Option<OneId>,
    /// The identifier through which `to` took it over.
    pub via: Option<IdKey>,
}

/// The result of stitching one event.
#[derive(Clone, Debug, PartialEq)]
pub struct Stitch {
    pub one_id: OneId,
    /// The event's strongest identifier that is now in the profile.
    pub anchor: IdKey,
    pub ops: Vec<IdentityOp>,
    pub rejected: Vec<Rejection>,
    /// Profiles merged into others (by this event or by the rebuild it caused).
    pub moved: Vec<Moved>,
    /// Devices that became shared on this event.
    pub shared: Vec<IdKey>,
    /// Device links dropped by the caps.
    pub dropped: usize,
    /// The event sorted before evidence already folded: its component was rebuilt.
    pub rebuilt: bool,
}

impl Stitch {
    /// Profiles merged away and the link that merged them (plain merges only).
    pub fn merged(&self) -> impl Iterator<Item = (&OneId, &LinkRecord)> {
        self.ops.iter().filter_map(|op| match op {
            IdentityOp::Merge { merged, link, .. } => Some((merged, link)),
            _ => None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StitchError {
    #[error("the event has no identifier that can link (only household identifiers)")]
    NoLinkableIdentifier,
    #[error("every identifier on the event was forgotten (erased on request)")]
    Forgotten,
}

impl StitchError {
    pub fn reason(&self) -> &'static str {
        match self {
            StitchError::NoLinkableIdentifier => "no_linkable_identifier",
            StitchError::Forgotten => "forgotten",
        }
    }
}

/// What the index holds for one identifier.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Slot {
    /// The profile it is in; `None` when it was dropped by a cap or left as
    /// a shared device.
    one_id: Option<OneId>,
    /// The profile a cap dropped it from: events that carry only dropped
    /// identifiers are attributed there, without changing the graph.
    former: Option<OneId>,
    /// Its component.
    component: u32,
}

/// Identifiers that ever appeared on one event together, and their evidence.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Component {
    ids: Vec<IdKey>,
    evidence: Vec<Evidence>,
    /// The largest key folded so far.
    last: Option<EvidenceKey>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct DeviceStat {
    /// Person identifiers first seen with the device, within the window.
    persons: Vec<(EventTime, IdKey)>,
    shared: bool,
}

/// Structures only the writer touches.
#[derive(Debug, Default)]
struct Writer {
    components: HashMap<u32, Component>,
    next_component: u32,
    /// Fingerprint of an identifier set -> its first occurrence.
    known: HashMap<u128, EvidenceKey>,
    devices: HashMap<IdKey, DeviceStat>,
    /// Suppression entries of forgotten identifiers.
    suppressed: HashSet<[u8; 16]>,
}

/// The graph as a snapshot holds it (see [`IdentityGraph::snapshot`]).
#[derive(Deserialize)]
pub struct IdentitySnapshot {
    profiles: Vec<Profile>,
    index: Vec<(IdKey, Slot)>,
    components: Vec<(u32, Component)>,
    next_component: u32,
    devices: Vec<(IdKey, DeviceStat)>,
    suppressed: Vec<[u8; 16]>,
}

impl IdentitySnapshot {
    pub fn profile_count(&self) -> usize {
        self.profiles.len()
    }
}

/// Serialises like [`IdentitySnapshot`], straight from the live maps; holds
/// the writer lock, so nothing changes the graph while it is written.
pub struct IdentitySnapshotRef<'a> {
    graph: &'a IdentityGraph,
    writer: MutexGuard<'a, Writer>,
}

impl Serialize for IdentitySnapshotRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use crate::snapshot::{DashEntries, DashValues};
        use serde::ser::SerializeStruct;
        let w = &self.writer;
        let mut st = s.serialize_struct("IdentitySnapshot", 6)?;
        st.serialize_field("profiles", &DashValues(&self.graph.profiles))?;
        st.serialize_field("index", &DashEntries(&self.graph.index))?;
        st.serialize_field("components", &crate::snapshot::Pairs(&w.components))?;
        st.serialize_field("next_component", &w.next_component)?;
        st.serialize_field("devices", &crate::snapshot::Pairs(&w.devices))?;
        st.serialize_field("suppressed", &w.suppressed)?;
        st.end()
    }
}

/// What a forget did.
#[derive(Clone, Debug, PartialEq)]
pub struct Forgotten {
    pub one_id: OneId,
    /// Identifiers erased (linking and household).
    pub ids: Vec<IdKey>,
}

/// The in-memory identity graph.
pub struct IdentityGraph {
    rules: Arc<Namespaces>,
    index: DashMap<IdKey, Slot>,
    profiles: DashMap<OneId, Profile>,
    writer: Mutex<Writer>,
}

impl IdentityGraph {
    pub fn new(rules: Arc<Namespaces>) -> Self {
        IdentityGraph {
            rules,
            index: DashMap::default(),
            profiles: DashMap::default(),
            writer: Mutex::new(Writer::default()),
        }
    }

    pub fn namespaces(&self) -> &Arc<Namespaces> {
        &self.rules
    }

    pub fn profile_count(&self) -> usize {
        self.profiles.len()
    }

    /// Identifiers that are in a profile (household identifiers excluded).
    pub fn identifier_count(&self) -> usize {
        self.profiles.iter().map(|p| p.ids.len()).sum()
    }

    /// Everything the graph holds, to serialise without copying it.
    pub fn snapshot(&self) -> IdentitySnapshotRef<'_> {
        IdentitySnapshotRef {
            graph: self,
            writer: self.lock(),
        }
    }

    /// Loads a snapshot into this graph, which must be empty.
    pub fn restore(&self, snap: IdentitySnapshot) {
        let g = self;
        for p in snap.profiles {
            g.profiles.insert(p.one_id.clone(), p);
        }
        for (k, slot) in snap.index {
            g.index.insert(k, slot);
        }
        {
            let mut w = g.lock();
            // Fingerprints are recomputed, not stored: they depend on the
            // hasher of this build.
            for (_, c) in &snap.components {
                for e in &c.evidence {
                    let first = w.known.entry(fingerprint(&e.ids)).or_insert_with(|| e.key.clone());
                    if e.key < *first {
                        *first = e.key.clone();
                    }
                }
            }
            w.components = snap.components.into_iter().collect();
            w.next_component = snap.next_component;
            w.devices = snap.devices.into_iter().collect();
            w.suppressed = snap.suppressed.into_iter().collect();
        }
    }

    /// Identifiers suppressed by forget requests.
    pub fn suppressed_count(&self) -> usize {
        self.lock().suppressed.len()
    }

    fn lock(&self) -> MutexGuard<'_, Writer> {
        // A panic while holding the lock leaves plain data behind; keep using it.
        self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// An estimate of the bytes the graph holds (see `State::approx_bytes`).
    pub fn approx_bytes(&self) -> usize {
        use std::mem::size_of;
        const MAP_ENTRY: usize = 16;
        let index: usize = self
            .index
            .iter()
            .map(|e| size_of::<IdKey>() + size_of::<Slot>() + e.key().value.len() + 16 + MAP_ENTRY)
            .sum();
        let profiles: usize = self
            .profiles
            .iter()
            .map(|p| {
                size_of::<Profile>()
                    + p.one_id.len()
                    + (p.ids.capacity() + p.households.capacity()) * size_of::<IdKey>()
                    + p.links.capacity() * size_of::<LinkRecord>()
                    + p.links.iter().map(|l| l.provenance.event_id.len() + 16).sum::<usize>()
                    + MAP_ENTRY
            })
            .sum();
        let w = self.lock();
        let components: usize = w
            .components
            .values()
            .map(|c| {
                size_of::<Component>()
                    + MAP_ENTRY
                    + c.ids.capacity() * size_of::<IdKey>()
                    + c.evidence.capacity() * size_of::<Evidence>()
                    + c.evidence
                        .iter()
                        .map(|e| 16 + e.ids.len() * size_of::<IdKey>())
                        .sum::<usize>()
            })
            .sum();
        let known = w.known.len() * (size_of::<u128>() + size_of::<EvidenceKey>() + MAP_ENTRY);
        let devices: usize = w
            .devices
            .values()
            .map(|d| size_of::<IdKey>() + size_of::<DeviceStat>() + MAP_ENTRY + d.persons.len() * 32)
            .sum();
        index + profiles + components + known + devices + w.suppressed.len() * (16 + MAP_ENTRY)
    }

    /// The One ID an identifier belongs to.
    pub fn one_id_of(&self, key: &IdKey) -> Option<OneId> {
        self.index.get(key).and_then(|r| r.value().one_id.clone())
    }

    /// A copy of a profile.
    pub fn profile(&self, one_id: &str) -> Option<Profile> {
        self.profiles.get(one_id).map(|p| p.value().clone())
    }

    /// Calls `f` with the profile, without copying it.
    pub fn with_profile<T>(&self, one_id: &str, f: impl FnOnce(&Profile) -> T) -> Option<T> {
        self.profiles.get(one_id).map(|p| f(p.value()))
    }

    /// Every profile's identifiers, sorted: the partition into profiles.
    pub fn partition(&self) -> BTreeMap<OneId, Vec<IdKey>> {
        self.profiles
            .iter()
            .map(|p| {
                let mut ids = p.ids.clone();
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
        let r = self.rules.rule(k.ns);
        r.links && r.kind != Kind::Household
    }

    fn priority(&self, k: &IdKey) -> u8 {
        self.rules.rule(k.ns).priority
    }

    /// Strongest first; ties by namespace and value so the order is total.
    fn by_strength(&self, a: &IdKey, b: &IdKey) -> std::cmp::Ordering {
        self.priority(b).cmp(&self.priority(a)).then_with(|| a.cmp(b))
    }

    /// Stitches one event: records its identifier set and folds it in (or
    /// rebuilds its component when it sorts before what was folded).
    pub fn stitch(&self, ev: &ChannelEvent) -> Result<Stitch, StitchError> {
        let mut w = self.lock();
        let mut ids: Vec<IdKey> = if w.suppressed.is_empty() {
            ev.ids.clone()
        } else {
            ev.ids
                .iter()
                .filter(|k| !w.suppressed.contains(&self.suppression_entry(k)))
                .cloned()
                .collect()
        };
        if ids.is_empty() {
            return Err(StitchError::Forgotten);
        }
        if !ids.iter().any(|k| self.links(k)) {
            return Err(if ids.len() < ev.ids.len() {
                StitchError::Forgotten
            } else {
                StitchError::NoLinkableIdentifier
            });
        }
        ids.sort();
        ids.dedup();
        let key = EvidenceKey {
            at: ev.occurred_at,
            channel: ev.channel,
            event_id: Arc::from(ev.event_id.as_str()),
        };
        let fp = fingerprint(&ids);
        if let Some(first) = w.known.get(&fp) {
            if *first <= key {
                // The same set was folded at its first occurrence: nothing new.
                if let Some((one_id, anchor)) = self.resolve(&w, &ids) {
                    return Ok(Stitch {
                        one_id,
                        anchor,
                        ops: Vec::new(),
                        rejected: Vec::new(),
                        moved: Vec::new(),
                        shared: Vec::new(),
                        dropped: 0,
                        rebuilt: false,
                    });
                }
                // Every identifier of the set has since left its profile
                // (caps, shared devices): fold it again as a new occurrence.
            }
        }
        let evidence = Evidence {
            key: key.clone(),
            ids: Arc::from(ids),
        };
        let record = IdentityOp::Record(evidence.clone());
        let component = self.apply_locked(&mut w, &record);
        let in_order = w
            .components
            .get(&component)
            .and_then(|c| c.last.as_ref())
            .is_none_or(|last| *last <= key);
        let mut ops = vec![record];
        if in_order {
            let mut step = self.step(&mut w, &evidence)?;
            if let Some(c) = w.components.get_mut(&component) {
                c.last = Some(key);
            }
            ops.append(&mut step.ops);
            step.ops = ops;
            Ok(step)
        } else {
            let mut rebuilt = self.rebuild(&mut w, component, &key)?;
            ops.append(&mut rebuilt.ops);
            rebuilt.ops = ops;
            Ok(rebuilt)
        }
    }

    /// The profile an already-folded set resolves to: the strongest of its
    /// linking identifiers that is in a profile.
    fn resolve(&self, w: &Writer, ids: &[IdKey]) -> Option<(OneId, IdKey)> {
        let mut linking: Vec<&IdKey> = ids.iter().filter(|k| self.links(k)).collect();
        linking.sort_by(|a, b| {
            let sa = w.devices.get(*a).is_some_and(|d| d.shared);
            let sb = w.devices.get(*b).is_some_and(|d| d.shared);
            sa.cmp(&sb).then_with(|| self.by_strength(a, b))
        });
        linking
            .iter()
            .find_map(|k| self.one_id_of(k).map(|one_id| (one_id, (*k).clone())))
            .or_else(|| {
                linking.iter().find_map(|k| {
                    let former = self.index.get(*k)?.former.clone()?;
                    self.profiles.contains_key(&former).then(|| (former, (*k).clone()))
                })
            })
    }

    /// Folds one evidence into the graph: plans its ops and applies them.
    fn step(&self, w: &mut Writer, evidence: &Evidence) -> Result<Stitch, StitchError> {
        let stitch = self.plan(w, evidence)?;
        let mut dropped = 0;
        for op in &stitch.ops {
            dropped += self.apply_op(w, op);
        }
        Ok(Stitch { dropped, ..stitch })
    }

    /// Folds the evidence of a component again, in canonical order, and
    /// returns the result for the event with `key`.
    fn rebuild(&self, w: &mut Writer, component: u32, key: &EvidenceKey) -> Result<Stitch, StitchError> {
        let Some(c) = w.components.get_mut(&component) else {
            return Err(StitchError::NoLinkableIdentifier);
        };
        c.evidence.sort_by(|a, b| a.key.cmp(&b.key));
        let evidence = c.evidence.clone();
        let members = c.ids.clone();
        // The profiles before, with their identifiers, to report what moved.
        let mut before: BTreeMap<OneId, Vec<IdKey>> = BTreeMap::new();
        for k in &members {
            if let Some(one_id) = self.one_id_of(k) {
                before.entry(one_id).or_default().push(k.clone());
            }
        }
        let mut ops = Vec::new();
        for one_id in before.keys() {
            let op = IdentityOp::Dissolve { one_id: one_id.clone() };
            self.apply_op(w, &op);
            ops.push(op);
        }
        for k in &members {
            w.devices.remove(k);
        }
        let mut mine = None;
        let mut dropped = 0;
        for e in &evidence {
            let mut step = self.step(w, e)?;
            dropped += step.dropped;
            ops.append(&mut step.ops);
            if e.key == *key {
                mine = Some(step);
            }
        }
        if let Some(c) = w.components.get_mut(&component) {
            c.last = evidence.last().map(|e| e.key.clone());
        }
        let Some(mine) = mine else {
            return Err(StitchError::NoLinkableIdentifier);
        };
        let mut moved = Vec::new();
        for (old, ids) in before {
            if self.profiles.contains_key(&old) {
                continue;
            }
            // The founder first: the profile that holds it takes the journey over.
            let target = ids
                .iter()
                .filter_map(|k| self.one_id_of(k).map(|o| (o, k.clone())))
                .min_by(|a, b| self.by_strength(&a.1, &b.1));
            moved.push(Moved {
                from: old,
                to: target.as_ref().map(|t| t.0.clone()),
                via: target.map(|t| t.1),
            });
        }
        Ok(Stitch {
            ops,
            moved,
            dropped,
            rebuilt: true,
            ..mine
        })
    }

    /// Decides what one fold step changes, without changing anything.
    fn plan(&self, w: &Writer, evidence: &Evidence) -> Result<Stitch, StitchError> {
        let at = evidence.key.at;
        let limits = self.rules.limits();
        let mut linking: Vec<&IdKey> = Vec::with_capacity(evidence.ids.len());
        let mut households: Vec<&IdKey> = Vec::new();
        let mut shared: Vec<&IdKey> = Vec::new();
        for key in evidence.ids.iter() {
            if !self.links(key) {
                households.push(key);
            } else if w.devices.get(key).is_some_and(|d| d.shared) {
                shared.push(key);
            } else {
                linking.push(key);
            }
        }
        if linking.is_empty() && shared.is_empty() {
            return Err(StitchError::NoLinkableIdentifier);
        }
        linking.sort_by(|a, b| self.by_strength(a, b));
        shared.sort_by(|a, b| self.by_strength(a, b));

        let mut ops = Vec::new();
        let provenance = |rule| Provenance {
            event_id: evidence.key.event_id.clone(),
            channel: evidence.key.channel,
            at,
            rule,
        };
        // The shared-device rule: count the person values first seen with each device.
        let persons: Vec<&IdKey> = linking
            .iter()
            .copied()
            .filter(|k| self.rules.rule(k.ns).kind == Kind::Person)
            .collect();
        let mut newly_shared = Vec::new();
        for device in linking
            .iter()
            .copied()
            .filter(|k| self.rules.rule(k.ns).kind == Kind::Device)
        {
            let since = at.minus(limits.shared_device_window);
            let stat = w.devices.get(device);
            let mut seen: Vec<&IdKey> = stat
                .map(|s| s.persons.iter().filter(|(t, _)| *t >= since).map(|(_, p)| p).collect())
                .unwrap_or_default();
            for p in &persons {
                if !stat.is_some_and(|s| s.persons.iter().any(|(_, q)| q == *p)) {
                    ops.push(IdentityOp::DevicePerson {
                        device: device.clone(),
                        person: (*p).clone(),
                        at,
                    });
                    seen.push(p);
                }
            }
            let too_many = persons
                .iter()
                .any(|p| seen.iter().filter(|q| q.ns == p.ns).count() > limits.shared_device_max_persons);
            if too_many {
                newly_shared.push(device.clone());
            }
        }
        // A device that becomes shared leaves its profile for one of its own.
        let mut taken: Vec<OneId> = Vec::new();
        let mut own_of: Vec<(IdKey, OneId)> = Vec::new();
        for device in &newly_shared {
            ops.push(IdentityOp::Shared { device: device.clone() });
            let current = self.one_id_of(device);
            if let Some(one_id) = &current {
                if self.with_profile(one_id, |p| p.ids.len() == 1).unwrap_or(false) {
                    own_of.push((device.clone(), one_id.clone()));
                    continue;
                }
            }
            let own = self.new_one_id(device, &taken);
            taken.push(own.clone());
            own_of.push((device.clone(), own.clone()));
            ops.extend(found(own, device.clone(), provenance(Rule::Founder)));
        }
        let mut rejected = Vec::new();
        if !newly_shared.is_empty() {
            linking.retain(|k| !newly_shared.contains(k));
            for d in &newly_shared {
                shared.push(d);
            }
            shared.sort_by(|a, b| self.by_strength(a, b));
        }
        if !linking.is_empty() {
            for d in &shared {
                let own = own_of.iter().find(|(k, _)| k == *d).map(|(_, o)| o.clone());
                rejected.push(Rejection {
                    key: (*d).clone(),
                    reason: RejectReason::SharedDevice,
                    kept_in: own.or_else(|| self.one_id_of(d)),
                });
            }
        } else {
            // Only shared devices: the event lands on the strongest device's own
            // profile (founding it if it has none).
            linking.push(shared[0]);
        }

        let mut uniques: BTreeMap<Ns, Arc<str>> = BTreeMap::new();
        let mut persons_held = 0usize;
        // Profiles joining, with the first identifier on the event that led to each.
        let mut members: Vec<(OneId, EventTime, IdKey)> = Vec::new();
        let mut fresh: Vec<IdKey> = Vec::new();
        // Refused identifiers in no profile: each founds its own.
        let mut founders: Vec<(IdKey, OneId)> = Vec::new();
        let becomes_shared = |k: &IdKey| newly_shared.contains(k);
        for key in linking {
            let current = if becomes_shared(key) { None } else { self.one_id_of(key) };
            match current {
                Some(one_id) => {
                    if members.iter().any(|(m, _, _)| *m == one_id) {
                        continue;
                    }
                    let Some(summary) = self.summary(&one_id, &newly_shared) else {
                        continue;
                    };
                    let reason = if !compatible(&uniques, &summary.uniques) {
                        Some(RejectReason::UniqueConflict)
                    } else if !(members.is_empty() && fresh.is_empty())
                        && persons_held + summary.persons > limits.max_identifiers_per_profile
                    {
                        Some(RejectReason::ProfileFull)
                    } else {
                        None
                    };
                    match reason {
                        None => {
                            uniques.extend(summary.uniques);
                            persons_held += summary.persons;
                            members.push((one_id, summary.first_seen, key.clone()));
                        }
                        Some(reason) => rejected.push(Rejection {
                            key: key.clone(),
                            reason,
                            kept_in: Some(one_id),
                        }),
                    }
                }
                None => {
                    let person = self.rules.rule(key.ns).kind == Kind::Person;
                    let conflict =
                        self.rules.rule(key.ns).unique && uniques.get(&key.ns).is_some_and(|v| *v != key.value);
                    let full = person
                        && !(members.is_empty() && fresh.is_empty())
                        && persons_held >= limits.max_identifiers_per_profile;
                    if conflict || full {
                        let own = self.new_one_id(key, &taken);
                        taken.push(own.clone());
                        rejected.push(Rejection {
                            key: key.clone(),
                            reason: if conflict {
                                RejectReason::UniqueConflict
                            } else {
                                RejectReason::ProfileFull
                            },
                            kept_in: Some(own.clone()),
                        });
                        founders.push((key.clone(), own));
                        continue;
                    }
                    if self.rules.rule(key.ns).unique {
                        uniques.insert(key.ns, key.value.clone());
                    }
                    if person {
                        persons_held += 1;
                    }
                    fresh.push(key.clone());
                }
            }
        }

        // The survivor: first seen earliest, ties by the smaller id.
        members.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
        let (one_id, anchor) = match members.first() {
            Some((one_id, _, via)) => (one_id.clone(), via.clone()),
            None => {
                // `fresh` is non-empty: the strongest identifier is never refused
                // when no profile joins.
                let founder = fresh.remove(0);
                let one_id = self.new_one_id(&founder, &taken);
                ops.extend(found(one_id.clone(), founder.clone(), provenance(Rule::Founder)));
                (one_id, founder)
            }
        };
        for (merged, _, via) in members.iter().skip(1) {
            ops.push(IdentityOp::Merge {
                survivor: one_id.clone(),
                merged: merged.clone(),
                link: LinkRecord {
                    from: via.clone(),
                    to: Some(anchor.clone()),
                    provenance: provenance(Rule::Merge),
                },
            });
        }
        for key in fresh {
            ops.push(IdentityOp::Attach {
                one_id: one_id.clone(),
                link: LinkRecord {
                    from: key,
                    to: Some(anchor.clone()),
                    provenance: provenance(Rule::SameEvent),
                },
            });
        }
        for (founder, own) in founders {
            ops.extend(found(own, founder, provenance(Rule::Founder)));
        }
        if !households.is_empty() {
            let held = self.with_profile(&one_id, |p| p.households.clone()).unwrap_or_default();
            for key in households {
                if !held.contains(key) {
                    ops.push(IdentityOp::Attach {
                        one_id: one_id.clone(),
                        link: LinkRecord {
                            from: key.clone(),
                            to: Some(anchor.clone()),
                            provenance: provenance(Rule::Household),
                        },
                    });
                }
            }
        }
        let earliest = members.iter().map(|m| m.1).min().unwrap_or(at);
        if at < earliest {
            ops.push(IdentityOp::Seen {
                one_id: one_id.clone(),
                at,
            });
        }
        let moved = members
            .iter()
            .skip(1)
            .map(|(m, _, via)| Moved {
                from: m.clone(),
                to: Some(one_id.clone()),
                via: Some(via.clone()),
            })
            .collect();
        Ok(Stitch {
            one_id,
            anchor,
            ops,
            rejected,
            moved,
            shared: newly_shared,
            dropped: 0,
            rebuilt: false,
        })
    }

    /// The One ID of a profile founded by `founder`: derived from it, or, when
    /// a profile with that id still exists (its founder left it: caps, a shared
    /// device), derived from it and a counter. Deterministic for a given fold.
    fn new_one_id(&self, founder: &IdKey, taken: &[OneId]) -> OneId {
        let name = self.rules.name(founder.ns);
        let mut one_id = derive_one_id(name, &founder.value);
        let mut n = 1u32;
        while self.profiles.contains_key(&one_id) || taken.contains(&one_id) {
            one_id = derive_one_id(name, &format!("{}\0{n}", founder.value));
            n += 1;
        }
        one_id
    }

    /// What the plan needs to know about a profile that may join.
    fn summary(&self, one_id: &str, leaving: &[IdKey]) -> Option<Summary> {
        self.with_profile(one_id, |p| {
            let ids = p.ids.iter().filter(|k| !leaving.contains(k));
            Summary {
                first_seen: p.first_seen,
                uniques: ids
                    .clone()
                    .filter(|k| self.rules.rule(k.ns).unique)
                    .map(|k| (k.ns, k.value.clone()))
                    .collect(),
                persons: ids.filter(|k| self.rules.rule(k.ns).kind == Kind::Person).count(),
            }
        })
    }

    /// Applies one op (replaying a changelog, or a second process following
    /// this one). Ops that refer to a profile that no longer exists are ignored.
    pub fn apply(&self, op: &IdentityOp) {
        let mut w = self.lock();
        self.apply_locked(&mut w, op);
    }

    /// Applies one op; returns the component an `IdentityOp::Record` joined.
    fn apply_locked(&self, w: &mut Writer, op: &IdentityOp) -> u32 {
        match op {
            IdentityOp::Record(e) => self.record(w, e),
            other => {
                self.apply_op(w, other);
                0
            }
        }
    }

    /// Adds an evidence and joins the components of its linking identifiers.
    fn record(&self, w: &mut Writer, e: &Evidence) -> u32 {
        let fp = fingerprint(&e.ids);
        let mut comps: Vec<u32> = Vec::new();
        for k in e.ids.iter().filter(|k| self.links(k)) {
            if let Some(s) = self.index.get(k) {
                if !comps.contains(&s.component) {
                    comps.push(s.component);
                }
            }
        }
        // Join into the largest component.
        comps.sort_by_key(|c| std::cmp::Reverse(w.components.get(c).map_or(0, |c| c.ids.len())));
        let target = match comps.first() {
            Some(c) => *c,
            None => {
                let c = w.next_component;
                w.next_component = w.next_component.wrapping_add(1);
                w.components.insert(c, Component::default());
                c
            }
        };
        for other in comps.iter().skip(1) {
            let Some(gone) = w.components.remove(other) else {
                continue;
            };
            for k in &gone.ids {
                if let Some(mut s) = self.index.get_mut(k) {
                    s.component = target;
                }
            }
            if let Some(t) = w.components.get_mut(&target) {
                t.ids.extend(gone.ids);
                t.evidence.extend(gone.evidence);
                t.last = t.last.clone().max(gone.last);
            }
        }
        let mut new_ids = Vec::new();
        for k in e.ids.iter().filter(|k| self.links(k)) {
            if !self.index.contains_key(k) {
                self.index.insert(
                    k.clone(),
                    Slot {
                        one_id: None,
                        former: None,
                        component: target,
                    },
                );
                new_ids.push(k.clone());
            }
        }
        let first = w.known.get(&fp).cloned();
        if let Some(t) = w.components.get_mut(&target) {
            t.ids.extend(new_ids);
            match &first {
                // An earlier occurrence of a known set: move it.
                Some(first) if e.key < *first => {
                    if let Some(old) = t.evidence.iter_mut().find(|x| x.key == *first) {
                        old.key = e.key.clone();
                    } else {
                        t.evidence.push(e.clone());
                    }
                }
                Some(_) => {
                    // Folded again after every identifier left its profile.
                    if !t.evidence.iter().any(|x| x.key == e.key) {
                        t.evidence.push(e.clone());
                    }
                }
                None => t.evidence.push(e.clone()),
            }
        }
        if first.as_ref().is_none_or(|f| e.key < *f) {
            w.known.insert(fp, e.key.clone());
        }
        target
    }

    /// Applies a fold op; returns how many links caps dropped.
    fn apply_op(&self, w: &mut Writer, op: &IdentityOp) -> usize {
        match op {
            IdentityOp::Record(e) => {
                self.record(w, e);
                0
            }
            IdentityOp::Create { one_id, at } => {
                self.profiles.entry(one_id.clone()).or_insert_with(|| Profile {
                    one_id: one_id.clone(),
                    first_seen: *at,
                    ids: Vec::new(),
                    households: Vec::new(),
                    links: Vec::new(),
                    dropped: Vec::new(),
                });
                0
            }
            IdentityOp::Attach { one_id, link } => {
                let household = link.provenance.rule == Rule::Household;
                let dropped = {
                    let Some(mut p) = self.profiles.get_mut(one_id) else {
                        return 0;
                    };
                    if household {
                        p.households.push(link.from.clone());
                    } else {
                        p.ids.push(link.from.clone());
                    }
                    p.links.push(link.clone());
                    self.enforce_caps(&mut p)
                };
                if !household {
                    self.set_slot(w, &link.from, Some(one_id.clone()));
                }
                self.drop_links(&dropped, one_id);
                dropped.len()
            }
            IdentityOp::Merge { survivor, merged, link } => {
                if !self.profiles.contains_key(survivor) {
                    return 0;
                }
                let Some((_, gone)) = self.profiles.remove(merged) else {
                    return 0;
                };
                for key in &gone.ids {
                    if let Some(mut s) = self.index.get_mut(key) {
                        s.one_id = Some(survivor.clone());
                    }
                }
                for key in &gone.dropped {
                    if let Some(mut s) = self.index.get_mut(key) {
                        if s.one_id.is_none() {
                            s.former = Some(survivor.clone());
                        }
                    }
                }
                let dropped = {
                    let Some(mut p) = self.profiles.get_mut(survivor) else {
                        return 0;
                    };
                    p.first_seen = p.first_seen.min(gone.first_seen);
                    p.ids.extend(gone.ids);
                    for h in gone.households {
                        if !p.households.contains(&h) {
                            p.households.push(h);
                        }
                    }
                    p.links.extend(gone.links);
                    p.links.push(link.clone());
                    p.dropped.extend(gone.dropped);
                    self.enforce_caps(&mut p)
                };
                self.drop_links(&dropped, survivor);
                dropped.len()
            }
            IdentityOp::Seen { one_id, at } => {
                if let Some(mut p) = self.profiles.get_mut(one_id) {
                    p.first_seen = p.first_seen.min(*at);
                }
                0
            }
            IdentityOp::DevicePerson { device, person, at } => {
                let window = self.rules.limits().shared_device_window;
                let stat = w.devices.entry(device.clone()).or_default();
                if !stat.shared {
                    stat.persons.retain(|(t, _)| *t >= at.minus(window));
                    if !stat.persons.iter().any(|(_, p)| p == person) {
                        stat.persons.push((*at, person.clone()));
                    }
                }
                0
            }
            IdentityOp::Shared { device } => {
                let stat = w.devices.entry(device.clone()).or_default();
                stat.shared = true;
                stat.persons = Vec::new();
                // It leaves a profile it shares with other identifiers; a
                // profile of its own it keeps.
                if let Some(one_id) = self.one_id_of(device) {
                    let left = self.profiles.get_mut(&one_id).is_some_and(|mut p| {
                        let alone = p.ids.len() == 1;
                        if !alone {
                            p.ids.retain(|k| k != device);
                            p.links.retain(|l| l.from != *device);
                        }
                        !alone
                    });
                    if left {
                        self.unindex(std::slice::from_ref(device), &one_id);
                    }
                }
                0
            }
            IdentityOp::Dissolve { one_id } => {
                if let Some((_, p)) = self.profiles.remove(one_id) {
                    self.unindex(&p.ids, one_id);
                }
                0
            }
            IdentityOp::Forget { one_id } => {
                self.erase(w, one_id);
                0
            }
        }
    }

    fn set_slot(&self, w: &mut Writer, key: &IdKey, one_id: Option<OneId>) {
        match self.index.get_mut(key) {
            Some(mut s) => {
                s.one_id = one_id;
                s.former = None;
            }
            None => {
                // Applied from a changelog without its Record: give it a component.
                let c = w.next_component;
                w.next_component = w.next_component.wrapping_add(1);
                w.components.insert(
                    c,
                    Component {
                        ids: vec![key.clone()],
                        ..Component::default()
                    },
                );
                self.index.insert(
                    key.clone(),
                    Slot {
                        one_id,
                        former: None,
                        component: c,
                    },
                );
            }
        }
    }

    /// Takes identifiers out of a profile's index entries (they stay in their component).
    fn unindex(&self, keys: &[IdKey], one_id: &OneId) {
        for k in keys {
            if let Some(mut s) = self.index.get_mut(k) {
                if s.one_id.as_ref() == Some(one_id) {
                    s.one_id = None;
                }
            }
        }
    }

    /// Takes identifiers a cap dropped out of the index, remembering where they were.
    fn drop_links(&self, keys: &[IdKey], one_id: &OneId) {
        for k in keys {
            if let Some(mut s) = self.index.get_mut(k) {
                if s.one_id.as_ref() == Some(one_id) {
                    s.one_id = None;
                    s.former = Some(one_id.clone());
                }
            }
        }
    }

    /// Drops the oldest device links of a profile over its caps; returns them.
    fn enforce_caps(&self, p: &mut Profile) -> Vec<IdKey> {
        let limits = self.rules.limits();
        let mut dropped = Vec::new();
        loop {
            let over_ns = p.ids.iter().find_map(|k| {
                let cap = self.rules.rule(k.ns).max_per_profile?;
                (p.ids.iter().filter(|x| x.ns == k.ns).count() > usize::from(cap)).then_some(k.ns)
            });
            let households_over = p.households.iter().find_map(|k| {
                let cap = self.rules.rule(k.ns).max_per_profile?;
                (p.households.iter().filter(|x| x.ns == k.ns).count() > usize::from(cap)).then_some(k.ns)
            });
            if let Some(ns) = households_over {
                if let Some(i) = p.households.iter().position(|k| k.ns == ns) {
                    let k = p.households.remove(i);
                    p.links.retain(|l| l.from != k);
                }
                continue;
            }
            let victim_ns = match over_ns {
                Some(ns) => Some(ns),
                None if p.ids.len() > limits.max_identifiers_per_profile => None,
                None => break,
            };
            // The oldest link (by event time, then join order) of that namespace,
            // or of any device namespace.
            let victim = p
                .links
                .iter()
                .filter(|l| p.ids.contains(&l.from))
                .filter(|l| match victim_ns {
                    Some(ns) => l.from.ns == ns,
                    None => self.rules.rule(l.from.ns).kind == Kind::Device,
                })
                .min_by_key(|l| l.provenance.at)
                .map(|l| l.from.clone());
            let Some(victim) = victim else {
                break;
            };
            p.ids.retain(|k| *k != victim);
            p.links.retain(|l| l.from != victim);
            p.dropped.push(victim.clone());
            dropped.push(victim);
        }
        dropped
    }

    /// Forgets the profile `key` belongs to: removes it and its identifiers and
    /// suppresses them. `None` when no profile holds `key`.
    pub fn forget(&self, key: &IdKey) -> Option<(IdentityOp, Forgotten)> {
        let one_id = self.one_id_of(key)?;
        let ids = self.with_profile(&one_id, |p| p.ids.iter().chain(&p.households).cloned().collect())?;
        let op = IdentityOp::Forget { one_id: one_id.clone() };
        self.apply(&op);
        Some((op, Forgotten { one_id, ids }))
    }

    fn erase(&self, w: &mut Writer, one_id: &OneId) {
        let Some((_, p)) = self.profiles.remove(one_id) else {
            return;
        };
        // Dropped identifiers go too, unless another profile holds them now.
        let orphaned = p
            .dropped
            .iter()
            .filter(|k| self.index.get(*k).is_none_or(|s| s.one_id.is_none()));
        let gone: HashSet<&IdKey> = p.ids.iter().chain(&p.households).chain(orphaned).collect();
        let mut comps = BTreeSet::new();
        for k in &gone {
            w.suppressed.insert(self.suppression_entry(k));
            if let Some((_, s)) = self.index.remove(*k) {
                comps.insert(s.component);
            }
            w.devices.remove(*k);
        }
        for stat in w.devices.values_mut() {
            stat.persons.retain(|(_, q)| !gone.contains(q));
        }
        // Strip the erased identifiers from the evidence, so no rebuild
        // brings them back; a set left empty disappears.
        for c in comps {
            let Some(comp) = w.components.get_mut(&c) else {
                continue;
            };
            comp.ids.retain(|k| !gone.contains(k));
            let mut kept: Vec<Evidence> = Vec::with_capacity(comp.evidence.len());
            let mut refingerprint = Vec::new();
            for e in std::mem::take(&mut comp.evidence) {
                if !e.ids.iter().any(|k| gone.contains(k)) {
                    kept.push(e);
                    continue;
                }
                refingerprint.push((fingerprint(&e.ids), None));
                let ids: Vec<IdKey> = e.ids.iter().filter(|k| !gone.contains(k)).cloned().collect();
                if ids.iter().any(|k| self.links(k)) {
                    let stripped = Evidence {
                        key: e.key,
                        ids: Arc::from(ids),
                    };
                    refingerprint.push((fingerprint(&stripped.ids), Some(stripped.key.clone())));
                    kept.push(stripped);
                }
            }
            comp.evidence = kept;
            for (fp, key) in refingerprint {
                match key {
                    None => {
                        w.known.remove(&fp);
                    }
                    Some(key) => {
                        let first = w.known.entry(fp).or_insert_with(|| key.clone());
                        if key < *first {
                            *first = key;
                        }
                    }
                }
            }
        }
    }

    /// The suppression entry of an identifier: 16 bytes of SHA-256 over its
    /// namespace and value (email and phone values are hashes already).
    fn suppression_entry(&self, key: &IdKey) -> [u8; 16] {
        let mut h = Sha256::new();
        h.update(b"onejourney/forget/v1\0");
        h.update(self.rules.name(key.ns).as_bytes());
        h.update(b"\0");
        h.update(key.value.as_bytes());
        let digest = h.finalize();
        let mut out = [0u8; 16];
        out.copy_from_slice(&digest[..16]);
        out
    }

    /// Whether a forget request suppressed `key`.
    pub fn is_suppressed(&self, key: &IdKey) -> bool {
        let w = self.lock();
        !w.suppressed.is_empty() && w.suppressed.contains(&self.suppression_entry(key))
    }
}

struct Summary {
    first_seen: EventTime,
    uniques: Uniques,
    persons: usize,
}

/// The values a profile holds in unique namespaces.
type Uniques = Vec<(Ns, Arc<str>)>;

fn compatible(acc: &BTreeMap<Ns, Arc<str>>, theirs: &[(Ns, Arc<str>)]) -> bool {
    theirs.iter().all(|(ns, v)| acc.get(ns).is_none_or(|mine| mine == v))
}

/// The ops that found a new profile `one_id` on `founder`.
fn found(one_id: OneId, founder: IdKey, provenance: Provenance) -> [IdentityOp; 2] {
    [
        IdentityOp::Create {
            one_id: one_id.clone(),
            at: provenance.at,
        },
        IdentityOp::Attach {
            one_id,
            link: LinkRecord {
                from: founder,
                to: None,
                provenance,
            },
        },
    ]
}

/// A 128-bit fingerprint of a sorted identifier set.
fn fingerprint(ids: &[IdKey]) -> u128 {
    let half = |salt: u8| {
        let mut h = std::hash::DefaultHasher::new();
        salt.hash(&mut h);
        ids.hash(&mut h);
        h.finish()
    };
    (u128::from(half(1)) << 64) | u128::from(half(2))
}

/// `oj-` and 24 hex digits of SHA-256 over the founding identifier.
pub fn derive_one_id(namespace: &str, value: &str) -> OneId {
    let mut h = Sha256::new();
    h.update(b"onejourney/one-id/v1\0");
    h.update(namespace.as_bytes());
    h.update(b"\0");
    h.update(value.as_bytes());
    let digest = h.finalize();
    Arc::from(format!("oj-{}", hex::encode(&digest[..12])))
}
