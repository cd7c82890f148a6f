//! The late outcome of a worker whose lease on an action ran out: once another worker
//! has claimed the action, the first worker's outcome (done, a retry, a final failure)
//! changes nothing and is not counted, and its executor, finding at a renewal that the
//! lease is gone, leaves everything about the action to the new holder.
//!
//! Worker A is a bot's context (not started: the test drives its executor); worker B is
//! another process as far as the store can tell: a claim under another worker id.

mod common;

use std::time::Duration;

use common::*;
use runwarden::simulator::{Fault, FaultKind};
use runwarden::store::{ActionRow, ActionState, NewDecision};

const SUPERSEDE: &str = "[[rules]]\nname = \"cancel-superseded\"\nkind = \"supersede\"\n";

/// The rules of [`worker_a`] and a summary rule (a run seen ended then gets a run-end
/// event for the summaries).
const WITH_SUMMARY: &str = "[[rules]]\nname = \"cancel-superseded\"\nkind = \"supersede\"\n\n[[rules]]\nname = \"pr-summary\"\nkind = \"summary\"\n";

/// A's context, with the Currents client trying each call once (a 503 comes back at
/// once) and an action lease of `lease`.
async fn worker_a(lease: Duration) -> PreparedApp {
    worker_a_with(lease, SUPERSEDE).await
}

/// [`worker_a`] with `rules`.
async fn worker_a_with(lease: Duration, rules: &str) -> PreparedApp {
    prepare_app(AppOptions {
        rules: rules.into(),
        client_retries: Some((1, Duration::from_millis(10))),
        executor: Some(runwarden::actions::ExecutorOptions {
            lease,
            ..runwarden::actions::ExecutorOptions::default()
        }),
        ..AppOptions::default()
    })
    .await
}

/// Queues a cancel of a new in-progress run; its run id.
async fn queue_cancel(p: &PreparedApp) -> String {
    let id = p.sim.add_run(run("feat/late", "1a7e", 5)).unwrap().run_id;
    p.ctx
        .store
        .record_decisions(&[NewDecision {
            at: chrono::Utc::now() - chrono::Duration::seconds(1),
            rule: "cancel-superseded".into(),
            kind: "supersede".into(),
            action: "cancel".into(),
            run_id: id.clone(),
            project_id: PROJECT.into(),
            branch: Some("feat/late".into()),
            sha: Some("1a7e".into()),
            reason: "test".into(),
            dry_run: false,
            not_before: None,
            action_key: format!("cancel:{id}"),
            payload: None,
            skip: None,
        }])
        .await
        .unwrap();
    id
}

async fn action(p: &PreparedApp, run: &str) -> ActionRow {
    p.ctx
        .store
        .action_by_key(&format!("cancel:{run}"))
        .await
        .unwrap()
        .unwrap()
}

/// A claimed the action; its lease ran out and B claimed it: B's claim, as B holds it.
async fn taken_over_by_b(p: &PreparedApp, lease: Duration) -> (ActionRow, ActionRow) {
    let store = &p.ctx.store;
    let now = chrono::Utc::now();
    let mut a = store
        .claim_due_actions(now, 1, lease, &p.ctx.worker_id)
        .await
        .unwrap();
    assert_eq!(a.len(), 1);
    let later = a[0].lease_until.unwrap() + chrono::Duration::seconds(1);
    let mut b = store
        .claim_due_actions(later, 1, Duration::from_secs(600), "worker-b")
        .await
        .unwrap();
    assert_eq!(b.len(), 1, "B takes the action over once A's lease ran out");
    (a.remove(0), b.remove(0))
}

/// A's attempt outcome (`outcome` as `runwarden_actions_total` names it) was not counted.
fn counted(p: &PreparedApp, outcome: &str) -> u64 {
    p.ctx.metrics.get(
        "runwarden_actions_total",
        &[
            ("rule", "cancel-superseded"),
            ("kind", "supersede"),
            ("action", "cancel"),
            ("outcome", outcome),
        ],
    )
}

/// The action as B left it: running, B's, no attempt recorded, nothing written over it.
fn assert_still_bs(row: &ActionRow, b: &ActionRow) {
    assert_eq!(
        (
            row.state,
            row.worker_id.as_deref(),
            row.attempts,
            row.claims,
            row.lease_until,
            row.last_error.as_deref(),
            row.detail.as_deref(),
        ),
        (
            ActionState::Running,
            Some("worker-b"),
            0,
            2,
            b.lease_until,
            None,
            None
        ),
        "{row:#?}"
    );
}

