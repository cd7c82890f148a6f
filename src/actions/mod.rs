//! The action executor: claims due actions from the store's outbox and carries them out
//! with retries (SPEC §6).
//!
//! - cancel: `PUT /runs/{id}/cancel` (404/409/422 count as done), then the run is read
//!   again; one still in progress is retried and, if it stays so, reported as failed.
//! - delete: `DELETE /runs/{id}` (404/409/422 count as done).
//! - summarize: the sticky PR comment and/or commit status of a summary rule.
//!
//! Retryable failures (network, 429, 5xx) go back to the queue with exponential backoff
//! and jitter (1 s doubling to 5 min); other failures are final and recorded. After
//! [`MAX_ATTEMPTS`] (retries spread over about 15 to 30 minutes, so that an API outage
//! of several minutes fails nothing) the action is `failed`, visible in `audit`,
//! `/metrics` and the status page.
//!
//! A rate limit whose `Retry-After` (or reset time) is longer than a client sleeps
//! through comes back with that wait ([`crate::github::GithubError::retry_after`],
//! [`crate::currents::CurrentsError::retry_after`]): the failed attempt counts against
//! [`MAX_ATTEMPTS`] as any other, but the next one is scheduled no earlier than the API
//! asked (up to [`MAX_RETRY_AFTER`]), not after the shorter backoff.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;

use crate::config::RuleKind;
use crate::currents::client::{CancelOutcome, DeleteOutcome};
use crate::server::AppContext;
use crate::store::actions::{ClaimFilter, DRY_RUN_HOLD, RuleSet};
use crate::store::{ActionOutcome, ActionRow};

/// Attempts before an action is failed for good. With the production backoff (1 s
/// doubling to 5 min, times a jitter in `0.5..=1`) its 13 waits add up to between 14
/// and 29 minutes (1 + 2 + ... + 256 s, then 300 s four times, at most: 1,711 s), each
/// attempt's own requests and their client retries aside: an outage of the API shorter
/// than that fails no action.
pub const MAX_ATTEMPTS: i64 = 14;
/// Lease on a claimed action; a crashed worker's actions are reclaimed after it.
pub const LEASE: Duration = Duration::from_secs(60);
/// Actions carried out at once by one executor.
pub const CONCURRENCY: usize = 16;
/// Longest `Retry-After` the executor honours; a longer one (a broken or hostile server)
/// is cut to this. GitHub's primary rate limit resets within an hour.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// The executor's retry schedule and lease ([`AppContext::executor`]). `Default` is
/// production's: [`MAX_ATTEMPTS`], backoff 1 s doubling up to 5 min (the retries of one
/// action span 14 to 29 minutes, see [`MAX_ATTEMPTS`]), [`LEASE`]; tests shorten it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutorOptions {
    /// Attempts before an action is failed for good.
    pub max_attempts: i64,
    /// Backoff before the second attempt; doubled per attempt.
    pub backoff_base: Duration,
    /// Largest backoff.
    pub backoff_max: Duration,
    /// Lease on a claimed action.
    pub lease: Duration,
}

impl Default for ExecutorOptions {
    fn default() -> Self {
        Self {
            max_attempts: MAX_ATTEMPTS,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            lease: LEASE,
        }
    }
}

/// The result of one attempt.
#[derive(Debug)]
pub enum Attempt {
    Done(String),
    Skipped(String),
    Retry(String),
    Fail(String),
    /// Could not start (held back by a rate limit another action met, or a summary's rule
    /// not in this replica's configuration yet: nothing sent): tried again after the
    /// wait asked for, without counting an attempt.
    Postpone(String),
}

/// Backoff before attempt `n + 1`: 1s, 2s, 4s ... capped at 5 min, times a random
/// factor in `0.5..=1`.
pub fn backoff(attempts: i64) -> Duration {
    backoff_with(&ExecutorOptions::default(), attempts)
}

/// [`backoff`] on the schedule of `opts`: [`backoff_ceiling`] times a jitter in
/// `0.5..=1`.
pub fn backoff_with(opts: &ExecutorOptions, attempts: i64) -> Duration {
    let jitter = rand::thread_rng().gen_range(0.5..=1.0);
    backoff_ceiling(opts, attempts).mul_f64(jitter)
}

/// The longest backoff after `attempts` failed attempts: `backoff_base * 2^attempts`,
/// capped at `backoff_max`.
pub fn backoff_ceiling(opts: &ExecutorOptions, attempts: i64) -> Duration {
    opts.backoff_base
        .checked_mul(1u32 << attempts.clamp(0, 31))
        .unwrap_or(opts.backoff_max)
        .min(opts.backoff_max)
}

/// The delay before the next attempt of an action that failed `attempts` times before
/// this attempt: [`backoff_with`], or what the API asked for (`retry_after`, capped at
/// [`MAX_RETRY_AFTER`]) when that is longer.
pub fn retry_delay_with(
    opts: &ExecutorOptions,
    attempts: i64,
    retry_after: Option<Duration>,
) -> Duration {
    let backoff = backoff_with(opts, attempts);
    match retry_after {
        Some(asked) => backoff.max(asked.min(MAX_RETRY_AFTER)),
        None => backoff,
    }
}

/// The way from the event processor straight into the running executor
/// ([`AppContext::handoff`]): the processor leases the new, due actions of an event in the
/// transaction that records them ([`crate::store::Store::record_event`]) and sends them
/// here, and the executor starts them without claiming them again. Only while an
/// executor loop receives ([`Handoff::receiver`]) and has a free slot; otherwise actions
/// wait in the store for the executor's own claim, as before. An action handed over but
/// never started (a shutdown) is released with the worker's other leases.
#[derive(Debug)]
pub struct Handoff {
    tx: tokio::sync::mpsc::UnboundedSender<ActionRow>,
    rx: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<ActionRow>>>,
    /// An executor loop holds the receiver.
    open: std::sync::atomic::AtomicBool,
    /// Actions in flight in that executor.
    inflight: std::sync::atomic::AtomicUsize,
}

