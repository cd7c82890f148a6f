//! `runwarden demo`: the whole bot against the built-in simulator, narrated, in under
//! 30 s, with no credentials and no network.
//!
//! It starts the simulator and the real `serve` pipeline in-process (same router, store,
//! processor and executor as production; SQLite in a temp dir; the `rules.toml` given by
//! `--config` with only the URLs, store and secrets overridden), plays a scripted day and
//! narrates each decision as it happens, then prints the pull-request comment as GitHub
//! would show it and a summary table.

use crate::commands::errln;
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use super::serve::{Bot, build_context, start};
use super::{outln, plural};
use crate::config::{Config, RuleKind, Secrets};
use crate::secret::Secret;
use crate::server::BotEvent;
use crate::simulator::{self, Advance, NewPr, NewProject, NewRun, Outcome, SimConfig, SimHandle};

const CURRENTS_SECRET: &str = "demo-currents-secret";
const GITHUB_SECRET: &str = "demo-github-secret";
const ADMIN_TOKEN: &str = "demo-admin-token";

/// The demo's moving parts.
struct Demo {
    sim: SimHandle,
    bot: Bot,
    http: reqwest::Client,
    project: String,
    repo: String,
    speed: f64,
    delivery: u64,
    _dir: tempfile::TempDir,
}

fn short(id: &str) -> &str {
    &id[..id.len().min(8)]
}

impl Demo {
    async fn pause(&self, ms: u64) {
        tokio::time::sleep(Duration::from_millis((ms as f64 / self.speed) as u64)).await;
    }

    fn scene(&self, title: &str) {
        outln!(
            "\n── {title} {}",
            "─".repeat(70usize.saturating_sub(title.len()))
        );
    }

    fn say(&self, text: &str) {
        outln!("   {text}");
    }

    fn run(&self, branch: &str, sha: &str, created: DateTime<Utc>) -> NewRun {
        NewRun {
            project: Some(self.project.clone()),
            branch: Some(branch.into()),
            sha: Some(sha.into()),
            created_at: Some(created),
            remote_origin: Some(format!("https://github.com/{}.git", self.repo)),
            author: Some("Dana Developer".into()),
            message: Some(format!("work on {branch}")),
            specs: Some(6),
            ..NewRun::default()
        }
    }

    async fn github(&mut self, event: &str, body: serde_json::Value) -> anyhow::Result<u16> {
        self.delivery += 1;
        let raw = serde_json::to_vec(&body)?;
        let mut mac = Hmac::<Sha256>::new_from_slice(GITHUB_SECRET.as_bytes())?;
        mac.update(&raw);
        let sig = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        let r = self
            .http
            .post(format!("{}/webhooks/github", self.bot.url()))
            .header("content-type", "application/json")
            .header("x-github-event", event)
            .header("x-github-delivery", format!("demo-{}", self.delivery))
            .header("x-hub-signature-256", sig)
            .body(raw)
            .send()
            .await?;
        Ok(r.status().as_u16())
    }

    async fn admin_sweep(&self, rule: &str) -> anyhow::Result<u16> {
        let r = self
            .http
            .post(format!("{}/api/sweep/{rule}", self.bot.url()))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await?;
        Ok(r.status().as_u16())
    }

