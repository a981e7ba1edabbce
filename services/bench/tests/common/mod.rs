//! What the bench's integration tests share: reading a figure out of the
//! JSON `onejourney-bench` writes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

/// The figure called `name` in the bench's JSON; panics, showing the JSON,
/// when there is none.
pub fn figure(json: &serde_json::Value, name: &str) -> serde_json::Value {
    json["figures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {json}"))
        .clone()
}
