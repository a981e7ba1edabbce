//! What this binary was built with: the engine's version, librdkafka's
//! version and the features compiled into it (`onejourney version`).
//!
//! Managed clusters need TLS and SASL (SCRAM, OAUTHBEARER) and upstream
//! producers pick their own compression codec: a librdkafka built without
//! one of those cannot connect, or cannot decode a batch and stops on it.
//! [`REQUIRED_FEATURES`] is what the build must have; a unit test holds the
//! build to it.

use rdkafka::config::ClientConfig;

/// librdkafka `builtin.features` this engine needs: TLS, SASL PLAIN, SCRAM
/// and OAUTHBEARER, and every compression codec a producer may use.
pub const REQUIRED_FEATURES: [&str; 9] = [
    "ssl",
    "sasl",
    "sasl_plain",
    "sasl_scram",
    "sasl_oauthbearer",
    "gzip",
    "snappy",
    "lz4",
    "zstd",
];

/// librdkafka's `builtin.features`, as a client configuration reports them.
pub fn builtin_features() -> Vec<String> {
    ClientConfig::new()
        .create_native_config()
        .and_then(|c| c.get("builtin.features"))
        .map(|csv| csv.split(',').map(|f| f.trim().to_string()).collect())
        .unwrap_or_default()
}

/// The required features this build lacks.
pub fn missing_features() -> Vec<&'static str> {
    let built = builtin_features();
    REQUIRED_FEATURES
        .iter()
        .copied()
        .filter(|f| !built.iter().any(|b| b == f))
        .collect()
}

/// librdkafka's version, e.g. `2.12.1`.
pub fn librdkafka_version() -> String {
    rdkafka::util::get_rdkafka_version().1
}

/// What `onejourney version` prints.
pub fn text() -> String {
    format!(
        "onejourney {}\nlibrdkafka {}\nbuiltin.features {}",
        env!("CARGO_PKG_VERSION"),
        librdkafka_version(),
        builtin_features().join(",")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_sasl_and_every_codec_are_built_in() {
        assert_eq!(
            missing_features(),
            Vec::<&str>::new(),
            "built: {:?}",
            builtin_features()
        );
    }

    #[test]
    fn the_version_text_names_librdkafka_and_its_features() {
        let t = text();
        assert!(
            t.starts_with(&format!("onejourney {}", env!("CARGO_PKG_VERSION"))),
            "{t}"
        );
        assert!(t.contains("librdkafka 2."), "{t}");
        assert!(t.contains("zstd") && t.contains("sasl_scram"), "{t}");
    }
}
