//! The GitHub REST client runwarden uses for run summaries (SPEC §4 `summary`, §6), over
//! octocrab.
//!
//! octocrab is the transport (hyper + rustls, connect/read/write timeouts, tracing spans);
//! everything GitHub-specific that decides whether a side effect happens once is done
//! here, on the raw responses, because octocrab's typed handlers hide the headers this
//! needs (`reliability-notes.md` §2.6):
//!
//! - **Retries** are explicit and per kind of call. Reads and idempotent writes (`PATCH` of
//!   a comment, commit statuses) are retried on network errors, timeouts, 5xx, 429 and
//!   rate-limit 403s, with exponential backoff and jitter. A rate limit waits for
//!   `Retry-After`, else until `x-ratelimit-reset` when `x-ratelimit-remaining` is 0, else
//!   at least [`RetryPolicy::secondary_limit_delay`] (60 s; GitHub's advice for a
//!   secondary limit without headers), doubling on each further hit of the same call.
//! - **A rate limit holds the whole client back**, not only the call that met it: GitHub
//!   warns that continuing to send requests while rate limited can get an integration
//!   banned. The client remembers until when it must wait (one gate per client, so per
//!   token or App; at most [`MAX_RATE_LIMIT_HOLD`]), and no call sends a request before
//!   then. A call that meets the closed gate waits for it when it opens within
//!   [`RetryPolicy::max_wait`] (10 s by default); a longer wait, its own or another
//!   call's, is not slept through: the call fails at once, without a request, with a
//!   [`GithubErrorKind::RateLimited`] error whose [`GithubError::retry_after`] is the
//!   wait left, so the executor parks the action until then instead of holding one of its
//!   slots for minutes. An answer saying the quota is used up (`x-ratelimit-remaining:
//!   0`) closes the gate until `x-ratelimit-reset` too, so the next call is not sent only
//!   to be refused.
//! - **Creating a comment is never blindly retried.** When a `POST` comment's outcome is
//!   unknown (timeout, dropped connection, 5xx), [`GithubClient::create_comment_unique`]
//!   reads the PR's comments for the marker before posting again.
//! - **Every call has a timeout** ([`GithubClientOptions::request_timeout`], covering the
//!   whole exchange including the body), and mutating calls are spaced by
//!   [`RetryPolicy::min_write_interval`] (GitHub asks for ≥ 1 s between writes). At most
//!   [`WRITES_PER_HOUR`] are sent in any hour (GitHub's secondary limit on content
//!   creation is 500 an hour): past that a write is not sent, and the error carries the
//!   wait until the oldest of them leaves the hour, so the action is parked.
//! - **Auth**: a token (`GITHUB_TOKEN`), or a GitHub App: the installation of each repo is
//!   looked up once (`GET /repos/{o}/{r}/installation`), and once more when creating its
//!   token answers 404 (the App was uninstalled, maybe reinstalled under a new id),
//!   installation tokens are created
//!   (`POST /app/installations/{id}/access_tokens`), cached per installation, refreshed
//!   [`TOKEN_REFRESH_MARGIN`] before they expire and dropped on a 401. Every URL is built
//!   from `github.api_url`, so GitHub Enterprise (`https://ghe/api/v3`) and the simulator
//!   (`{sim}/github`) work; credentials are only ever sent to that origin.
//! - **Identity**: the login runwarden writes as ([`GithubClient::own_login`]: `GET /user`
//!   with a token, `{slug}[bot]` from `GET /app` with an App) is asked once, when first
//!   needed, and remembered. A comment is runwarden's only when it carries the marker
//!   *and* that login wrote it: anyone who can comment on a PR can post the marker.
//!
//! Secrets never appear in `Debug` output, logs or errors.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use octocrab::Octocrab;
use rand::Rng;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::config::{GithubConfig, Secrets};
use crate::secret::Secret;

/// GitHub's limit on a commit status description, in characters.
pub const MAX_STATUS_DESCRIPTION: usize = 140;
/// An installation token is replaced when it has less than this left to live.
pub const TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);
/// Entries of [`GithubClient::remember_status_run`]'s memory; past it, the entry of the
/// oldest run is forgotten.
pub const MAX_STATUS_RUNS: usize = 4096;

/// How many PRs' sticky comment ids a client remembers at most
/// ([`GithubClient::remember_comment_id`]).
pub const MAX_COMMENT_IDS: usize = 4096;
/// (repo key, sha, context, section key).
type StatusRunKey = (String, String, String, String);
/// Items per page of list calls (GitHub's maximum).
const PER_PAGE: usize = 100;
/// Safety stop for pagination (10,000 items).
const MAX_PAGES: usize = 100;
/// Longest GitHub error message kept in an error.
const MAX_MESSAGE: usize = 300;
/// Longest a rate limit holds the client back: a longer wait asked for (a broken clock,
/// a broken server) is cut to this. GitHub's primary rate limit resets within an hour.
pub const MAX_RATE_LIMIT_HOLD: Duration = Duration::from_secs(3600);

// ---------------------------------------------------------------------------------------
// runwarden's own small types
// ---------------------------------------------------------------------------------------

/// A repository, `owner/name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RepoName {
    pub owner: String,
    pub name: String,
}

impl RepoName {
    pub fn new(owner: impl Into<String>, name: impl Into<String>) -> Result<Self, InvalidRepo> {
        let (owner, name) = (owner.into(), name.into());
        let ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 100
                && s != "."
                && s != ".."
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        if ok(&owner) && ok(&name) {
            Ok(Self { owner, name })
        } else {
            Err(InvalidRepo(format!("{owner}/{name}")))
        }
    }

    /// Lower-case `owner/name`: GitHub compares repository names case-insensitively.
    pub fn key(&self) -> String {
        format!("{}/{}", self.owner, self.name).to_ascii_lowercase()
    }
}

impl FromStr for RepoName {
    type Err = InvalidRepo;
    fn from_str(s: &str) -> Result<Self, InvalidRepo> {
        let s = s.trim();
        match s.split_once('/') {
            Some((o, n)) if !n.contains('/') => RepoName::new(o, n),
            _ => Err(InvalidRepo(s.to_string())),
        }
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)
    }
}

/// A string that is not `owner/name`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a GitHub repository (owner/name)")]
pub struct InvalidRepo(pub String);

/// A pull request, as far as summaries need it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PullRef {
    pub number: u64,
    /// `open` or `closed`.
    pub state: String,
    pub head_sha: String,
    pub head_ref: String,
    /// `owner/name` of the repository the head branch is in (`head.repo.full_name`): the
    /// base repository, or a fork. `None` when GitHub did not say (a deleted fork).
    pub head_repo: Option<String>,
}

impl PullRef {
    pub fn is_open(&self) -> bool {
        self.state.eq_ignore_ascii_case("open")
    }
}

/// An issue (pull request) comment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IssueComment {
    pub id: u64,
    pub body: String,
    /// Login of the author.
    pub author: Option<String>,
    pub html_url: Option<String>,
}

impl IssueComment {
    /// Whether `login` wrote it (GitHub logins compare case-insensitively).
    pub fn is_by(&self, login: &str) -> bool {
        self.author
            .as_deref()
            .is_some_and(|a| !login.is_empty() && a.eq_ignore_ascii_case(login))
    }

    /// Whether it is runwarden's comment carrying `marker`: it starts with the marker
    /// and was written by runwarden's own identity `own_login` (see
    /// [`GithubClient::own_login`]). Anyone who can comment can post the marker; such a
    /// comment is not runwarden's and is neither read nor edited.
    pub fn is_runwardens(&self, marker: &str, own_login: &str) -> bool {
        has_marker(&self.body, marker) && self.is_by(own_login)
    }
}

/// The result of [`GithubClient::create_comment_unique`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedComment {
    pub comment: IssueComment,
    /// `true`: a `POST` had an unknown outcome and this comment was found by its marker
    /// instead (it may carry another writer's body).
    pub recovered: bool,
}

/// State of a commit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StatusState {
    Pending,
    Success,
    Failure,
    Error,
}

impl StatusState {
    pub fn as_str(self) -> &'static str {
        match self {
            StatusState::Pending => "pending",
            StatusState::Success => "success",
            StatusState::Failure => "failure",
            StatusState::Error => "error",
        }
    }
}

impl fmt::Display for StatusState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A commit status as GitHub reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommitStatus {
    pub state: StatusState,
    pub context: String,
    pub description: Option<String>,
    pub target_url: Option<String>,
}

/// Cuts `s` to at most `max` characters, ending with `…` when cut.
pub fn truncate_chars(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/// A failed GitHub call. Never contains a credential.
#[derive(Debug, thiserror::Error)]
pub struct GithubError {
    /// `GET`, `POST`, ...; empty for errors raised before any request.
    pub method: String,
    /// The API path (no host, no query).
    pub path: String,
    pub kind: GithubErrorKind,
    /// Attempts made.
    pub attempts: u32,
    /// No request was sent: the client was holding back for a rate limit that another
    /// call met (see the module docs). Not a failure of this call's own.
    pub held_back: bool,
}

impl fmt::Display for GithubError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.method.is_empty() {
            write!(f, "GitHub: {}", self.kind)
        } else {
            write!(f, "GitHub {} {}: {}", self.method, self.path, self.kind)?;
            if self.attempts > 1 {
                write!(f, " (after {} attempts)", self.attempts)?;
            }
            Ok(())
        }
    }
}

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum GithubErrorKind {
    /// An HTTP error answer (not a rate limit).
    #[error("HTTP {status}: {message}")]
    Status { status: u16, message: String },
    /// A primary or secondary rate limit (429, or 403 with rate-limit signs).
    #[error("rate limited (HTTP {status}): {message}")]
    RateLimited {
        status: u16,
        message: String,
        /// How long GitHub asked to wait, when it said.
        retry_after: Option<Duration>,
    },
    /// No complete answer within the request timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The connection failed or was dropped.
    #[error("connection failed: {0}")]
    Network(String),
    /// A success answer whose body is not what the API documents.
    #[error("unexpected response: {0}")]
    Decode(String),
    /// Credentials are missing or unusable (e.g. the App is not installed on the repo).
    #[error("authentication: {0}")]
    Auth(String),
    /// A request runwarden refuses to send (bad sha, bad URL).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// runwarden could not tell which GitHub user it writes as (see
    /// [`GithubClient::own_login`]), so it cannot tell its comment from others'.
    /// Retryable: nothing was written, and nothing is guessed.
    #[error("cannot tell which GitHub user runwarden writes as: {0}")]
    Identity(String),
}

impl GithubError {
    fn new(method: &Method, path: &str, kind: GithubErrorKind) -> Self {
        GithubError {
            method: method.to_string(),
            path: path.to_string(),
            kind,
            attempts: 0,
            held_back: false,
        }
    }

    fn mark_held_back(mut self) -> Self {
        self.held_back = true;
        self
    }

    fn bare(kind: GithubErrorKind) -> Self {
        GithubError {
            method: String::new(),
            path: String::new(),
            kind,
            attempts: 0,
            held_back: false,
        }
    }

