//! Cron slot claims: each `(rule, slot)` fires once, whoever (replica or restarted
//! process) gets there first. The schedule's durable `last fired slot` is
//! [`Store::last_slot`], so a restart can catch up on a missed slot without firing one
//! twice.

use chrono::{DateTime, Utc};

use super::runs::text;
use super::{Store, StoreError, StoreResult, from_ms, opt_from_ms, to_ms};

/// A claimed slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotRecord {
    pub rule: String,
    /// The scheduled time of the slot (not when it ran).
    pub slot_at: DateTime<Utc>,
    pub claimed_at: DateTime<Utc>,
    /// `None` while running (until the sweep's decisions are committed: a commit that
    /// failed is retried with the event), or if the process died during the sweep. A slot
    /// superseded by a newer one of its rule is finished with a summary saying so.
    pub finished_at: Option<DateTime<Utc>>,
    /// What the sweep did, e.g. "deleted 12 runs" or a `max_deletions` breach.
    pub summary: Option<String>,
}

#[derive(sqlx::FromRow)]
struct SlotRow {
    rule: String,
    slot_at: i64,
    claimed_at: i64,
    finished_at: Option<i64>,
    summary: Option<String>,
}

impl TryFrom<SlotRow> for SlotRecord {
    type Error = StoreError;
    fn try_from(r: SlotRow) -> StoreResult<SlotRecord> {
        Ok(SlotRecord {
            rule: r.rule,
            slot_at: from_ms(r.slot_at)?,
            claimed_at: from_ms(r.claimed_at)?,
            finished_at: opt_from_ms(r.finished_at)?,
            summary: r.summary,
        })
    }
}

const SLOT_COLUMNS: &str = "rule, slot_at, claimed_at, finished_at, summary";

impl Store {
    /// Forgets slots scheduled before `before`, except each rule's latest (what
    /// [`Store::last_slot`] reads: a restart catches up from it). Returns the number
    /// deleted.
    pub async fn prune_slots(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let done = sqlx::query(
            "DELETE FROM schedule_slots WHERE slot_at < $1 AND slot_at < \
             (SELECT MAX(latest.slot_at) FROM schedule_slots latest \
              WHERE latest.rule = schedule_slots.rule)",
        )
        .bind(to_ms(before))
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected())
    }

    /// Claims the slot of `rule` scheduled at `slot_at`, at `now`. `true` only for the
    /// first claimer.
    pub async fn claim_slot(
        &self,
        rule: &str,
        slot_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "INSERT INTO schedule_slots (rule, slot_at, claimed_at) VALUES ($1, $2, $3) \
             ON CONFLICT (rule, slot_at) DO NOTHING",
        )
        .bind(text(rule))
        .bind(to_ms(slot_at))
        .bind(to_ms(now))
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The latest slot of `rule` ever claimed (the schedule's durable "last fired").
    pub async fn last_slot(&self, rule: &str) -> StoreResult<Option<DateTime<Utc>>> {
        let ms: Option<i64> =
            sqlx::query_scalar("SELECT MAX(slot_at) FROM schedule_slots WHERE rule = $1")
                .bind(text(rule))
                .fetch_one(&self.pool)
                .await?;
        opt_from_ms(ms)
    }

    /// One claimed slot, with how its sweep ended.
    pub async fn get_slot(
        &self,
        rule: &str,
        slot_at: DateTime<Utc>,
    ) -> StoreResult<Option<SlotRecord>> {
        let row: Option<SlotRow> = sqlx::query_as(&format!(
            "SELECT {SLOT_COLUMNS} FROM schedule_slots WHERE rule = $1 AND slot_at = $2"
        ))
        .bind(text(rule))
        .bind(to_ms(slot_at))
        .fetch_optional(&self.pool)
        .await?;
        row.map(SlotRecord::try_from).transpose()
    }

    /// Records the end of a slot's sweep. The slot is claimed too if it was not yet: its
    /// event is stored before the claim (`intake::schedules`), so its sweep can end first.
    pub async fn finish_slot(
        &self,
        rule: &str,
        slot_at: DateTime<Utc>,
        summary: &str,
    ) -> StoreResult<()> {
        let now = to_ms(Utc::now());
        sqlx::query(
            "INSERT INTO schedule_slots (rule, slot_at, claimed_at, finished_at, summary) \
             VALUES ($1, $2, $3, $3, $4) \
             ON CONFLICT (rule, slot_at) DO UPDATE \
             SET finished_at = excluded.finished_at, summary = excluded.summary",
        )
        .bind(text(rule))
        .bind(to_ms(slot_at))
        .bind(now)
        .bind(text(summary))
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// The latest slot of `rule` ever claimed, with how its sweep ended (the status page).
    pub async fn latest_slot_record(&self, rule: &str) -> StoreResult<Option<SlotRecord>> {
        let row: Option<SlotRow> = sqlx::query_as(&format!(
            "SELECT {SLOT_COLUMNS} FROM schedule_slots WHERE rule = $1 \
             ORDER BY slot_at DESC LIMIT 1"
        ))
        .bind(text(rule))
        .fetch_optional(&self.pool)
        .await?;
        row.map(SlotRecord::try_from).transpose()
    }
}
