//! Forgetting a person on request: the profile goes, its identifiers are
//! suppressed.
//!
//! In: an identifier of the profile to forget ([`IdentityGraph::forget`]), or
//! a `Forget` op from a changelog. Out: the `Forget` op and what was erased.
//!
//! What it keeps: a forgotten identifier leaves the profiles, the index, the
//! device counts and the evidence, so no rebuild or replay brings it back; only
//! its suppression entry stays, a truncated HMAC-SHA256 of namespace and
//! value under the identity key (plain SHA-256 for state written before keyed
//! derivation: see `derive.rs`), never the value itself. `stitch` ignores
//! suppressed identifiers.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::types::{Evidence, EvidenceKey, Forgotten, IdentityOp, OneId};
use super::{fingerprint, IdentityGraph, Writer};
use crate::hash::HashSet;
use crate::ids::IdKey;

impl IdentityGraph {
    /// Forgets the profile `key` belongs to: removes it and its identifiers and
    /// suppresses them. `None` when no profile holds `key`.
    pub fn forget(&self, key: &IdKey) -> Option<(IdentityOp, Forgotten)> {
        let one_id = self.one_id_of(key)?;
        let ids = self.with_profile(&one_id, |p| p.ids.iter().chain(&p.households).cloned().collect())?;
        let op = IdentityOp::Forget { one_id: one_id.clone() };
        self.apply(&op);
        Some((op, Forgotten { one_id, ids }))
    }

    /// Applies a forget: erases the profile and suppresses its identifiers.
    pub(super) fn erase(&self, w: &mut Writer, one_id: &OneId) {
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
            let entry = self.suppression_entry(w, k);
            w.suppressed.insert(entry);
            if let Some((_, s)) = self.index.remove(*k) {
                comps.insert(s.component);
            }
            w.devices.remove(*k);
        }
        for stat in w.devices.values_mut() {
            stat.persons.retain(|(_, q)| !gone.contains(q));
        }
        for c in comps {
            self.strip_evidence(w, c, &gone);
        }
    }

    /// Strips the erased identifiers from a component's evidence, so no
    /// rebuild brings them back; a set left with nothing that links
    /// disappears. The first occurrences of the changed sets follow.
    fn strip_evidence(&self, w: &mut Writer, component: u32, gone: &HashSet<&IdKey>) {
        let Some(comp) = w.components.get_mut(&component) else {
            return;
        };
        comp.ids.retain(|k| !gone.contains(k));
        let mut kept: Vec<Evidence> = Vec::with_capacity(comp.evidence.len());
        let mut refingerprint: Vec<(u128, Option<EvidenceKey>)> = Vec::new();
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

    /// The suppression entry of an identifier: 16 bytes of the graph's
    /// derivation over its namespace and value (email and phone values are
    /// hashes already).
    pub(super) fn suppression_entry(&self, w: &Writer, key: &IdKey) -> [u8; 16] {
        w.derivation.suppression_entry(self.rules.name(key.ns), &key.value)
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
