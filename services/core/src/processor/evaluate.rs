//! One journey evaluated at one event time: churn, then the next best action.
//!
//! In: a journey taken out of the state, the triggers that fired and the
//! event time `now`; the churn model (`decide::churn_model`). Out: a `churn-risk` output when the band changed, a
//! `next-best-actions` output when an action was chosen, and the journey
//! updated with both (score, band, a point of churn history, the decision
//! with what it beat and what policy held back, and the contact). Keeps, in
//! the processor: the actions policy held back, until the result is handed
//! out.
//!
//! Since the holdout: a `churn-risk` output when the band changed, a
//! `next-best-actions` output when an action was chosen and not withheld as
//! the control group, and the journey updated with both (score, band, a
//! point of churn history, the decision with what it beat and what policy
//! held back, and the contact when it was sent). Keeps, in the processor:
//! the actions policy held back, until the result is handed out; in the
//! state's models: the decision counted as sent or held out.
//!
//! Exploration and holdout are hashes, not random numbers: the Thompson
//! draw of an action is seeded by its would-be action id (One ID, action,
//! trigger), the holdout by the One ID and the action, so a replay decides
//! and withholds exactly the same.

use std::collections::BTreeMap;
use std::io::Write as _;

use sha2::{Digest, Sha256};

use crate::decide::learned::ChurnModel;
use crate::decide::quiet::{quiet_until, During};
use crate::decide::uplift::held_out;
use crate::decide::{self, churn_model, explore, Choice, ContactChannel, Estimate, Reach, Suppressed, Trigger};
use crate::identity::{OneId, Profile};
use crate::ids::Namespaces;
use crate::journey::{Beaten, HeldBack, Journey, RecentAction};
use crate::output::{ChurnRisk, NextBestAction, Output, TriggerRef};
use crate::time::EventTime;
use crate::vocab::Band;

use super::Processor;

impl Processor {
    /// Churn, then the next best action, for one journey at `now`.
    pub(super) fn evaluate(
        &mut self,
        one_id: &OneId,
        j: &mut Journey,
        triggers: &[Trigger],
        now: EventTime,
        trigger: &TriggerRef,
        outputs: &mut Vec<Output>,
    ) {
        j.tier = self.tiers.tier_of(j.revenue);
        self.score_churn(one_id, j, now, trigger, outputs);
        j.rfm = self.value.rfm_of(j);
        j.clv.set(self.value.clv(&self.cfg.decide.value, j, now));
        let cfg = &self.cfg.decide;
        if triggers.is_empty() || !cfg.actions.iter().any(|a| triggers.contains(&a.trigger)) {
            return;
        }
        let identity = &self.state.identity;
        let Some(reach) = identity.with_profile(one_id, |p| {
            Reach::of_ids(p.ids(), identity.namespaces(), j.push_opt_out)
        }) else {
            return;
        };
        let tier = j.tier;
        let key = trigger_key(trigger, now);
        let decision = {
            let models = self.state.models();
            let learned = |a: &decide::ActionSpec, channel: ContactChannel| {
                let post = models.propensities.posterior(a, tier, channel, cfg.prior_strength);
                let draw = if cfg.explore {
                    post.draw(explore::seed(&[action_id_in(
                        &mut [0; ACTION_ID_LEN],
                        one_id,
                        &a.name,
                        key,
                    )]))
                } else {
                    post.mean()
                };
                Estimate {
                    mean: post.mean(),
                    draw,
                }
            };
            decide::decide(cfg, j, &reach, triggers, now, &learned)
        };
        let held_back: Vec<HeldBack> = decision
            .suppressed
            .iter()
            .map(|(action, rule)| HeldBack {
                action: action.clone(),
                rule: *rule,
            })
            .collect();
        let deferred = self.deferral(j, triggers, &decision, now);
        self.suppressed.extend(decision.suppressed);
        if let Some(choice) = decision.choice {
            let context = (decision.beaten, held_back);
            if let Some(action) = self.take_action(one_id, j, choice, context, now, trigger) {
                outputs.push(Output::Action(action));
            }
        } else if let Some((due, triggers)) = deferred {
            self.defer(one_id, &triggers, due);
        }
    }

