//! Figure 1: webhook ack throughput.
//!
//! 64 concurrent in-process clients post signed GitHub `push` webhooks (about 3 KiB,
//! unique `X-GitHub-Delivery` each) over loopback:
//!
//! - the ceiling: a bare axum handler that reads the body, verifies the HMAC with the
//!   bot's own `verify_github_signature` and answers 202;
//! - the bot: the real router and SQLite store (WAL, `synchronous=FULL`), each 202 sent
//!   only after the delivery's commit. Its rules do no API work for a push (a timeout
//!   rule, polling off), so this measures intake; the processor still consumes the
//!   events concurrently, as in production.
//!
//! The two are measured in alternating one-second windows (ceiling, bot, bot, ceiling,
//! ...), so that both see the same machine: on a shared VM the speed of the same code
//! drifts by a factor of two within a minute, and a ceiling measured once, before the
//! bot, made the ratio a coin toss. Before each ceiling window the bot is let finish
//! processing what it acked (it would otherwise slow the ceiling down).
//!
//! Afterwards the store is opened read-only and the stored deliveries are counted: every
//! 202 must be there.
//!
//! With `--postgres URL` the bot's store is a new database on that server instead (rows
//! `*_pg`); the tmpfs diagnostic is SQLite's only.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use runwarden::intake::webhooks::verify_github_signature;
use runwarden::secret::Secret;

use crate::Args;
use crate::harness::{self, BenchStore, GITHUB_SECRET, InProcBot, InProcSim, PROJECT, REPO};
use crate::report::{Goal, Row};

pub const CONCURRENCY: usize = 64;
/// Target: acks per second on 2 cores.
pub const TARGET_PER_S: f64 = 5_000.0;
/// Target: share of the bare handler's throughput.
pub const TARGET_SHARE: f64 = 0.5;

const RULES: &str = "[[rules]]\nname = \"stuck\"\nkind = \"timeout\"\nmax_duration = \"2h\"\n";

/// What one load window measured.
#[derive(Debug, Default)]
pub struct Blast {
    pub accepted: u64,
    pub errors: u64,
    pub statuses: BTreeMap<u16, u64>,
    pub elapsed: Duration,
    /// Per-request latencies, seconds, sorted.
    pub latencies: Vec<f64>,
    /// CPU time of the whole process (load generator included) during the window, and
    /// for the bot until it had processed what it acked.
    pub cpu: Duration,
    /// The wall time `cpu` was measured over.
    pub cpu_wall: Duration,
    /// The whole machine's CPU time over the same span (`/proc/stat`).
    pub system: SystemCpu,
}

impl Blast {
    pub fn per_s(&self) -> f64 {
        self.accepted as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Process CPU time per accepted request, microseconds.
    fn cpu_per_request_us(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.accepted.max(1) as f64
    }

    /// Adds another window's figures to these.
    fn absorb(&mut self, other: Blast) {
        self.accepted += other.accepted;
        self.errors += other.errors;
        for (k, v) in other.statuses {
            *self.statuses.entry(k).or_default() += v;
        }
        self.elapsed += other.elapsed;
        self.cpu += other.cpu;
        self.cpu_wall += other.cpu_wall;
        self.system = self.system.plus(other.system);
        self.latencies.extend(other.latencies);
        self.latencies.sort_by(f64::total_cmp);
    }
}

/// The load: one client, one signed body, and the delivery ids handed out so far.
struct Load {
    client: reqwest::Client,
    body: Bytes,
    sig: String,
    ids: Arc<AtomicU64>,
}

/// How long each side is loaded.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    warmup: Duration,
    window: Duration,
    rounds: usize,
}

