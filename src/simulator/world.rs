//! The simulated Currents world: projects, runs (with groups, specs and counters) and
//! registered webhooks, plus the in-process operations tests use to drive it.
//!
//! Runs are kept per project in a `BTreeMap` keyed by (createdAt ms, sequence), with
//! secondary key sets for in-progress runs and per branch, so a page of the feed costs
//! O(log n + scanned) and only the returned items are materialised as [`Run`] models.
//! Repetitive strings (branches, authors, spec paths, ...) are interned; a generated
//! 100k-run world takes about 150 MB and a full-scan search of 33k runs a few ms.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::SimConfig;
use super::emitter::{Emitter, HookTarget, Outgoing};
use super::faults::{FaultState, RequestLog};
use super::github_api::GithubState;
use super::ids::{self, Key};
use super::names;
use crate::currents::models::{
    CancelResult, Cancellation, Commit, CompletionState, CurrentsWebhookPayload, DeleteResult,
    Framework, InstanceCounts, Platform, PrMeta, Project, Run, RunGroup, RunMeta, RunStatus,
    RunTimeout, Spec, SpecResults, SpecStats, TestCounts, Webhook, WebhookSpec,
};

/// Errors of world operations; the HTTP layers map them to status codes.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SimError {
    /// 400
    #[error("{0}")]
    BadRequest(String),
    /// 404
    #[error("{0}")]
    NotFound(String),
    /// 409
    #[error("{0}")]
    Conflict(String),
    /// 422
    #[error("{0}")]
    Unprocessable(String),
}

impl SimError {
    /// The error of item `i` of a batch: its message says which.
    fn in_batch(self, i: usize) -> SimError {
        match self {
            SimError::BadRequest(m) => SimError::BadRequest(format!("runs[{i}]: {m}")),
            SimError::NotFound(m) => SimError::NotFound(format!("runs[{i}]: {m}")),
            SimError::Conflict(m) => SimError::Conflict(format!("runs[{i}]: {m}")),
            SimError::Unprocessable(m) => SimError::Unprocessable(format!("runs[{i}]: {m}")),
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            SimError::BadRequest(_) => 400,
            SimError::NotFound(_) => 404,
            SimError::Conflict(_) => 409,
            SimError::Unprocessable(_) => 422,
        }
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
fn read<T>(m: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|e| e.into_inner())
}
fn write<T>(m: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------
// Inputs
// ---------------------------------------------------------------------------------------

/// A project to add (`POST /_sim/projects`). Everything is optional.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct NewProject {
    #[serde(alias = "id")]
    pub project_id: Option<String>,
    pub name: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    /// Default [`DEFAULT_INACTIVITY_TIMEOUT_SECS`] (30 min), as Currents.
    pub inactivity_timeout_seconds: Option<u64>,
    pub fail_fast: Option<bool>,
    pub default_branch_name: Option<String>,
    /// `owner/repo` of the GitHub repository; used as the default `remoteOrigin`.
    pub repo: Option<String>,
    /// Default framework of the project's runs: `pw` (default) or `cypress`.
    pub framework: Option<String>,
}

/// Groups of a new run: a count (default names per framework) or explicit names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum GroupsSpec {
    Count(u32),
    Names(Vec<String>),
}

/// A partial run (`POST /_sim/runs`); whatever is missing is filled in realistically.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct NewRun {
    pub run_id: Option<String>,
    #[serde(alias = "projectId")]
    pub project: Option<String>,
    pub branch: Option<String>,
    pub sha: Option<String>,
    pub tags: Vec<String>,
    pub ci_build_id: Option<String>,
    #[serde(alias = "authorName")]
    pub author: Option<String>,
    pub author_email: Option<String>,
    pub message: Option<String>,
    /// `pw` or `cypress` (default: the project's).
    pub framework: Option<String>,
    pub remote_origin: Option<String>,
    pub default_branch: Option<String>,
    /// Number of groups or their names (default 1).
    pub groups: Option<GroupsSpec>,
    /// Spec files per group (default 4).
    pub specs: Option<u32>,
    /// Tests per spec file (default: random 1..=10).
    pub tests_per_spec: Option<u32>,
    pub created_at: Option<DateTime<Utc>>,
    /// `running` (default), `failing` (in progress, a completed spec failed: FAILING),
    /// `passed`, `failed`, `canceled` or `timeout`.
    pub state: Option<String>,
    /// Spec files already complete (default: 0 when running, `failed` (at least 1) when
    /// failing, all when passed or failed, half (at least `failed`) when canceled or
    /// timed out).
    pub completed: Option<u32>,
    /// Spec files claimed (running) on top of the completed ones.
    pub claimed: Option<u32>,
    /// Spec files that fail (default 1 when failing or failed, else 0). When failing,
    /// failed, canceled or timed out they are among the completed ones, so the run's
    /// status shows them; when running, among those still to complete (they fail when
    /// they do).
    pub failed: Option<u32>,
    /// Duration of a finished run (default: derived from its specs).
    pub duration_ms: Option<u64>,
    /// When the last spec of a running run completed (default: now).
    pub last_progress_at: Option<DateTime<Utc>>,
    pub pr_id: Option<String>,
    pub previous_run_id: Option<String>,
    /// Let the background ticker complete one spec per tick.
    pub auto: bool,
    /// Emit webhooks for this run (default: true for a running run, false for history).
    pub emit: Option<bool>,
    /// Cancellation actor for `state = "canceled"`.
    pub actor: Option<String>,
}

/// Desired outcome of [`Advance::finish`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    #[serde(alias = "pass")]
    Passed,
    #[serde(alias = "fail")]
    Failed,
}

/// Progress to apply to a running run (`POST /_sim/runs/{id}/advance`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Advance {
    /// Claim this many more spec files (started, not complete).
    pub claim: u32,
    /// Complete this many more spec files (claimed ones first).
    pub complete: u32,
    /// Of the specs completed by `complete`, exactly this many fail (default: as planned).
    pub fail: Option<u32>,
    /// Complete every remaining spec with this outcome.
    pub finish: Option<Outcome>,
    /// Time the run out (inactivity timeout).
    pub timeout: bool,
    /// Cancel the run as a dashboard user would.
    pub cancel: bool,
    /// Actor of `cancel` (default `user:Sim User`).
    pub actor: Option<String>,
    /// Time at which the progress happens (default: now).
    pub at: Option<DateTime<Utc>>,
}

/// Parsed filters and cursor of `GET /projects/{id}/runs`.
#[derive(Debug, Clone, Default)]
pub struct RunQuery {
    pub limit: usize,
    pub starting_after: Option<Key>,
    pub ending_before: Option<Key>,
    pub branches: Vec<String>,
    pub tags: Vec<String>,
    /// `tag_operator=OR`
    pub tags_any: bool,
    pub authors: Vec<String>,
    /// Lowercased search text.
    pub search: Option<String>,
    pub statuses: Vec<RunStatus>,
    pub completion_states: Vec<CompletionState>,
    pub date_start: Option<DateTime<Utc>>,
    pub date_end: Option<DateTime<Utc>>,
    pub pr_id: Option<String>,
}

/// Bulk generation of history (`POST /_sim/generate`), for benchmarks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct GenerateSpec {
    /// Project ids (created when missing).
    pub projects: Vec<String>,
    /// Runs per project.
    pub runs_per_project: u32,
    /// Of those, how many are still in progress (the newest ones).
    pub in_progress: u32,
    /// Spread the runs over this many days before now.
    pub days: u32,
    pub branches: u32,
    pub specs: u32,
    pub groups: u32,
}

