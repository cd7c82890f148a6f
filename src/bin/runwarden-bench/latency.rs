//! Figure 2: event-to-cancel latency.
//!
//! N in-progress runs, each alone on its branch `lat-<i>` (sha `old…`), exist in an
//! in-process simulator whose outermost middleware timestamps every request it serves.
//! An open-loop sender posts one signed GitHub `push` of a new sha per branch every 5 ms
//! (200 events/s) to the in-process bot (supersede rule, polling off, no rate cap). For
//! each event:
//!
//! ```text
//! end-to-end   = simulator receives PUT /runs/<run>/cancel  -  push request sent
//! sim service  = time the simulator spent serving that event's requests before the
//!                cancel (the in-progress listing of the branch)
//! bot overhead = end-to-end - sim service
//! ```
//!
//! The bot's path in between: verify + commit the delivery, 202; the processor (woken by
//! a Notify) reads it, lists the branch's in-progress runs, evaluates, records decision +
//! action in one commit; the executor (woken by a Notify) claims the action (a commit)
//! and sends the cancel. The first events are a warm-up and are not counted.
//!
//! With `--postgres URL` every pass's bot gets a new database on that server instead of a
//! SQLite file (rows `*_pg`); the tmpfs diagnostic is SQLite's only.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use runwarden::simulator::{NewProject, NewRun};

use crate::Args;
use crate::harness::{self, BenchStore, GITHUB_SECRET, InProcBot, InProcSim, PROJECT, REPO};
use crate::report::{Goal, Row};

pub const RATE_PER_S: u64 = 200;
/// Target: p99 of the bot's own overhead, milliseconds.
pub const TARGET_P99_MS: f64 = 5.0;
const WARMUP: usize = 50;

const RULES: &str = "[[rules]]\nname = \"superseded\"\nkind = \"supersede\"\n";

fn branch_of_query(q: &str) -> Option<String> {
    url::form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k.starts_with("branches"))
        .map(|(_, v)| v.into_owned())
}

/// What one latency pass measured (milliseconds, sorted).
struct Pass {
    rate: u64,
    /// fsync p50 (ms) of the store's filesystem, probed just before the pass.
    fsync_p50: f64,
    /// The worst overhead (ms) among the events sent in each second of the window.
    worst_per_second: Vec<f64>,
    measured: usize,
    achieved: f64,
    overhead: Vec<f64>,
    e2e: Vec<f64>,
    svc: Vec<f64>,
    missing: usize,
    non_202: usize,
}

impl Pass {
    fn detail(&self) -> String {
        let p = harness::percentile;
        let over = self.overhead.iter().filter(|v| **v > TARGET_P99_MS).count();
        format!(
            "overhead p90 {:.2} / p95 {:.2} ms, {over} over {TARGET_P99_MS} ms, worst per second of sending [{}] ms; {} events at {:.0}/s ({} without a cancel, {} not 202); end-to-end p50 {:.2} / p99 {:.2} / max {:.2} ms; sim service p50 {:.3} ms; fsync p50 {:.2} ms just before",
            p(&self.overhead, 90.0),
            p(&self.overhead, 95.0),
            self.worst_per_second
                .iter()
                .map(|v| format!("{v:.0}"))
                .collect::<Vec<_>>()
                .join(" "),
            self.measured,
            self.achieved,
            self.missing,
            self.non_202,
            p(&self.e2e, 50.0),
            p(&self.e2e, 99.0),
            self.e2e.last().copied().unwrap_or(f64::NAN),
            p(&self.svc, 50.0),
            self.fsync_p50,
        )
    }
}

