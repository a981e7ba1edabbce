//! The OpenAPI 3.1 description of `/v1`, served at `/v1/openapi.json`.
//!
//! In: the `#[utoipa::path]` annotations on the handlers (methods, paths,
//! parameters, status codes) and the schema types below. Out: one JSON
//! document, built once.
//!
//! The bodies are described by mirror types (`*Doc`) rather than by deriving
//! on the core's view types: the core stays free of HTTP concerns and its
//! files are not tied to a documentation crate. Each mirror denies unknown
//! fields (`additionalProperties: false`), and the tests deserialise real
//! views into them, and the end-to-end tests validate every `/v1` response
//! against the document: a field added to a view without its mirror fails
//! there instead of drifting silently. The mirrors of the core's enums
//! (`ChannelDoc`, `StageDoc`, `SuppressedDoc`, ...) stay mirrors for the same
//! reason (deriving `ToSchema` in the core would pull utoipa into the pure
//! core); a test checks that each lists exactly the values the core writes.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::Deserialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use super::search::{LookupRequest, RecentList, RecentProfile};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "onejourney lookup API",
        description = "Profiles stitched across channels: lookup, explanation, recent activity, erasure. \
            Raw email and phone values are normalised and hashed before the lookup and never logged; \
            prefer `POST /v1/profiles/lookup` for them so they stay out of URLs."
    ),
    paths(
        super::profile,
        super::explain,
        super::forget,
        super::search::lookup,
        super::search::recent,
        openapi_json,
    ),
    components(schemas(
        ProfileDoc,
        ExplainDoc,
        ErrorDoc,
        AcceptedDoc,
        LookupRequest,
        RecentList,
        RecentProfile
    )),
    modifiers(&BearerAuth),
    tags((name = "profiles", description = "One customer's stitched profile"))
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

/// An error: the status code says what kind; `error` is a sentence.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct ErrorDoc {
    pub error: String,
}

/// A forget command was published on `identity-control`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct AcceptedDoc {
    pub one_id: String,
    /// Always `accepted`.
    pub status: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum ChannelDoc {
    Web,
    Pos,
    App,
    CallCenter,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum ContactChannelDoc {
    Email,
    Push,
    Sms,
    Web,
    Store,
    CallCenter,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum StageDoc {
    New,
    Browsing,
    Cart,
    Customer,
    AtRisk,
}

/// Value tier: `a` for the customers who bring the first 80% of revenue, `b` the next 15%, `c` the rest.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum TierDoc {
    A,
    B,
    C,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum BandDoc {
    Low,
    Medium,
    High,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum OutcomeDoc {
    Delivered,
    Opened,
    Clicked,
    Converted,
    Dismissed,
}

/// Which contact rule held an action back.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum SuppressedDoc {
    /// The customer dismissed it `decide.policy.ignore_limit` times.
    Ignored,
    /// Offered too recently (the action's cool-down).
    Cooldown,
    /// Promotional, within the quiet period after a complaint or cancel request.
    QuietPeriod,
    /// None of its channels reaches the customer (or consent is missing).
    Unreachable,
    /// Every channel that reaches the customer is at its cap.
    Capped,
}

/// Why a link was refused.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum RejectReasonDoc {
    /// Two values of a unique namespace (`customer_id`, `loyalty_id`) would share a profile.
    UniqueConflict,
    /// The device is shared by several people and no longer links.
    SharedDevice,
    /// The profile holds as many person identifiers as it may.
    ProfileFull,
}

/// Which rule made a link.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum RuleDoc {
    Founder,
    SameEvent,
    Merge,
    Household,
}

/// An identifier; `email_sha256` and `phone_sha256` values are hashes.
#[derive(serde::Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct IdentifierDoc {
    pub namespace: String,
    pub value: String,
}

/// The body of `GET /v1/profiles/{namespace}/{value}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct ProfileDoc {
    pub one_id: String,
    pub identifiers: Vec<IdentifierDoc>,
    pub journey: JourneyDoc,
    pub churn: ChurnDoc,
    /// The last ten decisions, newest first.
    pub recent_actions: Vec<RecentActionDoc>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct ChurnDoc {
    pub score: f64,
    pub band: Option<BandDoc>,
    pub factors: Vec<FactorDoc>,
    /// The last (at most 12) evaluations that changed the score or band, oldest first.
    pub history: Vec<ChurnPointDoc>,
}

/// One feature of the churn score and its contribution.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct FactorDoc {
    pub name: String,
    pub value: f64,
    pub contribution: f64,
}

