//! End-to-end: the Customer 360 page in a real headless browser (Debian's
//! chromium through chromedriver) against the engine on the real broker, fed
//! simulator traffic plus a few hand-made events for one simulated person on
//! three channels, one of them carrying a `<script>` product SKU.
//!
//! In the browser: the token prompt, the recent list, a search by raw e-mail
//! (sent in a POST body, hashed by the engine), the identity graph (all the
//! person's identifiers, no stranger's), the timeline (three channels, in
//! time order), a decision with its reason, the XSS payload as text, a deep
//! link, and erasure (the read token refused with 403, then the erase token:
//! 202, then 404, then "not found"). A second, hand-made person shows the
//! "why" views: a refused link drawn as a dashed edge with its reason, a
//! shared device marked, the churn history chart with its points, and a
//! decision with its score, what it beat and what a contact rule held back.
//! Screenshots go to
//! `target/ui-screenshots/`. Every `/v1` response the test reads is checked
//! against the OpenAPI document.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod webdriver;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use onejourney_e2e::{openapi, settings, TestEngine};
use onejourney_simulator::{generate, rfc3339, SimConfig};
use serde_json::{json, Value};
use webdriver::Browser;

const TOKEN: &str = "ui-test-token";
const ERASE_TOKEN: &str = "ui-test-erase-token";
const XSS: &str = "<script>window.__xss=1</script><img src=x onerror=\"window.__xss=2\">";
const WAIT: Duration = Duration::from_secs(120);

fn shots() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/ui-screenshots")
}

