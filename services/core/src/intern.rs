//! Texts read back once: while a state is decoded, every One ID, identifier
//! value and event id with a text already read is the earlier allocation.
//!
//! In: a decode run inside [`scope`] (a [`crate::processor::CoreSnapshot`]
//! opens one around itself), or an encode run inside [`write_scope`]; the
//! fields that read and write texts through [`arc_str`] / [`write_arc_str`],
//! [`one_id`] / [`write_one_id`] and [`opt_one_id`] / [`write_opt_one_id`]
//! (or [`OneIdText`] / [`OneIdRef`] inside tuples). Out: shared `ArcStr`
//! and `OneId` values, as the live state shares them. Keeps the texts of
//! the current scope (this thread's) and drops them when the outermost scope
//! ends; outside a scope a text is written and allocated as serde would.
//!
//! Two ways to share, by the format read:
//!
//! - **Text table** (snapshot format 7 on, [`TABLE_FORMAT`]): the writer
//!   writes a text in full where it first meets the allocation and, where
//!   the same allocation comes again, its number (the how-manieth text of
//!   its kind written in full). The reader keeps every text it reads in
//!   full in a list and takes a number as that entry: no hashing, no
//!   comparing of texts, and the file holds each shared text once. What the
//!   writer shared is shared back, exactly; texts equal but apart stay
//!   apart. The writer keeps a number only for a text that something else
//!   also holds (its count above one), so unshared texts cost no entry.
//! - **By content** (format 6 and older, and the changelog records): every
//!   text in full; a set of the texts read so far gives back the earlier
//!   allocation of an equal text.
//!
//! The scope learns which from the snapshot's first field ([`version`]).
//!
//! Why: the live graph holds each text once and refers to it from the
//! index, the profile, its links, the evidence, the journey map and the
//! timers. Decoded without sharing, every occurrence was an allocation of
//! its own: about 860 bytes a profile more after a restart (5M profiles,
//! session 12). Sharing by content costs a probe of a set of tens of
//! millions of texts per text read (a third of a 1M restore, session 13);
//! the table costs a list entry.
//!
//! The writer tells texts apart by address: the state must not change
//! while it is written (as `snapshot::exact_seq` requires of its maps), or
//! a text dropped and another allocated at its address would be written as
//! the first one's number. The counts written at the end of the snapshot
//! ([`TextCounts`]) let the reader check that both sides numbered the same
//! texts.

use std::borrow::Borrow;
use std::cell::RefCell;
use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;

