//! Shared plumbing: an in-process simulator (optionally timing every request it serves),
//! an in-process bot wired like `tests/common`, signed GitHub payloads, and child
//! processes (`runwarden simulate`, `serve`, `sweep`) with their memory read from /proc.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::extract::Request;
use axum::middleware::Next;
use hmac::{Hmac, Mac};
use runwarden::commands::serve::{Bot, build_context, start};
use runwarden::config::{Secrets, load_str};
use runwarden::secret::Secret;
use runwarden::simulator::{self, SimConfig, World};
use sha2::Sha256;

pub const API_KEY: &str = "sim-key";
pub const GITHUB_SECRET: &str = "bench-github-secret";
pub const CURRENTS_SECRET: &str = "bench-currents-secret";
pub const ADMIN_TOKEN: &str = "bench-admin-token";
pub const PROJECT: &str = "bAYZ4a";
pub const REPO: &str = "acme/web";

/// `sha256=<hex HMAC>` of `body` under `secret`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A GitHub `push` payload of the shape GitHub sends (abridged), `pad_commits` commits
/// long (about 0.6 KiB each), pushed now.
pub fn push_body(repo: &str, branch: &str, after: &str, pad_commits: usize) -> Vec<u8> {
    let now = chrono::Utc::now().to_rfc3339();
    let commits: Vec<serde_json::Value> = (0..pad_commits)
        .map(|i| {
            serde_json::json!({
                "id": format!("{:040x}", i + 1),
                "tree_id": format!("{:040x}", i + 1001),
                "distinct": true,
                "message": format!("Commit {i}: tighten the retry budget of the flaky spec runner"),
                "timestamp": now,
                "url": format!("https://github.com/{repo}/commit/{:040x}", i + 1),
                "author": {"name": "Ada Lovelace", "email": "ada@example.com", "username": "ada"},
                "committer": {"name": "GitHub", "email": "noreply@github.com", "username": "web-flow"},
                "added": [], "removed": [], "modified": ["src/runner/retry.ts", "tests/flaky.spec.ts"]
            })
        })
        .collect();
    let head = commits
        .last()
        .cloned()
        .unwrap_or(serde_json::json!({"timestamp": now}));
    let v = serde_json::json!({
        "ref": format!("refs/heads/{branch}"),
        "before": "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c",
        "after": after,
        "created": false, "deleted": false, "forced": false,
        "base_ref": null,
        "compare": format!("https://github.com/{repo}/compare/0f1e2d3c4b5a...{after}"),
        "commits": commits,
        "head_commit": head,
        "repository": {
            "id": 123456789, "name": repo.split('/').nth(1).unwrap_or("web"), "full_name": repo,
            "private": true, "owner": {"name": "acme", "login": "acme", "id": 4242, "type": "Organization"},
            "html_url": format!("https://github.com/{repo}"), "default_branch": "main"
        },
        "pusher": {"name": "ada", "email": "ada@example.com"},
        "sender": {"login": "ada", "id": 1, "type": "User"}
    });
    serde_json::to_vec(&v).expect("json")
}

// ---------------------------------------------------------------------------------------
// In-process simulator

/// One request the simulator served, timed by an outermost middleware.
#[derive(Debug, Clone)]
pub struct SimRequest {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub start: Instant,
    pub end: Instant,
}

/// A simulator served in-process on loopback.
pub struct InProcSim {
    pub world: Arc<World>,
    pub base_url: String,
    /// Every request served, when started with `timed`.
    pub requests: Arc<Mutex<Vec<SimRequest>>>,
    task: tokio::task::JoinHandle<()>,
}

