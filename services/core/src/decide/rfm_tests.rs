//! Tests of the RFM quintiles: known populations, monotone scores, merging.

use proptest::prelude::*;

use super::*;

fn key(r: i64, f: i64, m: i64) -> RfmKey {
    RfmKey {
        recency_day: r,
        frequency: f,
        monetary: m,
    }
}

fn population(keys: &[RfmKey]) -> RfmQuantiles {
    let mut q = RfmQuantiles::default();
    for k in keys {
        q.add(*k);
    }
    q.recompute();
    q
}

#[test]
fn quintiles_of_one_to_a_hundred_are_twenties() {
    let keys: Vec<RfmKey> = (1..=100).map(|v| key(v, v, v)).collect();
    let mut q = population(&keys);
    for v in 1..=100i64 {
        let want = 1 + ((v - 1) / 20) as u8;
        assert_eq!(
            q.score(key(v, v, v)),
            Rfm {
                r: want,
                f: want,
                m: want
            },
            "value {v}"
        );
    }
}

#[test]
fn ties_share_the_lower_score() {
    // 60 one-time buyers, 20 with two purchases, 20 with ten.
    let mut keys: Vec<RfmKey> = (0..60).map(|_| key(0, 1, 0)).collect();
    keys.extend((0..20).map(|_| key(0, 2, 0)));
    keys.extend((0..20).map(|_| key(0, 10, 0)));
    let mut q = population(&keys);
    assert_eq!(q.score(key(0, 1, 0)).f, 1);
    assert_eq!(q.score(key(0, 2, 0)).f, 4);
    assert_eq!(q.score(key(0, 10, 0)).f, 5);
    // Everyone on the same day: all recency scores are 1.
    assert_eq!(q.score(key(0, 10, 0)).r, 1);
}

#[test]
fn removing_restores_the_distribution() {
    let keys: Vec<RfmKey> = (1..=50).map(|v| key(v, v % 7, v * 3)).collect();
    let before = population(&keys);
    let mut q = population(&keys);
    q.update(Some(keys[3]), Some(key(999, 999, 999)));
    q.update(Some(key(999, 999, 999)), Some(keys[3]));
    q.recompute();
    assert_eq!(q.recency, before.recency);
    assert_eq!(q.frequency, before.frequency);
    assert_eq!(q.monetary, before.monetary);
}

#[test]
fn a_journey_without_purchases_has_no_key() {
    let j = Journey::default();
    assert_eq!(RfmKey::of(&j), None);
}

#[test]
fn monetary_buckets_grow_with_revenue() {
    assert_eq!(monetary_bucket(0.5), 0);
    assert!(monetary_bucket(10.0) < monetary_bucket(20.0));
    assert_eq!(monetary_bucket(f64::NAN), 0);
}

proptest! {
    #[test]
    fn scores_are_one_to_five_and_monotone(
        pop in prop::collection::vec((0i64..400, 1i64..40, 0i64..80), 1..200),
        a in (0i64..400, 1i64..40, 0i64..80),
        b in (0i64..400, 1i64..40, 0i64..80),
    ) {
        let keys: Vec<RfmKey> = pop.iter().map(|&(r, f, m)| key(r, f, m)).collect();
        let mut q = population(&keys);
        let (lo, hi) = (key(a.0.min(b.0), a.1.min(b.1), a.2.min(b.2)), key(a.0.max(b.0), a.1.max(b.1), a.2.max(b.2)));
        let (s_lo, s_hi) = (q.score(lo), q.score(hi));
        for s in [s_lo, s_hi] {
            for v in [s.r, s.f, s.m] {
                prop_assert!((1..=5).contains(&v));
            }
        }
        prop_assert!(s_lo.r <= s_hi.r && s_lo.f <= s_hi.f && s_lo.m <= s_hi.m);
    }

    #[test]
    fn merging_two_partitions_equals_one_population(
        left in prop::collection::vec((0i64..400, 1i64..40, 0i64..80), 0..100),
        right in prop::collection::vec((0i64..400, 1i64..40, 0i64..80), 0..100),
        probe in (0i64..400, 1i64..40, 0i64..80),
    ) {
        let l: Vec<RfmKey> = left.iter().map(|&(r, f, m)| key(r, f, m)).collect();
        let r: Vec<RfmKey> = right.iter().map(|&(r, f, m)| key(r, f, m)).collect();
        let mut merged = population(&l);
        merged.merge(&population(&r));
        let mut whole = population(&[l, r].concat());
        let p = key(probe.0, probe.1, probe.2);
        prop_assert_eq!(merged.score(p), whole.score(p));
        prop_assert_eq!(merged.frequency.total(), whole.frequency.total());
    }

    #[test]
    fn each_score_holds_about_a_fifth_of_distinct_values(n in 5usize..300) {
        // Distinct values: score k holds the values ranked in its fifth.
        let keys: Vec<RfmKey> = (0..n as i64).map(|v| key(v, v, v)).collect();
        let mut q = population(&keys);
        for (i, k) in keys.iter().enumerate() {
            let want = 1 + (5 * i / n) as u8;
            prop_assert_eq!(q.score(*k).r, want);
        }
    }
}