use serde::de::{Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::hash::{HashMap, HashSet};
use crate::ids::{ArcStr, IdKey};
use crate::one_id::OneId;

mod ids;

/// The first snapshot format (`processor/snapshot.rs`) written with a text
/// table.
pub const TABLE_FORMAT: u32 = 7;

/// A kind of shared text: identifier values and event ids (`ArcStr`), One
/// IDs (`OneId`). Each kind is numbered on its own.
trait Shared: Clone + Eq + Hash + Borrow<str> {
    const WHAT: &'static str;
    fn new(s: &str) -> Self;
    /// Whether something besides the value at hand holds it.
    fn held_elsewhere(&self) -> bool;
    fn seen(t: &mut Texts) -> &mut HashSet<Self>;
    /// Lists a text read in full.
    fn list(t: &mut Table, v: &Self);
    /// The `i`th text of its kind read in full.
    fn listed(t: &Table, i: usize) -> Option<Self>;
    fn listed_len(t: &Table) -> usize;
    fn numbered(w: &mut Written) -> &mut Numbered;
}

impl Shared for ArcStr {
    const WHAT: &'static str = "identifier or event id";
    fn new(s: &str) -> Self {
        ArcStr::from(s)
    }
    fn held_elsewhere(&self) -> bool {
        ArcStr::strong_count(self).is_some_and(|n| n > 1)
    }
    fn seen(t: &mut Texts) -> &mut HashSet<Self> {
        &mut t.strs
    }
    fn list(t: &mut Table, v: &Self) {
        t.strs.push(Listed::Text(v.clone()));
    }
    fn listed(t: &Table, i: usize) -> Option<Self> {
        t.strs.get(i).map(|l| match l {
            Listed::Text(a) => a.clone(),
            // Only a state decoded by content before (format 6, changelog
            // records) can share an identifier's text with an event id.
            Listed::Id(k) => ArcStr::from(k.value()),
        })
    }
    fn listed_len(t: &Table) -> usize {
        t.strs.len()
    }
    fn numbered(w: &mut Written) -> &mut Numbered {
        &mut w.strs
    }
}

impl Shared for OneId {
    const WHAT: &'static str = "One ID";
    fn new(s: &str) -> Self {
        OneId::from(s)
    }
    fn held_elsewhere(&self) -> bool {
        OneId::strong_count(self).is_some_and(|n| n > 1)
    }
    fn seen(t: &mut Texts) -> &mut HashSet<Self> {
        &mut t.one_ids
    }
    fn list(t: &mut Table, v: &Self) {
        t.one_ids.push(v.clone());
    }
    fn listed(t: &Table, i: usize) -> Option<Self> {
        t.one_ids.get(i).cloned()
    }
    fn listed_len(t: &Table) -> usize {
        t.one_ids.len()
    }
    fn numbered(w: &mut Written) -> &mut Numbered {
        &mut w.one_ids
    }
}

#[derive(Default)]
struct Texts {
    strs: HashSet<ArcStr>,
    one_ids: HashSet<OneId>,
    /// Identifiers read by content, by their whole text (namespace and value).
    ids: HashSet<ids::Held>,
    /// The whole text of the identifier being looked up in `ids`.
    probe: String,
    /// Set once the format says it has a text table.
    table: Option<Table>,
}

/// Every text read in full, per kind, in the order read.
#[derive(Default)]
struct Table {
    /// Identifier values and event ids, numbered as one kind (the format's).
    strs: Vec<Listed>,
    one_ids: Vec<OneId>,
}

/// An identifier value or an event id read in full: an identifier's text
/// is its namespace and value in one allocation ([`IdKey`]), so the table
/// keeps the key.
enum Listed {
    Text(ArcStr),
    Id(IdKey),
}

/// The writer's numbers for one kind: by the text's address, for the texts
/// held elsewhere too; how many were written in full.
#[derive(Default)]
struct Numbered {
    /// Keyed by the address split in two halves: 12 bytes an entry instead
    /// of the 16 a `(usize, u32)` pads to (about 60M entries at 10M
    /// profiles, kept for the whole write).
    at: HashMap<(u32, u32), u32>,
    written: u64,
}

#[derive(Default)]
struct Written {
    strs: Numbered,
    one_ids: Numbered,
}

thread_local! {
    static TEXTS: RefCell<Option<Texts>> = const { RefCell::new(None) };
    static WRITTEN: RefCell<Option<Written>> = const { RefCell::new(None) };
}

/// Runs `f` with `cell` set to a fresh value unless an outer call set it,
/// and cleared when the outermost call ends (on unwind too).
fn scoped<T: Default + 'static, R>(
    cell: &'static std::thread::LocalKey<RefCell<Option<T>>>,
    f: impl FnOnce() -> R,
) -> R {
    let outermost = cell.with(|t| {
        let mut t = t.borrow_mut();
        let fresh = t.is_none();
        if fresh {
            *t = Some(T::default());
        }
        fresh
    });
    struct End<T: 'static>(Option<&'static std::thread::LocalKey<RefCell<Option<T>>>>);
    impl<T: 'static> Drop for End<T> {
        fn drop(&mut self) {
            if let Some(cell) = self.0 {
                cell.with(|t| t.borrow_mut().take());
            }
        }
    }
    let _end = End(outermost.then_some(cell));
    f()
}

