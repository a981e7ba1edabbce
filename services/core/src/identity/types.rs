//! The identity graph's vocabulary: profiles, evidence, ops and the result of
//! a stitch.
//!
//! In: nothing of the graph (identifiers from [`crate::ids`], channels from
//! [`crate::event`], time from [`crate::time`]). Out: the types every other
//! file of `identity` and the processor speak.
//!
//! What it keeps: [`Profile`], [`LinkRecord`], [`RefusedLink`], [`Provenance`],
//! [`Evidence`] and [`EvidenceKey`] are written into snapshots, so their serde field names and
//! order are part of the snapshot format; [`IdentityOp`] is written to the
//! identity log topic, so its serde names are part of that format; [`RejectReason::label`] and
//! [`StitchError::reason`] are metric labels and must not change.

use std::sync::Arc;

use serde::{Deserialize, Serialize, Serializer};

use crate::event::Channel;
use crate::ids::{ArcStr, IdKey, Ns};
use crate::journey::List;
use crate::time::EventTime;

use super::links::Links;
pub use crate::one_id::OneId;

/// Which rule made a link.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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

impl Rule {
    pub const ALL: [Rule; 4] = [Rule::Founder, Rule::SameEvent, Rule::Merge, Rule::Household];
}

/// Where a link came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    #[serde(
        serialize_with = "crate::intern::write_arc_str",
        deserialize_with = "crate::intern::arc_str"
    )]
    pub event_id: ArcStr,
    pub channel: Channel,
    pub at: EventTime,
    pub rule: Rule,
}

/// One edge of a profile: `from` joined the profile through `to`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinkRecord {
    pub from: IdKey,
    /// The identifier it was linked to; `None` for the founder of a profile.
    pub to: Option<IdKey>,
    pub provenance: Provenance,
}

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
        self.links.list_mut(&self.ids).push(link.clone());
        if link.provenance.rule == Rule::Household {
            push_exact(&mut self.rare_mut().households, link.from.clone());
        } else {
            self.ids.push(link.from.clone());
        }
    }

    /// Takes over a merged profile's identifiers and links, and the link
    /// that merged it.
    pub(super) fn absorb(&mut self, gone: Profile, link: &LinkRecord) {
        let links = gone.links.iter(&gone.ids).map(std::borrow::Cow::into_owned);
        let mine = self.links.list_mut(&self.ids);
        mine.extend(links.chain([link.clone()]).collect::<Vec<_>>());
        self.ids.extend(gone.ids);
    }

    /// `k` and its links leave the profile (a linking identifier).
    pub(super) fn remove_id(&mut self, k: &IdKey) {
        self.links.list_mut(&self.ids).retain(|l| l.from != *k);
        self.ids.retain(|x| x != k);
    }

    /// The household identifier at `i` and its links leave the profile.
    pub(super) fn remove_household(&mut self, i: usize) {
        if i < self.households().len() {
            let k = self.rare_mut().households.remove(i);
            self.links.list_mut(&self.ids).retain(|l| l.from != k);
        }
    }

    /// Every copy of `k` in the profile (its identifiers, both ends of its
    /// links) becomes this one: the same text, one allocation.
    pub(super) fn adopt(&mut self, k: &IdKey) {
        for x in self.ids.as_mut_slice().iter_mut().filter(|x| *x == k) {
            *x = k.clone();
        }
        for l in self.links.listed_mut().map_or(&mut [][..], List::as_mut_slice) {
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
        self.links.list_mut(&self.ids);
        self.ids = ids;
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

/// How many refused links a profile keeps, for `explain`.
pub const REFUSED_LINKS: usize = 8;

/// A link refused on an event that landed on the profile: `key` was kept
/// apart (in `kept_in`, as that fold step left it) for `reason`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RefusedLink {
    pub key: IdKey,
    pub reason: RejectReason,
    #[serde(
        default,
        serialize_with = "crate::intern::write_opt_one_id",
        deserialize_with = "crate::intern::opt_one_id"
    )]
    pub kept_in: Option<OneId>,
    #[serde(
        serialize_with = "crate::intern::write_arc_str",
        deserialize_with = "crate::intern::arc_str"
    )]
    pub event_id: ArcStr,
    pub channel: Channel,
    pub at: EventTime,
}

impl RefusedLink {
    /// The canonical order: event time, channel, event id, identifier.
    fn order_key(&self) -> (EventTime, Channel, &str, &IdKey) {
        (self.at, self.channel, &*self.event_id, &self.key)
    }
}

/// Pushes `x` growing `v` by exactly one: the graph's lists are sized
/// exactly (most hold one to three entries; doubling would leave a quarter
/// to a half of every list unused).
pub(super) fn push_exact<T>(v: &mut Vec<T>, x: T) {
    v.reserve_exact(1);
    v.push(x);
}

/// Appends `more` to `v`, growing it exactly.
pub(super) fn extend_exact<T>(v: &mut Vec<T>, more: Vec<T>) {
    v.reserve_exact(more.len());
    v.extend(more);
}

/// Gives back what `v` holds beyond its length.
pub(super) fn fit<T>(v: &mut Vec<T>) {
    if v.capacity() > v.len() {
        v.shrink_to_fit();
    }
}

impl Profile {
    /// Sizes every list of the profile exactly (after a change), and gives
    /// back the box of the rarely used lists when they are all empty.
    pub(super) fn fit(&mut self) {
        self.links.compact(&self.ids);
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

/// The canonical position of an event: event time, channel, event id.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EvidenceKey {
    pub at: EventTime,
    pub channel: Channel,
    #[serde(
        serialize_with = "crate::intern::write_arc_str",
        deserialize_with = "crate::intern::arc_str"
    )]
    pub event_id: ArcStr,
}

