//! `kind = "retention"` (SPEC §4): when the schedule fires, delete the runs created more
//! than `older_than` ago, except:
//!
//! - the newest `keep_latest` finished runs of each project and branch, whatever their
//!   age (in-progress runs never take a slot: they are never deleted anyway);
//! - with `keep_last_passed`, the newest `PASSED` and `COMPLETE` run of each project and
//!   branch;
//! - runs carrying a tag that `pin_tags` lists, or that matches one of its globs;
//! - `IN_PROGRESS` runs, and runs whose completion state is unknown.
//!
//! The rule's filter selects the runs it considers, also for the keep counts. If a sweep
//! would delete more than `max_deletions` runs it deletes none: the all-or-nothing
//! circuit breaker returns a [`Breach`] instead.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Action, Decision, RunsView, human_duration, since};
use crate::config::{Config, RetentionOptions, Rule};
use crate::currents::{CompletionState, Run, RunStatus};

/// A retention sweep held back by its circuit breaker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Breach {
    pub rule: String,
    /// How many runs the sweep would have deleted.
    pub would_delete: usize,
    /// The rule's `max_deletions`.
    pub max: u32,
}

impl std::fmt::Display for Breach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "rule {:?} would delete {} runs > max_deletions {}; deleted none",
            self.rule, self.would_delete, self.max
        )
    }
}

/// What a retention rule makes of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict<'r> {
    Delete,
    InProgress,
    /// Completion state unknown: not known to be finished.
    NotFinished,
    /// Carries this pinned tag.
    Pinned(&'r str),
    TooYoung,
    /// Among the newest `keep_latest` of its branch.
    AmongLatest,
    /// The newest passed run of its branch (`keep_last_passed`).
    NewestPassed,
}

fn finished(r: &Run) -> bool {
    matches!(
        r.completion_state,
        CompletionState::Complete | CompletionState::Canceled | CompletionState::Timeout
    )
}

fn passed(r: &Run) -> bool {
    r.completion_state == CompletionState::Complete && r.status == RunStatus::Passed
}

fn branch_name(r: &Run) -> &str {
    r.branch().unwrap_or("(no branch)")
}

/// Where a run stands among the runs of its branch: `created_at`, then `run_id`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    at: DateTime<Utc>,
    id: Box<str>,
}

impl Key {
    fn of(r: &Run) -> Self {
        Self {
            at: r.created_at,
            id: r.run_id.as_str().into(),
        }
    }

    /// `self` is newer than `r`.
    fn newer_than(&self, r: (DateTime<Utc>, &str)) -> bool {
        (self.at, &*self.id) > r
    }
}

/// What is left of a run that may be deleted: enough to decide and to build its
/// [`Decision`].
#[derive(Debug)]
struct Candidate {
    key: Key,
    sha: Option<Box<str>>,
    passed: bool,
    /// Index of its group in [`Sweep::groups`].
    group: u32,
}

/// The keep slots of one project and branch.
#[derive(Debug)]
struct Group {
    project: Box<str>,
    branch: Option<Box<str>>,
    /// Finished runs younger than `older_than` (all newer than every older run).
    young_finished: u64,
    /// One of them is a passed run.
    young_passed: bool,
    /// The newest `keep_latest` finished runs older than `older_than`, newest first.
    latest: Vec<Key>,
    /// The newest passed run older than `older_than` (with `keep_last_passed`).
    newest_passed: Option<Key>,
    /// Deletable runs a keep slot still protects: at most `keep_latest + 1`, since each
    /// is in `latest` or is `newest_passed`.
    pending: Vec<Candidate>,
}

impl Group {
    /// Why a finished run older than `older_than`, fed to this group, is kept by a keep
    /// slot (`None`: it is not). Protection only ever ends as more runs are fed.
    fn keeps(
        &self,
        opts: &RetentionOptions,
        at: (DateTime<Utc>, &str),
        passed: bool,
    ) -> Option<Verdict<'static>> {
        let newer =
            self.young_finished + self.latest.iter().filter(|k| k.newer_than(at)).count() as u64;
        if newer < u64::from(opts.keep_latest) {
            Some(Verdict::AmongLatest)
        } else if opts.keep_last_passed
            && passed
            && !self.young_passed
            && self
                .newest_passed
                .as_ref()
                .is_some_and(|k| (k.at, &*k.id) == at)
        {
            Some(Verdict::NewestPassed)
        } else {
            None
        }
    }
}

