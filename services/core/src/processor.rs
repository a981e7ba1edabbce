//! The pure pipeline: one validated event in, the outputs it causes out.
//!
//! In: [`ChannelEvent`]s in arrival order. Out: [`Processed`], holding the
//! [`Output`]s to publish (identity changes, churn-band changes, next best
//! actions) and what happened, for metrics.
//!
//! Order of work for one event: dedupe on `(channel, event_id)` -> stitch ->
//! merge the journeys of merged profiles -> apply the event to the journey ->
//! churn -> decide -> schedule timers -> advance the watermark and fire the
//! timers that are due.
//!
//! Invariants: time is event time only (the watermark is the largest event
//! time seen minus the allowed lateness); journey state is keyed by One ID;
//! timers are keyed by an identifier, so a timer follows its profile through
//! merges; one writer.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use crate::hash::{DashMap, HashMap, HashSet};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::decide::propensity::{Outcome, Propensities};
use crate::decide::{self, churn, ContactChannel, DecideConfig, Reach, Suppressed, Trigger};
use crate::event::{Channel, ChannelEvent};
use crate::identity::{IdentityGraph, OneId, Profile, Rejection, Rule, StitchError};
use crate::ids::{IdKey, Namespaces};
use crate::journey::{Band, Journey, RecentAction, Tier, Transition};
use crate::output::{ChurnRisk, IdentityChange, LinkRef, NextBestAction, Output, TriggerRef};
use crate::time::EventTime;

#[cfg(test)]
mod tests;

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
}

/// State shared with readers (the lookup API): the identity graph and the
/// journeys, both keyed for lock-free reads.
pub struct State {
    pub identity: IdentityGraph,
    pub journeys: DashMap<OneId, Box<Journey>>,
}

impl State {
    pub fn new(namespaces: Arc<Namespaces>) -> Self {
        State {
            identity: IdentityGraph::new(namespaces),
            journeys: DashMap::default(),
        }
    }

    /// An estimate of the bytes the state holds: the sizes of its structures
    /// and strings plus a fixed per-entry overhead for the hash maps. It walks
    /// every entry, so call it at scrape time, not per event.
    pub fn approx_bytes(&self) -> usize {
        use std::mem::size_of;
        const MAP_ENTRY: usize = 16;
        let identity = self.identity.approx_bytes();
        let journeys: usize = self
            .journeys
            .iter()
            .map(|j| {
                let cart: usize = j
                    .cart
                    .items
                    .keys()
                    .map(|sku| sku.len() + size_of::<crate::journey::CartLine>() + 48)
                    .sum();
                let actions: usize = j.last_action.keys().map(|a| a.len() + 48).sum();
                let recent: usize = j
                    .recent_actions
                    .iter()
                    .map(|r| {
                        size_of::<RecentAction>()
                            + r.action_id.len()
                            + r.action.len()
                            + r.reason.len()
                            + r.channel.len()
                    })
                    .sum();
                size_of::<Journey>() + j.key().len() + MAP_ENTRY + cart + actions + recent + j.history_bytes()
            })
            .sum();
        identity + journeys
    }

    /// The profile an identifier belongs to, as the lookup API shows it.
    pub fn view(&self, key: &IdKey) -> Option<ProfileView> {
        self.view_one_id(&self.identity.one_id_of(key)?)
    }

    /// Why the identifiers of `key`'s profile are one profile: every link,
    /// in the order they were made, with the event and rule that made it.
    pub fn explain(&self, key: &IdKey) -> Option<ExplainView> {
        let one_id = self.identity.one_id_of(key)?;
        let ns = self.identity.namespaces();
        let id = |k: &IdKey| IdentifierView {
            namespace: ns.name(k.ns).to_string(),
            value: k.value.to_string(),
        };
        self.identity.with_profile(&one_id, |p| ExplainView {
            one_id: p.one_id.clone(),
            links: p
                .links
                .iter()
                .map(|l| LinkView {
                    from: id(&l.from),
                    to: l.to.as_ref().map(id),
                    event_id: l.provenance.event_id.to_string(),
                    channel: l.provenance.channel.label(),
                    at: l.provenance.at,
                    rule: l.provenance.rule,
                })
                .collect(),
        })
    }

    /// A profile by its One ID.
    pub fn view_one_id(&self, one_id: &str) -> Option<ProfileView> {
        let one_id: OneId = self.identity.profile(one_id)?.one_id;
        let profile = self.identity.profile(&one_id)?;
        let journey = self
            .journeys
            .get(&one_id)
            .map(|j| j.value().clone())
            .unwrap_or_default();
        let ns = self.identity.namespaces();
        let identifiers = profile
            .ids
            .iter()
            .chain(&profile.households)
            .map(|k| IdentifierView {
                namespace: ns.name(k.ns).to_string(),
                value: k.value.to_string(),
            })
            .collect();
        Some(ProfileView {
            one_id,
            identifiers,
            journey: JourneyView::of(&journey),
            churn: ChurnView {
                score: journey.churn.score,
                band: journey.churn.band,
                factors: journey.churn.factors.clone(),
            },
            recent_actions: journey.recent_actions.iter().cloned().collect(),
        })
    }
}

