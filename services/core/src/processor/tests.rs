use serde_json::json;

use super::*;
use crate::decide::churn;
use crate::ids::Namespaces;
use crate::journey::{Band, Journey, Tier};
use crate::output::{NextBestAction, Output};
use crate::testkit::{app, call, core_config, key, one_id, pos, product, web};

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
    run_on(p, 0, events)
}

fn run_on(p: &mut Processor, partition: u32, events: &[ChannelEvent]) -> Vec<Output> {
    events
        .iter()
        .flat_map(|e| p.process(e, partition).unwrap().outputs)
        .collect()
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
    // The product viewed on the web follows the customer into the app.
    assert_eq!(
        names,
        vec!["cross_channel_continuity", "cart_recovery", "post_purchase_follow_up"]
    );
    assert_eq!(acts[0].channel, "push");
    let cart = acts[1];
    assert_eq!(cart.trigger.kind, "timer");
    assert_eq!(cart.channel, "email");
    assert_eq!(cart.decided_at, crate::testkit::t(33));
    assert!(cart.identifiers.contains_key("email_sha256"));
    assert!(!cart.identifiers.values().any(|v| v.contains('@')));
    let j = p.state().all_journeys().into_iter().next().unwrap().1;
    assert_eq!(j.total_events(), 7);
    assert_eq!(j.channels_touched(), vec!["web", "pos", "app", "call_center"]);
}

#[test]
fn merges_are_reported_and_journeys_combined() {
    let mut p = processor();
    p.process(
        &web("w1", 0, json!({"cookie_id": "c-1"}), "add_to_cart", product("a", 10.0)),
        0,
    )
    .unwrap();
    p.process(
        &app("a1", 1, json!({"device_id": "d-1"}), "session_start", json!({})),
        0,
    )
    .unwrap();
    let out = p
        .process(
            &web(
                "w2",
                2,
                json!({"cookie_id": "c-1", "device_id": "d-1"}),
                "page_view",
                json!({}),
            ),
            0,
        )
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
    let j = p.state().journey(&changes[0].one_id).unwrap().clone();
    assert_eq!(j.total_events(), 3);
    assert_eq!(j.cart.value(), 10.0);
}

#[test]
fn duplicates_change_nothing() {
    let mut p = processor();
    let e = web("w1", 0, json!({"cookie_id": "c-1"}), "add_to_cart", product("a", 10.0));
    p.process(&e, 0).unwrap();
    let before = p.state().all_journeys().into_iter().next().unwrap().1;
    let again = p.process(&e, 0).unwrap();
    assert!(again.duplicate);
    assert!(again.outputs.is_empty());
    assert_eq!(p.state().all_journeys()[0].1, before);
    // The same id on another channel is another event.
    let other = app("w1", 0, json!({"cookie_id": "c-1"}), "session_start", json!({}));
    assert!(!p.process(&other, 0).unwrap().duplicate);
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
    p.process(&pos("p1", 0, json!({"loyalty_id": "L-1", "email": "q@x.com"}), 50.0), 0)
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
    let quiet = one_id(&p, "loyalty_id", "L-1");
    assert!(outs
        .iter()
        .any(|o| matches!(o, Output::Churn(c) if c.one_id == quiet && c.trigger.kind == "timer")));
    // A win-back (which of the two depends on the lifetime value at stake:
    // one buyer is the whole population here, so theirs is large).
    assert!(actions(&outs)
        .iter()
        .any(|a| a.one_id == quiet && a.action.starts_with("win_back")));
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
            Output::Erasure(_) => unreachable!("no forget in this story"),
        };
        seen[i] += 1;
        if let Err(e) = validator.validate(&v) {
            panic!("{e}: {v}");
        }
    }
    assert!(seen.iter().all(|n| *n > 0), "every output kind checked: {seen:?}");
}

#[test]
fn push_needs_consent() {
    let day = 24 * 60;
    let run_with = |opt_out: bool| {
        let mut p = processor();
        let ids = json!({"device_id": "d-9"});
        if opt_out {
            p.process(&app("o", 0, ids.clone(), "push_opt_out", json!({})), 0)
                .unwrap();
        }
        let mut outs = run(&mut p, &[app("c", 1, ids.clone(), "add_to_cart", product("a", 40.0))]);
        outs.extend(run(
            &mut p,
            &[app(
                "later",
                day,
                json!({"device_id": "other"}),
                "session_start",
                json!({}),
            )],
        ));
        outs
    };
    let with_consent = run_with(false);
    assert!(actions(&with_consent)
        .iter()
        .any(|a| a.action == "cart_recovery" && a.channel == "push"));
    let opted_out = run_with(true);
    assert!(
        actions(&opted_out).iter().all(|a| a.action != "cart_recovery"),
        "no push without consent"
    );
}

