//! The Currents REST API: typed models and the HTTP client.

pub mod client;
pub mod models;

pub use client::{
    CancelOutcome, ClientOptions, ClientStats, CurrentsClient, CurrentsError, DeleteOutcome,
    FindBy, Page, RunFilter, TagOperator,
};
pub use models::*;
