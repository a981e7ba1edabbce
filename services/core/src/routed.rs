//! The records of the routed topic: what one engine process sends the owner
//! of a state partition (scale-out stage 2, `docs/scaling.md` sections 2
//! and 3).
//!
//! In: an event whose identity step is done ([`Resolved`]: the profile and
//! the identifier that anchors it), or a [`Handover`] (a merged-away journey
//! and its timers), each with the identity-log offset its receiver must have
//! folded before it acts on it. Out: the bytes put on the routed topic
//! (partition = the state partition of the One ID), and back. Keeps nothing.
//!
//! Format: one version byte ([`ROUTED_VERSION`]), then MessagePack, with
//! identifiers as (namespace name, value) pairs as in the evidence records.
//! A record of another version is refused, never guessed at. Identifier
//! values are what the graph keeps (`email` and `phone` hashed on arrival),
//! so no raw e-mail or phone is written; the event is the decoded event,
//! not the bytes it came in.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::event::{Activity, Channel, ChannelEvent};
use crate::evidence::{named, unnamed, unversioned, versioned, Unreadable};
use crate::hash::HashMap;
use crate::ids::{IdKey, Namespaces};
use crate::journey::Journey;
use crate::processor::{Handover, Resolved, TimerKind};
use crate::time::EventTime;
use crate::vocab::ContactChannel;

/// The version byte every record starts with.
/// 2 (contract 1.12): progress records say how far each input partition
/// was sent, not only whether it has a backlog.
pub const ROUTED_VERSION: u8 = 2;

/// One record of the routed topic.
#[derive(Clone, Debug, PartialEq)]
pub enum Routed {
    /// An event for the journey step on the owner of `resolved.one_id`.
    Event {
        ev: ChannelEvent,
        resolved: Resolved,
        /// The engine's number of the input partition the event was read
        /// from: the owner orders events per input partition, as one
        /// process does (the watermark).
        source: u32,
        /// The identity-log offset of the record that resolved it.
        evidence: i64,
    },
    /// A journey merged into a profile of this partition.
    Handover {
        handover: Handover,
        /// The identity-log offset of the record that merged it.
        evidence: i64,
    },
    /// Sent to every partition, twice a second, by each process (`from`,
    /// random per start), after the events it sent there: for each input
    /// partition it reads, how far it has sent its events (a watermark per
    /// lane, as Flink's per-channel watermarks). The owner reads it in
    /// order with those events (`Processor::advance_partitions`).
    Progress { from: u64, sources: Vec<SourceProgress> },
}

impl Routed {
    /// The identity-log offset the receiver must have folded past.
    pub fn evidence(&self) -> i64 {
        match self {
            Routed::Event { evidence, .. } | Routed::Handover { evidence, .. } => *evidence,
            Routed::Progress { .. } => -1,
        }
    }

    /// The profile whose partition the record goes to (`None`: progress,
    /// which goes to every partition).
    pub fn one_id(&self) -> Option<&str> {
        match self {
            Routed::Event { resolved, .. } => Some(&resolved.one_id),
            Routed::Handover { handover, .. } => Some(&handover.to),
            Routed::Progress { .. } => None,
        }
    }
}

/// One input partition in a [`Routed::Progress`] record.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct SourceProgress {
    /// The engine's number of the input partition.
    pub source: u32,
    /// The largest event time of the events of it sent so far (to any
    /// partition); `EventTime::MIN` before the first.
    pub upto: EventTime,
    /// Whether the sender is still reading it: records at the broker it
    /// has not read, events in the identity round trip, or an event sent
    /// within `timers.idle_after`. An active partition holds the owner's
    /// watermark however long nothing of it arrives.
    pub active: bool,
    /// When its sender last asked the broker where it ends (wall clock, ms
    /// since the epoch; contract 1.19, `None` in older records): the owner
    /// counts the lane idle only on a read asked after the lane's silence
    /// began, as one process does for its own partitions (`docs/scaling.md`,
    /// "Not done yet", item 9).
    pub read_at_ms: Option<u64>,
}

