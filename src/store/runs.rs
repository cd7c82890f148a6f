//! Runs known to the bot: the last observation of each run (from a webhook, a poll or a
//! read before acting), for supersede lookups, idle detection, poll diffs and the duration
//! history behind `max_duration = "auto"` (SPEC §4).

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use sqlx::any::{Any, AnyTypeInfo};
use sqlx::encode::{Encode, IsNull};
use sqlx::error::BoxDynError;

use super::{Store, StoreResult, from_ms, limit, to_ms};

/// What a NUL character (`\0`) in a text from outside becomes in the store: U+FFFD, the
/// replacement character.
///
/// SQLite stores a NUL inside a text value, PostgreSQL refuses it (SQLSTATE 22021, a
/// non-retryable error): an event SQLite records (a run whose branch came from API JSON as
/// `"fe\u0000at"`) would fail on PostgreSQL for ever. Every text from outside (a run's
/// fields, a decision's, an error from an API) is bound through `text`, on both backends
/// alike, on writes and on lookups, so that both store and find the same value. Replaced
/// rather than dropped: `fe\0at` must not become a branch `feat` that exists too.
pub const NUL_REPLACEMENT: char = '\u{FFFD}';

/// A text value to bind, its NUL characters replaced by [`NUL_REPLACEMENT`] (borrowed as
/// it is when it has none, as nearly every value).
pub(super) struct Text<'a>(Cow<'a, str>);

/// `s` fit for either backend (see [`NUL_REPLACEMENT`]).
pub(super) fn text(s: &str) -> Text<'_> {
    if s.contains('\0') {
        Text(Cow::Owned(
            s.replace('\0', NUL_REPLACEMENT.encode_utf8(&mut [0; 4])),
        ))
    } else {
        Text(Cow::Borrowed(s))
    }
}

/// [`text`] of an optional value (`None` stays NULL).
pub(super) fn opt_text(s: &Option<String>) -> Option<Text<'_>> {
    s.as_deref().map(text)
}

impl sqlx::Type<Any> for Text<'_> {
    fn type_info() -> AnyTypeInfo {
        <str as sqlx::Type<Any>>::type_info()
    }
}

impl<'q> Encode<'q, Any> for Text<'q> {
    fn encode_by_ref(
        &self,
        buf: &mut <Any as sqlx::Database>::ArgumentBuffer<'q>,
    ) -> Result<IsNull, BoxDynError> {
        match &self.0 {
            Cow::Borrowed(s) => <&str as Encode<'q, Any>>::encode(*s, buf),
            Cow::Owned(s) => <String as Encode<'q, Any>>::encode_by_ref(s, buf),
        }
    }
}

/// The stored observation of one run.
///
/// `completion_state` and `status` are stored upper case (`IN_PROGRESS`, `PASSED`), however
/// they are spelled here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRecord {
    pub run_id: String,
    pub project_id: String,
    /// `meta.commit.branch`.
    pub branch: Option<String>,
    /// `meta.commit.sha`.
    pub sha: Option<String>,
    /// The run's `createdAt`.
    pub created_at: DateTime<Utc>,
    /// `IN_PROGRESS`, `COMPLETE`, `CANCELED`, `TIMEOUT`.
    pub completion_state: String,
    /// `RUNNING`, `PASSED`, `FAILED`, `FAILING`.
    pub status: String,
    /// The full run JSON as last read.
    pub json: String,
    /// Specs completed so far (idle detection).
    pub completed_specs: i64,
    /// When `completed_specs` last changed. On update, the stored value is kept unless
    /// `completed_specs` changed, so passing the observation time is always right.
    pub progress_changed_at: DateTime<Utc>,
    /// Wall-clock duration of a finished run.
    pub duration_ms: Option<i64>,
    /// When this observation was made; an older observation never overwrites a newer one.
    pub updated_at: DateTime<Utc>,
}

/// A completed, passed run's duration: one sample of the history behind
/// `max_duration = "auto"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassedRun {
    pub run_id: String,
    /// The run's `createdAt`, milliseconds since the epoch (the history is the newest).
    pub created_at_ms: i64,
    pub duration_ms: i64,
}

#[derive(sqlx::FromRow)]
struct RunRow {
    run_id: String,
    project_id: String,
    branch: Option<String>,
    sha: Option<String>,
    created_at: i64,
    completion_state: String,
    status: String,
    run_json: String,
    completed_specs: i64,
    progress_changed_at: i64,
    duration_ms: Option<i64>,
    updated_at: i64,
}

