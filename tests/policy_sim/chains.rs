//! Which identifiers a chain of the simulator's events links, for
//! `policy_sim.rs`: in, the events (as published) and the person-owned
//! identifiers; out, whether two sets of identifiers are linked; keeps a
//! union-find over the identifiers.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use onejourney_simulator::SimEvent;

/// Which person-owned identifiers a chain of events links (union-find over
/// every event's identifiers, as actions name them; shared and placeholder
/// values link no one, as in the simulator's truth).
pub struct Chains {
    index: HashMap<(String, String), usize>,
    parent: Vec<usize>,
}

impl Chains {
    pub fn of<'a>(
        events: impl IntoIterator<Item = &'a SimEvent>,
        owner: &HashMap<(String, String), usize>,
        ns: &onejourney_core::ids::Namespaces,
    ) -> Chains {
        let mut c = Chains {
            index: HashMap::new(),
            parent: Vec::new(),
        };
        for e in events {
            let ids = e.value["identifiers"].as_object().into_iter().flatten();
            let keys: Vec<usize> = ids
                .filter_map(|(n, v)| {
                    let k = ns.normalise(n, v.as_str()?).ok()?.ok()?;
                    let key = (ns.name(k.ns()).to_string(), k.value().to_string());
                    owner.contains_key(&key).then(|| c.id(key))
                })
                .collect();
            for w in keys.windows(2) {
                let (a, b) = (c.find(w[0]), c.find(w[1]));
                c.parent[a] = b;
            }
        }
        c
    }

    fn id(&mut self, key: (String, String)) -> usize {
        let next = self.parent.len();
        let i = *self.index.entry(key).or_insert(next);
        if i == next {
            self.parent.push(next);
        }
        i
    }

    fn find(&mut self, mut i: usize) -> usize {
        while self.parent[i] != i {
            self.parent[i] = self.parent[self.parent[i]];
            i = self.parent[i];
        }
        i
    }

    /// True when some identifier of `a` and some of `b` are linked.
    pub fn linked(&mut self, a: &BTreeSet<(String, String)>, b: &BTreeMap<String, String>) -> bool {
        let roots = |c: &mut Chains, keys: Vec<(String, String)>| -> BTreeSet<usize> {
            let found: Vec<usize> = keys.iter().filter_map(|k| c.index.get(k).copied()).collect();
            found.into_iter().map(|i| c.find(i)).collect()
        };
        let ra = roots(self, a.iter().cloned().collect());
        let rb = roots(self, b.iter().map(|(n, v)| (n.clone(), v.clone())).collect());
        !ra.is_disjoint(&rb)
    }
}
