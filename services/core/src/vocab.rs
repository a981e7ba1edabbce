//! The core's shared vocabulary: the small closed sets of names that the
//! journey, the decisions, the outputs and the metrics all speak.
//!
//! In: nothing (this module imports nothing of the core, so any module may
//! use it without closing an import circle). Out: [`ContactChannel`],
//! [`Outcome`], [`Band`], [`Tier`], [`Suppressed`] and [`FactorName`], each with its wire
//! label. It keeps no state.
//!
//! Serde names are the wire contract's and the snapshot format's: renaming a
//! variant here changes both.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A channel an action can be delivered on.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContactChannel {
    Email,
    Push,
    Sms,
    Web,
    Store,
    CallCenter,
}

impl ContactChannel {
    /// How many contact channels there are.
    pub const COUNT: usize = 6;

    /// Every contact channel, in [`ContactChannel::index`] order.
    pub const ALL: [ContactChannel; ContactChannel::COUNT] = [
        ContactChannel::Email,
        ContactChannel::Push,
        ContactChannel::Sms,
        ContactChannel::Web,
        ContactChannel::Store,
        ContactChannel::CallCenter,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ContactChannel::Email => "email",
            ContactChannel::Push => "push",
            ContactChannel::Sms => "sms",
            ContactChannel::Web => "web",
            ContactChannel::Store => "store",
            ContactChannel::CallCenter => "call_center",
        }
    }

    /// The channel with this label.
    pub fn from_label(s: &str) -> Option<ContactChannel> {
        ContactChannel::ALL.into_iter().find(|c| c.label() == s)
    }

    /// Position in [`ContactChannel::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// What a delivered action led to, as reported on `action-outcomes`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Delivered,
    Opened,
    Clicked,
    Converted,
    Dismissed,
}

impl Outcome {
    pub const ALL: [Outcome; 5] = [
        Outcome::Delivered,
        Outcome::Opened,
        Outcome::Clicked,
        Outcome::Converted,
        Outcome::Dismissed,
    ];

    /// A click or a conversion: counts as a response in the learned propensities.
    pub fn is_response(self) -> bool {
        matches!(self, Outcome::Clicked | Outcome::Converted)
    }

    /// Opened, clicked or converted: the customer engaged with the message
    /// (the contact policy's no-response rule).
    pub fn is_engagement(self) -> bool {
        matches!(self, Outcome::Opened | Outcome::Clicked | Outcome::Converted)
    }

    pub fn label(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Opened => "opened",
            Outcome::Clicked => "clicked",
            Outcome::Converted => "converted",
            Outcome::Dismissed => "dismissed",
        }
    }
}

/// The churn band.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Band {
    Low,
    Medium,
    High,
}

impl Band {
    pub const ALL: [Band; 3] = [Band::Low, Band::Medium, Band::High];

    pub fn label(self) -> &'static str {
        match self {
            Band::Low => "low",
            Band::Medium => "medium",
            Band::High => "high",
        }
    }
}

/// A customer's value tier: `a` for the customers who together bring the
/// first 80% of revenue, `b` for the next 15%, `c` for the rest.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    A,
    B,
    #[default]
    C,
}

impl Tier {
    pub const ALL: [Tier; 3] = [Tier::A, Tier::B, Tier::C];

    pub fn label(self) -> &'static str {
        match self {
            Tier::A => "a",
            Tier::B => "b",
            Tier::C => "c",
        }
    }
}

/// Why an action whose trigger fired and whose conditions held was not offered.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Suppressed {
    /// The customer dismissed it `ignore_limit` times.
    Ignored,
    /// Offered to this customer too recently.
    Cooldown,
    /// Promotional, within the quiet period after a complaint.
    QuietPeriod,
    /// None of its channels reaches the customer (or consent is missing).
    Unreachable,
    /// Every channel that reaches the customer is at its cap.
    Capped,
    /// The customer's cross-channel budget is used up.
    Budget,
    /// Every channel that reaches the customer lacks consent.
    NoConsent,
    /// The channel rests after messages the customer did not respond to.
    NoResponse,
    /// Inside quiet hours, customer's local time (deferred or dropped).
    QuietHours,
    /// Its expected value is below `decide.min_expected_value`.
    BelowMinimum,
}

