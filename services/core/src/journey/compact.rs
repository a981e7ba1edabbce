//! Compact in-memory forms of the journey's bounded lists and optional
//! times, serialized exactly like the plain forms they replace.
//!
//! In: the values a [`Journey`](super::Journey) keeps (times, visits, recent
//! events, churn points, examples, contacts). Out: [`List`], a bounded list
//! that is one pointer and a length (16 bytes where a `VecDeque` takes 32)
//! holding exactly its elements, and [`OptTime`], an optional event time in
//! 8 bytes (an `Option<EventTime>` takes 16). Keeps the values and nothing
//! else: no spare capacity, nothing allocated when empty.
//!
//! Why: every customer's journey is one allocation, and most fields are
//! lists of one or two elements and times; at millions of profiles the
//! inline size and the allocator's size class are most of a journey's cost.
//!
//! Invariant: a `List<T>` serializes as the sequence of its elements (the
//! bytes a `VecDeque<T>` wrote), an `OptTime` as an `Option<EventTime>`
//! (`nil` / the time); snapshots and changelog records written before read
//! back the same (`compat_tests.rs`). `EventTime::MIN` is not an event time
//! (no event carries it: it is what "none" is stored as).

use std::fmt;
use std::mem::size_of;
use std::ops::Deref;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::parts::Factor;
use crate::time::EventTime;
use crate::vocab::FactorName;

/// A bounded list kept sorted by its owner: exactly its elements on the
/// heap (no spare capacity), nothing when empty.
#[derive(Clone, PartialEq)]
pub struct List<T>(Option<Box<[T]>>);

impl<T> List<T> {
    /// The empty list (allocates nothing).
    pub const fn new() -> Self {
        List(None)
    }

    fn from_vec(v: Vec<T>) -> Self {
        if v.is_empty() {
            List(None)
        } else {
            List(Some(v.into_boxed_slice()))
        }
    }

    fn edit<R>(&mut self, f: impl FnOnce(&mut Vec<T>) -> R) -> R {
        let mut v = self.0.take().map_or_else(Vec::new, <[T]>::into_vec);
        let r = f(&mut v);
        *self = List::from_vec(v);
        r
    }

    /// Inserts `item` at `pos` of a list kept at most `cap` long, the oldest
    /// (front) dropped first: the same list as inserting and then popping
    /// the front down to `cap`.
    pub fn keep_at(&mut self, pos: usize, item: T, cap: usize) {
        self.edit(|v| {
            let excess = (v.len() + 1).saturating_sub(cap);
            if excess == 0 {
                v.reserve_exact(1);
                v.insert(pos, item);
            } else if pos < excess {
                // The item itself is among the oldest: it goes at once.
                v.drain(..excess - 1);
            } else {
                v.drain(..excess);
                v.insert(pos - excess, item);
            }
        });
    }

    /// Removes and returns the first (oldest) element.
    pub fn pop_front(&mut self) -> Option<T> {
        if self.is_empty() {
            return None;
        }
        self.edit(|v| Some(v.remove(0)))
    }

    /// Removes the first (oldest) `n` elements (all of them when fewer).
    pub fn drop_front(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        self.edit(|v| {
            v.drain(..n.min(v.len()));
        });
    }

    /// Appends `item`, growing the list by exactly one.
    pub fn push(&mut self, item: T) {
        self.edit(|v| {
            v.reserve_exact(1);
            v.push(item);
        });
    }

    /// Removes the element at `i` (the last one takes its place); none
    /// when `i` is out of range.
    pub fn swap_remove(&mut self, i: usize) -> Option<T> {
        if i >= self.len() {
            return None;
        }
        self.edit(|v| Some(v.swap_remove(i)))
    }

    /// Keeps the elements `keep` says yes to, in order (no allocation
    /// when it keeps them all).
    pub fn retain(&mut self, keep: impl FnMut(&T) -> bool) {
        let mut keep = keep;
        if self.iter().all(&mut keep) {
            return;
        }
        self.edit(|v| v.retain(keep));
    }

