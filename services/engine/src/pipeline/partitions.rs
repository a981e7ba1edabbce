//! Partitions: what the pipeline knows of each input partition.
//!
//! In: the Kafka edge's events (assignments, revocations, end offsets) and
//! the offset of every message taken. Out: the core's per-partition
//! watermark bookkeeping (assigned, idle or behind), a verdict on the first
//! messages of a resumed partition, and at a checkpoint the input offsets the
//! state covers. It keeps, per input partition: the largest offset taken, the
//! first offset the last snapshot does not cover, where the partition ends at
//! the broker, the next offset the consumer delivers, and the resume check
//! of a partition just assigned.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use tracing::{error, warn};

use super::ingest::Ingest;
use crate::kafka::edge::{EdgeEvent, Tp};
use crate::kafka::resume::{ResumeCheck, Resumed};

/// What to do with a message just taken.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    Process,
    /// Drop it.
    Skip,
    /// Drop it and fetch the partition again from this offset.
    Rewind(i64),
}

/// An input partition whose end offset was not read for this long holds the
/// watermark back as one with a backlog does (the watcher reads every end
/// each second; a read can take up to 2 s a partition while the broker is
/// away).
const ENDS_STALE_AFTER: Duration = Duration::from_secs(5);

/// What one input partition's end says now: `backlog` when records wait
/// at the broker (or may: its end unknown), `read_ms` when its end was last
/// asked for (processing time; none yet since it was assigned).
#[derive(Debug, PartialEq, Eq)]
struct EndReport {
    tp: Tp,
    backlog: bool,
    read_ms: Option<u64>,
}

pub struct Partitions {
    /// The largest offset taken from each input partition.
    highest: HashMap<Tp, i64>,
    /// The next offset the consumer delivers from each assigned partition:
    /// below `highest` while a partition assigned again re-reads what this
    /// process already took (it resumes at the last checkpoint's offsets).
    position: HashMap<Tp, i64>,
    /// Per input partition, the first offset the last snapshot does not cover.
    covered: HashMap<Tp, i64>,
    /// The end offset of each assigned input partition, refreshed every
    /// second, and when it was asked for (the read may be later).
    ends: HashMap<Tp, (i64, Instant)>,
    /// Assigned input (and routed) partitions whose end was not read since
    /// they were assigned (none in `ends`): records may wait there that
    /// nobody knows of, so each holds the watermark as a backlog does until
    /// a read comes. With each, the end watcher's sweeps since that read
    /// other partitions' ends but not its own: past `unread_limit` of those
    /// (its end cannot be read while others' can: its assignment failed, or
    /// the broker does not answer for it) it is stalled and stops holding.
    /// A sweep that reads nothing (the broker away) does not count.
    unread: HashMap<Tp, u32>,
    /// `stall_after` in the watcher's sweeps (one a second).
    unread_limit: u32,
    /// Partitions just assigned whose first message has not shown yet that
    /// fetching started at the resume offset.
    resuming: HashMap<Tp, ResumeCheck>,
    /// Partitions with records at the broker that none arrives from.
    stalls: crate::stall::StallWatch,
    /// Topics whose offsets have no gaps (the routed topic: written by
    /// this engine's producers, without transactions, never compacted): a
    /// record past the next offset means the broker skipped some.
    contiguous: Vec<String>,
}

impl Partitions {
    /// `covered`: the restored snapshot's resume offsets.
    /// `stall_after`: how long a partition with a backlog may deliver nothing
    /// before it is reported stalled and stops holding the watermark.
    pub fn new(covered: HashMap<Tp, i64>, stall_after: std::time::Duration) -> Self {
        Partitions {
            highest: HashMap::new(),
            position: HashMap::new(),
            covered,
            ends: HashMap::new(),
            unread: HashMap::new(),
            unread_limit: u32::try_from(stall_after.as_secs()).unwrap_or(u32::MAX).max(1),
            resuming: HashMap::new(),
            stalls: crate::stall::StallWatch::new(stall_after),
            contiguous: Vec::new(),
        }
    }

    /// Every offset of `topic` holds a record: a gap is fetched again.
    pub fn with_contiguous(mut self, topic: &str) -> Self {
        self.contiguous.push(topic.to_string());
        self
    }

