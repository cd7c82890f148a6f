//! The durable store: migrations, delivery dedupe, decisions and actions, the executor's
//! lease queue, the audit view (SPEC §1), slots, leases, durability and failure
//! classification.
//!
//! Every behaviour test runs twice, on a temporary SQLite file (`NAME::sqlite`) and on a
//! fresh PostgreSQL database (`NAME::postgres`; see `tests/support/postgres.rs` for where
//! the server comes from). The tests of SQLite's own settings and failures run on SQLite
//! only, those of PostgreSQL's own (`postgres_*`) on PostgreSQL only.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use runwarden::store::{
    ActionOutcome, ActionState, InsertOutcome, MIGRATOR, NewDecision, NewDelivery, Outcome,
    RunRecord, SectionUpdate, Store, StoreError, StoreOptions,
};
use sqlx::Connection as _;
use sqlx::migrate::Migrate as _;

/// 2026-01-01T00:00:00Z plus `secs`.
fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_767_225_600 + secs, 0).unwrap()
}

#[path = "support/postgres.rs"]
mod pg;
#[path = "support/sqlite_lock.rs"]
mod sqlite_lock;
#[macro_use]
#[path = "support/temp_store.rs"]
mod temp_store;
use temp_store::{Db, TempStore, sqlite_url as url};

both!(
    data_survives_reopening_the_file,
    a_duplicate_delivery_changes_nothing,
    fifty_concurrent_copies_of_a_delivery_store_one,
    concurrent_deliveries_share_commits_and_each_key_is_stored_once,
    processed_marks_and_new_deliveries_commit_together_and_each_is_applied,
    an_event_record_writes_its_runs_and_leases_its_new_due_actions_to_the_worker,
    event_records_in_one_commit_are_all_or_nothing_and_lease_within_one_cap,
    unprocessed_deliveries_come_oldest_first_within_the_limit,
    decisions_and_the_processed_mark_commit_together,
    two_rules_deciding_the_same_cancel_make_one_action_and_two_decisions,
    the_same_rule_deciding_again_adds_nothing,
    dry_run_decisions_create_no_action_and_do_not_block_a_real_one,
    the_earliest_not_before_wins_while_the_action_waits,
    audit_filters_by_time_and_rule_and_limits_newest_first,
    audit_json_has_exactly_the_spec_shape,
    a_claimed_action_is_not_reclaimed_before_its_lease_expires,
    not_before_holds_an_action_back,
    claims_respect_the_limit_and_due_order_and_released_leases_are_claimable,
    concurrent_workers_never_claim_the_same_action,
    a_failed_attempt_is_retried_after_its_backoff_then_completes,
    a_postponed_action_waits_without_counting_an_attempt,
    a_failed_action_is_final_until_an_operator_retries_it,
    pending_and_failed_actions_are_listed_newest_first_behind_any_number_of_decisions,
    runs_are_upserted_and_stale_observations_ignored,
    in_progress_runs_filter_by_project_and_branch_and_skip_gone_runs,
    passed_durations_are_the_newest_completed_passed_runs_of_the_branch,
    a_section_for_an_old_head_never_overwrites_the_new_one,
    a_slot_is_claimed_once,
    old_slots_are_pruned_but_each_rules_latest,
    a_lease_is_held_until_it_expires_then_taken_over,
    a_waiting_acquire_gets_the_lease_once_its_holder_lets_go,
    the_audit_forgets_what_finished_long_ago_and_keeps_what_is_still_to_do,
    old_processed_events_and_finished_runs_are_pruned_in_chunks,
);

fn delivery(source: &str, id: &str, payload: &str, at: DateTime<Utc>) -> NewDelivery {
    NewDelivery {
        source: source.into(),
        delivery_id: id.into(),
        event: "RUN_FINISH".into(),
        payload: payload.into(),
        received_at: at,
    }
}

fn decision(rule: &str, kind: &str, action: &str, run: &str, at: DateTime<Utc>) -> NewDecision {
    NewDecision {
        at,
        rule: rule.into(),
        kind: kind.into(),
        action: action.into(),
        run_id: run.into(),
        project_id: "bAYZ4a".into(),
        branch: Some("feat/x".into()),
        sha: Some("c0ffee".into()),
        reason: format!("{rule} says {action} {run}"),
        dry_run: false,
        not_before: None,
        action_key: format!("{action}:{run}"),
        payload: None,
        skip: None,
    }
}

fn run_record(id: &str, state: &str, status: &str, created: i64, updated: i64) -> RunRecord {
    RunRecord {
        run_id: id.into(),
        project_id: "bAYZ4a".into(),
        branch: Some("main".into()),
        sha: Some(format!("sha-{id}")),
        created_at: t(created),
        completion_state: state.into(),
        status: status.into(),
        json: format!(r#"{{"runId":"{id}"}}"#),
        completed_specs: 0,
        progress_changed_at: t(updated),
        duration_ms: None,
        updated_at: t(updated),
    }
}

// ---------------------------------------------------------------------------------------
// Migrations and durability

#[tokio::test]
async fn migrations_apply_on_an_empty_file_and_rerun_idempotently() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested-name.db");
    assert!(!path.exists());
    let store = Store::connect(&url(&path)).await.unwrap();
    assert!(path.exists(), "the database file is created");
    store.ping().await.unwrap();
    store.close().await;

    // Reopening runs the migrator again: nothing to do, no error.
    let store = Store::connect(&url(&path)).await.unwrap();
    store.ping().await.unwrap();
    store.close().await;

    let mut conn = sqlx::SqliteConnection::connect(&url(&path)).await.unwrap();
    let applied = conn.list_applied_migrations().await.unwrap();
    let expected: Vec<i64> = MIGRATOR.iter().map(|m| m.version).collect();
    assert!(!expected.is_empty());
    assert_eq!(
        applied.iter().map(|m| m.version).collect::<Vec<_>>(),
        expected
    );
    for (a, m) in applied.iter().zip(MIGRATOR.iter()) {
        assert_eq!(a.checksum, m.checksum, "migration {} changed", m.version);
    }
    // And applying them once more directly is a no-op.
    MIGRATOR.run(&mut conn).await.unwrap();
    assert_eq!(
        conn.list_applied_migrations().await.unwrap().len(),
        expected.len()
    );
}

async fn data_survives_reopening_the_file(db: Db) {
    let ts = TempStore::new(db).await;
    ts.store
        .insert_delivery(delivery("github", "d-1", r#"{"a":1}"#, t(0)))
        .await
        .unwrap();
    let rec = ts
        .store
        .record_decisions(&[decision("r1", "supersede", "cancel", "run-1", t(1))])
        .await
        .unwrap();
    assert!(ts.store.claim_slot("nightly", t(0), t(0)).await.unwrap());
    ts.store.close().await;

    let store = ts.reopen().await;
    let pending = store.next_unprocessed(t(10), 10).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].payload, r#"{"a":1}"#);
    let action = store
        .get_action(rec[0].action_id.unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(action.state, ActionState::Pending);
    assert_eq!(store.audit(None, None, 10).await.unwrap().len(), 1);
    assert_eq!(store.last_slot("nightly").await.unwrap(), Some(t(0)));
    assert!(!store.claim_slot("nightly", t(0), t(5)).await.unwrap());
}

// ---------------------------------------------------------------------------------------
// Deliveries

async fn a_duplicate_delivery_changes_nothing(db: Db) {
    let ts = TempStore::new(db).await;
    let s = &ts.store;
    assert_eq!(
        s.insert_delivery(delivery("github", "abc", "first", t(0)))
            .await
            .unwrap(),
        InsertOutcome::Inserted
    );
    assert_eq!(
        s.insert_delivery(delivery("github", "abc", "second", t(5)))
            .await
            .unwrap(),
        InsertOutcome::Duplicate
    );
    assert_eq!(s.count_unprocessed().await.unwrap(), 1);
    let stored = s.find_delivery("github", "abc").await.unwrap().unwrap();
    assert_eq!(stored.payload, "first");
    assert_eq!(stored.received_at, t(0));

    // Still a duplicate once processed.
    s.mark_processed(stored.id, "done").await.unwrap();
    assert_eq!(
        s.insert_delivery(delivery("github", "abc", "third", t(9)))
            .await
            .unwrap(),
        InsertOutcome::Duplicate
    );
    assert_eq!(s.count_unprocessed().await.unwrap(), 0);
    let stored = s.get_delivery(stored.id).await.unwrap().unwrap();
    assert_eq!(stored.outcome.as_deref(), Some("done"));
    assert_eq!(stored.payload, "first");
}

async fn fifty_concurrent_copies_of_a_delivery_store_one(db: Db) {
    let ts = TempStore::new(db).await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let store = if i % 2 == 0 {
            ts.store.clone()
        } else {
            ts.reopen().await
        };
        tasks.push(tokio::spawn(async move {
            store
                .insert_delivery(delivery("github", "same", &format!("copy {i}"), t(i)))
                .await
                .unwrap()
        }));
    }
    let mut inserted = 0;
    for task in tasks {
        if task.await.unwrap() == InsertOutcome::Inserted {
            inserted += 1;
        }
    }
    assert_eq!(inserted, 1);
    assert_eq!(ts.store.count_unprocessed().await.unwrap(), 1);
}

/// Group commit: deliveries arriving together are stored by fewer commits than there are
/// deliveries, in arrival order, each key once (a copy within the same group, or of a
/// stored one, is a duplicate).
async fn concurrent_deliveries_share_commits_and_each_key_is_stored_once(db: Db) {
    let ts = TempStore::new(db).await;
    let s = &ts.store;
    s.insert_delivery(delivery("github", "k-0", "stored before", t(0)))
        .await
        .unwrap();
    let before = (
        s.group_commit_stats().groups(),
        s.group_commit_stats().events(),
    );
    assert_eq!(before, (1, 1));
    // 300 keys, each sent twice at once: 600 concurrent inserts.
    let inserts = (0..600).map(|i| {
        let key = format!("k-{}", i % 300);
        async move {
            let at = t(1 + (i % 300));
            (
                key.clone(),
                s.insert_delivery(delivery("github", &key, &format!("copy {i}"), at))
                    .await
                    .unwrap(),
            )
        }
    });
    let outcomes = futures::future::join_all(inserts).await;
    let mut inserted = std::collections::HashMap::<String, usize>::new();
    for (key, o) in &outcomes {
        if *o == InsertOutcome::Inserted {
            *inserted.entry(key.clone()).or_default() += 1;
        }
    }
    assert_eq!(inserted.get("k-0"), None, "k-0 was stored before");
    assert_eq!(inserted.len(), 299);
    assert!(inserted.values().all(|n| *n == 1), "each key stored once");
    assert_eq!(s.count_unprocessed().await.unwrap(), 300);
    let groups = s.group_commit_stats().groups() - before.0;
    let events = s.group_commit_stats().events() - before.1;
    assert_eq!(events, 600);
    assert!(
        groups <= 600 / 2,
        "600 concurrent inserts took {groups} commits: not grouped"
    );
    // Arrival order is kept: the oldest received first, then by row id.
    let first = s.next_unprocessed(t(1000), 3).await.unwrap();
    let ids: Vec<&str> = first.iter().map(|d| d.delivery_id.as_str()).collect();
    assert_eq!(ids, ["k-0", "k-1", "k-2"]);
}

/// `mark_processed_many` goes through the delivery writer: marks sent while deliveries
/// arrive are applied (each id once, unknown ids ignored) and counted with its commits.
async fn processed_marks_and_new_deliveries_commit_together_and_each_is_applied(db: Db) {
    let ts = TempStore::new(db).await;
    let s = &ts.store;
    for i in 0..40 {
        s.insert_delivery(delivery("github", &format!("old-{i}"), "{}", t(i)))
            .await
            .unwrap();
    }
    let old: Vec<i64> = s
        .next_unprocessed(t(1000), 40)
        .await
        .unwrap()
        .iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(old.len(), 40);
    let stats = s.group_commit_stats();
    let (groups, marks) = (stats.groups(), stats.marks());
    let inserts = (0..100).map(|i| async move {
        s.insert_delivery(delivery("github", &format!("new-{i}"), "{}", t(100 + i)))
            .await
            .unwrap()
    });
    // Four marks of ten, the last with an unknown id too.
    let mark_calls = old.chunks(10).enumerate().map(|(i, chunk)| async move {
        let mut ids = chunk.to_vec();
        if i == 3 {
            ids.push(999_999);
        }
        s.mark_processed_many(&ids, "0 decision(s)").await.unwrap()
    });
    let (outcomes, _) = futures::join!(
        futures::future::join_all(inserts),
        futures::future::join_all(mark_calls)
    );
    assert!(outcomes.iter().all(|o| *o == InsertOutcome::Inserted));
    assert_eq!(stats.marks() - marks, 4);
    assert!(
        stats.groups() - groups < 104,
        "{} commits for 100 deliveries and 4 marks",
        stats.groups() - groups
    );
    for id in &old {
        let d = s.get_delivery(*id).await.unwrap().unwrap();
        assert!(d.processed_at.is_some(), "{id} not marked");
        assert_eq!(d.outcome.as_deref(), Some("0 decision(s)"));
    }
    assert_eq!(s.count_unprocessed().await.unwrap(), 100);
}

/// While the writer waits for the SQLite lock with a group of deliveries, a mark and more
/// deliveries queue up: they share the next commit (no commit of the mark's own).
#[tokio::test(flavor = "current_thread")]
async fn a_processed_mark_rides_with_the_next_commit_of_deliveries() {
    let ts = TempStore::new(Db::Sqlite).await;
    let s = ts.store.clone();
    s.insert_delivery(delivery("github", "old", "{}", t(0)))
        .await
        .unwrap();
    let id = s.next_unprocessed(t(10), 1).await.unwrap()[0].id;
    let stats = s.group_commit_stats();
    let (groups, marks) = (stats.groups(), stats.marks());

    let lock = sqlite_lock::hold_write_lock(&url(ts.path())).await;
    let insert = |key: &'static str| {
        let s = s.clone();
        tokio::spawn(async move { s.insert_delivery(delivery("github", key, "{}", t(5))).await })
    };
    let first = insert("a");
    // The writer takes "a" and waits for the lock (SQLite's busy handler, off this
    // thread): nothing it does can finish meanwhile.
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    let mark = {
        let s = s.clone();
        tokio::spawn(async move { s.mark_processed_many(&[id], "0 decision(s)").await })
    };
    let (b, c) = (insert("b"), insert("c"));
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    assert!(!first.is_finished() && !mark.is_finished());
    sqlite_lock::release(lock).await;
    for t in [first, b, c] {
        assert_eq!(t.await.unwrap().unwrap(), InsertOutcome::Inserted);
    }
    mark.await.unwrap().unwrap();
    assert_eq!(stats.marks() - marks, 1);
    assert_eq!(
        stats.groups() - groups,
        2,
        "\"a\" alone, then the mark with \"b\" and \"c\""
    );
    let d = s.get_delivery(id).await.unwrap().unwrap();
    assert!(d.processed_at.is_some());
}

