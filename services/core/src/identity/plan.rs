//! One fold step, decided: which profile the evidence lands on and the ops
//! that get it there, without changing the graph.
//!
//! In: the graph as it is and one [`Evidence`] (sorted identifiers, its
//! canonical key). Out: a [`Stitch`] whose `ops` the caller applies in order.
//!
//! The step runs the rules of the module doc, one function each:
//! 1. [`Plan::roles`]: linking, household and already shared identifiers;
//! 2. [`Plan::newly_shared`]: the shared-device rule (count the persons first
//!    seen with each device);
//! 3. [`Plan::leave_shared`]: a device that becomes shared leaves for a
//!    profile of its own; shared devices are refused;
//! 4. [`Plan::membership`]: which profiles and new identifiers join, which
//!    are refused (unique conflict, profile full);
//! 5. [`Plan::emit`]: the survivor and the ops that found, merge and attach,
//!    and one `Refused` op per refusal, kept on the survivor for `explain`.
//!
//! What it keeps: the plan reads the graph only; the same graph and evidence
//! give the same ops, in the same order, and the same One IDs (a One ID is
//! derived from the founding identifier, never from a counter of arrivals).

use std::collections::BTreeMap;

use super::types::{
    Evidence, IdentityOp, LinkRecord, Moved, OneId, Provenance, RefusedLink, RejectReason, Rejection, Rule, Stitch,
    StitchError,
};
use super::{IdentityGraph, Writer};
use crate::ids::{IdKey, Kind, Ns};
use crate::time::EventTime;

impl IdentityGraph {
    /// Decides what one fold step changes, without changing anything.
    pub(super) fn plan(&self, w: &Writer, evidence: &Evidence) -> Result<Stitch, StitchError> {
        let mut plan = Plan {
            graph: self,
            w,
            evidence,
            ops: Vec::new(),
            rejected: Vec::new(),
            taken: Vec::new(),
        };
        let mut roles = plan.roles()?;
        let newly_shared = plan.newly_shared(&roles.linking);
        plan.leave_shared(&mut roles, &newly_shared);
        let joining = plan.membership(&roles.linking, &newly_shared);
        Ok(plan.emit(joining, &roles.households, &newly_shared))
    }

    /// The One ID of a profile founded by `founder`: derived from it, or, when
    /// a profile with that id still exists (its founder left it: caps, a shared
    /// device), derived from it and a counter. Deterministic for a given fold.
    fn new_one_id(&self, w: &Writer, founder: &IdKey, taken: &[OneId]) -> OneId {
        let name = self.rules.name(founder.ns());
        let derive = |value: &str| w.derivation.one_id(name, value);
        let mut one_id = derive(founder.value());
        let mut n = 1u32;
        while self.profiles.contains_key(&one_id) || taken.contains(&one_id) {
            one_id = derive(&format!("{}\0{n}", founder.value()));
            n += 1;
        }
        one_id
    }

    /// What the plan needs to know about a profile that may join.
    fn summary(&self, one_id: &str, leaving: &[&IdKey]) -> Option<Summary> {
        self.with_profile(one_id, |p| {
            let ids = p.ids().iter().filter(|k| !leaving.contains(k));
            Summary {
                first_seen: p.first_seen,
                uniques: ids
                    .clone()
                    .filter(|k| self.rules.rule(k.ns()).unique)
                    .map(|k| (k.ns(), k.clone()))
                    .collect(),
                persons: ids.filter(|k| self.rules.rule(k.ns()).kind == Kind::Person).count(),
            }
        })
    }
}

/// One fold step being planned: what it reads and what it has decided so far.
struct Plan<'a> {
    graph: &'a IdentityGraph,
    w: &'a Writer,
    evidence: &'a Evidence,
    /// The ops decided so far, in the order they are applied.
    ops: Vec<IdentityOp>,
    rejected: Vec<Rejection>,
    /// One IDs handed out by this step (not in the graph yet).
    taken: Vec<OneId>,
}

/// The evidence's identifiers by the part they play, strongest first.
struct Roles<'a> {
    linking: Vec<&'a IdKey>,
    /// Recorded on the profile, never linking.
    households: Vec<&'a IdKey>,
    /// Devices that are shared and no longer link.
    shared: Vec<&'a IdKey>,
}

