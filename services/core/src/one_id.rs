//! [`OneId`]: the opaque, stable id of one profile, as the state holds it.
//!
//! In: the text of a One ID (derived in `identity/derive.rs`, or read back from a
//! snapshot, a changelog key or a request). Out: a shared handle to it.
//! Keeps the text once; every map and record that names the profile holds
//! a copy of the handle.
//!
//! Why a type of its own: a profile's One ID is held by about eight maps
//! and records (the profiles, each identifier's index slot, the journeys,
//! the timers and their homes), so its handle is one pointer
//! ([`ArcStr`]: the length sits beside the text) instead of the pointer and
//! length of an `Arc<str>`: about 80 bytes a profile less. It is a type of
//! its own, not an alias of `ArcStr`, because the snapshot's text table
//! numbers One IDs apart from identifier values and event ids
//! (`intern.rs`). It reads, compares, hashes, prints and serialises as its
//! text, as the `Arc<str>` it replaces did: no wire or file format changes.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;

use arcstr::ArcStr;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The opaque, stable id of one profile: one pointer to a shared text.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct OneId(ArcStr);

impl OneId {
    /// Whether `a` and `b` are the same allocation (not only equal texts).
    pub fn ptr_eq(a: &OneId, b: &OneId) -> bool {
        ArcStr::ptr_eq(&a.0, &b.0)
    }

    /// How many handles share the text (`None` for a static text).
    pub fn strong_count(this: &OneId) -> Option<usize> {
        ArcStr::strong_count(&this.0)
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Deref for OneId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for OneId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for OneId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl From<&str> for OneId {
    fn from(s: &str) -> OneId {
        OneId(ArcStr::from(s))
    }
}

impl From<&String> for OneId {
    fn from(s: &String) -> OneId {
        OneId(ArcStr::from(s.as_str()))
    }
}

impl From<String> for OneId {
    fn from(s: String) -> OneId {
        OneId(ArcStr::from(s))
    }
}

impl From<OneId> for String {
    fn from(id: OneId) -> String {
        id.0.to_string()
    }
}

impl PartialEq<str> for OneId {
    fn eq(&self, other: &str) -> bool {
        *self.0 == *other
    }
}

impl PartialEq<&str> for OneId {
    fn eq(&self, other: &&str) -> bool {
        *self.0 == **other
    }
}

impl fmt::Debug for OneId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for OneId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

impl Serialize for OneId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for OneId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<OneId, D::Error> {
        ArcStr::deserialize(d).map(OneId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_one_id_is_one_pointer_and_behaves_as_its_text() {
        assert_eq!(std::mem::size_of::<OneId>(), 8);
        assert_eq!(std::mem::size_of::<Option<OneId>>(), 8);
        let a = OneId::from("1J-abc");
        assert_eq!(&*a, "1J-abc");
        assert_eq!(format!("{a} {a:?}"), "1J-abc \"1J-abc\"");
        assert_eq!(serde_json::to_string(&a).unwrap(), "\"1J-abc\"");
        assert_eq!(serde_json::from_str::<OneId>("\"1J-abc\"").unwrap(), a);
        let mut set = std::collections::HashSet::new();
        set.insert(a.clone());
        assert!(set.contains("1J-abc"), "looked up by its text");
        assert!(OneId::ptr_eq(&a, &a.clone()));
        assert!(!OneId::ptr_eq(&a, &OneId::from("1J-abc")));
    }
}
