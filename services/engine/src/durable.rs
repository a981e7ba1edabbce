//! Durable state: snapshots of the core with the input offsets they cover,
//! and the output records already published after the last snapshot.
//!
//! A snapshot file holds a magic line, a [`Header`] and the core's state,
//! both MessagePack. It is written to a temporary file, fsynced and renamed
//! over the previous one, so a crash leaves either the old or the new
//! snapshot, never half of one.
//!
//! After a crash the engine restores the snapshot and re-reads its inputs from
//! the offsets in the header. Processing is deterministic, so it regenerates
//! records that were already published after the snapshot: [`Published`]
//! reads those records back from the output topics (from the end offsets the
//! header recorded) and the pipeline skips each one once.

use std::collections::HashMap;
use std::fs::{self, File};
use std::hash::{Hash, Hasher};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use onejourney_core::processor::{CoreSnapshot, CoreSnapshotRef};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use crate::config::Settings;

const MAGIC: &[u8] = b"onejourney-snapshot-v1\n";

/// What a snapshot covers besides the core state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// Wall-clock time it was written (ms since the epoch), for operators.
    pub written_at_ms: u64,
    /// Per input partition: the first offset not reflected in the state.
    pub inputs: Vec<(String, i32, i64)>,
    /// Per output partition: its end offset once every output of the state
    /// was acknowledged.
    pub outputs: Vec<(String, i32, i64)>,
}

impl Header {
    pub fn resume_offsets(&self) -> HashMap<(String, i32), i64> {
        self.inputs.iter().map(|(t, p, o)| ((t.clone(), *p), *o)).collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("reading or writing {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a onejourney snapshot (or of another format version)")]
    Magic { path: PathBuf },
    #[error("{path} is damaged: {reason}")]
    Decode { path: PathBuf, reason: String },
    #[error("encoding the snapshot: {0}")]
    Encode(String),
}

/// The snapshot file of one consumer group under `dir`.
pub fn path(settings: &Settings) -> PathBuf {
    let group: String = settings
        .kafka
        .group_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    settings.state.dir.join(format!("{group}.snapshot"))
}

/// Writes a snapshot atomically; returns its size in bytes.
pub fn write(path: &Path, header: &Header, core: &CoreSnapshotRef<'_>) -> Result<u64, SnapshotError> {
    let io = |source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io)?;
    let tmp = path.with_extension("snapshot.tmp");
    let file = File::create(&tmp).map_err(io)?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    w.write_all(MAGIC).map_err(io)?;
    // Structs as arrays, not maps: field names would double the size. The
    // format version in the core's snapshot guards the field order.
    rmp_serde::encode::write(&mut w, header).map_err(|e| SnapshotError::Encode(e.to_string()))?;
    rmp_serde::encode::write(&mut w, core).map_err(|e| SnapshotError::Encode(e.to_string()))?;
    let file = w.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    drop(file);
    fs::rename(&tmp, path).map_err(io)?;
    // The rename itself must reach the disk.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(size)
}

/// Reads the snapshot at `path`; `None` when there is none.
pub fn read(path: &Path) -> Result<Option<(Header, CoreSnapshot)>, SnapshotError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(SnapshotError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut magic = vec![0u8; MAGIC.len()];
    if r.read_exact(&mut magic).is_err() || magic != MAGIC {
        return Err(SnapshotError::Magic {
            path: path.to_path_buf(),
        });
    }
    let decode = |e: rmp_serde::decode::Error| SnapshotError::Decode {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let header: Header = rmp_serde::decode::from_read(&mut r).map_err(decode)?;
    let core: CoreSnapshot = rmp_serde::decode::from_read(&mut r).map_err(decode)?;
    Ok(Some((header, core)))
}

/// Watches the first records of a partition resumed at `start`. A broker
/// must deliver from the requested offset; tansu 0.6, asked for an offset in
/// the middle of a record batch, skips the rest of that batch (measured:
/// asked for 11307, it delivers from 11359). On such a gap fetching is
/// rewound further back, and records below `start` (already covered) are
/// skipped until the sequence is seen to be contiguous.
#[derive(Clone, Debug, PartialEq)]
pub struct ResumeCheck {
    start: i64,
    /// Where fetching was rewound to, after a gap.
    rewound_to: Option<i64>,
    /// A record below `start` came by: fetching is contiguous from there.
    seen_below: bool,
}

/// What to do with a record of a resumed partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resumed {
    /// Below the resume offset: already covered, skip it.
    Skip,
    /// The broker skipped records: seek to this offset, drop this record.
    Rewind(i64),
    /// Delivery is contiguous from the resume offset: process it and stop checking.
    Contiguous,
    /// Records between the resume offset and this one are not at the broker
    /// even from the partition's start: process it and stop checking.
    Missing,
}

