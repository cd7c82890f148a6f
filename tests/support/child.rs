//! `runwarden serve` as a child process (the real binary, a config file in a temp dir,
//! secrets in its environment) against an in-process simulator, for the tests that kill
//! it, stop it, starve it or read what it logs: `tests/crash.rs`,
//! `tests/store_faults.rs`, `tests/secrets.rs`.
//!
//! Everything is synchronised on observable state with deadlines: the child's log line
//! "runwarden is serving", the store (through a [`Store`] handle on the same file), the
//! simulator's request log.
//!
//! The store is a SQLite file in the world's temp dir, or, with
//! `RUNWARDEN_TEST_STORE=postgres`, a fresh PostgreSQL database ([`postgres::selected`])
//! for [`World::new`]; [`World::sqlite`] always uses SQLite (tests of SQLite's own
//! failure modes).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use runwarden::simulator::{self, SimConfig, SimHandle};
use runwarden::store::Store;

/// A fresh PostgreSQL database per world when `RUNWARDEN_TEST_STORE=postgres`.
#[path = "postgres.rs"]
pub mod postgres;

pub const PROJECT: &str = "bAYZ4a";
pub const REPO: &str = "acme/web";
pub const BIN: &str = env!("CARGO_BIN_EXE_runwarden");

/// The secrets a child bot gets from its environment.
#[derive(Clone, Debug)]
pub struct Env {
    pub currents_api_key: String,
    pub currents_webhook_secret: String,
    pub github_webhook_secret: String,
    pub admin_token: String,
    pub github_token: String,
    pub rust_log: String,
}

impl Default for Env {
    fn default() -> Self {
        Env {
            currents_api_key: "sim-key".into(),
            currents_webhook_secret: "child-currents-secret".into(),
            github_webhook_secret: "child-github-secret".into(),
            admin_token: "child-admin-token".into(),
            github_token: "child-gh-token".into(),
            rust_log: "info".into(),
        }
    }
}

impl Env {
    pub fn vars(&self) -> Vec<(&'static str, String)> {
        vec![
            ("CURRENTS_API_KEY", self.currents_api_key.clone()),
            (
                "RUNWARDEN_CURRENTS_WEBHOOK_SECRET",
                self.currents_webhook_secret.clone(),
            ),
            (
                "RUNWARDEN_GITHUB_WEBHOOK_SECRET",
                self.github_webhook_secret.clone(),
            ),
            ("RUNWARDEN_ADMIN_TOKEN", self.admin_token.clone()),
            ("GITHUB_TOKEN", self.github_token.clone()),
            ("RUST_LOG", self.rust_log.clone()),
            ("NO_COLOR", "1".into()),
        ]
    }
}

/// A simulator plus the files of a bot: config and store in a temp dir.
pub struct World {
    pub sim: SimHandle,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    /// The SQLite file (unused when the store is PostgreSQL).
    pub db: PathBuf,
    /// The store URL: `sqlite://{db}`, or a PostgreSQL database.
    pub store: String,
    pub env: Env,
    pub http: reqwest::Client,
}

impl World {
    /// A simulator with the test project, and a config with `rules` for a bot against it;
    /// the store is SQLite, or PostgreSQL with `RUNWARDEN_TEST_STORE=postgres`.
    pub async fn new(rules: &str, env: Env) -> World {
        let pg = postgres::selected_database().await;
        Self::with_store(rules, env, pg).await
    }

    /// [`World::new`] with a SQLite store whatever `RUNWARDEN_TEST_STORE` says.
    pub async fn sqlite(rules: &str, env: Env) -> World {
        Self::with_store(rules, env, None).await
    }

    /// `store`: a store URL, or `None` for a SQLite file in the world's temp dir.
    async fn with_store(rules: &str, env: Env, store: Option<String>) -> World {
        let sim_cfg = SimConfig {
            api_key: env.currents_api_key.clone(),
            ..SimConfig::default()
        };
        let sim = simulator::spawn(
            tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
            sim_cfg,
        )
        .await
        .unwrap();
        sim.add_project(simulator::NewProject {
            project_id: Some(PROJECT.into()),
            repo: Some(REPO.into()),
            ..Default::default()
        })
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("runwarden.db");
        let config = dir.path().join("rules.toml");
        let store = store.unwrap_or_else(|| format!("sqlite://{}", db.display()));
        let w = World {
            sim,
            dir,
            config,
            db,
            store,
            env,
            http: reqwest::Client::new(),
        };
        w.write_config(rules, &w.sim.currents_url());
        w
    }

