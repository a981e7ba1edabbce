#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use onejourney_core::processor::{Processor, State};
use onejourney_core::{Channel, Decoder};
use serde::Serialize;

use super::*;
use crate::config::Settings;

/// A profile on three channels with decisions (one that beat another),
/// a refused link and a shared device, through the real core with the
/// default configuration.
fn sample() -> (Arc<State>, onejourney_core::ids::IdKey) {
    let settings = Settings::defaults().unwrap();
    let ns = settings.namespaces().unwrap();
    let state = Arc::new(State::new(ns.clone()));
    let mut p = Processor::new(Arc::new(settings.core()), state.clone());
    let d = Decoder::new(ns.clone(), 1 << 20).unwrap();
    let sale = |id: &str, at: &str| {
        format!(
            r#"{{"event_id":"{id}","event_type":"sale","occurred_at":"{at}","identifiers":{{"customer_id":"C1"}},"transaction_id":"{id}","store_id":"S1","total":3000.0,"currency":"EUR","items":[{{"sku":"a","quantity":1,"unit_price":3000.0}}]}}"#
        )
    };
    let events = [
        (
            Channel::Web,
            r#"{"event_id":"w1","event_type":"add_to_cart","occurred_at":"2026-11-01T10:00:00Z","identifiers":{"customer_id":"C1","email":"c1@example.test","cookie_id":"k1","device_id":"tab"},"session_id":"s","product":{"sku":"<b>x</b>","price":12.5}}"#.to_string(),
        ),
        (
            Channel::Web,
            r#"{"event_id":"w2","event_type":"login","occurred_at":"2026-11-01T10:30:00Z","identifiers":{"customer_id":"C2","device_id":"tab","loyalty_id":"L2"},"session_id":"s2"}"#.to_string(),
        ),
        (
            Channel::Web,
            r#"{"event_id":"w3","event_type":"login","occurred_at":"2026-11-01T10:40:00Z","identifiers":{"customer_id":"C1","device_id":"tab","loyalty_id":"L2"},"session_id":"s3"}"#.to_string(),
        ),
        (Channel::Pos, sale("p1", "2026-11-01T11:00:00Z")),
        (Channel::Pos, sale("p2", "2026-11-09T11:00:00Z")),
        (Channel::Pos, sale("p3", "2026-11-17T11:00:00Z")),
        (
            Channel::CallCenter,
            r#"{"event_id":"c1","event_type":"inbound_call","occurred_at":"2026-11-17T12:00:00Z","identifiers":{"customer_id":"C1","phone":"+44 20 7946 0000"},"call_id":"k","reason":"complaint","outcome":"unresolved"}"#.to_string(),
        ),
    ];
    for (channel, json) in events {
        let ev = d.decode(channel, json.as_bytes()).unwrap();
        p.process(&ev, 0).unwrap();
    }
    let key = ns.normalise("customer_id", "C1").unwrap().unwrap();
    (state, key)
}

/// The values a mirror enum lists in the document.
fn listed(name: &str) -> Vec<String> {
    let schema = &document()["components"]["schemas"][name];
    let values = schema["enum"]
        .as_array()
        .or_else(|| schema["oneOf"].as_array())
        .unwrap_or_else(|| panic!("{name} is not an enum in the document: {schema}"));
    let mut out: Vec<String> = values
        .iter()
        .map(|v| {
            v.as_str()
                .or_else(|| v["enum"][0].as_str())
                .or_else(|| v["const"].as_str())
                .unwrap()
                .to_string()
        })
        .collect();
    out.sort();
    out
}

