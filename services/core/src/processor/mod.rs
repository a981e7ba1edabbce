//! The pure pipeline: one validated event in, the outputs it causes out.
//!
//! In: [`ChannelEvent`]s in arrival order, with their input partition and
//! the caller's processing time; `action-outcomes` records; forget commands.
//! Out: [`Released`] results, each a [`Processed`] holding the [`Output`]s to
//! publish (identity changes, churn-band changes, next best actions) and what
//! happened, for metrics. Keeps the [`State`] (as its single writer), the
//! dedupe set, the reorder buffer and partition clocks, the timers and the
//! value tiers; the churn model, the learned propensities and the uplift
//! counts live in the [`State`], which readers share.
//!
//! Layout: `order.rs` the reorder buffer and the watermark; `timers.rs`
//! event-time timers, `timer_set.rs` where they are kept; `evaluate.rs` churn and the next best action for one
//! journey; `learn.rs` outcomes and conversions; `labels.rs` the churn
//! model's labels; `dedupe.rs` the dedupe window; `snapshot.rs` the snapshot
//! format, `write_order.rs` the order it writes journeys and timers in; `fold.rs` the identity step of scale-out (evidence folded from the
//! identity log). This file applies one event.
//!
//! Order of work for one event: dedupe on `(channel, event_id)` -> the
//! identity step (stitch, merge the journeys of merged profiles) -> the
//! journey step (apply the event to the journey, churn, decide, schedule
//! timers) -> advance the watermark and fire the timers that are due. With
//! the identity log (scale-out stage 1, `docs/scaling.md`) the two steps are
//! separate calls: the identity step runs when the event's evidence record
//! is folded ([`Processor::fold_event`], for every process's records), the
//! journey step when the watermark releases the event
//! ([`Processor::offer_resolved`]), on the profile its anchor is in then.
//!
//! Invariants: time is event time only (the watermark is the largest event
//! time seen minus the allowed lateness); journey state is keyed by One ID;
//! timers are keyed by an identifier, so a timer follows its profile through
//! merges; one writer.

mod applied;
mod capture;
mod changelog;
mod dedupe;
mod evaluate;
mod fold;
mod labels;
mod learn;
mod moves;
mod moving;
mod op_log;
mod order;
mod owner;
mod snapshot;
mod timer_set;
mod timers;
mod write_order;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::decide::churn_model::LiveChurn;
use crate::decide::tiers::ValueTiers;
use crate::decide::triggers::triggers_of;
use crate::decide::value::{Population, ValueKey};
use crate::decide::{DecideConfig, Suppressed};
use crate::event::{Channel, ChannelEvent};
use crate::hash::HashMap;
use crate::identity::{OneId, Rejection, Stitch, StitchError};
use crate::ids::IdKey;
use crate::journey::Journey;
use crate::output::{Erasure, ErasureRequest, IdentityChange, LinkRef, Output, SuppressedRef, TriggerRef};
use crate::time::EventTime;
use crate::vocab::ContactChannel;
use dedupe::Dedupe;

pub use crate::event::ActionOutcome;
pub use crate::state::State;
pub use capture::{Captured, Record};
pub use changelog::{CoreGlobals, CoreGlobalsRef, GLOBALS_VERSION};
pub use dedupe::{DedupeDelta, TOO_LATE};
pub use fold::{Folded, Resolved};
pub use learn::OutcomeEffect;
pub use moving::{handover_key, AppliedKey, GivenUp, Installed, PartitionRecord};
pub use op_log::OpLog;
pub use order::{Hold, Holding, LaneReport, PartitionClock, Released, FRESH_READ_WAIT_MS};
pub use owner::{state_partition, Handover, Ownership};
pub use snapshot::{CoreSnapshot, CoreSnapshotRef, RestoreError, SNAPSHOT_VERSION};
pub use timer_set::Timer;
pub use timers::TimerKind;

use order::PendingKey;
use timer_set::TimerSet;