    /// The HTTP status of an error answer.
    pub fn status(&self) -> Option<u16> {
        match &self.kind {
            GithubErrorKind::Status { status, .. }
            | GithubErrorKind::RateLimited { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether trying again later can succeed: network errors, timeouts, 5xx, rate limits,
    /// and a malformed body (a truncating proxy). Other 4xx and auth problems are final.
    pub fn is_retryable(&self) -> bool {
        match &self.kind {
            GithubErrorKind::Status { status, .. } => *status >= 500 || *status == 408,
            GithubErrorKind::RateLimited { .. }
            | GithubErrorKind::Timeout(_)
            | GithubErrorKind::Network(_)
            | GithubErrorKind::Decode(_)
            | GithubErrorKind::Identity(_) => true,
            GithubErrorKind::Auth(_) | GithubErrorKind::Invalid(_) => false,
        }
    }

    /// For a write: whether GitHub may have carried it out although no success was seen
    /// (timeout, dropped connection, 5xx, unreadable success body).
    pub fn outcome_unknown(&self) -> bool {
        match &self.kind {
            GithubErrorKind::Status { status, .. } => *status >= 500,
            GithubErrorKind::Timeout(_)
            | GithubErrorKind::Network(_)
            | GithubErrorKind::Decode(_) => true,
            _ => false,
        }
    }

    /// GitHub does not have the commit the request names: 422 "No commit found for SHA"
    /// (a commit status, or a commit's pull requests, for a commit never pushed to the
    /// repository: a run recorded on a developer's machine).
    pub fn is_unknown_commit(&self) -> bool {
        match &self.kind {
            GithubErrorKind::Status { status, message } => {
                matches!(status, 404 | 422)
                    && message.to_ascii_lowercase().contains("no commit found")
            }
            _ => false,
        }
    }

    /// How long GitHub asked to wait before trying again (rate limits).
    pub fn retry_after(&self) -> Option<Duration> {
        match &self.kind {
            GithubErrorKind::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Options and auth
// ---------------------------------------------------------------------------------------

/// When and how calls are retried. The defaults follow GitHub's guidance; tests shrink
/// the delays.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts per call, the first included.
    pub max_attempts: u32,
    /// First backoff after a network error or 5xx; doubled each attempt, with jitter.
    pub base_delay: Duration,
    /// Cap of the exponential backoff.
    pub max_delay: Duration,
    /// Wait after a rate limit that gave no `Retry-After` and no reset time (GitHub:
    /// "wait at least one minute"); doubled on each further hit.
    pub secondary_limit_delay: Duration,
    /// A rate-limit wait longer than this is not slept through (by the call that met the
    /// limit, or by a later call held back by it): the error goes back to the caller at
    /// once with [`GithubError::retry_after`], so the action is parked rather than holding
    /// an executor slot.
    pub max_wait: Duration,
    /// Minimum spacing of mutating requests from this client.
    pub min_write_interval: Duration,
    /// After a comment `POST` with an unknown outcome, how long to wait before reading
    /// the comments to check for it, so a create still in flight at GitHub can land.
    pub unknown_outcome_settle: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
            secondary_limit_delay: Duration::from_secs(60),
            max_wait: Duration::from_secs(10),
            min_write_interval: Duration::from_secs(1),
            unknown_outcome_settle: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// Millisecond delays for tests and the simulator.
    pub fn fast() -> Self {
        RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(50),
            secondary_limit_delay: Duration::from_millis(20),
            max_wait: Duration::from_secs(5),
            min_write_interval: Duration::ZERO,
            unknown_outcome_settle: Duration::from_millis(20),
        }
    }
}

/// Most mutating requests one client sends in any hour ([`WRITE_WINDOW`]): GitHub's
/// secondary limit on content creation (comments, their edits, statuses) is 500 an hour;
/// spacing writes 1 s apart alone would allow 3,600.
pub const WRITES_PER_HOUR: usize = 500;

/// The window of [`WRITES_PER_HOUR`].
pub const WRITE_WINDOW: Duration = Duration::from_secs(3600);

/// Settings of a [`GithubClient`].
#[derive(Debug, Clone)]
pub struct GithubClientOptions {
    /// `https://api.github.com`, `https://ghe.example.com/api/v3`, `{sim}/github`.
    pub api_url: url::Url,
    /// Limit of one whole request (connect, send, answer, body).
    pub request_timeout: Duration,
    /// Limit of establishing a connection.
    pub connect_timeout: Duration,
    pub retry: RetryPolicy,
}

impl GithubClientOptions {
    pub fn new(api_url: url::Url) -> Self {
        GithubClientOptions {
            api_url,
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
        }
    }

    /// From `[github]`.
    pub fn from_config(github: &GithubConfig) -> Self {
        Self::new(github.api_url.clone())
    }
}

/// Signs the JWT a GitHub App authenticates with (RS256 over `iss`/`iat`/`exp`).
pub type AppJwtSigner = Arc<dyn Fn() -> Result<String, String> + Send + Sync>;

/// How runwarden authenticates to GitHub.
#[derive(Clone)]
pub enum GithubAuth {
    /// A token: `GITHUB_TOKEN`, a PAT, or an installation token minted elsewhere.
    Token(Secret),
    /// A GitHub App: installation tokens are created and cached per installation.
    App { app_id: u64, jwt: AppJwtSigner },
}

impl fmt::Debug for GithubAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GithubAuth::Token(_) => f.write_str("GithubAuth::Token([redacted])"),
            GithubAuth::App { app_id, .. } => write!(f, "GithubAuth::App {{ app_id: {app_id} }}"),
        }
    }
}

impl GithubAuth {
    /// From the environment (SPEC §2): `GITHUB_TOKEN` wins; else `GITHUB_APP_ID` +
    /// `GITHUB_APP_PRIVATE_KEY`. `Ok(None)` when neither is set.
    pub fn from_secrets(secrets: &Secrets) -> Result<Option<GithubAuth>, GithubError> {
        if let Some(t) = &secrets.github_token {
            return Ok(Some(GithubAuth::Token(t.clone())));
        }
        match (secrets.github_app_id, &secrets.github_app_private_key) {
            (Some(app_id), Some(pem)) => Ok(Some(GithubAuth::App {
                app_id,
                jwt: app_jwt_signer(app_id, pem)?,
            })),
            (Some(_), None) => Err(GithubError::bare(GithubErrorKind::Auth(
                "GITHUB_APP_ID is set but GITHUB_APP_PRIVATE_KEY is not".into(),
            ))),
            (None, Some(_)) => Err(GithubError::bare(GithubErrorKind::Auth(
                "GITHUB_APP_PRIVATE_KEY is set but GITHUB_APP_ID is not".into(),
            ))),
            (None, None) => Ok(None),
        }
    }
}

/// The RS256 signer of a GitHub App's JWT from its PEM private key (checked now, so a
/// bad key is reported at startup rather than at the first summary).
pub fn app_jwt_signer(app_id: u64, pem: &Secret) -> Result<AppJwtSigner, GithubError> {
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(pem.expose().as_bytes()).map_err(|_| {
        GithubError::bare(GithubErrorKind::Auth(format!(
            "GitHub App {app_id}: GITHUB_APP_PRIVATE_KEY is neither an RSA PEM private key nor a readable PEM file"
        )))
    })?;
    Ok(Arc::new(move || {
        octocrab::auth::create_jwt(octocrab::models::AppId(app_id), &key).map_err(|e| e.to_string())
    }))
}

// ---------------------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------------------

#[derive(Clone)]
struct CachedToken {
    token: Secret,
    expires_at: Option<DateTime<Utc>>,
}

impl CachedToken {
    fn fresh(&self, now: DateTime<Utc>) -> bool {
        match self.expires_at {
            None => true,
            Some(exp) => {
                let margin = chrono::Duration::from_std(TOKEN_REFRESH_MARGIN)
                    .unwrap_or(chrono::Duration::zero());
                exp - now > margin
            }
        }
    }
}

/// Which credential a request carries.
#[derive(Clone, Copy)]
enum AuthFor<'a> {
    /// The App's JWT (App endpoints).
    AppJwt,
    /// The token itself (token auth only; `GET /user`).
    Token,
    /// The token for this repository (the token, or its installation's token).
    Repo(&'a RepoName),
}

/// What a failed attempt may be retried as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallKind {
    /// GET.
    Read,
    /// PATCH of a comment, a commit status, an installation token: repeating is harmless.
    IdempotentWrite,
    /// POST of a comment: retried only when GitHub certainly rejected it (rate limits).
    Create,
}

impl CallKind {
    fn mutates(self) -> bool {
        self != CallKind::Read
    }
}

/// One answer: status, headers and decoded body.
struct Reply<T> {
    headers: HeaderMap,
    value: T,
}

/// Async locks of this process, one per key, each forgotten once nobody holds or waits
/// for it (so the map does not grow with every PR or commit ever summarised).
struct KeyedLocks<K> {
    map: Mutex<HashMap<K, Arc<tokio::sync::Mutex<()>>>>,
}

