//! The journey's churn history: the last evaluations of the churn score with
//! each factor's contribution, for the "why" chart of the Customer 360 page.
//!
//! In: each churn evaluation ([`Journey::record_churn_of`]: time, score,
//! band, factors) and, on a merge, the absorbed journey's history
//! ([`Journey::record_churn`] for each of its points). Out: at most
//! [`CHURN_HISTORY`] [`ChurnPoint`]s in `churn.history`, oldest first.
//!
//! What it keeps, and why so little: an evaluation runs on every event and
//! timer, so most of them repeat the one before. A point is kept only when its
//! band or its score (by at least [`CHURN_STEP`]) differs from the point
//! before it in time; only the factors that contributed are kept, as `f32`. The history
//! is sorted by time whatever the order evaluations arrive in, bounded (the
//! oldest go first), and counted in the memory estimate
//! ([`Journey::churn_history_bytes`]).

use super::parts::{ChurnPoint, Contribution, Factor};
use super::Journey;
use crate::time::EventTime;
use crate::vocab::Band;

/// How many churn evaluations a journey keeps.
pub const CHURN_HISTORY: usize = 12;
/// A score closer than this to the point before it (same band) is not kept.
pub const CHURN_STEP: f64 = 0.01;

impl ChurnPoint {
    /// A point from an evaluation: the non-zero contributions only.
    pub fn of(at: EventTime, score: f64, band: Option<Band>, factors: &[Factor]) -> Self {
        ChurnPoint {
            at,
            score,
            band,
            contributions: factors
                .iter()
                .filter(|f| f.contribution != 0.0)
                .map(|f| Contribution {
                    name: f.name,
                    contribution: f.contribution as f32,
                })
                .collect(),
        }
    }

    fn repeats(&self, score: f64, band: Option<Band>) -> bool {
        self.band == band && (self.score - score).abs() < CHURN_STEP
    }
}

impl Journey {
    /// Keeps one churn evaluation in the history, unless it repeats the
    /// point before it in time.
    pub fn record_churn(&mut self, point: ChurnPoint) {
        if let Some(pos) = self.churn_place(point.at, point.score, point.band) {
            self.churn.history.keep_at(pos, point, CHURN_HISTORY);
        }
    }

    /// As [`Journey::record_churn`] with the point of an evaluation
    /// ([`ChurnPoint::of`]), built only when it is kept: most evaluations
    /// repeat the point before them, and building one allocates.
    pub fn record_churn_of(&mut self, at: EventTime, score: f64, band: Option<Band>, factors: &[Factor]) {
        if let Some(pos) = self.churn_place(at, score, band) {
            let point = ChurnPoint::of(at, score, band, factors);
            self.churn.history.keep_at(pos, point, CHURN_HISTORY);
        }
    }

    /// Where a point at `at` goes in the history; `None` when it repeats
    /// the point before it in time.
    fn churn_place(&self, at: EventTime, score: f64, band: Option<Band>) -> Option<usize> {
        let h = &self.churn.history;
        let pos = h.partition_point(|p| p.at <= at);
        (pos == 0 || !h[pos - 1].repeats(score, band)).then_some(pos)
    }

