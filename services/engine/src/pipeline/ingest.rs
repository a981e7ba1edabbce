//! Ingest: one input message -> the records it causes.
//!
//! In: an input message (topic, partition, offset, key, payload, timestamp). Out: the
//! [`OutRecord`]s to publish: the outputs of the pure core, or one
//! dead-letter record carrying the original key and bytes with a readable
//! reason. Invariant: every message yields either processed outputs (possibly
//! none) or exactly one dead-letter record; nothing is dropped silently.
//!
//! With `scaleout.identity_log` a valid event (and a forget) first goes out
//! as an evidence record and waits ([`super::evidence`]); [`Ingest::fold`]
//! folds every record of the evidence topic, and an own record read back
//! hands its event to the journey step (or applies its forget).

use std::sync::Arc;
use std::time::{Duration, Instant};

use onejourney_core::event::ControlCommand;
use onejourney_core::identity::StitchError;
use onejourney_core::output::{CommandRef, ErasureRequest, Output};
use onejourney_core::processor::{OutcomeEffect, Processed, Released, TOO_LATE};
use onejourney_core::{Channel, Decoder, EventTime, Processor};
use rdkafka::message::{Header, OwnedHeaders};

use tracing::{info, warn};

use super::evidence::RoundTrip;
use super::record::{OutRecord, Step};
use super::route::Route;
use crate::config::Topics;
use crate::logging::WarnLimiter;
use crate::metrics::Metrics;

/// Where an input message came from.
pub struct Origin<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
    /// The record's timestamp (ms since the epoch), when it has one.
    pub timestamp: Option<i64>,
}

pub struct Ingest {
    pub(super) decoder: Decoder,
    pub(super) processor: Processor,
    topics: Topics,
    pub(super) metrics: Arc<Metrics>,
    pub(super) warnings: WarnLimiter,
    /// With `scaleout.identity_log`: what waits for its evidence record.
    pub(super) round_trip: Option<RoundTrip>,
    /// With `scaleout.route_journeys`: the hop to the owner of a profile's
    /// journey (`route.rs`).
    pub(super) route: Option<Route>,
}

impl Ingest {
    pub fn new(
        decoder: Decoder,
        processor: Processor,
        topics: Topics,
        metrics: Arc<Metrics>,
        warnings: WarnLimiter,
    ) -> Self {
        Ingest {
            decoder,
            processor,
            topics,
            metrics,
            warnings,
            round_trip: None,
            route: None,
        }
    }

    /// Scale-out stage 2: an event's journey step runs on the owner of its
    /// profile's state partition, reached through `topics.routed`.
    /// `inputs`: every input partition (of every process): the owner
    /// orders routed events per input partition, as one process does.
    pub fn with_routing(
        mut self,
        partitions: u32,
        inputs: &[(Channel, i32)],
        idle_after: Duration,
        membership: Option<super::handoff::Membership>,
    ) -> Self {
        let sources = inputs.iter().map(|(c, p)| source_id(*c, *p)).collect();
        let idle_ms = u64::try_from(idle_after.as_millis()).unwrap_or(u64::MAX);
        let route = Route::new(self.topics.routed.clone(), partitions, sources, idle_ms).announcing(membership);
        // Nothing is owned until the group assigns routed partitions.
        self.processor.set_ownership(Some(route.ownership(std::iter::empty())));
        self.route = Some(route);
        self
    }

    /// The whole assignment of the consumer: the partitions whose messages
    /// the core orders, and with routing the state partitions owned.
    pub fn assigned(&mut self, assigned: &[(String, i32)], now_ms: u64) {
        let inputs: Vec<u32> = assigned
            .iter()
            .filter_map(|(t, p)| self.topics.channel_of(t).map(|c| source_id(c, *p)))
            .collect();
        // With routing the owner orders the events of every input partition
        // that reach each of its routed partitions: a clock per lane.
        let clocks = match &mut self.route {
            Some(route) => {
                route.reading(&inputs);
                let owned = assigned.iter().filter(|(t, _)| t == route.topic()).map(|(_, p)| *p);
                let ownership = route.ownership(owned);
                route.owning(&ownership);
                let lanes = route.lanes(&ownership);
                let before = self.processor.ownership().map(|o| o.owned.clone()).unwrap_or_default();
                route.moved(&before, &ownership.owned);
                self.processor.set_ownership(Some(ownership));
                self.drop_given_up();
                lanes
            }
            None => inputs,
        };
        self.processor.retain_partitions(&clocks.iter().copied().collect());
        for c in clocks {
            self.processor.register_partition(c, now_ms);
        }
    }