#[test]
fn the_slowest_active_partition_holds_the_watermark() {
    let mut p = processor();
    let ids = json!({"cookie_id": "c", "email": "w@x.com"});
    p.process(&web("1", 0, ids.clone(), "add_to_cart", product("a", 50.0)), 1)
        .unwrap();
    // Partition 0 races ahead: its event waits, and the cart timer does not fire.
    let ahead = p
        .process(&web("2", 600, json!({"cookie_id": "z"}), "page_view", json!({})), 0)
        .unwrap();
    assert!(ahead.outputs.is_empty());
    assert_eq!(p.pending_events(), 1);
    assert_eq!(p.watermark(0), Some(crate::testkit::t(0)));
    // Partition 1 moves past the due time: the timer fires before the event after it.
    let moved = p
        .process(&web("3", 32, json!({"cookie_id": "y"}), "page_view", json!({})), 1)
        .unwrap();
    assert_eq!(actions(&moved.outputs)[0].action, "cart_recovery");
    assert_eq!(actions(&moved.outputs)[0].decided_at, crate::testkit::t(30));
    // An event older than what was applied is late, and still applied.
    let late = p
        .process(&web("4", 0, json!({"cookie_id": "q"}), "page_view", json!({})), 1)
        .unwrap();
    assert!(late.late);
    assert_eq!(
        p.state().identity.profile_count(),
        3,
        "partition 0's event is still buffered"
    );
    // Both partitions fall silent: nothing holds the watermark back any more.
    let flushed = p.tick(10_000);
    assert_eq!(flushed.iter().filter(|r| r.seq.is_some()).count(), 1);
    assert_eq!(p.pending_events(), 0);
    assert_eq!(p.state().identity.profile_count(), 4);
}

#[test]
fn a_store_purchase_on_a_lagging_partition_still_cancels_cart_recovery() {
    // The cart is on the web partition, the purchase on the store partition,
    // which is consumed later: the timer waits for the store partition.
    let ids = json!({"cookie_id": "c", "email": "s@x.com", "loyalty_id": "L"});
    let mut p = processor();
    p.register_partition(0, 0);
    p.register_partition(1, 0);
    let mut outs = run_on(
        &mut p,
        0,
        &[web("1", 0, ids.clone(), "add_to_cart", product("a", 50.0))],
    );
    outs.extend(run_on(
        &mut p,
        0,
        &[web("2", 120, json!({"cookie_id": "o"}), "page_view", json!({}))],
    ));
    outs.extend(run_on(&mut p, 1, &[pos("3", 10, json!({"loyalty_id": "L"}), 50.0)]));
    outs.extend(run_on(&mut p, 1, &[pos("4", 130, json!({"loyalty_id": "o2"}), 5.0)]));
    assert!(
        actions(&outs).iter().all(|a| a.action != "cart_recovery"),
        "{:?}",
        actions(&outs)
    );
}

#[test]
fn outcomes_teach_propensities_once_per_decision() {
    let mut p = processor();
    let outs = run(
        &mut p,
        &[pos("p1", 0, json!({"loyalty_id": "L", "email": "o@x.com"}), 30.0)],
    );
    let a = actions(&outs)[0].clone();
    assert_eq!(a.action, "post_purchase_follow_up");
    let tier = p.state().journey(&a.one_id).unwrap().tier;
    let before = p.propensity(&a.action, tier).unwrap();
    let outcome = |o: &str| ActionOutcome {
        action_id: a.action_id.clone(),
        one_id: a.one_id.to_string(),
        outcome: serde_json::from_value(json!(o)).unwrap(),
        at: crate::testkit::at(5),
    };
    p.state().take_dirty();
    assert_eq!(p.outcome(&outcome("delivered")), OutcomeEffect::Learned);
    assert_eq!(
        p.state().take_dirty(),
        vec![a.one_id.clone()],
        "an outcome changes the journey: the changelog must write it"
    );
    let after_trial = p.propensity(&a.action, tier).unwrap();
    assert!(after_trial < before, "a trial without response lowers it");
    assert_eq!(p.outcome(&outcome("converted")), OutcomeEffect::Learned);
    let after_response = p.propensity(&a.action, tier).unwrap();
    assert!(after_response > before, "{after_response} > {before}");
    assert_eq!(p.outcome(&outcome("clicked")), OutcomeEffect::Repeated, "counted once");
    assert_eq!(p.propensity(&a.action, tier).unwrap(), after_response);
    let unknown = ActionOutcome {
        action_id: "act-nope".into(),
        ..outcome("clicked")
    };
    assert_eq!(p.outcome(&unknown), OutcomeEffect::Unknown);
    // Dismissals count toward the ignore limit.
    p.outcome(&outcome("dismissed"));
    assert_eq!(p.state().journey(&a.one_id).unwrap().ignored.get(&a.action), Some(&1));
}

