//! `onejourney bench`: throughput and memory, measured in one run on this
//! machine with the same simulator events, printed as a table and written as
//! JSON. What it covers so far: `parse_floor` (serde_json alone), `core`
//! (decode + stitch + journey + decide, one thread, with N profiles already in
//! memory), `memory` (resident bytes per profile) and `recovery` (writing and
//! restoring a snapshot of that state). The broker figures (`drain`, `echo`,
//! `engine`) are not measured yet.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use onejourney_core::{Channel, ChannelEvent, Decoder, Processor, State};
use onejourney_simulator::{generate, SimConfig};
use serde::Serialize;
use serde_json::json;

use crate::config::{Settings, Topics};

pub struct BenchArgs {
    pub out: Option<PathBuf>,
    /// Simulator events to measure with.
    pub events: usize,
    /// Profiles loaded before the core is measured.
    pub profiles: usize,
    /// Stop after parse_floor and memory.
    pub memory_only: bool,
}

#[derive(Serialize)]
struct Figure {
    name: &'static str,
    value: f64,
    unit: &'static str,
    note: String,
}

/// Resident set size of this process, from /proc (0 where unavailable).
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

pub fn run(settings: &Settings, args: &BenchArgs) -> anyhow::Result<()> {
    let mut figures = Vec::new();
    // The realistic mix: about 28 events per simulated person.
    let sim = generate(&SimConfig {
        customers: (args.events / 28).max(10),
        seed: 42,
        ..SimConfig::default()
    });
    let events: Vec<(Channel, Vec<u8>, u32)> = sim
        .events
        .iter()
        .take(args.events)
        .map(|e| {
            let c = Topics::stream_channel(e.stream);
            (c, e.bytes(), c as u32 * 2 + e.key_partition(2))
        })
        .collect();
    let n = events.len() as f64;
    let mean_bytes = events.iter().map(|e| e.1.len()).sum::<usize>() as f64 / n;
    eprintln!("bench: {} events, {:.0} bytes on average", events.len(), mean_bytes);

    // parse_floor: serde_json into a Value, nothing else.
    let t = Instant::now();
    for (_, bytes, _) in &events {
        black_box(serde_json::from_slice::<serde_json::Value>(bytes).ok());
    }
    let parse_floor = n / t.elapsed().as_secs_f64();
    figures.push(Figure {
        name: "parse_floor",
        value: parse_floor,
        unit: "events/s",
        note: format!("serde_json::from_slice to Value, {mean_bytes:.0}-byte events"),
    });

    // memory and the preload: profiles of three identifiers and one event each.
    let ns = settings.namespaces()?;
    let decoder = Decoder::new(ns.clone(), settings.ingest.max_message_bytes)?;
    let state = Arc::new(State::new(ns));
    let mut processor = Processor::new(Arc::new(settings.core()), state.clone());
    let rss_before = rss_bytes();
    let start_ms = SimConfig::default().start_ms - 86_400_000;
    let t = Instant::now();
    for i in 0..args.profiles {
        let at = onejourney_simulator::rfc3339(start_ms + (i as i64 % 86_400) * 1000);
        let v = json!({"event_id": format!("pre-{i}"), "event_type": "login", "occurred_at": at,
            "session_id": "s", "identifiers": {"customer_id": format!("B{i:09}"),
            "email": format!("bench.{i}@example.com"), "cookie_id": format!("bc-{i:09}")}});
        let bytes = serde_json::to_vec(&v)?;
        let ev = decoder
            .decode(Channel::Web, &bytes)
            .context("decoding a preload event")?;
        processor.process(&ev, 0).context("preloading a profile")?;
    }
    let preload_s = t.elapsed().as_secs_f64();
    let rss_after = rss_bytes();
    let grown = rss_after.saturating_sub(rss_before) as f64;
    let per_profile = grown / args.profiles.max(1) as f64;
    let identifiers = state.identity.identifier_count();
    figures.push(Figure {
        name: "memory",
        value: per_profile,
        unit: "bytes/profile",
        note: format!(
            "resident growth over {} profiles, {} identifiers ({:.0} bytes/identifier; 3 identifiers and one login each); \
             state estimate {} bytes/profile; preload {:.1} s",
            args.profiles,
            identifiers,
            grown / identifiers.max(1) as f64,
            state.approx_bytes() / args.profiles.max(1),
            preload_s
        ),
    });

    if args.memory_only {
        return report(&figures, f64::NAN, events.len(), mean_bytes, args);
    }
    // core: decode, stitch, journey, decide on one thread, profiles in memory.
    let decoded: Vec<(ChannelEvent, u32)> = events
        .iter()
        .filter_map(|(c, b, p)| decoder.decode(*c, b).ok().map(|e| (e, *p)))
        .collect();
    let t = Instant::now();
    for (c, b, _) in &events {
        black_box(decoder.decode(*c, b).ok());
    }
    let decode_only = n / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut outputs = 0usize;
    for (i, (ev, part)) in decoded.into_iter().enumerate() {
        for r in processor.offer(ev, part, i as u64, 0) {
            outputs += r.result.map(|p| p.outputs.len()).unwrap_or(0);
        }
    }
    for r in processor.tick(u64::MAX) {
        outputs += r.result.map(|p| p.outputs.len()).unwrap_or(0);
    }
    let process_s = t.elapsed().as_secs_f64();
    let core = n / (n / decode_only + process_s);
    figures.push(Figure {
        name: "core",
        value: core,
        unit: "events/s",
        note: format!(
            "one thread, {} profiles loaded: decode {:.0} events/s, stitch+journey+decide {:.0} events/s, {} outputs",
            args.profiles,
            decode_only,
            n / process_s,
            outputs
        ),
    });
    figures.push(Figure {
        name: "core_all_cores",
        value: f64::NAN,
        unit: "events/s",
        note: String::from("not measured: the core has a single writer; sharding by One ID is not built yet"),
    });
    // recovery: the state above (preloaded profiles plus the run) written as a
    // snapshot and read back into a new processor, as a restart does.
    let dir = std::env::temp_dir().join(format!("onejourney-bench-{}", std::process::id()));
    let file = dir.join("bench.snapshot");
    let t = Instant::now();
    let size = crate::durable::write(&file, &crate::durable::Header::default(), &processor.snapshot())?;
    let write_s = t.elapsed().as_secs_f64();
    let profiles_now = state.identity.profile_count();
    drop(processor);
    let t = Instant::now();
    let (_, core_snap) = crate::durable::read(&file)?.context("the snapshot just written")?;
    let fresh = Arc::new(State::new(settings.namespaces()?));
    let mut restored = Processor::new(Arc::new(settings.core()), fresh.clone());
    restored.restore(core_snap, 0)?;
    let restore_s = t.elapsed().as_secs_f64();
    anyhow::ensure!(fresh.identity.profile_count() == profiles_now, "restore lost profiles");
    let _ = std::fs::remove_dir_all(&dir);
    figures.push(Figure {
        name: "recovery",
        value: restore_s,
        unit: "s",
        note: format!(
            "read + restore of a {:.0} MB snapshot with {} profiles (snapshot write {:.1} s); \
             a restart adds reading back outputs published since the snapshot",
            size as f64 / 1e6,
            profiles_now,
            write_s
        ),
    });
    for name in ["drain", "echo", "engine"] {
        figures.push(Figure {
            name,
            value: f64::NAN,
            unit: "",
            note: String::from("not measured yet"),
        });
    }
    report(&figures, core / parse_floor, events.len(), mean_bytes, args)
}

