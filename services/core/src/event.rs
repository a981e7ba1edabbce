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

use serde::Deserialize;
use serde_json::Value;

use crate::ids::{BlockReason, IdKey, Namespaces};
use crate::time::EventTime;
use crate::vocab::Outcome;

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

#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Product {
    pub sku: String,
    pub price: f64,
    #[serde(default)]
    pub category: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct LineItem {
    pub sku: String,
    pub quantity: u32,
    pub unit_price: f64,
    #[serde(default)]
    pub category: Option<String>,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Deserialize)]
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

#[derive(Copy, Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallOutcome {
    Resolved,
    Unresolved,
    Escalated,
    Abandoned,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum CallDirection {
    Inbound,
    Outbound,
    CallbackRequested,
}

/// What happened, independent of the channel's wire format.
#[derive(Clone, Debug, PartialEq)]
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
    #[error("unknown identifier namespace {0:?}")]
    UnknownNamespace(String),
    #[error("schema violation: {0}")]
    Schema(String),
    #[error("occurred_at is not an RFC 3339 timestamp with offset")]
    BadTimestamp,
    #[error("every identifier was empty or a placeholder value ({0})")]
    NoUsableIdentifier(String),
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
        }
    }

    /// Every label `reason()` can return, for pre-registering metrics.
    pub const REASONS: [&'static str; 7] = [
        "too_large",
        "invalid_json",
        "empty_identifiers",
        "unknown_namespace",
        "schema",
        "bad_timestamp",
        "no_usable_identifier",
    ];
}

