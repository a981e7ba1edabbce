use serde_json::json;

use super::*;
use crate::journey::{Band, Journey, RecentAction, Tier};
use crate::testkit::{call, default_decide, pos, product, t, web};
use crate::time::EventTime;

/// Arbitration with the catalog's propensities (nothing learned yet).
fn run(cfg: &DecideConfig, j: &Journey, reach: &Reach, triggers: &[Trigger], now: EventTime) -> Decision {
    decide(cfg, j, reach, triggers, now, &|a, _| Estimate::exact(a.propensity))
}

fn all_reach() -> Reach {
    Reach::all()
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
    assert!(run(&cfg, &j, &all_reach(), &[Trigger::CartAbandoned], t(29))
        .choice
        .is_none());
    let c = run(&cfg, &j, &all_reach(), &[Trigger::CartAbandoned], t(30))
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
        run(&cfg, &with_cart(0.5), &all_reach(), &[Trigger::CartAbandoned], t(60))
            .choice
            .is_none()
    );
    assert!(run(
        &cfg,
        &Journey::default(),
        &all_reach(),
        &[Trigger::CartAbandoned],
        t(60)
    )
    .choice
    .is_none());
    let push_only = Reach::of([ContactChannel::Push]);
    let c = run(&cfg, &with_cart(50.0), &push_only, &[Trigger::CartAbandoned], t(60))
        .choice
        .unwrap();
    assert_eq!(c.channel, ContactChannel::Push);
    let sms_only = Reach::of([ContactChannel::Sms]);
    let d = run(&cfg, &with_cart(50.0), &sms_only, &[Trigger::CartAbandoned], t(60));
    assert!(d.choice.is_none());
    assert_eq!(
        d.suppressed,
        vec![
            ("cart_recovery".to_string(), Suppressed::Unreachable),
            ("cart_discount".to_string(), Suppressed::Unreachable)
        ]
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
        tier: Tier::C,
        outcome: None,
        counted_trial: false,
        counted_response: false,
        score: None,
        beaten: Vec::new(),
        held_back: Vec::new(),
        held_out: false,
        converted: false,
    });
    let held = run(&cfg, &j, &all_reach(), &[Trigger::CartAbandoned], t(60));
    assert_eq!(
        held.choice.map(|c| c.action).as_deref(),
        Some("cart_discount"),
        "the alternative goes instead"
    );
    assert_eq!(
        held.suppressed,
        vec![("cart_recovery".to_string(), Suppressed::Cooldown)]
    );
    assert!(run(&cfg, &j, &all_reach(), &[Trigger::CartAbandoned], t(30 + 24 * 60))
        .choice
        .is_some());
}

#[test]
fn post_purchase_follows_a_purchase_only() {
    let cfg = default_decide();
    let mut j = Journey::default();
    j.apply(&pos("1", 0, json!({"loyalty_id": "L"}), 30.0));
    let c = run(&cfg, &j, &all_reach(), &[Trigger::Purchased], t(0)).choice.unwrap();
    assert_eq!(c.action, "post_purchase_follow_up");
    assert!(run(&cfg, &j, &all_reach(), &[Trigger::ServiceIssue], t(0))
        .choice
        .is_none_or(|c| c.action != "post_purchase_follow_up"));
}

#[test]
fn service_recovery_prefers_the_call_center() {
    let cfg = default_decide();
    let mut j = Journey::default();
    j.apply(&call("1", 0, json!({"customer_id": "C"}), "complaint", "unresolved"));
    let c = run(&cfg, &j, &all_reach(), &[Trigger::ServiceIssue], t(0))
        .choice
        .unwrap();
    assert_eq!(
        (c.action.as_str(), c.channel),
        ("service_recovery", ContactChannel::CallCenter)
    );
    let email_only = Reach::of([ContactChannel::Email]);
    assert_eq!(
        run(&cfg, &j, &email_only, &[Trigger::ServiceIssue], t(0))
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
        run(&cfg, &j, &all_reach(), &[Trigger::Lapsed], t(0)).choice.is_none(),
        "never bought"
    );
    j.apply(&pos("1", 0, json!({"loyalty_id": "L"}), 30.0));
    let day = 24 * 60;
    assert!(run(&cfg, &j, &all_reach(), &[Trigger::Lapsed], t(59 * day))
        .choice
        .is_none());
    let c = run(&cfg, &j, &all_reach(), &[Trigger::Lapsed], t(60 * day))
        .choice
        .unwrap();
    assert_eq!(c.action, "win_back");
}

