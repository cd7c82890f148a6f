//! The poll's look-back across a restart: the start of the last poll that covered every
//! project is kept in the store (the watermark `last-full-poll`), so a process that starts
//! after a downtime makes good the runs that started and finished while nothing polled,
//! which a first poll's few intervals would miss.

mod common;

use common::*;
use runwarden::store::Store;
use runwarden::store::watermarks::LAST_FULL_POLL;

const SUMMARY: &str = "[[rules]]\nname = \"pr-summary\"\nkind = \"summary\"\n";

/// Starts a bot on the SQLite store in `dir` whose simulator holds, before the first poll,
/// a run created 10 minutes ago that has ended (failed), on an open PR.
async fn bot_after_a_downtime(dir: tempfile::TempDir) -> (TestApp, String) {
    let p = prepare_app(AppOptions {
        rules: SUMMARY.into(),
        poll_interval: "1s",
        store_dir: Some(dir),
        ..AppOptions::default()
    })
    .await;
    let during = p
        .sim
        .add_run(ended("feat/downtime", "d0a1e2", 10, "failed"))
        .unwrap();
    let app = p.start().await;
    app.open_pr("feat/downtime", "d0a1e2", 21);
    (app, during.run_id)
}

/// The last full poll before the downtime was 20 minutes ago (as the store recorded it):
/// the first poll after the start looks back to it, and the run that came and went in
/// between is summarised.
#[tokio::test]
async fn after_a_restart_the_first_poll_looks_back_to_the_last_full_poll_the_store_kept() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("runwarden.db").display()
    );
    let before = Store::connect(&url).await.unwrap();
    let last = chrono::Utc::now() - chrono::Duration::minutes(20);
    before
        .advance_watermark(LAST_FULL_POLL, last)
        .await
        .unwrap();
    before.close().await;
    let (app, run_id) = bot_after_a_downtime(dir).await;
    app.wait_audit(
        "the summary of the run that ended during the downtime",
        15,
        |a| {
            a.iter().any(|e| {
                e.action == "summarize" && e.run_id == run_id && e.outcome.as_str() == "done"
            })
        },
    )
    .await;
    assert_eq!(app.sim.comments(Some(REPO), Some(21)).len(), 1);
    // And the bot keeps its own full polls there for the next start.
    let store = &app.bot.ctx.store;
    wait_watermark(store, "the watermark to move past the downtime", |w| {
        w.is_some_and(|w| w > last + chrono::Duration::minutes(19))
    })
    .await;
}

/// Without a full poll recorded (a new store), the first poll looks back only a few
/// intervals (two minutes at least): the same run is not summarised (the control of the
/// test above).
#[tokio::test]
async fn on_a_new_store_the_first_poll_looks_back_only_a_few_minutes() {
    let (app, run_id) = bot_after_a_downtime(tempfile::tempdir().unwrap()).await;
    let store = &app.bot.ctx.store;
    // Three full polls committed, the first one included.
    app.wait_for("three polls", 15, |a| a.currents_gets() >= 6)
        .await;
    wait_watermark(store, "a full poll recorded", |w| w.is_some()).await;
    let audit = store.audit(None, None, 1000).await.unwrap();
    assert!(audit.iter().all(|e| e.run_id != run_id), "{audit:?}");
    assert!(app.sim.comments(Some(REPO), Some(21)).is_empty());
}

/// Waits (10 s at most) until the store's last full poll satisfies `ok`.
async fn wait_watermark(
    store: &Store,
    what: &str,
    ok: impl Fn(Option<chrono::DateTime<chrono::Utc>>) -> bool,
) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let w = store.watermark(LAST_FULL_POLL).await.unwrap();
        if ok(w) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: {w:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
