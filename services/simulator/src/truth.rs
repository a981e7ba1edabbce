//! Identity ground truth, and the identity graph scored against it.
//!
//! In: a [`Simulation`]; then, for scoring, the One ID an engine gives each
//! identifier. Out: [`PairScore`]: pairwise precision and recall over the
//! identifiers people used, and the recall over what any engine could link.
//!
//! Who owns an identifier comes from the events, not from the person records:
//! an identifier seen on the events of one person is theirs; one seen on the
//! events of several (a family tablet) is [`Owner::Shared`]; the harder mix's
//! placeholders are [`Owner::Junk`]. Shared and junk identifiers belong to no
//! one, so they take part in no true pair; an engine that links strangers
//! through them loses precision on the strangers' own identifiers. Card
//! tokens never link and are left out.
//!
//! Two of a person's identifiers are *linkable* when a chain of that
//! person's own events connects them (each event carrying two of the chain's
//! identifiers, shared and junk ones aside). A cookie only ever used
//! anonymously is not linkable to anything: no engine can know whose it is.

use std::collections::{BTreeMap, HashMap};

use crate::Simulation;

/// Who an identifier belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    Person(usize),
    /// Seen on the events of several people.
    Shared,
    /// A placeholder value.
    Junk,
}

/// Namespaces whose identifiers never link (left out of the truth).
const NEVER_LINK: [&str; 1] = ["card_token"];

/// A (namespace, value as sent) pair.
pub type Identifier = (String, String);

#[derive(Debug, Default)]
pub struct IdentityTruth {
    pub owners: BTreeMap<Identifier, Owner>,
    /// Each person-owned identifier's linkable group.
    group: HashMap<Identifier, usize>,
}

/// Pairwise figures: a pair is two person-owned identifiers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PairScore {
    /// Person-owned identifiers scored.
    pub identifiers: usize,
    /// Pairs of one person's identifiers.
    pub true_pairs: u64,
    /// Pairs the engine put in one profile.
    pub predicted_pairs: u64,
    /// Pairs both: one person's, in one profile.
    pub correct_pairs: u64,
    /// Of the true pairs, those a chain of the person's events connects.
    pub linkable_pairs: u64,
    /// Of those, the ones in one profile.
    pub linked_linkable_pairs: u64,
    /// correct / predicted (1 when nothing was linked).
    pub precision: f64,
    /// correct / true.
    pub recall: f64,
    /// linked linkable / linkable: recall over what can be known.
    pub linkable_recall: f64,
    /// Profiles holding identifiers of more than one person.
    pub profiles_mixing_people: usize,
    /// Identifiers the engine put in no profile.
    pub unresolved: usize,
}

impl IdentityTruth {
    pub fn from_simulation(sim: &Simulation) -> Self {
        let mut owners: BTreeMap<Identifier, Owner> = BTreeMap::new();
        for e in &sim.events {
            for id in identifiers(&e.value) {
                let junk = crate::harder::JUNK
                    .iter()
                    .any(|(ns, v)| *ns == id.0 && v.eq_ignore_ascii_case(&id.1));
                let owner = if junk { Owner::Junk } else { Owner::Person(e.person) };
                owners
                    .entry(id)
                    .and_modify(|o| {
                        if *o != owner && *o != Owner::Junk {
                            *o = Owner::Shared;
                        }
                    })
                    .or_insert(owner);
            }
        }
        // Linkable groups: union-find over each event's person-owned identifiers.
        let keys: Vec<&Identifier> = owners
            .iter()
            .filter(|(_, o)| matches!(o, Owner::Person(_)))
            .map(|(k, _)| k)
            .collect();
        let index: HashMap<&Identifier, usize> = keys.iter().enumerate().map(|(i, k)| (*k, i)).collect();
        let mut parent: Vec<usize> = (0..keys.len()).collect();
        for e in &sim.events {
            let ids: Vec<usize> = identifiers(&e.value)
                .iter()
                .filter_map(|k| index.get(k).copied())
                .collect();
            for w in ids.windows(2) {
                let (a, b) = (find(&mut parent, w[0]), find(&mut parent, w[1]));
                parent[a] = b;
            }
        }
        let group = keys
            .iter()
            .enumerate()
            .map(|(i, k)| ((*k).clone(), find(&mut parent, i)))
            .collect();
        IdentityTruth { owners, group }
    }

