//! A profile: the identifiers that belong to one person, how each joined,
//! and the lists most profiles leave empty.
//!
//! In: the changes `apply.rs` makes (identifiers joining, merges, removals
//! by caps and shared devices, refusals) and a snapshot's profile records.
//! Out: what readers see (identifiers, links, households, dropped, refused)
//! and the profile as snapshots write it. Keeps the identifiers in join
//! order, the links (`links.rs`: one event's, or listed) and the rarely used
//! lists in one box allocated on first use. Every change to the identifiers
//! goes through the methods here, which keep the links in step with them.

use serde::{Deserialize, Serialize, Serializer};

use super::links::Links;
use super::types::{fit, push_exact, LinkRecord, OneId, RefusedLink, Rule, REFUSED_LINKS};
use crate::ids::IdKey;
use crate::journey::List;
use crate::time::EventTime;

/// A profile: a set of identifiers that belong to one person.
///
/// Serialised as the seven fields it always had (`one_id`, `first_seen`,
/// `ids`, `households`, `links`, `dropped`, `refused`): in memory the three
/// lists that most profiles leave empty sit in one box allocated on first
/// use ([`Profile::households`], [`Profile::dropped`], [`Profile::refused`]),
/// which takes a profile from 144 to 80 bytes (56 since a One ID is one
/// pointer and the identifiers and links are exact lists, [`List`]; 64 since
/// the links are 24 bytes, with no list when one event made them all).
#[derive(Clone, Deserialize)]
#[serde(from = "ProfileRecord")]
pub struct Profile {
    pub one_id: OneId,
    pub first_seen: EventTime,
    /// Linking identifiers, in the order they joined ([`Profile::ids`]).
    ids: List<IdKey>,
    /// How every identifier joined, for `explain` ([`Profile::links`]): in
    /// 24 bytes when one event made them all (`links.rs`).
    links: Links,
    /// The rarely used lists; `None` while all three are empty.
    rare: Option<Box<Rare>>,
}

/// The lists of a profile that most profiles leave empty.
#[derive(Clone, Debug, PartialEq, Default)]
pub(super) struct Rare {
    /// Household identifiers, recorded but never linking.
    pub(super) households: Vec<IdKey>,
    /// Identifiers a cap dropped from it: events that carry only those are
    /// still attributed here (and follow it through merges).
    pub(super) dropped: Vec<IdKey>,
    /// The newest links refused on events that landed here, oldest first (at
    /// most [`REFUSED_LINKS`]).
    pub(super) refused: Vec<RefusedLink>,
}

/// A profile as snapshots hold it (field names and order are the format).
#[derive(Deserialize)]
struct ProfileRecord {
    #[serde(deserialize_with = "crate::intern::one_id")]
    one_id: OneId,
    first_seen: EventTime,
    ids: Vec<IdKey>,
    households: Vec<IdKey>,
    links: Vec<LinkRecord>,
    dropped: Vec<IdKey>,
    /// Empty in snapshots written before it existed.
    #[serde(default)]
    refused: Vec<RefusedLink>,
}

impl From<ProfileRecord> for Profile {
    fn from(r: ProfileRecord) -> Profile {
        let mut p = Profile {
            one_id: r.one_id,
            first_seen: r.first_seen,
            ids: r.ids.into(),
            links: Links::listed(r.links.into()),
            rare: Some(Box::new(Rare {
                households: r.households,
                dropped: r.dropped,
                refused: r.refused,
            })),
        };
        p.links.compact(&p.ids);
        p.fit();
        p
    }
}

impl Serialize for Profile {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Profile", 7)?;
        st.serialize_field("one_id", &crate::intern::OneIdRef(&self.one_id))?;
        st.serialize_field("first_seen", &self.first_seen)?;
        st.serialize_field("ids", &self.ids)?;
        st.serialize_field("households", self.households())?;
        st.serialize_field("links", &LinksOf(self))?;
        st.serialize_field("dropped", self.dropped())?;
        st.serialize_field("refused", self.refused())?;
        st.end()
    }
}

/// A profile's links as the sequence of [`LinkRecord`]s they always were.
struct LinksOf<'a>(&'a Profile);

