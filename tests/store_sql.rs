//! The store's SQL under the audit's findings: the audit prune under the write lock, the
//! duration history and `audit --since` by their indexes, a damaged SQLite file classed
//! as no retry mends, NUL characters in text from outside.
//!
//! Every behaviour test runs twice, on a temporary SQLite file (`NAME::sqlite`) and on a
//! fresh PostgreSQL database (`NAME::postgres`; see `tests/support/postgres.rs` for where
//! the server comes from), as in `tests/store.rs`. The plans of the statements are checked
//! by the unit tests of `src/store/runs.rs` and `src/store/actions.rs` (SQLite's `EXPLAIN
//! QUERY PLAN` of the statements themselves).

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use runwarden::store::runs::NUL_REPLACEMENT;
use runwarden::store::{
    ActionOutcome, ActionState, AuditEntry, CommentRecord, EventRecord, NewDecision, NewDelivery,
    Outcome, PRUNE_CHUNK, RunRecord, SectionUpdate, Store, StoreError,
};
use sqlx::Connection as _;

#[path = "support/postgres.rs"]
mod pg;
#[macro_use]
#[path = "support/temp_store.rs"]
mod temp_store;
use temp_store::{Db, TempStore};

/// Key of the store's write lock on PostgreSQL (`PG_WRITE_LOCK` in `src/store/mod.rs`),
/// as `tests/store.rs` takes it.
const PG_WRITE_LOCK: i64 = 0x726e_7772_646e;

/// 2026-01-01T00:00:00Z plus `secs`.
fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_767_225_600 + secs, 0).unwrap()
}

both!(
    a_watermark_only_moves_forward_and_outlives_the_process,
    the_clock_offset_is_measured_against_a_shared_stores_clock_only,
    a_prune_waits_for_a_record_linking_an_old_action_and_keeps_that_action,
    a_prune_forgets_old_finished_actions_in_several_chunks,
    the_passed_history_is_the_same_for_a_branch_and_for_no_branch,
    audit_since_keeps_new_decisions_and_older_ones_whose_action_changed_once_each,
    nul_characters_from_outside_are_stored_and_found_alike_on_both_backends,
    nul_characters_in_an_events_error_and_note_are_stored_on_both_backends,
    nul_characters_in_summary_sections_and_slot_summaries_are_stored_on_both_backends,
    the_runs_of_a_commit_are_found_alike_on_both_backends,
);

