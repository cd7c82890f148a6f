//! HTTP client for the Currents REST API v1 (`shared/reference/runs-api.txt`,
//! `currents-notes.md` §1, §2.2 and §7).
//!
//! - Every URL is the configured base URL plus percent-encoded path segments; redirects
//!   are followed only within the base URL (same scheme, host, port and path prefix).
//! - `Authorization: Bearer <key>` from a [`Secret`]; the key never appears in `Debug`,
//!   `Display`, errors or logs.
//! - Envelope `{"status":"OK","data":..,"has_more":..}`; `{"status":"FAILED","error":..}`
//!   becomes [`CurrentsError::Api`].
//! - Retries on connection errors, timeouts, 429 and 5xx with exponential backoff and full
//!   jitter, honouring `Retry-After` (capped); never on other 4xx. `POST` (create webhook)
//!   is retried only when the request surely did not reach the server (connect error, 429).
//!   A 429's `Retry-After` holds back every request of the client (all clones), not only
//!   the call that met it.
//! - A request-rate cap and request counters shared by all clones.

mod error;
mod filter;
mod retry;
mod stats;

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::{self, BoxStream};
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::{Method, redirect};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use url::Url;

pub use error::CurrentsError;
pub use filter::{FindBy, MAX_PAGE_SIZE, RunFilter, TagOperator};
pub use stats::{ClientStats, RequestObserver, status_label};

use crate::currents::models::{
    CancelResult, DeleteResult, Instance, Project, Run, Webhook, WebhookSpec,
};
use crate::secret::Secret;
use error::{excerpt, is_retryable_status};
use retry::RateLimiter;
use stats::StatsRecorder;

/// Result alias of this module.
pub type Result<T, E = CurrentsError> = std::result::Result<T, E>;

/// The public Currents API.
pub const DEFAULT_BASE_URL: &str = "https://api.currents.dev/v1";

/// Largest response body accepted (a run with thousands of specs is a few MiB).
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// Redirect hops followed (within the base URL only).
const MAX_REDIRECTS: usize = 3;

/// Settings of a [`CurrentsClient`]. `Default` gives the public API with an empty key;
/// set at least `api_key`:
///
/// ```ignore
/// ClientOptions { api_key, request_timeout, ..ClientOptions::default() }
/// ```
#[derive(Clone)]
pub struct ClientOptions {
    /// E.g. `https://api.currents.dev/v1` or `http://127.0.0.1:PORT/v1`.
    pub base_url: Url,
    pub api_key: Secret,
    /// Limit for one attempt: connect, send, and read the whole body.
    pub request_timeout: Duration,
    /// Requests per second over all clones, retries included; 0 = unlimited.
    pub max_requests_per_second: u32,
    /// Attempts per call, the first included (0 counts as 1).
    pub max_attempts: u32,
    /// First backoff ceiling; doubled per attempt, full jitter.
    pub backoff_base: Duration,
    /// Largest backoff ceiling.
    pub backoff_max: Duration,
    /// Longest `Retry-After` of a 429 the client sleeps through before its next attempt
    /// (and holds every other request of the client for). A longer one ends the call at
    /// once with [`CurrentsError::RateLimited`] carrying the whole wait, for the caller to
    /// honour: the executor schedules the action's next attempt after it.
    pub retry_after_max: Duration,
    pub user_agent: String,
    /// Pages a stream walks before it ends with [`CurrentsError::Pagination`].
    pub max_pages: u32,
    /// Called once per HTTP attempt with (operation, status); see [`RequestObserver`].
    pub on_request: Option<RequestObserver>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            base_url: Url::parse(DEFAULT_BASE_URL).expect("valid default URL"),
            api_key: Secret::new(""),
            request_timeout: Duration::from_secs(30),
            max_requests_per_second: 10,
            max_attempts: 5,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            retry_after_max: Duration::from_secs(60),
            user_agent: concat!("runwarden/", env!("CARGO_PKG_VERSION")).to_string(),
            max_pages: 10_000,
            on_request: None,
        }
    }
}

impl fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientOptions")
            .field("base_url", &self.base_url.as_str())
            .field("api_key", &self.api_key)
            .field("request_timeout", &self.request_timeout)
            .field("max_requests_per_second", &self.max_requests_per_second)
            .field("max_attempts", &self.max_attempts)
            .field("backoff_base", &self.backoff_base)
            .field("backoff_max", &self.backoff_max)
            .field("retry_after_max", &self.retry_after_max)
            .field("user_agent", &self.user_agent)
            .field("max_pages", &self.max_pages)
            .field("on_request", &self.on_request.as_ref().map(|_| "Fn"))
            .finish()
    }
}

/// One page of a cursor-paginated list.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// The API's `has_more` (absent counts as `false`).
    pub has_more: bool,
    /// The last item's `cursor`: pass it as `starting_after` for the next page.
    pub next_cursor: Option<String>,
}

