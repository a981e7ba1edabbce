//! The changelog on the broker: what every checkpoint writes besides the
//! snapshot file, and reading it back into a state on an empty disk.
//!
//! In (writing, see `pipeline::changelog`): the records this module encodes.
//! Out (reading): the last checkpoint marker of this consumer group
//! ([`last_marker`]) and everything it commits ([`read_committed`]): the
//! identity ops in order, the latest journey record per One ID (decoded by
//! `decoding.rs`), the globals; or only what it commits past a local
//! snapshot's chain (the tail). Every partition is read at least to the end
//! the marker recorded for it ([`known_ends`]). It keeps nothing.
//!
//! Three internal topics (names in `topics`):
//! - journeys changelog, `state.partitions` P partitions: key = One ID,
//!   partition = `xxh3_64(one_id) % P` ([`partition_of`]), value = a version
//!   byte ([`super::journey_record`]) and the record: the journey (none
//!   when it went) and the timers homed at that One ID (MessagePack, see
//!   `journey_record::encode_journey`); or a tombstone (no value) when it has neither
//!   (forget, merge-away). Compacted. Records of version 1 (written before
//!   the timers moved out of the globals) are the journey alone, and read.
//! - identity log, 1 partition: batches of the identity ops applied, in
//!   order (a version byte and a MessagePack list).
//! - checkpoints, 1 partition: per checkpoint, the processor's globals in
//!   chunks of at most [`CHUNK`] bytes (key `globals/<group>`; no timer from
//!   globals version 3), then the [`Marker`] (key `marker/<group>`).
//!
//! Which records count: a checkpoint produces its journeys and identity
//! records, then its globals, then its marker, each acknowledged before the
//! next. The marker carries the [`Chain`]: per partition, the offset ranges
//! written by every checkpoint its state builds on. Records outside the
//! chain (an interval that crashed before its marker, or one a restart from
//! an older snapshot abandoned) are not read, so a restore is the state of
//! exactly one committed checkpoint; its inputs resume at the marker's input
//! offsets and outputs published after the marker's output ends are read
//! back, as after a snapshot restore.

use std::collections::HashMap;

use anyhow::Context as _;
use onejourney_core::identity::{IdentityOp, OneId};
use onejourney_core::intern;
use onejourney_core::processor::{state_partition, CoreGlobals};
use rdkafka::Message as _;
use serde::{Deserialize, Serialize};

use super::decoding::{self, Latest};
use super::{fresh, published, Header};
use crate::config::Settings;

/// The first byte of every changelog value: the format of what follows.
pub const RECORD_VERSION: u8 = 1;
/// The largest globals chunk, well under the producer's 1 MB message limit.
pub const CHUNK: usize = 512 * 1024;
/// Identity ops per identity-log record, at most.
pub const OPS_PER_RECORD: usize = 1000;

/// The state partition (journeys changelog partition) of a One ID: stable
/// across builds and Rust releases; the routed topic uses the same
/// ([`state_partition`]).
pub fn partition_of(one_id: &str, partitions: u32) -> i32 {
    i32::try_from(state_partition(one_id, partitions)).unwrap_or(0)
}

/// Offset ranges `[from, to)` of one partition, ascending, adjacent ones merged.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Ranges(pub Vec<(i64, i64)>);

impl Ranges {
    pub fn add(&mut self, from: i64, to: i64) {
        if from >= to {
            return;
        }
        match self.0.last_mut() {
            Some(last) if last.1 == from => last.1 = to,
            _ => self.0.push((from, to)),
        }
    }

    pub fn contains(&self, offset: i64) -> bool {
        let i = self.0.partition_point(|(_, to)| *to <= offset);
        self.0.get(i).is_some_and(|(from, _)| *from <= offset)
    }

    pub fn start(&self) -> Option<i64> {
        self.0.first().map(|r| r.0)
    }

    /// The offset after the last range.
    pub fn end(&self) -> Option<i64> {
        self.0.last().map(|r| r.1)
    }

