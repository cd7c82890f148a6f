//! Intake under faults, end to end: the real processor, store and simulator (and the
//! real binary for `sweep`), with faults injected into the simulator's Currents API.
//!
//! - a poll that fails after its listings does not move the next poll's look-back;
//! - a retention sweep goes on without a project refused for good;
//! - a 401, a 403 or a project listing's 404 delays an event instead of dropping it;
//! - polls piled up behind a busy processor leave their work to the newest;
//! - only runs an auto timeout can apply to cost a history listing;
//! - a huge `poll_interval` overflows nothing.
//!
//! Every wait polls with a deadline.

mod common;

use std::time::Duration;

use chrono::Utc;
use common::*;
use runwarden::intake::poller::slot_of;
use runwarden::intake::processor::{SUPERSEDED_POLL, process_only, process_pending};
use runwarden::server::AppContext;
use runwarden::simulator::Fault;
use runwarden::store::{Delivery, NewDelivery};
use serde_json::json;

const SUMMARY: &str = "[[rules]]\nname = \"pr-summary\"\nkind = \"summary\"\n";
const SUPERSEDE: &str = "[[rules]]\nname = \"cancel-superseded\"\nkind = \"supersede\"\n[rules.match]\nbranches = [\"*\", \"!main\"]\n";

/// The listing path of a project's runs.
fn listing(project: &str) -> String {
    format!("/v1/projects/{project}/runs")
}

/// Currents GET requests the simulator served so far.
fn gets(sim: &runwarden::simulator::SimHandle) -> u64 {
    sim.request_counts()
        .get("currents GET")
        .copied()
        .unwrap_or(0)
}

/// Stores the poller's event of `slot`, received at `received_at`.
async fn store_poll(ctx: &AppContext, slot: i64, received_at: chrono::DateTime<Utc>) {
    ctx.store
        .insert_delivery(NewDelivery {
            source: "poll".into(),
            delivery_id: format!("poll:{slot}"),
            event: "poll".into(),
            payload: "{}".into(),
            received_at,
        })
        .await
        .unwrap();
}

async fn delivery(ctx: &AppContext, source: &str, id: &str) -> Delivery {
    ctx.store
        .find_delivery(source, id)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no delivery {source} {id}"))
}

