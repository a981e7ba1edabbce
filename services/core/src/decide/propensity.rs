//! Propensities learned online from `action-outcomes`.
//!
//! The model: per (action, tier, channel) a Beta-Bernoulli posterior of the
//! probability that a delivered action gets a response (clicked or converted):
//!
//! ```text
//! Beta(responses + k * p0, trials - responses + k * (1 - p0)),  mean
//! p = (responses + k * p0) / (trials + k)
//! ```
//!
//! where `p0` is the catalog's `propensity` for the action and `k` is
//! `decide.prior_strength` (how many outcomes the prior is worth). A trial is
//! one decision with any outcome (delivered, opened, clicked, converted,
//! dismissed); each decision counts once as a trial and at most once as a
//! response, however many outcomes arrive for it. Actions customers respond
//! to rise; actions they ignore or dismiss fall toward their observed rate.
//! Arbitration ranks on a Thompson draw from the posterior (see `explore.rs`),
//! so an action with few outcomes still gets tried while the evidence is thin.
//!
//! In: what each decision led to (`record`). Out: the posterior for an action,
//! tier and channel; the estimate per (action, tier) and per action. Keeps
//! the counts per (action, tier) and per (action, tier, channel), part of the
//! state snapshot (the second since contract 1.4: absent before, read as
//! empty).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::ActionSpec;
use crate::vocab::{ContactChannel, Tier};

pub use crate::vocab::Outcome;

#[derive(Copy, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Counts {
    trials: f64,
    responses: f64,
}

/// Learned response rates.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Propensities {
    #[serde(with = "pairs")]
    counts: HashMap<(String, Tier), Counts>,
    /// The same per contact channel. Absent in snapshots written before it.
    #[serde(default, with = "pairs")]
    by_channel: HashMap<(String, Tier, ContactChannel), Counts>,
}

/// A Beta posterior of an action's response rate.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Posterior {
    pub alpha: f64,
    pub beta: f64,
}

impl Posterior {
    pub fn mean(self) -> f64 {
        self.alpha / (self.alpha + self.beta)
    }

    /// A Thompson draw for `seed` (see [`explore::beta`](super::explore::beta)).
    pub fn draw(self, seed: u64) -> f64 {
        super::explore::beta(self.alpha, self.beta, seed)
    }
}

fn posterior(c: Counts, p0: f64, k: f64) -> Posterior {
    Posterior {
        alpha: c.responses + k * p0,
        beta: (c.trials - c.responses).max(0.0) + k * (1.0 - p0),
    }
}

/// A map with tuple keys as a list of pairs (formats want string keys).
mod pairs {
    use std::collections::HashMap;
    use std::hash::Hash;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<K: Serialize, V: Serialize, S: Serializer>(m: &HashMap<K, V>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(m.iter())
    }

    pub fn deserialize<'de, K, V, D>(d: D) -> Result<HashMap<K, V>, D::Error>
    where
        K: Deserialize<'de> + Eq + Hash,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Vec::<(K, V)>::deserialize(d).map(|v| v.into_iter().collect())
    }
}

impl Propensities {
    /// The current estimate for `action` among customers of `tier`.
    pub fn estimate(&self, action: &ActionSpec, tier: Tier, prior_strength: f64) -> f64 {
        let c = self
            .counts
            .get(&(action.name.clone(), tier))
            .copied()
            .unwrap_or_default();
        (c.responses + prior_strength * action.propensity) / (c.trials + prior_strength)
    }

    /// The posterior for `action` among customers of `tier` reached on `channel`.
    pub fn posterior(&self, action: &ActionSpec, tier: Tier, channel: ContactChannel, k: f64) -> Posterior {
        let c = self
            .by_channel
            .get(&(action.name.clone(), tier, channel))
            .copied()
            .unwrap_or_default();
        posterior(c, action.propensity, k)
    }

    /// The posterior for `action` over every tier and channel, with its
    /// trials and responses: what the action model reports.
    pub fn overall(&self, action: &ActionSpec, k: f64) -> (Posterior, f64, f64) {
        let c =
            self.counts
                .iter()
                .filter(|((name, _), _)| *name == action.name)
                .fold(Counts::default(), |acc, (_, c)| Counts {
                    trials: acc.trials + c.trials,
                    responses: acc.responses + c.responses,
                });
        (posterior(c, action.propensity, k), c.trials, c.responses)
    }

    /// Records what one decision led to: `new_trial` the first time any
    /// outcome arrives for it, `new_response` the first time it got a
    /// response. `channel`: the one it went out on (`None`: unknown).
    pub fn record(
        &mut self,
        action: &str,
        tier: Tier,
        channel: Option<ContactChannel>,
        new_trial: bool,
        new_response: bool,
    ) {
        let add = |c: &mut Counts| {
            c.trials += f64::from(u8::from(new_trial));
            c.responses += f64::from(u8::from(new_response));
        };
        add(self.counts.entry((action.to_string(), tier)).or_default());
        if let Some(ch) = channel {
            add(self.by_channel.entry((action.to_string(), tier, ch)).or_default());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::default_decide;

    #[test]
    fn responses_raise_and_silence_lowers_the_estimate() {
        let cfg = default_decide();
        let a = &cfg.actions[0];
        let mut p = Propensities::default();
        let prior = p.estimate(a, Tier::A, cfg.prior_strength);
        assert!((prior - a.propensity).abs() < 1e-12);
        for _ in 0..50 {
            p.record(&a.name, Tier::A, Some(ContactChannel::Email), true, true);
        }
        for _ in 0..50 {
            p.record(&a.name, Tier::B, Some(ContactChannel::Email), true, false);
        }
        assert!(p.estimate(a, Tier::A, cfg.prior_strength) > prior + 0.3);
        assert!(p.estimate(a, Tier::B, cfg.prior_strength) < prior);
        assert_eq!(
            p.estimate(a, Tier::C, cfg.prior_strength),
            prior,
            "tiers learn separately"
        );
        let k = cfg.prior_strength;
        let email = p.posterior(a, Tier::A, ContactChannel::Email, k);
        assert!((email.mean() - p.estimate(a, Tier::A, k)).abs() < 1e-12);
        let push = p.posterior(a, Tier::A, ContactChannel::Push, k);
        assert!((push.mean() - a.propensity).abs() < 1e-12, "channels learn separately");
        let (all, trials, responses) = p.overall(a, k);
        assert_eq!((trials, responses), (100.0, 50.0));
        assert!((all.mean() - (50.0 + k * a.propensity) / (100.0 + k)).abs() < 1e-12);
    }
}
