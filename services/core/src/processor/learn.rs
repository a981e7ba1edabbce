//! Learning from `action-outcomes`, consent commands, and conversions for
//! the uplift.
//!
//! In: an [`ActionOutcome`] (decoded by the [`Decoder`](crate::event::Decoder)),
//! or an `identity-control` [`ConsentCommand`]; the transitions an event
//! caused on a journey. Out: what an outcome did ([`OutcomeEffect`]), for
//! metrics. Keeps: the outcome on the decision it answers (each decision
//! counts once as a trial and at most once as a response), dismissals per
//! action, engagements per channel (for the no-response rule), the learned
//! propensities per action, tier and channel; a purchase marks each recent
//! decision (sent or held out) whose conversion window it falls in as
//! converted, once, and counts it for the action's uplift.

use crate::event::{ActionOutcome, ConsentCommand};
use crate::journey::{Journey, Transition};
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
        let learned = self.update_journey(o.one_id.as_str(), |j| {
            let r = j
                .recent_actions
                .iter_mut()
                .find(|r| r.action_id == o.action_id && !r.held_out)?;
            let new_trial = !r.counted_trial;
            let new_response = o.outcome.is_response() && !r.counted_response;
            r.counted_trial = true;
            r.counted_response |= new_response;
            r.outcome = Some(o.outcome);
            let (action, tier) = (r.action.clone(), r.tier);
            let channel = ContactChannel::from_label(&r.channel);
            if o.outcome == Outcome::Dismissed {
                *j.ignored.entry(action.clone()).or_insert(0) += 1;
            }
            // The decoder checked the time; a response counts for the
            // no-response rule of the channel the message went on.
            if let (true, Some(c), Some(at)) = (o.outcome.is_engagement(), channel, EventTime::parse_rfc3339(&o.at)) {
                j.record_response(at, c);
            }
            Some((new_trial, new_response, action, tier, channel))
        });
        let Some((new_trial, new_response, action, tier, channel)) = learned else {
            return OutcomeEffect::Unknown;
        };
        if !new_trial && !new_response {
            return OutcomeEffect::Repeated;
        }
        self.state
            .models()
            .propensities
            .record(&action, tier, channel, new_trial, new_response);
        OutcomeEffect::Learned
    }

    /// Records an `identity-control` consent statement on the profile its
    /// identifier belongs to; false when no profile holds it (nothing kept).
    pub fn consent(&mut self, c: &ConsentCommand) -> bool {
        let Some(one_id) = self.state.identity.one_id_of(&c.key) else {
            return false;
        };
        let mut j = self.take_journey(&one_id).unwrap_or_default();
        std::sync::Arc::make_mut(&mut j).record_consent(c.channel, c.granted, c.at);
        self.put_journey(one_id, j);
        true
    }

    /// The learned propensity of `action` for `tier`.
    pub fn propensity(&self, action: &str, tier: Tier) -> Option<f64> {
        let spec = self.cfg.decide.actions.iter().find(|a| a.name == action)?;
        let models = self.state.models();
        Some(models.propensities.estimate(spec, tier, self.cfg.decide.prior_strength))
    }

    /// A purchase at `now` converts every recent decision of this journey
    /// taken before it and within its action's conversion window.
    pub(super) fn conversions(&self, j: &mut Journey, transitions: &[Transition], now: EventTime) {
        if j.recent_actions.is_empty() || !transitions.iter().any(|t| matches!(t, Transition::Purchased { .. })) {
            return;
        }
        let actions = &self.cfg.decide.actions;
        let mut converted = Vec::new();
        for r in j
            .recent_actions
            .iter_mut()
            .filter(|r| !r.converted && r.decided_at < now)
        {
            let Some(spec) = actions.iter().find(|a| a.name == r.action) else {
                continue;
            };
            if now <= r.decided_at.plus(spec.conversion_window()) {
                r.converted = true;
                converted.push((r.action.clone(), r.held_out));
            }
        }
        if !converted.is_empty() {
            let mut models = self.state.models();
            for (action, held) in converted {
                models.uplift.converted(&action, held);
            }
        }
    }
}
