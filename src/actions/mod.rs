//! The action executor: claims due actions from the store's outbox and carries them out
//! with retries (SPEC §6).
//!
//! - cancel: `PUT /runs/{id}/cancel` (404/409/422 count as done), then the run is read
//!   again; one still in progress is retried and, if it stays so, reported as failed.
//! - delete: `DELETE /runs/{id}` (404 counts as done).
//! - summarize: the sticky PR comment and/or commit status of a summary rule.
//!
//! Retryable failures (network, 429, 5xx) go back to the queue with exponential backoff
//! and jitter; other failures are final and recorded. After [`MAX_ATTEMPTS`] the action is
//! `failed`, visible in `audit`, `/metrics` and the status page.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;

use crate::config::RuleKind;
use crate::currents::client::{CancelOutcome, DeleteOutcome};
use crate::server::AppContext;
use crate::store::{ActionOutcome, ActionRow};

/// Attempts before an action is failed for good.
pub const MAX_ATTEMPTS: i64 = 6;
/// Lease on a claimed action; a crashed worker's actions are reclaimed after it.
pub const LEASE: Duration = Duration::from_secs(60);

/// The result of one attempt.
#[derive(Debug)]
pub enum Attempt {
    Done(String),
    Skipped(String),
    Retry(String),
    Fail(String),
}

/// Backoff before attempt `n + 1`: 1s, 2s, 4s ... capped at 5 min, with full jitter
/// in the upper half.
pub fn backoff(attempts: i64) -> Duration {
    let base = 1u64 << attempts.clamp(0, 8);
    let secs = base.min(300) as f64;
    let jitter = rand::thread_rng().gen_range(0.5..=1.0);
    Duration::from_secs_f64(secs * jitter)
}

/// Claims and carries out every due action once; returns how many were attempted.
pub async fn run_due(ctx: &AppContext) -> usize {
    let mut total = 0;
    loop {
        let now = Utc::now();
        let batch = match ctx.store.claim_due_actions(now, 16, LEASE, &ctx.worker_id).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "cannot claim actions");
                return total;
            }
        };
        if batch.is_empty() {
            return total;
        }
        total += batch.len();
        let futs = batch.into_iter().map(|a| execute(ctx, a));
        futures::future::join_all(futs).await;
    }
}

/// Carries one claimed action out and records the outcome.
pub async fn execute(ctx: &AppContext, a: ActionRow) {
    let attempt = match a.action.as_str() {
        "cancel" => cancel(ctx, &a).await,
        "delete" => delete(ctx, &a).await,
        "summarize" => summarize(ctx, &a).await,
        other => Attempt::Fail(format!("unknown action {other:?}")),
    };
    let now = Utc::now();
    let kind = a.kind.clone();
    let (outcome, res) = match &attempt {
        Attempt::Done(detail) => ("done", ctx.store.complete_action(a.id, ActionOutcome::Done, detail).await),
        Attempt::Skipped(detail) => ("skipped", ctx.store.complete_action(a.id, ActionOutcome::Skipped, detail).await),
        Attempt::Retry(err) if a.attempts + 1 < MAX_ATTEMPTS => {
            let next = now + chrono::Duration::from_std(backoff(a.attempts)).unwrap_or_default();
            tracing::warn!(action = %a.action, run = %a.run_id, attempt = a.attempts + 1, "action failed, will retry: {err}");
            ("retry", ctx.store.fail_attempt(a.id, err, next).await)
        }
        Attempt::Retry(err) | Attempt::Fail(err) => {
            tracing::error!(action = %a.action, run = %a.run_id, attempts = a.attempts + 1, "action failed for good: {err}");
            ("failed", ctx.store.fail_action(a.id, err).await)
        }
    };
    if let Err(e) = res {
        tracing::error!(action = %a.action, run = %a.run_id, error = %e, "cannot record the action outcome; it will be retried after its lease");
    }
    let detail = match &attempt {
        Attempt::Done(d) | Attempt::Skipped(d) | Attempt::Retry(d) | Attempt::Fail(d) => d.clone(),
    };
    let _ = ctx.events.send(crate::server::BotEvent::ActionFinished {
        rule: a.rule.clone(),
        action: a.action.clone(),
        run_id: a.run_id.clone(),
        outcome: outcome.to_string(),
        detail,
    });
    ctx.metrics.inc(
        "runwarden_actions_total",
        &[("kind", &kind), ("action", &a.action), ("outcome", outcome)],
    );
    if matches!(outcome, "done" | "skipped") {
        if let Some(received) = received_at(&a) {
            let secs = (now - received).num_microseconds().unwrap_or(0) as f64 / 1e6;
            ctx.metrics.observe_latency(secs.max(0.0));
        }
        if let Attempt::Done(d) = &attempt {
            tracing::info!(action = %a.action, run = %a.run_id, "action done: {d}");
        }
    }
}

