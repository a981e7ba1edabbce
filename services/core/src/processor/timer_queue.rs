//! The armed timers in firing order: an ordered map from timer to home,
//! kept in sorted chunks instead of `BTreeMap` nodes.
//!
//! In: timers with their homes (insert, remove), the earliest taken. Out:
//! the same answers a `BTreeMap<Timer, OneId>` gives. Keeps every entry
//! once, in chunks of at most [`CHUNK`] entries, each sorted, the chunks in
//! order under a small `BTreeMap` keyed by a lower bound of each chunk.
//!
//! Why not a `BTreeMap`: timers are armed mostly in due order (an event's
//! time plus a fixed delay), and a `BTreeMap` that is appended to splits
//! its full right-most node in two, leaving every node a little over half
//! full: about 90 bytes per 48-byte entry (session 19, `heaptrack` of the
//! bench's preload: the firing order was the state's largest single
//! structure after the identity index). Here an append to a full last
//! chunk starts a new chunk instead of splitting it, so chunks filled in
//! order stay full; an insert in the middle of a full chunk splits it in
//! halves, as a B-tree does.

use std::collections::{BTreeMap, VecDeque};

use crate::identity::OneId;

use super::timer_set::Timer;

/// Entries per chunk: 64 of 48 bytes, one 3 KiB allocation; an insert in
/// the middle moves at most half of it.
const CHUNK: usize = 64;

/// Timers in firing order, each with its home.
#[derive(Default)]
pub(super) struct TimerQueue {
    /// Each chunk non-empty and sorted; its key is at most its first
    /// timer and above every timer of the chunk before it.
    chunks: BTreeMap<Timer, VecDeque<(Timer, OneId)>>,
    len: usize,
}

impl TimerQueue {
    pub fn len(&self) -> usize {
        self.len
    }

    /// The earliest timer and its home.
    pub fn first(&self) -> Option<&(Timer, OneId)> {
        self.chunks.values().next().and_then(|c| c.front())
    }

    /// Every timer with its home, in firing order.
    pub fn iter(&self) -> impl Iterator<Item = &(Timer, OneId)> {
        self.chunks.values().flatten()
    }

    /// The key of the chunk that holds (or would hold) `t`: the last one at
    /// or below it, else the first.
    fn chunk_of(&self, t: &Timer) -> Option<Timer> {
        self.chunks
            .range(..=t)
            .next_back()
            .or_else(|| self.chunks.iter().next())
            .map(|(k, _)| k.clone())
    }

    /// The home `t` is armed under, if it is.
    #[cfg(test)]
    pub fn get(&self, t: &Timer) -> Option<&OneId> {
        let chunk = self.chunks.get(&self.chunk_of(t)?)?;
        let i = chunk.binary_search_by(|(x, _)| x.cmp(t)).ok()?;
        chunk.get(i).map(|(_, h)| h)
    }

    /// Arms `t` under `home`; false, and nothing changes, when `t` is armed
    /// already (under whichever home).
    pub fn insert(&mut self, t: Timer, home: OneId) -> bool {
        let Some(key) = self.chunk_of(&t) else {
            self.chunks.insert(t.clone(), VecDeque::from([(t, home)]));
            self.len += 1;
            return true;
        };
        let Some(mut chunk) = self.chunks.remove(&key) else {
            return false;
        };
        let at = match chunk.binary_search_by(|(x, _)| x.cmp(&t)) {
            Ok(_) => {
                self.chunks.insert(key, chunk);
                return false;
            }
            Err(at) => at,
        };
        // The first chunk takes timers below its key: it is re-keyed.
        let key = if t < key { t.clone() } else { key };
        if chunk.len() < CHUNK {
            chunk.insert(at, (t, home));
            self.chunks.insert(key, chunk);
        } else if at == CHUNK {
            // Past the end of a full chunk (the common case: armed in due
            // order): a new chunk, the full one left as it is.
            self.chunks.insert(key, chunk);
            let mut fresh = VecDeque::with_capacity(CHUNK);
            fresh.push_back((t.clone(), home));
            self.chunks.insert(t, fresh);
        } else {
            let mut right = VecDeque::with_capacity(CHUNK);
            right.extend(chunk.drain(CHUNK / 2..));
            if at <= CHUNK / 2 {
                chunk.insert(at, (t, home));
            } else {
                right.insert(at - CHUNK / 2, (t, home));
            }
            let right_key = right.front().map(|(x, _)| x.clone());
            self.chunks.insert(key, chunk);
            if let Some(k) = right_key {
                self.chunks.insert(k, right);
            }
        }
        self.len += 1;
        true
    }

    /// Takes the earliest timer, with its home.
    pub fn pop_first(&mut self) -> Option<(Timer, OneId)> {
        let mut first = self.chunks.first_entry()?;
        let taken = first.get_mut().pop_front();
        if first.get().is_empty() {
            first.remove();
        }
        if taken.is_some() {
            self.len -= 1;
        }
        taken
    }

    /// Disarms `t`; its home, if it was armed.
    pub fn remove(&mut self, t: &Timer) -> Option<OneId> {
        let key = self.chunk_of(t)?;
        let chunk = self.chunks.get_mut(&key)?;
        let i = chunk.binary_search_by(|(x, _)| x.cmp(t)).ok()?;
        let (_, home) = chunk.remove(i)?;
        if chunk.is_empty() {
            self.chunks.remove(&key);
        }
        self.len -= 1;
        Some(home)
    }

    /// Heap bytes per entry, on average: the entry (48 bytes) in chunks
    /// full when filled in order and three quarters full on average when
    /// filled at random, plus the chunk index's share.
    pub const ENTRY_BYTES: usize = 56;
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;
    use crate::ids::{IdKey, Ns};
    use crate::processor::TimerKind;
    use crate::time::EventTime;

