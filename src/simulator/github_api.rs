//! The GitHub REST endpoints runwarden uses, mounted under `/github` (so the bot's
//! `github.api_url` is `<base>/github`). Bodies follow GitHub's shapes closely enough for
//! octocrab's models: pull requests, issue comments, commit statuses, and the GitHub App
//! installation endpoints. `Authorization: token X` or `Bearer X` is required.
//!
//! Who a request acts as (the author of the comments it creates, the creator of its
//! statuses, `GET /user`'s answer) follows from its credential:
//!
//! | credential | acts as |
//! |---|---|
//! | `user:NAME` (e.g. `user:mallory`; always accepted, even when `github_token` is set) | the user `NAME` |
//! | `ghs_actions…` (a token starting so: GitHub Actions' `GITHUB_TOKEN`, an installation token; always accepted) | `github-actions[bot]` |
//! | an installation token issued by `POST /app/installations/{id}/access_tokens` | `{github_app_slug}[bot]` (`runwarden[bot]` by default) |
//! | a JWT (three dot-separated parts; the `/app` endpoints) | the App, `{github_app_slug}[bot]` |
//! | any other token (`SimConfig::github_token` when set) | `SimConfig::github_bot_login` (`runwarden[bot]` by default) |
//!
//! As on GitHub, `GET /user` answers the token's user, and 403 "Resource not accessible
//! by integration" for an installation token or a JWT; `GET /app` (JWT only) answers the
//! App, with `slug` = `github_app_slug`; `POST /graphql` answers the one query runwarden
//! sends, `viewer { login }`, for any token but a JWT (installation tokens included).
//!
//! A pull request may come from a fork (`NewPr::head_repo`): its `head.repo` is the fork,
//! `head.label` is `{fork owner}:{branch}`, and `GET .../pulls?head=owner:branch` matches
//! the owner of the head repository, as GitHub does.
//!
//! Commit statuses are listed two ways, as on GitHub: every status, newest first
//! (`GET .../commits/{ref}/statuses`), and the combined status, the latest of each
//! context (`GET .../commits/{ref}/status`: `state`, `statuses`, `sha`, `total_count`,
//! `repository`, `commit_url`, `url`; `per_page`/`page` pages the contexts, with a `Link`
//! header). [`World::reinstall_github_app`] uninstalls and reinstalls the App for an
//! owner: a new installation id; the old one answers 404 and its tokens 401.
//!
//! Limits, as GitHub's:
//!
//! - the primary rate limit, 5,000 requests an hour (one window for every token;
//!   `POST /_sim/github/quota` changes it): past it, 403 "API rate limit exceeded" with
//!   `x-ratelimit-remaining: 0`;
//! - the secondary limit on content creation, 80 requests within any 60 s and 500 within
//!   any hour per account (new comments, comment edits, new statuses; see
//!   [`ContentLimiter`]): past it, 403 "You have exceeded a secondary rate limit..." with
//!   `retry-after`, recorded ([`World::github_secondary_limit_hits`], `GET
//!   /_sim/github/content-limits`, `githubSecondaryLimited` in `/_sim/stats`). On by
//!   default; `SimConfig::github_content_limits`, [`World::set_github_content_limits`]
//!   or `POST /_sim/github/content-limits` change or disable it for a load test;
//! - at most [`MAX_STATUSES_PER_CONTEXT`] (1,000) statuses per sha and context of a
//!   repository: one more is 422 "This SHA and context has reached the maximum number of
//!   statuses.".
//!
//! Owner and repository names are compared case-insensitively, as on GitHub:
//! `GET /repos/Acme/Web/...` reads what was written under `acme/web`, writes under any
//! spelling are stored with the repository, and answers spell it as it was first known.

// Request-parsing helpers return the error response itself, as handlers do.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::ids;
use super::world::{SimError, World, lock, sha_matches};

/// Max length of an issue comment body (GitHub's limit).
pub const MAX_COMMENT_BODY: usize = 65_536;
/// Max length of a commit status description (GitHub's limit).
pub const MAX_STATUS_DESCRIPTION: usize = 140;

// ---------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct PrRec {
    id: u64,
    repo: String,
    number: u64,
    title: String,
    author: String,
    state_open: bool,
    merged: bool,
    draft: bool,
    head_ref: String,
    head_sha: String,
    /// `owner/name` of the repository of the head branch: `repo`, or a fork.
    head_repo: String,
    base_ref: String,
    commits: Vec<String>,
    /// Merged with a merge commit: its commits are on its base branch.
    merge_commit: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    closed_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
struct CommentRec {
    id: u64,
    repo: String,
    issue: u64,
    body: String,
    user: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    edits: u32,
}

#[derive(Debug, Clone)]
struct StatusRec {
    id: u64,
    repo: String,
    sha: String,
    state: String,
    context: String,
    description: Option<String>,
    target_url: Option<String>,
    user: String,
    created_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
struct TokenRec {
    /// The installation it was issued for.
    installation: u64,
    expires_at: DateTime<Utc>,
    revoked: bool,
}

/// GitHub's primary rate limit, one window for every token: `limit` requests per hour
/// (5,000 by default), counted from the first request of the window. Once they are used
/// up, requests are answered 403 "API rate limit exceeded" until the window resets.
#[derive(Debug)]
struct Quota {
    limit: u32,
    used: u32,
    /// When the current window ends; `None` before its first request.
    reset_at: Option<DateTime<Utc>>,
    window: chrono::Duration,
}

impl Default for Quota {
    fn default() -> Self {
        Quota {
            limit: 5000,
            used: 0,
            reset_at: None,
            window: chrono::Duration::hours(1),
        }
    }
}

impl Quota {
    /// Counts one request at `now`: `Ok` with the headers' (remaining, used, reset), or
    /// `Err(reset)` when the quota is used up.
    fn take(&mut self, now: DateTime<Utc>) -> Result<(u32, u32, i64), i64> {
        let reset = match self.reset_at {
            Some(r) if r > now => r,
            _ => {
                self.used = 0;
                let r = now
                    .checked_add_signed(self.window)
                    .unwrap_or(DateTime::<Utc>::MAX_UTC);
                self.reset_at = Some(r);
                r
            }
        };
        if self.used >= self.limit {
            return Err(reset.timestamp());
        }
        self.used += 1;
        Ok((self.limit - self.used, self.used, reset.timestamp()))
    }
}

/// GitHub's secondary rate limit on content creation (`reliability-notes.md` §2.2:
/// "Content creation: generally ≤ 80 requests/min and ≤ 500/h"): at most `per_minute`
/// content-creating requests within any 60 s and `per_hour` within any hour, per account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContentLimits {
    pub per_minute: u32,
    pub per_hour: u32,
}

impl Default for ContentLimits {
    /// GitHub's: 80 a minute, 500 an hour.
    fn default() -> Self {
        ContentLimits {
            per_minute: 80,
            per_hour: 500,
        }
    }
}

/// A content-creating request the simulator refused with GitHub's secondary-rate-limit
/// 403 ([`World::github_secondary_limit_hits`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecondaryLimitHit {
    pub at: DateTime<Utc>,
    /// The account the request acted as.
    pub login: String,
    pub method: String,
    /// The request's path, `/github/...`.
    pub path: String,
    /// The `retry-after` answered: seconds until the window has room again.
    pub retry_after: u64,
}

/// How many refusals [`ContentLimiter`] keeps (the count is kept in full).
const MAX_HITS: usize = 10_000;

/// Enforces [`ContentLimits`] over sliding windows, per account (the login a request acts
/// as: the token's user, or the App's bot), as GitHub's secondary limits apply per user
/// or App. Only requests that create content count, and only when they would succeed: a
/// request GitHub refuses anyway (404, 422) is answered so and does not count, and
/// neither does a refused one.
///
/// What counts as content creation: `POST .../issues/{n}/comments` (a new comment),
/// `POST .../statuses/{sha}` (a new commit status; every one is a new record, GitHub
/// keeps up to 1,000 per sha and context), and editing a comment (`PATCH`, or the `POST`
/// octocrab sends, on `.../issues/comments/{id}`). GitHub's docs speak of
/// "content-generating requests" without listing them; an edit generates content (a new
/// body and an entry in the comment's edit history), and bots that edit one comment in a
/// loop are reported to meet the secondary limit (braintrustdata/eval-action#48), so an
/// edit counts. Reads and `DELETE` do not.
#[derive(Debug)]
struct ContentLimiter {
    /// `None`: not enforced ([`World::set_github_content_limits`]).
    limits: Option<ContentLimits>,
    /// Per login, when each counted request was made, oldest first; at most an hour's.
    made: HashMap<String, std::collections::VecDeque<DateTime<Utc>>>,
    /// The latest refusals, oldest first.
    hits: std::collections::VecDeque<SecondaryLimitHit>,
    /// Every refusal since the last reset.
    refused: u64,
}

impl Default for ContentLimiter {
    fn default() -> Self {
        ContentLimiter {
            limits: Some(ContentLimits::default()),
            made: HashMap::new(),
            hits: std::collections::VecDeque::new(),
            refused: 0,
        }
    }
}

