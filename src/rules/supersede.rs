//! `kind = "supersede"` (SPEC §4): cancel an `IN_PROGRESS` run once a newer run or a
//! newer push exists for the same project and group.
//!
//! - Group = project + branch, plus the sorted tags (`group_by = ["tags"]`) and/or the
//!   framework (`group_by = ["framework"]`). Runs without a branch belong to no group.
//! - Run A is superseded by run B when they share the group, B was created strictly after
//!   A and B's sha differs from A's (both known). Only in-progress A is cancelled; the
//!   newest run of a group never is (nothing is newer), and neither are runs created at
//!   the same instant as the newest. The rule's filter selects both A and B.
//! - `on_push`: a push of another sha to A's branch, pushed after A was created.
//! - `on_branch_deleted`: a push deleting the branch, or a closed pull request, cancels
//!   the branch's in-progress runs created before it. A pull request from a fork is not
//!   one: its branch is the fork's, not the repository's (no trigger is made for it).
//! - `spare_if_progress_at_least`: runs at least this far complete are spared, whatever
//!   the trigger.
//!
//! Grouping hashes once and sorts each group once: O(n log n).

use std::borrow::Cow;
use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::{
    Action, Decision, RunsView, Trigger, clock, finish, not_in_progress, run_in_repo, short_sha,
};
use crate::config::{Config, GroupBy, Rule, SupersedeOptions};
use crate::currents::Run;

/// What identifies a supersede group.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupKey<'a> {
    pub project: &'a str,
    pub branch: &'a str,
    /// Sorted, deduplicated tags when `group_by` has `tags`.
    pub tags: Option<Vec<&'a str>>,
    /// Lowercased framework (`""` when unknown) when `group_by` has `framework`.
    pub framework: Option<Cow<'a, str>>,
}

impl std::fmt::Display for GroupKey<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "project {}, branch {}", self.project, self.branch)?;
        if let Some(t) = &self.tags {
            write!(f, ", tags [{}]", t.join(", "))?;
        }
        if let Some(fw) = &self.framework {
            let fw = if fw.is_empty() { "(none)" } else { fw };
            write!(f, ", framework {fw}")?;
        }
        Ok(())
    }
}

/// The group of a run under `group_by`; `None` when the run has no branch.
pub fn group_key<'a>(run: &'a Run, group_by: &[GroupBy]) -> Option<GroupKey<'a>> {
    let branch = run.branch()?;
    let tags = group_by.contains(&GroupBy::Tags).then(|| {
        let mut t: Vec<&str> = run.tags.iter().map(String::as_str).collect();
        t.sort_unstable();
        t.dedup();
        t
    });
    let framework = group_by.contains(&GroupBy::Framework).then(|| {
        let fw = run.framework().unwrap_or("");
        if fw.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(fw.to_ascii_lowercase())
        } else {
            Cow::Borrowed(fw)
        }
    });
    Some(GroupKey {
        project: &run.project_id,
        branch,
        tags,
        framework,
    })
}

/// Whether both shas are known and differ.
fn sha_differs(a: &Run, b: &Run) -> bool {
    matches!((a.sha(), b.sha()), (Some(x), Some(y)) if x != y)
}

/// Within one group (any order), every in-progress run A with its superseding run B: the
/// newest run created strictly after A with another known sha. O(k log k).
pub fn superseded_in_group<'r>(group: &mut [&'r Run]) -> Vec<(&'r Run, &'r Run)> {
    superseded_in_group_where(group, |_| true, |_| true)
}

