//! Identity evidence records: what one engine process tells every other
//! about the identity graph (scale-out stage 1, `docs/scaling.md` section 1).
//!
//! In: a validated [`ChannelEvent`] (what [`IdentityGraph::stitch`] reads of
//! it: its identifiers as the graph keeps them, already normalised and
//! hashed; its event time, channel and event id) or a forget command's
//! identifier, with the publishing process's id and its own number for the
//! record. Out: the bytes put on the identity evidence topic, and back.
//! Keeps nothing.
//!
//! Why it is enough: the graph is a fold over evidence whose result does not
//! depend on the order of the evidence (see `identity/mod.rs`). Every process
//! publishes the evidence of the events it consumes to one single-partition
//! topic and folds the whole topic, its own records and every other
//! process's, with [`Processor::fold_evidence`](crate::processor::Processor::fold_evidence):
//! every process then holds the graph one process stitching every event
//! would hold, with the same One IDs (`processor/evidence_tests.rs`).
//!
//! Format: one version byte ([`EVIDENCE_VERSION`]), then MessagePack of the
//! record with identifiers as (namespace name, value) pairs, so a process
//! whose namespace table lists the namespaces in another order reads it the
//! same. A record of another version is refused ([`EvidenceError::Version`]),
//! never guessed at. Values are what the graph keeps (`email` and `phone`
//! are SHA-256 hex on arrival): no raw e-mail or phone is ever written.
//!
//! [`IdentityGraph::stitch`]: crate::identity::IdentityGraph::stitch

use serde::{Deserialize, Serialize};

use crate::event::{Activity, Channel, ChannelEvent};
use crate::ids::{IdKey, Namespaces};
use crate::time::EventTime;

/// The version byte every record starts with.
pub const EVIDENCE_VERSION: u8 = 1;

/// Who published a record: a process id (random per start) and that
/// process's number for it, so a process recognises its own records when it
/// reads them back.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Origin {
    pub process: u64,
    pub seq: u64,
}

/// One record of the identity evidence log.
#[derive(Clone, Debug, PartialEq)]
pub struct EvidenceRecord {
    pub origin: Origin,
    pub body: EvidenceBody,
}

/// What a record says.
#[derive(Clone, Debug, PartialEq)]
pub enum EvidenceBody {
    /// An event's identifiers, at its canonical position.
    Event(EventEvidence),
    /// A forget command: the profile holding `key` is erased everywhere.
    Forget { key: IdKey },
}

/// What [`IdentityGraph::stitch`](crate::identity::IdentityGraph::stitch)
/// needs of an event.
#[derive(Clone, Debug, PartialEq)]
pub struct EventEvidence {
    pub channel: Channel,
    pub event_id: String,
    pub at: EventTime,
    /// Sorted, no repeats (as on the event).
    pub ids: Vec<IdKey>,
}

impl EventEvidence {
    pub fn of(ev: &ChannelEvent) -> Self {
        EventEvidence {
            channel: ev.channel,
            event_id: ev.event_id.clone(),
            at: ev.occurred_at,
            ids: ev.ids.clone(),
        }
    }

    /// An event carrying only what the graph reads: stitching it folds the
    /// same evidence as stitching the original.
    pub fn to_event(&self) -> ChannelEvent {
        ChannelEvent {
            channel: self.channel,
            event_id: self.event_id.clone(),
            event_type: String::new(),
            occurred_at: self.at,
            ids: self.ids.clone(),
            blocked: Vec::new(),
            activity: Activity::PageView,
            consent: Vec::new(),
            utc_offset_minutes: None,
        }
    }
}

/// Why bytes from the evidence topic are not a record.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EvidenceError {
    #[error("empty evidence record")]
    Empty,
    #[error("evidence record of version {0}, this build reads version {EVIDENCE_VERSION}")]
    Version(u8),
    #[error("malformed evidence record")]
    Malformed,
    #[error("evidence record names namespace {0}, which this process does not know")]
    UnknownNamespace(String),
}

impl EvidenceError {
    /// A fixed label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            EvidenceError::Empty => "empty",
            EvidenceError::Version(_) => "version",
            EvidenceError::Malformed => "malformed",
            EvidenceError::UnknownNamespace(_) => "unknown_namespace",
        }
    }
}

