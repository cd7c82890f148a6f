//! Edges of run summaries on GitHub (SPEC §4 `summary`): what untrusted names can do to
//! the comment's Markdown, commits GitHub does not know, a comment a user deleted, and a
//! PR closed or merged while its run goes on.

mod common;

use runwarden::config::SummaryOptions;
use runwarden::currents::Run;
use runwarden::github::render::{
    GITHUB_BODY_LIMIT, MARKER, PrInfo, RenderInput, Section, SummaryDoc, render_body,
};
use runwarden::github::summary::{StatusOutcome, SummaryOutcome, merge_section};
use runwarden::simulator::{self, Fault, FaultKind, NewPr};
use serde_json::{Value, json};

#[path = "support/summary_env.rs"]
mod summary_env;
use summary_env::*;

const DASH: &str = "https://app.currents.dev";
const SHA_HEAD: &str = "89e6c98d92887913cadf06b2adb97f26cde4849b";
const BRANCH: &str = "feat/login";

fn run_value(id: &str, sha: &str) -> Value {
    json!({
        "runId": id,
        "projectId": "bAYZ4a",
        "createdAt": "2026-03-02T10:00:00Z",
        "completionState": "COMPLETE",
        "status": "FAILED",
        "tags": [],
        "durationMs": 252_000,
        "groups": [{
            "groupId": "chromium",
            "instances": {"overall": 12, "claimed": 12, "complete": 12, "passes": 11, "failures": 1},
            "tests": {"overall": 121, "passes": 116, "failures": 2, "pending": 1, "skipped": 2, "retries": 2, "flaky": 1}
        }],
        "specs": [{
            "groupId": "chromium",
            "spec": "tests/e2e/login.spec.ts",
            "instanceId": "inst1",
            "completedAt": "2026-03-02T10:04:00Z",
            "results": {"stats": {"tests": 10, "passes": 8, "failures": 2, "pending": 0, "skipped": 0}}
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

fn failed(id: &str, sha: &str) -> Run {
    serde_json::from_value(run_value(id, sha)).expect("a valid run")
}

/// Run `id` of `sha`, started and still going.
fn running(id: &str, sha: &str) -> Run {
    let mut v = run_value(id, sha);
    v["completionState"] = json!("IN_PROGRESS");
    v["status"] = json!("RUNNING");
    v["durationMs"] = Value::Null;
    serde_json::from_value(v).expect("a valid run")
}

/// A failed run of two groups named `groups` (its group table lists them).
fn failed_in_groups(id: &str, groups: &[&str]) -> Run {
    let mut v = run_value(id, SHA_HEAD);
    v["groups"] = Value::Array(
        groups
            .iter()
            .map(|g| {
                json!({
                    "groupId": g,
                    "instances": {"overall": 6, "claimed": 6, "complete": 6, "passes": 5, "failures": 1},
                    "tests": {"overall": 60, "passes": 57, "failures": 1, "pending": 0, "skipped": 2, "retries": 0, "flaky": 0}
                })
            })
            .collect(),
    );
    serde_json::from_value(v).expect("a valid run")
}

// ---------------------------------------------------------------------------------------
// Markdown: how GitHub (cmark-gfm) splits a table row into cells
// ---------------------------------------------------------------------------------------

/// The cells of a GFM table row as cmark-gfm's table extension splits it
/// (`extensions/table.c`, `ext_scanners.re`): a backslash and the ASCII punctuation
/// character after it are one escaped pair, so only a `|` that is not the second half of
/// a pair separates cells (`\\|` is an escaped backslash, then a separator); then a
/// backslash before a pipe is dropped from each cell (`unescape_pipes`).
fn gfm_cells(row: &str) -> Vec<String> {
    let row = row.trim();
    let row = row.strip_prefix('|').unwrap_or(row);
    let mut cells = Vec::new();
    let mut cell = String::new();
    let mut chars = row.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek().is_some_and(char::is_ascii_punctuation) => {
                cell.push(c);
                cell.push(chars.next().unwrap());
            }
            '|' => cells.push(std::mem::take(&mut cell)),
            c => cell.push(c),
        }
    }
    if !cell.trim().is_empty() {
        cells.push(cell);
    }
    cells
        .into_iter()
        .map(|c| c.replace("\\|", "|").trim().to_string())
        .collect()
}

/// The rows of the first table in `body` (header, delimiter and data rows).
fn first_table(body: &str) -> Vec<&str> {
    body.lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .collect()
}

fn render(run: &Run) -> String {
    let s = Section::from_run(run, "RUN_FINISH", None, DASH, 10);
    let key = s.key.clone();
    let mut doc = SummaryDoc::default();
    merge_section(&mut doc, s, SHA_HEAD);
    let pr = PrInfo {
        number: 7,
        head_sha: SHA_HEAD.into(),
        head_ref: BRANCH.into(),
    };
    render_body(
        &doc,
        &RenderInput {
            pr: &pr,
            current_key: &key,
            dashboard_url: DASH,
            template: None,
            limit: GITHUB_BODY_LIMIT,
        },
    )
    .unwrap()
}

#[test]
fn the_oracle_splits_rows_as_cmark_gfm_does() {
    assert_eq!(gfm_cells("| a | b |"), ["a", "b"]);
    assert_eq!(gfm_cells("| `a\\|b` | c |"), ["`a|b`", "c"]);
    // An escaped backslash, then a separator.
    assert_eq!(gfm_cells("| `a\\\\|b` | c |"), ["`a\\\\", "b`", "c"]);
    assert_eq!(gfm_cells("| a\\\\\\|b | c |"), ["a\\\\|b", "c"]);
}

/// A group name (the CI's `--group`, written by whoever edits the workflow, a fork's PR
/// included) with a backslash before a pipe used to end its table cell early: `\|`
/// became `\\|`, an escaped backslash and a separator, so the row had a cell too many and
/// its counts moved one column right.
#[test]
fn a_group_name_cannot_add_cells_to_the_group_table() {
    for evil in ["a\\|b", "x\\|9\\|9\\|9\\|9\\|9", "\\|", "a\\\\|b", "`\\|`"] {
        let body = render(&failed_in_groups("r1", &[evil, "firefox"]));
        let table = first_table(&body);
        assert!(table.len() >= 4, "{evil}: {body}");
        let header = gfm_cells(table[0]).len();
        assert_eq!(header, 6, "{evil}: {}", table[0]);
        for row in &table[2..] {
            assert_eq!(
                gfm_cells(row).len(),
                header,
                "{evil}: row {row:?} of\n{body}"
            );
        }
        // The counts stay in their columns.
        let evil_row = table[2..]
            .iter()
            .find(|r| !r.contains("firefox") && !r.contains("Total"))
            .unwrap();
        assert_eq!(
            gfm_cells(evil_row)[1..],
            ["57", "1", "0", "0", "2"],
            "{evil}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// End to end against the simulator's GitHub
// ---------------------------------------------------------------------------------------

fn config_text(api: &str) -> String {
    format!(
        r#"
[currents]
projects = ["bAYZ4a"]
dashboard_url = "{DASH}"

[github]
api_url = "{api}"
repos = {{ bAYZ4a = "acme/web" }}

[[rules]]
name = "pr-summary"
kind = "summary"
commit_status = true
"#
    )
}

impl Env {
    async fn new() -> Env {
        Env::start(config_text).await
    }
}

/// GitHub's answer to a status for a commit it does not have (a run recorded from a
/// developer's machine, or from a commit never pushed to the repository).
const NO_COMMIT: &str = r#"{"message":"No commit found for SHA: 1234567890abcdef1234567890abcdef12345678","documentation_url":"https://docs.github.com/rest/commits/statuses#create-a-commit-status","status":"422"}"#;

/// A run of a commit GitHub does not know has neither a PR nor a status to post: the
/// summary is skipped, with the reason, not failed for good (which listed every local
/// run as a failed action on the status page and in `audit`).
#[tokio::test]
async fn a_status_for_a_commit_github_does_not_know_is_skipped_not_failed() {
    let env = Env::new().await;
    let sha = "1234567890abcdef1234567890abcdef12345678";
    env.sim.inject_fault(
        Fault::new(FaultKind::Status {
            status: 422,
            body: Some(NO_COMMIT.into()),
            retry_after: None,
        })
        .on("POST", format!("/github/repos/acme/web/statuses/{sha}"))
        .times(None),
    );
    let r = env
        .summary(&env.opts(), &failed("r1", sha), "RUN_FINISH")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    match &r.status {
        Some(StatusOutcome::Skipped(why)) => {
            assert!(why.contains("No commit found"), "{why}");
            assert!(why.contains(sha), "{why}");
        }
        other => panic!("{other:?}"),
    }
    assert!(r.is_skipped(), "{r}");
    assert_eq!(env.count_writes("POST", "/statuses/"), 1, "not retried");
}

/// The same answer in the shape of a validation error (`errors[].message`) is read the
/// same way; another 422 (the 1,000 statuses of a context used up) stays a failure, and
/// names its cause rather than only "Validation Failed".
#[tokio::test]
async fn only_an_unknown_commit_makes_a_422_status_a_skip() {
    let env = Env::new().await;
    let sha = "1234567890abcdef1234567890abcdef12345678";
    let validation = |msg: &str| {
        json!({
            "message": "Validation Failed",
            "errors": [{"resource": "Status", "code": "custom", "field": "sha", "message": msg}],
            "status": "422",
        })
        .to_string()
    };
    env.sim.inject_fault(
        Fault::new(FaultKind::Status {
            status: 422,
            body: Some(validation(&format!("No commit found for SHA: {sha}"))),
            retry_after: None,
        })
        .on("POST", "/github/repos/acme/web/statuses/"),
    );
    let r = env
        .summary(&env.opts(), &failed("r1", sha), "RUN_FINISH")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        matches!(&r.status, Some(StatusOutcome::Skipped(w)) if w.contains("No commit found")),
        "{r:?}"
    );

    env.sim.inject_fault(
        Fault::new(FaultKind::Status {
            status: 422,
            body: Some(validation(
                "This SHA and context has reached the maximum number of statuses.",
            )),
            retry_after: None,
        })
        .on("POST", "/github/repos/acme/web/statuses/"),
    );
    let e = env
        .summary(&env.opts(), &failed("r2", sha), "RUN_FINISH")
        .await
        .unwrap_err();
    assert!(!e.retryable, "{e}");
    assert!(e.message.contains("maximum number of statuses"), "{e}");
}

/// A run whose commit is not a sha at all (`meta.commit.sha` as some CIs or local runs
/// record it) gets no status, and the summary is skipped, not failed.
#[tokio::test]
async fn a_run_whose_commit_is_not_a_sha_gets_no_status_and_no_failure() {
    let env = Env::new().await;
    let mut v = run_value("r1", "HEAD");
    v["meta"]["commit"]["branch"] = json!("no-such-branch");
    let run: Run = serde_json::from_value(v).unwrap();
    let r = env
        .summary(&env.opts(), &run, "RUN_FINISH")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        matches!(&r.status, Some(StatusOutcome::Skipped(w)) if w.contains("HEAD")),
        "{r:?}"
    );
    assert!(r.is_skipped(), "{r}");
    assert_eq!(env.count_writes("POST", "/statuses/"), 0);
}

/// A user deletes runwarden's comment: the next event posts it again, once, and the
/// event after that edits the new one.
#[tokio::test]
async fn a_comment_deleted_by_a_user_is_posted_again_once() {
    let env = Env::new().await;
    env.pr(7, BRANCH, SHA_HEAD);
    let mut opts = env.opts();
    opts.commit_status = false;
    env.summary(&opts, &failed("r1", SHA_HEAD), "RUN_FINISH")
        .await
        .unwrap();
    let first = env.comments(7)[0].id;
    let del = reqwest::Client::new()
        .delete(format!(
            "{}/repos/{REPO}/issues/comments/{first}",
            env.sim.github_url()
        ))
        .bearer_auth("user:maintainer")
        .send()
        .await
        .unwrap();
    assert!(del.status().is_success(), "{}", del.status());
    assert!(env.comments(7).is_empty());

    let mut again = failed("r2", SHA_HEAD);
    again.created_at += chrono::Duration::minutes(5);
    let r = env.summary(&opts, &again, "RUN_FINISH").await.unwrap();
    let SummaryOutcome::Posted {
        comment_id: second,
        created: true,
        ..
    } = r.comments[0]
    else {
        panic!("{r:?}")
    };
    assert_ne!(second, first);
    let mut third = failed("r3", SHA_HEAD);
    third.created_at += chrono::Duration::minutes(10);
    let r = env.summary(&opts, &third, "RUN_FINISH").await.unwrap();
    assert!(
        matches!(r.comments[0], SummaryOutcome::Posted { comment_id, created: false, .. } if comment_id == second),
        "{r:?}"
    );
    let c = env.comments(7);
    assert_eq!(c.len(), 1, "{c:?}");
    assert!(c[0].body.starts_with(MARKER) && c[0].body.contains("/run/r3"));
}

/// The visible Markdown a template renders for one failed run on `branch` with a spec
/// at `spec` (both from whoever pushes).
fn render_template(branch: &str, spec: &str, template: &str) -> String {
    let mut v = run_value("r1", SHA_HEAD);
    v["meta"]["commit"]["branch"] = json!(branch);
    v["specs"][0]["spec"] = json!(spec);
    let run: Run = serde_json::from_value(v).unwrap();
    let s = Section::from_run(&run, "RUN_FINISH", None, DASH, 10);
    let key = s.key.clone();
    let mut doc = SummaryDoc::default();
    merge_section(&mut doc, s, SHA_HEAD);
    let pr = PrInfo {
        number: 7,
        head_sha: SHA_HEAD.into(),
        head_ref: branch.into(),
    };
    let t = (std::path::PathBuf::from("t.md"), template.to_string());
    let body = render_body(
        &doc,
        &RenderInput {
            pr: &pr,
            current_key: &key,
            dashboard_url: DASH,
            template: Some(&t),
            limit: GITHUB_BODY_LIMIT,
        },
    )
    .unwrap();
    let visible = body.strip_prefix(MARKER).unwrap();
    visible[..visible.find("<!-- runwarden:state ").unwrap()]
        .trim()
        .to_string()
}

/// `| url` (marked safe: nothing escapes it afterwards) used to encode only spaces,
/// parentheses and angle brackets: a spec path with a line break (a file name may hold
/// one) ended the link's line, and `@org/team` on the next line pinged the team.
#[test]
fn a_url_filtered_value_cannot_leave_its_link_or_its_line() {
    let spec = "a.spec.ts\n\n@org/team\r\n\t[x](https://evil.test)";
    let out = render_template(
        BRANCH,
        spec,
        "{% for f in current.failed_specs %}[spec](https://example.test/{{ f.spec | url }}){% endfor %}",
    );
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(!out.contains(' ') && !out.contains('\t'), "{out}");
    assert!(
        out.starts_with("[spec](https://example.test/a.spec.ts%0A%0A@org/team%0D%0A%09"),
        "{out}"
    );
    assert!(out.ends_with("[x]%28https://evil.test%29)"), "{out}");
}

/// `$...$` is math on GitHub (a value could draw large coloured text into the comment):
/// printed values escape the `$`.
#[test]
fn printed_values_cannot_start_math() {
    let out = render_template("feat/$\\huge{x}$", "a.spec.ts", "{{ current.branch }}");
    assert_eq!(out, "feat/\\$\\\\huge{x}\\$");
}

// ---------------------------------------------------------------------------------------
// A PR closed or merged while its run goes on
// ---------------------------------------------------------------------------------------

const SHA_NEXT: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c";

impl Env {
    /// Closes PR `number` (`merged`: merges it), its head as it is.
    fn close(&self, number: u64, merged: bool) {
        self.sim
            .add_pr(NewPr {
                repo: REPO.into(),
                number: Some(number),
                state: Some("closed".into()),
                merged: Some(merged),
                ..NewPr::default()
            })
            .unwrap();
    }

    /// The comment options with `RUN_START` (a comment that says the run is running).
    fn opts_with_start(&self) -> SummaryOptions {
        let mut o = self.opts();
        o.commit_status = false;
        o.events.push("RUN_START".into());
        o
    }
}

/// The bug: a PR merged while its run went on kept "⏳ Running" for ever, as the run's
/// end looked at open PRs only. End to end (webhooks, processor, executor): the merged
/// PR's comment is edited to the run's end, and no second comment is posted.
#[tokio::test(flavor = "multi_thread")]
async fn a_pr_merged_while_its_run_goes_on_shows_the_runs_end() {
    let rules = "[[rules]]\nname = \"pr-summary\"\nkind = \"summary\"\ncommit_status = true\nevents = [\"RUN_START\", \"RUN_FINISH\"]\n";
    let app = common::spawn_app(rules).await;
    let (branch, sha) = ("feat/merge-early", "c105edc105edc105ed");
    let mut r = common::run(branch, sha, 5);
    r.state = Some("running".into());
    let id = app.sim.add_run(r).unwrap().run_id;
    app.open_pr(branch, sha, 21);
    let bodies = |app: &common::TestApp| -> Vec<String> {
        app.sim
            .comments(Some(common::REPO), Some(21))
            .into_iter()
            .map(|c| c.body)
            .collect()
    };
    let statuses = |app: &common::TestApp| -> Vec<String> {
        app.sim
            .statuses(Some(common::REPO), Some(sha))
            .into_iter()
            .map(|s| s.state)
            .collect()
    };
    assert_eq!(app.currents_hook("RUN_START", &id).await.status(), 202);
    app.wait_for("the running comment and pending status", 20, |app| {
        bodies(app).iter().any(|b| b.contains("⏳ Running"))
            && statuses(app).iter().any(|s| s == "pending")
    })
    .await;
    // Merged at the run's sha, the run still going.
    app.sim
        .add_pr(NewPr {
            repo: common::REPO.into(),
            number: Some(21),
            merged: Some(true),
            ..NewPr::default()
        })
        .unwrap();
    let pr = app.sim.prs().into_iter().find(|p| p.number == 21).unwrap();
    assert!(
        pr.merged && pr.state == "closed" && pr.head_sha == sha,
        "{pr:?}"
    );
    app.sim
        .advance(
            &id,
            simulator::Advance {
                finish: Some(simulator::Outcome::Failed),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(app.currents_hook("RUN_FINISH", &id).await.status(), 202);
    // The status follows the comment in the same summary: once it says the run failed,
    // the comment has been written (or left).
    app.wait_for("the failure status", 20, |app| {
        statuses(app).iter().any(|s| s == "failure")
    })
    .await;
    let b = bodies(&app);
    assert_eq!(b.len(), 1, "edited, not posted again: {b:#?}");
    assert!(
        b[0].contains("❌ Failed") && !b[0].contains("⏳ Running"),
        "{}",
        b[0]
    );
    let posts = app
        .mutations()
        .into_iter()
        .filter(|m| m.starts_with("POST") && m.ends_with("/issues/21/comments"))
        .count();
    assert_eq!(posts, 1, "{:?}", app.mutations());
}

/// Closed PRs at the run's sha: the merged one with runwarden's comment (it was open
/// when the run started) has it edited; the one without gets none, though its head is
/// the run's sha too.
#[tokio::test]
async fn a_closed_pr_without_runwardens_comment_gets_none() {
    let env = Env::new().await;
    let opts = env.opts_with_start();
    env.pr(7, BRANCH, SHA_HEAD);
    env.summary(&opts, &running("r1", SHA_HEAD), "RUN_START")
        .await
        .unwrap();
    assert!(env.comments(7)[0].body.contains("⏳ Running"));
    // PR 8: the same head, closed without a comment (say, reopened as 7).
    env.pr(8, BRANCH, SHA_HEAD);
    env.close(8, false);
    env.close(7, true);
    let r = env
        .summary(&opts, &failed("r1", SHA_HEAD), "RUN_FINISH")
        .await
        .unwrap();
    assert!(
        matches!(
            &r.comments[..],
            [SummaryOutcome::Posted {
                pr: 7,
                created: false,
                ..
            }]
        ),
        "{r:?}"
    );
    let c = env.comments(7);
    assert_eq!(c.len(), 1, "{c:#?}");
    assert!(c[0].body.contains("❌ Failed") && !c[0].body.contains("⏳ Running"));
    assert!(env.comments(8).is_empty(), "{:#?}", env.comments(8));
    assert_eq!(
        env.count_writes("POST", "/comments"),
        1,
        "the first one only"
    );
}

/// A closed PR whose head moved on from the run's sha (a later push; likewise a
/// rebase-merge, whose commits on the base are other shas) keeps its comment as it is,
/// though GitHub lists it for the run's commit; a closed PR whose head is the run's sha
/// has its comment edited.
#[tokio::test]
async fn a_closed_pr_whose_head_is_not_the_runs_sha_is_not_touched() {
    let env = Env::new().await;
    let opts = env.opts_with_start();
    env.pr(7, BRANCH, SHA_HEAD);
    env.pr(9, "feat/other", SHA_HEAD);
    let r = env
        .summary(&opts, &running("r1", SHA_HEAD), "RUN_START")
        .await
        .unwrap();
    assert_eq!(r.comments.len(), 2, "{r:?}");
    let before = env.comments(9);
    assert!(before[0].body.contains("⏳ Running"));
    // PR 9 gets another commit, then is merged; PR 7 is merged at the run's sha.
    env.pr(9, "feat/other", SHA_NEXT);
    env.close(9, true);
    env.close(7, true);
    let r = env
        .summary(&opts, &failed("r1", SHA_HEAD), "RUN_FINISH")
        .await
        .unwrap();
    assert!(
        matches!(
            &r.comments[..],
            [SummaryOutcome::Posted {
                pr: 7,
                created: false,
                ..
            }]
        ),
        "{r:?}"
    );
    assert!(env.comments(7)[0].body.contains("❌ Failed"));
    assert_eq!(env.comments(9), before, "PR 9's comment is untouched");
    assert_eq!(
        env.count_writes("POST", "/comments"),
        2,
        "none posted again"
    );
    assert_eq!(env.count_writes("PATCH", "/comments"), 1, "PR 7's only");
}
