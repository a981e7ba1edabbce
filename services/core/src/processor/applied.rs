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
//! A journey's list is cut to the window when an event is applied to it,
//! and dropped whole once its newest key falls out of the window
//! ([`AppliedKeys::expired`], in slices as the applied-to time moves): a
//! journey no event touches again keeps its keys for one window, no longer.
//! (Before session 31 such a list stayed until the journey was handed
//! over, forgotten or its partition given up.) For that, an expiry wheel
//! files each One ID under the bucket of event time its newest key is in,
//! whenever that newest key moves to a later bucket. All of it is counted,
//! so `state.max_memory_bytes` sees it.

use std::collections::BTreeMap;

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
    /// `None`: no window, the lists are only cut when written.
    expiry: Option<Expiry>,
}

/// Per bucket of `bucket_ms` of event time, the One IDs whose newest key
/// was in it when it became their newest. Every list has an entry at or
/// after its newest key's bucket; entries of lists gone or grown since are
/// skipped when their bucket expires.
struct Expiry {
    bucket_ms: i64,
    wheel: BTreeMap<i64, Vec<OneId>>,
    /// The entries in all the buckets.
    entries: usize,
}

/// The largest time among `keys`.
fn newest(keys: &[AppliedKey]) -> Option<i64> {
    keys.iter().map(|(t, _)| *t).max()
}

impl AppliedKeys {
    /// Lists that expire once their newest key is older than the window
    /// (buckets of `bucket_ms`: a list goes at most that long after).
    pub(super) fn expiring(bucket_ms: i64) -> Self {
        AppliedKeys {
            expiry: Some(Expiry {
                bucket_ms: bucket_ms.max(1),
                wheel: BTreeMap::new(),
                entries: 0,
            }),
            ..AppliedKeys::default()
        }
    }

    /// `key` was applied to `one_id`; its older keys than `oldest` go.
    pub(super) fn note(&mut self, one_id: &OneId, key: AppliedKey, oldest: i64) {
        self.change(one_id, |keys| {
            keys.retain(|(t, _)| *t >= oldest);
            keys.push(key);
        });
    }

    /// Adds `more` to `one_id`'s keys.
    pub(super) fn extend(&mut self, one_id: &OneId, more: impl IntoIterator<Item = AppliedKey>) {
        self.change(one_id, |keys| keys.extend(more));
    }

    /// Changes `one_id`'s list (made if missing) with `f`, keeping the
    /// count and the expiry wheel in step.
    fn change(&mut self, one_id: &OneId, f: impl FnOnce(&mut Vec<AppliedKey>)) {
        let keys = self.by_journey.entry(one_id.clone()).or_default();
        let (before, was) = (keys.len(), newest(keys));
        f(keys);
        let now = newest(keys);
        self.keys = self.keys - before + keys.len();
        self.track(one_id, was, now);
    }

    /// Files `one_id` under its newest key's bucket when that moved past
    /// the bucket of its newest key before (`was`; `None`: a new list).
    fn track(&mut self, one_id: &OneId, was: Option<i64>, now: Option<i64>) {
        let (Some(e), Some(now)) = (self.expiry.as_mut(), now) else {
            return;
        };
        let bucket = now.div_euclid(e.bucket_ms);
        if was.is_some_and(|w| w.div_euclid(e.bucket_ms) >= bucket) {
            return;
        }
        e.wheel.entry(bucket).or_default().push(one_id.clone());
        e.entries += 1;
    }

    /// Looks at up to `most` entries of the buckets wholly before `oldest`
    /// and returns the One IDs among them whose every key is older than
    /// `oldest`: their lists hold nothing the window still covers (the
    /// caller removes them). A One ID may come twice.
    pub(super) fn expired(&mut self, oldest: i64, most: usize) -> Vec<OneId> {
        let Some(e) = self.expiry.as_mut() else {
            return Vec::new();
        };
        if oldest == i64::MIN {
            return Vec::new();
        }
        let before = oldest.div_euclid(e.bucket_ms);
        let mut out = Vec::new();
        let mut looked = 0;
        while looked < most {
            let Some(mut first) = e.wheel.first_entry().filter(|b| *b.key() < before) else {
                break;
            };
            let ids = first.get_mut();
            while looked < most {
                let Some(one_id) = ids.pop() else { break };
                looked += 1;
                let list = self.by_journey.get(&one_id);
                if list.and_then(|k| newest(k)).is_some_and(|t| t < oldest) {
                    out.push(one_id);
                }
            }
            if ids.is_empty() {
                first.remove();
            }
        }
        e.entries -= looked;
        out
    }

