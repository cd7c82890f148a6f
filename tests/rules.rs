//! The rules engine (SPEC §3, §4, §6): pure decisions from a trigger, the runs it
//! concerns and the time.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;
use runwarden::config::{Config, load_str};
use runwarden::currents::{CompletionState, Run, RunStatus};
use runwarden::rules::{
    Action, Breach, Decision, Evaluation, ProgressSnapshot, RunsView, Trigger, evaluate, explain,
    plan,
};

// ---------------------------------------------------------------------------------------
// Helpers

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap()
}

/// `t0 + m` minutes.
fn at(m: i64) -> DateTime<Utc> {
    t0() + chrono::Duration::minutes(m)
}

fn days(d: i64) -> DateTime<Utc> {
    t0() - chrono::Duration::days(d)
}

fn cfg(rules: &str) -> Config {
    cfg_with("", rules)
}

fn cfg_with(top: &str, rules: &str) -> Config {
    let text = format!("{top}\n[currents]\nprojects = [\"p1\", \"p2\"]\n\n{rules}");
    match load_str(&text, "rules.toml", &[]) {
        Ok(l) => l.config,
        Err(e) => panic!("{e}\n{text}"),
    }
}

/// An in-progress run of project `p1`, branch `feat/x`, from `https://github.com/acme/web`.
fn run(id: &str, created: DateTime<Utc>, sha: &str) -> Run {
    serde_json::from_value(serde_json::json!({
        "runId": id,
        "projectId": "p1",
        "createdAt": created,
        "completionState": "IN_PROGRESS",
        "status": "RUNNING",
        "groups": [{"groupId": "g", "instances": {"overall": 10, "claimed": 4, "complete": 2}}],
        "meta": {
            "ciBuildId": format!("acme/web-{id}-1"),
            "commit": {"sha": sha, "branch": "feat/x", "remoteOrigin": "https://github.com/acme/web.git"},
            "framework": {"type": "cypress"}
        }
    }))
    .unwrap()
}

fn with<F: FnOnce(&mut Run)>(mut r: Run, f: F) -> Run {
    f(&mut r);
    r
}

fn on_branch(r: Run, b: &str) -> Run {
    with(r, |r| r.meta.commit.branch = Some(b.into()))
}

fn done(r: Run, status: RunStatus) -> Run {
    with(r, |r| {
        r.completion_state = CompletionState::Complete;
        r.status = status;
    })
}

fn tagged(r: Run, tags: &[&str]) -> Run {
    with(r, |r| r.tags = tags.iter().map(|s| s.to_string()).collect())
}

fn progress(r: Run, complete: u64, overall: u64) -> Run {
    with(r, |r| {
        r.groups[0].instances.overall = overall;
        r.groups[0].instances.complete = complete;
    })
}

fn eval(config: &Config, trigger: &Trigger, runs: &[Run], now: DateTime<Utc>) -> Evaluation {
    evaluate(config, trigger, &RunsView::runs_only(runs), now)
}

fn cancelled(e: &Evaluation) -> Vec<&str> {
    e.decisions.iter().map(|d| d.run_id.as_str()).collect()
}

fn seen(r: &Run) -> Trigger {
    Trigger::RunSeen {
        run: r.clone(),
        event: None,
    }
}

fn push(branch: &str, sha: &str, when: DateTime<Utc>) -> Trigger {
    Trigger::Push {
        repo: "acme/web".into(),
        branch: branch.into(),
        head_sha: sha.into(),
        deleted: false,
        pushed_at: when,
    }
}

const SUPERSEDE: &str = "[[rules]]\nname = \"sup\"\nkind = \"supersede\"\n";

// ---------------------------------------------------------------------------------------
// supersede

#[test]
fn a_newer_run_of_another_commit_supersedes_the_older_in_progress_run() {
    let c = cfg(SUPERSEDE);
    let a = run("a", at(0), "1111111aaaa");
    let b = run("b", at(3), "9c1e2ab4444");
    let e = eval(&c, &seen(&b), &[a.clone(), b.clone()], at(5));
    assert_eq!(
        e.decisions,
        vec![Decision {
            rule: "sup".into(),
            kind: "supersede",
            action: Action::Cancel,
            run_id: "a".into(),
            project_id: "p1".into(),
            branch: Some("feat/x".into()),
            sha: Some("1111111aaaa".into()),
            reason: "superseded by run b (sha 9c1e2ab, created 12:03:00)".into(),
            dry_run: false,
            not_before: None,
        }]
    );
    assert!(e.breaches.is_empty());
}

#[test]
fn the_newest_run_of_a_group_is_never_cancelled() {
    let c = cfg(SUPERSEDE);
    let a = run("a", at(0), "s1");
    let b = run("b", at(3), "s2");
    // Seeing the older run again still leaves the newest alone.
    let e = eval(&c, &seen(&a), &[a.clone(), b.clone()], at(5));
    assert_eq!(cancelled(&e), vec!["a"]);
    // A lone run is never superseded.
    assert!(
        eval(&c, &seen(&b), std::slice::from_ref(&b), at(5))
            .decisions
            .is_empty()
    );
}

#[test]
fn a_newer_run_of_the_same_sha_supersedes_nothing() {
    let c = cfg(SUPERSEDE);
    let a = run("a", at(0), "s1");
    let b = run("b", at(3), "s1");
    assert!(
        eval(&c, &seen(&b), &[a, b.clone()], at(5))
            .decisions
            .is_empty()
    );
}

#[test]
fn runs_created_at_the_same_instant_do_not_supersede_each_other() {
    let c = cfg(SUPERSEDE);
    let a = run("a", at(0), "s1");
    let b = run("b", at(0), "s2");
    assert!(
        eval(&c, &seen(&b), &[a.clone(), b.clone()], at(5))
            .decisions
            .is_empty()
    );
    assert!(
        eval(&c, &Trigger::Tick, &[a, b], at(5))
            .decisions
            .is_empty()
    );
}

#[test]
fn a_run_without_a_sha_is_neither_superseded_nor_superseding() {
    let c = cfg(SUPERSEDE);
    let a = with(run("a", at(0), "s1"), |r| r.meta.commit.sha = None);
    let b = run("b", at(3), "s2");
    assert!(
        eval(&c, &seen(&b), &[a.clone(), b.clone()], at(5))
            .decisions
            .is_empty()
    );
    let a = run("a", at(0), "s1");
    let b = with(run("b", at(3), "s2"), |r| r.meta.commit.sha = None);
    assert!(
        eval(&c, &seen(&b), &[a, b.clone()], at(5))
            .decisions
            .is_empty()
    );
}

#[test]
fn only_in_progress_runs_are_superseded_and_finished_runs_still_supersede() {
    let c = cfg(SUPERSEDE);
    let a = done(run("a", at(0), "s1"), RunStatus::Failed);
    let b = run("b", at(3), "s2");
    assert!(
        eval(&c, &seen(&b), &[a, b.clone()], at(5))
            .decisions
            .is_empty()
    );
    // The newer run finished already: the older one is still superseded.
    let a = run("a", at(0), "s1");
    let b = done(run("b", at(3), "s2"), RunStatus::Passed);
    assert_eq!(
        cancelled(&eval(&c, &seen(&b), &[a, b.clone()], at(5))),
        vec!["a"]
    );
}

#[test]
fn runs_of_other_branches_or_projects_are_other_groups() {
    let c = cfg(SUPERSEDE);
    let a = run("a", at(0), "s1");
    let b = on_branch(run("b", at(3), "s2"), "feat/y");
    let c2 = with(run("c", at(4), "s3"), |r| r.project_id = "p2".into());
    let e = eval(&c, &Trigger::Tick, &[a, b, c2], at(5));
    assert!(e.decisions.is_empty(), "{e:?}");
}

#[test]
fn runs_without_a_branch_belong_to_no_group() {
    let c = cfg(SUPERSEDE);
    let a = with(run("a", at(0), "s1"), |r| r.meta.commit.branch = None);
    let b = with(run("b", at(3), "s2"), |r| r.meta.commit.branch = None);
    assert!(
        eval(&c, &Trigger::Tick, &[a, b], at(5))
            .decisions
            .is_empty()
    );
}

#[test]
fn group_by_tags_keeps_differently_tagged_runs_apart() {
    let c = cfg(&format!("{SUPERSEDE}group_by = [\"tags\"]\n"));
    let a = tagged(run("a", at(0), "s1"), &["chrome", "smoke"]);
    let b = tagged(run("b", at(3), "s2"), &["firefox", "smoke"]);
    assert!(
        eval(&c, &seen(&b), &[a.clone(), b.clone()], at(5))
            .decisions
            .is_empty()
    );
    // The same tags in another order are the same group.
    let b = tagged(run("b", at(3), "s2"), &["smoke", "chrome"]);
    assert_eq!(
        cancelled(&eval(&c, &seen(&b), &[a.clone(), b.clone()], at(5))),
        vec!["a"]
    );
    // Without group_by, tags do not matter.
    let c = cfg(SUPERSEDE);
    let b = tagged(run("b", at(3), "s2"), &["firefox"]);
    assert_eq!(
        cancelled(&eval(&c, &seen(&b), &[a, b.clone()], at(5))),
        vec!["a"]
    );
}

#[test]
fn group_by_framework_keeps_cypress_and_playwright_apart() {
    let c = cfg(&format!("{SUPERSEDE}group_by = [\"framework\"]\n"));
    let a = run("a", at(0), "s1");
    let b = with(run("b", at(3), "s2"), |r| {
        r.meta.framework.as_mut().unwrap().kind = Some("pw".into())
    });
    assert!(
        eval(&c, &seen(&b), &[a.clone(), b.clone()], at(5))
            .decisions
            .is_empty()
    );
    let b = with(run("b", at(3), "s2"), |r| {
        r.meta.framework.as_mut().unwrap().kind = Some("Cypress".into())
    });
    assert_eq!(
        cancelled(&eval(&c, &seen(&b), &[a, b.clone()], at(5))),
        vec!["a"]
    );
}

