//! The rules engine: pure decisions, no I/O, time passed in (SPEC §4).
//!
//! The server, `plan`, `sweep` and `explain` feed this module what they know — a
//! [`Trigger`] (a webhook or poll turned into runwarden's own event type), the runs it
//! concerns ([`RunsView`]) and the current time — and get back [`Decision`]s, each naming
//! its rule and a reason a person can read. Nothing here reads a clock, the network or the
//! store, so every outcome is reproducible from its inputs: the same inputs, in any order,
//! give the same output, sorted by rule order, then by run `created_at` and `run_id`.
//!
//! One file per rule kind: [`supersede`], [`timeout`], [`orphan`], [`retention`],
//! [`summary`]; [`history`] holds the `max_duration = "auto"` statistics and [`mod@explain`]
//! answers "does this rule apply to this run now, and if not, why".
//!
//! When several rules decide the same action on the same run, each decision is returned:
//! the executor carries the side effect out once and records every rule (SPEC §6).

pub mod explain;
pub mod history;
pub mod orphan;
pub mod retention;
pub mod summary;
pub mod supersede;
pub mod timeout;

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::{Config, Rule, RuleKind};
use crate::currents::Run;

pub use explain::{Explanation, explain};
pub use history::{HISTORY_MIN_SAMPLES, HISTORY_WINDOW, auto_limit, build_history, history_key};
pub use retention::Breach;
pub use timeout::update_progress;

/// What a decision asks the executor to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Cancel the run (`PUT /runs/{id}/cancel`).
    Cancel,
    /// Delete the run (`DELETE /runs/{id}`).
    Delete,
    /// Post or update the PR summary and/or commit status for the run.
    Summarize,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Cancel => "cancel",
            Action::Delete => "delete",
            Action::Summarize => "summarize",
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One rule's decision about one run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    /// The rule's `name`.
    pub rule: String,
    /// The rule's kind: `supersede`, `timeout`, `orphan`, `retention`, `summary`.
    pub kind: &'static str,
    pub action: Action,
    pub run_id: String,
    pub project_id: String,
    pub branch: Option<String>,
    pub sha: Option<String>,
    /// Why, in words: "superseded by run 4f2a91c0 (sha 9c1e2ab, created 12:03:11)".
    pub reason: String,
    /// The rule's own `dry_run`, else the global one: record, mutate nothing.
    pub dry_run: bool,
    /// Act no earlier than this (an orphan rule's `grace`); `None`: act now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_before: Option<DateTime<Utc>>,
}

impl Decision {
    /// A decision of `rule` about `run`, with `dry_run` resolved against the global flag.
    pub fn new(config: &Config, rule: &Rule, action: Action, run: &Run, reason: String) -> Self {
        Self {
            rule: rule.name.clone(),
            kind: rule.kind_name(),
            action,
            run_id: run.run_id.clone(),
            project_id: run.project_id.clone(),
            branch: run.branch().map(str::to_string),
            sha: run.sha().map(str::to_string),
            reason,
            dry_run: rule.is_dry_run(config.dry_run),
            not_before: None,
        }
    }
}

