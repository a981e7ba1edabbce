//! What the settings give the pure core: the namespace table (with the
//! identity key), the decoder's input limits, the processor's configuration.
//!
//! In: [`Settings`]. Out: the core's own configuration types. It keeps
//! nothing; each call builds them again from the settings.

use std::sync::Arc;

use onejourney_core::event::InputLimits;
use onejourney_core::ids::{IdentityLimits, Namespaces, NormaliseConfig};
use onejourney_core::key::IdentityKey;
use onejourney_core::CoreConfig;

use super::{ConfigError, Settings};

impl Settings {
    pub fn namespaces(&self) -> Result<Arc<Namespaces>, ConfigError> {
        let id = &self.identity;
        let mut rules = id.namespaces.clone();
        rules.extend(id.extra_namespaces.iter().cloned());
        let norm = NormaliseConfig {
            default_country_code: id.default_country_code.clone(),
            extra_blocked_values: id.extra_blocked_values.clone(),
            blocked_patterns: id.blocked_patterns.clone(),
        };
        let limits = IdentityLimits {
            max_identifiers_per_profile: id.max_identifiers_per_profile,
            shared_device_max_persons: id.shared_device_max_persons,
            shared_device_window: id.shared_device_window,
        };
        let key = self.identity_key()?;
        Namespaces::new(rules, norm)
            .and_then(|n| n.with_limits(limits))
            .map(|n| Arc::new(n.with_identity_key(key)))
            .map_err(|e| ConfigError::Invalid {
                key: "identity",
                reason: e.to_string(),
            })
    }

    /// The configured identity key; none: the core's public development key.
    pub fn identity_key(&self) -> Result<IdentityKey, ConfigError> {
        if self.identity.key.is_empty() {
            return Ok(IdentityKey::development());
        }
        IdentityKey::new(self.identity.key.as_bytes()).map_err(|e| ConfigError::Invalid {
            key: "identity.key",
            reason: e.to_string(),
        })
    }

    /// Amount and event-time bounds for the decoder.
    pub fn input_limits(&self) -> InputLimits {
        InputLimits {
            max_amount: self.ingest.max_amount,
            max_future_skew: self.timers.max_future_skew,
            max_event_age: self.timers.max_event_age,
        }
    }

    pub fn core(&self) -> CoreConfig {
        CoreConfig {
            decide: self.decide.clone(),
            allowed_lateness: self.timers.allowed_lateness,
            idle_after: self.timers.idle_after,
            dedupe_window: self.state.dedupe_window,
        }
    }
}
