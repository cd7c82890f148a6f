//! `runwarden sweep [--rule NAME] [--dry-run]`: evaluate and execute once, then exit
//! (for a cron job or a CI step). It uses the same store, processor and executor as
//! `serve`: every decision is recorded before it is acted on, and `audit` shows it.
//!
//! Exit 0 when everything decided was done, 1 when an action it carried out failed for
//! good (one it decided, or one already queued when it looked that it took up, see
//! below), a retention circuit breaker tripped, the store could not be opened, the
//! evaluation itself failed (no project could be listed, say: the error is printed),
//! the outcome could not be read back from the store at the end (the report would be
//! empty or incomplete: the error is printed), or its own work was not finished when it
//! stopped waiting (its deadline, [`SWEEP_DEADLINE`], reached, or the next retry of an
//! action of its own not due before it: a long API outage, say; what is left is
//! printed, for `serve` or the next sweep to carry out), 2 for bad usage or an invalid
//! config, missing credentials (`CURRENTS_API_KEY`) included.
//!
//! A sweep needs only `CURRENTS_API_KEY` (SPEC §1), and may run with a rules file of
//! its own: it claims only the actions it can carry out ([`crate::actions::
//! claim_filter`]). A summary it cannot post (no GitHub credentials, or its rule is not
//! a summary rule of this rules file), `serve`'s or one it decided itself, stays queued,
//! untouched, for `serve`; the sweep does not wait for it and says on stderr how many it
//! left.
//!
//! Events: a sweep processes its own (a poll, a retention sweep), which it stores held
//! from every other processor until its deadline
//! ([`crate::store::Store::insert_delivery_held`]), so that a `serve` on the same store
//! does not process them at the same time (each Currents read done twice); it retries
//! them on their backoff itself and hands back, at its end, those it gave up on. The
//! events other processes stored (`serve`'s webhooks and polls, a run's end its executor
//! saw, a crashed sweep's) are `serve`'s: the sweep processes those that are due only
//! while it holds the processor lease ([`super::serve::ProcessorLease`]), which a live
//! `serve` keeps for itself (on SQLite too), so that it never consumes events beside a
//! running `serve`'s processor, yet events left while `serve` is down (or when there is
//! no `serve`, only sweeps) are not left unprocessed. It never waits for them.
//!
//! A sweep waits for its own work only: its own events (retries included), the actions
//! its events decide, the actions already due when it looks (left by `serve` or a sweep
//! that crashed) and that it starts, and their retries, up to [`SWEEP_DEADLINE`]. An
//! event or action waiting for a later retry (another process's, or one in backoff
//! since before the sweep) is left for whoever acts then, `serve` or the next sweep, and
//! counted on stderr. An action of its own still to be done when it stops waiting (its
//! next attempt not due before the deadline, or the deadline reached) is left the same
//! way, but its work is unfinished: it says what is left and exits 1.
//!
//! The report (stdout) lists the decisions this sweep made (not those another process,
//! a `serve` beside it say, made while it ran), and those behind the actions it took
//! up that were queued before it started (made by `serve`, say; the summary line says
//! how many), each with its action's state now; its summary line
//! counts them all, and the exit code follows them: a failure for good of any of its
//! actions exits 1, as one of them left unfinished does.
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
//! stay queued, nor retries of failed ones; it processes its own events only. With
//! `dry_run = true` in the config (the emergency stop), the executor ends a queued
//! cancel, delete or summary as `skipped` instead of carrying it out when every rule
//! with a live decision on it is in dry-run mode (a rule's own `dry_run = false`
//! overrides the global one); when one of them is live, it is carried out for that rule.
//! A live decision of a held action afterwards (the stop lifted, this sweep's poll
//! deciding it again) queues it again, and it is carried out (see `actions::execute`).

use crate::commands::errln;
use std::collections::HashSet;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::outln;
use crate::config::{RuleKind, Secrets};
use crate::store::actions::ClaimFilter;
use crate::store::{ActionRow, ActionState, NewDelivery};

