//! Decoding: bytes -> validated inputs.
//!
//! In: the raw bytes of one message and the channel its topic belongs to (or
//! the `action-outcomes` / `identity-control` topic). Out: the core's inputs:
//! a typed [`ChannelEvent`] whose identifiers are normalised (email and phone
//! hashed), an [`ActionOutcome`] or a [`ControlCommand`]; or a [`DecodeError`]
//! whose `reason()` is a small fixed label for metrics and whose `Display` is
//! a readable sentence for the dead-letter header. Keeps only the compiled
//! schemas and the namespace table.
//! Invariant: every message is validated against the JSON Schema of its channel
//! (compiled once, in [`Decoder::new`]) before anything reads it; error text
//! never quotes the message's values, so no PII reaches logs or headers.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{BlockReason, IdKey, Namespaces};
use crate::time::EventTime;
use crate::vocab::{ContactChannel, Outcome};

/// The four input channels.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Web,
    Pos,
    App,
    CallCenter,
}

impl Channel {
    /// How many input channels there are.
    pub const COUNT: usize = 4;

    /// Every input channel, in [`Channel::index`] order.
    pub const ALL: [Channel; Channel::COUNT] = [Channel::Web, Channel::Pos, Channel::App, Channel::CallCenter];

    /// Label for metrics and outputs.
    pub fn label(self) -> &'static str {
        match self {
            Channel::Web => "web",
            Channel::Pos => "pos",
            Channel::App => "app",
            Channel::CallCenter => "call_center",
        }
    }

    /// Position in [`Channel::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The schema file in `schemas/` that describes this channel's events.
    pub fn schema_file(self) -> &'static str {
        match self {
            Channel::Web => "web-click.v1.json",
            Channel::Pos => "pos-transaction.v1.json",
            Channel::App => "app-session.v1.json",
            Channel::CallCenter => "call-center-event.v1.json",
        }
    }

    fn schema_text(self) -> &'static str {
        match self {
            Channel::Web => include_str!("../../../schemas/web-click.v1.json"),
            Channel::Pos => include_str!("../../../schemas/pos-transaction.v1.json"),
            Channel::App => include_str!("../../../schemas/app-session.v1.json"),
            Channel::CallCenter => include_str!("../../../schemas/call-center-event.v1.json"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Product {
    pub sku: String,
    pub price: f64,
    #[serde(default)]
    pub category: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LineItem {
    pub sku: String,
    pub quantity: u32,
    pub unit_price: f64,
    #[serde(default)]
    pub category: Option<String>,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallReason {
    Billing,
    Complaint,
    CancelRequest,
    ProductQuestion,
    OrderStatus,
    TechnicalSupport,
    Other,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallOutcome {
    Resolved,
    Unresolved,
    Escalated,
    Abandoned,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CallDirection {
    Inbound,
    Outbound,
    CallbackRequested,
}

/// What happened, independent of the channel's wire format. Serialised
/// only inside the engine's own records (`routed.rs`), never on the contract.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Activity {
    PageView,
    ProductView(Option<Product>),
    Search,
    AddToCart(Product),
    RemoveFromCart(Product),
    CheckoutStart,
    /// A completed purchase on web or app.
    Purchase {
        revenue: f64,
    },
    Login,
    Signup,
    /// A point-of-sale sale.
    Sale {
        total: f64,
        items: Vec<LineItem>,
    },
    /// A point-of-sale return.
    Return {
        total: f64,
    },
    SessionStart,
    ScreenView,
    SessionEnd,
    PushOptIn,
    PushOptOut,
    Call {
        direction: CallDirection,
        reason: Option<CallReason>,
        outcome: Option<CallOutcome>,
        csat: Option<u8>,
        sentiment: Option<f64>,
    },
}

impl Activity {
    /// The bytes its lists and texts hold beyond itself.
    fn heap_bytes(&self) -> usize {
        let text = |s: &Option<String>| s.as_ref().map_or(0, String::capacity);
        match self {
            Activity::ProductView(Some(p)) | Activity::AddToCart(p) | Activity::RemoveFromCart(p) => {
                p.sku.capacity() + text(&p.category)
            }
            Activity::Sale { items, .. } => {
                items.capacity() * std::mem::size_of::<LineItem>()
                    + items
                        .iter()
                        .map(|i| i.sku.capacity() + text(&i.category))
                        .sum::<usize>()
            }
            _ => 0,
        }
    }

    pub fn is_purchase(&self) -> bool {
        matches!(self, Activity::Purchase { .. } | Activity::Sale { .. })
    }
}

/// An identifier value dropped on arrival: its namespace and why.
pub type Blocked = (String, BlockReason);

/// A validated event from one channel.
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelEvent {
    pub channel: Channel,
    pub event_id: String,
    pub event_type: String,
    pub occurred_at: EventTime,
    /// Normalised identifiers, sorted and without repeats.
    pub ids: Vec<IdKey>,
    /// Identifier values that were dropped as junk, by namespace name.
    pub blocked: Vec<Blocked>,
    pub activity: Activity,
    /// Consent statements carried by the event (`consent`), effective at
    /// `occurred_at`: channel and whether consent is given.
    pub consent: Vec<(ContactChannel, bool)>,
    /// The customer's offset from UTC in minutes, when the event says.
    pub utc_offset_minutes: Option<i16>,
}

impl ChannelEvent {
    /// An estimate of the bytes the event holds, itself included: what an
    /// event costs while it waits for the watermark (an identifier value is
    /// its own allocation until the graph shares it).
    pub fn approx_bytes(&self) -> usize {
        const TEXT: usize = 16;
        std::mem::size_of::<ChannelEvent>()
            + self.event_id.capacity()
            + self.event_type.capacity()
            + self.ids.capacity() * std::mem::size_of::<IdKey>()
            + self.ids.iter().map(|k| k.value().len() + TEXT).sum::<usize>()
            + self.blocked.capacity() * std::mem::size_of::<Blocked>()
            + self.blocked.iter().map(|(v, _)| v.capacity()).sum::<usize>()
            + self.consent.capacity() * std::mem::size_of::<(ContactChannel, bool)>()
            + self.activity.heap_bytes()
    }
}

/// Why a message could not be decoded. `reason()` is the metric label.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    #[error("identifiers is empty: an event needs at least one identifier")]
    EmptyIdentifiers,
    #[error("unknown identifier namespace {0}")]
    UnknownNamespace(String),
    #[error("schema violation: {0}")]
    Schema(String),
    #[error("occurred_at is not an RFC 3339 timestamp with offset")]
    BadTimestamp,
    #[error("every identifier was empty or a placeholder value ({0})")]
    NoUsableIdentifier(String),
    #[error("bad amount: {0}")]
    BadAmount(String),
    #[error("occurred_at is more than {max_skew_s} s ahead of the engine's clock")]
    FutureTimestamp { max_skew_s: u64 },
    #[error("occurred_at is more than {max_age_s} s behind the engine's clock")]
    TooOld { max_age_s: u64 },
}

impl DecodeError {
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::TooLarge { .. } => "too_large",
            DecodeError::InvalidJson(_) => "invalid_json",
            DecodeError::EmptyIdentifiers => "empty_identifiers",
            DecodeError::UnknownNamespace(_) => "unknown_namespace",
            DecodeError::Schema(_) => "schema",
            DecodeError::BadTimestamp => "bad_timestamp",
            DecodeError::NoUsableIdentifier(_) => "no_usable_identifier",
            DecodeError::BadAmount(_) => "bad_amount",
            DecodeError::FutureTimestamp { .. } => "future_timestamp",
            DecodeError::TooOld { .. } => "too_old",
        }
    }

    /// Every label `reason()` can return, for pre-registering metrics.
    pub const REASONS: [&'static str; 10] = [
        "too_large",
        "invalid_json",
        "empty_identifiers",
        "unknown_namespace",
        "schema",
        "bad_timestamp",
        "no_usable_identifier",
        "bad_amount",
        "future_timestamp",
        "too_old",
    ];
}

/// A command on the `identity-control` topic.
#[derive(Clone, Debug, PartialEq)]
pub enum ControlCommand {
    /// Erase the profile this identifier belongs to.
    Forget(ForgetCommand),
    /// Record a consent statement on the profile this identifier belongs to
    /// (since contract 1.4).
    Consent(ConsentCommand),
}

/// A consent command: the customer opted in to (`granted`) or out of
/// `channel` at `at`.
#[derive(Clone, Debug, PartialEq)]
pub struct ConsentCommand {
    pub key: IdKey,
    pub channel: ContactChannel,
    pub granted: bool,
    pub at: EventTime,
}

/// A forget command: the identifier, and who asked through which path (for
/// the erasure record).
#[derive(Clone, Debug, PartialEq)]
pub struct ForgetCommand {
    pub key: IdKey,
    /// The command's optional `requested_by` (the engine's HTTP API sets the
    /// name of the erase token).
    pub requested_by: Option<String>,
    pub via: ErasurePath,
}

/// How a forget reached the engine.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ErasurePath {
    /// `DELETE /v1/profiles/...` (the command's `via` is `http`).
    Http,
    /// A command published on `identity-control` by another system.
    IdentityControl,
}

impl ErasurePath {
    pub fn label(self) -> &'static str {
        match self {
            ErasurePath::Http => "http",
            ErasurePath::IdentityControl => "identity_control",
        }
    }
}

