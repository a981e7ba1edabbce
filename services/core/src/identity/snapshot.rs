//! The graph written to a snapshot and read back.
//!
//! In: the live graph ([`IdentityGraph::snapshot`]) or a decoded
//! [`IdentitySnapshot`] ([`IdentityGraph::restore`]). Out: a value that
//! serialises without copying the maps; a graph equal to the one written.
//!
//! What it keeps: the format. [`IdentitySnapshotRef`] writes the fields of
//! [`IdentitySnapshot`] under the same names and in the same order (profiles,
//! index, components, next_component, devices, suppressed), and the types
//! inside (`Profile`, `Slot`, `Component`, `DeviceStat`) keep their serde
//! fields; changing any of them is a snapshot version bump. An index slot is
//! written as it always was (`one_id`, `former`, `component`): in memory the
//! rare `former` sits in the writer's `formers` map, joined in on the way
//! out and split off on the way in. Fingerprints are
//! not written: they depend on the hasher of the build and are recomputed.
//! How One IDs are derived is recorded by the processor's snapshot
//! (`one_ids`) and handed to [`IdentityGraph::restore`].

use std::cell::RefCell;
use std::sync::MutexGuard;

use serde::{Deserialize, Serialize};

use super::component::Component;
use super::tally::{component_bytes, device_bytes, profile_size, slot_bytes, Sums};
use super::types::{OneId, Profile};
use super::Derivation;
use super::{fingerprint, write_order, DeviceStat, IdentityGraph, Slot, Writer};
use crate::ids::IdKey;

/// An index slot as a snapshot holds it (field names and order are the format).
#[derive(Serialize, Deserialize)]
struct SlotRecord {
    #[serde(
        default,
        serialize_with = "crate::intern::write_opt_one_id",
        deserialize_with = "crate::intern::opt_one_id"
    )]
    one_id: Option<OneId>,
    #[serde(
        default,
        serialize_with = "crate::intern::write_opt_one_id",
        deserialize_with = "crate::intern::opt_one_id"
    )]
    former: Option<OneId>,
    component: u32,
}

/// The index as a sequence of `(identifier, slot)`, the formers joined in;
/// in the profiles' order (`write_order.rs`), noting the components its
/// entries name in that order for [`Components`] (which would otherwise
/// look every identifier up again).
struct IndexEntries<'a> {
    graph: &'a IdentityGraph,
    writer: &'a Writer,
    met: &'a RefCell<Vec<u32>>,
}

impl Serialize for IndexEntries<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        crate::snapshot::exact_seq_with(s, self.graph.index.len(), |emit| {
            let mut met = self.met.borrow_mut();
            write_order::each_index_entry(self.graph, |k, slot| {
                if met.last() != Some(&slot.component) {
                    met.push(slot.component);
                }
                let record = SlotRecord {
                    one_id: slot.one_id.clone(),
                    former: self.writer.formers.get(k).cloned(),
                    component: slot.component,
                };
                emit((k.clone(), record))
            })
        })
    }
}

/// The components as a sequence of `(number, component)`, in the order
/// the index's entries named them (`write_order.rs`).
struct Components<'a> {
    writer: &'a Writer,
    met: &'a RefCell<Vec<u32>>,
}

impl Serialize for Components<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let met = std::mem::take(&mut *self.met.borrow_mut());
        crate::snapshot::exact_seq_with(s, self.writer.components.len(), |emit| {
            write_order::each_component(self.writer, &met, |c, component| emit((c, component)))
        })
    }
}

/// The devices as a sequence of `(identifier, device)`, in the profiles'
/// order (`write_order.rs`).
struct Devices<'a> {
    graph: &'a IdentityGraph,
    writer: &'a Writer,
}

impl Serialize for Devices<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        crate::snapshot::exact_seq_with(s, self.writer.devices.len(), |emit| {
            write_order::each_device(self.graph, self.writer, |k, device| emit((k, device)))
        })
    }
}

/// The graph as a snapshot holds it (see [`IdentityGraph::snapshot`]).
#[derive(Deserialize)]
pub struct IdentitySnapshot {
    #[serde(deserialize_with = "crate::snapshot::presized")]
    profiles: Vec<Profile>,
    #[serde(deserialize_with = "crate::snapshot::presized")]
    index: Vec<(IdKey, SlotRecord)>,
    #[serde(deserialize_with = "crate::snapshot::presized")]
    components: Vec<(u32, Component)>,
    next_component: u32,
    #[serde(deserialize_with = "crate::snapshot::presized")]
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
        use crate::snapshot::DashValues;
        use serde::ser::SerializeStruct;
        let w = &self.writer;
        // About one component a profile (its identifiers share one).
        let met = RefCell::new(Vec::with_capacity(self.graph.profiles.len()));
        let mut st = s.serialize_struct("IdentitySnapshot", 6)?;
        st.serialize_field("profiles", &DashValues(&self.graph.profiles))?;
        st.serialize_field(
            "index",
            &IndexEntries {
                graph: self.graph,
                writer: w,
                met: &met,
            },
        )?;
        st.serialize_field("components", &Components { writer: w, met: &met })?;
        st.serialize_field("next_component", &w.next_component)?;
        st.serialize_field(
            "devices",
            &Devices {
                graph: self.graph,
                writer: w,
            },
        )?;
        st.serialize_field("suppressed", &w.suppressed)?;
        st.end()
    }
}