/// The body of `GET /v1/profiles/{namespace}/{value}/explain`.
#[derive(Clone, Debug, Serialize)]
pub struct ExplainView {
    pub one_id: OneId,
    pub links: Vec<LinkView>,
}

#[derive(Clone, Debug, Serialize)]
pub struct LinkView {
    pub from: IdentifierView,
    pub to: Option<IdentifierView>,
    pub event_id: String,
    pub channel: &'static str,
    pub at: EventTime,
    pub rule: Rule,
}

#[derive(Clone, Debug, Serialize)]
pub struct IdentifierView {
    pub namespace: String,
    pub value: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct JourneyView {
    pub first_seen: Option<EventTime>,
    pub last_seen: Option<EventTime>,
    pub stage: crate::journey::Stage,
    pub channels_touched: Vec<&'static str>,
    #[serde(flatten)]
    pub state: Journey,
}

impl JourneyView {
    fn of(j: &Journey) -> Self {
        JourneyView {
            first_seen: j.first_seen,
            last_seen: j.last_seen,
            stage: j.stage(),
            channels_touched: j.channels_touched(),
            state: Journey {
                recent_actions: Default::default(),
                churn: Default::default(),
                ..j.clone()
            },
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct ChurnView {
    pub score: f64,
    pub band: Option<Band>,
    pub factors: Vec<crate::journey::Factor>,
}

/// The format version of [`CoreSnapshot`].
pub const SNAPSHOT_VERSION: u32 = 1;

/// Serialises like [`CoreSnapshot`], from the live state (see [`Processor::snapshot`]).
pub struct CoreSnapshotRef<'a> {
    p: &'a Processor,
}

impl Serialize for CoreSnapshotRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let p = self.p;
        let mut st = s.serialize_struct("CoreSnapshot", 10)?;
        st.serialize_field("version", &SNAPSHOT_VERSION)?;
        st.serialize_field("namespaces", &p.state.identity.namespaces().names())?;
        st.serialize_field("identity", &p.state.identity.snapshot())?;
        st.serialize_field("journeys", &crate::snapshot::DashEntries(&p.state.journeys))?;
        st.serialize_field("seen", &p.seen)?;
        st.serialize_field("partitions", &crate::snapshot::Pairs(&p.clocks_without_pending()))?;
        st.serialize_field("timers", &p.timers)?;
        st.serialize_field("applied_to", &p.applied_to)?;
        st.serialize_field("tiers", &p.tiers)?;
        st.serialize_field("propensities", &p.propensities)?;
        st.end()
    }
}

/// A state snapshot as read back.
#[derive(serde::Deserialize)]
pub struct CoreSnapshot {
    version: u32,
    namespaces: Vec<String>,
    identity: crate::identity::IdentitySnapshot,
    journeys: Vec<(OneId, Journey)>,
    seen: HashSet<u64>,
    partitions: Vec<(u32, PartitionClock)>,
    timers: BTreeSet<(EventTime, TimerKind, IdKey)>,
    applied_to: EventTime,
    tiers: ValueTiers,
    propensities: Propensities,
}

impl CoreSnapshot {
    pub fn profiles(&self) -> usize {
        self.identity.profile_count()
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RestoreError {
    #[error("snapshot format version {0} is not {SNAPSHOT_VERSION}, the one this build reads")]
    Version(u32),
    #[error(
        "the identifier namespace table changed since the snapshot (snapshot: {snapshot}; configured: {configured}); \
         restore the table, or move the state directory away to rebuild state from the input topics"
    )]
    Namespaces { snapshot: String, configured: String },
    #[error("state is not empty: a snapshot is restored into a new processor only")]
    NotEmpty,
}

/// The body of `GET /v1/profiles/{namespace}/{value}`.
#[derive(Clone, Debug, Serialize)]
pub struct ProfileView {
    pub one_id: OneId,
    pub identifiers: Vec<IdentifierView>,
    pub journey: JourneyView,
    pub churn: ChurnView,
    pub recent_actions: Vec<RecentAction>,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
pub enum TimerKind {
    Cart,
    Browse,
    Quiet,
}

impl TimerKind {
    fn label(self) -> &'static str {
        match self {
            TimerKind::Cart => "cart_abandonment",
            TimerKind::Browse => "browse_abandonment",
            TimerKind::Quiet => "inactivity",
        }
    }
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
    /// Device links the per-profile caps dropped.
    pub links_dropped: usize,
    /// The event sorted before identity evidence already applied: its
    /// identity component was folded again.
    pub rebuilt: bool,
    pub timers_fired: usize,
    /// Actions whose facts held but that policy held back, with why.
    pub suppressed: Vec<(String, Suppressed)>,
}

/// An `action-outcomes` record.
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
pub struct ActionOutcome {
    pub action_id: String,
    pub one_id: String,
    pub outcome: Outcome,
    pub at: String,
}

/// What an outcome did.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum OutcomeEffect {
    /// Counted toward the action's learned propensity.
    Learned,
    /// Already counted for this decision: nothing changed.
    Repeated,
    /// No recent decision with that id for that One ID (too old, or forgotten).
    Unknown,
}