/// A's attempt meets a 503 after B took the action over: A's retry does not put the
/// action back to `pending` (where a third worker could claim it while B is on it).
#[tokio::test]
async fn a_late_retry_does_not_put_back_an_action_another_worker_runs() {
    let lease = Duration::from_secs(60);
    let p = worker_a(lease).await;
    let run = queue_cancel(&p).await;
    p.sim.inject_fault(
        Fault::status(503)
            .on("PUT", format!("/v1/runs/{run}/cancel"))
            .times(Some(1)),
    );
    let (a, b) = taken_over_by_b(&p, lease).await;
    runwarden::actions::execute(&p.ctx, a).await;
    assert_still_bs(&action(&p, &run).await, &b);
    assert_eq!(counted(&p, "retry"), 0);
    // A third worker finds nothing to claim while B holds it.
    assert!(
        p.ctx
            .store
            .claim_due_actions(chrono::Utc::now(), 10, lease, "worker-c")
            .await
            .unwrap()
            .is_empty()
    );
}

/// A's attempt fails for good (403) after B took the action over: the action B is
/// carrying out is not marked `failed`.
#[tokio::test]
async fn a_late_final_failure_does_not_fail_an_action_another_worker_runs() {
    let lease = Duration::from_secs(60);
    let p = worker_a(lease).await;
    let run = queue_cancel(&p).await;
    p.sim.inject_fault(
        Fault::status(403)
            .on("PUT", format!("/v1/runs/{run}/cancel"))
            .times(Some(1)),
    );
    let (a, b) = taken_over_by_b(&p, lease).await;
    runwarden::actions::execute(&p.ctx, a).await;
    assert_still_bs(&action(&p, &run).await, &b);
    assert_eq!(counted(&p, "failed"), 0);
}

/// A's cancel takes effect after B took the action over: A does not end the action B
/// holds either (B records its own outcome, "already cancelled", and counts it).
#[tokio::test]
async fn a_late_success_does_not_end_an_action_another_worker_runs() {
    let lease = Duration::from_secs(60);
    let p = worker_a(lease).await;
    let run = queue_cancel(&p).await;
    let (a, b) = taken_over_by_b(&p, lease).await;
    runwarden::actions::execute(&p.ctx, a).await;
    assert_eq!(
        p.sim.run(&run).unwrap().completion_state.as_str(),
        "CANCELED"
    );
    assert_still_bs(&action(&p, &run).await, &b);
    assert_eq!(counted(&p, "done"), 0);
    // B's own outcome is written.
    assert!(
        p.ctx
            .store
            .complete_action_as(
                b.id,
                "worker-b",
                runwarden::store::ActionOutcome::Done,
                "already cancelled",
                None,
            )
            .await
            .unwrap()
    );
}

/// A's executor is carrying the action out (its cancel held at the API) when B takes it
/// over: A's next lease renewal finds the lease gone, and when A's attempt ends it
/// leaves everything about the action to B: no outcome, no count, and not the run-end
/// event for the summaries either (B stores it with its own outcome).
#[tokio::test]
async fn an_executor_that_finds_its_lease_lost_leaves_the_action_to_its_new_holder() {
    // Renewed every 200 ms.
    let lease = Duration::from_millis(600);
    let p = worker_a_with(lease, WITH_SUMMARY).await;
    let run = queue_cancel(&p).await;
    let held = p.sim.inject_fault(
        Fault::new(FaultKind::Latency { ms: 2000 }).on("PUT", format!("/v1/runs/{run}/cancel")),
    );
    let ctx = p.ctx.clone();
    let executor = tokio::spawn(async move { runwarden::actions::run_due(&ctx).await });
    // A's cancel is in flight.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while p.sim.faults().iter().any(|f| f.id == held) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cancel never left"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let a = action(&p, &run).await;
    assert_eq!(
        (a.state, a.worker_id.as_deref()),
        (ActionState::Running, Some(p.ctx.worker_id.as_str()))
    );
    // B claims it, as if A's lease had run out (A paused, say).
    let far = chrono::Utc::now() + chrono::Duration::hours(1);
    let b = p
        .ctx
        .store
        .claim_due_actions(far, 1, Duration::from_secs(3600 * 2), "worker-b")
        .await
        .unwrap();
    assert_eq!(b.len(), 1);
    let attempted = tokio::time::timeout(Duration::from_secs(20), executor)
        .await
        .expect("A's executor pass ended")
        .unwrap();
    assert_eq!(attempted, 1);
    assert_eq!(
        p.sim.run(&run).unwrap().completion_state.as_str(),
        "CANCELED"
    );
    assert_still_bs(&action(&p, &run).await, &b[0]);
    assert_eq!(counted(&p, "done"), 0);
    let end = p
        .ctx
        .store
        .find_delivery("poll", &format!("run-end:{run}:RUN_CANCELED"))
        .await
        .unwrap();
    assert_eq!(end, None, "left to B");
}
