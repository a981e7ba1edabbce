//! Two journeys made one, when the identity graph merges two profiles.
//!
//! In: the survivor's [`Journey`] and the absorbed one. Out: the survivor,
//! holding both. Counts add, times take the outer bounds, the newer cart and
//! the newer call facts win, histories interleave by time; nothing is
//! dropped beyond the usual caps (`KEPT_TIMES`, `RECENT_ACTIONS`,
//! `RECENT_EVENTS`, `CHURN_HISTORY`).

use crate::time::EventTime;

use super::{keep_time, Journey, LocalClock, RecentAction, RECENT_ACTIONS};

fn min_t(a: Option<EventTime>, b: Option<EventTime>) -> Option<EventTime> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    }
}

fn max_t(a: Option<EventTime>, b: Option<EventTime>) -> Option<EventTime> {
    a.max(b)
}

impl Journey {
    /// Combines another profile's journey into this one (a merge). Counts add,
    /// times take the outer bounds, the newer cart and the newer call facts win.
    pub fn absorb(&mut self, mut other: Journey) {
        let other_newer_cart = other.cart.updated_at > self.cart.updated_at;
        self.first_seen = min_t(self.first_seen, other.first_seen);
        self.last_seen = max_t(self.last_seen, other.last_seen);
        // Both profiles' quiet timers still exist; the earlier one is live
        // and re-arms for the merged journey, the other finds itself stale.
        self.quiet_due = min_t(self.quiet_due, other.quiet_due);
        for (mine, theirs) in self.channels.iter_mut().zip(&other.channels) {
            mine.events += theirs.events;
            mine.last_seen = max_t(mine.last_seen.get(), theirs.last_seen.get()).into();
        }
        self.purchases += other.purchases;
        self.revenue += other.revenue;
        for (m, t) in self.purchases_by_channel.iter_mut().zip(other.purchases_by_channel) {
            *m += t;
        }
        self.last_purchase = max_t(self.last_purchase, other.last_purchase);
        self.returns += other.returns;
        self.returned_value += other.returned_value;
        if other_newer_cart {
            self.cart = std::mem::take(&mut other.cart);
        }
        self.checkouts_started += other.checkouts_started;
        self.last_checkout_start
            .set(max_t(*self.last_checkout_start, *other.last_checkout_start));
        self.absorb_calls(&other);
        self.push_opt_out |= other.push_opt_out;
        self.consent.absorb(&other.consent);
        if let Some(push) = self.consent.push {
            // The winning push statement decides, whichever side it came from.
            self.push_opt_out = !push.granted;
        }
        self.local_clock
            .set(LocalClock::join(*self.local_clock, *other.local_clock));
        self.tier = self.tier.min(other.tier);
        self.absorb_history(other);
    }

    /// Complaints, cancel requests and call facts; the newer call's CSAT and
    /// sentiment win.
    fn absorb_calls(&mut self, other: &Journey) {
        let other_newer_call = other.call.last_call > self.call.last_call;
        self.complaints += other.complaints;
        self.cancel_requests += other.cancel_requests;
        self.last_complaint
            .set(max_t(*self.last_complaint, *other.last_complaint));
        self.call.calls += other.call.calls;
        self.call.resolved += other.call.resolved;
        self.call.unresolved += other.call.unresolved;
        self.call.escalated += other.call.escalated;
        self.call.abandoned += other.call.abandoned;
        self.call.last_call = max_t(self.call.last_call, other.call.last_call);
        if other_newer_call {
            self.last_csat = other.last_csat.or(self.last_csat);
            self.last_sentiment.set(other.last_sentiment.or(*self.last_sentiment));
        } else {
            self.last_csat = self.last_csat.or(other.last_csat);
            self.last_sentiment.set(self.last_sentiment.or(*other.last_sentiment));
        }
    }

    /// The time series, the last product view, contacts and decisions.
    fn absorb_history(&mut self, other: Journey) {
        for t in other.visits {
            keep_time(&mut self.visits, t);
        }
        for t in other.complaint_times {
            keep_time(&mut self.complaint_times, t);
        }
        for t in other.unresolved_times {
            keep_time(&mut self.unresolved_times, t);
        }
        self.last_service_issue
            .set(max_t(*self.last_service_issue, *other.last_service_issue));
        if other.last_product_view.as_ref().map(|v| v.at) > self.last_product_view.as_ref().map(|v| v.at) {
            self.last_product_view = other.last_product_view;
        }
        self.absorb_events(other.recent_events);
        for c in other.contacts {
            self.record_contact(c.at, c.channel);
        }
        for c in other.responses {
            self.record_response(c.at, c.channel);
        }
        for (action, n) in other.ignored {
            *self.ignored.entry(action).or_insert(0) += n;
        }
        // The band reported downstream stays the survivor's; the next
        // evaluation re-scores the combined journey.
        if self.churn.band.is_none() {
            self.churn.band = other.churn.band;
        }
        self.absorb_churn(other.churn.history);
        self.churn_examples.absorb(other.churn_examples);
        for (action, at) in other.last_action {
            self.last_action
                .entry(action)
                .and_modify(|t| *t = (*t).max(at))
                .or_insert(at);
        }
        let mut recent: Vec<RecentAction> = self.recent_actions.drain(..).chain(other.recent_actions).collect();
        recent.sort_by(|a, b| {
            b.decided_at
                .cmp(&a.decided_at)
                .then_with(|| a.action_id.cmp(&b.action_id))
        });
        recent.truncate(RECENT_ACTIONS);
        self.recent_actions.set(recent.into());
    }
}