impl Load {
    /// Posts the body to `url` from `CONCURRENCY` tasks for `window`.
    async fn blast(&self, url: &str, window: Duration) -> Blast {
        let Load {
            client,
            body,
            sig,
            ids,
        } = self;
        let start = Instant::now();
        let end = start + window;
        let mut tasks = Vec::with_capacity(CONCURRENCY);
        for _ in 0..CONCURRENCY {
            let (client, url, body, sig, ids) = (
                client.clone(),
                url.to_string(),
                body.clone(),
                sig.to_string(),
                ids.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut b = Blast::default();
                while Instant::now() < end {
                    let id = ids.fetch_add(1, Ordering::Relaxed);
                    let t = Instant::now();
                    let r = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .header("x-github-event", "push")
                        .header("x-github-delivery", format!("bench-{id:012}"))
                        .header("x-hub-signature-256", &sig)
                        .body(body.clone())
                        .send()
                        .await;
                    match r {
                        Ok(resp) => {
                            let status = resp.status().as_u16();
                            let _ = resp.bytes().await;
                            b.latencies.push(t.elapsed().as_secs_f64());
                            *b.statuses.entry(status).or_default() += 1;
                            if status == 202 {
                                b.accepted += 1;
                            } else {
                                b.errors += 1;
                            }
                        }
                        Err(_) => b.errors += 1,
                    }
                }
                b
            }));
        }
        let mut total = Blast::default();
        for t in tasks {
            if let Ok(b) = t.await {
                total.accepted += b.accepted;
                total.errors += b.errors;
                for (k, v) in b.statuses {
                    *total.statuses.entry(k).or_default() += v;
                }
                total.latencies.extend(b.latencies);
            }
        }
        total.elapsed = start.elapsed();
        total.latencies.sort_by(f64::total_cmp);
        total
    }
}

async fn bare_handler(
    State(secrets): State<Arc<Vec<Secret>>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let sig = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if verify_github_signature(&secrets, sig, &body) {
        StatusCode::ACCEPTED
    } else {
        StatusCode::UNAUTHORIZED
    }
}

/// The ceiling server: HMAC check and 202, nothing else.
async fn start_ceiling() -> anyhow::Result<(String, tokio::task::JoinHandle<()>)> {
    let (listener, addr) = harness::loopback_listener().await?;
    let app = axum::Router::new()
        .route("/webhooks/github", axum::routing::post(bare_handler))
        .with_state(Arc::new(vec![Secret::new(GITHUB_SECRET)]));
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((format!("http://{addr}/webhooks/github"), task))
}

const COUNT_STORED: &str = "SELECT COUNT(*) FROM deliveries WHERE source = 'github'";

/// The GitHub deliveries in the bot's store, read through a connection of its own (the
/// SQLite file opened read-only, or the PostgreSQL database).
async fn stored_deliveries(bot: &InProcBot) -> anyhow::Result<i64> {
    if let Some(db) = &bot.pg {
        use sqlx::Connection as _;
        let mut conn = sqlx::PgConnection::connect(&db.url).await?;
        let n: i64 = sqlx::query_scalar(COUNT_STORED)
            .fetch_one(&mut conn)
            .await?;
        let _ = conn.close().await;
        return Ok(n);
    }
    let db = bot.dir.path().join("runwarden.db");
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect(&format!("sqlite://{}?mode=ro", db.display()))
        .await?;
    let n: i64 = sqlx::query_scalar(COUNT_STORED).fetch_one(&pool).await?;
    pool.close().await;
    Ok(n)
}

fn ms(v: f64) -> f64 {
    v * 1000.0
}

/// CPU time (user + system) this process has used so far, from `/proc/self/stat` (in
/// clock ticks of 10 ms: `USER_HZ` is 100 on Linux); zero where that cannot be read.
fn process_cpu() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return Duration::ZERO;
    };
    // Fields after the command name, which is in parentheses: utime and stime are the
    // 12th and 13th of them.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return Duration::ZERO;
    };
    let ticks: u64 = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse::<u64>().ok())
        .sum();
    Duration::from_millis(ticks * 10)
}

/// The machine's CPU time (all CPUs, all processes and kernel threads) from the `cpu`
/// line of `/proc/stat`, in clock ticks: busy (user, nice, system, irq, softirq, steal),
/// waiting for I/O, and idle.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemCpu {
    busy: u64,
    iowait: u64,
    idle: u64,
}

