//! Named leases with a time to live (poller leadership across replicas; locks shared by
//! every process on the store, [`Store::acquire_lease_waiting`]). A holder renews
//! its lease by acquiring it again before it expires; anyone may take over an expired one.
//! A holder must re-check (renew) its lease before each effect that only the leader may
//! cause: a lease can expire while its holder is paused. Work that holds a lock for longer
//! than one time to live keeps it with [`Store::hold_lease_while`].

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{Store, StoreResult, ms_after, to_ms};

impl Store {
    /// Acquires or renews lease `name` for `holder` until `now + ttl`. `true` when
    /// `holder` holds it afterwards: it was free, expired (at or before `now`), or already
    /// `holder`'s.
    pub async fn try_acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "INSERT INTO leases (name, holder, acquired_at, expires_at) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name) DO UPDATE SET \
                 acquired_at = CASE WHEN leases.holder = excluded.holder \
                     THEN leases.acquired_at ELSE excluded.acquired_at END, \
                 holder = excluded.holder, \
                 expires_at = excluded.expires_at \
             WHERE leases.holder = excluded.holder OR leases.expires_at <= excluded.acquired_at",
        )
        .bind(name)
        .bind(holder)
        .bind(to_ms(now))
        .bind(ms_after(now, ttl))
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// [`Store::try_acquire_lease`], trying again every `poll` for up to `wait` while
    /// another holder has it: a lock shared by every process on the store (replicas on
    /// PostgreSQL; `serve` and `sweep` on one SQLite file). `true` once `holder` holds it,
    /// `false` when `wait` ran out first. Release it with [`Store::release_lease`]; a
    /// holder that dies leaves it to expire after `ttl`.
    pub async fn acquire_lease_waiting(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        wait: Duration,
        poll: Duration,
    ) -> StoreResult<bool> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if self
                .try_acquire_lease(name, holder, ttl, Utc::now())
                .await?
            {
                return Ok(true);
            }
            if tokio::time::Instant::now() + poll > deadline {
                return Ok(false);
            }
            tokio::time::sleep(poll).await;
        }
    }

    /// Runs `work` while keeping lease `name`, which `holder` has just acquired for `ttl`:
    /// the lease is renewed every `ttl / 3` until `work` ends, so that work outlasting one
    /// time to live (slow calls, retries) does not let another holder in meanwhile. A
    /// holder that dies stops renewing, and its lease expires `ttl` after the last renewal.
    ///
    /// When the lease is lost, `work` is stopped (dropped at its next await) and
    /// [`LeaseLost`] returned: another holder took it over (it had expired: this process
    /// was paused longer than `ttl`), or it could not be renewed (store errors) before
    /// less than `ttl / 3` of it was left. The caller releases the lease afterwards as
    /// usual ([`Store::release_lease`] only removes it while `holder` holds it).
    pub async fn hold_lease_while<F: Future>(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        work: F,
    ) -> Result<F::Output, LeaseLost> {
        let every = (ttl / 3).max(Duration::from_millis(1));
        let renew = async {
            // Until when the lease surely holds: measured from before each renewal.
            let start = tokio::time::Instant::now();
            let mut held_until = start + ttl;
            let mut ticker = tokio::time::interval_at(start + every, every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let asked = tokio::time::Instant::now();
                match self.try_acquire_lease(name, holder, ttl, Utc::now()).await {
                    Ok(true) => held_until = asked + ttl,
                    Ok(false) => {
                        return LeaseLost::TakenOver {
                            name: name.to_string(),
                        };
                    }
                    Err(e) if tokio::time::Instant::now() + every >= held_until => {
                        return LeaseLost::NotRenewed {
                            name: name.to_string(),
                            error: e.to_string(),
                        };
                    }
                    Err(e) => {
                        tracing::warn!(lease = name, error = %e,
                            "cannot renew a lease; trying again before it runs out");
                    }
                }
            }
        };
        tokio::select! {
            out = work => Ok(out),
            lost = renew => {
                tracing::warn!(lease = name, "{lost}; the work holding it is stopped");
                Err(lost)
            }
        }
    }

    /// Gives up lease `name` if `holder` holds it. Returns whether it did.
    pub async fn release_lease(&self, name: &str, holder: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(holder)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives up every named lease `holder` holds, also as `{holder}:{anything}` (how each
    /// summary of a process holds its repository's lock), at the end of its shutdown: a
    /// summary cut short by the shutdown's grace leaves its repository's lock, which
    /// would otherwise hold the other replicas' summaries of that repository until it
    /// expires. Returns how many.
    pub async fn release_named_leases(&self, holder: &str) -> StoreResult<u64> {
        let done = sqlx::query(
            "DELETE FROM leases WHERE holder = $1 \
             OR substr(holder, 1, length($1) + 1) = $1 || ':'",
        )
        .bind(holder)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected())
    }

    /// Gives up every named lease (the poller's, a repository's summary lock, ...) whose
    /// holder `alive` says is gone: for a SQLite store at startup, as
    /// [`Store::release_leases_unless`] does for actions, so that a process killed while
    /// holding the poller's lease (three poll intervals long) does not hold up polling
    /// after the restart. Returns the names released.
    pub async fn release_named_leases_unless(
        &self,
        alive: impl Fn(&str) -> bool,
    ) -> StoreResult<Vec<String>> {
        let held: Vec<(String, String)> = sqlx::query_as("SELECT name, holder FROM leases")
            .fetch_all(&self.pool)
            .await?;
        let mut released = Vec::new();
        for (name, holder) in held {
            if !alive(&holder) && self.release_lease(&name, &holder).await? {
                released.push(name);
            }
        }
        Ok(released)
    }

    /// The current holder of lease `name` and its expiry, expired or not.
    pub async fn lease_holder(&self, name: &str) -> StoreResult<Option<(String, DateTime<Utc>)>> {
        let row: Option<(String, i64)> =
            sqlx::query_as("SELECT holder, expires_at FROM leases WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|(holder, expires)| Ok((holder, super::from_ms(expires)?)))
            .transpose()
    }
}

/// Why [`Store::hold_lease_while`] stopped the work holding a lease.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseLost {
    /// Another holder has the lease: it had expired.
    #[error("lease {name} was taken over by another holder")]
    TakenOver { name: String },
    /// The lease could not be renewed before it would run out.
    #[error("lease {name} could not be renewed before it ran out: {error}")]
    NotRenewed { name: String, error: String },
}
