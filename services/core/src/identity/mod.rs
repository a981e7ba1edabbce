//! The identity graph: which identifiers belong to one person.
//!
//! In: a validated [`ChannelEvent`]. Out: a [`Stitch`]: the One ID the event
//! belongs to, the [`IdentityOp`]s that change the graph, and the links that
//! were refused.
//!
//! The graph changes only by applying `IdentityOp`s, in order ([`IdentityGraph::apply`]):
//! they are the one ordered stream of identity changes that a changelog or a
//! second process can replay. [`IdentityGraph::stitch`] plans the ops from the
//! current graph and applies them.
//!
//! Rules kept here:
//! - every linking identifier on one event ends in one profile, unless that
//!   would put two values of a unique namespace (`customer_id`, `loyalty_id`)
//!   in one profile: then that link is refused and the event stays with the
//!   profile of its strongest (highest-priority) identifier;
//! - household identifiers (`card_token`) are recorded on the profile but never
//!   indexed, so they never link two profiles;
//! - a new profile's One ID is derived from its strongest identifier; when
//!   profiles merge, the one first seen earliest (event time; ties: smaller id)
//!   survives. Replaying the same input gives the same One IDs.
//!
//! Single writer: the maps are `DashMap`s so readers (the lookup API) can read
//! while the pipeline writes, but only one task calls `stitch`/`apply`, and no
//! method holds a guard on one map while taking another on the same map.

use std::collections::BTreeMap;
use std::sync::Arc;

use dashmap::DashMap;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::event::{Channel, ChannelEvent};
use crate::ids::{IdKey, Kind, Namespaces, Ns};
use crate::time::EventTime;

#[cfg(test)]
mod tests;

/// The opaque, stable id of one profile.
pub type OneId = Arc<str>;

/// Which rule made a link.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// The identifier founded a new profile.
    Founder,
    /// The identifier appeared on one event with an identifier of the profile.
    SameEvent,
    /// Two profiles were joined because one event carried identifiers of both.
    Merge,
    /// A household identifier: recorded on the profile, never used to link.
    Household,
}

/// Where a link came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Provenance {
    pub event_id: Arc<str>,
    pub channel: Channel,
    pub at: EventTime,
    pub rule: Rule,
}

/// One edge of a profile: `from` joined the profile through `to`.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkRecord {
    pub from: IdKey,
    /// The identifier it was linked to; `None` for the founder of a profile.
    pub to: Option<IdKey>,
    pub provenance: Provenance,
}

/// A profile: a set of identifiers that belong to one person.
#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    pub one_id: OneId,
    pub first_seen: EventTime,
    /// Linking identifiers, in the order they joined.
    pub ids: Vec<IdKey>,
    /// Household identifiers, recorded but never linking.
    pub households: Vec<IdKey>,
    /// How every identifier joined, for `explain`.
    pub links: Vec<LinkRecord>,
}

/// A change to the graph. Applying the same ops in the same order to the same
/// graph gives the same graph.
#[derive(Clone, Debug, PartialEq)]
pub enum IdentityOp {
    Create {
        one_id: OneId,
        at: EventTime,
    },
    Attach {
        one_id: OneId,
        link: LinkRecord,
    },
    Merge {
        survivor: OneId,
        merged: OneId,
        link: LinkRecord,
    },
    Seen {
        one_id: OneId,
        at: EventTime,
    },
}

/// Why a link was refused.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// Two different values of a unique namespace would share a profile.
    UniqueConflict,
}

impl RejectReason {
    pub fn label(self) -> &'static str {
        match self {
            RejectReason::UniqueConflict => "unique_conflict",
        }
    }
}

/// A refused link: `key` stays where it is (`kept_in`, or nowhere if new).
#[derive(Clone, Debug, PartialEq)]
pub struct Rejection {
    pub key: IdKey,
    pub reason: RejectReason,
    pub kept_in: Option<OneId>,
}