/// A `/v1` call with the bearer token, checked against the OpenAPI document.
async fn api(e: &TestEngine, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(method.clone(), format!("http://{}{path}", e.http))
        .bearer_auth(TOKEN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.expect("http");
    let status = r.status().as_u16();
    let v = r.json().await.unwrap_or(Value::Null);
    openapi::check(method.as_str(), path, status, &v);
    (status, v)
}

fn key(namespace: &str, value: &str) -> String {
    format!("{namespace}:{value}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_customer_360_page_shows_one_person_and_forgets_them() {
    let mut s = settings("ui");
    // The second person is dated 60 days before the simulation and published
    // after it: keep the dedupe window longer than that, or those events are
    // refused as too late (`state.dedupe_window`, 30 days by default).
    s.state.dedupe_window = std::time::Duration::from_secs(120 * 86_400);
    s.http.bearer_token = TOKEN.to_string();
    s.http.erase_tokens.insert("ui_test".into(), ERASE_TOKEN.to_string());
    let mut e = TestEngine::start(s).await;
    let t = e.topics.clone();

    // --- simulator traffic ---
    let sim = generate(&SimConfig {
        customers: 60,
        seed: 18,
        days: 30,
        ..SimConfig::default()
    });
    e.publish_sim(&sim.events).await;
    e.wait_applied(sim.events.len(), WAIT).await;
    let ns = e.state().identity.namespaces().clone();
    let one_id_of = |namespace: &str, value: &str| {
        let k = ns.normalise(namespace, value).ok()?.ok()?;
        e.state().identity.one_id_of(&k)
    };

    // A person with a customer id and an e-mail, preferably with decisions already.
    let candidates: Vec<usize> = (0..sim.people.len())
        .filter(|i| sim.people[*i].customer_id.is_some() && sim.people[*i].email.is_some())
        .collect();
    assert!(!candidates.is_empty(), "the simulation has customers with e-mail");
    let decided = |i: &usize| {
        let cid = sim.people[*i].customer_id.as_deref().unwrap();
        one_id_of("customer_id", cid)
            .and_then(|id| e.state().journey(&id).map(|j| !j.recent_actions.is_empty()))
            .unwrap_or(false)
    };
    let who = candidates.iter().copied().find(decided).unwrap_or(candidates[0]);
    let person = sim.people[who].clone();
    let cid = person.customer_id.clone().unwrap();
    let email = person.email.clone().unwrap();

    // --- hand-made events on three channels, after the simulation ends ---
    let end = sim.events.iter().map(|x| x.at_ms).max().unwrap_or(0);
    let at = |minutes: i64| rfc3339(end + 86_400_000 + minutes * 60_000);
    let mut web_ids = json!({"customer_id": cid});
    if let Some(c) = person.cookies.first() {
        web_ids["cookie_id"] = json!(c);
    }
    e.produce_json(
        &t.web_clicks,
        &json!({"event_id": "ui-web-1", "event_type": "add_to_cart", "occurred_at": at(0),
            "identifiers": web_ids, "session_id": "ui-s1",
            "product": {"sku": XSS, "price": 19.0, "category": "<b>bold</b>"}}),
    )
    .await;
    e.produce_json(
        &t.pos_transactions,
        &json!({"event_id": "ui-pos-1", "event_type": "sale", "occurred_at": at(20),
            "identifiers": {"customer_id": cid}, "transaction_id": "ui-tx-1", "store_id": "st-9",
            "total": 42.5, "currency": "EUR", "items": [{"sku": "sku-ui", "quantity": 1, "unit_price": 42.5}]}),
    )
    .await;
    e.produce_json(
        &t.call_center_events,
        &json!({"event_id": "ui-call-1", "event_type": "inbound_call", "occurred_at": at(40),
            "identifiers": {"customer_id": cid}, "call_id": "ui-call-1",
            "reason": "complaint", "outcome": "unresolved"}),
    )
    .await;
    let second = publish_second_person(&e, &sim, sim.events.len() + 3).await;
    e.wait_applied(sim.events.len() + 3 + second, WAIT).await;

    // --- the API, checked against the OpenAPI document ---
    let (status, profile) = api(
        &e,
        reqwest::Method::POST,
        "/v1/profiles/lookup",
        Some(json!({"namespace": "email", "value": email})),
    )
    .await;
    assert_eq!(status, 200, "{profile}");
    let one_id = profile["one_id"].as_str().unwrap().to_string();
    assert_eq!(one_id_of("customer_id", &cid).as_deref(), Some(one_id.as_str()));
    let identifiers: BTreeSet<String> = profile["identifiers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| key(i["namespace"].as_str().unwrap(), i["value"].as_str().unwrap()))
        .collect();
    let email_key = ns.normalise("email", &email).unwrap().unwrap();
    assert!(identifiers.contains(&key(ns.name(email_key.ns()), email_key.value())));
    assert!(identifiers.contains(&key("customer_id", &cid)));
    assert!(
        !profile["recent_actions"].as_array().unwrap().is_empty(),
        "a decision: {profile}"
    );
    let (status, _) = api(
        &e,
        reqwest::Method::GET,
        &format!("/v1/profiles/customer_id/{cid}"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = api(
        &e,
        reqwest::Method::GET,
        &format!("/v1/profiles/one_id/{one_id}/explain"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, recent) = api(&e, reqwest::Method::GET, "/v1/profiles/recent?limit=5", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        recent["profiles"][0]["one_id"], one_id,
        "the person is the most recently active"
    );
    let (status, _) = api(
        &e,
        reqwest::Method::POST,
        "/v1/profiles/lookup",
        Some(json!({"nope": 1})),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = api(&e, reqwest::Method::GET, "/v1/profiles/customer_id/nobody-here", None).await;
    assert_eq!(status, 404);
    let (status, doc) = api(&e, reqwest::Method::GET, "/v1/openapi.json", None).await;
    assert_eq!(status, 200);
    assert_eq!(&doc, onejourney_engine::http::openapi::document());
    let unauthorised = reqwest::get(format!("http://{}/v1/profiles/recent", e.http))
        .await
        .unwrap();
    let status = unauthorised.status().as_u16();
    openapi::check(
        "GET",
        "/v1/profiles/recent",
        status,
        &unauthorised.json().await.unwrap(),
    );
    assert_eq!(status, 401);
    let root = reqwest::get(format!("http://{}/", e.http)).await.unwrap();
    assert_eq!(root.url().path(), "/ui", "/ redirects to the page");

    // --- the browser ---
    let b = Browser::start(1280, 4400).await;
    let base = format!("http://{}", e.http);
    b.goto(&format!("{base}/ui")).await;
    b.wait_for(
        "the token prompt",
        "return document.getElementById('message').textContent.includes('API token')",
        WAIT,
    )
    .await;
    b.type_into("#token", TOKEN).await;
    b.click("#token-save").await;
    b.wait_for(
        "the recent list",
        "return document.querySelectorAll('#recent tr').length",
        WAIT,
    )
    .await;
    b.screenshot(&shots().join("01-recent.png")).await;

    // Search by raw e-mail: it goes in a POST body, never in a URL.
    b.run("document.getElementById('ns').value = 'email'", json!([])).await;
    b.type_into("#value", &email).await;
    b.click("#find").await;
    let shown = b
        .wait_for(
            "the profile",
            "const p = document.getElementById('profile'); const o = document.getElementById('one-id');\
             return !p.hidden && o && o.textContent",
            WAIT,
        )
        .await;
    assert_eq!(shown, one_id);
    let url = b.run("return location.pathname", json!([])).await;
    assert_eq!(
        url,
        format!("/ui/profiles/one_id/{one_id}"),
        "the address is the One ID, not the e-mail"
    );
    b.screenshot(&shots().join("02-profile.png")).await;

    // The graph: all the person's identifiers, no stranger's.
    let nodes: BTreeSet<String> = b
        .run(
            "return Array.from(document.querySelectorAll('#graph g.node')).map(g => \
             g.getAttribute('data-namespace') + ':' + g.getAttribute('data-value'))",
            json!([]),
        )
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(nodes, identifiers, "the graph shows exactly the profile's identifiers");
    for (i, other) in sim.people.iter().enumerate() {
        if i == who {
            continue;
        }
        let mut theirs: Vec<String> = Vec::new();
        if let Some(c) = &other.customer_id {
            theirs.push(key("customer_id", c));
        }
        if let Some(m) = &other.email {
            let k = ns.normalise("email", m).unwrap().unwrap();
            theirs.push(key(ns.name(k.ns()), k.value()));
        }
        theirs.extend(other.cookies.iter().map(|c| key("cookie_id", c)));
        for id in theirs {
            assert!(!nodes.contains(&id), "a stranger's identifier {id} is in the graph");
        }
    }
    let edge_labels = b
        .run(
            "return Array.from(document.querySelectorAll('#links tr')).map(r => r.textContent)",
            json!([]),
        )
        .await;
    assert!(!edge_labels.as_array().unwrap().is_empty(), "the links are listed");

    // The timeline: three channels, in time order.
    let rows = b
        .run(
            "return Array.from(document.querySelectorAll('#events tr.event')).map(r => \
             [r.getAttribute('data-channel'), r.getAttribute('data-at')])",
            json!([]),
        )
        .await;
    let rows: Vec<(String, String)> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r[0].as_str().unwrap().to_string(), r[1].as_str().unwrap().to_string()))
        .collect();
    let channels: BTreeSet<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    for c in ["web", "pos", "call_center"] {
        assert!(channels.contains(c), "the timeline shows {c}: {rows:?}");
    }
    let times: Vec<i64> = rows
        .iter()
        .map(|r| onejourney_core::EventTime::parse_rfc3339(&r.1).unwrap().millis())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "in time order: {rows:?}");
    let dots = b
        .run("return document.querySelectorAll('#timeline circle').length", json!([]))
        .await;
    assert!(dots.as_u64().unwrap() >= rows.len() as u64, "every event is drawn");

    // A decision with its reason.
    let actions = b
        .run(
            "return Array.from(document.querySelectorAll('#actions tr.action')).map(r => \
             [r.children[1].textContent, r.querySelector('.reason').textContent])",
            json!([]),
        )
        .await;
    let actions = actions.as_array().unwrap();
    assert!(!actions.is_empty(), "decisions are listed");
    assert!(
        actions.iter().all(|a| a[1].as_str().is_some_and(|r| r.len() > 10)),
        "each with its reason: {actions:?}"
    );

    // The XSS payload is text.
    let details = b
        .run(
            "return Array.from(document.querySelectorAll('#events td.detail')).map(d => d.textContent)",
            json!([]),
        )
        .await;
    assert!(
        details.as_array().unwrap().iter().any(|d| d == XSS),
        "the SKU is shown as the characters it is: {details}"
    );
    let injected = b
        .run(
            "return [typeof window.__xss, document.querySelectorAll('main script, main img').length]",
            json!([]),
        )
        .await;
    assert_eq!(
        injected,
        json!(["undefined", 0]),
        "nothing from the event ran or became markup"
    );

    check_decision_context(&e, &b, &base).await;

    // A deep link opens the same person.
    b.goto(&format!("{base}/ui/profiles/customer_id/{cid}")).await;
    let shown = b
        .wait_for(
            "the deep link",
            "const p = document.getElementById('profile'); const o = document.getElementById('one-id');\
             return !p.hidden && o && o.textContent",
            WAIT,
        )
        .await;
    assert_eq!(shown, one_id);

    // Erasure needs the erase token: the read token gets 403 and is asked again.
    b.click("#erase").await;
    b.type_into("#erase-token", TOKEN).await;
    b.click("#erase-confirm").await;
    let refused = b
        .wait_for(
            "the 403",
            "const s = document.getElementById('erase-status').textContent; return s.includes('403') && s",
            WAIT,
        )
        .await;
    assert!(refused.as_str().unwrap().contains("erase token"), "{refused}");
    let (status, _) = api(&e, reqwest::Method::GET, &format!("/v1/profiles/one_id/{one_id}"), None).await;
    assert_eq!(status, 200, "the read token erased nothing");
    // Erasure: 202, then 404, then "not found".
    b.type_into("#erase-token", ERASE_TOKEN).await;
    b.click("#erase-confirm").await;
    b.wait_for(
        "the 202",
        "return document.getElementById('erase-status').textContent.includes('202')",
        WAIT,
    )
    .await;
    b.screenshot(&shots().join("03-erase-accepted.png")).await;
    let status = b
        .wait_for(
            "the erasure",
            "const s = document.getElementById('erase-status').textContent; return s.includes('404') && s",
            WAIT,
        )
        .await;
    assert!(status.as_str().unwrap().contains("202"), "{status}");
    b.screenshot(&shots().join("04-erased.png")).await;
    let (status, body) = api(&e, reqwest::Method::GET, &format!("/v1/profiles/one_id/{one_id}"), None).await;
    assert_eq!(status, 404, "{body}");
    b.run("document.getElementById('ns').value = 'customer_id'", json!([]))
        .await;
    b.type_into("#value", &cid).await;
    b.click("#find").await;
    let msg = b
        .wait_for(
            "not found",
            "const m = document.getElementById('message').textContent; return m.includes('Not found') && m",
            WAIT,
        )
        .await;
    assert!(msg.as_str().unwrap().contains("no profile"), "{msg}");
    assert!(
        b.run("return document.getElementById('profile').hidden", json!([]))
            .await
            == json!(true)
    );
    b.screenshot(&shots().join("05-not-found.png")).await;
    let _ = b.text("#message").await;
    b.close().await;
    e.stop().await;
}

/// The second person's customer id; the other customer and the kiosk they share.
const P2: &str = "UI-P2";
const OTHER: &str = "UI-OTHER";
const OTHER_CARD: &str = "UI-L-OTHER";
const KIOSK: &str = "ui-kiosk";

/// A person who shares a kiosk with another customer, shows that customer's
/// loyalty card once (both links refused) and buys four times: the third
/// purchase makes `loyalty_upgrade` beat `post_purchase_follow_up`, the
/// fourth holds `loyalty_upgrade` back (its cool-down). Dated well before the
/// simulation, so the watermark applies them at once, in the order they
/// arrive: the logins are applied (`before` events were published earlier)
/// before the purchases go out, else a purchase read first from its own topic
/// is decided on a profile that has no e-mail yet (`post_purchase_follow_up`
/// unreachable). Returns how many.
async fn publish_second_person(e: &TestEngine, sim: &onejourney_simulator::Simulation, before: usize) -> usize {
    let t = e.topics.clone();
    let start = sim.events.iter().map(|x| x.at_ms).min().unwrap_or(0) - 60 * 86_400_000;
    let at = |minutes: i64| rfc3339(start + minutes * 60_000);
    let day = 24 * 60;
    let login = |id: &str, m: i64, ids: Value| json!({"event_id": id, "event_type": "login", "occurred_at": at(m), "identifiers": ids, "session_id": id});
    let webs = [
        login(
            "ui2-w1",
            0,
            json!({"customer_id": P2, "email": "p2@example.test", "phone": "+44 20 7946 0123", "device_id": KIOSK}),
        ),
        login(
            "ui2-w2",
            1,
            json!({"customer_id": OTHER, "loyalty_id": OTHER_CARD, "device_id": KIOSK}),
        ),
        login(
            "ui2-w3",
            2,
            json!({"customer_id": P2, "loyalty_id": OTHER_CARD, "device_id": KIOSK}),
        ),
    ];
    for w in &webs {
        e.produce_json(&t.web_clicks, w).await;
    }
    e.wait_applied(before + webs.len(), WAIT).await;
    let sales = [60, 8 * day + 60, 16 * day + 60, 18 * day + 60];
    for (n, m) in sales.iter().enumerate() {
        e.produce_json(
            &t.pos_transactions,
            &json!({"event_id": format!("ui2-p{n}"), "event_type": "sale", "occurred_at": at(*m),
                "identifiers": {"customer_id": P2}, "transaction_id": format!("ui2-t{n}"), "store_id": "st-9",
                "total": 5000.0, "currency": "EUR",
                "items": [{"sku": "sku-big", "quantity": 1, "unit_price": 5000.0}]}),
        )
        .await;
    }
    e.produce_json(
        &t.call_center_events,
        &json!({"event_id": "ui2-c1", "event_type": "inbound_call", "occurred_at": at(18 * day + 120),
            "identifiers": {"customer_id": P2}, "call_id": "ui2-c1",
            "reason": "complaint", "outcome": "unresolved"}),
    )
    .await;
    webs.len() + sales.len() + 1
}

/// The second person in the API and in the browser: refused links, the
/// shared kiosk, the churn history chart, and the decision context.
async fn check_decision_context(e: &TestEngine, b: &Browser, base: &str) {
    let (status, explain) = api(
        e,
        reqwest::Method::GET,
        &format!("/v1/profiles/customer_id/{P2}/explain"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{explain}");
    let reasons: BTreeSet<&str> = explain["refused"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        BTreeSet::from(["shared_device", "unique_conflict"]),
        "{explain}"
    );
    assert_eq!(
        explain["shared_devices"],
        json!([{"namespace": "device_id", "value": KIOSK}]),
        "{explain}"
    );
    let (status, profile) = api(e, reqwest::Method::GET, &format!("/v1/profiles/customer_id/{P2}"), None).await;
    assert_eq!(status, 200, "{profile}");
    assert!(profile["churn"]["history"].as_array().unwrap().len() >= 2, "{profile}");

    b.goto(&format!("{base}/ui/profiles/customer_id/{P2}")).await;
    b.wait_for(
        "the second person",
        "const p = document.getElementById('profile'); \
         return !p.hidden && document.querySelectorAll('#graph line.edge.refused').length >= 2",
        WAIT,
    )
    .await;
    b.screenshot(&shots().join("02b-refused-shared-churn-why.png")).await;

    // Refused links: dashed edges labelled with their reason.
    let refused = b
        .run(
            "return Array.from(document.querySelectorAll('#graph line.edge.refused')).map(l => \
             [l.getAttribute('data-reason'), getComputedStyle(l).strokeDasharray])",
            json!([]),
        )
        .await;
    let refused = refused.as_array().unwrap();
    let drawn: BTreeSet<&str> = refused.iter().map(|r| r[0].as_str().unwrap()).collect();
    assert_eq!(
        drawn,
        BTreeSet::from(["shared_device", "unique_conflict"]),
        "{refused:?}"
    );
    assert!(
        refused
            .iter()
            .all(|r| r[1].as_str().is_some_and(|d| d != "none" && !d.is_empty())),
        "refused edges are dashed: {refused:?}"
    );
    let labels = b
        .run(
            "return Array.from(document.querySelectorAll('#graph text.edge-label.refused')).map(t => t.textContent)",
            json!([]),
        )
        .await;
    assert!(
        labels
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l.as_str().unwrap().contains("refused: unique conflict")),
        "{labels}"
    );
    // The kiosk: a node marked shared, not one of the person's identifiers.
    let shared = b
        .run(
            "return Array.from(document.querySelectorAll('#graph g.shared')).map(g => \
             [g.getAttribute('class'), g.getAttribute('data-namespace') + ':' + g.getAttribute('data-value'), g.textContent])",
            json!([]),
        )
        .await;
    let shared = shared.as_array().unwrap();
    assert_eq!(shared.len(), 1, "{shared:?}");
    assert_eq!(shared[0][1], format!("device_id:{KIOSK}"));
    assert!(shared[0][0].as_str().unwrap().contains("refused-node"), "{shared:?}");
    assert!(shared[0][2].as_str().unwrap().contains("shared device"), "{shared:?}");

    // The churn history chart: a point per kept evaluation, with contributions.
    let points = b
        .run(
            "return [document.querySelectorAll('#churn-history circle.churn-point').length, \
             document.querySelectorAll('#churn-history rect.contribution').length]",
            json!([]),
        )
        .await;
    let kept = profile["churn"]["history"].as_array().unwrap().len() as u64;
    assert_eq!(points[0].as_u64(), Some(kept), "one point per evaluation: {points}");
    assert!(points[1].as_u64().unwrap() >= 1, "contributions are drawn: {points}");

    // The decision context: the score, what it beat, what policy held back.
    let actions = b
        .run(
            "return Array.from(document.querySelectorAll('#actions tr.action')).map(r => [\
             r.children[1].textContent, r.querySelector('.score').textContent, \
             r.querySelector('.beaten').textContent, r.querySelector('.held-back').textContent])",
            json!([]),
        )
        .await;
    let actions = actions.as_array().unwrap();
    let upgrade = actions
        .iter()
        .find(|a| a[0] == "loyalty_upgrade" && a[2].as_str().unwrap().contains("post_purchase_follow_up ("))
        .unwrap_or_else(|| panic!("loyalty_upgrade beat post_purchase_follow_up: {actions:?}"));
    assert!(
        upgrade[1].as_str().unwrap().parse::<f64>().unwrap() > 0.0,
        "{upgrade:?}"
    );
    assert!(
        actions
            .iter()
            .any(|a| a[0] == "post_purchase_follow_up" && a[3] == "loyalty_upgrade: cooldown"),
        "a contact rule held loyalty_upgrade back: {actions:?}"
    );
}
