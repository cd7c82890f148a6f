//! The status page in a real headless Chromium: it renders the rules, the recent
//! decisions with reasons and outcomes, and links to /metrics, with no external assets.
//! Chromium is installed by `.ci/run`; this test fails (it does not skip) without it.
//! The other tests read the page with a plain HTTP GET.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use runwarden::simulator::{Fault, FaultKind};
use runwarden::store::ActionState;

fn chromium() -> String {
    for c in ["chromium", "chromium-browser", "google-chrome"] {
        if Command::new("which")
            .arg(c)
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return c.to_string();
        }
    }
    panic!(
        "headless Chromium is required for this test (apt-get install chromium; .ci/run does it)"
    );
}

fn headless(args: &[&str], profile: &std::path::Path) -> std::process::Output {
    Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=412,900",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect("cannot start chromium")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_status_page_renders_rules_and_decisions_in_a_real_browser() {
    let rules = "[[rules]]\nname = \"cancel-superseded\"\nkind = \"supersede\"\n\n[[rules]]\nname = \"nightly\"\nkind = \"retention\"\nschedule = \"0 3 * * *\"\nolder_than = \"30d\"\n";
    let app = spawn_app(rules).await;
    let old = app.sim.add_run(run("feat/page", "aaa111", 10)).unwrap();
    let new = app.sim.add_run(run("feat/page", "bbb222", 1)).unwrap();
    assert_eq!(
        app.currents_hook("RUN_START", &new.run_id).await.status(),
        202
    );
    app.wait_audit("cancel done", 10, |a| {
        a.iter().any(|e| e.outcome.as_str() == "done")
    })
    .await;

    let url = app.url("/");
    let profile = tempfile::tempdir().unwrap();
    let out = tokio::task::spawn_blocking({
        let url = url.clone();
        let p = profile.path().to_path_buf();
        move || headless(&["--dump-dom", &url], &p)
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(dom.contains("<h1>runwarden</h1>"), "{dom}");
    assert!(dom.contains("cancel-superseded"), "{dom}");
    assert!(dom.contains("nightly"), "{dom}");
    assert!(
        dom.contains(&old.run_id),
        "the decision about the old run is listed: {dom}"
    );
    assert!(
        dom.contains("superseded by run"),
        "the reason is shown: {dom}"
    );
    assert!(dom.contains("href=\"/metrics\""), "{dom}");
    assert!(dom.contains("03:00 UTC"), "next retention slot: {dom}");
    assert!(
        !dom.contains("http://") || !dom.contains("<script src"),
        "no external assets"
    );

    // A screenshot at phone width, for people to look at.
    // Kept as a test artifact for people to look at.
    let artifacts = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    let out = tokio::task::spawn_blocking({
        let p = profile.path().to_path_buf();
        let shot = shot.clone();
        move || headless(&[&format!("--screenshot={}", shot.display()), &url], &p)
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 5_000,
        "screenshot of {} bytes",
        png.len()
    );
}

#[tokio::test]
async fn the_status_page_never_shows_secrets_and_escapes_html() {
    let app = spawn_app("[[rules]]\nname = \"<b>x</b>\"\nkind = \"supersede\"\n").await;
    let html = app.get_text("/").await;
    assert!(html.contains("&lt;b&gt;x&lt;/b&gt;"), "{html}");
    for secret in [
        CURRENTS_SECRET,
        GITHUB_SECRET,
        ADMIN_TOKEN,
        "sim-key",
        "gh-token",
    ] {
        assert!(!html.contains(secret), "{secret} leaked");
    }
}

/// The part of the page from the heading `<h2>{title}` to the next heading.
fn page_section<'a>(html: &'a str, title: &str) -> &'a str {
    let start = html
        .find(&format!("<h2>{title}"))
        .unwrap_or_else(|| panic!("no section {title}: {html}"));
    let rest = &html[start..];
    let end = rest[4..].find("<h2>").map_or(rest.len(), |i| i + 4);
    &rest[..end]
}

#[tokio::test]
async fn failed_and_pending_actions_stay_listed_behind_many_newer_decisions() {
    // SPEC §6: a failed action stays visible on the status page. Here it (and a pending
    // one) is older than the 50 newest decisions the page shows as recent.
    let rules = "[[rules]]\nname = \"cancel-superseded\"\nkind = \"supersede\"\n\n[[rules]]\nname = \"retention\"\nkind = \"retention\"\nschedule = \"0 3 * * *\"\nolder_than = \"30d\"\n";
    let app = spawn_app_with(AppOptions {
        rules: rules.into(),
        executor: Some(runwarden::actions::ExecutorOptions {
            max_attempts: 1000,
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_millis(500),
            lease: Duration::from_secs(60),
        }),
        client_retries: Some((1, Duration::from_millis(10))),
        ..AppOptions::default()
    })
    .await;
    // x's cancel is refused for good (403: failed at once); y's keeps failing with 503
    // (pending, retried).
    let mut olds = Vec::new();
    for (branch, status) in [("feat/refused", 403u16), ("feat/flaky", 503)] {
        let old = app
            .sim
            .add_run(run(branch, &format!("{branch}-old"), 10))
            .unwrap();
        let new = app
            .sim
            .add_run(run(branch, &format!("{branch}-new"), 1))
            .unwrap();
        app.sim.inject_fault(
            Fault::new(FaultKind::Status {
                status,
                body: None,
                retry_after: None,
            })
            .on("PUT", format!("/v1/runs/{}/cancel", old.run_id))
            .always(),
        );
        assert_eq!(
            app.currents_hook("RUN_START", &new.run_id).await.status(),
            202
        );
        olds.push(old.run_id);
    }
    let (failed, pending) = (olds[0].clone(), olds[1].clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let store = &app.bot.ctx.store;
        let f = store
            .action_by_key(&format!("cancel:{failed}"))
            .await
            .unwrap();
        let p = store
            .action_by_key(&format!("cancel:{pending}"))
            .await
            .unwrap();
        if f.as_ref().is_some_and(|a| a.state == ActionState::Failed)
            && p.as_ref().is_some_and(|a| a.attempts >= 1)
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out: {f:#?} {p:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // 60 newer decisions: a retention sweep deleting 60 old runs.
    let n = 60;
    for i in 0..n {
        let mut r = run(&format!("feat/old-{i}"), &format!("sha{i}"), 60 * 24 * 40);
        r.state = Some("passed".into());
        app.sim.add_run(r).unwrap();
    }
    let r = app.admin_sweep("retention").await;
    assert_eq!(r.status(), 202);
    app.wait_audit("every delete done", 30, |a| {
        a.iter()
            .filter(|e| e.action == "delete" && e.outcome.as_str() == "done")
            .count()
            == n
    })
    .await;

    let html = app.get_text("/").await;
    let recent = page_section(&html, "Recent decisions");
    assert!(
        !recent.contains(&failed) && !recent.contains(&pending),
        "both are older than the recent decisions shown: {recent}"
    );
    let failed_part = page_section(&html, "Failed actions");
    assert!(
        failed_part.starts_with("<h2>Failed actions (1)"),
        "{failed_part}"
    );
    assert!(failed_part.contains(&failed), "{failed_part}");
    assert!(
        failed_part.contains("HTTP 403"),
        "the error is shown: {failed_part}"
    );
    let pending_part = page_section(&html, "Pending actions");
    assert!(
        pending_part.starts_with("<h2>Pending actions (1)"),
        "{pending_part}"
    );
    assert!(pending_part.contains(&pending), "{pending_part}");
}

/// The failed actions' section has one row per action, however many rules decided it,
/// and its heading counts every failed action, also those beyond the rows shown.
#[tokio::test]
async fn failed_actions_are_counted_and_listed_once_per_action() {
    let app =
        spawn_app("[[rules]]\nname = \"keep-30d\"\nkind = \"retention\"\nolder_than = \"30d\"\n")
            .await;
    let store = &app.bot.ctx.store;
    let decide = |rule: &str, run: &str| runwarden::store::NewDecision {
        at: chrono::Utc::now(),
        rule: rule.into(),
        kind: "retention".into(),
        action: "delete".into(),
        run_id: run.into(),
        project_id: PROJECT.into(),
        branch: Some("main".into()),
        sha: None,
        reason: format!("{rule}: {run} is old"),
        dry_run: false,
        // Held, so that the bot's executor leaves them to this test.
        not_before: Some(chrono::Utc::now() + chrono::Duration::days(1)),
        action_key: format!("delete:{run}"),
        payload: None,
        skip: None,
    };
    // The action two rules decided is the newest: it is among the rows shown.
    let mut decisions: Vec<_> = (0..101)
        .map(|i| decide("keep-30d", &format!("run-{i:03}")))
        .collect();
    decisions.extend([
        decide("keep-30d", "run-twice"),
        decide("keep-7d", "run-twice"),
    ]);
    let recorded = store.record_decisions(&decisions).await.unwrap();
    let mut ids: Vec<i64> = recorded.iter().filter_map(|r| r.action_id).collect();
    ids.dedup();
    assert_eq!(ids.len(), 102);
    for id in ids {
        assert!(store.fail_action(id, "HTTP 403").await.unwrap());
    }
    let html = app.get_text("/").await;
    let failed = page_section(&html, "Failed actions");
    assert!(
        failed.starts_with("<h2>Failed actions (102)</h2>"),
        "{failed}"
    );
    assert!(failed.contains("Only the newest 100 are shown"), "{failed}");
    assert_eq!(
        failed.matches("<code>run-twice</code>").count(),
        1,
        "{failed}"
    );
    assert!(failed.contains("keep-30d, keep-7d"), "{failed}");
}

/// When the page's store reads were made: the `datetime` of its "as of" (to the
/// microsecond, so that two sets of reads never look alike).
fn read_at(html: &str) -> &str {
    let mark = "as of <time datetime=\"";
    let start = html
        .find(mark)
        .unwrap_or_else(|| panic!("no \"as of\": {html}"))
        + mark.len();
    html[start..].split('"').next().unwrap()
}

/// Finding: every request of the (unauthenticated) status page ran its seven store
/// queries, two of them over whole tables; `/metrics` and `/readyz` share theirs. Many
/// requests at once now share one set of reads, those within
/// `status_page::STATUS_PAGE_TTL` (2 s) reuse it (a closed store still shows as read),
/// and the first after it reads the store again (the outage shows).
#[tokio::test]
async fn the_page_reads_the_store_once_per_ttl_however_many_ask() {
    use runwarden::server::status_page::STATUS_PAGE_TTL;
    // The reuse can only be told within one TTL: an attempt that a loaded machine made
    // slower than that proves nothing either way and is made again (three at most).
    for attempt in 1..=3 {
        let app = spawn_app("[[rules]]\nname = \"nightly\"\nkind = \"retention\"\nschedule = \"0 3 * * *\"\nolder_than = \"30d\"\n").await;
        let get = || async {
            let r = app.http.get(app.url("/")).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        };
        let started = tokio::time::Instant::now();
        let pages = futures::future::join_all((0..50).map(|_| get())).await;
        app.bot.ctx.store.close().await;
        let (status, html) = get().await;
        if started.elapsed() >= STATUS_PAGE_TTL {
            eprintln!(
                "attempt {attempt}: {:?} for the requests, longer than the TTL; again",
                started.elapsed()
            );
            continue;
        }
        let first = read_at(&pages[0].1).to_string();
        for (status, html) in &pages {
            assert_eq!(*status, 200, "{html}");
            assert_eq!(read_at(html), first, "one set of reads for all of them");
        }
        assert!(
            pages[0].1.contains("read from the store at most every 2 s"),
            "{}",
            pages[0].1
        );
        assert_eq!(status, 200, "within the TTL, nothing is read: {html}");
        assert_eq!(read_at(&html), first);

        // Past the TTL: read again, and the closed store shows.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let html = loop {
            let (status, html) = get().await;
            if status == 503 {
                break html;
            }
            assert_eq!(read_at(&html), first, "read again, yet the store answered");
            assert!(tokio::time::Instant::now() < deadline, "{html}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(started.elapsed() >= STATUS_PAGE_TTL);
        assert_ne!(read_at(&html), first);
        assert!(html.contains("The store could not be read"), "{html}");
        return;
    }
    panic!("three attempts were each slower than the TTL: the reuse could not be checked");
}
