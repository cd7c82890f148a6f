//! How far this process's clock is from the shared store's. Replicas on one PostgreSQL
//! database compare times each took from its own clock (a lease's expiry, an action's
//! next attempt, a schedule slot), so they need their clocks in sync (NTP). The offset is
//! measured against the database server's clock, which every replica sees alike, and
//! published and warned about by `serve` ([`CLOCK_OFFSET_WARN`]); SQLite is one machine
//! and has no offset.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{Backend, Store, StoreResult};

/// An offset from the store's clock beyond which `serve` warns (at start and every
/// [`CLOCK_CHECK_INTERVAL`]): the processor's lease lives 10 s and is renewed every
/// third of it, so a replica whose clock is off by seconds may take it over from a live
/// holder (two processors at once) or see its own as still held after it ran out.
pub const CLOCK_OFFSET_WARN: Duration = Duration::from_secs(1);

/// How often `serve` measures the offset on a shared store.
pub const CLOCK_CHECK_INTERVAL: Duration = Duration::from_secs(300);

/// One measurement of this process's clock against the store's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClockOffset {
    /// The store's clock minus this process's, in seconds: positive when this process's
    /// clock is behind.
    pub seconds: f64,
    /// Half the round trip of the query, in seconds: the offset is known to within it.
    pub uncertainty: f64,
}

impl ClockOffset {
    /// Whether the clocks are surely further apart than `limit` (the offset beyond its
    /// uncertainty).
    pub fn beyond(&self, limit: Duration) -> bool {
        self.seconds.abs() - self.uncertainty > limit.as_secs_f64()
    }
}

impl Store {
    /// This process's clock against the store's, `None` on SQLite (one machine).
    pub async fn clock_offset(&self) -> StoreResult<Option<ClockOffset>> {
        self.clock_offset_with(Utc::now).await
    }

    /// [`Store::clock_offset`] with the local clock read by `now` (before and after the
    /// query: the store's time is set against their midpoint).
    pub async fn clock_offset_with(
        &self,
        now: impl Fn() -> DateTime<Utc>,
    ) -> StoreResult<Option<ClockOffset>> {
        if self.backend() != Backend::Postgres {
            return Ok(None);
        }
        let before = now();
        let store_us: i64 = sqlx::query_scalar(
            "SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT)",
        )
        .fetch_one(&self.pool)
        .await?;
        let after = now();
        let round_trip_us = (after - before)
            .num_microseconds()
            .unwrap_or(i64::MAX)
            .max(0);
        let local_us = before.timestamp_micros().saturating_add(round_trip_us / 2);
        Ok(Some(ClockOffset {
            seconds: store_us.saturating_sub(local_us) as f64 / 1e6,
            uncertainty: round_trip_us as f64 / 2e6,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offset_counts_only_beyond_its_uncertainty() {
        let o = |seconds, uncertainty| ClockOffset {
            seconds,
            uncertainty,
        };
        let limit = Duration::from_secs(1);
        assert!(o(1.5, 0.001).beyond(limit));
        assert!(
            o(-1.5, 0.001).beyond(limit),
            "ahead counts as much as behind"
        );
        assert!(!o(0.2, 0.001).beyond(limit));
        assert!(!o(1.5, 0.6).beyond(limit), "a slow query proves nothing");
        assert!(!o(-1.0, 0.0).beyond(limit), "at the limit");
    }
}