impl Default for GenerateSpec {
    fn default() -> Self {
        GenerateSpec {
            projects: vec!["bench1".into(), "bench2".into(), "bench3".into()],
            runs_per_project: 1000,
            in_progress: 10,
            days: 90,
            branches: 20,
            specs: 2,
            groups: 1,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Records
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Plan {
    pub tests: u32,
    pub failures: u32,
    pub flaky: u32,
    pub pending: u32,
    pub skipped: u32,
    pub duration_ms: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct SpecRec {
    pub group: u16,
    pub path: Arc<str>,
    pub claimed_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub plan: Plan,
}

#[derive(Debug, Clone)]
pub(crate) struct GroupRec {
    pub id: Arc<str>,
    pub instances: InstanceCounts,
    pub tests: TestCounts,
}

#[derive(Debug, Clone)]
pub(crate) struct RunRec {
    pub id: String,
    pub project: Arc<str>,
    pub seq: u64,
    pub created_at: DateTime<Utc>,
    pub completion: CompletionState,
    pub status: RunStatus,
    pub tags: Vec<Arc<str>>,
    pub ci_build_id: String,
    pub sha: String,
    pub branch: Arc<str>,
    pub author_name: Arc<str>,
    pub author_email: Arc<str>,
    pub message: Arc<str>,
    pub remote_origin: Arc<str>,
    pub default_branch: Option<Arc<str>>,
    pub cypress: bool,
    pub groups: Vec<GroupRec>,
    pub specs: Vec<SpecRec>,
    pub ended_at: Option<DateTime<Utc>>,
    pub cancellation: Option<Cancellation>,
    pub timeout_ms: Option<u64>,
    pub pr_id: Option<String>,
    pub previous_run_id: Option<String>,
    pub auto: bool,
    pub emit: bool,
}

/// Currents' default project inactivity timeout: 30 min (configurable from 3 min to
/// 12 h; `currents-notes.md` §3.1).
pub const DEFAULT_INACTIVITY_TIMEOUT_SECS: u64 = 1800;

const PW_VERSION: &str = "1.52.0";
const PW_CLIENT: &str = "1.12.0";
const CY_VERSION: &str = "14.3.2";
const CY_CLIENT: &str = "2.2.0";

impl RunRec {
    pub fn key(&self) -> Key {
        (self.created_at.timestamp_millis(), self.seq)
    }

    fn failures(&self) -> u64 {
        self.groups.iter().map(|g| g.tests.failures).sum()
    }

    /// For each group, whether all its spec files have reported.
    fn groups_done(&self) -> Vec<bool> {
        let mut done = vec![true; self.groups.len()];
        for s in &self.specs {
            if s.completed_at.is_none()
                && let Some(d) = done.get_mut(s.group as usize)
            {
                *d = false;
            }
        }
        done
    }

    fn last_activity(&self) -> DateTime<Utc> {
        self.specs
            .iter()
            .filter_map(|s| s.completed_at.or(s.claimed_at))
            .max()
            .unwrap_or(self.created_at)
            .max(self.created_at)
    }

    /// Recomputes group counters and the run status from the specs.
    fn recompute(&mut self) {
        for g in &mut self.groups {
            g.instances = InstanceCounts::default();
            g.tests = TestCounts::default();
        }
        for s in &self.specs {
            let Some(g) = self.groups.get_mut(s.group as usize) else {
                continue;
            };
            g.instances.overall += 1;
            if s.claimed_at.is_some() || s.completed_at.is_some() {
                g.instances.claimed += 1;
            }
            if s.completed_at.is_some() {
                let p = s.plan;
                g.instances.complete += 1;
                if p.failures > 0 {
                    g.instances.failures += 1;
                } else {
                    g.instances.passes += 1;
                }
                g.tests.overall += p.tests as u64;
                g.tests.failures += p.failures as u64;
                g.tests.pending += p.pending as u64;
                g.tests.skipped += p.skipped as u64;
                g.tests.flaky += p.flaky as u64;
                g.tests.retries += p.flaky as u64;
                g.tests.passes += p.tests.saturating_sub(p.failures + p.pending + p.skipped) as u64;
            }
        }
        let failing = self.failures() > 0;
        self.status = match self.completion {
            CompletionState::InProgress if failing => RunStatus::Failing,
            CompletionState::InProgress => RunStatus::Running,
            CompletionState::Timeout => RunStatus::Failed,
            _ if failing => RunStatus::Failed,
            _ => RunStatus::Passed,
        };
    }

    fn commit(&self) -> Commit {
        Commit {
            sha: Some(self.sha.clone()),
            branch: Some(self.branch.to_string()),
            author_name: Some(self.author_name.to_string()),
            author_email: Some(self.author_email.to_string()),
            message: Some(self.message.to_string()),
            remote_origin: Some(self.remote_origin.to_string()),
            default_branch: self.default_branch.as_ref().map(|s| s.to_string()),
        }
    }

    pub fn instance_id(&self, idx: usize) -> String {
        ids::instance_id(self.seq, idx, self.cypress)
    }

    fn machine_id(&self, idx: usize) -> String {
        let s = &self.specs[idx];
        ids::machine_id(self.seq, s.group as usize, idx % 2, self.cypress)
    }

    fn platform(&self, group: &str) -> Platform {
        let (browser, version) = names::browser_for_group(group, self.cypress);
        Platform {
            os_name: Some("linux".into()),
            os_version: Some("Ubuntu - 22.04".into()),
            browser_name: Some(browser.into()),
            browser_version: Some(version.into()),
        }
    }

    fn spec_model(&self, idx: usize) -> Spec {
        let s = &self.specs[idx];
        let results = s.completed_at.map(|done| {
            let p = s.plan;
            let started = s.claimed_at.unwrap_or(done);
            SpecResults {
                stats: SpecStats {
                    suites: Some(1),
                    tests: p.tests as u64,
                    passes: p.tests.saturating_sub(p.failures + p.pending + p.skipped) as u64,
                    pending: p.pending as u64,
                    skipped: p.skipped as u64,
                    failures: p.failures as u64,
                    flaky: Some(p.flaky as u64),
                    wall_clock_started_at: Some(started),
                    wall_clock_ended_at: Some(done),
                    wall_clock_duration: Some((done - started).num_milliseconds().max(0) as u64),
                },
                flaky: Some(p.flaky as u64),
                video_url: None,
                screenshots: Vec::new(),
            }
        });
        Spec {
            group_id: Some(self.groups[s.group as usize].id.to_string()),
            spec: s.path.to_string(),
            instance_id: Some(self.instance_id(idx)),
            claimed_at: s.claimed_at,
            completed_at: s.completed_at,
            machine_id: s.claimed_at.map(|_| self.machine_id(idx)),
            results,
        }
    }

    /// The API model: the full run (`with_specs`) or a feed item (cursor, no specs).
    pub fn to_model(&self, with_specs: bool, list_item: bool) -> Run {
        let (fw, version, client) = if self.cypress {
            ("cypress", CY_VERSION, CY_CLIENT)
        } else {
            ("pw", PW_VERSION, PW_CLIENT)
        };
        Run {
            run_id: self.id.clone(),
            project_id: self.project.to_string(),
            created_at: self.created_at,
            completion_state: self.completion.clone(),
            status: self.status.clone(),
            tags: self.tags.iter().map(|t| t.to_string()).collect(),
            cypress_version: self.cypress.then(|| CY_VERSION.to_string()),
            duration_ms: self
                .ended_at
                .map(|e| (e - self.created_at).num_milliseconds().max(0) as u64),
            timeout: Some(RunTimeout {
                is_timeout: self.completion == CompletionState::Timeout,
                timeout_value_ms: self.timeout_ms,
            }),
            cancellation: self.cancellation.clone(),
            groups: self
                .groups
                .iter()
                .map(|g| RunGroup {
                    group_id: g.id.to_string(),
                    tags: Vec::new(),
                    platform: Some(self.platform(&g.id)),
                    instances: g.instances,
                    tests: g.tests,
                })
                .collect(),
            meta: RunMeta {
                ci_build_id: Some(self.ci_build_id.clone()),
                commit: self.commit(),
                framework: Some(Framework {
                    kind: Some(fw.into()),
                    name: None,
                    version: Some(version.into()),
                    client_version: Some(client.into()),
                }),
                pr: self.pr_id.as_ref().map(|id| PrMeta {
                    id: Some(id.clone()),
                    title: None,
                }),
            },
            specs: if with_specs {
                (0..self.specs.len()).map(|i| self.spec_model(i)).collect()
            } else {
                Vec::new()
            },
            previous_run_id: self.previous_run_id.clone(),
            // A deleted run is gone from the simulator (a GET answers 404).
            deleted_at: None,
            cursor: list_item.then(|| ids::encode_cursor(self.key())),
        }
    }

    /// `GET /instances/{id}` body for spec `idx`.
    fn instance_json(&self, idx: usize) -> Value {
        let spec = self.spec_model(idx);
        let s = &self.specs[idx];
        let p = s.plan;
        let group = &self.groups[s.group as usize].id;
        let tests: Vec<Value> = if s.completed_at.is_some() {
            (0..p.tests)
                .map(|i| {
                    let state = if i < p.failures {
                        "failed"
                    } else if i < p.failures + p.pending {
                        "pending"
                    } else if i < p.failures + p.pending + p.skipped {
                        "skipped"
                    } else {
                        "passed"
                    };
                    let flaky = state == "passed" && i >= p.tests.saturating_sub(p.flaky);
                    let title = test_title(&s.path, i);
                    let error = (state == "failed").then(|| {
                        json!({"name": "Error", "message": format!("expect(received).toBe(expected) in case {}", i + 1),
                               "stack": "Error: expect(received).toBe(expected)\n    at spec:12:7"})
                    });
                    let mut attempts = vec![];
                    if flaky {
                        attempts.push(json!({"attemptId": format!("{}-a0", i), "state": "failed", "rawStatus": "failed",
                            "error": {"name": "Error", "message": "timed out"}, "wallClockDuration": 1200}));
                    }
                    attempts.push(json!({"attemptId": format!("{}-a{}", i, attempts.len()), "state": state,
                        "rawStatus": state, "error": error, "wallClockDuration": 800}));
                    json!({
                        "testId": format!("t{}", i + 1),
                        "title": title,
                        "originalTitle": title,
                        "state": state,
                        "isFlaky": flaky,
                        "displayError": error.as_ref().map(|e| e["message"].clone()),
                        "tags": [],
                        "attempts": attempts,
                    })
                })
                .collect()
        } else {
            Vec::new()
        };
        let results = spec.results.as_ref().map(|r| {
            json!({
                "stats": r.stats,
                "flaky": r.flaky,
                "exception": null,
                "tests": tests,
                "screenshots": [],
                "videos": [],
                "playwrightTraces": [],
            })
        });
        json!({
            "instanceId": spec.instance_id,
            "runId": self.id,
            "projectId": self.project.as_ref(),
            "groupId": group.as_ref(),
            "spec": spec.spec,
            "machineId": spec.machine_id,
            "createdAt": ms_time(self.created_at),
            "claimedAt": spec.claimed_at.map(ms_time),
            "completedAt": spec.completed_at.map(ms_time),
            "platform": self.platform(group),
            "commit": self.commit(),
            "tags": self.tags.iter().map(|t| t.as_ref()).collect::<Vec<_>>(),
            "results": results,
        })
    }

    fn matches(&self, q: &RunQuery) -> bool {
        if !q.branches.is_empty() && !q.branches.iter().any(|b| b == self.branch.as_ref()) {
            return false;
        }
        if !q.tags.is_empty() {
            let has = |t: &String| self.tags.iter().any(|x| x.as_ref() == t);
            let ok = if q.tags_any {
                q.tags.iter().any(has)
            } else {
                q.tags.iter().all(has)
            };
            if !ok {
                return false;
            }
        }
        // `authors[]` are git author names (`RunFeedAuthorQuery`), not e-mail addresses.
        if !q.authors.is_empty() && !q.authors.iter().any(|a| a == self.author_name.as_ref()) {
            return false;
        }
        if !q.statuses.is_empty() && !q.statuses.contains(&self.status) {
            return false;
        }
        if !q.completion_states.is_empty() && !q.completion_states.contains(&self.completion) {
            return false;
        }
        if let Some(d) = q.date_start
            && self.created_at < d
        {
            return false;
        }
        if let Some(d) = q.date_end
            && self.created_at >= d
        {
            return false;
        }
        if let Some(pr) = &q.pr_id
            && self.pr_id.as_deref() != Some(pr.as_str())
        {
            return false;
        }
        if let Some(s) = &q.search
            && !contains_ci(&self.ci_build_id, s)
            && !contains_ci(&self.message, s)
        {
            return false;
        }
        true
    }
}

/// The title path of test `i` (0-based) of spec file `path`.
fn test_title(path: &str, i: u32) -> Vec<String> {
    vec![
        format!("{} suite", path.rsplit('/').next().unwrap_or("spec")),
        format!("case {}", i + 1),
    ]
}

/// A test id in the shape of Playwright's, as `.last-run.json` lists them: 20 hex digits
/// of a hash of the spec file, a dash, and 20 of a hash of the test (its group, which is
/// the Playwright project, and its title path); a test has the same id in every run.
pub(crate) fn pw_test_id(path: &str, group: &str, title: &[String]) -> String {
    use sha2::{Digest, Sha256};
    let hex20 = |parts: &[&str]| {
        let mut h = Sha256::new();
        for p in parts {
            h.update(p.as_bytes());
            h.update([0x1e]);
        }
        hex::encode(h.finalize())[..20].to_string()
    };
    let mut test: Vec<&str> = vec![group];
    test.extend(title.iter().map(String::as_str));
    format!("{}-{}", hex20(&[path]), hex20(&test))
}

/// The error of `GET /runs/find` without a selector.
pub const FIND_SELECTOR_REQUIRED: &str = "\"ciBuildId\" or \"branch\" is required";

/// A time as the Currents API writes it: RFC 3339 in UTC to the millisecond
/// (`2022-07-06T08:37:58.317Z`), as the models serialise theirs.
fn ms_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Case-insensitive substring test; `needle` is already lowercase.
fn contains_ci(hay: &str, needle: &str) -> bool {
    if needle.is_empty() {
        return true;
    }
    if !(hay.is_ascii() && needle.is_ascii()) {
        return hay.to_lowercase().contains(needle);
    }
    let (h, n) = (hay.as_bytes(), needle.as_bytes());
    if n.len() > h.len() {
        return false;
    }
    let first = n[0];
    (0..=h.len() - n.len()).any(|i| {
        h[i].to_ascii_lowercase() == first && h[i + 1..i + n.len()].eq_ignore_ascii_case(&n[1..])
    })
}

#[derive(Debug, Clone)]
pub(crate) struct ProjectRec {
    pub project: Project,
    pub repo: Option<String>,
    pub cypress: bool,
}

#[derive(Debug, Default)]
pub(crate) struct ProjectRuns {
    pub all: BTreeMap<Key, RunRec>,
    pub in_progress: BTreeSet<Key>,
    pub by_branch: HashMap<Arc<str>, BTreeSet<Key>>,
}

impl ProjectRuns {
    fn insert(&mut self, rec: RunRec) {
        let k = rec.key();
        if rec.completion == CompletionState::InProgress {
            self.in_progress.insert(k);
        }
        self.by_branch
            .entry(rec.branch.clone())
            .or_default()
            .insert(k);
        self.all.insert(k, rec);
    }

    fn remove(&mut self, k: &Key) -> Option<RunRec> {
        let rec = self.all.remove(k)?;
        self.in_progress.remove(k);
        if let Some(set) = self.by_branch.get_mut(&rec.branch) {
            set.remove(k);
            if set.is_empty() {
                self.by_branch.remove(&rec.branch);
            }
        }
        Some(rec)
    }
}

pub(crate) struct CurrentsState {
    pub projects: BTreeMap<Key, ProjectRec>,
    pub project_keys: HashMap<String, Key>,
    pub runs: HashMap<Arc<str>, ProjectRuns>,
    pub run_loc: HashMap<String, (Arc<str>, Key)>,
    pub seq_loc: HashMap<u64, (Arc<str>, Key)>,
    pub webhooks: Vec<Webhook>,
    pub seq: u64,
    pub rng: StdRng,
    interner: HashSet<Arc<str>>,
}

/// The counters a rejected request restores ([`CurrentsState::savepoint`]).
struct Savepoint {
    seq: u64,
    rng: StdRng,
}

/// An event to emit once the state lock is released.
struct PendingEvent {
    payload: CurrentsWebhookPayload,
    run_id: String,
    event: &'static str,
    hooks: Vec<HookTarget>,
}

impl CurrentsState {
    pub fn new(seed: u64) -> Self {
        CurrentsState {
            projects: BTreeMap::new(),
            project_keys: HashMap::new(),
            runs: HashMap::new(),
            run_loc: HashMap::new(),
            seq_loc: HashMap::new(),
            webhooks: Vec::new(),
            seq: 0,
            rng: StdRng::seed_from_u64(seed),
            interner: HashSet::new(),
        }
    }

    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.interner.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        self.interner.insert(a.clone());
        a
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// What [`CurrentsState::roll_back`] restores.
    fn savepoint(&self) -> Savepoint {
        Savepoint {
            seq: self.seq,
            rng: self.rng.clone(),
        }
    }

    /// Undoes the runs `added` and every project made since `sp` (a run's project is
    /// created on first use), and restores the sequence and the random generator, so a
    /// rejected request leaves the world as it found it (interned strings aside, which
    /// nothing sees).
    fn roll_back(&mut self, sp: Savepoint, added: &[String]) {
        for id in added {
            if let Some((p, k)) = self.run_loc.remove(id)
                && let Some(rec) = self.runs.get_mut(&p).and_then(|pr| pr.remove(&k))
            {
                self.seq_loc.remove(&rec.seq);
            }
        }
        let new_projects: Vec<Key> = self
            .projects
            .keys()
            .filter(|(_, seq)| *seq > sp.seq)
            .copied()
            .collect();
        for k in new_projects {
            if let Some(p) = self.projects.remove(&k) {
                let id = p.project.project_id;
                self.project_keys.remove(&id);
                self.runs.remove(id.as_str());
            }
        }
        self.seq = sp.seq;
        self.rng = sp.rng;
    }

    fn project_rec(&self, id: &str) -> Option<&ProjectRec> {
        self.project_keys.get(id).and_then(|k| self.projects.get(k))
    }

    fn get_run(&self, id: &str) -> Option<&RunRec> {
        let (p, k) = self.run_loc.get(id)?;
        self.runs.get(p)?.all.get(k)
    }

    fn add_project(&mut self, np: NewProject, now: DateTime<Utc>) -> Result<Project, SimError> {
        let id = match np.project_id {
            Some(id) => {
                if id.is_empty()
                    || id.len() > 64
                    || !id
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                {
                    return Err(SimError::BadRequest(format!("invalid project id {id:?}")));
                }
                if self.project_keys.contains_key(&id) {
                    return Err(SimError::Conflict(format!("project {id} already exists")));
                }
                id
            }
            None => loop {
                let id = ids::random_alnum(&mut self.rng, 6);
                if !self.project_keys.contains_key(&id) {
                    break id;
                }
            },
        };
        let cypress = match np.framework.as_deref().map(normalize_framework) {
            Some(Ok(c)) => c,
            Some(Err(e)) => return Err(e),
            None => false,
        };
        let created = np.created_at.unwrap_or(now);
        let project = Project {
            project_id: id.clone(),
            name: Some(np.name.unwrap_or_else(|| match &np.repo {
                Some(r) => r.rsplit('/').next().unwrap_or(r).to_string(),
                None => format!("Project {id}"),
            })),
            created_at: Some(created),
            inactivity_timeout_seconds: Some(
                np.inactivity_timeout_seconds
                    .unwrap_or(DEFAULT_INACTIVITY_TIMEOUT_SECS),
            ),
            fail_fast: Some(np.fail_fast.unwrap_or(false)),
            default_branch_name: Some(np.default_branch_name.unwrap_or_else(|| "main".into())),
            cursor: None,
        };
        let key = (created.timestamp_millis(), self.next_seq());
        self.project_keys.insert(id.clone(), key);
        let interned = self.intern(&id);
        self.runs.entry(interned).or_default();
        self.projects.insert(
            key,
            ProjectRec {
                project: project.clone(),
                repo: np.repo,
                cypress,
            },
        );
        Ok(project)
    }

    fn build_run(&mut self, nr: NewRun, now: DateTime<Utc>) -> Result<RunRec, SimError> {
        // Project (created on first use).
        let project_id = match nr.project.clone() {
            Some(p) => p,
            None => match self.projects.values().next() {
                Some(p) => p.project.project_id.clone(),
                None => "bAYZ4a".to_string(),
            },
        };
        if self.project_rec(&project_id).is_none() {
            let repo = nr.remote_origin.as_deref().and_then(repo_from_origin);
            self.add_project(
                NewProject {
                    project_id: Some(project_id.clone()),
                    repo,
                    framework: nr.framework.clone(),
                    ..Default::default()
                },
                now,
            )?;
        }
        let prec = self
            .project_rec(&project_id)
            .cloned()
            .ok_or_else(|| SimError::NotFound("Project not found".into()))?;
        let cypress = match nr.framework.as_deref() {
            Some(f) => normalize_framework(f)?,
            None => prec.cypress,
        };
        let state = match nr.state.as_deref().map(|s| s.to_ascii_lowercase()) {
            None => CompletionState::InProgress,
            Some(s) => match s.as_str() {
                "running" | "in_progress" | "failing" => CompletionState::InProgress,
                "passed" | "failed" | "complete" => CompletionState::Complete,
                "canceled" | "cancelled" => CompletionState::Canceled,
                "timeout" | "timedout" => CompletionState::Timeout,
                _ => {
                    return Err(SimError::BadRequest(format!(
                        "unknown state {s:?}: use running, failing, passed, failed, canceled or timeout"
                    )));
                }
            },
        };
        let wants_failing =
            matches!(nr.state.as_deref(), Some(s) if s.eq_ignore_ascii_case("failing"));
        let wants_fail = wants_failing
            || matches!(nr.state.as_deref(), Some(s) if s.eq_ignore_ascii_case("failed"));
        let wants_pass = matches!(nr.state.as_deref(), Some(s) if s.eq_ignore_ascii_case("passed"));

        let run_id = match nr.run_id.clone() {
            Some(id) => {
                if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric())
                {
                    return Err(SimError::BadRequest(format!(
                        "invalid run id {id:?}: 1-64 alphanumerics"
                    )));
                }
                if self.run_loc.contains_key(&id) {
                    return Err(SimError::Conflict(format!("run {id} already exists")));
                }
                id
            }
            None => loop {
                let id = ids::random_hex(&mut self.rng, if cypress { 32 } else { 16 });
                if !self.run_loc.contains_key(&id) {
                    break id;
                }
            },
        };

        // Groups and specs.
        let group_names: Vec<String> = match nr.groups.clone() {
            None | Some(GroupsSpec::Count(0)) => Vec::new(),
            Some(GroupsSpec::Count(n)) => {
                if n > 20 {
                    return Err(SimError::BadRequest("groups must be at most 20".into()));
                }
                let pool = if cypress {
                    names::CY_GROUPS
                } else {
                    names::PW_GROUPS
                };
                (0..n as usize)
                    .map(|i| match pool.get(i) {
                        Some(g) => g.to_string(),
                        None => format!("group-{}", i + 1),
                    })
                    .collect()
            }
            Some(GroupsSpec::Names(v)) => {
                if v.len() > 20 || v.iter().any(|g| g.is_empty()) {
                    return Err(SimError::BadRequest("groups: 1-20 non-empty names".into()));
                }
                v
            }
        };
        let branch = nr.branch.clone().unwrap_or_else(|| {
            prec.project
                .default_branch_name
                .clone()
                .unwrap_or_else(|| "main".into())
        });
        let remote_origin = nr.remote_origin.clone().unwrap_or_else(|| {
            format!(
                "https://github.com/{}",
                prec.repo.as_deref().unwrap_or("acme/web")
            )
        });
        let repo_slug = repo_from_origin(&remote_origin).unwrap_or_else(|| "acme/web".into());
        let ci_build_id = nr.ci_build_id.clone().unwrap_or_else(|| {
            format!(
                "{}-{}-1",
                repo_slug,
                self.rng.gen_range(10_000_000_000u64..20_000_000_000)
            )
        });
        let group_names = if group_names.is_empty() {
            vec![if cypress {
                ci_build_id.clone()
            } else {
                "chromium".to_string()
            }]
        } else {
            group_names
        };
        let per_group = nr.specs.unwrap_or(4);
        if per_group == 0 || per_group > 500 {
            return Err(SimError::BadRequest(
                "specs (per group) must be 1-500".into(),
            ));
        }
        if let Some(t) = nr.tests_per_spec
            && (t == 0 || t > 1000)
        {
            return Err(SimError::BadRequest("testsPerSpec must be 1-1000".into()));
        }
        let total = per_group as usize * group_names.len();
        let groups: Vec<GroupRec> = group_names
            .iter()
            .map(|g| GroupRec {
                id: self.intern(g),
                instances: InstanceCounts::default(),
                tests: TestCounts::default(),
            })
            .collect();
        // Every group runs the same spec files; work is interleaved across groups.
        let pool_len = names::SPEC_AREAS.len() * names::SPEC_NAMES.len();
        let picked: Vec<usize> =
            rand::seq::index::sample(&mut self.rng, pool_len, (per_group as usize).min(pool_len))
                .into_vec();
        let paths: Vec<Arc<str>> = (0..per_group as usize)
            .map(|i| {
                let path = match picked.get(i).copied() {
                    Some(k) => names::spec_path(
                        names::SPEC_AREAS[k / names::SPEC_NAMES.len()],
                        names::SPEC_NAMES[k % names::SPEC_NAMES.len()],
                        cypress,
                    ),
                    None => names::spec_path("extra", &format!("spec-{i}"), cypress),
                };
                self.intern(&path)
            })
            .collect();
        let mut specs = Vec::with_capacity(total);
        for path in &paths {
            for gi in 0..group_names.len() {
                let tests = nr
                    .tests_per_spec
                    .unwrap_or_else(|| self.rng.gen_range(1..=10));
                let plan = Plan {
                    tests,
                    failures: 0,
                    flaky: u32::from(tests > 1 && self.rng.gen_bool(0.05)),
                    pending: u32::from(tests > 2 && self.rng.gen_bool(0.1)),
                    skipped: 0,
                    duration_ms: self.rng.gen_range(4_000..90_000),
                };
                specs.push(SpecRec {
                    group: gi as u16,
                    path: path.clone(),
                    claimed_at: None,
                    completed_at: None,
                    plan,
                });
            }
        }
        // Failing specs.
        let failing = match nr.failed {
            Some(n) if wants_pass && n > 0 => {
                return Err(SimError::BadRequest(
                    "state passed with failed specs".into(),
                ));
            }
            Some(0) if wants_fail => {
                return Err(SimError::BadRequest(
                    "state failed or failing needs at least one failed spec".into(),
                ));
            }
            Some(n) => (n as usize).min(total),
            None if wants_fail => 1,
            None => 0,
        };
        // Spec files that have reported: the first `done` ones. Failures count only once
        // reported (FAILING, FAILED), so a failing, failed, canceled or timed-out run
        // has its failing specs among these.
        let done = match state {
            CompletionState::InProgress if wants_failing => {
                let done = nr.completed.map_or(failing, |c| c as usize);
                if done < failing {
                    return Err(SimError::BadRequest(format!(
                        "state failing: failed ({failing}) must not exceed completed ({done})"
                    )));
                }
                if done >= total {
                    return Err(SimError::BadRequest(format!(
                        "state failing needs a spec still running: completed ({done}) must be \
                         below the number of specs ({total})"
                    )));
                }
                done
            }
            CompletionState::InProgress => (nr.completed.unwrap_or(0) as usize).min(total),
            CompletionState::Complete => total,
            CompletionState::Canceled | CompletionState::Timeout => match nr.completed {
                Some(c) => {
                    let done = (c as usize).min(total);
                    if done < failing {
                        return Err(SimError::BadRequest(format!(
                            "failed ({failing}) must not exceed completed ({done}): \
                             only completed specs report failures"
                        )));
                    }
                    done
                }
                None => (total / 2).max(failing),
            },
            CompletionState::Unknown(_) => 0,
        };
        let mut idx: Vec<usize> = (0..total).collect();
        idx.shuffle(&mut self.rng);
        // A running run fails later: its failing specs are among those not yet reported
        // where they fit; every other state has them among the reported ones.
        let running = state == CompletionState::InProgress && !wants_failing;
        idx.sort_by_key(|&i| (i < done) == running);
        for &i in idx.iter().take(failing) {
            let p = &mut specs[i].plan;
            p.failures = self.rng.gen_range(1..=p.tests.min(3));
            p.pending = p.pending.min(p.tests - p.failures);
            p.flaky = p.flaky.min(p.tests - p.failures - p.pending);
        }
        let mut rec = RunRec {
            id: run_id,
            project: self.intern(&project_id),
            seq: self.next_seq(),
            created_at: nr.created_at.unwrap_or(now),
            completion: state.clone(),
            status: RunStatus::Running,
            tags: nr.tags.iter().map(|t| self.intern(t)).collect(),
            sha: nr
                .sha
                .clone()
                .unwrap_or_else(|| ids::random_hex(&mut self.rng, 40)),
            branch: self.intern(&branch),
            author_name: {
                let a = nr
                    .author
                    .clone()
                    .unwrap_or_else(|| names::AUTHORS[0].0.to_string());
                self.intern(&a)
            },
            author_email: {
                let default = names::AUTHORS
                    .iter()
                    .find(|(n, _)| Some(*n) == nr.author.as_deref())
                    .map(|(_, e)| e.to_string())
                    .unwrap_or_else(|| match &nr.author {
                        Some(a) => {
                            format!("{}@example.com", a.to_ascii_lowercase().replace(' ', "."))
                        }
                        None => names::AUTHORS[0].1.to_string(),
                    });
                let e = nr.author_email.clone().unwrap_or(default);
                self.intern(&e)
            },
            message: {
                let m = nr
                    .message
                    .clone()
                    .unwrap_or_else(|| names::MESSAGES[0].to_string());
                self.intern(&m)
            },
            remote_origin: self.intern(&remote_origin),
            default_branch: {
                let d = nr
                    .default_branch
                    .clone()
                    .or(prec.project.default_branch_name.clone());
                d.map(|d| self.intern(&d))
            },
            ci_build_id,
            cypress,
            groups,
            specs,
            ended_at: None,
            cancellation: None,
            timeout_ms: None,
            pr_id: nr.pr_id.clone(),
            previous_run_id: nr.previous_run_id.clone(),
            auto: nr.auto,
            emit: nr.emit.unwrap_or(state == CompletionState::InProgress),
        };
        let created = rec.created_at;
        let inactivity_ms = prec
            .project
            .inactivity_timeout_seconds
            .unwrap_or(DEFAULT_INACTIVITY_TIMEOUT_SECS)
            * 1000;
        let natural_ms = {
            let sum: u64 = rec.specs.iter().map(|s| s.plan.duration_ms).sum();
            (sum / 2).max(30_000) + 15_000
        };
        let duration = ChronoDuration::milliseconds(nr.duration_ms.unwrap_or(natural_ms) as i64);
        match state {
            CompletionState::InProgress => {
                let last = nr.last_progress_at.unwrap_or(now).max(created);
                spread_completion(&mut rec.specs[..done], created, last);
                let claimed =
                    nr.claimed
                        .map(|c| c as usize)
                        .unwrap_or(if done < total { 2 } else { 0 });
                for s in rec.specs.iter_mut().skip(done).take(claimed) {
                    s.claimed_at = Some(last);
                }
                if done == total {
                    // Everything reported: the run is complete.
                    rec.completion = CompletionState::Complete;
                    rec.ended_at = Some(last);
                }
            }
            CompletionState::Complete => {
                let end = created + duration;
                spread_completion(&mut rec.specs, created, end);
                rec.ended_at = Some(end);
            }
            CompletionState::Canceled | CompletionState::Timeout => {
                let end = created + duration;
                spread_completion(&mut rec.specs[..done], created, end);
                if rec.completion == CompletionState::Canceled {
                    rec.cancellation = Some(Cancellation {
                        actor: Some(nr.actor.clone().unwrap_or_else(|| "api:ci".into())),
                        canceled_at: Some(end),
                        reason: Some("apiRequest".into()),
                    });
                    rec.ended_at = Some(end);
                } else {
                    rec.timeout_ms = Some(inactivity_ms);
                    rec.ended_at = Some(end + ChronoDuration::milliseconds(inactivity_ms as i64));
                }
            }
            CompletionState::Unknown(_) => {}
        }
        rec.recompute();
        Ok(rec)
    }

    fn insert_run(&mut self, rec: RunRec) {
        let key = rec.key();
        self.run_loc
            .insert(rec.id.clone(), (rec.project.clone(), key));
        self.seq_loc.insert(rec.seq, (rec.project.clone(), key));
        self.runs
            .entry(rec.project.clone())
            .or_default()
            .insert(rec);
    }

    /// Applies `f` to a run and keeps the in-progress index in step.
    fn with_run_mut<T>(
        &mut self,
        id: &str,
        f: impl FnOnce(&mut RunRec) -> Result<T, SimError>,
    ) -> Result<T, SimError> {
        let (p, k) = self
            .run_loc
            .get(id)
            .cloned()
            .ok_or_else(|| SimError::NotFound("Run not found".into()))?;
        let pr = self
            .runs
            .get_mut(&p)
            .ok_or_else(|| SimError::NotFound("Run not found".into()))?;
        let rec = pr
            .all
            .get_mut(&k)
            .ok_or_else(|| SimError::NotFound("Run not found".into()))?;
        let out = f(rec)?;
        if rec.completion != CompletionState::InProgress {
            pr.in_progress.remove(&k);
        }
        Ok(out)
    }

    fn hooks_for(&self, project: &str, event: &str) -> Vec<HookTarget> {
        self.webhooks
            .iter()
            .filter(|w| w.project_id == project)
            .filter(|w| w.hook_events.is_empty() || w.hook_events.iter().any(|e| e == event))
            .map(|w| HookTarget {
                url: w.url.clone(),
                headers: parse_headers(w.headers.as_deref()).unwrap_or_default(),
                source: format!("webhook:{}", w.hook_id),
            })
            .collect()
    }

    /// One event of `rec` for its webhooks: the whole run's counters, or those of group
    /// `group` (with its `groupId`).
    fn pending_event(
        &self,
        rec: &RunRec,
        event: &'static str,
        dashboard: &str,
        group: Option<usize>,
    ) -> PendingEvent {
        let (group_id, t) = match group.and_then(|gi| rec.groups.get(gi)) {
            Some(g) => (Some(g.id.to_string()), g.tests),
            None => {
                let mut t = TestCounts::default();
                for g in &rec.groups {
                    t.add(&g.tests);
                }
                (None, t)
            }
        };
        let payload = CurrentsWebhookPayload {
            event: event.to_string(),
            run_url: format!("{}/run/{}", dashboard.trim_end_matches('/'), rec.id),
            build_id: Some(rec.ci_build_id.clone()),
            group_id,
            tags: rec.tags.iter().map(|t| t.to_string()).collect(),
            commit: Some(rec.commit()),
            overall: Some(t.overall),
            passes: Some(t.passes),
            failures: Some(t.failures),
            pending: Some(t.pending),
            skipped: Some(t.skipped),
            retries: Some(t.retries),
            flaky: Some(t.flaky),
        };
        PendingEvent {
            payload,
            run_id: rec.id.clone(),
            event,
            hooks: self.hooks_for(&rec.project, event),
        }
    }

    /// The webhooks of a change to `rec`, in order: `RUN_START` when it `started`, then
    /// the events of its end when it ended (it was in progress and no longer is).
    ///
    /// With `per_group` a multi-group run has one event per group, with its `groupId`
    /// (`groupId: "only for multigroup runs"`, `currents-notes.md` §2.1), each when its
    /// group gets there, as Currents' predecessor sorry-cypress emits them
    /// (`emitGroupStart`, `emitGroupFinish`, `emitGroupTimedout`): a group whose spec
    /// files have all reported gets its `RUN_FINISH` at once, while other groups still
    /// run (`groups_done_before` are those that had already got theirs); a cancellation
    /// or timeout then reaches only the groups still running.
    fn change_events(
        &self,
        rec: &RunRec,
        started: bool,
        ended: bool,
        groups_done_before: &[bool],
        dashboard: &str,
        per_group: bool,
    ) -> Vec<PendingEvent> {
        let mut out = Vec::new();
        if !rec.emit {
            return out;
        }
        let fan_out = per_group && rec.groups.len() > 1;
        if started {
            if fan_out {
                out.extend(
                    (0..rec.groups.len())
                        .map(|gi| self.pending_event(rec, "RUN_START", dashboard, Some(gi))),
                );
            } else {
                out.push(self.pending_event(rec, "RUN_START", dashboard, None));
            }
        }
        let end_event = if ended {
            final_event(&rec.completion)
        } else {
            None
        };
        if fan_out {
            for (gi, done) in rec.groups_done().into_iter().enumerate() {
                let was_done = groups_done_before.get(gi).copied().unwrap_or(false);
                let event = match (done, was_done) {
                    (true, false) => Some("RUN_FINISH"),
                    (false, _) => end_event,
                    (true, true) => None,
                };
                if let Some(ev) = event {
                    out.push(self.pending_event(rec, ev, dashboard, Some(gi)));
                }
            }
        } else if let Some(ev) = end_event {
            out.push(self.pending_event(rec, ev, dashboard, None));
        }
        out
    }
}

/// `r` names commit `sha`: equal, or an abbreviation of at least 7 characters.
pub(crate) fn sha_matches(sha: &str, r: &str) -> bool {
    sha.eq_ignore_ascii_case(r)
        || (r.len() >= 7
            && r.len() < sha.len()
            && sha.is_char_boundary(r.len())
            && sha[..r.len()].eq_ignore_ascii_case(r))
}

fn spread_completion(specs: &mut [SpecRec], start: DateTime<Utc>, end: DateTime<Utc>) {
    let n = specs.len() as i64;
    if n == 0 {
        return;
    }
    let span = (end - start).num_milliseconds().max(0);
    for (i, s) in specs.iter_mut().enumerate() {
        let done = start + ChronoDuration::milliseconds(span * (i as i64 + 1) / n);
        let began = (done - ChronoDuration::milliseconds(s.plan.duration_ms as i64)).max(start);
        s.claimed_at = Some(began);
        s.completed_at = Some(done);
    }
}

fn normalize_framework(f: &str) -> Result<bool, SimError> {
    match f.to_ascii_lowercase().as_str() {
        "pw" | "playwright" => Ok(false),
        "cypress" | "cy" => Ok(true),
        other => Err(SimError::BadRequest(format!(
            "unsupported framework {other:?}: pw or cypress"
        ))),
    }
}

/// `https://github.com/acme/web(.git)` -> `acme/web`.
pub fn repo_from_origin(origin: &str) -> Option<String> {
    let s = origin.trim().trim_end_matches('/').trim_end_matches(".git");
    let s = s
        .strip_prefix("git@")
        .map(|r| r.replacen(':', "/", 1))
        .unwrap_or_else(|| s.to_string());
    let parts: Vec<&str> = s.rsplit('/').take(2).collect();
    if parts.len() == 2 && !parts[0].is_empty() && !parts[1].is_empty() && !parts[1].contains(':') {
        Some(format!("{}/{}", parts[1], parts[0]))
    } else {
        None
    }
}

/// Parses a webhook `headers` value: a JSON object (as a string) of string values.
pub fn parse_headers(s: Option<&str>) -> Result<Vec<(String, String)>, String> {
    let Some(s) = s else { return Ok(Vec::new()) };
    if s.trim().is_empty() {
        return Ok(Vec::new());
    }
    let v: Value = serde_json::from_str(s)
        .map_err(|_| "\"headers\" must be a JSON object string".to_string())?;
    let obj = v
        .as_object()
        .ok_or_else(|| "\"headers\" must be a JSON object string".to_string())?;
    obj.iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k.clone(), s.clone())),
            Value::Number(n) => Ok((k.clone(), n.to_string())),
            Value::Bool(b) => Ok((k.clone(), b.to_string())),
            _ => Err(format!("\"headers.{k}\" must be a string")),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// The world
// ---------------------------------------------------------------------------------------

/// The whole simulated state, shared by the HTTP layers and in-process tests.
pub struct World {
    pub(crate) cfg: SimConfig,
    pub(crate) cur: RwLock<CurrentsState>,
    pub(crate) gh: Mutex<GithubState>,
    pub(crate) faults: Mutex<FaultState>,
    pub(crate) log: Mutex<RequestLog>,
    pub(crate) emitter: Emitter,
    hook_target: Mutex<Option<HookTarget>>,
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World").finish_non_exhaustive()
    }
}

impl World {
    /// A new, empty world. Must be called inside a tokio runtime (it starts the webhook
    /// emitter task).
    pub fn new(cfg: SimConfig) -> Arc<World> {
        let hook_target = cfg.webhook_url.as_ref().map(|u| HookTarget {
            url: u.clone(),
            headers: cfg.webhook_headers.clone(),
            source: "config".into(),
        });
        Arc::new(World {
            cur: RwLock::new(CurrentsState::new(cfg.seed)),
            gh: Mutex::new(GithubState::new(cfg.github_content_limits)),
            faults: Mutex::new(FaultState::default()),
            log: Mutex::new(RequestLog::default()),
            emitter: Emitter::start(cfg.webhook_timeout),
            hook_target: Mutex::new(hook_target),
            cfg,
        })
    }

