//! Decisions (the audit log) and actions (the outbox and the executor's queue).
//!
//! A rule's decision and the action carrying it out are written in one transaction
//! ([`Store::record_decisions`]), so a decision is on record before anything acts on it
//! and an accepted action is never lost (SPEC §6). Actions are unique by `action_key`
//! (`cancel:RUN`, `delete:RUN`, `summarize:RUN:EVENT`): when several rules decide the same
//! action, there is one action and one decision per rule, each linked to it. A rule
//! deciding the same thing again (a redelivered event, the next poll) adds nothing, but
//! for one thing: a live decision puts back in the queue an action that dry run held
//! back ([`DRY_RUN_HOLD`]). Dry-run decisions are recorded without an action (outcome
//! `dry_run`), so they never stand in the way of a real one, nor re-open one.
//!
//! The executor's queue: [`Store::claim_due_actions`] leases due actions to a worker
//! (state `running`, `lease_until`); a worker that dies leaves its lease to expire and the
//! action is claimed again. Each claim ends in [`Store::complete_action_as`],
//! [`Store::fail_attempt_as`] (back to `pending` until `next_attempt_at`) or
//! [`Store::fail_action_as`] (final), each applied only while the action is still
//! leased to the worker writing it: the late outcome of a worker whose lease ran out
//! never overwrites the action another worker has claimed since. Terminal states are
//! never left, except by an operator's [`Store::retry_action`] (or a failed action
//! decided again, [`Store::retry_failed_before`]), and by an action dry run held back
//! ([`Store::hold_action_as`]), which a live decision of it re-opens.
//!
//! ```text
//!             claim                complete(Done|Skipped)
//!  pending ─────────────▶ running ───────────────────────▶ done | skipped
//!   ▲ ▲   ◀───────────────   │ │   fail_action
//!   │ │   fail_attempt,      │ └─────────────────────────▶ failed
//!   │ │   release_leases,    │                                 │
//!   │ │   lease expiry       │  hold_action_as (dry run)       │
//!   │ │   (re-claim)         └────────────────────────▶ skipped (held)
//!   │ │                                                     │    │
//!   │ └──────── a live decision of it (record_decisions) ───┘    │
//!   └──────────────────────── retry_action ──────────────────────┘
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;

use super::runs::{opt_text, text};
use super::{Store, StoreError, StoreResult, from_ms, limit, ms_after, opt_from_ms, to_ms};

/// What an action does. [`NewDecision::action`] and [`ActionRow::action`] hold its
/// spelling (`cancel`, `delete`, `summarize`); parse it with `str::parse`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionKind {
    /// Cancel a run (`PUT /runs/{id}/cancel`).
    Cancel,
    /// Delete a run (`DELETE /runs/{id}`).
    Delete,
    /// Post or update the run's summary on GitHub.
    Summarize,
}

impl ActionKind {
    /// The stored and printed spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Cancel => "cancel",
            ActionKind::Delete => "delete",
            ActionKind::Summarize => "summarize",
        }
    }
}

impl fmt::Display for ActionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for ActionKind {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cancel" => Ok(ActionKind::Cancel),
            "delete" => Ok(ActionKind::Delete),
            "summarize" => Ok(ActionKind::Summarize),
            other => Err(StoreError::Invalid(format!("unknown action {other:?}"))),
        }
    }
}

/// State of an action row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionState {
    /// Waiting to be claimed (possibly for `not_before` or a retry time).
    Pending,
    /// Leased to a worker until `lease_until`.
    Running,
    /// Carried out.
    Done,
    /// Nothing to do (the run had already finished, the summary had not changed).
    Skipped,
    /// Given up: a final error, or the last attempt failed.
    Failed,
}

impl ActionState {
    /// Every state, in lifecycle order.
    pub const ALL: [ActionState; 5] = [
        ActionState::Pending,
        ActionState::Running,
        ActionState::Done,
        ActionState::Skipped,
        ActionState::Failed,
    ];

    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionState::Pending => "pending",
            ActionState::Running => "running",
            ActionState::Done => "done",
            ActionState::Skipped => "skipped",
            ActionState::Failed => "failed",
        }
    }

    /// No transition leaves this state (but [`Store::retry_action`]).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            ActionState::Done | ActionState::Skipped | ActionState::Failed
        )
    }
}

impl fmt::Display for ActionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for ActionState {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(ActionState::Pending),
            "running" => Ok(ActionState::Running),
            "done" => Ok(ActionState::Done),
            "skipped" => Ok(ActionState::Skipped),
            "failed" => Ok(ActionState::Failed),
            other => Err(StoreError::Corrupt(format!(
                "unknown action state {other:?}"
            ))),
        }
    }
}

/// How an attempt ended well ([`Store::complete_action`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionOutcome {
    /// The side effect happened (or had already happened: 404/409/422 on cancel/delete).
    Done,
    /// There was nothing to do.
    Skipped,
}

/// The outcome of a decision as `audit` shows it (SPEC §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The action is pending or being carried out.
    Planned,
    /// Decided in dry-run mode: nothing will be done.
    DryRun,
    Done,
    Failed,
    Skipped,
}

impl Outcome {
    /// The printed spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Planned => "planned",
            Outcome::DryRun => "dry_run",
            Outcome::Done => "done",
            Outcome::Failed => "failed",
            Outcome::Skipped => "skipped",
        }
    }

    /// The outcome of a decision, from its dry-run flag and its action's state.
    pub fn of(dry_run: bool, action: Option<ActionState>) -> Outcome {
        if dry_run {
            return Outcome::DryRun;
        }
        match action {
            None | Some(ActionState::Pending | ActionState::Running) => Outcome::Planned,
            Some(ActionState::Done) => Outcome::Done,
            Some(ActionState::Skipped) => Outcome::Skipped,
            Some(ActionState::Failed) => Outcome::Failed,
        }
    }
}

impl PartialEq<str> for Outcome {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Outcome {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A rule's decision to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDecision {
    /// When the rule decided.
    pub at: DateTime<Utc>,
    /// The rule's `name`.
    pub rule: String,
    /// The rule's `kind` (`supersede`, `timeout`, ...).
    pub kind: String,
    /// `cancel`, `delete` or `summarize` (see [`ActionKind`]).
    pub action: String,
    pub run_id: String,
    pub project_id: String,
    pub branch: Option<String>,
    pub sha: Option<String>,
    /// Why, in words (shown in `audit`, on the status page and in PR summaries).
    pub reason: String,
    /// Record only: no action is created.
    pub dry_run: bool,
    /// Not to be carried out before this (e.g. an orphan rule's `grace`). When rules
    /// disagree, the earliest wins while the action is still pending.
    pub not_before: Option<DateTime<Utc>>,
    /// Identity of the action: decisions with the same key share one action
    /// (`cancel:RUN`, `delete:RUN`, `summarize:...:RUN:EVENT`).
    pub action_key: String,
    /// Data for the executor, e.g. the event JSON for `summarize`. The first decision's
    /// payload is kept.
    pub payload: Option<String>,
    /// Record only, outcome `skipped`: the action is created finished, with this detail,
    /// and never carried out (a retention sweep stopped by its circuit breaker).
    pub skip: Option<String>,
}

/// What [`Store::record_event`] writes for one processed event.
#[derive(Debug, Clone, Copy)]
pub struct EventRecord<'a> {
    /// The delivery (row id) to mark processed.
    pub delivery_id: i64,
    /// Its outcome note ("2 decision(s)").
    pub note: &'a str,
    /// Earlier events that decided nothing, marked processed with this one ("0
    /// decision(s)"), see [`Store::mark_processed_many`].
    pub quiet: &'a [i64],
    pub decisions: &'a [NewDecision],
    /// The runs read while deciding, to remember.
    pub runs: &'a [super::RunRecord],
    /// The time of the record (the lease of claimed actions starts then; the processor
    /// passes the time it records, not the earlier time it decided).
    pub now: DateTime<Utc>,
    /// Lease new actions that are due to a worker.
    pub claim_for: Option<Claim<'a>>,
}

/// Who takes the new due actions of an [`EventRecord`], and how many at most.
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    pub worker_id: &'a str,
    pub lease: Duration,
    /// At most this many (the oldest first); the rest wait for a claim.
    pub max: usize,
}

/// What [`Store::record_event`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecorded {
    /// One per decision, in order.
    pub decisions: Vec<RecordedDecision>,
    /// The new actions leased to [`EventRecord::claim_for`]'s worker.
    pub claimed: Vec<ActionRow>,
}

/// What [`Store::record_decisions`] did with one decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordedDecision {
    pub decision_id: i64,
    /// The action carrying it out; `None` for a dry-run decision.
    pub action_id: Option<i64>,
    /// The action was created by this call (else it already existed).
    pub new_action: bool,
    /// The decision was recorded by this call (else the same rule had already decided
    /// the same action in the same mode).
    pub new_decision: bool,
}

