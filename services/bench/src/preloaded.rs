//! The pure core with N profiles preloaded: the `memory`, `core`,
//! `core_all_cores` and `recovery` figures of `onejourney-bench`; and
//! `recovery_restart`, a snapshot file restored alone ([`restart`]).
//!
//! In: the settings, a profile count, the bench's events (channel, bytes,
//! partition); for [`restart`], a snapshot file. Out: those figures, and
//! with `--keep-snapshot` `recovery`'s snapshot file, left where it was
//! asked for. Keeps the decoder, the state and the processor ([`Core`])
//! until `recovery` ends it; nothing of the events: the preload streams its
//! profiles one at a time and the core run decodes in blocks.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use onejourney_core::processor::Released;
use onejourney_core::{Channel, ChannelEvent, Decoder, Processor, State};
use onejourney_simulator::SimConfig;
use serde_json::json;

use onejourney_engine::config::Settings;
use onejourney_engine::durable;

use crate::stall::Checkpoints;
use crate::{broker, Figure};

/// What the core released: outputs and the timers that fired.
#[derive(Clone, Copy, Default)]
struct Work {
    outputs: usize,
    timers: usize,
}

impl std::ops::AddAssign for Work {
    fn add_assign(&mut self, o: Work) {
        self.outputs += o.outputs;
        self.timers += o.timers;
    }
}

impl Work {
    fn of(released: Vec<Released>) -> Work {
        let mut w = Work::default();
        for p in released.into_iter().filter_map(|r| r.result.ok()) {
            w.outputs += p.outputs.len();
            w.timers += p.timers_fired;
        }
        w
    }
}

/// Offers one event; returns what it released.
fn offer(processor: &mut Processor, ev: ChannelEvent, part: u32, seq: &mut u64) -> Work {
    *seq += 1;
    Work::of(processor.offer(ev, part, *seq, 0))
}

/// How many outputs released results carry.
pub fn count_outputs(released: Vec<Released>) -> usize {
    Work::of(released).outputs
}

/// The most resident memory this process has had (`VmHWM`, 0 where unavailable).
pub(crate) fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kb| kb * 1024)
}

/// Profiles preloaded between two drops of the changelog bookkeeping
/// (without the state figures).
pub(crate) const CHECKPOINT_PROFILES: usize = 65_536;

/// Events decoded at a time, in the core run and by each decoding thread.
pub(crate) const BLOCK: usize = 1024;

/// Decodes bench events, keeping their partitions (every simulator event is valid).
fn decode_all(decoder: &Decoder, events: &[(Channel, &[u8], u32)]) -> Vec<(ChannelEvent, u32)> {
    events
        .iter()
        .filter_map(|(c, b, p)| decoder.decode(*c, b).ok().map(|e| (e, *p)))
        .collect()
}

/// Resident set size of this process, from /proc (0 where unavailable).
pub(crate) fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// Minor page faults this process has taken (`minflt` of /proc/self/stat,
/// 0 where unavailable): each is a page the kernel mapped and zeroed on
/// first touch, after the allocator took fresh memory or gave some back.
pub(crate) fn minor_faults() -> u64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // The fields after the command's name, which is in parentheses
            // and may hold spaces: state, ppid, ... minflt is the 8th.
            let (_, rest) = s.rsplit_once(')')?;
            rest.split_whitespace().nth(7)?.parse::<u64>().ok()
        })
        .unwrap_or(0)
}

/// The customer id of preloaded profile `i`.
pub(crate) fn preloaded_customer(i: usize) -> String {
    format!("B{i:09}")
}

/// The pure core with the preloaded profiles in memory: what `memory`,
/// `core`, `core_all_cores` and `recovery` measure.
pub(crate) struct Core {
    decoder: Decoder,
    state: Arc<State>,
    pub(crate) processor: Processor,
    /// The last offer's sequence number, over both halves of the run.
    seq: u64,
}