impl<K> Default for KeyedLocks<K> {
    fn default() -> Self {
        KeyedLocks {
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: std::hash::Hash + Eq + Clone> KeyedLocks<K> {
    /// Runs `f` while holding the lock of `key`.
    async fn run<T>(&self, key: K, f: impl std::future::Future<Output = T>) -> T {
        let held = lock(&self.map).entry(key.clone()).or_default().clone();
        let out = {
            let _guard = held.lock().await;
            f.await
        };
        let mut map = lock(&self.map);
        drop(held);
        if map.get(&key).is_some_and(|l| Arc::strong_count(l) == 1) {
            map.remove(&key);
        }
        out
    }

    /// Locks currently held or waited for.
    fn in_use(&self) -> usize {
        lock(&self.map).len()
    }
}

/// The rate limit a client is under: it sends nothing before `until`.
#[derive(Debug, Clone)]
struct RateGate {
    until: Instant,
    /// Status and message of the answer that closed the gate.
    status: u16,
    message: String,
}

/// The GitHub API client. Cheap to share (`Arc`); one per process.
pub struct GithubClient {
    /// The HTTP client, built on first use ([`GithubClient::connect`]): building it loads
    /// the system's root certificates (about half a MiB held for good), which a `serve`
    /// that posts no summary for hours need not pay for while it idles.
    crab: std::sync::OnceLock<Octocrab>,
    /// `api_url` without a trailing slash.
    base: String,
    origin: url::Origin,
    auth: GithubAuth,
    opts: GithubClientOptions,
    /// repo key -> installation id (App auth).
    installations: Mutex<HashMap<String, u64>>,
    /// installation id -> token. A tokio mutex: one token request at a time.
    tokens: tokio::sync::Mutex<HashMap<u64, CachedToken>>,
    /// When the mutating requests of the last hour were sent, oldest first.
    writes: tokio::sync::Mutex<VecDeque<Instant>>,
    /// Until when GitHub asked this client to send nothing (a rate limit); shared by every
    /// call, see the module docs.
    rate_gate: Mutex<Option<RateGate>>,
    /// The login this client writes as, once known (see [`GithubClient::own_login`]).
    own_login: tokio::sync::OnceCell<String>,
    /// (repo key, PR) -> sticky comment id, learnt by the summary code.
    comment_ids: Mutex<HashMap<(String, u64), u64>>,
    /// (repo key, PR): serialises read-modify-write of that PR's comment.
    pr_locks: KeyedLocks<(String, u64)>,
    /// (repo key, sha, context): serialises read-then-post of that commit status.
    status_locks: KeyedLocks<(String, String, String)>,
    /// (repo key, sha, context, section key) -> (run id, `createdAt`) of the newest run of
    /// that group a commit status was decided from, learnt by the summary code; at most
    /// [`MAX_STATUS_RUNS`] entries.
    status_runs: Mutex<HashMap<StatusRunKey, (String, DateTime<Utc>)>>,
    /// HTTP requests sent, by (operation, status or `None` without a response).
    requests: Mutex<std::collections::BTreeMap<(&'static str, Option<u16>), u64>>,
}

impl fmt::Debug for GithubClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GithubClient")
            .field("api_url", &self.base)
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl GithubClient {
    pub fn new(opts: GithubClientOptions, auth: GithubAuth) -> Result<GithubClient, GithubError> {
        let invalid = |m: String| GithubError::bare(GithubErrorKind::Invalid(m));
        let url = &opts.api_url;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(invalid(format!(
                "github.api_url {url} is not an http(s) URL"
            )));
        }
        if !url.username().is_empty() || url.password().is_some() || url.query().is_some() {
            return Err(invalid(
                "github.api_url must not carry credentials or a query".into(),
            ));
        }
        let base = url.as_str().trim_end_matches('/').to_string();
        // octocrab is given the origin only: every request is sent to the absolute URL
        // [`request_url`] builds. With the base's path, octocrab would put it in front of
        // every path not starting with it, GraphQL's `/api/graphql` on GitHub Enterprise
        // Server (REST at `/api/v3`) included.
        // The origin is checked now, the client built on first use.
        Octocrab::builder()
            .base_uri(url.origin().ascii_serialization().as_str())
            .map_err(|e| invalid(format!("github.api_url {base}: {}", first_line(&e))))?;
        Ok(GithubClient {
            crab: std::sync::OnceLock::new(),
            origin: url.origin(),
            base,
            auth,
            opts,
            installations: Mutex::new(HashMap::new()),
            tokens: tokio::sync::Mutex::new(HashMap::new()),
            writes: tokio::sync::Mutex::new(VecDeque::new()),
            rate_gate: Mutex::new(None),
            own_login: tokio::sync::OnceCell::new(),
            comment_ids: Mutex::new(HashMap::new()),
            pr_locks: KeyedLocks::default(),
            status_locks: KeyedLocks::default(),
            status_runs: Mutex::default(),
            requests: Mutex::default(),
        })
    }

    /// From `[github]` and the environment's secrets; `Ok(None)` without credentials.
    pub fn from_config(
        github: &GithubConfig,
        secrets: &Secrets,
    ) -> Result<Option<GithubClient>, GithubError> {
        match GithubAuth::from_secrets(secrets)? {
            None => Ok(None),
            Some(auth) => {
                GithubClient::new(GithubClientOptions::from_config(github), auth).map(Some)
            }
        }
    }

    pub fn options(&self) -> &GithubClientOptions {
        &self.opts
    }

    /// Builds the HTTP client now if it is not built yet (the first request does
    /// otherwise): `check` uses it to report a client that cannot be built (no root
    /// certificates on the system, say) before `serve` meets it at its first summary.
    /// Needs a Tokio runtime.
    pub fn connect(&self) -> Result<(), GithubError> {
        self.crab().map(drop)
    }

    /// The HTTP client, built on first use (see [`GithubClient::connect`]). Two callers
    /// racing build it twice; one of the two is kept.
    fn crab(&self) -> Result<&Octocrab, GithubError> {
        if let Some(crab) = self.crab.get() {
            return Ok(crab);
        }
        let invalid = |m: String| GithubError::bare(GithubErrorKind::Invalid(m));
        // The origin only: every request is sent to the absolute URL [`request_url`]
        // builds (see [`GithubClient::new`]).
        let crab = Octocrab::builder()
            .base_uri(self.origin.ascii_serialization().as_str())
            .map_err(|e| invalid(format!("github.api_url {}: {}", self.base, first_line(&e))))?
            .set_connect_timeout(Some(self.opts.connect_timeout))
            .set_read_timeout(Some(self.opts.request_timeout))
            .set_write_timeout(Some(self.opts.request_timeout))
            .build()
            .map_err(|e| invalid(format!("cannot build the HTTP client: {}", first_line(&e))))?;
        Ok(self.crab.get_or_init(|| crab))
    }

    /// `api_url`, without a trailing slash.
    pub fn api_url(&self) -> &str {
        &self.base
    }

    // ---- API methods -------------------------------------------------------------------

    /// `GET /repos/{o}/{r}/commits/{sha}/pulls`: the pull requests containing `sha`
    /// (open and closed).
    pub async fn pulls_for_commit(
        &self,
        repo: &RepoName,
        sha: &str,
    ) -> Result<Vec<PullRef>, GithubError> {
        check_sha(sha)?;
        let path = format!("/repos/{repo}/commits/{sha}/pulls");
        let raw: Vec<RawPull> = self.list_all(repo, &path, "", |_| false).await?;
        Ok(raw.into_iter().map(RawPull::into_ref).collect())
    }

    /// `GET /repos/{o}/{r}/pulls?state=open&head={owner}:{branch}`: open PRs from `branch`
    /// of the repository itself. A PR whose head repository (`head.repo.full_name`, when
    /// GitHub gives it) is another one (a fork) is left out: only the branch of `repo` is
    /// meant.
    pub async fn open_pulls_for_branch(
        &self,
        repo: &RepoName,
        branch: &str,
    ) -> Result<Vec<PullRef>, GithubError> {
        if branch.is_empty() {
            return Ok(Vec::new());
        }
        let query = format!(
            "state=open&head={}",
            enc(&format!("{}:{branch}", repo.owner))
        );
        let path = format!("/repos/{repo}/pulls");
        let raw: Vec<RawPull> = self.list_all(repo, &path, &query, |_| false).await?;
        Ok(raw
            .into_iter()
            .map(RawPull::into_ref)
            .filter(|p| is_open_from_branch_of(p, repo, branch))
            .collect())
    }

    /// `GET /repos/{o}/{r}/issues/{pr}/comments`, every page, oldest first.
    pub async fn list_comments(
        &self,
        repo: &RepoName,
        pr: u64,
    ) -> Result<Vec<IssueComment>, GithubError> {
        let path = format!("/repos/{repo}/issues/{pr}/comments");
        let raw: Vec<RawComment> = self.list_all(repo, &path, "", |_| false).await?;
        Ok(raw.into_iter().map(RawComment::into_comment).collect())
    }

    /// The oldest comment of `pr` matching `pred`, reading pages only until it is found.
    pub async fn find_comment(
        &self,
        repo: &RepoName,
        pr: u64,
        pred: impl Fn(&IssueComment) -> bool,
    ) -> Result<Option<IssueComment>, GithubError> {
        let path = format!("/repos/{repo}/issues/{pr}/comments");
        let raw: Vec<RawComment> = self
            .list_all(repo, &path, "", |c: &RawComment| {
                pred(&c.clone().into_comment())
            })
            .await?;
        Ok(raw
            .into_iter()
            .map(RawComment::into_comment)
            .find(|c| pred(c)))
    }

    /// `GET /repos/{o}/{r}/issues/comments/{id}`; `None` when it no longer exists.
    pub async fn get_comment(
        &self,
        repo: &RepoName,
        comment_id: u64,
    ) -> Result<Option<IssueComment>, GithubError> {
        let path = format!("/repos/{repo}/issues/comments/{comment_id}");
        match self
            .call::<RawComment>(
                Method::GET,
                &path,
                "",
                None,
                AuthFor::Repo(repo),
                CallKind::Read,
            )
            .await
        {
            Ok(r) => Ok(Some(r.value.into_comment())),
            Err(e) if e.status() == Some(404) || e.status() == Some(410) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `POST /repos/{o}/{r}/issues/{pr}/comments`, once: an unknown outcome is returned
    /// as an error ([`GithubError::outcome_unknown`]), never retried here. Rate-limit
    /// rejections are waited out and retried (GitHub did not create anything).
    pub async fn create_comment(
        &self,
        repo: &RepoName,
        pr: u64,
        body: &str,
    ) -> Result<IssueComment, GithubError> {
        let path = format!("/repos/{repo}/issues/{pr}/comments");
        self.send_comment(Method::POST, &path, repo, body, CallKind::Create)
            .await
    }

    /// Sends `{"body": body}` to `path` of `repo` and returns the comment GitHub answers
    /// with (a create or an edit).
    async fn send_comment(
        &self,
        method: Method,
        path: &str,
        repo: &RepoName,
        body: &str,
        kind: CallKind,
    ) -> Result<IssueComment, GithubError> {
        let payload = json!({ "body": body });
        let r = self
            .call::<RawComment>(method, path, "", Some(&payload), AuthFor::Repo(repo), kind)
            .await?;
        Ok(r.value.into_comment())
    }

    /// Creates the comment carrying `marker` without ever making two: after a `POST`
    /// whose outcome is unknown, the PR's comments are read for `marker` on a comment of
    /// runwarden's own ([`IssueComment::is_runwardens`]) and a found one is returned
    /// (`recovered`) instead of posting again.
    pub async fn create_comment_unique(
        &self,
        repo: &RepoName,
        pr: u64,
        body: &str,
        marker: &str,
    ) -> Result<CreatedComment, GithubError> {
        let mut unknown: Option<GithubError> = None;
        for round in 0..self.opts.retry.max_attempts.max(1) {
            if round > 0 {
                let wait = self
                    .backoff(round)
                    .max(self.opts.retry.unknown_outcome_settle);
                tokio::time::sleep(wait).await;
                let me = self.own_login().await?;
                if let Some(c) = self
                    .find_comment(repo, pr, |c| c.is_runwardens(marker, &me))
                    .await?
                {
                    tracing::info!(
                        repo = %repo, pr, comment_id = c.id,
                        "the comment of a POST with an unknown outcome exists; not posting again"
                    );
                    return Ok(CreatedComment {
                        comment: c,
                        recovered: true,
                    });
                }
            }
            match self.create_comment(repo, pr, body).await {
                Ok(c) => {
                    return Ok(CreatedComment {
                        comment: c,
                        recovered: false,
                    });
                }
                Err(e) if e.outcome_unknown() => {
                    tracing::warn!(
                        repo = %repo, pr, error = %e,
                        "creating the comment had an unknown outcome; checking before posting again"
                    );
                    unknown = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(unknown.unwrap_or_else(|| {
            GithubError::bare(GithubErrorKind::Invalid("no attempt was made".into()))
        }))
    }

    /// `PATCH /repos/{o}/{r}/issues/comments/{id}` (idempotent; retried).
    pub async fn update_comment(
        &self,
        repo: &RepoName,
        comment_id: u64,
        body: &str,
    ) -> Result<IssueComment, GithubError> {
        let path = format!("/repos/{repo}/issues/comments/{comment_id}");
        self.send_comment(Method::PATCH, &path, repo, body, CallKind::IdempotentWrite)
            .await
    }

    /// `POST /repos/{o}/{r}/statuses/{sha}`. The description is cut to GitHub's 140
    /// characters. Retried like an idempotent write: the latest status of a context wins.
    pub async fn create_status(
        &self,
        repo: &RepoName,
        sha: &str,
        state: StatusState,
        context: &str,
        description: &str,
        target_url: Option<&str>,
    ) -> Result<(), GithubError> {
        check_sha(sha)?;
        let path = format!("/repos/{repo}/statuses/{sha}");
        let mut payload = json!({
            "state": state.as_str(),
            "context": context,
            "description": truncate_chars(description, MAX_STATUS_DESCRIPTION),
        });
        if let Some(u) = target_url {
            payload["target_url"] = Value::String(u.to_string());
        }
        self.call::<Value>(
            Method::POST,
            &path,
            "",
            Some(&payload),
            AuthFor::Repo(repo),
            CallKind::IdempotentWrite,
        )
        .await?;
        Ok(())
    }

    /// The latest status of `context` on `sha`, from the combined status
    /// (`GET /repos/{o}/{r}/commits/{sha}/status`: the latest status of each context, up
    /// to 100 contexts a page), reading pages until `context` is found. The list of every
    /// status (`.../statuses`, newest first) would hide ours behind a hundred newer
    /// statuses of other contexts.
    pub async fn latest_status(
        &self,
        repo: &RepoName,
        sha: &str,
        context: &str,
    ) -> Result<Option<CommitStatus>, GithubError> {
        check_sha(sha)?;
        let path = format!("/repos/{repo}/commits/{sha}/status");
        let mut page = 1usize;
        let mut next: Option<(String, String)> = None;
        let mut seen = 0u64;
        for _ in 0..MAX_PAGES {
            let (p, q) = next
                .take()
                .unwrap_or_else(|| (path.clone(), format!("per_page={PER_PAGE}&page={page}")));
            let r = match self
                .call::<RawCombinedStatus>(
                    Method::GET,
                    &p,
                    &q,
                    None,
                    AuthFor::Repo(repo),
                    CallKind::Read,
                )
                .await
            {
                Ok(r) => r,
                // A sha GitHub does not know has no statuses.
                Err(e) if matches!(e.status(), Some(404 | 422)) => return Ok(None),
                Err(e) => return Err(e),
            };
            let n = r.value.statuses.len();
            seen += n as u64;
            if let Some(s) = r.value.statuses.into_iter().find(|s| s.context == context) {
                return Ok(Some(CommitStatus {
                    state: s.state,
                    context: s.context,
                    description: s.description,
                    target_url: s.target_url,
                }));
            }
            match link_next(&r.headers).and_then(|url| self.split_api_url(&url)) {
                Some(pq) => next = Some(pq),
                None if r.headers.contains_key(header::LINK) => break,
                // No `Link` header: a full page, short of `total_count`, may have more.
                None if n >= PER_PAGE && r.value.total_count.is_none_or(|t| seen < t) => {
                    page += 1;
                }
                None => break,
            }
        }
        Ok(None)
    }

    // ---- identity ------------------------------------------------------------------------

    /// The login runwarden's comments are written by, asked once (lazily, at the first
    /// call that needs it) and remembered by this client: with a token, `GET /user`'s
    /// `login`; with a GitHub App, `{slug}[bot]` from `GET /app` (with the App's JWT).
    ///
    /// When it cannot be told (an installation token cannot read `/user`; a network
    /// error; an answer without a login) the error is retryable
    /// ([`GithubErrorKind::Identity`], or the transport error itself) and nothing is
    /// guessed; a token GitHub refuses (401) stays the permanent error it is for every
    /// call. Failures are not remembered: the next call asks again.
    pub async fn own_login(&self) -> Result<String, GithubError> {
        self.own_login
            .get_or_try_init(|| self.fetch_own_login())
            .await
            .cloned()
    }

    async fn fetch_own_login(&self) -> Result<String, GithubError> {
        let (path, auth) = match &self.auth {
            GithubAuth::Token(_) => ("/user", AuthFor::Token),
            GithubAuth::App { .. } => ("/app", AuthFor::AppJwt),
        };
        let identity = |e: GithubError| -> GithubError {
            if e.is_retryable() || e.status() == Some(401) {
                return e;
            }
            let mut hint = String::new();
            if path == "/user" && e.status() == Some(403) {
                hint = " (GET /user is refused to installation tokens, and GraphQL's \
                    viewer did not say either: use a personal access token, or the GitHub \
                    App credentials GITHUB_APP_ID and GITHUB_APP_PRIVATE_KEY)"
                    .into();
            }
            GithubError {
                kind: GithubErrorKind::Identity(format!("{}{hint}", e.kind)),
                ..e
            }
        };
        let r = match self
            .call::<Value>(Method::GET, path, "", None, auth, CallKind::Read)
            .await
        {
            // An installation token (GitHub Actions' `GITHUB_TOKEN`) cannot read
            // `/user`; GraphQL's `viewer` answers for every kind of token.
            Err(e) if path == "/user" && e.status() == Some(403) => {
                return self.viewer_login().await.map_err(|g| {
                    if g.is_retryable() || g.status() == Some(401) {
                        g
                    } else {
                        identity(e)
                    }
                });
            }
            r => r.map_err(identity)?,
        };
        let field = if path == "/user" { "/login" } else { "/slug" };
        let name = identity_field(&r.value, field, &Method::GET, path)?;
        let login = match &self.auth {
            GithubAuth::Token(_) => name.to_string(),
            GithubAuth::App { .. } => format!("{name}[bot]"),
        };
        tracing::info!(login = %login, "runwarden writes to GitHub as {login}");
        Ok(login)
    }

    /// The token's login from GraphQL (`query { viewer { login } }`), which, unlike
    /// `GET /user`, installation tokens may ask too.
    async fn viewer_login(&self) -> Result<String, GithubError> {
        let body = serde_json::json!({ "query": "query { viewer { login } }" });
        let path = graphql_path(&self.base);
        let r = self
            .call::<Value>(
                Method::POST,
                path,
                "",
                Some(&body),
                AuthFor::Token,
                CallKind::Read,
            )
            .await?;
        let login = identity_field(&r.value, "/data/viewer/login", &Method::POST, path)?;
        tracing::info!(login = %login, "runwarden writes to GitHub as {login}");
        Ok(login)
    }

    // ---- state shared with the summary code ---------------------------------------------

    /// The sticky comment id remembered for a PR.
    pub fn cached_comment_id(&self, repo: &RepoName, pr: u64) -> Option<u64> {
        lock(&self.comment_ids).get(&(repo.key(), pr)).copied()
    }

    /// Remembers (or, with `None`, forgets) the sticky comment id of a PR. The memory is
    /// only a shortcut (a forgotten id is found again by its marker): past
    /// [`MAX_COMMENT_IDS`] PRs it starts over, so that it does not keep one entry per PR
    /// ever summarised.
    pub fn remember_comment_id(&self, repo: &RepoName, pr: u64, id: Option<u64>) {
        let mut m = lock(&self.comment_ids);
        match id {
            Some(id) => {
                if m.len() >= MAX_COMMENT_IDS && !m.contains_key(&(repo.key(), pr)) {
                    m.clear();
                }
                m.insert((repo.key(), pr), id)
            }
            None => m.remove(&(repo.key(), pr)),
        };
    }

    /// How many sticky comment ids this client remembers.
    pub fn comment_ids_remembered(&self) -> usize {
        lock(&self.comment_ids).len()
    }

    /// The newest run of the run group `group` (a section key) whose result the commit
    /// status `context` of `sha` was decided from, in this process: (run id,
    /// `createdAt`). See [`Self::remember_status_run`].
    pub fn newest_status_run(
        &self,
        repo: &RepoName,
        sha: &str,
        context: &str,
        group: &str,
    ) -> Option<(String, DateTime<Utc>)> {
        let key = (
            repo.key(),
            sha.to_ascii_lowercase(),
            context.into(),
            group.into(),
        );
        lock(&self.status_runs).get(&key).cloned()
    }

    /// Remembers that the commit status `context` of `sha` was decided from run `run_id`
    /// (created at `created_at`) of run group `group`, unless a newer run of the group
    /// was remembered. Without a comment to merge them in, a late result of an older run
    /// is then told from a newer one's.
    pub fn remember_status_run(
        &self,
        repo: &RepoName,
        sha: &str,
        context: &str,
        group: &str,
        run_id: &str,
        created_at: DateTime<Utc>,
    ) {
        let key = (
            repo.key(),
            sha.to_ascii_lowercase(),
            context.into(),
            group.into(),
        );
        let mut m = lock(&self.status_runs);
        if m.get(&key).is_some_and(|(_, at)| *at > created_at) {
            return;
        }
        if m.len() >= MAX_STATUS_RUNS
            && !m.contains_key(&key)
            && let Some(oldest) = m
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(k, _)| k.clone())
        {
            m.remove(&oldest);
        }
        m.insert(key, (run_id.to_string(), created_at));
    }

    /// Runs `f` while holding this process's lock on the sticky comment of PR `pr` in
    /// `repo`: two summaries for one PR read, merge and write it one after the other.
    pub async fn with_pr_lock<T>(
        &self,
        repo: &RepoName,
        pr: u64,
        f: impl std::future::Future<Output = T>,
    ) -> T {
        self.pr_locks.run((repo.key(), pr), f).await
    }

    /// PR comment locks currently held or waited for (see [`Self::with_pr_lock`]).
    pub fn pr_locks_in_use(&self) -> usize {
        self.pr_locks.in_use()
    }

    /// Runs `f` while holding this process's lock on the commit status `context` of `sha`
    /// in `repo`: two summaries of one commit (two events of a run, handled at once) then
    /// read the latest status and post theirs one after the other, never both deciding
    /// from the same read.
    pub async fn with_status_lock<T>(
        &self,
        repo: &RepoName,
        sha: &str,
        context: &str,
        f: impl std::future::Future<Output = T>,
    ) -> T {
        let key = (repo.key(), sha.to_string(), context.to_string());
        self.status_locks.run(key, f).await
    }

    /// Commit-status locks currently held or waited for (see [`Self::with_status_lock`]).
    pub fn status_locks_in_use(&self) -> usize {
        self.status_locks.in_use()
    }

    // ---- machinery ---------------------------------------------------------------------

    /// Every page of a list endpoint, stopping early at the first page where `stop`
    /// matches an item. Follows `Link: rel="next"` on the API's origin, else pages by
    /// number while pages are full.
    async fn list_all<T: DeserializeOwned>(
        &self,
        repo: &RepoName,
        path: &str,
        query: &str,
        stop: impl Fn(&T) -> bool,
    ) -> Result<Vec<T>, GithubError> {
        let mut out = Vec::new();
        let mut page = 1usize;
        let mut next: Option<(String, String)> = None;
        for _ in 0..MAX_PAGES {
            let (p, q) = next.take().unwrap_or_else(|| {
                let sep = if query.is_empty() { "" } else { "&" };
                (
                    path.to_string(),
                    format!("{query}{sep}per_page={PER_PAGE}&page={page}"),
                )
            });
            let r = self
                .call::<Vec<T>>(
                    Method::GET,
                    &p,
                    &q,
                    None,
                    AuthFor::Repo(repo),
                    CallKind::Read,
                )
                .await?;
            let n = r.value.len();
            let found = r.value.iter().any(&stop);
            out.extend(r.value);
            if found {
                break;
            }
            match link_next(&r.headers) {
                Some(url) => match self.split_api_url(&url) {
                    Some(pq) => next = Some(pq),
                    None => page += 1,
                },
                None if r.headers.contains_key(header::LINK) || n < PER_PAGE => break,
                None => page += 1,
            }
            if next.is_none() && n == 0 {
                break;
            }
        }
        Ok(out)
    }

    /// `url` as (path, query) relative to `api_url`, when it is on the API's origin and
    /// under its path (credentials are never sent elsewhere).
    fn split_api_url(&self, url: &str) -> Option<(String, String)> {
        let u = url::Url::parse(url).ok()?;
        if u.origin() != self.origin {
            return None;
        }
        let base_path = url::Url::parse(&self.base)
            .ok()?
            .path()
            .trim_end_matches('/')
            .to_string();
        let rest = u.path().strip_prefix(&base_path)?;
        if !rest.starts_with('/') {
            return None;
        }
        Some((rest.to_string(), u.query().unwrap_or("").to_string()))
    }

    /// One call with retries (see the module docs).
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &str,
        body: Option<&Value>,
        auth: AuthFor<'_>,
        kind: CallKind,
    ) -> Result<Reply<T>, GithubError> {
        let policy = &self.opts.retry;
        let mut attempt: u32 = 0;
        let mut rate_limited: u32 = 0;
        let mut reauthenticated = false;
        // Whether an attempt of this call reached GitHub (not held back by the gate).
        let mut sent_any = false;
        loop {
            attempt += 1;
            let result = self
                .attempt::<T>(&method, path, query, body, auth, kind)
                .await;
            let mut err = match result {
                Ok(r) => return Ok(r),
                Err(e) => e,
            };
            err.attempts = attempt;
            sent_any |= !err.held_back;
            err.held_back = !sent_any;
            // A 401 with a cached installation token: drop it and try once more.
            if err.status() == Some(401)
                && !reauthenticated
                && let (GithubAuth::App { .. }, AuthFor::Repo(repo)) = (&self.auth, auth)
            {
                reauthenticated = true;
                self.forget_token(repo).await;
                attempt -= 1;
                continue;
            }
            let delay = match &err.kind {
                GithubErrorKind::RateLimited {
                    retry_after,
                    status,
                    message,
                } => {
                    rate_limited += 1;
                    // Every call of this client holds off until GitHub's time is up (a
                    // no-op for an error of the gate itself, which carries what is left).
                    let wait = retry_after.unwrap_or_else(|| {
                        policy
                            .secondary_limit_delay
                            .saturating_mul(1 << (rate_limited - 1).min(6))
                    });
                    self.hold_off(wait, *status, message);
                    let left = self.rate_limit_wait().unwrap_or(Duration::ZERO);
                    if left > policy.max_wait || attempt >= policy.max_attempts {
                        // Handed back with the wait left, for the caller to park the work.
                        if let GithubErrorKind::RateLimited { retry_after, .. } = &mut err.kind
                            && !left.is_zero()
                        {
                            *retry_after = Some(left);
                        }
                        return Err(err);
                    }
                    left
                }
                _ if !err.is_retryable() => return Err(err),
                _ if kind == CallKind::Create && err.outcome_unknown() => return Err(err),
                _ => self.backoff(attempt),
            };
            if attempt >= policy.max_attempts {
                return Err(err);
            }
            tracing::warn!(
                method = %method, path, attempt, delay_ms = delay.as_millis() as u64, error = %err,
                "GitHub call failed; retrying"
            );
            tokio::time::sleep(delay).await;
        }
    }

    /// Exponential backoff with jitter for attempt `n` (1-based): `base·2^(n-1)`, capped,
    /// then a uniform draw from its upper half.
    fn backoff(&self, n: u32) -> Duration {
        let p = &self.opts.retry;
        let exp = p
            .base_delay
            .saturating_mul(1u32 << (n.saturating_sub(1)).min(16))
            .min(p.max_delay);
        exp.mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
    }

    /// One HTTP exchange under the request timeout.
    async fn attempt<T: DeserializeOwned>(
        &self,
        method: &Method,
        path: &str,
        query: &str,
        body: Option<&Value>,
        auth: AuthFor<'_>,
        kind: CallKind,
    ) -> Result<Reply<T>, GithubError> {
        let credential = match auth {
            AuthFor::AppJwt => self
                .app_jwt()
                .map_err(|k| GithubError::new(method, path, k))?,
            AuthFor::Repo(repo) => self.repo_token(repo).await?,
            AuthFor::Token => match &self.auth {
                GithubAuth::Token(t) => t.clone(),
                GithubAuth::App { .. } => {
                    return Err(GithubError::new(
                        method,
                        path,
                        GithubErrorKind::Auth(
                            "this call needs a token, not App credentials".into(),
                        ),
                    ));
                }
            },
        };
        loop {
            self.pass_rate_gate(method, path).await?;
            if !kind.mutates() {
                break;
            }
            self.pace_writes(method, path).await?;
            if self.rate_limit_wait().is_none() {
                break;
            }
            // A rate limit met by another call while this write waited for its turn.
        }
        let timeout = self.opts.request_timeout;
        let exchange = self.exchange(method, path, query, body, &credential);
        let op = operation(method, path);
        let (status, headers, text) = match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(r)) => {
                self.count_request(op, Some(r.0.as_u16()));
                r
            }
            Ok(Err(k)) => {
                self.count_request(op, None);
                return Err(GithubError::new(method, path, k));
            }
            Err(_) => {
                self.count_request(op, None);
                return Err(GithubError::new(
                    method,
                    path,
                    GithubErrorKind::Timeout(timeout),
                ));
            }
        };
        if status.is_success() {
            // The last request of the quota: the next would be refused, so none is sent
            // before the reset (GitHub asks clients not to send into a known limit).
            if let Some(wait) = quota_used_up(&headers) {
                self.hold_off(
                    wait,
                    403,
                    "API rate limit used up (x-ratelimit-remaining: 0 on the last answer)",
                );
            }
            let text = if text.trim().is_empty() {
                "null"
            } else {
                text.as_str()
            };
            return match serde_json::from_str::<T>(text) {
                Ok(value) => Ok(Reply { headers, value }),
                Err(e) => Err(GithubError::new(
                    method,
                    path,
                    GithubErrorKind::Decode(format!("HTTP {}: {e}", status.as_u16())),
                )),
            };
        }
        // An error body may echo the credential back: it never reaches a message.
        let text = match credential.expose() {
            c if c.len() >= 4 => text.replace(c, "[redacted]"),
            _ => text,
        };
        Err(GithubError::new(
            method,
            path,
            classify(status, &headers, &text),
        ))
    }

    fn count_request(&self, op: &'static str, status: Option<u16>) {
        *lock(&self.requests).entry((op, status)).or_default() += 1;
    }

    /// `(operation, status label, count)` of the HTTP requests sent so far (every retry
    /// included), for `/metrics`; the label is the numeric status or `error` without a
    /// response.
    pub fn request_counts(&self) -> Vec<(&'static str, String, u64)> {
        lock(&self.requests)
            .iter()
            .map(|((op, st), n)| (*op, crate::currents::client::status_label(*st), *n))
            .collect()
    }

    async fn exchange(
        &self,
        method: &Method,
        path: &str,
        query: &str,
        body: Option<&Value>,
        credential: &Secret,
    ) -> Result<(StatusCode, HeaderMap, String), GithubErrorKind> {
        let uri = request_url(&self.base, path, query)?;
        // Credentials only ever go to the API's origin.
        if uri.origin() != self.origin {
            return Err(GithubErrorKind::Invalid(format!(
                "{path} is not on the origin of github.api_url"
            )));
        }
        let uri = uri.as_str();
        let mut auth =
            HeaderValue::from_str(&format!("Bearer {}", credential.expose())).map_err(|_| {
                GithubErrorKind::Auth("the credential is not a valid header value".into())
            })?;
        auth.set_sensitive(true);
        let builder = http::Request::builder()
            .method(method.clone())
            .uri(uri)
            .header(header::AUTHORIZATION, auth)
            .header(header::ACCEPT, "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28");
        let request = match body {
            Some(b) => builder
                .header(header::CONTENT_TYPE, "application/json")
                .body(b.to_string()),
            None => builder
                .header(header::CONTENT_LENGTH, "0")
                .body(String::new()),
        }
        .map_err(|e| GithubErrorKind::Invalid(e.to_string()))?;
        let crab = self.crab().map_err(|e| e.kind)?;
        let response = crab
            .execute(request)
            .await
            .map_err(|e| GithubErrorKind::Network(describe(&e)))?;
        let status = response.status();
        let headers = response.headers().clone();
        let text = crab
            .body_to_string(response)
            .await
            .map_err(|e| GithubErrorKind::Network(describe(&e)))?;
        Ok((status, headers, text))
    }

    /// After an answer saying this client is rate limited: no request is sent for `wait`
    /// (at most [`MAX_RATE_LIMIT_HOLD`]) from now. An earlier, longer hold stays; the
    /// status and message of the answer that closed the gate are kept while it is closed.
    fn hold_off(&self, wait: Duration, status: u16, message: &str) {
        let now = Instant::now();
        let until = now + wait.min(MAX_RATE_LIMIT_HOLD);
        let mut gate = lock(&self.rate_gate);
        match gate.as_mut() {
            Some(g) if g.until > now => g.until = g.until.max(until),
            _ if wait.is_zero() => {}
            _ => {
                tracing::warn!(
                    status,
                    wait_ms = wait.as_millis() as u64,
                    "GitHub rate limit: no request is sent until it ends"
                );
                *gate = Some(RateGate {
                    until,
                    status,
                    message: message.to_string(),
                });
            }
        }
    }

    /// How long GitHub's rate limit still holds this client back (nothing is sent
    /// before), if it does. Also for the status page and
    /// `/metrics`.
    pub fn rate_limit_wait(&self) -> Option<Duration> {
        let gate = lock(&self.rate_gate);
        let left = gate
            .as_ref()?
            .until
            .saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some(left)
    }

    /// Waits for the rate-limit gate to open when it does within
    /// [`RetryPolicy::max_wait`]; a longer wait is a [`GithubErrorKind::RateLimited`]
    /// error carrying what is left, and no request is sent.
    async fn pass_rate_gate(&self, method: &Method, path: &str) -> Result<(), GithubError> {
        loop {
            let Some(gate) = lock(&self.rate_gate).clone() else {
                return Ok(());
            };
            let left = gate.until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            if left > self.opts.retry.max_wait {
                return Err(GithubError::new(
                    method,
                    path,
                    GithubErrorKind::RateLimited {
                        status: gate.status,
                        message: truncate_chars(
                            &format!(
                                "not sent, GitHub's rate limit holds for {}s more: {}",
                                left.as_secs_f64().ceil() as u64,
                                gate.message
                            ),
                            MAX_MESSAGE,
                        ),
                        retry_after: Some(left),
                    },
                )
                .mark_held_back());
            }
            tracing::debug!(method = %method, path, wait_ms = left.as_millis() as u64,
                "waiting for GitHub's rate limit to end");
            tokio::time::sleep(left).await;
        }
    }

    /// Waits until `min_write_interval` has passed since the last mutating request, and
    /// counts this one in the hour's. When [`WRITES_PER_HOUR`] were sent in the last hour,
    /// nothing waits and nothing is sent: a [`GithubErrorKind::RateLimited`] error (held
    /// back) carries the wait until the oldest of them leaves the hour.
    async fn pace_writes(&self, method: &Method, path: &str) -> Result<(), GithubError> {
        let gap = self.opts.retry.min_write_interval;
        let mut writes = self.writes.lock().await;
        let now = Instant::now();
        while writes
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= WRITE_WINDOW)
        {
            writes.pop_front();
        }
        if writes.len() >= WRITES_PER_HOUR {
            let wait = WRITE_WINDOW.saturating_sub(now.saturating_duration_since(writes[0]));
            return Err(GithubError::new(
                method,
                path,
                GithubErrorKind::RateLimited {
                    status: 403,
                    message: format!(
                        "not sent: runwarden keeps to {WRITES_PER_HOUR} writes an hour \
                         (GitHub's secondary limit on content creation); room again in {}s",
                        wait.as_secs_f64().ceil() as u64
                    ),
                    retry_after: Some(wait),
                },
            )
            .mark_held_back());
        }
        if let Some(t) = writes.back() {
            let since = t.elapsed();
            if since < gap {
                tokio::time::sleep(gap - since).await;
            }
        }
        writes.push_back(Instant::now());
        Ok(())
    }

    fn app_jwt(&self) -> Result<Secret, GithubErrorKind> {
        match &self.auth {
            GithubAuth::App { jwt, app_id } => jwt().map(Secret::new).map_err(|e| {
                GithubErrorKind::Auth(format!("cannot sign the JWT of GitHub App {app_id}: {e}"))
            }),
            GithubAuth::Token(_) => Err(GithubErrorKind::Auth(
                "App endpoints need GitHub App credentials".into(),
            )),
        }
    }

    /// The credential for `repo`: the token, or a fresh installation token.
    async fn repo_token(&self, repo: &RepoName) -> Result<Secret, GithubError> {
        let GithubAuth::App { .. } = &self.auth else {
            let GithubAuth::Token(t) = &self.auth else {
                unreachable!()
            };
            return Ok(t.clone());
        };
        let mut installation = self.installation_for(repo).await?;
        let mut tokens = self.tokens.lock().await;
        if let Some(t) = tokens.get(&installation)
            && t.fresh(Utc::now())
        {
            return Ok(t.token.clone());
        }
        let mut looked_up_again = false;
        let r = loop {
            let path = format!("/app/installations/{installation}/access_tokens");
            match Box::pin(self.call::<RawToken>(
                Method::POST,
                &path,
                "",
                Some(&json!({})),
                AuthFor::AppJwt,
                CallKind::IdempotentWrite,
            ))
            .await
            {
                Ok(r) => break r,
                // The installation is gone: the App was uninstalled (and maybe installed
                // again, under a new id). Its id, and every token of it, is forgotten
                // and the repository's installation looked up once more.
                Err(e) if e.status() == Some(404) && !looked_up_again => {
                    looked_up_again = true;
                    tracing::info!(
                        repo = %repo, installation,
                        "the GitHub App installation is gone; looking it up again"
                    );
                    tokens.remove(&installation);
                    lock(&self.installations).retain(|_, id| *id != installation);
                    let again = self.installation_for(repo).await?;
                    if again == installation {
                        return Err(e);
                    }
                    installation = again;
                    if let Some(t) = tokens.get(&installation)
                        && t.fresh(Utc::now())
                    {
                        return Ok(t.token.clone());
                    }
                }
                Err(e) => return Err(e),
            }
        };
        let expires_at = r
            .value
            .expires_at
            .as_deref()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|d| d.with_timezone(&Utc));
        tracing::debug!(
            installation,
            ?expires_at,
            "created a GitHub App installation token"
        );
        let cached = CachedToken {
            token: Secret::new(r.value.token),
            expires_at,
        };
        tokens.insert(installation, cached.clone());
        Ok(cached.token)
    }

    async fn installation_for(&self, repo: &RepoName) -> Result<u64, GithubError> {
        if let Some(id) = lock(&self.installations).get(&repo.key()) {
            return Ok(*id);
        }
        let path = format!("/repos/{repo}/installation");
        let r = Box::pin(self.call::<RawInstallation>(
            Method::GET,
            &path,
            "",
            None,
            AuthFor::AppJwt,
            CallKind::Read,
        ))
        .await
        .map_err(|mut e| {
            if e.status() == Some(404) {
                e.kind =
                    GithubErrorKind::Auth(format!("the GitHub App is not installed on {repo}"));
            }
            e
        })?;
        lock(&self.installations).insert(repo.key(), r.value.id);
        Ok(r.value.id)
    }

    async fn forget_token(&self, repo: &RepoName) {
        let id = lock(&self.installations).get(&repo.key()).copied();
        if let Some(id) = id {
            self.tokens.lock().await.remove(&id);
        }
    }
}

/// The metrics label of a request: what it does, from its method and path.
/// The non-empty string at `pointer` (a JSON pointer) of an identity answer (`GET /user`,
/// `GET /app`, GraphQL's `viewer`), trimmed; an [`GithubErrorKind::Identity`] error
/// naming it when it is missing.
fn identity_field(
    value: &Value,
    pointer: &str,
    method: &Method,
    path: &str,
) -> Result<String, GithubError> {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .ok_or_else(|| {
            GithubError::new(
                method,
                path,
                GithubErrorKind::Identity(format!(
                    "the answer has no {}",
                    pointer.trim_start_matches('/').replace('/', ".")
                )),
            )
        })
}

/// The URL a request for `path` (relative to the REST base `base`, `api_url` without a
/// trailing slash) and `query` goes to, built with [`url::Url`], which resolves dot
/// segments: `{base}/../graphql` on GitHub Enterprise Server is sent as `/api/graphql`
/// (servers take a literal `/api/v3/../graphql` as a path of its own, and answer 404).
fn request_url(base: &str, path: &str, query: &str) -> Result<url::Url, GithubErrorKind> {
    let mut url = url::Url::parse(&format!("{base}{path}"))
        .map_err(|e| GithubErrorKind::Invalid(format!("cannot build the URL of {path}: {e}")))?;
    url.set_query(Some(query).filter(|q| !q.is_empty()));
    Ok(url)
}

/// The path of GitHub's GraphQL endpoint relative to the REST base `api_url`: `/graphql`
/// on github.com (`https://api.github.com/graphql`) and wherever the REST API is served
/// at the root, and next to the REST API on GitHub Enterprise Server, whose REST base
/// ends in `/api/v3` while GraphQL is `/api/graphql` ([`request_url`] resolves the `..`).
fn graphql_path(base: &str) -> &'static str {
    if base.trim_end_matches('/').ends_with("/api/v3") {
        "/../graphql"
    } else {
        "/graphql"
    }
}

fn operation(method: &Method, path: &str) -> &'static str {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest = match segments.as_slice() {
        ["app", "installations", _, "access_tokens"] => return "installation_token",
        ["user"] => return "user",
        ["graphql"] | ["..", "graphql"] => return "graphql",
        ["app"] => return "app",
        ["repos", _, _, rest @ ..] => rest,
        _ => return "other",
    };
    match (method.as_str(), rest) {
        ("GET", ["installation"]) => "installation",
        ("GET", ["commits", _, "pulls"]) => "pulls_for_commit",
        ("GET", ["pulls"]) => "list_pulls",
        ("GET", ["issues", "comments", _]) => "get_comment",
        ("PATCH", ["issues", "comments", _]) => "update_comment",
        ("GET", ["issues", _, "comments"]) => "list_comments",
        ("POST", ["issues", _, "comments"]) => "create_comment",
        ("POST", ["statuses", _]) => "create_status",
        ("GET", ["commits", _, "statuses"]) => "list_statuses",
        ("GET", ["commits", _, "status"]) => "combined_status",
        _ => "other",
    }
}