    pub fn config(&self) -> &SimConfig {
        &self.cfg
    }

    /// Forgets everything: projects, runs, webhooks, GitHub data, faults, logs.
    pub fn reset(&self) {
        *write(&self.cur) = CurrentsState::new(self.cfg.seed);
        *lock(&self.gh) = GithubState::new(self.cfg.github_content_limits);
        *lock(&self.faults) = FaultState::default();
        *lock(&self.log) = RequestLog::default();
        self.emitter.clear_deliveries();
    }

    /// Sets (or clears) the URL every run event is sent to, with its headers.
    pub fn set_webhook_target(&self, url: Option<String>, headers: Vec<(String, String)>) {
        *lock(&self.hook_target) = url.map(|url| HookTarget {
            url,
            headers,
            source: "config".into(),
        });
    }

    fn send(&self, pending: Vec<PendingEvent>) {
        if pending.is_empty() {
            return;
        }
        let global = lock(&self.hook_target).clone();
        for p in pending {
            let mut targets = p.hooks;
            if let Some(g) = &global {
                targets.insert(0, g.clone());
            }
            if targets.is_empty() {
                continue;
            }
            self.emitter.send(Outgoing {
                event: p.event.to_string(),
                run_id: p.run_id,
                payload: p.payload,
                targets,
            });
        }
    }