    /// Appends `more`, growing the list by exactly their number.
    pub fn extend(&mut self, more: impl IntoIterator<Item = T>) {
        let mut more = more.into_iter().peekable();
        if more.peek().is_some() {
            self.edit(|v| {
                v.reserve_exact(more.size_hint().0);
                v.extend(more);
                v.shrink_to_fit();
            });
        }
    }

    /// The elements, to change in place.
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        self.0.as_deref_mut().unwrap_or(&mut [])
    }

    /// Removes every element.
    pub fn clear(&mut self) {
        self.0 = None;
    }

    /// The bytes the elements take on the heap.
    pub fn heap_bytes(&self) -> usize {
        self.len() * size_of::<T>()
    }
}

impl<T> Default for List<T> {
    fn default() -> Self {
        List::new()
    }
}

impl<T> Deref for List<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        self.0.as_deref().unwrap_or(&[])
    }
}

impl<T> From<Vec<T>> for List<T> {
    fn from(v: Vec<T>) -> Self {
        List::from_vec(v)
    }
}

impl<T> FromIterator<T> for List<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        List::from_vec(iter.into_iter().collect())
    }
}

impl<T> IntoIterator for List<T> {
    type Item = T;
    type IntoIter = std::vec::IntoIter<T>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.map_or_else(Vec::new, <[T]>::into_vec).into_iter()
    }
}

impl<'a, T> IntoIterator for &'a List<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<T: fmt::Debug> fmt::Debug for List<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<T: Serialize> Serialize for List<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (**self).serialize(s)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for List<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<T>::deserialize(d).map(List::from_vec)
    }
}

/// An optional event time in 8 bytes: `EventTime::MIN` stands for none.
#[derive(Copy, Clone, PartialEq, Eq, Hash)]
pub struct OptTime(i64);

impl OptTime {
    pub const NONE: OptTime = OptTime(i64::MIN);

    pub fn get(self) -> Option<EventTime> {
        (self.0 != i64::MIN).then_some(EventTime(self.0))
    }

    pub fn is_none(self) -> bool {
        self.0 == i64::MIN
    }

    pub fn is_some(self) -> bool {
        !self.is_none()
    }

    /// Moves the time outward to include `at` (the later of the two).
    pub fn extend_to(&mut self, at: EventTime) {
        *self = OptTime::from(self.get().map_or(at, |t| t.max(at)));
    }
}

impl Default for OptTime {
    fn default() -> Self {
        OptTime::NONE
    }
}

impl From<EventTime> for OptTime {
    fn from(t: EventTime) -> Self {
        OptTime(t.0)
    }
}

impl From<Option<EventTime>> for OptTime {
    fn from(t: Option<EventTime>) -> Self {
        t.map_or(OptTime::NONE, OptTime::from)
    }
}

impl fmt::Debug for OptTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.get().fmt(f)
    }
}

impl Serialize for OptTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.get().serialize(s)
    }
}

impl<'de> Deserialize<'de> for OptTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Option::<EventTime>::deserialize(d).map(OptTime::from)
    }
}

/// A churn factor as a journey keeps it: 16 bytes where a [`Factor`]
/// takes 24. The score rounds every contribution to 0.01 (`decide::round2`),
/// so it is kept in hundredths and read back as the same `f64`.
#[derive(Copy, Clone, Debug, PartialEq)]
struct KeptFactor {
    value: f64,
    hundredths: i32,
    name: FactorName,
}

/// Stands for a contribution of `-0.0` (a tiny negative share rounded).
const NEGATIVE_ZERO: i32 = i32::MIN;