impl Default for Handoff {
    fn default() -> Self {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        Handoff {
            tx,
            rx: std::sync::Mutex::new(Some(rx)),
            open: false.into(),
            inflight: 0.into(),
        }
    }
}

impl Handoff {
    /// How many actions a running executor takes now (its free slots), if it takes any.
    pub fn free_slots(&self) -> Option<usize> {
        use std::sync::atomic::Ordering::SeqCst;
        if !self.open.load(SeqCst) {
            return None;
        }
        let free = CONCURRENCY.saturating_sub(self.inflight.load(SeqCst));
        (free > 0).then_some(free)
    }

    /// Hands leased actions to the executor; they count as in flight at once, so that the
    /// next event does not overfill it.
    pub fn send(&self, actions: Vec<ActionRow>) {
        self.inflight
            .fetch_add(actions.len(), std::sync::atomic::Ordering::SeqCst);
        for a in actions {
            if self.tx.send(a).is_err() {
                // No executor any more: the lease is released at shutdown, or expires.
                tracing::debug!("executor gone; a handed-over action waits for its lease");
            }
        }
    }

    /// The receiving end, for the one executor loop of a process (`None` once taken).
    pub fn receiver(&self) -> Option<HandoffReceiver<'_>> {
        let rx = self.rx.lock().unwrap_or_else(|e| e.into_inner()).take()?;
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
        Some(HandoffReceiver {
            handoff: self,
            rx: Some(rx),
        })
    }
}

/// The executor's end of a [`Handoff`]; closes it (and gives the receiver back) on drop.
#[derive(Debug)]
pub struct HandoffReceiver<'a> {
    handoff: &'a Handoff,
    rx: Option<tokio::sync::mpsc::UnboundedReceiver<ActionRow>>,
}