    /// Applies one event of the Kafka edge at processing time `now_ms`.
    pub fn on_event(&mut self, event: EdgeEvent, ingest: &mut Ingest, now_ms: u64) {
        match event {
            EdgeEvent::Assigned(parts) => self.assigned(parts, ingest, now_ms),
            EdgeEvent::Revoked(parts) => {
                for tp in &parts {
                    self.resuming.remove(tp);
                    self.ends.remove(tp);
                    self.unread.remove(tp);
                    self.position.remove(tp);
                    // Scale-out: a partition's offsets are committed again
                    // once it delivers after the rebalance (it may be
                    // another process's now: inputs move too).
                    if ingest.routed_topic().is_some() {
                        self.highest.remove(tp);
                        self.covered.remove(tp);
                    }
                }
            }
            EdgeEvent::Ends(ends) => self.ends_read(ends),
        }
    }

    /// Partitions just assigned hold the watermark back until they deliver
    /// or stay silent for `idle_after`; the others stop holding it.
    fn assigned(&mut self, parts: Vec<(Tp, Option<i64>)>, ingest: &mut Ingest, now_ms: u64) {
        // Each assignment is the whole set (the edge makes it so under
        // incremental rebalancing too).
        let whole: Vec<(String, i32)> = parts.iter().map(|(tp, _)| tp.clone()).collect();
        ingest.assigned(&whole, now_ms);
        tracing::debug!(process = ingest.process_id(), ?parts, "assignment applied");
        let watched = |topic: &str| ingest.channel_of(topic).is_some() || ingest.routed_topic() == Some(topic);
        self.took(parts, watched);
    }

    /// The consumer reads `parts` now, each from its start when given one;
    /// `watched`: whether the end watcher reads a topic's ends (the input
    /// topics and the routed one).
    fn took(&mut self, parts: Vec<(Tp, Option<i64>)>, watched: impl Fn(&str) -> bool) {
        let whole: HashSet<Tp> = parts.iter().map(|(tp, _)| tp.clone()).collect();
        // A partition given a start (just added, or every partition under
        // eager rebalancing) starts there: watch that the broker really
        // delivers from there. One kept without a start goes on as it was.
        self.resuming.retain(|tp, _| whole.contains(tp));
        for (tp, start) in parts {
            if let Some(start) = start {
                self.resumed_at(tp, start);
            }
        }
        // Until the watcher reads where a partition ends, its silence says
        // nothing: after a rebalance during a broker outage, one whose end
        // entry went with the revocation counted idle once its wait ran
        // out, and its records came too late (`docs/scaling.md`, item 9).
        self.unread
            .retain(|tp, _| whole.contains(tp) && !self.ends.contains_key(tp));
        for tp in whole {
            if watched(&tp.0) && !self.ends.contains_key(&tp) {
                self.unread.entry(tp).or_insert(0);
            }
        }
    }

    /// The end watcher read where these partitions end, each asked for at
    /// its `Instant`.
    fn ends_read(&mut self, ends: HashMap<Tp, (i64, Instant)>) {
        for tp in ends.keys() {
            self.unread.remove(tp);
        }
        if !ends.is_empty() {
            for ((topic, partition), missed) in &mut self.unread {
                *missed += 1;
                if *missed == self.unread_limit {
                    error!(
                        topic,
                        partition,
                        sweeps = *missed,
                        "the end of an assigned partition was never read while other partitions' ends were: \
                         it no longer holds the watermark back (was it really assigned? does the broker answer for it?)"
                    );
                }
            }
        }
        self.ends.extend(ends);
    }

    /// `tp` was assigned starting at `start`. When this process took
    /// messages past `start` before (the group took the partition away and
    /// gave it back: after a broker outage, say), the partition has a backlog
    /// until it reads them again, whatever the end watcher has said yet: it
    /// must hold the watermark back, or the other partitions' newer events
    /// would carry the watermark past the window in which what it re-reads is
    /// still told apart from a duplicate (those events went to the
    /// dead-letter topic as `too_late`, measured under load).
    fn resumed_at(&mut self, tp: Tp, start: i64) {
        if let Some(&high) = self.highest.get(&tp) {
            if high >= start {
                self.ends.entry(tp.clone()).or_insert((high + 1, Instant::now()));
            }
        }
        self.position.insert(tp.clone(), start);
        self.resuming.insert(tp, ResumeCheck::new(start));
    }

    /// The next offset the consumer delivers from `tp`, as far as known.
    fn next_offset(&self, tp: &Tp) -> i64 {
        self.position
            .get(tp)
            .copied()
            .or_else(|| self.highest.get(tp).map(|h| h + 1))
            .or_else(|| self.covered.get(tp).copied())
            .unwrap_or(0)
    }

