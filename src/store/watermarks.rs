//! Watermarks: named times that only move forward, kept across restarts and shared by
//! every process on the store (replicas on PostgreSQL). [`LAST_FULL_POLL`] is the start
//! of the last poll that covered every project and whose decisions were committed: a
//! process that starts (a restart, a replica taking the poller over) looks back to it
//! for runs that started and finished while no poll ran.

use chrono::{DateTime, Utc};

use super::{Store, StoreResult, from_ms, to_ms};

/// The watermark of the last poll that covered every project (see the module).
pub const LAST_FULL_POLL: &str = "last-full-poll";

impl Store {
    /// Moves watermark `name` to `at`, unless it is already there or later (a
    /// watermark never moves back: two replicas' polls may commit out of order).
    pub async fn advance_watermark(&self, name: &str, at: DateTime<Utc>) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO watermarks (name, at) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET at = excluded.at \
             WHERE watermarks.at < excluded.at",
        )
        .bind(name)
        .bind(to_ms(at))
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Watermark `name` (to the millisecond), `None` when it was never set.
    pub async fn watermark(&self, name: &str) -> StoreResult<Option<DateTime<Utc>>> {
        let at: Option<i64> = sqlx::query_scalar("SELECT at FROM watermarks WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        at.map(from_ms).transpose()
    }
}
