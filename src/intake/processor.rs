//! The event processor: turns stored events (webhooks, polls, schedule slots) into
//! decisions. For each event it reads what the rules need (the run's authoritative state
//! from the Currents API, the in-progress runs of its group from the store or a listing),
//! asks the pure rules engine, and records the decisions together with "event processed"
//! in one transaction — so an event is never half-handled, and a crash before the commit
//! only means the event is processed again (reads are repeatable, decisions deduplicated).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;

use crate::config::RuleKind;
use crate::currents::{CompletionState, CurrentsWebhookPayload, Run, RunFilter};
use crate::github::events::{self, GithubEvent};
use crate::rules::{self, Decision, ProgressSnapshot, RunsView, Trigger};
use crate::server::AppContext;
use crate::store::{Delivery, NewDecision, NewDelivery, RunRecord};

/// How many stored events one pass takes.
const BATCH: i64 = 64;

/// Why an event could not be processed now.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// Try again later (API or store unavailable).
    #[error("{0}")]
    Transient(String),
    /// The event can never be processed (kept, marked processed with the reason).
    #[error("{0}")]
    Permanent(String),
    /// Try again, not before the wait the API asked for (a 429's `Retry-After` longer
    /// than the client sleeps through; at most [`crate::actions::MAX_RETRY_AFTER`]) nor
    /// before the event's own backoff.
    #[error("{0}")]
    Wait(String, Duration),
}

impl From<crate::currents::client::CurrentsError> for ProcessError {
    fn from(e: crate::currents::client::CurrentsError) -> Self {
        use crate::currents::client::CurrentsError;
        // An undecodable 2xx (a truncated body, a proxy's page) may read fine next time.
        let undecodable_success =
            matches!(&e, CurrentsError::Decode { status, .. } if (200..300).contains(status));
        // A 401 or 403 says nothing about the event: an API key being rotated, a
        // permission being granted. The event is retried with its backoff until it is
        // dead-lettered ([`MAX_EVENT_AGE`]), not dropped at once.
        let refused_for_now = matches!(
            &e,
            CurrentsError::Api {
                status: 401 | 403,
                ..
            }
        );
        if let Some(wait) = e.retry_after().filter(|w| !w.is_zero()) {
            ProcessError::Wait(
                format!("Currents API: {e}"),
                wait.min(crate::actions::MAX_RETRY_AFTER),
            )
        } else if e.is_retryable() || undecodable_success || refused_for_now {
            ProcessError::Transient(format!("Currents API: {e}"))
        } else {
            ProcessError::Permanent(format!("Currents API: {e}"))
        }
    }
}

/// [`ProcessError::from`] for an error of a project's listing: a 404 there (a project
/// being set up, or an id Currents does not know yet) is retried like a 401 or 403,
/// with the event's backoff until it is dead-lettered. A 404 on a single run's read
/// stays final (the run is gone).
fn listing_error(e: crate::currents::client::CurrentsError) -> ProcessError {
    if matches!(
        &e,
        crate::currents::client::CurrentsError::Api { status: 404, .. }
    ) {
        ProcessError::Transient(format!("Currents API: {e}"))
    } else {
        e.into()
    }
}

/// Whether a project's listing was refused for good (404, 403): a retention sweep goes
/// on without that project ([`sweep_retention`]).
fn project_refused(e: &crate::currents::client::CurrentsError) -> bool {
    matches!(
        e,
        crate::currents::client::CurrentsError::Api {
            status: 403 | 404,
            ..
        }
    )
}

impl From<crate::store::StoreError> for ProcessError {
    fn from(e: crate::store::StoreError) -> Self {
        ProcessError::Transient(format!("store: {e}"))
    }
}

/// Processes every due stored event once; returns how many were handled.
///
/// Events are decided one after another, in order, while their records are committed
/// beside: when an event is decided and no commit is under way, its record is committed
/// at once; events decided while a commit is under way wait for it and then share the
/// next one. A backlog (after a slow disk moment) thus drains at the pace of the
/// decisions, not of one `fsync` each, and a lone event waits for nothing.
///
/// An event decided while the previous one's record is still committing reads the store
/// as it was before that record (the runs it observed are not there yet). That changes
/// none of its decisions: which runs are in progress comes from the API; a run's progress
/// is compared with an older snapshot, so a change since is still seen, and no change
/// since gives the time the newer snapshot would have given; the snapshots it writes are
/// at least as new; and a decision made twice is stored once (by its action key).
pub async fn process_pending(ctx: &AppContext) -> Result<usize, ProcessError> {
    read_and_process(ctx, &mut HashSet::new()).await
}

/// [`process_pending`], adding the id of every event it handled to `read`.
async fn read_and_process(
    ctx: &AppContext,
    read: &mut HashSet<i64>,
) -> Result<usize, ProcessError> {
    let mut handled = 0;
    loop {
        let batch = ctx.store.next_unprocessed(Utc::now(), BATCH).await?;
        if batch.is_empty() {
            return Ok(handled);
        }
        let n = batch.len();
        read.extend(batch.iter().map(|d| d.id));
        process_batch(ctx, batch).await;
        handled += n;
        if (n as i64) < BATCH {
            return Ok(handled);
        }
    }
}

/// Processes only the stored events `keys` names, `(source, delivery id)`, that are still
/// to be processed, whatever their retry time: the caller says which are due. What
/// `runwarden sweep` does with its own events, which it stores held from other
/// processors ([`crate::store::Store::insert_delivery_held`]) and retries on a schedule
/// of its own, so that it never consumes the events `serve` (or a crashed sweep) left in
/// the store beside the processor that owns them. Returns how many it handled.
pub async fn process_only(
    ctx: &AppContext,
    keys: &[(String, String)],
) -> Result<usize, ProcessError> {
    let mut batch = Vec::new();
    for (source, id) in keys {
        if let Some(d) = ctx.store.find_delivery(source, id).await?
            && d.processed_at.is_none()
        {
            batch.push(d);
        }
    }
    let n = batch.len();
    if n > 0 {
        process_batch(ctx, batch).await;
    }
    Ok(n)
}

/// Decides the events of `batch` in order, committing their records beside (see
/// [`process_pending`]).
async fn process_batch(ctx: &AppContext, batch: Vec<Delivery>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let decide = async move {
        for d in batch {
            if let Some(msg) = decide_one(ctx, d).await
                && tx.send(msg).is_err()
            {
                break;
            }
        }
    };
    tokio::join!(decide, commit_decided(ctx, rx));
}

/// How often `serve`'s processor reads the store although the [`EventFeed`] brings it
/// every new event: for events whose retry time has come, and ones another process
/// stored in the same file.
pub const STORE_READ_INTERVAL: Duration = Duration::from_secs(1);

/// Where `serve`'s processor finds its events ([`process_next`]).
///
/// On SQLite, the events this process stores come through the store's in-memory feed
/// ([`crate::store::Store::fresh_deliveries`]) right after their commit, so that the
/// processor does not read back what was just written; the store is read at the start,
/// whenever the feed missed an event (it was full), and every
/// [`STORE_READ_INTERVAL`]. A fed event that such a read already returned is skipped:
/// the feed's position taken just before the read tells which fed events were committed
/// before it. On PostgreSQL, where other replicas store events too, every pass reads the
/// store.
#[derive(Debug)]
pub struct EventFeed {
    fresh: Option<crate::store::FreshDeliveries>,
    /// When the store was last read whole; `None` before the first read succeeds, and
    /// after one failed (read it before the feed).
    last_store_read: Option<std::time::Instant>,
}

impl EventFeed {
    /// Takes over the store's feed (there is one per store: a second feed replaces it).
    pub fn new(store: &crate::store::Store) -> Self {
        EventFeed {
            fresh: store.fresh_deliveries(),
            last_store_read: None,
        }
    }
}

/// Processes the events that are due: the fed ones, and the stored ones when the store
/// is to be read (see [`EventFeed`]); returns how many were handled.
pub async fn process_next(ctx: &AppContext, feed: &mut EventFeed) -> Result<usize, ProcessError> {
    let Some(fresh) = feed.fresh.as_mut() else {
        return process_pending(ctx).await;
    };
    let mut handled = 0;
    let (missed, position) = fresh.before_store_read();
    let due = feed
        .last_store_read
        .is_none_or(|t| t.elapsed() >= STORE_READ_INTERVAL);
    // Events the store read handled. Those committed before it began are skipped by
    // their feed position; one committed while it went on (batch after batch) can be
    // returned by a later batch of it and be fed too: skipped by its id.
    let mut read = HashSet::new();
    if missed || due {
        feed.last_store_read = None;
        handled += read_and_process(ctx, &mut read).await?;
        feed.last_store_read = Some(std::time::Instant::now());
        fresh.skip_through(position);
    }
    loop {
        // Every event the read handled was committed, so fed, before it ended: the
        // fed ones among them are in the feed now and are dropped here.
        let batch: Vec<Delivery> = std::iter::from_fn(|| fresh.try_next())
            .filter(|d| !read.contains(&d.id))
            .take(BATCH as usize)
            .collect();
        if batch.is_empty() {
            return Ok(handled);
        }
        handled += batch.len();
        process_batch(ctx, batch).await;
    }
}

/// What deciding one event left to commit.
enum ToCommit {
    /// Its record.
    Record(Decided),
    /// Nothing but the processed mark of this delivery (it decided nothing, read no run);
    /// with the time of the poll it was, when it polled every project, and how the sweep
    /// of the schedule slot it was ended.
    Quiet(i64, Option<DateTime<Utc>>, Option<SlotEnd>),
}

/// Events that decided nothing, waiting for their processed mark (with the next record,
/// or together at the end of the batch).
#[derive(Default)]
struct Quiet {
    ids: Vec<i64>,
    /// The latest poll among them that polled every project: once they are marked,
    /// the next poll's look-back starts there ([`advance_last_poll`]).
    polled_at: Option<DateTime<Utc>>,
    /// How the sweeps of the schedule slots among them ended: written to the slots'
    /// records once their marks are committed ([`finish_slot`]).
    slot_ends: Vec<SlotEnd>,
}

impl Quiet {
    fn push(&mut self, id: i64, polled_at: Option<DateTime<Utc>>, slot_end: Option<SlotEnd>) {
        self.ids.push(id);
        self.polled_at = self.polled_at.max(polled_at);
        self.slot_ends.extend(slot_end);
    }

    /// Their marks are committed.
    async fn committed(&mut self, ctx: &AppContext) {
        if let Some(t) = self.polled_at.take() {
            advance_last_poll(ctx, t);
            keep_last_poll(ctx, t).await;
        }
        self.ids.clear();
        for end in std::mem::take(&mut self.slot_ends) {
            finish_slot(ctx, end).await;
        }
    }
}

