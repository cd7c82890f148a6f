//! `runwarden sweep` beside `serve` on one store (a SQLite file, or a PostgreSQL database
//! with `RUNWARDEN_TEST_STORE=postgres`): one processor at a time consumes the stored
//! events, by the processor lease.
//!
//! - A sweep processes its own events, held from `serve`'s processor while it is on them;
//!   the events `serve` stored are `serve`'s: the sweep takes them up only while no
//!   `serve` holds the processor lease (serve down, or only sweeps on the store), and
//!   never waits for them.
//! - `serve` holds the processor lease on every store (SQLite too), and a pass that loses
//!   it stops there.

mod common;

use std::time::Duration;

use common::*;
use runwarden::commands::serve::{PROCESSOR_LEASE, PROCESSOR_LEASE_TTL, ProcessorLease};
use runwarden::simulator::{Fault, FaultKind, SimHandle};

const SUPERSEDE: &str = "[[rules]]\nname = \"cancel-superseded\"\nkind = \"supersede\"\n";

/// A directory with a `rules.toml` for `runwarden sweep` against `sim`'s Currents API and
/// the store at `store_url`, with `rules`.
fn sweep_config(sim: &SimHandle, store_url: &str, rules: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[currents]\napi_url = \"{}\"\nprojects = [\"{PROJECT}\"]\nmax_requests_per_second = 0\n[store]\nurl = \"{store_url}\"\n\n{rules}",
        sim.currents_url(),
    );
    std::fs::write(dir.path().join("rules.toml"), text).unwrap();
    dir
}

/// Runs `runwarden sweep` with the config in `dir` (killed after 60 s: a failure).
async fn sweep(dir: &tempfile::TempDir) -> std::process::Output {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_runwarden"));
    c.arg("--config")
        .arg(dir.path().join("rules.toml"))
        .arg("sweep")
        .env("CURRENTS_API_KEY", "sim-key")
        .env_remove("RUST_LOG")
        .env_remove("GITHUB_TOKEN")
        .kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(60), c.output())
        .await
        .expect("the sweep did not end within 60 s")
        .unwrap()
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// How many requests fault `id` (a zero latency that only counts them) has seen.
fn seen(sim: &SimHandle, id: u64) -> u32 {
    sim.faults()
        .iter()
        .find(|f| f.id == id)
        .map_or(0, |f| f.fired)
}

/// Waits until `app`'s `serve` holds the processor lease: on every store, SQLite too
/// (that is how a sweep tells that a live `serve` consumes the events).
async fn serve_holds_the_lease(app: &TestApp) {
    eventually("serve to hold the processor lease", 10, || async {
        app.bot
            .ctx
            .store
            .lease_holder(PROCESSOR_LEASE)
            .await
            .unwrap()
            .is_some_and(|(h, _)| h == app.bot.ctx.worker_id)
    })
    .await;
}

/// How many events from `source` `app`'s `serve` has processed.
fn processed_by_serve(app: &TestApp, source: &str) -> u64 {
    app.bot.ctx.metrics.get(
        "runwarden_events_processed_total",
        &[("source", source), ("result", "ok")],
    )
}

/// A live `serve` (in-process) is busy with a slow event and has another one queued
/// behind it when a sweep starts on the same store: the sweep reads neither (each
/// Currents read is done once, by `serve`) and does not wait for them.
#[tokio::test(flavor = "multi_thread")]
async fn a_sweep_leaves_the_events_of_a_live_serve_to_it() {
    let app = spawn_app(SUPERSEDE).await;
    serve_holds_the_lease(&app).await;
    let x = app.sim.add_run(run("feat/x", "aaa111", 10)).unwrap().run_id;
    let y = app.sim.add_run(run("feat/y", "bbb222", 5)).unwrap().run_id;
    // `serve`'s read of X takes 8 s; the reads of Y are counted.
    let slow_x = app.sim.inject_fault(
        Fault::new(FaultKind::Latency { ms: 8000 }).on("GET", format!("/v1/runs/{x}")),
    );
    let reads_of_y = app.sim.inject_fault(
        Fault::new(FaultKind::Latency { ms: 0 })
            .on("GET", format!("/v1/runs/{y}"))
            .always(),
    );
    assert_eq!(app.currents_hook("RUN_START", &x).await.status(), 202);
    eventually("serve to be reading X", 10, || async {
        !app.sim.faults().iter().any(|f| f.id == slow_x)
    })
    .await;
    assert_eq!(app.currents_hook("RUN_START", &y).await.status(), 202);

    let dir = sweep_config(&app.sim, &app.store_url, SUPERSEDE);
    let out = sweep(&dir).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // It did not wait for them: `serve` is still on X.
    assert_eq!(processed_by_serve(&app, "currents"), 0, "{}", text(&out));
    assert_eq!(seen(&app.sim, reads_of_y), 0, "{}", text(&out));

    eventually("serve to process X and Y", 30, || async {
        processed_by_serve(&app, "currents") >= 2
    })
    .await;
    assert_eq!(
        seen(&app.sim, reads_of_y),
        1,
        "Y's run is read once, by serve: {}",
        text(&out)
    );
}

