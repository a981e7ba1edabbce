//! The snapshot file: the core's state with the input and output offsets it
//! covers.
//!
//! In: a [`Header`] and the core's [`CoreSnapshotRef`]. Out: one file per
//! consumer group ([`path`]); [`read_latest`] gives the newest sound one
//! back. What it keeps on disk: the snapshot and the generation before it
//! (`.prev`).
//!
//! The format (version 2): the magic line `onejourney-snapshot-v2\n`, the
//! body's length (8 bytes, big-endian), the body's SHA-256 (32 bytes), then
//! the body: the header and the core state, both MessagePack. A file is
//! written whole to `.tmp`, fsynced, the current file becomes `.prev`, and
//! the new one is renamed in: a crash leaves a sound file behind, never half
//! of one. At restore a file whose checksum, length or encoding is wrong is
//! damaged: the previous generation is used instead (re-processing more
//! input), and the caller reports it. A `.tmp` left by a crash or a full disk
//! is removed at start ([`remove_partial`]). A file of another format
//! version is refused with what to do, never read as damaged.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use onejourney_core::processor::{CoreSnapshot, CoreSnapshotRef};
use serde::{Deserialize, Serialize};

use super::checksum::{self, Hashing};
use crate::config::Settings;

const MAGIC: &[u8] = b"onejourney-snapshot-v2\n";
/// Every format version starts so.
const MAGIC_PREFIX: &[u8] = b"onejourney-snapshot-v";
/// Length and SHA-256 of the body, after the magic line.
const PREAMBLE: usize = 8 + 32;
const BUFFER: usize = 1 << 20;

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
    /// What the committed checkpoints this state builds on wrote to the
    /// changelog (absent in snapshots written before it existed).
    #[serde(default)]
    pub changelog: Option<super::changelog::Chain>,
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
    #[error("{path} is not a onejourney snapshot")]
    Magic { path: PathBuf },
    #[error(
        "{path} is a snapshot of format {found}, not {expected} (written by another onejourney version): run the \
         version that wrote it, or start once with `onejourney run --rebuild` to rebuild the state from the inputs",
        expected = String::from_utf8_lossy(&MAGIC[MAGIC_PREFIX.len() - 1..MAGIC.len() - 1])
    )]
    Version { path: PathBuf, found: String },
    #[error("{path} is damaged: {reason}")]
    Decode { path: PathBuf, reason: String },
    #[error("encoding the snapshot: {0}")]
    Encode(String),
}

impl SnapshotError {
    /// The file is there but its bytes are wrong (a bad disk, a torn copy):
    /// the previous generation may stand in for it.
    pub fn is_damage(&self) -> bool {
        matches!(self, SnapshotError::Magic { .. } | SnapshotError::Decode { .. })
    }
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

/// The previous generation of the snapshot at `path`.
pub fn prev_path(path: &Path) -> PathBuf {
    path.with_extension("snapshot.prev")
}

fn tmp_path(path: &Path) -> PathBuf {
    path.with_extension("snapshot.tmp")
}

/// Removes a partial snapshot (`.tmp`) a crash or a full disk left behind;
/// true when there was one.
pub fn remove_partial(path: &Path) -> Result<bool, SnapshotError> {
    let tmp = tmp_path(path);
    match fs::remove_file(&tmp) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(SnapshotError::Io { path: tmp, source }),
    }
}

/// Writes a snapshot atomically, keeping the one it replaces as `.prev`;
/// returns its size in bytes. `progress` hears the bytes written so far.
pub fn write(
    path: &Path,
    header: &Header,
    core: &CoreSnapshotRef<'_>,
    progress: impl FnMut(u64),
) -> Result<u64, SnapshotError> {
    let io = |source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io)?;
    let tmp = tmp_path(path);
    let mut file = File::create(&tmp).map_err(io)?;
    file.write_all(MAGIC).map_err(io)?;
    file.write_all(&[0; PREAMBLE]).map_err(io)?;
    let mut w = BufWriter::with_capacity(BUFFER, Hashing::new(file, progress));
    // Structs as arrays, not maps: field names would double the size. The
    // format version in the core's snapshot guards the field order.
    rmp_serde::encode::write(&mut w, header).map_err(|e| SnapshotError::Encode(e.to_string()))?;
    rmp_serde::encode::write(&mut w, core).map_err(|e| SnapshotError::Encode(e.to_string()))?;
    let body = w.into_inner().map_err(|e| io(e.into_error()))?;
    let (mut file, digest, len) = body.finish();
    file.seek(SeekFrom::Start(MAGIC.len() as u64)).map_err(io)?;
    file.write_all(&len.to_be_bytes()).map_err(io)?;
    file.write_all(&digest).map_err(io)?;
    file.sync_all().map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    drop(file);
    match fs::rename(path, prev_path(path)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    fs::rename(&tmp, path).map_err(io)?;
    // The renames themselves must reach the disk.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(size)
}

/// A snapshot read back.
pub struct Loaded {
    pub header: Header,
    pub core: CoreSnapshot,
    /// The file it came from.
    pub from: PathBuf,
    /// Why the newest generation was passed over, when it was.
    pub passed_over: Option<SnapshotError>,
}

