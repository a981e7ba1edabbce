//! The scaleout figures of issue 15 (`scaleout_off_x1`, `scaleout_x1..3`,
//! their CPU per 1,000 events, `identity_log_ceiling`), measured against a
//! real broker with a small backlog: one, two and three engine instances of
//! one group with the scale-out settings on each apply exactly the events
//! one instance with them off applies, and every figure has a value.
//!
//! Needs the broker `make test` starts (`ONEJOURNEY_TEST_BROKERS`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use onejourney_bench::broker::scaleout;
use onejourney_bench::simulate;
use onejourney_engine::config::Settings;

#[test]
fn one_two_and_three_instances_apply_what_one_applies() {
    let brokers = std::env::var("ONEJOURNEY_TEST_BROKERS")
        .expect("ONEJOURNEY_TEST_BROKERS is not set: run `make test` (it starts a tansu broker)");
    let mut s = Settings::defaults().unwrap();
    s.kafka.brokers = brokers;
    let backlog = simulate(1_500, false);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let f = runtime.block_on(scaleout::measure(&s, &backlog)).unwrap();
    let runs: Vec<_> = f
        .runs
        .iter()
        .map(|r| (r.instances, r.routed, r.applied, r.rate, r.cpu_per_1k))
        .collect();
    eprintln!(
        "runs (instances, scale-out on, applied, events/s, CPU-s per 1k): {runs:?}; identity log {:.0}/s produced, {:.0}/s folded",
        f.log_produce, f.log_fold
    );
    let base = &f.runs[0];
    assert!(!base.routed);
    assert!(base.applied > 1_000, "{} applied of 1,500", base.applied);
    assert_eq!(
        f.runs[1..].iter().map(|r| (r.instances, r.routed)).collect::<Vec<_>>(),
        vec![(1, true), (2, true), (3, true)]
    );
    for r in &f.runs[1..] {
        assert_eq!(r.applied, base.applied, "{} instance(s) applied", r.instances);
    }
    for r in &f.runs {
        assert!(r.rate.is_finite() && r.rate > 0.0, "{runs:?}");
        assert!(r.cpu_per_1k.is_finite() && r.cpu_per_1k > 0.0, "{runs:?}");
        assert!(r.idle_cpu.is_finite() && r.idle_cpu >= 0.0, "{runs:?}");
    }
    assert!(f.log_produce > 0.0 && f.log_fold > 0.0);
}