impl ContentLimiter {
    /// Counts one content-creating request of `login` at `now`, or refuses it:
    /// `Err(seconds)` until the window that is full has room again (at least 1).
    fn admit(&mut self, login: &str, now: DateTime<Utc>) -> Result<(), u64> {
        let Some(limits) = self.limits else {
            return Ok(());
        };
        let minute = ChronoDuration::seconds(60);
        let hour = ChronoDuration::hours(1);
        let made = self.made.entry(login.to_string()).or_default();
        while made.front().is_some_and(|t| *t + hour <= now) {
            made.pop_front();
        }
        // The window frees when the oldest of the last `limit` requests in it leaves it.
        let frees_at = |limit: u32, window: ChronoDuration| -> Option<DateTime<Utc>> {
            let limit = limit.max(1) as usize;
            let in_window = made.iter().rev().take_while(|t| **t + window > now).count();
            (in_window >= limit).then(|| made[made.len() - limit] + window)
        };
        let free = [
            frees_at(limits.per_minute, minute),
            frees_at(limits.per_hour, hour),
        ]
        .into_iter()
        .flatten()
        .max();
        if let Some(at) = free {
            let ms = (at - now).num_milliseconds().max(1);
            return Err(((ms + 999) / 1000) as u64);
        }
        // Kept in order even if the wall clock steps back.
        let at = made.back().map_or(now, |last| now.max(*last));
        made.push_back(at);
        Ok(())
    }

    fn record(&mut self, hit: SecondaryLimitHit) {
        self.refused += 1;
        self.hits.push_back(hit);
        if self.hits.len() > MAX_HITS {
            self.hits.pop_front();
        }
    }
}

/// The most statuses GitHub keeps for one sha and context of a repository; one more is
/// refused with 422 (`anchors-features.md` §4.6, palantir/policy-bot#470).
pub const MAX_STATUSES_PER_CONTEXT: usize = 1000;

#[derive(Debug, Default)]
pub(crate) struct GithubState {
    quota: Quota,
    content: ContentLimiter,
    next_id: u64,
    prs: BTreeMap<(String, u64), PrRec>,
    comments: BTreeMap<u64, CommentRec>,
    statuses: Vec<StatusRec>,
    /// Statuses per (repo, lowercase sha, context), for [`MAX_STATUSES_PER_CONTEXT`].
    status_counts: HashMap<(String, String, String), usize>,
    /// The spelling of every repository the simulator knows (`owner/name` as first
    /// written), by its lowercase form: GitHub compares owner and repository names
    /// case-insensitively and answers with the repository's own spelling.
    repo_names: HashMap<String, String>,
    installations: BTreeMap<String, u64>,
    /// Installations ever made (ids are never reused, as on GitHub).
    installations_made: u64,
    tokens: HashMap<String, TokenRec>,
}

impl GithubState {
    /// An empty GitHub whose secondary limit on content creation is `limits`.
    pub(crate) fn new(limits: Option<ContentLimits>) -> Self {
        let mut gh = GithubState::default();
        gh.content.limits = limits;
        gh
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        1_000_000 + self.next_id
    }

    /// The installation of `owner` (compared case-insensitively, as GitHub does).
    fn installation(&mut self, owner: &str) -> u64 {
        if let Some((_, id)) = self
            .installations
            .iter()
            .find(|(o, _)| o.eq_ignore_ascii_case(owner))
        {
            return *id;
        }
        self.installations_made += 1;
        let id = 40_000_000 + self.installations_made;
        self.installations.insert(owner.to_string(), id);
        id
    }

    /// `repo` as the simulator spells it: the spelling of a known repository that
    /// matches it case-insensitively, else `repo` itself.
    fn canonical(&self, repo: &str) -> String {
        self.repo_names
            .get(&repo.to_ascii_lowercase())
            .cloned()
            .unwrap_or_else(|| repo.to_string())
    }

    /// Makes `repo` known (its first spelling stays); returns its spelling.
    fn register_repo(&mut self, repo: &str) -> String {
        self.repo_names
            .entry(repo.to_ascii_lowercase())
            .or_insert_with(|| repo.to_string())
            .clone()
    }
}

/// A pull request to add or update (`POST /_sim/prs`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct NewPr {
    /// `owner/repo`.
    pub repo: String,
    /// Number of the PR; a new number when absent; an existing PR is updated.
    pub number: Option<u64>,
    #[serde(alias = "branch", alias = "head")]
    pub head_ref: Option<String>,
    #[serde(alias = "sha")]
    pub head_sha: Option<String>,
    /// `owner/name` of the head branch's repository, for a PR from a fork; `repo` when
    /// absent.
    pub head_repo: Option<String>,
    #[serde(alias = "base")]
    pub base_ref: Option<String>,
    /// `open` (default) or `closed`.
    pub state: Option<String>,
    pub merged: Option<bool>,
    /// How a merged PR was merged: `merge` (default: a merge commit, so its commits are on
    /// the base branch), `squash` or `rebase` (new commits: its own are not).
    pub merge_method: Option<String>,
    pub draft: Option<bool>,
    pub title: Option<String>,
    pub author: Option<String>,
}

/// A pull request as the simulator holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SimPr {
    pub repo: String,
    pub number: u64,
    pub id: u64,
    pub state: String,
    pub merged: bool,
    pub draft: bool,
    pub title: String,
    pub author: String,
    pub head_ref: String,
    pub head_sha: String,
    /// `owner/name` of the head branch's repository (`repo`, or a fork).
    #[serde(default)]
    pub head_repo: String,
    pub base_ref: String,
    /// Every head sha the PR has had, oldest first.
    pub commits: Vec<String>,
}

/// An issue comment as the simulator holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SimComment {
    pub id: u64,
    pub repo: String,
    pub issue_number: u64,
    pub body: String,
    pub user: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// How many times it was edited (PATCH).
    pub edits: u32,
}

/// A commit status as the simulator holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SimStatus {
    pub id: u64,
    pub repo: String,
    pub sha: String,
    pub state: String,
    pub context: String,
    pub description: Option<String>,
    pub target_url: Option<String>,
    pub created_at: DateTime<Utc>,
}

fn sim_pr(p: &PrRec) -> SimPr {
    SimPr {
        repo: p.repo.clone(),
        number: p.number,
        id: p.id,
        state: if p.state_open { "open" } else { "closed" }.into(),
        merged: p.merged,
        draft: p.draft,
        title: p.title.clone(),
        author: p.author.clone(),
        head_ref: p.head_ref.clone(),
        head_sha: p.head_sha.clone(),
        head_repo: p.head_repo.clone(),
        base_ref: p.base_ref.clone(),
        commits: p.commits.clone(),
    }
}

fn sim_comment(c: &CommentRec) -> SimComment {
    SimComment {
        id: c.id,
        repo: c.repo.clone(),
        issue_number: c.issue,
        body: c.body.clone(),
        user: c.user.clone(),
        created_at: c.created_at,
        updated_at: c.updated_at,
        edits: c.edits,
    }
}