/// A decision taken for the customer.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct RecentActionDoc {
    pub action_id: String,
    pub action: String,
    pub channel: String,
    /// Why it fired, its expected value, and what it beat.
    pub reason: String,
    #[schema(format = DateTime)]
    pub decided_at: String,
    pub tier: TierDoc,
    pub outcome: Option<OutcomeDoc>,
    pub counted_trial: bool,
    pub counted_response: bool,
    /// Its expected value when chosen (none for decisions recorded before 1.3).
    pub score: Option<f64>,
    /// The other eligible actions it beat, best first (at most 4).
    pub beaten: Vec<BeatenDoc>,
    /// The actions whose trigger fired too but that a contact rule held back (at most 4).
    pub held_back: Vec<HeldBackDoc>,
}

/// An eligible action that lost, with its expected value.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct BeatenDoc {
    pub action: String,
    pub score: f64,
}

/// An action a contact rule held back.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct HeldBackDoc {
    pub action: String,
    pub rule: SuppressedDoc,
}

/// One churn evaluation that changed the score or band.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct ChurnPointDoc {
    #[schema(format = DateTime)]
    pub at: String,
    pub score: f64,
    pub band: Option<BandDoc>,
    /// The factors that contributed (non-zero only); they add up to the score.
    pub contributions: Vec<ContributionDoc>,
}

/// One factor's share of a churn score.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct ContributionDoc {
    pub name: String,
    pub contribution: f64,
}

/// Per channel.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct ChannelStatsByChannelDoc {
    pub web: ChannelStatsDoc,
    pub pos: ChannelStatsDoc,
    pub app: ChannelStatsDoc,
    pub call_center: ChannelStatsDoc,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct ChannelStatsDoc {
    pub events: u64,
    #[schema(format = DateTime)]
    pub last_seen: Option<String>,
}