impl IdentityGraph {
    /// Everything the graph holds, to serialise without copying it.
    pub fn snapshot(&self) -> IdentitySnapshotRef<'_> {
        IdentitySnapshotRef {
            graph: self,
            writer: self.lock(),
        }
    }

    /// Loads a snapshot into this graph, which must be empty; it goes on
    /// deriving One IDs and suppression entries the way the snapshot's did.
    pub fn restore(&self, mut snap: IdentitySnapshot, derivation: Derivation) {
        let g = self;
        let mut w = g.lock();
        let profiles = snap.profiles;
        // The profiles and the index are maps apart: each filled on a
        // thread of its own. The sums readers see are added up as the
        // entries go in, not by a walk of the filled maps after (6% of a
        // 1M restore, session 23's profile).
        let mut sums = std::thread::scope(|s| {
            let profiles = s.spawn(move || {
                crate::hash::reserve(&g.profiles, profiles.len());
                let mut sums = Sums::default();
                for p in profiles {
                    sums.profile_in(profile_size(&p));
                    g.profiles.insert(p.one_id.clone(), p);
                }
                sums
            });
            crate::hash::reserve(&g.index, snap.index.len());
            let mut index = 0;
            for (k, slot) in snap.index {
                if let Some(former) = slot.former {
                    w.formers.insert(k.clone(), former);
                }
                index += slot_bytes(&k);
                g.index.insert(
                    k,
                    Slot {
                        one_id: slot.one_id,
                        component: slot.component,
                    },
                );
            }
            let mut sums = profiles.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
            sums.resized(0, index);
            sums
        });
        {
            // Fingerprints are recomputed, not stored: they depend on the
            // hasher of this build.
            let mut other = 0;
            w.known
                .reserve(snap.components.iter().map(|(_, c)| c.evidence().len()).sum());
            for (_, c) in &mut snap.components {
                let (ids, evidence) = c.parts_mut();
                for e in evidence.iter() {
                    ids.share_with(&e.ids);
                    let first = w.known.entry(fingerprint(&e.ids)).or_insert_with(|| e.key.clone());
                    if e.key < *first {
                        *first = e.key.clone();
                    }
                }
                other += component_bytes(c);
            }
            other += snap.devices.iter().map(|(_, d)| device_bytes(d)).sum::<usize>();
            sums.resized(0, other);
            w.components = snap.components.into_iter().collect();
            w.next_component = snap.next_component;
            w.devices = snap.devices.into_iter().collect();
            w.suppressed = snap.suppressed.into_iter().collect();
            w.derivation = derivation;
            w.sums = sums;
            g.publish(&w);
        }
    }
}

#[cfg(test)]
impl IdentitySnapshot {
    /// The order its sections hold their entries in: each profile's One ID
    /// and identifiers, the index's identifiers with their slot's One ID,
    /// the components' numbers, the devices' identifiers.
    pub(super) fn written_order(&self) -> WrittenOrder {
        WrittenOrder {
            profiles: self
                .profiles
                .iter()
                .map(|p| (p.one_id.clone(), p.ids().to_vec()))
                .collect(),
            index: self.index.iter().map(|(k, s)| (k.clone(), s.one_id.clone())).collect(),
            components: self.components.iter().map(|(c, _)| *c).collect(),
            devices: self.devices.iter().map(|(k, _)| k.clone()).collect(),
        }
    }

    /// Its profiles' One IDs, in the order it holds them.
    pub(crate) fn profile_one_ids(&self) -> Vec<OneId> {
        self.profiles.iter().map(|p| p.one_id.clone()).collect()
    }
}

/// See [`IdentitySnapshot::written_order`].
#[cfg(test)]
pub(super) struct WrittenOrder {
    pub(super) profiles: Vec<(OneId, Vec<IdKey>)>,
    pub(super) index: Vec<(IdKey, Option<OneId>)>,
    pub(super) components: Vec<u32>,
    pub(super) devices: Vec<IdKey>,
}
