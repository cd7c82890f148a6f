//! The harness of the summary tests (`tests/github_summary.rs`,
//! `tests/github_summary_edges.rs`): the built-in simulator accepting [`TOKEN`], a config
//! with one summary rule (each file writes its own), and a GitHub client on it with fast
//! retries.

#![allow(dead_code)]

use std::time::Duration;

use runwarden::config::{Config, Rule, RuleKind, SummaryOptions, load_str};
use runwarden::currents::Run;
use runwarden::github::client::{GithubAuth, GithubClient, GithubClientOptions, RetryPolicy};
use runwarden::github::summary::{SummaryCtx, SummaryReport, post_summary};
use runwarden::secret::Secret;
use runwarden::simulator::{self, NewPr, SimConfig, SimHandle};

/// The GitHub token the simulator accepts and the client sends.
pub const TOKEN: &str = "gh-test-token";
/// The repository of the tests' PRs.
pub const REPO: &str = "acme/web";

pub struct Env {
    pub sim: SimHandle,
    pub config: Config,
    pub gh: GithubClient,
}

impl Env {
    /// A simulator, the config `config_text` writes for its GitHub URL (its first rule
    /// is the summary rule the tests use), and a client with a 3 s request timeout.
    pub async fn start(config_text: fn(&str) -> String) -> Env {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sim = simulator::spawn(
            listener,
            SimConfig {
                github_token: Some(TOKEN.into()),
                ..SimConfig::default()
            },
        )
        .await
        .unwrap();
        let config = load_str(&config_text(&sim.github_url()), "rules.toml", &[])
            .unwrap()
            .config;
        let gh = client(&sim.github_url(), Duration::from_secs(3));
        Env { sim, config, gh }
    }

    pub fn rule(&self) -> &Rule {
        &self.config.rules[0]
    }

    pub fn opts(&self) -> SummaryOptions {
        match &self.rule().kind {
            RuleKind::Summary(o) => o.clone(),
            _ => unreachable!(),
        }
    }

    /// An open PR `number` of [`REPO`] whose head is `branch` at `sha`.
    pub fn pr(&self, number: u64, branch: &str, sha: &str) {
        self.sim
            .add_pr(NewPr {
                repo: REPO.into(),
                number: Some(number),
                head_ref: Some(branch.into()),
                head_sha: Some(sha.into()),
                ..NewPr::default()
            })
            .unwrap();
    }

    pub async fn summary(
        &self,
        opts: &SummaryOptions,
        run: &Run,
        event: &str,
    ) -> Result<SummaryReport, runwarden::github::SummaryError> {
        self.summary_with(&self.gh, opts, run, event, None, false)
            .await
    }

    pub async fn summary_with(
        &self,
        gh: &GithubClient,
        opts: &SummaryOptions,
        run: &Run,
        event: &str,
        by: Option<(&str, &str)>,
        dry_run: bool,
    ) -> Result<SummaryReport, runwarden::github::SummaryError> {
        let ctx = SummaryCtx {
            gh,
            config: &self.config,
            rule: self.rule(),
            opts,
            shared: None,
        };
        post_summary(
            &ctx,
            run,
            event,
            by.map(|(a, b)| (a.to_string(), b.to_string())),
            dry_run,
        )
        .await
    }

    pub fn comments(&self, pr: u64) -> Vec<simulator::SimComment> {
        self.sim.comments(Some(REPO), Some(pr))
    }

    /// GitHub mutating requests: (method, path, status).
    pub fn writes(&self) -> Vec<(String, String, u16)> {
        self.sim
            .mutation_log()
            .into_iter()
            .filter(|e| e.api == "github")
            .map(|e| (e.method, e.path, e.status))
            .collect()
    }

    pub fn count_writes(&self, method: &str, path_part: &str) -> usize {
        self.writes()
            .iter()
            .filter(|(m, p, _)| m == method && p.contains(path_part))
            .count()
    }
}

pub fn client(api: &str, timeout: Duration) -> GithubClient {
    client_with_auth(api, timeout, GithubAuth::Token(Secret::new(TOKEN)))
}

pub fn client_with_auth(api: &str, timeout: Duration, auth: GithubAuth) -> GithubClient {
    let mut o = GithubClientOptions::new(url::Url::parse(api).unwrap());
    o.retry = RetryPolicy::fast();
    o.request_timeout = timeout;
    GithubClient::new(o, auth).unwrap()
}
