//! `kind = "retention"` (SPEC §4): when the schedule fires, delete the runs created more
//! than `older_than` ago, except:
//!
//! - the newest `keep_latest` finished runs of each project and branch, whatever their
//!   age (in-progress runs never take a slot: they are never deleted anyway);
//! - with `keep_last_passed`, the newest `PASSED` and `COMPLETE` run of each project and
//!   branch;
//! - runs carrying a tag that matches `pin_tags`;
//! - `IN_PROGRESS` runs, and runs whose completion state is unknown.
//!
//! The rule's filter selects the runs it considers, also for the keep counts. If a sweep
//! would delete more than `max_deletions` runs it deletes none: the all-or-nothing
//! circuit breaker returns a [`Breach`] instead.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Action, Decision, RunsView, finish, human_duration, since};
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

fn branch_name(r: &Run) -> &str {
    r.branch().unwrap_or("(no branch)")
}

/// The verdict on every run of `runs` that the rule's filter selects. O(n log n).
pub fn verdicts<'r>(
    rule: &Rule,
    opts: &RetentionOptions,
    runs: impl Iterator<Item = &'r Run>,
    now: DateTime<Utc>,
) -> Vec<(&'r Run, Verdict<'r>)> {
    let mut out = Vec::new();
    visit_verdicts(rule, opts, runs, now, |r, v| out.push((r, v)));
    out
}

/// Calls `f` with the verdict on every run of `runs` that the rule's filter selects (in
/// no particular order).
///
/// Runs younger than `older_than` are never deleted and only count towards the keep
/// slots of their group, so only the older runs of a group are sorted.
pub fn visit_verdicts<'r>(
    rule: &Rule,
    opts: &RetentionOptions,
    runs: impl Iterator<Item = &'r Run>,
    now: DateTime<Utc>,
    mut f: impl FnMut(&'r Run, Verdict<'r>),
) {
    let cutoff = chrono::Duration::from_std(opts.older_than)
        .ok()
        .and_then(|d| now.checked_sub_signed(d));
    let pinned = |r: &'r Run| {
        r.tags
            .iter()
            .find(|t| opts.pin_tags.is_match(t.as_str()))
            .map(String::as_str)
    };
    let counts_young = opts.keep_latest > 0 || opts.keep_last_passed;
    let mut groups: HashMap<(&'r str, Option<&'r str>), Group<'r>> = HashMap::new();
    for r in runs.filter(|r| rule.filter.matches(r)) {
        let young = cutoff.is_none_or(|c| r.created_at >= c);
        if young {
            // Kept for its age; it may still take a keep slot of its group.
            let v = if r.is_in_progress() {
                Verdict::InProgress
            } else if !finished(r) {
                Verdict::NotFinished
            } else {
                if counts_young {
                    let g = groups.entry((&r.project_id, r.branch())).or_default();
                    g.young_finished += 1;
                    g.young_passed |= passed(r);
                }
                match pinned(r) {
                    Some(tag) => Verdict::Pinned(tag),
                    None => Verdict::TooYoung,
                }
            };
            f(r, v);
        } else {
            groups
                .entry((&r.project_id, r.branch()))
                .or_default()
                .old
                .push(r);
        }
    }
    for g in groups.values_mut() {
        g.old.sort_by_cached_key(|r: &&'r Run| {
            let r: &'r Run = r;
            std::cmp::Reverse((r.created_at, r.run_id.as_str()))
        });
        let mut rank = g.young_finished;
        let mut passed_seen = g.young_passed;
        for r in g.old.iter() {
            let v = if r.is_in_progress() {
                Verdict::InProgress
            } else if !finished(r) {
                Verdict::NotFinished
            } else {
                rank += 1;
                let latest = rank <= u64::from(opts.keep_latest);
                let newest_passed = opts.keep_last_passed && !passed_seen && passed(r);
                passed_seen |= newest_passed;
                if let Some(tag) = pinned(r) {
                    Verdict::Pinned(tag)
                } else if latest {
                    Verdict::AmongLatest
                } else if newest_passed {
                    Verdict::NewestPassed
                } else {
                    Verdict::Delete
                }
            };
            f(r, v);
        }
    }
}

/// The runs of one project and branch.
#[derive(Default)]
struct Group<'r> {
    /// Finished runs younger than `older_than` (all newer than every run of `old`).
    young_finished: u64,
    /// One of them is a passed run.
    young_passed: bool,
    old: Vec<&'r Run>,
}

fn passed(r: &Run) -> bool {
    r.completion_state == CompletionState::Complete && r.status == RunStatus::Passed
}

/// Why a run is deleted: "created 41d ago > older_than 30d; not among the 3 newest on
/// feat/x".
pub fn delete_reason(opts: &RetentionOptions, run: &Run, now: DateTime<Utc>) -> String {
    let b = branch_name(run);
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
        human_duration(since(run.created_at, now)),
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
/// be more than `max_deletions`.
pub fn decide(
    config: &Config,
    rule: &Rule,
    opts: &RetentionOptions,
    view: &RunsView,
    now: DateTime<Utc>,
) -> Result<Vec<Decision>, Breach> {
    let mut doomed: Vec<&Run> = Vec::new();
    visit_verdicts(rule, opts, view.runs.iter(), now, |r, v| {
        if v == Verdict::Delete {
            doomed.push(r);
        }
    });
    if doomed.len() > opts.max_deletions as usize {
        return Err(Breach {
            rule: rule.name.clone(),
            would_delete: doomed.len(),
            max: opts.max_deletions,
        });
    }
    let found = doomed
        .into_iter()
        .map(|r| {
            let reason = delete_reason(opts, r, now);
            (r, Decision::new(config, rule, Action::Delete, r, reason))
        })
        .collect();
    Ok(finish(found))
}

/// Whether a sweep now would delete `run` (with the runs of `view`), and why (not). The
/// caller has checked the filter.
pub fn explain(
    rule: &Rule,
    opts: &RetentionOptions,
    run: &Run,
    view: &RunsView,
    now: DateTime<Utc>,
) -> (bool, String) {
    let all = verdicts(
        rule,
        opts,
        view.runs
            .iter()
            .filter(|r| r.run_id != run.run_id)
            .chain(std::iter::once(run)),
        now,
    );
    let doomed = all.iter().filter(|(_, v)| *v == Verdict::Delete).count();
    let Some((_, v)) = all.iter().find(|(r, _)| r.run_id == run.run_id) else {
        return (false, "not selected by the filter".into());
    };
    let schedule = format!("on schedule {:?}", opts.schedule_text);
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
        v => (false, keep_reason(opts, run, v, now)),
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
}
