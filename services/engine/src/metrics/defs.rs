//! The name and help text of every metric the engine exports, and the
//! fixed label sets (`STALL_PHASES`, `CHANGELOG_KINDS`, `FETCH_REWIND_TOPICS`).
//!
//! In: nothing. Out: constants that `metrics.rs` registers. Keeps nothing.
//! Names are `onejourney_<noun>_<unit>[_total]`; a help text is what
//! operators read in Prometheus.

/// A metric's name and help text.
pub(super) type Def = (&'static str, &'static str);

pub(super) const EVENTS_CONSUMED: Def = (
    "onejourney_events_consumed_total",
    "Input messages received, by channel (valid or not).",
);
pub(super) const EVENTS_INVALID: Def = (
    "onejourney_events_invalid_total",
    "Input messages rejected and sent to the dead-letter topic, by channel and reason.",
);
pub(super) const EVENTS_DUPLICATE: Def = (
    "onejourney_events_duplicate_total",
    "Events whose (channel, event_id) was already processed; they change nothing.",
);
pub(super) const EVENTS_LATE: Def = (
    "onejourney_events_late_total",
    "Events older than the watermark when they arrived (still applied to state).",
);
pub(super) const EVENTS_SETTLED: Def = (
    "onejourney_events_settled_total",
    "Input messages fully handled: applied, and every output they caused acknowledged by the broker.",
);
pub(super) const EVENTS_APPLIED: Def = (
    "onejourney_events_applied_total",
    "Events applied to a journey (not duplicates, not forgotten); with scaleout.route_journeys, counted by the process that owns the journey.",
);
pub(super) const DEAD_LETTER: Def = (
    "onejourney_dead_letter_total",
    "Messages written to the dead-letter topic.",
);
pub(super) const PROFILES: Def = ("onejourney_profiles", "Profiles (One IDs) in the identity graph.");
pub(super) const JOURNEYS: Def = ("onejourney_journeys", "Journeys in memory, live or frozen.");
pub(super) const JOURNEYS_FROZEN_NOW: Def = (
    "onejourney_journeys_frozen",
    "Journeys kept frozen (compressed until their next event), among onejourney_journeys.",
);
pub(super) const IDENTIFIERS: Def = ("onejourney_identifiers", "Linking identifiers in the identity graph.");
pub(super) const IDENTITY_MERGES: Def = (
    "onejourney_identity_merges_total",
    "Profiles merged into another profile.",
);
pub(super) const LINKS_REJECTED: Def = (
    "onejourney_identity_links_rejected_total",
    "Links between identifiers refused by the stitching rules, by reason.",
);
pub(super) const IDENTIFIERS_BLOCKED: Def = (
    "onejourney_identifiers_blocked_total",
    "Identifier values dropped as empty or placeholder values, by reason.",
);
pub(super) const ACTIONS_EMITTED: Def = (
    "onejourney_actions_emitted_total",
    "Next-best-action decisions published, by action and contact channel.",
);
pub(super) const CHURN_BAND_CHANGES: Def = (
    "onejourney_churn_band_changes_total",
    "Churn-risk band changes published, by the new band.",
);
pub(super) const CHURN_MODEL_AUC: Def = (
    "onejourney_churn_model_auc",
    "Prequential (test-then-train) AUC on the churn model's labelled examples, by scorer: the learned model, the hand-weighted score, recency alone (NaN until both labels were seen).",
);
pub(super) const CHURN_MODEL_EXAMPLES: Def = (
    "onejourney_churn_model_examples_total",
    "Labelled examples the churn model learned from (churned or back within the horizon).",
);
pub(super) const TIMERS_FIRED: Def = ("onejourney_timers_fired_total", "Event-time timers that came due.");
pub(super) const TIMERS_PENDING: Def = (
    "onejourney_timers_pending",
    "Event-time timers waiting for the watermark.",
);
pub(super) const IN_FLIGHT: Def = (
    "onejourney_messages_in_flight",
    "Input messages processed whose outputs the broker has not acknowledged yet.",
);
pub(super) const DELIVERY_ERRORS: Def = (
    "onejourney_delivery_errors_total",
    "Output messages the producer failed to deliver.",
);
pub(super) const CONSUMER_ERRORS: Def = (
    "onejourney_consumer_errors_total",
    "Errors reported by the Kafka consumer.",
);
pub(super) const INPUT_FETCH_ERRORS: Def = (
    "onejourney_input_fetch_errors_total",
    "Input records the consumer could not fetch or decode at the Kafka level (no message to dead-letter), by reason.",
);
pub(super) const FETCH_REWINDS: Def = (
    "onejourney_fetch_rewinds_total",
    "Times a partition was fetched again from further back because the broker skipped records (tansu 0.6: at a resumed partition's start; a gap in the routed or identity evidence topic, which have none), by topic kind (input, routed, evidence).",
);
/// The `topic` labels of [`FETCH_REWINDS`].
pub const FETCH_REWIND_TOPICS: [&str; 3] = ["input", "routed", "evidence"];
pub(super) const PARTITIONS_STALLED: Def = (
    "onejourney_input_partitions_stalled",
    "Input partitions whose broker holds records the consumer has not delivered for ingest.stall_after, or whose end the broker has not told since they were assigned while it told others' for as long.",
);
pub(super) const WATERMARK_HOLDING: Def = (
    "onejourney_watermark_holding",
    "Input partitions (lanes, with scale-out routing) that hold the event-time watermark back, and so the events buffered behind it, by reason: backlog (records wait at the broker, or may: its end not read for 5 s, or not since it was assigned; for a lane, its sender still reads it or this process has not read all of its routed partition), recent (heard from within timers.idle_after), unread_end (silent, its end not read since; at most 10 s past idle_after).",
);
pub(super) const REBALANCES: Def = (
    "onejourney_rebalances_total",
    "Consumer group rebalances, by kind (assign, revoke).",
);
pub(super) const READY: Def = (
    "onejourney_ready",
    "1 when the engine is ready (partitions assigned), else 0.",
);
pub(super) const ACTIONS_SUPPRESSED: Def = (
    "onejourney_actions_suppressed_total",
    "Actions whose trigger facts held but that contact policy held back, by action and reason.",
);
pub(super) const STATE_MEMORY: Def = (
    "onejourney_state_memory_bytes",
    "Estimated bytes held by the state (kept as it changes): the identity graph, journeys, timers, dedupe memory, and what waits for the next checkpoint (identity ops, buffered events, scale-out's moves).",
);
pub(super) const PRODUCER_QUEUE: Def = (
    "onejourney_producer_queue_messages",
    "Messages in the producer's queue, not yet acknowledged by the broker.",
);
pub(super) const WARNINGS_SUPPRESSED: Def = (
    "onejourney_log_warnings_suppressed_total",
    "Repeated warnings not logged because of the per-minute limit.",
);
pub(super) const OUTCOMES: Def = (
    "onejourney_action_outcomes_total",
    "Outcomes received on action-outcomes, by outcome and effect (learned, repeated, unknown).",
);
pub(super) const EVENTS_BUFFERED: Def = (
    "onejourney_events_buffered",
    "Events waiting for the watermark (the slowest active input partition) to pass them.",
);
pub(super) const SHARED_DEVICES: Def = (
    "onejourney_identity_shared_devices_total",
    "Device identifiers found shared by several people (they stop linking).",
);
pub(super) const LINKS_DROPPED: Def = (
    "onejourney_identity_links_dropped_total",
    "Device links dropped because a profile reached a cap (oldest first).",
);
pub(super) const IDENTITY_REBUILDS: Def = (
    "onejourney_identity_rebuilds_total",
    "Events that sorted before identity evidence already applied, so their component was folded again.",
);
pub(super) const EVENTS_FORGOTTEN: Def = (
    "onejourney_events_forgotten_total",
    "Events ignored because every identifier on them was forgotten (erasure).",
);
pub(super) const FORGET_REQUESTS: Def = (
    "onejourney_forget_requests_total",
    "Forget commands applied, by result (forgotten, unknown).",
);
pub(super) const CONSENT_COMMANDS: Def = (
    "onejourney_consent_commands_total",
    "identity-control consent commands, by result (applied; unknown: no profile holds the identifier).",
);
pub(super) const SNAPSHOTS: Def = (
    "onejourney_snapshots_total",
    "State snapshots, by result (written, skipped, failed; corrupt: found damaged at restore, the previous generation used).",
);
pub(super) const SNAPSHOT_BYTES: Def = (
    "onejourney_snapshot_bytes",
    "What a restore reads: the last state snapshot file plus the changelog bytes checkpoints wrote since it.",
);
pub(super) const SNAPSHOT_LAST_SUCCESS: Def = (
    "onejourney_snapshot_last_success_timestamp_seconds",
    "Unix time of the last state snapshot written.",
);
pub(super) const OUTPUTS_DEDUPLICATED: Def = (
    "onejourney_outputs_deduplicated_total",
    "Output records regenerated after a restart and not published again (they already were).",
);
pub(super) const EVIDENCE_PUBLISHED: Def = (
    "onejourney_identity_evidence_published_total",
    "Identity evidence records (an event's identifiers, a forget) this process published (scaleout.identity_log).",
);
pub(super) const EVIDENCE_SKIPPED: Def = (
    "onejourney_identity_evidence_skipped_total",
    "Events whose identifier set the graph already holds as it is: resolved at once, no evidence record, no round trip (scaleout.identity_log).",
);
pub(super) const EVIDENCE_FOLDED: Def = (
    "onejourney_identity_evidence_folded_total",
    "Identity evidence records folded into the graph, by origin (own: published by this process; other).",
);
pub(super) const EVIDENCE_INVALID: Def = (
    "onejourney_identity_evidence_invalid_total",
    "Identity evidence records that could not be read (not folded), by reason.",
);
pub(super) const EVIDENCE_WAITING: Def = (
    "onejourney_identity_evidence_waiting",
    "Events and forgets waiting for their own identity evidence record to be read back, and events resolved without one that wait behind such an event of their input partition.",
);
pub(super) const ROUTED: Def = (
    "onejourney_routed_records_total",
    "Records this process sent to the owner of a state partition (scaleout.route_journeys), by kind: event, handover (a merged-away journey), forward (sent on to the owner of the profile it belongs to now).",
);
pub(super) const ROUTED_WAITING: Def = (
    "onejourney_routed_waiting",
    "Routed records waiting until this process has folded the identity evidence they were resolved at.",
);
pub(super) const PARTITIONS_MOVED: Def = (
    "onejourney_state_partitions_moved_total",
    "State partitions that came to this process with a consumer-group assignment and were restored from their journeys changelog partition (change=restored), or left it (change=dropped); change=not_let_go counts partitions restored although the previous owner's members record still named them after 15 s (it stopped without saying so) (scaleout.route_journeys).",
);
pub(super) const PARTITION_RECORDS_RESTORED: Def = (
    "onejourney_state_partition_records_restored_total",
    "Journey records (latest per One ID) installed from the journeys changelog when a state partition was assigned to this process (scaleout.route_journeys).",
);
pub(super) const JOURNEYS_EVICTED: Def = (
    "onejourney_journeys_evicted_total",
    "Journeys whose detail was dropped after state.evict_journeys_after without events.",
);
pub(super) const JOURNEYS_FROZEN: Def = (
    "onejourney_journeys_frozen_total",
    "Journeys kept encoded after state.freeze_journeys_after without events (decoded again on their next event).",
);
pub(super) const JOURNEYS_THAWED: Def = (
    "onejourney_journeys_thawed_total",
    "Frozen journeys decoded back to live by an event, timer, outcome, merge, forget or eviction; a rate close to \
     onejourney_journeys_frozen_total's says state.freeze_journeys_after is shorter than customers' pauses.",
);
pub(super) const HTTP_CONNECTIONS: Def = (
    "onejourney_http_connections",
    "HTTP connections open (at most http.max_connections; more wait to be accepted).",
);
pub(super) const HTTP_HEADER_TIMEOUTS: Def = (
    "onejourney_http_header_timeouts_total",
    "HTTP connections closed because no complete request head came within http.header_read_timeout.",
);
pub(super) const MEMORY_BUDGET_EXCEEDED: Def = (
    "onejourney_state_memory_budget_exceeded",
    "1 while the state is over state.max_memory_bytes and consuming is paused.",
);
pub(super) const SNAPSHOT_SECONDS: Def = (
    "onejourney_snapshot_duration_seconds",
    "How long the last checkpoint took, from its barrier to its committed input offsets (processing goes on meanwhile).",
);
pub(super) const CHECKPOINT_STALL: Def = (
    "onejourney_checkpoint_stall_seconds",
    "The longest time processing waited for the last checkpoint: its barrier, or the longest slice of the changed records taken after it (the changelog is written in the background).",
);
pub(super) const CHECKPOINT_STALL_PHASE: Def = (
    "onejourney_checkpoint_stall_phase_seconds",
    "The last checkpoint's stall by phase: at the barrier, drain (the decisions in flight handed to the ack stage, behind a barrier) and capture (the changed records marked pending, identity ops and globals taken from the state); after it, slice (the longest of the pauses in which the writer took pending records between messages; a record the writer changes is taken just before).",
);
/// The phases of [`CHECKPOINT_STALL_PHASE`], in the checkpoint's order.
pub const STALL_PHASES: [&str; 3] = ["drain", "capture", "slice"];
pub(super) const CHECKPOINT_IN_PROGRESS: Def = (
    "onejourney_checkpoint_in_progress",
    "1 while a checkpoint's background flush runs (changelog written, then input offsets committed), else 0.",
);
pub(super) const CHANGELOG_BYTES: Def = (
    "onejourney_changelog_bytes_total",
    "Bytes (keys and values) written to the state changelog topics, by record kind (journey, tombstone, identity, globals, marker).",
);
pub(super) const CHANGELOG_RECORDS: Def = (
    "onejourney_changelog_records_total",
    "Records written to the state changelog topics, by record kind (journey, tombstone, identity, globals, marker).",
);
pub(super) const RESTORE_SECONDS: Def = (
    "onejourney_state_restore_seconds",
    "How long restoring the state at start took (snapshot read and published outputs read back).",
);

pub(super) const ACTION_DECISIONS: Def = (
    "onejourney_action_decisions",
    "Decisions per catalog action since the state began, by group: sent, or held_out (withheld as the \
     control group, decide.holdout_share); read from the state at each scrape.",
);
pub(super) const ACTION_CONVERSIONS: Def = (
    "onejourney_action_conversions",
    "Decisions followed by a purchase within the action's conversion window, by action and group (sent, held_out).",
);
pub(super) const ACTION_UPLIFT: Def = (
    "onejourney_action_uplift_ratio",
    "Conversion rate of sent minus held-out decisions, per action (absent until both groups have one).",
);
pub(super) const ACTION_PROPENSITY: Def = (
    "onejourney_action_propensity_ratio",
    "The learned response rate of each action (posterior mean over every tier and channel).",
);

/// The record kinds of the state changelog (label `kind`).
pub const CHANGELOG_KINDS: [&str; 6] = ["journey", "tombstone", "identity", "dedupe", "globals", "marker"];