/// Why bytes from the routed topic are not a record.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RoutedError {
    #[error("empty routed record")]
    Empty,
    #[error("routed record of version {0}, this build reads version {ROUTED_VERSION}")]
    Version(u8),
    #[error("malformed routed record")]
    Malformed,
    #[error("routed record names namespace {0}, which this process does not know")]
    UnknownNamespace(String),
}

impl RoutedError {
    /// A fixed label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            RoutedError::Empty => "empty",
            RoutedError::Version(_) => "version",
            RoutedError::Malformed => "malformed",
            RoutedError::UnknownNamespace(_) => "unknown_namespace",
        }
    }
}

type Named = (String, String);

/// The wire form (after the version byte). Positional MessagePack: a change
/// of fields is a new version.
#[derive(Serialize, Deserialize)]
enum Wire {
    Event {
        channel: Channel,
        event_id: String,
        event_type: String,
        at: i64,
        ids: Vec<Named>,
        activity: Activity,
        consent: Vec<(ContactChannel, bool)>,
        utc_offset_minutes: Option<i16>,
        one_id: String,
        anchor: Named,
        source: u32,
        evidence: i64,
    },
    Handover {
        to: String,
        via: Named,
        from: String,
        journey: Option<Box<Journey>>,
        timers: Vec<(i64, TimerKind, Named)>,
        evidence: i64,
        /// Contract 1.13 (additive): the dedupe keys of the events in the
        /// journey, with their times; absent in older records.
        #[serde(default)]
        applied: Vec<(i64, u64)>,
    },
    Progress {
        from: u64,
        sources: Vec<(u32, i64, bool)>,
        /// Contract 1.19 (additive): per input partition, when its sender
        /// last read where it ends (wall clock, ms); absent in older records.
        #[serde(default)]
        reads: Vec<(u32, u64)>,
    },
}

fn key_of(ns: &Namespaces, (name, value): Named) -> Result<IdKey, RoutedError> {
    unnamed(ns, name, value).map_err(RoutedError::UnknownNamespace)
}

impl Routed {
    /// The record's bytes: the version byte, then the MessagePack body.
    pub fn encode(&self, ns: &Namespaces) -> Vec<u8> {
        let wire = match self {
            Routed::Event {
                ev,
                resolved,
                source,
                evidence,
            } => Wire::Event {
                channel: ev.channel,
                event_id: ev.event_id.clone(),
                event_type: ev.event_type.clone(),
                at: ev.occurred_at.0,
                ids: ev.ids.iter().map(|k| named(ns, k)).collect(),
                activity: ev.activity.clone(),
                consent: ev.consent.clone(),
                utc_offset_minutes: ev.utc_offset_minutes,
                one_id: resolved.one_id.to_string(),
                anchor: named(ns, &resolved.anchor),
                source: *source,
                evidence: *evidence,
            },
            Routed::Handover { handover: h, evidence } => Wire::Handover {
                to: h.to.to_string(),
                via: named(ns, &h.via),
                from: h.from.to_string(),
                journey: h.journey.as_deref().cloned().map(Box::new),
                timers: h
                    .timers
                    .iter()
                    .map(|(at, kind, k)| (at.0, *kind, named(ns, k)))
                    .collect(),
                evidence: *evidence,
                applied: h.applied.clone(),
            },
            Routed::Progress { from, sources } => Wire::Progress {
                from: *from,
                sources: sources.iter().map(|s| (s.source, s.upto.0, s.active)).collect(),
                reads: sources
                    .iter()
                    .filter_map(|s| s.read_at_ms.map(|r| (s.source, r)))
                    .collect(),
            },
        };
        versioned(ROUTED_VERSION, &wire)
    }