    /// Scale-out: a routed partition given up; its offsets are its next
    /// owner's to commit (it may come back later, from there).
    pub fn forget(&mut self, tp: &Tp) {
        self.highest.remove(tp);
        self.covered.remove(tp);
        self.resuming.remove(tp);
        self.position.remove(tp);
    }

    /// Checks where a resumed partition's first messages start (see
    /// [`ResumeCheck`]).
    /// On a topic without gaps, a record past the next offset is checked
    /// the same way: tansu 0.6 gives a produced batch its offsets before it
    /// stores it, and a fetch in between delivers the batch after it,
    /// skipping that one for good (measured: a routed partition re-read
    /// after a move lost three events of a journey).
    pub fn admit(&mut self, topic: &str, partition: i32, offset: i64) -> Admit {
        let tp = (topic.to_string(), partition);
        if !self.resuming.contains_key(&tp) && self.contiguous.iter().any(|t| t == topic) {
            if let Some(expected) = self.position.get(&tp).copied().filter(|next| offset > *next) {
                warn!(
                    topic,
                    partition,
                    expected,
                    got = offset,
                    "the broker skipped records of a partition without gaps; fetching them again"
                );
                self.resuming.insert(tp.clone(), ResumeCheck::new(expected));
            }
        }
        let Some(check) = self.resuming.get_mut(&tp) else {
            return Admit::Process;
        };
        let start = check.start();
        match check.record(offset) {
            Resumed::Skip => {
                tracing::debug!(topic, partition, offset, start, "below the resume offset: skipped");
                Admit::Skip
            }
            Resumed::Contiguous => {
                self.resuming.remove(&tp);
                Admit::Process
            }
            Resumed::Missing => {
                error!(
                    topic,
                    partition,
                    from = start,
                    to = offset,
                    "the broker has no records between the resume offset and the first one it delivers"
                );
                self.resuming.remove(&tp);
                Admit::Process
            }
            Resumed::Rewind(back) => {
                self.position.insert(tp.clone(), back);
                warn!(
                    topic,
                    partition,
                    asked = start,
                    got = offset,
                    rewind_to = back,
                    "the broker skipped records after the resume offset; fetching again from further back"
                );
                Admit::Rewind(back)
            }
        }
    }

    /// The seek of the last rewind failed: the next message tries again.
    pub fn rewind_failed(&mut self, topic: &str, partition: i32) {
        if let Some(check) = self.resuming.get_mut(&(topic.to_string(), partition)) {
            check.rewind_failed();
        }
    }

    /// A message at `offset` was taken for processing.
    pub fn taken(&mut self, topic: &str, partition: i32, offset: i64) {
        let tp = (topic.to_string(), partition);
        self.position.insert(tp.clone(), offset + 1);
        let high = self.highest.entry(tp).or_insert(offset);
        *high = (*high).max(offset);
    }

    /// A partition with messages still at the broker is behind, not idle: one
    /// whose next offset is below its end has a backlog, and so has one whose
    /// end was not read for [`ENDS_STALE_AFTER`] or not read at all since it
    /// was assigned. A partition that makes no progress for
    /// `ingest.stall_after` despite a backlog is stalled (see `stall`), as
    /// is one whose end was not read since it was assigned while others'
    /// were for as long: it stops holding the watermark. The core is told when each
    /// end was asked for (at processing time `now_ms`), so a partition
    /// counts idle only on a read made after its silence began. Returns the
    /// number of stalled partitions.
    pub fn update_backlogs(&mut self, ingest: &mut Ingest, paused: bool, now_ms: u64) -> usize {
        let inputs = |topic: &str| ingest.channel_of(topic).is_some();
        let unreadable = self.unreadable(inputs);
        for report in self.backlogs(paused, now_ms, inputs) {
            let (topic, partition) = &report.tp;
            match ingest.channel_of(topic) {
                Some(channel) => ingest.input_end(channel, *partition, report.backlog, report.read_ms),
                None if ingest.owns_routed(topic, *partition) => ingest.routed_backlog(*partition, report.backlog),
                None => {}
            }
        }
        self.stalls.count() + unreadable
    }

    /// Input partitions (`input` tells the topics) whose end was never read
    /// since they were assigned while others' were: stalled.
    fn unreadable(&self, input: impl Fn(&str) -> bool) -> usize {
        self.unread
            .iter()
            .filter(|((topic, _), missed)| **missed >= self.unread_limit && input(topic))
            .count()
    }

