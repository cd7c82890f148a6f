//! The HTTP server of `runwarden serve` (SPEC §5): webhooks, health, metrics, the admin
//! API and the status page, over one shared [`AppContext`].

pub mod admin;
pub mod idle;
pub mod metrics;
pub mod status_page;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use tokio::sync::Semaphore;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::TimeoutLayer;

use crate::config::{Config, Secrets};
use crate::currents::CurrentsClient;
use crate::github::client::GithubClient;
use crate::intake::webhooks;
use crate::store::Store;
use metrics::Metrics;

/// Everything a handler, the processor or the executor needs: the small context struct
/// that is passed around instead of long argument lists.
pub struct AppContext {
    pub config: Arc<Config>,
    pub secrets: Arc<Secrets>,
    pub store: Store,
    pub currents: CurrentsClient,
    /// `None` when no GitHub credentials are configured.
    pub github: Option<GithubClient>,
    pub metrics: Arc<Metrics>,
    /// Wakes the event processor when a new event is stored.
    pub wake: Arc<tokio::sync::Notify>,
    /// Wakes the executor when new actions are recorded.
    pub wake_executor: Arc<tokio::sync::Notify>,
    /// False while starting and once shutdown begins.
    pub ready: AtomicBool,
    /// Identifies this process in leases and claims.
    pub worker_id: String,
    /// The executor's retry schedule and lease (production defaults; tests shorten them).
    pub executor: crate::actions::ExecutorOptions,
    /// What the bot decides and does, as it happens (the demo narrates it; `sweep`
    /// reports from it; tests can synchronise on it). Sending never blocks; nobody
    /// listening is fine.
    pub events: EventBus,
    /// New actions the processor leased for this process's executor.
    pub handoff: crate::actions::Handoff,
    /// The duration history of each group last read from the API, and when.
    pub history_cache: std::sync::Mutex<
        std::collections::HashMap<String, crate::intake::processor::HistoryLookup>,
    >,
    /// When this process's last poll that covered every project, and whose decisions
    /// were committed, began (the look-back of the next poll for runs that started and
    /// finished in between).
    pub last_poll: std::sync::Mutex<Option<chrono::DateTime<chrono::Utc>>>,
}

/// The channel of [`BotEvent`]s: a broadcast channel of [`EventBus::CAPACITY`] events,
/// created by the first [`EventBus::subscribe`]. Until someone subscribes, sending drops
/// the event: a `serve` nobody listens to does not keep a buffer of 4,096 events (800 KiB,
/// written in full when the channel is made) for nothing.
#[derive(Debug, Default)]
pub struct EventBus {
    tx: std::sync::OnceLock<tokio::sync::broadcast::Sender<BotEvent>>,
}

impl EventBus {
    /// Events a subscriber may fall behind by before it misses some (`Lagged`).
    pub const CAPACITY: usize = 4096;

    /// Sends `event` to every subscriber; without any, it is dropped. Never blocks.
    pub fn send(&self, event: BotEvent) {
        if let Some(tx) = self.tx.get() {
            let _ = tx.send(event);
        }
    }

    /// A receiver of the events sent from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<BotEvent> {
        self.tx
            .get_or_init(|| tokio::sync::broadcast::channel(Self::CAPACITY).0)
            .subscribe()
    }
}

/// A notification of something the bot did.
#[derive(Debug, Clone, PartialEq)]
pub enum BotEvent {
    /// A rule decided an action (recorded in the store). `repeated`: the same rule had
    /// already decided the same action, so the store kept the earlier decision
    /// (`decision_id`) and recorded nothing new.
    Decided {
        decision_id: i64,
        /// The action carrying it out (`None` for a dry run).
        action_id: Option<i64>,
        repeated: bool,
        rule: String,
        kind: String,
        action: String,
        run_id: String,
        branch: Option<String>,
        reason: String,
        dry_run: bool,
    },
    /// The executor finished an action: `outcome` is `done`, `skipped` or `failed`
    /// (`retry` for an attempt that will be repeated).
    ActionFinished {
        rule: String,
        action: String,
        run_id: String,
        outcome: String,
        detail: String,
    },
}

/// Shared state of the router.
pub type AppState = Arc<AppContext>;