/// Waits until the stored delivery `(source, id)` satisfies `f`; panics after `secs`.
async fn wait_delivery<F: Fn(&Delivery) -> bool>(
    ctx: &AppContext,
    source: &str,
    id: &str,
    secs: u64,
    f: F,
) -> Delivery {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(d) = ctx.store.find_delivery(source, id).await.unwrap()
            && f(&d)
        {
            return d;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for delivery {source} {id}: {:#?}",
            ctx.store.find_delivery(source, id).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The delivery id of a webhook answered 202.
async fn accepted(r: reqwest::Response) -> String {
    assert_eq!(r.status(), 202);
    let body: serde_json::Value = r.json().await.unwrap();
    body["delivery"].as_str().unwrap().to_string()
}

fn last_poll(ctx: &AppContext) -> Option<chrono::DateTime<Utc>> {
    *ctx.last_poll.lock().unwrap()
}

fn set_last_poll(ctx: &AppContext, at: chrono::DateTime<Utc>) {
    *ctx.last_poll.lock().unwrap() = Some(at);
}

/// Finding 1. The last poll that covered every project and was committed was 20 minutes
/// ago; a run started and ended 10 minutes ago, unseen. Two polls in a row then fail
/// after their listings (the history listing of `max_duration = "auto"` answers 503):
/// neither moves the look-back, so the next good poll still reaches back 20 minutes and
/// summarises the run. (Had a failed poll moved it to its own time, the next one would
/// look back only its 2 minutes.)
#[tokio::test]
async fn polls_that_fail_after_their_listings_do_not_move_the_look_back() {
    let rules = format!(
        "{SUMMARY}\n[[rules]]\nname = \"auto\"\nkind = \"timeout\"\nmax_duration = \"auto\"\nfallback = \"2h\"\n"
    );
    let PreparedApp {
        sim,
        ctx,
        dir: _dir,
        ..
    } = prepare_app(AppOptions {
        rules,
        poll_interval: "1s",
        client_retries: Some((1, Duration::from_millis(10))),
        ..AppOptions::default()
    })
    .await;
    let slot = slot_of(Utc::now(), Duration::from_secs(1));
    // A good poll (nothing to see): committed, it sets the look-back's start.
    store_poll(&ctx, slot, Utc::now()).await;
    process_pending(&ctx).await.unwrap();
    assert!(last_poll(&ctx).is_some(), "the good poll set the look-back");
    // As if it had been 20 minutes ago.
    let good = Utc::now() - chrono::Duration::minutes(20);
    set_last_poll(&ctx, good);
    let gap = sim
        .add_run(ended("feat/gap", "9a95ha", 10, "failed"))
        .unwrap()
        .run_id;
    // In progress on a branch without history: each poll lists its history.
    sim.add_run(run("feat/live", "11ve5ha", 1)).unwrap();
    for (i, failing) in [slot + 1, slot + 2].into_iter().enumerate() {
        // The listing of runs in progress and of recent runs go through; the history
        // listing after them fails.
        let fault = sim.inject_fault(Fault::status(503).on("GET", listing(PROJECT)).after(2));
        store_poll(&ctx, failing, Utc::now()).await;
        process_pending(&ctx).await.unwrap();
        assert!(
            sim.faults().iter().all(|f| f.id != fault),
            "poll {i}: the history listing failed"
        );
        let d = delivery(&ctx, "poll", &format!("poll:{failing}")).await;
        let outcome = d.outcome.clone().unwrap_or_default();
        assert!(
            outcome.contains("503") && outcome.contains("the next poll does its work"),
            "poll {i}: {d:#?}"
        );
        assert_eq!(last_poll(&ctx), Some(good), "poll {i} moved the look-back");
    }
    let before_good = Utc::now();
    store_poll(&ctx, slot + 3, Utc::now()).await;
    process_pending(&ctx).await.unwrap();
    let audit = ctx.store.audit(None, None, 1000).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|e| e.action == "summarize" && e.run_id == gap),
        "the run that ended during the failed polls is summarised: {audit:#?}"
    );
    assert!(
        last_poll(&ctx).is_some_and(|t| t >= before_good),
        "the good poll, committed, moves the look-back"
    );
}

/// Finding 2 (`serve`). A retention sweep over three projects, one answering 404 and one
/// 403 for good: the third is swept and its old runs deleted; the event's outcome names
/// the projects skipped (`skipped: …`, which `runwarden sweep` reports and exits 1 for).
#[tokio::test]
async fn a_retention_sweep_skips_projects_refused_for_good_and_deletes_in_the_others() {
    let app = spawn_app_with(AppOptions {
        rules: "[[rules]]\nname = \"old\"\nkind = \"retention\"\nolder_than = \"30d\"\n".into(),
        more_projects: &["p2", "p3"],
        client_retries: Some((1, Duration::from_millis(10))),
        ..AppOptions::default()
    })
    .await;
    let old: Vec<String> = ["feat/a", "feat/b"]
        .iter()
        .map(|b| {
            app.sim
                .add_run(ended(b, &format!("{b}-sha"), 60 * 24 * 45, "passed"))
                .unwrap()
                .run_id
        })
        .collect();
    let mut elsewhere = ended("feat/c", "c-sha", 60 * 24 * 45, "passed");
    elsewhere.project = Some("p2".into());
    let elsewhere = app.sim.add_run(elsewhere).unwrap().run_id;
    app.sim
        .inject_fault(Fault::status(404).on("GET", listing("p2")).always());
    app.sim
        .inject_fault(Fault::status(403).on("GET", listing("p3")).always());
    let r = app.admin_sweep("old").await;
    assert_eq!(r.status(), 202);
    let body: serde_json::Value = r.json().await.unwrap();
    let id = body["delivery"].as_str().unwrap().to_string();
    app.wait_audit("both old runs of the project listed deleted", 20, |a| {
        old.iter().all(|id| {
            a.iter()
                .any(|e| e.run_id == *id && e.action == "delete" && e.outcome.as_str() == "done")
        })
    })
    .await;
    let d = delivery(&app.bot.ctx, "schedule", &id).await;
    let outcome = d.outcome.clone().unwrap_or_default();
    assert!(
        outcome.starts_with("skipped: ")
            && outcome.contains("project p2")
            && outcome.contains("404")
            && outcome.contains("project p3")
            && outcome.contains("403")
            && outcome.ends_with("2 decision(s) for the other projects"),
        "{d:#?}"
    );
    assert_eq!(d.attempts, 0, "not retried: {d:#?}");
    assert!(app.sim.run(&elsewhere).is_some());
    let mut deleted: Vec<String> = app.mutations();
    deleted.sort();
    let mut want: Vec<String> = old
        .iter()
        .map(|id| format!("DELETE /v1/runs/{id}"))
        .collect();
    want.sort();
    assert_eq!(deleted, want);
}

/// Finding 2: a transient failure of one project's listing still retries the whole
/// sweep, which then sweeps every project and skips none.
#[tokio::test]
async fn a_transient_listing_failure_retries_the_whole_retention_sweep() {
    let app = spawn_app_with(AppOptions {
        rules: "[[rules]]\nname = \"old\"\nkind = \"retention\"\nolder_than = \"30d\"\n".into(),
        more_projects: &["p2"],
        client_retries: Some((1, Duration::from_millis(10))),
        ..AppOptions::default()
    })
    .await;
    let mut r2 = ended("feat/c", "c-sha", 60 * 24 * 45, "passed");
    r2.project = Some("p2".into());
    let r2 = app.sim.add_run(r2).unwrap().run_id;
    let r1 = app
        .sim
        .add_run(ended("feat/a", "a-sha", 60 * 24 * 45, "passed"))
        .unwrap()
        .run_id;
    app.sim
        .inject_fault(Fault::status(503).on("GET", listing("p2")));
    let r = app.admin_sweep("old").await;
    let body: serde_json::Value = r.json().await.unwrap();
    let id = body["delivery"].as_str().unwrap().to_string();
    let d = wait_delivery(&app.bot.ctx, "schedule", &id, 20, |d| {
        d.processed_at.is_some()
    })
    .await;
    assert_eq!(d.attempts, 1, "{d:#?}");
    assert_eq!(d.outcome.as_deref(), Some("2 decision(s)"), "{d:#?}");
    app.wait_audit("both deleted", 20, |a| {
        [&r1, &r2].iter().all(|id| {
            a.iter()
                .any(|e| e.run_id == **id && e.outcome.as_str() == "done")
        })
    })
    .await;
}

/// Finding 2 (`runwarden sweep`, the real binary): a configured project Currents does
/// not know (404) is skipped, the other one's old runs are deleted, and the sweep exits 1
/// naming the project it skipped.
#[tokio::test(flavor = "multi_thread")]
async fn sweep_deletes_in_the_projects_it_can_list_and_exits_1_naming_the_one_skipped() {
    let sim = runwarden::simulator::spawn(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        runwarden::simulator::SimConfig::default(),
    )
    .await
    .unwrap();
    sim.add_project(runwarden::simulator::NewProject {
        project_id: Some(PROJECT.into()),
        repo: Some(REPO.into()),
        ..Default::default()
    })
    .unwrap();
    let old = sim
        .add_run(ended("feat/a", "a-sha", 60 * 24 * 45, "passed"))
        .unwrap()
        .run_id;
    let dir = tempfile::tempdir().unwrap();
    let store = match postgres::selected_database().await {
        Some(url) => url,
        None => format!("sqlite://{}", dir.path().join("rw.db").display()),
    };
    let text = format!(
        "[currents]\napi_url = \"{}\"\nprojects = [\"ghost\", \"{PROJECT}\"]\nmax_requests_per_second = 0\n[store]\nurl = \"{store}\"\n\n[[rules]]\nname = \"old\"\nkind = \"retention\"\nolder_than = \"30d\"\n",
        sim.currents_url(),
    );
    let config = dir.path().join("rules.toml");
    std::fs::write(&config, text).unwrap();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_runwarden"))
            .arg("--config")
            .arg(config)
            .arg("sweep")
            .env("CURRENTS_API_KEY", "sim-key")
            .env_remove("RUST_LOG")
            .env_remove("GITHUB_TOKEN")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("the rules were evaluated without project ghost") && stderr.contains("404"),
        "{stderr}"
    );
    let muts: Vec<String> = sim
        .mutation_log()
        .into_iter()
        .map(|e| format!("{} {}", e.method, e.path))
        .collect();
    assert_eq!(
        muts,
        [format!("DELETE /v1/runs/{old}")],
        "{stdout}\n{stderr}"
    );
}