/// Runs `f` with texts shared across everything it decodes on this thread
/// (nested scopes share the outermost's texts).
pub fn scope<R>(f: impl FnOnce() -> R) -> R {
    scoped(&TEXTS, f)
}

/// Runs `f` with every text it encodes on this thread numbered: a repeat of
/// an allocation is written as its number (nested scopes number on).
pub fn write_scope<R>(f: impl FnOnce() -> R) -> R {
    scoped(&WRITTEN, f)
}

/// How many texts of each kind were written in full: the end of a snapshot
/// with a text table, checked by the reader against what it read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TextCounts {
    pub identifiers: u64,
    pub one_ids: u64,
}

/// The counts of the current write scope (zero outside one).
pub fn written() -> TextCounts {
    WRITTEN.with(|w| {
        w.borrow().as_ref().map_or_else(TextCounts::default, |w| TextCounts {
            identifiers: w.strs.written,
            one_ids: w.one_ids.written,
        })
    })
}

/// The counts of the current decode scope's text table (`None` without one).
fn read() -> Option<TextCounts> {
    TEXTS.with(|t| {
        let t = t.borrow();
        let table = t.as_ref()?.table.as_ref()?;
        Some(TextCounts {
            identifiers: table.strs.len() as u64,
            one_ids: table.one_ids.len() as u64,
        })
    })
}

/// `deserialize_with` for a snapshot's format version, its first field:
/// from [`TABLE_FORMAT`] on, the texts after it are read as a text table.
pub fn version<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = u32::deserialize(d)?;
    if v >= TABLE_FORMAT {
        TEXTS.with(|t| {
            if let Some(texts) = t.borrow_mut().as_mut() {
                texts.table.get_or_insert_with(Table::default);
            }
        });
    }
    Ok(v)
}

fn in_table() -> bool {
    TEXTS.with(|t| t.borrow().as_ref().is_some_and(|t| t.table.is_some()))
}

/// A text read in full: listed (table), shared by content (scope), or its
/// own allocation (no scope).
fn full<T: Shared>(s: &str) -> T {
    TEXTS.with(|t| match t.borrow_mut().as_mut() {
        None => T::new(s),
        Some(texts) => match texts.table.as_mut() {
            Some(table) => {
                let new = T::new(s);
                T::list(table, &new);
                new
            }
            None => {
                let seen = T::seen(texts);
                match seen.get(s) {
                    Some(earlier) => earlier.clone(),
                    None => {
                        let new = T::new(s);
                        seen.insert(new.clone());
                        new
                    }
                }
            }
        },
    })
}

/// A text read as its number in the table.
fn numbered<T: Shared, E: serde::de::Error>(n: u64) -> Result<T, E> {
    TEXTS.with(|t| {
        let t = t.borrow();
        let table = t.as_ref().and_then(|t| t.table.as_ref());
        match (table, usize::try_from(n)) {
            (Some(table), Ok(i)) => T::listed(table, i).ok_or_else(|| damaged(T::WHAT, n, T::listed_len(table))),
            _ => Err(not_a_number(T::WHAT, n)),
        }
    })
}

fn damaged<E: serde::de::Error>(what: &str, n: u64, read: usize) -> E {
    E::custom(format!(
        "a {what} refers to text {n} of {read} read: the snapshot is damaged"
    ))
}

fn not_a_number<E: serde::de::Error>(what: &str, n: u64) -> E {
    E::custom(format!("a {what} is a number ({n}) where this format has a text"))
}

struct Read<T>(PhantomData<T>);

impl<T: Shared> Visitor<'_> for Read<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string or, in a text table, a text's number")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<T, E> {
        Ok(full(v))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<T, E> {
        numbered(v)
    }
}

fn read_text<'de, T: Shared, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
    read_with(d, Read(PhantomData))
}

/// Reads a text field with `v`: a string or, in a text table, also a
/// number (any value, so that a number reaches `visit_u64`).
fn read_with<'de, D: Deserializer<'de>, V: Visitor<'de>>(d: D, v: V) -> Result<V::Value, D::Error> {
    if in_table() {
        d.deserialize_any(v)
    } else {
        d.deserialize_str(v)
    }
}

