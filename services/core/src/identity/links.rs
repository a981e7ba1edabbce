//! A profile's links (how each of its identifiers joined it, for
//! `explain`), held in 24 bytes when one event made them all.
//!
//! In: the profile's identifiers with every change to its links (a link
//! pushed, the links of a merged profile taken over, an identifier's links
//! removed) and, after each change, [`Links::compact`]. Out: the links in
//! the order they joined, as [`LinkRecord`]s. Keeps one of two forms:
//! - **one event**: the profile's first identifier founded it and each
//!   other joined it through the first, all on one event (the links a
//!   profile founded by one event gets: `Founder`, then `SameEvent`s). Only
//!   that event's id, time and channel are kept: the links follow from the
//!   identifiers. Nothing is allocated (the event id is the evidence's
//!   text);
//! - **listed**: any other set of links, exactly as they are.
//!
//! Why: a profile of one visit or one login (a one-time visitor; the
//! bench's profile shape) held three links of 40 bytes (a 128-byte
//! allocation) that repeated its identifiers and its one event.
//!
//! Invariant: the form is a function of the links and the identifiers
//! (`compact` picks one event whenever the links are that shape), so two
//! profiles with the same links hold them alike; either form gives the same
//! [`LinkRecord`]s, in the same order, and serialises as that sequence
//! (the snapshot and identity-log formats do not change). A change made
//! through [`Links::spelled_out`] first spells the links out from the
//! identifiers as they are *before* the change: callers take the list, then
//! change the identifiers, then [`Links::compact`] (`Profile`'s changes in
//! `profile.rs` do all three).
//!
//! The texts: a spelled link's ends are clones of the profile's
//! identifiers, and its event id of the one kept. A snapshot's text table
//! (`crate::intern`) numbers a text only when it is shared; a profile's
//! identifiers are the index's copies (`fold.rs`, and `share.rs` after a
//! restore), so they are numbered as when the links held copies of their
//! own, and the bytes written are the same (`processor/share_tests.rs`
//! compares a snapshot in both forms).

use std::borrow::Cow;

use super::types::{LinkRecord, Provenance, Rule};
use crate::event::Channel;
use crate::ids::{ArcStr, IdKey};
use crate::journey::List;
use crate::time::EventTime;

/// A profile's links.
#[derive(Clone)]
pub(super) struct Links(Form);

#[derive(Clone)]
enum Form {
    /// `ids[0]` founded the profile on this event and every later
    /// identifier joined through `ids[0]` on it.
    OneEvent {
        event_id: ArcStr,
        at: EventTime,
        channel: Channel,
    },
    Listed(List<LinkRecord>),
}

impl Links {
    /// No links.
    pub(super) const fn new() -> Links {
        Links(Form::Listed(List::new()))
    }

    /// `links` as they are (call [`Links::compact`] with the identifiers).
    pub(super) fn listed(links: List<LinkRecord>) -> Links {
        Links(Form::Listed(links))
    }

    /// How many links there are, for a profile holding `ids`.
    pub(super) fn len(&self, ids: &[IdKey]) -> usize {
        match &self.0 {
            Form::OneEvent { .. } => ids.len(),
            Form::Listed(l) => l.len(),
        }
    }

    /// The links in the order they joined, for a profile holding `ids`.
    pub(super) fn iter<'a>(&'a self, ids: &'a [IdKey]) -> Iter<'a> {
        match &self.0 {
            Form::OneEvent { event_id, at, channel } => Iter::Spelled {
                ids,
                next: 0,
                event_id,
                at: *at,
                channel: *channel,
            },
            Form::Listed(l) => Iter::Listed(l.iter()),
        }
    }

    /// The links as a list to change, spelled out from `ids` (the profile's
    /// identifiers before the change) when one event made them.
    pub(super) fn spelled_out(&mut self, ids: &[IdKey]) -> &mut List<LinkRecord> {
        if let Form::OneEvent { .. } = self.0 {
            let spelled: List<LinkRecord> = self.iter(ids).map(Cow::into_owned).collect();
            self.0 = Form::Listed(spelled);
        }
        match &mut self.0 {
            Form::Listed(l) => l,
            // Spelled out above.
            Form::OneEvent { .. } => unreachable!("one-event links spelled out"),
        }
    }

    /// The listed links to change in place without changing what they say
    /// (texts shared after a restore); `None` in the one-event form, whose
    /// only text is [`Links::event_id_mut`].
    pub(super) fn listed_in_place(&mut self) -> Option<&mut List<LinkRecord>> {
        match &mut self.0 {
            Form::Listed(l) => Some(l),
            Form::OneEvent { .. } => None,
        }
    }

    /// The one event's id, to share its text; `None` when listed.
    pub(super) fn event_id_mut(&mut self) -> Option<&mut ArcStr> {
        match &mut self.0 {
            Form::OneEvent { event_id, .. } => Some(event_id),
            Form::Listed(_) => None,
        }
    }

    /// Takes the one-event form when the links are its shape for `ids`
    /// (after every change).
    pub(super) fn compact(&mut self, ids: &[IdKey]) {
        let Form::Listed(l) = &self.0 else {
            return;
        };
        let Some(p) = l.first().map(|first| &first.provenance) else {
            return;
        };
        // The one-event form of the first link's event, kept when it
        // spells out exactly these links ([`Iter`] is the shape's one
        // definition).
        let one = Links(Form::OneEvent {
            event_id: p.event_id.clone(),
            at: p.at,
            channel: p.channel,
        });
        if l.len() == ids.len() && one.iter(ids).zip(l.iter()).all(|(spelled, link)| *spelled == *link) {
            self.0 = one.0;
        }
    }

    /// The heap bytes the links hold (their texts counted with each link
    /// listed; the one event's id once).
    pub(super) fn heap_bytes(&self) -> usize {
        match &self.0 {
            Form::OneEvent { event_id, .. } => event_id.len() + 16,
            Form::Listed(l) => l.heap_bytes() + l.iter().map(|x| x.provenance.event_id.len() + 16).sum::<usize>(),
        }
    }

    /// True in the one-event form (for the tests).
    #[cfg(test)]
    pub(super) fn is_one_event(&self) -> bool {
        matches!(self.0, Form::OneEvent { .. })
    }
}

/// The links of a profile in order: borrowed when listed, spelled out
/// from its identifiers when one event made them.
pub(super) enum Iter<'a> {
    Listed(std::slice::Iter<'a, LinkRecord>),
    Spelled {
        ids: &'a [IdKey],
        next: usize,
        event_id: &'a ArcStr,
        at: EventTime,
        channel: Channel,
    },
}

impl<'a> Iterator for Iter<'a> {
    type Item = Cow<'a, LinkRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Iter::Listed(l) => l.next().map(Cow::Borrowed),
            Iter::Spelled {
                ids,
                next,
                event_id,
                at,
                channel,
            } => {
                let from = ids.get(*next)?;
                let first = *next == 0;
                *next += 1;
                Some(Cow::Owned(LinkRecord {
                    from: from.clone(),
                    to: if first { None } else { ids.first().cloned() },
                    provenance: Provenance {
                        event_id: (*event_id).clone(),
                        channel: *channel,
                        at: *at,
                        rule: if first { Rule::Founder } else { Rule::SameEvent },
                    },
                }))
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = match self {
            Iter::Listed(l) => l.len(),
            Iter::Spelled { ids, next, .. } => ids.len().saturating_sub(*next),
        };
        (n, Some(n))
    }
}

impl ExactSizeIterator for Iter<'_> {}
