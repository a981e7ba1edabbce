//! What the lookup API reads: a profile, its journey and churn, and why its
//! identifiers are one profile.
//!
//! In: the shared [`State`] and an identifier or One ID. Out: the bodies of
//! `GET /v1/profiles/{namespace}/{value}` ([`ProfileView`]) and
//! `.../explain` ([`ExplainView`]), ready to serialise. Keeps nothing: every
//! view is a copy taken under the map's read guard.

use serde::Serialize;

use crate::identity::{OneId, Rule};
use crate::ids::IdKey;
use crate::journey::{Factor, Journey, RecentAction, Stage};
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
}

impl State {
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
