//! One event applied to a journey.
//!
//! In: a validated [`ChannelEvent`], not a duplicate (the processor dedupes).
//! Out: the [`Transition`]s it caused, in the order they happened, for the
//! decision stage. Keeps: what the event changed in the [`Journey`].
//!
//! Invariant: every time kept moves only outward (`first_seen` earlier,
//! `last_*` later), so events applied out of order leave the same state.

use crate::event::{Activity, CallOutcome, CallReason, Channel, ChannelEvent, Product};
use crate::time::EventTime;
use crate::vocab::ContactChannel;

use super::{keep_time, CartLine, Journey, LocalClock, ProductView, Stage, CONTINUITY_WINDOW, VISIT_GAP};

/// What an event changed, for the decision stage.
#[derive(Clone, Debug, PartialEq)]
pub enum Transition {
    CartChanged {
        value: f64,
    },
    Purchased {
        value: f64,
    },
    Returned {
        value: f64,
    },
    /// A product was looked at (web product view or app add to cart).
    ProductViewed {
        at: EventTime,
    },
    /// The customer is active on another channel than the one where they
    /// last looked at a product they have not bought.
    ChannelSwitch {
        sku: String,
        from: Channel,
    },
    /// A call that left the customer unhappy: a complaint, an unresolved or
    /// escalated outcome, a low CSAT or a negative sentiment.
    ServiceIssue {
        complaint: bool,
        cancel_request: bool,
    },
    StageChanged {
        from: Stage,
        to: Stage,
    },
}

/// The fields of an [`Activity::Call`].
struct Call {
    reason: Option<CallReason>,
    outcome: Option<CallOutcome>,
    csat: Option<u8>,
    sentiment: Option<f64>,
}

impl Journey {
    /// Applies one event. The caller guarantees it is not a duplicate.
    pub fn apply(&mut self, ev: &ChannelEvent) -> Vec<Transition> {
        let at = ev.occurred_at;
        let before = self.stage();
        let mut out = Vec::new();
        self.remember(ev);
        self.seen(ev, &mut out);
        for (channel, granted) in &ev.consent {
            self.record_consent(*channel, *granted, at);
        }
        if let Some(m) = ev.utc_offset_minutes {
            let clock = LocalClock {
                utc_offset_minutes: m,
                at,
            };
            self.local_clock.set(LocalClock::join(*self.local_clock, Some(clock)));
        }
        match &ev.activity {
            Activity::AddToCart(p) => self.add_to_cart(p, ev.channel, at, &mut out),
            Activity::RemoveFromCart(p) => self.remove_from_cart(p, at, &mut out),
            Activity::CheckoutStart => {
                self.checkouts_started += 1;
                self.last_checkout_start
                    .set(Some(self.last_checkout_start.map_or(at, |l| l.max(at))));
            }
            Activity::Purchase { revenue } => out.push(self.purchase(ev.channel, *revenue, at)),
            Activity::Sale { total, .. } => out.push(self.purchase(ev.channel, *total, at)),
            Activity::Return { total } => {
                self.returns += 1;
                self.returned_value += total;
                out.push(Transition::Returned { value: *total });
            }
            Activity::PushOptIn => self.record_consent(ContactChannel::Push, true, at),
            Activity::PushOptOut => self.record_consent(ContactChannel::Push, false, at),
            Activity::Call {
                reason,
                outcome,
                csat,
                sentiment,
                ..
            } => {
                let call = Call {
                    reason: *reason,
                    outcome: *outcome,
                    csat: *csat,
                    sentiment: *sentiment,
                };
                out.extend(self.took_call(&call, at));
            }
            Activity::ProductView(Some(p)) => self.saw_product(&p.sku, ev.channel, at, &mut out),
            Activity::PageView
            | Activity::ProductView(None)
            | Activity::Search
            | Activity::Login
            | Activity::Signup
            | Activity::SessionStart
            | Activity::ScreenView
            | Activity::SessionEnd => {}
        }
        let after = self.stage();
        if after != before {
            out.push(Transition::StageChanged {
                from: before,
                to: after,
            });
        }
        out
    }