/// How long a sweep waits for its actions to finish (retries included).
pub const SWEEP_DEADLINE: Duration = Duration::from_secs(600);

/// Reader connections of a sweep's SQLite store (`serve`: [`crate::store::SQLITE_READERS`]).
pub const SWEEP_SQLITE_READERS: u32 = 1;

/// Runs the command.
pub fn run(path: &std::path::Path, rule: Option<&str>, dry_run: bool) -> ExitCode {
    let mut loaded = match super::load_config(path) {
        Ok(l) => l,
        Err(code) => return code,
    };
    if let Err(code) = super::check_rule_exists(path, &loaded.config, rule) {
        return code;
    }
    // A rule that acts on events only (orphan) has nothing to sweep: asking for it alone
    // is a mistake, not a sweep that did nothing.
    if let Some(note) = loaded
        .config
        .rules
        .iter()
        .filter(|r| rule.is_some_and(|n| r.name == n))
        .find_map(super::plan::nothing_to_sweep)
    {
        errln!("runwarden sweep: {note}; `runwarden serve` carries it out");
        return ExitCode::from(super::EXIT_USAGE);
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
        // Missing or unusable credentials are bad usage (2), told before the store is
        // opened (in the runtime: the clients need it). What `build_context` can fail
        // on after these checks is the store (down, unreachable, not writable): the
        // work failing (1).
        if let Err(e) = super::serve::credentials_problem(&loaded.config, &secrets) {
            errln!("runwarden sweep: {e:#}");
            return ExitCode::from(super::EXIT_USAGE);
        }
        // A SQLite store's readers each keep a page cache: a sweep, one pass that mostly
        // waits for the API, reads through fewer of them than `serve` (PostgreSQL keeps
        // its own pool size).
        let options = match crate::store::Backend::of_url(&loaded.config.store.url) {
            Some(crate::store::Backend::Sqlite) => crate::store::StoreOptions {
                max_connections: Some(SWEEP_SQLITE_READERS),
                ..Default::default()
            },
            _ => crate::store::StoreOptions::default(),
        };
        let ctx = match super::serve::build_context_with(loaded.config, secrets, options).await {
            Ok(c) => c,
            Err(e) => {
                errln!("runwarden sweep: {e:#}");
                return ExitCode::from(super::EXIT_FAILED);
            }
        };
        // What this sweep can carry out: a summary it could not post (no GitHub
        // credentials, a rule its rules file lacks) stays queued for `serve`.
        let claims = crate::actions::claim_filter(&ctx);
        let started = Utc::now();
        // Two sweeps started in the same millisecond store distinct events.
        let run_id = uuid::Uuid::new_v4().simple().to_string();
        // Decisions this sweep repeats: (decision, action) ids, from the bot's events
        // (sent before `process_pending` returns; drained after each round).
        let mut events = ctx.events.subscribe();
        let mut repeated: Vec<(i64, Option<i64>)> = Vec::new();
        // The decisions this sweep made (new ones; `repeated` has the others): its
        // report lists these, not whatever another process decided meanwhile.
        let mut decided: HashSet<i64> = HashSet::new();
        // Whether a bot event was missed (the channel lagged): then `decided` may be
        // incomplete, and the report falls back to the decisions made since it started.
        let mut lagged = false;
        let mut retried = HashSet::new();
        let selected: Vec<_> = ctx
            .config
            .rules
            .iter()
            .filter(|r| rule.is_none_or(|n| r.name == n))
            .collect();
        let mut poll_needed = false;
        let deadline_at = started + SWEEP_DEADLINE;
        // The sweep's own events: each must be processed for the sweep to have done its
        // job. Held from other processors until the deadline.
        let mut own = OwnEvents::new(deadline_at);
        for r in &selected {
            match r.kind {
                RuleKind::Retention(_) => {
                    let d = NewDelivery {
                        source: "schedule".into(),
                        delivery_id: format!(
                            "sweep:{}:{}:{run_id}",
                            r.name,
                            started.timestamp_millis()
                        ),
                        event: "sweep".into(),
                        // A dry run's sweep is a preview, whoever processes it.
                        payload: serde_json::json!({
                            "rule": r.name,
                            "manual": true,
                            crate::intake::processor::PREVIEW_KEY: dry_run,
                        })
                        .to_string(),
                        received_at: started,
                    };
                    if let Err(e) = own.store(&ctx, d).await {
                        errln!("runwarden sweep: {e}");
                        return ExitCode::from(super::EXIT_FAILED);
                    }
                }
                // A summary rule's poll finds the runs that ended unseen (a missed
                // `RUN_FINISH`) and summarises them, as `POST /api/sweep/{rule}` does.
                RuleKind::Supersede(_) | RuleKind::Timeout(_) | RuleKind::Summary(_) => {
                    poll_needed = true
                }
                _ => {}
            }
        }
        if poll_needed {
            let d = NewDelivery {
                source: if rule.is_some() {
                    "schedule".into()
                } else {
                    "poll".into()
                },
                delivery_id: format!("sweep-poll:{}:{run_id}", started.timestamp_millis()),
                event: if rule.is_some() {
                    "sweep".into()
                } else {
                    "poll".into()
                },
                // A dry run's poll is a preview: it leaves the reconciliation of the runs
                // it finds ended to `serve` (see `processor::PREVIEW_KEY`).
                payload: serde_json::json!({
                    "rule": rule.unwrap_or_default(),
                    crate::intake::processor::PREVIEW_KEY: dry_run,
                })
                .to_string(),
                received_at: started,
            };
            if let Err(e) = own.store(&ctx, d).await {
                errln!("runwarden sweep: {e}");
                return ExitCode::from(super::EXIT_FAILED);
            }
        }
        // Process events (its own; others' only when no `serve` consumes them), then act.
        let deadline = Instant::now() + SWEEP_DEADLINE;
        // The actions this sweep carries out: those it decides, and those due when it
        // claims (their retries included). Others are left for later.
        let mut mine: HashSet<i64> = HashSet::new();
        let mut gave_up = false;
        loop {
            own.process_due(&ctx).await;
            // A dry run processes its own events only: the events `serve` (or a crashed
            // sweep) left in the store are not used up by a preview.
            if !dry_run {
                process_others(&ctx).await;
            }
            drain_events(
                &mut events,
                &mut repeated,
                &mut decided,
                &mut mine,
                &mut lagged,
            );
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
                    tracing::info!(
                        action = id,
                        "sweep: retrying an action that had failed for good"
                    );
                }
            }
            // A dry run carries nothing out, not even actions queued before (serve's, or
            // a crashed sweep's): they stay queued for whoever acts next.
            let n = if dry_run {
                0
            } else {
                // What is due now is claimed next: the sweep's to finish.
                let now = Utc::now();
                if let Ok(queue) = ctx.store.pending_actions().await {
                    mine.extend(
                        queue
                            .iter()
                            .filter(|a| claimable(a, now) && claims.allows(&a.action, &a.rule))
                            .map(|a| a.id),
                    );
                }
                crate::actions::run_due_claiming(&ctx, &claims).await
            };
            let waiting = waiting_for(&ctx, &own, &mine, &claims, deadline_at).await;
            if n == 0 && !waiting {
                break;
            }
            if Instant::now() > deadline {
                gave_up = true;
                break;
            }
            if n == 0 {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        // Its own events it has not processed go back to the other processors, due at
        // their retry time (rather than when the hold would have run out).
        own.hand_back(&ctx).await;
        drain_events(
            &mut events,
            &mut repeated,
            &mut decided,
            &mut mine,
            &mut lagged,
        );
        // The report is read from the store: one that cannot be read is not an empty
        // report of a clean sweep. It lists the decisions this sweep made (told by the
        // bot's events), not those another process (a `serve` beside it) made meanwhile:
        // their work is not the sweep's to report or to fail for. Those this sweep
        // decided again, and those of the queued actions it carried out, follow.
        let mut entries = if lagged {
            // Some of its decisions were not told: the decisions made since it started
            // (`Store::audit` also gives older ones whose action changed meanwhile).
            errln!(
                "runwarden sweep: the report lists every decision made since this sweep started, other processes' included"
            );
            match ctx.store.audit(Some(started), rule, 100_000).await {
                Ok(mut e) => {
                    e.retain(|e| e.at >= started);
                    e
                }
                Err(e) => return unreadable("the decisions and actions of this sweep", &e),
            }
        } else {
            let mut ids: Vec<i64> = decided.iter().copied().collect();
            ids.sort_unstable();
            match ctx.store.audit_of_decisions(&ids).await {
                Ok(mut e) => {
                    e.retain(|e| rule.is_none_or(|r| e.rule == r));
                    e
                }
                Err(e) => return unreadable("the decisions and actions of this sweep", &e),
            }
        };
        report_left(&ctx, &claims).await;
        // Its own actions still to be done: the work of this sweep is unfinished.
        let unfinished = match ctx.store.pending_actions().await {
            Ok(queue) => queue
                .into_iter()
                .filter(|a| mine.contains(&a.id) && claims.allows(&a.action, &a.rule))
                .collect::<Vec<_>>(),
            Err(e) => return unreadable("whether the actions of this sweep are finished", &e),
        };
        report_unfinished(&unfinished, gave_up);
        let mut earlier: Vec<i64> = repeated.iter().map(|(d, _)| *d).collect();
        earlier.sort_unstable();
        earlier.dedup();
        if !earlier.is_empty() {
            let mut more = match ctx.store.audit_of_decisions(&earlier).await {
                Ok(m) => m,
                Err(e) => return unreadable("the decisions this sweep made again", &e),
            };
            // One recorded earlier in this very sweep is listed already.
            more.retain(|e| rule.is_none_or(|r| e.rule == r) && !entries.contains(e));
            entries.extend(more);
            entries.sort_by_key(|e| std::cmp::Reverse(e.at));
        }
        // The actions it took up that were queued before it started (by `serve`, or a
        // sweep that crashed) or meanwhile: its work as much as those it decided, as
        // their being unfinished is (above). Their decisions are listed and counted (the
        // summary line says how many were made before it): one of them that failed for
        // good fails the sweep.
        let mut taken_up: Vec<i64> = mine.iter().copied().collect();
        taken_up.sort_unstable();
        let mut queued_before = 0;
        if !taken_up.is_empty() {
            let mut more = match ctx.store.audit_of_actions_by_id(&taken_up).await {
                Ok(m) => m,
                Err(e) => return unreadable("the actions this sweep carried out", &e),
            };
            more.retain(|e| !entries.contains(e));
            queued_before = more.iter().filter(|e| e.at < started).count();
            entries.extend(more);
            entries.sort_by_key(|e| std::cmp::Reverse(e.at));
        }
        let count = |o: &str| entries.iter().filter(|e| e.outcome.as_str() == o).count();
        let breaker = entries
            .iter()
            .any(|e| e.reason.starts_with("circuit breaker"));
        if !entries.is_empty() {
            outln!(
                "{:<8} {:<22} {:<8} {:<34} reason",
                "outcome",
                "rule",
                "action",
                "run"
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
                e.error
                    .as_deref()
                    .map(|x| format!(" — {x}"))
                    .unwrap_or_default()
            );
        }
        outln!(
            "sweep: {} decision(s): {} done, {} dry run, {} skipped, {} failed, {} pending{}",
            entries.len(),
            count("done"),
            count("dry_run"),
            count("skipped"),
            count("failed"),
            count("planned"),
            if queued_before > 0 {
                format!(
                    " ({queued_before} of them made before this sweep, for actions queued before it that it took up)"
                )
            } else {
                String::new()
            }
        );
        // An evaluation that failed (every project's listing refused, say) decided
        // nothing: not a clean sweep.
        let mut unevaluated = false;
        for (source, id) in own.keys() {
            let d = match ctx.store.find_delivery(source, id).await {
                Ok(Some(d)) => d,
                Ok(None) => continue,
                Err(e) => return unreadable("whether the rules were evaluated", &e),
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
                match refused {
                    // A retention sweep that left out a project it may not list
                    // decided for the others (see the processor's note).
                    Some(why) if why.starts_with("project ") => {
                        errln!("runwarden sweep: the rules were evaluated without {why}")
                    }
                    _ => errln!(
                        "runwarden sweep: could not evaluate the rules: {}",
                        refused
                            .or(d.last_error.as_deref())
                            .unwrap_or("not processed in time")
                    ),
                }
            }
        }
        if count("failed") > 0 || breaker || unevaluated || !unfinished.is_empty() {
            ExitCode::from(super::EXIT_FAILED)
        } else {
            ExitCode::SUCCESS
        }
    })
}

