//! The churn model's labels, from the stream itself.
//!
//! In: an event applied to a journey (the customer's activity), a label
//! timer coming due, a churn evaluation that remembered an example. Out: the
//! model trained on the examples that got their label (test-then-train, see
//! `decide::churn_model`), label timers armed. Keeps, in the processor, the
//! label timer the last evaluation asked for until it is armed with the
//! profile's identifier; the model lives in the state it shares with readers.

use crate::decide::churn_model;
use crate::identity::OneId;
use crate::ids::IdKey;
use crate::journey::Journey;
use crate::time::EventTime;

use super::{Processor, TimerKind};

impl Processor {
    /// Activity at `t`: the journey's examples taken before it are labelled.
    pub(super) fn label_activity(&mut self, j: &mut Journey, t: EventTime) {
        if j.churn_examples.pending.first().is_none_or(|e| e.at >= t) {
            return;
        }
        let horizon = self.cfg.decide.churn.horizon;
        if let Some(live) = self.state.churn_mut().as_mut() {
            churn_model::label_activity(&mut j.churn_examples, t, horizon, &mut live.model);
        }
    }

    /// Arms the label timer the last evaluation asked for, keyed by `key`,
    /// homed at `home` (the journey evaluated).
    pub(super) fn arm_label(&mut self, key: &IdKey, home: &OneId) {
        if let Some(due) = self.label_due.take() {
            self.add_timer((due, TimerKind::ChurnLabel, key.clone()), home);
        }
    }

    /// A label timer at `due`: the examples whose horizon ended are labelled.
    pub(super) fn label_timer(&mut self, j: &mut Journey, due: EventTime) {
        let horizon = self.cfg.decide.churn.horizon;
        if let Some(live) = self.state.churn_mut().as_mut() {
            churn_model::label_due(&mut j.churn_examples, due, horizon, j.last_seen, &mut live.model);
        }
    }

    /// Tells readers how far event time has been applied.
    pub(super) fn share_now(&self) {
        if self.applied_to == EventTime::MIN {
            return;
        }
        if let Some(live) = self.state.churn_mut().as_mut() {
            live.now = Some(self.applied_to);
        }
    }
}
