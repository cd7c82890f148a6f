//! The Currents REST API: typed models and the HTTP client.

pub mod client;
pub mod models;

pub use client::CurrentsClient;
pub use models::*;