/// runwarden's own event types, filled by the server from webhooks and polls.
// One trigger exists per event being processed; boxing the run would only make the
// server's code noisier.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Trigger {
    /// A new or changed run (Currents webhook or poll). Supersede takes it as the newer
    /// run of its group; timeout checks it; summary acts on `event`.
    RunSeen {
        run: Run,
        /// `RUN_START`, `RUN_FINISH`, `RUN_TIMEOUT`, `RUN_CANCELED`; `None` for a poll.
        event: Option<String>,
    },
    /// A GitHub `push`.
    Push {
        /// `owner/name`.
        repo: String,
        /// Branch name (a `refs/heads/` prefix is tolerated).
        branch: String,
        head_sha: String,
        /// The push deleted the branch.
        deleted: bool,
        pushed_at: DateTime<Utc>,
    },
    /// A GitHub `pull_request` with action `closed` (merged or not), whose head branch is
    /// a branch of `repo` itself. A pull request from a fork makes no such trigger (see
    /// [`crate::github::events`]): a fork's `main` or `patch-1` is not the base's.
    PullRequestClosed {
        repo: String,
        branch: String,
        number: u64,
        closed_at: DateTime<Utc>,
    },
    /// A GitHub `workflow_run` with action `completed`.
    WorkflowRunCompleted {
        repo: String,
        run_id: u64,
        run_attempt: u64,
        head_branch: Option<String>,
        head_sha: String,
        completed_at: DateTime<Utc>,
        /// The workflow's `name` (`None` when the payload had none, or for an event
        /// stored by a version of runwarden that did not keep it).
        workflow_name: Option<String>,
        /// The workflow file's path in the repository (`.github/workflows/e2e.yml`).
        workflow_path: Option<String>,
    },
    /// A poll: check the timeouts of every in-progress run (and reconcile supersession
    /// among them).
    Tick,
    /// A retention rule's schedule fired.
    RetentionSweep { rule: String },
}

/// The last seen spec-completion progress of a run, kept by the server for `idle_for`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressSnapshot {
    /// Completed spec files (instances) across all groups.
    pub completed_specs: u64,
    /// When the count last changed (for the first snapshot: the run's last progress as
    /// it shows it, see [`timeout::update_progress`]).
    pub changed_at: DateTime<Utc>,
}

/// The runs a trigger concerns, with what the server remembers about them.
///
/// - `RunSeen`, `Push`, `PullRequestClosed`, `WorkflowRunCompleted`: the in-progress runs
///   of the relevant projects (and branch); more runs do no harm.
/// - `Tick`: every in-progress run.
/// - `RetentionSweep` and [`plan`]: every run of the projects.
///
/// Each run should appear once.
#[derive(Debug, Clone, Copy)]
pub struct RunsView<'a> {
    pub runs: &'a [Run],
    /// run id -> last seen progress. Only timeout rules read it, for the run of a
    /// `RunSeen` and the runs of a `Tick`; the server gives it for those runs only.
    pub progress: &'a HashMap<String, ProgressSnapshot>,
    /// [`history_key`] -> durations of recent completed passed runs, newest first.
    pub history: &'a HashMap<String, Vec<Duration>>,
}

static NO_PROGRESS: LazyLock<HashMap<String, ProgressSnapshot>> = LazyLock::new(HashMap::new);
static NO_HISTORY: LazyLock<HashMap<String, Vec<Duration>>> = LazyLock::new(HashMap::new);

impl<'a> RunsView<'a> {
    pub fn new(
        runs: &'a [Run],
        progress: &'a HashMap<String, ProgressSnapshot>,
        history: &'a HashMap<String, Vec<Duration>>,
    ) -> Self {
        Self {
            runs,
            progress,
            history,
        }
    }

    /// Runs without progress snapshots or history.
    pub fn runs_only(runs: &'a [Run]) -> Self {
        Self {
            runs,
            progress: &NO_PROGRESS,
            history: &NO_HISTORY,
        }
    }
}

/// What an evaluation decided.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Evaluation {
    pub decisions: Vec<Decision>,
    /// Retention sweeps held back by their `max_deletions` circuit breaker.
    pub breaches: Vec<Breach>,
}

impl Evaluation {
    fn extend(&mut self, other: Evaluation) {
        self.decisions.extend(other.decisions);
        self.breaches.extend(other.breaches);
    }
}

/// Evaluates every rule of `config` against one trigger.
///
/// Rules are taken in config order; each rule's decisions are sorted by run
/// `created_at`, then `run_id`, and hold at most one decision per run. Retention rules
/// only act on a [`Trigger::RetentionSweep`] naming them.
pub fn evaluate(
    config: &Config,
    trigger: &Trigger,
    view: &RunsView,
    now: DateTime<Utc>,
) -> Evaluation {
    let mut out = Evaluation::default();
    for rule in &config.rules {
        out.extend(evaluate_rule(config, rule, trigger, view, now));
    }
    out
}

