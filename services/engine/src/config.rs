//! Configuration: built-in defaults (`default.toml`) -> optional file ->
//! environment (`ONEJOURNEY__SECTION__KEY`, and `ONEJOURNEY_KAFKA_CLIENT_<NAME>`
//! for librdkafka properties) -> command-line flags.
//!
//! Built once in `main` and passed down. Unknown keys are errors, and every
//! bad value fails at start with its key and the reason.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use config::{Config, Environment, File, FileFormat};
use onejourney_core::client_env::client_properties_from_env;
use onejourney_core::decide::DecideConfig;
use onejourney_core::event::InputLimits;
use onejourney_core::ids::{IdentityLimits, NamespaceRule, Namespaces, NormaliseConfig};
use onejourney_core::key::IdentityKey;
use onejourney_core::{Channel, CoreConfig};
use serde::{Deserialize, Serialize};

pub const DEFAULTS: &str = include_str!("default.toml");

/// The most `http.max_connections` may be.
const MAX_CONNECTIONS: usize = 100_000;

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
    /// Static group membership (`group.instance.id`): a stable id per
    /// instance, e.g. the StatefulSet pod name. Empty: dynamic membership.
    #[serde(default)]
    pub group_instance_id: String,
    /// SASL password, kept out of config files: set it with
    /// `ONEJOURNEY__KAFKA__SASL_PASSWORD`. Empty: not used.
    #[serde(default)]
    pub sasl_password: String,
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
    /// Outcomes of decisions, fed back into the learned propensities.
    pub action_outcomes: String,
    /// Forget commands (erasure); `DELETE /v1/profiles/...` publishes here.
    pub identity_control: String,
    /// One record per applied forget: the audit log of erasures, read to
    /// its end at every start so a rebuild cannot bring an identifier back.
    pub erasures: String,
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

    /// Every topic the engine consumes: the four channels, the outcomes and
    /// the identity-control commands.
    pub fn consumed(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.inputs().iter().map(|(t, _)| *t).collect();
        v.push(&self.action_outcomes);
        v.push(&self.identity_control);
        v
    }

    pub fn outputs(&self) -> [&str; 5] {
        [
            &self.next_best_actions,
            &self.churn_risk,
            &self.identity_changes,
            &self.dead_letter,
            &self.erasures,
        ]
    }

    /// The topic of one input channel.
    pub fn for_channel(&self, channel: Channel) -> &str {
        self.inputs()
            .into_iter()
            .find(|(_, c)| *c == channel)
            .map_or("", |(t, _)| t)
    }

    pub fn channel_of(&self, topic: &str) -> Option<Channel> {
        self.inputs().iter().find(|(t, _)| *t == topic).map(|(_, c)| *c)
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
            action_outcomes: p(&self.action_outcomes),
            identity_control: p(&self.identity_control),
            erasures: p(&self.erasures),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    pub addr: SocketAddr,
    /// When set, `/v1/...` requires `Authorization: Bearer <token>`.
    /// `/metrics`, `/healthz` and `/readyz` stay open.
    #[serde(default)]
    pub bearer_token: String,
    /// Who may erase (`DELETE /v1/profiles/...`): name -> token. The name is
    /// recorded as `requested_by` on the erasure record. Empty: erasure over
    /// HTTP is disabled (403); the read token never erases.
    #[serde(default)]
    pub erase_tokens: BTreeMap<String, String>,
    /// Lookup requests served at once; more get 503.
    pub max_concurrent_requests: usize,
    /// Connections open at once; more wait to be accepted (see `http::server`).
    pub max_connections: usize,
    /// A request head (request line and headers) must be complete this long
    /// after the server began waiting for it; also the keep-alive idle timeout.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A request without a response after this long gets 503.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Keep connections open between requests.
    pub keep_alive: bool,
    /// `/healthz` turns 503 when neither the poll loop nor a long start-up
    /// phase has shown progress for this long.
    #[serde(with = "humantime_serde")]
    pub liveness_timeout: Duration,
}