/// An action row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActionRow {
    pub id: i64,
    pub action_key: String,
    /// `cancel`, `delete` or `summarize`.
    pub action: String,
    /// The rule it is carried out for: the first that decided it, or, when that rule is
    /// in dry-run mode as it falls due, the first rule with a live decision on it that is
    /// not ([`Store::act_for_rule_as`]). Its summary credits this rule with a cancel
    /// ([`Store::cancel_reason`]). A summary action, decided by its one rule only (its key
    /// names it), finds its options there.
    pub rule: String,
    /// That rule's kind.
    pub kind: String,
    pub run_id: String,
    pub project_id: String,
    pub branch: Option<String>,
    pub sha: Option<String>,
    pub payload: Option<String>,
    pub state: ActionState,
    /// Finished attempts (successful or not).
    pub attempts: i64,
    /// Times handed to a worker, including claims whose worker died.
    pub claims: i64,
    pub not_before: Option<DateTime<Utc>>,
    pub next_attempt_at: DateTime<Utc>,
    pub lease_until: Option<DateTime<Utc>>,
    pub worker_id: Option<String>,
    pub last_error: Option<String>,
    /// The note of the completion.
    pub detail: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct ActionDbRow {
    id: i64,
    action_key: String,
    action: String,
    rule: String,
    kind: String,
    run_id: String,
    project_id: String,
    branch: Option<String>,
    sha: Option<String>,
    payload: Option<String>,
    state: String,
    attempts: i64,
    claims: i64,
    not_before: Option<i64>,
    next_attempt_at: i64,
    lease_until: Option<i64>,
    worker_id: Option<String>,
    last_error: Option<String>,
    detail: Option<String>,
    created_at: i64,
    updated_at: i64,
    finished_at: Option<i64>,
}

impl TryFrom<ActionDbRow> for ActionRow {
    type Error = StoreError;
    fn try_from(r: ActionDbRow) -> StoreResult<ActionRow> {
        Ok(ActionRow {
            id: r.id,
            action_key: r.action_key,
            action: r.action,
            rule: r.rule,
            kind: r.kind,
            run_id: r.run_id,
            project_id: r.project_id,
            branch: r.branch,
            sha: r.sha,
            payload: r.payload,
            state: r.state.parse()?,
            attempts: r.attempts,
            claims: r.claims,
            not_before: opt_from_ms(r.not_before)?,
            next_attempt_at: from_ms(r.next_attempt_at)?,
            lease_until: opt_from_ms(r.lease_until)?,
            worker_id: r.worker_id,
            last_error: r.last_error,
            detail: r.detail,
            created_at: from_ms(r.created_at)?,
            updated_at: from_ms(r.updated_at)?,
            finished_at: opt_from_ms(r.finished_at)?,
        })
    }
}

const ACTION_COLUMNS: &str = "id, action_key, action, rule, kind, run_id, project_id, branch, sha, \
     payload, state, attempts, claims, not_before, next_attempt_at, lease_until, worker_id, \
     last_error, detail, created_at, updated_at, finished_at";

/// One line of `audit --format json` and of `GET /api/actions` (SPEC §1). Serializes to
/// exactly `{"at","rule","kind","action","run_id","project_id","branch","outcome","reason",
/// "attempts","error"}`, `at` in RFC 3339.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at: DateTime<Utc>,
    pub rule: String,
    pub kind: String,
    pub action: String,
    pub run_id: String,
    pub project_id: String,
    pub branch: Option<String>,
    pub outcome: Outcome,
    pub reason: String,
    /// Attempts made by the action (0 for dry run).
    pub attempts: i64,
    /// The last error of an action that failed or is being retried; for one that was
    /// skipped, why.
    pub error: Option<String>,
}

#[derive(sqlx::FromRow)]
struct AuditRow {
    at: i64,
    rule: String,
    kind: String,
    action: String,
    run_id: String,
    project_id: String,
    branch: Option<String>,
    reason: String,
    dry_run: i64,
    action_state: Option<String>,
    action_attempts: Option<i64>,
    action_error: Option<String>,
    action_detail: Option<String>,
}

impl TryFrom<AuditRow> for AuditEntry {
    type Error = StoreError;
    fn try_from(r: AuditRow) -> StoreResult<AuditEntry> {
        let dry_run = r.dry_run != 0;
        let state = r
            .action_state
            .as_deref()
            .map(ActionState::from_str)
            .transpose()?;
        let outcome = Outcome::of(dry_run, state);
        // A skipped action says why in the same field (no credentials, dry run turned
        // on since, the rule gone, ...): otherwise only the log would.
        let error = match outcome {
            Outcome::Planned | Outcome::Failed => r.action_error,
            Outcome::Skipped => r.action_detail,
            _ => None,
        };
        Ok(AuditEntry {
            at: from_ms(r.at)?,
            rule: r.rule,
            kind: r.kind,
            action: r.action,
            run_id: r.run_id,
            project_id: r.project_id,
            branch: r.branch,
            outcome,
            reason: r.reason,
            attempts: if dry_run {
                0
            } else {
                r.action_attempts.unwrap_or(0)
            },
            error,
        })
    }
}

/// The columns of an [`AuditRow`], from `decisions d` and `actions a`.
macro_rules! audit_columns {
    () => {
        "d.at, d.rule, d.kind, d.action, d.run_id, d.project_id, d.branch, d.reason, \
         d.dry_run, a.state AS action_state, a.attempts AS action_attempts, \
         a.last_error AS action_error, a.detail AS action_detail"
    };
}

const AUDIT_SELECT: &str = concat!(
    "SELECT ",
    audit_columns!(),
    " FROM decisions d LEFT JOIN actions a ON a.id = d.action_id"
);

/// Where a page of [`Store::audit_page`] ends: the decision time (epoch milliseconds, as
/// stored) and id of its last entry. The audit is ordered by both, newest first, so the
/// next page is the entries strictly before it in that order: none is skipped or shown
/// twice across pages, even among decisions made in the same millisecond. Written
/// `AT_ID` (e.g. `1767225600000_42`), the `before` of `GET /api/actions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct AuditCursor {
    /// The decision's `at`, in epoch milliseconds.
    pub at_ms: i64,
    /// The decision's id.
    pub id: i64,
}

impl fmt::Display for AuditCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}_{}", self.at_ms, self.id)
    }
}

impl FromStr for AuditCursor {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("expected AT_ID (as in a Link header's URL), got {s:?}");
        let (at, id) = s.split_once('_').ok_or_else(bad)?;
        Ok(AuditCursor {
            at_ms: at.parse().map_err(|_| bad())?,
            id: id.parse().map_err(|_| bad())?,
        })
    }
}

/// The statement of [`Store::audit_page`]: `$1` the limit, then `since` (ms) when `since`,
/// then the rule's name when `rule`, then the cursor's time (ms) and id when `before`.
/// Each row has its decision's id (`decision_id`) besides an [`AuditRow`]'s columns.
///
/// Without `since`, the newest decisions by `decisions_at_idx` (of one rule:
/// `decisions_rule_at_idx`). With it, two disjoint parts, each by an index: the decisions
/// made since then (`decisions_at_idx`), and the older ones whose action changed since
/// then (`actions_updated_idx`, then `decisions_action_idx`). One condition covering both
/// (`d.at >= $1 OR a.updated_at >= $1`) could use neither index and read every decision
/// ever recorded.
///
/// In the second part, the actions lead (`CROSS JOIN` keeps SQLite to that order) and each
/// one's decisions are found by `action_id`: its conditions on the decisions' own columns
/// are expressions (`d.at + 0`, `d.rule || ''`, `d.id + 0`), so that no index on those is
/// taken for a range of every older decision instead (SQLite, without statistics, would).
///
/// `before` keeps the entries after the cursor in the order `d.at DESC, d.id DESC`:
/// `(d.at, d.id) < (at, id)`, written `d.at <= at AND (d.at < at OR d.id < id)` so that
/// the time's index bounds the range read.
fn audit_sql(since: bool, rule: bool, before: bool) -> String {
    // `$1` is the limit; the others are numbered in the order they are bound.
    let mut bound = 1;
    let mut param = || {
        bound += 1;
        format!("${bound}")
    };
    let since_param = if since { param() } else { String::new() };
    let rule_param = if rule { param() } else { String::new() };
    let (before_at, before_id) = if before {
        (param(), param())
    } else {
        (String::new(), String::new())
    };
    let (of_rule, of_rule_by_action) = if rule {
        (
            format!(" AND d.rule = {rule_param}"),
            format!(" AND d.rule || '' = {rule_param}"),
        )
    } else {
        (String::new(), String::new())
    };
    let (after_cursor, after_cursor_by_action) = if before {
        (
            format!(" AND d.at <= {before_at} AND (d.at < {before_at} OR d.id < {before_id})"),
            format!(
                " AND d.at + 0 <= {before_at} AND (d.at + 0 < {before_at} OR d.id + 0 < {before_id})"
            ),
        )
    } else {
        (String::new(), String::new())
    };
    let cols = concat!("d.id AS decision_id, ", audit_columns!());
    if !since {
        let filter = format!("{of_rule}{after_cursor}");
        let filter = match filter.strip_prefix(" AND ") {
            Some(f) => format!(" WHERE {f}"),
            None => filter,
        };
        return format!(
            "SELECT {cols} FROM decisions d LEFT JOIN actions a ON a.id = d.action_id\
             {filter} ORDER BY d.at DESC, d.id DESC LIMIT $1"
        );
    }
    format!(
        "SELECT * FROM ( \
             SELECT {cols} \
             FROM decisions d LEFT JOIN actions a ON a.id = d.action_id \
             WHERE d.at >= {since_param}{of_rule}{after_cursor} \
             ORDER BY d.at DESC, d.id DESC LIMIT $1) decided \
         UNION ALL \
         SELECT * FROM ( \
             SELECT {cols} \
             FROM actions a CROSS JOIN decisions d \
             WHERE d.action_id = a.id \
               AND a.updated_at >= {since_param} AND a.updated_at > a.created_at \
               AND d.at + 0 < {since_param}{of_rule_by_action}{after_cursor_by_action} \
             ORDER BY d.at DESC, d.id DESC LIMIT $1) changed \
         ORDER BY at DESC, decision_id DESC \
         LIMIT $1"
    )
}