    /// With routing: the routed topic.
    pub fn routed_topic(&self) -> Option<&str> {
        self.route.as_ref().map(Route::topic)
    }

    /// Scale-out stage 1: events and forgets go through the identity
    /// evidence topic (see [`Ingest::fold`]).
    pub fn with_identity_log(mut self) -> Self {
        self.round_trip = Some(RoundTrip::new(self.topics.identity_evidence.clone()));
        self
    }

    /// This process's id in the identity log (0: no identity log), named
    /// in debug logs.
    pub fn process_id(&self) -> u64 {
        self.round_trip.as_ref().map_or(0, RoundTrip::process)
    }

    /// Events and forgets waiting for their own evidence record.
    pub fn waiting_for_evidence(&self) -> usize {
        self.round_trip.as_ref().map_or(0, RoundTrip::waiting)
    }

    pub fn processor(&self) -> &Processor {
        &self.processor
    }

    pub fn processor_mut(&mut self) -> &mut Processor {
        &mut self.processor
    }

    /// The channel of an input topic.
    pub fn channel_of(&self, topic: &str) -> Option<Channel> {
        self.topics.channel_of(topic)
    }

    /// Whether the broker holds messages of an input partition not taken
    /// yet, by a read of its end asked for at processing time `read_ms`
    /// (none while its end was not read since it was assigned: then
    /// `backlog`, as its records are unknown): the watermark waits for it
    /// (with routing, the owners' do: it goes out with the next progress
    /// record, its time on the wall clock, since owners do not share this
    /// clock).
    pub fn input_end(&mut self, channel: Channel, partition: i32, backlog: bool, read_ms: Option<u64>) {
        let source = source_id(channel, partition);
        match (&mut self.route, read_ms) {
            (Some(route), _) => route.local_end(source, backlog, read_ms),
            (None, Some(read_ms)) => self.processor.report_end(source, backlog, read_ms),
            (None, None) => self.processor.set_backlog(source, backlog),
        }
    }

    /// What one input message (number `seq`) causes, at processing time
    /// `now_ms`: a valid channel event waits for the watermark, so the steps
    /// may complete earlier messages and not this one.
    pub fn handle(&mut self, m: &Origin<'_>, seq: u64, now_ms: u64) -> Vec<Step> {
        let started = Instant::now();
        let steps = self.handle_inner(m, seq, now_ms);
        self.metrics.decision_duration.observe(started.elapsed().as_secs_f64());
        steps
    }

    /// Releases what the watermark lets through when partitions go idle;
    /// timer outputs are attached to message `attach_to` when there is one.
    pub fn tick(&mut self, now_ms: u64, attach_to: Option<u64>) -> Vec<Step> {
        let released = self.processor.tick(now_ms);
        let mut steps = self.steps(released, attach_to);
        steps.extend(self.progress(now_ms));
        steps
    }

