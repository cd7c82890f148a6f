//! Typed models of the Currents REST API v1 (`shared/reference/runs-api.txt`,
//! the OpenAPI copy and `currents-notes.md`).
//!
//! Lenient where the sources disagree: enums are parsed case-insensitively with an
//! `Unknown` fallback, `canceledAt` and `cancelledAt` are both accepted, and nearly every
//! field is optional so that a new or missing field never breaks a run.
//!
//! An explicit JSON `null` is read as if the field were absent: an `Option` becomes
//! `None` and every other optional field its default (empty list, empty struct, `0`,
//! `false`, `""`), so a `null` in one of them fails neither the run nor its list page.
//! Counters and durations also accept a decimal number and truncate it toward zero
//! (`1234.9` → `1234`); a negative number is still an error. Not relaxed: the fields the
//! reference requires, i.e. `runId`, `projectId`, `createdAt`, `completionState` and
//! `status` of a run, `hookId`, `projectId`, `url` and `hookEvents` of a webhook, and
//! `event` and `runUrl` of a webhook delivery (a `null` there is an error). Only reading
//! is lenient: serialisation is unchanged.

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

/// `#[serde(deserialize_with)]` helper: reads `null` like an absent field, i.e. as
/// `T::default()`. Pair it with `#[serde(default)]` so that absence is covered as well.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Option::unwrap_or_default)
}

/// A non-negative JSON number as `u64`: integers as they are, decimals truncated toward
/// zero (`1234.9` → `1234`, `-0.5` → `0`); `None` for `null`. Negative, non-finite and
/// too large numbers, and anything that is not a number, are errors.
struct LenientU64;

impl<'de> serde::de::Visitor<'de> for LenientU64 {
    type Value = Option<u64>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a non-negative number or null")
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Some(v))
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
        u64::try_from(v)
            .map(Some)
            .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(v), &self))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
        let t = v.trunc();
        // 2^64 is the first value past `u64::MAX` that an f64 can hold exactly; NaN and
        // the infinities are outside the range.
        if (0.0..18_446_744_073_709_551_616.0).contains(&t) {
            Ok(Some(t as u64))
        } else {
            Err(E::invalid_value(serde::de::Unexpected::Float(v), &self))
        }
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

/// `#[serde(deserialize_with)]` helper for counters and durations: an integer, or a
/// decimal truncated toward zero (`1234.9` → `1234`); `null` reads as `0`. Pair it with
/// `#[serde(default)]`.
fn lenient_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    d.deserialize_any(LenientU64).map(Option::unwrap_or_default)
}

/// Like [`lenient_u64`] for an optional number: `null` reads as `None`.
fn lenient_opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    d.deserialize_any(LenientU64)
}

/// A Currents project.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Project {
    pub project_id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, serialize_with = "ms_time::opt")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "lenient_opt_u64")]
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
    #[serde(default, deserialize_with = "null_as_default")]
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
    #[serde(default, deserialize_with = "lenient_u64")]
    pub overall: u64,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub claimed: u64,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub complete: u64,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub passes: u64,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub failures: u64,
}

/// Test counters of a group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TestCounts {
    #[serde(default, deserialize_with = "lenient_u64")]
    pub overall: u64,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub passes: u64,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub failures: u64,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub pending: u64,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub skipped: u64,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub retries: u64,
    #[serde(default, deserialize_with = "lenient_u64")]
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
    #[serde(default, deserialize_with = "null_as_default")]
    pub group_id: String,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub tags: Vec<String>,
    #[serde(default)]
    pub platform: Option<Platform>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub instances: InstanceCounts,
    #[serde(default, deserialize_with = "null_as_default")]
    pub tests: TestCounts,
}

/// `timeout` of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunTimeout {
    #[serde(default, deserialize_with = "null_as_default")]
    pub is_timeout: bool,
    #[serde(
        default,
        deserialize_with = "lenient_opt_u64",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout_value_ms: Option<u64>,
}

/// `cancellation` of a run; accepts both spellings of the sources.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cancellation {
    #[serde(default, alias = "cancelledBy")]
    pub actor: Option<String>,
    #[serde(default, alias = "cancelledAt", serialize_with = "ms_time::opt")]
    pub canceled_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub reason: Option<String>,
}