    /// Whether these ranges, cut at `base`'s end, are `base`: they are
    /// `base` and maybe more after it.
    pub fn extends(&self, base: &Ranges) -> bool {
        let Some(end) = base.end() else { return true };
        let mut cut = Ranges::default();
        for &(from, to) in &self.0 {
            if from < end {
                cut.add(from, to.min(end));
            }
        }
        cut == *base
    }

    /// The first offset in these ranges at or after `base`'s end (all of
    /// them when `base` is empty).
    fn start_after(&self, base: Option<&Ranges>) -> Option<i64> {
        let after = base.and_then(Ranges::end).unwrap_or(i64::MIN);
        let i = self.0.partition_point(|(_, to)| *to <= after);
        self.0.get(i).map(|(from, _)| (*from).max(after))
    }
}

/// What every committed checkpoint a state builds on wrote.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Chain {
    /// False when the state was not built from the changelog alone (it was
    /// restored from a snapshot written before the changelog existed): a
    /// restore from the broker is refused.
    pub complete: bool,
    /// P: the journeys changelog's partitions.
    pub partitions: u32,
    pub identity: Ranges,
    /// One entry per journeys changelog partition.
    pub journeys: Vec<Ranges>,
    /// The dedupe deltas on the checkpoints topic (absent in markers
    /// written before them: their globals carry every key).
    #[serde(default)]
    pub dedupe: Ranges,
}

impl Chain {
    /// Whether `self` is `base` plus records written after it: a state at
    /// `base` reaches `self` by reading `self`'s records past `base`.
    pub fn extends(&self, base: &Chain) -> bool {
        self.partitions == base.partitions
            && self.journeys.len() == base.journeys.len()
            && self.identity.extends(&base.identity)
            && self.dedupe.extends(&base.dedupe)
            && self.journeys.iter().zip(&base.journeys).all(|(r, b)| r.extends(b))
    }

    /// The chain of an empty state: nothing to read.
    pub fn empty(partitions: u32) -> Chain {
        Chain {
            complete: true,
            partitions,
            identity: Ranges::default(),
            journeys: vec![Ranges::default(); partitions as usize],
            dedupe: Ranges::default(),
        }
    }
}

/// The record that commits one checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Marker {
    pub group: String,
    /// What the snapshot file's header carries (inputs and outputs), with
    /// the chain including this checkpoint's records.
    pub header: Header,
    /// The offsets `[from, to)` of this checkpoint's globals chunks.
    pub globals: (i64, i64),
}

pub fn marker_key(group: &str) -> String {
    format!("marker/{group}")
}

pub fn globals_key(group: &str) -> String {
    format!("globals/{group}")
}

/// The key of one dedupe delta record: unique (`at`: the checkpoint's
/// time, `n`: the record's number in it), so that compaction keeps every
/// one until the bucket leaves the window and it is tombstoned.
pub fn dedupe_key(group: &str, bucket: i64, at: u64, n: usize) -> String {
    format!("dedupe/{group}/{bucket}/{at}/{n}")
}

/// The bucket a dedupe delta record's key names.
pub fn dedupe_bucket(key: &str) -> Option<i64> {
    key.strip_prefix("dedupe/")?.split('/').rev().nth(2)?.parse().ok()
}

/// Dedupe keys per delta record, at most (9 bytes each: under [`CHUNK`]).
pub const KEYS_PER_RECORD: usize = 50_000;

/// A version byte and the value's MessagePack.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<Vec<u8>> {
    let mut out = vec![RECORD_VERSION];
    rmp_serde::encode::write(&mut out, value).context("encoding a changelog record")?;
    Ok(out)
}

