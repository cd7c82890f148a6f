//! Cron schedules of retention rules, end to end: the real schedule intake
//! (`intake::schedules::fire_due`, driven with the time passed in), the real processor and
//! store, and the simulator's Currents API (faults injected there, or in the store).
//!
//! - slots whose sweeps fail during an outage do not pile up: once a newer slot of the
//!   rule has fired, an older slot's event is marked superseded, without a listing, and
//!   its record says so; the newest sweeps once;
//! - a newer slot counts only once its time has come on this process's clock;
//! - a slot's record says its sweep ended only once the sweep's decisions are committed.
//!
//! Every wait polls with a deadline; no test sleeps for synchronisation.

mod common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::*;
use runwarden::intake::processor::{SUPERSEDED_SLOT, process_only, process_pending};
use runwarden::intake::schedules::{fire_due, slot_delivery_id};
use runwarden::server::AppContext;
use runwarden::simulator::{Fault, FaultKind, SimHandle};
use runwarden::store::Delivery;

/// A retention rule `old` swept every 5 minutes.
const EVERY_5_MIN: &str = "[[rules]]\nname = \"old\"\nkind = \"retention\"\nschedule = \"*/5 * * * *\"\nolder_than = \"30d\"\n";

/// The listing path of a project's runs.
fn listing(project: &str) -> String {
    format!("/v1/projects/{project}/runs")
}

/// A fault that only counts the listings of [`PROJECT`]'s runs (a zero latency).
fn count_listings(sim: &SimHandle) -> u64 {
    sim.inject_fault(
        Fault::new(FaultKind::Latency { ms: 0 })
            .on("GET", listing(PROJECT))
            .always(),
    )
}

/// How many requests the counting fault `id` has seen.
fn fired(sim: &SimHandle, id: u64) -> u32 {
    sim.faults()
        .iter()
        .find(|f| f.id == id)
        .map_or(0, |f| f.fired)
}

async fn slot_event(ctx: &AppContext, rule: &str, slot: DateTime<Utc>) -> Delivery {
    let id = slot_delivery_id(rule, slot);
    ctx.store
        .find_delivery("schedule", &id)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no schedule event {id}"))
}

/// The slot of a `*/5` schedule an hour ago: recent enough that its event is not given
/// up on (an event is dead-lettered 24 h after it arrived, and a slot's arrives with it).
fn slot_an_hour_ago() -> DateTime<Utc> {
    let t = (Utc::now() - chrono::Duration::hours(1)).timestamp();
    DateTime::from_timestamp(t - t.rem_euclid(300), 0).unwrap()
}