/// Finding 3. A push arrives while the API key is being rotated: the branch's listing
/// answers 401 once. The push is retried (not skipped for good) and cancels the run of
/// the old commit.
#[tokio::test]
async fn a_401_during_a_key_rotation_delays_a_push_instead_of_dropping_it() {
    let app = spawn_app(SUPERSEDE).await;
    let old = app.sim.add_run(run("feat/y", "aaa111", 5)).unwrap().run_id;
    app.sim
        .inject_fault(Fault::status(401).on("GET", listing(PROJECT)));
    let push = json!({
        "ref": "refs/heads/feat/y", "before": "aaa111", "after": "ddd444", "deleted": false,
        "repository": {"full_name": REPO},
        "head_commit": {"timestamp": Utc::now().to_rfc3339()},
    });
    assert_eq!(app.github_hook("push", "rot-1", &push).await.status(), 202);
    let d = wait_delivery(&app.bot.ctx, "github", "rot-1", 20, |d| {
        d.processed_at.is_some()
    })
    .await;
    assert_eq!(d.attempts, 1, "{d:#?}");
    assert_eq!(d.outcome.as_deref(), Some("1 decision(s)"), "{d:#?}");
    let cancel = format!("PUT /v1/runs/{old}/cancel");
    app.wait_for("the cancel", 10, |a| a.mutations().contains(&cancel))
        .await;
}

