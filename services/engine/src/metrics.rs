//! Every metric the engine exports, declared once with its help text.
//!
//! Names are `onejourney_<noun>_<unit>[_total]`; labels come from small fixed
//! sets (channel, reason, action name from the catalog, contact channel, band),
//! never a customer id, One ID or identifier value.

use prometheus::{
    exponential_buckets, Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use onejourney_core::decide::uplift::ActionReport;
use onejourney_core::decide::{DecideConfig, Suppressed};
use onejourney_core::identity::RejectReason;
use onejourney_core::ids::BlockReason;
use onejourney_core::processor::CONTACT_CHANNELS;
use onejourney_core::{Channel, DecodeError};

pub struct Metrics {
    registry: Registry,
    pub events_consumed: IntCounterVec,
    pub events_invalid: IntCounterVec,
    pub events_duplicate: IntCounterVec,
    pub events_late: IntCounter,
    pub events_settled: IntCounter,
    pub dead_letter: IntCounter,
    pub profiles: IntGauge,
    pub journeys: IntGauge,
    pub journeys_frozen_now: IntGauge,
    pub identifiers: IntGauge,
    pub identity_merges: IntCounter,
    pub links_rejected: IntCounterVec,
    pub identifiers_blocked: IntCounterVec,
    pub actions_emitted: IntCounterVec,
    pub churn_band_changes: IntCounterVec,
    pub churn_model_auc: GaugeVec,
    pub churn_model_examples: IntCounter,
    pub timers_fired: IntCounter,
    pub timers_pending: IntGauge,
    pub event_to_output: Histogram,
    pub in_flight: IntGauge,
    pub delivery_errors: IntCounter,
    pub consumer_errors: IntCounter,
    pub input_fetch_errors: IntCounterVec,
    pub partitions_stalled: IntGauge,
    pub rebalances: IntCounterVec,
    pub ready: IntGauge,
    pub consumer_lag: IntGaugeVec,
    pub decision_duration: Histogram,
    pub actions_suppressed: IntCounterVec,
    pub state_memory: IntGauge,
    pub producer_queue: IntGauge,
    pub warnings_suppressed: IntCounter,
    pub outcomes: IntCounterVec,
    pub events_buffered: IntGauge,
    pub shared_devices: IntCounter,
    pub links_dropped: IntCounter,
    pub identity_rebuilds: IntCounter,
    pub events_forgotten: IntCounter,
    pub forget_requests: IntCounterVec,
    pub consent_commands: IntCounterVec,
    pub snapshots: IntCounterVec,
    pub snapshot_seconds: Gauge,
    pub snapshot_bytes: IntGauge,
    pub snapshot_last_success: IntGauge,
    pub restore_seconds: Gauge,
    pub checkpoint_stall: Gauge,
    /// The last barrier's stall by phase: `drain`, `capture`.
    pub checkpoint_stall_phase: GaugeVec,
    pub checkpoint_in_progress: IntGauge,
    pub changelog_bytes: IntCounterVec,
    pub changelog_records: IntCounterVec,
    pub outputs_deduplicated: IntCounter,
    pub journeys_evicted: IntCounter,
    pub journeys_frozen: IntCounter,
    pub journeys_thawed: IntCounter,
    pub http_connections: IntGauge,
    pub http_header_timeouts: IntCounter,
    pub memory_budget_exceeded: IntGauge,
    pub action_decisions: IntGaugeVec,
    pub action_conversions: IntGaugeVec,
    pub action_uplift: GaugeVec,
    pub action_propensity: GaugeVec,
}

/// A metric definition error is a programming error caught by the tests.
#[derive(Debug, thiserror::Error)]
#[error("metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

/// A metric's name and help text.
type Def = (&'static str, &'static str);

const EVENTS_CONSUMED: Def = (
    "onejourney_events_consumed_total",
    "Input messages received, by channel (valid or not).",
);
const EVENTS_INVALID: Def = (
    "onejourney_events_invalid_total",
    "Input messages rejected and sent to the dead-letter topic, by channel and reason.",
);
const EVENTS_DUPLICATE: Def = (
    "onejourney_events_duplicate_total",
    "Events whose (channel, event_id) was already processed; they change nothing.",
);
const EVENTS_LATE: Def = (
    "onejourney_events_late_total",
    "Events older than the watermark when they arrived (still applied to state).",
);
const EVENTS_SETTLED: Def = (
    "onejourney_events_settled_total",
    "Input messages fully handled: applied, and every output they caused acknowledged by the broker.",
);
const DEAD_LETTER: Def = (
    "onejourney_dead_letter_total",
    "Messages written to the dead-letter topic.",
);
const PROFILES: Def = ("onejourney_profiles", "Profiles (One IDs) in the identity graph.");
const JOURNEYS: Def = ("onejourney_journeys", "Journeys in memory, live or frozen.");
const JOURNEYS_FROZEN_NOW: Def = (
    "onejourney_journeys_frozen",
    "Journeys kept frozen (compressed until their next event), among onejourney_journeys.",
);
const IDENTIFIERS: Def = ("onejourney_identifiers", "Linking identifiers in the identity graph.");
const IDENTITY_MERGES: Def = (
    "onejourney_identity_merges_total",
    "Profiles merged into another profile.",
);
const LINKS_REJECTED: Def = (
    "onejourney_identity_links_rejected_total",
    "Links between identifiers refused by the stitching rules, by reason.",
);
const IDENTIFIERS_BLOCKED: Def = (
    "onejourney_identifiers_blocked_total",
    "Identifier values dropped as empty or placeholder values, by reason.",
);
const ACTIONS_EMITTED: Def = (
    "onejourney_actions_emitted_total",
    "Next-best-action decisions published, by action and contact channel.",
);
const CHURN_BAND_CHANGES: Def = (
    "onejourney_churn_band_changes_total",
    "Churn-risk band changes published, by the new band.",
);
const CHURN_MODEL_AUC: Def = (
    "onejourney_churn_model_auc",
    "Prequential (test-then-train) AUC on the churn model's labelled examples, by scorer: the learned model, the hand-weighted score, recency alone (NaN until both labels were seen).",
);
const CHURN_MODEL_EXAMPLES: Def = (
    "onejourney_churn_model_examples_total",
    "Labelled examples the churn model learned from (churned or back within the horizon).",
);
const TIMERS_FIRED: Def = ("onejourney_timers_fired_total", "Event-time timers that came due.");
const TIMERS_PENDING: Def = (
    "onejourney_timers_pending",
    "Event-time timers waiting for the watermark.",
);
const IN_FLIGHT: Def = (
    "onejourney_messages_in_flight",
    "Input messages processed whose outputs the broker has not acknowledged yet.",
);
const DELIVERY_ERRORS: Def = (
    "onejourney_delivery_errors_total",
    "Output messages the producer failed to deliver.",
);
const CONSUMER_ERRORS: Def = (
    "onejourney_consumer_errors_total",
    "Errors reported by the Kafka consumer.",
);
const INPUT_FETCH_ERRORS: Def = (
    "onejourney_input_fetch_errors_total",
    "Input records the consumer could not fetch or decode at the Kafka level (no message to dead-letter), by reason.",
);
const PARTITIONS_STALLED: Def = (
    "onejourney_input_partitions_stalled",
    "Input partitions whose broker holds records the consumer has not delivered for ingest.stall_after.",
);
const REBALANCES: Def = (
    "onejourney_rebalances_total",
    "Consumer group rebalances, by kind (assign, revoke).",
);
const READY: Def = (
    "onejourney_ready",
    "1 when the engine is ready (partitions assigned), else 0.",
);
const ACTIONS_SUPPRESSED: Def = (
    "onejourney_actions_suppressed_total",
    "Actions whose trigger facts held but that contact policy held back, by action and reason.",
);
const STATE_MEMORY: Def = (
    "onejourney_state_memory_bytes",
    "Estimated bytes held by the identity graph and journey state (kept as the state changes).",
);
const PRODUCER_QUEUE: Def = (
    "onejourney_producer_queue_messages",
    "Messages in the producer's queue, not yet acknowledged by the broker.",
);
const WARNINGS_SUPPRESSED: Def = (
    "onejourney_log_warnings_suppressed_total",
    "Repeated warnings not logged because of the per-minute limit.",
);
const OUTCOMES: Def = (
    "onejourney_action_outcomes_total",
    "Outcomes received on action-outcomes, by outcome and effect (learned, repeated, unknown).",
);
const EVENTS_BUFFERED: Def = (
    "onejourney_events_buffered",
    "Events waiting for the watermark (the slowest active input partition) to pass them.",
);
const SHARED_DEVICES: Def = (
    "onejourney_identity_shared_devices_total",
    "Device identifiers found shared by several people (they stop linking).",
);
const LINKS_DROPPED: Def = (
    "onejourney_identity_links_dropped_total",
    "Device links dropped because a profile reached a cap (oldest first).",
);
const IDENTITY_REBUILDS: Def = (
    "onejourney_identity_rebuilds_total",
    "Events that sorted before identity evidence already applied, so their component was folded again.",
);
const EVENTS_FORGOTTEN: Def = (
    "onejourney_events_forgotten_total",
    "Events ignored because every identifier on them was forgotten (erasure).",
);
const FORGET_REQUESTS: Def = (
    "onejourney_forget_requests_total",
    "Forget commands applied, by result (forgotten, unknown).",
);
const CONSENT_COMMANDS: Def = (
    "onejourney_consent_commands_total",
    "identity-control consent commands, by result (applied; unknown: no profile holds the identifier).",
);
const SNAPSHOTS: Def = (
    "onejourney_snapshots_total",
    "State snapshots, by result (written, skipped, failed; corrupt: found damaged at restore, the previous generation used).",
);
const SNAPSHOT_BYTES: Def = (
    "onejourney_snapshot_bytes",
    "What a restore reads: the last state snapshot file plus the changelog bytes checkpoints wrote since it.",
);
const SNAPSHOT_LAST_SUCCESS: Def = (
    "onejourney_snapshot_last_success_timestamp_seconds",
    "Unix time of the last state snapshot written.",
);
const OUTPUTS_DEDUPLICATED: Def = (
    "onejourney_outputs_deduplicated_total",
    "Output records regenerated after a restart and not published again (they already were).",
);
const JOURNEYS_EVICTED: Def = (
    "onejourney_journeys_evicted_total",
    "Journeys whose detail was dropped after state.evict_journeys_after without events.",
);
const JOURNEYS_FROZEN: Def = (
    "onejourney_journeys_frozen_total",
    "Journeys kept encoded after state.freeze_journeys_after without events (decoded again on their next event).",
);
const JOURNEYS_THAWED: Def = (
    "onejourney_journeys_thawed_total",
    "Frozen journeys decoded back to live by an event, timer, outcome, merge, forget or eviction; a rate close to \
     onejourney_journeys_frozen_total's says state.freeze_journeys_after is shorter than customers' pauses.",
);
const HTTP_CONNECTIONS: Def = (
    "onejourney_http_connections",
    "HTTP connections open (at most http.max_connections; more wait to be accepted).",
);
const HTTP_HEADER_TIMEOUTS: Def = (
    "onejourney_http_header_timeouts_total",
    "HTTP connections closed because no complete request head came within http.header_read_timeout.",
);
const MEMORY_BUDGET_EXCEEDED: Def = (
    "onejourney_state_memory_budget_exceeded",
    "1 while the state is over state.max_memory_bytes and consuming is paused.",
);
const SNAPSHOT_SECONDS: Def = (
    "onejourney_snapshot_duration_seconds",
    "How long the last checkpoint took, from its barrier to its committed input offsets (processing goes on meanwhile).",
);
const CHECKPOINT_STALL: Def = (
    "onejourney_checkpoint_stall_seconds",
    "How long processing waited for the last checkpoint's barrier (the changes taken from the state; the changelog is written in the background).",
);
const CHECKPOINT_STALL_PHASE: Def = (
    "onejourney_checkpoint_stall_phase_seconds",
    "The last checkpoint barrier's stall by phase: drain (the decisions in flight handed to the ack stage, behind a barrier), capture (the changed journeys, identity ops and globals taken from the state).",
);
/// The phases of [`CHECKPOINT_STALL_PHASE`], in the barrier's order.
pub const STALL_PHASES: [&str; 2] = ["drain", "capture"];
const CHECKPOINT_IN_PROGRESS: Def = (
    "onejourney_checkpoint_in_progress",
    "1 while a checkpoint's background flush runs (changelog written, then input offsets committed), else 0.",
);
const CHANGELOG_BYTES: Def = (
    "onejourney_changelog_bytes_total",
    "Bytes (keys and values) written to the state changelog topics, by record kind (journey, tombstone, identity, globals, marker).",
);
const CHANGELOG_RECORDS: Def = (
    "onejourney_changelog_records_total",
    "Records written to the state changelog topics, by record kind (journey, tombstone, identity, globals, marker).",
);
const RESTORE_SECONDS: Def = (
    "onejourney_state_restore_seconds",
    "How long restoring the state at start took (snapshot read and published outputs read back).",
);

const ACTION_DECISIONS: Def = (
    "onejourney_action_decisions",
    "Decisions per catalog action since the state began, by group: sent, or held_out (withheld as the \
     control group, decide.holdout_share); read from the state at each scrape.",
);
const ACTION_CONVERSIONS: Def = (
    "onejourney_action_conversions",
    "Decisions followed by a purchase within the action's conversion window, by action and group (sent, held_out).",
);
const ACTION_UPLIFT: Def = (
    "onejourney_action_uplift_ratio",
    "Conversion rate of sent minus held-out decisions, per action (absent until both groups have one).",
);
const ACTION_PROPENSITY: Def = (
    "onejourney_action_propensity_ratio",
    "The learned response rate of each action (posterior mean over every tier and channel).",
);

/// The record kinds of the state changelog (label `kind`).
pub const CHANGELOG_KINDS: [&str; 6] = ["journey", "tombstone", "identity", "dedupe", "globals", "marker"];

/// Registers metrics on one registry.
struct Reg<'a>(&'a Registry);

