//! `serve` end to end: webhooks through the real router into the real store, decisions by
//! the rules engine, actions carried out against the simulator.
//!
//! On SQLite by default; `RUNWARDEN_TEST_STORE=postgres` runs every scenario on a fresh
//! PostgreSQL database instead (`.ci/run` runs both; see tests/support/postgres.rs).

mod common;
#[path = "support/sqlite_lock.rs"]
mod sqlite_lock;

use common::*;
use serde_json::json;

const SUPERSEDE: &str = "[[rules]]\nname = \"cancel-superseded\"\nkind = \"supersede\"\n[rules.match]\nbranches = [\"*\", \"!main\"]\n";

#[tokio::test]
async fn a_newer_run_on_the_branch_cancels_the_older_one_once() {
    let app = spawn_app_with(AppOptions {
        rules: SUPERSEDE.into(),
        ..AppOptions::default()
    })
    .await;
    let old = app.sim.add_run(run("feat/x", "aaa111", 10)).unwrap();
    let new = app.sim.add_run(run("feat/x", "bbb222", 1)).unwrap();
    let r = app.currents_hook("RUN_START", &new.run_id).await;
    assert_eq!(r.status(), 202);
    // The same event again is a duplicate: 200 and nothing more.
    let r = app.currents_hook("RUN_START", &new.run_id).await;
    assert_eq!(r.status(), 200);
    let cancel = format!("PUT /v1/runs/{}/cancel", old.run_id);
    app.wait_for("the cancel", 10, |a| a.mutations().contains(&cancel))
        .await;
    let audit = app
        .wait_audit("cancel done", 10, |a| {
            a.iter().any(|e| e.outcome.as_str() == "done")
        })
        .await;
    assert_eq!(audit.len(), 1, "{audit:#?}");
    let e = &audit[0];
    assert_eq!(
        (e.rule.as_str(), e.action.as_str(), e.run_id.as_str()),
        ("cancel-superseded", "cancel", old.run_id.as_str())
    );
    assert!(e.reason.contains(&new.run_id[..8]), "{}", e.reason);
    assert_eq!(app.mutations(), vec![cancel], "exactly one mutating call");
    assert_eq!(
        app.sim.run(&new.run_id).unwrap().completion_state.as_str(),
        "IN_PROGRESS"
    );
    // The cancel went from the processor's transaction straight to the executor (no
    // claim of its own), and was handed out once.
    let metrics = &app.bot.ctx.metrics;
    assert_eq!(metrics.get("runwarden_actions_handed_over_total", &[]), 1);
    let action = app
        .bot
        .ctx
        .store
        .action_by_key(&format!("cancel:{}", old.run_id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(action.claims, 1, "{action:?}");
    // The runs read while deciding were remembered with the decision.
    for id in [&old.run_id, &new.run_id] {
        assert!(
            app.bot.ctx.store.get_run(id).await.unwrap().is_some(),
            "{id}"
        );
    }
}

#[tokio::test]
async fn a_push_supersedes_runs_of_the_old_sha_and_duplicate_deliveries_do_nothing() {
    let app = spawn_app(SUPERSEDE).await;
    let old = app.sim.add_run(run("feat/y", "aaa111", 5)).unwrap();
    let other = app.sim.add_run(run("feat/z", "ccc333", 5)).unwrap();
    // As GitHub sends it: much more than the rules read.
    let message = "fix: the flaky login test ".repeat(200);
    let push = json!({
        "ref": "refs/heads/feat/y", "before": "aaa111", "after": "ddd444", "deleted": false,
        "repository": {"full_name": "acme/web", "id": 1, "description": message},
        "head_commit": {"timestamp": chrono::Utc::now().to_rfc3339(), "message": message},
        "commits": [{"id": "ddd444", "message": message, "added": ["a.rs"]}],
        "sender": {"login": "octocat", "id": 2}
    });
    assert_eq!(app.github_hook("push", "d-1", &push).await.status(), 202);
    assert_eq!(app.github_hook("push", "d-1", &push).await.status(), 200);
    let cancel = format!("PUT /v1/runs/{}/cancel", old.run_id);
    app.wait_for("the cancel", 10, |a| a.mutations().contains(&cancel))
        .await;
    // The store kept the fields the rules read, not the rest of the payload.
    let stored = app
        .bot
        .ctx
        .store
        .find_delivery("github", "d-1")
        .await
        .unwrap()
        .unwrap();
    let kept: serde_json::Value = serde_json::from_str(&stored.payload).unwrap();
    assert_eq!(kept["ref"], "refs/heads/feat/y");
    assert_eq!(kept["after"], "ddd444");
    assert_eq!(kept["repository"], json!({"full_name": "acme/web"}));
    assert!(
        kept.get("commits").is_none() && kept.get("sender").is_none(),
        "{kept}"
    );
    assert!(!stored.payload.contains("flaky"), "{}", stored.payload);
    assert!(stored.payload.len() < 300, "{}", stored.payload.len());
    app.wait_audit("done", 10, |a| {
        a.iter().any(|e| e.outcome.as_str() == "done")
    })
    .await;
    assert_eq!(app.mutations(), vec![cancel]);
    assert_eq!(
        app.sim
            .run(&other.run_id)
            .unwrap()
            .completion_state
            .as_str(),
        "IN_PROGRESS"
    );
}

/// SPEC §4 `on_branch_deleted`: a closed pull request cancels the in-progress runs of its
/// branch only when that branch is the base repository's own. A fork's `main`, closed as a
/// pull request into `acme/web`, is not `acme/web`'s `main`.
#[tokio::test]
async fn a_closed_pull_request_cancels_its_branch_runs_only_when_not_from_a_fork() {
    let app = spawn_app("[[rules]]\nname = \"cancel-superseded\"\nkind = \"supersede\"\n").await;
    let main = app.sim.add_run(run("main", "aaa111", 5)).unwrap();
    let feat = app.sim.add_run(run("feat/pr", "bbb222", 5)).unwrap();
    let closed = |branch: &str, head_repo: serde_json::Value, number: u64| {
        json!({
            "action": "closed", "number": number,
            "pull_request": {
                "number": number, "merged": false, "closed_at": chrono::Utc::now().to_rfc3339(),
                "head": {"ref": branch, "sha": "ccc333", "repo": head_repo},
                "base": {"ref": "main", "repo": {"full_name": REPO}}
            },
            "repository": {"full_name": REPO}
        })
    };
    // From a fork, and from a fork since deleted (`head.repo` null): nothing of acme/web.
    let fork = closed("main", json!({"full_name": "contrib/web", "fork": true}), 7);
    let r = app.github_hook("pull_request", "fork", &fork).await;
    assert_eq!(r.status(), 202);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["status"],
        "ignored"
    );
    let gone = closed("main", serde_json::Value::Null, 8);
    let r = app.github_hook("pull_request", "gone", &gone).await;
    assert_eq!(r.status(), 202);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["status"],
        "ignored"
    );
    // From a branch of acme/web itself (its name in any case): that branch's runs.
    let own = closed(
        "feat/pr",
        json!({"full_name": "Acme/Web", "fork": false}),
        9,
    );
    assert_eq!(
        app.github_hook("pull_request", "own", &own).await.status(),
        202
    );
    let cancel = format!("PUT /v1/runs/{}/cancel", feat.run_id);
    app.wait_for("the cancel", 10, |a| a.mutations().contains(&cancel))
        .await;
    let store = &app.bot.ctx.store;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while store.count_unprocessed().await.unwrap() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "events left unprocessed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let audit = app
        .wait_audit("cancel done", 10, |a| {
            a.iter().any(|e| e.outcome.as_str() == "done")
        })
        .await;
    assert_eq!(audit.len(), 1, "{audit:#?}");
    assert_eq!(audit[0].reason, "pull request #9 closed");
    assert_eq!(app.mutations(), vec![cancel]);
    assert_eq!(
        app.sim.run(&main.run_id).unwrap().completion_state.as_str(),
        "IN_PROGRESS"
    );
}

