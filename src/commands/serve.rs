//! `runwarden serve`: the bot — HTTP server, event processor, action executor, poller
//! and schedules — until SIGINT/SIGTERM. Shutdown is graceful: intake stops first, the
//! current pass of the processor and of the executor gets 5 s to finish and is then
//! dropped (its events stay in the store; its actions, and those claimed but not
//! started, are handed back for the next start), what the process still holds in the
//! store (its actions' leases, its named leases) is given back within
//! [`SHUTDOWN_CLEANUP_DEADLINE`] all in all (what the store cannot take in time, its write
//! lock held elsewhere, is logged at WARN and left to expire), and the process exits 0.
//!
//! Should one of those loops panic (a bug: inputs never should make one), the bot does
//! not go on half alive: `/readyz` answers 503 at once, the others stop as on SIGTERM and
//! the process exits 1, for its supervisor (systemd, Kubernetes) to start it again.
//! Everything it was doing is in the store and resumes there.
//!
//! [`Bot`] is also the harness of `demo` and of the end-to-end tests: the same code
//! paths as production, started in-process.

use crate::commands::errln;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{Config, Secrets};
use crate::currents::client::{ClientOptions, CurrentsClient};
use crate::github::client::GithubClient;
use crate::server::{AppContext, metrics::Metrics};
use crate::store::Store;
use crate::store::clock::{CLOCK_CHECK_INTERVAL, CLOCK_OFFSET_WARN};

/// How often the processor and executor look for due work without being woken
/// (retries, grace periods).
pub const IDLE_CHECK: Duration = Duration::from_millis(200);

/// Builds the Currents client of a config.
pub fn currents_client(config: &Config, secrets: &Secrets) -> anyhow::Result<CurrentsClient> {
    let key = secrets
        .currents_api_key
        .clone()
        .context("CURRENTS_API_KEY is not set")?;
    let opts = ClientOptions {
        base_url: config.currents.api_url.clone(),
        api_key: key,
        request_timeout: config.currents.request_timeout,
        max_requests_per_second: config.currents.max_requests_per_second,
        ..ClientOptions::default()
    };
    Ok(CurrentsClient::new(opts)?)
}

/// Checks the credentials [`build_context`] needs (Currents, and GitHub when configured)
/// without opening the store: a problem there is bad usage (exit 2), while a store that
/// cannot be opened is the work failing (exit 1).
pub fn credentials_problem(config: &Config, secrets: &Secrets) -> anyhow::Result<()> {
    currents_client(config, secrets)?;
    GithubClient::from_config(&config.github, secrets)
        .map_err(|e| anyhow::anyhow!("GitHub credentials: {e}"))?;
    Ok(())
}

/// Builds the shared context: store (migrated), clients, metrics.
pub async fn build_context(config: Config, secrets: Secrets) -> anyhow::Result<Arc<AppContext>> {
    build_context_with(config, secrets, crate::store::StoreOptions::default()).await
}

/// [`build_context`] with the store opened with `store_options` (`sweep` needs fewer
/// reader connections than `serve`).
pub async fn build_context_with(
    config: Config,
    secrets: Secrets,
    store_options: crate::store::StoreOptions,
) -> anyhow::Result<Arc<AppContext>> {
    // Its errors name the store without any password (`store::redact_url`): a URL's
    // user part, or a libpq parameter such as `?password=`.
    let store = Store::connect_with(&config.store.url, store_options).await?;
    let currents = currents_client(&config, &secrets)?;
    let github = GithubClient::from_config(&config.github, &secrets)
        .map_err(|e| anyhow::anyhow!("GitHub credentials: {e}"))?;
    let executor = crate::actions::ExecutorOptions {
        lease: config.store.action_lease,
        ..crate::actions::ExecutorOptions::default()
    };
    // The last full poll of any process on the store (this one before a restart, a
    // replica that held the poller): the first poll looks back to it.
    let last_poll = store
        .watermark(crate::store::watermarks::LAST_FULL_POLL)
        .await
        .map_err(|e| anyhow::anyhow!("cannot read the store: {e}"))?;
    Ok(Arc::new(AppContext {
        config: Arc::new(config),
        secrets: Arc::new(secrets),
        store,
        currents,
        github,
        metrics: Arc::new(Metrics::new()),
        wake: Arc::new(tokio::sync::Notify::new()),
        wake_executor: Arc::new(tokio::sync::Notify::new()),
        ready: false.into(),
        worker_id: format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()),
        executor,
        events: crate::server::EventBus::default(),
        history_cache: Default::default(),
        last_poll: std::sync::Mutex::new(last_poll),
        handoff: Default::default(),
    }))
}