/// `record_event`: the observed runs, the decisions, the processed mark and the lease of
/// the new due actions commit together; actions that are not new or not due stay for the
/// executor's own claim.
async fn an_event_record_writes_its_runs_and_leases_its_new_due_actions_to_the_worker(db: Db) {
    let ts = TempStore::new(db).await;
    let s = &ts.store;
    // An action decided earlier, still pending.
    s.record_decisions(&[decision("r0", "supersede", "cancel", "run-old", t(0))])
        .await
        .unwrap();
    s.insert_delivery(delivery("currents", "ev-1", "{}", t(1)))
        .await
        .unwrap();
    let d = s.next_unprocessed(t(1), 1).await.unwrap().remove(0);
    let now = t(2);
    let mut later = decision("r2", "orphan", "cancel", "run-later", now);
    later.not_before = Some(now + chrono::Duration::seconds(60));
    let mut dry = decision("r3", "supersede", "cancel", "run-dry", now);
    dry.dry_run = true;
    // Created already skipped (e.g. its breaker tripped): never leased.
    let mut skipped = decision("r4", "supersede", "cancel", "run-skipped", now);
    skipped.skip = Some("skipped: breaker".into());
    let decisions = [
        decision("r1", "supersede", "cancel", "run-old", now),
        skipped,
        decision("r1", "supersede", "cancel", "run-new", now),
        decision("r1", "supersede", "cancel", "run-new2", now),
        later,
        dry,
    ];
    let runs = [run_record("run-new", "IN_PROGRESS", "RUNNING", 1, 2)];
    let lease = Duration::from_secs(600);
    let rec = s
        .record_event(&runwarden::store::EventRecord {
            delivery_id: d.id,
            note: "6 decision(s)",
            quiet: &[],
            decisions: &decisions,
            runs: &runs,
            now,
            // The worker has room for one more action.
            claim_for: Some(runwarden::store::Claim {
                worker_id: "worker-a",
                lease,
                max: 1,
            }),
        })
        .await
        .unwrap();
    assert_eq!(rec.decisions.len(), 6);
    let skipped = s
        .action_by_key("cancel:run-skipped")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(skipped.state, ActionState::Skipped, "{skipped:?}");
    assert_eq!((skipped.claims, skipped.worker_id), (0, None));
    assert_eq!(
        rec.claimed
            .iter()
            .map(|a| a.run_id.as_str())
            .collect::<Vec<_>>(),
        ["run-new"],
        "only new actions that are due now, no more than the worker has room for"
    );
    let a = &rec.claimed[0];
    assert_eq!(a.state, ActionState::Running);
    assert_eq!(a.worker_id.as_deref(), Some("worker-a"));
    assert_eq!(a.claims, 1);
    assert_eq!(a.lease_until, Some(now + chrono::Duration::seconds(600)));
    assert!(s.get_run("run-new").await.unwrap().is_some(), "run stored");
    assert_eq!(s.count_unprocessed().await.unwrap(), 0);
    // Another worker's claim gets the pending ones, never the leased one.
    let other = s
        .claim_due_actions(t(3), 10, lease, "worker-b")
        .await
        .unwrap();
    assert_eq!(
        other.iter().map(|a| a.run_id.as_str()).collect::<Vec<_>>(),
        ["run-old", "run-new2"]
    );
    // The one waiting for its not_before is claimable once due, not before.
    let due = s
        .claim_due_actions(t(70), 10, lease, "worker-b")
        .await
        .unwrap();
    assert_eq!(
        due.iter().map(|a| a.run_id.as_str()).collect::<Vec<_>>(),
        ["run-later"]
    );

    // Without `claim_for` nothing is leased; with a failing decision nothing at all is
    // written (not the runs either).
    s.insert_delivery(delivery("currents", "ev-2", "{}", t(4)))
        .await
        .unwrap();
    let d2 = s.next_unprocessed(t(4), 1).await.unwrap().remove(0);
    let bad = [decision("r1", "supersede", "archive", "run-x", now)];
    let runs2 = [run_record("run-x", "IN_PROGRESS", "RUNNING", 1, 2)];
    let err = s
        .record_event(&runwarden::store::EventRecord {
            delivery_id: d2.id,
            note: "1 decision(s)",
            quiet: &[],
            decisions: &bad,
            runs: &runs2,
            now,
            claim_for: None,
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err}");
    assert!(s.get_run("run-x").await.unwrap().is_none());
    assert_eq!(s.count_unprocessed().await.unwrap(), 1);
    let ok = [decision("r1", "supersede", "cancel", "run-x", now)];
    let rec = s
        .record_event(&runwarden::store::EventRecord {
            delivery_id: d2.id,
            note: "1 decision(s)",
            quiet: &[],
            decisions: &ok,
            runs: &runs2,
            now,
            claim_for: None,
        })
        .await
        .unwrap();
    assert!(rec.claimed.is_empty());
    assert!(rec.decisions[0].new_action);
    assert!(s.get_run("run-x").await.unwrap().is_some());
}

/// `record_events`: several events' records in one transaction. A bad one (here an
/// unknown delivery) writes nothing of any; the worker's cap on leased actions holds over
/// the whole group, the first events' actions first.
async fn event_records_in_one_commit_are_all_or_nothing_and_lease_within_one_cap(db: Db) {
    let ts = TempStore::new(db).await;
    let s = &ts.store;
    for (i, key) in ["g-1", "g-2", "g-3"].iter().enumerate() {
        s.insert_delivery(delivery("github", key, "{}", t(i as i64)))
            .await
            .unwrap();
    }
    let ds = s.next_unprocessed(t(10), 3).await.unwrap();
    assert_eq!(ds.len(), 3);
    let now = t(11);
    let per_event: Vec<[runwarden::store::NewDecision; 2]> = (0..3)
        .map(|i| {
            [
                decision("r1", "supersede", "cancel", &format!("run-{i}a"), now),
                decision("r1", "supersede", "cancel", &format!("run-{i}b"), now),
            ]
        })
        .collect();
    let runs: Vec<[runwarden::store::RunRecord; 1]> = (0..3)
        .map(|i| {
            [run_record(
                &format!("run-{i}a"),
                "IN_PROGRESS",
                "RUNNING",
                1,
                2,
            )]
        })
        .collect();
    let claim = Some(runwarden::store::Claim {
        worker_id: "worker-a",
        lease: Duration::from_secs(600),
        max: 3,
    });
    let record = |i: usize, delivery_id: i64| runwarden::store::EventRecord {
        delivery_id,
        note: "2 decision(s)",
        quiet: &[],
        decisions: &per_event[i],
        runs: &runs[i],
        now,
        claim_for: claim,
    };
    // The third names a delivery that does not exist: nothing of the group is written.
    let err = s
        .record_events(&[
            record(0, ds[0].id),
            record(1, ds[1].id),
            record(2, i64::MAX),
        ])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    assert_eq!(s.count_unprocessed().await.unwrap(), 3);
    assert!(s.get_run("run-0a").await.unwrap().is_none());
    assert!(
        s.claim_due_actions(t(12), 100, Duration::from_secs(1), "probe")
            .await
            .unwrap()
            .is_empty(),
        "no action of the failed group exists"
    );
    // All three together: one result per event, in order; 3 leased over the 6 actions.
    let done = s
        .record_events(&[
            record(0, ds[0].id),
            record(1, ds[1].id),
            record(2, ds[2].id),
        ])
        .await
        .unwrap();
    assert_eq!(done.len(), 3);
    assert!(done.iter().all(|r| r.decisions.len() == 2));
    let leased: Vec<Vec<&str>> = done
        .iter()
        .map(|r| r.claimed.iter().map(|a| a.run_id.as_str()).collect())
        .collect();
    assert_eq!(
        leased,
        vec![vec!["run-0a", "run-0b"], vec!["run-1a"], vec![]],
        "at most the worker's 3 free slots over the group, the first events first"
    );
    assert_eq!(s.count_unprocessed().await.unwrap(), 0);
    for i in 0..3 {
        assert!(s.get_run(&format!("run-{i}a")).await.unwrap().is_some());
    }
    let rest = s
        .claim_due_actions(t(12), 100, Duration::from_secs(1), "worker-b")
        .await
        .unwrap();
    assert_eq!(
        rest.iter().map(|a| a.run_id.as_str()).collect::<Vec<_>>(),
        ["run-1b", "run-2a", "run-2b"]
    );
}

async fn unprocessed_deliveries_come_oldest_first_within_the_limit(db: Db) {
    let ts = TempStore::new(db).await;
    let s = &ts.store;
    for (id, at) in [("c", 30), ("a", 10), ("b", 20)] {
        s.insert_delivery(delivery("currents", id, "{}", t(at)))
            .await
            .unwrap();
    }
    let ids = |v: Vec<runwarden::store::Delivery>| {
        v.into_iter().map(|d| d.delivery_id).collect::<Vec<_>>()
    };
    assert_eq!(
        ids(s.next_unprocessed(t(100), 10).await.unwrap()),
        ["a", "b", "c"]
    );
    assert_eq!(
        ids(s.next_unprocessed(t(100), 2).await.unwrap()),
        ["a", "b"]
    );
    // Not before it was received.
    assert_eq!(ids(s.next_unprocessed(t(15), 10).await.unwrap()), ["a"]);
}

async fn decisions_and_the_processed_mark_commit_together(db: Db) {
    let ts = TempStore::new(db).await;
    let s = &ts.store;
    s.insert_delivery(delivery("currents", "ev-1", "{}", t(0)))
        .await
        .unwrap();
    let d = s.next_unprocessed(t(1), 1).await.unwrap().remove(0);

    // Unknown delivery: nothing is recorded.
    let err = s
        .record_decisions_and_mark_processed(
            &[decision("r1", "supersede", "cancel", "run-1", t(1))],
            d.id + 1000,
            "1 decision",
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    assert!(s.audit(None, None, 10).await.unwrap().is_empty());
    assert_eq!(s.queue_depth().await.unwrap(), 0);

    // An unknown action: nothing is recorded, the delivery stays unprocessed.
    let err = s
        .record_decisions_and_mark_processed(
            &[
                decision("r1", "supersede", "cancel", "run-1", t(1)),
                decision("r2", "retention", "archive", "run-1", t(1)),
            ],
            d.id,
            "2 decisions",
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err}");
    assert!(s.audit(None, None, 10).await.unwrap().is_empty());
    assert_eq!(s.count_unprocessed().await.unwrap(), 1);

    let rec = s
        .record_decisions_and_mark_processed(
            &[decision("r1", "supersede", "cancel", "run-1", t(1))],
            d.id,
            "1 decision",
        )
        .await
        .unwrap();
    assert!(rec[0].new_action);
    assert_eq!(s.count_unprocessed().await.unwrap(), 0);
    assert_eq!(
        s.get_delivery(d.id)
            .await
            .unwrap()
            .unwrap()
            .outcome
            .as_deref(),
        Some("1 decision")
    );
    assert_eq!(s.queue_depth().await.unwrap(), 1);
}

// ---------------------------------------------------------------------------------------
// Decisions, actions, audit

async fn two_rules_deciding_the_same_cancel_make_one_action_and_two_decisions(db: Db) {
    let ts = TempStore::new(db).await;
    let s = &ts.store;
    let rec = s
        .record_decisions(&[
            decision("cancel-superseded", "supersede", "cancel", "run-1", t(10)),
            decision("stuck-runs", "timeout", "cancel", "run-1", t(11)),
        ])
        .await
        .unwrap();
    assert_eq!(rec.len(), 2);
    assert!(rec[0].new_action && !rec[1].new_action);
    assert!(rec[0].new_decision && rec[1].new_decision);
    assert_eq!(rec[0].action_id, rec[1].action_id);
    assert_ne!(rec[0].decision_id, rec[1].decision_id);
    assert_eq!(s.queue_depth().await.unwrap(), 1);

    let audit = s.audit(None, None, 10).await.unwrap();
    assert_eq!(audit.len(), 2);
    assert_eq!(audit[0].rule, "stuck-runs", "newest first");
    assert_eq!(audit[1].rule, "cancel-superseded");
    assert!(audit.iter().all(|e| e.outcome == Outcome::Planned));

    // Carried out once: both decisions show it.
    let claimed = s
        .claim_due_actions(t(20), 10, Duration::from_secs(60), "w1")
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].rule, "cancel-superseded");
    assert_eq!(claimed[0].kind, "supersede");
    assert!(
        s.complete_action(claimed[0].id, ActionOutcome::Done, "cancelled")
            .await
            .unwrap()
    );
    let audit = s.audit(None, None, 10).await.unwrap();
    for e in &audit {
        assert_eq!(e.outcome, Outcome::Done, "{e:?}");
        assert_eq!(e.attempts, 1);
        assert_eq!(e.error, None);
    }
    assert_eq!(
        s.rule_hit_counts().await.unwrap(),
        [
            ("cancel-superseded".to_string(), 1),
            ("stuck-runs".to_string(), 1)
        ]
    );
    let reason = s.cancel_reason("run-1").await.unwrap().unwrap();
    assert_eq!(reason.rule, "cancel-superseded");
    assert_eq!(reason.reason, "cancel-superseded says cancel run-1");
    assert_eq!(s.cancel_reason("run-2").await.unwrap(), None);

    // A later decision on the finished action creates no new work.
    let again = s
        .record_decisions(&[decision("orphans", "orphan", "cancel", "run-1", t(30))])
        .await
        .unwrap();
    assert!(!again[0].new_action && again[0].new_decision);
    assert_eq!(again[0].action_id, rec[0].action_id);
    assert_eq!(s.queue_depth().await.unwrap(), 0);
    assert_eq!(
        s.audit(None, None, 10).await.unwrap()[0].outcome,
        Outcome::Done
    );
}