    /// Waits until the audit log has no pending action and `cond` holds (or times out).
    /// Waits until `cond` holds of the audit with nothing left to process or carry out;
    /// `false` once `secs` have passed, or once the bot has had nothing to do for
    /// [`QUIET_FOR`] without `cond` holding (the user's rules do not act on the scene).
    async fn settle<F: Fn(&[crate::store::AuditEntry]) -> bool>(&self, secs: u64, cond: F) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        let mut quiet_since = None;
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let audit = self
                .bot
                .ctx
                .store
                .audit(None, None, 10_000)
                .await
                .unwrap_or_default();
            let pending_events = self.bot.ctx.store.count_unprocessed().await.unwrap_or(1);
            // Actions running or due now; one held for later (an orphan rule's grace)
            // does not keep the scene going.
            let soon = Utc::now() + chrono::Duration::seconds(1);
            let queued = self
                .bot
                .ctx
                .store
                .pending_actions()
                .await
                .map(|q| {
                    q.iter()
                        .filter(|a| {
                            a.state == crate::store::ActionState::Running
                                || (a.next_attempt_at <= soon
                                    && a.not_before.is_none_or(|t| t <= soon))
                        })
                        .count()
                })
                .unwrap_or(1);
            let idle = pending_events == 0 && queued == 0;
            if idle && cond(&audit) {
                return true;
            }
            let now = tokio::time::Instant::now();
            let quiet = *quiet_since.get_or_insert(now);
            if !idle {
                quiet_since = Some(now);
            }
            if now > deadline || (idle && now.duration_since(quiet) >= QUIET_FOR) {
                return false;
            }
        }
    }

    /// [`Demo::settle`], saying so when nothing came of the scene: the rules played
    /// (the user's `rules.toml`) do not act on it.
    async fn expect<F: Fn(&[crate::store::AuditEntry]) -> bool>(
        &self,
        secs: u64,
        what: &str,
        run_id: &str,
        cond: F,
    ) {
        if !self.settle(secs, cond).await {
            self.say(&format!(
                "no {what}: the rules of this rules.toml do not act on this (`runwarden explain {run_id}` says why)"
            ));
        }
    }
}

/// How long the bot must have had nothing to do before a scene counts as over without its
/// effect ([`Demo::settle`]).
const QUIET_FOR: Duration = Duration::from_millis(1500);

/// Prints decisions and outcomes as they happen.
fn narrate(mut rx: tokio::sync::broadcast::Receiver<BotEvent>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(BotEvent::Decided { repeated: true, .. }) => {}
                Ok(BotEvent::Decided {
                    rule,
                    action,
                    run_id,
                    branch,
                    reason,
                    dry_run,
                    ..
                }) => {
                    outln!(
                        "   ⚖  {rule}: {action} run {} ({}){} — {reason}",
                        short(&run_id),
                        branch.as_deref().unwrap_or("-"),
                        if dry_run { " [dry run]" } else { "" }
                    );
                }
                Ok(BotEvent::ActionFinished {
                    rule,
                    action,
                    run_id,
                    outcome,
                    detail,
                }) => {
                    let mark = match outcome.as_str() {
                        "done" => "✔",
                        "skipped" => "·",
                        "retry" | "postponed" => "↻",
                        _ => "✘",
                    };
                    outln!(
                        "   {mark}  {action} {} by {rule}: {outcome} ({detail})",
                        short(&run_id)
                    );
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => break,
            }
        }
    })
}

/// The config of the demo: the user's rules with the simulator's URLs and a temp store.
fn demo_config(
    mut config: Config,
    sim: &SimHandle,
    db: &std::path::Path,
) -> anyhow::Result<Config> {
    config.currents.api_url = url::Url::parse(&sim.currents_url())?;
    config.github.api_url = url::Url::parse(&sim.github_url())?;
    config.currents.dashboard_url = "https://app.currents.dev".into();
    config.store.url = format!("sqlite://{}", db.display());
    Ok(config)
}

