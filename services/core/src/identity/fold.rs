//! Folding one event into the graph: [`IdentityGraph::stitch`].
//!
//! In: a validated [`ChannelEvent`]. Out: a [`Stitch`] whose `ops` are every
//! change made, in order ([`IdentityOp::Record`] first).
//!
//! What it keeps: the graph is the fold of the evidence in canonical order
//! (see the module doc). An event whose identifier set was already folded at
//! an earlier or equal key changes nothing; one that sorts after everything
//! its component folded is one more step ([`IdentityGraph::plan`], then
//! apply); one that sorts earlier rebuilds its component from its evidence,
//! in order, so the result is the one in-order arrival would have given.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::types::{Evidence, EvidenceKey, IdentityOp, Moved, OneId, Stitch, StitchError};
use super::{fingerprint, IdentityGraph, Writer};
use crate::event::{Channel, ChannelEvent};
use crate::ids::{ArcStr, IdKey};
use crate::time::EventTime;

impl IdentityGraph {
    /// Stitches one event: records its identifier set and folds it in (or
    /// rebuilds its component when it sorts before what was folded).
    pub fn stitch(&self, ev: &ChannelEvent) -> Result<Stitch, StitchError> {
        let mut w = self.lock();
        let stitched = self.stitch_locked(&mut w, ev);
        self.publish(&w);
        stitched
    }

    /// Where `ev` resolves when stitching it would change nothing: none of
    /// its identifiers is forgotten, and the same identifier set was folded
    /// at an occurrence no later than `ev`'s and still resolves. `None`:
    /// stitching it would record something (a new identifier or set, an
    /// earlier occurrence, a set whose identifiers left their profile) or
    /// fail. Such an event changes the graph of no process at any point of
    /// the log (later records can only move its set's first occurrence
    /// earlier), and the fold does not depend on the order of its
    /// evidence, so leaving its evidence out leaves every graph as it is:
    /// scale-out skips its round trip through the identity log.
    pub fn resolve_known(&self, ev: &ChannelEvent) -> Option<(OneId, IdKey)> {
        let w = self.lock();
        let ids = self.live_ids(&w, ev).ok()?;
        let mut all = ev.ids.clone();
        all.sort();
        all.dedup();
        if ids != all {
            // Some are forgotten: the fold of its evidence filters them.
            return None;
        }
        self.known_resolution(&w, &ids, &Position::of(ev))
    }

    fn stitch_locked(&self, w: &mut Writer, ev: &ChannelEvent) -> Result<Stitch, StitchError> {
        let ids = self.live_ids(w, ev)?;
        let position = Position::of(ev);
        if let Some((one_id, anchor)) = self.known_resolution(w, &ids, &position) {
            return Ok(Stitch {
                one_id,
                anchor,
                ops: Vec::new(),
                rejected: Vec::new(),
                moved: Vec::new(),
                shared: Vec::new(),
                dropped: 0,
                rebuilt: false,
            });
        }
        self.fold_new(w, position.key(), ids)
    }

    /// Where identifier set `ids` resolves when it was folded at its first
    /// occurrence, no later than `key`: nothing new to record. `None`: a
    /// new set, an earlier occurrence, or every identifier of the set has
    /// since left its profile (caps, shared devices), so it is folded again
    /// as a new occurrence.
    fn known_resolution(&self, w: &Writer, ids: &[IdKey], at: &Position<'_>) -> Option<(OneId, IdKey)> {
        let first = w.known.get(&fingerprint(ids))?;
        if at.is_before(first) {
            return None;
        }
        self.resolve(w, ids)
    }

