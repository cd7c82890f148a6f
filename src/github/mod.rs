//! GitHub: the octocrab-based client and the webhook event types runwarden understands.

pub mod client;
pub mod events;