/// The identity-log records of `ops`, encoded one at a time as they are
/// taken: each the slice of its [`OPS_PER_RECORD`] ops (the last fewer),
/// in order.
pub fn identity_records<'a, T: IntoIterator<Item = &'a IdentityOp>>(
    ops: T,
) -> impl Iterator<Item = anyhow::Result<Vec<u8>>> + use<'a, T> {
    let mut ops = ops.into_iter().peekable();
    let mut batch: Vec<&IdentityOp> = Vec::new();
    std::iter::from_fn(move || {
        ops.peek()?;
        batch.clear();
        batch.extend(ops.by_ref().take(OPS_PER_RECORD));
        Some(encode(&batch))
    })
}

pub(super) fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> anyhow::Result<T> {
    match bytes.split_first() {
        Some((&RECORD_VERSION, body)) => {
            rmp_serde::from_slice(body).with_context(|| format!("a damaged {what} record in the changelog"))
        }
        Some((v, _)) => anyhow::bail!(
            "a {what} record of changelog format {v} (this build reads {RECORD_VERSION}): run the version that wrote it"
        ),
        None => anyhow::bail!("an empty {what} record in the changelog"),
    }
}

/// The newest marker of this consumer group on the checkpoints topic, with
/// its offset. Blocking.
pub fn last_marker(settings: &Settings, progress: impl FnMut(u64)) -> anyhow::Result<Option<Marker>> {
    let topic = settings.topics.state_checkpoints.as_str();
    let since = fresh::starts(settings, &[topic])?;
    let key = marker_key(&settings.kafka.group_id);
    let mut last = None;
    let mut failed = None;
    published::read_since(settings, &since, progress, |m| {
        if failed.is_none() && m.key() == Some(key.as_bytes()) {
            match decode::<Marker>(m.payload().unwrap_or_default(), "checkpoint marker") {
                Ok(marker) => last = Some(marker),
                Err(e) => failed = Some(e.context(format!("{topic} offset {}", m.offset()))),
            }
        }
    })?;
    match failed {
        Some(e) => Err(e),
        None => Ok(last),
    }
}

/// Everything a marker commits, read back.
#[derive(Default)]
pub struct Committed {
    pub globals: Vec<u8>,
    pub ops: Vec<IdentityOp>,
    /// The latest journey record per One ID, still encoded: [`Latest::decode`]
    /// or [`Latest::decode_on`].
    pub latest: Latest,
    /// The dedupe deltas in the chain (past the base).
    pub dedupe: Vec<(i64, Vec<u64>)>,
    /// Changelog records read (in the chain or not).
    pub records: u64,
}

/// Reads the records `marker` commits: identity ops and journeys inside its
/// chain, its globals chunks. Blocking; `progress` hears records read.
pub fn read_committed(settings: &Settings, marker: &Marker, progress: impl FnMut(u64)) -> anyhow::Result<Committed> {
    read_past(settings, marker, None, progress)
}

/// As [`read_committed`]; `base`: the chain of a state already loaded
/// (a local snapshot), which the marker's extends: only the records past it
/// are read (the tail). Blocking; `progress` hears records read. Every
/// text decoded (identity ops, timers, the records' One IDs) is shared with
/// the copies read before it (`onejourney_core::intern`), so the records
/// held until the restore never hold a text twice.
pub fn read_past(
    settings: &Settings,
    marker: &Marker,
    base: Option<&Chain>,
    progress: impl FnMut(u64),
) -> anyhow::Result<Committed> {
    intern::scope(|| read_shared(settings, marker, base, progress))
}