/// Finding 3. A Currents webhook whose run read answers 403 once, then whose branch
/// listing answers 404 once: both are retried with the event's backoff, and the newer
/// run cancels the older one. A 404 on the run read itself stays final: the event of a
/// run Currents does not know is skipped at once.
#[tokio::test]
async fn a_403_and_a_project_listings_404_are_retried_but_an_unknown_run_is_skipped() {
    let app = spawn_app(SUPERSEDE).await;
    let old = app.sim.add_run(run("feat/x", "aaa111", 10)).unwrap().run_id;
    let new = app.sim.add_run(run("feat/x", "bbb222", 1)).unwrap().run_id;
    app.sim
        .inject_fault(Fault::status(403).on("GET", format!("/v1/runs/{new}")));
    app.sim
        .inject_fault(Fault::status(404).on("GET", listing(PROJECT)));
    let id = accepted(app.currents_hook("RUN_START", &new).await).await;
    let cancel = format!("PUT /v1/runs/{old}/cancel");
    app.wait_for("the cancel", 20, |a| a.mutations().contains(&cancel))
        .await;
    assert!(app.sim.faults().is_empty(), "both faults fired");
    let d = delivery(&app.bot.ctx, "currents", &id).await;
    assert_eq!(d.attempts, 2, "{d:#?}");

    let gone = "f00dcafef00dcafef00dcafe";
    let id = accepted(app.currents_hook("RUN_START", gone).await).await;
    let d = wait_delivery(&app.bot.ctx, "currents", &id, 10, |d| {
        d.processed_at.is_some()
    })
    .await;
    assert_eq!(d.attempts, 0, "{d:#?}");
    assert!(
        d.outcome
            .as_deref()
            .is_some_and(|o| o.starts_with("skipped: ") && o.contains("not found")),
        "{d:#?}"
    );
}