impl HandoffReceiver<'_> {
    /// The next handed-over action.
    pub async fn recv(&mut self) -> Option<ActionRow> {
        match self.rx.as_mut() {
            Some(rx) => rx.recv().await,
            None => std::future::pending().await,
        }
    }

    fn set_inflight(&self, n: usize) {
        self.handoff
            .inflight
            .store(n, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for HandoffReceiver<'_> {
    fn drop(&mut self) {
        self.handoff
            .open
            .store(false, std::sync::atomic::Ordering::SeqCst);
        *self.handoff.rx.lock().unwrap_or_else(|e| e.into_inner()) = self.rx.take();
    }
}

/// Claims and carries out every due action once; returns how many were attempted.
pub async fn run_due(ctx: &AppContext) -> usize {
    run_due_until(ctx, || false).await
}

/// [`run_due`] of the actions `filter` allows only (`runwarden sweep`, with
/// [`claim_filter`]): the others stay queued, untouched, for a process that can carry
/// them out.
pub async fn run_due_claiming(ctx: &AppContext, filter: &ClaimFilter) -> usize {
    run_due_inner(ctx, || false, None, Vec::new(), filter).await
}

/// The actions a process with `ctx`'s configuration and credentials can carry out, for
/// a process that is not the one the queue is for (`runwarden sweep`, a cron job or CI
/// step that needs only `CURRENTS_API_KEY`, maybe with a rules file of its own). It
/// claims every cancel and delete, and the summaries of the rules it knows as summary
/// rules when it has GitHub credentials. A summary it could not post (no credentials,
/// a rule it does not know, or not as a summary rule) is left queued for `serve`, not
/// ended `skipped` (SPEC §6: an accepted action is carried out at least once), except
/// one that dry run holds back (`held_by_dry_run`), which is ended `skipped` as by any
/// process.
///
/// `serve` claims every action: its configuration and credentials are the bot's, so
/// a summary it cannot post there (no GitHub credentials, which `check` and its startup
/// warn about; a rule removed from the configuration, on a shared store once the action
/// is [`crate::intake::processor::UNKNOWN_RULE_GRACE`] old: another replica's may have
/// it) ends `skipped` with the reason rather than waiting for good.
pub fn claim_filter(ctx: &AppContext) -> ClaimFilter {
    claim_filter_of(&ctx.config, ctx.github.is_some())
}

/// [`claim_filter`] of a configuration, with or without GitHub credentials.
pub fn claim_filter_of(config: &crate::config::Config, github: bool) -> ClaimFilter {
    let (can, cannot): (Vec<_>, Vec<_>) = config.rules.iter().partition(|r| {
        (github && matches!(r.kind, RuleKind::Summary(_))) || r.is_dry_run(config.dry_run)
    });
    let names = |rules: Vec<&crate::config::Rule>| rules.iter().map(|r| r.name.clone()).collect();
    ClaimFilter {
        // The summary of a rule it does not know is held back by the global dry run
        // (and ended `skipped`), or left.
        summaries: if config.dry_run {
            RuleSet::AllBut(names(cannot))
        } else {
            RuleSet::Only(names(can))
        },
    }
}

/// [`run_due`] for `serve`: up to [`CONCURRENCY`] actions in flight, and while the bot
/// is ready, actions that fall due meanwhile are claimed as soon as a slot is free, so
/// that one slow action (a hanging API) does not hold the others back. Once `stop()`
/// holds (shutdown), nothing new is claimed: the actions in flight finish, the rest stay
/// queued for the next start.
pub async fn run_due_until(ctx: &AppContext, stop: impl Fn() -> bool) -> usize {
    run_due_with(ctx, stop, None, Vec::new()).await
}

/// [`run_due_until`] that also starts the actions handed over through `handoff` while it
/// runs, beginning with `handed` (already received).
pub async fn run_due_with(
    ctx: &AppContext,
    stop: impl Fn() -> bool,
    handoff: Option<&mut HandoffReceiver<'_>>,
    handed: Vec<ActionRow>,
) -> usize {
    run_due_inner(ctx, stop, handoff, handed, &ClaimFilter::default()).await
}

/// [`run_due_with`], claiming only what `filter` allows.
async fn run_due_inner(
    ctx: &AppContext,
    stop: impl Fn() -> bool,
    mut handoff: Option<&mut HandoffReceiver<'_>>,
    handed: Vec<ActionRow>,
    filter: &ClaimFilter,
) -> usize {
    use futures::StreamExt as _;
    let mut total = 0;
    let mut inflight = futures::stream::FuturesUnordered::new();
    // The actions in flight, each with where its attempt is (see `Lease`).
    let mut ids: InFlight = std::collections::HashMap::new();
    // Starts an action unless it is in flight already (an action whose lease ran out
    // while we were still on it is ours already: claimed again, it is this worker's
    // again, and so is the outcome of the attempt in flight); true when started.
    let start =
        |a: ActionRow, inflight: &mut futures::stream::FuturesUnordered<_>, ids: &mut InFlight| {
            if let Some(lease) = ids.get(&a.id) {
                lease.claimed_again();
                return false;
            }
            let id = a.id;
            let lease = std::sync::Arc::new(Lease::default());
            ids.insert(id, lease.clone());
            inflight.push(async move {
                execute_leased(ctx, a, &lease).await;
                id
            });
            true
        };
    for a in handed {
        if !stop() {
            total += usize::from(start(a, &mut inflight, &mut ids));
        }
    }
    // The leases of the actions in flight are renewed three times per lease: an attempt
    // that outlasts its lease (a slow API, retries) is not taken over by another process.
    let mut renewal = tokio::time::interval_at(
        tokio::time::Instant::now() + ctx.executor.lease / 3,
        (ctx.executor.lease / 3).max(Duration::from_millis(10)),
    );
    renewal.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if let Some(h) = handoff.as_deref_mut() {
            h.set_inflight(inflight.len());
        }
        let free = CONCURRENCY.saturating_sub(inflight.len());
        let may_claim = inflight.is_empty() || ctx.ready.load(std::sync::atomic::Ordering::SeqCst);
        if free > 0 && may_claim && !stop() {
            let now = Utc::now();
            let claim = ctx.store.claim_due_actions_where(
                now,
                free as i64,
                ctx.executor.lease,
                &ctx.worker_id,
                filter,
            );
            tokio::pin!(claim);
            // Keep driving the actions in flight while claiming: they may hold the pooled
            // connections the claim waits for.
            let claimed = loop {
                tokio::select! {
                    r = &mut claim => break r,
                    Some(id) = inflight.next(), if !inflight.is_empty() => {
                        ids.remove(&id);
                    }
                }
            };
            match claimed {
                Ok(batch) => {
                    for a in batch {
                        total += usize::from(start(a, &mut inflight, &mut ids));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot claim actions"),
            }
        }
        if inflight.is_empty() {
            if let Some(h) = handoff.as_deref_mut() {
                h.set_inflight(0);
            }
            return total;
        }
        let receiving = handoff.is_some() && !stop();
        tokio::select! {
            Some(id) = inflight.next() => {
                ids.remove(&id);
            }
            _ = renewal.tick() => {
                let renew = renew_leases(ctx, ids.iter().map(|(id, lost)| (*id, lost.clone())).collect());
                tokio::pin!(renew);
                // Keep driving the actions in flight meanwhile: one may hold the
                // connection the renewal waits for (SQLite's one writer).
                loop {
                    tokio::select! {
                        () = &mut renew => break,
                        Some(id) = inflight.next(), if !inflight.is_empty() => {
                            ids.remove(&id);
                        }
                    }
                }
            }
            Some(a) = async { handoff.as_deref_mut()?.recv().await }, if receiving => {
                total += usize::from(start(a, &mut inflight, &mut ids));
            }
            _ = tokio::time::sleep(CLAIM_INTERVAL), if ctx.ready.load(std::sync::atomic::Ordering::SeqCst) => {}
        }
    }
}

/// The actions an executor pass has in flight, by id, each with its [`Lease`].
type InFlight = std::collections::HashMap<i64, std::sync::Arc<Lease>>;

/// Where the attempt of an action in flight is, as to its lease: in progress (the lease
/// renewed as it goes), recording its outcome, or in progress with the lease found lost
/// (see [`renew_leases`]).
#[derive(Debug, Default)]
struct Lease(std::sync::atomic::AtomicU8);

impl Lease {
    const ATTEMPT: u8 = 0;
    const RECORDING: u8 = 1;
    const LOST: u8 = 2;

    fn is_lost(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst) == Self::LOST
    }

    /// A renewal found the lease no longer this worker's; `true` when the attempt was
    /// still in progress (its outcome not being recorded yet): it is lost to it.
    fn lose(&self) -> bool {
        use std::sync::atomic::Ordering::SeqCst;
        self.0
            .compare_exchange(Self::ATTEMPT, Self::LOST, SeqCst, SeqCst)
            .is_ok()
    }

    /// The attempt has ended: `true` when its outcome is to be recorded (the lease not
    /// found lost meanwhile).
    fn record(&self) -> bool {
        use std::sync::atomic::Ordering::SeqCst;
        self.0
            .compare_exchange(Self::ATTEMPT, Self::RECORDING, SeqCst, SeqCst)
            .is_ok()
    }

    /// This worker claimed the action again while the attempt was in flight (its lease
    /// had run out): the action is this worker's again, and so is the attempt's outcome.
    fn claimed_again(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        let _ = self
            .0
            .compare_exchange(Self::LOST, Self::ATTEMPT, SeqCst, SeqCst);
    }
}

/// Extends the leases of the actions in flight (see [`run_due_with`]), those whose
/// outcome is being recorded included (it may be written again for a while, see
/// [`write_again`]). An attempt whose lease is no longer this worker's (it ran out and
/// another worker claimed the action, or it was handed back meanwhile) has lost it: its
/// outcome is not written nor counted ([`execute_leased`]), and its lease is not renewed
/// again.
async fn renew_leases(ctx: &AppContext, ids: InFlight) {
    let held: Vec<i64> = ids
        .iter()
        .filter(|(_, lease)| !lease.is_lost())
        .map(|(id, _)| *id)
        .collect();
    if held.is_empty() {
        return;
    }
    let until = Utc::now() + chrono::Duration::from_std(ctx.executor.lease).unwrap_or_default();
    match ctx.store.renew_leases(&held, &ctx.worker_id, until).await {
        Ok(lost) => {
            for id in lost {
                if ids.get(&id).is_some_and(|lease| lease.lose()) {
                    tracing::warn!(
                        action = id,
                        "the lease on an action in flight is lost (it ran out and another worker took the action over, or it was handed back); the outcome of this attempt will not be recorded"
                    );
                }
            }
        }
        Err(e) => {
            tracing::warn!(actions = held.len(), error = %e, "cannot renew the leases of actions in flight; they may be taken over when they run out")
        }
    }
}

/// How often [`run_due_until`] looks for newly due actions while others are in flight.
const CLAIM_INTERVAL: Duration = Duration::from_millis(200);

/// Whether the rule named `rule` is live as the configuration is now: not in dry-run mode
/// (its own `dry_run`, else the global one; a rule's own `dry_run = false` is live under
/// the global `dry_run = true`), or, for a rule no longer configured, the global
/// `dry_run` is off.
fn rule_is_live(config: &crate::config::Config, rule: &str) -> bool {
    config
        .rules
        .iter()
        .find(|r| r.name == rule)
        .map_or(!config.dry_run, |r| !r.is_dry_run(config.dry_run))
}

/// Whether the rule `a` is carried out for ([`ActionRow::rule`]) is in dry-run mode now:
/// then [`dry_run_hold`] looks for another rule with a live decision on it, or holds it.
fn held_by_dry_run(config: &crate::config::Config, a: &ActionRow) -> bool {
    !rule_is_live(config, &a.rule)
}

/// Dry run as an action falls due (a cancel, a delete, a summary: even a summary's reads
/// could mint a GitHub App token with a POST). A dry-run decision never gets an action,
/// so an action whose rule is in dry-run mode now was queued before dry run was switched
/// on (the emergency stop: `dry_run = true` and a restart; or a rule's own `dry_run`).
///
/// Dry run is per rule (SPEC §2), and when several rules decide the same action it is
/// carried out once (SPEC §6): the action is held back only when no rule with a live
/// decision on it is live now ([`rule_is_live`]). When the rule it was to be carried out
/// for is in dry-run mode but another of its deciders is live, it is carried out for that
/// one (`None`, with `a.rule` and `a.kind` changed, and so recorded:
/// [`crate::store::Store::act_for_rule_as`], which its summary's credit and its metrics
/// follow). When none is, it ends `skipped` (`Some`), with a note beginning with
/// [`DRY_RUN_HOLD`] that names the rules, rather than being carried out now (SPEC §6: dry
/// run mutates nothing anywhere): written by [`crate::store::Store::hold_action_as`],
/// which checks the deciders again under the store's write lock and counts no attempt. A
/// live decision of it afterwards (the stop lifted) puts it back in the queue
/// ([`crate::store::Store::record_decisions`]). `None` for any other action, or one whose
/// rule is live; a postponement when the store cannot say which rules decided it.
async fn dry_run_hold(ctx: &AppContext, a: &mut ActionRow) -> Option<Attempt> {
    if !matches!(a.action.as_str(), "cancel" | "delete" | "summarize")
        || !held_by_dry_run(&ctx.config, a)
    {
        return None;
    }
    let deciders = match ctx.store.live_deciders(a.id).await {
        Ok(d) => d,
        Err(e) => {
            return Some(Attempt::Postpone(format!(
                "cannot read which rules decided it (to see whether dry run holds it back): {e}"
            )));
        }
    };
    if let Some((rule, kind)) = deciders.iter().find(|(r, _)| rule_is_live(&ctx.config, r)) {
        return match ctx
            .store
            .act_for_rule_as(a.id, &ctx.worker_id, rule, kind)
            .await
        {
            Ok(true) => {
                tracing::info!(action = %a.action, run = %a.run_id, rule = %rule, "carried out for rule {rule:?}, which decided it too: rule {:?} is in dry-run mode", a.rule);
                a.rule = rule.clone();
                a.kind = kind.clone();
                None
            }
            // No longer this worker's: nothing is sent, and nothing written.
            Ok(false) => Some(Attempt::Postpone(
                "the action is no longer this worker's".into(),
            )),
            Err(e) => Some(Attempt::Postpone(format!(
                "cannot record the rule it is carried out for ({rule:?}): {e}"
            ))),
        };
    }
    let rules: Vec<String> = if deciders.is_empty() {
        vec![format!("{:?}", a.rule)]
    } else {
        deciders.iter().map(|(r, _)| format!("{r:?}")).collect()
    };
    Some(Attempt::Skipped(format!(
        "{DRY_RUN_HOLD} for {} {} (the action was queued before; a live decision of it queues it again)",
        if rules.len() == 1 { "rule" } else { "rules" },
        rules.join(", "),
    )))
}

/// Carries one claimed action out and records the outcome, while the action is still
/// this worker's (`ctx.worker_id`): an outcome is written only to an action `running`
/// under this worker's lease, so the late outcome of an attempt whose lease ran out and
/// whose action another worker claimed meanwhile changes nothing and is not counted.
pub async fn execute(ctx: &AppContext, a: ActionRow) {
    execute_leased(ctx, a, &Lease::default()).await
}

/// [`execute`]; `lease` is found lost by the executor's renewals when the action is no
/// longer this worker's while the attempt is in flight (see [`renew_leases`]): the
/// attempt's outcome, and a run-end event it would store, are then left to the action's
/// new holder (not written, not counted).
async fn execute_leased(ctx: &AppContext, mut a: ActionRow, lease: &Lease) {
    // A run read while acting, remembered with the outcome.
    let mut seen = None;
    // How long the API asked to wait before trying again (a rate limit's Retry-After).
    let mut retry_after = None;
    let attempt = match dry_run_hold(ctx, &mut a).await {
        Some(held) => held,
        None => match a.action.as_str() {
            "cancel" => cancel(ctx, &a, &mut seen, &mut retry_after).await,
            "delete" => delete(ctx, &a, &mut retry_after).await,
            "summarize" => summarize(ctx, &a, &mut retry_after).await,
            other => Attempt::Fail(format!("unknown action {other:?}")),
        },
    };
    let now = Utc::now();
    let kind = a.kind.clone();
    // The outcome (and a run-end event) are written again while the store cannot take
    // them, up to half the lease from now (see `write_again`).
    let give_up = tokio::time::Instant::now() + ctx.executor.lease / 2;
    if !lease.record() {
        tracing::info!(action = %a.action, run = %a.run_id, "the action's lease was lost during the attempt; its outcome here is not recorded (the action's new holder records its own)");
        return;
    }
    // A run seen ended gets its summaries (see `run_end_delivery`), stored before the
    // outcome: a crash in between repeats the action, not the event (stored once).
    if let (Attempt::Done(_), Some(rec)) = (&attempt, seen.as_ref())
        && let Some(d) = crate::intake::processor::run_end_delivery(&ctx.config, rec, now)
    {
        let what = "store the run's end for its summaries";
        let stored = write_again(&a, what, give_up, || ctx.store.insert_delivery(d.clone())).await;
        if stored.is_none() {
            // Not recorded: the action (idempotent) and the event come again.
            return;
        }
        ctx.wake.notify_one();
    }
    let finished = Finished {
        a: &a,
        attempt: &attempt,
        seen: seen.as_ref(),
        retry_after,
        now,
    };
    let mut first = true;
    let outcome = write_again(&a, "record the action outcome", give_up, || {
        let log = std::mem::take(&mut first);
        write_outcome(ctx, &finished, log)
    })
    .await;
    let outcome = match outcome {
        Some(Some(name)) => name,
        // Given up (logged): the action is carried out again after its lease, and
        // counted then.
        None => return,
        Some(None) => {
            tracing::info!(action = %a.action, run = %a.run_id, "the action is no longer this worker's (its lease ran out and another worker took it over, or it was handed back or finished meanwhile); its outcome here is not recorded");
            return;
        }
    };
    let detail = match &attempt {
        Attempt::Done(d)
        | Attempt::Skipped(d)
        | Attempt::Retry(d)
        | Attempt::Fail(d)
        | Attempt::Postpone(d) => d.clone(),
    };
    ctx.events.send(crate::server::BotEvent::ActionFinished {
        rule: a.rule.clone(),
        action: a.action.clone(),
        run_id: a.run_id.clone(),
        outcome: outcome.to_string(),
        detail,
    });
    ctx.metrics.inc(
        "runwarden_actions_total",
        &[
            ("rule", &a.rule),
            ("kind", &kind),
            ("action", &a.action),
            ("outcome", outcome),
        ],
    );
    if matches!(outcome, "done" | "skipped") {
        // From the event, or from when the action was due if it was deliberately held
        // (an orphan rule's grace): the wait the rule asked for is not latency.
        if let Some(received) = received_at(&a) {
            let from = a.not_before.map_or(received, |t| t.max(received));
            let secs = (now - from).num_microseconds().unwrap_or(0) as f64 / 1e6;
            ctx.metrics.observe_latency(secs.max(0.0));
        }
        match &attempt {
            Attempt::Done(d) => {
                tracing::info!(action = %a.action, run = %a.run_id, "action done: {d}")
            }
            Attempt::Skipped(d) => {
                tracing::info!(action = %a.action, run = %a.run_id, "action skipped: {d}")
            }
            _ => {}
        }
    }
}

/// First wait before writing an action's outcome again when the store could not take it
/// (locked past its busy timeout, a connection lost); doubled each time, up to
/// [`OUTCOME_RETRY_MAX_WAIT`].
pub const OUTCOME_RETRY_FIRST_WAIT: Duration = Duration::from_millis(250);
/// Longest wait between two writes of one outcome.
pub const OUTCOME_RETRY_MAX_WAIT: Duration = Duration::from_secs(4);

/// Runs `write` until it succeeds; a store that cannot take it now (locked past its busy
/// timeout, a connection lost) is tried again after [`OUTCOME_RETRY_FIRST_WAIT`],
/// doubling up to [`OUTCOME_RETRY_MAX_WAIT`], until `give_up` (half the action's lease
/// after its attempt ended: the executor renews the lease meanwhile, the action being in
/// flight). `None` when it gave up (logged, with `what` was to be done): the action is
/// then left to its lease and carried out again once the lease runs out, which repeats
/// a request (cancel and delete are idempotent) but not the side effect.
async fn write_again<T, Fut>(
    a: &ActionRow,
    what: &str,
    give_up: tokio::time::Instant,
    mut write: impl FnMut() -> Fut,
) -> Option<T>
where
    Fut: std::future::Future<Output = crate::store::StoreResult<T>>,
{
    let mut wait = OUTCOME_RETRY_FIRST_WAIT;
    loop {
        let e = match write().await {
            Ok(v) => return Some(v),
            Err(e) => e,
        };
        let next = tokio::time::Instant::now() + wait;
        if !e.is_unavailable() || next > give_up {
            tracing::error!(action = %a.action, run = %a.run_id, error = %e, "cannot {what}; the action is carried out again after its lease");
            return None;
        }
        tracing::warn!(action = %a.action, run = %a.run_id, error = %e, retry_in_ms = wait.as_millis() as u64, "cannot {what} yet; writing it again");
        tokio::time::sleep_until(next).await;
        wait = (wait * 2).min(OUTCOME_RETRY_MAX_WAIT);
    }
}

/// An attempt at an action that has ended, and what its outcome is written with.
struct Finished<'a> {
    a: &'a ActionRow,
    attempt: &'a Attempt,
    /// The run as the attempt left it (a cancel's verification).
    seen: Option<&'a crate::store::RunRecord>,
    /// How long the API asked to wait before trying again.
    retry_after: Option<Duration>,
    now: DateTime<Utc>,
}