fn decision(rule: &str, action: &str, run: &str, at: DateTime<Utc>) -> NewDecision {
    NewDecision {
        at,
        rule: rule.into(),
        kind: "supersede".into(),
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

fn passed(id: &str, branch: Option<&str>, created: i64, duration_ms: i64) -> RunRecord {
    RunRecord {
        run_id: id.into(),
        project_id: "bAYZ4a".into(),
        branch: branch.map(Into::into),
        sha: Some(format!("sha-{id}")),
        created_at: t(created),
        completion_state: "COMPLETE".into(),
        status: "PASSED".into(),
        json: format!(r#"{{"runId":"{id}"}}"#),
        completed_specs: 3,
        progress_changed_at: t(created),
        duration_ms: Some(duration_ms),
        updated_at: t(created + 1),
    }
}

/// `rule:run` of each entry, in order.
fn shown(entries: &[AuditEntry]) -> Vec<String> {
    entries
        .iter()
        .map(|e| format!("{}:{}", e.rule, e.run_id))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Finding 1: the audit prune under the write lock

/// Another connection inside a write transaction of the store: it holds the write lock
/// (`BEGIN IMMEDIATE` on SQLite, the advisory lock on PostgreSQL) as an event's record
/// does while it links its decisions.
enum Writer {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl Writer {
    async fn begin(ts: &TempStore) -> Writer {
        match ts.db {
            Db::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&ts.url).await.unwrap();
                sqlx::raw_sql("PRAGMA foreign_keys = ON; BEGIN IMMEDIATE")
                    .execute(&mut c)
                    .await
                    .unwrap();
                Writer::Sqlite(c)
            }
            Db::Postgres => {
                let mut c = sqlx::PgConnection::connect(&ts.url).await.unwrap();
                sqlx::raw_sql("BEGIN").execute(&mut c).await.unwrap();
                sqlx::query("SELECT 1 FROM pg_advisory_xact_lock($1)")
                    .bind(PG_WRITE_LOCK)
                    .execute(&mut c)
                    .await
                    .unwrap();
                Writer::Postgres(c)
            }
        }
    }

    /// Runs `sql` (no parameters) in the transaction.
    async fn execute(&mut self, sql: &str) {
        match self {
            Writer::Sqlite(c) => {
                sqlx::raw_sql(sql).execute(c).await.unwrap();
            }
            Writer::Postgres(c) => {
                sqlx::raw_sql(sql).execute(c).await.unwrap();
            }
        }
    }

    async fn commit(mut self) {
        self.execute("COMMIT").await;
    }
}

/// Until another session of the PostgreSQL database at `url` waits for a lock (the prune
/// started and is held back: by the write lock with the fix, else by the new decision's
/// lock on the action's row). On SQLite, a while (the prune waits in SQLite's busy
/// handler, which shows nowhere).
async fn until_someone_waits_for_a_lock(ts: &TempStore) {
    if ts.db == Db::Sqlite {
        tokio::time::sleep(Duration::from_millis(300)).await;
        return;
    }
    let mut watcher = sqlx::PgConnection::connect(&ts.url).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&mut watcher)
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the prune never waited for a lock"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = watcher.close().await;
}

/// A decision recorded for an old finished action while a prune runs: the prune waits
/// for the record's transaction (PostgreSQL's write lock, as `record_events` holds it),
/// then sees the new decision and keeps the action. Without the lock, on PostgreSQL, the
/// prune deleted the action under the decision (`ON DELETE SET NULL`: `planned` for
/// ever). On SQLite one writer at a time made it so already.
async fn a_prune_waits_for_a_record_linking_an_old_action_and_keeps_that_action(db: Db) {
    let ts = TempStore::new(db).await;
    let s = &ts.store;
    let rec = s
        .record_decisions(&[decision("first", "cancel", "run-1", t(0))])
        .await
        .unwrap();
    let action = rec[0].action_id.unwrap();
    let claimed = s
        .claim_due_actions(t(1), 10, Duration::from_secs(60), "w")
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert!(
        s.complete_action(action, ActionOutcome::Done, "cancelled")
            .await
            .unwrap()
    );
    // Past the action's end: the old decision, then the action, are the prune's to forget.
    let cutoff = Utc::now() + chrono::Duration::hours(1);
    let later = (cutoff + chrono::Duration::hours(1)).timestamp_millis();

    // Another rule decides the same cancel now: its record links a new decision to the
    // old action, inside the write lock, and has not committed yet when the prune starts.
    let mut record = Writer::begin(&ts).await;
    record
        .execute(&format!(
            "INSERT INTO decisions (at, rule, kind, action, action_key, run_id, project_id, \
                 branch, sha, reason, dry_run, not_before, action_id) \
             VALUES ({later}, 'second', 'timeout', 'cancel', 'cancel:run-1', 'run-1', \
                 'bAYZ4a', 'feat/x', 'c0ffee', 'second says cancel run-1', 0, NULL, {action})"
        ))
        .await;
    let pruning = tokio::spawn({
        let s = s.clone();
        async move { s.prune_audit(cutoff).await }
    });
    until_someone_waits_for_a_lock(&ts).await;
    record.commit().await;
    let (decisions, actions) = pruning.await.unwrap().unwrap();

    assert_eq!(
        (decisions, actions),
        (1, 0),
        "the old decision is forgotten, its action kept for the new one"
    );
    let kept = s
        .get_action(action)
        .await
        .unwrap()
        .expect("the action is kept");
    assert_eq!(kept.state, ActionState::Done);
    let audit = s.audit(None, None, 10).await.unwrap();
    assert_eq!(shown(&audit), ["second:run-1"]);
    assert_eq!(
        audit[0].outcome,
        Outcome::Done,
        "linked to its action: {audit:?}"
    );
    // Nothing more to forget: the action has a decision to show it.
    assert_eq!(s.prune_audit(cutoff).await.unwrap(), (0, 0));
    assert!(s.get_action(action).await.unwrap().is_some());
}

/// Pruning in one write transaction per chunk still forgets everything old and finished,
/// past one chunk, and keeps what is still to do.
async fn a_prune_forgets_old_finished_actions_in_several_chunks(db: Db) {
    let ts = TempStore::new(db).await;
    let s = &ts.store;
    let n = PRUNE_CHUNK + 3;
    // Finished as they are recorded (skipped: a sweep's circuit breaker).
    let skipped: Vec<_> = (0..n)
        .map(|i| {
            let mut d = decision("sweep", "delete", &format!("old-{i}"), t(0));
            d.skip = Some("circuit breaker".into());
            d
        })
        .collect();
    s.record_decisions(&skipped).await.unwrap();
    s.record_decisions(&[decision("r", "cancel", "pending", t(0))])
        .await
        .unwrap();
    let (decisions, actions) = s
        .prune_audit(Utc::now() + chrono::Duration::hours(1))
        .await
        .unwrap();
    assert_eq!((decisions, actions), (n as u64, n as u64));
    assert_eq!(
        shown(&s.audit(None, None, 5000).await.unwrap()),
        ["r:pending"]
    );
    assert_eq!(s.queue_depth().await.unwrap(), 1);
    assert_eq!(
        s.action_counts().await.unwrap(),
        [
            ("pending".to_string(), 1),
            ("running".to_string(), 0),
            ("done".to_string(), 0),
            ("skipped".to_string(), 0),
            ("failed".to_string(), 0),
        ]
    );
}

// ---------------------------------------------------------------------------------------
// Finding 2: the duration history, one statement per case

/// The history of a branch and of no branch, each apart from the other and from other
/// projects, runs that did not pass and runs without a duration; newest first, ties by
/// run id, within the limit.
async fn the_passed_history_is_the_same_for_a_branch_and_for_no_branch(db: Db) {
    let ts = TempStore::new(db).await;
    let s = &ts.store;
    let mut runs = vec![
        passed("m1", Some("main"), 10, 1_000),
        passed("m2", Some("main"), 20, 2_000),
        passed("m3a", Some("main"), 30, 3_000),
        passed("m3b", Some("main"), 30, 3_100),
        passed("n1", None, 15, 500),
        passed("n2", None, 25, 600),
        passed("f1", Some("feat"), 40, 9_000),
        passed("e1", Some(""), 45, 7_000),
    ];
    let mut other_project = passed("o1", Some("main"), 50, 8_000);
    other_project.project_id = "other".into();
    let mut failed = passed("x1", Some("main"), 60, 4_000);
    failed.status = "FAILED".into();
    let mut canceled = passed("x2", None, 61, 4_000);
    canceled.completion_state = "CANCELED".into();
    let mut no_duration = passed("x3", None, 62, 0);
    no_duration.duration_ms = None;
    let mut in_progress = passed("x4", Some("main"), 63, 0);
    in_progress.completion_state = "IN_PROGRESS".into();
    in_progress.status = "RUNNING".into();
    runs.extend([other_project, failed, canceled, no_duration, in_progress]);
    for r in &runs {
        assert!(s.upsert_run(r).await.unwrap());
    }

    let history = |v: Vec<runwarden::store::PassedRun>| {
        v.into_iter()
            .map(|p| (p.run_id, p.created_at_ms, p.duration_ms))
            .collect::<Vec<_>>()
    };
    let ms = |secs: i64| t(secs).timestamp_millis();
    assert_eq!(
        history(s.passed_history("bAYZ4a", Some("main"), 10).await.unwrap()),
        [
            ("m3b".to_string(), ms(30), 3_100),
            ("m3a".to_string(), ms(30), 3_000),
            ("m2".to_string(), ms(20), 2_000),
            ("m1".to_string(), ms(10), 1_000),
        ]
    );
    assert_eq!(
        history(s.passed_history("bAYZ4a", None, 10).await.unwrap()),
        [
            ("n2".to_string(), ms(25), 600),
            ("n1".to_string(), ms(15), 500)
        ]
    );
    assert_eq!(
        s.passed_durations("bAYZ4a", Some("main"), 2).await.unwrap(),
        [3_100, 3_000]
    );
    assert_eq!(s.passed_durations("bAYZ4a", None, 1).await.unwrap(), [600]);
    assert_eq!(
        s.passed_durations("bAYZ4a", Some("feat"), 10)
            .await
            .unwrap(),
        [9_000]
    );
    // An empty branch name is a branch, not the absence of one.
    assert_eq!(
        s.passed_durations("bAYZ4a", Some(""), 10).await.unwrap(),
        [7_000]
    );
    assert_eq!(
        s.passed_durations("other", Some("main"), 10).await.unwrap(),
        [8_000]
    );
    assert!(
        s.passed_durations("other", None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        s.passed_durations("bAYZ4a", Some("nope"), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        s.passed_durations("bAYZ4a", Some("main"), 0)
            .await
            .unwrap()
            .is_empty()
    );
}

// ---------------------------------------------------------------------------------------
// Finding 3: `audit --since` in two indexed parts

/// `since` keeps the decisions made since then and the older ones whose action changed
/// since then (here claimed: `updated_at` after `created_at`), each once, newest first by
/// decision time (ties by the later decision first), within the limit, of one rule when
/// asked; not a decision whose action has not changed since its creation.
async fn audit_since_keeps_new_decisions_and_older_ones_whose_action_changed_once_each(db: Db) {
    let ts = TempStore::new(db).await;
    let s = &ts.store;
    // Decision times after the actions' creation (now), so that a claim at one of them
    // is a change of the action.
    let base = Utc::now() + chrono::Duration::hours(1);
    let h = |secs: i64| base + chrono::Duration::seconds(secs);
    let mut dry = decision("a", "delete", "run-6", h(5));
    dry.dry_run = true;
    s.record_decisions(&[
        decision("a", "cancel", "run-1", h(10)),
        decision("b", "cancel", "run-2", h(20)),
        decision("a", "cancel", "run-3", h(30)),
        decision("b", "cancel", "run-4", h(40)),
        dry,
    ])
    .await
    .unwrap();
    // Rule b decides run-1's cancel too (the same action), and rule a another at the
    // time of run-4's, recorded after it.
    s.record_decisions(&[
        decision("b", "cancel", "run-1", h(15)),
        decision("a", "cancel", "run-7", h(40)),
    ])
    .await
    .unwrap();
    // Only run-1's action changes: claimed (the oldest due) at h(60).
    let claimed = s
        .claim_due_actions(h(60), 1, Duration::from_secs(600), "w")
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].run_id, "run-1");

    let audit = |since: Option<DateTime<Utc>>, rule: Option<&'static str>, max: i64| async move {
        shown(&s.audit(since, rule, max).await.unwrap())
    };
    assert_eq!(
        audit(None, None, 100).await,
        [
            "a:run-7", "b:run-4", "a:run-3", "b:run-2", "b:run-1", "a:run-1", "a:run-6"
        ]
    );
    // Since h(25): run-3, run-4 and run-7 decided since; run-1's two decisions are older
    // but their action changed since; run-2's did not.
    assert_eq!(
        audit(Some(h(25)), None, 100).await,
        ["a:run-7", "b:run-4", "a:run-3", "b:run-1", "a:run-1"]
    );
    assert_eq!(
        audit(Some(h(25)), None, 3).await,
        ["a:run-7", "b:run-4", "a:run-3"]
    );
    assert_eq!(
        audit(Some(h(25)), None, 4).await,
        ["a:run-7", "b:run-4", "a:run-3", "b:run-1"]
    );
    assert_eq!(audit(Some(h(25)), None, 1).await, ["a:run-7"]);
    assert_eq!(
        audit(Some(h(25)), Some("a"), 100).await,
        ["a:run-7", "a:run-3", "a:run-1"]
    );
    assert_eq!(
        audit(Some(h(25)), Some("b"), 100).await,
        ["b:run-4", "b:run-1"]
    );
    assert!(audit(Some(h(25)), Some("nope"), 100).await.is_empty());
    // A decision made since and whose action changed since too: once. Here run-1's rule
    // b decision (h(15)) is both; rule a's (h(10)) is older, its action changed.
    assert_eq!(
        audit(Some(h(12)), None, 100).await,
        [
            "a:run-7", "b:run-4", "a:run-3", "b:run-2", "b:run-1", "a:run-1"
        ]
    );
    assert_eq!(
        audit(Some(h(0)), None, 100).await,
        [
            "a:run-7", "b:run-4", "a:run-3", "b:run-2", "b:run-1", "a:run-1", "a:run-6"
        ]
    );
    // The change's own time is within `since`; after it, only newer decisions count.
    assert_eq!(audit(Some(h(60)), None, 100).await, ["b:run-1", "a:run-1"]);
    assert!(audit(Some(h(61)), None, 100).await.is_empty());
    // The entries themselves are the same whichever part found them.
    let all = s.audit(None, None, 100).await.unwrap();
    let since = s.audit(Some(h(25)), None, 100).await.unwrap();
    for e in &since {
        assert!(all.contains(e), "{e:?}");
    }
    assert_eq!(since[3].outcome, Outcome::Planned);
    // Before 1970: everything.
    assert_eq!(
        audit(Some(DateTime::<Utc>::MIN_UTC), None, 100).await.len(),
        7
    );
}

// ---------------------------------------------------------------------------------------
// Finding 4: a damaged SQLite file is no outage

/// A SQLite file whose table is damaged answers `SQLITE_CORRUPT` (11) for ever: a
/// [`StoreError::Database`], not worth a retry, not [`StoreError::Unavailable`].
#[tokio::test]
async fn a_damaged_sqlite_file_is_a_database_error_that_no_retry_mends() {
    let ts = TempStore::new(Db::Sqlite).await;
    ts.store
        .record_decisions(&[decision("r", "cancel", "run-1", t(0))])
        .await
        .unwrap();
    ts.store.close().await;
    // Everything in the database file, then the decisions' root page overwritten.
    let mut conn = sqlx::SqliteConnection::connect(&ts.url).await.unwrap();
    sqlx::raw_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&mut conn)
        .await
        .unwrap();
    let root: i64 =
        sqlx::query_scalar("SELECT rootpage FROM sqlite_master WHERE name = 'decisions'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    let page: i64 = sqlx::query_scalar("PRAGMA page_size")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&ts.path)
            .unwrap();
        f.seek(SeekFrom::Start(((root - 1) * page) as u64)).unwrap();
        f.write_all(&vec![0xA5; page as usize]).unwrap();
        f.sync_all().unwrap();
    }

    let store = Store::connect(&ts.url).await.unwrap();
    let err = store.audit(None, None, 10).await.unwrap_err();
    assert!(matches!(err, StoreError::Database(_)), "{err:?}");
    assert!(!err.is_unavailable(), "{err:?}");
    assert!(err.to_string().contains("malformed"), "{err}");
    let err = store
        .record_decisions(&[decision("r", "cancel", "run-2", t(1))])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Database(_)), "{err:?}");
    assert!(!err.is_unavailable(), "{err:?}");
}