#[test]
fn a_branch_excluded_by_a_negated_glob_is_never_superseded() {
    let c = cfg(&format!(
        "{SUPERSEDE}[rules.match]\nbranches = [\"*\", \"!main\"]\n"
    ));
    let a = on_branch(run("a", at(0), "s1"), "main");
    let b = on_branch(run("b", at(3), "s2"), "main");
    assert!(
        eval(&c, &seen(&b), &[a, b.clone()], at(5))
            .decisions
            .is_empty()
    );
    let a = on_branch(run("a", at(0), "s1"), "feat/deep/x");
    let b = on_branch(run("b", at(3), "s2"), "feat/deep/x");
    assert_eq!(
        cancelled(&eval(&c, &seen(&b), &[a, b.clone()], at(5))),
        vec!["a"]
    );
}

#[test]
fn tag_mode_all_requires_every_pattern_and_none_excludes_any_match() {
    let all = cfg(&format!(
        "{SUPERSEDE}[rules.match]\ntags = [\"e2e\", \"nightly*\"]\ntag_mode = \"all\"\n"
    ));
    let none = cfg(&format!(
        "{SUPERSEDE}[rules.match]\ntags = [\"keep\"]\ntag_mode = \"none\"\n"
    ));
    let mk = |tags: &[&str]| {
        let a = tagged(run("a", at(0), "s1"), tags);
        let b = tagged(run("b", at(3), "s2"), tags);
        vec![a, b]
    };
    let both = mk(&["e2e", "nightly-2"]);
    let one = mk(&["e2e"]);
    assert_eq!(
        cancelled(&eval(&all, &Trigger::Tick, &both, at(5))),
        vec!["a"]
    );
    assert!(eval(&all, &Trigger::Tick, &one, at(5)).decisions.is_empty());
    assert_eq!(
        cancelled(&eval(&none, &Trigger::Tick, &one, at(5))),
        vec!["a"]
    );
    assert!(
        eval(&none, &Trigger::Tick, &mk(&["keep", "x"]), at(5))
            .decisions
            .is_empty()
    );
}

#[test]
fn the_filter_selects_the_superseding_run_too() {
    // A Playwright run does not supersede a Cypress run under a cypress-only rule.
    let c = cfg(&format!(
        "{SUPERSEDE}[rules.match]\nframeworks = [\"cypress\"]\n"
    ));
    let a = run("a", at(0), "s1");
    let b = with(run("b", at(3), "s2"), |r| {
        r.meta.framework.as_mut().unwrap().kind = Some("pw".into())
    });
    assert!(
        eval(&c, &seen(&b), &[a, b.clone()], at(5))
            .decisions
            .is_empty()
    );
}

#[test]
fn state_filters_pick_the_runs_to_cancel_not_the_newer_run_that_supersedes_them() {
    // "Cancel in-progress runs": a newer run that has finished already (failed fast)
    // still supersedes the older one (SPEC §4), under either state filter.
    for filter in [
        "completion_states = [\"IN_PROGRESS\"]",
        "statuses = [\"RUNNING\"]",
    ] {
        let c = cfg(&format!("{SUPERSEDE}[rules.match]\n{filter}\n"));
        let a = run("a", at(0), "s1");
        let b = done(run("b", at(3), "s2"), RunStatus::Failed);
        assert_eq!(
            cancelled(&eval(&c, &seen(&b), &[a.clone(), b.clone()], at(5))),
            vec!["a"],
            "{filter}"
        );
        assert_eq!(
            cancelled(&eval(&c, &Trigger::Tick, &[a.clone(), b.clone()], at(5))),
            vec!["a"],
            "{filter}"
        );
        let why = explained(&c, &a, std::slice::from_ref(&b), at(5));
        assert!(why[0].1, "{filter}: {why:?}");
        assert!(
            why[0].2.contains("superseded by run b"),
            "{filter}: {why:?}"
        );
        // The newer run itself is finished: the filter leaves it alone.
        let why = explained(&c, &b, std::slice::from_ref(&a), at(5));
        assert!(!why[0].1, "{filter}: {why:?}");
    }
}

#[test]
fn spare_if_progress_at_least_spares_nearly_finished_runs() {
    let c = cfg(&format!("{SUPERSEDE}spare_if_progress_at_least = 0.8\n"));
    let b = run("b", at(3), "s2");
    let near = progress(run("a", at(0), "s1"), 8, 10);
    assert!(
        eval(&c, &seen(&b), &[near.clone(), b.clone()], at(5))
            .decisions
            .is_empty()
    );
    let far = progress(run("a", at(0), "s1"), 7, 10);
    assert_eq!(
        cancelled(&eval(&c, &seen(&b), &[far, b.clone()], at(5))),
        vec!["a"]
    );
    // Also for pushes and branch deletions.
    assert!(
        eval(
            &c,
            &push("feat/x", "s9", at(4)),
            std::slice::from_ref(&near),
            at(5)
        )
        .decisions
        .is_empty()
    );
}

#[test]
fn a_push_of_another_sha_supersedes_older_runs_of_the_branch() {
    let c = cfg(SUPERSEDE);
    let a = run("a", at(0), "s1");
    let other = on_branch(run("o", at(0), "s1"), "feat/y");
    let p = push("feat/x", "9c1e2ab77", at(3) + chrono::Duration::seconds(11));
    let e = eval(&c, &p, &[a, other], at(5));
    assert_eq!(cancelled(&e), vec!["a"]);
    assert_eq!(
        e.decisions[0].reason,
        "superseded by push of 9c1e2ab to feat/x at 12:03:11"
    );
    // refs/heads/ prefixes are tolerated
    let e = eval(
        &c,
        &push("refs/heads/feat/x", "s2", at(3)),
        &[run("a", at(0), "s1")],
        at(5),
    );
    assert_eq!(cancelled(&e), vec!["a"]);
}

#[test]
fn a_push_older_than_the_run_or_of_its_own_sha_is_ignored() {
    let c = cfg(SUPERSEDE);
    let a = run("a", at(2), "s1");
    assert!(
        eval(
            &c,
            &push("feat/x", "s2", at(1)),
            std::slice::from_ref(&a),
            at(5)
        )
        .decisions
        .is_empty()
    );
    assert!(
        eval(
            &c,
            &push("feat/x", "s2", at(2)),
            std::slice::from_ref(&a),
            at(5)
        )
        .decisions
        .is_empty()
    );
    assert!(
        eval(&c, &push("feat/x", "s1", at(3)), &[a], at(5))
            .decisions
            .is_empty()
    );
}

#[test]
fn on_push_false_ignores_pushes() {
    let c = cfg(&format!("{SUPERSEDE}on_push = false\n"));
    let a = run("a", at(0), "s1");
    assert!(
        eval(&c, &push("feat/x", "s2", at(3)), &[a], at(5))
            .decisions
            .is_empty()
    );
}

#[test]
fn a_push_concerns_runs_of_its_repository_only() {
    // No mapping: remoteOrigin decides, in any of its forms.
    let c = cfg(SUPERSEDE);
    let a = run("a", at(0), "s1");
    let ssh = with(run("s", at(0), "s1"), |r| {
        r.meta.commit.remote_origin = Some("git@github.com:Acme/Web.git".into())
    });
    let other = with(run("o", at(0), "s1"), |r| {
        r.meta.commit.remote_origin = Some("https://github.com/acme/api".into())
    });
    let none = with(run("n", at(0), "s1"), |r| {
        r.meta.commit.remote_origin = None
    });
    let e = eval(
        &c,
        &push("feat/x", "s2", at(3)),
        &[a, ssh, other, none],
        at(5),
    );
    assert_eq!(cancelled(&e), vec!["a", "s"]);
    // A mapping is authoritative for its project, whatever remoteOrigin says.
    let c = cfg_with(
        "",
        &format!("[github]\nrepos = {{ p1 = \"acme/api\" }}\n\n{SUPERSEDE}"),
    );
    let a = run("a", at(0), "s1");
    let b = with(run("b", at(0), "s1"), |r| r.project_id = "p2".into());
    let p = Trigger::Push {
        repo: "Acme/API".into(),
        branch: "feat/x".into(),
        head_sha: "s2".into(),
        deleted: false,
        pushed_at: at(3),
    };
    assert_eq!(
        cancelled(&eval(&c, &p, &[a.clone(), b.clone()], at(5))),
        vec!["a"]
    );
    // ... and p2 (unmapped) still goes by its remoteOrigin.
    assert_eq!(
        cancelled(&eval(&c, &push("feat/x", "s2", at(3)), &[a, b], at(5))),
        vec!["b"]
    );
    assert_eq!(
        runwarden::rules::projects_for_repo(&c, "acme/web"),
        vec!["p2"]
    );
    assert_eq!(
        runwarden::rules::projects_for_repo(&c, "acme/api"),
        vec!["p1", "p2"]
    );
}

#[test]
fn deleting_a_branch_cancels_its_in_progress_runs() {
    let c = cfg(SUPERSEDE);
    let a = run("a", at(0), "s1");
    let b = run("b", at(1), "s2");
    let finished = done(run("f", at(0), "s1"), RunStatus::Passed);
    let later = run("late", at(10), "s3");
    let other = on_branch(run("o", at(0), "s1"), "feat/y");
    let del = Trigger::Push {
        repo: "acme/web".into(),
        branch: "feat/x".into(),
        head_sha: "0000000000000000000000000000000000000000".into(),
        deleted: true,
        pushed_at: at(5),
    };
    let e = eval(&c, &del, &[b, a, finished, later, other], at(6));
    assert_eq!(cancelled(&e), vec!["a", "b"]);
    assert_eq!(e.decisions[0].reason, "branch feat/x deleted");
    let off = cfg(&format!("{SUPERSEDE}on_branch_deleted = false\n"));
    assert!(
        eval(&off, &del, &[run("a", at(0), "s1")], at(6))
            .decisions
            .is_empty()
    );
}

#[test]
fn closing_a_pull_request_cancels_the_runs_of_its_branch() {
    let c = cfg(SUPERSEDE);
    let pr = Trigger::PullRequestClosed {
        repo: "acme/web".into(),
        branch: "feat/x".into(),
        number: 12,
        closed_at: at(5),
    };
    let e = eval(
        &c,
        &pr,
        &[run("a", at(0), "s1"), run("b", at(1), "s1")],
        at(6),
    );
    assert_eq!(cancelled(&e), vec!["a", "b"]);
    assert_eq!(e.decisions[1].reason, "pull request #12 closed");
    let off = cfg(&format!("{SUPERSEDE}on_branch_deleted = false\n"));
    assert!(
        eval(&off, &pr, &[run("a", at(0), "s1")], at(6))
            .decisions
            .is_empty()
    );
}