    // ----- projects -----

    pub fn add_project(&self, np: NewProject) -> Result<Project, SimError> {
        write(&self.cur).add_project(np, Utc::now())
    }

    pub fn project(&self, id: &str) -> Option<Project> {
        read(&self.cur).project_rec(id).map(|p| p.project.clone())
    }

    /// `owner/repo` configured for a project, if any.
    pub fn project_repo(&self, id: &str) -> Option<String> {
        read(&self.cur).project_rec(id).and_then(|p| p.repo.clone())
    }

    /// A page of projects, newest first, with `has_more`.
    pub fn list_projects(
        &self,
        limit: usize,
        starting_after: Option<Key>,
        ending_before: Option<Key>,
    ) -> (Vec<Project>, bool) {
        let st = read(&self.cur);
        let to_item = |(k, p): (&Key, &ProjectRec)| {
            let mut pr = p.project.clone();
            pr.cursor = Some(ids::encode_cursor(*k));
            pr
        };
        let mut items: Vec<Project> = match (starting_after, ending_before) {
            (_, Some(b)) => st
                .projects
                .range((std::ops::Bound::Excluded(b), std::ops::Bound::Unbounded))
                .take(limit + 1)
                .map(to_item)
                .collect(),
            (Some(a), None) => st
                .projects
                .range(..a)
                .rev()
                .take(limit + 1)
                .map(to_item)
                .collect(),
            (None, None) => st
                .projects
                .iter()
                .rev()
                .take(limit + 1)
                .map(to_item)
                .collect(),
        };
        let has_more = items.len() > limit;
        items.truncate(limit);
        if ending_before.is_some() {
            items.reverse();
        }
        (items, has_more)
    }