/// The profiles and new identifiers that end in one profile.
#[derive(Default)]
struct Joining {
    /// The values of unique namespaces they hold together.
    uniques: BTreeMap<Ns, IdKey>,
    /// The person identifiers they hold together.
    persons: usize,
    /// Profiles joining, with the first identifier on the event that led to each.
    members: Vec<(OneId, EventTime, IdKey)>,
    /// Identifiers in no profile yet.
    fresh: Vec<IdKey>,
    /// Refused identifiers in no profile: each founds its own.
    founders: Vec<(IdKey, OneId)>,
}

impl Joining {
    fn is_empty(&self) -> bool {
        self.members.is_empty() && self.fresh.is_empty()
    }
}

struct Summary {
    first_seen: EventTime,
    uniques: Uniques,
    persons: usize,
}

/// The values a profile holds in unique namespaces.
type Uniques = Vec<(Ns, IdKey)>;

impl<'a> Plan<'a> {
    fn at(&self) -> EventTime {
        self.evidence.key.at
    }

    fn provenance(&self, rule: Rule) -> Provenance {
        Provenance {
            event_id: self.evidence.key.event_id.clone(),
            channel: self.evidence.key.channel,
            at: self.at(),
            rule,
        }
    }

    /// A new One ID for `founder`, distinct from those this step handed out.
    fn new_one_id(&mut self, founder: &IdKey) -> OneId {
        let one_id = self.graph.new_one_id(self.w, founder, &self.taken);
        self.taken.push(one_id.clone());
        one_id
    }