/// A poll that listed every project (at `at`, its own `now`) has had its decisions
/// committed: the next poll's look-back for runs that started and finished meanwhile
/// starts there ([`recent_finish_start`]). Only then: a poll that fails after its
/// listings (the history listing, the commit of its decisions) made nothing good, and
/// must not shorten the look-back of the next one.
fn advance_last_poll(ctx: &AppContext, at: DateTime<Utc>) {
    let mut last = ctx.last_poll.lock().unwrap_or_else(|e| e.into_inner());
    *last = Some(last.map_or(at, |t| t.max(at)));
}

/// [`advance_last_poll`] in the store too (the watermark
/// [`crate::store::watermarks::LAST_FULL_POLL`]), for the first poll of the next process:
/// after a restart, or a replica taking the poller over, it looks back to this poll, so
/// that the runs that started and finished while no poll ran are made good. A failure
/// to write it is logged: the next process then looks back only its first poll's
/// [`FIRST_POLL_INTERVALS`].
async fn keep_last_poll(ctx: &AppContext, at: DateTime<Utc>) {
    if let Err(e) = ctx
        .store
        .advance_watermark(crate::store::watermarks::LAST_FULL_POLL, at)
        .await
    {
        tracing::warn!(error = %e, "cannot record the last full poll in the store");
    }
}

/// The committer of [`process_pending`]: records whatever has been decided since its
/// last commit, in one commit, up to [`RECORD_GROUP_MAX`] events; events that decided
/// nothing are marked processed with the next record, or together at the end.
async fn commit_decided(ctx: &AppContext, mut rx: tokio::sync::mpsc::UnboundedReceiver<ToCommit>) {
    let mut quiet = Quiet::default();
    let mut group = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                ToCommit::Record(x) => group.push(x),
                ToCommit::Quiet(id, polled_at, slot_end) => quiet.push(id, polled_at, slot_end),
            }
            if group.len() < RECORD_GROUP_MAX {
                next = rx.try_recv().ok();
            }
        }
        if !group.is_empty() {
            record(ctx, std::mem::take(&mut group), &mut quiet).await;
        }
    }
    if !quiet.ids.is_empty() {
        // Not marked: processed again, to the same no-op, next time.
        match ctx
            .store
            .mark_processed_many(&quiet.ids, NOTHING_DONE)
            .await
        {
            Ok(()) => quiet.committed(ctx).await,
            Err(e) => {
                tracing::warn!(events = quiet.ids.len(), error = %e, "cannot mark events processed; they will be read again")
            }
        }
    }
}

/// At most this many events' records in one commit.
pub const RECORD_GROUP_MAX: usize = 32;

/// The "run id" of the record a retention sweep stopped by its circuit breaker leaves in
/// the audit (followed by the schedule slot's delivery id); its outcome is `skipped`.
pub const BREAKER_PREFIX: &str = "breaker-";

/// The outcome note of an event that decided nothing.
const NOTHING_DONE: &str = "0 decision(s)";

/// The outcome note of a poll left to a newer one already waiting (see `newer_poll_waiting`).
pub const SUPERSEDED_POLL: &str = "superseded by a newer poll";

/// The outcome note of a schedule slot's event left to a newer slot of its rule (see
/// `newer_slot_stored`).
pub const SUPERSEDED_SLOT: &str = "superseded by a newer slot";

/// An event decided and not yet recorded.
struct Decided {
    delivery: i64,
    source: String,
    /// When the event arrived.
    received_at: DateTime<Utc>,
    /// Failed processing attempts before this one.
    attempts: i64,
    now: DateTime<Utc>,
    note: String,
    decisions: Vec<NewDecision>,
    runs: Vec<RunRecord>,
    /// A poll that listed every project: its `now` ([`advance_last_poll`]).
    polled_at: Option<DateTime<Utc>>,
    /// A schedule slot's sweep: how it ended, for the slot's record once committed.
    slot_end: Option<SlotEnd>,
}

/// Decides one event. Returns what is to be committed: its record, or only its processed
/// mark when it decided nothing and read no run (most GitHub events, for instance: marked
/// with the next record, or together at the end of the batch). One that failed is marked
/// for its retry (or as skipped) here, and `None` is returned.
async fn decide_one(ctx: &AppContext, d: Delivery) -> Option<ToCommit> {
    if newer_poll_waiting(ctx, &d).await {
        // Its work is the newer poll's, which comes next: no listing, and the look-back
        // stays where the last committed poll left it, for the newer poll to cover.
        tracing::debug!(
            delivery = d.id,
            "a newer poll is waiting: this one is left to it"
        );
        let outcome = match ctx.store.mark_processed(d.id, SUPERSEDED_POLL).await {
            Ok(()) => "superseded",
            // Read again, and superseded then.
            Err(e) => {
                tracing::warn!(delivery = d.id, error = %e, "cannot mark a superseded poll processed; it will be read again");
                "retry"
            }
        };
        ctx.metrics.inc(
            "runwarden_events_processed_total",
            &[("source", &d.source), ("result", outcome)],
        );
        return None;
    }
    if let Some(newer) = newer_slot_stored(ctx, &d).await {
        supersede_slot(ctx, &d, newer).await;
        return None;
    }
    let now = Utc::now();
    let mut seen = Observed::default();
    let result = decide_event(ctx, &d, now, &mut seen).await;
    let outcome = match result {
        Ok(decisions) => {
            let skipped = std::mem::take(&mut seen.skipped);
            // Written to the slot's record only once the event's decisions are committed
            // (`record`, `Quiet::committed`): until then the sweep has not ended.
            let slot_end = slot_end(&d, &decisions, &skipped);
            let n = decisions.len();
            let polled_at = seen.polled_at;
            let runs = seen.into_records();
            if n > 0 || !runs.is_empty() || !skipped.is_empty() {
                // The decisions are moved into their records (a sweep may decide thousands).
                let decisions = to_new_decisions(decisions, &d, now);
                // A project left out for good is told first, as an event skipped is
                // (`skipped: WHY`): `runwarden sweep` then exits 1 and says why.
                let note = if skipped.is_empty() {
                    format!("{n} decision(s)")
                } else {
                    format!(
                        "skipped: {}; {n} decision(s) for the other projects",
                        skipped.join("; ")
                    )
                };
                return Some(ToCommit::Record(Decided {
                    delivery: d.id,
                    source: d.source,
                    received_at: d.received_at,
                    attempts: d.attempts,
                    now,
                    note,
                    decisions,
                    runs,
                    polled_at,
                    slot_end,
                }));
            }
            ctx.metrics.inc(
                "runwarden_events_processed_total",
                &[("source", &d.source), ("result", "ok")],
            );
            return Some(ToCommit::Quiet(d.id, polled_at, slot_end));
        }
        Err(error @ (ProcessError::Transient(_) | ProcessError::Wait(..))) => {
            let mut backoff = retry_backoff_secs(d.attempts);
            if let ProcessError::Wait(_, wait) = &error {
                // Not sooner than the API asked: an attempt inside the window would
                // meet the same 429 (and prolong it).
                backoff = backoff.max(wait.as_secs_f64().ceil() as i64);
            }
            let e = error.to_string();
            let retry_at = now + chrono::Duration::seconds(backoff);
            match give_up_on(&ctx.config, &d, retry_at) {
                None => {
                    tracing::warn!(delivery = d.id, source = %d.source, "event processing failed, retrying in {backoff}s: {e}");
                    let _ = ctx.store.mark_delivery_failed(d.id, &e, retry_at).await;
                    "retry"
                }
                Some(GiveUp::NextPoll) => {
                    tracing::warn!(
                        delivery = d.id,
                        "poll failed; the next poll does its work: {e}"
                    );
                    let _ = ctx
                        .store
                        .mark_processed(d.id, &format!("failed: {e}; the next poll does its work"))
                        .await;
                    "superseded"
                }
                Some(GiveUp::TooOld) => {
                    tracing::error!(delivery = d.id, source = %d.source, event = %d.event, attempts = d.attempts + 1, "gave up on an event still failing {}h after it arrived: {e}", MAX_EVENT_AGE.as_secs() / 3600);
                    let _ = ctx.store.dead_letter_delivery(d.id, &e).await;
                    "dead_letter"
                }
            }
        }
        Err(ProcessError::Permanent(e)) => {
            tracing::warn!(delivery = d.id, source = %d.source, "event cannot be processed: {e}");
            let _ = ctx
                .store
                .mark_processed(d.id, &format!("skipped: {e}"))
                .await;
            "skipped"
        }
    };
    ctx.metrics.inc(
        "runwarden_events_processed_total",
        &[("source", &d.source), ("result", outcome)],
    );
    None
}

/// How the sweep of a schedule slot ended, for the slot's row (shown on the status page).
struct SlotEnd {
    rule: String,
    slot: DateTime<Utc>,
    summary: String,
}

/// The rule and slot a `schedule` event stands for (its payload; manual sweeps have no
/// slot).
#[derive(serde::Deserialize)]
struct SlotPayload {
    rule: String,
    slot: DateTime<Utc>,
}

fn slot_payload(d: &Delivery) -> Option<SlotPayload> {
    if d.source != "schedule" {
        return None;
    }
    serde_json::from_str::<SlotPayload>(&d.payload).ok()
}

/// How the sweep of the schedule slot `d` is (if it is one) ended: how many runs it
/// decided to delete, or why its circuit breaker stopped it, and which projects it left
/// out (`skipped`, refused for good).
fn slot_end(d: &Delivery, decisions: &[Decision], skipped: &[String]) -> Option<SlotEnd> {
    let slot = slot_payload(d)?;
    let mut summary = match decisions
        .iter()
        .find(|x| x.run_id.starts_with(BREAKER_PREFIX))
    {
        Some(breaker) => breaker.reason.clone(),
        None => {
            let n = decisions.len();
            let dry = decisions.iter().any(|x| x.dry_run);
            format!(
                "{n} run{} to delete{}",
                if n == 1 { "" } else { "s" },
                if dry { " (dry run)" } else { "" }
            )
        }
    };
    if !skipped.is_empty() {
        summary.push_str(&format!("; skipped {}", skipped.join("; ")));
    }
    Some(SlotEnd {
        rule: slot.rule,
        slot: slot.slot,
        summary,
    })
}

/// Records how the sweep of a schedule slot ended (the slot's row, shown on the status
/// page), once the event's decisions (or its processed mark) are committed. A failure to
/// write it is logged and changes nothing else (it is information; the decisions are
/// recorded with the event).
async fn finish_slot(ctx: &AppContext, end: SlotEnd) {
    if let Err(e) = ctx
        .store
        .finish_slot(&end.rule, end.slot, &end.summary)
        .await
    {
        tracing::warn!(rule = %end.rule, error = %e, "cannot record how a schedule slot's sweep ended");
    }
}