/// [`superseded_in_group`] for the in-progress runs of `group` that `selected` accepts
/// (a rule's `[rules.match]` filter: the runs the rule may cancel), by the newer runs
/// that `superseding` accepts (the same filter without its state keys,
/// [`crate::config::filter::Filter::matches_ignoring_state`]: a run of the same kind, in
/// whatever state, so a newer run that has finished already supersedes under
/// `completion_states = ["IN_PROGRESS"]` too, while a Playwright run does not supersede
/// under a Cypress-only rule). `selected` is only asked about in-progress runs and
/// `superseding` about the few newest runs, not the whole group.
pub fn superseded_in_group_where<'r>(
    group: &mut [&'r Run],
    selected: impl Fn(&Run) -> bool,
    superseding: impl Fn(&Run) -> bool,
) -> Vec<(&'r Run, &'r Run)> {
    if !group.iter().any(|r| r.is_in_progress()) {
        return Vec::new();
    }
    group.sort_by_cached_key(|r: &&'r Run| {
        let r: &'r Run = r;
        (r.created_at, r.run_id.as_str())
    });
    // s1: newest superseding run with a known sha; s2: newest superseding run whose
    // known sha differs from s1's.
    let mut s1: Option<&Run> = None;
    let mut s2: Option<&Run> = None;
    for r in group.iter().rev() {
        let Some(sha) = r.sha() else { continue };
        match s1 {
            Some(first) if first.sha() == Some(sha) => {}
            _ if !superseding(r) => {}
            None => s1 = Some(r),
            Some(_) => {
                s2 = Some(r);
                break;
            }
        }
    }
    let Some(s1) = s1 else { return Vec::new() };
    let mut out = Vec::new();
    for a in group.iter() {
        if !a.is_in_progress() || a.sha().is_none() {
            continue;
        }
        let b = if sha_differs(a, s1) { Some(s1) } else { s2 };
        if let Some(b) = b
            && b.created_at > a.created_at
            && selected(a)
        {
            out.push((*a, b));
        }
    }
    out
}

/// `Some(why)` when the run is spared by `spare_if_progress_at_least`.
pub fn spared(opts: &SupersedeOptions, run: &Run) -> Option<String> {
    let min = opts.spare_if_progress_at_least?;
    let p = run.progress();
    (p >= min).then(|| {
        format!(
            "spared: {:.0}% of its specs are complete >= spare_if_progress_at_least {:.0}%",
            p * 100.0,
            min * 100.0
        )
    })
}

fn by_run_reason(b: &Run, now: DateTime<Utc>) -> String {
    format!(
        "superseded by run {} (sha {}, created {})",
        b.run_id,
        short_sha(b.sha().unwrap_or("")),
        clock(b.created_at, now)
    )
}

/// Supersession among runs: every group when `only` is `None`, else the group of `only`.
fn by_newer_runs<'r>(
    config: &Config,
    rule: &Rule,
    opts: &SupersedeOptions,
    runs: impl Iterator<Item = &'r Run> + Clone,
    only: Option<&GroupKey<'_>>,
    now: DateTime<Utc>,
) -> Vec<(&'r Run, Decision)> {
    // Runs created before the oldest in-progress run can neither be superseded nor
    // supersede: on a full listing that is nearly all of them.
    let Some(oldest) = runs
        .clone()
        .filter(|r| r.is_in_progress())
        .map(|r| r.created_at)
        .min()
    else {
        return Vec::new();
    };
    // Group, then ask the filter only about the runs that matter: the in-progress ones
    // and the newest of each group.
    let mut groups: HashMap<GroupKey<'r>, (bool, Vec<&'r Run>)> = HashMap::new();
    for r in runs.filter(|r| r.created_at >= oldest) {
        let Some(k) = group_key(r, &opts.group_by) else {
            continue;
        };
        if only.is_some_and(|o| *o != k) {
            continue;
        }
        let g = groups.entry(k).or_default();
        g.0 |= r.is_in_progress();
        g.1.push(r);
    }
    let mut out = Vec::new();
    for (_, group) in groups.values_mut().filter(|(live, _)| *live) {
        // At most two distinct superseding runs per group: format each reason once.
        let mut reasons: Vec<(&str, String)> = Vec::new();
        for (a, b) in superseded_in_group_where(
            group,
            |r| rule.filter.matches(r),
            |r| rule.filter.matches_ignoring_state(r),
        ) {
            if spared(opts, a).is_some() {
                continue;
            }
            let reason = match reasons.iter().find(|(id, _)| *id == b.run_id) {
                Some((_, why)) => why.clone(),
                None => {
                    let why = by_run_reason(b, now);
                    reasons.push((&b.run_id, why.clone()));
                    why
                }
            };
            out.push((a, Decision::new(config, rule, Action::Cancel, a, reason)));
        }
    }
    out
}

/// The in-progress runs of `branch` in `repo` that the rule's filter selects.
fn branch_runs<'r>(
    config: &'r Config,
    rule: &'r Rule,
    view: &'r RunsView<'r>,
    repo: &'r str,
    branch: &'r str,
) -> impl Iterator<Item = &'r Run> + 'r {
    view.runs.iter().filter(move |r| {
        r.is_in_progress()
            && r.branch() == Some(branch)
            && rule.filter.matches(r)
            && run_in_repo(config, r, repo)
    })
}