#[test]
fn arbitration_ranks_by_expected_value_and_names_what_it_beat() {
    let cfg = default_decide();
    let mut j = Journey::default();
    for (i, m) in [0, 10, 20].into_iter().enumerate() {
        j.apply(&pos(&format!("p{i}"), m, json!({"loyalty_id": "L"}), 500.0));
    }
    j.tier = Tier::A;
    let d = run(&cfg, &j, &all_reach(), &[Trigger::Purchased], t(30));
    assert_eq!(
        d.beaten,
        vec![crate::journey::Beaten {
            action: "post_purchase_follow_up".into(),
            score: 2.4
        }],
        "what it beat, as data"
    );
    let c = d.choice.unwrap();
    // loyalty_upgrade: 0.1 x 60 = 6.00; post_purchase_follow_up: 0.2 x 12 = 2.40
    assert_eq!(c.action, "loyalty_upgrade");
    assert_eq!(c.score, 6.0);
    assert!(
        c.reason.contains("chosen over post_purchase_follow_up (2.40)"),
        "{}",
        c.reason
    );
    assert!(c.factors.iter().any(|f| f.name == "propensity" && f.value == 0.1));
    // A lever moves the ranking.
    let mut levered = cfg.clone();
    levered.levers.insert("post_purchase_follow_up".into(), 3.0);
    let c = run(&levered, &j, &all_reach(), &[Trigger::Purchased], t(30))
        .choice
        .unwrap();
    assert_eq!(c.action, "post_purchase_follow_up", "2.40 x 3 = 7.20 beats 6.00");
    // Learned propensities move it too.
    let c = decide(&cfg, &j, &all_reach(), &[Trigger::Purchased], t(30), &|a, _| {
        Estimate::exact(if a.name == "loyalty_upgrade" {
            0.01
        } else {
            a.propensity
        })
    })
    .choice
    .unwrap();
    assert_eq!(c.action, "post_purchase_follow_up");
}

#[test]
fn loyalty_upgrade_needs_the_top_tier_and_three_purchases() {
    let cfg = default_decide();
    let mut j = Journey::default();
    for (i, m) in [0, 10].into_iter().enumerate() {
        j.apply(&pos(&format!("p{i}"), m, json!({"loyalty_id": "L"}), 500.0));
    }
    j.tier = Tier::A;
    let pick = |j: &Journey| {
        run(&cfg, j, &all_reach(), &[Trigger::Purchased], t(30))
            .choice
            .unwrap()
            .action
    };
    assert_eq!(pick(&j), "post_purchase_follow_up", "two purchases only");
    j.apply(&pos("p3", 20, json!({"loyalty_id": "L"}), 500.0));
    assert_eq!(pick(&j), "loyalty_upgrade");
    j.tier = Tier::B;
    assert_eq!(pick(&j), "post_purchase_follow_up", "not top tier");
}

#[test]
fn a_complaint_quiets_promotional_actions_but_not_service_recovery() {
    let cfg = default_decide();
    let mut j = with_cart(200.0);
    j.apply(&call("2", 1, json!({"customer_id": "C"}), "complaint", "unresolved"));
    let d = run(
        &cfg,
        &j,
        &all_reach(),
        &[Trigger::CartAbandoned, Trigger::ServiceIssue],
        t(60),
    );
    assert_eq!(d.choice.unwrap().action, "service_recovery");
    assert_eq!(
        d.suppressed,
        vec![
            ("cart_recovery".to_string(), Suppressed::QuietPeriod),
            ("cart_discount".to_string(), Suppressed::QuietPeriod)
        ]
    );
    // Seven days later the quiet period is over.
    let week = 7 * 24 * 60;
    let d = run(&cfg, &j, &all_reach(), &[Trigger::CartAbandoned], t(2 + week));
    assert_eq!(d.choice.unwrap().action, "cart_recovery");
}

