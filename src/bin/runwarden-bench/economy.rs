//! Figure 3: API economy — Currents requests per decision vs the minimum (SPEC §4, §6).
//!
//! Each scenario runs against a fresh in-process simulator and bot (no rate cap, polling
//! off) and counts the requests the bot's Currents client sent, from the trigger until
//! the bot is idle again (plus a grace period, so that late stragglers count):
//!
//! | scenario | minimum |
//! |---|---|
//! | supersede on a Currents `RUN_START` of the newer run | 1 read of the new run + 1 list of the branch's in-progress runs + 1 cancel + 1 verify = 4 |
//! | supersede on a GitHub `push` | 1 list + 1 cancel + 1 verify = 3 |
//! | timeout found by a poll (10 in-progress runs, 1 stuck) | ⌈10/50⌉ list pages + 1 cancel + 1 verify = 3 |
//! | retention sweep of N runs | ⌈N/50⌉ list pages + 1 delete per expired run |

use std::time::{Duration, Instant};

use runwarden::currents::client::ClientStats;
use runwarden::simulator::{GenerateSpec, NewProject, NewRun};
use runwarden::store::NewDelivery;

use crate::Args;
use crate::harness::{self, CURRENTS_SECRET, GITHUB_SECRET, InProcBot, InProcSim, PROJECT, REPO};
use crate::report::{Goal, Row};

const SUPERSEDE: &str = "[[rules]]\nname = \"superseded\"\nkind = \"supersede\"\n";
const TIMEOUT: &str = "[[rules]]\nname = \"stuck\"\nkind = \"timeout\"\nmax_duration = \"1h\"\n";
const RETENTION: &str = "[[rules]]\nname = \"retention\"\nkind = \"retention\"\nschedule = \"0 3 * * *\"\n\
    older_than = \"80d\"\nkeep_latest = 3\nkeep_last_passed = true\npin_tags = [\"keep\"]\nmax_deletions = 1000000\n";

/// Requests by operation between two snapshots.
fn diff(before: &ClientStats, after: &ClientStats) -> Vec<(String, u64)> {
    let ops = [
        "get_run",
        "list_runs",
        "cancel_run",
        "delete_run",
        "find_run",
        "list_projects",
        "get_project",
        "get_instance",
    ];
    let mut out: Vec<(String, u64)> = ops
        .iter()
        .map(|op| {
            (
                op.to_string(),
                after.requests_for(op) - before.requests_for(op),
            )
        })
        .filter(|(_, n)| *n > 0)
        .collect();
    let known: u64 = out.iter().map(|(_, n)| n).sum();
    let total = after.total_requests - before.total_requests;
    if total > known {
        out.push(("other".into(), total - known));
    }
    out
}

fn total(ops: &[(String, u64)]) -> u64 {
    ops.iter().map(|(_, n)| n).sum()
}

