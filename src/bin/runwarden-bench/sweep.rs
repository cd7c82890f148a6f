//! Figure 4: a retention sweep at scale, as separate processes.
//!
//! A `runwarden simulate` child holds two worlds' worth of history: a small one (3
//! projects, 10k runs; 2k in `--quick`) and a large one (3 projects, 100k runs; 10k in
//! `--quick`), both on 200 branches over 90 days. For each, `runwarden sweep --rule
//! retention` runs as a child against it with a fresh store and a request-rate cap of
//! [`RATE_CAP`]/s; `/proc/<pid>/status` `VmHWM` of the sweep process (the bot alone) is
//! sampled every 5 ms until it exits.
//!
//! - wall time is compared with what the rate cap alone imposes on the minimum number of
//!   requests (⌈runs/50⌉ list pages per project + 1 delete per expired run), i.e.
//!   `requests / cap`;
//! - peak RSS should not depend on the number of runs.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::Args;
use crate::harness::{self, API_KEY, ConfigSpec, SimChild};
use crate::report::{Goal, Row};

/// `max_requests_per_second` of the sweeps.
pub const RATE_CAP: u32 = 100;
/// Target: wall time / rate-cap floor.
pub const TARGET_RATIO: f64 = 1.2;
/// Target: peak RSS of the sweep, MiB.
pub const TARGET_RSS_MIB: f64 = 64.0;
/// Target: peak RSS of the large sweep / peak RSS of the small one ("independent of the
/// number of runs", with room for allocator noise).
pub const TARGET_RSS_GROWTH: f64 = 1.25;
const BRANCHES: u32 = 200;

const RULES: &str = "[[rules]]\nname = \"retention\"\nkind = \"retention\"\nschedule = \"0 3 * * *\"\n\
    older_than = \"88d\"\nkeep_latest = 3\nkeep_last_passed = true\npin_tags = [\"keep\"]\nmax_deletions = 100000\n";

struct Sweep {
    runs: u64,
    wall_s: f64,
    hwm_kib: u64,
    pages: u64,
    min_pages: u64,
    deletes: u64,
    other: u64,
    ok: bool,
}

impl Sweep {
    fn floor_s(&self) -> f64 {
        (self.min_pages + self.deletes) as f64 / RATE_CAP as f64
    }
}

async fn sweep_once(
    bin: &std::path::Path,
    sim: &SimChild,
    dir: &std::path::Path,
    prefix: &str,
    total: u64,
) -> anyhow::Result<Sweep> {
    let per_project = total.div_ceil(3);
    let projects: Vec<String> = (1..=3).map(|i| format!("{prefix}{i:02}")).collect();
    let generated = sim
        .generate(&serde_json::json!({
            "projects": projects,
            "runsPerProject": per_project,
            "inProgress": 10,
            "days": 90,
            "branches": BRANCHES,
            "specs": 2,
            "groups": 1,
        }))
        .await?;
    eprintln!("   simulator: {generated}");
    let work = dir.join(prefix);
    std::fs::create_dir_all(&work)?;
    let config_path = work.join("bench.toml");
    let refs: Vec<&str> = projects.iter().map(String::as_str).collect();
    let currents = format!("{}/v1", sim.base_url);
    let github = format!("{}/github", sim.base_url);
    let text = ConfigSpec {
        api_url: &currents,
        github_url: &github,
        projects: &refs,
        poll_interval: "0s",
        max_requests_per_second: RATE_CAP,
        store_path: &work.join("runwarden.db"),
        listen: "127.0.0.1:0",
        rules: RULES,
    }
    .text();
    std::fs::write(&config_path, text)?;
    let before = sim.request_counts().await?;
    let mut cmd = Command::new(bin);
    cmd.args(["--config"])
        .arg(&config_path)
        .args(["sweep", "--rule", "retention"])
        .env_clear()
        .env("CURRENTS_API_KEY", API_KEY)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(work.join("sweep.out"))?)
        .stderr(std::fs::File::create(work.join("sweep.log"))?);
    let (status, wall, hwm_kib) =
        tokio::task::spawn_blocking(move || harness::run_sampled(cmd, Duration::from_secs(900)))
            .await??;
    let after = sim.request_counts().await?;
    let delta = |k: &str| after.get(k).copied().unwrap_or(0) - before.get(k).copied().unwrap_or(0);
    let pages = delta("currents GET");
    let deletes = delta("currents DELETE");
    let all: u64 = after.values().sum::<u64>() - before.values().sum::<u64>();
    let s = Sweep {
        runs: per_project * 3,
        wall_s: wall.as_secs_f64(),
        hwm_kib,
        pages,
        min_pages: per_project.div_ceil(50) * 3,
        deletes,
        other: all - pages - deletes,
        ok: status.success(),
    };
    if !s.ok {
        eprintln!(
            "   sweep exited with {status}; see {}",
            work.join("sweep.log").display()
        );
    }
    anyhow::ensure!(
        s.deletes > 0,
        "the sweep deleted nothing (exit {status}); see {}",
        work.display()
    );
    Ok(s)
}

