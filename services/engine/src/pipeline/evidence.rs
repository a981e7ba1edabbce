//! The round trip of scale-out stage 1 (`docs/scaling.md` section 1): an
//! event's evidence goes out to the identity evidence topic, and the event
//! waits here until this process reads its own record back.
//!
//! In: valid events and forget commands of this process (with the
//! in-flight number of their message), and the records of the evidence
//! topic as they are folded. Out: the evidence record to publish (attached
//! to the message, so its offset is committed only once the broker has the
//! evidence); when the own record comes back, the event (or the forget's
//! request) for its journey step. Keeps this process's id (random per
//! start: records of an earlier run of this process are another process's)
//! and what waits, by message number.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::Instant;

use onejourney_core::evidence::{EvidenceBody, EvidenceRecord, Origin};
use onejourney_core::hash::HashMap;
use onejourney_core::ids::{IdKey, Namespaces};
use onejourney_core::output::ErasureRequest;
use onejourney_core::ChannelEvent;

use super::record::{OutRecord, Step};

/// What waits for its own record.
pub enum Waiting {
    Event {
        ev: ChannelEvent,
        /// The core's number for its input partition.
        source: u32,
        since: Instant,
    },
    Forget {
        request: ErasureRequest,
        since: Instant,
    },
}

impl Waiting {
    pub fn since(&self) -> Instant {
        match self {
            Waiting::Event { since, .. } | Waiting::Forget { since, .. } => *since,
        }
    }
}

pub struct RoundTrip {
    process: u64,
    topic: String,
    waiting: HashMap<u64, Waiting>,
}

impl RoundTrip {
    pub fn new(topic: String) -> Self {
        // A random id per start (std's hasher keys are random per process).
        let process = RandomState::new().hash_one(std::process::id());
        RoundTrip {
            process,
            topic,
            waiting: HashMap::default(),
        }
    }

    /// Whether a record read back is this process's.
    pub fn is_own(&self, origin: &Origin) -> bool {
        origin.process == self.process
    }

    /// Events and forgets whose own record was not read back yet.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// This process's id (random per start).
    pub fn process(&self) -> u64 {
        self.process
    }

    /// The input partitions (the core's numbers) with an event waiting.
    pub fn waiting_sources(&self) -> onejourney_core::hash::HashSet<u32> {
        self.waiting
            .values()
            .filter_map(|w| match w {
                Waiting::Event { source, .. } => Some(*source),
                Waiting::Forget { .. } => None,
            })
            .collect()
    }

    /// Takes what waited for own record number `seq`.
    pub fn take(&mut self, seq: u64) -> Option<Waiting> {
        self.waiting.remove(&seq)
    }

    /// Publishes the evidence of event `ev` of message `seq`, which waits.
    pub fn event(&mut self, ns: &Namespaces, ev: ChannelEvent, source: u32, seq: u64) -> Step {
        let record = EvidenceRecord::of_event(self.origin(seq), &ev);
        self.waiting.insert(
            seq,
            Waiting::Event {
                ev,
                source,
                since: Instant::now(),
            },
        );
        self.publish(ns, &record, seq)
    }

    /// Publishes a forget of `key` (message `seq`), which waits.
    pub fn forget(&mut self, ns: &Namespaces, key: IdKey, request: ErasureRequest, seq: u64) -> Step {
        let record = EvidenceRecord {
            origin: self.origin(seq),
            body: EvidenceBody::Forget { key },
        };
        self.waiting.insert(
            seq,
            Waiting::Forget {
                request,
                since: Instant::now(),
            },
        );
        self.publish(ns, &record, seq)
    }

    fn origin(&self, seq: u64) -> Origin {
        Origin {
            process: self.process,
            seq,
        }
    }

    fn publish(&self, ns: &Namespaces, record: &EvidenceRecord, seq: u64) -> Step {
        Step::Attach {
            seq: Some(seq),
            records: vec![OutRecord {
                topic: self.topic.clone(),
                key: None,
                payload: record.encode(ns),
                headers: None,
                partition: None,
            }],
        }
    }
}
