//! The server on real sockets: slow and idle clients are cut off, the
//! connection limit holds and frees, a slow request gets 503, and a metrics
//! scrape answers while the identity writer lock is held.
//!
//! Every wait has a generous deadline: these tests check that something
//! happens (or cannot happen while a condition holds), not how fast.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::Limits;
use crate::config::Settings;
use crate::health::Health;
use crate::http::{serve, ui, HttpState};
use crate::metrics::Metrics;
use onejourney_core::State;

/// How long a test waits for something that must happen.
const DEADLINE: Duration = Duration::from_secs(30);

struct Server {
    addr: SocketAddr,
    state: Arc<State>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn limits() -> Limits {
    Limits {
        header_read_timeout: Duration::from_secs(60),
        request_timeout: Duration::from_secs(60),
        keep_alive: true,
        max_connections: 16,
    }
}

async fn start(limits: Limits) -> Server {
    let settings = Settings::defaults().unwrap();
    let state = Arc::new(State::new(settings.namespaces().unwrap()));
    let metrics = Arc::new(Metrics::new(&settings.decide).unwrap());
    let s = HttpState {
        metrics: metrics.clone(),
        health: Arc::new(Health::new(Duration::from_secs(60))),
        state: state.clone(),
        bearer_token: Arc::from(""),
        erase_tokens: Arc::from(Vec::new()),
        lookups: Arc::new(tokio::sync::Semaphore::new(8)),
        control: None,
        timers: ui::TimerDelays::of(&settings.decide),
        decide: Arc::new(settings.decide.clone()),
        owners: None,
    };
    let cancel = CancellationToken::new();
    let (addr, _) = serve("127.0.0.1:0".parse().unwrap(), s, limits, cancel.clone())
        .await
        .unwrap();
    Server {
        addr,
        state,
        metrics,
        cancel,
    }
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n")
}

/// The response in `buf` once it is complete (head and a `Content-Length` body).
fn complete(buf: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(buf).to_string();
    let end = text.find("\r\n\r\n")?;
    let length = text[..end]
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_string())
        })
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    (buf.len() >= end + 4 + length).then_some(text)
}

