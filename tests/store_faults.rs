//! Store faults (issue 8): the database read-only, locked beyond the busy timeout, or out
//! of space. A webhook is answered 503 — never 2xx — while the event cannot be committed;
//! nothing acknowledged before is lost; once the fault clears, the next delivery of the
//! same event is accepted and processed.
//!
//! The bot runs as a child process (`runwarden serve`) so that the faults are real ones
//! on its own database file: another process holding the write lock, the file opened
//! read-only, and the process's file-size limit (`RLIMIT_FSIZE`, the per-process stand-in
//! for a full disk: writes past it fail like writes to a full disk do).

#[path = "support/child.rs"]
mod child;

use std::time::Duration;

use child::*;
use runwarden::simulator::Fault;
use runwarden::store::{ActionState, Store};

const SUPERSEDE: &str = "[[rules]]\nname = \"cancel-superseded\"\nkind = \"supersede\"\n[rules.match]\nbranches = [\"*\", \"!main\"]\n";

struct Pair {
    old: String,
    new: String,
}

fn pair(w: &World, branch: &str) -> Pair {
    let old = w
        .sim
        .add_run(run(branch, &format!("{branch}-old"), 10))
        .unwrap()
        .run_id;
    let new = w
        .sim
        .add_run(run(branch, &format!("{branch}-new"), 1))
        .unwrap()
        .run_id;
    Pair { old, new }
}

/// Waits until the cancel of `p.old` is done, and checks it took effect once.
async fn cancelled_once(w: &World, store: &Store, p: &Pair) {
    let key = format!("cancel:{}", p.old);
    let a = eventually(&format!("the cancel of {}", p.old), 90, || async {
        store
            .action_by_key(&key)
            .await
            .ok()
            .flatten()
            .filter(|a| a.state.is_terminal())
    })
    .await;
    assert_eq!(a.state, ActionState::Done, "{a:#?}");
    let log = w.entries(&format!("/v1/runs/{}/cancel", p.old));
    assert_eq!(
        log.iter().filter(|e| e.status == 200).count(),
        1,
        "{log:#?}"
    );
    assert_eq!(
        w.sim.run(&p.old).unwrap().completion_state.as_str(),
        "CANCELED"
    );
}

/// Waits (the child's output is read by another thread) until the bot logged `what`.
async fn logged(bot: &ChildBot, what: &str) {
    eventually(&format!("the log line {what:?}"), 30, || async {
        bot.log_text().contains(what).then_some(())
    })
    .await;
}

async fn healthy(w: &World, bot: &ChildBot) {
    let r = w.http.get(bot.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200, "the process is alive and answering");
}

// ---------------------------------------------------------------------------------------
// Locked beyond the busy timeout

#[tokio::test]
async fn a_database_locked_by_another_process_gets_503_then_recovers() {
    let w = World::sqlite(SUPERSEDE, Env::default()).await;
    let first = pair(&w, "feat/l1");
    let second = pair(&w, "feat/l2");
    let bot = w.serve().await;
    // Acknowledged before the fault (its processing may run into the lock: it is retried).
    assert_eq!(
        currents_hook(&w, &bot, "RUN_START", &first.new)
            .await
            .status(),
        202
    );

    // Another process takes the write lock and keeps it past the bot's busy timeout (5 s).
    use sqlx::Connection as _;
    let mut locker = sqlx::SqliteConnection::connect(&w.store_url())
        .await
        .unwrap();
    sqlx::raw_sql("BEGIN EXCLUSIVE")
        .execute(&mut locker)
        .await
        .unwrap();
    let r = currents_hook(&w, &bot, "RUN_START", &second.new).await;
    assert_eq!(
        r.status(),
        503,
        "not acknowledged while the store cannot commit"
    );
    let body = r.text().await.unwrap();
    assert!(body.contains("retry later"), "{body}");
    healthy(&w, &bot).await;
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut locker)
        .await
        .unwrap();
    drop(locker);

    // The sender delivers the event again: accepted now, and processed.
    assert_eq!(
        currents_hook(&w, &bot, "RUN_START", &second.new)
            .await
            .status(),
        202
    );
    let store = w.store().await;
    cancelled_once(&w, &store, &first).await;
    cancelled_once(&w, &store, &second).await;
    logged(&bot, "cannot store webhook event").await;
    bot.kill().await;
}

