//! One allocation per text after a restore: [`IdentityGraph::reshare`].
//!
//! In: a graph just read back (a snapshot's `Vec`s, or an identity log
//! replayed op by op), where every occurrence of a One ID, an identifier's
//! value or an event id is an allocation of its own. Out: the same graph
//! with every occurrence pointing at one allocation per text, as the live
//! graph holds them (the index's key for an identifier, the profile map's
//! key for a One ID, the evidence's key for an event id); the identifier a
//! caller is about to store ([`IdentityGraph::shared_key`]).
//!
//! What it keeps: nothing changes but where the texts live. The state
//! estimate counts each text once (`tally.rs`); without this pass a restored
//! engine held about 860 bytes a profile more than the one that wrote the
//! snapshot (5M profiles, session 12), unseen by the estimate and by
//! `max_memory_bytes`.

use std::sync::Arc;

use super::component::Component;
use super::types::OneId;
use super::IdentityGraph;
use crate::hash::HashSet;
use crate::ids::{ArcStr, IdKey};

impl IdentityGraph {
    /// The identifier as the index holds it (`k` itself when not indexed).
    pub fn shared_key(&self, k: IdKey) -> IdKey {
        match self.index.get(&k) {
            Some(r) => r.key().clone(),
            None => k,
        }
    }

    /// A [`Sharer`] that has met no text yet (the graph's own are found
    /// in its maps).
    pub fn sharer(&self) -> Sharer<'_> {
        Sharer {
            graph: self,
            events: HashSet::default(),
            others: HashSet::default(),
            gone: HashSet::default(),
        }
    }

    /// Points every copy of a One ID, identifier or event id in the graph
    /// at one allocation per text. Run once after a restore or a replay,
    /// before the graph is shared with readers. Returns the texts it met,
    /// for what the caller loads next (the timers).
    pub fn reshare(&self) -> Sharer<'_> {
        let mut s = self.sharer();
        // Each identifier's index copy goes to the profile it is in, and
        // the slot takes the profile's One ID: one lookup per identifier.
        for mut entry in self.index.iter_mut() {
            let (k, slot) = entry.pair_mut();
            let Some(one_id) = slot.one_id.take() else {
                continue;
            };
            slot.one_id = Some(match self.profiles.get_mut(&*one_id) {
                Some(mut p) => {
                    // The profile takes the index's copy of `k` wherever it holds it.
                    p.adopt(k);
                    p.key().clone()
                }
                None => s.one_id(one_id),
            });
        }
        for mut entry in self.profiles.iter_mut() {
            let (key, p) = entry.pair_mut();
            p.one_id = key.clone();
            let (ids, links) = p.texts_mut();
            if let Some(event_id) = links.event_id_mut() {
                s.event(event_id);
            }
            for link in links.listed_in_place().map_or(&mut [][..], |l| l.as_mut_slice()) {
                s.event(&mut link.provenance.event_id);
                // Ends no longer among its identifiers (dropped, moved).
                for end in std::iter::once(&mut link.from).chain(link.to.as_mut()) {
                    if !ids.iter().any(|x| IdKey::ptr_eq(x, end)) {
                        *end = s.key(end.clone());
                    }
                }
            }
            if let Some(rare) = p.rare_lists_mut() {
                s.keys(&mut rare.households);
                s.keys(&mut rare.dropped);
                for r in rare.refused.iter_mut() {
                    r.key = s.key(r.key.clone());
                    s.event(&mut r.event_id);
                }
            }
        }
        let mut guard = self.lock();
        let w = &mut *guard;
        for c in w.components.values_mut() {
            s.component(c);
        }
        for fk in w.known.values_mut() {
            s.event(&mut fk.event_id);
        }
        let devices = std::mem::take(&mut w.devices);
        w.devices = devices
            .into_iter()
            .map(|(k, mut d)| {
                for (_, person) in d.persons.as_mut_slice() {
                    *person = s.key(person.clone());
                }
                (s.key(k), d)
            })
            .collect();
        let formers = std::mem::take(&mut w.formers);
        w.formers = formers.into_iter().map(|(k, o)| (s.key(k), s.one_id(o))).collect();
        drop(guard);
        s
    }
}

/// Components with more identifiers than this look each evidence
/// identifier up in the index instead of among the component's own.
const SCAN_COMPONENT: usize = 64;

/// The texts met so far in a [`IdentityGraph::reshare`] pass: identifiers
/// from the index (or, for those not in it, the first copy met), event ids
/// the first copy met.
pub struct Sharer<'a> {
    graph: &'a IdentityGraph,
    events: HashSet<ArcStr>,
    /// Identifiers not in the index (households, dropped, forgotten).
    others: HashSet<IdKey>,
    /// One IDs no profile has.
    gone: HashSet<OneId>,
}