impl Reg<'_> {
    fn add<M: prometheus::core::Collector + Clone + 'static>(&self, m: M) -> Result<M, MetricsError> {
        self.0.register(Box::new(m.clone()))?;
        Ok(m)
    }
    fn counter(&self, (name, help): Def) -> Result<IntCounter, MetricsError> {
        self.add(IntCounter::with_opts(Opts::new(name, help))?)
    }
    fn counter_vec(&self, (name, help): Def, labels: &[&str]) -> Result<IntCounterVec, MetricsError> {
        self.add(IntCounterVec::new(Opts::new(name, help), labels)?)
    }
    fn gauge(&self, (name, help): Def) -> Result<IntGauge, MetricsError> {
        self.add(IntGauge::with_opts(Opts::new(name, help))?)
    }
    fn float_gauge(&self, (name, help): Def) -> Result<Gauge, MetricsError> {
        self.add(Gauge::with_opts(Opts::new(name, help))?)
    }
    fn gauge_vec(&self, (name, help): Def, labels: &[&str]) -> Result<IntGaugeVec, MetricsError> {
        self.add(IntGaugeVec::new(Opts::new(name, help), labels)?)
    }
    fn float_gauge_vec(&self, (name, help): Def, labels: &[&str]) -> Result<GaugeVec, MetricsError> {
        self.add(GaugeVec::new(Opts::new(name, help), labels)?)
    }
}

