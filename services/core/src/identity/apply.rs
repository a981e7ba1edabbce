//! Ops applied to the graph: the only code that changes profiles, the index
//! and the writer's structures (apart from `forget.rs`'s erasure and
//! suppression).
//!
//! In: an [`IdentityOp`], from a plan of this process or from a changelog.
//! Out: the changed graph; the component a `Record` joined; how many device
//! links the caps dropped.
//!
//! What it keeps: the same ops in the same order on the same graph give the
//! same graph, so a changelog replays to the graph that wrote it; an op that
//! names a profile that no longer exists is ignored. Every identifier in a
//! profile's `ids` has an index slot pointing at that profile; a profile
//! never holds more than its caps (the oldest device link goes first).
//! Every change to an entry's size is added to the writer's sums
//! (`tally.rs`) as it is made.

use super::component::Component;
use super::tally::{component_frame, device_bytes, evidence_bytes, profile_size, slot_bytes};
use super::types::{extend_exact, push_exact, Evidence, IdentityOp, LinkRecord, OneId, Profile, Rule};
use super::{fingerprint, IdentityGraph, Slot, Writer};
use crate::ids::{IdKey, Kind};
use crate::time::EventTime;

impl IdentityGraph {
    /// Applies one op (replaying a changelog, or a second process following
    /// this one). Ops that refer to a profile that no longer exists are ignored.
    pub fn apply(&self, op: &IdentityOp) {
        let mut w = self.lock();
        self.apply_locked(&mut w, op);
        self.publish(&w);
    }

    /// Applies one op; returns the component an `IdentityOp::Record` joined.
    pub(super) fn apply_locked(&self, w: &mut Writer, op: &IdentityOp) -> u32 {
        match op {
            IdentityOp::Record(e) => self.record(w, e).component,
            other => {
                self.apply_op(w, other);
                0
            }
        }
    }

    /// Adds an evidence and joins the components of its linking identifiers.
    pub(super) fn record(&self, w: &mut Writer, e: &Evidence) -> Recorded {
        let fp = fingerprint(&e.ids);
        let (target, in_order) = self.join_components(w, e);
        let mut new_ids = Vec::new();
        for k in e.ids.iter().filter(|k| self.links(k)) {
            if !self.index.contains_key(k) {
                w.sums.resized(0, slot_bytes(k));
                self.index.insert(
                    k.clone(),
                    Slot {
                        one_id: None,
                        component: target,
                    },
                );
                new_ids.push(k.clone());
            }
        }
        let first = w.known.get(&fp).cloned();
        if let Some(t) = w.components.get_mut(&target) {
            let (before, evidence_before) = (component_frame(t), t.evidence().len());
            t.ids.extend(new_ids);
            match &first {
                // An earlier occurrence of a known set: move it.
                Some(first) if e.key < *first => {
                    if !t.rekey(first, e.key.clone()) {
                        t.insert(e.clone());
                    }
                }
                Some(_) => {
                    // Folded again after every identifier left its profile.
                    if !t.has(&e.key) {
                        t.insert(e.clone());
                    }
                }
                None => t.insert(e.clone()),
            }
            t.ids.share_with(&e.ids);
            let pushed = if t.evidence().len() > evidence_before {
                evidence_bytes(e)
            } else {
                0
            };
            let after = component_frame(t) + pushed;
            w.sums.resized(before, after);
        }
        if first.as_ref().is_none_or(|f| e.key < *f) {
            w.known.insert(fp, e.key.clone());
        }
        Recorded {
            component: target,
            in_order,
        }
    }

    /// Joins the components of the evidence's indexed linking identifiers
    /// into the largest (a new one when none is indexed); returns it, and
    /// whether the evidence sorts after all of theirs.
    fn join_components(&self, w: &mut Writer, e: &Evidence) -> (u32, bool) {
        let mut comps: Vec<u32> = Vec::new();
        for k in e.ids.iter().filter(|k| self.links(k)) {
            if let Some(s) = self.index.get(k) {
                if !comps.contains(&s.component) {
                    comps.push(s.component);
                }
            }
        }
        let in_order = comps.iter().all(|c| {
            w.components
                .get(c)
                .and_then(Component::last_key)
                .is_none_or(|last| *last <= e.key)
        });
        // Join into the largest component.
        comps.sort_by_key(|c| std::cmp::Reverse(w.components.get(c).map_or(0, |c| c.ids.len())));
        let target = match comps.first() {
            Some(c) => *c,
            None => {
                let c = w.next_component;
                w.next_component = w.next_component.wrapping_add(1);
                let fresh = Component::default();
                w.sums.resized(0, component_frame(&fresh));
                w.components.insert(c, fresh);
                c
            }
        };
        for other in comps.iter().skip(1) {
            let Some(gone) = w.components.remove(other) else {
                continue;
            };
            // Its evidence moves (and stays counted); its frame goes.
            w.sums.resized(component_frame(&gone), 0);
            for k in gone.ids.iter() {
                if let Some(mut s) = self.index.get_mut(k) {
                    s.component = target;
                }
            }
            if let Some(t) = w.components.get_mut(&target) {
                let before = component_frame(t);
                t.absorb(gone);
                let after = component_frame(t);
                w.sums.resized(before, after);
            }
        }
        (target, in_order)
    }

