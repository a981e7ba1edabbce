//! Eviction and freezing: the detail of journeys with no event for
//! `state.evict_journeys_after` (event time) is dropped, and journeys with
//! no event for `state.freeze_journeys_after` are kept encoded, without
//! stopping the writer for a walk over every journey.
//!
//! In: the start (after a restore) and the snapshot interval's tick (a scan
//! starts when none runs), and the scan's list. Out: the listed journeys
//! compacted by the writer (`onejourney_journeys_evicted_total`), each
//! marked for the next checkpoint's changelog; idle journeys frozen by the
//! scan itself (`onejourney_journeys_frozen_total`). Keeps the running scan.
//!
//! Freezing changes how a journey is held, not what it holds, so the scan
//! does it beside the writer ([`State::freeze_idle`]: each journey encoded
//! from a shared copy and swapped in only if the writer has not changed it
//! meanwhile). The writer decodes a frozen journey on its next event.
//!
//! The scan walks every journey on a blocking thread, reading the state as
//! the lookup API does ([`State::eviction_candidates`]: one shard's lock at
//! a time); the writer then checks each listed journey again
//! ([`Processor::evict_listed`]: one lookup per journey that loses detail).
//! Until session 10 the walk ran on the writer at every checkpoint's
//! barrier, a stall that grows with the number of journeys.

use std::sync::Arc;
use std::time::Duration;

use onejourney_core::{EventTime, OneId, Processor, State};
use tokio::task::{JoinError, JoinHandle};
use tracing::{debug, info, warn};

use crate::metrics::Metrics;

/// A scan's result: the eviction cutoff it used and the journeys it
/// listed (none when eviction is off), and how many journeys it froze.
pub struct Scanned {
    cutoff: Option<EventTime>,
    listed: Vec<OneId>,
    frozen: usize,
}

pub struct Eviction {
    /// Zero: journeys keep their detail.
    after: Duration,
    /// Zero: journeys stay live.
    freeze_after: Duration,
    scan: Option<JoinHandle<Scanned>>,
}

impl Eviction {
    pub fn new(after: Duration, freeze_after: Duration) -> Self {
        Eviction {
            after,
            freeze_after,
            scan: None,
        }
    }

    /// Whether a scan runs.
    pub fn busy(&self) -> bool {
        self.scan.is_some()
    }

    /// Starts a scan of `processor`'s journeys, unless one runs, eviction
    /// and freezing are off or nothing was applied yet.
    pub fn start(&mut self, processor: &Processor) {
        if self.scan.is_some() {
            return;
        }
        let when = |after: Duration| (!after.is_zero()).then(|| processor.eviction_cutoff(after)).flatten();
        let (cutoff, freeze) = (when(self.after), when(self.freeze_after));
        if cutoff.is_none() && freeze.is_none() {
            return;
        }
        let state: Arc<State> = processor.state().clone();
        self.scan = Some(tokio::task::spawn_blocking(move || Scanned {
            cutoff,
            listed: cutoff.map(|c| state.eviction_candidates(c)).unwrap_or_default(),
            frozen: freeze.map_or(0, |c| state.freeze_idle(c)),
        }));
    }

    /// Waits for the running scan (pending for ever when none runs: call it
    /// only while [`Eviction::busy`]). Cancel-safe.
    pub async fn scanned(&mut self) -> Result<Scanned, JoinError> {
        match self.scan.as_mut() {
            Some(h) => h.await,
            None => std::future::pending().await,
        }
    }

    /// The scan ended: the writer evicts what it listed and is still
    /// evictable. A failed scan is logged; the next interval scans again.
    pub fn finish(&mut self, joined: Result<Scanned, JoinError>, processor: &mut Processor, metrics: &Metrics) {
        self.scan = None;
        match joined {
            Ok(Scanned { cutoff, listed, frozen }) => {
                let evicted = cutoff.map_or(0, |c| processor.evict_listed(&listed, c));
                metrics.journeys_evicted.inc_by(evicted as u64);
                metrics.journeys_frozen.inc_by(frozen as u64);
                if evicted > 0 {
                    info!(
                        listed = listed.len(),
                        evicted, "journey detail past its retention dropped"
                    );
                }
                if frozen > 0 {
                    debug!(frozen, "idle journeys frozen");
                }
            }
            Err(e) => warn!(error = %e, "the eviction scan failed; retrying at the next interval"),
        }
    }
}