/// Finding 4. Three polls piled up behind a busy processor. The two older ones are
/// marked superseded without a listing, and leave the look-back where the last committed
/// poll (20 minutes ago) left it: the newest then finds a run that started and ended
/// in between, unseen.
#[tokio::test]
async fn piled_up_polls_leave_their_work_to_the_newest_which_keeps_the_look_back() {
    let PreparedApp {
        sim,
        ctx,
        dir: _dir,
        ..
    } = prepare_app(AppOptions {
        rules: SUMMARY.into(),
        poll_interval: "1s",
        client_retries: Some((1, Duration::from_millis(10))),
        ..AppOptions::default()
    })
    .await;
    let good = Utc::now() - chrono::Duration::minutes(20);
    set_last_poll(&ctx, good);
    let between = sim
        .add_run(ended("feat/between", "b37w33n", 10, "failed"))
        .unwrap()
        .run_id;
    let now = Utc::now();
    let slot = slot_of(now, Duration::from_secs(1));
    for (i, s) in [slot - 2, slot - 1, slot].into_iter().enumerate() {
        store_poll(&ctx, s, now - chrono::Duration::seconds(2 - i as i64)).await;
    }
    let before = gets(&sim);
    let older: Vec<(String, String)> = [slot - 2, slot - 1]
        .iter()
        .map(|s| ("poll".to_string(), format!("poll:{s}")))
        .collect();
    assert_eq!(process_only(&ctx, &older).await.unwrap(), 2);
    for (_, id) in &older {
        let d = delivery(&ctx, "poll", id).await;
        assert_eq!(d.outcome.as_deref(), Some(SUPERSEDED_POLL), "{d:#?}");
    }
    assert_eq!(gets(&sim), before, "a superseded poll lists nothing");
    assert_eq!(last_poll(&ctx), Some(good), "nor moves the look-back");
    assert_eq!(
        ctx.metrics.get(
            "runwarden_events_processed_total",
            &[("source", "poll"), ("result", "superseded")]
        ),
        2
    );

    let started = Utc::now();
    assert_eq!(process_pending(&ctx).await.unwrap(), 1);
    let d = delivery(&ctx, "poll", &format!("poll:{slot}")).await;
    assert_eq!(d.outcome.as_deref(), Some("1 decision(s)"), "{d:#?}");
    assert_eq!(
        gets(&sim),
        before + 2,
        "one poll: runs in progress, recent runs"
    );
    let audit = ctx.store.audit(None, None, 1000).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|e| e.action == "summarize" && e.run_id == between),
        "{audit:#?}"
    );
    assert!(last_poll(&ctx).is_some_and(|t| t >= started));
}

/// A newer poll counts only once it is due here: another replica's poller whose clock
/// runs ahead stores the next poll "in the future"; leaving the work to it would leave
/// every poll to one not yet due, for as long as the clocks differ.
#[tokio::test]
async fn a_poll_is_not_superseded_by_one_not_yet_due() {
    let PreparedApp {
        sim,
        ctx,
        dir: _dir,
        ..
    } = prepare_app(AppOptions {
        rules: SUMMARY.into(),
        poll_interval: "60s",
        ..AppOptions::default()
    })
    .await;
    let now = Utc::now();
    let slot = slot_of(now, Duration::from_secs(60));
    store_poll(&ctx, slot - 1, now - chrono::Duration::seconds(30)).await;
    // Stored by a replica whose clock is 5 s ahead: not due before then.
    store_poll(&ctx, slot, now + chrono::Duration::seconds(5)).await;
    let before = gets(&sim);
    let own = [("poll".to_string(), format!("poll:{}", slot - 1))];
    assert_eq!(process_only(&ctx, &own).await.unwrap(), 1);
    let d = delivery(&ctx, "poll", &own[0].1).await;
    assert_ne!(d.outcome.as_deref(), Some(SUPERSEDED_POLL), "{d:#?}");
    assert!(gets(&sim) > before, "the poll listed the projects");
}

