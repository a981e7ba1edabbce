//! Event-time timers: cart abandonment, browse abandonment, quiet customers,
//! and actions deferred to the end of a customer's quiet hours.
//! and the churn model's labels (see `labels.rs`).
//!
//! In: the journey after an event and the transitions it caused (to arm);
//! the watermark passing a timer's due time (to fire, see `order.rs`). Out:
//! the evaluation of the journey at the due time, with the trigger the timer
//! stands for. Keeps the armed timers, each keyed by an identifier of the
//! profile so it follows the profile through merges, and homed with the
//! journey that armed it (see `timer_set.rs`): a timer armed or gone marks
//! its home changed, for the next checkpoint's journey record.
//!
//! The abandonment conditions are the decision stage's
//! ([`crate::decide::triggers`]): a timer re-checks them on the journey as it
//! is when it fires, so a cart touched since, or a view followed by another,
//! fires nothing.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::decide::triggers::{browse_due, cart_abandoned, cart_due};
use crate::decide::{DecideConfig, Trigger};
use crate::identity::OneId;
use crate::ids::IdKey;
use crate::journey::{Journey, Transition};
use crate::output::{Output, TriggerRef};
use crate::state::Stored;
use crate::time::EventTime;

use super::timer_set::Timer;
use super::Processor;

#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TimerKind {
    Cart,
    Browse,
    Quiet,
    /// An action held back by quiet hours: decide this trigger again when
    /// they end.
    Deferred(Trigger),
    /// The churn horizon of a remembered example ended: label it.
    ChurnLabel,
}

impl TimerKind {
    /// The `timer` name of the trigger in outputs.
    pub fn label(self) -> &'static str {
        match self {
            TimerKind::Cart => "cart_abandonment",
            TimerKind::Browse => "browse_abandonment",
            TimerKind::Quiet => "inactivity",
            TimerKind::Deferred(_) => "quiet_hours_end",
            TimerKind::ChurnLabel => "churn_label",
        }
    }
}

impl Processor {
    /// Arms `t` with its home (the One ID of the journey that arms it); a
    /// new timer marks the home changed for the next checkpoint.
    pub(super) fn add_timer(&mut self, t: Timer, home: &OneId) {
        if self.arm_timer(t, home) {
            self.state.touched(home);
        }
    }

    /// Arms the timers an event calls for, keyed by `anchor`, homed at
    /// `home` (the event's journey): an abandonment check when the cart
    /// changed or a product was looked at, and the profile's one quiet check
    /// when none is live.
    pub(super) fn arm(
        &mut self,
        j: &mut Journey,
        transitions: &[Transition],
        at: EventTime,
        anchor: &IdKey,
        home: &OneId,
    ) {
        let decide = &self.cfg.decide;
        let mut arm = Vec::new();
        for t in transitions {
            match t {
                Transition::CartChanged { .. } => {
                    arm.extend(cart_due(j, decide.cart_abandon_after).map(|d| (d, TimerKind::Cart)))
                }
                Transition::ProductViewed { .. } => {
                    arm.extend(browse_due(j, decide.browse_abandon_after).map(|d| (d, TimerKind::Browse)))
                }
                _ => {}
            }
        }
        // One quiet check per profile: a live one (due at or after this
        // event) re-arms itself when it finds the customer active.
        if j.last_seen == Some(at) && j.quiet_due.is_none_or(|d| d < at) {
            let due = at.plus(decide.quiet_after);
            j.quiet_due = Some(due);
            arm.push((due, TimerKind::Quiet));
        }
        for (due, kind) in arm {
            self.add_timer((due, kind, anchor.clone()), home);
        }
    }

    /// Defers `triggers` to `due` (the end of the customer's quiet hours).
    pub(super) fn defer(&mut self, one_id: &OneId, triggers: &[Trigger], due: EventTime) {
        let Some(anchor) = self
            .state
            .identity
            .with_profile(one_id, |p| p.ids().first().cloned())
            .flatten()
        else {
            return;
        };
        for t in triggers {
            self.add_timer((due, TimerKind::Deferred(*t), anchor.clone()), one_id);
        }
    }

