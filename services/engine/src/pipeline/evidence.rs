//! The round trip of scale-out stage 1 (`docs/scaling.md` section 1): an
//! event's evidence goes out to the identity evidence topic, and the event
//! waits here until this process reads its own record back.
//!
//! In: valid events and forget commands of this process (with the
//! in-flight number of their message), and the records of the evidence
//! topic as they are folded. Out: the evidence record to publish (attached
//! to the message, so its offset is committed only once the broker has the
//! evidence); when the own record comes back, the event (or the forget's
//! request) for its journey step; an event whose identifier set the graph
//! already holds goes to its journey step at once, without a record
//! ([`Ingest::resolved_at_once`]). Keeps this process's id (random per
//! start: records of an earlier run of this process are another process's)
//! and what waits, by message number and per input partition.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::Instant;

use onejourney_core::evidence::{EvidenceBody, EvidenceRecord, Origin};
use onejourney_core::hash::HashMap;
use onejourney_core::ids::{IdKey, Namespaces};
use onejourney_core::output::ErasureRequest;
use onejourney_core::processor::Resolved;
use onejourney_core::ChannelEvent;
use tracing::warn;

use super::ingest::Ingest;
use super::record::{OutRecord, Step};
use super::route::Route;

/// A random number per start of the process (std's hasher keys are random
/// per process): this process's id in the evidence records and, without a
/// static member id, in the members topic.
pub fn random_per_start() -> u64 {
    RandomState::new().hash_one(std::process::id())
}

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
    /// Per input partition, the message numbers of its events waiting.
    per_source: HashMap<u32, std::collections::BTreeSet<u64>>,
    /// Events resolved without a round trip, by the message number of the
    /// event of their partition in the round trip they wait behind.
    behind: HashMap<u64, Vec<Known>>,
}

/// An event resolved without a round trip (its identifier set is already
/// folded), with the identity-log position it was resolved at.
pub struct Known {
    pub ev: ChannelEvent,
    pub resolved: Resolved,
    pub source: u32,
    pub seq: u64,
    /// The last identity-log record folded when it was resolved.
    pub evidence: i64,
}

impl RoundTrip {
    pub fn new(topic: String) -> Self {
        RoundTrip {
            process: random_per_start(),
            topic,
            waiting: HashMap::default(),
            per_source: HashMap::default(),
            behind: HashMap::default(),
        }
    }

    /// The message number of the newest event of input partition `source`
    /// still in the round trip (`None`: none waits): a later event of it
    /// must not overtake it.
    pub fn ahead_of(&self, source: u32) -> Option<u64> {
        self.per_source.get(&source).and_then(|w| w.last().copied())
    }

    /// `k` goes to its journey step right after message `after`'s event.
    pub fn queue(&mut self, after: u64, k: Known) {
        self.behind.entry(after).or_default().push(k);
    }

    /// What waited behind message `seq`'s event, in arrival order.
    pub fn release_after(&mut self, seq: u64) -> Vec<Known> {
        self.behind.remove(&seq).unwrap_or_default()
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
        self.per_source
            .iter()
            .filter(|(_, w)| !w.is_empty())
            .map(|(s, _)| *s)
            .collect()
    }

    /// Takes what waited for own record number `seq`.
    pub fn take(&mut self, seq: u64) -> Option<Waiting> {
        let w = self.waiting.remove(&seq)?;
        if let Waiting::Event { source, .. } = &w {
            if let Some(w) = self.per_source.get_mut(source) {
                w.remove(&seq);
            }
        }
        Some(w)
    }