impl TryFrom<RunRow> for RunRecord {
    type Error = super::StoreError;
    fn try_from(r: RunRow) -> StoreResult<RunRecord> {
        Ok(RunRecord {
            run_id: r.run_id,
            project_id: r.project_id,
            branch: r.branch,
            sha: r.sha,
            created_at: from_ms(r.created_at)?,
            completion_state: r.completion_state,
            status: r.status,
            json: r.run_json,
            completed_specs: r.completed_specs,
            progress_changed_at: from_ms(r.progress_changed_at)?,
            duration_ms: r.duration_ms,
            updated_at: from_ms(r.updated_at)?,
        })
    }
}

/// [`Store::passed_history`] of a branch: `$1` the project, `$2` the limit, `$3` the branch.
const PASSED_ON_BRANCH: &str = "SELECT run_id, created_at, duration_ms FROM runs \
     WHERE project_id = $1 AND branch = $3 \
       AND completion_state = 'COMPLETE' AND status = 'PASSED' \
       AND duration_ms IS NOT NULL \
     ORDER BY created_at DESC, run_id DESC \
     LIMIT $2";

/// [`Store::passed_history`] of the runs without a branch: `$1` the project, `$2` the
/// limit.
const PASSED_WITHOUT_BRANCH: &str = "SELECT run_id, created_at, duration_ms FROM runs \
     WHERE project_id = $1 AND branch IS NULL \
       AND completion_state = 'COMPLETE' AND status = 'PASSED' \
       AND duration_ms IS NOT NULL \
     ORDER BY created_at DESC, run_id DESC \
     LIMIT $2";

const RUN_COLUMNS: &str = "run_id, project_id, branch, sha, created_at, completion_state, \
     status, run_json, completed_specs, progress_changed_at, duration_ms, updated_at";

impl Store {
    /// Inserts or updates a run. Returns `false` when the update was ignored: the stored
    /// observation is newer (`updated_at`), or the run was marked gone.
    pub async fn upsert_run(&self, run: &RunRecord) -> StoreResult<bool> {
        let mut conn = self.writer.acquire().await?;
        Self::upsert_run_in(&mut conn, run).await
    }