impl HttpSettings {
    /// What the server enforces on connections.
    pub fn limits(&self) -> crate::http::server::Limits {
        crate::http::server::Limits {
            header_read_timeout: self.header_read_timeout,
            request_timeout: self.request_timeout,
            keep_alive: self.keep_alive,
            max_connections: self.max_connections,
        }
    }
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
    /// At most this many identical warnings (same kind and reason) a minute;
    /// the rest are counted and summarised.
    pub repeated_warnings_per_minute: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestSettings {
    pub max_message_bytes: usize,
    /// The largest amount (price, revenue, total, line total) one event may
    /// carry; more goes to the dead-letter topic (`bad_amount`).
    pub max_amount: f64,
    pub max_in_flight: usize,
    /// An input partition whose broker holds records none of which arrives
    /// for this long is reported stalled and stops holding the watermark back.
    #[serde(with = "humantime_serde")]
    pub stall_after: Duration,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateSettings {
    pub dir: PathBuf,
    /// How often the state is written to `dir` (and input offsets committed).
    #[serde(with = "humantime_serde")]
    pub snapshot_interval: Duration,
    /// Journeys with no event for this long (event time) lose their detail;
    /// identity links are kept. `0s`: never.
    #[serde(with = "humantime_serde")]
    pub evict_journeys_after: Duration,
    /// Estimated state bytes at which the engine stops consuming and goes
    /// not ready, with an error, instead of running out of memory. 0: no limit.
    pub max_memory_bytes: u64,
    /// Ignore any snapshot and committed offsets: rebuild the state from the
    /// beginning of every input topic (`onejourney run --rebuild`).
    #[serde(default)]
    pub rebuild: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentitySettings {
    pub default_country_code: String,
    pub extra_blocked_values: Vec<String>,
    pub blocked_patterns: Vec<String>,
    pub max_identifiers_per_profile: usize,
    pub shared_device_max_persons: usize,
    #[serde(with = "humantime_serde")]
    pub shared_device_window: Duration,
    /// The namespace table; not set: the contract's, built into the core
    /// ([`Namespaces::default_rules`]), its one source.
    #[serde(default = "Namespaces::default_rules")]
    pub namespaces: Vec<NamespaceRule>,
    pub extra_namespaces: Vec<NamespaceRule>,
    /// The secret One IDs and suppression entries are derived under (HMAC-
    /// SHA256), kept out of config files: `ONEJOURNEY__IDENTITY__KEY`, or
    /// `key_file`. Empty: the public development key, with a warning.
    #[serde(default)]
    pub key: String,
    /// A file holding the key (a mounted Kubernetes secret); read at start,
    /// surrounding whitespace ignored.
    #[serde(default)]
    pub key_file: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimerSettings {
    #[serde(with = "humantime_serde")]
    pub allowed_lateness: Duration,
    #[serde(with = "humantime_serde")]
    pub idle_after: Duration,
    /// Events dated more than this ahead of the engine's clock go to the
    /// dead-letter topic (`future_timestamp`).
    #[serde(with = "humantime_serde")]
    pub max_future_skew: Duration,
    /// Events dated more than this before the engine's clock go to the
    /// dead-letter topic (`too_old`); `0s`: no limit.
    #[serde(with = "humantime_serde")]
    pub max_event_age: Duration,
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
        // librdkafka properties by environment (`ONEJOURNEY_KAFKA_CLIENT_SSL_CA_LOCATION`
        // -> `ssl.ca.location`): the separator above cannot spell dotted names.
        let client_env = match &env {
            Some(map) => client_properties_from_env(map.clone()),
            None => client_properties_from_env(std::env::vars()),
        };
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
        let mut settings: Settings = b.build()?.try_deserialize()?;
        settings.kafka.client.extend(client_env);
        settings.read_key_file()?;
        settings.validate()?;
        Ok(settings)
    }

    /// The effective configuration as TOML, secrets masked.
    pub fn to_masked_toml(&self) -> Result<String, ConfigError> {
        let mut s = self.clone();
        let mask = |v: &mut String| {
            if !v.is_empty() {
                *v = String::from("***");
            }
        };
        mask(&mut s.kafka.sasl_password);
        mask(&mut s.http.bearer_token);
        s.http.erase_tokens.values_mut().for_each(mask);
        mask(&mut s.identity.key);
        for (k, v) in s.kafka.client.iter_mut() {
            if is_secret_key(k) {
                mask(v);
            }
        }
        toml::to_string_pretty(&s).map_err(|e| ConfigError::Invalid {
            key: "(all)",
            reason: e.to_string(),
        })
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
        let mut names: Vec<&str> = self.topics.consumed();
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

    /// Reads `identity.key_file` into `identity.key` (both set: an error).
    fn read_key_file(&mut self) -> Result<(), ConfigError> {
        let file = &self.identity.key_file;
        if file.is_empty() {
            return Ok(());
        }
        let invalid = |reason: String| ConfigError::Invalid {
            key: "identity.key_file",
            reason,
        };
        if !self.identity.key.is_empty() {
            return Err(invalid(String::from("set identity.key or identity.key_file, not both")));
        }
        let text = std::fs::read_to_string(file).map_err(|e| invalid(format!("reading {file}: {e}")))?;
        self.identity.key = text.trim().to_string();
        if self.identity.key.is_empty() {
            return Err(invalid(format!("{file} is empty")));
        }
        Ok(())
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
        }
    }
}

/// librdkafka properties whose values are secrets.
pub fn is_secret_key(k: &str) -> bool {
    let k = k.to_ascii_lowercase();
    k.contains("password") || k.contains("secret") || k.ends_with(".key") || k.contains("key.pem")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
        Some(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn defaults_parse_and_validate() {
        let s = Settings::defaults().unwrap();
        assert_eq!(s.topics.web_clicks, "web-clicks");
        assert_eq!(s.http.addr.port(), 9100);
        assert_eq!(s.decide.actions.len(), 7);
        assert_eq!(s.topics.action_outcomes, "action-outcomes");
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
    fn the_default_namespace_table_is_the_contracts() {
        let s = Settings::defaults().unwrap();
        assert_eq!(s.identity.namespaces, Namespaces::default_rules());
        assert_eq!(*s.namespaces().unwrap().limits(), IdentityLimits::default());
        // check-config prints the table, and what it prints reads back the same.
        let text = s.to_masked_toml().unwrap();
        assert!(text.contains("customer_id") && text.contains("card_token"), "{text}");
        let back: Settings = toml::from_str(&text).unwrap();
        assert_eq!(back.identity.namespaces, Namespaces::default_rules());
        let bad = Settings::load(
            None,
            env(&[("ONEJOURNEY__IDENTITY__SHARED_DEVICE_MAX_PERSONS", "0")]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(bad.to_string().contains("identity"), "{bad}");
    }

    #[test]
    fn input_limits_come_from_ingest_and_timers() {
        let s = Settings::defaults().unwrap();
        let l = s.input_limits();
        assert_eq!(l.max_amount, 1e9);
        assert_eq!(l.max_future_skew, Duration::from_secs(300));
        assert_eq!(
            l.max_event_age,
            Duration::ZERO,
            "no horizon by default: rebuilds replay old history"
        );
        let bad = Settings::load(
            None,
            env(&[("ONEJOURNEY__INGEST__MAX_AMOUNT", "0")]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(bad.to_string().contains("ingest.max_amount"), "{bad}");
    }

    #[test]
    fn a_file_replaces_or_extends_the_namespace_table() {
        let dir = std::env::temp_dir().join(format!("oj-config-ns-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("c.toml");
        std::fs::write(
            &f,
            "[identity]\n\
             namespaces = [\n\
               { name = \"email_sha256\", kind = \"person\", priority = 80 },\n\
               { name = \"phone_sha256\", kind = \"person\", priority = 70 },\n\
             ]\n\
             [[identity.extra_namespaces]]\n\
             name = \"member_no\"\n\
             kind = \"person\"\n\
             priority = 20\n\
             reaches = [\"store\"]\n",
        )
        .unwrap();
        let s = Settings::load(Some(&f), env(&[]), &Overrides::default()).unwrap();
        let ns = s.namespaces().unwrap();
        assert_eq!(ns.names(), vec!["email_sha256", "phone_sha256", "member_no"]);
        let member = ns.lookup("member_no").unwrap();
        assert_eq!(ns.routes(member), [onejourney_core::vocab::ContactChannel::Store]);
    }

    #[test]
    fn erase_tokens_are_named_distinct_and_not_the_read_token() {
        let load = |pairs: &[(&str, &str)]| Settings::load(None, env(pairs), &Overrides::default());
        let s = load(&[
            ("ONEJOURNEY__HTTP__BEARER_TOKEN", "read-1"),
            ("ONEJOURNEY__HTTP__ERASE_TOKENS__DPO", "erase-1"),
        ])
        .unwrap();
        assert_eq!(s.http.erase_tokens.get("dpo").map(String::as_str), Some("erase-1"));
        assert!(!s.to_masked_toml().unwrap().contains("erase-1"), "masked");
        assert!(
            Settings::defaults().unwrap().http.erase_tokens.is_empty(),
            "none by default"
        );
        let same = load(&[
            ("ONEJOURNEY__HTTP__BEARER_TOKEN", "read-1"),
            ("ONEJOURNEY__HTTP__ERASE_TOKENS__DPO", "read-1"),
        ])
        .unwrap_err();
        assert!(same.to_string().contains("http.erase_tokens"), "{same}");
        let shared = load(&[
            ("ONEJOURNEY__HTTP__ERASE_TOKENS__A", "t"),
            ("ONEJOURNEY__HTTP__ERASE_TOKENS__B", "t"),
        ])
        .unwrap_err();
        assert!(shared.to_string().contains("share"), "{shared}");
    }

    #[test]
    fn unknown_keys_are_errors() {
        let err = Settings::load(None, env(&[("ONEJOURNEY__KAFKA__BROKRES", "x")]), &Overrides::default()).unwrap_err();
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
        assert!(err.to_string().contains("ingest.max_message_bytes"), "{err}");
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
    fn check_config_masks_secrets_and_keeps_dotted_librdkafka_keys() {
        let dir = std::env::temp_dir().join(format!("oj-config-mask-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("c.toml");
        std::fs::write(
            &f,
            "[kafka.client]\n\"security.protocol\" = \"SASL_SSL\"\n\"sasl.password\" = \"hunter2\"\n",
        )
        .unwrap();
        let s = Settings::load(
            Some(&f),
            env(&[("ONEJOURNEY__HTTP__BEARER_TOKEN", "tok-123")]),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(
            s.kafka.client.get("security.protocol").map(String::as_str),
            Some("SASL_SSL")
        );
        let text = s.to_masked_toml().unwrap();
        assert!(text.contains("SASL_SSL"), "{text}");
        assert!(!text.contains("hunter2") && !text.contains("tok-123"), "{text}");
        // What check-config prints loads back as a config file.
        let back = dir.join("back.toml");
        std::fs::write(&back, &text).unwrap();
        assert!(Settings::load(Some(&back), env(&[]), &Overrides::default()).is_ok());
    }

    #[test]
    fn librdkafka_properties_come_from_the_environment_with_their_dots() {
        let dir = std::env::temp_dir().join(format!("oj-config-client-env-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("c.toml");
        std::fs::write(
            &f,
            "[kafka.client]\n\"security.protocol\" = \"SSL\"\n\"client.id\" = \"from-file\"\n",
        )
        .unwrap();
        let s = Settings::load(
            Some(&f),
            env(&[
                ("ONEJOURNEY_KAFKA_CLIENT_SSL_CA_LOCATION", "/run/ca.pem"),
                ("ONEJOURNEY_KAFKA_CLIENT_SECURITY_PROTOCOL", "SASL_SSL"),
                ("ONEJOURNEY_KAFKA_CLIENT_SASL_PASSWORD", "hunter2"),
            ]),
            &Overrides::default(),
        )
        .unwrap();
        let get = |k: &str| s.kafka.client.get(k).map(String::as_str);
        assert_eq!(get("ssl.ca.location"), Some("/run/ca.pem"));
        assert_eq!(
            get("security.protocol"),
            Some("SASL_SSL"),
            "the environment wins over the file"
        );
        assert_eq!(get("client.id"), Some("from-file"));
        assert!(!s.to_masked_toml().unwrap().contains("hunter2"));
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

    #[test]
    fn the_identity_key_comes_from_the_environment_or_a_file_and_is_masked() {
        let load = |pairs: &[(&str, &str)]| Settings::load(None, env(pairs), &Overrides::default());
        let none = load(&[]).unwrap();
        assert!(none.namespaces().unwrap().identity_key().is_development());
        let secret = "an identity key of some length";
        let s = load(&[("ONEJOURNEY__IDENTITY__KEY", secret)]).unwrap();
        let key = s.namespaces().unwrap().identity_key().clone();
        assert!(!key.is_development());
        assert!(!s.to_masked_toml().unwrap().contains(secret));
        let dir = std::env::temp_dir().join(format!("oj-config-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("identity.key");
        std::fs::write(&file, format!("{secret}\n")).unwrap();
        let path = file.to_str().unwrap();
        let f = load(&[("ONEJOURNEY__IDENTITY__KEY_FILE", path)]).unwrap();
        assert_eq!(
            f.namespaces().unwrap().identity_key().id(),
            key.id(),
            "the file's key, newline trimmed"
        );
        let err = |pairs: &[(&str, &str)]| load(pairs).unwrap_err().to_string();
        assert!(err(&[("ONEJOURNEY__IDENTITY__KEY", "short")]).contains("identity.key"));
        assert!(err(&[
            ("ONEJOURNEY__IDENTITY__KEY", secret),
            ("ONEJOURNEY__IDENTITY__KEY_FILE", path)
        ])
        .contains("not both"));
        assert!(err(&[("ONEJOURNEY__IDENTITY__KEY_FILE", "/nonexistent/key")]).contains("identity.key_file"));
        std::fs::write(&file, "\n").unwrap();
        assert!(err(&[("ONEJOURNEY__IDENTITY__KEY_FILE", path)]).contains("empty"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