#[cfg(test)]
mod arbitration_tests;
#[cfg(test)]
mod capture_tests;
#[cfg(test)]
mod changelog_tests;
#[cfg(test)]
mod churn_tests;
#[cfg(test)]
mod derivation_tests;
#[cfg(test)]
mod evidence_tests;
#[cfg(test)]
mod frozen_snapshot_tests;
#[cfg(test)]
mod journey_size_tests;
#[cfg(test)]
mod moving_tests;
#[cfg(test)]
mod owner_tests;
#[cfg(test)]
mod policy_tests;
#[cfg(test)]
mod share_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod value_tests;
#[cfg(test)]
mod window_tests;

/// Settings of the pure pipeline.
#[derive(Clone, Debug)]
pub struct CoreConfig {
    pub decide: DecideConfig,
    /// How far an event may trail the largest event time of its partition
    /// and still be applied in order.
    pub allowed_lateness: Duration,
    /// A partition with no message for this long (processing time, given by
    /// the caller) stops holding the watermark back.
    pub idle_after: Duration,
    /// How long (event time, behind the applied-to time) an event's key is
    /// remembered to drop a second copy; an event older than that is refused
    /// as too late. Zero: every key is kept, nothing is too late.
    pub dedupe_window: Duration,
}

/// What one event did.
#[derive(Debug, Default)]
pub struct Processed {
    /// The event's channel (`None` for timer releases).
    pub channel: Option<Channel>,
    pub one_id: Option<OneId>,
    pub outputs: Vec<Output>,
    pub duplicate: bool,
    /// Before its partition's watermark when it arrived (still applied).
    pub late: bool,
    pub merges: usize,
    pub rejected: Vec<Rejection>,
    /// Every identifier on the event was forgotten: nothing was applied.
    pub forgotten: bool,
    /// Devices that became shared on this event.
    pub shared_devices: usize,
    /// Older than the dedupe window behind the applied-to time: not applied
    /// (the caller checks [`Processor::too_late`] first and dead-letters it).
    pub too_late: bool,
    /// Device links the per-profile caps dropped.
    pub links_dropped: usize,
    /// The event sorted before identity evidence already applied: its
    /// identity component was folded again.
    pub rebuilt: bool,
    pub timers_fired: usize,
    /// Actions whose facts held but that policy held back, with why.
    pub suppressed: Vec<(String, Suppressed)>,
    /// Scale-out: not applied, because its profile's journey is on another
    /// process: the event, where it belongs now, and the caller's number of
    /// the partition it came from, to send on.
    pub forward: Option<Box<(ChannelEvent, Resolved, u32)>>,
}

/// Which contact channel labels exist, for pre-registering metrics.
pub const CONTACT_CHANNELS: [ContactChannel; ContactChannel::COUNT] = ContactChannel::ALL;

/// The single writer of [`State`].
///
/// Events are buffered and applied in event-time order once the watermark
/// passes them, interleaved with the timers that come due; the watermark is
/// the smallest, over active partitions, of each partition's largest event
/// time minus the allowed lateness. So the order in which partitions happen
/// to be consumed (a replay at full speed, or living through it) does not
/// change what is decided. An event older than what was already applied is
/// late: it is applied at once and counted.
pub struct Processor {
    cfg: Arc<CoreConfig>,
    state: Arc<State>,
    seen: Dedupe,
    partitions: HashMap<u32, PartitionClock>,
    /// With the partition each came from.
    pending: BTreeMap<PendingKey, (u32, ChannelEvent)>,
    /// What `pending`'s events hold ([`ChannelEvent::approx_bytes`]).
    pending_bytes: usize,
    /// Scale-out: where the identity log put buffered events (by the
    /// caller's number), for their journey step (see `fold.rs`).
    resolved: HashMap<u64, Resolved>,
    timers: TimerSet,
    /// Everything at or before this event time has been applied.
    applied_to: EventTime,
    suppressed: Vec<(String, Suppressed)>,
    tiers: ValueTiers,
    /// RFM quintiles and lifetime-value parameters of the buying population.
    value: Population,
    next_seq: u64,
    /// Label timers the last churn evaluation asked for, to arm with the
    /// profile's identifier (see `evaluate.rs`).
    label_due: Option<EventTime>,
    /// The identity ops applied since [`Processor::take_identity_ops`], in
    /// order: what the next checkpoint writes to the identity log.
    identity_log: OpLog,
    /// Scale-out stage 2: the state partitions whose journeys this process
    /// holds (`None`: all), and the handovers not yet taken (`owner.rs`).
    ownership: Option<Ownership>,
    handovers: Vec<Handover>,
    /// With the identity log: where each journey a fold moved went (`None`:
    /// dropped), so an event resolved before the move follows its journey
    /// (`fold.rs`); kept while the dedupe window covers it (`moves.rs`).
    moves: moves::Moves,
    keep_moves: bool,
    /// The profiles a fold moved since [`Processor::take_moved_pending`]:
    /// only buffered events resolved to one of them can have moved.
    moved_since_scan: crate::hash::HashSet<OneId>,
    /// Scale-out stage 2: per journey, the keys of the events applied to it
    /// (`moving.rs`); `None` in one process.
    applied: Option<applied::AppliedKeys>,
    /// A checkpoint's records not yet all taken (`capture.rs`).
    capture: Option<capture::Pending>,
}

