//! Trains the zstd dictionary the engine compresses frozen journeys with
//! (`services/core/src/state/journey.dict`, see `state/stored.rs`) from the
//! journeys of a simulated population, and prints what it achieves on
//! journeys it was not trained on:
//! `cargo run --release -p onejourney-bench --example journey_dict -- services/core/src/state/journey.dict`.
//!
//! Frozen journeys leave the process only in the local snapshot file, which
//! carries the dictionary they were compressed with: a build with a new
//! dictionary re-freezes them at restore, so a new dictionary needs no
//! migration (a new journey layout, `stored::LAYOUT`, does: see
//! `stored.rs`). Retrain it when the journey's encoding changes a lot (the
//! bench's `memory` note and `onejourney-bench`'s `frozen` test show when
//! it stops fitting). The ratio printed is against whole zstd frames; the
//! state's frames are 8-9 bytes shorter.

use anyhow::Context as _;
use onejourney_bench::simulated::population;
use onejourney_engine::config::Settings;

/// Dictionary size: past 32 KiB the journeys barely compress better.
const DICT_BYTES: usize = 32 << 10;

fn main() -> anyhow::Result<()> {
    let out = std::env::args().nth(1).context("the dictionary file to write")?;
    let settings = Settings::defaults()?;
    let (state, _) = population(&settings, 60_000, 7)?;
    let all: Vec<Vec<u8>> = state
        .all_journeys()
        .iter()
        .map(|(_, j)| onejourney_core::state::stored::encode(j))
        .collect::<Option<_>>()
        .context("a journey does not encode")?;
    let (train, test) = all.split_at(all.len() / 2);
    let dict = zstd::dict::from_samples(train, DICT_BYTES)?;
    let mut c = zstd::bulk::Compressor::with_dictionary(3, &dict)?;
    let (mut raw, mut packed) = (0, 0);
    for b in test {
        raw += b.len();
        packed += c.compress(b)?.len();
    }
    println!(
        "{} journeys: {:.0} bytes encoded, {:.0} compressed with the dictionary ({:.1}x)",
        test.len(),
        raw as f64 / test.len() as f64,
        packed as f64 / test.len() as f64,
        raw as f64 / packed as f64
    );
    std::fs::write(&out, &dict).with_context(|| format!("writing {out}"))?;
    Ok(())
}
