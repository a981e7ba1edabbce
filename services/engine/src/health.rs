//! Liveness and readiness, shared by the pipeline and the HTTP server.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The loop is wedged when its heartbeat is older than this.
pub const WEDGED_AFTER: Duration = Duration::from_secs(60);

pub struct Health {
    start: Instant,
    heartbeat_ms: AtomicU64,
    assigned: AtomicBool,
    restored: AtomicBool,
    connected: AtomicBool,
    within_budget: AtomicBool,
    stopping: AtomicBool,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            start: Instant::now(),
            heartbeat_ms: AtomicU64::new(0),
            assigned: AtomicBool::new(false),
            restored: AtomicBool::new(false),
            connected: AtomicBool::new(true),
            within_budget: AtomicBool::new(true),
            stopping: AtomicBool::new(false),
        }
    }
}

impl Health {
    /// Called by the ingest loop at least once a second.
    pub fn beat(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.heartbeat_ms.store(ms, Ordering::Relaxed);
    }

    pub fn set_assigned(&self, v: bool) {
        self.assigned.store(v, Ordering::Relaxed);
    }

    pub fn set_restored(&self, v: bool) {
        self.restored.store(v, Ordering::Relaxed);
    }

    /// False while no broker is reachable.
    pub fn set_connected(&self, v: bool) {
        self.connected.store(v, Ordering::Relaxed);
    }

    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// False while the state is over its memory budget (consuming paused).
    pub fn set_within_budget(&self, v: bool) {
        self.within_budget.store(v, Ordering::Relaxed);
    }

    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// Alive: the ingest loop has beaten recently (or has not started yet).
    pub fn alive(&self) -> bool {
        let last = Duration::from_millis(self.heartbeat_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last) < WEDGED_AFTER
    }

    /// Ready: state restored, partitions assigned, a broker reachable, state
    /// within its memory budget, not shutting down.
    pub fn ready(&self) -> bool {
        self.assigned.load(Ordering::Relaxed)
            && self.restored.load(Ordering::Relaxed)
            && self.connected.load(Ordering::Relaxed)
            && self.within_budget.load(Ordering::Relaxed)
            && !self.stopping.load(Ordering::Relaxed)
            && self.alive()
    }
}