    // ----- runs -----

    /// Adds a run; emits `RUN_START` for a running run (and `RUN_FINISH`/... when it is
    /// added already finished with `emit: true`).
    pub fn add_run(&self, nr: NewRun) -> Result<Run, SimError> {
        let now = Utc::now();
        let (run, pending) = {
            let mut st = write(&self.cur);
            let sp = st.savepoint();
            // A rejected run leaves nothing behind, not even the project it would make.
            let rec = st
                .build_run(nr, now)
                .inspect_err(|_| st.roll_back(sp, &[]))?;
            // Its history as it happened: started, and ended when it is not running.
            let pending = st.change_events(
                &rec,
                true,
                true,
                &[],
                &self.cfg.dashboard_url,
                self.cfg.webhook_per_group,
            );
            let run = rec.to_model(true, false);
            st.insert_run(rec);
            (run, pending)
        };
        self.send(pending);
        Ok(run)
    }

    /// Adds many runs under one lock (bulk loading); returns their ids. Emits nothing
    /// unless a run asks for it with `emit: true`.
    ///
    /// All or nothing: when a run is rejected, the error says which (`runs[i]: ...`), and
    /// the world is left as it was: no run of the batch is added, no project made for
    /// them, and no webhook is sent.
    pub fn add_runs(&self, runs: Vec<NewRun>) -> Result<Vec<String>, SimError> {
        let now = Utc::now();
        let mut out = Vec::with_capacity(runs.len());
        let mut pending = Vec::new();
        {
            let mut st = write(&self.cur);
            let sp = st.savepoint();
            for (i, mut nr) in runs.into_iter().enumerate() {
                nr.emit = Some(nr.emit.unwrap_or(false));
                let rec = match st.build_run(nr, now) {
                    Ok(rec) => rec,
                    Err(e) => {
                        st.roll_back(sp, &out);
                        return Err(e.in_batch(i));
                    }
                };
                // `RUN_START` only: what the run did before is not replayed.
                pending.extend(st.change_events(
                    &rec,
                    true,
                    false,
                    &rec.groups_done(),
                    &self.cfg.dashboard_url,
                    self.cfg.webhook_per_group,
                ));
                out.push(rec.id.clone());
                st.insert_run(rec);
            }
        }
        self.send(pending);
        Ok(out)
    }

