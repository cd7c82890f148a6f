//! Typed models of the Currents REST API v1 (`shared/reference/runs-api.txt`,
//! the OpenAPI copy and `currents-notes.md`).
//!
//! Lenient where the sources disagree: enums are parsed case-insensitively with an
//! `Unknown` fallback, `canceledAt` and `cancelledAt` are both accepted, and nearly every
//! field is optional so that a new or missing field never breaks a run.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! lenient_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident => $text:literal $(| $alias:literal)*),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $($variant,)+
            /// A value this version of runwarden does not know, kept verbatim.
            Unknown(String),
        }

        impl $name {
            /// The canonical (uppercase) wire form.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $text,)+
                    Self::Unknown(s) => s.as_str(),
                }
            }

            /// Case-insensitive parse; never fails.
            pub fn parse(s: &str) -> Self {
                let up = s.trim().to_ascii_uppercase();
                match up.as_str() {
                    $($text $(| $alias)* => Self::$variant,)+
                    _ => Self::Unknown(s.to_string()),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Ok(Self::parse(&s))
            }
        }
    };
}

lenient_enum!(
    /// `completionState` of a run.
    CompletionState {
        Complete => "COMPLETE",
        InProgress => "IN_PROGRESS" | "INCOMPLETE",
        Canceled => "CANCELED" | "CANCELLED",
        Timeout => "TIMEOUT" | "TIMEDOUT",
    }
);

lenient_enum!(
    /// `status` of a run.
    RunStatus {
        Passed => "PASSED",
        Failed => "FAILED",
        Running => "RUNNING",
        Failing => "FAILING",
    }
);

/// A Currents project.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Project {
    pub project_id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub inactivity_timeout_seconds: Option<u64>,
    #[serde(default)]
    pub fail_fast: Option<bool>,
    #[serde(default)]
    pub default_branch_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// Git commit information attached to a run (`meta.commit`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Commit {
    #[serde(default)]
    pub sha: Option<String>,
    #[serde(default)]
    pub branch: Option<String>,
    #[serde(default)]
    pub author_name: Option<String>,
    #[serde(default)]
    pub author_email: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub remote_origin: Option<String>,
    #[serde(default)]
    pub default_branch: Option<String>,
}

/// Test framework information (`meta.framework`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Framework {
    /// `pw`, `cypress`, `jest`, `postman`, `vitest`, ...
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// The OpenAPI copy's spelling of the same (`{name, version}`); read when `type` is
    /// absent (see [`Run::framework`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub client_version: Option<String>,
}

/// Pull-request information on newer runs (`meta.pr`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PrMeta {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub title: Option<String>,
}

/// `meta` of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunMeta {
    #[serde(default)]
    pub ci_build_id: Option<String>,
    #[serde(default)]
    pub commit: Commit,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub framework: Option<Framework>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pr: Option<PrMeta>,
}

/// Platform a group ran on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Platform {
    #[serde(default)]
    pub os_name: Option<String>,
    #[serde(default)]
    pub os_version: Option<String>,
    #[serde(default)]
    pub browser_name: Option<String>,
    #[serde(default)]
    pub browser_version: Option<String>,
}

/// Spec-file (instance) progress counters of a group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceCounts {
    #[serde(default)]
    pub overall: u64,
    #[serde(default)]
    pub claimed: u64,
    #[serde(default)]
    pub complete: u64,
    #[serde(default)]
    pub passes: u64,
    #[serde(default)]
    pub failures: u64,
}

/// Test counters of a group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TestCounts {
    #[serde(default)]
    pub overall: u64,
    #[serde(default)]
    pub passes: u64,
    #[serde(default)]
    pub failures: u64,
    #[serde(default)]
    pub pending: u64,
    #[serde(default)]
    pub skipped: u64,
    #[serde(default)]
    pub retries: u64,
    #[serde(default)]
    pub flaky: u64,
}

impl TestCounts {
    pub fn add(&mut self, o: &TestCounts) {
        // Saturating: the counters come from the API and must not overflow.
        self.overall = self.overall.saturating_add(o.overall);
        self.passes = self.passes.saturating_add(o.passes);
        self.failures = self.failures.saturating_add(o.failures);
        self.pending = self.pending.saturating_add(o.pending);
        self.skipped = self.skipped.saturating_add(o.skipped);
        self.retries = self.retries.saturating_add(o.retries);
        self.flaky = self.flaky.saturating_add(o.flaky);
    }
}

/// A group of a run (one per `--group`/Playwright project).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunGroup {
    #[serde(default)]
    pub group_id: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default)]
    pub platform: Option<Platform>,
    #[serde(default)]
    pub instances: InstanceCounts,
    #[serde(default)]
    pub tests: TestCounts,
}

/// `timeout` of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunTimeout {
    #[serde(default)]
    pub is_timeout: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_value_ms: Option<u64>,
}

/// `cancellation` of a run; accepts both spellings of the sources.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cancellation {
    #[serde(default, alias = "cancelledBy")]
    pub actor: Option<String>,
    #[serde(default, alias = "cancelledAt")]
    pub canceled_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub reason: Option<String>,
}