// ---------------------------------------------------------------------------------------
// Finding 5: NUL characters

/// A NUL character in a run's or a decision's text (a branch `"fe\u0000at"` from API JSON,
/// an API's error) is stored as U+FFFD on both backends (PostgreSQL refuses a NUL in
/// text: SQLSTATE 22021), and found again by the text as it came.
async fn nul_characters_from_outside_are_stored_and_found_alike_on_both_backends(db: Db) {
    let ts = TempStore::new(db).await;
    let s = &ts.store;
    let r = NUL_REPLACEMENT;
    let clean = |v: &str| v.replace('\0', &r.to_string());
    let run_id = "run\0-1";
    let mut run = passed(run_id, Some("fe\0at"), 10, 1_000);
    run.completion_state = "IN_PROGRESS".into();
    run.status = "RUNNING\0".into();
    run.sha = Some("c0\0ffee".into());
    run.json = "{\"runId\":\"run\0-1\"}".into();
    run.duration_ms = None;
    assert!(s.upsert_run(&run).await.unwrap());
    let got = s
        .get_run(run_id)
        .await
        .unwrap()
        .expect("found by its id as it came");
    assert_eq!(got.run_id, clean(run_id));
    assert_eq!(got.branch.as_deref(), Some(clean("fe\0at").as_str()));
    assert_eq!(got.sha.as_deref(), Some(clean("c0\0ffee").as_str()));
    assert_eq!(got.status, clean("RUNNING\0"));
    assert_eq!(got.json, clean(&run.json));
    let in_progress = s
        .in_progress_runs(Some("bAYZ4a"), Some("fe\0at"))
        .await
        .unwrap();
    assert_eq!(in_progress.len(), 1);

    // The event that saw it ends: its record (runs, decisions, the delivery) commits.
    s.insert_delivery(NewDelivery {
        source: "currents".into(),
        delivery_id: "d-1".into(),
        event: "RUN_FINISH".into(),
        payload: "{}".into(),
        received_at: t(11),
    })
    .await
    .unwrap();
    let delivery = s.next_unprocessed(t(12), 10).await.unwrap().remove(0).id;
    let mut ended = passed(run_id, Some("fe\0at"), 10, 1_000);
    ended.updated_at = t(20);
    let mut d = decision("stuck\0", "cancel", run_id, t(12));
    d.kind = "time\0out".into();
    d.branch = Some("fe\0at".into());
    d.sha = Some("c0\0ffee".into());
    d.reason = "ran past \0 its limit".into();
    d.payload = Some("{\"x\":\"\0\"}".into());
    let recorded = s
        .record_event(&EventRecord {
            delivery_id: delivery,
            note: "1 decision(s)",
            quiet: &[],
            decisions: std::slice::from_ref(&d),
            runs: std::slice::from_ref(&ended),
            now: t(12),
            claim_for: None,
        })
        .await
        .unwrap();
    let action = recorded.decisions[0].action_id.unwrap();
    assert_eq!(
        s.passed_durations("bAYZ4a", Some("fe\0at"), 10)
            .await
            .unwrap(),
        [1_000]
    );
    // Recorded again (a redelivery): the same decision and action, found by their keys.
    let again = s.record_decisions(std::slice::from_ref(&d)).await.unwrap();
    assert!(!again[0].new_decision && !again[0].new_action, "{again:?}");
    assert_eq!(again[0].action_id, Some(action));
    let row = s
        .action_by_key(&format!("cancel:{run_id}"))
        .await
        .unwrap()
        .expect("found by its key as it came");
    assert_eq!(row.id, action);
    assert_eq!(row.branch.as_deref(), Some(clean("fe\0at").as_str()));
    assert_eq!(
        row.payload.as_deref(),
        Some(clean("{\"x\":\"\0\"}").as_str())
    );
    // An API's error with a NUL in it.
    assert!(s.fail_action(action, "HTTP 500: \0").await.unwrap());
    let row = s.get_action(action).await.unwrap().unwrap();
    assert_eq!(
        row.last_error.as_deref(),
        Some(clean("HTTP 500: \0").as_str())
    );

    let audit = s.audit(Some(t(0)), Some("stuck\0"), 10).await.unwrap();
    assert_eq!(audit.len(), 1, "{audit:?}");
    let e = &audit[0];
    assert_eq!(e.rule, clean("stuck\0"));
    assert_eq!(e.kind, clean("time\0out"));
    assert_eq!(e.run_id, clean(run_id));
    assert_eq!(e.branch.as_deref(), Some(clean("fe\0at").as_str()));
    assert_eq!(e.reason, clean("ran past \0 its limit"));
    assert_eq!(e.outcome, Outcome::Failed);
    assert_eq!(e.error.as_deref(), Some(clean("HTTP 500: \0").as_str()));
    assert_eq!(s.decisions_for_run(run_id).await.unwrap(), audit);
    assert!(s.mark_run_gone(run_id).await.unwrap());
    assert!(s.get_run(run_id).await.unwrap().is_none());
    assert!(s.delete_run(run_id).await.unwrap());
}

