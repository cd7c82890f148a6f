//! Run summaries on pull requests (SPEC §4 `summary`, §6): one sticky comment per PR
//! with a section per project and run group, and commit statuses.
//!
//! [`post_summary`] is what the action executor calls for a run event:
//!
//! 1. The event must be in the rule's `events`.
//! 2. The repository: `github.repos[project]`, else the run's `meta.commit.remoteOrigin`
//!    when that remote is on the GitHub of `github.api_url` ([`resolve_repo`]: a GitLab,
//!    Bitbucket or other GitHub host's `acme/api` is not this GitHub's `acme/api`).
//!    Unresolvable → skipped, with the reason.
//! 3. Comment (`comment = true`): the open PRs whose head is the run's sha, else whose
//!    head branch is the run's branch ([`discover_prs`]; not for a run whose
//!    `remoteOrigin` is another repository, a fork: its branch name says nothing about
//!    the repository's PRs). For each, under a per-PR lock: read the comment (by
//!    remembered id, else by its marker; only a comment runwarden's own identity wrote
//!    counts, see [`GithubClient::own_login`]), merge the run's section
//!    into the state the comment carries ([`merge_section`]: a run for a commit that is
//!    no longer the head never replaces a section for the head, an older run never
//!    replaces a newer one, an older snapshot of the same run never replaces a finished
//!    one), render, and create, edit, or leave the comment when the body is unchanged.
//!    A create whose outcome is unknown is followed by a read for the marker, never by a
//!    blind second `POST`. A PR closed or merged while the run went on keeps its comment
//!    up to date: the closed PRs whose head is the run's sha (among those the same
//!    `GET .../commits/{sha}/pulls` lists; never by branch) get the run's section merged
//!    into the comment they already have, which is edited, never created
//!    ([`discover_run_prs`]); their comments do not count for the commit status.
//! 4. Commit status (`commit_status = true`) on the run's sha, context `status_context`
//!    with `{project}` filled, under a per-status lock held across steps 3 and 4 (merge,
//!    read the latest status, then post). The status is the commit's, not the run's: it
//!    is derived from the runs of that sha whose project maps to the context, the newest
//!    run of each run group, with the run merged in ([`status_sections`],
//!    [`combined_status`]): failure when one failed or timed out, else error when one was
//!    cancelled, else pending while one runs, success when all passed; its target is the
//!    run that decided it. So another group's pass does not hide a failure, and an older
//!    run's late result does not replace a newer run's. The other groups' runs come from
//!    the merged comments' sections and from the store's runs table
//!    ([`recorded_sections`]: every run the bot has seen, shared by every process and
//!    kept across restarts), so they count also without a comment (`comment = false`,
//!    a commit that heads no open PR, e.g. a push to `main`). Only without a store (a
//!    client used on its own) and without a comment does the run alone count; then a run
//!    older than one of its group whose status this process already decided is skipped
//!    (in-process memory). Not sent when the latest status of that context already says
//!    the same for the same target run, nor when it would turn a finished run's status
//!    back to pending (an out-of-order `RUN_START`).
//!
//! Across processes (replicas, `serve` and `sweep`), steps 3 and 4 run under the
//! repository's [`SharedLock`], a lease in the store renewed every third of its time to
//! live while they run; a summary whose lease is lost is stopped and tried again.
//!
//! Dry run: the same reads, no `POST` or `PATCH`; the outcome carries what would have
//! been written.

use std::fmt;

use serde::Serialize;

use crate::config::{Config, Rule, SummaryOptions};
use crate::currents::Run;

use super::client::{
    GithubClient, GithubError, IssueComment, MAX_STATUS_DESCRIPTION, PullRef, RepoName,
    StatusState, is_commit_sha, is_open_from_branch_of, truncate_chars,
};
use super::render::{
    GITHUB_BODY_LIMIT, MARKER, Outcome, PrInfo, RenderInput, Section, StateError, SummaryDoc,
    render_body, status_for,
};

/// What [`post_summary`] needs besides the run.
#[derive(Clone, Copy)]
pub struct SummaryCtx<'a> {
    pub gh: &'a GithubClient,
    pub config: &'a Config,
    pub rule: &'a Rule,
    pub opts: &'a SummaryOptions,
    /// The store's lock across processes (see [`SharedLock`]), and the store whose runs
    /// a commit status combines ([`recorded_sections`]); `None`: this process's locks
    /// only, and its own memory of statuses (tests of one client).
    pub shared: Option<SharedLock<'a>>,
}

/// A lock on a repository's summaries shared by every process on the store: replicas on
/// PostgreSQL, or `serve` and `sweep` on one SQLite file. The client's own locks (per PR,
/// per commit status) are per process; without this, two processes could both find no
/// comment and both create one, or each edit the comment with only its own section.
#[derive(Clone, Copy)]
pub struct SharedLock<'a> {
    pub store: &'a crate::store::Store,
    /// Who takes it (the process's worker id; each call adds its own suffix).
    pub holder: &'a str,
}

/// The time to live of the repository's [`SharedLock`]: renewed every third of it while
/// the summary runs ([`crate::store::Store::hold_lease_while`]), so it is how long the
/// lock outlives a process that dies holding it.
pub const SHARED_LOCK_TTL: std::time::Duration = std::time::Duration::from_secs(300);
/// How long a summary waits for the [`SharedLock`] before it is postponed (tried again
/// [`SHARED_LOCK_RETRY`] later, not counted as a failed attempt).
pub const SHARED_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
/// When a summary that did not get the [`SharedLock`] is tried again.
pub const SHARED_LOCK_RETRY: std::time::Duration = std::time::Duration::from_secs(2);

/// What happened to the comment of one pull request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum SummaryOutcome {
    /// The comment was created (`created`) or edited.
    Posted {
        pr: u64,
        comment_id: u64,
        created: bool,
    },
    /// The comment already said exactly this: nothing was sent.
    Unchanged { pr: u64, comment_id: u64 },
    /// Nothing to do, and why.
    Skipped(String),
    /// Dry run: the body that would have been posted.
    DryRun(String),
}

/// What happened to the commit status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum StatusOutcome {
    Posted {
        sha: String,
        context: String,
        state: StatusState,
        description: String,
    },
    /// The latest status of the context already says this.
    Unchanged {
        sha: String,
        context: String,
    },
    Skipped(String),
    /// Dry run: what would have been sent.
    DryRun {
        sha: String,
        context: String,
        state: StatusState,
        description: String,
    },
}

/// Everything one [`post_summary`] call did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SummaryReport {
    /// `None` when the repository could not be resolved.
    pub repo: Option<String>,
    /// One per pull request, or a single `Skipped`; empty with `comment = false`.
    pub comments: Vec<SummaryOutcome>,
    /// `None` with `commit_status = false`.
    pub status: Option<StatusOutcome>,
}

impl SummaryReport {
    fn skipped(repo: Option<&RepoName>, reason: String, opts: &SummaryOptions) -> SummaryReport {
        SummaryReport {
            repo: repo.map(ToString::to_string),
            comments: if opts.comment {
                vec![SummaryOutcome::Skipped(reason.clone())]
            } else {
                Vec::new()
            },
            status: opts.commit_status.then_some(StatusOutcome::Skipped(reason)),
        }
    }

    /// Nothing was written and nothing would have been: every part was skipped.
    pub fn is_skipped(&self) -> bool {
        self.comments
            .iter()
            .all(|c| matches!(c, SummaryOutcome::Skipped(_)))
            && self
                .status
                .as_ref()
                .is_none_or(|s| matches!(s, StatusOutcome::Skipped(_)))
    }

    /// The comment bodies a dry run would have posted.
    pub fn dry_run_bodies(&self) -> Vec<&str> {
        self.comments
            .iter()
            .filter_map(|c| match c {
                SummaryOutcome::DryRun(b) => Some(b.as_str()),
                _ => None,
            })
            .collect()
    }
}