    /// (Re)writes the config file, with the Currents API at `api_url`.
    pub fn write_config(&self, rules: &str, api_url: &str) {
        self.write_config_with(rules, api_url, &self.store_url());
    }

    /// (Re)writes the config file, with the Currents API at `api_url` and the store at
    /// `store_url`.
    pub fn write_config_with(&self, rules: &str, api_url: &str, store_url: &str) {
        let text = format!(
            "[currents]\napi_url = \"{api_url}\"\nprojects = [\"{PROJECT}\"]\npoll_interval = \"0s\"\nrequest_timeout = \"2s\"\nmax_requests_per_second = 0\n\n[github]\napi_url = \"{gh}\"\nrepos = {{ {PROJECT} = \"{REPO}\" }}\n\n[server]\nlisten = \"127.0.0.1:0\"\n\n[store]\nurl = \"{url}\"\n\n{rules}",
            gh = self.sim.github_url(),
            url = store_url,
        );
        std::fs::write(&self.config, text).unwrap();
    }

    pub fn store_url(&self) -> String {
        self.store.clone()
    }

    /// Whether the store is PostgreSQL (shared by replicas: a restarted process keeps the
    /// leases it finds, they may be a live replica's).
    pub fn is_postgres(&self) -> bool {
        !self.store.starts_with("sqlite:")
    }

    /// (Re)writes the config like [`World::write_config`], with `lines` (e.g.
    /// `action_lease = "5s"`) added to its `[store]` table.
    pub fn write_config_with_store_lines(&self, rules: &str, lines: &str) {
        // `rules` follows the `[store]` table's `url`: keys before its first table header
        // belong to `[store]`.
        self.write_config(&format!("{lines}\n\n{rules}"), &self.sim.currents_url());
    }

    /// A handle on the bot's store (open it once the bot has created it).
    pub async fn store(&self) -> Store {
        Store::connect(&self.store_url()).await.unwrap()
    }

    /// A `runwarden` command with this world's config and environment (nothing else).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--config").arg(&self.config).args(args);
        c.env_clear();
        if let Some(path) = std::env::var_os("PATH") {
            c.env("PATH", path);
        }
        // The harness reads the child's log lines as text (a pipe would mean JSON).
        c.env("RUNWARDEN_LOG_FORMAT", "text");
        for (k, v) in self.env.vars() {
            c.env(k, v);
        }
        c.stdin(Stdio::null());
        c
    }

    /// Starts `runwarden serve` and waits until it listens.
    pub async fn serve(&self) -> ChildBot {
        ChildBot::spawn(self.command(&["serve"])).await
    }

    /// Runs a one-shot command to completion (at most 120 s): status, stdout, stderr.
    pub async fn run(&self, args: &[&str]) -> (ExitStatus, String, String) {
        let mut c = self.command(args);
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        let mut out = child.stdout.take().unwrap();
        let mut err = child.stderr.take().unwrap();
        let t_out = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        let t_err = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        let status = wait_exit(&mut child, Duration::from_secs(120)).await;
        (status, t_out.join().unwrap(), t_err.join().unwrap())
    }

    /// Mutating requests the simulator received for `path`.
    pub fn entries(&self, path: &str) -> Vec<runwarden::simulator::LogEntry> {
        self.sim
            .mutation_log()
            .into_iter()
            .filter(|e| e.path == path)
            .collect()
    }
}

/// Waits for `child` to exit; kills it and panics after `limit`.
pub async fn wait_exit(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if tokio::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the child did not exit within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A running `runwarden serve`. Dropping it kills the process.
pub struct ChildBot {
    pub child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Every line the process wrote (stderr and stdout), as it comes.
    pub logs: Arc<Mutex<Vec<String>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

fn collect<R: Read + Send + 'static>(
    r: R,
    logs: Arc<Mutex<Vec<String>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            match line {
                Ok(l) => logs.lock().unwrap().push(l),
                Err(_) => break,
            }
        }
    })
}

