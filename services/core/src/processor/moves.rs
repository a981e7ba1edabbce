//! Scale-out: where the journeys a fold moved went, for as long as an event
//! resolved before the move can still be applied.
//!
//! In: each journey a fold moved (a merge or a rebuild), with the
//! time it is kept by; the oldest event time the dedupe window still covers.
//! Out: where a moved journey went (`None`: dropped), for
//! [`super::Processor::current`]; the bytes held, for the state's estimate.
//! Keeps one entry a move, and the moves in a heap by the time each is
//! kept by.
//!
//! A move is kept by the later of the event time of the event whose fold
//! made it and the applied-to time then. An event resolved before the move
//! follows it only while it is not too late: once the window's oldest time
//! passes the move's, such an event would have to be later than everything
//! applied when the move was made and still wait after a whole window of
//! event time went by. Past that, `current` falls back to the profile its
//! anchor is in now, which is where a merge took it. (Before session 31
//! every move was kept for good: one entry a merge, growing without a
//! bound; `docs/scaling.md`, "Not done yet", item 6.)

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::hash::HashMap;
use crate::identity::OneId;

/// How many moves one call of [`Moves::expire`] drops at most, so that a
/// window's worth falling out at once is spread over the next releases.
pub(super) const EXPIRE_SLICE: usize = 1_024;

#[derive(Default)]
pub(super) struct Moves {
    /// Per moved-away One ID: where its journey went, and the time the
    /// move is kept by.
    to: HashMap<OneId, (Option<OneId>, i64)>,
    /// The moves, the one kept by the earliest time first (a heap: those
    /// times come from event times, in no order): a later move of the same
    /// One ID leaves its earlier entry here, which expiry skips.
    order: BinaryHeap<Reverse<(i64, OneId)>>,
}

impl Moves {
    /// `from`'s journey went to `to` (`None`: dropped); kept by `kept_by`
    /// (event time, ms).
    pub(super) fn insert(&mut self, from: OneId, to: Option<OneId>, kept_by: i64) {
        self.order.push(Reverse((kept_by, from.clone())));
        self.to.insert(from, (to, kept_by));
    }

    /// Where `from`'s journey went, if a kept move says.
    pub(super) fn get(&self, from: &str) -> Option<&Option<OneId>> {
        self.to.get(from).map(|(to, _)| to)
    }

    /// Drops up to `most` moves kept by a time before `oldest`; returns how
    /// many entries it looked at (dropped or stale).
    pub(super) fn expire(&mut self, oldest: i64, most: usize) -> usize {
        if oldest == i64::MIN {
            return 0;
        }
        let mut looked = 0;
        while looked < most && self.order.peek().is_some_and(|Reverse((t, _))| *t < oldest) {
            let Some(Reverse((t, from))) = self.order.pop() else {
                break;
            };
            looked += 1;
            // A later move of the same One ID keeps its own time.
            if self.to.get(&from).is_some_and(|(_, kept_by)| *kept_by == t) {
                self.to.remove(&from);
            }
        }
        // Give back room once most of it is unused (a rehash of what is
        // left: rare, and paid by the entries that went).
        if self.to.len() * 4 < self.to.capacity() {
            self.to.shrink_to(self.to.len() * 2);
        }
        if self.order.len() * 4 < self.order.capacity() {
            self.order.shrink_to(self.order.len() * 2);
        }
        looked
    }

    /// How many moves are kept.
    pub(super) fn len(&self) -> usize {
        self.to.len()
    }

    /// An estimate of the bytes held: the map's slots and the order's.
    pub(super) fn approx_bytes(&self) -> usize {
        const SLOT: usize = 1 + std::mem::size_of::<(OneId, (Option<OneId>, i64))>();
        self.to.capacity() * SLOT + self.order.capacity() * std::mem::size_of::<Reverse<(i64, OneId)>>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> OneId {
        OneId::from(s)
    }

    #[test]
    fn a_move_is_kept_until_the_window_passes_its_time() {
        let mut m = Moves::default();
        m.insert(id("a"), Some(id("b")), 100);
        m.insert(id("c"), None, 200);
        assert_eq!(m.expire(i64::MIN, usize::MAX), 0, "no window: nothing expires");
        assert_eq!(m.expire(100, usize::MAX), 0, "kept by 100: still inside at 100");
        assert_eq!(m.get("a"), Some(&Some(id("b"))));
        assert_eq!(m.expire(101, usize::MAX), 1);
        assert_eq!((m.get("a"), m.get("c"), m.len()), (None, Some(&None), 1));
        assert_eq!(m.expire(1_000, usize::MAX), 1);
        assert_eq!(m.len(), 0);
    }

    #[test]
    fn a_later_move_of_the_same_one_id_outlives_its_first() {
        let mut m = Moves::default();
        m.insert(id("a"), Some(id("b")), 100);
        m.insert(id("a"), Some(id("c")), 300);
        m.expire(200, usize::MAX);
        assert_eq!(
            m.get("a"),
            Some(&Some(id("c"))),
            "the first entry's expiry leaves the second"
        );
        m.expire(301, usize::MAX);
        assert_eq!(m.get("a"), None);
    }

    #[test]
    fn expiry_goes_in_slices_and_in_time_order_whatever_the_insert_order() {
        let mut m = Moves::default();
        for (i, t) in [50, 10, 40, 20, 30].into_iter().enumerate() {
            m.insert(id(&format!("m{i}")), None, t);
        }
        assert_eq!(m.expire(35, 2), 2, "a slice of two");
        assert_eq!((m.get("m1"), m.get("m3"), m.len()), (None, None, 3));
        assert_eq!(m.expire(35, 2), 1, "the one left before 35");
        assert_eq!(m.get("m4"), None);
        assert!(m.get("m0").is_some() && m.get("m2").is_some());
    }

    #[test]
    fn the_estimate_falls_when_moves_expire() {
        let mut m = Moves::default();
        for i in 0..1_000 {
            m.insert(id(&format!("m{i}")), None, i);
        }
        let full = m.approx_bytes();
        while m.expire(i64::MAX, EXPIRE_SLICE) > 0 {}
        assert!(m.approx_bytes() < full, "{} < {full}", m.approx_bytes());
        assert_eq!(m.len(), 0);
    }
}