/// Plays the demo; with `keep_running` (`Some`), then keeps the bot and the simulator up
/// until the stop it holds is signalled, having first set its flag (from then on a stop
/// ends the demo as finished, not as interrupted).
async fn play(
    mut config: Config,
    speed: f64,
    keep_running: Option<&KeepRunning>,
) -> anyhow::Result<bool> {
    let dir = tempfile::tempdir()?;
    let bot_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let bot_addr = bot_listener.local_addr()?;
    let sim_cfg = SimConfig {
        webhook_url: Some(format!("http://{bot_addr}/webhooks/currents")),
        webhook_headers: vec![(
            config.currents.webhook_header.clone(),
            CURRENTS_SECRET.into(),
        )],
        ..SimConfig::default()
    };
    let sim =
        simulator::spawn(tokio::net::TcpListener::bind("127.0.0.1:0").await?, sim_cfg).await?;
    let project = config.currents.projects[0].clone();
    let repo = config
        .github
        .repos
        .get(&project)
        .cloned()
        .unwrap_or_else(|| "acme/web".into());
    // The simulator's runs name a github.com remote, which is not the GitHub of the
    // simulator's `api_url`: the demo maps the project to its repository, as a user of
    // another GitHub would.
    config
        .github
        .repos
        .entry(project.clone())
        .or_insert_with(|| repo.clone());
    sim.add_project(NewProject {
        project_id: Some(project.clone()),
        name: Some("Web app".into()),
        repo: Some(repo.clone()),
        ..NewProject::default()
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let config = demo_config(config, &sim, &dir.path().join("runwarden.db"))?;
    let secrets = Secrets {
        currents_api_key: Some(Secret::new(sim.config().api_key.clone())),
        github_token: Some(Secret::new("demo-token")),
        currents_webhook_secrets: vec![Secret::new(CURRENTS_SECRET)],
        github_webhook_secrets: vec![Secret::new(GITHUB_SECRET)],
        admin_token: Some(Secret::new(ADMIN_TOKEN)),
        ..Secrets::default()
    };
    let rules: Vec<(String, &'static str)> = config
        .rules
        .iter()
        .map(|r| (r.name.clone(), r.kind_name()))
        .collect();
    let retention = config
        .rules
        .iter()
        .find(|r| matches!(r.kind, RuleKind::Retention(_)))
        .map(|r| r.name.clone());
    let timeout = config
        .rules
        .iter()
        .find(|r| matches!(r.kind, RuleKind::Timeout(_)))
        .map(|r| r.name.clone());
    // The shortest grace of the orphan rules (the scene's workflow ended 3 min ago).
    let orphan_grace = config
        .rules
        .iter()
        .filter_map(|r| match &r.kind {
            RuleKind::Orphan(o) => Some(o.grace),
            _ => None,
        })
        .min();
    let ctx = build_context(config, secrets).await?;
    let narrator = narrate(ctx.events.subscribe());
    let bot = start(ctx, bot_listener).await?;
    outln!(
        "runwarden demo — the bot at {} against the simulator at {}",
        bot.url(),
        sim.base_url
    );
    outln!(
        "rules: {}",
        rules
            .iter()
            .map(|(n, k)| format!("{n} ({k})"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut d = Demo {
        sim,
        bot,
        http: reqwest::Client::new(),
        project,
        repo: repo.clone(),
        speed,
        delivery: 0,
        _dir: dir,
    };
    let now = Utc::now();
    let day = chrono::Duration::days(1);
    let min = chrono::Duration::minutes(1);

    // History: a backlog of old runs (for retention) and passed runs (for auto timeouts).
    let mut backlog = Vec::new();
    for (i, branch) in ["main", "feat/search", "feat/cart", "fix/typo"]
        .iter()
        .enumerate()
    {
        for j in 0..13i64 {
            let mut r = d.run(
                branch,
                &format!("{:040x}", (i as i64 + 1) * 1000 + j),
                now - day * (35 + j as i32) - min * (i as i32),
            );
            r.state = Some(if j % 6 == 0 { "failed" } else { "passed" }.into());
            r.duration_ms = Some(600_000 + 10_000 * j as u64);
            r.emit = Some(false);
            if i == 1 && j == 12 {
                r.tags = vec!["release-1.0".into()];
            }
            backlog.push(r);
        }
    }
    d.sim
        .add_runs(backlog)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    d.scene("08:00  the backlog");
    d.say(&format!(
        "{} in project {} (35–47 days old), one pinned with tag release-1.0",
        plural(d.sim.run_count() as u64, "old run", "old runs"),
        d.project
    ));

    // 1. A push supersedes a running run.
    d.scene("09:12  a push supersedes a running run");
    let sha1 = "1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a";
    let sha2 = "2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b";
    let first = d
        .sim
        .add_run(d.run("feat/login", sha1, now - min * 6))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    d.sim
        .add_pr(NewPr {
            repo: repo.clone(),
            number: Some(42),
            head_ref: Some("feat/login".into()),
            head_sha: Some(sha1.into()),
            ..NewPr::default()
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    d.say(&format!(
        "run {} on feat/login ({}) is running for PR #42",
        short(&first.run_id),
        &sha1[..7]
    ));
    d.pause(400).await;
    d.say(&format!("Dana pushes {} to feat/login", &sha2[..7]));
    d.sim
        .add_pr(NewPr {
            repo: repo.clone(),
            number: Some(42),
            head_ref: Some("feat/login".into()),
            head_sha: Some(sha2.into()),
            ..NewPr::default()
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let status = d
        .github("push", json!({"ref": "refs/heads/feat/login", "before": sha1, "after": sha2, "deleted": false,
            "repository": {"full_name": repo}, "head_commit": {"timestamp": Utc::now().to_rfc3339()}}))
        .await?;
    d.say(&format!("GitHub push webhook → {status}"));
    let first_id = first.run_id.clone();
    d.expect(10, "cancel", &first.run_id, |a| {
        a.iter().any(|e| {
            e.run_id == first_id && e.action == "cancel" && e.outcome.as_str() != "planned"
        })
    })
    .await;

    // 2. The new commit's run fails, then a fix passes: the PR comment follows.
    d.scene("09:20  a failing, then passing pull request");
    let mut second = d.run("feat/login", sha2, Utc::now());
    second.emit = Some(true);
    let second = d.sim.add_run(second).map_err(|e| anyhow::anyhow!("{e}"))?;
    d.pause(300).await;
    // All six spec files complete, two of them failing: the run finishes as failed.
    // (`finish` would complete them too, but with one failed test of its own choosing in
    // place of `fail`.) The narration reads its counts from the run, as the summary does.
    let finished = d
        .sim
        .advance(
            &second.run_id,
            Advance {
                complete: 6,
                fail: Some(2),
                ..Advance::default()
            },
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let (specs, tests) = (finished.instance_counts(), finished.test_counts());
    d.say(&format!(
        "run {} finished: {} of {} failed ({} failed, {} passed)",
        short(&second.run_id),
        specs.failures,
        plural(specs.overall, "spec file", "spec files"),
        plural(tests.failures, "test", "tests"),
        tests.passes
    ));
    let sid = second.run_id.clone();
    d.expect(10, "summary", &second.run_id, |a| {
        a.iter()
            .any(|e| e.run_id == sid && e.action == "summarize" && e.outcome.as_str() != "planned")
    })
    .await;
    d.pause(300).await;
    let sha3 = "3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c";
    d.say(&format!("Dana pushes the fix {}", &sha3[..7]));
    d.sim
        .add_pr(NewPr {
            repo: repo.clone(),
            number: Some(42),
            head_ref: Some("feat/login".into()),
            head_sha: Some(sha3.into()),
            ..NewPr::default()
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    d.github(
        "push",
        json!({"ref": "refs/heads/feat/login", "before": sha2, "after": sha3, "deleted": false,
        "repository": {"full_name": repo}, "head_commit": {"timestamp": Utc::now().to_rfc3339()}}),
    )
    .await?;
    let mut third = d.run("feat/login", sha3, Utc::now());
    third.emit = Some(true);
    let third = d.sim.add_run(third).map_err(|e| anyhow::anyhow!("{e}"))?;
    d.pause(300).await;
    d.sim
        .advance(
            &third.run_id,
            Advance {
                finish: Some(Outcome::Passed),
                ..Advance::default()
            },
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    d.say(&format!("run {} passed", short(&third.run_id)));
    let tid = third.run_id.clone();
    d.expect(10, "summary", &third.run_id, |a| {
        a.iter()
            .filter(|e| e.run_id == tid && e.action == "summarize")
            .all(|e| e.outcome.as_str() != "planned")
            && a.iter().any(|e| e.run_id == tid)
    })
    .await;

    // 3. A run hangs far past its normal duration.
    d.scene("11:05  a run hangs");
    let mut hung = d.run(
        "main",
        "4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d",
        now - min * 150,
    );
    hung.completed = Some(2);
    hung.last_progress_at = Some(now - min * 120);
    let hung = d.sim.add_run(hung).map_err(|e| anyhow::anyhow!("{e}"))?;
    d.say(&format!(
        "run {} on main started 2h30m ago; its last spec finished 2h ago",
        short(&hung.run_id)
    ));
    if let Some(rule) = &timeout {
        d.say(&format!(
            "the poller checks in-progress runs (here: POST /api/sweep/{rule} → {})",
            d.admin_sweep(rule).await?
        ));
        let hid = hung.run_id.clone();
        d.expect(10, "cancel", &hung.run_id, |a| {
            a.iter()
                .any(|e| e.run_id == hid && e.action == "cancel" && e.outcome.as_str() != "planned")
        })
        .await;
    }

    // 4. The CI job died, but Currents still shows the run in progress.
    d.scene("13:40  a CI job ends, its run does not");
    let mut orphan = d.run(
        "feat/search",
        "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e",
        now - min * 9,
    );
    orphan.ci_build_id = Some(format!("{repo}-7001-1"));
    orphan.completed = Some(3);
    let orphan = d.sim.add_run(orphan).map_err(|e| anyhow::anyhow!("{e}"))?;
    d.say(&format!(
        "run {} (ciBuildId {repo}-7001-1) is still in progress",
        short(&orphan.run_id)
    ));
    let status = d
        .github(
            "workflow_run",
            json!({"action": "completed", "repository": {"full_name": repo},
            "workflow_run": {"id": 7001, "run_attempt": 1, "head_branch": "feat/search",
                "name": "E2E", "path": ".github/workflows/e2e.yml",
                "head_sha": "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e", "conclusion": "failure",
                "updated_at": (Utc::now() - min * 3).to_rfc3339()}}),
        )
        .await?;
    let grace = match orphan_grace {
        Some(g) if g <= Duration::from_secs(180) => {
            format!(
                " (the orphan rule's grace of {} has passed)",
                humantime::format_duration(g)
            )
        }
        Some(g) => format!(
            " (within the orphan rule's grace of {}: its cancel waits)",
            humantime::format_duration(g)
        ),
        None => String::new(),
    };
    d.say(&format!(
        "GitHub workflow_run completed 3 min ago{grace} → {status}"
    ));
    let oid = orphan.run_id.clone();
    d.expect(10, "cancel yet", &orphan.run_id, |a| {
        a.iter()
            .any(|e| e.run_id == oid && e.action == "cancel" && e.outcome.as_str() != "planned")
    })
    .await;

    // 5. The nightly retention slot over the backlog.
    if let Some(rule) = &retention {
        d.scene("03:00  the nightly retention slot");
        let before = d.sim.run_count();
        d.say(&format!(
            "slot fires (here: POST /api/sweep/{rule} → {})",
            d.admin_sweep(rule).await?
        ));
        let r = rule.clone();
        d.settle(20, |a| a.iter().any(|e| e.rule == r)).await;
        d.say(&format!(
            "{} before, {} after",
            plural(before as u64, "run", "runs"),
            d.sim.run_count()
        ));
    }

    // The PR comment and the summary table.
    d.scene("the pull request comment, as GitHub shows it");
    let comments = d.sim.comments(Some(&repo), Some(42));
    match comments.last() {
        Some(c) => {
            outln!(
                "   PR #42 · comment by {} · edited {}\n",
                c.user,
                plural(c.edits, "time", "times")
            );
            for line in c.body.lines() {
                outln!("   │ {line}");
            }
        }
        None => outln!("   (no comment was posted)"),
    }
    let statuses = d.sim.statuses(Some(&repo), None);
    if !statuses.is_empty() {
        outln!("\n   commit statuses:");
        for s in &statuses {
            outln!(
                "   {} {} {:<9} {}",
                &s.sha[..7],
                s.context,
                s.state,
                s.description.as_deref().unwrap_or("")
            );
        }
    }
    d.scene("summary");
    let audit = d.bot.ctx.store.audit(None, None, 10_000).await?;
    let mut table: BTreeMap<(String, String), BTreeMap<String, usize>> = BTreeMap::new();
    for e in &audit {
        *table
            .entry((e.rule.clone(), e.action.clone()))
            .or_default()
            .entry(e.outcome.as_str().to_string())
            .or_default() += 1;
    }
    outln!(
        "   {:<22} {:<10} {:>5} {:>8} {:>8} {:>7}",
        "rule",
        "action",
        "done",
        "skipped",
        "dry run",
        "failed"
    );
    for ((rule, action), o) in &table {
        let g = |k: &str| o.get(k).copied().unwrap_or(0);
        outln!(
            "   {:<22} {:<10} {:>5} {:>8} {:>8} {:>7}",
            rule,
            action,
            g("done"),
            g("skipped"),
            g("dry_run"),
            g("failed")
        );
    }
    let mutations = d.sim.mutation_log();
    outln!(
        "\n   {}, {}, {} left in the simulator",
        plural(audit.len() as u64, "decision", "decisions"),
        plural(
            mutations.len() as u64,
            "mutating API call",
            "mutating API calls"
        ),
        plural(d.sim.run_count() as u64, "run", "runs")
    );
    let failed = audit.iter().any(|e| e.outcome.as_str() == "failed");
    if let Some(keep) = keep_running {
        keep.kept_up
            .store(true, std::sync::atomic::Ordering::SeqCst);
        outln!("\nkeeping the bot and simulator up (Ctrl-C to stop):");
        outln!("   status page   {}/", d.bot.url());
        outln!("   metrics       {}/metrics", d.bot.url());
        outln!(
            "   admin API     {}/api/actions  (Authorization: Bearer {ADMIN_TOKEN})",
            d.bot.url()
        );
        outln!(
            "   simulator     {}/v1  (Authorization: Bearer {})",
            d.sim.base_url,
            d.sim.config().api_key
        );
        // A stop signalled meanwhile (even before the flag was set) is seen at once.
        let _ = keep.stop.clone().wait_for(|stopped| *stopped).await;
    }
    let Demo { sim, bot, .. } = d;
    bot.shutdown().await;
    sim.shutdown().await;
    narrator.abort();
    Ok(!failed)
}

/// The repo's example policy file, for a demo run where there is none.
const EXAMPLE_RULES: &str = include_str!("../../rules.toml");

/// What `--keep-running` needs: whether the demo has reached its end and is kept up,
/// and the stop (SIGINT or SIGTERM) once signalled.
struct KeepRunning {
    kept_up: std::sync::atomic::AtomicBool,
    stop: tokio::sync::watch::Receiver<bool>,
}

/// The first SIGINT or SIGTERM.
async fn interrupted() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

/// Without a policy file at `path` (a newcomer's empty directory), the demo plays with
/// the example `rules.toml` built into the binary, and says so; a file that exists but
/// is invalid is still an error.
/// `speed` must be finite and greater than 0 (the command line checks it; exit 2 when
/// not).
pub fn run(path: &std::path::Path, speed: f64, keep_running: bool) -> ExitCode {
    if !speed.is_finite() || speed <= 0.0 {
        errln!("runwarden demo: --speed {speed} must be a number greater than 0");
        return ExitCode::from(super::EXIT_USAGE);
    }
    let loaded = if path.exists() {
        super::load_config(path)
    } else {
        outln!(
            "No policy file at {}: playing with the example rules built into runwarden.",
            path.display()
        );
        crate::config::load_str(EXAMPLE_RULES, "rules.toml (built in)", &[]).map_err(|e| {
            errln!("{e}");
            ExitCode::from(super::EXIT_USAGE)
        })
    };
    let loaded = match loaded {
        Ok(l) => l,
        Err(code) => return code,
    };
    let started = std::time::Instant::now();
    // Interrupted (Ctrl-C, SIGTERM) before its end, the demo drops what it was playing,
    // its temporary store included, rather than leaving it behind, with or without
    // `--keep-running`. (Kept up at its end, a stop is how it ends: `play` shuts the bot
    // and the simulator down and removes its store.)
    let result = super::runtime().block_on(async {
        // One listener for the whole demo: a stop stays signalled once it came.
        let (stopped, mut stop) = tokio::sync::watch::channel(false);
        let listener = tokio::spawn(async move {
            interrupted().await;
            let _ = stopped.send(true);
        });
        let keep = KeepRunning {
            kept_up: false.into(),
            stop: stop.clone(),
        };
        let result = tokio::select! {
            r = play(loaded.config, speed, keep_running.then_some(&keep)) => Some(r),
            // Once kept up, the stop is `play`'s to handle.
            _ = async {
                let _ = stop.wait_for(|stopped| *stopped).await;
                if keep.kept_up.load(std::sync::atomic::Ordering::SeqCst) {
                    std::future::pending::<()>().await;
                }
            } => None,
        };
        listener.abort();
        result
    });
    let Some(result) = result else {
        errln!("runwarden demo: interrupted; its temporary store was removed");
        return ExitCode::from(super::EXIT_FAILED);
    };
    match result {
        Ok(ok) => {
            outln!("\ndemo finished in {:.1}s", started.elapsed().as_secs_f64());
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(super::EXIT_FAILED)
            }
        }
        Err(e) => {
            errln!("runwarden demo: {e:#}");
            ExitCode::from(super::EXIT_FAILED)
        }
    }
}
