//! The engine as a separate process (`onejourney run`), for tests that kill
//! it, restart it, or look at how it exits.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The engine binary, brought up to date first: `cargo test` builds it only
/// for the engine's own integration tests, so a binary left in `target/` can
/// be older than the code under test (it is a no-op when it is current).
pub fn engine_binary() -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let ok = Command::new(env!("CARGO"))
        .args(["build", "-p", "onejourney-engine", "--bin", "onejourney"])
        .status()
        .unwrap()
        .success();
    assert!(ok, "building the engine binary");
    target.join("debug/onejourney")
}

/// The engine as a separate process, to `kill -9`.
pub struct EngineProcess {
    child: Child,
    http: String,
    client: reqwest::Client,
}

impl EngineProcess {
    /// `onejourney run --config CONFIG --http-addr 127.0.0.1:PORT`, its
    /// output appended to `log`.
    pub fn spawn(config: &Path, http_port: u16, log: &Path) -> EngineProcess {
        Self::spawn_with(config, http_port, log, &[], &[])
    }

    /// As [`EngineProcess::spawn`], with more arguments and environment variables.
    pub fn spawn_with(config: &Path, http_port: u16, log: &Path, args: &[&str], env: &[(&str, &str)]) -> EngineProcess {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        let child = Command::new(engine_binary())
            .args(["run", "--config"])
            .arg(config)
            .args(["--http-addr", &format!("127.0.0.1:{http_port}")])
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        EngineProcess {
            child,
            http: format!("http://127.0.0.1:{http_port}"),
            client: crate::http_client(),
        }
    }

    pub async fn status(&self, path: &str) -> Option<u16> {
        let r = self.client.get(format!("{}{path}", self.http)).send().await.ok()?;
        Some(r.status().as_u16())
    }

    pub async fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        let r = self.client.get(format!("{}{path}", self.http)).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    pub async fn ready(&self) -> bool {
        self.status("/readyz").await == Some(200)
    }

    pub async fn wait_ready(&self, timeout: Duration) -> Duration {
        let started = Instant::now();
        while !self.ready().await {
            assert!(started.elapsed() < timeout, "not ready within {timeout:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        started.elapsed()
    }

    /// The sum of every sample of a metric family.
    pub async fn metric(&self, family: &str) -> f64 {
        let Ok(r) = self.client.get(format!("{}/metrics", self.http)).send().await else {
            return 0.0;
        };
        let text = r.text().await.unwrap_or_default();
        text.lines()
            .filter(|l| l.starts_with(family) && l[family.len()..].starts_with(['{', ' ']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// One sample line's value, e.g. `name{label="x"}`.
    pub async fn sample(&self, sample: &str) -> f64 {
        let Ok(r) = self.client.get(format!("{}/metrics", self.http)).send().await else {
            return 0.0;
        };
        let text = r.text().await.unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix(sample).and_then(|rest| rest.trim().parse::<f64>().ok()))
            .unwrap_or(0.0)
    }

    /// Waits for the process to exit on its own within `timeout`.
    pub async fn exited(mut self, timeout: Duration) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if started.elapsed() > timeout {
                self.child.kill().unwrap();
                panic!("still running after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn kill_9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, and a graceful stop.
    pub fn terminate(mut self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
        let status = self.child.wait().unwrap();
        assert!(status.success(), "graceful stop: {status}");
    }
}
