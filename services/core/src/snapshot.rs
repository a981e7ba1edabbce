//! Helpers to serialise live maps into a state snapshot without copying
//! them. The engine writes the bytes; the core only says what they hold.
//!
//! In: borrowed maps. Out: serde sequences of values or pairs. Keeps nothing.
//! The snapshot format itself is `processor/snapshot.rs`.

use crate::hash::{DashMap, HashMap};
use serde::ser::SerializeTuple;
use serde::{Serialize, Serializer};

/// The values of a `DashMap`, as a sequence.
pub struct DashValues<'a, K, V>(pub &'a DashMap<K, V>);

impl<K: Eq + std::hash::Hash, V: Serialize> Serialize for DashValues<'_, K, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|r| Value(r)))
    }
}

/// The entries of a `DashMap`, as a sequence of `(key, value)` pairs.
pub struct DashEntries<'a, K, V>(pub &'a DashMap<K, V>);

impl<K: Eq + std::hash::Hash + Serialize, V: Serialize> Serialize for DashEntries<'_, K, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|r| Pair(r)))
    }
}

/// A `HashMap` as a sequence of pairs (keys need not be strings).
pub struct Pairs<'a, K, V>(pub &'a HashMap<K, V>);

impl<K: Serialize, V: Serialize> Serialize for Pairs<'_, K, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter())
    }
}

type Ref<'a, K, V> = dashmap::mapref::multiple::RefMulti<'a, K, V>;

struct Value<'a, K, V>(Ref<'a, K, V>);

impl<K: Eq + std::hash::Hash, V: Serialize> Serialize for Value<'_, K, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.value().serialize(s)
    }
}

struct Pair<'a, K, V>(Ref<'a, K, V>);

impl<K: Eq + std::hash::Hash + Serialize, V: Serialize> Serialize for Pair<'_, K, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(2)?;
        t.serialize_element(self.0.key())?;
        t.serialize_element(self.0.value())?;
        t.end()
    }
}