/// What the watermark released: one buffered event applied (`seq` is the
/// number the caller gave it) or, with `seq: None`, timers that came due.
#[derive(Debug)]
pub struct Released {
    pub seq: Option<u64>,
    pub result: Result<Processed, StitchError>,
}

/// An input partition's progress.
#[derive(Copy, Clone, Debug, Serialize, serde::Deserialize)]
pub struct PartitionClock {
    /// The largest event time seen on it.
    max: EventTime,
    /// When its last message arrived (caller's processing time, ms).
    last_arrival_ms: u64,
    /// The broker holds messages of this partition not yet offered: it is
    /// not idle, only behind (see [`Processor::set_backlog`]).
    #[serde(default)]
    backlog: bool,
}

/// Buffered events in the order they are applied: event time, then channel
/// and event id, then arrival (only duplicates tie that far).
type PendingKey = (EventTime, Channel, String, u64);

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
    seen: HashSet<u64>,
    partitions: HashMap<u32, PartitionClock>,
    /// With the partition each came from.
    pending: BTreeMap<PendingKey, (u32, ChannelEvent)>,
    timers: BTreeSet<(EventTime, TimerKind, IdKey)>,
    /// Everything at or before this event time has been applied.
    applied_to: EventTime,
    suppressed: Vec<(String, Suppressed)>,
    tiers: ValueTiers,
    propensities: Propensities,
    next_seq: u64,
}

impl Processor {
    pub fn new(cfg: Arc<CoreConfig>, state: Arc<State>) -> Self {
        Processor {
            cfg,
            state,
            seen: HashSet::default(),
            partitions: HashMap::default(),
            pending: BTreeMap::new(),
            timers: BTreeSet::new(),
            applied_to: EventTime::MIN,
            suppressed: Vec::new(),
            tiers: ValueTiers::default(),
            propensities: Propensities::default(),
            next_seq: 0,
        }
    }

    pub fn state(&self) -> &Arc<State> {
        &self.state
    }

    pub fn pending_timers(&self) -> usize {
        self.timers.len()
    }

    /// Events buffered until the watermark passes them.
    pub fn pending_events(&self) -> usize {
        self.pending.len()
    }

    /// The partition clocks as if the buffered events had not arrived: a
    /// snapshot leaves them out (they are read again after a restore), so
    /// their partitions must not count them as seen, or the watermark would
    /// pass them before they come back.
    fn clocks_without_pending(&self) -> HashMap<u32, PartitionClock> {
        let mut clocks = self.partitions.clone();
        for ((at, ..), (partition, _)) in &self.pending {
            if let Some(c) = clocks.get_mut(partition) {
                c.max = c.max.min(EventTime(at.0.saturating_sub(1)));
            }
        }
        clocks
    }