/// The histograms and the lag gauge (their own options), and the process collector.
fn registered_specials(registry: &Registry) -> Result<(Histogram, Histogram, IntGaugeVec), MetricsError> {
    let event_to_output = Histogram::with_opts(
        HistogramOpts::new(
            "onejourney_event_to_output_seconds",
            "Time from receiving an input message to the broker acknowledging every output it caused.",
        )
        .buckets(exponential_buckets(0.0005, 2.0, 16)?),
    )?;
    registry.register(Box::new(event_to_output.clone()))?;
    let decision_duration = Histogram::with_opts(
        HistogramOpts::new(
            "onejourney_decision_duration_seconds",
            "Time the pure core spends on one input message (validate, stitch, journey, decide).",
        )
        .buckets(exponential_buckets(0.000_002, 2.0, 18)?),
    )?;
    registry.register(Box::new(decision_duration.clone()))?;
    let consumer_lag = IntGaugeVec::new(
        Opts::new(
            "onejourney_consumer_lag_messages",
            "Messages between the committed offset and the end of each input partition (librdkafka statistics).",
        ),
        &["topic", "partition"],
    )?;
    registry.register(Box::new(consumer_lag.clone()))?;
    #[cfg(target_os = "linux")]
    registry.register(Box::new(prometheus::process_collector::ProcessCollector::new(
        std::process::id() as i32,
        "onejourney",
    )))?;
    Ok((event_to_output, decision_duration, consumer_lag))
}

