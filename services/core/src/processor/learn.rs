//! Learning from `action-outcomes`, and consent commands.
//!
//! In: an [`ActionOutcome`] (decoded by the [`Decoder`](crate::event::Decoder)),
//! or an `identity-control` [`ConsentCommand`].
//! Out: what it did ([`OutcomeEffect`]), for metrics. Keeps: the outcome on the
//! decision it answers (each decision counts once as a trial and at most once
//! as a response), dismissals per action, engagements per channel (for the
//! no-response rule), and the learned propensities.

use crate::event::{ActionOutcome, ConsentCommand};
use crate::time::EventTime;
use crate::vocab::{ContactChannel, Outcome, Tier};

use super::Processor;

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

impl Processor {
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
        let channel = ContactChannel::ALL.into_iter().find(|c| c.label() == r.channel);
        if o.outcome == Outcome::Dismissed {
            *j.ignored.entry(action.clone()).or_insert(0) += 1;
        }
        // The decoder checked the time; a response counts for the
        // no-response rule of the channel the message went on.
        if let (true, Some(c), Some(at)) = (o.outcome.is_engagement(), channel, EventTime::parse_rfc3339(&o.at)) {
            j.record_response(at, c);
        }
        drop(j);
        if !new_trial && !new_response {
            return OutcomeEffect::Repeated;
        }
        self.propensities.record(&action, tier, new_trial, new_response);
        OutcomeEffect::Learned
    }

    /// Records an `identity-control` consent statement on the profile its
    /// identifier belongs to; false when no profile holds it (nothing kept).
    pub fn consent(&mut self, c: &ConsentCommand) -> bool {
        let Some(one_id) = self.state.identity.one_id_of(&c.key) else {
            return false;
        };
        let mut j = self.state.take_journey(&one_id).unwrap_or_default();
        j.record_consent(c.channel, c.granted, c.at);
        self.state.put_journey(one_id, j);
        true
    }

    /// The learned propensity of `action` for `tier`.
    pub fn propensity(&self, action: &str, tier: Tier) -> Option<f64> {
        let spec = self.cfg.decide.actions.iter().find(|a| a.name == action)?;
        Some(self.propensities.estimate(spec, tier, self.cfg.decide.prior_strength))
    }
}