/// A store error that no retry mends (here a constraint: a trigger another process put
/// on the table refuses every new event, as a damaged file or a broken schema would) is
/// a 500, not a 503 asking the sender to retry, and never a 2xx; a lock is a 503 with
/// `Retry-After`.
#[tokio::test]
async fn a_store_error_no_retry_mends_is_a_500_not_a_2xx_or_503() {
    let w = World::sqlite(SUPERSEDE, Env::default()).await;
    let p = pair(&w, "feat/c1");
    let bot = w.serve().await;
    use sqlx::Connection as _;
    let mut other = sqlx::SqliteConnection::connect(&w.store_url())
        .await
        .unwrap();
    sqlx::raw_sql(
        "CREATE TRIGGER refuse_events BEFORE INSERT ON deliveries \
         BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
    )
    .execute(&mut other)
    .await
    .unwrap();
    let r = currents_hook(&w, &bot, "RUN_START", &p.new).await;
    assert_eq!(r.status(), 500, "a store failure no retry mends");
    assert!(r.headers().get("retry-after").is_none());
    let body = r.text().await.unwrap();
    assert!(body.contains("event store failed"), "{body}");
    logged(&bot, "cannot store webhook event").await;

    // A lock is a 503 with Retry-After.
    sqlx::raw_sql("DROP TRIGGER refuse_events; BEGIN EXCLUSIVE")
        .execute(&mut other)
        .await
        .unwrap();
    let r = currents_hook(&w, &bot, "RUN_START", &p.new).await;
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.headers().get("retry-after").and_then(|v| v.to_str().ok()),
        Some("5")
    );
    sqlx::raw_sql("ROLLBACK").execute(&mut other).await.unwrap();
    drop(other);

    // Mended: delivered again, accepted and acted on.
    assert_eq!(
        currents_hook(&w, &bot, "RUN_START", &p.new).await.status(),
        202
    );
    let store = w.store().await;
    cancelled_once(&w, &store, &p).await;
    healthy(&w, &bot).await;
    bot.kill().await;
}

/// A value of the child's `/metrics` (`None` when the series is absent).
async fn metric(w: &World, bot: &ChildBot, series: &str) -> Option<f64> {
    let text = w
        .http
        .get(bot.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Finding: the 500 of a store error no retry mends was counted twice in
/// `runwarden_webhooks_total`: by the handler, and again by the router's layer that
/// counts the 500 of a panic. One webhook, one count.
#[tokio::test]
async fn a_webhooks_500_from_the_store_is_counted_once() {
    let w = World::sqlite(SUPERSEDE, Env::default()).await;
    let p = pair(&w, "feat/c2");
    let bot = w.serve().await;
    use sqlx::Connection as _;
    let mut other = sqlx::SqliteConnection::connect(&w.store_url())
        .await
        .unwrap();
    sqlx::raw_sql(
        "CREATE TRIGGER refuse_events BEFORE INSERT ON deliveries \
         BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
    )
    .execute(&mut other)
    .await
    .unwrap();
    let series = "runwarden_webhooks_total{source=\"currents\",status=\"500\"}";
    assert_eq!(metric(&w, &bot, series).await, None);
    let r = currents_hook(&w, &bot, "RUN_START", &p.new).await;
    assert_eq!(r.status(), 500, "a store failure no retry mends");
    assert_eq!(metric(&w, &bot, series).await, Some(1.0));
    bot.kill().await;
}

/// Finding: `runwarden_store_up` was 1 as soon as the first of the store gauges' queries
/// answered, whatever the others did. Here only the last (decisions by outcome) fails:
/// its table is gone, renamed by another process. The store is not up, and the gauges
/// that were read are still shown.
#[tokio::test]
async fn the_store_is_not_up_when_a_later_gauge_query_fails() {
    let w = World::sqlite(SUPERSEDE, Env::default()).await;
    let bot = w.serve().await;
    use sqlx::Connection as _;
    let mut other = sqlx::SqliteConnection::connect(&w.store_url())
        .await
        .unwrap();
    sqlx::raw_sql("ALTER TABLE decisions RENAME TO decisions_gone")
        .execute(&mut other)
        .await
        .unwrap();
    // The store gauges are first read by this scrape (none before it).
    assert_eq!(
        metric(&w, &bot, "runwarden_queue_depth").await,
        Some(0.0),
        "the first query answered"
    );
    assert_eq!(metric(&w, &bot, "runwarden_store_up").await, Some(0.0));
    assert_eq!(
        metric(&w, &bot, "runwarden_events_pending").await,
        Some(0.0)
    );
    bot.kill().await;
}

// ---------------------------------------------------------------------------------------
// Read-only

/// Makes the store file read-only for the bot and returns the store URL it should use:
/// the file is made read-only (0444) and, where the permission is not enforced (root),
/// opened with `mode=ro` as well — what SQLite does by itself with a file it cannot
/// open for writing.
fn make_read_only(w: &World) -> String {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&w.db, std::fs::Permissions::from_mode(0o444)).unwrap();
    let enforced = std::fs::OpenOptions::new().write(true).open(&w.db).is_err();
    if enforced {
        w.store_url()
    } else {
        format!("{}?mode=ro", w.store_url())
    }
}

fn make_writable(w: &World) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&w.db, std::fs::Permissions::from_mode(0o644)).unwrap();
}