    /// The event's identifiers that were not forgotten, sorted, no repeats;
    /// an error when none of them can link.
    fn live_ids(&self, w: &Writer, ev: &ChannelEvent) -> Result<Vec<IdKey>, StitchError> {
        let mut ids: Vec<IdKey> = if w.suppressed.is_empty() {
            ev.ids.clone()
        } else {
            ev.ids
                .iter()
                .filter(|k| !w.suppressed.contains(&self.suppression_entry(w, k)))
                .cloned()
                .collect()
        };
        if ids.is_empty() {
            return Err(StitchError::Forgotten);
        }
        if !ids.iter().any(|k| self.links(k)) {
            return Err(if ids.len() < ev.ids.len() {
                StitchError::Forgotten
            } else {
                StitchError::NoLinkableIdentifier
            });
        }
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    /// Records a new evidence and folds it: one step when it sorts after its
    /// component's evidence, a rebuild of the component otherwise.
    fn fold_new(&self, w: &mut Writer, key: EvidenceKey, ids: Vec<IdKey>) -> Result<Stitch, StitchError> {
        let ids: Vec<IdKey> = ids.into_iter().map(|k| self.shared_key(k)).collect();
        let evidence = Evidence {
            key: key.clone(),
            ids: Arc::from(ids),
        };
        let record = IdentityOp::Record(evidence.clone());
        let super::apply::Recorded { component, in_order } = self.record(w, &evidence);
        let mut ops = vec![record];
        if in_order {
            let mut step = self.step(w, &evidence)?;
            ops.append(&mut step.ops);
            let folded = IdentityOp::Folded {
                component,
                last: Some(key),
            };
            self.apply_op(w, &folded);
            ops.push(folded);
            step.ops = ops;
            Ok(step)
        } else {
            let mut rebuilt = self.rebuild(w, component, &key)?;
            ops.append(&mut rebuilt.ops);
            rebuilt.ops = ops;
            Ok(rebuilt)
        }
    }

    /// The profile an already-folded set resolves to: the strongest of its
    /// linking identifiers that is in a profile.
    fn resolve(&self, w: &Writer, ids: &[IdKey]) -> Option<(OneId, IdKey)> {
        let mut linking: Vec<&IdKey> = ids.iter().filter(|k| self.links(k)).collect();
        linking.sort_by(|a, b| {
            let sa = w.devices.get(*a).is_some_and(|d| d.shared);
            let sb = w.devices.get(*b).is_some_and(|d| d.shared);
            sa.cmp(&sb).then_with(|| self.by_strength(a, b))
        });
        linking
            .iter()
            .find_map(|k| self.one_id_of(k).map(|one_id| (one_id, (*k).clone())))
            .or_else(|| {
                linking.iter().find_map(|k| {
                    let former = w.formers.get(*k)?.clone();
                    self.profiles.contains_key(&former).then(|| (former, (*k).clone()))
                })
            })
    }

    /// Folds one evidence into the graph: plans its ops and applies them.
    fn step(&self, w: &mut Writer, evidence: &Evidence) -> Result<Stitch, StitchError> {
        let stitch = self.plan(w, evidence)?;
        let mut dropped = 0;
        for op in &stitch.ops {
            dropped += self.apply_op(w, op);
        }
        Ok(Stitch { dropped, ..stitch })
    }

    /// Folds the evidence of a component again, in canonical order, and
    /// returns the result for the event with `key`.
    fn rebuild(&self, w: &mut Writer, component: u32, key: &EvidenceKey) -> Result<Stitch, StitchError> {
        let refold = IdentityOp::Refold { component };
        let Some(c) = w.components.get(&component) else {
            return Err(StitchError::NoLinkableIdentifier);
        };
        let members = c.ids.clone();
        // The profiles before, with their identifiers, to report what moved.
        let mut before: BTreeMap<OneId, Vec<IdKey>> = BTreeMap::new();
        for k in members.iter() {
            if let Some(one_id) = self.one_id_of(k) {
                before.entry(one_id).or_default().push(k.clone());
            }
        }
        // Drops the members' device statistics (the evidence is sorted).
        self.apply_op(w, &refold);
        let evidence = w
            .components
            .get(&component)
            .map(|c| c.evidence().to_vec())
            .unwrap_or_default();
        let mut ops = vec![refold];
        for one_id in before.keys() {
            let op = IdentityOp::Dissolve { one_id: one_id.clone() };
            self.apply_op(w, &op);
            ops.push(op);
        }
        let mut mine = None;
        let mut dropped = 0;
        for e in &evidence {
            let mut step = self.step(w, e)?;
            dropped += step.dropped;
            ops.append(&mut step.ops);
            if e.key == *key {
                mine = Some((step, e.ids.clone()));
            }
        }
        let folded = IdentityOp::Folded {
            component,
            last: evidence.last().map(|e| e.key.clone()),
        };
        self.apply_op(w, &folded);
        ops.push(folded);
        let Some((mut mine, my_ids)) = mine else {
            return Err(StitchError::NoLinkableIdentifier);
        };
        // Evidence folded after the event's may have merged its profile
        // away: the event belongs where its identifiers are now.
        if let Some((one_id, anchor)) = self.resolve(w, &my_ids) {
            mine.one_id = one_id;
            mine.anchor = anchor;
        }
        Ok(Stitch {
            ops,
            moved: self.moved_since(before),
            dropped,
            rebuilt: true,
            ..mine
        })
    }

    /// The profiles of `before` that a rebuild took apart, and where each
    /// went: the profile that now holds its strongest identifier.
    fn moved_since(&self, before: BTreeMap<OneId, Vec<IdKey>>) -> Vec<Moved> {
        let mut moved = Vec::new();
        for (old, ids) in before {
            if self.profiles.contains_key(&old) {
                continue;
            }
            // The founder first: the profile that holds it takes the journey over.
            let target = ids
                .iter()
                .filter_map(|k| self.one_id_of(k).map(|o| (o, k.clone())))
                .min_by(|a, b| self.by_strength(&a.1, &b.1));
            moved.push(Moved {
                from: old,
                to: target.as_ref().map(|t| t.0.clone()),
                via: target.map(|t| t.1),
            });
        }
        moved
    }
}

/// An event's canonical position, borrowed from the event: compared with
/// the first occurrence kept for its identifier set as an [`EvidenceKey`]
/// orders, and made into one (its event id allocated) only when the
/// evidence is new. Most events repeat a known set: they allocate nothing
/// here (session 35).
struct Position<'a> {
    at: EventTime,
    channel: Channel,
    event_id: &'a str,
}

