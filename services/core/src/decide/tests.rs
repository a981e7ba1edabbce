use serde_json::json;

use super::*;
use crate::journey::{Band, Journey, RecentAction};
use crate::testkit::{call, default_decide, pos, product, t, web};

fn all_reach() -> Reach {
    Reach {
        email: true,
        push: true,
        sms: true,
        web: true,
        store: true,
        call_center: true,
    }
}

fn with_cart(value: f64) -> Journey {
    let mut j = Journey::default();
    j.apply(&web(
        "1",
        0,
        json!({"cookie_id": "c"}),
        "add_to_cart",
        product("a", value),
    ));
    j
}

#[test]
fn cart_recovery_waits_for_the_abandonment_time() {
    let cfg = default_decide();
    let j = with_cart(80.0);
    assert!(decide(&cfg, &j, &all_reach(), &[Trigger::CartAbandoned], t(29))
        .choice
        .is_none());
    let c = decide(&cfg, &j, &all_reach(), &[Trigger::CartAbandoned], t(30))
        .choice
        .unwrap();
    assert_eq!((c.action.as_str(), c.channel), ("cart_recovery", ContactChannel::Email));
    assert!(c.factors.iter().any(|f| f.name == "cart_value" && f.value == 80.0));
    assert!(c.reason.contains("80.00"), "{}", c.reason);
}

#[test]
fn cart_recovery_needs_a_cart_worth_it_and_a_reachable_channel() {
    let cfg = default_decide();
    assert!(
        decide(&cfg, &with_cart(0.5), &all_reach(), &[Trigger::CartAbandoned], t(60))
            .choice
            .is_none()
    );
    assert!(decide(
        &cfg,
        &Journey::default(),
        &all_reach(),
        &[Trigger::CartAbandoned],
        t(60)
    )
    .choice
    .is_none());
    let push_only = Reach {
        push: true,
        ..Reach::default()
    };
    let c = decide(&cfg, &with_cart(50.0), &push_only, &[Trigger::CartAbandoned], t(60))
        .choice
        .unwrap();
    assert_eq!(c.channel, ContactChannel::Push);
    let sms_only = Reach {
        sms: true,
        ..Reach::default()
    };
    let d = decide(&cfg, &with_cart(50.0), &sms_only, &[Trigger::CartAbandoned], t(60));
    assert!(d.choice.is_none());
    assert_eq!(
        d.suppressed,
        vec![("cart_recovery".to_string(), Suppressed::Unreachable)]
    );
}

#[test]
fn cool_down_holds_then_expires() {
    let cfg = default_decide();
    let mut j = with_cart(50.0);
    j.record_action(RecentAction {
        action_id: "x".into(),
        action: "cart_recovery".into(),
        channel: "email".into(),
        reason: "r".into(),
        decided_at: t(30),
    });
    let held = decide(&cfg, &j, &all_reach(), &[Trigger::CartAbandoned], t(60));
    assert!(held.choice.is_none());
    assert_eq!(
        held.suppressed,
        vec![("cart_recovery".to_string(), Suppressed::Cooldown)]
    );
    assert!(
        decide(&cfg, &j, &all_reach(), &[Trigger::CartAbandoned], t(30 + 24 * 60))
            .choice
            .is_some()
    );
}

#[test]
fn post_purchase_follows_a_purchase_only() {
    let cfg = default_decide();
    let mut j = Journey::default();
    j.apply(&pos("1", 0, json!({"loyalty_id": "L"}), 30.0));
    let c = decide(&cfg, &j, &all_reach(), &[Trigger::Purchased], t(0))
        .choice
        .unwrap();
    assert_eq!(c.action, "post_purchase_follow_up");
    assert!(decide(&cfg, &j, &all_reach(), &[Trigger::ServiceIssue], t(0))
        .choice
        .is_none_or(|c| c.action != "post_purchase_follow_up"));
}

#[test]
fn service_recovery_prefers_the_call_center() {
    let cfg = default_decide();
    let mut j = Journey::default();
    j.apply(&call("1", 0, json!({"customer_id": "C"}), "complaint", "unresolved"));
    let c = decide(&cfg, &j, &all_reach(), &[Trigger::ServiceIssue], t(0))
        .choice
        .unwrap();
    assert_eq!(
        (c.action.as_str(), c.channel),
        ("service_recovery", ContactChannel::CallCenter)
    );
    let email_only = Reach {
        email: true,
        ..Reach::default()
    };
    assert_eq!(
        decide(&cfg, &j, &email_only, &[Trigger::ServiceIssue], t(0))
            .choice
            .unwrap()
            .channel,
        ContactChannel::Email
    );
}

