//! How the state holds one journey: live (an `Arc<Journey>` the writer
//! changes and a checkpoint shares) or frozen (compressed bytes, for a
//! customer with no event for `state.freeze_journeys_after`).
//!
//! In: a journey to freeze, or a frozen one to read. Out: the bytes, or the
//! journey decoded again (equal to the one frozen: `freeze_tests.rs`).
//! Keeps nothing but the value; the codec's dictionary is compiled in.
//!
//! Why: most customers of a large retailer are idle on any given day. A
//! live journey is a structure in an allocator size class plus a dozen
//! small allocations: about 1 KB for one login, several KB for a customer
//! with months of history. Frozen, it is one allocation of a few hundred
//! bytes. This is the in-memory counterpart of what RocksDB-backed stores
//! (Kafka Streams, Flink) do for every key: a cold key's state is kept
//! serialised and decoded when it is touched. Here only idle keys pay, and
//! only once, on their next event (a few microseconds).
//!
//! The encoding is [`postcard`] of [`Journey`] (positional, integers as
//! varints, no type tags), compressed with zstd and a dictionary trained
//! on simulated journeys encoded so (`journey.dict`, written by the bench's
//! `journey_dict` example): small records compress poorly alone (about 2x),
//! and with the dictionary about 4.3x. The zstd frame leaves out what the
//! header or this file already knows: its magic number (put back to
//! decode), the dictionary's id and the content size. Frozen bytes leave
//! the process only in the local snapshot file (format 6), which carries
//! the dictionary they were compressed with: a build with a new dictionary
//! re-freezes them at restore ([`Refreezer`]). They are never on the wire.
//!
//! Why postcard and the trimmed frame (session 39): a journey of one login
//! froze to about 165 bytes as MessagePack (what the changelog writes) in
//! a whole frame, an allocation of 192; now about 121, an allocation of
//! 128 (the trimmed frame saves 8-9 bytes: without a content size it
//! carries a one-byte window size instead). Over a simulated population's
//! journeys the frozen bytes fall by about 8%.
//! MessagePack spends a type byte on every value and 9 bytes on every time,
//! postcard 6 (a varint of the milliseconds).
//!
//! A frozen value starts with a header read without decoding: the last
//! event time (8 bytes, big-endian, `i64::MIN` for none), one flag byte and
//! the encoded length (4 bytes), so the eviction scan, the recent list and
//! the size estimate never decode. The flag byte: bit 0 [`DETAIL`] (the
//! journey still has detail to evict), bits 1-7 the encoding: 0 for
//! MessagePack in a whole frame (as builds before session 39 froze; only a
//! [`Refreezer`] meets them, since they come only from those builds'
//! snapshots, whose dictionary is not this build's), otherwise the
//! [`LAYOUT`] of the postcard encoding.
//!
//! Why a layout number: postcard writes no field count, so bytes decode
//! only into the `Journey` that wrote them, where MessagePack's arrays let
//! a journey with fields appended (`#[serde(default)]`) read older records.
//! A snapshot keeps frozen bytes as they are, so a build whose `Journey`
//! encodes differently must not take them for its own: [`LAYOUT`] is
//! raised with every such change (`stored_tests.rs` pins the encoding of a
//! rich journey and fails until it is), a value of another layout does not
//! thaw, and a restore that meets one refuses with what to do (the
//! changelog, MessagePack, still restores the state) instead of losing the
//! journey.

use std::cell::RefCell;
use std::sync::{Arc, OnceLock};

use zstd::bulk::{Compressor, Decompressor};
use zstd::dict::{DecoderDictionary, EncoderDictionary};

use crate::journey::Journey;
use crate::time::EventTime;

/// Bytes in front of the compressed journey.
const HEADER: usize = 13;

/// Flag bit: the journey still has detail to evict ([`Journey::evictable`]).
const DETAIL: u8 = 1;

/// The layout of this build's encoding (flag bits 1-7): postcard of this
/// build's `Journey`, in a frame without magic number, dictionary id and
/// content size. Raise it whenever `Journey`'s postcard encoding changes
/// (a field added, removed, reordered or retyped, anywhere inside it):
/// `stored_tests.rs`' pinned encoding fails until it is. 0 is MessagePack
/// in a whole frame (before session 39).
pub const LAYOUT: u8 = 1;

/// The encoding (flag bits 1-7) of frozen bytes `b`.
fn encoding(b: &[u8]) -> Option<u8> {
    b.get(8).map(|f| f >> 1)
}

/// The magic number that starts every zstd frame, left out of the bytes.
const MAGIC: [u8; 4] = 0xFD2F_B528u32.to_le_bytes();

/// zstd's level: 3 (its default) compresses journeys about 7% smaller than
/// 1 at the same speed with this dictionary.
const LEVEL: i32 = 3;