impl Processor {
    pub fn new(cfg: Arc<CoreConfig>, state: Arc<State>) -> Self {
        *state.churn_mut() = Some(LiveChurn::new(cfg.decide.churn.clone()));
        Processor {
            seen: Dedupe::new(cfg.dedupe_window),
            cfg,
            state,
            partitions: HashMap::default(),
            pending: BTreeMap::new(),
            pending_bytes: 0,
            resolved: HashMap::default(),
            timers: TimerSet::default(),
            applied_to: EventTime::MIN,
            suppressed: Vec::new(),
            tiers: ValueTiers::default(),
            value: Population::default(),
            next_seq: 0,
            label_due: None,
            identity_log: OpLog::default(),
            ownership: None,
            handovers: Vec::new(),
            moves: moves::Moves::default(),
            keep_moves: false,
            moved_since_scan: crate::hash::HashSet::default(),
            applied: None,
            capture: None,
        }
    }

    pub fn state(&self) -> &Arc<State> {
        &self.state
    }

    /// True when `ev` is older than the dedupe window behind what was
    /// applied: it cannot be told apart from a duplicate and is not applied.
    pub fn too_late(&self, ev: &ChannelEvent) -> bool {
        self.seen.too_late(ev.occurred_at, self.applied_to)
    }

    /// Why [`Processor::too_late`] holds for `ev`, for its dead-letter
    /// record: how far behind the applied-to time it is, that time (the
    /// engine's, not the message's) and the window. It never quotes the
    /// message's values (`docs/contract.md`, `dead-letter`). `whose`: who
    /// applied.
    pub fn too_late_text(&self, ev: &ChannelEvent, whose: &str) -> String {
        let behind_days = self.applied_to.days_since(ev.occurred_at);
        format!(
            "occurred_at is {behind_days:.1} days behind the events {whose} applied (up to {}), more than \
             state.dedupe_window ({:.1} days): it cannot be told apart from a duplicate",
            self.applied_to.to_rfc3339(),
            self.cfg.dedupe_window.as_secs_f64() / 86_400.0,
        )
    }

    /// Remembers an applied event's key, first dropping what fell out of
    /// the window, and keeps the state's size estimate up to date.
    fn remember(&mut self, key: u64, at: EventTime) {
        self.seen.expire(self.applied_to);
        self.seen.insert(key, at);
        self.sync_sizes();
    }

    /// Tells the state the bytes the processor holds for it (the dedupe
    /// memory and the timers), for its size estimate: after either changes.
    pub(super) fn sync_sizes(&self) {
        self.state
            .set_processor_bytes(self.seen.approx_bytes() + self.timers.approx_bytes() + self.bookkeeping_bytes());
    }