/// A live, idle `serve` does not process the poll a sweep on the same store stored and is
/// on (its listing held for seconds): the sweep's own events are held from `serve`'s
/// processor while the sweep runs.
#[tokio::test(flavor = "multi_thread")]
async fn a_live_serve_leaves_a_sweeps_own_events_to_it() {
    let app = spawn_app(SUPERSEDE).await;
    serve_holds_the_lease(&app).await;
    app.sim.add_run(run("feat/x", "aaa111", 10)).unwrap();
    // The sweep's listing of the runs in progress takes 4 s: `serve` reads the store
    // for new events several times meanwhile.
    app.sim.inject_fault(
        Fault::new(FaultKind::Latency { ms: 4000 })
            .on("GET", format!("/v1/projects/{PROJECT}/runs")),
    );
    let dir = sweep_config(&app.sim, &app.store_url, SUPERSEDE);
    let out = sweep(&dir).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        processed_by_serve(&app, "poll"),
        0,
        "serve did not process the sweep's poll"
    );
    // The sweep processed its poll itself, and left nothing held.
    let left = app
        .bot
        .ctx
        .store
        .next_unprocessed(chrono::Utc::now() + chrono::Duration::hours(1), 100)
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:#?}");
}

/// A sweep on a store whose processor lease a live `serve` holds (here: held for it)
/// leaves `serve`'s due event unprocessed and does not wait for it (it exits at once,
/// 0, saying what it left); once no `serve` holds the lease (`serve` down), the next
/// sweep takes the event up, so that it is not left unprocessed for as long as `serve`
/// is down.
#[tokio::test(flavor = "multi_thread")]
async fn a_sweep_takes_up_the_events_of_others_only_while_no_serve_holds_the_lease() {
    let p = prepare_app(AppOptions {
        rules: SUPERSEDE.into(),
        ..AppOptions::default()
    })
    .await;
    let store = p.ctx.store.clone();
    p.sim.add_run(run("feat/a", "a1", 20)).unwrap();
    store
        .insert_delivery(runwarden::store::NewDelivery {
            source: "currents".into(),
            delivery_id: "RUN_FINISH:serve-has-it".into(),
            event: "RUN_FINISH".into(),
            payload: "{}".into(),
            received_at: chrono::Utc::now(),
        })
        .await
        .unwrap();
    assert!(
        store
            .try_acquire_lease(
                PROCESSOR_LEASE,
                "serve-elsewhere",
                Duration::from_secs(600),
                chrono::Utc::now(),
            )
            .await
            .unwrap()
    );
    let dir = sweep_config(&p.sim, &p.store_url, SUPERSEDE);
    let begun = std::time::Instant::now();
    let out = sweep(&dir).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        begun.elapsed() < Duration::from_secs(30),
        "the sweep waited for serve's event: {:?}",
        begun.elapsed()
    );
    let d = store
        .find_delivery("currents", "RUN_FINISH:serve-has-it")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((d.processed_at, d.attempts), (None, 0), "{d:#?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("left for later") && err.contains("1 event"),
        "{err}"
    );
    // The sweep gave back no lease of its own and took none of serve's.
    assert_eq!(
        store
            .lease_holder(PROCESSOR_LEASE)
            .await
            .unwrap()
            .map(|(h, _)| h)
            .as_deref(),
        Some("serve-elsewhere")
    );

    // `serve` is gone: its lease given up (or run out). The next sweep takes the event up.
    assert!(
        store
            .release_lease(PROCESSOR_LEASE, "serve-elsewhere")
            .await
            .unwrap()
    );
    let out = sweep(&dir).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let d = store
        .find_delivery("currents", "RUN_FINISH:serve-has-it")
        .await
        .unwrap()
        .unwrap();
    assert!(d.processed_at.is_some(), "{d:#?}");
    // And gives the lease up after its pass, for a `serve` starting meanwhile.
    assert_eq!(store.lease_holder(PROCESSOR_LEASE).await.unwrap(), None);
}

