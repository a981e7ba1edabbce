//! The graph's size, kept as it changes: how many profiles, how many
//! identifiers are in them, and an estimate of the bytes the graph holds.
//!
//! In: every change to a profile, an index slot, a component or a device's
//! counts, as the entry's size before and after (from `apply.rs`, `fold.rs`,
//! `forget.rs`; `snapshot.rs` counts once after a restore). Out:
//! [`IdentityGraph::tally`], three numbers read without a lock, so a metrics
//! scrape costs nothing however large the graph; and
//! [`IdentityGraph::recount`], the same numbers by a walk of everything, which
//! the tests hold the running sums to.
//!
//! What it keeps: the estimate is a sum of per-entry sizes (the `*_bytes`
//! functions below are its only definition), so taking an entry's size before
//! a change and adding its size after keeps the running sum equal to a full
//! walk. Sizes that follow from a length alone (the `known` fingerprints, the
//! suppression entries, the `formers` of cap-dropped identifiers) are added
//! when the numbers are published.

use std::mem::size_of;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::component::Component;
use super::types::{Evidence, EvidenceKey, OneId, Profile};
use super::{DeviceStat, IdentityGraph, Slot, Writer};
use crate::ids::IdKey;

/// A fixed per-entry overhead for the hash maps.
const MAP_ENTRY: usize = 16;
const KNOWN_ENTRY: usize = size_of::<(super::Fingerprint, EvidenceKey)>() + MAP_ENTRY;
const SUPPRESSED_ENTRY: usize = 16 + MAP_ENTRY;
const FORMER_ENTRY: usize = size_of::<IdKey>() + size_of::<OneId>() + MAP_ENTRY;

/// The size of the identity graph.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub profiles: usize,
    /// Identifiers in a profile (household identifiers excluded).
    pub identifiers: usize,
    /// The estimate of the bytes held.
    pub bytes: usize,
}

/// The writer's running sums; signed, since a change is "after minus before".
#[derive(Debug, Default)]
pub(super) struct Sums {
    profiles: i64,
    identifiers: i64,
    /// Profiles, index slots, components and device counts.
    bytes: i64,
}

/// What one profile adds to the sums.
#[derive(Clone, Copy, Debug)]
pub(super) struct ProfileSize {
    ids: usize,
    bytes: usize,
}

fn signed(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Sums {
    pub(super) fn profile_in(&mut self, s: ProfileSize) {
        self.profiles += 1;
        self.identifiers += signed(s.ids);
        self.bytes += signed(s.bytes);
    }

    pub(super) fn profile_out(&mut self, s: ProfileSize) {
        self.profiles -= 1;
        self.identifiers -= signed(s.ids);
        self.bytes -= signed(s.bytes);
    }

    /// A profile changed from `before` to `after`.
    pub(super) fn profile_changed(&mut self, before: ProfileSize, after: ProfileSize) {
        self.identifiers += signed(after.ids) - signed(before.ids);
        self.bytes += signed(after.bytes) - signed(before.bytes);
    }

    /// Some other entry changed from `before` to `after` bytes (0: absent).
    pub(super) fn resized(&mut self, before: usize, after: usize) {
        self.bytes += signed(after) - signed(before);
    }
}

pub(super) fn profile_size(p: &Profile) -> ProfileSize {
    let bytes = size_of::<Profile>()
        + p.one_id.len()
        + (p.ids().len() + p.households().len() + p.dropped().len()) * size_of::<IdKey>()
        + p.links_heap_bytes()
        + p.rare_box_bytes()
        + std::mem::size_of_val(p.refused())
        + p.refused().iter().map(|r| r.event_id.len() + 16).sum::<usize>()
        + MAP_ENTRY;
    ProfileSize {
        ids: p.ids().len(),
        bytes,
    }
}

/// An index slot: the identifier's text (namespace and value) is held here
/// (profiles share it).
pub(super) fn slot_bytes(k: &IdKey) -> usize {
    size_of::<IdKey>() + size_of::<Slot>() + k.held_text().len() + 16 + MAP_ENTRY
}

/// A component without the contents of its evidence (those move with the
/// evidence when components join): constant time.
pub(super) fn component_frame(c: &Component) -> usize {
    size_of::<Component>() + MAP_ENTRY + c.ids.len() * size_of::<IdKey>() + std::mem::size_of_val(c.evidence())
}

/// What one evidence adds to its component beyond the frame.
pub(super) fn evidence_bytes(e: &Evidence) -> usize {
    16 + e.ids.len() * size_of::<IdKey>()
}

/// A whole component: its frame and every evidence.
pub(super) fn component_bytes(c: &Component) -> usize {
    component_frame(c) + c.evidence().iter().map(evidence_bytes).sum::<usize>()
}

pub(super) fn device_bytes(d: &DeviceStat) -> usize {
    size_of::<IdKey>() + size_of::<DeviceStat>() + MAP_ENTRY + d.persons.len() * 32
}

/// The numbers readers see, published by the writer after each change.
#[derive(Debug, Default)]
pub(super) struct Published {
    profiles: AtomicUsize,
    identifiers: AtomicUsize,
    bytes: AtomicUsize,
}

impl IdentityGraph {
    /// The size of the graph as of the last completed change: no lock, no
    /// walk (for metrics).
    pub fn tally(&self) -> Tally {
        let p = &self.published;
        Tally {
            profiles: p.profiles.load(Ordering::Relaxed),
            identifiers: p.identifiers.load(Ordering::Relaxed),
            bytes: p.bytes.load(Ordering::Relaxed),
        }
    }

    /// The same numbers as [`IdentityGraph::tally`], by walking every entry
    /// under the writer lock: for tests and checks, never per scrape.
    pub fn recount(&self) -> Tally {
        let w = self.lock();
        self.walk(&w).finish(&w)
    }

    /// The running sums computed from scratch.
    pub(super) fn walk(&self, w: &Writer) -> Sums {
        let mut s = Sums::default();
        for p in self.profiles.iter() {
            s.profile_in(profile_size(p.value()));
        }
        let index: usize = self.index.iter().map(|e| slot_bytes(e.key())).sum();
        let components: usize = w.components.values().map(component_bytes).sum();
        let devices: usize = w.devices.values().map(device_bytes).sum();
        s.resized(0, index + components + devices);
        s
    }

    /// Makes the writer's sums visible to readers.
    pub(super) fn publish(&self, w: &Writer) {
        let t = w.sums.finish(w);
        let p = &self.published;
        p.profiles.store(t.profiles, Ordering::Relaxed);
        p.identifiers.store(t.identifiers, Ordering::Relaxed);
        p.bytes.store(t.bytes, Ordering::Relaxed);
    }
}

impl Sums {
    /// The tally: these sums plus the parts that follow from a length.
    fn finish(&self, w: &Writer) -> Tally {
        let count = |n: i64| usize::try_from(n).unwrap_or(0);
        let lengths =
            w.known.len() * KNOWN_ENTRY + w.suppressed.len() * SUPPRESSED_ENTRY + w.formers.len() * FORMER_ENTRY;
        Tally {
            profiles: count(self.profiles),
            identifiers: count(self.identifiers),
            bytes: count(self.bytes).saturating_add(lengths),
        }
    }
}