    /// When quiet hours held an action back and `during` is `defer`: the
    /// end of the quiet period and the triggers of the actions held back.
    fn deferral(
        &self,
        j: &Journey,
        triggers: &[Trigger],
        decision: &decide::Decision,
        now: EventTime,
    ) -> Option<(EventTime, Vec<Trigger>)> {
        let cfg = &self.cfg.decide;
        let q = cfg.policy.quiet_hours.as_ref().filter(|q| q.during == During::Defer)?;
        let held: Vec<Trigger> = triggers
            .iter()
            .copied()
            .filter(|t| {
                decision.suppressed.iter().any(|(name, why)| {
                    *why == Suppressed::QuietHours && cfg.actions.iter().any(|a| &a.name == name && a.trigger == *t)
                })
            })
            .collect();
        let due = q
            .channels
            .iter()
            .find_map(|c| quiet_until(q, *j.local_clock, *c, now))?;
        (!held.is_empty()).then_some((due, held))
    }

    /// Scores churn with the learned model, remembers the features as an
    /// example (at most one per `sample_every`), and reports the band when it
    /// changed (the first band only when it is not `low`).
    fn score_churn(
        &mut self,
        one_id: &OneId,
        j: &mut Journey,
        now: EventTime,
        trigger: &TriggerRef,
        outputs: &mut Vec<Output>,
    ) {
        let cfg = &self.cfg.decide.churn;
        let s = match self.state.churn().as_ref() {
            Some(live) => churn_model::evaluate(cfg, &live.model, j, now),
            None => churn_model::evaluate(cfg, &ChurnModel::new(cfg.learn.clone()), j, now),
        };
        if let Some(due) = churn_model::remember(cfg, &mut j.churn_examples, &s, now) {
            self.label_due = Some(due);
        }
        let band = cfg.band(s.score, j.churn.band);
        let previous = j.churn.band;
        if previous != Some(band) && !(previous.is_none() && band == Band::Low) {
            outputs.push(Output::Churn(ChurnRisk {
                one_id: one_id.clone(),
                score: s.score,
                band,
                previous_band: previous,
                factors: s.factors.clone(),
                trigger: trigger.clone(),
                evaluated_at: now,
                hand_score: s.hand,
                model_examples: self.state.churn().as_ref().map_or(0, |l| l.model.examples),
            }));
            j.churn.band = Some(band);
        }
        j.record_churn_of(now, s.score, j.churn.band, &s.factors);
        j.churn.score = s.score;
        j.churn.factors.assign(&s.factors);
        j.churn.evaluated_at = now.into();
    }

    /// Records the chosen action on the journey (the decision, with what it
    /// beat and what policy held back, and the contact) and builds its
    /// record; `None` when it is withheld as the control group (recorded on
    /// the journey as held out, no contact, nothing published).
    fn take_action(
        &self,
        one_id: &OneId,
        j: &mut Journey,
        choice: Choice,
        (beaten, held_back): (Vec<Beaten>, Vec<HeldBack>),
        now: EventTime,
        trigger: &TriggerRef,
    ) -> Option<NextBestAction> {
        let action_id = action_id(one_id, &choice.action, trigger_key(trigger, now));
        let held_out = held_out(self.cfg.decide.holdout_share, one_id, &choice.action);
        self.state.models().uplift.decided(&choice.action, held_out);
        if !held_out {
            j.record_contact(now, choice.channel);
        }
        j.record_action(RecentAction {
            action_id: action_id.clone(),
            action: choice.action.clone(),
            channel: choice.channel.label().to_string(),
            reason: choice.reason.clone(),
            decided_at: now,
            tier: j.tier,
            outcome: None,
            counted_trial: false,
            counted_response: false,
            score: Some(choice.score),
            beaten,
            held_back,
            held_out,
            converted: false,
        });
        if held_out {
            return None;
        }
        let identity = &self.state.identity;
        Some(NextBestAction {
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
        })
    }
}