impl Finished<'_> {
    /// The name of the outcome: `done`, `skipped`, `postponed`, `retry` or `failed`.
    fn outcome_name(&self, executor: &ExecutorOptions) -> &'static str {
        match self.attempt {
            Attempt::Done(_) => "done",
            Attempt::Skipped(_) => "skipped",
            Attempt::Postpone(_) => "postponed",
            Attempt::Retry(_) if self.a.attempts + 1 < executor.max_attempts => "retry",
            Attempt::Retry(_) | Attempt::Fail(_) => "failed",
        }
    }
}

/// One write of an action's outcome, whose name it returns (see [`write_again`]), or
/// `None` when the action is no longer this worker's (each write applies only to the
/// action `running` under `ctx.worker_id`'s lease); `log`: whether to log the attempt's
/// result (once, not on every write).
async fn write_outcome(
    ctx: &AppContext,
    f: &Finished<'_>,
    log: bool,
) -> crate::store::StoreResult<Option<&'static str>> {
    let (a, now) = (f.a, f.now);
    let me = ctx.worker_id.as_str();
    let name = f.outcome_name(&ctx.executor);
    let written = match f.attempt {
        Attempt::Done(detail) => {
            ctx.store
                .complete_action_as(a.id, me, ActionOutcome::Done, detail, f.seen)
                .await?
        }
        // Held back by dry run (see `dry_run_hold`): unless a live decision came meanwhile.
        Attempt::Skipped(detail) if detail.starts_with(DRY_RUN_HOLD) => {
            ctx.store
                .hold_action_as(a.id, me, detail, |rule| rule_is_live(&ctx.config, rule))
                .await?
        }
        Attempt::Skipped(detail) => {
            ctx.store
                .complete_action_as(a.id, me, ActionOutcome::Skipped, detail, None)
                .await?
        }
        Attempt::Postpone(note) => {
            let delay = f
                .retry_after
                .unwrap_or(ctx.executor.backoff_base)
                .min(MAX_RETRY_AFTER);
            let next = now + chrono::Duration::from_std(delay).unwrap_or_default();
            if log {
                tracing::info!(action = %a.action, run = %a.run_id, retry_in_ms = delay.as_millis() as u64, "action postponed, not counted as an attempt: {note}");
            }
            ctx.store.postpone_action_as(a.id, me, note, next).await?
        }
        Attempt::Retry(err) if name == "retry" => {
            let delay = retry_delay_with(&ctx.executor, a.attempts, f.retry_after);
            let next = now + chrono::Duration::from_std(delay).unwrap_or_default();
            if log {
                tracing::warn!(action = %a.action, run = %a.run_id, attempt = a.attempts + 1, retry_in_ms = delay.as_millis() as u64, "action failed, will retry: {err}");
            }
            ctx.store.fail_attempt_as(a.id, me, err, next).await?
        }
        Attempt::Retry(err) | Attempt::Fail(err) => {
            if log {
                tracing::error!(action = %a.action, run = %a.run_id, attempts = a.attempts + 1, "action failed for good: {err}");
            }
            ctx.store.fail_action_as(a.id, me, err).await?
        }
    };
    // Not written: the action is no longer this worker's (another worker claimed it
    // after its lease ran out, say), and its holder counts its own outcome.
    Ok(written.then_some(name))
}

