//! The contact policy per channel: may one more message go to this customer
//! on this channel at this event time?
//!
//! In: the `[decide.policy]` settings ([`ContactPolicy`]), the journey (its
//! contacts, engagements, consent and local clock), a channel and `now`.
//! Out: `Ok` or the [`Suppressed`] rule that holds the message back. Keeps
//! nothing.
//!
//! The rules, in the order they are checked:
//! - quiet hours in the customer's local time (`quiet.rs`);
//! - consent: e-mail, SMS and push need it; the newest statement the
//!   customer made holds, and without one the configured default
//!   (`policy.consent`);
//! - no response: after `no_response.after` messages in a row on a channel
//!   with no engagement (opened, clicked, converted) within
//!   `no_response.within` of each, the channel rests for
//!   `no_response.suppress_for`;
//! - the per-channel caps (`policy.caps`);
//! - the cross-channel budget (`policy.budget`): at most `max` messages over
//!   every channel in any window of `per`.
//!
//! Windows count messages within `per` on either side of `now`, so decisions
//! taken out of event-time order (late events, timers) cannot overfill a
//! window either: with `max - 1` others within `per` of each message, no
//! window of length `per` ever holds more than `max`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::journey::{Contact, Journey};
use crate::time::EventTime;
use crate::vocab::{ContactChannel, Suppressed};

use super::quiet::quiet_until;
use super::{ContactPolicy, Reach};

/// At most `max` messages over every channel in any window of `per`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    pub max: u32,
    #[serde(with = "humantime_serde")]
    pub per: Duration,
}

/// Rest a channel the customer does not respond on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoResponse {
    /// This many messages in a row on one channel with no engagement...
    pub after: u32,
    /// ...within this long of each...
    #[serde(with = "humantime_serde")]
    pub within: Duration,
    /// ...rest that channel this long (from when the last one's wait ended).
    #[serde(with = "humantime_serde")]
    pub suppress_for: Duration,
}

/// What holds when the customer has said nothing about a channel.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentDefault {
    OptIn,
    OptOut,
}

/// The default consent of the channels that need consent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentDefaults {
    pub email: ConsentDefault,
    pub sms: ConsentDefault,
    pub push: ConsentDefault,
}

impl Default for ConsentDefaults {
    /// As before consent per channel existed: reachable means allowed.
    fn default() -> Self {
        ConsentDefaults {
            email: ConsentDefault::OptIn,
            sms: ConsentDefault::OptIn,
            push: ConsentDefault::OptIn,
        }
    }
}

impl ConsentDefaults {
    fn of(&self, c: ContactChannel) -> bool {
        let d = match c {
            ContactChannel::Email => self.email,
            ContactChannel::Sms => self.sms,
            ContactChannel::Push => self.push,
            _ => return true,
        };
        d == ConsentDefault::OptIn
    }
}

/// True when the customer consents to messages on `c` (channels that need
/// no consent always do).
pub fn consented(p: &ContactPolicy, j: &Journey, c: ContactChannel) -> bool {
    match j.consent.get(c) {
        Some(s) => s.granted,
        // Snapshots from before consent per channel kept only this flag.
        None if c == ContactChannel::Push && j.push_opt_out => false,
        None => p.consent.of(c),
    }
}

/// The first of `channels` (in the catalog's order of preference) that
/// reaches the customer, has consent and that [`allows`] at `now`. None:
/// `Unreachable` when no channel reaches them, `NoConsent` when every one
/// that reaches them lacks consent, `Budget` when the budget is used up,
/// `QuietHours` when a channel is only held back by them, else the rule
/// that held back the first consented channel.
pub fn channel(
    p: &ContactPolicy,
    j: &Journey,
    reach: &Reach,
    channels: &[ContactChannel],
    now: EventTime,
) -> Result<ContactChannel, Suppressed> {
    let reachable: Vec<ContactChannel> = channels.iter().copied().filter(|c| reach.allows(*c)).collect();
    if reachable.is_empty() {
        return Err(Suppressed::Unreachable);
    }
    let mut held = Vec::new();
    for c in reachable.into_iter().filter(|c| consented(p, j, *c)) {
        match allows(p, j, c, now) {
            Ok(()) => return Ok(c),
            Err(why) => held.push(why),
        }
    }
    // The budget holds every channel back; quiet hours end (so the action
    // can be deferred); else the first channel's rule.
    let why = [Suppressed::Budget, Suppressed::QuietHours]
        .into_iter()
        .find(|w| held.contains(w))
        .or(held.first().copied());
    Err(why.unwrap_or(Suppressed::NoConsent))
}

/// `Ok` when one more message on `c` at `now` keeps every rule but consent
/// (which decides reach); else the first rule it breaks.
pub fn allows(p: &ContactPolicy, j: &Journey, c: ContactChannel, now: EventTime) -> Result<(), Suppressed> {
    if p.quiet_hours
        .as_ref()
        .is_some_and(|q| quiet_until(q, *j.local_clock, c, now).is_some())
    {
        return Err(Suppressed::QuietHours);
    }
    if p.no_response.as_ref().is_some_and(|r| resting(r, j, c, now)) {
        return Err(Suppressed::NoResponse);
    }
    if !under_caps(p, j, c, now) {
        return Err(Suppressed::Capped);
    }
    if p.budget
        .as_ref()
        .is_some_and(|b| !under(b.max, b.per, &j.contacts, |_| true, now))
    {
        return Err(Suppressed::Budget);
    }
    Ok(())
}

/// True when one more message on `channel` at `now` keeps every window of
/// every cap on that channel within its maximum.
pub fn under_caps(p: &ContactPolicy, j: &Journey, channel: ContactChannel, now: EventTime) -> bool {
    p.caps
        .iter()
        .filter(|c| c.channel == channel)
        .all(|cap| under(cap.max, cap.per, &j.contacts, |c| c.channel == channel, now))
}

/// Fewer than `max` of the contacts that `counts` within `per` of `now`.
fn under(max: u32, per: Duration, contacts: &[Contact], counts: impl Fn(&Contact) -> bool, now: EventTime) -> bool {
    let (from, to) = (now.minus(per), now.plus(per));
    let n = contacts
        .iter()
        .filter(|c| counts(c) && c.at > from && c.at < to)
        .count();
    n < max as usize
}

/// True when the newest `r.after` messages on `c` before `now` all went
/// unanswered (their wait `r.within` over, no engagement on `c` in it) and
/// the rest after the newest one's wait has not ended.
fn resting(r: &NoResponse, j: &Journey, c: ContactChannel, now: EventTime) -> bool {
    if r.after == 0 {
        return false;
    }
    let mut sent = j.contacts.iter().rev().filter(|x| x.channel == c && x.at <= now);
    let Some(newest) = sent.clone().next() else {
        return false;
    };
    let unanswered = |x: &Contact| {
        let end = x.at.plus(r.within);
        end <= now
            && !j
                .responses
                .iter()
                .any(|e| e.channel == c && e.at >= x.at && e.at <= end)
    };
    let run = sent.by_ref().take(r.after as usize).filter(|x| unanswered(x)).count();
    run == r.after as usize && now < newest.at.plus(r.within).plus(r.suppress_for)
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