    fn timer(due: i64, key: u8) -> Timer {
        (EventTime(due), TimerKind::Quiet, IdKey::new(Ns(0), &format!("k{key}")))
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(i64, u8, u8),
        Pop,
        Remove(i64, u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0..400i64, 0..4u8, 0..3u8).prop_map(|(d, k, h)| Op::Insert(d, k, h)),
            // Mostly in due order, as events arm them.
            3 => (0..4u8, 0..3u8).prop_map(|(k, h)| Op::Insert(i64::MAX - 1, k, h)),
            2 => Just(Op::Pop),
            2 => (0..400i64, 0..4u8).prop_map(|(d, k)| Op::Remove(d, k)),
        ]
    }

    proptest! {
        /// Every answer is a `BTreeMap`'s, whatever the order of operations.
        #[test]
        fn it_answers_as_an_ordered_map(ops in prop::collection::vec(op(), 0..1500)) {
            let homes: Vec<OneId> = (0..3).map(|h| Arc::from(format!("oj-{h}"))).collect();
            let mut q = TimerQueue::default();
            let mut model: BTreeMap<Timer, OneId> = BTreeMap::new();
            let mut appended = 0i64;
            for op in ops {
                match op {
                    Op::Insert(due, key, h) => {
                        let due = if due == i64::MAX - 1 { appended += 1; 1000 + appended } else { due };
                        let t = timer(due, key);
                        let fresh = !model.contains_key(&t);
                        if fresh {
                            model.insert(t.clone(), homes[h as usize].clone());
                        }
                        prop_assert_eq!(q.insert(t, homes[h as usize].clone()), fresh);
                    }
                    Op::Pop => prop_assert_eq!(q.pop_first(), model.pop_first()),
                    Op::Remove(due, key) => {
                        let t = timer(due, key);
                        prop_assert_eq!(q.remove(&t), model.remove(&t));
                    }
                }
                prop_assert_eq!(q.len(), model.len());
                let first = model.first_key_value().map(|(t, h)| (t.clone(), h.clone()));
                prop_assert_eq!(q.first().cloned(), first);
            }
            let all: Vec<_> = q.iter().cloned().collect();
            let expected: Vec<_> = model.into_iter().collect();
            prop_assert_eq!(all, expected);
            for (k, c) in &q.chunks {
                prop_assert!(!c.is_empty() && c.len() <= CHUNK);
                prop_assert!(c.front().is_some_and(|(t, _)| k <= t));
            }
        }
    }

    #[test]
    fn timers_armed_in_due_order_fill_their_chunks() {
        let home: OneId = Arc::from("oj-a");
        let mut q = TimerQueue::default();
        for due in 0..10 * CHUNK as i64 {
            assert!(q.insert(timer(due, 0), home.clone()));
        }
        assert_eq!(q.chunks.len(), 10, "full chunks, none split");
        assert!(q.chunks.values().all(|c| c.len() == CHUNK));
        assert_eq!(q.get(&timer(5, 0)), Some(&home));
        assert_eq!(q.get(&timer(5, 1)), None);
    }
}

/// Resident bytes per timer of this queue and of a `BTreeMap`, for timers
/// armed at two frontiers (a quiet check 30 days and a churn label 42 days
/// after each event, events in time order) and for the bench's preload
/// (logins cycling through one day):
/// `cargo test --release -p onejourney-core --lib timer_queue::resident -- --ignored --nocapture`.
#[cfg(test)]
mod resident {
    use std::sync::Arc;

    use super::*;
    use crate::ids::{IdKey, Ns};
    use crate::processor::TimerKind;
    use crate::time::EventTime;

    fn rss() -> usize {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
        statm
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<usize>().ok())
            .unwrap_or(0)
            * 4096
    }

    fn timers(n: usize, cyclic: bool) -> Vec<(Timer, OneId)> {
        let day = 86_400_000;
        let mut v = Vec::with_capacity(2 * n);
        for i in 0..n {
            let at = if cyclic {
                (i % 86_400) as i64 * 1000
            } else {
                i as i64 * 10
            };
            let key = IdKey::new(Ns(0), &format!("c{i}"));
            let home: OneId = Arc::from(format!("oj-{i}"));
            v.push(((EventTime(at + 30 * day), TimerKind::Quiet, key.clone()), home.clone()));
            v.push(((EventTime(at + 42 * day), TimerKind::ChurnLabel, key), home));
        }
        v
    }

    /// One structure and one pattern per process (freed memory is reused):
    /// `ONEJOURNEY_TIMERS=queue|btree`, `ONEJOURNEY_CYCLIC=1` for the bench's.
    #[test]
    #[ignore = "a measurement, run by hand"]
    fn resident_bytes_per_timer() {
        let n = 1_000_000;
        let cyclic = std::env::var("ONEJOURNEY_CYCLIC").is_ok_and(|v| v == "1");
        let which = std::env::var("ONEJOURNEY_TIMERS").unwrap_or_default();
        let all = timers(n, cyclic);
        let before = rss();
        let kept: Box<dyn std::any::Any> = if which == "btree" {
            // Inserted one by one, as the processor arms them (`collect`
            // would build full nodes from the sorted input).
            let mut m = BTreeMap::new();
            for (t, h) in all.iter().cloned() {
                m.insert(t, h);
            }
            Box::new(m)
        } else {
            let mut q = TimerQueue::default();
            for (t, h) in all.iter().cloned() {
                q.insert(t, h);
            }
            Box::new(q)
        };
        let per = rss().saturating_sub(before) / (2 * n);
        println!("{which} cyclic {cyclic}: {per} resident bytes/timer");
        drop(kept);
    }
}
