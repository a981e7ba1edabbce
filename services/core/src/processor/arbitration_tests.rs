//! Arbitration that measures itself, on the pure pipeline: exploration that
//! replays identically, learning that moves the choice, the holdout and the
//! conversions that measure uplift.

use serde_json::json;

use super::*;
use crate::ids::Namespaces;
use crate::output::{NextBestAction, Output};
use crate::testkit::{call, exploring_config, pos};

fn processor(holdout_share: f64) -> Processor {
    let mut cfg = exploring_config();
    cfg.decide.holdout_share = holdout_share;
    let ns = Arc::new(Namespaces::with_defaults());
    Processor::new(Arc::new(cfg), Arc::new(State::new(ns)))
}

fn actions(outs: Vec<Output>) -> Vec<NextBestAction> {
    outs.into_iter()
        .filter_map(|o| match o {
            Output::Action(a) => Some(a),
            _ => None,
        })
        .collect()
}

/// A complaint from each of `n` e-mail-only customers `from` on: the
/// `service_issue` trigger, whose candidates are `service_recovery` (a call
/// back, here by e-mail) and `apology_email`.
fn complaints(from: usize, n: usize, minute: i64) -> Vec<ChannelEvent> {
    (from..from + n)
        .map(|i| {
            let ids = json!({"email": format!("c{i}@x.com")});
            call(&format!("k{i}"), minute, ids, "complaint", "unresolved")
        })
        .collect()
}

fn decide_all(p: &mut Processor, events: &[ChannelEvent]) -> Vec<NextBestAction> {
    actions(events.iter().flat_map(|e| p.process(e, 0).unwrap().outputs).collect())
}

fn share(of: &str, sent: &[NextBestAction]) -> f64 {
    sent.iter().filter(|a| a.action == of).count() as f64 / sent.len() as f64
}

#[test]
fn exploration_replays_identically_and_learning_moves_the_choice() {
    let mut p = processor(0.0);
    let first = decide_all(&mut p, &complaints(0, 200, 0));
    assert_eq!(first.len(), 200, "every complaint gets a decision");
    let before = share("apology_email", &first);
    // Exploration: the second-ranked action is tried, but less often.
    assert!(before > 0.05 && before < 0.5, "apology_email share {before}");
    // A replay of the same events decides exactly the same.
    let mut again = processor(0.0);
    let replayed = decide_all(&mut again, &complaints(0, 200, 0));
    let ids = |v: &[NextBestAction]| {
        v.iter()
            .map(|a| (a.action_id.clone(), a.action.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&first), ids(&replayed));

    // Outcomes favour the second-ranked action: apologies convert, call backs do not.
    for a in &first {
        let outcome = if a.action == "apology_email" {
            "converted"
        } else {
            "delivered"
        };
        let o = ActionOutcome {
            action_id: a.action_id.clone(),
            one_id: a.one_id.to_string(),
            outcome: serde_json::from_value(json!(outcome)).unwrap(),
            at: crate::testkit::at(60),
        };
        assert_eq!(p.outcome(&o), OutcomeEffect::Learned);
    }
    let after = decide_all(&mut p, &complaints(1000, 200, 120));
    let moved = share("apology_email", &after);
    assert!(moved > 0.9, "apology_email share {before} -> {moved}");
    let reports = p.state().action_reports(&p.cfg.decide);
    let report = |name: &str| reports.iter().find(|r| r.action == name).unwrap().clone();
    assert!(report("apology_email").posterior_mean > 0.8);
    assert!(report("service_recovery").posterior_mean < 0.1);
    assert_eq!(report("service_recovery").sent + report("apology_email").sent, 400);
}

#[test]
fn the_holdout_is_withheld_recorded_and_measured() {
    let n = 2000;
    let share = 0.1;
    let mut p = processor(share);
    let sent = decide_all(&mut p, &complaints(0, n, 0));
    let reports = p.state().action_reports(&p.cfg.decide);
    let (treated, held): (u64, u64) = reports
        .iter()
        .filter(|r| r.trigger == crate::decide::Trigger::ServiceIssue)
        .fold((0, 0), |(t, h), r| (t + r.sent, h + r.held_out));
    assert_eq!(treated as usize, sent.len(), "every published decision counted as sent");
    assert_eq!(
        (treated + held) as usize,
        n,
        "every eligible decision is sent or held out"
    );
    // Binomial(2000, 0.1): mean 200, sd 13.4; five sd either side.
    let sd = (n as f64 * share * (1.0 - share)).sqrt();
    assert!((held as f64 - n as f64 * share).abs() < 5.0 * sd, "{held} held out");
    // Held out: recorded on the profile, never published, no contact.
    let published: std::collections::HashSet<String> = sent.iter().map(|a| a.action_id.clone()).collect();
    let mut recorded = 0;
    for (_, j) in p.state().all_journeys() {
        for r in j.recent_actions.iter().filter(|r| r.held_out) {
            recorded += 1;
            assert!(!published.contains(&r.action_id));
            assert!(j.contacts.is_empty(), "no contact for a held-out decision");
        }
    }
    assert_eq!(recorded, held);

    // Half the customers buy a day later (within the 14-day window), in both groups.
    let day = 24 * 60;
    for i in (0..n).step_by(2) {
        let ids = json!({"email": format!("c{i}@x.com")});
        p.process(&pos(&format!("p{i}"), day, ids, 40.0), 0).unwrap();
    }
    // A second purchase does not convert anything twice.
    p.process(&pos("again", day + 1, json!({"email": "c0@x.com"}), 40.0), 0)
        .unwrap();
    let reports = p.state().action_reports(&p.cfg.decide);
    let conversions: u64 = reports
        .iter()
        .map(|r| r.conversions_sent + r.conversions_held_out)
        .sum();
    assert_eq!(conversions as usize, n / 2);
    let recovery = reports.iter().find(|r| r.action == "service_recovery").unwrap();
    let (rs, rh) = (recovery.rate_sent.unwrap(), recovery.rate_held_out.unwrap());
    assert!((rs - 0.5).abs() < 0.1 && (rh - 0.5).abs() < 0.2, "{rs} {rh}");
    let (low, high) = (recovery.uplift_ci_low.unwrap(), recovery.uplift_ci_high.unwrap());
    assert!(low < recovery.uplift.unwrap() && recovery.uplift.unwrap() < high);
}

#[test]
fn a_purchase_after_the_window_is_not_a_conversion() {
    let mut p = processor(0.0);
    decide_all(&mut p, &complaints(0, 1, 0));
    let day = 24 * 60;
    p.process(&pos("late", 15 * day, json!({"email": "c0@x.com"}), 40.0), 0)
        .unwrap();
    let reports = p.state().action_reports(&p.cfg.decide);
    let service = || {
        reports
            .iter()
            .filter(|r| r.trigger == crate::decide::Trigger::ServiceIssue)
    };
    assert_eq!(service().map(|r| r.sent).sum::<u64>(), 1);
    assert_eq!(service().map(|r| r.conversions_sent).sum::<u64>(), 0);
}

#[test]
fn the_models_survive_a_snapshot() {
    let mut p = processor(0.5);
    decide_all(&mut p, &complaints(0, 50, 0));
    let before = p.state().action_reports(&p.cfg.decide);
    let bytes = rmp_serde::to_vec(&p.snapshot()).unwrap();
    let snap: CoreSnapshot = rmp_serde::from_slice(&bytes).unwrap();
    let mut q = processor(0.5);
    q.restore(snap, 0).unwrap();
    assert_eq!(q.state().action_reports(&q.cfg.decide), before);
    assert!(before.iter().any(|r| r.held_out > 0));
}
