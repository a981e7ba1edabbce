//! Decisions: which next best action, and how likely a customer is to churn.
//!
//! In: a [`Journey`], the triggers an event or timer produced, the channels the
//! customer can be reached on ([`Reach`]), the learned propensities and the
//! event time `now`. Out: a [`Decision`]: at most one [`Choice`] (the best
//! eligible action) and the actions policy held back, with why. Keeps nothing:
//! the learned state lives in [`Propensities`](propensity::Propensities) and
//! [`ValueTiers`](tiers::ValueTiers), which the processor owns.
//!
//! Layout: `config.rs` the `[decide]` section and the catalog; `triggers.rs`
//! what makes an action eligible and its facts (the abandonment rules the
//! processor's timers share); `reach.rs` contact routes; `policy.rs` the
//! contact policy per channel (consent, no-response rest, caps, budget) and
//! `quiet.rs` quiet hours in local time; `tiers.rs` value
//! tiers; `rfm.rs` RFM quintile scores and `value.rs` expected lifetime value; `propensity.rs` learning from outcomes; `churn.rs` the hand-weighted
//! churn score; `learned.rs` the learned churn model; `churn_model.rs` the
//! score the engine emits (the model blended with the hand score) and its labels;
//! `explore.rs` the Thompson draw; `uplift.rs` the holdout and each action's
//! measured uplift.
//!
//! Ranking: expected value = propensity x value x weight x lever, where the
//! propensity is learned from outcomes ([`propensity`]) per action, tier and
//! channel, the value and weight come from the catalog and the lever from the
//! business (`decide.levers`). The value is the catalog's `value` (plus the
//! cart's share for cart actions) plus the lifetime value at stake:
//! `clv_share` x the customer's expected lifetime value (`journey.clv`, 0
//! when unknown), so a valuable customer at risk makes a costlier action
//! with a better chance worth it. Candidates are ranked on the same product with
//! a Thompson draw from the propensity's posterior in place of its mean
//! (`decide.explore`), so a rarely tried alternative still gets its chance
//! while the evidence is thin and stops getting it once the evidence is in.
//! Contact policy, checked for every candidate: not dismissed `ignore_limit`
//! times, past its cool-down, no promotional action within the quiet period
//! after a complaint or cancel request, then the first of its channels the
//! customer can be reached on, consents to and that `policy.rs` allows
//! (no-response rest, per-channel caps, cross-channel budget); then an
//! expected value of at least `decide.min_expected_value`.
//!
//! Invariant: pure functions of their arguments; the same journey and time give
//! the same decision, so replaying history gives the same outputs. Decisions
//! read the journey; the journey does not know them.

pub mod churn;
pub mod churn_model;
mod config;
pub mod explore;
pub mod learned;
pub mod policy;
pub mod propensity;
pub mod quiet;
pub mod reach;
pub mod rfm;
pub mod tiers;
pub mod triggers;
pub mod uplift;
pub mod value;

use std::time::Duration;

use serde::Serialize;

use crate::journey::{Beaten, Journey};
use crate::time::EventTime;

pub use crate::vocab::{ContactChannel, Suppressed};
pub use config::{ActionSpec, Cap, Conditions, ConfigError, ContactPolicy, DecideConfig};
pub use policy::under_caps;
pub use reach::Reach;
pub use triggers::Trigger;

#[cfg(test)]
mod reason_tests;
#[cfg(test)]
mod tests;

pub const DAYS_30: Duration = Duration::from_secs(30 * 24 * 3600);

/// A named number that explains a decision.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NamedValue {
    pub name: &'static str,
    pub value: f64,
}

/// An action's learned propensity for one customer and channel: the
/// posterior mean, and the draw arbitration ranks on (the mean when not
/// exploring).
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Estimate {
    pub mean: f64,
    pub draw: f64,
}

impl Estimate {
    /// Known exactly: no exploration.
    pub fn exact(p: f64) -> Estimate {
        Estimate { mean: p, draw: p }
    }
}

/// The winning action.
#[derive(Clone, Debug, PartialEq)]
pub struct Choice {
    pub action: String,
    pub channel: ContactChannel,
    /// Expected value: propensity x value x weight x lever (value including
    /// the lifetime value at stake).
    pub score: f64,
    /// What it was ranked on: the same with the propensity's draw.
    pub rank: f64,
    pub reason: String,
    pub factors: Vec<NamedValue>,
    pub expires_after: Duration,
}

/// The outcome of arbitration: the winner, if any, and the actions whose
/// facts held but that policy held back.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Decision {
    pub choice: Option<Choice>,
    /// The other eligible actions, best first: what the choice beat.
    pub beaten: Vec<Beaten>,
    pub suppressed: Vec<(String, Suppressed)>,
}