/// An [`AuditRow`] with the id of its decision ([`Store::audit_page`]).
#[derive(sqlx::FromRow)]
struct AuditPageRow {
    decision_id: i64,
    #[sqlx(flatten)]
    row: AuditRow,
}

/// An [`AuditRow`] with the id of its action ([`Store::pending_actions_audit`]).
#[derive(sqlx::FromRow)]
struct ActionAuditRow {
    action_id: i64,
    #[sqlx(flatten)]
    row: AuditRow,
}

/// How the note of a cancel action begins when the API answered its own request with
/// success: its `detail` once done (`cancelled; run is CANCELED`), or its `last_error`
/// when the run was still in progress after it (`cancelled, but the run is still in
/// progress`). [`Store::cancel_reason`] credits runwarden's rule only then.
pub const CANCEL_TOOK_EFFECT: &str = "cancelled";

/// How the note (`detail`) of an action that dry run held back begins: it ended
/// `skipped` without being carried out because, when it fell due, every rule with a live
/// decision on it was in dry-run mode ([`Store::hold_action_as`]; the emergency stop,
/// `dry_run = true`, or a rule's own `dry_run`). Unlike any other `skipped`, this one is
/// not the end of the action: a live decision of it afterwards (the stop lifted, the
/// next poll deciding it again) puts it back in the queue ([`Store::record_decisions`]).
pub const DRY_RUN_HOLD: &str = "not carried out: dry_run is on";

/// Which due actions a worker claims ([`Store::claim_due_actions_where`]). A process
/// claims only what it can carry out (a `runwarden sweep` without GitHub credentials
/// cannot post a summary) and leaves the rest queued, untouched, for one that can: an
/// accepted action is carried out at least once (SPEC §6). The default claims all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimFilter {
    /// The `summarize` actions claimed, by the rule that decided them.
    pub summaries: RuleSet,
}

/// A set of rules, by name ([`ClaimFilter`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum RuleSet {
    /// Every rule, configured or not.
    #[default]
    All,
    /// These rules only.
    Only(Vec<String>),
    /// Every rule but these.
    AllBut(Vec<String>),
}

impl RuleSet {
    /// Whether `rule` is in the set.
    pub fn contains(&self, rule: &str) -> bool {
        match self {
            RuleSet::All => true,
            RuleSet::Only(rules) => rules.iter().any(|r| r == rule),
            RuleSet::AllBut(rules) => !rules.iter().any(|r| r == rule),
        }
    }
}

impl ClaimFilter {
    /// Whether an action `action` (`cancel`, `delete`, `summarize`) decided by `rule` is
    /// claimed.
    pub fn allows(&self, action: &str, rule: &str) -> bool {
        action != ActionKind::Summarize.as_str() || self.summaries.contains(rule)
    }

    /// The SQL condition on `actions` (` AND ...`, or nothing) and the rule names bound
    /// to it, as parameters `$first`, `$first + 1`, ...
    fn condition(&self, first: usize) -> (String, &[String]) {
        let params = |rules: &[String]| {
            (first..first + rules.len())
                .map(|i| format!("${i}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match &self.summaries {
            RuleSet::All => (String::new(), &[]),
            RuleSet::AllBut(rules) if rules.is_empty() => (String::new(), &[]),
            RuleSet::Only(rules) if rules.is_empty() => {
                (" AND action <> 'summarize'".to_string(), &[])
            }
            RuleSet::Only(rules) => (
                format!(
                    " AND (action <> 'summarize' OR rule IN ({}))",
                    params(rules)
                ),
                rules,
            ),
            RuleSet::AllBut(rules) => (
                format!(
                    " AND (action <> 'summarize' OR rule NOT IN ({}))",
                    params(rules)
                ),
                rules,
            ),
        }
    }
}

/// Who cancelled a run, for its summary ([`Store::cancel_reason`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CancelReason {
    pub rule: String,
    pub kind: String,
    pub reason: String,
    pub at: DateTime<Utc>,
}

/// Decisions of one rule with one outcome (for `/metrics`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DecisionCount {
    pub rule: String,
    pub outcome: Outcome,
    pub count: i64,
}

impl Store {
    /// Records decisions and creates (or links to) their actions, all in one transaction.
    /// Returns one [`RecordedDecision`] per input, in order.
    pub async fn record_decisions(
        &self,
        decisions: &[NewDecision],
    ) -> StoreResult<Vec<RecordedDecision>> {
        let mut tx = self.begin_write().await?;
        let (recorded, _) = record_in(&mut tx, decisions, None).await?;
        tx.commit().await?;
        Ok(recorded)
    }

    /// [`Store::record_decisions`] and [`Store::mark_processed`] of the delivery that led
    /// to them, in one transaction: an event is never half handled. An unknown
    /// `delivery_id` is [`StoreError::NotFound`] and records nothing.
    pub async fn record_decisions_and_mark_processed(
        &self,
        decisions: &[NewDecision],
        delivery_id: i64,
        outcome_note: &str,
    ) -> StoreResult<Vec<RecordedDecision>> {
        let recorded = self
            .record_event(&EventRecord {
                delivery_id,
                note: outcome_note,
                quiet: &[],
                decisions,
                runs: &[],
                now: Utc::now(),
                claim_for: None,
            })
            .await?;
        Ok(recorded.decisions)
    }

    /// Everything one processed event leaves behind, in one transaction: the runs it
    /// observed ([`Store::upsert_run`]), its decisions and their actions
    /// ([`Store::record_decisions`]), the delivery marked processed, and — when
    /// [`EventRecord::claim_for`] is set — the new actions that are due now leased to that
    /// worker, so that its executor can start them at once without a claim of its own
    /// (one commit fewer between an event and its effect). An unknown delivery is
    /// [`StoreError::NotFound`] and records nothing.
    pub async fn record_event(&self, e: &EventRecord<'_>) -> StoreResult<EventRecorded> {
        let mut done = self.record_events(std::slice::from_ref(e)).await?;
        done.pop()
            .ok_or_else(|| StoreError::Invalid("no event recorded".into()))
    }

