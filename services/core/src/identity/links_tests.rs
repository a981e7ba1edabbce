//! A profile's links in either form (`links.rs`): every change gives the
//! links a plain list would hold, in order, and the one-event form is held
//! exactly when the links are its shape.
//!
//! In: profiles built and changed through [`Profile`]'s own changes (join,
//! absorb, remove), against a plain `Vec<LinkRecord>` changed the same way.
//! Out: assertions on the links, their count, the form, equality and the
//! serialised bytes.

use proptest::prelude::*;

use super::types::{LinkRecord, Profile, Provenance, Rule};
use crate::event::Channel;
use crate::ids::{ArcStr, IdKey, Ns};
use crate::time::EventTime;

fn key(i: u8) -> IdKey {
    IdKey::new(Ns(i % 3), &format!("v-{i}"))
}

fn link(from: u8, to: Option<u8>, event: u8, rule: Rule) -> LinkRecord {
    LinkRecord {
        from: key(from),
        to: to.map(key),
        provenance: Provenance {
            event_id: ArcStr::from(format!("e-{event}")),
            channel: if event.is_multiple_of(2) {
                Channel::Web
            } else {
                Channel::Pos
            },
            at: EventTime(i64::from(event) * 1000),
            rule,
        },
    }
}

/// A profile founded by event 0 with identifiers `0..n`: the founder, then
/// the others joined through it.
fn founded(n: u8) -> (Profile, Vec<LinkRecord>) {
    let mut p = Profile::new("oj-test".into(), EventTime(0));
    let mut model = Vec::new();
    for i in 0..n {
        let l = if i == 0 {
            link(0, None, 0, Rule::Founder)
        } else {
            link(i, Some(0), 0, Rule::SameEvent)
        };
        p.join(&l);
        p.fit();
        model.push(l);
    }
    (p, model)
}

fn links_of(p: &Profile) -> Vec<LinkRecord> {
    p.links().map(std::borrow::Cow::into_owned).collect()
}

/// True when `links` are what one event founding a profile with `ids` makes.
fn one_event_shape(ids: &[IdKey], links: &[LinkRecord]) -> bool {
    let Some(first) = links.first() else {
        return false;
    };
    let p = &first.provenance;
    links.len() == ids.len()
        && links.iter().zip(ids).enumerate().all(|(i, (l, id))| {
            l.from == *id
                && (&l.provenance.event_id, l.provenance.at, l.provenance.channel) == (&p.event_id, p.at, p.channel)
                && if i == 0 {
                    l.to.is_none() && l.provenance.rule == Rule::Founder
                } else {
                    l.to.as_ref() == ids.first() && l.provenance.rule == Rule::SameEvent
                }
        })
}

#[test]
fn one_events_links_are_held_without_a_list_and_read_as_before() {
    let (p, model) = founded(3);
    assert!(p.links_are_one_event());
    assert_eq!(p.link_count(), 3);
    assert_eq!(links_of(&p), model);
    assert_eq!(p.links_heap_bytes(), "e-0".len() + 16, "one event id, no list");
}

#[test]
fn a_link_from_a_second_event_lists_them_and_its_removal_compacts_again() {
    let (mut p, mut model) = founded(3);
    let later = link(7, Some(1), 5, Rule::SameEvent);
    p.join(&later);
    p.fit();
    model.push(later);
    assert!(!p.links_are_one_event());
    assert_eq!(links_of(&p), model);
    p.remove_id(&key(7));
    p.fit();
    model.pop();
    assert!(p.links_are_one_event(), "the links are one event's again");
    assert_eq!(links_of(&p), model);
}

#[test]
fn a_household_link_is_listed_and_the_household_recorded() {
    let (mut p, mut model) = founded(2);
    let h = link(9, Some(0), 0, Rule::Household);
    p.join(&h);
    p.fit();
    model.push(h);
    assert!(!p.links_are_one_event(), "a household link is not a same-event one");
    assert_eq!(p.households(), &[key(9)]);
    assert_eq!(links_of(&p), model);
    p.remove_household(0);
    p.fit();
    model.pop();
    assert!(p.households().is_empty());
    assert!(p.links_are_one_event());
}