/// Evaluates one rule against one trigger (see [`evaluate`]).
pub fn evaluate_rule(
    config: &Config,
    rule: &Rule,
    trigger: &Trigger,
    view: &RunsView,
    now: DateTime<Utc>,
) -> Evaluation {
    let mut out = Evaluation::default();
    match &rule.kind {
        RuleKind::Supersede(o) => {
            out.decisions = supersede::decide(config, rule, o, trigger, view, now);
        }
        RuleKind::Timeout(o) => {
            out.decisions = timeout::decide(config, rule, o, trigger, view, now)
        }
        RuleKind::Orphan(o) => out.decisions = orphan::decide(config, rule, o, trigger, view, now),
        RuleKind::Summary(o) => {
            out.decisions = summary::decide(config, rule, o, trigger, view, now)
        }
        RuleKind::Retention(o) => match trigger {
            Trigger::RetentionSweep { rule: name } if *name == rule.name => {
                match retention::decide(config, rule, o, view, now) {
                    Ok(d) => out.decisions = d,
                    Err(b) => out.breaches.push(b),
                }
            }
            _ => {}
        },
    }
    out
}

/// Evaluates every rule "now", for `runwarden plan` and `sweep`: supersession across all
/// runs of `view` (in each group, every in-progress run with a newer run of another
/// commit), timeouts of every in-progress run, and every retention rule as if its
/// schedule fired now. Orphan and summary rules need GitHub or Currents events, so `plan`
/// decides nothing for them.
pub fn plan(config: &Config, view: &RunsView, now: DateTime<Utc>) -> Evaluation {
    plan_with(config, view, Vec::new(), now)
}

/// [`plan`], with retention rules decided by `sweeps`: a [`retention::Sweep`] per
/// retention rule, already fed every run (e.g. page by page while listing, so that
/// `view` need not hold them all). A retention rule without a sweep is decided over
/// `view`.
pub fn plan_with(
    config: &Config,
    view: &RunsView,
    mut sweeps: Vec<retention::Sweep<'_>>,
    now: DateTime<Utc>,
) -> Evaluation {
    let mut out = Evaluation::default();
    for rule in &config.rules {
        let trigger = match &rule.kind {
            RuleKind::Supersede(_) | RuleKind::Timeout(_) => Trigger::Tick,
            RuleKind::Retention(_) => {
                if let Some(i) = sweeps.iter().position(|s| s.rule().name == rule.name) {
                    match sweeps.swap_remove(i).finish(config) {
                        Ok(d) => out.decisions.extend(d),
                        Err(b) => out.breaches.push(b),
                    }
                    continue;
                }
                Trigger::RetentionSweep {
                    rule: rule.name.clone(),
                }
            }
            RuleKind::Orphan(_) | RuleKind::Summary(_) => continue,
        };
        out.extend(evaluate_rule(config, rule, &trigger, view, now));
    }
    out
}

/// Sorts a rule's `(run, decision)` pairs by run `created_at`, then `run_id` (then
/// reason), and keeps one decision per run. Sorts small keys, not the decisions.
pub(crate) fn finish(found: Vec<(&Run, Decision)>) -> Vec<Decision> {
    let (runs, decisions): (Vec<&Run>, Vec<Decision>) = found.into_iter().unzip();
    let mut order: Vec<(DateTime<Utc>, usize)> = runs
        .iter()
        .enumerate()
        .map(|(i, r)| (r.created_at, i))
        .collect();
    order.sort_unstable_by(|(ta, a), (tb, b)| {
        ta.cmp(tb)
            .then_with(|| runs[*a].run_id.cmp(&runs[*b].run_id))
            .then_with(|| decisions[*a].reason.cmp(&decisions[*b].reason))
            .then_with(|| a.cmp(b))
    });
    let mut slots: Vec<Option<Decision>> = decisions.into_iter().map(Some).collect();
    let mut seen: HashSet<&str> = HashSet::with_capacity(order.len());
    order
        .into_iter()
        .filter(|(_, i)| seen.insert(runs[*i].run_id.as_str()))
        .filter_map(|(_, i)| slots[i].take())
        .collect()
}

