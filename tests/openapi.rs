//! Every `/v1` response the end-to-end tests receive must match the engine's
//! OpenAPI document: the operation (path template and method) must be
//! described, the status code listed, and a JSON body must validate against
//! the listed schema. The harness calls [`check`] on each response it reads.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::Value;

/// Panics unless the response is described by the OpenAPI document.
pub fn check(method: &str, path_and_query: &str, status: u16, body: &Value) {
    let path = path_and_query.split('?').next().unwrap_or(path_and_query);
    if !path.starts_with("/v1/") {
        return;
    }
    let doc = onejourney_engine::http::openapi::document();
    let template = template_of(doc, path).unwrap_or_else(|| panic!("{path} is not in the OpenAPI document"));
    let method = method.to_ascii_lowercase();
    let op = &doc["paths"][template.as_str()][method.as_str()];
    assert!(op.is_object(), "{method} {template} is not in the OpenAPI document");
    let response = &op["responses"][status.to_string()];
    assert!(
        response.is_object(),
        "{method} {template} answered {status}, a status the OpenAPI document does not list"
    );
    let Some(schema) = response["content"]["application/json"].get("schema") else {
        return;
    };
    let validator = validator(&format!("{method} {template} {status}"), schema, doc);
    if let Err(e) = validator.validate(body) {
        panic!(
            "{method} {path} {status}: the body does not match the OpenAPI document: {e} at {}\n{body:#}",
            e.instance_path()
        );
    }
}

/// The document's path template matching `path`: literal segments first.
fn template_of(doc: &Value, path: &str) -> Option<String> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let paths = doc["paths"].as_object()?;
    let mut best: Option<(usize, &String)> = None;
    for t in paths.keys() {
        let parts: Vec<&str> = t.trim_start_matches('/').split('/').collect();
        if parts.len() != segments.len() {
            continue;
        }
        let fits = parts
            .iter()
            .zip(&segments)
            .all(|(p, s)| (p.starts_with('{') && p.ends_with('}')) || p == s);
        let literal = parts.iter().filter(|p| !p.starts_with('{')).count();
        if fits && best.is_none_or(|(n, _)| literal > n) {
            best = Some((literal, t));
        }
    }
    best.map(|(_, t)| t.clone())
}

/// A compiled validator per operation and status; the schema's references
/// (`#/components/schemas/...`) resolve inside a root that carries the
/// document's components.
fn validator(key: &str, schema: &Value, doc: &Value) -> Arc<jsonschema::Validator> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<jsonschema::Validator>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
    cache
        .entry(key.to_string())
        .or_insert_with(|| {
            let root = serde_json::json!({
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "components": doc["components"],
                "allOf": [schema],
            });
            Arc::new(
                jsonschema::validator_for(&root)
                    .unwrap_or_else(|e| panic!("the OpenAPI schema of {key} does not compile: {e}")),
            )
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_templates_preferring_literal_segments() {
        let doc = onejourney_engine::http::openapi::document();
        assert_eq!(
            template_of(doc, "/v1/profiles/lookup").as_deref(),
            Some("/v1/profiles/lookup")
        );
        assert_eq!(
            template_of(doc, "/v1/profiles/email/x").as_deref(),
            Some("/v1/profiles/{namespace}/{value}")
        );
        assert_eq!(
            template_of(doc, "/v1/profiles/one_id/oj-1/explain").as_deref(),
            Some("/v1/profiles/{namespace}/{value}/explain")
        );
    }

    /// Profiles as the API shows them, from the real core: one on three
    /// channels with a decision, and the same profile caught while its
    /// journey is out of the map (the pipeline takes it out to apply an event).
    #[test]
    fn real_profiles_validate() {
        use onejourney_core::processor::{CoreConfig, Processor, State};
        use onejourney_core::{Channel, Decoder};
        let settings = onejourney_engine::config::Settings::defaults().unwrap();
        let ns = settings.namespaces().unwrap();
        let state = std::sync::Arc::new(State::new(ns.clone()));
        let cfg = std::sync::Arc::new(CoreConfig {
            decide: settings.decide.clone(),
            allowed_lateness: std::time::Duration::ZERO,
            idle_after: std::time::Duration::from_secs(2),
            dedupe_window: settings.state.dedupe_window,
        });
        let mut p = Processor::new(cfg, state.clone());
        let d = Decoder::new(ns.clone(), 1 << 20).unwrap();
        let events = [
            (
                Channel::Web,
                r#"{"event_id":"w1","event_type":"add_to_cart","occurred_at":"2026-11-01T10:00:00Z","identifiers":{"customer_id":"C1","cookie_id":"k1"},"session_id":"s","product":{"sku":"x","price":12.5}}"#,
            ),
            (
                Channel::App,
                r#"{"event_id":"a1","event_type":"push_opt_out","occurred_at":"2026-11-01T10:30:00Z","identifiers":{"customer_id":"C1","device_id":"d1"},"session_id":"s2"}"#,
            ),
            (
                Channel::CallCenter,
                r#"{"event_id":"c1","event_type":"inbound_call","occurred_at":"2026-11-01T12:00:00Z","identifiers":{"customer_id":"C1","phone":"+44 20 7946 0000"},"call_id":"k","reason":"complaint","outcome":"unresolved","csat":1,"sentiment":-0.8}"#,
            ),
        ];
        for (channel, json) in events {
            p.process(&d.decode(channel, json.as_bytes()).unwrap(), 0).unwrap();
        }
        let key = ns.normalise("customer_id", "C1").unwrap().unwrap();
        let view = serde_json::to_value(state.view(&key).unwrap()).unwrap();
        check("GET", "/v1/profiles/customer_id/C1", 200, &view);
        check("POST", "/v1/profiles/lookup", 200, &view);
        let explain = serde_json::to_value(state.explain(&key).unwrap()).unwrap();
        check("GET", "/v1/profiles/customer_id/C1/explain", 200, &explain);
        let one_id = state.identity.one_id_of(&key).unwrap();
        state.journeys.remove(&one_id);
        let bare = serde_json::to_value(state.view(&key).unwrap()).unwrap();
        check("GET", "/v1/profiles/customer_id/C1", 200, &bare);
    }

    #[test]
    fn an_undocumented_field_fails() {
        check("GET", "/v1/profiles/x/y", 404, &serde_json::json!({"error": "no"}));
        let r = std::panic::catch_unwind(|| {
            check(
                "GET",
                "/v1/profiles/x/y",
                404,
                &serde_json::json!({"error": "no", "extra": 1}),
            )
        });
        assert!(r.is_err());
    }
}