/// The dictionary, trained on simulated journeys.
static DICT: &[u8] = include_bytes!("journey.dict");

fn encoder_dict() -> &'static EncoderDictionary<'static> {
    static D: OnceLock<EncoderDictionary<'static>> = OnceLock::new();
    D.get_or_init(|| EncoderDictionary::copy(DICT, LEVEL))
}

fn decoder_dict() -> &'static DecoderDictionary<'static> {
    static D: OnceLock<DecoderDictionary<'static>> = OnceLock::new();
    D.get_or_init(|| DecoderDictionary::copy(DICT))
}

thread_local! {
    // One context per thread (the writer, the freeze scan, readers), made
    // on first use; `None` if zstd could not make one.
    static COMPRESSOR: RefCell<Option<Compressor<'static>>> = RefCell::new(compressor());
    static DECOMPRESSOR: RefCell<Option<Decompressor<'static>>> =
        RefCell::new(Decompressor::with_prepared_dictionary(decoder_dict()).ok());
}

/// `j` as it is encoded before compression: what the dictionary is
/// trained on (the bench's `journey_dict` example).
pub fn encode(j: &Journey) -> Option<Vec<u8>> {
    postcard::to_stdvec(j).ok()
}

/// A compressor with this build's dictionary, writing trimmed frames.
fn compressor() -> Option<Compressor<'static>> {
    trimmed(Compressor::with_prepared_dictionary(encoder_dict()).ok()?)
}

/// `c`, writing frames that carry neither the dictionary's id nor the
/// content size (the header has the length).
fn trimmed(mut c: Compressor<'_>) -> Option<Compressor<'_>> {
    use zstd::zstd_safe::CParameter;
    c.set_parameter(CParameter::DictIdFlag(false)).ok()?;
    c.set_parameter(CParameter::ContentSizeFlag(false)).ok()?;
    Some(c)
}

/// The journey of frozen bytes `b`, decompressed by `d` (which holds the
/// dictionary they were compressed with), in either encoding
/// (MessagePack, or this build's [`LAYOUT`]); `None` if they do not
/// decode, not to the length the header says, or are of another layout.
fn thaw(b: &[u8], d: &mut Decompressor<'_>) -> Option<Journey> {
    let len = u32::from_be_bytes(b.get(9..HEADER)?.try_into().ok()?) as usize;
    let body = b.get(HEADER..)?;
    let encoding = encoding(b)?;
    let frame = match encoding {
        0 => std::borrow::Cow::Borrowed(body),
        LAYOUT => std::borrow::Cow::Owned([MAGIC.as_slice(), body].concat()),
        _ => return None,
    };
    let encoded = d.decompress(&frame, len).ok().filter(|e| e.len() == len)?;
    if encoding == 0 {
        return rmp_serde::from_slice(&encoded).ok();
    }
    match postcard::take_from_bytes::<Journey>(&encoded) {
        Ok((j, [])) => Some(j),
        _ => None,
    }
}

/// One journey as the state holds it.
#[derive(Clone, Debug)]
pub enum Stored {
    Live(Arc<Journey>),
    /// The header, then the compressed journey.
    Frozen(Box<[u8]>),
}

impl Stored {
    /// `j` encoded and compressed; `None` if it cannot be (zstd failed:
    /// the caller keeps it live).
    pub fn freeze(j: &Journey) -> Option<Stored> {
        let encoded = encode(j)?;
        let len = u32::try_from(encoded.len()).ok()?;
        let packed = COMPRESSOR.with_borrow_mut(|c| c.as_mut()?.compress(&encoded).ok())?;
        let body = packed.strip_prefix(&MAGIC)?;
        let mut out = Vec::with_capacity(HEADER + body.len());
        out.extend_from_slice(&j.last_seen.map_or(i64::MIN, |t| t.0).to_be_bytes());
        out.push(LAYOUT << 1 | u8::from(j.has_detail()));
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(body);
        Some(Stored::Frozen(out.into_boxed_slice()))
    }

    /// `j` as a restore holds it: frozen when `cutoff` is given and `j` has
    /// had no event since (as [`State::freeze_idle`](super::State::freeze_idle)
    /// would freeze it), live otherwise. A restore at 10M profiles so never
    /// holds every journey live at once.
    pub fn restored(j: Journey, cutoff: Option<EventTime>) -> Stored {
        let idle = cutoff.is_some_and(|c| idle_before(&j, c));
        match idle.then(|| Stored::freeze(&j)).flatten() {
            Some(frozen) => frozen,
            None => Stored::Live(Arc::new(j)),
        }
    }

    pub fn is_frozen(&self) -> bool {
        matches!(self, Stored::Frozen(_))
    }

    /// The layout of a frozen value that is neither this build's nor
    /// MessagePack (which this build still reads): bytes a build with
    /// another `Journey` froze. `None` for a live journey or one this build
    /// reads.
    pub fn foreign_layout(&self) -> Option<u8> {
        match self {
            Stored::Frozen(b) => encoding(b).filter(|&e| e != 0 && e != LAYOUT),
            Stored::Live(_) => None,
        }
    }

    /// The journey: shared when live, decoded when frozen (`None` only if a
    /// frozen value does not decode, which would be a bug of this file).
    pub fn journey(&self) -> Option<Arc<Journey>> {
        match self {
            Stored::Live(j) => Some(j.clone()),
            Stored::Frozen(b) => DECOMPRESSOR.with_borrow_mut(|d| thaw(b, d.as_mut()?)).map(Arc::new),
        }
    }

    /// The last event time, without decoding.
    pub fn last_seen(&self) -> Option<EventTime> {
        match self {
            Stored::Live(j) => j.last_seen,
            Stored::Frozen(b) => {
                let t = i64::from_be_bytes(b.get(..8)?.try_into().ok()?);
                (t != i64::MIN).then_some(EventTime(t))
            }
        }
    }

    /// Whether the journey has had no event since `cutoff` and still keeps
    /// detail ([`Journey::evictable`]), without decoding.
    pub fn evictable(&self, cutoff: EventTime) -> bool {
        match self {
            Stored::Live(j) => j.evictable(cutoff),
            Stored::Frozen(b) => {
                self.last_seen().is_some_and(|t| t < cutoff) && b.get(8).is_some_and(|f| f & DETAIL != 0)
            }
        }
    }
}

/// Whether `j` has had no event since `cutoff`: what freezing waits for
/// (the engine's scan and a restore alike).
pub(crate) fn idle_before(j: &Journey, cutoff: EventTime) -> bool {
    j.last_seen.is_none_or(|t| t < cutoff)
}

impl From<Journey> for Stored {
    fn from(j: Journey) -> Stored {
        Stored::Live(Arc::new(j))
    }
}

/// The dictionary this build freezes with: a snapshot carries it, so that a
/// build with another one can still read the snapshot's frozen journeys
/// ([`Refreezer`]).
pub fn dictionary() -> &'static [u8] {
    DICT
}

