//! Logs: text or JSON, filtered by `log.level` or `RUST_LOG`.

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};

pub fn init(s: &LogSettings) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&s.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match s.format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Limits identical warnings (same kind and reason) to a number a minute, so
/// a flood of bad input does not flood the log. What it holds back is counted
/// and summarised in one line when the minute ends.
pub struct WarnLimiter {
    per_minute: u32,
    window_start: std::time::Instant,
    counts: std::collections::HashMap<(&'static str, String), u32>,
    held_back: u64,
}

impl WarnLimiter {
    pub fn new(per_minute: u32) -> Self {
        WarnLimiter {
            per_minute,
            window_start: std::time::Instant::now(),
            counts: std::collections::HashMap::new(),
            held_back: 0,
        }
    }

    /// True when this warning may be logged now.
    pub fn allow(&mut self, kind: &'static str, reason: &str) -> bool {
        self.allow_at(kind, reason, std::time::Instant::now())
    }

    fn allow_at(&mut self, kind: &'static str, reason: &str, now: std::time::Instant) -> bool {
        if now.duration_since(self.window_start) >= std::time::Duration::from_secs(60) {
            if self.held_back > 0 {
                tracing::warn!(
                    held_back = self.held_back,
                    "repeated warnings were not logged in the last minute"
                );
            }
            self.window_start = now;
            self.counts.clear();
            self.held_back = 0;
        }
        let n = self.counts.entry((kind, reason.to_string())).or_insert(0);
        *n += 1;
        if *n <= self.per_minute {
            true
        } else {
            self.held_back += 1;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn identical_warnings_are_limited_per_minute() {
        let mut l = WarnLimiter::new(3);
        let t0 = Instant::now();
        let allowed = (0..10).filter(|_| l.allow_at("dlq", "schema", t0)).count();
        assert_eq!(allowed, 3);
        assert!(
            l.allow_at("dlq", "invalid_json", t0),
            "another reason has its own budget"
        );
        assert_eq!(l.held_back, 7);
        assert!(
            l.allow_at("dlq", "schema", t0 + Duration::from_secs(61)),
            "a new minute"
        );
        assert_eq!(l.held_back, 0);
    }
}