/// Says on stderr that the sweep's outcome cannot be read from the store (`what`, the
/// error), and exits 1: its report would be incomplete, and its exit code could not
/// follow what happened.
fn unreadable(what: &str, e: &crate::store::StoreError) -> ExitCode {
    errln!(
        "runwarden sweep: cannot read {what} from the store: {e}; the outcome of this sweep is unknown (see `runwarden audit`)"
    );
    ExitCode::from(super::EXIT_FAILED)
}

/// Whether the executor would claim `a` at `now`: pending and due, or running with its
/// lease run out (its worker died).
fn claimable(a: &ActionRow, now: DateTime<Utc>) -> bool {
    let due = a.next_attempt_at <= now && a.not_before.is_none_or(|t| t <= now);
    let free = match a.state {
        ActionState::Pending => true,
        ActionState::Running => a.lease_until.is_none_or(|t| t <= now),
        _ => false,
    };
    due && free
}

/// When an action may next be attempted.
fn due_at(a: &ActionRow) -> DateTime<Utc> {
    a.not_before
        .map_or(a.next_attempt_at, |t| t.max(a.next_attempt_at))
}

/// How many times the sweep processes one of its own events before it stops waiting
/// for it (the API unreachable, say): it then exits 1 with the event's last error, at
/// once rather than at its deadline. (Each attempt has the API client's own retries.)
pub const OWN_EVENT_ATTEMPTS: i64 = 3;

