//! The order a snapshot writes the journeys and the timers in: the
//! profiles' order, as the graph writes its index (`identity/write_order.rs`).
//!
//! In: the state's journeys, the timers, and the graph whose profiles the
//! snapshot wrote first. Out: their entries as sequences of `(One ID,
//! value)`, every entry once: first those of a profile, in the order the
//! snapshot wrote the profiles, then the others in their map's order.
//! Keeps nothing.
//!
//! Why: the reader numbers and allocates the texts in the profiles' order;
//! a journey's or a timer home's One ID, and a timer's identifier, written
//! in hash or text order were each a cache miss into the text table and
//! the heap, and another when the restore hashes them into its maps. The
//! order is not part of the format: the reader puts every entry in a map.

use serde::ser::SerializeTuple;
use serde::{Serialize, Serializer};

use super::timer_set::TimerSet;
use super::Timer;
use crate::hash::DashMap;
use crate::identity::{IdentityGraph, OneId};
use crate::intern::OneIdRef;
use crate::snapshot::exact_seq_with;

/// A map keyed by One ID (the journeys), written in the profiles' order.
pub(super) struct ByProfile<'a, V> {
    pub(super) identity: &'a IdentityGraph,
    pub(super) map: &'a DashMap<OneId, V>,
}

impl<V: Serialize> Serialize for ByProfile<'_, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let map = self.map;
        exact_seq_with(s, map.len(), |emit| {
            let first = |o: &OneId| map.get(o).map(Entry::One);
            in_profile_order(self.identity, map.len(), first, || map.iter().map(Entry::Many), emit)
        })
    }
}

/// Hands `emit` every entry of a map of `len` entries keyed by One ID
/// once: first `first` of each profile's One ID, in the profiles' order,
/// then those of `rest` whose key is no profile's.
fn in_profile_order<T: Keyed, I: Iterator<Item = T>, E>(
    identity: &IdentityGraph,
    len: usize,
    mut first: impl FnMut(&OneId) -> Option<T>,
    rest: impl FnOnce() -> I,
    emit: &mut dyn FnMut(T) -> Result<(), E>,
) -> Result<(), E> {
    let mut reached = 0usize;
    identity.each_one_id_in_profile_order(|o| match first(o) {
        Some(item) => {
            reached += 1;
            emit(item)
        }
        None => Ok(()),
    })?;
    if reached < len {
        for item in rest() {
            if !identity.has_profile(item.one_id()) {
                emit(item)?;
            }
        }
    }
    Ok(())
}

/// An entry keyed by One ID.
trait Keyed {
    fn one_id(&self) -> &OneId;
}

/// An entry of a `DashMap` under either kind of guard, written as a pair.
enum Entry<'a, V> {
    One(dashmap::mapref::one::Ref<'a, OneId, V>),
    Many(dashmap::mapref::multiple::RefMulti<'a, OneId, V>),
}

impl<V> Keyed for Entry<'_, V> {
    fn one_id(&self) -> &OneId {
        match self {
            Entry::One(r) => r.key(),
            Entry::Many(r) => r.key(),
        }
    }
}

impl<V: Serialize> Serialize for Entry<'_, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (k, v) = match self {
            Entry::One(r) => (r.key(), r.value()),
            Entry::Many(r) => (r.key(), r.value()),
        };
        let mut t = s.serialize_tuple(2)?;
        t.serialize_element(&OneIdRef(k))?;
        t.serialize_element(v)?;
        t.end()
    }
}

/// The timers by home, written in the profiles' order.
pub(super) struct TimerHomes<'a> {
    pub(super) identity: &'a IdentityGraph,
    pub(super) timers: &'a TimerSet,
}

impl Serialize for TimerHomes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let timers = self.timers;
        exact_seq_with(s, timers.home_count(), |emit| {
            let first = |o: &OneId| timers.home(o).map(pair);
            in_profile_order(
                self.identity,
                timers.home_count(),
                first,
                || timers.entries().map(pair),
                emit,
            )
        })
    }
}

/// A timer home as a snapshot writes it.
fn pair<'a>((home, timers): (&'a OneId, &'a [Timer])) -> (OneIdRef<'a>, &'a [Timer]) {
    (OneIdRef(home), timers)
}

impl Keyed for (OneIdRef<'_>, &[Timer]) {
    fn one_id(&self) -> &OneId {
        self.0 .0
    }
}

#[cfg(test)]
#[path = "write_order_tests.rs"]
mod tests;