impl Metrics {
    pub fn new(decide: &DecideConfig) -> Result<Metrics, MetricsError> {
        let registry = Registry::new();
        let (event_to_output, decision_duration, consumer_lag) = registered_specials(&registry)?;
        let r = Reg(&registry);
        let m = Metrics {
            events_consumed: r.counter_vec(EVENTS_CONSUMED, &["channel"])?,
            events_invalid: r.counter_vec(EVENTS_INVALID, &["channel", "reason"])?,
            events_duplicate: r.counter_vec(EVENTS_DUPLICATE, &["channel"])?,
            events_late: r.counter(EVENTS_LATE)?,
            events_settled: r.counter(EVENTS_SETTLED)?,
            dead_letter: r.counter(DEAD_LETTER)?,
            profiles: r.gauge(PROFILES)?,
            journeys: r.gauge(JOURNEYS)?,
            journeys_frozen_now: r.gauge(JOURNEYS_FROZEN_NOW)?,
            identifiers: r.gauge(IDENTIFIERS)?,
            identity_merges: r.counter(IDENTITY_MERGES)?,
            links_rejected: r.counter_vec(LINKS_REJECTED, &["reason"])?,
            identifiers_blocked: r.counter_vec(IDENTIFIERS_BLOCKED, &["reason"])?,
            actions_emitted: r.counter_vec(ACTIONS_EMITTED, &["action", "channel"])?,
            churn_band_changes: r.counter_vec(CHURN_BAND_CHANGES, &["band"])?,
            churn_model_auc: r.add(GaugeVec::new(
                Opts::new(CHURN_MODEL_AUC.0, CHURN_MODEL_AUC.1),
                &["model"],
            )?)?,
            churn_model_examples: r.counter(CHURN_MODEL_EXAMPLES)?,
            timers_fired: r.counter(TIMERS_FIRED)?,
            timers_pending: r.gauge(TIMERS_PENDING)?,
            event_to_output,
            in_flight: r.gauge(IN_FLIGHT)?,
            delivery_errors: r.counter(DELIVERY_ERRORS)?,
            consumer_errors: r.counter(CONSUMER_ERRORS)?,
            input_fetch_errors: r.counter_vec(INPUT_FETCH_ERRORS, &["reason"])?,
            partitions_stalled: r.gauge(PARTITIONS_STALLED)?,
            rebalances: r.counter_vec(REBALANCES, &["kind"])?,
            ready: r.gauge(READY)?,
            consumer_lag,
            decision_duration,
            actions_suppressed: r.counter_vec(ACTIONS_SUPPRESSED, &["action", "reason"])?,
            state_memory: r.gauge(STATE_MEMORY)?,
            producer_queue: r.gauge(PRODUCER_QUEUE)?,
            warnings_suppressed: r.counter(WARNINGS_SUPPRESSED)?,
            outcomes: r.counter_vec(OUTCOMES, &["outcome", "effect"])?,
            events_buffered: r.gauge(EVENTS_BUFFERED)?,
            shared_devices: r.counter(SHARED_DEVICES)?,
            links_dropped: r.counter(LINKS_DROPPED)?,
            identity_rebuilds: r.counter(IDENTITY_REBUILDS)?,
            events_forgotten: r.counter(EVENTS_FORGOTTEN)?,
            forget_requests: r.counter_vec(FORGET_REQUESTS, &["result"])?,
            consent_commands: r.counter_vec(CONSENT_COMMANDS, &["result"])?,
            snapshots: r.counter_vec(SNAPSHOTS, &["result"])?,
            snapshot_seconds: r.float_gauge(SNAPSHOT_SECONDS)?,
            snapshot_bytes: r.gauge(SNAPSHOT_BYTES)?,
            snapshot_last_success: r.gauge(SNAPSHOT_LAST_SUCCESS)?,
            restore_seconds: r.float_gauge(RESTORE_SECONDS)?,
            checkpoint_stall: r.float_gauge(CHECKPOINT_STALL)?,
            checkpoint_stall_phase: r.float_gauge_vec(CHECKPOINT_STALL_PHASE, &["phase"])?,
            checkpoint_in_progress: r.gauge(CHECKPOINT_IN_PROGRESS)?,
            changelog_bytes: r.counter_vec(CHANGELOG_BYTES, &["kind"])?,
            changelog_records: r.counter_vec(CHANGELOG_RECORDS, &["kind"])?,
            outputs_deduplicated: r.counter(OUTPUTS_DEDUPLICATED)?,
            journeys_evicted: r.counter(JOURNEYS_EVICTED)?,
            journeys_frozen: r.counter(JOURNEYS_FROZEN)?,
            journeys_thawed: r.counter(JOURNEYS_THAWED)?,
            http_connections: r.gauge(HTTP_CONNECTIONS)?,
            http_header_timeouts: r.counter(HTTP_HEADER_TIMEOUTS)?,
            memory_budget_exceeded: r.gauge(MEMORY_BUDGET_EXCEEDED)?,
            action_decisions: r.gauge_vec(ACTION_DECISIONS, &["action", "group"])?,
            action_conversions: r.gauge_vec(ACTION_CONVERSIONS, &["action", "group"])?,
            action_uplift: r.float_gauge_vec(ACTION_UPLIFT, &["action"])?,
            action_propensity: r.float_gauge_vec(ACTION_PROPENSITY, &["action"])?,
            registry,
        };
        m.preregister(decide);
        Ok(m)
    }