    /// The caller's numbers of the buffered events.
    pub fn pending_seqs(&self) -> impl Iterator<Item = u64> + '_ {
        self.pending.keys().map(|k| k.3)
    }

    /// The watermark of one input partition: its largest event time minus the
    /// allowed lateness.
    pub fn partition_watermark(&self, partition: u32) -> EventTime {
        self.partitions
            .get(&partition)
            .map_or(EventTime::MIN, |p| p.max.minus(self.cfg.allowed_lateness))
    }

    /// The watermark at processing time `now_ms`: the smallest partition
    /// watermark among partitions heard from within `idle_after`; when every
    /// partition is idle, the largest event time seen (nothing is held back).
    pub fn watermark(&self, now_ms: u64) -> Option<EventTime> {
        let idle_ms = u64::try_from(self.cfg.idle_after.as_millis()).unwrap_or(u64::MAX);
        let active = self
            .partitions
            .values()
            .filter(|p| p.backlog || now_ms.saturating_sub(p.last_arrival_ms) < idle_ms)
            .map(|p| p.max.minus(self.cfg.allowed_lateness))
            .min();
        active.or_else(|| self.partitions.values().map(|p| p.max).max())
    }

    /// Tells whether the broker holds messages of `partition` that were not
    /// offered yet. A partition with a backlog holds the watermark back however
    /// long it stays silent: under load a consumer's prefetch queue can starve
    /// one partition for longer than `idle_after`, and its events would then
    /// arrive late.
    pub fn set_backlog(&mut self, partition: u32, backlog: bool) {
        if let Some(p) = self.partitions.get_mut(&partition) {
            p.backlog = backlog;
        }
    }

    /// Keeps the clocks of these input partitions only: partitions no longer
    /// assigned to this process must not hold the watermark back.
    pub fn retain_partitions(&mut self, assigned: &HashSet<u32>) {
        self.partitions.retain(|p, _| assigned.contains(p));
    }

    /// Declares an input partition (when it is assigned): until it delivers an
    /// event or stays silent for `idle_after`, it holds the watermark back, so
    /// a partition consumed late cannot be overtaken by the others.
    pub fn register_partition(&mut self, partition: u32, now_ms: u64) {
        let clock = self.partitions.entry(partition).or_insert(PartitionClock {
            max: EventTime::MIN,
            last_arrival_ms: now_ms,
            backlog: false,
        });
        // A re-assigned partition gets a fresh grace period.
        clock.last_arrival_ms = clock.last_arrival_ms.max(now_ms);
    }

    /// Buffers one event that arrived on input `partition` at processing
    /// time `now_ms`, and applies whatever the watermark now releases. `seq`
    /// is the caller's number for the event, returned with its result.
    pub fn offer(&mut self, ev: ChannelEvent, partition: u32, seq: u64, now_ms: u64) -> Vec<Released> {
        // After a pause in which every partition went idle, a new burst
        // usually reaches all of them: give each a fresh grace period, so the
        // first partition to deliver does not run ahead of the others.
        let idle_ms = u64::try_from(self.cfg.idle_after.as_millis()).unwrap_or(u64::MAX);
        if self
            .partitions
            .values()
            .all(|p| now_ms.saturating_sub(p.last_arrival_ms) >= idle_ms)
        {
            for p in self.partitions.values_mut() {
                p.last_arrival_ms = now_ms;
            }
        }
        let clock = self.partitions.entry(partition).or_insert(PartitionClock {
            max: ev.occurred_at,
            last_arrival_ms: now_ms,
            backlog: false,
        });
        clock.max = clock.max.max(ev.occurred_at);
        clock.last_arrival_ms = clock.last_arrival_ms.max(now_ms);
        let mut out = Vec::new();
        if ev.occurred_at < self.applied_to {
            let result = self.apply(&ev).map(|mut p| {
                p.late = true;
                p
            });
            out.push(Released { seq: Some(seq), result });
        } else {
            let key = (ev.occurred_at, ev.channel, ev.event_id.clone(), seq);
            self.pending.insert(key, (partition, ev));
        }
        out.extend(self.release(now_ms));
        out
    }

    /// Applies what the watermark releases at processing time `now_ms`
    /// without a new event: partitions may have gone idle.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Released> {
        self.release(now_ms)
    }

    /// Applies buffered events and due timers up to the watermark, in event-time order.
    fn release(&mut self, now_ms: u64) -> Vec<Released> {
        let Some(wm) = self.watermark(now_ms) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut timer_outputs = Vec::new();
        let mut fired = 0;
        loop {
            let next_event = self.pending.first_key_value().map(|(k, _)| k.0).filter(|t| *t <= wm);
            let next_timer = self.timers.first().map(|t| t.0).filter(|t| *t <= wm);
            match (next_event, next_timer) {
                (None, None) => break,
                // A timer strictly before the next event fires first; on a tie the event goes first.
                (Some(te), Some(tt)) if tt < te => {
                    fired += self.fire_next(&mut timer_outputs);
                }
                (None, Some(_)) => {
                    fired += self.fire_next(&mut timer_outputs);
                }
                (Some(_), _) => {
                    if !timer_outputs.is_empty() || fired > 0 {
                        out.push(self.timer_release(std::mem::take(&mut timer_outputs), fired));
                        fired = 0;
                    }
                    let Some(((at, _, _, seq), (_, ev))) = self.pending.pop_first() else {
                        break;
                    };
                    self.applied_to = self.applied_to.max(at);
                    out.push(Released {
                        seq: Some(seq),
                        result: self.apply(&ev),
                    });
                }
            }
        }
        if !timer_outputs.is_empty() || fired > 0 {
            out.push(self.timer_release(timer_outputs, fired));
        }
        self.applied_to = self.applied_to.max(wm);
        out
    }

    fn timer_release(&mut self, outputs: Vec<Output>, fired: usize) -> Released {
        Released {
            seq: None,
            result: Ok(Processed {
                outputs,
                timers_fired: fired,
                suppressed: std::mem::take(&mut self.suppressed),
                ..Processed::default()
            }),
        }
    }

    /// Offers `ev` and applies what that releases at once, as one result: the
    /// event's own outcome plus every output released with it. For callers
    /// without processing time (tests, tools): partitions never go idle.
    pub fn process(&mut self, ev: &ChannelEvent, partition: u32) -> Result<Processed, StitchError> {
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut merged = Processed::default();
        let mut own = None;
        for r in self.offer(ev.clone(), partition, seq, 0) {
            let p = r.result?;
            if r.seq == Some(seq) {
                own = Some((p.one_id.clone(), p.duplicate, p.late, p.merges, p.rejected.clone()));
            }
            merged.outputs.extend(p.outputs);
            merged.timers_fired += p.timers_fired;
            merged.suppressed.extend(p.suppressed);
        }
        if let Some((one_id, duplicate, late, merges, rejected)) = own {
            merged.one_id = one_id;
            merged.duplicate = duplicate;
            merged.late = late;
            merged.merges = merges;
            merged.rejected = rejected;
        }
        Ok(merged)
    }

    /// Applies one event now.
    fn apply(&mut self, ev: &ChannelEvent) -> Result<Processed, StitchError> {
        let dedupe = dedupe_key(ev);
        if self.seen.contains(&dedupe) {
            return Ok(Processed {
                channel: Some(ev.channel),
                duplicate: true,
                ..Processed::default()
            });
        }
        let stitch = match self.state.identity.stitch(ev) {
            Ok(s) => s,
            Err(StitchError::Forgotten) => {
                self.seen.insert(dedupe);
                return Ok(Processed {
                    channel: Some(ev.channel),
                    forgotten: true,
                    ..Processed::default()
                });
            }
            Err(e) => return Err(e),
        };
        self.seen.insert(dedupe);
        let mut out = Processed {
            channel: Some(ev.channel),
            one_id: Some(stitch.one_id.clone()),
            rejected: stitch.rejected.clone(),
            shared_devices: stitch.shared.len(),
            links_dropped: stitch.dropped,
            rebuilt: stitch.rebuilt,
            ..Processed::default()
        };
        let one_id = &stitch.one_id;
        for moved in &stitch.moved {
            let gone = self.state.journeys.remove(&moved.from).map(|(_, j)| j);
            let (Some(to), Some(via)) = (&moved.to, &moved.via) else {
                // None of its identifiers is in a profile any more.
                if let Some(gone) = gone {
                    self.tiers.remove(gone.revenue);
                }
                continue;
            };
            out.merges += 1;
            if let Some(gone) = gone {
                self.tiers.remove(gone.revenue);
                let mut survivor = self.state.journeys.remove(to).map(|(_, j)| j).unwrap_or_default();
                self.tiers.remove(survivor.revenue);
                survivor.absorb(*gone);
                self.tiers.add(survivor.revenue);
                self.state.journeys.insert(to.clone(), survivor);
            }
            out.outputs.push(Output::Identity(IdentityChange {
                change: "merge",
                one_id: to.clone(),
                merged_one_ids: vec![moved.from.clone()],
                link: Some(LinkRef {
                    namespace: self.state.identity.namespaces().name(via.ns).to_string(),
                    value: via.value.to_string(),
                }),
                event_id: Some(ev.event_id.clone()),
                at: ev.occurred_at,
            }));
        }

        let trigger = TriggerRef::event(&ev.event_id);
        let mut journey = self.state.journeys.remove(one_id).map(|(_, j)| j).unwrap_or_default();
        let revenue_before = journey.revenue;
        let transitions = journey.apply(ev);
        if journey.revenue != revenue_before {
            self.tiers.remove(revenue_before);
            self.tiers.add(journey.revenue);
        }
        let decide = &self.cfg.decide;
        let mut triggers = Vec::new();
        let mut arm = Vec::new();
        for t in &transitions {
            match t {
                Transition::Purchased { .. } => triggers.push(Trigger::Purchased),
                Transition::ServiceIssue { .. } => triggers.push(Trigger::ServiceIssue),
                Transition::ChannelSwitch { .. } => triggers.push(Trigger::ChannelSwitch),
                Transition::CartChanged { .. } if !journey.cart.is_empty() => {
                    if let Some(updated) = journey.cart.updated_at {
                        arm.push((updated.plus(decide.cart_abandon_after), TimerKind::Cart));
                    }
                }
                Transition::ProductViewed { at } => {
                    arm.push((at.plus(decide.browse_abandon_after), TimerKind::Browse));
                }
                _ => {}
            }
        }
        // One quiet check per profile: a live one (due at or after this
        // event) re-arms itself when it finds the customer active.
        if journey.last_seen == Some(ev.occurred_at) && journey.quiet_due.is_none_or(|d| d < ev.occurred_at) {
            let due = ev.occurred_at.plus(decide.quiet_after);
            journey.quiet_due = Some(due);
            arm.push((due, TimerKind::Quiet));
        }
        for (due, kind) in arm {
            self.timers.insert((due, kind, stitch.anchor.clone()));
        }
        self.evaluate(
            one_id,
            &mut journey,
            &triggers,
            ev.occurred_at,
            &trigger,
            &mut out.outputs,
        );
        self.state.journeys.insert(one_id.clone(), journey);

        out.suppressed = std::mem::take(&mut self.suppressed);
        Ok(out)
    }

    /// Forgets the profile `key` belongs to (erasure): its identifiers,
    /// journey, contact history and timers go, and its identifiers are
    /// suppressed so no later or replayed event brings them back. Returns the
    /// `identity-changes` notice; `None` when no profile holds `key`.
    pub fn forget(&mut self, key: &IdKey) -> Option<Output> {
        let (_, gone) = self.state.identity.forget(key)?;
        if let Some((_, j)) = self.state.journeys.remove(&gone.one_id) {
            self.tiers.remove(j.revenue);
        }
        self.timers.retain(|(_, _, k)| !gone.ids.contains(k));
        let at = if self.applied_to == EventTime::MIN {
            EventTime(0)
        } else {
            self.applied_to
        };
        Some(Output::Identity(IdentityChange {
            change: "forget",
            one_id: gone.one_id,
            merged_one_ids: Vec::new(),
            link: None,
            event_id: None,
            at,
        }))
    }

    /// Everything the processor and its state hold except events waiting for
    /// the watermark, to serialise as a [`CoreSnapshot`]. The caller resumes
    /// each input partition at its first message not fully processed, so the
    /// waiting events are read again (and the applied ones after them are
    /// recognised as duplicates).
    pub fn snapshot(&self) -> CoreSnapshotRef<'_> {
        CoreSnapshotRef { p: self }
    }

    /// Loads a snapshot into this processor, which must be new (empty state).
    /// `now_ms` starts every partition's idle clock afresh.
    pub fn restore(&mut self, snap: CoreSnapshot, now_ms: u64) -> Result<(), RestoreError> {
        if snap.version != SNAPSHOT_VERSION {
            return Err(RestoreError::Version(snap.version));
        }
        let names = self.state.identity.namespaces().names();
        if snap.namespaces != names {
            return Err(RestoreError::Namespaces {
                snapshot: snap.namespaces.join(","),
                configured: names.join(","),
            });
        }
        if self.state.identity.profile_count() > 0 || !self.state.journeys.is_empty() || !self.pending.is_empty() {
            return Err(RestoreError::NotEmpty);
        }
        self.state.identity.restore(snap.identity);
        for (one_id, j) in snap.journeys {
            self.state.journeys.insert(one_id, Box::new(j));
        }
        self.seen = snap.seen;
        self.partitions = snap
            .partitions
            .into_iter()
            .map(|(p, c)| {
                (
                    p,
                    // Behind until the caller reports otherwise (`set_backlog`):
                    // a restored partition must not go idle while the consumer
                    // is still joining its group, or the watermark would jump
                    // past everything it has yet to re-read.
                    PartitionClock {
                        last_arrival_ms: now_ms,
                        backlog: true,
                        ..c
                    },
                )
            })
            .collect();
        self.timers = snap.timers;
        self.applied_to = snap.applied_to;
        self.tiers = snap.tiers;
        self.propensities = snap.propensities;
        Ok(())
    }

    /// Drops the detail (cart, visit and complaint history, contact history,
    /// recent decisions) of journeys with no event for `after` of event time
    /// before what was applied; identity links, totals and the churn band
    /// stay. Returns how many journeys lost detail.
    pub fn evict_journeys(&mut self, after: Duration) -> usize {
        if self.applied_to == EventTime::MIN {
            return 0;
        }
        let cutoff = self.applied_to.minus(after);
        let mut n = 0;
        for mut j in self.state.journeys.iter_mut() {
            if j.last_seen.is_some_and(|t| t < cutoff) && j.compact() {
                n += 1;
            }
        }
        n
    }

    /// Learns from an `action-outcomes` record.
    pub fn outcome(&mut self, o: &ActionOutcome) -> OutcomeEffect {
        let Some(mut j) = self.state.journeys.get_mut(o.one_id.as_str()) else {
            return OutcomeEffect::Unknown;
        };
        let Some(r) = j.recent_actions.iter_mut().find(|r| r.action_id == o.action_id) else {
            return OutcomeEffect::Unknown;
        };
        let new_trial = !r.counted_trial;
        let new_response = o.outcome.is_response() && !r.counted_response;
        r.counted_trial = true;
        r.counted_response |= new_response;
        r.outcome = Some(o.outcome);
        let (action, tier) = (r.action.clone(), r.tier);
        if o.outcome == Outcome::Dismissed {
            *j.ignored.entry(action.clone()).or_insert(0) += 1;
        }
        drop(j);
        if !new_trial && !new_response {
            return OutcomeEffect::Repeated;
        }
        self.propensities.record(&action, tier, new_trial, new_response);
        OutcomeEffect::Learned
    }

    /// The learned propensity of `action` for `tier`.
    pub fn propensity(&self, action: &str, tier: Tier) -> Option<f64> {
        let spec = self.cfg.decide.actions.iter().find(|a| a.name == action)?;
        Some(self.propensities.estimate(spec, tier, self.cfg.decide.prior_strength))
    }

    /// Churn, then the next best action, for one journey at `now`.
    fn evaluate(
        &mut self,
        one_id: &OneId,
        j: &mut Journey,
        triggers: &[Trigger],
        now: EventTime,
        trigger: &TriggerRef,
        outputs: &mut Vec<Output>,
    ) {
        let cfg = self.cfg.clone();
        let cfg = &cfg.decide;
        j.tier = self.tiers.tier_of(j.revenue);
        let s = churn::score(&cfg.churn, j, now);
        let band = cfg.churn.band(s.score, j.churn.band);
        let previous = j.churn.band;
        // The first band is reported only when it is not `low`.
        if previous != Some(band) && !(previous.is_none() && band == Band::Low) {
            outputs.push(Output::Churn(ChurnRisk {
                one_id: one_id.clone(),
                score: s.score,
                band,
                previous_band: previous,
                factors: s.factors.clone(),
                trigger: trigger.clone(),
                evaluated_at: now,
            }));
            j.churn.band = Some(band);
        }
        j.churn.score = s.score;
        j.churn.factors = s.factors;
        j.churn.evaluated_at = Some(now);

        if triggers.is_empty() || !cfg.actions.iter().any(|a| triggers.contains(&a.trigger)) {
            return;
        }
        let identity = &self.state.identity;
        let Some(reach) = identity.with_profile(one_id, |p| reach(p, j, identity.namespaces())) else {
            return;
        };
        let tier = j.tier;
        let learned = |a: &decide::ActionSpec| self.propensities.estimate(a, tier, cfg.prior_strength);
        let decision = decide::decide(cfg, j, &reach, triggers, now, &learned);
        self.suppressed.extend(decision.suppressed);
        let Some(choice) = decision.choice else {
            return;
        };
        let trigger_key = match &trigger.event_id {
            Some(id) => format!("event:{id}"),
            None => format!("timer:{}:{}", trigger.timer.unwrap_or(""), now.millis()),
        };
        let action_id = action_id(one_id, &choice.action, &trigger_key);
        j.record_contact(now, choice.channel);
        j.record_action(RecentAction {
            action_id: action_id.clone(),
            action: choice.action.clone(),
            channel: choice.channel.label().to_string(),
            reason: choice.reason.clone(),
            decided_at: now,
            tier,
            outcome: None,
            counted_trial: false,
            counted_response: false,
        });
        outputs.push(Output::Action(NextBestAction {
            action_id,
            one_id: one_id.clone(),
            action: choice.action,
            channel: choice.channel.label(),
            score: choice.score,
            reason: choice.reason,
            factors: choice.factors,
            identifiers: identity
                .with_profile(one_id, |p| addressable(p, identity.namespaces()))
                .unwrap_or_default(),
            trigger: trigger.clone(),
            decided_at: now,
            expires_at: now.plus(choice.expires_after),
        }));
    }

    /// Fires the earliest timer; returns how many fired (0 or 1).
    fn fire_next(&mut self, outputs: &mut Vec<Output>) -> usize {
        let Some((due, kind, key)) = self.timers.pop_first() else {
            return 0;
        };
        self.fire(due, kind, key, outputs);
        1
    }

    /// Runs one timer: re-checks its condition on the journey as it is now
    /// (every event before `due` has been applied) and decides.
    fn fire(&mut self, due: EventTime, kind: TimerKind, key: IdKey, outputs: &mut Vec<Output>) {
        let Some(one_id) = self.state.identity.one_id_of(&key) else {
            return;
        };
        if kind == TimerKind::Quiet
            && self
                .state
                .journeys
                .get(&one_id)
                .is_none_or(|j| j.quiet_due.is_some_and(|d| d != due))
        {
            // A stale check: the profile's live one is due at another time
            // (two profiles merged), or the journey is gone.
            return;
        }
        let Some((_, mut j)) = self.state.journeys.remove(&one_id) else {
            return;
        };
        let cfg = self.cfg.clone();
        let cfg = &cfg.decide;
        let trigger = TriggerRef::timer(kind.label());
        match kind {
            TimerKind::Cart => {
                let idle = j.cart.updated_at.is_some_and(|u| u.plus(cfg.cart_abandon_after) <= due);
                if idle && !j.cart.is_empty() {
                    self.evaluate(&one_id, &mut j, &[Trigger::CartAbandoned], due, &trigger, outputs);
                }
            }
            TimerKind::Browse => {
                let armed_for = j
                    .last_product_view
                    .as_ref()
                    .map(|v| v.at.plus(cfg.browse_abandon_after));
                if armed_for == Some(due) {
                    self.evaluate(&one_id, &mut j, &[Trigger::BrowseAbandoned], due, &trigger, outputs);
                }
            }
            TimerKind::Quiet => {
                let last = j.last_seen.unwrap_or(due);
                let next = if last.plus(cfg.quiet_after) <= due {
                    self.evaluate(&one_id, &mut j, &[Trigger::Lapsed], due, &trigger, outputs);
                    Some(due.plus(cfg.quiet_after)).filter(|n| *n <= last.plus(cfg.quiet_checks_until))
                } else {
                    // Active since it was armed: check again when quiet.
                    Some(last.plus(cfg.quiet_after))
                };
                j.quiet_due = next;
                if let Some(next) = next {
                    self.timers.insert((next, TimerKind::Quiet, key));
                }
            }
        }
        self.state.journeys.insert(one_id, j);
    }
}