#[tokio::test]
async fn webhook_auth_and_bad_input_get_the_statuses_of_the_spec() {
    let app = spawn_app(SUPERSEDE).await;
    let url = app.url("/webhooks/github");
    let body = br#"{"zen":"hi"}"#.to_vec();
    // bad signature
    let r = app
        .http
        .post(&url)
        .header("x-github-event", "ping")
        .header("x-github-delivery", "1")
        .header("x-hub-signature-256", "sha256=00")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // missing signature
    let r = app
        .http
        .post(&url)
        .header("x-github-event", "ping")
        .header("x-github-delivery", "1")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // signed but malformed
    let bad = b"{not json".to_vec();
    let r = app
        .http
        .post(&url)
        .header("x-github-event", "push")
        .header("x-github-delivery", "2")
        .header("x-hub-signature-256", sign(&bad))
        .body(bad)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // unhandled event: 202, nothing stored
    let r = app
        .http
        .post(&url)
        .header("x-github-event", "issues")
        .header("x-github-delivery", "3")
        .header("x-hub-signature-256", sign(&body))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(app.bot.ctx.store.count_unprocessed().await.unwrap(), 0);
    // too large
    let big = vec![b' '; 26 * 1024 * 1024];
    let r = app
        .http
        .post(&url)
        .header("x-github-event", "push")
        .header("x-github-delivery", "4")
        .header("x-hub-signature-256", sign(&big))
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    // Currents: wrong secret, stale timestamp, foreign URL, too large
    let curl = app.url("/webhooks/currents");
    let ok = json!({"event":"RUN_FINISH","runUrl":"https://app.currents.dev/run/abc123"});
    let r = app
        .http
        .post(&curl)
        .header("x-webhook-secret", "nope")
        .json(&ok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = app
        .http
        .post(&curl)
        .header("x-webhook-secret", CURRENTS_SECRET)
        .header("x-timestamp", "1600000000000")
        .json(&ok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let foreign = json!({"event":"RUN_FINISH","runUrl":"https://evil.example/run/abc123"});
    let r = app
        .http
        .post(&curl)
        .header("x-webhook-secret", CURRENTS_SECRET)
        .json(&foreign)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let missing = json!({"event":"RUN_FINISH"});
    let r = app
        .http
        .post(&curl)
        .header("x-webhook-secret", CURRENTS_SECRET)
        .json(&missing)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let big = vec![b' '; 2 * 1024 * 1024];
    let r = app
        .http
        .post(&curl)
        .header("x-webhook-secret", CURRENTS_SECRET)
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let r = app
        .http
        .post(&curl)
        .header("x-webhook-secret", CURRENTS_SECRET)
        .json(&json!({"event":"RUN_PAUSED","runUrl":"https://app.currents.dev/run/abc"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert!(app.mutations().is_empty());
    // the process is still healthy
    assert_eq!(
        app.http
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        app.http
            .get(app.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

/// A loop of the bot that panics (a bug) does not leave it half alive: `/readyz` turns
/// 503 at once, `Bot::failed` names the loop (`serve` then shuts down and exits 1), and
/// the other loops still stop cleanly.
#[tokio::test]
async fn a_loop_that_panics_makes_the_bot_unready_and_is_named() {
    let mut app = spawn_app(SUPERSEDE).await;
    let ready = |app: &TestApp| {
        let (http, url) = (app.http.clone(), app.url("/readyz"));
        async move { http.get(url).send().await.unwrap().status() }
    };
    assert_eq!(ready(&app).await, 200);
    app.bot
        .spawn_loop("doomed", async { panic!("a bug in a loop") });
    let failed = tokio::time::timeout(std::time::Duration::from_secs(10), app.bot.failed())
        .await
        .expect("the panic is reported");
    assert_eq!(failed, "doomed");
    assert_eq!(ready(&app).await, 503);
    // The server still answers meanwhile.
    let r = app.github_hook("ping", "after-panic", &json!({})).await;
    assert_eq!(r.status(), 202);
    let TestApp { bot, .. } = app;
    tokio::time::timeout(std::time::Duration::from_secs(10), bot.shutdown())
        .await
        .expect("the other loops stop");
}

/// A client that sends half a request and then nothing cannot hold the shutdown: open
/// connections get `HTTP_SHUTDOWN_GRACE` to finish, then are closed.
#[tokio::test]
async fn a_stalled_client_cannot_hold_the_shutdown_past_its_grace() {
    use tokio::io::AsyncWriteExt;
    let app = spawn_app(SUPERSEDE).await;
    let mut stalled = tokio::net::TcpStream::connect(app.bot.addr).await.unwrap();
    stalled
        .write_all(b"POST /webhooks/github HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // The server has the connection (the status page answers on another one).
    assert_eq!(app.get_text("/healthz").await, "ok");
    let TestApp { bot, .. } = app;
    let started = std::time::Instant::now();
    let grace = runwarden::commands::serve::HTTP_SHUTDOWN_GRACE;
    tokio::time::timeout(grace + std::time::Duration::from_secs(10), bot.shutdown())
        .await
        .expect("the shutdown ends despite the stalled client");
    assert!(started.elapsed() >= grace, "{:?}", started.elapsed());
    drop(stalled);
}

/// `[server] idle_timeout`: a connection that sends half a request and then nothing is
/// closed once it has been idle that long (hyper sets no limit on reading a request's
/// head; before, such a connection stayed open until shutdown). The server goes on
/// serving.
#[tokio::test]
async fn a_connection_idle_past_idle_timeout_is_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app(&format!("[server]\nidle_timeout = \"1s\"\n\n{SUPERSEDE}")).await;
    let mut stalled = tokio::net::TcpStream::connect(app.bot.addr).await.unwrap();
    stalled
        .write_all(b"POST /webhooks/github HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 512];
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), stalled.read(&mut buf))
        .await
        .expect("the server closes the idle connection");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "closed without an answer: {read:?} {:?}",
        String::from_utf8_lossy(&buf)
    );
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    let fresh = reqwest::get(app.url("/healthz")).await.unwrap();
    assert_eq!(fresh.status(), 200);
    // A slow client that keeps sending is not idle: a request written over 2 s, a line
    // every 300 ms, is answered.
    let mut slow = tokio::net::TcpStream::connect(app.bot.addr).await.unwrap();
    let lines: [&[u8]; 7] = [
        b"GET /healthz HTTP/1.1\r\n",
        b"Host: x\r\n",
        b"X-A: 1\r\n",
        b"X-B: 2\r\n",
        b"X-C: 3\r\n",
        b"Connection: close\r\n",
        b"\r\n",
    ];
    for line in lines {
        slow.write_all(line).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        slow.read_to_end(&mut answer),
    )
    .await
    .expect("answered")
    .unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}

#[tokio::test]
async fn webhook_endpoints_without_a_secret_answer_404() {
    let app = spawn_app_with(AppOptions {
        github_secret: false,
        currents_secret: false,
        ..AppOptions::default()
    })
    .await;
    let r = app.github_hook("push", "x", &json!({})).await;
    assert_eq!(r.status(), 404);
    let r = app.currents_hook("RUN_START", "abc").await;
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn dry_run_records_decisions_and_mutates_nothing() {
    let app = spawn_app_with(AppOptions {
        rules: SUPERSEDE.into(),
        top: "dry_run = true".into(),
        ..AppOptions::default()
    })
    .await;
    let old = app.sim.add_run(run("feat/x", "aaa111", 10)).unwrap();
    let new = app.sim.add_run(run("feat/x", "bbb222", 1)).unwrap();
    assert_eq!(
        app.currents_hook("RUN_START", &new.run_id).await.status(),
        202
    );
    let audit = app
        .wait_audit("dry-run decision", 10, |a| !a.is_empty())
        .await;
    assert_eq!(audit[0].outcome.as_str(), "dry_run");
    assert_eq!(audit[0].run_id, old.run_id);
    // give the executor a chance to (wrongly) act
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(app.mutations().is_empty(), "{:?}", app.mutations());
}

#[tokio::test]
async fn the_next_retention_sweep_tries_a_delete_that_failed_for_good_again() {
    let rules = "[[rules]]\nname = \"retention\"\nkind = \"retention\"\nschedule = \"0 3 * * *\"\nolder_than = \"30d\"\n";
    let app = spawn_app(rules).await;
    let r = ended("feat/old", "sha0", 60 * 24 * 40, "passed");
    let id = app.sim.add_run(r).unwrap().run_id;
    // A 400 is final: the first sweep's delete fails for good.
    let fault: runwarden::simulator::Fault = serde_json::from_value(json!({
        "method": "DELETE", "path": format!("/v1/runs/{id}"), "kind": "status", "status": 400, "times": 1
    }))
    .unwrap();
    app.sim.inject_fault(fault);
    let sweep = || async {
        let r = app.admin_sweep("retention").await;
        assert_eq!(r.status(), 202);
    };
    sweep().await;
    app.wait_audit("failed", 10, |a| {
        a.iter().any(|e| e.outcome.as_str() == "failed")
    })
    .await;
    assert!(app.sim.run(&id).is_some());
    // The next sweep decides the same delete (one decision in the store) and its action
    // is queued again.
    sweep().await;
    let audit = app
        .wait_audit("done", 10, |a| {
            a.iter().any(|e| e.outcome.as_str() == "done")
        })
        .await;
    assert_eq!(audit.len(), 1, "{audit:#?}");
    assert!(app.sim.run(&id).is_none(), "deleted on the second sweep");
}

/// A retention rule without `schedule` never runs on its own in `serve`, while a
/// scheduled one fires slot after slot; the admin API sweeps it on demand.
#[tokio::test]
async fn a_retention_rule_without_schedule_waits_for_the_admin_api() {
    let rules = "[[rules]]\nname = \"every-second\"\nkind = \"retention\"\nschedule = \"* * * * * *\"\nolder_than = \"30d\"\n[rules.match]\nbranches = [\"feat/a\"]\n\n[[rules]]\nname = \"on-demand\"\nkind = \"retention\"\nolder_than = \"30d\"\n[rules.match]\nbranches = [\"feat/b\"]\n";
    let app = spawn_app(rules).await;
    let add = |branch: &str, sha: &str| {
        let r = ended(branch, sha, 60 * 24 * 40, "passed");
        app.sim.add_run(r).unwrap().run_id
    };
    let on_demand = add("feat/b", "b0");
    // Two slots of the scheduled rule, one after the other, delete its runs.
    for sha in ["a0", "a1"] {
        let id = add("feat/a", sha);
        app.wait_for("the scheduled sweep", 20, |app| app.sim.run(&id).is_none())
            .await;
    }
    assert!(
        app.sim.run(&on_demand).is_some(),
        "the rule without schedule ran on its own"
    );
    let r = app.admin_sweep("on-demand").await;
    assert_eq!(r.status(), 202);
    app.wait_for("the sweep on demand", 20, |app| {
        app.sim.run(&on_demand).is_none()
    })
    .await;
}

/// An action handed to the executor with its record is leased from the record on, not
/// from when the event was decided: a sweep whose listing took longer than the lease
/// does not leave the executor acting on an action whose lease has already run out
/// (which another replica could claim meanwhile).
#[tokio::test]
async fn an_action_leased_with_its_record_is_leased_from_the_record_on() {
    let rules = "[[rules]]\nname = \"retention\"\nkind = \"retention\"\nolder_than = \"30d\"\n";
    let app = spawn_app_with(AppOptions {
        rules: rules.into(),
        executor: Some(runwarden::actions::ExecutorOptions {
            lease: std::time::Duration::from_secs(2),
            ..Default::default()
        }),
        ..AppOptions::default()
    })
    .await;
    let r = ended("feat/old", "sha1", 60 * 24 * 40, "passed");
    let id = app.sim.add_run(r).unwrap().run_id;
    // The listing takes 3 s, longer than the lease; the delete is held.
    app.sim.inject_fault(
        runwarden::simulator::Fault::new(runwarden::simulator::FaultKind::Latency { ms: 3000 })
            .on("GET", "/v1/projects"),
    );
    let held = app.sim.inject_fault(
        runwarden::simulator::Fault::new(runwarden::simulator::FaultKind::Latency { ms: 600_000 })
            .on("DELETE", format!("/v1/runs/{id}")),
    );
    assert_eq!(app.admin_sweep("retention").await.status(), 202);
    app.wait_for("the delete in flight", 30, |a| {
        !a.sim.faults().iter().any(|f| f.id == held)
    })
    .await;
    let acting = chrono::Utc::now();
    let a = app
        .bot
        .ctx
        .store
        .action_by_key(&format!("delete:{id}"))
        .await
        .unwrap()
        .unwrap();
    let lease_until = a.lease_until.expect("leased");
    // Claimed once: with a lease already run out, the claim loop took it a second time.
    assert_eq!(a.claims, 1, "{a:#?}");
    assert!(
        lease_until > acting,
        "the lease ran out before the action started: {lease_until} <= {acting}; {a:#?}"
    );
}

/// The executor renews the leases of the actions it is still carrying out: an attempt
/// that outlasts its lease (a slow API) is not taken over by another process.
#[tokio::test]
async fn an_action_still_in_flight_keeps_its_lease() {
    let rules = "[[rules]]\nname = \"retention\"\nkind = \"retention\"\nolder_than = \"30d\"\n";
    let lease = std::time::Duration::from_secs(1);
    let app = spawn_app_with(AppOptions {
        rules: rules.into(),
        executor: Some(runwarden::actions::ExecutorOptions {
            lease,
            ..Default::default()
        }),
        ..AppOptions::default()
    })
    .await;
    let r = ended("feat/old", "sha1", 60 * 24 * 40, "passed");
    let id = app.sim.add_run(r).unwrap().run_id;
    let held = app.sim.inject_fault(
        runwarden::simulator::Fault::new(runwarden::simulator::FaultKind::Latency { ms: 600_000 })
            .on("DELETE", format!("/v1/runs/{id}")),
    );
    assert_eq!(app.admin_sweep("retention").await.status(), 202);
    app.wait_for("the delete in flight", 30, |a| {
        !a.sim.faults().iter().any(|f| f.id == held)
    })
    .await;
    let store = &app.bot.ctx.store;
    let key = format!("delete:{id}");
    let first = store.action_by_key(&key).await.unwrap().unwrap();
    let first_until = first.lease_until.expect("leased");
    // Past the first lease: still this worker's, with a later lease, and no other
    // process can claim it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while chrono::Utc::now() < first_until + chrono::Duration::milliseconds(500) {
        assert!(
            std::time::Instant::now() < deadline,
            "the clock stood still"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let other = store
        .claim_due_actions(chrono::Utc::now(), 10, lease, "another-process")
        .await
        .unwrap();
    assert!(other.is_empty(), "taken over: {other:#?}");
    let now = store.action_by_key(&key).await.unwrap().unwrap();
    assert_eq!(now.worker_id, first.worker_id, "{now:#?}");
    assert_eq!(now.claims, 1, "{now:#?}");
    assert!(now.lease_until.unwrap() > first_until, "{now:#?}");
}

/// On PostgreSQL one replica at a time consumes the events, under the processor lease;
/// a pass that outlasts the lease (a slow API) renews it as it goes, so that no other
/// replica starts on the same events meanwhile.
#[tokio::test]
async fn a_processor_pass_longer_than_its_lease_keeps_the_lease() {
    use runwarden::commands::serve::{PROCESSOR_LEASE, PROCESSOR_LEASE_TTL};
    let app = spawn_app_with(AppOptions {
        rules: SUPERSEDE.into(),
        store_url: Some(postgres::fresh_database().await),
        // The slow read is waited for, not abandoned and retried.
        request_timeout: "60s",
        ..AppOptions::default()
    })
    .await;
    let new = app.sim.add_run(run("feat/x", "bbb222", 1)).unwrap();
    let slow = PROCESSOR_LEASE_TTL + std::time::Duration::from_secs(2);
    let held = app.sim.inject_fault(
        runwarden::simulator::Fault::new(runwarden::simulator::FaultKind::Latency {
            ms: slow.as_millis() as u64,
        })
        .on("GET", format!("/v1/runs/{}", new.run_id)),
    );
    assert_eq!(
        app.currents_hook("RUN_START", &new.run_id).await.status(),
        202
    );
    app.wait_for("the slow read", 30, |a| {
        !a.sim.faults().iter().any(|f| f.id == held)
    })
    .await;
    // Past the lease the pass began with: still held, by this replica.
    let past =
        std::time::Instant::now() + PROCESSOR_LEASE_TTL + std::time::Duration::from_millis(500);
    while std::time::Instant::now() < past {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (holder, expires) = app
        .bot
        .ctx
        .store
        .lease_holder(PROCESSOR_LEASE)
        .await
        .unwrap()
        .expect("the lease is taken");
    assert_eq!(holder, app.bot.ctx.worker_id);
    assert!(
        expires > chrono::Utc::now(),
        "the lease ran out during the pass: {expires}"
    );
}

/// Finding: `POST /api/sweep/{rule}` of an orphan rule answered 202 and queued a poll
/// that could do nothing for it (an orphan rule acts on GitHub `workflow_run` events
/// only), while `sweep --rule` of one is a usage error (exit 2). The API now refuses it
/// too, with the same explanation. A summary rule's sweep is still queued: its poll posts
/// the summaries of runs that ended unseen
/// (`a_sweep_of_one_rule_leaves_a_missed_summary_to_the_next_poll`).
#[tokio::test]
async fn the_admin_api_refuses_to_sweep_a_rule_that_acts_on_github_events_only() {
    let rules = "[[rules]]\nname = \"pr-summary\"\nkind = \"summary\"\n\
                 [[rules]]\nname = \"orphans\"\nkind = \"orphan\"\n\
                 [[rules]]\nname = \"cancel-superseded\"\nkind = \"supersede\"\n";
    let app = spawn_app(rules).await;
    let r = app.admin_sweep("orphans").await;
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    let message = body["error"].as_str().unwrap_or_default();
    assert!(
        message.contains("\"orphans\"")
            && message.contains("workflow_run")
            && message.ends_with("not on a sweep"),
        "{body}"
    );
    // Rules that can be swept still are.
    assert_eq!(app.admin_sweep("cancel-superseded").await.status(), 202);
    assert_eq!(app.admin_sweep("pr-summary").await.status(), 202);
}

#[tokio::test]
async fn the_admin_api_needs_the_token_and_sweeps_retention() {
    let rules = "[[rules]]\nname = \"retention\"\nkind = \"retention\"\nschedule = \"0 3 * * *\"\nolder_than = \"30d\"\nkeep_latest = 1\n";
    let app = spawn_app(rules).await;
    let mut ids = Vec::new();
    for i in 0..4 {
        let r = ended("feat/old", &format!("sha{i}"), 60 * 24 * (40 + i), "passed");
        ids.push(app.sim.add_run(r).unwrap().run_id);
    }
    let r = app
        .http
        .post(app.url("/api/sweep/retention"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = app
        .http
        .post(app.url("/api/sweep/retention"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    // The API's error shape, and a hint at what is missing (never the token itself).
    let body: serde_json::Value = r.json().await.unwrap();
    let message = body["error"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("unauthorized") && message.contains("RUNWARDEN_ADMIN_TOKEN"),
        "{body}"
    );
    assert!(!body.to_string().contains(ADMIN_TOKEN), "{body}");
    let r = app.admin_sweep("nope").await;
    assert_eq!(r.status(), 404);
    let r = app.admin_sweep("retention").await;
    assert_eq!(r.status(), 202);
    app.wait_audit("3 deletions", 10, |a| {
        a.iter().filter(|e| e.outcome.as_str() == "done").count() == 3
    })
    .await;
    // the newest run of the branch is kept
    assert!(app.sim.run(&ids[0]).is_some());
    for id in &ids[1..] {
        assert!(app.sim.run(id).is_none(), "{id} should be deleted");
    }
    let actions: serde_json::Value = app
        .http
        .get(app.url("/api/actions"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let first = &actions.as_array().unwrap()[0];
    let mut keys: Vec<_> = first.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "action",
            "at",
            "attempts",
            "branch",
            "error",
            "kind",
            "outcome",
            "project_id",
            "reason",
            "rule",
            "run_id"
        ]
    );
    let rules: serde_json::Value = app
        .http
        .get(app.url("/api/rules"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rules[0]["hits"], 3);
    let metrics = app.get_text("/metrics").await;
    assert!(
        metrics.contains(
            "runwarden_actions_total{rule=\"retention\",kind=\"retention\",action=\"delete\",outcome=\"done\"} 3"
        ),
        "{metrics}"
    );
    // The decisions behind them, by rule and outcome (SPEC §5).
    assert!(
        metrics.contains("runwarden_decisions_by_outcome{rule=\"retention\",outcome=\"done\"} 3"),
        "{metrics}"
    );
    // The API calls behind them, by status.
    assert!(
        metrics.contains(
            "runwarden_api_requests_total{api=\"currents\",operation=\"delete_run\",status=\"200\"} 3"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("runwarden_event_to_action_seconds_count 3"),
        "{metrics}"
    );
}

/// A push (and a Currents event, for the other runs of its branch) lists the branch's
/// in-progress runs without reading their progress from the store: no rule reads it for
/// those. The record of a listed run still keeps the time of its last progress while its
/// completed-spec count is unchanged, so a timeout rule's `idle_for` is not reset by them.
#[tokio::test]
async fn listing_runs_for_a_push_keeps_their_last_progress_time() {
    use runwarden::store::RunRecord;
    let app = spawn_app(SUPERSEDE).await;
    let idle = app.sim.add_run(run("feat/p", "aaa111", 90)).unwrap();
    let newer = app.sim.add_run(run("feat/q", "bbb222", 1)).unwrap();
    let store = &app.bot.ctx.store;
    let long_ago = chrono::Utc::now() - chrono::Duration::minutes(80);
    for id in [&idle.run_id, &newer.run_id] {
        let r = app.sim.run(id).unwrap();
        store
            .upsert_run(&RunRecord {
                run_id: r.run_id.clone(),
                project_id: r.project_id.clone(),
                branch: r.branch().map(str::to_string),
                sha: r.sha().map(str::to_string),
                created_at: r.created_at,
                completion_state: r.completion_state.as_str().into(),
                status: r.status.as_str().into(),
                json: serde_json::to_string(&r).unwrap(),
                completed_specs: r.instance_counts().complete as i64,
                progress_changed_at: long_ago,
                duration_ms: None,
                updated_at: long_ago,
            })
            .await
            .unwrap();
    }
    // A push of the sha the run is testing: the run is listed, and spared.
    let push = json!({
        "ref": "refs/heads/feat/p", "before": "000000", "after": "aaa111", "deleted": false,
        "repository": {"full_name": "acme/web"},
        "head_commit": {"timestamp": chrono::Utc::now().to_rfc3339()}
    });
    assert_eq!(app.github_hook("push", "p-1", &push).await.status(), 202);
    // A rerun of the same sha starts on another branch: the branch's other runs are
    // listed too (and spared: same sha).
    let other = app.sim.add_run(run("feat/q", "bbb222", 0)).unwrap();
    assert_eq!(
        app.currents_hook("RUN_START", &other.run_id).await.status(),
        202
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let mut done = 0;
        for id in [&idle.run_id, &newer.run_id] {
            let rec = store.get_run(id).await.unwrap().unwrap();
            if rec.updated_at > long_ago {
                done += 1;
            }
        }
        if done == 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the runs were not observed again"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for id in [&idle.run_id, &newer.run_id] {
        let rec = store.get_run(id).await.unwrap().unwrap();
        assert_eq!(
            rec.progress_changed_at.timestamp_millis(),
            long_ago.timestamp_millis(),
            "{id}: {rec:?}"
        );
    }
    for id in [&idle.run_id, &newer.run_id, &other.run_id] {
        assert_eq!(
            app.sim.run(id).unwrap().completion_state.as_str(),
            "IN_PROGRESS"
        );
    }
    assert!(app.mutations().is_empty(), "{:?}", app.mutations());
}

#[tokio::test]
async fn polling_cancels_a_run_superseded_by_a_newer_run_that_already_finished() {
    // No webhooks: only the poll can see the newer run, which started and finished
    // between two polls.
    let app = spawn_app_with(AppOptions {
        rules: SUPERSEDE.into(),
        poll_interval: "1s",
        ..AppOptions::default()
    })
    .await;
    let old = app.sim.add_run(run("feat/x", "aaa111", 30)).unwrap();
    let newer = app
        .sim
        .add_run(runwarden::simulator::NewRun {
            state: Some("passed".into()),
            ..run("feat/x", "bbb222", 5)
        })
        .unwrap();
    // Another branch's finished newer run supersedes nothing here.
    let other = app.sim.add_run(run("feat/y", "ccc333", 30)).unwrap();
    app.sim
        .add_run(runwarden::simulator::NewRun {
            state: Some("passed".into()),
            ..run("feat/y", "ccc333", 5)
        })
        .unwrap();
    let cancel = format!("PUT /v1/runs/{}/cancel", old.run_id);
    app.wait_for("supersede cancel", 15, |a| a.mutations().contains(&cancel))
        .await;
    let audit = app
        .wait_audit("done", 10, |a| {
            a.iter().any(|e| e.outcome.as_str() == "done")
        })
        .await;
    assert!(
        audit[0].reason.contains(&newer.run_id),
        "{}",
        audit[0].reason
    );
    assert_eq!(
        app.sim
            .run(&other.run_id)
            .unwrap()
            .completion_state
            .as_str(),
        "IN_PROGRESS",
        "same sha: not superseded"
    );
    assert_eq!(app.mutations(), vec![cancel]);
}

#[tokio::test]
async fn polling_cancels_runs_past_their_timeout() {
    let rules = "[[rules]]\nname = \"stuck\"\nkind = \"timeout\"\nmax_duration = \"45m\"\n";
    let app = spawn_app_with(AppOptions {
        rules: rules.into(),
        poll_interval: "1s",
        ..AppOptions::default()
    })
    .await;
    let stuck = app.sim.add_run(run("main", "aaa", 60)).unwrap();
    let fresh = app.sim.add_run(run("main", "bbb", 5)).unwrap();
    let cancel = format!("PUT /v1/runs/{}/cancel", stuck.run_id);
    app.wait_for("timeout cancel", 15, |a| a.mutations().contains(&cancel))
        .await;
    let audit = app
        .wait_audit("done", 10, |a| {
            a.iter().any(|e| e.outcome.as_str() == "done")
        })
        .await;
    assert!(
        audit[0].reason.contains("max_duration 45m"),
        "{}",
        audit[0].reason
    );
    assert_eq!(
        app.sim
            .run(&fresh.run_id)
            .unwrap()
            .completion_state
            .as_str(),
        "IN_PROGRESS"
    );
}

#[tokio::test]
async fn a_transient_currents_failure_is_retried_until_the_cancel_succeeds() {
    let app = spawn_app(SUPERSEDE).await;
    let old = app.sim.add_run(run("feat/x", "aaa111", 10)).unwrap();
    let new = app.sim.add_run(run("feat/x", "bbb222", 1)).unwrap();
    let fault: runwarden::simulator::Fault = serde_json::from_value(json!({
        "method": "PUT", "path": "/v1/runs", "kind": "status", "status": 503, "times": 2
    }))
    .unwrap();
    app.sim.inject_fault(fault);
    assert_eq!(
        app.currents_hook("RUN_START", &new.run_id).await.status(),
        202
    );
    app.wait_audit("cancel done", 20, |a| {
        a.iter().any(|e| e.outcome.as_str() == "done")
    })
    .await;
    assert_eq!(
        app.sim.run(&old.run_id).unwrap().completion_state.as_str(),
        "CANCELED"
    );
}

#[tokio::test]
async fn the_same_delivery_twenty_times_concurrently_has_one_effect() {
    let app = spawn_app_with(AppOptions {
        rules: SUPERSEDE.into(),
        ..AppOptions::default()
    })
    .await;
    let old = app.sim.add_run(run("feat/dup", "aaa111", 5)).unwrap();
    let push = json!({
        "ref": "refs/heads/feat/dup", "after": "fff999", "deleted": false,
        "repository": {"full_name": "acme/web"},
        "head_commit": {"timestamp": chrono::Utc::now().to_rfc3339()}
    });
    let sends = (0..20).map(|_| app.github_hook("push", "same-delivery", &push));
    let statuses: Vec<u16> = futures::future::join_all(sends)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 202).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        19,
        "{statuses:?}"
    );
    app.wait_audit("done", 10, |a| {
        a.iter().any(|e| e.outcome.as_str() == "done")
    })
    .await;
    assert_eq!(
        app.mutations(),
        vec![format!("PUT /v1/runs/{}/cancel", old.run_id)]
    );
}

#[tokio::test]
async fn a_completed_workflow_run_cancels_its_orphaned_run_after_the_grace() {
    let rules = "[[rules]]\nname = \"orphans\"\nkind = \"orphan\"\ngrace = \"1s\"\n";
    let app = spawn_app(rules).await;
    let mut r = run("feat/o", "abc", 5);
    r.ci_build_id = Some("acme/web-555-2".into());
    let orphan = app.sim.add_run(r).unwrap();
    let mut r = run("feat/o", "abc", 5);
    r.ci_build_id = Some("acme/web-555-1".into());
    let other_attempt = app.sim.add_run(r).unwrap();
    // Its other group, recorded under another branch name (an override in the CI
    // config): tied to the workflow run by its ciBuildId all the same.
    let mut r = run("ci/merge-ref", "abc", 5);
    r.ci_build_id = Some("acme/web-555-2".into());
    let renamed = app.sim.add_run(r).unwrap();
    let hook = json!({"action": "completed", "repository": {"full_name": "acme/web"},
        "workflow_run": {"id": 555, "run_attempt": 2, "head_branch": "feat/o", "head_sha": "abc",
            "updated_at": chrono::Utc::now().to_rfc3339()}});
    let sent = std::time::Instant::now();
    assert_eq!(
        app.github_hook("workflow_run", "wf-1", &hook)
            .await
            .status(),
        202
    );
    let cancel = format!("PUT /v1/runs/{}/cancel", orphan.run_id);
    let cancel_renamed = format!("PUT /v1/runs/{}/cancel", renamed.run_id);
    app.wait_for("orphan cancels", 15, |a| {
        let m = a.mutations();
        m.contains(&cancel) && m.contains(&cancel_renamed)
    })
    .await;
    assert!(
        sent.elapsed() >= std::time::Duration::from_millis(900),
        "acted before the grace"
    );
    assert_eq!(
        app.sim
            .run(&other_attempt.run_id)
            .unwrap()
            .completion_state
            .as_str(),
        "IN_PROGRESS"
    );
}

#[tokio::test]
async fn an_orphan_rule_with_workflows_ignores_other_workflows_of_the_commit() {
    let rules = "[[rules]]\nname = \"orphans\"\nkind = \"orphan\"\ngrace = \"0s\"\nmatch_by = \"commit\"\nworkflows = [\"e2e.yml\"]\n";
    let app = spawn_app(rules).await;
    let orphan = app.sim.add_run(run("feat/w", "abc", 5)).unwrap();
    let hook = |id: u64, name: &str, file: &str| {
        json!({"action": "completed", "repository": {"full_name": "acme/web"},
            "workflow_run": {"id": id, "run_attempt": 1, "head_branch": "feat/w", "head_sha": "abc",
                "name": name, "path": format!(".github/workflows/{file}"),
                "updated_at": chrono::Utc::now().to_rfc3339()}})
    };
    // The commit's lint workflow ends first: not the one that runs the tests.
    let lint = hook(700, "Lint", "lint.yml");
    assert_eq!(
        app.github_hook("workflow_run", "wf-lint", &lint)
            .await
            .status(),
        202
    );
    let store = &app.bot.ctx.store;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while store.count_unprocessed().await.unwrap() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the lint event left unprocessed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Nothing listed (no rule is about that workflow), nothing cancelled.
    assert_eq!(app.currents_gets(), 0);
    assert!(app.mutations().is_empty(), "{:?}", app.mutations());
    let e2e = hook(701, "E2E", "e2e.yml");
    assert_eq!(
        app.github_hook("workflow_run", "wf-e2e", &e2e)
            .await
            .status(),
        202
    );
    let cancel = format!("PUT /v1/runs/{}/cancel", orphan.run_id);
    app.wait_for("the orphan's cancel", 15, |a| {
        a.mutations().contains(&cancel)
    })
    .await;
}

/// A slot's event is stored before the slot is recorded: a tick that stored the event
/// and got no further (a crash, a failed commit) leaves the slot to the next tick, which
/// records it and does not fire it again; a slot is never recorded without its event.
#[tokio::test]
async fn a_slot_whose_event_was_stored_but_not_recorded_is_recorded_and_fires_once() {
    use chrono::{DateTime, Utc};
    use runwarden::intake::schedules::fire_due;
    use runwarden::store::NewDelivery;
    // Fires on 1 January only: the bot's own schedule loop finds no slot today.
    let rules = "[[rules]]\nname = \"yearly\"\nkind = \"retention\"\nschedule = \"0 3 1 1 *\"\nolder_than = \"30d\"\n";
    let app = spawn_app(rules).await;
    let ctx = &app.bot.ctx;
    let slot: DateTime<Utc> = "2026-01-01T03:00:00Z".parse().unwrap();
    let since = slot - chrono::Duration::hours(1);
    let now = slot + chrono::Duration::seconds(30);
    ctx.store
        .insert_delivery(NewDelivery {
            source: "schedule".into(),
            delivery_id: format!("slot:yearly:{}", slot.timestamp()),
            event: "sweep".into(),
            payload: json!({"rule": "yearly", "slot": slot.to_rfc3339()}).to_string(),
            received_at: now,
        })
        .await
        .unwrap();
    assert_eq!(fire_due(ctx, since, now).await, vec![]);
    assert_eq!(ctx.store.last_slot("yearly").await.unwrap(), Some(slot));

    // The next slot fires once.
    let next: DateTime<Utc> = "2027-01-01T03:00:00Z".parse().unwrap();
    let later = next + chrono::Duration::seconds(30);
    assert_eq!(
        fire_due(ctx, since, later).await,
        vec![("yearly".to_string(), next)]
    );
    assert_eq!(fire_due(ctx, since, later).await, vec![]);
    assert_eq!(ctx.store.last_slot("yearly").await.unwrap(), Some(next));
}

#[tokio::test]
async fn a_retention_schedule_slot_fires_once_and_deletes() {
    let rules = "[[rules]]\nname = \"every-second\"\nkind = \"retention\"\nschedule = \"* * * * * *\"\nolder_than = \"30d\"\n";
    let app = spawn_app_with(AppOptions {
        rules: rules.into(),
        ..AppOptions::default()
    })
    .await;
    let r = ended("feat/old", "s1", 60 * 24 * 45, "passed");
    let old = app.sim.add_run(r).unwrap();
    let delete = format!("DELETE /v1/runs/{}", old.run_id);
    app.wait_for("the scheduled delete", 15, |a| {
        a.mutations().contains(&delete)
    })
    .await;
    // Later slots find nothing more to delete: the delete happened once.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(app.mutations().iter().filter(|m| **m == delete).count(), 1);
    let slots = app.bot.ctx.store.last_slot("every-second").await.unwrap();
    assert!(slots.is_some(), "slots are recorded in the store");
}

#[tokio::test]
async fn polling_alone_reports_a_run_whose_webhooks_were_missed() {
    let rules = "[[rules]]\nname = \"pr-summary\"\nkind = \"summary\"\ncommit_status = true\n";
    let app = spawn_app_with(AppOptions {
        rules: rules.into(),
        poll_interval: "1s",
        ..AppOptions::default()
    })
    .await;
    let created = app.sim.add_run(run("feat/poll", "abcdef1234", 1)).unwrap();
    app.open_pr("feat/poll", "abcdef1234", 9);
    // The bot first sees the run in progress by polling...
    let id = created.run_id.clone();
    app.wait_run_stored(&id).await;
    // ...then it finishes without any webhook reaching the bot.
    app.sim
        .advance(
            &created.run_id,
            runwarden::simulator::Advance {
                finish: Some(runwarden::simulator::Outcome::Failed),
                ..Default::default()
            },
        )
        .unwrap();
    app.wait_for("the PR comment", 15, |a| {
        !a.sim.comments(Some(REPO), Some(9)).is_empty()
    })
    .await;
    app.wait_audit("summary done", 10, |a| {
        a.iter()
            .any(|e| e.action == "summarize" && e.outcome.as_str() == "done")
    })
    .await;
    let comments = app.sim.comments(Some(REPO), Some(9));
    assert_eq!(comments.len(), 1);
    assert!(
        comments[0].body.contains(&created.run_id[..7]) || comments[0].body.contains("feat/poll"),
        "{}",
        comments[0].body
    );
    // Later polls do not post again.
    tokio::time::sleep(std::time::Duration::from_millis(2200)).await;
    assert_eq!(app.sim.comments(Some(REPO), Some(9)).len(), 1);
    assert_eq!(app.sim.comments(Some(REPO), Some(9))[0].edits, 0);
}

/// Events that decide nothing (here pushes to branches without runs) are marked processed
/// together, and an event that does decide, arriving among them, still acts once.
#[tokio::test]
async fn events_that_decide_nothing_are_processed_and_do_not_hold_back_the_others() {
    let app = spawn_app(SUPERSEDE).await;
    let old = app.sim.add_run(run("feat/busy", "aaa111", 5)).unwrap();
    let push = |branch: &str, after: &str| {
        json!({
            "ref": format!("refs/heads/{branch}"), "before": "000000", "after": after,
            "deleted": false, "repository": {"full_name": "acme/web"},
            "head_commit": {"timestamp": chrono::Utc::now().to_rfc3339()}
        })
    };
    let sends = (0..30).map(|i| {
        let body = push(&format!("feat/idle-{i}"), "eee555");
        let app = &app;
        async move {
            app.github_hook("push", &format!("quiet-{i}"), &body)
                .await
                .status()
        }
    });
    let statuses = futures::future::join_all(sends).await;
    assert!(statuses.iter().all(|s| *s == 202), "{statuses:?}");
    let busy = push("feat/busy", "fff666");
    assert_eq!(app.github_hook("push", "busy", &busy).await.status(), 202);
    let cancel = format!("PUT /v1/runs/{}/cancel", old.run_id);
    app.wait_for("the cancel", 10, |a| a.mutations().contains(&cancel))
        .await;
    let store = &app.bot.ctx.store;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while store.count_unprocessed().await.unwrap() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "events left unprocessed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for i in 0..30 {
        let d = store
            .find_delivery("github", &format!("quiet-{i}"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(d.outcome.as_deref(), Some("0 decision(s)"), "quiet-{i}");
        assert!(d.processed_at.is_some());
    }
    let d = store
        .find_delivery("github", "busy")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.outcome.as_deref(), Some("1 decision(s)"));
    assert_eq!(app.mutations(), vec![cancel]);
}

/// `[store] keep_events` (default 14 days): at start (and hourly) the bot forgets events
/// processed long ago and runs last seen finished long ago; it keeps recent ones, events
/// still to process and runs in progress. `[store] keep_audit` (default 90 days): it
/// forgets decisions and actions that finished long ago.
#[tokio::test]
async fn the_store_forgets_old_events_runs_and_audit_and_keeps_the_rest() {
    use runwarden::store::{NewDelivery, RunRecord, Store};
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("old.db").display());
    let now = chrono::Utc::now();
    let days = |n: i64| now - chrono::Duration::days(n);
    {
        let store = Store::connect(&url).await.unwrap();
        for (id, age) in [("old", 20), ("recent", 1), ("old-pending", 20)] {
            store
                .insert_delivery(NewDelivery {
                    source: "currents".into(),
                    delivery_id: id.into(),
                    event: "RUN_FINISH".into(),
                    payload: "{}".into(),
                    received_at: days(age),
                })
                .await
                .unwrap();
        }
        let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url)
            .await
            .unwrap();
        // Sets the time of the row `key` with `sql` (`?` the time, then `?` the key).
        async fn backdate(
            conn: &mut sqlx::SqliteConnection,
            sql: &str,
            at: chrono::DateTime<chrono::Utc>,
            key: &str,
        ) {
            sqlx::query(sql)
                .bind(at.timestamp_millis())
                .bind(key)
                .execute(conn)
                .await
                .unwrap();
        }
        for (id, age) in [("old", 20), ("recent", 1)] {
            let sql =
                "UPDATE deliveries SET processed_at = ?, outcome = 'ok' WHERE delivery_id = ?";
            backdate(&mut conn, sql, days(age), id).await;
        }
        for (id, state, age) in [
            ("run-old-done", "PASSED", 20),
            ("run-old-running", "IN_PROGRESS", 20),
            ("run-recent-done", "PASSED", 1),
        ] {
            let (completion, status) = if state == "IN_PROGRESS" {
                ("IN_PROGRESS", "RUNNING")
            } else {
                ("COMPLETE", state)
            };
            store
                .upsert_run(&RunRecord {
                    run_id: id.into(),
                    project_id: PROJECT.into(),
                    branch: Some("main".into()),
                    sha: Some("abc".into()),
                    created_at: days(age),
                    completion_state: completion.into(),
                    status: status.into(),
                    json: format!(r#"{{"runId":"{id}"}}"#),
                    completed_specs: 0,
                    progress_changed_at: days(age),
                    duration_ms: None,
                    updated_at: days(age),
                })
                .await
                .unwrap();
        }
        // The audit: a cancel finished 100 days ago and one finished a day ago.
        for (run, age) in [("run-audit-old", 100), ("run-audit-recent", 1)] {
            store
                .record_decisions(&[runwarden::store::NewDecision {
                    at: days(age),
                    rule: "cancel-superseded".into(),
                    kind: "supersede".into(),
                    action: "cancel".into(),
                    run_id: run.into(),
                    project_id: PROJECT.into(),
                    branch: Some("main".into()),
                    sha: Some("abc".into()),
                    reason: "superseded".into(),
                    dry_run: false,
                    not_before: None,
                    action_key: format!("cancel:{run}"),
                    payload: None,
                    skip: None,
                }])
                .await
                .unwrap();
            let sql = "UPDATE actions SET state = 'done', attempts = 1, finished_at = ? \
                       WHERE action_key = ?";
            backdate(&mut conn, sql, days(age), &format!("cancel:{run}")).await;
        }
        store.close().await;
    }
    let app = spawn_app_with(AppOptions {
        rules: SUPERSEDE.into(),
        store_url: Some(url),
        ..AppOptions::default()
    })
    .await;
    let store = &app.bot.ctx.store;
    let metrics = &app.bot.ctx.metrics;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while store
        .find_delivery("currents", "old")
        .await
        .unwrap()
        .is_some()
        || store.get_run("run-old-done").await.unwrap().is_some()
        || metrics.get("runwarden_store_pruned_total", &[("table", "actions")]) == 0
    {
        assert!(std::time::Instant::now() < deadline, "nothing pruned");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for id in ["recent", "old-pending"] {
        assert!(
            store.find_delivery("currents", id).await.unwrap().is_some(),
            "{id}"
        );
    }
    assert!(store.get_run("run-recent-done").await.unwrap().is_some());
    // Observed in progress 20 days ago and never since (polling is off here): its end was
    // never heard of, and it is forgotten with the finished one.
    assert!(store.get_run("run-old-running").await.unwrap().is_none());
    for (table, n) in [("events", 1), ("runs", 2), ("decisions", 1), ("actions", 1)] {
        assert_eq!(
            metrics.get("runwarden_store_pruned_total", &[("table", table)]),
            n,
            "{table}"
        );
    }
    // `[store] keep_audit` (default 90 days) forgot the old cancel, not the recent one.
    let audit: Vec<_> = store
        .audit(None, None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.run_id)
        .collect();
    assert_eq!(audit, ["run-audit-recent"]);
    assert!(
        store
            .action_by_key("cancel:run-audit-old")
            .await
            .unwrap()
            .is_none()
    );
}

/// A backlog of events is recorded in a few commits, not one per event: events decided
/// while a commit is under way share the next one. Here another connection holds the
/// SQLite file's write lock while the processor decides 8 queued pushes, so the first
/// record waits; once the lock is let go, the other 7 go in one more commit. (SQLite
/// only: it takes the file's lock.)
#[tokio::test]
async fn events_decided_while_a_commit_waits_share_the_next_commit() {
    const N: usize = 8;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("runwarden.db");
    let PreparedApp {
        sim,
        ctx,
        dir: _dir,
        ..
    } = prepare_app(AppOptions {
        rules: SUPERSEDE.into(),
        store_dir: Some(dir),
        ..AppOptions::default()
    })
    .await;
    let mut olds = Vec::new();
    for i in 0..N {
        let branch = format!("feat/b{i}");
        olds.push(sim.add_run(run(&branch, "aaa111", 10)).unwrap().run_id);
        let body = json!({
            "ref": format!("refs/heads/{branch}"),
            "after": format!("{:040x}", i + 1),
            "repository": { "full_name": REPO },
        });
        ctx.store
            .insert_delivery(runwarden::store::NewDelivery {
                source: "github".into(),
                delivery_id: format!("push-{i}"),
                event: "push".into(),
                payload: body.to_string(),
                received_at: chrono::Utc::now(),
            })
            .await
            .unwrap();
    }
    let before = ctx.store.event_record_stats().groups();

    // Hold the write lock, then let the processor run.
    let lock = sqlite_lock::hold_write_lock(&format!("sqlite://{}", db.display())).await;
    let processing = {
        let ctx = ctx.clone();
        tokio::spawn(async move { runwarden::intake::processor::process_pending(&ctx).await })
    };
    // Every push decided: its branch listed.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let listed = sim
            .request_counts()
            .get("currents GET")
            .copied()
            .unwrap_or(0);
        if listed >= N as u64 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {listed} of {N} pushes decided"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(
        !processing.is_finished(),
        "nothing could be recorded while the lock was held"
    );
    sqlite_lock::release(lock).await;
    let handled = processing.await.unwrap().unwrap();
    assert_eq!(handled, N);

    let stats = ctx.store.event_record_stats();
    let commits = stats.groups() - before;
    assert_eq!(stats.events(), N as u64);
    // The first push's record, then the 7 decided while it waited (a third commit only
    // if the last decision was still finishing when the lock went).
    assert!(
        (2..=3).contains(&commits),
        "{N} events recorded in {commits} commits"
    );
    assert_eq!(ctx.store.count_unprocessed().await.unwrap(), 0);
    for old in &olds {
        let audit = ctx.store.decisions_for_run(old).await.unwrap();
        assert_eq!(audit.len(), 1, "one decision about {old}: {audit:?}");
        assert_eq!(audit[0].action, "cancel");
    }
}

/// `serve`'s processor takes the events this process stores from the store's in-memory
/// feed, and reads the store for what the feed cannot bring: here more events than the
/// feed holds arrive at once (it misses some), and one event's processing failed and
/// its retry time has come. Each event is handled exactly once all the same: none is
/// lost, and none that a store read returned is handled again when the feed brings it.
#[tokio::test]
async fn the_processor_reads_the_store_for_what_its_feed_missed_and_handles_each_event_once() {
    use runwarden::intake::processor::{EventFeed, process_next};
    use runwarden::store::FEED_CAPACITY;
    let PreparedApp {
        sim,
        ctx,
        dir: _dir,
        ..
    } = prepare_app(AppOptions {
        // A push decides nothing under a timeout rule: cheap to process.
        client_retries: Some((1, std::time::Duration::from_millis(1))),
        rules: "[[rules]]\nname = \"stuck\"\nkind = \"timeout\"\nmax_duration = \"2h\"\n".into(),
        store_dir: Some(tempfile::tempdir().unwrap()),
        ..AppOptions::default()
    })
    .await;
    let push = |id: String| runwarden::store::NewDelivery {
        source: "github".into(),
        delivery_id: id,
        event: "push".into(),
        payload: json!({ "ref": "refs/heads/feat/x", "after": "bbb222" }).to_string(),
        received_at: chrono::Utc::now(),
    };
    let mut feed = EventFeed::new(&ctx.store);
    // The first pass reads the store (empty here).
    assert_eq!(process_next(&ctx, &mut feed).await.unwrap(), 0);

    // More than the feed holds: it misses the rest, so the store is read.
    let n = FEED_CAPACITY + 100;
    futures::future::try_join_all(
        (0..n).map(|i| ctx.store.insert_delivery(push(format!("burst-{i}")))),
    )
    .await
    .unwrap();
    assert_eq!(process_next(&ctx, &mut feed).await.unwrap(), n);
    assert_eq!(ctx.store.count_unprocessed().await.unwrap(), 0);

    // Fed events: each handled once.
    for i in 0..3 {
        ctx.store
            .insert_delivery(push(format!("fed-{i}")))
            .await
            .unwrap();
    }
    assert_eq!(process_next(&ctx, &mut feed).await.unwrap(), 3);
    assert_eq!(ctx.store.count_unprocessed().await.unwrap(), 0);

    // An event whose processing failed (the API down) is found in the store once its
    // retry time has come.
    let fault: runwarden::simulator::Fault = serde_json::from_value(json!({
        "method": "GET", "path": "/v1/runs", "kind": "status", "status": 503, "times": 1
    }))
    .unwrap();
    sim.inject_fault(fault);
    let finished = ended("feat/y", "ccc333", 5, "passed");
    let finished = sim.add_run(finished).unwrap();
    let payload = json!({
        "event": "RUN_FINISH",
        "runUrl": format!("https://app.currents.dev/run/{}", finished.run_id),
        "buildId": "b", "tags": [],
        "overall": 1, "passes": 1, "failures": 0, "pending": 0, "skipped": 0, "retries": 0, "flaky": 0
    })
    .to_string();
    ctx.store
        .insert_delivery(runwarden::store::NewDelivery {
            source: "currents".into(),
            delivery_id: format!("RUN_FINISH:{}", finished.run_id),
            event: "RUN_FINISH".into(),
            payload,
            received_at: chrono::Utc::now(),
        })
        .await
        .unwrap();
    let mut handled = process_next(&ctx, &mut feed).await.unwrap();
    let failed = ctx
        .store
        .find_delivery("currents", &format!("RUN_FINISH:{}", finished.run_id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (failed.attempts, failed.processed_at),
        (1, None),
        "{failed:?}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while ctx.store.count_unprocessed().await.unwrap() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the retry was never read from the store"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        handled += process_next(&ctx, &mut feed).await.unwrap();
    }
    // The fed attempt and the retry read from the store.
    assert_eq!(handled, 2);
}

/// An event stored while the processor is reading the store (its pass is still going,
/// batch after batch) is both returned by that pass and fed: it is handled once.
#[tokio::test]
async fn an_event_stored_during_a_store_read_pass_is_handled_once() {
    use runwarden::intake::processor::{EventFeed, process_next};
    let PreparedApp {
        sim,
        ctx,
        dir: _dir,
        ..
    } = prepare_app(AppOptions {
        rules: "[[rules]]\nname = \"stuck\"\nkind = \"timeout\"\nmax_duration = \"2h\"\n".into(),
        store_dir: Some(tempfile::tempdir().unwrap()),
        ..AppOptions::default()
    })
    .await;
    let push = |id: String| runwarden::store::NewDelivery {
        source: "github".into(),
        delivery_id: id,
        event: "push".into(),
        payload: json!({ "ref": "refs/heads/feat/x", "after": "bbb222" }).to_string(),
        received_at: chrono::Utc::now(),
    };
    // The first event of the pass reads its run, slowly: the pass is under way while
    // the late event is stored.
    let slow = sim.add_run(run("feat/s", "sss111", 5)).unwrap();
    let held = sim.inject_fault(
        runwarden::simulator::Fault::new(runwarden::simulator::FaultKind::Latency { ms: 1500 })
            .on("GET", format!("/v1/runs/{}", slow.run_id)),
    );
    ctx.store
        .insert_delivery(runwarden::store::NewDelivery {
            source: "currents".into(),
            delivery_id: format!("RUN_START:{}", slow.run_id),
            event: "RUN_START".into(),
            payload: json!({
                "event": "RUN_START",
                "runUrl": format!("https://app.currents.dev/run/{}", slow.run_id),
                "buildId": "b", "tags": []
            })
            .to_string(),
            received_at: chrono::Utc::now() - chrono::Duration::seconds(1),
        })
        .await
        .unwrap();
    // A full batch, so that the pass reads the store again after it.
    for i in 0..63 {
        ctx.store
            .insert_delivery(push(format!("p-{i}")))
            .await
            .unwrap();
    }
    // A new feed reads the store first; the 64 events above are fed before that read.
    let mut feed = EventFeed::new(&ctx.store);
    let pass = {
        let ctx = ctx.clone();
        tokio::spawn(async move { process_next(&ctx, &mut feed).await.unwrap() })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while sim.faults().iter().any(|f| f.id == held) {
        assert!(
            std::time::Instant::now() < deadline,
            "the slow read never came"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    ctx.store
        .insert_delivery(push("late".into()))
        .await
        .unwrap();
    assert_eq!(
        pass.await.unwrap(),
        65,
        "64 read from the store, the late one once"
    );
    assert_eq!(ctx.store.count_unprocessed().await.unwrap(), 0);
}

/// `GET path` with the admin token: the status and the body as JSON (a body that is not
/// JSON comes back as a JSON string).
async fn admin_get(app: &TestApp, path: &str) -> (u16, serde_json::Value) {
    let r = app
        .http
        .get(app.url(path))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    (status, body)
}

/// `GET /api/actions` filters: a `since` longer than the time since the epoch means
/// everything (no panic, not `[]`); an unknown rule is 404 and a limit outside 1..=10000
/// or a query string that does not parse 400, each as `{"error": ...}`.
#[tokio::test]
async fn admin_actions_filters_clamp_since_and_answer_json_errors() {
    let rules = "[[rules]]\nname = \"retention\"\nkind = \"retention\"\nschedule = \"0 3 * * *\"\nolder_than = \"30d\"\nkeep_latest = 1\n";
    let app = spawn_app(rules).await;
    for i in 0..3 {
        let r = ended("feat/old", &format!("sha{i}"), 60 * 24 * (40 + i), "passed");
        app.sim.add_run(r).unwrap();
    }
    assert_eq!(app.admin_sweep("retention").await.status(), 202);
    app.wait_audit("2 deletions", 10, |a| {
        a.iter().filter(|e| e.outcome.as_str() == "done").count() == 2
    })
    .await;
    for q in [
        "",
        "?since=24h",
        "?since=300000y",
        "?since=1000000000y",
        "?rule=retention",
        "?limit=10000",
    ] {
        let (status, body) = admin_get(&app, &format!("/api/actions{q}")).await;
        assert_eq!(status, 200, "{q}: {body}");
        assert_eq!(body.as_array().map(Vec::len), Some(2), "{q}: {body}");
    }
    let (status, body) = admin_get(&app, "/api/actions?limit=1").await;
    assert_eq!((status, body.as_array().map(Vec::len)), (200, Some(1)));
    let (status, body) = admin_get(&app, "/api/actions?rule=nope").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body, json!({"error": "no rule named \"nope\""}));
    let (status, sweep) = {
        let r = app.admin_sweep("nope").await;
        (
            r.status().as_u16(),
            r.json::<serde_json::Value>().await.unwrap(),
        )
    };
    assert_eq!(
        (status, &sweep),
        (404, &body),
        "the same shape as the sweep's"
    );
    for q in [
        "?limit=0",
        "?limit=10001",
        "?limit=abc",
        "?limit=-1",
        "?since=soon",
    ] {
        let (status, body) = admin_get(&app, &format!("/api/actions{q}")).await;
        assert_eq!(status, 400, "{q}: {body}");
        assert!(body["error"].is_string(), "{q}: {body}");
        assert_eq!(body.as_object().map(|o| o.len()), Some(1), "{q}: {body}");
    }
}

/// Replicas compare times their own clocks gave: on PostgreSQL `/metrics` shows how far
/// this replica's clock is from the database server's (here the same machine: well
/// within a second); on SQLite (one machine) there is no such gauge.
#[tokio::test]
async fn metrics_show_the_clock_offset_from_a_shared_store_only() {
    let gauge = |text: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix("runwarden_store_clock_offset_seconds "))
            .map(|v| v.parse::<f64>().unwrap())
    };
    let pg = spawn_app_with(AppOptions {
        store_url: Some(postgres::fresh_database().await),
        ..AppOptions::default()
    })
    .await;
    let text = pg
        .http
        .get(pg.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let offset = gauge(&text).unwrap_or_else(|| panic!("no clock offset on PostgreSQL: {text}"));
    assert!(offset.abs() < 1.0, "{offset}");
    assert!(text.contains("runwarden_store_up 1"), "{text}");
    let lite = spawn_app_with(AppOptions {
        store_dir: Some(tempfile::tempdir().unwrap()),
        ..AppOptions::default()
    })
    .await;
    let text = lite
        .http
        .get(lite.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(gauge(&text), None, "{text}");
}

/// `/metrics` is the Prometheus text format 0.0.4, in UTF-8 (label values can be any
/// text, e.g. a rule's name), and says so.
#[tokio::test]
async fn metrics_are_prometheus_text_in_utf8() {
    let app = spawn_app(SUPERSEDE).await;
    let r = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
}

/// A fresh server's `/metrics` describes the counters README lists before any sample,
/// and a counter without labels reads `name value`.
#[tokio::test]
async fn fresh_metrics_describe_the_listed_counters_and_write_no_empty_braces() {
    let app = spawn_app(SUPERSEDE).await;
    let text = app.get_text("/metrics").await;
    for name in [
        "runwarden_webhooks_total",
        "runwarden_decisions_total",
        "runwarden_actions_total",
        "runwarden_api_requests_total",
    ] {
        assert!(text.contains(&format!("# HELP {name} ")), "{name}: {text}");
        assert!(
            text.contains(&format!("# TYPE {name} counter\n")),
            "{name}: {text}"
        );
    }
    app.bot
        .ctx
        .metrics
        .inc("runwarden_actions_handed_over_total", &[]);
    let text = app.get_text("/metrics").await;
    assert!(
        text.lines()
            .any(|l| l == "runwarden_actions_handed_over_total 1"),
        "{text}"
    );
    assert!(!text.contains("{}"), "{text}");
}

/// A sweep of one rule (`POST /api/sweep/{rule}`) polls like `serve` does, but keeps
/// only that rule's decisions: the summary its poll would have decided for a run whose
/// `RUN_FINISH` webhook was missed is another rule's, so the run is not remembered as
/// finished either, and the summary rule's own sweep (or the next poll) still posts it.
#[tokio::test]
async fn a_sweep_of_one_rule_leaves_a_missed_summary_to_the_next_poll() {
    let rules = "[[rules]]\nname = \"stuck\"\nkind = \"timeout\"\nmax_duration = \"2h\"\n\n\
                 [[rules]]\nname = \"sum\"\nkind = \"summary\"\n";
    let app = spawn_app(rules).await;
    let created = app.sim.add_run(run("feat/scoped", "abc123def", 1)).unwrap();
    app.open_pr("feat/scoped", "abc123def", 7);
    let id = created.run_id.clone();
    assert_eq!(app.currents_hook("RUN_START", &id).await.status(), 202);
    let store = &app.bot.ctx.store;
    app.wait_run_stored(&id).await;
    // The run finishes; its RUN_FINISH webhook never reaches the bot.
    app.sim
        .advance(
            &id,
            runwarden::simulator::Advance {
                finish: Some(runwarden::simulator::Outcome::Failed),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(app.admin_sweep("stuck").await.status(), 202);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while store.count_unprocessed().await.unwrap() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the sweep was never processed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        app.sim.comments(Some(REPO), Some(7)).is_empty(),
        "not the timeout rule's work"
    );
    let rec = store.get_run(&id).await.unwrap().unwrap();
    assert_eq!(
        rec.completion_state, "IN_PROGRESS",
        "the run is left for a poll that keeps the summary"
    );
    assert_eq!(app.admin_sweep("sum").await.status(), 202);
    app.wait_for("the PR comment", 15, |a| {
        !a.sim.comments(Some(REPO), Some(7)).is_empty()
    })
    .await;
    app.wait_audit("summary done", 10, |a| {
        a.iter()
            .any(|e| e.action == "summarize" && e.rule == "sum" && e.outcome.as_str() == "done")
    })
    .await;
}

/// A bot polling every second (one attempt per API request) and 20 passed runs of
/// 5 minutes on `feat/hist`: the history of `max_duration = "auto"` (3 × p95 = 15 min).
async fn app_with_history(rules: &str) -> TestApp {
    let app = spawn_app_with(AppOptions {
        rules: rules.into(),
        poll_interval: "1s",
        client_retries: Some((1, std::time::Duration::from_millis(10))),
        ..AppOptions::default()
    })
    .await;
    for i in 0..20 {
        let mut r = run("feat/hist", &format!("old{i}"), 60 + i);
        r.state = Some("passed".into());
        r.duration_ms = Some(5 * 60 * 1000);
        app.sim.add_run(r).unwrap();
    }
    app
}

/// `max_duration = "auto"`: the history listing of a branch failed for now (a 503,
/// after the poll's own listing went through). The poll is retried, and the retry lists
/// the history again rather than taking the failed lookup for a fresh one (which left
/// only `fallback` for an hour): the 30-minute run is past 3 × the p95 of 5-minute runs.
#[tokio::test]
async fn a_failed_history_listing_is_tried_again_by_the_next_poll() {
    let rules = "[[rules]]\nname = \"auto\"\nkind = \"timeout\"\nmax_duration = \"auto\"\nfallback = \"2h\"\n";
    let app = app_with_history(rules).await;
    let listing = format!("/v1/projects/{PROJECT}/runs");
    // The poll's listing of runs in progress goes through; the history's fails, for now.
    app.sim.inject_fault(
        runwarden::simulator::Fault::status(503)
            .on("GET", &listing)
            .after(1),
    );
    let long = app.sim.add_run(run("feat/hist", "new", 30)).unwrap();
    let cancel = format!("PUT /v1/runs/{}/cancel", long.run_id);
    app.wait_for("the cancel past 3 x p95", 20, |a| {
        a.mutations().contains(&cancel)
    })
    .await;
    app.wait_audit("the auto timeout's reason", 10, |a| {
        a.iter()
            .any(|e| e.rule == "auto" && e.run_id == long.run_id && e.outcome.as_str() == "done")
    })
    .await;
}

/// Polling alone (no webhook reaches the bot): a run that started and finished between
/// two polls was never listed in progress, so only the poll's listing of recent runs can
/// find it. Its summary is posted once; later polls know it and post nothing more.
#[tokio::test]
async fn polling_alone_reports_a_run_that_started_and_finished_between_two_polls() {
    let rules = "[[rules]]\nname = \"pr-summary\"\nkind = \"summary\"\n";
    let app = spawn_app_with(AppOptions {
        rules: rules.into(),
        poll_interval: "1s",
        ..AppOptions::default()
    })
    .await;
    // A run from long before the bot started is history, not a missed event.
    let old = ended("feat/old-history", "0ld5ha", 60, "failed");
    app.sim.add_run(old).unwrap();
    app.open_pr("feat/old-history", "0ld5ha", 4);
    let quick = ended("feat/quick", "9u1ck5ha", 0, "failed");
    let quick = app.sim.add_run(quick).unwrap();
    app.open_pr("feat/quick", "9u1ck5ha", 11);
    app.wait_for("the PR comment", 15, |a| {
        !a.sim.comments(Some(REPO), Some(11)).is_empty()
    })
    .await;
    app.wait_audit("summary done", 10, |a| {
        a.iter().any(|e| {
            e.action == "summarize" && e.run_id == quick.run_id && e.outcome.as_str() == "done"
        })
    })
    .await;
    // Two more polls: nothing posted again, nothing for the old run.
    // (Each poll makes two listings: the runs in progress, the recent runs.)
    let before = app.currents_gets();
    app.wait_for("two more polls", 10, |a| a.currents_gets() >= before + 4)
        .await;
    let comments = app.sim.comments(Some(REPO), Some(11));
    assert_eq!(comments.len(), 1);
    assert_eq!(comments[0].edits, 0);
    assert!(app.sim.comments(Some(REPO), Some(4)).is_empty());
}

/// Polling alone: a run runwarden cancels itself (here a timeout) gets its summary,
/// saying which rule cancelled it. The executor records the run as the cancel left it,
/// so no poll finds it ended behind the bot's back, and no webhook comes: the end the
/// executor saw is an event of its own for the summary rules.
#[tokio::test]
async fn polling_alone_summarises_a_run_the_bot_cancelled() {
    let rules = "[[rules]]\nname = \"stuck\"\nkind = \"timeout\"\nmax_duration = \"10m\"\n\n\
                 [[rules]]\nname = \"pr-summary\"\nkind = \"summary\"\n";
    let app = spawn_app_with(AppOptions {
        rules: rules.into(),
        poll_interval: "1s",
        ..AppOptions::default()
    })
    .await;
    let long = app.sim.add_run(run("feat/long", "10n65ha", 30)).unwrap();
    app.open_pr("feat/long", "10n65ha", 12);
    app.wait_audit("the summary of the cancelled run", 15, |a| {
        a.iter().any(|e| {
            e.action == "summarize" && e.run_id == long.run_id && e.outcome.as_str() == "done"
        })
    })
    .await;
    let comments = app.sim.comments(Some(REPO), Some(12));
    assert_eq!(comments.len(), 1, "{comments:#?}");
    assert!(comments[0].body.contains("stuck"), "{}", comments[0].body);
    let cancels = app
        .mutations()
        .iter()
        .filter(|m| m.ends_with(&format!("{}/cancel", long.run_id)))
        .count();
    assert_eq!(cancels, 1);
}

/// The Currents API down for a while, polling every second: a failed poll is not
/// retried past the next poll, which does all its work, so failed polls do not pile up
/// in the store to run back to back once the API is back.
#[tokio::test]
async fn failed_polls_do_not_pile_up_during_an_outage() {
    let app = spawn_app_with(AppOptions {
        rules: "[[rules]]\nname = \"stuck\"\nkind = \"timeout\"\nmax_duration = \"2h\"\n".into(),
        poll_interval: "1s",
        client_retries: Some((1, std::time::Duration::from_millis(10))),
        ..AppOptions::default()
    })
    .await;
    app.sim.inject_fault(
        runwarden::simulator::Fault::status(503)
            .path("/v1")
            .always(),
    );
    app.wait_for("six failed polls", 20, |a| a.currents_gets() >= 6)
        .await;
    let pending = app.bot.ctx.store.count_unprocessed().await.unwrap();
    assert!(pending <= 1, "{pending} polls waiting for a retry");
}

/// A weekly retention slot missed by a downtime longer than a day (its last sweep a week
/// before the missed slot, the bot back 36 h after it) still fires once, at the start.
#[tokio::test]
async fn a_weekly_slot_missed_by_a_long_downtime_fires_once() {
    use chrono::{Datelike, Timelike};
    let now = chrono::Utc::now();
    let missed = (now - chrono::Duration::hours(36))
        .with_second(0)
        .unwrap()
        .with_nanosecond(0)
        .unwrap();
    let cron = format!(
        "{} {} * * {}",
        missed.minute(),
        missed.hour(),
        missed.weekday().num_days_from_sunday()
    );
    let rules = format!(
        "[[rules]]\nname = \"weekly\"\nkind = \"retention\"\nschedule = \"{cron}\"\nolder_than = \"30d\"\n"
    );
    let app = spawn_app(&rules).await;
    let store = &app.bot.ctx.store;
    store
        .claim_slot("weekly", missed - chrono::Duration::days(7), now)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let last = store.last_slot("weekly").await.unwrap();
        if last == Some(missed) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the missed slot {missed} never fired (last: {last:?})"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// `max_duration = "auto"`: the history listing of a branch is refused for good (a
/// 400). That must not fail the poll: the other runs are still checked (the fixed limit
/// cancels its run in that same poll), and the refused listing is not asked again for an
/// hour: that branch's limit is `fallback` meanwhile (the 30-minute run stays).
#[tokio::test]
async fn a_history_listing_refused_for_good_does_not_stop_the_poll() {
    let rules = "[[rules]]\nname = \"auto\"\nkind = \"timeout\"\nmax_duration = \"auto\"\nfallback = \"2h\"\n[rules.match]\nbranches = [\"feat/hist\"]\n\n\
                 [[rules]]\nname = \"fixed\"\nkind = \"timeout\"\nmax_duration = \"1h\"\n[rules.match]\nbranches = [\"feat/other\"]\n";
    let app = app_with_history(rules).await;
    let listing = format!("/v1/projects/{PROJECT}/runs");
    let long = app.sim.add_run(run("feat/hist", "new", 30)).unwrap();
    let other = app.sim.add_run(run("feat/other", "oth", 90)).unwrap();
    // The next listing of runs in progress goes through; the history's after it is
    // refused.
    let refused = app.sim.inject_fault(
        runwarden::simulator::Fault::status(400)
            .on("GET", &listing)
            .after(1),
    );
    let cancel = |id: &str| format!("PUT /v1/runs/{id}/cancel");
    let other_cancel = cancel(&other.run_id);
    app.wait_for("the fixed limit's cancel", 20, |a| {
        a.mutations().contains(&other_cancel)
    })
    .await;
    assert!(
        app.sim.faults().iter().all(|f| f.id != refused),
        "the history listing was refused"
    );
    // Three more polls: the auto limit stays `fallback` (2 h) for this branch.
    let before = app.currents_gets();
    app.wait_for("three more polls", 10, |a| a.currents_gets() >= before + 3)
        .await;
    assert!(
        !app.mutations().contains(&cancel(&long.run_id)),
        "{:?}",
        app.mutations()
    );
}

/// After polls failed for a while (an outage of the API), the next poll looks back to the
/// start of the last poll that covered every project, not only two intervals: a run that
/// started and finished during the outage is summarised too.
#[tokio::test]
async fn after_failed_polls_the_look_back_reaches_the_last_good_poll() {
    let rules = "[[rules]]\nname = \"pr-summary\"\nkind = \"summary\"\n";
    let app = spawn_app_with(AppOptions {
        rules: rules.into(),
        poll_interval: "1s",
        ..AppOptions::default()
    })
    .await;
    // After the first poll (between two polls, a second apart): as if the last good poll
    // was 20 minutes ago and every poll since had failed.
    app.wait_for("the first poll", 10, |a| {
        a.bot.ctx.last_poll.lock().unwrap().is_some()
    })
    .await;
    *app.bot.ctx.last_poll.lock().unwrap() =
        Some(chrono::Utc::now() - chrono::Duration::minutes(20));
    let during = ended("feat/outage", "0u7a9e", 10, "failed");
    let during = app.sim.add_run(during).unwrap();
    app.open_pr("feat/outage", "0u7a9e", 13);
    app.wait_audit("the summary of the run ended during the outage", 15, |a| {
        a.iter().any(|e| {
            e.action == "summarize" && e.run_id == during.run_id && e.outcome.as_str() == "done"
        })
    })
    .await;
    assert_eq!(app.sim.comments(Some(REPO), Some(13)).len(), 1);
}

/// The shutdown gives back this process's named locks too (a summary cut short by the
/// shutdown's grace leaves its repository's lock): another replica's summaries of that
/// repository do not wait for the lock to expire.
#[tokio::test]
async fn the_shutdown_gives_back_the_locks_of_this_process() {
    let app = spawn_app(SUPERSEDE).await;
    let store = app.bot.ctx.store.clone();
    let me = app.bot.ctx.worker_id.clone();
    // As the process itself holds a lock, and as each of its summaries holds its
    // repository's (`{worker}:{uuid}`); and another process's whose id begins with this
    // one's, which stays.
    let holders = [
        ("poller-like", me.clone()),
        ("summary:acme/web", format!("{me}:0f3a")),
        ("summary:acme/api", format!("{me}7:0f3a")),
    ];
    for (name, holder) in &holders {
        let held = store
            .try_acquire_lease(
                name,
                holder,
                std::time::Duration::from_secs(600),
                chrono::Utc::now(),
            )
            .await
            .unwrap();
        assert!(held, "{name}");
    }
    let TestApp { bot, .. } = app;
    tokio::time::timeout(std::time::Duration::from_secs(15), bot.shutdown())
        .await
        .expect("shutdown");
    assert_eq!(store.lease_holder("poller-like").await.unwrap(), None);
    assert_eq!(store.lease_holder("summary:acme/web").await.unwrap(), None);
    assert_eq!(
        store
            .lease_holder("summary:acme/api")
            .await
            .unwrap()
            .map(|(h, _)| h),
        Some(format!("{me}7:0f3a"))
    );
}

/// An action its lease gave to another worker, which finished it meanwhile: this
/// worker's late outcome is not written over it, and not counted a second time in
/// `runwarden_actions_total` (nor in the latency histogram).
#[tokio::test]
async fn a_late_outcome_of_an_action_finished_elsewhere_is_not_counted_again() {
    let app = spawn_app(SUPERSEDE).await;
    let created = app.sim.add_run(run("feat/late", "1a7e", 5)).unwrap();
    let store = &app.bot.ctx.store;
    let now = chrono::Utc::now();
    // Due in an hour, so that this process's executor leaves it alone.
    let later = now + chrono::Duration::hours(1);
    store
        .record_decisions(&[runwarden::store::NewDecision {
            at: now,
            rule: "cancel-superseded".into(),
            kind: "supersede".into(),
            action: "cancel".into(),
            run_id: created.run_id.clone(),
            project_id: PROJECT.into(),
            branch: Some("feat/late".into()),
            sha: Some("1a7e".into()),
            reason: "test".into(),
            dry_run: false,
            not_before: Some(later),
            action_key: format!("cancel:{}", created.run_id),
            payload: None,
            skip: None,
        }])
        .await
        .unwrap();
    let mut claimed = store
        .claim_due_actions(
            later + chrono::Duration::seconds(1),
            10,
            std::time::Duration::from_secs(60),
            &app.bot.ctx.worker_id,
        )
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    let stale = claimed.remove(0);
    // Another worker finished it meanwhile.
    assert!(
        store
            .complete_action(
                stale.id,
                runwarden::store::ActionOutcome::Done,
                "cancelled elsewhere"
            )
            .await
            .unwrap()
    );
    runwarden::actions::execute(&app.bot.ctx, stale).await;
    let counted = app.bot.ctx.metrics.get(
        "runwarden_actions_total",
        &[
            ("rule", "cancel-superseded"),
            ("kind", "supersede"),
            ("action", "cancel"),
            ("outcome", "done"),
        ],
    );
    assert_eq!(counted, 0);
    let a = store
        .action_by_key(&format!("cancel:{}", created.run_id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.detail.as_deref(), Some("cancelled elsewhere"));
}

/// An event still failing a day after it arrived (the API down all along) is
/// dead-lettered, with its error kept, instead of being retried for ever.
#[tokio::test]
async fn an_event_still_failing_a_day_after_it_arrived_is_dead_lettered() {
    let app = spawn_app_with(AppOptions {
        rules: SUPERSEDE.into(),
        client_retries: Some((1, std::time::Duration::from_millis(10))),
        ..AppOptions::default()
    })
    .await;
    app.sim.inject_fault(
        runwarden::simulator::Fault::status(503)
            .path("/v1")
            .always(),
    );
    let store = &app.bot.ctx.store;
    store
        .insert_delivery(runwarden::store::NewDelivery {
            source: "currents".into(),
            delivery_id: "RUN_FINISH:old-one".into(),
            event: "RUN_FINISH".into(),
            payload: json!({"event": "RUN_FINISH", "runUrl": "https://app.currents.dev/run/r0ld"})
                .to_string(),
            received_at: chrono::Utc::now() - chrono::Duration::hours(25),
        })
        .await
        .unwrap();
    app.bot.ctx.wake.notify_one();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    let d = loop {
        let d = store
            .find_delivery("currents", "RUN_FINISH:old-one")
            .await
            .unwrap()
            .unwrap();
        if d.processed_at.is_some() {
            break d;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never given up on: {d:#?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(d.outcome.as_deref(), Some("dead-letter"), "{d:#?}");
    assert!(
        d.last_error.as_deref().is_some_and(|e| e.contains("503")),
        "{d:#?}"
    );
}

/// Two projects; the second's listing of recent runs fails on its second page. The poll
/// goes on with the first, but nothing it noted of the second (its first page) is
/// recorded as seen: the next poll finds those runs again and makes their end good.
#[tokio::test]
async fn a_project_whose_listing_fails_halfway_has_none_of_its_runs_recorded() {
    let app = spawn_app_with(AppOptions {
        rules: "[[rules]]\nname = \"pr-summary\"\nkind = \"summary\"\n".into(),
        poll_interval: "1s",
        client_retries: Some((1, std::time::Duration::from_millis(10))),
        more_projects: &["p2"],
        ..AppOptions::default()
    })
    .await;
    // Right after a poll (they come a second apart): 51 runs that started and ended
    // since, two pages of recent runs (50 a page) for the next poll.
    app.wait_for("the first poll", 10, |a| {
        a.bot.ctx.last_poll.lock().unwrap().is_some()
    })
    .await;
    let mut ids = Vec::new();
    for i in 0..51 {
        let mut r = run(&format!("feat/q{i}"), &format!("q{i}"), 0);
        r.project = Some("p2".into());
        r.state = Some("passed".into());
        ids.push(app.sim.add_run(r).unwrap().run_id);
    }
    // p2: the listing of runs in progress and the first page of recent runs go
    // through, the second page is refused.
    app.sim.inject_fault(
        runwarden::simulator::Fault::status(400)
            .on("GET", "/v1/projects/p2/runs")
            .after(2),
    );
    app.wait_audit("a summary of every run of p2", 30, |a| {
        ids.iter()
            .all(|id| a.iter().any(|e| e.run_id == *id && e.action == "summarize"))
    })
    .await;
}

/// A history listing for `max_duration = "auto"` is kept in memory, not written to the
/// store: a passed run it lists, whose webhooks were all missed, is still new to the next
/// poll, which summarises it.
#[tokio::test]
async fn a_history_listing_does_not_hide_a_missed_run_from_the_next_poll() {
    let rules = "[[rules]]\nname = \"stuck\"\nkind = \"timeout\"\nmax_duration = \"auto\"\n\
                 fallback = \"1h\"\n\n[[rules]]\nname = \"pr-summary\"\nkind = \"summary\"\n";
    let app = spawn_app(rules).await;
    let mut done = run("feat/h", "d0ne5ha", 1);
    done.state = Some("passed".into());
    done.duration_ms = Some(50_000);
    let done = app.sim.add_run(done).unwrap();
    let live = app.sim.add_run(run("feat/h", "11ve5ha", 0)).unwrap();
    let lists = app.currents_gets();
    assert_eq!(
        app.currents_hook("RUN_START", &live.run_id).await.status(),
        202
    );
    let store = &app.bot.ctx.store;
    // Recorded in the transaction that ends its processing (the history listing first).
    app.wait_run_stored(&live.run_id).await;
    assert!(
        app.currents_gets() >= lists + 2,
        "the run read and the history listing"
    );
    assert_eq!(store.get_run(&done.run_id).await.unwrap(), None);
    let mut seen = runwarden::intake::processor::Observed::default();
    let decisions =
        runwarden::intake::processor::poll_event(&app.bot.ctx, chrono::Utc::now(), &mut seen)
            .await
            .unwrap();
    assert!(
        decisions
            .iter()
            .any(|d| d.rule == "pr-summary" && d.run_id == done.run_id),
        "{decisions:#?}"
    );
}

/// A run the store believes in progress, which has ended without its webhook reaching
/// the bot, is not superseded: the branch's listing at the newer run's event does not
/// show it, so it is no longer a candidate (no cancel of a finished run).
#[tokio::test]
async fn a_run_that_ended_unseen_is_not_superseded_by_the_next_run() {
    let app = spawn_app(SUPERSEDE).await;
    let old = app.sim.add_run(run("feat/ended", "01d5ha", 5)).unwrap();
    assert_eq!(
        app.currents_hook("RUN_START", &old.run_id).await.status(),
        202
    );
    let store = &app.bot.ctx.store;
    app.wait_run_stored(&old.run_id).await;
    // It passes; no webhook tells the bot.
    app.sim
        .advance(
            &old.run_id,
            runwarden::simulator::Advance {
                finish: Some(runwarden::simulator::Outcome::Passed),
                ..Default::default()
            },
        )
        .unwrap();
    let new = app.sim.add_run(run("feat/ended", "n3w5ha", 0)).unwrap();
    assert_eq!(
        app.currents_hook("RUN_START", &new.run_id).await.status(),
        202
    );
    app.wait_run_stored(&new.run_id).await;
    let audit = store.audit(None, None, 100).await.unwrap();
    assert!(audit.is_empty(), "{audit:#?}");
    assert!(
        !app.mutations().iter().any(|m| m.contains("/cancel")),
        "{:?}",
        app.mutations()
    );
}

/// A supersede rule limited to runs in progress still lists the branch at the event of
/// a newer run that has already finished (it supersedes whatever its state): an older
/// run the store never heard of is found and cancelled.
#[tokio::test]
async fn a_finished_newer_run_supersedes_an_unknown_older_one_under_a_state_filter() {
    let rules = "[[rules]]\nname = \"cancel-superseded\"\nkind = \"supersede\"\n\
                 [rules.match]\ncompletion_states = [\"IN_PROGRESS\"]\n";
    let app = spawn_app(rules).await;
    let old = app.sim.add_run(run("feat/fast", "s10w5ha", 5)).unwrap();
    let quick = ended("feat/fast", "f4575ha", 0, "passed");
    let quick = app.sim.add_run(quick).unwrap();
    assert_eq!(
        app.currents_hook("RUN_FINISH", &quick.run_id)
            .await
            .status(),
        202
    );
    app.wait_audit("the older run cancelled", 10, |a| {
        a.iter()
            .any(|e| e.run_id == old.run_id && e.outcome.as_str() == "done")
    })
    .await;
}

/// How the last slot of a scheduled retention rule ended is recorded with the slot and
/// shown on the status page: the runs its sweep decided to delete.
#[tokio::test]
async fn the_status_page_tells_how_the_last_slot_ended() {
    use chrono::{DateTime, Utc};
    use runwarden::intake::schedules::fire_due;
    // Fires on 1 January only: the bot's own schedule loop finds no slot today.
    let rules = "[[rules]]\nname = \"yearly\"\nkind = \"retention\"\nschedule = \"0 3 1 1 *\"\nolder_than = \"30d\"\n";
    let app = spawn_app(rules).await;
    for (branch, sha) in [("feat/old-1", "01d1"), ("feat/old-2", "01d2")] {
        let r = ended(branch, sha, 60 * 24 * 45, "passed");
        app.sim.add_run(r).unwrap();
    }
    let ctx = &app.bot.ctx;
    let slot: DateTime<Utc> = "2026-01-01T03:00:00Z".parse().unwrap();
    let now = slot + chrono::Duration::seconds(30);
    // Fired here, or by the bot's own schedule loop: this call records the rule as first
    // seen before the slot, which the loop then reads too, and whichever stores the
    // slot's event first fires it (the other finds it stored).
    let fired = fire_due(ctx, slot - chrono::Duration::hours(1), now).await;
    assert!(
        fired.is_empty() || fired == vec![("yearly".to_string(), slot)],
        "{fired:?}"
    );
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        // (Recorded once its event is stored: by this call, or just after by the loop.)
        let record = ctx.store.get_slot("yearly", slot).await.unwrap();
        if let Some(summary) = record.and_then(|r| r.summary) {
            assert_eq!(summary, "2 runs to delete");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slot's sweep never ended"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let page = app.get_text("/").await;
    assert!(
        page.contains("<td>2026-01-01 03:00 UTC: 2 runs to delete</td>"),
        "{page}"
    );
}

/// A process's first poll looks back five poll intervals for runs that started and
/// finished unseen: a replica taking the poller over from one that died (its lease runs
/// out after three intervals) makes good the runs that came and went in between.
#[tokio::test]
async fn the_first_poll_makes_good_what_a_dead_pollers_lease_left_unseen() {
    let rules = "[[rules]]\nname = \"pr-summary\"\nkind = \"summary\"\n";
    let app = spawn_app_with(AppOptions {
        rules: rules.into(),
        poll_interval: "60s",
        ..AppOptions::default()
    })
    .await;
    // Started and finished four minutes ago, while no process polled.
    let gap = ended("feat/gap", "9a95ha", 4, "passed");
    let gap = app.sim.add_run(gap).unwrap();
    // An hour ago: history, not a missed event.
    let old = ended("feat/older", "01d3r5ha", 60, "passed");
    let old = app.sim.add_run(old).unwrap();
    app.wait_audit("the summary of the run in the gap", 15, |a| {
        a.iter()
            .any(|e| e.action == "summarize" && e.run_id == gap.run_id)
    })
    .await;
    let audit = app.bot.ctx.store.audit(None, None, 100).await.unwrap();
    assert!(!audit.iter().any(|e| e.run_id == old.run_id), "{audit:#?}");
}

// ---------------------------------------------------------------------------------------
// `idle_for` counts from what a run shows, not from when the bot first sees it.

const IDLE_30M: &str = "[[rules]]\nname = \"idle\"\nkind = \"timeout\"\nidle_for = \"30m\"\n";

/// A run created 2 h ago that has completed no spec, first seen by a poll (created while
/// the bot was down, or met by a fresh store): the first poll cancels it, as `plan` says,
/// instead of restarting its idle clock. A run created 10 min ago is spared, and its
/// stored progress time is its `createdAt`, kept by the polls after.
#[tokio::test]
async fn a_run_first_seen_by_a_poll_long_idle_is_cancelled_by_that_poll() {
    let app = spawn_app_with(AppOptions {
        rules: IDLE_30M.into(),
        poll_interval: "1s",
        ..AppOptions::default()
    })
    .await;
    let quiet = app.sim.add_run(run("feat/quiet", "aaa111", 120)).unwrap();
    let young = app.sim.add_run(run("feat/young", "bbb222", 10)).unwrap();
    let cancel = format!("PUT /v1/runs/{}/cancel", quiet.run_id);
    app.wait_for("the idle cancel", 15, |a| a.mutations().contains(&cancel))
        .await;
    let audit = app
        .wait_audit("cancel done", 10, |a| {
            a.iter().any(|e| e.outcome.as_str() == "done")
        })
        .await;
    assert_eq!(audit.len(), 1, "{audit:#?}");
    assert_eq!(audit[0].run_id, quiet.run_id);
    assert_eq!(
        audit[0].reason, "no spec completed for 2h > idle_for 30m",
        "{audit:#?}"
    );
    // The young run: stored with its creation as its last progress, by this poll and the
    // next ones (each observes it again).
    let store = &app.bot.ctx.store;
    let created = app.sim.run(&young.run_id).unwrap().created_at;
    app.wait_run_stored(&young.run_id).await;
    let first = store.get_run(&young.run_id).await.unwrap().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let rec = store.get_run(&young.run_id).await.unwrap().unwrap();
        assert_eq!(
            rec.progress_changed_at.timestamp_millis(),
            created.timestamp_millis(),
            "{rec:?}"
        );
        if rec.updated_at > first.updated_at {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no later poll observed the young run"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        app.sim
            .run(&young.run_id)
            .unwrap()
            .completion_state
            .as_str(),
        "IN_PROGRESS"
    );
    assert_eq!(app.mutations(), vec![cancel]);
}

/// A run whose two completed specs finished 90 min ago, first seen by its `RUN_START`
/// webhook (read with its specs): idle since its last spec completed, so it is cancelled
/// at once; its stored progress time is that completion.
#[tokio::test]
async fn a_run_first_seen_by_its_webhook_is_idle_since_its_last_completed_spec() {
    let app = spawn_app(IDLE_30M).await;
    let last = chrono::Utc::now() - chrono::Duration::minutes(90);
    let stalled = app
        .sim
        .add_run(runwarden::simulator::NewRun {
            completed: Some(2),
            last_progress_at: Some(last),
            ..run("feat/stalled", "ccc333", 120)
        })
        .unwrap();
    let done_at = app
        .sim
        .run(&stalled.run_id)
        .unwrap()
        .specs
        .iter()
        .filter_map(|s| s.completed_at)
        .max()
        .expect("completed specs");
    assert_eq!(
        app.currents_hook("RUN_START", &stalled.run_id)
            .await
            .status(),
        202
    );
    let cancel = format!("PUT /v1/runs/{}/cancel", stalled.run_id);
    app.wait_for("the idle cancel", 10, |a| a.mutations().contains(&cancel))
        .await;
    let audit = app
        .wait_audit("cancel done", 10, |a| {
            a.iter().any(|e| e.outcome.as_str() == "done")
        })
        .await;
    assert_eq!(
        audit[0].reason, "no spec completed for 1h30m > idle_for 30m",
        "{audit:#?}"
    );
    let rec = app
        .bot
        .ctx
        .store
        .get_run(&stalled.run_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        rec.progress_changed_at.timestamp_millis(),
        done_at.timestamp_millis(),
        "{rec:?}"
    );
}