async fn the_same_rule_deciding_again_adds_nothing(db: Db) {
    let ts = TempStore::new(db).await;
    let s = &ts.store;
    let first = s
        .record_decisions(&[decision("r1", "timeout", "cancel", "run-1", t(1))])
        .await
        .unwrap();
    let again = s
        .record_decisions(&[decision("r1", "timeout", "cancel", "run-1", t(61))])
        .await
        .unwrap();
    assert!(!again[0].new_decision && !again[0].new_action);
    assert_eq!(again[0].decision_id, first[0].decision_id);
    let audit = s.audit(None, None, 10).await.unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].at, t(1), "the first decision is kept");
}

async fn dry_run_decisions_create_no_action_and_do_not_block_a_real_one(db: Db) {
    let ts = TempStore::new(db).await;
    let s = &ts.store;
    let mut dry = decision("old-runs", "retention", "delete", "run-9", t(1));
    dry.dry_run = true;
    let rec = s.record_decisions(&[dry]).await.unwrap();
    assert_eq!(rec[0].action_id, None);
    assert!(!rec[0].new_action);
    assert_eq!(s.queue_depth().await.unwrap(), 0);
    assert!(
        s.claim_due_actions(t(100), 10, Duration::from_secs(60), "w")
            .await
            .unwrap()
            .is_empty()
    );
    let audit = s.audit(None, None, 10).await.unwrap();
    assert_eq!(audit[0].outcome, Outcome::DryRun);
    assert_eq!(audit[0].attempts, 0);

    // The rule is switched to live: the real decision gets an action.
    let rec = s
        .record_decisions(&[decision("old-runs", "retention", "delete", "run-9", t(2))])
        .await
        .unwrap();
    assert!(rec[0].new_action && rec[0].new_decision);
    let audit = s.audit(None, None, 10).await.unwrap();
    let outcomes: Vec<_> = audit.iter().map(|e| e.outcome).collect();
    assert_eq!(outcomes, [Outcome::Planned, Outcome::DryRun]);
}

async fn the_earliest_not_before_wins_while_the_action_waits(db: Db) {
    let ts = TempStore::new(db).await;
    let s = &ts.store;
    let mut orphan = decision("orphans", "orphan", "cancel", "run-1", t(0));
    orphan.not_before = Some(t(120));
    let rec = s.record_decisions(&[orphan]).await.unwrap();
    let id = rec[0].action_id.unwrap();
    let lease = Duration::from_secs(60);
    assert!(
        s.claim_due_actions(t(60), 10, lease, "w")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(s.next_action_due().await.unwrap(), Some(t(120)));

    // A supersede decision wants it now.
    s.record_decisions(&[decision(
        "superseded",
        "supersede",
        "cancel",
        "run-1",
        t(61),
    )])
    .await
    .unwrap();
    let claimed = s.claim_due_actions(t(61), 10, lease, "w").await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].id, id);
    assert_eq!(claimed[0].not_before, None);
}

async fn audit_filters_by_time_and_rule_and_limits_newest_first(db: Db) {
    let ts = TempStore::new(db).await;
    let s = &ts.store;
    s.record_decisions(&[
        decision("a", "supersede", "cancel", "run-1", t(10)),
        decision("b", "timeout", "cancel", "run-2", t(20)),
        decision("a", "supersede", "cancel", "run-3", t(30)),
        decision("b", "timeout", "cancel", "run-4", t(40)),
    ])
    .await
    .unwrap();
    let runs =
        |v: Vec<runwarden::store::AuditEntry>| v.into_iter().map(|e| e.run_id).collect::<Vec<_>>();
    assert_eq!(
        runs(s.audit(None, None, 100).await.unwrap()),
        ["run-4", "run-3", "run-2", "run-1"]
    );
    assert_eq!(
        runs(s.audit(Some(t(20)), None, 100).await.unwrap()),
        ["run-4", "run-3", "run-2"]
    );
    assert_eq!(
        runs(s.audit(None, Some("a"), 100).await.unwrap()),
        ["run-3", "run-1"]
    );
    assert_eq!(
        runs(s.audit(Some(t(11)), Some("a"), 100).await.unwrap()),
        ["run-3"]
    );
    assert_eq!(
        runs(s.audit(None, None, 2).await.unwrap()),
        ["run-4", "run-3"]
    );
    assert!(s.audit(None, Some("nope"), 100).await.unwrap().is_empty());
    assert!(s.audit(Some(t(41)), None, 100).await.unwrap().is_empty());
    // An older decision whose action changed later (here: failed, then re-armed) is under
    // a `since` that covers the change, still in its place by decision time.
    let first = s.action_by_key("cancel:run-1").await.unwrap().unwrap();
    assert!(s.fail_action(first.id, "HTTP 500").await.unwrap());
    // Re-armed a second on (the change is later than the creation even within one ms).
    let rearmed = Utc::now() + chrono::Duration::seconds(1);
    assert!(s.retry_action(first.id, rearmed).await.unwrap());
    let since = Utc::now() - chrono::Duration::minutes(1);
    assert!(since > t(41));
    assert_eq!(
        runs(s.audit(Some(since), None, 100).await.unwrap()),
        ["run-1"]
    );
    assert_eq!(
        runs(s.audit(Some(t(20)), None, 100).await.unwrap()),
        ["run-4", "run-3", "run-2", "run-1"]
    );
}

async fn audit_json_has_exactly_the_spec_shape(db: Db) {
    let ts = TempStore::new(db).await;
    let s = &ts.store;
    let mut dry = decision("old-runs", "retention", "delete", "run-2", t(5));
    dry.dry_run = true;
    dry.branch = None;
    s.record_decisions(&[
        decision("cancel-superseded", "supersede", "cancel", "run-1", t(1)),
        dry,
        decision("stuck", "timeout", "cancel", "run-3", t(7)),
    ])
    .await
    .unwrap();
    let lease = Duration::from_secs(60);
    let claimed = s.claim_due_actions(t(10), 10, lease, "w").await.unwrap();
    assert_eq!(claimed.len(), 2);
    let by_run = |run: &str| claimed.iter().find(|a| a.run_id == run).unwrap().id;
    s.fail_attempt(by_run("run-1"), "currents: HTTP 502", t(20))
        .await
        .unwrap();
    s.fail_action(by_run("run-3"), "currents: HTTP 403 forbidden")
        .await
        .unwrap();

    let audit = s.audit(None, None, 10).await.unwrap();
    // The same snapshot for both backends (one process runs both tests).
    insta::allow_duplicates! {
    insta::assert_json_snapshot!(audit, @r#"
    [
      {
        "at": "2026-01-01T00:00:07Z",
        "rule": "stuck",
        "kind": "timeout",
        "action": "cancel",
        "run_id": "run-3",
        "project_id": "bAYZ4a",
        "branch": "feat/x",
        "outcome": "failed",
        "reason": "stuck says cancel run-3",
        "attempts": 1,
        "error": "currents: HTTP 403 forbidden"
      },
      {
        "at": "2026-01-01T00:00:05Z",
        "rule": "old-runs",
        "kind": "retention",
        "action": "delete",
        "run_id": "run-2",
        "project_id": "bAYZ4a",
        "branch": null,
        "outcome": "dry_run",
        "reason": "old-runs says delete run-2",
        "attempts": 0,
        "error": null
      },
      {
        "at": "2026-01-01T00:00:01Z",
        "rule": "cancel-superseded",
        "kind": "supersede",
        "action": "cancel",
        "run_id": "run-1",
        "project_id": "bAYZ4a",
        "branch": "feat/x",
        "outcome": "planned",
        "reason": "cancel-superseded says cancel run-1",
        "attempts": 1,
        "error": "currents: HTTP 502"
      }
    ]
    "#);
    }

    // Exactly the SPEC §1 keys, in that order, and `at` parses as RFC 3339.
    const KEYS: [&str; 11] = [
        "at",
        "rule",
        "kind",
        "action",
        "run_id",
        "project_id",
        "branch",
        "outcome",
        "reason",
        "attempts",
        "error",
    ];
    for entry in &audit {
        let text = serde_json::to_string(entry).unwrap();
        let positions: Vec<usize> = KEYS
            .iter()
            .map(|k| {
                text.find(&format!("\"{k}\":"))
                    .unwrap_or_else(|| panic!("{k} in {text}"))
            })
            .collect();
        assert!(positions.is_sorted(), "{text}");
    }
    let json = serde_json::to_value(&audit).unwrap();
    for entry in json.as_array().unwrap() {
        let mut keys: Vec<_> = entry.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        let mut expected = KEYS.to_vec();
        expected.sort();
        assert_eq!(keys, expected);
        DateTime::parse_from_rfc3339(entry["at"].as_str().unwrap()).unwrap();
    }
    // And it reads back.
    let back: Vec<runwarden::store::AuditEntry> = serde_json::from_value(json).unwrap();
    assert_eq!(back, audit);
}

// ---------------------------------------------------------------------------------------
// The executor's queue

async fn a_claimed_action_is_not_reclaimed_before_its_lease_expires(db: Db) {
    let ts = TempStore::new(db).await;
    let s = &ts.store;
    s.record_decisions(&[decision("r", "supersede", "cancel", "run-1", t(0))])
        .await
        .unwrap();
    let lease = Duration::from_secs(60);

    let first = s.claim_due_actions(t(1), 10, lease, "w1").await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].state, ActionState::Running);
    assert_eq!(first[0].worker_id.as_deref(), Some("w1"));
    assert_eq!(first[0].lease_until, Some(t(61)));
    assert_eq!(first[0].claims, 1);

    // Another worker (another process on the same file) sees nothing until the lease ends.
    let other = ts.reopen().await;
    assert!(
        other
            .claim_due_actions(t(2), 10, lease, "w2")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        other
            .claim_due_actions(t(60), 10, lease, "w2")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(other.queue_depth().await.unwrap(), 1);

    // w1 died: at expiry w2 takes it over.
    let second = other
        .claim_due_actions(t(61), 10, lease, "w2")
        .await
        .unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].id, first[0].id);
    assert_eq!(second[0].worker_id.as_deref(), Some("w2"));
    assert_eq!(second[0].claims, 2);
    assert_eq!(second[0].attempts, 0);

    // w2 finishes; w1's late report changes nothing.
    assert!(
        other
            .complete_action(second[0].id, ActionOutcome::Done, "cancelled")
            .await
            .unwrap()
    );
    assert!(!s.fail_attempt(first[0].id, "late", t(70)).await.unwrap());
    assert!(!s.fail_action(first[0].id, "late").await.unwrap());
    let row = s.get_action(first[0].id).await.unwrap().unwrap();
    assert_eq!(row.state, ActionState::Done);
    assert_eq!(row.detail.as_deref(), Some("cancelled"));
    assert!(
        s.claim_due_actions(t(1000), 10, lease, "w3")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        s.complete_action(row.id + 1, ActionOutcome::Done, "x")
            .await,
        Err(StoreError::NotFound { .. })
    ));
}