    /// Pre-registers the fixed label sets so dashboards see zeros, not gaps.
    fn preregister(&self, decide: &DecideConfig) {
        let m = self;
        for r in crate::stall::FETCH_ERROR_REASONS {
            m.input_fetch_errors.with_label_values(&[r]);
        }
        for r in DecodeError::REASONS {
            m.events_invalid.with_label_values(&["action_outcomes", r]);
            m.events_invalid.with_label_values(&["identity_control", r]);
        }
        for outcome in ["delivered", "opened", "clicked", "converted", "dismissed"] {
            for effect in ["learned", "repeated", "unknown"] {
                m.outcomes.with_label_values(&[outcome, effect]);
            }
        }
        for c in Channel::ALL {
            m.events_consumed.with_label_values(&[c.label()]);
            m.events_duplicate.with_label_values(&[c.label()]);
            for r in DecodeError::REASONS {
                m.events_invalid.with_label_values(&[c.label(), r]);
            }
            m.events_invalid
                .with_label_values(&[c.label(), onejourney_core::processor::TOO_LATE]);
        }
        for r in RejectReason::ALL {
            m.links_rejected.with_label_values(&[r.label()]);
        }
        for result in ["written", "skipped", "failed", "corrupt"] {
            m.snapshots.with_label_values(&[result]);
        }
        for kind in CHANGELOG_KINDS {
            m.changelog_bytes.with_label_values(&[kind]);
            m.changelog_records.with_label_values(&[kind]);
        }
        for result in ["forgotten", "unknown"] {
            m.forget_requests.with_label_values(&[result]);
        }
        for result in ["applied", "unknown"] {
            m.consent_commands.with_label_values(&[result]);
        }

        for kind in ["assign", "revoke"] {
            m.rebalances.with_label_values(&[kind]);
        }
        for reason in [BlockReason::Empty, BlockReason::Junk] {
            m.identifiers_blocked.with_label_values(&[reason.label()]);
        }
        for action in &decide.actions {
            for ch in CONTACT_CHANNELS.iter().filter(|c| action.channels.contains(c)) {
                m.actions_emitted.with_label_values(&[&action.name, ch.label()]);
            }
        }
        for action in &decide.actions {
            for reason in Suppressed::ALL {
                m.actions_suppressed.with_label_values(&[&action.name, reason.label()]);
            }
        }
        for band in ["low", "medium", "high"] {
            m.churn_band_changes.with_label_values(&[band]);
        }
        for model in ["learned", "hand", "recency"] {
            m.churn_model_auc.with_label_values(&[model]).set(f64::NAN);
        }
        for phase in STALL_PHASES {
            m.checkpoint_stall_phase.with_label_values(&[phase]);
        }
    }

