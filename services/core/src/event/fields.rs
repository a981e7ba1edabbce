//! Typed fields of a schema-checked event, read without ever quoting a value.
//!
//! In: the JSON value of one message that passed its channel's schema, its
//! channel, and the [`InputLimits`]. Out: the envelope (id, type, time,
//! raw identifiers) and the [`Activity`]; or a [`DecodeError`] naming the
//! field (`product.price: expected a number`).
//! Why not `#[derive(Deserialize)]` on one envelope: serde's type errors quote
//! the offending value (`invalid type: string "ann@...", expected f64`), and
//! a union of every channel's fields reads (and fails on) fields this
//! channel's schema does not declare. Here each field is read only where its
//! channel and event type use it, every serde error is replaced by the field's
//! path and the expected kind, and amounts are bounded ([`InputLimits`]).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::vocab::ContactChannel;

use super::{Activity, CallDirection, Channel, DecodeError, LineItem, Product};

/// Bounds on what an event may carry, beyond its schema.
#[derive(Clone, Debug, PartialEq)]
pub struct InputLimits {
    /// The largest amount (price, revenue, total, line total) one event may
    /// carry; larger, negative or non-finite amounts are refused (`bad_amount`).
    pub max_amount: f64,
    /// How far an event's time may be ahead of the engine's clock
    /// (`future_timestamp` beyond it).
    pub max_future_skew: Duration,
    /// How far an event's time may be behind the engine's clock (`too_old`
    /// beyond it); zero: no limit.
    pub max_event_age: Duration,
}

impl InputLimits {
    /// A billion per event: far above any real basket, far below where sums
    /// of many events lose precision or overflow.
    pub const DEFAULT_MAX_AMOUNT: f64 = 1e9;
}

impl Default for InputLimits {
    fn default() -> Self {
        InputLimits {
            max_amount: Self::DEFAULT_MAX_AMOUNT,
            max_future_skew: Duration::from_secs(300),
            max_event_age: Duration::ZERO,
        }
    }
}

/// The channel-independent part of an event, as sent.
pub(super) struct Envelope {
    pub event_id: String,
    pub event_type: String,
    pub occurred_at: String,
    pub identifiers: BTreeMap<String, String>,
}

pub(super) fn envelope(v: &Value) -> Result<Envelope, DecodeError> {
    Ok(Envelope {
        event_id: required(v, "", "event_id", "a string")?,
        event_type: required(v, "", "event_type", "a string")?,
        occurred_at: required(v, "", "occurred_at", "a string")?,
        identifiers: required(v, "", "identifiers", "an object of strings")?,
    })
}

/// The event's consent statements (`consent`, since contract 1.4), in
/// channel order; the schema bounds the keys and values.
pub(super) fn consent(v: &Value) -> Result<Vec<(ContactChannel, bool)>, DecodeError> {
    let Some(c) = v.get("consent").filter(|x| !x.is_null()) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (name, channel) in [
        ("email", ContactChannel::Email),
        ("sms", ContactChannel::Sms),
        ("push", ContactChannel::Push),
    ] {
        let said: Option<String> = optional(c, "consent.", name, "opt_in or opt_out")?;
        match said.as_deref() {
            Some("opt_in") => out.push((channel, true)),
            Some("opt_out") => out.push((channel, false)),
            Some(_) => {
                return Err(DecodeError::Schema(format!(
                    "consent.{name}: expected opt_in or opt_out"
                )))
            }
            None => {}
        }
    }
    Ok(out)
}

/// The customer's UTC offset in minutes (`utc_offset_minutes`, since 1.4).
pub(super) fn utc_offset(v: &Value) -> Result<Option<i16>, DecodeError> {
    let m: Option<i16> = optional(v, "", "utc_offset_minutes", "an integer from -840 to 840")?;
    match m {
        Some(x) if !(-840..=840).contains(&x) => Err(DecodeError::Schema(String::from(
            "utc_offset_minutes: expected an integer from -840 to 840",
        ))),
        m => Ok(m),
    }
}

/// A field's value as `T`; a type error names the field and `expected`, never the value.
fn typed<'a, T: Deserialize<'a>>(x: &'a Value, path: &str, name: &str, expected: &str) -> Result<T, DecodeError> {
    T::deserialize(x).map_err(|_| DecodeError::Schema(format!("{path}{name}: expected {expected}")))
}

fn optional<'a, T: Deserialize<'a>>(
    v: &'a Value,
    path: &str,
    name: &str,
    expected: &str,
) -> Result<Option<T>, DecodeError> {
    match v.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => typed(x, path, name, expected).map(Some),
    }
}

fn required<'a, T: Deserialize<'a>>(v: &'a Value, path: &str, name: &str, expected: &str) -> Result<T, DecodeError> {
    optional(v, path, name, expected)?.ok_or_else(|| DecodeError::Schema(format!("{path}{name}: required")))
}

/// A money amount: finite, not negative, at most `max`.
fn amount(v: &Value, path: &str, name: &str, max: f64) -> Result<f64, DecodeError> {
    let x: f64 = required(v, path, name, "a number")?;
    bounded(x, &format!("{path}{name}"), max)
}