/// The wire form (after the version byte). Positional MessagePack: a change
/// of fields is a new version.
#[derive(Serialize, Deserialize)]
struct Wire {
    process: u64,
    seq: u64,
    body: WireBody,
}

#[derive(Serialize, Deserialize)]
enum WireBody {
    Event {
        channel: Channel,
        event_id: String,
        at: i64,
        ids: Vec<(String, String)>,
    },
    Forget {
        namespace: String,
        value: String,
    },
}

/// The bytes of one of the engine's own records (evidence, routed): the
/// version byte, then `wire` as positional MessagePack.
pub(crate) fn versioned<T: Serialize>(version: u8, wire: &T) -> Vec<u8> {
    let mut out = vec![version];
    // Writing plain data into a Vec cannot fail.
    if let Err(e) = rmp_serde::encode::write(&mut out, wire) {
        unreachable!("encoding an engine record into memory failed: {e}");
    }
    out
}

/// Why bytes are not a record [`versioned`] wrote.
pub(crate) enum Unreadable {
    Empty,
    /// Another version than the one expected.
    Version(u8),
    Malformed,
}

/// Reads what [`versioned`] wrote with `version`.
pub(crate) fn unversioned<T: serde::de::DeserializeOwned>(bytes: &[u8], version: u8) -> Result<T, Unreadable> {
    let (&got, rest) = bytes.split_first().ok_or(Unreadable::Empty)?;
    if got != version {
        return Err(Unreadable::Version(got));
    }
    rmp_serde::from_slice(rest).map_err(|_| Unreadable::Malformed)
}

/// An identifier as (namespace name, value): how the engine's own records
/// carry identifiers, so a process whose namespace table lists the
/// namespaces in another order reads them the same.
pub(crate) fn named(ns: &Namespaces, k: &IdKey) -> (String, String) {
    (ns.name(k.ns()).to_string(), k.value().to_string())
}

/// The identifier [`named`] wrote; `Err(name)` for a namespace this process
/// does not know.
pub(crate) fn unnamed(ns: &Namespaces, name: String, value: String) -> Result<IdKey, String> {
    let Some(n) = ns.lookup(&name) else {
        return Err(name);
    };
    Ok(IdKey::new(n, &value))
}

fn key_of(ns: &Namespaces, name: String, value: String) -> Result<IdKey, EvidenceError> {
    unnamed(ns, name, value).map_err(EvidenceError::UnknownNamespace)
}

impl EvidenceRecord {
    /// The evidence of an event published by `origin`.
    pub fn of_event(origin: Origin, ev: &ChannelEvent) -> Self {
        EvidenceRecord {
            origin,
            body: EvidenceBody::Event(EventEvidence::of(ev)),
        }
    }

    /// The record's bytes: the version byte, then the MessagePack body.
    pub fn encode(&self, ns: &Namespaces) -> Vec<u8> {
        let body = match &self.body {
            EvidenceBody::Event(e) => WireBody::Event {
                channel: e.channel,
                event_id: e.event_id.clone(),
                at: e.at.0,
                ids: e.ids.iter().map(|k| named(ns, k)).collect(),
            },
            EvidenceBody::Forget { key } => {
                let (namespace, value) = named(ns, key);
                WireBody::Forget { namespace, value }
            }
        };
        let wire = Wire {
            process: self.origin.process,
            seq: self.origin.seq,
            body,
        };
        versioned(EVIDENCE_VERSION, &wire)
    }