fn breakdown(ops: &[(String, u64)]) -> String {
    ops.iter()
        .map(|(op, n)| format!("{op} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

async fn project(sim: &InProcSim, id: &str) -> anyhow::Result<()> {
    sim.world.add_project(NewProject {
        project_id: Some(id.into()),
        repo: Some(REPO.into()),
        ..Default::default()
    })?;
    Ok(())
}

fn running(branch: &str, sha: &str, minutes_ago: i64) -> NewRun {
    NewRun {
        project: Some(PROJECT.into()),
        branch: Some(branch.into()),
        sha: Some(sha.into()),
        created_at: Some(chrono::Utc::now() - chrono::Duration::minutes(minutes_ago)),
        emit: Some(false),
        ..Default::default()
    }
}

/// Waits until the bot is idle and `expect` actions are done, then a grace period.
async fn finish(bot: &InProcBot, action: &str, expect: usize) -> anyhow::Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        bot.settle(Duration::from_secs(60)).await?;
        let audit = bot
            .bot
            .ctx
            .store
            .audit(None, None, 1_000_000)
            .await
            .unwrap_or_default();
        let done = audit
            .iter()
            .filter(|e| e.action == action && e.outcome.as_str() == "done")
            .count();
        if done >= expect || Instant::now() > deadline {
            tokio::time::sleep(Duration::from_millis(300)).await;
            bot.settle(Duration::from_secs(10)).await?;
            return Ok(done);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The end of a scenario that triggered one cancel: waits for it, counts the requests
/// made since `before`, stops the bot, and compares them with `minimum`.
async fn one_cancel(
    bot: InProcBot,
    before: &ClientStats,
    name: &str,
    label: &str,
    minimum: u64,
) -> anyhow::Result<Row> {
    let done = finish(&bot, "cancel", 1).await?;
    let ops = diff(before, &bot.bot.ctx.currents.stats());
    bot.shutdown().await;
    anyhow::ensure!(done == 1, "expected 1 cancel done, got {done}");
    Ok(row(name, label, &ops, minimum, ""))
}

fn row(name: &str, label: &str, ops: &[(String, u64)], minimum: u64, extra: &str) -> Row {
    let measured = total(ops);
    Row::target(
        name,
        label,
        measured as f64,
        "requests",
        Goal::Equal,
        minimum as f64,
    )
    .limit(minimum as f64, "minimum")
    .note(format!("{}{extra}", breakdown(ops)))
}

/// Supersede on the newer run's `RUN_START` webhook.
async fn supersede_run_start() -> anyhow::Result<Row> {
    let sim = InProcSim::start(false).await?;
    project(&sim, PROJECT).await?;
    sim.world.add_run(running(
        "feat/econ",
        "1111111111111111111111111111111111111111",
        5,
    ))?;
    let b = sim.world.add_run(running(
        "feat/econ",
        "2222222222222222222222222222222222222222",
        1,
    ))?;
    let bot = InProcBot::start(&sim, &[PROJECT], SUPERSEDE, 0).await?;
    let client = &bot.bot.ctx.currents;
    let before = client.stats();
    let body = serde_json::json!({
        "event": "RUN_START",
        "runUrl": format!("https://app.currents.dev/run/{}", b.run_id),
        "buildId": "bench", "tags": [],
        "overall": 1, "passes": 0, "failures": 0, "pending": 0, "skipped": 0, "retries": 0, "flaky": 0
    });
    let resp = harness::http_client(1)
        .post(bot.url("/webhooks/currents"))
        .header("x-webhook-secret", CURRENTS_SECRET)
        .header(
            "x-timestamp",
            chrono::Utc::now().timestamp_millis().to_string(),
        )
        .json(&body)
        .send()
        .await?;
    anyhow::ensure!(
        resp.status() == 202,
        "RUN_START webhook answered {}",
        resp.status()
    );
    one_cancel(
        bot,
        &before,
        "api_requests_supersede_run_start",
        "requests per supersede (Currents RUN_START)",
        4,
    )
    .await
}

/// Supersede on a GitHub push of a new sha.
async fn supersede_push() -> anyhow::Result<Row> {
    let sim = InProcSim::start(false).await?;
    project(&sim, PROJECT).await?;
    sim.world.add_run(running(
        "feat/econ",
        "1111111111111111111111111111111111111111",
        5,
    ))?;
    let bot = InProcBot::start(&sim, &[PROJECT], SUPERSEDE, 0).await?;
    let client = &bot.bot.ctx.currents;
    let before = client.stats();
    let body = harness::push_body(
        REPO,
        "feat/econ",
        "2222222222222222222222222222222222222222",
        1,
    );
    let resp = harness::http_client(1)
        .post(bot.url("/webhooks/github"))
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .header("x-github-delivery", "econ-push-1")
        .header("x-hub-signature-256", harness::sign(GITHUB_SECRET, &body))
        .body(body)
        .send()
        .await?;
    anyhow::ensure!(
        resp.status() == 202,
        "push webhook answered {}",
        resp.status()
    );
    one_cancel(
        bot,
        &before,
        "api_requests_supersede_push",
        "requests per supersede (GitHub push)",
        3,
    )
    .await
}

/// A timeout found by a poll among 10 in-progress runs.
async fn timeout_poll() -> anyhow::Result<Row> {
    let sim = InProcSim::start(false).await?;
    project(&sim, PROJECT).await?;
    sim.world.add_run(running(
        "feat/stuck",
        "1111111111111111111111111111111111111111",
        180,
    ))?;
    for i in 0..9 {
        sim.world.add_run(running(
            &format!("feat/ok-{i}"),
            &format!("{:040x}", i + 7),
            2,
        ))?;
    }
    let bot = InProcBot::start(&sim, &[PROJECT], TIMEOUT, 0).await?;
    let client = &bot.bot.ctx.currents;
    let before = client.stats();
    anyhow::ensure!(
        runwarden::intake::poller::poll_once(&bot.bot.ctx).await,
        "could not store a poll event"
    );
    one_cancel(
        bot,
        &before,
        "api_requests_timeout_poll",
        "requests per timeout (poll, 10 in progress)",
        1 + 1 + 1,
    )
    .await
}

/// A retention sweep over `n` runs of one project.
async fn retention(n: u32) -> anyhow::Result<Row> {
    let sim = InProcSim::start(false).await?;
    sim.world.generate(&GenerateSpec {
        projects: vec!["econ01".into()],
        runs_per_project: n,
        in_progress: 10,
        days: 90,
        branches: 20,
        specs: 1,
        groups: 1,
    })?;
    let bot = InProcBot::start(&sim, &["econ01"], RETENTION, 0).await?;
    let ctx = &bot.bot.ctx;
    let before = ctx.currents.stats();
    let now = chrono::Utc::now();
    ctx.store
        .insert_delivery(NewDelivery {
            source: "schedule".into(),
            delivery_id: format!("bench:retention:{}", now.timestamp_millis()),
            event: "sweep".into(),
            payload: serde_json::json!({ "rule": "retention", "manual": true }).to_string(),
            received_at: now,
        })
        .await?;
    ctx.wake.notify_one();
    bot.settle(Duration::from_secs(120)).await?;
    let audit = ctx.store.audit(None, None, 1_000_000).await?;
    let decided = audit.iter().filter(|e| e.action == "delete").count();
    let done = finish(&bot, "delete", decided).await?;
    let ops = diff(&before, &ctx.currents.stats());
    bot.shutdown().await;
    anyhow::ensure!(decided > 0, "the retention sweep decided no deletion");
    anyhow::ensure!(done == decided, "{decided} deletions decided, {done} done");
    let pages = n.div_ceil(50) as u64;
    Ok(row(
        &format!("api_requests_retention_{n}"),
        &format!("requests per retention sweep of {n} runs"),
        &ops,
        pages + decided as u64,
        &format!(" ({pages} pages + {decided} expired runs)"),
    ))
}

pub async fn run(args: &Args) -> anyhow::Result<Vec<Row>> {
    let n = if args.quick { 1_000 } else { 10_000 };
    Ok(vec![
        supersede_run_start().await?,
        supersede_push().await?,
        timeout_poll().await?,
        retention(n).await?,
    ])
}