/// Whether `p` is open with head `branch` of `repo` itself: a head repository GitHub
/// names (`head.repo.full_name`) must be `repo` (case-insensitively), not a fork.
pub(crate) fn is_open_from_branch_of(p: &PullRef, repo: &RepoName, branch: &str) -> bool {
    p.is_open()
        && p.head_ref == branch
        && p.head_repo
            .as_deref()
            .is_none_or(|h| h.eq_ignore_ascii_case(&repo.to_string()))
}

/// Whether a comment body starts with `marker`. Anyone can write the marker: a comment is
/// runwarden's only when runwarden's own identity wrote it too
/// ([`IssueComment::is_runwardens`]).
pub fn has_marker(body: &str, marker: &str) -> bool {
    body.trim_start().starts_with(marker)
}

/// Whether `sha` can name a commit in an API path: 4 to 64 hex digits (an abbreviated or
/// full SHA-1 or SHA-256).
pub fn is_commit_sha(sha: &str) -> bool {
    (4..=64).contains(&sha.len()) && sha.bytes().all(|b| b.is_ascii_hexdigit())
}

fn check_sha(sha: &str) -> Result<(), GithubError> {
    if is_commit_sha(sha) {
        Ok(())
    } else {
        Err(GithubError::bare(GithubErrorKind::Invalid(format!(
            "{:?} is not a commit sha",
            truncate_chars(sha, 80)
        ))))
    }
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The `rel="next"` URL of a `Link` header.
fn link_next(headers: &HeaderMap) -> Option<String> {
    let link = headers.get(header::LINK)?.to_str().ok()?;
    link.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        let is_next = params
            .split(';')
            .any(|p| p.trim().replace(' ', "") == "rel=\"next\"");
        is_next.then(|| {
            url.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string()
        })
    })
}