impl ResumeCheck {
    pub fn new(start: i64) -> Self {
        ResumeCheck {
            start,
            rewound_to: None,
            seen_below: false,
        }
    }

    pub fn start(&self) -> i64 {
        self.start
    }

    /// The verdict for a record at `offset`.
    pub fn record(&mut self, offset: i64) -> Resumed {
        if offset < self.start {
            self.seen_below = true;
            return Resumed::Skip;
        }
        if offset == self.start || self.seen_below || self.rewound_to == Some(0) {
            return if offset > self.start {
                Resumed::Missing
            } else {
                Resumed::Contiguous
            };
        }
        let back = match self.rewound_to {
            None => self.start - 1_000,
            Some(prev) => prev - (self.start - prev) * 10,
        }
        .max(0);
        self.rewound_to = Some(back);
        Resumed::Rewind(back)
    }

    /// The seek for the last rewind failed: the next record tries again.
    pub fn rewind_failed(&mut self) {
        self.rewound_to = None;
    }
}

/// Output records published after the last snapshot, each to be skipped once
/// when re-processing regenerates it.
///
/// A record's identity: on `next-best-actions` its `action_id` (the contract's
/// "same action_id = same decision": re-processing may see the decision's
/// context slightly differently, e.g. a value tier computed over customers
/// interleaved differently, and must still not send it twice); on
/// `churn-risk` its One ID, trigger and evaluation time; elsewhere the topic,
/// key, payload and headers.
#[derive(Debug, Default)]
pub struct Published {
    records: HashMap<u64, u32>,
    actions_topic: String,
    churn_topic: String,
}

impl Published {
    pub fn len(&self) -> usize {
        self.records.values().map(|n| *n as usize).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn new(actions_topic: &str, churn_topic: &str) -> Self {
        Published {
            records: HashMap::new(),
            actions_topic: actions_topic.to_string(),
            churn_topic: churn_topic.to_string(),
        }
    }

    /// The identity of a record (see the type's documentation).
    pub fn identity(&self, topic: &str, key: Option<&[u8]>, payload: &[u8], headers: &[(&str, Option<&[u8]>)]) -> u64 {
        let field = |v: &serde_json::Value, f: &str| v.get(f).map(ToString::to_string).unwrap_or_default();
        if topic == self.actions_topic || topic == self.churn_topic {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(payload) {
                let id = if topic == self.actions_topic {
                    field(&v, "action_id")
                } else {
                    format!(
                        "{} {} {}",
                        field(&v, "one_id"),
                        field(&v, "evaluated_at"),
                        field(&v, "trigger")
                    )
                };
                return fingerprint(topic, None, id.as_bytes(), std::iter::empty());
            }
        }
        fingerprint(topic, key, payload, headers.iter().copied())
    }

    pub fn add(&mut self, topic: &str, key: Option<&[u8]>, payload: &[u8], headers: &[(&str, Option<&[u8]>)]) {
        let id = self.identity(topic, key, payload, headers);
        *self.records.entry(id).or_insert(0) += 1;
    }

    /// True (and forgets one copy) when this record was already published.
    pub fn take(&mut self, topic: &str, key: Option<&[u8]>, payload: &[u8], headers: &[(&str, Option<&[u8]>)]) -> bool {
        let id = self.identity(topic, key, payload, headers);
        match self.records.get_mut(&id) {
            Some(n) if *n > 1 => {
                *n -= 1;
                true
            }
            Some(_) => {
                self.records.remove(&id);
                true
            }
            None => false,
        }
    }
}

/// A hash of an output record: topic, key, payload and header values.
pub fn fingerprint<'a>(
    topic: &str,
    key: Option<&[u8]>,
    payload: &[u8],
    headers: impl Iterator<Item = (&'a str, Option<&'a [u8]>)>,
) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    topic.hash(&mut h);
    key.hash(&mut h);
    payload.hash(&mut h);
    for (k, v) in headers {
        k.hash(&mut h);
        v.hash(&mut h);
    }
    h.finish()
}