#[test]
fn either_form_serialises_to_the_same_bytes_and_compares_equal() {
    let (compact, model) = founded(3);
    let mut listed = compact.clone();
    listed.spell_out();
    assert!(!listed.links_are_one_event(), "spelled out");
    assert_eq!(listed, compact);
    let bytes = |p: &Profile| rmp_serde::to_vec(p).expect("serialises");
    assert_eq!(bytes(&listed), bytes(&compact));
    // And the bytes are those of the plain list, read back to the compact form.
    let read: Profile = rmp_serde::from_slice(&bytes(&listed)).expect("reads back");
    assert!(read.links_are_one_event());
    assert_eq!(links_of(&read), model);
}

#[test]
fn links_that_do_not_name_the_identifiers_in_order_stay_listed() {
    let (mut p, model) = founded(2);
    p.replace_ids(vec![key(0), key(5)].into());
    p.fit();
    assert!(
        !p.links_are_one_event(),
        "the second link is from v-1, the identifier v-5"
    );
    assert_eq!(links_of(&p), model);
    p.replace_ids(vec![key(1), key(0)].into());
    p.fit();
    assert!(!p.links_are_one_event(), "the founder is not the first identifier");
    assert_eq!(links_of(&p), model);
}

/// One change to a profile and to the plain list beside it.
#[derive(Clone, Debug)]
enum Change {
    /// Identifier `id` joins through `to` (none: as a founder) on `event`
    /// by `rule` (a household one is recorded, not linking).
    Join {
        id: u8,
        to: Option<u8>,
        event: u8,
        rule: Rule,
    },
    /// The `i`-th identifier (modulo their number) leaves.
    Remove { i: usize },
    /// The `i`-th household identifier (modulo their number) leaves.
    RemoveHousehold { i: usize },
    /// A profile founded by one event with `n` identifiers (numbered from
    /// 100) merges in through `via` on `event`.
    Absorb { n: u8, via: u8, event: u8 },
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        (
            3u8..12,
            prop::option::weighted(0.9, 0u8..12),
            0u8..3,
            prop::sample::select(Rule::ALL.to_vec())
        )
            .prop_map(|(id, to, event, rule)| Change::Join { id, to, event, rule }),
        (0usize..8).prop_map(|i| Change::Remove { i }),
        (0usize..4).prop_map(|i| Change::RemoveHousehold { i }),
        (1u8..4, 0u8..3, 0u8..3).prop_map(|(n, via, event)| Change::Absorb { n, via, event }),
    ]
}

proptest! {
    #[test]
    fn every_change_gives_the_links_a_plain_list_would_hold(
        n in 1u8..4,
        changes in prop::collection::vec(change(), 0..12),
    ) {
        let (mut p, mut model) = founded(n);
        let mut ids: Vec<IdKey> = p.ids().to_vec();
        let mut households: Vec<IdKey> = Vec::new();
        for c in changes {
            match c {
                Change::Join { id, to, event, rule } => {
                    let l = link(id, to, event, rule);
                    p.join(&l);
                    if rule == Rule::Household {
                        households.push(l.from.clone());
                    } else {
                        ids.push(l.from.clone());
                    }
                    model.push(l);
                }
                Change::RemoveHousehold { i } => {
                    if households.is_empty() {
                        continue;
                    }
                    let k = households.remove(i % households.len());
                    p.remove_household(i % (households.len() + 1));
                    model.retain(|l| l.from != k);
                }
                Change::Remove { i } => {
                    if ids.is_empty() {
                        continue;
                    }
                    let k = ids[i % ids.len()].clone();
                    p.remove_id(&k);
                    ids.retain(|x| *x != k);
                    model.retain(|l| l.from != k);
                }
                Change::Absorb { n, via, event } => {
                    let mut gone = Profile::new("oj-gone".into(), EventTime(0));
                    let mut gone_model = Vec::new();
                    for i in 0..n {
                        let l = if i == 0 {
                            link(100, None, 9, Rule::Founder)
                        } else {
                            link(100 + i, Some(100), 9, Rule::SameEvent)
                        };
                        gone.join(&l);
                        gone.fit();
                        gone_model.push(l);
                    }
                    let merge = link(100, Some(via), event, Rule::Merge);
                    ids.extend(gone.ids().iter().cloned());
                    p.absorb(gone, &merge);
                    model.extend(gone_model);
                    model.push(merge);
                }
            }
            p.fit();
            prop_assert_eq!(p.ids(), &ids[..]);
            prop_assert_eq!(p.households(), &households[..]);
            prop_assert_eq!(links_of(&p), model.clone());
            prop_assert_eq!(p.link_count(), model.len());
            prop_assert_eq!(p.links_are_one_event(), one_event_shape(&ids, &model));
        }
    }
}