#[test]
fn a_poll_reconciles_supersession_among_all_in_progress_runs() {
    let c = cfg(SUPERSEDE);
    let runs = vec![
        run("a", at(0), "s1"),
        run("b", at(1), "s2"),
        run("c", at(2), "s3"),
        on_branch(run("y1", at(0), "s1"), "feat/y"),
        on_branch(run("y2", at(1), "s1"), "feat/y"),
    ];
    let e = eval(&c, &Trigger::Tick, &runs, at(5));
    assert_eq!(cancelled(&e), vec!["a", "b"]);
    assert!(
        e.decisions
            .iter()
            .all(|d| d.reason.starts_with("superseded by run c "))
    );
}

#[test]
fn supersede_ignores_events_it_does_not_handle() {
    let c = cfg(SUPERSEDE);
    let runs = vec![run("a", at(0), "s1"), run("b", at(1), "s2")];
    for tr in [
        Trigger::RetentionSweep { rule: "sup".into() },
        Trigger::WorkflowRunCompleted {
            repo: "acme/web".into(),
            run_id: 1,
            run_attempt: 1,
            head_branch: Some("feat/x".into()),
            head_sha: "s1".into(),
            completed_at: at(3),
            workflow_name: None,
            workflow_path: None,
        },
    ] {
        assert!(eval(&c, &tr, &runs, at(5)).decisions.is_empty());
    }
}

// ---------------------------------------------------------------------------------------
// timeout

#[test]
fn a_run_longer_than_max_duration_is_cancelled() {
    let c = cfg("[[rules]]\nname = \"to\"\nkind = \"timeout\"\nmax_duration = \"45m\"\n");
    let a = run("a", at(0), "s1");
    let e = eval(&c, &Trigger::Tick, std::slice::from_ref(&a), at(52));
    assert_eq!(cancelled(&e), vec!["a"]);
    assert_eq!(e.decisions[0].reason, "in progress 52m > max_duration 45m");
    assert_eq!(e.decisions[0].kind, "timeout");
    // exactly at the limit: not longer
    assert!(
        eval(&c, &Trigger::Tick, std::slice::from_ref(&a), at(45))
            .decisions
            .is_empty()
    );
    // finished runs never
    let f = done(a, RunStatus::Failed);
    assert!(eval(&c, &Trigger::Tick, &[f], at(500)).decisions.is_empty());
}

#[test]
fn a_seen_run_is_checked_on_its_event() {
    let c = cfg("[[rules]]\nname = \"to\"\nkind = \"timeout\"\nmax_duration = \"45m\"\n");
    let a = run("a", at(0), "s1");
    let old = run("old", at(-100), "s0");
    // The event checks its run (not the others; the poll does).
    let e = eval(&c, &seen(&a), std::slice::from_ref(&old), at(52));
    assert_eq!(cancelled(&e), vec!["a"]);
    let e = eval(&c, &Trigger::Tick, &[a, old], at(52));
    assert_eq!(cancelled(&e), vec!["old", "a"]);
}

#[test]
fn idle_for_measures_time_since_the_last_completed_spec() {
    let c = cfg("[[rules]]\nname = \"idle\"\nkind = \"timeout\"\nidle_for = \"20m\"\n");
    let a = run("a", at(0), "s1");
    let mut snaps = HashMap::new();
    snaps.insert(
        "a".to_string(),
        ProgressSnapshot {
            completed_specs: 2,
            changed_at: at(10),
        },
    );
    let hist = HashMap::new();
    let runs = [a.clone()];
    let view = RunsView::new(&runs, &snaps, &hist);
    let e = evaluate(&c, &Trigger::Tick, &view, at(31));
    assert_eq!(cancelled(&e), vec!["a"]);
    assert_eq!(
        e.decisions[0].reason,
        "no spec completed for 21m > idle_for 20m"
    );
    assert!(
        evaluate(&c, &Trigger::Tick, &view, at(29))
            .decisions
            .is_empty()
    );
    // Without a snapshot and with specs already done, progress is unknown: no decision.
    assert!(
        eval(&c, &Trigger::Tick, std::slice::from_ref(&a), at(500))
            .decisions
            .is_empty()
    );
    // A run that has completed nothing since its creation is idle since then.
    let z = progress(a, 0, 10);
    let e = eval(&c, &Trigger::Tick, &[z], at(21));
    assert_eq!(
        e.decisions[0].reason,
        "no spec completed for 21m > idle_for 20m"
    );
}

#[test]
fn idle_snapshots_come_from_update_progress() {
    let a = run("a", at(0), "s1");
    let s1 = runwarden::rules::update_progress(None, &a, at(1));
    let s2 = runwarden::rules::update_progress(Some(&s1), &a, at(30));
    assert_eq!(s2.changed_at, at(1));
    let s3 = runwarden::rules::update_progress(Some(&s2), &progress(a, 3, 10), at(31));
    assert_eq!((s3.completed_specs, s3.changed_at), (3, at(31)));
}

#[test]
fn both_breached_conditions_are_given_as_the_reason() {
    let c = cfg(
        "[[rules]]\nname = \"to\"\nkind = \"timeout\"\nmax_duration = \"45m\"\nidle_for = \"20m\"\n",
    );
    let z = progress(run("a", at(0), "s1"), 0, 10);
    let e = eval(&c, &Trigger::Tick, &[z], at(52));
    assert_eq!(
        e.decisions[0].reason,
        "in progress 52m > max_duration 45m; no spec completed for 52m > idle_for 20m"
    );
}

const AUTO: &str =
    "[[rules]]\nname = \"auto\"\nkind = \"timeout\"\nmax_duration = \"auto\"\nfallback = \"45m\"\n";

fn history(n: usize, secs: u64) -> HashMap<String, Vec<Duration>> {
    let mut h = HashMap::new();
    h.insert("p1:feat/x".to_string(), vec![Duration::from_secs(secs); n]);
    h
}

#[test]
fn auto_with_fewer_than_ten_passed_runs_uses_the_fallback() {
    let c = cfg(AUTO);
    let runs = [run("a", at(0), "s1")];
    let (p, h) = (HashMap::new(), history(4, 600));
    let e = evaluate(&c, &Trigger::Tick, &RunsView::new(&runs, &p, &h), at(52));
    assert_eq!(
        e.decisions[0].reason,
        "in progress 52m > auto limit 45m (fallback: 4 passed runs, fewer than 10)"
    );
    assert!(
        evaluate(&c, &Trigger::Tick, &RunsView::new(&runs, &p, &h), at(44))
            .decisions
            .is_empty()
    );
}

#[test]
fn auto_derives_the_limit_from_the_p95_of_passed_runs() {
    let c = cfg(AUTO);
    let runs = [run("a", at(0), "s1")];
    let (p, h) = (HashMap::new(), history(23, 13 * 60 + 40));
    let e = evaluate(&c, &Trigger::Tick, &RunsView::new(&runs, &p, &h), at(52));
    assert_eq!(
        e.decisions[0].reason,
        "in progress 52m > auto limit 41m (3 × p95 13m40s of 23 passed runs)"
    );
    // 40m < 41m: within the limit, although past the fallback.
    assert!(
        evaluate(&c, &Trigger::Tick, &RunsView::new(&runs, &p, &h), at(40))
            .decisions
            .is_empty()
    );
    // auto_factor
    let c = cfg(&format!("{AUTO}auto_factor = 1.5\n"));
    let e = evaluate(&c, &Trigger::Tick, &RunsView::new(&runs, &p, &h), at(21));
    assert_eq!(
        e.decisions[0].reason,
        "in progress 21m > auto limit 20m30s (1.5 × p95 13m40s of 23 passed runs)"
    );
}

#[test]
fn auto_history_is_per_project_and_branch() {
    let c = cfg(AUTO);
    let runs = [on_branch(run("a", at(0), "s1"), "feat/y")];
    let (p, h) = (HashMap::new(), history(23, 60));
    // feat/y has no history: the fallback (45m) applies, not 3 × 1m.
    assert!(
        evaluate(&c, &Trigger::Tick, &RunsView::new(&runs, &p, &h), at(30))
            .decisions
            .is_empty()
    );
}

#[test]
fn auto_without_a_fallback_sets_no_limit_until_ten_passed_runs() {
    let c = cfg("[[rules]]\nname = \"auto\"\nkind = \"timeout\"\nmax_duration = \"auto\"\n");
    let runs = [run("a", at(0), "s1")];
    let (p, h) = (HashMap::new(), history(9, 60));
    assert!(
        evaluate(&c, &Trigger::Tick, &RunsView::new(&runs, &p, &h), at(600))
            .decisions
            .is_empty()
    );
    let h = history(10, 60);
    let e = evaluate(&c, &Trigger::Tick, &RunsView::new(&runs, &p, &h), at(4));
    assert_eq!(
        e.decisions[0].reason,
        "in progress 4m > auto limit 3m (3 × p95 1m of 10 passed runs)"
    );
}

#[test]
fn build_history_keeps_the_newest_fifty_passed_durations_per_branch() {
    let mut runs = Vec::new();
    for i in 0..60 {
        let r = with(
            done(run(&format!("r{i:02}"), at(i), "s"), RunStatus::Passed),
            |r| r.duration_ms = Some(1000 * (i as u64 + 1)),
        );
        runs.push(r);
    }
    runs.push(with(done(run("f", at(100), "s"), RunStatus::Failed), |r| {
        r.duration_ms = Some(5)
    }));
    runs.push(run("ip", at(101), "s"));
    let h = runwarden::rules::build_history(&runs);
    let v = &h["p1:feat/x"];
    assert_eq!(v.len(), 50);
    assert_eq!(v[0], Duration::from_secs(60));
    assert_eq!(v[49], Duration::from_secs(11));
}

// ---------------------------------------------------------------------------------------
// orphan

const ORPHAN: &str = "[[rules]]\nname = \"orph\"\nkind = \"orphan\"\n";