async fn not_before_holds_an_action_back(db: Db) {
    let ts = TempStore::new(db).await;
    let s = &ts.store;
    let mut d = decision("orphans", "orphan", "cancel", "run-1", t(0));
    d.not_before = Some(t(120));
    s.record_decisions(&[d]).await.unwrap();
    let lease = Duration::from_secs(30);
    assert!(
        s.claim_due_actions(t(119), 10, lease, "w")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.claim_due_actions(t(120), 10, lease, "w")
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn claims_respect_the_limit_and_due_order_and_released_leases_are_claimable(db: Db) {
    let ts = TempStore::new(db).await;
    let s = &ts.store;
    let decisions: Vec<_> = (0..5)
        .map(|i| decision("r", "timeout", "cancel", &format!("run-{i}"), t(10 - i)))
        .collect();
    s.record_decisions(&decisions).await.unwrap();
    let lease = Duration::from_secs(60);
    let batch = s.claim_due_actions(t(100), 2, lease, "w1").await.unwrap();
    let runs: Vec<_> = batch.iter().map(|a| a.run_id.as_str()).collect();
    assert_eq!(runs, ["run-4", "run-3"], "oldest due first");
    assert_eq!(s.release_leases("w1").await.unwrap(), 2);
    assert_eq!(s.release_leases("w1").await.unwrap(), 0);
    let all = s.claim_due_actions(t(100), 10, lease, "w2").await.unwrap();
    assert_eq!(all.len(), 5);
    assert!(all.iter().all(|a| a.worker_id.as_deref() == Some("w2")));

    // At startup of a single-process store, every lease left over is a dead worker's.
    assert!(
        s.claim_due_actions(t(101), 10, lease, "w3")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(s.release_all_leases().await.unwrap(), 5);
    assert_eq!(
        s.claim_due_actions(t(101), 10, lease, "w3")
            .await
            .unwrap()
            .len(),
        5
    );
}

async fn concurrent_workers_never_claim_the_same_action(db: Db) {
    let ts = TempStore::new(db).await;
    let decisions: Vec<_> = (0..40)
        .map(|i| decision("r", "timeout", "cancel", &format!("run-{i}"), t(0)))
        .collect();
    ts.store.record_decisions(&decisions).await.unwrap();
    let mut tasks = Vec::new();
    for w in 0..4 {
        let store = ts.reopen().await;
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            // 40 actions in batches of 3: a worker needs at most 14 rounds.
            for _ in 0..20 {
                let batch = store
                    .claim_due_actions(t(1), 3, Duration::from_secs(600), &format!("w{w}"))
                    .await
                    .unwrap();
                if batch.is_empty() {
                    return mine;
                }
                mine.extend(batch.into_iter().map(|a| a.id));
            }
            panic!("worker w{w} kept finding work: actions were claimed more than once");
        }));
    }
    let mut seen = HashSet::new();
    let mut total = 0;
    for task in tasks {
        for id in task.await.unwrap() {
            total += 1;
            assert!(seen.insert(id), "action {id} claimed twice");
        }
    }
    assert_eq!(total, 40);
}

/// `[store] keep_events`: events processed before the cutoff and runs last seen finished
/// (or gone) before it are deleted, more than one statement's worth of them; events still
/// to process and runs in progress stay.
async fn old_processed_events_and_finished_runs_are_pruned_in_chunks(db: Db) {
    use runwarden::store::PRUNE_CHUNK;
    let ts = TempStore::new(db).await;
    let s = &ts.store;
    let n = PRUNE_CHUNK as usize + 5;
    let mut ids = Vec::new();
    for i in 0..=n {
        let d = delivery("currents", &format!("d{i}"), "{}", t(i as i64));
        assert_eq!(s.insert_delivery(d).await.unwrap(), InsertOutcome::Inserted);
    }
    for d in s
        .next_unprocessed(t(1_000_000), n as i64 + 1)
        .await
        .unwrap()
    {
        if d.delivery_id != "d0" {
            ids.push(d.id);
        }
    }
    s.mark_processed_many(&ids, "ok").await.unwrap();
    // Processed just now: a cutoff an hour ago keeps them.
    assert_eq!(
        s.prune_deliveries(Utc::now() - chrono::Duration::hours(1))
            .await
            .unwrap(),
        0
    );
    let later = Utc::now() + chrono::Duration::hours(1);
    assert_eq!(s.prune_deliveries(later).await.unwrap(), n as u64);
    assert!(s.find_delivery("currents", "d0").await.unwrap().is_some());
    assert!(s.find_delivery("currents", "d1").await.unwrap().is_none());

    s.upsert_run(&run_record("old-done", "COMPLETE", "PASSED", 0, 10))
        .await
        .unwrap();
    s.upsert_run(&run_record("old-running", "IN_PROGRESS", "RUNNING", 0, 10))
        .await
        .unwrap();
    s.upsert_run(&run_record("new-done", "COMPLETE", "FAILED", 0, 100))
        .await
        .unwrap();
    s.upsert_run(&run_record("new-running", "IN_PROGRESS", "RUNNING", 0, 100))
        .await
        .unwrap();
    // A run last observed in progress long ago is one whose end was never heard of (a
    // run still going is observed again by every poll): it goes too.
    assert_eq!(s.prune_runs(t(50)).await.unwrap(), 2);
    for id in ["old-done", "old-running"] {
        assert!(s.get_run(id).await.unwrap().is_none(), "{id}");
    }
    for id in ["new-running", "new-done"] {
        assert!(s.get_run(id).await.unwrap().is_some(), "{id}");
    }
}

/// `[store] keep_audit`: decisions older than the cutoff go with their action once it
/// finished before the cutoff too; an action still to do (pending or running) keeps its
/// decisions whatever their age, and so does one that finished after the cutoff or that
/// a newer decision still shows.
async fn the_audit_forgets_what_finished_long_ago_and_keeps_what_is_still_to_do(db: Db) {
    use runwarden::store::PRUNE_CHUNK;
    let ts = TempStore::new(db).await;
    let s = &ts.store;
    let lease = Duration::from_secs(60);
    let d = |run: &str| decision("r", "supersede", "cancel", run, t(0));
    s.record_decisions(&[d("done"), d("failed"), d("running"), d("pending")])
        .await
        .unwrap();
    // A second rule decided "shown" long ago too, and a third decides it again after
    // the cutoff: the action stays while that newer decision shows it.
    s.record_decisions(&[decision("r", "supersede", "cancel", "shown", t(0))])
        .await
        .unwrap();
    let claimed = s.claim_due_actions(t(1), 10, lease, "w").await.unwrap();
    assert_eq!(claimed.len(), 5);
    let id = |run: &str| claimed.iter().find(|a| a.run_id == run).unwrap().id;
    for run in ["done", "shown"] {
        assert!(
            s.complete_action(id(run), ActionOutcome::Done, "cancelled")
                .await
                .unwrap()
        );
    }
    assert!(s.fail_action(id("failed"), "HTTP 500").await.unwrap());
    assert!(
        s.fail_attempt(id("pending"), "HTTP 503", t(2))
            .await
            .unwrap()
    );
    // Dry-run decisions have no action; more of them than one statement deletes.
    let dry: Vec<_> = (0..PRUNE_CHUNK + 5)
        .map(|i| {
            let mut x = decision("dry", "retention", "delete", &format!("dry-{i}"), t(0));
            x.dry_run = true;
            x
        })
        .collect();
    s.record_decisions(&dry).await.unwrap();
    let newer = Utc::now() + chrono::Duration::hours(2);
    s.record_decisions(&[decision("late", "timeout", "cancel", "shown", newer)])
        .await
        .unwrap();
    let total = (PRUNE_CHUNK + 5 + 6) as usize;
    assert_eq!(s.audit(None, None, 5000).await.unwrap().len(), total);

    // A cutoff before the actions finished (they finished just now): only the dry runs.
    let (decisions, actions) = s
        .prune_audit(Utc::now() - chrono::Duration::hours(1))
        .await
        .unwrap();
    assert_eq!((decisions, actions), ((PRUNE_CHUNK + 5) as u64, 0));

    let (decisions, actions) = s
        .prune_audit(Utc::now() + chrono::Duration::hours(1))
        .await
        .unwrap();
    // "done" and "failed" with their actions; "shown"'s old decision, not its action.
    assert_eq!((decisions, actions), (3, 2));
    let mut kept: Vec<_> = s
        .audit(None, None, 5000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| format!("{}:{}", e.rule, e.run_id))
        .collect();
    kept.sort();
    assert_eq!(kept, ["late:shown", "r:pending", "r:running"]);
    for run in ["done", "failed"] {
        assert!(s.get_action(id(run)).await.unwrap().is_none(), "{run}");
    }
    for run in ["shown", "running", "pending"] {
        assert!(s.get_action(id(run)).await.unwrap().is_some(), "{run}");
    }
    // Nothing more to forget.
    assert_eq!(
        s.prune_audit(Utc::now() + chrono::Duration::hours(1))
            .await
            .unwrap(),
        (0, 0)
    );
}

async fn a_failed_attempt_is_retried_after_its_backoff_then_completes(db: Db) {
    let ts = TempStore::new(db).await;
    let s = &ts.store;
    s.record_decisions(&[decision("r", "supersede", "cancel", "run-1", t(0))])
        .await
        .unwrap();
    let lease = Duration::from_secs(60);
    let a = s
        .claim_due_actions(t(1), 10, lease, "w")
        .await
        .unwrap()
        .remove(0);
    assert!(s.fail_attempt(a.id, "HTTP 503", t(30)).await.unwrap());

    let row = s.get_action(a.id).await.unwrap().unwrap();
    assert_eq!(row.state, ActionState::Pending);
    assert_eq!(row.attempts, 1);
    assert_eq!(row.last_error.as_deref(), Some("HTTP 503"));
    assert_eq!(row.lease_until, None);
    let planned = &s.audit(None, None, 1).await.unwrap()[0];
    assert_eq!(planned.outcome, Outcome::Planned);
    assert_eq!(planned.error.as_deref(), Some("HTTP 503"));

    assert!(
        s.claim_due_actions(t(29), 10, lease, "w")
            .await
            .unwrap()
            .is_empty()
    );
    let again = s.claim_due_actions(t(30), 10, lease, "w").await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 1);
    assert!(
        s.complete_action(a.id, ActionOutcome::Skipped, "already finished (409)")
            .await
            .unwrap()
    );
    let row = s.get_action(a.id).await.unwrap().unwrap();
    assert_eq!(row.state, ActionState::Skipped);
    assert_eq!(row.attempts, 2);
    assert!(row.finished_at.is_some());
    let entry = &s.audit(None, None, 1).await.unwrap()[0];
    assert_eq!(entry.outcome, Outcome::Skipped);
    assert_eq!(entry.attempts, 2);
    // A skipped action says why (only the log did before), not the earlier 503.
    assert_eq!(entry.error.as_deref(), Some("already finished (409)"));
    assert_eq!(s.queue_depth().await.unwrap(), 0);
}

