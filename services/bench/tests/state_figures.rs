//! The state figures of issue 14 (`checkpoint_stall_ms`, `restore_local_s`,
//! `restore_changelog_s`, `changelog_bytes_per_1k_events`), measured by
//! `onejourney-bench --state-only` against a real broker with a few
//! preloaded profiles: every one is written to the JSON with a value, the
//! engine checkpointed at least once, and (checked inside the bench, which
//! fails otherwise) the engine restored every profile from its state
//! directory and again from the broker's changelog alone.
//!
//! Needs the broker `make test` starts (`ONEJOURNEY_TEST_BROKERS`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use onejourney_bench::{run, BenchArgs};
use onejourney_engine::config::Settings;

#[test]
fn the_state_figures_are_measured_through_the_engine_and_written_to_the_json() {
    let brokers = std::env::var("ONEJOURNEY_TEST_BROKERS")
        .expect("ONEJOURNEY_TEST_BROKERS is not set: run `make test` (it starts a tansu broker)");
    let out = std::env::temp_dir().join(format!("onejourney-bench-state-{}.json", std::process::id()));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    run(
        &Settings::defaults().unwrap(),
        &BenchArgs {
            out: Some(out.clone()),
            events: 600,
            profiles: vec![300],
            memory_only: false,
            core_only: false,
            brokers: Some(brokers),
            state_only: true,
            paced_for: std::time::Duration::from_secs(1),
            scaleout_events: 0,
            scaleout_only: false,
            // This test binary keeps the system's allocator.
            allocator: "system",
            keep_snapshot: None,
            restore_only: None,
        },
        &runtime,
    )
    .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let _ = std::fs::remove_file(&out);
    // The figures say which allocator and purge setting they ran on.
    assert_eq!(json["allocator"]["name"], "system", "{json}");
    assert!(json["allocator"]["mimalloc_purge_delay_ms"].is_i64(), "{json}");
    let figure = |name: &str| common::figure(&json, name);
    for name in [
        "checkpoint_stall_ms",
        "restore_local_s",
        "restore_changelog_s",
        "changelog_bytes_per_1k_events",
    ] {
        let f = figure(name);
        let v = f["value"]
            .as_f64()
            .unwrap_or_else(|| panic!("{name} has no value: {f}"));
        assert!(v > 0.0, "{name}: {f}");
        assert_eq!(f["profiles"], 300, "{f}");
    }
    let stall = figure("checkpoint_stall_ms");
    let note = stall["note"].as_str().unwrap();
    assert!(!note.contains("engine's 0 checkpoints"), "{note}");
    // The longest stall's barrier captured the journeys the backlog changed.
    let captured: u64 = note
        .split(" changed journeys")
        .next()
        .and_then(|head| head.rsplit('(').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count of changed journeys: {note}"));
    assert!(captured > 0, "{note}");
    // The broker rates were left out (--state-only).
    assert!(figure("echo")["value"].is_null());
}