/// A running bot.
pub struct Bot {
    pub ctx: Arc<AppContext>,
    pub addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
    /// The names of the loops that panicked, as they do ([`Bot::failed`]).
    failures: tokio::sync::mpsc::UnboundedReceiver<&'static str>,
    failure_tx: tokio::sync::mpsc::UnboundedSender<&'static str>,
}

impl Bot {
    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Runs `task` as one of the bot's loops, stopped and awaited by [`Bot::shutdown`].
    /// When it panics, the bot is no longer ready (`/readyz` 503) and [`Bot::failed`]
    /// names it.
    pub fn spawn_loop(
        &mut self,
        name: &'static str,
        task: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        use futures::FutureExt as _;
        let (ctx, failed) = (self.ctx.clone(), self.failure_tx.clone());
        let supervised = async move {
            if let Err(panic) = std::panic::AssertUnwindSafe(task).catch_unwind().await {
                ctx.ready.store(false, Ordering::SeqCst);
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(task = name, panic = %what, "a loop of the bot panicked; it is no longer ready");
                let _ = failed.send(name);
            }
        };
        self.tasks.push((name, tokio::spawn(supervised)));
    }

    /// Waits until one of the bot's loops panics, and names it (`serve` then shuts the
    /// rest down and exits 1).
    pub async fn failed(&mut self) -> &'static str {
        match self.failures.recv().await {
            Some(name) => name,
            // The bot holds a sender itself: never closed while it exists.
            None => std::future::pending().await,
        }
    }

    /// Graceful stop: intake first, then the loops after their current batch (each
    /// within its grace, [`LOOP_SHUTDOWN_GRACE`] and [`HTTP_SHUTDOWN_GRACE`]; a loop still
    /// running [`SHUTDOWN_JOIN_MARGIN`] after that is stopped where it is), then what this
    /// process holds in the store is given back within [`SHUTDOWN_CLEANUP_DEADLINE`]
    /// ([`give_back`]).
    pub async fn shutdown(self) {
        self.ctx.ready.store(false, Ordering::SeqCst);
        let _ = self.shutdown.send(true);
        let joined_by = tokio::time::Instant::now()
            + LOOP_SHUTDOWN_GRACE.max(HTTP_SHUTDOWN_GRACE)
            + SHUTDOWN_JOIN_MARGIN;
        for (name, mut t) in self.tasks {
            match tokio::time::timeout_at(joined_by, &mut t).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(task = name, "task ended abnormally: {e}"),
                Err(_) => {
                    t.abort();
                    tracing::warn!(
                        task = name,
                        "the {name} loop was still busy past the shutdown's grace; stopped there (what it had not recorded is in the store)"
                    );
                }
            }
        }
        give_back(&self.ctx, SHUTDOWN_CLEANUP_DEADLINE).await;
    }
}

/// How long a loop may still run after the shutdown's grace before the shutdown stops it
/// where it is (a lease given back on a store that waits for its lock, a poll waiting
/// on the API).
pub const SHUTDOWN_JOIN_MARGIN: Duration = Duration::from_secs(1);

/// How long the shutdown spends, all in all, giving back what this process holds in the
/// store once its loops have stopped ([`give_back`]): each write may wait for the store's
/// lock (SQLite's busy timeout, 5 s, with another process writing), and the grace plus
/// this must stay within a supervisor's stop timeout (Docker's 10 s).
pub const SHUTDOWN_CLEANUP_DEADLINE: Duration = Duration::from_secs(2);