/// Whether `d` is the event of a schedule slot (`slot:RULE:TS`) of which a newer slot of
/// the same rule has fired since (its event stored, the slot recorded): that slot's
/// sweep, on the listing as it is then, does all this one would (a sweep works on the
/// current listing, not on the slot's time), so this one is not swept. Without this,
/// slots whose sweeps fail during an outage (each retried for [`MAX_EVENT_AGE`]) pile up
/// and then sweep one after another, each listing every run. Returns the newer slot.
///
/// Only a newer slot whose time has come on this process's clock counts (not another
/// replica's clock running ahead); a store that cannot say is taken as "no": the slot
/// is swept.
async fn newer_slot_stored(ctx: &AppContext, d: &Delivery) -> Option<DateTime<Utc>> {
    if d.event != "sweep"
        || !d
            .delivery_id
            .starts_with(crate::intake::schedules::SLOT_PREFIX)
        || is_preview(d)
    {
        return None;
    }
    let slot = slot_payload(d)?;
    let newest = ctx.store.last_slot(&slot.rule).await.ok()??;
    if newest <= slot.slot || newest > Utc::now() {
        return None;
    }
    let id = crate::intake::schedules::slot_delivery_id(&slot.rule, newest);
    match ctx.store.find_delivery("schedule", &id).await {
        Ok(Some(newer)) if newer.event == "sweep" => Some(newest),
        _ => None,
    }
}

/// Marks the slot event `d` superseded by the newer slot `newer` of its rule
/// ([`newer_slot_stored`]), without a listing; its slot's record says so (and no
/// deletions).
async fn supersede_slot(ctx: &AppContext, d: &Delivery, newer: DateTime<Utc>) {
    tracing::info!(
        delivery = d.id,
        newer = %newer,
        "a newer slot of the rule has fired: this slot's sweep is left to it"
    );
    let outcome = match ctx.store.mark_processed(d.id, SUPERSEDED_SLOT).await {
        Ok(()) => {
            if let Some(slot) = slot_payload(d) {
                let summary = format!(
                    "superseded by the slot of {}, whose sweep covers it; swept nothing",
                    newer.format("%Y-%m-%d %H:%M UTC")
                );
                finish_slot(
                    ctx,
                    SlotEnd {
                        rule: slot.rule,
                        slot: slot.slot,
                        summary,
                    },
                )
                .await;
            }
            "superseded"
        }
        // Read again, and superseded then.
        Err(e) => {
            tracing::warn!(delivery = d.id, error = %e, "cannot mark a superseded slot processed; it will be read again");
            "retry"
        }
    };
    ctx.metrics.inc(
        "runwarden_events_processed_total",
        &[("source", &d.source), ("result", outcome)],
    );
}

/// Seconds before an event that failed `attempts` times already is processed again:
/// 1, 2, 4, ... up to 256 (from the ninth failure on).
pub fn retry_backoff_secs(attempts: i64) -> i64 {
    2i64.saturating_pow(attempts.clamp(0, 8) as u32)
}

/// How long an event whose processing keeps failing (the API down, the store
/// unavailable) is retried, counted from its arrival: then it is dead-lettered (kept in
/// the store with its error, outcome `dead-letter`, logged at ERROR). Polling
/// reconciles what a lost webhook would have shown.
pub const MAX_EVENT_AGE: Duration = Duration::from_secs(24 * 3600);

/// Why a failed event is not retried ([`give_up_on`]).
enum GiveUp {
    /// A poll whose retry would come after the next poll, which does all its work.
    NextPoll,
    /// Older than [`MAX_EVENT_AGE`].
    TooOld,
}

/// Whether the event `d`, failed now, is not to be retried at `retry_at`.
fn give_up_on(
    config: &crate::config::Config,
    d: &Delivery,
    retry_at: DateTime<Utc>,
) -> Option<GiveUp> {
    let interval = config.currents.poll_interval;
    if d.source == "poll"
        && d.event == "poll"
        && d.delivery_id
            .starts_with(crate::intake::poller::SLOT_PREFIX)
        && !interval.is_zero()
        && chrono::Duration::from_std(interval)
            .ok()
            .and_then(|i| d.received_at.checked_add_signed(i))
            .is_some_and(|next| retry_at >= next)
    {
        return Some(GiveUp::NextPoll);
    }
    let max_age = chrono::Duration::from_std(MAX_EVENT_AGE).unwrap_or(chrono::Duration::days(1));
    (retry_at - d.received_at > max_age).then_some(GiveUp::TooOld)
}

/// Records decided events in one transaction (with the `quiet` ones before them), hands
/// their new due actions to this process's executor and reports their decisions. When a
/// group of several cannot be written, each is tried alone, so that one bad record does
/// not hold back the others.
async fn record(ctx: &AppContext, group: Vec<Decided>, quiet: &mut Quiet) {
    if group.is_empty() {
        return;
    }
    // New actions that are due go straight to this process's executor, as many as it has
    // free slots: leased in the same transaction, no separate claim.
    let claim_for = ctx.handoff.free_slots().map(|max| crate::store::Claim {
        worker_id: &ctx.worker_id,
        lease: ctx.executor.lease,
        max,
    });
    // The leases start now, at the record, not when the events were decided: a slow
    // decision (a long retention listing) must not hand the executor actions whose lease
    // has already run out, which another replica could claim while this one acts.
    let recorded_at = Utc::now();
    let records: Vec<crate::store::EventRecord<'_>> = group
        .iter()
        .enumerate()
        .map(|(i, e)| crate::store::EventRecord {
            delivery_id: e.delivery,
            note: &e.note,
            quiet: if i == 0 { quiet.ids.as_slice() } else { &[] },
            decisions: &e.decisions,
            runs: &e.runs,
            now: e.now.max(recorded_at),
            claim_for,
        })
        .collect();
    let result = ctx.store.record_events(&records).await;
    drop(records);
    match result {
        Ok(recorded) => {
            quiet.committed(ctx).await;
            if let Some(t) = group.iter().filter_map(|e| e.polled_at).max() {
                keep_last_poll(ctx, t).await;
            }
            let mut again = Vec::new();
            for (mut e, r) in group.into_iter().zip(recorded) {
                // Only now that its decisions are committed: a slot's record never says
                // its sweep ended while what it decided may still be lost.
                let slot_end = e.slot_end.take();
                again.extend(recorded_one(ctx, e, r));
                if let Some(end) = slot_end {
                    finish_slot(ctx, end).await;
                }
            }
            retry_failed(ctx, again).await;
        }
        Err(e) if group.len() > 1 => {
            tracing::debug!(events = group.len(), error = %e, "cannot record a group of events; recording them one by one");
            for one in group {
                Box::pin(record(ctx, vec![one], quiet)).await;
            }
        }
        Err(e) => {
            for one in group {
                // Decided again at the retry: backed off like a failed decision, so that
                // a record that keeps failing (a full disk) does not repeat a retention
                // listing every few seconds.
                let backoff = retry_backoff_secs(one.attempts);
                let retry_at = one.now + chrono::Duration::seconds(backoff);
                let max_age =
                    chrono::Duration::from_std(MAX_EVENT_AGE).unwrap_or(chrono::Duration::days(1));
                let result = if retry_at - one.received_at > max_age {
                    tracing::error!(delivery = one.delivery, source = %one.source, attempts = one.attempts + 1, "gave up on an event whose decisions could not be recorded for {}h: {e}", MAX_EVENT_AGE.as_secs() / 3600);
                    let _ = ctx
                        .store
                        .dead_letter_delivery(one.delivery, &e.to_string())
                        .await;
                    "dead_letter"
                } else {
                    tracing::warn!(delivery = one.delivery, error = %e, "cannot record decisions; will retry in {backoff}s");
                    let _ = ctx
                        .store
                        .mark_delivery_failed(one.delivery, &e.to_string(), retry_at)
                        .await;
                    "retry"
                };
                ctx.metrics.inc(
                    "runwarden_events_processed_total",
                    &[("source", &one.source), ("result", result)],
                );
            }
        }
    }
}