impl InProcSim {
    /// Serves a fresh world (no ticker, no webhooks) on `127.0.0.1:0`.
    pub async fn start(timed: bool) -> anyhow::Result<InProcSim> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let world = World::new(SimConfig::default());
        let requests: Arc<Mutex<Vec<SimRequest>>> = Arc::default();
        let mut app = simulator::router(world.clone());
        if timed {
            let log = requests.clone();
            app = app.layer(axum::middleware::from_fn(
                move |req: Request, next: Next| {
                    let log = log.clone();
                    async move {
                        let start = Instant::now();
                        let method = req.method().to_string();
                        let path = req.uri().path().to_string();
                        let query = req.uri().query().map(str::to_string);
                        let resp = next.run(req).await;
                        let end = Instant::now();
                        log.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(SimRequest {
                                method,
                                path,
                                query,
                                start,
                                end,
                            });
                        resp
                    }
                },
            ));
        }
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(InProcSim {
            world,
            base_url: format!("http://{addr}"),
            requests,
            task,
        })
    }

    pub fn currents_url(&self) -> String {
        format!("{}/v1", self.base_url)
    }

    pub fn github_url(&self) -> String {
        format!("{}/github", self.base_url)
    }

    pub fn take_requests(&self) -> Vec<SimRequest> {
        std::mem::take(&mut *self.requests.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Drop for InProcSim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------------------
// Config and in-process bot

/// Settings of a bench config.
pub struct ConfigSpec<'a> {
    pub api_url: &'a str,
    pub github_url: &'a str,
    pub projects: &'a [&'a str],
    pub poll_interval: &'a str,
    pub max_requests_per_second: u32,
    pub store_path: &'a Path,
    pub listen: &'a str,
    /// `[[rules]]` tables.
    pub rules: &'a str,
}

impl ConfigSpec<'_> {
    /// The config, with the SQLite store at `store_path`.
    pub fn text(&self) -> String {
        self.text_with_store(&format!("sqlite://{}", self.store_path.display()))
    }

    /// The config with the store at `store_url` (`store_path` is ignored).
    pub fn text_with_store(&self, store_url: &str) -> String {
        let projects: Vec<String> = self.projects.iter().map(|p| format!("\"{p}\"")).collect();
        let repos: Vec<String> = self
            .projects
            .iter()
            .filter(|p| **p == PROJECT)
            .map(|p| format!("{p} = \"{REPO}\""))
            .collect();
        format!(
            "[currents]\napi_url = \"{api}\"\nprojects = [{projects}]\npoll_interval = \"{poll}\"\n\
             request_timeout = \"10s\"\nmax_requests_per_second = {rps}\n\n\
             [github]\napi_url = \"{gh}\"\nrepos = {{ {repos} }}\n\n\
             [server]\nlisten = \"{listen}\"\n\n\
             [store]\nurl = \"{store_url}\"\n\n{rules}",
            api = self.api_url,
            projects = projects.join(", "),
            poll = self.poll_interval,
            rps = self.max_requests_per_second,
            gh = self.github_url,
            repos = repos.join(", "),
            listen = self.listen,
            rules = self.rules,
        )
    }
}

/// The secrets of every bench bot.
pub fn secrets() -> Secrets {
    Secrets {
        currents_api_key: Some(Secret::new(API_KEY)),
        github_token: Some(Secret::new("gh-token")),
        currents_webhook_secrets: vec![Secret::new(CURRENTS_SECRET)],
        github_webhook_secrets: vec![Secret::new(GITHUB_SECRET)],
        admin_token: Some(Secret::new(ADMIN_TOKEN)),
        ..Secrets::default()
    }
}

/// A bot started in-process on `127.0.0.1:0`, with its store in a temp dir, or in a
/// fresh PostgreSQL database ([`InProcBot::start_on`]).
pub struct InProcBot {
    pub bot: Bot,
    /// The SQLite store's directory (empty when the store is PostgreSQL).
    pub dir: tempfile::TempDir,
    /// The PostgreSQL database, dropped by [`InProcBot::shutdown`].
    pub pg: Option<PgDatabase>,
}

/// Where an in-process bench bot keeps its store.
pub enum BenchStore {
    /// `runwarden.db` in this directory.
    Sqlite(tempfile::TempDir),
    /// A database created for this bot on the server of `--postgres`.
    Postgres(PgDatabase),
}

impl BenchStore {
    /// A SQLite file in `dir` when `postgres` is `None`, else a new database on that
    /// server.
    pub async fn new(postgres: Option<&str>, dir: tempfile::TempDir) -> anyhow::Result<Self> {
        Ok(match postgres {
            None => BenchStore::Sqlite(dir),
            Some(server) => BenchStore::Postgres(PgDatabase::create(server).await?),
        })
    }
}