/// Prints the table and writes the JSON.
fn report(figures: &[Figure], ratio: f64, events: usize, mean_bytes: f64, args: &BenchArgs) -> anyhow::Result<()> {
    println!("{:<16} {:>14} {:<14} note", "figure", "value", "unit");
    for f in figures {
        let v = if f.value.is_nan() {
            String::from("-")
        } else if f.value < 100.0 {
            format!("{:.2}", f.value)
        } else {
            format!("{:.0}", f.value)
        };
        println!("{:<16} {:>14} {:<14} {}", f.name, v, f.unit, f.note);
    }
    if !ratio.is_nan() {
        println!(
            "{:<16} {:>14.3} {:<14} goal >= 0.33",
            "core/parse_floor", ratio, "ratio"
        );
    }
    if let Some(out) = &args.out {
        let report = json!({
            "machine": {"cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)},
            "events": events,
            "mean_event_bytes": mean_bytes,
            "figures": figures.iter().map(|f| json!({"name": f.name, "value": if f.value.is_nan() { serde_json::Value::Null } else { json!(f.value) }, "unit": f.unit, "note": f.note})).collect::<Vec<_>>(),
            "ratios": {"core/parse_floor": if ratio.is_nan() { serde_json::Value::Null } else { json!(ratio) }},
        });
        std::fs::write(out, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}