fn wf_done(run_id: u64, attempt: u64, completed: DateTime<Utc>) -> Trigger {
    Trigger::WorkflowRunCompleted {
        repo: "acme/web".into(),
        run_id,
        run_attempt: attempt,
        head_branch: Some("feat/x".into()),
        head_sha: "s1".into(),
        completed_at: completed,
        workflow_name: None,
        workflow_path: None,
    }
}

#[test]
fn an_orphan_is_matched_by_its_ci_build_id_suffix_and_waits_for_grace() {
    let c = cfg(ORPHAN);
    let mine = with(run("a", at(-10), "s1"), |r| {
        r.meta.ci_build_id = Some("acme/web-123-1".into())
    });
    let other_attempt = with(run("b", at(-10), "s1"), |r| {
        r.meta.ci_build_id = Some("acme/web-123-2".into())
    });
    let other_run = with(run("c", at(-10), "s1"), |r| {
        r.meta.ci_build_id = Some("acme/web-5123-1".into())
    });
    let finished = done(
        with(run("d", at(-10), "s1"), |r| {
            r.meta.ci_build_id = Some("acme/web-123-1".into())
        }),
        RunStatus::Passed,
    );
    let e = eval(
        &c,
        &wf_done(123, 1, at(0)),
        &[mine, other_attempt, other_run, finished],
        at(0),
    );
    assert_eq!(cancelled(&e), vec!["a"]);
    let d = &e.decisions[0];
    assert_eq!(d.kind, "orphan");
    assert_eq!(
        d.reason,
        "CI workflow run acme/web#123 attempt 1 completed at 12:00:00; run still in progress"
    );
    assert_eq!(d.not_before, Some(at(2)));
}

#[test]
fn orphan_grace_and_suffix_template_are_configurable() {
    let c = cfg(&format!(
        "{ORPHAN}grace = \"10m\"\nci_build_id_suffix = \"{{run_id}}.{{run_attempt}}\"\n"
    ));
    let a = with(run("a", at(-10), "s1"), |r| {
        r.meta.ci_build_id = Some("build-77.3".into())
    });
    let e = eval(&c, &wf_done(77, 3, at(0)), &[a], at(0));
    assert_eq!(cancelled(&e), vec!["a"]);
    assert_eq!(e.decisions[0].not_before, Some(at(10)));
}

#[test]
fn orphan_match_by_commit_compares_branch_and_sha() {
    let c = cfg(&format!("{ORPHAN}match_by = \"commit\"\n"));
    let same = run("a", at(-10), "s1");
    let other_sha = run("b", at(-10), "s2");
    let other_branch = on_branch(run("c", at(-10), "s1"), "feat/y");
    let other_repo = with(run("d", at(-10), "s1"), |r| {
        r.meta.commit.remote_origin = Some("https://github.com/acme/api".into())
    });
    // A re-run's new Currents run, created after the workflow completed, is no orphan.
    let rerun = run("e", at(1), "s1");
    let e = eval(
        &c,
        &wf_done(9, 1, at(0)),
        &[same, other_sha, other_branch, other_repo, rerun],
        at(2),
    );
    assert_eq!(cancelled(&e), vec!["a"]);
    assert!(
        e.decisions[0]
            .reason
            .contains(" for feat/x s1 completed at 12:00:00"),
        "{}",
        e.decisions[0].reason
    );
}

#[test]
fn orphan_workflows_limit_the_rule_to_the_workflows_listed_by_name_or_file() {
    let c = cfg(&format!(
        "{ORPHAN}match_by = \"commit\"\nworkflows = [\"E2E*\", \"nightly.yml\", \"!E2E (manual)\"]\n"
    ));
    let runs = [run("a", at(-10), "s1")];
    let of = |name: Option<&str>, path: Option<&str>| {
        let mut t = wf_done(9, 1, at(0));
        if let Trigger::WorkflowRunCompleted {
            workflow_name,
            workflow_path,
            ..
        } = &mut t
        {
            *workflow_name = name.map(Into::into);
            *workflow_path = path.map(Into::into);
        }
        let e = eval(&c, &t, &runs, at(2));
        cancelled(&e)
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
    };
    // By the workflow's name, or by its file's name.
    assert_eq!(
        of(Some("E2E tests"), Some(".github/workflows/e2e.yml")),
        vec!["a"]
    );
    assert_eq!(
        of(Some("Nightly"), Some(".github/workflows/nightly.yml")),
        vec!["a"]
    );
    // A lint workflow of the same commit completing early orphans nothing.
    assert!(of(Some("Lint"), Some(".github/workflows/lint.yml")).is_empty());
    // Excluded by name even though an inclusion matches.
    assert!(of(Some("E2E (manual)"), Some(".github/workflows/e2e.yml")).is_empty());
    // A workflow known by neither name nor file is not one of those listed.
    assert!(of(None, None).is_empty());
    // Without `workflows`, every workflow of the commit counts, the lint job too.
    let any = cfg(&format!("{ORPHAN}match_by = \"commit\"\n"));
    let mut lint = wf_done(9, 1, at(0));
    if let Trigger::WorkflowRunCompleted { workflow_name, .. } = &mut lint {
        *workflow_name = Some("Lint".into());
    }
    assert_eq!(cancelled(&eval(&any, &lint, &runs, at(2))), vec!["a"]);
}

// ---------------------------------------------------------------------------------------
// retention

fn retention(extra: &str) -> Config {
    cfg(&format!(
        "[[rules]]\nname = \"ret\"\nkind = \"retention\"\nschedule = \"0 3 * * *\"\nolder_than = \"30d\"\n{extra}"
    ))
}

fn sweep() -> Trigger {
    Trigger::RetentionSweep { rule: "ret".into() }
}

fn old(id: &str, age_days: i64, status: RunStatus) -> Run {
    done(run(id, days(age_days), "s"), status)
}

#[test]
fn retention_deletes_finished_runs_older_than_older_than() {
    let c = retention("");
    let runs = vec![
        old("young", 29, RunStatus::Passed),
        old("old", 41, RunStatus::Failed),
        with(old("canceled", 60, RunStatus::Failed), |r| {
            r.completion_state = CompletionState::Canceled
        }),
        with(old("timeout", 61, RunStatus::Failed), |r| {
            r.completion_state = CompletionState::Timeout
        }),
    ];
    let e = eval(&c, &sweep(), &runs, t0());
    assert_eq!(cancelled(&e), vec!["timeout", "canceled", "old"]);
    assert!(
        e.decisions
            .iter()
            .all(|d| d.action == Action::Delete && d.kind == "retention")
    );
    assert_eq!(e.decisions[2].reason, "created 41d ago > older_than 30d");
}

#[test]
fn retention_never_deletes_in_progress_or_unknown_runs() {
    let c = retention("");
    let runs = vec![
        run("ip", days(90), "s"),
        with(old("unknown", 90, RunStatus::Passed), |r| {
            r.completion_state = CompletionState::Unknown("WEIRD".into())
        }),
    ];
    assert!(eval(&c, &sweep(), &runs, t0()).decisions.is_empty());
}

#[test]
fn keep_latest_keeps_the_newest_runs_of_each_project_and_branch() {
    let c = retention("keep_latest = 3\n");
    let mut runs: Vec<Run> = (0..5)
        .map(|i| old(&format!("x{i}"), 40 + i, RunStatus::Failed))
        .collect();
    runs.push(on_branch(old("y0", 50, RunStatus::Failed), "feat/y"));
    runs.push(with(old("p2", 50, RunStatus::Failed), |r| {
        r.project_id = "p2".into()
    }));
    // An in-progress run takes no slot.
    runs.push(run("ip", days(1), "s"));
    let e = eval(&c, &sweep(), &runs, t0());
    assert_eq!(cancelled(&e), vec!["x4", "x3"]);
    assert_eq!(
        e.decisions[1].reason,
        "created 43d ago > older_than 30d; not among the 3 newest on feat/x"
    );
}

#[test]
fn keep_last_passed_keeps_the_newest_passed_run_of_each_branch() {
    let c = retention("keep_last_passed = true\n");
    let runs = vec![
        old("f1", 40, RunStatus::Failed),
        old("p1", 45, RunStatus::Passed),
        old("p0", 50, RunStatus::Passed),
        // canceled but passed so far: not a passed run
        with(old("cp", 35, RunStatus::Passed), |r| {
            r.completion_state = CompletionState::Canceled
        }),
    ];
    let e = eval(&c, &sweep(), &runs, t0());
    assert_eq!(cancelled(&e), vec!["p0", "f1", "cp"]);
    assert!(
        e.decisions[0]
            .reason
            .ends_with("; not the newest passed run on feat/x")
    );
}

#[test]
fn pinned_runs_are_never_deleted() {
    let c = retention("pin_tags = [\"release*\", \"keep\"]\n");
    let runs = vec![
        tagged(old("r", 400, RunStatus::Passed), &["x", "release-1.2"]),
        tagged(old("k", 400, RunStatus::Passed), &["keep"]),
        tagged(old("n", 400, RunStatus::Passed), &["kept"]),
    ];
    assert_eq!(cancelled(&eval(&c, &sweep(), &runs, t0())), vec!["n"]);
}

#[test]
fn the_retention_breaker_is_all_or_nothing() {
    let c = retention("max_deletions = 2\n");
    let three: Vec<Run> = (0..3)
        .map(|i| old(&format!("o{i}"), 40 + i, RunStatus::Passed))
        .collect();
    let e = eval(&c, &sweep(), &three, t0());
    assert!(e.decisions.is_empty());
    assert_eq!(
        e.breaches,
        vec![Breach {
            rule: "ret".into(),
            would_delete: 3,
            max: 2
        }]
    );
    assert_eq!(
        e.breaches[0].to_string(),
        "rule \"ret\" would delete 3 runs > max_deletions 2; deleted none"
    );
    // exactly max_deletions: allowed
    let e = eval(&c, &sweep(), &three[..2], t0());
    assert_eq!(e.decisions.len(), 2);
    assert!(e.breaches.is_empty());
}

#[test]
fn retention_acts_only_when_its_own_schedule_fires() {
    let c = retention("");
    let runs = vec![old("o", 40, RunStatus::Passed)];
    assert!(eval(&c, &Trigger::Tick, &runs, t0()).decisions.is_empty());
    assert!(
        eval(
            &c,
            &Trigger::RetentionSweep {
                rule: "other".into()
            },
            &runs,
            t0()
        )
        .decisions
        .is_empty()
    );
    assert!(eval(&c, &seen(&runs[0]), &runs, t0()).decisions.is_empty());
}