    fn handle_inner(&mut self, m: &Origin<'_>, seq: u64, now_ms: u64) -> Vec<Step> {
        let done = |records| vec![Step::Done { seq, records }];
        if m.topic == self.topics.action_outcomes {
            return done(self.outcome(m));
        }
        if m.topic == self.topics.identity_control {
            return self.control(m, seq);
        }
        if self.route.as_ref().is_some_and(|r| r.topic() == m.topic) {
            return self.routed(m, seq, now_ms);
        }
        let Some(channel) = self.topics.channel_of(m.topic) else {
            return done(vec![self.dead_letter(
                m,
                None,
                "not_an_input_topic",
                "the topic is not an input topic",
            )]);
        };
        self.metrics.events_consumed.with_label_values(&[channel.label()]).inc();
        let payload = m.payload.unwrap_or_default();
        let ev = match self.decoder.decode_at(channel, payload, wall_clock()) {
            Ok(ev) => ev,
            Err(e) => return done(vec![self.dead_letter(m, Some(channel), e.reason(), &e.to_string())]),
        };
        for (_, reason) in &ev.blocked {
            self.metrics
                .identifiers_blocked
                .with_label_values(&[reason.label()])
                .inc();
        }
        if !self.processor.state().identity.can_link(&ev) {
            let e = StitchError::NoLinkableIdentifier;
            return done(vec![self.dead_letter(m, Some(channel), e.reason(), &e.to_string())]);
        }
        if self.processor.too_late(&ev) {
            let why = self.processor.too_late_text(&ev, "already");
            return done(vec![self.dead_letter(m, Some(channel), TOO_LATE, &why)]);
        }
        let source = source_id(channel, m.partition);
        if self.round_trip.is_some() {
            // Nothing new for the graph: no round trip.
            if let Some(resolved) = self.processor.resolve_known(&ev) {
                return self.known(ev, resolved, source, seq, now_ms);
            }
        }
        if let Some(rt) = &mut self.round_trip {
            self.metrics.evidence.published.inc();
            self.metrics.evidence.waiting.inc();
            return vec![rt.event(self.decoder.namespaces(), ev, source, seq)];
        }
        let released = self.processor.offer(ev, source, seq, now_ms);
        self.steps(released, Some(seq))
    }

    /// Turns released results into records, with metrics.
    pub(super) fn steps(&mut self, released: Vec<Released>, attach_to: Option<u64>) -> Vec<Step> {
        let mut steps = Vec::with_capacity(released.len());
        for r in released {
            let processed = match r.result {
                Ok(p) => p,
                Err(e) => {
                    // Checked before offering (`can_link`): not expected here.
                    warn!(error = %e, "a buffered event could not be stitched");
                    Processed::default()
                }
            };
            // An event the journey step applied (not the identity step's
            // result of scale-out stage 1, which is not a release).
            let applied = processed.forward.is_none()
                && !(processed.duplicate || processed.too_late || processed.forgotten)
                && processed.one_id.is_some();
            if r.seq.is_some() && applied {
                self.metrics.events_applied.inc();
            }
            if let Some(seq) = r.seq.filter(|_| tracing::enabled!(tracing::Level::DEBUG)) {
                let one_id = processed.one_id.as_deref().unwrap_or("");
                let (duplicate, forward) = (processed.duplicate, processed.forward.is_some());
                tracing::debug!(
                    process = self.process_id(),
                    seq,
                    one_id,
                    applied,
                    duplicate,
                    forward,
                    "released"
                );
            }
            let records = self.account(processed);
            match r.seq {
                Some(seq) => steps.push(Step::Done { seq, records }),
                None => steps.push(Step::Attach {
                    seq: attach_to,
                    records,
                }),
            }
        }
        self.metrics
            .timers_pending
            .set(i64::try_from(self.processor.pending_timers()).unwrap_or(i64::MAX));
        self.metrics
            .events_buffered
            .set(i64::try_from(self.processor.pending_events()).unwrap_or(i64::MAX));
        steps
    }