/// A command on the `identity-control` topic.
#[derive(Clone, Debug, PartialEq)]
pub enum ControlCommand {
    /// Erase the profile this identifier belongs to.
    Forget(IdKey),
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
        })
    }

    /// Size limit, JSON and one schema: the common start of the non-channel
    /// inputs (outcomes, control commands).
    fn validated(&self, schema: &jsonschema::Validator, bytes: &[u8]) -> Result<Value, DecodeError> {
        if bytes.len() > self.max_bytes {
            return Err(DecodeError::TooLarge {
                size: bytes.len(),
                limit: self.max_bytes,
            });
        }
        let value: Value = serde_json::from_slice(bytes).map_err(|e| DecodeError::InvalidJson(e.to_string()))?;
        check(schema, &value)?;
        Ok(value)
    }

    /// Decodes an `action-outcomes` record.
    pub fn decode_outcome(&self, bytes: &[u8]) -> Result<ActionOutcome, DecodeError> {
        let value = self.validated(&self.outcome, bytes)?;
        let o: ActionOutcome = serde_json::from_value(value).map_err(|e| DecodeError::Schema(e.to_string()))?;
        EventTime::parse_rfc3339(&o.at).ok_or(DecodeError::BadTimestamp)?;
        Ok(o)
    }

    /// An `identity-control` command: the identifier to forget, normalised
    /// (raw email / phone hashed) as on events.
    pub fn decode_control(&self, bytes: &[u8]) -> Result<ControlCommand, DecodeError> {
        let value = self.validated(&self.control, bytes)?;
        let field = |name: &str| value.get(name).and_then(Value::as_str).unwrap_or_default();
        let key = self.identifier(field("namespace"), field("value"))?;
        Ok(ControlCommand::Forget(key))
    }

    /// One identifier given by name and raw value (the lookup API, forget
    /// commands): normalised and hashed as on events.
    pub fn identifier(&self, namespace: &str, value: &str) -> Result<IdKey, DecodeError> {
        match self.namespaces.normalise(namespace, value) {
            Err(e) => Err(DecodeError::UnknownNamespace(e.0)),
            Ok(Err(reason)) => Err(DecodeError::NoUsableIdentifier(format!(
                "{namespace}: {}",
                reason.label()
            ))),
            Ok(Ok(key)) => Ok(key),
        }
    }

    pub fn namespaces(&self) -> &Arc<Namespaces> {
        &self.namespaces
    }

    pub fn decode(&self, channel: Channel, bytes: &[u8]) -> Result<ChannelEvent, DecodeError> {
        if bytes.len() > self.max_bytes {
            return Err(DecodeError::TooLarge {
                size: bytes.len(),
                limit: self.max_bytes,
            });
        }
        let value: Value = serde_json::from_slice(bytes).map_err(|e| {
            // serde_json's messages name a position and a category, never the value.
            DecodeError::InvalidJson(e.to_string())
        })?;
        if let Some(ids) = value.get("identifiers").and_then(Value::as_object) {
            if ids.is_empty() {
                return Err(DecodeError::EmptyIdentifiers);
            }
            if let Some(unknown) = ids.keys().find(|k| !self.namespaces.accepts(k)) {
                return Err(DecodeError::UnknownNamespace(truncate(unknown, 64)));
            }
        }
        check(&self.validators[channel.index()], &value)?;
        let envelope: Envelope = serde_json::from_value(value).map_err(|e| DecodeError::Schema(e.to_string()))?;
        let occurred_at = EventTime::parse_rfc3339(&envelope.occurred_at).ok_or(DecodeError::BadTimestamp)?;
        let activity = activity(channel, &envelope)?;
        let (ids, blocked) = self.normalise(&envelope.identifiers)?;
        Ok(ChannelEvent {
            channel,
            event_id: envelope.event_id,
            event_type: envelope.event_type,
            occurred_at,
            ids,
            blocked,
            activity,
        })
    }

    fn normalise(&self, raw: &BTreeMap<String, String>) -> Result<(Vec<IdKey>, Vec<Blocked>), DecodeError> {
        let mut ids = Vec::with_capacity(raw.len());
        let mut blocked = Vec::new();
        for (name, value) in raw {
            match self.namespaces.normalise(name, value) {
                Ok(Ok(key)) => ids.push(key),
                Ok(Err(reason)) => blocked.push((name.clone(), reason)),
                Err(unknown) => return Err(DecodeError::UnknownNamespace(truncate(&unknown.0, 64))),
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

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// The union of the four channels' fields; the schema already checked which
/// ones each channel and event type carries.
#[derive(Deserialize)]
struct Envelope {
    event_id: String,
    event_type: String,
    occurred_at: String,
    identifiers: BTreeMap<String, String>,
    #[serde(default)]
    product: Option<Product>,
    #[serde(default)]
    revenue: Option<f64>,
    #[serde(default)]
    total: Option<f64>,
    #[serde(default)]
    items: Vec<LineItem>,
    #[serde(default)]
    reason: Option<CallReason>,
    #[serde(default)]
    outcome: Option<CallOutcome>,
    #[serde(default)]
    csat: Option<u8>,
    #[serde(default)]
    sentiment: Option<f64>,
}

fn activity(channel: Channel, e: &Envelope) -> Result<Activity, DecodeError> {
    let missing = |field: &str| DecodeError::Schema(format!("{} requires {field}", e.event_type));
    let product = || e.product.clone().ok_or_else(|| missing("product"));
    let call = |direction| Activity::Call {
        direction,
        reason: e.reason,
        outcome: e.outcome,
        csat: e.csat,
        sentiment: e.sentiment,
    };
    Ok(match (channel, e.event_type.as_str()) {
        (Channel::Web, "page_view") => Activity::PageView,
        (Channel::Web, "product_view") => Activity::ProductView(e.product.clone()),
        (Channel::Web, "search") => Activity::Search,
        (Channel::Web | Channel::App, "add_to_cart") => Activity::AddToCart(product()?),
        (Channel::Web, "remove_from_cart") => Activity::RemoveFromCart(product()?),
        (Channel::Web, "checkout_start") => Activity::CheckoutStart,
        (Channel::Web | Channel::App, "purchase") => Activity::Purchase {
            revenue: e.revenue.ok_or_else(|| missing("revenue"))?,
        },
        (Channel::Web, "login") => Activity::Login,
        (Channel::Web, "signup") => Activity::Signup,
        (Channel::Pos, "sale") => Activity::Sale {
            total: e.total.ok_or_else(|| missing("total"))?,
            items: e.items.clone(),
        },
        (Channel::Pos, "return") => Activity::Return {
            total: e.total.ok_or_else(|| missing("total"))?,
        },
        (Channel::App, "session_start") => Activity::SessionStart,
        (Channel::App, "screen_view") => Activity::ScreenView,
        (Channel::App, "session_end") => Activity::SessionEnd,
        (Channel::App, "push_opt_in") => Activity::PushOptIn,
        (Channel::App, "push_opt_out") => Activity::PushOptOut,
        (Channel::CallCenter, "inbound_call") => call(CallDirection::Inbound),
        (Channel::CallCenter, "outbound_call") => call(CallDirection::Outbound),
        (Channel::CallCenter, "callback_requested") => call(CallDirection::CallbackRequested),
        (_, other) => {
            return Err(DecodeError::Schema(format!(
                "event_type {:?} is not one of this channel's",
                truncate(other, 40)
            )))
        }
    })
}

/// Schema validation: `is_valid` stops at the first failure and builds no
/// error, which is all a valid message (nearly all of them) needs; only an
/// invalid one walks the schema again to say where it failed.
fn check(schema: &jsonschema::Validator, value: &Value) -> Result<(), DecodeError> {
    if schema.is_valid(value) {
        return Ok(());
    }
    let reason = match schema.iter_errors(value).next() {
        Some(first) => format!("at {:?}: {}", first.instance_path().as_str(), first.masked()),
        None => String::from("does not match the schema"),
    };
    Err(DecodeError::Schema(reason))
}

#[cfg(test)]
mod tests;