fn bounded(x: f64, field: &str, max: f64) -> Result<f64, DecodeError> {
    if x.is_finite() && (0.0..=max).contains(&x) {
        Ok(x)
    } else {
        Err(DecodeError::BadAmount(format!("{field} must be from 0 to {max}")))
    }
}

fn product(v: &Value, max: f64) -> Result<Product, DecodeError> {
    let p = v.get("product").unwrap_or(&Value::Null);
    if !p.is_object() {
        return Err(DecodeError::Schema(String::from("product: expected an object")));
    }
    Ok(Product {
        sku: required(p, "product.", "sku", "a string")?,
        price: amount(p, "product.", "price", max)?,
        category: optional(p, "product.", "category", "a string")?,
    })
}

fn items(v: &Value, max: f64) -> Result<Vec<LineItem>, DecodeError> {
    let Some(list) = v.get("items").filter(|x| !x.is_null()) else {
        return Ok(Vec::new());
    };
    let list = list
        .as_array()
        .ok_or_else(|| DecodeError::Schema(String::from("items: expected an array")))?;
    let mut out = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let path = format!("items[{i}].");
        let line = LineItem {
            sku: required(item, &path, "sku", "a string")?,
            quantity: required(item, &path, "quantity", "a whole number from 1 to 4294967295")?,
            unit_price: amount(item, &path, "unit_price", max)?,
            category: optional(item, &path, "category", "a string")?,
        };
        bounded(
            f64::from(line.quantity) * line.unit_price,
            &format!("{path}quantity x unit_price"),
            max,
        )?;
        out.push(line);
    }
    Ok(out)
}

fn call(v: &Value, direction: CallDirection) -> Result<Activity, DecodeError> {
    Ok(Activity::Call {
        direction,
        reason: optional(v, "", "reason", "one of the listed call reasons")?,
        outcome: optional(v, "", "outcome", "one of the listed call outcomes")?,
        csat: optional(v, "", "csat", "a whole number from 1 to 5")?,
        sentiment: optional(v, "", "sentiment", "a number")?,
    })
}

/// What the event did: reads only the fields its channel and type use.
pub(super) fn activity(
    channel: Channel,
    event_type: &str,
    v: &Value,
    limits: &InputLimits,
) -> Result<Activity, DecodeError> {
    let max = limits.max_amount;
    Ok(match (channel, event_type) {
        (Channel::Web, "page_view") => Activity::PageView,
        (Channel::Web, "product_view") => match v.get("product") {
            None | Some(Value::Null) => Activity::ProductView(None),
            Some(_) => Activity::ProductView(Some(product(v, max)?)),
        },
        (Channel::Web, "search") => Activity::Search,
        (Channel::Web | Channel::App, "add_to_cart") => Activity::AddToCart(product(v, max)?),
        (Channel::Web, "remove_from_cart") => Activity::RemoveFromCart(product(v, max)?),
        (Channel::Web, "checkout_start") => Activity::CheckoutStart,
        (Channel::Web | Channel::App, "purchase") => Activity::Purchase {
            revenue: amount(v, "", "revenue", max)?,
        },
        (Channel::Web, "login") => Activity::Login,
        (Channel::Web, "signup") => Activity::Signup,
        (Channel::Pos, "sale") => Activity::Sale {
            total: amount(v, "", "total", max)?,
            items: items(v, max)?,
        },
        (Channel::Pos, "return") => Activity::Return {
            total: amount(v, "", "total", max)?,
        },
        (Channel::App, "session_start") => Activity::SessionStart,
        (Channel::App, "screen_view") => Activity::ScreenView,
        (Channel::App, "session_end") => Activity::SessionEnd,
        (Channel::App, "push_opt_in") => Activity::PushOptIn,
        (Channel::App, "push_opt_out") => Activity::PushOptOut,
        (Channel::CallCenter, "inbound_call") => call(v, CallDirection::Inbound)?,
        (Channel::CallCenter, "outbound_call") => call(v, CallDirection::Outbound)?,
        (Channel::CallCenter, "callback_requested") => call(v, CallDirection::CallbackRequested)?,
        (channel, _) => {
            return Err(DecodeError::Schema(format!(
                "event_type: not one of the {} event types",
                channel.label()
            )))
        }
    })
}

/// A JSON pointer into the message with every key that is not a plain field
/// name (`^[a-z][a-z0-9_]{0,63}$`, the names schemas use) replaced by `*`:
/// a key can carry a customer's value too.
pub(super) fn shown_path(pointer: &str) -> String {
    if pointer.is_empty() {
        return String::from("/");
    }
    pointer
        .split('/')
        .skip(1)
        .map(|seg| {
            if seg.bytes().all(|b| b.is_ascii_digit()) || is_field_name(seg) {
                seg
            } else {
                "*"
            }
        })
        .fold(String::new(), |mut s, seg| {
            s.push('/');
            s.push_str(seg);
            s
        })
}

/// Whether a name may be shown: a plain field or namespace name, which an
/// e-mail address or a phone number never is.
pub(super) fn is_field_name(s: &str) -> bool {
    let mut b = s.bytes();
    s.len() <= 64
        && b.next().is_some_and(|c| c.is_ascii_lowercase())
        && b.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
}

/// A name as it may appear in an error text.
pub(super) fn shown_name(s: &str) -> String {
    if is_field_name(s) {
        s.to_string()
    } else {
        String::from("(not shown: not a plain name)")
    }
}
