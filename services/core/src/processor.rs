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

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::decide::{self, churn, ContactChannel, DecideConfig, Reach, Suppressed, Trigger};
use crate::event::ChannelEvent;
use crate::identity::{IdentityGraph, OneId, Profile, Rejection, StitchError};
use crate::ids::{IdKey, Namespaces};
use crate::journey::{Band, Journey, RecentAction, Transition};
use crate::output::{ChurnRisk, IdentityChange, LinkRef, NextBestAction, Output, TriggerRef};
use crate::time::EventTime;

#[cfg(test)]
mod tests;

/// Settings of the pure pipeline.
#[derive(Clone, Debug)]
pub struct CoreConfig {
    pub decide: DecideConfig,
    /// How far behind the largest event time an event may arrive and still
    /// be before the watermark.
    pub allowed_lateness: Duration,
}

/// State shared with readers (the lookup API): the identity graph and the
/// journeys, both keyed for lock-free reads.
pub struct State {
    pub identity: IdentityGraph,
    pub journeys: DashMap<OneId, Journey>,
}

impl State {
    pub fn new(namespaces: Arc<Namespaces>) -> Self {
        State {
            identity: IdentityGraph::new(namespaces),
            journeys: DashMap::new(),
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
                size_of::<Journey>() + j.key().len() + MAP_ENTRY + cart + actions + recent
            })
            .sum();
        identity + journeys
    }

    /// The profile an identifier belongs to, as the lookup API shows it.
    pub fn view(&self, key: &IdKey) -> Option<ProfileView> {
        let one_id = self.identity.one_id_of(key)?;
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

/// The body of `GET /v1/profiles/{namespace}/{value}`.
#[derive(Clone, Debug, Serialize)]
pub struct ProfileView {
    pub one_id: OneId,
    pub identifiers: Vec<IdentifierView>,
    pub journey: JourneyView,
    pub churn: ChurnView,
    pub recent_actions: Vec<RecentAction>,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKind {
    CartCheck,
    QuietCheck,
}

impl TimerKind {
    fn label(self) -> &'static str {
        match self {
            TimerKind::CartCheck => "cart_abandonment",
            TimerKind::QuietCheck => "inactivity",
        }
    }
}

/// What one event did.
#[derive(Debug, Default)]
pub struct Processed {
    pub one_id: Option<OneId>,
    pub outputs: Vec<Output>,
    pub duplicate: bool,
    /// Before the watermark when it arrived (still applied).
    pub late: bool,
    pub merges: usize,
    pub rejected: Vec<Rejection>,
    pub timers_fired: usize,
    /// Actions whose facts held but that policy held back, with why.
    pub suppressed: Vec<(String, Suppressed)>,
}

/// The single writer of [`State`].
pub struct Processor {
    cfg: Arc<CoreConfig>,
    state: Arc<State>,
    seen: HashSet<u64>,
    timers: BTreeSet<(EventTime, TimerKind, IdKey)>,
    max_event_time: EventTime,
    suppressed: Vec<(String, Suppressed)>,
}

impl Processor {
    pub fn new(cfg: Arc<CoreConfig>, state: Arc<State>) -> Self {
        Processor {
            cfg,
            state,
            seen: HashSet::new(),
            timers: BTreeSet::new(),
            max_event_time: EventTime::MIN,
            suppressed: Vec::new(),
        }
    }

    pub fn state(&self) -> &Arc<State> {
        &self.state
    }

    pub fn pending_timers(&self) -> usize {
        self.timers.len()
    }

    /// The watermark: timers due at or before it have fired.
    pub fn watermark(&self) -> EventTime {
        self.max_event_time.minus(self.cfg.allowed_lateness)
    }

    pub fn process(&mut self, ev: &ChannelEvent) -> Result<Processed, StitchError> {
        let dedupe = dedupe_key(ev);
        if self.seen.contains(&dedupe) {
            return Ok(Processed {
                duplicate: true,
                ..Processed::default()
            });
        }
        let stitch = self.state.identity.stitch(ev)?;
        self.seen.insert(dedupe);
        let mut out = Processed {
            one_id: Some(stitch.one_id.clone()),
            late: ev.occurred_at < self.watermark(),
            rejected: stitch.rejected.clone(),
            ..Processed::default()
        };
        let one_id = &stitch.one_id;
        for (merged, link) in stitch.merged() {
            out.merges += 1;
            if let Some((_, gone)) = self.state.journeys.remove(merged) {
                self.state.journeys.entry(one_id.clone()).or_default().absorb(gone);
            }
            out.outputs.push(Output::Identity(IdentityChange {
                change: "merge",
                one_id: one_id.clone(),
                merged_one_ids: vec![merged.clone()],
                link: Some(LinkRef {
                    namespace: self.state.identity.namespaces().name(link.from.ns).to_string(),
                    value: link.from.value.to_string(),
                }),
                event_id: Some(ev.event_id.clone()),
                at: ev.occurred_at,
            }));
        }

        let trigger = TriggerRef::event(&ev.event_id);
        let mut journey = self.state.journeys.remove(one_id).map(|(_, j)| j).unwrap_or_default();
        let transitions = journey.apply(ev);
        let mut triggers = Vec::new();
        for t in &transitions {
            match t {
                Transition::Purchased { .. } => triggers.push(Trigger::Purchased),
                Transition::ServiceIssue { .. } => triggers.push(Trigger::ServiceIssue),
                Transition::CartChanged { .. } if !journey.cart.is_empty() => {
                    if let Some(updated) = journey.cart.updated_at {
                        self.timers.insert((
                            updated.plus(self.cfg.decide.cart_abandon_after),
                            TimerKind::CartCheck,
                            stitch.anchor.clone(),
                        ));
                    }
                }
                _ => {}
            }
        }
        if journey.last_seen == Some(ev.occurred_at) {
            self.timers.insert((
                ev.occurred_at.plus(self.cfg.decide.quiet_after),
                TimerKind::QuietCheck,
                stitch.anchor.clone(),
            ));
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

        self.max_event_time = self.max_event_time.max(ev.occurred_at);
        out.timers_fired = self.fire_due(&mut out.outputs);
        out.suppressed = std::mem::take(&mut self.suppressed);
        Ok(out)
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
        let cfg = &self.cfg.decide;
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
        let Some(profile) = self.state.identity.profile(one_id) else {
            return;
        };
        let reach = reach(&profile, j, self.state.identity.namespaces());
        let decision = decide::decide(cfg, j, &reach, triggers, now);
        self.suppressed.extend(decision.suppressed);
        let Some(choice) = decision.choice else {
            return;
        };
        let trigger_key = match &trigger.event_id {
            Some(id) => format!("event:{id}"),
            None => format!("timer:{}:{}", trigger.timer.unwrap_or(""), now.millis()),
        };
        let action_id = action_id(one_id, &choice.action, &trigger_key);
        j.record_action(RecentAction {
            action_id: action_id.clone(),
            action: choice.action.clone(),
            channel: choice.channel.label().to_string(),
            reason: choice.reason.clone(),
            decided_at: now,
        });
        outputs.push(Output::Action(NextBestAction {
            action_id,
            one_id: one_id.clone(),
            action: choice.action,
            channel: choice.channel.label(),
            score: choice.score,
            reason: choice.reason,
            factors: choice.factors,
            identifiers: addressable(&profile, self.state.identity.namespaces()),
            trigger: trigger.clone(),
            decided_at: now,
            expires_at: now.plus(choice.expires_after),
        }));
    }

    /// Fires every timer due at or before the watermark; returns how many.
    fn fire_due(&mut self, outputs: &mut Vec<Output>) -> usize {
        let wm = self.watermark();
        let mut fired = 0;
        while let Some(first) = self.timers.first() {
            if first.0 > wm {
                break;
            }
            let Some((due, kind, key)) = self.timers.pop_first() else {
                break;
            };
            fired += 1;
            let Some(one_id) = self.state.identity.one_id_of(&key) else {
                continue;
            };
            let Some((_, mut j)) = self.state.journeys.remove(&one_id) else {
                continue;
            };
            let cfg = self.cfg.clone();
            let cfg = &cfg.decide;
            let trigger = TriggerRef::timer(kind.label());
            match kind {
                TimerKind::CartCheck => {
                    let idle = j.cart.updated_at.is_some_and(|u| u.plus(cfg.cart_abandon_after) <= due);
                    if idle && !j.cart.is_empty() {
                        self.evaluate(&one_id, &mut j, &[Trigger::CartAbandoned], due, &trigger, outputs);
                    }
                }
                TimerKind::QuietCheck => {
                    let last = j.last_seen.unwrap_or(due);
                    if last.plus(cfg.quiet_after) <= due {
                        self.evaluate(&one_id, &mut j, &[Trigger::Lapsed], due, &trigger, outputs);
                        let next = due.plus(cfg.quiet_after);
                        if next <= last.plus(cfg.quiet_checks_until) {
                            self.timers.insert((next, TimerKind::QuietCheck, key));
                        }
                    }
                }
            }
            self.state.journeys.insert(one_id, j);
        }
        fired
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