/// Actions that had failed for good and that their retention rule decided again: back in
/// the queue. A delete that failed in last night's sweep is tried in tonight's, instead
/// of staying failed for as long as the run exists; a cancel is not re-armed by the next
/// poll (that would be a retry a minute for a failure that stays; `sweep` retries those).
async fn retry_failed(ctx: &AppContext, ids: Vec<(i64, DateTime<Utc>)>) {
    let mut any = false;
    for (id, received_at) in ids {
        // Only a failure from before this event arrived: processing the event that first
        // decided the action again (at least once) does not re-arm it.
        match ctx
            .store
            .retry_failed_before(id, Some(received_at), Utc::now())
            .await
        {
            Ok(true) => {
                any = true;
                tracing::info!(
                    action = id,
                    "a failed action was decided again by its retention rule: trying it again"
                );
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(action = id, error = %e, "cannot queue a failed action again"),
        }
    }
    if any {
        ctx.wake_executor.notify_one();
    }
}

/// After one event's record is committed: metrics, the decision log lines and bot events,
/// and its leased actions to the executor. Returns the actions that retention rules
/// decided again (for [`retry_failed`]).
fn recorded_one(
    ctx: &AppContext,
    e: Decided,
    r: crate::store::EventRecorded,
) -> Vec<(i64, DateTime<Utc>)> {
    let mut again = Vec::new();
    if let Some(at) = e.polled_at {
        advance_last_poll(ctx, at);
    }
    let crate::store::EventRecorded {
        decisions: recorded,
        claimed,
    } = r;
    for (dec, rec) in e.decisions.into_iter().zip(recorded.iter()) {
        // A repeated decision is only told (for `sweep`'s report), not counted or logged
        // again.
        if !rec.new_decision
            && !dec.dry_run
            && dec.kind == "retention"
            && let Some(id) = rec.action_id
        {
            again.push((id, e.received_at));
        }
        if rec.new_decision {
            ctx.metrics.inc(
                "runwarden_decisions_total",
                &[
                    ("rule", &dec.rule),
                    ("action", &dec.action),
                    ("dry_run", if dec.dry_run { "true" } else { "false" }),
                ],
            );
            tracing::info!(rule = %dec.rule, action = %dec.action, run = %dec.run_id, dry_run = dec.dry_run, "decision: {}", dec.reason);
        }
        ctx.events.send(crate::server::BotEvent::Decided {
            decision_id: rec.decision_id,
            action_id: rec.action_id,
            repeated: !rec.new_decision,
            rule: dec.rule,
            kind: dec.kind,
            action: dec.action,
            run_id: dec.run_id,
            branch: dec.branch,
            reason: dec.reason,
            dry_run: dec.dry_run,
        });
    }
    let handed = claimed.len();
    if handed > 0 {
        ctx.metrics.add(
            "runwarden_actions_handed_over_total",
            String::new(),
            handed as u64,
        );
    }
    ctx.handoff.send(claimed);
    if recorded.iter().filter(|r| r.new_action).count() > handed {
        ctx.wake_executor.notify_one();
    }
    ctx.metrics.inc(
        "runwarden_events_processed_total",
        &[("source", &e.source), ("result", "ok")],
    );
    again
}

/// The Currents event a summary decision is about (its reason names it).
fn summary_event(dec: &Decision) -> Option<String> {
    crate::currents::RUN_EVENTS
        .iter()
        .find(|e| dec.reason.contains(*e))
        .map(|e| e.to_string())
}

fn to_new_decisions(
    decisions: Vec<Decision>,
    d: &Delivery,
    now: DateTime<Utc>,
) -> Vec<NewDecision> {
    decisions
        .into_iter()
        .map(|dec| {
            let (action_key, payload) = match dec.action {
                rules::Action::Summarize => {
                    let event = summary_event(&dec).unwrap_or_else(|| d.event.clone());
                    (
                        format!("summarize:{}:{}:{}", dec.rule, dec.run_id, event),
                        Some(serde_json::json!({ "event": event, "received_at": d.received_at.timestamp_millis() }).to_string()),
                    )
                }
                a => (
                    format!("{}:{}", a.as_str(), dec.run_id),
                    Some(serde_json::json!({ "received_at": d.received_at.timestamp_millis() }).to_string()),
                ),
            };
            // A circuit breaker's record: nothing to carry out.
            let skip = dec
                .run_id
                .starts_with(BREAKER_PREFIX)
                .then(|| dec.reason.clone());
            NewDecision {
                skip,
                at: now,
                rule: dec.rule,
                kind: dec.kind.to_string(),
                action: dec.action.as_str().to_string(),
                run_id: dec.run_id,
                project_id: dec.project_id,
                branch: dec.branch,
                sha: dec.sha,
                reason: dec.reason,
                dry_run: dec.dry_run,
                not_before: dec.not_before,
                action_key,
                payload,
            }
        })
        .collect()
}

/// Reads what the rules need for one event and evaluates them. The decisions of a
/// preview (an event a `sweep --dry-run` stored, [`PREVIEW_KEY`]) are dry runs whoever
/// processes it: `serve` on the same store, or a later sweep when the dry run left it
/// unprocessed (SPEC §6: dry run mutates nothing anywhere).
async fn decide_event(
    ctx: &AppContext,
    d: &Delivery,
    now: DateTime<Utc>,
    seen: &mut Observed,
) -> Result<Vec<Decision>, ProcessError> {
    let mut decisions = decide_event_as_configured(ctx, d, now, seen).await?;
    if matches!(d.source.as_str(), "poll" | "schedule") && is_preview(d) {
        for x in &mut decisions {
            x.dry_run = true;
        }
    }
    Ok(decisions)
}

/// [`decide_event`] with each rule's own `dry_run`.
async fn decide_event_as_configured(
    ctx: &AppContext,
    d: &Delivery,
    now: DateTime<Utc>,
    seen: &mut Observed,
) -> Result<Vec<Decision>, ProcessError> {
    match d.source.as_str() {
        "currents" => currents_event(ctx, d, now, seen).await,
        "github" => github_event(ctx, d, now, seen).await,
        "schedule" => schedule_event(ctx, d, now, seen).await,
        "poll" if d.event != "poll" => run_end_event(ctx, d, now),
        "poll" => {
            let scope = PollScope {
                rule: None,
                preview: is_preview(d),
            };
            poll_event_in(ctx, now, seen, scope).await
        }
        other => Err(ProcessError::Permanent(format!(
            "unknown event source {other:?}"
        ))),
    }
}

/// Runs read while deciding one event, remembered together with its decisions (one
/// commit for the event instead of one per run). A run observed twice keeps its latest
/// observation.
#[derive(Debug, Default)]
pub struct Observed {
    runs: Vec<RunRecord>,
    /// Set by a whole poll that listed every project: its `now`, where the next poll's
    /// look-back starts once this one's decisions are committed.
    polled_at: Option<DateTime<Utc>>,
    /// Projects a retention sweep left out, refused for good, each with why.
    skipped: Vec<String>,
}

impl Observed {
    fn get(&self, run_id: &str) -> Option<&RunRecord> {
        self.runs.iter().find(|r| r.run_id == run_id)
    }

    /// Takes over what `other` noted (runs of other projects).
    fn absorb(&mut self, other: Observed) {
        for rec in other.runs {
            self.put(rec);
        }
    }

    /// Drops what was noted of a run: it is not written.
    fn forget(&mut self, run_id: &str) {
        self.runs.retain(|r| r.run_id != run_id);
    }

    fn put(&mut self, rec: RunRecord) {
        match self.runs.iter_mut().find(|r| r.run_id == rec.run_id) {
            Some(slot) => *slot = rec,
            None => self.runs.push(rec),
        }
    }

    /// The records to write.
    pub fn into_records(self) -> Vec<RunRecord> {
        self.runs
    }
}

/// Notes a run and its progress in `seen` (written when the event's decisions are);
/// returns the progress snapshot, computed against the latest observation: `seen`'s,
/// else the store's.
async fn observe_run(
    ctx: &AppContext,
    seen: &mut Observed,
    run: &Run,
    now: DateTime<Utc>,
) -> Result<ProgressSnapshot, ProcessError> {
    let stored = match seen.get(&run.run_id) {
        Some(_) => None,
        None => ctx.store.get_run(&run.run_id).await?,
    };
    Ok(observe_after(seen, stored.as_ref(), run, now))
}

/// [`observe_run`] with the store's record of the run already read (`None`: unknown, or
/// `seen` holds the run).
fn observe_after(
    seen: &mut Observed,
    stored: Option<&RunRecord>,
    run: &Run,
    now: DateTime<Utc>,
) -> ProgressSnapshot {
    let (snap, rec) = run_record(seen.get(&run.run_id).or(stored), run, now);
    seen.put(rec);
    snap
}

/// Notes a run in `seen` without reading the store's record of it, for a run whose
/// progress snapshot no rule will read: only timeout rules read one, and only for the run
/// of a `RunSeen` trigger and the runs of a `Tick` ([`rules::RunsView::progress`]). The
/// record written keeps the stored time of the last progress while the completed-spec
/// count is unchanged: the store merges it ([`crate::store::Store::upsert_run`]).
fn note_run(seen: &mut Observed, run: &Run, now: DateTime<Utc>) {
    let (_, rec) = run_record(seen.get(&run.run_id), run, now);
    seen.put(rec);
}

/// Remembers a run and its progress now (its own commit); returns the progress snapshot.
pub async fn remember_run(
    ctx: &AppContext,
    run: &Run,
    now: DateTime<Utc>,
) -> Result<ProgressSnapshot, ProcessError> {
    let prev = ctx.store.get_run(&run.run_id).await?;
    let (snap, rec) = run_record(prev.as_ref(), run, now);
    ctx.store.upsert_run(&rec).await?;
    Ok(snap)
}

/// The record that remembers `run` as observed at `now` (its progress measured against
/// the store's last observation), for a write the caller makes, e.g. with an action's
/// outcome ([`crate::store::Store::complete_action_with_run`]).
pub async fn observation(
    ctx: &AppContext,
    run: &Run,
    now: DateTime<Utc>,
) -> Result<RunRecord, ProcessError> {
    let prev = ctx.store.get_run(&run.run_id).await?;
    Ok(run_record(prev.as_ref(), run, now).1)
}

/// The record of `run` observed at `now` after `prev` (its stored record, if any), and
/// its progress snapshot: what the intake writes to the store's runs table.
pub fn run_record(
    prev: Option<&RunRecord>,
    run: &Run,
    now: DateTime<Utc>,
) -> (ProgressSnapshot, RunRecord) {
    let prev_snap = prev.map(|p| ProgressSnapshot {
        completed_specs: p.completed_specs as u64,
        changed_at: p.progress_changed_at,
    });
    let snap = rules::update_progress(prev_snap.as_ref(), run, now);
    let rec = RunRecord {
        run_id: run.run_id.clone(),
        project_id: run.project_id.clone(),
        branch: run.branch().map(str::to_string),
        sha: run.sha().map(str::to_string),
        created_at: run.created_at,
        completion_state: run.completion_state.as_str().to_string(),
        status: run.status.as_str().to_string(),
        json: serde_json::to_string(run).unwrap_or_default(),
        completed_specs: snap.completed_specs as i64,
        progress_changed_at: snap.changed_at,
        duration_ms: run.duration_ms.map(|d| d as i64),
        updated_at: now,
    };
    (snap, rec)
}

fn run_of(rec: &RunRecord) -> Option<Run> {
    serde_json::from_str(&rec.json).ok()
}

/// The in-progress runs the store knows for a project (and branch), with snapshots.
async fn known_in_progress(
    ctx: &AppContext,
    project: Option<&str>,
    branch: Option<&str>,
) -> Result<(Vec<Run>, HashMap<String, ProgressSnapshot>), ProcessError> {
    let recs = ctx.store.in_progress_runs(project, branch).await?;
    let mut runs = Vec::with_capacity(recs.len());
    let mut progress = HashMap::new();
    for r in &recs {
        if let Some(run) = run_of(r) {
            progress.insert(
                r.run_id.clone(),
                ProgressSnapshot {
                    completed_specs: r.completed_specs as u64,
                    changed_at: r.progress_changed_at,
                },
            );
            runs.push(run);
        }
    }
    Ok((runs, progress))
}

/// Duration history for `max_duration = "auto"` of the groups of the runs of `runs` that
/// such a rule can apply to (in progress, selected by its filter): the store's
/// record of completed passed runs, topped up from one API listing (one page of the
/// newest passed runs of the branch) when the store knows fewer than the minimum. The
/// listing is kept in memory per group for [`HISTORY_REFRESH`], and not written to the
/// store: a run recorded there counts as seen, and a poll would then no longer report
/// the end of one whose webhooks were missed (its summary).
async fn history_for(
    ctx: &AppContext,
    runs: &[Run],
) -> Result<HashMap<String, Vec<Duration>>, ProcessError> {
    let auto_rules: Vec<&crate::config::Rule> = ctx
        .config
        .rules
        .iter()
        .filter(|r| {
            matches!(&r.kind, RuleKind::Timeout(t) if t.max_duration == Some(crate::config::MaxDuration::Auto))
        })
        .collect();
    let mut out = HashMap::new();
    // Only a run an auto timeout can apply to reads its history (`rules::timeout`
    // checks runs in progress that its filter selects): a finished run, or one no such
    // rule selects, costs no listing.
    let wanted = runs
        .iter()
        .filter(|run| run.is_in_progress() && auto_rules.iter().any(|r| r.filter.matches(run)));
    for run in wanted {
        let key = rules::history_key(run);
        if out.contains_key(&key) {
            continue;
        }
        let mut samples = ctx
            .store
            .passed_history(&run.project_id, run.branch(), rules::HISTORY_WINDOW as i64)
            .await?;
        if samples.len() < rules::HISTORY_MIN_SAMPLES {
            let cached = {
                let cache = ctx.history_cache.lock().unwrap_or_else(|e| e.into_inner());
                cache
                    .get(&key)
                    .filter(|h| h.at.elapsed() < HISTORY_REFRESH)
                    .map(|h| h.runs.clone())
            };
            let listed = match cached {
                Some(listed) => listed,
                None => {
                    let listed = list_history(ctx, run, &key).await?;
                    remember_history_lookup(
                        &mut ctx.history_cache.lock().unwrap_or_else(|e| e.into_inner()),
                        &key,
                        HistoryLookup {
                            at: std::time::Instant::now(),
                            runs: listed.clone(),
                        },
                    );
                    listed
                }
            };
            for l in listed {
                if !samples.iter().any(|s| s.run_id == l.run_id) {
                    samples.push(l);
                }
            }
            samples.sort_by(|a, b| (b.created_at_ms, &b.run_id).cmp(&(a.created_at_ms, &a.run_id)));
            samples.truncate(rules::HISTORY_WINDOW);
        }
        out.insert(
            key,
            samples
                .into_iter()
                .map(|s| Duration::from_millis(s.duration_ms.max(0) as u64))
                .collect(),
        );
    }
    Ok(out)
}

/// One page of the newest completed, passed runs of `run`'s project and branch, those of
/// its history group `key`. A listing that may work next time (the API down, a rate
/// limit) fails the event, which is tried again, and is not remembered: its retry (or
/// the next poll) lists again. One refused for good (a 4xx) is an empty listing,
/// remembered so that it is not asked again for an hour, and the history is what the
/// store knows (`fallback` below the minimum): one branch's history must not stop the
/// poll of every run, nor the events of that branch.
async fn list_history(
    ctx: &AppContext,
    run: &Run,
    key: &str,
) -> Result<Vec<crate::store::PassedRun>, ProcessError> {
    let filter = RunFilter {
        branches: run
            .branch()
            .map(|b| vec![b.to_string()])
            .unwrap_or_default(),
        status: vec![crate::currents::RunStatus::Passed],
        completion_state: vec![CompletionState::Complete],
        limit: Some(50),
        ..RunFilter::default()
    };
    let page = match ctx
        .currents
        .list_runs_page(&run.project_id, &filter, None)
        .await
    {
        Ok(page) => page,
        Err(e) => match ProcessError::from(e) {
            ProcessError::Permanent(why) => {
                tracing::warn!(project = %run.project_id, branch = run.branch().unwrap_or_default(), "cannot list the run history for max_duration = \"auto\"; using the runs the store knows for an hour: {why}");
                return Ok(Vec::new());
            }
            transient => return Err(transient),
        },
    };
    Ok(page
        .items
        .iter()
        .filter(|r| {
            rules::history_key(r) == key
                && !r.is_deleted()
                && r.completion_state == CompletionState::Complete
                && r.status == crate::currents::RunStatus::Passed
        })
        .filter_map(|r| {
            Some(crate::store::PassedRun {
                run_id: r.run_id.clone(),
                created_at_ms: r.created_at.timestamp_millis(),
                duration_ms: r.duration_ms? as i64,
            })
        })
        .collect())
}

/// A history listing from the API (`history_for`): when it was made, and the passed
/// runs it gave.
#[derive(Debug, Clone)]
pub struct HistoryLookup {
    pub at: std::time::Instant,
    pub runs: Vec<crate::store::PassedRun>,
}

/// How long a history listing from the API is trusted before it is read again.
pub const HISTORY_REFRESH: Duration = Duration::from_secs(3600);

/// Size of the history lookup cache past which its stale entries are dropped.
const HISTORY_CACHE_TRIM: usize = 1024;

/// Keeps the history listing of `key`. Only listings younger than [`HISTORY_REFRESH`]
/// mean anything: once the cache reaches [`HISTORY_CACHE_TRIM`] entries, the older ones
/// are forgotten (it would otherwise keep one entry per branch ever seen).
fn remember_history_lookup(
    cache: &mut HashMap<String, HistoryLookup>,
    key: &str,
    lookup: HistoryLookup,
) {
    let now = lookup.at;
    if cache.len() >= HISTORY_CACHE_TRIM {
        cache.retain(|_, h| now.saturating_duration_since(h.at) < HISTORY_REFRESH);
    }
    cache.insert(key.to_string(), lookup);
}

async fn currents_event(
    ctx: &AppContext,
    d: &Delivery,
    now: DateTime<Utc>,
    seen: &mut Observed,
) -> Result<Vec<Decision>, ProcessError> {
    let payload: CurrentsWebhookPayload = serde_json::from_str(&d.payload)
        .map_err(|e| ProcessError::Permanent(format!("stored payload unreadable: {e}")))?;
    let run_id = payload
        .run_id()
        .ok_or_else(|| ProcessError::Permanent("runUrl has no run id".into()))?;
    // Authoritative state: read the run back.
    let run = match ctx.currents.get_run(&run_id).await {
        Ok(r) => r,
        Err(e) if e.status() == Some(404) => {
            let _ = ctx.store.mark_run_gone(&run_id).await;
            return Err(ProcessError::Permanent(format!("run {run_id} not found")));
        }
        Err(e) => return Err(e.into()),
    };
    if !ctx.config.currents.projects.contains(&run.project_id) {
        return Err(ProcessError::Permanent(format!(
            "run {run_id} belongs to project {} which is not configured",
            run.project_id
        )));
    }
    // Webhooks are hints (SPEC §6): the rules see the event the run's state, as just read,
    // implies. Actions are keyed by run and event, so a webhook that arrives before the
    // API shows its change, or out of order, would otherwise spend the run's action for
    // that event on a stale state: a summary "Passed" for a run still running (and the
    // true RUN_FINISH then a duplicate), or a pending status after the final one. A late
    // RUN_START for a finished run reads as its final event (acted on once); an early
    // end is read again later, with the delivery's backoff, until the API shows it.
    let event = event_for(&run);
    if event == "RUN_START" && d.event != "RUN_START" {
        return Err(ProcessError::Transient(format!(
            "{} received for run {run_id}, but the API still shows it in progress",
            d.event
        )));
    }
    let snap = observe_run(ctx, seen, &run, now).await?;
    let (mut runs, mut progress) =
        known_in_progress(ctx, Some(&run.project_id), run.branch()).await?;
    // The store may not know every in-progress run of the branch (a missed webhook, a
    // fresh store): one listing of the branch's in-progress runs settles it. The run of
    // the event supersedes whatever its state (a fast newer run may have finished), so
    // the rule's `statuses` and `completion_states` are not asked of it here.
    let supersede =
        ctx.config.rules.iter().any(|r| {
            matches!(r.kind, RuleKind::Supersede(_)) && r.filter.matches_ignoring_state(&run)
        });
    if supersede && let Some(branch) = run.branch() {
        let listing = Listing {
            project: &run.project_id,
            branch: Some(branch),
            skip: Some(&run.run_id),
            now,
        };
        list_project_in_progress(ctx, seen, listing, &mut runs).await?;
    }
    runs.retain(|r| r.run_id != run.run_id);
    runs.push(run.clone());
    progress.insert(run.run_id.clone(), snap);
    let history = history_for(ctx, std::slice::from_ref(&run)).await?;
    let view = RunsView::new(&runs, &progress, &history);
    let trigger = Trigger::RunSeen {
        run,
        event: Some(event.to_string()),
    };
    Ok(rules::evaluate(&ctx.config, &trigger, &view, now).decisions)
}

/// What [`list_project_in_progress`] lists.
#[derive(Debug, Clone, Copy)]
struct Listing<'a> {
    project: &'a str,
    /// Only this branch (`None`: every branch).
    branch: Option<&'a str>,
    /// A run the caller already holds in full.
    skip: Option<&'a str>,
    now: DateTime<Utc>,
}

