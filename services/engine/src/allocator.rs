//! The allocator's one setting that the binaries cannot make themselves:
//! when mimalloc gives freed memory back to the OS.
//!
//! mimalloc (the global allocator of `onejourney` and `onejourney-bench`)
//! returns memory that stayed free for its `purge_delay` (1,000 ms by
//! default) to the OS, and the kernel maps and zeroes it again on the next
//! touch. The writer frees and allocates all the time (events, decisions,
//! the checkpoints' records), so with the default about a third of its
//! samples were in page faults at 1M profiles (`perf`, session 36); with
//! `MIMALLOC_PURGE_DELAY=-1` (never purge) the 1M core run's faults went
//! from 0.30-0.35 an event to under 0.005, and its stitch + journey +
//! decide ran faster in all five alternated pairs (+5% to +25% in four,
//! +67% in one whose base run met a slow machine), at 5% more resident
//! memory (`docs/benchmarks.md`, session 36). A 10-s delay gained nothing
//! clear.
//!
//! mimalloc reads its options from the environment when the process starts,
//! before `main`; setting one from `main` would need `unsafe` FFI, which the
//! workspace forbids. So the launchers set the variable (the Makefile, the
//! Dockerfile, the Kubernetes manifest) and the binaries say at start which
//! setting they run with ([`report`]).
//!
//! In: the environment's value. Out: the delay mimalloc applies
//! ([`purge_delay_ms`]) and a log line. Keeps nothing. Not mirrored:
//! mimalloc cuts a value at 64 characters, and multiplies the delay by
//! `MIMALLOC_ARENA_PURGE_MULT` (1 by default) for its arenas.

use tracing::{info, warn};

/// The variable mimalloc reads (its name matched without regard to case).
pub const PURGE_DELAY_VAR: &str = "MIMALLOC_PURGE_DELAY";

/// The variable's older name, which mimalloc still reads when the new one
/// is not set.
const LEGACY_VAR: &str = "MIMALLOC_RESET_DELAY";

/// What the launchers set: never give freed memory back.
pub const RECOMMENDED: &str = "-1";

/// mimalloc's own default, in milliseconds.
pub const DEFAULT_MS: i64 = 1_000;

/// The purge delay mimalloc applies, in milliseconds (negative: never),
/// for the variable's value `value` (`None`: not set), parsed as mimalloc
/// parses it: empty, `1`, `true`, `yes` or `on` is 1; `0`, `false`, `no`
/// or `off` is 0; otherwise a whole number, or the default when it is not
/// one.
pub fn purge_delay_ms(value: Option<&str>) -> i64 {
    let Some(value) = value else {
        return DEFAULT_MS;
    };
    match value.to_ascii_uppercase().as_str() {
        "" | "1" | "TRUE" | "YES" | "ON" => 1,
        "0" | "FALSE" | "NO" | "OFF" => 0,
        other => strtol(other).unwrap_or(DEFAULT_MS),
    }
}

/// A whole number as C's `strtol` reads all of `s` (base 10, `long` of 64
/// bits): C white space skipped in front, one sign, digits to the end, a
/// number too large saturated; `None` when anything else is left.
fn strtol(s: &str) -> Option<i64> {
    let s = s.trim_start_matches([' ', '\t', '\n', '\u{0b}', '\u{0c}', '\r']);
    let (negative, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let magnitude = digits.parse::<i128>().unwrap_or(i128::MAX);
    let value = if negative { -magnitude } else { magnitude };
    Some(i64::try_from(value).unwrap_or(if negative { i64::MIN } else { i64::MAX }))
}

/// The variable's value in this process's environment.
fn from_env() -> Option<String> {
    let find = |name: &str| {
        std::env::vars_os()
            .find(|(k, _)| k.to_str().is_some_and(|k| k.eq_ignore_ascii_case(name)))
            .map(|(_, v)| v.to_string_lossy().into_owned())
    };
    find(PURGE_DELAY_VAR).or_else(|| find(LEGACY_VAR))
}

/// The purge delay this process runs with, in milliseconds (negative:
/// never).
pub fn configured_ms() -> i64 {
    purge_delay_ms(from_env().as_deref())
}

/// Logs the purge delay this process runs with: a warning when freed
/// memory goes back to the OS (the slow setting), an info line otherwise.
pub fn report() {
    let set = from_env();
    let delay = purge_delay_ms(set.as_deref());
    if delay < 0 {
        info!(
            purge_delay = %set.as_deref().unwrap_or_default(),
            "mimalloc keeps freed memory for reuse ({PURGE_DELAY_VAR})"
        );
    } else {
        warn!(
            purge_delay_ms = delay,
            "mimalloc gives memory free for {delay} ms back to the OS and faults it in again: \
             the writer ran 5-20% slower so (docs/benchmarks.md, session 36); \
             start with {PURGE_DELAY_VAR}={RECOMMENDED}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_is_mimallocs_default() {
        assert_eq!(purge_delay_ms(None), DEFAULT_MS);
    }

    #[test]
    fn the_recommended_value_never_purges() {
        assert!(purge_delay_ms(Some(RECOMMENDED)) < 0);
        assert_eq!(purge_delay_ms(Some(" -1")), -1);
    }

    #[test]
    fn words_and_numbers_parse_as_mimalloc_parses_them() {
        assert_eq!(purge_delay_ms(Some("")), 1);
        assert_eq!(purge_delay_ms(Some("on")), 1);
        assert_eq!(purge_delay_ms(Some("Yes")), 1);
        assert_eq!(purge_delay_ms(Some("off")), 0);
        assert_eq!(purge_delay_ms(Some("0")), 0);
        assert_eq!(purge_delay_ms(Some("250")), 250);
        assert_eq!(purge_delay_ms(Some("+10000")), 10_000);
    }

    #[test]
    fn what_is_not_a_number_leaves_the_default() {
        assert_eq!(purge_delay_ms(Some("never")), DEFAULT_MS);
        assert_eq!(purge_delay_ms(Some("-1ms")), DEFAULT_MS);
        assert_eq!(purge_delay_ms(Some("-1 ")), DEFAULT_MS);
        assert_eq!(purge_delay_ms(Some("-")), DEFAULT_MS);
        assert_eq!(purge_delay_ms(Some("\u{a0}-1")), DEFAULT_MS, "not C white space");
    }

    #[test]
    fn a_number_too_large_saturates_as_strtol_does() {
        assert_eq!(purge_delay_ms(Some("-99999999999999999999")), i64::MIN);
        assert_eq!(
            purge_delay_ms(Some("99999999999999999999999999999999999999999")),
            i64::MAX
        );
        assert_eq!(purge_delay_ms(Some("\t\u{0b}-5")), -5);
    }
}
