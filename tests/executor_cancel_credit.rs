//! Whose cancel it was, in a run's PR summary (SPEC §4 summary: "when runwarden
//! cancelled the run, which rule did it and why"): the real bot against the simulator.
//! A cancel answered "already cancelled" counts as done (SPEC §6) but did not cancel the
//! run, so the summary names whoever the API says did; a summary written while
//! runwarden's own cancel is still in flight waits for its outcome.

mod common;

use common::*;
use runwarden::simulator::{Fault, FaultKind};

/// A timeout rule (every run older than 10 minutes is cancelled) and a summary rule.
const RULES: &str = "[[rules]]\nname = \"stuck\"\nkind = \"timeout\"\nmax_duration = \"10m\"\n\n\
                     [[rules]]\nname = \"pr-summary\"\nkind = \"summary\"\n";

/// A 30-minute-old run in progress on `branch` at `sha`, with an open PR `pr`.
fn stuck_run(app: &TestApp, branch: &str, sha: &str, pr: u64) -> String {
    let id = app.sim.add_run(run(branch, sha, 30)).unwrap().run_id;
    app.open_pr(branch, sha, pr);
    id
}

/// Waits until the fault `id` has fired (the request it holds back is in flight).
async fn wait_fired(app: &TestApp, id: u64, what: &str) {
    app.wait_for(what, 15, |a| !a.sim.faults().iter().any(|f| f.id == id))
        .await;
}

/// The cancel action of `run`, as stored.
async fn cancel_of(app: &TestApp, run: &str) -> runwarden::store::ActionRow {
    app.bot
        .ctx
        .store
        .action_by_key(&format!("cancel:{run}"))
        .await
        .unwrap()
        .expect("a cancel action")
}

/// Waits until the summary of `run` is done, and gives the PR's one comment.
async fn summary_of(app: &TestApp, run: &str, pr: u64) -> String {
    app.wait_audit("the run's summary", 20, |a| {
        a.iter()
            .any(|e| e.action == "summarize" && e.run_id == run && e.outcome.as_str() == "done")
    })
    .await;
    let comments = app.sim.comments(Some(REPO), Some(pr));
    assert_eq!(comments.len(), 1, "{comments:#?}");
    comments[0].body.clone()
}

/// A user cancels the run while runwarden's cancel of it is on its way: the API answers
/// runwarden's 422 "Run already cancelled" (done), and the summary, decided on the
/// `RUN_CANCELED` webhook meanwhile, names the user, not the rule.
#[tokio::test]
async fn a_run_someone_else_cancelled_first_is_not_credited_to_the_rule() {
    let app = spawn_app(RULES).await;
    let id = stuck_run(&app, "feat/slow", "5eed001", 41);
    // Runwarden's cancel is held 1.5 s before the simulator acts on it.
    let held = app.sim.inject_fault(
        Fault::new(FaultKind::Latency { ms: 1500 }).on("PUT", format!("/v1/runs/{id}/cancel")),
    );
    assert_eq!(app.currents_hook("RUN_START", &id).await.status(), 202);
    wait_fired(&app, held, "runwarden's cancel in flight").await;
    app.sim.cancel_run(&id, "alice").unwrap();
    assert_eq!(app.currents_hook("RUN_CANCELED", &id).await.status(), 202);

    let body = summary_of(&app, &id, 41).await;
    assert!(body.contains("Cancelled by `api:alice`"), "{body}");
    assert!(!body.contains("stuck"), "credited to the rule: {body}");
    let cancel = cancel_of(&app, &id).await;
    assert_eq!(cancel.state, runwarden::store::ActionState::Done);
    assert!(
        cancel
            .detail
            .as_deref()
            .is_some_and(|d| d.starts_with("already done (422")),
        "{cancel:#?}"
    );
}

/// The `RUN_CANCELED` of runwarden's own cancel arrives while the cancel is being
/// verified (its outcome not written yet): the summary waits for it, and names the rule.
#[tokio::test]
async fn a_summary_written_while_runwardens_cancel_is_verified_names_the_rule() {
    let app = spawn_app(RULES).await;
    let id = stuck_run(&app, "feat/long", "5eed002", 42);
    // The first read of the run is the processor's (the `RUN_START`); the second, the
    // cancel's verification, is held 1.5 s.
    let held = app.sim.inject_fault(
        Fault::new(FaultKind::Latency { ms: 1500 })
            .on("GET", format!("/v1/runs/{id}"))
            .after(1),
    );
    assert_eq!(app.currents_hook("RUN_START", &id).await.status(), 202);
    wait_fired(&app, held, "the cancel's verification in flight").await;
    assert_eq!(
        app.sim.run(&id).unwrap().completion_state.as_str(),
        "CANCELED"
    );
    assert_eq!(app.currents_hook("RUN_CANCELED", &id).await.status(), 202);

    let body = summary_of(&app, &id, 42).await;
    assert!(
        body.contains("Cancelled by runwarden, rule `stuck`"),
        "{body}"
    );
    let cancels = app
        .mutations()
        .iter()
        .filter(|m| m.ends_with(&format!("{id}/cancel")))
        .count();
    assert_eq!(cancels, 1);
}

