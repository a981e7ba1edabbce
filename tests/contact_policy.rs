//! End-to-end: the contact policy a marketer expects (issue 16), through a
//! real broker: the cross-channel budget and consent per channel (opt-out
//! by event, opt-out by an identity-control command, opt-in later), each
//! asserted on the actions the engine published.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use onejourney_core::decide::policy::Budget;
use onejourney_core::decide::ContactChannel;
use onejourney_e2e::{settings, Record, TestEngine};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);
const DAY: i64 = 24 * 60;

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

fn cart(id: &str, minute: i64, cookie: &str, sku: &str) -> Value {
    web(
        id,
        minute,
        "add_to_cart",
        json!({"cookie_id": cookie}),
        json!({"product": {"sku": sku, "price": 80.0}}),
    )
}

/// The sum of a labelled counter's samples whose labels contain `labels`.
async fn counted(e: &TestEngine, name: &str, labels: &str) -> f64 {
    e.metrics()
        .await
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Every action the engine counted as emitted, read back from the topic.
async fn published(e: &TestEngine) -> Vec<Value> {
    let emitted = counted(e, "onejourney_actions_emitted_total", "").await;
    let records = e
        .read_until(&e.topics.next_best_actions, WAIT, |r| r.len() as f64 >= emitted)
        .await;
    assert_eq!(records.len() as f64, emitted, "every emitted action read back");
    records.iter().map(Record::json).collect()
}

/// Waits until `metric{labels}` reaches `n`.
async fn wait_counted(e: &TestEngine, name: &str, labels: &str, n: f64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while counted(e, name, labels).await < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name}{{{labels}}} stayed below {n}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cross_channel_budget_holds_back_what_the_channel_caps_let_through() {
    let mut s = settings("budget");
    s.decide.policy.budget = Some(Budget {
        max: 2,
        per: Duration::from_secs(7 * 24 * 3600),
    });
    let mut e = TestEngine::start(s).await;
    let t = e.topics.clone();
    // A cart (e-mail), a purchase (SMS: the e-mail cap is used), a second
    // cart a day later (web): three channels, each under its own cap; the
    // budget of two a week holds the third back.
    let ids = json!({"cookie_id": "c-b", "email": "bea@x.com", "phone": "+44 20 7946 0101"});
    let story = [
        web("b1", 0, "login", ids, json!({})),
        cart("b2", 1, "c-b", "shoe"),
        web("b3", 40, "page_view", json!({"cookie_id": "c-b"}), json!({})),
        web(
            "b4",
            60,
            "purchase",
            json!({"cookie_id": "c-b"}),
            json!({"order_id": "o-1", "revenue": 80.0}),
        ),
        cart("b5", DAY + 60, "c-b", "hat"),
        web("b6", DAY + 160, "page_view", json!({"cookie_id": "c-b"}), json!({})),
    ];
    for v in &story {
        e.produce_keyed(&t.web_clicks, "c-b", v).await;
    }
    wait_counted(&e, "onejourney_actions_suppressed_total", "reason=\"budget\"", 1.0).await;
    let actions = published(&e).await;
    let channels: Vec<&str> = actions.iter().map(|a| a["channel"].as_str().unwrap()).collect();
    assert_eq!(channels, ["email", "sms"], "{actions:?}");
    assert!(actions.iter().all(|a| a["one_id"] == actions[0]["one_id"]));
    e.stop().await;
}

/// Waits until the engine holds `granted` as the e-mail consent of the
/// profile `email` belongs to.
async fn wait_email_consent(e: &TestEngine, email: &str, granted: bool) {
    let key = e
        .state()
        .identity
        .namespaces()
        .normalise("email", email)
        .unwrap()
        .unwrap();
    e.eventually("the consent statement kept", WAIT, |s| {
        let Some(id) = s.identity.one_id_of(&key) else {
            return false;
        };
        s.journey(&id)
            .and_then(|j| j.consent.get(ContactChannel::Email))
            .is_some_and(|c| c.granted == granted)
    })
    .await;
}

fn consent_command(email: &str, status: &str, minute: i64) -> Value {
    json!({"command": "consent", "namespace": "email", "value": email,
        "channel": "email", "status": status, "at": at(minute)})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_by_event_and_by_command_decides_the_channel_of_what_is_published() {
    let mut e = TestEngine::start(settings("consent")).await;
    let t = e.topics.clone();
    let key = "one-partition";
    // Ann opts out of e-mail with her login: her cart reminder goes on the web.
    e.produce_keyed(
        &t.web_clicks,
        key,
        &web(
            "a1",
            0,
            "login",
            json!({"cookie_id": "c-a", "email": "ann@x.com"}),
            json!({"consent": {"email": "opt_out"}}),
        ),
    )
    .await;
    e.produce_keyed(&t.web_clicks, key, &cart("a2", 1, "c-a", "shoe")).await;
    // Bea logs in; then a command opts her out of e-mail.
    let bea = json!({"cookie_id": "c-b", "email": "bea@x.com"});
    e.produce_keyed(&t.web_clicks, key, &web("b1", 100, "login", bea, json!({})))
        .await;
    wait_email_consent(&e, "ann@x.com", false).await;
    e.eventually("Bea's login applied", WAIT, |s| s.identity.profile_count() == 2)
        .await;
    e.produce_json(&t.identity_control, &consent_command("Bea@X.com", "opt_out", 100))
        .await;
    wait_email_consent(&e, "bea@x.com", false).await;
    // Shown in the lookup API.
    let (status, view) = e.get_json("/v1/profiles/email/bea@x.com").await;
    assert_eq!(status, 200);
    assert_eq!(view["journey"]["consent"]["email"]["granted"], false, "{view}");
    e.produce_keyed(&t.web_clicks, key, &cart("b2", 101, "c-b", "hat"))
        .await;
    e.produce_keyed(
        &t.web_clicks,
        key,
        &web("b3", 140, "page_view", json!({"cookie_id": "c-b"}), json!({})),
    )
    .await;
    wait_counted(&e, "onejourney_actions_emitted_total", "", 2.0).await;
    // Later Bea opts in again: her next cart reminder is an e-mail.
    e.produce_json(&t.identity_control, &consent_command("bea@x.com", "opt_in", 200))
        .await;
    wait_email_consent(&e, "bea@x.com", true).await;
    e.produce_keyed(&t.web_clicks, key, &cart("b4", 9 * DAY, "c-b", "cap"))
        .await;
    e.produce_keyed(
        &t.web_clicks,
        key,
        &web("b5", 9 * DAY + 40, "page_view", json!({"cookie_id": "c-b"}), json!({})),
    )
    .await;
    wait_counted(&e, "onejourney_actions_emitted_total", "", 3.0).await;
    let mut actions = published(&e).await;
    // Two output partitions: the topic's order is not the decisions' order.
    actions.sort_by_key(|a| a["decided_at"].as_str().unwrap().to_string());
    let seen: Vec<(&str, &str)> = actions
        .iter()
        .map(|a| (a["action"].as_str().unwrap(), a["channel"].as_str().unwrap()))
        .collect();
    assert_eq!(
        seen,
        [
            ("cart_recovery", "web"),
            ("cart_recovery", "web"),
            ("cart_recovery", "email")
        ],
        "{actions:?}"
    );
    assert_eq!(
        counted(&e, "onejourney_consent_commands_total", "result=\"applied\"").await,
        2.0
    );
    e.stop().await;
}