fn valid_repo(repo: &str) -> bool {
    let mut parts = repo.split('/');
    let ok = |s: Option<&str>| {
        s.is_some_and(|s| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
    };
    ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
}

impl World {
    /// Adds a pull request, or updates one (a new `headSha` is a push to it).
    pub fn add_pr(&self, np: NewPr) -> Result<SimPr, SimError> {
        if !valid_repo(&np.repo) {
            return Err(SimError::BadRequest("repo must be owner/name".into()));
        }
        if np.head_repo.as_deref().is_some_and(|r| !valid_repo(r)) {
            return Err(SimError::BadRequest("headRepo must be owner/name".into()));
        }
        let open = match np.state.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None => None,
            Some("open") => Some(true),
            Some("closed") => Some(false),
            Some(s) => {
                return Err(SimError::BadRequest(format!("state {s:?}: open or closed")));
            }
        };
        let merge_commit = match np.merge_method.as_deref() {
            None | Some("merge") => true,
            Some("squash" | "rebase") => false,
            Some(m) => {
                return Err(SimError::BadRequest(format!(
                    "mergeMethod {m:?}: merge, squash or rebase"
                )));
            }
        };
        let now = Utc::now();
        let mut gh = lock(&self.gh);
        // `Acme/Web` is `acme/web` when that is known, as on GitHub.
        let repo = gh.canonical(&np.repo);
        let head_repo = np.head_repo.as_deref().map(|r| gh.canonical(r));
        let number = match np.number {
            Some(n) => n,
            None => {
                gh.prs
                    .keys()
                    .filter(|(r, _)| *r == repo)
                    .map(|(_, n)| *n)
                    .max()
                    .unwrap_or(0)
                    + 1
            }
        };
        if number == 0 {
            return Err(SimError::BadRequest("number must be positive".into()));
        }
        let key = (repo.clone(), number);
        if gh.prs.contains_key(&key)
            && let Some(r) = &head_repo
        {
            gh.register_repo(r);
        }
        if let Some(p) = gh.prs.get_mut(&key) {
            if let Some(sha) = np.head_sha {
                if p.head_sha != sha {
                    p.commits.push(sha.clone());
                }
                p.head_sha = sha;
            }
            if let Some(r) = np.head_ref {
                p.head_ref = r;
            }
            if let Some(r) = head_repo {
                p.head_repo = r;
            }
            if let Some(b) = np.base_ref {
                p.base_ref = b;
            }
            if let Some(t) = np.title {
                p.title = t;
            }
            if let Some(d) = np.draft {
                p.draft = d;
            }
            if np.merge_method.is_some() {
                p.merge_commit = merge_commit;
            }
            if let Some(m) = np.merged {
                p.merged = m;
                if m {
                    p.state_open = false;
                }
            }
            if let Some(o) = open {
                p.state_open = o;
            }
            p.closed_at = if p.state_open {
                None
            } else {
                p.closed_at.or(Some(now))
            };
            p.updated_at = now;
            return Ok(sim_pr(p));
        }
        let head_ref = np.head_ref.ok_or_else(|| {
            SimError::BadRequest("headRef (branch) is required for a new PR".into())
        })?;
        let head_sha = np.head_sha.unwrap_or_else(|| {
            let mut rng = rand::thread_rng();
            ids::random_hex(&mut rng, 40)
        });
        let merged = np.merged.unwrap_or(false);
        let state_open = open.unwrap_or(true) && !merged;
        let id = gh.id();
        let rec = PrRec {
            id,
            repo: repo.clone(),
            number,
            title: np.title.unwrap_or_else(|| format!("Update {head_ref}")),
            author: np.author.unwrap_or_else(|| "octocat".into()),
            state_open,
            merged,
            draft: np.draft.unwrap_or(false),
            head_ref,
            commits: vec![head_sha.clone()],
            merge_commit,
            head_sha,
            head_repo: head_repo.unwrap_or_else(|| repo.clone()),
            base_ref: np.base_ref.unwrap_or_else(|| "main".into()),
            created_at: now,
            updated_at: now,
            closed_at: (!state_open).then_some(now),
        };
        let out = sim_pr(&rec);
        gh.register_repo(&repo);
        gh.register_repo(&rec.head_repo);
        gh.prs.insert(key, rec);
        Ok(out)
    }

    /// Every pull request, by repo and number.
    pub fn prs(&self) -> Vec<SimPr> {
        lock(&self.gh).prs.values().map(sim_pr).collect()
    }

    /// Issue comments, optionally of one repo (any case, as GitHub compares names) and
    /// issue, oldest first.
    pub fn comments(&self, repo: Option<&str>, issue: Option<u64>) -> Vec<SimComment> {
        lock(&self.gh)
            .comments
            .values()
            .filter(|c| repo.is_none_or(|r| c.repo.eq_ignore_ascii_case(r)))
            .filter(|c| issue.is_none_or(|n| c.issue == n))
            .map(sim_comment)
            .collect()
    }

    /// Commit statuses, optionally of one repo (any case) and sha, oldest first.
    pub fn statuses(&self, repo: Option<&str>, sha: Option<&str>) -> Vec<SimStatus> {
        lock(&self.gh)
            .statuses
            .iter()
            .filter(|s| repo.is_none_or(|r| s.repo.eq_ignore_ascii_case(r)))
            .filter(|s| sha.is_none_or(|h| s.sha == h))
            .map(|s| SimStatus {
                id: s.id,
                repo: s.repo.clone(),
                sha: s.sha.clone(),
                state: s.state.clone(),
                context: s.context.clone(),
                description: s.description.clone(),
                target_url: s.target_url.clone(),
                created_at: s.created_at,
            })
            .collect()
    }

    /// Starts a new window of GitHub's primary rate limit: `limit` requests, resetting
    /// after `window` (GitHub: 5,000 an hour).
    pub fn set_github_quota(&self, limit: u32, window: std::time::Duration) {
        let mut gh = lock(&self.gh);
        gh.quota = Quota {
            limit,
            used: 0,
            reset_at: None,
            window: chrono::Duration::from_std(window).unwrap_or(chrono::Duration::hours(1)),
        };
    }

    /// Sets GitHub's secondary limit on content creation (see [`ContentLimits`]); `None`
    /// stops enforcing it, for a test that must write faster than GitHub allows (a load
    /// test). On by default, at GitHub's 80 a minute and 500 an hour
    /// (`SimConfig::github_content_limits`). The requests counted so far are forgotten.
    pub fn set_github_content_limits(&self, limits: Option<ContentLimits>) {
        let mut gh = lock(&self.gh);
        gh.content.limits = limits.map(|l| ContentLimits {
            per_minute: l.per_minute.max(1),
            per_hour: l.per_hour.max(1),
        });
        gh.content.made.clear();
    }

    /// The secondary limit on content creation in force (`None`: not enforced).
    pub fn github_content_limits(&self) -> Option<ContentLimits> {
        lock(&self.gh).content.limits
    }

    /// The content-creating requests refused with GitHub's secondary-rate-limit 403,
    /// oldest first (the latest 10,000).
    pub fn github_secondary_limit_hits(&self) -> Vec<SecondaryLimitHit> {
        lock(&self.gh).content.hits.iter().cloned().collect()
    }

    /// How many requests were refused with the secondary-rate-limit 403.
    pub fn github_secondary_limited(&self) -> u64 {
        lock(&self.gh).content.refused
    }

    /// Uninstalls the GitHub App from `owner` and installs it again, as a user can on
    /// GitHub: the installation gets a new id, the old id answers 404 (`POST
    /// /app/installations/{old}/access_tokens` too) and the tokens issued for it answer
    /// 401 "Bad credentials". Returns the new id.
    pub fn reinstall_github_app(&self, owner: &str) -> u64 {
        let mut gh = lock(&self.gh);
        let key = gh
            .installations
            .keys()
            .find(|o| o.eq_ignore_ascii_case(owner))
            .cloned();
        let old = key.and_then(|k| gh.installations.remove(&k));
        for t in gh.tokens.values_mut() {
            if Some(t.installation) == old {
                t.revoked = true;
            }
        }
        gh.installation(owner)
    }

    /// Makes every installation token issued so far answer 401 "Bad credentials".
    pub fn expire_installation_tokens(&self) -> usize {
        let mut gh = lock(&self.gh);
        for t in gh.tokens.values_mut() {
            t.revoked = true;
        }
        gh.tokens.len()
    }
}

// ---------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------

const DOCS: &str = "https://docs.github.com/rest";

fn gh_json(status: StatusCode, v: &Value) -> Response {
    let mut r = (status, serde_json::to_vec(v).unwrap_or_default()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

pub(crate) fn gh_error(status: StatusCode, msg: &str) -> Response {
    gh_json(
        status,
        &json!({"message": msg, "documentation_url": DOCS, "status": status.as_u16().to_string()}),
    )
}

fn not_found_json() -> Response {
    gh_error(StatusCode::NOT_FOUND, "Not Found")
}

/// GitHub's documentation link of its secondary rate limits.
const SECONDARY_LIMIT_DOCS: &str = "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits";

/// An `x-github-request-id`.
fn request_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..20].to_uppercase()
}

/// GitHub's answer to a request past a secondary rate limit: 403, its message (with the
/// request id, as GitHub writes it) and `retry-after`.
fn secondary_limited(retry_after: u64) -> Response {
    let id = request_id();
    let mut r = gh_json(
        StatusCode::FORBIDDEN,
        &json!({
            "message": format!(
                "You have exceeded a secondary rate limit. Please wait a few minutes before \
                 you try again. If you reach out to GitHub Support for help, please include \
                 the request ID {id}."
            ),
            "documentation_url": SECONDARY_LIMIT_DOCS,
            "status": "403",
        }),
    );
    let h = r.headers_mut();
    h.insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    if let Ok(v) = HeaderValue::from_str(&id) {
        h.insert("x-github-request-id", v);
    }
    r
}

/// The method and path (`/github/...`) of a request, for [`SecondaryLimitHit`].
fn method_and_path(req: &Request) -> (String, String) {
    let path = req
        .extensions()
        .get::<axum::extract::OriginalUri>()
        .map(|u| u.0.path().to_string())
        .unwrap_or_else(|| format!("/github{}", req.uri().path()));
    (req.method().as_str().to_string(), path)
}

/// Counts a content-creating request of `who` against the secondary limit
/// ([`ContentLimiter`]), or gives GitHub's refusal, recording it.
fn admit_content(
    gh: &mut GithubState,
    who: &str,
    (method, path): (String, String),
) -> Result<(), Response> {
    let now = Utc::now();
    gh.content.admit(who, now).map_err(|retry_after| {
        gh.content.record(SecondaryLimitHit {
            at: now,
            login: who.to_string(),
            method,
            path,
            retry_after,
        });
        secondary_limited(retry_after)
    })
}

fn validation_failed(resource: &str, field: &str, message: &str) -> Response {
    gh_json(
        StatusCode::UNPROCESSABLE_ENTITY,
        &json!({
            "message": "Validation Failed",
            "errors": [{"resource": resource, "code": "custom", "field": field, "message": message}],
            "documentation_url": DOCS,
            "status": "422",
        }),
    )
}

pub(crate) fn router(world: Arc<World>) -> Router<Arc<World>> {
    Router::new()
        // `{ref}/pulls`, `{ref}/statuses`, `{ref}/status`; a ref may be `heads/a/b`.
        .route("/repos/{owner}/{repo}/commits/{*rest}", get(commits_get))
        .route("/repos/{owner}/{repo}/statuses/{sha}", post(create_status))
        .route("/repos/{owner}/{repo}/pulls", get(list_pulls))
        .route("/repos/{owner}/{repo}/pulls/{number}", get(get_pull))
        .route(
            "/repos/{owner}/{repo}/issues/{number}/comments",
            get(list_comments).post(create_comment),
        )
        .route(
            "/repos/{owner}/{repo}/issues/comments/{id}",
            // octocrab's `update_comment` POSTs; GitHub accepts both.
            get(get_comment)
                .patch(update_comment)
                .post(update_comment)
                .delete(delete_comment),
        )
        .route("/repos/{owner}/{repo}/installation", get(repo_installation))
        .route("/app/installations", get(list_installations))
        .route("/app/installations/{id}/access_tokens", post(create_token))
        .route("/rate_limit", get(rate_limit))
        .route("/user", get(get_user))
        .route("/app", get(get_app))
        .route("/graphql", post(graphql))
        .fallback(|| async { not_found_json() })
        .method_not_allowed_fallback(|| async { gh_error(StatusCode::NOT_FOUND, "Not Found") })
        .layer(middleware::from_fn_with_state(world, auth))
}

/// Who the request is authenticated as (see the module docs).
#[derive(Debug, Clone)]
struct Identity {
    login: String,
    /// An App credential (a JWT or an installation token), not a user's token.
    app: bool,
    /// The App's JWT (not an installation token).
    jwt: bool,
}

