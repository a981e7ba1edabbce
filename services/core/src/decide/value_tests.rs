//! Tests of the value population: refit parameters, CLV shape, merging.

use proptest::prelude::*;

use super::*;

const DAY: i64 = 86_400_000;

fn buyer(purchases: u32, revenue: f64, first_day: i64, last_day: i64) -> Journey {
    Journey {
        first_seen: Some(EventTime(first_day * DAY)),
        last_seen: Some(EventTime(last_day * DAY)),
        last_purchase: Some(EventTime(last_day * DAY)),
        purchases,
        revenue,
        ..Journey::default()
    }
}

fn population(journeys: &[Journey]) -> Population {
    let mut p = Population::default();
    for j in journeys {
        p.update(None, ValueKey::of(j));
    }
    p.refit();
    p.rfm.recompute();
    p
}

#[test]
fn parameters_are_the_pooled_rate_and_mean_order_value() {
    // 10 purchases over 100 days and 30 over 100 days; revenue 400 + 1200.
    let mut p = population(&[buyer(10, 400.0, 0, 100), buyer(30, 1200.0, 0, 100)]);
    let (rate, aov) = p.parameters();
    assert!((rate - 0.2).abs() < 1e-9, "rate {rate}");
    assert!((aov - 40.0).abs() < 1e-9, "aov {aov}");
    assert_eq!(p.buyers(), 2);
}

#[test]
fn clv_of_a_typical_customer_is_rate_times_horizon_times_order_value() {
    let pop: Vec<Journey> = (0..10).map(|_| buyer(10, 500.0, 0, 100)).collect();
    let mut p = population(&pop);
    let cfg = ValueConfig::default();
    let c = p.clv(&cfg, &pop[0], EventTime(100 * DAY)).expect("a buyer has a CLV");
    // rate 0.1/day, aov 50, no churn risk: 36.5 purchases x 50 over a year.
    assert!((c.expected_purchases - 36.5).abs() < 1e-6, "{c:?}");
    assert!((c.order_value - 50.0).abs() < 1e-9);
    assert!((c.value - 1825.0).abs() < 1e-3);
    assert!(p.clv(&cfg, &Journey::default(), EventTime(0)).is_none());
}

#[test]
fn one_big_order_is_shrunk_toward_the_population_mean() {
    let mut pop: Vec<Journey> = (0..20).map(|_| buyer(4, 200.0, 0, 100)).collect();
    pop.push(buyer(1, 1000.0, 99, 100));
    let mut p = population(&pop);
    let c = p
        .clv(&ValueConfig::default(), &pop[20], EventTime(100 * DAY))
        .expect("buyer");
    let (_, pop_aov) = p.parameters();
    assert!(c.order_value < 1000.0 && c.order_value > pop_aov, "{c:?} vs {pop_aov}");
}

#[test]
fn churn_risk_lowers_the_value() {
    let pop: Vec<Journey> = (0..10).map(|_| buyer(5, 250.0, 0, 50)).collect();
    let mut p = population(&pop);
    let mut risky = pop[0].clone();
    risky.churn.score = 0.8;
    let cfg = ValueConfig::default();
    let safe = p.clv(&cfg, &pop[0], EventTime(60 * DAY)).expect("buyer");
    let at_risk = p.clv(&cfg, &risky, EventTime(60 * DAY)).expect("buyer");
    assert!((at_risk.p_active - 0.2).abs() < 1e-9);
    assert!(at_risk.value < safe.value);
}

#[test]
fn removing_a_customer_restores_the_sums() {
    let a = buyer(3, 90.0, 0, 30);
    let b = buyer(7, 700.0, 10, 80);
    let mut one = population(std::slice::from_ref(&a));
    let mut two = population(&[a, b.clone()]);
    two.update(ValueKey::of(&b), None);
    two.refit();
    assert_eq!(one.parameters(), two.parameters());
    assert_eq!(two.buyers(), 1);
}

proptest! {
    #[test]
    fn clv_grows_with_purchases_and_revenue(
        pop in prop::collection::vec((1u32..30, 1.0f64..2000.0, 0i64..300), 1..50),
        n in 1u32..30, extra in 0u32..10, revenue in 1.0f64..2000.0, churn in 0.0f64..1.0,
    ) {
        let journeys: Vec<Journey> = pop.iter().map(|&(n, r, d)| buyer(n, r, 0, d)).collect();
        let mut p = population(&journeys);
        let cfg = ValueConfig::default();
        let now = EventTime(400 * DAY);
        let mut lo = buyer(n, revenue, 0, 200);
        lo.churn.score = churn;
        let mut hi = buyer(n + extra, revenue * 1.5, 0, 200);
        hi.churn.score = churn;
        let (a, b) = (p.clv(&cfg, &lo, now).expect("buyer"), p.clv(&cfg, &hi, now).expect("buyer"));
        prop_assert!(a.value.is_finite() && a.value >= 0.0);
        prop_assert!(b.expected_purchases >= a.expected_purchases);
        prop_assert!((0.0..=1.0).contains(&a.p_active));
    }

    #[test]
    fn merged_partitions_refit_like_one_population(
        left in prop::collection::vec((1u32..30, 1.0f64..2000.0, 0i64..300), 0..30),
        right in prop::collection::vec((1u32..30, 1.0f64..2000.0, 0i64..300), 0..30),
    ) {
        let l: Vec<Journey> = left.iter().map(|&(n, r, d)| buyer(n, r, 0, d)).collect();
        let r: Vec<Journey> = right.iter().map(|&(n, r, d)| buyer(n, r, 0, d)).collect();
        let mut merged = population(&l);
        merged.merge(&population(&r));
        let mut whole = population(&[l, r].concat());
        let (m, w) = (merged.parameters(), whole.parameters());
        prop_assert!((m.0 - w.0).abs() < 1e-9 * (1.0 + w.0) && (m.1 - w.1).abs() < 1e-6 * (1.0 + w.1));
        prop_assert_eq!(merged.buyers(), whole.buyers());
    }
}
