//! The snapshot file: the core's state with the input and output offsets it
//! covers.
//!
//! In: a [`Header`] and the core's [`CoreSnapshotRef`]. Out: one file per
//! consumer group ([`path`]) holding a magic line, the header and the core
//! state, both MessagePack; [`read`] gives them back. It keeps the file
//! whole: written to a temporary file, fsynced and renamed over the previous
//! one, so a crash leaves either the old or the new snapshot, never half of
//! one.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use onejourney_core::processor::{CoreSnapshot, CoreSnapshotRef};
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