/// [`read_past`], inside its interning scope.
fn read_shared(
    settings: &Settings,
    marker: &Marker,
    base: Option<&Chain>,
    progress: impl FnMut(u64),
) -> anyhow::Result<Committed> {
    let chain = marker
        .header
        .changelog
        .as_ref()
        .context("the marker carries no chain")?;
    let since = starts(settings, marker, chain, base)?;
    let until = known_ends(settings, marker, chain);
    let started = std::time::Instant::now();
    let mut reader = Reader {
        settings,
        chain,
        base,
        globals: Ranges(vec![marker.globals]),
        globals_key: globals_key(&settings.kafka.group_id),
        dedupe_prefix: format!("dedupe/{}/", settings.kafka.group_id),
        out: Committed::default(),
        identity: Vec::new(),
        latest: HashMap::new(),
    };
    let mut failed: Option<anyhow::Error> = None;
    published::read_since_until(settings, &since, &until, progress, |m| {
        reader.out.records += 1;
        if failed.is_none() {
            if let Err(e) = reader.take(m) {
                failed = Some(e.context(format!("{}/{} offset {}", m.topic(), m.partition(), m.offset())));
            }
        }
    })?;
    if let Some(e) = failed {
        return Err(e);
    }
    let Reader {
        mut out,
        identity,
        latest,
        ..
    } = reader;
    // The globals are complete now: journeys idle before their cutoff are
    // frozen as they are decoded. Globals that do not decode freeze
    // nothing here; the restore reports them.
    let cutoff = rmp_serde::from_slice::<CoreGlobals>(&out.globals)
        .ok()
        .and_then(|g| g.freeze_cutoff(settings.state.freeze_journeys_after));
    let read_at = started.elapsed();
    out.ops = decoding::decode_ops(identity, &settings.topics.identity_log, decoding::cores())?;
    tracing::info!(
        records = out.records,
        read_seconds = read_at.as_secs_f64(),
        journey_records = latest.len(),
        identity_ops = out.ops.len(),
        seconds = started.elapsed().as_secs_f64(),
        "changelog read"
    );
    out.latest = Latest::new(latest, cutoff);
    Ok(out)
}

/// What a changelog read keeps of each record as it comes: the globals'
/// chunks and the dedupe deltas decoded, the identity log's records and the
/// latest journey record per One ID as they are (decoded once read, on
/// every core: `decoding.rs`).
struct Reader<'a> {
    settings: &'a Settings,
    chain: &'a Chain,
    base: Option<&'a Chain>,
    globals: Ranges,
    globals_key: String,
    dedupe_prefix: String,
    out: Committed,
    identity: Vec<(i64, Vec<u8>)>,
    latest: HashMap<OneId, Option<Vec<u8>>>,
}

impl Reader<'_> {
    fn take(&mut self, m: &rdkafka::message::BorrowedMessage<'_>) -> anyhow::Result<()> {
        let t = &self.settings.topics;
        let (topic, offset, payload) = (m.topic(), m.offset(), m.payload());
        let (chain, base) = (self.chain, self.base);
        if topic == t.state_checkpoints {
            let dedupe = chain.dedupe.contains(offset)
                && !base.is_some_and(|b| b.dedupe.contains(offset))
                && m.key().is_some_and(|k| k.starts_with(self.dedupe_prefix.as_bytes()));
            if self.globals.contains(offset) && m.key() == Some(self.globals_key.as_bytes()) {
                let chunk = decode::<serde_bytes_vec::Bytes>(payload.unwrap_or_default(), "globals")?;
                self.out.globals.extend_from_slice(&chunk.0);
            } else if let (true, Some(p)) = (dedupe, payload) {
                self.out.dedupe.extend(decode::<Vec<(i64, Vec<u64>)>>(p, "dedupe")?);
            }
        } else if topic == t.identity_log {
            let in_base = base.is_some_and(|b| b.identity.contains(offset));
            if chain.identity.contains(offset) && !in_base {
                self.identity.push((offset, payload.unwrap_or_default().to_vec()));
            }
        } else {
            let p = usize::try_from(m.partition()).ok();
            let in_chain = p
                .and_then(|p| chain.journeys.get(p))
                .is_some_and(|r| r.contains(offset))
                && !p
                    .and_then(|p| base.and_then(|b| b.journeys.get(p)))
                    .is_some_and(|r| r.contains(offset));
            if let (true, Some(key)) = (in_chain, m.key()) {
                let one_id = std::str::from_utf8(key)
                    .map_err(|_| anyhow::anyhow!("a journey record whose key is not a One ID"))?;
                self.latest
                    .insert(intern::one_id_text(one_id), payload.map(<[u8]>::to_vec));
            }
        }
        Ok(())
    }
}

