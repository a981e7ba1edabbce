//! The profiles active most recently, kept as journeys change, so listing
//! them costs O(limit) instead of a walk of every journey.
//!
//! In: a journey's last event time each time the writer puts the journey
//! back ([`Recent::touch`]), and journeys that are gone for good (merged
//! away, forgotten: [`Recent::remove`]). Out: the newest `n` One IDs,
//! newest first, ties by the smaller One ID ([`Recent::newest`]): exactly the
//! first `n` of every journey sorted that way.
//!
//! What it keeps: at most `capacity` entries that are always the top of that
//! order over all journeys (a prefix of it). An entry that is not kept enters
//! only when it sorts before the worst kept one, or when no journey is
//! outside; when the list is full the worst falls out. Removals can shrink
//! the prefix: once it is shorter than `keep` while journeys are outside,
//! [`Recent::needs_refill`] says so and the owner refills it with one walk
//! ([`Recent::refill`]), which removals of the newest customers make rare.

use std::cmp::Reverse;
use std::collections::BTreeSet;

use crate::hash::HashMap;
use crate::identity::OneId;
use crate::time::EventTime;

/// The most profiles a caller may ask for.
pub const RECENT_MAX: usize = 100;

/// Sorts newest first, then by One ID.
type Key = (Reverse<Option<EventTime>>, OneId);

#[derive(Debug)]
pub struct Recent {
    order: BTreeSet<Key>,
    at: HashMap<OneId, Option<EventTime>>,
    /// The fewest entries kept while journeys are outside (before a refill).
    keep: usize,
    capacity: usize,
    /// Every journey is kept: nothing is outside.
    complete: bool,
}

impl Default for Recent {
    fn default() -> Self {
        Recent::new(RECENT_MAX, 4 * RECENT_MAX)
    }
}

impl Recent {
    /// Answers up to `keep` exactly; holds at most `capacity` (>= `keep`).
    pub fn new(keep: usize, capacity: usize) -> Self {
        Recent {
            order: BTreeSet::new(),
            at: HashMap::default(),
            keep,
            capacity: capacity.max(keep),
            complete: true,
        }
    }

    /// The journey of `one_id` now has `last_seen` (never earlier than before).
    pub fn touch(&mut self, one_id: &OneId, last_seen: Option<EventTime>) {
        if let Some(old) = self.at.get_mut(one_id) {
            if *old != last_seen {
                self.order.remove(&(Reverse(*old), one_id.clone()));
                self.order.insert((Reverse(last_seen), one_id.clone()));
                *old = last_seen;
            }
            return;
        }
        let key = (Reverse(last_seen), one_id.clone());
        let beats_worst = self.order.last().is_some_and(|worst| key < *worst);
        if !(self.complete || beats_worst) {
            // It sorts after every kept entry: it stays outside.
            return;
        }
        self.order.insert(key);
        self.at.insert(one_id.clone(), last_seen);
        if self.order.len() > self.capacity {
            if let Some((_, out)) = self.order.pop_last() {
                self.at.remove(&out);
            }
            self.complete = false;
        }
    }

    /// The journey of `one_id` is gone for good.
    pub fn remove(&mut self, one_id: &OneId) {
        if let Some(t) = self.at.remove(one_id) {
            self.order.remove(&(Reverse(t), one_id.clone()));
        }
    }

    /// True when the kept prefix is too short to answer `keep` and journeys
    /// may be outside it.
    pub fn needs_refill(&self) -> bool {
        !self.complete && self.order.len() < self.keep
    }

    /// Rebuilds from every journey's One ID and last event time.
    pub fn refill(&mut self, all: impl Iterator<Item = (OneId, Option<EventTime>)>) {
        self.order.clear();
        self.at.clear();
        self.complete = true;
        for (one_id, last_seen) in all {
            self.touch(&one_id, last_seen);
        }
    }

    /// The newest `n` One IDs (at most `keep`), newest first.
    pub fn newest(&self, n: usize) -> Vec<OneId> {
        self.order
            .iter()
            .take(n.min(self.keep))
            .map(|(_, id)| id.clone())
            .collect()
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The first `n` of every journey sorted newest first, then by One ID.
    fn scan(all: &std::collections::BTreeMap<OneId, Option<EventTime>>, n: usize) -> Vec<OneId> {
        let mut v: Vec<Key> = all.iter().map(|(id, t)| (Reverse(*t), id.clone())).collect();
        v.sort();
        v.into_iter().take(n).map(|(_, id)| id).collect()
    }

    #[derive(Clone, Debug)]
    enum Op {
        /// A journey (0..40) gets an event at this time (never earlier than its last).
        Event(u8, i64),
        Remove(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..40, 0i64..50).prop_map(|(i, t)| Op::Event(i, t)),
            1 => (0u8..40).prop_map(Op::Remove),
        ]
    }

    proptest! {
        /// Whatever the events and removals, the kept prefix answers like a sort of everything.
        #[test]
        fn answers_like_a_full_sort(ops in proptest::collection::vec(op(), 0..300)) {
            let (keep, capacity) = (5, 8);
            let mut r = Recent::new(keep, capacity);
            let mut all = std::collections::BTreeMap::new();
            for op in ops {
                match op {
                    Op::Event(i, t) => {
                        let id: OneId = OneId::from(format!("p{i:02}"));
                        let last = all.get(&id).copied().flatten().max(Some(EventTime(t)));
                        all.insert(id.clone(), last);
                        r.touch(&id, last);
                    }
                    Op::Remove(i) => {
                        let id: OneId = OneId::from(format!("p{i:02}"));
                        all.remove(&id);
                        r.remove(&id);
                        if r.needs_refill() {
                            r.refill(all.iter().map(|(k, v)| (k.clone(), *v)));
                        }
                    }
                }
                prop_assert!(r.len() <= capacity);
                for n in [1, 3, keep] {
                    prop_assert_eq!(r.newest(n), scan(&all, n));
                }
            }
        }
    }
}