    /// Step 1: sorts the identifiers by the part they play; an error when
    /// none can link.
    fn roles(&self) -> Result<Roles<'a>, StitchError> {
        let g = self.graph;
        let mut roles = Roles {
            linking: Vec::with_capacity(self.evidence.ids.len()),
            households: Vec::new(),
            shared: Vec::new(),
        };
        for key in self.evidence.ids.iter() {
            if !g.links(key) {
                roles.households.push(key);
            } else if self.w.devices.get(key).is_some_and(|d| d.shared) {
                roles.shared.push(key);
            } else {
                roles.linking.push(key);
            }
        }
        if roles.linking.is_empty() && roles.shared.is_empty() {
            return Err(StitchError::NoLinkableIdentifier);
        }
        roles.linking.sort_by(|a, b| g.by_strength(a, b));
        roles.shared.sort_by(|a, b| g.by_strength(a, b));
        Ok(roles)
    }

    /// Step 2, the shared-device rule: counts the person values first seen
    /// with each linking device (emitting `DevicePerson` for the new ones)
    /// and returns the devices that pass the limit on this event.
    fn newly_shared(&mut self, linking: &[&'a IdKey]) -> Vec<&'a IdKey> {
        let rules = &self.graph.rules;
        let limits = rules.limits();
        let at = self.at();
        let w = self.w;
        let persons: Vec<&IdKey> = linking
            .iter()
            .copied()
            .filter(|k| rules.rule(k.ns()).kind == Kind::Person)
            .collect();
        let mut newly_shared = Vec::new();
        for device in linking
            .iter()
            .copied()
            .filter(|k| rules.rule(k.ns()).kind == Kind::Device)
        {
            let since = at.minus(limits.shared_device_window);
            let stat = w.devices.get(device);
            let mut seen: Vec<&IdKey> = stat
                .map(|s| s.persons.iter().filter(|(t, _)| *t >= since).map(|(_, p)| p).collect())
                .unwrap_or_default();
            for p in &persons {
                if !stat.is_some_and(|s| s.persons.iter().any(|(_, q)| q == *p)) {
                    self.ops.push(IdentityOp::DevicePerson {
                        device: device.clone(),
                        person: (*p).clone(),
                        at,
                    });
                    seen.push(p);
                }
            }
            let too_many = persons
                .iter()
                .any(|p| seen.iter().filter(|q| q.ns() == p.ns()).count() > limits.shared_device_max_persons);
            if too_many {
                newly_shared.push(device);
            }
        }
        newly_shared
    }

    /// Step 3: a device that becomes shared leaves its profile for one of its
    /// own; shared devices are refused, unless the event carries nothing
    /// else: then it lands on the strongest device's own profile.
    fn leave_shared(&mut self, roles: &mut Roles<'a>, newly_shared: &[&'a IdKey]) {
        let own_of = self.own_profiles(newly_shared);
        if !newly_shared.is_empty() {
            roles.linking.retain(|k| !newly_shared.contains(k));
            roles.shared.extend_from_slice(newly_shared);
            roles.shared.sort_by(|a, b| self.graph.by_strength(a, b));
        }
        if !roles.linking.is_empty() {
            for d in &roles.shared {
                let own = own_of.iter().find(|(k, _)| k == d).map(|(_, o)| o.clone());
                self.rejected.push(Rejection {
                    key: (*d).clone(),
                    reason: RejectReason::SharedDevice,
                    kept_in: own.or_else(|| self.graph.one_id_of(d)),
                });
            }
        } else {
            // Only shared devices: the event lands on the strongest device's own
            // profile (founding it if it has none).
            roles.linking.push(roles.shared[0]);
        }
    }

    /// Emits `Shared` for each device that becomes shared and finds it a
    /// profile of its own: the one it is alone in, or a new one.
    fn own_profiles(&mut self, newly_shared: &[&'a IdKey]) -> Vec<(&'a IdKey, OneId)> {
        let mut own_of = Vec::new();
        for (i, &device) in newly_shared.iter().enumerate() {
            self.ops.push(IdentityOp::Shared { device: device.clone() });
            // The devices shared before this one have left by the time its
            // `Shared` applies: a profile they leave may hold this one alone.
            let left = &newly_shared[..i];
            let current = self.graph.one_id_of(device);
            if let Some(one_id) = &current {
                let alone = self
                    .graph
                    .with_profile(one_id, |p| p.ids().iter().filter(|k| !left.contains(k)).count() == 1);
                if alone.unwrap_or(false) {
                    own_of.push((device, one_id.clone()));
                    continue;
                }
            }
            let own = self.new_one_id(device);
            own_of.push((device, own.clone()));
            let founding = found(own, device.clone(), self.provenance(Rule::Founder));
            self.ops.extend(founding);
        }
        own_of
    }

    /// Step 4: walks the linking identifiers, strongest first, and decides
    /// which profiles and new identifiers join and which are refused.
    fn membership(&mut self, linking: &[&'a IdKey], newly_shared: &[&'a IdKey]) -> Joining {
        let mut joining = Joining::default();
        for &key in linking {
            let current = if newly_shared.contains(&key) {
                None
            } else {
                self.graph.one_id_of(key)
            };
            match current {
                Some(one_id) => self.join_profile(&mut joining, key, one_id, newly_shared),
                None => self.join_fresh(&mut joining, key),
            }
        }
        joining
    }

    /// The profile `one_id` (which holds `key`) joins unless it holds another
    /// value of a unique namespace or too many persons for the rest.
    fn join_profile(&mut self, joining: &mut Joining, key: &IdKey, one_id: OneId, leaving: &[&IdKey]) {
        if joining.members.iter().any(|(m, _, _)| *m == one_id) {
            return;
        }
        let Some(summary) = self.graph.summary(&one_id, leaving) else {
            return;
        };
        let max = self.graph.rules.limits().max_identifiers_per_profile;
        let reason = if !compatible(&joining.uniques, &summary.uniques) {
            Some(RejectReason::UniqueConflict)
        } else if !joining.is_empty() && joining.persons + summary.persons > max {
            Some(RejectReason::ProfileFull)
        } else {
            None
        };
        match reason {
            None => {
                joining.uniques.extend(summary.uniques);
                joining.persons += summary.persons;
                joining.members.push((one_id, summary.first_seen, key.clone()));
            }
            Some(reason) => self.rejected.push(Rejection {
                key: key.clone(),
                reason,
                kept_in: Some(one_id),
            }),
        }
    }

    /// An identifier in no profile joins, unless it conflicts with a unique
    /// value or is a person that does not fit: then it founds its own.
    fn join_fresh(&mut self, joining: &mut Joining, key: &IdKey) {
        let rule = self.graph.rules.rule(key.ns());
        let max = self.graph.rules.limits().max_identifiers_per_profile;
        let person = rule.kind == Kind::Person;
        let unique = rule.unique;
        let conflict = unique && joining.uniques.get(&key.ns()).is_some_and(|v| v != key);
        let full = person && !joining.is_empty() && joining.persons >= max;
        if conflict || full {
            let own = self.new_one_id(key);
            self.rejected.push(Rejection {
                key: key.clone(),
                reason: if conflict {
                    RejectReason::UniqueConflict
                } else {
                    RejectReason::ProfileFull
                },
                kept_in: Some(own.clone()),
            });
            joining.founders.push((key.clone(), own));
            return;
        }
        if unique {
            joining.uniques.insert(key.ns(), key.clone());
        }
        if person {
            joining.persons += 1;
        }
        joining.fresh.push(key.clone());
    }

    /// Step 5: picks the survivor and emits the ops that found, merge and
    /// attach; returns the planned step.
    fn emit(mut self, mut joining: Joining, households: &[&IdKey], newly_shared: &[&IdKey]) -> Stitch {
        let (one_id, anchor) = self.survivor(&mut joining);
        self.link_ops(&joining, &one_id, &anchor);
        self.household_ops(households, &one_id, &anchor);
        self.refused_ops(&one_id);
        let at = self.at();
        let earliest = joining.members.iter().map(|m| m.1).min().unwrap_or(at);
        if at < earliest {
            self.ops.push(IdentityOp::Seen {
                one_id: one_id.clone(),
                at,
            });
        }
        let moved = joining
            .members
            .iter()
            .skip(1)
            .map(|(m, _, via)| Moved {
                from: m.clone(),
                to: Some(one_id.clone()),
                via: Some(via.clone()),
            })
            .collect();
        Stitch {
            one_id,
            anchor,
            ops: self.ops,
            rejected: self.rejected,
            moved,
            shared: newly_shared.iter().map(|&k| k.clone()).collect(),
            dropped: 0,
            rebuilt: false,
        }
    }

    /// The survivor, first seen earliest (ties: the smaller id), and the
    /// identifier it joins through; founds a profile when none joins.
    fn survivor(&mut self, joining: &mut Joining) -> (OneId, IdKey) {
        let members = &mut joining.members;
        members.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
        match members.first() {
            Some((one_id, _, via)) => (one_id.clone(), via.clone()),
            None => {
                // `fresh` is non-empty: the strongest identifier is never refused
                // when no profile joins.
                let founder = joining.fresh.remove(0);
                let one_id = self.new_one_id(&founder);
                let founding = found(one_id.clone(), founder.clone(), self.provenance(Rule::Founder));
                self.ops.extend(founding);
                (one_id, founder)
            }
        }
    }

    /// Merges the other profiles into the survivor, attaches the fresh
    /// identifiers and founds a profile for each refused one.
    fn link_ops(&mut self, joining: &Joining, one_id: &OneId, anchor: &IdKey) {
        for (merged, _, via) in joining.members.iter().skip(1) {
            self.ops.push(IdentityOp::Merge {
                survivor: one_id.clone(),
                merged: merged.clone(),
                link: LinkRecord {
                    from: via.clone(),
                    to: Some(anchor.clone()),
                    provenance: self.provenance(Rule::Merge),
                },
            });
        }
        for key in &joining.fresh {
            self.ops.push(IdentityOp::Attach {
                one_id: one_id.clone(),
                link: LinkRecord {
                    from: key.clone(),
                    to: Some(anchor.clone()),
                    provenance: self.provenance(Rule::SameEvent),
                },
            });
        }
        for (founder, own) in &joining.founders {
            let founding = found(own.clone(), founder.clone(), self.provenance(Rule::Founder));
            self.ops.extend(founding);
        }
    }

    /// Keeps every refusal of this step on the profile the event landed on.
    fn refused_ops(&mut self, one_id: &OneId) {
        for r in &self.rejected {
            self.ops.push(IdentityOp::Refused {
                one_id: one_id.clone(),
                refused: RefusedLink {
                    key: r.key.clone(),
                    reason: r.reason,
                    kept_in: r.kept_in.clone(),
                    event_id: self.evidence.key.event_id.clone(),
                    channel: self.evidence.key.channel,
                    at: self.at(),
                },
            });
        }
    }

    /// Records the household identifiers the survivor does not hold yet.
    fn household_ops(&mut self, households: &[&IdKey], one_id: &OneId, anchor: &IdKey) {
        if households.is_empty() {
            return;
        }
        let held = self
            .graph
            .with_profile(one_id, |p| p.households().to_vec())
            .unwrap_or_default();
        for &key in households {
            if !held.contains(key) {
                self.ops.push(IdentityOp::Attach {
                    one_id: one_id.clone(),
                    link: LinkRecord {
                        from: key.clone(),
                        to: Some(anchor.clone()),
                        provenance: self.provenance(Rule::Household),
                    },
                });
            }
        }
    }
}

fn compatible(acc: &BTreeMap<Ns, IdKey>, theirs: &[(Ns, IdKey)]) -> bool {
    theirs.iter().all(|(ns, v)| acc.get(ns).is_none_or(|mine| mine == v))
}

/// The ops that found a new profile `one_id` on `founder`.
fn found(one_id: OneId, founder: IdKey, provenance: Provenance) -> [IdentityOp; 2] {
    [
        IdentityOp::Create {
            one_id: one_id.clone(),
            at: provenance.at,
        },
        IdentityOp::Attach {
            one_id,
            link: LinkRecord {
                from: founder,
                to: None,
                provenance,
            },
        },
    ]
}