#[tokio::test]
async fn a_read_only_database_gets_503_and_loses_nothing_acknowledged() {
    let w = World::sqlite(SUPERSEDE, Env::default()).await;
    let first = pair(&w, "feat/r1");
    let second = pair(&w, "feat/r2");
    // The first event is acknowledged, but cannot be processed yet (its run cannot be
    // read: the API answers 503 until the end of the test's fault).
    let api_down = w.sim.inject_fault(
        Fault::status(503)
            .on("GET", format!("/v1/runs/{}", first.new))
            .always(),
    );
    let bot = w.serve().await;
    assert_eq!(
        currents_hook(&w, &bot, "RUN_START", &first.new)
            .await
            .status(),
        202
    );
    let (status, _) = bot.terminate(Duration::from_secs(60)).await;
    assert!(status.success());
    {
        let store = w.store().await;
        assert_eq!(store.count_unprocessed().await.unwrap(), 1);
        store.close().await;
    }

    // Restart on a read-only database.
    let url = make_read_only(&w);
    w.write_config_with(SUPERSEDE, &w.sim.currents_url(), &url);
    let bot = w.serve().await;
    let r = currents_hook(&w, &bot, "RUN_START", &second.new).await;
    assert_eq!(r.status(), 503, "a read-only store acknowledges nothing");
    healthy(&w, &bot).await;
    let (status, logs) = bot.terminate(Duration::from_secs(60)).await;
    assert!(status.success(), "{logs:#?}");

    // Writable again, the API back: the acknowledged event is processed, the repeated
    // delivery of the refused one is accepted and processed.
    make_writable(&w);
    w.write_config(SUPERSEDE, &w.sim.currents_url());
    w.sim.remove_fault(api_down);
    let bot = w.serve().await;
    assert_eq!(
        currents_hook(&w, &bot, "RUN_START", &second.new)
            .await
            .status(),
        202
    );
    let store = w.store().await;
    cancelled_once(&w, &store, &first).await;
    cancelled_once(&w, &store, &second).await;
    bot.kill().await;
}

// ---------------------------------------------------------------------------------------
// Disk full

