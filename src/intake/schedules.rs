//! Cron schedules of retention rules (UTC). Each slot fires once: whoever stores the
//! slot's `schedule` event first (its delivery id `slot:RULE:TS` is unique) fires it,
//! then records the `(rule, slot)` row; other replicas and restarts find the event or
//! the row and do nothing. After downtime the most recent missed slot
//! fires once (no burst of catch-up sweeps). A slot's event still waiting when a newer
//! slot of its rule has fired (its sweep failing during an outage, or a busy processor)
//! is not swept: the processor marks it superseded, and the newer slot's sweep, which
//! works on the listing as it is then, does its work.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::RuleKind;
use crate::config::schedule::CronSchedule;
use crate::server::AppContext;
use crate::store::NewDelivery;

/// The delivery id of a slot's `schedule` event is this prefix, the rule's name, `:` and
/// the slot's Unix time in seconds ([`slot_delivery_id`]).
pub const SLOT_PREFIX: &str = "slot:";

/// The delivery id of the `schedule` event of `rule`'s slot at `slot`: one event per
/// slot across replicas and restarts.
pub fn slot_delivery_id(rule: &str, slot: DateTime<Utc>) -> String {
    format!("{SLOT_PREFIX}{rule}:{}", slot.timestamp())
}

/// The latest slot of `schedule` in `(after, now]`, if any.
pub fn latest_slot(
    schedule: &CronSchedule,
    after: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    schedule.latest_in(after, now)
}

/// Fires every due slot once; returns the (rule, slot) pairs this call fired. A rule
/// that never fired looks for a missed slot from when a process on the store first saw
/// it, which is `since` (the process start) the first time.
pub async fn fire_due(
    ctx: &AppContext,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Vec<(String, DateTime<Utc>)> {
    let mut fired = Vec::new();
    for rule in &ctx.config.rules {
        let RuleKind::Retention(opts) = &rule.kind else {
            continue;
        };
        // Without a schedule the rule runs only on demand (`sweep`, the admin API).
        let Some(schedule) = &opts.schedule else {
            continue;
        };
        // A failed read is not "never fired": that would fire the latest slot again once
        // its event has been pruned. The next tick reads again.
        let last = match ctx.store.last_slot(&rule.name).await {
            Ok(last) => last,
            Err(e) => {
                tracing::warn!(rule = %rule.name, error = %e, "cannot read the last schedule slot; trying again at the next tick");
                continue;
            }
        };
        // A rule never fired before starts from when a process on the store first saw it
        // (this one's `since`, the process start, the first time), so that a slot that a
        // restart spans is not skipped; after downtime, however long, only the latest
        // missed slot fires.
        let from = match last {
            Some(last) => last,
            None => {
                let seen = format!("{}{}", crate::store::watermarks::SCHEDULE_SEEN, rule.name);
                match ctx.store.first_time(&seen, since).await {
                    // Not later than this process's start (another replica's clock ahead).
                    Ok(first) => first.min(since),
                    Err(e) => {
                        tracing::warn!(rule = %rule.name, error = %e, "cannot read when the rule was first seen; trying again at the next tick");
                        continue;
                    }
                }
            }
        };
        let Some(slot) = latest_slot(schedule, from, now) else {
            continue;
        };
        // The slot's event first: its delivery id is unique, so storing it is the claim
        // (another replica, or an earlier tick of this process that got no further, finds
        // it there). Only then is the slot recorded, so a failure between the two leaves
        // a slot that the next tick finds again, never one recorded without its sweep.
        let d = NewDelivery {
            source: "schedule".into(),
            delivery_id: slot_delivery_id(&rule.name, slot),
            event: "sweep".into(),
            payload: serde_json::json!({ "rule": rule.name, "slot": slot.to_rfc3339() })
                .to_string(),
            received_at: now,
        };
        let stored = match ctx.store.insert_delivery(d).await {
            Ok(outcome) => outcome,
            Err(e) => {
                tracing::warn!(rule = %rule.name, error = %e, "cannot store a schedule event; the slot is tried again at the next tick");
                continue;
            }
        };
        if let Err(e) = ctx.store.claim_slot(&rule.name, slot, now).await {
            tracing::warn!(rule = %rule.name, error = %e, "cannot record a schedule slot; its event is stored, the record is tried again at the next tick");
        }
        if stored == crate::store::InsertOutcome::Duplicate {
            continue;
        }
        ctx.metrics.inc(
            "runwarden_schedule_slots_total",
            &[("rule", &rule.name), ("result", "fired")],
        );
        tracing::info!(rule = %rule.name, slot = %slot, "retention slot fired");
        ctx.wake.notify_one();
        fired.push((rule.name.clone(), slot));
    }
    fired
}

/// Checks the schedules every second until `shutdown` fires. Slots older than the
/// process start fire only when no slot of the rule was ever recorded after them, and
/// the rule had been seen before them.
pub async fn run(ctx: Arc<AppContext>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    if !ctx
        .config
        .rules
        .iter()
        .any(|r| matches!(r.kind, RuleKind::Retention(_)))
    {
        return;
    }
    let since = Utc::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => { fire_due(&ctx, since, Utc::now()).await; }
            _ = shutdown.changed() => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_slot_picks_the_most_recent_due_slot() {
        let s = crate::config::load::parse_cron("0 3 * * *").unwrap();
        let after: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        let now: DateTime<Utc> = "2026-01-03T04:00:00Z".parse().unwrap();
        assert_eq!(
            latest_slot(&s, after, now).unwrap().to_rfc3339(),
            "2026-01-03T03:00:00+00:00"
        );
        let early: DateTime<Utc> = "2026-01-01T02:59:59Z".parse().unwrap();
        assert_eq!(latest_slot(&s, after, early), None);
    }
}