/// Per channel.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct CountByChannelDoc {
    pub web: u32,
    pub pos: u32,
    pub app: u32,
    pub call_center: u32,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct CartDoc {
    /// By SKU.
    pub items: BTreeMap<String, CartLineDoc>,
    #[schema(format = DateTime)]
    pub updated_at: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct CartLineDoc {
    pub quantity: u32,
    pub unit_price: f64,
    pub category: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct CallStatsDoc {
    pub calls: u32,
    pub resolved: u32,
    pub unresolved: u32,
    pub escalated: u32,
    pub abandoned: u32,
    #[schema(format = DateTime)]
    pub last_call: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct ProductViewDoc {
    pub sku: String,
    pub channel: ChannelDoc,
    #[schema(format = DateTime)]
    pub at: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct ContactDoc {
    #[schema(format = DateTime)]
    pub at: String,
    pub channel: ContactChannelDoc,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct ChurnStateDoc {
    pub score: f64,
    pub band: Option<BandDoc>,
    pub factors: Vec<FactorDoc>,
    #[schema(format = DateTime)]
    pub evaluated_at: Option<String>,
    pub history: Vec<ChurnPointDoc>,
}

/// One of the profile's recent events (the timeline).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct RecentEventDoc {
    #[schema(format = DateTime)]
    pub at: String,
    pub channel: ChannelDoc,
    pub event_id: String,
    pub event_type: String,
    /// The product's SKU, or the call's reason and outcome.
    pub detail: Option<String>,
    pub amount: Option<f64>,
}

/// The whole journey state. `churn` and `recent_actions` here are empty:
/// the profile's top-level `churn` and `recent_actions` carry them.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct JourneyDoc {
    #[schema(format = DateTime)]
    pub first_seen: Option<String>,
    #[schema(format = DateTime)]
    pub last_seen: Option<String>,
    pub stage: StageDoc,
    pub channels_touched: Vec<ChannelDoc>,
    pub channels: ChannelStatsByChannelDoc,
    pub purchases: u32,
    pub revenue: f64,
    pub purchases_by_channel: CountByChannelDoc,
    #[schema(format = DateTime)]
    pub last_purchase: Option<String>,
    pub returns: u32,
    pub returned_value: f64,
    pub cart: CartDoc,
    pub checkouts_started: u32,
    #[schema(format = DateTime)]
    pub last_checkout_start: Option<String>,
    pub complaints: u32,
    pub cancel_requests: u32,
    #[schema(format = DateTime)]
    pub last_complaint: Option<String>,
    pub call: CallStatsDoc,
    pub last_csat: Option<u8>,
    pub last_sentiment: Option<f64>,
    /// The customer opted out of push messages (consent).
    pub push_opt_out: bool,
    pub tier: TierDoc,
    /// Visit start times, oldest first.
    pub visits: Vec<String>,
    pub complaint_times: Vec<String>,
    pub unresolved_times: Vec<String>,
    #[schema(format = DateTime)]
    pub last_service_issue: Option<String>,
    pub last_product_view: Option<ProductViewDoc>,
    pub contacts: Vec<ContactDoc>,
    /// Dismissals per action.
    pub ignored: BTreeMap<String, u32>,
    pub churn: ChurnStateDoc,
    /// When each action was last decided.
    pub last_action: BTreeMap<String, String>,
    pub recent_actions: Vec<RecentActionDoc>,
    /// When the quiet-customer check is due.
    #[schema(format = DateTime)]
    pub quiet_due: Option<String>,
    /// The newest events, oldest first.
    pub recent_events: Vec<RecentEventDoc>,
}

/// The body of `GET /v1/profiles/{namespace}/{value}/explain`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct ExplainDoc {
    pub one_id: String,
    /// Every link in the order it was made.
    pub links: Vec<LinkDoc>,
    /// The newest (at most 8) links refused on events that landed on this
    /// profile, oldest first.
    pub refused: Vec<RefusedDoc>,
    /// The identifiers in `links` and `refused` that are shared devices.
    pub shared_devices: Vec<IdentifierDoc>,
}

/// A refused link: the identifier stayed apart, in `kept_in`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct RefusedDoc {
    pub identifier: IdentifierDoc,
    pub reason: RejectReasonDoc,
    /// The profile it was kept in when refused (it may have merged on since).
    pub kept_in: Option<String>,
    pub event_id: String,
    pub channel: ChannelDoc,
    #[schema(format = DateTime)]
    pub at: String,
}

/// How an identifier joined the profile: the event, channel, time and rule.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct LinkDoc {
    pub from: IdentifierDoc,
    /// The identifier it was linked to; none for a founder or household.
    pub to: Option<IdentifierDoc>,
    pub event_id: String,
    pub channel: ChannelDoc,
    #[schema(format = DateTime)]
    pub at: String,
    pub rule: RuleDoc,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use onejourney_core::processor::{Processor, State};
    use onejourney_core::{Channel, Decoder};
    use serde::Serialize;

    use super::*;
    use crate::config::Settings;

    /// A profile on three channels with decisions (one that beat another),
    /// a refused link and a shared device, through the real core with the
    /// default configuration.
    fn sample() -> (Arc<State>, onejourney_core::ids::IdKey) {
        let settings = Settings::defaults().unwrap();
        let ns = settings.namespaces().unwrap();
        let state = Arc::new(State::new(ns.clone()));
        let mut p = Processor::new(Arc::new(settings.core()), state.clone());
        let d = Decoder::new(ns.clone(), 1 << 20).unwrap();
        let sale = |id: &str, at: &str| {
            format!(
                r#"{{"event_id":"{id}","event_type":"sale","occurred_at":"{at}","identifiers":{{"customer_id":"C1"}},"transaction_id":"{id}","store_id":"S1","total":3000.0,"currency":"EUR","items":[{{"sku":"a","quantity":1,"unit_price":3000.0}}]}}"#
            )
        };
        let events = [
            (
                Channel::Web,
                r#"{"event_id":"w1","event_type":"add_to_cart","occurred_at":"2026-11-01T10:00:00Z","identifiers":{"customer_id":"C1","email":"c1@example.test","cookie_id":"k1","device_id":"tab"},"session_id":"s","product":{"sku":"<b>x</b>","price":12.5}}"#.to_string(),
            ),
            (
                Channel::Web,
                r#"{"event_id":"w2","event_type":"login","occurred_at":"2026-11-01T10:30:00Z","identifiers":{"customer_id":"C2","device_id":"tab","loyalty_id":"L2"},"session_id":"s2"}"#.to_string(),
            ),
            (
                Channel::Web,
                r#"{"event_id":"w3","event_type":"login","occurred_at":"2026-11-01T10:40:00Z","identifiers":{"customer_id":"C1","device_id":"tab","loyalty_id":"L2"},"session_id":"s3"}"#.to_string(),
            ),
            (Channel::Pos, sale("p1", "2026-11-01T11:00:00Z")),
            (Channel::Pos, sale("p2", "2026-11-09T11:00:00Z")),
            (Channel::Pos, sale("p3", "2026-11-17T11:00:00Z")),
            (
                Channel::CallCenter,
                r#"{"event_id":"c1","event_type":"inbound_call","occurred_at":"2026-11-17T12:00:00Z","identifiers":{"customer_id":"C1","phone":"+44 20 7946 0000"},"call_id":"k","reason":"complaint","outcome":"unresolved"}"#.to_string(),
            ),
        ];
        for (channel, json) in events {
            let ev = d.decode(channel, json.as_bytes()).unwrap();
            p.process(&ev, 0).unwrap();
        }
        let key = ns.normalise("customer_id", "C1").unwrap().unwrap();
        (state, key)
    }

    /// The values a mirror enum lists in the document.
    fn listed(name: &str) -> Vec<String> {
        let schema = &document()["components"]["schemas"][name];
        let values = schema["enum"]
            .as_array()
            .or_else(|| schema["oneOf"].as_array())
            .unwrap_or_else(|| panic!("{name} is not an enum in the document: {schema}"));
        let mut out: Vec<String> = values
            .iter()
            .map(|v| {
                v.as_str()
                    .or_else(|| v["enum"][0].as_str())
                    .or_else(|| v["const"].as_str())
                    .unwrap()
                    .to_string()
            })
            .collect();
        out.sort();
        out
    }

    fn wire<T: Serialize>(all: impl IntoIterator<Item = T>) -> Vec<String> {
        let mut out: Vec<String> = all
            .into_iter()
            .map(|v| serde_json::to_value(v).unwrap().as_str().unwrap().to_string())
            .collect();
        out.sort();
        out
    }

    #[test]
    fn the_document_is_openapi_3_1_and_lists_every_v1_route() {
        let doc = document();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        for path in [
            "/v1/profiles/{namespace}/{value}",
            "/v1/profiles/{namespace}/{value}/explain",
            "/v1/profiles/lookup",
            "/v1/profiles/recent",
            "/v1/openapi.json",
        ] {
            assert!(doc["paths"][path].is_object(), "{path} missing");
        }
        assert!(doc["paths"]["/v1/profiles/{namespace}/{value}"]["delete"].is_object());
        assert_eq!(
            doc["components"]["schemas"]["ProfileDoc"]["additionalProperties"],
            serde_json::json!(false)
        );
    }

    #[test]
    fn real_views_match_their_mirrors() {
        let (state, key) = sample();
        let view = serde_json::to_value(state.view(&key).unwrap()).unwrap();
        let doc: ProfileDoc = serde_json::from_value(view.clone()).unwrap();
        assert_eq!(doc.journey.recent_events.len(), 6);
        assert!(!doc.recent_actions.is_empty(), "a decision was taken: {view}");
        assert!(
            doc.recent_actions
                .iter()
                .any(|a| a.score.is_some() && !a.beaten.is_empty()),
            "a decision that beat another: {view}"
        );
        assert!(!doc.churn.history.is_empty(), "churn history: {view}");
        let explain = serde_json::to_value(state.explain(&key).unwrap()).unwrap();
        let doc: ExplainDoc = serde_json::from_value(explain.clone()).unwrap();
        assert!(!doc.refused.is_empty(), "refused links: {explain}");
        assert_eq!(doc.shared_devices.len(), 1, "the tablet: {explain}");
    }

    /// The mirrors of the core's enums list exactly the values the core writes.
    #[test]
    fn mirror_enums_agree_with_the_core() {
        use onejourney_core::decide::{ContactChannel, Suppressed};
        use onejourney_core::identity::{RejectReason, Rule};
        use onejourney_core::journey::{Band, Stage, Tier};
        use onejourney_core::vocab::Outcome;
        assert_eq!(listed("ChannelDoc"), wire(Channel::ALL));
        assert_eq!(listed("ContactChannelDoc"), wire(ContactChannel::ALL));
        assert_eq!(listed("StageDoc"), wire(Stage::ALL));
        assert_eq!(listed("TierDoc"), wire(Tier::ALL));
        assert_eq!(listed("BandDoc"), wire(Band::ALL));
        assert_eq!(listed("OutcomeDoc"), wire(Outcome::ALL));
        assert_eq!(listed("RuleDoc"), wire(Rule::ALL));
        assert_eq!(listed("SuppressedDoc"), wire(Suppressed::ALL));
        assert_eq!(listed("RejectReasonDoc"), wire(RejectReason::ALL));
    }
}
