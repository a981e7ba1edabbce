//! Liveness and readiness, shared by the pipeline and the HTTP server.
//!
//! In: heartbeats from the poll loop and from the long phases before it
//! ([`Phase`]: waiting for the broker or a topic, restoring a snapshot,
//! reading back outputs), and the pipeline's and the Kafka edge's facts.
//! Out: `alive` (`/healthz`) and `ready` (`/readyz`). Keeps the last
//! heartbeat and the facts readiness is made of.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::info;

/// The loop is wedged when its heartbeat is older than this (the default
/// of `http.liveness_timeout`).
pub const WEDGED_AFTER: Duration = Duration::from_secs(60);

/// How often a long phase logs its progress.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(5);

pub struct Health {
    start: Instant,
    wedged_after: Duration,
    heartbeat_ms: AtomicU64,
    assigned: AtomicBool,
    restored: AtomicBool,
    connected: AtomicBool,
    within_budget: AtomicBool,
    stopping: AtomicBool,
    /// Assignments the Kafka edge has announced that the poll loop has not
    /// settled yet (applied, and with scale-out its state partitions
    /// restored). Counted up in the rebalance callback before the
    /// assignment counts as held, down after the loop settled it: a process
    /// is never ready between the broker's assignment and its restore.
    unsettled: AtomicU64,
}

impl Default for Health {
    fn default() -> Self {
        Health::new(WEDGED_AFTER)
    }
}

impl Health {
    /// Not alive once no heartbeat came for `wedged_after`.
    pub fn new(wedged_after: Duration) -> Self {
        Health {
            start: Instant::now(),
            wedged_after,
            heartbeat_ms: AtomicU64::new(0),
            assigned: AtomicBool::new(false),
            restored: AtomicBool::new(false),
            connected: AtomicBool::new(true),
            within_budget: AtomicBool::new(true),
            stopping: AtomicBool::new(false),
            unsettled: AtomicU64::new(0),
        }
    }

    /// Called by the ingest loop at least once a second, and by long phases
    /// as they make progress.
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

    /// The Kafka edge is about to hand the poll loop an assignment.
    pub fn assignment_coming(&self) {
        self.unsettled.fetch_add(1, Ordering::AcqRel);
    }

    /// The poll loop settled `n` assignments it took from the edge.
    pub fn assignments_settled(&self, n: u64) {
        let _ = self
            .unsettled
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| Some(u.saturating_sub(n)));
    }

    /// The poll loop read the whole assignment from the consumer itself (the
    /// edge could not send one): every assignment so far is settled.
    pub fn all_assignments_settled(&self) {
        self.unsettled.store(0, Ordering::Release);
    }

    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// Alive: the ingest loop has beaten recently (or has not started yet).
    pub fn alive(&self) -> bool {
        let last = Duration::from_millis(self.heartbeat_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last) < self.wedged_after
    }

    /// Ready: state restored, partitions assigned and every assignment
    /// settled, a broker reachable, state within its memory budget, not
    /// shutting down.
    pub fn ready(&self) -> bool {
        self.assigned.load(Ordering::Relaxed)
            && self.unsettled.load(Ordering::Acquire) == 0
            && self.restored.load(Ordering::Relaxed)
            && self.connected.load(Ordering::Relaxed)
            && self.within_budget.load(Ordering::Relaxed)
            && !self.stopping.load(Ordering::Relaxed)
            && self.alive()
    }
}

/// A long phase outside the poll loop: it keeps the process alive while it
/// makes progress, and logs a line at its start, its progress every
/// [`PROGRESS_EVERY`], and a line at its end.
pub struct Phase {
    health: Arc<Health>,
    name: &'static str,
    started: Instant,
    logged: Instant,
}

impl Phase {
    pub fn start(health: &Arc<Health>, name: &'static str) -> Phase {
        info!(phase = name, "starting");
        health.beat();
        let now = Instant::now();
        Phase {
            health: health.clone(),
            name,
            started: now,
            logged: now,
        }
    }

    /// `done` units of work so far: a heartbeat, and a log line now and then.
    pub fn progress(&mut self, done: u64, unit: &'static str) {
        self.health.beat();
        if self.logged.elapsed() >= PROGRESS_EVERY {
            self.logged = Instant::now();
            info!(
                phase = self.name,
                done,
                unit,
                seconds = self.started.elapsed().as_secs(),
                "in progress"
            );
        }
    }

    pub fn done(self, done: u64, unit: &'static str) {
        self.health.beat();
        info!(
            phase = self.name,
            done,
            unit,
            seconds = self.started.elapsed().as_secs_f64(),
            "done"
        );
    }
}

/// Runs a phase that waits for something outside (a broker, a topic) and
/// cannot report progress itself: alive while it waits, as the wait is the
/// expected state; a progress line every [`PROGRESS_EVERY`].
pub async fn waiting<T>(health: &Arc<Health>, name: &'static str, fut: impl Future<Output = T>) -> T {
    let mut phase = Phase::start(health, name);
    // Well within the liveness window, however short it is configured.
    let mut beat = tokio::time::interval((health.wedged_after / 4).min(Duration::from_secs(1)));
    let mut fut = std::pin::pin!(fut);
    let out = loop {
        tokio::select! {
            out = &mut fut => break out,
            _ = beat.tick() => phase.progress(phase.started.elapsed().as_secs(), "seconds"),
        }
    };
    let seconds = phase.started.elapsed().as_secs();
    phase.done(seconds, "seconds");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_long_phase_keeps_the_process_alive_and_a_silent_one_does_not() {
        let window = Duration::from_millis(300);
        let health = Arc::new(Health::new(window));
        // Waiting for a broker or a topic, three windows long.
        let checks = waiting(&health, "waiting for a topic", async {
            let mut alive = Vec::new();
            for _ in 0..12 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                alive.push(health.alive());
            }
            alive
        })
        .await;
        assert!(checks.iter().all(|a| *a), "{checks:?}");
        // A phase that reports its progress (a snapshot read chunk by chunk).
        let mut phase = Phase::start(&health, "restoring");
        for chunk in 0..12 {
            std::thread::sleep(Duration::from_millis(100));
            phase.progress(chunk, "chunks");
            assert!(health.alive(), "chunk {chunk}");
        }
        phase.done(12, "chunks");
        // Nothing beats: not alive once the window has passed.
        std::thread::sleep(window + Duration::from_millis(100));
        assert!(!health.alive());
    }

    #[test]
    fn not_ready_between_an_assignment_and_its_settling() {
        let health = Health::default();
        health.beat();
        health.set_restored(true);
        health.set_assigned(true);
        assert!(health.ready());
        // The rebalance callback: counted before the partitions count as held.
        health.assignment_coming();
        health.assignment_coming();
        assert!(!health.ready(), "an assignment the poll loop has not settled");
        health.assignments_settled(1);
        assert!(!health.ready(), "one of two settled");
        health.assignments_settled(5);
        assert!(health.ready(), "settling more than came saturates");
        health.assignment_coming();
        health.all_assignments_settled();
        assert!(health.ready(), "the loop read the whole assignment itself");
    }
}
