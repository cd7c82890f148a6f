//! Runs known to the bot: the last observation of each run (from a webhook, a poll or a
//! read before acting), for supersede lookups, idle detection, poll diffs and the duration
//! history behind `max_duration = "auto"` (SPEC §4).

use chrono::{DateTime, Utc};

use super::{Store, StoreResult, from_ms, limit, to_ms};

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
        .bind(&run.run_id)
        .bind(&run.project_id)
        .bind(&run.branch)
        .bind(&run.sha)
        .bind(to_ms(run.created_at))
        .bind(run.completion_state.to_ascii_uppercase())
        .bind(run.status.to_ascii_uppercase())
        .bind(&run.json)
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
        .bind(run_id)
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
        .bind(project_id)
        .bind(branch)
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
    pub async fn passed_history(
        &self,
        project_id: &str,
        branch: Option<&str>,
        max: impl Into<i64>,
    ) -> StoreResult<Vec<PassedRun>> {
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT run_id, created_at, duration_ms FROM runs \
             WHERE project_id = $1 \
               AND (branch = $2 OR ($2 IS NULL AND branch IS NULL)) \
               AND completion_state = 'COMPLETE' AND status = 'PASSED' \
               AND duration_ms IS NOT NULL \
             ORDER BY created_at DESC, run_id DESC \
             LIMIT $3",
        )
        .bind(project_id)
        .bind(branch)
        .bind(limit(max))
        .fetch_all(&self.pool)
        .await?;
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
            .bind(run_id)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Forgets a run entirely. Returns `false` for an unknown run.
    pub async fn delete_run(&self, run_id: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM runs WHERE run_id = $1")
            .bind(run_id)
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
