//! The durable store: SQLite by default (issue 5), PostgreSQL for several replicas
//! (issue 10).
//!
//! Everything that must survive a crash lives here, and every SQL string of the crate is
//! in this module:
//!
//! - [`deliveries`]: webhook, poll and schedule events, stored and committed before the
//!   sender is answered (SPEC §5), deduplicated on `(source, delivery_id)`, handed to the
//!   serial consumer until processed.
//! - [`runs`]: the runs the bot has seen (supersede lookups, idle detection, poll diffs,
//!   the duration history of `max_duration = "auto"`).
//! - [`actions`]: decisions (the audit log) and actions (the outbox), written in one
//!   transaction so that every decision is recorded before it is acted on and an action
//!   decided by several rules exists once (SPEC §6); the executor's lease-based queue; the
//!   audit view of SPEC §1.
//! - [`comments`]: sticky PR comments and their per-run sections.
//! - [`slots`]: cron slot claims (fired once, even across restarts and replicas).
//! - [`leases`]: named leases (the poller's and the event processor's leadership).
//!
//! Conventions: timestamps are `DateTime<Utc>` in the API and INTEGER epoch milliseconds
//! in the database (sub-millisecond precision is dropped), booleans INTEGER 0/1, JSON TEXT.
//! Queries use standard SQL with `$N` placeholders (which both SQLite and PostgreSQL
//! accept), `ON CONFLICT` and `RETURNING`.
//!
//! SQLite settings: WAL, `synchronous=FULL` (an acknowledged webhook survives an OS
//! crash; only an action's outcome commits at `NORMAL`, see `Store::begin_outcome`),
//! `busy_timeout` 5 s, foreign keys on. Write transactions that read first begin
//! with `BEGIN IMMEDIATE`, so a writer waits for the lock (bounded by the busy timeout)
//! instead of failing on a stale snapshot.
//!
//! PostgreSQL (`postgres://...`, [`Backend::Postgres`]): the same queries through sqlx's
//! `Any` driver, on the schema of `migrations/postgres` (BIGINT where SQLite has INTEGER).
//! Those read-then-write transactions take a transaction-level advisory lock first, the
//! counterpart of `BEGIN IMMEDIATE`; action claims lock their rows with `FOR UPDATE SKIP
//! LOCKED`, so replicas never claim one action twice nor wait on each other; the busy
//! timeout becomes `lock_timeout`. Leases (actions, poller, processor) expire when their
//! holder dies; only a single-process SQLite store may release them all at startup
//! ([`Backend::is_shared`]).

pub mod actions;
pub mod clock;
pub mod comments;
pub mod deliveries;
mod error;
pub mod leases;
pub mod runs;
pub mod slots;
pub mod watermarks;

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::{Any, AnyPool, Transaction};

pub use actions::{
    ActionKind, ActionOutcome, ActionRow, ActionState, AuditEntry, CancelReason, Claim,
    DecisionCount, EventRecord, EventRecorded, NewDecision, Outcome, RecordedDecision,
};
pub use comments::{CommentRecord, SectionRecord, SectionUpdate};
pub use deliveries::{
    DEAD_LETTER, Delivery, FEED_CAPACITY, FeedPosition, FreshDeliveries, GroupCommitStats,
    InsertOutcome, NewDelivery, SOURCES,
};
pub use error::{StoreError, StoreResult};
pub use runs::{PassedRun, RunRecord};
pub use slots::SlotRecord;

/// The SQLite schema migrations (`migrations/sqlite`), applied by [`Store::connect`].
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// The PostgreSQL schema migrations (`migrations/postgres`): the same tables, constraints
/// and indexes as [`MIGRATOR`]'s, in PostgreSQL types.
pub static PG_MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// Key of the transaction-level advisory lock that serializes the read-then-write
/// transactions of [`Store::begin_write`] on PostgreSQL, as `BEGIN IMMEDIATE` does on
/// SQLite ("rnwrdn" in ASCII).
const PG_WRITE_LOCK: i64 = 0x726e_7772_646e;

/// The database behind a [`Store`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// One process, a local file (or memory): the default.
    Sqlite,
    /// A server shared by several replicas.
    Postgres,
}

impl Backend {
    /// The backend a store URL selects, if any.
    pub fn of_url(url: &str) -> Option<Backend> {
        if url.starts_with("sqlite:") {
            Some(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Backend::Postgres)
        } else {
            None
        }
    }

    /// Whether several machines may share the store. When not, a lease still held at
    /// startup is a dead process's unless another process on the same machine holds it
    /// ([`Store::release_leases_unless`]).
    pub fn is_shared(self) -> bool {
        self == Backend::Postgres
    }
}

/// Tunables of [`Store::connect_with`]; [`Default`] is what `serve` uses.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// How long a statement waits for a lock held by another connection before failing
    /// with [`StoreError::Unavailable`] (SQLite `busy_timeout`, PostgreSQL `lock_timeout`).
    pub busy_timeout: Duration,
    /// How long an operation waits for a free pooled connection.
    pub acquire_timeout: Duration,
    /// Pool size for a database file (its readers: [`SQLITE_READERS`] by default) or a
    /// server ([`POSTGRES_POOL`] by default); an in-memory database always uses one
    /// connection.
    pub max_connections: Option<u32>,
}

/// Reader connections of a SQLite file (writes have one connection of their own).
pub const SQLITE_READERS: u32 = 4;

/// Connections of each process to a PostgreSQL store. The intake, the processor, the
/// leases and up to 16 actions in flight share them, and a write may hold one while it
/// waits for the store's write lock: 4 ran dry under load. Several replicas and `sweep`
/// jobs together stay well under PostgreSQL's default `max_connections` (100).
pub const POSTGRES_POOL: u32 = 16;

/// How many times a process tries to migrate a SQLite store (see [`Store::connect_with`]).
const SQLITE_MIGRATION_ATTEMPTS: u32 = 5;

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            busy_timeout: Duration::from_secs(5),
            acquire_timeout: Duration::from_secs(5),
            max_connections: None,
        }
    }
}