/// Reads the newest sound snapshot: the one at `path`, or its previous
/// generation when it is damaged or missing (a crash between the two
/// renames of [`write`]). `None` when there is neither.
pub fn read_latest(path: &Path, mut progress: impl FnMut(u64)) -> Result<Option<Loaded>, SnapshotError> {
    let prev = prev_path(path);
    let (passed_over, found) = match read(path, &mut progress) {
        Ok(Some((header, core))) => {
            return Ok(Some(Loaded {
                header,
                core,
                from: path.to_path_buf(),
                passed_over: None,
            }))
        }
        Ok(None) => (None, read(&prev, &mut progress)),
        Err(e) if e.is_damage() => {
            let older = read(&prev, &mut progress);
            (Some(e), older)
        }
        Err(e) => return Err(e),
    };
    match (found, passed_over) {
        (Ok(Some((header, core))), passed_over) => Ok(Some(Loaded {
            header,
            core,
            from: prev,
            passed_over,
        })),
        (Ok(None), None) => Ok(None),
        // The newest is damaged and there is nothing older: that error.
        (Ok(None), Some(e)) | (Err(_), Some(e)) => Err(e),
        (Err(e), None) => Err(e),
    }
}

/// Reads and checks the snapshot at `path`; `None` when there is none.
pub fn read(path: &Path, progress: impl FnMut(u64)) -> Result<Option<(Header, CoreSnapshot)>, SnapshotError> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(SnapshotError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let damaged = |reason: String| SnapshotError::Decode {
        path: path.to_path_buf(),
        reason,
    };
    let mut magic = vec![0u8; MAGIC.len()];
    let mut preamble = [0u8; PREAMBLE];
    if file.read_exact(&mut magic).is_err() || magic != MAGIC {
        return Err(if magic.starts_with(MAGIC_PREFIX) {
            let line = magic.split(|b| *b == b'\n').next().unwrap_or_default();
            SnapshotError::Version {
                path: path.to_path_buf(),
                found: String::from_utf8_lossy(&line[MAGIC_PREFIX.len() - 1..]).into_owned(),
            }
        } else {
            SnapshotError::Magic {
                path: path.to_path_buf(),
            }
        });
    }
    file.read_exact(&mut preamble)
        .map_err(|e| damaged(format!("no length and checksum: {e}")))?;
    let (len, digest) = preamble.split_at(8);
    let len = u64::from_be_bytes(len.try_into().unwrap_or_default());
    let decode = |e: rmp_serde::decode::Error| damaged(e.to_string());
    let body = |r: &mut BufReader<_>| {
        let header: Header = rmp_serde::decode::from_read(&mut *r).map_err(decode)?;
        let core: CoreSnapshot = rmp_serde::decode::from_read(&mut *r).map_err(decode)?;
        // Whatever follows the body is hashed too, so it counts against the length.
        let mut rest = Vec::new();
        r.read_to_end(&mut rest)
            .map_err(|e| damaged(format!("reading to the end: {e}")))?;
        Ok((header, core))
    };
    let hashing_failed = || damaged(String::from("hashing the body failed"));
    let ((header, core), bytes, sha) = checksum::read_hashed(file, BUFFER, progress, body, hashing_failed)?;
    if bytes != len {
        return Err(damaged(format!("{bytes} body bytes where the header says {len}")));
    }
    if sha != digest {
        return Err(damaged(String::from("the checksum does not match")));
    }
    Ok(Some((header, core)))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use onejourney_core::output::Output;
    use onejourney_core::processor::CoreSnapshot;
    use onejourney_core::{Decoder, Processor, State};
    use onejourney_simulator::{generate, SimConfig};

    use super::*;

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
            .map(|e| d.decode(e.stream.channel(), &e.bytes()).unwrap())
            .collect();
        let (first, rest) = events.split_at(events.len() / 2);
        let new = || Processor::new(Arc::new(s.core()), Arc::new(State::new(ns.clone())));
        let mut a = new();
        outputs(&mut a, first);
        // A forget, so suppression entries are part of what is saved.
        let key = first[0].ids[0].clone();
        let request = onejourney_core::output::ErasureRequest {
            requested_by: None,
            via: "identity_control",
            requested_at: None,
            command: onejourney_core::output::CommandRef {
                topic: "identity-control".into(),
                partition: 0,
                offset: 0,
            },
        };
        assert!(!a.forget(&key, request).is_empty());

        let dir = std::env::temp_dir().join(format!("oj-snap-{}", std::process::id()));
        let file = dir.join("g.snapshot");
        let header = Header {
            written_at_ms: 1,
            inputs: vec![("web".into(), 0, 42)],
            outputs: vec![],
            changelog: None,
        };
        let size = write(&file, &header, &a.snapshot(), |_| {}).unwrap();
        assert!(size > 10_000, "{size} bytes");
        let (h, core) = read(&file, |_| {}).unwrap().unwrap();
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
        for (one_id, j) in a.state().all_journeys() {
            assert_eq!(Some(j), b.state().journey(&one_id), "{one_id}");
        }

        // A damaged file is an error, not an empty state.
        fs::write(&file, b"onejourney-snapshot-v2\n\x93garbage").unwrap();
        assert!(matches!(read(&file, |_| {}), Err(SnapshotError::Decode { .. })));
        fs::write(&file, b"something else").unwrap();
        assert!(matches!(read(&file, |_| {}), Err(SnapshotError::Magic { .. })));
        assert!(read(&dir.join("missing"), |_| {}).unwrap().is_none());
        let _ = fs::remove_dir_all(dir);
    }

    /// A small processor state with one profile, as a snapshot source.
    fn small() -> Processor {
        let s = Settings::defaults().unwrap();
        let ns = s.namespaces().unwrap();
        let d = Decoder::new(ns.clone(), 1 << 20).unwrap();
        let mut p = Processor::new(Arc::new(s.core()), Arc::new(State::new(ns)));
        let ev = br#"{"event_id":"e1","event_type":"page_view","occurred_at":"2026-11-01T10:00:00Z","identifiers":{"customer_id":"C-1"},"session_id":"s1"}"#;
        let ev = d.decode(onejourney_core::Channel::Web, ev).unwrap();
        outputs(&mut p, &[ev]);
        p
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("oj-snap-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir.join("g.snapshot")
    }

    fn header(offset: i64) -> Header {
        Header {
            written_at_ms: 1,
            inputs: vec![("web".into(), 0, offset)],
            outputs: vec![],
            changelog: None,
        }
    }

    #[test]
    fn a_corrupt_byte_is_caught_by_the_checksum_and_the_previous_generation_is_used() {
        let file = scratch("corrupt");
        let p = small();
        write(&file, &header(1), &p.snapshot(), |_| {}).unwrap();
        write(&file, &header(2), &p.snapshot(), |_| {}).unwrap();
        assert!(prev_path(&file).exists(), "the previous generation is kept");
        let fine = read_latest(&file, |_| {}).unwrap().unwrap();
        assert_eq!(
            (fine.header, fine.from.clone(), fine.passed_over.is_none()),
            (header(2), file.clone(), true)
        );

        // One byte flipped deep in the body, where MessagePack still decodes.
        let mut bytes = fs::read(&file).unwrap();
        let at = bytes.len() - 3;
        bytes[at] ^= 0x01;
        fs::write(&file, &bytes).unwrap();
        let err = read(&file, |_| {}).map(|_| ()).unwrap_err();
        assert!(err.is_damage(), "{err}");
        let older = read_latest(&file, |_| {}).unwrap().unwrap();
        assert_eq!(older.header, header(1));
        assert_eq!(older.from, prev_path(&file));
        assert!(older.passed_over.is_some_and(|e| e.is_damage()));

        // Both damaged: an error, never an empty start.
        fs::write(prev_path(&file), &bytes).unwrap();
        assert!(read_latest(&file, |_| {}).is_err());
        // The newest missing (a crash between the renames): the previous one.
        fs::remove_file(&file).unwrap();
        write(&prev_path(&file).with_extension("x"), &header(3), &p.snapshot(), |_| {}).unwrap();
        fs::rename(prev_path(&file).with_extension("x"), prev_path(&file)).unwrap();
        assert_eq!(read_latest(&file, |_| {}).unwrap().unwrap().header, header(3));
    }

    #[test]
    fn a_partial_tmp_file_is_removed_at_start() {
        let file = scratch("tmp");
        write(&file, &header(1), &small().snapshot(), |_| {}).unwrap();
        // A crash (or a full disk) in the middle of the next write.
        fs::write(tmp_path(&file), b"onejourney-snapshot-v2\n\0\0").unwrap();
        assert!(remove_partial(&file).unwrap());
        assert!(!tmp_path(&file).exists());
        assert!(!remove_partial(&file).unwrap());
        assert_eq!(read_latest(&file, |_| {}).unwrap().unwrap().header, header(1));
    }

    #[test]
    fn a_snapshot_of_the_old_format_is_refused_with_what_to_do() {
        let file = scratch("old");
        fs::write(&file, b"onejourney-snapshot-v1\n\x93\x00").unwrap();
        let err = read_latest(&file, |_| {}).map(|_| ()).unwrap_err();
        assert!(matches!(err, SnapshotError::Version { .. }), "{err}");
        assert!(!err.is_damage());
        let text = err.to_string();
        assert!(
            text.contains("v1") && text.contains("v2") && text.contains("--rebuild"),
            "{text}"
        );
    }

    #[test]
    fn progress_hears_every_byte() {
        let file = scratch("progress");
        let mut written = 0;
        let size = write(&file, &header(1), &small().snapshot(), |n| written = n).unwrap();
        assert_eq!(written + (MAGIC.len() + PREAMBLE) as u64, size);
        let mut read_bytes = 0;
        read(&file, |n| read_bytes = n).unwrap().unwrap();
        assert_eq!(read_bytes, written);
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
            let c = e.stream.channel();
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
}
