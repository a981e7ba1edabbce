//! Reach: which contact channels a customer can be reached on.
//!
//! In: the identifiers of the customer's profile, the namespace table (each
//! namespace names the contact channels it reaches, `reaches` in config, so
//! a configured namespace can be a contact route too) and the push consent
//! on the journey. Out: a [`Reach`]. Keeps nothing.

use crate::ids::{IdKey, Namespaces};
use crate::vocab::ContactChannel;

/// Which channels a customer can be reached on.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Reach {
    /// Indexed by [`ContactChannel::index`].
    channels: [bool; ContactChannel::COUNT],
}

impl Reach {
    /// Reachable on exactly these channels.
    pub fn of(channels: impl IntoIterator<Item = ContactChannel>) -> Reach {
        let mut r = Reach::default();
        for c in channels {
            r.channels[c.index()] = true;
        }
        r
    }

    /// Reachable on every channel.
    pub fn all() -> Reach {
        Reach::of(ContactChannel::ALL)
    }

    /// The channels a profile holding `ids` can be reached on: every route
    /// of their namespaces; push only with consent (`push_opt_out` false).
    pub fn of_ids<'a>(ids: impl IntoIterator<Item = &'a IdKey>, ns: &Namespaces, push_opt_out: bool) -> Reach {
        let mut r = Reach::of(ids.into_iter().flat_map(|k| ns.routes(k.ns()).iter().copied()));
        if push_opt_out {
            r.channels[ContactChannel::Push.index()] = false;
        }
        r
    }

    pub fn allows(&self, c: ContactChannel) -> bool {
        self.channels[c.index()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Namespaces;

    fn key(ns: &Namespaces, name: &str) -> IdKey {
        ns.normalise(name, "v-1").unwrap().unwrap()
    }

    #[test]
    fn the_contract_namespaces_reach_as_before() {
        let ns = Namespaces::with_defaults();
        let reach = |names: &[&str], opt_out: bool| {
            let ids: Vec<IdKey> = names.iter().map(|n| key(&ns, n)).collect();
            Reach::of_ids(&ids, &ns, opt_out)
        };
        use ContactChannel::*;
        assert_eq!(reach(&["customer_id"], false), Reach::of([Store, CallCenter]));
        assert_eq!(reach(&["loyalty_id"], false), Reach::of([Store]));
        assert_eq!(reach(&["email_sha256"], false), Reach::of([Email]));
        assert_eq!(reach(&["phone_sha256"], false), Reach::of([Sms, CallCenter]));
        assert_eq!(reach(&["device_id"], false), Reach::of([Push]));
        assert_eq!(reach(&["device_id"], true), Reach::default());
        assert_eq!(reach(&["cookie_id"], false), Reach::of([Web]));
        assert_eq!(reach(&["card_token"], false), Reach::default());
    }
}
