//! Figure 5: rules evaluation — a million runs in memory through supersede and retention.
//!
//! `runwarden::rules::plan` (what `runwarden plan` evaluates) over 1,000,000 runs of 3
//! projects spread over 31 days, on 1,000 feature branches plus `main` each: the newest 1%
//! still in progress, a supersede rule on every branch but `main`, and a retention rule
//! (`older_than = 30d`, `keep_latest = 3`, `keep_last_passed`, pinned tags). Only the
//! `plan` call is timed; it runs on one thread (the engine is single-threaded).

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use runwarden::config::load_str;
use runwarden::currents::{CompletionState, Run, RunStatus};
use runwarden::rules::{RunsView, plan};

use crate::Args;
use crate::report::{Goal, Row};

pub const N: i64 = 1_000_000;
/// Feature branches per project (with `main`): the newest 10,000 runs, in progress, hold
/// about 3 runs per group, so supersede has work.
const BRANCHES: i64 = 1_000;
/// Target: seconds for the whole evaluation.
pub const TARGET_S: f64 = 1.0;

const CONFIG: &str = r#"
[currents]
projects = ["p1", "p2", "p3"]

[[rules]]
name = "superseded"
kind = "supersede"
[rules.match]
branches = ["*", "!main"]

[[rules]]
name = "retention"
kind = "retention"
schedule = "0 3 * * *"
older_than = "30d"
keep_latest = 3
keep_last_passed = true
pin_tags = ["release"]
max_deletions = 1000000
"#;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0)
        .single()
        .expect("valid time")
}

/// The runs: a realistic list item (one group, commit metadata), cloned and varied.
pub fn runs(n: i64) -> Vec<Run> {
    let template: Run = serde_json::from_value(serde_json::json!({
        "runId": "x", "projectId": "p1", "createdAt": now(),
        "completionState": "IN_PROGRESS", "status": "RUNNING", "tags": [],
        "groups": [{"groupId": "g", "platform": {"osName": "linux", "browserName": "chromium"},
                    "instances": {"overall": 10, "claimed": 4, "complete": 2, "passes": 2, "failures": 0},
                    "tests": {"overall": 50, "passes": 10, "failures": 0, "pending": 0, "skipped": 0, "flaky": 0}}],
        "meta": {
            "ciBuildId": "acme/web-1-1",
            "commit": {"sha": "s", "branch": "main", "remoteOrigin": "https://github.com/acme/web.git",
                       "authorName": "Ada Lovelace", "authorEmail": "ada@example.com",
                       "message": "Tighten the retry budget of the flaky spec runner"},
            "framework": {"type": "pw", "version": "1.49.0"}
        }
    }))
    .expect("valid run");
    let span = 31 * 86_400;
    (0..n)
        .map(|i| {
            let mut r = template.clone();
            r.run_id = format!("r{i:07}");
            r.project_id = format!("p{}", i % 3 + 1);
            r.created_at = now() - chrono::Duration::seconds(span - span * i / n);
            r.meta.commit.sha = Some(format!("{:040x}", i % 997));
            r.meta.commit.branch = Some(if i % 10 == 0 {
                "main".into()
            } else {
                format!("feat/{}", (i / 3) % BRANCHES)
            });
            r.meta.ci_build_id = Some(format!("acme/web-{i}-1"));
            if i < n - n / 100 {
                r.completion_state = CompletionState::Complete;
                r.status = if i % 4 == 0 {
                    RunStatus::Failed
                } else {
                    RunStatus::Passed
                };
            }
            if i % 1000 == 0 {
                r.tags = vec!["release".into()];
            }
            r
        })
        .collect()
}

pub fn run(args: &Args) -> anyhow::Result<Vec<Row>> {
    let config = load_str(CONFIG, "bench.toml", &[])
        .map_err(|e| anyhow::anyhow!("bench config: {e}"))?
        .config;
    let build = Instant::now();
    let runs = runs(N);
    let built = build.elapsed();
    let reps = if args.quick { 1 } else { 3 };
    let mut times: Vec<Duration> = Vec::new();
    let mut counts = (0, 0);
    for _ in 0..reps {
        let t = Instant::now();
        let e = plan(&config, &RunsView::runs_only(&runs), now());
        times.push(t.elapsed());
        let by = |k: &str| e.decisions.iter().filter(|d| d.kind == k).count();
        counts = (by("supersede"), by("retention"));
        anyhow::ensure!(
            e.breaches.is_empty(),
            "retention breaker tripped: {:?}",
            e.breaches
        );
    }
    anyhow::ensure!(
        counts.0 > 0 && counts.1 > 0,
        "expected both kinds of decisions, got {counts:?}"
    );
    times.sort();
    let median = times[times.len() / 2];
    drop(runs);
    Ok(vec![
        Row::target(
            "rules_eval_1m_s",
            "rules: 1M runs, supersede + retention, 1 thread",
            median.as_secs_f64(),
            "s",
            Goal::AtMost,
            TARGET_S,
        )
        .note(format!(
            "median of {reps}: {} supersede + {} retention decisions; building the runs took {:.2} s (not timed)",
            counts.0,
            counts.1,
            built.as_secs_f64()
        )),
    ])
}
