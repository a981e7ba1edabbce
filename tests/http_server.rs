//! End-to-end: the running engine's HTTP port against slow, idle and too
//! many clients, and `/metrics` while the identity writer lock is held.
//!
//! Every wait has a generous deadline: these tests check that something
//! happens (or cannot happen while a condition holds), not how fast.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use onejourney_e2e::{settings, TestEngine};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DEADLINE: Duration = Duration::from_secs(60);

fn web(id: &str, minute: i64, ids: Value) -> Value {
    json!({"event_id": id, "event_type": "page_view",
        "occurred_at": onejourney_simulator::rfc3339(1_793_491_200_000 + minute * 60_000),
        "identifiers": ids, "session_id": "s-1"})
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

/// One response off a kept-alive connection; `None` if the connection
/// closed first.
async fn response(c: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
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
/// deadline holds even if the engine's workers are stuck; `None` on timeout.
fn blocking_get(addr: std::net::SocketAddr, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(addr).ok()?;
    c.set_read_timeout(Some(DEADLINE)).ok()?;
    c.write_all(get(path).as_bytes()).ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_is_cut_off_and_the_api_and_page_keep_working() {
    let mut s = settings("http-slow");
    s.http.header_read_timeout = Duration::from_secs(1);
    let mut e = TestEngine::start(s).await;

    let mut slow = TcpStream::connect(e.http).await.unwrap();
    slow.write_all(b"GET /v1/profiles/cust").await.unwrap();
    let mut sent = Vec::new();
    let closed = tokio::time::timeout(DEADLINE, slow.read_to_end(&mut sent)).await;
    assert!(
        closed.is_ok(),
        "a half-sent request line held its connection past {DEADLINE:?}"
    );

    e.produce_json(
        &e.topics.web_clicks.clone(),
        &web("w1", 0, json!({"customer_id": "C-7"})),
    )
    .await;
    e.eventually("stitched", DEADLINE, |st| st.identity.profile_count() == 1)
        .await;
    let (status, body) = e.get_json("/v1/profiles/customer_id/C-7").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(e.get_status("/ui").await, 200);
    assert!(e.metric("onejourney_http_header_timeouts_total").await >= 1.0);
    e.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_connection_limit_a_client_waits_until_one_closes() {
    const LIMIT: i64 = 3;
    let mut s = settings("http-limit");
    s.http.max_connections = LIMIT as usize;
    s.http.header_read_timeout = Duration::from_secs(120);
    let mut e = TestEngine::start(s).await;
    let open_now = || e.engine.as_ref().unwrap().metrics.http_connections.get();

    // Served once and left open until every slot is taken (the harness's
    // own client may hold one).
    let mut open = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    while open_now() < LIMIT {
        assert!(Instant::now() < deadline, "could not fill the slots");
        let mut c = TcpStream::connect(e.http).await.unwrap();
        c.write_all(get("/healthz").as_bytes()).await.unwrap();
        assert!(response(&mut c).await.is_some());
        open.push(c);
    }

    let mut waiting = TcpStream::connect(e.http).await.unwrap();
    waiting.write_all(get("/v1/openapi.json").as_bytes()).await.unwrap();
    let early = tokio::time::timeout(Duration::from_millis(500), response(&mut waiting)).await;
    assert!(early.is_err(), "served beyond the limit");
    assert_eq!(open_now(), LIMIT);

    drop(open.pop());
    let r = tokio::time::timeout(DEADLINE, response(&mut waiting))
        .await
        .expect("served once a connection closed")
        .expect("a response");
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    drop(open);
    e.stop().await;
}

/// `/metrics` reads the sizes the core keeps: it answers while a snapshot
/// (or anything else) holds the identity writer lock, and its numbers are
/// those of a full walk of the state.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scrape_answers_while_the_identity_lock_is_held_and_counts_like_a_walk() {
    let mut e = TestEngine::start(settings("http-metrics")).await;
    let web_clicks = e.topics.web_clicks.clone();
    // Four profiles, then two merges and a shared cookie's worth of links.
    for (i, ids) in [
        json!({"cookie_id": "k1"}),
        json!({"cookie_id": "k2"}),
        json!({"email": "a@x.io"}),
        json!({"customer_id": "C-1"}),
        json!({"cookie_id": "k1", "email": "a@x.io"}),
        json!({"cookie_id": "k2", "customer_id": "C-1"}),
    ]
    .into_iter()
    .enumerate()
    {
        e.produce_keyed(&web_clicks, "one-partition", &web(&format!("w{i}"), i as i64, ids))
            .await;
    }
    e.wait_applied(6, DEADLINE).await;
    let walked = e.state().recount();
    assert_eq!((walked.profiles, walked.identifiers), (2, 4));

    let lock = e.state().identity.snapshot();
    let addr = e.http;
    let scraped = std::thread::spawn(move || blocking_get(addr, "/metrics")).join();
    drop(lock);
    let text = scraped
        .unwrap()
        .expect("the scrape answered while the identity writer lock was held");
    assert!(text.contains("onejourney_profiles 2\n"), "{text}");
    assert!(text.contains("onejourney_identifiers 4\n"), "{text}");
    let bytes: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("onejourney_state_memory_bytes "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the memory gauge");
    assert_eq!(bytes, e.state().recount().bytes);
    e.stop().await;
}