#[test]
fn channel_caps_hold_in_rolling_windows() {
    let cfg = default_decide();
    let mut j = with_cart(50.0);
    let day = 24 * 60;
    // One email already went out: the next cart email moves to push.
    j.record_contact(t(60), ContactChannel::Email);
    let c = run(&cfg, &j, &all_reach(), &[Trigger::CartAbandoned], t(2 * day))
        .choice
        .unwrap();
    assert_eq!(c.channel, ContactChannel::Push);
    // Three pushes within a day: push is full too, web is next.
    for m in [0, 60, 120] {
        j.record_contact(t(2 * day - 200 + m), ContactChannel::Push);
    }
    let c = run(&cfg, &j, &all_reach(), &[Trigger::CartAbandoned], t(2 * day))
        .choice
        .unwrap();
    assert_eq!(c.channel, ContactChannel::Web);
    // Email only and capped: held back and counted as capped.
    let email_only = Reach::of([ContactChannel::Email]);
    let d = run(&cfg, &j, &email_only, &[Trigger::CartAbandoned], t(2 * day));
    assert!(d.choice.is_none());
    assert_eq!(
        d.suppressed,
        vec![
            ("cart_recovery".to_string(), Suppressed::Capped),
            ("cart_discount".to_string(), Suppressed::Capped)
        ]
    );
    // Eight days after the email, email is free again.
    assert!(run(&cfg, &j, &email_only, &[Trigger::CartAbandoned], t(8 * day + 61))
        .choice
        .is_some());
    // A window also looks forward: an email decided later in event time blocks an earlier one.
    let mut k = with_cart(50.0);
    k.record_contact(t(3 * day), ContactChannel::Email);
    assert!(run(&cfg, &k, &email_only, &[Trigger::CartAbandoned], t(day))
        .choice
        .is_none());
}

#[test]
fn an_action_dismissed_too_often_is_not_offered() {
    let cfg = default_decide();
    let mut j = with_cart(50.0);
    j.ignored.insert("cart_recovery".into(), cfg.policy.ignore_limit - 1);
    assert!(run(&cfg, &j, &all_reach(), &[Trigger::CartAbandoned], t(60))
        .choice
        .is_some());
    j.ignored.insert("cart_recovery".into(), cfg.policy.ignore_limit);
    let d = run(&cfg, &j, &all_reach(), &[Trigger::CartAbandoned], t(60));
    assert_eq!(d.suppressed, vec![("cart_recovery".to_string(), Suppressed::Ignored)]);
}

#[test]
fn browse_abandonment_waits_and_is_cancelled_by_a_cart_or_purchase() {
    let cfg = default_decide();
    let mut j = Journey::default();
    j.apply(&web(
        "1",
        0,
        json!({"cookie_id": "c"}),
        "product_view",
        product("lamp", 80.0),
    ));
    assert!(run(&cfg, &j, &all_reach(), &[Trigger::BrowseAbandoned], t(239))
        .choice
        .is_none());
    let c = run(&cfg, &j, &all_reach(), &[Trigger::BrowseAbandoned], t(240))
        .choice
        .unwrap();
    assert_eq!(c.action, "browse_abandonment");
    assert!(c.reason.contains("lamp"));
    j.apply(&web(
        "2",
        5,
        json!({"cookie_id": "c"}),
        "add_to_cart",
        product("lamp", 80.0),
    ));
    // The add to cart is itself the latest product view: its own timer decides later.
    j.apply(&web(
        "3",
        6,
        json!({"cookie_id": "c"}),
        "purchase",
        json!({"revenue": 80.0}),
    ));
    assert!(run(&cfg, &j, &all_reach(), &[Trigger::BrowseAbandoned], t(300))
        .choice
        .is_none());
}