async fn a_postponed_action_waits_without_counting_an_attempt(db: Db) {
    let ts = TempStore::new(db).await;
    let s = &ts.store;
    s.record_decisions(&[decision("r", "summary", "summarize", "run-1", t(0))])
        .await
        .unwrap();
    let lease = Duration::from_secs(60);
    let a = s
        .claim_due_actions(t(1), 10, lease, "w")
        .await
        .unwrap()
        .remove(0);
    assert!(
        s.postpone_action(a.id, "not sent: rate limited", t(40))
            .await
            .unwrap()
    );
    let row = s.get_action(a.id).await.unwrap().unwrap();
    assert_eq!(row.state, ActionState::Pending);
    assert_eq!(row.attempts, 0, "a postponement is not an attempt");
    assert_eq!(row.last_error.as_deref(), Some("not sent: rate limited"));
    assert_eq!(row.lease_until, None);
    assert!(
        s.claim_due_actions(t(39), 10, lease, "w")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.claim_due_actions(t(40), 10, lease, "w")
            .await
            .unwrap()
            .len(),
        1
    );
    // A terminal action is not postponed.
    assert!(
        s.complete_action(a.id, ActionOutcome::Done, "posted")
            .await
            .unwrap()
    );
    assert!(!s.postpone_action(a.id, "late", t(50)).await.unwrap());
    assert_eq!(s.get_action(a.id).await.unwrap().unwrap().attempts, 1);
}

async fn a_failed_action_is_final_until_an_operator_retries_it(db: Db) {
    let ts = TempStore::new(db).await;
    let s = &ts.store;
    s.record_decisions(&[
        decision("r", "retention", "delete", "run-1", t(0)),
        decision("r", "retention", "delete", "run-2", t(0)),
    ])
    .await
    .unwrap();
    let lease = Duration::from_secs(60);
    let batch = s.claim_due_actions(t(1), 10, lease, "w").await.unwrap();
    assert!(s.fail_action(batch[0].id, "HTTP 403").await.unwrap());
    assert!(
        !s.complete_action(batch[0].id, ActionOutcome::Done, "x")
            .await
            .unwrap()
    );
    assert!(!s.fail_attempt(batch[0].id, "x", t(2)).await.unwrap());

    let failed = s.failed_actions(10).await.unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].last_error.as_deref(), Some("HTTP 403"));
    let counts = s.action_counts().await.unwrap();
    assert_eq!(
        counts,
        [
            ("pending".to_string(), 0),
            ("running".to_string(), 1),
            ("done".to_string(), 0),
            ("skipped".to_string(), 0),
            ("failed".to_string(), 1)
        ]
    );
    assert_eq!(s.queue_depth().await.unwrap(), 1);
    assert_eq!(s.pending_actions().await.unwrap().len(), 1);
    // Within the other action's lease nothing is due: the failed one is not retried.
    assert!(
        s.claim_due_actions(t(30), 10, lease, "w")
            .await
            .unwrap()
            .is_empty()
    );

    assert!(
        !s.retry_action(batch[1].id, t(5)).await.unwrap(),
        "not failed"
    );
    assert!(s.retry_action(batch[0].id, t(5)).await.unwrap());
    let again = s.claim_due_actions(t(5), 10, lease, "w").await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id, batch[0].id);
    assert_eq!(again[0].attempts, 0);

    let counts = s.decision_counts().await.unwrap();
    assert_eq!(counts.len(), 1);
    assert_eq!(counts[0].outcome, Outcome::Planned);
    assert_eq!(counts[0].count, 2);
}

// ---- whose cancel it was, and claims of what a worker can carry out -------------------

both!(
    cancel_reason_credits_a_rule_only_when_its_own_cancel_took_effect,
    a_claim_filter_leaves_the_summaries_it_does_not_allow_untouched,
);

/// SPEC §4 summary: the section names the rule "when runwarden cancelled the run". A
/// cancel answered "already cancelled" (404/409/422: a user or CI first) or refused for a
/// run that was over counts as done (SPEC §6), but runwarden did not cancel the run: only
/// a cancel the API carried out at runwarden's request credits its rule. While a cancel
/// is in flight nothing is known yet (`cancel_under_way`).
async fn cancel_reason_credits_a_rule_only_when_its_own_cancel_took_effect(db: Db) {
    let ts = TempStore::new(db).await;
    let s = &ts.store;
    let lease = Duration::from_secs(60);
    let runs = ["ours", "theirs", "verifying", "in-flight", "refused"];
    for run in runs {
        s.record_decisions(&[decision("stuck", "timeout", "cancel", run, t(0))])
            .await
            .unwrap();
    }
    let claimed = s.claim_due_actions(t(1), 10, lease, "w1").await.unwrap();
    assert_eq!(claimed.len(), runs.len());
    let id = |run: &str| claimed.iter().find(|a| a.run_id == run).unwrap().id;
    for run in runs {
        assert_eq!(s.cancel_reason(run).await.unwrap(), None, "{run}");
        assert!(s.cancel_under_way(run, t(2)).await.unwrap(), "{run}");
    }
    // The API cancelled the run at runwarden's request.
    s.complete_action(
        id("ours"),
        ActionOutcome::Done,
        "cancelled; run is CANCELED",
    )
    .await
    .unwrap();
    // Someone else had cancelled it first.
    s.complete_action(
        id("theirs"),
        ActionOutcome::Done,
        "already done (422: Run already cancelled); run is CANCELED",
    )
    .await
    .unwrap();
    // Refused, the run being over.
    s.complete_action(
        id("refused"),
        ActionOutcome::Done,
        "cancel refused (HTTP 400: no); nothing to cancel: run is COMPLETE",
    )
    .await
    .unwrap();
    // Cancelled, but still in progress when read again: retried.
    s.fail_attempt(
        id("verifying"),
        "cancelled, but the run is still in progress",
        t(5),
    )
    .await
    .unwrap();

    let ours = s.cancel_reason("ours").await.unwrap().expect("credited");
    assert_eq!(ours.rule, "stuck");
    assert_eq!(ours.reason, "stuck says cancel ours");
    assert_eq!(s.cancel_reason("theirs").await.unwrap(), None);
    assert_eq!(s.cancel_reason("refused").await.unwrap(), None);
    assert!(s.cancel_reason("verifying").await.unwrap().is_some());
    for run in ["ours", "theirs", "refused", "verifying"] {
        assert!(!s.cancel_under_way(run, t(2)).await.unwrap(), "{run}");
    }
    // Its retry is answered "already cancelled" — by its own first request: still
    // credited.
    let again = s.claim_due_actions(t(5), 10, lease, "w1").await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].run_id, "verifying");
    assert!(s.cancel_reason("verifying").await.unwrap().is_some());
    s.complete_action(
        again[0].id,
        ActionOutcome::Done,
        "already done (422: Run already cancelled); run is CANCELED",
    )
    .await
    .unwrap();
    assert!(s.cancel_reason("verifying").await.unwrap().is_some());
    // The worker of the cancel in flight died: once its lease ran out it is no longer
    // under way (and credits nobody).
    assert!(!s.cancel_under_way("in-flight", t(61)).await.unwrap());
    assert_eq!(s.cancel_reason("in-flight").await.unwrap(), None);
}

/// A worker claims only the actions its [`ClaimFilter`] allows (`runwarden sweep`
/// without GitHub credentials claims no summary): the others stay pending, their claims
/// and attempts untouched, for another worker.
async fn a_claim_filter_leaves_the_summaries_it_does_not_allow_untouched(db: Db) {
    use runwarden::store::actions::{ClaimFilter, RuleSet};
    let ts = TempStore::new(db).await;
    let s = &ts.store;
    let lease = Duration::from_secs(60);
    let summary = |rule: &str, run: &str| NewDecision {
        action_key: format!("summarize:{rule}:{run}:RUN_FINISH"),
        ..decision(rule, "summary", "summarize", run, t(0))
    };
    s.record_decisions(&[
        decision("stuck", "timeout", "cancel", "run-1", t(0)),
        summary("pr-summary", "run-2"),
        summary("old-summary", "run-3"),
    ])
    .await
    .unwrap();
    let only = |rules: &[&str]| ClaimFilter {
        summaries: RuleSet::Only(rules.iter().map(|r| r.to_string()).collect()),
    };
    let all_but = |rules: &[&str]| ClaimFilter {
        summaries: RuleSet::AllBut(rules.iter().map(|r| r.to_string()).collect()),
    };
    assert!(only(&[]).allows("cancel", "stuck") && only(&[]).allows("delete", "x"));
    assert!(!only(&[]).allows("summarize", "pr-summary"));
    assert!(all_but(&["a"]).allows("summarize", "b") && !all_but(&["a"]).allows("summarize", "a"));
    assert!(ClaimFilter::default().allows("summarize", "anything"));

    let claimed = s
        .claim_due_actions_where(t(1), 10, lease, "w1", &only(&[]))
        .await
        .unwrap();
    assert_eq!(
        claimed
            .iter()
            .map(|a| a.action.as_str())
            .collect::<Vec<_>>(),
        ["cancel"]
    );
    let claimed = s
        .claim_due_actions_where(t(1), 10, lease, "w1", &only(&["pr-summary", "other"]))
        .await
        .unwrap();
    assert_eq!(
        claimed.iter().map(|a| a.rule.as_str()).collect::<Vec<_>>(),
        ["pr-summary"]
    );
    let left = s
        .action_by_key("summarize:old-summary:run-3:RUN_FINISH")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(left.state, ActionState::Pending);
    assert_eq!((left.claims, left.attempts), (0, 0));
    assert_eq!(left.worker_id, None);
    assert!(
        s.claim_due_actions_where(t(1), 10, lease, "w1", &all_but(&["old-summary"]))
            .await
            .unwrap()
            .is_empty()
    );
    let claimed = s
        .claim_due_actions_where(t(1), 10, lease, "w2", &all_but(&["pr-summary"]))
        .await
        .unwrap();
    assert_eq!(
        claimed.iter().map(|a| a.rule.as_str()).collect::<Vec<_>>(),
        ["old-summary"]
    );
}

async fn pending_and_failed_actions_are_listed_newest_first_behind_any_number_of_decisions(db: Db) {
    // The status page lists them from here (SPEC §6: a failed action stays visible),
    // however many decisions came after them.
    let ts = TempStore::new(db).await;
    let s = &ts.store;
    let mut dry = decision("r", "retention", "delete", "run-dry", t(0));
    dry.dry_run = true;
    s.record_decisions(&[
        decision("r", "retention", "delete", "run-f1", t(1)),
        // A second rule decides the same delete: still one action, listed once.
        decision("q", "retention", "delete", "run-f1", t(1)),
        decision("r", "retention", "delete", "run-f2", t(2)),
        decision("r", "retention", "delete", "run-p1", t(3)),
        decision("r", "retention", "delete", "run-p2", t(4)),
        dry,
    ])
    .await
    .unwrap();
    let lease = Duration::from_secs(1000);
    let batch = s.claim_due_actions(t(5), 10, lease, "w").await.unwrap();
    let id = |run: &str| batch.iter().find(|a| a.run_id == run).unwrap().id;
    assert!(s.fail_action(id("run-f1"), "HTTP 403").await.unwrap());
    assert!(s.fail_action(id("run-f2"), "HTTP 403").await.unwrap());
    assert!(
        s.fail_attempt(id("run-p1"), "HTTP 503", t(1000))
            .await
            .unwrap()
    );
    // run-p2 stays running (leased until after the newer ones are done).
    let newer: Vec<_> = (0..60)
        .map(|i| decision("r", "retention", "delete", &format!("run-n{i}"), t(10 + i)))
        .collect();
    s.record_decisions(&newer).await.unwrap();
    for a in s.claim_due_actions(t(100), 100, lease, "w").await.unwrap() {
        s.complete_action(a.id, ActionOutcome::Done, "deleted")
            .await
            .unwrap();
    }
    let runs =
        |v: Vec<runwarden::store::AuditEntry>| v.into_iter().map(|e| e.run_id).collect::<Vec<_>>();
    assert!(
        !runs(s.audit(None, None, 50).await.unwrap())
            .iter()
            .any(|r| r.starts_with("run-f") || r.starts_with("run-p")),
        "older than the 50 newest decisions"
    );
    let failed = s.failed_actions_audit(10).await.unwrap();
    assert!(
        failed
            .iter()
            .all(|e| e.outcome == Outcome::Failed && e.error.as_deref() == Some("HTTP 403"))
    );
    assert_eq!(
        failed[1].rule, "r, q",
        "both rules, in the order they decided"
    );
    assert_eq!(failed[0].rule, "r");
    assert_eq!(runs(failed), ["run-f2", "run-f1"]);
    assert_eq!(runs(s.failed_actions_audit(1).await.unwrap()), ["run-f2"]);
    let pending = s.pending_actions_audit(10).await.unwrap();
    assert!(pending.iter().all(|e| e.outcome == Outcome::Planned));
    assert_eq!(pending[1].error.as_deref(), Some("HTTP 503"));
    assert_eq!(runs(pending), ["run-p2", "run-p1"], "not the dry run");
    assert_eq!(runs(s.pending_actions_audit(1).await.unwrap()), ["run-p2"]);
}

