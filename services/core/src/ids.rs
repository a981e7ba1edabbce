//! Identifier namespaces and normalisation.
//!
//! In: the raw `identifiers` object of an event; the namespace table from
//! config. Out: [`IdKey`]s, one per identifier that may be recorded, plus the
//! values that were blocked as junk; per namespace its rule and the contact
//! channels an identifier of it reaches. Keeps the table ([`Namespaces`]).
//!
//! The built-in table, [`Namespaces::default_rules`], is the one source of
//! the contract's namespaces: the engine's `identity.namespaces` defaults to
//! it (and `onejourney check-config` prints it).
//!
//! Invariant: raw email and phone values never leave this module; they are
//! normalised and replaced by their SHA-256 hex in the `email_sha256` /
//! `phone_sha256` namespaces before anything else sees them.

use std::collections::HashMap;
use std::fmt;

pub use arcstr::ArcStr;
use serde::{Deserialize, Serialize};

use crate::vocab::ContactChannel;

mod contact;
mod key;
pub use contact::{is_placeholder_email, normalise_email, normalise_phone, sha256_hex};
pub use key::IdKey;

/// What an identifier says about who is behind it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Belongs to one person (account number, email).
    Person,
    /// Belongs to a device that one or more people use (cookie, app install).
    Device,
    /// Shared by a household (a payment card): recorded, never links.
    Household,
}

/// The rule for one namespace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceRule {
    pub name: String,
    pub kind: Kind,
    /// Higher wins: the strongest identifier on an event anchors it.
    pub priority: u8,
    /// A profile holds at most one value of a unique namespace.
    #[serde(default)]
    pub unique: bool,
    /// Whether an identifier of this namespace may link two profiles.
    #[serde(default = "yes")]
    pub links: bool,
    /// At most this many identifiers of this namespace per profile; when a
    /// new one joins a full profile, the oldest link of the namespace is
    /// dropped (device namespaces). `None`: only the profile-wide cap applies.
    #[serde(default)]
    pub max_per_profile: Option<u16>,
    /// The contact channels a customer with an identifier of this namespace
    /// can be reached on (push also needs consent). Not set: the built-in
    /// namespace of the same name's routes, none for a new name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reaches: Option<Vec<ContactChannel>>,
}

/// Limits of the identity graph that are not per namespace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityLimits {
    /// Identifiers per profile in all. When a profile is full the oldest
    /// device link is dropped; a person identifier that does not fit is
    /// refused (`profile_full`) and founds its own profile.
    pub max_identifiers_per_profile: usize,
    /// A device identifier seen with more than this many distinct values of
    /// one person namespace within `shared_device_window` is shared (a kiosk,
    /// a family tablet): it stops linking and leaves the profile it was in.
    pub shared_device_max_persons: usize,
    /// The event-time window of the shared-device rule.
    #[serde(with = "humantime_serde")]
    pub shared_device_window: std::time::Duration,
}

impl Default for IdentityLimits {
    fn default() -> Self {
        IdentityLimits {
            max_identifiers_per_profile: 50,
            shared_device_max_persons: 1,
            shared_device_window: std::time::Duration::from_secs(90 * 86_400),
        }
    }
}

fn yes() -> bool {
    true
}

/// Index of a namespace in the [`Namespaces`] table.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Ns(pub u8);

/// Why an identifier value was not recorded.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum BlockReason {
    Empty,
    Junk,
}

impl BlockReason {
    pub fn label(self) -> &'static str {
        match self {
            BlockReason::Empty => "empty_value",
            BlockReason::Junk => "junk_value",
        }
    }
}

/// Options for normalisation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NormaliseConfig {
    /// Country calling code put in front of phone numbers given without one
    /// (no leading `+` or `00`). Empty: such numbers are hashed as given.
    #[serde(default)]
    pub default_country_code: String,
    /// Extra junk values (compared after trimming and lowercasing).
    #[serde(default)]
    pub extra_blocked_values: Vec<String>,
    /// Regular expressions (Rust `regex` syntax) a raw value is blocked by
    /// when one matches the trimmed value, e.g. `^(test|dummy)[0-9]*$`.
    #[serde(default)]
    pub blocked_patterns: Vec<String>,
}

pub const EMAIL_SHA256: &str = "email_sha256";
pub const PHONE_SHA256: &str = "phone_sha256";