/// The result of stitching one event.
#[derive(Clone, Debug, PartialEq)]
pub struct Stitch {
    pub one_id: OneId,
    /// The event's strongest identifier that is now in the profile.
    pub anchor: IdKey,
    pub ops: Vec<IdentityOp>,
    pub rejected: Vec<Rejection>,
}

impl Stitch {
    pub fn merged(&self) -> impl Iterator<Item = (&OneId, &LinkRecord)> {
        self.ops.iter().filter_map(|op| match op {
            IdentityOp::Merge { merged, link, .. } => Some((merged, link)),
            _ => None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StitchError {
    #[error("the event has no identifier that can link (only household identifiers)")]
    NoLinkableIdentifier,
}

impl StitchError {
    pub fn reason(&self) -> &'static str {
        "no_linkable_identifier"
    }
}

/// The in-memory identity graph.
pub struct IdentityGraph {
    rules: Arc<Namespaces>,
    index: DashMap<IdKey, OneId>,
    profiles: DashMap<OneId, Profile>,
}

impl IdentityGraph {
    pub fn new(rules: Arc<Namespaces>) -> Self {
        IdentityGraph {
            rules,
            index: DashMap::new(),
            profiles: DashMap::new(),
        }
    }

    pub fn namespaces(&self) -> &Arc<Namespaces> {
        &self.rules
    }

    pub fn profile_count(&self) -> usize {
        self.profiles.len()
    }

    pub fn identifier_count(&self) -> usize {
        self.index.len()
    }

    /// An estimate of the bytes the graph holds (see `State::approx_bytes`).
    pub fn approx_bytes(&self) -> usize {
        use std::mem::size_of;
        const MAP_ENTRY: usize = 16;
        let index: usize = self
            .index
            .iter()
            .map(|e| size_of::<IdKey>() + size_of::<OneId>() + e.key().value.len() + 16 + MAP_ENTRY)
            .sum();
        let profiles: usize = self
            .profiles
            .iter()
            .map(|p| {
                size_of::<Profile>()
                    + p.one_id.len()
                    + (p.ids.capacity() + p.households.capacity()) * size_of::<IdKey>()
                    + p.links.capacity() * size_of::<LinkRecord>()
                    + p.links.iter().map(|l| l.provenance.event_id.len() + 16).sum::<usize>()
                    + MAP_ENTRY
            })
            .sum();
        index + profiles
    }

    /// The One ID an identifier belongs to.
    pub fn one_id_of(&self, key: &IdKey) -> Option<OneId> {
        self.index.get(key).map(|r| r.value().clone())
    }

    /// A copy of a profile.
    pub fn profile(&self, one_id: &str) -> Option<Profile> {
        self.profiles.get(one_id).map(|p| p.value().clone())
    }

    /// Every profile's identifiers, sorted: the partition into profiles.
    pub fn partition(&self) -> BTreeMap<OneId, Vec<IdKey>> {
        self.profiles
            .iter()
            .map(|p| {
                let mut ids = p.ids.clone();
                ids.sort();
                (p.one_id.clone(), ids)
            })
            .collect()
    }

    /// True when `ev` has an identifier that can anchor it to a profile (not
    /// only household identifiers); `stitch` fails otherwise.
    pub fn can_link(&self, ev: &ChannelEvent) -> bool {
        ev.ids.iter().any(|k| {
            let r = self.rules.rule(k.ns);
            r.links && r.kind != Kind::Household
        })
    }

    /// Plans and applies the ops for one event.
    pub fn stitch(&self, ev: &ChannelEvent) -> Result<Stitch, StitchError> {
        let stitch = self.plan(ev)?;
        for op in &stitch.ops {
            self.apply(op);
        }
        Ok(stitch)
    }

    /// Decides what `ev` changes, without changing anything.
    pub fn plan(&self, ev: &ChannelEvent) -> Result<Stitch, StitchError> {
        let mut linking: Vec<&IdKey> = Vec::with_capacity(ev.ids.len());
        let mut households: Vec<&IdKey> = Vec::new();
        for key in &ev.ids {
            let rule = self.rules.rule(key.ns);
            if rule.links && rule.kind != Kind::Household {
                linking.push(key);
            } else {
                households.push(key);
            }
        }
        if linking.is_empty() {
            return Err(StitchError::NoLinkableIdentifier);
        }
        // Strongest first; ties by namespace and value so the order is total.
        linking.sort_by(|a, b| {
            let (pa, pb) = (self.rules.rule(a.ns).priority, self.rules.rule(b.ns).priority);
            pb.cmp(&pa).then_with(|| a.cmp(b))
        });

        let mut uniques: BTreeMap<Ns, Arc<str>> = BTreeMap::new();
        // Profiles joining, with the first identifier on the event that led to each.
        let mut members: Vec<(OneId, EventTime, IdKey)> = Vec::new();
        let mut fresh: Vec<IdKey> = Vec::new();
        let mut rejected = Vec::new();
        for key in linking {
            match self.one_id_of(key) {
                Some(one_id) => {
                    if members.iter().any(|(m, _, _)| *m == one_id) {
                        continue;
                    }
                    let Some((first_seen, theirs)) = self.uniques_of(&one_id) else {
                        continue;
                    };
                    if compatible(&uniques, &theirs) {
                        uniques.extend(theirs);
                        members.push((one_id, first_seen, key.clone()));
                    } else {
                        rejected.push(Rejection {
                            key: key.clone(),
                            reason: RejectReason::UniqueConflict,
                            kept_in: Some(one_id),
                        });
                    }
                }
                None => {
                    if self.rules.rule(key.ns).unique {
                        match uniques.get(&key.ns) {
                            Some(v) if *v != key.value => {
                                rejected.push(Rejection {
                                    key: key.clone(),
                                    reason: RejectReason::UniqueConflict,
                                    kept_in: None,
                                });
                                continue;
                            }
                            _ => {
                                uniques.insert(key.ns, key.value.clone());
                            }
                        }
                    }
                    fresh.push(key.clone());
                }
            }
        }

        let provenance = |rule| Provenance {
            event_id: Arc::from(ev.event_id.as_str()),
            channel: ev.channel,
            at: ev.occurred_at,
            rule,
        };
        let mut ops = Vec::new();
        // The survivor: first seen earliest, ties by the smaller id.
        members.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
        let (one_id, anchor, first_seen) = match members.first() {
            Some((one_id, first_seen, via)) => (one_id.clone(), via.clone(), *first_seen),
            None => {
                // `fresh` is non-empty: the strongest identifier is always accepted.
                let founder = fresh.remove(0);
                let one_id = derive_one_id(self.rules.name(founder.ns), &founder.value);
                ops.push(IdentityOp::Create {
                    one_id: one_id.clone(),
                    at: ev.occurred_at,
                });
                ops.push(IdentityOp::Attach {
                    one_id: one_id.clone(),
                    link: LinkRecord {
                        from: founder.clone(),
                        to: None,
                        provenance: provenance(Rule::Founder),
                    },
                });
                (one_id, founder, ev.occurred_at)
            }
        };
        for (merged, _, via) in members.iter().skip(1) {
            ops.push(IdentityOp::Merge {
                survivor: one_id.clone(),
                merged: merged.clone(),
                link: LinkRecord {
                    from: via.clone(),
                    to: Some(anchor.clone()),
                    provenance: provenance(Rule::Merge),
                },
            });
        }
        for key in fresh {
            ops.push(IdentityOp::Attach {
                one_id: one_id.clone(),
                link: LinkRecord {
                    from: key,
                    to: Some(anchor.clone()),
                    provenance: provenance(Rule::SameEvent),
                },
            });
        }
        if !households.is_empty() {
            let held = self.profile_households(&one_id);
            for key in households {
                if !held.contains(key) {
                    ops.push(IdentityOp::Attach {
                        one_id: one_id.clone(),
                        link: LinkRecord {
                            from: key.clone(),
                            to: Some(anchor.clone()),
                            provenance: provenance(Rule::Household),
                        },
                    });
                }
            }
        }
        let earliest = members.iter().map(|m| m.1).min().unwrap_or(first_seen);
        if ev.occurred_at < earliest {
            ops.push(IdentityOp::Seen {
                one_id: one_id.clone(),
                at: ev.occurred_at,
            });
        }
        Ok(Stitch {
            one_id,
            anchor,
            ops,
            rejected,
        })
    }

    /// Applies one op. Ops that refer to a profile that no longer exists are ignored.
    pub fn apply(&self, op: &IdentityOp) {
        match op {
            IdentityOp::Create { one_id, at } => {
                self.profiles.entry(one_id.clone()).or_insert_with(|| Profile {
                    one_id: one_id.clone(),
                    first_seen: *at,
                    ids: Vec::new(),
                    households: Vec::new(),
                    links: Vec::new(),
                });
            }
            IdentityOp::Attach { one_id, link } => {
                let household = link.provenance.rule == Rule::Household;
                if let Some(mut p) = self.profiles.get_mut(one_id) {
                    if household {
                        p.households.push(link.from.clone());
                    } else {
                        p.ids.push(link.from.clone());
                    }
                    p.links.push(link.clone());
                } else {
                    return;
                }
                if !household {
                    self.index.insert(link.from.clone(), one_id.clone());
                }
            }
            IdentityOp::Merge { survivor, merged, link } => {
                if !self.profiles.contains_key(survivor) {
                    return;
                }
                let Some((_, gone)) = self.profiles.remove(merged) else {
                    return;
                };
                for key in &gone.ids {
                    self.index.insert(key.clone(), survivor.clone());
                }
                if let Some(mut p) = self.profiles.get_mut(survivor) {
                    p.first_seen = p.first_seen.min(gone.first_seen);
                    p.ids.extend(gone.ids);
                    for h in gone.households {
                        if !p.households.contains(&h) {
                            p.households.push(h);
                        }
                    }
                    p.links.extend(gone.links);
                    p.links.push(link.clone());
                }
            }
            IdentityOp::Seen { one_id, at } => {
                if let Some(mut p) = self.profiles.get_mut(one_id) {
                    p.first_seen = p.first_seen.min(*at);
                }
            }
        }
    }

    fn uniques_of(&self, one_id: &str) -> Option<(EventTime, Uniques)> {
        let p = self.profiles.get(one_id)?;
        let uniques = p
            .ids
            .iter()
            .filter(|k| self.rules.rule(k.ns).unique)
            .map(|k| (k.ns, k.value.clone()))
            .collect();
        Some((p.first_seen, uniques))
    }

    fn profile_households(&self, one_id: &str) -> Vec<IdKey> {
        self.profiles
            .get(one_id)
            .map(|p| p.households.clone())
            .unwrap_or_default()
    }
}

/// The values a profile holds in unique namespaces.
type Uniques = Vec<(Ns, Arc<str>)>;

fn compatible(acc: &BTreeMap<Ns, Arc<str>>, theirs: &[(Ns, Arc<str>)]) -> bool {
    theirs.iter().all(|(ns, v)| acc.get(ns).is_none_or(|mine| mine == v))
}

/// `oj-` and 24 hex digits of SHA-256 over the founding identifier.
pub fn derive_one_id(namespace: &str, value: &str) -> OneId {
    let mut h = Sha256::new();
    h.update(b"onejourney/one-id/v1\0");
    h.update(namespace.as_bytes());
    h.update(b"\0");
    h.update(value.as_bytes());
    let digest = h.finalize();
    Arc::from(format!("oj-{}", hex::encode(&digest[..12])))
}
