//! Texts read back once: while a state is decoded, every One ID, identifier
//! value and event id with a text already read is the earlier allocation.
//!
//! In: a decode run inside [`scope`] (a [`crate::processor::CoreSnapshot`]
//! opens one around itself); the fields that read texts through
//! [`arc_str`], [`one_id`] and [`opt_one_id`] (or [`OneIdText`] inside
//! tuples). Out: shared `ArcStr` and `Arc<str>` values, as the live state
//! shares them. Keeps the texts of the current scope (this thread's) and
//! drops them when the outermost scope ends; outside a scope a text is
//! allocated as serde would.
//!
//! Why: the live graph holds each text once and refers to it from the
//! index, the profile, its links, the evidence, the journey map and the
//! timers. Decoded without sharing, every occurrence was an allocation of
//! its own: about 860 bytes a profile more after a restart (5M profiles,
//! session 12), and at 10M more than the machine has, before any pass
//! afterwards could share them. Sharing while decoding never holds the
//! duplicates at all; the price is one hash lookup per text read.

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;

use serde::de::{Deserializer, Visitor};
use serde::Deserialize;

use crate::hash::HashSet;
use crate::ids::ArcStr;

#[derive(Default)]
struct Texts {
    strs: HashSet<ArcStr>,
    one_ids: HashSet<Arc<str>>,
}

thread_local! {
    static TEXTS: RefCell<Option<Texts>> = const { RefCell::new(None) };
}

/// Runs `f` with texts shared across everything it decodes on this thread
/// (nested scopes share the outermost's texts).
pub fn scope<R>(f: impl FnOnce() -> R) -> R {
    let outermost = TEXTS.with(|t| {
        let mut t = t.borrow_mut();
        let fresh = t.is_none();
        if fresh {
            *t = Some(Texts::default());
        }
        fresh
    });
    // Dropped on unwind too, so a panic leaves no scope behind.
    struct End(bool);
    impl Drop for End {
        fn drop(&mut self) {
            if self.0 {
                TEXTS.with(|t| t.borrow_mut().take());
            }
        }
    }
    let _end = End(outermost);
    f()
}

fn shared_str(s: &str) -> ArcStr {
    TEXTS.with(|t| match t.borrow_mut().as_mut() {
        Some(texts) => match texts.strs.get(s) {
            Some(seen) => seen.clone(),
            None => {
                let new = ArcStr::from(s);
                texts.strs.insert(new.clone());
                new
            }
        },
        None => ArcStr::from(s),
    })
}

fn shared_one_id(s: &str) -> Arc<str> {
    TEXTS.with(|t| match t.borrow_mut().as_mut() {
        Some(texts) => match texts.one_ids.get(s) {
            Some(seen) => seen.clone(),
            None => {
                let new: Arc<str> = Arc::from(s);
                texts.one_ids.insert(new.clone());
                new
            }
        },
        None => Arc::from(s),
    })
}

/// A One ID read from outside serde (a record's key), shared like the
/// ones serde reads.
pub fn one_id_text(s: &str) -> Arc<str> {
    shared_one_id(s)
}

/// Reads a string and hands it to `make` as a `&str`, without an owned
/// copy where the format allows.
struct Text<F>(F);

impl<T, F: FnOnce(&str) -> T> Visitor<'_> for Text<F> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<T, E> {
        Ok((self.0)(v))
    }
}

/// `deserialize_with` for an identifier value or an event id.
pub fn arc_str<'de, D: Deserializer<'de>>(d: D) -> Result<ArcStr, D::Error> {
    d.deserialize_str(Text(shared_str))
}

/// `deserialize_with` for a One ID.
pub fn one_id<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<str>, D::Error> {
    d.deserialize_str(Text(shared_one_id))
}

/// `deserialize_with` for an optional One ID.
pub fn opt_one_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Arc<str>>, D::Error> {
    Ok(Option::<OneIdText>::deserialize(d)?.map(|t| t.0))
}

/// A One ID where no attribute can reach (inside a tuple or a sequence).
pub struct OneIdText(pub Arc<str>);

impl<'de> Deserialize<'de> for OneIdText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        one_id(d).map(OneIdText)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Pair {
        #[serde(deserialize_with = "arc_str")]
        a: ArcStr,
        #[serde(deserialize_with = "arc_str")]
        b: ArcStr,
        #[serde(deserialize_with = "one_id")]
        c: Arc<str>,
        #[serde(deserialize_with = "opt_one_id")]
        d: Option<Arc<str>>,
    }

    fn pair() -> Vec<u8> {
        rmp_serde::to_vec(&("x", "x", "y", Some("y"))).expect("encodes")
    }

    #[test]
    fn inside_a_scope_equal_texts_are_one_allocation() {
        let bytes = pair();
        let p: Pair = scope(|| rmp_serde::from_slice(&bytes)).expect("decodes");
        assert!(ArcStr::ptr_eq(&p.a, &p.b));
        let d = p.d.expect("some");
        assert!(Arc::ptr_eq(&p.c, &d));
        assert_eq!((&*p.a, &*d), ("x", "y"));
        // The scope's texts went with it: the values are the only holders.
        assert_eq!(Arc::strong_count(&d), 2);
    }

    #[test]
    fn outside_a_scope_every_text_is_its_own() {
        let p: Pair = rmp_serde::from_slice(&pair()).expect("decodes");
        assert!(!ArcStr::ptr_eq(&p.a, &p.b));
        assert!(!Arc::ptr_eq(&p.c, p.d.as_ref().expect("some")));
        TEXTS.with(|t| assert!(t.borrow().is_none()));
    }

    #[test]
    fn a_key_read_outside_serde_shares_with_the_decoded_one_ids() {
        let bytes = pair();
        let (p, key) = scope(|| {
            let p: Pair = rmp_serde::from_slice(&bytes).expect("decodes");
            (p, one_id_text("y"))
        });
        assert!(Arc::ptr_eq(&p.c, &key));
        assert!(
            !Arc::ptr_eq(&one_id_text("y"), &one_id_text("y")),
            "no scope: no sharing"
        );
    }

    #[test]
    fn nested_scopes_share_the_outermost_texts() {
        let bytes = pair();
        let (p, q): (Pair, Pair) = scope(|| {
            let p = scope(|| rmp_serde::from_slice(&bytes)).expect("decodes");
            (p, rmp_serde::from_slice(&bytes).expect("decodes"))
        });
        assert!(ArcStr::ptr_eq(&p.a, &q.b));
        TEXTS.with(|t| assert!(t.borrow().is_none()));
    }
}