/// Handle on the durable store. Cheap to clone (a connection pool inside).
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    /// What every write goes through. On a SQLite file, a pool of its own with one
    /// connection: SQLite has one writer at a time, and writers queued here are woken the
    /// moment the previous one commits, where SQLite's busy handler would have them sleep
    /// and poll (1, 2, 5 ... 100 ms). Elsewhere the same pool as reads.
    writer: AnyPool,
    backend: Backend,
    /// The group-commit writer of [`Store::insert_delivery`], started on first use and
    /// shared by every clone.
    delivery_writer: std::sync::Arc<deliveries::DeliveryWriter>,
    /// Commits of [`Store::record_events`] and the events they recorded.
    record_stats: std::sync::Arc<GroupCommitStats>,
    /// A SQLite file (not in memory): its outcomes commit without an fsync
    /// ([`Store::begin_outcome`]).
    sqlite_file: bool,
}

impl Store {
    /// Opens the store at `url` and applies pending migrations.
    ///
    /// `url` is `sqlite://PATH` (the file is created when missing; its directory is not),
    /// `sqlite:PATH`, or `sqlite::memory:` (a private in-memory database, for tests and
    /// `demo`). Query parameters of sqlx are honoured, e.g. `?mode=ro`.
    ///
    /// Or `postgres://USER:PASSWORD@HOST:PORT/DATABASE` (also `postgresql://`, with
    /// libpq-style parameters such as `?sslmode=require`): a PostgreSQL database shared by
    /// several replicas. The database must exist; the schema is created or migrated
    /// (replicas starting together take turns on a migration lock).
    pub async fn connect(url: &str) -> anyhow::Result<Store> {
        Self::connect_with(url, StoreOptions::default()).await
    }

    /// [`Store::connect`] with explicit [`StoreOptions`].
    pub async fn connect_with(url: &str, options: StoreOptions) -> anyhow::Result<Store> {
        sqlx::any::install_default_drivers();
        let shown = redact_url(url);
        let backend = Backend::of_url(url).with_context(|| {
            format!("cannot open store {shown}: the URL must start with sqlite: or postgres://")
        })?;
        let (pool, writer) = match backend {
            Backend::Sqlite => connect_sqlite(url, &options).await,
            Backend::Postgres => connect_postgres(url, &options)
                .await
                .map(|p| (p.clone(), p)),
        }
        .with_context(|| format!("cannot open store {shown}"))?;

        let migrator = match backend {
            Backend::Sqlite => &MIGRATOR,
            Backend::Postgres => &PG_MIGRATOR,
        };
        match backend {
            // sqlx takes no lock around SQLite migrations: two processes that open a new
            // file (or start after an upgrade) together can both find a migration to apply,
            // and the second to commit fails ("table ... already exists"). Each migration
            // is one transaction, so trying again is safe, and then finds it applied.
            Backend::Sqlite => {
                let mut attempt = 1;
                loop {
                    match migrator.run(&pool).await {
                        Err(e) if attempt < SQLITE_MIGRATION_ATTEMPTS => {
                            tracing::debug!(error = %e, attempt, "migrating the store failed; trying again");
                            tokio::time::sleep(Duration::from_millis(50 * attempt as u64)).await;
                            attempt += 1;
                        }
                        done => break done,
                    }
                }
            }
            // On a connection of its own, without the pool's `lock_timeout`: replicas
            // starting together wait for one another's migration, however long it takes,
            // on the migrator's advisory lock.
            Backend::Postgres => {
                async {
                    let own = AnyPoolOptions::new()
                        .max_connections(1)
                        .acquire_timeout(options.acquire_timeout)
                        .connect(url)
                        .await?;
                    let done = migrator.run(&own).await;
                    own.close().await;
                    done
                }
                .await
            }
        }
        .with_context(|| format!("cannot apply migrations to store {shown}"))?;
        let store = Store {
            pool,
            writer,
            backend,
            delivery_writer: Default::default(),
            record_stats: Default::default(),
            sqlite_file: backend == Backend::Sqlite && !is_in_memory(url),
        };
        if store.sqlite_file {
            spawn_checkpointer(&store, forced_restart_wait(options.acquire_timeout));
        }
        Ok(store)
    }

    /// Opens the store at `url` for reading only, as `runwarden audit` does: unlike
    /// [`Store::connect`] it applies no migration, creates no table and writes nothing (a
    /// SQLite file is opened with `mode=ro` and `query_only`, never created; SQLite may
    /// add the `-wal` and `-shm` files of a WAL database beside it, as any reader does. A
    /// PostgreSQL session has `default_transaction_read_only` on).
    ///
    /// `Ok(None)`: the database holds no table at all (an empty SQLite file, a PostgreSQL
    /// database made for the bot before its first start): nothing was recorded there.
    /// (A SQLite file that does not exist cannot be opened: callers that want to say
    /// "nothing recorded yet" check for it first.)
    ///
    /// An error, naming the store without its credentials, when the database has tables
    /// but not runwarden's schema (the wrong database), or a schema this binary does not
    /// read as it is: migrated by a newer runwarden (a migration this binary does not
    /// know), an older one (a migration of this binary not applied yet: only `serve` or
    /// `sweep` apply it), a migration that differs from this binary's, or one that did not
    /// finish.
    pub async fn connect_read_only(url: &str) -> anyhow::Result<Option<Store>> {
        Self::connect_read_only_with(url, StoreOptions::default()).await
    }

    /// [`Store::connect_read_only`] with explicit [`StoreOptions`].
    pub async fn connect_read_only_with(
        url: &str,
        options: StoreOptions,
    ) -> anyhow::Result<Option<Store>> {
        sqlx::any::install_default_drivers();
        let shown = redact_url(url);
        let backend = Backend::of_url(url).with_context(|| {
            format!("cannot open store {shown}: the URL must start with sqlite: or postgres://")
        })?;
        let pool = match backend {
            Backend::Sqlite => connect_sqlite_read_only(url, &options).await,
            Backend::Postgres => connect_postgres_read_only(url, &options).await,
        }
        .with_context(|| format!("cannot open store {shown}"))?;
        let migrator = match backend {
            Backend::Sqlite => &MIGRATOR,
            Backend::Postgres => &PG_MIGRATOR,
        };
        let schema = read_schema(&pool, backend).await;
        let schema = match schema {
            Ok(s) => s,
            Err(e) => {
                pool.close().await;
                return Err(anyhow::Error::new(e)
                    .context(format!("cannot read the schema of store {shown}")));
            }
        };
        if let Err(problem) = schema_problem(&schema, migrator) {
            pool.close().await;
            return match problem {
                None => Ok(None),
                Some(why) => Err(anyhow::anyhow!("{shown}: {why}")),
            };
        }
        Ok(Some(Store {
            pool: pool.clone(),
            writer: pool,
            backend,
            delivery_writer: Default::default(),
            record_stats: Default::default(),
            sqlite_file: false,
        }))
    }

