//! Figure `soak` (issue 8, SPEC §8 case 23): a bounded soak of the real binary under
//! steady load with faults, then the books are balanced. Not part of the default suite:
//! `runwarden-bench --only soak [--soak-seconds N] [--soak-rate R]` or `bench/soak.sh`.
//!
//! `runwarden serve` runs as a child process (SQLite store in a temp dir, supersede rule,
//! polling off, `request_timeout = 2s`) against an in-process simulator. An open-loop
//! sender posts R events/s for N seconds:
//!
//! - 90%: a new in-progress run on branch `soak-<i mod 40>` (36 of them in use) and its
//!   Currents `RUN_START`: it supersedes the previous run of that branch;
//! - 5%: a run alone on a fresh branch `soak-push-<k>` and its `RUN_START`, and 5%: the
//!   GitHub `push` of a new sha to that branch, 10 events later: it supersedes that run.
//!
//! Faults, drawn per event from a seeded RNG: ~1% server errors (503 on the cancel of
//! the superseded run, twice, or on the processor's `GET /runs/<new>`), ~1% slow answers
//! (2.5 s on the cancel, past the 2 s request timeout: abandoned at the timeout and
//! retried; or 400 ms on the read), ~1% duplicate deliveries (the same
//! webhook sent again once acknowledged: it must be answered 200 and do nothing). A
//! send that is not acknowledged is retried like a real sender.
//!
//! At the end the queue must drain within [`DRAIN_LIMIT_S`]; then, from the store and
//! the simulator's log of mutating requests:
//!
//! - lost events: acknowledged deliveries not processed (or dead-lettered);
//! - duplicate side effects: runs that received more than one successful cancel, plus
//!   runs cancelled that nothing superseded;
//! - missed cancels: superseded runs without exactly one successful cancel.
//!
//! All three must be 0. Every second the bot's `VmRSS`/`VmHWM` and the store's size
//! (database + WAL) are sampled; the last third of the sending window is compared with
//! the first third.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use runwarden::simulator::{Fault, FaultKind, NewProject, NewRun};
use runwarden::store::Store;
use serde_json::json;
use tokio::sync::Mutex;

use crate::Args;
use crate::harness::{
    self, CURRENTS_SECRET, ChildProc, ConfigSpec, GITHUB_SECRET, InProcSim, PROJECT, REPO,
};
use crate::report::{Goal, Row};

/// Default length of the sending window.
pub const DEFAULT_SECONDS: u64 = 180;
/// Default events per second.
pub const DEFAULT_RATE: u64 = 80;
/// The queue must be empty this long after the last event was sent.
pub const DRAIN_LIMIT_S: f64 = 60.0;
/// Last-third peak RSS over first-third peak RSS.
pub const TARGET_RSS_GROWTH: f64 = 1.25;
/// Last-third peak WAL size over first-third peak (plus one checkpoint's worth).
pub const TARGET_WAL_GROWTH: f64 = 1.5;

const RUN_BRANCHES: usize = 40;
const PUSH_DELAY: u64 = 10;
const REQUEST_TIMEOUT: &str = "2s";
const SLOW_CANCEL_MS: u64 = 2_500;
const SLOW_READ_MS: u64 = 400;

const RULES: &str = "[[rules]]\nname = \"superseded\"\nkind = \"supersede\"\n";

/// One sample of the bot and its store.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// Seconds since sending started.
    t: f64,
    rss_kib: u64,
    hwm_kib: u64,
    db_bytes: u64,
    wal_bytes: u64,
    /// Unprocessed events + queued actions (-1 when the store did not answer).
    backlog: i64,
}

/// What the sender saw.
#[derive(Debug, Default)]
struct Sent {
    /// (source, delivery id) of every event acknowledged with 202.
    acked: Vec<(String, String)>,
    currents: u64,
    pushes: u64,
    duplicates_sent: u64,
    duplicates_answered_200: u64,
    /// Answers other than 202 to a first send, or 200 to a repeat, by status (0: error).
    unexpected: BTreeMap<u16, u64>,
    retries: u64,
    /// Events never acknowledged after every retry.
    unacked: u64,
}

