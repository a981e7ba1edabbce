//! A broker quirk, worked around at the Kafka edge: a partition resumed in
//! the middle of a record batch must deliver from the offset asked for.
//!
//! In: the offsets of the first records a resumed partition delivers. Out: a
//! [`Resumed`] verdict per record: skip it, rewind (seek further back) or
//! process it and stop checking. It keeps, per partition, where resuming
//! started and how far back fetching was rewound. Used by the pipeline's
//! consumer and by the read-back of published outputs (`durable::published`);
//! [`Gapless`] applies the same check to every record of a topic that has no
//! gaps (the identity evidence reader).

/// Watches the first records of a partition resumed at `start`. A broker
/// must deliver from the requested offset; tansu 0.6, asked for an offset in
/// the middle of a record batch, skips the rest of that batch (measured:
/// asked for 11307, it delivers from 11359). On such a gap fetching is
/// rewound further back, and records below `start` (already covered) are
/// skipped until the sequence is seen to be contiguous.
#[derive(Clone, Debug, PartialEq)]
pub struct ResumeCheck {
    start: i64,
    /// Where fetching was rewound to, after a gap.
    rewound_to: Option<i64>,
    /// A record below `start` came by: fetching is contiguous from there.
    seen_below: bool,
}

/// What to do with a record of a resumed partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resumed {
    /// Below the resume offset: already covered, skip it.
    Skip,
    /// The broker skipped records: seek to this offset, drop this record.
    Rewind(i64),
    /// Delivery is contiguous from the resume offset: process it and stop checking.
    Contiguous,
    /// Records between the resume offset and this one are not at the broker
    /// even from the partition's start: process it and stop checking.
    Missing,
}

impl ResumeCheck {
    pub fn new(start: i64) -> Self {
        ResumeCheck {
            start,
            rewound_to: None,
            seen_below: false,
        }
    }

    pub fn start(&self) -> i64 {
        self.start
    }

    /// The verdict for a record at `offset`.
    pub fn record(&mut self, offset: i64) -> Resumed {
        if offset < self.start {
            self.seen_below = true;
            return Resumed::Skip;
        }
        if offset == self.start || self.seen_below || self.rewound_to == Some(0) {
            return if offset > self.start {
                Resumed::Missing
            } else {
                Resumed::Contiguous
            };
        }
        let back = match self.rewound_to {
            None => self.start - 1_000,
            Some(prev) => prev - (self.start - prev) * 10,
        }
        .max(0);
        self.rewound_to = Some(back);
        Resumed::Rewind(back)
    }

    /// The seek for the last rewind failed: the next record tries again.
    pub fn rewind_failed(&mut self) {
        self.rewound_to = None;
    }
}

/// Follows a partition whose every offset holds a record (written without
/// transactions, never compacted) from `next` on: a record past the next
/// offset means the broker skipped some, and they are fetched again (the
/// rewinds of [`ResumeCheck`], from the offset expected). tansu 0.6 gives a
/// produced batch its offsets before it stores it: a fetch in between, with
/// several producers on the partition, delivers the batch after it and
/// skips that one for good (measured on the routed topic).
#[derive(Clone, Debug, PartialEq)]
pub struct Gapless {
    next: i64,
    check: Option<ResumeCheck>,
}

/// What to do with a record of a [`Gapless`] partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Follow {
    /// The next record: process it.
    Take,
    /// Before the next offset: already taken.
    Skip,
    /// Records were skipped: seek to this offset, drop this record.
    Rewind(i64),
    /// The records from this offset up to this one are not at the broker
    /// even from the partition's start: process it.
    Missing(i64),
}

impl Gapless {
    pub fn new(next: i64) -> Self {
        Gapless { next, check: None }
    }

    /// The offset of the next record to take.
    pub fn next(&self) -> i64 {
        self.next
    }

    /// The verdict for a record at `offset`.
    pub fn record(&mut self, offset: i64) -> Follow {
        let verdict = match self.check.as_mut() {
            Some(check) => match check.record(offset) {
                Resumed::Skip => return Follow::Skip,
                Resumed::Rewind(back) => return Follow::Rewind(back),
                Resumed::Contiguous => Follow::Take,
                Resumed::Missing => Follow::Missing(self.next),
            },
            None if offset < self.next => return Follow::Skip,
            None if offset > self.next => {
                let mut check = ResumeCheck::new(self.next);
                let verdict = check.record(offset);
                self.check = Some(check);
                match verdict {
                    Resumed::Rewind(back) => return Follow::Rewind(back),
                    _ => Follow::Missing(self.next),
                }
            }
            None => Follow::Take,
        };
        self.check = None;
        self.next = offset + 1;
        verdict
    }

    /// The seek for the last rewind failed: the next record tries again.
    pub fn rewind_failed(&mut self) {
        if let Some(check) = self.check.as_mut() {
            check.rewind_failed();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resume_gap_rewinds_further_back_until_delivery_is_contiguous() {
        let mut c = ResumeCheck::new(11_307);
        // tansu delivers from the next batch: rewind 1,000 back.
        assert_eq!(c.record(11_359), Resumed::Rewind(10_307));
        // Still past the start: ten times further.
        assert_eq!(c.record(11_359), Resumed::Rewind(307));
        // A record below the start: covered, and delivery is contiguous from here.
        assert_eq!(c.record(11_000), Resumed::Skip);
        assert_eq!(c.record(11_307), Resumed::Contiguous);
        assert_eq!(ResumeCheck::new(5).record(5), Resumed::Contiguous);
        // Rewound to the partition's start and still a gap: those records are gone.
        let mut c = ResumeCheck::new(500);
        assert_eq!(c.record(900), Resumed::Rewind(0));
        assert_eq!(c.record(900), Resumed::Missing);
    }

    #[test]
    fn a_gap_in_a_gapless_partition_is_fetched_again() {
        let mut g = Gapless::new(0);
        for offset in 0..=811 {
            assert_eq!(g.record(offset), Follow::Take);
        }
        // 812..=814 skipped by the broker: from further back, since a
        // fetch at 812 would start at the next whole batch again.
        assert_eq!(g.record(815), Follow::Rewind(0));
        assert_eq!(g.next(), 812);
        assert_eq!(g.record(0), Follow::Skip);
        assert_eq!(g.record(811), Follow::Skip);
        for offset in 812..=816 {
            assert_eq!(g.record(offset), Follow::Take);
        }
        // A record delivered twice is taken once.
        assert_eq!(g.record(816), Follow::Skip);
        // A gap the broker really has: taken once it is seen to be one.
        assert_eq!(g.record(900), Follow::Rewind(0));
        assert_eq!(g.record(900), Follow::Missing(817));
        assert_eq!(g.record(901), Follow::Take);
        // 1,000 back at first; a failed seek is tried again from there.
        let mut g = Gapless::new(5_000);
        assert_eq!(g.record(6_000), Follow::Rewind(4_000));
        g.rewind_failed();
        assert_eq!(g.record(6_000), Follow::Rewind(4_000));
        assert_eq!(g.record(6_000), Follow::Rewind(0), "ten times further back");
    }
}