/// Lists the in-progress runs of a project (of one branch, when given), notes them in
/// `seen` and merges them into `runs`: a listed run replaces a known copy, and a known
/// run of that project (and branch) the listing does not show is dropped (it ended). Their
/// progress is not measured ([`note_run`]): the callers' triggers (a push, a branch
/// deleted, a workflow run completed, and the other runs of a `RunSeen`'s branch) have
/// no rule that reads it.
async fn list_project_in_progress(
    ctx: &AppContext,
    seen: &mut Observed,
    Listing {
        project,
        branch,
        skip,
        now,
    }: Listing<'_>,
    runs: &mut Vec<Run>,
) -> Result<(), ProcessError> {
    let filter = RunFilter {
        branches: branch.map(|b| vec![b.to_string()]).unwrap_or_default(),
        completion_state: vec![CompletionState::InProgress],
        ..RunFilter::default()
    };
    let mut stream = ctx.currents.list_runs(project, &filter);
    let mut listed = HashSet::new();
    let mut fresh = Vec::new();
    while let Some(run) = stream.next().await {
        let run = run.map_err(listing_error)?;
        if branch.is_some_and(|b| run.branch() != Some(b))
            || !run.is_in_progress()
            || skip == Some(run.run_id.as_str())
        {
            continue;
        }
        note_run(seen, &run, now);
        listed.insert(run.run_id.clone());
        fresh.push(run);
    }
    // The whole listing came: a run of that project (and branch) the store believed in
    // progress that it does not show is over or gone, and is not a candidate any more
    // (the next poll reads it and records how it ended).
    runs.retain(|r| {
        let covered = r.project_id == project && branch.is_none_or(|b| r.branch() == Some(b));
        !covered || skip == Some(r.run_id.as_str()) || listed.contains(&r.run_id)
    });
    runs.retain(|r| !listed.contains(&r.run_id));
    runs.extend(fresh);
    Ok(())
}

