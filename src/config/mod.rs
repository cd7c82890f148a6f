//! Configuration: `rules.toml` (SPEC §2–§4).
//!
//! Loading happens in two passes. [`raw`] holds the serde shapes with
//! `deny_unknown_fields` everywhere; [`load`] parses the file (errors located as
//! `PATH:LINE:COL`), merges `RUNWARDEN__SECTION__KEY` environment overrides through the
//! `config` crate, then compiles the result into the typed [`Config`] below: durations,
//! globs, regexes and cron strings are all checked at load time, so nothing downstream
//! has to handle an invalid value.

pub mod filter;
pub mod load;
pub mod raw;
pub mod schedule;

use std::collections::BTreeMap;
use std::time::Duration;

pub use filter::{Filter, TagMode};
pub use load::{ConfigError, Loaded, Warning, load_file, load_str, overrides_from};

use crate::secret::Secret;

/// The whole, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `true`: record decisions, mutate nothing.
    pub dry_run: bool,
    pub currents: CurrentsConfig,
    pub github: GithubConfig,
    pub server: ServerConfig,
    pub store: StoreConfig,
    pub rules: Vec<Rule>,
}

/// `[currents]`.
#[derive(Debug, Clone)]
pub struct CurrentsConfig {
    pub api_url: url::Url,
    pub projects: Vec<String>,
    /// `0s` turns polling off.
    pub poll_interval: Duration,
    pub dashboard_url: String,
    pub webhook_header: String,
    pub webhook_tolerance: Duration,
    pub request_timeout: Duration,
    pub max_requests_per_second: u32,
}

/// `[github]`.
#[derive(Debug, Clone)]
pub struct GithubConfig {
    pub api_url: url::Url,
    /// project id -> `owner/repo`, exactly as GitHub names the repository (checked at
    /// load time: no `.git`, URL or stray `/`); compared without case.
    pub repos: BTreeMap<String, String>,
}

/// `[server]`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: String,
    /// A connection on which nothing is read or written for this long is closed (a
    /// client that stalls mid-request, or an idle keep-alive); `0s`: never.
    pub idle_timeout: Duration,
}

/// `[store]`.
#[derive(Clone)]
pub struct StoreConfig {
    pub url: String,
    /// How long a claimed action stays with a process that stopped answering before
    /// another replica (or the restarted process, on PostgreSQL) takes it over.
    pub action_lease: Duration,
    /// How long processed events and finished runs are kept in the store (`None`: for
    /// ever).
    pub keep_events: Option<Duration>,
    /// How long the audit log, decisions and finished actions, is kept (`None`: for
    /// ever); actions still to do are kept with their decisions whatever their age.
    pub keep_audit: Option<Duration>,
}

/// Default of `[store] keep_events`: two weeks.
pub const DEFAULT_KEEP_EVENTS: Duration = Duration::from_secs(14 * 24 * 3600);

/// Default of `[store] keep_audit`: 90 days.
pub const DEFAULT_KEEP_AUDIT: Duration = Duration::from_secs(90 * 24 * 3600);

/// The URL shown by [`redact_store_url`]: no password, wherever the URL carries it.
impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("url", &redact_store_url(&self.url))
            .field("action_lease", &self.action_lease)
            .field("keep_events", &self.keep_events)
            .field("keep_audit", &self.keep_audit)
            .finish()
    }
}

/// A store URL fit for logs and `Debug` output: the password of the user part
/// (`postgres://rw:***@db/rw`) and the value of every query parameter that may hold a
/// secret (`password`, `sslpassword`, or any name containing "pass", "secret" or
/// "token", in any case and percent-encoding) are replaced by `***`; the rest (scheme,
/// user, host, port, path, other parameters) is kept. A URL that does not parse is not
/// shown at all.
pub fn redact_store_url(url: &str) -> String {
    const MASK: &str = "***";
    let Ok(mut u) = url::Url::parse(url) else {
        return "(unparseable URL, not shown)".into();
    };
    if u.password().is_some() {
        // Fails only for URLs that cannot have a user part: then there is no password.
        let _ = u.set_password(Some(MASK));
    }
    if let Some(query) = u.query() {
        let redacted: Vec<String> = query
            .split('&')
            .map(|pair| {
                let key = pair.split_once('=').map_or(pair, |(k, _)| k);
                let name: String = url::form_urlencoded::parse(key.as_bytes())
                    .next()
                    .map(|(k, _)| k.to_ascii_lowercase())
                    .unwrap_or_default();
                if ["pass", "secret", "token"].iter().any(|s| name.contains(s)) {
                    format!("{key}={MASK}")
                } else {
                    pair.to_string()
                }
            })
            .collect();
        u.set_query(Some(&redacted.join("&")));
    }
    // The fragment is never meant for the server; it is not shown either.
    u.set_fragment(None);
    u.to_string()
}