/// Aggregated stats of one spec execution.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpecStats {
    #[serde(default, deserialize_with = "lenient_opt_u64")]
    pub suites: Option<u64>,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub tests: u64,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub passes: u64,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub pending: u64,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub skipped: u64,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub failures: u64,
    #[serde(default, deserialize_with = "lenient_opt_u64")]
    pub flaky: Option<u64>,
    #[serde(default, serialize_with = "ms_time::opt")]
    pub wall_clock_started_at: Option<DateTime<Utc>>,
    #[serde(default, serialize_with = "ms_time::opt")]
    pub wall_clock_ended_at: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "lenient_opt_u64")]
    pub wall_clock_duration: Option<u64>,
}

/// Results of one spec execution.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpecResults {
    #[serde(default, deserialize_with = "null_as_default")]
    pub stats: SpecStats,
    #[serde(default, deserialize_with = "lenient_opt_u64")]
    pub flaky: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video_url: Option<String>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub screenshots: Vec<serde_json::Value>,
}

/// One spec file of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    #[serde(default)]
    pub group_id: Option<String>,
    /// Not required by the reference; absent or `null` reads as `""`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub spec: String,
    #[serde(default)]
    pub instance_id: Option<String>,
    #[serde(default, serialize_with = "ms_time::opt")]
    pub claimed_at: Option<DateTime<Utc>>,
    /// `null` while the spec is running.
    #[serde(default, serialize_with = "ms_time::opt")]
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
    #[serde(serialize_with = "ms_time::one")]
    pub created_at: DateTime<Utc>,
    #[serde(default = "default_completion")]
    pub completion_state: CompletionState,
    #[serde(default = "default_status")]
    pub status: RunStatus,
    #[serde(default, deserialize_with = "null_as_default")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cypress_version: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient_opt_u64",
        skip_serializing_if = "Option::is_none"
    )]
    pub duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<RunTimeout>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancellation: Option<Cancellation>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub groups: Vec<RunGroup>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub meta: RunMeta,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub specs: Vec<Spec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_run_id: Option<String>,
    /// When the run was deleted (the reference's `deletedAt`, nullable): a run the API
    /// still shows after its deletion is gone all the same ([`Run::is_deleted`]).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "ms_time::opt"
    )]
    pub deleted_at: Option<DateTime<Utc>>,
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
    /// `meta.framework.type` as the API sends it, or `name` as the OpenAPI copy spells it;
    /// without either, `cypress` for a run that carries a `cypressVersion` (the shape of
    /// the Runs API reference's Cypress run, which has no `meta.framework`).
    pub fn framework(&self) -> Option<&str> {
        let named = self
            .meta
            .framework
            .as_ref()
            .and_then(|f| f.kind.as_deref().or(f.name.as_deref()));
        named.or_else(|| self.cypress_version.as_ref().map(|_| "cypress"))
    }
    /// In progress, and not deleted: a deleted run is never cancelled.
    pub fn is_in_progress(&self) -> bool {
        self.completion_state == CompletionState::InProgress && !self.is_deleted()
    }

    /// Whether the API marks the run deleted (`deletedAt` set).
    pub fn is_deleted(&self) -> bool {
        self.deleted_at.is_some()
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
    #[serde(default, alias = "cancelledAt", serialize_with = "ms_time::opt")]
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

/// A Currents HTTP webhook as the Webhooks API stores it. Its `Debug` shows the names
/// of the `headers`, not their values (the webhook secret is one).
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
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
    #[serde(default, serialize_with = "ms_time::opt")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default, serialize_with = "ms_time::opt")]
    pub updated_at: Option<DateTime<Utc>>,
}

/// Body of `POST /webhooks` and `PUT /webhooks/{id}`. Its `Debug` shows the names of
/// the `headers`, not their values (the webhook secret is one).
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
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

/// Webhook `headers` (a JSON object serialised as a string) for `Debug`: each name with
/// `[redacted]` for its value; anything else `[redacted]` whole.
struct RedactedHeaders<'a>(&'a Option<String>);

impl std::fmt::Debug for RedactedHeaders<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Some(text) = self.0 else {
            return f.write_str("None");
        };
        match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(text) {
            Ok(headers) => f
                .debug_map()
                .entries(headers.keys().map(|k| (k, format_args!("[redacted]"))))
                .finish(),
            Err(_) => f.write_str("[redacted]"),
        }
    }
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("hook_id", &self.hook_id)
            .field("project_id", &self.project_id)
            .field("url", &self.url)
            .field("headers", &RedactedHeaders(&self.headers))
            .field("hook_events", &self.hook_events)
            .field("label", &self.label)
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .finish()
    }
}