/// An event's failure (an API error with a NUL in it) and its outcome note are stored
/// with U+FFFD on both backends: on PostgreSQL the mark would otherwise fail every time,
/// and the event be processed again and again.
async fn nul_characters_in_an_events_error_and_note_are_stored_on_both_backends(db: Db) {
    let ts = TempStore::new(db).await;
    let s = &ts.store;
    let clean = |v: &str| v.replace('\0', &NUL_REPLACEMENT.to_string());
    for id in ["d-1", "d-2", "d-3"] {
        s.insert_delivery(NewDelivery {
            source: "currents".into(),
            delivery_id: id.into(),
            event: "RUN_FINISH".into(),
            payload: "{}".into(),
            received_at: t(11),
        })
        .await
        .unwrap();
    }
    let ids: Vec<i64> = s
        .next_unprocessed(t(12), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    s.mark_delivery_failed(ids[0], "HTTP 500: \0", t(13))
        .await
        .unwrap();
    s.mark_processed(ids[1], "skipped: \0").await.unwrap();
    s.mark_processed_many(&ids[2..], "0 decision(s) \0")
        .await
        .unwrap();
    let d1 = s.find_delivery("currents", "d-1").await.unwrap().unwrap();
    assert_eq!(
        d1.last_error.as_deref(),
        Some(clean("HTTP 500: \0").as_str())
    );
    s.dead_letter_delivery(ids[0], "gave up: \0").await.unwrap();
    let d1 = s.find_delivery("currents", "d-1").await.unwrap().unwrap();
    assert_eq!(
        d1.last_error.as_deref(),
        Some(clean("gave up: \0").as_str())
    );
    let d2 = s.find_delivery("currents", "d-2").await.unwrap().unwrap();
    assert_eq!(d2.outcome.as_deref(), Some(clean("skipped: \0").as_str()));
    let d3 = s.find_delivery("currents", "d-3").await.unwrap().unwrap();
    assert_eq!(
        d3.outcome.as_deref(),
        Some(clean("0 decision(s) \0").as_str())
    );
}

/// A summary's section takes its key, commit, run id and body from the run as Currents
/// reported it, and a retention slot's summary names projects and runs: NUL characters
/// in them are replaced on both backends (PostgreSQL refuses them in text, so the summary
/// action failed on every attempt), and the same key finds the same section again.
async fn nul_characters_in_summary_sections_and_slot_summaries_are_stored_on_both_backends(db: Db) {
    let ts = TempStore::new(db).await;
    let s = &ts.store;
    let clean = |v: &str| v.replace('\0', &NUL_REPLACEMENT.to_string());
    let section = |body: &str, created: i64| SectionUpdate {
        repo: "acme/we\0b".into(),
        pr: 7,
        section_key: "bAYZ4a/fe\0at".into(),
        sha: "c0\0ffee".into(),
        head_sha: None,
        run_id: "run\0-1".into(),
        run_created_at: t(created),
        body: body.into(),
        updated_at: t(created + 1),
    };
    assert!(
        s.upsert_section_if_newer(&section("spec \0 failed", 10))
            .await
            .unwrap()
    );
    // A newer run of the same key replaces the section: it is found by the key as given.
    assert!(
        s.upsert_section_if_newer(&section("spec \0 passed", 20))
            .await
            .unwrap()
    );
    let got = s.sections("acme/we\0b", 7).await.unwrap();
    assert_eq!(got.len(), 1, "one section for the key: {got:?}");
    assert_eq!(got[0].section_key, clean("bAYZ4a/fe\0at"));
    assert_eq!(got[0].sha, clean("c0\0ffee"));
    assert_eq!(got[0].run_id, clean("run\0-1"));
    assert_eq!(got[0].body, clean("spec \0 passed"));
    // An older run does not overwrite it.
    assert!(
        !s.upsert_section_if_newer(&section("spec \0 old", 5))
            .await
            .unwrap()
    );

    let comment = CommentRecord {
        comment_id: 42,
        body_hash: "h\0".into(),
        sections_json: "[\"\0\"]".into(),
    };
    s.put_comment("acme/we\0b", 7, &comment).await.unwrap();
    let stored = s
        .get_comment("acme/we\0b", 7)
        .await
        .unwrap()
        .expect("found");
    assert_eq!(stored.comment_id, 42);
    assert_eq!(stored.sections_json, clean("[\"\0\"]"));

    assert!(s.claim_slot("keep\0-30d", t(100), t(100)).await.unwrap());
    s.finish_slot("keep\0-30d", t(100), "deleted 1 run: run\0-9")
        .await
        .unwrap();
    let slot = s
        .latest_slot_record("keep\0-30d")
        .await
        .unwrap()
        .expect("the slot is found by its rule as given");
    assert_eq!(slot.rule, clean("keep\0-30d"));
    assert_eq!(
        slot.summary.as_deref(),
        Some(clean("deleted 1 run: run\0-9").as_str())
    );
}

/// The runs of a commit (the commit status's other run groups), on both backends: by sha
/// in any case, of one project or of any (`$2 IS NULL OR ...`, which PostgreSQL must type
/// from the other use), newest first, within the limit, without runs deleted in Currents.
async fn the_runs_of_a_commit_are_found_alike_on_both_backends(db: Db) {
    let ts = TempStore::new(db).await;
    let s = &ts.store;
    for (id, project, sha, created) in [
        ("r1", "bAYZ4a", "C0FFEE", 10),
        ("r2", "bAYZ4a", "c0ffee", 20),
        ("r3", "other", "c0ffee", 30),
        ("r4", "bAYZ4a", "beef", 40),
        ("r5", "bAYZ4a", "c0ffee", 50),
    ] {
        let mut r = passed(id, Some("main"), created, 1_000);
        r.project_id = project.into();
        r.sha = Some(sha.into());
        assert!(s.upsert_run(&r).await.unwrap());
    }
    s.mark_run_gone("r5").await.unwrap();
    let ids = |runs: Vec<RunRecord>| runs.into_iter().map(|r| r.run_id).collect::<Vec<_>>();
    assert_eq!(
        ids(s.runs_of_commit("c0ffee", None, 10).await.unwrap()),
        ["r3", "r2", "r1"]
    );
    assert_eq!(
        ids(s
            .runs_of_commit("C0FFEE", Some("bAYZ4a"), 10)
            .await
            .unwrap()),
        ["r2", "r1"]
    );
    assert_eq!(
        ids(s.runs_of_commit("c0ffee", Some("bAYZ4a"), 1).await.unwrap()),
        ["r2"]
    );
}

/// Replicas compare times their own clocks gave: on PostgreSQL the offset of this
/// process's clock from the database server's is measured (here the same machine: within
/// a second), and a local clock 10 s behind shows as an offset of +10 s, beyond the
/// warning's limit; SQLite (one machine) has none.
async fn the_clock_offset_is_measured_against_a_shared_stores_clock_only(db: Db) {
    use runwarden::store::clock::CLOCK_OFFSET_WARN;
    let t = TempStore::new(db).await;
    let offset = t.store.clock_offset().await.unwrap();
    let behind = t
        .store
        .clock_offset_with(|| Utc::now() - chrono::Duration::seconds(10))
        .await
        .unwrap();
    if !t.store.backend().is_shared() {
        assert_eq!((offset, behind), (None, None));
        return;
    }
    let offset = offset.expect("measured on PostgreSQL");
    assert!(
        offset.seconds.abs() < 1.0 && offset.uncertainty >= 0.0,
        "{offset:?}"
    );
    assert!(!offset.beyond(CLOCK_OFFSET_WARN), "{offset:?}");
    let behind = behind.expect("measured on PostgreSQL");
    assert!(
        (behind.seconds - 10.0).abs() < 1.0 && behind.beyond(CLOCK_OFFSET_WARN),
        "{behind:?}"
    );
}

/// A watermark starts unset, moves forward only (an older time, from a replica whose poll
/// committed late, leaves it), and is there for the next process on the store.
async fn a_watermark_only_moves_forward_and_outlives_the_process(db: Db) {
    use runwarden::store::watermarks::LAST_FULL_POLL;
    let t = TempStore::new(db).await;
    assert_eq!(t.store.watermark(LAST_FULL_POLL).await.unwrap(), None);
    let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
    t.store
        .advance_watermark(LAST_FULL_POLL, at("2026-12-07T10:00:00.123Z"))
        .await
        .unwrap();
    t.store
        .advance_watermark(LAST_FULL_POLL, at("2026-12-07T09:00:00Z"))
        .await
        .unwrap();
    t.store
        .advance_watermark("another", at("2026-12-07T08:00:00Z"))
        .await
        .unwrap();
    assert_eq!(
        t.store.watermark(LAST_FULL_POLL).await.unwrap(),
        Some(at("2026-12-07T10:00:00.123Z"))
    );
    t.store
        .advance_watermark(LAST_FULL_POLL, at("2026-12-07T10:05:00Z"))
        .await
        .unwrap();
    let again = Store::connect(&t.url).await.unwrap();
    assert_eq!(
        again.watermark(LAST_FULL_POLL).await.unwrap(),
        Some(at("2026-12-07T10:05:00Z"))
    );
    assert_eq!(
        again.watermark("another").await.unwrap(),
        Some(at("2026-12-07T08:00:00Z"))
    );
}
