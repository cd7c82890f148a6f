//! The fault matrix (issue 8), end to end: the real bot (router, store, processor,
//! executor) against the simulator with faults injected into the Currents API (and, for a
//! long rate limit, into GitHub's).
//!
//! Every case checks the same three things:
//! - the action completes once when the fault clears (one successful cancel in the
//!   simulator's mutation log; a repeat answered 422 "already cancelled" counts as done),
//!   or it is `failed` with a clear reason after its last attempt;
//! - another action, on another run, is not held back meanwhile;
//! - nothing else is mutated.
//!
//! The executor's retry schedule is shortened through `AppContext::executor` (the same
//! code paths as production, smaller numbers), and so are the client's own retries.

mod common;

use std::time::Duration;

use common::*;
use runwarden::actions::ExecutorOptions;
use runwarden::github::{GithubAuth, GithubClient, GithubClientOptions, RetryPolicy};
use runwarden::secret::Secret;
use runwarden::simulator::{Fault, FaultKind, LogEntry};
use runwarden::store::{ActionRow, ActionState};

const SUPERSEDE: &str = "[[rules]]\nname = \"cancel-superseded\"\nkind = \"supersede\"\n[rules.match]\nbranches = [\"*\", \"!main\"]\n";

/// A bot whose executor retries every 100..500 ms, `max_attempts` times, over a client
/// that tries each request twice.
fn fast(max_attempts: i64) -> AppOptions {
    AppOptions {
        rules: SUPERSEDE.into(),
        executor: Some(ExecutorOptions {
            max_attempts,
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_millis(500),
            lease: Duration::from_secs(60),
        }),
        client_retries: Some((2, Duration::from_millis(50))),
        ..AppOptions::default()
    }
}

/// Enough attempts that an action keeps retrying until the test clears the fault.
const UNTIL_CLEARED: i64 = 1000;

fn fault(method: &str, path: &str, kind: FaultKind, times: Option<u32>) -> Fault {
    Fault::new(kind).on(method, path).times(times)
}

/// An in-progress run superseded by a newer one on the same branch.
struct Pair {
    old: String,
    new: String,
}

impl Pair {
    fn cancel_path(&self) -> String {
        format!("/v1/runs/{}/cancel", self.old)
    }
}

fn pair(app: &TestApp, branch: &str) -> Pair {
    let old = app
        .sim
        .add_run(run(branch, &format!("{branch}-old"), 10))
        .unwrap();
    let new = app
        .sim
        .add_run(run(branch, &format!("{branch}-new"), 1))
        .unwrap();
    Pair {
        old: old.run_id,
        new: new.run_id,
    }
}

async fn trigger(app: &TestApp, p: &Pair) {
    let r = app.currents_hook("RUN_START", &p.new).await;
    assert_eq!(r.status(), 202);
}

async fn action(app: &TestApp, run_id: &str) -> Option<ActionRow> {
    app.bot
        .ctx
        .store
        .action_by_key(&format!("cancel:{run_id}"))
        .await
        .unwrap()
}