    /// Fires the earliest timer; returns how many fired (0 or 1).
    pub(super) fn fire_next(&mut self, outputs: &mut Vec<Output>) -> usize {
        let Some(((due, kind, key), home)) = self.pop_timer() else {
            return 0;
        };
        // Its home's record no longer carries it.
        self.state.touched(&home);
        self.fire(due, kind, key, outputs);
        self.sync_sizes();
        1
    }

    /// Runs one timer: re-checks its condition on the journey as it is now
    /// (every event before `due` has been applied) and decides.
    fn fire(&mut self, due: EventTime, kind: TimerKind, key: IdKey, outputs: &mut Vec<Output>) {
        let Some(one_id) = self.state.identity.one_id_of(&key) else {
            return;
        };
        // Thawed here if frozen (a quiet customer's journey usually is),
        // so that the take below does not decode it again.
        if kind == TimerKind::Quiet
            && self
                .state
                .live_entry(&one_id)
                .is_none_or(|e| matches!(e.value(), Stored::Live(j) if j.quiet_due.is_some_and(|d| d != due)))
        {
            // A stale check: the profile's live one is due at another time
            // (two profiles merged), or the journey is gone.
            return;
        }
        if self.is_stale(kind, due, &one_id) {
            return;
        }
        let Some(mut taken) = self.take_journey(&one_id) else {
            return;
        };
        // Copied only when a checkpoint still holds it (see `State`).
        let j = Arc::make_mut(&mut taken);
        let cfg = self.cfg.clone();
        let cfg = &cfg.decide;
        let trigger = TriggerRef::timer(kind.label());
        match kind {
            TimerKind::Cart => {
                if still_due(kind, j, cfg, due) {
                    self.evaluate(&one_id, j, &[Trigger::CartAbandoned], due, &trigger, outputs);
                }
            }
            TimerKind::Browse => {
                if still_due(kind, j, cfg, due) {
                    self.evaluate(&one_id, j, &[Trigger::BrowseAbandoned], due, &trigger, outputs);
                }
            }
            TimerKind::Deferred(t) => self.evaluate(&one_id, j, &[t], due, &trigger, outputs),
            TimerKind::Quiet => {
                let last = j.last_seen.unwrap_or(due);
                let next = if last.plus(cfg.quiet_after) <= due {
                    self.evaluate(&one_id, j, &[Trigger::Lapsed], due, &trigger, outputs);
                    Some(due.plus(cfg.quiet_after)).filter(|n| *n <= last.plus(cfg.quiet_checks_until))
                } else {
                    // Active since it was armed: check again when quiet.
                    Some(last.plus(cfg.quiet_after))
                };
                j.quiet_due = next;
                if let Some(next) = next {
                    self.add_timer((next, TimerKind::Quiet, key.clone()), &one_id);
                }
            }
            TimerKind::ChurnLabel => self.label_timer(j, due),
        }
        self.arm_label(&key, &one_id);
        self.put_journey(one_id, taken);
    }

    /// Whether a cart or browse check finds its condition gone (the cart or
    /// the last product view changed after it was armed: two checks in five
    /// in the bench's run): then it decides nothing and changes nothing, and
    /// the journey is read, not taken out and put back (which would thaw a
    /// frozen one and count its size twice for nothing). [`still_due`], as
    /// [`Processor::fire`] checks it; the other kinds always take the journey.
    fn is_stale(&self, kind: TimerKind, due: EventTime, one_id: &str) -> bool {
        matches!(kind, TimerKind::Cart | TimerKind::Browse)
            && !self
                .state
                .with_journey(one_id, |j| still_due(kind, j, &self.cfg.decide, due))
                .unwrap_or(false)
    }
}

/// Whether a cart or browse check's condition still holds on `j` at `due`
/// (true for the other kinds): the cart abandoned for `cart_abandon_after`;
/// for a browse check, being the one armed for the last product view (only
/// that one counts).
fn still_due(kind: TimerKind, j: &Journey, cfg: &DecideConfig, due: EventTime) -> bool {
    match kind {
        TimerKind::Cart => cart_abandoned(j, cfg.cart_abandon_after, due),
        TimerKind::Browse => browse_due(j, cfg.browse_abandon_after) == Some(due),
        _ => true,
    }
}
