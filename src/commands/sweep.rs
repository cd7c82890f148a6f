//! `runwarden sweep [--rule NAME] [--dry-run]`: evaluate and execute once, then exit
//! (for a cron job or a CI step). It uses the same store, processor and executor as
//! `serve`: every decision is recorded before it is acted on, and `audit` shows it.
//!
//! Exit 0 when everything decided was done, 1 when an action failed for good, a
//! retention circuit breaker tripped or the evaluation itself failed (no project could be
//! listed, say: the error is printed), 2 for bad usage.
//!
//! A rule deciding again what it decided before (the same run to delete as in last
//! night's sweep) leaves one decision in the store, the first: the report lists it all
//! the same, with its action's state now. When that action had failed for good, it is
//! tried again (attempts reset, as an operator's retry would), so that a failure does
//! not outlive the cause that made it: by the processor for a retention rule (in `serve`
//! too), by the sweep for the others.
//!
//! `--dry-run` records decisions as `dry_run` and carries nothing out: not its own
//! decisions, nor actions already queued (by `serve`, or by a sweep that crashed), which
//! stay queued, nor retries of failed ones. With `dry_run = true` in the config (the
//! emergency stop), the executor ends a queued cancel, delete or summary of a rule in
//! dry-run mode (a rule's own `dry_run = false` overrides the global one) as `skipped`
//! instead of carrying it out (see `actions::execute`).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use chrono::Utc;

use super::outln;
use crate::config::{RuleKind, Secrets};
use crate::store::NewDelivery;

/// How long a sweep waits for its actions to finish (retries included).
pub const SWEEP_DEADLINE: Duration = Duration::from_secs(600);

