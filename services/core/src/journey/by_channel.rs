//! Serde for the per-channel arrays of a [`Journey`](super::Journey).
//!
//! In / out: an array indexed by [`Channel::index`]. Human-readable formats
//! (the API's JSON) get a map keyed by channel label; binary ones (snapshots)
//! the plain array. Keeps nothing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::event::Channel;

pub fn serialize<T: Serialize, S: serde::Serializer>(v: &[T; Channel::COUNT], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    if !s.is_human_readable() {
        return v.serialize(s);
    }
    let mut m = s.serialize_map(Some(Channel::COUNT))?;
    for c in Channel::ALL {
        m.serialize_entry(c.label(), &v[c.index()])?;
    }
    m.end()
}

pub fn deserialize<'de, T, D>(d: D) -> Result<[T; Channel::COUNT], D::Error>
where
    T: Deserialize<'de> + Default,
    D: serde::Deserializer<'de>,
{
    if !d.is_human_readable() {
        return <[T; Channel::COUNT]>::deserialize(d);
    }
    let mut m = BTreeMap::<String, T>::deserialize(d)?;
    Ok(Channel::ALL.map(|c| m.remove(c.label()).unwrap_or_default()))
}
