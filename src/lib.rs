//! runwarden: a policy bot for Currents test runs.
//!
//! The pipeline, as the modules show it:
//!
//! ```text
//! intake (webhooks, poller, schedules) -> rules (pure decisions) -> actions (executor) -> store
//!                      currents (client)   github (client)   simulator (tests, demo)
//! ```
//!
//! `../shared/SPEC.md` is the product contract; doc comments cite its sections.

pub mod actions;
pub mod commands;
pub mod config;
pub mod currents;
#[doc(hidden)]
pub mod fuzzing;
pub mod github;
pub mod intake;
pub mod rules;
pub mod secret;
pub mod server;
pub mod simulator;
pub mod store;
pub mod telemetry;