impl fmt::Display for SummaryReport {
    /// One line for the audit log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        for c in &self.comments {
            parts.push(match c {
                SummaryOutcome::Posted {
                    pr,
                    comment_id,
                    created: true,
                } => format!("PR #{pr}: created comment {comment_id}"),
                SummaryOutcome::Posted { pr, comment_id, .. } => {
                    format!("PR #{pr}: edited comment {comment_id}")
                }
                SummaryOutcome::Unchanged { pr, .. } => format!("PR #{pr}: comment unchanged"),
                SummaryOutcome::Skipped(r) => format!("comment skipped: {r}"),
                SummaryOutcome::DryRun(_) => "comment: dry run".to_string(),
            });
        }
        if let Some(s) = &self.status {
            parts.push(match s {
                StatusOutcome::Posted { context, state, .. } => {
                    format!("status {context} = {state}")
                }
                StatusOutcome::Unchanged { context, .. } => format!("status {context} unchanged"),
                StatusOutcome::Skipped(r) => format!("status skipped: {r}"),
                StatusOutcome::DryRun { context, state, .. } => {
                    format!("status {context} = {state} (dry run)")
                }
            });
        }
        if let Some(r) = &self.repo {
            write!(f, "{r}: ")?;
        }
        f.write_str(&parts.join("; "))
    }
}

/// A summary that could not be posted. Parts that succeeded before it are in `partial`;
/// a retry redoes nothing that is already there (the comment is found and compared).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SummaryError {
    pub retryable: bool,
    pub message: String,
    /// How long GitHub asked to wait (rate limits).
    pub retry_after: Option<std::time::Duration>,
    /// Every failing step was held back by the client's rate-limit gate without sending
    /// a request ([`GithubError::held_back`]): the action waits, it did not fail.
    pub held_back: bool,
    pub partial: Option<SummaryReport>,
}

impl SummaryError {
    fn permanent(message: String) -> SummaryError {
        SummaryError {
            retryable: false,
            message,
            retry_after: None,
            held_back: false,
            partial: None,
        }
    }
}

impl From<GithubError> for SummaryError {
    fn from(e: GithubError) -> SummaryError {
        SummaryError {
            retryable: e.is_retryable(),
            retry_after: e.retry_after(),
            held_back: e.held_back,
            message: e.to_string(),
            partial: None,
        }
    }
}

/// Posts or updates the summary of `run` for `event` (SPEC §4 `summary`). See the module
/// docs for the steps. `cancelled_by`: (rule, reason) when runwarden cancelled the run.
pub async fn post_summary(
    ctx: &SummaryCtx<'_>,
    run: &Run,
    event: &str,
    cancelled_by: Option<(String, String)>,
    dry_run: bool,
) -> Result<SummaryReport, SummaryError> {
    post_summary_with_lock_ttl(ctx, run, event, cancelled_by, dry_run, SHARED_LOCK_TTL).await
}

/// [`post_summary`] with `lock_ttl` as the time to live of the repository's
/// [`SharedLock`] ([`SHARED_LOCK_TTL`] there): the lock is renewed every third of it
/// while the summary runs, and a summary whose lock was lost meanwhile (taken over after
/// it expired, or not renewable) is stopped and fails retryably.
pub async fn post_summary_with_lock_ttl(
    ctx: &SummaryCtx<'_>,
    run: &Run,
    event: &str,
    cancelled_by: Option<(String, String)>,
    dry_run: bool,
    lock_ttl: std::time::Duration,
) -> Result<SummaryReport, SummaryError> {
    let opts = ctx.opts;
    let mut event = event.trim().to_ascii_uppercase();
    if event == "RUN_CANCELLED" {
        event = "RUN_CANCELED".into();
    }
    if !opts.events.iter().any(|e| e.eq_ignore_ascii_case(&event)) {
        return Ok(SummaryReport::skipped(
            None,
            format!(
                "event {event} is not in the events of rule {:?} ({})",
                ctx.rule.name,
                opts.events.join(", ")
            ),
            opts,
        ));
    }
    let repo = match resolve_repo(ctx.config, run) {
        Ok(r) => r,
        Err(reason) => return Ok(SummaryReport::skipped(None, reason, opts)),
    };
    let dashboard = ctx.config.currents.dashboard_url.trim_end_matches('/');
    let section = Section::from_run(
        run,
        &event,
        cancelled_by
            .as_ref()
            .map(|(r, why)| (r.as_str(), why.as_str())),
        dashboard,
        opts.max_failed_specs as usize,
    );

    // Boxed: its state is large (every GitHub call's), and is moved into the locks
    // below; unboxed, a debug build's summary overflowed a 2 MiB stack.
    let steps = Box::pin(async {
        let mut report = SummaryReport {
            repo: Some(repo.to_string()),
            comments: Vec::new(),
            status: None,
        };
        let mut first_error: Option<SummaryError> = None;
        // The comment of each PR as merged with this run: what the status is derived from.
        let mut docs = Vec::new();
        // An open PR's comment could not be read, and will be on the retry.
        let mut comments_unread = false;
        if opts.comment {
            match post_comments(ctx, &repo, run, &section, dry_run, &mut docs).await {
                Ok(posted) => {
                    report.comments = posted.outcomes;
                    comments_unread = posted.open_unread;
                    first_error = posted.error;
                }
                Err(e) => {
                    comments_unread = e.retryable;
                    first_error = Some(e);
                }
            }
        }
        // The status is derived from the merged comments of the open PRs: when reading
        // one failed (and will be retried), a status from this run alone could hide
        // another group's failure; the retry posts it. (A closed PR's comment does not
        // count for the status: its failure does not hold the status back.)
        if opts.commit_status && !comments_unread {
            match post_status(ctx, &repo, run, &section, &docs, dry_run).await {
                Ok(s) => report.status = Some(s),
                Err(e) => match &mut first_error {
                    None => first_error = Some(e),
                    // Both steps failed: the retry of both waits as long as either was
                    // asked to, and the record names both causes.
                    Some(first) => {
                        first.retry_after = first.retry_after.max(e.retry_after);
                        first.held_back &= e.held_back;
                        first.message = format!("{}; status: {}", first.message, e.message);
                    }
                },
            }
        }
        (report, first_error)
    });
    // With a commit status, the comment and the status are updated under the status's
    // lock: a summary of another run group of the commit, merged into the comment after
    // this one, posts its status after this one too, from a document holding both.
    let sha = run.sha().filter(|s| !s.is_empty());
    let locked = async {
        match sha {
            Some(sha) if opts.commit_status => {
                let context = status_context(&opts.status_context, &run.project_id);
                ctx.gh.with_status_lock(&repo, sha, &context, steps).await
            }
            _ => steps.await,
        }
    };
    // Across processes, one summary of a repository at a time (a dry run writes nothing).
    let (report, first_error) = match ctx.shared.filter(|_| !dry_run) {
        None => locked.await,
        Some(shared) => {
            let name = format!("summary:{}", repo.key());
            let holder = format!("{}:{}", shared.holder, uuid::Uuid::new_v4().simple());
            let poll = std::time::Duration::from_millis(200);
            match shared
                .store
                .acquire_lease_waiting(&name, &holder, lock_ttl, SHARED_LOCK_WAIT, poll)
                .await
            {
                Ok(true) => {
                    // Renewed while the summary runs: slow GitHub calls and their retries
                    // may take longer than one time to live.
                    let out = shared
                        .store
                        .hold_lease_while(&name, &holder, lock_ttl, locked)
                        .await;
                    if let Err(e) = shared.store.release_lease(&name, &holder).await {
                        tracing::warn!(repo = %repo, error = %e, "cannot release the summary lock; it expires on its own");
                    }
                    match out {
                        Ok(out) => out,
                        Err(lost) => {
                            return Err(SummaryError {
                                retryable: true,
                                message: format!(
                                    "the summary of {repo} was stopped: its lock across \
                                     processes was lost ({lost}); tried again later"
                                ),
                                retry_after: None,
                                held_back: false,
                                partial: None,
                            });
                        }
                    }
                }
                // Nothing was sent: postponed, not a failed attempt (a burst of summaries
                // of one repository waits its turn, however long the queue).
                Ok(false) => {
                    return Err(SummaryError {
                        retryable: true,
                        message: format!(
                            "another process is posting a summary to {repo}; tried again later"
                        ),
                        retry_after: Some(SHARED_LOCK_RETRY),
                        held_back: true,
                        partial: None,
                    });
                }
                Err(e) => {
                    return Err(SummaryError {
                        retryable: true,
                        message: format!("cannot take the summary lock of {repo}: {e}"),
                        retry_after: None,
                        held_back: false,
                        partial: None,
                    });
                }
            }
        }
    };
    match first_error {
        None => {
            tracing::info!(rule = %ctx.rule.name, run_id = %run.run_id, %event, "summary: {report}");
            Ok(report)
        }
        Some(mut e) => {
            e.partial = Some(report);
            Err(e)
        }
    }
}