#[test]
fn win_back_only_for_customers_quiet_long_enough() {
    let cfg = default_decide();
    let mut j = Journey::default();
    assert!(
        decide(&cfg, &j, &all_reach(), &[Trigger::Lapsed], t(0))
            .choice
            .is_none(),
        "never bought"
    );
    j.apply(&pos("1", 0, json!({"loyalty_id": "L"}), 30.0));
    let day = 24 * 60;
    assert!(decide(&cfg, &j, &all_reach(), &[Trigger::Lapsed], t(59 * day))
        .choice
        .is_none());
    let c = decide(&cfg, &j, &all_reach(), &[Trigger::Lapsed], t(60 * day))
        .choice
        .unwrap();
    assert_eq!(c.action, "win_back");
}

#[test]
fn arbitration_picks_the_highest_score_and_names_what_it_beat() {
    let cfg = default_decide();
    let mut j = with_cart(200.0);
    j.apply(&call("2", 1, json!({"customer_id": "C"}), "complaint", "unresolved"));
    let c = decide(
        &cfg,
        &j,
        &all_reach(),
        &[Trigger::CartAbandoned, Trigger::ServiceIssue],
        t(60),
    )
    .choice
    .unwrap();
    // cart: 0.75 * min(0.6 + 200/250, 1.25) = 0.94; service: 0.7 * (1 + 0.15 * 2) = 0.91
    assert_eq!(c.action, "cart_recovery");
    assert!(c.reason.contains("chosen over service_recovery (0.91)"), "{}", c.reason);
}

#[test]
fn complaints_and_a_cancel_request_without_purchases_score_high() {
    let cfg = default_decide();
    let mut j = Journey::default();
    j.apply(&call("1", 0, json!({"customer_id": "C"}), "complaint", "unresolved"));
    j.apply(&call("2", 1, json!({"customer_id": "C"}), "complaint", "escalated"));
    j.apply(&call(
        "3",
        2,
        json!({"customer_id": "C"}),
        "cancel_request",
        "unresolved",
    ));
    let s = churn::score(&cfg.churn, &j, t(3));
    assert_eq!(cfg.churn.band(s.score, None), Band::High, "{}", s.score);
    let sum: f64 = s.factors.iter().map(|f| f.contribution).sum();
    assert!((sum - s.score).abs() < 0.05, "contributions {sum} vs score {}", s.score);
    assert!(s
        .factors
        .iter()
        .any(|f| f.name == "cancel_requests" && f.contribution > 0.0));
}

#[test]
fn a_happy_recent_customer_scores_low_and_quiet_ones_rise() {
    let cfg = default_decide();
    let mut j = Journey::default();
    j.apply(&pos("1", 0, json!({"loyalty_id": "L"}), 30.0));
    let day = 24 * 60;
    let now = churn::score(&cfg.churn, &j, t(1));
    let later = churn::score(&cfg.churn, &j, t(100 * day));
    assert_eq!(cfg.churn.band(now.score, None), Band::Low);
    assert!(later.score > now.score);
    assert_eq!(cfg.churn.band(later.score, None), Band::High, "{}", later.score);
}

#[test]
fn bands_have_hysteresis() {
    let c = default_decide().churn;
    assert_eq!(c.band(0.71, None), Band::High);
    assert_eq!(c.band(0.68, Some(Band::High)), Band::High, "within hysteresis");
    assert_eq!(c.band(0.64, Some(Band::High)), Band::Medium);
    assert_eq!(c.band(0.68, Some(Band::Low)), Band::Medium);
    assert_eq!(c.band(0.1, Some(Band::High)), Band::Low);
}

#[test]
fn invalid_catalogs_are_refused() {
    let mut cfg = default_decide();
    cfg.actions[1].name = cfg.actions[0].name.clone();
    assert!(cfg.validate().is_err());
    let mut cfg = default_decide();
    cfg.actions[0].channels.clear();
    assert!(cfg.validate().is_err());
    let mut cfg = default_decide();
    cfg.churn.high = 0.3;
    assert!(cfg.validate().is_err());
}
