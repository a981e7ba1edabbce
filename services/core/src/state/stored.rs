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
//! and with the dictionary about 4.5x. Frozen bytes never leave the
//! process, so neither is a wire or file format: a new dictionary needs no
//! migration.
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

/// As the journey it holds (a frozen one decoded): snapshots write journeys
/// in one format whatever their form in memory.
impl serde::Serialize for Stored {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Stored::Live(j) => j.serialize(s),
            Stored::Frozen(_) => self
                .journey()
                .ok_or_else(|| serde::ser::Error::custom("a frozen journey does not decode"))?
                .serialize(s),
        }
    }
}