    /// Reads a record written by [`Routed::encode`].
    pub fn decode(bytes: &[u8], ns: &Namespaces) -> Result<Self, RoutedError> {
        let wire: Wire = unversioned(bytes, ROUTED_VERSION).map_err(|e| match e {
            Unreadable::Empty => RoutedError::Empty,
            Unreadable::Version(v) => RoutedError::Version(v),
            Unreadable::Malformed => RoutedError::Malformed,
        })?;
        Ok(match wire {
            Wire::Event {
                channel,
                event_id,
                event_type,
                at,
                ids,
                activity,
                consent,
                utc_offset_minutes,
                one_id,
                anchor,
                source,
                evidence,
            } => {
                let mut ids = ids.into_iter().map(|k| key_of(ns, k)).collect::<Result<Vec<_>, _>>()?;
                ids.sort();
                ids.dedup();
                let ev = ChannelEvent {
                    channel,
                    event_id,
                    event_type,
                    occurred_at: EventTime(at),
                    ids,
                    blocked: Vec::new(),
                    activity,
                    consent,
                    utc_offset_minutes,
                };
                Routed::Event {
                    ev,
                    resolved: Resolved {
                        one_id: one_id.into(),
                        anchor: key_of(ns, anchor)?,
                    },
                    source,
                    evidence,
                }
            }
            Wire::Handover {
                to,
                via,
                from,
                journey,
                timers,
                evidence,
                applied,
            } => Routed::Handover {
                handover: Handover {
                    to: to.into(),
                    via: key_of(ns, via)?,
                    from: from.into(),
                    journey: journey.map(|j| Arc::new(*j)),
                    timers: timers
                        .into_iter()
                        .map(|(at, kind, k)| Ok((EventTime(at), kind, key_of(ns, k)?)))
                        .collect::<Result<Vec<_>, RoutedError>>()?,
                    applied,
                },
                evidence,
            },
            Wire::Progress { from, sources, reads } => progress(from, sources, reads),
        })
    }
}