/// A processor pass that loses the processor lease (another process took it over: this
/// one was paused past its time to live, or could not renew it) stops there, rather than
/// consuming the events beside the new holder.
#[tokio::test]
async fn a_pass_that_loses_the_processor_lease_stops_there() {
    let p = prepare_app(AppOptions {
        rules: SUPERSEDE.into(),
        ..AppOptions::default()
    })
    .await;
    let ctx = p.ctx.clone();
    let mut lease = ProcessorLease::default();
    assert!(lease.hold(&ctx).await);
    // Another process takes the lease over while the pass (one that never ends by
    // itself) goes on.
    let store = ctx.store.clone();
    let me = ctx.worker_id.clone();
    let taker = tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            store.release_lease(PROCESSOR_LEASE, &me).await.unwrap();
            if store
                .try_acquire_lease(
                    PROCESSOR_LEASE,
                    "another-replica",
                    Duration::from_secs(600),
                    chrono::Utc::now(),
                )
                .await
                .unwrap()
            {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "lease never taken");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    taker.await.unwrap();
    let stopped = tokio::time::timeout(
        PROCESSOR_LEASE_TTL,
        lease.while_held(&ctx, std::future::pending::<()>()),
    )
    .await
    .expect("the pass went on after its lease was taken over");
    assert_eq!(stopped, None);
    // No longer held: the next pass waits for the lease.
    assert!(!lease.hold(&ctx).await);
    assert_eq!(
        ctx.store
            .lease_holder(PROCESSOR_LEASE)
            .await
            .unwrap()
            .map(|(h, _)| h)
            .as_deref(),
        Some("another-replica")
    );
}

/// A processor pass whose lease renewals keep failing (the store refuses them: here a
/// trigger on the lease table, as a damaged file would) stops before the lease can have
/// run out, as `Store::hold_lease_while` stops its work, rather than going on past it
/// while another process may take the lease over; not at the first failure, while most
/// of the lease is left. The next pass takes the lease again before it consumes events.
/// SQLite (the trigger).
#[tokio::test]
async fn a_pass_whose_lease_renewals_keep_failing_stops_before_the_lease_runs_out() {
    let p = prepare_app(AppOptions {
        rules: SUPERSEDE.into(),
        store_dir: Some(tempfile::tempdir().unwrap()),
        ..AppOptions::default()
    })
    .await;
    let ctx = p.ctx.clone();
    let mut lease = ProcessorLease::default();
    assert!(lease.hold(&ctx).await);
    let (holder, expires) = ctx
        .store
        .lease_holder(PROCESSOR_LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(holder, ctx.worker_id);
    use sqlx::Connection as _;
    let mut other = sqlx::SqliteConnection::connect(&p.store_url).await.unwrap();
    sqlx::raw_sql(
        "CREATE TRIGGER refuse_lease_inserts BEFORE INSERT ON leases \
         BEGIN SELECT RAISE(ABORT, 'refused by the test'); END; \
         CREATE TRIGGER refuse_lease_updates BEFORE UPDATE ON leases \
         BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
    )
    .execute(&mut other)
    .await
    .unwrap();
    let begun = tokio::time::Instant::now();
    let stopped = tokio::time::timeout(
        PROCESSOR_LEASE_TTL + Duration::from_secs(5),
        lease.while_held(&ctx, std::future::pending::<()>()),
    )
    .await
    .expect("the pass went on although its lease could not be renewed");
    assert_eq!(stopped, None);
    assert!(
        chrono::Utc::now() < expires,
        "stopped only once the lease had run out ({expires})"
    );
    assert!(
        begun.elapsed() > PROCESSOR_LEASE_TTL / 3,
        "stopped at the first failed renewal, with most of the lease left: {:?}",
        begun.elapsed()
    );
    // The next pass does not count on the old renewal: it takes the lease first.
    assert!(!lease.hold(&ctx).await);
    sqlx::raw_sql("DROP TRIGGER refuse_lease_inserts; DROP TRIGGER refuse_lease_updates")
        .execute(&mut other)
        .await
        .unwrap();
    assert!(lease.hold(&ctx).await);
}
