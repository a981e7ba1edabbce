use serde_json::json;

use super::*;
use crate::testkit::{app, call, pos, product, t, web};

fn ids() -> serde_json::Value {
    json!({"cookie_id": "c-1"})
}

#[test]
fn cart_fills_empties_and_closes_on_purchase() {
    let mut j = Journey::default();
    j.apply(&web("1", 0, ids(), "add_to_cart", product("a", 40.0)));
    j.apply(&web("2", 1, ids(), "add_to_cart", product("a", 40.0)));
    j.apply(&web("3", 2, ids(), "add_to_cart", product("b", 20.0)));
    assert_eq!(j.cart.value(), 100.0);
    assert_eq!(j.stage(), Stage::Cart);
    j.apply(&web("4", 3, ids(), "remove_from_cart", product("a", 40.0)));
    assert_eq!(j.cart.value(), 60.0);
    assert_eq!(j.cart.updated_at, Some(t(3)));
    let tr = j.apply(&web("5", 10, ids(), "purchase", json!({"revenue": 60.0})));
    assert!(tr.contains(&Transition::Purchased { value: 60.0 }));
    assert!(j.cart.is_empty());
    assert_eq!(j.stage(), Stage::Customer);
    assert_eq!((j.purchases, j.revenue), (1, 60.0));
}

#[test]
fn an_older_purchase_does_not_close_a_newer_cart() {
    let mut j = Journey::default();
    j.apply(&web("1", 10, ids(), "add_to_cart", product("a", 5.0)));
    j.apply(&pos("2", 5, ids(), 7.0));
    assert!(!j.cart.is_empty());
    assert_eq!(j.purchases_by_channel[Channel::Pos.index()], 1);
}

#[test]
fn calls_count_complaints_and_service_issues() {
    let mut j = Journey::default();
    let tr = j.apply(&call("1", 0, ids(), "complaint", "unresolved"));
    assert!(tr.contains(&Transition::ServiceIssue {
        complaint: true,
        cancel_request: false
    }));
    let tr = j.apply(&call("2", 1, ids(), "billing", "resolved"));
    assert!(tr.iter().all(|t| !matches!(t, Transition::ServiceIssue { .. })));
    j.apply(&call("3", 2, ids(), "cancel_request", "escalated"));
    assert_eq!((j.complaints, j.cancel_requests, j.call.calls), (1, 1, 3));
    assert_eq!((j.call.unresolved, j.call.escalated, j.call.resolved), (1, 1, 1));
    assert_eq!(j.stage(), Stage::AtRisk);
}

#[test]
fn out_of_order_events_only_widen_first_and_last_seen() {
    let mut j = Journey::default();
    j.apply(&web("1", 50, ids(), "page_view", json!({})));
    j.apply(&web("2", 10, ids(), "page_view", json!({})));
    j.apply(&web("3", 30, ids(), "page_view", json!({})));
    assert_eq!((j.first_seen, j.last_seen), (Some(t(10)), Some(t(50))));
    assert_eq!(j.stage(), Stage::Browsing);
}

#[test]
fn push_consent_follows_the_app() {
    let mut j = Journey::default();
    j.apply(&app("1", 0, ids(), "push_opt_out", json!({})));
    assert!(j.push_opt_out);
    j.apply(&app("2", 1, ids(), "push_opt_in", json!({})));
    assert!(!j.push_opt_out);
}

#[test]
fn absorb_adds_counts_and_keeps_the_newer_cart() {
    let mut a = Journey::default();
    a.apply(&web("1", 0, ids(), "add_to_cart", product("a", 5.0)));
    a.apply(&pos("2", 1, ids(), 10.0));
    a.apply(&web("3", 2, ids(), "add_to_cart", product("old", 1.0)));
    let mut b = Journey::default();
    b.apply(&web("4", 5, ids(), "add_to_cart", product("new", 9.0)));
    b.apply(&call("5", 6, ids(), "complaint", "resolved"));
    let (ea, eb) = (a.total_events(), b.total_events());
    a.absorb(b);
    assert_eq!(a.total_events(), ea + eb);
    assert_eq!(a.purchases, 1);
    assert_eq!(a.complaints, 1);
    assert_eq!(a.cart.items.keys().collect::<Vec<_>>(), vec!["new"]);
    assert_eq!((a.first_seen, a.last_seen), (Some(t(0)), Some(t(6))));
}

#[test]
fn a_recent_action_keeps_a_bounded_decision_context_counted_in_memory() {
    use crate::vocab::Suppressed;
    let mut j = Journey::default();
    let n = DECISION_CONTEXT + 3;
    let action = RecentAction {
        action_id: "a".into(),
        action: "x".into(),
        channel: "email".into(),
        reason: "r".into(),
        decided_at: t(0),
        tier: Tier::C,
        outcome: None,
        counted_trial: false,
        counted_response: false,
        score: Some(1.5),
        beaten: (0..n)
            .map(|i| Beaten {
                action: format!("b{i}"),
                score: 1.0,
            })
            .collect(),
        held_back: (0..n)
            .map(|i| HeldBack {
                action: format!("h{i}"),
                rule: Suppressed::Capped,
            })
            .collect(),
        held_out: false,
        converted: false,
    };
    let bare = RecentAction {
        beaten: Vec::new(),
        held_back: Vec::new(),
        ..action.clone()
    };
    j.record_action(action);
    let kept = &j.recent_actions[0];
    assert_eq!(
        (kept.beaten.len(), kept.held_back.len()),
        (DECISION_CONTEXT, DECISION_CONTEXT)
    );
    assert_eq!(kept.beaten[0].action, "b0", "the best first");
    assert!(kept.heap_bytes() > bare.heap_bytes() + DECISION_CONTEXT * 2 * 24);
    // A decision recorded before the context existed still loads (JSON without the fields).
    let mut v = serde_json::to_value(&bare).unwrap();
    for f in ["score", "beaten", "held_back", "held_out", "converted"] {
        v.as_object_mut().unwrap().remove(f);
    }
    let old: RecentAction = serde_json::from_value(v).unwrap();
    assert_eq!(old.score, None);
}