/// Lists the in-progress runs of `branch` in the projects concerned by `repo` (without
/// progress snapshots: see [`list_project_in_progress`]).
async fn list_in_progress(
    ctx: &AppContext,
    seen: &mut Observed,
    repo: &str,
    branch: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Vec<Run>, ProcessError> {
    let mut runs = Vec::new();
    for project in rules::projects_for_repo(&ctx.config, repo) {
        let listing = Listing {
            project: &project,
            branch,
            skip: None,
            now,
        };
        list_project_in_progress(ctx, seen, listing, &mut runs).await?;
    }
    Ok(runs)
}

async fn github_event(
    ctx: &AppContext,
    d: &Delivery,
    now: DateTime<Utc>,
    seen: &mut Observed,
) -> Result<Vec<Decision>, ProcessError> {
    if !github_event_wanted(&ctx.config, &d.event) {
        // No rule reacts to this kind of event: nothing to read (the payload was checked
        // when it arrived).
        return Ok(Vec::new());
    }
    let ev = events::parse_event(&d.event, d.payload.as_bytes(), d.received_at)
        .map_err(|e| ProcessError::Permanent(e.to_string()))?;
    let trigger = match ev {
        GithubEvent::Trigger(t) => t,
        GithubEvent::Ping | GithubEvent::Ignored(_) => return Ok(Vec::new()),
    };
    let (repo, branch) = match &trigger {
        Trigger::Push { repo, branch, .. } | Trigger::PullRequestClosed { repo, branch, .. } => {
            (repo.clone(), branch.clone())
        }
        Trigger::WorkflowRunCompleted {
            repo, head_branch, ..
        } => (repo.clone(), head_branch.clone().unwrap_or_default()),
        _ => return Ok(Vec::new()),
    };
    let needed = ctx.config.rules.iter().any(|r| match (&r.kind, &trigger) {
        (RuleKind::Supersede(o), Trigger::Push { deleted: false, .. }) => o.on_push,
        (
            RuleKind::Supersede(o),
            Trigger::Push { deleted: true, .. } | Trigger::PullRequestClosed { .. },
        ) => o.on_branch_deleted,
        (
            RuleKind::Orphan(o),
            Trigger::WorkflowRunCompleted {
                workflow_name,
                workflow_path,
                ..
            },
        ) => o.concerns_workflow(workflow_name.as_deref(), workflow_path.as_deref()),
        _ => false,
    });
    if !needed {
        return Ok(Vec::new());
    }
    // A workflow run without a branch (a tag build) is matched over every in-progress run,
    // and so is any when an orphan rule ties runs by `ciBuildId` alone (SPEC §4): a run
    // whose branch Currents recorded otherwise (an override, a merge ref) is still its.
    let by_build_id = match &trigger {
        Trigger::WorkflowRunCompleted {
            workflow_name,
            workflow_path,
            ..
        } => ctx.config.rules.iter().any(|r| {
            matches!(&r.kind, RuleKind::Orphan(o)
                if o.match_by == crate::config::MatchBy::CiBuildId
                    && o.concerns_workflow(workflow_name.as_deref(), workflow_path.as_deref()))
        }),
        _ => false,
    };
    let branch = Some(branch.as_str()).filter(|b| !b.is_empty() && !by_build_id);
    if branch.is_none() && !matches!(trigger, Trigger::WorkflowRunCompleted { .. }) {
        return Ok(Vec::new());
    }
    let runs = list_in_progress(ctx, seen, &repo, branch, now).await?;
    let view = RunsView::runs_only(&runs);
    Ok(rules::evaluate(&ctx.config, &trigger, &view, now).decisions)
}

/// Whether any rule of `config` reacts to GitHub events named `event` (`X-GitHub-Event`):
/// `push` and `pull_request` for supersede rules (as their `on_push` and
/// `on_branch_deleted` say), `workflow_run` for orphan rules. Others are processed
/// without reading their payload.
pub fn github_event_wanted(config: &crate::config::Config, event: &str) -> bool {
    config.rules.iter().any(|r| match (&r.kind, event) {
        (RuleKind::Supersede(o), "push") => o.on_push || o.on_branch_deleted,
        (RuleKind::Supersede(o), "pull_request") => o.on_branch_deleted,
        (RuleKind::Orphan(_), "workflow_run") => true,
        _ => false,
    })
}

/// What a retention sweep decided ([`sweep_retention`]).
struct SweepOutcome {
    /// Its decisions, or the breach of its circuit breaker.
    decided: Result<Vec<Decision>, rules::Breach>,
    /// The projects it left out, refused for good, each with why.
    skipped: Vec<String>,
}

/// One retention sweep of `rule`: feeds every run [`list_retention_runs`] lists, page by
/// page as it arrives, to the rules engine's incremental [`rules::retention::Sweep`]. No
/// run is held after its page: memory grows with the branches and the deletions, not
/// with the runs.
async fn sweep_retention(
    ctx: &AppContext,
    rule: &crate::config::Rule,
    opts: &crate::config::RetentionOptions,
    now: DateTime<Utc>,
) -> Result<SweepOutcome, ProcessError> {
    let mut sweep = rules::retention::Sweep::new(rule, opts, now);
    let skipped = list_retention_runs(&ctx.currents, &ctx.config.currents.projects, rule, |run| {
        sweep.feed(run)
    })
    .await?;
    Ok(SweepOutcome {
        decided: sweep.finish(&ctx.config),
        skipped: skipped
            .into_iter()
            .map(|(project, e)| format!("project {project} (Currents API: {e})"))
            .collect(),
    })
}

/// The listing a retention sweep of `rule` decides over (also what `runwarden explain`
/// judges a retention rule by): every run of the `projects` the rule concerns (with
/// server-side filters where they narrow the listing), each given to `feed` as its page
/// arrives. Returns the projects it left out, each with the refusal.
///
/// A project whose listing is refused for good (404, 403) before any of its runs was
/// fed is left out and logged: the sweep decides for the others. Any other failure (a
/// transient one, or a refusal once runs of the project were fed) fails the whole
/// listing, and so does a refusal of every project concerned.
pub async fn list_retention_runs(
    currents: &crate::currents::CurrentsClient,
    projects: &[String],
    rule: &crate::config::Rule,
    mut feed: impl FnMut(&Run),
) -> Result<Vec<(String, crate::currents::client::CurrentsError)>, ProcessError> {
    let mut concerned = 0usize;
    let mut refused = Vec::new();
    for project in projects {
        if let Some(ps) = &rule.filter.projects
            && !ps.contains(project)
        {
            continue;
        }
        concerned += 1;
        let mut filter = RunFilter::default();
        if let Some(states) = &rule.filter.completion_states {
            filter.completion_state = states.clone();
        }
        if let Some(statuses) = &rule.filter.statuses {
            filter.status = statuses.clone();
        }
        let mut stream = currents.list_runs(project, &filter);
        let mut fed = false;
        while let Some(run) = stream.next().await {
            match run {
                Ok(run) => {
                    fed = true;
                    feed(&run);
                }
                // Nothing of it fed yet: the sweep is whole without it.
                Err(e) if !fed && project_refused(&e) => {
                    tracing::warn!(rule = %rule.name, project = %project, error = %e, "cannot list the project's runs for the retention sweep; the other projects are swept, this one is skipped");
                    refused.push((project.clone(), e));
                    break;
                }
                Err(e) => return Err(listing_error(e)),
            }
        }
    }
    if concerned > 0 && refused.len() == concerned {
        let (_, e) = refused.swap_remove(0);
        return Err(listing_error(e));
    }
    Ok(refused)
}

/// How long a rule this process's configuration does not have is not taken as gone, on a
/// shared store ([`crate::store::Backend::is_shared`]): during a rolling deploy, replicas
/// with the old configuration run beside replicas with the new one, and the sweep of a
/// new rule (its schedule slot, `POST /api/sweep/{rule}`) stored by a new replica may be
/// processed by an old one holding the processor lease. Until its event is this old
/// (from its arrival), the event is retried ([`ProcessError::Transient`], with its
/// backoff) for a replica whose configuration has the rule; the executor postpones a
/// summary of such a rule for as long from the action's creation
/// ([`crate::actions`]). Past it, or on SQLite (one `serve`, whose configuration is the
/// only one), the rule is taken as removed: the event is skipped ("no longer exists").
pub const UNKNOWN_RULE_GRACE: Duration = Duration::from_secs(3600);

/// Whether a rule this process does not know, named by an event or action from `since`,
/// may still be another replica's ([`UNKNOWN_RULE_GRACE`]): on a shared store only, and
/// while `now` is less than the grace after `since` (a `since` ahead of `now`, another
/// replica's clock, counts as new).
pub fn unknown_rule_may_be_anothers(
    store: &crate::store::Store,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> bool {
    let grace =
        chrono::Duration::from_std(UNKNOWN_RULE_GRACE).unwrap_or(chrono::Duration::hours(1));
    store.backend().is_shared() && now - since < grace
}

/// The error of an event whose rule `name` this process's configuration does not have:
/// retried while another replica's configuration may have it
/// ([`unknown_rule_may_be_anothers`]), else final.
fn unknown_rule_error(
    ctx: &AppContext,
    name: &str,
    received_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> ProcessError {
    if unknown_rule_may_be_anothers(&ctx.store, received_at, now) {
        // Logged (WARN, with the rule's name) by `decide_one` with its retry.
        ProcessError::Transient(format!(
            "rule {name:?} is not in this replica's config; another replica's may have it (a rolling deploy): retried for up to {}h after the event arrived, then skipped",
            UNKNOWN_RULE_GRACE.as_secs() / 3600
        ))
    } else {
        ProcessError::Permanent(format!("rule {name:?} no longer exists"))
    }
}

async fn schedule_event(
    ctx: &AppContext,
    d: &Delivery,
    now: DateTime<Utc>,
    seen: &mut Observed,
) -> Result<Vec<Decision>, ProcessError> {
    let v: serde_json::Value = serde_json::from_str(&d.payload)
        .map_err(|e| ProcessError::Permanent(format!("stored payload unreadable: {e}")))?;
    let name = v.get("rule").and_then(|r| r.as_str()).unwrap_or_default();
    let Some(rule) = ctx.config.rules.iter().find(|r| r.name == name) else {
        return Err(unknown_rule_error(ctx, name, d.received_at, now));
    };
    match &rule.kind {
        RuleKind::Retention(opts) => {
            let SweepOutcome { decided, skipped } = sweep_retention(ctx, rule, opts, now).await?;
            seen.skipped.extend(skipped);
            let (mut decisions, breaches) = match decided {
                Ok(d) => (d, Vec::new()),
                Err(b) => (Vec::new(), vec![b]),
            };
            for b in &breaches {
                tracing::error!(rule = %b.rule, would_delete = b.would_delete, max = b.max, "retention circuit breaker tripped: nothing deleted");
                ctx.metrics.inc(
                    "runwarden_schedule_slots_total",
                    &[("rule", &b.rule), ("result", "breaker")],
                );
                decisions.push(Decision {
                    rule: b.rule.clone(),
                    kind: "retention",
                    action: rules::Action::Delete,
                    run_id: format!("{BREAKER_PREFIX}{}", d.delivery_id),
                    project_id: String::new(),
                    branch: None,
                    sha: None,
                    reason: format!(
                        "circuit breaker: this sweep would delete {} runs > max_deletions {}; deleted none",
                        b.would_delete, b.max
                    ),
                    // Recorded with outcome `skipped` (see `to_new_decisions`), not as a
                    // dry run: the rule was live, and stopped.
                    dry_run: false,
                    not_before: None,
                });
            }
            Ok(decisions)
        }
        _ => {
            let scope = PollScope {
                rule: Some(&rule.name),
                preview: is_preview(d),
            };
            poll_event_in(ctx, now, seen, scope).await
        }
    }
}

/// The payload key of a run-end event [`run_end_delivery`] stores: the run as read.
const RUN_END_KEY: &str = "run";

/// A `poll` event that stands for the end of a run the executor saw end (the run it
/// cancelled, or found over): `RUN_CANCELED`, `RUN_FINISH` or `RUN_TIMEOUT`, for the
/// summary rules that react to it, or `None` when none does (or the run is in
/// progress). `seen` is the run's record as the executor writes it. Its id is the run's
/// and the event's, so it is stored once.
///
/// Without it, polling alone would never summarise a run runwarden cancelled itself:
/// the executor records the run as it left it, so no poll finds the run ended behind
/// its back, and no webhook comes when none is configured. With webhooks, Currents'
/// own event for the run decides the same summary, which is carried out once (its action
/// is keyed by run and event).
pub fn run_end_delivery(
    config: &crate::config::Config,
    seen: &RunRecord,
    now: DateTime<Utc>,
) -> Option<NewDelivery> {
    let run = &run_of(seen)?;
    let event = event_for(run);
    if event == "RUN_START" {
        return None;
    }
    let wanted = config.rules.iter().any(|r| match &r.kind {
        RuleKind::Summary(s) => s.events.iter().any(|e| e == event) && r.filter.matches(run),
        _ => false,
    });
    wanted.then(|| NewDelivery {
        source: "poll".into(),
        delivery_id: format!("run-end:{}:{event}", run.run_id),
        event: event.to_string(),
        payload: serde_json::json!({ RUN_END_KEY: run }).to_string(),
        received_at: now,
    })
}

/// Decides a run-end event ([`run_end_delivery`]): the summaries of the run as the
/// executor read it; no request to the API.
fn run_end_event(
    ctx: &AppContext,
    d: &Delivery,
    now: DateTime<Utc>,
) -> Result<Vec<Decision>, ProcessError> {
    let mut v: serde_json::Value = serde_json::from_str(&d.payload)
        .map_err(|e| ProcessError::Permanent(format!("stored payload unreadable: {e}")))?;
    let run: Run = v
        .get_mut(RUN_END_KEY)
        .map(serde_json::Value::take)
        .ok_or_else(|| ProcessError::Permanent("stored run-end event without its run".into()))
        .and_then(|r| {
            serde_json::from_value(r)
                .map_err(|e| ProcessError::Permanent(format!("stored run unreadable: {e}")))
        })?;
    let one = [run.clone()];
    let view = RunsView::runs_only(&one);
    let trigger = Trigger::RunSeen {
        run,
        event: Some(d.event.clone()),
    };
    Ok(rules::evaluate(&ctx.config, &trigger, &view, now)
        .decisions
        .into_iter()
        .filter(|x| x.action == rules::Action::Summarize)
        .collect())
}

/// The Currents event a webhook would have sent for a run in this state.
pub fn event_for(run: &Run) -> &'static str {
    match run.completion_state {
        CompletionState::InProgress => "RUN_START",
        CompletionState::Timeout => "RUN_TIMEOUT",
        CompletionState::Canceled => "RUN_CANCELED",
        _ => "RUN_FINISH",
    }
}

/// A poll: list the in-progress runs of every project, reconcile runs the store still
/// thinks are in progress, then check timeouts and supersession among them.
///
/// Webhooks are hints: the poll synthesises the events a missed webhook would have
/// carried — a run first seen in progress gives `RUN_START`, a run seen finished gives
/// `RUN_FINISH`/`RUN_TIMEOUT`/`RUN_CANCELED` — for the event-driven rules (summaries).
/// Their actions are keyed by run and event, so a webhook and a poll seeing the same
/// change act once.
///
/// With a supersede rule, a project with runs in progress is listed a second time,
/// whatever their state, from the oldest of them on but over [`FINISHED_LOOKBACK`] (plus
/// the poll interval) at most: a newer run that started and finished between two polls
/// supersedes too (SPEC §4). An older one would have been listed in progress by an
/// earlier poll.
pub async fn poll_event(
    ctx: &AppContext,
    now: DateTime<Utc>,
    seen: &mut Observed,
) -> Result<Vec<Decision>, ProcessError> {
    poll_event_in(ctx, now, seen, PollScope::WHOLE).await
}

/// Which of a poll's decisions are kept, and how ([`poll_event_in`]).
#[derive(Debug, Clone, Copy)]
struct PollScope<'a> {
    /// Only this rule's decisions (a `sweep --rule` or `POST /api/sweep/{rule}` of a
    /// rule that is not a retention rule); every rule's when `None`.
    rule: Option<&'a str>,
    /// A preview (`sweep --dry-run`, [`PREVIEW_KEY`]): every decision is a dry run.
    preview: bool,
}

impl PollScope<'_> {
    /// Every decision, as decided: the poll of `serve` (or of a `sweep` of every rule).
    const WHOLE: PollScope<'static> = PollScope {
        rule: None,
        preview: false,
    };
}

