use serde_json::json;

use super::*;
use crate::output::Output;
use crate::testkit::{app, call, core_config, pos, product, web};

fn processor() -> Processor {
    let ns = Arc::new(Namespaces::with_defaults());
    Processor::new(Arc::new(core_config()), Arc::new(State::new(ns)))
}

fn actions(outs: &[Output]) -> Vec<&NextBestAction> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Action(a) => Some(a),
            _ => None,
        })
        .collect()
}

fn run(p: &mut Processor, events: &[ChannelEvent]) -> Vec<Output> {
    events.iter().flat_map(|e| p.process(e).unwrap().outputs).collect()
}

fn story() -> Vec<ChannelEvent> {
    vec![
        web("w1", 0, json!({"cookie_id": "c-1"}), "page_view", json!({})),
        web(
            "w2",
            2,
            json!({"cookie_id": "c-1", "email": "ann@x.com", "customer_id": "C-1"}),
            "login",
            json!({}),
        ),
        web(
            "w3",
            3,
            json!({"cookie_id": "c-1"}),
            "add_to_cart",
            product("shoe", 120.0),
        ),
        app(
            "a1",
            10,
            json!({"device_id": "d-1", "customer_id": "C-1"}),
            "session_start",
            json!({}),
        ),
        // Event time moves past the 30-minute mark: the cart timer fires.
        app("a2", 40, json!({"device_id": "d-1"}), "screen_view", json!({})),
        pos("p1", 24 * 60, json!({"loyalty_id": "L-1", "email": "ann@x.com"}), 120.0),
        call(
            "k1",
            25 * 60,
            json!({"phone": "+15550100200", "customer_id": "C-1"}),
            "order_status",
            "resolved",
        ),
    ]
}

#[test]
fn the_story_lands_on_one_profile_with_decisions() {
    let mut p = processor();
    let outs = run(&mut p, &story());
    assert_eq!(p.state().identity.profile_count(), 1);
    assert_eq!(p.state().journeys.len(), 1);
    let acts = actions(&outs);
    let names: Vec<&str> = acts.iter().map(|a| a.action.as_str()).collect();
    assert_eq!(names, vec!["cart_recovery", "post_purchase_follow_up"]);
    let cart = acts[0];
    assert_eq!(cart.trigger.kind, "timer");
    assert_eq!(cart.channel, "email");
    assert_eq!(cart.decided_at, crate::testkit::t(33));
    assert!(cart.identifiers.contains_key("email_sha256"));
    assert!(!cart.identifiers.values().any(|v| v.contains('@')));
    let j = p.state().journeys.iter().next().unwrap().value().clone();
    assert_eq!(j.total_events(), 7);
    assert_eq!(j.channels_touched(), vec!["web", "pos", "app", "call_center"]);
}

#[test]
fn merges_are_reported_and_journeys_combined() {
    let mut p = processor();
    p.process(&web(
        "w1",
        0,
        json!({"cookie_id": "c-1"}),
        "add_to_cart",
        product("a", 10.0),
    ))
    .unwrap();
    p.process(&app("a1", 1, json!({"device_id": "d-1"}), "session_start", json!({})))
        .unwrap();
    let out = p
        .process(&web(
            "w2",
            2,
            json!({"cookie_id": "c-1", "device_id": "d-1"}),
            "page_view",
            json!({}),
        ))
        .unwrap();
    assert_eq!(out.merges, 1);
    let changes: Vec<_> = out
        .outputs
        .iter()
        .filter_map(|o| match o {
            Output::Identity(c) => Some(c),
            _ => None,
        })
        .collect();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].change, "merge");
    assert_eq!(p.state().journeys.len(), 1);
    let j = p.state().journeys.get(&changes[0].one_id).unwrap().clone();
    assert_eq!(j.total_events(), 3);
    assert_eq!(j.cart.value(), 10.0);
}

#[test]
fn duplicates_change_nothing() {
    let mut p = processor();
    let e = web("w1", 0, json!({"cookie_id": "c-1"}), "add_to_cart", product("a", 10.0));
    p.process(&e).unwrap();
    let before = p.state().journeys.iter().next().unwrap().value().clone();
    let again = p.process(&e).unwrap();
    assert!(again.duplicate);
    assert!(again.outputs.is_empty());
    assert_eq!(p.state().journeys.iter().next().unwrap().value(), &before);
    // The same id on another channel is another event.
    let other = app("w1", 0, json!({"cookie_id": "c-1"}), "session_start", json!({}));
    assert!(!p.process(&other).unwrap().duplicate);
}