/// One pass: `rate` events/s for `window_s` seconds (after a warm-up), store in `dir`, or
/// in a new database on the PostgreSQL server `pg`.
async fn pass(
    rate: u64,
    window_s: u64,
    dir: tempfile::TempDir,
    pg: Option<&str>,
) -> anyhow::Result<Pass> {
    let warmup = ((rate / 4) as usize).clamp(5, WARMUP);
    let n = warmup + (rate * window_s) as usize;
    let sim = InProcSim::start(true).await?;
    sim.world.add_project(NewProject {
        project_id: Some(PROJECT.into()),
        repo: Some(REPO.into()),
        ..Default::default()
    })?;
    let created = chrono::Utc::now() - chrono::Duration::minutes(2);
    let runs: Vec<NewRun> = (0..n)
        .map(|i| NewRun {
            project: Some(PROJECT.into()),
            branch: Some(format!("lat-{i}")),
            sha: Some(format!("{:040x}", i + 1)),
            created_at: Some(created),
            emit: Some(false),
            ..Default::default()
        })
        .collect();
    let ids = sim.world.add_runs(runs)?;
    let index: HashMap<String, usize> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.clone(), i))
        .collect();
    // Start on a settled disk: no pass pays for the writeback of what an earlier figure
    // (or pass) wrote.
    let _ = std::process::Command::new("sync").status();
    let fsync = harness::fsync_probe(dir.path(), 50)?;
    let store = BenchStore::new(pg, dir).await?;
    let bot = InProcBot::start_on(&sim, &[PROJECT], RULES, 0, store).await?;
    let url = bot.url("/webhooks/github");
    let client = harness::http_client(256);

    // Bodies are signed before the clock starts.
    let bodies: Vec<(Vec<u8>, String)> = (0..n)
        .map(|i| {
            let body = harness::push_body(
                REPO,
                &format!("lat-{i}"),
                &format!("{:040x}", 0xf000_0000u64 + i as u64),
                1,
            );
            let sig = harness::sign(GITHUB_SECRET, &body);
            (body, sig)
        })
        .collect();
    sim.take_requests();
    let period = Duration::from_nanos(1_000_000_000 / rate);
    let t0 = tokio::time::Instant::now() + Duration::from_millis(20);
    let mut sent_at: Vec<Option<Instant>> = vec![None; n];
    let mut sends = Vec::with_capacity(n);
    for (i, (body, sig)) in bodies.into_iter().enumerate() {
        tokio::time::sleep_until(t0 + period * i as u32).await;
        sent_at[i] = Some(Instant::now());
        let req = client
            .post(&url)
            .header("content-type", "application/json")
            .header("x-github-event", "push")
            .header("x-github-delivery", format!("lat-{i}"))
            .header("x-hub-signature-256", sig)
            .body(body);
        sends.push(tokio::spawn(async move {
            match req.send().await {
                Ok(r) => r.status().as_u16(),
                Err(_) => 0,
            }
        }));
    }
    let send_span = t0.elapsed();
    let mut non_202 = 0;
    let mut statuses: std::collections::BTreeMap<u16, usize> = Default::default();
    for s in sends {
        let st = s.await.unwrap_or(0);
        *statuses.entry(st).or_default() += 1;
        if st != 202 {
            non_202 += 1;
        }
    }
    // Wait for every cancel (bounded).
    let deadline = Instant::now() + Duration::from_secs(30);
    let count_cancels = || {
        sim.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|r| r.method == "PUT" && r.path.ends_with("/cancel"))
            .count()
    };
    while count_cancels() < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bot.settle(Duration::from_secs(10)).await.ok();
    bot.shutdown().await;
    let reqs = sim.take_requests();

    let mut cancel_at: Vec<Option<Instant>> = vec![None; n];
    for r in &reqs {
        if r.method == "PUT"
            && let Some(id) = r
                .path
                .strip_prefix("/v1/runs/")
                .and_then(|p| p.strip_suffix("/cancel"))
            && let Some(&i) = index.get(id)
            && cancel_at[i].is_none()
        {
            cancel_at[i] = Some(r.start);
        }
    }
    let mut service = vec![Duration::ZERO; n];
    for r in &reqs {
        if r.method != "GET" {
            continue;
        }
        let i = if r.path.ends_with("/runs") {
            r.query
                .as_deref()
                .and_then(branch_of_query)
                .and_then(|b| b.strip_prefix("lat-").and_then(|x| x.parse::<usize>().ok()))
        } else {
            r.path
                .strip_prefix("/v1/runs/")
                .and_then(|id| index.get(id).copied())
        };
        let Some(i) = i.filter(|&i| i < n) else {
            continue;
        };
        let (Some(sent), Some(cancel)) = (sent_at[i], cancel_at[i]) else {
            continue;
        };
        if r.start >= sent && r.end <= cancel {
            service[i] += r.end - r.start;
        }
    }
    let mut out = Pass {
        rate,
        fsync_p50: harness::percentile(&fsync, 50.0),
        worst_per_second: vec![0.0; window_s as usize],
        measured: n - warmup,
        achieved: n as f64 / send_span.as_secs_f64().max(1e-9),
        overhead: Vec::new(),
        e2e: Vec::new(),
        svc: Vec::new(),
        missing: 0,
        non_202,
    };
    for i in warmup..n {
        match (sent_at[i], cancel_at[i]) {
            (Some(s), Some(c)) => {
                let total = c.saturating_duration_since(s);
                out.e2e.push(total.as_secs_f64() * 1e3);
                out.svc.push(service[i].as_secs_f64() * 1e3);
                let ms = total.saturating_sub(service[i]).as_secs_f64() * 1e3;
                let second = ((i - warmup) as u64 / rate) as usize;
                if let Some(w) = out.worst_per_second.get_mut(second) {
                    *w = w.max(ms);
                }
                out.overhead.push(ms);
            }
            _ => out.missing += 1,
        }
    }
    for v in [&mut out.e2e, &mut out.overhead, &mut out.svc] {
        v.sort_by(f64::total_cmp);
    }
    if out.overhead.is_empty() {
        anyhow::bail!(
            "no cancel reached the simulator ({non_202} pushes not acked with 202: {statuses:?})"
        );
    }
    Ok(out)
}