/// A database created on a PostgreSQL server for one bench bot, dropped afterwards.
pub struct PgDatabase {
    /// The server URL given with `--postgres` (its database is used to create and drop).
    pub server: String,
    pub name: String,
    /// The server URL with this database.
    pub url: String,
}

impl PgDatabase {
    /// `CREATE DATABASE runwarden_bench_<uuid>` on `server`; the bot's migrations create
    /// its tables when it starts.
    pub async fn create(server: &str) -> anyhow::Result<PgDatabase> {
        use sqlx::Connection as _;
        let name = format!("runwarden_bench_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(server)
            .await
            .context("cannot connect to the --postgres server")?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .with_context(|| format!("cannot create database {name} (--postgres)"))?;
        let _ = conn.close().await;
        let mut url = url::Url::parse(server).context("--postgres: not a URL")?;
        url.set_path(&format!("/{name}"));
        Ok(PgDatabase {
            server: server.to_string(),
            name,
            url: url.to_string(),
        })
    }

    /// `DROP DATABASE ... WITH (FORCE)` (PostgreSQL 13+).
    pub async fn drop_database(&self) -> anyhow::Result<()> {
        use sqlx::Connection as _;
        let mut conn = sqlx::PgConnection::connect(&self.server).await?;
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&mut conn)
        .await
        .with_context(|| format!("cannot drop database {}", self.name))?;
        let _ = conn.close().await;
        Ok(())
    }

    /// The server's durability settings and version, for the report.
    pub async fn settings(&self) -> anyhow::Result<String> {
        use sqlx::Connection as _;
        let mut conn = sqlx::PgConnection::connect(&self.url).await?;
        let mut out = Vec::new();
        for name in [
            "server_version",
            "fsync",
            "synchronous_commit",
            "wal_sync_method",
            "commit_delay",
        ] {
            let v: String = sqlx::query_scalar(&format!("SHOW {name}"))
                .fetch_one(&mut conn)
                .await?;
            out.push(format!("{name}={v}"));
        }
        let _ = conn.close().await;
        Ok(out.join(" "))
    }
}

impl InProcBot {
    /// `rules`: `[[rules]]` tables; requests to the simulator are not rate-capped unless
    /// `max_rps` says so.
    pub async fn start(
        sim: &InProcSim,
        projects: &[&str],
        rules: &str,
        max_rps: u32,
    ) -> anyhow::Result<InProcBot> {
        Self::start_in(sim, projects, rules, max_rps, tempdir()?).await
    }

    /// [`InProcBot::start`] with the store in `dir`.
    pub async fn start_in(
        sim: &InProcSim,
        projects: &[&str],
        rules: &str,
        max_rps: u32,
        dir: tempfile::TempDir,
    ) -> anyhow::Result<InProcBot> {
        Self::start_on(sim, projects, rules, max_rps, BenchStore::Sqlite(dir)).await
    }

    /// [`InProcBot::start`] with the store `store`.
    pub async fn start_on(
        sim: &InProcSim,
        projects: &[&str],
        rules: &str,
        max_rps: u32,
        store: BenchStore,
    ) -> anyhow::Result<InProcBot> {
        let (dir, pg) = match store {
            BenchStore::Sqlite(dir) => (dir, None),
            BenchStore::Postgres(db) => (tempdir()?, Some(db)),
        };
        match Self::start_with(sim, projects, rules, max_rps, &dir, pg.as_ref()).await {
            Ok(bot) => Ok(InProcBot { bot, dir, pg }),
            Err(e) => {
                if let Some(db) = &pg {
                    let _ = db.drop_database().await;
                }
                Err(e)
            }
        }
    }

