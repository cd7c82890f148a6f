//! GitHub: the octocrab-based client, run summaries on pull requests, and the webhook
//! event types runwarden understands.
//!
//! - [`client`]: [`GithubClient`], the REST calls runwarden makes, with explicit retries
//!   and App/token auth.
//! - [`summary`]: [`post_summary`], the `summary` rule's action: one sticky comment per
//!   PR and commit statuses.
//! - [`render`]: what the comment and the statuses say (pure).

pub mod client;
pub mod events;
pub mod render;
pub mod summary;

pub use client::{
    GithubAuth, GithubClient, GithubClientOptions, GithubError, RepoName, RetryPolicy,
};
pub use summary::{
    StatusOutcome, SummaryCtx, SummaryError, SummaryOutcome, SummaryReport, post_summary,
};