/// Maximum requests handled at once (`/healthz` and `/readyz` aside).
pub const CONCURRENCY_LIMIT: usize = 1024;
/// Per-request timeout: waiting for one of the [`CONCURRENCY_LIMIT`] slots counts
/// against it.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Builds the router over the shared state.
///
/// `/healthz` and `/readyz` are outside the [`CONCURRENCY_LIMIT`] (see [`guard`]): a
/// probe is answered at once even while every slot is held, e.g. by stalled uploads.
/// The webhooks count the 408 of the timeout (and the 500 of a panic) in
/// `runwarden_webhooks_total` like their other answers, each once (see
/// [`count_webhooks`]). The GitHub webhook's unverified
/// bodies share one [`webhooks::BodyBudget`] per router (one router per process).
pub fn router(state: AppState) -> Router {
    let slots = Arc::new(Semaphore::new(CONCURRENCY_LIMIT));
    let budget = Arc::new(webhooks::BodyBudget::default());
    let limited = |routes: Router<AppState>| protect(routes, slots.clone(), REQUEST_TIMEOUT);
    let counted = |routes: Router<AppState>, source: &'static str| {
        count_webhooks(routes, state.metrics.clone(), source)
    };
    // The extractors enforce their own limits (1 MiB / 25 MiB) and answer 413.
    let currents = counted(
        limited(
            Router::new()
                .route("/webhooks/currents", post(webhooks::currents))
                .layer(DefaultBodyLimit::disable()),
        ),
        "currents",
    );
    let github = limited(
        Router::new()
            .route(
                "/webhooks/github",
                post({
                    let budget = budget.clone();
                    move |State(state): State<AppState>, req: Request| {
                        webhooks::github(state, budget, req)
                    }
                }),
            )
            .layer(DefaultBodyLimit::disable()),
    );
    let github = counted(github, "github");
    let rest = limited(
        Router::new()
            .route(
                "/metrics",
                get(move |State(state): State<AppState>| metrics_text(state, budget)),
            )
            .route("/api/actions", get(admin::actions))
            .route("/api/rules", get(admin::rules))
            .route("/api/sweep/{rule}", post(admin::sweep))
            .route("/", get(status_page::page)),
    );
    let health = guard(
        Router::new()
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz)),
        REQUEST_TIMEOUT,
    );
    Router::new()
        .merge(currents)
        .merge(github)
        .merge(rest)
        .merge(health)
        .with_state(state)
}

/// Whether [`count_webhooks`] counts an answer of this status (one the handler did not
/// count): a 408 (the request timeout) or a 500 (a panic).
pub fn counted_by_the_layer(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::REQUEST_TIMEOUT | StatusCode::INTERNAL_SERVER_ERROR
    )
}

/// Counts in `runwarden_webhooks_total` (under `source`) the 408s and 500s of `routes`
/// (a webhook's, behind [`protect`]) that its handler did not count: those of the
/// request timeout and of a panic. The handler counts each of its own answers and marks
/// it [`webhooks::Counted`] (its 500 when the store failed for good included), so every
/// answer is counted once.
pub fn count_webhooks<S>(
    routes: Router<S>,
    metrics: Arc<Metrics>,
    source: &'static str,
) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    routes.layer(tower::util::MapResponseLayer::new(
        move |r: axum::response::Response| {
            if counted_by_the_layer(r.status())
                && r.extensions().get::<webhooks::Counted>().is_none()
            {
                metrics.inc(
                    "runwarden_webhooks_total",
                    &[("source", source), ("status", r.status().as_str())],
                );
            }
            r
        },
    ))
}

/// The layers around every route of [`router`] but the health checks, from the outside
/// in: a panic becomes a 500; then one `timeout` for the whole request, waiting for a
/// slot included (408 when it runs out); then one of `slots` (shared by all routes) for
/// as long as the handler runs.
///
/// The timeout is outside the limit on purpose: when every slot is held (e.g. by stalled
/// uploads), a request waiting for one is answered 408 after `timeout` instead of
/// queueing for ever. Each layer stays its own `Router::layer` call: axum then polls the
/// limit's readiness (where it waits for a slot) inside the timeout's future, whereas in
/// one `ServiceBuilder` stack the wait would happen in `poll_ready`, before any timeout
/// starts (`tests/http_edge.rs` checks it).
pub fn protect<S>(routes: Router<S>, slots: Arc<Semaphore>, timeout: Duration) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    guard(
        routes.layer(tower::limit::GlobalConcurrencyLimitLayer::with_semaphore(
            slots,
        )),
        timeout,
    )
}

/// [`protect`] without the concurrency limit (the health checks): a panic is a 500, a
/// request past `timeout` a 408.
pub fn guard<S>(routes: Router<S>, timeout: Duration) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    routes
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .layer(CatchPanicLayer::custom(|_| {
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }))
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if !state.ready.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready");
    }
    let store = &state.store;
    if state
        .metrics
        .store_reachable(|| async { store.ping().await.is_ok() })
        .await
    {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "store unreachable")
    }
}

