//! onejourney's pure core: everything that decides, nothing that waits.
//!
//! # Layout
//!
//! In the order an event flows through it:
//!
//! - [`vocab`]: the shared vocabulary (contact channels, outcomes, churn
//!   bands, value tiers, churn factor names); imports nothing of the core.
//! - [`time`]: event time, and windowed counts over it.
//! - [`ids`]: the namespace table; identifiers normalised, email/phone hashed.
//! - [`one_id`]: the id of one profile, one pointer to a shared text.
//! - [`event`]: bytes -> validated inputs: [`event::ChannelEvent`],
//!   [`event::ActionOutcome`], [`event::ControlCommand`].
//! - [`identity`]: the identity graph; `stitch(event) -> Stitch`, changed only by
//!   an ordered stream of [`identity::IdentityOp`]s.
//! - [`journey`]: per One ID state; `Journey::apply(event) -> Vec<Transition>`.
//! - [`decide`]: triggers, contact reach, value tiers, next-best-action
//!   arbitration, learned propensities and churn scoring. Reads the journey.
//! - [`output`]: the records of the wire contract.
//! - [`recent`]: the most recently active profiles, kept as journeys change.
//! - [`state`]: the identity graph and journeys shared with readers, with
//!   their size kept as they change.
//! - [`processor`]: the stages above in order, with the reorder buffer,
//!   event-time timers and the snapshot format.
//! - [`routed`]: the records one engine process sends the owner of a state
//!   partition (scale-out): a resolved event, a journey handed over.
//! - [`view`]: what the lookup API reads from the state.
//!
//! Imports between these modules point one way (down this list, roughly);
//! `make lint` (`cargo run -p onejourney-xtask -- layout`) fails on a circle.
//!
//! No tokio, no Kafka, no sockets, no clock: time is an argument
//! ([`time::EventTime`]), so every rule is testable with plain values.

pub mod client_env;
pub mod decide;
pub mod dirty;
pub mod event;
pub mod evidence;
pub mod hash;
pub mod hex_text;
pub mod identity;
pub mod ids;
pub mod intern;
pub mod journey;
pub mod key;
pub mod one_id;
pub mod output;
pub mod processor;
pub mod recent;
pub mod routed;
pub mod snapshot;
pub mod state;
pub mod time;
pub mod view;
pub mod vocab;

#[cfg(test)]
mod testkit;

pub use event::{Channel, ChannelEvent, DecodeError, Decoder};
pub use identity::{IdentityGraph, OneId};
pub use processor::{CoreConfig, Processed, Processor};
pub use state::State;
pub use time::EventTime;