/// The events a sweep stores and processes itself (a poll, a retention sweep). Stored
/// held from every other processor until the sweep's deadline
/// ([`crate::store::Store::insert_delivery_held`]): a `serve` on the same store does not
/// take them up while the sweep is on them. The sweep retries one that failed at the
/// retry time the processor gave it, keeping it held meanwhile, and at its end hands back
/// those still to be processed, due at that time, to whoever processes events then.
struct OwnEvents {
    /// Each event's `(source, delivery id)`, and when the sweep processes it next.
    events: Vec<((String, String), DateTime<Utc>)>,
    /// Until when they are held: the sweep's deadline (to the millisecond, as stored).
    held_until: DateTime<Utc>,
}

impl OwnEvents {
    fn new(deadline: DateTime<Utc>) -> Self {
        use chrono::SubsecRound as _;
        OwnEvents {
            events: Vec::new(),
            held_until: deadline.trunc_subsecs(3),
        }
    }

    /// Stores `d`, held, to be processed at once.
    async fn store(
        &mut self,
        ctx: &crate::server::AppContext,
        d: NewDelivery,
    ) -> crate::store::StoreResult<()> {
        let key = (d.source.clone(), d.delivery_id.clone());
        let due = d.received_at;
        ctx.store.insert_delivery_held(d, self.held_until).await?;
        self.events.push((key, due));
        Ok(())
    }

