//! The serde shapes of `rules.toml`: every table denies unknown keys.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub dry_run: Option<bool>,
    #[serde(default)]
    pub currents: RawCurrents,
    #[serde(default)]
    pub github: RawGithub,
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub store: RawStore,
    #[serde(default)]
    pub rules: Vec<RawRule>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCurrents {
    pub api_url: Option<String>,
    #[serde(default)]
    pub projects: Option<Vec<String>>,
    pub poll_interval: Option<String>,
    pub dashboard_url: Option<String>,
    pub webhook_header: Option<String>,
    pub webhook_tolerance: Option<String>,
    pub request_timeout: Option<String>,
    pub max_requests_per_second: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGithub {
    pub api_url: Option<String>,
    #[serde(default)]
    pub repos: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<String>,
    pub idle_timeout: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    pub url: Option<String>,
    pub action_lease: Option<String>,
    pub keep_events: Option<String>,
    pub keep_audit: Option<String>,
}

/// `[rules.match]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    pub projects: Option<Vec<String>>,
    pub branches: Option<Vec<String>>,
    pub tags: Option<Vec<String>>,
    pub tag_mode: Option<String>,
    pub authors: Option<Vec<String>>,
    pub statuses: Option<Vec<String>>,
    pub completion_states: Option<Vec<String>>,
    pub message: Option<String>,
    pub ci_build_id: Option<String>,
    pub frameworks: Option<Vec<String>>,
}

/// One `[[rules]]` entry: the union of every kind's keys; [`super::load`] rejects the
/// keys that do not belong to the rule's kind.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub name: Option<String>,
    pub kind: Option<String>,
    pub dry_run: Option<bool>,
    #[serde(rename = "match")]
    pub filter: Option<RawMatch>,
    // supersede
    pub group_by: Option<Vec<String>>,
    pub on_push: Option<bool>,
    pub on_branch_deleted: Option<bool>,
    pub spare_if_progress_at_least: Option<f64>,
    // timeout
    pub max_duration: Option<String>,
    pub idle_for: Option<String>,
    pub auto_factor: Option<f64>,
    pub fallback: Option<String>,
    // orphan
    pub grace: Option<String>,
    pub ci_build_id_suffix: Option<String>,
    pub match_by: Option<String>,
    pub workflows: Option<Vec<String>>,
    // retention
    pub schedule: Option<String>,
    pub older_than: Option<String>,
    pub keep_latest: Option<u32>,
    pub keep_last_passed: Option<bool>,
    pub pin_tags: Option<Vec<String>>,
    pub max_deletions: Option<u32>,
    // summary
    pub events: Option<Vec<String>>,
    pub comment: Option<bool>,
    pub commit_status: Option<bool>,
    pub status_context: Option<String>,
    pub only_failed: Option<bool>,
    pub max_failed_specs: Option<u32>,
    pub template: Option<String>,
}

/// Every key a rule table may hold, for "did you mean" suggestions.
pub const RULE_KEYS: &[&str] = &[
    "name",
    "kind",
    "dry_run",
    "match",
    "group_by",
    "on_push",
    "on_branch_deleted",
    "spare_if_progress_at_least",
    "max_duration",
    "idle_for",
    "auto_factor",
    "fallback",
    "grace",
    "ci_build_id_suffix",
    "match_by",
    "workflows",
    "schedule",
    "older_than",
    "keep_latest",
    "keep_last_passed",
    "pin_tags",
    "max_deletions",
    "events",
    "comment",
    "commit_status",
    "status_context",
    "only_failed",
    "max_failed_specs",
    "template",
];

/// The keys that belong to each kind (beyond `name`, `kind`, `dry_run`, `match`).
pub fn kind_keys(kind: &str) -> &'static [&'static str] {
    match kind {
        "supersede" => &[
            "group_by",
            "on_push",
            "on_branch_deleted",
            "spare_if_progress_at_least",
        ],
        "timeout" => &["max_duration", "idle_for", "auto_factor", "fallback"],
        "orphan" => &["grace", "ci_build_id_suffix", "match_by", "workflows"],
        "retention" => &[
            "schedule",
            "older_than",
            "keep_latest",
            "keep_last_passed",
            "pin_tags",
            "max_deletions",
        ],
        "summary" => &[
            "events",
            "comment",
            "commit_status",
            "status_context",
            "only_failed",
            "max_failed_specs",
            "template",
        ],
        _ => &[],
    }
}

pub const KINDS: &[&str] = &["supersede", "timeout", "orphan", "retention", "summary"];