impl Suppressed {
    pub const ALL: [Suppressed; 10] = [
        Suppressed::Ignored,
        Suppressed::Cooldown,
        Suppressed::QuietPeriod,
        Suppressed::Unreachable,
        Suppressed::Capped,
        Suppressed::Budget,
        Suppressed::NoConsent,
        Suppressed::NoResponse,
        Suppressed::QuietHours,
        Suppressed::BelowMinimum,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Suppressed::Ignored => "ignored",
            Suppressed::Cooldown => "cooldown",
            Suppressed::QuietPeriod => "quiet_period",
            Suppressed::Unreachable => "unreachable",
            Suppressed::Capped => "capped",
            Suppressed::Budget => "budget",
            Suppressed::NoConsent => "no_consent",
            Suppressed::NoResponse => "no_response",
            Suppressed::QuietHours => "quiet_hours",
            Suppressed::BelowMinimum => "below_minimum",
        }
    }
}

/// The name of one feature of the churn score.
///
/// Serialised as its label string in every format (the `churn-risk` JSON and
/// the binary snapshot alike), as the plain string it replaced was.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FactorName {
    DaysSinceLastActivity,
    DaysSinceLastPurchase,
    NeverPurchased,
    Complaints30d,
    CancelRequests,
    UnresolvedCalls30d,
    VisitFrequencyDrop,
    Returns,
    AbandonedCheckouts,
    LastCsat,
    LastSentiment,
    PurchaseFrequency,
    MonetaryValue,
    PurchaseRhythmOverdue,
    Tenure,
    ChannelsUsed,
}

impl FactorName {
    /// How many churn factors there are.
    pub const COUNT: usize = 16;

    /// Every factor, in the order the score reports them.
    pub const ALL: [FactorName; FactorName::COUNT] = [
        FactorName::DaysSinceLastActivity,
        FactorName::DaysSinceLastPurchase,
        FactorName::NeverPurchased,
        FactorName::Complaints30d,
        FactorName::CancelRequests,
        FactorName::UnresolvedCalls30d,
        FactorName::VisitFrequencyDrop,
        FactorName::Returns,
        FactorName::AbandonedCheckouts,
        FactorName::LastCsat,
        FactorName::LastSentiment,
        FactorName::PurchaseFrequency,
        FactorName::MonetaryValue,
        FactorName::PurchaseRhythmOverdue,
        FactorName::Tenure,
        FactorName::ChannelsUsed,
    ];

    pub fn label(self) -> &'static str {
        match self {
            FactorName::DaysSinceLastActivity => "days_since_last_activity",
            FactorName::DaysSinceLastPurchase => "days_since_last_purchase",
            FactorName::NeverPurchased => "never_purchased",
            FactorName::Complaints30d => "complaints_30d",
            FactorName::CancelRequests => "cancel_requests",
            FactorName::UnresolvedCalls30d => "unresolved_calls_30d",
            FactorName::VisitFrequencyDrop => "visit_frequency_drop",
            FactorName::Returns => "returns",
            FactorName::AbandonedCheckouts => "abandoned_checkouts",
            FactorName::LastCsat => "last_csat",
            FactorName::LastSentiment => "last_sentiment",
            FactorName::PurchaseFrequency => "purchase_frequency",
            FactorName::MonetaryValue => "monetary_value",
            FactorName::PurchaseRhythmOverdue => "purchase_rhythm_overdue",
            FactorName::Tenure => "tenure",
            FactorName::ChannelsUsed => "channels_used",
        }
    }

    /// The factor whose label is `s`.
    pub fn from_label(s: &str) -> Option<FactorName> {
        FactorName::ALL.into_iter().find(|f| f.label() == s)
    }
}

impl fmt::Display for FactorName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

impl PartialEq<&str> for FactorName {
    fn eq(&self, other: &&str) -> bool {
        self.label() == *other
    }
}

impl Serialize for FactorName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.label())
    }
}

impl<'de> Deserialize<'de> for FactorName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        FactorName::from_label(&s).ok_or_else(|| serde::de::Error::custom(format!("unknown churn factor {s:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_follow_all() {
        for (i, c) in ContactChannel::ALL.into_iter().enumerate() {
            assert_eq!(c.index(), i);
        }
    }

    #[test]
    fn factor_names_read_back_from_their_labels() {
        for f in FactorName::ALL {
            assert_eq!(FactorName::from_label(f.label()), Some(f));
            let json = serde_json::to_string(&f).unwrap();
            assert_eq!(json, format!("\"{}\"", f.label()));
            assert_eq!(serde_json::from_str::<FactorName>(&json).unwrap(), f);
        }
        assert!(serde_json::from_str::<FactorName>("\"shoe_size\"").is_err());
    }

    #[test]
    fn suppressed_reasons_serialise_as_their_labels() {
        for r in Suppressed::ALL {
            assert_eq!(serde_json::to_value(r).unwrap(), r.label());
        }
    }
}