/// Outcome of [`CurrentsClient::cancel_run`].
#[derive(Debug, Clone, PartialEq)]
pub enum CancelOutcome {
    /// The API cancelled the run now.
    Cancelled(CancelResult),
    /// HTTP 404, 409 or 422: the run is gone, already cancelled or already finished.
    /// Cancel is idempotent, so this counts as done.
    AlreadyDone {
        status: u16,
        message: String,
        /// An earlier attempt of this call was sent and got no answer (the connection
        /// dropped, a timeout, a 5xx): it may be what cancelled the run.
        after_unanswered: bool,
    },
}

/// Outcome of [`CurrentsClient::delete_run`].
#[derive(Debug, Clone, PartialEq)]
pub enum DeleteOutcome {
    Deleted(DeleteResult),
    /// HTTP 404, 409 or 422: the run is gone already or its deletion is under way.
    /// Delete is idempotent, so this counts as done.
    AlreadyGone {
        status: u16,
        message: String,
    },
}

/// Client for the Currents REST API. Cheap to clone; clones share the connection pool,
/// the rate cap and the counters.
#[derive(Clone)]
pub struct CurrentsClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base: Url,
    auth: HeaderValue,
    api_key: Secret,
    request_timeout: Duration,
    max_attempts: u32,
    backoff_base: Duration,
    backoff_max: Duration,
    retry_after_max: Duration,
    max_pages: u32,
    max_requests_per_second: u32,
    limiter: RateLimiter,
    stats: StatsRecorder,
    on_request: Option<RequestObserver>,
}

impl fmt::Debug for CurrentsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        f.debug_struct("CurrentsClient")
            .field("base_url", &i.base.as_str())
            .field("api_key", &i.api_key)
            .field("request_timeout", &i.request_timeout)
            .field("max_requests_per_second", &i.max_requests_per_second)
            .field("max_attempts", &i.max_attempts)
            .finish_non_exhaustive()
    }
}

/// Whether a failed call may be sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Idempotency {
    /// GET, PUT, DELETE: retry on transport errors, timeouts, 429 and 5xx.
    Idempotent,
    /// POST: retry only when the server surely did not act (connect error, 429).
    NonIdempotent,
}

/// One logical API call.
struct Call<'a> {
    op: &'static str,
    method: Method,
    segments: &'a [&'a str],
    query: Vec<(&'static str, String)>,
    body: Option<Bytes>,
    idempotency: Idempotency,
}