/// The key of a `poll` or `schedule` event's payload that marks it as a preview, stored
/// by `sweep --dry-run`: `{"preview": true}`.
pub const PREVIEW_KEY: &str = "preview";

/// Whether a stored `poll` or `schedule` event is a preview ([`PREVIEW_KEY`]).
fn is_preview(d: &Delivery) -> bool {
    serde_json::from_str::<serde_json::Value>(&d.payload)
        .ok()
        .and_then(|v| v.get(PREVIEW_KEY)?.as_bool())
        .unwrap_or(false)
}

/// [`poll_event`], keeping the decisions `scope` keeps.
///
/// A poll limited to one rule, or a preview, must not use up the reconciliation of the
/// runs whose missed event it made good: the summaries it decided for them are dropped
/// (another rule's) or only previewed, so their runs are not remembered as seen in their
/// new state either. The next whole poll then finds them again and makes their event good
/// for real (SPEC §6: webhooks are hints; polling reconciles what they missed).
async fn poll_event_in(
    ctx: &AppContext,
    now: DateTime<Utc>,
    seen: &mut Observed,
    scope: PollScope<'_>,
) -> Result<Vec<Decision>, ProcessError> {
    let mut polled = Polled::default();
    let mut failures = Vec::new();
    for project in &ctx.config.currents.projects {
        // One project's failure (an id Currents does not know, an error that outlasts
        // the client's retries) leaves the others polled; only when every project fails
        // is the poll an error as a whole (and retried as such).
        // What a project's poll observed is kept only when the whole project was polled:
        // a project whose listing failed halfway must not have its runs remembered as
        // seen while the events synthesized for them are dropped.
        let mut one = Polled::default();
        let mut observed = Observed::default();
        match poll_project(ctx, project, now, &mut observed, &mut one).await {
            Ok(()) => {
                polled.absorb(one);
                seen.absorb(observed);
            }
            Err(e) => failures.push((project, e)),
        }
    }
    if failures.is_empty() && scope.rule.is_none() && !scope.preview {
        // Every project was polled: once this poll's decisions are committed, the next
        // poll's look-back for runs that started and finished meanwhile starts here
        // (`recent_finish_start`, `advance_last_poll`). Not before: this poll may still
        // fail (its history listing, its commit), and then made nothing good.
        seen.polled_at = Some(now);
    }
    if !failures.is_empty() && failures.len() == ctx.config.currents.projects.len() {
        let (_, e) = failures.swap_remove(0);
        return Err(e);
    }
    for (project, e) in failures {
        tracing::warn!(project = %project, error = %e, "cannot poll the project; the other projects were polled, this one is tried again at the next poll");
    }
    let Polled {
        runs,
        progress,
        synthesized,
    } = polled;
    let history = history_for(ctx, &runs).await?;
    let view = RunsView::new(&runs, &progress, &history);
    let mut decisions = rules::evaluate(&ctx.config, &Trigger::Tick, &view, now).decisions;
    let has_summary = ctx
        .config
        .rules
        .iter()
        .any(|r| matches!(r.kind, RuleKind::Summary(_)));
    if has_summary {
        for run in synthesized {
            let event = event_for(&run).to_string();
            let run_id = run.run_id.clone();
            let one = [run.clone()];
            let view = RunsView::runs_only(&one);
            let trigger = Trigger::RunSeen {
                run,
                event: Some(event),
            };
            let summaries: Vec<Decision> = rules::evaluate(&ctx.config, &trigger, &view, now)
                .decisions
                .into_iter()
                .filter(|d| d.action == rules::Action::Summarize)
                .collect();
            let all_kept = if scope.preview {
                summaries.is_empty()
            } else {
                scope
                    .rule
                    .is_none_or(|name| summaries.iter().all(|d| d.rule == name))
            };
            if !all_kept {
                seen.forget(&run_id);
            }
            decisions.extend(summaries);
        }
    }
    if let Some(name) = scope.rule {
        decisions.retain(|d| d.rule == name);
    }
    Ok(decisions)
}

/// What [`poll_event`] gathered from the projects polled so far.
#[derive(Default)]
struct Polled {
    runs: Vec<Run>,
    progress: HashMap<String, ProgressSnapshot>,
    synthesized: Vec<Run>,
}

impl Polled {
    fn absorb(&mut self, other: Polled) {
        self.runs.extend(other.runs);
        self.progress.extend(other.progress);
        self.synthesized.extend(other.synthesized);
    }
}