/// What [`post_comments`] did.
struct PostedComments {
    outcomes: Vec<SummaryOutcome>,
    /// The first error, with the longest wait any PR was asked for.
    error: Option<SummaryError>,
    /// The first error is an open PR's, and retryable: that PR's sections, which the
    /// commit status counts, are not in the merged documents (the retry reads them).
    open_unread: bool,
}

/// Updates the comment of every PR of the run (the open PRs, then the closed PRs at the
/// run's sha that have one); the first error is returned beside the outcomes of the
/// others, with the longest wait any of them was asked for.
/// `docs`: each open PR's comment as merged with the run (also when it was not written).
async fn post_comments(
    ctx: &SummaryCtx<'_>,
    repo: &RepoName,
    run: &Run,
    section: &Section,
    dry_run: bool,
    docs: &mut Vec<SummaryDoc>,
) -> Result<PostedComments, SummaryError> {
    let (sha, branch) = (run.sha(), run.branch());
    if sha.is_none() && branch.is_none() {
        return Ok(PostedComments {
            outcomes: vec![SummaryOutcome::Skipped(
                "the run has neither a commit sha nor a branch".into(),
            )],
            error: None,
            open_unread: false,
        });
    }
    let run_repo = run
        .meta
        .commit
        .remote_origin
        .as_deref()
        .and_then(repo_from_remote);
    let RunPrs { open: prs, closed } =
        discover_run_prs(ctx.gh, repo, run_repo.as_ref(), sha, branch).await?;
    let mut outcomes = Vec::new();
    let mut first_error: Option<SummaryError> = None;
    let mut open_unread = false;
    // The open PRs, then the closed ones whose head is the run's sha: their comment is
    // edited when they have one, never created, and is not counted for the status (a
    // status is the commit's: the store's runs and the open PRs' comments decide it).
    let targets = prs
        .iter()
        .map(|p| (p, true))
        .chain(closed.iter().map(|p| (p, false)));
    for (pr, open) in targets {
        let mut merged = None;
        let result = update_pr_comment(ctx, repo, pr, section, dry_run, open, &mut merged).await;
        if open {
            docs.extend(merged);
        }
        match result {
            Ok(Some(o)) => outcomes.push(o),
            // A closed PR without runwarden's comment: left alone.
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(repo = %repo, pr = pr.number, error = %e, "summary comment failed");
                // The open PRs come first: the first error is an open PR's when one
                // failed, and says whether the retry reads the comments again.
                if open && first_error.is_none() {
                    open_unread = e.retryable;
                }
                match &mut first_error {
                    None => first_error = Some(e),
                    // A later PR met a rate limit (or the client's hold after one): the
                    // retry waits for it too.
                    Some(first) => {
                        first.retry_after = first.retry_after.max(e.retry_after);
                        first.held_back &= e.held_back;
                    }
                }
            }
        }
    }
    if prs.is_empty() && outcomes.is_empty() && first_error.is_none() {
        let reason = match (&run_repo, branch.filter(|b| !b.is_empty())) {
            (Some(from), Some(b)) if from.key() != repo.key() => format!(
                "no open pull request in {repo} has head {}; branch {b} was not looked up: \
                 the run's commit comes from {from} (its remoteOrigin), not {repo}, and a \
                 branch of {from} may share its name with an unrelated branch of {repo}",
                sha.unwrap_or("(none)"),
            ),
            _ => format!(
                "no open pull request in {repo} has head {} or branch {}",
                sha.unwrap_or("(none)"),
                branch.unwrap_or("(none)")
            ),
        };
        return Ok(PostedComments {
            outcomes: vec![SummaryOutcome::Skipped(reason)],
            error: None,
            open_unread: false,
        });
    }
    Ok(PostedComments {
        outcomes,
        error: first_error,
        open_unread,
    })
}

/// The sticky comment of one PR: read, merge, render, write if changed, under the PR's
/// lock. `merged`: the comment's sections with the run merged in, once read (also when
/// the write then fails, or is not needed). `may_create`: false for a closed PR, whose
/// comment is only edited; `None` when it has none (nothing was written).
async fn update_pr_comment(
    ctx: &SummaryCtx<'_>,
    repo: &RepoName,
    pr: &PullRef,
    section: &Section,
    dry_run: bool,
    may_create: bool,
    merged: &mut Option<SummaryDoc>,
) -> Result<Option<SummaryOutcome>, SummaryError> {
    ctx.gh
        .with_pr_lock(
            repo,
            pr.number,
            update_pr_comment_locked(ctx, repo, pr, section, dry_run, may_create, merged),
        )
        .await
}

/// [`update_pr_comment`] under the PR's lock.
async fn update_pr_comment_locked(
    ctx: &SummaryCtx<'_>,
    repo: &RepoName,
    pr: &PullRef,
    section: &Section,
    dry_run: bool,
    may_create: bool,
    merged: &mut Option<SummaryDoc>,
) -> Result<Option<SummaryOutcome>, SummaryError> {
    let gh = ctx.gh;
    let info = PrInfo {
        number: pr.number,
        head_sha: pr.head_sha.clone(),
        head_ref: pr.head_ref.clone(),
    };
    let dashboard = ctx.config.currents.dashboard_url.trim_end_matches('/');
    let mut existing = find_existing(gh, repo, pr.number).await?;
    let mut created = false;
    // Rounds: a create that finds another writer's comment, or an edit of a comment
    // deleted meanwhile, starts over from what is on GitHub.
    for _ in 0..3 {
        if existing.is_none() && !may_create {
            return Ok(None);
        }
        let mut doc = match &existing {
            Some(c) => SummaryDoc::parse(&c.body)
                .map_err(|e: StateError| SummaryError::permanent(e.to_string()))?,
            None => SummaryDoc::default(),
        };
        if ctx.opts.only_failed && !section.is_failure() && doc.get(&section.key).is_none() {
            *merged = Some(doc);
            return Ok(Some(SummaryOutcome::Skipped(format!(
                "only_failed: run {} did not fail and PR #{} has no section for its group",
                section.run_id, pr.number
            ))));
        }
        let merge = merge_section(&mut doc, section.clone(), &pr.head_sha);
        *merged = Some(doc.clone());
        if let Merge::Kept(reason) = merge {
            return Ok(Some(SummaryOutcome::Skipped(reason)));
        }
        let body = render_body(
            &doc,
            &RenderInput {
                pr: &info,
                current_key: &section.key,
                dashboard_url: dashboard,
                template: ctx.opts.template.as_ref(),
                limit: GITHUB_BODY_LIMIT,
            },
        )
        .map_err(|e| SummaryError::permanent(e.to_string()))?;

        match &existing {
            Some(c) if same_body(&c.body, &body) => {
                gh.remember_comment_id(repo, pr.number, Some(c.id));
                return Ok(Some(if created {
                    SummaryOutcome::Posted {
                        pr: pr.number,
                        comment_id: c.id,
                        created,
                    }
                } else {
                    SummaryOutcome::Unchanged {
                        pr: pr.number,
                        comment_id: c.id,
                    }
                }));
            }
            _ if dry_run => return Ok(Some(SummaryOutcome::DryRun(body))),
            Some(c) => match gh.update_comment(repo, c.id, &body).await {
                Ok(updated) => {
                    gh.remember_comment_id(repo, pr.number, Some(updated.id));
                    return Ok(Some(SummaryOutcome::Posted {
                        pr: pr.number,
                        comment_id: updated.id,
                        created,
                    }));
                }
                Err(e) if e.status() == Some(404) => {
                    tracing::info!(repo = %repo, pr = pr.number, comment_id = c.id,
                        "the summary comment was deleted; posting it again");
                    gh.remember_comment_id(repo, pr.number, None);
                    existing = find_existing(gh, repo, pr.number).await?;
                }
                Err(e) => return Err(e.into()),
            },
            None => {
                let made = gh
                    .create_comment_unique(repo, pr.number, &body, MARKER)
                    .await?;
                gh.remember_comment_id(repo, pr.number, Some(made.comment.id));
                created = true;
                if made.recovered && !same_body(&made.comment.body, &body) {
                    existing = Some(made.comment);
                    continue;
                }
                return Ok(Some(SummaryOutcome::Posted {
                    pr: pr.number,
                    comment_id: made.comment.id,
                    created,
                }));
            }
        }
    }
    Err(SummaryError {
        retryable: true,
        message: format!(
            "the summary comment of {repo}#{} kept changing under runwarden",
            pr.number
        ),
        retry_after: None,
        held_back: false,
        partial: None,
    })
}