    /// [`Store::record_event`] for several events, in order, in one transaction: all are
    /// recorded or none. The actions leased to a worker number at most its
    /// [`Claim::max`] over all of them (the first events' actions first).
    pub async fn record_events(
        &self,
        events: &[EventRecord<'_>],
    ) -> StoreResult<Vec<EventRecorded>> {
        let mut tx = self.begin_write().await?;
        let mut out = Vec::with_capacity(events.len());
        let mut leased = 0usize;
        for e in events {
            for run in e.runs {
                Store::upsert_run_in(&mut tx, run).await?;
            }
            let mut lease = e.claim_for.map(|c| LeaseNew {
                worker_id: c.worker_id,
                now: to_ms(e.now),
                until: ms_after(e.now, c.lease),
                left: c.max.saturating_sub(leased),
            });
            let (decisions, claimed) = record_in(&mut tx, e.decisions, lease.as_mut()).await?;
            leased += claimed.len();
            Store::mark_processed_in(&mut tx, e.delivery_id, e.note).await?;
            Store::mark_many_in(&mut tx, self.backend, e.quiet, "0 decision(s)").await?;
            out.push(EventRecorded { decisions, claimed });
        }
        tx.commit().await?;
        self.record_stats.count(events.len());
        Ok(out)
    }

    /// Commits made by [`Store::record_events`] (and [`Store::record_event`]) so far, and
    /// the events they recorded.
    pub fn event_record_stats(&self) -> &super::GroupCommitStats {
        &self.record_stats
    }

    /// Leases up to `max` due actions to `worker_id` until `now + lease`: pending ones
    /// whose `next_attempt_at` and `not_before` have come, and running ones whose lease
    /// has expired (their worker died). Oldest due first.
    pub async fn claim_due_actions(
        &self,
        now: DateTime<Utc>,
        max: impl Into<i64>,
        lease: Duration,
        worker_id: &str,
    ) -> StoreResult<Vec<ActionRow>> {
        self.claim_due_actions_where(now, max, lease, worker_id, &ClaimFilter::default())
            .await
    }

    /// [`Store::claim_due_actions`] of the actions `filter` allows only: the others stay
    /// as they are (pending, their attempts and claims untouched) for a worker that can
    /// carry them out.
    pub async fn claim_due_actions_where(
        &self,
        now: DateTime<Utc>,
        max: impl Into<i64>,
        lease: Duration,
        worker_id: &str,
        filter: &ClaimFilter,
    ) -> StoreResult<Vec<ActionRow>> {
        // One statement: atomic in SQLite (one writer at a time). On PostgreSQL the
        // candidate rows are locked as they are picked, skipping those another replica is
        // claiming right now, so that concurrent claims never hand out one action twice
        // and never wait on each other.
        let lock = match self.backend {
            super::Backend::Sqlite => "",
            super::Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        };
        let (only, rules) = filter.condition(5);
        let sql = format!(
            "UPDATE actions \
             SET state = 'running', lease_until = $2, worker_id = $3, claims = claims + 1, \
                 updated_at = $1 \
             WHERE id IN ( \
                 SELECT id FROM actions \
                 WHERE (state = 'pending' \
                        OR (state = 'running' AND (lease_until IS NULL OR lease_until <= $1))) \
                   AND next_attempt_at <= $1 \
                   AND (not_before IS NULL OR not_before <= $1){only} \
                 ORDER BY next_attempt_at, id \
                 LIMIT $4{lock}) \
             RETURNING {ACTION_COLUMNS}"
        );
        let mut query = sqlx::query_as::<_, ActionDbRow>(&sql)
            .bind(to_ms(now))
            .bind(ms_after(now, lease))
            .bind(worker_id)
            .bind(limit(max));
        for rule in rules {
            query = query.bind(text(rule));
        }
        let rows = query.fetch_all(&self.writer).await?;
        let mut actions = rows
            .into_iter()
            .map(ActionRow::try_from)
            .collect::<StoreResult<Vec<_>>>()?;
        actions.sort_by_key(|a| (a.next_attempt_at, a.id));
        Ok(actions)
    }

    /// Ends an action well. Returns `false` (and changes nothing) when the action was
    /// already in a terminal state, e.g. finished by another worker after this one's lease
    /// expired.
    ///
    /// Whoever holds the action: for an operator or a test. A worker writes the outcome
    /// of its attempt with [`Store::complete_action_as`], which applies only while the
    /// action is still leased to it.
    ///
    /// Like every outcome ([`Store::fail_attempt`], [`Store::fail_action`]), committed
    /// through `Store::begin_outcome`: on SQLite without waiting for the disk (see
    /// RELIABILITY.md for why that keeps SPEC §6).
    pub async fn complete_action(
        &self,
        id: i64,
        outcome: ActionOutcome,
        detail: &str,
    ) -> StoreResult<bool> {
        self.complete_action_with_run(id, outcome, detail, None)
            .await
    }

    /// [`Store::complete_action`], and in the same transaction the run as the action left
    /// it ([`Store::upsert_run`]; e.g. a cancel's verifying read): one commit for both.
    pub async fn complete_action_with_run(
        &self,
        id: i64,
        outcome: ActionOutcome,
        detail: &str,
        run: Option<&super::RunRecord>,
    ) -> StoreResult<bool> {
        self.complete(id, Holder::Anyone, outcome, detail, run)
            .await
    }

    /// The outcome of an attempt of worker `worker_id`: [`Store::complete_action_with_run`]
    /// applied only while the action is `running` and leased to that worker. Returns
    /// `false` (and changes nothing but the run) when it is not: its lease ran out and
    /// another worker claimed it (and may be carrying it out now), it was handed back
    /// (pending), or it is finished.
    pub async fn complete_action_as(
        &self,
        id: i64,
        worker_id: &str,
        outcome: ActionOutcome,
        detail: &str,
        run: Option<&super::RunRecord>,
    ) -> StoreResult<bool> {
        self.complete(id, Holder::Worker(worker_id), outcome, detail, run)
            .await
    }

    async fn complete(
        &self,
        id: i64,
        holder: Holder<'_>,
        outcome: ActionOutcome,
        detail: &str,
        run: Option<&super::RunRecord>,
    ) -> StoreResult<bool> {
        let mut tx = self.begin_outcome().await?;
        if let Some(run) = run {
            Store::upsert_run_in(tx.conn(), run).await?;
        }
        let state = match outcome {
            ActionOutcome::Done => ActionState::Done,
            ActionOutcome::Skipped => ActionState::Skipped,
        };
        let sql = format!(
            "UPDATE actions \
             SET state = $2, detail = $3, attempts = attempts + 1, lease_until = NULL, \
                 worker_id = NULL, finished_at = $4, updated_at = $4 \
             WHERE id = $1 AND {}",
            holder.condition(5)
        );
        let query = sqlx::query(&sql)
            .bind(id)
            .bind(state.as_str())
            .bind(text(detail))
            .bind(to_ms(Utc::now()));
        let done = holder.bind(query).execute(tx.conn()).await?;
        tx.commit().await?;
        self.transitioned(id, done.rows_affected()).await
    }

    /// A failed attempt to be retried: `attempts + 1`, the error kept, back to `pending`
    /// and not claimed again before `next_attempt_at`. Returns `false` when the action was
    /// already in a terminal state. Whoever holds the action (see
    /// [`Store::complete_action`]); a worker uses [`Store::fail_attempt_as`].
    pub async fn fail_attempt(
        &self,
        id: i64,
        error: &str,
        next_attempt_at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        self.back_to_pending(id, Holder::Anyone, error, next_attempt_at, 1)
            .await
    }

    /// [`Store::fail_attempt`] of worker `worker_id`'s attempt, applied only while the
    /// action is `running` and leased to it (see [`Store::complete_action_as`]): a late
    /// failure never puts back an action another worker has claimed meanwhile (for a
    /// third to run it while the second is still on it).
    pub async fn fail_attempt_as(
        &self,
        id: i64,
        worker_id: &str,
        error: &str,
        next_attempt_at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        self.back_to_pending(id, Holder::Worker(worker_id), error, next_attempt_at, 1)
            .await
    }

    /// An attempt that could not start (e.g. GitHub's rate limit held the client back
    /// and no request was sent): back to `pending` until `next_attempt_at`, with `note`
    /// as its last error, and **without** counting an attempt, so waiting out a limit
    /// never uses up the action's attempts. Returns `false` when the action was already
    /// in a terminal state. Whoever holds the action (see [`Store::complete_action`]); a
    /// worker uses [`Store::postpone_action_as`].
    pub async fn postpone_action(
        &self,
        id: i64,
        note: &str,
        next_attempt_at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        self.back_to_pending(id, Holder::Anyone, note, next_attempt_at, 0)
            .await
    }

    /// [`Store::postpone_action`] by worker `worker_id`, applied only while the action is
    /// `running` and leased to it (see [`Store::complete_action_as`]).
    pub async fn postpone_action_as(
        &self,
        id: i64,
        worker_id: &str,
        note: &str,
        next_attempt_at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        self.back_to_pending(id, Holder::Worker(worker_id), note, next_attempt_at, 0)
            .await
    }

    async fn back_to_pending(
        &self,
        id: i64,
        holder: Holder<'_>,
        error: &str,
        next_attempt_at: DateTime<Utc>,
        attempts_added: i64,
    ) -> StoreResult<bool> {
        let mut tx = self.begin_outcome().await?;
        let sql = format!(
            "UPDATE actions \
             SET state = 'pending', attempts = attempts + $5, last_error = $2, \
                 next_attempt_at = $3, lease_until = NULL, worker_id = NULL, updated_at = $4 \
             WHERE id = $1 AND {}",
            holder.condition(6)
        );
        let query = sqlx::query(&sql)
            .bind(id)
            .bind(text(error))
            .bind(to_ms(next_attempt_at))
            .bind(to_ms(Utc::now()))
            .bind(attempts_added);
        let done = holder.bind(query).execute(tx.conn()).await?;
        tx.commit().await?;
        self.transitioned(id, done.rows_affected()).await
    }

    /// The action failed for good (a final error, or the last attempt failed):
    /// `attempts + 1`, state `failed`. Returns `false` when the action was already in a
    /// terminal state. Whoever holds the action (see [`Store::complete_action`]); a
    /// worker uses [`Store::fail_action_as`].
    pub async fn fail_action(&self, id: i64, error: &str) -> StoreResult<bool> {
        self.fail(id, Holder::Anyone, error).await
    }

    /// [`Store::fail_action`] of worker `worker_id`'s attempt, applied only while the
    /// action is `running` and leased to it (see [`Store::complete_action_as`]): a late
    /// failure never fails an action another worker is carrying out.
    pub async fn fail_action_as(&self, id: i64, worker_id: &str, error: &str) -> StoreResult<bool> {
        self.fail(id, Holder::Worker(worker_id), error).await
    }

    async fn fail(&self, id: i64, holder: Holder<'_>, error: &str) -> StoreResult<bool> {
        let now = to_ms(Utc::now());
        let mut tx = self.begin_outcome().await?;
        let sql = format!(
            "UPDATE actions \
             SET state = 'failed', attempts = attempts + 1, last_error = $2, \
                 lease_until = NULL, worker_id = NULL, finished_at = $3, updated_at = $3 \
             WHERE id = $1 AND {}",
            holder.condition(4)
        );
        let query = sqlx::query(&sql).bind(id).bind(text(error)).bind(now);
        let done = holder.bind(query).execute(tx.conn()).await?;
        tx.commit().await?;
        self.transitioned(id, done.rows_affected()).await
    }

    /// Operator's retry of a failed action: back to `pending`, due at `now`, attempts
    /// reset (the last error is kept). Returns `false` unless the action had failed.
    pub async fn retry_action(&self, id: i64, now: DateTime<Utc>) -> StoreResult<bool> {
        self.retry_failed_before(id, None, now).await
    }

    /// [`Store::retry_action`], only when the action failed before `before` (the event
    /// that decided it again arrived after the failure; a second processing of the event
    /// that first decided it does not re-arm it).
    pub async fn retry_failed_before(
        &self,
        id: i64,
        before: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE actions \
             SET state = 'pending', attempts = 0, next_attempt_at = $2, not_before = NULL, \
                 finished_at = NULL, updated_at = $2 \
             WHERE id = $1 AND state = 'failed' AND ($3 IS NULL OR finished_at < $3)",
        )
        .bind(id)
        .bind(to_ms(now))
        .bind(before.map(to_ms))
        .execute(&self.writer)
        .await?;
        self.transitioned(id, done.rows_affected()).await
    }

    /// The rules with a live (not dry-run) decision on the action `id`, each once, with
    /// its kind, in the order they first decided it. The executor carries the action out
    /// for the first of them that is not in dry-run mode now (see [`ActionRow::rule`]).
    pub async fn live_deciders(&self, id: i64) -> StoreResult<Vec<(String, String)>> {
        let mut conn = self.pool.acquire().await?;
        live_deciders_in(&mut conn, id).await
    }

