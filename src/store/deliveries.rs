//! Deliveries: every incoming event (webhook, poll result, schedule tick) is stored and
//! committed before it is acknowledged, then processed by the serial consumer.
//!
//! Life of a delivery: [`Store::insert_delivery`] (deduplicated on `(source,
//! delivery_id)`) → [`Store::next_unprocessed`] → either
//! [`Store::record_decisions_and_mark_processed`] / [`Store::mark_processed`], or
//! [`Store::mark_delivery_failed`] (transient; handed out again after `retry_at`), or
//! [`Store::dead_letter_delivery`] (gave up). A delivery read but not marked (a crash) is
//! handed out again: processing is at least once, so it must be idempotent (decisions
//! are deduplicated, see [`Store::record_decisions`]).

use chrono::{DateTime, Utc};

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use sqlx::AnyPool;
use tokio::sync::{mpsc, oneshot};

use super::{Backend, Store, StoreError, StoreResult, from_ms, limit, opt_from_ms, to_ms};

/// Most events stored by one commit of [`Store::insert_delivery`]'s writer (5 bound
/// values each, far below SQLite's and PostgreSQL's limits on parameters).
pub const GROUP_COMMIT_MAX: usize = 256;

/// Events waiting for the writer; a full queue makes the callers wait (backpressure).
const WRITER_QUEUE: usize = 4096;

/// An event waiting for its group commit, and where its outcome goes.
#[derive(Debug)]
pub(super) struct PendingDelivery {
    d: NewDelivery,
    reply: oneshot::Sender<StoreResult<InsertOutcome>>,
}

/// Deliveries to mark processed with the next group commit
/// ([`Store::mark_processed_many`]).
#[derive(Debug)]
pub(super) struct PendingMark {
    ids: Vec<i64>,
    note: String,
    reply: oneshot::Sender<StoreResult<()>>,
}

/// What the group-commit writer is handed.
#[derive(Debug)]
pub(super) enum WriterJob {
    Insert(PendingDelivery),
    Mark(PendingMark),
}

/// Counters of group commits: [`Store::insert_delivery`]'s
/// ([`Store::group_commit_stats`]) and [`Store::record_events`]'s
/// ([`Store::event_record_stats`]).
#[derive(Debug, Default)]
pub struct GroupCommitStats {
    groups: AtomicU64,
    events: AtomicU64,
    marks: AtomicU64,
}

impl GroupCommitStats {
    /// Commits (successful or not) made by the writer so far.
    pub fn groups(&self) -> u64 {
        self.groups.load(Ordering::Relaxed)
    }

    /// Events those commits carried.
    pub fn events(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
    }

    /// Calls of [`Store::mark_processed_many`] those commits carried (the delivery
    /// writer's only).
    pub fn marks(&self) -> u64 {
        self.marks.load(Ordering::Relaxed)
    }

    /// Counts one commit of `events` events.
    pub(super) fn count(&self, events: usize) {
        self.groups.fetch_add(1, Ordering::Relaxed);
        self.events.fetch_add(events as u64, Ordering::Relaxed);
    }
}

/// The group-commit writer of a [`Store`] (shared by its clones), started on first use.
#[derive(Debug, Default)]
pub(super) struct DeliveryWriter {
    queue: std::sync::OnceLock<mpsc::Sender<WriterJob>>,
    stats: Arc<GroupCommitStats>,
    feed: Arc<std::sync::Mutex<FeedSlot>>,
}

/// How many committed deliveries may wait in a [`FreshDeliveries`] feed; past that, the
/// writer stops feeding until the processor has read the store (see [`FreshDeliveries`]).
pub const FEED_CAPACITY: usize = 4096;

/// How many payload bytes may wait in a [`FreshDeliveries`] feed (a Currents body can be
/// up to 1 MiB); past that, as past [`FEED_CAPACITY`].
pub const FEED_MAX_BYTES: usize = 8 << 20;

/// The writer's end of the in-memory feed (see [`Store::fresh_deliveries`]).
#[derive(Debug, Default)]
struct FeedSlot {
    tx: Option<mpsc::Sender<(u64, Delivery)>>,
    /// A committed delivery was not fed (the feed was full): nothing more is fed until
    /// the processor takes this flag ([`FreshDeliveries::take_missed`]).
    missed: bool,
    /// Which [`Store::fresh_deliveries`] call the feed belongs to.
    generation: u64,
    /// Payload bytes in the feed (shared with its [`FreshDeliveries`]).
    bytes: Arc<AtomicUsize>,
    /// Deliveries fed so far (the position of the last one).
    fed: u64,
}

impl FeedSlot {
    /// Whether a feed is listening and complete (nothing missed since the processor
    /// last read the store): otherwise a commit's deliveries are not even gathered.
    fn is_open(&self) -> bool {
        self.tx.is_some() && !self.missed
    }