/// The PR's runwarden comment: by the remembered id, else the oldest with the marker
/// written by runwarden's own identity ([`GithubClient::own_login`]). A comment of
/// anyone else carrying the marker is ignored: neither its state nor its links are read,
/// and it is never edited. Fails (retryably) when the identity cannot be told.
async fn find_existing(
    gh: &GithubClient,
    repo: &RepoName,
    pr: u64,
) -> Result<Option<IssueComment>, GithubError> {
    let me = gh.own_login().await?;
    if let Some(id) = gh.cached_comment_id(repo, pr) {
        match gh.get_comment(repo, id).await? {
            Some(c) if c.is_runwardens(MARKER, &me) => return Ok(Some(c)),
            _ => gh.remember_comment_id(repo, pr, None),
        }
    }
    gh.find_comment(repo, pr, |c| c.is_runwardens(MARKER, &me))
        .await
}

/// Bodies equal up to line endings and trailing whitespace (GitHub may normalise them).
fn same_body(a: &str, b: &str) -> bool {
    let norm = |s: &str| s.replace("\r\n", "\n").trim_end().to_string();
    norm(a) == norm(b)
}

// ---------------------------------------------------------------------------------------
// Sections
// ---------------------------------------------------------------------------------------

/// What [`merge_section`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Merge {
    Inserted,
    Replaced,
    /// The existing section stays; the reason.
    Kept(String),
}

/// Puts `new` into `doc` unless the section of its key shows something newer:
///
/// - the same run: replaced, except that a finished run is not turned back into a
///   running one by an older snapshot; runwarden's cancel attribution is kept, and a
///   section made compact to fit GitHub's limit stays compact (the run's failing-spec
///   list and group table left out: [`render_body`]), so that an event of a run whose
///   lists were left out does not bring them back, only for the comment to outgrow the
///   limit and be edited again;
/// - another run: a section for the PR head (`head_sha`) is never replaced by a run for
///   another commit, and a run for the head always replaces one for another commit;
///   otherwise the newer run (by `createdAt`) wins.
pub fn merge_section(doc: &mut SummaryDoc, mut new: Section, head_sha: &str) -> Merge {
    let is_head = |s: &Section| {
        s.sha
            .as_deref()
            .is_some_and(|sha| !head_sha.is_empty() && sha.eq_ignore_ascii_case(head_sha))
    };
    let Some(old) = doc.sections.iter_mut().find(|s| s.key == new.key) else {
        doc.sections.push(new);
        doc.sort();
        return Merge::Inserted;
    };
    if old.run_id == new.run_id {
        if old.outcome.is_terminal() && !new.outcome.is_terminal() {
            return Merge::Kept(format!(
                "run {} already shows as {}; not going back to {}",
                new.run_id,
                old.outcome.label(),
                new.outcome.label()
            ));
        }
        if let (Some(old_c), Some(new_c)) = (&old.cancelled, &mut new.cancelled)
            && new_c.rule.is_none()
            && old_c.rule.is_some()
        {
            *new_c = old_c.clone();
        }
        if old.compact {
            new.failed_specs.clear();
            new.groups.clear();
            new.compact = true;
        }
        *old = new;
        return Merge::Replaced;
    }
    let (old_head, new_head) = (is_head(old), is_head(&new));
    if old_head && !new_head {
        return Merge::Kept(format!(
            "run {} is for commit {}, no longer the head of the PR; its section shows run {} for the head",
            new.run_id,
            new.short_sha().unwrap_or_default(),
            old.run_id
        ));
    }
    if new_head && !old_head {
        *old = new;
        return Merge::Replaced;
    }
    if new.created_at < old.created_at {
        return Merge::Kept(format!(
            "run {} is older than run {}, which its section already shows",
            new.run_id, old.run_id
        ));
    }
    *old = new;
    Merge::Replaced
}

// ---------------------------------------------------------------------------------------
// Repository and pull requests
// ---------------------------------------------------------------------------------------

/// The repository of a run: `github.repos[project]`, else parsed from
/// `meta.commit.remoteOrigin` when that remote is on the GitHub of `github.api_url`
/// ([`remote_on_api_host`]: a GitLab, Bitbucket or other GitHub remote says nothing about
/// the same-named repository there). `Err` carries why it could not be resolved.
pub fn resolve_repo(config: &Config, run: &Run) -> Result<RepoName, String> {
    if let Some(r) = config.github.repos.get(&run.project_id) {
        return r.parse::<RepoName>().map_err(|e| {
            format!(
                "github.repos maps project {} to an invalid repository: {e}",
                run.project_id
            )
        });
    }
    match run.meta.commit.remote_origin.as_deref() {
        None | Some("") => Err(format!(
            "no repository for project {}: not in github.repos and the run has no \
             meta.commit.remoteOrigin",
            run.project_id
        )),
        Some(origin) => {
            let repo = repo_from_remote(origin).ok_or_else(|| {
                format!(
                    "no repository for project {}: not in github.repos, and remoteOrigin {:?} \
                     does not name owner/repo",
                    run.project_id,
                    redact_userinfo(origin)
                )
            })?;
            let api = &config.github.api_url;
            match remote_host(origin) {
                Some(host) if remote_on_api_host(&host, api) => Ok(repo),
                host => Err(format!(
                    "no repository for project {}: not in github.repos, and remoteOrigin {:?} \
                     is on {}, not on the GitHub of github.api_url ({}); map the project in \
                     github.repos to post its summaries there",
                    run.project_id,
                    redact_userinfo(origin),
                    host.as_deref().unwrap_or("an unknown host"),
                    api.host_str().unwrap_or("?"),
                )),
            }
        }
    }
}

