//! A simulated population run through the pure core: the journeys the
//! frozen-journey dictionary is trained on (`examples/journey_dict.rs`)
//! and tested against (`tests/frozen.rs`).
//!
//! In: the settings, a population size and a seed. Out: the state after
//! every simulated event was offered (in simulated order, one partition)
//! and the processor that wrote it. Keeps nothing.

use std::sync::Arc;

use anyhow::Context as _;
use onejourney_core::{Decoder, Processor, State};
use onejourney_engine::config::Settings;
use onejourney_simulator::{generate, SimConfig};

/// Runs `customers` simulated customers (90 days, `seed`) through a new
/// processor.
pub fn population(settings: &Settings, customers: usize, seed: u64) -> anyhow::Result<(Arc<State>, Processor)> {
    let ns = settings.namespaces()?;
    let decoder = Decoder::new(ns.clone(), settings.ingest.max_message_bytes)?;
    let state = Arc::new(State::new(ns));
    let mut p = Processor::new(Arc::new(settings.core()), state.clone());
    let sim = generate(&SimConfig {
        customers,
        seed,
        ..SimConfig::default()
    });
    for (seq, e) in sim.events.iter().enumerate() {
        let ev = decoder
            .decode(e.stream.channel(), &e.bytes())
            .context("a simulated event did not decode")?;
        p.offer(ev, 0, seq as u64, 0);
    }
    Ok((state, p))
}