/// Aggregated stats of one spec execution.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpecStats {
    #[serde(default)]
    pub suites: Option<u64>,
    #[serde(default)]
    pub tests: u64,
    #[serde(default)]
    pub passes: u64,
    #[serde(default)]
    pub pending: u64,
    #[serde(default)]
    pub skipped: u64,
    #[serde(default)]
    pub failures: u64,
    #[serde(default)]
    pub flaky: Option<u64>,
    #[serde(default)]
    pub wall_clock_started_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub wall_clock_ended_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub wall_clock_duration: Option<u64>,
}

/// Results of one spec execution.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpecResults {
    #[serde(default)]
    pub stats: SpecStats,
    #[serde(default)]
    pub flaky: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video_url: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub screenshots: Vec<serde_json::Value>,
}

/// One spec file of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    #[serde(default)]
    pub group_id: Option<String>,
    pub spec: String,
    #[serde(default)]
    pub instance_id: Option<String>,
    #[serde(default)]
    pub claimed_at: Option<DateTime<Utc>>,
    /// `null` while the spec is running.
    #[serde(default)]
    pub completed_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub machine_id: Option<String>,
    #[serde(default)]
    pub results: Option<SpecResults>,
}

/// A run, as `GET /runs/{id}` returns it; list items are the same without `specs`,
/// plus `cursor` and `durationMs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Run {
    pub run_id: String,
    #[serde(default)]
    pub project_id: String,
    pub created_at: DateTime<Utc>,
    #[serde(default = "default_completion")]
    pub completion_state: CompletionState,
    #[serde(default = "default_status")]
    pub status: RunStatus,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cypress_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<RunTimeout>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancellation: Option<Cancellation>,
    #[serde(default)]
    pub groups: Vec<RunGroup>,
    #[serde(default)]
    pub meta: RunMeta,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub specs: Vec<Spec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_run_id: Option<String>,
    /// Present on list items only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

fn default_completion() -> CompletionState {
    CompletionState::Unknown(String::new())
}
fn default_status() -> RunStatus {
    RunStatus::Unknown(String::new())
}

impl Run {
    pub fn branch(&self) -> Option<&str> {
        self.meta.commit.branch.as_deref()
    }
    pub fn sha(&self) -> Option<&str> {
        self.meta.commit.sha.as_deref()
    }
    /// `meta.framework.type` as the API sends it, or `name` as the OpenAPI copy spells it.
    pub fn framework(&self) -> Option<&str> {
        let f = self.meta.framework.as_ref()?;
        f.kind.as_deref().or(f.name.as_deref())
    }
    pub fn is_in_progress(&self) -> bool {
        self.completion_state == CompletionState::InProgress
    }
    /// Summed test counters over all groups.
    pub fn test_counts(&self) -> TestCounts {
        let mut t = TestCounts::default();
        for g in &self.groups {
            t.add(&g.tests);
        }
        t
    }
    /// Summed spec-file counters over all groups.
    pub fn instance_counts(&self) -> InstanceCounts {
        let mut c = InstanceCounts::default();
        for g in &self.groups {
            c.overall = c.overall.saturating_add(g.instances.overall);
            c.claimed = c.claimed.saturating_add(g.instances.claimed);
            c.complete = c.complete.saturating_add(g.instances.complete);
            c.passes = c.passes.saturating_add(g.instances.passes);
            c.failures = c.failures.saturating_add(g.instances.failures);
        }
        c
    }
    /// Fraction of spec files complete, 0..=1 (0 when nothing is known).
    pub fn progress(&self) -> f64 {
        let c = self.instance_counts();
        if c.overall == 0 {
            0.0
        } else {
            (c.complete as f64 / c.overall as f64).min(1.0)
        }
    }
}

/// Result of `PUT /runs/{id}/cancel`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CancelResult {
    #[serde(default)]
    pub run_id: Option<String>,
    #[serde(default, alias = "cancelledBy")]
    pub actor: Option<String>,
    #[serde(default, alias = "cancelledAt")]
    pub canceled_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled: Option<bool>,
}

/// Result of `DELETE /runs/{id}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteResult {
    #[serde(default)]
    pub run_id: Option<String>,
    #[serde(default)]
    pub actor: Option<String>,
}

/// A spec-file execution (`GET /instances/{id}`); kept loose on purpose.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Instance {
    #[serde(default)]
    pub instance_id: Option<String>,
    #[serde(default)]
    pub run_id: Option<String>,
    #[serde(default)]
    pub project_id: Option<String>,
    #[serde(default)]
    pub group_id: Option<String>,
    #[serde(default)]
    pub spec: Option<String>,
    #[serde(default)]
    pub machine_id: Option<String>,
    #[serde(default)]
    pub results: Option<serde_json::Value>,
}