#[test]
fn value_tiers_split_customers_by_revenue_contribution() {
    let mut p = processor();
    // 10 big spenders (1000 each) and 90 small ones (10 each): the big ones
    // bring 10000 of 10900, over 80%: they are tier A.
    let mut events = Vec::new();
    for i in 0..100 {
        let amount = if i < 10 { 1000.0 } else { 10.0 };
        events.push(pos(&format!("p{i}"), i, json!({"loyalty_id": format!("L{i}")}), amount));
    }
    run(&mut p, &events);
    // Tiers are assigned at each evaluation: touch everyone once more.
    let touch: Vec<ChannelEvent> = (0..100)
        .map(|i| {
            web(
                &format!("w{i}"),
                200 + i,
                json!({"loyalty_id": format!("L{i}")}),
                "page_view",
                json!({}),
            )
        })
        .collect();
    run(&mut p, &touch);
    let tier_of = |i: usize| {
        let id = one_id(&p, "loyalty_id", &format!("L{i}"));
        p.state().journey(&id).unwrap().tier
    };
    assert_eq!(tier_of(0), Tier::A);
    assert_eq!(tier_of(9), Tier::A);
    assert_ne!(tier_of(50), Tier::A);
}

#[test]
fn complaints_count_for_churn_for_thirty_days() {
    let cfg = core_config();
    let mut j = Journey::default();
    j.apply(&pos("p", 0, json!({"loyalty_id": "L"}), 30.0));
    j.apply(&call("k", 1, json!({"loyalty_id": "L"}), "complaint", "unresolved"));
    let day = 24 * 60;
    let factor = |now| {
        churn::score(&cfg.decide.churn, &j, crate::testkit::t(now))
            .factors
            .into_iter()
            .find(|f| f.name == "complaints_30d")
            .unwrap()
            .value
    };
    assert_eq!(factor(2), 1.0);
    assert_eq!(factor(29 * day), 1.0);
    assert_eq!(factor(31 * day), 0.0);
}

#[test]
fn fewer_visits_than_usual_raise_churn() {
    let day = 24 * 60;
    // Weekly visits for 150 days, then nothing for 30.
    let mut j = Journey::default();
    for w in 0..22 {
        j.apply(&web(
            &format!("v{w}"),
            w * 7 * day,
            json!({"cookie_id": "c"}),
            "page_view",
            json!({}),
        ));
    }
    let last = 21 * 7 * day;
    let drop = churn::visit_frequency_drop(&j, crate::testkit::t(last + 30 * day)).unwrap();
    assert!(drop > 0.95, "{drop}");
    let steady = churn::visit_frequency_drop(&j, crate::testkit::t(last + day)).unwrap();
    assert!(steady < 0.3, "{steady}");
}

#[test]
fn after_a_pause_every_partition_gets_a_grace_period() {
    let mut p = processor();
    p.register_partition(0, 0);
    p.register_partition(1, 0);
    let ids = |c: &str| json!({"cookie_id": c});
    p.offer(web("1", 0, ids("a"), "page_view", json!({})), 0, 1, 0);
    p.offer(web("2", 1, ids("b"), "page_view", json!({})), 1, 2, 0);
    // A long pause: both partitions idle. Partition 0 delivers first, far ahead...
    let first = p.offer(web("3", 100, ids("c"), "page_view", json!({})), 0, 3, 10_000);
    assert!(first.iter().all(|r| r.seq != Some(3)), "held back for partition 1");
    // ...and partition 1's older event of the same burst is still applied in order.
    let second = p.offer(web("4", 50, ids("d"), "page_view", json!({})), 1, 4, 10_001);
    let order: Vec<u64> = second.iter().filter_map(|r| r.seq).collect();
    assert_eq!(order, vec![4]);
    assert!(second.iter().all(|r| !r.result.as_ref().unwrap().late));
}

#[test]
fn eviction_drops_old_journey_detail_and_keeps_identity() {
    let mut p = processor();
    run(&mut p, &story());
    let ann = one_id(&p, "cookie_id", "c-1");
    let before = p.state().journey(&ann).unwrap().clone();
    assert!(!before.visits.is_empty());
    // Someone else, a year later: the watermark moves on.
    run(
        &mut p,
        &[web("z1", 525_600, json!({"cookie_id": "c-z"}), "page_view", json!({}))],
    );
    p.tick(u64::MAX);
    assert_eq!(p.evict_journeys(Duration::from_secs(180 * 86_400)), 1);
    let after = p.state().journey(&ann).unwrap().clone();
    assert!(after.visits.is_empty() && after.contacts.is_empty() && after.recent_actions.is_empty());
    assert_eq!(
        (after.purchases, after.revenue, after.first_seen),
        (before.purchases, before.revenue, before.first_seen)
    );
    assert!(p.state().identity.profile(&ann).is_some(), "identity links stay");
    assert_eq!(p.evict_journeys(Duration::from_secs(180 * 86_400)), 0, "once");
}

