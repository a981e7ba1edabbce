//! An identifier as every map of the state holds it: one pointer.
//!
//! In: a namespace's index and a normalised value ([`IdKey::new`], from
//! `ids.rs`'s normalisation or a decoded state). Out: the key, its
//! namespace and value. Keeps the two in one shared allocation.

use std::fmt;

use super::{ArcStr, Ns};

/// One identifier after normalisation: a namespace and a value. Email and phone
/// values are SHA-256 hex.
///
/// 8 bytes: one [`ArcStr`] whose text is the namespace's index as one
/// character (`char::from(ns.0)`: one byte below 128, two from 128 on)
/// followed by the value. The identity graph holds about seven copies of
/// every identifier (index, profile, links, component, evidence, device
/// counts, timers), so the handle's size is paid seven times and the
/// namespace's byte once; before, an `IdKey` was the namespace and an
/// `ArcStr` apart, 16 bytes with the padding. The value itself is
/// allocated once (see `identity/fold.rs`).
///
/// Ordered, hashed, compared, printed and serialised exactly as the struct
/// of a namespace and a value it replaces: the namespace's character sorts
/// as its index does (UTF-8 keeps the order of code points), [`Hash`] feeds
/// the namespace then the value, and serde reads and writes the two fields
/// `ns` and `value` (the value through the snapshot's text table: the serde
/// impls are in `intern/ids.rs`).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct IdKey(ArcStr);

impl IdKey {
    pub fn new(ns: Ns, value: &str) -> IdKey {
        let mut c = [0u8; 4];
        let head = char::from(ns.0).encode_utf8(&mut c).as_bytes();
        // Written in place: no text built first and copied.
        let text = ArcStr::init_with(head.len() + value.len(), |buf| {
            let (h, v) = buf.split_at_mut(head.len());
            h.copy_from_slice(head);
            v.copy_from_slice(value.as_bytes());
        });
        // Both parts are UTF-8, so the whole is; the fallback never runs.
        IdKey(text.unwrap_or_else(|_| {
            let mut t = String::with_capacity(value.len() + 2);
            Self::write_text(ns, value, &mut t);
            ArcStr::from(t)
        }))
    }

    /// Appends the text an `IdKey` of `ns` and `value` holds to `t`: the
    /// namespace's character, then the value (a lookup by the whole text
    /// builds it so).
    pub(crate) fn write_text(ns: Ns, value: &str, t: &mut String) {
        t.push(char::from(ns.0));
        t.push_str(value);
    }

    /// Its namespace.
    pub fn ns(&self) -> Ns {
        self.split().0
    }

    /// Its value.
    pub fn value(&self) -> &str {
        self.split().1
    }

    fn split(&self) -> (Ns, &str) {
        let t: &str = &self.0;
        match t.as_bytes().first() {
            Some(&b) if b < 0x80 => (Ns(b), t.get(1..).unwrap_or_default()),
            _ => {
                let mut chars = t.chars();
                let c = chars.next().map_or(0, u32::from);
                (Ns(u8::try_from(c).unwrap_or(u8::MAX)), chars.as_str())
            }
        }
    }

    /// True when both are the same allocation (not only equal).
    pub fn ptr_eq(a: &IdKey, b: &IdKey) -> bool {
        ArcStr::ptr_eq(&a.0, &b.0)
    }

    /// The address of its allocation: the same for every copy of it.
    pub fn addr(&self) -> usize {
        self.0.as_ptr() as usize
    }

    /// How many hold its allocation (`None` for a static text).
    pub(crate) fn strong_count(&self) -> Option<usize> {
        ArcStr::strong_count(&self.0)
    }

    /// The text it holds (namespace character and value), for the text
    /// table's bookkeeping.
    pub(crate) fn held_text(&self) -> &str {
        &self.0
    }
}

impl std::hash::Hash for IdKey {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        let (ns, value) = self.split();
        ns.hash(h);
        value.hash(h);
    }
}

impl fmt::Debug for IdKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdKey")
            .field("ns", &self.ns())
            .field("value", &self.value())
            .finish()
    }
}

#[cfg(test)]
#[path = "key_tests.rs"]
mod tests;