/// On an answer whose `x-ratelimit-remaining` is 0: the wait until `x-ratelimit-reset`.
fn quota_used_up(headers: &HeaderMap) -> Option<Duration> {
    let hdr = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if hdr("x-ratelimit-remaining") != Some("0") {
        return None;
    }
    let reset = hdr("x-ratelimit-reset")?.parse::<i64>().ok()?;
    Some(Duration::from_secs(
        (reset - Utc::now().timestamp()).max(1) as u64
    ))
}

/// The kind of an error answer, reading the rate-limit signs of `reliability-notes` §2.
fn classify(status: StatusCode, headers: &HeaderMap, body: &str) -> GithubErrorKind {
    let code = status.as_u16();
    let json = serde_json::from_str::<Value>(body).ok();
    let mut message = json
        .as_ref()
        .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_string());
    // A 422's cause is in `errors` ("Validation Failed" alone says nothing): each error's
    // `message` (or a bare string), else its `code` and `field`.
    let details: Vec<String> = json
        .as_ref()
        .and_then(|v| v.get("errors"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| match e {
            Value::String(s) => Some(s.clone()),
            Value::Object(o) => o
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_string)
                .or_else(|| {
                    let code = o.get("code").and_then(Value::as_str)?;
                    Some(match o.get("field").and_then(Value::as_str) {
                        Some(f) => format!("{f} {code}"),
                        None => code.to_string(),
                    })
                }),
            _ => None,
        })
        .filter(|d| !d.is_empty() && !message.contains(d.as_str()))
        .collect();
    if !details.is_empty() {
        message = format!("{message}: {}", details.join("; "));
    }
    let message = truncate_chars(&message, MAX_MESSAGE);
    let hdr = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let retry_after = hdr("retry-after").and_then(parse_retry_after);
    let exhausted = hdr("x-ratelimit-remaining") == Some("0");
    let reset_wait = hdr("x-ratelimit-reset")
        .and_then(|v| v.parse::<i64>().ok())
        .map(|reset| Duration::from_secs((reset - Utc::now().timestamp()).max(1) as u64));
    let lower = message.to_ascii_lowercase();
    let limited = code == 429
        || (code == 403
            && (retry_after.is_some()
                || exhausted
                || lower.contains("rate limit")
                || lower.contains("abuse")));
    if limited {
        let wait = retry_after.or(if exhausted { reset_wait } else { None });
        return GithubErrorKind::RateLimited {
            status: code,
            message,
            retry_after: wait,
        };
    }
    GithubErrorKind::Status {
        status: code,
        message,
    }
}

