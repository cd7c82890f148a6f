//! `runwarden-bench`: how fast and how lean runwarden is, each figure measured against
//! its limit in the same run (issue 9; see `BENCHMARKS.md`).
//!
//! ```sh
//! bench/run.sh                      # release build, whole suite (<= ~10 min)
//! bench/run.sh --quick              # <= ~1 min
//! cargo run --release --bin runwarden-bench -- --only api-economy --json out.json
//! ```
//!
//! Figures (names for `--only`):
//!
//! 1. `webhook-ack`: signed GitHub pushes acked (202, durably committed) per second by
//!    the real router + store, vs a bare axum handler that only verifies the HMAC.
//! 2. `event-to-cancel`: push webhook sent -> cancel received by the simulator, at
//!    200 events/s, minus the simulator's own service time.
//! 3. `api-economy`: Currents requests per decision vs the minimum.
//! 4. `retention-sweep`: `runwarden sweep` over 10k and 100k runs (child processes): wall
//!    time vs what the request-rate cap alone imposes, and the bot's peak RSS.
//! 5. `rules-eval`: 1M runs through supersede and retention in memory, one thread.
//! 6. `footprint`: idle RSS of `runwarden serve` and time from spawn to `/readyz` 200.
//! 7. `soak` (only with `--only soak`; `bench/soak.sh`): minutes of steady webhooks with
//!    injected faults and duplicates against the real binary; 0 lost events, 0 duplicate
//!    side effects, the queue drained, RSS and store size sampled (issue 8).
//!
//! Everything listens on loopback only. Timing is reported, never asserted here; the
//! request-count equalities of `api-economy` are asserted by `tests/bench_smoke.rs`.

mod ack;
mod economy;
mod footprint;
mod harness;
mod latency;
mod report;
mod rules_eval;
mod soak;
mod sweep;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;

use report::{Machine, Report};

/// The figures, in the order they run.
pub const FIGURES: [&str; 7] = [
    "api-economy",
    "rules-eval",
    "webhook-ack",
    "event-to-cancel",
    "footprint",
    "retention-sweep",
    "soak",
];

#[derive(Debug, Parser)]
#[command(
    name = "runwarden-bench",
    about = "runwarden benchmarks: each figure against its limit, in the same run"
)]
pub struct Args {
    /// Smaller sizes and shorter windows (the whole suite in about a minute).
    #[arg(long)]
    pub quick: bool,
    /// Run only these figures (repeatable or comma-separated): webhook-ack,
    /// event-to-cancel, api-economy, retention-sweep, rules-eval, footprint.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// The `runwarden` binary for the child-process figures (default: next to this one).
    #[arg(long)]
    pub runwarden: Option<PathBuf>,
    /// Exit 1 when a figure misses its target (default: report only).
    #[arg(long)]
    pub strict: bool,
    /// Run the store-backed figures (webhook-ack, event-to-cancel) on PostgreSQL instead
    /// of SQLite: a new database on this server for every bot, dropped afterwards (e.g.
    /// `postgres://postgres@127.0.0.1:55432/postgres`; the user must be allowed to
    /// CREATE DATABASE). Their rows get a `_pg` id suffix.
    #[arg(
        long,
        value_name = "URL",
        env = "RUNWARDEN_BENCH_POSTGRES",
        hide_env_values = true
    )]
    pub postgres: Option<String>,
    /// `soak`: length of the sending window in seconds (default 180; 20 with --quick).
    #[arg(long)]
    pub soak_seconds: Option<u64>,
    /// `soak`: events per second (default 80).
    #[arg(long)]
    pub soak_rate: Option<u64>,
}

impl Args {
    fn wants(&self, figure: &str) -> bool {
        // The soak takes minutes: only when asked for by name.
        (self.only.is_empty() && figure != "soak") || self.only.iter().any(|o| o == figure)
    }

    /// The `runwarden` binary: `--runwarden`, else the sibling of this executable.
    pub fn runwarden_bin(&self) -> anyhow::Result<PathBuf> {
        let path = match &self.runwarden {
            Some(p) => p.clone(),
            None => std::env::current_exe()?
                .parent()
                .map(|d| d.join("runwarden"))
                .ok_or_else(|| anyhow::anyhow!("cannot locate this executable's directory"))?,
        };
        if !path.is_file() {
            anyhow::bail!(
                "{} not found: build it first (`cargo build --release --bins`) or pass --runwarden PATH",
                path.display()
            );
        }
        Ok(path)
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    for o in &args.only {
        if !FIGURES.contains(&o.as_str()) {
            eprintln!(
                "runwarden-bench: unknown figure {o:?}; one of {}",
                FIGURES.join(", ")
            );
            return ExitCode::from(2);
        }
    }
    if std::env::var_os("RUST_LOG").is_some() {
        runwarden::telemetry::init("warn", runwarden::telemetry::LogFormat::Auto);
    }
    if cfg!(debug_assertions) {
        eprintln!(
            "runwarden-bench: this is a debug build; timings are meaningless (use --release)"
        );
    }
    let started = Instant::now();
    let mut report = Report::new(Machine::detect(), args.quick);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut errors = 0;
    for figure in FIGURES {
        if !args.wants(figure) {
            continue;
        }
        eprintln!("== {figure} ...");
        let load_before = report::loadavg();
        let t = Instant::now();
        let result = match figure {
            "webhook-ack" => rt.block_on(ack::run(&args)),
            "event-to-cancel" => rt.block_on(latency::run(&args)),
            "api-economy" => rt.block_on(economy::run(&args)),
            "retention-sweep" => rt.block_on(sweep::run(&args)),
            "rules-eval" => rules_eval::run(&args),
            "footprint" => rt.block_on(footprint::run(&args)),
            "soak" => rt.block_on(soak::run(&args)),
            _ => unreachable!(),
        };
        match result {
            Ok(rows) => {
                for r in &rows {
                    eprintln!("   {}", r.one_line());
                }
                report.add(figure, rows, load_before, t.elapsed());
            }
            Err(e) => {
                errors += 1;
                eprintln!("   {figure} failed: {e:#}");
                report.error(figure, format!("{e:#}"), load_before, t.elapsed());
            }
        }
    }
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    report.finish(started.elapsed());
    println!("{}", report.table());
    if let Some(path) = &args.json {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::create_dir_all(dir);
        }
        match std::fs::write(path, report.json()) {
            Ok(()) => eprintln!("results written to {}", path.display()),
            Err(e) => {
                eprintln!("runwarden-bench: cannot write {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
    }
    if errors > 0 || (args.strict && report.any_failed()) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
