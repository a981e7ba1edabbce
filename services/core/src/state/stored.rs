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
//! The encoding is positional MessagePack of [`Journey`] (`rmp_serde`, as
//! the changelog writes it), compressed with zstd and a dictionary trained
//! on simulated journeys (`journey.dict`, written by the bench's
//! `journey_dict` example): small records compress poorly alone (about 2x),
//! and with the dictionary about 4.5x. Frozen bytes leave the process only
//! in the local snapshot file (format 6), which carries the dictionary they
//! were compressed with: a build with a new dictionary re-freezes them at
//! restore ([`Refreezer`]). They are never on the wire.
//!
//! A frozen value starts with a header read without decoding: the last
//! event time (8 bytes, big-endian, `i64::MIN` for none), one flag byte (the
//! journey still has detail to evict) and the encoded length (4 bytes), so
//! the eviction scan, the recent list and the size estimate never decode.

use std::cell::RefCell;
use std::sync::{Arc, OnceLock};

use zstd::bulk::{Compressor, Decompressor};
use zstd::dict::{DecoderDictionary, EncoderDictionary};

use crate::journey::Journey;
use crate::time::EventTime;

/// Bytes in front of the compressed journey.
const HEADER: usize = 13;

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
    static COMPRESSOR: RefCell<Option<Compressor<'static>>> =
        RefCell::new(Compressor::with_prepared_dictionary(encoder_dict()).ok());
    static DECOMPRESSOR: RefCell<Option<Decompressor<'static>>> =
        RefCell::new(Decompressor::with_prepared_dictionary(decoder_dict()).ok());
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
        let encoded = rmp_serde::to_vec(j).ok()?;
        let len = u32::try_from(encoded.len()).ok()?;
        let packed = COMPRESSOR.with_borrow_mut(|c| c.as_mut()?.compress(&encoded).ok())?;
        let mut out = Vec::with_capacity(HEADER + packed.len());
        out.extend_from_slice(&j.last_seen.map_or(i64::MIN, |t| t.0).to_be_bytes());
        out.push(u8::from(j.has_detail()));
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&packed);
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

    /// The journey: shared when live, decoded when frozen (`None` only if a
    /// frozen value does not decode, which would be a bug of this file).
    pub fn journey(&self) -> Option<Arc<Journey>> {
        match self {
            Stored::Live(j) => Some(j.clone()),
            Stored::Frozen(b) => {
                let len = u32::from_be_bytes(b.get(9..HEADER)?.try_into().ok()?) as usize;
                let encoded = DECOMPRESSOR.with_borrow_mut(|d| d.as_mut()?.decompress(b.get(HEADER..)?, len).ok())?;
                rmp_serde::from_slice(&encoded).ok().map(Arc::new)
            }
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
            Stored::Frozen(b) => self.last_seen().is_some_and(|t| t < cutoff) && b.get(8) == Some(&1),
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
        let len = u32::from_be_bytes(b.get(9..HEADER)?.try_into().ok()?) as usize;
        let encoded = self.theirs.decompress(b.get(HEADER..)?, len).ok()?;
        let j: Journey = rmp_serde::from_slice(&encoded).ok()?;
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
