//! What the lookup API reads: a profile, its journey and churn, and why its
//! identifiers are one profile.
//!
//! In: the shared [`State`] and an identifier or One ID. Out: the bodies of
//! `GET /v1/profiles/{namespace}/{value}` ([`ProfileView`]) and
//! `.../explain` ([`ExplainView`]: the links, the refused links and the
//! shared devices), ready to serialise. The churn score is re-evaluated as
//! of the event time the engine has reached, with the model it trains (a
//! customer gone quiet is seen getting riskier between their events). Keeps
//! nothing: every view is a copy
//! taken under the map's read guard (released before the identity graph's
//! writer lock is taken to ask which devices are shared).

use serde::Serialize;

use crate::decide::churn_model;
use crate::identity::{OneId, RejectReason, Rule};
use crate::ids::IdKey;
use crate::journey::{ChurnPoint, Factor, Journey, RecentAction, Stage};
use crate::state::State;
use crate::time::EventTime;
use crate::vocab::Band;

/// The body of `GET /v1/profiles/{namespace}/{value}`.
#[derive(Clone, Debug, Serialize)]
pub struct ProfileView {
    pub one_id: OneId,
    pub identifiers: Vec<IdentifierView>,
    pub journey: JourneyView,
    pub churn: ChurnView,
    pub recent_actions: Vec<RecentAction>,
}

/// The body of `GET /v1/profiles/{namespace}/{value}/explain`.
#[derive(Clone, Debug, Serialize)]
pub struct ExplainView {
    pub one_id: OneId,
    pub links: Vec<LinkView>,
    /// The newest links refused on events that landed here, oldest first.
    pub refused: Vec<RefusedView>,
    /// The identifiers above (the profile's and the refused ones) that are
    /// shared devices: they no longer link anyone.
    pub shared_devices: Vec<IdentifierView>,
}

/// A link that was refused: the identifier stayed apart, in `kept_in`.
#[derive(Clone, Debug, Serialize)]
pub struct RefusedView {
    pub identifier: IdentifierView,
    pub reason: RejectReason,
    /// The profile it was kept in when it was refused (it may have merged
    /// on since).
    pub kept_in: Option<OneId>,
    pub event_id: String,
    pub channel: &'static str,
    pub at: EventTime,
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
    pub stage: Stage,
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
                churn_examples: Default::default(),
                ..j.clone()
            },
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct ChurnView {
    pub score: f64,
    pub band: Option<Band>,
    pub factors: Vec<Factor>,
    /// The event time the score is as of (since 1.4): the engine's current
    /// event time, not the customer's last event.
    pub evaluated_at: Option<EventTime>,
    /// The hand-weighted score the model is blended with (since 1.4).
    pub hand_score: Option<f64>,
    /// The last evaluations that changed the score or band, oldest first.
    pub history: Vec<ChurnPoint>,
}

/// The body of `GET /v1/models/churn`: the learned churn model.
#[derive(Clone, Debug, Serialize)]
pub struct ChurnModelView {
    /// One weight per feature, in the model's order.
    pub weights: Vec<WeightView>,
    pub bias: f64,
    /// Labelled examples learned from: churned (positives) and back (negatives).
    pub examples: u64,
    pub positives: u64,
    pub negatives: u64,
    /// Prequential (test-then-train) AUC on those examples.
    pub auc: AucView,
    /// Labelled examples the hand-weighted prior counts as.
    pub prior_strength: f64,
    /// The learned part's share of the score now: examples / (examples + prior_strength).
    pub learned_share: f64,
    /// No activity for this long after an example: churned.
    pub horizon_days: f64,
    /// The event time the engine has applied.
    pub evaluated_to: Option<EventTime>,
}

#[derive(Clone, Debug, Serialize)]
pub struct WeightView {
    pub feature: &'static str,
    pub weight: f64,
}

/// AUCs on the same examples; `null` until both labels were seen.
#[derive(Clone, Debug, Serialize)]
pub struct AucView {
    /// The model's score (blended with its prior), before it learned each example.
    pub learned: Option<f64>,
    /// The hand-weighted score.
    pub hand: Option<f64>,
    /// Days since the last activity alone.
    pub recency: Option<f64>,
}