/// Defect 1. A `*/5` retention schedule during a Currents outage: three slots fire while
/// every listing answers 503, so each slot's sweep fails (and would be retried for a
/// day). Once the API is back, the three events are taken up in order: the two older
/// ones are marked superseded without a listing (the newest slot's sweep, on the listing
/// as it is now, does their work), their records say so and claim no deletions, and one
/// listing pass sweeps for all three.
#[tokio::test]
async fn slots_piled_up_during_an_outage_leave_their_sweep_to_the_newest() {
    let PreparedApp {
        sim,
        ctx,
        dir: _dir,
        ..
    } = prepare_app(AppOptions {
        rules: EVERY_5_MIN.into(),
        client_retries: Some((1, Duration::from_millis(10))),
        ..AppOptions::default()
    })
    .await;
    let expired = sim
        .add_run(ended("feat/old", "01d", 60 * 24 * 45, "passed"))
        .unwrap()
        .run_id;
    let down = sim.inject_fault(Fault::status(503).on("GET", listing(PROJECT)).always());
    let first = slot_an_hour_ago();
    let since = first - chrono::Duration::minutes(1);
    let slots: Vec<DateTime<Utc>> = (0..3)
        .map(|i| first + chrono::Duration::minutes(5 * i))
        .collect();
    for &slot in &slots {
        let now = slot + chrono::Duration::seconds(30);
        assert_eq!(
            fire_due(&ctx, since, now).await,
            vec![("old".to_string(), slot)]
        );
        // The processor takes up what is due: this slot's sweep fails (the older ones
        // are waiting for their retry, or are left to this one).
        process_pending(&ctx).await.unwrap();
        let d = slot_event(&ctx, "old", slot).await;
        assert_eq!((d.attempts, d.processed_at), (1, None), "{d:#?}");
    }

    // The API is back: the piled-up slots are taken up, oldest first, whatever their
    // retry time.
    assert!(sim.remove_fault(down));
    let listings = count_listings(&sim);
    let keys: Vec<(String, String)> = slots
        .iter()
        .map(|s| ("schedule".to_string(), slot_delivery_id("old", *s)))
        .collect();
    process_only(&ctx, &keys).await.unwrap();
    assert_eq!(
        fired(&sim, listings),
        1,
        "one listing pass, the newest slot's"
    );
    let newest = slots[2];
    for &older in &slots[..2] {
        let d = slot_event(&ctx, "old", older).await;
        assert_eq!(d.outcome.as_deref(), Some(SUPERSEDED_SLOT), "{d:#?}");
        let record = ctx.store.get_slot("old", older).await.unwrap().unwrap();
        let summary = record.summary.clone().unwrap_or_default();
        let by = format!(
            "superseded by the slot of {}",
            slots[2].format("%Y-%m-%d %H:%M UTC")
        );
        assert!(
            summary.starts_with(&by) && !summary.contains("to delete"),
            "{record:#?}"
        );
    }
    let d = slot_event(&ctx, "old", newest).await;
    assert_eq!(d.outcome.as_deref(), Some("1 decision(s)"), "{d:#?}");
    let record = ctx.store.latest_slot_record("old").await.unwrap().unwrap();
    assert_eq!(record.slot_at, newest);
    assert_eq!(record.summary.as_deref(), Some("1 run to delete"));
    assert!(record.finished_at.is_some(), "{record:#?}");
    let audit = ctx.store.audit(None, None, 100).await.unwrap();
    assert_eq!(
        audit
            .iter()
            .filter(|e| e.action == "delete" && e.run_id == expired)
            .count(),
        1,
        "{audit:#?}"
    );
    assert_eq!(
        ctx.metrics.get(
            "runwarden_events_processed_total",
            &[("source", "schedule"), ("result", "superseded")]
        ),
        2
    );
}

/// A newer slot counts only once its time has come here: a replica whose clock runs
/// ahead may fire the next slot early; leaving the sweep to it would leave every slot to
/// one not yet due, for as long as the clocks differ.
#[tokio::test]
async fn a_slot_is_not_superseded_by_one_whose_time_has_not_come() {
    let PreparedApp {
        sim,
        ctx,
        dir: _dir,
        ..
    } = prepare_app(AppOptions {
        rules: EVERY_5_MIN.into(),
        client_retries: Some((1, Duration::from_millis(10))),
        ..AppOptions::default()
    })
    .await;
    // The latest slot due on this clock, and a later one, fired by a replica ahead.
    let now = Utc::now();
    let floor = now.timestamp() - now.timestamp().rem_euclid(300);
    let due = DateTime::<Utc>::from_timestamp(floor, 0).unwrap();
    // Two slots on: at least 5 minutes ahead of this clock while the test runs.
    let ahead = due + chrono::Duration::minutes(10);
    let since = due - chrono::Duration::seconds(1);
    assert_eq!(
        fire_due(&ctx, since, due + chrono::Duration::seconds(1)).await,
        vec![("old".to_string(), due)]
    );
    assert_eq!(
        fire_due(&ctx, since, ahead + chrono::Duration::seconds(1)).await,
        vec![("old".to_string(), ahead)]
    );
    let listings = count_listings(&sim);
    let own = [("schedule".to_string(), slot_delivery_id("old", due))];
    assert_eq!(process_only(&ctx, &own).await.unwrap(), 1);
    let d = slot_event(&ctx, "old", due).await;
    assert_eq!(d.outcome.as_deref(), Some("0 decision(s)"), "{d:#?}");
    assert_eq!(fired(&sim, listings), 1, "the slot was swept");
    let record = ctx.store.get_slot("old", due).await.unwrap().unwrap();
    assert_eq!(record.summary.as_deref(), Some("0 runs to delete"));
}