    /// Applies a fold op; returns how many links caps dropped.
    pub(super) fn apply_op(&self, w: &mut Writer, op: &IdentityOp) -> usize {
        match op {
            IdentityOp::Record(e) => {
                self.record(w, e);
                0
            }
            IdentityOp::Create { one_id, at } => {
                if !self.profiles.contains_key(one_id) {
                    let p = Profile::new(one_id.clone(), *at);
                    w.sums.profile_in(profile_size(&p));
                    self.profiles.insert(one_id.clone(), p);
                }
                0
            }
            IdentityOp::Attach { one_id, link } => self.attach(w, one_id, link),
            IdentityOp::Merge { survivor, merged, link } => self.merge(w, survivor, merged, link),
            IdentityOp::Seen { one_id, at } => {
                if let Some(mut p) = self.profiles.get_mut(one_id) {
                    p.first_seen = p.first_seen.min(*at);
                }
                0
            }
            IdentityOp::DevicePerson { device, person, at } => {
                self.device_person(w, device, person, *at);
                0
            }
            IdentityOp::Shared { device } => {
                self.share(w, device);
                0
            }
            IdentityOp::Refold { component } => {
                self.refold(w, *component);
                0
            }
            // What was folded last is the component's last evidence
            // (`component.rs`): nothing to keep.
            IdentityOp::Folded { .. } => 0,
            IdentityOp::Dissolve { one_id } => {
                if let Some((_, p)) = self.profiles.remove(one_id) {
                    w.sums.profile_out(profile_size(&p));
                    self.unindex(p.ids(), one_id);
                }
                0
            }
            IdentityOp::Forget { one_id } => {
                self.erase(w, one_id);
                0
            }
            IdentityOp::Refused { one_id, refused } => {
                if let Some(mut p) = self.profiles.get_mut(one_id) {
                    let before = profile_size(&p);
                    p.keep_refused(refused.clone());
                    w.sums.profile_changed(before, profile_size(&p));
                }
                0
            }
            IdentityOp::Suppress { entries } => {
                self.install(w, entries);
                0
            }
        }
    }

    /// Starts folding a component again: its identifiers' device statistics
    /// go (the fold records them again). Its evidence is in canonical order
    /// already (`component.rs`).
    fn refold(&self, w: &mut Writer, component: u32) {
        let Some(c) = w.components.get(&component) else {
            return;
        };
        let members = c.ids.clone();
        for k in members.iter() {
            if let Some(d) = w.devices.remove(k) {
                w.sums.resized(device_bytes(&d), 0);
            }
        }
    }

    /// Adds an identifier to a profile (a household one is recorded, not
    /// indexed); returns how many links the caps dropped.
    fn attach(&self, w: &mut Writer, one_id: &OneId, link: &LinkRecord) -> usize {
        let household = link.provenance.rule == Rule::Household;
        let dropped = {
            let Some(mut p) = self.profiles.get_mut(one_id) else {
                return 0;
            };
            let before = profile_size(&p);
            p.join(link);
            let dropped = self.enforce_caps(&mut p);
            p.fit();
            w.sums.profile_changed(before, profile_size(&p));
            dropped
        };
        if !household {
            self.set_slot(w, &link.from, Some(one_id.clone()));
        }
        self.drop_links(w, &dropped, one_id);
        dropped.len()
    }

    /// Moves everything of `merged` into `survivor`; returns how many links
    /// the caps dropped.
    fn merge(&self, w: &mut Writer, survivor: &OneId, merged: &OneId, link: &LinkRecord) -> usize {
        if !self.profiles.contains_key(survivor) {
            return 0;
        }
        let Some((_, gone)) = self.profiles.remove(merged) else {
            return 0;
        };
        w.sums.profile_out(profile_size(&gone));
        for key in gone.ids() {
            if let Some(mut s) = self.index.get_mut(key) {
                s.one_id = Some(survivor.clone());
            }
        }
        for key in gone.dropped() {
            if self.index.get(key).is_some_and(|s| s.one_id.is_none()) {
                w.formers.insert(key.clone(), survivor.clone());
            }
        }
        let mut gone = gone;
        let rare = gone.take_rare();
        let dropped = {
            let Some(mut p) = self.profiles.get_mut(survivor) else {
                return 0;
            };
            let before = profile_size(&p);
            p.first_seen = p.first_seen.min(gone.first_seen);
            for h in rare.households {
                if !p.households().contains(&h) {
                    push_exact(&mut p.rare_mut().households, h);
                }
            }
            p.absorb(gone, link);
            if !rare.dropped.is_empty() {
                extend_exact(&mut p.rare_mut().dropped, rare.dropped);
            }
            for r in rare.refused {
                p.keep_refused(r);
            }
            let dropped = self.enforce_caps(&mut p);
            p.fit();
            w.sums.profile_changed(before, profile_size(&p));
            dropped
        };
        self.drop_links(w, &dropped, survivor);
        dropped.len()
    }

