//! Eviction: the detail of journeys with no event for
//! `state.evict_journeys_after` (event time) is dropped without stopping
//! the writer for a walk over every journey.
//!
//! In: the snapshot interval's tick (a scan starts when none runs) and the
//! scan's list. Out: the listed journeys compacted by the writer
//! (`onejourney_journeys_evicted_total`), each marked for the next
//! checkpoint's changelog. Keeps the running scan.
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
use tracing::{info, warn};

use crate::metrics::Metrics;

/// A scan's result: the cutoff it used and the journeys it listed.
pub type Scanned = (EventTime, Vec<OneId>);

pub struct Eviction {
    /// Zero: journeys keep their detail.
    after: Duration,
    scan: Option<JoinHandle<Scanned>>,
}

impl Eviction {
    pub fn new(after: Duration) -> Self {
        Eviction { after, scan: None }
    }

    /// Whether a scan runs.
    pub fn busy(&self) -> bool {
        self.scan.is_some()
    }

    /// Starts a scan of `processor`'s journeys, unless one runs, eviction is
    /// off or nothing was applied yet.
    pub fn start(&mut self, processor: &Processor) {
        if self.after.is_zero() || self.scan.is_some() {
            return;
        }
        let Some(cutoff) = processor.eviction_cutoff(self.after) else {
            return;
        };
        let state: Arc<State> = processor.state().clone();
        self.scan = Some(tokio::task::spawn_blocking(move || {
            (cutoff, state.eviction_candidates(cutoff))
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
            Ok((cutoff, listed)) => {
                let evicted = processor.evict_listed(&listed, cutoff);
                metrics.journeys_evicted.inc_by(evicted as u64);
                if evicted > 0 {
                    info!(
                        listed = listed.len(),
                        evicted, "journey detail past its retention dropped"
                    );
                }
            }
            Err(e) => warn!(error = %e, "the eviction scan failed; retrying at the next interval"),
        }
    }
}