// ---------------------------------------------------------------------------------------
// Runs

async fn runs_are_upserted_and_stale_observations_ignored(db: Db) {
    let ts = TempStore::new(db).await;
    let s = &ts.store;
    let mut r = run_record("run-1", "in_progress", "running", 0, 10);
    r.completed_specs = 2;
    assert!(s.upsert_run(&r).await.unwrap());
    let got = s.get_run("run-1").await.unwrap().unwrap();
    assert_eq!(got.completion_state, "IN_PROGRESS", "stored upper case");
    assert_eq!(got.status, "RUNNING");
    assert_eq!(got.progress_changed_at, t(10));

    // Same progress later: progress_changed_at stays.
    let mut same = r.clone();
    same.updated_at = t(70);
    same.progress_changed_at = t(70);
    assert!(s.upsert_run(&same).await.unwrap());
    let got = s.get_run("run-1").await.unwrap().unwrap();
    assert_eq!(got.progress_changed_at, t(10));
    assert_eq!(got.updated_at, t(70));

    // More specs: it moves.
    let mut more = same.clone();
    more.completed_specs = 3;
    more.updated_at = t(80);
    more.progress_changed_at = t(80);
    assert!(s.upsert_run(&more).await.unwrap());
    assert_eq!(
        s.get_run("run-1")
            .await
            .unwrap()
            .unwrap()
            .progress_changed_at,
        t(80)
    );

    // An older observation (a poll page read before the webhook) is ignored.
    let mut stale = run_record("run-1", "IN_PROGRESS", "RUNNING", 0, 75);
    stale.completed_specs = 1;
    assert!(!s.upsert_run(&stale).await.unwrap());
    assert_eq!(
        s.get_run("run-1").await.unwrap().unwrap().completed_specs,
        3
    );

    assert_eq!(s.in_progress_runs(None, None).await.unwrap().len(), 1);
    let done = run_record("run-1", "COMPLETE", "PASSED", 0, 90);
    assert!(s.upsert_run(&done).await.unwrap());
    assert!(s.in_progress_runs(None, None).await.unwrap().is_empty());
}

async fn in_progress_runs_filter_by_project_and_branch_and_skip_gone_runs(db: Db) {
    let ts = TempStore::new(db).await;
    let s = &ts.store;
    let mut other_branch = run_record("b", "IN_PROGRESS", "RUNNING", 2, 2);
    other_branch.branch = Some("feat".into());
    let mut other_project = run_record("c", "IN_PROGRESS", "RUNNING", 3, 3);
    other_project.project_id = "zzz".into();
    for r in [
        run_record("a", "IN_PROGRESS", "RUNNING", 1, 1),
        other_branch,
        other_project,
        run_record("d", "COMPLETE", "FAILED", 4, 4),
        run_record("e", "IN_PROGRESS", "RUNNING", 5, 5),
    ] {
        s.upsert_run(&r).await.unwrap();
    }
    let ids = |v: Vec<RunRecord>| v.into_iter().map(|r| r.run_id).collect::<Vec<_>>();
    assert_eq!(
        ids(s.in_progress_runs(None, None).await.unwrap()),
        ["a", "b", "c", "e"]
    );
    assert_eq!(
        ids(s.in_progress_runs(Some("bAYZ4a"), None).await.unwrap()),
        ["a", "b", "e"]
    );
    assert_eq!(
        ids(s
            .in_progress_runs(Some("bAYZ4a"), Some("main"))
            .await
            .unwrap()),
        ["a", "e"]
    );
    assert_eq!(
        ids(s.in_progress_runs(None, Some("feat")).await.unwrap()),
        ["b"]
    );

    assert!(s.mark_run_gone("e").await.unwrap());
    assert!(!s.mark_run_gone("nope").await.unwrap());
    assert_eq!(
        ids(s
            .in_progress_runs(Some("bAYZ4a"), Some("main"))
            .await
            .unwrap()),
        ["a"]
    );
    assert_eq!(s.get_run("e").await.unwrap(), None);
    // A gone run is not resurrected by a stale read.
    assert!(
        !s.upsert_run(&run_record("e", "IN_PROGRESS", "RUNNING", 5, 99))
            .await
            .unwrap()
    );
    assert!(s.delete_run("a").await.unwrap());
    assert_eq!(s.get_run("a").await.unwrap(), None);
}

async fn passed_durations_are_the_newest_completed_passed_runs_of_the_branch(db: Db) {
    let ts = TempStore::new(db).await;
    let s = &ts.store;
    for i in 0..60 {
        let mut r = run_record(&format!("p{i:02}"), "COMPLETE", "PASSED", i, i);
        r.duration_ms = Some(1000 + i);
        s.upsert_run(&r).await.unwrap();
    }
    let mut failed = run_record("f", "COMPLETE", "FAILED", 100, 100);
    failed.duration_ms = Some(5);
    let mut canceled = run_record("x", "CANCELED", "FAILED", 101, 101);
    canceled.duration_ms = Some(6);
    let mut other = run_record("o", "COMPLETE", "PASSED", 102, 102);
    other.branch = Some("feat".into());
    other.duration_ms = Some(7);
    let mut no_branch = run_record("n", "COMPLETE", "PASSED", 103, 103);
    no_branch.branch = None;
    no_branch.duration_ms = Some(8);
    for r in [failed, canceled, other, no_branch] {
        s.upsert_run(&r).await.unwrap();
    }
    let d = s
        .passed_durations("bAYZ4a", Some("main"), 50)
        .await
        .unwrap();
    assert_eq!(d.len(), 50);
    assert_eq!(d[0], 1059, "newest first");
    assert_eq!(d[49], 1010);
    assert_eq!(
        s.passed_durations("bAYZ4a", Some("feat"), 50)
            .await
            .unwrap(),
        [7]
    );
    assert_eq!(s.passed_durations("bAYZ4a", None, 50).await.unwrap(), [8]);
    assert!(
        s.passed_durations("zzz", Some("main"), 50)
            .await
            .unwrap()
            .is_empty()
    );
    // Deleted in Currents: still history.
    s.mark_run_gone("p59").await.unwrap();
    assert_eq!(
        s.passed_durations("bAYZ4a", Some("main"), 1).await.unwrap(),
        [1059]
    );
}

// ---------------------------------------------------------------------------------------
// Comments, slots, leases

async fn a_section_for_an_old_head_never_overwrites_the_new_one(db: Db) {
    let ts = TempStore::new(db).await;
    let s = &ts.store;
    let section = |sha: &str, head: &str, created: i64, body: &str| SectionUpdate {
        repo: "acme/web".into(),
        pr: 12,
        section_key: "bAYZ4a/default".into(),
        sha: sha.into(),
        head_sha: Some(head.into()),
        run_id: format!("run-{sha}"),
        run_created_at: t(created),
        body: body.into(),
        updated_at: t(created + 1),
    };
    assert!(
        s.upsert_section_if_newer(&section("old", "old", 10, "old running"))
            .await
            .unwrap()
    );
    assert!(
        s.upsert_section_if_newer(&section("new", "new", 20, "new running"))
            .await
            .unwrap()
    );
    // The old commit's run finishes late (or is re-run): the head's section stays.
    assert!(
        !s.upsert_section_if_newer(&section("old", "new", 30, "old passed"))
            .await
            .unwrap()
    );
    assert!(
        s.upsert_section_if_newer(&section("new", "new", 20, "new passed"))
            .await
            .unwrap()
    );
    let sections = s.sections("Acme/Web", 12).await.unwrap();
    assert_eq!(sections.len(), 1);
    assert_eq!(sections[0].body, "new passed");
    assert_eq!(sections[0].sha, "new");
}

/// `[store] keep_events` forgets old schedule slots, but never a rule's latest: the
/// catch-up after a restart starts from it.
async fn old_slots_are_pruned_but_each_rules_latest(db: Db) {
    let ts = TempStore::new(db).await;
    let s = &ts.store;
    for h in 1..=3 {
        assert!(
            s.claim_slot("hourly", t(3600 * h), t(3600 * h))
                .await
                .unwrap()
        );
    }
    assert!(s.claim_slot("yearly", t(60), t(60)).await.unwrap());
    assert_eq!(s.prune_slots(t(100_000)).await.unwrap(), 2);
    assert_eq!(s.last_slot("hourly").await.unwrap(), Some(t(3 * 3600)));
    assert_eq!(s.last_slot("yearly").await.unwrap(), Some(t(60)));
    assert!(s.get_slot("hourly", t(3600)).await.unwrap().is_none());
    assert!(s.get_slot("hourly", t(3 * 3600)).await.unwrap().is_some());
    // A slot newer than the cutoff stays.
    assert!(
        s.claim_slot("hourly", t(4 * 3600), t(4 * 3600))
            .await
            .unwrap()
    );
    assert_eq!(s.prune_slots(t(4 * 3600)).await.unwrap(), 1);
    assert_eq!(s.last_slot("hourly").await.unwrap(), Some(t(4 * 3600)));
}

async fn a_slot_is_claimed_once(db: Db) {
    let ts = TempStore::new(db).await;
    let s = &ts.store;
    assert_eq!(s.last_slot("nightly").await.unwrap(), None);
    let other = ts.reopen().await;
    let (a, b) = tokio::join!(
        s.claim_slot("nightly", t(3600), t(3601)),
        other.claim_slot("nightly", t(3600), t(3602))
    );
    assert!(a.unwrap() ^ b.unwrap(), "exactly one claimer wins");
    assert!(!s.claim_slot("nightly", t(3600), t(4000)).await.unwrap());
    assert!(s.claim_slot("weekly", t(3600), t(3601)).await.unwrap());
    assert!(s.claim_slot("nightly", t(7200), t(7201)).await.unwrap());
    assert_eq!(s.last_slot("nightly").await.unwrap(), Some(t(7200)));

    s.finish_slot("nightly", t(3600), "deleted 3 runs")
        .await
        .unwrap();
    let slot = s.get_slot("nightly", t(3600)).await.unwrap().unwrap();
    assert_eq!(slot.summary.as_deref(), Some("deleted 3 runs"));
    assert!(slot.finished_at.is_some());
    assert!(
        s.get_slot("nightly", t(7200))
            .await
            .unwrap()
            .unwrap()
            .finished_at
            .is_none()
    );
    // A sweep that ends before its slot is claimed claims it.
    s.finish_slot("nightly", t(1), "x").await.unwrap();
    let early = s.get_slot("nightly", t(1)).await.unwrap().unwrap();
    assert_eq!(early.summary.as_deref(), Some("x"));
    assert_eq!(s.last_slot("nightly").await.unwrap(), Some(t(7200)));
    let latest = s.latest_slot_record("nightly").await.unwrap().unwrap();
    assert_eq!((latest.slot_at, latest.summary), (t(7200), None));
    assert!(!s.claim_slot("nightly", t(1), t(2)).await.unwrap());
}

/// `acquire_lease_waiting`: a lock across processes. A second holder waits while the
/// first holds it, gets it once released, and gives up after its wait.
async fn a_waiting_acquire_gets_the_lease_once_its_holder_lets_go(db: Db) {
    let ts = TempStore::new(db).await;
    let s = &ts.store;
    let other = ts.reopen().await;
    let ttl = Duration::from_secs(60);
    let poll = Duration::from_millis(10);
    assert!(
        s.acquire_lease_waiting("pr:acme/web#7", "a", ttl, Duration::ZERO, poll)
            .await
            .unwrap()
    );
    // Held by "a": "b" gives up after its wait.
    assert!(
        !other
            .acquire_lease_waiting("pr:acme/web#7", "b", ttl, Duration::from_millis(50), poll)
            .await
            .unwrap()
    );
    // "b" waits; "a" lets go meanwhile; "b" has it.
    let waiting =
        other.acquire_lease_waiting("pr:acme/web#7", "b", ttl, Duration::from_secs(10), poll);
    let release = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(s.release_lease("pr:acme/web#7", "a").await.unwrap());
    };
    let (got, ()) = tokio::join!(waiting, release);
    assert!(got.unwrap());
    assert_eq!(
        s.lease_holder("pr:acme/web#7").await.unwrap().unwrap().0,
        "b"
    );
    // Other names are other locks.
    assert!(
        s.acquire_lease_waiting("pr:acme/web#8", "a", ttl, Duration::ZERO, poll)
            .await
            .unwrap()
    );
}