pub async fn run(args: &Args) -> anyhow::Result<Vec<Row>> {
    let window_s: u64 = if args.quick { 2 } else { 10 };
    let p = harness::percentile;
    let pg = args.postgres.as_deref();
    let pg_settings = match pg {
        Some(server) => {
            let db = harness::PgDatabase::create(server).await?;
            let settings = db.settings().await;
            db.drop_database().await?;
            Some(settings?)
        }
        None => None,
    };
    let main = pass(RATE_PER_S, window_s, harness::tempdir()?, pg).await?;
    let mut p99 = Row::target(
        "event_to_cancel_p99_ms",
        "event->cancel bot overhead p99 (200 ev/s)",
        p(&main.overhead, 99.0),
        "ms",
        Goal::AtMost,
        TARGET_P99_MS,
    )
    .note(main.detail());
    if main.missing > 0 {
        p99.pass = Some(false);
    }
    let p50 = Row::info(
        "event_to_cancel_p50_ms",
        "event->cancel bot overhead p50 (200 ev/s)",
        p(&main.overhead, 50.0),
        "ms",
    );
    let mut rows = vec![p50, p99];
    // Diagnostics: the same at a tenth of the rate (no queueing), and on tmpfs.
    let slow = pass(RATE_PER_S / 10, window_s.max(3), harness::tempdir()?, pg).await?;
    rows.push(
        Row::info(
            "event_to_cancel_p99_ms_20",
            &format!(
                "event->cancel bot overhead p99 ({} ev/s, diagnostic)",
                slow.rate
            ),
            p(&slow.overhead, 99.0),
            "ms",
        )
        .note(format!(
            "p50 {:.2} ms; {}",
            p(&slow.overhead, 50.0),
            slow.detail()
        )),
    );
    if let Some(dir) = harness::tmpfs_dir().filter(|_| pg.is_none()) {
        let t = pass(RATE_PER_S, window_s, dir, None).await?;
        rows.push(
            Row::info(
                "event_to_cancel_p99_ms_tmpfs",
                "event->cancel bot overhead p99 (200 ev/s, store on tmpfs, diagnostic)",
                p(&t.overhead, 99.0),
                "ms",
            )
            .note(format!(
                "p50 {:.2} ms; {}",
                p(&t.overhead, 50.0),
                t.detail()
            )),
        );
    }
    if let Some(settings) = pg_settings {
        harness::mark_postgres(&mut rows, &settings);
    }
    Ok(rows)
}