/// The runs of one project, by branch.
#[derive(Debug, Default)]
struct ProjectGroups {
    named: HashMap<Box<str>, u32>,
    unnamed: Option<u32>,
}

/// One retention sweep, decided incrementally: feed it the runs in any order and in any
/// number of pieces (e.g. pages as they arrive from the API), then [`finish`](Self::finish).
/// The outcome depends only on the set of runs fed, not on their order.
///
/// It does not hold the runs. Per project and branch it keeps the keys of the newest
/// `keep_latest` finished runs older than `older_than` and of the newest passed one, a
/// count of the younger finished runs, and the deletable runs that a keep slot still
/// protects; a deletable run no slot protects any more is final and is kept as a compact
/// candidate (up to `max_deletions` + 1 of them; past that, only counted). Memory is
/// O(branches × `keep_latest` + min(deletions, `max_deletions`)), whatever the number of
/// runs.
#[derive(Debug)]
pub struct Sweep<'a> {
    rule: &'a Rule,
    opts: &'a RetentionOptions,
    now: DateTime<Utc>,
    /// Runs created before this are older than `older_than`.
    cutoff: Option<DateTime<Utc>>,
    /// Keep slots exist (`keep_latest > 0` or `keep_last_passed`).
    slots: bool,
    index: HashMap<Box<str>, ProjectGroups>,
    groups: Vec<Group>,
    /// Runs to delete (cleared once there are more than `max_deletions`).
    doomed: Vec<Candidate>,
    /// How many runs to delete.
    doomed_count: usize,
    /// Runs fed that the rule's filter selected.
    selected: u64,
}

impl<'a> Sweep<'a> {
    pub fn new(rule: &'a Rule, opts: &'a RetentionOptions, now: DateTime<Utc>) -> Self {
        let cutoff = chrono::Duration::from_std(opts.older_than)
            .ok()
            .and_then(|d| now.checked_sub_signed(d));
        Self {
            rule,
            opts,
            now,
            cutoff,
            slots: opts.keep_latest > 0 || opts.keep_last_passed,
            index: HashMap::new(),
            groups: Vec::new(),
            doomed: Vec::new(),
            doomed_count: 0,
            selected: 0,
        }
    }