    /// Publishes the evidence of event `ev` of message `seq`, which waits.
    pub fn event(&mut self, ns: &Namespaces, ev: ChannelEvent, source: u32, seq: u64) -> Step {
        let record = EvidenceRecord::of_event(self.origin(seq), &ev);
        self.per_source.entry(source).or_default().insert(seq);
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

/// Stage 1 at the engine: an event resolved without a round trip, and the
/// fold of each evidence record.
impl Ingest {
    /// An event whose identifier set the graph already holds as it is
    /// (`Processor::resolve_known`): no evidence record. It goes on at once,
    /// or, when an earlier event of its input partition is in the round
    /// trip, right after that one (it must not overtake it).
    pub(super) fn known(
        &mut self,
        ev: ChannelEvent,
        resolved: Resolved,
        source: u32,
        seq: u64,
        now_ms: u64,
    ) -> Vec<Step> {
        self.metrics.evidence.skipped.inc();
        let evidence = self.route.as_ref().map_or(-1, Route::folded_to);
        let k = Known {
            ev,
            resolved,
            source,
            seq,
            evidence,
        };
        match self.round_trip.as_mut() {
            Some(rt) => match rt.ahead_of(source) {
                Some(after) => {
                    rt.queue(after, k);
                    self.metrics.evidence.waiting.inc();
                    Vec::new()
                }
                None => self.resolved_at_once(k, now_ms),
            },
            None => self.resolved_at_once(k, now_ms),
        }
    }

    /// A known event that waited behind an event whose record (`offset`)
    /// was just folded: that fold may have merged its profile, so it goes
    /// where its journey is now, as of that record.
    fn known_released(&mut self, mut k: Known, offset: i64, now_ms: u64) -> Vec<Step> {
        if self.route.is_some() {
            k.evidence = k.evidence.max(offset);
            if let Some(now) = self.processor.follow(&k.resolved) {
                k.resolved = now;
            }
        }
        self.resolved_at_once(k, now_ms)
    }

    /// A known event's journey step: with routing, to its owner (which
    /// waits until it has folded as far as this process had); else here.
    fn resolved_at_once(&mut self, k: Known, now_ms: u64) -> Vec<Step> {
        let Known {
            ev,
            resolved,
            source,
            seq,
            evidence,
        } = k;
        if self.route.is_some() {
            let record = self.route_event(ev, resolved, source, evidence, now_ms);
            return vec![Step::Done {
                seq,
                records: vec![record],
            }];
        }
        let released = self.processor.offer_resolved(ev, resolved, source, seq, now_ms);
        self.steps(released, Some(seq))
    }

    /// Folds one record of the identity evidence topic (every process's):
    /// the identity step of its event, or its forget. An own record read
    /// back releases what waited for it: the event to its journey step, the
    /// forget's notices to publishing.
    /// With routing, the handovers the fold made are attached to message
    /// `attach_to`, and routed messages that waited for record `offset` go on.
    pub fn fold(&mut self, offset: i64, payload: &[u8], now_ms: u64, attach_to: Option<u64>) -> Vec<Step> {
        let mut steps = self.fold_record(offset, payload, now_ms);
        steps.extend(self.after_fold(offset, now_ms, attach_to));
        steps
    }

    fn fold_record(&mut self, offset: i64, payload: &[u8], now_ms: u64) -> Vec<Step> {
        let Some(rt) = &mut self.round_trip else {
            return Vec::new();
        };
        let rec = match EvidenceRecord::decode(payload, self.decoder.namespaces()) {
            Ok(r) => r,
            Err(e) => {
                self.metrics.evidence.invalid.with_label_values(&[e.reason()]).inc();
                if self.warnings.allow("evidence_invalid", e.reason()) {
                    warn!(error = %e, "identity evidence record not folded");
                }
                return Vec::new();
            }
        };
        let waiting = if rt.is_own(&rec.origin) {
            rt.take(rec.origin.seq)
        } else {
            None
        };
        let origin = if waiting.is_some() { "own" } else { "other" };
        self.metrics.evidence.folded.with_label_values(&[origin]).inc();
        if let Some(w) = &waiting {
            self.metrics.evidence.waiting.dec();
            self.metrics
                .evidence
                .round_trip
                .observe(w.since().elapsed().as_secs_f64());
        }
        let seq = rec.origin.seq;
        let known = if waiting.is_some() {
            rt.release_after(seq)
        } else {
            Vec::new()
        };
        let mut steps = self.fold_body(rec.body, waiting, seq, offset, now_ms);
        for k in known {
            self.metrics.evidence.waiting.dec();
            steps.extend(self.known_released(k, offset, now_ms));
        }
        steps
    }

    /// The fold of record `offset`'s body; `waiting`: what waited for it
    /// here, as message `seq`.
    fn fold_body(
        &mut self,
        body: EvidenceBody,
        waiting: Option<Waiting>,
        seq: u64,
        offset: i64,
        now_ms: u64,
    ) -> Vec<Step> {
        match (body, waiting) {
            (EvidenceBody::Event(e), Some(Waiting::Event { ev, source, .. })) => {
                let folded = self.processor.fold_event(&e, true);
                let records = self.account(folded.processed);
                let Some(resolved) = folded.resolved else {
                    // Forgotten meanwhile: nothing to apply.
                    return vec![Step::Done { seq, records }];
                };
                if self.route.is_some() {
                    // The merges this record made go before the event: its
                    // owner absorbs them first, as one process merges first.
                    let mut records = records;
                    records.extend(self.handover_records(offset));
                    records.push(self.route_event(ev, resolved, source, offset, now_ms));
                    return vec![Step::Done { seq, records }];
                }
                let mut steps = Vec::new();
                if !records.is_empty() {
                    steps.push(Step::Attach {
                        seq: Some(seq),
                        records,
                    });
                }
                let released = self.processor.offer_resolved(ev, resolved, source, seq, now_ms);
                steps.extend(self.steps(released, Some(seq)));
                steps
            }
            (EvidenceBody::Forget { key }, Some(Waiting::Forget { request, .. })) => {
                let outputs = self.processor.fold_forget(&key, Some(request));
                vec![Step::Done {
                    seq,
                    records: self.forgotten(&outputs),
                }]
            }
            (EvidenceBody::Event(e), _) => {
                self.processor.fold_event(&e, false);
                Vec::new()
            }
            (EvidenceBody::Forget { key }, _) => {
                self.processor.fold_forget(&key, None);
                Vec::new()
            }
        }
    }
}