impl Core {
    /// Loads `profiles` profiles of three identifiers (customer id, email,
    /// cookie) and one login each through the real decoder and processor;
    /// returns the core and the `memory` figure.
    /// `baseline`: the resident size the growth is taken from; `None`: now
    /// (a later size passes what the process held before the first preload
    /// plus the simulation, since memory the earlier sizes freed is reused).
    /// `keep_changelog`: keep every identity op and changed journey for the
    /// state figures' checkpoint; otherwise they are dropped every
    /// [`CHECKPOINT_PROFILES`], as the engine's checkpoints take them, and
    /// the journeys idle for `state.freeze_journeys_after` are frozen, as
    /// the engine's scan after each checkpoint does, so that `memory`
    /// counts the state as the engine holds it.
    pub(crate) fn preload(
        settings: &Settings,
        profiles: usize,
        baseline: Option<u64>,
        keep_changelog: bool,
    ) -> anyhow::Result<(Core, Figure)> {
        let ns = settings.namespaces()?;
        let decoder = Decoder::new(ns.clone(), settings.ingest.max_message_bytes)?;
        let state = Arc::new(State::new(ns));
        let mut processor = Processor::new(Arc::new(settings.core()), state.clone());
        let rss_before = baseline.unwrap_or_else(rss_bytes);
        let start_ms = SimConfig::default().start_ms - 86_400_000;
        let t = Instant::now();
        let freeze_after = settings.state.freeze_journeys_after;
        let mut frozen = 0;
        let mut checkpoint = |processor: &mut Processor| {
            drop(processor.take_identity_ops());
            drop(processor.state().take_dirty());
            if let Some(cutoff) = processor
                .eviction_cutoff(freeze_after)
                .filter(|_| !freeze_after.is_zero())
            {
                frozen += processor.state().freeze_idle(cutoff);
            }
        };
        for i in 0..profiles {
            let at = onejourney_simulator::rfc3339(start_ms + (i as i64 % 86_400) * 1000);
            let v = json!({"event_id": format!("pre-{i}"), "event_type": "login", "occurred_at": at,
                "session_id": "s", "identifiers": {"customer_id": preloaded_customer(i),
                "email": format!("bench.{i}@example.com"), "cookie_id": format!("bc-{i:09}")}});
            let bytes = serde_json::to_vec(&v)?;
            let ev = decoder
                .decode(Channel::Web, &bytes)
                .context("decoding a preload event")?;
            processor.process(&ev, 0).context("preloading a profile")?;
            if !keep_changelog && ((i + 1) % CHECKPOINT_PROFILES == 0 || i + 1 == profiles) {
                checkpoint(&mut processor);
            }
        }
        let pending = if keep_changelog {
            format!("; includes the changelog bookkeeping not yet checkpointed ({} changed journeys and their identity ops), no journey frozen", state.dirty_count())
        } else {
            format!(
                "; changelog bookkeeping dropped every {CHECKPOINT_PROFILES} profiles, as checkpoints take it, and then \
                 the journeys idle for state.freeze_journeys_after ({} s) frozen: {frozen} of {profiles}",
                freeze_after.as_secs()
            )
        };
        let preload_s = t.elapsed().as_secs_f64();
        let rss_after = rss_bytes();
        let grown = rss_after.saturating_sub(rss_before) as f64;
        let per_profile = grown / profiles.max(1) as f64;
        let identifiers = state.identity.identifier_count();
        let memory = Figure {
            name: "memory",
            value: per_profile,
            unit: "bytes/profile",
            note: format!(
                "resident growth over {} profiles, {} identifiers ({:.0} bytes/identifier; 3 identifiers and one login each); \
                 state estimate {} bytes/profile; preload {:.1} s{pending}",
                profiles,
                identifiers,
                grown / identifiers.max(1) as f64,
                state.approx_bytes() / profiles.max(1),
                preload_s
            ),
        };
        let core = Core {
            decoder,
            state,
            processor,
            seq: 0,
        };
        Ok((core, memory))
    }

    /// `core`: decode, stitch, journey, decide on one thread (decode is timed
    /// separately and added); and `checkpoint_stall_core_ms`: the
    /// checkpoints the writer takes meanwhile ([`Checkpoints`]), timed apart
    /// from the events.
    pub(crate) fn one_thread(
        &mut self,
        events: &[(Channel, &[u8], u32)],
        profiles: usize,
    ) -> anyhow::Result<(Figure, Checkpoints)> {
        let h = events.len() as f64;
        let t = Instant::now();
        for (c, b, _) in events {
            black_box(self.decoder.decode(*c, b).ok());
        }
        let decode_only = h / t.elapsed().as_secs_f64();
        // Decoded a block at a time (no decoded copy of every event), only
        // the processing timed.
        let mut process_s = 0.0;
        let mut work = Work::default();
        let mut checkpoints = Checkpoints::new(profiles, preloaded_customer);
        let faults_before = minor_faults();
        let mut thawed = 0u64;
        for block in events.chunks(BLOCK) {
            let decoded = decode_all(&self.decoder, block);
            for (ev, part) in decoded {
                // The thaws of the checkpoints' own changes are not the events'.
                self.state.take_thawed();
                let t = Instant::now();
                work += offer(&mut self.processor, ev, part, &mut self.seq);
                process_s += t.elapsed().as_secs_f64();
                thawed += self.state.take_thawed();
                checkpoints.between_events(&mut self.processor)?;
            }
        }
        // A capture still pending is finished here, untimed, so that it
        // does not carry into `core_all_cores` or `recovery`.
        while self.processor.capturing() {
            checkpoints.between_events(&mut self.processor)?;
        }
        let faults = minor_faults().saturating_sub(faults_before) as f64 / h.max(1.0);
        let core = Figure {
            name: "core",
            value: h / (h / decode_only + process_s),
            unit: "events/s",
            note: format!(
                "one thread, {} profiles loaded, {} events: decode {:.0} events/s, stitch+journey+decide {:.0} events/s, \
                 {} outputs, {} timers fired; checkpoints taken between events, not counted; \
                 {:.2} minor page faults an event (decode, processing and checkpoints); \
                 {thawed} frozen journeys thawed by the events and timers",
                profiles,
                events.len(),
                decode_only,
                h / process_s,
                work.outputs,
                work.timers,
                faults
            ),
        };
        Ok((core, checkpoints))
    }