/// The prefix of a token acting as the user named after it (`user:mallory`).
const USER_TOKEN_PREFIX: &str = "user:";

/// The prefix of a token acting as GitHub Actions' `GITHUB_TOKEN` (an installation
/// token of the `github-actions` App).
const ACTIONS_TOKEN_PREFIX: &str = "ghs_actions";

/// The bot GitHub Actions' `GITHUB_TOKEN` writes as.
const ACTIONS_LOGIN: &str = "github-actions[bot]";

/// The user `NAME` of a `user:NAME` token, when it is one (a valid login).
fn user_token(t: &str) -> Option<&str> {
    let name = t.strip_prefix(USER_TOKEN_PREFIX)?;
    let ok = !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_[]".contains(c));
    ok.then_some(name)
}

fn app_login(w: &World) -> String {
    format!("{}[bot]", w.config().github_app_slug)
}

fn is_jwt(t: &str) -> bool {
    let parts: Vec<&str> = t.split('.').collect();
    parts.len() == 3 && parts.iter().all(|p| !p.is_empty())
}

async fn auth(State(w): State<Arc<World>>, mut req: Request, next: Next) -> Response {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            (scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token"))
                .then(|| rest.trim().to_string())
        })
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        return gh_error(StatusCode::UNAUTHORIZED, "Requires authentication");
    };
    // Inside `nest("/github")` the path has lost its prefix.
    let path = req.uri().path().to_string();
    let path = path.strip_prefix("/github").unwrap_or(&path);
    let app_path = path.starts_with("/app/") || path == "/app";
    if app_path && !is_jwt(&token) {
        return gh_error(
            StatusCode::UNAUTHORIZED,
            "A JSON web token could not be decoded",
        );
    }
    let identity = if is_jwt(&token) {
        Identity {
            login: app_login(&w),
            app: true,
            jwt: true,
        }
    } else if let Some(name) = user_token(&token) {
        Identity {
            login: name.to_string(),
            app: false,
            jwt: false,
        }
    } else if token.starts_with(ACTIONS_TOKEN_PREFIX) {
        Identity {
            login: ACTIONS_LOGIN.to_string(),
            app: true,
            jwt: false,
        }
    } else {
        let known = lock(&w.gh).tokens.get(&token).cloned();
        match known {
            Some(t) if t.revoked || t.expires_at <= Utc::now() => {
                return gh_error(StatusCode::UNAUTHORIZED, "Bad credentials");
            }
            Some(_) => Identity {
                login: app_login(&w),
                app: true,
                jwt: false,
            },
            None => {
                if let Some(expected) = &w.config().github_token
                    && *expected != token
                {
                    return gh_error(StatusCode::UNAUTHORIZED, "Bad credentials");
                }
                Identity {
                    login: w.config().github_bot_login.clone(),
                    app: false,
                    jwt: false,
                }
            }
        }
    };
    req.extensions_mut().insert(identity);
    let (taken, limit) = {
        let mut gh = lock(&w.gh);
        (gh.quota.take(Utc::now()), gh.quota.limit)
    };
    let (mut resp, remaining, used, reset) = match taken {
        Ok((remaining, used, reset)) => (next.run(req).await, remaining, used, reset),
        Err(reset) => (
            gh_json(
                StatusCode::FORBIDDEN,
                &json!({
                    "message": "API rate limit exceeded for installation. If you reach out to GitHub Support for help, please include the request ID.",
                    "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api",
                    "status": "403",
                }),
            ),
            0,
            limit,
            reset,
        ),
    };
    let h = resp.headers_mut();
    h.insert("x-ratelimit-limit", HeaderValue::from(limit));
    h.insert("x-ratelimit-remaining", HeaderValue::from(remaining));
    h.insert("x-ratelimit-used", HeaderValue::from(used));
    h.insert("x-ratelimit-reset", HeaderValue::from(reset));
    h.insert("x-ratelimit-resource", HeaderValue::from_static("core"));
    h.insert(
        "x-github-api-version-selected",
        HeaderValue::from_static("2022-11-28"),
    );
    if !h.contains_key("x-github-request-id")
        && let Ok(v) = HeaderValue::from_str(&request_id())
    {
        h.insert("x-github-request-id", v);
    }
    resp
}

fn identity(req_ext: Option<&Identity>, w: &World) -> String {
    req_ext
        .map(|i| i.login.clone())
        .unwrap_or_else(|| w.config().github_bot_login.clone())
}

/// `http://host/github`, from the request, for `url` fields and `Link` headers.
fn api_base(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    format!("http://{host}/github")
}

fn user_id(login: &str) -> u64 {
    // Stable, positive ids per login.
    let mut h: u64 = 1469598103934665603;
    for b in login.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(1099511628211);
    }
    1_000 + (h % 90_000_000)
}

fn user_json(login: &str, kind: &str) -> Value {
    let id = user_id(login);
    let api = format!("https://api.github.com/users/{login}");
    json!({
        "login": login,
        "id": id,
        "node_id": format!("MDQ6VXNlcj{id}"),
        "avatar_url": format!("https://avatars.githubusercontent.com/u/{id}?v=4"),
        "gravatar_id": "",
        "url": api,
        "html_url": format!("https://github.com/{login}"),
        "followers_url": format!("{api}/followers"),
        "following_url": format!("{api}/following{{/other_user}}"),
        "gists_url": format!("{api}/gists{{/gist_id}}"),
        "starred_url": format!("{api}/starred{{/owner}}{{/repo}}"),
        "subscriptions_url": format!("{api}/subscriptions"),
        "organizations_url": format!("{api}/orgs"),
        "repos_url": format!("{api}/repos"),
        "events_url": format!("{api}/events{{/privacy}}"),
        "received_events_url": format!("{api}/received_events"),
        "type": kind,
        "user_view_type": "public",
        "site_admin": false,
    })
}

fn login_kind(login: &str) -> &'static str {
    if login.ends_with("[bot]") {
        "Bot"
    } else {
        "User"
    }
}

fn repo_json(base: &str, repo: &str) -> Value {
    let (owner, name) = repo.split_once('/').unwrap_or((repo, repo));
    let id = user_id(repo);
    let url = format!("{base}/repos/{repo}");
    json!({
        "id": id,
        "node_id": format!("R_kgDO{id}"),
        "name": name,
        "full_name": repo,
        "owner": user_json(owner, "Organization"),
        "private": false,
        "html_url": format!("https://github.com/{repo}"),
        "description": null,
        "fork": false,
        "url": url,
        "pulls_url": format!("{url}/pulls{{/number}}"),
        "statuses_url": format!("{url}/statuses/{{sha}}"),
        "comments_url": format!("{url}/comments{{/number}}"),
        "issues_url": format!("{url}/issues{{/number}}"),
        "default_branch": "main",
        "visibility": "public",
        "archived": false,
        "disabled": false,
    })
}

fn fake_sha(seed: &str) -> String {
    let mut out = String::with_capacity(40);
    let mut h = user_id(seed);
    while out.len() < 40 {
        h = h
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        out.push_str(&format!("{:016x}", h));
    }
    out.truncate(40);
    out
}

fn pr_json(base: &str, p: &PrRec) -> Value {
    let repo_url = format!("{base}/repos/{}", p.repo);
    let html = format!("https://github.com/{}/pull/{}", p.repo, p.number);
    let owner = p.repo.split('/').next().unwrap_or("");
    let head_owner = p.head_repo.split('/').next().unwrap_or("");
    let mut head_repo = repo_json(base, &p.head_repo);
    let mut head_user = user_json(head_owner, "Organization");
    if p.head_repo != p.repo {
        head_repo["fork"] = Value::Bool(true);
        head_repo["owner"] = user_json(head_owner, "User");
        head_user = user_json(head_owner, "User");
    }
    json!({
        "url": format!("{repo_url}/pulls/{}", p.number),
        "id": p.id,
        "node_id": format!("PR_kwDO{}", p.id),
        "html_url": html,
        "diff_url": format!("{html}.diff"),
        "patch_url": format!("{html}.patch"),
        "issue_url": format!("{repo_url}/issues/{}", p.number),
        "commits_url": format!("{repo_url}/pulls/{}/commits", p.number),
        "review_comments_url": format!("{repo_url}/pulls/{}/comments", p.number),
        "review_comment_url": format!("{repo_url}/pulls/comments{{/number}}"),
        "comments_url": format!("{repo_url}/issues/{}/comments", p.number),
        "statuses_url": format!("{repo_url}/statuses/{}", p.head_sha),
        "number": p.number,
        "state": if p.state_open { "open" } else { "closed" },
        "locked": false,
        "title": p.title,
        "user": user_json(&p.author, login_kind(&p.author)),
        "body": null,
        "labels": [],
        "milestone": null,
        "active_lock_reason": null,
        "created_at": p.created_at,
        "updated_at": p.updated_at,
        "closed_at": p.closed_at,
        "merged_at": if p.merged { p.closed_at } else { None },
        "merge_commit_sha": if p.merged { Some(fake_sha(&format!("{}#{}", p.repo, p.number))) } else { None },
        "assignee": null,
        "assignees": [],
        "requested_reviewers": [],
        "requested_teams": [],
        "draft": p.draft,
        "head": {
            "label": format!("{head_owner}:{}", p.head_ref),
            "ref": p.head_ref,
            "sha": p.head_sha,
            "user": head_user,
            "repo": head_repo,
        },
        "base": {
            "label": format!("{owner}:{}", p.base_ref),
            "ref": p.base_ref,
            "sha": fake_sha(&format!("{}:{}", p.repo, p.base_ref)),
            "user": user_json(owner, "Organization"),
            "repo": repo_json(base, &p.repo),
        },
        "author_association": "MEMBER",
        "auto_merge": null,
        "merged": p.merged,
        "mergeable": null,
        "comments": 0,
        "commits": p.commits.len(),
    })
}