#[test]
fn a_journey_active_since_the_eviction_scan_keeps_its_detail() {
    let mut p = processor();
    run(&mut p, &story());
    run(
        &mut p,
        &[web("b1", 5, json!({"cookie_id": "c-b"}), "page_view", json!({}))],
    );
    run(
        &mut p,
        &[web("z1", 525_600, json!({"cookie_id": "c-z"}), "page_view", json!({}))],
    );
    p.tick(u64::MAX);
    let (ann, bob) = (one_id(&p, "cookie_id", "c-1"), one_id(&p, "cookie_id", "c-b"));
    let cutoff = p.eviction_cutoff(Duration::from_secs(180 * 86_400)).unwrap();
    // The scan, as another thread runs it while the writer goes on.
    let mut listed = p.state().eviction_candidates(cutoff);
    listed.sort();
    let mut want = vec![ann.clone(), bob.clone()];
    want.sort();
    assert_eq!(listed, want, "both old journeys, not the new one");
    // Ann comes back before the writer evicts what the scan listed.
    run(
        &mut p,
        &[web("w9", 525_601, json!({"cookie_id": "c-1"}), "page_view", json!({}))],
    );
    p.tick(u64::MAX);
    p.state().take_dirty();
    assert_eq!(p.evict_listed(&listed, cutoff), 1, "only Bob's");
    assert!(p.state().journey(&ann).unwrap().has_detail(), "Ann's detail stays");
    assert!(!p.state().journey(&bob).unwrap().has_detail());
    assert_eq!(p.state().take_dirty(), vec![bob], "Bob's record is written again");
    assert_eq!(p.evict_listed(&listed, cutoff), 0, "once");
    assert_eq!(
        p.state().recount().bytes,
        p.state().size().bytes,
        "the byte estimate follows"
    );
}

#[test]
fn a_silent_partition_with_a_backlog_is_behind_not_idle() {
    let mut p = processor();
    p.register_partition(0, 0);
    p.register_partition(1, 0);
    p.offer(web("a", 0, json!({"cookie_id": "a"}), "page_view", json!({})), 1, 0, 0);
    p.offer(web("b", 60, json!({"cookie_id": "b"}), "page_view", json!({})), 0, 1, 0);
    // Partition 1 is silent past idle_after, but the broker holds more of it.
    p.set_backlog(1, true);
    p.tick(10_000);
    assert_eq!(p.pending_events(), 1, "partition 0's event waits for partition 1");
    assert_eq!(p.watermark(10_000), Some(crate::testkit::t(0)));
    // Caught up: now its silence means idle.
    p.set_backlog(1, false);
    p.tick(10_000);
    assert_eq!(p.pending_events(), 0);
}

#[test]
fn a_partition_counts_idle_only_on_an_end_read_after_its_silence_began() {
    use crate::testkit::t;
    let mut p = processor();
    p.register_partition(0, 0);
    p.register_partition(1, 0);
    p.offer(web("a", 0, json!({"cookie_id": "a"}), "page_view", json!({})), 1, 0, 0);
    p.offer(web("b", 10, json!({"cookie_id": "b"}), "page_view", json!({})), 0, 1, 0);
    // Both ends read after their last events: caught up, then idle.
    p.report_end(0, false, 500);
    p.report_end(1, false, 500);
    p.tick(3_000);
    assert_eq!(p.pending_events(), 0);
    // Ends read again during the pause (a broker outage ends here).
    p.report_end(0, false, 59_000);
    p.report_end(1, false, 59_000);
    // Partition 0 delivers first: every partition gets a fresh grace.
    p.offer(
        web("c", 100, json!({"cookie_id": "c"}), "page_view", json!({})),
        0,
        2,
        60_000,
    );
    // Past idle_after, partition 1 is silent and its last read said
    // caught up, but that read is older than the burst: records may wait
    // at the broker that no read has seen. It holds.
    p.tick(62_500);
    assert_eq!(p.pending_events(), 1, "c waits for partition 1");
    assert_eq!(p.watermark(62_500), Some(t(0)));
    // A read after the burst began says both are caught up: c goes.
    p.report_end(0, false, 61_000);
    p.report_end(1, false, 61_000);
    p.tick(62_500);
    assert_eq!(p.pending_events(), 0);
    // One that says partition 1 is behind holds it, as set_backlog does.
    p.offer(
        web("d", 200, json!({"cookie_id": "d"}), "page_view", json!({})),
        0,
        3,
        70_000,
    );
    p.report_end(0, false, 70_500);
    p.report_end(1, true, 70_500);
    p.tick(80_000);
    assert_eq!(p.pending_events(), 1, "d waits for partition 1's backlog");
}

