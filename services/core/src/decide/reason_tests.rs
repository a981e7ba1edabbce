//! The reasons and factors of a choice, whole, for every trigger: the text
//! and numbers downstream teams read (`next-best-actions`' `reason` and
//! `factors`). Pinned as the code before session 37 wrote them; since then
//! they are made only for the winner (`Candidate::choice`).

use serde_json::json;

use super::*;
use crate::journey::{Journey, Tier};
use crate::testkit::{call, default_decide, pos, product, t, web};

fn chosen(j: &Journey, trigger: Trigger, minute: i64) -> String {
    let d = decide(&default_decide(), j, &Reach::all(), &[trigger], t(minute), &|a, _| {
        Estimate::exact(a.propensity)
    });
    let Some(c) = d.choice else {
        return format!("no choice; held back {:?}", d.suppressed);
    };
    let factors: Vec<String> = c.factors.iter().map(|f| format!("{}={}", f.name, f.value)).collect();
    format!(
        "{} via {:?} @{} rank {}: {} [{}] beat {:?} held back {:?}",
        c.action,
        c.channel,
        c.score,
        c.rank,
        c.reason,
        factors.join(" "),
        d.beaten,
        d.suppressed
    )
}

fn viewed() -> Journey {
    let mut j = Journey::default();
    j.apply(&web(
        "v",
        0,
        json!({"cookie_id": "c"}),
        "product_view",
        product("lamp", 80.0),
    ));
    j
}

#[test]
fn every_triggers_reason_and_factors_read_as_before() {
    let mut cart = Journey::default();
    cart.apply(&web(
        "1",
        0,
        json!({"cookie_id": "c"}),
        "add_to_cart",
        product("a", 80.0),
    ));
    let mut buyer = Journey::default();
    for (i, m) in [0, 10, 20].into_iter().enumerate() {
        buyer.apply(&pos(&format!("p{i}"), m, json!({"loyalty_id": "L"}), 500.0));
    }
    buyer.tier = Tier::A;
    let mut first = Journey::default();
    first.apply(&pos("f", 0, json!({"loyalty_id": "L"}), 30.0));
    let mut caller = Journey::default();
    caller.apply(&call("1", 0, json!({"customer_id": "C"}), "complaint", "unresolved"));
    // A complaint after the cart: promotional cart actions held back.
    let mut cart_then_complaint = cart.clone();
    cart_then_complaint.apply(&call("2", 10, json!({"customer_id": "C"}), "complaint", "resolved"));
    let mut lapsed = first.clone();
    lapsed.clv.set(Some(crate::journey::Clv {
        expected_purchases: 1000.0 / 30.0,
        order_value: 30.0,
        p_active: 0.5,
        value: 1000.0,
        horizon_days: 365.0,
    }));
    let got = [
        chosen(&cart, Trigger::CartAbandoned, 45),
        chosen(&buyer, Trigger::Purchased, 30),
        chosen(&first, Trigger::Purchased, 1),
        chosen(&caller, Trigger::ServiceIssue, 0),
        chosen(&viewed(), Trigger::BrowseAbandoned, 300),
        chosen(&viewed(), Trigger::ChannelSwitch, 5),
        chosen(&lapsed, Trigger::Lapsed, 61 * 24 * 60),
        chosen(&cart_then_complaint, Trigger::CartAbandoned, 45),
    ];
    let want: [&str; 8] = [
        "cart_recovery via Email @3.48 rank 3.48: Cart abandoned: cart of 80.00 untouched for 45 minutes; expected value 3.48 (propensity 0.120 x value 29.00; ranked on a draw of 0.120); chosen over cart_discount (3.24) [cart_value=80 cart_items=1 minutes_since_cart_change=45 propensity=0.12 propensity_draw=0.12 value=29 weight=1 lever=1] beat [Beaten { action: \"cart_discount\", score: 3.24 }] held back []",
        "loyalty_upgrade via Email @6 rank 6: Invite a top-tier customer to the next loyalty level: purchase number 3, tier a; expected value 6.00 (propensity 0.100 x value 60.00; ranked on a draw of 0.100); chosen over post_purchase_follow_up (2.40) [purchases=3 revenue=1500 propensity=0.1 propensity_draw=0.1 value=60 weight=1 lever=1] beat [Beaten { action: \"post_purchase_follow_up\", score: 2.4 }] held back []",
        "post_purchase_follow_up via Email @2.4 rank 2.4000000000000004: Follow up after a purchase, while the customer is most anxious: first purchase; expected value 2.40 (propensity 0.200 x value 12.00; ranked on a draw of 0.200) [purchases=1 revenue=30 propensity=0.2 propensity_draw=0.2 value=12 weight=1 lever=1] beat [] held back []",
        "service_recovery via CallCenter @28 rank 28: Recover a poor service experience: call back: 1 complaint(s) and 1 unresolved call(s) in 30 days, 0 cancel request(s); expected value 28.00 (propensity 0.350 x value 80.00, of it 0.00 = 0.1 of lifetime value 0.00; ranked on a draw of 0.350); chosen over apology_email (24.00) [complaints_30d=1 unresolved_calls_30d=1 cancel_requests=0 last_csat=0 propensity=0.35 propensity_draw=0.35 value=80 weight=1 lever=1 clv=0 clv_share=0.1 value_at_stake=0] beat [Beaten { action: \"apology_email\", score: 24.0 }] held back []",
        "browse_abandonment via Email @0.6 rank 0.6: Product viewed and left: looked at lamp 5 hours ago and left; expected value 0.60 (propensity 0.040 x value 15.00; ranked on a draw of 0.040); chosen over browse_recommendation (0.55) [hours_since_product_view=5 propensity=0.04 propensity_draw=0.04 value=15 weight=1 lever=1] beat [Beaten { action: \"browse_recommendation\", score: 0.55 }] held back []",
        "cross_channel_continuity via Push @1.6 rank 1.6: Pick up on another channel where the customer left off: looked at lamp on web and is now on another channel; expected value 1.60 (propensity 0.080 x value 20.00; ranked on a draw of 0.080); chosen over continuity_email (1.50) [days_since_product_view=0 propensity=0.08 propensity_draw=0.08 value=20 weight=1 lever=1] beat [Beaten { action: \"continuity_email\", score: 1.5 }] held back []",
        "win_back_offer via Email @2.8 rank 2.8000000000000003: Win back a lapsing customer with an offer: no purchase for 61 days after 1 purchase(s); expected value 2.80 (propensity 0.100 x value 28.00, of it 10.00 = 0.01 of lifetime value 1000.00; ranked on a draw of 0.100); chosen over win_back (2.50) [days_since_last_purchase=61 purchases=1 churn_score=0 propensity=0.1 propensity_draw=0.1 value=28 weight=1 lever=1 clv=1000 clv_share=0.01 value_at_stake=10] beat [Beaten { action: \"win_back\", score: 2.5 }] held back []",
        "no choice; held back [(\"cart_recovery\", QuietPeriod), (\"cart_discount\", QuietPeriod)]",
    ];
    assert_eq!(got, want.map(String::from));
}