impl<'a> Call<'a> {
    fn get(op: &'static str, segments: &'a [&'a str]) -> Self {
        Self {
            op,
            method: Method::GET,
            segments,
            query: Vec::new(),
            body: None,
            idempotency: Idempotency::Idempotent,
        }
    }

    fn query(mut self, query: Vec<(&'static str, String)>) -> Self {
        self.query = query;
        self
    }
}

/// The final response of a call: a success or a non-retryable (or exhausted) status.
struct Reply {
    status: u16,
    body: Bytes,
    /// An earlier attempt of the call was sent and got no answer it could be sure of
    /// (no response, or a 5xx): the server may have carried it out.
    after_unanswered: bool,
}

/// The outcome of one attempt.
enum Attempt {
    Response {
        status: u16,
        retry_after: Option<Duration>,
        body: Bytes,
    },
    Failed {
        error: CurrentsError,
        sent: bool,
    },
}

/// The API envelope (`{"status","data","has_more","error"}`) every answer is read from
/// (also by the fuzz target of the models, `crate::fuzzing::models`).
#[derive(Deserialize)]
pub(crate) struct Envelope<T> {
    #[serde(default)]
    status: Option<String>,
    #[serde(default = "none")]
    pub(crate) data: Option<T>,
    #[serde(default)]
    has_more: Option<bool>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

fn none<T>() -> Option<T> {
    None
}

/// Items with a pagination cursor.
trait Cursored {
    fn cursor(&self) -> Option<&str>;
}

impl Cursored for Run {
    fn cursor(&self) -> Option<&str> {
        self.cursor.as_deref()
    }
}

impl Cursored for Project {
    fn cursor(&self) -> Option<&str> {
        self.cursor.as_deref()
    }
}

impl CurrentsClient {
    /// Builds a client. Fails on a base URL that is not `http(s)://host/...`, carries
    /// credentials, or on a TLS backend failure.
    pub fn new(opts: ClientOptions) -> Result<Self> {
        let mut base = opts.base_url;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(CurrentsError::Config(
                "base URL must be http(s)://host/...".into(),
            ));
        }
        if base.host_str().is_none_or(str::is_empty) {
            return Err(CurrentsError::Config("base URL has no host".into()));
        }
        if !base.username().is_empty() || base.password().is_some() {
            return Err(CurrentsError::Config(
                "base URL must not carry credentials".into(),
            ));
        }
        base.set_query(None);
        base.set_fragment(None);

        let mut auth = HeaderValue::from_str(&format!("Bearer {}", opts.api_key.expose()))
            .map_err(|_| CurrentsError::Config("API key contains invalid characters".into()))?;
        auth.set_sensitive(true);

        let redirect_base = base.clone();
        let policy = redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > MAX_REDIRECTS {
                attempt.stop()
            } else if within_base(&redirect_base, attempt.url()) {
                attempt.follow()
            } else {
                attempt.stop()
            }
        });
        let request_timeout = opts.request_timeout.max(Duration::from_millis(1));
        let http = reqwest::Client::builder()
            .user_agent(opts.user_agent)
            .redirect(policy)
            .connect_timeout(request_timeout.min(Duration::from_secs(10)))
            .timeout(request_timeout)
            .build()
            .map_err(|e| CurrentsError::Config(format!("HTTP client: {}", error_chain(&e))))?;

        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base,
                auth,
                api_key: opts.api_key,
                request_timeout,
                max_attempts: opts.max_attempts.max(1),
                backoff_base: opts.backoff_base,
                backoff_max: opts.backoff_max,
                retry_after_max: opts.retry_after_max,
                max_pages: opts.max_pages.max(1),
                max_requests_per_second: opts.max_requests_per_second,
                limiter: RateLimiter::new(opts.max_requests_per_second),
                stats: StatsRecorder::default(),
                on_request: opts.on_request,
            }),
        })
    }

    /// The base URL every request goes to.
    pub fn base_url(&self) -> &Url {
        &self.inner.base
    }

    /// Requests sent so far by this client and its clones, by operation and status.
    pub fn stats(&self) -> ClientStats {
        self.inner.stats.snapshot()
    }

    /// HTTP requests sent so far (retries included), by this client and its clones.
    pub fn request_count(&self) -> u64 {
        self.inner.stats.total()
    }

    // ---- projects ----------------------------------------------------------------------

    /// `GET /projects`, every page, lazily.
    pub fn list_projects(&self) -> BoxStream<'static, Result<Project>> {
        let client = self.clone();
        paginate(self.inner.max_pages, move |cursor| {
            let client = client.clone();
            async move { client.list_projects_page(cursor.as_deref()).await }
        })
    }

    /// One page (50 items) of `GET /projects`.
    pub async fn list_projects_page(&self, starting_after: Option<&str>) -> Result<Page<Project>> {
        let mut query = vec![("limit", MAX_PAGE_SIZE.to_string())];
        if let Some(c) = starting_after {
            query.push(("starting_after", c.to_string()));
        }
        let reply = self
            .execute(Call::get("list_projects", &["projects"]).query(query))
            .await?;
        self.page(reply)
    }

    /// `GET /projects/{projectId}`.
    pub async fn get_project(&self, project_id: &str) -> Result<Project> {
        let reply = self
            .execute(Call::get("get_project", &["projects", project_id]))
            .await?;
        self.data(reply)
    }

    // ---- runs --------------------------------------------------------------------------

    /// `GET /projects/{projectId}/runs` with `filter`, newest first, walking the cursor
    /// pages lazily (a page is fetched only when the previous one is consumed) until
    /// `has_more` is false or a page is empty. The stream ends after its first error.
    /// Runs marked deleted (`deletedAt`) are left out.
    pub fn list_runs(
        &self,
        project_id: &str,
        filter: &RunFilter,
    ) -> BoxStream<'static, Result<Run>> {
        let client = self.clone();
        let project_id = project_id.to_string();
        let filter = filter.clone();
        paginate(self.inner.max_pages, move |cursor| {
            let (client, project_id, filter) = (client.clone(), project_id.clone(), filter.clone());
            async move {
                client
                    .list_runs_page(&project_id, &filter, cursor.as_deref())
                    .await
            }
        })
        // A run the API lists with `deletedAt` set is gone: no rule sees it, a retention
        // sweep neither deletes it again nor counts it against `max_deletions`.
        .filter(|r| std::future::ready(!matches!(r, Ok(run) if run.is_deleted())))
        .boxed()
    }

    /// One page of `GET /projects/{projectId}/runs`.
    pub async fn list_runs_page(
        &self,
        project_id: &str,
        filter: &RunFilter,
        starting_after: Option<&str>,
    ) -> Result<Page<Run>> {
        let mut query = filter.query_pairs();
        if let Some(c) = starting_after {
            query.push(("starting_after", c.to_string()));
        }
        let segments = ["projects", project_id, "runs"];
        let call = Call::get("list_runs", &segments).query(query);
        let reply = self.execute(call).await?;
        self.page(reply)
    }

    /// `GET /runs/{runId}` (with `specs`).
    pub async fn get_run(&self, run_id: &str) -> Result<Run> {
        let reply = self
            .execute(Call::get("get_run", &["runs", run_id]))
            .await?;
        self.data(reply)
    }

    /// `GET /runs/find?projectId=..&(ciBuildId=..|branch=..&tags[]=..)`. The API returns
    /// the most recent *completed* matching run; `Ok(None)` when there is none (404, or
    /// `data` without a `runId`). For an in-progress run use [`list_runs`](Self::list_runs)
    /// with `search` and match `meta.ciBuildId` exactly.
    pub async fn find_run(&self, project_id: &str, by: FindBy) -> Result<Option<Run>> {
        let call = Call::get("find_run", &["runs", "find"]).query(by.query_pairs(project_id));
        let reply = self.execute(call).await?;
        if reply.status == 404 {
            return Ok(None);
        }
        let data: Option<serde_json::Value> = self.envelope(&reply, true)?.data;
        match data {
            Some(v) if v.get("runId").is_some_and(|id| !id.is_null()) => serde_json::from_value(v)
                .map(Some)
                .map_err(|e| CurrentsError::Decode {
                    status: reply.status,
                    detail: excerpt(&format!("run: {e}"), self.inner.api_key.expose()),
                }),
            _ => Ok(None),
        }
    }

    /// `PUT /runs/{runId}/cancel`. 404, 409 and 422 ("Run already cancelled") give
    /// [`CancelOutcome::AlreadyDone`].
    pub async fn cancel_run(&self, run_id: &str) -> Result<CancelOutcome> {
        let call = Call {
            op: "cancel_run",
            method: Method::PUT,
            segments: &["runs", run_id, "cancel"],
            query: Vec::new(),
            body: None,
            idempotency: Idempotency::Idempotent,
        };
        let reply = self.execute(call).await?;
        if matches!(reply.status, 404 | 409 | 422) {
            return Ok(CancelOutcome::AlreadyDone {
                status: reply.status,
                message: self.error_message(&reply),
                after_unanswered: reply.after_unanswered,
            });
        }
        let data = self.envelope::<CancelResult>(&reply, true)?.data;
        Ok(CancelOutcome::Cancelled(data.unwrap_or_default()))
    }

    /// `DELETE /runs/{runId}` (permanent). 404, 409 and 422 give
    /// [`DeleteOutcome::AlreadyGone`].
    pub async fn delete_run(&self, run_id: &str) -> Result<DeleteOutcome> {
        let call = Call {
            op: "delete_run",
            method: Method::DELETE,
            segments: &["runs", run_id],
            query: Vec::new(),
            body: None,
            idempotency: Idempotency::Idempotent,
        };
        let reply = self.execute(call).await?;
        if matches!(reply.status, 404 | 409 | 422) {
            return Ok(DeleteOutcome::AlreadyGone {
                status: reply.status,
                message: self.error_message(&reply),
            });
        }
        let data = self.envelope::<DeleteResult>(&reply, true)?.data;
        Ok(DeleteOutcome::Deleted(data.unwrap_or_default()))
    }

    /// `GET /instances/{instanceId}`.
    pub async fn get_instance(&self, instance_id: &str) -> Result<Instance> {
        let reply = self
            .execute(Call::get("get_instance", &["instances", instance_id]))
            .await?;
        self.data(reply)
    }

    // ---- webhooks ----------------------------------------------------------------------

    /// `GET /webhooks?projectId=..`.
    pub async fn list_webhooks(&self, project_id: &str) -> Result<Vec<Webhook>> {
        let call = Call::get("list_webhooks", &["webhooks"])
            .query(vec![("projectId", project_id.to_string())]);
        let reply = self.execute(call).await?;
        self.data(reply)
    }

    /// `POST /webhooks?projectId=..`. Not idempotent: retried only on connect errors and
    /// 429, so a lost response surfaces as an error (list before creating again).
    pub async fn create_webhook(&self, project_id: &str, spec: &WebhookSpec) -> Result<Webhook> {
        let call = Call {
            op: "create_webhook",
            method: Method::POST,
            segments: &["webhooks"],
            query: vec![("projectId", project_id.to_string())],
            body: Some(json_body(spec)?),
            idempotency: Idempotency::NonIdempotent,
        };
        let reply = self.execute(call).await?;
        self.data(reply)
    }

    /// `PUT /webhooks/{hookId}` with the fields set in `spec`.
    pub async fn update_webhook(&self, hook_id: &str, spec: &WebhookSpec) -> Result<Webhook> {
        let call = Call {
            op: "update_webhook",
            method: Method::PUT,
            segments: &["webhooks", hook_id],
            query: Vec::new(),
            body: Some(json_body(spec)?),
            idempotency: Idempotency::Idempotent,
        };
        let reply = self.execute(call).await?;
        self.data(reply)
    }

    /// `DELETE /webhooks/{hookId}`: `Ok(true)` when deleted, `Ok(false)` when it did not
    /// exist (404).
    pub async fn delete_webhook(&self, hook_id: &str) -> Result<bool> {
        let call = Call {
            op: "delete_webhook",
            method: Method::DELETE,
            segments: &["webhooks", hook_id],
            query: Vec::new(),
            body: None,
            idempotency: Idempotency::Idempotent,
        };
        let reply = self.execute(call).await?;
        if reply.status == 404 {
            return Ok(false);
        }
        self.envelope::<serde_json::Value>(&reply, true)?;
        Ok(true)
    }

    // ---- plumbing ----------------------------------------------------------------------

    /// The URL of `segments` (each percent-encoded) under the base URL, with `query`.
    fn endpoint(&self, segments: &[&str], query: &[(&'static str, String)]) -> Result<Url> {
        for s in segments {
            if s.is_empty() || *s == "." || *s == ".." {
                return Err(CurrentsError::InvalidArgument(format!(
                    "bad path segment {s:?}"
                )));
            }
        }
        let mut url = self.inner.base.clone();
        url.path_segments_mut()
            .map_err(|_| CurrentsError::Config("base URL cannot be a base".into()))?
            .pop_if_empty()
            .extend(segments);
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        Ok(url)
    }

    /// Sends `call` with retries; returns the final response, or an error when no usable
    /// response came (transport, timeout, 429 after the last attempt).
    async fn execute(&self, call: Call<'_>) -> Result<Reply> {
        let inner = &*self.inner;
        let url = self.endpoint(call.segments, &call.query)?;
        let mut last_retry_after = None;
        let mut unanswered = false;
        for attempt in 1..=inner.max_attempts {
            inner.limiter.acquire().await;
            let started = tokio::time::Instant::now();
            let outcome = self.attempt(&call, &url).await;
            let status = match &outcome {
                Attempt::Response { status, .. } => Some(*status),
                Attempt::Failed { .. } => None,
            };
            inner.stats.record(call.op, status);
            if let Some(hook) = &inner.on_request {
                hook(call.op, status);
            }
            tracing::debug!(
                op = call.op,
                method = %call.method,
                path = url.path(),
                status,
                attempt,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "currents request"
            );

            let last = attempt == inner.max_attempts;
            let retry_after = match outcome {
                Attempt::Response { status, body, .. } if !is_retryable_status(status) => {
                    return Ok(Reply {
                        status,
                        body,
                        after_unanswered: unanswered,
                    });
                }
                Attempt::Response {
                    status,
                    retry_after,
                    body,
                } => {
                    let may_retry = call.idempotency == Idempotency::Idempotent || status == 429;
                    // A wait longer than the client sleeps through is the caller's to
                    // honour (the executor schedules the action's next attempt after it):
                    // retrying sooner would send requests inside the window the API asked
                    // to be left alone.
                    let too_long = status == 429
                        && retry_after.is_some_and(|wait| wait > inner.retry_after_max);
                    if last || !may_retry || too_long {
                        if status == 429 {
                            if let Some(wait) = retry_after {
                                inner.limiter.pause_for(wait.min(inner.retry_after_max));
                            }
                            return Err(CurrentsError::RateLimited {
                                attempts: attempt,
                                retry_after: retry_after.or(last_retry_after),
                            });
                        }
                        return Ok(Reply {
                            status,
                            body,
                            after_unanswered: unanswered,
                        });
                    }
                    // A 5xx may come after the server acted (a proxy's 502); a 429 not.
                    unanswered |= status != 429;
                    retry_after
                }
                Attempt::Failed { error, sent } => {
                    let may_retry = call.idempotency == Idempotency::Idempotent || !sent;
                    if last || !may_retry || !error.is_retryable() {
                        return Err(error);
                    }
                    unanswered |= sent;
                    None
                }
            };
            if let Some(wait) = retry_after {
                last_retry_after = retry_after;
                // The whole client waits, not only this call: other requests sent
                // meanwhile would meet the same limit (and prolong it).
                inner.limiter.pause_for(wait.min(inner.retry_after_max));
            }
            let delay = retry::next_delay(
                inner.backoff_base,
                inner.backoff_max,
                attempt,
                retry_after,
                inner.retry_after_max,
            );
            tracing::debug!(
                op = call.op,
                attempt,
                delay_ms = delay.as_millis() as u64,
                "currents request will be retried"
            );
            tokio::time::sleep(delay).await;
        }
        unreachable!("the last attempt always returns")
    }

    /// One HTTP exchange, bounded by `request_timeout` (headers and body).
    async fn attempt(&self, call: &Call<'_>, url: &Url) -> Attempt {
        let inner = &*self.inner;
        let mut req = inner
            .http
            .request(call.method.clone(), url.clone())
            .header(AUTHORIZATION, inner.auth.clone())
            .header(ACCEPT, "application/json");
        match &call.body {
            Some(body) => {
                req = req
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.clone())
            }
            None if call.method == Method::PUT || call.method == Method::POST => {
                req = req.body(Bytes::new())
            }
            None => {}
        }
        let exchange = async {
            let mut resp = req.send().await.map_err(|e| (e, false))?;
            let status = resp.status().as_u16();
            let retry_after = retry_after(resp.headers());
            let mut body = Vec::with_capacity(
                resp.content_length()
                    .map_or(0, |n| n.min(MAX_BODY_BYTES as u64) as usize),
            );
            while let Some(chunk) = resp.chunk().await.map_err(|e| (e, true))? {
                if body.len() + chunk.len() > MAX_BODY_BYTES {
                    return Ok(Err(CurrentsError::Decode {
                        status,
                        detail: format!("response body exceeds {MAX_BODY_BYTES} bytes"),
                    }));
                }
                body.extend_from_slice(&chunk);
            }
            Ok::<_, (reqwest::Error, bool)>(Ok((status, retry_after, Bytes::from(body))))
        };
        match tokio::time::timeout(inner.request_timeout, exchange).await {
            Err(_elapsed) => Attempt::Failed {
                error: CurrentsError::Timeout,
                sent: true,
            },
            Ok(Ok(Ok((status, retry_after, body)))) => Attempt::Response {
                status,
                retry_after,
                body,
            },
            Ok(Ok(Err(error))) => Attempt::Failed { error, sent: true },
            Ok(Err((e, reading_body))) => Attempt::Failed {
                sent: reading_body || !e.is_connect(),
                error: self.transport_error(&e),
            },
        }
    }

    fn transport_error(&self, e: &reqwest::Error) -> CurrentsError {
        if e.is_timeout() {
            CurrentsError::Timeout
        } else {
            CurrentsError::Transport(excerpt(&error_chain(e), self.inner.api_key.expose()))
        }
    }

    /// Parses the envelope of a final response. Non-2xx → `Api`; `"status":"FAILED"` →
    /// `Api`; undecodable 2xx → `Decode`. With `allow_empty`, an empty 2xx body gives
    /// `data: None`.
    fn envelope<T: DeserializeOwned>(
        &self,
        reply: &Reply,
        allow_empty: bool,
    ) -> Result<Envelope<T>> {
        let status = reply.status;
        if !(200..300).contains(&status) {
            return Err(CurrentsError::Api {
                status,
                message: self.error_message(reply),
            });
        }
        if reply.body.iter().all(u8::is_ascii_whitespace) {
            if allow_empty {
                return Ok(Envelope {
                    status: None,
                    data: None,
                    has_more: None,
                    error: None,
                });
            }
            return Err(CurrentsError::Decode {
                status,
                detail: "empty body".into(),
            });
        }
        let key = self.inner.api_key.expose();
        let env: Envelope<T> = serde_json::from_slice(&reply.body).map_err(|e| {
            let body = String::from_utf8_lossy(&reply.body);
            CurrentsError::Decode {
                status,
                detail: excerpt(&format!("{e}; body: {body}"), key),
            }
        })?;
        if env
            .status
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("FAILED"))
        {
            let message = env
                .error
                .as_ref()
                .map_or_else(|| "FAILED".to_string(), value_text);
            return Err(CurrentsError::Api {
                status,
                message: excerpt(&message, key),
            });
        }
        Ok(env)
    }

    /// The `data` of a 2xx response, required.
    fn data<T: DeserializeOwned>(&self, reply: Reply) -> Result<T> {
        self.envelope::<T>(&reply, false)?
            .data
            .ok_or_else(|| CurrentsError::Decode {
                status: reply.status,
                detail: "response has no data".into(),
            })
    }

    fn page<T: DeserializeOwned + Cursored>(&self, reply: Reply) -> Result<Page<T>> {
        let env = self.envelope::<Vec<T>>(&reply, false)?;
        let items = env.data.ok_or_else(|| CurrentsError::Decode {
            status: reply.status,
            detail: "response has no data".into(),
        })?;
        let next_cursor = items.last().and_then(Cursored::cursor).map(str::to_string);
        Ok(Page {
            items,
            has_more: env.has_more.unwrap_or(false),
            next_cursor,
        })
    }

    /// The message of an error response: the envelope's `error` (or `message`), else an
    /// excerpt of the body, else the reason phrase.
    fn error_message(&self, reply: &Reply) -> String {
        let key = self.inner.api_key.expose();
        if (300..400).contains(&reply.status) {
            return "redirect not followed: only the configured base URL is called".into();
        }
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&reply.body)
            && let Some(m) = v
                .get("error")
                .or_else(|| v.get("message"))
                .filter(|m| !m.is_null())
        {
            return excerpt(&value_text(m), key);
        }
        let text = excerpt(&String::from_utf8_lossy(&reply.body), key);
        if !text.is_empty() {
            return text;
        }
        reqwest::StatusCode::from_u16(reply.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("no message")
            .to_string()
    }
}