/// `owner/name`, lowercased, from a git remote: `https://github.com/o/n(.git)`,
/// `git@github.com:o/n.git`, `ssh://git@host/o/n`, `https://user:tok@host/o/n/`,
/// `github.com/o/n` or `o/n`. `None` when fewer than two path segments remain.
pub fn repo_from_remote(origin: &str) -> Option<String> {
    let s = origin.trim();
    let s = s.split(['?', '#']).next().unwrap_or("");
    let path = if let Some(i) = s.find("://") {
        let rest = &s[i + 3..];
        // Host (with any user:password@) ends at the first '/'.
        let slash = rest.find('/')?;
        &rest[slash + 1..]
    } else if let Some(colon) = s.find(':')
        && !s[..colon].contains('/')
    {
        // scp-like: [user@]host:owner/name
        &s[colon + 1..]
    } else {
        s
    };
    let segs: Vec<&str> = path.split('/').filter(|x| !x.is_empty()).collect();
    if segs.len() < 2 {
        return None;
    }
    let owner = segs[segs.len() - 2];
    let name = segs[segs.len() - 1];
    let name = name.strip_suffix(".git").unwrap_or(name);
    if owner.is_empty() || name.is_empty() {
        return None;
    }
    Some(format!("{owner}/{name}").to_ascii_lowercase())
}

/// The GitHub repository (`owner/name`, lowercased) a run belongs to: the project's
/// `github.repos` mapping, else the run's `meta.commit.remoteOrigin` when that remote is
/// on the GitHub of `github.api_url` (or names no host), as for its summaries: a GitLab
/// repository of the same name is not the GitHub repository a push came from.
pub fn run_repo(config: &Config, run: &Run) -> Option<String> {
    match config.github.repos.get(&run.project_id) {
        Some(r) => Some(r.trim().to_ascii_lowercase()),
        None => {
            let origin = run.meta.commit.remote_origin.as_deref()?;
            if let Some(host) = crate::github::summary::remote_host(origin)
                && !crate::github::summary::remote_on_api_host(&host, &config.github.api_url)
            {
                return None;
            }
            repo_from_remote(origin)
        }
    }
}

/// Whether an event of repository `repo` concerns `run` (SPEC §4 supersede): a mapped
/// project must map to `repo`; an unmapped project's run must name `repo` in its
/// `remoteOrigin`.
pub fn run_in_repo(config: &Config, run: &Run, repo: &str) -> bool {
    let want = repo.trim().trim_end_matches(".git").to_ascii_lowercase();
    run_repo(config, run).is_some_and(|r| r == want)
}

/// The configured projects whose runs an event of `repo` may concern, sorted: those
/// `github.repos` maps to `repo`, plus every unmapped configured project (whose runs are
/// then checked by `remoteOrigin`, see [`run_in_repo`]). The server lists these.
pub fn projects_for_repo(config: &Config, repo: &str) -> Vec<String> {
    let want = repo.trim().to_ascii_lowercase();
    let mut out: Vec<String> = config
        .currents
        .projects
        .iter()
        .filter(|p| match config.github.repos.get(*p) {
            Some(r) => r.trim().eq_ignore_ascii_case(&want),
            None => true,
        })
        .cloned()
        .collect();
    // A `github.repos` key that is not a configured project is never one of them: no
    // rule acts on the runs of a project runwarden does not watch (`check` warns).
    out.sort();
    out
}

