//! The server under the router: connections accepted, limited and timed.
//!
//! In: a bound listener, the router, the [`Limits`] from `http.*`, and
//! cancel. Out: every connection served by hyper's HTTP/1 until cancel, then
//! the open ones finished gracefully (an idle one at once, a busy one after
//! its response).
//!
//! What it keeps: at most `max_connections` connections open. The next one is
//! not accepted until one closes: it waits in the kernel's accept queue (the
//! listen backlog, bounded by the kernel), so a burst is served a little late
//! rather than refused, and the process never holds more sockets than the
//! limit. hyper closes a connection that has not sent a complete request
//! head `header_read_timeout` after the server began waiting for one (when
//! the connection opens, and after each response on a kept-alive connection:
//! hyper times the idle wait and the head with one timer, so this is also
//! the keep-alive idle timeout). A request without a response after
//! `request_timeout` gets 503 with the API's JSON error (a slow request body
//! counts, since the handler reads it; tower-http's timeout layer would
//! answer with an empty body). `axum::serve` offers none of these settings,
//! hence hyper's connection builder here.

use std::io;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::metrics::Metrics;

/// Connection limits and timeouts (`http.*`).
#[derive(Clone, Debug)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub request_timeout: Duration,
    /// False: every connection closes after one response.
    pub keep_alive: bool,
    pub max_connections: usize,
}

/// Serves `app` on `listener` until `cancel`, then waits for the open
/// connections to finish.
pub async fn run(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) -> io::Result<()> {
    let limit = limits.request_timeout;
    let app = app.layer(middleware::from_fn(move |req, next| deadline(limit, req, next)));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(limits.keep_alive);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        // A free slot first: beyond the limit, connections wait unaccepted.
        let slot = tokio::select! {
            _ = cancel.cancelled() => break,
            slot = slots.clone().acquire_owned() => slot.map_err(io::Error::other)?,
        };
        let stream = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
        };
        let conn = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let (metrics, cancel) = (metrics.clone(), cancel.clone());
        metrics.http_connections.inc();
        tokio::spawn(async move {
            let mut conn = pin!(conn);
            let served = tokio::select! {
                served = conn.as_mut() => served,
                _ = cancel.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = served {
                if e.is_timeout() {
                    metrics.http_header_timeouts.inc();
                }
                debug!(error = %e, "HTTP connection ended with an error");
            }
            metrics.http_connections.dec();
            drop(slot);
        });
    }
    // Every slot back: every connection has ended.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = slots.acquire_many(all).await;
    Ok(())
}

/// The response, or 503 when there is none within `limit`.
async fn deadline(limit: Duration, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => super::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no response within http.request_timeout; retry",
        ),
    }
}

/// An accept error: a connection that failed before it was accepted is
/// skipped; anything else (out of file descriptors) backs off a little.
async fn accept_failed(e: io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(e.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset) {
        return;
    }
    warn!(error = %e, "accepting an HTTP connection failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

#[cfg(test)]
mod tests;
