//! The Customer 360 page: one person's identity, journey and decisions in a
//! browser, served by the engine itself.
//!
//! In: `GET /ui`, the deep links `/ui/profiles/{namespace}/{value}` and
//! `/ui/profiles/one_id/{id}` (all the same page: its script reads the path),
//! and the page's assets. Out: the HTML, CSS and JavaScript embedded in the
//! binary (`include_str!`): nothing is fetched from outside at run time, and
//! there is no build step.
//!
//! The page reads only `/v1` (with the bearer token the user gives it, kept
//! in `sessionStorage`) and `/ui/settings.json` (timer delays, so pending
//! timers can be drawn). It looks identifiers up with `POST
//! /v1/profiles/lookup`, so a raw email or phone never goes into a URL, then
//! addresses the profile by One ID. Every value from events is inserted as
//! text (`textContent`, SVG text nodes), never as markup, and the
//! Content-Security-Policy allows scripts from this origin only, so a product
//! called `<script>...` renders as those characters.

use std::time::Duration;

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use onejourney_core::decide::DecideConfig;
use serde::Serialize;

use crate::http::HttpState;

const INDEX_HTML: &str = include_str!("index.html");
const APP_JS: &str = include_str!("app.js");
const APP_CSS: &str = include_str!("app.css");

/// Scripts, styles and requests from this origin only; no inline script.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The timer delays the page places on the timeline, from `[decide]`.
#[derive(Copy, Clone, Debug, Serialize)]
pub struct TimerDelays {
    pub cart_abandon_after_s: u64,
    pub browse_abandon_after_s: u64,
    pub quiet_after_s: u64,
}

impl TimerDelays {
    pub fn of(d: &DecideConfig) -> Self {
        let s = |d: Duration| d.as_secs();
        TimerDelays {
            cart_abandon_after_s: s(d.cart_abandon_after),
            browse_abandon_after_s: s(d.browse_abandon_after),
            quiet_after_s: s(d.quiet_after),
        }
    }
}

/// `/`, `/ui`, the deep links and the assets.
pub fn routes() -> Router<HttpState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui") }))
        .route("/ui", get(page))
        .route("/ui/", get(page))
        .route("/ui/profiles/{namespace}/{value}", get(page))
        .route(
            "/ui/assets/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/ui/assets/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
        .route(
            "/ui/settings.json",
            get(|axum::extract::State(s): axum::extract::State<HttpState>| async move { Json(s.timers) }),
        )
}

async fn page() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut r = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_nothing_from_outside_and_inserts_no_markup() {
        for (name, text) in [("index.html", INDEX_HTML), ("app.js", APP_JS), ("app.css", APP_CSS)] {
            // The SVG namespace is a name, not a fetch.
            let text = text.replace("http://www.w3.org/2000/svg", "");
            for banned in ["http://", "https://", "//cdn", "@import", "url("] {
                assert!(!text.contains(banned), "{name} mentions {banned}");
            }
        }
        for banned in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!APP_JS.contains(banned), "app.js uses {banned}");
        }
        assert!(
            !INDEX_HTML.contains("<script>"),
            "no inline script (the CSP forbids it)"
        );
    }
}
