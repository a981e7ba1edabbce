//! `make run` promise: the embedded demo prints decisions soon after start,
//! and SIGTERM stops it cleanly.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

#[test]
fn the_demo_prints_decisions_and_stops_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_onejourney-demo"))
        .args(["--customers", "60", "--rate", "1000", "--http-addr", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("demo starts");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    let (mut actions, mut churn, mut lines) = (0, 0, Vec::new());
    while Instant::now() < deadline && (actions < 5 || churn < 1) {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            actions += usize::from(line.contains(" ACTION "));
            churn += usize::from(line.contains(" CHURN "));
            lines.push(line);
        }
    }
    let pid = child.id().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
    assert!(sent.success());
    let stop_deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break Some(s);
        }
        if Instant::now() > stop_deadline {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(actions >= 5, "decisions printed: {actions}\n{}", lines.join("\n"));
    assert!(churn >= 1, "churn changes printed: {churn}\n{}", lines.join("\n"));
    assert!(lines.iter().any(|l| l.contains("/metrics")), "prints where metrics are");
    let status = status.expect("the demo stops within 60 s of SIGTERM");
    assert!(status.success(), "clean exit: {status:?}");
}
