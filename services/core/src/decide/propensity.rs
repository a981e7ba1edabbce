//! Propensities learned online from `action-outcomes`.
//!
//! The model: per (action, tier) a Beta-Bernoulli estimate of the probability
//! that a delivered action gets a response (clicked or converted):
//!
//! ```text
//! p = (responses + k * p0) / (trials + k)
//! ```
//!
//! where `p0` is the catalog's `propensity` for the action and `k` is
//! `decide.prior_strength` (how many outcomes the prior is worth). A trial is
//! one decision with any outcome (delivered, opened, clicked, converted,
//! dismissed); each decision counts once as a trial and at most once as a
//! response, however many outcomes arrive for it. Actions customers respond
//! to rise; actions they ignore or dismiss fall toward their observed rate.
//!
//! In: what each decision led to (`record`). Out: the estimate for an action
//! and tier. Keeps the counts per (action, tier), part of the state snapshot.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::ActionSpec;
use crate::vocab::Tier;

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

    /// Records what one decision led to: `new_trial` the first time any
    /// outcome arrives for it, `new_response` the first time it got a response.
    pub fn record(&mut self, action: &str, tier: Tier, new_trial: bool, new_response: bool) {
        let c = self.counts.entry((action.to_string(), tier)).or_default();
        if new_trial {
            c.trials += 1.0;
        }
        if new_response {
            c.responses += 1.0;
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
            p.record(&a.name, Tier::A, true, true);
        }
        for _ in 0..50 {
            p.record(&a.name, Tier::B, true, false);
        }
        assert!(p.estimate(a, Tier::A, cfg.prior_strength) > prior + 0.3);
        assert!(p.estimate(a, Tier::B, cfg.prior_strength) < prior);
        assert_eq!(
            p.estimate(a, Tier::C, cfg.prior_strength),
            prior,
            "tiers learn separately"
        );
    }
}