/// Gives back, within `deadline` all in all, what this process holds in the store: the
/// leases of its actions in flight (for the next process to carry them out at once), then
/// its named leases (the processor's and the poller's leadership, the summaries'
/// repository locks). What is not given back in time, or fails, is logged at WARN: nothing
/// is lost, those leases expire on their own.
pub async fn give_back(ctx: &AppContext, deadline: Duration) {
    const STEPS: [&str; 2] = [
        "the leases of its actions in flight",
        "its named leases (processor, poller, summary locks)",
    ];
    let (store, me) = (&ctx.store, ctx.worker_id.as_str());
    let mut done = 0;
    let mut failed: Vec<String> = Vec::new();
    let work = async {
        if let Err(e) = store.release_leases(me).await {
            failed.push(format!("{} ({e})", STEPS[0]));
        }
        done += 1;
        if let Err(e) = store.release_named_leases(me).await {
            failed.push(format!("{} ({e})", STEPS[1]));
        }
        done += 1;
    };
    let in_time = tokio::time::timeout(deadline, work).await.is_ok();
    if !in_time {
        failed.extend(
            STEPS[done..]
                .iter()
                .map(|s| format!("{s} (no answer from the store within {deadline:?})")),
        );
    }
    if !failed.is_empty() {
        tracing::warn!(
            "shutdown: not given back: {}; nothing is lost, those leases expire on their own",
            failed.join("; ")
        );
    }
}

/// How long a shutdown waits for the HTTP connections open at that moment to finish
/// their requests before it closes them: a webhook being stored gets its answer, and a
/// client that stalls mid-request cannot keep the process alive.
pub const HTTP_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Name of the lease of the event processor: one process at a time consumes the stored
/// events, in order — one `serve` replica on PostgreSQL, and on any store a `runwarden
/// sweep` only while no `serve` holds it (see [`ProcessorLease`]).
pub const PROCESSOR_LEASE: &str = "processor";
/// How long a process that died keeps the processor lease (renewed every third of it,
/// between passes and during a pass).
pub const PROCESSOR_LEASE_TTL: Duration = Duration::from_secs(10);

/// This process's hold of [`PROCESSOR_LEASE`], taken by `serve`'s processor on every
/// store, SQLite included (one `serve` per file, but a `runwarden sweep` sharing the file
/// reads the lease to tell whether a live `serve` consumes the events), and by a sweep
/// for a pass over the events others left when no `serve` holds it.
#[derive(Debug, Default)]
pub struct ProcessorLease {
    /// When this process last took or renewed the lease, while it holds it.
    renewed: Option<tokio::time::Instant>,
}

impl ProcessorLease {
    /// Whether this process may consume events now: it holds the lease, taken when free
    /// or expired. Renewed once a third of its time to live has passed since it was last
    /// taken or renewed, not on every turn of the processor loop (one small write every
    /// few seconds, also on SQLite).
    pub async fn hold(&mut self, ctx: &AppContext) -> bool {
        if self
            .renewed
            .is_some_and(|t| t.elapsed() < PROCESSOR_LEASE_TTL / 3)
        {
            return true;
        }
        match self.renew(ctx).await {
            Ok(held) => held,
            Err(e) => {
                self.renewed = None;
                tracing::warn!(error = %e, "cannot take the processor lease");
                false
            }
        }
    }

    /// Takes or renews the lease now; `Ok(false)` when another process holds it.
    async fn renew(&mut self, ctx: &AppContext) -> crate::store::StoreResult<bool> {
        let asked = tokio::time::Instant::now();
        let held = ctx
            .store
            .try_acquire_lease(
                PROCESSOR_LEASE,
                &ctx.worker_id,
                PROCESSOR_LEASE_TTL,
                chrono::Utc::now(),
            )
            .await?;
        self.renewed = held.then_some(asked);
        Ok(held)
    }