    /// How many identifiers have each kind of owner: (person, shared, junk).
    pub fn counts(&self) -> (usize, usize, usize) {
        let n = |f: fn(&Owner) -> bool| self.owners.values().filter(|o| f(o)).count();
        (
            n(|o| matches!(o, Owner::Person(_))),
            n(|o| *o == Owner::Shared),
            n(|o| *o == Owner::Junk),
        )
    }

    /// Scores an engine's profiles: `one_id_of(namespace, value)` is the One
    /// ID the engine gives the identifier (None: in no profile).
    pub fn score(&self, mut one_id_of: impl FnMut(&str, &str) -> Option<String>) -> PairScore {
        // cluster -> (person, linkable group) of each identifier in it
        let mut clusters: HashMap<String, Vec<(usize, usize)>> = HashMap::new();
        let mut score = PairScore::default();
        for (id, owner) in &self.owners {
            let Owner::Person(p) = owner else { continue };
            let group = self.group.get(id).copied().unwrap_or(usize::MAX);
            score.identifiers += 1;
            let cluster = one_id_of(&id.0, &id.1).unwrap_or_else(|| {
                score.unresolved += 1;
                format!("unresolved {}={}", id.0, id.1)
            });
            clusters.entry(cluster).or_default().push((*p, group));
        }
        let mut people: HashMap<usize, u64> = HashMap::new();
        let mut groups: HashMap<usize, u64> = HashMap::new();
        for members in clusters.values() {
            score.predicted_pairs += pairs(members.len() as u64);
            let mut by_person: BTreeMap<usize, u64> = BTreeMap::new();
            let mut by_group: BTreeMap<usize, u64> = BTreeMap::new();
            for (p, g) in members {
                *by_person.entry(*p).or_default() += 1;
                *by_group.entry(*g).or_default() += 1;
                *people.entry(*p).or_default() += 1;
                *groups.entry(*g).or_default() += 1;
            }
            score.correct_pairs += by_person.values().map(|n| pairs(*n)).sum::<u64>();
            score.linked_linkable_pairs += by_group.values().map(|n| pairs(*n)).sum::<u64>();
            if by_person.len() > 1 {
                score.profiles_mixing_people += 1;
            }
        }
        score.true_pairs = people.values().map(|n| pairs(*n)).sum();
        score.linkable_pairs = groups.values().map(|n| pairs(*n)).sum();
        let ratio = |a: u64, b: u64| if b == 0 { 1.0 } else { a as f64 / b as f64 };
        score.precision = ratio(score.correct_pairs, score.predicted_pairs);
        score.recall = ratio(score.correct_pairs, score.true_pairs);
        score.linkable_recall = ratio(score.linked_linkable_pairs, score.linkable_pairs);
        score
    }
}

/// The linking identifiers on an event, as sent.
fn identifiers(event: &serde_json::Value) -> Vec<Identifier> {
    let Some(ids) = event.get("identifiers").and_then(|v| v.as_object()) else {
        return Vec::new();
    };
    ids.iter()
        .filter(|(ns, _)| !NEVER_LINK.contains(&ns.as_str()))
        .filter_map(|(ns, v)| v.as_str().map(|v| (ns.clone(), v.to_string())))
        .collect()
}

fn pairs(n: u64) -> u64 {
    n * n.saturating_sub(1) / 2
}

