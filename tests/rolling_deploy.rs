//! A rolling deploy on one PostgreSQL store: replicas with the old configuration run
//! beside replicas with the new one. A rule only the new configuration has is not taken
//! as removed by an old replica while its event (or action) is young
//! (`processor::UNKNOWN_RULE_GRACE`): the event is retried, the action postponed, for a
//! replica that knows the rule. Past the grace, or on SQLite (one `serve`), the rule is
//! gone ("no longer exists"), as before.

mod common;

use common::*;
use runwarden::commands::serve::PROCESSOR_LEASE;
use runwarden::store::{ActionState, NewDelivery, Store};
use sqlx::Connection as _;

/// The old configuration: no rule `new-retention`.
const OLD_RULES: &str =
    "[[rules]]\nname = \"old-retention\"\nkind = \"retention\"\nolder_than = \"365d\"\n";

/// The new configuration: `new-retention` too (on demand only, no schedule).
const NEW_RULES: &str = "[[rules]]\nname = \"old-retention\"\nkind = \"retention\"\nolder_than = \"365d\"\n\n[[rules]]\nname = \"new-retention\"\nkind = \"retention\"\nolder_than = \"30d\"\n";

/// What the retry of an event (or postponement of an action) for a rule this replica
/// does not know says.
const NOT_IN_CONFIG: &str = "is not in this replica's config";

/// Who holds the processor lease on `store`.
async fn processor_holder(store: &Store) -> Option<String> {
    store
        .lease_holder(PROCESSOR_LEASE)
        .await
        .unwrap()
        .map(|(h, _)| h)
}

/// A stored `schedule` event (a manual sweep) of rule `rule`, received at `received_at`.
fn sweep_event(rule: &str, id: &str, received_at: chrono::DateTime<chrono::Utc>) -> NewDelivery {
    NewDelivery {
        source: "schedule".into(),
        delivery_id: id.into(),
        event: "sweep".into(),
        payload: serde_json::json!({ "rule": rule, "manual": true }).to_string(),
        received_at,
    }
}

/// Bot A (old configuration) holds the processor lease when bot B (new configuration,
/// same database) queues a sweep of its new rule: A does not finish the event as of a
/// rule that "no longer exists", it retries it; once A is stopped, B takes the lease
/// over and sweeps (the old run of B's Currents is deleted).
#[tokio::test(flavor = "multi_thread")]
async fn a_new_rules_sweep_waits_for_a_replica_that_knows_the_rule() {
    let url = postgres::fresh_database().await;
    let a = spawn_app_with(AppOptions {
        rules: OLD_RULES.into(),
        store_url: Some(url.clone()),
        ..AppOptions::default()
    })
    .await;
    eventually("A to hold the processor lease", 20, || async {
        processor_holder(&a.bot.ctx.store).await.as_deref() == Some(a.bot.ctx.worker_id.as_str())
    })
    .await;
    let b = spawn_app_with(AppOptions {
        rules: NEW_RULES.into(),
        store_url: Some(url),
        ..AppOptions::default()
    })
    .await;
    let old_run = b
        .sim
        .add_run(ended("feat/old", "old1", 60 * 24 * 40, "passed"))
        .unwrap()
        .run_id;

    let r = b.admin_sweep("new-retention").await;
    assert_eq!(r.status(), 202);
    let body: serde_json::Value = r.json().await.unwrap();
    let id = body["delivery"].as_str().unwrap().to_string();
    let store = &b.bot.ctx.store;

    // A (the lease holder) tries it and leaves it to be retried, not processed.
    eventually("A to try the sweep of the new rule", 20, || async {
        let d = store.find_delivery("schedule", &id).await.unwrap().unwrap();
        assert!(
            d.processed_at.is_none(),
            "the old replica finished the new rule's sweep: {d:#?}"
        );
        d.attempts >= 1
    })
    .await;
    let d = store.find_delivery("schedule", &id).await.unwrap().unwrap();
    let error = d.last_error.clone().unwrap_or_default();
    assert!(
        error.contains("\"new-retention\"") && error.contains(NOT_IN_CONFIG),
        "{d:#?}"
    );
    assert_eq!(
        processor_holder(store).await.as_deref(),
        Some(a.bot.ctx.worker_id.as_str()),
        "A still holds the processor lease: it made the attempt"
    );
    assert!(b.sim.run(&old_run).is_some(), "nothing swept yet");

    // A goes away (the deploy goes on); B takes the processor over and sweeps.
    a.bot.shutdown().await;
    b.wait_for("B's sweep of the new rule to delete the old run", 60, |b| {
        b.sim.run(&old_run).is_none()
    })
    .await;
    eventually("the event to be processed", 20, || async {
        store
            .find_delivery("schedule", &id)
            .await
            .unwrap()
            .unwrap()
            .processed_at
            .is_some()
    })
    .await;
    let d = store.find_delivery("schedule", &id).await.unwrap().unwrap();
    assert_eq!(d.outcome.as_deref(), Some("1 decision(s)"), "{d:#?}");
    assert_eq!(
        processor_holder(store).await.as_deref(),
        Some(b.bot.ctx.worker_id.as_str())
    );
    b.wait_audit("the delete of rule new-retention", 20, |entries| {
        entries
            .iter()
            .any(|e| e.rule == "new-retention" && e.run_id == old_run)
    })
    .await;
    b.bot.shutdown().await;
}