    /// Reads a record written by [`EvidenceRecord::encode`].
    pub fn decode(bytes: &[u8], ns: &Namespaces) -> Result<Self, EvidenceError> {
        let wire: Wire = unversioned(bytes, EVIDENCE_VERSION).map_err(|e| match e {
            Unreadable::Empty => EvidenceError::Empty,
            Unreadable::Version(v) => EvidenceError::Version(v),
            Unreadable::Malformed => EvidenceError::Malformed,
        })?;
        let body = match wire.body {
            WireBody::Event {
                channel,
                event_id,
                at,
                ids,
            } => {
                let mut keys = ids
                    .into_iter()
                    .map(|(n, v)| key_of(ns, n, v))
                    .collect::<Result<Vec<_>, _>>()?;
                keys.sort();
                keys.dedup();
                EvidenceBody::Event(EventEvidence {
                    channel,
                    event_id,
                    at: EventTime(at),
                    ids: keys,
                })
            }
            WireBody::Forget { namespace, value } => EvidenceBody::Forget {
                key: key_of(ns, namespace, value)?,
            },
        };
        Ok(EvidenceRecord {
            origin: Origin {
                process: wire.process,
                seq: wire.seq,
            },
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::testkit::{pos, web};

    fn ns() -> Namespaces {
        Namespaces::with_defaults()
    }

    #[test]
    fn a_record_reads_back_as_written() {
        let ev = web(
            "w-1",
            3,
            json!({"cookie_id": "c-1", "email": "Ann@Example.com", "customer_id": "C-9"}),
            "login",
            json!({}),
        );
        let rec = EvidenceRecord::of_event(Origin { process: 7, seq: 42 }, &ev);
        let bytes = rec.encode(&ns());
        assert_eq!(bytes[0], EVIDENCE_VERSION);
        let back = EvidenceRecord::decode(&bytes, &ns()).unwrap();
        assert_eq!(back, rec);
        let EvidenceBody::Event(e) = &back.body else {
            panic!("an event record");
        };
        assert_eq!(e.to_event().ids, ev.ids);
        assert_eq!(e.to_event().occurred_at, ev.occurred_at);
        // The e-mail is on the wire as the graph keeps it: hashed, never raw.
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.to_lowercase().contains("ann@example.com"),
            "raw e-mail on the wire"
        );
        assert!(text.contains("email_sha256"), "{text}");

        let forget = EvidenceRecord {
            origin: Origin { process: 1, seq: 2 },
            body: EvidenceBody::Forget { key: ev.ids[0].clone() },
        };
        assert_eq!(EvidenceRecord::decode(&forget.encode(&ns()), &ns()).unwrap(), forget);
    }

    #[test]
    fn namespaces_travel_by_name_not_by_position() {
        let ev = pos("p-1", 0, json!({"loyalty_id": "L-1", "card_token": "t-1"}), 10.0);
        let bytes = EvidenceRecord::of_event(Origin { process: 1, seq: 1 }, &ev).encode(&ns());
        // A process whose table lists the namespaces in another order.
        let mut rules = Namespaces::default_rules();
        rules.reverse();
        let other = Namespaces::new(rules, Default::default()).unwrap();
        let back = EvidenceRecord::decode(&bytes, &other).unwrap();
        let EvidenceBody::Event(e) = back.body else {
            panic!("an event record");
        };
        let names: Vec<&str> = e.ids.iter().map(|k| other.name(k.ns())).collect();
        let mut want = vec!["card_token", "loyalty_id"];
        want.sort_by_key(|n| other.lookup(n));
        assert_eq!(names, want);
    }

    #[test]
    fn what_is_not_a_record_is_refused_with_a_reason() {
        let ev = web("w-1", 0, json!({"cookie_id": "c-1"}), "page_view", json!({}));
        let mut bytes = EvidenceRecord::of_event(Origin { process: 1, seq: 1 }, &ev).encode(&ns());
        assert_eq!(EvidenceRecord::decode(&[], &ns()), Err(EvidenceError::Empty));
        assert_eq!(
            EvidenceRecord::decode(&bytes[..bytes.len() - 2], &ns()),
            Err(EvidenceError::Malformed)
        );
        bytes[0] = 2;
        let err = EvidenceRecord::decode(&bytes, &ns()).unwrap_err();
        assert_eq!(err, EvidenceError::Version(2));
        assert_eq!(err.reason(), "version");
        // A namespace this process does not have.
        let rules: Vec<_> = Namespaces::default_rules()
            .into_iter()
            .filter(|r| r.name != "cookie_id")
            .collect();
        let fewer = Namespaces::new(rules, Default::default()).unwrap();
        bytes[0] = EVIDENCE_VERSION;
        assert_eq!(
            EvidenceRecord::decode(&bytes, &fewer),
            Err(EvidenceError::UnknownNamespace("cookie_id".into()))
        );
    }
}