impl std::fmt::Debug for WebhookSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSpec")
            .field("url", &self.url)
            .field("headers", &RedactedHeaders(&self.headers))
            .field("hook_events", &self.hook_events)
            .field("label", &self.label)
            .finish()
    }
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
    #[serde(default, deserialize_with = "null_as_default")]
    pub tags: Vec<String>,
    #[serde(default)]
    pub commit: Option<Commit>,
    #[serde(default, deserialize_with = "lenient_opt_u64")]
    pub overall: Option<u64>,
    #[serde(default, deserialize_with = "lenient_opt_u64")]
    pub passes: Option<u64>,
    #[serde(default, deserialize_with = "lenient_opt_u64")]
    pub failures: Option<u64>,
    #[serde(default, deserialize_with = "lenient_opt_u64")]
    pub pending: Option<u64>,
    #[serde(default, deserialize_with = "lenient_opt_u64")]
    pub skipped: Option<u64>,
    #[serde(default, deserialize_with = "lenient_opt_u64")]
    pub retries: Option<u64>,
    #[serde(default, deserialize_with = "lenient_opt_u64")]
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
        // The Runs API reference's Cypress run: no `meta.framework`, a `cypressVersion`.
        let bare = |extra: &str| -> Run {
            serde_json::from_str(&format!(
                r#"{{"runId":"r","projectId":"p","completionState":"COMPLETE","status":"PASSED",
                "createdAt":"2026-01-01T00:00:00Z"{extra}}}"#
            ))
            .unwrap()
        };
        assert_eq!(
            bare(r#","cypressVersion":"9.5.4""#).framework(),
            Some("cypress")
        );
        assert_eq!(bare("").framework(), None);
        // A named framework still wins.
        let mut pw = run(r#"{"type":"pw"}"#);
        pw.cypress_version = Some("13.0.0".into());
        assert_eq!(pw.framework(), Some("pw"));
    }

    const REQUIRED: &str = r#""runId":"r1","projectId":"p","createdAt":"2026-01-01T00:00:00Z","completionState":"COMPLETE","status":"PASSED""#;

    #[test]
    fn null_reads_as_absent_in_a_run() {
        let raw = format!(
            r#"{{{REQUIRED},"tags":null,"meta":{{"commit":null}},
            "groups":[{{"groupId":null,"tests":{{"pending":null}},"instances":{{"complete":null}}}}],
            "timeout":{{"isTimeout":null}}}}"#
        );
        let run: Run = serde_json::from_str(&raw).unwrap();
        assert!(run.tags.is_empty());
        assert_eq!(run.meta.commit, Commit::default());
        assert_eq!(run.groups.len(), 1);
        assert_eq!(run.groups[0].group_id, "");
        assert_eq!(run.groups[0].tests, TestCounts::default());
        assert_eq!(run.groups[0].instances, InstanceCounts::default());
        assert!(!run.timeout.as_ref().unwrap().is_timeout);
        assert_eq!(run.progress(), 0.0);

        // The same with every other lenient field of a run, its groups and specs as null.
        let raw = format!(
            r#"{{{REQUIRED},"tags":null,"durationMs":null,"groups":null,"meta":null,"specs":null}}"#
        );
        let run: Run = serde_json::from_str(&raw).unwrap();
        assert!(run.groups.is_empty() && run.specs.is_empty());
        assert_eq!(run.meta, RunMeta::default());
        let raw = format!(
            r#"{{{REQUIRED},"timeout":{{"isTimeout":true,"timeoutValueMs":null}},
            "groups":[{{"groupId":"g","tags":null,"platform":null,"instances":null,"tests":null}},
                      {{"groupId":"h","instances":{{"overall":null,"claimed":null,"complete":null,"passes":null,"failures":null}},
                        "tests":{{"overall":null,"passes":null,"failures":null,"pending":null,"skipped":null,"retries":null,"flaky":null}}}}],
            "specs":[{{"spec":null,"results":{{"stats":null,"flaky":null,"screenshots":null}}}},
                     {{"spec":"a.spec.ts","results":{{"stats":{{"suites":null,"tests":null,"passes":null,"pending":null,
                        "skipped":null,"failures":null,"flaky":null,"wallClockDuration":null}}}}}}]}}"#
        );
        let run: Run = serde_json::from_str(&raw).unwrap();
        assert_eq!(run.timeout.as_ref().unwrap().timeout_value_ms, None);
        assert_eq!(run.groups[0].tags, Vec::<String>::new());
        assert_eq!(run.groups[1].tests, TestCounts::default());
        assert_eq!(run.specs[0].spec, "");
        assert_eq!(
            run.specs[0].results.as_ref().unwrap().stats,
            SpecStats::default()
        );
        assert_eq!(
            run.specs[1].results.as_ref().unwrap().stats,
            SpecStats::default()
        );
        // A run read from nulls serialises like one read from absent fields.
        let again: Run = serde_json::from_str(&serde_json::to_string(&run).unwrap()).unwrap();
        assert_eq!(again, run);
    }

    #[test]
    fn required_run_fields_stay_strict_on_null() {
        for field in [
            "runId",
            "projectId",
            "createdAt",
            "completionState",
            "status",
        ] {
            let mut v: serde_json::Value =
                serde_json::from_str(&format!("{{{REQUIRED}}}")).unwrap();
            v[field] = serde_json::Value::Null;
            assert!(serde_json::from_value::<Run>(v).is_err(), "{field}: null");
        }
    }

    #[test]
    fn null_tags_and_decimal_counters_in_a_webhook_payload() {
        let p: CurrentsWebhookPayload = serde_json::from_str(
            r#"{"event":"RUN_FINISH","runUrl":"https://app.currents.dev/run/abc","tags":null,
            "commit":null,"overall":5.0,"passes":null,"failures":1.7}"#,
        )
        .unwrap();
        assert!(p.tags.is_empty());
        assert_eq!(p.commit, None);
        assert_eq!((p.overall, p.passes, p.failures), (Some(5), None, Some(1)));
        assert_eq!(p.run_id().as_deref(), Some("abc"));
    }

    #[test]
    fn decimal_durations_and_counters_truncate_toward_zero() {
        let raw = format!(
            r#"{{{REQUIRED},"durationMs":1234.5,"timeout":{{"isTimeout":true,"timeoutValueMs":6e4}},
            "groups":[{{"groupId":"g","instances":{{"overall":4.0,"complete":2.99}},"tests":{{"failures":3.0,"flaky":-0.5}}}}],
            "specs":[{{"spec":"a","results":{{"flaky":1.0,"stats":{{"tests":2.5,"wallClockDuration":13944.9,"suites":1.2}}}}}}]}}"#
        );
        let run: Run = serde_json::from_str(&raw).unwrap();
        assert_eq!(run.duration_ms, Some(1234));
        assert_eq!(run.timeout.as_ref().unwrap().timeout_value_ms, Some(60_000));
        assert_eq!(run.instance_counts().overall, 4);
        assert_eq!(run.instance_counts().complete, 2);
        assert_eq!(run.test_counts().failures, 3);
        assert_eq!(run.test_counts().flaky, 0);
        let results = run.specs[0].results.as_ref().unwrap();
        assert_eq!(results.flaky, Some(1));
        assert_eq!(results.stats.tests, 2);
        assert_eq!(results.stats.suites, Some(1));
        assert_eq!(results.stats.wall_clock_duration, Some(13944));
        // Integers serialise back as integers.
        let text = serde_json::to_string(&run).unwrap();
        assert!(text.contains(r#""durationMs":1234,"#), "{text}");

        let project: Project =
            serde_json::from_str(r#"{"projectId":"p","inactivityTimeoutSeconds":3600.0}"#).unwrap();
        assert_eq!(project.inactivity_timeout_seconds, Some(3600));

        // Still errors: negative, too large, or not a number.
        for bad in ["-1", "-1.5", "1e30", "\"12\"", "true"] {
            let raw = format!(r#"{{{REQUIRED},"durationMs":{bad}}}"#);
            assert!(
                serde_json::from_str::<Run>(&raw).is_err(),
                "durationMs {bad}"
            );
            let raw = format!(r#"{{{REQUIRED},"groups":[{{"tests":{{"passes":{bad}}}}}]}}"#);
            assert!(serde_json::from_str::<Run>(&raw).is_err(), "passes {bad}");
        }
        // The largest integer still reads exactly.
        let raw = format!(r#"{{{REQUIRED},"durationMs":{}}}"#, u64::MAX);
        let run: Run = serde_json::from_str(&raw).unwrap();
        assert_eq!(run.duration_ms, Some(u64::MAX));
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

/// Times written as the Currents API writes them: RFC 3339 in UTC, to the millisecond
/// (`2026-01-12T10:00:00.123Z`). What the simulator answers, and what the store keeps.
mod ms_time {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::Serializer;

    pub fn one<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true))
    }

    pub fn opt<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => one(t, s),
            None => s.serialize_none(),
        }
    }
}