    /// What any event says: a visit, a channel switch, when and where the
    /// customer was seen.
    fn seen(&mut self, ev: &ChannelEvent, out: &mut Vec<Transition>) {
        let at = ev.occurred_at;
        if self.last_seen.is_none_or(|l| at > l.plus(VISIT_GAP)) {
            keep_time(&mut self.visits, at);
        }
        if let Some(v) = &*self.last_product_view {
            let browsing = matches!(
                ev.activity,
                Activity::SessionStart | Activity::ScreenView | Activity::PageView | Activity::Login
            );
            let unbought = self.last_purchase.is_none_or(|p| p < v.at);
            if browsing && v.channel != ev.channel && at > v.at && at <= v.at.plus(CONTINUITY_WINDOW) && unbought {
                out.push(Transition::ChannelSwitch {
                    sku: v.sku.clone(),
                    from: v.channel,
                });
            }
        }
        self.first_seen = Some(self.first_seen.map_or(at, |f| f.min(at)));
        self.last_seen = Some(self.last_seen.map_or(at, |l| l.max(at)));
        let ch = &mut self.channels[ev.channel.index()];
        ch.events += 1;
        ch.last_seen.extend_to(at);
    }

    fn add_to_cart(&mut self, p: &Product, channel: Channel, at: EventTime, out: &mut Vec<Transition>) {
        self.saw_product(&p.sku, channel, at, out);
        let line = self.cart.items.entry(p.sku.clone()).or_insert(CartLine {
            quantity: 0,
            unit_price: p.price,
            category: p.category.clone(),
        });
        line.quantity += 1;
        line.unit_price = p.price;
        self.touch_cart(at);
        out.push(Transition::CartChanged {
            value: self.cart.value(),
        });
    }

    fn remove_from_cart(&mut self, p: &Product, at: EventTime, out: &mut Vec<Transition>) {
        if let Some(line) = self.cart.items.get_mut(&p.sku) {
            line.quantity = line.quantity.saturating_sub(1);
            if line.quantity == 0 {
                self.cart.items.remove(&p.sku);
            }
        }
        self.touch_cart(at);
        out.push(Transition::CartChanged {
            value: self.cart.value(),
        });
    }

    /// A call: counts, complaint and unresolved times, the last CSAT and
    /// sentiment; a service issue when it left the customer unhappy.
    fn took_call(&mut self, c: &Call, at: EventTime) -> Option<Transition> {
        self.call.calls += 1;
        self.call.last_call = Some(self.call.last_call.map_or(at, |l| l.max(at)));
        match c.outcome {
            Some(CallOutcome::Resolved) => self.call.resolved += 1,
            Some(CallOutcome::Unresolved) => self.call.unresolved += 1,
            Some(CallOutcome::Escalated) => self.call.escalated += 1,
            Some(CallOutcome::Abandoned) => self.call.abandoned += 1,
            None => {}
        }
        let complaint = c.reason == Some(CallReason::Complaint);
        let cancel_request = c.reason == Some(CallReason::CancelRequest);
        if matches!(c.outcome, Some(CallOutcome::Unresolved | CallOutcome::Escalated)) {
            keep_time(&mut self.unresolved_times, at);
        }
        if complaint || cancel_request {
            self.last_service_issue
                .set(Some(self.last_service_issue.map_or(at, |l| l.max(at))));
        }
        if complaint {
            keep_time(&mut self.complaint_times, at);
            self.complaints += 1;
            self.last_complaint
                .set(Some(self.last_complaint.map_or(at, |l| l.max(at))));
        }
        if cancel_request {
            self.cancel_requests += 1;
        }
        if c.csat.is_some() {
            self.last_csat = c.csat;
        }
        if c.sentiment.is_some() {
            self.last_sentiment.set(c.sentiment);
        }
        let unhappy = matches!(c.outcome, Some(CallOutcome::Unresolved | CallOutcome::Escalated))
            || c.csat.is_some_and(|v| v <= 2)
            || c.sentiment.is_some_and(|s| s <= -0.5);
        (complaint || cancel_request || unhappy).then_some(Transition::ServiceIssue {
            complaint,
            cancel_request,
        })
    }

    fn saw_product(&mut self, sku: &str, channel: Channel, at: EventTime, out: &mut Vec<Transition>) {
        if self.last_product_view.as_ref().is_none_or(|v| v.at <= at) {
            *self.last_product_view = Some(ProductView {
                sku: sku.to_string(),
                channel,
                at,
            });
            out.push(Transition::ProductViewed { at });
        }
    }

    fn touch_cart(&mut self, at: EventTime) {
        self.cart.updated_at = Some(self.cart.updated_at.map_or(at, |u| u.max(at)));
    }

    fn purchase(&mut self, channel: Channel, value: f64, at: EventTime) -> Transition {
        self.purchases += 1;
        self.revenue += value;
        self.purchases_by_channel[channel.index()] += 1;
        self.last_purchase = Some(self.last_purchase.map_or(at, |l| l.max(at)));
        // A purchase at or after the last cart change closes the open cart.
        if self.cart.updated_at.is_none_or(|u| u <= at) {
            self.cart.free();
        }
        Transition::Purchased { value }
    }
}