/// [`poll_event`]'s listings of one project, gathered into `out`.
async fn poll_project(
    ctx: &AppContext,
    project: &str,
    now: DateTime<Utc>,
    seen: &mut Observed,
    out: &mut Polled,
) -> Result<(), ProcessError> {
    let filter = RunFilter {
        completion_state: vec![CompletionState::InProgress],
        ..RunFilter::default()
    };
    let mut listed = std::collections::HashSet::new();
    let mut stream = ctx.currents.list_runs(project, &filter);
    while let Some(run) = stream.next().await {
        let run = run.map_err(listing_error)?;
        if !run.is_in_progress() {
            continue;
        }
        // One read of the store's record: whether the run is known, and its progress.
        let held = seen.get(&run.run_id).is_some();
        let stored = if held {
            None
        } else {
            ctx.store.get_run(&run.run_id).await?
        };
        let known = held || stored.is_some();
        let snap = observe_after(seen, stored.as_ref(), &run, now);
        out.progress.insert(run.run_id.clone(), snap);
        listed.insert(run.run_id.clone());
        if !known {
            out.synthesized.push(run.clone());
        }
        out.runs.push(run);
    }
    let oldest = out
        .runs
        .iter()
        .filter(|r| listed.contains(&r.run_id))
        .map(|r| r.created_at)
        .min();
    // Finished runs: for a supersede rule, the newer runs since the oldest in progress;
    // for a summary rule, the runs that started and finished between two polls (no
    // listing of runs in progress ever showed them).
    let supersede_from = oldest.filter(|_| wants_finished_runs(&ctx.config));
    let summary_from = wants_finish_events(&ctx.config).then(|| recent_finish_start(ctx, now));
    let from = match (supersede_from, summary_from) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    if let Some(from) = from {
        let filter = finished_runs_filter(&ctx.config, from, now);
        let mut stream = ctx.currents.list_runs(project, &filter);
        while let Some(run) = stream.next().await {
            let run = run.map_err(listing_error)?;
            // A run listed in progress a moment ago is taken as it was then.
            if run.is_in_progress() || listed.contains(&run.run_id) {
                continue;
            }
            if summary_from.is_some_and(|start| run.created_at >= start)
                && seen.get(&run.run_id).is_none()
                && ctx.store.get_run(&run.run_id).await?.is_none()
            {
                // Never seen, by webhook or poll: its events were all missed.
                note_run(seen, &run, now);
                out.synthesized.push(run.clone());
            }
            if supersede_from.is_some_and(|start| run.created_at >= start) {
                out.runs.push(run);
            }
        }
    }
    // Runs we believed in progress that the listing no longer shows have finished
    // (or were deleted): read them once so the store stops counting them.
    for rec in ctx.store.in_progress_runs(Some(project), None).await? {
        if listed.contains(&rec.run_id) {
            continue;
        }
        match ctx.currents.get_run(&rec.run_id).await {
            Ok(run) => {
                observe_run(ctx, seen, &run, now).await?;
                if !run.is_in_progress() {
                    out.synthesized.push(run);
                }
            }
            Err(e) if e.status() == Some(404) => {
                ctx.store.mark_run_gone(&rec.run_id).await?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Slots after a poll's own in which [`newer_poll_waiting`] looks for a newer poll: the
/// next slot's poll, or the one after when a late tick skipped a slot.
const SUPERSEDE_SCAN: i64 = 8;

/// Whether `d` is a poll of the poller (`poll:{slot}`) and a newer one is already stored,
/// still to be processed: polls pile up behind a busy processor (one a tick), and each
/// would list every project, back to back, for what the newest does anyway. The look-back
/// of that newer one starts where the last committed poll left it
/// ([`recent_finish_start`]), so a run that came and went in between is still found.
/// A store that cannot say is taken as "no": the poll is processed.
async fn newer_poll_waiting(ctx: &AppContext, d: &Delivery) -> bool {
    let interval = ctx.config.currents.poll_interval;
    if d.source != "poll" || d.event != "poll" || interval.is_zero() || is_preview(d) {
        return false;
    }
    let Some(slot) = d
        .delivery_id
        .strip_prefix(crate::intake::poller::SLOT_PREFIX)
        .and_then(|s| s.parse::<i64>().ok())
    else {
        return false;
    };
    // Only a poll this process would process now counts: a slot beyond the current one,
    // or a poll not yet due, is another replica's clock running ahead, and leaving the
    // work to it could leave every poll to one not yet due, for as long as the clocks
    // differ.
    let now = Utc::now();
    let current = crate::intake::poller::slot_of(now, interval);
    let last = slot.saturating_add(SUPERSEDE_SCAN).min(current);
    for next in slot.saturating_add(1)..=last {
        let id = format!("{}{next}", crate::intake::poller::SLOT_PREFIX);
        if let Ok(Some(newer)) = ctx.store.find_delivery("poll", &id).await
            && newer.event == "poll"
            && newer.processed_at.is_none()
            && newer.next_attempt_at <= now
        {
            return true;
        }
    }
    false
}

/// How far back the poll looks for finished runs newer than those in progress
/// ([`poll_event`]), beyond one poll interval.
pub const FINISHED_LOOKBACK: Duration = Duration::from_secs(3600);

/// The second listing of [`poll_event`] (and of `plan`): every run created since the
/// oldest one in progress, [`FINISHED_LOOKBACK`] plus one poll interval back at most.
pub fn finished_runs_filter(
    config: &crate::config::Config,
    oldest_in_progress: DateTime<Utc>,
    now: DateTime<Utc>,
) -> RunFilter {
    let lookback = FINISHED_LOOKBACK.saturating_add(config.currents.poll_interval);
    RunFilter {
        date_start: Some(oldest_in_progress.max(saturating_before(now, lookback))),
        ..RunFilter::default()
    }
}

/// `now - back`, for any `back` however large: no earlier than the Unix epoch (no run
/// is older, and a listing's `date_start` before it is not one the API takes).
fn saturating_before(now: DateTime<Utc>, back: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(back)
        .ok()
        .and_then(|back| now.checked_sub_signed(back))
        .map_or(DateTime::UNIX_EPOCH, |t| t.max(DateTime::UNIX_EPOCH))
}

/// Whether a summary rule reacts to a run's end (`RUN_FINISH`, `RUN_TIMEOUT` or
/// `RUN_CANCELED`): then the poll also lists the runs created since
/// [`recent_finish_start`], for the ones that started and finished between two polls.
fn wants_finish_events(config: &crate::config::Config) -> bool {
    config.rules.iter().any(|r| match &r.kind {
        RuleKind::Summary(s) => s
            .events
            .iter()
            .any(|e| matches!(e.as_str(), "RUN_FINISH" | "RUN_TIMEOUT" | "RUN_CANCELED")),
        _ => false,
    })
}

/// How far back a poll looks for runs that started and finished since the previous
/// poll: to the start of the last poll that covered every project and whose decisions
/// were committed, this process's, or the one the store had recorded when it started (a
/// restart, a replica taking the poller over: [`keep_last_poll`]) (polls that failed
/// meanwhile, an outage of the API, a downtime, are made good; so are polls superseded
/// by a newer one, which move nothing), and two poll
/// intervals (one for the interval itself, one for a late or slow poll),
/// [`MIN_RECENT_LOOKBACK`] at least, in any case; never more than [`FINISHED_LOOKBACK`]
/// plus one interval
/// ([`finished_runs_filter`]). A run created earlier was listed in progress by an
/// earlier poll, or is older than this process's watch (at the first poll, only the runs
/// of the last few minutes are made good, not the whole history). A process's first poll
/// on a store that has no full poll recorded (a new store) looks back
/// [`FIRST_POLL_INTERVALS`] intervals: a replica that takes the poller over
/// from one that died (its lease runs out after three intervals) makes good the runs
/// that came and went in between.
fn recent_finish_start(ctx: &AppContext, now: DateTime<Utc>) -> DateTime<Utc> {
    let last = *ctx.last_poll.lock().unwrap_or_else(|e| e.into_inner());
    let intervals = if last.is_some() {
        2
    } else {
        FIRST_POLL_INTERVALS
    };
    let back =
        (ctx.config.currents.poll_interval.saturating_mul(intervals)).max(MIN_RECENT_LOOKBACK);
    let recent = saturating_before(now, back);
    last.map_or(recent, |t| t.min(recent))
}

/// Poll intervals a process's first poll looks back for runs that started and finished
/// unseen: the poller lease's three (a dead holder's lease running out), and two more
/// (the interval itself, a late poll).
pub const FIRST_POLL_INTERVALS: u32 = 5;

/// The shortest look-back of a poll for runs that started and finished since the previous
/// one (two poll intervals otherwise).
pub const MIN_RECENT_LOOKBACK: Duration = Duration::from_secs(120);

/// Whether the poll lists finished runs too ([`poll_event`]): a supersede rule counts
/// them as newer runs.
fn wants_finished_runs(config: &crate::config::Config) -> bool {
    config
        .rules
        .iter()
        .any(|r| matches!(r.kind, RuleKind::Supersede(_)))
}

#[cfg(test)]
mod tests {
    use super::github_event_wanted;

    #[test]
    fn failed_events_back_off_to_five_minutes() {
        let waits: Vec<i64> = (0..12).map(super::retry_backoff_secs).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 256, 256, 256]);
        assert_eq!(super::retry_backoff_secs(-1), 1);
    }

    #[test]
    fn the_history_lookup_cache_forgets_stale_entries_once_it_is_large() {
        use super::{HISTORY_CACHE_TRIM, HISTORY_REFRESH, HistoryLookup, remember_history_lookup};
        let t0 = std::time::Instant::now();
        let later = t0 + HISTORY_REFRESH + std::time::Duration::from_secs(1);
        let at = |at| HistoryLookup {
            at,
            runs: Vec::new(),
        };
        let mut cache = std::collections::HashMap::new();
        for i in 0..HISTORY_CACHE_TRIM - 1 {
            remember_history_lookup(&mut cache, &format!("old-{i}"), at(t0));
        }
        remember_history_lookup(&mut cache, "fresh", at(later));
        assert_eq!(
            cache.len(),
            HISTORY_CACHE_TRIM,
            "below the mark nothing goes"
        );
        remember_history_lookup(&mut cache, "newest", at(later));
        let mut kept: Vec<_> = cache.keys().cloned().collect();
        kept.sort();
        assert_eq!(kept, ["fresh", "newest"]);
    }

    fn config(rules: &str) -> crate::config::Config {
        let text = format!("[currents]\nprojects = [\"p\"]\n{rules}");
        crate::config::load_str(&text, "rules.toml", &[])
            .expect("test config loads")
            .config
    }

    #[test]
    fn github_events_no_rule_reacts_to_are_not_read() {
        let timeout_only =
            config("[[rules]]\nname = \"stuck\"\nkind = \"timeout\"\nmax_duration = \"2h\"\n");
        for event in ["push", "pull_request", "workflow_run", "issues"] {
            assert!(!github_event_wanted(&timeout_only, event), "{event}");
        }
        let supersede = config("[[rules]]\nname = \"s\"\nkind = \"supersede\"\n");
        assert!(github_event_wanted(&supersede, "push"));
        assert!(github_event_wanted(&supersede, "pull_request"));
        assert!(!github_event_wanted(&supersede, "workflow_run"));
        let pushes_only =
            config("[[rules]]\nname = \"s\"\nkind = \"supersede\"\non_branch_deleted = false\n");
        assert!(github_event_wanted(&pushes_only, "push"));
        assert!(!github_event_wanted(&pushes_only, "pull_request"));
        let deletions_only =
            config("[[rules]]\nname = \"s\"\nkind = \"supersede\"\non_push = false\n");
        assert!(github_event_wanted(&deletions_only, "push"));
        let orphan = config("[[rules]]\nname = \"o\"\nkind = \"orphan\"\n");
        assert!(github_event_wanted(&orphan, "workflow_run"));
        assert!(!github_event_wanted(&orphan, "push"));
    }
}