    /// Takes the absorbed journey's churn history into this one (a merge).
    pub(super) fn absorb_churn(&mut self, other: impl IntoIterator<Item = ChurnPoint>) {
        for p in other {
            self.record_churn(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::mem::size_of;

    use super::*;
    use crate::vocab::FactorName;

    fn at(minutes: i64) -> EventTime {
        EventTime::from_millis(1_790_000_000_000 + minutes * 60_000)
    }

    fn point(minutes: i64, score: f64, band: Option<Band>) -> ChurnPoint {
        let factors = [
            Factor {
                name: FactorName::Complaints30d,
                value: 1.0,
                contribution: score,
            },
            Factor {
                name: FactorName::Returns,
                value: 0.0,
                contribution: 0.0,
            },
        ];
        ChurnPoint::of(at(minutes), score, band, &factors)
    }

    #[test]
    fn an_evaluation_recorded_with_its_parts_keeps_what_its_point_keeps() {
        let factors = |score| {
            [Factor {
                name: FactorName::Returns,
                value: 2.0,
                contribution: score,
            }]
        };
        let steps = [
            (10, 0.30, Some(Band::Low)),
            (5, 0.10, None),
            (11, 0.305, Some(Band::Low)),
            (11, 0.305, Some(Band::Medium)),
            (12, 0.45, Some(Band::Medium)),
            (3, 0.10, None),
            (12, 0.451, Some(Band::Medium)),
        ];
        let (mut by_point, mut by_parts) = (Journey::default(), Journey::default());
        for i in 0..40 {
            let (m, score, band) = steps[i % steps.len()];
            let m = m + 7 * (i / steps.len()) as i64;
            by_point.record_churn(ChurnPoint::of(at(m), score, band, &factors(score)));
            by_parts.record_churn_of(at(m), score, band, &factors(score));
        }
        assert_eq!(*by_parts.churn.history, *by_point.churn.history);
        assert_eq!(
            by_parts.churn.history.len(),
            CHURN_HISTORY,
            "bounded, and repeats left out"
        );
    }

    #[test]
    fn keeps_changes_in_time_order_bounded_and_without_repeats() {
        let mut j = Journey::default();
        j.record_churn(point(10, 0.30, Some(Band::Low)));
        j.record_churn(point(5, 0.10, None));
        j.record_churn(point(11, 0.301, Some(Band::Low)));
        j.record_churn(point(12, 0.45, Some(Band::Medium)));
        let got: Vec<(EventTime, f64)> = j.churn.history.iter().map(|p| (p.at, p.score)).collect();
        assert_eq!(
            got,
            [(at(5), 0.10), (at(10), 0.30), (at(12), 0.45)],
            "a repeat is not kept"
        );
        assert_eq!(
            *j.churn.history[0].contributions,
            [Contribution {
                name: FactorName::Complaints30d,
                contribution: 0.10
            }],
            "only the factors that contributed"
        );

        for i in 0..(CHURN_HISTORY as i64 + 4) {
            j.record_churn(point(100 + i, 0.05 * (i % 2) as f64 + 0.5, Some(Band::Medium)));
        }
        assert_eq!(j.churn.history.len(), CHURN_HISTORY);
        assert!(j.churn.history.iter().all(|p| p.at >= at(100)), "the oldest go first");
        assert!(j
            .churn
            .history
            .iter()
            .zip(j.churn.history.iter().skip(1))
            .all(|(a, b)| a.at <= b.at));
        assert!(j.churn_history_bytes() >= CHURN_HISTORY * size_of::<ChurnPoint>());
    }

    #[test]
    fn a_merge_interleaves_both_histories_and_compaction_drops_them() {
        let mut a = Journey::default();
        a.record_churn(point(1, 0.1, None));
        a.record_churn(point(3, 0.3, None));
        let mut b = Journey::default();
        b.record_churn(point(2, 0.2, None));
        a.absorb(b);
        let got: Vec<f64> = a.churn.history.iter().map(|p| p.score).collect();
        assert_eq!(got, [0.1, 0.2, 0.3]);
        assert!(a.compact());
        assert!(a.churn.history.is_empty());
    }

    #[test]
    fn journeys_saved_before_the_churn_history_existed_still_load() {
        let mut j = Journey::default();
        j.churn.score = 0.5;
        // The churn state as a snapshot wrote it: a MessagePack array one field shorter.
        let mut bytes = rmp_serde::to_vec(&j.churn).unwrap();
        assert_eq!(bytes.pop(), Some(0x90), "an empty history ends the record");
        assert_eq!(bytes[0] & 0xf0, 0x90);
        bytes[0] -= 1;
        let back: super::super::ChurnState = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back, j.churn);
    }
}