#[cfg(target_os = "linux")]
fn set_file_size_limit(pid: i32, bytes: Option<u64>) {
    let lim = libc::rlimit {
        rlim_cur: bytes.unwrap_or(libc::RLIM_INFINITY),
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: prlimit(2) on our own child's pid with a valid rlimit; no old value read.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_FSIZE, &lim, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_full_disk_gets_503_then_recovers_when_space_is_back() {
    use std::os::unix::process::CommandExt as _;
    let w = World::sqlite(SUPERSEDE, Env::default()).await;
    let first = pair(&w, "feat/f1");
    let second = pair(&w, "feat/f2");
    let mut cmd = w.command(&["serve"]);
    // SAFETY: only async-signal-safe calls between fork and exec: signal(2). A write past
    // the size limit then fails with EFBIG instead of killing the process.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
    let bot = ChildBot::spawn(cmd).await;
    assert_eq!(
        currents_hook(&w, &bot, "RUN_START", &first.new)
            .await
            .status(),
        202
    );
    let store = w.store().await;
    cancelled_once(&w, &store, &first).await;

    // No room at all: any write that reaches past the first byte of a file fails. (A
    // limit just above the write-ahead log's size would not do: after a checkpoint the
    // log is rewritten from its start without growing.)
    set_file_size_limit(bot.pid(), Some(1));
    let r = currents_hook(&w, &bot, "RUN_START", &second.new).await;
    assert_eq!(r.status(), 503, "a full disk acknowledges nothing");
    healthy(&w, &bot).await;
    let r = currents_hook(&w, &bot, "RUN_START", &second.new).await;
    assert_eq!(r.status(), 503, "still full");
    // SQLite reports the refused write as SQLITE_FULL (a short write) or SQLITE_IOERR_WRITE
    // (EFBIG), depending on where it falls; both are "unavailable".
    logged(&bot, "cannot store webhook event").await;
    let logs = bot.log_text();
    assert!(
        logs.contains("disk is full") || logs.contains("disk I/O error"),
        "{logs}"
    );

    // Space is back: the same event is accepted and processed, by the same process.
    set_file_size_limit(bot.pid(), None);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        let s = currents_hook(&w, &bot, "RUN_START", &second.new)
            .await
            .status();
        if s != 503 || tokio::time::Instant::now() > deadline {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status, 202, "{}", bot.log_text());
    cancelled_once(&w, &store, &second).await;
    assert_eq!(store.count_unprocessed().await.unwrap(), 0);
    bot.kill().await;
}

// ---------------------------------------------------------------------------------------
// Locked when an action's outcome is written

/// The cancel reached Currents, then its outcome could not be written (the store locked by
/// another process past the busy timeout). The outcome is written again once the lock is
/// gone, rather than left to the action's lease (60 s), after which the cancel would be
/// sent a second time.
#[tokio::test]
async fn an_outcome_the_locked_store_refused_is_written_once_the_lock_is_gone() {
    outcome_written_once_the_lock_is_gone(SUPERSEDE, "cannot record the action outcome").await;
}

/// The same with a summary rule: the run's end (an event for the summaries, stored
/// before the outcome) meets the lock first, and is written again too.
#[tokio::test]
async fn a_run_end_event_the_locked_store_refused_is_written_once_the_lock_is_gone() {
    let rules = format!(
        "{SUPERSEDE}\n[[rules]]\nname = \"sum\"\nkind = \"summary\"\nevents = [\"RUN_CANCELED\"]\n"
    );
    outcome_written_once_the_lock_is_gone(&rules, "cannot store the run's end for its summaries")
        .await;
}

async fn outcome_written_once_the_lock_is_gone(rules: &str, blocked: &str) {
    let w = World::sqlite(rules, Env::default()).await;
    let p = pair(&w, "feat/o1");
    let cancel = format!("/v1/runs/{}/cancel", p.old);
    // The cancel is held for 2 s at the simulator: the lock is taken meanwhile.
    let held = w.sim.inject_fault(
        runwarden::simulator::Fault::new(runwarden::simulator::FaultKind::Latency { ms: 2000 })
            .on("PUT", &cancel),
    );
    let bot = w.serve().await;
    assert_eq!(
        currents_hook(&w, &bot, "RUN_START", &p.new).await.status(),
        202
    );
    eventually("the cancel to reach the simulator", 30, || async {
        (!w.sim.faults().iter().any(|f| f.id == held)).then_some(())
    })
    .await;

    use sqlx::Connection as _;
    let mut locker = sqlx::SqliteConnection::connect(&w.store_url())
        .await
        .unwrap();
    sqlx::raw_sql("BEGIN EXCLUSIVE")
        .execute(&mut locker)
        .await
        .unwrap();
    // The cancel completes; its outcome meets the lock past the busy timeout (5 s).
    logged(&bot, blocked).await;
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut locker)
        .await
        .unwrap();
    drop(locker);

    let store = w.store().await;
    let key = format!("cancel:{}", p.old);
    // Well before the lease (60 s) would run out.
    let a = eventually("the outcome to be written", 20, || async {
        store
            .action_by_key(&key)
            .await
            .ok()
            .flatten()
            .filter(|a| a.state.is_terminal())
    })
    .await;
    assert_eq!(a.state, ActionState::Done, "{a:#?}");
    let log = bot.log_text();
    // (The verification may find the run still in progress and send the cancel again,
    // answered 422 "already cancelled": that is the cancel's own retry, not a repeat.)
    let cancels = w.entries(&cancel);
    assert_eq!(
        cancels.iter().filter(|e| e.status == 200).count(),
        1,
        "the cancel took effect once: {cancels:#?}\n{log}"
    );
    assert!(
        log.contains(&format!("{blocked} yet")),
        "the failed write is logged as one to be repeated: {log}"
    );
    assert!(!log.contains("after its lease"), "not given up: {log}");
    bot.kill().await;
}