    /// Feeds the deliveries of one commit, in order; on the first that does not fit,
    /// stops feeding until the processor takes the `missed` flag.
    fn feed(&mut self, committed: impl Iterator<Item = Delivery>) {
        if self.missed {
            return;
        }
        let Some(tx) = &self.tx else { return };
        for d in committed {
            let len = d.payload.len();
            if self.bytes.load(Ordering::Relaxed) + len > FEED_MAX_BYTES {
                self.missed = true;
                return;
            }
            match tx.try_send((self.fed + 1, d)) {
                Ok(()) => {
                    self.fed += 1;
                    self.bytes.fetch_add(len, Ordering::Relaxed);
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.missed = true;
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.tx = None;
                    return;
                }
            }
        }
    }
}

/// The in-memory feed of deliveries from the group-commit writer to this process's event
/// processor ([`Store::fresh_deliveries`]): each delivery stored by
/// [`Store::insert_delivery`] is sent here right after its commit, in commit order, so
/// that the processor need not read back what was just written. The store stays the
/// record: whenever the feed was full ([`FEED_CAPACITY`] deliveries or [`FEED_MAX_BYTES`]
/// of payload) and a delivery not sent, [`Self::before_store_read`]
/// says so once, and nothing more is fed until then; the processor then reads the store.
/// Deliveries to retry, and ones stored by another process, are found only in the store.
#[derive(Debug)]
pub struct FreshDeliveries {
    rx: mpsc::Receiver<(u64, Delivery)>,
    slot: Arc<std::sync::Mutex<FeedSlot>>,
    generation: u64,
    bytes: Arc<AtomicUsize>,
    /// Fed deliveries up to this position are dropped ([`Self::skip_through`]).
    skip_through: u64,
}

/// A place in a [`FreshDeliveries`] feed: everything fed before it was committed before
/// it was taken ([`FreshDeliveries::before_store_read`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedPosition(u64);

impl FreshDeliveries {
    /// To call just before reading the store for deliveries to process. Returns whether
    /// a committed delivery was left out of the feed since the last call (the store has
    /// it; from now on the feed is complete again), and the feed's position: every
    /// delivery fed up to it was committed before this call, so the read returns it
    /// unless it was processed already ([`Self::skip_through`]).
    pub fn before_store_read(&self) -> (bool, FeedPosition) {
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        (std::mem::take(&mut slot.missed), FeedPosition(slot.fed))
    }

    /// Drops the fed deliveries up to `position` (a store read has returned them).
    pub fn skip_through(&mut self, position: FeedPosition) {
        self.skip_through = self.skip_through.max(position.0);
    }

    /// The next fed delivery, if one is waiting.
    pub fn try_next(&mut self) -> Option<Delivery> {
        loop {
            let (at, d) = self.rx.try_recv().ok()?;
            self.bytes.fetch_sub(d.payload.len(), Ordering::Relaxed);
            if at > self.skip_through {
                return Some(d);
            }
        }
    }
}

impl Drop for FreshDeliveries {
    fn drop(&mut self) {
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        if slot.generation == self.generation {
            slot.tx = None;
            slot.missed = false;
        }
    }
}

