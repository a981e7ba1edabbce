//! A naming rule the engine and the simulator share: environment variables
//! -> librdkafka property names.
//!
//! In: the variables, as an argument (no environment read here). Out: the
//! properties they set. Keeps nothing.

use std::collections::BTreeMap;

/// Prefix of the environment variables that set librdkafka properties.
pub const CLIENT_ENV_PREFIX: &str = "ONEJOURNEY_KAFKA_CLIENT_";

/// librdkafka properties from environment variables: every variable named
/// `ONEJOURNEY_KAFKA_CLIENT_<NAME>` sets one property, its name lowercased
/// with `_` read as `.` and `__` as `_`:
/// `ONEJOURNEY_KAFKA_CLIENT_SSL_CA_LOCATION` -> `ssl.ca.location`,
/// `ONEJOURNEY_KAFKA_CLIENT_LOG__LEVEL` -> `log_level`.
///
/// (The config crate's `ONEJOURNEY__SECTION__KEY` splits on `__` and keeps
/// `_`, so it cannot spell a dotted name; every librdkafka property that
/// takes a string is dotted, and the few with `_` are reached through `__`.)
pub fn client_properties_from_env(vars: impl IntoIterator<Item = (String, String)>) -> BTreeMap<String, String> {
    vars.into_iter()
        .filter_map(|(k, v)| {
            let name = k.strip_prefix(CLIENT_ENV_PREFIX)?;
            if name.is_empty() {
                return None;
            }
            let prop = name
                .to_ascii_lowercase()
                .split("__")
                .map(|part| part.replace('_', "."))
                .collect::<Vec<_>>()
                .join("_");
            Some((prop, v))
        })
        .collect()
}