/// A progress record from its wire form: each input partition with its
/// sender's read time, when the record carries one (1.19).
fn progress(from: u64, sources: Vec<(u32, i64, bool)>, reads: Vec<(u32, u64)>) -> Routed {
    let reads: HashMap<u32, u64> = reads.into_iter().collect();
    Routed::Progress {
        from,
        sources: sources
            .into_iter()
            .map(|(source, upto, active)| SourceProgress {
                source,
                upto: EventTime(upto),
                active,
                read_at_ms: reads.get(&source).copied(),
            })
            .collect(),
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
    fn an_event_reads_back_as_decoded_and_without_raw_email() {
        let ev = web(
            "w-1",
            3,
            json!({"cookie_id": "c-1", "email": "Ann@Example.com"}),
            "add_to_cart",
            json!({"product": {"sku": "S-1", "price": 12.5}}),
        );
        let rec = Routed::Event {
            resolved: Resolved {
                one_id: "oj-1".into(),
                anchor: ev.ids[0].clone(),
            },
            ev,
            source: 3,
            evidence: 41,
        };
        let bytes = rec.encode(&ns());
        assert_eq!(bytes[0], ROUTED_VERSION);
        assert_eq!(Routed::decode(&bytes, &ns()).unwrap(), rec);
        assert_eq!(rec.evidence(), 41);
        assert_eq!(rec.one_id(), Some("oj-1"));
        let progress = Routed::Progress {
            from: 7,
            sources: vec![
                SourceProgress {
                    source: 1,
                    upto: EventTime(1_700_000_000_000),
                    active: true,
                    read_at_ms: None,
                },
                SourceProgress {
                    source: 1 << 20,
                    upto: EventTime::MIN,
                    active: false,
                    read_at_ms: Some(1_800_000_000_123),
                },
            ],
        };
        assert_eq!(Routed::decode(&progress.encode(&ns()), &ns()).unwrap(), progress);
        assert_eq!(progress.one_id(), None);
        let text = String::from_utf8_lossy(&bytes).to_lowercase();
        assert!(!text.contains("ann@example.com"), "raw e-mail on the wire");
    }

    /// A 1.18 progress record (no read times) reads as one whose reads are
    /// unknown; a 1.19 one carries them, and a 1.18 reader refuses it.
    #[test]
    fn a_progress_record_without_read_times_still_reads() {
        #[derive(Serialize, Deserialize, Debug)]
        enum Old {
            _Event,
            _Handover,
            Progress { from: u64, sources: Vec<(u32, i64, bool)> },
        }
        let bytes = versioned(
            ROUTED_VERSION,
            &Old::Progress {
                from: 3,
                sources: vec![(5, 1_000, false)],
            },
        );
        let back = Routed::decode(&bytes, &ns()).expect("a 1.18 record reads");
        let expected = Routed::Progress {
            from: 3,
            sources: vec![SourceProgress {
                source: 5,
                upto: EventTime(1_000),
                active: false,
                read_at_ms: None,
            }],
        };
        assert_eq!(back, expected);
        let Routed::Progress { from, mut sources } = expected else {
            unreachable!()
        };
        sources[0].read_at_ms = Some(42);
        let new = Routed::Progress { from, sources }.encode(&ns());
        assert!(new.len() > bytes.len(), "the reads are added");
        // What contract 1.19 tells operators: a 1.18 process refuses it
        // (one field more than it knows), so a group upgrades at once.
        assert!(rmp_serde::from_slice::<Old>(&new[1..]).is_err());
        let Routed::Progress { sources, .. } = Routed::decode(&new, &ns()).expect("reads") else {
            unreachable!()
        };
        assert_eq!(sources[0].read_at_ms, Some(42));
    }

    #[test]
    fn a_handover_reads_back_with_its_journey_and_timers() {
        let ev = pos("p-1", 5, json!({"loyalty_id": "L-1"}), 30.0);
        let mut j = Journey::default();
        j.apply(&ev);
        let key = ev.ids[0].clone();
        let rec = Routed::Handover {
            handover: Handover {
                to: "oj-a".into(),
                via: key.clone(),
                from: "oj-b".into(),
                journey: Some(Arc::new(j)),
                timers: vec![(EventTime(99), TimerKind::Quiet, key)],
                applied: vec![(5, 42)],
            },
            evidence: 7,
        };
        let back = Routed::decode(&rec.encode(&ns()), &ns()).unwrap();
        assert_eq!(back, rec);
        assert_eq!(back.one_id(), Some("oj-a"));
    }

    #[test]
    fn what_is_not_a_record_is_refused_with_a_reason() {
        let ev = web("w-1", 0, json!({"cookie_id": "c-1"}), "page_view", json!({}));
        let rec = Routed::Event {
            resolved: Resolved {
                one_id: "oj-1".into(),
                anchor: ev.ids[0].clone(),
            },
            ev,
            source: 0,
            evidence: 0,
        };
        let mut bytes = rec.encode(&ns());
        assert_eq!(Routed::decode(&[], &ns()), Err(RoutedError::Empty));
        assert_eq!(
            Routed::decode(&bytes[..bytes.len() - 2], &ns()),
            Err(RoutedError::Malformed)
        );
        bytes[0] = 9;
        assert_eq!(Routed::decode(&bytes, &ns()).unwrap_err().reason(), "version");
        let rules: Vec<_> = Namespaces::default_rules()
            .into_iter()
            .filter(|r| r.name != "cookie_id")
            .collect();
        let fewer = Namespaces::new(rules, Default::default()).unwrap();
        bytes[0] = ROUTED_VERSION;
        assert_eq!(
            Routed::decode(&bytes, &fewer),
            Err(RoutedError::UnknownNamespace("cookie_id".into()))
        );
    }
}