/// What distinguishes one decision of a journey from another: the event
/// that caused it, or the timer and its time.
fn trigger_key(trigger: &TriggerRef, now: EventTime) -> TriggerKey<'_> {
    match &trigger.event_id {
        Some(id) => TriggerKey::Event(id),
        None => TriggerKey::Timer(trigger.timer.unwrap_or(""), now.millis()),
    }
}

/// A [`trigger_key`]: hashed as the text `event:<id>` or
/// `timer:<name>:<ms>`, never written out (it was a `String` made twice
/// a decision).
#[derive(Clone, Copy)]
enum TriggerKey<'a> {
    Event(&'a str),
    Timer(&'a str, i64),
}

impl TriggerKey<'_> {
    fn hash_into(self, h: &mut Sha256) {
        match self {
            TriggerKey::Event(id) => {
                h.update(b"event:");
                h.update(id.as_bytes());
            }
            TriggerKey::Timer(name, ms) => {
                h.update(b"timer:");
                h.update(name.as_bytes());
                h.update(b":");
                // An i64 in decimal takes at most 20 bytes (its minimum).
                let mut digits = [0u8; 20];
                let mut rest = &mut digits[..];
                let _ = write!(rest, "{ms}");
                let len = 20 - rest.len();
                h.update(&digits[..len]);
            }
        }
    }
}

/// A deterministic id: the same decision replayed has the same id.
fn action_id(one_id: &str, action: &str, key: TriggerKey<'_>) -> String {
    let mut text = [0u8; ACTION_ID_LEN];
    action_id_in(&mut text, one_id, action, key).to_string()
}

/// `act-` and 32 hex digits.
const ACTION_ID_LEN: usize = 4 + 32;

/// [`action_id`] written into `text`, for a use that does not keep it
/// (the seed of a candidate's draw): no allocation.
fn action_id_in<'a>(text: &'a mut [u8; ACTION_ID_LEN], one_id: &str, action: &str, key: TriggerKey<'_>) -> &'a str {
    let mut h = Sha256::new();
    for part in [one_id, action] {
        h.update(part.as_bytes());
        h.update(b"\0");
    }
    key.hash_into(&mut h);
    h.update(b"\0");
    crate::hex_text::write(text, "act-", &h.finalize()[..16])
}

/// The newest identifier of each linking namespace.
fn addressable(p: &Profile, ns: &Namespaces) -> BTreeMap<String, String> {
    p.ids()
        .iter()
        .map(|k| (ns.name(k.ns()).to_string(), k.value().to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The id as it was made before the key was hashed in parts.
    fn as_made_before(one_id: &str, action: &str, key_text: &str) -> String {
        let mut h = Sha256::new();
        for part in [one_id, action, key_text] {
            h.update(part.as_bytes());
            h.update(b"\0");
        }
        format!("act-{}", hex::encode(&h.finalize()[..16]))
    }

    proptest! {
        #[test]
        fn an_action_id_is_the_one_made_from_the_key_text(
            one_id in "oj-[0-9a-f]{24}",
            action in "[a-z_]{1,20}",
            id in "[ -~]{0,30}",
            timer in "[a-z_]{0,12}",
            ms in any::<i64>(),
        ) {
            let event = TriggerRef::event(&id);
            prop_assert_eq!(
                action_id(&one_id, &action, trigger_key(&event, EventTime(ms))),
                as_made_before(&one_id, &action, &format!("event:{id}"))
            );
            let fired = TriggerRef { timer: Some(timer.clone().leak()), ..TriggerRef::timer("") };
            prop_assert_eq!(
                action_id(&one_id, &action, trigger_key(&fired, EventTime(ms))),
                as_made_before(&one_id, &action, &format!("timer:{timer}:{ms}"))
            );
        }
    }

    #[test]
    fn the_longest_timer_time_is_hashed_whole() {
        let fired = TriggerRef::timer("quiet");
        for ms in [i64::MIN, i64::MAX, 0, -1] {
            assert_eq!(
                action_id("oj-1", "a", trigger_key(&fired, EventTime(ms))),
                as_made_before("oj-1", "a", &format!("timer:quiet:{ms}"))
            );
        }
    }
}