#[test]
fn the_retention_filter_selects_the_runs_and_the_keep_counts() {
    let c = retention("keep_latest = 1\n[rules.match]\nstatuses = [\"failed\"]\n");
    let runs = vec![
        old("pass", 40, RunStatus::Passed),
        old("f1", 41, RunStatus::Failed),
        old("f2", 42, RunStatus::Failed),
    ];
    assert_eq!(cancelled(&eval(&c, &sweep(), &runs, t0())), vec!["f2"]);
}

// ---------------------------------------------------------------------------------------
// summary

#[test]
fn a_summary_rule_summarizes_its_events_of_matching_runs() {
    let c = cfg(
        "[[rules]]\nname = \"sum\"\nkind = \"summary\"\n[rules.match]\nbranches = [\"feat/*\"]\n",
    );
    let r = done(run("a", at(0), "s1"), RunStatus::Failed);
    let ev = |e: Option<&str>, r: &Run| Trigger::RunSeen {
        run: r.clone(),
        event: e.map(str::to_string),
    };
    let e = eval(&c, &ev(Some("RUN_FINISH"), &r), &[], at(1));
    assert_eq!(e.decisions.len(), 1);
    assert_eq!(e.decisions[0].action, Action::Summarize);
    assert_eq!(e.decisions[0].kind, "summary");
    assert_eq!(e.decisions[0].reason, "run event RUN_FINISH");
    // RUN_CANCELLED spelling, lowercase
    assert_eq!(
        eval(&c, &ev(Some("run_cancelled"), &r), &[], at(1))
            .decisions
            .len(),
        1
    );
    // RUN_START is not in the default events; polls carry no event.
    assert!(
        eval(&c, &ev(Some("RUN_START"), &r), &[], at(1))
            .decisions
            .is_empty()
    );
    assert!(eval(&c, &ev(None, &r), &[], at(1)).decisions.is_empty());
    // the filter
    let main = on_branch(r.clone(), "main");
    assert!(
        eval(&c, &ev(Some("RUN_FINISH"), &main), &[], at(1))
            .decisions
            .is_empty()
    );
    // configured events
    let c = cfg("[[rules]]\nname = \"sum\"\nkind = \"summary\"\nevents = [\"RUN_START\"]\n");
    assert_eq!(
        eval(&c, &ev(Some("RUN_START"), &r), &[], at(1))
            .decisions
            .len(),
        1
    );
    assert!(
        eval(&c, &ev(Some("RUN_FINISH"), &r), &[], at(1))
            .decisions
            .is_empty()
    );
}

// ---------------------------------------------------------------------------------------
// dry run, several rules, order, plan

#[test]
fn dry_run_comes_from_the_rule_else_the_global_setting() {
    let rules = format!(
        "{SUPERSEDE}\n[[rules]]\nname = \"sup-wet\"\nkind = \"supersede\"\ndry_run = false\n\n[[rules]]\nname = \"sup-dry\"\nkind = \"supersede\"\ndry_run = true\n"
    );
    let runs = vec![run("a", at(0), "s1"), run("b", at(1), "s2")];
    let dry = |c: &Config| -> Vec<(String, bool)> {
        eval(c, &Trigger::Tick, &runs, at(5))
            .decisions
            .into_iter()
            .map(|d| (d.rule, d.dry_run))
            .collect()
    };
    assert_eq!(
        dry(&cfg_with("dry_run = true", &rules)),
        vec![
            ("sup".into(), true),
            ("sup-wet".into(), false),
            ("sup-dry".into(), true)
        ]
    );
    assert_eq!(
        dry(&cfg(&rules)),
        vec![
            ("sup".into(), false),
            ("sup-wet".into(), false),
            ("sup-dry".into(), true)
        ]
    );
}

#[test]
fn every_rule_deciding_on_the_same_run_is_reported_in_rule_order() {
    let c = cfg(&format!(
        "[[rules]]\nname = \"to\"\nkind = \"timeout\"\nmax_duration = \"45m\"\n\n{SUPERSEDE}"
    ));
    let runs = vec![
        run("b", at(1), "s2"),
        run("a", at(0), "s1"),
        run("c", at(2), "s3"),
    ];
    let e = eval(&c, &Trigger::Tick, &runs, at(50));
    let got: Vec<(&str, &str)> = e
        .decisions
        .iter()
        .map(|d| (d.rule.as_str(), d.run_id.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("to", "a"),
            ("to", "b"),
            ("to", "c"),
            ("sup", "a"),
            ("sup", "b")
        ]
    );
}

#[test]
fn a_run_listed_twice_gets_one_decision_per_rule() {
    let c = cfg(SUPERSEDE);
    let a = run("a", at(0), "s1");
    let b = run("b", at(1), "s2");
    let e = eval(
        &c,
        &Trigger::Tick,
        &[a.clone(), b.clone(), a.clone()],
        at(5),
    );
    assert_eq!(cancelled(&e), vec!["a"]);
    let e = eval(&c, &seen(&b), &[a.clone(), b.clone(), b], at(5));
    assert_eq!(cancelled(&e), vec!["a"]);
}

#[test]
fn plan_evaluates_supersede_timeout_and_retention_now_but_not_event_rules() {
    let c = cfg(&format!(
        "{SUPERSEDE}\n[[rules]]\nname = \"to\"\nkind = \"timeout\"\nmax_duration = \"45m\"\n\n\
         [[rules]]\nname = \"ret\"\nkind = \"retention\"\nschedule = \"0 3 * * *\"\nolder_than = \"30d\"\n\n\
         [[rules]]\nname = \"orph\"\nkind = \"orphan\"\n\n[[rules]]\nname = \"sum\"\nkind = \"summary\"\n"
    ));
    let runs = vec![
        run("a", at(0), "s1"),
        done(run("b", at(1), "s2"), RunStatus::Passed),
        run("slow", at(-60), "s0"),
        done(run("ancient", days(40), "s0"), RunStatus::Failed),
    ];
    let e = plan(&c, &RunsView::runs_only(&runs), at(5));
    let got: Vec<(&str, &str, Action)> = e
        .decisions
        .iter()
        .map(|d| (d.rule.as_str(), d.run_id.as_str(), d.action))
        .collect();
    assert_eq!(
        got,
        vec![
            ("sup", "slow", Action::Cancel),
            ("sup", "a", Action::Cancel),
            ("to", "slow", Action::Cancel),
            ("ret", "ancient", Action::Delete),
        ]
    );
}

#[test]
fn plan_reports_retention_breaches() {
    let c = retention("max_deletions = 0\n");
    let runs = vec![old("o", 40, RunStatus::Passed)];
    let e = plan(&c, &RunsView::runs_only(&runs), t0());
    assert!(e.decisions.is_empty());
    assert_eq!(e.breaches.len(), 1);
}

#[test]
fn decisions_serialize_for_plan_and_the_store() {
    let c = cfg(ORPHAN);
    let a = with(run("a", at(-10), "s1"), |r| {
        r.meta.ci_build_id = Some("acme/web-1-1".into())
    });
    let e = eval(&c, &wf_done(1, 1, at(0)), &[a], at(0));
    let v = serde_json::to_value(&e).unwrap();
    let d = &v["decisions"][0];
    assert_eq!(d["action"], "cancel");
    assert_eq!(d["kind"], "orphan");
    assert_eq!(d["branch"], "feat/x");
    assert_eq!(d["not_before"], "2026-03-01T12:02:00Z");
    let t = serde_json::to_value(wf_done(1, 1, at(0))).unwrap();
    assert_eq!(t["type"], "workflow_run_completed");
    let back: Trigger = serde_json::from_value(t).unwrap();
    assert_eq!(back, wf_done(1, 1, at(0)));
}

// ---------------------------------------------------------------------------------------
// explain

fn explained(
    c: &Config,
    r: &Run,
    others: &[Run],
    now: DateTime<Utc>,
) -> Vec<(String, bool, String)> {
    explain(c, r, &RunsView::runs_only(others), now)
        .into_iter()
        .map(|e| (e.rule, e.applies, e.detail))
        .collect()
}

#[test]
fn explain_names_the_failing_condition_of_each_rule() {
    let c = cfg(&format!(
        "{SUPERSEDE}[rules.match]\nbranches = [\"*\", \"!main\"]\n\n\
         [[rules]]\nname = \"to\"\nkind = \"timeout\"\nmax_duration = \"45m\"\n\n\
         [[rules]]\nname = \"ret\"\nkind = \"retention\"\nschedule = \"0 3 * * *\"\nolder_than = \"30d\"\npin_tags = [\"release\"]\n\n\
         [[rules]]\nname = \"orph\"\nkind = \"orphan\"\n\n[[rules]]\nname = \"sum\"\nkind = \"summary\"\n"
    ));
    let a = run("a", at(0), "s1");
    let ex = explained(&c, &a, &[], at(12));
    assert_eq!(ex[0], ("sup".into(), false, "newest run of its group (project p1, branch feat/x); a push of another commit to the branch or deleting the branch or closing its pull request would cancel it".into()));
    assert_eq!(
        ex[1],
        ("to".into(), false, "running 12m < max_duration 45m".into())
    );
    assert_eq!(
        ex[2],
        (
            "ret".into(),
            false,
            "run is IN_PROGRESS; retention never deletes it".into()
        )
    );
    assert!(!ex[3].1);
    assert!(
        ex[3]
            .2
            .starts_with("event-driven: applies when a workflow_run completes"),
        "{}",
        ex[3].2
    );
    assert_eq!(
        ex[4],
        (
            "sum".into(),
            true,
            "event-driven: summarizes this run on RUN_FINISH, RUN_TIMEOUT, RUN_CANCELED".into()
        )
    );

    // superseded
    let b = run("b", at(3), "s2");
    let ex = explained(&c, &a, std::slice::from_ref(&b), at(50));
    assert_eq!(
        ex[0],
        (
            "sup".into(),
            true,
            "superseded by run b (sha s2, created 12:03:00)".into()
        )
    );
    assert_eq!(
        ex[1],
        (
            "to".into(),
            true,
            "in progress 50m > max_duration 45m".into()
        )
    );
    // same sha
    let ex = explained(&c, &a, &[run("b", at(3), "s1")], at(5));
    assert!(ex[0].2.starts_with("the newer runs of its group (project p1, branch feat/x) all share its sha s1 (or have none)"), "{}", ex[0].2);

    // filter
    let m = on_branch(run("m", at(0), "s1"), "main");
    let ex = explained(&c, &m, &[], at(5));
    assert!(!ex[0].1);
    assert!(
        ex[0].2.starts_with("filter: branch main does not match"),
        "{}",
        ex[0].2
    );

    // finished runs
    let f = done(run("f", days(3), "s1"), RunStatus::Passed);
    let ex = explained(&c, &f, &[], t0());
    assert_eq!(ex[0].2, "run is COMPLETE, not IN_PROGRESS");
    assert_eq!(ex[1].2, "run is COMPLETE, not IN_PROGRESS");
    assert_eq!(ex[2].2, "created 3d ago < older_than 30d");
    let pinned = tagged(
        done(run("f", days(40), "s1"), RunStatus::Passed),
        &["release"],
    );
    assert_eq!(
        explained(&c, &pinned, &[], t0())[2].2,
        "pinned by tag release"
    );
    let gone = done(run("g", days(41), "s1"), RunStatus::Failed);
    assert_eq!(
        explained(&c, &gone, &[], t0())[2],
        (
            "ret".into(),
            true,
            "created 41d ago > older_than 30d (on schedule \"0 3 * * *\")".into()
        )
    );
}