    /// What the processor keeps besides the dedupe memory and the timers
    /// that grows with the events: the identity ops the next checkpoint
    /// writes (a million or more between two checkpoints at the bench's
    /// rates), and, with scale-out, where merged journeys went (`moves`,
    /// one entry a merge, kept for a window) and the journeys' applied keys
    /// (the map and every key, `applied.rs`); and the events waiting for
    /// the watermark.
    fn bookkeeping_bytes(&self) -> usize {
        self.identity_log.approx_bytes()
            + self.moves.approx_bytes()
            + self.applied.as_ref().map_or(0, applied::AppliedKeys::approx_bytes)
            + self.pending_bytes
    }

    /// Remembered event keys (the dedupe memory).
    pub fn dedupe_keys(&self) -> usize {
        self.seen.len()
    }

    pub fn pending_timers(&self) -> usize {
        self.timers.len()
    }

    /// Applies one event now. One process (`resolved: None`): the identity
    /// step (stitch) then the journey step. Scale-out (`Some`): the event's
    /// evidence was already folded from the identity log
    /// ([`Processor::fold_evidence`]); only the journey step runs, on the
    /// profile the graph holds its anchor in now.
    fn apply(&mut self, ev: &ChannelEvent, resolved: Option<&Resolved>, source: u32) -> Result<Processed, StitchError> {
        let dedupe = dedupe_key(ev);
        if self.seen.contains(dedupe) {
            return Ok(Processed {
                channel: Some(ev.channel),
                duplicate: true,
                ..Processed::default()
            });
        }
        if self.too_late(ev) {
            return Ok(Processed {
                channel: Some(ev.channel),
                too_late: true,
                ..Processed::default()
            });
        }
        let stepped = match resolved {
            None => self.identity_step(ev)?,
            Some(r) => match self.current(r) {
                Some((one_id, anchor)) if !self.owns(&one_id) => {
                    // Scale-out: merged meanwhile into a profile another
                    // process holds; the caller sends it there.
                    return Ok(Processed {
                        channel: Some(ev.channel),
                        forward: Some(Box::new((ev.clone(), Resolved { one_id, anchor }, source))),
                        ..Processed::default()
                    });
                }
                Some((one_id, anchor)) => Some((
                    Processed {
                        channel: Some(ev.channel),
                        one_id: Some(one_id.clone()),
                        ..Processed::default()
                    },
                    one_id,
                    anchor,
                )),
                // Forgotten (or dissolved) since its evidence was folded.
                None => None,
            },
        };
        self.remember(dedupe, ev.occurred_at);
        let Some((mut out, one_id, anchor)) = stepped else {
            // Every identifier was forgotten: nothing is applied.
            return Ok(Processed {
                channel: Some(ev.channel),
                forgotten: true,
                ..Processed::default()
            });
        };
        self.note_applied(&one_id, dedupe, ev.occurred_at);
        self.journey_step(ev, &one_id, &anchor, &mut out);
        Ok(out)
    }

    /// The identity step of one event: stitches it, keeps the ops for the
    /// identity changelog, moves the journeys of profiles it merged away
    /// (announcing each merge). `None`: every identifier was forgotten.
    fn identity_step(&mut self, ev: &ChannelEvent) -> Result<Option<(Processed, OneId, IdKey)>, StitchError> {
        let mut stitch = match self.state.identity.stitch(ev) {
            Ok(s) => s,
            Err(StitchError::Forgotten) => return Ok(None),
            Err(e) => return Err(e),
        };
        self.identity_log.append(&mut stitch.ops);
        let mut out = Processed {
            channel: Some(ev.channel),
            one_id: Some(stitch.one_id.clone()),
            rejected: stitch.rejected.clone(),
            shared_devices: stitch.shared.len(),
            links_dropped: stitch.dropped,
            rebuilt: stitch.rebuilt,
            ..Processed::default()
        };
        self.merge_journeys(ev, &stitch, &mut out);
        Ok(Some((out, stitch.one_id, stitch.anchor)))
    }

