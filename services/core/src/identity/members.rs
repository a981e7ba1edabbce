//! [`Members`]: the linking identifiers of one component, held once where
//! an evidence holds the same set.
//!
//! In: the identifiers a component gains (a new evidence's, a joined
//! component's), loses (a forget) or already has (a snapshot). Out: the
//! list, read as a slice. Keeps one shared allocation.
//!
//! Why: most components are one person seen on one identifier set (the
//! bench's profile shape: customer id, email and cookie on one login). Their
//! members are then exactly that evidence's identifiers, so
//! [`Members::share_with`] points the component at the evidence's list
//! instead of holding a copy: a 48-byte allocation and 8 bytes of the
//! component a profile. The size estimate (`tally.rs`) counts the members as
//! if they were a copy, so that it never depends on what is shared.

use std::ops::Deref;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ids::IdKey;

/// A component's linking identifiers, in the order they joined.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Members(Option<Arc<[IdKey]>>);

impl Members {
    /// One identifier (a slot applied without its evidence).
    pub(super) fn one(key: IdKey) -> Members {
        Members(Some(Arc::from([key])))
    }

    /// These members followed by `more`, in one exact allocation.
    pub(super) fn extend(&mut self, more: impl IntoIterator<Item = IdKey>) {
        let mut more = more.into_iter().peekable();
        if more.peek().is_none() {
            return;
        }
        let all: Vec<IdKey> = self.iter().cloned().chain(more).collect();
        self.0 = Some(Arc::from(all));
    }

    /// Each identifier replaced by `f`'s (the same identifier, shared
    /// with other copies: a restore's sharing pass).
    pub(super) fn map(&mut self, f: impl FnMut(IdKey) -> IdKey) {
        if let Some(own) = &self.0 {
            self.0 = Some(own.iter().cloned().map(f).collect());
        }
    }

    /// Keeps the identifiers `keep` says yes to.
    pub(super) fn retain(&mut self, keep: impl Fn(&IdKey) -> bool) {
        if self.iter().all(&keep) {
            return;
        }
        let kept: Vec<IdKey> = self.iter().filter(|k| keep(k)).cloned().collect();
        self.0 = (!kept.is_empty()).then(|| Arc::from(kept));
    }

    /// Holds `ids`' allocation instead of its own when they are the same
    /// identifiers in the same order (the list is then shared with an
    /// evidence).
    pub(super) fn share_with(&mut self, ids: &Arc<[IdKey]>) {
        if let Some(own) = &self.0 {
            if !Arc::ptr_eq(own, ids) && **own == **ids {
                self.0 = Some(ids.clone());
            }
        }
    }

    /// Whether the list is `ids`' allocation.
    #[cfg(test)]
    pub(super) fn shares(&self, ids: &Arc<[IdKey]>) -> bool {
        self.0.as_ref().is_some_and(|own| Arc::ptr_eq(own, ids))
    }
}

impl Deref for Members {
    type Target = [IdKey];
    fn deref(&self) -> &[IdKey] {
        self.0.as_deref().unwrap_or(&[])
    }
}

impl Serialize for Members {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (**self).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Members, D::Error> {
        let ids = Vec::<IdKey>::deserialize(d)?;
        Ok(Members((!ids.is_empty()).then(|| Arc::from(ids))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Ns;

    fn k(v: &str) -> IdKey {
        IdKey::new(Ns(0), v)
    }

    #[test]
    fn members_extend_retain_and_share_an_equal_list() {
        let mut m = Members::default();
        assert!(m.is_empty());
        m.extend([k("a"), k("b")]);
        assert_eq!(&*m, &[k("a"), k("b")]);
        let evidence: Arc<[IdKey]> = Arc::from(vec![k("a"), k("b")]);
        m.share_with(&evidence);
        assert!(m.shares(&evidence), "the same identifiers: shared");
        let other: Arc<[IdKey]> = Arc::from(vec![k("b"), k("a")]);
        m.share_with(&other);
        assert!(m.shares(&evidence), "another order: not shared");
        m.extend([k("c")]);
        assert!(!m.shares(&evidence), "a change makes its own list");
        assert_eq!(&*m, &[k("a"), k("b"), k("c")]);
        assert_eq!(*evidence, [k("a"), k("b")], "the evidence is untouched");
        m.retain(|x| x != &k("b"));
        assert_eq!(&*m, &[k("a"), k("c")]);
        m.retain(|_| false);
        assert_eq!(m, Members::default());
        assert_eq!(std::mem::size_of::<Members>(), 16);
    }

    #[test]
    fn members_serialise_as_the_list_they_replace() {
        let mut m = Members::default();
        m.extend([k("a"), k("b")]);
        let as_vec = rmp_serde::to_vec(&vec![k("a"), k("b")]).unwrap();
        assert_eq!(rmp_serde::to_vec(&m).unwrap(), as_vec);
        let back: Members = rmp_serde::from_slice(&as_vec).unwrap();
        assert_eq!(back, m);
        let empty = rmp_serde::to_vec(&Vec::<IdKey>::new()).unwrap();
        assert_eq!(rmp_serde::from_slice::<Members>(&empty).unwrap(), Members::default());
    }
}
