//! `recovery_restart`: a core-only run keeps its `recovery` snapshot
//! (`--keep-snapshot`), and the `onejourney-bench` binary started with
//! `--restore-only` restores it alone, in a process of its own as a
//! restarted engine would, and writes the figure with every profile the
//! first run's snapshot held. No broker.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use onejourney_bench::{run, BenchArgs};
use onejourney_engine::config::Settings;

use common::figure;

fn keeping(out: &Path, keep: PathBuf, profiles: Vec<usize>) -> BenchArgs {
    BenchArgs {
        out: Some(out.to_path_buf()),
        events: 600,
        profiles,
        memory_only: false,
        core_only: true,
        brokers: None,
        state_only: false,
        paced_for: std::time::Duration::from_secs(1),
        scaleout_events: 0,
        scaleout_only: false,
        allocator: "system",
        keep_snapshot: Some(keep),
        restore_only: None,
    }
}

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_onejourney-bench"))
        .args(args)
        .output()
        .unwrap()
}

fn read(out: &Path) -> serde_json::Value {
    let json = serde_json::from_slice(&std::fs::read(out).unwrap()).unwrap();
    std::fs::remove_file(out).unwrap();
    json
}

/// The profile count a figure's note names: "... snapshot with N profiles".
fn profiles_in(note: &str) -> u64 {
    note.split(" snapshot with ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no profile count in {note}"))
}

#[test]
fn a_kept_snapshot_is_restored_by_a_process_of_its_own_with_every_profile() {
    let dir = std::env::temp_dir().join(format!("onejourney-bench-restart-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (snapshot, out) = (dir.join("kept.snapshot"), dir.join("figures.json"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let settings = Settings::defaults().unwrap();

    // Two runs keep to one path: the second's snapshot, and no `.prev` of
    // the first beside it.
    for _ in 0..2 {
        run(&settings, &keeping(&out, snapshot.clone(), vec![300]), &runtime).unwrap();
    }
    let written = figure(&read(&out), "recovery");
    assert!(
        snapshot.is_file(),
        "recovery kept no snapshot at {}",
        snapshot.display()
    );
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("kept.snapshot")]);
    let held = profiles_in(written["note"].as_str().unwrap());
    assert!(held > 300, "the preloaded profiles and the run's own: {written}");

    let restored = bench(&[
        "--restore-only",
        snapshot.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(restored.status.success(), "{restored:?}");
    let json = read(&out);
    let restart = figure(&json, "recovery_restart");
    assert!(restart["value"].as_f64().unwrap() > 0.0, "{restart}");
    assert_eq!(restart["profiles"], held, "{restart}");
    assert_eq!(json["profiles"], serde_json::json!([held]), "{json}");
    assert_eq!(json["figures"].as_array().unwrap().len(), 1, "only the restart: {json}");

    // A snapshot that is not there: an error that names it, and no figure.
    std::fs::remove_file(&snapshot).unwrap();
    let missing = bench(&[
        "--restore-only",
        snapshot.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!missing.status.success() && !out.exists(), "{missing:?}");
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("kept.snapshot"),
        "{missing:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn keep_snapshot_refuses_what_would_leave_no_snapshot_or_the_wrong_one() {
    // With a broker recovery restores the state figures' checkpoint, and
    // --memory-only never writes one: the options conflict.
    for other in [&["--brokers", "localhost:9092"][..], &["--memory-only"]] {
        let refused = bench(&[&["--keep-snapshot", "/nonexistent/kept"][..], other].concat());
        assert_eq!(refused.status.code(), Some(2), "{refused:?}");
        assert!(
            String::from_utf8_lossy(&refused.stderr).contains("cannot be used with"),
            "{refused:?}"
        );
    }
    // Several sizes would each write the one path.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let out = std::env::temp_dir().join(format!("onejourney-bench-sizes-{}.json", std::process::id()));
    let keep = std::env::temp_dir().join(format!("onejourney-bench-sizes-{}.snapshot", std::process::id()));
    let err = run(
        &Settings::defaults().unwrap(),
        &keeping(&out, keep.clone(), vec![100, 200]),
        &runtime,
    )
    .unwrap_err();
    assert!(err.to_string().contains("one --profiles size"), "{err:#}");
    // Called as a library, the conflicts the command line refuses.
    let mut with_broker = keeping(&out, keep.clone(), vec![100]);
    with_broker.brokers = Some("localhost:9092".into());
    let err = run(&Settings::defaults().unwrap(), &with_broker, &runtime).unwrap_err();
    assert!(err.to_string().contains("without --brokers"), "{err:#}");
    assert!(!keep.exists() && !out.exists());
}
