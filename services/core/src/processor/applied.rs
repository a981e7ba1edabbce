//! Scale-out: the keys of the events applied to each journey, counted.
//!
//! In: an applied event's key with the oldest event time the dedupe window
//! still covers, keys that arrive with a handover or a partition's records,
//! merges (a journey's keys go to its survivor), forgets and partitions
//! given up. Out: per One ID, its keys (what its changelog record carries,
//! cut to the window by `moving.rs`); how many keys are held in all, for
//! the state's size estimate. Keeps per One ID a list of (event time ms,
//! key), and the number of keys in all the lists, kept as they change so
//! the estimate never walks them.
//!
//! A journey's list is cut to the window when an event is applied to it.
//! The list of a journey no event touches again keeps its keys until the
//! journey is handed over, forgotten or its partition given up: bounded by
//! the events applied, not by the window. They are counted, so
//! `state.max_memory_bytes` sees them.

use crate::hash::HashMap;
use crate::identity::OneId;
use crate::journey::ALLOC_OVERHEAD;

use super::moving::AppliedKey;

/// Per One ID, the keys of the events applied to its journey.
#[derive(Default)]
pub(super) struct AppliedKeys {
    by_journey: HashMap<OneId, Vec<AppliedKey>>,
    /// The keys in all the lists.
    keys: usize,
}

impl AppliedKeys {
    /// `key` was applied to `one_id`; its older keys than `oldest` go.
    pub(super) fn note(&mut self, one_id: &OneId, key: AppliedKey, oldest: i64) {
        let keys = self.by_journey.entry(one_id.clone()).or_default();
        let before = keys.len();
        keys.retain(|(t, _)| *t >= oldest);
        keys.push(key);
        self.keys = self.keys - before + keys.len();
    }

    /// Adds `more` to `one_id`'s keys.
    pub(super) fn extend(&mut self, one_id: &OneId, more: impl IntoIterator<Item = AppliedKey>) {
        let keys = self.by_journey.entry(one_id.clone()).or_default();
        let before = keys.len();
        keys.extend(more);
        self.keys += keys.len() - before;
    }

    /// `one_id`'s keys, taken.
    pub(super) fn remove(&mut self, one_id: &str) -> Option<Vec<AppliedKey>> {
        let keys = self.by_journey.remove(one_id)?;
        self.keys -= keys.len();
        Some(keys)
    }

    /// `from`'s keys join `to`'s (a merge on this process).
    pub(super) fn move_to(&mut self, from: &str, to: &OneId) {
        if let Some(mut keys) = self.by_journey.remove(from) {
            self.by_journey.entry(to.clone()).or_default().append(&mut keys);
        }
    }

    /// `one_id`'s keys, all of them.
    pub(super) fn get(&self, one_id: &str) -> Option<&[AppliedKey]> {
        self.by_journey.get(one_id).map(Vec::as_slice)
    }

    /// Keeps the lists of the One IDs `keep` accepts; returns the keys of
    /// the others.
    pub(super) fn retain(&mut self, keep: impl Fn(&str) -> bool) -> Vec<AppliedKey> {
        let mut gone = Vec::new();
        self.by_journey.retain(|one_id, keys| {
            let kept = keep(one_id);
            if !kept {
                gone.append(keys);
            }
            kept
        });
        self.keys -= gone.len();
        gone
    }

    /// How many keys all the lists hold.
    pub(super) fn keys(&self) -> usize {
        self.keys
    }

    /// An estimate of the bytes held: the map's slots, a list's allocation
    /// per One ID and every key (at its size, not the lists' spare room).
    pub(super) fn approx_bytes(&self) -> usize {
        const SLOT: usize = 1 + std::mem::size_of::<(OneId, Vec<AppliedKey>)>();
        self.by_journey.capacity() * SLOT
            + self.by_journey.len() * ALLOC_OVERHEAD
            + self.keys * std::mem::size_of::<AppliedKey>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> OneId {
        OneId::from(s)
    }

    /// The count against a walk of the lists.
    fn counted(a: &AppliedKeys) -> usize {
        a.by_journey.values().map(Vec::len).sum()
    }

    #[test]
    fn the_count_follows_every_change_of_the_lists() {
        let mut a = AppliedKeys::default();
        let (x, y) = (id("x"), id("y"));
        a.note(&x, (10, 1), i64::MIN);
        a.note(&x, (20, 2), i64::MIN);
        a.extend(&y, [(5, 3), (6, 4), (7, 5)]);
        assert_eq!((a.keys(), counted(&a)), (5, 5));
        // An event at 30 with a window back to 15: x's key at 10 goes.
        a.note(&x, (30, 6), 15);
        assert_eq!(a.get("x"), Some(&[(20, 2), (30, 6)][..]));
        assert_eq!((a.keys(), counted(&a)), (5, 5));
        a.move_to("y", &x);
        assert_eq!((a.keys(), counted(&a), a.get("y")), (5, 5, None));
        assert_eq!(a.remove("x").map(|k| k.len()), Some(5));
        assert_eq!((a.keys(), counted(&a)), (0, 0));
        a.extend(&x, [(1, 7)]);
        a.extend(&y, [(2, 8), (3, 9)]);
        assert_eq!(a.retain(|k| k == "x"), vec![(2, 8), (3, 9)]);
        assert_eq!((a.keys(), counted(&a)), (1, 1));
    }

    #[test]
    fn the_estimate_grows_with_the_keys_of_one_journey() {
        let mut a = AppliedKeys::default();
        let x = id("x");
        a.note(&x, (0, 0), i64::MIN);
        let one = a.approx_bytes();
        for k in 1..1_000 {
            a.note(&x, (k, k as u64), i64::MIN);
        }
        // One journey: the slots stay, the keys are counted.
        assert_eq!(a.approx_bytes() - one, 999 * std::mem::size_of::<AppliedKey>());
    }
}