impl Sharer<'_> {
    /// The identifier as the graph holds it.
    pub fn key(&mut self, k: IdKey) -> IdKey {
        match self.graph.index.get(&k) {
            Some(r) => r.key().clone(),
            None => first_met(&mut self.others, k),
        }
    }

    /// The One ID as the graph holds it (one no profile has, as first met:
    /// a journey and the timers of a profile merged away share it).
    pub fn one_id(&mut self, one_id: OneId) -> OneId {
        match self.profiled(&one_id) {
            Some(p) => p,
            None => first_met(&mut self.gone, one_id),
        }
    }

    /// The profile map's One ID, when a profile has it.
    pub fn profiled(&self, one_id: &str) -> Option<OneId> {
        self.graph.profiles.get(one_id).map(|p| p.key().clone())
    }

    /// A component's identifiers from the index; its evidence's from the
    /// component's (they are among them, but for those that never link).
    fn component(&mut self, c: &mut Component) {
        let (ids, evidence) = c.parts_mut();
        ids.map(|k| self.key(k));
        for e in evidence.iter_mut() {
            self.event(&mut e.key.event_id);
            let shared: Vec<IdKey> = e
                .ids
                .iter()
                .map(|k| match ids.iter().take(SCAN_COMPONENT).find(|x| *x == k) {
                    Some(x) if ids.len() <= SCAN_COMPONENT => x.clone(),
                    _ => self.key(k.clone()),
                })
                .collect();
            e.ids = Arc::from(shared);
            ids.share_with(&e.ids);
        }
    }

    fn keys(&mut self, keys: &mut [IdKey]) {
        for k in keys.iter_mut() {
            *k = self.key(k.clone());
        }
    }

    fn event(&mut self, id: &mut ArcStr) {
        *id = first_met(&mut self.events, id.clone());
    }
}

/// The copy of `v` that `met` holds, `v` itself (kept) when it holds none.
fn first_met<T: Eq + std::hash::Hash + Clone>(met: &mut HashSet<T>, v: T) -> T {
    if let Some(seen) = met.get(&v) {
        return seen.clone();
    }
    met.insert(v.clone());
    v
}

/// How many allocations hold the texts a state refers to, and how many
/// references point at them, per kind of text (tests only).
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct Census {
    pub one_ids: crate::hash::HashMap<usize, usize>,
    pub ids: crate::hash::HashMap<usize, usize>,
    pub events: crate::hash::HashMap<usize, usize>,
}

#[cfg(test)]
impl Census {
    pub fn one_id(&mut self, id: &OneId) {
        *self.one_ids.entry(id.as_ptr() as usize).or_default() += 1;
    }

    pub fn id(&mut self, k: &IdKey) {
        *self.ids.entry(k.addr()).or_default() += 1;
    }

    fn event(&mut self, e: &ArcStr) {
        *self.events.entry(e.as_ptr() as usize).or_default() += 1;
    }

    /// (allocations, references) per kind: One IDs, identifiers, event ids.
    pub fn counts(&self) -> [(usize, usize); 3] {
        let sum = |m: &crate::hash::HashMap<usize, usize>| (m.len(), m.values().sum());
        [sum(&self.one_ids), sum(&self.ids), sum(&self.events)]
    }
}

#[cfg(test)]
impl IdentityGraph {
    /// Every text the graph refers to, counted into `c`.
    pub(crate) fn census(&self, c: &mut Census) {
        let w = self.lock();
        for p in self.profiles.iter() {
            c.one_id(p.key());
            c.one_id(&p.one_id);
            p.ids()
                .iter()
                .chain(p.households())
                .chain(p.dropped())
                .for_each(|k| c.id(k));
            for l in p.links() {
                c.id(&l.from);
                l.to.iter().for_each(|k| c.id(k));
                c.event(&l.provenance.event_id);
            }
        }
        for s in self.index.iter() {
            c.id(s.key());
            s.one_id.iter().for_each(|o| c.one_id(o));
        }
        for comp in w.components.values() {
            comp.ids.iter().for_each(|k| c.id(k));
            for e in comp.evidence() {
                c.event(&e.key.event_id);
                e.ids.iter().for_each(|k| c.id(k));
            }
        }
        w.known.values().for_each(|k| c.event(&k.event_id));
        for (k, d) in &w.devices {
            c.id(k);
            d.persons.iter().for_each(|(_, p)| c.id(p));
        }
        for (k, o) in &w.formers {
            c.id(k);
            c.one_id(o);
        }
    }
}