/// One `[[rules]]` entry.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    /// `None` inherits the global `dry_run`.
    pub dry_run: Option<bool>,
    pub filter: Filter,
    pub kind: RuleKind,
    /// 1-based line of the rule's `[[rules]]` header in the file (0 when unknown).
    pub line: usize,
}

impl Rule {
    /// Whether this rule only records decisions: its own `dry_run`, else the global one.
    pub fn is_dry_run(&self, global: bool) -> bool {
        self.dry_run.unwrap_or(global)
    }
    pub fn kind_name(&self) -> &'static str {
        self.kind.name()
    }
}

/// A rule kind with its options (SPEC §4).
// Built once at load time and never moved in hot paths: boxing buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum RuleKind {
    Supersede(SupersedeOptions),
    Timeout(TimeoutOptions),
    Orphan(OrphanOptions),
    Retention(RetentionOptions),
    Summary(SummaryOptions),
}

impl RuleKind {
    pub fn name(&self) -> &'static str {
        match self {
            RuleKind::Supersede(_) => "supersede",
            RuleKind::Timeout(_) => "timeout",
            RuleKind::Orphan(_) => "orphan",
            RuleKind::Retention(_) => "retention",
            RuleKind::Summary(_) => "summary",
        }
    }
}

/// What `group_by` adds to the branch when grouping runs for `supersede`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Tags,
    Framework,
}

/// `kind = "supersede"`.
#[derive(Debug, Clone)]
pub struct SupersedeOptions {
    pub group_by: Vec<GroupBy>,
    pub on_push: bool,
    pub on_branch_deleted: bool,
    /// 0..=1; spare runs at least this far complete.
    pub spare_if_progress_at_least: Option<f64>,
}

/// `max_duration` of a timeout rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MaxDuration {
    Fixed(Duration),
    /// `auto_factor` × p95 of the last 50 completed passed runs of the group.
    Auto,
}

/// `kind = "timeout"`.
#[derive(Debug, Clone)]
pub struct TimeoutOptions {
    pub max_duration: Option<MaxDuration>,
    pub idle_for: Option<Duration>,
    pub auto_factor: f64,
    /// Limit used by `max_duration = "auto"` with fewer than 10 samples.
    pub fallback: Option<Duration>,
}

/// How an orphan rule ties runs to a finished workflow run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchBy {
    CiBuildId,
    Commit,
}

/// `kind = "orphan"`.
#[derive(Debug, Clone)]
pub struct OrphanOptions {
    pub grace: Duration,
    /// Template with `{repository}`, `{run_id}`, `{run_attempt}`.
    pub ci_build_id_suffix: String,
    pub match_by: MatchBy,
    /// `workflows`: globs over the completed workflow's name or file name (`!` excludes);
    /// `None`: every workflow of the repository.
    pub workflows: Option<filter::GlobList>,
}

impl OrphanOptions {
    /// Whether the rule is about a workflow of this name (`name:` in its file) and path
    /// (`.github/workflows/e2e.yml`, matched by its file name `e2e.yml`). With
    /// `workflows` set, a workflow known by neither (an event stored by a version that
    /// did not keep them) is not one of them.
    pub fn concerns_workflow(&self, name: Option<&str>, path: Option<&str>) -> bool {
        let Some(list) = &self.workflows else {
            return true;
        };
        // `.github/workflows/e2e.yml`, or with the ref it ran from (`...e2e.yml@main`).
        let file = path.map(|p| {
            let p = p.split_once('@').map_or(p, |(file, _)| file);
            p.rsplit('/').next().unwrap_or(p)
        });
        let known: Vec<&str> = name.into_iter().chain(file).collect();
        !known.is_empty() && list.matches_any(&known)
    }
}