impl KeptFactor {
    fn of(f: &Factor) -> Self {
        let hundredths = if f.contribution == 0.0 && f.contribution.is_sign_negative() {
            NEGATIVE_ZERO
        } else {
            // Saturates: contributions are shares of a score in 0..1.
            (f.contribution * 100.0).round() as i32
        };
        KeptFactor {
            value: f.value,
            hundredths,
            name: f.name,
        }
    }

    fn factor(&self) -> Factor {
        let contribution = match self.hundredths {
            NEGATIVE_ZERO => -0.0,
            h => f64::from(h) / 100.0,
        };
        Factor {
            name: self.name,
            value: self.value,
            contribution,
        }
    }
}

/// The factors of the last churn score, compact (see [`KeptFactor`]);
/// serialized as the list of [`Factor`]s.
#[derive(Clone, Default, PartialEq)]
pub struct Factors(List<KeptFactor>);

impl Factors {
    /// The factors as the score reported them.
    pub fn to_vec(&self) -> Vec<Factor> {
        self.0.iter().map(KeptFactor::factor).collect()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The bytes the factors take on the heap.
    pub fn heap_bytes(&self) -> usize {
        self.0.heap_bytes()
    }

    /// Replaces the factors with `v`'s, in the allocation held when they
    /// are as many (most evaluations of one journey report the same
    /// factors with new values): no allocation per evaluation then.
    pub fn assign(&mut self, v: &[Factor]) {
        if self.0.len() == v.len() {
            for (kept, f) in self.0.as_mut_slice().iter_mut().zip(v) {
                *kept = KeptFactor::of(f);
            }
        } else {
            self.0 = v.iter().map(KeptFactor::of).collect();
        }
    }
}

impl From<Vec<Factor>> for Factors {
    fn from(v: Vec<Factor>) -> Self {
        Factors(v.iter().map(KeptFactor::of).collect())
    }
}

impl fmt::Debug for Factors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.to_vec().fmt(f)
    }
}

impl Serialize for Factors {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(KeptFactor::factor))
    }
}

impl<'de> Deserialize<'de> for Factors {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<Factor>::deserialize(d).map(Factors::from)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    #[test]
    fn assigned_factors_are_the_converted_ones_in_the_same_list_when_as_many() {
        let factor = |name, value: f64| Factor {
            name,
            value,
            contribution: value / 10.0,
        };
        let two = vec![factor(FactorName::Returns, 1.0), factor(FactorName::Tenure, 2.0)];
        let other_two = vec![factor(FactorName::Returns, 3.5), factor(FactorName::LastCsat, 4.0)];
        let three = vec![
            factor(FactorName::Returns, 1.0),
            factor(FactorName::Tenure, 2.0),
            factor(FactorName::ChannelsUsed, 3.0),
        ];
        let mut f = Factors::from(two);
        let list = f.0.as_ptr();
        f.assign(&other_two);
        assert!(f == Factors::from(other_two.clone()), "{f:?}");
        assert_eq!(f.0.as_ptr(), list, "as many factors: the same list");
        f.assign(&three);
        assert!(f == Factors::from(three.clone()), "{f:?}");
        f.assign(&[]);
        assert!(f.is_empty());
    }