/// Customers' revenue in quarter-octave buckets, to place each customer in the
/// A/B/C value tiers: A holds the customers who bring the first 80% of revenue,
/// B the next 15%, C the rest. Thresholds are recomputed every 64 changes.
#[derive(Debug, Default, Serialize, serde::Deserialize)]
pub struct ValueTiers {
    buckets: Vec<(u64, f64)>,
    total: f64,
    a_min: f64,
    b_min: f64,
    /// Changes since the thresholds were last computed.
    changes: u32,
    computed: bool,
}

impl ValueTiers {
    const MAX_BUCKET: usize = 200;

    fn bucket(revenue: f64) -> usize {
        // Bucket b holds revenues in [2^((b-1)/4), 2^(b/4)); revenue <= 1 is bucket 0.
        ((revenue.max(1.0).log2() * 4.0).ceil() as usize).min(Self::MAX_BUCKET)
    }

    fn lower_bound(b: usize) -> f64 {
        if b == 0 {
            0.0
        } else {
            2f64.powf((b as f64 - 1.0) / 4.0)
        }
    }

    fn add(&mut self, revenue: f64) {
        self.shift(revenue, 1.0);
    }

    fn remove(&mut self, revenue: f64) {
        self.shift(revenue, -1.0);
    }

    fn shift(&mut self, revenue: f64, sign: f64) {
        if revenue <= 0.0 {
            return;
        }
        let b = Self::bucket(revenue);
        if self.buckets.len() <= b {
            self.buckets.resize(b + 1, (0, 0.0));
        }
        let slot = &mut self.buckets[b];
        slot.0 = if sign > 0.0 {
            slot.0 + 1
        } else {
            slot.0.saturating_sub(1)
        };
        slot.1 = (slot.1 + sign * revenue).max(0.0);
        self.total = (self.total + sign * revenue).max(0.0);
        self.changes += 1;
        if self.changes >= 64 {
            self.recompute();
        }
    }