/// Starts the task that stores queued events in groups (see [`Store::insert_delivery`])
/// and marks events processed with them ([`Store::mark_processed_many`]). It holds the
/// pool, not the [`Store`], and ends when every sender is gone.
fn spawn_delivery_writer(
    pool: AnyPool,
    backend: Backend,
    stats: Arc<GroupCommitStats>,
    feed: Arc<std::sync::Mutex<FeedSlot>>,
) -> mpsc::Sender<WriterJob> {
    let (tx, mut rx) = mpsc::channel::<WriterJob>(WRITER_QUEUE);
    tokio::spawn(async move {
        let mut jobs = Vec::with_capacity(GROUP_COMMIT_MAX);
        let mut group = Vec::with_capacity(GROUP_COMMIT_MAX);
        let mut marks = Vec::new();
        // Whatever queued while the previous commit was running forms the next group.
        while rx.recv_many(&mut jobs, GROUP_COMMIT_MAX).await > 0 {
            for job in jobs.drain(..) {
                match job {
                    WriterJob::Insert(p) => group.push(p),
                    WriterJob::Mark(m) => marks.push(m),
                }
            }
            let (outcomes, marked) = if marks.is_empty() {
                (insert_group(&pool, backend, &group).await, Ok(()))
            } else {
                match insert_and_mark(&pool, backend, &group, &marks).await {
                    Ok(outcomes) => (Ok(outcomes), Ok(())),
                    // Apart, so that a failed mark never costs an ack (nor the reverse).
                    Err(e) => {
                        tracing::debug!(error = %e, "cannot store events and marks together; storing them apart");
                        let outcomes = if group.is_empty() {
                            Ok(Vec::new())
                        } else {
                            insert_group(&pool, backend, &group).await
                        };
                        (outcomes, mark_alone(&pool, backend, &marks).await)
                    }
                }
            };
            stats.count(group.len());
            stats.marks.fetch_add(marks.len() as u64, Ordering::Relaxed);
            match outcomes {
                Ok(outcomes) => {
                    // Fed before anyone is answered: an answer wakes the processor.
                    let mut replies = Vec::with_capacity(group.len());
                    let mut slot = feed.lock().unwrap_or_else(|e| e.into_inner());
                    let feeding = slot.is_open();
                    let mut committed = Vec::with_capacity(if feeding { group.len() } else { 0 });
                    for (p, o) in group.drain(..).zip(outcomes) {
                        replies.push((p.reply, o.outcome()));
                        if let Inserted::New(id) = o
                            && feeding
                        {
                            committed.push(p.d.into_delivery(id));
                        }
                    }
                    slot.feed(committed.into_iter());
                    drop(slot);
                    for (reply, outcome) in replies {
                        let _ = reply.send(Ok(outcome));
                    }
                }
                Err(e) => {
                    let e = Arc::new(e);
                    for p in group.drain(..) {
                        let _ = p.reply.send(Err(StoreError::from(e.clone())));
                    }
                }
            }
            match marked {
                Ok(()) => marks.drain(..).for_each(|m| drop(m.reply.send(Ok(())))),
                Err(e) => {
                    let e = Arc::new(e);
                    for m in marks.drain(..) {
                        let _ = m.reply.send(Err(StoreError::from(e.clone())));
                    }
                }
            }
        }
    });
    tx
}

/// Stores `group` and marks `marks` processed, in one transaction.
async fn insert_and_mark(
    pool: &AnyPool,
    backend: Backend,
    group: &[PendingDelivery],
    marks: &[PendingMark],
) -> Result<Vec<Inserted>, sqlx::Error> {
    let mut tx = begin(pool, backend).await?;
    let outcomes = if group.is_empty() {
        Vec::new()
    } else {
        insert_group(&mut *tx, backend, group).await?
    };
    for m in marks {
        mark_many(&mut tx, backend, &m.ids, &m.note).await?;
    }
    tx.commit().await?;
    Ok(outcomes)
}

/// Begins a write transaction on the writer pool.
async fn begin(
    pool: &AnyPool,
    backend: Backend,
) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
    match backend {
        Backend::Sqlite => super::begin_sqlite_write(pool).await,
        Backend::Postgres => pool.begin().await,
    }
}

/// Marks `marks` processed, in one transaction of their own.
async fn mark_alone(
    pool: &AnyPool,
    backend: Backend,
    marks: &[PendingMark],
) -> Result<(), sqlx::Error> {
    let mut tx = begin(pool, backend).await?;
    for m in marks {
        mark_many(&mut tx, backend, &m.ids, &m.note).await?;
    }
    tx.commit().await
}

/// The text of the `n`th (1-based) bind parameter of a statement whose parameters are
/// all numbered in the order they are bound: `$n` on PostgreSQL, and on SQLite an
/// anonymous `?`, which SQLite binds by position. (SQLite finds a named parameter such as
/// `$n` by walking its list of names, so binding a statement with n of them costs O(n²):
/// 7% of its connection thread's time in the intake's multi-row statements, BENCHMARKS.md.)
fn param(backend: Backend, n: usize) -> String {
    match backend {
        Backend::Sqlite => "?".to_string(),
        Backend::Postgres => format!("${n}"),
    }
}

