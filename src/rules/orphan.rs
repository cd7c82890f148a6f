//! `kind = "orphan"` (SPEC §4): on a GitHub `workflow_run` `completed` event, cancel the
//! runs of that workflow run that are still in progress after `grace`.
//!
//! A run belongs to the workflow run when its `meta.ciBuildId` ends with
//! `ci_build_id_suffix` filled from the event (ASCII case-insensitive; when the suffix
//! starts with a letter or digit, the character before it must not be one, so run 123
//! does not claim `...-5123-1`), or with `match_by = "commit"` when its branch and sha
//! equal the workflow run's (and its repository, when known, is the event's). Only runs
//! created before the workflow run completed count: a re-run's new Currents run is not
//! an orphan of the previous attempt. With `workflows`, only the completion of a
//! workflow listed there (by its name, or its file's name) makes orphans.
//!
//! The decision carries `not_before = completed_at + grace`; the executor waits until
//! then and sends the cancel. A run that finished during the grace is not cancelled
//! again: the API's refusal (422 "already", or another final 4xx) sends the executor
//! to read the run, and a run that is over counts as done (`actions::execute`).
//!
//! The runs are found by listing the in-progress runs of the event's repository: of the
//! workflow run's branch with `match_by = "commit"`, of every branch with
//! `ci_build_id` (a run whose branch Currents recorded otherwise is still the workflow
//! run's).

use chrono::{DateTime, Utc};

use super::{
    Action, Decision, RunsView, Trigger, clock, finish, not_in_progress, run_repo, short_sha,
};
use crate::config::{Config, MatchBy, OrphanOptions, Rule, fill_suffix};
use crate::currents::Run;

/// Whether `ci_build_id` ends with `suffix` on a boundary (see the module doc).
pub fn ends_with_suffix(ci_build_id: &str, suffix: &str) -> bool {
    if suffix.is_empty() || ci_build_id.len() < suffix.len() {
        return false;
    }
    let start = ci_build_id.len() - suffix.len();
    if !ci_build_id.is_char_boundary(start) || !ci_build_id[start..].eq_ignore_ascii_case(suffix) {
        return false;
    }
    let needs_boundary = suffix
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    !needs_boundary
        || ci_build_id[..start]
            .chars()
            .next_back()
            .is_none_or(|c| !c.is_alphanumeric())
}

/// The workflow run of an event, for matching.
struct Workflow<'a> {
    repo: &'a str,
    run_id: u64,
    run_attempt: u64,
    head_branch: Option<&'a str>,
    head_sha: &'a str,
    completed_at: DateTime<Utc>,
}

fn belongs(config: &Config, opts: &OrphanOptions, run: &Run, wf: &Workflow) -> bool {
    if run.created_at > wf.completed_at {
        return false;
    }
    match opts.match_by {
        MatchBy::CiBuildId => {
            let suffix = fill_suffix(&opts.ci_build_id_suffix, wf.repo, wf.run_id, wf.run_attempt);
            run.meta
                .ci_build_id
                .as_deref()
                .is_some_and(|id| ends_with_suffix(id, &suffix))
        }
        MatchBy::Commit => {
            wf.head_branch.is_some()
                && run.branch() == wf.head_branch
                && run.sha() == Some(wf.head_sha)
                && run_repo(config, run).is_none_or(|r| r.eq_ignore_ascii_case(wf.repo.trim()))
        }
    }
}

/// The orphan decisions of one rule for one trigger, sorted by run `created_at`.
pub fn decide(
    config: &Config,
    rule: &Rule,
    opts: &OrphanOptions,
    trigger: &Trigger,
    view: &RunsView,
    now: DateTime<Utc>,
) -> Vec<Decision> {
    let Trigger::WorkflowRunCompleted {
        repo,
        run_id,
        run_attempt,
        head_branch,
        head_sha,
        completed_at,
        workflow_name,
        workflow_path,
    } = trigger
    else {
        return Vec::new();
    };
    if !opts.concerns_workflow(workflow_name.as_deref(), workflow_path.as_deref()) {
        return Vec::new();
    }
    let wf = Workflow {
        repo,
        run_id: *run_id,
        run_attempt: *run_attempt,
        head_branch: head_branch.as_deref(),
        head_sha,
        completed_at: *completed_at,
    };
    let not_before = chrono::Duration::from_std(opts.grace)
        .ok()
        .and_then(|g| completed_at.checked_add_signed(g))
        .unwrap_or(*completed_at);
    let found = view
        .runs
        .iter()
        .filter(|r| r.is_in_progress() && rule.filter.matches(r) && belongs(config, opts, r, &wf))
        .map(|r| {
            let how = match opts.match_by {
                MatchBy::CiBuildId => String::new(),
                MatchBy::Commit => format!(" for {} {}", head_branch.as_deref().unwrap_or(""), short_sha(head_sha)),
            };
            let reason = format!(
                "CI workflow run {repo}#{run_id} attempt {run_attempt}{how} completed at {}; run still in progress",
                clock(*completed_at, now)
            );
            let mut d = Decision::new(config, rule, Action::Cancel, r, reason);
            d.not_before = Some(not_before);
            (r, d)
        })
        .collect();
    finish(found)
}

/// Orphan rules act on `workflow_run` events only: describe what would make this run
/// an orphan. The caller has checked the filter.
pub fn explain(opts: &OrphanOptions, run: &Run) -> (bool, String) {
    if !run.is_in_progress() {
        return (false, not_in_progress(run));
    }
    let grace = super::human_duration(opts.grace);
    let how = match opts.match_by {
        MatchBy::CiBuildId => match run.meta.ci_build_id.as_deref() {
            Some(id) => format!(
                "one whose ci_build_id_suffix {:?} ends this run's ciBuildId {id:?}",
                opts.ci_build_id_suffix
            ),
            None => {
                return (
                    false,
                    "run has no ciBuildId to tie it to a workflow run".into(),
                );
            }
        },
        MatchBy::Commit => format!(
            "one of branch {} and sha {}",
            run.branch().unwrap_or("(none)"),
            short_sha(run.sha().unwrap_or("(none)"))
        ),
    };
    let which = match &opts.workflows {
        Some(list) => format!(" of workflows {}", list.patterns.join(", ")),
        None => String::new(),
    };
    (
        false,
        format!(
            "event-driven: applies when a workflow_run{which} completes ({how}) and the run is still in progress {grace} later"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffix_matching_respects_word_boundaries() {
        assert!(ends_with_suffix("acme/web-123-1", "acme/web-123-1"));
        assert!(ends_with_suffix("pr-acme/web-123-1", "acme/web-123-1"));
        assert!(ends_with_suffix("ACME/Web-123-1", "acme/web-123-1"));
        assert!(!ends_with_suffix("xacme/web-123-1", "acme/web-123-1"));
        assert!(ends_with_suffix("build-123-1", "123-1"));
        assert!(!ends_with_suffix("build-5123-1", "123-1"));
        // a suffix starting with punctuation carries its own boundary
        assert!(ends_with_suffix("build5-123-1", "-123-1"));
        assert!(!ends_with_suffix("acme/web-123-2", "acme/web-123-1"));
        assert!(!ends_with_suffix("1", "123-1"));
        assert!(!ends_with_suffix("abc", ""));
        assert!(!ends_with_suffix("ébc-1", "bc-1"));
    }
}