    /// Which database this store is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Readiness probe: one round trip to the database.
    pub async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes every connection (on shutdown, after the last write).
    pub async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }

    /// A write transaction that holds the write lock from its first statement: SQLite's
    /// `BEGIN IMMEDIATE`; on PostgreSQL a transaction-level advisory lock shared by every
    /// replica, so that read-then-write transactions never interleave there either.
    ///
    /// When SQLite rolls a transaction back by itself (a full disk, an I/O error in the
    /// middle of it), sqlx's connection still counts it as open: its `ROLLBACK` finds no
    /// transaction and fails, and every later `BEGIN` on that connection is refused
    /// (`InvalidSavePointStatement`). The writer connection is then closed, and the pool
    /// opens a fresh one, so that the store writes again once the fault is gone.
    async fn begin_write(&self) -> StoreResult<Transaction<'static, Any>> {
        match self.backend {
            Backend::Sqlite => Ok(begin_sqlite_write(&self.writer).await?),
            Backend::Postgres => {
                let mut tx = self.pool.begin().await?;
                sqlx::query("SELECT 1 FROM pg_advisory_xact_lock($1)")
                    .bind(PG_WRITE_LOCK)
                    .execute(&mut *tx)
                    .await?;
                Ok(tx)
            }
        }
    }
}

/// The write transaction of an action's outcome ([`Store::begin_outcome`]).
pub(super) enum OutcomeTx {
    /// A SQLite file: committed with `synchronous = NORMAL`.
    Relaxed(RelaxedWrite),
    /// PostgreSQL, or SQLite in memory (no fsync to save, and a connection that must
    /// never be closed: the database lives in it): an ordinary write transaction.
    Plain(Transaction<'static, Any>),
}

/// The SQLite writer connection inside a transaction begun with `synchronous = NORMAL`.
/// Unless [`OutcomeTx::commit`] ends it and puts `FULL` back, the connection is taken out
/// of the pool when this is dropped (an error, a cancelled future): closing it rolls back
/// what it holds, and the pool opens a fresh connection, set up with `FULL` like every
/// other, so that no later commit can run without its fsync by mistake.
pub(super) struct RelaxedWrite {
    conn: Option<sqlx::pool::PoolConnection<Any>>,
}

impl Drop for RelaxedWrite {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            drop(conn.detach());
        }
    }
}

impl OutcomeTx {
    /// The connection to run the transaction's statements on.
    pub(super) fn conn(&mut self) -> &mut sqlx::AnyConnection {
        match self {
            OutcomeTx::Relaxed(w) => w
                .conn
                .as_deref_mut()
                .expect("a relaxed write holds its connection until it is committed or dropped"),
            OutcomeTx::Plain(tx) => tx,
        }
    }

    /// Commits (on SQLite without waiting for the disk, and the connection is back at
    /// `synchronous = FULL` before it returns to the pool).
    pub(super) async fn commit(self) -> StoreResult<()> {
        match self {
            OutcomeTx::Relaxed(mut w) => {
                if let Some(conn) = w.conn.as_deref_mut() {
                    sqlx::query("COMMIT; PRAGMA synchronous = FULL")
                        .execute(conn)
                        .await?;
                }
                // Back to the pool as it came.
                drop(w.conn.take());
                Ok(())
            }
            OutcomeTx::Plain(tx) => Ok(tx.commit().await?),
        }
    }
}

impl Store {
    /// A write transaction for what an action did (its outcome, the run as it left it).
    ///
    /// On SQLite its commit does not wait for the disk (`synchronous = NORMAL` for this
    /// transaction alone; the connection is set back to `FULL` before anything else uses
    /// it). It survives a crash of the process like any commit, and the next commit with
    /// its fsync (a webhook's, an event's record, a checkpoint) makes it durable against
    /// an OS crash or power loss too: SQLite's log is replayed in order, so at most the
    /// last few milliseconds of commits are lost, as a whole. What can be lost that way
    /// is only an outcome, never a decision or an accepted action (those commits wait for
    /// the disk), so the action is carried out again and its idempotence makes that
    /// harmless, exactly as after a crash between the side effect and this commit
    /// (SPEC §6). What it saves is one fsync per action, and the queueing of the next
    /// events' commits behind it on the one writer connection.
    ///
    /// On PostgreSQL, and on SQLite in memory, an ordinary transaction.
    pub(super) async fn begin_outcome(&self) -> StoreResult<OutcomeTx> {
        match self.backend {
            Backend::Sqlite if self.sqlite_file => {
                let mut conn = self.writer.acquire().await?;
                // One hand-off to SQLite's thread for both.
                let begun = sqlx::query("PRAGMA synchronous = NORMAL; BEGIN IMMEDIATE")
                    .execute(&mut *conn)
                    .await;
                // Wrapped first, so that a failed begin detaches the connection too.
                let w = RelaxedWrite { conn: Some(conn) };
                begun?;
                Ok(OutcomeTx::Relaxed(w))
            }
            Backend::Sqlite => Ok(OutcomeTx::Plain(self.begin_write().await?)),
            Backend::Postgres => Ok(OutcomeTx::Plain(self.pool.begin().await?)),
        }
    }
}

/// Rows one statement of a prune ([`Store::prune_deliveries`], [`Store::prune_runs`],
/// [`Store::prune_audit`]) deletes at most: a large backlog is deleted in many short
/// write transactions, between which the intake's commits go on.
pub const PRUNE_CHUNK: i64 = 1000;

impl Store {
    /// Runs `sql` (a `DELETE` of at most `$2` rows older than `$1`) until it deletes
    /// fewer than [`PRUNE_CHUNK`]; returns the rows deleted in all.
    pub(super) async fn delete_in_chunks(&self, sql: &str, before: i64) -> StoreResult<u64> {
        let mut total = 0;
        loop {
            let done = sqlx::query(sql)
                .bind(before)
                .bind(PRUNE_CHUNK)
                .execute(&self.writer)
                .await?;
            total += done.rows_affected();
            if done.rows_affected() < PRUNE_CHUNK as u64 {
                return Ok(total);
            }
        }
    }
}

