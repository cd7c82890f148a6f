//! SCRATCH (audit): demonstrations of suspected bugs. To be deleted.

mod common;

use chrono::{TimeZone, Utc};
use common::*;
use runwarden::config::load_str;
use runwarden::currents::Run;
use runwarden::rules::{self, RunsView, Trigger};

fn prun(id: &str, project: &str, min: u32, sha: &str) -> Run {
    serde_json::from_value(serde_json::json!({
        "runId": id, "projectId": project,
        "createdAt": Utc.with_ymd_and_hms(2026, 1, 1, 12, min, 0).unwrap(),
        "completionState": "IN_PROGRESS", "status": "RUNNING",
        "meta": {"commit": {"branch": "b", "sha": sha, "remoteOrigin": "https://github.com/acme/web"}}
    }))
    .unwrap()
}

/// Finding: a `[github] repos` entry for a project missing from `[currents] projects`
/// makes pushes to that repo list and cancel that project's runs.
#[test]
fn audit_push_reaches_unconfigured_mapped_project() {
    let text = "[currents]\nprojects = [\"p1\"]\n[github]\nrepos = { p1 = \"acme/web\", px = \"acme/web\" }\n[[rules]]\nname = \"sup\"\nkind = \"supersede\"\n";
    let loaded = load_str(text, "rules.toml", &[]).unwrap();
    eprintln!("warnings: {:?}", loaded.warnings);
    let c = loaded.config;
    let ps = rules::projects_for_repo(&c, "acme/web");
    eprintln!("projects_for_repo = {ps:?}");
    let runs = vec![prun("rx", "px", 0, "old")];
    let t = Trigger::Push {
        repo: "acme/web".into(),
        branch: "b".into(),
        head_sha: "new".into(),
        deleted: false,
        pushed_at: Utc.with_ymd_and_hms(2026, 1, 1, 12, 30, 0).unwrap(),
    };
    let now = Utc.with_ymd_and_hms(2026, 1, 1, 12, 31, 0).unwrap();
    let d = rules::evaluate(&c, &t, &RunsView::runs_only(&runs), now).decisions;
    eprintln!("decisions = {d:?}");
    assert!(ps.contains(&"px".to_string()), "BUG expected: px listed");
    assert_eq!(d.len(), 1, "BUG expected: run of unconfigured project cancelled");
}

/// Finding: a Cypress run shaped like runs-api.txt (cypressVersion, no meta.framework)
/// is not matched by `frameworks = ["cypress"]`.
#[test]
fn audit_cypress_run_without_meta_framework() {
    let text = "[currents]\nprojects = [\"p\"]\n[[rules]]\nname = \"sup\"\nkind = \"supersede\"\n[rules.match]\nframeworks = [\"cypress\"]\n";
    let c = load_str(text, "rules.toml", &[]).unwrap().config;
    let r: Run = serde_json::from_value(serde_json::json!({
        "runId": "r", "projectId": "p", "createdAt": "2026-01-01T00:00:00Z",
        "completionState": "IN_PROGRESS", "status": "RUNNING", "cypressVersion": "9.5.4",
        "meta": {"commit": {"branch": "b", "sha": "s"}}
    }))
    .unwrap();
    eprintln!("check = {:?}", c.rules[0].filter.check(&r));
    assert!(!c.rules[0].filter.matches(&r), "BUG expected: no match");
}

const AUTO_AND_SUMMARY: &str = "[[rules]]\nname = \"stuck\"\nkind = \"timeout\"\nmax_duration = \"auto\"\nfallback = \"1h\"\n\n[[rules]]\nname = \"sum\"\nkind = \"summary\"\n";

fn passed_run(branch: &str, sha: &str) -> runwarden::simulator::NewRun {
    let mut r = run(branch, sha, 1);
    r.state = Some("passed".into());
    r.duration_ms = Some(50_000);
    r
}

async fn poll_summaries_of(app: &TestApp, run_id: &str) -> usize {
    let mut seen = runwarden::intake::processor::Observed::default();
    let d = runwarden::intake::processor::poll_event(&app.bot.ctx, Utc::now(), &mut seen)
        .await
        .unwrap();
    eprintln!("poll decisions: {:?}", d.iter().map(|d| (&d.rule, d.action, &d.run_id)).collect::<Vec<_>>());
    d.iter()
        .filter(|d| d.run_id == run_id && d.action == rules::Action::Summarize)
        .count()
}

/// Control: a finished run whose webhook was missed gets its summary from the poll.
#[tokio::test]
async fn audit_history_listing_control() {
    let app = spawn_app(AUTO_AND_SUMMARY).await;
    let r2 = app.sim.add_run(passed_run("feat/h", "s2")).unwrap().run_id;
    assert_eq!(poll_summaries_of(&app, &r2).await, 1, "control: summary synthesised");
}

/// Finding: an event on the same branch lists the history for max_duration = "auto",
/// which writes the unseen finished run to the store; the poll then no longer
/// synthesises its RUN_FINISH, so it is never summarised.
#[tokio::test]
async fn audit_history_listing_swallows_missed_finish() {
    let app = spawn_app(AUTO_AND_SUMMARY).await;
    let r2 = app.sim.add_run(passed_run("feat/h", "s2")).unwrap().run_id;
    let r3 = app.sim.add_run(run("feat/h", "s3", 0)).unwrap().run_id;
    assert_eq!(app.currents_hook("RUN_START", &r3).await.status(), 202);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while app.bot.ctx.store.get_run(&r3).await.unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "r3 never processed");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    eprintln!("r2 in store after r3's event: {:?}", app.bot.ctx.store.get_run(&r2).await.unwrap().map(|r| r.completion_state));
    assert_eq!(poll_summaries_of(&app, &r2).await, 0, "BUG expected: summary lost");
}

/// Finding: a RunSeen view keeps the store's stale IN_PROGRESS copy of a run that the
/// fresh listing of the branch no longer shows in progress; supersede decides to cancel
/// a finished run.
#[tokio::test]
async fn audit_stale_store_copy_is_superseded() {
    let app = spawn_app("[[rules]]\nname = \"sup\"\nkind = \"supersede\"\n").await;
    let a = app.sim.add_run(run("feat/s", "sha1", 10)).unwrap().run_id;
    assert_eq!(app.currents_hook("RUN_START", &a).await.status(), 202);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while app.bot.ctx.store.get_run(&a).await.unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "a never processed");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // A finishes; its RUN_FINISH webhook never reaches the bot.
    app.sim
        .advance(
            &a,
            runwarden::simulator::Advance {
                finish: Some(runwarden::simulator::Outcome::Passed),
                ..Default::default()
            },
        )
        .unwrap();
    let b = app.sim.add_run(run("feat/s", "sha2", 1)).unwrap().run_id;
    assert_eq!(app.currents_hook("RUN_START", &b).await.status(), 202);
    let audit = app
        .wait_audit("a decision about a", 10, |x| x.iter().any(|e| e.run_id == a && e.outcome.as_str() != "planned"))
        .await;
    eprintln!("audit: {audit:#?}");
    eprintln!("mutations: {:?}", app.mutations());
    eprintln!("a is {}", app.sim.run(&a).unwrap().completion_state.as_str());
}