/// Picks the best eligible action for the triggers that fired at `now`.
/// `propensity(action, channel)` is the learned success probability for this
/// customer's tier on that channel, with the draw to rank on.
pub fn decide(
    cfg: &DecideConfig,
    j: &Journey,
    reach: &Reach,
    triggers: &[Trigger],
    now: EventTime,
    propensity: &dyn Fn(&ActionSpec, ContactChannel) -> Estimate,
) -> Decision {
    let mut ranked: Vec<Candidate<'_>> = Vec::new();
    let mut suppressed = Vec::new();
    for a in cfg.actions.iter().filter(|a| triggers.contains(&a.trigger)) {
        match candidate(cfg, a, j, reach, now, propensity) {
            Ok(c) => ranked.push(c),
            Err(Some(why)) => suppressed.push((a.name.clone(), why)),
            Err(None) => {}
        }
    }
    // Highest ranked value first; ties by catalog name so the choice is stable.
    ranked.sort_by(|a, b| b.rank.total_cmp(&a.rank).then_with(|| a.spec.name.cmp(&b.spec.name)));
    let mut it = ranked.into_iter();
    let best = it.next();
    let beaten: Vec<Beaten> = it
        .map(|c| Beaten {
            action: c.spec.name.clone(),
            score: round4(c.score),
        })
        .collect();
    Decision {
        choice: best.map(|best| best.choice(&beaten)),
        beaten,
        suppressed,
    }
}

/// An eligible action, priced and ranked; made a [`Choice`], with its
/// reason and factors, only when it wins.
struct Candidate<'a> {
    spec: &'a ActionSpec,
    facts: triggers::Facts<'a>,
    channel: ContactChannel,
    p: Estimate,
    /// The value: the catalog's, the facts' and the lifetime value at stake.
    value: f64,
    clv: f64,
    at_stake: f64,
    lever: f64,
    score: f64,
    rank: f64,
}

impl Candidate<'_> {
    /// The winner, with the actions it beat in its reason.
    fn choice(self, beaten: &[Beaten]) -> Choice {
        let a = self.spec;
        let mut factors = self.facts.factors();
        factors.extend(pricing(self.p, self.value, a.weight, self.lever));
        let mut stake = String::new();
        if a.clv_share > 0.0 {
            factors.extend(lifetime(self.clv, a.clv_share, self.at_stake));
            stake = format!(
                ", of it {:.2} = {} of lifetime value {:.2}",
                self.at_stake, a.clv_share, self.clv
            );
        }
        let mut reason = format!(
            "{}: {}; expected value {:.2} (propensity {:.3} x value {:.2}{stake}; ranked on a draw of {:.3})",
            a.reason,
            self.facts.detail(),
            self.score,
            self.p.mean,
            self.value,
            self.p.draw
        );
        if !beaten.is_empty() {
            let over: Vec<String> = beaten
                .iter()
                .map(|b| format!("{} ({:.2})", b.action, b.score))
                .collect();
            reason = format!("{reason}; chosen over {}", over.join(", "));
        }
        Choice {
            action: a.name.clone(),
            channel: self.channel,
            score: round4(self.score),
            rank: self.rank,
            reason,
            factors,
            expires_after: a.expires_after,
        }
    }
}

/// `Ok` when the action is eligible. `Err(None)`: its facts or conditions do
/// not hold; `Err(Some(_))`: contact policy held it back.
fn candidate<'a>(
    cfg: &DecideConfig,
    a: &'a ActionSpec,
    j: &'a Journey,
    reach: &Reach,
    now: EventTime,
    propensity: &dyn Fn(&ActionSpec, ContactChannel) -> Estimate,
) -> Result<Candidate<'a>, Option<Suppressed>> {
    let facts = triggers::facts(cfg, a.trigger, a.value_per_cart_unit, j, now).ok_or(None)?;
    if !a.when.hold(j, now) {
        return Err(None);
    }
    if j.ignored.get(&a.name).is_some_and(|n| *n >= cfg.policy.ignore_limit) {
        return Err(Some(Suppressed::Ignored));
    }
    if j.last_action
        .get(&a.name)
        .is_some_and(|last| now < last.plus(a.cooldown))
    {
        return Err(Some(Suppressed::Cooldown));
    }
    if a.promotional
        && j.last_service_issue
            .is_some_and(|t| t <= now && now < t.plus(cfg.policy.quiet_after_complaint))
    {
        return Err(Some(Suppressed::QuietPeriod));
    }
    let channel = policy::channel(&cfg.policy, j, reach, &a.channels, now).map_err(Some)?;
    let clv = j.clv.map_or(0.0, |c| c.value);
    let at_stake = a.clv_share * clv;
    let value = a.value + facts.extra_value + at_stake;
    let lever = cfg.levers.get(&a.name).copied().unwrap_or(1.0);
    let p = propensity(a, channel);
    let score = p.mean * value * a.weight * lever;
    if score < cfg.min_expected_value {
        return Err(Some(Suppressed::BelowMinimum));
    }
    Ok(Candidate {
        spec: a,
        facts,
        channel,
        p,
        value,
        clv,
        at_stake,
        lever,
        score,
        rank: p.draw * value * a.weight * lever,
    })
}

/// The factors that price a candidate: its propensity (mean and draw),
/// value, weight and lever.
fn pricing(p: Estimate, value: f64, weight: f64, lever: f64) -> [NamedValue; 5] {
    let named = |name, value| NamedValue { name, value };
    [
        named("propensity", round4(p.mean)),
        named("propensity_draw", round4(p.draw)),
        named("value", round2(value)),
        named("weight", weight),
        named("lever", lever),
    ]
}

/// The factors of the lifetime value at stake: the customer's CLV, the
/// action's share of it and their product (part of `value`).
fn lifetime(clv: f64, share: f64, at_stake: f64) -> [NamedValue; 3] {
    let named = |name, value| NamedValue { name, value };
    [
        named("clv", round2(clv)),
        named("clv_share", share),
        named("value_at_stake", round2(at_stake)),
    ]
}

pub(crate) fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

pub(crate) fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}