/// Where each partition's records of `chain` end (exclusive), as the
/// marker recorded them: a read goes at least that far, whatever end
/// offset the broker reports (tansu's can be a record or two short).
fn known_ends(settings: &Settings, marker: &Marker, chain: &Chain) -> published::Ends {
    let t = &settings.topics;
    let mut ends = published::Ends::new();
    let checkpoints = chain.dedupe.end().map_or(marker.globals.1, |d| d.max(marker.globals.1));
    ends.insert((t.state_checkpoints.clone(), 0), checkpoints);
    if let Some(end) = chain.identity.end() {
        ends.insert((t.identity_log.clone(), 0), end);
    }
    for (p, ranges) in chain.journeys.iter().enumerate() {
        if let (Some(end), Ok(p)) = (ranges.end(), i32::try_from(p)) {
            ends.insert((t.journeys_changelog.clone(), p), end);
        }
    }
    ends
}

/// Where each changelog partition is read from: the start of the chain's
/// records past `base` (the checkpoints topic from the marker's globals or
/// the first dedupe delta, whichever comes first).
fn starts(
    settings: &Settings,
    marker: &Marker,
    chain: &Chain,
    base: Option<&Chain>,
) -> anyhow::Result<Vec<(String, i32, i64)>> {
    let t = &settings.topics;
    let dedupe_from = chain.dedupe.start_after(base.map(|b| &b.dedupe));
    let checkpoints_from = dedupe_from.map_or(marker.globals.0, |d| d.min(marker.globals.0));
    let mut since = vec![(t.state_checkpoints.clone(), 0, checkpoints_from)];
    if let Some(from) = chain.identity.start_after(base.map(|b| &b.identity)) {
        since.push((t.identity_log.clone(), 0, from));
    }
    for (p, ranges) in chain.journeys.iter().enumerate() {
        if let Some(from) = ranges.start_after(base.and_then(|b| b.journeys.get(p))) {
            since.push((t.journeys_changelog.clone(), i32::try_from(p)?, from));
        }
    }
    Ok(since)
}

/// Bytes as MessagePack binary, not a list of integers.
pub mod serde_bytes_vec {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub struct Bytes(pub Vec<u8>);