impl State {
    /// The churn model; `None` when no processor is attached.
    pub fn churn_model_view(&self) -> Option<ChurnModelView> {
        let live = self.churn();
        let live = live.as_ref()?;
        let m = &live.model;
        let k = m.config.prior_strength;
        Some(ChurnModelView {
            weights: churn_model::named_weights(m)
                .into_iter()
                .map(|(feature, weight)| WeightView { feature, weight })
                .collect(),
            bias: m.bias,
            examples: m.examples,
            positives: m.positives,
            negatives: m.examples.saturating_sub(m.positives),
            auc: AucView {
                learned: m.auc.learned.auc(),
                hand: m.auc.hand.auc(),
                recency: m.auc.recency.auc(),
            },
            prior_strength: k,
            learned_share: m.examples as f64 / (m.examples as f64 + k),
            horizon_days: live.config.horizon.as_secs_f64() / 86_400.0,
            evaluated_to: live.now,
        })
    }

    /// The churn of `j` as of the event time the engine has reached (never
    /// before its last evaluation); as last evaluated when no model is
    /// attached or nothing was applied yet.
    fn churn_now(&self, j: &Journey) -> ChurnView {
        let history = j.churn.history.iter().cloned().collect();
        let live = self.churn();
        let now = live.as_ref().and_then(|l| l.now).max(j.churn.evaluated_at.get());
        match (live.as_ref(), now) {
            (Some(live), Some(now)) if j.last_seen.is_some() => {
                let e = churn_model::evaluate(&live.config, &live.model, j, now);
                ChurnView {
                    score: e.score,
                    band: Some(live.config.band(e.score, j.churn.band)),
                    factors: e.factors,
                    evaluated_at: Some(now),
                    hand_score: Some(e.hand),
                    history,
                }
            }
            _ => ChurnView {
                score: j.churn.score,
                band: j.churn.band,
                factors: j.churn.factors.to_vec(),
                evaluated_at: j.churn.evaluated_at.get(),
                hand_score: None,
                history,
            },
        }
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
            namespace: ns.name(k.ns()).to_string(),
            value: k.value().to_string(),
        };
        // A copy, so no profile guard is held when the graph's lock is taken.
        let p = self.identity.profile(&one_id)?;
        let mut shared = self
            .identity
            .shared_devices(p.ids().iter().chain(p.refused().iter().map(|r| &r.key)));
        shared.sort();
        shared.dedup();
        Some(ExplainView {
            one_id: p.one_id.clone(),
            links: p
                .links()
                .map(|l| LinkView {
                    from: id(&l.from),
                    to: l.to.as_ref().map(id),
                    event_id: l.provenance.event_id.to_string(),
                    channel: l.provenance.channel.label(),
                    at: l.provenance.at,
                    rule: l.provenance.rule,
                })
                .collect(),
            refused: p
                .refused()
                .iter()
                .map(|r| RefusedView {
                    identifier: id(&r.key),
                    reason: r.reason,
                    kept_in: r.kept_in.clone(),
                    event_id: r.event_id.to_string(),
                    channel: r.channel.label(),
                    at: r.at,
                })
                .collect(),
            shared_devices: shared.iter().map(id).collect(),
        })
    }

    /// A profile by its One ID.
    pub fn view_one_id(&self, one_id: &str) -> Option<ProfileView> {
        let one_id: OneId = self.identity.profile(one_id)?.one_id;
        let profile = self.identity.profile(&one_id)?;
        let journey = self.journey(&one_id).unwrap_or_default();
        let ns = self.identity.namespaces();
        let identifiers = profile
            .ids()
            .iter()
            .chain(profile.households())
            .map(|k| IdentifierView {
                namespace: ns.name(k.ns()).to_string(),
                value: k.value().to_string(),
            })
            .collect();
        Some(ProfileView {
            one_id,
            identifiers,
            journey: JourneyView::of(&journey),
            churn: self.churn_now(&journey),
            recent_actions: journey.recent_actions.iter().cloned().collect(),
        })
    }
}
