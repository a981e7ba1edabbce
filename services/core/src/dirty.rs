//! The One IDs whose changelog record changed since the last checkpoint,
//! split into shards so that a checkpoint's capture can take them a slice
//! at a time in linear time.
//!
//! In: a One ID whose record changed ([`DirtySet::insert`]); at a
//! checkpoint, requests to take one named id ([`DirtySet::take`], a first
//! write after the barrier) or the next `n` ids, any ones
//! ([`DirtySet::take_some`], the capture's slices). Out: the ids taken.
//! Keeps the ids, in [`SHARDS`] hash sets chosen by a hash of the id, and
//! the shard the slices have reached.
//!
//! Why shards: the capture used to empty one hash set with
//! `extract_if(..).take(n)`, and each such slice scans the table from its
//! start, past the buckets the slices before it emptied: quadratic. At 10M
//! changed journeys in one interval that was 4.8 s of the writer's CPU per
//! checkpoint (`docs/benchmarks.md`, session 31). Here a slice scans one
//! shard only, and the shards before the cursor are empty and are not
//! visited again, so emptying the set costs about 1/[`SHARDS`] of that.
//! (A cursor into one table would need a raw iterator, which `std`'s hash
//! set does not offer; an `IndexSet` fills three times slower, on the
//! writer's path.)

use std::hash::BuildHasher as _;

use crate::hash::{BuildHasher, HashSet};
use crate::one_id::OneId;

/// How many shards: a slice scans at most one shard's table, so the cost
/// of emptying n ids is about n² / (1,024 x SHARDS) bucket groups (SIMD
/// groups of 16); at 10M ids, 256 shards of about 40,000 ids.
pub const SHARDS: usize = 256;

/// The changed One IDs (see the module's text).
pub struct DirtySet {
    shards: Vec<HashSet<OneId>>,
    /// Picks the shard: a hasher of its own, seeded apart from the shards'
    /// tables, so the ids of one shard do not share their buckets' bits.
    pick: BuildHasher,
    len: usize,
    /// The shards before it are empty ([`DirtySet::take_some`]'s cursor;
    /// an insert behind it moves it back).
    cursor: usize,
}

impl Default for DirtySet {
    fn default() -> Self {
        DirtySet {
            shards: (0..SHARDS).map(|_| HashSet::default()).collect(),
            pick: BuildHasher::default(),
            len: 0,
            cursor: 0,
        }
    }
}