    /// Runs `work`, a pass of the processor begun while this process holds the lease,
    /// renewing the lease every third of its time to live as the pass goes on (a pass can
    /// outlast the lease: a slow API, a long retention listing), so that no other process
    /// starts consuming the same events meanwhile. Should another process have taken the
    /// lease over all the same (this one was paused past its time to live), or should
    /// the renewals keep failing (store errors) until less than a third of the lease's
    /// time to live is left (as [`crate::store::Store::hold_lease_while`] does), the pass
    /// stops there and `None` is returned: what it had not recorded is still in the store,
    /// for whoever holds the lease next (an event is recorded whole or not at all), rather
    /// than two processors consuming the same events. The next pass takes the lease
    /// first.
    pub async fn while_held<F: std::future::Future>(
        &mut self,
        ctx: &AppContext,
        work: F,
    ) -> Option<F::Output> {
        let beat = PROCESSOR_LEASE_TTL / 3;
        // Polled beside the pass, which goes on while a renewal waits for its connection.
        let renewing = async {
            let mut renewal = tokio::time::interval_at(tokio::time::Instant::now() + beat, beat);
            renewal.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                renewal.tick().await;
                match self.renew(ctx).await {
                    Ok(true) => {}
                    Ok(false) => return "taken over by another process",
                    Err(e) => {
                        // Until when the lease surely holds: its time to live from before
                        // the last renewal that went through (or the take).
                        let held_until = self.renewed.map(|t| t + PROCESSOR_LEASE_TTL);
                        if held_until
                            .is_none_or(|until| tokio::time::Instant::now() + beat >= until)
                        {
                            tracing::warn!(error = %e, "cannot renew the processor lease during a pass");
                            return "not renewed before it would run out";
                        }
                        tracing::warn!(
                            error = %e,
                            "cannot renew the processor lease during a pass; trying again before it runs out"
                        );
                    }
                }
            }
        };
        tokio::select! {
            out = work => Some(out),
            why = renewing => {
                // Not held as far as this process can tell: taken (or renewed) again
                // before the next pass.
                self.renewed = None;
                tracing::warn!(
                    "the processor lease was {why} during a pass; this pass stops here (the events it had not recorded are left to the lease's next holder)"
                );
                None
            }
        }
    }

    /// Gives the lease up (when this process holds it).
    pub async fn release(&mut self, ctx: &AppContext) {
        self.renewed = None;
        if let Err(e) = ctx
            .store
            .release_lease(PROCESSOR_LEASE, &ctx.worker_id)
            .await
        {
            tracing::warn!(error = %e, "cannot give the processor lease up; it expires on its own");
        }
    }
}

/// How long the processor's and the executor's current pass may go on once the shutdown
/// has begun (each pass stops taking new work at once). Past it the pass is dropped: the
/// events it had not committed stay in the store and are processed at the next start, and
/// the actions in flight are parked: their leases are released at the end of the
/// shutdown and they are carried out again by the next process (at least once, their
/// side effect once: cancel and delete are idempotent, a comment is found by its
/// marker). Together with [`HTTP_SHUTDOWN_GRACE`], which runs at the same time, shorter
/// than a supervisor's stop timeout (Docker's 10 s), so that the process exits 0.
pub const LOOP_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Drives `pass` to its end; if the shutdown begins meanwhile, gives it
/// [`LOOP_SHUTDOWN_GRACE`] more and then drops it (logged, naming `what`). Returns
/// whether the shutdown has begun.
async fn until_stopped(
    pass: impl std::future::Future<Output = impl Sized>,
    stop: &mut watch::Receiver<bool>,
    what: &str,
) -> bool {
    tokio::pin!(pass);
    tokio::select! {
        _ = &mut pass => return *stop.borrow(),
        _ = stop.changed() => {}
    }
    if tokio::time::timeout(LOOP_SHUTDOWN_GRACE, pass)
        .await
        .is_err()
    {
        tracing::warn!(
            "{what}: still busy {}s after the shutdown began; stopped there (what it had not recorded is in the store, and is taken up again at the next start)",
            LOOP_SHUTDOWN_GRACE.as_secs()
        );
    }
    true
}