    /// Records that worker `worker_id` carries the action `id` out for `rule` (of
    /// `kind`), a rule with a live decision on it, because the rule it was carried out
    /// for is in dry-run mode now (SPEC §2: dry run is per rule; §6: several rules'
    /// decisions, one action): its summary credits `rule` with the cancel
    /// ([`Store::cancel_reason`]), and its metrics count it under `rule`. Applied only
    /// while the action is `running` and leased to that worker; `false` otherwise.
    pub async fn act_for_rule_as(
        &self,
        id: i64,
        worker_id: &str,
        rule: &str,
        kind: &str,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE actions SET rule = $2, kind = $3 \
             WHERE id = $1 AND state = 'running' AND worker_id = $4",
        )
        .bind(id)
        .bind(text(rule))
        .bind(text(kind))
        .bind(worker_id)
        .execute(&self.writer)
        .await?;
        self.transitioned(id, done.rows_affected()).await
    }

    /// Dry run holds the action `id` back (SPEC §6: dry run mutates nothing): worker
    /// `worker_id` ends it `skipped` with `detail` (which begins with [`DRY_RUN_HOLD`])
    /// without carrying it out, and without counting an attempt, unless a rule with a
    /// live decision on it is live now (`live` says which rule names are, from the
    /// configuration). That is checked again here, in the store's write transaction, the
    /// one [`Store::record_decisions`] takes: a live decision recorded since the executor
    /// looked (another rule's, on another replica) is not lost under a `skipped` that
    /// nothing re-opens; the action is then handed back (`pending`, due at once, no
    /// attempt counted) to be carried out for that rule, and `false` returned. `false`
    /// too when the action is no longer `running` under this worker's lease. An action
    /// with no live decision on record (pruned) is judged by its own rule.
    pub async fn hold_action_as(
        &self,
        id: i64,
        worker_id: &str,
        detail: &str,
        live: impl Fn(&str) -> bool,
    ) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let mut rules: Vec<String> = live_deciders_in(&mut tx, id)
            .await?
            .into_iter()
            .map(|(rule, _)| rule)
            .collect();
        if rules.is_empty() {
            rules.extend(
                sqlx::query_scalar::<_, String>("SELECT rule FROM actions WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?,
            );
        }
        let now = to_ms(Utc::now());
        let held = !rules.iter().any(|r| live(r));
        let done = if held {
            sqlx::query(
                "UPDATE actions \
                 SET state = 'skipped', detail = $2, lease_until = NULL, worker_id = NULL, \
                     finished_at = $3, updated_at = $3 \
                 WHERE id = $1 AND state = 'running' AND worker_id = $4",
            )
            .bind(id)
            .bind(text(detail))
            .bind(now)
            .bind(worker_id)
            .execute(&mut *tx)
            .await?
        } else {
            sqlx::query(
                "UPDATE actions \
                 SET state = 'pending', next_attempt_at = $2, lease_until = NULL, \
                     worker_id = NULL, updated_at = $2 \
                 WHERE id = $1 AND state = 'running' AND worker_id = $3",
            )
            .bind(id)
            .bind(now)
            .bind(worker_id)
            .execute(&mut *tx)
            .await?
        };
        tx.commit().await?;
        Ok(self.transitioned(id, done.rows_affected()).await? && held)
    }

    /// Hands back every action leased to `worker_id` (graceful shutdown): `pending`
    /// again, claimable at once. Returns how many.
    pub async fn release_leases(&self, worker_id: &str) -> StoreResult<u64> {
        let done = sqlx::query(
            "UPDATE actions \
             SET state = 'pending', lease_until = NULL, worker_id = NULL, updated_at = $2 \
             WHERE state = 'running' AND worker_id = $1",
        )
        .bind(worker_id)
        .bind(to_ms(Utc::now()))
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected())
    }

    /// Extends to `until` the leases that `worker_id` holds on the actions `ids` (those
    /// it is still carrying out: a heartbeat, so that no other process takes over an
    /// action whose attempt outlasts one lease). An action no longer running, or leased
    /// to another worker meanwhile, is left alone. Returns the ids whose lease was not
    /// extended: those are no longer this worker's (taken over by another worker after
    /// the lease ran out, handed back, or finished), and the outcome of its attempt is
    /// no longer its to write.
    pub async fn renew_leases(
        &self,
        ids: &[i64],
        worker_id: &str,
        until: DateTime<Utc>,
    ) -> StoreResult<Vec<i64>> {
        let mut lost = Vec::new();
        for id in ids {
            let renewed = sqlx::query(
                "UPDATE actions SET lease_until = $1 \
                 WHERE id = $2 AND state = 'running' AND worker_id = $3",
            )
            .bind(to_ms(until))
            .bind(*id)
            .bind(worker_id)
            .execute(&self.writer)
            .await?
            .rows_affected();
            if renewed == 0 {
                lost.push(*id);
            }
        }
        Ok(lost)
    }

    /// Hands back the leased actions of every worker that `alive` says is gone:
    /// `pending` again, claimable at once. For a SQLite store at startup, where a lease
    /// still held is a dead process's unless another live process on the machine (a
    /// `sweep`, say) shares the file. Returns how many.
    pub async fn release_leases_unless(&self, alive: impl Fn(&str) -> bool) -> StoreResult<u64> {
        let workers: Vec<Option<String>> =
            sqlx::query_scalar("SELECT DISTINCT worker_id FROM actions WHERE state = 'running'")
                .fetch_all(&self.pool)
                .await?;
        let mut released = 0;
        for w in workers {
            match w {
                Some(w) if alive(&w) => {}
                Some(w) => released += self.release_leases(&w).await?,
                // A running action with no holder: nobody will finish it.
                None => {
                    released += sqlx::query(
                        "UPDATE actions \
                         SET state = 'pending', lease_until = NULL, updated_at = $1 \
                         WHERE state = 'running' AND worker_id IS NULL",
                    )
                    .bind(to_ms(Utc::now()))
                    .execute(&self.writer)
                    .await?
                    .rows_affected()
                }
            }
        }
        Ok(released)
    }

    /// Hands back every leased action, whoever holds it: `pending` again, claimable at
    /// once. Returns how many.
    pub async fn release_all_leases(&self) -> StoreResult<u64> {
        let done = sqlx::query(
            "UPDATE actions \
             SET state = 'pending', lease_until = NULL, worker_id = NULL, updated_at = $1 \
             WHERE state = 'running'",
        )
        .bind(to_ms(Utc::now()))
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected())
    }

    /// One action by id.
    pub async fn get_action(&self, id: i64) -> StoreResult<Option<ActionRow>> {
        let row: Option<ActionDbRow> = sqlx::query_as(&format!(
            "SELECT {ACTION_COLUMNS} FROM actions WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(ActionRow::try_from).transpose()
    }

    /// One action by its key (`cancel:RUN`).
    pub async fn action_by_key(&self, action_key: &str) -> StoreResult<Option<ActionRow>> {
        let row: Option<ActionDbRow> = sqlx::query_as(&format!(
            "SELECT {ACTION_COLUMNS} FROM actions WHERE action_key = $1"
        ))
        .bind(text(action_key))
        .fetch_optional(&self.pool)
        .await?;
        row.map(ActionRow::try_from).transpose()
    }

    /// Actions not finished (pending or running), in the order they fall due.
    pub async fn pending_actions(&self) -> StoreResult<Vec<ActionRow>> {
        let rows: Vec<ActionDbRow> = sqlx::query_as(&format!(
            "SELECT {ACTION_COLUMNS} FROM actions \
             WHERE state IN ('pending', 'running') \
             ORDER BY next_attempt_at, id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(ActionRow::try_from).collect()
    }

    /// The newest `max` failed actions.
    pub async fn failed_actions(&self, max: impl Into<i64>) -> StoreResult<Vec<ActionRow>> {
        let rows: Vec<ActionDbRow> = sqlx::query_as(&format!(
            "SELECT {ACTION_COLUMNS} FROM actions \
             WHERE state = 'failed' \
             ORDER BY finished_at DESC, id DESC \
             LIMIT $1"
        ))
        .bind(limit(max))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(ActionRow::try_from).collect()
    }

    /// Number of actions in each state, every state listed (zero included), in the order
    /// `pending`, `running`, `done`, `skipped`, `failed`.
    pub async fn action_counts(&self) -> StoreResult<Vec<(String, i64)>> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT state, COUNT(*) FROM actions GROUP BY state")
                .fetch_all(&self.pool)
                .await?;
        let mut counts: Vec<(String, i64)> = ActionState::ALL
            .iter()
            .map(|s| (s.as_str().to_string(), 0))
            .collect();
        for (state, n) in rows {
            let state: ActionState = state.parse()?;
            counts[state as usize].1 = n;
        }
        Ok(counts)
    }

    /// Actions not finished (pending or running), due or not.
    pub async fn queue_depth(&self) -> StoreResult<i64> {
        Ok(
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM actions WHERE state IN ('pending', 'running')",
            )
            .fetch_one(&self.pool)
            .await?,
        )
    }

    /// When the executor has something to do next: the earliest time a pending action
    /// falls due or a running one's lease expires. `None` when the queue is empty.
    pub async fn next_action_due(&self) -> StoreResult<Option<DateTime<Utc>>> {
        let ms: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(CASE \
                 WHEN state = 'running' THEN COALESCE(lease_until, next_attempt_at) \
                 WHEN not_before IS NOT NULL AND not_before > next_attempt_at THEN not_before \
                 ELSE next_attempt_at END) \
             FROM actions WHERE state IN ('pending', 'running')",
        )
        .fetch_one(&self.pool)
        .await?;
        opt_from_ms(ms)
    }

    /// Decisions newest first, optionally since a time and/or of one rule, each with the
    /// outcome of its action (SPEC §1 `audit`). `since` keeps the decisions made since
    /// then, and the older ones whose action changed since then (carried out, failed,
    /// re-armed by a later sweep or retried): what happened in that time. They are still
    /// ordered by when they were decided.
    ///
    /// Each part is found by an index: never a read of the whole audit log, however long
    /// it is. The first page of [`Store::audit_page`].
    pub async fn audit(
        &self,
        since: Option<DateTime<Utc>>,
        rule: Option<&str>,
        max: impl Into<i64>,
    ) -> StoreResult<Vec<AuditEntry>> {
        let page = self.audit_page(since, rule, None, max).await?;
        Ok(page.into_iter().map(|(_, e)| e).collect())
    }

    /// [`Store::audit`] from a cursor on: the entries after `before` (when given) in its
    /// order, newest first (decision time, then decision id: a total order), at most
    /// `max`, each with its own cursor. The last one's cursor, as the next call's
    /// `before`, gives the next page (`GET /api/actions`).
    pub async fn audit_page(
        &self,
        since: Option<DateTime<Utc>>,
        rule: Option<&str>,
        before: Option<AuditCursor>,
        max: impl Into<i64>,
    ) -> StoreResult<Vec<(AuditCursor, AuditEntry)>> {
        let sql = audit_sql(since.is_some(), rule.is_some(), before.is_some());
        let mut query = sqlx::query_as::<_, AuditPageRow>(&sql).bind(limit(max));
        if let Some(since) = since {
            query = query.bind(to_ms(since));
        }
        if let Some(rule) = rule {
            query = query.bind(text(rule));
        }
        if let Some(before) = before {
            query = query.bind(before.at_ms).bind(before.id);
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.into_iter()
            .map(|r| {
                let cursor = AuditCursor {
                    at_ms: r.row.at,
                    id: r.decision_id,
                };
                Ok((cursor, AuditEntry::try_from(r.row)?))
            })
            .collect()
    }

    /// The decisions with these ids (any order in, newest first out).
    pub async fn audit_of_decisions(&self, ids: &[i64]) -> StoreResult<Vec<AuditEntry>> {
        self.audit_where_in("d.id", ids).await
    }

    /// The decisions of the actions with these ids (any order in, newest first out):
    /// every live decision linked to each (a dry-run decision has no action).
    pub async fn audit_of_actions_by_id(&self, ids: &[i64]) -> StoreResult<Vec<AuditEntry>> {
        self.audit_where_in("d.action_id", ids).await
    }

    /// The audit entries whose `column` (`d.id` or `d.action_id`) is one of `ids`,
    /// newest first, read 500 ids at a time.
    async fn audit_where_in(
        &self,
        column: &'static str,
        ids: &[i64],
    ) -> StoreResult<Vec<AuditEntry>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(500) {
            let list: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "{AUDIT_SELECT} WHERE {column} IN ({}) ORDER BY d.at DESC, d.id DESC",
                list.join(", ")
            );
            let mut q = sqlx::query_as::<_, AuditRow>(&sql);
            for id in chunk {
                q = q.bind(*id);
            }
            for row in q.fetch_all(&self.pool).await? {
                out.push(AuditEntry::try_from(row)?);
            }
        }
        // Newest first across the chunks (a stable sort: within a chunk, ties at one
        // decision time stay newest decision first).
        out.sort_by_key(|e| std::cmp::Reverse(e.at));
        Ok(out)
    }

    /// The actions pending or being carried out (`planned` in [`Store::audit`]), newest
    /// first, at most `max`: however many decisions came after them (the status page,
    /// SPEC §5). One entry per action, see [`Store::failed_actions_audit`].
    pub async fn pending_actions_audit(&self, max: impl Into<i64>) -> StoreResult<Vec<AuditEntry>> {
        self.audit_of_actions("state IN ('pending', 'running')", max.into())
            .await
    }

    /// The actions that failed for good, newest first, at most `max`: a failed action
    /// stays visible however many decisions came after it (the status page, SPEC §6).
    ///
    /// One entry per action, whichever number of rules decided it: the first decision's
    /// time and reason, and in `rule` every rule that decided it, in the order they did,
    /// separated by `, ` (SPEC §6: carried out once, each decision recorded).
    pub async fn failed_actions_audit(&self, max: impl Into<i64>) -> StoreResult<Vec<AuditEntry>> {
        self.audit_of_actions("state = 'failed'", max.into()).await
    }

    /// The actions in `states` (a fixed condition on the `actions` table's columns), newest
    /// first, at most `max`, each from its decisions that are not dry runs.
    async fn audit_of_actions(
        &self,
        states: &'static str,
        max: i64,
    ) -> StoreResult<Vec<AuditEntry>> {
        let rows: Vec<ActionAuditRow> = sqlx::query_as(&format!(
            "SELECT d.action_id AS action_id, {} \
             FROM decisions d JOIN actions a ON a.id = d.action_id \
             WHERE d.dry_run = 0 AND d.action_id IN ( \
                 SELECT id FROM actions WHERE {states} \
                 ORDER BY created_at DESC, id DESC LIMIT $1) \
             ORDER BY a.created_at DESC, a.id DESC, d.at, d.id",
            audit_columns!()
        ))
        .bind(limit(max))
        .fetch_all(&self.pool)
        .await?;
        // Rows come grouped by action, its first decision first.
        let mut out: Vec<(i64, AuditEntry, Vec<String>)> = Vec::new();
        for r in rows {
            match out.last_mut() {
                Some((id, first, rules)) if *id == r.action_id => {
                    if !rules.contains(&r.row.rule) {
                        first.rule.push_str(", ");
                        first.rule.push_str(&r.row.rule);
                        rules.push(r.row.rule);
                    }
                }
                _ => {
                    let rules = vec![r.row.rule.clone()];
                    out.push((r.action_id, AuditEntry::try_from(r.row)?, rules));
                }
            }
        }
        Ok(out.into_iter().map(|(_, e, _)| e).collect())
    }

    /// The decisions about one run, newest first (a summary names the rule that cancelled
    /// the run, and why).
    pub async fn decisions_for_run(&self, run_id: &str) -> StoreResult<Vec<AuditEntry>> {
        let rows: Vec<AuditRow> = sqlx::query_as(&format!(
            "{AUDIT_SELECT} WHERE d.run_id = $1 ORDER BY d.at DESC, d.id DESC"
        ))
        .bind(text(run_id))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(AuditEntry::try_from).collect()
    }

    /// Who cancelled `run_id`, when its cancel action's own request cancelled the run: the
    /// decision of the rule the action was carried out for ([`ActionRow::rule`]: the first
    /// to decide it, or the first live one when that rule was in dry-run mode as the
    /// cancel fell due), else the first decision linked to it. Its own request cancelled
    /// the run when the API answered it with success, which
    /// the executor notes as [`CANCEL_TOOK_EFFECT`] at the start of the action's `detail`
    /// (done) or `last_error` (an attempt after which the run was still in progress:
    /// being verified or retried). A cancel answered "already cancelled" or "already
    /// finished" (404/409/422: a user, CI or fail-fast got there first), or refused for a
    /// run that was over, counts as done but did not cancel the run: `None`, and the
    /// summary names whoever the API says cancelled it. See also
    /// [`Store::cancel_under_way`].
    pub async fn cancel_reason(&self, run_id: &str) -> StoreResult<Option<CancelReason>> {
        let row: Option<(String, String, String, i64)> = sqlx::query_as(
            "SELECT d.rule, d.kind, d.reason, d.at \
             FROM decisions d JOIN actions a ON a.id = d.action_id \
             WHERE a.run_id = $1 AND a.action = 'cancel' \
               AND a.state IN ('pending', 'running', 'done') \
               AND (a.detail LIKE $2 OR a.last_error LIKE $2) \
             ORDER BY CASE WHEN d.rule = a.rule THEN 0 ELSE 1 END, d.at, d.id \
             LIMIT 1",
        )
        .bind(text(run_id))
        .bind(format!("{CANCEL_TOOK_EFFECT}%"))
        .fetch_optional(&self.pool)
        .await?;
        row.map(|(rule, kind, reason, at)| {
            Ok(CancelReason {
                rule,
                kind,
                reason,
                at: from_ms(at)?,
            })
        })
        .transpose()
    }

    /// Whether a cancel of `run_id` is being carried out right now (claimed, its lease
    /// not run out) without its outcome known yet: whether it will have cancelled the
    /// run ([`Store::cancel_reason`]) is not known until it ends.
    pub async fn cancel_under_way(&self, run_id: &str, now: DateTime<Utc>) -> StoreResult<bool> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM actions \
             WHERE run_id = $1 AND action = 'cancel' AND state = 'running' \
               AND lease_until > $2",
        )
        .bind(text(run_id))
        .bind(to_ms(now))
        .fetch_one(&self.pool)
        .await?;
        Ok(n > 0)
    }

    /// Decisions recorded per rule, by rule name.
    pub async fn rule_hit_counts(&self) -> StoreResult<Vec<(String, i64)>> {
        Ok(
            sqlx::query_as("SELECT rule, COUNT(*) FROM decisions GROUP BY rule ORDER BY rule")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Decisions per rule and outcome, by rule then outcome (for `/metrics`).
    pub async fn decision_counts(&self) -> StoreResult<Vec<DecisionCount>> {
        let rows: Vec<(String, i64, Option<String>, i64)> = sqlx::query_as(
            "SELECT d.rule, d.dry_run, a.state, COUNT(*) \
             FROM decisions d LEFT JOIN actions a ON a.id = d.action_id \
             GROUP BY d.rule, d.dry_run, a.state",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut counts: BTreeMap<(String, Outcome), i64> = BTreeMap::new();
        for (rule, dry_run, state, n) in rows {
            let state = state.as_deref().map(ActionState::from_str).transpose()?;
            *counts
                .entry((rule, Outcome::of(dry_run != 0, state)))
                .or_default() += n;
        }
        Ok(counts
            .into_iter()
            .map(|((rule, outcome), count)| DecisionCount {
                rule,
                outcome,
                count,
            })
            .collect())
    }

    /// Forgets the audit log before `before` (`[store] keep_audit`): decisions made
    /// before it whose action (if they have one) finished before it too, then finished
    /// actions that no decision is left to show. An action still to do or running is kept
    /// with its decisions, whatever their age. Deletes [`super::PRUNE_CHUNK`] rows per
    /// statement, so that a large backlog never holds the write lock for long. Returns
    /// the numbers of decisions and actions deleted.
    ///
    /// Counts read from the audit afterwards (`/api/rules`, the status page) cover what
    /// is kept. A decision forgotten no longer deduplicates: an event that decides the
    /// same again, later, records it again (and the executor finds the run cancelled or
    /// gone).
    ///
    /// Each statement runs in a write transaction of its own (`Store::begin_write`):
    /// on PostgreSQL under the write lock that [`Store::record_events`] holds, so that
    /// it never runs while an event's record links a new decision to an old finished
    /// action. Without it, the action could be deleted under that decision (left with no
    /// action, `planned` for ever) or the decision refused (SQLSTATE 23503). A chunk
    /// holds the lock for one short statement: the intake's commits go on between them.
    pub async fn prune_audit(&self, before: DateTime<Utc>) -> StoreResult<(u64, u64)> {
        let before = to_ms(before);
        let decisions = self
            .delete_audit_in_chunks(
                "DELETE FROM decisions WHERE id IN (SELECT d.id FROM decisions d \
                 LEFT JOIN actions a ON a.id = d.action_id \
                 WHERE d.at < $1 AND (d.action_id IS NULL OR \
                 (a.state IN ('done', 'skipped', 'failed') AND a.finished_at < $1)) \
                 LIMIT $2)",
                before,
            )
            .await?;
        let actions = self
            .delete_audit_in_chunks(
                "DELETE FROM actions WHERE id IN (SELECT a.id FROM actions a \
                 WHERE a.state IN ('done', 'skipped', 'failed') AND a.finished_at < $1 \
                 AND NOT EXISTS (SELECT 1 FROM decisions d WHERE d.action_id = a.id) \
                 LIMIT $2)",
                before,
            )
            .await?;
        Ok((decisions, actions))
    }

    /// Runs `sql` (a `DELETE` of at most `$2` rows older than `$1`), each time in a write
    /// transaction of its own, until it deletes fewer than [`super::PRUNE_CHUNK`];
    /// returns the rows deleted in all.
    async fn delete_audit_in_chunks(&self, sql: &str, before: i64) -> StoreResult<u64> {
        let mut total = 0;
        loop {
            let mut tx = self.begin_write().await?;
            let done = sqlx::query(sql)
                .bind(before)
                .bind(super::PRUNE_CHUNK)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            total += done.rows_affected();
            if done.rows_affected() < super::PRUNE_CHUNK as u64 {
                return Ok(total);
            }
        }
    }

    /// `Ok(true)` when an update touched the row; `Ok(false)` when the row exists but was
    /// not in a state the update applies to; `NotFound` otherwise.
    async fn transitioned(&self, id: i64, rows_affected: u64) -> StoreResult<bool> {
        if rows_affected > 0 {
            return Ok(true);
        }
        let exists: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM actions WHERE id = $1")
            .bind(id)
            .fetch_one(&self.pool)
            .await?;
        if exists == 0 {
            return Err(StoreError::not_found("action", id));
        }
        Ok(false)
    }
}

/// Whose outcome an outcome write applies for.
#[derive(Debug, Clone, Copy)]
enum Holder<'a> {
    /// Whoever holds the action (an operator, a test): it applies to any unfinished
    /// action, pending or running.
    Anyone,
    /// The worker whose attempt it is: it applies only while the action is `running`
    /// and leased to this worker.
    Worker(&'a str),
}

impl Holder<'_> {
    /// The condition on the action's row; a worker's id is bind parameter `param`.
    fn condition(self, param: usize) -> String {
        match self {
            Holder::Anyone => "state IN ('pending', 'running')".to_string(),
            Holder::Worker(_) => format!("state = 'running' AND worker_id = ${param}"),
        }
    }

    /// Binds the worker's id (the last parameter) when [`Holder::condition`] names it.
    fn bind<'q>(
        self,
        query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>
    where
        Self: 'q,
    {
        match self {
            Holder::Anyone => query,
            Holder::Worker(w) => query.bind(w),
        }
    }
}

/// [`Store::live_deciders`] on `conn`.
async fn live_deciders_in(conn: &mut AnyConnection, id: i64) -> StoreResult<Vec<(String, String)>> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT rule, kind FROM decisions \
         WHERE action_id = $1 AND dry_run = 0 \
         ORDER BY at, id",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    let mut out: Vec<(String, String)> = Vec::with_capacity(rows.len());
    for (rule, kind) in rows {
        if !out.iter().any(|(r, _)| *r == rule) {
            out.push((rule, kind));
        }
    }
    Ok(out)
}