fn received_at(a: &ActionRow) -> Option<DateTime<Utc>> {
    let v: serde_json::Value = serde_json::from_str(a.payload.as_deref()?).ok()?;
    DateTime::from_timestamp_millis(v.get("received_at")?.as_i64()?)
}

/// A Currents error as an attempt; `retry_after` gets the wait the API asked for.
fn classify(
    e: crate::currents::client::CurrentsError,
    what: &str,
    retry_after: &mut Option<Duration>,
) -> Attempt {
    // An undecodable 2xx (a truncated body, a proxy's page) is ambiguous, not final: the
    // next attempt finds out (cancel and delete are idempotent; a cancel is verified).
    let undecodable_success = matches!(&e, crate::currents::client::CurrentsError::Decode { status, .. } if (200..300).contains(status));
    if e.is_retryable() || undecodable_success {
        *retry_after = e.retry_after();
        Attempt::Retry(format!("{what}: {e}"))
    } else {
        Attempt::Fail(format!("{what}: {e}"))
    }
}

impl Attempt {
    /// The same outcome with its note changed by `f`.
    fn map_note(self, f: impl FnOnce(String) -> String) -> Attempt {
        match self {
            Attempt::Done(n) => Attempt::Done(f(n)),
            Attempt::Skipped(n) => Attempt::Skipped(f(n)),
            Attempt::Retry(n) => Attempt::Retry(f(n)),
            Attempt::Fail(n) => Attempt::Fail(f(n)),
            Attempt::Postpone(n) => Attempt::Postpone(f(n)),
        }
    }
}

