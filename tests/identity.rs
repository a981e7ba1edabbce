//! End-to-end: identity rules through a real broker (issue #3): a shared
//! device and a junk value do not merge strangers, forget survives replays,
//! and the lookup API explains a merge.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use onejourney_e2e::{settings, TestEngine};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(90);
const ERASE: &str = "identity-erase-token";

fn at(minute: i64) -> String {
    onejourney_simulator::rfc3339(1_793_491_200_000 + minute * 60_000)
}

fn web(id: &str, minute: i64, event_type: &str, ids: Value) -> Value {
    json!({"event_id": id, "event_type": event_type, "occurred_at": at(minute),
        "identifiers": ids, "session_id": format!("s-{id}")})
}

fn call(id: &str, minute: i64, ids: Value) -> Value {
    json!({"event_id": id, "event_type": "inbound_call", "occurred_at": at(minute), "identifiers": ids,
        "call_id": format!("call-{id}"), "reason": "billing", "outcome": "resolved"})
}

fn app(id: &str, minute: i64, ids: Value) -> Value {
    json!({"event_id": id, "event_type": "session_start", "occurred_at": at(minute),
        "identifiers": ids, "session_id": format!("as-{id}"), "platform": "ios"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_device_and_a_junk_email_do_not_merge_a_thousand_customers() {
    let mut e = TestEngine::start(settings("kiosk")).await;
    let t = e.topics.clone();
    const N: usize = 1000;
    for i in 0..N {
        let minute = i as i64 * 2;
        // Anonymous browsing on the customer's own cookie, then a login at the
        // store kiosk that also sends the placeholder email "null".
        e.produce_json(
            &t.web_clicks,
            &web(
                &format!("b{i}"),
                minute,
                "page_view",
                json!({"cookie_id": format!("c-{i}")}),
            ),
        )
        .await;
        e.produce_json(
            &t.web_clicks,
            &web(
                &format!("l{i}"),
                minute + 1,
                "login",
                json!({"customer_id": format!("C-{i}"), "cookie_id": format!("c-{i}"),
                       "device_id": "kiosk-1", "email": "null"}),
            ),
        )
        .await;
    }
    e.wait_applied(2 * N, WAIT).await;

    let mut one_ids = BTreeSet::new();
    for i in 0..N {
        let (status, p) = e.get_json(&format!("/v1/profiles/customer_id/C-{i}")).await;
        assert_eq!(status, 200, "customer {i}");
        let ids = p["identifiers"].as_array().unwrap();
        let customers: Vec<&Value> = ids.iter().filter(|x| x["namespace"] == "customer_id").collect();
        assert_eq!(customers.len(), 1, "one customer per profile: {p}");
        assert!(
            ids.iter().all(|x| x["namespace"] != "device_id"),
            "the kiosk is in nobody's profile: {p}"
        );
        assert!(
            ids.iter()
                .any(|x| x["namespace"] == "cookie_id" && x["value"] == format!("c-{i}")),
            "the customer's own cookie stays linked: {p}"
        );
        one_ids.insert(p["one_id"].as_str().unwrap().to_string());
    }
    assert_eq!(one_ids.len(), N, "1,000 separate profiles");
    // The kiosk has a profile of its own; "null" is recorded nowhere.
    let (status, kiosk) = e.get_json("/v1/profiles/device_id/kiosk-1").await;
    assert_eq!(status, 200);
    assert!(!one_ids.contains(kiosk["one_id"].as_str().unwrap()));
    assert_eq!(kiosk["identifiers"].as_array().unwrap().len(), 1);
    assert_eq!(e.get_status("/v1/profiles/email/null").await, 404);
    assert_eq!(e.state().identity.profile_count(), N + 1);

    let m = |s: &'static str| {
        let e = &e;
        async move { e.metric(s).await }
    };
    assert_eq!(m("onejourney_identity_merges_total").await, 0.0);
    assert_eq!(m("onejourney_identity_shared_devices_total").await, 1.0);
    assert_eq!(
        m("onejourney_identity_links_rejected_total{reason=\"shared_device\"}").await,
        (N - 1) as f64
    );
    assert_eq!(
        m("onejourney_identifiers_blocked_total{reason=\"junk_value\"}").await,
        N as f64
    );
    e.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_customer_stays_forgotten_when_old_events_are_replayed() {
    let mut s = settings("forget");
    s.http.erase_tokens.insert("dpo".into(), ERASE.into());
    let mut e = TestEngine::start(s).await;
    let t = e.topics.clone();
    let email = "Ann.Lee@Example.com";
    let events = [
        (
            t.web_clicks.clone(),
            web("w1", 0, "page_view", json!({"cookie_id": "c-ann"})),
        ),
        (
            t.web_clicks.clone(),
            web(
                "w2",
                1,
                "login",
                json!({"cookie_id": "c-ann", "email": email, "customer_id": "C-ann"}),
            ),
        ),
        (
            t.app_sessions.clone(),
            app("a1", 2, json!({"device_id": "d-ann", "customer_id": "C-ann"})),
        ),
        (
            t.call_center_events.clone(),
            call("k1", 3, json!({"phone": "+44 20 7946 0018", "email": email})),
        ),
    ];
    for (topic, ev) in &events {
        e.produce_json(topic, ev).await;
    }
    // Someone else, forgotten through the identity-control topic.
    e.produce_json(
        &t.web_clicks,
        &web("w9", 4, "login", json!({"customer_id": "C-bob", "cookie_id": "c-bob"})),
    )
    .await;
    e.wait_applied(events.len() + 1, WAIT).await;
    let (status, ann) = e.get_json("/v1/profiles/customer_id/C-ann").await;
    assert_eq!(status, 200);
    let one_id = ann["one_id"].as_str().unwrap().to_string();
    assert_eq!(ann["identifiers"].as_array().unwrap().len(), 5);

    let (status, body) = e.delete_as(&format!("/v1/profiles/email/{email}"), Some(ERASE)).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["one_id"], one_id.as_str());
    assert_eq!(
        e.delete_as("/v1/profiles/email/nobody@example.com", Some(ERASE))
            .await
            .0,
        404
    );
    e.produce_json(
        &t.identity_control,
        &json!({"command": "forget", "namespace": "customer_id", "value": "C-bob"}),
    )
    .await;
    let notices = e
        .read_until(&t.identity_changes, WAIT, |r| {
            r.iter().filter(|x| x.json()["change"] == "forget").count() >= 2
        })
        .await;
    let forgotten: BTreeSet<String> = notices
        .iter()
        .map(|r| r.json())
        .filter(|v| v["change"] == "forget")
        .map(|v| v["one_id"].as_str().unwrap().to_string())
        .collect();
    assert!(forgotten.contains(&one_id), "{forgotten:?}");
    assert_eq!(forgotten.len(), 2);
    assert!(notices
        .iter()
        .all(|r| !String::from_utf8_lossy(&r.payload).contains('@')));

    // Replay every old event: as they were (duplicates) and with new event ids.
    for (topic, ev) in &events {
        e.produce_json(topic, ev).await;
        let mut again = ev.clone();
        again["event_id"] = json!(format!("{}-replayed", ev["event_id"].as_str().unwrap()));
        e.produce_json(topic, &again).await;
    }
    e.wait_applied(3 * events.len() + 1, WAIT).await;
    for path in [
        format!("/v1/profiles/email/{email}"),
        "/v1/profiles/customer_id/C-ann".to_string(),
        "/v1/profiles/cookie_id/c-ann".to_string(),
        "/v1/profiles/device_id/d-ann".to_string(),
        "/v1/profiles/phone/+44 20 7946 0018".to_string(),
        format!("/v1/profiles/one_id/{one_id}"),
        "/v1/profiles/customer_id/C-bob".to_string(),
    ] {
        assert_eq!(e.get_status(&path).await, 404, "{path} stays forgotten");
    }
    assert_eq!(e.state().identity.profile_count(), 0);
    assert!(e.state().journeys.is_empty());
    assert_eq!(
        e.metric("onejourney_events_forgotten_total").await,
        events.len() as f64,
        "each replayed copy was ignored; the exact duplicates were deduplicated"
    );
    assert_eq!(
        e.metric("onejourney_forget_requests_total{result=\"forgotten\"}").await,
        2.0
    );
    e.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lookup_api_explains_a_merge_as_a_chain_of_links() {
    let mut e = TestEngine::start(settings("explain")).await;
    let t = e.topics.clone();
    e.produce_json(&t.web_clicks, &web("w1", 0, "page_view", json!({"cookie_id": "c-1"})))
        .await;
    e.produce_json(
        &t.call_center_events,
        &call("k1", 1, json!({"email": "ann@example.com"})),
    )
    .await;
    // One login carries both: the two profiles merge.
    e.produce_json(
        &t.web_clicks,
        &web(
            "w2",
            2,
            "login",
            json!({"cookie_id": "c-1", "email": "ann@example.com"}),
        ),
    )
    .await;
    e.wait_applied(3, WAIT).await;
    let (status, x) = e.get_json("/v1/profiles/email/ann@example.com/explain").await;
    assert_eq!(status, 200, "{x}");
    let (_, p) = e.get_json("/v1/profiles/cookie_id/c-1").await;
    assert_eq!(x["one_id"], p["one_id"]);
    let links = x["links"].as_array().unwrap();
    let by_event = |id: &str| links.iter().find(|l| l["event_id"] == id).cloned().unwrap();
    // The cookie founded the surviving profile, the email founded the other,
    // and w2 joined them: email -> cookie.
    let w1 = by_event("w1");
    assert_eq!(w1["rule"], "founder");
    assert_eq!(w1["from"]["namespace"], "cookie_id");
    assert_eq!(w1["channel"], "web");
    let k1 = by_event("k1");
    assert_eq!(k1["rule"], "founder");
    assert_eq!(k1["from"]["namespace"], "email_sha256");
    assert_eq!(k1["channel"], "call_center");
    let w2 = by_event("w2");
    assert_eq!(w2["rule"], "merge");
    assert_eq!(w2["from"], k1["from"]);
    assert_eq!(w2["to"], w1["from"]);
    assert_eq!(w2["at"], at(2).as_str());
    assert!(!x.to_string().contains("ann@example.com"), "no raw email in the answer");
    assert_eq!(e.get_status("/v1/profiles/email/nobody@example.com/explain").await, 404);
    e.stop().await;
}
