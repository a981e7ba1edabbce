//! Helpers to serialise live maps into a state snapshot without copying
//! them. The engine writes the bytes; the core only says what they hold.
//!
//! In: borrowed maps. Out: serde sequences of values or pairs; and, read
//! back, a sequence as a `Vec` allocated once ([`presized`]). Keeps
//! nothing. The snapshot format itself is `processor/snapshot.rs`.

use crate::hash::{DashMap, HashMap};
use serde::de::{Deserialize, Deserializer, SeqAccess, Visitor};
use serde::{Serialize, Serializer};

/// The most a sequence read by [`presized`] allocates up front: 1 GiB.
/// A damaged length is only found wrong when the decode fails (the file's
/// checksum is checked once it ends), so this is what one can reserve for
/// nothing; under strict overcommit that memory is committed meanwhile.
const PRESIZED_BYTES: usize = 1 << 30;

/// Reads a sequence into a `Vec` allocated once, for the length its header
/// gives (`#[serde(deserialize_with = "crate::snapshot::presized")]`).
///
/// Why: serde's own `Vec` allocates at most 1 MiB up front and doubles from
/// there, so each of a snapshot's lists (a 10M-profile graph's index, 30M
/// entries) was copied about once more in full, into fresh pages each time:
/// 6% of a 10M restore's read (`perf`, session 33). A list longer than
/// 1 GiB (the index of a state past about 10M profiles) is allocated for
/// 1 GiB and grows from there; one the allocator refuses grows from
/// nothing. The elements read, not the length claimed, decide what the
/// `Vec` holds.
pub fn presized<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    struct Elements<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> Visitor<'de> for Elements<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a sequence")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut v = Vec::new();
            // Refused: `v` stays empty and grows as serde's own would.
            let _ = v.try_reserve_exact(presize(seq.size_hint(), std::mem::size_of::<T>()));
            while let Some(x) = seq.next_element()? {
                v.push(x);
            }
            Ok(v)
        }
    }
    d.deserialize_seq(Elements(std::marker::PhantomData))
}

/// How many elements of `size` bytes [`presized`] allocates for a sequence
/// whose header says `claimed`.
fn presize(claimed: Option<usize>, size: usize) -> usize {
    claimed.unwrap_or(0).min(PRESIZED_BYTES / size.max(1))
}

/// The values of a `DashMap`, as a sequence.
pub struct DashValues<'a, K, V>(pub &'a DashMap<K, V>);

impl<K: Eq + std::hash::Hash, V: Serialize> Serialize for DashValues<'_, K, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        exact_seq(s, self.0.len(), self.0.iter().map(|r| Value(r)))
    }
}

/// `items` as a sequence of `len` elements, its length written up front.
///
/// Why not `collect_seq`: a `DashMap`'s iterator does not know its length,
/// and a serialiser that writes the length first (MessagePack) then buffers
/// the whole encoded sequence in memory before writing it: the graph's
/// profiles or index of a 10M-profile state, several GB at once, which got
/// a 10M snapshot write killed (session 12). The maps written are not
/// changed in length while they are written (the writer is stopped, or the
/// graph's writer lock held); if one were, the sequence would not match its
/// length, and the write fails instead of writing a wrong file.
pub fn exact_seq<S: Serializer, T: Serialize>(
    s: S,
    len: usize,
    items: impl IntoIterator<Item = T>,
) -> Result<S::Ok, S::Error> {
    exact_seq_with(s, len, |emit| items.into_iter().try_for_each(emit))
}

/// As [`exact_seq`], the items handed one by one to the `emit` that
/// `write` is given: for items borrowed from map guards an iterator could
/// not hand out (`identity/write_order.rs`).
pub fn exact_seq_with<S: Serializer, T: Serialize>(
    s: S,
    len: usize,
    write: impl FnOnce(&mut dyn FnMut(T) -> Result<(), S::Error>) -> Result<(), S::Error>,
) -> Result<S::Ok, S::Error> {
    use serde::ser::{Error, SerializeSeq};
    let mut seq = s.serialize_seq(Some(len))?;
    let mut n = 0usize;
    write(&mut |item| {
        n += 1;
        if n > len {
            return Err(S::Error::custom(format!(
                "a map grew past {len} entries while it was written"
            )));
        }
        seq.serialize_element(&item)
    })?;
    if n != len {
        return Err(S::Error::custom(format!(
            "a map of {len} entries gave {n} while it was written"
        )));
    }
    seq.end()
}

