//! Configuration: built-in defaults (`default.toml`) -> optional file ->
//! environment (`ONEJOURNEY__SECTION__KEY`, and `ONEJOURNEY_KAFKA_CLIENT_<NAME>`
//! for librdkafka properties) -> command-line flags.
//!
//! Built once in `main` and passed down. Unknown keys are errors, and every
//! bad value fails at start with its key and the reason (`validate.rs`).
//! `derived.rs` turns the settings into the core's configuration types.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use config::{Config, Environment, File, FileFormat};
use onejourney_core::client_env::client_properties_from_env;
use onejourney_core::decide::DecideConfig;
use onejourney_core::ids::{NamespaceRule, Namespaces};
use onejourney_core::Channel;
use serde::{Deserialize, Serialize};

mod derived;
mod validate;

#[cfg(test)]
mod tests;

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
    #[serde(default)]
    pub scaleout: ScaleoutSettings,
}

/// Several engine processes in one consumer group (`docs/scaling.md`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleoutSettings {
    /// Stage 1: every process publishes the identity evidence of the events
    /// it consumes to `topics.identity_evidence` and folds the whole topic,
    /// so every process holds the same identity graph. Off: one process per
    /// consumer group, as before.
    #[serde(default)]
    pub identity_log: bool,
    /// Stage 2 (needs `identity_log`): each event's journey step runs on the
    /// process that owns its profile's state partition, reached through
    /// `topics.routed`; merged-away journeys are handed over. Off: the
    /// process that consumed the event applies it.
    #[serde(default)]
    pub route_journeys: bool,
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
    /// Internal: the latest journey per One ID (`state.partitions`
    /// partitions, compacted), written at every checkpoint.
    pub journeys_changelog: String,
    /// Internal: the identity ops applied, in order (1 partition, kept).
    pub identity_log: String,
    /// Internal: per checkpoint, the globals and the marker that commits it
    /// (1 partition, kept).
    pub state_checkpoints: String,
    /// Internal, with `scaleout.identity_log`: the identity evidence every
    /// process publishes and folds (1 partition, kept).
    #[serde(default = "default_identity_evidence")]
    pub identity_evidence: String,
    /// Internal, with `scaleout.route_journeys`: resolved events and
    /// handed-over journeys, keyed by One ID (`state.partitions` partitions).
    #[serde(default = "default_routed")]
    pub routed: String,
    /// Internal, with `scaleout.route_journeys`: which process owns which
    /// state partition and where its HTTP API is (1 partition, compacted);
    /// lookups are forwarded to the owner of the journey.
    #[serde(default = "default_members")]
    pub members: String,
}

/// The most state partitions `scaleout.route_journeys` takes: an owner keeps
/// a clock per (routed partition, input partition) in 32 bits.
pub const MAX_ROUTED_PARTITIONS: u32 = 510;

fn default_identity_evidence() -> String {
    "onejourney-identity-evidence".to_string()
}

fn default_routed() -> String {
    "onejourney-routed".to_string()
}

fn default_members() -> String {
    "onejourney-members".to_string()
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

    /// The internal state topics (changelog), with their partition counts
    /// given the journeys changelog's.
    pub fn changelog(&self, partitions: u32) -> [(&str, u32); 3] {
        [
            (&self.journeys_changelog, partitions),
            (&self.identity_log, 1),
            (&self.state_checkpoints, 1),
        ]
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
            journeys_changelog: p(&self.journeys_changelog),
            identity_log: p(&self.identity_log),
            state_checkpoints: p(&self.state_checkpoints),
            identity_evidence: p(&self.identity_evidence),
            routed: p(&self.routed),
            members: p(&self.members),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    pub addr: SocketAddr,
    /// With `scaleout.route_journeys`: the `host:port` other processes of
    /// the group reach this one's HTTP API at (lookups of journeys it owns
    /// are forwarded there). Empty: the bound address (right on one host;
    /// in Kubernetes set it to the pod's address).
    #[serde(default)]
    pub advertised_addr: String,
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
    /// Journeys with no event for this long (event time) are kept encoded
    /// in memory and decoded on their next event. `0s`: never.
    #[serde(with = "humantime_serde")]
    pub freeze_journeys_after: Duration,
    /// Estimated state bytes at which the engine stops consuming and goes
    /// not ready, with an error, instead of running out of memory. 0: no limit.
    pub max_memory_bytes: u64,
    /// How long (event time) an applied event's key is remembered to drop a
    /// second copy; older events go to the dead-letter topic (`too_late`).
    /// `0s`: every key is kept for ever, nothing is too late.
    #[serde(with = "humantime_serde")]
    pub dedupe_window: Duration,
    /// Ignore any snapshot and committed offsets: rebuild the state from the
    /// beginning of every input topic (`onejourney run --rebuild`).
    #[serde(default)]
    pub rebuild: bool,
    /// State partitions P: the journeys changelog has P partitions, a
    /// journey goes to `xxh3_64(one_id) % P`. Fixed for the life of a
    /// deployment: a start with another P than the state recorded is refused.
    pub partitions: u32,
    /// Test hook: while this file exists, a checkpoint's background flush
    /// waits before it writes the changelog (processing goes on). Empty: off.
    #[serde(default)]
    pub checkpoint_hold_file: PathBuf,
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
}

/// librdkafka properties whose values are secrets.
pub fn is_secret_key(k: &str) -> bool {
    let k = k.to_ascii_lowercase();
    k.contains("password") || k.contains("secret") || k.ends_with(".key") || k.contains("key.pem")
}