    /// Borrowed, for writing.
    pub struct BytesRef<'a>(pub &'a [u8]);

    impl Serialize for BytesRef<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(self.0)
        }
    }

    impl<'de> Deserialize<'de> for Bytes {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl serde::de::Visitor<'_> for V {
                type Value = Vec<u8>;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("bytes")
                }
                fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                    Ok(v.to_vec())
                }
            }
            d.deserialize_bytes(V).map(Bytes)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_records_hold_a_thousand_ops_each_in_order_as_slices_of_them() {
        let ops: Vec<IdentityOp> = (0..2_500).map(|component| IdentityOp::Refold { component }).collect();
        let records: Vec<Vec<u8>> = identity_records(&ops).collect::<anyhow::Result<_>>().expect("encodes");
        assert_eq!(records.len(), 3);
        for (record, slice) in records.iter().zip(ops.chunks(OPS_PER_RECORD)) {
            assert_eq!(record, &encode(slice).expect("encodes"), "the bytes of the slice");
        }
        let back: Vec<IdentityOp> = records
            .iter()
            .flat_map(|r| decode::<Vec<IdentityOp>>(r, "identity").expect("decodes"))
            .collect();
        assert_eq!(back, ops);
        assert_eq!(identity_records(&ops[..OPS_PER_RECORD]).count(), 1);
        assert_eq!(identity_records(&[]).count(), 0);
    }

    #[test]
    fn ranges_merge_adjacent_writes_and_answer_membership() {
        let mut r = Ranges::default();
        r.add(0, 5);
        r.add(5, 9);
        r.add(9, 9);
        r.add(12, 14);
        assert_eq!(r.0, vec![(0, 9), (12, 14)]);
        for (o, inside) in [
            (0, true),
            (8, true),
            (9, false),
            (11, false),
            (12, true),
            (13, true),
            (14, false),
        ] {
            assert_eq!(r.contains(o), inside, "offset {o}");
        }
        assert_eq!(r.start(), Some(0));
        assert!(!Ranges::default().contains(0));
    }

    #[test]
    fn a_chain_extends_the_chain_it_was_built_on_and_its_tail_starts_past_it() {
        let mut base = Chain::empty(2);
        base.identity.add(0, 5);
        base.journeys[0].add(3, 7);
        let mut later = base.clone();
        later.identity.add(5, 9);
        later.journeys[0].add(10, 12);
        later.journeys[1].add(0, 4);
        assert!(later.extends(&base));
        assert!(base.extends(&base));
        assert!(later.extends(&Chain::empty(2)));
        assert!(!base.extends(&later), "an older chain does not extend a newer one");
        let mut other = Chain::empty(2);
        other.identity.add(0, 3);
        other.identity.add(4, 9);
        assert!(!other.extends(&base), "another lineage");
        assert!(!later.extends(&Chain::empty(3)), "another P");
        assert_eq!(later.identity.start_after(Some(&base.identity)), Some(5));
        assert_eq!(later.journeys[0].start_after(Some(&base.journeys[0])), Some(10));
        assert_eq!(later.journeys[1].start_after(Some(&base.journeys[1])), Some(0));
        assert_eq!(base.journeys[0].start_after(Some(&base.journeys[0])), None);
        assert_eq!(base.journeys[0].start_after(None), Some(3));
        let mut dedupe = later.clone();
        dedupe.dedupe.add(20, 22);
        assert!(dedupe.extends(&later) && !later.extends(&dedupe));
    }

    #[test]
    fn a_chain_written_before_the_dedupe_deltas_reads_with_none() {
        #[derive(Serialize)]
        struct Before {
            complete: bool,
            partitions: u32,
            identity: Ranges,
            journeys: Vec<Ranges>,
        }
        let before = Before {
            complete: true,
            partitions: 1,
            identity: Ranges(vec![(0, 3)]),
            journeys: vec![Ranges(vec![(1, 2)])],
        };
        let bytes = rmp_serde::to_vec(&before).expect("encodes");
        let chain: Chain = rmp_serde::from_slice(&bytes).expect("decodes");
        assert_eq!(chain.identity, before.identity);
        assert_eq!(chain.dedupe, Ranges::default());
    }

    #[test]
    fn a_dedupe_record_key_names_its_bucket() {
        let key = dedupe_key("g/1", -86_400_000, 17, 3);
        assert_eq!(dedupe_bucket(&key), Some(-86_400_000));
        assert_eq!(dedupe_bucket("globals/g"), None);
    }

    #[test]
    fn the_state_partition_is_pinned() {
        // xxh3_64 is a fixed function: these must never change, or a
        // deployment's journeys land on other changelog partitions.
        assert_eq!(xxhash_rust::xxh3::xxh3_64(b"oj-1"), 16_187_788_382_560_262_169);
        assert_eq!(partition_of("oj-1", 32), 25);
        assert_eq!(partition_of("oj-7ba79a0a4abbb5717e9c1f0e", 32), 10);
        assert_eq!(partition_of("x", 1), 0);
    }

    #[test]
    fn records_carry_their_version_and_refuse_another() {
        let bytes = encode(&vec![1u32, 2]).expect("encodes");
        assert_eq!(bytes[0], RECORD_VERSION);
        assert_eq!(decode::<Vec<u32>>(&bytes, "x").expect("decodes"), vec![1, 2]);
        let mut other = bytes.clone();
        other[0] = 9;
        let e = decode::<Vec<u32>>(&other, "x").expect_err("refused").to_string();
        assert!(e.contains("format 9"), "{e}");
        assert!(decode::<Vec<u32>>(&[], "x").is_err());
    }
}