impl Serialize for LinksOf<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        crate::snapshot::exact_seq(s, self.0.link_count(), self.0.links())
    }
}

/// Equal when they say the same: the links compared as records, whichever
/// form holds them.
impl PartialEq for Profile {
    fn eq(&self, other: &Profile) -> bool {
        self.one_id == other.one_id
            && self.first_seen == other.first_seen
            && self.ids == other.ids
            && self.rare == other.rare
            && self.links().eq(other.links())
    }
}

impl std::fmt::Debug for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Profile")
            .field("one_id", &self.one_id)
            .field("first_seen", &self.first_seen)
            .field("ids", &self.ids)
            .field("links", &self.links().collect::<Vec<_>>())
            .field("rare", &self.rare)
            .finish()
    }
}

impl Profile {
    /// A profile with no identifier yet.
    pub fn new(one_id: OneId, first_seen: EventTime) -> Profile {
        Profile {
            one_id,
            first_seen,
            ids: List::new(),
            links: Links::new(),
            rare: None,
        }
    }

    /// Linking identifiers, in the order they joined.
    pub fn ids(&self) -> &[IdKey] {
        &self.ids
    }

    /// How every identifier joined (households included), in order.
    pub fn links(&self) -> impl ExactSizeIterator<Item = std::borrow::Cow<'_, LinkRecord>> {
        self.links.iter(&self.ids)
    }

    /// How many links [`Profile::links`] gives.
    pub fn link_count(&self) -> usize {
        self.links.len(&self.ids)
    }

    /// `link.from` joins: as a linking identifier, or recorded as a
    /// household one (`Rule::Household`).
    pub(super) fn join(&mut self, link: &LinkRecord) {
        self.links.spelled_out(&self.ids).push(link.clone());
        if link.provenance.rule == Rule::Household {
            push_exact(&mut self.rare_mut().households, link.from.clone());
        } else {
            self.ids.push(link.from.clone());
        }
        self.links.compact(&self.ids);
    }

    /// Takes over a merged profile's identifiers and links, and the link
    /// that merged it. Its households, dropped and refused lists are not
    /// taken: the caller takes them first ([`Profile::take_rare`]) and
    /// keeps what it keeps of them.
    pub(super) fn absorb(&mut self, gone: Profile, link: &LinkRecord) {
        debug_assert!(gone.rare.is_none(), "the merged profile's rare lists taken first");
        let links = gone.links.iter(&gone.ids).map(std::borrow::Cow::into_owned);
        let mine = self.links.spelled_out(&self.ids);
        mine.extend(links.chain([link.clone()]));
        self.ids.extend(gone.ids);
        self.links.compact(&self.ids);
    }

    /// `k` and its links leave the profile (a linking identifier).
    pub(super) fn remove_id(&mut self, k: &IdKey) {
        self.links.spelled_out(&self.ids).retain(|l| l.from != *k);
        self.ids.retain(|x| x != k);
        self.links.compact(&self.ids);
    }

    /// The household identifier at `i` and its links leave the profile.
    pub(super) fn remove_household(&mut self, i: usize) {
        if i < self.households().len() {
            let k = self.rare_mut().households.remove(i);
            self.links.spelled_out(&self.ids).retain(|l| l.from != k);
            self.links.compact(&self.ids);
        }
    }

    /// Every copy of `k` in the profile (its identifiers, both ends of its
    /// links) becomes this one: the same text, one allocation.
    pub(super) fn adopt(&mut self, k: &IdKey) {
        for x in self.ids.as_mut_slice().iter_mut().filter(|x| *x == k) {
            *x = k.clone();
        }
        for l in self.links.listed_in_place().map_or(&mut [][..], List::as_mut_slice) {
            if l.from == *k {
                l.from = k.clone();
            }
            if let Some(to) = l.to.as_mut().filter(|to| *to == k) {
                *to = k.clone();
            }
        }
    }

    /// The identifiers and the links, to share their texts in place (what
    /// they say does not change).
    pub(super) fn texts_mut(&mut self) -> (&[IdKey], &mut Links) {
        (&self.ids, &mut self.links)
    }

    /// The heap bytes of the links (for the size estimate).
    pub(super) fn links_heap_bytes(&self) -> usize {
        self.links.heap_bytes()
    }

    /// Puts `ids` in place of the identifiers, the links kept as they
    /// were (for the tests that build a graph no stitch makes).
    #[cfg(test)]
    pub(super) fn replace_ids(&mut self, ids: List<IdKey>) {
        self.links.spelled_out(&self.ids);
        self.ids = ids;
        self.links.compact(&self.ids);
    }

    /// The links listed, as before `links.rs` (for the tests that compare
    /// what either form does).
    #[cfg(test)]
    pub(super) fn spell_out(&mut self) {
        self.links.spelled_out(&self.ids);
    }

    /// True when the links are held as one event's (for the tests).
    #[cfg(test)]
    pub(super) fn links_are_one_event(&self) -> bool {
        self.links.is_one_event()
    }

    /// Household identifiers, recorded but never linking.
    pub fn households(&self) -> &[IdKey] {
        self.rare.as_ref().map_or(&[], |r| &r.households)
    }

    /// Identifiers a cap dropped from it: events that carry only those are
    /// still attributed here (and follow it through merges).
    pub fn dropped(&self) -> &[IdKey] {
        self.rare.as_ref().map_or(&[], |r| &r.dropped)
    }

    /// The newest links refused on events that landed here, oldest first (at
    /// most [`REFUSED_LINKS`]).
    pub fn refused(&self) -> &[RefusedLink] {
        self.rare.as_ref().map_or(&[], |r| &r.refused)
    }

    /// The rarely used lists, boxed on first use; [`Profile::fit`] gives the
    /// box back when they are empty again.
    pub(super) fn rare_mut(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Box::default)
    }

    /// The rarely used lists, when the profile has them.
    pub(super) fn rare_lists_mut(&mut self) -> Option<&mut Rare> {
        self.rare.as_deref_mut()
    }

    /// The rarely used lists, taken out (empty ones when there are none).
    pub(super) fn take_rare(&mut self) -> Rare {
        self.rare.take().map(|r| *r).unwrap_or_default()
    }

    /// The heap bytes of the rarely used lists' box (not of their contents).
    pub(super) fn rare_box_bytes(&self) -> usize {
        self.rare.as_ref().map_or(0, |_| std::mem::size_of::<Rare>())
    }
}