/// Re-freezes journeys frozen with another dictionary (a snapshot written
/// by a build with another `journey.dict`) with this build's.
pub struct Refreezer {
    theirs: Decompressor<'static>,
}

impl Refreezer {
    /// `None` when `dict` is this build's (nothing to do), or when zstd
    /// cannot load it (the error says which).
    pub fn new(dict: &[u8]) -> Result<Option<Refreezer>, String> {
        if dict == DICT {
            return Ok(None);
        }
        let theirs =
            Decompressor::with_dictionary(dict).map_err(|e| format!("the snapshot's journey dictionary: {e}"))?;
        Ok(Some(Refreezer { theirs }))
    }

    /// `s` frozen with this build's dictionary (a live one as it is);
    /// `None` if it does not decode with theirs.
    pub fn refreeze(&mut self, s: Stored) -> Option<Stored> {
        let Stored::Frozen(b) = s else {
            return Some(s);
        };
        let j = thaw(&b, &mut self.theirs)?;
        Some(Stored::freeze(&j).unwrap_or_else(|| Stored::Live(Arc::new(j))))
    }
}

/// A live journey as the journey (a positional struct), a frozen one as its
/// bytes (a MessagePack `bin`): the snapshot keeps each in its form, so
/// that neither writing nor restoring it decodes or compresses a frozen
/// journey. The bytes are this file's format, under the dictionary the
/// snapshot carries (see [`dictionary`]).
impl serde::Serialize for Stored {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Stored::Live(j) => j.serialize(s),
            Stored::Frozen(b) => s.serialize_bytes(b),
        }
    }
}

/// Either form [`Serialize`](serde::Serialize) writes; a journey alone (a
/// snapshot before format 6) reads as live.
impl<'de> serde::Deserialize<'de> for Stored {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Stored;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a journey, or a frozen journey's bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Stored, E> {
                if v.len() <= HEADER {
                    return Err(E::invalid_length(v.len(), &"a frozen journey's header and body"));
                }
                Ok(Stored::Frozen(v.into()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Stored, A::Error> {
                let j =
                    <Journey as serde::Deserialize>::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))?;
                Ok(Stored::Live(Arc::new(j)))
            }
            /// A journey written with field names.
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Stored, A::Error> {
                let j =
                    <Journey as serde::Deserialize>::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(Stored::Live(Arc::new(j)))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
#[path = "stored_tests.rs"]
pub(crate) mod tests;