    /// What [`Partitions::update_backlogs`] tells of each assigned
    /// partition whose end was read or is awaited; `input`: whether a topic
    /// is an input topic (only those are watched for stalls; the routed
    /// topic's backlog is its lanes').
    fn backlogs(&mut self, paused: bool, now_ms: u64, input: impl Fn(&str) -> bool) -> Vec<EndReport> {
        let mut reports = Vec::with_capacity(self.ends.len() + self.unread.len());
        for (tp, (end, read_at)) in &self.ends {
            // Not read lately (a broker outage, slow metadata): records may
            // wait that nobody knows of, so its silence is not idleness.
            let age = read_at.elapsed();
            let unknown = age > ENDS_STALE_AFTER;
            let read_ms = now_ms.saturating_sub(u64::try_from(age.as_millis()).unwrap_or(u64::MAX));
            let next = self.next_offset(tp);
            let stalled = input(&tp.0) && self.stalls.observe(&tp.0, tp.1, next, *end, Instant::now(), paused);
            reports.push(EndReport {
                tp: tp.clone(),
                backlog: (next < *end || unknown) && !stalled,
                read_ms: Some(read_ms),
            });
        }
        reports.extend(self.unread.iter().map(|(tp, missed)| EndReport {
            tp: tp.clone(),
            backlog: *missed < self.unread_limit,
            read_ms: None,
        }));
        reports
    }