/// Expected effects, kept by the sender.
#[derive(Debug, Default)]
struct Book {
    /// Runs that must be cancelled exactly once.
    superseded: HashSet<String>,
    /// Every run created, in creation order.
    all: Vec<String>,
}

#[derive(Debug, Default)]
struct FaultCounts {
    cancel_5xx: u64,
    cancel_slow: u64,
    read_5xx: u64,
    read_slow: u64,
}

fn file_size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn status_fault(method: &str, path: String, times: u32) -> Fault {
    Fault::new(FaultKind::Status {
        status: 503,
        body: None,
        retry_after: None,
    })
    .on(method, path)
    .times(Some(times))
}

fn latency_fault(method: &str, path: String, ms: u64) -> Fault {
    Fault::new(FaultKind::Latency { ms }).on(method, path)
}

/// One webhook to send.
#[derive(Clone)]
struct Hook {
    source: &'static str,
    url: String,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    duplicate: bool,
}

fn currents_hook(base: &str, run_id: &str, duplicate: bool) -> Hook {
    let body = serde_json::to_vec(&json!({
        "event": "RUN_START",
        "runUrl": format!("https://app.currents.dev/run/{run_id}"),
        "buildId": "soak",
        "tags": [],
    }))
    .expect("json");
    Hook {
        source: "currents",
        url: format!("{base}/webhooks/currents"),
        headers: vec![
            ("x-webhook-secret", CURRENTS_SECRET.to_string()),
            ("content-type", "application/json".into()),
        ],
        body,
        duplicate,
    }
}

fn push_hook(base: &str, branch: &str, sha: &str, delivery: &str, duplicate: bool) -> Hook {
    let body = harness::push_body(REPO, branch, sha, 1);
    let sig = harness::sign(GITHUB_SECRET, &body);
    Hook {
        source: "github",
        url: format!("{base}/webhooks/github"),
        headers: vec![
            ("content-type", "application/json".into()),
            ("x-github-event", "push".into()),
            ("x-github-delivery", delivery.to_string()),
            ("x-hub-signature-256", sig),
        ],
        body,
        duplicate,
    }
}

/// Sends `hook` until acknowledged (at most 8 tries); then, for a duplicate, once more.
async fn deliver(client: reqwest::Client, hook: Hook, sent: Arc<Mutex<Sent>>) {
    let send = |hook: &Hook| {
        let mut req = client.post(&hook.url).body(hook.body.clone());
        for (k, v) in &hook.headers {
            req = req.header(*k, v);
        }
        req = req.header(
            "x-timestamp",
            chrono::Utc::now().timestamp_millis().to_string(),
        );
        async move {
            match req.send().await {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let v: serde_json::Value = r.json().await.unwrap_or_default();
                    (status, v["delivery"].as_str().map(str::to_string))
                }
                Err(_) => (0, None),
            }
        }
    };
    let mut acked = None;
    for attempt in 0..8 {
        let (status, delivery) = send(&hook).await;
        let mut s = sent.lock().await;
        if attempt > 0 {
            s.retries += 1;
        }
        if status == 202 {
            acked = delivery;
            break;
        }
        // 200 on a first send: a retry of a send whose answer was lost; it was stored.
        if status == 200 && attempt > 0 {
            acked = delivery;
            break;
        }
        *s.unexpected.entry(status).or_default() += 1;
        drop(s);
        tokio::time::sleep(Duration::from_millis(200 << attempt.min(4))).await;
    }
    let Some(id) = acked else {
        sent.lock().await.unacked += 1;
        return;
    };
    sent.lock().await.acked.push((hook.source.to_string(), id));
    if hook.duplicate {
        let (status, _) = send(&hook).await;
        let mut s = sent.lock().await;
        s.duplicates_sent += 1;
        if status == 200 {
            s.duplicates_answered_200 += 1;
        } else {
            *s.unexpected.entry(status).or_default() += 1;
        }
    }
}

