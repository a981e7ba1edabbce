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

use serde::{Deserialize, Serialize};

use crate::event::Channel;
use crate::ids::{ArcStr, IdKey, Ns};
use crate::time::EventTime;

pub use super::profile::Profile;
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
    pub(super) fn order_key(&self) -> (EventTime, Channel, &str, &IdKey) {
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
