//! The contact policy through the processor: consent carried by events and
//! by control commands, kept through merges, and the decoding of both.

use serde_json::json;

use super::*;
use crate::decide::quiet::During;
use crate::event::{ConsentCommand, ControlCommand};
use crate::ids::Namespaces;
use crate::output::{NextBestAction, Output};
use crate::testkit::{app, at, core_config, decoder, key, product, t, web};
use crate::vocab::ContactChannel;

fn processor() -> Processor {
    let ns = Arc::new(Namespaces::with_defaults());
    Processor::new(Arc::new(core_config()), Arc::new(State::new(ns)))
}

fn actions(outs: Vec<Output>) -> Vec<NextBestAction> {
    outs.into_iter()
        .filter_map(|o| match o {
            Output::Action(a) => Some(a),
            _ => None,
        })
        .collect()
}

/// A login (with `extra`, e.g. a consent statement) and a cart at `minute`,
/// then a page view an hour later: the cart timer fires in between.
fn cart_story(p: &mut Processor, tag: &str, minute: i64, extra: serde_json::Value) -> Vec<NextBestAction> {
    let ids = json!({"cookie_id": "c-1", "email": "ann@x.com"});
    let events = [
        web(&format!("{tag}-l"), minute, ids.clone(), "login", extra),
        web(
            &format!("{tag}-c"),
            minute + 1,
            ids.clone(),
            "add_to_cart",
            product("shoe", 80.0),
        ),
        web(
            &format!("{tag}-v"),
            minute + 60,
            json!({"cookie_id": "other"}),
            "page_view",
            json!({}),
        ),
    ];
    actions(events.iter().flat_map(|e| p.process(e, 0).unwrap().outputs).collect())
}

fn cart_channel(list: &[NextBestAction]) -> Option<&'static str> {
    list.iter().find(|a| a.action == "cart_recovery").map(|a| a.channel)
}

fn command(p: &Processor, granted: bool, minute: i64) -> ConsentCommand {
    ConsentCommand {
        key: key(p, "email", "ann@x.com"),
        channel: ContactChannel::Email,
        granted,
        at: t(minute),
    }
}

#[test]
fn an_opt_out_on_an_event_keeps_email_quiet_and_a_later_opt_in_lifts_it() {
    let mut p = processor();
    assert_eq!(cart_channel(&cart_story(&mut p, "a", 0, json!({}))), Some("email"));
    let mut p = processor();
    let out = cart_story(&mut p, "a", 0, json!({"consent": {"email": "opt_out"}}));
    assert_eq!(
        cart_channel(&out),
        Some("web"),
        "the next channel in the catalog's order"
    );
    // Nine days later (past the e-mail cap and the cool-down), opted in again.
    let out = cart_story(&mut p, "b", 9 * 24 * 60, json!({"consent": {"email": "opt_in"}}));
    assert_eq!(cart_channel(&out), Some("email"));
}

#[test]
fn consent_commands_opt_out_and_in_and_an_unknown_identifier_is_not_kept() {
    let mut p = processor();
    let cmd = command(&p, false, 0);
    assert!(!p.consent(&cmd), "no profile holds the identifier yet");
    cart_story(&mut p, "a", 0, json!({}));
    assert!(p.consent(&command(&p, false, 100)));
    let out = cart_story(&mut p, "b", 9 * 24 * 60, json!({}));
    assert_eq!(cart_channel(&out), Some("web"));
    // An opt-in older than the opt-out loses; a newer one wins.
    assert!(p.consent(&command(&p, true, 50)));
    let out = cart_story(&mut p, "c", 18 * 24 * 60, json!({}));
    assert_eq!(cart_channel(&out), Some("web"));
    assert!(p.consent(&command(&p, true, 18 * 24 * 60 + 200)));
    let out = cart_story(&mut p, "d", 27 * 24 * 60, json!({}));
    assert_eq!(cart_channel(&out), Some("email"));
}

#[test]
fn a_merge_keeps_the_newest_statement_whichever_profile_had_it() {
    for order in [false, true] {
        let mut p = processor();
        let a = web(
            "a",
            5,
            json!({"cookie_id": "c-a"}),
            "page_view",
            json!({"consent": {"sms": "opt_out"}}),
        );
        let b = web(
            "b",
            1,
            json!({"cookie_id": "c-b"}),
            "page_view",
            json!({"consent": {"sms": "opt_in"}}),
        );
        let (first, second) = if order { (&a, &b) } else { (&b, &a) };
        p.process(first, 0).unwrap();
        p.process(second, 0).unwrap();
        let link = web(
            "m",
            9,
            json!({"cookie_id": "c-a", "email": "m@x.com"}),
            "login",
            json!({}),
        );
        p.process(&link, 0).unwrap();
        let link = web(
            "n",
            10,
            json!({"cookie_id": "c-b", "email": "m@x.com"}),
            "login",
            json!({}),
        );
        let one_id = p.process(&link, 0).unwrap().one_id.unwrap();
        let j = p.state.journey(&one_id).unwrap().clone();
        let sms = j.consent.get(ContactChannel::Sms).unwrap();
        assert!(!sms.granted, "the opt-out at minute 5 is newer");
        assert_eq!(sms.at, t(5));
    }
}