/// The host of a git remote in the forms [`repo_from_remote`] reads, lower-case, without
/// user info, port or a trailing dot: `github.com` for `git@github.com:o/r.git` and
/// `https://user:token@GitHub.com:443/o/r`.
pub fn remote_host(origin: &str) -> Option<String> {
    let origin = origin.trim();
    let authority = if let Some((scheme, rest)) = origin.split_once("://") {
        if !matches!(
            scheme.to_ascii_lowercase().as_str(),
            "https" | "http" | "ssh" | "git" | "git+ssh" | "ssh+git"
        ) {
            return None;
        }
        rest.split(['/', '?', '#']).next()?
    } else {
        // scp-like: [user@]host:owner/repo.git
        let (userhost, _) = origin.split_once(':')?;
        if userhost.contains('/') {
            return None;
        }
        userhost
    };
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host_port.strip_prefix('[') {
        // An IPv6 literal, `[::1]:22`.
        Some(v6) => format!("[{}]", v6.split(']').next()?),
        None => host_port.split(':').next()?.to_string(),
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    (!host.is_empty() && host != "[]").then_some(host)
}

/// Whether a remote on `host` (as [`remote_host`] gives it) is a repository of the GitHub
/// whose REST API is `api_url`: the API's own host (GitHub Enterprise Server serves it on
/// its host, `https://ghe.example/api/v3`); for an API at the root of `api.{web host}`
/// (`https://api.github.com`, GHE.com's `https://api.{tenant}.ghe.com`), that web host;
/// for github.com also `www.github.com` and `ssh.github.com` (SSH over port 443).
pub fn remote_on_api_host(host: &str, api_url: &url::Url) -> bool {
    let Some(api) = api_url.host_str() else {
        return false;
    };
    let norm = |h: &str| h.trim_end_matches('.').to_ascii_lowercase();
    let (host, api) = (norm(host), norm(api));
    if host == api {
        return true;
    }
    let at_root = api_url.path().trim_matches('/').is_empty();
    let Some(web) = api.strip_prefix("api.").filter(|_| at_root) else {
        return false;
    };
    host == web
        || (web == "github.com" && matches!(host.as_str(), "www.github.com" | "ssh.github.com"))
}

/// `owner/repo` from a git remote: `https://github.com/o/r(.git)`,
/// `git@github.com:o/r.git`, `ssh://git@github.com(:22)/o/r.git`, `git://...`,
/// `https://user:token@host/o/r` (any host: GitHub Enterprise too).
pub fn repo_from_remote(origin: &str) -> Option<RepoName> {
    let origin = origin.trim();
    let path = if let Some((scheme, rest)) = origin.split_once("://") {
        if !matches!(
            scheme.to_ascii_lowercase().as_str(),
            "https" | "http" | "ssh" | "git" | "git+ssh" | "ssh+git"
        ) {
            return None;
        }
        // Drop user info and host (and port).
        let after_host = rest.split_once('/')?.1;
        after_host.to_string()
    } else if let Some((userhost, path)) = origin.split_once(':') {
        // scp-like: [user@]host:owner/repo.git
        if userhost.contains('/') || userhost.is_empty() {
            return None;
        }
        path.to_string()
    } else {
        return None;
    };
    let path = path.split(['?', '#']).next().unwrap_or("");
    let path = path.trim_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    let mut parts = path.split('/');
    let (owner, name) = (parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    RepoName::new(owner, name).ok()
}

fn redact_userinfo(origin: &str) -> String {
    if let Some((scheme, rest)) = origin.split_once("://") {
        let (authority, path) = match rest.split_once('/') {
            Some((a, p)) => (a, format!("/{p}")),
            None => (rest, String::new()),
        };
        if let Some((_, host)) = authority.rsplit_once('@') {
            return format!("{scheme}://***@{host}{path}");
        }
    }
    origin.to_string()
}

/// The pull requests a run's summary goes to ([`discover_run_prs`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunPrs {
    /// The open PRs the run belongs to ([`discover_prs`]).
    pub open: Vec<PullRef>,
    /// The closed (or merged) PRs whose head sha is the run's sha, from the same
    /// `GET .../commits/{sha}/pulls`: a PR closed while its run went on, whose comment
    /// (if it has one) is still to show the run's end. Never by branch: a PR whose head
    /// moved on (a later push, a rebase-merge) is not the run's.
    pub closed: Vec<PullRef>,
}

/// The open PRs a run belongs to: those whose head is the run's sha, else those whose
/// head branch is the run's branch (SPEC §4), found with
/// `GET /repos/{o}/{r}/commits/{sha}/pulls` (whose head branch is the run's branch in
/// the repository the run comes from, `run_repo` else `repo`: a fork's PR from a branch
/// of the same name is not the run's) and, when that finds nothing (a merge commit,
/// a sha GitHub does not know), the open PRs of the branch in `repo`
/// ([`GithubClient::open_pulls_for_branch`]: head `{owner}:{branch}`, head repository
/// `repo`).
///
/// `run_repo`: the repository the run's commit comes from (its `remoteOrigin`), when
/// known. When it is not `repo` (a fork's run, in a project mapped to `repo`), the
/// branch fallback is not used: the fork's `patch-1` is not `repo`'s `patch-1`, and its
/// run must not land on the PR of an unrelated branch that happens to share the name.
/// The PRs found by the commit itself still count.
pub async fn discover_prs(
    gh: &GithubClient,
    repo: &RepoName,
    run_repo: Option<&RepoName>,
    sha: Option<&str>,
    branch: Option<&str>,
) -> Result<Vec<PullRef>, GithubError> {
    Ok(discover_run_prs(gh, repo, run_repo, sha, branch)
        .await?
        .open)
}

/// [`discover_prs`], and the closed PRs whose head is the run's sha ([`RunPrs::closed`]),
/// read from the same answer: no request more.
pub async fn discover_run_prs(
    gh: &GithubClient,
    repo: &RepoName,
    run_repo: Option<&RepoName>,
    sha: Option<&str>,
    branch: Option<&str>,
) -> Result<RunPrs, GithubError> {
    let branch = branch.filter(|b| !b.is_empty());
    let foreign = run_repo.is_some_and(|r| r.key() != repo.key());
    let mut closed = Vec::new();
    if let Some(sha) = sha.filter(|s| !s.is_empty()) {
        let of_commit = match gh.pulls_for_commit(repo, sha).await {
            Ok(p) => p,
            // 422: "No commit found for SHA"; 404 likewise on some GitHub versions.
            Err(e) if matches!(e.status(), Some(404 | 422)) => Vec::new(),
            Err(e) if matches!(e.kind, super::client::GithubErrorKind::Invalid(_)) => Vec::new(),
            Err(e) => return Err(e),
        };
        let (open, closed_prs): (Vec<PullRef>, Vec<PullRef>) =
            of_commit.into_iter().partition(PullRef::is_open);
        closed = closed_prs
            .into_iter()
            .filter(|p| p.head_sha.eq_ignore_ascii_case(sha))
            .collect();
        let by_sha: Vec<PullRef> = open
            .iter()
            .filter(|p| p.head_sha.eq_ignore_ascii_case(sha))
            .cloned()
            .collect();
        if !by_sha.is_empty() {
            return Ok(RunPrs {
                open: by_sha,
                closed,
            });
        }
        if let Some(b) = branch {
            // The branch of the repository the run comes from: a PR of another
            // repository's branch of that name (a fork's `patch-1`) is not the run's.
            let from = run_repo.unwrap_or(repo);
            let by_branch: Vec<PullRef> = open
                .into_iter()
                .filter(|p| is_open_from_branch_of(p, from, b))
                .collect();
            if !by_branch.is_empty() {
                return Ok(RunPrs {
                    open: by_branch,
                    closed,
                });
            }
        }
    }
    let open = match branch {
        Some(_) if foreign => Vec::new(),
        Some(b) => gh.open_pulls_for_branch(repo, b).await?,
        None => Vec::new(),
    };
    Ok(RunPrs { open, closed })
}

// ---------------------------------------------------------------------------------------
// Commit statuses
// ---------------------------------------------------------------------------------------

/// The status context of a project's runs: `status_context` (`template`) with
/// `{project}` filled.
fn status_context(template: &str, project: &str) -> String {
    template.replace("{project}", project)
}

/// The commit status of the run's sha (under the status's lock, taken by
/// [`post_summary`]).
async fn post_status(
    ctx: &SummaryCtx<'_>,
    repo: &RepoName,
    run: &Run,
    section: &Section,
    docs: &[SummaryDoc],
    dry_run: bool,
) -> Result<StatusOutcome, SummaryError> {
    let Some(sha) = run.sha().filter(|s| !s.is_empty()) else {
        return Ok(StatusOutcome::Skipped("the run has no commit sha".into()));
    };
    if !is_commit_sha(sha) {
        return Ok(StatusOutcome::Skipped(format!(
            "the run's commit {:?} is not a commit sha; no status",
            truncate_chars(sha, 80)
        )));
    }
    let context = status_context(&ctx.opts.status_context, &run.project_id);
    decide_and_post_status(ctx, repo, sha, context, section, docs, dry_run).await
}

/// The sections that decide the status `context` of commit `sha`: those of `docs` (the
/// runs the store recorded, then the PRs' comments merged with the run) for `sha` whose
/// project maps to `context` by the rule's `status_context` (`template`), with
/// `current` merged in as a comment merges it ([`merge_section`]: a newer run of a group
/// wins, a finished run is not turned back into a running one). One section per group.
pub fn status_sections(
    docs: &[SummaryDoc],
    current: &Section,
    sha: &str,
    template: &str,
    context: &str,
) -> SummaryDoc {
    let mut combined = SummaryDoc::default();
    for s in docs.iter().flat_map(|d| &d.sections) {
        if s.sha
            .as_deref()
            .is_some_and(|x| x.eq_ignore_ascii_case(sha))
            && status_context(template, &s.project) == context
        {
            merge_section(&mut combined, s.clone(), sha);
        }
    }
    merge_section(&mut combined, current.clone(), sha);
    combined
}

/// How bad a status is: failure (tests failed, timed out) over error (cancelled,
/// unknown) over pending (running) over success.
fn severity(state: StatusState) -> u8 {
    match state {
        StatusState::Success => 0,
        StatusState::Pending => 1,
        StatusState::Error => 2,
        StatusState::Failure => 3,
    }
}

/// The status of a commit's runs in one context, from their sections: the worst of each
/// run's own status ([`status_for`]: passed → success, failed or timed out → failure,
/// cancelled or unknown → error, running → pending), so success only when every run
/// passed, pending while one runs and none failed. One run: its own description; several:
/// how many ended how (`2 runs: 1 failed, 1 passed`). The target URL is the run that
/// decided it: `current_run` when it is among the worst, else the newest of them.
pub fn combined_status(sections: &[Section], current_run: &str) -> (StatusState, String, String) {
    if let [one] = sections {
        let (state, description) = status_for(one);
        return (state, description, one.run_url.clone());
    }
    let states: Vec<StatusState> = sections.iter().map(|s| status_for(s).0).collect();
    let Some(worst) = states.iter().copied().max_by_key(|st| severity(*st)) else {
        return (StatusState::Pending, String::new(), String::new());
    };
    let deciding = sections
        .iter()
        .zip(&states)
        .filter(|(_, st)| **st == worst)
        .map(|(s, _)| s)
        .max_by_key(|s| (s.run_id == current_run, s.created_at))
        .map_or("", |s| s.run_url.as_str());
    let mut parts = Vec::new();
    for (outcome, word) in [
        (Outcome::Failed, "failed"),
        (Outcome::TimedOut, "timed out"),
        (Outcome::Cancelled, "cancelled"),
        (Outcome::Unknown, "unknown"),
        (Outcome::Running, "running"),
        (Outcome::Passed, "passed"),
    ] {
        let n = sections.iter().filter(|s| s.outcome == outcome).count();
        if n > 0 {
            parts.push(format!("{n} {word}"));
        }
    }
    let description = format!("{} runs: {}", sections.len(), parts.join(", "));
    (
        worst,
        truncate_chars(&description, MAX_STATUS_DESCRIPTION),
        deciding.to_string(),
    )
}

/// How many of a commit's recorded runs [`recorded_sections`] reads at most (the newest):
/// far more than the run groups of one commit, retries included.
const RECORDED_RUNS_MAX: i64 = 500;

/// The sections of the other runs of commit `sha` in status `context`, as the store's
/// runs table last observed them ([`crate::store::Store::runs_of_commit`]); `None` without
/// a store (a client used on its own, in tests).
///
/// Why the runs table: a commit status is the commit's, so the other run groups' latest
/// outcomes must be known also when no comment carries them (`comment = false`, a commit
/// that heads no open PR, e.g. a push to `main`). The runs table already holds every run
/// the bot has seen (webhooks, polls, reads before acting), written when the event is
/// recorded, before any summary of it is decided, with its sha, project, state and JSON;
/// it is shared by every process on the store and survives restarts. Nothing new is
/// written for it (a dry run stays a read), and there is no second copy to keep in step.
/// The `pr_sections` table is keyed by repository and pull request: a commit without a
/// PR has no key there, and one heading several PRs would have several copies.
///
/// A recorded run counts as the rule would have summarized it: its repository resolves
/// to `repo` ([`resolve_repo`]), its project maps to `context`, the rule's
/// `[rules.match]` filter matches it, and the event its state stands for (as the intake
/// derives it, [`crate::intake::processor::event_for`]) is in the rule's `events`:
/// without `RUN_START` there, a run still in progress does not turn the status pending,
/// as it does not on a PR's comment. A run newer than its group's run on the comment (its
/// own summary not posted yet) counts already. The current run itself is left out: its
/// own event says more of it than an observation (which rule cancelled it).
pub async fn recorded_sections(
    ctx: &SummaryCtx<'_>,
    repo: &RepoName,
    sha: &str,
    context: &str,
    current: &Section,
) -> Result<Option<SummaryDoc>, SummaryError> {
    let Some(shared) = ctx.shared else {
        return Ok(None);
    };
    let template = &ctx.opts.status_context;
    let project = template
        .contains("{project}")
        .then_some(current.project.as_str());
    let records = shared
        .store
        .runs_of_commit(sha, project, RECORDED_RUNS_MAX)
        .await
        .map_err(|e| SummaryError {
            retryable: e.is_unavailable(),
            message: format!(
                "cannot read the other runs of commit {sha} from the store, which status \
                 {context} combines: {e}"
            ),
            retry_after: None,
            held_back: false,
            partial: None,
        })?;
    let dashboard = ctx.config.currents.dashboard_url.trim_end_matches('/');
    let mut doc = SummaryDoc::default();
    for rec in records {
        if rec.run_id == current.run_id {
            continue;
        }
        let Ok(run) = serde_json::from_str::<Run>(&rec.json) else {
            tracing::warn!(run_id = %rec.run_id,
                "unreadable run in the store; not counted in the commit status");
            continue;
        };
        let event = crate::intake::processor::event_for(&run);
        let counts = status_context(template, &run.project_id) == context
            && resolve_repo(ctx.config, &run).is_ok_and(|r| r.key() == repo.key())
            && ctx.rule.filter.matches(&run)
            && ctx
                .opts
                .events
                .iter()
                .any(|e| e.eq_ignore_ascii_case(event));
        if counts {
            let s = Section::from_run(&run, event, None, dashboard, 0);
            merge_section(&mut doc, s, sha);
        }
    }
    Ok(Some(doc))
}

/// [`post_status`]: the status derived from the runs of the commit in this context
/// ([`status_sections`], [`combined_status`]): the PRs' comments, the runs the store
/// recorded ([`recorded_sections`]) and the run itself. Posted unless the latest status
/// says the same, or would go back to pending for the same run, or the run is older than
/// one of its group whose status this process already decided (in-process memory, for a
/// client without a store: the store's runs already show the newer run).
async fn decide_and_post_status(
    ctx: &SummaryCtx<'_>,
    repo: &RepoName,
    sha: &str,
    context: String,
    section: &Section,
    docs: &[SummaryDoc],
    dry_run: bool,
) -> Result<StatusOutcome, SummaryError> {
    // The store's observations first: the comments' sections of the same runs (with
    // runwarden's cancel attribution) replace them, and the run itself comes last.
    let mut sources: Vec<SummaryDoc> = recorded_sections(ctx, repo, sha, &context, section)
        .await?
        .into_iter()
        .collect();
    sources.extend_from_slice(docs);
    let combined = status_sections(&sources, section, sha, &ctx.opts.status_context, &context);
    let shown = combined.get(&section.key).unwrap_or(section);
    // Neither a comment nor the store showed a newer run of the group (comment = false
    // or no PR, and no store): this process may still have seen one.
    if shown.run_id == section.run_id
        && let Some((newer, _)) = ctx
            .gh
            .newest_status_run(repo, sha, &context, &section.key)
            .filter(|(id, at)| *id != section.run_id && *at > section.created_at)
    {
        return Ok(StatusOutcome::Skipped(format!(
            "run {} is older than run {newer}, whose result status {context} already counts",
            section.run_id
        )));
    }
    let (state, description, target_url) = combined_status(&combined.sections, &section.run_id);
    let latest = ctx.gh.latest_status(repo, sha, &context).await?;
    // The run this commit's status now stands for (the older-run guard).
    let remember = || {
        ctx.gh.remember_status_run(
            repo,
            sha,
            &context,
            &section.key,
            &shown.run_id,
            shown.created_at,
        )
    };
    if let Some(l) = &latest
        && l.target_url.as_deref() == Some(target_url.as_str())
    {
        if l.state == state && l.description.as_deref() == Some(description.as_str()) {
            if !dry_run {
                remember();
            }
            return Ok(StatusOutcome::Unchanged {
                sha: sha.to_string(),
                context,
            });
        }
        if state == StatusState::Pending && l.state != StatusState::Pending {
            return Ok(StatusOutcome::Skipped(format!(
                "status {context} of run {} is already {}; not going back to pending",
                section.run_id, l.state
            )));
        }
    }
    if dry_run {
        return Ok(StatusOutcome::DryRun {
            sha: sha.to_string(),
            context,
            state,
            description,
        });
    }
    match ctx
        .gh
        .create_status(repo, sha, state, &context, &description, Some(&target_url))
        .await
    {
        Ok(()) => {}
        // A commit never pushed to the repository (a run recorded on a developer's
        // machine): no status can be set on it, now or on a retry.
        Err(e) if e.is_unknown_commit() => {
            return Ok(StatusOutcome::Skipped(format!(
                "GitHub has no commit {sha} in {repo}, so status {context} cannot be set \
                 on it ({})",
                match &e.kind {
                    super::client::GithubErrorKind::Status { message, .. } => message.as_str(),
                    _ => "",
                }
            )));
        }
        Err(e) => return Err(e.into()),
    }
    remember();
    Ok(StatusOutcome::Posted {
        sha: sha.to_string(),
        context,
        state,
        description,
    })
}

#[cfg(test)]
mod tests {
    use super::super::render::Counts;
    use super::*;

    #[test]
    fn remote_origin_forms() {
        let ok = |s: &str| repo_from_remote(s).map(|r| r.to_string());
        for s in [
            "https://github.com/acme/web",
            "https://github.com/acme/web.git",
            "https://github.com/acme/web/",
            "http://github.com/acme/web.git",
            "git@github.com:acme/web.git",
            "git@github.com:acme/web",
            "ssh://git@github.com/acme/web.git",
            "ssh://git@github.com:22/acme/web.git",
            "git://github.com/acme/web.git",
            "https://x-access-token:ghs_secret@github.com/acme/web.git",
            "https://ghe.example.com/acme/web.git",
        ] {
            assert_eq!(ok(s).as_deref(), Some("acme/web"), "{s}");
        }
        for s in [
            "",
            "acme/web",
            "https://github.com/acme",
            "https://gitlab.com/group/sub/web.git",
            "file:///srv/repos/web.git",
            "/srv/repos/web.git",
            "https://github.com/acme/we%20b",
        ] {
            assert_eq!(ok(s), None, "{s}");
        }
    }

    #[test]
    fn remote_hosts_pair_with_the_api_host() {
        for (origin, host) in [
            ("https://github.com/acme/web", "github.com"),
            (
                "https://x:ghs_secret@GitHub.com:443/acme/web.git",
                "github.com",
            ),
            ("git@github.com:acme/web.git", "github.com"),
            (
                "ssh://git@ssh.github.com:443/acme/web.git",
                "ssh.github.com",
            ),
            ("git@bitbucket.org:acme/web.git", "bitbucket.org"),
            ("https://ghe.example.com./acme/web", "ghe.example.com"),
            ("ssh://git@[::1]:22/acme/web.git", "[::1]"),
        ] {
            assert_eq!(remote_host(origin).as_deref(), Some(host), "{origin}");
        }
        for origin in ["", "acme/web", "/srv/web.git", "file:///srv/web.git"] {
            assert_eq!(remote_host(origin), None, "{origin}");
        }
        let api = |u: &str| url::Url::parse(u).unwrap();
        let dotcom = api("https://api.github.com");
        for host in [
            "github.com",
            "www.github.com",
            "ssh.github.com",
            "api.github.com",
        ] {
            assert!(remote_on_api_host(host, &dotcom), "{host}");
        }
        for host in [
            "gitlab.com",
            "ghe.example.com",
            "github.com.evil.test",
            "gist.github.com",
        ] {
            assert!(!remote_on_api_host(host, &dotcom), "{host}");
        }
        let ghes = api("https://ghe.example.com/api/v3");
        assert!(remote_on_api_host("GHE.example.com", &ghes));
        assert!(!remote_on_api_host("github.com", &ghes));
        // `api.` is only the API's own subdomain when the API is at its root.
        let odd = api("https://api.example.com/api/v3");
        assert!(remote_on_api_host("api.example.com", &odd));
        assert!(!remote_on_api_host("example.com", &odd));
    }

    #[test]
    fn a_compact_section_stays_compact_while_it_shows_the_same_run() {
        use super::super::render::FailedSpec;
        let mut doc = SummaryDoc::default();
        let mut listed = section("r1", "aaaa", T1, Outcome::Failed);
        listed.failed_specs = vec![FailedSpec {
            spec: "a.spec.ts".into(),
            group: None,
            failures: 1,
        }];
        listed.failed_specs_total = 1;
        let mut compact = listed.clone();
        compact.make_compact();
        assert!(compact.compact && compact.failed_specs.is_empty());
        merge_section(&mut doc, compact.clone(), "aaaa");
        // The same run again, with its list: still compact, the body unchanged.
        merge_section(&mut doc, listed.clone(), "aaaa");
        assert_eq!(doc.sections, vec![compact]);
        // A new run of the group starts full.
        let mut next = listed;
        next.run_id = "r2".into();
        next.created_at = T2.parse().unwrap();
        merge_section(&mut doc, next.clone(), "aaaa");
        assert_eq!(doc.sections, vec![next]);
    }

    #[test]
    fn credentials_in_remotes_are_not_echoed() {
        assert_eq!(
            redact_userinfo("https://x:ghs_secret@github.com/a"),
            "https://***@github.com/a"
        );
        assert_eq!(
            redact_userinfo("https://github.com/a@b"),
            "https://github.com/a@b"
        );
    }

    fn section(run: &str, sha: &str, created: &str, outcome: Outcome) -> Section {
        Section {
            key: "p|b|".into(),
            project: "p".into(),
            branch: Some("b".into()),
            tags: vec![],
            run_id: run.into(),
            run_url: format!("https://app.currents.dev/run/{run}"),
            sha: Some(sha.into()),
            created_at: created.parse().unwrap(),
            outcome,
            failing: false,
            counts: Counts::default(),
            specs_done: 0,
            specs_total: 0,
            duration_ms: None,
            failed_specs: vec![],
            failed_specs_total: 0,
            groups: vec![],
            cancelled: None,
            timeout_ms: None,
            compact: false,
        }
    }

    const T1: &str = "2026-01-01T10:00:00Z";
    const T2: &str = "2026-01-01T11:00:00Z";

    #[test]
    fn merge_rules() {
        let mut doc = SummaryDoc::default();
        let head = "bbbb";
        assert_eq!(
            merge_section(&mut doc, section("r2", head, T2, Outcome::Running), head),
            Merge::Inserted
        );
        // Same run progresses.
        assert_eq!(
            merge_section(&mut doc, section("r2", head, T2, Outcome::Failed), head),
            Merge::Replaced
        );
        // An older snapshot of the same run does not undo its end.
        assert!(matches!(
            merge_section(&mut doc, section("r2", head, T2, Outcome::Running), head),
            Merge::Kept(_)
        ));
        // A run for an older commit does not replace the head's section, even if newer.
        assert!(matches!(
            merge_section(
                &mut doc,
                section("r3", "aaaa", "2026-01-01T12:00:00Z", Outcome::Passed),
                head
            ),
            Merge::Kept(_)
        ));
        assert_eq!(doc.sections[0].run_id, "r2");
        // Among non-head commits, the newer run wins and the older loses.
        let mut doc = SummaryDoc::default();
        merge_section(&mut doc, section("r2", "aaaa", T2, Outcome::Passed), head);
        assert!(matches!(
            merge_section(&mut doc, section("r1", "cccc", T1, Outcome::Failed), head),
            Merge::Kept(_)
        ));
        // The head always replaces a non-head section, even when created earlier.
        assert_eq!(
            merge_section(&mut doc, section("r0", head, T1, Outcome::Passed), head),
            Merge::Replaced
        );
        assert_eq!(doc.sections.len(), 1);
        assert_eq!(doc.sections[0].run_id, "r0");
    }

    fn grouped(run: &str, key: &str, created: &str, outcome: Outcome) -> Section {
        let mut s = section(run, "aaaa", created, outcome);
        s.key = key.into();
        s
    }

    #[test]
    fn the_commit_status_is_the_worst_of_its_runs() {
        let url = |r: &str| format!("https://app.currents.dev/run/{r}");
        // One run: its own status, as before.
        let one = [section("r1", "aaaa", T1, Outcome::Passed)];
        assert_eq!(
            combined_status(&one, "r1"),
            (StatusState::Success, status_for(&one[0]).1, url("r1"))
        );
        let of = |secs: &[(&str, Outcome)], current: &str| {
            let sections: Vec<Section> = secs
                .iter()
                .enumerate()
                .map(|(i, (r, o))| grouped(r, &format!("p|b|{i}"), T1, *o))
                .collect();
            combined_status(&sections, current)
        };
        use Outcome::*;
        assert_eq!(
            of(&[("a", Passed), ("b", Failed)], "a"),
            (
                StatusState::Failure,
                "2 runs: 1 failed, 1 passed".into(),
                url("b")
            )
        );
        // A failure outranks a cancel, a cancel a run in progress.
        assert_eq!(
            of(&[("a", Cancelled), ("b", TimedOut), ("c", Running)], "c").0,
            StatusState::Failure
        );
        assert_eq!(
            of(&[("a", Cancelled), ("b", Running), ("c", Passed)], "c"),
            (
                StatusState::Error,
                "3 runs: 1 cancelled, 1 running, 1 passed".into(),
                url("a")
            )
        );
        assert_eq!(
            of(&[("a", Running), ("b", Passed)], "b").0,
            StatusState::Pending
        );
        assert_eq!(
            of(&[("a", Passed), ("b", Passed)], "b"),
            (StatusState::Success, "2 runs: 2 passed".into(), url("b"))
        );
        // Among equally bad runs: the current one, else the newest.
        let secs = [
            grouped("old", "k1", T1, Failed),
            grouped("new", "k2", T2, Failed),
            grouped("cur", "k3", T1, Failed),
        ];
        assert_eq!(combined_status(&secs, "cur").2, url("cur"));
        assert_eq!(combined_status(&secs, "other").2, url("new"));
        // Hundreds of groups: still within GitHub's 140 characters.
        let many: Vec<Section> = (0..500)
            .map(|i| {
                let o = [Passed, Failed, TimedOut, Cancelled, Unknown, Running][i % 6];
                grouped(&format!("r{i}"), &format!("k{i:03}"), T1, o)
            })
            .collect();
        assert!(combined_status(&many, "r0").1.chars().count() <= MAX_STATUS_DESCRIPTION);
    }

    #[test]
    fn the_status_counts_the_commits_sections_of_its_context_with_the_run_merged_in() {
        let template = "runwarden/{project}";
        let mut doc = SummaryDoc::default();
        let mut other_sha = grouped("x", "p|b|x", T1, Outcome::Failed);
        other_sha.sha = Some("bbbb".into());
        let mut other_project = grouped("y", "q|b|", T1, Outcome::Failed);
        other_project.project = "q".into();
        doc.sections = vec![
            grouped("full", "p|b|full", T1, Outcome::Failed),
            other_sha,
            other_project,
            grouped("r-old", "p|b|", T1, Outcome::Passed),
        ];
        let current = grouped("r-new", "p|b|", T2, Outcome::Running);
        let ctx = status_context(template, "p");
        let c = status_sections(&[doc.clone(), doc], &current, "AAAA", template, &ctx);
        let runs: Vec<&str> = c.sections.iter().map(|s| s.run_id.as_str()).collect();
        assert_eq!(runs, ["r-new", "full"]);
        // An older run of a group does not replace the newer one.
        let older = grouped("r-older", "p|b|", "2026-01-01T09:00:00Z", Outcome::Failed);
        let c = status_sections(&[c], &older, "aaaa", template, &ctx);
        assert_eq!(c.get("p|b|").unwrap().run_id, "r-new");
        // A context without `{project}`: every project's runs count.
        let mut q = grouped("y", "q|b|", T1, Outcome::Failed);
        q.project = "q".into();
        let doc = SummaryDoc { sections: vec![q] };
        let c = status_sections(&[doc], &current, "aaaa", "e2e", "e2e");
        assert_eq!(c.sections.len(), 2);
    }

    #[test]
    fn runwarden_cancel_attribution_survives_a_later_plain_cancel_event() {
        use super::super::render::CancelledBy;
        let mut doc = SummaryDoc::default();
        let mut ours = section("r1", "aaaa", T1, Outcome::Cancelled);
        ours.cancelled = Some(CancelledBy {
            rule: Some("cancel-superseded".into()),
            reason: Some("superseded by r2".into()),
            actor: None,
        });
        merge_section(&mut doc, ours, "aaaa");
        let mut plain = section("r1", "aaaa", T1, Outcome::Cancelled);
        plain.cancelled = Some(CancelledBy {
            actor: Some("api:runwarden".into()),
            ..Default::default()
        });
        merge_section(&mut doc, plain, "aaaa");
        let c = doc.sections[0].cancelled.as_ref().unwrap();
        assert_eq!(c.rule.as_deref(), Some("cancel-superseded"));
    }

    /// The executor spawns summaries on the runtime: the future must be `Send`.
    #[allow(dead_code)]
    fn post_summary_is_send(ctx: &SummaryCtx<'_>, run: &Run) {
        fn send<T: Send>(_: T) {}
        send(post_summary(ctx, run, "RUN_FINISH", None, false));
    }

    #[test]
    fn bodies_compare_modulo_line_endings() {
        assert!(same_body("a\r\nb\n", "a\nb"));
        assert!(!same_body("a\nb", "a\nc"));
    }
}