/// `GET /metrics`. The gauges read from the store are shared by the scrapes of
/// [`metrics::STORE_GAUGES_TTL`] (5 s); the counters and the other gauges are live.
async fn metrics_text(state: AppState, budget: Arc<webhooks::BodyBudget>) -> impl IntoResponse {
    let stored = state.metrics.store_gauges(|| store_gauges(&state)).await;
    let mut gauges: Vec<(&str, &str, String, f64)> = vec![(
        "runwarden_webhook_unverified_bytes",
        "Bytes of GitHub webhook bodies read but not yet verified: past 64 MiB, webhooks are answered 503.",
        String::new(),
        budget.in_use() as f64,
    )];
    if let Some(gh) = &state.github {
        gauges.push((
            "runwarden_github_rate_limit_wait_seconds",
            "Seconds before GitHub's rate limit lets the bot send again (0: not limited).",
            String::new(),
            gh.rate_limit_wait().map_or(0.0, |d| d.as_secs_f64().ceil()),
        ));
    }
    // Counted by the clients (every retry included), published as one counter.
    let currents = state.currents.stats();
    let github = state
        .github
        .as_ref()
        .map(|g| g.request_counts())
        .unwrap_or_default();
    for (api, (op, status, n)) in currents
        .rows()
        .map(|r| ("currents", r))
        .chain(github.into_iter().map(|r| ("github", r)))
    {
        state.metrics.set(
            "runwarden_api_requests_total",
            metrics::labels(&[("api", api), ("operation", op), ("status", &status)]),
            n,
        );
    }
    (
        [(
            http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render_parts(&[&stored, &gauges]),
    )
}

/// The gauges of `/metrics` read from the store (four queries; on a shared store a fifth,
/// its clock). `runwarden_store_up` is 1 only when all answered; the gauges of a query
/// that failed are left out (an outage shows as 0 there, not as gauges that vanish
/// unexplained).
async fn store_gauges(state: &AppState) -> Vec<metrics::Gauge> {
    let store = &state.store;
    let depth = store.queue_depth().await;
    let pending = store.count_unprocessed().await;
    let by_state = store.action_counts().await;
    let by_outcome = store.decision_counts().await;
    let clock = store.clock_offset().await;
    let up =
        depth.is_ok() && pending.is_ok() && by_state.is_ok() && by_outcome.is_ok() && clock.is_ok();
    let mut gauges: Vec<metrics::Gauge> = vec![(
        "runwarden_store_up",
        "1 when the store answered the last reads of the gauges taken from it (at most 5 s old), 0 when it did not.",
        String::new(),
        if up { 1.0 } else { 0.0 },
    )];
    if let Ok(Some(offset)) = clock {
        gauges.push((
            "runwarden_store_clock_offset_seconds",
            "The database server's clock minus this replica's (read at most every 5 s); serve warns past 1 s.",
            String::new(),
            offset.seconds,
        ));
    }
    if let Ok(depth) = depth {
        gauges.push((
            "runwarden_queue_depth",
            "Actions waiting to be carried out (read from the store at most every 5 s).",
            String::new(),
            depth as f64,
        ));
    }
    if let Ok(n) = pending {
        gauges.push((
            "runwarden_events_pending",
            "Stored events not yet processed (read from the store at most every 5 s).",
            String::new(),
            n as f64,
        ));
    }
    if let Ok(counts) = by_state {
        for (s, n) in counts {
            gauges.push((
                "runwarden_actions_by_state",
                "Actions in the store, by state (read at most every 5 s).",
                metrics::labels(&[("state", &s)]),
                n as f64,
            ));
        }
    }
    // SPEC §5's decisions by rule and outcome, read from the store: a decision's outcome
    // follows its action (`planned` until it is `done`, `failed` or `skipped`).
    if let Ok(counts) = by_outcome {
        for c in counts {
            gauges.push((
                "runwarden_decisions_by_outcome",
                "Decisions kept in the audit log, by rule and the outcome audit shows (read from the store at most every 5 s).",
                metrics::labels(&[("rule", &c.rule), ("outcome", c.outcome.as_str())]),
                c.count as f64,
            ));
        }
    }
    gauges
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finished(run: &str) -> BotEvent {
        BotEvent::ActionFinished {
            rule: "r".into(),
            action: "cancel".into(),
            run_id: run.into(),
            outcome: "done".into(),
            detail: String::new(),
        }
    }

    /// Nobody listening: nothing is buffered (no channel is made); a subscriber gets the
    /// events sent from then on, in order.
    #[test]
    fn the_event_bus_buffers_only_once_someone_listens() {
        let bus = EventBus::default();
        bus.send(finished("before"));
        assert!(bus.tx.get().is_none(), "a channel made for nobody");
        let mut rx = bus.subscribe();
        bus.send(finished("a"));
        bus.send(finished("b"));
        assert_eq!(rx.try_recv().unwrap(), finished("a"));
        assert_eq!(rx.try_recv().unwrap(), finished("b"));
        assert!(rx.try_recv().is_err(), "the event sent before is not there");
        let mut late = bus.subscribe();
        bus.send(finished("c"));
        assert_eq!(late.try_recv().unwrap(), finished("c"));
        assert_eq!(rx.try_recv().unwrap(), finished("c"));
    }
}
