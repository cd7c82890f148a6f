//! Run summaries on GitHub pull requests (SPEC §4 `summary`, §6): the comment bodies a
//! user reads (insta snapshots), and the whole flow end to end against the built-in
//! simulator's GitHub API, including its fault injection.

use std::sync::Arc;
use std::time::{Duration, Instant};

use runwarden::config::{Config, Rule, SummaryOptions, load_str};
use runwarden::currents::Run;
use runwarden::github::client::{
    GithubAuth, GithubClient, GithubClientOptions, RepoName, RetryPolicy, StatusState,
};
use runwarden::github::render::{
    GITHUB_BODY_LIMIT, MARKER, PrInfo, RenderInput, Section, SummaryDoc, github_len, render_body,
    status_for,
};
use runwarden::github::summary::{
    StatusOutcome, SummaryCtx, SummaryOutcome, SummaryReport, discover_prs, merge_section,
    post_summary, resolve_repo,
};
use runwarden::secret::Secret;
use runwarden::simulator::{self, Fault, FaultKind, NewPr};
use serde_json::{Value, json};

#[path = "support/summary_env.rs"]
mod summary_env;
use summary_env::*;

const DASH: &str = "https://app.currents.dev";
const SHA_OLD: &str = "3f786850e387550fdab836ed7e6dc881de23001b";
const SHA_HEAD: &str = "89e6c98d92887913cadf06b2adb97f26cde4849b";
const SHA_OTHER: &str = "2aae6c35c94fcfb415dbe95f408b9ce91ee846ed";
const BRANCH: &str = "feat/login";

// ---------------------------------------------------------------------------------------
// Runs
// ---------------------------------------------------------------------------------------

fn merge(mut base: Value, patch: Value) -> Value {
    if let (Some(b), Value::Object(p)) = (base.as_object_mut(), patch) {
        for (k, v) in p {
            b.insert(k, v);
        }
    }
    base
}

fn run_value(id: &str, sha: &str) -> Value {
    json!({
        "runId": id,
        "projectId": "bAYZ4a",
        "createdAt": "2026-03-02T10:00:00Z",
        "completionState": "COMPLETE",
        "status": "PASSED",
        "tags": [],
        "durationMs": 252_000,
        "groups": [{
            "groupId": "chromium",
            "instances": {"overall": 12, "claimed": 12, "complete": 12, "passes": 12, "failures": 0},
            "tests": {"overall": 121, "passes": 118, "failures": 0, "pending": 1, "skipped": 2, "retries": 2, "flaky": 2}
        }],
        "meta": {
            "ciBuildId": "acme/web-1234-1",
            "commit": {
                "sha": sha,
                "branch": BRANCH,
                "remoteOrigin": "https://github.com/acme/web.git",
                "authorName": "Ada",
                "message": "Make login faster"
            },
            "framework": {"type": "pw", "version": "1.50.0"}
        }
    })
}

fn to_run(v: Value) -> Run {
    serde_json::from_value(v).expect("a valid run")
}

fn passed(id: &str, sha: &str) -> Run {
    to_run(run_value(id, sha))
}

fn failing_specs(n: usize, failures: u64) -> Value {
    Value::Array(
        (0..n)
            .map(|i| {
                json!({
                    "groupId": "chromium",
                    "spec": format!("tests/e2e/area-{i:02}/login-{i:02}.spec.ts"),
                    "instanceId": format!("inst{i}"),
                    "completedAt": "2026-03-02T10:04:00Z",
                    "results": {"stats": {"tests": 10, "passes": 10 - failures, "failures": failures,
                                          "pending": 0, "skipped": 0}}
                })
            })
            .collect(),
    )
}

fn failed(id: &str, sha: &str, n_failing: usize) -> Run {
    let mut specs = failing_specs(n_failing, 2);
    specs.as_array_mut().unwrap().push(json!({
        "groupId": "chromium", "spec": "tests/e2e/ok.spec.ts",
        "results": {"stats": {"tests": 5, "passes": 5, "failures": 0}}
    }));
    to_run(merge(
        run_value(id, sha),
        json!({
            "status": "FAILED",
            "groups": [{
                "groupId": "chromium",
                "instances": {"overall": 12, "claimed": 12, "complete": 12, "passes": 12 - n_failing as u64, "failures": n_failing},
                "tests": {"overall": 121, "passes": 121 - 2 * n_failing as u64 - 3, "failures": 2 * n_failing as u64,
                          "pending": 1, "skipped": 2, "retries": 2, "flaky": 1}
            }],
            "specs": specs,
        }),
    ))
}

fn running(id: &str, sha: &str) -> Run {
    to_run(merge(
        run_value(id, sha),
        json!({
            "completionState": "IN_PROGRESS",
            "status": "FAILING",
            "durationMs": null,
            "groups": [{
                "groupId": "chromium",
                "instances": {"overall": 12, "claimed": 7, "complete": 5, "passes": 4, "failures": 1},
                "tests": {"overall": 50, "passes": 47, "failures": 1, "pending": 0, "skipped": 2, "retries": 0, "flaky": 0}
            }],
            "specs": failing_specs(1, 1),
        }),
    ))
}

fn started(id: &str, sha: &str) -> Run {
    to_run(merge(
        run_value(id, sha),
        json!({
            "completionState": "IN_PROGRESS",
            "status": "RUNNING",
            "durationMs": null,
            "groups": [{"groupId": "chromium", "instances": {"overall": 12}, "tests": {}}],
        }),
    ))
}

fn cancelled(id: &str, sha: &str) -> Run {
    to_run(merge(
        run_value(id, sha),
        json!({
            "completionState": "CANCELED",
            "status": "RUNNING",
            "durationMs": 95_000,
            "cancellation": {"canceledAt": "2026-03-02T10:01:35Z", "actor": "api:runwarden"},
            "groups": [{
                "groupId": "chromium",
                "instances": {"overall": 12, "claimed": 5, "complete": 3, "passes": 3, "failures": 0},
                "tests": {"overall": 31, "passes": 31, "failures": 0, "pending": 0, "skipped": 0, "retries": 0, "flaky": 0}
            }],
        }),
    ))
}

fn timed_out(id: &str, sha: &str) -> Run {
    to_run(merge(
        run_value(id, sha),
        json!({
            "completionState": "TIMEOUT",
            "status": "FAILED",
            "durationMs": 5_400_000,
            "timeout": {"isTimeout": true, "timeoutValueMs": 5_400_000},
            "groups": [{
                "groupId": "chromium",
                "instances": {"overall": 12, "claimed": 12, "complete": 9, "passes": 8, "failures": 1},
                "tests": {"overall": 90, "passes": 86, "failures": 2, "pending": 0, "skipped": 2, "retries": 1, "flaky": 0}
            }],
            "specs": failing_specs(1, 2),
        }),
    ))
}

const CANCEL: (&str, &str) = (
    "cancel-superseded",
    "superseded by run r-new on commit 89e6c98, pushed after this run started",
);

// ---------------------------------------------------------------------------------------
// Rendering (snapshots of every body a user reads)
// ---------------------------------------------------------------------------------------

struct Post<'a> {
    run: &'a Run,
    event: &'a str,
    by: Option<(&'a str, &'a str)>,
}

fn post<'a>(run: &'a Run, event: &'a str) -> Post<'a> {
    Post {
        run,
        event,
        by: None,
    }
}

