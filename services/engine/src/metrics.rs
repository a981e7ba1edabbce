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
use onejourney_core::processor::{Holding, CONTACT_CHANNELS};
use onejourney_core::{Channel, DecodeError};

mod defs;

use defs::*;
pub use defs::{CHANGELOG_KINDS, FETCH_REWIND_TOPICS, STALL_PHASES};

pub struct Metrics {
    registry: Registry,
    pub events_consumed: IntCounterVec,
    pub events_invalid: IntCounterVec,
    pub events_duplicate: IntCounterVec,
    pub events_late: IntCounter,
    pub events_settled: IntCounter,
    pub events_applied: IntCounter,
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
    /// By topic kind: input, routed, evidence.
    pub fetch_rewinds: IntCounterVec,
    pub partitions_stalled: IntGauge,
    /// Clocks holding the watermark back, by reason ([`Holding::by_reason`]).
    pub watermark_holding: IntGaugeVec,
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
    pub evidence: EvidenceMetrics,
}

/// Scale-out: the identity evidence topic (stage 1) and the routed topic
/// (stage 2).
pub struct EvidenceMetrics {
    pub published: IntCounter,
    pub skipped: IntCounter,
    pub folded: IntCounterVec,
    pub invalid: IntCounterVec,
    pub waiting: IntGauge,
    pub round_trip: Histogram,
    pub routed: IntCounterVec,
    pub routed_waiting: IntGauge,
    pub partitions_moved: IntCounterVec,
    pub partition_records_restored: IntCounter,
}

impl EvidenceMetrics {
    fn new(r: &Reg<'_>) -> Result<Self, MetricsError> {
        let m = EvidenceMetrics {
            published: r.counter(EVIDENCE_PUBLISHED)?,
            skipped: r.counter(EVIDENCE_SKIPPED)?,
            folded: r.counter_vec(EVIDENCE_FOLDED, &["origin"])?,
            invalid: r.counter_vec(EVIDENCE_INVALID, &["reason"])?,
            waiting: r.gauge(EVIDENCE_WAITING)?,
            routed: r.counter_vec(ROUTED, &["kind"])?,
            routed_waiting: r.gauge(ROUTED_WAITING)?,
            partitions_moved: r.counter_vec(PARTITIONS_MOVED, &["change"])?,
            partition_records_restored: r.counter(PARTITION_RECORDS_RESTORED)?,
            round_trip: r.add(Histogram::with_opts(
                HistogramOpts::new(
                    "onejourney_identity_evidence_round_trip_seconds",
                    "Time from publishing an event's identity evidence to folding it back (scaleout.identity_log).",
                )
                .buckets(exponential_buckets(0.0005, 2.0, 16)?),
            )?)?,
        };
        for origin in ["own", "other"] {
            m.folded.with_label_values(&[origin]);
        }
        for kind in ["event", "handover", "forward"] {
            m.routed.with_label_values(&[kind]);
        }
        Ok(m)
    }
}

/// A metric definition error is a programming error caught by the tests.
#[derive(Debug, thiserror::Error)]
#[error("metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

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
            events_applied: r.counter(EVENTS_APPLIED)?,
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
            fetch_rewinds: r.counter_vec(FETCH_REWINDS, &["topic"])?,
            partitions_stalled: r.gauge(PARTITIONS_STALLED)?,
            watermark_holding: r.gauge_vec(WATERMARK_HOLDING, &["reason"])?,
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
            evidence: EvidenceMetrics::new(&r)?,
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
        for kind in FETCH_REWIND_TOPICS {
            m.fetch_rewinds.with_label_values(&[kind]);
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
        m.set_holding(Holding::default());
    }

    /// The clocks holding the watermark back, by reason (every tick).
    pub fn set_holding(&self, h: Holding) {
        for (reason, n) in h.by_reason() {
            let n = i64::try_from(n).unwrap_or(i64::MAX);
            self.watermark_holding.with_label_values(&[reason]).set(n);
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
    fn what_holds_the_watermark_is_exported_by_reason() {
        let cfg = crate::config::Settings::defaults().unwrap();
        let m = Metrics::new(&cfg.decide).unwrap();
        assert!(m
            .render()
            .contains("onejourney_watermark_holding{reason=\"unread_end\"} 0"));
        m.set_holding(Holding {
            backlog: 3,
            recent: 0,
            unread_end: 2,
        });
        let text = m.render();
        assert!(
            text.contains("onejourney_watermark_holding{reason=\"backlog\"} 3"),
            "{text}"
        );
        assert!(text.contains("onejourney_watermark_holding{reason=\"recent\"} 0"));
        assert!(text.contains("onejourney_watermark_holding{reason=\"unread_end\"} 2"));
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
