//! The dedupe memory: which events were applied, for a bounded event-time
//! window.
//!
//! In: the dedupe key of each applied event ([`super::dedupe_key`]: SHA-256
//! based, stable across Rust releases and builds) with the event's time;
//! the processor's applied-to time as it advances. Out: whether a key was
//! seen ([`Dedupe::contains`]); whether an event is too old to be told apart
//! from a duplicate ([`Dedupe::too_late`]). Keeps the keys of the events
//! whose time is within `window` of the applied-to time, in buckets of
//! `window / 8` by event time; a whole bucket goes at once when it falls out
//! of the window (no per-key sweep, so expiry never stalls the writer).
//! `window` zero: every key is kept (the behaviour before format 4).
//! It also keeps the keys inserted since the last checkpoint took them
//! ([`Dedupe::take_fresh`]): the changelog gets the dedupe memory as deltas
//! per bucket, so a checkpoint writes what changed, not the window; a
//! restore adds the deltas up ([`Dedupe::add_delta`]) and expires the
//! buckets out of the window as the writer did.
//!
//! Why it is exact: an event is accepted only when its time is within the
//! window ([`Dedupe::too_late`]), and the bucket holding that time is kept
//! while the applied-to time stays within the window of it. So a key of an
//! accepted event is always still there when the same event comes again
//! inside the window; one that comes later is refused as too late, never
//! applied twice. A restart re-reads events applied after the checkpoint's
//! input offsets: each is either still remembered (a duplicate) or older
//! than the window (too late, and its effect is already in the state).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::hash::HashSet;
use crate::time::EventTime;

/// The dead-letter label of an event older than the window (see
/// [`Dedupe::too_late`]).
pub const TOO_LATE: &str = "too_late";

/// Buckets per window.
const BUCKETS: i64 = 8;
/// Bytes per remembered key, with the hash set's control bytes and spare
/// capacity (hashbrown keeps 1/8 empty at most, doubles on growth).
pub const KEY_BYTES: usize = 16;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Dedupe {
    /// Milliseconds; 0: unbounded.
    window_ms: i64,
    /// Bucket start (ms, a multiple of the bucket width) -> keys.
    buckets: BTreeMap<i64, HashSet<u64>>,
    len: usize,
    /// The keys inserted since the last [`Dedupe::take_fresh`], per bucket:
    /// what the next checkpoint writes to the changelog. Not saved.
    #[serde(skip)]
    fresh: BTreeMap<i64, Vec<u64>>,
    #[serde(skip)]
    fresh_len: usize,
}

/// Keys added to the dedupe memory, per bucket start: one checkpoint's
/// delta on the changelog.
pub type DedupeDelta = Vec<(i64, Vec<u64>)>;

impl Dedupe {
    pub fn new(window: Duration) -> Self {
        Dedupe {
            window_ms: i64::try_from(window.as_millis()).unwrap_or(i64::MAX),
            ..Dedupe::default()
        }
    }

    /// Every key of an older format, kept as of `applied_to` (so they go one
    /// window after it).
    pub fn from_flat(window: Duration, keys: HashSet<u64>, applied_to: EventTime) -> Self {
        let mut d = Dedupe::new(window);
        d.len = keys.len();
        if !keys.is_empty() {
            d.buckets.insert(d.bucket_of(applied_to), keys);
        }
        d
    }

    /// The same keys under the configured `window` (it wins over the one a
    /// snapshot was written with). Unchanged when the window is the same;
    /// otherwise every key is kept as of `applied_to`, as for an older format
    /// (kept longer than needed, never shorter).
    pub fn rewindowed(self, window: Duration, applied_to: EventTime) -> Self {
        if i64::try_from(window.as_millis()).unwrap_or(i64::MAX) == self.window_ms {
            return self;
        }
        let keys: HashSet<u64> = self.buckets.into_values().flatten().collect();
        Dedupe::from_flat(window, keys, applied_to)
    }

    fn width(&self) -> i64 {
        if self.window_ms <= 0 {
            i64::MAX
        } else {
            (self.window_ms / BUCKETS).max(1)
        }
    }

    fn bucket_of(&self, at: EventTime) -> i64 {
        let w = self.width();
        if w == i64::MAX {
            0
        } else {
            at.0.div_euclid(w) * w
        }
    }

    /// The oldest event time still told apart from a duplicate.
    fn horizon(&self, applied_to: EventTime) -> Option<i64> {
        (self.window_ms > 0 && applied_to != EventTime::MIN).then(|| applied_to.0.saturating_sub(self.window_ms))
    }