fn received_at(a: &ActionRow) -> Option<DateTime<Utc>> {
    let v: serde_json::Value = serde_json::from_str(a.payload.as_deref()?).ok()?;
    DateTime::from_timestamp_millis(v.get("received_at")?.as_i64()?)
}

fn classify(e: crate::currents::client::CurrentsError, what: &str) -> Attempt {
    if e.is_retryable() {
        Attempt::Retry(format!("{what}: {e}"))
    } else {
        Attempt::Fail(format!("{what}: {e}"))
    }
}

async fn cancel(ctx: &AppContext, a: &ActionRow) -> Attempt {
    let note = match ctx.currents.cancel_run(&a.run_id).await {
        Ok(CancelOutcome::Cancelled(_)) => "cancelled".to_string(),
        Ok(CancelOutcome::AlreadyDone { status, message }) => format!("already done ({status}: {message})"),
        Err(e) => return classify(e, "cancel"),
    };
    // Verify: read the run again.
    match ctx.currents.get_run(&a.run_id).await {
        Ok(run) if run.is_in_progress() => Attempt::Retry(format!("{note}, but the run is still in progress")),
        Ok(run) => {
            let _ = crate::intake::processor::remember_run(ctx, &run, Utc::now()).await;
            Attempt::Done(format!("{note}; run is {}", run.completion_state))
        }
        Err(e) if e.status() == Some(404) => Attempt::Done(format!("{note}; run no longer exists")),
        Err(e) => classify(e, "verify cancel"),
    }
}

async fn delete(ctx: &AppContext, a: &ActionRow) -> Attempt {
    match ctx.currents.delete_run(&a.run_id).await {
        Ok(DeleteOutcome::Deleted(_)) => {
            let _ = ctx.store.mark_run_gone(&a.run_id).await;
            Attempt::Done("deleted".into())
        }
        Ok(DeleteOutcome::AlreadyGone) => {
            let _ = ctx.store.mark_run_gone(&a.run_id).await;
            Attempt::Done("already deleted".into())
        }
        Err(e) => classify(e, "delete"),
    }
}

async fn summarize(ctx: &AppContext, a: &ActionRow) -> Attempt {
    let rule_name = a.rule.as_str();
    let Some(rule) = ctx.config.rules.iter().find(|r| r.name == rule_name) else {
        return Attempt::Skipped(format!("rule {rule_name:?} no longer exists"));
    };
    let RuleKind::Summary(opts) = &rule.kind else {
        return Attempt::Fail(format!("rule {rule_name:?} is not a summary rule"));
    };
    let Some(gh) = &ctx.github else {
        return Attempt::Skipped("no GitHub credentials configured".into());
    };
    let event = a
        .payload
        .as_deref()
        .and_then(|p| serde_json::from_str::<serde_json::Value>(p).ok())
        .and_then(|v| v.get("event").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or_else(|| "RUN_FINISH".into());
    let run = match ctx.currents.get_run(&a.run_id).await {
        Ok(r) => r,
        Err(e) if e.status() == Some(404) => return Attempt::Skipped("run no longer exists".into()),
        Err(e) => return classify(e, "read run"),
    };
    let _ = (gh, opts, run, event); // PENDING-GITHUB
    Attempt::Skipped("summaries are not available yet".into())
}