fn wire<T: Serialize>(all: impl IntoIterator<Item = T>) -> Vec<String> {
    let mut out: Vec<String> = all
        .into_iter()
        .map(|v| serde_json::to_value(v).unwrap().as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

#[test]
fn the_document_is_openapi_3_1_and_lists_every_v1_route() {
    let doc = document();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    for path in [
        "/v1/profiles/{namespace}/{value}",
        "/v1/profiles/{namespace}/{value}/explain",
        "/v1/profiles/lookup",
        "/v1/profiles/recent",
        "/v1/models/churn",
        "/v1/models/actions",
        "/v1/openapi.json",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing");
    }
    assert!(doc["paths"]["/v1/profiles/{namespace}/{value}"]["delete"].is_object());
    assert_eq!(
        doc["components"]["schemas"]["ProfileDoc"]["additionalProperties"],
        serde_json::json!(false)
    );
}

#[test]
fn real_views_match_their_mirrors() {
    let (state, key) = sample();
    let view = serde_json::to_value(state.view(&key).unwrap()).unwrap();
    let doc: ProfileDoc = serde_json::from_value(view.clone()).unwrap();
    assert_eq!(doc.journey.recent_events.len(), 6);
    assert!(!doc.recent_actions.is_empty(), "a decision was taken: {view}");
    assert!(
        doc.recent_actions
            .iter()
            .any(|a| a.score.is_some() && !a.beaten.is_empty()),
        "a decision that beat another: {view}"
    );
    assert!(!doc.churn.history.is_empty(), "churn history: {view}");
    assert!(
        doc.churn.evaluated_at.is_some() && doc.churn.hand_score.is_some(),
        "{view}"
    );
    assert!(
        doc.journey.churn_examples.pending.is_empty(),
        "internal examples stay out: {view}"
    );
    let rfm = doc.journey.rfm.as_ref().expect("a buyer has RFM scores");
    assert!([rfm.r, rfm.f, rfm.m].iter().all(|s| (1..=5).contains(s)), "{view}");
    let clv = doc.journey.clv.as_ref().expect("a buyer has a lifetime value");
    assert!(
        clv.value > 0.0 && clv.order_value > 0.0 && clv.horizon_days > 0.0,
        "{view}"
    );
    let model = serde_json::to_value(state.churn_model_view().unwrap()).unwrap();
    let doc: ChurnModelDoc = serde_json::from_value(model.clone()).unwrap();
    assert!(doc.examples > 0 && doc.negatives > 0, "the customer came back: {model}");
    assert_eq!(doc.weights.len(), 15);
    let explain = serde_json::to_value(state.explain(&key).unwrap()).unwrap();
    let doc: ExplainDoc = serde_json::from_value(explain.clone()).unwrap();
    assert!(!doc.refused.is_empty(), "refused links: {explain}");
    assert_eq!(doc.shared_devices.len(), 1, "the tablet: {explain}");
}

#[test]
fn the_action_models_match_their_mirror() {
    let (state, _) = sample();
    let settings = Settings::defaults().unwrap();
    let body = crate::http::models::body(&state, &settings.decide);
    let doc: ActionModelsDoc = serde_json::from_value(body.clone()).unwrap();
    assert_eq!(doc.actions.len(), settings.decide.actions.len());
    assert!(doc.actions.iter().any(|a| a.sent > 0), "decisions counted: {body}");
}

/// The mirrors of the core's enums list exactly the values the core writes.
#[test]
fn mirror_enums_agree_with_the_core() {
    use onejourney_core::decide::{ContactChannel, Suppressed};
    use onejourney_core::identity::{RejectReason, Rule};
    use onejourney_core::journey::{Band, Stage, Tier};
    use onejourney_core::vocab::Outcome;
    assert_eq!(listed("ChannelDoc"), wire(Channel::ALL));
    assert_eq!(listed("ContactChannelDoc"), wire(ContactChannel::ALL));
    assert_eq!(listed("StageDoc"), wire(Stage::ALL));
    assert_eq!(listed("TierDoc"), wire(Tier::ALL));
    assert_eq!(listed("BandDoc"), wire(Band::ALL));
    assert_eq!(listed("OutcomeDoc"), wire(Outcome::ALL));
    assert_eq!(listed("RuleDoc"), wire(Rule::ALL));
    assert_eq!(listed("SuppressedDoc"), wire(Suppressed::ALL));
    assert_eq!(listed("RejectReasonDoc"), wire(RejectReason::ALL));
}
