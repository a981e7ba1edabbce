//! [`Component`]: identifiers that ever appeared on one event together, and
//! their evidence, kept in canonical order.
//!
//! In: evidence recorded, components joined, evidence a forget stripped,
//! a snapshot's components. Out: the evidence in canonical order (what a
//! rebuild folds again) and the largest key (what a new evidence is compared
//! with, to choose between one fold step and a rebuild).
//!
//! What it keeps: the evidence sorted by key, in an exact list. The largest
//! key is the last evidence's, so it is not held apart: a component is 32
//! bytes (was 64 with a `Vec` and the key beside it), an entry of the
//! writer's map 40 (was 72). It is still written, as `last`, so a snapshot
//! reads and writes the bytes it always did (`format_tests.rs`); a snapshot
//! written before the evidence was kept sorted is sorted as it is read.

use serde::ser::SerializeStruct;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::members::Members;
use super::types::{Evidence, EvidenceKey};
use crate::ids::IdKey;
use crate::journey::List;

/// Identifiers that ever appeared on one event together, and their evidence.
#[derive(Debug, Default)]
pub(super) struct Component {
    /// Its linking identifiers (shared with an evidence holding the same).
    pub(super) ids: Members,
    /// Sorted by key.
    evidence: List<Evidence>,
}

impl Component {
    /// A component of one identifier and no evidence (a slot applied
    /// without its evidence).
    pub(super) fn one(key: IdKey) -> Component {
        Component {
            ids: Members::one(key),
            evidence: List::new(),
        }
    }

    /// The evidence, in canonical order.
    pub(super) fn evidence(&self) -> &[Evidence] {
        &self.evidence
    }

    /// The identifiers and the evidence, to change in place without
    /// changing a key (the sharing pass of a restore points texts at one
    /// copy).
    pub(super) fn parts_mut(&mut self) -> (&mut Members, &mut [Evidence]) {
        (&mut self.ids, self.evidence.as_mut_slice())
    }

    /// The largest key of its evidence: what was folded last.
    pub(super) fn last_key(&self) -> Option<&EvidenceKey> {
        self.evidence.last().map(|e| &e.key)
    }

    /// True when an evidence has `key`.
    pub(super) fn has(&self, key: &EvidenceKey) -> bool {
        self.evidence.binary_search_by(|x| x.key.cmp(key)).is_ok()
    }

    /// Adds `e` in its place (after any evidence with the same key).
    pub(super) fn insert(&mut self, e: Evidence) {
        let at = self.evidence.partition_point(|x| x.key <= e.key);
        self.evidence.keep_at(at, e, usize::MAX);
    }

    /// Gives the evidence with key `from` the earlier key `to` (an earlier
    /// occurrence of the same set), moving it to its new place; false when
    /// no evidence has `from`.
    pub(super) fn rekey(&mut self, from: &EvidenceKey, to: EvidenceKey) -> bool {
        let Ok(i) = self.evidence.binary_search_by(|x| x.key.cmp(from)) else {
            return false;
        };
        self.replace_evidence(|mut all| {
            all[i].key = to;
            all
        });
        true
    }

    /// Takes in `other`'s identifiers and evidence (a join), keeping the
    /// evidence sorted.
    pub(super) fn absorb(&mut self, other: Component) {
        self.ids.extend(other.ids.iter().cloned());
        if other.evidence.is_empty() {
            return;
        }
        // Two sorted runs: the stable sort after merges them in one pass.
        self.replace_evidence(|mut all| {
            all.reserve_exact(other.evidence.len());
            all.extend(other.evidence);
            all
        });
    }

    /// Replaces the evidence with what `f` makes of it (a rekey, a join,
    /// a forget's strip), sorted again.
    pub(super) fn replace_evidence(&mut self, f: impl FnOnce(Vec<Evidence>) -> Vec<Evidence>) {
        let mut all = f(std::mem::take(&mut self.evidence).into_iter().collect());
        all.sort_by(|a, b| a.key.cmp(&b.key));
        self.evidence = List::from(all);
    }
}