/// Samples the bot (pid) and its store every `every` until `stop` is set.
async fn sample_loop(
    pid: u32,
    db: PathBuf,
    store: Store,
    t0: Instant,
    every: Duration,
    stop: Arc<AtomicU64>,
) -> Vec<Sample> {
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    let mut out = Vec::new();
    let mut next = tokio::time::Instant::now();
    while stop.load(Ordering::Relaxed) == 0 {
        let backlog = match (store.count_unprocessed().await, store.queue_depth().await) {
            (Ok(a), Ok(b)) => a + b,
            _ => -1,
        };
        out.push(Sample {
            t: t0.elapsed().as_secs_f64(),
            rss_kib: harness::proc_status_kib(pid, "VmRSS").unwrap_or(0),
            hwm_kib: harness::proc_status_kib(pid, "VmHWM").unwrap_or(0),
            db_bytes: file_size(&db),
            wal_bytes: file_size(&wal),
            backlog,
        });
        next += every;
        tokio::time::sleep_until(next).await;
    }
    out
}

/// Peak of `f` over the samples with `from <= t < to`.
fn peak(samples: &[Sample], from: f64, to: f64, f: impl Fn(&Sample) -> u64) -> u64 {
    samples
        .iter()
        .filter(|s| s.t >= from && s.t < to)
        .map(f)
        .max()
        .unwrap_or(0)
}

fn spawn_bot(bin: &Path, dir: &Path, sim: &InProcSim) -> anyhow::Result<(ChildProc, String)> {
    let port = harness::free_port()?;
    let listen = format!("127.0.0.1:{port}");
    let currents = sim.currents_url();
    let github = sim.github_url();
    let text = ConfigSpec {
        api_url: &currents,
        github_url: &github,
        projects: &[PROJECT],
        poll_interval: "0s",
        max_requests_per_second: 0,
        store_path: &dir.join("runwarden.db"),
        listen: &listen,
        rules: RULES,
    }
    .text()
    .replace(
        "request_timeout = \"10s\"",
        &format!("request_timeout = \"{REQUEST_TIMEOUT}\""),
    );
    anyhow::ensure!(
        text.contains(REQUEST_TIMEOUT),
        "the bench config no longer sets request_timeout"
    );
    let config = dir.join("soak.toml");
    std::fs::write(&config, text)?;
    let log = std::fs::File::create(dir.join("serve.log"))?;
    let child = harness::serve_command(bin, &config, log, "warn")?.spawn()?;
    Ok((ChildProc { child }, format!("http://{listen}")))
}