fn strip_ref(branch: &str) -> &str {
    branch.strip_prefix("refs/heads/").unwrap_or(branch)
}

/// The supersede decisions of one rule for one trigger, sorted by run `created_at`.
pub fn decide(
    config: &Config,
    rule: &Rule,
    opts: &SupersedeOptions,
    trigger: &Trigger,
    view: &RunsView,
    now: DateTime<Utc>,
) -> Vec<Decision> {
    let found: Vec<(&Run, Decision)> = match trigger {
        Trigger::RunSeen { run, .. } => {
            let Some(key) = group_key(run, &opts.group_by) else {
                return Vec::new();
            };
            let others = view.runs.iter().filter(|r| r.run_id != run.run_id);
            by_newer_runs(
                config,
                rule,
                opts,
                others.chain(std::iter::once(run)),
                Some(&key),
                now,
            )
        }
        Trigger::Tick => by_newer_runs(config, rule, opts, view.runs.iter(), None, now),
        Trigger::Push {
            repo,
            branch,
            head_sha,
            deleted,
            pushed_at,
        } => {
            let branch = strip_ref(branch);
            if *deleted {
                if !opts.on_branch_deleted {
                    return Vec::new();
                }
                branch_runs(config, rule, view, repo, branch)
                    .filter(|r| r.created_at < *pushed_at && spared(opts, r).is_none())
                    .map(|r| {
                        let reason = format!("branch {branch} deleted");
                        (r, Decision::new(config, rule, Action::Cancel, r, reason))
                    })
                    .collect()
            } else {
                if !opts.on_push {
                    return Vec::new();
                }
                branch_runs(config, rule, view, repo, branch)
                    .filter(|r| {
                        r.sha().is_some_and(|s| s != head_sha)
                            && *pushed_at > r.created_at
                            && spared(opts, r).is_none()
                    })
                    .map(|r| {
                        let reason = format!(
                            "superseded by push of {} to {branch} at {}",
                            short_sha(head_sha),
                            clock(*pushed_at, now)
                        );
                        (r, Decision::new(config, rule, Action::Cancel, r, reason))
                    })
                    .collect()
            }
        }
        Trigger::PullRequestClosed {
            repo,
            branch,
            number,
            closed_at,
        } => {
            if !opts.on_branch_deleted {
                return Vec::new();
            }
            let branch = strip_ref(branch);
            branch_runs(config, rule, view, repo, branch)
                .filter(|r| r.created_at < *closed_at && spared(opts, r).is_none())
                .map(|r| {
                    let reason = format!("pull request #{number} closed");
                    (r, Decision::new(config, rule, Action::Cancel, r, reason))
                })
                .collect()
        }
        Trigger::WorkflowRunCompleted { .. } | Trigger::RetentionSweep { .. } => Vec::new(),
    };
    finish(found)
}