pub async fn run(args: &Args) -> anyhow::Result<Vec<Row>> {
    let bin = args.runwarden_bin()?;
    let (small, large) = if args.quick {
        (2_000, 10_000)
    } else {
        (10_000, 100_000)
    };
    let dir = harness::tempdir()?;
    let sim = SimChild::start(&bin, &dir.path().join("simulate.log")).await?;
    let a = sweep_once(&bin, &sim, dir.path(), "s", small).await?;
    let b = sweep_once(&bin, &sim, dir.path(), "l", large).await?;
    tokio::task::spawn_blocking(move || sim.stop()).await?;
    let mib = |kib: u64| kib as f64 / 1024.0;
    let detail = |s: &Sweep| {
        format!(
            "{} runs: {} list pages (min {}), {} deletes, {} other requests; floor {:.1} s at {} req/s{}",
            s.runs,
            s.pages,
            s.min_pages,
            s.deletes,
            s.other,
            s.floor_s(),
            RATE_CAP,
            if s.ok { "" } else { "; sweep exited non-zero" }
        )
    };
    let time_row = |s: &Sweep, name: &str, goal: Goal| {
        let mut r = Row::info(
            name,
            &format!("retention sweep wall time, {}k runs", s.runs / 1000),
            s.wall_s,
            "s",
        )
        .limit(s.floor_s(), "rate cap alone");
        if goal != Goal::Info {
            r = r.ratio_target(goal, TARGET_RATIO);
        }
        let mut r = r.note(detail(s));
        if !s.ok || s.pages != s.min_pages {
            r.pass = r.pass.map(|_| false);
        }
        r
    };
    let rss_row = |s: &Sweep, name: &str| {
        Row::target(
            name,
            &format!("sweep peak RSS (VmHWM), {}k runs", s.runs / 1000),
            (mib(s.hwm_kib) * 10.0).round() / 10.0,
            "MiB",
            Goal::AtMost,
            TARGET_RSS_MIB,
        )
    };
    let round = |kib: u64| (mib(kib) * 10.0).round() / 10.0;
    let growth = Row::info(
        &format!(
            "sweep_peak_rss_growth_{}k_vs_{}k",
            b.runs / 1000,
            a.runs / 1000
        ),
        &format!(
            "sweep peak RSS, {}k vs {}k runs",
            b.runs / 1000,
            a.runs / 1000
        ),
        round(b.hwm_kib),
        "MiB",
    )
    .limit(
        round(a.hwm_kib),
        &format!("peak at {}k runs", a.runs / 1000),
    )
    .ratio_target(Goal::AtMost, TARGET_RSS_GROWTH)
    .note(format!(
        "independent of the number of runs means ~1x for {:.0}x the runs",
        b.runs as f64 / a.runs as f64
    ));
    Ok(vec![
        time_row(&a, &format!("sweep_wall_{}k_s", a.runs / 1000), Goal::Info),
        time_row(
            &b,
            &format!("sweep_wall_{}k_s", b.runs / 1000),
            Goal::AtMost,
        ),
        rss_row(&a, &format!("sweep_peak_rss_{}k_mib", a.runs / 1000)),
        rss_row(&b, &format!("sweep_peak_rss_{}k_mib", b.runs / 1000)),
        growth,
    ])
}