/// Runs the command.
pub fn run(path: &std::path::Path, rule: Option<&str>, dry_run: bool) -> ExitCode {
    let mut loaded = match super::load_config(path) {
        Ok(l) => l,
        Err(code) => return code,
    };
    if let Err(code) = super::check_rule_exists(path, &loaded.config, rule) {
        return code;
    }
    if dry_run {
        loaded.config.dry_run = true;
        for r in &mut loaded.config.rules {
            r.dry_run = Some(true);
        }
    }
    let secrets = Secrets::from_env();
    let rt = super::runtime();
    rt.block_on(async move {
        let ctx = match super::serve::build_context(loaded.config, secrets).await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("runwarden sweep: {e:#}");
                return ExitCode::from(super::EXIT_USAGE);
            }
        };
        let started = Utc::now();
        // Decisions this sweep repeats: (decision, action) ids, from the bot's events
        // (sent before `process_pending` returns; drained after each round).
        let mut events = ctx.events.subscribe();
        let mut repeated: Vec<(i64, Option<i64>)> = Vec::new();
        let mut retried = std::collections::HashSet::new();
        let selected: Vec<_> = ctx
            .config
            .rules
            .iter()
            .filter(|r| rule.is_none_or(|n| r.name == n))
            .collect();
        let mut poll_needed = false;
        // The sweep's own events, (source, delivery id): each must be processed for the
        // sweep to have done its job.
        let mut own: Vec<(String, String)> = Vec::new();
        for r in &selected {
            match r.kind {
                RuleKind::Retention(_) => {
                    let d = NewDelivery {
                        source: "schedule".into(),
                        delivery_id: format!("sweep:{}:{}", r.name, started.timestamp_millis()),
                        event: "sweep".into(),
                        payload: serde_json::json!({ "rule": r.name, "manual": true }).to_string(),
                        received_at: started,
                    };
                    own.push((d.source.clone(), d.delivery_id.clone()));
                    if let Err(e) = ctx.store.insert_delivery(d).await {
                        eprintln!("runwarden sweep: {e}");
                        return ExitCode::from(super::EXIT_FAILED);
                    }
                }
                RuleKind::Supersede(_) | RuleKind::Timeout(_) => poll_needed = true,
                _ => {}
            }
        }
        if poll_needed {
            let d = NewDelivery {
                source: if rule.is_some() { "schedule".into() } else { "poll".into() },
                delivery_id: format!("sweep-poll:{}", started.timestamp_millis()),
                event: if rule.is_some() { "sweep".into() } else { "poll".into() },
                payload: serde_json::json!({ "rule": rule.unwrap_or_default() }).to_string(),
                received_at: started,
            };
            own.push((d.source.clone(), d.delivery_id.clone()));
            if let Err(e) = ctx.store.insert_delivery(d).await {
                eprintln!("runwarden sweep: {e}");
                return ExitCode::from(super::EXIT_FAILED);
            }
        }
        // Process events (including older ones left by a crashed run), then act.
        let deadline = Instant::now() + SWEEP_DEADLINE;
        loop {
            let _ = crate::intake::processor::process_pending(&ctx).await;
            drain_repeated(&mut events, &mut repeated);
            let again: Vec<i64> = repeated
                .iter()
                .filter_map(|(_, a)| *a)
                .filter(|a| !retried.contains(a))
                .collect();
            // A dry run changes no action's state either.
            for id in again.into_iter().filter(|_| !dry_run) {
                retried.insert(id);
                if let Ok(true) = ctx
                    .store
                    .retry_failed_before(id, Some(started), Utc::now())
                    .await
                {
                    tracing::info!(action = id, "sweep: retrying an action that had failed for good");
                }
            }
            // A dry run carries nothing out, not even actions queued before (serve's, or
            // a crashed sweep's): they stay queued for whoever acts next.
            let (n, queued) = if dry_run {
                (0, 0)
            } else {
                (
                    crate::actions::run_due(&ctx).await,
                    ctx.store.queue_depth().await.unwrap_or(0),
                )
            };
            let pending = ctx.store.count_unprocessed().await.unwrap_or(0);
            if n == 0 && pending == 0 && queued == 0 {
                break;
            }
            if Instant::now() > deadline {
                eprintln!("runwarden sweep: gave up waiting after {SWEEP_DEADLINE:?}; {queued} action(s) still queued (they run on the next sweep or serve)");
                break;
            }
            if n == 0 {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        let mut entries = ctx
            .store
            .audit(Some(started), rule, 100_000)
            .await
            .unwrap_or_default();
        drain_repeated(&mut events, &mut repeated);
        let mut earlier: Vec<i64> = repeated.iter().map(|(d, _)| *d).collect();
        earlier.sort_unstable();
        earlier.dedup();
        if !earlier.is_empty() {
            let mut more = ctx
                .store
                .audit_of_decisions(&earlier)
                .await
                .unwrap_or_default();
            // One recorded earlier in this very sweep is listed already.
            more.retain(|e| e.at < started && rule.is_none_or(|r| e.rule == r));
            entries.extend(more);
            entries.sort_by_key(|e| std::cmp::Reverse(e.at));
        }
        let count = |o: &str| entries.iter().filter(|e| e.outcome.as_str() == o).count();
        let breaker = entries.iter().any(|e| e.reason.starts_with("circuit breaker"));
        if !entries.is_empty() {
            outln!(
                "{:<8} {:<22} {:<8} {:<34} reason",
                "outcome", "rule", "action", "run"
            );
        }
        for e in entries.iter().rev() {
            outln!(
                "{:<8} {:<22} {:<8} {:<34} {}{}",
                e.outcome.as_str(),
                e.rule,
                e.action,
                e.run_id,
                e.reason,
                e.error.as_deref().map(|x| format!(" — {x}")).unwrap_or_default()
            );
        }
        outln!(
            "sweep: {} decision(s): {} done, {} dry run, {} skipped, {} failed, {} pending",
            entries.len(),
            count("done"),
            count("dry_run"),
            count("skipped"),
            count("failed"),
            count("planned")
        );
        // An evaluation that failed (every project's listing refused, say) decided
        // nothing: not a clean sweep.
        let mut unevaluated = false;
        for (source, id) in &own {
            let Ok(Some(d)) = ctx.store.find_delivery(source, id).await else {
                continue;
            };
            // Given up on after retries (dead letter), refused for good (`skipped: ERROR`,
            // see the processor), or still waiting for a retry at the deadline.
            let outcome = d.outcome.as_deref().unwrap_or("");
            let refused = outcome.strip_prefix("skipped: ");
            if outcome == crate::store::deliveries::DEAD_LETTER
                || refused.is_some()
                || d.processed_at.is_none()
            {
                unevaluated = true;
                eprintln!(
                    "runwarden sweep: could not evaluate the rules: {}",
                    refused
                        .or(d.last_error.as_deref())
                        .unwrap_or("not processed in time")
                );
            }
        }
        if count("failed") > 0 || breaker || unevaluated {
            ExitCode::from(super::EXIT_FAILED)
        } else {
            ExitCode::SUCCESS
        }
    })
}

/// Adds the (decision, action) ids of the repeated decisions among the bot events
/// waiting in `events`.
fn drain_repeated(
    events: &mut tokio::sync::broadcast::Receiver<crate::server::BotEvent>,
    repeated: &mut Vec<(i64, Option<i64>)>,
) {
    use tokio::sync::broadcast::error::TryRecvError;
    loop {
        match events.try_recv() {
            // Retention actions decided again are queued again by the processor itself.
            Ok(crate::server::BotEvent::Decided {
                decision_id,
                action_id,
                repeated: true,
                kind,
                ..
            }) => repeated.push((decision_id, action_id.filter(|_| kind != "retention"))),
            Ok(_) => {}
            Err(TryRecvError::Lagged(n)) => {
                tracing::warn!(
                    "sweep: {n} bot event(s) missed; the report may leave repeated decisions out"
                );
            }
            Err(_) => return,
        }
    }
}