fn body_with(
    posts: &[Post<'_>],
    max_failed: usize,
    template: Option<&(std::path::PathBuf, String)>,
    limit: usize,
) -> String {
    let mut doc = SummaryDoc::default();
    let mut current = String::new();
    for p in posts {
        let s = Section::from_run(p.run, p.event, p.by, DASH, max_failed);
        current = s.key.clone();
        merge_section(&mut doc, s, SHA_HEAD);
    }
    let pr = PrInfo {
        number: 7,
        head_sha: SHA_HEAD.into(),
        head_ref: BRANCH.into(),
    };
    render_body(
        &doc,
        &RenderInput {
            pr: &pr,
            current_key: &current,
            dashboard_url: DASH,
            template,
            limit,
        },
    )
    .expect("renders")
}

/// A body's length as GitHub's limit is held against it: UTF-16 code units, never fewer
/// than characters (measured here, not with `github_len`, which is under test).
fn units(s: &str) -> usize {
    s.encode_utf16().count()
}

fn body(posts: &[Post<'_>]) -> String {
    body_with(posts, 10, None, GITHUB_BODY_LIMIT)
}

#[test]
fn snapshot_passed() {
    let b = body(&[post(&passed("r1a2b3c4", SHA_HEAD), "RUN_FINISH")]);
    assert!(b.starts_with(MARKER));
    insta::assert_snapshot!("passed", b);
}

#[test]
fn snapshot_failed_with_failing_specs() {
    // 12 failing specs, 10 shown, the rest counted.
    let b = body(&[post(&failed("r1a2b3c4", SHA_HEAD, 12), "RUN_FINISH")]);
    assert!(b.contains("…and 2 more specs in the run"), "{b}");
    insta::assert_snapshot!("failed", b);
}

#[test]
fn snapshot_running() {
    let b = body(&[post(&running("r1a2b3c4", SHA_HEAD), "RUN_START")]);
    insta::assert_snapshot!("running", b);
}

#[test]
fn snapshot_just_started() {
    let b = body(&[post(&started("r1a2b3c4", SHA_HEAD), "RUN_START")]);
    insta::assert_snapshot!("started", b);
}

#[test]
fn snapshot_cancelled_by_rule() {
    let run = cancelled("r1a2b3c4", SHA_OLD);
    let b = body(&[Post {
        run: &run,
        event: "RUN_CANCELED",
        by: Some(CANCEL),
    }]);
    assert!(b.contains("rule `cancel-superseded`"), "{b}");
    insta::assert_snapshot!("cancelled_by_rule", b);
}

#[test]
fn snapshot_cancelled_by_someone_else() {
    let b = body(&[post(&cancelled("r1a2b3c4", SHA_HEAD), "RUN_CANCELED")]);
    assert!(b.contains("Cancelled by `api:runwarden`"), "{b}");
    insta::assert_snapshot!("cancelled_by_actor", b);
}

#[test]
fn snapshot_timed_out() {
    let b = body(&[post(&timed_out("r1a2b3c4", SHA_HEAD), "RUN_TIMEOUT")]);
    insta::assert_snapshot!("timed_out", b);
}

#[test]
fn snapshot_multi_section() {
    // Project bAYZ4a, no tags: failed. Same project, tag "smoke": passed.
    // Project k9Pq2 with two run groups: running.
    let a = failed("r1a2b3c4", SHA_HEAD, 2);
    let b = to_run(merge(
        run_value("r5d6e7f8", SHA_HEAD),
        json!({"tags": ["smoke", "e2e"]}),
    ));
    let c = to_run(merge(
        run_value("r9a8b7c6", SHA_HEAD),
        json!({
            "projectId": "k9Pq2",
            "completionState": "IN_PROGRESS",
            "status": "RUNNING",
            "durationMs": null,
            "groups": [
                {"groupId": "firefox", "instances": {"overall": 6, "complete": 2},
                 "tests": {"overall": 20, "passes": 20}},
                {"groupId": "chromium", "instances": {"overall": 6, "complete": 4},
                 "tests": {"overall": 40, "passes": 39, "skipped": 1}}
            ]
        }),
    ));
    let out = body(&[
        post(&c, "RUN_START"),
        post(&a, "RUN_FINISH"),
        post(&b, "RUN_FINISH"),
    ]);
    assert_eq!(out.matches("#### ").count(), 3, "{out}");
    insta::assert_snapshot!("multi_section", out);
}

#[test]
fn snapshot_truncated_drops_spec_lists_first() {
    // Long spec names: the full body is over the limit, the compact one fits.
    let mut run = failed("r1a2b3c4", SHA_HEAD, 12);
    for s in &mut run.specs {
        s.spec = format!("tests/{}/{}", "deeply-nested".repeat(20), s.spec);
    }
    let full = body_with(&[post(&run, "RUN_FINISH")], 10, None, GITHUB_BODY_LIMIT);
    assert!(units(&full) > 3000);
    let b = body_with(&[post(&run, "RUN_FINISH")], 10, None, 3000);
    assert!(units(&b) <= 3000, "{} code units", units(&b));
    assert!(b.contains("shortened to fit"), "{b}");
    assert!(b.contains("(https://app.currents.dev/run/r1a2b3c4)"), "{b}");
    // Still a readable section, and the state still knows the run.
    assert!(b.contains("#### ❌ Failed"), "{b}");
    assert!(
        b.contains("**Failing specs**: 12, listed in the run."),
        "{b}"
    );
    let state = SummaryDoc::parse(&b).unwrap();
    assert_eq!(state.sections[0].run_id, "r1a2b3c4");
    assert_eq!(state.sections[0].failed_specs_total, 12);
    insta::assert_snapshot!("truncated_compact", b);
}

#[test]
fn snapshot_truncated_hard_cut() {
    // A template producing far too much: the Markdown is cut at a line, with the note.
    let t = (
        std::path::PathBuf::from("verbose.j2"),
        "{% for i in range(500) %}- line {{ i }} of {{ current.run_id }}\n{% endfor %}".to_string(),
    );
    let run = passed("r1a2b3c4", SHA_HEAD);
    let b = body_with(&[post(&run, "RUN_FINISH")], 10, Some(&t), 1500);
    assert!(units(&b) <= 1500, "{} code units", units(&b));
    assert!(
        b.contains("- line 10 of r1a2b3c4\n") && !b.contains("- line 499"),
        "{b}"
    );
    assert!(b.contains("shortened to fit"), "{b}");
    assert!(
        b.contains("(https://app.currents.dev/run/r1a2b3c4)"),
        "the note links the run"
    );
    assert_eq!(SummaryDoc::parse(&b).unwrap().sections.len(), 1);
    insta::assert_snapshot!("truncated_hard_cut", b);
}

#[test]
fn hundreds_of_sections_keep_the_newest_within_the_limit() {
    let runs: Vec<Run> = (0..400)
        .map(|i| {
            let mut v = to_value(passed(&format!("r{i:03}"), SHA_HEAD));
            v["projectId"] = json!(format!("project{i:03}"));
            v["createdAt"] = json!(format!("2026-03-02T10:{:02}:{:02}Z", i / 60, i % 60));
            to_run(v)
        })
        .collect();
    // The oldest run reports last: it is the current one and must stay.
    let mut posts: Vec<Post<'_>> = runs[1..].iter().map(|r| post(r, "RUN_FINISH")).collect();
    posts.push(post(&runs[0], "RUN_FINISH"));
    let b = body_with(&posts, 10, None, GITHUB_BODY_LIMIT);
    assert!(units(&b) <= GITHUB_BODY_LIMIT, "{} code units", units(&b));
    let doc = SummaryDoc::parse(&b).unwrap();
    assert!(
        doc.sections.len() > 50 && doc.sections.len() < 400,
        "{}",
        doc.sections.len()
    );
    let ids: Vec<&str> = doc.sections.iter().map(|s| s.run_id.as_str()).collect();
    assert!(ids.contains(&"r000"), "the current section stays");
    assert!(
        ids.contains(&"r399") && !ids.contains(&"r001"),
        "the oldest others go"
    );
}

#[test]
fn huge_bodies_stay_under_githubs_limit() {
    let mut run = failed("r1a2b3c4", SHA_HEAD, 12);
    for s in &mut run.specs {
        s.spec = "x".repeat(20_000);
    }
    let b = body_with(&[post(&run, "RUN_FINISH")], 1000, None, GITHUB_BODY_LIMIT);
    assert!(units(&b) <= GITHUB_BODY_LIMIT, "{} code units", units(&b));
    assert!(b.starts_with(MARKER));
    assert_eq!(SummaryDoc::parse(&b).unwrap().sections.len(), 1);
}

const TEMPLATE: &str = r#"## {{ current.symbol }} {{ current.label }} for PR #{{ pr.number }}
{% for s in sections %}
- {{ s.symbol }} **{{ s.project }}** `{{ s.branch }}` at `{{ s.short_sha }}`{% if s.is_head %} (head){% endif %}: {{ s.counts.passed }} passed, {{ s.counts.failed }} failed, {{ s.counts.flaky }} flaky{% if s.duration %} in {{ s.duration }}{% endif %}. [Run]({{ s.run_url }})
{%- for f in s.failed_specs %}
  - `{{ f.spec }}`: {{ f.failures }}{% endfor %}
{%- if s.failed_specs_more %}
  - and {{ s.failed_specs_more }} more{% endif %}
{%- if s.cancelled %}
  - cancelled by {{ s.cancelled.rule }}: {{ s.cancelled.reason }}{% endif %}
{%- endfor %}

Dashboard: {{ dashboard_url }}
"#;

#[test]
fn snapshot_custom_template() {
    let t = (
        std::path::PathBuf::from("summary.md.j2"),
        TEMPLATE.to_string(),
    );
    let old = cancelled("r0ld0ld0", SHA_OLD);
    let mut other = to_value(failed("r1a2b3c4", SHA_HEAD, 3));
    other["projectId"] = json!("k9Pq2");
    let other = to_run(other);
    let b = body_with(
        &[
            Post {
                run: &old,
                event: "RUN_CANCELED",
                by: Some(CANCEL),
            },
            post(&other, "RUN_FINISH"),
        ],
        2,
        Some(&t),
        GITHUB_BODY_LIMIT,
    );
    assert!(b.starts_with(MARKER));
    assert!(b.contains("## ❌ Failed for PR #7"), "{b}");
    assert!(b.contains("and 1 more"), "{b}");
    assert!(
        !b.contains("### Currents test runs"),
        "the template replaces the default"
    );
    assert_eq!(SummaryDoc::parse(&b).unwrap().sections.len(), 2);
    insta::assert_snapshot!("custom_template", b);
}

fn to_value(r: Run) -> Value {
    serde_json::to_value(r).unwrap()
}

#[test]
fn snapshot_status_descriptions() {
    let cases = [
        (
            "passed",
            Section::from_run(&passed("r1", SHA_HEAD), "RUN_FINISH", None, DASH, 10),
        ),
        (
            "failed",
            Section::from_run(&failed("r1", SHA_HEAD, 3), "RUN_FINISH", None, DASH, 10),
        ),
        (
            "running",
            Section::from_run(&running("r1", SHA_HEAD), "RUN_START", None, DASH, 10),
        ),
        (
            "started",
            Section::from_run(&started("r1", SHA_HEAD), "RUN_START", None, DASH, 10),
        ),
        (
            "timed out",
            Section::from_run(&timed_out("r1", SHA_HEAD), "RUN_TIMEOUT", None, DASH, 10),
        ),
        (
            "cancelled by rule",
            Section::from_run(
                &cancelled("r1", SHA_HEAD),
                "RUN_CANCELED",
                Some(CANCEL),
                DASH,
                10,
            ),
        ),
        (
            "cancelled",
            Section::from_run(&cancelled("r1", SHA_HEAD), "RUN_CANCELED", None, DASH, 10),
        ),
    ];
    let mut out = String::new();
    for (name, s) in &cases {
        let (state, d) = status_for(s);
        assert!(d.chars().count() <= 140, "{name}: {d}");
        out.push_str(&format!("{name}: {state} | {d}\n"));
    }
    insta::assert_snapshot!("status_descriptions", out);
}

#[test]
fn a_stale_read_after_the_event_follows_the_event() {
    // The webhook says RUN_FINISH but the API still answers IN_PROGRESS.
    let r = to_run(merge(
        run_value("r1", SHA_HEAD),
        json!({"completionState": "IN_PROGRESS", "status": "FAILED"}),
    ));
    let s = Section::from_run(&r, "RUN_FINISH", None, DASH, 10);
    assert_eq!(status_for(&s).0, StatusState::Failure);
    let s = Section::from_run(&r, "RUN_TIMEOUT", None, DASH, 10);
    assert_eq!(status_for(&s).0, StatusState::Failure);
    let s = Section::from_run(&r, "RUN_CANCELED", None, DASH, 10);
    assert_eq!(status_for(&s).0, StatusState::Error);
}

// ---------------------------------------------------------------------------------------
// End to end against the simulator
// ---------------------------------------------------------------------------------------

fn config_text(api: &str) -> String {
    format!(
        r#"
[currents]
projects = ["bAYZ4a", "k9Pq2"]
dashboard_url = "{DASH}"

[github]
api_url = "{api}"
repos = {{ bAYZ4a = "acme/web" }}

[[rules]]
name = "pr-summary"
kind = "summary"
events = ["RUN_START", "RUN_FINISH", "RUN_TIMEOUT", "RUN_CANCELED"]
commit_status = true
"#
    )
}

impl Env {
    async fn new() -> Env {
        Env::start(config_text).await
    }

    /// Injects a fault on `method path` (`times`: how often; `None`: until removed).
    fn fault(&self, method: &str, path: &str, kind: FaultKind, times: Option<u32>) {
        self.sim
            .inject_fault(Fault::new(kind).on(method, path).times(times));
    }

    /// A client acting as the GitHub user `login` (the simulator's `user:NAME` tokens).
    fn as_user(&self, login: &str) -> GithubClient {
        client_with_auth(
            &self.sim.github_url(),
            Duration::from_secs(3),
            GithubAuth::Token(Secret::new(format!("user:{login}"))),
        )
    }

    /// Posts `body` on PR `pr` as the user `login`; its comment id.
    async fn comment_as(&self, login: &str, pr: u64, body: &str) -> u64 {
        let c = self
            .as_user(login)
            .create_comment(&REPO.parse().unwrap(), pr, body)
            .await
            .unwrap();
        assert_eq!(c.author.as_deref(), Some(login));
        c.id
    }
}

fn comment_only(mut o: SummaryOptions) -> SummaryOptions {
    o.commit_status = false;
    o
}

#[tokio::test]
async fn the_first_run_creates_one_comment_and_later_events_edit_it() {
    let env = Env::new().await;
    env.pr(7, BRANCH, SHA_HEAD);
    let opts = comment_only(env.opts());

    let r = env
        .summary(&opts, &running("r1", SHA_HEAD), "RUN_START")
        .await
        .unwrap();
    let SummaryOutcome::Posted {
        pr: 7,
        comment_id,
        created: true,
    } = r.comments[0]
    else {
        panic!("{r:?}")
    };
    let c = env.comments(7);
    assert_eq!(c.len(), 1);
    assert!(c[0].body.starts_with(MARKER));
    assert!(c[0].body.contains("⏳ Running"));

    let r = env
        .summary(&opts, &failed("r1", SHA_HEAD, 2), "RUN_FINISH")
        .await
        .unwrap();
    assert_eq!(
        r.comments,
        vec![SummaryOutcome::Posted {
            pr: 7,
            comment_id,
            created: false
        }]
    );
    let c = env.comments(7);
    assert_eq!(c.len(), 1, "edited in place, not posted again");
    assert!(c[0].body.contains("❌ Failed") && !c[0].body.contains("⏳ Running"));
    assert_eq!(env.count_writes("POST", "/comments"), 1);
    assert_eq!(
        env.count_writes("PATCH", &format!("/issues/comments/{comment_id}")),
        1
    );
    // Counted for /metrics, by operation and status.
    let counts = env.gh.request_counts();
    let count = |op: &str, status: &str| {
        counts
            .iter()
            .find(|(o, s, _)| *o == op && s == status)
            .map_or(0, |(_, _, n)| *n)
    };
    assert_eq!(count("create_comment", "201"), 1, "{counts:?}");
    assert_eq!(count("update_comment", "200"), 1, "{counts:?}");
    assert!(count("pulls_for_commit", "200") >= 1, "{counts:?}");
    assert!(counts.iter().all(|(o, _, _)| *o != "other"), "{counts:?}");
}

#[tokio::test]
async fn an_unchanged_body_is_not_edited() {
    let env = Env::new().await;
    env.pr(7, BRANCH, SHA_HEAD);
    let opts = comment_only(env.opts());
    let run = failed("r1", SHA_HEAD, 2);
    env.summary(&opts, &run, "RUN_FINISH").await.unwrap();
    env.sim.clear_log();

    let r = env.summary(&opts, &run, "RUN_FINISH").await.unwrap();
    assert!(
        matches!(r.comments[0], SummaryOutcome::Unchanged { pr: 7, .. }),
        "{r:?}"
    );
    assert_eq!(env.writes(), vec![], "no PATCH for an unchanged body");
    assert_eq!(env.comments(7)[0].edits, 0);
}

#[tokio::test]
async fn a_run_for_an_older_commit_never_overwrites_the_heads_section() {
    let env = Env::new().await;
    // The PR had SHA_OLD, then was pushed to SHA_HEAD.
    env.pr(7, BRANCH, SHA_OLD);
    env.pr(7, BRANCH, SHA_HEAD);
    let opts = comment_only(env.opts());

    env.summary(&opts, &failed("r-head", SHA_HEAD, 1), "RUN_FINISH")
        .await
        .unwrap();
    let before = env.comments(7)[0].body.clone();
    // The old commit's run finishes later (and was even created later).
    let mut late = to_value(passed("r-old", SHA_OLD));
    late["createdAt"] = json!("2026-03-02T11:00:00Z");
    let r = env
        .summary(&opts, &to_run(late), "RUN_FINISH")
        .await
        .unwrap();
    match &r.comments[0] {
        SummaryOutcome::Skipped(reason) => {
            assert!(reason.contains("no longer the head"), "{reason}")
        }
        o => panic!("{o:?}"),
    }
    assert_eq!(env.comments(7)[0].body, before);
    assert_eq!(env.count_writes("PATCH", "/comments"), 0);

    // A newer run for the head does replace it.
    let mut newer = to_value(passed("r-head2", SHA_HEAD));
    newer["createdAt"] = json!("2026-03-02T12:00:00Z");
    env.summary(&opts, &to_run(newer), "RUN_FINISH")
        .await
        .unwrap();
    let body = &env.comments(7)[0].body;
    assert!(
        body.contains("✅ Passed") && body.contains("/run/r-head2"),
        "{body}"
    );
}

#[tokio::test]
async fn the_comment_is_found_by_its_marker_when_its_id_is_unknown() {
    let env = Env::new().await;
    env.pr(7, BRANCH, SHA_HEAD);
    let opts = comment_only(env.opts());
    // 120 other comments first: ours is on the second page. Posting them in a moment is
    // past GitHub's secondary limit (80 a minute), so the setup goes without it.
    env.sim.set_github_content_limits(None);
    for i in 0..120 {
        env.gh
            .create_comment(
                &REPO.parse().unwrap(),
                7,
                &format!("LGTM {i} {MARKER} quoted"),
            )
            .await
            .unwrap();
    }
    env.summary(&opts, &running("r1", SHA_HEAD), "RUN_START")
        .await
        .unwrap();
    let ours = env.comments(7).last().unwrap().id;

    // A fresh client (a restart: no remembered id) edits the same comment.
    let fresh = client(&env.sim.github_url(), Duration::from_secs(3));
    env.sim.clear_log();
    let r = env
        .summary_with(
            &fresh,
            &opts,
            &passed("r1", SHA_HEAD),
            "RUN_FINISH",
            None,
            false,
        )
        .await
        .unwrap();
    assert_eq!(
        r.comments,
        vec![SummaryOutcome::Posted {
            pr: 7,
            comment_id: ours,
            created: false
        }]
    );
    assert_eq!(env.count_writes("POST", "/comments"), 0);
    assert_eq!(env.comments(7).len(), 121);
}

#[tokio::test]
async fn a_post_answered_502_after_creating_does_not_duplicate_the_comment() {
    for kind in [
        FaultKind::Status {
            status: 502,
            body: None,
            retry_after: None,
        },
        FaultKind::Html { status: 504 },
        FaultKind::Drop,
    ] {
        let env = Env::new().await;
        env.pr(7, BRANCH, SHA_HEAD);
        let opts = comment_only(env.opts());
        env.sim.inject_fault(
            Fault::new(kind.clone())
                .on("POST", "/github/repos/acme/web/issues/7/comments")
                .applied(),
        );
        let r = env
            .summary(&opts, &failed("r1", SHA_HEAD, 1), "RUN_FINISH")
            .await
            .unwrap();
        assert!(
            matches!(r.comments[0], SummaryOutcome::Posted { created: true, .. }),
            "{kind:?}: {r:?}"
        );
        assert_eq!(env.comments(7).len(), 1, "{kind:?}: exactly one comment");
        assert_eq!(
            env.count_writes("POST", "/comments"),
            1,
            "{kind:?}: no blind second POST"
        );
    }
}

#[tokio::test]
async fn a_post_that_failed_without_creating_is_posted_again_after_checking() {
    let env = Env::new().await;
    env.pr(7, BRANCH, SHA_HEAD);
    let opts = comment_only(env.opts());
    env.fault(
        "POST",
        "/github/repos/acme/web/issues/7/comments",
        FaultKind::Status {
            status: 502,
            body: None,
            retry_after: None,
        },
        Some(1),
    );
    let r = env
        .summary(&opts, &failed("r1", SHA_HEAD, 1), "RUN_FINISH")
        .await
        .unwrap();
    assert!(
        matches!(r.comments[0], SummaryOutcome::Posted { created: true, .. }),
        "{r:?}"
    );
    assert_eq!(env.comments(7).len(), 1);
    assert_eq!(env.count_writes("POST", "/comments"), 2);
}

#[tokio::test]
async fn a_timed_out_post_is_checked_before_posting_again() {
    let env = Env::new().await;
    env.pr(7, BRANCH, SHA_HEAD);
    let opts = comment_only(env.opts());
    let gh = client(&env.sim.github_url(), Duration::from_millis(300));
    env.fault(
        "POST",
        "/github/repos/acme/web/issues/7/comments",
        FaultKind::Latency { ms: 1000 },
        Some(1),
    );
    let r = env
        .summary_with(
            &gh,
            &opts,
            &failed("r1", SHA_HEAD, 1),
            "RUN_FINISH",
            None,
            false,
        )
        .await
        .unwrap();
    assert!(
        matches!(r.comments[0], SummaryOutcome::Posted { created: true, .. }),
        "{r:?}"
    );
    // Give a request that outlived its client a chance to land.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(env.comments(7).len(), 1, "{:?}", env.writes());
}

#[tokio::test]
async fn concurrent_summaries_for_one_pr_make_one_comment_with_both_sections() {
    let env = Env::new().await;
    env.pr(7, BRANCH, SHA_HEAD);
    let opts = comment_only(env.opts());
    let a = failed("r1", SHA_HEAD, 1);
    let b = to_run(merge(run_value("r2", SHA_HEAD), json!({"tags": ["smoke"]})));
    let (x, y) = tokio::join!(
        env.summary(&opts, &a, "RUN_FINISH"),
        env.summary(&opts, &b, "RUN_FINISH")
    );
    x.unwrap();
    y.unwrap();
    let c = env.comments(7);
    assert_eq!(c.len(), 1);
    assert_eq!(SummaryDoc::parse(&c[0].body).unwrap().sections.len(), 2);
    // The PR's lock is forgotten once both are done.
    assert_eq!(env.gh.pr_locks_in_use(), 0);
}

#[tokio::test]
async fn statuses_go_pending_then_success_with_the_context_and_a_short_description() {
    let env = Env::new().await;
    env.pr(7, BRANCH, SHA_HEAD);
    let mut opts = env.opts();
    opts.comment = false;

    let r = env
        .summary(&opts, &running("r1", SHA_HEAD), "RUN_START")
        .await
        .unwrap();
    assert!(
        matches!(
            r.status,
            Some(StatusOutcome::Posted {
                state: StatusState::Pending,
                ..
            })
        ),
        "{r:?}"
    );
    assert!(r.comments.is_empty());
    let r = env
        .summary(&opts, &passed("r1", SHA_HEAD), "RUN_FINISH")
        .await
        .unwrap();
    assert!(
        matches!(
            r.status,
            Some(StatusOutcome::Posted {
                state: StatusState::Success,
                ..
            })
        ),
        "{r:?}"
    );

    let st = env.sim.statuses(Some(REPO), Some(SHA_HEAD));
    let states: Vec<&str> = st.iter().map(|s| s.state.as_str()).collect();
    assert_eq!(states, ["pending", "success"]);
    for s in &st {
        assert_eq!(s.context, "runwarden/bAYZ4a");
        assert_eq!(
            s.target_url.as_deref(),
            Some("https://app.currents.dev/run/r1")
        );
        assert!(s.description.as_deref().unwrap().chars().count() <= 140);
    }
    assert_eq!(
        st[1].description.as_deref(),
        Some("Passed: 118 passed, 2 flaky, 2 skipped in 4m 12s")
    );
    assert!(env.comments(7).is_empty(), "comment = false");

    // The same again: nothing new. A late RUN_START: not back to pending.
    let r = env
        .summary(&opts, &passed("r1", SHA_HEAD), "RUN_FINISH")
        .await
        .unwrap();
    assert!(
        matches!(r.status, Some(StatusOutcome::Unchanged { .. })),
        "{r:?}"
    );
    let r = env
        .summary(&opts, &running("r1", SHA_HEAD), "RUN_START")
        .await
        .unwrap();
    assert!(matches!(r.status, Some(StatusOutcome::Skipped(_))), "{r:?}");
    assert_eq!(env.sim.statuses(Some(REPO), Some(SHA_HEAD)).len(), 2);

    // A new run on the same commit goes pending again.
    let r = env
        .summary(&opts, &running("r2", SHA_HEAD), "RUN_START")
        .await
        .unwrap();
    assert!(
        matches!(
            r.status,
            Some(StatusOutcome::Posted {
                state: StatusState::Pending,
                ..
            })
        ),
        "{r:?}"
    );
}

#[tokio::test]
async fn a_long_cancel_reason_still_makes_a_valid_status() {
    let env = Env::new().await;
    let mut opts = env.opts();
    opts.comment = false;
    opts.status_context = "ci/{project}/e2e".into();
    let reason = "superseded ".repeat(40);
    let r = env
        .summary_with(
            &env.gh,
            &opts,
            &cancelled("r1", SHA_OLD),
            "RUN_CANCELED",
            Some(("cancel-superseded", &reason)),
            false,
        )
        .await
        .unwrap();
    assert!(
        matches!(
            r.status,
            Some(StatusOutcome::Posted {
                state: StatusState::Error,
                ..
            })
        ),
        "{r:?}"
    );
    let st = env.sim.statuses(Some(REPO), Some(SHA_OLD));
    assert_eq!(st.len(), 1);
    assert_eq!(st[0].context, "ci/bAYZ4a/e2e");
    assert_eq!(st[0].description.as_deref().unwrap().chars().count(), 140);
}

#[tokio::test]
async fn dry_run_sends_no_mutating_request() {
    let env = Env::new().await;
    env.pr(7, BRANCH, SHA_HEAD);
    let opts = env.opts();
    // First, for real: a comment exists.
    env.summary(&opts, &running("r1", SHA_HEAD), "RUN_START")
        .await
        .unwrap();
    env.sim.clear_log();

    let r = env
        .summary_with(
            &env.gh,
            &opts,
            &failed("r1", SHA_HEAD, 2),
            "RUN_FINISH",
            None,
            true,
        )
        .await
        .unwrap();
    let bodies = r.dry_run_bodies();
    assert_eq!(bodies.len(), 1, "{r:?}");
    assert!(bodies[0].starts_with(MARKER) && bodies[0].contains("❌ Failed"));
    assert!(
        matches!(
            r.status,
            Some(StatusOutcome::DryRun {
                state: StatusState::Failure,
                ..
            })
        ),
        "{r:?}"
    );
    assert_eq!(env.writes(), vec![], "dry run: no POST or PATCH");
    assert!(
        env.comments(7)[0].body.contains("⏳ Running"),
        "the comment is untouched"
    );

    // And on a PR without a comment yet.
    env.pr(8, "feat/other", SHA_OTHER);
    let mut other = to_value(failed("r2", SHA_OTHER, 1));
    other["meta"]["commit"]["branch"] = json!("feat/other");
    let r = env
        .summary_with(&env.gh, &opts, &to_run(other), "RUN_FINISH", None, true)
        .await
        .unwrap();
    assert_eq!(r.dry_run_bodies().len(), 1);
    assert_eq!(env.writes(), vec![]);
    assert!(env.comments(8).is_empty());
}

#[tokio::test]
async fn only_failed_skips_passing_runs_unless_their_section_exists() {
    let env = Env::new().await;
    env.pr(7, BRANCH, SHA_HEAD);
    let mut opts = comment_only(env.opts());
    opts.only_failed = true;

    let r = env
        .summary(&opts, &passed("r1", SHA_HEAD), "RUN_FINISH")
        .await
        .unwrap();
    assert!(
        matches!(&r.comments[0], SummaryOutcome::Skipped(s) if s.contains("only_failed")),
        "{r:?}"
    );
    assert!(env.comments(7).is_empty());

    env.summary(&opts, &failed("r2", SHA_HEAD, 1), "RUN_FINISH")
        .await
        .unwrap();
    assert_eq!(env.comments(7).len(), 1);
    // The group's next run passes: its section is updated, not left saying "failed".
    let mut fixed = to_value(passed("r3", SHA_HEAD));
    fixed["createdAt"] = json!("2026-03-02T11:00:00Z");
    let r = env
        .summary(&opts, &to_run(fixed), "RUN_FINISH")
        .await
        .unwrap();
    assert!(
        matches!(r.comments[0], SummaryOutcome::Posted { created: false, .. }),
        "{r:?}"
    );
    assert!(env.comments(7)[0].body.contains("✅ Passed"));
}

#[tokio::test]
async fn events_not_in_the_rule_are_skipped_without_requests() {
    let env = Env::new().await;
    env.pr(7, BRANCH, SHA_HEAD);
    let mut opts = env.opts();
    opts.events = vec!["RUN_FINISH".into()];
    let r = env
        .summary(&opts, &running("r1", SHA_HEAD), "RUN_START")
        .await
        .unwrap();
    assert!(r.is_skipped(), "{r:?}");
    assert!(r.to_string().contains("RUN_START"), "{r}");
    assert!(
        env.sim
            .request_counts()
            .keys()
            .all(|k| !k.starts_with("github")),
        "{:?}",
        env.sim.request_counts()
    );
    // The British spelling and lower case are the same event.
    let r = env
        .summary(
            &comment_only(env.opts()),
            &cancelled("r1", SHA_HEAD),
            "run_cancelled",
        )
        .await
        .unwrap();
    assert!(
        matches!(r.comments[0], SummaryOutcome::Posted { created: true, .. }),
        "{r:?}"
    );
}

#[tokio::test]
async fn repositories_resolve_from_the_mapping_or_the_remote_origin() {
    let env = Env::new().await;
    let github_com = config_for("https://api.github.com");
    // Mapped project: github.repos wins over remoteOrigin.
    let mut v = to_value(passed("r1", SHA_HEAD));
    v["meta"]["commit"]["remoteOrigin"] = json!("git@github.com:someone/else.git");
    assert_eq!(
        resolve_repo(&env.config, &to_run(v)).unwrap().to_string(),
        "acme/web"
    );
    // Unmapped project: each remote form.
    for origin in [
        "https://github.com/acme/api",
        "https://github.com/acme/api.git",
        "git@github.com:acme/api.git",
        "ssh://git@github.com/acme/api.git",
        "https://x-access-token:secret@github.com/acme/api.git",
    ] {
        assert_eq!(
            resolve_repo(&github_com, &unmapped_run(origin))
                .unwrap()
                .to_string(),
            "acme/api",
            "{origin}"
        );
    }
    // Unresolvable: skipped with the reason, no request, the secret not echoed.
    let mut v = to_value(passed("r1", SHA_HEAD));
    v["projectId"] = json!("k9Pq2");
    v["meta"]["commit"]["remoteOrigin"] = json!("https://u:s3cret@gitlab.com/a/b/c.git");
    let r = env
        .summary(&env.opts(), &to_run(v), "RUN_FINISH")
        .await
        .unwrap();
    assert!(r.is_skipped(), "{r:?}");
    let text = r.to_string();
    assert!(
        text.contains("no repository for project k9Pq2") && !text.contains("s3cret"),
        "{text}"
    );
    assert!(
        env.sim
            .request_counts()
            .keys()
            .all(|k| !k.starts_with("github"))
    );

    // An unmapped project posts to the repo of its remote.
    env.sim
        .add_pr(NewPr {
            repo: "acme/api".into(),
            number: Some(3),
            head_ref: Some(BRANCH.into()),
            head_sha: Some(SHA_HEAD.into()),
            ..NewPr::default()
        })
        .unwrap();
    // (A remote on the simulator's host: the GitHub of its api_url.)
    let host = url::Url::parse(&env.sim.github_url()).unwrap();
    let origin = format!(
        "http://{}:{}/acme/api.git",
        host.host_str().unwrap(),
        host.port().unwrap()
    );
    let r = env
        .summary(
            &comment_only(env.opts()),
            &unmapped_run(&origin),
            "RUN_FINISH",
        )
        .await
        .unwrap();
    assert_eq!(r.repo.as_deref(), Some("acme/api"));
    assert_eq!(env.sim.comments(Some("acme/api"), Some(3)).len(), 1);
}

/// The config of these tests with `api` as `github.api_url`.
fn config_for(api: &str) -> Config {
    load_str(&config_text(api), "rules.toml", &[])
        .unwrap()
        .config
}

/// A passed run of the unmapped project k9Pq2 whose `remoteOrigin` is `origin`.
fn unmapped_run(origin: &str) -> Run {
    let mut v = to_value(passed("r1", SHA_HEAD));
    v["projectId"] = json!("k9Pq2");
    v["meta"]["commit"]["remoteOrigin"] = json!(origin);
    to_run(v)
}

/// Repro: with `api_url` github.com, an unmapped project's run from
/// `https://gitlab.com/acme/api.git`, `git@bitbucket.org:acme/api.git` or a GitHub
/// Enterprise host resolved to `acme/api` and was summarised on github.com's same-named
/// repository. A remote counts only on the GitHub of `api_url`; others are skipped, with
/// the reason, without a request.
#[tokio::test]
async fn a_remote_on_another_host_than_the_github_api_is_not_summarised() {
    let github_com = config_for("https://api.github.com");
    for origin in [
        "https://github.com/acme/api.git",
        "https://GitHub.com./acme/api",
        "https://www.github.com/acme/api.git",
        "ssh://git@ssh.github.com:443/acme/api.git",
        "git@github.com:acme/api.git",
        "https://api.github.com/acme/api",
    ] {
        assert_eq!(
            resolve_repo(&github_com, &unmapped_run(origin))
                .map(|r| r.to_string())
                .as_deref(),
            Ok("acme/api"),
            "{origin}"
        );
    }
    for (origin, host) in [
        ("https://gitlab.com/acme/api.git", "gitlab.com"),
        ("git@bitbucket.org:acme/api.git", "bitbucket.org"),
        ("https://ghe.example.com/acme/api.git", "ghe.example.com"),
        ("ssh://git@gitlab.com:2222/acme/api.git", "gitlab.com"),
        (
            "https://u:s3cret@github.com.evil.test/acme/api",
            "github.com.evil.test",
        ),
        ("https://notgithub.com/acme/api", "notgithub.com"),
    ] {
        let why = resolve_repo(&github_com, &unmapped_run(origin)).unwrap_err();
        assert!(
            why.contains(&format!(
                "is on {host}, not on the GitHub of github.api_url (api.github.com)"
            )) && why.contains("no repository for project k9Pq2")
                && !why.contains("s3cret"),
            "{origin}: {why}"
        );
    }
    // GitHub Enterprise Server: its API is on its own host.
    let ghe = config_for("https://ghe.example.com/api/v3");
    assert_eq!(
        resolve_repo(&ghe, &unmapped_run("git@ghe.example.com:acme/api.git"))
            .unwrap()
            .to_string(),
        "acme/api"
    );
    for origin in [
        "https://github.com/acme/api.git",
        "https://example.com/acme/api.git",
    ] {
        assert!(
            resolve_repo(&ghe, &unmapped_run(origin)).is_err(),
            "{origin}"
        );
    }
    // GHE.com: api.{tenant}.ghe.com pairs with {tenant}.ghe.com.
    let tenant = config_for("https://api.acme.ghe.com");
    assert!(resolve_repo(&tenant, &unmapped_run("https://acme.ghe.com/acme/api.git")).is_ok());
    assert!(resolve_repo(&tenant, &unmapped_run("https://github.com/acme/api.git")).is_err());

    // End to end: skipped with the reason, and nothing asked of GitHub, although the
    // same-named repository has a PR for the commit.
    let env = Env::new().await;
    env.sim
        .add_pr(NewPr {
            repo: "acme/api".into(),
            number: Some(3),
            head_ref: Some(BRANCH.into()),
            head_sha: Some(SHA_HEAD.into()),
            ..NewPr::default()
        })
        .unwrap();
    let r = env
        .summary(
            &env.opts(),
            &unmapped_run("https://github.com/acme/api.git"),
            "RUN_FINISH",
        )
        .await
        .unwrap();
    assert!(r.is_skipped() && r.repo.is_none(), "{r:?}");
    assert!(r.to_string().contains("is on github.com"), "{r}");
    assert!(env.sim.comments(Some("acme/api"), Some(3)).is_empty());
    assert!(
        env.sim
            .request_counts()
            .keys()
            .all(|k| !k.starts_with("github")),
        "{:?}",
        env.sim.request_counts()
    );
}

#[tokio::test]
async fn pull_requests_are_found_by_head_sha_first_then_by_branch_and_only_open() {
    let env = Env::new().await;
    let repo: RepoName = REPO.parse().unwrap();
    let numbers = |prs: Vec<runwarden::github::client::PullRef>| {
        let mut n: Vec<u64> = prs.iter().map(|p| p.number).collect();
        n.sort();
        n
    };
    // #1: head is the run's sha. #2: same branch name, another sha (a fork's PR, say).
    // #3: closed, head is the sha.
    env.pr(1, BRANCH, SHA_HEAD);
    env.pr(2, BRANCH, SHA_OTHER);
    env.sim
        .add_pr(NewPr {
            repo: REPO.into(),
            number: Some(3),
            head_ref: Some("old".into()),
            head_sha: Some(SHA_HEAD.into()),
            state: Some("closed".into()),
            ..NewPr::default()
        })
        .unwrap();
    let prs = discover_prs(&env.gh, &repo, Some(&repo), Some(SHA_HEAD), Some(BRANCH))
        .await
        .unwrap();
    assert_eq!(numbers(prs), [1], "head sha first; closed ignored");

    // The sha is an older commit of #4: found through its branch.
    env.pr(4, "feat/b", SHA_OLD);
    env.pr(4, "feat/b", "a94a8fe5ccb19ba61c4c0873d391e987982fbbd3");
    let prs = discover_prs(&env.gh, &repo, Some(&repo), Some(SHA_OLD), Some("feat/b"))
        .await
        .unwrap();
    assert_eq!(numbers(prs), [4]);

    // A sha GitHub does not know (a merge commit): the branch's open PRs.
    let prs = discover_prs(
        &env.gh,
        &repo,
        Some(&repo),
        Some("deadbeefdeadbeefdeadbeefdeadbeefdeadbeef"),
        Some("feat/b"),
    )
    .await
    .unwrap();
    assert_eq!(numbers(prs), [4]);

    // Closed PRs are never found by branch either.
    env.sim
        .add_pr(NewPr {
            repo: REPO.into(),
            number: Some(4),
            state: Some("closed".into()),
            ..NewPr::default()
        })
        .unwrap();
    let prs = discover_prs(&env.gh, &repo, Some(&repo), Some(SHA_OLD), Some("feat/b"))
        .await
        .unwrap();
    assert_eq!(numbers(prs), Vec::<u64>::new());

    // No PR: the summary says so and writes nothing.
    env.sim.clear_log();
    let mut v = to_value(passed("r1", SHA_OLD));
    v["meta"]["commit"]["branch"] = json!("feat/b");
    let r = env
        .summary(&comment_only(env.opts()), &to_run(v), "RUN_FINISH")
        .await
        .unwrap();
    assert!(
        matches!(&r.comments[0], SummaryOutcome::Skipped(s) if s.contains("no open pull request")),
        "{r:?}"
    );
    assert_eq!(env.writes(), vec![]);
}

#[tokio::test]
async fn a_commit_heading_two_prs_gets_a_comment_on_each() {
    let env = Env::new().await;
    env.pr(1, BRANCH, SHA_HEAD);
    env.sim
        .add_pr(NewPr {
            repo: REPO.into(),
            number: Some(2),
            head_ref: Some(BRANCH.into()),
            head_sha: Some(SHA_HEAD.into()),
            base_ref: Some("release/1.x".into()),
            ..NewPr::default()
        })
        .unwrap();
    let r = env
        .summary(
            &comment_only(env.opts()),
            &failed("r1", SHA_HEAD, 1),
            "RUN_FINISH",
        )
        .await
        .unwrap();
    assert_eq!(r.comments.len(), 2, "{r:?}");
    assert_eq!(env.comments(1).len(), 1);
    assert_eq!(env.comments(2).len(), 1);
}

#[tokio::test]
async fn rate_limits_and_server_errors_are_retried_for_reads_and_idempotent_writes() {
    let env = Env::new().await;
    env.pr(7, BRANCH, SHA_HEAD);
    let opts = env.opts();
    // A secondary limit without headers on the PR lookup, a 429 with Retry-After on the
    // comment POST (rejected, so posting again is safe), a 503 on the status.
    env.fault(
        "GET",
        "/github/repos/acme/web/commits",
        FaultKind::RateLimit {
            status: 403,
            retry_after: None,
            reset_after: None,
        },
        Some(1),
    );
    env.fault(
        "POST",
        "/github/repos/acme/web/issues",
        FaultKind::RateLimit {
            status: 429,
            retry_after: Some(0),
            reset_after: None,
        },
        Some(1),
    );
    env.fault(
        "POST",
        "/github/repos/acme/web/statuses",
        FaultKind::Status {
            status: 503,
            body: None,
            retry_after: None,
        },
        Some(2),
    );
    let r = env
        .summary(&opts, &failed("r1", SHA_HEAD, 1), "RUN_FINISH")
        .await
        .unwrap();
    assert!(
        matches!(r.comments[0], SummaryOutcome::Posted { created: true, .. }),
        "{r:?}"
    );
    assert!(
        matches!(r.status, Some(StatusOutcome::Posted { .. })),
        "{r:?}"
    );
    assert_eq!(env.comments(7).len(), 1);
    assert_eq!(
        env.count_writes("POST", "/comments"),
        2,
        "{:?}",
        env.writes()
    );
    assert_eq!(env.sim.statuses(Some(REPO), Some(SHA_HEAD)).len(), 1);

    // A PATCH answered 500 is retried too.
    env.fault(
        "PATCH",
        "/github/repos/acme/web/issues/comments",
        FaultKind::Status {
            status: 500,
            body: None,
            retry_after: None,
        },
        Some(1),
    );
    let r = env
        .summary(&opts, &passed("r1", SHA_HEAD), "RUN_FINISH")
        .await
        .unwrap();
    assert!(
        matches!(r.comments[0], SummaryOutcome::Posted { created: false, .. }),
        "{r:?}"
    );
    assert!(env.comments(7)[0].body.contains("✅ Passed"));
}

#[tokio::test]
async fn a_long_rate_limit_is_handed_back_instead_of_slept_through() {
    let env = Env::new().await;
    env.pr(7, BRANCH, SHA_HEAD);
    env.sim.inject_fault(
        Fault::new(FaultKind::RateLimit {
            status: 403,
            retry_after: None,
            reset_after: Some(3600),
        })
        .path("/github")
        .always(),
    );
    let t = Instant::now();
    let e = env
        .summary(&env.opts(), &failed("r1", SHA_HEAD, 1), "RUN_FINISH")
        .await
        .unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert!(e.retryable, "{e}");
    let wait = e.retry_after.expect("the reset time");
    assert!(
        wait > Duration::from_secs(3000) && wait <= Duration::from_secs(3600),
        "{wait:?}"
    );
    assert!(!e.message.contains(TOKEN));
    assert!(env.comments(7).is_empty());
}

#[tokio::test]
async fn a_default_client_hands_back_a_rate_limit_over_ten_seconds_and_holds_back_other_summaries()
{
    // Production's retry policy: a 30 s Retry-After is not slept through (that would hold
    // an executor slot), and another summary, for another PR, meanwhile sends nothing.
    let env = Env::new().await;
    env.pr(7, BRANCH, SHA_HEAD);
    env.pr(8, "feat/other", SHA_OTHER);
    let gh = GithubClient::new(
        GithubClientOptions::new(url::Url::parse(&env.sim.github_url()).unwrap()),
        GithubAuth::Token(Secret::new(TOKEN)),
    )
    .unwrap();
    env.fault(
        "GET",
        "/github/repos/acme/web/commits",
        FaultKind::RateLimit {
            status: 429,
            retry_after: Some(30),
            reset_after: None,
        },
        Some(1),
    );
    let github_requests = || -> u64 {
        env.sim
            .request_counts()
            .iter()
            .filter(|(k, _)| k.starts_with("github "))
            .map(|(_, n)| *n)
            .sum()
    };
    let opts = env.opts();
    let first = tokio::time::timeout(
        Duration::from_secs(5),
        env.summary_with(
            &gh,
            &opts,
            &failed("r1", SHA_HEAD, 1),
            "RUN_FINISH",
            None,
            false,
        ),
    )
    .await
    .expect("handed back, not slept through")
    .unwrap_err();
    assert!(first.retryable, "{first}");
    let wait = first.retry_after.expect("the wait");
    assert!(
        wait > Duration::from_secs(28) && wait <= Duration::from_secs(30),
        "{wait:?}"
    );
    assert_eq!(github_requests(), 1);

    let mut with_status = opts.clone();
    with_status.commit_status = true;
    let t = Instant::now();
    let second = env
        .summary_with(
            &gh,
            &with_status,
            &failed("r2", SHA_OTHER, 1),
            "RUN_FINISH",
            None,
            false,
        )
        .await
        .unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    assert!(second.retryable, "{second}");
    let left = second.retry_after.expect("the wait left");
    assert!(left > Duration::from_secs(27) && left <= wait, "{left:?}");
    assert!(second.message.contains("not sent"), "{second}");
    assert_eq!(github_requests(), 1, "{:?}", env.sim.request_counts());
    assert!(env.comments(7).is_empty() && env.comments(8).is_empty());
    assert!(env.sim.statuses(Some(REPO), None).is_empty());
}

#[tokio::test]
async fn a_rate_limit_on_a_later_pr_postpones_the_retry_of_the_whole_summary() {
    // Two PRs share the run's head: the first one's comment step fails with a 5xx, then
    // the second's meets a long rate limit. The error reports the first, but its retry
    // waits for the rate limit, not for the executor's short backoff.
    let env = Env::new().await;
    env.pr(7, BRANCH, SHA_HEAD);
    env.pr(9, "feat/login-2", SHA_HEAD);
    let repo: RepoName = REPO.parse().unwrap();
    let order: Vec<u64> = discover_prs(&env.gh, &repo, Some(&repo), Some(SHA_HEAD), Some(BRANCH))
        .await
        .unwrap()
        .iter()
        .map(|p| p.number)
        .collect();
    assert_eq!(order.len(), 2, "{order:?}");
    for (path, kind) in [
        (
            format!("/github/repos/acme/web/issues/{}/comments", order[0]),
            FaultKind::Status {
                status: 500,
                body: None,
                retry_after: None,
            },
        ),
        (
            format!("/github/repos/acme/web/issues/{}/comments", order[1]),
            FaultKind::RateLimit {
                status: 403,
                retry_after: Some(600),
                reset_after: None,
            },
        ),
    ] {
        env.sim
            .inject_fault(Fault::new(kind).on("GET", path).always());
    }
    let e = env
        .summary(
            &comment_only(env.opts()),
            &failed("r1", SHA_HEAD, 1),
            "RUN_FINISH",
        )
        .await
        .unwrap_err();
    assert!(e.retryable, "{e}");
    assert!(e.message.contains("500"), "{e}");
    let wait = e.retry_after.expect("the rate limit's wait");
    assert!(
        wait > Duration::from_secs(590) && wait <= Duration::from_secs(600),
        "{wait:?}"
    );
}

#[tokio::test]
async fn permanent_errors_are_not_retried() {
    let env = Env::new().await;
    env.pr(7, BRANCH, SHA_HEAD);
    env.fault(
        "POST",
        "/github/repos/acme/web/issues",
        FaultKind::Status {
            status: 403,
            body: Some(r#"{"message":"Resource not accessible by integration"}"#.into()),
            retry_after: None,
        },
        None,
    );
    let e = env
        .summary(
            &comment_only(env.opts()),
            &failed("r1", SHA_HEAD, 1),
            "RUN_FINISH",
        )
        .await
        .unwrap_err();
    assert!(!e.retryable, "{e}");
    assert!(e.message.contains("Resource not accessible"), "{e}");
    assert_eq!(env.count_writes("POST", "/comments"), 1);
}

#[tokio::test]
async fn a_wrong_token_is_refused_and_never_echoed() {
    let env = Env::new().await;
    env.pr(7, BRANCH, SHA_HEAD);
    let bad = client_with_auth(
        &env.sim.github_url(),
        Duration::from_secs(3),
        GithubAuth::Token(Secret::new("wrong-token-value")),
    );
    let e = env
        .summary_with(
            &bad,
            &env.opts(),
            &failed("r1", SHA_HEAD, 1),
            "RUN_FINISH",
            None,
            false,
        )
        .await
        .unwrap_err();
    assert!(!e.retryable);
    assert!(e.message.contains("401"), "{e}");
    assert!(
        !e.message.contains("wrong-token-value") && !format!("{e:?}").contains("wrong-token-value")
    );
}

#[tokio::test]
async fn github_app_installation_tokens_are_created_cached_and_renewed() {
    let env = Env::new().await;
    env.pr(7, BRANCH, SHA_HEAD);
    let signed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = signed.clone();
    let app = GithubAuth::App {
        app_id: 424242,
        jwt: Arc::new(move || {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok("eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOjQyNDI0Mn0.c2lnbmF0dXJl".to_string())
        }),
    };
    let gh = client_with_auth(&env.sim.github_url(), Duration::from_secs(3), app);
    let opts = env.opts();
    env.summary_with(
        &gh,
        &opts,
        &running("r1", SHA_HEAD),
        "RUN_START",
        None,
        false,
    )
    .await
    .unwrap();
    env.summary_with(
        &gh,
        &opts,
        &failed("r1", SHA_HEAD, 1),
        "RUN_FINISH",
        None,
        false,
    )
    .await
    .unwrap();
    assert_eq!(
        env.count_writes("POST", "/access_tokens"),
        1,
        "one token, cached"
    );
    assert_eq!(env.comments(7).len(), 1);
    assert_eq!(env.comments(7)[0].user, "runwarden[bot]");
    assert_eq!(env.sim.statuses(Some(REPO), Some(SHA_HEAD)).len(), 2);

    // Revoked: the 401 drops the cached token and a new one is created.
    env.sim.expire_installation_tokens();
    env.summary_with(
        &gh,
        &opts,
        &passed("r1", SHA_HEAD),
        "RUN_FINISH",
        None,
        false,
    )
    .await
    .unwrap();
    assert_eq!(env.count_writes("POST", "/access_tokens"), 2);
    assert!(env.comments(7)[0].body.contains("✅ Passed"));
    assert!(signed.load(std::sync::atomic::Ordering::SeqCst) >= 2);
}

/// Repro 3: the App is uninstalled and installed again (a new installation id). The
/// cached id used to be asked for tokens forever (404 on every call until a restart);
/// now a 404 there forgets it, and the installation is looked up once more.
#[tokio::test]
async fn a_reinstalled_github_app_is_looked_up_again() {
    let env = Env::new().await;
    env.pr(7, BRANCH, SHA_HEAD);
    let app = GithubAuth::App {
        app_id: 424242,
        jwt: Arc::new(|| Ok("eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOjQyNDI0Mn0.c2lnbmF0dXJl".to_string())),
    };
    let gh = client_with_auth(&env.sim.github_url(), Duration::from_secs(3), app);
    let opts = env.opts();
    env.summary_with(
        &gh,
        &opts,
        &running("r1", SHA_HEAD),
        "RUN_START",
        None,
        false,
    )
    .await
    .unwrap();
    assert_eq!(sent(&gh, "installation"), 1);
    let token_posts = |status: u16| {
        env.writes()
            .iter()
            .filter(|(m, p, st)| m == "POST" && p.ends_with("/access_tokens") && *st == status)
            .map(|(_, p, _)| p.clone())
            .collect::<Vec<_>>()
    };
    let first = token_posts(201);
    assert_eq!(first.len(), 1);

    let new_id = env.sim.reinstall_github_app("acme");
    let r = env
        .summary_with(
            &gh,
            &opts,
            &passed("r1", SHA_HEAD),
            "RUN_FINISH",
            None,
            false,
        )
        .await
        .unwrap();
    assert!(
        matches!(
            &r.comments[..],
            [SummaryOutcome::Posted { created: false, .. }]
        ),
        "{r:?}"
    );
    assert!(env.comments(7)[0].body.contains("✅ Passed"));
    assert_eq!(
        statuses_of(&env, SHA_HEAD, "runwarden/bAYZ4a")
            .last()
            .unwrap()
            .state,
        "success"
    );
    // One more lookup; the old id's 404 once, then a token of the new installation.
    assert_eq!(sent(&gh, "installation"), 2);
    assert_eq!(token_posts(404), first);
    let created = token_posts(201);
    assert_eq!(created.len(), 2);
    assert!(
        created[1].ends_with(&format!("/app/installations/{new_id}/access_tokens")),
        "{created:?}"
    );
    // And it stays found: the next summary asks for nothing more.
    env.summary_with(
        &gh,
        &opts,
        &passed("r1", SHA_HEAD),
        "RUN_FINISH",
        None,
        false,
    )
    .await
    .unwrap();
    assert_eq!(sent(&gh, "installation"), 2);
    assert_eq!(token_posts(201).len(), 2);
}

#[tokio::test]
async fn a_template_that_fails_to_render_is_a_permanent_error() {
    let env = Env::new().await;
    env.pr(7, BRANCH, SHA_HEAD);
    let mut opts = comment_only(env.opts());
    opts.template = Some(("broken.j2".into(), "{{ sections | no_such_filter }}".into()));
    let e = env
        .summary(&opts, &failed("r1", SHA_HEAD, 1), "RUN_FINISH")
        .await
        .unwrap_err();
    assert!(!e.retryable);
    assert!(e.message.contains("broken.j2"), "{e}");
    assert!(env.comments(7).is_empty());
}

#[tokio::test]
async fn the_largest_body_is_accepted_by_github() {
    let env = Env::new().await;
    env.pr(7, BRANCH, SHA_HEAD);
    let mut opts = comment_only(env.opts());
    opts.max_failed_specs = 1000;
    let mut run = failed("r1", SHA_HEAD, 12);
    for (i, s) in run.specs.iter_mut().enumerate() {
        s.spec = format!("{i}{}", "y".repeat(9_000));
    }
    let r = env.summary(&opts, &run, "RUN_FINISH").await.unwrap();
    assert!(
        matches!(r.comments[0], SummaryOutcome::Posted { created: true, .. }),
        "{r:?}"
    );
    let body = &env.comments(7)[0].body;
    assert!(body.chars().count() <= GITHUB_BODY_LIMIT);
    assert!(body.contains("shortened to fit"));
}

#[tokio::test]
async fn rate_limit_waits_follow_retry_after_or_the_secondary_limit_floor() {
    let env = Env::new().await;
    env.pr(7, BRANCH, SHA_HEAD);
    let mut o = GithubClientOptions::new(url::Url::parse(&env.sim.github_url()).unwrap());
    o.retry = RetryPolicy {
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(2),
        secondary_limit_delay: Duration::from_millis(400),
        ..RetryPolicy::fast()
    };
    let gh = GithubClient::new(o, GithubAuth::Token(Secret::new(TOKEN))).unwrap();
    let repo: RepoName = REPO.parse().unwrap();
    let limit = |kind| Fault::new(kind).on("GET", "/github/repos/acme/web/issues/7/comments");

    // A secondary limit without headers: at least the floor.
    env.sim.inject_fault(limit(FaultKind::RateLimit {
        status: 403,
        retry_after: None,
        reset_after: None,
    }));
    let t = Instant::now();
    gh.list_comments(&repo, 7).await.unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );

    // Retry-After: that long.
    env.sim.inject_fault(limit(FaultKind::RateLimit {
        status: 429,
        retry_after: Some(1),
        reset_after: None,
    }));
    let t = Instant::now();
    gh.list_comments(&repo, 7).await.unwrap();
    assert!(t.elapsed() >= Duration::from_secs(1), "{:?}", t.elapsed());

    // A plain 5xx: the short exponential backoff.
    env.sim.inject_fault(limit(FaultKind::Status {
        status: 502,
        body: None,
        retry_after: None,
    }));
    let t = Instant::now();
    gh.list_comments(&repo, 7).await.unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn reads_survive_dropped_connections_and_malformed_answers() {
    let env = Env::new().await;
    env.pr(7, BRANCH, SHA_HEAD);
    let repo: RepoName = REPO.parse().unwrap();
    for kind in [
        FaultKind::Drop,
        FaultKind::MalformedJson,
        FaultKind::Html { status: 502 },
    ] {
        env.fault(
            "GET",
            "/github/repos/acme/web/commits",
            kind.clone(),
            Some(2),
        );
        let prs = env.gh.pulls_for_commit(&repo, SHA_HEAD).await;
        assert_eq!(prs.map(|p| p.len()).ok(), Some(1), "{kind:?}");
    }
}

/// Two summaries of one commit at once (two events of a run handled together) post its
/// status once: the second reads what the first posted, under the status's lock, and
/// finds it unchanged. The lock is forgotten afterwards.
#[tokio::test]
async fn concurrent_summaries_of_one_commit_post_its_status_once() {
    let env = Env::new().await;
    env.pr(7, BRANCH, SHA_HEAD);
    let mut opts = env.opts();
    opts.comment = false;
    let run = passed("r1", SHA_HEAD);
    let (x, y) = tokio::join!(
        env.summary(&opts, &run, "RUN_FINISH"),
        env.summary(&opts, &run, "RUN_FINISH")
    );
    let outcomes = [x.unwrap().status, y.unwrap().status];
    let posted = outcomes
        .iter()
        .filter(|s| matches!(s, Some(StatusOutcome::Posted { .. })))
        .count();
    assert_eq!(posted, 1, "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .any(|s| matches!(s, Some(StatusOutcome::Unchanged { .. }))),
        "{outcomes:?}"
    );
    assert_eq!(env.sim.statuses(Some(REPO), Some(SHA_HEAD)).len(), 1);
    assert_eq!(env.gh.status_locks_in_use(), 0);
}

// ---------------------------------------------------------------------------------------
// The commit status is the commit's: every run group of it, the newest run of each
// ---------------------------------------------------------------------------------------

/// The statuses of `context` on `sha`, oldest first.
fn statuses_of(env: &Env, sha: &str, context: &str) -> Vec<simulator::SimStatus> {
    env.sim
        .statuses(Some(REPO), Some(sha))
        .into_iter()
        .filter(|s| s.context == context)
        .collect()
}

/// `run` with tags (another run group of the same project and branch).
fn tagged(run: Run, tags: &[&str]) -> Run {
    to_run(merge(to_value(run), json!({ "tags": tags })))
}

/// `run`, created at `at`.
fn created(run: Run, at: &str) -> Run {
    to_run(merge(to_value(run), json!({ "createdAt": at })))
}

/// Repro 1a: run group `full` failed, then group `smoke` of the same commit passed. The
/// status used to say `success` (the last run to post), while the comment showed ❌ for
/// `full`; it is now the commit's: failure, naming both runs, linking the failed one.
/// Two processes (two clients, each with only its own in-process locks) posting the
/// summaries of two run groups of one PR at once, both reading "no comment" first: the
/// store's lock shared by the processes lets one at a time through, so there is one
/// comment, holding both sections.
#[tokio::test]
async fn two_processes_posting_to_one_pr_at_once_make_one_comment_with_both_sections() {
    let env = Env::new().await;
    env.pr(7, BRANCH, SHA_HEAD);
    let opts = comment_only(env.opts());
    let dir = tempfile::tempdir().unwrap();
    let store = runwarden::store::Store::connect(&format!(
        "sqlite://{}",
        dir.path().join("shared.db").display()
    ))
    .await
    .unwrap();
    // Each read of the comments is slow: without a shared lock both read before either
    // writes.
    env.fault(
        "GET",
        "/github/repos/acme/web/issues/7/comments",
        FaultKind::Latency { ms: 300 },
        None,
    );
    let (a, b) = (
        client(&env.sim.github_url(), Duration::from_secs(5)),
        client(&env.sim.github_url(), Duration::from_secs(5)),
    );
    let full = tagged(failed("r-full", SHA_HEAD, 1), &["full"]);
    let smoke = tagged(passed("r-smoke", SHA_HEAD), &["smoke"]);
    async fn post(
        env: &Env,
        opts: &SummaryOptions,
        store: &runwarden::store::Store,
        holder: &str,
        gh: &GithubClient,
        run: Run,
    ) -> Result<SummaryReport, runwarden::github::SummaryError> {
        let ctx = SummaryCtx {
            gh,
            config: &env.config,
            rule: env.rule(),
            opts,
            shared: Some(runwarden::github::summary::SharedLock { store, holder }),
        };
        post_summary(&ctx, &run, "RUN_FINISH", None, false).await
    }
    let (ra, rb) = tokio::join!(
        post(&env, &opts, &store, "process-a", &a, full),
        post(&env, &opts, &store, "process-b", &b, smoke)
    );
    ra.unwrap();
    rb.unwrap();
    let c = env.comments(7);
    assert_eq!(c.len(), 1, "one comment: {c:#?}");
    assert!(
        c[0].body.contains("❌ Failed") && c[0].body.contains("✅ Passed"),
        "both sections: {}",
        c[0].body
    );
    assert!(
        store
            .lease_holder("summary:acme/web")
            .await
            .unwrap()
            .is_none(),
        "the lock is let go"
    );
}

/// A summary that cannot get the repository's shared lock (another process holds it)
/// is postponed, not failed: nothing was sent, so no attempt is counted.
#[tokio::test]
async fn a_summary_waiting_for_another_process_is_postponed_not_failed() {
    let env = Env::new().await;
    env.pr(7, BRANCH, SHA_HEAD);
    let opts = comment_only(env.opts());
    let dir = tempfile::tempdir().unwrap();
    let store = runwarden::store::Store::connect(&format!(
        "sqlite://{}",
        dir.path().join("shared.db").display()
    ))
    .await
    .unwrap();
    assert!(
        store
            .try_acquire_lease(
                "summary:acme/web",
                "another-process",
                Duration::from_secs(600),
                chrono::Utc::now()
            )
            .await
            .unwrap()
    );
    let ctx = SummaryCtx {
        gh: &env.gh,
        config: &env.config,
        rule: env.rule(),
        opts: &opts,
        shared: Some(runwarden::github::summary::SharedLock {
            store: &store,
            holder: "this-process",
        }),
    };
    let e = post_summary(&ctx, &failed("r1", SHA_HEAD, 1), "RUN_FINISH", None, false)
        .await
        .unwrap_err();
    assert!(e.retryable && e.held_back, "postponed: {e:?}");
    assert!(e.retry_after.is_some(), "{e:?}");
    assert_eq!(env.writes(), vec![]);
}

/// With comments and statuses, the status is derived from the merged comment: when the
/// comment could not be read (and will be retried), no status is posted from this run
/// alone (it could hide another group's failure); the retry posts it.
#[tokio::test]
async fn no_status_from_the_run_alone_when_the_comment_could_not_be_read() {
    let env = Env::new().await;
    env.pr(7, BRANCH, SHA_HEAD);
    let opts = env.opts();
    assert!(opts.comment && opts.commit_status);
    env.fault(
        "GET",
        "/github/repos/acme/web/issues/7/comments",
        FaultKind::Status {
            status: 502,
            body: None,
            retry_after: None,
        },
        None,
    );
    let e = env
        .summary(
            &opts,
            &tagged(passed("r-smoke", SHA_HEAD), &["smoke"]),
            "RUN_FINISH",
        )
        .await
        .unwrap_err();
    assert!(e.retryable, "{e:?}");
    assert!(
        statuses_of(&env, SHA_HEAD, "runwarden/bAYZ4a").is_empty(),
        "no status from the run alone"
    );
}

#[tokio::test]
async fn another_run_groups_pass_does_not_hide_a_failure_in_the_status() {
    let env = Env::new().await;
    env.pr(7, BRANCH, SHA_HEAD);
    let opts = env.opts();
    let full = tagged(failed("r-full", SHA_HEAD, 2), &["full"]);
    let smoke = tagged(passed("r-smoke", SHA_HEAD), &["smoke"]);

    env.summary(&opts, &full, "RUN_FINISH").await.unwrap();
    let r = env.summary(&opts, &smoke, "RUN_FINISH").await.unwrap();
    assert!(
        matches!(
            &r.status,
            Some(StatusOutcome::Posted { state: StatusState::Failure, description, .. })
                if description == "2 runs: 1 failed, 1 passed"
        ),
        "{r:?}"
    );
    let st = statuses_of(&env, SHA_HEAD, "runwarden/bAYZ4a");
    let last = st.last().unwrap();
    assert_eq!(last.state, "failure");
    assert_eq!(
        last.description.as_deref(),
        Some("2 runs: 1 failed, 1 passed")
    );
    assert_eq!(
        last.target_url.as_deref(),
        Some("https://app.currents.dev/run/r-full")
    );
    let body = &env.comments(7)[0].body;
    assert!(
        body.contains("❌ Failed") && body.contains("✅ Passed"),
        "{body}"
    );

    // A third group starts: still failed (a failure outranks a run in progress).
    let r = env
        .summary(
            &opts,
            &tagged(started("r-a11y", SHA_HEAD), &["a11y"]),
            "RUN_START",
        )
        .await
        .unwrap();
    assert!(
        matches!(
            &r.status,
            Some(StatusOutcome::Posted { state: StatusState::Failure, description, .. })
                if description == "3 runs: 1 failed, 1 running, 1 passed"
        ),
        "{r:?}"
    );
    // `full` is run again and passes: the newer run replaces the failed one, the other
    // group still runs: pending, linking the running run.
    let again = created(
        tagged(passed("r-full-2", SHA_HEAD), &["full"]),
        "2026-03-02T10:30:00Z",
    );
    env.summary(&opts, &again, "RUN_FINISH").await.unwrap();
    let st = statuses_of(&env, SHA_HEAD, "runwarden/bAYZ4a");
    let last = st.last().unwrap();
    assert_eq!(
        (last.state.as_str(), last.description.as_deref()),
        ("pending", Some("3 runs: 1 running, 2 passed"))
    );
    assert_eq!(
        last.target_url.as_deref(),
        Some("https://app.currents.dev/run/r-a11y")
    );
    // Every group passed: success.
    env.summary(
        &opts,
        &tagged(passed("r-a11y", SHA_HEAD), &["a11y"]),
        "RUN_FINISH",
    )
    .await
    .unwrap();
    let st = statuses_of(&env, SHA_HEAD, "runwarden/bAYZ4a");
    let last = st.last().unwrap();
    assert_eq!(
        (last.state.as_str(), last.description.as_deref()),
        ("success", Some("3 runs: 3 passed"))
    );
    assert_eq!(env.gh.status_locks_in_use(), 0);
    assert_eq!(env.gh.pr_locks_in_use(), 0);
}

/// Repro 1b: run r5new passed, then a late result of r5old (same commit and group,
/// created ten minutes earlier) failed. The comment kept r5new; the status used to say
/// `failure`. It now follows the comment: r5new's success stays, nothing is posted.
#[tokio::test]
async fn an_older_runs_late_result_does_not_replace_a_newer_runs_status() {
    let env = Env::new().await;
    env.pr(7, BRANCH, SHA_HEAD);
    let opts = env.opts();
    let new = passed("r5new", SHA_HEAD);
    let old = created(failed("r5old", SHA_HEAD, 1), "2026-03-02T09:50:00Z");

    env.summary(&opts, &new, "RUN_FINISH").await.unwrap();
    let r = env.summary(&opts, &old, "RUN_FINISH").await.unwrap();
    assert!(
        matches!(&r.comments[..], [SummaryOutcome::Skipped(why)] if why.contains("older")),
        "{r:?}"
    );
    assert!(
        matches!(r.status, Some(StatusOutcome::Unchanged { .. })),
        "{r:?}"
    );
    let st = statuses_of(&env, SHA_HEAD, "runwarden/bAYZ4a");
    assert_eq!(st.len(), 1, "{st:?}");
    assert_eq!(st[0].state, "success");
    assert_eq!(
        st[0].description.as_deref(),
        Some("Passed: 118 passed, 2 flaky, 2 skipped in 4m 12s")
    );
    assert_eq!(
        st[0].target_url.as_deref(),
        Some("https://app.currents.dev/run/r5new")
    );
}

/// Repro 1b without a comment (`comment = false`): no document to merge with, but the
/// process remembers which run of the group its status came from, and the older run's
/// late result is skipped.
#[tokio::test]
async fn without_a_comment_an_older_runs_late_result_is_skipped_for_the_status() {
    let env = Env::new().await;
    env.pr(7, BRANCH, SHA_HEAD);
    let mut opts = env.opts();
    opts.comment = false;
    let new = passed("r5new", SHA_HEAD);
    let old = created(failed("r5old", SHA_HEAD, 1), "2026-03-02T09:50:00Z");

    env.summary(&opts, &new, "RUN_FINISH").await.unwrap();
    let r = env.summary(&opts, &old, "RUN_FINISH").await.unwrap();
    assert!(
        matches!(&r.status, Some(StatusOutcome::Skipped(why)) if why.contains("older than run r5new")),
        "{r:?}"
    );
    let st = statuses_of(&env, SHA_HEAD, "runwarden/bAYZ4a");
    assert_eq!(st.len(), 1, "{st:?}");
    assert_eq!(st[0].state, "success");
    // A newer run of the group still counts.
    let newer = created(failed("r6", SHA_HEAD, 1), "2026-03-02T10:20:00Z");
    env.summary(&opts, &newer, "RUN_FINISH").await.unwrap();
    let st = statuses_of(&env, SHA_HEAD, "runwarden/bAYZ4a");
    assert_eq!(st.last().unwrap().state, "failure");
}

/// Repro 2: a commit with more than a page of statuses from other contexts (100 a page,
/// newest first). Ours used to be out of sight: a late `RUN_START` turned the finished
/// run's status back to pending. The combined status (one per context) finds it.
#[tokio::test]
async fn a_late_run_start_does_not_go_back_to_pending_behind_many_other_statuses() {
    let env = Env::new().await;
    env.pr(7, BRANCH, SHA_HEAD);
    let mut opts = env.opts();
    opts.comment = false;
    env.summary(&opts, &running("r1", SHA_HEAD), "RUN_START")
        .await
        .unwrap();
    env.summary(&opts, &passed("r1", SHA_HEAD), "RUN_FINISH")
        .await
        .unwrap();
    let ci = env.as_user("ci-bot");
    let repo: RepoName = REPO.parse().unwrap();
    // 120 statuses of other CI jobs in a moment: past GitHub's secondary limit (80 a
    // minute), so the setup goes without it, and the bot's own writes are limited again.
    env.sim.set_github_content_limits(None);
    for i in 0..120 {
        ci.create_status(
            &repo,
            SHA_HEAD,
            StatusState::Success,
            &format!("ci/job-{i:03}"),
            "ok",
            None,
        )
        .await
        .unwrap();
    }
    env.sim
        .set_github_content_limits(Some(simulator::ContentLimits::default()));
    let r = env
        .summary(&opts, &running("r1", SHA_HEAD), "RUN_START")
        .await
        .unwrap();
    assert!(
        matches!(&r.status, Some(StatusOutcome::Skipped(why)) if why.contains("not going back to pending")),
        "{r:?}"
    );
    // The same result again: unchanged, not posted a second time.
    let r = env
        .summary(&opts, &passed("r1", SHA_HEAD), "RUN_FINISH")
        .await
        .unwrap();
    assert!(
        matches!(r.status, Some(StatusOutcome::Unchanged { .. })),
        "{r:?}"
    );
    let states: Vec<String> = statuses_of(&env, SHA_HEAD, "runwarden/bAYZ4a")
        .into_iter()
        .map(|s| s.state)
        .collect();
    assert_eq!(states, ["pending", "success"]);
    // Read through the combined status, a page at a time until our context shows.
    assert!(sent(&env.gh, "combined_status") >= 2);
    assert_eq!(sent(&env.gh, "list_statuses"), 0);
}

// ---------------------------------------------------------------------------------------
// Whose comment is it: only runwarden's own identity's marker comment counts
// ---------------------------------------------------------------------------------------

/// Count of the requests a client sent for one operation (`/metrics` labels).
fn sent(gh: &GithubClient, op: &str) -> u64 {
    gh.request_counts()
        .iter()
        .filter(|(o, _, _)| *o == op)
        .map(|(_, _, n)| *n)
        .sum()
}

/// Repro A: a user posts the marker and a state "from a newer runwarden" before the bot.
/// It used to block every summary of the PR for good; now it is someone else's comment:
/// not read, not edited, and the bot posts (and later edits) its own.
#[tokio::test]
async fn a_foreign_comment_with_the_marker_and_a_newer_state_is_ignored() {
    let env = Env::new().await;
    env.pr(7, BRANCH, SHA_HEAD);
    let opts = comment_only(env.opts());
    let squat = format!("{MARKER}\nx\n<!-- runwarden:state {{\"v\":9,\"sections\":[]}} -->");
    let foreign = env.comment_as("mallory", 7, &squat).await;

    let r = env
        .summary(&opts, &running("r1", SHA_HEAD), "RUN_START")
        .await
        .unwrap();
    let SummaryOutcome::Posted {
        pr: 7,
        comment_id: ours,
        created: true,
    } = r.comments[0]
    else {
        panic!("{r:?}")
    };
    assert_ne!(ours, foreign);
    // A fresh client (a restart: no remembered id) finds its own comment, not the older
    // foreign one, and edits it.
    let fresh = client(&env.sim.github_url(), Duration::from_secs(3));
    let r = env
        .summary_with(
            &fresh,
            &opts,
            &failed("r1", SHA_HEAD, 1),
            "RUN_FINISH",
            None,
            false,
        )
        .await
        .unwrap();
    assert_eq!(
        r.comments,
        vec![SummaryOutcome::Posted {
            pr: 7,
            comment_id: ours,
            created: false
        }]
    );
    let c = env.comments(7);
    assert_eq!(c.len(), 2, "{c:?}");
    assert_eq!((c[0].id, c[0].user.as_str()), (foreign, "mallory"));
    assert_eq!(c[0].body, squat, "the foreign comment is untouched");
    assert_eq!(c[0].edits, 0);
    assert_eq!((c[1].id, c[1].user.as_str()), (ours, "runwarden[bot]"));
    assert!(c[1].body.contains("❌ Failed"), "{}", c[1].body);
    assert_eq!(
        env.count_writes("PATCH", &format!("/comments/{foreign}")),
        0
    );
    // The identity is asked once per client.
    assert_eq!(sent(&env.gh, "user"), 1);
    assert_eq!(sent(&fresh, "user"), 1);
}

/// Repro B: a forged state (v1, well-formed) with a "passed" section linking elsewhere.
/// The bot used to merge its section into it and republish the forged one; now it posts
/// its own comment, without the forged section, and leaves the forged one alone.
#[tokio::test]
async fn a_forged_state_in_a_foreign_comment_is_never_republished() {
    let env = Env::new().await;
    env.pr(7, BRANCH, SHA_HEAD);
    let opts = comment_only(env.opts());
    let phish = "https://phish.example/currents/login";
    let mut fake = Section::from_run(
        &to_run(merge(
            run_value("r-forged", SHA_HEAD),
            json!({"tags": ["smoke"]}),
        )),
        "RUN_FINISH",
        None,
        DASH,
        10,
    );
    fake.run_url = phish.into();
    let mut doc = SummaryDoc::default();
    merge_section(&mut doc, fake, SHA_HEAD);
    let pr = PrInfo {
        number: 7,
        head_sha: SHA_HEAD.into(),
        head_ref: BRANCH.into(),
    };
    let forged = render_body(
        &doc,
        &RenderInput {
            pr: &pr,
            current_key: &doc.sections[0].key.clone(),
            dashboard_url: DASH,
            template: None,
            limit: GITHUB_BODY_LIMIT,
        },
    )
    .unwrap();
    assert!(forged.starts_with(MARKER) && forged.contains(phish));
    assert_eq!(SummaryDoc::parse(&forged).unwrap().sections.len(), 1);
    let foreign = env.comment_as("mallory", 7, &forged).await;

    let r = env
        .summary(&opts, &failed("r1", SHA_HEAD, 1), "RUN_FINISH")
        .await
        .unwrap();
    assert!(
        matches!(r.comments[0], SummaryOutcome::Posted { created: true, .. }),
        "{r:?}"
    );
    let c = env.comments(7);
    assert_eq!(c.len(), 2, "{c:?}");
    assert_eq!(c[0].id, foreign);
    assert_eq!(c[0].body, forged, "not edited");
    assert_eq!(c[0].edits, 0);
    assert_eq!(c[1].user, "runwarden[bot]");
    assert!(!c[1].body.contains(phish), "{}", c[1].body);
    assert!(!c[1].body.contains("r-forged"), "{}", c[1].body);
    assert_eq!(SummaryDoc::parse(&c[1].body).unwrap().sections.len(), 1);
}

/// A comment POST with an unknown outcome is checked for before posting again: a
/// foreign comment carrying the marker is not taken for the bot's own.
#[tokio::test]
async fn a_post_with_an_unknown_outcome_does_not_adopt_a_foreign_marker_comment() {
    let env = Env::new().await;
    env.pr(7, BRANCH, SHA_HEAD);
    let opts = comment_only(env.opts());
    let squat = format!("{MARKER}\nnot the bot");
    let foreign = env.comment_as("mallory", 7, &squat).await;
    // Answered 502 without creating anything.
    env.fault(
        "POST",
        "/github/repos/acme/web/issues/7/comments",
        FaultKind::Status {
            status: 502,
            body: None,
            retry_after: None,
        },
        Some(1),
    );
    let r = env
        .summary(&opts, &failed("r1", SHA_HEAD, 1), "RUN_FINISH")
        .await
        .unwrap();
    let SummaryOutcome::Posted {
        comment_id,
        created: true,
        ..
    } = r.comments[0]
    else {
        panic!("{r:?}")
    };
    assert_ne!(comment_id, foreign);
    let c = env.comments(7);
    assert_eq!(c.len(), 2, "{c:?}");
    assert_eq!((c[0].body.as_str(), c[0].edits), (squat.as_str(), 0));
    assert_eq!(c[1].user, "runwarden[bot]");
}

/// The bot's login cannot be told (`GET /user` refused, as for an installation token):
/// the attempt fails retryably and writes nothing, rather than guess whose comment is
/// whose. Once the login is known, the summary goes through.
#[tokio::test]
async fn an_unknown_identity_fails_the_summary_retryably_without_writing() {
    let env = Env::new().await;
    env.pr(7, BRANCH, SHA_HEAD);
    let opts = comment_only(env.opts());
    env.comment_as("mallory", 7, &format!("{MARKER}\nx")).await;
    env.sim.clear_log();
    let fault = env.sim.inject_fault(
        Fault::new(FaultKind::Status {
            status: 403,
            body: Some(r#"{"message":"Resource not accessible by integration"}"#.into()),
            retry_after: None,
        })
        .on("GET", "/github/user")
        .always(),
    );
    // GraphQL's viewer, asked next, does not say either.
    let fault_graphql = env.sim.inject_fault(
        Fault::new(FaultKind::Status {
            status: 403,
            body: Some(r#"{"message":"Resource not accessible by integration"}"#.into()),
            retry_after: None,
        })
        .on("POST", "/github/graphql")
        .always(),
    );
    let e = env
        .summary(&opts, &failed("r1", SHA_HEAD, 1), "RUN_FINISH")
        .await
        .unwrap_err();
    assert!(e.retryable, "{e}");
    assert!(
        e.message.contains("cannot tell which GitHub user") && e.message.contains("GET /user"),
        "{e}"
    );
    assert!(!e.message.contains(TOKEN), "{e}");
    assert_eq!(env.writes(), vec![]);
    assert_eq!(env.comments(7).len(), 1);

    env.sim.remove_fault(fault);
    env.sim.remove_fault(fault_graphql);
    let r = env
        .summary(&opts, &failed("r1", SHA_HEAD, 1), "RUN_FINISH")
        .await
        .unwrap();
    assert!(
        matches!(r.comments[0], SummaryOutcome::Posted { created: true, .. }),
        "{r:?}"
    );
    assert_eq!(env.comments(7)[1].user, "runwarden[bot]");
}

/// GitHub Actions' `GITHUB_TOKEN` is an installation token: `GET /user` is refused to it,
/// and the bot learns its login (`github-actions[bot]`) from GraphQL's `viewer`; its
/// comment is then found and edited in place like any other.
#[tokio::test]
async fn an_actions_token_learns_its_login_from_graphql_and_edits_its_comment() {
    let env = Env::new().await;
    env.pr(7, BRANCH, SHA_HEAD);
    let opts = comment_only(env.opts());
    let actions = GithubAuth::Token(Secret::new("ghs_actions_0123456789"));
    for event in ["RUN_START", "RUN_FINISH"] {
        let gh = client_with_auth(
            &env.sim.github_url(),
            Duration::from_secs(3),
            actions.clone(),
        );
        let run = if event == "RUN_START" {
            running("r1", SHA_HEAD)
        } else {
            passed("r1", SHA_HEAD)
        };
        env.summary_with(&gh, &opts, &run, event, None, false)
            .await
            .unwrap();
        assert_eq!((sent(&gh, "user"), sent(&gh, "graphql")), (1, 1));
    }
    let c = env.comments(7);
    assert_eq!(c.len(), 1, "one comment, edited in place: {c:#?}");
    assert_eq!(c[0].user, "github-actions[bot]");
}

/// With a GitHub App the bot is `{slug}[bot]`, the slug from `GET /app` (asked once): a
/// comment of another bot, or of a user, carrying the marker is not the App's.
#[tokio::test]
async fn a_github_app_recognises_its_comment_by_its_slug() {
    let env = Env::new().await;
    env.pr(7, BRANCH, SHA_HEAD);
    let opts = comment_only(env.opts());
    let squat = format!("{MARKER}\n<!-- runwarden:state {{\"v\":9,\"sections\":[]}} -->");
    env.comment_as("github-actions[bot]", 7, &squat).await;
    let app = GithubAuth::App {
        app_id: 424242,
        jwt: Arc::new(|| Ok("eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOjQyNDI0Mn0.c2lnbmF0dXJl".to_string())),
    };
    for event in ["RUN_START", "RUN_FINISH"] {
        // Each a fresh client: the comment is found by marker and author every time.
        let gh = client_with_auth(&env.sim.github_url(), Duration::from_secs(3), app.clone());
        let run = if event == "RUN_START" {
            running("r1", SHA_HEAD)
        } else {
            passed("r1", SHA_HEAD)
        };
        env.summary_with(&gh, &opts, &run, event, None, false)
            .await
            .unwrap();
        assert_eq!(sent(&gh, "app"), 1);
        assert_eq!(sent(&gh, "user"), 0);
    }
    let c = env.comments(7);
    assert_eq!(c.len(), 2, "{c:?}");
    assert_eq!((c[0].body.as_str(), c[0].edits), (squat.as_str(), 0));
    assert_eq!((c[1].user.as_str(), c[1].edits), ("runwarden[bot]", 1));
    assert!(c[1].body.contains("✅ Passed"));
}

// ---------------------------------------------------------------------------------------
// A fork's run is not posted on an unrelated PR of the same branch name
// ---------------------------------------------------------------------------------------

/// Repro: a maintainer's PR from `acme:patch-1`; a run from Mallory's fork
/// (`remoteOrigin` mallory/web, branch `patch-1`, a sha GitHub does not know) in the
/// project mapped to acme/web. It used to be posted on the maintainer's PR through the
/// branch fallback; now the fallback is not used for a run of another repository, and
/// the summary says why. A fork run whose sha heads its own fork PR still gets there.
#[tokio::test]
async fn a_fork_run_is_not_posted_on_a_pr_that_merely_shares_its_branch_name() {
    let env = Env::new().await;
    env.pr(7, "patch-1", SHA_HEAD);
    env.sim
        .add_pr(NewPr {
            repo: REPO.into(),
            number: Some(8),
            head_ref: Some("patch-1".into()),
            head_sha: Some(SHA_OTHER.into()),
            head_repo: Some("mallory/web".into()),
            author: Some("mallory".into()),
            ..NewPr::default()
        })
        .unwrap();
    let opts = comment_only(env.opts());
    let fork_run = |sha: &str| {
        let mut v = to_value(failed("r-fork", sha, 1));
        v["meta"]["commit"]["branch"] = json!("patch-1");
        v["meta"]["commit"]["remoteOrigin"] = json!("https://github.com/mallory/web.git");
        to_run(v)
    };
    let r = env
        .summary(
            &opts,
            &fork_run("deadbeefdeadbeefdeadbeefdeadbeefdeadbeef"),
            "RUN_FINISH",
        )
        .await
        .unwrap();
    assert!(r.is_skipped(), "{r:?}");
    let SummaryOutcome::Skipped(note) = &r.comments[0] else {
        panic!("{r:?}")
    };
    assert!(
        note.contains("patch-1") && note.contains("mallory/web") && note.contains("acme/web"),
        "{note}"
    );
    assert!(env.comments(7).is_empty() && env.comments(8).is_empty());
    assert_eq!(env.writes(), vec![]);

    // The fork's own PR, found by its head sha.
    let r = env
        .summary(&opts, &fork_run(SHA_OTHER), "RUN_FINISH")
        .await
        .unwrap();
    assert!(
        matches!(r.comments[..], [SummaryOutcome::Posted { pr: 8, .. }]),
        "{r:?}"
    );
    assert!(env.comments(7).is_empty());
    assert_eq!(env.comments(8).len(), 1);

    // A run of the repository itself on that branch still finds the maintainer's PR by
    // its branch (the sha unknown to GitHub: a merge commit, say).
    let mut own = to_value(failed(
        "r-own",
        "feedfacefeedfacefeedfacefeedfacefeedface",
        1,
    ));
    own["meta"]["commit"]["branch"] = json!("patch-1");
    let r = env
        .summary(&opts, &to_run(own), "RUN_FINISH")
        .await
        .unwrap();
    assert!(
        matches!(r.comments[..], [SummaryOutcome::Posted { pr: 7, .. }]),
        "{r:?}"
    );
}

#[tokio::test]
async fn the_branch_lookup_only_finds_prs_from_the_repositorys_own_branch() {
    let env = Env::new().await;
    let repo: RepoName = REPO.parse().unwrap();
    env.sim
        .add_pr(NewPr {
            repo: REPO.into(),
            number: Some(8),
            head_ref: Some("patch-1".into()),
            head_sha: Some(SHA_OTHER.into()),
            head_repo: Some("mallory/web".into()),
            ..NewPr::default()
        })
        .unwrap();
    env.pr(7, "patch-1", SHA_HEAD);
    let prs = env
        .gh
        .open_pulls_for_branch(&repo, "patch-1")
        .await
        .unwrap();
    assert_eq!(
        prs.iter()
            .map(|p| (p.number, p.head_repo.as_deref()))
            .collect::<Vec<_>>(),
        [(7, Some("acme/web"))]
    );
    let fork: RepoName = "mallory/web".parse().unwrap();
    let unknown = "deadbeefdeadbeefdeadbeefdeadbeefdeadbeef";
    let found = discover_prs(&env.gh, &repo, Some(&fork), Some(unknown), Some("patch-1"))
        .await
        .unwrap();
    assert_eq!(found, vec![]);
    // The same repository, spelt in another case, is not a fork.
    let same: RepoName = "Acme/Web".parse().unwrap();
    let found = discover_prs(&env.gh, &repo, Some(&same), Some(unknown), Some("patch-1"))
        .await
        .unwrap();
    assert_eq!(found.iter().map(|p| p.number).collect::<Vec<_>>(), [7]);
}

// ---------------------------------------------------------------------------------------
// Comments near GitHub's limit: what is shown is what is stored
// ---------------------------------------------------------------------------------------

/// `run` with every spec path made `len` characters longer.
fn long_paths(mut run: Run, len: usize) -> Run {
    for s in &mut run.specs {
        s.spec = format!("tests/{}/{}", "d".repeat(len), s.spec);
    }
    run
}

/// Repro: two run groups of one commit (tags `a` and `b`), each with 12 failing specs
/// of 3,000-character paths, all listed (`max_failed_specs = 100`). Once the state line
/// passed half the limit, every list was dropped from the state, but the run being
/// posted showed its own list, so re-posting r1, then r2, then r1 moved the list from
/// section to section and edited the comment each time. Now the state and the Markdown
/// are shortened together, only when the whole body would not fit, and a run whose
/// lists were left out stays so: re-posting unchanged runs edits nothing.
///
/// With 1,800-character paths one group's list fits and two do not: dropping every list
/// only when both are in, then showing the re-posted run's list again (it fits alone),
/// would still edit the comment on every re-post.
#[tokio::test]
async fn re_posting_unchanged_runs_leaves_a_comment_near_the_limit_alone() {
    for len in [3_000, 1_800] {
        let env = Env::new().await;
        env.pr(7, BRANCH, SHA_HEAD);
        let mut opts = comment_only(env.opts());
        opts.max_failed_specs = 100;
        let r1 = tagged(long_paths(failed("r1", SHA_HEAD, 12), len), &["a"]);
        let r2 = tagged(long_paths(failed("r2", SHA_HEAD, 12), len), &["b"]);
        for run in [&r1, &r2] {
            env.summary(&opts, run, "RUN_FINISH").await.unwrap();
        }
        let c = env.comments(7);
        assert_eq!(c.len(), 1);
        let (body, edits) = (c[0].body.clone(), c[0].edits);
        assert!(
            units(&body) <= GITHUB_BODY_LIMIT,
            "{len}: {} code units",
            units(&body)
        );
        let doc = SummaryDoc::parse(&body).unwrap();
        assert_eq!(doc.sections.len(), 2);
        for run in [&r1, &r2, &r1, &r2] {
            let r = env.summary(&opts, run, "RUN_FINISH").await.unwrap();
            assert!(
                matches!(r.comments[..], [SummaryOutcome::Unchanged { pr: 7, .. }]),
                "{len}: re-posting {}: {r:?}",
                run.run_id
            );
        }
        let c = env.comments(7);
        assert_eq!((c[0].edits, &c[0].body), (edits, &body), "{len}");
        // What is shown is what the state holds.
        let listed = body.matches("**Failing specs** (").count();
        let stored = doc
            .sections
            .iter()
            .filter(|s| !s.failed_specs.is_empty())
            .count();
        assert_eq!(listed, stored, "{len}: {body}");
        assert_eq!(
            body.matches("**Failing specs**: 12, listed in the run.")
                .count(),
            2 - stored,
            "{len}"
        );
        assert!(body.contains("shortened to fit"), "{len}");
        // No `\u002d` for every `-`: the state is not inflated.
        assert!(!body.contains("\\u002d"), "{len}");
    }
}

/// Repro: a shortened comment's note linked the run that triggered the update, so an
/// update by another, unchanged run edited the comment for that link alone. It links the
/// newest section's run, whichever run is posted.
#[test]
fn a_shortened_comment_reads_the_same_whichever_run_triggered_it() {
    let long = |run: Run| {
        let mut run = run;
        for s in &mut run.specs {
            s.spec = format!("tests/{}/{}", "deeply-nested".repeat(20), s.spec);
        }
        run
    };
    let a = tagged(long(failed("r1a2b3c4", SHA_HEAD, 12)), &["a"]);
    let b = created(
        tagged(long(failed("r5d6e7f8", SHA_HEAD, 12)), &["b"]),
        "2026-03-02T10:05:00Z",
    );
    let by_a = body_with(
        &[post(&b, "RUN_FINISH"), post(&a, "RUN_FINISH")],
        10,
        None,
        4_000,
    );
    let by_b = body_with(
        &[post(&a, "RUN_FINISH"), post(&b, "RUN_FINISH")],
        10,
        None,
        4_000,
    );
    assert!(units(&by_a) <= 4_000, "{} code units", units(&by_a));
    assert_eq!(by_a, by_b);
    let note = by_a
        .lines()
        .find(|l| l.contains("shortened to fit"))
        .unwrap_or_else(|| panic!("no note: {by_a}"));
    assert!(
        note.ends_with("(https://app.currents.dev/run/r5d6e7f8)."),
        "the newest run: {note}"
    );
}

// ---------------------------------------------------------------------------------------
// GitHub Enterprise: GraphQL next to the REST API
// ---------------------------------------------------------------------------------------

/// Repro: on GitHub Enterprise Server (REST at `/api/v3`) the login lookup of a token
/// that cannot read `/user` sent `POST /api/v3/../graphql` literally, which the server
/// does not resolve. The URL is built with `url::Url`: the request goes to
/// `/api/graphql`.
#[tokio::test]
async fn graphql_on_github_enterprise_is_posted_to_api_graphql() {
    use axum::http::StatusCode;
    use std::sync::Mutex;
    let seen: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let log = seen.clone();
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let log = log.clone();
        async move {
            let (m, p) = (req.method().to_string(), req.uri().path().to_string());
            log.lock().unwrap().push((m.clone(), p.clone()));
            match (m.as_str(), p.as_str()) {
                ("GET", "/api/v3/user") => (
                    StatusCode::FORBIDDEN,
                    axum::Json(json!({"message": "Resource not accessible by integration"})),
                ),
                ("POST", "/api/graphql") => (
                    StatusCode::OK,
                    axum::Json(json!({"data": {"viewer": {"login": "ghe-actions[bot]"}}})),
                ),
                _ => (
                    StatusCode::NOT_FOUND,
                    axum::Json(json!({"message": "Not Found"})),
                ),
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let gh = client_with_auth(
        &format!("http://{addr}/api/v3"),
        Duration::from_secs(3),
        GithubAuth::Token(Secret::new("ghs_enterprise_actions_token")),
    );
    let login = gh.own_login().await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            ("GET".to_string(), "/api/v3/user".to_string()),
            ("POST".to_string(), "/api/graphql".to_string())
        ]
    );
    assert_eq!(login.unwrap(), "ghe-actions[bot]");
}

// ---------------------------------------------------------------------------------------
// A commit's PRs: by branch only from the run's own repository
// ---------------------------------------------------------------------------------------

/// Repro: acme's run on `patch-1` for commit X; Mallory's fork PR #8
/// (`mallory:patch-1`, into acme/web) contains X too (she branched from it) and its
/// head has moved on. Among the commit's PRs the one of the run's branch was chosen by
/// the branch name alone, so acme's run was posted on Mallory's PR. The PR's head
/// repository must now be the one the run comes from, as for the branch lookup.
#[tokio::test]
async fn a_commits_pr_from_a_forks_branch_of_the_same_name_is_not_the_runs() {
    let env = Env::new().await;
    let fork_pr = |sha: &str| NewPr {
        repo: REPO.into(),
        number: Some(8),
        head_ref: Some("patch-1".into()),
        head_sha: Some(sha.into()),
        head_repo: Some("mallory/web".into()),
        author: Some("mallory".into()),
        ..NewPr::default()
    };
    env.sim.add_pr(fork_pr(SHA_OLD)).unwrap();
    env.sim.add_pr(fork_pr(SHA_OTHER)).unwrap();
    let opts = comment_only(env.opts());
    let on_patch_1 = |run: Run, remote: &str| {
        let mut v = to_value(run);
        v["meta"]["commit"]["branch"] = json!("patch-1");
        v["meta"]["commit"]["remoteOrigin"] = json!(remote);
        to_run(v)
    };
    let own = on_patch_1(
        failed("r-own", SHA_OLD, 1),
        "https://github.com/acme/web.git",
    );
    let r = env.summary(&opts, &own, "RUN_FINISH").await.unwrap();
    assert!(r.is_skipped(), "{r:?}");
    assert!(env.comments(8).is_empty());
    assert_eq!(env.writes(), vec![]);

    // acme's own PR of the branch contains the commit too: that one, only.
    env.pr(7, "patch-1", SHA_OLD);
    env.pr(7, "patch-1", SHA_HEAD);
    let r = env.summary(&opts, &own, "RUN_FINISH").await.unwrap();
    assert!(
        matches!(r.comments[..], [SummaryOutcome::Posted { pr: 7, .. }]),
        "{r:?}"
    );
    assert!(env.comments(8).is_empty());

    // Mallory's run of that commit on her branch belongs to her PR, not to acme's.
    let fork = on_patch_1(
        failed("r-fork", SHA_OLD, 1),
        "https://github.com/mallory/web.git",
    );
    let r = env.summary(&opts, &fork, "RUN_FINISH").await.unwrap();
    assert!(
        matches!(r.comments[..], [SummaryOutcome::Posted { pr: 8, .. }]),
        "{r:?}"
    );
    assert_eq!(env.comments(7).len(), 1);
    assert!(!env.comments(7)[0].body.contains("r-fork"));
}

// ---------------------------------------------------------------------------------------
// The summary lock across processes outlives slow summaries
// ---------------------------------------------------------------------------------------

async fn shared_store(dir: &tempfile::TempDir) -> runwarden::store::Store {
    runwarden::store::Store::connect(&format!(
        "sqlite://{}",
        dir.path().join("shared.db").display()
    ))
    .await
    .unwrap()
}

/// Repro: the repository's summary lock was a lease with a fixed time to live, never
/// renewed while the summary ran; GitHub calls slower than that (4 attempts × 30 s) let
/// another process in, and both posted a sticky comment. Here with a 300 ms lock: one
/// process's `POST` of the comment takes 2 s; the other waits for the lock, which is
/// renewed meanwhile, gets it once the first is done, and edits that comment.
#[tokio::test]
async fn the_summary_lock_is_renewed_while_a_slow_summary_holds_it() {
    let env = Env::new().await;
    env.pr(7, BRANCH, SHA_HEAD);
    let opts = comment_only(env.opts());
    let dir = tempfile::tempdir().unwrap();
    let store = shared_store(&dir).await;
    env.fault(
        "POST",
        "/github/repos/acme/web/issues/7/comments",
        FaultKind::Latency { ms: 2_000 },
        None,
    );
    let ttl = Duration::from_millis(300);
    let (a, b) = (
        client(&env.sim.github_url(), Duration::from_secs(10)),
        client(&env.sim.github_url(), Duration::from_secs(10)),
    );
    async fn post(
        env: &Env,
        opts: &SummaryOptions,
        store: &runwarden::store::Store,
        holder: &str,
        gh: &GithubClient,
        run: Run,
        ttl: Duration,
    ) -> Result<SummaryReport, runwarden::github::SummaryError> {
        let ctx = SummaryCtx {
            gh,
            config: &env.config,
            rule: env.rule(),
            opts,
            shared: Some(runwarden::github::summary::SharedLock { store, holder }),
        };
        runwarden::github::summary::post_summary_with_lock_ttl(
            &ctx,
            &run,
            "RUN_FINISH",
            None,
            false,
            ttl,
        )
        .await
    }
    let full = tagged(failed("r-full", SHA_HEAD, 1), &["full"]);
    let smoke = tagged(passed("r-smoke", SHA_HEAD), &["smoke"]);
    let (ra, rb) = tokio::join!(
        post(&env, &opts, &store, "process-a", &a, full, ttl),
        post(&env, &opts, &store, "process-b", &b, smoke, ttl)
    );
    ra.unwrap();
    rb.unwrap();
    let c = env.comments(7);
    assert_eq!(c.len(), 1, "one comment: {c:#?}");
    assert!(
        c[0].body.contains("❌ Failed") && c[0].body.contains("✅ Passed"),
        "both sections: {}",
        c[0].body
    );
    assert_eq!(env.count_writes("POST", "/issues/7/comments"), 1);
    assert!(
        store
            .lease_holder("summary:acme/web")
            .await
            .unwrap()
            .is_none(),
        "the lock is let go"
    );
}

/// [`Store::hold_lease_while`]: the lease is renewed while the work runs (its expiry
/// moves on), and the work is stopped once another holder has the lease.
#[tokio::test]
async fn a_lease_held_for_work_is_renewed_and_the_work_stopped_once_lost() {
    use runwarden::store::leases::LeaseLost;
    let dir = tempfile::tempdir().unwrap();
    let store = shared_store(&dir).await;
    let ttl = Duration::from_millis(300);
    assert!(
        store
            .try_acquire_lease("summary:x", "a", ttl, chrono::Utc::now())
            .await
            .unwrap()
    );
    let (_, first) = store.lease_holder("summary:x").await.unwrap().unwrap();
    // Polls (with a deadline) until the expiry has moved past two time to lives later.
    let renewed = store
        .hold_lease_while("summary:x", "a", ttl, async {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let (holder, until) = store.lease_holder("summary:x").await.unwrap().unwrap();
                assert_eq!(holder, "a");
                assert!(
                    !store
                        .try_acquire_lease("summary:x", "b", ttl, chrono::Utc::now())
                        .await
                        .unwrap(),
                    "another holder got in"
                );
                if until >= first + chrono::Duration::milliseconds(600) {
                    return until;
                }
                assert!(Instant::now() < deadline, "the lease was not renewed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap();
    assert!(renewed > first);

    // Taken over (as after a pause longer than its time to live): the work is stopped.
    let out = store
        .hold_lease_while("summary:x", "a", ttl, async {
            assert!(store.release_lease("summary:x", "a").await.unwrap());
            assert!(
                store
                    .try_acquire_lease(
                        "summary:x",
                        "b",
                        Duration::from_secs(60),
                        chrono::Utc::now()
                    )
                    .await
                    .unwrap()
            );
            std::future::pending::<()>().await
        })
        .await;
    assert_eq!(
        out,
        Err(LeaseLost::TakenOver {
            name: "summary:x".into()
        })
    );
    assert_eq!(
        store.lease_holder("summary:x").await.unwrap().unwrap().0,
        "b"
    );
}

// ---------------------------------------------------------------------------------------
// Without a comment, the commit status still combines every run group of the commit:
// the store's runs, shared by every process and kept across restarts
// ---------------------------------------------------------------------------------------

/// Records `run` in the store's runs table, as the intake does for every event it
/// processes (webhook or poll) before any summary of it is decided.
async fn observe(store: &runwarden::store::Store, run: &Run) {
    let (_, rec) = runwarden::intake::processor::run_record(None, run, chrono::Utc::now());
    assert!(store.upsert_run(&rec).await.unwrap(), "{}", run.run_id);
}

/// A summary posted by one runwarden process: `gh` is the process's own client (its
/// in-process memory and locks: a fresh one is another replica, or the bot after a
/// restart), `store` the store every process shares.
#[allow(clippy::too_many_arguments)]
async fn summary_in(
    config: &Config,
    rule: &Rule,
    gh: &GithubClient,
    store: &runwarden::store::Store,
    opts: &SummaryOptions,
    run: &Run,
    event: &str,
    dry_run: bool,
) -> Result<SummaryReport, runwarden::github::SummaryError> {
    let ctx = SummaryCtx {
        gh,
        config,
        rule,
        opts,
        shared: Some(runwarden::github::summary::SharedLock {
            store,
            holder: "process",
        }),
    };
    post_summary(&ctx, run, event, None, dry_run).await
}

fn posted_status(r: &SummaryReport) -> (StatusState, &str) {
    match &r.status {
        Some(StatusOutcome::Posted {
            state, description, ..
        }) => (*state, description.as_str()),
        other => panic!("no status posted: {other:?} in {r:?}"),
    }
}

/// Repro (audit): run groups `full` and `smoke` of one commit share the context
/// `runwarden/bAYZ4a`. Without a comment to read the other group from (`comment =
/// false`, or a commit that heads no open PR, a push to `main`), `full` failed, then
/// `smoke` passed, and the status said `success`: the last group to report won. The
/// other group's run is now read from the store's runs table, so the status stays
/// failed, also when `smoke` is posted by another process (a replica, or after a
/// restart: a fresh client).
#[tokio::test]
async fn without_a_comment_another_groups_pass_does_not_hide_a_failure_in_the_status() {
    for with_pr in [false, true] {
        let env = Env::new().await;
        let mut opts = env.opts();
        if with_pr {
            env.pr(7, BRANCH, SHA_HEAD);
            opts.comment = false;
        }
        let dir = tempfile::tempdir().unwrap();
        let store = shared_store(&dir).await;
        let (a, b) = (
            client(&env.sim.github_url(), Duration::from_secs(3)),
            client(&env.sim.github_url(), Duration::from_secs(3)),
        );
        let post = |gh, run, event| {
            summary_in(
                &env.config,
                env.rule(),
                gh,
                &store,
                &opts,
                run,
                event,
                false,
            )
        };
        let full = tagged(failed("r-full", SHA_HEAD, 2), &["full"]);
        let smoke = tagged(passed("r-smoke", SHA_HEAD), &["smoke"]);

        observe(&store, &full).await;
        let r = post(&a, &full, "RUN_FINISH").await.unwrap();
        assert_eq!(posted_status(&r).0, StatusState::Failure, "{with_pr}");
        observe(&store, &smoke).await;
        let r = post(&b, &smoke, "RUN_FINISH").await.unwrap();
        if !with_pr {
            assert!(
                matches!(&r.comments[..], [SummaryOutcome::Skipped(why)] if why.contains("no open pull request")),
                "{r:?}"
            );
        }
        assert_eq!(
            posted_status(&r),
            (StatusState::Failure, "2 runs: 1 failed, 1 passed"),
            "{with_pr}"
        );
        let st = statuses_of(&env, SHA_HEAD, "runwarden/bAYZ4a");
        let last = st.last().unwrap();
        assert_eq!(last.state, "failure", "{with_pr}: {st:#?}");
        assert_eq!(
            last.target_url.as_deref(),
            Some("https://app.currents.dev/run/r-full"),
            "the failed run decides it"
        );

        // `full` is run again and passes: the newer run of the group replaces the failed
        // one, and every group passed.
        let again = created(
            tagged(passed("r-full-2", SHA_HEAD), &["full"]),
            "2026-03-02T10:30:00Z",
        );
        observe(&store, &again).await;
        let r = post(&a, &again, "RUN_FINISH").await.unwrap();
        assert_eq!(
            posted_status(&r),
            (StatusState::Success, "2 runs: 2 passed"),
            "{with_pr}"
        );
        assert!(env.comments(7).is_empty(), "{with_pr}: no comment");
        assert_eq!(a.status_locks_in_use() + b.status_locks_in_use(), 0);
    }
}

/// Without a comment, the late result of an older run of a group (r5old, created ten
/// minutes before r5new) does not replace the newer run's status, also when it reaches
/// a process that never saw r5new (a replica, or the bot after a restart): the store
/// knows r5new. It used to rest on in-process memory only.
#[tokio::test]
async fn without_a_comment_an_older_runs_late_result_is_not_posted_by_another_process() {
    let env = Env::new().await;
    let mut opts = env.opts();
    opts.comment = false;
    let dir = tempfile::tempdir().unwrap();
    let store = shared_store(&dir).await;
    let new = passed("r5new", SHA_HEAD);
    let old = created(failed("r5old", SHA_HEAD, 1), "2026-03-02T09:50:00Z");

    observe(&store, &new).await;
    let r = summary_in(
        &env.config,
        env.rule(),
        &env.gh,
        &store,
        &opts,
        &new,
        "RUN_FINISH",
        false,
    )
    .await
    .unwrap();
    assert_eq!(posted_status(&r).0, StatusState::Success);
    observe(&store, &old).await;
    let restarted = client(&env.sim.github_url(), Duration::from_secs(3));
    let r = summary_in(
        &env.config,
        env.rule(),
        &restarted,
        &store,
        &opts,
        &old,
        "RUN_FINISH",
        false,
    )
    .await
    .unwrap();
    assert!(
        matches!(r.status, Some(StatusOutcome::Unchanged { .. })),
        "{r:?}"
    );
    let st = statuses_of(&env, SHA_HEAD, "runwarden/bAYZ4a");
    assert_eq!(st.len(), 1, "{st:#?}");
    assert_eq!(st[0].state, "success");
    assert_eq!(
        st[0].target_url.as_deref(),
        Some("https://app.currents.dev/run/r5new")
    );
}

/// A run the store recorded counts as the rule would have summarized it: of the same
/// commit and of a project of the context, matched by the rule's `[rules.match]`, and in
/// a state whose event is in the rule's `events` (without `RUN_START` there, a run still
/// in progress does not turn the status pending).
#[tokio::test]
async fn the_status_counts_the_stored_runs_the_rule_would_summarize() {
    let env = Env::new().await;
    let dir = tempfile::tempdir().unwrap();
    let store = shared_store(&dir).await;
    // Another commit's failure, another project's (context `runwarden/k9Pq2`), and a
    // run group still in progress.
    let other_sha = tagged(failed("r-other-sha", SHA_OTHER, 1), &["x"]);
    let other_project = to_run(merge(
        to_value(failed("r-k9", SHA_HEAD, 1)),
        json!({"projectId": "k9Pq2"}),
    ));
    let smoke = tagged(started("r-smoke", SHA_HEAD), &["smoke"]);
    for run in [&other_sha, &other_project, &smoke] {
        observe(&store, run).await;
    }
    let full = tagged(passed("r-full", SHA_HEAD), &["full"]);
    observe(&store, &full).await;
    let post = |config, rule, opts, dry_run| {
        summary_in(
            config,
            rule,
            &env.gh,
            &store,
            opts,
            &full,
            "RUN_FINISH",
            dry_run,
        )
    };

    // No pending status wanted: `smoke` in progress does not count.
    let mut finish_only = env.opts();
    finish_only.events = vec!["RUN_FINISH".into()];
    let r = post(&env.config, env.rule(), &finish_only, true)
        .await
        .unwrap();
    assert!(
        matches!(&r.status, Some(StatusOutcome::DryRun { state: StatusState::Success, description, .. })
            if description.starts_with("Passed: ")),
        "{r:?}"
    );
    // With `RUN_START`: pending while `smoke` runs.
    let every = env.opts();
    let r = post(&env.config, env.rule(), &every, true).await.unwrap();
    assert!(
        matches!(&r.status, Some(StatusOutcome::DryRun { state: StatusState::Pending, description, .. })
            if description == "2 runs: 1 running, 1 passed"),
        "{r:?}"
    );
    // A rule that only covers the `full` group: `smoke` does not count.
    let narrow = load_str(
        &format!(
            "{}\n[rules.match]\ntags = [\"full\"]\n",
            config_text(&env.sim.github_url())
        ),
        "rules.toml",
        &[],
    )
    .unwrap()
    .config;
    let r = post(&narrow, &narrow.rules[0], &every, true).await.unwrap();
    assert!(
        matches!(
            &r.status,
            Some(StatusOutcome::DryRun {
                state: StatusState::Success,
                ..
            })
        ),
        "{r:?}"
    );
    assert_eq!(env.writes(), vec![], "dry runs write nothing");
}

/// A dry run reads the store's runs as a real summary does, reports the status it would
/// post (failure: another group failed), and writes nothing: no request, no lock.
#[tokio::test]
async fn a_dry_run_combines_the_stored_runs_and_posts_nothing() {
    let env = Env::new().await;
    let dir = tempfile::tempdir().unwrap();
    let store = shared_store(&dir).await;
    let full = tagged(failed("r-full", SHA_HEAD, 2), &["full"]);
    let smoke = tagged(passed("r-smoke", SHA_HEAD), &["smoke"]);
    observe(&store, &full).await;
    observe(&store, &smoke).await;
    let r = summary_in(
        &env.config,
        env.rule(),
        &env.gh,
        &store,
        &env.opts(),
        &smoke,
        "RUN_FINISH",
        true,
    )
    .await
    .unwrap();
    assert!(
        matches!(&r.status, Some(StatusOutcome::DryRun { state: StatusState::Failure, description, .. })
            if description == "2 runs: 1 failed, 1 passed"),
        "{r:?}"
    );
    assert_eq!(env.writes(), vec![]);
    assert!(env.sim.statuses(Some(REPO), Some(SHA_HEAD)).is_empty());
    assert!(
        store
            .lease_holder("summary:acme/web")
            .await
            .unwrap()
            .is_none()
    );
}

// ---------------------------------------------------------------------------------------
// GitHub's limit is in characters, not bytes
// ---------------------------------------------------------------------------------------

/// `run` with 12 failing specs whose paths hold `len` Japanese characters each (3 bytes
/// each in UTF-8).
fn japanese_paths(len: usize) -> Run {
    let mut run = failed("r1a2b3c4", SHA_HEAD, 12);
    for (i, s) in run.specs.iter_mut().enumerate() {
        s.spec = format!("tests/{i}/{}", "テ".repeat(len));
    }
    run
}

/// Repro (audit): a body of ~37,000 characters of Japanese spec paths (~110,000 bytes)
/// fits GitHub's 65,536-character limit, but was measured in bytes: its failing-spec
/// lists were dropped and the "shortened" note added. It is now posted whole.
#[test]
fn a_multibyte_body_that_fits_in_characters_is_not_shortened() {
    let run = japanese_paths(1_500);
    let whole = body_with(&[post(&run, "RUN_FINISH")], 100, None, usize::MAX);
    assert!(whole.len() > GITHUB_BODY_LIMIT, "{} bytes", whole.len());
    // ~37,000 characters, each one UTF-16 code unit.
    let chars = whole.chars().count();
    assert!(
        (30_000..=GITHUB_BODY_LIMIT).contains(&chars),
        "{chars} characters"
    );
    assert_eq!(units(&whole), chars);
    let b = body_with(&[post(&run, "RUN_FINISH")], 100, None, GITHUB_BODY_LIMIT);
    assert!(!b.contains("shortened to fit"));
    assert!(b == whole, "a body within the limit is posted whole");
    assert_eq!(b.matches("テテテ`: 2 tests failed").count(), 12);
    assert_eq!(github_len(&b), chars, "the measure bodies are held against");
}

/// End to end: GitHub (the simulator counts characters) gets the whole multi-byte body
/// when it fits, and a shortened one within 65,536 characters when it does not.
#[tokio::test]
async fn multibyte_comments_are_measured_in_characters_on_github() {
    let env = Env::new().await;
    env.pr(7, BRANCH, SHA_HEAD);
    let mut opts = comment_only(env.opts());
    opts.max_failed_specs = 100;
    let r = env
        .summary(&opts, &japanese_paths(1_500), "RUN_FINISH")
        .await
        .unwrap();
    assert!(
        matches!(
            r.comments[..],
            [SummaryOutcome::Posted { created: true, .. }]
        ),
        "{r:?}"
    );
    let body = env.comments(7)[0].body.clone();
    assert!(body.len() > GITHUB_BODY_LIMIT, "{} bytes", body.len());
    assert!(!body.contains("shortened to fit"));
    assert_eq!(
        SummaryDoc::parse(&body).unwrap().sections[0]
            .failed_specs
            .len(),
        12
    );

    // Twice as long: over the limit in characters too; shortened, and accepted.
    let mut longer = japanese_paths(3_000);
    longer.run_id = "r2".into();
    longer.created_at += chrono::Duration::minutes(5);
    let r = env.summary(&opts, &longer, "RUN_FINISH").await.unwrap();
    assert!(
        matches!(
            r.comments[..],
            [SummaryOutcome::Posted { created: false, .. }]
        ),
        "{r:?}"
    );
    let body = &env.comments(7)[0].body;
    assert!(body.contains("shortened to fit"), "{body}");
    assert!(units(body) <= GITHUB_BODY_LIMIT);
    assert!(body.chars().count() <= GITHUB_BODY_LIMIT);
    assert_eq!(SummaryDoc::parse(body).unwrap().sections[0].run_id, "r2");
}