#[test]
fn explain_mentions_keep_latest_keep_last_passed_and_the_breaker() {
    let c = retention("keep_latest = 1\nkeep_last_passed = true\nmax_deletions = 1\n");
    let newest = old("n", 40, RunStatus::Failed);
    let passed = old("p", 41, RunStatus::Passed);
    let a = old("a", 42, RunStatus::Failed);
    let b = old("b", 43, RunStatus::Failed);
    let all = vec![newest.clone(), passed.clone(), a.clone()];
    assert_eq!(
        explained(&c, &newest, &all, t0())[0].2,
        "among the 1 newest on feat/x"
    );
    assert_eq!(
        explained(&c, &passed, &all, t0())[0].2,
        "newest passed run on feat/x (keep_last_passed)"
    );
    assert!(explained(&c, &a, &all, t0())[0].1);
    let ex = explained(&c, &a, &[newest, passed, b], t0());
    assert!(!ex[0].1);
    assert!(
        ex[0]
            .2
            .ends_with("but the sweep would delete 2 runs > max_deletions 1, so it deletes none"),
        "{}",
        ex[0].2
    );
}

#[test]
fn explain_reports_spared_runs_and_auto_limits() {
    let c = cfg(&format!(
        "{SUPERSEDE}spare_if_progress_at_least = 0.5\n\n[[rules]]\nname = \"auto\"\nkind = \"timeout\"\nmax_duration = \"auto\"\n"
    ));
    let a = progress(run("a", at(0), "s1"), 9, 10);
    let ex = explained(&c, &a, &[run("b", at(1), "s2")], at(5));
    assert!(!ex[0].1);
    assert!(
        ex[0].2.ends_with(
            "but spared: 90% of its specs are complete >= spare_if_progress_at_least 50%"
        ),
        "{}",
        ex[0].2
    );
    assert_eq!(
        ex[1].2,
        "max_duration auto sets no limit yet for p1:feat/x (0 passed runs, fewer than 10, and no fallback)"
    );
}

// ---------------------------------------------------------------------------------------
// properties

#[derive(Debug, Clone)]
struct Spec {
    branch: u8,
    sha: u8,
    minute: i64,
    state: u8,
    tag: u8,
    age_days: i64,
}

fn spec() -> impl Strategy<Value = Spec> {
    (0u8..3, 0u8..3, 0i64..6, 0u8..5, 0u8..3, 0i64..60).prop_map(
        |(branch, sha, minute, state, tag, age_days)| Spec {
            branch,
            sha,
            minute,
            state,
            tag,
            age_days,
        },
    )
}

fn build(specs: &[Spec]) -> Vec<Run> {
    specs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let created = days(s.age_days) + chrono::Duration::minutes(s.minute);
            let r = on_branch(
                run(&format!("r{i:03}"), created, &format!("sha{}", s.sha)),
                &format!("b{}", s.branch),
            );
            let r = match s.state {
                0 | 1 => r,
                2 => done(r, RunStatus::Passed),
                3 => done(r, RunStatus::Failed),
                _ => with(r, |r| r.completion_state = CompletionState::Canceled),
            };
            match s.tag {
                0 => r,
                1 => tagged(r, &["release"]),
                _ => tagged(r, &["nightly"]),
            }
        })
        .collect()
}