/// `BEGIN IMMEDIATE` on the SQLite writer pool, reopening its connection when it lost
/// track of a transaction SQLite rolled back by itself (see [`Store::begin_write`]).
async fn begin_sqlite_write(writer: &AnyPool) -> Result<Transaction<'static, Any>, sqlx::Error> {
    match writer.begin_with("BEGIN IMMEDIATE").await {
        Err(sqlx::Error::InvalidSavePointStatement) => {
            tracing::warn!(
                "the store's writer connection lost track of a transaction SQLite rolled back; reopening it"
            );
            let conn = writer.acquire().await?;
            let _ = conn.close().await;
            writer.begin_with("BEGIN IMMEDIATE").await
        }
        other => other,
    }
}

/// Page cache of each SQLite connection, KiB (SQLite's default is 2 MiB). The database
/// file is in the OS page cache anyway; a smaller cache per connection keeps the bot's
/// footprint flat however many pages one large transaction (a retention sweep's
/// decisions) touches.
pub const SQLITE_CACHE_KIB: u32 = 512;

/// How often the checkpointer of a SQLite file folds the WAL back into the database.
///
/// Short, so that each checkpoint has little to write: the database file's `fsync` at
/// the end of a checkpoint flushes everything copied since the last one, and a commit's
/// `fsync` of the WAL that lands meanwhile waits behind it on the same disk. At 200
/// events/s, 500 ms gathered several MiB per checkpoint and tail latencies of 7 ms and
/// more, 100 ms well under 1 MiB (BENCHMARKS.md, event-to-cancel). A checkpoint with
/// nothing new to copy does no I/O.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(100);

/// Whether a SQLite URL is an in-memory database.
pub(crate) fn is_in_memory(url: &str) -> bool {
    url.starts_with("sqlite::memory:") || url.contains("mode=memory")
}

/// Frames (pages) in the WAL past which the checkpointer tries to start the log over
/// whenever no reader is using it (16 MiB of 4 KiB pages); also the size the WAL file is
/// truncated to when it restarts.
pub const WAL_RESTART_FRAMES: i64 = 4096;

/// Frames past which it waits for the readers to let it (twice [`WAL_RESTART_FRAMES`]).
pub const WAL_FORCE_RESTART_FRAMES: i64 = 2 * WAL_RESTART_FRAMES;

/// WAL checkpoints of a SQLite file, in the background: the connections have automatic
/// checkpoints off, so that no commit (an acknowledgement, a decision) waits for one.
///
/// Every [`CHECKPOINT_INTERVAL`] a passive checkpoint copies what it can back into the
/// database file without blocking anyone. A passive checkpoint cannot restart the log
/// while readers keep using it, which under steady traffic can be most of the time, so
/// the WAL would keep growing. Once it holds [`WAL_RESTART_FRAMES`], a `RESTART`
/// checkpoint on the writer connection starts the log over at the first tick when no
/// reader is using it (it gives up at once otherwise); past
/// [`WAL_FORCE_RESTART_FRAMES`] it waits for the readers of the moment, at most
/// `restart_wait` ([`forced_restart_wait`]; new writes wait for it), and tries again at
/// the next tick if they are still there. `journal_size_limit` then gives the space back. The task ends once
/// every handle on the store is gone (or the pool is closed); SQLite checkpoints the rest
/// when the last connection closes.
fn spawn_checkpointer(store: &Store, restart_wait: Duration) {
    let alive = std::sync::Arc::downgrade(&store.delivery_writer);
    let pool = store.pool.clone();
    let writer = store.writer.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(CHECKPOINT_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if alive.strong_count() == 0 || pool.is_closed() {
                break;
            }
            let passive: Result<(i64, i64, i64), _> =
                sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
                    .fetch_one(&pool)
                    .await;
            let log = match passive {
                Ok((_, log, _)) => log,
                Err(e) => {
                    tracing::debug!(error = %e, "WAL checkpoint postponed");
                    continue;
                }
            };
            if log >= WAL_RESTART_FRAMES
                && let Err(e) = restart_wal(
                    &writer,
                    if log >= WAL_FORCE_RESTART_FRAMES {
                        restart_wait
                    } else {
                        Duration::ZERO
                    },
                )
                .await
            {
                tracing::debug!(error = %e, frames = log, "WAL restart postponed");
            }
        }
    });
}

/// A `RESTART` checkpoint on the writer connection that waits at most `wait` for the
/// readers of the moment (its busy timeout for the one statement; `ZERO`: it succeeds
/// only when no reader is using the log).
async fn restart_wal(writer: &AnyPool, wait: Duration) -> Result<(), sqlx::Error> {
    let mut conn = writer.acquire().await?;
    let busy_ms: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
        .fetch_one(&mut *conn)
        .await?;
    sqlx::query(&format!("PRAGMA busy_timeout = {}", wait.as_millis()))
        .execute(&mut *conn)
        .await?;
    let result = sqlx::query("PRAGMA wal_checkpoint(RESTART)")
        .execute(&mut *conn)
        .await;
    sqlx::query(&format!("PRAGMA busy_timeout = {busy_ms}"))
        .execute(&mut *conn)
        .await?;
    result.map(drop)
}

/// How long a forced restart of the WAL ([`WAL_FORCE_RESTART_FRAMES`]) waits for readers:
/// a quarter of the pools' acquire timeout. The restart holds the one writer connection
/// while it waits, so a write queued behind it (a webhook's commit) must still get the
/// connection well within its own acquire timeout; with the connection's busy timeout
/// (5 s, as long as the acquire timeout) such writes were turned away as "store
/// unavailable" whenever readers kept the log busy for that long. A restart that gives
/// up is tried again at the next tick, after the writes that queued meanwhile.
pub fn forced_restart_wait(acquire_timeout: Duration) -> Duration {
    acquire_timeout / 4
}

