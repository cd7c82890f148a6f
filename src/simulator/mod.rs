//! The built-in Currents + GitHub simulator (SPEC §7).
//!
//! One HTTP server with three parts:
//!
//! - `/v1/...`: the Currents REST API (`currents_api`): projects, the run feed with the
//!   real cursor pagination and filters, get, find, cancel, delete, instances, webhooks;
//!   Bearer API key (`SimConfig::api_key`), envelope and error messages as documented.
//! - `/github/...`: the GitHub REST endpoints the bot uses (`github_api`): PRs of a
//!   commit, PR list and get, issue comments, commit statuses, App installations,
//!   `GET /user` and `GET /app`. Who a request acts as follows from its credential: any
//!   token → `SimConfig::github_bot_login`; an installation token →
//!   `{github_app_slug}[bot]`; a token `user:NAME` → the user `NAME` (to post comments
//!   as someone else in tests). GitHub's limits hold: the hourly quota, the secondary
//!   limit on content creation (80 a minute, 500 an hour per account;
//!   `SimConfig::github_content_limits`) and 1,000 statuses per sha and context; owner
//!   and repository names are compared case-insensitively. See `github_api`'s module
//!   docs.
//! - `/_sim/...`: control endpoints (`control`): add runs and PRs, advance runs, inject
//!   faults, read the request log, webhook deliveries and what was written to GitHub.
//!
//! As runs change, Currents webhooks (`RUN_START`, `RUN_FINISH`, `RUN_TIMEOUT`,
//! `RUN_CANCELED`) are sent to `SimConfig::webhook_url` and to the webhooks registered
//! through the Webhooks API (`emitter`).
//!
//! In-process, [`spawn`] serves a fresh [`World`] on a listener and returns a
//! [`SimHandle`] that dereferences to the world, so tests can drive it directly:
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use runwarden::simulator::{self, NewRun, SimConfig};
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let sim = simulator::spawn(listener, SimConfig::default()).await?;
//! let run = sim.add_run(NewRun { branch: Some("main".into()), ..Default::default() })?;
//! println!("{}/v1/runs/{}", sim.base_url, run.run_id);
//! sim.shutdown().await;
//! # Ok(()) }
//! ```

mod control;
mod currents_api;
mod emitter;
mod faults;
mod github_api;
mod ids;
mod names;
mod seed;
mod world;

use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::Utc;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::commands::outln;

pub use emitter::{Delivery, HookTarget};
pub use faults::{ActiveFault, ConnHandle, Fault, FaultKind, LogEntry, SimListener};
pub use github_api::{
    ContentLimits, MAX_COMMENT_BODY, MAX_STATUS_DESCRIPTION, MAX_STATUSES_PER_CONTEXT, NewPr,
    SecondaryLimitHit, SimComment, SimPr, SimStatus,
};
pub use ids::{Key, decode_cursor, encode_cursor};
pub use seed::{Sample, seed_sample};
pub use world::{
    Advance, DEFAULT_INACTIVITY_TIMEOUT_SECS, GenerateSpec, GroupsSpec, NewProject, NewRun,
    Outcome, RunQuery, SimError, World, parse_headers, repo_from_origin,
};

/// The default address of `runwarden simulate`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:4000";

