//! Configuration: built-in defaults (`default.toml`) -> optional file ->
//! environment (`ONEJOURNEY__SECTION__KEY`) -> command-line flags.
//!
//! Built once in `main` and passed down. Unknown keys are errors, and every
//! bad value fails at start with its key and the reason.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use config::{Config, Environment, File, FileFormat};
use onejourney_core::decide::DecideConfig;
use onejourney_core::ids::{NamespaceRule, Namespaces, NormaliseConfig};
use onejourney_core::{Channel, CoreConfig};
use serde::{Deserialize, Serialize};

pub const DEFAULTS: &str = include_str!("default.toml");

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub kafka: KafkaSettings,
    pub topics: Topics,
    pub http: HttpSettings,
    pub log: LogSettings,
    pub ingest: IngestSettings,
    pub state: StateSettings,
    pub identity: IdentitySettings,
    pub timers: TimerSettings,
    pub decide: DecideConfig,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSettings {
    pub brokers: String,
    pub group_id: String,
    pub output_partitions: i32,
    pub replication_factor: i32,
    /// Passed to librdkafka as-is, for every client.
    #[serde(default)]
    pub client: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topics {
    pub web_clicks: String,
    pub pos_transactions: String,
    pub app_sessions: String,
    pub call_center_events: String,
    pub next_best_actions: String,
    pub churn_risk: String,
    pub identity_changes: String,
    pub dead_letter: String,
}

impl Topics {
    pub fn inputs(&self) -> [(&str, Channel); 4] {
        [
            (&self.web_clicks, Channel::Web),
            (&self.pos_transactions, Channel::Pos),
            (&self.app_sessions, Channel::App),
            (&self.call_center_events, Channel::CallCenter),
        ]
    }

    pub fn outputs(&self) -> [&str; 4] {
        [
            &self.next_best_actions,
            &self.churn_risk,
            &self.identity_changes,
            &self.dead_letter,
        ]
    }

    pub fn channel_of(&self, topic: &str) -> Option<Channel> {
        self.inputs()
            .iter()
            .find(|(t, _)| *t == topic)
            .map(|(_, c)| *c)
    }

    /// Every topic name with a prefix, for isolated test runs.
    pub fn prefixed(&self, prefix: &str) -> Topics {
        let p = |t: &str| format!("{prefix}{t}");
        Topics {
            web_clicks: p(&self.web_clicks),
            pos_transactions: p(&self.pos_transactions),
            app_sessions: p(&self.app_sessions),
            call_center_events: p(&self.call_center_events),
            next_best_actions: p(&self.next_best_actions),
            churn_risk: p(&self.churn_risk),
            identity_changes: p(&self.identity_changes),
            dead_letter: p(&self.dead_letter),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    pub addr: SocketAddr,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestSettings {
    pub max_message_bytes: usize,
    pub max_in_flight: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateSettings {
    pub dir: PathBuf,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentitySettings {
    pub default_country_code: String,
    pub extra_blocked_values: Vec<String>,
    pub extra_namespaces: Vec<NamespaceRule>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimerSettings {
    #[serde(with = "humantime_serde")]
    pub allowed_lateness: Duration,
}

/// Values given on the command line; they override every other layer.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub brokers: Option<String>,
    pub http_addr: Option<String>,
    pub group_id: Option<String>,
    pub state_dir: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config: {0}")]
    Load(#[from] config::ConfigError),
    #[error("config: {key}: {reason}")]
    Invalid { key: &'static str, reason: String },
}

impl Settings {
    /// Loads the layers in order; `env` is the environment to read (the
    /// process environment in `main`, a fixed map in tests).
    pub fn load(
        file: Option<&Path>,
        env: Option<BTreeMap<String, String>>,
        cli: &Overrides,
    ) -> Result<Settings, ConfigError> {
        let mut b = Config::builder().add_source(File::from_str(DEFAULTS, FileFormat::Toml));
        if let Some(f) = file {
            b = b.add_source(File::from(f).required(true));
        }
        let environment = Environment::with_prefix("ONEJOURNEY")
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            .list_separator(",")
            .with_list_parse_key("identity.extra_blocked_values");
        b = b.add_source(match env {
            Some(map) => environment.source(Some(map.into_iter().collect())),
            None => environment,
        });
        let pairs = [
            ("kafka.brokers", &cli.brokers),
            ("http.addr", &cli.http_addr),
            ("kafka.group_id", &cli.group_id),
            ("state.dir", &cli.state_dir),
        ];
        for (key, value) in pairs {
            if let Some(v) = value {
                b = b.set_override(key, v.as_str())?;
            }
        }
        let settings: Settings = b.build()?.try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    /// The built-in defaults alone.
    pub fn defaults() -> Result<Settings, ConfigError> {
        Settings::load(None, Some(BTreeMap::new()), &Overrides::default())
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
        if self.ingest.max_in_flight == 0 {
            return Err(invalid("ingest.max_in_flight", "must be > 0"));
        }
        let mut names: Vec<&str> = self.topics.inputs().iter().map(|(t, _)| *t).collect();
        names.extend(self.topics.outputs());
        if names.iter().any(|t| t.is_empty()) {
            return Err(invalid("topics", "topic names must not be empty"));
        }
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != names.len() {
            return Err(invalid("topics", "every topic needs its own name"));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| invalid("log.level", &e.to_string()))?;
        self.decide
            .validate()
            .map_err(|e| invalid("decide", &e.to_string()))?;
        self.namespaces()?;
        Ok(())
    }

    pub fn namespaces(&self) -> Result<Arc<Namespaces>, ConfigError> {
        let mut rules = Namespaces::default_rules();
        rules.extend(self.identity.extra_namespaces.iter().cloned());
        let norm = NormaliseConfig {
            default_country_code: self.identity.default_country_code.clone(),
            extra_blocked_values: self.identity.extra_blocked_values.clone(),
        };
        Namespaces::new(rules, norm)
            .map(Arc::new)
            .map_err(|e| ConfigError::Invalid {
                key: "identity.extra_namespaces",
                reason: e.to_string(),
            })
    }

    pub fn core(&self) -> CoreConfig {
        CoreConfig {
            decide: self.decide.clone(),
            allowed_lateness: self.timers.allowed_lateness,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn defaults_parse_and_validate() {
        let s = Settings::defaults().unwrap();
        assert_eq!(s.topics.web_clicks, "web-clicks");
        assert_eq!(s.http.addr.port(), 9100);
        assert_eq!(s.decide.actions.len(), 4);
        assert_eq!(s.ingest.max_message_bytes, 1 << 20);
    }

    #[test]
    fn environment_and_flags_override_in_order() {
        let s = Settings::load(
            None,
            env(&[
                ("ONEJOURNEY__KAFKA__BROKERS", "10.0.0.1:9092"),
                ("ONEJOURNEY__KAFKA__GROUP_ID", "g-env"),
            ]),
            &Overrides {
                group_id: Some("g-cli".into()),
                ..Overrides::default()
            },
        )
        .unwrap();
        assert_eq!(s.kafka.brokers, "10.0.0.1:9092");
        assert_eq!(s.kafka.group_id, "g-cli");
    }

    #[test]
    fn unknown_keys_are_errors() {
        let err = Settings::load(
            None,
            env(&[("ONEJOURNEY__KAFKA__BROKRES", "x")]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("brokres"), "{err}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let err = Settings::load(
            None,
            env(&[("ONEJOURNEY__INGEST__MAX_MESSAGE_BYTES", "0")]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("ingest.max_message_bytes"),
            "{err}"
        );
        let err = Settings::load(
            None,
            env(&[("ONEJOURNEY__TOPICS__CHURN_RISK", "web-clicks")]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("topics"), "{err}");
        let err = Settings::load(
            None,
            env(&[("ONEJOURNEY__HTTP__ADDR", "nowhere")]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("addr"), "{err}");
    }

    #[test]
    fn a_file_layer_is_read() {
        let dir = std::env::temp_dir().join(format!("oj-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("c.toml");
        std::fs::write(
            &f,
            "[kafka]\nbrokers = \"file:1\"\n[timers]\nallowed_lateness = \"5m\"\n",
        )
        .unwrap();
        let s = Settings::load(Some(&f), env(&[]), &Overrides::default()).unwrap();
        assert_eq!(s.kafka.brokers, "file:1");
        assert_eq!(s.timers.allowed_lateness, Duration::from_secs(300));
        assert_eq!(s.kafka.group_id, "onejourney", "defaults fill the rest");
    }
}