/// Defect 2. The commit of a slot's decisions fails (a trigger put on the decisions table
/// refuses them, as a damaged file would): the event is retried, and until its decisions
/// are committed the slot's record does not say its sweep ended. Once they are, it does,
/// with the runs to delete. SQLite (the trigger).
#[tokio::test]
async fn a_slots_record_says_its_sweep_ended_only_once_its_decisions_are_committed() {
    let PreparedApp {
        sim,
        ctx,
        dir: _dir,
        store_url,
        ..
    } = prepare_app(AppOptions {
        rules: EVERY_5_MIN.into(),
        store_dir: Some(tempfile::tempdir().unwrap()),
        ..AppOptions::default()
    })
    .await;
    sim.add_run(ended("feat/old", "01d", 60 * 24 * 45, "passed"))
        .unwrap();
    let slot = slot_an_hour_ago();
    assert_eq!(
        fire_due(
            &ctx,
            slot - chrono::Duration::seconds(1),
            slot + chrono::Duration::seconds(30)
        )
        .await,
        vec![("old".to_string(), slot)]
    );
    use sqlx::Connection as _;
    let mut other = sqlx::SqliteConnection::connect(&store_url).await.unwrap();
    sqlx::raw_sql(
        "CREATE TRIGGER refuse_decisions BEFORE INSERT ON decisions \
         BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
    )
    .execute(&mut other)
    .await
    .unwrap();
    process_pending(&ctx).await.unwrap();
    let d = slot_event(&ctx, "old", slot).await;
    assert_eq!((d.attempts, d.processed_at), (1, None), "{d:#?}");
    assert!(
        d.last_error
            .as_deref()
            .is_some_and(|e| e.contains("refused by the test")),
        "{d:#?}"
    );
    let record = ctx.store.get_slot("old", slot).await.unwrap().unwrap();
    assert_eq!(
        (record.finished_at, record.summary.as_deref()),
        (None, None),
        "the sweep's decisions were not committed: {record:#?}"
    );

    // Mended: the retry commits them, and the record then says how the sweep ended.
    sqlx::raw_sql("DROP TRIGGER refuse_decisions")
        .execute(&mut other)
        .await
        .unwrap();
    drop(other);
    let own = [("schedule".to_string(), slot_delivery_id("old", slot))];
    assert_eq!(process_only(&ctx, &own).await.unwrap(), 1);
    let d = slot_event(&ctx, "old", slot).await;
    assert_eq!(d.outcome.as_deref(), Some("1 decision(s)"), "{d:#?}");
    let record = ctx.store.get_slot("old", slot).await.unwrap().unwrap();
    assert!(record.finished_at.is_some(), "{record:#?}");
    assert_eq!(record.summary.as_deref(), Some("1 run to delete"));
}

/// A rule's first slot is not skipped when a restart spans it: the rule was seen (by the
/// first process, which stopped before the slot), the slot passed while nothing ran, and
/// the next process, started after it, fires it once, though the rule had never fired.
#[tokio::test]
async fn a_slot_a_restart_spans_fires_once_though_the_rule_never_fired() {
    let PreparedApp { ctx, dir: _dir, .. } = prepare_app(AppOptions {
        rules: EVERY_5_MIN.into(),
        ..AppOptions::default()
    })
    .await;
    let slot = slot_an_hour_ago();
    let minutes = chrono::Duration::minutes;
    // The first process: started two minutes before the slot, stopped one before it.
    assert_eq!(
        fire_due(&ctx, slot - minutes(2), slot - minutes(1)).await,
        vec![]
    );
    // The next one, started a minute after the slot.
    let since = slot + minutes(1);
    assert_eq!(
        fire_due(&ctx, since, since + chrono::Duration::seconds(5)).await,
        vec![("old".to_string(), slot)]
    );
    assert_eq!(
        fire_due(&ctx, since, since + chrono::Duration::seconds(6)).await,
        vec![]
    );
    // Another process starting later finds the rule seen when the first one saw it.
    let seen = ctx
        .store
        .watermark("schedule-seen:old")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen, slot - minutes(2));
}