impl Profile {
    /// Sizes every list of the profile exactly (after a change), and gives
    /// back the box of the rarely used lists when they are all empty.
    pub(super) fn fit(&mut self) {
        if let Some(r) = &mut self.rare {
            if r.households.is_empty() && r.dropped.is_empty() && r.refused.is_empty() {
                self.rare = None;
            } else {
                fit(&mut r.households);
                fit(&mut r.dropped);
                fit(&mut r.refused);
            }
        }
    }

    /// Keeps `r` among the refused links: sorted canonically, no repeats, the
    /// newest [`REFUSED_LINKS`]. The kept set depends only on the set of
    /// refusals, not on the order they came in.
    pub(super) fn keep_refused(&mut self, r: RefusedLink) {
        let refused = &mut self.rare_mut().refused;
        let pos = refused.partition_point(|x| x.order_key() < r.order_key());
        if refused.get(pos).is_some_and(|x| x.order_key() == r.order_key()) {
            return;
        }
        refused.reserve_exact(1);
        refused.insert(pos, r);
        if refused.len() > REFUSED_LINKS {
            let over = refused.len() - REFUSED_LINKS;
            refused.drain(..over);
            fit(refused);
        }
    }
}

#[cfg(test)]
impl super::IdentityGraph {
    /// How many profiles hold one event's links (`links.rs`).
    pub(crate) fn one_event_links(&self) -> usize {
        self.profiles.iter().filter(|p| p.links.is_one_event()).count()
    }

    /// Every profile's links listed, as before `links.rs` (for the tests
    /// that compare what either form writes).
    pub(crate) fn spell_out_links(&self) {
        for mut p in self.profiles.iter_mut() {
            p.spell_out();
        }
    }
}
