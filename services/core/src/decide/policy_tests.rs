//! Tests of the contact policy per channel: budget, consent, no-response.

use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::decide::Cap;
use crate::journey::ConsentStatement;

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

fn t(hours: i64) -> EventTime {
    EventTime::from_millis(1_793_491_200_000 + hours * 3_600_000)
}

fn policy() -> ContactPolicy {
    ContactPolicy {
        caps: vec![
            Cap {
                channel: ContactChannel::Email,
                max: 1,
                per: 7 * DAY,
            },
            Cap {
                channel: ContactChannel::Push,
                max: 3,
                per: DAY,
            },
        ],
        quiet_after_complaint: 7 * DAY,
        ignore_limit: 3,
        budget: Some(Budget { max: 5, per: 7 * DAY }),
        consent: ConsentDefaults::default(),
        no_response: None,
        quiet_hours: None,
    }
}

use ContactChannel::*;

#[test]
fn the_budget_holds_back_a_sixth_message_in_a_week_over_all_channels() {
    let p = policy();
    let mut j = Journey::default();
    // Five messages in a week on channels whose own caps all allow more.
    for (h, c) in [(0, Email), (1, Push), (30, Push), (60, Web), (90, Store)] {
        assert_eq!(allows(&p, &j, c, t(h)), Ok(()), "{c:?} at {h} h");
        j.record_contact(t(h), c);
    }
    assert_eq!(allows(&p, &j, Web, t(100)), Err(Suppressed::Budget));
    assert_eq!(allows(&p, &j, Push, t(100)), Err(Suppressed::Budget));
    // A week after the first, one slot is free again.
    assert_eq!(allows(&p, &j, Web, t(7 * 24 + 1)), Ok(()));
    // Without a budget, only the caps count.
    let unbounded = ContactPolicy { budget: None, ..p };
    assert_eq!(allows(&unbounded, &j, Web, t(100)), Ok(()));
}

#[test]
fn a_channel_without_consent_is_skipped_for_the_next_one() {
    let mut p = policy();
    let mut j = Journey::default();
    let reach = Reach::of([Email, Push, Web]);
    assert_eq!(channel(&p, &j, &reach, &[Email, Push], t(0)), Ok(Email));
    j.record_consent(Email, false, t(0));
    assert_eq!(channel(&p, &j, &reach, &[Email, Push], t(1)), Ok(Push));
    j.record_consent(Push, false, t(1));
    assert_eq!(
        channel(&p, &j, &reach, &[Email, Push], t(2)),
        Err(Suppressed::NoConsent)
    );
    assert_eq!(
        channel(&p, &j, &reach, &[Email, Push, Web], t(2)),
        Ok(Web),
        "web needs none"
    );
    assert_eq!(channel(&p, &j, &reach, &[Sms], t(2)), Err(Suppressed::Unreachable));
    // Opting in again later holds.
    j.record_consent(Email, true, t(3));
    assert_eq!(channel(&p, &j, &reach, &[Email, Push], t(4)), Ok(Email));
    // The default decides when the customer said nothing.
    p.consent.sms = ConsentDefault::OptOut;
    let sms = Reach::of([Sms]);
    assert_eq!(channel(&p, &j, &sms, &[Sms], t(4)), Err(Suppressed::NoConsent));
    j.consent.record(
        Sms,
        ConsentStatement {
            granted: true,
            at: t(4),
        },
    );
    assert_eq!(channel(&p, &j, &sms, &[Sms], t(5)), Ok(Sms));
}

