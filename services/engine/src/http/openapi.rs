//! The OpenAPI 3.1 description of `/v1`, served at `/v1/openapi.json`.
//!
//! In: the `#[utoipa::path]` annotations on the handlers (methods, paths,
//! parameters, status codes) and the schema types of `schema.rs`. Out: one JSON
//! document, built once.
//!
//! The bodies are described by mirror types (`*Doc`, `schema.rs`), not by
//! deriving on the core's view types; `tests.rs` holds them to the real views.

use std::sync::OnceLock;

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::search::{LookupRequest, RecentList, RecentProfile};

mod models;
mod schema;

pub use models::*;
pub use schema::*;

#[cfg(test)]
mod tests;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "onejourney lookup API",
        description = "Profiles stitched across channels: lookup, explanation, recent activity, erasure; \
            the learned churn model, the action models and their measured uplift. \
            Raw email and phone values are normalised and hashed before the lookup and never logged; \
            prefer `POST /v1/profiles/lookup` for them so they stay out of URLs."
    ),
    paths(
        super::profile,
        super::explain,
        super::forget,
        super::search::lookup,
        super::search::recent,
        super::models::churn,
        super::models::actions,
        openapi_json,
    ),
    components(schemas(
        ProfileDoc,
        ExplainDoc,
        ErrorDoc,
        AcceptedDoc,
        LookupRequest,
        RecentList,
        RecentProfile,
        ChurnModelDoc,
        ActionModelsDoc
    )),
    modifiers(&BearerAuth),
    tags(
        (name = "profiles", description = "One customer's stitched profile"),
        (name = "models", description = "What the engine learned from the stream, and whether its actions work")
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("the read token: required when `http.bearer_token` is set"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "erase",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "an erase token (`http.erase_tokens`): the only power that may erase; the read token gets 403",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document as JSON, built on first use.
pub fn document() -> &'static serde_json::Value {
    static DOC: OnceLock<serde_json::Value> = OnceLock::new();
    DOC.get_or_init(|| serde_json::to_value(ApiDoc::openapi()).unwrap_or_default())
}

/// This document.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "profiles",
    responses((status = 200, description = "This OpenAPI 3.1 document", content_type = "application/json"))
)]
pub(super) async fn openapi_json() -> axum::Json<&'static serde_json::Value> {
    axum::Json(document())
}