    async fn start_with(
        sim: &InProcSim,
        projects: &[&str],
        rules: &str,
        max_rps: u32,
        dir: &tempfile::TempDir,
        pg: Option<&PgDatabase>,
    ) -> anyhow::Result<Bot> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let currents = sim.currents_url();
        let github = sim.github_url();
        let text = ConfigSpec {
            api_url: &currents,
            github_url: &github,
            projects,
            poll_interval: "0s",
            max_requests_per_second: max_rps,
            store_path: &dir.path().join("runwarden.db"),
            listen: "127.0.0.1:0",
            rules,
        };
        let text = match pg {
            None => text.text(),
            Some(db) => text.text_with_store(&db.url),
        };
        let loaded = load_str(&text, "bench.toml", &[])
            .map_err(|e| anyhow::anyhow!("bench config: {e}\n{text}"))?;
        let ctx = build_context(loaded.config, secrets()).await?;
        start(ctx, listener).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.bot.url(), path)
    }

    /// Waits until no event is unprocessed and no action is queued (or `timeout`).
    pub async fn settle(&self, timeout: Duration) -> anyhow::Result<()> {
        let store = &self.bot.ctx.store;
        let deadline = Instant::now() + timeout;
        loop {
            // A busy store (pool timeouts) is a slow bot, not a failed benchmark: retry.
            let state = match (store.count_unprocessed().await, store.queue_depth().await) {
                (Ok(0), Ok(0)) => return Ok(()),
                (Ok(p), Ok(q)) => format!("{p} event(s), {q} action(s) left"),
                (Err(e), _) | (_, Err(e)) => format!("store: {e}"),
            };
            if Instant::now() > deadline {
                anyhow::bail!("bot did not settle in {timeout:?}: {state}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops the bot; drops its PostgreSQL database, if any.
    pub async fn shutdown(self) {
        self.bot.shutdown().await;
        if let Some(db) = &self.pg
            && let Err(e) = db.drop_database().await
        {
            eprintln!("   warning: {e:#}");
        }
    }
}

/// Marks the rows of a figure measured with `--postgres`: `_pg` appended to their names,
/// "(PostgreSQL)" to their labels, the server's `settings` to the first row's note.
pub fn mark_postgres(rows: &mut [crate::report::Row], settings: &str) {
    for r in rows.iter_mut() {
        r.name.push_str("_pg");
        r.label.push_str(" (PostgreSQL)");
    }
    if let Some(first) = rows.first_mut() {
        first.note = if first.note.is_empty() {
            format!("store: PostgreSQL, {settings}")
        } else {
            format!("{}; store: PostgreSQL, {settings}", first.note)
        };
    }
}

/// A temp dir under `$TMPDIR` (default `/tmp`). Where it lives matters: the store's
/// `synchronous=FULL` commits cost an fsync on a real disk and almost nothing on tmpfs;
/// BENCHMARKS.md records which it was.
pub fn tempdir() -> anyhow::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("runwarden-bench-")
        .tempdir()
        .context("cannot create a temp dir")
}

/// A temp dir on tmpfs (`/dev/shm`), where an fsync costs next to nothing: the same
/// figure with and without the disk's fsync cost tells what limits it.
pub fn tmpfs_dir() -> Option<tempfile::TempDir> {
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() {
        return None;
    }
    tempfile::Builder::new()
        .prefix("runwarden-bench-")
        .tempdir_in(shm)
        .ok()
}

/// Latencies (ms, sorted) of `n` 4 KiB appends, each followed by `fdatasync`, in `dir`:
/// what one durable commit costs at least on that filesystem.
pub fn fsync_probe(dir: &Path, n: usize) -> anyhow::Result<Vec<f64>> {
    use std::io::Write as _;
    let path = dir.join("fsync-probe");
    let mut f = std::fs::File::create(&path)?;
    let block = vec![0x5au8; 4096];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f.write_all(&block)?;
        f.sync_data()?;
        out.push(t.elapsed().as_secs_f64() * 1e3);
    }
    drop(f);
    let _ = std::fs::remove_file(&path);
    out.sort_by(f64::total_cmp);
    Ok(out)
}

/// An HTTP client for loopback benchmarks.
pub fn http_client(pool: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(pool)
        .timeout(Duration::from_secs(30))
        .no_proxy()
        .build()
        .expect("reqwest client")
}

// ---------------------------------------------------------------------------------------
// Child processes

/// A loopback port that was free a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// A child process, killed (by its pid) when dropped.
pub struct ChildProc {
    pub child: Child,
}

impl ChildProc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM (graceful), then SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`), in KiB.
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// `runwarden simulate` on a free loopback port, its output in `log`.
pub struct SimChild {
    pub proc: ChildProc,
    pub base_url: String,
}

impl SimChild {
    pub async fn start(bin: &Path, log: &Path) -> anyhow::Result<SimChild> {
        let port = free_port()?;
        let listen = format!("127.0.0.1:{port}");
        let out = std::fs::File::create(log)?;
        let child = Command::new(bin)
            .args([
                "--config",
                "/nonexistent/runwarden-bench.toml",
                "simulate",
                "--listen",
                &listen,
            ])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("cannot start {} simulate", bin.display()))?;
        let proc = ChildProc { child };
        let base_url = format!("http://{listen}");
        wait_http_ok(&format!("{base_url}/healthz"), Duration::from_secs(20)).await?;
        Ok(SimChild { proc, base_url })
    }

    /// Stops the simulator (SIGTERM, then SIGKILL).
    pub fn stop(mut self) {
        self.proc.stop(Duration::from_secs(5));
    }

    /// `POST /_sim/generate`.
    pub async fn generate(&self, spec: &serde_json::Value) -> anyhow::Result<serde_json::Value> {
        let resp = http_client(1)
            .post(format!("{}/_sim/generate", self.base_url))
            .timeout(Duration::from_secs(300))
            .json(spec)
            .send()
            .await?;
        let status = resp.status();
        let v: serde_json::Value = resp.json().await?;
        if !status.is_success() {
            anyhow::bail!("generate: {status} {v}");
        }
        Ok(v)
    }

    /// `GET /_sim/stats` request counts, by `"<api> <METHOD>"`.
    pub async fn request_counts(&self) -> anyhow::Result<std::collections::BTreeMap<String, u64>> {
        let v: serde_json::Value = http_client(1)
            .get(format!("{}/_sim/stats", self.base_url))
            .send()
            .await?
            .json()
            .await?;
        Ok(serde_json::from_value(v["requests"].clone()).unwrap_or_default())
    }
}

/// Polls `url` until it answers 200 (every 2 ms), or fails after `timeout`.
pub async fn wait_http_ok(url: &str, timeout: Duration) -> anyhow::Result<Duration> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .no_proxy()
        .build()?;
    let start = Instant::now();
    loop {
        if let Ok(r) = client.get(url).send().await
            && r.status().is_success()
        {
            return Ok(start.elapsed());
        }
        if start.elapsed() > timeout {
            anyhow::bail!("{url} did not answer 200 within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Runs `cmd` to completion, sampling `/proc/<pid>/status` every 5 ms; returns the exit
/// status, the wall time from spawn to exit and the last `VmHWM` seen (peak RSS, KiB).
pub fn run_sampled(
    mut cmd: Command,
    timeout: Duration,
) -> anyhow::Result<(std::process::ExitStatus, Duration, u64)> {
    let start = Instant::now();
    let mut child = cmd.spawn().context("cannot spawn the child")?;
    let pid = child.id();
    let mut hwm = 0;
    loop {
        if let Some(v) = proc_status_kib(pid, "VmHWM") {
            hwm = hwm.max(v);
        }
        if let Some(status) = child.try_wait()? {
            return Ok((status, start.elapsed(), hwm));
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("child did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Percentile (nearest rank) of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Binds `127.0.0.1:0` for an in-process server.
pub async fn loopback_listener() -> anyhow::Result<(tokio::net::TcpListener, SocketAddr)> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let a = l.local_addr()?;
    Ok((l, a))
}

/// `runwarden --config CONFIG serve` with the bench's secrets and nothing else from the
/// environment, `RUST_LOG=rust_log`, stdout and stderr to `log`.
pub fn serve_command(
    bin: &std::path::Path,
    config: &std::path::Path,
    log: std::fs::File,
    rust_log: &str,
) -> std::io::Result<std::process::Command> {
    let mut cmd = std::process::Command::new(bin);
    cmd.arg("--config")
        .arg(config)
        .arg("serve")
        .env_clear()
        .env("CURRENTS_API_KEY", API_KEY)
        .env("GITHUB_TOKEN", "gh-token")
        .env("RUNWARDEN_GITHUB_WEBHOOK_SECRET", GITHUB_SECRET)
        .env("RUNWARDEN_CURRENTS_WEBHOOK_SECRET", CURRENTS_SECRET)
        .env("RUNWARDEN_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("RUST_LOG", rust_log)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    Ok(cmd)
}