/// Walks cursor pages lazily with `fetch(starting_after)`.
fn paginate<T, F, Fut>(max_pages: u32, fetch: F) -> BoxStream<'static, Result<T>>
where
    T: Cursored + Send + 'static,
    F: Fn(Option<String>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Page<T>>> + Send + 'static,
{
    enum Next {
        Fetch(Option<String>),
        Fail(CurrentsError),
        Done,
    }
    struct State<F, T> {
        fetch: F,
        next: Next,
        pages: u32,
        buffer: VecDeque<T>,
    }
    let state = State {
        fetch,
        next: Next::Fetch(None),
        pages: 0,
        buffer: VecDeque::new(),
    };
    stream::unfold(state, move |mut st| async move {
        loop {
            if let Some(item) = st.buffer.pop_front() {
                return Some((Ok(item), st));
            }
            match std::mem::replace(&mut st.next, Next::Done) {
                Next::Done => return None,
                Next::Fail(e) => return Some((Err(e), st)),
                Next::Fetch(cursor) => {
                    let page = match (st.fetch)(cursor.clone()).await {
                        Ok(page) => page,
                        Err(e) => return Some((Err(e), st)),
                    };
                    st.pages += 1;
                    st.next = if page.items.is_empty() || !page.has_more {
                        Next::Done
                    } else {
                        match page.next_cursor {
                            None => Next::Fail(CurrentsError::Pagination(
                                "has_more is true but the last item has no cursor".into(),
                            )),
                            Some(c) if Some(&c) == cursor.as_ref() => Next::Fail(
                                CurrentsError::Pagination(format!("cursor {c:?} repeated")),
                            ),
                            Some(_) if st.pages >= max_pages => {
                                Next::Fail(CurrentsError::Pagination(format!(
                                    "stopped after {max_pages} pages"
                                )))
                            }
                            Some(c) => Next::Fetch(Some(c)),
                        }
                    };
                    st.buffer.extend(page.items);
                }
            }
        }
    })
    .boxed()
}

/// Whether `target` is under `base`: same scheme, host and port, and a path below the
/// base path.
fn within_base(base: &Url, target: &Url) -> bool {
    let prefix = base.path().trim_end_matches('/');
    base.scheme() == target.scheme()
        && base.host_str() == target.host_str()
        && base.port_or_known_default() == target.port_or_known_default()
        && target.username().is_empty()
        && target.password().is_none()
        && (target.path() == prefix
            || target
                .path()
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/')))
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    retry::parse_retry_after(value, chrono::Utc::now())
}

fn json_body<T: serde::Serialize>(value: &T) -> Result<Bytes> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|e| CurrentsError::InvalidArgument(format!("cannot serialise body: {e}")))
}