/// One attempt of a cancel ([`cancel_once`]). Once an attempt's cancel took effect, every
/// later note of the action says so first ([`crate::store::actions::CANCEL_TOOK_EFFECT`]):
/// the run's summary credits the rule from the action's notes, and a later attempt (a
/// failed verification read, then an "already cancelled" answer) would otherwise write
/// over the only one that did.
async fn cancel(
    ctx: &AppContext,
    a: &ActionRow,
    seen: &mut Option<crate::store::RunRecord>,
    retry_after: &mut Option<Duration>,
) -> Attempt {
    use crate::store::actions::CANCEL_TOOK_EFFECT;
    let before = [a.detail.as_deref(), a.last_error.as_deref()]
        .into_iter()
        .flatten()
        .any(|n| n.starts_with(CANCEL_TOOK_EFFECT));
    let attempt = cancel_once(ctx, a, seen, retry_after).await;
    if !before {
        return attempt;
    }
    attempt.map_note(|n| {
        if n.starts_with(CANCEL_TOOK_EFFECT) {
            n
        } else {
            format!("{CANCEL_TOOK_EFFECT} by an earlier attempt; {n}")
        }
    })
}

async fn cancel_once(
    ctx: &AppContext,
    a: &ActionRow,
    seen: &mut Option<crate::store::RunRecord>,
    retry_after: &mut Option<Duration>,
) -> Attempt {
    let mut answer_lost: Option<String> = None;
    let note = match ctx.currents.cancel_run(&a.run_id).await {
        // The run's summary credits the rule with the cancel only for this note
        // (`Store::cancel_reason`); an "already done" answer means someone else did.
        Ok(CancelOutcome::Cancelled(_)) => crate::store::actions::CANCEL_TOOK_EFFECT.to_string(),
        Ok(CancelOutcome::AlreadyDone {
            status,
            message,
            after_unanswered,
        }) => {
            let done = format!("already done ({status}: {message})");
            if after_unanswered {
                // An earlier request of this call went unanswered (its connection
                // dropped, a 5xx): if the run now reads as cancelled, that request is
                // what cancelled it. Credited below, after the verification read.
                answer_lost = Some(done);
                String::new()
            } else {
                done
            }
        }
        // A final refusal other than for the key (401, 403): the API documents only 400
        // for a cancel it will not do, and says nothing of a run that finished between
        // the decision and the cancel. Read the run: one that is over needs no cancel.
        Err(e) if refused(&e) => {
            let refusal = format!("cancel refused ({e})");
            return match ctx.currents.get_run(&a.run_id).await {
                Ok(run) if !run.is_in_progress() => {
                    *seen = crate::intake::processor::observation(ctx, &run, Utc::now())
                        .await
                        .ok();
                    Attempt::Done(format!(
                        "{refusal}; nothing to cancel: run is {}",
                        run.completion_state
                    ))
                }
                Err(g) if g.is_not_found() => {
                    Attempt::Done(format!("{refusal}; run no longer exists"))
                }
                // The run could not be read now: find out at the next attempt.
                Err(g) if g.is_retryable() => {
                    classify(g, &format!("{refusal}; read the run"), retry_after)
                }
                _ => classify(e, "cancel", retry_after),
            };
        }
        Err(e) => return classify(e, "cancel", retry_after),
    };
    // Verify: read the run again.
    let verified = ctx.currents.get_run(&a.run_id).await;
    let note = match answer_lost {
        Some(done) => match &verified {
            Ok(run) if run.completion_state == crate::currents::CompletionState::Canceled => {
                format!(
                    "{} (the answer to runwarden's request was lost; asked again, Currents said {})",
                    crate::store::actions::CANCEL_TOOK_EFFECT,
                    done.trim_start_matches("already done ")
                )
            }
            _ => format!("{done} after an unanswered request"),
        },
        None => note,
    };
    match verified {
        Ok(run) if run.is_in_progress() => {
            Attempt::Retry(format!("{note}, but the run is still in progress"))
        }
        Ok(run) => {
            *seen = crate::intake::processor::observation(ctx, &run, Utc::now())
                .await
                .ok();
            Attempt::Done(format!("{note}; run is {}", run.completion_state))
        }
        Err(e) if e.status() == Some(404) => Attempt::Done(format!("{note}; run no longer exists")),
        // The note first: whether this attempt's cancel took effect stays known.
        Err(e) => classify(e, &format!("{note}; verify cancel"), retry_after),
    }
}