/// A cart on the app at 23:00 local time (UTC+2) by a customer reachable
/// by push alone, then activity elsewhere the next day: the cart timer fires
/// at 23:31 local, inside quiet hours.
fn night_cart(during: During) -> Vec<NextBestAction> {
    let mut cfg = core_config();
    cfg.decide.policy.quiet_hours.as_mut().unwrap().during = during;
    let mut p = Processor::new(
        Arc::new(cfg),
        Arc::new(State::new(Arc::new(Namespaces::with_defaults()))),
    );
    let ids = json!({"device_id": "d-n"});
    let local = json!({"utc_offset_minutes": 120});
    let mut extra = product("lamp", 60.0);
    extra
        .as_object_mut()
        .unwrap()
        .extend(local.as_object().unwrap().clone());
    let events = [
        app("n1", 21 * 60, ids.clone(), "session_start", local.clone()),
        app("n2", 21 * 60 + 1, ids, "add_to_cart", extra),
        app("x", 36 * 60, json!({"device_id": "other"}), "session_start", json!({})),
    ];
    actions(events.iter().flat_map(|e| p.process(e, 0).unwrap().outputs).collect())
}

#[test]
fn an_action_due_in_quiet_hours_waits_for_their_end_or_is_dropped() {
    let deferred = night_cart(During::Defer);
    let cart: Vec<_> = deferred.iter().filter(|a| a.action == "cart_recovery").collect();
    assert_eq!(cart.len(), 1, "{deferred:?}");
    assert_eq!(cart[0].channel, "push");
    // 08:00 at UTC+2 is 06:00 UTC the next day.
    assert_eq!(cart[0].decided_at, t(30 * 60));
    assert_eq!(cart[0].trigger.timer, Some("quiet_hours_end"));
    let dropped = night_cart(During::Drop);
    assert!(dropped.iter().all(|a| a.action != "cart_recovery"), "{dropped:?}");
}

#[test]
fn consent_and_offset_fields_and_consent_commands_decode() {
    let d = decoder();
    let v = json!({"event_id": "e", "event_type": "page_view", "occurred_at": at(0),
        "identifiers": {"cookie_id": "c"}, "session_id": "s",
        "consent": {"push": "opt_out", "email": "opt_in"}, "utc_offset_minutes": -300});
    let ev = d.decode(Channel::Web, &serde_json::to_vec(&v).unwrap()).unwrap();
    assert_eq!(
        ev.consent,
        vec![(ContactChannel::Email, true), (ContactChannel::Push, false)]
    );
    assert_eq!(ev.utc_offset_minutes, Some(-300));
    for bad in [
        json!({"consent": {"email": "maybe"}}),
        json!({"consent": {"web": "opt_in"}}),
        json!({"utc_offset_minutes": 900}),
    ] {
        let mut v = v.clone();
        v.as_object_mut().unwrap().extend(bad.as_object().unwrap().clone());
        let e = d.decode(Channel::Web, &serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert_eq!(e.reason(), "schema", "{e}");
    }
    let cmd = json!({"command": "consent", "namespace": "email", "value": "Ann@x.com",
        "channel": "sms", "status": "opt_out", "at": at(3)});
    let ControlCommand::Consent(c) = d.decode_control(&serde_json::to_vec(&cmd).unwrap()).unwrap() else {
        panic!("a consent command");
    };
    assert_eq!((c.channel, c.granted, c.at), (ContactChannel::Sms, false, t(3)));
    let mut no_time = cmd.clone();
    no_time.as_object_mut().unwrap().remove("at");
    let e = d.decode_control(&serde_json::to_vec(&no_time).unwrap()).unwrap_err();
    assert_eq!(e.reason(), "schema", "{e}");
}

/// One customer on the web alone: a cart (e-mail), a purchase (SMS, the
/// e-mail cap being used), a second cart a day later (web): three messages
/// on three channels, each under its own cap. The e2e test
/// `tests/contact_policy.rs` feeds the same story.
fn three_channel_story(budget: Option<crate::decide::policy::Budget>) -> (Vec<NextBestAction>, Vec<Suppressed>) {
    let mut cfg = core_config();
    cfg.decide.policy.budget = budget;
    let mut p = Processor::new(
        Arc::new(cfg),
        Arc::new(State::new(Arc::new(Namespaces::with_defaults()))),
    );
    let ids = json!({"cookie_id": "c-b", "email": "bea@x.com", "phone": "+44 20 7946 0101"});
    let c = json!({"cookie_id": "c-b"});
    let events = [
        web("b1", 0, ids, "login", json!({})),
        web("b2", 1, c.clone(), "add_to_cart", product("shoe", 80.0)),
        web("b3", 40, c.clone(), "page_view", json!({})),
        web(
            "b4",
            60,
            c.clone(),
            "purchase",
            json!({"order_id": "o-1", "revenue": 80.0}),
        ),
        web("b5", 1500, c.clone(), "add_to_cart", product("hat", 30.0)),
        web("b6", 1600, c, "page_view", json!({})),
    ];
    let mut outs = Vec::new();
    let mut held = Vec::new();
    for e in &events {
        let r = p.process(e, 0).unwrap();
        outs.extend(r.outputs);
        held.extend(r.suppressed.into_iter().map(|(_, why)| why));
    }
    (actions(outs), held)
}

#[test]
fn the_cross_channel_budget_holds_back_what_the_channel_caps_let_through() {
    let (free, _) = three_channel_story(None);
    let channels: Vec<&str> = free.iter().map(|a| a.channel).collect();
    assert_eq!(channels, ["email", "sms", "web"], "{free:?}");
    let two = crate::decide::policy::Budget {
        max: 2,
        per: std::time::Duration::from_secs(7 * 24 * 3600),
    };
    let (held, why) = three_channel_story(Some(two));
    let channels: Vec<&str> = held.iter().map(|a| a.channel).collect();
    assert_eq!(channels, ["email", "sms"]);
    assert!(why.contains(&Suppressed::Budget), "{why:?}");
}
