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
    VecDeque<EventTime> => VecDeque::new();
    VecDeque<Contact> => VecDeque::new();
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

/// Makes room for one more element in a bounded list, growing it by half
/// (at least one) instead of doubling from four: most lists of a journey
/// hold one or two elements, and they are read back with exact capacity.
pub fn room_for_one<T>(v: &mut VecDeque<T>) {
    if v.len() == v.capacity() {
        v.reserve_exact((v.len() / 2).max(1));
    }
}

/// Inserts `item` at `pos` of a list kept at most `cap` long, the oldest
/// (front) dropped first: the same list as inserting and then popping the
/// front down to `cap`, without ever growing past `cap`.
pub fn keep_at<T>(v: &mut VecDeque<T>, pos: usize, item: T, cap: usize) {
    let excess = (v.len() + 1).saturating_sub(cap);
    if excess == 0 {
        room_for_one(v);
        v.insert(pos, item);
    } else if pos < excess {
        // The item itself is among the oldest: it goes at once.
        v.drain(..excess - 1);
    } else {
        v.drain(..excess);
        v.insert(pos - excess, item);
    }
}

/// The bytes a list's elements take.
pub fn list_bytes<T>(v: &VecDeque<T>) -> usize {
    v.len() * size_of::<T>()
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

    #[test]
    fn lists_grow_by_half() {
        let mut v = VecDeque::new();
        for i in 0..3 {
            room_for_one(&mut v);
            v.push_back(i);
        }
        assert!(v.capacity() < 4, "capacity {}", v.capacity());
    }

    #[test]
    fn keep_at_is_insert_then_pop_without_growing() {
        for cap in 1..5usize {
            for len in 0..7usize {
                for pos in 0..=len {
                    let base: VecDeque<usize> = (0..len).map(|i| i * 10).collect();
                    let mut want = base.clone();
                    want.insert(pos, 99);
                    while want.len() > cap {
                        want.pop_front();
                    }
                    let mut got = base.clone();
                    got.shrink_to_fit();
                    keep_at(&mut got, pos, 99, cap);
                    assert_eq!(got, want, "cap {cap} len {len} pos {pos}");
                    assert!(
                        got.capacity() <= len.max(cap),
                        "cap {cap} len {len}: {}",
                        got.capacity()
                    );
                }
            }
        }
    }
}
