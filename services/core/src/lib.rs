//! onejourney's pure core: everything that decides, nothing that waits.
//!
//! # Layout
//!
//! - [`event`]: bytes -> validated [`event::ChannelEvent`] (JSON Schema, typed
//!   fields, identifiers normalised and email/phone hashed by [`ids`]).
//! - [`identity`]: the identity graph; `stitch(event) -> Stitch`, changed only by
//!   an ordered stream of [`identity::IdentityOp`]s.
//! - [`journey`]: per One ID state; `Journey::apply(event) -> Vec<Transition>`.
//! - [`decide`]: next-best-action arbitration and churn scoring.
//! - [`processor`]: the stages above in order, with event-time timers.
//! - [`output`]: the records of the wire contract.
//!
//! No tokio, no Kafka, no sockets, no clock: time is an argument
//! ([`time::EventTime`]), so every rule is testable with plain values.

pub mod decide;
pub mod event;
pub mod hash;
pub mod identity;
pub mod ids;
pub mod journey;
pub mod output;
pub mod processor;
pub mod snapshot;
pub mod time;

#[cfg(test)]
mod testkit;

pub use event::{Channel, ChannelEvent, DecodeError, Decoder};
pub use identity::{IdentityGraph, OneId};
pub use processor::{CoreConfig, Processed, Processor, State};
pub use time::EventTime;