    /// The journey step of one event whose profile is `one_id` (reached
    /// through `anchor`): the journey, churn, the decision, the timers.
    fn journey_step(&mut self, ev: &ChannelEvent, one_id: &OneId, anchor: &IdKey, out: &mut Processed) {
        let trigger = TriggerRef::event(&ev.event_id);
        let mut taken = self.take_journey(one_id).unwrap_or_default();
        // Copied only when a checkpoint still holds it (see `State`).
        let journey = Arc::make_mut(&mut taken);
        let revenue_before = journey.revenue;
        let value_before = ValueKey::of(journey);
        let transitions = journey.apply(ev);
        self.value.update(value_before, ValueKey::of(journey));
        self.label_activity(journey, ev.occurred_at);
        self.conversions(journey, &transitions, ev.occurred_at);
        if journey.revenue != revenue_before {
            self.tiers.remove(revenue_before);
            self.tiers.add(journey.revenue);
        }
        self.arm(journey, &transitions, ev.occurred_at, anchor, one_id);
        let triggers = triggers_of(&transitions);
        self.evaluate(one_id, journey, &triggers, ev.occurred_at, &trigger, &mut out.outputs);
        self.arm_label(anchor, one_id);
        self.put_journey(one_id.clone(), taken);

        out.suppressed = std::mem::take(&mut self.suppressed);
    }

    /// Moves the journeys of profiles the stitch merged away into their
    /// survivors, and announces each merge.
    fn merge_journeys(&mut self, ev: &ChannelEvent, stitch: &Stitch, out: &mut Processed) {
        for moved in &stitch.moved {
            if self.keep_moves {
                let kept_by = ev.occurred_at.max(self.applied_to).0;
                self.moves.insert(moved.from.clone(), moved.to.clone(), kept_by);
                self.moved_since_scan.insert(moved.from.clone());
            }
            let gone = self.remove_journey(&moved.from);
            let (Some(to), Some(via)) = (&moved.to, &moved.via) else {
                // None of its identifiers is in a profile any more.
                if let Some(gone) = gone {
                    self.tiers.remove(gone.revenue);
                    self.value.update(ValueKey::of(&gone), None);
                }
                continue;
            };
            out.merges += 1;
            if let Some(gone) = &gone {
                self.tiers.remove(gone.revenue);
                self.value.update(ValueKey::of(gone), None);
            }
            if !self.owns(to) {
                // Scale-out: the survivor's journey lives on another
                // process (see `owner.rs`).
                self.hand_over(&moved.from, to, via, gone);
            } else {
                self.move_applied(&moved.from, to);
                if let Some(gone) = gone {
                    // Scale-out: `from`'s changelog record may outlive this
                    // merge (its partition moved before a checkpoint
                    // tombstoned it); restored, it comes back as a handover
                    // of `from`, already absorbed here.
                    if self.applied.is_some() {
                        self.mark_handed_over(to, &moved.from, gone.last_seen);
                    }
                    self.absorb_into(to, Arc::unwrap_or_clone(gone));
                }
            }
            out.outputs.push(Output::Identity(IdentityChange {
                change: "merge",
                one_id: to.clone(),
                merged_one_ids: vec![moved.from.clone()],
                link: Some(LinkRef {
                    namespace: self.state.identity.namespaces().name(via.ns()).to_string(),
                    value: via.value().to_string(),
                }),
                event_id: Some(ev.event_id.clone()),
                at: ev.occurred_at,
            }));
        }
    }