#[test]
fn a_partition_waits_for_a_fresh_end_read_for_a_bounded_time() {
    use super::{Holding, FRESH_READ_WAIT_MS};
    let mut p = processor();
    p.register_partition(0, 0);
    p.register_partition(1, 0);
    p.report_end(0, false, 0);
    p.report_end(1, false, 0);
    p.offer(
        web("a", 0, json!({"cookie_id": "a"}), "page_view", json!({})),
        1,
        0,
        1_000,
    );
    p.offer(
        web("b", 10, json!({"cookie_id": "b"}), "page_view", json!({})),
        0,
        1,
        1_000,
    );
    // Partition 0 is read again after its event; partition 1's reads stop
    // (its reader lost it, or its reports stopped).
    p.report_end(0, false, 2_000);
    let idle = 2_000;
    let held = 1_000 + idle + FRESH_READ_WAIT_MS - 1;
    p.tick(held);
    assert_eq!(p.pending_events(), 1, "b waits for a read of partition 1");
    assert_eq!(
        p.holding(held),
        Holding {
            backlog: 0,
            recent: 0,
            unread_end: 1
        }
    );
    // Past the wait, partition 1 counts idle: the watermark is not held for good.
    p.tick(held + 1);
    assert_eq!(p.pending_events(), 0);
    assert_eq!(p.holding(held + 1), Holding::default());
    // A backlog still holds however long, and is named as such.
    p.set_backlog(1, true);
    assert_eq!(p.holding(held + 60_000).backlog, 1);
}

#[test]
fn a_too_late_event_is_told_how_far_behind_it_is() {
    let mut cfg = core_config();
    cfg.dedupe_window = std::time::Duration::from_secs(30 * 86_400);
    let ns = Arc::new(Namespaces::with_defaults());
    let mut p = Processor::new(Arc::new(cfg), Arc::new(State::new(ns)));
    let day = 24 * 60;
    p.process(
        &web("a", 40 * day, json!({"cookie_id": "a"}), "page_view", json!({})),
        0,
    )
    .unwrap();
    let old = web(
        "b",
        4 * day,
        json!({"email": "ann@example.com"}),
        "page_view",
        json!({}),
    );
    assert!(p.too_late(&old));
    let text = p.too_late_text(&old, "already");
    assert!(text.contains("36.0 days behind the events already applied"), "{text}");
    assert!(text.contains(&format!("({:.1} days)", 30.0)), "{text}");
    assert!(!text.contains("ann@"), "nothing of the customer: {text}");
    assert!(
        !text.contains(&old.occurred_at.to_rfc3339()),
        "never the message's values: {text}"
    );
}

#[test]
fn a_lane_moves_with_its_senders_progress_not_only_with_its_events() {
    use crate::testkit::t;
    let mut p = processor();
    p.register_partition(0, 0);
    p.register_partition(1, 0);
    p.offer(web("b", 60, json!({"cookie_id": "b"}), "page_view", json!({})), 0, 0, 0);
    // Lane 1 delivered nothing, but its sender is still reading: it holds,
    // however long it stays silent.
    assert!(p
        .advance_partitions(&[LaneReport::sent(1, EventTime::MIN, true, None)], 100)
        .is_empty());
    assert!(p.tick(10_000).is_empty());
    assert_eq!(p.pending_events(), 1);
    // Its sender has sent everything up to minute 30: b (minute 60) waits.
    assert!(p
        .advance_partitions(&[LaneReport::sent(1, t(30), true, None)], 10_000)
        .is_empty());
    assert_eq!(p.watermark(10_000), Some(t(30)));
    // Up to minute 90: b goes, and an older report does not move it back.
    let out = p.advance_partitions(&[LaneReport::sent(1, t(90), true, None)], 10_001);
    assert_eq!(out.iter().filter_map(|r| r.seq).collect::<Vec<_>>(), vec![0]);
    p.advance_partitions(&[LaneReport::sent(1, t(40), true, None)], 10_002);
    assert_eq!(p.partition_watermark(1), t(90));
    // No longer read: silent past idle_after, it stops holding.
    p.offer(
        web("c", 120, json!({"cookie_id": "c"}), "page_view", json!({})),
        0,
        1,
        10_003,
    );
    p.advance_partitions(&[LaneReport::sent(1, t(90), false, None)], 10_004);
    assert_eq!(p.pending_events(), 1, "c waits while lane 1 is fresh");
    p.tick(60_000);
    assert_eq!(p.pending_events(), 0, "lane 1 idle: c goes");
}