async fn a_lease_is_held_until_it_expires_then_taken_over(db: Db) {
    let ts = TempStore::new(db).await;
    let s = &ts.store;
    let ttl = Duration::from_secs(30);
    assert!(s.try_acquire_lease("poller", "a", ttl, t(0)).await.unwrap());
    assert!(
        !s.try_acquire_lease("poller", "b", ttl, t(10))
            .await
            .unwrap()
    );
    // The holder renews.
    assert!(
        s.try_acquire_lease("poller", "a", ttl, t(20))
            .await
            .unwrap()
    );
    assert!(
        !s.try_acquire_lease("poller", "b", ttl, t(40))
            .await
            .unwrap()
    );
    assert_eq!(
        s.lease_holder("poller").await.unwrap(),
        Some(("a".into(), t(50)))
    );
    // a stops renewing: b takes over at expiry.
    assert!(
        s.try_acquire_lease("poller", "b", ttl, t(50))
            .await
            .unwrap()
    );
    assert!(
        !s.try_acquire_lease("poller", "a", ttl, t(51))
            .await
            .unwrap()
    );
    // Only the holder releases.
    assert!(!s.release_lease("poller", "a").await.unwrap());
    assert!(s.release_lease("poller", "b").await.unwrap());
    assert!(
        s.try_acquire_lease("poller", "a", ttl, t(52))
            .await
            .unwrap()
    );
    // Leases are independent by name.
    assert!(s.try_acquire_lease("other", "b", ttl, t(52)).await.unwrap());
}

// ---------------------------------------------------------------------------------------
// Failures

#[tokio::test]
async fn a_read_only_database_is_unavailable_for_writes() {
    let ts = TempStore::new(Db::Sqlite).await;
    ts.store
        .insert_delivery(delivery("github", "before", "{}", t(0)))
        .await
        .unwrap();
    ts.store.close().await;

    let ro = Store::connect(&format!("{}?mode=ro", url(ts.path())))
        .await
        .unwrap();
    ro.ping().await.unwrap();
    assert_eq!(ro.count_unprocessed().await.unwrap(), 1, "reads work");
    let err = ro
        .insert_delivery(delivery("github", "after", "{}", t(1)))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(err.is_unavailable());
    let err = ro
        .record_decisions(&[decision("r", "supersede", "cancel", "run-1", t(1))])
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
}

#[tokio::test]
async fn a_database_locked_beyond_the_busy_timeout_is_unavailable() {
    let ts = TempStore::new(Db::Sqlite).await;
    let store = Store::connect_with(
        &url(ts.path()),
        StoreOptions {
            busy_timeout: Duration::from_millis(200),
            ..StoreOptions::default()
        },
    )
    .await
    .unwrap();
    // Another process holds the write lock.
    let mut locker = sqlx::SqliteConnection::connect(&url(ts.path()))
        .await
        .unwrap();
    sqlx::raw_sql("BEGIN IMMEDIATE")
        .execute(&mut locker)
        .await
        .unwrap();

    let started = Instant::now();
    let err = store
        .insert_delivery(delivery("github", "d", "{}", t(0)))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(started.elapsed() >= Duration::from_millis(150), "it waited");
    assert!(started.elapsed() < Duration::from_secs(4), "not for long");
    let err = store
        .record_decisions(&[decision("r", "supersede", "cancel", "run-1", t(1))])
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");

    sqlx::raw_sql("ROLLBACK")
        .execute(&mut locker)
        .await
        .unwrap();
    assert_eq!(
        store
            .insert_delivery(delivery("github", "d", "{}", t(0)))
            .await
            .unwrap(),
        InsertOutcome::Inserted
    );
}

#[tokio::test]
async fn postgres_a_write_lock_held_beyond_the_lock_timeout_is_unavailable() {
    let url = pg::fresh_database().await;
    let store = Store::connect_with(
        &url,
        StoreOptions {
            busy_timeout: Duration::from_millis(200),
            ..StoreOptions::default()
        },
    )
    .await
    .unwrap();
    // Another replica is inside a write transaction (it holds the store's write lock).
    let mut other = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql("BEGIN").execute(&mut other).await.unwrap();
    sqlx::query("SELECT 1 FROM pg_advisory_xact_lock($1)")
        .bind(0x726e_7772_646e_i64)
        .execute(&mut other)
        .await
        .unwrap();

    let started = Instant::now();
    let err = store
        .record_decisions(&[decision("r", "supersede", "cancel", "run-1", t(1))])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(started.elapsed() >= Duration::from_millis(150), "it waited");
    assert!(started.elapsed() < Duration::from_secs(4), "not for long");
    // Single statements do not wait for it.
    assert_eq!(
        store
            .insert_delivery(delivery("github", "d", "{}", t(0)))
            .await
            .unwrap(),
        InsertOutcome::Inserted
    );

    sqlx::raw_sql("ROLLBACK").execute(&mut other).await.unwrap();
    let recorded = store
        .record_decisions(&[decision("r", "supersede", "cancel", "run-1", t(1))])
        .await
        .unwrap();
    assert!(recorded[0].new_action);
}

#[tokio::test]
async fn a_missing_directory_is_a_clear_connect_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no/such/dir/runwarden.db");
    let err = Store::connect(&url(&path)).await.unwrap_err();
    assert!(format!("{err:#}").contains("cannot open store"), "{err:#}");
}

// ---- processors and workers sharing the store: whose outcome is written ----------------

both!(
    a_processed_mark_never_overwrites_the_first_processors_outcome,
    a_held_delivery_is_handed_out_only_once_due_or_handed_back,
    a_workers_outcome_applies_only_while_the_action_is_still_its_own,
);

/// Two processors that handled the same event (a sweep and `serve`, say): the first to
/// mark it processed keeps its outcome; a later mark, dead letter or record changes the
/// mark of neither (the record's decisions are stored all the same, deduplicated). An
/// unknown delivery is still an error.
async fn a_processed_mark_never_overwrites_the_first_processors_outcome(db: Db) {
    let ts = TempStore::new(db).await;
    let s = &ts.store;
    s.insert_delivery(delivery("currents", "ev-1", "{}", t(0)))
        .await
        .unwrap();
    let d = s.find_delivery("currents", "ev-1").await.unwrap().unwrap();
    s.mark_processed(d.id, "1 decision(s)").await.unwrap();
    let first = s.get_delivery(d.id).await.unwrap().unwrap();

    s.mark_processed(d.id, "skipped: late").await.unwrap();
    s.dead_letter_delivery(d.id, "gave up late").await.unwrap();
    let rec = s
        .record_decisions_and_mark_processed(
            &[decision("r1", "supersede", "cancel", "run-1", t(1))],
            d.id,
            "2 decision(s)",
        )
        .await
        .unwrap();
    assert!(rec[0].new_action);
    let now = s.get_delivery(d.id).await.unwrap().unwrap();
    assert_eq!(now, first, "the first outcome stays");
    assert_eq!(now.outcome.as_deref(), Some("1 decision(s)"));
    assert_eq!((now.attempts, now.last_error.as_deref()), (0, None));

    for r in [
        s.mark_processed(d.id + 100, "x").await,
        s.dead_letter_delivery(d.id + 100, "x").await,
    ] {
        assert!(matches!(r, Err(StoreError::NotFound { .. })), "{r:?}");
    }
}

/// A delivery stored held (`runwarden sweep`'s own events) is not handed out by
/// `next_unprocessed` before its time, whoever asks, but is found by its key; handed
/// back (or held again), it is due when said. One processed is neither held nor handed
/// back again.
async fn a_held_delivery_is_handed_out_only_once_due_or_handed_back(db: Db) {
    let ts = TempStore::new(db).await;
    let s = &ts.store;
    assert_eq!(
        s.insert_delivery_held(delivery("poll", "sweep-poll:1", "{}", t(0)), t(600))
            .await
            .unwrap(),
        InsertOutcome::Inserted
    );
    assert_eq!(
        s.insert_delivery_held(delivery("poll", "sweep-poll:1", "{}", t(0)), t(600))
            .await
            .unwrap(),
        InsertOutcome::Duplicate
    );
    assert!(matches!(
        s.insert_delivery_held(delivery("gitlab", "x", "{}", t(0)), t(600))
            .await,
        Err(StoreError::Invalid(_))
    ));
    assert!(s.next_unprocessed(t(599), 10).await.unwrap().is_empty());
    let d = s
        .find_delivery("poll", "sweep-poll:1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((d.received_at, d.next_attempt_at), (t(0), t(600)));
    assert_eq!(s.count_unprocessed().await.unwrap(), 1);

    // Handed back, due at its retry time.
    assert!(s.set_delivery_due(d.id, t(5)).await.unwrap());
    assert!(s.next_unprocessed(t(4), 10).await.unwrap().is_empty());
    assert_eq!(s.next_unprocessed(t(5), 10).await.unwrap()[0].id, d.id);
    // Held again.
    assert!(s.set_delivery_due(d.id, t(600)).await.unwrap());
    assert!(s.next_unprocessed(t(5), 10).await.unwrap().is_empty());
    assert_eq!(s.next_unprocessed(t(600), 10).await.unwrap()[0].id, d.id);

    s.mark_processed(d.id, "0 decision(s)").await.unwrap();
    assert!(!s.set_delivery_due(d.id, t(5)).await.unwrap());
    assert!(!s.set_delivery_due(d.id + 100, t(5)).await.unwrap());
    assert!(s.next_unprocessed(t(1000), 10).await.unwrap().is_empty());
}

/// w1's lease ran out and w2 claimed the action: w1's late outcome, whatever it is,
/// changes nothing (w2's action stays running, w2's, with w2's lease), w1's renewal says
/// the lease is lost, and w2's outcome applies. A worker's outcome never applies to a
/// pending action (handed back, or put back by another worker's failed attempt) either.
async fn a_workers_outcome_applies_only_while_the_action_is_still_its_own(db: Db) {
    let ts = TempStore::new(db).await;
    let s = &ts.store;
    s.record_decisions(&[decision("r", "supersede", "cancel", "run-1", t(0))])
        .await
        .unwrap();
    let lease = Duration::from_secs(60);
    let first = s.claim_due_actions(t(1), 10, lease, "w1").await.unwrap();
    let id = first[0].id;
    let second = s.claim_due_actions(t(61), 10, lease, "w2").await.unwrap();
    assert_eq!(second[0].id, id);
    let held_by_w2 = s.get_action(id).await.unwrap().unwrap();

    assert!(
        !s.fail_attempt_as(id, "w1", "HTTP 503", t(70))
            .await
            .unwrap()
    );
    assert!(
        !s.postpone_action_as(id, "w1", "rate limited", t(70))
            .await
            .unwrap()
    );
    assert!(!s.fail_action_as(id, "w1", "HTTP 403").await.unwrap());
    assert!(
        !s.complete_action_as(id, "w1", ActionOutcome::Done, "cancelled", None)
            .await
            .unwrap()
    );
    assert_eq!(s.get_action(id).await.unwrap().unwrap(), held_by_w2);
    // Renewals: w1's lease is lost, w2's is extended.
    assert_eq!(s.renew_leases(&[id], "w1", t(200)).await.unwrap(), [id]);
    assert!(
        s.renew_leases(&[id], "w2", t(200))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.get_action(id).await.unwrap().unwrap().lease_until,
        Some(t(200))
    );

    // w2's attempt fails, to be retried: pending, and no worker's any more.
    assert!(
        s.fail_attempt_as(id, "w2", "HTTP 503", t(80))
            .await
            .unwrap()
    );
    for w in ["w1", "w2"] {
        assert!(
            !s.complete_action_as(id, w, ActionOutcome::Done, "late", None)
                .await
                .unwrap()
        );
        assert!(!s.fail_action_as(id, w, "late").await.unwrap());
    }
    let row = s.get_action(id).await.unwrap().unwrap();
    assert_eq!(
        (row.state, row.attempts, row.last_error.as_deref()),
        (ActionState::Pending, 1, Some("HTTP 503"))
    );
    // Claimed again by w1: its outcome applies.
    assert_eq!(
        s.claim_due_actions(t(80), 10, lease, "w1").await.unwrap()[0].id,
        id
    );
    assert!(
        s.complete_action_as(id, "w1", ActionOutcome::Done, "cancelled", None)
            .await
            .unwrap()
    );
    let row = s.get_action(id).await.unwrap().unwrap();
    assert_eq!((row.state, row.attempts), (ActionState::Done, 2));
    assert!(matches!(
        s.fail_action_as(id + 100, "w1", "x").await,
        Err(StoreError::NotFound { .. })
    ));
}

// ---- dry run per rule: an action held back, re-opened, or carried out for another rule ----

both!(
    a_live_decision_reopens_an_action_dry_run_held_back_and_a_dry_run_decision_does_not,
    an_action_skipped_for_another_reason_than_dry_run_stays_skipped,
    a_hold_gives_way_to_a_live_decision_recorded_since_the_executor_looked,
    a_hold_and_another_rules_live_decision_racing_never_leave_the_action_skipped,
    the_cancel_is_credited_to_the_live_rule_it_was_carried_out_for,
);

/// The note the executor holds an action back with (`actions::dry_run_hold`).
fn held_note(rule: &str) -> String {
    format!(
        "{} for rule {rule:?} (the action was queued before)",
        runwarden::store::actions::DRY_RUN_HOLD
    )
}

/// Claims the one due action (due by the wall clock: a re-opened action is due from when
/// it was re-opened) for `worker`.
async fn claim_one(s: &Store, worker: &str) -> runwarden::store::ActionRow {
    let mut claimed = s
        .claim_due_actions(
            Utc::now() + chrono::Duration::seconds(5),
            10,
            Duration::from_secs(60),
            worker,
        )
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1, "{claimed:#?}");
    claimed.remove(0)
}