    /// `core_all_cores`: decoding (stateless) on the other cores, in blocks
    /// handed over in order, while this thread stitches, updates journeys and
    /// decides (the state has one writer).
    pub(crate) fn all_cores(&mut self, events: &[(Channel, &[u8], u32)]) -> Figure {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let decoders = cores.saturating_sub(1).max(1);
        let t = Instant::now();
        let mut work = Work::default();
        let blocks: Vec<&[(Channel, &[u8], u32)]> = events.chunks(BLOCK).collect();
        let (decoder, processor, seq) = (&self.decoder, &mut self.processor, &mut self.seq);
        std::thread::scope(|scope| {
            let mut rxs = Vec::new();
            for d in 0..decoders {
                let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<(ChannelEvent, u32)>>(16);
                rxs.push(rx);
                let blocks = &blocks;
                scope.spawn(move || {
                    for block in blocks.iter().skip(d).step_by(decoders) {
                        if tx.send(decode_all(decoder, block)).is_err() {
                            return;
                        }
                    }
                });
            }
            for i in 0..blocks.len() {
                let Ok(block) = rxs[i % decoders].recv() else {
                    break;
                };
                for (ev, part) in block {
                    work += offer(processor, ev, part, seq);
                }
            }
        });
        work += Work::of(self.processor.tick(u64::MAX));
        let all_s = t.elapsed().as_secs_f64();
        Figure {
            name: "core_all_cores",
            value: events.len() as f64 / all_s,
            unit: "events/s",
            note: format!(
                "{cores} cores, the next {} events: {decoders} decoding thread(s) feeding the single writer; {} outputs, \
                 {} timers fired",
                events.len(),
                work.outputs,
                work.timers
            ),
        }
    }

    /// `recovery`: the state read back from a snapshot into a new
    /// processor, as a restart does: the checkpoint [`broker::state::persist`]
    /// wrote (the preloaded profiles), or without a broker a snapshot of
    /// everything the core holds now, written here (at `keep` when given,
    /// and left there for [`restart`]). Ends the core: its state is gone
    /// when this returns.
    pub(crate) fn recovery(
        self,
        settings: &Settings,
        persisted: Option<&broker::state::Persisted>,
        keep: Option<&Path>,
    ) -> anyhow::Result<Figure> {
        let dir = std::env::temp_dir().join(format!("onejourney-bench-{}", std::process::id()));
        let (file, size, write_s, profiles_now) = match persisted {
            Some(p) => (p.snapshot_path.clone(), p.snapshot_bytes, p.snapshot_s, p.profiles),
            None => {
                let file = keep.map_or_else(|| dir.join("bench.snapshot"), Path::to_path_buf);
                eprintln!("bench: recovery: writing the snapshot to {}", file.display());
                let t = Instant::now();
                let snapshot = self.processor.snapshot();
                let size = durable::write(&file, &durable::Header::default(), &snapshot, |_| {})?;
                // A kept file replaced one of an earlier run: not that one too.
                let _ = std::fs::remove_file(durable::prev_path(&file));
                let profiles = self.state.identity.profile_count();
                (file, size, t.elapsed().as_secs_f64(), profiles)
            }
        };
        // The whole first state goes before the restore, so that the two
        // never share the heap (10M profiles would not fit twice).
        drop(self);
        let back = read_back(settings, &file)?;
        anyhow::ensure!(back.profiles == profiles_now, "restore lost profiles");
        let _ = std::fs::remove_dir_all(&dir);
        Ok(Figure {
            name: "recovery",
            value: back.restore_s,
            unit: "s",
            note: format!(
                "read ({:.1} s) + restore of a {:.0} MB snapshot with {} profiles, {} journeys frozen, \
                 no engine (snapshot write {write_s:.1} s); resident growth over the restore {:.0} MB (peak resident of the run {:.0} MB, {} minor page faults); \
                 in the process that wrote it, into memory its first state freed (a restarted process: \
                 `recovery_restart`); a restart adds reading back outputs published since the snapshot",
                back.read_s,
                size as f64 / 1e6,
                profiles_now,
                back.frozen,
                back.resident as f64 / 1e6,
                peak_rss_bytes() as f64 / 1e6,
                back.faults
            ),
        })
    }
}