/// The namespace table: the contract's defaults plus configured additions.
#[derive(Debug)]
pub struct Namespaces {
    rules: Vec<NamespaceRule>,
    by_name: HashMap<String, Ns>,
    email: Ns,
    phone: Ns,
    norm: NormaliseConfig,
    patterns: Vec<regex::Regex>,
    limits: IdentityLimits,
    /// The secret One IDs and suppression entries are derived under.
    key: crate::key::IdentityKey,
    /// The contact channels of each namespace, indexed by `Ns`.
    routes: Vec<Vec<ContactChannel>>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum NamespaceError {
    #[error("namespace {0:?} is defined twice")]
    Duplicate(String),
    #[error("namespace {0:?} is required and cannot be removed")]
    Missing(&'static str),
    #[error("namespace {0:?} is reserved for raw input values")]
    Reserved(String),
    #[error("at most 200 namespaces are supported")]
    TooMany,
    #[error("blocked pattern {pattern:?} is not a valid regular expression: {reason}")]
    Pattern { pattern: String, reason: String },
    #[error("{0}")]
    Limits(&'static str),
}

impl Namespaces {
    /// The namespaces of the wire contract.
    pub fn default_rules() -> Vec<NamespaceRule> {
        use ContactChannel::{CallCenter, Email, Push, Sms, Store, Web};
        let r = |name: &str, kind, priority, unique, max_per_profile, reaches: &[ContactChannel]| NamespaceRule {
            name: name.to_string(),
            kind,
            priority,
            unique,
            links: kind != Kind::Household,
            max_per_profile,
            reaches: Some(reaches.to_vec()),
        };
        vec![
            r("customer_id", Kind::Person, 100, true, None, &[Store, CallCenter]),
            r("loyalty_id", Kind::Person, 90, true, None, &[Store]),
            r(EMAIL_SHA256, Kind::Person, 80, false, None, &[Email]),
            r(PHONE_SHA256, Kind::Person, 70, false, None, &[Sms, CallCenter]),
            r("device_id", Kind::Device, 40, false, Some(10), &[Push]),
            r("cookie_id", Kind::Device, 30, false, Some(20), &[Web]),
            r("card_token", Kind::Household, 10, false, Some(10), &[]),
        ]
    }

    /// Each rule's contact channels: its own, else the built-in rule's of
    /// the same name, else none.
    fn routes_of(rules: &[NamespaceRule]) -> Vec<Vec<ContactChannel>> {
        let builtin = Self::default_rules();
        rules
            .iter()
            .map(|rule| {
                rule.reaches
                    .clone()
                    .or_else(|| {
                        builtin
                            .iter()
                            .find(|b| b.name == rule.name)
                            .and_then(|b| b.reaches.clone())
                    })
                    .unwrap_or_default()
            })
            .collect()
    }

    pub fn new(rules: Vec<NamespaceRule>, norm: NormaliseConfig) -> Result<Self, NamespaceError> {
        if rules.len() > 200 {
            return Err(NamespaceError::TooMany);
        }
        let mut by_name = HashMap::new();
        for (i, rule) in rules.iter().enumerate() {
            if rule.name == "email" || rule.name == "phone" {
                return Err(NamespaceError::Reserved(rule.name.clone()));
            }
            let idx = u8::try_from(i).map_err(|_| NamespaceError::TooMany)?;
            if by_name.insert(rule.name.clone(), Ns(idx)).is_some() {
                return Err(NamespaceError::Duplicate(rule.name.clone()));
            }
        }
        let email = *by_name.get(EMAIL_SHA256).ok_or(NamespaceError::Missing(EMAIL_SHA256))?;
        let phone = *by_name.get(PHONE_SHA256).ok_or(NamespaceError::Missing(PHONE_SHA256))?;
        let patterns = norm
            .blocked_patterns
            .iter()
            .map(|p| {
                regex::Regex::new(p).map_err(|e| NamespaceError::Pattern {
                    pattern: p.clone(),
                    reason: e.to_string(),
                })
            })
            .collect::<Result<_, _>>()?;
        let routes = Self::routes_of(&rules);
        Ok(Namespaces {
            routes,
            rules,
            by_name,
            email,
            phone,
            norm,
            patterns,
            limits: IdentityLimits::default(),
            key: crate::key::IdentityKey::development(),
        })
    }

    /// The same table with the identity key (the public development key
    /// until this is called).
    pub fn with_identity_key(mut self, key: crate::key::IdentityKey) -> Self {
        self.key = key;
        self
    }

    pub fn identity_key(&self) -> &crate::key::IdentityKey {
        &self.key
    }

    /// The same table with other graph limits.
    pub fn with_limits(mut self, limits: IdentityLimits) -> Result<Self, NamespaceError> {
        if limits.max_identifiers_per_profile < 2 {
            return Err(NamespaceError::Limits("max_identifiers_per_profile must be at least 2"));
        }
        if limits.shared_device_max_persons == 0 {
            return Err(NamespaceError::Limits("shared_device_max_persons must be at least 1"));
        }
        if self.rules.iter().any(|r| r.max_per_profile == Some(0)) {
            return Err(NamespaceError::Limits("max_per_profile must be at least 1"));
        }
        self.limits = limits;
        Ok(self)
    }

    pub fn limits(&self) -> &IdentityLimits {
        &self.limits
    }

    pub fn with_defaults() -> Self {
        match Namespaces::new(Self::default_rules(), NormaliseConfig::default()) {
            Ok(n) => n,
            Err(e) => unreachable!("default namespaces are valid: {e}"),
        }
    }

    pub fn rule(&self, ns: Ns) -> &NamespaceRule {
        &self.rules[usize::from(ns.0)]
    }

    /// A namespace's kind; `None` for an index the table does not have
    /// (where [`Namespaces::rule`] would panic).
    pub fn kind_of(&self, ns: Ns) -> Option<Kind> {
        self.rules.get(usize::from(ns.0)).map(|r| r.kind)
    }

    pub fn name(&self, ns: Ns) -> &str {
        &self.rule(ns).name
    }

    /// The namespace names, in table order (an `Ns` is an index into it).
    pub fn names(&self) -> Vec<&str> {
        self.rules.iter().map(|r| r.name.as_str()).collect()
    }

    /// The contact channels an identifier of `ns` reaches.
    pub fn routes(&self, ns: Ns) -> &[ContactChannel] {
        &self.routes[usize::from(ns.0)]
    }

    pub fn lookup(&self, name: &str) -> Option<Ns> {
        self.by_name.get(name).copied()
    }

    /// True when `name` may appear in an event's `identifiers`.
    pub fn accepts(&self, name: &str) -> bool {
        name == "email" || name == "phone" || self.by_name.contains_key(name)
    }

    /// Normalises one raw identifier: the outer error is an unknown namespace,
    /// the inner result the key or why its value was blocked.
    pub fn normalise(&self, name: &str, raw: &str) -> Result<Result<IdKey, BlockReason>, UnknownNamespace> {
        let (ns, value) = match name {
            "email" => (self.email, normalise_email(raw).map(|e| sha256_hex(&e))),
            "phone" => (
                self.phone,
                normalise_phone(raw, &self.norm.default_country_code).map(|p| sha256_hex(&p)),
            ),
            _ => {
                let ns = self.lookup(name).ok_or_else(|| UnknownNamespace(name.to_string()))?;
                let v = raw.trim();
                let v = if ns == self.email || ns == self.phone {
                    v.to_ascii_lowercase()
                } else {
                    v.to_string()
                };
                (ns, Ok(v))
            }
        };
        let checked = value.and_then(|v| self.check_junk(raw).map(|()| v));
        Ok(checked.map(|v| IdKey::new(ns, &v)))
    }

    /// Blocks values that are empty or well-known placeholders.
    fn check_junk(&self, raw: &str) -> Result<(), BlockReason> {
        let v = raw.trim().to_ascii_lowercase();
        if v.is_empty() {
            return Err(BlockReason::Empty);
        }
        const JUNK: &[&str] = &[
            "null",
            "nil",
            "none",
            "undefined",
            "nan",
            "-1",
            "anonymous",
            "guest",
            "unknown",
            "n/a",
            "[object object]",
            "test@test.com",
        ];
        let all_same_filler = v.chars().all(|c| c == '0') || v.chars().all(|c| c == '-');
        if all_same_filler
            || JUNK.contains(&v.as_str())
            || self
                .norm
                .extra_blocked_values
                .iter()
                .any(|b| b.eq_ignore_ascii_case(&v))
            || self.patterns.iter().any(|p| p.is_match(raw.trim()))
        {
            return Err(BlockReason::Junk);
        }
        Ok(())
    }
}

/// An identifier namespace the engine does not know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownNamespace(pub String);

impl fmt::Display for UnknownNamespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown identifier namespace {:?}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns() -> Namespaces {
        Namespaces::with_defaults()
    }

    #[test]
    fn email_is_normalised_then_hashed() {
        let n = ns();
        let a = n.normalise("email", "  Ann.Lee@Example.com ").unwrap().unwrap();
        let b = n
            .normalise("email_sha256", &sha256_hex("ann.lee@example.com").to_uppercase())
            .unwrap()
            .unwrap();
        assert_eq!(a, b);
        assert_eq!(n.name(a.ns()), "email_sha256");
        assert!(!a.value().contains('@'));
    }

    #[test]
    fn phone_forms_agree() {
        assert_eq!(normalise_phone("+44 20 7946 0000", "").unwrap(), "442079460000");
        assert_eq!(normalise_phone("0044-20-7946-0000", "").unwrap(), "442079460000");
        assert_eq!(normalise_phone("020 7946 0000", "44").unwrap(), "442079460000");
        assert_eq!(normalise_phone("0", "44"), Err(BlockReason::Junk));
        assert_eq!(normalise_phone("  ", ""), Err(BlockReason::Empty));
    }

    #[test]
    fn junk_values_are_blocked() {
        let n = ns();
        for junk in [
            "null",
            "NULL",
            " undefined ",
            "0000",
            "---",
            "-1",
            "guest",
            "[object Object]",
        ] {
            assert_eq!(
                n.normalise("cookie_id", junk).unwrap(),
                Err(BlockReason::Junk),
                "{junk}"
            );
        }
        assert_eq!(n.normalise("email", "null").unwrap(), Err(BlockReason::Junk));
        assert_eq!(n.normalise("device_id", "   ").unwrap(), Err(BlockReason::Empty));
        assert!(n.normalise("device_id", "d-1").unwrap().is_ok());
    }

    #[test]
    fn configured_patterns_block_values_and_bad_patterns_are_refused() {
        let norm = NormaliseConfig {
            blocked_patterns: vec!["^(test|dummy)[0-9]*$".into()],
            ..NormaliseConfig::default()
        };
        let n = Namespaces::new(Namespaces::default_rules(), norm).unwrap();
        assert_eq!(n.normalise("cookie_id", " test42 ").unwrap(), Err(BlockReason::Junk));
        assert_eq!(n.normalise("email", "dummy").unwrap(), Err(BlockReason::Junk));
        assert!(n.normalise("cookie_id", "latest42").unwrap().is_ok());
        let bad = NormaliseConfig {
            blocked_patterns: vec!["([".into()],
            ..NormaliseConfig::default()
        };
        assert!(matches!(
            Namespaces::new(Namespaces::default_rules(), bad),
            Err(NamespaceError::Pattern { .. })
        ));
    }

    #[test]
    fn unknown_namespace_is_an_error() {
        assert_eq!(ns().normalise("ssn", "1").unwrap_err(), UnknownNamespace("ssn".into()));
    }

    #[test]
    fn configured_namespaces_are_accepted() {
        let mut rules = Namespaces::default_rules();
        rules.push(NamespaceRule {
            name: "ticket_id".into(),
            kind: Kind::Person,
            priority: 20,
            unique: false,
            links: true,
            max_per_profile: None,
            reaches: None,
        });
        let n = Namespaces::new(rules, NormaliseConfig::default()).unwrap();
        assert!(n.accepts("ticket_id"));
        assert!(n.normalise("ticket_id", "t-1").unwrap().is_ok());
    }

    #[test]
    fn contact_routes_come_from_the_table() {
        let mut rules = Namespaces::default_rules();
        // A restated built-in namespace without `reaches` keeps its routes.
        rules[2].reaches = None;
        rules.push(NamespaceRule {
            name: "member_email".into(),
            kind: Kind::Person,
            priority: 20,
            unique: false,
            links: true,
            max_per_profile: None,
            reaches: Some(vec![ContactChannel::Email]),
        });
        rules.push(NamespaceRule {
            name: "ticket_id".into(),
            kind: Kind::Person,
            priority: 15,
            unique: false,
            links: true,
            max_per_profile: None,
            reaches: None,
        });
        let n = Namespaces::new(rules, NormaliseConfig::default()).unwrap();
        let routes = |name: &str| n.routes(n.lookup(name).unwrap()).to_vec();
        assert_eq!(routes(EMAIL_SHA256), vec![ContactChannel::Email]);
        assert_eq!(routes("member_email"), vec![ContactChannel::Email]);
        assert_eq!(routes("ticket_id"), Vec::<ContactChannel>::new());
        assert_eq!(
            routes("customer_id"),
            vec![ContactChannel::Store, ContactChannel::CallCenter]
        );
    }

    #[test]
    fn bad_tables_are_refused() {
        let mut rules = Namespaces::default_rules();
        rules.push(rules[0].clone());
        assert!(matches!(
            Namespaces::new(rules, NormaliseConfig::default()),
            Err(NamespaceError::Duplicate(_))
        ));
        let rules: Vec<_> = Namespaces::default_rules()
            .into_iter()
            .filter(|r| r.name != EMAIL_SHA256)
            .collect();
        assert_eq!(
            Namespaces::new(rules, NormaliseConfig::default()).unwrap_err(),
            NamespaceError::Missing(EMAIL_SHA256)
        );
    }
}
