//! End-to-end: what ops rely on. A real Prometheus server scrapes the engine
//! during a simulator run; the lookup API's guards answer as documented.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use onejourney_e2e::{create_topics, http_client, settings, TestEngine, INPUT_PARTITIONS};
use onejourney_simulator::{generate, SimConfig};
use serde_json::Value;

/// Kills the Prometheus server when the test ends, however it ends.
struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

async fn query(client: &reqwest::Client, prom: &str, q: &str) -> Option<f64> {
    let r = client
        .get(format!("http://{prom}/api/v1/query"))
        .query(&[("query", q)])
        .send()
        .await
        .ok()?;
    let v: Value = r.json().await.ok()?;
    v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_throughput_and_lag_during_a_simulator_run() {
    let mut s = settings("prom");
    s.kafka.client.insert("statistics.interval.ms".into(), "500".into());
    let mut e = TestEngine::start(s).await;
    let t = e.topics.clone();

    let dir = std::env::temp_dir().join(format!("oj-prom-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let prom_addr = format!("127.0.0.1:{port}");
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: onejourney\n    static_configs:\n      - targets: [\"{}\"]\n",
            e.http
        ),
    )
    .unwrap();
    let _prom = Prometheus(
        Command::new("prometheus")
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={prom_addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("`prometheus` on PATH: `make test` installs it (Debian package prometheus)"),
    );
    let client = http_client();
    let deadline = Instant::now() + Duration::from_secs(60);
    while query(&client, &prom_addr, "up{job=\"onejourney\"}").await != Some(1.0) {
        assert!(Instant::now() < deadline, "Prometheus never scraped the engine");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // A burst of simulated traffic, faster than the engine drains it.
    let sim = generate(&SimConfig {
        customers: 1500,
        seed: 11,
        ..SimConfig::default()
    });
    create_topics(
        &[
            &t.web_clicks,
            &t.pos_transactions,
            &t.app_sessions,
            &t.call_center_events,
        ],
        INPUT_PARTITIONS,
    )
    .await;
    e.publish_sim(&sim.events).await;
    let total = sim.events.len() as f64;

    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut consumed, mut lag) = (0.0, 0.0);
    while Instant::now() < deadline && (consumed < total || lag <= 0.0) {
        consumed = query(&client, &prom_addr, "sum(onejourney_events_consumed_total)")
            .await
            .unwrap_or(0.0);
        lag = query(
            &client,
            &prom_addr,
            "max(max_over_time(onejourney_consumer_lag_messages[10m]))",
        )
        .await
        .unwrap_or(0.0);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(consumed, total, "Prometheus saw every event consumed");
    assert!(lag > 0.0, "Prometheus saw a non-zero consumer lag");
    let rate = query(
        &client,
        &prom_addr,
        "sum(rate(onejourney_events_consumed_total{channel=\"web\"}[1m]))",
    )
    .await
    .unwrap_or(0.0);
    assert!(rate > 0.0, "events/s by channel");
    e.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lookup_api_requires_its_token_and_rejects_malformed_requests() {
    let mut s = settings("guard");
    s.http.bearer_token = "s3cret-token".into();
    let mut e = TestEngine::start(s).await;
    let client = http_client();
    let url = |p: &str| format!("http://{}{p}", e.http);
    let status = |r: reqwest::Response| r.status().as_u16();

    let no_token = client.get(url("/v1/profiles/customer_id/C-1")).send().await.unwrap();
    assert_eq!(status(no_token), 401);
    let wrong = client
        .get(url("/v1/profiles/customer_id/C-1"))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(status(wrong), 401);
    let ok = client
        .get(url("/v1/profiles/customer_id/C-1"))
        .bearer_auth("s3cret-token")
        .send()
        .await
        .unwrap();
    assert_eq!(status(ok), 404, "authorised, and the customer is unknown");
    let unknown_ns = client
        .get(url("/v1/profiles/ssn/1"))
        .bearer_auth("s3cret-token")
        .send()
        .await
        .unwrap();
    assert_eq!(status(unknown_ns), 400);
    let long = client
        .get(url(&format!("/v1/profiles/cookie_id/{}", "x".repeat(300))))
        .bearer_auth("s3cret-token")
        .send()
        .await
        .unwrap();
    assert_eq!(status(long), 400);
    let malformed = client.get(url("/v1/profiles/cookie_id")).send().await.unwrap();
    assert_eq!(status(malformed), 404);
    let body: Value = client.get(url("/nowhere")).send().await.unwrap().json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("/v1/profiles"));
    let post = client
        .post(url("/v1/profiles/cookie_id/c"))
        .bearer_auth("s3cret-token")
        .send()
        .await
        .unwrap();
    assert_eq!(status(post), 405);
    // Ops endpoints stay open.
    assert_eq!(e.get_status("/metrics").await, 200);
    assert_eq!(e.get_status("/readyz").await, 200);
    e.stop().await;
}
