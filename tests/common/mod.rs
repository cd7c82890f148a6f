//! The end-to-end harness: a simulator and a real bot (router, store, processor,
//! executor) in-process, on loopback ports, with a temp SQLite store, or a fresh
//! PostgreSQL database when `RUNWARDEN_TEST_STORE=postgres` (see `postgres::selected`).

#![allow(dead_code)]

use std::time::Duration;

use hmac::{Hmac, Mac};
use runwarden::commands::serve::{Bot, build_context, start};
use runwarden::config::{Secrets, load_str};
use runwarden::secret::Secret;
use runwarden::simulator::{self, SimConfig, SimHandle};
use sha2::Sha256;

/// A fresh PostgreSQL database per test (`AppOptions::store_url`, `RUNWARDEN_TEST_STORE`).
#[path = "../support/postgres.rs"]
pub mod postgres;

pub const CURRENTS_SECRET: &str = "currents-hook-secret";
pub const GITHUB_SECRET: &str = "github-hook-secret";
pub const ADMIN_TOKEN: &str = "admin-token";
pub const PROJECT: &str = "bAYZ4a";
pub const REPO: &str = "acme/web";

pub struct TestApp {
    pub sim: SimHandle,
    pub bot: Bot,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
    /// The bot's store URL (a SQLite file in `dir`, or a PostgreSQL database).
    pub store_url: String,
}

/// Options of [`spawn_app_with`].
pub struct AppOptions {
    /// `[[rules]]` tables appended to the base config.
    pub rules: String,
    /// Extra top-level keys (e.g. `dry_run = true`), placed before the tables.
    pub top: String,
    pub poll_interval: &'static str,
    pub github_secret: bool,
    pub currents_secret: bool,
    /// Post simulator webhooks to the bot.
    pub sim_webhooks: bool,
    /// The SQLite store's directory (its `runwarden.db` is kept). Setting it, or
    /// `store_query`, asks for SQLite even when `RUNWARDEN_TEST_STORE=postgres`.
    pub store_dir: Option<tempfile::TempDir>,
    /// `currents.request_timeout`.
    pub request_timeout: &'static str,
    /// The executor's retry schedule (production's when `None`).
    pub executor: Option<runwarden::actions::ExecutorOptions>,
    /// Attempts and first backoff of the Currents client's own retries (production's
    /// when `None`).
    pub client_retries: Option<(u32, Duration)>,
    /// Query appended to the store URL, e.g. `?mode=ro`.
    pub store_query: &'static str,
    /// More Currents projects besides [`PROJECT`], each mapped to [`REPO`] too.
    pub more_projects: &'static [&'static str],
    /// The whole store URL, instead of a SQLite file in `store_dir` (e.g.
    /// `postgres::fresh_database().await`). When `None`: a fresh PostgreSQL database if
    /// `RUNWARDEN_TEST_STORE=postgres`, else SQLite.
    pub store_url: Option<String>,
}

impl Default for AppOptions {
    fn default() -> Self {
        Self {
            rules: String::new(),
            top: String::new(),
            poll_interval: "0s",
            github_secret: true,
            currents_secret: true,
            sim_webhooks: false,
            store_dir: None,
            request_timeout: "5s",
            executor: None,
            client_retries: None,
            store_query: "",
            store_url: None,
            more_projects: &[],
        }
    }
}