#[test]
fn after_a_pause_the_first_report_of_a_lane_gives_every_lane_a_fresh_grace() {
    use crate::testkit::t;
    let mut p = processor();
    p.register_partition(0, 0);
    p.register_partition(1, 0);
    // Both senders sent up to minute 10, then stopped reading: a pause.
    p.advance_partitions(
        &[
            LaneReport::sent(0, t(10), false, None),
            LaneReport::sent(1, t(10), false, None),
        ],
        0,
    );
    p.tick(10_000);
    // The faster sender reports first: lane 1 is read again, up to minute
    // 1000. Lane 0's sender has not said so yet; its burst is on its way,
    // so lane 0 holds the watermark for idle_after (2 s).
    assert!(p
        .advance_partitions(&[LaneReport::sent(1, t(1000), true, None)], 10_000)
        .is_empty());
    assert_eq!(p.watermark(10_000), Some(t(10)), "lane 0 holds after the pause");
    // Lane 0's first event of the burst is applied in order, not late.
    let mut out = p.offer(
        web("a", 20, json!({"cookie_id": "a"}), "page_view", json!({})),
        0,
        7,
        11_000,
    );
    // Lane 0's sender says nothing more: past idle_after it stops holding.
    out.extend(p.tick(13_001));
    assert_eq!(out.iter().filter_map(|r| r.seq).collect::<Vec<_>>(), vec![7]);
    assert!(out.iter().all(|r| !r.result.as_ref().unwrap().late), "a came in order");
    assert_eq!(p.watermark(13_001), Some(t(1000)));
}

#[test]
fn a_lane_counts_idle_only_on_a_senders_read_after_its_silence_began() {
    use crate::testkit::t;
    // Both senders sent up to minute 10 and read their ends, then a pause.
    let mut p = two_lanes_sent_and_read_at_zero();
    p.tick(10_000);
    // Lane 1 is read again: every lane gets a fresh grace from 10 s. Lane
    // 0's sender says it is not active, on a read it made at 9 s: before
    // the burst, so it may not have seen lane 0's records yet.
    assert!(p
        .advance_partitions(&[LaneReport::sent(1, t(1000), true, Some(10_000))], 10_000)
        .is_empty());
    p.advance_partitions(&[LaneReport::sent(0, t(10), false, Some(9_000))], 10_100);
    p.tick(13_001);
    assert_eq!(
        p.watermark(13_001),
        Some(t(10)),
        "lane 0 holds past idle_after: its read is too old"
    );
    // A read made after the grace began that still finds nothing: idle.
    p.advance_partitions(&[LaneReport::sent(0, t(10), false, Some(12_500))], 13_100);
    assert_eq!(p.watermark(13_101), Some(t(1000)), "lane 0 idle on a fresh read");
}

#[test]
fn a_lane_the_caller_has_not_read_holds_without_restarting_its_silence() {
    use crate::testkit::t;
    let mut p = two_lanes_sent_and_read_at_zero();
    p.offer(web("b", 60, json!({"cookie_id": "b"}), "page_view", json!({})), 1, 0, 0);
    // The caller is behind on lane 0's routed partition: lane 0 holds.
    let behind = LaneReport {
        unread: true,
        ..LaneReport::sent(0, t(10), false, Some(4_000))
    };
    assert!(p.advance_partitions(&[behind], 5_000).is_empty());
    assert_eq!(p.holding(5_000).backlog, 1);
    assert_eq!(p.pending_events(), 1, "b waits while lane 0 is unread");
    // Caught up, and its sender still silent since before: idle at once.
    // (Counted as a sign of its sender, the report at 5 s had begun every
    // lane's silence again, and b waited another idle_after.)
    let out = p.advance_partitions(&[LaneReport::sent(0, t(10), false, Some(4_000))], 5_100);
    assert_eq!(out.iter().filter_map(|r| r.seq).collect::<Vec<_>>(), vec![0]);
}

/// Lanes 0 and 1 registered at 0 ms, each reported at 0 ms as sent up to
/// minute 10, not active, its end read at 0 ms.
fn two_lanes_sent_and_read_at_zero() -> Processor {
    use crate::testkit::t;
    let mut p = processor();
    p.register_partition(0, 0);
    p.register_partition(1, 0);
    p.advance_partitions(
        &[
            LaneReport::sent(0, t(10), false, Some(0)),
            LaneReport::sent(1, t(10), false, Some(0)),
        ],
        0,
    );
    p
}