pub async fn run(args: &Args) -> anyhow::Result<Vec<Row>> {
    let seconds = args
        .soak_seconds
        .unwrap_or(if args.quick { 20 } else { DEFAULT_SECONDS });
    let rate = args.soak_rate.unwrap_or(DEFAULT_RATE).max(1);
    let bin = args.runwarden_bin()?;
    let sim = InProcSim::start(false).await?;
    sim.world.add_project(NewProject {
        project_id: Some(PROJECT.into()),
        repo: Some(REPO.into()),
        ..Default::default()
    })?;
    let dir = harness::tempdir()?;
    let db = dir.path().join("runwarden.db");
    let (mut bot, base) = spawn_bot(&bin, dir.path(), &sim)?;
    if let Err(e) = harness::wait_http_ok(&format!("{base}/readyz"), Duration::from_secs(30)).await
    {
        let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default();
        anyhow::bail!("{e}; serve log:\n{log}");
    }
    let store = Store::connect(&format!("sqlite://{}", db.display())).await?;
    let pid = bot.pid();

    let client = harness::http_client(256);
    let sent = Arc::new(Mutex::new(Sent::default()));
    let mut book = Book::default();
    let mut faults = FaultCounts::default();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x50a4);
    // Runs are created in the past, 1 ms apart, in sending order: "newer" is well defined
    // and every push (stamped now) is newer than every run.
    let created0 = chrono::Utc::now() - chrono::Duration::minutes(10);
    let mut last_of_branch: Vec<Option<String>> = vec![None; RUN_BRANCHES];
    let mut pending_push: Vec<(u64, String, String)> = Vec::new();
    let n = seconds * rate;
    let period = Duration::from_nanos(1_000_000_000 / rate);

    let stop = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let sampler = tokio::spawn(sample_loop(
        pid,
        db.clone(),
        store.clone(),
        t0,
        Duration::from_secs(1),
        stop.clone(),
    ));
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(n as usize);
    let mut push_k = 0u64;
    for i in 0..n {
        tokio::time::sleep_until(start + period * i as u32).await;
        let duplicate = rng.gen_bool(0.01);
        // A due push, else a run.
        if let Some(pos) = pending_push.iter().position(|(due, _, _)| *due <= i) {
            let (_, branch, run_id) = pending_push.remove(pos);
            book.superseded.insert(run_id);
            let hook = push_hook(
                &base,
                &branch,
                &format!("{:040x}", 0xabc0_0000_0000u64 + i),
                &format!("soak-push-{i}"),
                duplicate,
            );
            sent.lock().await.pushes += 1;
            tasks.push(tokio::spawn(deliver(client.clone(), hook, sent.clone())));
            continue;
        }
        let push_branch = i % 20 == 0 && i + PUSH_DELAY < n;
        let branch = if push_branch {
            push_k += 1;
            format!("soak-push-{push_k}")
        } else {
            format!("soak-{}", i as usize % RUN_BRANCHES)
        };
        let run = sim.world.add_run(NewRun {
            project: Some(PROJECT.into()),
            branch: Some(branch.clone()),
            sha: Some(format!("{:040x}", i + 1)),
            created_at: Some(created0 + chrono::Duration::milliseconds(i as i64)),
            emit: Some(false),
            ..Default::default()
        })?;
        let run_id = run.run_id.clone();
        book.all.push(run_id.clone());
        if push_branch {
            pending_push.push((i + PUSH_DELAY, branch, run_id.clone()));
        } else {
            let b = i as usize % RUN_BRANCHES;
            if let Some(prev) = last_of_branch[b].replace(run_id.clone()) {
                book.superseded.insert(prev.clone());
                // Faults on the cancel this event causes, or on its read of the new run.
                let draw: f64 = rng.r#gen();
                let cancel = format!("/v1/runs/{prev}/cancel");
                let read = format!("/v1/runs/{run_id}");
                if draw < 0.005 {
                    sim.world.inject_fault(status_fault("PUT", cancel, 2));
                    faults.cancel_5xx += 1;
                } else if draw < 0.01 {
                    sim.world.inject_fault(status_fault("GET", read, 1));
                    faults.read_5xx += 1;
                } else if draw < 0.015 {
                    sim.world
                        .inject_fault(latency_fault("PUT", cancel, SLOW_CANCEL_MS));
                    faults.cancel_slow += 1;
                } else if draw < 0.02 {
                    sim.world
                        .inject_fault(latency_fault("GET", read, SLOW_READ_MS));
                    faults.read_slow += 1;
                }
            }
        }
        sent.lock().await.currents += 1;
        let hook = currents_hook(&base, &run_id, duplicate);
        tasks.push(tokio::spawn(deliver(client.clone(), hook, sent.clone())));
    }
    let send_span = start.elapsed();
    for t in tasks {
        let _ = t.await;
    }
    let sent_at = t0.elapsed().as_secs_f64();

    // Drain: nothing unprocessed, nothing queued.
    let drain_start = Instant::now();
    let drain_deadline = drain_start + Duration::from_secs_f64(DRAIN_LIMIT_S * 3.0);
    let drained = loop {
        if let (Ok(0), Ok(0)) = (store.count_unprocessed().await, store.queue_depth().await) {
            break Some(drain_start.elapsed());
        }
        if Instant::now() > drain_deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    stop.store(1, Ordering::Relaxed);
    let samples = sampler.await?;

    // The books.
    let sent = std::mem::take(&mut *sent.lock().await);
    let mut lost = Vec::new();
    let mut dead = 0;
    for (source, id) in &sent.acked {
        match store.find_delivery(source, id).await? {
            Some(d) if d.processed_at.is_some() => {
                if d.outcome.as_deref() == Some("dead-letter") {
                    dead += 1;
                    lost.push(format!("{source}:{id} (dead-letter)"));
                }
            }
            _ => lost.push(format!("{source}:{id}")),
        }
    }
    let mut effects: HashMap<String, u64> = HashMap::new();
    let mut cancel_requests = 0u64;
    for e in sim.world.mutation_log() {
        if e.method == "PUT"
            && let Some(id) = e
                .path
                .strip_prefix("/v1/runs/")
                .and_then(|p| p.strip_suffix("/cancel"))
        {
            cancel_requests += 1;
            if (200..300).contains(&e.status) {
                *effects.entry(id.to_string()).or_default() += 1;
            }
        }
    }
    let repeated: Vec<&String> = effects
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| id)
        .collect();
    let wrong: Vec<&String> = effects
        .keys()
        .filter(|id| !book.superseded.contains(*id))
        .collect();
    let missed: Vec<&String> = book
        .superseded
        .iter()
        .filter(|id| effects.get(*id).copied().unwrap_or(0) != 1)
        .collect();
    let mut failed_actions = 0;
    for id in &book.superseded {
        if let Some(a) = store.action_by_key(&format!("cancel:{id}")).await?
            && a.state == runwarden::store::ActionState::Failed
        {
            failed_actions += 1;
        }
    }
    let still_running = book
        .all
        .iter()
        .filter(|id| {
            sim.world
                .run(id)
                .is_some_and(|r| r.is_in_progress() && book.superseded.contains(*id))
        })
        .count();

    // Faults that never fired: the request they were armed for never came.
    let armed = sim.world.faults().len();
    bot.stop(Duration::from_secs(30));
    let exit = bot.child.try_wait().ok().flatten();
    store.close().await;

    // Thirds of the sending window.
    let third = sent_at / 3.0;
    let rss_first = peak(&samples, 0.0, third, |s| s.rss_kib);
    let rss_last = peak(&samples, 2.0 * third, sent_at, |s| s.rss_kib);
    let hwm_end = samples.iter().map(|s| s.hwm_kib).max().unwrap_or(0);
    let wal_first = peak(&samples, 0.0, third, |s| s.wal_bytes);
    let wal_last = peak(&samples, 2.0 * third, sent_at, |s| s.wal_bytes);
    let db_first = peak(&samples, 0.0, third, |s| s.db_bytes + s.wal_bytes);
    let db_end = samples
        .last()
        .map(|s| s.db_bytes + s.wal_bytes)
        .unwrap_or(0);
    let backlog_max = samples.iter().map(|s| s.backlog).max().unwrap_or(0);
    let acked = sent.acked.len() as f64;
    let series = |f: &dyn Fn(&Sample) -> String| {
        let step = (samples.len() / 10).max(1);
        samples
            .iter()
            .step_by(step)
            .map(|s| format!("{:.0}s:{}", s.t, f(s)))
            .collect::<Vec<_>>()
            .join(" ")
    };

    let conditions = format!(
        "{seconds} s at {rate}/s ({:.0}/s achieved): {} Currents RUN_START, {} GitHub pushes, {} duplicates ({} answered 200); faults: {} cancel 503x2, {} cancel {SLOW_CANCEL_MS} ms (timeout {REQUEST_TIMEOUT}), {} read 503, {} read {SLOW_READ_MS} ms ({} never fired); sender retries {}, unexpected answers {:?}, never acked {}",
        n as f64 / send_span.as_secs_f64().max(1e-9),
        sent.currents,
        sent.pushes,
        sent.duplicates_sent,
        sent.duplicates_answered_200,
        faults.cancel_5xx,
        faults.cancel_slow,
        faults.read_5xx,
        faults.read_slow,
        armed,
        sent.retries,
        sent.unexpected,
        sent.unacked,
    );
    let sample_list = |v: &[&String]| {
        v.iter()
            .take(5)
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut rows = vec![
        Row::info("soak_events_acked", "soak: events acknowledged", acked, "events")
            .note(conditions),
        Row::target(
            "soak_lost_events",
            "soak: acknowledged events not processed",
            lost.len() as f64,
            "events",
            Goal::Equal,
            0.0,
        )
        .note(format!(
            "{dead} dead-lettered; first: {}",
            lost.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
        )),
        Row::target(
            "soak_duplicate_effects",
            "soak: runs cancelled more than once, or without being superseded",
            (repeated.len() + wrong.len()) as f64,
            "runs",
            Goal::Equal,
            0.0,
        )
        .note(format!(
            "{} runs with >1 successful cancel [{}], {} cancelled without being superseded [{}]; {} cancel requests for {} effects",
            repeated.len(),
            sample_list(&repeated),
            wrong.len(),
            sample_list(&wrong),
            cancel_requests,
            effects.values().sum::<u64>(),
        )),
        Row::target(
            "soak_missed_cancels",
            "soak: superseded runs not cancelled exactly once",
            missed.len() as f64,
            "runs",
            Goal::Equal,
            0.0,
        )
        .note(format!(
            "{} superseded of {} runs; {} still in progress, {} actions failed; first: [{}]",
            book.superseded.len(),
            book.all.len(),
            still_running,
            failed_actions,
            sample_list(&missed),
        )),
    ];
    let mut drain = Row::target(
        "soak_drain_s",
        "soak: queue drained after the last event",
        drained.map_or(f64::INFINITY, |d| d.as_secs_f64()),
        "s",
        Goal::AtMost,
        DRAIN_LIMIT_S,
    )
    .note(format!(
        "peak backlog {backlog_max} (events + actions) while sending; bot exit {}",
        exit.map_or("still running (killed)".to_string(), |s| s.to_string())
    ));
    if drained.is_none() {
        drain.pass = Some(false);
    }
    rows.push(drain);
    rows.push(
        Row::target(
            "soak_rss_last_third_mib",
            "soak: bot peak RSS, last third of the window",
            mib(rss_last),
            "MiB",
            Goal::AtMost,
            TARGET_RSS_GROWTH,
        )
        .limit(mib(rss_first), "peak RSS, first third")
        .ratio_target(Goal::AtMost, TARGET_RSS_GROWTH)
        .note(format!(
            "VmHWM {:.1} MiB; RSS MiB over time: {}",
            mib(hwm_end),
            series(&|s| format!("{:.1}", mib(s.rss_kib)))
        )),
    );
    rows.push(
        Row::target(
            "soak_wal_last_third_mib",
            "soak: store WAL peak size, last third",
            wal_last as f64 / 1048576.0,
            "MiB",
            Goal::AtMost,
            TARGET_WAL_GROWTH,
        )
        .limit(
            (wal_first as f64 / 1048576.0).max(4.0),
            "peak WAL, first third (at least 4 MiB: one checkpoint's worth)",
        )
        .ratio_target(Goal::AtMost, TARGET_WAL_GROWTH)
        .note(format!(
            "WAL MiB over time: {}",
            series(&|s| format!("{:.1}", s.wal_bytes as f64 / 1048576.0))
        )),
    );
    rows.push(
        Row::info(
            "soak_store_bytes_per_event",
            "soak: store size per acknowledged event (db + WAL)",
            db_end as f64 / acked.max(1.0),
            "bytes",
        )
        .note(format!(
            "db+WAL {:.1} MiB at the end, {:.1} MiB peak in the first third; everything is kept (`[store] keep_events` prunes events only after 14 days, `keep_audit` the audit after 90); MiB over time: {}",
            db_end as f64 / 1048576.0,
            db_first as f64 / 1048576.0,
            series(&|s| format!("{:.1}", (s.db_bytes + s.wal_bytes) as f64 / 1048576.0))
        )),
    );
    Ok(rows)
}
