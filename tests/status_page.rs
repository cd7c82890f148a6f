//! The status page in a real headless Chromium: it renders the rules, the recent
//! decisions with reasons and outcomes, and links to /metrics, with no external assets.
//! Chromium is installed by `.ci/run`; this test fails (it does not skip) without it.

mod common;

use std::process::Command;

use common::*;

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
    let html = app
        .http
        .get(app.url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
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