/// Settings of a simulator.
#[derive(Clone)]
pub struct SimConfig {
    /// The Read & Write API key (`Authorization: Bearer <key>`). Default `sim-key`.
    pub api_key: String,
    /// The key's label; cancellations carry `actor = "api:<label>"`. Default `sim`.
    pub api_key_label: String,
    /// A Read Only key: GETs work, writes answer 403.
    pub read_only_api_key: Option<String>,
    /// Where every run event is posted (besides webhooks registered via the API).
    pub webhook_url: Option<String>,
    /// Headers sent with every webhook to `webhook_url`, e.g. `x-webhook-secret`.
    pub webhook_headers: Vec<(String, String)>,
    /// Timeout of one webhook delivery. Default 5 s.
    pub webhook_timeout: Duration,
    /// Send one webhook per group for multi-group runs (with `groupId`), each when its
    /// group gets there: a group's `RUN_FINISH` as soon as all its spec files have
    /// reported, while other groups may still run; `RUN_CANCELED` and `RUN_TIMEOUT` to
    /// the groups still running. Off: one event of each kind per run, without `groupId`.
    pub webhook_per_group: bool,
    /// Base of `runUrl` in webhooks: `{dashboard_url}/run/{runId}`.
    pub dashboard_url: String,
    /// When set, GitHub requests must carry this token (or an issued installation token).
    pub github_token: Option<String>,
    /// The login comments and statuses are created as with a token (any token but an
    /// installation token or `user:NAME`), and `GET /user`'s answer for it. Default
    /// `runwarden[bot]`.
    pub github_bot_login: String,
    /// The GitHub App's slug (`GET /app`): installation tokens act as `{slug}[bot]`.
    /// Default `runwarden`.
    pub github_app_slug: String,
    /// GitHub's secondary rate limit on content creation (new comments, comment edits,
    /// new commit statuses): past it a request is answered 403 "You have exceeded a
    /// secondary rate limit" with `retry-after`. Default GitHub's, 80 a minute and 500 an
    /// hour per account; `None` turns it off, for a load test that must write faster
    /// than GitHub allows. Also [`World::set_github_content_limits`] and
    /// `POST /_sim/github/content-limits`.
    pub github_content_limits: Option<ContentLimits>,
    /// Seed of the random generator (ids, spec plans).
    pub seed: u64,
    /// Run [`World::tick`] on this interval (auto-advancing runs, inactivity timeouts).
    pub tick: Option<Duration>,
    /// On tick, time out in-progress runs idle longer than their project's
    /// `inactivityTimeoutSeconds`, as Currents does.
    pub enforce_inactivity_timeout: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            api_key: "sim-key".into(),
            api_key_label: "sim".into(),
            read_only_api_key: None,
            webhook_url: None,
            webhook_headers: Vec::new(),
            webhook_timeout: Duration::from_secs(5),
            webhook_per_group: false,
            dashboard_url: "https://app.currents.dev".into(),
            github_token: None,
            github_bot_login: "runwarden[bot]".into(),
            github_app_slug: "runwarden".into(),
            github_content_limits: Some(ContentLimits::default()),
            seed: 42,
            tick: None,
            enforce_inactivity_timeout: false,
        }
    }
}

impl SimConfig {
    /// The settings of `runwarden simulate`: a 2 s ticker and inactivity timeouts on.
    pub fn interactive() -> Self {
        SimConfig {
            tick: Some(Duration::from_secs(2)),
            enforce_inactivity_timeout: true,
            ..SimConfig::default()
        }
    }
}

impl std::fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimConfig")
            .field("api_key", &"<redacted>")
            .field("api_key_label", &self.api_key_label)
            .field("webhook_url", &self.webhook_url)
            .field(
                "webhook_headers",
                &self
                    .webhook_headers
                    .iter()
                    .map(|(k, _)| k)
                    .collect::<Vec<_>>(),
            )
            .field("dashboard_url", &self.dashboard_url)
            .field("github_bot_login", &self.github_bot_login)
            .field("github_app_slug", &self.github_app_slug)
            .field("github_content_limits", &self.github_content_limits)
            .field("seed", &self.seed)
            .field("tick", &self.tick)
            .finish_non_exhaustive()
    }
}

/// The HTTP app over `world`. Serve it with [`serve`] (or with `axum::serve` and
/// `into_make_service_with_connect_info::<ConnHandle>()` over a [`SimListener`]) so that
/// `drop` faults can close connections.
pub fn router(world: Arc<World>) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/healthz", get(|| async { "ok" }))
        .nest("/v1", currents_api::router(world.clone()))
        .nest("/github", github_api::router(world.clone()))
        .nest("/_sim", control::router())
        .fallback(|| async { control::error(StatusCode::NOT_FOUND, "not found") })
        .layer(middleware::from_fn(normalize_errors))
        .layer(middleware::from_fn_with_state(
            world.clone(),
            faults::fault_layer,
        ))
        .layer(middleware::from_fn_with_state(
            world.clone(),
            faults::log_layer,
        ))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| {
                control::error(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
            },
        ))
        .with_state(world)
}

async fn root() -> Response {
    let body = serde_json::json!({
        "name": "runwarden simulator",
        "currents": "/v1",
        "github": "/github",
        "control": "/_sim",
    });
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.to_string(),
    )
        .into_response()
}

/// Turns the framework's plain-text rejections (bad path, body too large, ...) into the
/// JSON error shape of the API they belong to.
async fn normalize_errors(req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let resp = next.run(req).await;
    let status = resp.status();
    if status.as_u16() < 400 {
        return resp;
    }
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("json"));
    if is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let msg = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    let mut out = if path.starts_with("/v1") {
        currents_api::fail(status, &msg)
    } else if path.starts_with("/github") {
        github_api::gh_error(status, &msg)
    } else {
        control::error(status, &msg)
    };
    for (k, v) in parts.headers.iter() {
        if k != header::CONTENT_TYPE && k != header::CONTENT_LENGTH {
            out.headers_mut().insert(k.clone(), v.clone());
        }
    }
    out
}