/// The text of bind parameters `first..first + count`, comma-separated (see [`param`]).
fn params(backend: Backend, first: usize, count: usize) -> String {
    (first..first + count)
        .map(|n| param(backend, n))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Marks deliveries processed with the same note (unknown ids and ones already marked are
/// left alone).
async fn mark_many(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    ids: &[i64],
    outcome_note: &str,
) -> Result<(), sqlx::Error> {
    for chunk in ids.chunks(500) {
        let sql = format!(
            "UPDATE deliveries SET processed_at = {}, outcome = {} \
             WHERE processed_at IS NULL AND id IN ({})",
            param(backend, 1),
            param(backend, 2),
            params(backend, 3, chunk.len())
        );
        let mut q = sqlx::query(&sql)
            .bind(to_ms(Utc::now()))
            .bind(super::runs::text(outcome_note));
        for id in chunk {
            q = q.bind(*id);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Stores a group of events with one statement (atomic, one commit). An event repeated
/// within the group, or already stored, is a [`InsertOutcome::Duplicate`].
async fn insert_group<'e>(
    db: impl sqlx::Executor<'e, Database = sqlx::Any>,
    backend: Backend,
    group: &[PendingDelivery],
) -> Result<Vec<Inserted>, sqlx::Error> {
    let mut firsts: Vec<&NewDelivery> = Vec::with_capacity(group.len());
    let mut seen = HashSet::with_capacity(group.len());
    for p in group {
        if seen.insert((p.d.source.as_str(), p.d.delivery_id.as_str())) {
            firsts.push(&p.d);
        }
    }
    // In key order: two replicas inserting the same deliveries (a sender's retry sent to
    // the other one) then take the unique index's locks in the same order, where arrival
    // order could deadlock them (PostgreSQL).
    if backend == Backend::Postgres {
        firsts.sort_unstable_by(|a, b| {
            (a.source.as_str(), a.delivery_id.as_str())
                .cmp(&(b.source.as_str(), b.delivery_id.as_str()))
        });
    }
    let mut sql = String::with_capacity(160 + firsts.len() * 32);
    sql.push_str(
        "INSERT INTO deliveries (source, delivery_id, event, payload, received_at, \
             next_attempt_at) VALUES ",
    );
    for i in 0..firsts.len() {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        sql.push_str(&params(backend, i * 6 + 1, 6));
        sql.push(')');
    }
    sql.push_str(" ON CONFLICT (source, delivery_id) DO NOTHING RETURNING id, source, delivery_id");
    let mut q = sqlx::query_as::<_, (i64, String, String)>(&sql);
    for d in &firsts {
        q = q
            .bind(&d.source)
            .bind(&d.delivery_id)
            .bind(&d.event)
            .bind(&d.payload)
            .bind(to_ms(d.received_at))
            // next_attempt_at: due at once.
            .bind(to_ms(d.received_at));
    }
    let mut inserted: HashMap<(String, String), i64> = q
        .fetch_all(db)
        .await?
        .into_iter()
        .map(|(id, source, delivery_id)| ((source, delivery_id), id))
        .collect();
    // The first of each key in the group is the one inserted (when it was new).
    Ok(group
        .iter()
        .map(|p| {
            // Borrowed lookup would need a key type of its own; the clone is two short strings.
            let key = (p.d.source.clone(), p.d.delivery_id.clone());
            match inserted.remove(&key) {
                Some(id) => Inserted::New(id),
                None => Inserted::Duplicate,
            }
        })
        .collect())
}

/// What [`insert_group`] did with one event.
#[derive(Debug, Clone, Copy)]
enum Inserted {
    /// Stored as this row.
    New(i64),
    Duplicate,
}

impl Inserted {
    fn outcome(self) -> InsertOutcome {
        match self {
            Inserted::New(_) => InsertOutcome::Inserted,
            Inserted::Duplicate => InsertOutcome::Duplicate,
        }
    }
}

/// The accepted values of [`NewDelivery::source`]: `POST /webhooks/currents`,
/// `POST /webhooks/github`, the poller's reconciliation, a schedule slot (or a manual
/// sweep).
pub const SOURCES: [&str; 4] = ["currents", "github", "poll", "schedule"];

/// The `outcome` of a delivery given up on ([`Store::dead_letter_delivery`]).
pub const DEAD_LETTER: &str = "dead-letter";

/// An event to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    /// One of [`SOURCES`].
    pub source: String,
    /// Unique per source: `X-GitHub-Delivery`, or a key derived from the event
    /// (e.g. `RUN_FINISH:<run id>` for Currents, which sends no delivery id).
    pub delivery_id: String,
    /// The event name (`RUN_FINISH`, `push`, ...).
    pub event: String,
    /// JSON text: a Currents webhook's body as received; of a GitHub webhook, the fields
    /// runwarden reads ([`crate::github::events::ReadEvent::kept`]); for webhooks, after
    /// the signature was verified over the whole body.
    pub payload: String,
    pub received_at: DateTime<Utc>,
}

impl NewDelivery {
    /// The delivery as stored in row `id`, before any processing (times to the
    /// millisecond, as the store keeps them).
    fn into_delivery(self, id: i64) -> Delivery {
        use chrono::SubsecRound;
        let received_at = self.received_at.trunc_subsecs(3);
        Delivery {
            id,
            source: self.source,
            delivery_id: self.delivery_id,
            event: self.event,
            payload: self.payload,
            received_at,
            attempts: 0,
            next_attempt_at: received_at,
            last_error: None,
            processed_at: None,
            outcome: None,
        }
    }
}

/// Outcome of [`Store::insert_delivery`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertOutcome {
    /// Stored and committed (answer 202).
    Inserted,
    /// Already stored; nothing was changed (answer 200).
    Duplicate,
}

/// A stored delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Row id (what `mark_*` take).
    pub id: i64,
    pub source: String,
    pub delivery_id: String,
    pub event: String,
    pub payload: String,
    pub received_at: DateTime<Utc>,
    /// Failed processing attempts so far.
    pub attempts: i64,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
    /// `None` while still to be processed.
    pub processed_at: Option<DateTime<Utc>>,
    /// The note written when it was processed (or `dead-letter`).
    pub outcome: Option<String>,
}

#[derive(sqlx::FromRow)]
struct DeliveryRow {
    id: i64,
    source: String,
    delivery_id: String,
    event: String,
    payload: String,
    received_at: i64,
    attempts: i64,
    next_attempt_at: i64,
    last_error: Option<String>,
    processed_at: Option<i64>,
    outcome: Option<String>,
}

impl TryFrom<DeliveryRow> for Delivery {
    type Error = StoreError;
    fn try_from(r: DeliveryRow) -> StoreResult<Delivery> {
        Ok(Delivery {
            id: r.id,
            source: r.source,
            delivery_id: r.delivery_id,
            event: r.event,
            payload: r.payload,
            received_at: from_ms(r.received_at)?,
            attempts: r.attempts,
            next_attempt_at: from_ms(r.next_attempt_at)?,
            last_error: r.last_error,
            processed_at: opt_from_ms(r.processed_at)?,
            outcome: r.outcome,
        })
    }
}

const DELIVERY_COLUMNS: &str = "id, source, delivery_id, event, payload, received_at, attempts, \
     next_attempt_at, last_error, processed_at, outcome";

impl Store {
    /// Stores an event unless `(source, delivery_id)` is already stored. When this returns
    /// `Ok`, the row is committed (durable per `synchronous=FULL`); a duplicate changes
    /// nothing.
    ///
    /// Group commit: concurrent calls are gathered by one writer task and stored by one
    /// multi-row `INSERT` (one transaction, one fsync) of up to [`GROUP_COMMIT_MAX`]
    /// events, so the durable ack rate is not one fsync per event. Every caller still
    /// waits for the commit that holds its own event; when that commit fails, every
    /// caller in it gets the same error and nothing of the group is
    /// stored.
    pub async fn insert_delivery(&self, d: NewDelivery) -> StoreResult<InsertOutcome> {
        if !SOURCES.contains(&d.source.as_str()) {
            return Err(StoreError::Invalid(format!(
                "unknown delivery source {:?}",
                d.source
            )));
        }
        let (reply, answer) = oneshot::channel();
        if self
            .delivery_queue()
            .send(WriterJob::Insert(PendingDelivery { d, reply }))
            .await
            .is_err()
        {
            return Err(sqlx::Error::PoolClosed.into());
        }
        match answer.await {
            Ok(result) => result,
            // The writer task ended (the runtime is shutting down).
            Err(_) => Err(sqlx::Error::PoolClosed.into()),
        }
    }

    /// The queue of the group-commit writer, started on first use.
    fn delivery_queue(&self) -> &mpsc::Sender<WriterJob> {
        let w = &self.delivery_writer;
        w.queue.get_or_init(|| {
            spawn_delivery_writer(
                self.writer.clone(),
                self.backend,
                w.stats.clone(),
                w.feed.clone(),
            )
        })
    }

    /// The in-memory feed of the deliveries this process stores from now on, for its
    /// event processor ([`FreshDeliveries`]); `None` on a shared store (PostgreSQL),
    /// where other replicas store deliveries too and the processor reads them all from
    /// the store. A second call replaces the first feed.
    pub fn fresh_deliveries(&self) -> Option<FreshDeliveries> {
        if self.backend.is_shared() {
            return None;
        }
        let (tx, rx) = mpsc::channel(FEED_CAPACITY);
        let slot = self.delivery_writer.feed.clone();
        let bytes = Arc::new(AtomicUsize::new(0));
        let generation = {
            let mut s = slot.lock().unwrap_or_else(|e| e.into_inner());
            s.generation += 1;
            s.tx = Some(tx);
            s.missed = false;
            s.bytes = bytes.clone();
            s.fed = 0;
            s.generation
        };
        Some(FreshDeliveries {
            rx,
            slot,
            generation,
            bytes,
            skip_through: 0,
        })
    }

    /// How [`Store::insert_delivery`] has grouped its commits so far (this handle and
    /// its clones).
    pub fn group_commit_stats(&self) -> &GroupCommitStats {
        &self.delivery_writer.stats
    }

    /// Unprocessed deliveries whose retry time has come by `now`, oldest first. This only
    /// reads: the consumer is serial, and a delivery is handed out again until marked.
    pub async fn next_unprocessed(
        &self,
        now: DateTime<Utc>,
        max: impl Into<i64>,
    ) -> StoreResult<Vec<Delivery>> {
        let rows: Vec<DeliveryRow> = sqlx::query_as(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries \
             WHERE processed_at IS NULL AND next_attempt_at <= $1 \
             ORDER BY received_at, id \
             LIMIT $2"
        ))
        .bind(to_ms(now))
        .bind(limit(max))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(Delivery::try_from).collect()
    }

    /// The delivery stored as `(source, delivery_id)`.
    pub async fn find_delivery(
        &self,
        source: &str,
        delivery_id: &str,
    ) -> StoreResult<Option<Delivery>> {
        let row: Option<DeliveryRow> = sqlx::query_as(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE source = $1 AND delivery_id = $2"
        ))
        .bind(source)
        .bind(delivery_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(Delivery::try_from).transpose()
    }

    /// One delivery by row id.
    pub async fn get_delivery(&self, id: i64) -> StoreResult<Option<Delivery>> {
        let row: Option<DeliveryRow> = sqlx::query_as(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(Delivery::try_from).transpose()
    }

    /// Marks a delivery processed with a short note ("2 decisions", "ignored: ping"). One
    /// already marked processed (by another processor) keeps its first outcome.
    pub async fn mark_processed(&self, id: i64, outcome_note: &str) -> StoreResult<()> {
        let mut conn = self.writer.acquire().await?;
        Self::mark_processed_in(&mut conn, id, outcome_note).await
    }

    /// A transient processing failure: `attempts + 1`, the error kept, and the delivery
    /// not handed out again before `retry_at`.
    pub async fn mark_delivery_failed(
        &self,
        id: i64,
        error: &str,
        retry_at: DateTime<Utc>,
    ) -> StoreResult<()> {
        let done = sqlx::query(
            "UPDATE deliveries \
             SET attempts = attempts + 1, last_error = $2, next_attempt_at = $3 \
             WHERE id = $1 AND processed_at IS NULL",
        )
        .bind(id)
        .bind(super::runs::text(error))
        .bind(to_ms(retry_at))
        .execute(&self.writer)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::not_found("unprocessed delivery", id));
        }
        Ok(())
    }

    /// Gives up on a delivery (a poison payload, the last attempt failed): it is marked
    /// processed with the outcome [`DEAD_LETTER`] and the error kept. A delivery another
    /// processor has marked processed meanwhile keeps its outcome (nothing changes); an
    /// unknown one is [`StoreError::NotFound`].
    pub async fn dead_letter_delivery(&self, id: i64, error: &str) -> StoreResult<()> {
        let done = sqlx::query(
            "UPDATE deliveries \
             SET attempts = attempts + 1, last_error = $2, processed_at = $3, outcome = $4 \
             WHERE id = $1 AND processed_at IS NULL",
        )
        .bind(id)
        .bind(super::runs::text(error))
        .bind(to_ms(Utc::now()))
        .bind(DEAD_LETTER)
        .execute(&self.writer)
        .await?;
        if done.rows_affected() == 0 {
            Self::processed_already(&self.writer, id).await?;
        }
        Ok(())
    }

    /// After a processed mark that changed nothing: `Ok` when delivery `id` exists (it
    /// was marked processed already, by another processor: the first outcome stays),
    /// [`StoreError::NotFound`] when it does not.
    async fn processed_already<'e>(
        db: impl sqlx::Executor<'e, Database = sqlx::Any>,
        id: i64,
    ) -> StoreResult<()> {
        let exists: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM deliveries WHERE id = $1")
            .bind(id)
            .fetch_one(db)
            .await?;
        if exists == 0 {
            return Err(StoreError::not_found("delivery", id));
        }
        Ok(())
    }

    /// Stores an event that the caller processes itself (`runwarden sweep`'s own events),
    /// held from every other processor until `held_until`: [`Store::next_unprocessed`]
    /// hands it out only from then on, so that a `serve` on the same store does not
    /// process it at the same time. The caller processes it by its key
    /// ([`crate::intake::processor::process_only`]), and when it gives up on it (or is
    /// done waiting) hands it back with [`Store::set_delivery_due`]; should the caller
    /// die, the event falls due at `held_until` for whoever processes events then.
    /// Deduplicated on `(source, delivery_id)` as [`Store::insert_delivery`] is, but
    /// committed on its own (not with the intake's group commits).
    pub async fn insert_delivery_held(
        &self,
        d: NewDelivery,
        held_until: DateTime<Utc>,
    ) -> StoreResult<InsertOutcome> {
        if !SOURCES.contains(&d.source.as_str()) {
            return Err(StoreError::Invalid(format!(
                "unknown delivery source {:?}",
                d.source
            )));
        }
        let inserted: Option<i64> = sqlx::query_scalar(
            "INSERT INTO deliveries (source, delivery_id, event, payload, received_at, \
                 next_attempt_at) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (source, delivery_id) DO NOTHING \
             RETURNING id",
        )
        .bind(&d.source)
        .bind(&d.delivery_id)
        .bind(&d.event)
        .bind(&d.payload)
        .bind(to_ms(d.received_at))
        .bind(to_ms(held_until))
        .fetch_optional(&self.writer)
        .await?;
        Ok(match inserted {
            Some(_) => InsertOutcome::Inserted,
            None => InsertOutcome::Duplicate,
        })
    }

    /// Sets when delivery `id`, still to be processed, is next handed out by
    /// [`Store::next_unprocessed`]: holds it from other processors until `at`, or hands
    /// a held one back (see [`Store::insert_delivery_held`]). Returns `false` when it
    /// was processed already (or is unknown).
    pub async fn set_delivery_due(&self, id: i64, at: DateTime<Utc>) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE deliveries SET next_attempt_at = $2 WHERE id = $1 AND processed_at IS NULL",
        )
        .bind(id)
        .bind(to_ms(at))
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Deliveries not yet processed (due or waiting for a retry).
    pub async fn count_unprocessed(&self) -> StoreResult<i64> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM deliveries WHERE processed_at IS NULL")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Deletes processed deliveries processed before `before` (keeps the table bounded;
    /// a redelivery older than this is no longer recognised as a duplicate). Returns the
    /// number deleted.
    pub async fn prune_deliveries(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        self.delete_in_chunks(
            "DELETE FROM deliveries WHERE id IN (SELECT id FROM deliveries \
             WHERE processed_at IS NOT NULL AND processed_at < $1 LIMIT $2)",
            to_ms(before),
        )
        .await
    }

    /// Marks several deliveries processed with the same note (events that decided
    /// nothing), with the next group commit of [`Store::insert_delivery`]: no commit (nor
    /// fsync) of their own while events arrive. Unknown ids are ignored.
    pub async fn mark_processed_many(&self, ids: &[i64], outcome_note: &str) -> StoreResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let (reply, answer) = oneshot::channel();
        let job = WriterJob::Mark(PendingMark {
            ids: ids.to_vec(),
            note: outcome_note.to_string(),
            reply,
        });
        if self.delivery_queue().send(job).await.is_err() {
            return Err(sqlx::Error::PoolClosed.into());
        }
        match answer.await {
            Ok(result) => result,
            Err(_) => Err(sqlx::Error::PoolClosed.into()),
        }
    }

    /// [`Store::mark_processed_many`] on an open transaction.
    pub(super) async fn mark_many_in(
        conn: &mut sqlx::AnyConnection,
        backend: Backend,
        ids: &[i64],
        outcome_note: &str,
    ) -> StoreResult<()> {
        Ok(mark_many(conn, backend, ids, outcome_note).await?)
    }

    /// Marks delivery `id` processed on an open transaction. One that another processor
    /// marked processed meanwhile keeps its outcome (the first processing's note and
    /// time stay); an unknown one is [`StoreError::NotFound`].
    pub(super) async fn mark_processed_in(
        conn: &mut sqlx::AnyConnection,
        id: i64,
        outcome_note: &str,
    ) -> StoreResult<()> {
        let done = sqlx::query(
            "UPDATE deliveries SET processed_at = $2, outcome = $3 \
             WHERE id = $1 AND processed_at IS NULL",
        )
        .bind(id)
        .bind(to_ms(Utc::now()))
        .bind(super::runs::text(outcome_note))
        .execute(&mut *conn)
        .await?;
        if done.rows_affected() == 0 {
            Self::processed_already(&mut *conn, id).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(source: &str, id: &str, at: DateTime<Utc>) -> NewDelivery {
        NewDelivery {
            source: source.into(),
            delivery_id: id.into(),
            event: "push".into(),
            payload: "{}".into(),
            received_at: at,
        }
    }

    #[tokio::test]
    async fn unknown_sources_are_refused() {
        let store = Store::connect("sqlite::memory:").await.unwrap();
        let err = store
            .insert_delivery(delivery("gitlab", "d-1", Utc::now()))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Invalid(_)), "{err}");
        for source in SOURCES {
            assert_eq!(
                store
                    .insert_delivery(delivery(source, "d-1", Utc::now()))
                    .await
                    .unwrap(),
                InsertOutcome::Inserted,
                "{source}"
            );
        }
        // The same delivery id under different sources is four deliveries.
        assert_eq!(store.count_unprocessed().await.unwrap(), 4);
    }

    /// Drains a feed: the delivery ids it brought, in order.
    fn drain(feed: &mut FreshDeliveries) -> Vec<String> {
        std::iter::from_fn(|| feed.try_next())
            .map(|d| d.delivery_id)
            .collect()
    }

    #[tokio::test]
    async fn the_feed_brings_each_new_delivery_once_in_commit_order_and_says_when_it_missed_one() {
        let store = Store::connect("sqlite::memory:").await.unwrap();
        let mut feed = store.fresh_deliveries().unwrap();
        let t0 = Utc::now();
        for id in ["d-1", "d-2", "d-1"] {
            store
                .insert_delivery(delivery("github", id, t0))
                .await
                .unwrap();
        }
        let fed: Vec<Delivery> = std::iter::from_fn(|| feed.try_next()).collect();
        let stored = store.find_delivery("github", "d-1").await.unwrap().unwrap();
        assert_eq!(fed.len(), 2, "the duplicate is not fed: {fed:?}");
        // As stored, row id included.
        assert_eq!(fed[0], stored);
        assert_eq!(fed[1].delivery_id, "d-2");
        assert!(fed[1].id > fed[0].id);
        assert!(!feed.before_store_read().0);

        // What was fed before a store read is dropped once the read has returned it.
        store
            .insert_delivery(delivery("github", "d-3", t0))
            .await
            .unwrap();
        let (_, position) = feed.before_store_read();
        store
            .insert_delivery(delivery("github", "d-4", t0))
            .await
            .unwrap();
        feed.skip_through(position);
        assert_eq!(drain(&mut feed), ["d-4"]);

        // Past its capacity the feed misses deliveries, says so once, and feeds nothing
        // more until it has said so.
        let n = FEED_CAPACITY + 10;
        futures::future::try_join_all(
            (0..n).map(|i| store.insert_delivery(delivery("poll", &format!("p-{i}"), t0))),
        )
        .await
        .unwrap();
        store
            .insert_delivery(delivery("poll", "late", t0))
            .await
            .unwrap();
        assert!(feed.before_store_read().0);
        assert!(!feed.before_store_read().0);
        let fed = drain(&mut feed);
        assert_eq!(fed.len(), FEED_CAPACITY);
        assert!(!fed.contains(&"late".to_string()));
        store
            .insert_delivery(delivery("poll", "next", t0))
            .await
            .unwrap();
        assert_eq!(drain(&mut feed), ["next"]);

        // So it does past its byte budget (here: 9 bodies of 1 MiB; 8 fit).
        let big = |i: usize| NewDelivery {
            payload: format!("\"{}\"", "x".repeat((1 << 20) - 2)),
            ..delivery("currents", &format!("big-{i}"), t0)
        };
        for i in 0..9 {
            store.insert_delivery(big(i)).await.unwrap();
        }
        assert!(feed.before_store_read().0);
        assert_eq!(drain(&mut feed).len(), 8);
        store.insert_delivery(big(9)).await.unwrap();
        assert_eq!(drain(&mut feed), ["big-9"]);

        // A second feed replaces the first; dropping the first leaves the second alone.
        let mut second = store.fresh_deliveries().unwrap();
        drop(feed);
        store
            .insert_delivery(delivery("poll", "after", t0))
            .await
            .unwrap();
        assert_eq!(drain(&mut second), ["after"]);
        drop(second);
        store
            .insert_delivery(delivery("poll", "unfed", t0))
            .await
            .unwrap();
        assert_eq!(store.count_unprocessed().await.unwrap(), n as i64 + 18);
    }

    #[tokio::test]
    async fn a_failed_delivery_waits_for_its_retry_time_then_can_be_dead_lettered() {
        let store = Store::connect("sqlite::memory:").await.unwrap();
        let t0 = from_ms(1_767_225_600_000).unwrap();
        store
            .insert_delivery(delivery("github", "d-1", t0))
            .await
            .unwrap();
        let id = store
            .find_delivery("github", "d-1")
            .await
            .unwrap()
            .unwrap()
            .id;
        let retry_at = t0 + chrono::Duration::seconds(30);
        store
            .mark_delivery_failed(id, "currents: 503", retry_at)
            .await
            .unwrap();
        let before = store
            .next_unprocessed(retry_at - chrono::Duration::milliseconds(1), 10)
            .await
            .unwrap();
        assert!(before.is_empty());
        let due = store.next_unprocessed(retry_at, 10).await.unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].attempts, 1);
        assert_eq!(due[0].last_error.as_deref(), Some("currents: 503"));
        assert_eq!(store.count_unprocessed().await.unwrap(), 1);

        store.dead_letter_delivery(id, "gave up").await.unwrap();
        assert_eq!(store.count_unprocessed().await.unwrap(), 0);
        let d = store.get_delivery(id).await.unwrap().unwrap();
        assert_eq!(d.outcome.as_deref(), Some(DEAD_LETTER));
        assert_eq!(d.attempts, 2);
        assert!(d.processed_at.is_some());
        assert!(matches!(
            store.mark_delivery_failed(id, "x", retry_at).await,
            Err(StoreError::NotFound { .. })
        ));
        assert!(matches!(
            store.mark_processed(id + 100, "x").await,
            Err(StoreError::NotFound { .. })
        ));
    }
}