    #[test]
    fn keep_at_is_insert_then_pop_and_holds_exactly_its_elements() {
        for cap in 1..5usize {
            for len in 0..7usize {
                for pos in 0..=len {
                    let base: Vec<usize> = (0..len).map(|i| i * 10).collect();
                    let mut want: VecDeque<usize> = base.iter().copied().collect();
                    want.insert(pos, 99);
                    while want.len() > cap {
                        want.pop_front();
                    }
                    let mut got = List::from(base.clone());
                    got.keep_at(pos, 99, cap);
                    assert_eq!(*got, *want.make_contiguous(), "cap {cap} len {len} pos {pos}");
                    assert_eq!(got.0.as_ref().map_or(0, |b| b.len()), got.len());
                }
            }
        }
        let mut l = List::from(vec![1, 2]);
        assert_eq!(l.pop_front(), Some(1));
        assert_eq!(l.pop_front(), Some(2));
        assert_eq!(l.pop_front(), None);
        assert!(l.0.is_none(), "an emptied list holds no allocation");
        let mut l = List::from(vec![1, 2, 3]);
        l.drop_front(2);
        assert_eq!(*l, [3]);
        l.drop_front(5);
        assert!(l.0.is_none());
        let mut l = List::from(vec![1, 2, 3, 4]);
        l.retain(|x| x % 2 == 0);
        assert_eq!((&*l, l.0.as_ref().map_or(0, |b| b.len())), (&[2, 4][..], 2));
        l.as_mut_slice()[0] = 6;
        assert_eq!(*l, [6, 4]);
        l.retain(|_| false);
        assert!(l.0.is_none(), "a list retained to nothing holds no allocation");
        l.extend([1, 2]);
        l.extend(std::iter::empty());
        l.extend(vec![3]);
        assert_eq!((&*l, l.0.as_ref().map_or(0, |b| b.len())), (&[1, 2, 3][..], 3));
    }

    #[test]
    fn they_serialize_as_the_plain_forms() {
        let times = [EventTime(5), EventTime(7)];
        let list: List<EventTime> = times.iter().copied().collect();
        let deque: VecDeque<EventTime> = times.iter().copied().collect();
        assert_eq!(rmp_serde::to_vec(&list).unwrap(), rmp_serde::to_vec(&deque).unwrap());
        assert_eq!(
            serde_json::to_string(&list).unwrap(),
            serde_json::to_string(&deque).unwrap()
        );
        let back: List<EventTime> = rmp_serde::from_slice(&rmp_serde::to_vec(&deque).unwrap()).unwrap();
        assert_eq!(back, list);
        let empty: List<EventTime> =
            rmp_serde::from_slice(&rmp_serde::to_vec(&VecDeque::<EventTime>::new()).unwrap()).unwrap();
        assert!(empty.0.is_none());

        for t in [
            None,
            Some(EventTime(0)),
            Some(EventTime(-3)),
            Some(EventTime(1_790_000_000_000)),
        ] {
            let o = OptTime::from(t);
            assert_eq!(o.get(), t);
            assert_eq!(rmp_serde::to_vec(&o).unwrap(), rmp_serde::to_vec(&t).unwrap());
            assert_eq!(serde_json::to_string(&o).unwrap(), serde_json::to_string(&t).unwrap());
            let back: OptTime = rmp_serde::from_slice(&rmp_serde::to_vec(&t).unwrap()).unwrap();
            assert_eq!(back, o);
        }
        assert_eq!(size_of::<OptTime>(), 8);

        // Factors: contributions as the score rounds them come back bit for bit.
        let factors: Vec<Factor> = [0.0, -0.0, 0.01, 0.1, 0.29, 0.57, 1.0, -0.33, 0.07]
            .iter()
            .enumerate()
            .map(|(i, c)| Factor {
                name: FactorName::ALL[i],
                value: 1.0 / (i as f64 + 3.0),
                contribution: crate::decide::round2(*c),
            })
            .collect();
        let kept = Factors::from(factors.clone());
        let back = kept.to_vec();
        assert!(back
            .iter()
            .zip(&factors)
            .all(|(a, b)| a.contribution.to_bits() == b.contribution.to_bits() && a == b));
        assert_eq!(rmp_serde::to_vec(&kept).unwrap(), rmp_serde::to_vec(&factors).unwrap());
        assert_eq!(
            serde_json::to_string(&kept).unwrap(),
            serde_json::to_string(&factors).unwrap()
        );
        let read: Factors = rmp_serde::from_slice(&rmp_serde::to_vec(&factors).unwrap()).unwrap();
        assert_eq!(read, kept);
        assert_eq!(size_of::<KeptFactor>(), 16);
        assert_eq!(size_of::<List<EventTime>>(), 16);
    }
}