/// Serves `world` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    world: Arc<World>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        SimListener::new(listener),
        router(world).into_make_service_with_connect_info::<ConnHandle>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// A running simulator. Dereferences to its [`World`]; dropping it stops the server.
pub struct SimHandle {
    /// `http://127.0.0.1:PORT`; the Currents API is at `{base_url}/v1`, GitHub at
    /// `{base_url}/github`, control at `{base_url}/_sim`.
    pub base_url: String,
    pub addr: SocketAddr,
    pub world: Arc<World>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
    ticker: Option<JoinHandle<()>>,
}

impl SimHandle {
    /// `{base_url}/v1`: the bot's `currents.api_url`.
    pub fn currents_url(&self) -> String {
        format!("{}/v1", self.base_url)
    }

    /// `{base_url}/github`: the bot's `github.api_url`.
    pub fn github_url(&self) -> String {
        format!("{}/github", self.base_url)
    }

    /// Stops serving (graceful, at most 5 s for requests in flight).
    pub async fn shutdown(mut self) {
        if let Some(t) = self.ticker.take() {
            t.abort();
        }
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(mut server) = self.server.take()
            && tokio::time::timeout(Duration::from_secs(5), &mut server)
                .await
                .is_err()
        {
            server.abort();
        }
    }
}

impl Deref for SimHandle {
    type Target = World;
    fn deref(&self) -> &World {
        &self.world
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        if let Some(t) = self.ticker.take() {
            t.abort();
        }
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

impl std::fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHandle")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

/// Serves a new, empty simulator on `listener` (e.g. bound to `127.0.0.1:0`).
pub async fn spawn(listener: TcpListener, cfg: SimConfig) -> anyhow::Result<SimHandle> {
    let addr = listener
        .local_addr()
        .context("simulator listener address")?;
    let world = World::new(cfg);
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn({
        let world = world.clone();
        async move {
            let _ = serve(listener, world, async {
                let _ = stopped.await;
            })
            .await;
        }
    });
    let ticker = world.config().tick.map(|every| {
        let weak = Arc::downgrade(&world);
        tokio::spawn(async move {
            let mut iv = tokio::time::interval(every.max(Duration::from_millis(10)));
            iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            iv.tick().await;
            loop {
                iv.tick().await;
                match weak.upgrade() {
                    Some(w) => w.tick(Utc::now()),
                    None => break,
                }
            }
        })
    });
    let host = if addr.ip().is_unspecified() {
        match addr {
            SocketAddr::V4(_) => "127.0.0.1".to_string(),
            SocketAddr::V6(_) => "[::1]".to_string(),
        }
    } else {
        match addr {
            SocketAddr::V4(a) => a.ip().to_string(),
            SocketAddr::V6(a) => format!("[{}]", a.ip()),
        }
    };
    Ok(SimHandle {
        base_url: format!("http://{host}:{}", addr.port()),
        addr,
        world,
        stop: Some(stop),
        server: Some(server),
        ticker,
    })
}

/// `runwarden simulate`: binds `listen`, seeds the sample world, prints the URLs and
/// serves until Ctrl-C (or SIGTERM).
pub async fn run_cli(listen: &str, cfg: SimConfig) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let sim = spawn(listener, cfg).await?;
    let sample = seed_sample(&sim, Utc::now()).map_err(|e| anyhow::anyhow!("seeding: {e}"))?;
    let base = &sim.base_url;
    outln!("runwarden simulator listening on {base}");
    outln!(
        "  Currents API  {base}/v1      (Authorization: Bearer {})",
        sim.config().api_key
    );
    outln!("  GitHub API    {base}/github  (any token)");
    outln!("  control       {base}/_sim");
    match &sim.config().webhook_url {
        Some(u) => outln!("  webhooks  ->  {u}"),
        None => outln!("  webhooks      off (POST {base}/_sim/webhook-target to set)"),
    }
    outln!(
        "seeded {} runs in projects {}; in progress: superseded {}, stuck {}, orphan {}",
        sample.runs,
        sample.projects.join(", "),
        sample.superseded,
        sample.stuck,
        sample.orphan
    );
    outln!("press Ctrl-C to stop");
    wait_for_signal().await;
    sim.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
