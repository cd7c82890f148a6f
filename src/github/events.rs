//! runwarden-owned GitHub webhook event types. (issue 5)
