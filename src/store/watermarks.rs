//! Watermarks: named times kept across restarts and shared by every process on the store
//! (replicas on PostgreSQL). Most only move forward ([`Store::advance_watermark`]):
//! [`LAST_FULL_POLL`] is the start of the last poll that covered every project and whose
//! decisions were committed, to which a process that starts (a restart, a replica taking
//! the poller over) looks back for runs that started and finished while no poll ran.
//! Others keep the first time they were set ([`Store::first_time`]): when a scheduled
//! rule was first seen ([`SCHEDULE_SEEN`]).

use chrono::{DateTime, Utc};

use super::{Store, StoreResult, from_ms, to_ms};

/// The watermark of the last poll that covered every project (see the module).
pub const LAST_FULL_POLL: &str = "last-full-poll";

/// The prefix of the time a scheduled rule (the name follows) was first seen by a
/// process on the store ([`Store::first_time`]): a rule that never fired looks for a
/// missed slot from there, not from the start of the process, so a slot that a restart
/// spans is not skipped (`intake::schedules::fire_due`).
pub const SCHEDULE_SEEN: &str = "schedule-seen:";

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

    /// The time `name` was first set: `at` if it never was (it is set now), else the
    /// time it was set to then, which stays. A read, and a write only the first time.
    pub async fn first_time(&self, name: &str, at: DateTime<Utc>) -> StoreResult<DateTime<Utc>> {
        if let Some(first) = self.watermark(name).await? {
            return Ok(first);
        }
        sqlx::query(
            "INSERT INTO watermarks (name, at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(to_ms(at))
        .execute(&self.writer)
        .await?;
        // Another process may have set it first: its time is the one kept.
        let first: i64 = sqlx::query_scalar("SELECT at FROM watermarks WHERE name = $1")
            .bind(name)
            .fetch_one(&self.writer)
            .await?;
        from_ms(first)
    }
}