/// Finding 5. `max_duration = "auto"` for `feat/watched` only: the webhook of a finished
/// run of that branch, and of a run in progress on another branch, read the run and list
/// no history; a run in progress on `feat/watched` lists it.
#[tokio::test]
async fn only_runs_an_auto_timeout_can_apply_to_cost_a_history_listing() {
    let app = spawn_app(
        "[[rules]]\nname = \"auto\"\nkind = \"timeout\"\nmax_duration = \"auto\"\nfallback = \"1h\"\n[rules.match]\nbranches = [\"feat/watched\"]\n",
    )
    .await;
    let finished = app
        .sim
        .add_run(ended("feat/watched", "f1n15h", 3, "passed"))
        .unwrap()
        .run_id;
    let other = app
        .sim
        .add_run(run("feat/other", "07h3r", 2))
        .unwrap()
        .run_id;
    let watched = app
        .sim
        .add_run(run("feat/watched", "w47ch", 1))
        .unwrap()
        .run_id;
    for (event, id, requests) in [
        ("RUN_FINISH", &finished, 1),
        ("RUN_START", &other, 1),
        ("RUN_START", &watched, 2),
    ] {
        let before = app.currents_gets();
        assert_eq!(app.currents_hook(event, id).await.status(), 202);
        app.wait_run_stored(id).await;
        assert_eq!(
            app.currents_gets(),
            before + requests,
            "{event} of {id}: the run read{}",
            if requests == 2 {
                " and the history listing"
            } else {
                " only"
            }
        );
    }
}

/// Finding 6. A `poll_interval` too large for any sum (u64::MAX seconds; the config
/// bounds it, so the context is given it directly): the poller still polls at start (its
/// lease, its slot, its tick), the poll's look-back saturates instead of overflowing, and
/// the bot stays up.
#[tokio::test]
async fn a_huge_poll_interval_overflows_nothing() {
    let p = prepare_app(AppOptions {
        rules: format!(
            "{SUMMARY}\n[[rules]]\nname = \"stuck\"\nkind = \"timeout\"\nmax_duration = \"2h\"\n"
        ),
        poll_interval: "60s",
        ..AppOptions::default()
    })
    .await;
    let mut ctx = std::sync::Arc::try_unwrap(p.ctx)
        .ok()
        .expect("a fresh context has one owner");
    let mut config = (*ctx.config).clone();
    config.currents.poll_interval = Duration::from_secs(u64::MAX);
    ctx.config = std::sync::Arc::new(config);
    // Before the bot starts: its poller polls at start, and never again.
    let quick = p
        .sim
        .add_run(ended("feat/quick", "9u1ck", 5, "failed"))
        .unwrap()
        .run_id;
    let app = PreparedApp {
        ctx: std::sync::Arc::new(ctx),
        ..p
    }
    .start()
    .await;
    app.wait_for("the first poll committed", 15, |a| {
        a.bot.ctx.last_poll.lock().unwrap().is_some()
    })
    .await;
    let audit = app.bot.ctx.store.audit(None, None, 100).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|e| e.action == "summarize" && e.run_id == quick),
        "{audit:#?}"
    );
    let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200, "no loop panicked");
}

/// A Currents 429 whose `Retry-After` is longer than the client sleeps through (60 s)
/// ends the event's attempt at once, and the event is retried no sooner than the API
/// asked: no request is sent inside the window (before, the client retried every 60 s
/// within a 5-minute `Retry-After`, and the event's own backoff of 1 s would have sent
/// the next attempt at once).
#[tokio::test]
async fn a_long_retry_after_on_a_run_read_delays_the_event_past_it_without_requests() {
    let app = spawn_app(SUPERSEDE).await;
    let new = app.sim.add_run(run("feat/r", "bbb222", 1)).unwrap().run_id;
    app.sim.inject_fault(
        Fault::new(runwarden::simulator::FaultKind::RateLimit {
            status: 429,
            retry_after: Some(300),
            reset_after: None,
        })
        .on("GET", format!("/v1/runs/{new}")),
    );
    let before = gets(&app.sim);
    let sent = Utc::now();
    let id = accepted(app.currents_hook("RUN_START", &new).await).await;
    let d = wait_delivery(&app.bot.ctx, "currents", &id, 20, |d| d.attempts == 1).await;
    assert!(d.processed_at.is_none(), "{d:#?}");
    let wait = d.next_attempt_at - sent;
    assert!(
        wait >= chrono::Duration::seconds(295),
        "retried {wait} after the event instead of after the 300 s asked for: {d:#?}"
    );
    assert!(
        d.last_error.as_deref().is_some_and(|e| e.contains("429")),
        "{d:#?}"
    );
    assert_eq!(
        gets(&app.sim) - before,
        1,
        "one read, not retried inside the window"
    );
}
