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

/// Bytes as one MessagePack `bin` (a `Vec<u8>` would be an array of
/// integers, up to twice the size).
pub struct Bytes<'a>(pub &'a [u8]);

impl Serialize for Bytes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

/// [`Bytes`] read back.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ByteBuf(pub Vec<u8>);

impl<'de> serde::Deserialize<'de> for ByteBuf {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ByteBuf;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v.to_vec()))
            }
        }
        d.deserialize_bytes(V)
    }
}