    /// The input offsets the state covers: past everything taken, except
    /// the `unfinished` messages (events still waiting for the watermark:
    /// they are read again).
    pub fn covered_now<'a>(&self, unfinished: impl Iterator<Item = (&'a str, i32, i64)>) -> HashMap<Tp, i64> {
        let mut inputs = self.covered.clone();
        for (tp, high) in &self.highest {
            inputs.insert(tp.clone(), high + 1);
        }
        for (topic, partition, offset) in unfinished {
            let o = inputs.entry((topic.to_string(), partition)).or_insert(offset);
            *o = (*o).min(offset);
        }
        inputs
    }

    /// A snapshot covering `inputs` is durable.
    pub fn checkpointed(&mut self, inputs: HashMap<Tp, i64>) {
        self.covered = inputs;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covered_offsets_stop_at_the_first_unfinished_message() {
        let covered = HashMap::from([(("web".to_string(), 0), 5), (("web".to_string(), 1), 9)]);
        let mut p = Partitions::new(covered, std::time::Duration::from_secs(60));
        p.taken("web", 0, 10);
        p.taken("web", 0, 12);
        p.taken("pos", 0, 3);
        let now = p.covered_now([("web", 0, 11), ("pos", 0, 2)].into_iter());
        assert_eq!(now[&("web".to_string(), 0)], 11);
        assert_eq!(now[&("web".to_string(), 1)], 9);
        assert_eq!(now[&("pos".to_string(), 0)], 2);
    }

    #[test]
    fn a_gap_in_a_topic_without_gaps_is_fetched_again() {
        let mut p = Partitions::new(HashMap::new(), std::time::Duration::from_secs(60)).with_contiguous("routed");
        for (topic, offset) in [("routed", 811), ("web", 811)] {
            assert_eq!(p.admit(topic, 0, offset), Admit::Process);
            p.taken(topic, 0, offset);
        }
        // 812..814 skipped by the broker: fetched again from further back
        // (a fetch at 812 would start at the next whole batch again).
        assert_eq!(p.admit("routed", 0, 815), Admit::Rewind(0));
        assert_eq!(p.admit("routed", 0, 811), Admit::Skip, "already taken");
        for offset in [812, 813, 814, 815] {
            assert_eq!(p.admit("routed", 0, offset), Admit::Process);
            p.taken("routed", 0, offset);
        }
        assert_eq!(p.admit("routed", 0, 816), Admit::Process);
        // Other topics may have gaps (transaction markers, compaction).
        assert_eq!(p.admit("web", 0, 815), Admit::Process);
        // A gap the broker really has is processed once it is seen to be one.
        p.taken("routed", 0, 816);
        assert_eq!(p.admit("routed", 0, 900), Admit::Rewind(0));
        assert_eq!(
            p.admit("routed", 0, 900),
            Admit::Process,
            "nothing below it at the broker"
        );
    }

    #[test]
    fn a_partition_given_back_is_behind_until_it_reads_again_what_was_taken() {
        let web0 = ("web".to_string(), 0);
        let mut p = Partitions::new(HashMap::from([(web0.clone(), 5)]), std::time::Duration::from_secs(60));
        assert_eq!(p.next_offset(&web0), 5);
        p.taken("web", 0, 5);
        p.taken("web", 0, 9);
        assert_eq!(p.next_offset(&web0), 10);
        // The group gives the partition back at the checkpoint's offset 5,
        // before the end watcher has read where it ends.
        p.resumed_at(web0.clone(), 5);
        assert_eq!(p.next_offset(&web0), 5);
        assert_eq!(
            p.ends.get(&web0).map(|e| e.0),
            Some(10),
            "it ends at least past what was taken"
        );
        assert_eq!(p.admit("web", 0, 5), Admit::Process);
        p.taken("web", 0, 5);
        assert_eq!(p.next_offset(&web0), 6);
        // A partition assigned for the first time learns its end from the watcher.
        let pos0 = ("pos".to_string(), 0);
        p.resumed_at(pos0.clone(), 3);
        assert!(!p.ends.contains_key(&pos0));
        assert_eq!(p.next_offset(&pos0), 3);
    }

    #[test]
    fn a_partition_assigned_is_behind_until_its_end_is_read() {
        let (web0, web1, routed0) = (
            ("web".to_string(), 0),
            ("web".to_string(), 1),
            ("routed".to_string(), 0),
        );
        let control0 = ("control".to_string(), 0);
        let mut p = Partitions::new(HashMap::new(), std::time::Duration::from_secs(3));
        let input = |topic: &str| topic == "web";
        let watched = |topic: &str| topic == "web" || topic == "routed";
        let report = |p: &mut Partitions, tp: &Tp| {
            let found: Vec<_> = p
                .backlogs(false, 10_000, input)
                .into_iter()
                .filter(|r| &r.tp == tp)
                .collect();
            assert!(found.len() <= 1, "one report a partition: {found:?}");
            found.into_iter().next().map(|r| (r.backlog, r.read_ms.is_some()))
        };
        let read = |tps: &[&Tp]| tps.iter().map(|tp| ((*tp).clone(), (0, Instant::now()))).collect();
        p.took(
            vec![
                (web0.clone(), Some(0)),
                (web1.clone(), None),
                (routed0.clone(), None),
                (control0.clone(), None),
            ],
            watched,
        );
        for tp in [&web0, &web1, &routed0] {
            assert_eq!(report(&mut p, tp), Some((true, false)), "{tp:?}: its end unknown");
        }
        assert_eq!(report(&mut p, &control0), None, "a topic the watcher does not read");
        p.ends_read(read(&[&web0, &routed0]));
        assert_eq!(report(&mut p, &web0), Some((false, true)), "read: nothing waits");
        assert_eq!(report(&mut p, &routed0), Some((false, true)));
        assert_eq!(report(&mut p, &web1), Some((true, false)), "still not read");
        // A rebalance (during a broker outage, say) takes web0 away and
        // gives it back: its end entry went with it.
        p.ends.remove(&web0);
        p.took(vec![(web0.clone(), Some(0)), (web1.clone(), None)], watched);
        assert_eq!(
            report(&mut p, &web0),
            Some((true, false)),
            "given back, its end unknown again"
        );
        assert_eq!(
            report(&mut p, &routed0),
            Some((false, true)),
            "an end read stays until revoked"
        );
        // Sweeps that read nothing (the broker away) do not wear the hold
        // down; ones that read the others' ends but never web1's do.
        for _ in 0..5 {
            p.ends_read(HashMap::new());
        }
        assert_eq!(report(&mut p, &web1), Some((true, false)));
        assert_eq!(p.unreadable(input), 0);
        // The sweep that read web0 and routed0 above was web1's first miss.
        p.ends_read(read(&[&web0]));
        assert_eq!(report(&mut p, &web1), Some((true, false)), "two sweeps of three");
        p.ends_read(read(&[&web0]));
        assert_eq!(
            report(&mut p, &web1),
            Some((false, false)),
            "its end never read: stalled"
        );
        assert_eq!(p.unreadable(input), 1);
        p.ends_read(read(&[&web1]));
        assert_eq!(report(&mut p, &web1), Some((false, true)), "read at last");
        assert_eq!(p.unreadable(input), 0);
        // A partition no longer assigned says nothing.
        p.took(vec![(web0.clone(), None)], watched);
        p.ends.remove(&web1);
        assert_eq!(report(&mut p, &web1), None);
        // A partition given back past what this process took has a known
        // backlog (`resumed_at`), reported once.
        p.taken("web", 0, 7);
        p.ends.remove(&web0);
        p.took(vec![(web0.clone(), Some(3))], watched);
        assert_eq!(report(&mut p, &web0), Some((true, true)));
    }
}