/// Reads one response off a kept-alive connection; `None` if the connection
/// closed first.
async fn response(c: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(r) = complete(&buf) {
            return Some(r);
        }
        let n = c.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A GET on a plain blocking socket with its own read deadline, so the
/// deadline holds even if every runtime worker is stuck; `None` on timeout.
fn blocking_get(addr: SocketAddr, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(addr).ok()?;
    c.set_read_timeout(Some(DEADLINE)).ok()?;
    c.write_all(get(path).as_bytes()).ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(r) = complete(&buf) {
            return Some(r);
        }
        let n = c.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Reads until the server closes the connection; what it sent meanwhile.
async fn until_closed(c: &mut TcpStream) -> String {
    let mut all = Vec::new();
    let read = tokio::time::timeout(DEADLINE, c.read_to_end(&mut all)).await;
    assert!(
        read.is_ok(),
        "the server did not close the connection within {DEADLINE:?}"
    );
    String::from_utf8_lossy(&all).to_string()
}

#[tokio::test]
async fn a_half_sent_request_line_is_closed_after_the_header_timeout() {
    let s = start(Limits {
        header_read_timeout: Duration::from_millis(300),
        ..limits()
    })
    .await;
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    c.write_all(b"GET /metr").await.unwrap();
    let sent = until_closed(&mut c).await;
    assert!(
        sent.is_empty() || sent.starts_with("HTTP/1.1 408"),
        "nothing or a 408 before closing: {sent}"
    );
    assert_eq!(s.metrics.http_header_timeouts.get(), 1);

    // A connection that sends nothing at all goes the same way.
    let mut silent = TcpStream::connect(s.addr).await.unwrap();
    until_closed(&mut silent).await;
}

#[tokio::test]
async fn a_kept_alive_connection_left_idle_is_closed_after_the_header_timeout() {
    let s = start(Limits {
        header_read_timeout: Duration::from_millis(300),
        ..limits()
    })
    .await;
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    for _ in 0..2 {
        c.write_all(get("/healthz").as_bytes()).await.unwrap();
        let r = response(&mut c).await.expect("a response");
        assert!(r.starts_with("HTTP/1.1 "), "{r}");
    }
    until_closed(&mut c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_max_connections_a_connection_waits_until_one_closes() {
    let s = start(Limits {
        max_connections: 2,
        ..limits()
    })
    .await;
    // Two connections, each served once and left open.
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut c = TcpStream::connect(s.addr).await.unwrap();
        c.write_all(get("/healthz").as_bytes()).await.unwrap();
        assert!(response(&mut c).await.is_some());
        open.push(c);
    }
    assert_eq!(s.metrics.http_connections.get(), 2);

    // The third connects (the kernel queues it) but is not served...
    let mut third = TcpStream::connect(s.addr).await.unwrap();
    third.write_all(get("/metrics").as_bytes()).await.unwrap();
    let early = tokio::time::timeout(Duration::from_millis(500), response(&mut third)).await;
    assert!(early.is_err(), "served beyond the limit: {early:?}");
    assert_eq!(s.metrics.http_connections.get(), 2);

    // ...until one of the two closes.
    drop(open.remove(0));
    let r = tokio::time::timeout(DEADLINE, response(&mut third))
        .await
        .expect("served once a connection closed")
        .expect("a response");
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.contains("onejourney_http_connections 2"), "{r}");

    // The one still open keeps working.
    open[0].write_all(get("/v1/openapi.json").as_bytes()).await.unwrap();
    let r = response(&mut open[0]).await.expect("a response");
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
}

#[tokio::test]
async fn a_request_without_a_response_in_time_gets_503() {
    let s = start(Limits {
        request_timeout: Duration::from_millis(300),
        ..limits()
    })
    .await;
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    // The head promises a body that never comes.
    c.write_all(
        b"POST /v1/profiles/lookup HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"namespace\"",
    )
    .await
    .unwrap();
    let r = tokio::time::timeout(DEADLINE, response(&mut c))
        .await
        .expect("answered within the deadline")
        .expect("a response");
    assert!(r.starts_with("HTTP/1.1 503"), "{r}");
    assert!(
        r.contains(r#"{"error":"no response within http.request_timeout; retry"}"#),
        "{r}"
    );
}

#[tokio::test]
async fn the_api_and_the_page_answer_on_one_kept_alive_connection() {
    let s = start(limits()).await;
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    for (path, status) in [
        ("/healthz", "200"),
        ("/ui", "200"),
        ("/v1/openapi.json", "200"),
        ("/v1/profiles/customer_id/C1", "404"),
        ("/metrics", "200"),
    ] {
        c.write_all(get(path).as_bytes()).await.unwrap();
        let r = response(&mut c).await.expect("a response");
        assert!(r.starts_with(&format!("HTTP/1.1 {status}")), "{path}: {r}");
    }
}

/// The scrape reads sizes the writer keeps: it answers while the identity
/// writer lock is held (here by a snapshot being written), where it used to
/// wait for the lock to walk the graph.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metrics_scrape_answers_while_the_identity_writer_lock_is_held() {
    let s = start(limits()).await;
    let decoder = onejourney_core::Decoder::new(s.state.identity.namespaces().clone(), 1 << 20).unwrap();
    for i in 0..5 {
        let json = format!(
            r#"{{"event_id":"w{i}","event_type":"page_view","occurred_at":"2026-11-01T10:0{i}:00Z","identifiers":{{"cookie_id":"k{i}","customer_id":"C{i}"}},"session_id":"s"}}"#
        );
        let ev = decoder.decode(onejourney_core::Channel::Web, json.as_bytes()).unwrap();
        s.state.identity.stitch(&ev).unwrap();
    }
    let walked = s.state.recount();
    let snapshot = s.state.identity.snapshot();
    let addr = s.addr;
    let r = std::thread::spawn(move || blocking_get(addr, "/metrics")).join();
    drop(snapshot);
    let r = r.unwrap().expect("the scrape answered while the lock was held");
    assert!(r.contains("onejourney_profiles 5\n"), "{r}");
    assert!(r.contains("onejourney_identifiers 10\n"), "{r}");
    assert!(
        r.contains(&format!("onejourney_state_memory_bytes {}\n", walked.bytes)),
        "{r}"
    );
}