    /// Records that `person` was first seen with `device` (within the window).
    fn device_person(&self, w: &mut Writer, device: &IdKey, person: &IdKey, at: EventTime) {
        let window = self.rules.limits().shared_device_window;
        let before = w.devices.get(device).map_or(0, device_bytes);
        let stat = w.devices.entry(device.clone()).or_default();
        if !stat.shared {
            stat.persons.retain(|(t, _)| *t >= at.minus(window));
            if !stat.persons.iter().any(|(_, p)| p == person) {
                stat.persons.push((at, person.clone()));
            }
        }
        let after = device_bytes(stat);
        w.sums.resized(before, after);
    }

    /// Marks a device shared: it leaves a profile it shares with other
    /// identifiers; a profile of its own it keeps.
    fn share(&self, w: &mut Writer, device: &IdKey) {
        let before = w.devices.get(device).map_or(0, device_bytes);
        let stat = w.devices.entry(device.clone()).or_default();
        stat.shared = true;
        stat.persons.clear();
        let after = device_bytes(stat);
        w.sums.resized(before, after);
        if let Some(one_id) = self.one_id_of(device) {
            let left = self.profiles.get_mut(&one_id).is_some_and(|mut p| {
                let alone = p.ids().len() == 1;
                if !alone {
                    let before = profile_size(&p);
                    p.remove_id(device);
                    p.fit();
                    w.sums.profile_changed(before, profile_size(&p));
                }
                !alone
            });
            if left {
                self.unindex(std::slice::from_ref(device), &one_id);
            }
        }
    }

    fn set_slot(&self, w: &mut Writer, key: &IdKey, one_id: Option<OneId>) {
        match self.index.get_mut(key) {
            Some(mut s) => {
                s.one_id = one_id;
                w.formers.remove(key);
            }
            None => {
                // Applied from a changelog without its Record: give it a component.
                let c = w.next_component;
                w.next_component = w.next_component.wrapping_add(1);
                let own = Component::one(key.clone());
                w.sums.resized(0, component_frame(&own) + slot_bytes(key));
                w.components.insert(c, own);
                self.index.insert(key.clone(), Slot { one_id, component: c });
            }
        }
    }

    /// Takes identifiers out of a profile's index entries (they stay in their component).
    fn unindex(&self, keys: &[IdKey], one_id: &OneId) {
        for k in keys {
            if let Some(mut s) = self.index.get_mut(k) {
                if s.one_id.as_ref() == Some(one_id) {
                    s.one_id = None;
                }
            }
        }
    }

    /// Takes identifiers a cap dropped out of the index, remembering where they were.
    fn drop_links(&self, w: &mut Writer, keys: &[IdKey], one_id: &OneId) {
        for k in keys {
            if let Some(mut s) = self.index.get_mut(k) {
                if s.one_id.as_ref() == Some(one_id) {
                    s.one_id = None;
                    w.formers.insert(k.clone(), one_id.clone());
                }
            }
        }
    }

    /// Drops the oldest device links of a profile over its caps; returns them.
    fn enforce_caps(&self, p: &mut Profile) -> Vec<IdKey> {
        let limits = self.rules.limits();
        let mut dropped = Vec::new();
        loop {
            let over_ns = p.ids().iter().find_map(|k| {
                let cap = self.rules.rule(k.ns()).max_per_profile?;
                (p.ids().iter().filter(|x| x.ns() == k.ns()).count() > usize::from(cap)).then_some(k.ns())
            });
            let households = p.households();
            let households_over = households.iter().find_map(|k| {
                let cap = self.rules.rule(k.ns()).max_per_profile?;
                (households.iter().filter(|x| x.ns() == k.ns()).count() > usize::from(cap)).then_some(k.ns())
            });
            if let Some(ns) = households_over {
                if let Some(i) = households.iter().position(|k| k.ns() == ns) {
                    p.remove_household(i);
                }
                continue;
            }
            let victim_ns = match over_ns {
                Some(ns) => Some(ns),
                None if p.ids().len() > limits.max_identifiers_per_profile => None,
                None => break,
            };
            // The oldest link (by event time, then join order) of that namespace,
            // or of any device namespace.
            let victim = p
                .links()
                .filter(|l| p.ids().contains(&l.from))
                .filter(|l| match victim_ns {
                    Some(ns) => l.from.ns() == ns,
                    None => self.rules.rule(l.from.ns()).kind == Kind::Device,
                })
                .min_by_key(|l| l.provenance.at)
                .map(|l| l.from.clone());
            let Some(victim) = victim else {
                break;
            };
            p.remove_id(&victim);
            push_exact(&mut p.rare_mut().dropped, victim.clone());
            dropped.push(victim);
        }
        dropped
    }
}

/// What recording an evidence did.
pub(super) struct Recorded {
    /// The component it joined.
    pub(super) component: u32,
    /// True when it sorts after every evidence of the components it joined
    /// (one fold step folds it); false when a rebuild must.
    pub(super) in_order: bool,
}