fn find(parent: &mut [usize], i: usize) -> usize {
    let mut root = i;
    while parent[root] != root {
        root = parent[root];
    }
    let mut j = i;
    while parent[j] != root {
        let next = parent[j];
        parent[j] = root;
        j = next;
    }
    root
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{SimEvent, Stream};

    fn event(person: usize, ids: serde_json::Value) -> SimEvent {
        SimEvent {
            stream: Stream::Web,
            key: String::new(),
            at_ms: 0,
            person,
            value: json!({ "identifiers": ids }),
            late_ms: 0,
        }
    }

    /// Person 0: cookie a + email a (together), cookie a2 alone (never
    /// linked); person 1: cookie b + email b; both used tablet t; one junk.
    fn sim() -> Simulation {
        Simulation {
            people: Vec::new(),
            events: vec![
                event(0, json!({"cookie_id": "a", "email": "a@x", "card_token": "tok"})),
                event(0, json!({"cookie_id": "a2"})),
                event(1, json!({"cookie_id": "b", "email": "b@x"})),
                event(0, json!({"device_id": "t", "email": "a@x"})),
                event(1, json!({"device_id": "t", "email": "b@x"})),
                event(1, json!({"email": "test@test.com", "cookie_id": "b"})),
            ],
        }
    }

    fn assign<'a>(map: &'a [(&'a str, &'a str)]) -> impl FnMut(&str, &str) -> Option<String> + 'a {
        move |_, v| map.iter().find(|(k, _)| *k == v).map(|(_, o)| o.to_string())
    }

    #[test]
    fn owners_come_from_the_events() {
        let t = IdentityTruth::from_simulation(&sim());
        let o = |ns: &str, v: &str| t.owners.get(&(ns.to_string(), v.to_string())).copied();
        assert_eq!(o("device_id", "t"), Some(Owner::Shared));
        assert_eq!(o("email", "test@test.com"), Some(Owner::Junk));
        assert_eq!(o("cookie_id", "a2"), Some(Owner::Person(0)));
        assert_eq!(o("card_token", "tok"), None);
        assert_eq!(t.counts(), (5, 1, 1));
    }

    #[test]
    fn a_perfect_engine_scores_one_and_the_unlinkable_cookie_costs_only_raw_recall() {
        let t = IdentityTruth::from_simulation(&sim());
        let s = t.score(assign(&[
            ("a", "A"),
            ("a@x", "A"),
            ("a2", "A2"),
            ("b", "B"),
            ("b@x", "B"),
        ]));
        assert_eq!((s.identifiers, s.true_pairs, s.predicted_pairs), (5, 4, 2));
        assert_eq!(s.precision, 1.0);
        assert_eq!(s.recall, 0.5);
        assert_eq!(s.linkable_recall, 1.0);
        assert_eq!(s.profiles_mixing_people, 0);
    }

    #[test]
    fn linking_strangers_through_the_tablet_costs_precision() {
        let t = IdentityTruth::from_simulation(&sim());
        let s = t.score(assign(&[("a", "X"), ("a@x", "X"), ("b", "X"), ("b@x", "X")]));
        // 6 pairs predicted among a, a@x, b, b@x: 2 are right.
        assert_eq!((s.predicted_pairs, s.correct_pairs), (6, 2));
        assert!((s.precision - 2.0 / 6.0).abs() < 1e-12);
        assert_eq!(s.profiles_mixing_people, 1);
        assert_eq!(s.unresolved, 1);
    }

    #[test]
    fn splitting_a_person_costs_linkable_recall() {
        let t = IdentityTruth::from_simulation(&sim());
        let s = t.score(assign(&[("a", "A"), ("a@x", "A'"), ("b", "B"), ("b@x", "B")]));
        assert_eq!((s.linkable_pairs, s.linked_linkable_pairs), (2, 1));
        assert_eq!(s.linkable_recall, 0.5);
        assert_eq!(s.precision, 1.0);
    }
}
