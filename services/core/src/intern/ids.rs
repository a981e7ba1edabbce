//! Identifiers read and written through the text table: an [`IdKey`] holds
//! its namespace and value in one allocation, so its value is shared by
//! the key, not by the text.
//!
//! In: an `IdKey`'s two serialised fields, `ns` and `value` (the value in
//! full or, in a text table, as its number). Out: the `IdKey`, the earlier
//! allocation when the same identifier was read before in the scope. Keeps
//! nothing of its own: the table's entries and the by-content set are the
//! scope's ([`super::Texts`]).
//!
//! The format does not change: the values are numbered among the
//! identifier values and event ids as before (one kind), by the address of
//! the key's allocation, and the value is written without the namespace.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::{damaged, not_a_number, read_with, write_counted, Listed, Written, TEXTS};
use crate::ids::{IdKey, Ns};

const WHAT: &str = "identifier";

/// An identifier in the by-content set, found by its whole text.
pub(super) struct Held(IdKey);

impl Hash for Held {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.0.held_text().hash(h);
    }
}

impl PartialEq for Held {
    fn eq(&self, other: &Held) -> bool {
        self.0.held_text() == other.0.held_text()
    }
}

impl Eq for Held {}

impl Borrow<str> for Held {
    fn borrow(&self) -> &str {
        self.0.held_text()
    }
}

/// An identifier whose value was read in full: listed (table), shared by
/// content (scope), or its own allocation (no scope).
fn full(ns: Ns, value: &str) -> IdKey {
    TEXTS.with(|t| match t.borrow_mut().as_mut() {
        None => IdKey::new(ns, value),
        Some(texts) => match texts.table.as_mut() {
            Some(table) => {
                let key = IdKey::new(ns, value);
                table.strs.push(Listed::Id(key.clone()));
                key
            }
            None => {
                texts.probe.clear();
                IdKey::write_text(ns, value, &mut texts.probe);
                match texts.ids.get(texts.probe.as_str()) {
                    Some(earlier) => earlier.0.clone(),
                    None => {
                        let key = IdKey::new(ns, value);
                        texts.ids.insert(Held(key.clone()));
                        key
                    }
                }
            }
        },
    })
}

/// An identifier whose value was read as its number in the table.
fn numbered<E: serde::de::Error>(ns: Ns, n: u64) -> Result<IdKey, E> {
    TEXTS.with(|t| {
        let t = t.borrow();
        let table = t.as_ref().and_then(|t| t.table.as_ref());
        let (Some(table), Ok(i)) = (table, usize::try_from(n)) else {
            return Err(not_a_number(WHAT, n));
        };
        match table.strs.get(i) {
            Some(Listed::Id(k)) if k.ns() == ns => Ok(k.clone()),
            // A text shared across namespaces or with an event id: only a
            // state decoded by content before (format 6, changelog records).
            Some(Listed::Id(k)) => Ok(IdKey::new(ns, k.value())),
            Some(Listed::Text(a)) => Ok(IdKey::new(ns, a)),
            None => Err(damaged(WHAT, n, table.strs.len())),
        }
    })
}

/// Reads an identifier's value, its namespace known.
struct Value(Ns);

impl<'de> DeserializeSeed<'de> for Value {
    type Value = IdKey;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<IdKey, D::Error> {
        read_with(d, self)
    }
}

impl Visitor<'_> for Value {
    type Value = IdKey;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string or, in a text table, a text's number")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<IdKey, E> {
        Ok(full(self.0, v))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<IdKey, E> {
        numbered(self.0, v)
    }
}

/// A value read before its namespace (a map with the fields the other way
/// round): kept until the namespace comes.
enum Early {
    Text(String),
    Number(u64),
}

impl<'de> Deserialize<'de> for Early {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Early;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or a text's number")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Early, E> {
                Ok(Early::Text(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Early, E> {
                Ok(Early::Number(v))
            }
        }
        read_with(d, V)
    }
}

/// The fields of an identifier, by name or (a sequence's) position, as a
/// derived struct reads them (an unknown one is skipped).
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum Field {
    Ns,
    Value,
    #[serde(other)]
    Other,
}

struct Key;

impl<'de> Visitor<'de> for Key {
    type Value = IdKey;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("struct IdKey")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<IdKey, A::Error> {
        use serde::de::Error;
        let ns: Ns = seq
            .next_element()?
            .ok_or_else(|| A::Error::invalid_length(0, &"struct IdKey with 2 elements"))?;
        seq.next_element_seed(Value(ns))?
            .ok_or_else(|| A::Error::invalid_length(1, &"struct IdKey with 2 elements"))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<IdKey, A::Error> {
        use serde::de::Error;
        let (mut ns, mut key, mut early) = (None, None, None);
        while let Some(field) = map.next_key::<Field>()? {
            match field {
                Field::Ns if ns.is_some() => return Err(A::Error::duplicate_field("ns")),
                Field::Ns => ns = Some(map.next_value::<Ns>()?),
                Field::Value if key.is_some() || early.is_some() => return Err(A::Error::duplicate_field("value")),
                Field::Value => match ns {
                    Some(ns) => key = Some(map.next_value_seed(Value(ns))?),
                    None => early = Some(map.next_value::<Early>()?),
                },
                Field::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let ns = ns.ok_or_else(|| A::Error::missing_field("ns"))?;
        match (key, early) {
            (Some(key), _) => Ok(key),
            (None, Some(Early::Text(v))) => Ok(full(ns, &v)),
            (None, Some(Early::Number(n))) => numbered(ns, n),
            (None, None) => Err(A::Error::missing_field("value")),
        }
    }
}

/// `Deserialize` of an [`IdKey`]: its fields `ns` and `value`, the value
/// shared as [`super::arc_str`] shares texts.
fn id_key<'de, D: Deserializer<'de>>(d: D) -> Result<IdKey, D::Error> {
    d.deserialize_struct("IdKey", &["ns", "value"], Key)
}

/// An identifier's value written as [`super::write_arc_str`] writes a text:
/// in full, or as its number when the write scope has written the same
/// key's allocation before.
struct IdValue<'a>(pub &'a IdKey);

impl Serialize for IdValue<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let held = self.0.strong_count().is_some_and(|n| n > 1);
        write_counted(strs, self.0.addr(), held, self.0.value(), s)
    }
}

fn strs(w: &mut Written) -> &mut super::Numbered {
    &mut w.strs
}

impl Serialize for IdKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("IdKey", 2)?;
        st.serialize_field("ns", &self.ns())?;
        st.serialize_field("value", &IdValue(self))?;
        st.end()
    }
}

impl<'de> Deserialize<'de> for IdKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        id_key(d)
    }
}
