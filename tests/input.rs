//! End-to-end: bad input on a live stream changes nothing it should not.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use onejourney_e2e::{settings, TestEngine};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);

/// 2026-11-01T00:00:00Z plus `minute`: in the past, within every horizon.
fn at(minute: i64) -> String {
    onejourney_simulator::rfc3339(1_793_491_200_000 + minute * 60_000)
}

fn web(id: &str, occurred_at: &str, event_type: &str, cookie: &str, extra: Value) -> Value {
    let mut v = json!({"event_id": id, "event_type": event_type, "occurred_at": occurred_at,
        "identifiers": {"cookie_id": cookie}, "session_id": "s-1"});
    v.as_object_mut()
        .unwrap()
        .extend(extra.as_object().cloned().unwrap_or_default());
    v
}

fn cart_recoveries(records: &[onejourney_e2e::Record]) -> usize {
    records.iter().filter(|r| r.json()["action"] == "cart_recovery").count()
}

/// One valid app event dated 2099 (a phone with a wrong clock), between an
/// abandoned cart and the traffic after it: it goes to the dead-letter topic
/// as `future_timestamp`; the cart timer does not fire early, no later event
/// counts as late (the watermark did not jump), and the cart is recovered
/// once, when real event time passes its timer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_dated_2099_changes_no_decision_and_no_watermark() {
    let mut e = TestEngine::start(settings("future")).await;
    let t = e.topics.clone();
    let product = json!({"product": {"sku": "boot-1", "price": 129.0, "category": "shoes"}});
    e.produce_json(&t.web_clicks, &web("w1", &at(0), "add_to_cart", "c-cart", product))
        .await;
    e.produce_json(&t.web_clicks, &web("w2", &at(10), "page_view", "c-other", json!({})))
        .await;
    let wrong_clock = json!({"event_id": "a-2099", "event_type": "session_start",
        "occurred_at": "2099-01-01T00:00:00Z", "identifiers": {"device_id": "d-wrong-clock"},
        "session_id": "as-1", "platform": "android"});
    e.produce_keyed(&t.app_sessions, "d-wrong-clock", &wrong_clock).await;

    let dlq = e.read_until(&t.dead_letter, WAIT, |r| !r.is_empty()).await;
    assert_eq!(dlq.len(), 1);
    assert_eq!(
        dlq[0].headers.get("dlq.reason").map(String::as_str),
        Some("future_timestamp")
    );
    assert_eq!(
        e.metric("onejourney_events_invalid_total{channel=\"app\",reason=\"future_timestamp\"}")
            .await,
        1.0
    );
    // Every partition goes idle (idle_after 2 s): today the watermark then
    // jumped to 2099 and the cart timer (due at minute 30) fired.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let early = e
        .read_until(&t.next_best_actions, Duration::from_secs(2), |_| false)
        .await;
    assert_eq!(cart_recoveries(&early), 0, "no timer fired by the 2099 event");

    // Later traffic is on time, not late, and real event time fires the timer.
    e.produce_json(&t.web_clicks, &web("w3", &at(20), "page_view", "c-cart", json!({})))
        .await;
    e.produce_json(&t.web_clicks, &web("w4", &at(45), "page_view", "c-other", json!({})))
        .await;
    let actions = e
        .read_until(&t.next_best_actions, WAIT, |r| cart_recoveries(r) >= 1)
        .await;
    assert_eq!(cart_recoveries(&actions), 1);
    e.wait_applied(5, WAIT).await;
    assert_eq!(
        e.metric("onejourney_events_late_total").await,
        0.0,
        "the watermark did not jump"
    );
    e.stop().await;
}

/// The dedupe memory keeps a window (here one day behind the newest events
/// applied): a copy inside it is dropped as a duplicate; an event older
/// than it, a copy or not, goes to the dead-letter topic as `too_late`
/// instead of being applied again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_older_than_the_dedupe_window_is_dead_lettered_not_applied_twice() {
    let mut s = settings("dedupe-window");
    s.state.dedupe_window = Duration::from_secs(86_400);
    let mut e = TestEngine::start(s).await;
    let t = e.topics.clone();
    let day = 24 * 60;
    e.produce_json(&t.web_clicks, &web("d1", &at(0), "page_view", "c-dw", json!({})))
        .await;
    e.produce_json(&t.web_clicks, &web("d2", &at(3 * day), "page_view", "c-dw", json!({})))
        .await;
    e.wait_applied(2, WAIT).await;
    // A copy of d2 (inside the window), a copy of d1 and a new event of day 0
    // (both two days older than the window allows).
    e.produce_json(&t.web_clicks, &web("d2", &at(3 * day), "page_view", "c-dw", json!({})))
        .await;
    e.produce_json(&t.web_clicks, &web("d1", &at(0), "page_view", "c-dw", json!({})))
        .await;
    e.produce_json(&t.web_clicks, &web("d0", &at(10), "page_view", "c-dw", json!({})))
        .await;
    let dlq = e.read_until(&t.dead_letter, WAIT, |r| r.len() >= 2).await;
    assert_eq!(dlq.len(), 2);
    assert!(dlq
        .iter()
        .all(|r| r.headers.get("dlq.reason").map(String::as_str) == Some("too_late")));
    // The error says how far behind, and the window: what an operator
    // needs to tell a late producer from a watermark that ran ahead.
    for r in &dlq {
        let error = r.headers.get("dlq.error").map_or("", String::as_str);
        assert!(
            error.contains("3.0 days behind") && error.contains("(1.0 days)"),
            "{error}"
        );
    }
    e.wait_applied(5, WAIT).await;
    assert_eq!(
        e.metric("onejourney_events_invalid_total{channel=\"web\",reason=\"too_late\"}")
            .await,
        2.0
    );
    assert_eq!(
        e.metric("onejourney_events_duplicate_total{channel=\"web\"}").await,
        1.0
    );
    // Two page views applied, not three or four.
    let (status, profile) = e.get_json("/v1/profiles/cookie_id/c-dw").await;
    assert_eq!(status, 200);
    assert_eq!(profile["journey"]["channels"]["web"]["events"], 2, "{profile}");
    e.stop().await;
}