    /// The rule this sweep decides for.
    pub fn rule(&self) -> &'a Rule {
        self.rule
    }

    /// How many runs fed the rule's filter selected.
    pub fn selected(&self) -> u64 {
        self.selected
    }

    /// How many runs the sweep deletes (or would, past `max_deletions`) given the runs
    /// fed so far. Exact once every run is fed; before, a lower bound: a run a keep slot
    /// protects may lose it to a newer run fed later.
    pub fn would_delete(&self) -> usize {
        self.doomed_count
    }

    fn young(&self, r: &Run) -> bool {
        self.cutoff.is_none_or(|c| r.created_at >= c)
    }

    /// The first tag of `r` that `pin_tags` pins: one equal to an entry, or matching it
    /// as a glob (so `keep[1]` pins the tag `keep[1]` itself, not only `keep1`).
    fn pinned<'r>(&self, r: &'r Run) -> Option<&'r str> {
        r.tags
            .iter()
            .find(|t| {
                self.opts.pin_tag_patterns.iter().any(|p| p == *t)
                    || self.opts.pin_tags.is_match(t.as_str())
            })
            .map(String::as_str)
    }

    fn find_group(&self, r: &Run) -> Option<u32> {
        let p = self.index.get(r.project_id.as_str())?;
        match r.branch() {
            Some(b) => p.named.get(b).copied(),
            None => p.unnamed,
        }
    }

    fn group_of(&mut self, r: &Run) -> u32 {
        if let Some(g) = self.find_group(r) {
            return g;
        }
        let g = self.groups.len() as u32;
        self.groups.push(Group {
            project: r.project_id.as_str().into(),
            branch: r.branch().map(Into::into),
            young_finished: 0,
            young_passed: false,
            latest: Vec::new(),
            newest_passed: None,
            pending: Vec::new(),
        });
        let p = self.index.entry(r.project_id.as_str().into()).or_default();
        match r.branch() {
            Some(b) => {
                p.named.insert(b.into(), g);
            }
            None => p.unnamed = Some(g),
        }
        g
    }

    fn doom(&mut self, c: Candidate) {
        self.doomed_count += 1;
        if self.doomed_count > self.opts.max_deletions as usize {
            // The breaker trips whatever else is fed: only the count matters now.
            if !self.doomed.is_empty() {
                self.doomed = Vec::new();
            }
        } else {
            self.doomed.push(c);
        }
    }

    /// Moves the pending runs of group `g` that no keep slot protects any more to the
    /// doomed ones.
    fn settle(&mut self, g: u32) {
        let group = &mut self.groups[g as usize];
        if group.pending.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut group.pending);
        for c in pending {
            let group = &self.groups[g as usize];
            if group
                .keeps(self.opts, (c.key.at, &c.key.id), c.passed)
                .is_some()
            {
                self.groups[g as usize].pending.push(c);
            } else {
                self.doom(c);
            }
        }
    }

    /// Takes one run into account (runs the rule's filter does not select are ignored).
    /// Each run should be fed once.
    pub fn feed(&mut self, r: &Run) {
        if !self.rule.filter.matches(r) {
            return;
        }
        self.selected += 1;
        // In-progress and unknown runs are never deleted and take no keep slot.
        if !finished(r) {
            return;
        }
        let passed = passed(r);
        if self.young(r) {
            // Never deleted for its age; it takes a keep slot, newer than any older run.
            if self.slots {
                let g = self.group_of(r);
                let group = &mut self.groups[g as usize];
                group.young_finished += 1;
                group.young_passed |= passed;
                self.settle(g);
            }
            return;
        }
        let deletable = self.pinned(r).is_none();
        if !self.slots && !deletable {
            return;
        }
        // Without keep slots the group only names the project and branch.
        let g = self.group_of(r);
        let (keep_latest, keep_last_passed) =
            (self.opts.keep_latest as usize, self.opts.keep_last_passed);
        let group = &mut self.groups[g as usize];
        let at = (r.created_at, r.run_id.as_str());
        if keep_latest > 0
            && (group.latest.len() < keep_latest
                || group.latest.last().is_some_and(|k| !k.newer_than(at)))
        {
            let i = group.latest.partition_point(|k| k.newer_than(at));
            group.latest.insert(i, Key::of(r));
            group.latest.truncate(keep_latest);
        }
        if keep_last_passed
            && passed
            && group
                .newest_passed
                .as_ref()
                .is_none_or(|k| !k.newer_than(at))
        {
            group.newest_passed = Some(Key::of(r));
        }
        if deletable {
            group.pending.push(Candidate {
                key: Key::of(r),
                sha: r.sha().map(Into::into),
                passed,
                group: g,
            });
        }
        self.settle(g);
    }

    /// What the rule makes of `run`, given every run fed (`run` among them); `None` when
    /// its filter does not select `run`.
    pub fn verdict<'r>(&self, run: &'r Run) -> Option<Verdict<'r>> {
        if !self.rule.filter.matches(run) {
            return None;
        }
        let v = if run.is_in_progress() {
            Verdict::InProgress
        } else if !finished(run) {
            Verdict::NotFinished
        } else if let Some(tag) = self.pinned(run) {
            Verdict::Pinned(tag)
        } else if self.young(run) {
            Verdict::TooYoung
        } else {
            let at = (run.created_at, run.run_id.as_str());
            self.find_group(run)
                .and_then(|g| self.groups[g as usize].keeps(self.opts, at, passed(run)))
                .unwrap_or(Verdict::Delete)
        };
        Some(v)
    }

    /// The decisions of the sweep, sorted by run `created_at` then `run_id`; a [`Breach`]
    /// and no decisions when they would be more than `max_deletions`.
    pub fn finish(mut self, config: &Config) -> Result<Vec<Decision>, Breach> {
        if self.doomed_count > self.opts.max_deletions as usize {
            return Err(Breach {
                rule: self.rule.name.clone(),
                would_delete: self.doomed_count,
                max: self.opts.max_deletions,
            });
        }
        self.doomed.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        self.doomed.dedup_by(|a, b| a.key.id == b.key.id);
        let (rule, opts, now) = (self.rule, self.opts, self.now);
        let dry_run = rule.is_dry_run(config.dry_run);
        let groups = &self.groups;
        Ok(self
            .doomed
            .into_iter()
            .map(|c| {
                let g = &groups[c.group as usize];
                let branch = g.branch.as_deref().map(str::to_string);
                Decision {
                    rule: rule.name.clone(),
                    kind: rule.kind_name(),
                    action: Action::Delete,
                    reason: delete_reason_at(opts, branch.as_deref(), c.key.at, now),
                    run_id: c.key.id.into(),
                    project_id: g.project.to_string(),
                    branch,
                    sha: c.sha.map(Into::into),
                    dry_run,
                    not_before: None,
                }
            })
            .collect())
    }
}