    /// Sets the action model gauges from the state's reports (at a scrape).
    pub fn set_actions(&self, reports: &[ActionReport]) {
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        for r in reports {
            let a = r.action.as_str();
            self.action_decisions.with_label_values(&[a, "sent"]).set(count(r.sent));
            self.action_decisions
                .with_label_values(&[a, "held_out"])
                .set(count(r.held_out));
            let conv = &self.action_conversions;
            conv.with_label_values(&[a, "sent"]).set(count(r.conversions_sent));
            conv.with_label_values(&[a, "held_out"])
                .set(count(r.conversions_held_out));
            if let Some(u) = r.uplift {
                self.action_uplift.with_label_values(&[a]).set(u);
            }
            self.action_propensity.with_label_values(&[a]).set(r.posterior_mean);
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut buf) {
            tracing::warn!(error = %e, "metrics encoding failed");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_prefixed_and_has_help() {
        let cfg = crate::config::Settings::defaults().unwrap();
        let m = Metrics::new(&cfg.decide).unwrap();
        m.events_late.inc();
        let text = m.render();
        for family in m.registry.gather() {
            assert!(family.name().starts_with("onejourney_"), "{}", family.name());
            assert!(!family.help().is_empty(), "{}", family.name());
        }
        assert!(text.contains("onejourney_events_consumed_total{channel=\"call_center\"} 0"));
        assert!(text.contains("onejourney_actions_emitted_total{action=\"cart_recovery\",channel=\"email\"} 0"));
        assert!(text.contains("onejourney_events_late_total 1"));
    }

    #[test]
    fn action_models_are_exported_per_action_and_group() {
        let cfg = crate::config::Settings::defaults().unwrap();
        let m = Metrics::new(&cfg.decide).unwrap();
        let mut u = onejourney_core::decide::uplift::Uplift::default();
        u.decided("cart_recovery", true);
        u.decided("cart_recovery", false);
        u.converted("cart_recovery", false);
        m.set_actions(&u.report(&cfg.decide, &Default::default()));
        let text = m.render();
        assert!(text.contains("onejourney_action_decisions{action=\"cart_recovery\",group=\"held_out\"} 1"));
        assert!(text.contains("onejourney_action_conversions{action=\"cart_recovery\",group=\"sent\"} 1"));
        assert!(text.contains("onejourney_action_uplift_ratio{action=\"cart_recovery\"} 1"));
        assert!(text.contains("onejourney_action_propensity_ratio{action=\"cart_discount\"} 0.18"));
    }

    /// Every `onejourney_*` metric name in `text` (histogram and counter
    /// suffixes folded to the family name).
    fn referenced(text: &str) -> std::collections::BTreeSet<String> {
        let mut out = std::collections::BTreeSet::new();
        let bytes = text.as_bytes();
        let mut i = 0;
        while let Some(pos) = text[i..].find("onejourney_") {
            let start = i + pos;
            let mut end = start;
            while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
                end += 1;
            }
            // `onejourney:` recording rules and the dashboard uid are not metrics.
            let name = &text[start..end];
            if name.len() > "onejourney_".len() {
                out.insert(name.to_string());
            }
            i = end;
        }
        out
    }

    fn exported() -> std::collections::BTreeSet<String> {
        let cfg = crate::config::Settings::defaults().unwrap();
        let m = Metrics::new(&cfg.decide).unwrap();
        m.consumer_lag.with_label_values(&["t", "0"]).set(1);
        m.event_to_output.observe(0.1);
        m.decision_duration.observe(0.001);
        let text = m.render();
        let mut names = std::collections::BTreeSet::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name: String = line
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            names.insert(name);
        }
        names
    }

    #[test]
    fn the_dashboard_and_alerts_use_only_exported_metrics() {
        let exported = exported();
        let dashboard: serde_json::Value =
            serde_json::from_str(include_str!("../../../deploy/grafana/onejourney.json"))
                .expect("dashboard is valid JSON");
        let panels = dashboard["panels"].as_array().expect("panels");
        assert!(panels.len() >= 10);
        let mut exprs = String::new();
        for p in panels {
            for t in p["targets"].as_array().expect("targets") {
                exprs.push_str(t["expr"].as_str().expect("expr"));
                exprs.push('\n');
            }
        }
        let rules = include_str!("../../../deploy/prometheus/onejourney.rules.yml");
        for (source, text) in [("dashboard", exprs.as_str()), ("alert rules", rules)] {
            let used = referenced(text);
            assert!(used.len() >= 4, "{source} references metrics");
            for name in used {
                assert!(
                    exported.contains(&name),
                    "{source} uses {name}, which /metrics does not export"
                );
            }
        }
    }
}