/// A final 4xx answer to a write that is not about the credentials (401, 403).
fn refused(e: &crate::currents::client::CurrentsError) -> bool {
    matches!(e.status(), Some(s) if (400..500).contains(&s) && !matches!(s, 401 | 403))
        && !e.is_retryable()
        && matches!(e, crate::currents::client::CurrentsError::Api { .. })
}

async fn delete(ctx: &AppContext, a: &ActionRow, retry_after: &mut Option<Duration>) -> Attempt {
    match ctx.currents.delete_run(&a.run_id).await {
        Ok(DeleteOutcome::Deleted(_)) => {
            let _ = ctx.store.mark_run_gone(&a.run_id).await;
            Attempt::Done("deleted".into())
        }
        Ok(DeleteOutcome::AlreadyGone { status, message }) => {
            let _ = ctx.store.mark_run_gone(&a.run_id).await;
            Attempt::Done(format!("already deleted ({status}: {message})"))
        }
        Err(e) => classify(e, "delete", retry_after),
    }
}

/// How long a summary waits for a cancel of its run in flight before it looks again.
pub const CANCEL_IN_FLIGHT_WAIT: Duration = Duration::from_millis(500);

/// The note of a summary postponed for a cancel of its run in flight.
const CANCEL_IN_FLIGHT: &str =
    "a cancel of the run is in flight; the summary waits for its outcome";

