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