/// Whether the rule would cancel `run` now, among the runs of `view`, and why (not). The
/// caller has checked the filter.
pub fn explain(
    rule: &Rule,
    opts: &SupersedeOptions,
    run: &Run,
    view: &RunsView,
    now: DateTime<Utc>,
) -> (bool, String) {
    if !run.is_in_progress() {
        return (false, not_in_progress(run));
    }
    let Some(key) = group_key(run, &opts.group_by) else {
        return (false, "run has no branch, so it belongs to no group".into());
    };
    let Some(sha) = run.sha() else {
        return (false, "run has no commit sha to compare".into());
    };
    let mut group: Vec<&Run> = view
        .runs
        .iter()
        .filter(|r| r.run_id != run.run_id)
        .chain(std::iter::once(run))
        // The runs of its group that can supersede it: of the rule's kind, in any state.
        .filter(|r| {
            group_key(r, &opts.group_by).as_ref() == Some(&key)
                && (r.run_id == run.run_id || rule.filter.matches_ignoring_state(r))
        })
        .collect();
    let hit = superseded_in_group(&mut group)
        .into_iter()
        .find(|(a, _)| a.run_id == run.run_id);
    if let Some((_, b)) = hit {
        return match spared(opts, run) {
            Some(why) => (false, format!("{}, but {why}", by_run_reason(b, now))),
            None => (true, by_run_reason(b, now)),
        };
    }
    let newer = group
        .iter()
        .filter(|r| r.created_at > run.created_at)
        .count();
    let mut detail = if newer == 0 {
        format!("newest run of its group ({key})")
    } else {
        format!(
            "the newer runs of its group ({key}) all share its sha {} (or have none)",
            short_sha(sha)
        )
    };
    let mut later = Vec::new();
    if opts.on_push {
        later.push("a push of another commit to the branch");
    }
    if opts.on_branch_deleted {
        later.push("deleting the branch or closing its pull request");
    }
    if !later.is_empty() {
        detail.push_str(&format!("; {} would cancel it", later.join(" or ")));
        if let Some(why) = spared(opts, run) {
            detail.push_str(&format!(" unless {why}"));
        }
    }
    (false, detail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::currents::CompletionState;
    use chrono::TimeZone;

    fn run(id: &str, min: u32, sha: Option<&str>, state: CompletionState) -> Run {
        let mut r: Run = serde_json::from_value(serde_json::json!({
            "runId": id, "projectId": "p", "createdAt": "2026-01-01T12:00:00Z",
            "meta": {"commit": {"branch": "feat/x"}}
        }))
        .unwrap();
        r.created_at = Utc.with_ymd_and_hms(2026, 1, 1, 12, min, 0).unwrap();
        r.meta.commit.sha = sha.map(str::to_string);
        r.completion_state = state;
        r
    }

    use CompletionState::{Complete, InProgress};

    fn ids(v: Vec<(&Run, &Run)>) -> Vec<(String, String)> {
        v.into_iter()
            .map(|(a, b)| (a.run_id.clone(), b.run_id.clone()))
            .collect()
    }

    #[test]
    fn older_runs_are_superseded_by_the_newest_run_of_another_sha() {
        let (a, b, c) = (
            run("a", 0, Some("s1"), InProgress),
            run("b", 1, Some("s2"), InProgress),
            run("c", 2, Some("s3"), Complete),
        );
        let mut g = vec![&c, &a, &b];
        assert_eq!(
            ids(superseded_in_group(&mut g)),
            vec![("a".into(), "c".into()), ("b".into(), "c".into())]
        );
    }

    #[test]
    fn a_run_whose_newest_successor_has_its_sha_falls_back_to_an_older_other_sha() {
        // a(s1) < b(s2) < c(s1): a is superseded by b (c shares a's sha); b by c.
        let (a, b, c) = (
            run("a", 0, Some("s1"), InProgress),
            run("b", 1, Some("s2"), InProgress),
            run("c", 2, Some("s1"), InProgress),
        );
        let mut g = vec![&a, &b, &c];
        assert_eq!(
            ids(superseded_in_group(&mut g)),
            vec![("a".into(), "b".into()), ("b".into(), "c".into())]
        );
    }

    #[test]
    fn runs_with_unknown_shas_are_neither_superseded_nor_superseding() {
        let (a, b) = (
            run("a", 0, None, InProgress),
            run("b", 1, Some("s2"), InProgress),
        );
        assert!(superseded_in_group(&mut [&a, &b]).is_empty());
        let (a, b) = (
            run("a", 0, Some("s1"), InProgress),
            run("b", 1, None, InProgress),
        );
        assert!(superseded_in_group(&mut [&a, &b]).is_empty());
    }

    #[test]
    fn equal_created_at_supersedes_neither() {
        let (a, b) = (
            run("a", 0, Some("s1"), InProgress),
            run("b", 0, Some("s2"), InProgress),
        );
        assert!(superseded_in_group(&mut [&a, &b]).is_empty());
    }

    #[test]
    fn group_key_sorts_tags_and_lowercases_the_framework() {
        let mut r = run("a", 0, Some("s"), InProgress);
        r.tags = vec!["b".into(), "a".into(), "b".into()];
        r.meta.framework = Some(crate::currents::Framework {
            kind: Some("PW".into()),
            ..Default::default()
        });
        let k = group_key(&r, &[GroupBy::Tags, GroupBy::Framework]).unwrap();
        assert_eq!(k.tags, Some(vec!["a", "b"]));
        assert_eq!(k.framework.as_deref(), Some("pw"));
        assert_eq!(
            k.to_string(),
            "project p, branch feat/x, tags [a, b], framework pw"
        );
        assert!(group_key(&r, &[]).unwrap().tags.is_none());
        r.meta.commit.branch = None;
        assert!(group_key(&r, &[]).is_none());
    }
}