impl DirtySet {
    fn shard(&self, one_id: &str) -> usize {
        // The top byte of a 64-bit hash: 256 shards.
        usize::try_from(self.pick.hash_one(one_id) >> 56).unwrap_or(0) % SHARDS
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn contains(&self, one_id: &str) -> bool {
        self.shards[self.shard(one_id)].contains(one_id)
    }

    /// Adds `one_id` (a clone of the handle); false when it was there.
    pub fn insert(&mut self, one_id: &OneId) -> bool {
        let s = self.shard(one_id);
        if self.shards[s].contains(one_id.as_ref()) {
            return false;
        }
        self.shards[s].insert(one_id.clone());
        self.len += 1;
        self.cursor = self.cursor.min(s);
        true
    }

    /// Removes `one_id` and gives back the handle the set held.
    pub fn take(&mut self, one_id: &str) -> Option<OneId> {
        let s = self.shard(one_id);
        let id = self.shards[s].take(one_id)?;
        self.len -= 1;
        Some(id)
    }

    /// Removes and gives back up to `n` ids, in no order.
    pub fn take_some(&mut self, n: usize) -> Vec<OneId> {
        let mut out = Vec::with_capacity(n.min(self.len));
        while out.len() < n && self.cursor < SHARDS {
            let shard = &mut self.shards[self.cursor];
            out.extend(shard.extract_if(|_| true).take(n - out.len()));
            if shard.is_empty() {
                // Its table is kept (freed with the set, as one set's was):
                // freeing it here cost a slice 6-13 ms at 10M ids under
                // glibc's allocator, which returned the heap's top at once.
                self.cursor += 1;
            }
        }
        self.len -= out.len();
        out
    }

    /// Every id, in no order; the set empties.
    pub fn drain(&mut self) -> Vec<OneId> {
        let mut out = Vec::with_capacity(self.len);
        for shard in &mut self.shards {
            out.extend(shard.drain());
        }
        self.len = 0;
        self.cursor = 0;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(i: usize) -> OneId {
        OneId::from(format!("oj-{i:08}").as_str())
    }

    #[test]
    fn an_id_is_kept_once_and_taken_once() {
        let mut d = DirtySet::default();
        assert!(d.insert(&id(1)));
        assert!(!d.insert(&id(1)), "already there");
        assert!(d.insert(&id(2)));
        assert_eq!(d.len(), 2);
        assert!(d.contains("oj-00000001"));
        assert_eq!(d.take("oj-00000001"), Some(id(1)));
        assert_eq!(d.take("oj-00000001"), None);
        assert!(!d.contains("oj-00000001"));
        assert_eq!((d.len(), d.is_empty()), (1, false));
        assert_eq!(d.drain(), vec![id(2)]);
        assert!(d.is_empty());
    }

    #[test]
    fn the_ids_spread_over_the_shards() {
        let d = DirtySet::default();
        let mut counts = vec![0usize; SHARDS];
        for i in 0..SHARDS * 100 {
            counts[d.shard(&id(i))] += 1;
        }
        // 100 expected per shard; a shard picked by a constant or a few
        // bits would leave most shards empty.
        assert!(counts.iter().all(|c| (40..200).contains(c)), "{counts:?}");
    }

    #[test]
    fn slices_take_every_id_once_after_inserts_behind_the_cursor() {
        let mut d = DirtySet::default();
        for i in 0..5_000 {
            d.insert(&id(i));
        }
        let mut taken = d.take_some(1_000);
        assert_eq!((taken.len(), d.len()), (1_000, 4_000));
        assert!(d.cursor > 0, "the first shards are emptied");
        // Ids changed again after the slices began land in any shard,
        // the emptied ones too.
        let again: Vec<usize> = (0..100).filter(|&i| d.insert(&id(i))).collect();
        assert!(!again.is_empty(), "some of them were taken already");
        loop {
            let slice = d.take_some(777);
            if slice.is_empty() {
                break;
            }
            assert!(slice.len() <= 777);
            taken.extend(slice);
        }
        assert!(d.is_empty());
        let mut expected: Vec<OneId> = (0..5_000).map(id).collect();
        expected.extend(again.into_iter().map(id));
        expected.sort_unstable();
        taken.sort_unstable();
        assert_eq!(taken, expected);
    }

    /// Measures (no assertion on time): emptying n ids 1,024 at a time,
    /// from one hash set with `extract_if` (the capture before session 32)
    /// and from a [`DirtySet`]. Run in release:
    /// `cargo test -p onejourney-core --release --lib -- --ignored emptying_in_slices --nocapture`
    /// (`ONEJOURNEY_DIRTY_N` sets n, default 1M).
    #[test]
    #[ignore = "a measurement, run by hand"]
    fn emptying_in_slices_measured() {
        use std::time::Instant;
        let n = std::env::var("ONEJOURNEY_DIRTY_N")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000_000usize);
        let ids: Vec<OneId> = (0..n).map(id).collect();
        let t = Instant::now();
        let mut one: HashSet<OneId> = HashSet::default();
        for i in &ids {
            one.insert(i.clone());
        }
        let fill_one = t.elapsed();
        let t = Instant::now();
        let (mut taken, mut slowest) = (0, std::time::Duration::ZERO);
        while !one.is_empty() {
            let s = Instant::now();
            taken += one.extract_if(|_| true).take(1_024).count();
            slowest = slowest.max(s.elapsed());
        }
        let empty_one = (t.elapsed(), slowest);
        let t = Instant::now();
        let mut d = DirtySet::default();
        for i in &ids {
            d.insert(i);
        }
        let fill_sharded = t.elapsed();
        let t = Instant::now();
        let mut slowest = std::time::Duration::ZERO;
        while !d.is_empty() {
            let s = Instant::now();
            taken += d.take_some(1_024).len();
            slowest = slowest.max(s.elapsed());
        }
        let empty_sharded = (t.elapsed(), slowest);
        assert_eq!(taken, 2 * n);
        eprintln!(
            "n {n}: one set fill {fill_one:?}, empty {:?} (slowest slice {:?}); sharded fill {fill_sharded:?}, empty {:?} (slowest slice {:?})",
            empty_one.0, empty_one.1, empty_sharded.0, empty_sharded.1
        );
    }

    proptest! {
        /// Against a plain set: any mix of inserts, takes by id and slices
        /// keeps the same ids, and the slices and takes give back each
        /// inserted id exactly once.
        #[test]
        fn it_behaves_as_one_set(ops in proptest::collection::vec((0u8..3, 0usize..300, 1usize..50), 1..400)) {
            let mut d = DirtySet::default();
            let mut model = std::collections::BTreeSet::new();
            for (op, i, n) in ops {
                match op {
                    0 => prop_assert_eq!(d.insert(&id(i)), model.insert(id(i))),
                    1 => prop_assert_eq!(d.take(&id(i)), model.take(&id(i))),
                    _ => {
                        let slice = d.take_some(n);
                        prop_assert_eq!(slice.len(), n.min(model.len()));
                        for s in slice {
                            prop_assert!(model.remove(&s), "{} taken twice or never inserted", s);
                        }
                    }
                }
                prop_assert_eq!(d.len(), model.len());
            }
            let mut rest = d.drain();
            rest.sort_unstable();
            prop_assert_eq!(rest, model.into_iter().collect::<Vec<_>>());
        }
    }
}