/// Writes `v` in full, or as its number when this write scope has written
/// the same allocation in full before.
fn write_text<T: Shared, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    let text: &str = v.borrow();
    write_counted(T::numbered, text.as_ptr() as usize, v.held_elsewhere(), text, s)
}

/// Writes `text` in full, or as its number when this write scope has
/// written the allocation at `addr` in full before (numbered among `kind`).
/// `held`: something besides the value at hand holds the allocation.
fn write_counted<S: Serializer>(
    kind: fn(&mut Written) -> &mut Numbered,
    addr: usize,
    held: bool,
    text: &str,
    s: S,
) -> Result<S::Ok, S::Error> {
    let number = WRITTEN.with(|w| {
        let mut w = w.borrow_mut();
        let numbered = kind(w.as_mut()?);
        let addr = addr as u64;
        let addr = ((addr >> 32) as u32, addr as u32);
        if let Some(&n) = numbered.at.get(&addr) {
            return Some(n);
        }
        let n = numbered.written;
        numbered.written += 1;
        if let (true, Ok(n)) = (held, u32::try_from(n)) {
            numbered.at.insert(addr, n);
        }
        None
    });
    match number {
        Some(n) => s.serialize_u32(n),
        None => s.serialize_str(text),
    }
}

/// A One ID read from outside serde (a record's key), shared like the
/// ones serde reads.
pub fn one_id_text(s: &str) -> OneId {
    full(s)
}

/// `deserialize_with` for an identifier value or an event id.
pub fn arc_str<'de, D: Deserializer<'de>>(d: D) -> Result<ArcStr, D::Error> {
    read_text(d)
}

/// `serialize_with` for an identifier value or an event id.
pub fn write_arc_str<S: Serializer>(v: &ArcStr, s: S) -> Result<S::Ok, S::Error> {
    write_text(v, s)
}

/// `deserialize_with` for a One ID.
pub fn one_id<'de, D: Deserializer<'de>>(d: D) -> Result<OneId, D::Error> {
    read_text(d)
}

/// `serialize_with` for a One ID.
pub fn write_one_id<S: Serializer>(v: &OneId, s: S) -> Result<S::Ok, S::Error> {
    write_text(v, s)
}

/// `deserialize_with` for an optional One ID.
pub fn opt_one_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<OneId>, D::Error> {
    Ok(Option::<OneIdText>::deserialize(d)?.map(|t| t.0))
}

/// `serialize_with` for an optional One ID.
pub fn write_opt_one_id<S: Serializer>(v: &Option<OneId>, s: S) -> Result<S::Ok, S::Error> {
    v.as_ref().map(OneIdRef).serialize(s)
}

/// A One ID read where no attribute can reach (inside a tuple or a sequence).
pub struct OneIdText(pub OneId);

impl<'de> Deserialize<'de> for OneIdText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        one_id(d).map(OneIdText)
    }
}

/// A One ID written where no attribute can reach.
pub struct OneIdRef<'a>(pub &'a OneId);

impl Serialize for OneIdRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        write_one_id(self.0, s)
    }
}

/// Ends the text table of a snapshot's decode: checks that the writer
/// wrote in full the texts the reader read in full, and lets the scope go
/// on by content (an outer scope may decode more after the snapshot).
pub fn end_table<E: serde::de::Error>(written: Option<TextCounts>) -> Result<(), E> {
    let read = read();
    TEXTS.with(|t| t.borrow_mut().as_mut().map(|t| t.table.take()));
    match (read, written) {
        (None, _) => Ok(()),
        (Some(read), Some(written)) if read == written => Ok(()),
        (Some(read), written) => Err(E::custom(format!(
            "the snapshot's text table does not add up: written {written:?}, read {read:?}"
        ))),
    }
}

#[cfg(test)]
mod tests;