/// Reads every record published to the output topics after `since` (a
/// snapshot's end offsets). Blocking: call it off the async workers.
pub fn read_published(settings: &Settings, since: &[(String, i32, i64)]) -> anyhow::Result<Published> {
    let mut published = Published::new(&settings.topics.next_best_actions, &settings.topics.churn_risk);
    if since.is_empty() {
        return Ok(published);
    }
    let consumer: BaseConsumer = crate::kafka::base_config(settings)
        .set("group.id", format!("{}-reconcile", settings.kafka.group_id))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()?;
    let timeout = Duration::from_secs(30);
    let mut tpl = TopicPartitionList::new();
    let mut ends = HashMap::new();
    for (topic, partition, from) in since {
        let (_, high) = consumer.fetch_watermarks(topic, *partition, timeout)?;
        tpl.add_partition_offset(topic, *partition, Offset::Offset(*from))?;
        if high > *from {
            ends.insert((topic.clone(), *partition), high);
        }
    }
    consumer.assign(&tpl)?;
    let mut starting: HashMap<(String, i32), ResumeCheck> = since
        .iter()
        .map(|(t, p, from)| ((t.clone(), *p), ResumeCheck::new(*from)))
        .collect();
    // Read to the end offsets, then on until nothing arrives for a while: a
    // broker may report an end offset a record or two short (tansu 0.6 does
    // when the last batch held several), and a record missed here would be
    // published twice.
    let started = std::time::Instant::now();
    let mut last_message = started;
    loop {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(300),
            "reading back published outputs did not finish within 300 s"
        );
        let quiet = last_message.elapsed() > Duration::from_millis(1500);
        if ends.is_empty() && quiet {
            break;
        }
        let Some(m) = consumer.poll(Duration::from_millis(250)) else {
            // Nothing more for long past where the end offsets said: done.
            if quiet && last_message.elapsed() > Duration::from_secs(10) {
                break;
            }
            continue;
        };
        let m = m?;
        last_message = std::time::Instant::now();
        let k = (m.topic().to_string(), m.partition());
        if let Some(check) = starting.get_mut(&k) {
            match check.record(m.offset()) {
                Resumed::Skip => continue,
                Resumed::Rewind(back) => {
                    consumer.seek(m.topic(), m.partition(), Offset::Offset(back), timeout)?;
                    continue;
                }
                Resumed::Contiguous | Resumed::Missing => {
                    starting.remove(&k);
                }
            }
        }
        let headers: Vec<(&str, Option<&[u8]>)> = m
            .headers()
            .map(|h| h.iter().map(|x| (x.key, x.value)).collect())
            .unwrap_or_default();
        published.add(m.topic(), m.key(), m.payload().unwrap_or_default(), &headers);
        if ends.get(&k).is_some_and(|end| m.offset() + 1 >= *end) {
            ends.remove(&k);
        }
    }
    Ok(published)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use onejourney_core::output::Output;
    use onejourney_core::processor::CoreSnapshot;
    use onejourney_core::{Decoder, Processor, State};
    use onejourney_simulator::{generate, SimConfig};

    use super::*;
    use crate::config::Topics;

    fn outputs(p: &mut Processor, events: &[onejourney_core::ChannelEvent]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for (i, e) in events.iter().enumerate() {
            for r in p.offer(e.clone(), (i % 3) as u32, i as u64, 0) {
                out.extend(r.result.unwrap().outputs.iter().map(Output::to_json));
            }
        }
        for r in p.tick(u64::MAX) {
            out.extend(r.result.unwrap().outputs.iter().map(Output::to_json));
        }
        out
    }

    #[test]
    fn a_restored_snapshot_decides_exactly_like_the_state_it_was_taken_from() {
        let s = Settings::defaults().unwrap();
        let ns = s.namespaces().unwrap();
        let d = Decoder::new(ns.clone(), 1 << 20).unwrap();
        let sim = generate(&SimConfig {
            customers: 300,
            seed: 3,
            ..SimConfig::default()
        });
        let events: Vec<_> = sim
            .events
            .iter()
            .map(|e| d.decode(Topics::stream_channel(e.stream), &e.bytes()).unwrap())
            .collect();
        let (first, rest) = events.split_at(events.len() / 2);
        let new = || Processor::new(Arc::new(s.core()), Arc::new(State::new(ns.clone())));
        let mut a = new();
        outputs(&mut a, first);
        // A forget, so suppression entries are part of what is saved.
        let key = first[0].ids[0].clone();
        assert!(a.forget(&key).is_some());

        let dir = std::env::temp_dir().join(format!("oj-snap-{}", std::process::id()));
        let file = dir.join("g.snapshot");
        let header = Header {
            written_at_ms: 1,
            inputs: vec![("web".into(), 0, 42)],
            outputs: vec![],
        };
        let size = write(&file, &header, &a.snapshot()).unwrap();
        assert!(size > 10_000, "{size} bytes");
        let (h, core) = read(&file).unwrap().unwrap();
        assert_eq!(h, header);
        let mut b = new();
        b.restore(core, 0).unwrap();
        // Restored partitions count as behind until the consumer says they are not.
        for partition in 0..3 {
            b.set_backlog(partition, false);
        }
        assert_eq!(b.state().identity.partition(), a.state().identity.partition());
        assert_eq!(b.state().journeys.len(), a.state().journeys.len());
        assert!(b.state().identity.is_suppressed(&key));

        let out_a = outputs(&mut a, rest);
        let out_b = outputs(&mut b, rest);
        assert!(out_a.len() > 100);
        assert_eq!(out_a.len(), out_b.len());
        assert!(out_a == out_b, "the same records, in the same order");
        assert_eq!(b.state().identity.partition(), a.state().identity.partition());
        for j in a.state().journeys.iter() {
            assert_eq!(
                Some(j.value()),
                b.state().journeys.get(j.key()).as_deref(),
                "{}",
                j.key()
            );
        }

        // A damaged file is an error, not an empty state.
        fs::write(&file, b"onejourney-snapshot-v1\n\x93garbage").unwrap();
        assert!(matches!(read(&file), Err(SnapshotError::Decode { .. })));
        fs::write(&file, b"something else").unwrap();
        assert!(matches!(read(&file), Err(SnapshotError::Magic { .. })));
        assert!(read(&dir.join("missing")).unwrap().is_none());
        let _ = fs::remove_dir_all(dir);
    }

    /// The restart contract at core level: consume partitions in fetch-sized
    /// batches, stop at a checkpoint (state without the buffered events, each
    /// partition resuming at its first message not applied), restore and
    /// re-read from there: the same records and the same final state as an
    /// uninterrupted run.
    #[test]
    fn a_restart_from_a_checkpoint_matches_an_uninterrupted_run() {
        let s = Settings::defaults().unwrap();
        let ns = s.namespaces().unwrap();
        let d = Decoder::new(ns.clone(), 1 << 20).unwrap();
        let customers = std::env::var("OJ_RESTART_CUSTOMERS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1500);
        let stop_pct: usize = std::env::var("OJ_RESTART_STOP")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(50);
        let sim = generate(&SimConfig {
            customers,
            seed: 23,
            ..SimConfig::default()
        });
        // Eight partitions, as the engine numbers them, each a list of events by offset.
        let mut parts: Vec<Vec<onejourney_core::ChannelEvent>> = vec![Vec::new(); 8];
        for e in &sim.events {
            let c = Topics::stream_channel(e.stream);
            let p = c as usize * 2 + e.key_partition(2) as usize;
            parts[p].push(d.decode(c, &e.bytes()).unwrap());
        }
        let new = || Processor::new(Arc::new(s.core()), Arc::new(State::new(ns.clone())));
        let collect = |out: &mut Vec<Vec<u8>>, r: Vec<onejourney_core::processor::Released>| {
            for x in r {
                out.extend(x.result.unwrap().outputs.iter().map(Output::to_json));
            }
        };
        // Round-robin in uneven batches (the fetcher favours partitions unevenly).
        let run = |p: &mut Processor, from: &[usize], stop_after: usize, out: &mut Vec<Vec<u8>>| {
            let mut next: Vec<usize> = from.to_vec();
            let mut taken = 0;
            let mut seq_of: HashMap<u64, (usize, usize)> = HashMap::new();
            let mut seq = 0u64;
            'outer: while next.iter().zip(&parts).any(|(n, q)| *n < q.len()) {
                for (i, q) in parts.iter().enumerate() {
                    let batch = 50 + 300 * (i % 3);
                    for _ in 0..batch {
                        if next[i] >= q.len() {
                            break;
                        }
                        if taken == stop_after {
                            break 'outer;
                        }
                        seq_of.insert(seq, (i, next[i]));
                        collect(out, p.offer(q[next[i]].clone(), i as u32, seq, 0));
                        seq += 1;
                        next[i] += 1;
                        taken += 1;
                    }
                }
            }
            // Resume offsets: past everything taken, except buffered events.
            let mut resume = next.clone();
            for s in p.pending_seqs() {
                let (i, o) = seq_of[&s];
                resume[i] = resume[i].min(o);
            }
            resume
        };
        let mut a = new();
        let mut out_a = Vec::new();
        run(&mut a, &[0; 8], usize::MAX, &mut out_a);
        collect(&mut out_a, a.tick(u64::MAX));

        let mut b = new();
        let mut out_b = Vec::new();
        let resume = run(&mut b, &[0; 8], sim.events.len() * stop_pct / 100, &mut out_b);
        assert!(b.pending_events() > 0, "a checkpoint with buffered events");
        let mut bytes = Vec::new();
        rmp_serde::encode::write(&mut bytes, &b.snapshot()).unwrap();
        let core: CoreSnapshot = rmp_serde::from_slice(&bytes).unwrap();
        let mut c = new();
        c.restore(core, 0).unwrap();
        for i in 0..8 {
            c.set_backlog(i, false);
        }
        run(&mut c, &resume, usize::MAX, &mut out_b);
        collect(&mut out_b, c.tick(u64::MAX));

        assert_eq!(c.state().identity.partition(), a.state().identity.partition());
        let mut sa: Vec<String> = out_a.iter().map(|x| String::from_utf8_lossy(x).to_string()).collect();
        let mut sb: Vec<String> = out_b.iter().map(|x| String::from_utf8_lossy(x).to_string()).collect();
        sa.sort();
        sb.sort();
        for x in sa.iter().filter(|x| !sb.contains(x)).take(3) {
            eprintln!("ONLY A {x}");
        }
        for x in sb.iter().filter(|x| !sa.contains(x)).take(3) {
            eprintln!("ONLY B {x}");
        }
        assert_eq!(sa.len(), sb.len());
        assert!(sa == sb, "the same records");
    }

    #[test]
    fn a_resume_gap_rewinds_further_back_until_delivery_is_contiguous() {
        let mut c = ResumeCheck::new(11_307);
        // tansu delivers from the next batch: rewind 1,000 back.
        assert_eq!(c.record(11_359), Resumed::Rewind(10_307));
        // Still past the start: ten times further.
        assert_eq!(c.record(11_359), Resumed::Rewind(307));
        // A record below the start: covered, and delivery is contiguous from here.
        assert_eq!(c.record(11_000), Resumed::Skip);
        assert_eq!(c.record(11_307), Resumed::Contiguous);
        assert_eq!(ResumeCheck::new(5).record(5), Resumed::Contiguous);
        // Rewound to the partition's start and still a gap: those records are gone.
        let mut c = ResumeCheck::new(500);
        assert_eq!(c.record(900), Resumed::Rewind(0));
        assert_eq!(c.record(900), Resumed::Missing);
    }

    #[test]
    fn published_records_are_skipped_once_per_copy() {
        let mut p = Published::new("nba", "churn");
        p.add("t", Some(b"k"), b"v", &[]);
        p.add("t", Some(b"k"), b"v", &[]);
        assert!(p.take("t", Some(b"k"), b"v", &[]));
        assert!(p.take("t", Some(b"k"), b"v", &[]));
        assert!(!p.take("t", Some(b"k"), b"v", &[]));
        assert!(p.is_empty());
        p.add("dead", Some(b"k"), b"v", &[("dlq.offset", Some(&b"1"[..]))]);
        assert!(!p.take("dead", Some(b"k"), b"v", &[("dlq.offset", Some(&b"2"[..]))]));
        assert!(!p.take("t", Some(b"k"), b"w", &[]));
        // A decision is the same decision by its action id, whatever else changed.
        p.add("nba", Some(b"oj-1"), br#"{"action_id":"act-1","reason":"tier b"}"#, &[]);
        assert!(!p.take("nba", Some(b"oj-1"), br#"{"action_id":"act-2","reason":"tier b"}"#, &[]));
        assert!(p.take("nba", Some(b"oj-1"), br#"{"action_id":"act-1","reason":"tier c"}"#, &[]));
        p.add(
            "churn",
            None,
            br#"{"one_id":"oj-1","evaluated_at":"t","trigger":{"kind":"timer"},"band":"high"}"#,
            &[],
        );
        assert!(p.take(
            "churn",
            None,
            br#"{"one_id":"oj-1","evaluated_at":"t","trigger":{"kind":"timer"},"band":"medium"}"#,
            &[]
        ));
    }
}