    fn keys(&self) -> impl Iterator<Item = &(String, String)> {
        self.events.iter().map(|(k, _)| k)
    }

    /// When the sweep processes the event `key` next.
    fn due(&self, key: &(String, String)) -> Option<DateTime<Utc>> {
        self.events.iter().find(|(k, _)| k == key).map(|(_, t)| *t)
    }

    /// Processes those that are due; of one that failed (the processor set its retry
    /// time), notes the retry time and holds it again.
    async fn process_due(&mut self, ctx: &crate::server::AppContext) {
        let now = Utc::now();
        let due: Vec<(String, String)> = self
            .events
            .iter()
            .filter(|(_, t)| *t <= now)
            .map(|(k, _)| k.clone())
            .collect();
        if due.is_empty() {
            return;
        }
        let _ = crate::intake::processor::process_only(ctx, &due).await;
        for (key, at) in self.events.iter_mut().filter(|(k, _)| due.contains(k)) {
            let Ok(Some(d)) = ctx.store.find_delivery(&key.0, &key.1).await else {
                continue;
            };
            if d.processed_at.is_some() || d.next_attempt_at == self.held_until {
                continue;
            }
            *at = d.next_attempt_at;
            if d.next_attempt_at < self.held_until {
                let _ = ctx.store.set_delivery_due(d.id, self.held_until).await;
            }
        }
    }