fn quiet_timers(p: &Processor) -> usize {
    p.timers.iter().filter(|t| t.1 == TimerKind::Quiet).count()
}

#[test]
fn one_quiet_check_per_profile_however_many_events() {
    let mut p = processor();
    let views: Vec<_> = (0..50)
        .map(|i| web(&format!("w{i}"), i, json!({"cookie_id": "c-1"}), "page_view", json!({})))
        .collect();
    run(&mut p, &views);
    assert_eq!(quiet_timers(&p), 1, "50 events, one profile");

    // A second profile, then a login that merges the two: both checks still
    // exist; the first to come due re-arms for the merged journey, the other
    // is dropped as stale when it comes due.
    run(
        &mut p,
        &[pos("p1", 60, json!({"loyalty_id": "L-1", "email": "m@x.com"}), 20.0)],
    );
    assert_eq!(quiet_timers(&p), 2);
    run(
        &mut p,
        &[web(
            "w-login",
            70,
            json!({"cookie_id": "c-1", "email": "m@x.com"}),
            "login",
            json!({}),
        )],
    );
    let day = 24 * 60;
    run(
        &mut p,
        &[web(
            "other",
            45 * day,
            json!({"cookie_id": "other"}),
            "page_view",
            json!({}),
        )],
    );
    let merged = p
        .state()
        .all_journeys()
        .into_iter()
        .find(|(_, j)| j.purchases == 1)
        .map(|(id, _)| id);
    let merged = merged.expect("the merged journey");
    let lapsed_evaluations = p.state().journey(&merged).and_then(|j| j.churn.evaluated_at.get());
    // Last activity at minute 70: lapsed at 30 days + 70 minutes, once.
    assert_eq!(lapsed_evaluations, Some(crate::testkit::t(30 * day + 70)));
    // The merged profile's next check and the other customer's: one each (a
    // stale check that re-armed would make three).
    assert_eq!(quiet_timers(&p), 2);
}

#[test]
fn decisions_keep_their_score_what_they_beat_and_what_policy_held_back() {
    let mut p = processor();
    let day = 24 * 60;
    let ids = || json!({"customer_id": "C-9", "email": "nine@x.com", "phone": "+44 20 7946 0999"});
    // Four big purchases: the third makes loyalty_upgrade (tier a, 3 purchases)
    // beat post_purchase_follow_up; the fourth falls in loyalty_upgrade's cool-down.
    let mut events: Vec<ChannelEvent> = [0, 8 * day, 16 * day, 18 * day]
        .into_iter()
        .enumerate()
        .map(|(i, m)| pos(&format!("p{i}"), m, ids(), 5000.0))
        .collect();
    // A complaint moves the churn score: a second point in its history.
    events.push(call("c1", 18 * day + 60, ids(), "complaint", "unresolved"));
    run(&mut p, &events);
    let c9 = one_id(&p, "customer_id", "C-9");
    let j = p.state.journey(&c9).unwrap();
    type Context<'a> = (&'a str, Option<f64>, Vec<(&'a str, f64)>, Vec<(&'a str, Suppressed)>);
    let got: Vec<Context> = j
        .recent_actions
        .iter()
        .map(|a| {
            (
                a.action.as_str(),
                a.score,
                a.beaten.iter().map(|b| (b.action.as_str(), b.score)).collect(),
                a.held_back.iter().map(|h| (h.action.as_str(), h.rule)).collect(),
            )
        })
        .collect();
    assert_eq!(
        got[1..3],
        [
            (
                "post_purchase_follow_up",
                Some(2.4),
                vec![],
                vec![("loyalty_upgrade", Suppressed::Cooldown)]
            ),
            (
                "loyalty_upgrade",
                Some(6.0),
                vec![("post_purchase_follow_up", 2.4)],
                vec![]
            ),
        ],
        "newest first, after the complaint's service_recovery: {got:?}"
    );
    // The churn history kept the evaluations that moved the score, in time order.
    let h = &j.churn.history;
    assert!(h.len() >= 2 && h.len() <= crate::journey::CHURN_HISTORY, "{h:?}");
    assert!(h.last().is_some_and(|x| !x.contributions.is_empty()), "{h:?}");
    assert!(h.iter().zip(h.iter().skip(1)).all(|(a, b)| a.at <= b.at));
    assert_eq!(h.last().map(|x| x.score), Some(j.churn.score));
}