fn comment_json(base: &str, c: &CommentRec) -> Value {
    json!({
        "url": format!("{base}/repos/{}/issues/comments/{}", c.repo, c.id),
        "html_url": format!("https://github.com/{}/pull/{}#issuecomment-{}", c.repo, c.issue, c.id),
        "issue_url": format!("{base}/repos/{}/issues/{}", c.repo, c.issue),
        "id": c.id,
        "node_id": format!("IC_kwDO{}", c.id),
        "user": user_json(&c.user, login_kind(&c.user)),
        "created_at": c.created_at,
        "updated_at": c.updated_at,
        "author_association": "NONE",
        "body": c.body,
        "performed_via_github_app": null,
    })
}

fn status_json(base: &str, s: &StatusRec) -> Value {
    json!({
        "url": format!("{base}/repos/{}/statuses/{}", s.repo, s.sha),
        "avatar_url": "https://avatars.githubusercontent.com/u/9919?v=4",
        "id": s.id,
        "node_id": format!("SC_kwDO{}", s.id),
        "state": s.state,
        "description": s.description,
        "target_url": s.target_url,
        "context": s.context,
        "created_at": s.created_at,
        "updated_at": s.created_at,
        "creator": user_json(&s.user, login_kind(&s.user)),
    })
}

/// The simulated App's id.
const APP_ID: u64 = 424242;

fn installation_json(base: &str, owner: &str, id: u64, slug: &str) -> Value {
    json!({
        "id": id,
        "account": user_json(owner, "Organization"),
        "access_tokens_url": format!("{base}/app/installations/{id}/access_tokens"),
        "repositories_url": format!("{base}/installation/repositories"),
        "html_url": format!("https://github.com/organizations/{owner}/settings/installations/{id}"),
        "app_id": APP_ID,
        "app_slug": slug,
        "target_id": user_id(owner),
        "target_type": "Organization",
        "permissions": permissions(),
        "events": ["pull_request", "push", "workflow_run"],
        "created_at": "2025-01-01T00:00:00Z",
        "updated_at": "2025-01-01T00:00:00Z",
        "single_file_name": null,
        "repository_selection": "all",
    })
}

fn permissions() -> Value {
    json!({"metadata": "read", "issues": "write", "pull_requests": "write", "statuses": "write", "actions": "read"})
}

fn repo_of(owner: &str, repo: &str) -> Option<String> {
    let r = format!("{owner}/{repo}");
    valid_repo(&r).then_some(r)
}

/// `page`/`per_page` of a list request, and the params to rebuild `Link` URLs.
struct Paging {
    page: usize,
    per_page: usize,
    params: Vec<(String, String)>,
}

fn paging(raw: &Option<String>) -> Paging {
    let params: Vec<(String, String)> = raw
        .as_deref()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default();
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let per_page = get("per_page")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(30)
        .clamp(1, 100);
    let page = get("page")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    Paging {
        page,
        per_page,
        params,
    }
}

fn param<'a>(p: &'a Paging, k: &str) -> Option<&'a str> {
    p.params
        .iter()
        .find(|(n, _)| n == k)
        .map(|(_, v)| v.as_str())
}

/// Answers one page of `items` with GitHub's `Link` header.
fn paged(base: &str, path: &str, p: &Paging, items: Vec<Value>) -> Response {
    let (start, end) = page_bounds(p, items.len());
    let page: Vec<Value> = items[start..end].to_vec();
    let mut resp = gh_json(StatusCode::OK, &Value::Array(page));
    if let Some(v) = link_header(base, path, p, items.len()) {
        resp.headers_mut().insert(header::LINK, v);
    }
    resp
}

/// The range of the items of page `p` among `total`.
fn page_bounds(p: &Paging, total: usize) -> (usize, usize) {
    let start = (p.page - 1).saturating_mul(p.per_page).min(total);
    (start, (start + p.per_page).min(total))
}

/// GitHub's `Link` header for page `p` of `total` items at `path`; `None` for a single
/// page.
fn link_header(base: &str, path: &str, p: &Paging, total: usize) -> Option<HeaderValue> {
    let last = total.div_ceil(p.per_page).max(1);
    let link_to = |n: usize| {
        let mut ser = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in &p.params {
            if k != "page" && k != "per_page" {
                ser.append_pair(k, v);
            }
        }
        ser.append_pair("per_page", &p.per_page.to_string());
        ser.append_pair("page", &n.to_string());
        format!("<{base}{path}?{}>", ser.finish())
    };
    let mut links = Vec::new();
    if p.page < last {
        links.push(format!("{}; rel=\"next\"", link_to(p.page + 1)));
        links.push(format!("{}; rel=\"last\"", link_to(last)));
    }
    if p.page > 1 {
        links.push(format!("{}; rel=\"first\"", link_to(1)));
        links.push(format!("{}; rel=\"prev\"", link_to((p.page - 1).min(last))));
    }
    if links.is_empty() {
        return None;
    }
    HeaderValue::from_str(&links.join(", ")).ok()
}

fn parse_body(body: &Bytes) -> Result<serde_json::Map<String, Value>, Response> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(gh_error(StatusCode::BAD_REQUEST, "Problems parsing JSON")),
    }
}

fn resolve_ref(gh: &GithubState, repo: &str, r: &str) -> String {
    // A branch name resolves to the head of an open PR with that head; else it is a sha.
    gh.prs
        .values()
        .find(|p| p.repo == repo && p.head_ref == r && p.state_open)
        .map(|p| p.head_sha.clone())
        .unwrap_or_else(|| r.to_string())
}

async fn commits_get(
    State(w): State<Arc<World>>,
    Path((owner, repo, rest)): Path<(String, String, String)>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let Some(repo) = repo_of(&owner, &repo) else {
        return not_found_json();
    };
    let repo = lock(&w.gh).canonical(&repo);
    let (r, what) = if let Some(r) = rest.strip_suffix("/pulls") {
        (r, "pulls")
    } else if let Some(r) = rest.strip_suffix("/statuses") {
        (r, "statuses")
    } else if let Some(r) = rest.strip_suffix("/status") {
        (r, "status")
    } else {
        return not_found_json();
    };
    let r = r
        .strip_prefix("heads/")
        .or_else(|| r.strip_prefix("tags/"))
        .unwrap_or(r)
        .to_string();
    if r.is_empty() {
        return not_found_json();
    }
    let base = api_base(&headers);
    match what {
        "pulls" => commit_pulls(&w, &repo, &r, &raw, &base),
        "statuses" => list_statuses(&w, &repo, &r, &raw, &base),
        _ => combined_status(&w, &repo, &r, &raw, &base),
    }
}

/// Whether GitHub would know commit `r` of `repo`: a head (current or former), base or
/// merge commit of one of its PRs, a sha with a status, a PR branch, or the commit of a
/// Currents run.
fn knows_commit(w: &World, repo: &str, r: &str) -> bool {
    let known_here = {
        let gh = lock(&w.gh);
        gh.prs.values().filter(|p| p.repo == repo).any(|p| {
            p.head_ref == r
                || p.base_ref == r
                || p.commits.iter().any(|c| sha_matches(c, r))
                || sha_matches(&fake_sha(&format!("{}:{}", p.repo, p.base_ref)), r)
                || (p.merged && sha_matches(&fake_sha(&format!("{}#{}", p.repo, p.number)), r))
        }) || gh
            .statuses
            .iter()
            .any(|s| s.repo == repo && sha_matches(&s.sha, r))
    };
    // The Currents state is read without holding the GitHub lock.
    known_here || w.knows_commit(r)
}

/// Documentation link of GitHub's answer to `commits/{sha}/pulls`.
const COMMIT_PULLS_DOCS: &str =
    "https://docs.github.com/rest/commits/commits#list-pull-requests-associated-with-a-commit";

fn commit_pulls(w: &World, repo: &str, sha: &str, raw: &Option<String>, base: &str) -> Response {
    if !knows_commit(w, repo, sha) {
        // What GitHub answers for a commit it has never seen.
        return gh_json(
            StatusCode::UNPROCESSABLE_ENTITY,
            &json!({
                "message": format!("No commit found for SHA: {sha}"),
                "documentation_url": COMMIT_PULLS_DOCS,
                "status": "422",
            }),
        );
    }
    let p = paging(raw);
    let items: Vec<Value> = {
        let gh = lock(&w.gh);
        let mut prs: Vec<&PrRec> = gh
            .prs
            .values()
            .filter(|p| p.repo == repo && p.commits.iter().any(|c| sha_matches(c, sha)))
            // GitHub: "Lists the merged pull request that introduced the commit to the
            // repository. If the commit is not present in the default branch, will only
            // return open pull requests." A closed PR is listed only when merged into
            // the default branch with a merge commit (after a squash or rebase merge its
            // own commits are not there; a PR closed unmerged never is).
            .filter(|p| p.state_open || (p.merged && p.merge_commit && p.base_ref == "main"))
            .collect();
        prs.sort_by_key(|p| std::cmp::Reverse(p.number));
        prs.into_iter().map(|p| pr_json(base, p)).collect()
    };
    paged(
        base,
        &format!("/repos/{repo}/commits/{sha}/pulls"),
        &p,
        items,
    )
}