#[test]
fn an_unhappy_customer_gets_a_high_churn_band_once() {
    let mut p = processor();
    let ids = json!({"customer_id": "C-7"});
    let outs = run(
        &mut p,
        &[
            call("k1", 0, ids.clone(), "complaint", "unresolved"),
            call("k2", 10, ids.clone(), "complaint", "unresolved"),
            call("k3", 20, ids.clone(), "cancel_request", "escalated"),
            call("k4", 30, ids.clone(), "billing", "resolved"),
        ],
    );
    let churn: Vec<_> = outs
        .iter()
        .filter_map(|o| match o {
            Output::Churn(c) => Some(c),
            _ => None,
        })
        .collect();
    let bands: Vec<_> = churn.iter().map(|c| c.band).collect();
    assert_eq!(bands.last(), Some(&Band::High));
    assert_eq!(
        bands.iter().filter(|b| **b == Band::High).count(),
        1,
        "emitted on change only: {bands:?}"
    );
    assert!(actions(&outs).iter().any(|a| a.action == "service_recovery"));
}

#[test]
fn a_quiet_customer_rises_on_timers_alone() {
    let mut p = processor();
    let day = 24 * 60;
    p.process(&pos("p1", 0, json!({"loyalty_id": "L-1", "email": "q@x.com"}), 50.0))
        .unwrap();
    // Another customer's events move event time forward 100 days.
    let outs = run(
        &mut p,
        &[web(
            "w1",
            100 * day,
            json!({"cookie_id": "other"}),
            "page_view",
            json!({}),
        )],
    );
    let quiet = p
        .state()
        .identity
        .one_id_of(
            &p.state()
                .identity
                .namespaces()
                .normalise("loyalty_id", "L-1")
                .unwrap()
                .unwrap(),
        )
        .unwrap();
    assert!(outs
        .iter()
        .any(|o| matches!(o, Output::Churn(c) if c.one_id == quiet && c.trigger.kind == "timer")));
    assert!(actions(&outs)
        .iter()
        .any(|a| a.one_id == quiet && a.action == "win_back"));
}

#[test]
fn replay_gives_identical_outputs() {
    let a: Vec<Vec<u8>> = run(&mut processor(), &story()).iter().map(Output::to_json).collect();
    let b: Vec<Vec<u8>> = run(&mut processor(), &story()).iter().map(Output::to_json).collect();
    assert!(!a.is_empty());
    assert_eq!(a, b);
}

#[test]
fn a_purchase_before_the_timer_cancels_cart_recovery() {
    let mut p = processor();
    let ids = json!({"cookie_id": "c", "email": "b@x.com"});
    let outs = run(
        &mut p,
        &[
            web("1", 0, ids.clone(), "add_to_cart", product("a", 50.0)),
            web("2", 10, ids.clone(), "purchase", json!({"revenue": 50.0})),
            web("3", 120, ids.clone(), "page_view", json!({})),
        ],
    );
    assert!(actions(&outs).iter().all(|a| a.action != "cart_recovery"));
}

#[test]
fn outputs_match_the_output_schemas() {
    let mut p = processor();
    let mut events = story();
    // An anonymous app session first: the login on the app merges it.
    events.insert(0, app("a0", 1, json!({"device_id": "d-1"}), "session_start", json!({})));
    events.push(call(
        "k9",
        26 * 60,
        json!({"customer_id": "C-1"}),
        "cancel_request",
        "unresolved",
    ));
    events.push(call(
        "k10",
        26 * 60 + 1,
        json!({"customer_id": "C-1"}),
        "complaint",
        "unresolved",
    ));
    let outs = run(&mut p, &events);
    let schema = |text: &str| jsonschema::validator_for(&serde_json::from_str(text).unwrap()).unwrap();
    let nba = schema(include_str!("../../../../schemas/next-best-action.v1.json"));
    let churn = schema(include_str!("../../../../schemas/churn-risk.v1.json"));
    let ident = schema(include_str!("../../../../schemas/identity-change.v1.json"));
    let mut seen = [0; 3];
    for o in &outs {
        let v: serde_json::Value = serde_json::from_slice(&o.to_json()).unwrap();
        let (validator, i) = match o {
            Output::Action(_) => (&nba, 0),
            Output::Churn(_) => (&churn, 1),
            Output::Identity(_) => (&ident, 2),
        };
        seen[i] += 1;
        if let Err(e) = validator.validate(&v) {
            panic!("{e}: {v}");
        }
    }
    assert!(seen.iter().all(|n| *n > 0), "every output kind checked: {seen:?}");
}