    /// True when an event at `at` is older than the window behind
    /// `applied_to`: its key may be gone, so it must not be applied.
    pub fn too_late(&self, at: EventTime, applied_to: EventTime) -> bool {
        self.horizon(applied_to).is_some_and(|h| at.0 < h)
    }

    pub fn contains(&self, key: u64) -> bool {
        self.buckets.values().any(|b| b.contains(&key))
    }

    /// Forgets `key` inserted at `at` (scale-out: the event's effect left
    /// this process with its state partition).
    pub fn remove(&mut self, key: u64, at: EventTime) {
        let bucket = self.bucket_of(at);
        if self.buckets.get_mut(&bucket).is_some_and(|b| b.remove(&key)) {
            self.len -= 1;
        }
    }

    pub fn insert(&mut self, key: u64, at: EventTime) {
        let bucket = self.bucket_of(at);
        if self.buckets.entry(bucket).or_default().insert(key) {
            self.len += 1;
            self.fresh.entry(bucket).or_default().push(key);
            self.fresh_len += 1;
        }
    }

    /// The keys inserted since the last call, per bucket (the buckets gone
    /// out of the window left out); forgets them.
    pub fn take_fresh(&mut self) -> DedupeDelta {
        self.fresh_len = 0;
        let fresh = std::mem::take(&mut self.fresh);
        fresh
            .into_iter()
            .filter(|(b, _)| self.buckets.contains_key(b))
            .collect()
    }

    /// Every key, as if all were inserted since the last
    /// [`Dedupe::take_fresh`]: for a changelog that does not hold them yet.
    pub fn mark_all_fresh(&mut self) {
        self.fresh = self
            .buckets
            .iter()
            .map(|(b, keys)| (*b, keys.iter().copied().collect()))
            .collect();
        self.fresh_len = self.len;
    }

    /// The same window and no key: what the changelog's globals carry (the
    /// keys go as deltas).
    pub fn without_keys(&self) -> Dedupe {
        Dedupe::new(Duration::from_millis(u64::try_from(self.window_ms).unwrap_or(0)))
    }

    /// The start of the oldest bucket kept: the buckets before it are gone.
    pub fn oldest_bucket(&self) -> Option<i64> {
        self.buckets.keys().next().copied()
    }

    /// Every key, per bucket: a delta that rebuilds this memory.
    pub fn into_delta(self) -> DedupeDelta {
        self.buckets
            .into_iter()
            .map(|(b, keys)| (b, keys.into_iter().collect()))
            .collect()
    }

    /// Adds the keys of changelog deltas (in any order; a key twice counts once).
    pub fn add_delta(&mut self, delta: impl IntoIterator<Item = (i64, Vec<u64>)>) {
        for (bucket, keys) in delta {
            let set = self.buckets.entry(bucket).or_default();
            for k in keys {
                if set.insert(k) {
                    self.len += 1;
                }
            }
        }
    }

    /// Drops the buckets wholly older than the window behind `applied_to`;
    /// returns how many keys went.
    pub fn expire(&mut self, applied_to: EventTime) -> usize {
        let Some(horizon) = self.horizon(applied_to) else {
            return 0;
        };
        let w = self.width();
        let mut dropped = 0;
        while let Some(entry) = self.buckets.first_entry() {
            if entry.key().saturating_add(w) > horizon {
                break;
            }
            dropped += entry.remove().len();
        }
        self.len -= dropped;
        while let Some(entry) = self.fresh.first_entry() {
            if entry.key().saturating_add(w) > horizon {
                break;
            }
            self.fresh_len -= entry.remove().len();
        }
        dropped
    }