/// `kind = "retention"`.
#[derive(Debug, Clone)]
pub struct RetentionOptions {
    /// When `serve` sweeps (cron, UTC). `None`: only on demand, with `runwarden sweep`
    /// or `POST /api/sweep/{rule}`.
    pub schedule: Option<schedule::CronSchedule>,
    pub older_than: Duration,
    pub keep_latest: u32,
    pub keep_last_passed: bool,
    pub pin_tags: globset::GlobSet,
    pub pin_tag_patterns: Vec<String>,
    pub max_deletions: u32,
}

/// `kind = "summary"`.
#[derive(Debug, Clone)]
pub struct SummaryOptions {
    /// Currents events that trigger the summary (`RUN_FINISH`, ...).
    pub events: Vec<String>,
    pub comment: bool,
    pub commit_status: bool,
    /// With `{project}` filled in.
    pub status_context: String,
    pub only_failed: bool,
    pub max_failed_specs: u32,
    /// Template source (read at load time) and its path.
    pub template: Option<(std::path::PathBuf, String)>,
}

/// Secrets, read only from the environment (SPEC §2).
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    pub currents_api_key: Option<Secret>,
    pub github_token: Option<Secret>,
    pub github_app_id: Option<u64>,
    pub github_app_private_key: Option<Secret>,
    pub currents_webhook_secrets: Vec<Secret>,
    pub github_webhook_secrets: Vec<Secret>,
    pub admin_token: Option<Secret>,
}

impl Secrets {
    /// Reads every secret variable of SPEC §2. A `GITHUB_APP_PRIVATE_KEY` that is not PEM
    /// text is taken as a path and read.
    pub fn from_env() -> Self {
        let key = Secret::from_env("GITHUB_APP_PRIVATE_KEY").map(|k| {
            if k.expose().contains("-----BEGIN") {
                k
            } else {
                std::fs::read_to_string(k.expose())
                    .map(Secret::new)
                    .unwrap_or(k)
            }
        });
        Self {
            currents_api_key: Secret::from_env("CURRENTS_API_KEY"),
            github_token: Secret::from_env("GITHUB_TOKEN"),
            // A value that is not a number is left out here; [`github_app_id_from_env`]
            // tells it apart from an unset variable, for the commands to refuse it.
            github_app_id: github_app_id_from_env().ok().flatten(),
            github_app_private_key: key,
            currents_webhook_secrets: Secret::list_from_env("RUNWARDEN_CURRENTS_WEBHOOK_SECRET"),
            github_webhook_secrets: Secret::list_from_env("RUNWARDEN_GITHUB_WEBHOOK_SECRET"),
            admin_token: Secret::from_env("RUNWARDEN_ADMIN_TOKEN"),
        }
    }
}

/// What `GITHUB_APP_ID` says, for [`Secrets::from_env`]: `Ok(None)` when it is unset or
/// empty, `Err` when it is set to something that is not a number (the GitHub App's
/// numeric id). The value itself is never part of the error.
pub fn github_app_id_from_env() -> Result<Option<u64>, String> {
    parse_github_app_id(std::env::var_os("GITHUB_APP_ID").as_deref())
}

/// [`github_app_id_from_env`] on a given value of the variable.
pub fn parse_github_app_id(value: Option<&std::ffi::OsStr>) -> Result<Option<u64>, String> {
    const WHAT: &str = "GITHUB_APP_ID is not a number: set it to the GitHub App's numeric id (the \"App ID\" of the App's settings page), or unset it";
    let Some(value) = value else {
        return Ok(None);
    };
    let Some(text) = value.to_str() else {
        return Err(WHAT.into());
    };
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| WHAT.into())
}

/// The placeholders of an orphan rule's `ci_build_id_suffix` ([`fill_suffix`]).
pub const SUFFIX_PLACEHOLDERS: &[&str] = &["repository", "run_id", "run_attempt"];

/// The placeholders of a summary rule's `status_context`.
pub const STATUS_CONTEXT_PLACEHOLDERS: &[&str] = &["project"];

/// Fills `{repository}`, `{run_id}` and `{run_attempt}` in an orphan suffix template.
pub fn fill_suffix(template: &str, repository: &str, run_id: u64, run_attempt: u64) -> String {
    template
        .replace("{repository}", repository)
        .replace("{run_id}", &run_id.to_string())
        .replace("{run_attempt}", &run_attempt.to_string())
}
