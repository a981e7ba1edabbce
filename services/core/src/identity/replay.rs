//! Rebuilding the graph from its op stream: [`IdentityGraph::replay`].
//!
//! In: the [`IdentityOp`]s a graph applied, in the order it applied them
//! (the identity log the engine writes at every checkpoint), and how the
//! graph that wrote them derives One IDs and suppression entries. Out: this
//! graph, which must be new, changed into the one that wrote them. Keeps
//! nothing beyond the graph.
//!
//! Why a fold of ops is enough: every change to profiles, the index, the
//! components (their evidence, their last folded key: `Folded`), the device
//! statistics (`Refold` drops a rebuilt component's) and the suppression
//! entries is an op applied by `apply.rs`. The processor's
//! `changelog_tests` prove it against graphs built directly (merges,
//! rebuilds, caps, shared devices, forgets), down to the writer's
//! structures and size sums.

use super::types::{IdentityOp, Rule};
use super::{Derivation, IdentityGraph, Writer};

impl IdentityGraph {
    /// Applies `ops` in order, deriving under `derivation` (the writer's; a
    /// forget needs it for its suppression entries).
    pub fn replay<'a, I>(&self, derivation: Derivation, ops: I)
    where
        I: IntoIterator<Item = &'a IdentityOp>,
        I::IntoIter: Clone,
    {
        let ops = ops.into_iter();
        let mut w = self.lock();
        w.derivation = derivation;
        self.reserve_for(&mut w, ops.clone());
        for op in ops {
            self.apply_locked(&mut w, op);
        }
        self.publish(&w);
    }

    /// Makes room in the graph's largest maps for what `ops` will add, so
    /// that the replay does not grow them step by step (32% of a 1M
    /// changelog restore's replay was tables growing, session 27). The
    /// counts are estimates from the ops alone: profiles, those created
    /// less those dissolved, merged away or forgotten; index slots, the
    /// identifiers attached to a profile, at most the linking identifiers
    /// the evidence carries; `known`, the evidence recorded; components,
    /// one a profile; device statistics, one a run of `DevicePerson` ops
    /// naming the same device (an event's), at most one an identifier. A component
    /// folded again attaches its identifiers again, so over a log with many
    /// rebuilds the index's figure is high: the table is then a size larger
    /// than growth alone would have made it.
    fn reserve_for<'a>(&self, w: &mut Writer, ops: impl Iterator<Item = &'a IdentityOp>) {
        let (mut created, mut removed, mut attached, mut carried, mut recorded) =
            (0usize, 0usize, 0usize, 0usize, 0usize);
        let (mut devices, mut last_device) = (0usize, None);
        for op in ops {
            match op {
                IdentityOp::Create { .. } => created += 1,
                IdentityOp::Dissolve { .. } | IdentityOp::Merge { .. } | IdentityOp::Forget { .. } => removed += 1,
                IdentityOp::Attach { link, .. } if link.provenance.rule != Rule::Household => attached += 1,
                IdentityOp::Record(e) => {
                    recorded += 1;
                    carried += e.ids.iter().filter(|k| self.links(k)).count();
                }
                // One event's persons of a device come in a row.
                IdentityOp::DevicePerson { device, .. } => {
                    if last_device != Some(device) {
                        devices += 1;
                    }
                    last_device = Some(device);
                }
                _ => {}
            }
        }
        let (profiles, ids) = (created.saturating_sub(removed), attached.min(carried));
        crate::hash::reserve(&self.profiles, profiles);
        crate::hash::reserve(&self.index, ids);
        w.known.reserve(recorded);
        // A component holds one profile or more (and is founded by evidence).
        w.components.reserve(profiles.min(recorded));
        w.devices.reserve(devices.min(ids));
    }

    /// Everything the graph holds, in a canonical order, for tests that
    /// compare two graphs (a replayed one and the one that wrote the ops).
    #[cfg(test)]
    pub(crate) fn canonical(&self) -> String {
        use std::collections::BTreeMap;
        let w = self.lock();
        let profiles: BTreeMap<_, _> = self
            .profiles
            .iter()
            .map(|p| (p.key().clone(), p.value().clone()))
            .collect();
        let index: BTreeMap<_, _> = self
            .index
            .iter()
            .map(|s| (s.key().clone(), format!("{:?}", s.value())))
            .collect();
        let components: BTreeMap<_, _> = w.components.iter().map(|(k, c)| (*k, format!("{c:?}"))).collect();
        let devices: BTreeMap<_, _> = w.devices.iter().map(|(k, d)| (k.clone(), format!("{d:?}"))).collect();
        let formers: BTreeMap<_, _> = w.formers.iter().map(|(k, o)| (k.clone(), o.clone())).collect();
        let mut known: Vec<_> = w.known.iter().map(|(k, v)| (*k, v.clone())).collect();
        known.sort();
        let mut suppressed: Vec<_> = w.suppressed.iter().copied().collect();
        suppressed.sort_unstable();
        format!(
            "profiles {profiles:#?}\nindex {index:#?}\nformers {formers:#?}\ncomponents {components:#?}\nnext {}\ndevices {devices:#?}\n\
             known {known:?}\nsuppressed {suppressed:?}\nsums {:?}",
            w.next_component, w.sums
        )
    }
}
