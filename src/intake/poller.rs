//! Polling: every `currents.poll_interval`, one replica (the holder of the `poller`
//! lease) stores a `poll` event; the processor lists in-progress runs, reconciles what
//! webhooks missed and checks timeouts. Webhooks are hints; this is the truth.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::server::AppContext;
use crate::store::NewDelivery;

/// Name of the poller lease.
pub const LEASE_NAME: &str = "poller";

/// The delivery id of the poller's event for one poll slot is this prefix and the slot's
/// number (the time divided by the interval): one poll per slot across replicas.
pub const SLOT_PREFIX: &str = "poll:";

/// The poll slot of `now`: the time divided by the interval (in milliseconds; a zero
/// interval counts as one millisecond, one too large to count saturates).
pub fn slot_of(now: DateTime<Utc>, interval: Duration) -> i64 {
    let ms = i64::try_from(interval.as_millis())
        .unwrap_or(i64::MAX)
        .max(1);
    now.timestamp_millis() / ms
}

/// Stores one poll event if this process holds the poller lease. Returns whether it did.
pub async fn poll_once(ctx: &AppContext) -> bool {
    let interval = ctx.config.currents.poll_interval;
    let now = Utc::now();
    let ttl = interval.saturating_mul(3).max(Duration::from_secs(10));
    match ctx
        .store
        .try_acquire_lease(LEASE_NAME, &ctx.worker_id, ttl, now)
        .await
    {
        Ok(true) => {}
        Ok(false) => return false,
        Err(e) => {
            tracing::warn!(error = %e, "cannot take the poller lease");
            return false;
        }
    }
    let slot = slot_of(now, interval);
    let d = NewDelivery {
        source: "poll".into(),
        delivery_id: format!("{SLOT_PREFIX}{slot}"),
        event: "poll".into(),
        payload: "{}".into(),
        received_at: now,
    };
    match ctx.store.insert_delivery(d).await {
        Ok(_) => {
            ctx.wake.notify_one();
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot store a poll event");
            false
        }
    }
}

/// Polls until `shutdown` fires. A zero interval turns polling off.
pub async fn run(ctx: Arc<AppContext>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let interval = ctx.config.currents.poll_interval;
    if interval.is_zero() {
        return;
    }
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => { poll_once(&ctx).await; }
            _ = shutdown.changed() => break,
        }
    }
    let _ = ctx.store.release_lease(LEASE_NAME, &ctx.worker_id).await;
}