    /// The full run (with specs), as `GET /runs/{id}` returns it.
    pub fn run(&self, id: &str) -> Option<Run> {
        read(&self.cur).get_run(id).map(|r| r.to_model(true, false))
    }

    /// Every run of a project, newest first, as feed items (no specs).
    pub fn runs(&self, project: &str) -> Vec<Run> {
        let st = read(&self.cur);
        st.runs
            .get(project)
            .map(|pr| {
                pr.all
                    .values()
                    .rev()
                    .map(|r| r.to_model(false, true))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether some run was made from commit `r` (a sha, an abbreviation of one of at
    /// least 7 characters, or a branch name): GitHub knows every commit CI ran on.
    pub(crate) fn knows_commit(&self, r: &str) -> bool {
        let st = read(&self.cur);
        st.runs
            .values()
            .flat_map(|pr| pr.all.values())
            .any(|run| sha_matches(&run.sha, r) || run.branch.as_ref() == r)
    }

    /// Number of runs in the world.
    pub fn run_count(&self) -> usize {
        read(&self.cur).run_loc.len()
    }

    /// A page of the run feed of a project (newest first) and `has_more`.
    pub fn list_runs(&self, project: &str, q: &RunQuery) -> Result<(Vec<Run>, bool), SimError> {
        let st = read(&self.cur);
        if st.project_rec(project).is_none() {
            return Err(SimError::NotFound("Project not found".into()));
        }
        let Some(pr) = st.runs.get(project) else {
            return Ok((Vec::new(), false));
        };
        let limit = q.limit.clamp(1, 50);
        // Pick the smallest index that covers the query.
        let only_in_progress =
            q.completion_states.len() == 1 && q.completion_states[0] == CompletionState::InProgress;
        let empty = BTreeSet::new();
        let keys: Option<&BTreeSet<Key>> = if only_in_progress {
            Some(&pr.in_progress)
        } else if q.branches.len() == 1 {
            Some(pr.by_branch.get(q.branches[0].as_str()).unwrap_or(&empty))
        } else {
            None
        };
        use std::ops::Bound::{Excluded, Unbounded};
        let iter: Box<dyn Iterator<Item = &RunRec>> =
            match (keys, q.starting_after, q.ending_before) {
                (Some(ks), _, Some(b)) => Box::new(
                    ks.range((Excluded(b), Unbounded))
                        .filter_map(|k| pr.all.get(k)),
                ),
                (Some(ks), Some(a), None) => {
                    Box::new(ks.range(..a).rev().filter_map(|k| pr.all.get(k)))
                }
                (Some(ks), None, None) => Box::new(ks.iter().rev().filter_map(|k| pr.all.get(k))),
                (None, _, Some(b)) => {
                    Box::new(pr.all.range((Excluded(b), Unbounded)).map(|(_, r)| r))
                }
                (None, Some(a), None) => Box::new(pr.all.range(..a).rev().map(|(_, r)| r)),
                (None, None, None) => Box::new(pr.all.values().rev()),
            };
        let mut hits: Vec<&RunRec> = iter.filter(|r| r.matches(q)).take(limit + 1).collect();
        let has_more = hits.len() > limit;
        hits.truncate(limit);
        if q.ending_before.is_some() {
            hits.reverse();
        }
        Ok((
            hits.into_iter().map(|r| r.to_model(false, true)).collect(),
            has_more,
        ))
    }

    /// `GET /runs/find`: the most recent COMPLETE run of the project matching
    /// `ciBuildId` (exact), or `branch` plus all `tags` (`currents-notes.md` §1.6). One
    /// of the two selectors is required: without either, 400 `FIND_SELECTOR_REQUIRED`.
    pub fn find_run(
        &self,
        project: &str,
        ci_build_id: Option<&str>,
        branch: Option<&str>,
        tags: &[String],
    ) -> Result<Run, SimError> {
        if ci_build_id.is_none() && branch.is_none() {
            return Err(SimError::BadRequest(FIND_SELECTOR_REQUIRED.into()));
        }
        let st = read(&self.cur);
        if st.project_rec(project).is_none() {
            return Err(SimError::NotFound("Project not found".into()));
        }
        let not_found = || SimError::NotFound("Run not found".into());
        let pr = st.runs.get(project).ok_or_else(not_found)?;
        let complete = |r: &&RunRec| r.completion == CompletionState::Complete;
        let found = match (ci_build_id, branch) {
            (Some(id), _) => pr
                .all
                .values()
                .rev()
                .filter(complete)
                .find(|r| r.ci_build_id == id),
            (None, Some(b)) => {
                let tag_ok =
                    |r: &&RunRec| tags.iter().all(|t| r.tags.iter().any(|x| x.as_ref() == t));
                pr.by_branch.get(b).and_then(|ks| {
                    ks.iter()
                        .rev()
                        .filter_map(|k| pr.all.get(k))
                        .filter(complete)
                        .find(tag_ok)
                })
            }
            (None, None) => None,
        };
        found.map(|r| r.to_model(true, false)).ok_or_else(not_found)
    }

    /// `data.pwLastRun` of `GET /runs/find?pwLastRun=true` (`currents-notes.md` §1.6):
    /// Playwright's `.last-run.json` for the run, `{"status": "failed" | "passed",
    /// "failedTests": [test ids]}`: the ids (`{file hash}-{test hash}`, `pw_test_id`)
    /// of the tests that failed, spec file by spec file. `None` for a Cypress run or an
    /// unknown one ("Playwright only").
    pub fn pw_last_run(&self, run_id: &str) -> Option<Value> {
        let st = read(&self.cur);
        let rec = st.get_run(run_id)?;
        if rec.cypress {
            return None;
        }
        let mut failed = Vec::new();
        for s in rec.specs.iter().filter(|s| s.completed_at.is_some()) {
            let group = &rec.groups[s.group as usize].id;
            for i in 0..s.plan.failures {
                failed.push(pw_test_id(&s.path, group, &test_title(&s.path, i)));
            }
        }
        let status = if rec.failures() > 0 || rec.status == RunStatus::Failed {
            "failed"
        } else {
            "passed"
        };
        Some(json!({"status": status, "failedTests": failed}))
    }

    /// `GET /instances/{id}`.
    pub fn instance(&self, id: &str) -> Option<Value> {
        let (seq, idx) = ids::parse_instance_id(id)?;
        let st = read(&self.cur);
        let (p, k) = st.seq_loc.get(&seq)?;
        let rec = st.runs.get(p)?.all.get(k)?;
        (idx < rec.specs.len() && rec.instance_id(idx) == id).then(|| rec.instance_json(idx))
    }

    /// `PUT /runs/{id}/cancel` by the API key labelled `label`.
    pub fn cancel_run(&self, id: &str, label: &str) -> Result<CancelResult, SimError> {
        self.cancel_with(id, &format!("api:{label}"), "apiRequest")
    }

    fn cancel_with(&self, id: &str, actor: &str, reason: &str) -> Result<CancelResult, SimError> {
        let now = Utc::now();
        let (result, pending) = {
            let mut st = write(&self.cur);
            let rec = st.with_run_mut(id, |rec| {
                match rec.completion {
                    CompletionState::InProgress => {}
                    CompletionState::Canceled => {
                        return Err(SimError::Unprocessable("Run already cancelled".into()));
                    }
                    _ => return Err(SimError::Unprocessable("Run already finished".into())),
                }
                rec.completion = CompletionState::Canceled;
                rec.cancellation = Some(Cancellation {
                    actor: Some(actor.to_string()),
                    canceled_at: Some(now),
                    reason: Some(reason.to_string()),
                });
                rec.ended_at = Some(now);
                rec.auto = false;
                rec.recompute();
                Ok(rec.clone())
            })?;
            // A cancel completes no spec file: the groups done now were done before.
            let pending = st.change_events(
                &rec,
                false,
                true,
                &rec.groups_done(),
                &self.cfg.dashboard_url,
                self.cfg.webhook_per_group,
            );
            (
                CancelResult {
                    run_id: Some(rec.id.clone()),
                    actor: Some(actor.to_string()),
                    canceled_at: Some(now),
                    reason: Some(reason.to_string()),
                    cancelled: None,
                },
                pending,
            )
        };
        self.send(pending);
        Ok(result)
    }

    /// `DELETE /runs/{id}`.
    pub fn delete_run(&self, id: &str) -> Result<DeleteResult, SimError> {
        let mut st = write(&self.cur);
        let (p, k) = st
            .run_loc
            .remove(id)
            .ok_or_else(|| SimError::NotFound("Run not found".into()))?;
        if let Some(rec) = st.runs.get_mut(&p).and_then(|pr| pr.remove(&k)) {
            st.seq_loc.remove(&rec.seq);
        }
        Ok(DeleteResult {
            run_id: Some(id.to_string()),
            actor: Some("API Request".into()),
        })
    }

    /// Applies progress to a running run; emits `RUN_FINISH`, `RUN_TIMEOUT` or
    /// `RUN_CANCELED` when it ends.
    pub fn advance(&self, id: &str, adv: Advance) -> Result<Run, SimError> {
        let at = adv.at.unwrap_or_else(Utc::now);
        if adv.cancel {
            let actor = adv.actor.clone().unwrap_or_else(|| "user:Sim User".into());
            self.cancel_with(id, &actor, "userRequest")
                .map_err(|e| match e {
                    SimError::Unprocessable(_) => {
                        SimError::Conflict("run is not in progress".into())
                    }
                    e => e,
                })?;
            return self
                .run(id)
                .ok_or_else(|| SimError::NotFound("Run not found".into()));
        }
        let (run, pending) = {
            let mut st = write(&self.cur);
            let inactivity = {
                let p = st
                    .run_loc
                    .get(id)
                    .map(|(p, _)| p.clone())
                    .ok_or_else(|| SimError::NotFound("Run not found".into()))?;
                st.project_rec(&p)
                    .and_then(|p| p.project.inactivity_timeout_seconds)
                    .unwrap_or(DEFAULT_INACTIVITY_TIMEOUT_SECS)
            };
            let rng_seed: u64 = st.rng.r#gen();
            let (rec, done_before) = st.with_run_mut(id, |rec| {
                if rec.completion != CompletionState::InProgress {
                    return Err(SimError::Conflict("run is not in progress".into()));
                }
                let done_before = rec.groups_done();
                let mut rng = StdRng::seed_from_u64(rng_seed);
                apply_advance(rec, &adv, at, inactivity, &mut rng);
                Ok((rec.clone(), done_before))
            })?;
            let ended = rec.completion != CompletionState::InProgress;
            let pending = st.change_events(
                &rec,
                false,
                ended,
                &done_before,
                &self.cfg.dashboard_url,
                self.cfg.webhook_per_group,
            );
            (rec.to_model(true, false), pending)
        };
        self.send(pending);
        Ok(run)
    }

    /// One tick of the background clock: runs added with `auto` complete one spec, and
    /// (with `enforce_inactivity_timeout`) runs idle longer than their project's
    /// inactivity timeout time out.
    pub fn tick(&self, now: DateTime<Utc>) {
        let mut pending = Vec::new();
        {
            let mut st = write(&self.cur);
            let mut todo: Vec<(String, u64, bool)> = Vec::new();
            for (p, pr) in &st.runs {
                let inactivity = st
                    .project_rec(p)
                    .and_then(|p| p.project.inactivity_timeout_seconds)
                    .unwrap_or(DEFAULT_INACTIVITY_TIMEOUT_SECS);
                for k in &pr.in_progress {
                    if let Some(r) = pr.all.get(k) {
                        let idle = (now - r.last_activity()).num_seconds() >= inactivity as i64;
                        if r.auto || (self.cfg.enforce_inactivity_timeout && idle) {
                            todo.push((
                                r.id.clone(),
                                inactivity,
                                idle && self.cfg.enforce_inactivity_timeout,
                            ));
                        }
                    }
                }
            }
            for (id, inactivity, time_out) in todo {
                let seed: u64 = st.rng.r#gen();
                let res = st.with_run_mut(&id, |rec| {
                    let adv = if time_out {
                        Advance {
                            timeout: true,
                            at: Some(now),
                            ..Default::default()
                        }
                    } else {
                        Advance {
                            complete: 1,
                            at: Some(now),
                            ..Default::default()
                        }
                    };
                    let done_before = rec.groups_done();
                    apply_advance(rec, &adv, now, inactivity, &mut StdRng::seed_from_u64(seed));
                    Ok((rec.clone(), done_before))
                });
                if let Ok((rec, done_before)) = res {
                    let ended = rec.completion != CompletionState::InProgress;
                    pending.extend(st.change_events(
                        &rec,
                        false,
                        ended,
                        &done_before,
                        &self.cfg.dashboard_url,
                        self.cfg.webhook_per_group,
                    ));
                }
            }
        }
        self.send(pending);
    }

    // ----- webhooks API -----

    pub fn list_webhooks(&self, project: &str) -> Result<Vec<Webhook>, SimError> {
        let st = read(&self.cur);
        if st.project_rec(project).is_none() {
            return Err(SimError::NotFound("Project not found".into()));
        }
        Ok(st
            .webhooks
            .iter()
            .filter(|w| w.project_id == project)
            .cloned()
            .collect())
    }

    pub fn create_webhook(&self, project: &str, spec: WebhookSpec) -> Result<Webhook, SimError> {
        validate_webhook(&spec, true)?;
        let mut st = write(&self.cur);
        if st.project_rec(project).is_none() {
            return Err(SimError::NotFound("Project not found".into()));
        }
        let now = Utc::now();
        let hook = Webhook {
            hook_id: uuid::Uuid::new_v4().to_string(),
            project_id: project.to_string(),
            url: spec.url.unwrap_or_default(),
            headers: spec.headers,
            hook_events: spec.hook_events.unwrap_or_else(|| {
                crate::currents::models::RUN_EVENTS
                    .iter()
                    .map(|s| s.to_string())
                    .collect()
            }),
            label: spec.label,
            created_at: Some(now),
            updated_at: Some(now),
        };
        st.webhooks.push(hook.clone());
        Ok(hook)
    }

    pub fn webhook(&self, hook_id: &str) -> Option<Webhook> {
        read(&self.cur)
            .webhooks
            .iter()
            .find(|w| w.hook_id == hook_id)
            .cloned()
    }

    pub fn update_webhook(&self, hook_id: &str, spec: WebhookSpec) -> Result<Webhook, SimError> {
        validate_webhook(&spec, false)?;
        let mut st = write(&self.cur);
        let w = st
            .webhooks
            .iter_mut()
            .find(|w| w.hook_id == hook_id)
            .ok_or_else(|| SimError::NotFound("Webhook not found".into()))?;
        if let Some(u) = spec.url {
            w.url = u;
        }
        if let Some(h) = spec.headers {
            w.headers = Some(h);
        }
        if let Some(e) = spec.hook_events {
            w.hook_events = e;
        }
        if let Some(l) = spec.label {
            w.label = Some(l);
        }
        w.updated_at = Some(Utc::now());
        Ok(w.clone())
    }

    pub fn delete_webhook(&self, hook_id: &str) -> Result<Webhook, SimError> {
        let mut st = write(&self.cur);
        let pos = st
            .webhooks
            .iter()
            .position(|w| w.hook_id == hook_id)
            .ok_or_else(|| SimError::NotFound("Webhook not found".into()))?;
        Ok(st.webhooks.remove(pos))
    }

    // ----- bulk generation -----

    /// Generates history for benchmarks: `runs_per_project` runs per project spread over
    /// `days`, the newest `in_progress` of them still running. Emits nothing.
    pub fn generate(&self, spec: &GenerateSpec) -> Result<usize, SimError> {
        if spec.projects.is_empty() || spec.projects.len() > 100 {
            return Err(SimError::BadRequest("projects: 1-100 ids".into()));
        }
        if spec.runs_per_project > 1_000_000
            || spec.specs == 0
            || spec.specs > 50
            || spec.groups == 0
            || spec.groups > 5
        {
            return Err(SimError::BadRequest(
                "runsPerProject <= 1000000, specs 1-50, groups 1-5".into(),
            ));
        }
        let now = Utc::now();
        let span_ms = i64::from(spec.days.max(1)) * 86_400_000;
        let n = spec.runs_per_project as i64;
        let mut st = write(&self.cur);
        let mut added = 0;
        for (pi, project) in spec.projects.iter().enumerate() {
            if st.project_rec(project).is_none() {
                st.add_project(
                    NewProject {
                        project_id: Some(project.clone()),
                        repo: Some(format!("acme/repo{}", pi + 1)),
                        framework: Some(if pi % 2 == 0 { "pw" } else { "cypress" }.into()),
                        created_at: Some(now - ChronoDuration::milliseconds(span_ms + 86_400_000)),
                        ..Default::default()
                    },
                    now,
                )?;
            }
            let repo = st
                .project_rec(project)
                .and_then(|p| p.repo.clone())
                .unwrap_or_else(|| "acme/web".into());
            for i in 0..n {
                // Oldest first; the newest `in_progress` are running.
                let created = now
                    - ChronoDuration::milliseconds(span_ms - span_ms * i / n.max(1))
                    - ChronoDuration::seconds(60);
                let running = i >= n - i64::from(spec.in_progress);
                let r: f64 = st.rng.r#gen();
                let branch = if spec.branches <= 1 || st.rng.gen_bool(0.4) {
                    "main".to_string()
                } else {
                    let b = st.rng.gen_range(1..spec.branches);
                    match names::FEATURE_BRANCHES.get(b as usize - 1) {
                        Some(f) if b as usize <= names::FEATURE_BRANCHES.len() => f.to_string(),
                        _ => format!("feat/branch-{b}"),
                    }
                };
                let (author, email) = names::AUTHORS[st.rng.gen_range(0..names::AUTHORS.len())];
                let message = names::MESSAGES[st.rng.gen_range(0..names::MESSAGES.len())];
                let state = if running {
                    "running"
                } else if r < 0.75 {
                    "passed"
                } else if r < 0.92 {
                    "failed"
                } else if r < 0.97 {
                    "canceled"
                } else {
                    "timeout"
                };
                let tags = if st.rng.gen_bool(0.3) {
                    vec!["nightly".to_string()]
                } else {
                    vec![]
                };
                let nr = NewRun {
                    project: Some(project.clone()),
                    branch: Some(branch),
                    author: Some(author.into()),
                    author_email: Some(email.into()),
                    message: Some(message.into()),
                    remote_origin: Some(format!("https://github.com/{repo}")),
                    created_at: Some(created),
                    state: Some(state.into()),
                    groups: Some(GroupsSpec::Count(spec.groups)),
                    specs: Some(spec.specs),
                    tests_per_spec: Some(5),
                    completed: running.then_some(spec.specs * spec.groups / 2),
                    last_progress_at: running.then_some(now),
                    tags,
                    emit: Some(false),
                    ..Default::default()
                };
                let rec = st.build_run(nr, now)?;
                st.insert_run(rec);
                added += 1;
            }
        }
        Ok(added)
    }
}

fn final_event(c: &CompletionState) -> Option<&'static str> {
    match c {
        CompletionState::Complete => Some("RUN_FINISH"),
        CompletionState::Timeout => Some("RUN_TIMEOUT"),
        CompletionState::Canceled => Some("RUN_CANCELED"),
        _ => None,
    }
}

fn apply_advance(
    rec: &mut RunRec,
    adv: &Advance,
    at: DateTime<Utc>,
    inactivity_secs: u64,
    rng: &mut StdRng,
) {
    let at = at.max(rec.created_at);
    if adv.timeout {
        rec.completion = CompletionState::Timeout;
        rec.timeout_ms = Some(inactivity_secs * 1000);
        rec.ended_at = Some(at);
        rec.auto = false;
        rec.recompute();
        return;
    }
    // Claim.
    let mut to_claim = adv.claim as usize;
    for s in rec.specs.iter_mut() {
        if to_claim == 0 {
            break;
        }
        if s.claimed_at.is_none() && s.completed_at.is_none() {
            s.claimed_at = Some(at);
            to_claim -= 1;
        }
    }
    // Complete: claimed specs first, then unclaimed ones, in order.
    let mut order: Vec<usize> = (0..rec.specs.len())
        .filter(|&i| rec.specs[i].completed_at.is_none() && rec.specs[i].claimed_at.is_some())
        .collect();
    order.extend(
        (0..rec.specs.len())
            .filter(|&i| rec.specs[i].completed_at.is_none() && rec.specs[i].claimed_at.is_none()),
    );
    let n = if adv.finish.is_some() {
        order.len()
    } else {
        (adv.complete as usize).min(order.len())
    };
    let chosen = &order[..n];
    if let Some(fail) = adv.fail.filter(|_| adv.finish.is_none()) {
        for (j, &i) in chosen.iter().enumerate() {
            let p = &mut rec.specs[i].plan;
            if (j as u32) < fail {
                if p.failures == 0 {
                    p.failures = rng.gen_range(1..=p.tests.clamp(1, 3));
                    p.tests = p.tests.max(p.failures);
                    p.pending = p.pending.min(p.tests - p.failures);
                    p.flaky = p.flaky.min(p.tests - p.failures - p.pending);
                }
            } else {
                p.failures = 0;
            }
        }
    }
    match adv.finish {
        Some(Outcome::Passed) => {
            for &i in chosen {
                rec.specs[i].plan.failures = 0;
            }
        }
        Some(Outcome::Failed) => {
            let any = rec.specs.iter().any(|s| s.plan.failures > 0);
            if !any {
                let target = chosen.last().copied().or(rec.specs.len().checked_sub(1));
                if let Some(i) = target {
                    let p = &mut rec.specs[i].plan;
                    p.failures = 1;
                    p.tests = p.tests.max(1);
                    p.pending = p.pending.min(p.tests - 1);
                    p.flaky = p.flaky.min(p.tests - 1 - p.pending);
                }
            }
        }
        None => {}
    }
    for &i in chosen {
        let s = &mut rec.specs[i];
        if s.claimed_at.is_none() {
            let began = at - ChronoDuration::milliseconds(s.plan.duration_ms as i64);
            s.claimed_at = Some(began.max(rec.created_at));
        }
        s.completed_at = Some(at);
    }
    if rec.specs.iter().all(|s| s.completed_at.is_some()) {
        rec.completion = CompletionState::Complete;
        rec.ended_at = Some(at);
        rec.auto = false;
    }
    rec.recompute();
}

fn validate_webhook(spec: &WebhookSpec, create: bool) -> Result<(), SimError> {
    let bad = |m: &str| Err(SimError::BadRequest(m.to_string()));
    match &spec.url {
        None if create => return bad("\"url\" is required"),
        Some(u) if u.len() > 2048 => {
            return bad("\"url\" length must be less than or equal to 2048 characters long");
        }
        Some(u) => {
            let ok = url::Url::parse(u)
                .map(|p| p.scheme() == "http" || p.scheme() == "https")
                .unwrap_or(false);
            if !ok {
                return bad("\"url\" must be a valid uri");
            }
        }
        None => {}
    }
    if let Some(h) = &spec.headers {
        if h.len() > 4096 {
            return bad("\"headers\" length must be less than or equal to 4096 characters long");
        }
        if let Err(e) = parse_headers(Some(h)) {
            return Err(SimError::BadRequest(e));
        }
    }
    if let Some(events) = &spec.hook_events
        && let Some(e) = events
            .iter()
            .find(|e| !crate::currents::models::RUN_EVENTS.contains(&e.as_str()))
    {
        return Err(SimError::BadRequest(format!(
            "\"hookEvents\" must be one of [RUN_START, RUN_FINISH, RUN_TIMEOUT, RUN_CANCELED], got {e:?}"
        )));
    }
    if let Some(l) = &spec.label
        && (l.is_empty() || l.chars().count() > 255)
    {
        return bad("\"label\" length must be between 1 and 255 characters long");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_to_repo() {
        assert_eq!(
            repo_from_origin("https://github.com/acme/web.git").as_deref(),
            Some("acme/web")
        );
        assert_eq!(
            repo_from_origin("git@github.com:acme/web.git").as_deref(),
            Some("acme/web")
        );
        assert_eq!(repo_from_origin("nonsense"), None);
    }

    #[test]
    fn search_is_case_insensitive() {
        assert!(contains_ci("Fix Login bug", "login"));
        assert!(!contains_ci("Fix Login bug", "logout"));
        assert!(contains_ci("ÄBC", "äb"));
    }

    fn new_run(project: &str) -> NewRun {
        NewRun {
            project: Some(project.into()),
            ..NewRun::default()
        }
    }

    /// A batch with a bad run adds nothing: not the runs before it, not the project they
    /// made, and the ids and plans of later runs are as if it never came.
    #[tokio::test]
    async fn a_rejected_batch_leaves_the_world_as_it_was() {
        let w = World::new(SimConfig::default());
        w.add_run(new_run("kept")).unwrap();
        let before = (w.run_count(), read(&w.cur).seq);
        let bad = NewRun {
            state: Some("exploded".into()),
            ..new_run("kept")
        };
        let e = w
            .add_runs(vec![new_run("fresh"), new_run("kept"), bad])
            .unwrap_err();
        assert_eq!(e.status(), 400);
        assert!(e.to_string().starts_with("runs[2]: unknown state"), "{e}");
        assert_eq!((w.run_count(), read(&w.cur).seq), before);
        assert!(w.project("fresh").is_none(), "the project it made is gone");
        assert_eq!(w.runs("kept").len(), 1);
        // Two runs of one id in a batch: a conflict, and nothing added.
        let twice = || NewRun {
            run_id: Some("abc123".into()),
            ..new_run("kept")
        };
        let e = w.add_runs(vec![twice(), twice()]).unwrap_err();
        assert_eq!((e.status(), w.run_count()), (409, 1), "{e}");
        assert!(w.run("abc123").is_none());
        // A single run refused after its project was made leaves no project either.
        let e = w
            .add_run(NewRun {
                specs: Some(0),
                ..new_run("other")
            })
            .unwrap_err();
        assert_eq!(e.status(), 400);
        assert!(w.project("other").is_none());

        // The random generator was restored: the next run is the one a world that never
        // saw the bad batches makes.
        let fresh = World::new(SimConfig::default());
        fresh.add_run(new_run("kept")).unwrap();
        let a = w.add_run(new_run("kept")).unwrap();
        let b = fresh.add_run(new_run("kept")).unwrap();
        assert_eq!(a.run_id, b.run_id);
        assert_eq!(a.meta.commit.sha, b.meta.commit.sha);
    }

    /// `pwLastRun`: Playwright's `.last-run.json`, the failed tests by their Playwright
    /// ids, stable across runs; none for a Cypress run.
    #[tokio::test]
    async fn pw_last_run_lists_the_failed_tests() {
        let w = World::new(SimConfig::default());
        let failed = w
            .add_run(NewRun {
                state: Some("failed".into()),
                failed: Some(2),
                specs: Some(3),
                tests_per_spec: Some(5),
                ..new_run("p")
            })
            .unwrap();
        let last = w.pw_last_run(&failed.run_id).unwrap();
        assert_eq!(last["status"], "failed");
        let ids: Vec<&str> = last["failedTests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let failures: u64 = failed.groups.iter().map(|g| g.tests.failures).sum();
        assert_eq!(ids.len() as u64, failures);
        for id in &ids {
            let (file, test) = id.split_once('-').unwrap();
            assert_eq!((file.len(), test.len()), (20, 20), "{id}");
            assert!(id.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
        }
        assert_eq!(
            ids.iter().collect::<HashSet<_>>().len(),
            ids.len(),
            "distinct"
        );
        let title = vec!["a.spec.ts suite".to_string(), "case 1".to_string()];
        assert_eq!(
            pw_test_id("tests/a.spec.ts", "chromium", &title),
            pw_test_id("tests/a.spec.ts", "chromium", &title)
        );
        assert_ne!(
            pw_test_id("tests/a.spec.ts", "chromium", &title),
            pw_test_id("tests/a.spec.ts", "firefox", &title)
        );
        let passed = w
            .add_run(NewRun {
                state: Some("passed".into()),
                ..new_run("p")
            })
            .unwrap();
        assert_eq!(
            w.pw_last_run(&passed.run_id).unwrap(),
            json!({"status": "passed", "failedTests": []})
        );
        let cypress = w
            .add_run(NewRun {
                state: Some("failed".into()),
                framework: Some("cypress".into()),
                ..new_run("cy")
            })
            .unwrap();
        assert_eq!(w.pw_last_run(&cypress.run_id), None);
        assert_eq!(w.pw_last_run("nope"), None);
    }

    #[tokio::test]
    async fn find_run_needs_a_selector() {
        let w = World::new(SimConfig::default());
        w.add_run(NewRun {
            state: Some("passed".into()),
            ..new_run("p")
        })
        .unwrap();
        let e = w.find_run("p", None, None, &["x".into()]).unwrap_err();
        assert_eq!(e, SimError::BadRequest(FIND_SELECTOR_REQUIRED.into()));
        assert!(w.find_run("p", None, Some("main"), &[]).is_ok());
    }

    #[test]
    fn headers_must_be_an_object() {
        assert_eq!(
            parse_headers(Some("{\"a\":\"b\"}")).unwrap(),
            vec![("a".into(), "b".into())]
        );
        assert!(parse_headers(Some("[1]")).is_err());
        assert!(parse_headers(Some("nope")).is_err());
    }
}
