//! The harder mix: people whose behaviour a hand-weighted churn score gets
//! wrong, identifiers that must not link strangers, events that arrive late.
//!
//! In: the random generator (and, for journeys, a [`Gen`]). Out: segments,
//! shared tablets, junk values, publication delays. It keeps the household
//! being filled while people are made, nothing else.

use rand::rngs::StdRng;
use rand::Rng;

use crate::journey::{Gen, DAY, MINUTE};
use crate::{Person, Segment, SimConfig, SimEvent};

/// Placeholder e-mails a till accepts: the engine blocks both as junk (the
/// second by its placeholder rule, `ids::is_placeholder_email`; before that
/// rule only the unique-namespace rules kept it from joining strangers).
const JUNK_EMAILS: [&str; 2] = ["test@test.com", "noemail@noemail.com"];

/// A placeholder phone number a call-center form fills in.
pub(crate) const JUNK_PHONE: &str = "0000000000";

/// Every junk value the harder mix types, by namespace: they belong to no one.
pub const JUNK: [(&str, &str); 3] = [
    ("email", JUNK_EMAILS[0]),
    ("email", JUNK_EMAILS[1]),
    ("phone", JUNK_PHONE),
];

pub(crate) fn junk_email(rng: &mut StdRng) -> &'static str {
    JUNK_EMAILS[rng.gen_range(0..JUNK_EMAILS.len())]
}

/// The harder mix's segments, by share of people.
pub(crate) fn segment(rng: &mut StdRng) -> Segment {
    match rng.gen_range(0..100) {
        0..=19 => Segment::Loyal,
        20..=27 => Segment::LongGapLoyal,
        28..=35 => Segment::Seasonal,
        36..=43 => Segment::Irregular,
        44..=55 => Segment::Churning,
        56..=63 => Segment::LastBuyChurner,
        64..=71 => Segment::StayingComplainer,
        72..=83 => Segment::CartAbandoner,
        _ => Segment::Browser,
    }
}

/// Families of two or three known people sharing one tablet.
#[derive(Default)]
pub(crate) struct Households {
    open: Option<(String, usize)>,
}

impl Households {
    /// The tablet `person` shares, if any: joins the household being filled
    /// or, now and then, starts one.
    pub(crate) fn next(&mut self, rng: &mut StdRng, person: &Person) -> Option<String> {
        // Only known customers log in on a family tablet.
        person.customer_id.as_ref()?;
        if let Some((tablet, size)) = &mut self.open {
            if *size < 3 && rng.gen_bool(0.6) {
                *size += 1;
                return Some(tablet.clone());
            }
            self.open = None;
        }
        if rng.gen_bool(0.08) {
            let tablet = format!("tab-{}", &person.person_id[1..]);
            self.open = Some((tablet.clone(), 1));
            return Some(tablet);
        }
        None
    }
}

/// Publishes some events late: one in 25 by up to half an hour (reordered
/// within the engine's buffer), one in 100 by up to half a day (after later
/// events of the same person).
pub(crate) fn delay(rng: &mut StdRng, events: &mut [SimEvent]) {
    for e in events {
        let r: f64 = rng.gen();
        e.late_ms = if r < 0.01 {
            rng.gen_range(1..=12) * 60 * MINUTE
        } else if r < 0.05 {
            rng.gen_range(1..=30) * MINUTE
        } else {
            0
        };
    }
}

impl Gen<'_> {
    /// The harder mix's segments' journeys, from `t` to the end of the span.
    pub(crate) fn harder_journey(&mut self, cfg: &SimConfig, mut t: i64) {
        let span = i64::from(cfg.days) * DAY;
        let end = cfg.start_ms + span;
        match self.person.segment {
            Segment::Seasonal => {
                // Two seasons: bursts of visits around each peak, quiet between.
                for peak in [cfg.start_ms + span / 6, cfg.start_ms + span * 5 / 6] {
                    let mut s = peak - 7 * DAY + self.rng.gen_range(0..DAY);
                    while s < peak + 7 * DAY && s < end {
                        self.visit(s, true);
                        s += self.rng.gen_range(1..5) * DAY;
                    }
                }
            }
            Segment::Irregular => {
                while t < end {
                    self.visit(t, true);
                    let gap = if self.rng.gen_bool(0.3) { 20..60 } else { 2..15 };
                    t += self.rng.gen_range(gap) * DAY + self.rng.gen_range(0..DAY);
                }
            }
            Segment::LongGapLoyal => {
                t = cfg.start_ms + self.rng.gen_range(0..(span / 10).max(1));
                while t < end {
                    self.visit(t, true);
                    self.visit(t + DAY, true);
                    t += self.rng.gen_range(30..70) * DAY;
                }
            }
            Segment::LastBuyChurner => {
                let quiet_from = cfg.start_ms + span * self.rng.gen_range(35..55) / 100;
                while t < quiet_from {
                    self.visit(t, true);
                    t += self.rng.gen_range(4..12) * DAY;
                }
                // One more purchase, then silence.
                self.store_sale(t);
                self.web_visit(t + DAY, true);
            }
            Segment::StayingComplainer => {
                let mut n = 0;
                while t < end {
                    self.visit(t, true);
                    n += 1;
                    if n % 3 == 0 {
                        let csat = self.rng.gen_range(1..=2);
                        self.call(t + DAY, "complaint", "unresolved", Some(csat), -0.6);
                    }
                    t += self.rng.gen_range(4..12) * DAY;
                }
            }
            _ => {}
        }
    }
}
