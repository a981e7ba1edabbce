//! The engine's wall clock, read at the edge (the core has none) and the
//! one place it is read from: in, nothing; out, the time now in
//! milliseconds since the Unix epoch (0 before it, saturated past u64).
//! Keeps nothing.

/// Wall-clock time in ms since the epoch.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