/// SPEC §2/§6, the emergency stop lifted: a cancel that dry run held back (ended
/// `skipped`, counting no attempt) is put back in the queue by a live decision of it,
/// repeated (deduplicated: the same rule deciding the same again) as much as new, in
/// the decision's own transaction; it is then carried out once, and a later decision
/// does not re-open it. A decision made while still in dry run (recorded as such, with
/// no action) leaves it held.
async fn a_live_decision_reopens_an_action_dry_run_held_back_and_a_dry_run_decision_does_not(
    db: Db,
) {
    let ts = TempStore::new(db).await;
    let s = &ts.store;
    let first = s
        .record_decisions(&[decision("sup", "supersede", "cancel", "run-1", t(0))])
        .await
        .unwrap();
    let id = first[0].action_id.unwrap();
    let a = claim_one(s, "w1").await;
    assert_eq!(a.id, id);
    assert!(
        s.hold_action_as(id, "w1", &held_note("sup"), |_| false)
            .await
            .unwrap()
    );
    let held = s.get_action(id).await.unwrap().unwrap();
    assert_eq!(
        (held.state, held.attempts, held.worker_id.as_deref()),
        (ActionState::Skipped, 0, None),
        "held back, no attempt counted: {held:#?}"
    );

    // Still in dry run: the rule's decision is a dry run, which re-opens nothing.
    let mut dry = decision("sup", "supersede", "cancel", "run-1", t(10));
    dry.dry_run = true;
    let rec = s.record_decisions(&[dry]).await.unwrap();
    assert_eq!(rec[0].action_id, None);
    assert_eq!(
        s.get_action(id).await.unwrap().unwrap().state,
        ActionState::Skipped
    );
    assert!(
        s.claim_due_actions(Utc::now(), 10, Duration::from_secs(60), "w1")
            .await
            .unwrap()
            .is_empty()
    );

    // Live again: the same rule decides the same cancel again (deduplicated).
    let again = s
        .record_decisions(&[decision("sup", "supersede", "cancel", "run-1", t(20))])
        .await
        .unwrap();
    assert!(!again[0].new_decision && !again[0].new_action, "{again:?}");
    assert_eq!(again[0].action_id, Some(id));
    let reopened = s.get_action(id).await.unwrap().unwrap();
    assert_eq!(
        (
            reopened.state,
            reopened.attempts,
            reopened.detail.as_deref(),
            reopened.finished_at
        ),
        (ActionState::Pending, 0, None, None),
        "{reopened:#?}"
    );
    let audit = s.audit(None, None, 10).await.unwrap();
    let live: Vec<_> = audit
        .iter()
        .filter(|e| e.outcome != Outcome::DryRun)
        .collect();
    assert_eq!(live.len(), 1, "{audit:#?}");
    assert_eq!(live[0].outcome, Outcome::Planned);

    // Carried out once.
    assert_eq!(claim_one(s, "w2").await.id, id);
    assert!(
        s.complete_action_as(
            id,
            "w2",
            ActionOutcome::Done,
            "cancelled; run is CANCELED",
            None
        )
        .await
        .unwrap()
    );
    s.record_decisions(&[decision("sup", "supersede", "cancel", "run-1", t(30))])
        .await
        .unwrap();
    let done = s.get_action(id).await.unwrap().unwrap();
    assert_eq!((done.state, done.attempts), (ActionState::Done, 1));
}

/// Only dry run's hold is undone by a decision: an action skipped because the executor
/// found nothing to do (a summary unchanged, the run gone, a rule removed) is finished,
/// and a decision of it again (a redelivered event, the next poll) adds nothing, as for
/// one done; nor is a record that is never carried out (a circuit breaker's) re-opened.
async fn an_action_skipped_for_another_reason_than_dry_run_stays_skipped(db: Db) {
    let ts = TempStore::new(db).await;
    let s = &ts.store;
    let rec = s
        .record_decisions(&[decision("pr", "summary", "summarize", "run-1", t(0))])
        .await
        .unwrap();
    let id = rec[0].action_id.unwrap();
    claim_one(s, "w1").await;
    assert!(
        s.complete_action_as(
            id,
            "w1",
            ActionOutcome::Skipped,
            "run no longer exists",
            None
        )
        .await
        .unwrap()
    );
    s.record_decisions(&[decision("pr", "summary", "summarize", "run-1", t(10))])
        .await
        .unwrap();
    let a = s.get_action(id).await.unwrap().unwrap();
    assert_eq!(
        (a.state, a.detail.as_deref()),
        (ActionState::Skipped, Some("run no longer exists"))
    );

    let mut breaker = decision("ret", "retention", "delete", "breaker-1", t(20));
    breaker.skip = Some("circuit breaker: 600 runs > max_deletions 500".into());
    let rec = s.record_decisions(&[breaker.clone()]).await.unwrap();
    breaker.at = t(30);
    s.record_decisions(&[breaker]).await.unwrap();
    let b = s
        .get_action(rec[0].action_id.unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b.state, ActionState::Skipped);
    assert_eq!(s.queue_depth().await.unwrap(), 0);
}

/// SPEC §6, several rules deciding one cancel: the executor looked at the cancel's
/// deciders (all in dry run) and is about to hold it back when another rule, live,
/// decides the same cancel. The hold, checked again in the store's write transaction,
/// gives way: the action is handed back (due at once, no attempt counted) rather than
/// ended `skipped` under a live decision nothing would re-open.
async fn a_hold_gives_way_to_a_live_decision_recorded_since_the_executor_looked(db: Db) {
    let ts = TempStore::new(db).await;
    let s = &ts.store;
    let rec = s
        .record_decisions(&[decision("sup", "supersede", "cancel", "run-1", t(0))])
        .await
        .unwrap();
    let id = rec[0].action_id.unwrap();
    claim_one(s, "w1").await;
    assert_eq!(
        s.live_deciders(id).await.unwrap(),
        [("sup".to_string(), "supersede".to_string())]
    );
    // `stuck` (live) decides it while the executor is on it.
    s.record_decisions(&[decision("stuck", "timeout", "cancel", "run-1", t(1))])
        .await
        .unwrap();
    let live = |rule: &str| rule == "stuck";
    assert!(
        !s.hold_action_as(id, "w1", &held_note("sup"), live)
            .await
            .unwrap()
    );
    let a = s.get_action(id).await.unwrap().unwrap();
    assert_eq!(
        (
            a.state,
            a.attempts,
            a.worker_id.as_deref(),
            a.detail.as_deref()
        ),
        (ActionState::Pending, 0, None, None),
        "{a:#?}"
    );
    assert_eq!(
        s.live_deciders(id).await.unwrap(),
        [
            ("sup".to_string(), "supersede".to_string()),
            ("stuck".to_string(), "timeout".to_string())
        ]
    );
    // Claimed again, it is not held (another worker's hold applies to nothing).
    assert_eq!(claim_one(s, "w2").await.id, id);
    assert!(
        !s.hold_action_as(id, "w1", &held_note("sup"), |_| false)
            .await
            .unwrap()
    );
    assert_eq!(
        s.get_action(id).await.unwrap().unwrap().state,
        ActionState::Running
    );
}

/// Replicas (PostgreSQL, or two processes on one SQLite file): one executor holds a
/// cancel back (its deciders in dry run) while another process records a live rule's
/// decision of it. Whichever commits first, the action ends up in the queue, never
/// `skipped` under that live decision: the hold and the decision's record take the same
/// write lock, and each checks the other's work.
async fn a_hold_and_another_rules_live_decision_racing_never_leave_the_action_skipped(db: Db) {
    let ts = TempStore::new(db).await;
    let executor = ts.reopen().await;
    let processor = ts.reopen().await;
    for i in 0..12 {
        let run = format!("run-{i}");
        let rec = ts
            .store
            .record_decisions(&[decision("sup", "supersede", "cancel", &run, t(0))])
            .await
            .unwrap();
        let id = rec[0].action_id.unwrap();
        claim_one(&ts.store, "w1").await;
        let note = held_note("sup");
        let live = [decision("stuck", "timeout", "cancel", &run, t(1))];
        let hold = executor.hold_action_as(id, "w1", &note, |r| r == "stuck");
        let decide = processor.record_decisions(&live);
        let (held, decided) = tokio::join!(hold, decide);
        held.unwrap();
        decided.unwrap();
        let a = ts.store.get_action(id).await.unwrap().unwrap();
        assert_eq!(a.state, ActionState::Pending, "round {i}: {a:#?}");
        // Out of the way of the next round's claim.
        ts.store
            .complete_action(id, ActionOutcome::Done, "cancelled")
            .await
            .unwrap();
    }
    executor.close().await;
    processor.close().await;
}

/// SPEC §4 summary ("which rule did it and why"): a cancel carried out for a live rule
/// because the rule that decided it first is in dry run (`act_for_rule_as`) credits the
/// live rule, not the first decision's; one carried out for the first rule credits it,
/// as before. Only the worker holding the action records the rule.
async fn the_cancel_is_credited_to_the_live_rule_it_was_carried_out_for(db: Db) {
    let ts = TempStore::new(db).await;
    let s = &ts.store;
    let rec = s
        .record_decisions(&[
            decision("sup", "supersede", "cancel", "run-1", t(0)),
            decision("stuck", "timeout", "cancel", "run-1", t(1)),
        ])
        .await
        .unwrap();
    let id = rec[0].action_id.unwrap();
    let a = claim_one(s, "w1").await;
    assert_eq!(a.rule, "sup");
    assert!(
        !s.act_for_rule_as(id, "w2", "stuck", "timeout")
            .await
            .unwrap()
    );
    assert!(
        s.act_for_rule_as(id, "w1", "stuck", "timeout")
            .await
            .unwrap()
    );
    assert!(
        s.complete_action_as(
            id,
            "w1",
            ActionOutcome::Done,
            "cancelled; run is CANCELED",
            None
        )
        .await
        .unwrap()
    );
    let a = s.get_action(id).await.unwrap().unwrap();
    assert_eq!((a.rule.as_str(), a.kind.as_str()), ("stuck", "timeout"));
    let credit = s.cancel_reason("run-1").await.unwrap().unwrap();
    assert_eq!(
        (credit.rule.as_str(), credit.reason.as_str()),
        ("stuck", "stuck says cancel run-1")
    );
    // Both decisions show the action done (carried out once, each decision recorded).
    let audit = s.audit(None, None, 10).await.unwrap();
    assert_eq!(audit.len(), 2);
    assert!(
        audit.iter().all(|e| e.outcome == Outcome::Done),
        "{audit:#?}"
    );

    // Carried out for the first rule: it is credited.
    s.record_decisions(&[
        decision("sup", "supersede", "cancel", "run-2", t(0)),
        decision("stuck", "timeout", "cancel", "run-2", t(1)),
    ])
    .await
    .unwrap();
    let b = claim_one(s, "w1").await;
    s.complete_action_as(
        b.id,
        "w1",
        ActionOutcome::Done,
        "cancelled; run is CANCELED",
        None,
    )
    .await
    .unwrap();
    assert_eq!(s.cancel_reason("run-2").await.unwrap().unwrap().rule, "sup");
}
