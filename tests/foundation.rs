//! End-to-end: the foundation's promises, through a real broker.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use onejourney_e2e::{committed, end_offsets, settings, TestEngine, INPUT_PARTITIONS};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);

fn at(minute: i64) -> String {
    onejourney_simulator::rfc3339(1_793_491_200_000 + minute * 60_000)
}

fn web(id: &str, minute: i64, event_type: &str, ids: Value, extra: Value) -> Value {
    let mut v = json!({"event_id": id, "event_type": event_type, "occurred_at": at(minute),
        "identifiers": ids, "session_id": "s-1"});
    v.as_object_mut()
        .unwrap()
        .extend(extra.as_object().cloned().unwrap_or_default());
    v
}

fn app(id: &str, minute: i64, ids: Value) -> Value {
    json!({"event_id": id, "event_type": "session_start", "occurred_at": at(minute),
        "identifiers": ids, "session_id": "as-1", "platform": "android"})
}

fn sale(id: &str, minute: i64, ids: Value, total: f64) -> Value {
    json!({"event_id": id, "event_type": "sale", "occurred_at": at(minute), "identifiers": ids,
        "transaction_id": format!("tx-{id}"), "store_id": "st-9", "total": total, "currency": "EUR"})
}

fn call(id: &str, minute: i64, ids: Value, reason: &str, outcome: &str) -> Value {
    json!({"event_id": id, "event_type": "inbound_call", "occurred_at": at(minute), "identifiers": ids,
        "call_id": format!("call-{id}"), "reason": reason, "outcome": outcome})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_person_across_four_channels_ends_on_one_one_id() {
    let mut e = TestEngine::start(settings("story")).await;
    let t = e.topics.clone();
    let email = "Ann.Lee@Example.com";
    let phone = "+44 20 7946 0018";
    // Each identifier is first seen alone, then linked: three merges.
    e.produce_json(
        &t.web_clicks,
        &web("w1", 0, "page_view", json!({"cookie_id": "c-ann"}), json!({})),
    )
    .await;
    e.produce_json(&t.app_sessions, &app("a1", 1, json!({"device_id": "d-ann"})))
        .await;
    e.produce_json(
        &t.pos_transactions,
        &sale("p1", 2, json!({"loyalty_id": "L-ann"}), 20.0),
    )
    .await;
    e.produce_json(
        &t.call_center_events,
        &call("k1", 3, json!({"phone": phone}), "billing", "resolved"),
    )
    .await;
    e.eventually("four separate profiles", WAIT, |s| s.identity.profile_count() == 4)
        .await;
    e.produce_json(
        &t.web_clicks,
        &web(
            "w2",
            10,
            "login",
            json!({"cookie_id": "c-ann", "email": email, "customer_id": "C-1001"}),
            json!({}),
        ),
    )
    .await;
    e.eventually("login stitched", WAIT, |s| s.identity.identifier_count() == 6)
        .await;
    e.produce_json(
        &t.app_sessions,
        &app("a2", 20, json!({"device_id": "d-ann", "customer_id": "C-1001"})),
    )
    .await;
    e.produce_json(
        &t.pos_transactions,
        &sale("p2", 30, json!({"loyalty_id": "L-ann", "email": email}), 45.0),
    )
    .await;
    e.produce_json(
        &t.call_center_events,
        &call(
            "k2",
            40,
            json!({"phone": phone, "customer_id": "C-1001"}),
            "order_status",
            "resolved",
        ),
    )
    .await;

    let changes = e.read_until(&t.identity_changes, WAIT, |r| r.len() >= 3).await;
    assert_eq!(changes.len(), 3, "three merges on identity-changes");
    let survivor = changes[0].json()["one_id"].as_str().unwrap().to_string();
    let mut merged = BTreeSet::new();
    for c in &changes {
        let v = c.json();
        assert_eq!(v["change"], "merge");
        assert_eq!(v["one_id"].as_str().unwrap(), survivor);
        assert_eq!(
            c.key.as_deref(),
            Some(survivor.as_bytes()),
            "keyed by the surviving One ID"
        );
        merged.extend(
            v["merged_one_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m.as_str().unwrap().to_string()),
        );
        assert!(
            !v.to_string().contains("Example.com") && !v.to_string().contains("7946"),
            "no raw PII: {v}"
        );
    }
    assert_eq!(merged.len(), 3);
    assert!(!merged.contains(&survivor));

    // Every identifier, raw or hashed, finds the same profile.
    let sha = onejourney_core::ids::sha256_hex("ann.lee@example.com");
    for path in [
        "cookie_id/c-ann".to_string(),
        "device_id/d-ann".to_string(),
        "loyalty_id/L-ann".to_string(),
        "customer_id/C-1001".to_string(),
        "email/Ann.Lee@Example.com".to_string(),
        format!("email_sha256/{sha}"),
        "phone/+442079460018".to_string(),
    ] {
        let (status, body) = e.get_json(&format!("/v1/profiles/{path}")).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(body["one_id"].as_str(), Some(survivor.as_str()), "{path}");
    }
    let (_, body) = e.get_json("/v1/profiles/customer_id/C-1001").await;
    assert_eq!(
        body["journey"]["channels_touched"],
        json!(["web", "pos", "app", "call_center"])
    );
    assert_eq!(body["journey"]["channels"]["call_center"]["events"], 2);
    assert_eq!(body["journey"]["purchases"], 2);
    // The only buyer is in the lowest fifth of every RFM dimension, and has a lifetime value.
    assert_eq!(body["journey"]["rfm"], json!({"r": 1, "f": 1, "m": 1}), "{body}");
    let clv = &body["journey"]["clv"];
    assert!(clv["value"].as_f64().is_some_and(|v| v > 0.0), "{clv}");
    assert!(
        clv["p_active"].as_f64().is_some_and(|p| (0.0..=1.0).contains(&p)),
        "{clv}"
    );
    assert_eq!(clv["horizon_days"], 365.0, "{clv}");
    assert!(!body.to_string().contains("Ann.Lee"), "no raw email in the profile");
    assert_eq!(e.get_json("/v1/profiles/customer_id/nobody").await.0, 404);
    let (status, by_id) = e.get_json(&format!("/v1/profiles/one_id/{survivor}")).await;
    assert_eq!(status, 200);
    assert_eq!(by_id["one_id"].as_str(), Some(survivor.as_str()));
    assert_eq!(e.get_json("/v1/profiles/one_id/oj-nobody").await.0, 404);
    assert_eq!(e.get_json("/v1/profiles/ssn/1").await.0, 400);
    assert_eq!(e.metric("onejourney_identity_merges_total").await, 3.0);
    e.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_customers_sharing_a_device_stay_two_profiles() {
    let mut e = TestEngine::start(settings("shared")).await;
    let t = e.topics.clone();
    e.produce_json(
        &t.app_sessions,
        &app("a1", 0, json!({"device_id": "family-tablet", "customer_id": "C-1"})),
    )
    .await;
    e.produce_json(
        &t.app_sessions,
        &app("a2", 5, json!({"device_id": "family-tablet", "customer_id": "C-2"})),
    )
    .await;
    e.eventually("both events processed", WAIT, |s| s.journeys.len() == 2)
        .await;
    let (s1, p1) = e.get_json("/v1/profiles/customer_id/C-1").await;
    let (s2, p2) = e.get_json("/v1/profiles/customer_id/C-2").await;
    assert_eq!((s1, s2), (200, 200));
    assert_ne!(p1["one_id"], p2["one_id"]);
    // The tablet, seen with two customer ids, is shared: it leaves C-1's
    // profile for one of its own and links nobody.
    assert_eq!(e.state().identity.profile_count(), 3);
    let (_, tablet) = e.get_json("/v1/profiles/device_id/family-tablet").await;
    assert_ne!(tablet["one_id"], p1["one_id"]);
    assert_ne!(tablet["one_id"], p2["one_id"]);
    assert_eq!(
        e.metric("onejourney_identity_links_rejected_total{reason=\"shared_device\"}")
            .await,
        1.0
    );
    let changes = e
        .read_until(&t.identity_changes, Duration::from_secs(3), |_| false)
        .await;
    assert!(changes.is_empty(), "no merge published: {changes:?}");
    e.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_go_to_dead_letter_and_valid_ones_are_processed() {
    let mut s = settings("malformed");
    s.ingest.max_message_bytes = 4096;
    let mut e = TestEngine::start(s).await;
    let t = e.topics.clone();
    let bad: Vec<(&str, Vec<u8>, &str)> = vec![
        (t.web_clicks.as_str(), b"{this is not json".to_vec(), "invalid_json"),
        (t.web_clicks.as_str(), vec![0xff, 0x00, 0x13], "invalid_json"),
        (
            t.web_clicks.as_str(),
            serde_json::to_vec(&json!({"event_type": "page_view"})).unwrap(),
            "schema",
        ),
        (
            t.web_clicks.as_str(),
            serde_json::to_vec(&web("b1", 0, "teleport", json!({"cookie_id": "x"}), json!({}))).unwrap(),
            "schema",
        ),
        (
            t.app_sessions.as_str(),
            serde_json::to_vec(&app("b2", 0, json!({"passport": "P1"}))).unwrap(),
            "unknown_namespace",
        ),
        (
            t.app_sessions.as_str(),
            serde_json::to_vec(&app("b3", 0, json!({}))).unwrap(),
            "empty_identifiers",
        ),
        (
            t.pos_transactions.as_str(),
            serde_json::to_vec(&sale("b4", 0, json!({"loyalty_id": "L"}), -5.0)).unwrap(),
            "schema",
        ),
        (
            t.call_center_events.as_str(),
            serde_json::to_vec(
                &json!({"event_id": "b5", "event_type": "inbound_call", "occurred_at": at(0),
                "identifiers": {"customer_id": "C"}, "call_id": "x", "csat": 9}),
            )
            .unwrap(),
            "schema",
        ),
        (
            t.web_clicks.as_str(),
            serde_json::to_vec(&web(
                "b6",
                0,
                "page_view",
                json!({"cookie_id": "x"}),
                json!({"url": "y".repeat(5000)}),
            ))
            .unwrap(),
            "too_large",
        ),
        (
            t.web_clicks.as_str(),
            serde_json::to_vec(&web(
                "b7",
                0,
                "page_view",
                json!({"cookie_id": "null", "email": "undefined"}),
                json!({}),
            ))
            .unwrap(),
            "no_usable_identifier",
        ),
    ];
    let mut valid = 0;
    for (i, (topic, bytes, _)) in bad.iter().enumerate() {
        e.produce(topic, Some(format!("key-{i}").as_bytes()), bytes).await;
        let ok = web(
            &format!("v{i}"),
            i as i64,
            "page_view",
            json!({"cookie_id": format!("c-{i}")}),
            json!({}),
        );
        e.produce_json(&t.web_clicks, &ok).await;
        valid += 1;
    }
    let dlq = e.read_until(&t.dead_letter, WAIT, |r| r.len() >= bad.len()).await;
    assert_eq!(dlq.len(), bad.len());
    for (i, (topic, bytes, reason)) in bad.iter().enumerate() {
        let key = format!("key-{i}");
        let rec = dlq
            .iter()
            .find(|r| r.key.as_deref() == Some(key.as_bytes()))
            .unwrap_or_else(|| panic!("message {i} ({reason}) not on dead-letter"));
        assert_eq!(&rec.payload, bytes, "original bytes, untouched");
        assert_eq!(rec.headers.get("dlq.topic").map(String::as_str), Some(*topic));
        assert_eq!(
            rec.headers.get("dlq.reason").map(String::as_str),
            Some(*reason),
            "message {i}"
        );
        assert!(
            rec.headers.get("dlq.error").is_some_and(|e| e.len() > 10),
            "{:?}",
            rec.headers
        );
        assert!(rec
            .headers
            .get("dlq.partition")
            .is_some_and(|p| p.parse::<i32>().is_ok()));
        assert!(rec.headers.get("dlq.offset").is_some_and(|o| o.parse::<i64>().is_ok()));
    }
    e.eventually("every valid event processed", WAIT, |s| {
        s.identity.profile_count() == valid
    })
    .await;
    assert_eq!(e.get_status("/readyz").await, 200, "still ready");
    assert_eq!(e.metric("onejourney_dead_letter_total").await, bad.len() as f64);
    assert_eq!(
        e.metric("onejourney_events_invalid_total{channel=\"web\",reason=\"invalid_json\"}")
            .await,
        2.0
    );
    assert_eq!(
        e.metric("onejourney_events_invalid_total{channel=\"web\",reason=\"too_large\"}")
            .await,
        1.0
    );

    // A graceful stop commits everything: a restart would re-process nothing.
    let group = e.settings.kafka.group_id.clone();
    e.stop().await;
    for topic in [
        &t.web_clicks,
        &t.app_sessions,
        &t.pos_transactions,
        &t.call_center_events,
    ] {
        let ends = end_offsets(topic, INPUT_PARTITIONS).await;
        let done = committed(&group, topic, INPUT_PARTITIONS).await;
        for (p, (end, c)) in ends.iter().zip(&done).enumerate() {
            if *end > 0 {
                assert_eq!(c, end, "{topic}[{p}] committed to the end");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_cart_and_an_unhappy_customer_get_decisions() {
    let mut e = TestEngine::start(settings("decide")).await;
    let t = e.topics.clone();
    let shopper = json!({"cookie_id": "c-shop", "email": "shopper@example.org", "customer_id": "C-77"});
    e.produce_keyed(
        &t.web_clicks,
        "session-1",
        &web("w1", 0, "login", shopper.clone(), json!({})),
    )
    .await;
    e.produce_json(
        &t.web_clicks,
        &web(
            "w2",
            2,
            "add_to_cart",
            json!({"cookie_id": "c-shop"}),
            json!({"product": {"sku": "boot-1", "price": 129.0, "category": "shoes"}}),
        ),
    )
    .await;
    // Someone else's event on the same partition, 45 minutes later, moves that
    // partition's event time (its watermark) past the cart timer.
    e.produce_json(
        &t.web_clicks,
        &web("w3", 47, "page_view", json!({"cookie_id": "c-other"}), json!({})),
    )
    .await;

    let unhappy = json!({"customer_id": "C-99", "phone": "+1 202 555 0199"});
    e.produce_json(
        &t.call_center_events,
        &call("k1", 50, unhappy.clone(), "complaint", "unresolved"),
    )
    .await;
    e.produce_json(
        &t.call_center_events,
        &call("k2", 60, unhappy.clone(), "complaint", "escalated"),
    )
    .await;
    e.produce_json(
        &t.call_center_events,
        &call("k3", 70, unhappy.clone(), "cancel_request", "unresolved"),
    )
    .await;

    let actions = e
        .read_until(&t.next_best_actions, WAIT, |r| {
            r.iter().any(|x| x.json()["action"] == "cart_recovery")
        })
        .await;
    let cart = actions
        .iter()
        .map(|r| r.json())
        .find(|v| v["action"] == "cart_recovery")
        .expect("cart_recovery on next-best-actions");
    let (_, shopper_profile) = e.get_json("/v1/profiles/customer_id/C-77").await;
    assert_eq!(cart["one_id"], shopper_profile["one_id"]);
    assert_eq!(cart["channel"], "email");
    assert_eq!(cart["trigger"]["kind"], "timer");
    assert!(cart["identifiers"]["email_sha256"].is_string());
    assert!(cart["factors"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["name"] == "cart_value" && f["value"] == 129.0));

    let churn = e
        .read_until(&t.churn_risk, WAIT, |r| r.iter().any(|x| x.json()["band"] == "high"))
        .await;
    let high = churn
        .iter()
        .map(|r| r.json())
        .find(|v| v["band"] == "high")
        .expect("a high churn-risk record");
    let (_, unhappy_profile) = e.get_json("/v1/profiles/customer_id/C-99").await;
    assert_eq!(high["one_id"], unhappy_profile["one_id"]);
    assert!(high["score"].as_f64().unwrap() >= 0.7);
    assert!(high["factors"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["name"] == "cancel_requests"));
    assert!(e.metric("onejourney_churn_band_changes_total{band=\"high\"}").await >= 1.0);
    assert!(
        e.metric("onejourney_actions_emitted_total{action=\"cart_recovery\",channel=\"email\"}")
            .await
            >= 1.0
    );
    e.stop().await;
}