    /// Forgets the profile `key` belongs to (erasure): its identifiers,
    /// journey, contact history and timers go, and its identifiers are
    /// suppressed so no later or replayed event brings them back. Returns the
    /// `identity-changes` notice and the erasure record (the audit, and what a
    /// rebuild installs first); nothing when no profile holds `key`.
    pub fn forget(&mut self, key: &IdKey, request: ErasureRequest) -> Vec<Output> {
        let Some((op, gone)) = self.state.identity.forget(key) else {
            return Vec::new();
        };
        self.identity_log.push(op);
        self.take_applied(&gone.one_id);
        if let Some(j) = self.remove_journey(&gone.one_id) {
            self.tiers.remove(j.revenue);
            self.value.update(ValueKey::of(&j), None);
        }
        for (_, home) in self.take_timers(|k| gone.ids.contains(k)) {
            self.state.touched(&home);
        }
        self.sync_sizes();
        let at = if self.applied_to == EventTime::MIN {
            EventTime(0)
        } else {
            self.applied_to
        };
        let names = self.state.identity.namespaces();
        let suppressed = gone
            .suppressed
            .iter()
            .map(|s| SuppressedRef {
                namespace: names.name(s.ns).to_string(),
                entry: hex::encode(s.entry),
            })
            .collect();
        vec![
            Output::Identity(IdentityChange {
                change: "forget",
                one_id: gone.one_id.clone(),
                merged_one_ids: Vec::new(),
                link: None,
                event_id: None,
                at,
            }),
            Output::Erasure(Erasure {
                one_id: gone.one_id,
                suppressed,
                request,
            }),
        ]
    }

    /// Installs the suppression entries of earlier erasures (read back from
    /// the erasure topic at start, before any input); returns how many were
    /// new. Idempotent.
    pub fn install_suppressions(&mut self, entries: Vec<[u8; 16]>) -> usize {
        let before = self.state.identity.suppressed_count();
        self.state
            .identity
            .apply(&crate::identity::IdentityOp::Suppress { entries });
        self.state.identity.suppressed_count() - before
    }

    /// Drops the detail (cart, visit and complaint history, contact history,
    /// recent decisions) of journeys with no event for `after` of event time
    /// before what was applied; identity links, totals and the churn band
    /// stay. Returns how many journeys lost detail.
    pub fn evict_journeys(&mut self, after: Duration) -> usize {
        let Some(cutoff) = self.eviction_cutoff(after) else {
            return 0;
        };
        let listed = self.state.eviction_candidates(cutoff);
        self.evict_listed(&listed, cutoff)
    }

    /// The last event time a journey may have to lose its detail: `after`
    /// before what was applied (`None`: nothing applied yet).
    pub fn eviction_cutoff(&self, after: Duration) -> Option<EventTime> {
        (self.applied_to != EventTime::MIN).then(|| self.applied_to.minus(after))
    }

    /// Drops the detail of the `listed` journeys that still have no event
    /// after `cutoff` and still keep detail: the list comes from
    /// [`State::eviction_candidates`], which any thread may walk while the
    /// writer goes on, so each one is checked again here. Returns how many
    /// lost detail (writer only; the walk is the long part, this is one
    /// lookup per listed journey).
    pub fn evict_listed(&mut self, listed: &[OneId], cutoff: EventTime) -> usize {
        if self.capture.is_some() {
            for one_id in listed {
                self.before_write(one_id);
            }
        }
        self.state
            .update_listed(listed, |j| j.evictable(cutoff), Journey::compact)
    }
}

/// The dedupe set's key of an event: the first 8 bytes (big-endian) of
/// SHA-256 over `onejourney/dedupe/v2\0`, the channel label, `\0` and the
/// event id. Spelled out because the set is saved in snapshots: the key must
/// not change between builds (std's `DefaultHasher` does not promise that).
pub fn dedupe_key(ev: &ChannelEvent) -> u64 {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"onejourney/dedupe/v2\0");
    h.update(ev.channel.label().as_bytes());
    h.update(b"\0");
    h.update(ev.event_id.as_bytes());
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

#[cfg(test)]
mod dedupe_tests {
    use serde_json::json;

    use super::dedupe_key;
    use crate::testkit::web;

    /// Snapshots written by one build are read by the next: the key of an
    /// event is pinned here, and changing it means a new snapshot version.
    #[test]
    fn the_dedupe_key_is_pinned() {
        let ev = web("w-1", 0, json!({"cookie_id": "c-1"}), "page_view", json!({}));
        // python3: int.from_bytes(hashlib.sha256(b"onejourney/dedupe/v2\0web\0w-1").digest()[:8], "big")
        assert_eq!(dedupe_key(&ev), 15_333_662_994_088_652_002);
    }
}
