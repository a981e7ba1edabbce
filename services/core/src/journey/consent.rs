//! What a customer said about being contacted, and where their clock is.
//!
//! In: consent statements (opt-in / opt-out for e-mail, SMS or push, at an
//! event time), carried by channel events, by the app's `push_opt_in` /
//! `push_opt_out` events and by `identity-control` consent commands; the
//! customer's UTC offset, carried by events. Out: [`Consents`] and
//! [`LocalClock`], read by the contact policy and the lookup API. Keeps the
//! newest statement per channel and the newest offset.
//!
//! Invariant: both are joins (commutative, associative, idempotent): the
//! statement with the later event time wins, an opt-out wins a tie; so the
//! order events, commands and merges come in does not change the result.

use serde::{Deserialize, Serialize};

use crate::time::EventTime;
use crate::vocab::ContactChannel;

/// One consent statement: given (`granted`) or withdrawn, at an event time.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentStatement {
    pub granted: bool,
    pub at: EventTime,
}

impl ConsentStatement {
    /// True when `self` wins over `other`: later, or as late and an opt-out.
    fn beats(&self, other: &ConsentStatement) -> bool {
        self.at > other.at || (self.at == other.at && !self.granted && other.granted)
    }
}

/// The newest consent statement per channel that needs consent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consents {
    pub email: Option<ConsentStatement>,
    pub sms: Option<ConsentStatement>,
    pub push: Option<ConsentStatement>,
}

impl Consents {
    /// The channels that need consent.
    pub const CHANNELS: [ContactChannel; 3] = [ContactChannel::Email, ContactChannel::Sms, ContactChannel::Push];

    fn slot(&mut self, c: ContactChannel) -> Option<&mut Option<ConsentStatement>> {
        match c {
            ContactChannel::Email => Some(&mut self.email),
            ContactChannel::Sms => Some(&mut self.sms),
            ContactChannel::Push => Some(&mut self.push),
            _ => None,
        }
    }

    /// The newest statement on `c` (`None`: none known, or `c` needs no consent).
    pub fn get(&self, c: ContactChannel) -> Option<ConsentStatement> {
        match c {
            ContactChannel::Email => self.email,
            ContactChannel::Sms => self.sms,
            ContactChannel::Push => self.push,
            _ => None,
        }
    }

    /// Records a statement; true when it is now the one that holds.
    pub fn record(&mut self, c: ContactChannel, s: ConsentStatement) -> bool {
        let Some(slot) = self.slot(c) else {
            return false;
        };
        if slot.is_none_or(|old| s.beats(&old)) {
            *slot = Some(s);
            return true;
        }
        false
    }

    /// Both profiles' statements, per channel the winning one (a merge).
    pub fn absorb(&mut self, other: &Consents) {
        for c in Self::CHANNELS {
            if let Some(s) = other.get(c) {
                self.record(c, s);
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == Consents::default()
    }
}

/// The customer's offset from UTC, in minutes, as the newest event that
/// carried one said.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalClock {
    pub utc_offset_minutes: i16,
    pub at: EventTime,
}

impl LocalClock {
    /// The later of the two (the larger offset on a tie, so the join does
    /// not depend on order).
    pub fn join(a: Option<LocalClock>, b: Option<LocalClock>) -> Option<LocalClock> {
        match (a, b) {
            (Some(x), Some(y)) => Some(if (y.at, y.utc_offset_minutes) > (x.at, x.utc_offset_minutes) {
                y
            } else {
                x
            }),
            (x, y) => x.or(y),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s(granted: bool, at: i64) -> ConsentStatement {
        ConsentStatement {
            granted,
            at: EventTime::from_millis(at),
        }
    }

    #[test]
    fn the_newest_statement_wins_and_an_opt_out_wins_a_tie() {
        let mut c = Consents::default();
        assert!(c.record(ContactChannel::Email, s(false, 10)));
        assert!(!c.record(ContactChannel::Email, s(true, 5)), "older opt-in loses");
        assert!(!c.record(ContactChannel::Email, s(true, 10)), "opt-in loses the tie");
        assert_eq!(c.get(ContactChannel::Email), Some(s(false, 10)));
        assert!(c.record(ContactChannel::Email, s(true, 11)), "a later opt-in wins");
        assert_eq!(c.get(ContactChannel::Email), Some(s(true, 11)));
        assert!(!c.record(ContactChannel::Web, s(false, 1)), "web needs no consent");
        assert_eq!(c.get(ContactChannel::Web), None);
    }

    fn statement() -> impl Strategy<Value = (usize, bool, i64)> {
        (0..3usize, any::<bool>(), 0..20i64)
    }

    proptest! {
        /// Any order, and any split into two profiles merged either way,
        /// gives the same consents.
        #[test]
        fn consent_does_not_depend_on_order_or_merges(
            list in proptest::collection::vec(statement(), 0..24),
            split in 0..24usize,
        ) {
            let apply = |items: &[(usize, bool, i64)]| {
                let mut c = Consents::default();
                for (ch, g, at) in items {
                    c.record(Consents::CHANNELS[*ch], s(*g, *at));
                }
                c
            };
            let forward = apply(&list);
            let mut rev = list.clone();
            rev.reverse();
            prop_assert_eq!(&forward, &apply(&rev));
            let cut = split.min(list.len());
            let (a, b) = list.split_at(cut);
            let mut ab = apply(a);
            ab.absorb(&apply(b));
            let mut ba = apply(b);
            ba.absorb(&apply(a));
            prop_assert_eq!(&forward, &ab);
            prop_assert_eq!(&forward, &ba);
        }
    }
}