async fn processor_loop(ctx: Arc<AppContext>, mut stop: watch::Receiver<bool>) {
    let mut feed = crate::intake::processor::EventFeed::new(&ctx.store);
    let mut lease = ProcessorLease::default();
    loop {
        if *stop.borrow() {
            break;
        }
        let pass = async {
            if lease.hold(&ctx).await
                && let Some(Err(e)) = lease
                    .while_held(
                        &ctx,
                        crate::intake::processor::process_next(&ctx, &mut feed),
                    )
                    .await
            {
                tracing::warn!("event processing paused: {e}");
            }
        };
        if until_stopped(pass, &mut stop, "event processing").await {
            break;
        }
        tokio::select! {
            _ = ctx.wake.notified() => {}
            _ = tokio::time::sleep(IDLE_CHECK) => {}
            _ = stop.changed() => break,
        }
    }
    // The lease is given back at the end of the shutdown, with this process's other named
    // leases, within the shutdown's deadline (`give_back`).
}

async fn executor_loop(ctx: Arc<AppContext>, mut stop: watch::Receiver<bool>) {
    // Actions the processor hands over directly (see `actions::Handoff`).
    let mut handoff = ctx.handoff.receiver();
    let mut handed = Vec::new();
    loop {
        if *stop.borrow() {
            break;
        }
        let stopping = stop.clone();
        let pass = crate::actions::run_due_with(
            &ctx,
            || *stopping.borrow(),
            handoff.as_mut(),
            std::mem::take(&mut handed),
        );
        if until_stopped(pass, &mut stop, "actions in flight").await {
            break;
        }
        tokio::select! {
            _ = ctx.wake_executor.notified() => {}
            Some(a) = async { handoff.as_mut()?.recv().await } => handed.push(a),
            _ = tokio::time::sleep(IDLE_CHECK) => {}
            _ = stop.changed() => break,
        }
    }
}

/// How often `serve` prunes the store (`[store] keep_events` and `keep_audit`); also
/// once at start.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);

/// What one [`prune_store`] removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pruned {
    pub events: u64,
    pub runs: u64,
    /// Schedule slots (each rule's latest is kept).
    pub slots: u64,
    pub decisions: u64,
    pub actions: u64,
}

impl Pruned {
    /// The rows removed, by the `table` label of `runwarden_store_pruned_total`.
    fn by_table(&self) -> [(&'static str, u64); 5] {
        [
            ("events", self.events),
            ("runs", self.runs),
            ("slots", self.slots),
            ("decisions", self.decisions),
            ("actions", self.actions),
        ]
    }
}

/// `now` minus `keep`, or the earliest time when that is out of range.
fn cutoff(now: chrono::DateTime<chrono::Utc>, keep: Duration) -> chrono::DateTime<chrono::Utc> {
    chrono::Duration::from_std(keep)
        .ok()
        .and_then(|k| now.checked_sub_signed(k))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC)
}

/// Forgets what the store no longer keeps at `now`:
///
/// - `[store] keep_events`: events processed before `now - keep_events` (a redelivery of
///   one older than that is no longer recognised as a duplicate), runs last observed
///   before then (finished, gone, or in progress with no news since: every poll observes
///   the runs still in progress again), and schedule slots before then but each rule's
///   latest; events still to be processed are kept;
/// - `[store] keep_audit`: decisions and finished actions older than `now - keep_audit`
///   ([`crate::store::Store::prune_audit`]); actions still to do are kept with their
///   decisions.
pub async fn prune_store(
    ctx: &AppContext,
    now: chrono::DateTime<chrono::Utc>,
) -> crate::store::StoreResult<Pruned> {
    let mut pruned = Pruned::default();
    if let Some(keep) = ctx.config.store.keep_events {
        let before = cutoff(now, keep);
        pruned.events = ctx.store.prune_deliveries(before).await?;
        pruned.runs = ctx.store.prune_runs(before).await?;
        pruned.slots = ctx.store.prune_slots(before).await?;
    }
    if let Some(keep) = ctx.config.store.keep_audit {
        (pruned.decisions, pruned.actions) = ctx.store.prune_audit(cutoff(now, keep)).await?;
    }
    Ok(pruned)
}