    /// Counts what one released result did and returns its records.
    pub(super) fn account(&mut self, mut processed: Processed) -> Vec<OutRecord> {
        if let Some(forward) = self.forward(&mut processed) {
            return vec![forward];
        }
        if processed.duplicate {
            let label = processed.channel.map_or("unknown", Channel::label);
            self.metrics.events_duplicate.with_label_values(&[label]).inc();
            return Vec::new();
        }
        if processed.late {
            self.metrics.events_late.inc();
        }
        if processed.too_late {
            // Checked before offering (`too_late`): not expected here.
            warn!("an event older than the dedupe window was released; not applied");
            return Vec::new();
        }
        if processed.forgotten {
            self.metrics.events_forgotten.inc();
            return Vec::new();
        }
        self.metrics.identity_merges.inc_by(processed.merges as u64);
        self.metrics.shared_devices.inc_by(processed.shared_devices as u64);
        self.metrics.links_dropped.inc_by(processed.links_dropped as u64);
        if processed.rebuilt {
            self.metrics.identity_rebuilds.inc();
        }
        let ns = self.decoder.namespaces().clone();
        for r in &processed.rejected {
            let reason = r.reason.label();
            self.metrics.links_rejected.with_label_values(&[reason]).inc();
            // No identifier value: the namespace and the One IDs say enough.
            if self.warnings.allow("link_refused", reason) {
                info!(
                    reason,
                    namespace = ns.name(r.key.ns()),
                    kept_in = r.kept_in.as_deref().unwrap_or(""),
                    one_id = processed.one_id.as_deref().unwrap_or(""),
                    "identity link refused"
                );
            }
        }
        for (action, why) in &processed.suppressed {
            self.metrics
                .actions_suppressed
                .with_label_values(&[action.as_str(), why.label()])
                .inc();
        }
        self.metrics.timers_fired.inc_by(processed.timers_fired as u64);
        processed.outputs.iter().map(|o| self.record(o)).collect()
    }

    /// An `identity-control` command: forget (the `identity-changes` notice
    /// and the erasure record, published like every output: the command's
    /// offset is committed only once both are acknowledged), a consent
    /// statement (kept on the journey, so in the next snapshot), or
    /// dead-letter it.
    fn control(&mut self, m: &Origin<'_>, seq: u64) -> Vec<Step> {
        let done = |records| vec![Step::Done { seq, records }];
        let forget = match self.decoder.decode_control(m.payload.unwrap_or_default()) {
            Ok(ControlCommand::Forget(f)) => f,
            Ok(ControlCommand::Consent(c)) => {
                let result = if self.processor.consent(&c) {
                    "applied"
                } else {
                    "unknown"
                };
                self.metrics.consent_commands.with_label_values(&[result]).inc();
                return done(Vec::new());
            }
            Err(e) => return done(vec![self.dead_letter(m, None, e.reason(), &e.to_string())]),
        };
        let request = ErasureRequest {
            requested_by: forget.requested_by,
            via: forget.via.label(),
            requested_at: m.timestamp.map(EventTime::from_millis),
            command: CommandRef {
                topic: m.topic.to_string(),
                partition: m.partition,
                offset: m.offset,
            },
        };
        if let Some(rt) = &mut self.round_trip {
            // Every process forgets when it folds the record; this one
            // publishes the notices then.
            self.metrics.evidence.published.inc();
            self.metrics.evidence.waiting.inc();
            return vec![rt.forget(self.decoder.namespaces(), forget.key, request, seq)];
        }
        let outputs = self.processor.forget(&forget.key, request);
        done(self.forgotten(&outputs))
    }

    /// Counts and logs an applied forget; its records.
    pub(super) fn forgotten(&mut self, outputs: &[Output]) -> Vec<OutRecord> {
        let Some(Output::Erasure(erasure)) = outputs.iter().find(|o| matches!(o, Output::Erasure(_))) else {
            self.metrics.forget_requests.with_label_values(&["unknown"]).inc();
            return Vec::new();
        };
        self.metrics.forget_requests.with_label_values(&["forgotten"]).inc();
        // The audit in the log: no identifier, not even hashed, and not
        // `requested_by` (free text from upstream); the erasure record has them.
        info!(
            one_id = &*erasure.one_id,
            identifiers = erasure.suppressed.len(),
            via = erasure.request.via,
            "profile erased on request"
        );
        outputs.iter().map(|o| self.record(o)).collect()
    }