/// The body of [`Store::record_decisions`], on an open write transaction.
async fn record_in(
    conn: &mut AnyConnection,
    decisions: &[NewDecision],
    mut lease: Option<&mut LeaseNew<'_>>,
) -> StoreResult<(Vec<RecordedDecision>, Vec<ActionRow>)> {
    let now = to_ms(Utc::now());
    let mut recorded = Vec::with_capacity(decisions.len());
    let mut leased = Vec::new();
    for d in decisions {
        d.action.parse::<ActionKind>()?;
        let (action_id, new_action) = if d.dry_run {
            (None, false)
        } else {
            let (id, new, row) = upsert_action(conn, d, now, lease.as_deref_mut()).await?;
            leased.extend(row);
            (Some(id), new)
        };

        let inserted: Option<i64> = sqlx::query_scalar(
            "INSERT INTO decisions (at, rule, kind, action, action_key, run_id, project_id, \
                 branch, sha, reason, dry_run, not_before, action_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
             ON CONFLICT (rule, action_key, dry_run) DO NOTHING \
             RETURNING id",
        )
        .bind(to_ms(d.at))
        .bind(text(&d.rule))
        .bind(text(&d.kind))
        .bind(text(&d.action))
        .bind(text(&d.action_key))
        .bind(text(&d.run_id))
        .bind(text(&d.project_id))
        .bind(opt_text(&d.branch))
        .bind(opt_text(&d.sha))
        .bind(text(&d.reason))
        .bind(i64::from(d.dry_run))
        .bind(d.not_before.map(to_ms))
        .bind(action_id)
        .fetch_optional(&mut *conn)
        .await?;
        let (decision_id, new_decision) = match inserted {
            Some(id) => (id, true),
            None => {
                let (id, linked): (i64, Option<i64>) = sqlx::query_as(
                    "SELECT id, action_id FROM decisions \
                     WHERE rule = $1 AND action_key = $2 AND dry_run = $3",
                )
                .bind(text(&d.rule))
                .bind(text(&d.action_key))
                .bind(i64::from(d.dry_run))
                .fetch_one(&mut *conn)
                .await?;
                if linked.is_none() && action_id.is_some() {
                    sqlx::query("UPDATE decisions SET action_id = $2 WHERE id = $1")
                        .bind(id)
                        .bind(action_id)
                        .execute(&mut *conn)
                        .await?;
                }
                (id, false)
            }
        };
        recorded.push(RecordedDecision {
            decision_id,
            action_id,
            new_action,
            new_decision,
        });
    }
    Ok((recorded, leased))
}