/// A Currents HTTP webhook as the Webhooks API stores it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    pub hook_id: String,
    #[serde(default)]
    pub project_id: String,
    pub url: String,
    /// A JSON object serialised as a string, e.g. `"{\"x-webhook-secret\":\"...\"}"`.
    #[serde(default)]
    pub headers: Option<String>,
    #[serde(default)]
    pub hook_events: Vec<String>,
    #[serde(default)]
    pub label: Option<String>,
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub updated_at: Option<DateTime<Utc>>,
}

/// Body of `POST /webhooks` and `PUT /webhooks/{id}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hook_events: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// The four events Currents sends.
pub const RUN_EVENTS: [&str; 4] = ["RUN_START", "RUN_FINISH", "RUN_TIMEOUT", "RUN_CANCELED"];

/// Body of a Currents HTTP webhook (`currents-notes.md` §2.1).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CurrentsWebhookPayload {
    pub event: String,
    pub run_url: String,
    #[serde(default)]
    pub build_id: Option<String>,
    #[serde(default)]
    pub group_id: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub commit: Option<Commit>,
    #[serde(default)]
    pub overall: Option<u64>,
    #[serde(default)]
    pub passes: Option<u64>,
    #[serde(default)]
    pub failures: Option<u64>,
    #[serde(default)]
    pub pending: Option<u64>,
    #[serde(default)]
    pub skipped: Option<u64>,
    #[serde(default)]
    pub retries: Option<u64>,
    #[serde(default)]
    pub flaky: Option<u64>,
}

impl CurrentsWebhookPayload {
    /// The run id: the last non-empty path segment of `runUrl`.
    pub fn run_id(&self) -> Option<String> {
        run_id_from_url(&self.run_url)
    }
}

/// Extracts the run id from a dashboard run URL (`https://app.currents.dev/run/<id>`).
pub fn run_id_from_url(run_url: &str) -> Option<String> {
    let parsed = url::Url::parse(run_url).ok()?;
    let seg = parsed
        .path_segments()?
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>();
    if seg.len() < 2 || seg[seg.len() - 2] != "run" {
        return None;
    }
    let id = seg[seg.len() - 1];
    if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return None;
    }
    Some(id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_are_case_insensitive_with_fallback() {
        assert_eq!(
            CompletionState::parse("in_progress"),
            CompletionState::InProgress
        );
        assert_eq!(
            CompletionState::parse("cancelled"),
            CompletionState::Canceled
        );
        assert_eq!(RunStatus::parse("Passed"), RunStatus::Passed);
        assert_eq!(
            RunStatus::parse("weird"),
            RunStatus::Unknown("weird".into())
        );
    }

    #[test]
    fn parses_reference_run_example() {
        let raw = r#"{"runId":"0a91","projectId":"bAYZ4a","completionState":"complete","status":"FAILED",
            "createdAt":"2022-07-06T08:23:40.939Z","tags":["a"],"cancellation":{"cancelledAt":"2022-07-07T07:22:13.611Z","cancelledBy":"x"},
            "groups":[{"groupId":"g","instances":{"overall":73,"claimed":73,"complete":73,"passes":62,"failures":11},
            "tests":{"overall":264,"passes":230,"failures":16,"pending":12,"skipped":6,"retries":3,"flaky":3}}],
            "meta":{"ciBuildId":"b","commit":{"sha":"c6","branch":"feat/x"}},"futureField":1}"#;
        let run: Run = serde_json::from_str(raw).unwrap();
        assert_eq!(run.completion_state, CompletionState::Complete);
        assert_eq!(
            run.cancellation.as_ref().unwrap().actor.as_deref(),
            Some("x")
        );
        assert_eq!(run.test_counts().failures, 16);
        assert_eq!(run.branch(), Some("feat/x"));
    }

    #[test]
    fn the_framework_is_read_in_both_spellings() {
        let run = |framework: &str| -> Run {
            serde_json::from_str(&format!(
                r#"{{"runId":"r","projectId":"p","completionState":"COMPLETE","status":"PASSED",
                "createdAt":"2026-01-01T00:00:00Z","meta":{{"framework":{framework}}}}}"#
            ))
            .unwrap()
        };
        // The API's examples and the SDK: `type`.
        assert_eq!(
            run(r#"{"type":"pw","version":"1.52.0"}"#).framework(),
            Some("pw")
        );
        // The OpenAPI copy: `name`.
        assert_eq!(
            run(r#"{"name":"cypress","version":"13.0.0"}"#).framework(),
            Some("cypress")
        );
        // Both: `type` wins.
        assert_eq!(
            run(r#"{"type":"pw","name":"playwright"}"#).framework(),
            Some("pw")
        );
    }

    #[test]
    fn run_id_from_run_url() {
        assert_eq!(
            run_id_from_url("https://app.currents.dev/run/950a13c3edf4").as_deref(),
            Some("950a13c3edf4")
        );
        assert_eq!(
            run_id_from_url("https://app.currents.dev/run/950a/").as_deref(),
            Some("950a")
        );
        assert_eq!(run_id_from_url("https://app.currents.dev/x/950a"), None);
        assert_eq!(run_id_from_url("not a url"), None);
    }
}