async fn prune_loop(ctx: Arc<AppContext>, mut stop: watch::Receiver<bool>) {
    let store = &ctx.config.store;
    if store.keep_events.is_none() && store.keep_audit.is_none() {
        return;
    }
    loop {
        match prune_store(&ctx, chrono::Utc::now()).await {
            Ok(p) if p == Pruned::default() => {}
            Ok(p) => {
                tracing::info!(
                    events = p.events,
                    runs = p.runs,
                    decisions = p.decisions,
                    actions = p.actions,
                    "pruned the store ([store] keep_events, keep_audit)"
                );
                for (table, n) in p.by_table() {
                    ctx.metrics
                        .add("runwarden_store_pruned_total", metrics_labels(table), n);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot prune the store; will try again"),
        }
        tokio::select! {
            _ = tokio::time::sleep(PRUNE_INTERVAL) => {}
            _ = stop.changed() => break,
        }
    }
}

/// On a shared store, measures this replica's clock against the database's at start and
/// every [`CLOCK_CHECK_INTERVAL`], and warns while it is off by more than
/// [`CLOCK_OFFSET_WARN`]: replicas compare the times their own clocks gave (leases, retry
/// times, schedule slots). `/metrics` shows the offset too
/// (`runwarden_store_clock_offset_seconds`).
async fn clock_loop(ctx: Arc<AppContext>, mut stop: watch::Receiver<bool>) {
    loop {
        match ctx.store.clock_offset().await {
            Ok(Some(o)) if o.beyond(CLOCK_OFFSET_WARN) => tracing::warn!(
                offset_seconds = o.seconds,
                "this replica's clock is {:.1} s {} the database server's: keep the replicas' clocks in sync (NTP), or leases and retry times go wrong between them",
                o.seconds.abs(),
                if o.seconds > 0.0 {
                    "behind"
                } else {
                    "ahead of"
                }
            ),
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "cannot read the database server's clock"),
        }
        tokio::select! {
            _ = tokio::time::sleep(CLOCK_CHECK_INTERVAL) => {}
            _ = stop.changed() => break,
        }
    }
}

fn metrics_labels(table: &str) -> String {
    crate::server::metrics::labels(&[("table", table)])
}

/// Whether the process holding the worker id `worker` (`PID-UUID`, as [`AppContext`]'s
/// `worker_id` is made) is another process still running on this machine: `/proc/PID`
/// exists and is not a zombie. This process's own pid (an earlier bot of the same
/// process) and anything that cannot be checked count as gone, so their leases are
/// handed back as before. Only processes of this PID namespace are seen: a `sweep` in
/// another container sharing the SQLite file counts as gone.
pub fn holder_alive(worker: &str) -> bool {
    let Some(pid) = worker.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
        return false;
    };
    if pid == std::process::id() {
        return false;
    }
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state is the first field after the command name, which is in parentheses.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, None | Some("Z") | Some("X"))
}