/// The verdict on every run of `runs` that the rule's filter selects (in no particular
/// order). O(n log keep_latest).
pub fn verdicts<'r>(
    rule: &Rule,
    opts: &RetentionOptions,
    runs: impl Iterator<Item = &'r Run> + Clone,
    now: DateTime<Utc>,
) -> Vec<(&'r Run, Verdict<'r>)> {
    let mut sweep = Sweep::new(rule, opts, now);
    for r in runs.clone() {
        sweep.feed(r);
    }
    runs.filter_map(|r| sweep.verdict(r).map(|v| (r, v)))
        .collect()
}

/// Why a run is deleted: "created 41d ago > older_than 30d; not among the 3 newest on
/// feat/x".
pub fn delete_reason(opts: &RetentionOptions, run: &Run, now: DateTime<Utc>) -> String {
    delete_reason_at(opts, run.branch(), run.created_at, now)
}

/// [`delete_reason`] of a run of `branch` created at `created_at`.
fn delete_reason_at(
    opts: &RetentionOptions,
    branch: Option<&str>,
    created_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> String {
    let b = branch.unwrap_or("(no branch)");
    let latest = if opts.keep_latest > 0 {
        format!("; not among the {} newest on {b}", opts.keep_latest)
    } else {
        String::new()
    };
    let passed = if opts.keep_last_passed {
        "; not the newest passed run on "
    } else {
        ""
    };
    format!(
        "created {} ago > older_than {}{latest}{passed}{}",
        human_duration(since(created_at, now)),
        human_duration(opts.older_than),
        if opts.keep_last_passed { b } else { "" }
    )
}

/// Why a run is kept, in words.
pub fn keep_reason(opts: &RetentionOptions, run: &Run, v: &Verdict, now: DateTime<Utc>) -> String {
    let b = branch_name(run);
    match v {
        Verdict::Delete => delete_reason(opts, run, now),
        Verdict::InProgress => "run is IN_PROGRESS; retention never deletes it".into(),
        Verdict::NotFinished => format!(
            "completion state {:?} is not known to be finished",
            run.completion_state.as_str()
        ),
        Verdict::Pinned(tag) => format!("pinned by tag {tag}"),
        Verdict::TooYoung => format!(
            "created {} ago < older_than {}",
            human_duration(since(run.created_at, now)),
            human_duration(opts.older_than)
        ),
        Verdict::AmongLatest => format!("among the {} newest on {b}", opts.keep_latest),
        Verdict::NewestPassed => format!("newest passed run on {b} (keep_last_passed)"),
    }
}

/// The retention decisions of one sweep of one rule over `view.runs` (all runs of the
/// projects), sorted by run `created_at`; a [`Breach`] and no decisions when they would
/// be more than `max_deletions`. The same as feeding every run to a [`Sweep`].
pub fn decide(
    config: &Config,
    rule: &Rule,
    opts: &RetentionOptions,
    view: &RunsView,
    now: DateTime<Utc>,
) -> Result<Vec<Decision>, Breach> {
    let mut sweep = Sweep::new(rule, opts, now);
    for r in view.runs {
        sweep.feed(r);
    }
    sweep.finish(config)
}

/// Whether a sweep now would delete `run` (with the runs of `view`), and why (not). The
/// caller has checked the filter. `view` should hold every run of the projects the
/// rule concerns, as a sweep lists them: the keep slots and the `max_deletions` breaker
/// are judged over those runs only ([`Sweep::explain`]).
pub fn explain(
    rule: &Rule,
    opts: &RetentionOptions,
    run: &Run,
    view: &RunsView,
    now: DateTime<Utc>,
) -> (bool, String) {
    let mut sweep = Sweep::new(rule, opts, now);
    for r in view.runs.iter().filter(|r| r.run_id != run.run_id) {
        sweep.feed(r);
    }
    sweep.feed(run);
    sweep.explain(run)
}

impl Sweep<'_> {
    /// Whether this sweep, fed every run it lists (`run` among them, once), deletes
    /// `run`, and why (not): the verdict on the run, and when it is to be deleted, whether
    /// the `max_deletions` breaker lets the sweep delete anything. The caller has checked
    /// the filter.
    pub fn explain(&self, run: &Run) -> (bool, String) {
        let (opts, now) = (self.opts, self.now);
        let doomed = self.would_delete();
        let Some(v) = self.verdict(run) else {
            return (false, "not selected by the filter".into());
        };
        let schedule = match &opts.schedule {
            Some(s) => format!("on schedule {:?}", s.text()),
            None => "when swept on demand".to_string(),
        };
        match v {
            Verdict::Delete if doomed > opts.max_deletions as usize => (
                false,
                format!(
                    "{}, but the sweep would delete {doomed} runs > max_deletions {}, so it deletes none",
                    delete_reason(opts, run, now),
                    opts.max_deletions
                ),
            ),
            Verdict::Delete => (
                true,
                format!("{} ({schedule})", delete_reason(opts, run, now)),
            ),
            v => (false, keep_reason(opts, run, &v, now)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RuleKind, load_str};
    use chrono::TimeZone;

    fn rule(extra: &str) -> Rule {
        let text = format!(
            "[currents]\nprojects = [\"p\"]\n[[rules]]\nname = \"ret\"\nkind = \"retention\"\nschedule = \"0 3 * * *\"\nolder_than = \"30d\"\n{extra}"
        );
        load_str(&text, "rules.toml", &[])
            .unwrap()
            .config
            .rules
            .remove(0)
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap()
    }

    fn run(id: &str, age_days: i64, state: &str, status: &str) -> Run {
        serde_json::from_value(serde_json::json!({
            "runId": id, "projectId": "p",
            "createdAt": now() - chrono::Duration::days(age_days),
            "completionState": state, "status": status,
            "meta": {"commit": {"branch": "b"}}
        }))
        .unwrap()
    }

    fn verdict_of<'r>(v: &[(&'r Run, Verdict<'r>)], id: &str) -> Verdict<'r> {
        v.iter().find(|(r, _)| r.run_id == id).unwrap().1.clone()
    }

    #[test]
    fn keep_slots_go_to_finished_runs_newest_first() {
        let r = rule("keep_latest = 2\nkeep_last_passed = true\n");
        let RuleKind::Retention(o) = &r.kind else {
            unreachable!()
        };
        let runs = [
            run("ip", 40, "IN_PROGRESS", "RUNNING"),
            run("odd", 41, "WEIRD", "FAILED"),
            run("f1", 42, "COMPLETE", "FAILED"),
            run("f2", 43, "CANCELED", "FAILED"),
            run("p1", 44, "COMPLETE", "PASSED"),
            run("p2", 45, "COMPLETE", "PASSED"),
            run("young", 1, "COMPLETE", "FAILED"),
        ];
        let v = verdicts(&r, o, runs.iter(), now());
        assert_eq!(v.len(), 7);
        assert_eq!(verdict_of(&v, "ip"), Verdict::InProgress);
        assert_eq!(verdict_of(&v, "odd"), Verdict::NotFinished);
        // "young" takes the first slot although it is kept for its age anyway.
        assert_eq!(verdict_of(&v, "young"), Verdict::TooYoung);
        assert_eq!(verdict_of(&v, "f1"), Verdict::AmongLatest);
        assert_eq!(verdict_of(&v, "f2"), Verdict::Delete);
        assert_eq!(verdict_of(&v, "p1"), Verdict::NewestPassed);
        assert_eq!(verdict_of(&v, "p2"), Verdict::Delete);
    }

    /// The sweep holds per branch at most `keep_latest + 1` protected runs and never
    /// more than `max_deletions + 1` runs to delete, however many runs it is fed.
    #[test]
    fn a_sweep_holds_bounded_state_whatever_the_number_of_runs() {
        let r = rule("keep_latest = 3\nkeep_last_passed = true\nmax_deletions = 50\n");
        let RuleKind::Retention(o) = &r.kind else {
            unreachable!()
        };
        let mut sweep = Sweep::new(&r, o, now());
        let mut peak_pending = 0;
        let mut peak_doomed = 0;
        for i in 0..20_000i64 {
            // Oldest first (the worst order for the keep slots), on 10 branches.
            let status = if i % 3 == 0 { "PASSED" } else { "FAILED" };
            let mut x = run(&format!("r{i:05}"), 60, "COMPLETE", status);
            x.created_at += chrono::Duration::seconds(i * 200);
            x.meta.commit.branch = Some(format!("b{}", i % 10));
            sweep.feed(&x);
            let pending: usize = sweep.groups.iter().map(|g| g.pending.len()).sum();
            peak_pending = peak_pending.max(pending);
            peak_doomed = peak_doomed.max(sweep.doomed.len());
            assert!(
                sweep
                    .groups
                    .iter()
                    .all(|g| g.pending.len() <= 4 && g.latest.len() <= 3)
            );
        }
        assert_eq!(sweep.groups.len(), 10);
        assert!(peak_pending <= 40, "{peak_pending}");
        assert!(peak_doomed <= 51, "{peak_doomed}");
        assert!(
            sweep.doomed.is_empty(),
            "the breaker tripped: nothing is kept to delete"
        );
        let expired = sweep.would_delete();
        // Every run older than 30 days (i * 200 s < 30 d): each branch's younger runs take
        // its keep slots.
        assert_eq!(expired, 12_960);
        let breach = sweep.finish(&load_cfg()).unwrap_err();
        assert_eq!(breach.would_delete, expired);
    }

    fn load_cfg() -> Config {
        load_str("[currents]\nprojects = [\"p\"]\n", "rules.toml", &[])
            .unwrap()
            .config
    }

    #[test]
    fn a_pin_tag_pins_the_tag_it_spells_and_what_it_matches_as_a_glob() {
        let r = rule("pin_tags = [\"release*\", \"keep[1]\"]\n");
        let RuleKind::Retention(o) = &r.kind else {
            unreachable!()
        };
        let tagged = |id: &str, tag: &str| {
            let mut x = run(id, 60, "COMPLETE", "PASSED");
            x.tags = vec![tag.to_string()];
            x
        };
        let runs = [
            tagged("literal", "keep[1]"),
            tagged("class", "keep1"),
            tagged("glob", "release-7"),
            tagged("other", "keep2"),
        ];
        let v = verdicts(&r, o, runs.iter(), now());
        assert_eq!(verdict_of(&v, "literal"), Verdict::Pinned("keep[1]"));
        assert_eq!(verdict_of(&v, "class"), Verdict::Pinned("keep1"));
        assert_eq!(verdict_of(&v, "glob"), Verdict::Pinned("release-7"));
        assert_eq!(verdict_of(&v, "other"), Verdict::Delete);
    }

    #[test]
    fn older_than_is_strict() {
        let r = rule("");
        let RuleKind::Retention(o) = &r.kind else {
            unreachable!()
        };
        let runs = [
            run("edge", 30, "COMPLETE", "PASSED"),
            run("past", 31, "COMPLETE", "PASSED"),
        ];
        let v = verdicts(&r, o, runs.iter(), now());
        assert_eq!(verdict_of(&v, "edge"), Verdict::TooYoung);
        assert_eq!(verdict_of(&v, "past"), Verdict::Delete);
    }

    #[test]
    fn reasons_name_the_kept_or_deleting_condition() {
        let r = rule("keep_latest = 3\nkeep_last_passed = true\n");
        let RuleKind::Retention(o) = &r.kind else {
            unreachable!()
        };
        let x = run("x", 41, "COMPLETE", "FAILED");
        assert_eq!(
            delete_reason(o, &x, now()),
            "created 41d ago > older_than 30d; not among the 3 newest on b; not the newest passed run on b"
        );
        assert_eq!(
            keep_reason(o, &x, &Verdict::Pinned("keep"), now()),
            "pinned by tag keep"
        );
        assert_eq!(
            keep_reason(o, &x, &Verdict::AmongLatest, now()),
            "among the 3 newest on b"
        );
        assert_eq!(
            keep_reason(o, &x, &Verdict::NotFinished, now()),
            "completion state \"COMPLETE\" is not known to be finished"
        );
    }

    /// [`Sweep::explain`] judges a run over everything fed: the `max_deletions` breaker
    /// counts every branch (6 expired runs on 3 branches > 3: none deleted, and it says
    /// so), and the keep slots of runs without a branch count the others without one.
    #[test]
    fn a_sweep_explains_a_run_with_the_whole_listing() {
        let r = rule("max_deletions = 3\n");
        let RuleKind::Retention(o) = &r.kind else {
            unreachable!()
        };
        let runs: Vec<Run> = (0..6)
            .map(|i| {
                let mut x = run(&format!("r{i}"), 40, "COMPLETE", "PASSED");
                x.meta.commit.branch = Some(format!("b{}", i % 3));
                x
            })
            .collect();
        let mut sweep = Sweep::new(&r, o, now());
        // Fed in pages, as a listing arrives.
        for page in runs.chunks(4) {
            for x in page {
                sweep.feed(x);
            }
        }
        let (applies, detail) = sweep.explain(&runs[0]);
        assert!(!applies, "{detail}");
        assert_eq!(
            detail,
            "created 40d ago > older_than 30d, but the sweep would delete 6 runs > max_deletions 3, so it deletes none"
        );
        assert!(sweep.finish(&load_cfg()).is_err());
        // Its branch alone is under the breaker: the view matters.
        let mut branch_only = Sweep::new(&r, o, now());
        for x in runs.iter().filter(|x| x.branch() == Some("b0")) {
            branch_only.feed(x);
        }
        assert!(branch_only.explain(&runs[0]).0);

        let r = rule("keep_latest = 1\n");
        let RuleKind::Retention(o) = &r.kind else {
            unreachable!()
        };
        let unnamed = |id: &str, age: i64| {
            let mut x = run(id, age, "COMPLETE", "PASSED");
            x.meta.commit.branch = None;
            x
        };
        let (older, newer) = (unnamed("older", 50), unnamed("newer", 40));
        let mut sweep = Sweep::new(&r, o, now());
        sweep.feed(&newer);
        sweep.feed(&older);
        assert_eq!(
            sweep.explain(&older),
            (
                true,
                "created 50d ago > older_than 30d; not among the 1 newest on (no branch) (on schedule \"0 3 * * *\")".into()
            )
        );
        assert_eq!(
            sweep.explain(&newer),
            (false, "among the 1 newest on (no branch)".into())
        );
    }
}
