//! The records onejourney publishes, as in the wire contract.
//!
//! In: what the processor decided (identity changes, churn bands, next best
//! actions, erasures). Out: [`Output`]s; serialising one gives exactly the
//! JSON of its topic's schema in `schemas/`. Keeps nothing.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::decide::NamedValue;
use crate::identity::OneId;
use crate::journey::Factor;
use crate::time::EventTime;
use crate::vocab::Band;

/// What caused an output.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TriggerRef {
    pub kind: &'static str,
    pub event_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timer: Option<&'static str>,
}

impl TriggerRef {
    pub fn event(event_id: &str) -> Self {
        TriggerRef {
            kind: "event",
            event_id: Some(event_id.to_string()),
            timer: None,
        }
    }

    pub fn timer(name: &'static str) -> Self {
        TriggerRef {
            kind: "timer",
            event_id: None,
            timer: Some(name),
        }
    }
}

/// A `next-best-actions` record.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NextBestAction {
    pub action_id: String,
    pub one_id: OneId,
    pub action: String,
    pub channel: &'static str,
    pub score: f64,
    pub reason: String,
    pub factors: Vec<NamedValue>,
    /// The customer's addressable identifiers (hashed namespaces carry hashes).
    pub identifiers: BTreeMap<String, String>,
    pub trigger: TriggerRef,
    pub decided_at: EventTime,
    pub expires_at: EventTime,
}

/// A `churn-risk` record.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChurnRisk {
    pub one_id: OneId,
    pub score: f64,
    pub band: Band,
    pub previous_band: Option<Band>,
    pub factors: Vec<Factor>,
    pub trigger: TriggerRef,
    pub evaluated_at: EventTime,
    /// The hand-weighted score the learned model is blended with (since 1.4).
    pub hand_score: f64,
    /// How many labelled examples the model had learned from (since 1.4).
    pub model_examples: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LinkRef {
    pub namespace: String,
    pub value: String,
}

/// An `identity-changes` record.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IdentityChange {
    pub change: &'static str,
    pub one_id: OneId,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub merged_one_ids: Vec<OneId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<LinkRef>,
    pub event_id: Option<String>,
    pub at: EventTime,
}

/// Where the forget command of an erasure was read: what makes the record
/// unique (re-processing the command after a crash regenerates the same one).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CommandRef {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// Who asked for an erasure, how and when: given by the engine with the
/// command (the core has no clock and no topics).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ErasureRequest {
    pub requested_by: Option<String>,
    /// `http` or `identity_control` ([`crate::event::ErasurePath::label`]).
    pub via: &'static str,
    /// When the command was published (its record's timestamp), if it has one.
    pub requested_at: Option<EventTime>,
    pub command: CommandRef,
}

/// One suppressed identifier of an erasure: its namespace and its
/// suppression entry in hex, never the value.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SuppressedRef {
    pub namespace: String,
    pub entry: String,
}

/// An `erasures` record: the audit of one applied forget, and the entries a
/// restart or a rebuild installs before it reads any input.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Erasure {
    pub one_id: OneId,
    pub suppressed: Vec<SuppressedRef>,
    #[serde(flatten)]
    pub request: ErasureRequest,
}

/// Anything the core asks the engine to publish.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    Action(NextBestAction),
    Churn(ChurnRisk),
    Identity(IdentityChange),
    Erasure(Erasure),
}

impl Output {
    /// The record key: the One ID it concerns.
    pub fn one_id(&self) -> &str {
        match self {
            Output::Action(a) => &a.one_id,
            Output::Churn(c) => &c.one_id,
            Output::Identity(i) => &i.one_id,
            Output::Erasure(e) => &e.one_id,
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        let r = match self {
            Output::Action(a) => serde_json::to_vec(a),
            Output::Churn(c) => serde_json::to_vec(c),
            Output::Identity(i) => serde_json::to_vec(i),
            Output::Erasure(e) => serde_json::to_vec(e),
        };
        // Serialising these plain structs of strings and finite numbers cannot fail.
        r.unwrap_or_default()
    }
}