async fn list_pulls(
    State(w): State<Arc<World>>,
    Path((owner, repo)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let Some(repo) = repo_of(&owner, &repo) else {
        return not_found_json();
    };
    let base = api_base(&headers);
    let p = paging(&raw);
    let state = param(&p, "state").unwrap_or("open").to_string();
    if !matches!(state.as_str(), "open" | "closed" | "all") {
        return validation_failed("PullRequest", "state", "state must be open, closed or all");
    }
    let head = param(&p, "head").map(str::to_string);
    let base_ref = param(&p, "base").map(str::to_string);
    let asc = param(&p, "direction") == Some("asc");
    let items: Vec<Value> = {
        let gh = lock(&w.gh);
        let repo = gh.canonical(&repo);
        let mut prs: Vec<&PrRec> = gh
            .prs
            .values()
            .filter(|p| p.repo == repo)
            .filter(|p| match state.as_str() {
                "open" => p.state_open,
                "closed" => !p.state_open,
                _ => true,
            })
            .filter(|pr| match &head {
                None => true,
                Some(h) => {
                    // GitHub: `user:ref-name`, the user being the head repository's owner
                    // (any case, as GitHub compares logins; branch names are exact).
                    let owner = pr.head_repo.split('/').next().unwrap_or("");
                    match h.split_once(':') {
                        Some((o, r)) => o.eq_ignore_ascii_case(owner) && r == pr.head_ref,
                        None => *h == pr.head_ref,
                    }
                }
            })
            .filter(|pr| base_ref.as_ref().is_none_or(|b| *b == pr.base_ref))
            .collect();
        prs.sort_by(|a, b| {
            let o = a
                .created_at
                .cmp(&b.created_at)
                .then(a.number.cmp(&b.number));
            if asc { o } else { o.reverse() }
        });
        prs.into_iter().map(|p| pr_json(&base, p)).collect()
    };
    paged(&base, &format!("/repos/{repo}/pulls"), &p, items)
}

async fn get_pull(
    State(w): State<Arc<World>>,
    Path((owner, repo, number)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let (Some(repo), Ok(n)) = (repo_of(&owner, &repo), number.parse::<u64>()) else {
        return not_found_json();
    };
    let base = api_base(&headers);
    let gh = lock(&w.gh);
    let repo = gh.canonical(&repo);
    match gh.prs.get(&(repo, n)) {
        Some(p) => gh_json(StatusCode::OK, &pr_json(&base, p)),
        None => not_found_json(),
    }
}

async fn list_comments(
    State(w): State<Arc<World>>,
    Path((owner, repo, number)): Path<(String, String, String)>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let (Some(repo), Ok(n)) = (repo_of(&owner, &repo), number.parse::<u64>()) else {
        return not_found_json();
    };
    let base = api_base(&headers);
    let p = paging(&raw);
    let since = param(&p, "since").and_then(|s| DateTime::parse_from_rfc3339(s).ok());
    let items: Vec<Value> = {
        let gh = lock(&w.gh);
        let repo = gh.canonical(&repo);
        if !gh.prs.contains_key(&(repo.clone(), n)) {
            return not_found_json();
        }
        gh.comments
            .values()
            .filter(|c| c.repo == repo && c.issue == n)
            .filter(|c| since.is_none_or(|s| c.updated_at >= s))
            .map(|c| comment_json(&base, c))
            .collect()
    };
    paged(
        &base,
        &format!("/repos/{repo}/issues/{n}/comments"),
        &p,
        items,
    )
}

/// The `body` of a comment's JSON request, or GitHub's answer to a request without one.
fn comment_body(body: &Bytes) -> Result<String, Response> {
    let m = parse_body(body)?;
    match m.get("body") {
        Some(Value::String(s)) if s.chars().count() > MAX_COMMENT_BODY => Err(validation_failed(
            "IssueComment",
            "body",
            "Body is too long (maximum is 65536 characters)",
        )),
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        _ => Err(validation_failed(
            "IssueComment",
            "body",
            "body wasn't supplied.",
        )),
    }
}

async fn create_comment(
    State(w): State<Arc<World>>,
    Path((owner, repo, number)): Path<(String, String, String)>,
    headers: HeaderMap,
    req: Request,
) -> Response {
    let who = identity(req.extensions().get::<Identity>(), &w);
    let call = method_and_path(&req);
    let body = match axum::body::to_bytes(req.into_body(), 30 * 1024 * 1024).await {
        Ok(b) => b,
        Err(_) => return gh_error(StatusCode::PAYLOAD_TOO_LARGE, "Payload too large"),
    };
    let (Some(repo), Ok(n)) = (repo_of(&owner, &repo), number.parse::<u64>()) else {
        return not_found_json();
    };
    let text = match comment_body(&body) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let base = api_base(&headers);
    let mut gh = lock(&w.gh);
    let repo = gh.canonical(&repo);
    if !gh.prs.contains_key(&(repo.clone(), n)) {
        return not_found_json();
    }
    if let Err(r) = admit_content(&mut gh, &who, call) {
        return r;
    }
    let now = Utc::now();
    let id = gh.id();
    let c = CommentRec {
        id,
        repo,
        issue: n,
        body: text,
        user: who,
        created_at: now,
        updated_at: now,
        edits: 0,
    };
    let v = comment_json(&base, &c);
    gh.comments.insert(id, c);
    let mut r = gh_json(StatusCode::CREATED, &v);
    if let Some(Ok(loc)) = v["url"].as_str().map(HeaderValue::from_str) {
        r.headers_mut().insert(header::LOCATION, loc);
    }
    r
}

fn comment_key(owner: &str, repo: &str, id: &str) -> Option<(String, u64)> {
    Some((repo_of(owner, repo)?, id.parse().ok()?))
}

async fn get_comment(
    State(w): State<Arc<World>>,
    Path((owner, repo, id)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let Some((repo, id)) = comment_key(&owner, &repo, &id) else {
        return not_found_json();
    };
    let base = api_base(&headers);
    let gh = lock(&w.gh);
    match gh
        .comments
        .get(&id)
        .filter(|c| c.repo.eq_ignore_ascii_case(&repo))
    {
        Some(c) => gh_json(StatusCode::OK, &comment_json(&base, c)),
        None => not_found_json(),
    }
}

/// `PATCH` (or octocrab's `POST`) of a comment: an edit, counted as content creation
/// (see [`ContentLimiter`]).
async fn update_comment(
    State(w): State<Arc<World>>,
    Path((owner, repo, id)): Path<(String, String, String)>,
    headers: HeaderMap,
    req: Request,
) -> Response {
    let who = identity(req.extensions().get::<Identity>(), &w);
    let call = method_and_path(&req);
    let Ok(body) = axum::body::to_bytes(req.into_body(), 30 * 1024 * 1024).await else {
        return gh_error(StatusCode::PAYLOAD_TOO_LARGE, "Payload too large");
    };
    let Some((repo, id)) = comment_key(&owner, &repo, &id) else {
        return not_found_json();
    };
    let text = match comment_body(&body) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let base = api_base(&headers);
    let mut gh = lock(&w.gh);
    if !gh
        .comments
        .get(&id)
        .is_some_and(|c| c.repo.eq_ignore_ascii_case(&repo))
    {
        return not_found_json();
    }
    if let Err(r) = admit_content(&mut gh, &who, call) {
        return r;
    }
    match gh.comments.get_mut(&id) {
        Some(c) => {
            c.body = text;
            c.updated_at = Utc::now().max(c.updated_at);
            c.edits += 1;
            gh_json(StatusCode::OK, &comment_json(&base, c))
        }
        None => not_found_json(),
    }
}

async fn delete_comment(
    State(w): State<Arc<World>>,
    Path((owner, repo, id)): Path<(String, String, String)>,
) -> Response {
    let Some((repo, id)) = comment_key(&owner, &repo, &id) else {
        return not_found_json();
    };
    let mut gh = lock(&w.gh);
    if gh
        .comments
        .get(&id)
        .is_some_and(|c| c.repo.eq_ignore_ascii_case(&repo))
    {
        gh.comments.remove(&id);
        StatusCode::NO_CONTENT.into_response()
    } else {
        not_found_json()
    }
}

async fn create_status(
    State(w): State<Arc<World>>,
    Path((owner, repo, sha)): Path<(String, String, String)>,
    headers: HeaderMap,
    req: Request,
) -> Response {
    let who = identity(req.extensions().get::<Identity>(), &w);
    let call = method_and_path(&req);
    let Ok(body) = axum::body::to_bytes(req.into_body(), 1024 * 1024).await else {
        return gh_error(StatusCode::PAYLOAD_TOO_LARGE, "Payload too large");
    };
    let Some(repo) = repo_of(&owner, &repo) else {
        return not_found_json();
    };
    let m = match parse_body(&body) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let state = m.get("state").and_then(Value::as_str).unwrap_or("");
    if !matches!(state, "error" | "failure" | "pending" | "success") {
        return validation_failed(
            "Status",
            "state",
            "state is not included in the list (error, failure, pending, success)",
        );
    }
    let description = m
        .get("description")
        .and_then(Value::as_str)
        .map(str::to_string);
    if description
        .as_ref()
        .is_some_and(|d| d.chars().count() > MAX_STATUS_DESCRIPTION)
    {
        return validation_failed(
            "Status",
            "description",
            "description is too long (maximum is 140 characters)",
        );
    }
    let target_url = m
        .get("target_url")
        .and_then(Value::as_str)
        .map(str::to_string);
    let context = m
        .get("context")
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty())
        .unwrap_or("default")
        .to_string();
    if sha.len() < 7 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return validation_failed("Status", "sha", &format!("No commit found for SHA: {sha}"));
    }
    let base = api_base(&headers);
    let mut gh = lock(&w.gh);
    let repo = gh.canonical(&repo);
    let count_key = (repo.clone(), sha.to_ascii_lowercase(), context.clone());
    if gh.status_counts.get(&count_key).copied().unwrap_or(0) >= MAX_STATUSES_PER_CONTEXT {
        // GitHub's answer (screwdriver-cd/screwdriver#387): no `field`.
        return gh_json(
            StatusCode::UNPROCESSABLE_ENTITY,
            &json!({
                "message": "Validation Failed",
                "errors": [{
                    "resource": "Status",
                    "code": "custom",
                    "message": "This SHA and context has reached the maximum number of statuses.",
                }],
                "documentation_url": DOCS,
                "status": "422",
            }),
        );
    }
    if let Err(r) = admit_content(&mut gh, &who, call) {
        return r;
    }
    gh.register_repo(&repo);
    *gh.status_counts.entry(count_key).or_default() += 1;
    let id = gh.id();
    let s = StatusRec {
        id,
        repo,
        sha,
        state: state.to_string(),
        context,
        description,
        target_url,
        user: who,
        created_at: Utc::now(),
    };
    let v = status_json(&base, &s);
    gh.statuses.push(s);
    gh_json(StatusCode::CREATED, &v)
}

fn list_statuses(w: &World, repo: &str, r: &str, raw: &Option<String>, base: &str) -> Response {
    let p = paging(raw);
    let items: Vec<Value> = {
        let gh = lock(&w.gh);
        let sha = resolve_ref(&gh, repo, r);
        gh.statuses
            .iter()
            .rev()
            .filter(|s| s.repo == repo && s.sha == sha)
            .map(|s| status_json(base, s))
            .collect()
    };
    paged(
        base,
        &format!("/repos/{repo}/commits/{r}/statuses"),
        &p,
        items,
    )
}

/// `GET /repos/{o}/{r}/commits/{ref}/status`: the combined status, the latest status of
/// each context (ordered by context), paginated like GitHub (`per_page`, default 30,
/// max 100; `Link` header); `state` and `total_count` are over every context.
fn combined_status(w: &World, repo: &str, r: &str, raw: &Option<String>, base: &str) -> Response {
    let p = paging(raw);
    let gh = lock(&w.gh);
    let sha = resolve_ref(&gh, repo, r);
    // The latest status per context.
    let mut latest: BTreeMap<&str, &StatusRec> = BTreeMap::new();
    for s in gh
        .statuses
        .iter()
        .filter(|s| s.repo == repo && s.sha == sha)
    {
        latest.insert(s.context.as_str(), s);
    }
    let states: Vec<&str> = latest.values().map(|s| s.state.as_str()).collect();
    let state = if states.iter().any(|s| *s == "failure" || *s == "error") {
        "failure"
    } else if states.is_empty() || states.contains(&"pending") {
        "pending"
    } else {
        "success"
    };
    let total = latest.len();
    let (start, end) = page_bounds(&p, total);
    let page: Vec<Value> = latest
        .values()
        .skip(start)
        .take(end - start)
        .map(|s| status_json(base, s))
        .collect();
    let mut resp = gh_json(
        StatusCode::OK,
        &json!({
            "state": state,
            "statuses": page,
            "sha": sha,
            "total_count": total,
            "repository": repo_json(base, repo),
            "commit_url": format!("{base}/repos/{repo}/commits/{sha}"),
            "url": format!("{base}/repos/{repo}/commits/{sha}/status"),
        }),
    );
    let path = format!("/repos/{repo}/commits/{r}/status");
    if let Some(l) = link_header(base, &path, &p, total) {
        resp.headers_mut().insert(header::LINK, l);
    }
    resp
}

async fn repo_installation(
    State(w): State<Arc<World>>,
    Path((owner, repo)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let Some(repo) = repo_of(&owner, &repo) else {
        return not_found_json();
    };
    let base = api_base(&headers);
    let mut gh = lock(&w.gh);
    let repo = gh.canonical(&repo);
    let owner = repo.split('/').next().unwrap_or(&owner).to_string();
    let id = gh.installation(&owner);
    drop(gh);
    let slug = w.config().github_app_slug.clone();
    gh_json(StatusCode::OK, &installation_json(&base, &owner, id, &slug))
}

async fn list_installations(State(w): State<Arc<World>>, headers: HeaderMap) -> Response {
    let base = api_base(&headers);
    let mut gh = lock(&w.gh);
    if gh.installations.is_empty() {
        // Every owner that has pull requests has the app installed.
        let owners: Vec<String> = gh
            .prs
            .keys()
            .filter_map(|(r, _)| r.split('/').next().map(str::to_string))
            .collect();
        for o in owners {
            gh.installation(&o);
        }
    }
    let list: Vec<Value> = gh
        .installations
        .iter()
        .map(|(o, id)| installation_json(&base, o, *id, &w.config().github_app_slug))
        .collect();
    gh_json(StatusCode::OK, &Value::Array(list))
}

async fn create_token(State(w): State<Arc<World>>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<u64>() else {
        return not_found_json();
    };
    let mut gh = lock(&w.gh);
    if !gh.installations.values().any(|i| *i == id) {
        return not_found_json();
    }
    let token = format!("ghs_{}", ids::random_alnum(&mut rand::thread_rng(), 36));
    let expires_at = Utc::now() + ChronoDuration::hours(1);
    gh.tokens.insert(
        token.clone(),
        TokenRec {
            installation: id,
            expires_at,
            revoked: false,
        },
    );
    gh_json(
        StatusCode::CREATED,
        &json!({
            "token": token,
            "expires_at": expires_at.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            "permissions": permissions(),
            "repository_selection": "all",
        }),
    )
}

/// `GET /user`: the token's user. An App credential is no user: 403, as on GitHub.
async fn get_user(State(w): State<Arc<World>>, req: Request) -> Response {
    let me = req.extensions().get::<Identity>().cloned();
    match me {
        Some(Identity { app: true, .. }) => gh_error(
            StatusCode::FORBIDDEN,
            "Resource not accessible by integration",
        ),
        other => {
            let login = identity(other.as_ref(), &w);
            let mut u = user_json(&login, login_kind(&login));
            u["name"] = Value::Null;
            u["created_at"] = json!("2025-01-01T00:00:00Z");
            u["updated_at"] = json!("2025-01-01T00:00:00Z");
            gh_json(StatusCode::OK, &u)
        }
    }
}

/// `POST /graphql`: the `viewer { login }` query (what runwarden asks when `GET /user`
/// is refused to an installation token); any other query is answered with GitHub's
/// error shape. A JWT cannot use GraphQL.
async fn graphql(State(w): State<Arc<World>>, req: Request) -> Response {
    let me = req.extensions().get::<Identity>().cloned();
    let body = match axum::body::to_bytes(req.into_body(), 64 * 1024).await {
        Ok(b) => b,
        Err(_) => return gh_error(StatusCode::BAD_REQUEST, "Problems parsing JSON"),
    };
    let query = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("query").and_then(Value::as_str).map(str::to_string));
    let Some(query) = query else {
        return gh_error(StatusCode::BAD_REQUEST, "Problems parsing JSON");
    };
    let asks_viewer_login = {
        let q: String = query.chars().filter(|c| !c.is_whitespace()).collect();
        q.contains("viewer{login}")
    };
    if !asks_viewer_login {
        return gh_json(
            StatusCode::OK,
            &json!({"errors": [{"message": "the simulator answers only `viewer { login }`"}]}),
        );
    }
    match me {
        Some(Identity { jwt: true, .. }) => gh_error(
            StatusCode::FORBIDDEN,
            "A JSON web token cannot be used for GraphQL",
        ),
        other => {
            let login = identity(other.as_ref(), &w);
            gh_json(
                StatusCode::OK,
                &json!({"data": {"viewer": {"login": login}}}),
            )
        }
    }
}

/// `GET /app` (JWT only, checked by `auth`): the App, its `slug` being
/// `SimConfig::github_app_slug`.
async fn get_app(State(w): State<Arc<World>>) -> Response {
    let slug = w.config().github_app_slug.clone();
    gh_json(
        StatusCode::OK,
        &json!({
            "id": APP_ID,
            "slug": slug,
            "node_id": format!("A_kwDO{APP_ID}"),
            "client_id": "Iv1.0123456789abcdef",
            "owner": user_json("acme", "Organization"),
            "name": slug,
            "description": "",
            "external_url": "https://github.com",
            "html_url": format!("https://github.com/apps/{slug}"),
            "created_at": "2025-01-01T00:00:00Z",
            "updated_at": "2025-01-01T00:00:00Z",
            "permissions": permissions(),
            "events": ["pull_request", "push", "workflow_run"],
            "installations_count": lock(&w.gh).installations.len(),
        }),
    )
}

async fn rate_limit() -> Response {
    let reset = Utc::now().timestamp() + 3600;
    let core = json!({"limit": 5000, "used": 1, "remaining": 4999, "reset": reset});
    gh_json(
        StatusCode::OK,
        &json!({"resources": {"core": core, "search": {"limit": 30, "used": 0, "remaining": 30, "reset": reset}}, "rate": core}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: DateTime<Utc>, ms: i64) -> DateTime<Utc> {
        t0 + ChronoDuration::milliseconds(ms)
    }

    /// GitHub's secondary limit on content creation: 80 within any 60 s, per account, the
    /// window sliding; `retry-after` is the time until it has room again.
    #[test]
    fn content_creation_is_limited_to_80_within_any_minute_per_account() {
        let t0 = Utc::now();
        let mut l = ContentLimiter::default();
        for i in 0..80 {
            assert_eq!(
                l.admit("runwarden[bot]", at(t0, i * 100)),
                Ok(()),
                "request {i}"
            );
        }
        // The 81st, 8 s after the first: the first leaves the window at 60 s.
        assert_eq!(l.admit("runwarden[bot]", at(t0, 8_000)), Err(52));
        // A refusal is not counted: still 52 s (rounded up) half a second later.
        assert_eq!(l.admit("runwarden[bot]", at(t0, 8_500)), Err(52));
        // Another account has its own window.
        assert_eq!(l.admit("mallory", at(t0, 8_500)), Ok(()));
        // Just before the first leaves the window: 1 s at least; then room for one.
        assert_eq!(l.admit("runwarden[bot]", at(t0, 59_999)), Err(1));
        assert_eq!(l.admit("runwarden[bot]", at(t0, 60_000)), Ok(()));
        // The second left at 60.1 s: room for exactly one more then.
        assert_eq!(l.admit("runwarden[bot]", at(t0, 60_050)), Err(1));
        assert_eq!(l.admit("runwarden[bot]", at(t0, 60_100)), Ok(()));
        assert_eq!(l.admit("runwarden[bot]", at(t0, 60_100)), Err(1));
    }

    /// And 500 within any hour: one a second passes the minute's limit, and the 501st is
    /// told to wait until the first is an hour old.
    #[test]
    fn content_creation_is_limited_to_500_within_any_hour() {
        let t0 = Utc::now();
        let mut l = ContentLimiter::default();
        for i in 0..500 {
            assert_eq!(l.admit("bot", at(t0, i * 1000)), Ok(()), "request {i}");
        }
        assert_eq!(l.admit("bot", at(t0, 500_000)), Err(3100));
        assert_eq!(l.admit("bot", at(t0, 3_599_500)), Err(1));
        assert_eq!(l.admit("bot", at(t0, 3_600_000)), Ok(()));
        assert_eq!(l.admit("bot", at(t0, 3_600_000)), Err(1));
        // Only the last hour is remembered.
        assert_eq!(l.made["bot"].len(), 500);
    }

    #[test]
    fn content_limits_can_be_changed_or_turned_off() {
        let t0 = Utc::now();
        let mut l = ContentLimiter {
            limits: Some(ContentLimits {
                per_minute: 2,
                per_hour: 3,
            }),
            ..ContentLimiter::default()
        };
        assert_eq!(l.admit("bot", t0), Ok(()));
        assert_eq!(l.admit("bot", at(t0, 1)), Ok(()));
        assert_eq!(l.admit("bot", at(t0, 2)), Err(60));
        assert_eq!(l.admit("bot", at(t0, 60_000)), Ok(()));
        assert_eq!(l.admit("bot", at(t0, 120_000)), Err(3480));
        l.limits = None;
        for i in 0..1000 {
            assert_eq!(l.admit("bot", at(t0, 120_000 + i)), Ok(()));
        }
    }

    /// GitHub compares owner and repository names case-insensitively and answers with the
    /// repository's own spelling; so does the App installation of an owner.
    #[tokio::test]
    async fn repository_names_are_compared_case_insensitively() {
        let w = World::new(super::super::SimConfig::default());
        let pr = w
            .add_pr(NewPr {
                repo: "acme/web".into(),
                head_ref: Some("feat".into()),
                ..NewPr::default()
            })
            .unwrap();
        // The same PR, updated under another spelling; a new one gets the next number.
        let again = w
            .add_pr(NewPr {
                repo: "Acme/Web".into(),
                number: Some(pr.number),
                title: Some("renamed".into()),
                ..NewPr::default()
            })
            .unwrap();
        assert_eq!((again.repo.as_str(), again.id), ("acme/web", pr.id));
        let next = w
            .add_pr(NewPr {
                repo: "ACME/WEB".into(),
                head_ref: Some("other".into()),
                ..NewPr::default()
            })
            .unwrap();
        assert_eq!(
            (next.repo.as_str(), next.number),
            ("acme/web", pr.number + 1)
        );
        assert_eq!(w.prs().len(), 2);
        let mut gh = lock(&w.gh);
        assert_eq!(gh.canonical("ACME/web"), "acme/web");
        assert_eq!(
            gh.canonical("globex/api"),
            "globex/api",
            "unknown: as written"
        );
        let id = gh.installation("acme");
        assert_eq!(gh.installation("ACME"), id);
    }

    #[test]
    fn user_tokens_name_their_user() {
        assert_eq!(user_token("user:mallory"), Some("mallory"));
        assert_eq!(
            user_token("user:github-actions[bot]"),
            Some("github-actions[bot]")
        );
        for t in [
            "user:",
            "user:a b",
            "user:a/b",
            "mallory",
            "sim-token",
            "USER:x",
        ] {
            assert_eq!(user_token(t), None, "{t}");
        }
    }

    #[tokio::test]
    async fn fork_prs_say_their_head_repository() {
        let w = World::new(super::super::SimConfig::default());
        let pr = w
            .add_pr(NewPr {
                repo: "acme/web".into(),
                head_ref: Some("patch-1".into()),
                head_repo: Some("mallory/web".into()),
                ..NewPr::default()
            })
            .unwrap();
        assert_eq!(pr.head_repo, "mallory/web");
        let rec = lock(&w.gh).prs.values().next().cloned().unwrap();
        let v = pr_json("http://x/github", &rec);
        assert_eq!(v["head"]["label"], "mallory:patch-1");
        assert_eq!(v["head"]["repo"]["full_name"], "mallory/web");
        assert_eq!(v["head"]["repo"]["fork"], true);
        assert_eq!(v["base"]["repo"]["full_name"], "acme/web");
        let own = w
            .add_pr(NewPr {
                repo: "acme/web".into(),
                head_ref: Some("patch-1".into()),
                ..NewPr::default()
            })
            .unwrap();
        assert_eq!(own.head_repo, "acme/web");
        assert!(
            w.add_pr(NewPr {
                repo: "acme/web".into(),
                head_ref: Some("x".into()),
                head_repo: Some("not a repo".into()),
                ..NewPr::default()
            })
            .is_err()
        );
    }

    async fn json_of(r: Response) -> (StatusCode, Option<String>, Value) {
        let status = r.status();
        let link = r
            .headers()
            .get(header::LINK)
            .map(|v| v.to_str().unwrap().to_string());
        let body = axum::body::to_bytes(r.into_body(), usize::MAX)
            .await
            .unwrap();
        (
            status,
            link,
            serde_json::from_slice(&body).unwrap_or(Value::Null),
        )
    }

    #[tokio::test]
    async fn the_combined_status_has_the_latest_per_context_a_page_at_a_time() {
        let w = World::new(super::super::SimConfig::default());
        let sha = "89e6c98d92887913cadf06b2adb97f26cde4849b";
        {
            let mut gh = lock(&w.gh);
            for (context, state) in [
                ("b", "pending"),
                ("a", "success"),
                ("b", "failure"),
                ("c", "success"),
            ] {
                let id = gh.id();
                gh.statuses.push(StatusRec {
                    id,
                    repo: "acme/web".into(),
                    sha: sha.into(),
                    state: state.into(),
                    context: context.into(),
                    description: None,
                    target_url: None,
                    user: "ci".into(),
                    created_at: Utc::now(),
                });
            }
        }
        let base = "http://sim/github";
        let (st, link, v) = json_of(combined_status(
            &w,
            "acme/web",
            sha,
            &Some("per_page=2".into()),
            base,
        ))
        .await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(v["state"], "failure");
        assert_eq!(v["total_count"], 3);
        assert_eq!(v["sha"], sha);
        assert_eq!(
            v["url"],
            format!("{base}/repos/acme/web/commits/{sha}/status")
        );
        assert_eq!(v["repository"]["full_name"], "acme/web");
        let contexts: Vec<&str> = v["statuses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["context"].as_str().unwrap())
            .collect();
        assert_eq!(contexts, ["a", "b"]);
        assert_eq!(
            v["statuses"][1]["state"], "failure",
            "the latest of context b"
        );
        let link = link.unwrap();
        assert!(
            link.contains(&format!(
                "<{base}/repos/acme/web/commits/{sha}/status?per_page=2&page=2>; rel=\"next\""
            )),
            "{link}"
        );
        let (_, link, v) = json_of(combined_status(
            &w,
            "acme/web",
            sha,
            &Some("per_page=2&page=2".into()),
            base,
        ))
        .await;
        assert_eq!(v["statuses"].as_array().unwrap().len(), 1);
        assert_eq!(v["statuses"][0]["context"], "c");
        assert_eq!(v["total_count"], 3);
        assert!(!link.unwrap().contains("rel=\"next\""));
        // A commit without statuses: pending, none listed, one page.
        let (_, link, v) = json_of(combined_status(&w, "acme/web", "abcdef1", &None, base)).await;
        assert_eq!(
            (v["state"].as_str(), v["total_count"].as_u64()),
            (Some("pending"), Some(0))
        );
        assert!(link.is_none());
    }

    #[tokio::test]
    async fn a_reinstalled_app_has_a_new_installation_and_the_old_one_is_gone() {
        let w = World::new(super::super::SimConfig::default());
        let old = lock(&w.gh).installation("acme");
        let (st, _, v) = json_of(create_token(State(w.clone()), Path(old.to_string())).await).await;
        assert_eq!(st, StatusCode::CREATED);
        let token = v["token"].as_str().unwrap().to_string();
        let new = w.reinstall_github_app("acme");
        assert_ne!(new, old);
        assert_eq!(lock(&w.gh).installation("acme"), new);
        assert!(
            lock(&w.gh).tokens[&token].revoked,
            "the old installation's tokens are revoked"
        );
        let (st, _, _) = json_of(create_token(State(w.clone()), Path(old.to_string())).await).await;
        assert_eq!(st, StatusCode::NOT_FOUND);
        let (st, _, _) = json_of(create_token(State(w.clone()), Path(new.to_string())).await).await;
        assert_eq!(st, StatusCode::CREATED);
        // Another owner's installation is not touched, and ids are never reused.
        let other = lock(&w.gh).installation("globex");
        assert!(other != old && other != new);
    }
}