/// Starts every part of the bot on `listener`.
pub async fn start(ctx: Arc<AppContext>, listener: tokio::net::TcpListener) -> anyhow::Result<Bot> {
    let addr = listener.local_addr()?;
    // SQLite is one machine: an action still leased was claimed by a worker that died (a
    // crash, SIGKILL), unless another live process shares the file (a `sweep` carrying it
    // out right now); hand the dead ones' back now rather than after their lease. (A
    // shared PostgreSQL store keeps the leases: other replicas may be alive.)
    if !ctx.store.backend().is_shared() {
        match ctx.store.release_leases_unless(holder_alive).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                actions = n,
                "released the leases of a previous process (it did not stop cleanly)"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "cannot release stale leases; they expire on their own")
            }
        }
        match ctx.store.release_named_leases_unless(holder_alive).await {
            Ok(names) if names.is_empty() => {}
            Ok(names) => tracing::warn!(
                leases = %names.join(", "),
                "released the locks of a previous process (it did not stop cleanly)"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "cannot release stale locks; they expire on their own")
            }
        }
    }
    let (tx, rx) = watch::channel(false);
    let (failure_tx, failures) = tokio::sync::mpsc::unbounded_channel();
    let mut bot = Bot {
        ctx: ctx.clone(),
        addr,
        shutdown: tx,
        tasks: Vec::new(),
        failures,
        failure_tx,
    };
    let app = crate::server::router(ctx.clone());
    let listener = crate::server::idle::IdleListener::new(listener, ctx.config.server.idle_timeout);
    let mut srv_stop = rx.clone();
    let mut grace_stop = rx.clone();
    bot.spawn_loop("server", async move {
        let server = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = srv_stop.changed().await;
        });
        // A client that never finishes its request (headers sent halfway, a stalled
        // body) would otherwise hold the shutdown for ever, past a supervisor's stop
        // timeout (Docker's is 10 s) and into a SIGKILL.
        let grace = async move {
            let _ = grace_stop.changed().await;
            tokio::time::sleep(HTTP_SHUTDOWN_GRACE).await;
        };
        tokio::select! {
            r = server => {
                if let Err(e) = r {
                    tracing::error!("server error: {e}");
                }
            }
            () = grace => tracing::warn!(
                "HTTP connections still open {}s after the shutdown began; closing them",
                HTTP_SHUTDOWN_GRACE.as_secs()
            ),
        }
    });
    bot.spawn_loop("processor", processor_loop(ctx.clone(), rx.clone()));
    bot.spawn_loop("executor", executor_loop(ctx.clone(), rx.clone()));
    bot.spawn_loop(
        "poller",
        crate::intake::poller::run(ctx.clone(), rx.clone()),
    );
    bot.spawn_loop(
        "schedules",
        crate::intake::schedules::run(ctx.clone(), rx.clone()),
    );
    bot.spawn_loop("prune", prune_loop(ctx.clone(), rx.clone()));
    if ctx.store.backend().is_shared() {
        bot.spawn_loop("clock", clock_loop(ctx.clone(), rx.clone()));
    }
    ctx.ready.store(true, Ordering::SeqCst);
    Ok(bot)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// Runs the command.
pub fn run(path: &std::path::Path) -> ExitCode {
    let loaded = match super::load_config(path) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let secrets = Secrets::from_env();
    for w in loaded
        .warnings
        .iter()
        .cloned()
        .chain(super::check::secret_warnings(&loaded.config, &secrets))
    {
        tracing::warn!("{w}");
    }
    let rt = super::runtime();
    rt.block_on(async move {
        let listen = loaded.config.server.listen.clone();
        if let Err(e) = credentials_problem(&loaded.config, &secrets) {
            errln!("runwarden serve: {e:#}");
            return ExitCode::from(super::EXIT_USAGE);
        }
        // What can fail now is the store (down, unreachable, not writable).
        let ctx = match build_context(loaded.config, secrets).await {
            Ok(c) => c,
            Err(e) => {
                errln!("runwarden serve: {e:#}");
                return ExitCode::from(super::EXIT_FAILED);
            }
        };
        let listener = match tokio::net::TcpListener::bind(&listen).await {
            Ok(l) => l,
            Err(e) => {
                errln!("runwarden serve: cannot listen on {listen}: {e}");
                return ExitCode::from(super::EXIT_USAGE);
            }
        };
        let mut bot = match start(ctx, listener).await {
            Ok(b) => b,
            Err(e) => {
                errln!("runwarden serve: {e:#}");
                return ExitCode::from(super::EXIT_FAILED);
            }
        };
        tracing::info!(listen = %bot.addr, "runwarden is serving");
        let code = tokio::select! {
            _ = shutdown_signal() => {
                tracing::info!("shutting down");
                ExitCode::SUCCESS
            }
            name = bot.failed() => {
                tracing::error!(task = name, "shutting down: the {name} loop panicked (the work it had is in the store; start runwarden again)");
                ExitCode::from(super::EXIT_FAILED)
            }
        };
        // A second SIGINT or SIGTERM does not wait for the graceful stop.
        tokio::select! {
            () = bot.shutdown() => code,
            () = shutdown_signal() => {
                tracing::warn!("second stop signal: exiting now (unfinished work is in the store and is taken up again at the next start)");
                ExitCode::from(super::EXIT_FAILED)
            }
        }
    })
}