/// The pools of a SQLite URL, for reads and for writes (see [`Store`]): WAL (checkpointed
/// in the background), `synchronous=FULL`, the busy timeout and foreign keys set on every
/// connection.
async fn connect_sqlite(url: &str, options: &StoreOptions) -> anyhow::Result<(AnyPool, AnyPool)> {
    let in_memory = is_in_memory(url);
    let explicit_mode = url.contains("mode=");
    // Created when missing unless the URL says otherwise.
    let url = if explicit_mode || in_memory {
        url.to_string()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    };
    let connect = AnyConnectOptions::from_str(&url)?;
    let busy_ms = options.busy_timeout.as_millis();
    let pool = AnyPoolOptions::new()
        .acquire_timeout(options.acquire_timeout)
        // A SQLite connection is a file handle in this process: a ping before each use
        // (a round trip to sqlx's connection thread) would find nothing a statement does
        // not report itself.
        .test_before_acquire(false)
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                if !in_memory {
                    sqlx::query("PRAGMA journal_mode = WAL")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("PRAGMA wal_autocheckpoint = 0")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query(&format!(
                        "PRAGMA journal_size_limit = {}",
                        WAL_RESTART_FRAMES * 4096
                    ))
                    .execute(&mut *conn)
                    .await?;
                }
                sqlx::query(&format!("PRAGMA busy_timeout = {busy_ms}"))
                    .execute(&mut *conn)
                    .await?;
                sqlx::query("PRAGMA synchronous = FULL")
                    .execute(&mut *conn)
                    .await?;
                sqlx::query("PRAGMA foreign_keys = ON")
                    .execute(&mut *conn)
                    .await?;
                sqlx::query(&format!("PRAGMA cache_size = -{SQLITE_CACHE_KIB}"))
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            })
        });
    if in_memory {
        // The database lives as long as one connection does: keep exactly one, forever,
        // for reads and writes alike.
        let pool = pool
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(connect)
            .await?;
        return Ok((pool.clone(), pool));
    }
    let writer = pool
        .clone()
        .max_connections(1)
        .connect_with(connect.clone())
        .await?;
    let readers = pool
        .max_connections(options.max_connections.unwrap_or(SQLITE_READERS).max(1))
        .connect_with(connect)
        .await?;
    Ok((readers, writer))
}

/// The tables of a database and the migrations recorded in it, as
/// [`Store::connect_read_only`] finds them.
#[derive(Debug, Default)]
struct Schema {
    /// The tables (SQLite's own and PostgreSQL's catalogs aside).
    tables: Vec<String>,
    /// `_sqlx_migrations`: version, checksum, whether it finished.
    applied: Vec<(i64, Vec<u8>, bool)>,
}

/// Name of the table where sqlx records the migrations it applied.
const MIGRATIONS_TABLE: &str = "_sqlx_migrations";

/// Reads the [`Schema`] of a database, writing nothing.
async fn read_schema(pool: &AnyPool, backend: Backend) -> Result<Schema, sqlx::Error> {
    let tables_sql = match backend {
        Backend::Sqlite => {
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
        }
        // The schema unqualified names resolve to, where the migrations create the tables.
        Backend::Postgres => {
            "SELECT tablename::text FROM pg_catalog.pg_tables WHERE schemaname = current_schema()"
        }
    };
    let mut tables: Vec<String> = sqlx::query_scalar(tables_sql).fetch_all(pool).await?;
    tables.sort();
    let mut schema = Schema {
        tables,
        applied: Vec::new(),
    };
    if schema.tables.iter().any(|t| t == MIGRATIONS_TABLE) {
        let rows: Vec<(i64, Vec<u8>, i64)> = sqlx::query_as(
            "SELECT version, checksum, CAST(CASE WHEN success THEN 1 ELSE 0 END AS BIGINT) \
             FROM _sqlx_migrations ORDER BY version",
        )
        .fetch_all(pool)
        .await?;
        schema.applied = rows.into_iter().map(|(v, c, ok)| (v, c, ok != 0)).collect();
    }
    Ok(schema)
}

/// Whether `schema` is the one `migrator` leads to, the schema this binary reads. `Ok`:
/// it is. `Err(None)`: the database has no table at all (nothing recorded there yet).
/// `Err(Some(why))`: another schema, or another version of runwarden's.
fn schema_problem(schema: &Schema, migrator: &Migrator) -> Result<(), Option<String>> {
    if schema.tables.is_empty() {
        return Err(None);
    }
    let known: Vec<&sqlx::migrate::Migration> = migrator
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .collect();
    let is_known = |v: i64| known.iter().any(|m| m.version == v);
    let check_url = "check [store] url; `audit` never creates nor migrates a schema";
    let ours = ["actions", "decisions", "deliveries", "leases"];
    if schema.applied.is_empty() && ours.iter().all(|t| schema.tables.iter().any(|x| x == t)) {
        return Err(Some(format!(
            "it has runwarden's tables but no record of their migrations ({MIGRATIONS_TABLE}): \
             not a schema a runwarden made; {check_url}"
        )));
    }
    if schema.applied.is_empty() || !schema.applied.iter().any(|(v, _, _)| is_known(*v)) {
        let mut shown: Vec<&str> = schema.tables.iter().map(String::as_str).take(5).collect();
        if schema.tables.len() > 5 {
            shown.push("...");
        }
        return Err(Some(format!(
            "this database does not hold runwarden's schema (its tables: {}); {check_url}",
            shown.join(", ")
        )));
    }
    if let Some((v, _, _)) = schema.applied.iter().find(|(v, _, _)| !is_known(*v)) {
        return Err(Some(format!(
            "its schema was migrated by a newer runwarden (migration {v} is unknown to runwarden {}); \
             read it with that version or a newer one (`audit` never migrates)",
            env!("CARGO_PKG_VERSION")
        )));
    }
    if let Some((v, _, _)) = schema.applied.iter().find(|(_, _, ok)| !ok) {
        return Err(Some(format!(
            "its migration {v} did not finish; start `runwarden serve` to see why"
        )));
    }
    let newest_applied = schema.applied.iter().map(|(v, _, _)| *v).max().unwrap_or(0);
    for m in &known {
        match schema.applied.iter().find(|(v, _, _)| *v == m.version) {
            // A store one or more migrations behind (this binary is newer than the
            // processes that write it, as right after an upgrade): read as it is, since
            // `audit` must not migrate a store that older replicas may still use.
            None if m.version > newest_applied => {
                tracing::warn!(
                    "the store's schema is older than runwarden {} writes (migration {} is not \
                     applied yet): reading it as it is, without migrating it",
                    env!("CARGO_PKG_VERSION"),
                    m.version
                );
            }
            None => {
                return Err(Some(format!(
                    "its migration {} is missing while later ones are applied: not a schema a \
                     runwarden made; {check_url}",
                    m.version
                )));
            }
            Some((v, checksum, _)) if checksum.as_slice() != m.checksum.as_ref() => {
                return Err(Some(format!(
                    "its migration {v} differs from runwarden {}'s (another checksum); {check_url}",
                    env!("CARGO_PKG_VERSION")
                )));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// A read-only pool on a SQLite URL ([`Store::connect_read_only`]): one connection,
/// opened with `mode=ro` (whatever mode the URL asked for; it creates nothing) and
/// `query_only`, waiting up to the busy timeout for a lock. None of the WAL settings of
/// [`connect_sqlite`]: they would write.
async fn connect_sqlite_read_only(url: &str, options: &StoreOptions) -> anyhow::Result<AnyPool> {
    let in_memory = is_in_memory(url);
    let url = if in_memory {
        url.to_string()
    } else {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut params: Vec<&str> = query
            .split('&')
            .filter(|p| !p.is_empty() && !p.starts_with("mode="))
            .collect();
        params.push("mode=ro");
        format!("{base}?{}", params.join("&"))
    };
    let connect = AnyConnectOptions::from_str(&url)?;
    let busy_ms = options.busy_timeout.as_millis();
    let pool = AnyPoolOptions::new()
        .acquire_timeout(options.acquire_timeout)
        .max_connections(1)
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                sqlx::query(&format!("PRAGMA busy_timeout = {busy_ms}"))
                    .execute(&mut *conn)
                    .await?;
                sqlx::query("PRAGMA query_only = ON")
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            })
        })
        .connect_with(connect)
        .await?;
    Ok(pool)
}