    /// Hands back those still to be processed: due at their retry time for any processor.
    async fn hand_back(&self, ctx: &crate::server::AppContext) {
        for ((source, id), at) in &self.events {
            if let Ok(Some(d)) = ctx.store.find_delivery(source, id).await
                && d.processed_at.is_none()
                && d.next_attempt_at != *at
            {
                let _ = ctx.store.set_delivery_due(d.id, *at).await;
            }
        }
    }
}

/// Processes the events other processes left due (`serve`'s, a crashed sweep's, the
/// runs' ends this sweep's executor saw), but only while this sweep holds the processor
/// lease: never beside a live `serve`'s processor, which keeps the lease for itself. The
/// lease is given up after the pass, for a `serve` starting meanwhile.
async fn process_others(ctx: &crate::server::AppContext) {
    // Nothing due: no lease to take (a read, rather than a write every round).
    if ctx
        .store
        .next_unprocessed(Utc::now(), 1)
        .await
        .is_ok_and(|due| due.is_empty())
    {
        return;
    }
    let mut lease = super::serve::ProcessorLease::default();
    if !lease.hold(ctx).await {
        return;
    }
    if let Some(Err(e)) = lease
        .while_held(ctx, crate::intake::processor::process_pending(ctx))
        .await
    {
        tracing::warn!("sweep: processing the events left by others paused: {e}");
    }
    lease.release(ctx).await;
}

/// Whether the sweep still has work of its own: one of its events not processed yet
/// (retries included), or one of its actions not finished, each only when it falls due
/// before `deadline`. Other processes' events are not its to wait for.
async fn waiting_for(
    ctx: &crate::server::AppContext,
    own: &OwnEvents,
    mine: &HashSet<i64>,
    claims: &ClaimFilter,
    deadline: DateTime<Utc>,
) -> bool {
    for key in own.keys() {
        if let Ok(Some(d)) = ctx.store.find_delivery(&key.0, &key.1).await
            && d.processed_at.is_none()
            && d.attempts < OWN_EVENT_ATTEMPTS
            && own.due(key).is_some_and(|t| t <= deadline)
        {
            return true;
        }
    }
    if mine.is_empty() {
        return false;
    }
    // An action of its own it does not claim (a summary it cannot post) is not waited
    // for: it is left for `serve`.
    ctx.store.pending_actions().await.is_ok_and(|queue| {
        queue.iter().any(|a| {
            mine.contains(&a.id) && claims.allows(&a.action, &a.rule) && due_at(a) <= deadline
        })
    })
}