/// The statement of [`upsert_action`]'s insert (the text built once, not per action).
static INSERT_ACTION: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "INSERT INTO actions (action_key, action, rule, kind, run_id, project_id, branch, sha, \
             payload, state, not_before, next_attempt_at, created_at, updated_at, detail, \
             finished_at, lease_until, worker_id, claims) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $13, $10, $11, $12, $12, $14, $15, $16, \
             $17, $18) \
         ON CONFLICT (action_key) DO NOTHING \
         RETURNING {ACTION_COLUMNS}"
    )
});

/// New actions that are due, leased to a worker as they are created ([`EventRecord::
/// claim_for`]): no claim of their own afterwards.
struct LeaseNew<'a> {
    worker_id: &'a str,
    /// Due means `next_attempt_at` and `not_before` (when set) at or before this (ms).
    now: i64,
    /// The lease's end (ms).
    until: i64,
    /// How many more may be leased.
    left: usize,
}

/// Creates the action of a decision, or finds the one with the same key (and re-opens it
/// when dry run held it back, see [`DRY_RUN_HOLD`]). Returns its id, whether it was
/// created, and the action when it was created leased to `lease`'s worker (it is due, and
/// `lease` has room left).
async fn upsert_action(
    conn: &mut AnyConnection,
    d: &NewDecision,
    now: i64,
    lease: Option<&mut LeaseNew<'_>>,
) -> StoreResult<(i64, bool, Option<ActionRow>)> {
    let next_attempt_at = to_ms(d.at);
    let not_before = d.not_before.map(to_ms);
    let lease = lease.filter(|l| {
        l.left > 0
            && d.skip.is_none()
            && next_attempt_at <= l.now
            && not_before.is_none_or(|t| t <= l.now)
    });
    let (state, finished_at) = match (&d.skip, &lease) {
        (Some(_), _) => (ActionState::Skipped, Some(now)),
        (None, Some(_)) => (ActionState::Running, None),
        (None, None) => (ActionState::Pending, None),
    };
    let (lease_until, worker_id) = match &lease {
        Some(l) => (Some(l.until), Some(l.worker_id)),
        None => (None, None),
    };
    let inserted: Option<ActionDbRow> = sqlx::query_as(&INSERT_ACTION)
        .bind(text(&d.action_key))
        .bind(text(&d.action))
        .bind(text(&d.rule))
        .bind(text(&d.kind))
        .bind(text(&d.run_id))
        .bind(text(&d.project_id))
        .bind(opt_text(&d.branch))
        .bind(opt_text(&d.sha))
        .bind(opt_text(&d.payload))
        .bind(not_before)
        .bind(next_attempt_at)
        .bind(now)
        .bind(state.as_str())
        .bind(opt_text(&d.skip))
        .bind(finished_at)
        .bind(lease_until)
        .bind(worker_id)
        .bind(i64::from(lease.is_some()))
        .fetch_optional(&mut *conn)
        .await?;
    if let Some(row) = inserted {
        let row = ActionRow::try_from(row)?;
        let id = row.id;
        return Ok(match lease {
            Some(l) => {
                l.left -= 1;
                (id, true, Some(row))
            }
            None => (id, true, None),
        });
    }

    let (id, state, not_before, detail): (i64, String, Option<i64>, Option<String>) =
        sqlx::query_as("SELECT id, state, not_before, detail FROM actions WHERE action_key = $1")
            .bind(text(&d.action_key))
            .fetch_one(&mut *conn)
            .await?;
    let mut state = state.parse::<ActionState>()?;
    // A live decision of an action that dry run held back (the emergency stop lifted, the
    // next poll deciding it again; or another rule, live, deciding what a rule in dry run
    // decided): back in the queue, due now, to be carried out once. In this transaction,
    // under the store's write lock (`Store::begin_write`), as is `Store::hold_action_as`:
    // a hold and a decision never pass each other, and only one of several decisions
    // re-opens it. A dry-run decision never gets here. Any other `skipped` is final: the
    // executor looked and found nothing to do (the summary unchanged, the run gone, the
    // rule removed), or it is a record that is never carried out (a circuit breaker's),
    // so a decision of it again (a redelivered event, the next poll) adds nothing.
    if state == ActionState::Skipped
        && d.skip.is_none()
        && detail
            .as_deref()
            .is_some_and(|x| x.starts_with(DRY_RUN_HOLD))
    {
        let reopened = sqlx::query(
            "UPDATE actions \
             SET state = 'pending', detail = NULL, finished_at = NULL, next_attempt_at = $2, \
                 updated_at = $2 \
             WHERE id = $1 AND state = 'skipped'",
        )
        .bind(id)
        .bind(now)
        .execute(&mut *conn)
        .await?;
        if reopened.rows_affected() > 0 {
            state = ActionState::Pending;
        }
    }
    // Another rule wants it sooner: the earliest grace wins while the action still waits.
    let wanted = d.not_before.map(to_ms);
    let sooner = match (not_before, wanted) {
        (Some(current), Some(wanted)) => wanted < current,
        (Some(_), None) => true,
        (None, _) => false,
    };
    if sooner && state == ActionState::Pending {
        sqlx::query("UPDATE actions SET not_before = $2, updated_at = $3 WHERE id = $1")
            .bind(id)
            .bind(wanted)
            .bind(now)
            .execute(&mut *conn)
            .await?;
    }
    Ok((id, false, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_follow_dry_run_and_action_state() {
        assert_eq!(Outcome::of(true, None), Outcome::DryRun);
        assert_eq!(Outcome::of(true, Some(ActionState::Done)), Outcome::DryRun);
        assert_eq!(
            Outcome::of(false, Some(ActionState::Pending)),
            Outcome::Planned
        );
        assert_eq!(
            Outcome::of(false, Some(ActionState::Running)),
            Outcome::Planned
        );
        assert_eq!(Outcome::of(false, Some(ActionState::Done)), Outcome::Done);
        assert_eq!(
            Outcome::of(false, Some(ActionState::Skipped)),
            Outcome::Skipped
        );
        assert_eq!(
            Outcome::of(false, Some(ActionState::Failed)),
            Outcome::Failed
        );
        for o in [
            Outcome::Planned,
            Outcome::DryRun,
            Outcome::Done,
            Outcome::Failed,
            Outcome::Skipped,
        ] {
            assert_eq!(serde_json::to_value(o).unwrap(), o.as_str());
        }
    }

    #[test]
    fn enums_round_trip_through_their_stored_spelling() {
        for k in [
            ActionKind::Cancel,
            ActionKind::Delete,
            ActionKind::Summarize,
        ] {
            assert_eq!(k.as_str().parse::<ActionKind>().unwrap(), k);
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
        for s in [
            ActionState::Pending,
            ActionState::Running,
            ActionState::Done,
            ActionState::Skipped,
            ActionState::Failed,
        ] {
            assert_eq!(s.as_str().parse::<ActionState>().unwrap(), s);
        }
        assert!(matches!(
            "dry_run".parse::<ActionState>(),
            Err(StoreError::Corrupt(_))
        ));
    }

    /// SQLite's plan of [`Store::audit_page`]'s statement, one line per step.
    async fn audit_plan(store: &Store, since: bool, rule: bool, before: bool) -> Vec<String> {
        let explain = format!("EXPLAIN QUERY PLAN {}", audit_sql(since, rule, before));
        let mut q = sqlx::query_as::<_, (i64, i64, i64, String)>(&explain).bind(500i64);
        if since {
            q = q.bind(1_767_225_600_000i64);
        }
        if rule {
            q = q.bind("cancel-superseded");
        }
        if before {
            q = q.bind(1_767_312_000_000i64).bind(42i64);
        }
        crate::store::query_plan(store, q).await
    }

    /// `since` finds the decisions made since then by their time and the actions changed
    /// since then by theirs: neither the decisions nor the actions are read in full
    /// (`SCAN`, with or without an index), only searched. A page's cursor (`before`)
    /// bounds the same searches.
    #[tokio::test]
    async fn the_audit_since_a_time_searches_indexes_and_scans_no_table() {
        let store = Store::connect("sqlite::memory:").await.unwrap();
        for (rule, before) in [(false, false), (true, false), (false, true), (true, true)] {
            let plan = audit_plan(&store, true, rule, before).await;
            let scans: Vec<_> = plan
                .iter()
                .filter(|step| step.starts_with("SCAN d") || step.starts_with("SCAN a"))
                .filter(|step| {
                    !step.starts_with("SCAN decided") && !step.starts_with("SCAN changed")
                })
                .collect();
            assert!(scans.is_empty(), "rule {rule}, before {before}: {plan:#?}");
            let by_time = match (rule, before) {
                (true, false) => "SEARCH d USING INDEX decisions_rule_at_idx (rule=? AND at>?)",
                (false, false) => "SEARCH d USING INDEX decisions_at_idx (at>?)",
                (true, true) => {
                    "SEARCH d USING INDEX decisions_rule_at_idx (rule=? AND at>? AND at<?)"
                }
                (false, true) => "SEARCH d USING INDEX decisions_at_idx (at>? AND at<?)",
            };
            for step in [
                by_time,
                "SEARCH a USING INDEX actions_updated_idx (updated_at>?)",
                "SEARCH d USING INDEX decisions_action_idx (action_id=?)",
            ] {
                assert!(
                    plan.iter().any(|s| s == step),
                    "rule {rule}, before {before}: no {step}: {plan:#?}"
                );
            }
        }
        // Without `since`: the newest by an index (from the cursor on), read until the
        // limit.
        for (rule, before) in [(false, false), (true, false), (false, true), (true, true)] {
            let plan = audit_plan(&store, false, rule, before).await;
            assert!(
                !plan
                    .iter()
                    .any(|step| step == "SCAN d" || step.starts_with("USE TEMP B-TREE")),
                "rule {rule}, before {before}: {plan:#?}"
            );
            if before {
                let by_time = if rule {
                    "SEARCH d USING INDEX decisions_rule_at_idx (rule=? AND at<?)"
                } else {
                    "SEARCH d USING INDEX decisions_at_idx (at<?)"
                };
                assert!(
                    plan.iter().any(|s| s == by_time),
                    "rule {rule}: no {by_time}: {plan:#?}"
                );
            }
        }
    }

    #[test]
    fn outcomes_compare_with_and_print_as_their_spelling() {
        assert!(Outcome::Failed == "failed");
        assert!(Outcome::DryRun != "dry-run");
        assert_eq!(format!("[{:<8}]", Outcome::Done), "[done    ]");
        assert_eq!(format!("{}", ActionState::Running), "running");
        for (i, s) in ActionState::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i);
        }
    }
}