impl SystemCpu {
    /// So far since boot; zero where `/proc/stat` cannot be read.
    fn now() -> SystemCpu {
        let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
            return SystemCpu::default();
        };
        let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
            return SystemCpu::default();
        };
        // user nice system idle iowait irq softirq steal (guest time is in user already)
        let f: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .take(8)
            .filter_map(|v| v.parse().ok())
            .collect();
        if f.len() < 8 {
            return SystemCpu::default();
        }
        SystemCpu {
            busy: f[0] + f[1] + f[2] + f[5] + f[6] + f[7],
            iowait: f[4],
            idle: f[3],
        }
    }

    fn since(self, earlier: SystemCpu) -> SystemCpu {
        SystemCpu {
            busy: self.busy.saturating_sub(earlier.busy),
            iowait: self.iowait.saturating_sub(earlier.iowait),
            idle: self.idle.saturating_sub(earlier.idle),
        }
    }

    fn plus(self, other: SystemCpu) -> SystemCpu {
        SystemCpu {
            busy: self.busy + other.busy,
            iowait: self.iowait + other.iowait,
            idle: self.idle + other.idle,
        }
    }

    /// Busy and I/O-wait shares of all the CPU time, percent.
    fn shares(self) -> (f64, f64) {
        let total = (self.busy + self.iowait + self.idle).max(1) as f64;
        (
            100.0 * self.busy as f64 / total,
            100.0 * self.iowait as f64 / total,
        )
    }
}

/// What the alternating windows of one bot and the ceiling measured.
struct Interleaved {
    bot: Blast,
    ceiling: Blast,
    /// Bot / ceiling throughput, per round.
    ratios: Vec<f64>,
    /// Deliveries acked by the bot over all windows (warm-up included), and found stored.
    acked: u64,
    stored: i64,
    /// The store's group commits of deliveries, and the deliveries they carried.
    commits: (u64, u64),
}

impl Interleaved {
    /// The process's CPU time per request on each side (the load generator's included),
    /// and how busy the CPUs were: a less noisy view than throughput of what the bot's
    /// own work costs, and of how much of its window it waited.
    fn cpu_note(&self) -> String {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let busy = |b: &Blast| b.cpu.as_secs_f64() / (b.cpu_wall.as_secs_f64() * cpus).max(1e-9);
        let (bot, ceiling) = (
            self.bot.cpu_per_request_us(),
            self.ceiling.cpu_per_request_us(),
        );
        let ((bot_sys, bot_io), (ceiling_sys, ceiling_io)) =
            (self.bot.system.shares(), self.ceiling.system.shares());
        format!(
            "CPU per request {bot:.0} µs (bot, its processing included) vs {ceiling:.0} µs (ceiling) = {:.2}x; CPUs {:.0}% vs {:.0}% busy with this process, {bot_sys:.0}% vs {ceiling_sys:.0}% with anything (I/O wait {bot_io:.0}% vs {ceiling_io:.0}%)",
            ceiling / bot.max(1e-9),
            100.0 * busy(&self.bot),
            100.0 * busy(&self.ceiling)
        )
    }

    /// `min–max` of the per-round ratios.
    fn spread(&self) -> String {
        let min = self.ratios.iter().copied().fold(f64::INFINITY, f64::min);
        let max = self.ratios.iter().copied().fold(0.0, f64::max);
        let (commits, deliveries) = self.commits;
        format!(
            "{} rounds, per-round ratio {min:.2}–{max:.2}x; {deliveries} deliveries in {commits} commits ({:.1} each)",
            self.ratios.len(),
            deliveries as f64 / commits.max(1) as f64
        )
    }
}