    /// Remembered keys.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The estimate of the bytes the keys hold.
    pub fn approx_bytes(&self) -> usize {
        self.len * KEY_BYTES + self.buckets.len() * 64 + self.fresh_len * 8 + self.fresh.len() * 48
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const DAY: i64 = 86_400_000;

    fn days(n: u64) -> Duration {
        Duration::from_secs(n * 86_400)
    }

    #[test]
    fn deltas_carry_what_was_inserted_since_the_last_take_and_add_up_to_the_memory() {
        let mut d = Dedupe::new(days(8));
        let mut restored = d.without_keys();
        d.insert(1, EventTime(10 * DAY));
        d.insert(2, EventTime(11 * DAY));
        d.insert(1, EventTime(10 * DAY));
        let first = d.take_fresh();
        assert_eq!(first.iter().map(|(_, k)| k.len()).sum::<usize>(), 2, "{first:?}");
        assert!(d.take_fresh().is_empty(), "taken");
        d.insert(3, EventTime(19 * DAY));
        // Day 10's bucket leaves the window: its fresh keys go with it.
        d.insert(4, EventTime(10 * DAY + 1));
        d.expire(EventTime(20 * DAY));
        let second = d.take_fresh();
        assert_eq!(second.iter().map(|(_, k)| k.len()).sum::<usize>(), 1, "{second:?}");
        restored.add_delta(first);
        restored.add_delta(second);
        restored.expire(EventTime(20 * DAY));
        assert_eq!(restored.buckets, d.buckets);
        assert_eq!(restored.len(), d.len());
        d.mark_all_fresh();
        let all = d.take_fresh();
        assert_eq!(all.iter().map(|(_, k)| k.len()).sum::<usize>(), d.len());
    }

    #[test]
    fn a_key_is_remembered_within_the_window_and_forgotten_after() {
        let mut d = Dedupe::new(days(8));
        d.insert(7, EventTime(10 * DAY));
        assert!(d.contains(7));
        assert_eq!(d.expire(EventTime(17 * DAY)), 0);
        assert!(d.contains(7));
        assert!(!d.too_late(EventTime(10 * DAY), EventTime(17 * DAY)));
        // Two days past the window: the bucket (one day wide) is gone, and
        // the event would be refused as too late.
        assert_eq!(d.expire(EventTime(20 * DAY)), 1);
        assert!(!d.contains(7));
        assert!(d.too_late(EventTime(10 * DAY), EventTime(20 * DAY)));
        assert_eq!(d.len(), 0);
    }

    #[test]
    fn a_zero_window_keeps_everything_and_refuses_nothing() {
        let mut d = Dedupe::new(Duration::ZERO);
        d.insert(1, EventTime(0));
        d.insert(2, EventTime(1_000 * DAY));
        assert_eq!(d.expire(EventTime(100_000 * DAY)), 0);
        assert!(d.contains(1) && d.contains(2));
        assert!(!d.too_late(EventTime(0), EventTime(100_000 * DAY)));
        assert_eq!(d.len(), 2);
    }

    #[test]
    fn keys_of_an_older_format_go_one_window_after_the_time_they_were_loaded_at() {
        let keys: HashSet<u64> = [1, 2, 3].into_iter().collect();
        let mut d = Dedupe::from_flat(days(8), keys, EventTime(100 * DAY));
        assert_eq!(d.len(), 3);
        assert_eq!(d.expire(EventTime(107 * DAY)), 0);
        assert!(d.contains(2));
        assert_eq!(d.expire(EventTime(110 * DAY)), 3);
    }

    #[test]
    fn a_new_window_keeps_every_key_for_a_window_from_now() {
        let mut d = Dedupe::new(days(8));
        for k in 0..50u64 {
            d.insert(k, EventTime(i64::try_from(k).unwrap() * DAY / 3));
        }
        let same = d.clone().rewindowed(days(8), EventTime(20 * DAY));
        assert_eq!(same, d);
        let mut d = d.rewindowed(days(2), EventTime(20 * DAY));
        assert_eq!(d.len(), 50);
        assert!((0..50).all(|k| d.contains(k)));
        assert_eq!(d.expire(EventTime(21 * DAY)), 0);
        assert_eq!(d.expire(EventTime(23 * DAY)), 50);
    }

    proptest! {
        /// Whatever the order and lateness of events, an event accepted once
        /// (not too late) is recognised when it comes again while it is not
        /// too late; and the count matches the keys kept.
        #[test]
        fn an_accepted_event_is_a_duplicate_until_it_is_too_late(
            times in proptest::collection::vec(0i64..60 * DAY, 1..200),
            window_days in 1u64..20,
            repeats in proptest::collection::vec((0usize..200, 0i64..30 * DAY), 0..100),
        ) {
            let mut d = Dedupe::new(days(window_days));
            let mut applied_to = EventTime::MIN;
            let mut accepted: Vec<(u64, EventTime)> = Vec::new();
            for (i, t) in times.iter().enumerate() {
                let at = EventTime(*t);
                if !d.too_late(at, applied_to) {
                    let key = i as u64;
                    d.insert(key, at);
                    accepted.push((key, at));
                }
                applied_to = applied_to.max(at);
                d.expire(applied_to);
            }
            for (pick, ahead) in repeats {
                let Some((key, at)) = accepted.get(pick % accepted.len().max(1)).copied() else { continue };
                let now = EventTime(applied_to.0 + ahead);
                d.expire(now);
                prop_assert!(d.too_late(at, now) || d.contains(key), "accepted key {key} at {at:?} lost at {now:?}");
                applied_to = now;
            }
            let counted: usize = d.buckets.values().map(HashSet::len).sum();
            prop_assert_eq!(counted, d.len());
        }
    }
}