impl Serialize for Component {
    /// As the struct it was: `ids`, `evidence` and `last`.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Component", 3)?;
        st.serialize_field("ids", &self.ids)?;
        st.serialize_field("evidence", &self.evidence)?;
        st.serialize_field("last", &self.last_key())?;
        st.end()
    }
}

/// A component as written.
#[derive(Deserialize)]
#[serde(rename = "Component")]
struct Written {
    ids: Members,
    evidence: Vec<Evidence>,
    /// Read (its texts may be numbered in the snapshot's text table) and
    /// dropped: the last evidence's key.
    #[serde(rename = "last")]
    _last: Option<EvidenceKey>,
}

impl<'de> Deserialize<'de> for Component {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let Written { ids, mut evidence, .. } = Written::deserialize(d)?;
        evidence.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Component {
            ids,
            evidence: List::from(evidence),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::event::Channel;
    use crate::time::EventTime;

    fn key(at: i64, id: &str) -> EvidenceKey {
        EvidenceKey {
            at: EventTime::from_millis(at),
            channel: Channel::Web,
            event_id: id.into(),
        }
    }

    fn ev(at: i64, id: &str) -> Evidence {
        Evidence {
            key: key(at, id),
            ids: Arc::from(Vec::new()),
        }
    }

    fn keys(c: &Component) -> Vec<String> {
        c.evidence().iter().map(|e| e.key.event_id.to_string()).collect()
    }

    #[test]
    fn evidence_stays_sorted_whatever_order_it_comes_in() {
        let mut c = Component::default();
        assert_eq!(c.last_key(), None);
        for (at, id) in [(5, "e5"), (1, "e1"), (9, "e9"), (3, "e3")] {
            c.insert(ev(at, id));
        }
        assert_eq!(keys(&c), ["e1", "e3", "e5", "e9"]);
        assert_eq!(c.last_key(), Some(&key(9, "e9")));
        assert!(c.has(&key(3, "e3")));
        assert!(!c.has(&key(4, "e3")));

        assert!(c.rekey(&key(9, "e9"), key(2, "e2")));
        assert_eq!(keys(&c), ["e1", "e2", "e3", "e5"]);
        assert_eq!(c.last_key(), Some(&key(5, "e5")));
        assert!(!c.rekey(&key(9, "e9"), key(0, "e0")));

        let mut other = Component::default();
        other.insert(ev(4, "e4"));
        other.insert(ev(8, "e8"));
        c.absorb(other);
        assert_eq!(keys(&c), ["e1", "e2", "e3", "e4", "e5", "e8"]);

        c.replace_evidence(|all| all.into_iter().rev().filter(|e| e.key.at.millis() != 3).collect());
        assert_eq!(keys(&c), ["e1", "e2", "e4", "e5", "e8"]);
    }

    #[test]
    fn it_writes_the_last_key_and_reads_an_unsorted_old_component_sorted() {
        let mut c = Component::default();
        c.insert(ev(2, "b"));
        c.insert(ev(1, "a"));
        let bytes = rmp_serde::to_vec(&c).unwrap();
        let (ids, evidence, last): (Members, Vec<Evidence>, Option<EvidenceKey>) =
            rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(ids, Members::default());
        assert_eq!(evidence.len(), 2);
        assert_eq!(last, Some(key(2, "b")));

        // The old layout merged by appending: unsorted, `last` beside.
        let old = (
            Members::default(),
            vec![ev(7, "z"), ev(1, "a"), ev(4, "m")],
            Some(key(7, "z")),
        );
        let back: Component = rmp_serde::from_slice(&rmp_serde::to_vec(&old).unwrap()).unwrap();
        assert_eq!(keys(&back), ["a", "m", "z"]);
        assert_eq!(back.last_key(), Some(&key(7, "z")));
    }
}