#[test]
fn cross_channel_continuity_follows_a_product_to_the_app() {
    let cfg = default_decide();
    let mut j = Journey::default();
    j.apply(&web(
        "1",
        0,
        json!({"cookie_id": "c"}),
        "product_view",
        product("boot", 120.0),
    ));
    let tr = j.apply(&crate::testkit::app(
        "2",
        60,
        json!({"device_id": "d"}),
        "session_start",
        json!({}),
    ));
    assert!(tr
        .iter()
        .any(|t| matches!(t, crate::journey::Transition::ChannelSwitch { .. })));
    let c = run(&cfg, &j, &all_reach(), &[Trigger::ChannelSwitch], t(60))
        .choice
        .unwrap();
    assert_eq!(
        (c.action.as_str(), c.channel),
        ("cross_channel_continuity", ContactChannel::Push)
    );
    // The same channel, or after eight days, is no switch.
    let tr = j.apply(&web("3", 61, json!({"cookie_id": "c"}), "page_view", json!({})));
    assert!(!tr
        .iter()
        .any(|t| matches!(t, crate::journey::Transition::ChannelSwitch { .. })));
    let mut late = Journey::default();
    late.apply(&web(
        "1",
        0,
        json!({"cookie_id": "c"}),
        "product_view",
        product("boot", 120.0),
    ));
    let tr = late.apply(&crate::testkit::app(
        "2",
        8 * 24 * 60,
        json!({"device_id": "d"}),
        "session_start",
        json!({}),
    ));
    assert!(!tr
        .iter()
        .any(|t| matches!(t, crate::journey::Transition::ChannelSwitch { .. })));
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

#[test]
fn below_the_minimum_expected_value_nothing_is_sent_and_the_decision_says_why() {
    let mut cfg = default_decide();
    // A cart of 10: cart_recovery 0.12 x (5 + 3) = 0.96, cart_discount 0.18 x (2 + 2) = 0.72.
    cfg.min_expected_value = 0.9;
    let d = run(&cfg, &with_cart(10.0), &all_reach(), &[Trigger::CartAbandoned], t(60));
    assert_eq!(d.choice.map(|c| c.action).as_deref(), Some("cart_recovery"));
    assert_eq!(
        d.suppressed,
        vec![("cart_discount".to_string(), Suppressed::BelowMinimum)]
    );
    cfg.min_expected_value = 1.0;
    let d = run(&cfg, &with_cart(10.0), &all_reach(), &[Trigger::CartAbandoned], t(60));
    assert!(d.choice.is_none());
    assert_eq!(
        d.suppressed,
        vec![
            ("cart_recovery".to_string(), Suppressed::BelowMinimum),
            ("cart_discount".to_string(), Suppressed::BelowMinimum)
        ]
    );
}

#[test]
fn the_common_triggers_have_alternatives_and_the_first_listed_ranks_first_on_priors() {
    let cfg = default_decide();
    for trigger in Trigger::ALL {
        let n = cfg.actions.iter().filter(|a| a.trigger == trigger).count();
        assert!(n >= 2, "{trigger:?} has {n} action(s)");
    }
    assert!(cfg.explore && cfg.holdout_share > 0.0 && cfg.min_expected_value > 0.0);
}

/// A lapsed buyer worth `clv` over the value horizon.
fn lapsed_worth(clv: f64) -> Journey {
    let mut j = Journey::default();
    j.apply(&pos("1", 0, json!({"loyalty_id": "L"}), 30.0));
    j.clv.set(Some(crate::journey::Clv {
        expected_purchases: clv / 30.0,
        order_value: 30.0,
        p_active: 0.5,
        value: clv,
        horizon_days: 365.0,
    }));
    j
}

#[test]
fn a_customer_worth_more_gets_the_costlier_win_back() {
    let cfg = default_decide();
    let now = t(60 * 24 * 60);
    let choose = |clv: f64| {
        run(&cfg, &lapsed_worth(clv), &all_reach(), &[Trigger::Lapsed], now)
            .choice
            .unwrap()
    };
    // Identical but for their lifetime value: the plain reminder for the
    // one, the offer (which gives a discount away) for the other.
    let (low, high) = (choose(300.0), choose(1000.0));
    assert_eq!(low.action, "win_back", "{}", low.reason);
    assert_eq!(high.action, "win_back_offer", "{}", high.reason);
    // Expected value = propensity x (value + clv_share x clv): 0.1 x (18 + 10).
    assert!(
        (high.score - 0.1 * (18.0 + 0.01 * 1000.0)).abs() < 1e-9,
        "{}",
        high.score
    );
    let factor = |c: &Choice, name: &str| c.factors.iter().find(|f| f.name == name).map(|f| f.value);
    assert_eq!(factor(&high, "clv"), Some(1000.0));
    assert_eq!(factor(&high, "clv_share"), Some(0.01));
    assert_eq!(factor(&high, "value_at_stake"), Some(10.0));
    assert_eq!(factor(&high, "value"), Some(28.0));
    assert!(high.reason.contains("lifetime value 1000.00"), "{}", high.reason);
    // Unknown lifetime value: nothing at stake, the catalog's ranking.
    let mut j = lapsed_worth(0.0);
    j.clv.set(None);
    let c = run(&cfg, &j, &all_reach(), &[Trigger::Lapsed], now).choice.unwrap();
    assert_eq!(
        (c.action.as_str(), factor(&c, "value_at_stake")),
        ("win_back", Some(0.0))
    );
}

#[test]
fn an_action_without_a_clv_share_is_priced_as_before() {
    let cfg = default_decide();
    let j = with_cart(80.0);
    let mut rich = with_cart(80.0);
    rich.clv = lapsed_worth(10_000.0).clv;
    let at = |j: &Journey| {
        run(&cfg, j, &all_reach(), &[Trigger::CartAbandoned], t(60))
            .choice
            .unwrap()
    };
    let (a, b) = (at(&j), at(&rich));
    assert_eq!((a.action.as_str(), a.score), (b.action.as_str(), b.score));
    assert!(b.factors.iter().all(|f| f.name != "clv"), "{:?}", b.factors);
}

#[test]
fn a_clv_share_outside_zero_to_one_is_refused() {
    let mut cfg = default_decide();
    cfg.actions[0].clv_share = 1.5;
    assert!(cfg.validate().is_err());
}
