//! The journey's rarely used parts, allocated on first use.
//!
//! In: a part of a [`Journey`](super::Journey) that most customers never
//! fill (a cart, calls, contacts, decisions, consent, value). Out: the part
//! itself, read through `Deref` (an empty part when none was ever written)
//! and written through `DerefMut` (which allocates it). Keeps one pointer in
//! the journey (8 bytes) instead of the part, and the part on the heap only
//! when it holds something.
//!
//! Invariant: serialized exactly like the part itself (the snapshot, the
//! journeys changelog and the lookup API's JSON are unchanged); an empty
//! part read back is not allocated.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::mem::size_of;
use std::ops::{Deref, DerefMut};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::compact::List;
use super::{CallStats, Cart, Clv, Consents, Contact, LocalClock, ProductView, RecentAction};
use crate::time::EventTime;

/// A part with an empty value that `Deref` can hand out without allocating.
pub trait Empty: Default + PartialEq + 'static {
    const EMPTY: &'static Self;
}

macro_rules! empty {
    ($($t:ty => $e:expr;)*) => {
        $(impl Empty for $t {
            const EMPTY: &'static Self = &$e;
        })*
    };
}

empty! {
    Cart => Cart { items: BTreeMap::new(), updated_at: None };
    CallStats => CallStats { calls: 0, resolved: 0, unresolved: 0, escalated: 0, abandoned: 0, last_call: None };
    List<EventTime> => List::new();
    List<Contact> => List::new();
    VecDeque<RecentAction> => VecDeque::new();
    BTreeMap<String, u32> => BTreeMap::new();
    BTreeMap<String, EventTime> => BTreeMap::new();
    Consents => Consents { email: None, sms: None, push: None };
    Option<LocalClock> => None;
    Option<EventTime> => None;
    Option<f64> => None;
    Option<Clv> => None;
    Option<ProductView> => None;
}

/// A rarely used part of a journey: `None` until written.
#[derive(Clone, Default)]
pub struct Cold<T>(Option<Box<T>>);

impl<T: Empty> Cold<T> {
    /// Frees the part: it reads as empty again.
    pub fn free(&mut self) {
        self.0 = None;
    }

    /// Sets the part (freed when `v` is empty).
    pub fn set(&mut self, v: T) {
        *self = Cold::from(v);
    }

    /// Whether the part is allocated.
    pub fn is_allocated(&self) -> bool {
        self.0.is_some()
    }

    /// The bytes the part's box takes when it holds something (the part's
    /// own heap is not counted here). A part written and emptied again
    /// counts nothing, like the same part read back.
    pub fn boxed_bytes(&self) -> usize {
        match &self.0 {
            Some(b) if **b != *T::EMPTY => size_of::<T>(),
            _ => 0,
        }
    }

    /// Takes the part out, leaving it empty.
    pub fn take_part(&mut self) -> T {
        self.0.take().map_or_else(T::default, |b| *b)
    }
}

impl<T: Empty> From<T> for Cold<T> {
    fn from(v: T) -> Self {
        if v == *T::EMPTY {
            Cold(None)
        } else {
            Cold(Some(Box::new(v)))
        }
    }
}

impl<T: Empty> Deref for Cold<T> {
    type Target = T;

    fn deref(&self) -> &T {
        self.0.as_deref().unwrap_or(T::EMPTY)
    }
}

impl<T: Empty> DerefMut for Cold<T> {
    fn deref_mut(&mut self) -> &mut T {
        self.0.get_or_insert_with(Box::default)
    }
}

impl<T: Empty + IntoIterator> IntoIterator for Cold<T> {
    type Item = T::Item;
    type IntoIter = T::IntoIter;

    fn into_iter(mut self) -> T::IntoIter {
        self.take_part().into_iter()
    }
}

impl<T: Empty> PartialEq for Cold<T> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl<T: Empty + fmt::Debug> fmt::Debug for Cold<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (**self).fmt(f)
    }
}

impl<T: Empty + Serialize> Serialize for Cold<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (**self).serialize(s)
    }
}

impl<'de, T: Empty + Deserialize<'de>> Deserialize<'de> for Cold<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        T::deserialize(d).map(Cold::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unwritten_part_reads_empty_and_allocates_nothing() {
        let mut c: Cold<Cart> = Cold::default();
        assert!(c.is_empty());
        assert!(!c.is_allocated());
        assert_eq!(c.boxed_bytes(), 0);
        c.updated_at = Some(EventTime(1));
        assert!(c.is_allocated());
        assert_eq!(c.boxed_bytes(), size_of::<Cart>());
        let back: Cold<Cart> = rmp_serde::from_slice(&rmp_serde::to_vec(&Cold::<Cart>::default()).unwrap()).unwrap();
        assert!(!back.is_allocated(), "an empty part read back stays unallocated");
        assert_eq!(rmp_serde::to_vec(&c).unwrap(), rmp_serde::to_vec(&*c).unwrap());
    }
}