/// The same load on the ceiling at `ceiling_url` and on a fresh in-process bot with its
/// store `store`, in rounds of one window each, alternating which goes first.
async fn interleaved(
    load: &Load,
    at: Schedule,
    ceiling_url: &str,
    store: BenchStore,
) -> anyhow::Result<Interleaved> {
    let sim = InProcSim::start(false).await?;
    sim.world.add_project(runwarden::simulator::NewProject {
        project_id: Some(PROJECT.into()),
        repo: Some(REPO.into()),
        ..Default::default()
    })?;
    let bot = InProcBot::start_on(&sim, &[PROJECT], RULES, 0, store).await?;
    let url = bot.url("/webhooks/github");
    load.blast(ceiling_url, at.warmup).await;
    let mut acked = load.blast(&url, at.warmup).await.accepted;
    let (mut bot_total, mut ceiling_total) = (Blast::default(), Blast::default());
    let mut ratios = Vec::with_capacity(at.rounds);
    for round in 0..at.rounds {
        let mut pair = [None, None];
        // Ceiling first in even rounds, the bot first in odd ones.
        for turn in [round % 2, 1 - round % 2] {
            let (cpu, wall, system) = (process_cpu(), Instant::now(), SystemCpu::now());
            if turn == 0 {
                let mut c = load.blast(ceiling_url, at.window).await;
                (c.cpu, c.cpu_wall) = (process_cpu().saturating_sub(cpu), wall.elapsed());
                c.system = SystemCpu::now().since(system);
                pair[0] = Some(c);
            } else {
                let mut b = load.blast(&url, at.window).await;
                // What the bot acked is processed before the ceiling's window (it would
                // run during it), and the CPU that takes is the bot's.
                bot.settle(Duration::from_secs(60)).await?;
                (b.cpu, b.cpu_wall) = (process_cpu().saturating_sub(cpu), wall.elapsed());
                b.system = SystemCpu::now().since(system);
                pair[1] = Some(b);
            }
        }
        let [Some(c), Some(b)] = pair else {
            unreachable!("both windows of a round ran")
        };
        if c.accepted == 0 {
            anyhow::bail!("the bare handler accepted nothing: {:?}", c.statuses);
        }
        ratios.push(b.per_s() / c.per_s());
        acked += b.accepted;
        bot_total.absorb(b);
        ceiling_total.absorb(c);
    }
    let stored = stored_deliveries(&bot).await;
    let stats = bot.bot.ctx.store.group_commit_stats();
    let commits = (stats.groups(), stats.events());
    bot.shutdown().await;
    Ok(Interleaved {
        commits,
        bot: bot_total,
        ceiling: ceiling_total,
        ratios,
        acked,
        stored: stored?,
    })
}

