//! Learning from `action-outcomes`.
//!
//! In: an [`ActionOutcome`] (decoded by the [`Decoder`](crate::event::Decoder)).
//! Out: what it did ([`OutcomeEffect`]), for metrics. Keeps: the outcome on the
//! decision it answers (each decision counts once as a trial and at most once
//! as a response), dismissals per action, and the learned propensities.

use crate::event::ActionOutcome;
use crate::vocab::{Outcome, Tier};

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
}
