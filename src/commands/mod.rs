//! The command line of SPEC §1: one module per subcommand.
//!
//! Exit codes: 0 success, 1 the work failed (an action failed for good, a circuit
//! breaker tripped), 2 bad usage or an invalid config.

pub mod audit;
pub mod check;
pub mod demo;
pub mod explain;
pub mod plan;
pub mod serve;
pub mod sweep;
pub mod webhooks;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{self, Loaded};

/// Exit code: the work failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit code: bad usage or invalid config.
pub const EXIT_USAGE: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "runwarden",
    version,
    about = "Policy bot for Currents test runs: cancels superseded, stuck and orphaned runs, deletes old ones, posts PR summaries."
)]
pub struct Cli {
    /// Path of the policy file.
    #[arg(
        long,
        global = true,
        env = "RUNWARDEN_CONFIG",
        default_value = "rules.toml"
    )]
    pub config: PathBuf,
    /// Log format: text on a terminal and JSON otherwise (auto), or forced.
    #[arg(
        long,
        global = true,
        env = "RUNWARDEN_LOG_FORMAT",
        value_enum,
        default_value = "auto"
    )]
    pub log_format: crate::telemetry::LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// Output format of `plan` and `audit`.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the bot: webhooks, poller, schedules and the action executor.
    Serve,
    /// Validate the config and print each rule in one line.
    Check,
    /// Read the runs from the API, evaluate every rule now and print what would be done.
    Plan {
        #[arg(long)]
        rule: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Evaluate and execute once, then exit.
    Sweep {
        #[arg(long)]
        rule: Option<String>,
        #[arg(long)]
        dry_run: bool,
    },
    /// For each rule: does it apply to this run now, and if not, why not.
    Explain { run_id: String },
    /// The decisions and actions recorded in the store, newest first.
    Audit {
        /// Only entries newer than this (e.g. "24h").
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        rule: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Manage this bot's Currents webhooks.
    Webhooks {
        #[command(subcommand)]
        command: WebhooksCommand,
    },
    /// Serve the built-in Currents + GitHub simulator.
    Simulate {
        #[arg(long, default_value = "127.0.0.1:4000")]
        listen: String,
        /// Post Currents webhooks for run changes to this URL (with the header
        /// `currents.webhook_header` = $RUNWARDEN_CURRENTS_WEBHOOK_SECRET).
        #[arg(long)]
        webhook_url: Option<String>,
    },
    /// The whole bot against the built-in simulator, narrated.
    Demo {
        /// Speed factor of the scripted day.
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// Leave the bot and simulator running and print their URLs.
        #[arg(long)]
        keep_running: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// Create or update the webhook of every configured project (idempotent).
    Install {
        #[arg(long)]
        url: String,
        #[arg(long)]
        dry_run: bool,
    },
}

/// Loads the config or prints the located error; `Err` carries the exit code.
pub fn load_config(path: &std::path::Path) -> Result<Loaded, ExitCode> {
    match config::load_file(path) {
        Ok(l) => Ok(l),
        Err(e) => {
            eprintln!("{e}");
            Err(ExitCode::from(EXIT_USAGE))
        }
    }
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo narrates on stdout; its logs stay quiet unless RUST_LOG asks for more.
    let quiet = matches!(
        cli.command,
        Command::Demo { .. }
            | Command::Check
            | Command::Plan { .. }
            | Command::Explain { .. }
            | Command::Audit { .. }
    );
    crate::telemetry::init(if quiet { "warn" } else { "info" }, cli.log_format);
    match &cli.command {
        Command::Check => check::run(&cli.config),
        Command::Serve => serve::run(&cli.config),
        Command::Plan { rule, format } => plan::run(&cli.config, rule.as_deref(), *format),
        Command::Sweep { rule, dry_run } => sweep::run(&cli.config, rule.as_deref(), *dry_run),
        Command::Explain { run_id } => explain::run(&cli.config, run_id),
        Command::Audit {
            since,
            rule,
            format,
        } => audit::run(&cli.config, since.as_deref(), rule.as_deref(), *format),
        Command::Webhooks {
            command: WebhooksCommand::Install { url, dry_run },
        } => webhooks::run(&cli.config, url, *dry_run),
        Command::Simulate {
            listen,
            webhook_url,
        } => simulate(&cli.config, listen, webhook_url.clone()),
        Command::Demo {
            speed,
            keep_running,
        } => demo::run(&cli.config, *speed, *keep_running),
    }
}

fn simulate(path: &std::path::Path, listen: &str, webhook_url: Option<String>) -> ExitCode {
    let mut cfg = crate::simulator::SimConfig::interactive();
    // The webhook header's name and the dashboard's URL (the base of each webhook's
    // `runUrl`, which the bot checks) come from the config when there is one.
    let currents = config::load_file(path).ok().map(|l| l.config.currents);
    if let Some(c) = &currents {
        cfg.dashboard_url = c.dashboard_url.trim_end_matches('/').to_string();
    }
    if let Some(url) = webhook_url {
        let header = currents
            .map(|c| c.webhook_header)
            .unwrap_or_else(|| "x-webhook-secret".into());
        cfg.webhook_url = Some(url);
        if let Some(secret) =
            crate::secret::Secret::list_from_env("RUNWARDEN_CURRENTS_WEBHOOK_SECRET").first()
        {
            cfg.webhook_headers = vec![(header, secret.expose().to_string())];
        }
    }
    match runtime().block_on(crate::simulator::run_cli(listen, cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("runwarden simulate: {e:#}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// A tokio runtime for the async subcommands.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("cannot start the tokio runtime")
}