    /// An `action-outcomes` record: learn from it, or dead-letter it.
    fn outcome(&mut self, m: &Origin<'_>) -> Vec<OutRecord> {
        match self.decoder.decode_outcome(m.payload.unwrap_or_default()) {
            Ok(o) => {
                let effect = match self.processor.outcome(&o) {
                    OutcomeEffect::Learned => "learned",
                    OutcomeEffect::Repeated => "repeated",
                    OutcomeEffect::Unknown => "unknown",
                };
                self.metrics
                    .outcomes
                    .with_label_values(&[o.outcome.label(), effect])
                    .inc();
                Vec::new()
            }
            Err(e) => vec![self.dead_letter(m, None, e.reason(), &e.to_string())],
        }
    }

    fn record(&self, o: &Output) -> OutRecord {
        let topic = match o {
            Output::Action(a) => {
                self.metrics
                    .actions_emitted
                    .with_label_values(&[&a.action, a.channel])
                    .inc();
                &self.topics.next_best_actions
            }
            Output::Churn(c) => {
                self.metrics
                    .churn_band_changes
                    .with_label_values(&[c.band.label()])
                    .inc();
                &self.topics.churn_risk
            }
            Output::Identity(i) => {
                tracing::debug!(change = i.change, one_id = %i.one_id, merged = ?i.merged_one_ids, "identity change");
                &self.topics.identity_changes
            }
            Output::Erasure(_) => &self.topics.erasures,
        };
        OutRecord {
            topic: topic.clone(),
            key: Some(o.one_id().as_bytes().to_vec()),
            payload: o.to_json(),
            headers: None,
            partition: None,
        }
    }

    fn dead_letter(&mut self, m: &Origin<'_>, channel: Option<Channel>, reason: &str, message: &str) -> OutRecord {
        let label = match channel {
            Some(c) => c.label(),
            None if m.topic == self.topics.action_outcomes => "action_outcomes",
            None if m.topic == self.topics.identity_control => "identity_control",
            None if m.topic == self.topics.routed => "routed",
            None => "unknown",
        };
        self.metrics.events_invalid.with_label_values(&[label, reason]).inc();
        self.metrics.dead_letter.inc();
        if self.warnings.allow("dead_letter", reason) {
            warn!(
                topic = m.topic,
                partition = m.partition,
                offset = m.offset,
                reason,
                error = message,
                "invalid event sent to dead-letter"
            );
        } else {
            self.metrics.warnings_suppressed.inc();
        }
        let partition = m.partition.to_string();
        let offset = m.offset.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "dlq.error",
                value: Some(message),
            })
            .insert(Header {
                key: "dlq.reason",
                value: Some(reason),
            })
            .insert(Header {
                key: "dlq.topic",
                value: Some(m.topic),
            })
            .insert(Header {
                key: "dlq.partition",
                value: Some(partition.as_str()),
            })
            .insert(Header {
                key: "dlq.offset",
                value: Some(offset.as_str()),
            });
        OutRecord {
            topic: self.topics.dead_letter.clone(),
            key: m.key.map(<[u8]>::to_vec),
            payload: m.payload.map(<[u8]>::to_vec).unwrap_or_default(),
            headers: Some(headers),
            partition: None,
        }
    }

    /// Message `seq` dead-lettered with `reason`.
    pub(super) fn invalid(&mut self, m: &Origin<'_>, seq: u64, reason: &str, message: &str) -> Step {
        let records = vec![self.dead_letter(m, None, reason, message)];
        Step::Done { seq, records }
    }
}

/// One number per input partition, for the core's per-partition watermarks.
fn source_id(channel: Channel, partition: i32) -> u32 {
    ((channel.index() as u32) << 20) | (u32::try_from(partition).unwrap_or(0) & 0xF_FFFF)
}

/// The engine's wall clock as an event time: the core has none, so the
/// plausibility window for event times (`timers.max_future_skew`,
/// `timers.max_event_age`) is checked against this, read here at the edge.
fn wall_clock() -> EventTime {
    EventTime::from_millis(i64::try_from(crate::clock::unix_ms()).unwrap_or(i64::MAX))
}