/// A read-only pool on a PostgreSQL URL ([`Store::connect_read_only`]): every
/// transaction of its sessions is read only (`default_transaction_read_only`), and the
/// busy timeout becomes `lock_timeout` as in [`connect_postgres`].
async fn connect_postgres_read_only(url: &str, options: &StoreOptions) -> anyhow::Result<AnyPool> {
    let connect = AnyConnectOptions::from_str(url)?;
    let lock_ms = options.busy_timeout.as_millis().max(1);
    let pool = AnyPoolOptions::new()
        .acquire_timeout(options.acquire_timeout)
        .max_connections(options.max_connections.unwrap_or(2).max(1))
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                sqlx::query("SET default_transaction_read_only = on")
                    .execute(&mut *conn)
                    .await?;
                sqlx::query(&format!("SET lock_timeout = {lock_ms}"))
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            })
        })
        .connect_with(connect)
        .await?;
    Ok(pool)
}

/// The pool of a PostgreSQL URL: the busy timeout becomes `lock_timeout` (a lock waited
/// for longer fails with SQLSTATE 55P03, [`StoreError::Unavailable`]).
async fn connect_postgres(url: &str, options: &StoreOptions) -> anyhow::Result<AnyPool> {
    let connect = AnyConnectOptions::from_str(url)?;
    let lock_ms = options.busy_timeout.as_millis().max(1);
    let pool = AnyPoolOptions::new()
        .acquire_timeout(options.acquire_timeout)
        .max_connections(options.max_connections.unwrap_or(POSTGRES_POOL).max(1))
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                sqlx::query(&format!("SET lock_timeout = {lock_ms}"))
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            })
        });
    Ok(pool.connect_with(connect).await?)
}

/// A store URL fit for messages: the scheme and path of a SQLite URL; never the
/// credentials of a server URL.
fn redact_url(url: &str) -> String {
    if url.starts_with("sqlite:") {
        return url.split('?').next().unwrap_or(url).to_string();
    }
    match url::Url::parse(url) {
        Ok(u) => format!(
            "{}://{}{}",
            u.scheme(),
            u.host_str().unwrap_or(""),
            u.path()
        ),
        Err(_) => "(unparseable URL)".to_string(),
    }
}

/// `DateTime` -> stored epoch milliseconds.
fn to_ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// Stored epoch milliseconds -> `DateTime`.
fn from_ms(ms: i64) -> StoreResult<DateTime<Utc>> {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .ok_or_else(|| StoreError::Corrupt(format!("timestamp {ms} out of range")))
}

fn opt_from_ms(ms: Option<i64>) -> StoreResult<Option<DateTime<Utc>>> {
    ms.map(from_ms).transpose()
}

/// `now + d` in epoch milliseconds, saturating.
/// `now + d` in milliseconds, at most the latest time [`from_ms`] reads back (a value
/// past it would be written, then refused on every read of its row).
fn ms_after(now: DateTime<Utc>, d: Duration) -> i64 {
    let d = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    to_ms(now)
        .saturating_add(d)
        .min(DateTime::<Utc>::MAX_UTC.timestamp_millis())
}

/// The steps of SQLite's plan for `q`, an `EXPLAIN QUERY PLAN` with its parameters bound
/// (the store's tests of which index a statement uses).
#[cfg(test)]
pub(super) async fn query_plan<'q>(
    store: &Store,
    q: sqlx::query::QueryAs<'q, Any, (i64, i64, i64, String), sqlx::any::AnyArguments<'q>>,
) -> Vec<String> {
    q.fetch_all(&store.pool)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, _, _, detail)| detail)
        .collect()
}