/// A JSON value as text: strings without quotes, anything else as compact JSON.
fn value_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `e` and its sources, joined with `: `, without the URL.
fn error_chain(e: &reqwest::Error) -> String {
    let mut out = String::new();
    let mut cur: Option<&dyn std::error::Error> = Some(e);
    let mut first = true;
    while let Some(err) = cur {
        let text = if first {
            // reqwest's Display names the URL; the path is logged separately.
            let mut text = err.to_string();
            if let Some(i) = text.find(" for url (") {
                text.truncate(i);
            }
            text
        } else {
            err.to_string()
        };
        if !out.ends_with(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
        first = false;
        cur = err.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(base: &str) -> CurrentsClient {
        CurrentsClient::new(ClientOptions {
            base_url: Url::parse(base).unwrap(),
            api_key: Secret::new("sk-test-0123456789"),
            ..ClientOptions::default()
        })
        .unwrap()
    }

    #[test]
    fn endpoints_join_encoded_segments_onto_the_base() {
        let c = client("https://api.currents.dev/v1");
        let u = c.endpoint(&["runs", "a/b c?d#e", "cancel"], &[]).unwrap();
        assert_eq!(
            u.as_str(),
            "https://api.currents.dev/v1/runs/a%2Fb%20c%3Fd%23e/cancel"
        );
        let c = client("http://127.0.0.1:9/prefix/v1/?x=1#f");
        let u = c
            .endpoint(
                &["projects"],
                &[("limit", "50".into()), ("tags[]", "a&b".into())],
            )
            .unwrap();
        assert_eq!(
            u.as_str(),
            "http://127.0.0.1:9/prefix/v1/projects?limit=50&tags%5B%5D=a%26b"
        );
        let u = c.endpoint(&["runs", "%2e%2e"], &[]).unwrap();
        assert_eq!(u.path(), "/prefix/v1/runs/%252e%252e");
    }

    #[test]
    fn dot_segments_and_empty_ids_are_refused() {
        let c = client("https://api.currents.dev/v1");
        for bad in ["", ".", ".."] {
            assert!(matches!(
                c.endpoint(&["runs", bad], &[]),
                Err(CurrentsError::InvalidArgument(_))
            ));
        }
    }

    #[test]
    fn bad_base_urls_are_refused() {
        for bad in ["ftp://x/v1", "mailto:a@b", "http://user:pw@host/v1"] {
            let r = CurrentsClient::new(ClientOptions {
                base_url: Url::parse(bad).unwrap(),
                ..ClientOptions::default()
            });
            let e = r.unwrap_err();
            assert!(matches!(e, CurrentsError::Config(_)), "{bad}: {e}");
            assert!(!e.to_string().contains("pw"));
        }
    }

    #[test]
    fn redirects_only_within_the_base() {
        let base = Url::parse("https://api.currents.dev/v1").unwrap();
        let ok = |s: &str| within_base(&base, &Url::parse(s).unwrap());
        assert!(ok("https://api.currents.dev/v1/runs/x"));
        assert!(ok("https://api.currents.dev:443/v1"));
        assert!(!ok("https://api.currents.dev/v10/runs"));
        assert!(!ok("https://api.currents.dev/other"));
        assert!(!ok("http://api.currents.dev/v1/runs"));
        assert!(!ok("https://evil.example/v1/runs"));
        assert!(!ok("https://api.currents.dev:8443/v1/runs"));
        assert!(!ok("https://u:p@api.currents.dev/v1/runs"));
    }

    #[test]
    fn debug_never_shows_the_key() {
        let c = client("https://api.currents.dev/v1");
        let d = format!("{c:?}");
        assert!(!d.contains("sk-test-0123456789"), "{d}");
        assert!(d.contains("api.currents.dev"));
        let o = ClientOptions {
            api_key: Secret::new("sk-test-0123456789"),
            ..ClientOptions::default()
        };
        assert!(!format!("{o:?}").contains("sk-test-0123456789"));
    }

    fn reply(status: u16, body: &str) -> Reply {
        Reply {
            status,
            body: Bytes::from(body.to_string()),
            after_unanswered: false,
        }
    }

    #[test]
    fn envelope_mapping() {
        let c = client("https://api.currents.dev/v1");
        let p: Page<Project> = c
            .page(reply(200, r#"{"status":"OK","has_more":true,"data":[{"projectId":"a","cursor":"c1"},{"projectId":"b","cursor":"c2"}]}"#))
            .unwrap();
        assert_eq!(p.items.len(), 2);
        assert!(p.has_more);
        assert_eq!(p.next_cursor.as_deref(), Some("c2"));

        let e = c
            .data::<Run>(reply(404, r#"{"status":"FAILED","error":"Run not found"}"#))
            .unwrap_err();
        assert_eq!(
            e,
            CurrentsError::Api {
                status: 404,
                message: "Run not found".into()
            }
        );

        let e = c
            .data::<Run>(reply(200, r#"{"status":"FAILED","error":"odd"}"#))
            .unwrap_err();
        assert_eq!(
            e,
            CurrentsError::Api {
                status: 200,
                message: "odd".into()
            }
        );

        let e = c
            .data::<Run>(reply(200, "<html><body>Gateway</body></html>"))
            .unwrap_err();
        assert!(
            matches!(&e, CurrentsError::Decode { status: 200, detail } if detail.contains("<html>")),
            "{e}"
        );

        let e = c.data::<Run>(reply(200, r#"{"status":"OK"}"#)).unwrap_err();
        assert!(matches!(e, CurrentsError::Decode { .. }));

        let e = c
            .data::<Run>(reply(502, "<html>Bad Gateway</html>"))
            .unwrap_err();
        assert_eq!(
            e,
            CurrentsError::Api {
                status: 502,
                message: "<html>Bad Gateway</html>".into()
            }
        );
        assert!(e.is_retryable());

        let e = c.data::<Run>(reply(503, "")).unwrap_err();
        assert_eq!(
            e,
            CurrentsError::Api {
                status: 503,
                message: "Service Unavailable".into()
            }
        );

        let e = c
            .data::<Run>(reply(
                401,
                r#"{"status":"FAILED","error":"Invalid API key sk-test-0123456789"}"#,
            ))
            .unwrap_err();
        assert!(!e.to_string().contains("sk-test-0123456789"), "{e}");

        let long = format!(
            r#"{{"status":"OK","data":{{"runId":1}},"pad":"{}"}}"#,
            "y".repeat(5000)
        );
        let e = c.data::<Run>(reply(200, &long)).unwrap_err();
        let CurrentsError::Decode { detail, .. } = e else {
            panic!()
        };
        assert!(detail.chars().count() <= error::MAX_DETAIL_CHARS + 1);
    }

    #[tokio::test]
    async fn pagination_stops_on_empty_page_missing_cursor_and_repeats() {
        fn run(id: &str, cursor: Option<&str>) -> Run {
            serde_json::from_value(serde_json::json!({
                "runId": id, "createdAt": "2026-01-01T00:00:00Z", "cursor": cursor
            }))
            .unwrap()
        }
        // Empty page with has_more=true ends the walk.
        let s = paginate(100, |cursor: Option<String>| async move {
            Ok(match cursor {
                None => Page {
                    items: vec![run("a", Some("c1"))],
                    has_more: true,
                    next_cursor: Some("c1".into()),
                },
                Some(_) => Page {
                    items: vec![],
                    has_more: true,
                    next_cursor: None,
                },
            })
        });
        let got: Vec<_> = s.collect().await;
        assert_eq!(got.len(), 1);
        assert!(got[0].is_ok());

        // has_more without cursor: items, then an error.
        let s = paginate(100, |_c: Option<String>| async move {
            Ok(Page {
                items: vec![run("a", None)],
                has_more: true,
                next_cursor: None,
            })
        });
        let got: Vec<_> = s.collect().await;
        assert_eq!(got.len(), 2);
        assert!(matches!(got[1], Err(CurrentsError::Pagination(_))));

        // The same cursor twice: an error, not a loop.
        let s = paginate(100, |_c: Option<String>| async move {
            Ok(Page {
                items: vec![run("a", Some("c"))],
                has_more: true,
                next_cursor: Some("c".into()),
            })
        });
        let got: Vec<_> = s.collect().await;
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(matches!(got[2], Err(CurrentsError::Pagination(_))));

        // The page cap.
        let s = paginate(3, |c: Option<String>| async move {
            let n: u32 = c.as_deref().map_or(0, |c| c.parse().unwrap()) + 1;
            Ok(Page {
                items: vec![run("a", Some(&n.to_string()))],
                has_more: true,
                next_cursor: Some(n.to_string()),
            })
        });
        let got: Vec<_> = s.collect().await;
        assert_eq!(got.len(), 4);
        assert!(matches!(got[3], Err(CurrentsError::Pagination(_))));

        // An error ends the stream.
        let s = paginate(100, |_c: Option<String>| async move {
            Err::<Page<Run>, _>(CurrentsError::Timeout)
        });
        let got: Vec<_> = s.collect().await;
        assert_eq!(got, vec![Err(CurrentsError::Timeout)]);
    }
}