/// Tells on stderr which actions of its own the sweep leaves unfinished (`unfinished`),
/// because it gave up waiting at its deadline (`gave_up`) or because their next attempt
/// is not due before it, and that `serve` or the next sweep carries them out.
fn report_unfinished(unfinished: &[ActionRow], gave_up: bool) {
    let Some(next) = unfinished.iter().min_by_key(|a| (due_at(a), a.id)) else {
        if gave_up {
            errln!("runwarden sweep: gave up waiting after {SWEEP_DEADLINE:?}");
        }
        return;
    };
    let what = super::plural(
        u64::try_from(unfinished.len()).unwrap_or(0),
        "action",
        "actions",
    );
    let one = unfinished.len() == 1;
    let why = if gave_up {
        format!("gave up waiting after {SWEEP_DEADLINE:?}: {what} of this sweep not finished")
    } else {
        format!(
            "{what} of this sweep not finished: {} not due before the sweep's {SWEEP_DEADLINE:?} deadline",
            if one {
                "its next attempt is"
            } else {
                "their next attempts are"
            }
        )
    };
    let error = next
        .last_error
        .as_deref()
        .map(|e| format!("; last error: {e}"))
        .unwrap_or_default();
    errln!(
        "runwarden sweep: {why} (next: {} of run {}, due {}{error}); `serve` or the next sweep carries {} out",
        next.action,
        next.run_id,
        due_at(next).format("%Y-%m-%d %H:%M:%S UTC"),
        if one { "it" } else { "them" },
    );
}

/// Tells on stderr what the sweep leaves for later: events still to be processed
/// (another process's, or waiting for a retry), actions still queued (another
/// process's, in backoff, or not due yet), and among them the summaries it cannot post
/// itself (`claims`).
async fn report_left(ctx: &crate::server::AppContext, claims: &ClaimFilter) {
    let events = ctx.store.count_unprocessed().await.unwrap_or(0);
    let actions = ctx.store.queue_depth().await.unwrap_or(0);
    if events == 0 && actions == 0 {
        return;
    }
    let not_mine = ctx.store.pending_actions().await.map_or(0, |queue| {
        queue
            .iter()
            .filter(|a| !claims.allows(&a.action, &a.rule))
            .count()
    });
    if not_mine > 0 {
        let why = if ctx.github.is_none() {
            "no GitHub credentials here (GITHUB_TOKEN, or GITHUB_APP_ID + GITHUB_APP_PRIVATE_KEY)"
        } else {
            "their rules are not summary rules of this configuration"
        };
        errln!(
            "runwarden sweep: left {} for `serve` (or a sweep that can post them): {why}",
            super::plural(u64::try_from(not_mine).unwrap_or(0), "summary", "summaries"),
        );
    }
    let next = ctx
        .store
        .next_action_due()
        .await
        .ok()
        .flatten()
        .filter(|_| actions > 0)
        .map(|t| {
            format!(
                ", the next action due {}",
                t.format("%Y-%m-%d %H:%M:%S UTC")
            )
        })
        .unwrap_or_default();
    errln!(
        "runwarden sweep: left for later (serve or the next sweep): {} to be processed, {} queued{next}",
        super::plural(u64::try_from(events).unwrap_or(0), "event", "events"),
        super::plural(u64::try_from(actions).unwrap_or(0), "action", "actions"),
    );
}

/// Takes the bot events waiting in `events`: adds the (decision, action) ids of the
/// repeated decisions to `repeated`, the ids of the new ones to `decided` and their
/// actions to `mine`; sets `lagged` when events were missed.
fn drain_events(
    events: &mut tokio::sync::broadcast::Receiver<crate::server::BotEvent>,
    repeated: &mut Vec<(i64, Option<i64>)>,
    decided: &mut HashSet<i64>,
    mine: &mut HashSet<i64>,
    lagged: &mut bool,
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
            Ok(crate::server::BotEvent::Decided {
                decision_id,
                action_id,
                ..
            }) => {
                decided.insert(decision_id);
                mine.extend(action_id);
            }
            Ok(_) => {}
            Err(TryRecvError::Lagged(n)) => {
                *lagged = true;
                tracing::warn!(
                    "sweep: {n} bot event(s) missed; the report may leave repeated decisions out"
                );
            }
            Err(_) => return,
        }
    }
}