/// A row limit for SQL (negative means none wanted: 0).
fn limit(n: impl Into<i64>) -> i64 {
    n.into().max(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted_for_messages() {
        assert_eq!(
            redact_url("sqlite://data/rw.db?mode=rwc"),
            "sqlite://data/rw.db"
        );
        assert_eq!(
            redact_url("postgres://bot:hunter2@db.internal:5432/runwarden"),
            "postgres://db.internal/runwarden"
        );
        assert!(!redact_url("postgres://bot:hunter2@db/x").contains("hunter2"));
    }

    #[test]
    fn timestamps_round_trip_at_millisecond_precision() {
        let t = DateTime::parse_from_rfc3339("2026-01-02T03:04:05.678Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(from_ms(to_ms(t)).unwrap(), t);
        assert_eq!(ms_after(t, Duration::from_secs(2)), to_ms(t) + 2_000);
        assert!(from_ms(i64::MAX).is_err());
        // A time too far ahead is clamped to one that can be read back.
        let far = ms_after(t, Duration::MAX);
        assert_eq!(far, DateTime::<Utc>::MAX_UTC.timestamp_millis());
        assert!(from_ms(far).is_ok());
    }

    #[tokio::test]
    async fn in_memory_store_migrates_and_answers_ping() {
        let store = Store::connect("sqlite::memory:").await.unwrap();
        store.ping().await.unwrap();
        // The single connection keeps the schema alive across operations.
        assert_eq!(store.count_unprocessed().await.unwrap(), 0);
        assert_eq!(store.queue_depth().await.unwrap(), 0);
    }

    /// An outcome's transaction runs at `synchronous = NORMAL`; committed or dropped, it
    /// leaves the writer at `FULL`, and a dropped one leaves nothing behind.
    #[tokio::test]
    async fn an_outcome_commits_without_its_fsync_and_the_writer_stays_at_full() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        let store = Store::connect(&url).await.unwrap();
        let sync = |n: i64| match n {
            1 => "NORMAL",
            2 => "FULL",
            _ => "other",
        };
        let level = "PRAGMA synchronous";
        let mut tx = store.begin_write().await.unwrap();
        sqlx::query("CREATE TABLE probe (x INTEGER)")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();

        let mut out = store.begin_outcome().await.unwrap();
        let inside: i64 = sqlx::query_scalar(level)
            .fetch_one(out.conn())
            .await
            .unwrap();
        assert_eq!(sync(inside), "NORMAL");
        sqlx::query("INSERT INTO probe VALUES (1)")
            .execute(out.conn())
            .await
            .unwrap();
        out.commit().await.unwrap();
        let after: i64 = sqlx::query_scalar(level)
            .fetch_one(&store.writer)
            .await
            .unwrap();
        assert_eq!(sync(after), "FULL");

        // Dropped before its commit (an error on the way, a cancelled future).
        let mut out = store.begin_outcome().await.unwrap();
        sqlx::query("INSERT INTO probe VALUES (2)")
            .execute(out.conn())
            .await
            .unwrap();
        drop(out);
        let mut tx = store.begin_write().await.unwrap();
        let next: i64 = sqlx::query_scalar(level).fetch_one(&mut *tx).await.unwrap();
        assert_eq!(sync(next), "FULL");
        sqlx::query("INSERT INTO probe VALUES (3)")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let rows: Vec<i64> = sqlx::query_scalar("SELECT x FROM probe ORDER BY x")
            .fetch_all(&store.pool)
            .await
            .unwrap();
        assert_eq!(rows, [1, 3]);
    }

    /// In memory, where the database lives in its one connection, an outcome dropped
    /// half-way is rolled back without closing that connection.
    #[tokio::test]
    async fn an_outcome_dropped_half_way_keeps_an_in_memory_store() {
        let store = Store::connect("sqlite::memory:").await.unwrap();
        let mut out = store.begin_outcome().await.unwrap();
        sqlx::query("DELETE FROM deliveries")
            .execute(out.conn())
            .await
            .unwrap();
        drop(out);
        assert_eq!(
            store.queue_depth().await.unwrap(),
            0,
            "the schema is still there"
        );
        let mut out = store.begin_outcome().await.unwrap();
        sqlx::query("DELETE FROM deliveries")
            .execute(out.conn())
            .await
            .unwrap();
        out.commit().await.unwrap();
        assert_eq!(store.queue_depth().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_file_store_uses_wal_full_sync_busy_timeout_and_foreign_keys() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        let store = Store::connect(&url).await.unwrap();
        let mut conn = store.pool.acquire().await.unwrap();
        let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(journal, "wal");
        let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(synchronous, 2, "FULL");
        let busy: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(busy, 5000);
        let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(fk, 1);
        let auto: i64 = sqlx::query_scalar("PRAGMA wal_autocheckpoint")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(auto, 0, "checkpoints run in the background");
        let cache: i64 = sqlx::query_scalar("PRAGMA cache_size")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(cache, -i64::from(SQLITE_CACHE_KIB));
    }

    /// A forced restart of the WAL waits for a reader that does not let go, and holds the
    /// one writer connection meanwhile: it must give up in time for the writes queued
    /// behind it, which are otherwise turned away ("store unavailable": a 503 to a
    /// webhook) once their acquire timeout runs out.
    #[tokio::test]
    async fn a_forced_wal_restart_never_makes_a_queued_write_time_out() {
        use sqlx::Connection as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let url = format!("sqlite://{}", path.display());
        let options = StoreOptions {
            acquire_timeout: Duration::from_secs(2),
            ..StoreOptions::default()
        };
        assert!(options.busy_timeout > options.acquire_timeout);
        let store = Store::connect_with(&url, options).await.unwrap();
        // A reader that keeps its snapshot (a long export, a stuck second process):
        // nothing written after it can be checkpointed, and no restart can happen.
        let mut reader = sqlx::SqliteConnection::connect(&url).await.unwrap();
        let mut snapshot = reader.begin().await.unwrap();
        let _: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM deliveries")
            .fetch_one(&mut *snapshot)
            .await
            .unwrap();
        let wal = dir.path().join("s.db-wal");
        let wal_len = || std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        let forced = (WAL_FORCE_RESTART_FRAMES * (4096 + 24)) as u64;
        let payload = "x".repeat(64 * 1024);
        let mut stored: i64 = 0;
        let mut past_force: Option<std::time::Instant> = None;
        // Past the force threshold, every tick tries a restart that waits for the reader;
        // the writes go on in between, each of them queued behind one such wait at most.
        // Writing for several ticks past it:
        while past_force.is_none_or(|t| t.elapsed() < 15 * CHECKPOINT_INTERVAL) {
            assert!(
                past_force.is_some() || stored < 3000,
                "the WAL never reached {forced} bytes"
            );
            store
                .insert_delivery(crate::store::NewDelivery {
                    source: "github".into(),
                    delivery_id: format!("d-{stored}"),
                    event: "push".into(),
                    payload: payload.clone(),
                    received_at: Utc::now(),
                })
                .await
                .unwrap_or_else(|e| panic!("write {stored} turned away: {e}"));
            stored += 1;
            if past_force.is_none() && wal_len() > forced {
                past_force = Some(std::time::Instant::now());
            }
        }
        // Once the reader lets go, the log is started over, and trimmed by the first
        // commit after that (SQLite applies `journal_size_limit` there).
        snapshot.commit().await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while wal_len() > (WAL_RESTART_FRAMES * 4096) as u64 && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(CHECKPOINT_INTERVAL).await;
            store
                .insert_delivery(crate::store::NewDelivery {
                    source: "github".into(),
                    delivery_id: format!("d-{stored}"),
                    event: "push".into(),
                    payload: String::new(),
                    received_at: Utc::now(),
                })
                .await
                .unwrap();
            stored += 1;
        }
        assert!(
            wal_len() <= (WAL_RESTART_FRAMES * 4096) as u64,
            "the WAL is {} bytes after the reader let go: not restarted",
            wal_len()
        );
        assert_eq!(store.count_unprocessed().await.unwrap(), stored);
    }

    #[tokio::test]
    async fn the_background_checkpointer_keeps_the_wal_from_growing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = Store::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        let wal = dir.path().join("s.db-wal");
        let payload = "x".repeat(64 * 1024);
        // Readers always at work, their read transactions overlapping (as a busy `serve`
        // and a second process reading the store): a passive checkpoint alone never finds
        // the log free to restart under them.
        let reading = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let mut readers = Vec::new();
        for offset in [0u64, 40] {
            let (reading, url) = (reading.clone(), format!("sqlite://{}", path.display()));
            readers.push(tokio::spawn(async move {
                use sqlx::Connection as _;
                tokio::time::sleep(Duration::from_millis(offset)).await;
                let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
                while reading.load(std::sync::atomic::Ordering::Relaxed) {
                    let mut tx = conn.begin().await.unwrap();
                    let _: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM deliveries")
                        .fetch_one(&mut *tx)
                        .await
                        .unwrap();
                    tokio::time::sleep(Duration::from_millis(80)).await;
                    tx.commit().await.unwrap();
                }
            }));
        }
        // Without checkpoints the WAL would hold every page written: ~20 MiB.
        for round in 0..30 {
            for i in 0..32 {
                store
                    .insert_delivery(crate::store::NewDelivery {
                        source: "github".into(),
                        delivery_id: format!("d-{round}-{i}"),
                        event: "push".into(),
                        payload: payload.clone(),
                        received_at: Utc::now(),
                    })
                    .await
                    .unwrap();
            }
            // Let the checkpointer copy the burst into the database file (which, without
            // checkpoints, would stay at its initial size while the WAL grows).
            let db_len = || std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            let want = (round + 1) * 32 * 64 * 1024;
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while db_len() < want && std::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert!(
                db_len() >= want,
                "round {round}: the database file is {} bytes, want {want}: no checkpoint",
                db_len()
            );
        }
        reading.store(false, std::sync::atomic::Ordering::Relaxed);
        for r in readers {
            r.await.unwrap();
        }
        let wal_len = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        let limit = (WAL_FORCE_RESTART_FRAMES * 4096 * 3 / 2) as u64;
        assert!(
            wal_len < limit,
            "WAL is {wal_len} bytes after 60 MiB of writes under steady reads: not restarted"
        );
        assert_eq!(store.count_unprocessed().await.unwrap(), 960);
    }

    #[tokio::test]
    async fn unreachable_postgres_and_unknown_urls_fail_without_leaking_credentials() {
        let options = StoreOptions {
            acquire_timeout: Duration::from_millis(500),
            ..StoreOptions::default()
        };
        // Nothing listens on port 1.
        let err = Store::connect_with("postgres://bot:hunter2@127.0.0.1:1/x", options)
            .await
            .unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("postgres://127.0.0.1/x"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        let err = Store::connect("mysql://localhost/x").await.unwrap_err();
        assert!(format!("{err:#}").contains("sqlite:"));
    }

    #[test]
    fn urls_select_their_backend() {
        assert_eq!(Backend::of_url("sqlite::memory:"), Some(Backend::Sqlite));
        assert_eq!(Backend::of_url("sqlite://rw.db"), Some(Backend::Sqlite));
        assert_eq!(Backend::of_url("postgres://h/db"), Some(Backend::Postgres));
        assert_eq!(
            Backend::of_url("postgresql://h/db"),
            Some(Backend::Postgres)
        );
        assert_eq!(Backend::of_url("mysql://h/db"), None);
        assert!(Backend::Postgres.is_shared());
        assert!(!Backend::Sqlite.is_shared());
    }

    /// A write that SQLite rolls back by itself (here a full database: `max_page_count`)
    /// leaves the writer connection believing it is still in a transaction; the next
    /// write must still succeed once there is room again, not fail forever.
    #[tokio::test]
    async fn the_store_writes_again_after_sqlite_rolled_back_a_transaction_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = Store::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
            .fetch_one(&store.writer)
            .await
            .unwrap();
        sqlx::query(&format!("PRAGMA max_page_count = {}", pages + 1))
            .execute(&store.writer)
            .await
            .unwrap();
        let big = "x".repeat(200_000);
        let mut tx = store.begin_write().await.unwrap();
        let full = sqlx::query(
            "INSERT INTO leases (name, holder, acquired_at, expires_at) VALUES ('a', $1, 1, 1)",
        )
        .bind(&big)
        .execute(&mut *tx)
        .await
        .unwrap_err();
        assert!(full.to_string().contains("full"), "{full}");
        assert!(tx.commit().await.is_err(), "SQLite rolled it back already");
        // Room again (a fresh connection has no page limit either).
        sqlx::query("PRAGMA max_page_count = 1073741823")
            .execute(&store.writer)
            .await
            .ok();
        let mut tx = store.begin_write().await.expect("the store writes again");
        sqlx::query(
            "INSERT INTO leases (name, holder, acquired_at, expires_at) VALUES ('b', 'me', 1, 1)",
        )
        .execute(&mut *tx)
        .await
        .unwrap();
        tx.commit().await.unwrap();
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM leases")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(n, 1);
    }
}