pub async fn run(args: &Args) -> anyhow::Result<Vec<Row>> {
    let at = if args.quick {
        Schedule {
            warmup: Duration::from_millis(300),
            window: Duration::from_millis(500),
            rounds: 2,
        }
    } else {
        Schedule {
            warmup: Duration::from_secs(1),
            window: Duration::from_secs(1),
            rounds: 5,
        }
    };
    let body = Bytes::from(harness::push_body(
        REPO,
        "feat/ack",
        "9c1e2ab3d4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9",
        4,
    ));
    let load = Load {
        client: harness::http_client(CONCURRENCY),
        sig: harness::sign(GITHUB_SECRET, &body),
        body,
        ids: Arc::new(AtomicU64::new(0)),
    };
    let (ceiling_url, ceiling_task) = start_ceiling().await?;

    // The bot, store on the disk of $TMPDIR (the figure), or on the PostgreSQL server.
    let disk_dir = harness::tempdir()?;
    let fsync_before = harness::fsync_probe(disk_dir.path(), if args.quick { 100 } else { 300 })?;
    let pg = args.postgres.as_deref();
    let store = BenchStore::new(pg, disk_dir).await?;
    let pg_settings = match &store {
        BenchStore::Postgres(db) => Some(db.settings().await?),
        BenchStore::Sqlite(_) => None,
    };
    let main = interleaved(&load, at, &ceiling_url, store).await?;
    let probe_base = harness::tempdir()?;
    let fsync_after = harness::fsync_probe(probe_base.path(), if args.quick { 100 } else { 300 })?;
    // The same on tmpfs (SQLite), and the disk's fsync latency: what limits the figure.
    let tmpfs = match harness::tmpfs_dir() {
        Some(d) if pg.is_none() => {
            Some(interleaved(&load, at, &ceiling_url, BenchStore::Sqlite(d)).await?)
        }
        _ => None,
    };
    ceiling_task.abort();

    let (measured, ceiling, acked, stored) = (&main.bot, &main.ceiling, main.acked, main.stored);
    let per_s = measured.per_s();
    let c_per_s = ceiling.per_s();
    let lat = &measured.latencies;
    let durable_note = if stored as u64 >= acked {
        format!("all {acked} acked deliveries found in the store ({stored} stored)")
    } else {
        format!("ONLY {stored} of {acked} acked deliveries found in the store")
    };
    let mut rows = vec![
        Row::target(
            "webhook_ack_per_s",
            "webhook acks/s (router + store, c=64)",
            per_s.round(),
            "req/s",
            Goal::AtLeast,
            TARGET_PER_S,
        )
        .note(format!(
            "{} acked in {:.1} s, {} errors {:?}; ack latency p50 {:.2} ms, p99 {:.2} ms",
            measured.accepted,
            measured.elapsed.as_secs_f64(),
            measured.errors,
            measured.statuses,
            ms(harness::percentile(lat, 50.0)),
            ms(harness::percentile(lat, 99.0)),
        )),
        Row::info(
            "webhook_ack_share_of_ceiling",
            "webhook acks vs bare HMAC handler",
            per_s.round(),
            "req/s",
        )
        .limit(c_per_s.round(), "bare axum + HMAC, same client")
        .ratio_target(Goal::AtLeast, TARGET_SHARE)
        .note(format!(
            "alternating 1 s windows, {}; ceiling p50 {:.2} ms, p99 {:.2} ms; {}",
            main.spread(),
            ms(harness::percentile(&ceiling.latencies, 50.0)),
            ms(harness::percentile(&ceiling.latencies, 99.0)),
            main.cpu_note()
        )),
    ];
    let mut durable = Row::target(
        "webhook_ack_durable",
        "acked deliveries found in the store",
        stored.min(acked as i64) as f64,
        "deliveries",
        Goal::Equal,
        acked as f64,
    );
    durable.note = durable_note;
    rows.push(durable);
    let mut fsync = fsync_before.clone();
    fsync.extend(&fsync_after);
    fsync.sort_by(f64::total_cmp);
    let f50 = harness::percentile(&fsync, 50.0);
    rows.push(
        Row::info("fsync_ms_p50", "fsync (4 KiB append + fdatasync) of the store's disk, p50", f50, "ms").note(format!(
            "p50 {:.2} ms before and {:.2} ms after the bot's window, p99 {:.2} ms; one commit per ack serialises on it: <= {:.0} acks/s unless commits are grouped",
            harness::percentile(&fsync_before, 50.0),
            harness::percentile(&fsync_after, 50.0),
            harness::percentile(&fsync, 99.0),
            1000.0 / f50.max(1e-6)
        )),
    );
    if let Some(t) = tmpfs {
        rows.push(
            Row::info(
                "webhook_ack_tmpfs_per_s",
                "webhook acks/s, store on tmpfs (diagnostic)",
                t.bot.per_s().round(),
                "req/s",
            )
            .limit(t.ceiling.per_s().round(), "bare axum + HMAC, alternating")
            .note(format!(
                "same bot, no fsync cost, {}; ack latency p50 {:.2} ms, p99 {:.2} ms; {}",
                t.spread(),
                ms(harness::percentile(&t.bot.latencies, 50.0)),
                ms(harness::percentile(&t.bot.latencies, 99.0)),
                t.cpu_note()
            )),
        );
    }
    if let Some(settings) = pg_settings {
        harness::mark_postgres(&mut rows, &settings);
    }
    Ok(rows)
}