impl<'a> Position<'a> {
    fn of(ev: &'a ChannelEvent) -> Self {
        Position {
            at: ev.occurred_at,
            channel: ev.channel,
            event_id: &ev.event_id,
        }
    }

    /// Whether this position sorts before `key`: [`EvidenceKey`]'s order
    /// (time, channel, event id as text).
    fn is_before(&self, key: &EvidenceKey) -> bool {
        (self.at, self.channel, self.event_id) < (key.at, key.channel, key.event_id.as_str())
    }

    fn key(&self) -> EvidenceKey {
        EvidenceKey {
            at: self.at,
            channel: self.channel,
            event_id: ArcStr::from(self.event_id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn channel(i: u8) -> Channel {
        Channel::ALL[usize::from(i) % Channel::COUNT]
    }

    proptest! {
        #[test]
        fn a_position_orders_against_a_key_as_its_own_key_does(
            (a_at, a_ch, a_id) in (-3i64..3, any::<u8>(), "[a-c]{0,3}"),
            (b_at, b_ch, b_id) in (-3i64..3, any::<u8>(), "[a-c]{0,3}"),
        ) {
            let position = Position { at: EventTime(a_at), channel: channel(a_ch), event_id: &a_id };
            let own = position.key();
            prop_assert_eq!(
                (own.at, own.channel, own.event_id.as_str()),
                (EventTime(a_at), channel(a_ch), a_id.as_str())
            );
            let other = EvidenceKey { at: EventTime(b_at), channel: channel(b_ch), event_id: ArcStr::from(b_id.as_str()) };
            prop_assert_eq!(position.is_before(&other), own < other);
        }
    }
}
