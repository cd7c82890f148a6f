//! Figure 6: footprint of `runwarden serve` — time from process spawn to the first
//! `/readyz` 200, and resident memory once idle.
//!
//! `serve` runs as a child with a config using every rule kind (like the repo's
//! `rules.toml`), polling a `runwarden simulate` child every 60 s (one poll happens at
//! start), all webhook secrets and the admin token set. Each start gets a new store (so
//! the time includes creating the database and applying the migrations); one more start
//! reuses the last store (a restart). `/readyz` is polled every millisecond from spawn.
//! After a few idle seconds `VmRSS` and `VmHWM` are read from `/proc/<pid>/status`; then
//! the process gets SIGTERM.

use std::time::{Duration, Instant};

use crate::Args;
use crate::harness::{self, ChildProc, ConfigSpec, SimChild};
use crate::report::{Goal, Row};

/// Target: idle RSS, MiB.
pub const TARGET_RSS_MIB: f64 = 20.0;
/// Target: spawn to `/readyz` 200, ms.
pub const TARGET_READY_MS: f64 = 100.0;

const RULES: &str = r#"
[[rules]]
name = "cancel-superseded"
kind = "supersede"
spare_if_progress_at_least = 0.9
[rules.match]
branches = ["*", "!main", "!release/*"]

[[rules]]
name = "stuck-runs"
kind = "timeout"
max_duration = "90m"
idle_for = "30m"

[[rules]]
name = "orphaned-runs"
kind = "orphan"
grace = "2m"

[[rules]]
name = "nightly-retention"
kind = "retention"
schedule = "0 3 * * *"
older_than = "30d"
keep_latest = 3
keep_last_passed = true
pin_tags = ["release*", "keep"]
[rules.match]
branches = ["*", "!main"]

[[rules]]
name = "pr-summary"
kind = "summary"
comment = true
commit_status = true
"#;

struct Start {
    ready: Duration,
    rss_kib: u64,
    hwm_kib: u64,
}

async fn start_once(
    bin: &std::path::Path,
    sim: &SimChild,
    dir: &std::path::Path,
    store: &std::path::Path,
    idle: Duration,
    tag: &str,
) -> anyhow::Result<Start> {
    let port = harness::free_port()?;
    let listen = format!("127.0.0.1:{port}");
    let currents = format!("{}/v1", sim.base_url);
    let github = format!("{}/github", sim.base_url);
    let text = ConfigSpec {
        api_url: &currents,
        github_url: &github,
        projects: &["f01"],
        poll_interval: "60s",
        max_requests_per_second: 10,
        store_path: store,
        listen: &listen,
        rules: RULES,
    }
    .text();
    let config = dir.join(format!("serve-{tag}.toml"));
    std::fs::write(&config, text)?;
    let log = std::fs::File::create(dir.join(format!("serve-{tag}.log")))?;
    let mut cmd = harness::serve_command(bin, &config, log, "info")?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .no_proxy()
        .build()?;
    let url = format!("http://{listen}/readyz");
    let t = Instant::now();
    let child = cmd.spawn()?;
    let mut proc = ChildProc { child };
    let ready = loop {
        if let Ok(r) = client.get(&url).send().await
            && r.status().is_success()
        {
            break t.elapsed();
        }
        if let Ok(Some(status)) = proc.child.try_wait() {
            anyhow::bail!(
                "serve exited with {status} before it was ready; see {}",
                dir.join(format!("serve-{tag}.log")).display()
            );
        }
        if t.elapsed() > Duration::from_secs(20) {
            anyhow::bail!("serve was not ready within 20 s");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    tokio::time::sleep(idle).await;
    let pid = proc.pid();
    let rss_kib = harness::proc_status_kib(pid, "VmRSS").unwrap_or(0);
    let hwm_kib = harness::proc_status_kib(pid, "VmHWM").unwrap_or(0);
    tokio::task::spawn_blocking(move || proc.stop(Duration::from_secs(10))).await?;
    Ok(Start {
        ready,
        rss_kib,
        hwm_kib,
    })
}

fn median<T: Copy + Ord>(mut v: Vec<T>) -> T {
    v.sort();
    v[v.len() / 2]
}

pub async fn run(args: &Args) -> anyhow::Result<Vec<Row>> {
    let bin = args.runwarden_bin()?;
    let (starts, idle) = if args.quick {
        (3, Duration::from_millis(1500))
    } else {
        (5, Duration::from_secs(3))
    };
    let dir = harness::tempdir()?;
    let sim = SimChild::start(&bin, &dir.path().join("simulate.log")).await?;
    sim.generate(&serde_json::json!({
        "projects": ["f01"], "runsPerProject": 1000, "inProgress": 5, "days": 30,
        "branches": 20, "specs": 2, "groups": 1
    }))
    .await?;
    let mut results = Vec::new();
    for i in 0..starts {
        let store = dir.path().join(format!("store-{i}.db"));
        results.push(start_once(&bin, &sim, dir.path(), &store, idle, &i.to_string()).await?);
    }
    let last_store = dir.path().join(format!("store-{}.db", starts - 1));
    let restart = start_once(&bin, &sim, dir.path(), &last_store, idle, "restart").await?;
    tokio::task::spawn_blocking(move || sim.stop()).await?;

    let ready_ms: Vec<u64> = results.iter().map(|s| s.ready.as_micros() as u64).collect();
    let rss: Vec<u64> = results.iter().map(|s| s.rss_kib).collect();
    let hwm: Vec<u64> = results.iter().map(|s| s.hwm_kib).collect();
    let (min_r, max_r) = (
        *ready_ms.iter().min().unwrap_or(&0) as f64 / 1000.0,
        *ready_ms.iter().max().unwrap_or(&0) as f64 / 1000.0,
    );
    let mib = |k: u64| (k as f64 / 1024.0 * 10.0).round() / 10.0;
    Ok(vec![
        Row::target(
            "serve_idle_rss_mib",
            "serve idle RSS (VmRSS)",
            mib(median(rss)),
            "MiB",
            Goal::AtMost,
            TARGET_RSS_MIB,
        )
        .note(format!(
            "median of {starts} starts, {:.1} s after ready (one poll done); peak VmHWM {} MiB",
            idle.as_secs_f64(),
            mib(median(hwm))
        )),
        Row::target(
            "serve_ready_ms",
            "serve spawn -> /readyz 200 (new store)",
            median(ready_ms) as f64 / 1000.0,
            "ms",
            Goal::AtMost,
            TARGET_READY_MS,
        )
        .note(format!(
            "median of {starts}, min {min_r:.1} ms, max {max_r:.1} ms; restart on an existing store {:.1} ms",
            restart.ready.as_secs_f64() * 1000.0
        )),
    ])
}
