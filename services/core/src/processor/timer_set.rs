//! The armed timers, in firing order, each with its home: the One ID whose
//! changelog record carries it.
//!
//! In: timers armed (with the One ID of the journey that armed them), the
//! earliest one taken to fire, a forget's identifiers, a restore's records.
//! Out: the earliest timer; per home, the timers its journey record writes.
//! Keeps every armed timer twice: in firing order (with its home) and under
//! its home. The firing order holds a timer's due time and kind packed in
//! one `i64` ([`Queued`]): an entry of 24 bytes with its home, where the
//! tuple and its home take 32.
//!
//! Why a home: a timer is keyed by an identifier so that it follows its
//! profile through merges (see `timers.rs`), but a checkpoint writes only
//! what changed, with the journey records. The home is fixed when the timer
//! is armed and never moves: the home's record is rewritten whenever one of
//! its timers is armed or goes (the caller marks it dirty), so the latest
//! record of every home holds exactly its timers, and the union of them is
//! the live set: no identity reasoning, a merged-away or forgotten profile
//! included (its record then carries timers and no journey, until they go).

use std::collections::BTreeMap;

use crate::decide::triggers::Trigger;
use crate::hash::HashMap;
use crate::identity::OneId;
use crate::ids::IdKey;
use crate::journey::{List, ALLOC_OVERHEAD};
use crate::time::EventTime;

use super::TimerKind;

/// One armed timer: when, what, and the identifier it follows. The firing
/// order is this tuple's order.
pub type Timer = (EventTime, TimerKind, IdKey);

/// A timer as the firing order holds it: `due * 16 + kind` (the kind's
/// place in `TimerKind`'s order, [`kind_code`]) and its identifier. It
/// orders exactly as the [`Timer`] it packs.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Queued(i64, IdKey);

/// The due times a [`Queued`] holds: an `i64` divided by 16 (about 18
/// million years either side of 1970). A timer due outside them is armed
/// at the nearest ([`fit`]): it never fires either way.
const DUE_MIN: i64 = i64::MIN >> 4;
const DUE_MAX: i64 = i64::MAX >> 4;

/// A kind's place in `TimerKind`'s order (0-9, packed in four bits).
fn kind_code(kind: TimerKind) -> i64 {
    match kind {
        TimerKind::Cart => 0,
        TimerKind::Browse => 1,
        TimerKind::Quiet => 2,
        TimerKind::Deferred(t) => {
            3 + match t {
                Trigger::CartAbandoned => 0,
                Trigger::BrowseAbandoned => 1,
                Trigger::Purchased => 2,
                Trigger::ServiceIssue => 3,
                Trigger::ChannelSwitch => 4,
                Trigger::Lapsed => 5,
            }
        }
        TimerKind::ChurnLabel => 9,
    }
}

/// The kind of a code [`kind_code`] gave.
fn code_kind(code: i64) -> TimerKind {
    match code {
        0 => TimerKind::Cart,
        1 => TimerKind::Browse,
        2 => TimerKind::Quiet,
        9 => TimerKind::ChurnLabel,
        c => usize::try_from(c - 3)
            .ok()
            .and_then(|i| Trigger::ALL.get(i))
            .map_or(TimerKind::ChurnLabel, |t| TimerKind::Deferred(*t)),
    }
}

/// A due time inside what [`Queued`] holds (ms).
fn fit_due(due: EventTime) -> i64 {
    due.0.clamp(DUE_MIN, DUE_MAX)
}

/// `t` with its due time inside what [`Queued`] holds.
fn fit(t: Timer) -> Timer {
    (EventTime(fit_due(t.0)), t.1, t.2)
}

impl Queued {
    /// Packs a timer (its due time [`fit`] first, so that nothing
    /// overflows).
    fn of(t: &Timer) -> Queued {
        Queued(fit_due(t.0) * 16 + kind_code(t.1), t.2.clone())
    }

    fn due(&self) -> EventTime {
        EventTime(self.0 >> 4)
    }

    fn timer(&self) -> Timer {
        (self.due(), code_kind(self.0 & 15), self.1.clone())
    }
}

#[derive(Default)]
pub(super) struct TimerSet {
    /// Firing order; the value is the timer's home.
    queue: BTreeMap<Queued, OneId>,
    /// Per home, its timers (in no particular order), sized exactly (the
    /// journey's [`List`]): most homes hold one or two (a quiet check and a
    /// churn label), and a `Vec` that grew by pushing would hold four
    /// (session 19: 128 bytes where two timers take 64; a `List` is also 8
    /// bytes smaller than a `Vec` in the map's slot).
    homes: HashMap<OneId, List<Timer>>,
}