/// On a shared store, a sweep event of a rule this replica does not know is retried
/// while it is younger than the grace, and skipped as before once older.
#[tokio::test(flavor = "multi_thread")]
async fn on_postgres_an_unknown_rules_event_is_skipped_once_past_the_grace() {
    let p = prepare_app(AppOptions {
        rules: OLD_RULES.into(),
        store_url: Some(postgres::fresh_database().await),
        ..AppOptions::default()
    })
    .await;
    let store = &p.ctx.store;
    let now = chrono::Utc::now();
    let grace =
        chrono::Duration::from_std(runwarden::intake::processor::UNKNOWN_RULE_GRACE).unwrap();
    store
        .insert_delivery(sweep_event("new-retention", "manual:young", now))
        .await
        .unwrap();
    store
        .insert_delivery(sweep_event(
            "new-retention",
            "manual:old",
            now - grace - chrono::Duration::minutes(1),
        ))
        .await
        .unwrap();
    runwarden::intake::processor::process_pending(&p.ctx)
        .await
        .unwrap();

    let young = store
        .find_delivery("schedule", "manual:young")
        .await
        .unwrap()
        .unwrap();
    assert!(young.processed_at.is_none(), "{young:#?}");
    assert_eq!(young.attempts, 1, "{young:#?}");
    assert!(
        young
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains(NOT_IN_CONFIG)),
        "{young:#?}"
    );
    let old = store
        .find_delivery("schedule", "manual:old")
        .await
        .unwrap()
        .unwrap();
    assert!(old.processed_at.is_some(), "{old:#?}");
    assert_eq!(
        old.outcome.as_deref(),
        Some("skipped: rule \"new-retention\" no longer exists"),
        "{old:#?}"
    );
}

/// On SQLite (one `serve`: its configuration is the only one), a sweep event of a rule
/// the configuration does not have is skipped at once, however young.
#[tokio::test(flavor = "multi_thread")]
async fn on_sqlite_an_unknown_rules_event_is_skipped_at_once() {
    let p = prepare_app(AppOptions {
        rules: OLD_RULES.into(),
        // SQLite, whatever `RUNWARDEN_TEST_STORE` says.
        store_dir: Some(tempfile::tempdir().unwrap()),
        ..AppOptions::default()
    })
    .await;
    let store = &p.ctx.store;
    assert!(!store.backend().is_shared());
    store
        .insert_delivery(sweep_event(
            "new-retention",
            "manual:young",
            chrono::Utc::now(),
        ))
        .await
        .unwrap();
    runwarden::intake::processor::process_pending(&p.ctx)
        .await
        .unwrap();
    let d = store
        .find_delivery("schedule", "manual:young")
        .await
        .unwrap()
        .unwrap();
    assert!(d.processed_at.is_some(), "{d:#?}");
    assert_eq!(
        d.outcome.as_deref(),
        Some("skipped: rule \"new-retention\" no longer exists"),
        "{d:#?}"
    );
}

/// Queues a summary of rule `new-summary` (which the bot's configuration lacks) for run
/// `run`; its action key.
async fn queue_unknown_summary(store: &Store, run: &str) -> String {
    let key = format!("summarize:new-summary:{run}:RUN_FINISH");
    store
        .record_decisions(&[runwarden::store::NewDecision {
            at: chrono::Utc::now(),
            rule: "new-summary".into(),
            kind: "summary".into(),
            action: "summarize".into(),
            run_id: run.into(),
            project_id: PROJECT.into(),
            branch: Some("feat/a".into()),
            sha: Some("a1".into()),
            reason: "RUN_FINISH".into(),
            dry_run: false,
            not_before: None,
            action_key: key.clone(),
            payload: Some(serde_json::json!({ "event": "RUN_FINISH" }).to_string()),
            skip: None,
        }])
        .await
        .unwrap();
    key
}

/// The executor of a replica whose configuration lacks a summary's rule (decided by a
/// replica with a newer one) postpones it on a shared store, without counting an attempt,
/// while the action is younger than the grace; once older, it skips it as before.
#[tokio::test(flavor = "multi_thread")]
async fn on_postgres_a_summary_of_an_unknown_rule_is_postponed_until_past_the_grace() {
    let url = postgres::fresh_database().await;
    let p = prepare_app(AppOptions {
        rules: OLD_RULES.into(),
        store_url: Some(url.clone()),
        ..AppOptions::default()
    })
    .await;
    let store = &p.ctx.store;
    let key = queue_unknown_summary(store, "run-1").await;

    runwarden::actions::run_due(&p.ctx).await;
    let a = store.action_by_key(&key).await.unwrap().unwrap();
    assert_eq!(a.state, ActionState::Pending, "{a:#?}");
    assert_eq!(a.attempts, 0, "not counted as an attempt: {a:#?}");
    assert!(
        a.last_error
            .as_deref()
            .is_some_and(|e| e.contains("\"new-summary\"") && e.contains(NOT_IN_CONFIG)),
        "{a:#?}"
    );
    assert!(a.next_attempt_at > chrono::Utc::now(), "{a:#?}");

    // The action, decided longer ago than the grace, and due.
    let grace_ms = runwarden::intake::processor::UNKNOWN_RULE_GRACE.as_millis() as i64;
    let now_ms = chrono::Utc::now().timestamp_millis();
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query("UPDATE actions SET created_at = $1, next_attempt_at = $2 WHERE id = $3")
        .bind(now_ms - grace_ms - 60_000)
        .bind(now_ms)
        .bind(a.id)
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();

    runwarden::actions::run_due(&p.ctx).await;
    let a = store.action_by_key(&key).await.unwrap().unwrap();
    assert_eq!(a.state, ActionState::Skipped, "{a:#?}");
    assert_eq!(
        a.detail.as_deref(),
        Some("rule \"new-summary\" no longer exists"),
        "{a:#?}"
    );
}
