//! Forgetting a person on request: the profile goes, its identifiers are
//! suppressed.
//!
//! In: an identifier of the profile to forget ([`IdentityGraph::forget`]), or
//! a `Forget` op from a changelog; suppression entries to install (a
//! `Suppress` op, from the erasure records of an earlier run). Out: the
//! `Forget` op and what was erased, with the suppression entries it added.
//!
//! What it keeps: a forgotten identifier leaves the profiles, the index, the
//! device counts, the evidence and the refused links other profiles kept of
//! it, so no rebuild or replay brings it back; only its suppression entry
//! stays, a truncated HMAC-SHA256 of namespace and value under the identity
//! key (plain SHA-256 for state written before keyed derivation: see
//! `derive.rs`), never the value itself. `stitch` ignores suppressed
//! identifiers. Entries installed by `Suppress` hold before the identifiers
//! were ever seen: a rebuild that replays the inputs after installing them
//! never lets the identifiers in, whether the forget command sorts before or
//! after them.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::tally::{component_bytes, device_bytes, profile_size, slot_bytes};
use super::types::{Evidence, EvidenceKey, Forgotten, IdentityOp, OneId, Suppression};
use super::{fingerprint, IdentityGraph, Writer};
use crate::hash::HashSet;
use crate::ids::IdKey;

impl IdentityGraph {
    /// Forgets the profile `key` belongs to: removes it and its identifiers and
    /// suppresses them. `None` when no profile holds `key`.
    pub fn forget(&self, key: &IdKey) -> Option<(IdentityOp, Forgotten)> {
        let one_id = self.one_id_of(key)?;
        let ids = self.with_profile(&one_id, |p| p.ids().iter().chain(p.households()).cloned().collect())?;
        // What applying the op does, keeping the entries it adds.
        let suppressed = {
            let mut w = self.lock();
            let suppressed = self.erase(&mut w, &one_id);
            self.publish(&w);
            suppressed
        };
        let op = IdentityOp::Forget { one_id: one_id.clone() };
        Some((
            op,
            Forgotten {
                one_id,
                ids,
                suppressed,
            },
        ))
    }

    /// Installs suppression entries (a `Suppress` op); returns how many were new.
    pub(super) fn install(&self, w: &mut Writer, entries: &[[u8; 16]]) -> usize {
        entries.iter().filter(|e| w.suppressed.insert(**e)).count()
    }

    /// Applies a forget: erases the profile and suppresses its identifiers;
    /// returns their entries, sorted.
    pub(super) fn erase(&self, w: &mut Writer, one_id: &OneId) -> Vec<Suppression> {
        let Some((_, p)) = self.profiles.remove(one_id) else {
            return Vec::new();
        };
        w.sums.profile_out(profile_size(&p));
        // Dropped identifiers go too, unless another profile holds them now.
        let orphaned = p
            .dropped()
            .iter()
            .filter(|k| self.index.get(*k).is_none_or(|s| s.one_id.is_none()));
        let gone: HashSet<&IdKey> = p.ids().iter().chain(p.households()).chain(orphaned).collect();
        let mut comps = BTreeSet::new();
        let mut entries = Vec::with_capacity(gone.len());
        for k in &gone {
            let entry = self.suppression_entry(w, k);
            w.suppressed.insert(entry);
            entries.push(Suppression { ns: k.ns(), entry });
            w.formers.remove(*k);
            if let Some((key, s)) = self.index.remove(*k) {
                w.sums.resized(slot_bytes(&key), 0);
                comps.insert(s.component);
            }
            if let Some(d) = w.devices.remove(*k) {
                w.sums.resized(device_bytes(&d), 0);
            }
        }
        for stat in w.devices.values_mut() {
            let before = device_bytes(stat);
            stat.persons.retain(|(_, q)| !gone.contains(q));
            w.sums.resized(before, device_bytes(stat));
        }
        self.strip_refused(w, &comps, &gone, one_id);
        for c in comps {
            self.strip_evidence(w, c, &gone);
        }
        entries.sort_unstable();
        entries
    }

    /// Drops the refused links that name an erased identifier or the erased
    /// profile from the profiles of the same components (a refused
    /// identifier is always in the component of the profile that keeps it).
    fn strip_refused(&self, w: &mut Writer, comps: &BTreeSet<u32>, gone: &HashSet<&IdKey>, erased: &OneId) {
        let mut holders: BTreeSet<OneId> = BTreeSet::new();
        for c in comps {
            if let Some(comp) = w.components.get(c) {
                holders.extend(comp.ids.iter().filter_map(|k| self.one_id_of(k)));
            }
        }
        for o in holders {
            if let Some(mut p) = self.profiles.get_mut(&o) {
                if p.refused().is_empty() {
                    continue;
                }
                let before = profile_size(&p);
                p.rare_mut()
                    .refused
                    .retain(|r| !gone.contains(&r.key) && r.kept_in.as_ref() != Some(erased));
                p.fit();
                w.sums.profile_changed(before, profile_size(&p));
            }
        }
    }

    /// Strips the erased identifiers from a component's evidence, so no
    /// rebuild brings them back; a set left with nothing that links
    /// disappears. The first occurrences of the changed sets follow.
    fn strip_evidence(&self, w: &mut Writer, component: u32, gone: &HashSet<&IdKey>) {
        let Some(comp) = w.components.get_mut(&component) else {
            return;
        };
        let before = component_bytes(comp);
        comp.ids.retain(|k| !gone.contains(k));
        let mut refingerprint: Vec<(super::Fingerprint, Option<EvidenceKey>)> = Vec::new();
        comp.replace_evidence(|all| {
            let mut kept: Vec<Evidence> = Vec::with_capacity(all.len());
            for e in all {
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
            kept
        });
        let after = component_bytes(comp);
        w.sums.resized(before, after);
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

    /// The suppression entry of an identifier: 16 bytes of the graph's
    /// derivation over its namespace and value (email and phone values are
    /// hashes already).
    pub(super) fn suppression_entry(&self, w: &Writer, key: &IdKey) -> [u8; 16] {
        w.derivation.suppression_entry(self.rules.name(key.ns()), key.value())
    }

    /// Whether a forget request suppressed `key`.
    pub fn is_suppressed(&self, key: &IdKey) -> bool {
        let w = self.lock();
        !w.suppressed.is_empty() && w.suppressed.contains(&self.suppression_entry(&w, key))
    }

    /// Identifiers suppressed by forget requests.
    pub fn suppressed_count(&self) -> usize {
        self.lock().suppressed.len()
    }
}