/// One distinct identifier set, at its first occurrence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    pub key: EvidenceKey,
    /// Sorted, no repeats.
    pub ids: Arc<[IdKey]>,
}

/// A change to the graph. Applying the same ops in the same order to the same
/// graph gives the same graph. Serialised (MessagePack) on the identity log
/// topic: its serde names and variants are part of that format (see
/// `IDENTITY_LOG_VERSION` in the processor's changelog module).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum IdentityOp {
    /// Adds an identifier set to the evidence (and joins the components of
    /// its identifiers).
    Record(Evidence),
    Create {
        #[serde(deserialize_with = "crate::intern::one_id")]
        one_id: OneId,
        at: EventTime,
    },
    /// Adds an identifier to a profile; caps may drop the profile's oldest
    /// device link.
    Attach {
        #[serde(deserialize_with = "crate::intern::one_id")]
        one_id: OneId,
        link: LinkRecord,
    },
    Merge {
        #[serde(deserialize_with = "crate::intern::one_id")]
        survivor: OneId,
        #[serde(deserialize_with = "crate::intern::one_id")]
        merged: OneId,
        link: LinkRecord,
    },
    Seen {
        #[serde(deserialize_with = "crate::intern::one_id")]
        one_id: OneId,
        at: EventTime,
    },
    /// A person identifier was first seen with a device at `at`.
    DevicePerson {
        device: IdKey,
        person: IdKey,
        at: EventTime,
    },
    /// The device is shared from now on: it leaves its profile and never links.
    Shared { device: IdKey },
    /// A component is about to be folded again (a rebuild): its
    /// identifiers' device statistics are dropped (the fold records them
    /// again); its evidence is in canonical order already.
    Refold { component: u32 },
    /// A component's evidence is folded up to `last` (what an event must
    /// sort after to be one more fold step rather than a rebuild). Written
    /// for the log's readers; applying it changes nothing, since `last` is
    /// the component's last evidence (`component.rs`).
    Folded { component: u32, last: Option<EvidenceKey> },
    /// Removes a profile before its component is folded again.
    Dissolve {
        #[serde(deserialize_with = "crate::intern::one_id")]
        one_id: OneId,
    },
    /// Erases a profile and suppresses its identifiers.
    Forget {
        #[serde(deserialize_with = "crate::intern::one_id")]
        one_id: OneId,
    },
    /// A link refused on an event that landed on `one_id`, kept for `explain`.
    Refused {
        #[serde(deserialize_with = "crate::intern::one_id")]
        one_id: OneId,
        refused: RefusedLink,
    },
    /// Installs suppression entries (those an earlier run's forgets wrote
    /// to the erasure topic): an identifier with one is ignored from now on,
    /// whatever order the inputs are replayed in. Idempotent; touches no
    /// profile.
    Suppress { entries: Vec<[u8; 16]> },
}

/// Why a link was refused. Serde names are the labels.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// Two different values of a unique namespace would share a profile.
    UniqueConflict,
    /// The device is shared by several people and no longer links.
    SharedDevice,
    /// The profile holds as many person identifiers as it may.
    ProfileFull,
}

impl RejectReason {
    pub const ALL: [RejectReason; 3] = [
        RejectReason::UniqueConflict,
        RejectReason::SharedDevice,
        RejectReason::ProfileFull,
    ];

    pub fn label(self) -> &'static str {
        match self {
            RejectReason::UniqueConflict => "unique_conflict",
            RejectReason::SharedDevice => "shared_device",
            RejectReason::ProfileFull => "profile_full",
        }
    }
}

/// A refused link: `key` stays where it is (`kept_in`).
#[derive(Clone, Debug, PartialEq)]
pub struct Rejection {
    pub key: IdKey,
    pub reason: RejectReason,
    pub kept_in: Option<OneId>,
}

/// A profile that no longer exists and the profile that took over its
/// identifiers (`None`: none of them is in a profile any more).
#[derive(Clone, Debug, PartialEq)]
pub struct Moved {
    pub from: OneId,
    pub to: Option<OneId>,
    /// The identifier through which `to` took it over.
    pub via: Option<IdKey>,
}

/// The result of stitching one event.
#[derive(Clone, Debug, PartialEq)]
pub struct Stitch {
    pub one_id: OneId,
    /// The event's strongest identifier that is now in the profile.
    pub anchor: IdKey,
    pub ops: Vec<IdentityOp>,
    pub rejected: Vec<Rejection>,
    /// Profiles merged into others (by this event or by the rebuild it caused).
    pub moved: Vec<Moved>,
    /// Devices that became shared on this event.
    pub shared: Vec<IdKey>,
    /// Device links dropped by the caps.
    pub dropped: usize,
    /// The event sorted before evidence already folded: its component was rebuilt.
    pub rebuilt: bool,
}

impl Stitch {
    /// Profiles merged away and the link that merged them (plain merges only).
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
    #[error("every identifier on the event was forgotten (erased on request)")]
    Forgotten,
}

impl StitchError {
    pub fn reason(&self) -> &'static str {
        match self {
            StitchError::NoLinkableIdentifier => "no_linkable_identifier",
            StitchError::Forgotten => "forgotten",
        }
    }
}

/// What a forget did.
#[derive(Clone, Debug, PartialEq)]
pub struct Forgotten {
    pub one_id: OneId,
    /// Identifiers erased (linking and household).
    pub ids: Vec<IdKey>,
    /// The suppression entries it added, sorted: one per erased identifier
    /// (and per identifier a cap had dropped from the profile).
    pub suppressed: Vec<Suppression>,
}

/// One suppressed identifier: its namespace and its suppression entry (16
/// bytes of a hash of namespace and value), never the value.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Suppression {
    pub ns: Ns,
    pub entry: [u8; 16],
}