/// `Retry-After`: seconds, or an HTTP date.
fn parse_retry_after(v: &str) -> Option<Duration> {
    if let Ok(s) = v.parse::<u64>() {
        return Some(Duration::from_secs(s));
    }
    let at = DateTime::parse_from_rfc2822(v).ok()?;
    let secs = (at.with_timezone(&Utc) - Utc::now()).num_seconds().max(0);
    Some(Duration::from_secs(secs as u64))
}

/// A one-line description of an octocrab error and its causes (octocrab's own `Display`
/// appends a backtrace).
fn describe(e: &octocrab::Error) -> String {
    let mut parts = Vec::new();
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = src {
        parts.push(first_line(s));
        src = s.source();
    }
    if parts.is_empty() {
        parts.push(first_line(e));
    }
    parts.dedup();
    truncate_chars(&parts.join(": "), MAX_MESSAGE)
}

fn first_line(e: &dyn fmt::Display) -> String {
    e.to_string()
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .to_string()
}

// ---------------------------------------------------------------------------------------
// Wire shapes (only the fields runwarden reads)
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Deserialize)]
struct RawPullHead {
    #[serde(default)]
    sha: String,
    #[serde(default, rename = "ref")]
    git_ref: String,
    /// `null` when the head repository (a fork) was deleted.
    #[serde(default)]
    repo: Option<RawRepo>,
}

