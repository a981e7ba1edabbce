//! The schemas of the OpenAPI document: mirror types (`*Doc`) of the views
//! `/v1` answers with.
//!
//! In: nothing at run time; `openapi.rs` lists them. Out: their JSON
//! Schemas, through `ToSchema`. The bodies are described by mirrors rather
//! than by deriving on the core's view types: the core stays free of HTTP
//! concerns and its files are not tied to a documentation crate. Each mirror
//! denies unknown fields (`additionalProperties: false`), and the tests
//! deserialise real views into them, and the end-to-end tests validate every
//! `/v1` response against the document: a field added to a view without its
//! mirror fails there instead of drifting silently. The mirrors of the core's
//! enums (`ChannelDoc`, `StageDoc`, `SuppressedDoc`, ...) stay mirrors for the
//! same reason (deriving `ToSchema` in the core would pull utoipa into the
//! pure core); a test checks that each lists exactly the values the core
//! writes.

use std::collections::BTreeMap;

use serde::Deserialize;
use utoipa::ToSchema;

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
    /// None of its channels reaches the customer.
    Unreachable,
    /// Every channel that reaches the customer is at its cap.
    Capped,
    /// The customer's cross-channel budget (`decide.policy.budget`) is used up.
    Budget,
    /// Every channel that reaches the customer lacks consent.
    NoConsent,
    /// The channel rests after messages with no response (`decide.policy.no_response`).
    NoResponse,
    /// Inside quiet hours, customer's local time (`decide.policy.quiet_hours`).
    QuietHours,
    /// Its expected value is below `decide.min_expected_value` (since 1.4).
    BelowMinimum,
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
    /// The learned model's calibrated churn probability (blended with the
    /// hand-weighted prior while labels are few), as of `evaluated_at`.
    pub score: f64,
    pub band: Option<BandDoc>,
    pub factors: Vec<FactorDoc>,
    /// The event time the score is as of: the engine's current event time
    /// (its watermark), not the customer's last event (since 1.4).
    #[schema(format = DateTime)]
    pub evaluated_at: Option<String>,
    /// The hand-weighted score the model is blended with (since 1.4).
    pub hand_score: Option<f64>,
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
    /// The actions whose trigger fired too but that a contact rule or the
    /// minimum expected value held back (at most 4).
    pub held_back: Vec<HeldBackDoc>,
    /// Withheld as the control group: recorded, never published (since 1.4).
    pub held_out: bool,
    /// The customer bought within the action's conversion window after it (since 1.4).
    pub converted: bool,
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
    /// The customer opted out of push messages (the push entry of `consent`).
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
    /// Consent per channel: the newest statement the customer made (none:
    /// the configured default, `decide.policy.consent`). Since contract 1.4.
    pub consent: ConsentsDoc,
    /// The customer's UTC offset, from the newest event that carried one.
    pub local_clock: Option<LocalClockDoc>,
    /// Engagements (opened, clicked, converted) with messages, by channel.
    pub responses: Vec<ContactDoc>,
    /// Always empty here: the churn model's examples waiting for a label are
    /// internal state (see `GET /v1/models/churn` for what it learned).
    pub churn_examples: ChurnExamplesDoc,
    /// RFM scores, 1-5 each from the buying population's quintiles (since 1.4; none: never bought).
    pub rfm: Option<RfmDoc>,
    /// Expected lifetime value over `decide.value.horizon` (since 1.4; none: never bought).
    pub clv: Option<ClvDoc>,
}

/// Recency (5: most recent last purchase), frequency and monetary scores.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct RfmDoc {
    pub r: u8,
    pub f: u8,
    pub m: u8,
}

/// Expected lifetime value: `expected_purchases x order_value`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct ClvDoc {
    pub expected_purchases: f64,
    pub order_value: f64,
    /// 1 - churn score.
    pub p_active: f64,
    pub value: f64,
    pub horizon_days: f64,
}

/// The newest consent statement on each channel that needs consent.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct ConsentsDoc {
    pub email: Option<ConsentStatementDoc>,
    pub sms: Option<ConsentStatementDoc>,
    pub push: Option<ConsentStatementDoc>,
}

/// Consent given (`granted`) or withdrawn, at an event time.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct ConsentStatementDoc {
    pub granted: bool,
    #[schema(format = DateTime)]
    pub at: String,
}

/// The customer's offset from UTC, in minutes, and the event time it was said.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct LocalClockDoc {
    pub utc_offset_minutes: i16,
    #[schema(format = DateTime)]
    pub at: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct ChurnExamplesDoc {
    pub pending: Vec<serde_json::Value>,
    #[schema(format = DateTime)]
    pub last_taken: Option<String>,
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