impl TimerSet {
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Every timer, in firing order.
    #[cfg(test)]
    pub fn iter(&self) -> impl Iterator<Item = Timer> + '_ {
        self.queue.keys().map(Queued::timer)
    }

    /// When the earliest timer is due.
    pub fn first_due(&self) -> Option<EventTime> {
        self.queue.first_key_value().map(|(q, _)| q.due())
    }

    /// Arms `t` with `home`; false, and nothing changes, when it is armed
    /// already (under whichever home).
    pub fn insert(&mut self, t: Timer, home: &OneId) -> bool {
        let t = fit(t);
        match self.queue.entry(Queued::of(&t)) {
            std::collections::btree_map::Entry::Occupied(_) => false,
            std::collections::btree_map::Entry::Vacant(v) => {
                self.homes.entry(home.clone()).or_default().push(t);
                v.insert(home.clone());
                true
            }
        }
    }

    /// The home of the earliest timer.
    pub fn first_home(&self) -> Option<OneId> {
        self.queue.first_key_value().map(|(_, home)| home.clone())
    }

    /// Takes the earliest timer, with its home.
    pub fn pop_first(&mut self) -> Option<(Timer, OneId)> {
        let (q, home) = self.queue.pop_first()?;
        let t = q.timer();
        self.unhome(&t, &home);
        Some((t, home))
    }

    fn unhome(&mut self, t: &Timer, home: &str) {
        if let Some(list) = self.homes.get_mut(home) {
            if let Some(i) = list.iter().position(|x| x == t) {
                list.swap_remove(i);
            }
            if list.is_empty() {
                self.homes.remove(home);
            }
        }
    }

    /// Every timer whose identifier `gone` matches, each with its home (a
    /// walk of every timer; nothing changes).
    pub fn matching(&self, gone: impl Fn(&IdKey) -> bool) -> Vec<(Timer, OneId)> {
        self.queue
            .iter()
            .filter(|(q, _)| gone(&q.1))
            .map(|(q, h)| (q.timer(), h.clone()))
            .collect()
    }

    /// Removes the `listed` timers (from [`TimerSet::matching`]).
    pub fn remove_listed(&mut self, listed: &[(Timer, OneId)]) {
        for (t, home) in listed {
            self.queue.remove(&Queued::of(t));
            self.unhome(t, home);
        }
    }

    /// The estimate of the bytes the set holds: per timer, its entry in the
    /// firing order (the packed timer and its home, 24 bytes, in B-tree
    /// nodes about two thirds full) and its copy under its home (24 bytes,
    /// in a list sized exactly); per home, its slot in the hash map (the One
    /// ID and the list, 24 bytes, at about 0.6 load) and the list's
    /// allocation overhead.
    pub fn approx_bytes(&self) -> usize {
        const QUEUE_ENTRY: usize = size_of::<(Queued, OneId)>() * 3 / 2;
        const HOMED: usize = size_of::<Timer>();
        const HOME_SLOT: usize = 40;
        self.queue.len() * (QUEUE_ENTRY + HOMED) + self.homes.len() * (HOME_SLOT + ALLOC_OVERHEAD)
    }

    /// The timers `home`'s record carries (empty: none).
    pub fn of(&self, home: &str) -> &[Timer] {
        self.homes.get(home).map_or(&[], |l| &l[..])
    }

    /// Every home.
    pub fn homes(&self) -> impl Iterator<Item = &OneId> {
        self.homes.keys()
    }

    /// Sets `home`'s timers to `timers` (a restore: its latest record).
    pub fn replace(&mut self, home: OneId, timers: Vec<Timer>) {
        for t in self.homes.remove(&home).unwrap_or_default() {
            self.queue.remove(&Queued::of(&t));
        }
        for t in timers {
            self.insert(t, &home);
        }
    }

    /// Fills an empty set from a snapshot's homes, each with its timers:
    /// the set [`TimerSet::replace`] of each home in turn builds, in one
    /// pass. The firing order is sorted once and built as a B-tree from
    /// sorted entries: full nodes, where inserts in random order leave them
    /// about two thirds full and cost a descent of the tree (cache misses)
    /// each (a restore inserts by home, so in random order of due time).
    ///
    /// A snapshot's homes are distinct and its timers armed once (it is
    /// written from a set); for input that is not, the result is still a
    /// set: a home listed twice keeps its last list, and a timer under two
    /// homes stays with the smaller One ID. A set that is not empty takes
    /// the homes one by one ([`TimerSet::replace`]).
    pub fn restore(&mut self, homes: Vec<(OneId, Vec<Timer>)>) {
        if !self.queue.is_empty() {
            for (home, timers) in homes {
                self.replace(home, timers);
            }
            return;
        }
        self.homes.clear();
        self.homes.reserve(homes.len());
        for (home, timers) in homes {
            if timers.is_empty() {
                self.homes.remove(&home);
            } else {
                self.homes.insert(home, timers.into_iter().map(fit).collect());
            }
        }
        let mut queue: Vec<(Queued, OneId)> = Vec::with_capacity(self.homes.values().map(|l| l.len()).sum());
        for (home, timers) in &self.homes {
            queue.extend(timers.iter().map(|t| (Queued::of(t), home.clone())));
        }
        queue.sort_unstable();
        // A timer under several homes (or twice under one): the first stays.
        let mut twice = Vec::new();
        queue.dedup_by(|later, first| {
            let same = later.0 == first.0;
            if same {
                twice.push((later.0.timer(), later.1.clone()));
            }
            same
        });
        for (t, home) in twice {
            self.unhome(&t, &home);
        }
        self.queue = BTreeMap::from_iter(queue);
    }

    /// A home's timers, with the home as the map holds it.
    pub fn home(&self, one_id: &OneId) -> Option<(&OneId, &[Timer])> {
        self.homes.get_key_value(one_id).map(|(h, t)| (h, &t[..]))
    }

    /// Every home with its timers, in the map's order.
    pub fn entries(&self) -> impl Iterator<Item = (&OneId, &[Timer])> {
        self.homes.iter().map(|(h, t)| (h, &t[..]))
    }

    pub fn home_count(&self) -> usize {
        self.homes.len()
    }

    /// Every home with its timers, sorted by home (tests; a snapshot
    /// writes them in the profiles' order, `write_order.rs`).
    #[cfg(test)]
    pub fn by_home(&self) -> Vec<(&OneId, &[Timer])> {
        let mut all: Vec<(&OneId, &[Timer])> = self.homes.iter().map(|(h, t)| (h, &t[..])).collect();
        all.sort_unstable_by(|a, b| a.0.cmp(b.0));
        all
    }

    /// Every home with its timers sorted, sorted by home (tests compare
    /// sets with it).
    #[cfg(test)]
    pub fn homes_sorted(&self) -> Vec<(OneId, Vec<Timer>)> {
        self.by_home()
            .into_iter()
            .map(|(h, t)| {
                let mut t = t.to_vec();
                t.sort();
                (h.clone(), t)
            })
            .collect()
    }

    /// Every text the timers refer to, counted into `c`.
    #[cfg(test)]
    pub fn census(&self, c: &mut crate::identity::Census) {
        for (Queued(_, key), home) in &self.queue {
            c.id(key);
            c.one_id(home);
        }
        for (home, timers) in &self.homes {
            c.one_id(home);
            timers.iter().for_each(|(_, _, key)| c.id(key));
        }
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::ids::Ns;

    fn t(due: i64, key: &str) -> Timer {
        (EventTime(due), TimerKind::Quiet, IdKey::new(Ns(0), key))
    }

    /// Every kind, in `TimerKind`'s order.
    fn kinds() -> Vec<TimerKind> {
        let mut all = vec![TimerKind::Cart, TimerKind::Browse, TimerKind::Quiet];
        all.extend(Trigger::ALL.map(TimerKind::Deferred));
        all.push(TimerKind::ChurnLabel);
        all
    }

    #[test]
    fn a_packed_timer_orders_and_reads_back_as_the_timer() {
        assert!(
            Trigger::ALL.windows(2).all(|w| w[0] < w[1]),
            "the triggers in their order"
        );
        let kinds = kinds();
        assert!(kinds.windows(2).all(|w| w[0] < w[1]));
        let dues = [DUE_MIN, -86_400_001, -1, 0, 1, 1_700_000_000_000, DUE_MAX];
        let keys = [IdKey::new(Ns(0), "a"), IdKey::new(Ns(0), "b"), IdKey::new(Ns(3), "a")];
        let mut all: Vec<Timer> = Vec::new();
        for due in dues {
            for (i, kind) in kinds.iter().enumerate() {
                assert_eq!(kind_code(*kind), i as i64);
                for key in &keys {
                    let t = (EventTime(due), *kind, key.clone());
                    assert_eq!(Queued::of(&t).timer(), t);
                    all.push(t);
                }
            }
        }
        for a in &all {
            for b in &all {
                assert_eq!(Queued::of(a).cmp(&Queued::of(b)), a.cmp(b), "{a:?} {b:?}");
            }
        }
    }

    #[test]
    fn a_timer_due_beyond_what_is_packed_is_armed_at_the_nearest_due_time() {
        let home = OneId::from("oj-a");
        let mut s = TimerSet::default();
        assert!(s.insert((EventTime(i64::MAX), TimerKind::Quiet, IdKey::new(Ns(0), "k")), &home));
        assert!(s.insert((EventTime(i64::MIN), TimerKind::Cart, IdKey::new(Ns(0), "k")), &home));
        assert_eq!(s.first_due(), Some(EventTime(DUE_MIN)));
        assert_eq!(s.pop_first().map(|(t, _)| t.0), Some(EventTime(DUE_MIN)));
        assert_eq!(
            s.of("oj-a"),
            &[(EventTime(DUE_MAX), TimerKind::Quiet, IdKey::new(Ns(0), "k"))]
        );
        assert_eq!(s.pop_first().map(|(t, _)| t.0), Some(EventTime(DUE_MAX)));
        assert_eq!((s.len(), s.homes().count()), (0, 0), "both views agree");
        let far = (EventTime(i64::MAX), TimerKind::ChurnLabel, IdKey::new(Ns(0), "k"));
        assert_eq!(Queued::of(&far).timer(), fit(far), "packing fits first");
    }

    #[test]
    fn timers_fire_in_order_and_leave_their_home() {
        let (a, b): (OneId, OneId) = (OneId::from("oj-a"), OneId::from("oj-b"));
        let mut s = TimerSet::default();
        assert!(s.insert(t(5, "k1"), &a));
        assert!(s.insert(t(3, "k2"), &b));
        assert!(s.insert(t(4, "k1"), &a));
        assert!(!s.insert(t(4, "k1"), &b), "armed already: stays at its home");
        assert_eq!((s.len(), s.first_due()), (3, Some(EventTime(3))));
        assert_eq!(s.of("oj-a").len(), 2);
        assert_eq!(s.pop_first(), Some((t(3, "k2"), b.clone())));
        assert!(s.of("oj-b").is_empty());
        assert_eq!(s.homes().count(), 1, "an empty home goes");
        assert_eq!(s.pop_first(), Some((t(4, "k1"), a.clone())));
        assert_eq!(s.of("oj-a"), &[t(5, "k1")]);
    }

    #[test]
    fn removing_by_key_and_replacing_a_home_keep_both_views_equal() {
        let (a, b): (OneId, OneId) = (OneId::from("oj-a"), OneId::from("oj-b"));
        let mut s = TimerSet::default();
        s.insert(t(1, "k1"), &a);
        s.insert(t(2, "k2"), &a);
        s.insert(t(3, "k1"), &b);
        assert_eq!(s.first_home(), Some(a.clone()));
        let listed = s.matching(|k| k.value() == "k1");
        assert_eq!(listed, vec![(t(1, "k1"), a.clone()), (t(3, "k1"), b.clone())]);
        assert_eq!(s.len(), 3, "listing removes nothing");
        s.remove_listed(&listed);
        assert!(s.matching(|k| k.value() == "k1").is_empty());
        assert_eq!((s.len(), s.of("oj-a")), (1, &[t(2, "k2")][..]));
        s.replace(a.clone(), vec![t(7, "k3"), t(8, "k3")]);
        assert_eq!(s.len(), 2);
        assert_eq!(s.pop_first(), Some((t(7, "k3"), a.clone())));
        s.replace(a.clone(), Vec::new());
        assert_eq!((s.len(), s.homes().count()), (0, 0));
    }

    /// A set's two views: the firing order with homes, and each home's
    /// timers.
    type Views = (Vec<(Timer, OneId)>, Vec<(OneId, Vec<Timer>)>);

    /// Both views, comparable (each home's timers sorted).
    fn views(s: &TimerSet) -> Views {
        let queue = s.queue.iter().map(|(q, h)| (q.timer(), h.clone())).collect();
        (queue, s.homes_sorted())
    }

    proptest::proptest! {
        /// A restore of a set's homes builds the set it was written from.
        #[test]
        fn a_restore_in_one_pass_builds_the_set_its_homes_came_from(
            armed in proptest::collection::vec((0i64..50, 0u8..6, 0u8..8), 0..120),
        ) {
            let mut s = TimerSet::default();
            for (due, key, home) in armed {
                s.insert(t(due, &format!("k{key}")), &OneId::from(format!("oj-{home}")));
            }
            let homes: Vec<(OneId, Vec<Timer>)> =
                s.by_home().into_iter().map(|(h, t)| (h.clone(), t.to_vec())).collect();
            let mut restored = TimerSet::default();
            restored.restore(homes.clone());
            proptest::prop_assert_eq!(views(&restored), views(&s));
            let mut one_by_one = TimerSet::default();
            for (home, timers) in homes {
                one_by_one.replace(home, timers);
            }
            proptest::prop_assert_eq!(views(&restored), views(&one_by_one));
        }
    }

    #[test]
    fn a_restore_of_homes_that_overlap_still_builds_a_set() {
        let (a, b): (OneId, OneId) = (OneId::from("oj-a"), OneId::from("oj-b"));
        let mut s = TimerSet::default();
        s.restore(vec![
            (b.clone(), vec![t(1, "k1"), t(2, "k2"), t(2, "k2")]),
            (a.clone(), vec![t(9, "k9")]),
            (a.clone(), vec![t(1, "k1"), t(3, "k3")]),
            (OneId::from("oj-c"), Vec::new()),
        ]);
        // a's last list; t(1) under both a and b stays with a (smaller).
        assert_eq!(
            views(&s),
            (
                vec![
                    (t(1, "k1"), a.clone()),
                    (t(2, "k2"), b.clone()),
                    (t(3, "k3"), a.clone())
                ],
                vec![(a.clone(), vec![t(1, "k1"), t(3, "k3")]), (b.clone(), vec![t(2, "k2")])],
            )
        );
        // Into a set that is not empty: home by home.
        s.restore(vec![(b.clone(), vec![t(5, "k5")])]);
        assert_eq!(s.of("oj-b"), &[t(5, "k5")]);
        assert_eq!(s.len(), 3);
    }

    /// Time and resident growth of a restore of 1M homes with two timers
    /// each (the bench's shape at 1M profiles), home by home or in one
    /// pass; each in a process of its own:
    /// `cargo test --release -p onejourney-core --lib -- --ignored --nocapture --exact processor::timer_set::tests::restore_of_2m_timers_one_pass`
    /// (or `..._home_by_home`).
    fn restore_of_2m_timers(one_pass: bool) {
        use crate::testkit::resident_bytes as rss;
        let homes: Vec<(OneId, Vec<Timer>)> = (0..1_000_000u64)
            .map(|i| {
                // Due times scattered as a restore meets them (by home).
                let due = |k: u64| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 20) as i64 + k as i64;
                let key = IdKey::new(Ns(0), &format!("c{i}"));
                let timers = vec![
                    (EventTime(due(0)), TimerKind::Quiet, key.clone()),
                    (EventTime(due(7)), TimerKind::ChurnLabel, key),
                ];
                (OneId::from(format!("oj-{i:016x}")), timers)
            })
            .collect();
        let before = rss();
        let started = std::time::Instant::now();
        let mut s = TimerSet::default();
        if one_pass {
            s.restore(homes);
        } else {
            for (home, timers) in homes {
                s.replace(home, timers);
            }
        }
        let took = started.elapsed();
        println!(
            "{} timers {}: {:.0} ms, resident growth {} MB (the homes' input freed)",
            s.len(),
            if one_pass { "in one pass" } else { "home by home" },
            took.as_secs_f64() * 1e3,
            rss().saturating_sub(before) as i64 / 1_000_000
        );
    }

    #[test]
    #[ignore = "a measurement, run by hand"]
    fn restore_of_2m_timers_one_pass() {
        restore_of_2m_timers(true);
    }

    #[test]
    #[ignore = "a measurement, run by hand"]
    fn restore_of_2m_timers_home_by_home() {
        restore_of_2m_timers(false);
    }

    #[test]
    fn the_estimate_counts_each_timer_and_each_home() {
        let (a, b): (OneId, OneId) = (OneId::from("oj-a"), OneId::from("oj-b"));
        let mut s = TimerSet::default();
        assert_eq!(s.approx_bytes(), 0);
        s.insert(t(1, "k1"), &a);
        let one = s.approx_bytes();
        assert!(one > 2 * std::mem::size_of::<Timer>(), "{one}: the timer is kept twice");
        s.insert(t(2, "k2"), &a);
        let same_home = s.approx_bytes() - one;
        s.insert(t(3, "k3"), &b);
        let new_home = s.approx_bytes() - one - same_home;
        assert!(new_home > same_home, "a home costs a slot of its own");
        let all = s.matching(|_| true);
        s.remove_listed(&all);
        assert_eq!(s.approx_bytes(), 0);
    }
}