/// Which rule cancelled the run, and why, for its summary: `Some(None)` when runwarden
/// did not (or the store cannot say just now), `Some(Some((rule, reason)))` when its own
/// cancel took effect ([`crate::store::Store::cancel_reason`]), and `None` while a
/// cancel of the run is in flight (its request sent, its outcome not written yet; the
/// run's end seen meanwhile): whether runwarden cancelled the run is known once it
/// ends, and the summary waits for that rather than name a rule that did not (the run
/// was over already, a user or CI cancelled it first), or leave out one that did.
async fn who_cancelled(ctx: &AppContext, run_id: &str) -> Option<Option<(String, String)>> {
    // In flight first: a cancel that ends between the two reads is then credited.
    let in_flight = ctx
        .store
        .cancel_under_way(run_id, Utc::now())
        .await
        .unwrap_or(false);
    match ctx.store.cancel_reason(run_id).await {
        Ok(Some(c)) => Some(Some((c.rule, c.reason))),
        _ if in_flight => None,
        _ => Some(None),
    }
}

/// The attempt at a summary whose rule this process's configuration does not have. On a
/// shared store, while the action is younger than
/// [`crate::intake::processor::UNKNOWN_RULE_GRACE`] (from its creation), a replica with a
/// newer configuration (a rolling deploy) may have decided it: postponed, without
/// counting an attempt (retries would use up [`MAX_ATTEMPTS`] within half an hour, and
/// fail it for good, well before the grace ends), by as long as the action is old, between
/// the executor's first and longest backoff, for whichever replica claims it next. Past
/// the grace, or on SQLite, the rule is taken as removed: skipped.
fn unknown_rule(ctx: &AppContext, a: &ActionRow, retry_after: &mut Option<Duration>) -> Attempt {
    let rule_name = a.rule.as_str();
    let now = Utc::now();
    if !crate::intake::processor::unknown_rule_may_be_anothers(&ctx.store, a.created_at, now) {
        return Attempt::Skipped(format!("rule {rule_name:?} no longer exists"));
    }
    let age = (now - a.created_at).to_std().unwrap_or_default();
    let opts = &ctx.executor;
    let wait = age.clamp(opts.backoff_base, opts.backoff_max.max(opts.backoff_base));
    tracing::warn!(
        rule = %rule_name,
        action = %a.action,
        run = %a.run_id,
        retry_in_ms = wait.as_millis() as u64,
        "the action's rule is not in this replica's config; another replica's may have it (a rolling deploy): postponed"
    );
    *retry_after = Some(wait);
    Attempt::Postpone(format!(
        "rule {rule_name:?} is not in this replica's config; another replica's may have it (a rolling deploy): postponed for up to {}h after the action was decided, then skipped",
        crate::intake::processor::UNKNOWN_RULE_GRACE.as_secs() / 3600
    ))
}

async fn summarize(ctx: &AppContext, a: &ActionRow, retry_after: &mut Option<Duration>) -> Attempt {
    let rule_name = a.rule.as_str();
    let Some(rule) = ctx.config.rules.iter().find(|r| r.name == rule_name) else {
        return unknown_rule(ctx, a, retry_after);
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
    // Nothing is read from the API while a cancel of the run is in flight (see below;
    // one store read here, the credit itself is read after the run).
    if ctx
        .store
        .cancel_under_way(&a.run_id, Utc::now())
        .await
        .unwrap_or(false)
    {
        *retry_after = Some(CANCEL_IN_FLIGHT_WAIT);
        return Attempt::Postpone(CANCEL_IN_FLIGHT.into());
    }
    let run = match ctx.currents.get_run(&a.run_id).await {
        Ok(r) => r,
        Err(e) if e.status() == Some(404) => {
            return Attempt::Skipped("run no longer exists".into());
        }
        Err(e) => return classify(e, "read run", retry_after),
    };
    let Some(cancelled_by) = who_cancelled(ctx, &a.run_id).await else {
        *retry_after = Some(CANCEL_IN_FLIGHT_WAIT);
        return Attempt::Postpone(CANCEL_IN_FLIGHT.into());
    };
    let sctx = crate::github::summary::SummaryCtx {
        gh,
        config: &ctx.config,
        rule,
        opts,
        shared: Some(crate::github::summary::SharedLock {
            store: &ctx.store,
            holder: &ctx.worker_id,
        }),
    };
    match crate::github::summary::post_summary(
        &sctx,
        &run,
        &event,
        cancelled_by,
        rule.is_dry_run(ctx.config.dry_run),
    )
    .await
    {
        Ok(report) if report.is_skipped() => Attempt::Skipped(report.to_string()),
        Ok(report) => Attempt::Done(report.to_string()),
        Err(e) if e.retryable && e.held_back => {
            *retry_after = e.retry_after;
            Attempt::Postpone(e.message)
        }
        Err(e) if e.retryable => {
            *retry_after = e.retry_after;
            Attempt::Retry(e.message)
        }
        Err(e) => Attempt::Fail(e.message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_honoured_when_longer_than_the_backoff_and_capped() {
        let opts = ExecutorOptions::default();
        let asked = Duration::from_secs(1200);
        assert_eq!(retry_delay_with(&opts, 0, Some(asked)), asked);
        assert_eq!(
            retry_delay_with(&opts, 0, Some(Duration::from_secs(10 * 3600))),
            MAX_RETRY_AFTER
        );
        // A shorter Retry-After does not shorten the backoff: after 8 attempts its
        // ceiling is 256 s, and the jitter keeps at least half of it.
        for _ in 0..100 {
            let d = retry_delay_with(&opts, 8, Some(Duration::from_millis(1)));
            assert!(d >= Duration::from_secs(128), "{d:?}");
        }
        assert!(retry_delay_with(&opts, 0, None) <= Duration::from_secs(1));
    }
}