/// A compact duration: the largest unit and the next one when not zero, truncated to
/// whole seconds: `52m`, `13m40s`, `41d3h`, `2h`, `0s`.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    let units = [(86_400, "d"), (3_600, "h"), (60, "m"), (1, "s")];
    for (i, (size, name)) in units.iter().enumerate() {
        if s >= *size {
            let major = s / size;
            let mut out = format!("{major}{name}");
            if let Some((next, next_name)) = units.get(i + 1) {
                let minor = (s % size) / next;
                if minor > 0 {
                    out.push_str(&format!("{minor}{next_name}"));
                }
            }
            return out;
        }
    }
    "0s".to_string()
}

/// `now - t`, zero when `t` is in the future.
pub(crate) fn since(t: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    (now - t).to_std().unwrap_or(Duration::ZERO)
}

/// A time in a reason: `12:03:11` on the same UTC day as `now`, else
/// `2026-01-02 12:03:11`.
pub(crate) fn clock(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    use chrono::{Datelike, Timelike};
    let hms = format!("{:02}:{:02}:{:02}", t.hour(), t.minute(), t.second());
    if t.date_naive() == now.date_naive() {
        hms
    } else {
        format!("{:04}-{:02}-{:02} {hms}", t.year(), t.month(), t.day())
    }
}

/// The first 7 characters of a sha.
pub(crate) fn short_sha(sha: &str) -> &str {
    match sha.char_indices().nth(7) {
        Some((i, _)) => &sha[..i],
        None => sha,
    }
}

/// "run is COMPLETE, not IN_PROGRESS".
pub(crate) fn not_in_progress(run: &Run) -> String {
    let state = run.completion_state.as_str();
    let state = if state.is_empty() { "(unknown)" } else { state };
    format!("run is {state}, not IN_PROGRESS")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remotes_in_every_form_name_the_same_repo() {
        for o in [
            "https://github.com/Acme/Web",
            "https://github.com/acme/web.git",
            "https://github.com/acme/web/",
            "http://x-access-token:abc@github.com/acme/web.git",
            "git@github.com:acme/web.git",
            "ssh://git@github.com/acme/web.git",
            "ssh://git@github.com:22/acme/web",
            "git://github.com/acme/web",
            "github.com/acme/web",
            "acme/web",
            "  https://github.com/acme/web.git?x=1  ",
        ] {
            assert_eq!(repo_from_remote(o).as_deref(), Some("acme/web"), "{o}");
        }
        assert_eq!(repo_from_remote("web"), None);
        assert_eq!(repo_from_remote(""), None);
        assert_eq!(repo_from_remote("https://github.com/"), None);
    }

    #[test]
    fn durations_read_compactly() {
        assert_eq!(human_duration(Duration::from_secs(52 * 60)), "52m");
        assert_eq!(human_duration(Duration::from_secs(13 * 60 + 40)), "13m40s");
        assert_eq!(
            human_duration(Duration::from_secs(41 * 86_400 + 3 * 3600 + 5)),
            "41d3h"
        );
        assert_eq!(human_duration(Duration::from_secs(3600 + 5)), "1h");
        assert_eq!(human_duration(Duration::from_millis(900)), "0s");
        assert_eq!(human_duration(Duration::from_secs(45)), "45s");
    }

    #[test]
    fn short_sha_keeps_seven_characters() {
        assert_eq!(short_sha("9c1e2ab44f"), "9c1e2ab");
        assert_eq!(short_sha("9c1"), "9c1");
    }

    #[test]
    fn action_displays_and_serializes_lowercase() {
        assert_eq!(Action::Cancel.to_string(), "cancel");
        assert_eq!(
            serde_json::to_string(&Action::Summarize).unwrap(),
            "\"summarize\""
        );
        assert_eq!(
            serde_json::from_str::<Action>("\"delete\"").unwrap(),
            Action::Delete
        );
    }
}

#[cfg(test)]
mod engine_tests {
    use super::*;
    use crate::config::load_str;
    use chrono::TimeZone;

    fn config(extra: &str) -> Config {
        let text = format!(
            "[currents]\nprojects = [\"p1\", \"p2\", \"p3\"]\n{extra}\n[[rules]]\nname = \"sup\"\nkind = \"supersede\"\n"
        );
        load_str(&text, "rules.toml", &[]).unwrap().config
    }