/// Runwarden's cancel takes effect, but its verification read fails (a 503) and the next
/// attempt's cancel is answered 422 "already cancelled": the run was still cancelled by
/// runwarden, and its summary names the rule (the first attempt's fact is kept in the
/// notes that follow it).
#[tokio::test]
async fn a_cancel_whose_verification_failed_once_is_still_credited_to_the_rule() {
    // A client that tries each request once, and an executor that retries within 0.5 s.
    let app = spawn_app_with(AppOptions {
        rules: RULES.into(),
        executor: Some(runwarden::actions::ExecutorOptions {
            max_attempts: 5,
            backoff_base: std::time::Duration::from_millis(100),
            backoff_max: std::time::Duration::from_millis(500),
            lease: std::time::Duration::from_secs(60),
        }),
        client_retries: Some((1, std::time::Duration::from_millis(10))),
        ..AppOptions::default()
    })
    .await;
    let id = stuck_run(&app, "feat/flaky", "5eed003", 43);
    // The first read of the run is the processor's (the `RUN_START`); the second, the
    // cancel's verification, fails once.
    app.sim.inject_fault(
        Fault::status(503)
            .on("GET", format!("/v1/runs/{id}"))
            .after(1),
    );
    assert_eq!(app.currents_hook("RUN_START", &id).await.status(), 202);
    app.wait_for("runwarden's cancel", 15, |a| {
        a.sim.run(&id).unwrap().completion_state.as_str() == "CANCELED"
    })
    .await;
    assert_eq!(app.currents_hook("RUN_CANCELED", &id).await.status(), 202);

    let body = summary_of(&app, &id, 43).await;
    assert!(
        body.contains("Cancelled by runwarden, rule `stuck`"),
        "{body}"
    );
    // The cancel itself ends done at its next attempt (the API answers 422).
    app.wait_audit("the cancel done", 10, |a| {
        a.iter()
            .any(|e| e.action == "cancel" && e.run_id == id && e.outcome.as_str() == "done")
    })
    .await;
    let cancel = cancel_of(&app, &id).await;
    assert!(cancel.attempts >= 2, "{cancel:#?}");
    assert!(
        cancel
            .detail
            .as_deref()
            .is_some_and(|d| d.starts_with("cancelled by an earlier attempt; already done (422")),
        "{cancel:#?}"
    );
}

/// Runwarden's cancel takes effect but its answer is lost (the connection drops after
/// the simulator acted); the client asks again and Currents answers 422 "already
/// cancelled". The run reads as cancelled, so it was runwarden's request that cancelled
/// it: the action's note says so and the summary names the rule.
#[tokio::test]
async fn a_cancel_whose_answer_was_lost_is_credited_to_the_rule() {
    let app = spawn_app(RULES).await;
    let id = stuck_run(&app, "feat/lost", "5eed009", 49);
    app.sim.inject_fault(
        Fault::new(FaultKind::Drop)
            .on("PUT", format!("/v1/runs/{id}/cancel"))
            .applied(),
    );
    assert_eq!(app.currents_hook("RUN_START", &id).await.status(), 202);
    app.wait_for("runwarden's cancel", 15, |a| {
        a.sim.run(&id).unwrap().completion_state.as_str() == "CANCELED"
    })
    .await;
    assert_eq!(app.currents_hook("RUN_CANCELED", &id).await.status(), 202);
    let body = summary_of(&app, &id, 49).await;
    assert!(
        body.contains("Cancelled by runwarden, rule `stuck`"),
        "{body}"
    );
    let cancel = cancel_of(&app, &id).await;
    assert!(
        cancel.detail.as_deref().is_some_and(|d| d.starts_with(
            "cancelled (the answer to runwarden's request was lost; asked again, Currents said (422"
        )),
        "{cancel:#?}"
    );
    let puts = app
        .mutations()
        .iter()
        .filter(|m| m.ends_with(&format!("{id}/cancel")))
        .count();
    assert_eq!(puts, 2, "the lost request and the one asked again");
}
