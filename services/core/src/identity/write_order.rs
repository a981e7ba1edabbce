//! The order a snapshot writes the graph's index, components and devices
//! in: the profiles' order.
//!
//! In: the graph, with nothing changing it while a snapshot is written
//! (the snapshot holds the writer lock for the graph's sections, and the
//! processor applies nothing while it writes the rest). Out: every entry
//! of the index, every component and every device, handed to a callback
//! exactly once. First those a profile reaches, in the order the snapshot
//! writes the profiles and a profile's identifiers in its own order; then
//! the rest, in the index's order for the components, in their own maps'
//! order for the others. Also the profiles' One IDs in that order, for the
//! journeys and timers written after the graph
//! ([`IdentityGraph::each_one_id_in_profile_order`]). Keeps nothing.
//!
//! Why: a snapshot's reader numbers the texts as it first reads them, and
//! allocates them in that order, profiles first. A later reference to a
//! text reads its entry in the table and touches its allocation (the
//! shared count). Written in hash order, the index's and the components'
//! references each landed at random in gigabytes of table and heap: a
//! cache miss each, 44% of a 10M restore's read in session 33's profile.
//! In the profiles' order they walk both forward. The order is not part of
//! the format: the reader puts every entry in a map, and a snapshot written
//! in any order reads the same.

use super::component::Component;
use super::{DeviceStat, IdentityGraph, OneId, Slot, Writer};
use crate::ids::{IdKey, Kind};

impl IdentityGraph {
    /// Calls `f` with every profile's One ID, in the order a snapshot
    /// writes the profiles: for the maps keyed by One ID that a snapshot
    /// writes after the graph (journeys, timers), so that their references
    /// follow the profiles' texts as the index's do. The order is the
    /// profiles map's own, the same as the snapshot's while nothing changes
    /// the graph in between (the caller's to ensure: a snapshot is written
    /// with the processor applying nothing). Takes no lock: `f` may call
    /// anything.
    pub fn each_one_id_in_profile_order<E>(&self, mut f: impl FnMut(&OneId) -> Result<(), E>) -> Result<(), E> {
        for p in self.profiles.iter() {
            f(p.key())?;
        }
        Ok(())
    }
}

/// Calls `f` with every entry of the index once. Those reached first: an
/// identifier a profile lists whose slot names that profile, at its first
/// place in the list, in the profiles' order. The others after (dropped
/// identifiers, shared devices, anything a profile does not list).
pub(super) fn each_index_entry<E>(
    g: &IdentityGraph,
    mut f: impl FnMut(&IdKey, &Slot) -> Result<(), E>,
) -> Result<(), E> {
    let mut reached = 0usize;
    for p in g.profiles.iter() {
        let ids: &[IdKey] = p.value().ids();
        for (i, k) in ids.iter().enumerate() {
            if ids[..i].contains(k) {
                continue;
            }
            if let Some(slot) = g.index.get(k) {
                if slot.one_id.as_ref() == Some(p.key()) {
                    reached += 1;
                    // The index's own key (the allocation every copy shares).
                    f(slot.key(), slot.value())?;
                }
            }
        }
    }
    if reached < g.index.len() {
        for r in g.index.iter() {
            if !reached_by_profile(g, r.key(), r.value()) {
                f(r.key(), r.value())?;
            }
        }
    }
    Ok(())
}

/// Whether [`each_index_entry`]'s first pass hands this entry out.
fn reached_by_profile(g: &IdentityGraph, k: &IdKey, slot: &Slot) -> bool {
    slot.one_id
        .as_ref()
        .and_then(|o| g.profiles.get(o))
        .is_some_and(|p| p.ids().contains(k))
}

/// Calls `f` with every device once: first those a profile reaches as
/// [`each_index_entry`] reaches index entries (a profile's identifier, at
/// its first place, whose slot names the profile), in the profiles' order;
/// then the others (a shared device is in no profile).
pub(super) fn each_device<'w, E>(
    g: &IdentityGraph,
    w: &'w Writer,
    mut f: impl FnMut(&'w IdKey, &'w DeviceStat) -> Result<(), E>,
) -> Result<(), E> {
    if w.devices.is_empty() {
        return Ok(());
    }
    let mut reached = 0usize;
    for p in g.profiles.iter() {
        let ids: &[IdKey] = p.value().ids();
        for (i, k) in ids.iter().enumerate() {
            // Only a device's namespace holds devices: the others are not
            // looked up (one hash probe each saved). A device under another
            // namespace (the table changed since it was recorded) goes in
            // the second pass.
            if !is_device(g, k) {
                continue;
            }
            let Some((key, device)) = w.devices.get_key_value(k) else {
                continue;
            };
            let names_it = g.index.get(k).is_some_and(|s| s.one_id.as_ref() == Some(p.key()));
            if names_it && !ids[..i].contains(k) {
                reached += 1;
                f(key, device)?;
            }
        }
    }
    if reached < w.devices.len() {
        for (k, device) in &w.devices {
            // The first pass's test, the namespace's kind included.
            let reached = is_device(g, k) && g.index.get(k).is_some_and(|s| reached_by_profile(g, k, &s));
            if !reached {
                f(k, device)?;
            }
        }
    }
    Ok(())
}

/// Whether `k`'s namespace is a device's (one the table does not have is
/// not).
fn is_device(g: &IdentityGraph, k: &IdKey) -> bool {
    g.rules.kind_of(k.ns()) == Some(Kind::Device)
}

/// Calls `f` with every component once: first those `met` names (the
/// components of the index's entries in the order [`each_index_entry`]
/// handed them out: the profiles' order, then the index's for entries no
/// profile reaches), then the others.
pub(super) fn each_component<'w, E>(
    w: &'w Writer,
    met: &[u32],
    mut f: impl FnMut(u32, &'w Component) -> Result<(), E>,
) -> Result<(), E> {
    let mut done = Marks::for_components(w);
    let mut reached = 0usize;
    for &c in met {
        let Some(component) = w.components.get(&c) else {
            continue;
        };
        if done.mark(c) {
            reached += 1;
            f(c, component)?;
        }
    }
    if reached < w.components.len() {
        for (&c, component) in &w.components {
            if !done.is_marked(c) {
                f(c, component)?;
            }
        }
    }
    Ok(())
}

/// The components handed out, one bit each by number. Numbers are given
/// out in order (`next_component`), so the bits are few; a number beyond
/// the cap (eight bytes a component, for a graph whose numbers ran far
/// ahead of its components) is never marked, and its component is left to
/// the second pass.
struct Marks(Vec<u64>);

impl Marks {
    fn for_components(w: &Writer) -> Marks {
        let cap = w.components.len().saturating_mul(64).saturating_add(1 << 16);
        let bits = usize::try_from(w.next_component).unwrap_or(usize::MAX).min(cap);
        Marks(vec![0; bits.div_ceil(64)])
    }

    /// Marks `c`; true when it was not marked before and can be.
    fn mark(&mut self, c: u32) -> bool {
        let (word, bit) = Self::place(c);
        match self.0.get_mut(word) {
            Some(w) if *w & bit == 0 => {
                *w |= bit;
                true
            }
            _ => false,
        }
    }

    fn is_marked(&self, c: u32) -> bool {
        let (word, bit) = Self::place(c);
        self.0.get(word).is_some_and(|w| w & bit != 0)
    }

    fn place(c: u32) -> (usize, u64) {
        let c = c as usize;
        (c / 64, 1u64 << (c % 64))
    }
}

#[cfg(test)]
#[path = "write_order_tests.rs"]
mod tests;