/// A `HashMap` as a sequence of pairs (keys need not be strings).
pub struct Pairs<'a, K, V>(pub &'a HashMap<K, V>);

impl<K: Serialize, V: Serialize> Serialize for Pairs<'_, K, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter())
    }
}

type Ref<'a, K, V> = dashmap::mapref::multiple::RefMulti<'a, K, V>;

struct Value<'a, K, V>(Ref<'a, K, V>);

impl<K: Eq + std::hash::Hash, V: Serialize> Serialize for Value<'_, K, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.value().serialize(s)
    }
}

/// Bytes as one MessagePack `bin` (a `Vec<u8>` would be an array of
/// integers, up to twice the size).
pub struct Bytes<'a>(pub &'a [u8]);

impl Serialize for Bytes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

/// [`Bytes`] read back.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ByteBuf(pub Vec<u8>);

impl<'de> serde::Deserialize<'de> for ByteBuf {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ByteBuf;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v.to_vec()))
            }
        }
        d.deserialize_bytes(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::one_id::OneId;

    /// Serialises `items` as a sequence of `len` elements.
    struct Exact<'a>(usize, &'a [u32]);

    impl Serialize for Exact<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            exact_seq(s, self.0, self.1.iter())
        }
    }

    #[test]
    fn a_map_is_written_as_the_same_bytes_with_its_length_up_front() {
        let map: DashMap<OneId, String> = DashMap::default();
        for i in 0..100u32 {
            map.insert(OneId::from(format!("oj-{i}")), format!("v{i}"));
        }
        let values: Vec<String> = map.iter().map(|r| r.value().clone()).collect();
        let bytes = rmp_serde::to_vec(&DashValues(&map)).expect("encodes");
        assert_eq!(bytes, rmp_serde::to_vec(&values).expect("encodes"));
    }

    #[test]
    fn a_sequence_that_does_not_match_its_length_fails_instead_of_writing_a_wrong_file() {
        let items = [1, 2, 3];
        assert!(rmp_serde::to_vec(&Exact(3, &items)).is_ok());
        let short = rmp_serde::to_vec(&Exact(4, &items)).expect_err("fewer than said");
        assert!(short.to_string().contains("gave 3"), "{short}");
        let long = rmp_serde::to_vec(&Exact(2, &items)).expect_err("more than said");
        assert!(long.to_string().contains("grew past 2"), "{long}");
    }

    #[derive(serde::Deserialize)]
    struct Presized {
        #[serde(deserialize_with = "presized")]
        items: Vec<(u32, String)>,
    }

    #[test]
    fn a_presized_sequence_reads_as_serde_reads_it_allocated_once() {
        // Past serde's own 1 MiB up front (32,768 of these 32-byte pairs).
        let items: Vec<(u32, String)> = (0..100_000).map(|i| (i, format!("v{i}"))).collect();
        let bytes = rmp_serde::to_vec(&(items.clone(),)).expect("encodes");
        let Presized { items: read } = rmp_serde::from_slice(&bytes).expect("decodes");
        assert_eq!(read, items);
        assert_eq!(read.capacity(), items.len(), "allocated for the length, not grown");
        let empty: Vec<(u32, String)> = Vec::new();
        let Presized { items: read } =
            rmp_serde::from_slice(&rmp_serde::to_vec(&(empty,)).expect("encodes")).expect("decodes");
        assert!(read.is_empty());
    }

    #[test]
    fn what_is_allocated_up_front_is_the_length_claimed_up_to_1_gib() {
        assert_eq!(presize(Some(100_000), 32), 100_000);
        assert_eq!(presize(None, 32), 0, "no length: grown as serde does");
        assert_eq!(presize(Some(u32::MAX as usize), 32), (1 << 30) / 32);
        assert_eq!(presize(Some(u32::MAX as usize), 1), 1 << 30);
        assert_eq!(presize(Some(7), 0), 7, "zero-sized elements reserve nothing anyway");
    }

    #[test]
    fn a_damaged_length_fails_without_allocating_what_it_claims() {
        // A tuple of one sequence whose header claims 2^32 - 1 elements,
        // followed by one: the decode fails at the end of the bytes (the
        // allocation is capped, or refused and grown from nothing).
        let mut bytes = vec![0x91, 0xdd, 0xff, 0xff, 0xff, 0xff];
        bytes.extend(rmp_serde::to_vec(&(7u32, "seven")).expect("encodes"));
        let err = rmp_serde::from_slice::<Presized>(&bytes)
            .err()
            .expect("fewer elements than claimed");
        assert!(!err.to_string().is_empty());
    }
}