impl ChildBot {
    /// Spawns `cmd` (a `serve`) and waits (at most 60 s) for "runwarden is serving".
    pub async fn spawn(mut cmd: Command) -> ChildBot {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("cannot start runwarden");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let readers = vec![
            collect(child.stderr.take().unwrap(), logs.clone()),
            collect(child.stdout.take().unwrap(), logs.clone()),
        ];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let url = loop {
            let found =
                logs.lock()
                    .unwrap()
                    .iter()
                    .find(|l| l.contains("runwarden is serving"))
                    .and_then(|l| {
                        // Text (`... listen=ADDR`) or JSON (`"fields":{"listen":"ADDR",...}`) logs.
                        match serde_json::from_str::<serde_json::Value>(l) {
                            Ok(v) => v["fields"]["listen"].as_str().map(str::to_string),
                            Err(_) => l.split("listen=").nth(1).map(|rest| {
                                rest.split_whitespace().next().unwrap_or("").to_string()
                            }),
                        }
                    });
            if let Some(addr) = found {
                break format!("http://{addr}");
            }
            if let Some(s) = child.try_wait().unwrap() {
                panic!(
                    "runwarden serve exited with {s} before serving: {:#?}",
                    logs.lock().unwrap()
                );
            }
            if tokio::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("runwarden serve did not start: {:#?}", logs.lock().unwrap());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        ChildBot {
            child,
            url,
            logs,
            readers,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.url, path)
    }

    /// SIGKILL, and wait for the process to be gone.
    pub async fn kill(mut self) -> Vec<String> {
        self.child.kill().unwrap();
        wait_exit(&mut self.child, Duration::from_secs(30)).await;
        self.finish()
    }

    /// SIGTERM; waits (at most `limit`) for the exit; returns its status and the logs.
    pub async fn terminate(mut self, limit: Duration) -> (ExitStatus, Vec<String>) {
        // SAFETY: kill(2) on the pid of our own child, which has not been reaped yet.
        let rc = unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        assert_eq!(rc, 0, "kill(SIGTERM)");
        let status = wait_exit(&mut self.child, limit).await;
        (status, self.finish())
    }

    fn finish(&mut self) -> Vec<String> {
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        self.logs.lock().unwrap().clone()
    }

    pub fn log_text(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }
}

impl Drop for ChildBot {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A Currents webhook body for `run_id`.
pub fn currents_body(event: &str, run_id: &str) -> serde_json::Value {
    serde_json::json!({
        "event": event,
        "runUrl": format!("https://app.currents.dev/run/{run_id}"),
        "buildId": "b",
        "tags": [],
    })
}

/// Posts a Currents webhook to a child bot.
pub async fn currents_hook(
    w: &World,
    bot: &ChildBot,
    event: &str,
    run_id: &str,
) -> reqwest::Response {
    w.http
        .post(bot.url("/webhooks/currents"))
        .header("x-webhook-secret", &w.env.currents_webhook_secret)
        .header(
            "x-timestamp",
            chrono::Utc::now().timestamp_millis().to_string(),
        )
        .json(&currents_body(event, run_id))
        .send()
        .await
        .unwrap()
}

/// A run of the test project.
pub fn run(branch: &str, sha: &str, minutes_ago: i64) -> simulator::NewRun {
    simulator::NewRun {
        project: Some(PROJECT.into()),
        branch: Some(branch.into()),
        sha: Some(sha.into()),
        created_at: Some(chrono::Utc::now() - chrono::Duration::minutes(minutes_ago)),
        emit: Some(false),
        ..Default::default()
    }
}

/// Polls `f` every 20 ms until it returns `Some`, or panics after `secs` with `what`.
pub async fn eventually<T, F, Fut>(what: &str, secs: u64, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {secs} s waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn path_str(p: &Path) -> String {
    p.display().to_string()
}