    fn run(id: &str, min: u32) -> Run {
        serde_json::from_value(serde_json::json!({
            "runId": id, "projectId": "p1",
            "createdAt": Utc.with_ymd_and_hms(2026, 1, 1, 12, min, 0).unwrap(),
            "meta": {"commit": {"branch": "b", "remoteOrigin": "git@github.com:acme/web.git"}}
        }))
        .unwrap()
    }

    #[test]
    fn clock_shows_the_date_only_for_another_day() {
        let now = Utc.with_ymd_and_hms(2026, 1, 2, 8, 0, 0).unwrap();
        let t = Utc.with_ymd_and_hms(2026, 1, 2, 7, 5, 9).unwrap();
        assert_eq!(clock(t, now), "07:05:09");
        let y = Utc.with_ymd_and_hms(2026, 1, 1, 23, 0, 0).unwrap();
        assert_eq!(clock(y, now), "2026-01-01 23:00:00");
    }

    #[test]
    fn finish_sorts_by_creation_then_id_and_keeps_one_decision_per_run() {
        let c = config("");
        let rule = &c.rules[0];
        let (a, b, b2) = (run("a", 5), run("b", 1), run("b", 1));
        let d = |r: &Run, why: &str| Decision::new(&c, rule, Action::Cancel, r, why.into());
        let out = finish(vec![(&a, d(&a, "x")), (&b, d(&b, "z")), (&b2, d(&b2, "y"))]);
        let got: Vec<(&str, &str)> = out
            .iter()
            .map(|d| (d.run_id.as_str(), d.reason.as_str()))
            .collect();
        assert_eq!(got, vec![("b", "y"), ("a", "x")]);
    }

    #[test]
    fn repositories_come_from_the_mapping_else_the_remote() {
        let c = config("[github]\nrepos = { p1 = \"Acme/API\" }\n");
        let mut r = run("a", 0);
        assert_eq!(run_repo(&c, &r).as_deref(), Some("acme/api"));
        assert!(run_in_repo(&c, &r, "acme/api"));
        assert!(!run_in_repo(&c, &r, "acme/web"));
        r.project_id = "p2".into();
        assert_eq!(run_repo(&c, &r).as_deref(), Some("acme/web"));
        assert!(run_in_repo(&c, &r, "ACME/web.git"));
        // A remote on another host than the GitHub of `api_url` is not that repository.
        r.meta.commit.remote_origin = Some("https://gitlab.com/acme/web.git".into());
        assert_eq!(run_repo(&c, &r), None);
        assert!(!run_in_repo(&c, &r, "acme/web"));
        r.meta.commit.remote_origin = Some("git@github.com:acme/web.git".into());
        assert!(run_in_repo(&c, &r, "acme/web"));
        r.meta.commit.remote_origin = None;
        assert_eq!(run_repo(&c, &r), None);
        assert_eq!(projects_for_repo(&c, "acme/api"), vec!["p1", "p2", "p3"]);
        assert_eq!(projects_for_repo(&c, "acme/web"), vec!["p2", "p3"]);
        // A mapped project that is not configured is never listed.
        let c = config("[github]\nrepos = { p1 = \"acme/api\", px = \"acme/api\" }\n");
        assert_eq!(projects_for_repo(&c, "acme/api"), vec!["p1", "p2", "p3"]);
    }

    #[test]
    fn triggers_round_trip_through_json() {
        let t = Trigger::Push {
            repo: "acme/web".into(),
            branch: "b".into(),
            head_sha: "abc".into(),
            deleted: false,
            pushed_at: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
        };
        let v = serde_json::to_value(&t).unwrap();
        assert_eq!(v["type"], "push");
        assert_eq!(serde_json::from_value::<Trigger>(v).unwrap(), t);
        let v = serde_json::to_value(Trigger::Tick).unwrap();
        assert_eq!(v, serde_json::json!({"type": "tick"}));
    }
}