#[test]
fn a_channel_rests_after_messages_with_no_response() {
    let p = ContactPolicy {
        caps: Vec::new(),
        budget: None,
        no_response: Some(NoResponse {
            after: 3,
            within: 3 * DAY,
            suppress_for: 30 * DAY,
        }),
        ..policy()
    };
    let mut j = Journey::default();
    for d in [0, 5, 10] {
        assert_eq!(allows(&p, &j, Push, t(d * 24)), Ok(()));
        j.record_contact(t(d * 24), Push);
    }
    // The third one's wait is not over yet: no verdict.
    assert_eq!(allows(&p, &j, Push, t(11 * 24)), Ok(()));
    // Over: push rests; e-mail does not.
    assert_eq!(allows(&p, &j, Push, t(14 * 24)), Err(Suppressed::NoResponse));
    assert_eq!(allows(&p, &j, Email, t(14 * 24)), Ok(()));
    // Until 30 days after the third one's wait ended.
    assert_eq!(allows(&p, &j, Push, t(42 * 24)), Err(Suppressed::NoResponse));
    assert_eq!(allows(&p, &j, Push, t(43 * 24)), Ok(()));
    // An engagement within the wait of any of the three: no rest.
    let mut answered = j.clone();
    answered.record_response(t(5 * 24).plus(HOUR), Push);
    assert_eq!(allows(&p, &answered, Push, t(14 * 24)), Ok(()));
    // One too late (after the wait) does not count.
    let mut late = j.clone();
    late.record_response(t(13 * 24).plus(HOUR), Push);
    assert_eq!(allows(&p, &late, Push, t(14 * 24)), Err(Suppressed::NoResponse));
}

/// The largest number of `contacts` that `counts` in any window of `per`.
fn densest(contacts: &[Contact], per: Duration, counts: impl Fn(&Contact) -> bool) -> usize {
    let times: Vec<EventTime> = contacts.iter().filter(|c| counts(c)).map(|c| c.at).collect();
    times
        .iter()
        .map(|start| times.iter().filter(|x| **x >= *start && **x < start.plus(per)).count())
        .max()
        .unwrap_or(0)
}

proptest! {
    /// Decisions in any event-time order, on any channels: every window of
    /// a week holds at most the budget over all channels, and every cap's
    /// window at most its maximum.
    #[test]
    fn no_window_ever_holds_more_than_the_budget_or_a_cap(
        tries in proptest::collection::vec((0..24 * 40i64, 0..ContactChannel::COUNT), 1..120),
    ) {
        let p = policy();
        let mut j = Journey::default();
        for (h, c) in tries {
            let c = ContactChannel::ALL[c];
            if allows(&p, &j, c, t(h)).is_ok() {
                j.record_contact(t(h), c);
            }
        }
        let sent: Vec<Contact> = j.contacts.iter().cloned().collect();
        let budget = p.budget.clone().unwrap();
        prop_assert!(densest(&sent, budget.per, |_| true) <= budget.max as usize);
        for cap in &p.caps {
            prop_assert!(densest(&sent, cap.per, |c| c.channel == cap.channel) <= cap.max as usize);
        }
    }
}

#[test]
fn bad_policy_values_fail_with_their_key() {
    let base = crate::testkit::default_decide();
    let check = |f: &dyn Fn(&mut crate::decide::DecideConfig)| {
        let mut cfg = base.clone();
        f(&mut cfg);
        cfg.validate().unwrap_err().to_string()
    };
    assert_eq!(
        check(&|c| c.policy.budget = Some(Budget { max: 0, per: DAY })),
        "decide.policy.budget: max and per must be > 0"
    );
    assert_eq!(
        check(&|c| c.policy.no_response.as_mut().unwrap().within = Duration::ZERO),
        "decide.policy.no_response: after, within and suppress_for must be > 0"
    );
    assert_eq!(
        check(&|c| c.policy.quiet_hours.as_mut().unwrap().channels.clear()),
        "decide.policy.quiet_hours: channels is empty"
    );
    let text = r#"start = "25:00"
end = "08:00"
channels = ["sms"]
during = "defer""#;
    let e = toml::from_str::<crate::decide::quiet::QuietHours>(text).unwrap_err();
    assert!(e.to_string().contains("not a time of day HH:MM"), "{e}");
}