/// An `action-outcomes` record.
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
pub struct ActionOutcome {
    pub action_id: String,
    pub one_id: String,
    pub outcome: Outcome,
    pub at: String,
}

/// Compiled validators for the channels and the other input topics, plus
/// the namespace table.
pub struct Decoder {
    /// Indexed by [`Channel::index`].
    validators: Vec<jsonschema::Validator>,
    outcome: jsonschema::Validator,
    control: jsonschema::Validator,
    namespaces: Arc<Namespaces>,
    max_bytes: usize,
    limits: InputLimits,
}

/// A schema in `schemas/` failed to compile: a build defect, not bad input.
#[derive(Debug, thiserror::Error)]
#[error("schema {file} is invalid: {message}")]
pub struct SchemaCompileError {
    pub file: &'static str,
    pub message: String,
}

impl Decoder {
    pub fn new(namespaces: Arc<Namespaces>, max_bytes: usize) -> Result<Self, SchemaCompileError> {
        let compile = |c: Channel| -> Result<jsonschema::Validator, SchemaCompileError> {
            let err = |message: String| SchemaCompileError {
                file: c.schema_file(),
                message,
            };
            let schema: Value = serde_json::from_str(c.schema_text()).map_err(|e| err(e.to_string()))?;
            jsonschema::validator_for(&schema).map_err(|e| err(e.to_string()))
        };
        let fixed = |file: &'static str, text: &str| -> Result<jsonschema::Validator, SchemaCompileError> {
            let err = |message: String| SchemaCompileError { file, message };
            let schema: Value = serde_json::from_str(text).map_err(|e| err(e.to_string()))?;
            jsonschema::validator_for(&schema).map_err(|e| err(e.to_string()))
        };
        let outcome = fixed(
            "action-outcome.v1.json",
            include_str!("../../../schemas/action-outcome.v1.json"),
        )?;
        let control = fixed(
            "identity-control.v1.json",
            include_str!("../../../schemas/identity-control.v1.json"),
        )?;
        let validators = Channel::ALL.into_iter().map(compile).collect::<Result<_, _>>()?;
        Ok(Decoder {
            outcome,
            control,
            validators,
            namespaces,
            max_bytes,
            limits: InputLimits::default(),
        })
    }

    /// The same decoder with other amount and event-time bounds.
    pub fn with_limits(mut self, limits: InputLimits) -> Self {
        self.limits = limits;
        self
    }

    pub fn limits(&self) -> &InputLimits {
        &self.limits
    }

    /// The first steps of every input: size limit and JSON syntax.
    fn parsed(&self, bytes: &[u8]) -> Result<Value, DecodeError> {
        if bytes.len() > self.max_bytes {
            return Err(DecodeError::TooLarge {
                size: bytes.len(),
                limit: self.max_bytes,
            });
        }
        serde_json::from_slice(bytes).map_err(|e| DecodeError::InvalidJson(json_error(&e)))
    }

    /// Size limit, JSON and one schema: the common start of the non-channel
    /// inputs (outcomes, control commands).
    fn validated(&self, schema: &jsonschema::Validator, bytes: &[u8]) -> Result<Value, DecodeError> {
        let value = self.parsed(bytes)?;
        check(schema, &value)?;
        Ok(value)
    }

    /// Decodes an `action-outcomes` record.
    pub fn decode_outcome(&self, bytes: &[u8]) -> Result<ActionOutcome, DecodeError> {
        let value = self.validated(&self.outcome, bytes)?;
        // The schema fixed every field's type: serde's own text (which
        // quotes values) is not needed to say what went wrong.
        let o = ActionOutcome::deserialize(&value)
            .map_err(|_| DecodeError::Schema(String::from("fields do not have the types of the schema")))?;
        EventTime::parse_rfc3339(&o.at).ok_or(DecodeError::BadTimestamp)?;
        Ok(o)
    }

    /// An `identity-control` command: a forget or a consent statement, its
    /// identifier normalised (raw email / phone hashed) as on events.
    pub fn decode_control(&self, bytes: &[u8]) -> Result<ControlCommand, DecodeError> {
        let value = self.validated(&self.control, bytes)?;
        let field = |name: &str| value.get(name).and_then(Value::as_str).unwrap_or_default();
        let key = self.identifier(field("namespace"), field("value"))?;
        if field("command") == "consent" {
            // The schema requires the three and bounds `channel` and `status`.
            let channel = match field("channel") {
                "email" => ContactChannel::Email,
                "sms" => ContactChannel::Sms,
                _ => ContactChannel::Push,
            };
            let at = EventTime::parse_rfc3339(field("at")).ok_or(DecodeError::BadTimestamp)?;
            return Ok(ControlCommand::Consent(ConsentCommand {
                key,
                channel,
                granted: field("status") == "opt_in",
                at,
            }));
        }
        // The schema bounds both: a name of 1 to 128 characters, `via` one of two.
        let requested_by = value.get("requested_by").and_then(Value::as_str).map(str::to_string);
        let via = match field("via") {
            "http" => ErasurePath::Http,
            _ => ErasurePath::IdentityControl,
        };
        Ok(ControlCommand::Forget(ForgetCommand { key, requested_by, via }))
    }

    /// One identifier given by name and raw value (the lookup API, forget
    /// commands): normalised and hashed as on events.
    pub fn identifier(&self, namespace: &str, value: &str) -> Result<IdKey, DecodeError> {
        match self.namespaces.normalise(namespace, value) {
            Err(e) => Err(DecodeError::UnknownNamespace(fields::shown_name(&e.0))),
            Ok(Err(reason)) => Err(DecodeError::NoUsableIdentifier(format!(
                "{}: {}",
                fields::shown_name(namespace),
                reason.label()
            ))),
            Ok(Ok(key)) => Ok(key),
        }
    }

    pub fn namespaces(&self) -> &Arc<Namespaces> {
        &self.namespaces
    }

    /// Decodes a channel event that arrives when the engine's clock reads
    /// `now`: [`Decoder::decode`], then the event-time window
    /// ([`Decoder::check_time`]).
    pub fn decode_at(&self, channel: Channel, bytes: &[u8], now: EventTime) -> Result<ChannelEvent, DecodeError> {
        let ev = self.decode(channel, bytes)?;
        self.check_time(ev.occurred_at, now)?;
        Ok(ev)
    }

    /// Whether an event time is plausible at `now` (the engine's wall clock,
    /// given by the caller: the core has no clock). An event far in the future
    /// would drag its partition's watermark there and fire every timer at
    /// once; one older than `max_event_age` (when set) is refused too.
    pub fn check_time(&self, at: EventTime, now: EventTime) -> Result<(), DecodeError> {
        let limits = &self.limits;
        if at > now.plus(limits.max_future_skew) {
            return Err(DecodeError::FutureTimestamp {
                max_skew_s: limits.max_future_skew.as_secs(),
            });
        }
        if !limits.max_event_age.is_zero() && at < now.minus(limits.max_event_age) {
            return Err(DecodeError::TooOld {
                max_age_s: limits.max_event_age.as_secs(),
            });
        }
        Ok(())
    }

    /// Decodes a channel event, without the event-time window (replays and
    /// tools that have no clock to compare with).
    pub fn decode(&self, channel: Channel, bytes: &[u8]) -> Result<ChannelEvent, DecodeError> {
        let value = self.parsed(bytes)?;
        if let Some(ids) = value.get("identifiers").and_then(Value::as_object) {
            if ids.is_empty() {
                return Err(DecodeError::EmptyIdentifiers);
            }
            if let Some(unknown) = ids.keys().find(|k| !self.namespaces.accepts(k)) {
                return Err(DecodeError::UnknownNamespace(fields::shown_name(unknown)));
            }
        }
        check(&self.validators[channel.index()], &value)?;
        let envelope = fields::envelope(&value)?;
        let occurred_at = EventTime::parse_rfc3339(&envelope.occurred_at).ok_or(DecodeError::BadTimestamp)?;
        let activity = fields::activity(channel, &envelope.event_type, &value, &self.limits)?;
        let (ids, blocked) = self.normalise(&envelope.identifiers)?;
        Ok(ChannelEvent {
            channel,
            event_id: envelope.event_id,
            event_type: envelope.event_type,
            occurred_at,
            ids,
            blocked,
            activity,
            consent: fields::consent(&value)?,
            utc_offset_minutes: fields::utc_offset(&value)?,
        })
    }

    fn normalise(&self, raw: &BTreeMap<String, String>) -> Result<(Vec<IdKey>, Vec<Blocked>), DecodeError> {
        let mut ids = Vec::with_capacity(raw.len());
        let mut blocked = Vec::new();
        for (name, value) in raw {
            match self.namespaces.normalise(name, value) {
                Ok(Ok(key)) => ids.push(key),
                Ok(Err(reason)) => blocked.push((name.clone(), reason)),
                Err(unknown) => return Err(DecodeError::UnknownNamespace(fields::shown_name(&unknown.0))),
            }
        }
        ids.sort();
        ids.dedup();
        if ids.is_empty() {
            let names: Vec<&str> = blocked.iter().map(|(n, _)| n.as_str()).collect();
            return Err(DecodeError::NoUsableIdentifier(names.join(", ")));
        }
        Ok((ids, blocked))
    }
}

/// serde_json's syntax errors name a category and a position, never the
/// text; any other kind (none is expected when parsing into a `Value`) is
/// reduced to its position.
fn json_error(e: &serde_json::Error) -> String {
    match e.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => e.to_string(),
        _ => format!("at line {} column {}", e.line(), e.column()),
    }
}

/// Schema validation: `is_valid` stops at the first failure and builds no
/// error, which is all a valid message (nearly all of them) needs; only an
/// invalid one walks the schema again to say where it failed.
fn check(schema: &jsonschema::Validator, value: &Value) -> Result<(), DecodeError> {
    if schema.is_valid(value) {
        return Ok(());
    }
    let reason = match schema.iter_errors(value).next() {
        // Both paths are value-free: the instance path with non-field keys
        // hidden, and the schema path, which comes from the schema alone.
        Some(first) => format!(
            "at {}: fails {}",
            fields::shown_path(first.instance_path().as_str()),
            first.schema_path().as_str()
        ),
        None => String::from("does not match the schema"),
    };
    Err(DecodeError::Schema(reason))
}

mod fields;
pub use fields::InputLimits;

#[cfg(test)]
mod input_tests;
#[cfg(test)]
mod tests;