#[test]
fn a_forget_publishes_an_erasure_record_with_hashed_entries_only() {
    use crate::output::{CommandRef, ErasureRequest};
    let mut p = processor();
    run(
        &mut p,
        &[web(
            "w1",
            0,
            json!({"email": "Ann@x.com", "customer_id": "C-1", "cookie_id": "c-1"}),
            "add_to_cart",
            product("a", 30.0),
        )],
    );
    let key = key(&p, "customer_id", "C-1");
    let request = ErasureRequest {
        requested_by: Some("privacy-office".into()),
        via: "http",
        requested_at: Some(EventTime::from_millis(1_793_491_200_000)),
        command: CommandRef {
            topic: "identity-control".into(),
            partition: 1,
            offset: 7,
        },
    };
    let outs = p.forget(&key, request.clone());
    assert_eq!(outs.len(), 2, "{outs:?}");
    let Output::Erasure(erasure) = &outs[1] else {
        panic!("{outs:?}");
    };
    assert_eq!(erasure.one_id.as_ref(), outs[0].one_id());
    assert_eq!(erasure.request, request);
    let namespaces: Vec<&str> = erasure.suppressed.iter().map(|s| s.namespace.as_str()).collect();
    assert_eq!(namespaces.len(), 3);
    for ns in ["email_sha256", "customer_id", "cookie_id"] {
        assert!(namespaces.contains(&ns), "{namespaces:?}");
    }
    let v: serde_json::Value = serde_json::from_slice(&outs[1].to_json()).unwrap();
    let schema: serde_json::Value = serde_json::from_str(include_str!("../../../../schemas/erasure.v1.json")).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    if let Err(e) = validator.validate(&v) {
        panic!("{e}: {v}");
    }
    let text = v.to_string();
    for value in ["C-1", "c-1", "ann@x.com", "Ann@x.com"] {
        assert!(!text.contains(value), "no identifier value in {text}");
    }
    // The entries are what the graph now suppresses; a second forget finds nothing.
    assert!(p.state().identity.is_suppressed(&key));
    assert!(p.forget(&key, request).is_empty());
    assert!(p.state().journeys.is_empty());
}

#[test]
fn the_identity_ops_waiting_for_a_checkpoint_count_in_the_state_estimate_until_taken() {
    let mut p = processor();
    let events: Vec<ChannelEvent> = (0..op_log::BLOCK as i64)
        .map(|i| {
            let ids = json!({"cookie_id": format!("c-{i}")});
            web(&format!("w{i}"), i, ids, "page_view", json!({}))
        })
        .collect();
    run(&mut p, &events);
    let pending = p.identity_log.approx_bytes();
    assert!(
        pending >= 2 * op_log::BLOCK * std::mem::size_of::<crate::identity::IdentityOp>(),
        "a new profile an event: more than one op each, {pending} bytes"
    );
    let before = p.state().approx_bytes();
    let ops = p.take_identity_ops();
    assert!(ops.len() > op_log::BLOCK);
    assert_eq!(
        before - p.state().approx_bytes(),
        pending,
        "taken, they no longer count"
    );
}

#[test]
fn events_waiting_for_the_watermark_count_in_the_state_estimate_until_released() {
    let mut p = processor();
    p.process(&web("1", 0, json!({"cookie_id": "c"}), "page_view", json!({})), 1)
        .unwrap();
    drop(p.take_identity_ops());
    let before = p.state().approx_bytes();
    // Partition 0 races ahead: a sale with two line items waits.
    let mut sale = pos("2", 600, json!({"loyalty_id": "L-1"}), 80.0);
    sale.activity = crate::event::Activity::Sale {
        total: 80.0,
        items: vec![
            crate::event::LineItem {
                sku: "sku-with-a-long-name".into(),
                quantity: 1,
                unit_price: 30.0,
                category: Some("shoes".into()),
            };
            2
        ],
    };
    let held = sale.approx_bytes();
    assert!(held > std::mem::size_of::<ChannelEvent>() + 2 * "sku-with-a-long-name".len());
    p.process(&sale, 0).unwrap();
    assert_eq!(p.pending_events(), 1);
    assert_eq!(p.state().approx_bytes() - before, held, "the waiting event counts");
    // Released (both partitions fall silent), it no longer counts as waiting.
    p.tick(10_000);
    assert_eq!(p.pending_events(), 0);
    assert_eq!(p.pending_bytes, 0);
    // A duplicate that waited is released without being applied: the
    // estimate is synced all the same.
    drop(p.take_identity_ops());
    let settled = p.state().approx_bytes();
    p.process(&web("1", 1, json!({"cookie_id": "c"}), "page_view", json!({})), 1)
        .unwrap();
    let mut again = sale.clone();
    again.occurred_at = crate::testkit::t(1_200);
    p.process(&again, 0).unwrap();
    assert_eq!(p.pending_events(), 1, "the duplicate of 2 waits for partition 1");
    p.tick(20_000);
    assert_eq!(p.pending_events(), 0);
    assert_eq!(p.state().approx_bytes(), settled + p.identity_log.approx_bytes());
}