    /// [`Store::upsert_run`] on an open transaction.
    pub(super) async fn upsert_run_in(
        conn: &mut sqlx::AnyConnection,
        run: &RunRecord,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "INSERT INTO runs (run_id, project_id, branch, sha, created_at, completion_state, \
                 status, run_json, completed_specs, progress_changed_at, duration_ms, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
             ON CONFLICT (run_id) DO UPDATE SET \
                 project_id = excluded.project_id, \
                 branch = excluded.branch, \
                 sha = excluded.sha, \
                 created_at = excluded.created_at, \
                 completion_state = excluded.completion_state, \
                 status = excluded.status, \
                 run_json = excluded.run_json, \
                 progress_changed_at = CASE \
                     WHEN runs.completed_specs = excluded.completed_specs \
                     THEN runs.progress_changed_at ELSE excluded.progress_changed_at END, \
                 completed_specs = excluded.completed_specs, \
                 duration_ms = excluded.duration_ms, \
                 updated_at = excluded.updated_at \
             WHERE runs.gone = 0 AND runs.updated_at <= excluded.updated_at",
        )
        .bind(text(&run.run_id))
        .bind(text(&run.project_id))
        .bind(opt_text(&run.branch))
        .bind(opt_text(&run.sha))
        .bind(to_ms(run.created_at))
        .bind(text(&run.completion_state.to_ascii_uppercase()))
        .bind(text(&run.status.to_ascii_uppercase()))
        .bind(text(&run.json))
        .bind(run.completed_specs)
        .bind(to_ms(run.progress_changed_at))
        .bind(run.duration_ms)
        .bind(to_ms(run.updated_at))
        .execute(conn)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// A run by id, unless unknown or gone.
    pub async fn get_run(&self, run_id: &str) -> StoreResult<Option<RunRecord>> {
        let row: Option<RunRow> = sqlx::query_as(&format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE run_id = $1 AND gone = 0"
        ))
        .bind(text(run_id))
        .fetch_optional(&self.pool)
        .await?;
        row.map(RunRecord::try_from).transpose()
    }

    /// In-progress runs (not gone), oldest first, optionally of one project and/or one
    /// branch (`None` = any).
    pub async fn in_progress_runs(
        &self,
        project_id: Option<&str>,
        branch: Option<&str>,
    ) -> StoreResult<Vec<RunRecord>> {
        let rows: Vec<RunRow> = sqlx::query_as(&format!(
            "SELECT {RUN_COLUMNS} FROM runs \
             WHERE completion_state = 'IN_PROGRESS' AND gone = 0 \
               AND ($1 IS NULL OR project_id = $1) \
               AND ($2 IS NULL OR branch = $2) \
             ORDER BY created_at, run_id"
        ))
        .bind(project_id.map(text))
        .bind(branch.map(text))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(RunRecord::try_from).collect()
    }

    /// The runs of commit `sha` (compared case-insensitively), of project `project_id`
    /// (`None` = any), not gone, newest first (`createdAt`, then run id), at most `max`.
    ///
    /// What a summary's commit status combines besides the run being posted: every run
    /// group of the commit as last observed, whichever process observed it
    /// ([`crate::github::summary`]). No index covers `sha`, so this reads the table,
    /// which `[store] keep_events` bounds ([`Store::prune_runs`]); it is asked once per
    /// posted summary with a commit status, under the repository's summary lock.
    pub async fn runs_of_commit(
        &self,
        sha: &str,
        project_id: Option<&str>,
        max: impl Into<i64>,
    ) -> StoreResult<Vec<RunRecord>> {
        let rows: Vec<RunRow> = sqlx::query_as(&runs_of_commit_sql())
            .bind(text(&sha.to_ascii_lowercase()))
            .bind(project_id.map(text))
            .bind(limit(max))
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(RunRecord::try_from).collect()
    }

    /// Durations (ms) of the newest `max` completed, passed runs of `project_id` on
    /// `branch` (`None` = runs without a branch), newest first. Runs since deleted in
    /// Currents still count: this is history.
    pub async fn passed_durations(
        &self,
        project_id: &str,
        branch: Option<&str>,
        max: impl Into<i64>,
    ) -> StoreResult<Vec<i64>> {
        Ok(self
            .passed_history(project_id, branch, max)
            .await?
            .into_iter()
            .map(|p| p.duration_ms)
            .collect())
    }

    /// [`Store::passed_durations`] with the run each duration is of (newest first).
    ///
    /// Asked on every event and poll of a rule with `max_duration = "auto"`: one
    /// statement for a branch and another for no branch, so that each is a lookup of
    /// `runs_passed_idx` by project and branch (a condition that held both, `branch = $2
    /// OR ($2 IS NULL AND branch IS NULL)`, read every passed run of the project).
    pub async fn passed_history(
        &self,
        project_id: &str,
        branch: Option<&str>,
        max: impl Into<i64>,
    ) -> StoreResult<Vec<PassedRun>> {
        let query = match branch {
            Some(branch) => sqlx::query_as(PASSED_ON_BRANCH)
                .bind(text(project_id))
                .bind(limit(max))
                .bind(text(branch)),
            None => sqlx::query_as(PASSED_WITHOUT_BRANCH)
                .bind(text(project_id))
                .bind(limit(max)),
        };
        let rows: Vec<(String, i64, i64)> = query.fetch_all(&self.pool).await?;
        Ok(rows
            .into_iter()
            .map(|(run_id, created_at, duration_ms)| PassedRun {
                run_id,
                created_at_ms: created_at,
                duration_ms,
            })
            .collect())
    }

    /// Marks a run deleted in Currents: no longer returned by [`Store::get_run`] or
    /// [`Store::in_progress_runs`], never updated again, still part of the duration
    /// history. Returns `false` for an unknown run.
    pub async fn mark_run_gone(&self, run_id: &str) -> StoreResult<bool> {
        let done = sqlx::query("UPDATE runs SET gone = 1 WHERE run_id = $1")
            .bind(text(run_id))
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Forgets a run entirely. Returns `false` for an unknown run.
    pub async fn delete_run(&self, run_id: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM runs WHERE run_id = $1")
            .bind(text(run_id))
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Deletes runs last observed before `before`: finished or gone ones, and in-progress
    /// ones too, since a run still in progress is observed again by every poll (and
    /// Currents ends a run long before `keep_events`), so one untouched since `before` is
    /// one whose end the bot never heard of (polling off, a lost webhook). Returns the
    /// number deleted.
    pub async fn prune_runs(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        self.delete_in_chunks(
            "DELETE FROM runs WHERE run_id IN (SELECT run_id FROM runs \
             WHERE updated_at < $1 LIMIT $2)",
            to_ms(before),
        )
        .await
    }
}

/// The statement of [`Store::runs_of_commit`]: `$1` the lower-case sha, `$2` a project
/// or NULL, `$3` the limit. Found through `runs_sha_idx` (migration 0003).
fn runs_of_commit_sql() -> String {
    format!(
        "SELECT {RUN_COLUMNS} FROM runs \
         WHERE LOWER(sha) = $1 AND gone = 0 \
           AND ($2 IS NULL OR project_id = $2) \
         ORDER BY created_at DESC, run_id DESC \
         LIMIT $3"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SQLite's plan of `sql` with these (text) parameters, one line per step.
    async fn plan(store: &Store, sql: &str, params: &[&str]) -> Vec<String> {
        let explain = format!("EXPLAIN QUERY PLAN {sql}");
        let mut q = sqlx::query_as::<_, (i64, i64, i64, String)>(&explain);
        for p in params {
            q = q.bind(*p);
        }
        crate::store::query_plan(store, q).await
    }

    /// [`Store::runs_of_commit`] looks the commit's runs up in `runs_sha_idx`, never
    /// reading the whole runs table.
    #[tokio::test]
    async fn the_runs_of_a_commit_are_a_lookup_by_sha() {
        let store = Store::connect("sqlite::memory:").await.unwrap();
        let plan = plan(&store, &runs_of_commit_sql(), &["c0ffee", "p", "500"]).await;
        assert!(
            plan.iter()
                .any(|step| step.starts_with("SEARCH runs USING INDEX runs_sha_idx")),
            "{plan:#?}"
        );
        assert!(
            !plan.iter().any(|step| step.starts_with("SCAN runs")),
            "{plan:#?}"
        );
    }

    /// Each statement of [`Store::passed_history`] looks the runs up in `runs_passed_idx`
    /// by project and branch (or no branch), never reading every passed run of the project.
    #[tokio::test]
    async fn the_passed_history_is_a_lookup_by_project_and_branch() {
        let store = Store::connect("sqlite::memory:").await.unwrap();
        for (sql, params) in [
            (PASSED_ON_BRANCH, &["p", "50", "main"][..]),
            (PASSED_WITHOUT_BRANCH, &["p", "50"][..]),
        ] {
            let plan = plan(&store, sql, params).await;
            assert!(
                plan.iter().any(
                    |step| step.starts_with("SEARCH runs USING INDEX runs_passed_idx")
                        && step.contains("project_id=? AND branch=?")
                ),
                "{sql}: {plan:#?}"
            );
            assert!(
                !plan.iter().any(|step| step.starts_with("SCAN runs")),
                "{sql}: {plan:#?}"
            );
        }
    }

    /// [`Store::runs_of_commit`]: the commit's runs (its sha in any case), of one project
    /// or any, newest first, not gone, at most `max`.
    #[tokio::test]
    async fn the_runs_of_a_commit_are_found_by_sha_newest_first() {
        let store = Store::connect("sqlite::memory:").await.unwrap();
        let at = |s: i64| from_ms(1_767_225_600_000 + s * 1000).unwrap();
        let rec = |id: &str, project: &str, sha: Option<&str>, created: i64| RunRecord {
            run_id: id.into(),
            project_id: project.into(),
            branch: Some("main".into()),
            sha: sha.map(Into::into),
            created_at: at(created),
            completion_state: "COMPLETE".into(),
            status: "PASSED".into(),
            json: "{}".into(),
            completed_specs: 1,
            progress_changed_at: at(created),
            duration_ms: Some(1000),
            updated_at: at(created + 60),
        };
        for r in [
            rec("a1", "p", Some("abc"), 1),
            rec("a2", "p", Some("ABC"), 3),
            rec("a3", "q", Some("abc"), 2),
            rec("b1", "p", Some("abd"), 4),
            rec("n1", "p", None, 5),
            rec("g1", "p", Some("abc"), 6),
        ] {
            assert!(store.upsert_run(&r).await.unwrap());
        }
        assert!(store.mark_run_gone("g1").await.unwrap());
        let ids = |v: Vec<RunRecord>| v.into_iter().map(|r| r.run_id).collect::<Vec<_>>();
        assert_eq!(
            ids(store.runs_of_commit("abc", None, 10).await.unwrap()),
            ["a2", "a3", "a1"]
        );
        assert_eq!(
            ids(store.runs_of_commit("Abc", Some("p"), 10).await.unwrap()),
            ["a2", "a1"]
        );
        assert_eq!(
            ids(store.runs_of_commit("abc", None, 1).await.unwrap()),
            ["a2"]
        );
        assert!(
            store
                .runs_of_commit("fff", None, 10)
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn nul_characters_are_replaced_and_other_text_is_borrowed() {
        assert!(matches!(text("feat/x").0, Cow::Borrowed("feat/x")));
        assert_eq!(text("fe\0at").0, "fe\u{FFFD}at");
        assert_eq!(text("\0\0").0, "\u{FFFD}\u{FFFD}");
        assert!(opt_text(&None).is_none());
        assert_eq!(opt_text(&Some("a\0".into())).unwrap().0, "a\u{FFFD}");
    }
}