    fn recompute(&mut self) {
        self.changes = 0;
        self.computed = true;
        let (mut cum, mut a_min, mut b_min) = (0.0, f64::INFINITY, f64::INFINITY);
        for (b, (_, sum)) in self.buckets.iter().enumerate().rev() {
            if *sum <= 0.0 {
                continue;
            }
            if cum < 0.80 * self.total {
                a_min = Self::lower_bound(b);
            } else if cum < 0.95 * self.total {
                b_min = Self::lower_bound(b);
            }
            cum += sum;
        }
        self.a_min = a_min;
        self.b_min = b_min.min(a_min);
    }

    fn tier_of(&mut self, revenue: f64) -> Tier {
        if !self.computed && self.changes > 0 {
            self.recompute();
        }
        if revenue <= 0.0 {
            Tier::C
        } else if revenue >= self.a_min {
            Tier::A
        } else if revenue >= self.b_min {
            Tier::B
        } else {
            Tier::C
        }
    }
}

fn dedupe_key(ev: &ChannelEvent) -> u64 {
    let mut h = DefaultHasher::new();
    ev.channel.hash(&mut h);
    ev.event_id.hash(&mut h);
    h.finish()
}

/// A deterministic id: the same decision replayed has the same id.
fn action_id(one_id: &str, action: &str, trigger_key: &str) -> String {
    let mut h = Sha256::new();
    for part in [one_id, action, trigger_key] {
        h.update(part.as_bytes());
        h.update(b"\0");
    }
    format!("act-{}", hex::encode(&h.finalize()[..16]))
}

/// The channels a profile can be reached on.
fn reach(p: &Profile, j: &Journey, ns: &Namespaces) -> Reach {
    let has = |name: &str| ns.lookup(name).is_some_and(|n| p.ids.iter().any(|k| k.ns == n));
    Reach {
        email: has("email_sha256"),
        push: has("device_id") && !j.push_opt_out,
        sms: has("phone_sha256"),
        web: has("cookie_id"),
        store: has("loyalty_id") || has("customer_id"),
        call_center: has("phone_sha256") || has("customer_id"),
    }
}

/// The newest identifier of each linking namespace.
fn addressable(p: &Profile, ns: &Namespaces) -> BTreeMap<String, String> {
    p.ids
        .iter()
        .map(|k| (ns.name(k.ns).to_string(), k.value.to_string()))
        .collect()
}

/// Which contact channel labels exist, for pre-registering metrics.
pub const CONTACT_CHANNELS: [ContactChannel; 6] = [
    ContactChannel::Email,
    ContactChannel::Push,
    ContactChannel::Sms,
    ContactChannel::Web,
    ContactChannel::Store,
    ContactChannel::CallCenter,
];