fn all_kinds() -> Config {
    cfg(&format!(
        "{SUPERSEDE}\n[[rules]]\nname = \"sup-tags\"\nkind = \"supersede\"\ngroup_by = [\"tags\", \"framework\"]\n\n\
         [[rules]]\nname = \"to\"\nkind = \"timeout\"\nmax_duration = \"20d\"\n\n\
         [[rules]]\nname = \"ret\"\nkind = \"retention\"\nschedule = \"0 3 * * *\"\nolder_than = \"10d\"\n\
         keep_latest = 1\nkeep_last_passed = true\npin_tags = [\"release\"]\nmax_deletions = 25\n"
    ))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn the_newest_run_of_a_group_is_never_superseded(specs in prop::collection::vec(spec(), 1..40)) {
        let runs = build(&specs);
        let c = all_kinds();
        let now = t0();
        let mut evals = vec![plan(&c, &RunsView::runs_only(&runs), now)];
        for r in &runs {
            evals.push(eval(&c, &seen(r), &runs, now));
        }
        for e in evals {
            for d in e.decisions.iter().filter(|d| d.kind == "supersede") {
                let victim = runs.iter().find(|r| r.run_id == d.run_id).unwrap();
                prop_assert!(victim.is_in_progress());
                // Some run of its group (branch only: the coarsest grouping) is strictly
                // newer and of another sha.
                prop_assert!(runs.iter().any(|b| b.branch() == victim.branch()
                    && b.created_at > victim.created_at
                    && b.sha() != victim.sha()));
                let newest = runs.iter().filter(|b| b.branch() == victim.branch()).map(|b| b.created_at).max().unwrap();
                prop_assert!(victim.created_at < newest);
            }
        }
    }

    #[test]
    fn retention_never_deletes_in_progress_or_pinned_runs_nor_more_than_max(specs in prop::collection::vec(spec(), 0..80)) {
        let runs = build(&specs);
        let c = all_kinds();
        let e = eval(&c, &Trigger::RetentionSweep { rule: "ret".into() }, &runs, t0());
        prop_assert!(e.decisions.len() <= 25);
        prop_assert!(e.decisions.is_empty() || e.breaches.is_empty());
        for d in &e.decisions {
            let r = runs.iter().find(|r| r.run_id == d.run_id).unwrap();
            prop_assert!(!r.is_in_progress());
            prop_assert!(!r.tags.iter().any(|t| t == "release"));
            prop_assert!(t0() - r.created_at > chrono::Duration::days(10));
        }
        if let Some(b) = e.breaches.first() {
            prop_assert!(b.would_delete > 25);
        }
    }

    #[test]
    fn supersede_and_retention_agree_with_a_naive_reference(specs in prop::collection::vec(spec(), 0..60)) {
        let runs = build(&specs);
        let c = all_kinds();
        let now = t0();
        let key = |r: &Run| (r.project_id.clone(), r.branch().map(str::to_string));
        let ord = |r: &Run| (r.created_at, r.run_id.clone());

        // supersede, rule "sup" (no group_by, no filter), on a poll
        let mut want: Vec<&str> = runs
            .iter()
            .filter(|a| {
                a.is_in_progress()
                    && a.branch().is_some()
                    && a.sha().is_some()
                    && runs.iter().any(|b| {
                        key(b) == key(a) && b.created_at > a.created_at && b.sha().is_some() && b.sha() != a.sha()
                    })
            })
            .map(|r| r.run_id.as_str())
            .collect();
        want.sort();
        let e = eval(&c, &Trigger::Tick, &runs, now);
        let mut got: Vec<&str> = e.decisions.iter().filter(|d| d.rule == "sup").map(|d| d.run_id.as_str()).collect();
        got.sort();
        prop_assert_eq!(got, want);

        // retention, rule "ret": older_than 10d, keep_latest 1, keep_last_passed, pin release
        let finished = |r: &Run| matches!(r.completion_state, CompletionState::Complete | CompletionState::Canceled | CompletionState::Timeout);
        let passed = |r: &Run| r.completion_state == CompletionState::Complete && r.status == RunStatus::Passed;
        let mut want: Vec<&str> = runs
            .iter()
            .filter(|r| {
                let newer_finished = runs.iter().filter(|o| key(o) == key(r) && finished(o) && ord(o) > ord(r)).count();
                let newer_passed = runs.iter().any(|o| key(o) == key(r) && passed(o) && ord(o) > ord(r));
                finished(r)
                    && !r.tags.iter().any(|t| t == "release")
                    && now - r.created_at > chrono::Duration::days(10)
                    && newer_finished >= 1
                    && (!passed(r) || newer_passed)
            })
            .map(|r| r.run_id.as_str())
            .collect();
        want.sort();
        let e = eval(&c, &Trigger::RetentionSweep { rule: "ret".into() }, &runs, now);
        if want.len() > 25 {
            prop_assert!(e.decisions.is_empty());
            prop_assert_eq!(e.breaches[0].would_delete, want.len());
        } else {
            let mut got: Vec<&str> = e.decisions.iter().map(|d| d.run_id.as_str()).collect();
            got.sort();
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn evaluate_is_deterministic_and_independent_of_input_order(
        specs in prop::collection::vec(spec(), 0..40),
        seed in any::<u64>(),
    ) {
        let runs = build(&specs);
        let mut shuffled = runs.clone();
        // Fisher–Yates with a small LCG: reproducible from the seed.
        let mut x = seed | 1;
        for i in (1..shuffled.len()).rev() {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            shuffled.swap(i, (x >> 33) as usize % (i + 1));
        }
        let c = all_kinds();
        let now = t0();
        let a = plan(&c, &RunsView::runs_only(&runs), now);
        prop_assert_eq!(&a, &plan(&c, &RunsView::runs_only(&runs), now));
        prop_assert_eq!(&a, &plan(&c, &RunsView::runs_only(&shuffled), now));
        for tr in [Trigger::Tick, Trigger::RetentionSweep { rule: "ret".into() }, push("b1", "sha0", now)] {
            prop_assert_eq!(eval(&c, &tr, &runs, now), eval(&c, &tr, &shuffled, now));
        }
        if let Some(r) = runs.first() {
            prop_assert_eq!(eval(&c, &seen(r), &runs, now), eval(&c, &seen(r), &shuffled, now));
        }
        // sorted by rule order, then created_at
        let order: Vec<usize> = a.decisions.iter().map(|d| c.rules.iter().position(|r| r.name == d.rule).unwrap()).collect();
        prop_assert!(order.windows(2).all(|w| w[0] <= w[1]));
        for w in a.decisions.windows(2).filter(|w| w[0].rule == w[1].rule) {
            let ca = runs.iter().find(|r| r.run_id == w[0].run_id).unwrap().created_at;
            let cb = runs.iter().find(|r| r.run_id == w[1].run_id).unwrap().created_at;
            prop_assert!((ca, &w[0].run_id) < (cb, &w[1].run_id));
        }
    }
}

// ---------------------------------------------------------------------------------------
// retention, decided incrementally (page by page, as `sweep` lists the runs)

/// `n` shuffled with a small LCG from `seed` (reproducible).
fn shuffled<T: Clone>(v: &[T], seed: u64) -> Vec<T> {
    let mut out = v.to_vec();
    let mut x = seed | 1;
    for i in (1..out.len()).rev() {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        out.swap(i, (x >> 33) as usize % (i + 1));
    }
    out
}

/// Feeds `runs` to a fresh retention sweep of the config's rule "ret" in pages cut at
/// `cuts` (each page its own slice, dropped before the next one is built, like the
/// client's pages), then finishes it.
fn streamed(c: &Config, runs: &[Run], cuts: &[usize], now: DateTime<Utc>) -> Evaluation {
    let rule = c.rules.iter().find(|r| r.name == "ret").unwrap();
    let runwarden::config::RuleKind::Retention(o) = &rule.kind else {
        unreachable!()
    };
    let mut sweep = runwarden::rules::retention::Sweep::new(rule, o, now);
    let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (runs.len() + 1)).collect();
    bounds.extend([0, runs.len()]);
    bounds.sort_unstable();
    for w in bounds.windows(2) {
        let page: Vec<Run> = runs[w[0]..w[1]].to_vec();
        for r in &page {
            sweep.feed(r);
        }
    }
    let mut e = Evaluation::default();
    match sweep.finish(c) {
        Ok(d) => e.decisions = d,
        Err(b) => e.breaches.push(b),
    }
    e
}

fn retention_with(keep_latest: u32, keep_last_passed: bool, max_deletions: u32) -> Config {
    retention(&format!(
        "keep_latest = {keep_latest}
keep_last_passed = {keep_last_passed}
pin_tags = [\"release\"]
max_deletions = {max_deletions}
"
    ))
}

#[test]
fn a_streamed_sweep_keeps_slots_for_runs_fed_after_the_old_ones() {
    // The newest runs come last: the old ones must give up their slots then.
    let c = retention_with(2, true, 10);
    let runs = vec![
        old("p_old", 50, RunStatus::Passed),
        old("f_old", 45, RunStatus::Failed),
        old("f_mid", 40, RunStatus::Failed),
        old("young1", 2, RunStatus::Failed),
        old("young2", 1, RunStatus::Passed),
    ];
    let e = streamed(&c, &runs, &[1, 3], t0());
    assert_eq!(cancelled(&e), vec!["p_old", "f_old", "f_mid"]);
    assert_eq!(e, eval(&c, &sweep(), &runs, t0()));
    // Oldest last: the same.
    let rev: Vec<Run> = runs.iter().rev().cloned().collect();
    assert_eq!(
        streamed(&c, &rev, &[2], t0()),
        eval(&c, &sweep(), &runs, t0())
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// A retention sweep fed page by page, in any order and any page split, decides
    /// exactly what the batch evaluation over all runs decides, and both agree with a
    /// naive reference, for any `keep_latest`, `keep_last_passed` and `max_deletions`.
    #[test]
    fn retention_streamed_in_any_order_and_pages_equals_the_batch_and_the_reference(
        specs in prop::collection::vec(spec(), 0..80),
        seed in any::<u64>(),
        cuts in prop::collection::vec(0usize..100, 0..10),
        keep_latest in 0u32..4,
        keep_last_passed in any::<bool>(),
        max_deletions in 0u32..40,
    ) {
        let runs: Vec<Run> = build(&specs)
            .into_iter()
            .enumerate()
            .map(|(i, r)| with(r, |r| {
                if i % 3 == 0 { r.project_id = "p2".into() }
                if i % 7 == 0 { r.meta.commit.branch = None }
            }))
            .collect();
        let c = retention_with(keep_latest, keep_last_passed, max_deletions);
        let now = t0();
        let batch = eval(&c, &sweep(), &runs, now);
        let got = streamed(&c, &shuffled(&runs, seed), &cuts, now);
        prop_assert_eq!(&got, &batch);

        let key = |r: &Run| (r.project_id.clone(), r.branch().map(str::to_string));
        let ord = |r: &Run| (r.created_at, r.run_id.clone());
        let finished = |r: &Run| matches!(r.completion_state, CompletionState::Complete | CompletionState::Canceled | CompletionState::Timeout);
        let passed = |r: &Run| r.completion_state == CompletionState::Complete && r.status == RunStatus::Passed;
        let mut want: Vec<&Run> = runs
            .iter()
            .filter(|r| {
                let newer_finished = runs.iter().filter(|o| key(o) == key(r) && finished(o) && ord(o) > ord(r)).count();
                let newer_passed = runs.iter().any(|o| key(o) == key(r) && passed(o) && ord(o) > ord(r));
                finished(r)
                    && !r.tags.iter().any(|t| t == "release")
                    && now - r.created_at > chrono::Duration::days(30)
                    && newer_finished >= keep_latest as usize
                    && (!keep_last_passed || !passed(r) || newer_passed)
            })
            .collect();
        want.sort_by_key(|r| ord(r));
        if want.len() > max_deletions as usize {
            prop_assert!(got.decisions.is_empty());
            prop_assert_eq!(got.breaches.len(), 1);
            prop_assert_eq!(got.breaches[0].would_delete, want.len());
        } else {
            prop_assert!(got.breaches.is_empty());
            let ids: Vec<&str> = got.decisions.iter().map(|d| d.run_id.as_str()).collect();
            let want_ids: Vec<&str> = want.iter().map(|r| r.run_id.as_str()).collect();
            prop_assert_eq!(ids, want_ids);
            for (d, r) in got.decisions.iter().zip(&want) {
                prop_assert_eq!(&d.project_id, &r.project_id);
                prop_assert_eq!(d.branch.as_deref(), r.branch());
                prop_assert_eq!(d.sha.as_deref(), r.sha());
                prop_assert_eq!(&d.reason, &runwarden::rules::retention::delete_reason(
                    match &c.rules[0].kind { runwarden::config::RuleKind::Retention(o) => o, _ => unreachable!() },
                    r,
                    now,
                ));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// scale (run with `cargo test --release --test rules -- --ignored`)

#[test]
#[ignore = "timing check; run in release"]
fn a_million_runs_go_through_supersede_and_retention_well_under_a_second() {
    let c = cfg(&format!(
        "{SUPERSEDE}[rules.match]\nbranches = [\"*\", \"!main\"]\n\n\
         [[rules]]\nname = \"ret\"\nkind = \"retention\"\nschedule = \"0 3 * * *\"\nolder_than = \"30d\"\n\
         keep_latest = 3\nkeep_last_passed = true\npin_tags = [\"release\"]\nmax_deletions = 1000000\n"
    ));
    // A million runs over 31 days on 5,000 branches and main: the newest 1% still in
    // progress, the oldest day past older_than.
    const N: i64 = 1_000_000;
    let span = 31 * 86_400;
    let template = run("x", t0(), "s");
    let runs: Vec<Run> = (0..N)
        .map(|i| {
            let mut r = template.clone();
            r.run_id = format!("r{i}");
            r.created_at = t0() - chrono::Duration::seconds(span - span * i / N);
            r.meta.commit.sha = Some(format!("sha{}", i % 997));
            r.meta.commit.branch = Some(if i % 10 == 0 {
                "main".into()
            } else {
                format!("feat/{}", i % 5000)
            });
            if i < N - N / 100 {
                r.completion_state = CompletionState::Complete;
                r.status = if i % 4 == 0 {
                    RunStatus::Failed
                } else {
                    RunStatus::Passed
                };
            }
            if i % 1000 == 0 {
                r.tags = vec!["release".into()];
            }
            r
        })
        .collect();
    let start = std::time::Instant::now();
    let e = plan(&c, &RunsView::runs_only(&runs), t0());
    let took = start.elapsed();
    let by = |k: &str| e.decisions.iter().filter(|d| d.kind == k).count();
    eprintln!(
        "{} supersede and {} retention decisions in {took:?}",
        by("supersede"),
        by("retention")
    );
    assert!(by("supersede") > 0 && by("retention") > 0);
    assert!(took < Duration::from_secs(1), "{took:?}");
}

// ---------------------------------------------------------------------------------------
// Glob lists also match the pattern's exact spelling (GitHub's bots are named
// `dependabot[bot]`, `renovate[bot]`, `github-actions[bot]`: as a glob `[bot]` is a
// character class, matching `dependabotb`).

fn by_author(r: Run, name: &str) -> Run {
    with(r, |r| {
        r.meta.commit.author_name = Some(name.into());
        r.meta.commit.author_email =
            Some("49699333+dependabot[bot]@users.noreply.github.com".into());
    })
}

#[test]
fn authors_match_a_bot_spelt_exactly_as_the_pattern_with_its_brackets() {
    let c = cfg(&format!(
        "{SUPERSEDE}[rules.match]\nauthors = [\"dependabot[bot]\"]\n"
    ));
    let a = by_author(run("a", at(0), "s1"), "dependabot[bot]");
    let b = by_author(run("b", at(1), "s2"), "dependabot[bot]");
    assert!(c.rules[0].filter.matches(&a));
    assert_eq!(
        cancelled(&eval(&c, &Trigger::Tick, &[a.clone(), b.clone()], at(2))),
        vec!["a"]
    );
    // The exact spelling is compared with case, as the globs are.
    let upper = by_author(run("u", at(0), "s1"), "Dependabot[bot]");
    assert!(!c.rules[0].filter.matches(&upper));
    // The glob keeps its meaning beside the exact spelling.
    let b_class = by_author(run("x", at(0), "s1"), "dependabotb");
    assert!(c.rules[0].filter.matches(&b_class));
}

#[test]
fn a_negated_bot_author_excludes_the_bot_spelt_exactly() {
    let c = cfg(&format!(
        "{SUPERSEDE}[rules.match]\nauthors = [\"!dependabot[bot]\", \"!renovate[bot]\"]\n"
    ));
    let a = by_author(run("a", at(0), "s1"), "dependabot[bot]");
    let b = by_author(run("b", at(1), "s2"), "dependabot[bot]");
    assert!(!c.rules[0].filter.matches(&a));
    assert!(c.rules[0].filter.check(&a).is_err());
    assert!(cancelled(&eval(&c, &Trigger::Tick, &[a, b], at(2))).is_empty());
    let human = with(run("h", at(0), "s1"), |r| {
        r.meta.commit.author_name = Some("Ada".into())
    });
    assert!(c.rules[0].filter.matches(&human));
    // And in `branches`, where a `!` excludes too.
    let c = cfg(&format!(
        "{SUPERSEDE}[rules.match]\nbranches = [\"*\", \"!deps[bot]\"]\n"
    ));
    assert!(
        !c.rules[0]
            .filter
            .matches(&on_branch(run("a", at(0), "s1"), "deps[bot]"))
    );
    assert!(
        c.rules[0]
            .filter
            .matches(&on_branch(run("a", at(0), "s1"), "feat/x"))
    );
}

#[test]
fn tags_match_a_tag_spelt_exactly_as_the_pattern() {
    for (mode, expect) in [("any", true), ("all", true), ("none", false)] {
        let c = cfg(&format!(
            "{SUPERSEDE}[rules.match]\ntags = [\"shard[1]\"]\ntag_mode = \"{mode}\"\n"
        ));
        let r = tagged(run("a", at(0), "s1"), &["shard[1]"]);
        assert_eq!(c.rules[0].filter.matches(&r), expect, "tag_mode {mode}");
        assert_eq!(
            c.rules[0].filter.check(&r).is_ok(),
            expect,
            "tag_mode {mode}"
        );
    }
}

#[test]
fn orphan_workflows_match_a_workflow_name_spelt_exactly_as_the_pattern() {
    let opts = |workflows: &str| {
        let c = cfg(&format!(
            "{ORPHAN}match_by = \"commit\"\nworkflows = {workflows}\n"
        ));
        match &c.rules[0].kind {
            runwarden::config::RuleKind::Orphan(o) => o.clone(),
            k => panic!("not an orphan rule: {}", k.name()),
        }
    };
    let o = opts("[\"E2E [linux]\"]");
    assert!(o.concerns_workflow(Some("E2E [linux]"), None));
    assert!(!o.concerns_workflow(Some("E2E [mac]"), None));
    // Excluded by its exact spelling.
    let o = opts("[\"E2E*\", \"!E2E [linux]\"]");
    assert!(!o.concerns_workflow(Some("E2E [linux]"), None));
    assert!(o.concerns_workflow(Some("E2E [mac]"), None));
}

// ---------------------------------------------------------------------------------------
// `idle_for` from the first sight of a run, and `explain` of a retention rule over the
// sweep's whole listing.

const IDLE: &str = "[[rules]]\nname = \"idle\"\nkind = \"timeout\"\nidle_for = \"30m\"\n";

/// A run created 2h ago that has completed nothing, first seen by the bot now (created
/// while it was down, or a fresh store): its first snapshot does not restart the idle
/// clock, so `serve`'s first check cancels it as `plan` does.
#[test]
fn a_run_first_seen_long_idle_is_cancelled_by_the_first_check_as_plan_says() {
    let c = cfg(IDLE);
    let a = progress(run("a", at(-120), "s1"), 0, 10);
    let now = at(0);
    let mut snaps = HashMap::new();
    snaps.insert(
        "a".to_string(),
        runwarden::rules::update_progress(None, &a, now),
    );
    let hist = HashMap::new();
    let runs = [a.clone()];
    let view = RunsView::new(&runs, &snaps, &hist);
    let planned = plan(&c, &RunsView::runs_only(&runs), now);
    assert_eq!(cancelled(&planned), vec!["a"]);
    for trigger in [Trigger::Tick, seen(&a)] {
        let e = evaluate(&c, &trigger, &view, now);
        assert_eq!(cancelled(&e), vec!["a"], "{trigger:?}");
        assert_eq!(
            e.decisions[0].reason,
            "no spec completed for 2h > idle_for 30m"
        );
        assert_eq!(e.decisions, planned.decisions);
    }
    // Seen again a minute later, still nothing completed: still idle since creation.
    let again = runwarden::rules::update_progress(snaps.get("a"), &a, at(1));
    assert_eq!(again.changed_at, at(-120));
}

/// A run read with its specs, first seen now, whose last spec completed 90 minutes ago:
/// idle since then, not since now. One whose specs completed at unknown times (a
/// listing) is measured from now, as before.
#[test]
fn a_run_first_seen_with_its_specs_is_idle_since_the_last_one_completed() {
    let c = cfg(IDLE);
    let a = with(run("a", at(-120), "s1"), |r| {
        for m in [-110, -90] {
            r.specs.push(runwarden::currents::Spec {
                spec: format!("spec{m}"),
                completed_at: Some(at(m)),
                ..Default::default()
            });
        }
    });
    let now = at(0);
    let snap = runwarden::rules::update_progress(None, &a, now);
    assert_eq!((snap.completed_specs, snap.changed_at), (2, at(-90)));
    let mut snaps = HashMap::new();
    snaps.insert("a".to_string(), snap);
    let hist = HashMap::new();
    let runs = [a.clone()];
    let e = evaluate(&c, &seen(&a), &RunsView::new(&runs, &snaps, &hist), now);
    assert_eq!(
        e.decisions
            .iter()
            .map(|d| d.reason.as_str())
            .collect::<Vec<_>>(),
        vec!["no spec completed for 1h30m > idle_for 30m"]
    );
    // Listed (no spec times): first seen now, not idle yet.
    let listed = run("a", at(-120), "s1");
    let snap = runwarden::rules::update_progress(None, &listed, now);
    assert_eq!(snap.changed_at, now);
    snaps.insert("a".to_string(), snap);
    let runs = [listed];
    let view = RunsView::new(&runs, &snaps, &hist);
    assert!(
        evaluate(&c, &Trigger::Tick, &view, now)
            .decisions
            .is_empty()
    );
}

/// What `runwarden explain` says of a retention rule is what a sweep of it decides:
/// [`runwarden::rules::retention::Sweep::explain`], fed the sweep's listing page by page,
/// applies exactly to the runs the sweep deletes, and to none when the breaker trips.
#[test]
fn explaining_a_retention_rule_agrees_with_its_sweep_for_every_run() {
    let old = |id: &str, age_days: i64, branch: Option<&str>, status: RunStatus| {
        with(done(run(id, days(age_days), "s"), status), |r| {
            r.meta.commit.branch = branch.map(Into::into)
        })
    };
    let runs = vec![
        old("a1", 40, Some("b0"), RunStatus::Passed),
        old("a2", 41, Some("b0"), RunStatus::Failed),
        old("a3", 42, Some("b0"), RunStatus::Passed),
        old("b1", 45, Some("b1"), RunStatus::Failed),
        old("b2", 46, Some("b1"), RunStatus::Failed),
        old("n1", 50, None, RunStatus::Failed),
        old("n2", 51, None, RunStatus::Passed),
        old("n3", 52, None, RunStatus::Failed),
        old("y1", 2, Some("b2"), RunStatus::Passed),
        tagged(old("t1", 60, Some("b2"), RunStatus::Passed), &["keep"]),
        run("ip", days(70), "s"),
    ];
    for max in [10, 4, 3] {
        let c = cfg(&format!(
            "[[rules]]\nname = \"ret\"\nkind = \"retention\"\nschedule = \"0 3 * * *\"\nolder_than = \"30d\"\nkeep_latest = 1\nkeep_last_passed = true\npin_tags = [\"keep\"]\nmax_deletions = {max}\n"
        ));
        let rule = &c.rules[0];
        let runwarden::config::RuleKind::Retention(opts) = &rule.kind else {
            unreachable!()
        };
        let swept = eval(
            &c,
            &Trigger::RetentionSweep { rule: "ret".into() },
            &runs,
            t0(),
        );
        let deleted = cancelled(&swept);
        for target in &runs {
            let mut sweep = runwarden::rules::retention::Sweep::new(rule, opts, t0());
            for page in runs.chunks(3) {
                for r in page.iter().filter(|r| r.run_id != target.run_id) {
                    sweep.feed(r);
                }
            }
            sweep.feed(target);
            let (applies, detail) = sweep.explain(target);
            assert_eq!(
                applies,
                deleted.contains(&target.run_id.as_str()),
                "max {max}, {}: {detail}",
                target.run_id
            );
            // The engine's explain over the same runs says the same.
            let e = explain(&c, target, &RunsView::runs_only(&runs), t0());
            assert_eq!((e[0].applies, &e[0].detail), (applies, &detail));
        }
        // a3 (not the newest passed on b0), a2, b2 (b1 is newer) and n3 (n1 the newest
        // without a branch, n2 its newest passed): 4 runs, oldest first.
        if max >= 4 {
            assert_eq!(deleted, vec!["n3", "b2", "a3", "a2"], "max {max}");
        } else {
            assert!(deleted.is_empty());
            assert_eq!(swept.breaches.len(), 1);
        }
    }
}