/// Polls `f` every 20 ms until it holds, or panics after `secs`.
pub async fn eventually<F, Fut>(what: &str, secs: u64, f: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

pub async fn spawn_app(rules: &str) -> TestApp {
    spawn_app_with(AppOptions {
        rules: rules.to_string(),
        ..AppOptions::default()
    })
    .await
}

pub async fn spawn_app_with(o: AppOptions) -> TestApp {
    prepare_app(o).await.start().await
}

/// A bot's context, not started: its simulator, its store, and the listener `start`
/// would serve on (for tests that drive the processor or executor by hand).
pub struct PreparedApp {
    pub sim: SimHandle,
    pub ctx: std::sync::Arc<runwarden::server::AppContext>,
    pub listener: tokio::net::TcpListener,
    pub dir: tempfile::TempDir,
    pub store_url: String,
}

impl PreparedApp {
    /// Starts the bot (what [`spawn_app_with`] does once the app is prepared).
    pub async fn start(self) -> TestApp {
        let bot = start(self.ctx, self.listener).await.unwrap();
        TestApp {
            sim: self.sim,
            bot,
            http: reqwest::Client::new(),
            dir: self.dir,
            store_url: self.store_url,
        }
    }
}

/// What [`spawn_app_with`] builds before it starts the bot.
pub async fn prepare_app(o: AppOptions) -> PreparedApp {
    let bot_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bot_addr = bot_listener.local_addr().unwrap();
    let mut sim_cfg = SimConfig::default();
    if o.sim_webhooks {
        sim_cfg.webhook_url = Some(format!("http://{bot_addr}/webhooks/currents"));
        sim_cfg.webhook_headers = vec![("x-webhook-secret".into(), CURRENTS_SECRET.into())];
    }
    let sim = simulator::spawn(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        sim_cfg,
    )
    .await
    .unwrap();
    for project in std::iter::once(PROJECT).chain(o.more_projects.iter().copied()) {
        sim.add_project(simulator::NewProject {
            project_id: Some(project.into()),
            repo: Some(REPO.into()),
            ..Default::default()
        })
        .unwrap();
    }
    let projects = std::iter::once(PROJECT)
        .chain(o.more_projects.iter().copied())
        .map(|p| format!("\"{p}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let repos = std::iter::once(PROJECT)
        .chain(o.more_projects.iter().copied())
        .map(|p| format!("{p} = \"{REPO}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let sqlite_asked = o.store_dir.is_some() || !o.store_query.is_empty();
    let store_url = match o.store_url {
        Some(url) => Some(url),
        None if !sqlite_asked => postgres::selected_database().await,
        None => None,
    };
    let dir = o.store_dir.unwrap_or_else(|| tempfile::tempdir().unwrap());
    let store_url = store_url.unwrap_or_else(|| {
        format!(
            "sqlite://{}{}",
            dir.path().join("runwarden.db").display(),
            o.store_query
        )
    });
    let text = format!(
        "{top}\n[currents]\napi_url = \"{api}\"\nprojects = [{projects}]\npoll_interval = \"{poll}\"\nrequest_timeout = \"{timeout}\"\nmax_requests_per_second = 0\n\n[github]\napi_url = \"{gh}\"\nrepos = {{ {repos} }}\n\n[store]\nurl = \"{store_url}\"\n\n{rules}",
        top = o.top,
        api = sim.currents_url(),
        poll = o.poll_interval,
        gh = sim.github_url(),
        rules = o.rules,
        timeout = o.request_timeout,
    );
    let loaded = load_str(&text, "rules.toml", &[]).unwrap_or_else(|e| panic!("test config: {e}"));
    let secrets = Secrets {
        currents_api_key: Some(Secret::new("sim-key")),
        github_token: Some(Secret::new("gh-token")),
        currents_webhook_secrets: if o.currents_secret {
            vec![Secret::new(CURRENTS_SECRET)]
        } else {
            vec![]
        },
        github_webhook_secrets: if o.github_secret {
            vec![Secret::new("old-secret"), Secret::new(GITHUB_SECRET)]
        } else {
            vec![]
        },
        admin_token: Some(Secret::new(ADMIN_TOKEN)),
        ..Secrets::default()
    };
    let mut ctx = build_context(loaded.config, secrets).await.unwrap();
    if o.executor.is_some() || o.client_retries.is_some() {
        let mut c = std::sync::Arc::try_unwrap(ctx)
            .ok()
            .expect("a fresh context has one owner");
        if let Some(e) = o.executor {
            c.executor = e;
        }
        if let Some((attempts, base)) = o.client_retries {
            c.currents = runwarden::currents::CurrentsClient::new(
                runwarden::currents::client::ClientOptions {
                    base_url: c.config.currents.api_url.clone(),
                    api_key: Secret::new("sim-key"),
                    request_timeout: c.config.currents.request_timeout,
                    max_requests_per_second: 0,
                    max_attempts: attempts,
                    backoff_base: base,
                    backoff_max: base * 8,
                    ..Default::default()
                },
            )
            .unwrap();
        }
        ctx = std::sync::Arc::new(c);
    }
    PreparedApp {
        sim,
        ctx,
        listener: bot_listener,
        dir,
        store_url,
    }
}

pub fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(GITHUB_SECRET.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.bot.url(), path)
    }

    pub async fn github_hook(
        &self,
        event: &str,
        delivery: &str,
        body: &serde_json::Value,
    ) -> reqwest::Response {
        let raw = serde_json::to_vec(body).unwrap();
        self.http
            .post(self.url("/webhooks/github"))
            .header("content-type", "application/json")
            .header("x-github-event", event)
            .header("x-github-delivery", delivery)
            .header("x-hub-signature-256", sign(&raw))
            .body(raw)
            .send()
            .await
            .unwrap()
    }

    /// The body of `GET path` (the status page, `/metrics`).
    /// `POST /api/sweep/{rule}` with the admin token.
    pub async fn admin_sweep(&self, rule: &str) -> reqwest::Response {
        self.http
            .post(self.url(&format!("/api/sweep/{rule}")))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
    }

    /// An open PR `number` of [`REPO`] whose head is `branch` at `sha`.
    pub fn open_pr(&self, branch: &str, sha: &str, number: u64) {
        self.sim
            .add_pr(runwarden::simulator::NewPr {
                repo: REPO.into(),
                number: Some(number),
                head_ref: Some(branch.into()),
                head_sha: Some(sha.into()),
                ..Default::default()
            })
            .unwrap();
    }

    /// GET requests the simulator's Currents API has served so far (two per poll with a
    /// summary rule: the runs in progress, the recent runs).
    pub fn currents_gets(&self) -> u64 {
        self.sim
            .request_counts()
            .get("currents GET")
            .copied()
            .unwrap_or(0)
    }

    /// A failed run of `branch` at `sha` (5 minutes old) and PR `pr` of [`REPO`] with
    /// that head; the run's id.
    pub fn failed_run_with_pr(&self, branch: &str, sha: &str, pr: u64) -> String {
        let mut r = run(branch, sha, 5);
        r.state = Some("failed".into());
        let id = self.sim.add_run(r).unwrap().run_id;
        self.sim
            .add_pr(runwarden::simulator::NewPr {
                repo: REPO.into(),
                number: Some(pr),
                head_ref: Some(branch.into()),
                head_sha: Some(sha.into()),
                ..Default::default()
            })
            .unwrap();
        id
    }

    pub async fn get_text(&self, path: &str) -> String {
        self.http
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn currents_hook(&self, event: &str, run_id: &str) -> reqwest::Response {
        let body = serde_json::json!({
            "event": event,
            "runUrl": format!("https://app.currents.dev/run/{run_id}"),
            "buildId": "b",
            "tags": [],
            "overall": 1, "passes": 1, "failures": 0, "pending": 0, "skipped": 0, "retries": 0, "flaky": 0
        });
        self.http
            .post(self.url("/webhooks/currents"))
            .header("x-webhook-secret", CURRENTS_SECRET)
            .header(
                "x-timestamp",
                chrono::Utc::now().timestamp_millis().to_string(),
            )
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// Mutating requests the simulator received, as "METHOD PATH".
    pub fn mutations(&self) -> Vec<String> {
        self.sim
            .mutation_log()
            .into_iter()
            .map(|e| format!("{} {}", e.method, e.path))
            .collect()
    }

    /// Waits until `f` holds, or panics after `secs`.
    pub async fn wait_for<F: Fn(&TestApp) -> bool>(&self, what: &str, secs: u64, f: F) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        while !f(self) {
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}; mutations: {:?}",
                    self.mutations()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the store holds run `id` (a webhook's or a poll's record of it is
    /// committed with the rest of that event's processing), or panics after 10 s.
    pub async fn wait_run_stored(&self, id: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.bot.ctx.store.get_run(id).await.unwrap().is_none() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "run {id} was never stored"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the store's audit log satisfies `f`.
    pub async fn wait_audit<F: Fn(&[runwarden::store::AuditEntry]) -> bool>(
        &self,
        what: &str,
        secs: u64,
        f: F,
    ) -> Vec<runwarden::store::AuditEntry> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let a = self.bot.ctx.store.audit(None, None, 1000).await.unwrap();
            if f(&a) {
                return a;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("timed out waiting for {what}; audit: {a:#?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

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

/// [`run`], already ended in `state` (`passed`, `failed`, `canceled`, `timeout`).
pub fn ended(branch: &str, sha: &str, minutes_ago: i64, state: &str) -> simulator::NewRun {
    simulator::NewRun {
        state: Some(state.into()),
        ..run(branch, sha, minutes_ago)
    }
}