#[derive(Debug, Clone, Deserialize)]
struct RawRepo {
    #[serde(default)]
    full_name: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct RawPull {
    number: u64,
    #[serde(default)]
    state: String,
    head: RawPullHead,
}

impl RawPull {
    fn into_ref(self) -> PullRef {
        PullRef {
            number: self.number,
            state: self.state,
            head_sha: self.head.sha,
            head_ref: self.head.git_ref,
            head_repo: self.head.repo.and_then(|r| r.full_name),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
struct RawUser {
    #[serde(default)]
    login: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct RawComment {
    id: u64,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    user: Option<RawUser>,
    #[serde(default)]
    html_url: Option<String>,
}

impl RawComment {
    fn into_comment(self) -> IssueComment {
        IssueComment {
            id: self.id,
            body: self.body.unwrap_or_default(),
            author: self.user.and_then(|u| u.login),
            html_url: self.html_url,
        }
    }
}

#[derive(Deserialize)]
struct RawToken {
    token: String,
    #[serde(default)]
    expires_at: Option<String>,
}

#[derive(Deserialize)]
struct RawStatus {
    state: StatusState,
    #[serde(default)]
    context: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    target_url: Option<String>,
}

/// `GET /repos/{o}/{r}/commits/{ref}/status`: the latest status of each context.
#[derive(Deserialize)]
struct RawCombinedStatus {
    #[serde(default)]
    statuses: Vec<RawStatus>,
    #[serde(default)]
    total_count: Option<u64>,
}

#[derive(Deserialize)]
struct RawInstallation {
    id: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_names_parse_and_reject() {
        let r: RepoName = "acme/web".parse().unwrap();
        assert_eq!((r.owner.as_str(), r.name.as_str()), ("acme", "web"));
        assert_eq!(r.to_string(), "acme/web");
        assert_eq!(
            " Acme/Web.js ".parse::<RepoName>().unwrap().key(),
            "acme/web.js"
        );
        for bad in [
            "acme",
            "acme/",
            "/web",
            "a/b/c",
            "a/../b",
            "acme/we b",
            "acme/..",
            "",
        ] {
            assert!(
                bad.parse::<RepoName>().is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn truncation_counts_characters() {
        assert_eq!(truncate_chars("abc", 3), "abc");
        assert_eq!(truncate_chars("abcd", 3), "ab…");
        let long = "é".repeat(200);
        let cut = truncate_chars(&long, MAX_STATUS_DESCRIPTION);
        assert_eq!(cut.chars().count(), MAX_STATUS_DESCRIPTION);
        assert!(cut.ends_with('…'));
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn classifies_rate_limits() {
        let body = r#"{"message":"You have exceeded a secondary rate limit."}"#;
        // 403 secondary limit without headers: rate limited, no wait given.
        match classify(StatusCode::FORBIDDEN, &HeaderMap::new(), body) {
            GithubErrorKind::RateLimited { retry_after, .. } => assert_eq!(retry_after, None),
            k => panic!("{k:?}"),
        }
        // Retry-After wins.
        match classify(
            StatusCode::TOO_MANY_REQUESTS,
            &headers(&[("retry-after", "7")]),
            "",
        ) {
            GithubErrorKind::RateLimited { retry_after, .. } => {
                assert_eq!(retry_after, Some(Duration::from_secs(7)))
            }
            k => panic!("{k:?}"),
        }
        // Primary limit: wait until the reset.
        let reset = (Utc::now().timestamp() + 30).to_string();
        let h = headers(&[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", &reset),
        ]);
        match classify(
            StatusCode::FORBIDDEN,
            &h,
            r#"{"message":"API rate limit exceeded"}"#,
        ) {
            GithubErrorKind::RateLimited {
                retry_after: Some(d),
                ..
            } => {
                assert!(
                    d <= Duration::from_secs(30) && d >= Duration::from_secs(28),
                    "{d:?}"
                )
            }
            k => panic!("{k:?}"),
        }
        // A plain 403 is final.
        let k = classify(
            StatusCode::FORBIDDEN,
            &headers(&[("x-ratelimit-remaining", "4999")]),
            r#"{"message":"Resource not accessible by integration"}"#,
        );
        assert!(
            matches!(k, GithubErrorKind::Status { status: 403, .. }),
            "{k:?}"
        );
        // An HTML 502 keeps its 5xx classification.
        let k = classify(
            StatusCode::BAD_GATEWAY,
            &HeaderMap::new(),
            "<html>502</html>",
        );
        let e = GithubError::new(&Method::POST, "/x", k);
        assert!(e.is_retryable() && e.outcome_unknown());
        assert_eq!(e.status(), Some(502));
    }

    #[test]
    fn finds_the_next_link() {
        let h = headers(&[(
            "link",
            r#"<https://api.github.com/x?page=3>; rel="next", <https://api.github.com/x?page=9>; rel="last""#,
        )]);
        assert_eq!(
            link_next(&h).as_deref(),
            Some("https://api.github.com/x?page=3")
        );
        let h = headers(&[("link", r#"<https://api.github.com/x?page=1>; rel="first""#)]);
        assert_eq!(link_next(&h), None);
    }

    fn client(api: &str) -> GithubClient {
        GithubClient::new(
            GithubClientOptions::new(url::Url::parse(api).unwrap()),
            GithubAuth::Token(Secret::new("t0ken-value")),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn next_links_are_followed_only_on_the_api_origin() {
        let c = client("https://ghe.example.com/api/v3/");
        assert_eq!(c.api_url(), "https://ghe.example.com/api/v3");
        assert_eq!(
            c.split_api_url("https://ghe.example.com/api/v3/repos/a/b/pulls?page=2"),
            Some(("/repos/a/b/pulls".into(), "page=2".into()))
        );
        assert_eq!(
            c.split_api_url("https://evil.example.com/api/v3/repos/a/b?page=2"),
            None
        );
        assert_eq!(
            c.split_api_url("http://ghe.example.com/api/v3/repos?page=2"),
            None
        );
        assert_eq!(
            c.split_api_url("https://ghe.example.com/other/repos?page=2"),
            None
        );
    }

    #[tokio::test]
    async fn debug_output_hides_the_token() {
        let c = client("https://api.github.com");
        assert!(!format!("{c:?}").contains("t0ken-value"));
        assert!(!format!("{:?}", c.auth).contains("t0ken-value"));
    }

    #[test]
    fn api_urls_with_credentials_are_refused() {
        let r = GithubClient::new(
            GithubClientOptions::new(url::Url::parse("https://u:p@api.github.com").unwrap()),
            GithubAuth::Token(Secret::new("x")),
        );
        assert!(r.is_err());
    }

    #[test]
    fn installation_tokens_are_renewed_before_they_expire() {
        let now = Utc::now();
        let token = |mins: i64| CachedToken {
            token: Secret::new("ghs_x"),
            expires_at: Some(now + chrono::Duration::minutes(mins)),
        };
        assert!(token(60).fresh(now));
        assert!(token(6).fresh(now));
        assert!(!token(4).fresh(now), "within the refresh margin");
        assert!(!token(-1).fresh(now));
        let forever = CachedToken {
            token: Secret::new("ghs_x"),
            expires_at: None,
        };
        assert!(forever.fresh(now));
    }

    #[test]
    fn shas_are_checked_before_use_in_paths() {
        assert!(check_sha("abc1234").is_ok());
        assert!(check_sha("../../x").is_err());
        assert!(check_sha("main").is_err());
    }

    #[test]
    fn unknown_outcomes() {
        let e = |k| GithubError::new(&Method::POST, "/x", k);
        assert!(e(GithubErrorKind::Timeout(Duration::from_secs(1))).outcome_unknown());
        assert!(e(GithubErrorKind::Network("reset".into())).outcome_unknown());
        assert!(
            !e(GithubErrorKind::Status {
                status: 422,
                message: String::new()
            })
            .outcome_unknown()
        );
        assert!(
            !e(GithubErrorKind::RateLimited {
                status: 429,
                message: String::new(),
                retry_after: None
            })
            .outcome_unknown()
        );
    }

    /// A simulator with PR 7 of `acme/web`, and a client of it whose `max_wait` is
    /// `max_wait`.
    async fn sim_and_client(max_wait: Duration) -> (crate::simulator::SimHandle, GithubClient) {
        let sim = crate::simulator::spawn(
            tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
            crate::simulator::SimConfig::default(),
        )
        .await
        .unwrap();
        sim.add_pr(crate::simulator::NewPr {
            repo: "acme/web".into(),
            number: Some(7),
            head_ref: Some("feat/x".into()),
            head_sha: Some("abcdef1234".into()),
            ..Default::default()
        })
        .unwrap();
        let mut o = GithubClientOptions::new(url::Url::parse(&sim.github_url()).unwrap());
        o.retry = RetryPolicy {
            max_wait,
            ..RetryPolicy::fast()
        };
        let gh = GithubClient::new(o, GithubAuth::Token(Secret::new("t0ken-value"))).unwrap();
        (sim, gh)
    }

    /// Requests that reached the simulator's GitHub API.
    fn github_requests(sim: &crate::simulator::SimHandle) -> u64 {
        sim.request_counts()
            .iter()
            .filter(|(k, _)| k.starts_with("github "))
            .map(|(_, n)| *n)
            .sum()
    }

    /// The HTTP client (and the system's root certificates it loads, about half a MiB
    /// held for good) is built at the first request, not when `serve` starts: an idle
    /// `serve` that posts no summary does not hold it. `connect` builds it at once, as
    /// `check` asks.
    #[tokio::test]
    async fn the_http_client_is_built_at_the_first_request() {
        let (_sim, gh) = sim_and_client(Duration::from_millis(500)).await;
        assert!(gh.crab.get().is_none(), "built before any request");
        let repo: RepoName = "acme/web".parse().unwrap();
        gh.pulls_for_commit(&repo, "abcdef1234").await.unwrap();
        assert!(gh.crab.get().is_some());
        let (_sim, other) = sim_and_client(Duration::from_millis(500)).await;
        other.connect().unwrap();
        assert!(other.crab.get().is_some());
    }

    #[tokio::test]
    async fn a_rate_limit_holds_back_every_later_call_of_the_client() {
        let (sim, gh) = sim_and_client(Duration::from_millis(500)).await;
        let repo: RepoName = "acme/web".parse().unwrap();
        sim.inject_fault(
            crate::simulator::Fault::new(crate::simulator::FaultKind::RateLimit {
                status: 429,
                retry_after: Some(30),
                reset_after: None,
            })
            .on("GET", "/github/repos/acme/web/commits"),
        );
        let e = gh.pulls_for_commit(&repo, "abcdef1234").await.unwrap_err();
        let asked = e.retry_after().expect("the wait");
        assert!(asked > Duration::from_secs(29), "{asked:?}");
        assert!(!e.held_back, "the call that met the limit sent its request");
        assert_eq!(github_requests(&sim), 1);

        // Other calls, reads and writes, on other endpoints: nothing is sent; each fails at
        // once with the same kind of error and the wait left.
        let t = Instant::now();
        let read = gh.list_comments(&repo, 7).await.unwrap_err();
        let write = gh.create_comment(&repo, 7, "hello").await.unwrap_err();
        let status = gh
            .create_status(&repo, "abcdef1234", StatusState::Success, "ci", "ok", None)
            .await
            .unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        for e in [&read, &write, &status] {
            match &e.kind {
                GithubErrorKind::RateLimited {
                    status: 429,
                    retry_after: Some(left),
                    message,
                } => {
                    assert!(
                        *left <= asked && *left > Duration::from_secs(28),
                        "{left:?}"
                    );
                    assert!(message.contains("not sent"), "{message}");
                }
                k => panic!("{k:?}"),
            }
            assert!(e.is_retryable() && !e.outcome_unknown(), "{e}");
            assert!(e.held_back, "held back, nothing sent: {e}");
        }
        assert_eq!(github_requests(&sim), 1, "{:?}", sim.request_counts());
        assert!(sim.mutation_log().is_empty());
        assert!(sim.comments(Some("acme/web"), Some(7)).is_empty());
    }

    #[tokio::test]
    async fn a_used_up_quota_holds_the_client_back_before_github_refuses() {
        let (sim, gh) = sim_and_client(Duration::from_millis(500)).await;
        let repo: RepoName = "acme/web".parse().unwrap();
        sim.set_github_quota(1, Duration::from_secs(30));
        // The quota's one request succeeds, and its answer says none is left.
        assert!(gh.list_comments(&repo, 7).await.unwrap().is_empty());
        let e = gh.list_comments(&repo, 7).await.unwrap_err();
        assert!(e.held_back, "nothing is sent into a used-up quota: {e}");
        let left = e.retry_after().expect("the wait until the reset");
        assert!(
            left > Duration::from_secs(25) && left <= Duration::from_secs(31),
            "{left:?}"
        );
        assert_eq!(github_requests(&sim), 1, "{:?}", sim.request_counts());
    }

    #[tokio::test]
    async fn a_short_rate_limit_hold_is_waited_out_before_the_next_request() {
        let (sim, gh) = sim_and_client(Duration::from_secs(2)).await;
        let repo: RepoName = "acme/web".parse().unwrap();
        gh.hold_off(Duration::from_millis(400), 403, "secondary rate limit");
        let t = Instant::now();
        let comments = gh.list_comments(&repo, 7).await.unwrap();
        assert!(comments.is_empty());
        assert!(
            t.elapsed() >= Duration::from_millis(400),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(github_requests(&sim), 1);
        assert_eq!(gh.rate_limit_wait(), None);

        // A hold is never shortened by a shorter one, and is cut to MAX_RATE_LIMIT_HOLD.
        gh.hold_off(Duration::from_secs(60), 429, "a");
        gh.hold_off(Duration::from_secs(1), 429, "b");
        let left = gh.rate_limit_wait().unwrap();
        assert!(left > Duration::from_secs(59), "{left:?}");
        gh.hold_off(Duration::from_secs(30 * 86_400), 429, "c");
        let left = gh.rate_limit_wait().unwrap();
        assert!(
            left > Duration::from_secs(3500) && left <= MAX_RATE_LIMIT_HOLD,
            "{left:?}"
        );
        let e = gh.list_comments(&repo, 7).await.unwrap_err();
        assert!(e.to_string().contains(": a"), "{e}");
        assert_eq!(github_requests(&sim), 1);
    }

    #[test]
    fn a_comment_is_runwardens_only_with_the_marker_and_its_author() {
        let c = |author: Option<&str>, body: &str| IssueComment {
            id: 1,
            body: body.into(),
            author: author.map(str::to_string),
            html_url: None,
        };
        let m = "<!-- runwarden:summary -->";
        let ours = format!("{m}\nbody");
        assert!(c(Some("runwarden[bot]"), &ours).is_runwardens(m, "runwarden[bot]"));
        assert!(c(Some("RunWarden[Bot]"), &ours).is_runwardens(m, "runwarden[bot]"));
        assert!(!c(Some("mallory"), &ours).is_runwardens(m, "runwarden[bot]"));
        assert!(!c(Some("runwarden"), &ours).is_runwardens(m, "runwarden[bot]"));
        assert!(!c(None, &ours).is_runwardens(m, "runwarden[bot]"));
        assert!(!c(None, &ours).is_runwardens(m, ""));
        assert!(
            !c(Some("runwarden[bot]"), &format!("quote: {m}")).is_runwardens(m, "runwarden[bot]")
        );
    }

    #[test]
    fn the_branch_lookup_keeps_only_prs_from_the_repositorys_own_branch() {
        let pull = |head: Value| -> PullRef {
            serde_json::from_value::<RawPull>(json!({"number": 7, "state": "open", "head": head}))
                .unwrap()
                .into_ref()
        };
        let repo: RepoName = "acme/web".parse().unwrap();
        let own = pull(json!({"ref": "patch-1", "sha": "abc", "repo": {"full_name": "Acme/Web"}}));
        assert_eq!(own.head_repo.as_deref(), Some("Acme/Web"));
        assert!(is_open_from_branch_of(&own, &repo, "patch-1"));
        assert!(!is_open_from_branch_of(&own, &repo, "patch-2"));
        let fork =
            pull(json!({"ref": "patch-1", "sha": "abc", "repo": {"full_name": "mallory/web"}}));
        assert!(!is_open_from_branch_of(&fork, &repo, "patch-1"));
        // A deleted fork (`repo: null`) or an answer without it: the query's
        // `head={owner}:{branch}` is all there is to go by.
        let gone = pull(json!({"ref": "patch-1", "sha": "abc", "repo": null}));
        assert_eq!(gone.head_repo, None);
        assert!(is_open_from_branch_of(&gone, &repo, "patch-1"));
        assert!(is_open_from_branch_of(
            &pull(json!({"ref": "patch-1"})),
            &repo,
            "patch-1"
        ));
    }

    #[tokio::test]
    async fn the_comment_id_memory_starts_over_past_its_cap() {
        let gh = GithubClient::new(
            GithubClientOptions::new(url::Url::parse("http://127.0.0.1:9/github").unwrap()),
            GithubAuth::Token(crate::secret::Secret::new("t")),
        )
        .unwrap();
        let repo: RepoName = "acme/web".parse().unwrap();
        for pr in 0..MAX_COMMENT_IDS as u64 {
            gh.remember_comment_id(&repo, pr, Some(pr + 1));
        }
        assert_eq!(gh.comment_ids_remembered(), MAX_COMMENT_IDS);
        // Known PRs are updated in place; a new one past the cap starts over.
        gh.remember_comment_id(&repo, 7, Some(70));
        assert_eq!(gh.cached_comment_id(&repo, 7), Some(70));
        gh.remember_comment_id(&repo, 1_000_000, Some(1));
        assert_eq!(gh.comment_ids_remembered(), 1);
        assert_eq!(gh.cached_comment_id(&repo, 1_000_000), Some(1));
    }

    #[test]
    fn graphql_is_next_to_the_rest_api_on_github_enterprise() {
        for (base, url) in [
            ("https://api.github.com", "https://api.github.com/graphql"),
            (
                "https://ghe.example.com/api/v3",
                "https://ghe.example.com/api/graphql",
            ),
            (
                "http://127.0.0.1:4000/github",
                "http://127.0.0.1:4000/github/graphql",
            ),
        ] {
            let sent = request_url(base, graphql_path(base), "").unwrap();
            assert_eq!(sent.as_str(), url, "{base}");
        }
        assert_eq!(operation(&Method::POST, "/../graphql"), "graphql");
        // Queries go as they are.
        assert_eq!(
            request_url(
                "https://ghe.example.com/api/v3",
                "/repos/a/b/pulls",
                "state=open&head=a%3Afeat%2Fx&per_page=100"
            )
            .unwrap()
            .as_str(),
            "https://ghe.example.com/api/v3/repos/a/b/pulls?state=open&head=a%3Afeat%2Fx&per_page=100"
        );
    }

    #[test]
    fn identity_requests_have_metric_labels() {
        assert_eq!(operation(&Method::GET, "/user"), "user");
        assert_eq!(operation(&Method::GET, "/app"), "app");
    }

    #[tokio::test]
    async fn the_own_login_is_asked_once_per_client() {
        let (sim, gh) = sim_and_client(Duration::from_millis(500)).await;
        assert_eq!(gh.own_login().await.unwrap(), "runwarden[bot]");
        assert_eq!(gh.own_login().await.unwrap(), "runwarden[bot]");
        assert_eq!(github_requests(&sim), 1, "{:?}", sim.request_counts());

        let as_user = |t: &str| {
            let mut o = GithubClientOptions::new(url::Url::parse(&sim.github_url()).unwrap());
            o.retry = RetryPolicy::fast();
            GithubClient::new(o, GithubAuth::Token(Secret::new(t))).unwrap()
        };
        assert_eq!(as_user("user:Ada").own_login().await.unwrap(), "Ada");

        let mut o = GithubClientOptions::new(url::Url::parse(&sim.github_url()).unwrap());
        o.retry = RetryPolicy::fast();
        let app = GithubClient::new(
            o,
            GithubAuth::App {
                app_id: 424242,
                jwt: Arc::new(|| Ok("eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOjF9.c2ln".to_string())),
            },
        )
        .unwrap();
        assert_eq!(app.own_login().await.unwrap(), "runwarden[bot]");

        // Not told: retryable, and asked again next time.
        let fault = sim.inject_fault(
            crate::simulator::Fault::new(crate::simulator::FaultKind::Status {
                status: 404,
                body: None,
                retry_after: None,
            })
            .on("GET", "/github/user")
            .always(),
        );
        let fresh = as_user("t0ken-value");
        let e = fresh.own_login().await.unwrap_err();
        assert!(matches!(e.kind, GithubErrorKind::Identity(_)), "{e}");
        assert!(e.is_retryable(), "{e}");
        sim.remove_fault(fault);
        assert_eq!(fresh.own_login().await.unwrap(), "runwarden[bot]");
    }

    #[test]
    fn the_default_policy_hands_long_waits_back_quickly() {
        // A wait longer than this goes back to the executor instead of holding a slot.
        assert!(RetryPolicy::default().max_wait <= Duration::from_secs(10));
        assert!(RetryPolicy::fast().max_wait <= RetryPolicy::default().max_wait);
    }

    #[test]
    fn app_credentials_without_a_signer_are_reported() {
        let secrets = Secrets {
            github_app_id: Some(7),
            github_app_private_key: Some(Secret::new(
                "-----BEGIN RSA PRIVATE KEY-----\nabc\n-----END RSA PRIVATE KEY-----",
            )),
            ..Secrets::default()
        };
        let e = GithubAuth::from_secrets(&secrets).unwrap_err();
        assert!(!e.to_string().contains("abc"));
        let secrets = Secrets {
            github_token: Some(Secret::new("tok")),
            ..secrets
        };
        assert!(matches!(
            GithubAuth::from_secrets(&secrets).unwrap(),
            Some(GithubAuth::Token(_))
        ));
        assert!(
            GithubAuth::from_secrets(&Secrets::default())
                .unwrap()
                .is_none()
        );
    }
}