/// A snapshot read back and restored into a new processor, then dropped.
struct ReadBack {
    /// Seconds to read and decode the file.
    read_s: f64,
    /// Seconds from the start of the read to the end of the restore.
    restore_s: f64,
    profiles: usize,
    frozen: usize,
    /// Resident growth and minor page faults over the read and the restore.
    resident: u64,
    faults: u64,
}

fn read_back(settings: &Settings, file: &Path) -> anyhow::Result<ReadBack> {
    let rss_before = rss_bytes();
    eprintln!(
        "bench: restoring {} ({:.0} MB resident, peak {:.0} MB)",
        file.display(),
        rss_before as f64 / 1e6,
        peak_rss_bytes() as f64 / 1e6
    );
    let (t, faults_before) = (Instant::now(), minor_faults());
    let (_, core_snap) = durable::read(file, |_| {})?.with_context(|| format!("no snapshot at {}", file.display()))?;
    let read_s = t.elapsed().as_secs_f64();
    let fresh = Arc::new(State::new(settings.namespaces()?));
    let mut restored = Processor::new(Arc::new(settings.core()), fresh.clone());
    restored.restore(core_snap, 0)?;
    let restore_s = t.elapsed().as_secs_f64();
    Ok(ReadBack {
        read_s,
        restore_s,
        profiles: fresh.identity.profile_count(),
        frozen: fresh.size().frozen,
        resident: rss_bytes().saturating_sub(rss_before),
        faults: minor_faults().saturating_sub(faults_before),
    })
}

/// `recovery_restart`: [`Core::recovery`]'s read and restore of a snapshot
/// it kept (`--keep-snapshot`), in a process that did nothing before, as a
/// restarted engine's (without the broker's part: reading back the outputs
/// and the changelog's tail). `recovery`'s own read reuses the memory the
/// state it wrote freed, which a restarted process has not got.
pub(crate) fn restart(settings: &Settings, file: &Path) -> anyhow::Result<(Figure, usize)> {
    let size = std::fs::metadata(file)
        .with_context(|| format!("reading {}", file.display()))?
        .len();
    let back = read_back(settings, file)?;
    let figure = Figure {
        name: "recovery_restart",
        value: back.restore_s,
        unit: "s",
        note: format!(
            "read ({:.1} s) + restore of a {:.0} MB snapshot with {} profiles, {} journeys frozen, in a \
             process that did nothing before; resident growth {:.0} MB (peak resident {:.0} MB, {} minor page \
             faults)",
            back.read_s,
            size as f64 / 1e6,
            back.profiles,
            back.frozen,
            back.resident as f64 / 1e6,
            peak_rss_bytes() as f64 / 1e6,
            back.faults
        ),
    };
    Ok((figure, back.profiles))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stall::BARRIER_EVERY;
    use onejourney_engine::pipeline::checkpoint::CAPTURE_SLICE;

    #[test]
    fn every_record_pending_at_a_barrier_is_taken_and_the_longest_pause_is_the_figure() -> anyhow::Result<()> {
        let settings = Settings::defaults()?;
        let (mut core, _) = Core::preload(&settings, 5_000, None, false)?;
        let backlog = crate::simulate(2 * BARRIER_EVERY + 200, false);
        let events = crate::core_events(&backlog);
        let (_, checkpoints) = core.one_thread(&events, 5_000)?;
        assert_eq!(checkpoints.barriers, 2, "one barrier every {BARRIER_EVERY} events");
        assert!(!core.processor.capturing(), "the last capture finished");
        assert!(
            checkpoints.pending > CAPTURE_SLICE,
            "changed journeys pending: {}",
            checkpoints.pending
        );
        assert_eq!(
            checkpoints.records, checkpoints.pending,
            "every pending record taken, once"
        );
        // Before each barrier, as many preloaded journeys changed as events
        // since the last one (a profile picked twice counts twice)...
        assert_eq!(checkpoints.changed, 2 * BARRIER_EVERY);
        // ...and pending at it beside the events' own changes: 4,096 picks
        // of 5,000 profiles are about 2,800 distinct ones a barrier, and the
        // events (of about 2,400 simulated people) change fewer than 3,000
        // journeys in all, so without the preloaded ones fewer than 5,000
        // records would be pending.
        assert!(
            checkpoints.pending > 5_000,
            "the preloaded journeys changed are pending too: {}",
            checkpoints.pending
        );
        assert!(checkpoints.slices >= 2);
        let figure = checkpoints.figure(5_000).context("two barriers")?;
        assert!(figure.value > 0.0);
        assert_eq!(
            figure.value,
            checkpoints.longest_barrier.max(checkpoints.longest_slice).as_secs_f64() * 1e3
        );
        Ok(())
    }
}