    /// `one_id`'s keys, taken.
    pub(super) fn remove(&mut self, one_id: &str) -> Option<Vec<AppliedKey>> {
        let keys = self.by_journey.remove(one_id)?;
        self.keys -= keys.len();
        Some(keys)
    }

    /// `from`'s keys join `to`'s (a merge on this process).
    pub(super) fn move_to(&mut self, from: &str, to: &OneId) {
        if let Some(keys) = self.by_journey.remove(from) {
            self.keys -= keys.len();
            self.extend(to, keys);
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
    /// per One ID and every key (at its size, not the lists' spare room),
    /// and the expiry wheel's entries and buckets.
    pub(super) fn approx_bytes(&self) -> usize {
        const SLOT: usize = 1 + std::mem::size_of::<(OneId, Vec<AppliedKey>)>();
        const BUCKET: usize = std::mem::size_of::<(i64, Vec<OneId>)>() + ALLOC_OVERHEAD;
        let wheel = self
            .expiry
            .as_ref()
            .map_or(0, |e| e.entries * std::mem::size_of::<OneId>() + e.wheel.len() * BUCKET);
        self.by_journey.capacity() * SLOT
            + self.by_journey.len() * ALLOC_OVERHEAD
            + self.keys * std::mem::size_of::<AppliedKey>()
            + wheel
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

    fn sorted(mut v: Vec<OneId>) -> Vec<OneId> {
        v.sort();
        v.dedup();
        v
    }

    #[test]
    fn a_list_expires_once_its_newest_key_is_behind_the_window() {
        // Buckets of 10 ms of event time.
        let mut a = AppliedKeys::expiring(10);
        let (x, y, z, w) = (id("x"), id("y"), id("z"), id("w"));
        a.note(&x, (5, 1), i64::MIN);
        a.note(&y, (15, 2), i64::MIN);
        a.extend(&z, [(3, 3), (27, 4)]);
        a.note(&w, (5, 5), i64::MIN);
        a.note(&w, (25, 6), i64::MIN);
        assert_eq!(a.expired(i64::MIN, usize::MAX), Vec::<OneId>::new(), "no window yet");
        // Up to 20: buckets 0 and 1 are behind; z's and w's newest are not.
        assert_eq!(sorted(a.expired(20, usize::MAX)), vec![x.clone(), y.clone()]);
        for gone in [&x, &y] {
            a.remove(gone);
        }
        assert_eq!((a.keys(), counted(&a)), (4, 4));
        // w grew into bucket 2 after it was filed under bucket 0: still here.
        assert_eq!(sorted(a.expired(30, usize::MAX)), vec![w.clone(), z.clone()]);
        assert_eq!(
            a.expired(i64::MAX, usize::MAX),
            Vec::<OneId>::new(),
            "every entry looked at once"
        );
    }

    #[test]
    fn expiry_goes_a_slice_at_a_time_and_follows_merged_keys() {
        let mut a = AppliedKeys::expiring(10);
        for i in 0..5 {
            a.note(&id(&format!("j{i}")), (i, i as u64), i64::MIN);
        }
        assert_eq!(a.expired(10, 2).len(), 2);
        assert_eq!(a.expired(10, 2).len(), 2);
        assert_eq!(a.expired(10, 2).len(), 1);
        assert_eq!(a.expired(10, 2).len(), 0);
        // A merge brings newer keys: the survivor lives as long as they do.
        let (old, new) = (id("old"), id("new"));
        a.note(&old, (12, 9), i64::MIN);
        a.note(&new, (45, 10), i64::MIN);
        a.move_to("new", &old);
        assert_eq!(
            a.expired(40, usize::MAX),
            Vec::<OneId>::new(),
            "old's newest key is 45 now"
        );
        assert_eq!(a.expired(50, usize::MAX), vec![old.clone()]);
        assert_eq!(
            (a.keys(), counted(&a)),
            (7, 7),
            "expired only lists, the caller removes"
        );
    }

    #[test]
    fn without_a_window_nothing_is_filed() {
        let mut a = AppliedKeys::default();
        a.note(&id("x"), (5, 1), i64::MIN);
        assert_eq!(a.expired(i64::MAX, usize::MAX), Vec::<OneId>::new());
        let mut b = AppliedKeys::expiring(10);
        b.note(&id("x"), (5, 1), i64::MIN);
        assert_eq!(
            b.approx_bytes() - a.approx_bytes(),
            std::mem::size_of::<OneId>() + std::mem::size_of::<(i64, Vec<OneId>)>() + ALLOC_OVERHEAD,
            "with a window, the wheel's entry and bucket are counted"
        );
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
