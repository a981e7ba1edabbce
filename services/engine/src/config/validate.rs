//! Every setting checked at start: a bad value fails with its key and the
//! reason, before anything connects.
//!
//! In: loaded [`Settings`]. Out: `Ok`, or the first [`ConfigError::Invalid`].
//! It keeps nothing.

use super::{ConfigError, Settings, MAX_CONNECTIONS};

/// The most state partitions a deployment may configure.
const MAX_STATE_PARTITIONS: u32 = 10_000;

impl Settings {
    /// The `scaleout` settings and what they need of the others.
    fn validate_scaleout(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| ConfigError::Invalid {
            key,
            reason: reason.to_string(),
        };
        if self.scaleout.route_journeys && !self.scaleout.identity_log {
            return Err(invalid("scaleout.route_journeys", "needs scaleout.identity_log = true"));
        }
        if self.scaleout.route_journeys && self.http.advertised_addr.is_empty() && self.http.addr.ip().is_unspecified()
        {
            return Err(invalid(
                "http.advertised_addr",
                "must be set with scaleout.route_journeys when http.addr listens on every interface: the other processes forward lookups to it",
            ));
        }
        if self.scaleout.route_journeys && self.state.partitions > super::MAX_ROUTED_PARTITIONS {
            return Err(invalid(
                "state.partitions",
                "must be at most 510 with scaleout.route_journeys (each owner keeps a clock per routed partition and input partition)",
            ));
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| ConfigError::Invalid {
            key,
            reason: reason.to_string(),
        };
        if self.kafka.brokers.trim().is_empty() {
            return Err(invalid("kafka.brokers", "must not be empty"));
        }
        if self.kafka.group_id.trim().is_empty() {
            return Err(invalid("kafka.group_id", "must not be empty"));
        }
        if self.kafka.output_partitions < 1 || self.kafka.replication_factor < 1 {
            return Err(invalid(
                "kafka.output_partitions",
                "partitions and replication_factor must be >= 1",
            ));
        }
        if self.ingest.max_message_bytes == 0 {
            return Err(invalid("ingest.max_message_bytes", "must be > 0"));
        }
        if !(self.ingest.max_amount.is_finite() && self.ingest.max_amount > 0.0) {
            return Err(invalid("ingest.max_amount", "must be a finite number > 0"));
        }
        if self.http.max_concurrent_requests == 0 {
            return Err(invalid("http.max_concurrent_requests", "must be > 0"));
        }
        if self.http.liveness_timeout.is_zero() {
            return Err(invalid("http.liveness_timeout", "must be > 0"));
        }
        self.validate_erase_tokens()?;
        if !(1..=MAX_CONNECTIONS).contains(&self.http.max_connections) {
            return Err(invalid("http.max_connections", "must be from 1 to 100000"));
        }
        if self.http.header_read_timeout.is_zero() {
            return Err(invalid("http.header_read_timeout", "must be > 0"));
        }
        if self.http.request_timeout.is_zero() {
            return Err(invalid("http.request_timeout", "must be > 0"));
        }
        if self.ingest.max_in_flight == 0 {
            return Err(invalid("ingest.max_in_flight", "must be > 0"));
        }
        let window = self.state.dedupe_window;
        if !window.is_zero() && window < self.timers.allowed_lateness.max(std::time::Duration::from_secs(60)) {
            return Err(invalid(
                "state.dedupe_window",
                "must be 0s (keep every key) or at least timers.allowed_lateness and 1 minute",
            ));
        }
        if !(1..=MAX_STATE_PARTITIONS).contains(&self.state.partitions) {
            return Err(invalid("state.partitions", "must be from 1 to 10000"));
        }
        self.validate_scaleout()?;
        let mut names: Vec<&str> = self.topics.consumed();
        names.extend([
            self.topics.identity_evidence.as_str(),
            self.topics.routed.as_str(),
            self.topics.members.as_str(),
        ]);
        names.extend(self.topics.outputs());
        names.extend(self.topics.changelog(1).map(|(t, _)| t));
        if names.iter().any(|t| t.is_empty()) {
            return Err(invalid("topics", "topic names must not be empty"));
        }
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != names.len() {
            return Err(invalid("topics", "every topic needs its own name"));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level).map_err(|e| invalid("log.level", &e.to_string()))?;
        self.decide.validate().map_err(|e| invalid("decide", &e.to_string()))?;
        self.namespaces()?;
        Ok(())
    }

    /// Erase tokens: named, non-empty, distinct, and never the read token.
    fn validate_erase_tokens(&self) -> Result<(), ConfigError> {
        let invalid = |reason: &str| ConfigError::Invalid {
            key: "http.erase_tokens",
            reason: reason.to_string(),
        };
        let tokens = &self.http.erase_tokens;
        for (name, token) in tokens {
            if name.trim().is_empty() || name.len() > 128 {
                return Err(invalid("a name must be 1 to 128 characters"));
            }
            if token.trim().is_empty() {
                return Err(invalid(&format!("the token of {name} is empty")));
            }
            if *token == self.http.bearer_token {
                return Err(invalid(&format!(
                    "the token of {name} is the read token (http.bearer_token): erasure needs a token of its own"
                )));
            }
        }
        let mut distinct: Vec<&String> = tokens.values().collect();
        distinct.sort_unstable();
        distinct.dedup();
        if distinct.len() != tokens.len() {
            return Err(invalid(
                "two names share one token: the audit log could not tell them apart",
            ));
        }
        Ok(())
    }
}