/// Waits until the cancel action of `run_id` satisfies `f`; panics after `secs`.
async fn wait_action<F: Fn(&ActionRow) -> bool>(
    app: &TestApp,
    run_id: &str,
    what: &str,
    secs: u64,
    f: F,
) -> ActionRow {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(a) = action(app, run_id).await
            && f(&a)
        {
            return a;
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "timed out waiting for {what}; action: {:#?}; mutations: {:#?}",
                action(app, run_id).await,
                app.sim.mutation_log()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn entries(app: &TestApp, path: &str) -> Vec<LogEntry> {
    app.sim
        .mutation_log()
        .into_iter()
        .filter(|e| e.path == path)
        .collect()
}

/// The cancel of `p.old` took effect exactly once: the run is cancelled, one request
/// succeeded (or was carried out and its answer lost, for `apply` faults), and every
/// other request was answered by a fault or 422 "already cancelled".
fn cancelled_once(app: &TestApp, p: &Pair, applied_by_fault: usize) {
    let log = entries(app, &p.cancel_path());
    let ok = log
        .iter()
        .filter(|e| (200..300).contains(&e.status) && e.fault.is_none())
        .count();
    assert_eq!(ok + applied_by_fault, 1, "one cancel took effect: {log:#?}");
    for e in &log {
        assert!(
            (200..300).contains(&e.status) || e.status == 422 || e.fault.is_some(),
            "unexpected answer: {e:#?}"
        );
    }
    let run = app.sim.run(&p.old).unwrap();
    assert_eq!(run.completion_state.as_str(), "CANCELED");
    assert_eq!(
        app.sim.run(&p.new).unwrap().completion_state.as_str(),
        "IN_PROGRESS",
        "the newest run is never cancelled"
    );
}

/// Only cancels of the old runs of `pairs` were requested.
fn only_cancels_of(app: &TestApp, pairs: &[&Pair]) {
    for e in app.sim.mutation_log() {
        assert!(
            pairs.iter().any(|p| e.path == p.cancel_path()) && e.method == "PUT",
            "unexpected mutation {e:#?}"
        );
    }
}

/// The shape of every "fault clears" case: `x` is faulted with `kind` until the test
/// clears it, `y` (another branch) is not faulted and completes meanwhile; once the
/// fault is cleared, `x` completes once. With `apply`, the simulator carries the request
/// out before failing its answer (once): the ambiguous write. Returns `x`'s action row.
async fn clears(
    kind: FaultKind,
    method: &str,
    path_of: fn(&Pair) -> String,
    apply: bool,
) -> ActionRow {
    let app = spawn_app_with(fast(UNTIL_CLEARED)).await;
    let x = pair(&app, "feat/x");
    let y = pair(&app, "feat/y");
    let f = Fault::new(kind).on(method, path_of(&x));
    let id = app
        .sim
        .inject_fault(if apply { f.applied() } else { f.always() });
    trigger(&app, &x).await;
    trigger(&app, &y).await;
    if !apply {
        // x fails (and is retried), y is done meanwhile, x is still being retried.
        wait_action(&app, &x.old, "a failed attempt of x", 30, |a| {
            a.attempts >= 1 && a.last_error.is_some()
        })
        .await;
        wait_action(&app, &y.old, "y done while x is faulted", 30, |a| {
            a.state == ActionState::Done
        })
        .await;
        let xa = action(&app, &x.old).await.unwrap();
        assert!(!xa.state.is_terminal(), "x is still being retried: {xa:#?}");
        app.sim.remove_fault(id);
    }
    let xa = wait_action(&app, &x.old, "x done once the fault cleared", 30, |a| {
        a.state.is_terminal()
    })
    .await;
    assert_eq!(xa.state, ActionState::Done, "{xa:#?}");
    wait_action(&app, &y.old, "y done", 30, |a| a.state == ActionState::Done).await;
    cancelled_once(&app, &x, usize::from(apply));
    cancelled_once(&app, &y, 0);
    only_cancels_of(&app, &[&x, &y]);
    let audit = app.bot.ctx.store.audit(None, None, 100).await.unwrap();
    assert_eq!(
        audit.len(),
        2,
        "one decision per superseded run: {audit:#?}"
    );
    assert!(
        audit.iter().all(|e| e.outcome.as_str() == "done"),
        "{audit:#?}"
    );
    xa
}

fn cancel_path(p: &Pair) -> String {
    p.cancel_path()
}

fn run_path(p: &Pair) -> String {
    format!("/v1/runs/{}", p.old)
}

// ---------------------------------------------------------------------------------------
// Faults that clear

#[tokio::test]
async fn a_5xx_burst_on_cancel_is_retried_until_it_clears() {
    let a = clears(
        FaultKind::Status {
            status: 503,
            body: None,
            retry_after: None,
        },
        "PUT",
        cancel_path,
        false,
    )
    .await;
    assert!(a.attempts >= 2, "the executor retried: {a:#?}");
}

#[tokio::test]
async fn a_429_without_retry_after_is_retried_until_it_clears() {
    clears(
        FaultKind::RateLimit {
            status: 429,
            retry_after: None,
            reset_after: None,
        },
        "PUT",
        cancel_path,
        false,
    )
    .await;
}

#[tokio::test]
async fn dropped_connections_are_retried_until_they_clear() {
    clears(FaultKind::Drop, "PUT", cancel_path, false).await;
}

#[tokio::test]
async fn html_error_pages_are_retryable_server_errors() {
    let a = clears(FaultKind::Html { status: 502 }, "PUT", cancel_path, false).await;
    // The HTML page was classified as a 502, not a parse error.
    let err = a.last_error.unwrap_or_default();
    assert!(err.contains("502"), "{err}");
}

#[tokio::test]
async fn a_malformed_json_200_on_cancel_is_retried_not_final() {
    // Without `apply`: the cancel did not happen; the next attempt carries it out.
    let a = clears(FaultKind::MalformedJson, "PUT", cancel_path, false).await;
    assert!(a.last_error.unwrap_or_default().contains("undecodable"));
}

#[tokio::test]
async fn a_malformed_json_200_on_the_verifying_read_is_retried() {
    // The cancel succeeds; reading the run back fails to decode: the next attempt's
    // cancel is answered 422 "already cancelled" (done) and the read succeeds.
    let a = clears(FaultKind::MalformedJson, "GET", run_path, false).await;
    assert!(a.last_error.unwrap_or_default().contains("verify"));
}

#[tokio::test]
async fn an_ambiguous_cancel_carried_out_but_answered_with_a_dropped_connection_is_done_once() {
    // The simulator cancels the run, then drops the connection: the bot cannot know, tries
    // again, gets 422 "already cancelled" and counts it as done.
    clears(FaultKind::Drop, "PUT", cancel_path, true).await;
}

#[tokio::test]
async fn an_ambiguous_cancel_answered_with_a_truncated_body_is_done_once() {
    clears(FaultKind::MalformedJson, "PUT", cancel_path, true).await;
}

#[tokio::test]
async fn a_429_with_retry_after_is_honoured() {
    // The client waits what Retry-After asks before its next request.
    let app = spawn_app_with(fast(UNTIL_CLEARED)).await;
    let x = pair(&app, "feat/x");
    app.sim.inject_fault(fault(
        "PUT",
        &x.cancel_path(),
        FaultKind::RateLimit {
            status: 429,
            retry_after: Some(2),
            reset_after: None,
        },
        Some(1),
    ));
    trigger(&app, &x).await;
    wait_action(&app, &x.old, "x done", 30, |a| a.state == ActionState::Done).await;
    cancelled_once(&app, &x, 0);
    let log = entries(&app, &x.cancel_path());
    assert_eq!(log.len(), 2, "{log:#?}");
    assert_eq!(log[0].status, 429);
    let waited = log[1].at - log[0].at;
    assert!(
        waited >= chrono::Duration::milliseconds(1900),
        "waited only {waited}"
    );
}

#[tokio::test]
async fn a_retry_after_longer_than_the_client_waits_postpones_the_next_attempt() {
    // A client that tries each call once hands the 429 and its Retry-After (120 s) back
    // to the executor. The attempt counts, but the next one is scheduled no earlier than
    // the API asked, not after the executor's own backoff (100..500 ms here).
    let app = spawn_app_with(AppOptions {
        client_retries: Some((1, Duration::from_millis(50))),
        ..fast(UNTIL_CLEARED)
    })
    .await;
    let x = pair(&app, "feat/x");
    app.sim.inject_fault(fault(
        "PUT",
        &x.cancel_path(),
        FaultKind::RateLimit {
            status: 429,
            retry_after: Some(120),
            reset_after: None,
        },
        Some(1),
    ));
    let before = chrono::Utc::now();
    trigger(&app, &x).await;
    let xa = wait_action(&app, &x.old, "the rate-limited attempt", 30, |a| {
        a.attempts >= 1 && a.last_error.is_some()
    })
    .await;
    assert_eq!(
        (xa.state, xa.attempts),
        (ActionState::Pending, 1),
        "{xa:#?}"
    );
    let err = xa.last_error.clone().unwrap_or_default();
    assert!(err.contains("429"), "{err}");
    assert!(
        xa.next_attempt_at >= before + chrono::Duration::seconds(119)
            && xa.next_attempt_at <= chrono::Utc::now() + chrono::Duration::seconds(121),
        "next attempt at {} (now {}): {xa:#?}",
        xa.next_attempt_at,
        chrono::Utc::now()
    );
    // Not tried again meanwhile.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(entries(&app, &x.cancel_path()).len(), 1);
    let xa = action(&app, &x.old).await.unwrap();
    assert_eq!(
        (xa.state, xa.attempts),
        (ActionState::Pending, 1),
        "{xa:#?}"
    );
}

/// The action `key` once its first attempt failed and it waits for the next (30 s at
/// most).
async fn first_attempt_pending(app: &TestApp, key: &str) -> ActionRow {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let sa = loop {
        let a = app.bot.ctx.store.action_by_key(key).await.unwrap();
        if let Some(a) = &a
            && a.attempts >= 1
        {
            break a.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no attempt of {key}: {a:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        (sa.state, sa.attempts),
        (ActionState::Pending, 1),
        "{sa:#?}"
    );
    sa
}

#[tokio::test]
async fn a_summary_whose_comment_step_failed_posts_no_status_until_its_retry() {
    // The comment step fails (its pull request lookup answers 500): the status, which is
    // derived from the merged comment, is not posted from this run alone (it could hide
    // another group's failure); the summary is retried after the executor's backoff, and
    // the status step (here under a 20-minute rate limit) was not even tried.
    let rules = "[[rules]]\nname = \"pr-summary\"\nkind = \"summary\"\ncommit_status = true\n";
    let app = spawn_app_with(AppOptions {
        rules: rules.into(),
        ..fast(3)
    })
    .await;
    let mut r = run("feat/sum", "abcdef1234", 5);
    r.state = Some("failed".into());
    let id = app.sim.add_run(r).unwrap().run_id;
    for (method, path, kind) in [
        (
            "GET",
            format!("/github/repos/{REPO}/commits/abcdef1234/pulls"),
            FaultKind::Status {
                status: 500,
                body: None,
                retry_after: None,
            },
        ),
        (
            "POST",
            format!("/github/repos/{REPO}/statuses"),
            FaultKind::RateLimit {
                status: 403,
                retry_after: Some(1200),
                reset_after: None,
            },
        ),
    ] {
        app.sim
            .inject_fault(Fault::new(kind).on(method, path).always());
    }
    let before = chrono::Utc::now();
    assert_eq!(app.currents_hook("RUN_FINISH", &id).await.status(), 202);
    let key = format!("summarize:pr-summary:{id}:RUN_FINISH");
    let sa = first_attempt_pending(&app, &key).await;
    let err = sa.last_error.clone().unwrap_or_default();
    assert!(err.contains("500") && !err.contains("status: "), "{err}");
    assert!(
        sa.next_attempt_at < before + chrono::Duration::seconds(600),
        "the executor's backoff, not the status's rate limit: {sa:#?}"
    );
    assert!(
        !app.sim
            .mutation_log()
            .iter()
            .any(|e| e.path.ends_with("/statuses") || e.path.contains("/statuses/")),
        "no status tried: {:#?}",
        app.sim.mutation_log()
    );
}

#[tokio::test]
async fn a_long_github_rate_limit_postpones_the_summary_instead_of_failing_it() {
    // GitHub asks to wait 20 minutes, longer than its client sleeps through: the error
    // comes back with the wait, and the summary action's next attempt is scheduled no
    // earlier than that, instead of after the executor's short backoff (which would use
    // up every attempt within seconds and fail the summary for good).
    let rules = "[[rules]]\nname = \"pr-summary\"\nkind = \"summary\"\n";
    let app = spawn_app_with(AppOptions {
        rules: rules.into(),
        ..fast(3)
    })
    .await;
    let id = app.failed_run_with_pr("feat/sum", "abcdef1234", 9);
    let limit = app.sim.inject_fault(
        Fault::new(FaultKind::RateLimit {
            status: 403,
            retry_after: Some(1200),
            reset_after: None,
        })
        .path("/github")
        .always(),
    );
    let fired = |app: &TestApp| {
        app.sim
            .faults()
            .iter()
            .find(|f| f.id == limit)
            .map_or(0, |f| f.fired)
    };
    let before = chrono::Utc::now();
    assert_eq!(app.currents_hook("RUN_FINISH", &id).await.status(), 202);
    let key = format!("summarize:pr-summary:{id}:RUN_FINISH");
    let sa = first_attempt_pending(&app, &key).await;
    let err = sa.last_error.clone().unwrap_or_default();
    assert!(err.contains("rate limited"), "{err}");
    assert!(!err.contains("gh-token"), "{err}");
    assert!(
        sa.next_attempt_at >= before + chrono::Duration::seconds(1199)
            && sa.next_attempt_at <= chrono::Utc::now() + chrono::Duration::seconds(1201),
        "next attempt at {} (now {}): {sa:#?}",
        sa.next_attempt_at,
        chrono::Utc::now()
    );
    // Operators see the hold: on the status page and in /metrics.
    let page = app.get_text("/").await;
    assert!(
        page.contains("GitHub rate limit: nothing is sent to GitHub before"),
        "{page}"
    );
    let metrics = app.get_text("/metrics").await;
    let wait: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("runwarden_github_rate_limit_wait_seconds "))
        .unwrap_or_else(|| panic!("no rate-limit gauge in {metrics}"))
        .parse()
        .unwrap();
    assert!(wait > 1100.0 && wait <= 1200.0, "{wait}");
    // GitHub is left alone meanwhile; the action is neither retried nor failed.
    let calls = fired(&app);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(fired(&app), calls, "GitHub was called again");
    let sa = app
        .bot
        .ctx
        .store
        .action_by_key(&key)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (sa.state, sa.attempts),
        (ActionState::Pending, 1),
        "{sa:#?}"
    );
    assert!(app.sim.comments(Some(REPO), Some(9)).is_empty());
}

/// Requests that reached the simulator's GitHub API so far (every method).
fn github_requests(app: &TestApp) -> u64 {
    app.sim
        .request_counts()
        .iter()
        .filter(|(k, _)| k.starts_with("github "))
        .map(|(_, n)| *n)
        .sum()
}

#[tokio::test]
async fn a_github_rate_limit_holds_back_other_summaries_until_it_ends() {
    // One summary's comment POST meets a 429 with Retry-After: 5 s, longer than its
    // client's `max_wait` (1 s here): the client hands the wait back and remembers it. A
    // summary for another PR, handled meanwhile, sends nothing to GitHub before the wait
    // ends: it is parked until then as well. Both are posted once it is over.
    const WAIT_SECS: i64 = 5;
    let rules = "[[rules]]\nname = \"pr-summary\"\nkind = \"summary\"\n";
    let p = prepare_app(AppOptions {
        rules: rules.into(),
        ..fast(UNTIL_CLEARED)
    })
    .await;
    let mut ctx = std::sync::Arc::try_unwrap(p.ctx)
        .ok()
        .expect("a fresh context has one owner");
    let mut o = GithubClientOptions::new(url::Url::parse(&p.sim.github_url()).unwrap());
    o.retry = RetryPolicy {
        max_wait: Duration::from_secs(1),
        ..RetryPolicy::fast()
    };
    ctx.github = Some(GithubClient::new(o, GithubAuth::Token(Secret::new("gh-token"))).unwrap());
    let app = PreparedApp {
        ctx: std::sync::Arc::new(ctx),
        ..p
    }
    .start()
    .await;
    let mut ids = Vec::new();
    for (pr, branch, sha) in [(1, "feat/a", "aaaa1111aa"), (2, "feat/b", "bbbb2222bb")] {
        ids.push(app.failed_run_with_pr(branch, sha, pr));
    }
    let post_path = format!("/github/repos/{REPO}/issues/1/comments");
    app.sim.inject_fault(fault(
        "POST",
        &post_path,
        FaultKind::RateLimit {
            status: 429,
            retry_after: Some(WAIT_SECS as u64),
            reset_after: None,
        },
        Some(1),
    ));
    let key = |id: &str| format!("summarize:pr-summary:{id}:RUN_FINISH");

    // PR 1's summary meets the limit and is parked.
    assert_eq!(app.currents_hook("RUN_FINISH", &ids[0]).await.status(), 202);
    let a = first_attempt_pending(&app, &key(&ids[0])).await;
    assert!(
        a.last_error.as_deref().unwrap_or("").contains("429"),
        "{a:#?}"
    );
    let limited = entries(&app, &post_path);
    assert_eq!(limited.len(), 1, "{limited:#?}");
    assert_eq!(limited[0].status, 429);
    let ends = limited[0].at + chrono::Duration::seconds(WAIT_SECS);
    let sent = github_requests(&app);

    // PR 2's summary, while the limit holds: not one request reaches GitHub; it is
    // postponed until the limit ends, without using up one of its attempts (it met no
    // error of its own).
    assert_eq!(app.currents_hook("RUN_FINISH", &ids[1]).await.status(), 202);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let b = loop {
        let b = app
            .bot
            .ctx
            .store
            .action_by_key(&key(ids[1].as_str()))
            .await
            .unwrap();
        if let Some(b) = b.filter(|b| b.last_error.is_some()) {
            break b;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "PR 2's summary was not held back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!((b.state, b.attempts), (ActionState::Pending, 0), "{b:#?}");
    assert!(
        b.updated_at < ends,
        "the attempt came after the limit ended: {b:#?}"
    );
    assert_eq!(
        github_requests(&app),
        sent,
        "GitHub was called while rate limited: {:?}",
        app.sim.request_counts()
    );
    let err = b.last_error.clone().unwrap_or_default();
    assert!(
        err.contains("rate limited") && err.contains("not sent"),
        "{err}"
    );
    assert!(
        b.next_attempt_at >= ends - chrono::Duration::milliseconds(100),
        "next attempt at {}, the limit ends at {ends}: {b:#?}",
        b.next_attempt_at
    );

    // Both are retried once it is over, and each PR gets its one comment.
    for id in &ids {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let a = app.bot.ctx.store.action_by_key(&key(id)).await.unwrap();
            if a.as_ref().is_some_and(|a| a.state == ActionState::Done) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "summary of {id} not done: {a:#?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for pr in [1, 2] {
        assert_eq!(app.sim.comments(Some(REPO), Some(pr)).len(), 1, "PR {pr}");
    }
    // PR 1's summary counted its 429 and its success; PR 2's only its success.
    for (id, attempts) in [(&ids[0], 2), (&ids[1], 1)] {
        let a = app
            .bot
            .ctx
            .store
            .action_by_key(&key(id))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(a.attempts, attempts, "{a:#?}");
    }
    let after: Vec<LogEntry> = app
        .sim
        .mutation_log()
        .into_iter()
        .filter(|e| e.api == "github" && e.seq > limited[0].seq)
        .collect();
    assert_eq!(after.len(), 2, "one POST per PR: {after:#?}");
    assert!(
        after.iter().all(|e| e.at >= ends && e.status == 201),
        "written before the limit ended ({ends}): {after:#?}"
    );
}

#[tokio::test]
async fn slow_answers_past_the_request_timeout_are_abandoned_and_retried() {
    let app = spawn_app_with(AppOptions {
        request_timeout: "1s",
        ..fast(UNTIL_CLEARED)
    })
    .await;
    let x = pair(&app, "feat/x");
    let y = pair(&app, "feat/y");
    // Two requests are held 3 s, past the 1 s timeout; later ones are served at once.
    app.sim.inject_fault(fault(
        "PUT",
        &x.cancel_path(),
        FaultKind::Latency { ms: 3000 },
        Some(2),
    ));
    trigger(&app, &x).await;
    trigger(&app, &y).await;
    let xa = wait_action(&app, &x.old, "x done", 60, |a| a.state.is_terminal()).await;
    assert_eq!(xa.state, ActionState::Done, "{xa:#?}");
    assert!(xa.attempts >= 2, "the first attempt timed out: {xa:#?}");
    wait_action(&app, &y.old, "y done", 30, |a| a.state == ActionState::Done).await;
    // A held request may still reach the simulator after the timeout; then it is answered
    // 422 (or it is the one that succeeds). Either way the run is cancelled once.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let log = entries(&app, &x.cancel_path());
    let ok = log
        .iter()
        .filter(|e| (200..300).contains(&e.status))
        .count();
    assert_eq!(ok, 1, "{log:#?}");
    assert!(
        log.iter()
            .all(|e| (200..300).contains(&e.status) || e.status == 422),
        "{log:#?}"
    );
    cancelled_once(&app, &y, 0);
}

#[tokio::test]
async fn a_hanging_cancel_does_not_hold_back_other_actions() {
    // x's requests hang until the request timeout (3 s, two tries per attempt: at least
    // 6 s per attempt). y is decided while x's first attempt is in flight and must be
    // done before that attempt ends.
    let app = spawn_app_with(AppOptions {
        request_timeout: "3s",
        ..fast(UNTIL_CLEARED)
    })
    .await;
    let x = pair(&app, "feat/x");
    let y = pair(&app, "feat/y");
    let id = app.sim.inject_fault(fault(
        "PUT",
        &x.cancel_path(),
        FaultKind::Latency { ms: 60_000 },
        None,
    ));
    trigger(&app, &x).await;
    wait_action(&app, &x.old, "x claimed", 30, |a| {
        a.state == ActionState::Running
    })
    .await;
    // The first request of x is in the simulator.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while app
        .sim
        .faults()
        .iter()
        .find(|f| f.id == id)
        .is_none_or(|f| f.fired == 0)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "x's cancel never reached the simulator"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    trigger(&app, &y).await;
    wait_action(&app, &y.old, "y done", 30, |a| a.state == ActionState::Done).await;
    let xa = action(&app, &x.old).await.unwrap();
    assert_eq!(
        (xa.state, xa.attempts),
        (ActionState::Running, 0),
        "y was done during x's first attempt: {xa:#?}"
    );
    cancelled_once(&app, &y, 0);
    app.sim.remove_fault(id);
    let xa = wait_action(&app, &x.old, "x done", 60, |a| a.state.is_terminal()).await;
    assert_eq!(xa.state, ActionState::Done, "{xa:#?}");
}

#[tokio::test]
async fn a_malformed_run_read_delays_the_event_instead_of_dropping_it() {
    // The processor reads the run of the webhook; a truncated answer is transient: the
    // event is processed on a later pass.
    let app = spawn_app_with(fast(UNTIL_CLEARED)).await;
    let x = pair(&app, "feat/x");
    app.sim.inject_fault(fault(
        "GET",
        &format!("/v1/runs/{}", x.new),
        FaultKind::MalformedJson,
        Some(1),
    ));
    trigger(&app, &x).await;
    // The event is retried after its backoff (2 s for the first failure).
    wait_action(&app, &x.old, "x done", 30, |a| a.state == ActionState::Done).await;
    cancelled_once(&app, &x, 0);
}

// ---------------------------------------------------------------------------------------
// Faults that do not clear: failed after the last attempt, with a clear reason

/// `x` is faulted with `kind` for good; after `attempts` attempts it is `failed` with an
/// error containing `reason`, visible in audit, `/metrics`, `/api/actions` and the status
/// page; `y` is done meanwhile.
async fn fails(kind: FaultKind, attempts: i64, reason: &str) {
    let app = spawn_app_with(fast(attempts)).await;
    let x = pair(&app, "feat/x");
    let y = pair(&app, "feat/y");
    app.sim
        .inject_fault(fault("PUT", &x.cancel_path(), kind, None));
    trigger(&app, &x).await;
    trigger(&app, &y).await;
    let xa = wait_action(&app, &x.old, "x failed", 60, |a| a.state.is_terminal()).await;
    assert_eq!(xa.state, ActionState::Failed, "{xa:#?}");
    assert_eq!(xa.attempts, attempts, "{xa:#?}");
    let err = xa.last_error.clone().unwrap_or_default();
    assert!(err.contains(reason), "{err}");
    assert!(err.len() < 400, "a short reason, not a whole page: {err}");
    wait_action(&app, &y.old, "y done", 30, |a| a.state == ActionState::Done).await;
    cancelled_once(&app, &y, 0);
    assert_eq!(
        app.sim.run(&x.old).unwrap().completion_state.as_str(),
        "IN_PROGRESS"
    );
    only_cancels_of(&app, &[&x, &y]);
    // Visible everywhere.
    let audit = app.bot.ctx.store.audit(None, None, 100).await.unwrap();
    let e = audit.iter().find(|e| e.run_id == x.old).unwrap();
    assert_eq!(e.outcome.as_str(), "failed");
    assert_eq!(e.error.as_deref(), Some(err.as_str()));
    let metrics = app.get_text("/metrics").await;
    assert!(
        metrics.contains(
            "runwarden_actions_total{rule=\"cancel-superseded\",kind=\"supersede\",action=\"cancel\",outcome=\"failed\"} 1"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "runwarden_decisions_by_outcome{rule=\"cancel-superseded\",outcome=\"failed\"} 1"
        ),
        "{metrics}"
    );
    let api: serde_json::Value = app
        .http
        .get(app.url("/api/actions"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let row = api
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["run_id"] == x.old.as_str())
        .unwrap()
        .clone();
    assert_eq!(row["outcome"], "failed");
    assert_eq!(row["attempts"], attempts);
    let page = app.get_text("/").await;
    assert!(
        page.contains(&x.old),
        "the status page lists the failed action"
    );
}

#[tokio::test]
async fn persistent_5xx_fails_after_the_last_attempt() {
    fails(
        FaultKind::Status {
            status: 500,
            body: None,
            retry_after: None,
        },
        3,
        "HTTP 500",
    )
    .await;
}

#[tokio::test]
async fn persistent_429_fails_after_the_last_attempt() {
    fails(
        FaultKind::RateLimit {
            status: 429,
            retry_after: None,
            reset_after: None,
        },
        3,
        "429",
    )
    .await;
}

#[tokio::test]
async fn persistent_html_502_fails_after_the_last_attempt() {
    fails(FaultKind::Html { status: 502 }, 3, "HTTP 502").await;
}

#[tokio::test]
async fn persistent_dropped_connections_fail_after_the_last_attempt() {
    fails(FaultKind::Drop, 3, "transport").await;
}

#[tokio::test]
async fn persistent_malformed_json_fails_after_the_last_attempt() {
    fails(FaultKind::MalformedJson, 3, "undecodable").await;
}

#[tokio::test]
async fn a_permanent_4xx_fails_at_once_without_retries() {
    // 403 (e.g. a read-only API key) is final: one attempt, no retry.
    fails(
        FaultKind::Status {
            status: 403,
            body: None,
            retry_after: None,
        },
        1,
        "HTTP 403",
    )
    .await;
}

// ---------------------------------------------------------------------------------------
// Deletes

#[tokio::test]
async fn an_ambiguous_delete_is_done_once() {
    // The DELETE is carried out but its connection dropped: the retry finds the run gone
    // (404) and counts it as done.
    let rules = "[[rules]]\nname = \"retention\"\nkind = \"retention\"\nschedule = \"0 3 * * *\"\nolder_than = \"30d\"\n";
    let app = spawn_app_with(AppOptions {
        rules: rules.into(),
        ..fast(UNTIL_CLEARED)
    })
    .await;
    let mut r = run("feat/old", "sha-old", 60 * 24 * 40);
    r.state = Some("passed".into());
    let old = app.sim.add_run(r).unwrap().run_id;
    let path = format!("/v1/runs/{old}");
    app.sim
        .inject_fault(fault("DELETE", &path, FaultKind::Drop, Some(1)).applied());
    let r = app.admin_sweep("retention").await;
    assert_eq!(r.status(), 202);
    let a = app
        .wait_audit("delete done", 30, |a| {
            a.iter().any(|e| e.outcome.as_str() == "done")
        })
        .await;
    assert_eq!(a.len(), 1, "{a:#?}");
    assert!(app.sim.run(&old).is_none());
    let log = entries(&app, &path);
    assert_eq!(log.len(), 2, "{log:#?}");
    assert_eq!((log[0].status, log[0].fault.as_deref()), (0, Some("drop")));
    assert_eq!(log[1].status, 404);
}

#[tokio::test]
async fn a_delete_answered_409_or_422_counts_as_done() {
    // SPEC §6: delete is idempotent, 404/409/422 count as done (as for cancel). One run's
    // DELETE is answered 409 (a deletion under way), the other's is carried out and then
    // answered 422: both actions are done at the first attempt, with the answer noted.
    let rules = "[[rules]]\nname = \"retention\"\nkind = \"retention\"\nschedule = \"0 3 * * *\"\nolder_than = \"30d\"\n";
    let app = spawn_app_with(AppOptions {
        rules: rules.into(),
        ..fast(UNTIL_CLEARED)
    })
    .await;
    let mut ids = Vec::new();
    for (i, status) in [409u16, 422].into_iter().enumerate() {
        let mut r = run(
            &format!("feat/old-{i}"),
            &format!("sha-old-{i}"),
            60 * 24 * 40,
        );
        r.state = Some("passed".into());
        let id = app.sim.add_run(r).unwrap().run_id;
        let f = Fault::new(FaultKind::Status {
            status,
            body: None,
            retry_after: None,
        })
        .on("DELETE", format!("/v1/runs/{id}"));
        app.sim
            .inject_fault(if status == 422 { f.applied() } else { f });
        ids.push((id, status));
    }
    let r = app.admin_sweep("retention").await;
    assert_eq!(r.status(), 202);
    let a = app
        .wait_audit("both deletes finished", 30, |a| {
            a.len() == 2 && a.iter().all(|e| e.outcome.as_str() != "planned")
        })
        .await;
    assert!(
        a.iter()
            .all(|e| e.outcome.as_str() == "done" && e.attempts == 1),
        "{a:#?}"
    );
    for (id, status) in &ids {
        let row = app
            .bot
            .ctx
            .store
            .action_by_key(&format!("delete:{id}"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (row.state, row.attempts),
            (ActionState::Done, 1),
            "{row:#?}"
        );
        let detail = row.detail.clone().unwrap_or_default();
        assert!(
            detail.contains(&format!("already deleted ({status}")),
            "{detail}"
        );
        // One request, not retried.
        let log = entries(&app, &format!("/v1/runs/{id}"));
        assert_eq!(log.len(), 1, "{log:#?}");
        assert_eq!(log[0].status, *status);
    }
}

#[tokio::test]
async fn a_burst_of_deletes_completes_without_starving_the_store() {
    // Regression: the executor keeps claiming while actions are in flight; it must keep
    // driving them while it waits for a pooled connection (they hold the others).
    let rules = "[[rules]]\nname = \"retention\"\nkind = \"retention\"\nschedule = \"0 3 * * *\"\nolder_than = \"30d\"\n";
    let app = spawn_app_with(AppOptions {
        rules: rules.into(),
        ..fast(UNTIL_CLEARED)
    })
    .await;
    let n = 64;
    for i in 0..n {
        let mut r = run(&format!("feat/old-{i}"), &format!("sha{i}"), 60 * 24 * 40);
        r.state = Some("passed".into());
        app.sim.add_run(r).unwrap();
    }
    let r = app.admin_sweep("retention").await;
    assert_eq!(r.status(), 202);
    // Each store operation takes milliseconds; a starved pool takes 5 s per stall.
    app.wait_audit("every delete done", 30, |a| {
        a.iter().filter(|e| e.outcome.as_str() == "done").count() == n
    })
    .await;
    let log = app.sim.mutation_log();
    assert_eq!(log.len(), n, "one DELETE per run");
    assert!(log.iter().all(|e| e.method == "DELETE" && e.status == 200));
}

/// Webhooks are hints: a RUN_FINISH that arrives while the API still shows the run in
/// progress (a lagging read model, or an early or out-of-order delivery) must not spend
/// the run's summary on a state that is not final: the bot reads the run again later,
/// and once the run has failed the PR says so. A late RUN_START after that is read as
/// the run's end, so it leads to no pending status over the final one.
#[tokio::test(flavor = "multi_thread")]
async fn an_early_run_finish_waits_for_the_api_and_a_late_run_start_is_read_as_the_end() {
    let rules = "[[rules]]\nname = \"pr-summary\"\nkind = \"summary\"\ncommit_status = true\nevents = [\"RUN_START\", \"RUN_FINISH\"]\n";
    let app = spawn_app(rules).await;
    let sha = "e4a1e4a1e4";
    let mut r = run("feat/early", sha, 5);
    r.state = Some("running".into());
    let id = app.sim.add_run(r).unwrap().run_id;
    app.sim
        .add_pr(runwarden::simulator::NewPr {
            repo: REPO.into(),
            number: Some(12),
            head_ref: Some("feat/early".into()),
            head_sha: Some(sha.into()),
            ..Default::default()
        })
        .unwrap();
    // Currents events processed with `result`, from /metrics.
    let processed = |app: &TestApp, result: &str| -> u64 {
        app.bot
            .ctx
            .metrics
            .render(&[])
            .lines()
            .filter(|l| {
                l.starts_with("runwarden_events_processed_total")
                    && l.contains("source=\"currents\"")
                    && l.contains(&format!("result=\"{result}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    assert_eq!(app.currents_hook("RUN_FINISH", &id).await.status(), 202);
    app.wait_for("the early RUN_FINISH to be put back", 10, |app| {
        processed(app, "retry") > 0
    })
    .await;
    let finals = |app: &TestApp| {
        app.sim
            .statuses(Some(REPO), Some(sha))
            .into_iter()
            .filter(|s| s.state != "pending")
            .map(|s| s.state)
            .collect::<Vec<_>>()
    };
    assert!(finals(&app).is_empty(), "no final status for a running run");
    assert!(app.sim.comments(Some(REPO), Some(12)).is_empty());
    // The run fails; the delivery's retry reads it and summarises the truth.
    app.sim
        .advance(
            &id,
            runwarden::simulator::Advance {
                finish: Some(runwarden::simulator::Outcome::Failed),
                ..Default::default()
            },
        )
        .unwrap();
    app.wait_for("the failure status", 20, |app| finals(app) == ["failure"])
        .await;
    let comments = app.sim.comments(Some(REPO), Some(12));
    assert_eq!(comments.len(), 1, "{comments:#?}");
    assert!(
        comments[0].body.contains("❌ Failed") && !comments[0].body.contains("✅ Passed"),
        "{}",
        comments[0].body
    );
    // A RUN_START delivered late (after the end) is read as the end, which was acted on:
    // its processing (decisions and their actions commit with it) records no action of
    // its own.
    let ok_before = processed(&app, "ok");
    assert_eq!(app.currents_hook("RUN_START", &id).await.status(), 202);
    app.wait_for("the late RUN_START to be processed", 10, |app| {
        processed(app, "ok") > ok_before
    })
    .await;
    let start_key = format!("summarize:pr-summary:{id}:RUN_START");
    let start = app.bot.ctx.store.action_by_key(&start_key).await.unwrap();
    assert!(start.is_none(), "{start:#?}");
    assert_eq!(finals(&app), ["failure"]);
}
