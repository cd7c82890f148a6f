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

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use crate::config::{self, Loaded};

/// Exit code: the work failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit code: bad usage or invalid config.
pub const EXIT_USAGE: u8 = 2;

/// What `errln!` calls: writes `args` and a newline to stderr, ignoring a failure. Never
/// panics, unlike `eprintln!`, which panics when stderr is a pipe whose reader has gone
/// (`runwarden check 2>&1 | true`): the error is lost, the exit code is kept.
pub fn write_stderr(args: std::fmt::Arguments<'_>) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_fmt(args).and_then(|()| err.write_all(b"\n"));
}

/// `eprintln!` for the commands' messages, without its panic when stderr is gone.
///
/// Same syntax as `eprintln!`; a write that fails (a closed pipe) is ignored, and the
/// command ends with its usual exit code. Use it from any module of the crate with
/// `use crate::commands::errln;` (crate-internal, not `#[macro_export]`ed).
macro_rules! errln {
    () => {
        $crate::commands::write_stderr(::std::format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::commands::write_stderr(::std::format_args!($($arg)*))
    };
}
pub(crate) use errln;

#[derive(Debug, Parser)]
#[command(
    name = "runwarden",
    version,
    about = "Policy bot for Currents test runs: cancels superseded, stuck and orphaned runs, deletes old ones, posts PR summaries."
)]
pub struct Cli {
    /// Path of the policy file (an empty $RUNWARDEN_CONFIG counts as unset).
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
    /// Aligned columns with a header row, for people.
    Table,
    /// One JSON array (SPEC §1), for scripts.
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
        /// Evaluate only the rule with this `name` (exit 2 if there is none).
        #[arg(long, value_name = "NAME")]
        rule: Option<String>,
        /// Print an aligned table, or one JSON array of what would be done.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Evaluate and execute once, then exit.
    Sweep {
        /// Evaluate and execute only the rule with this `name` (exit 2 if there is none).
        #[arg(long, value_name = "NAME")]
        rule: Option<String>,
        /// Record the decisions, mutate nothing (as `dry_run = true` on every rule).
        #[arg(long)]
        dry_run: bool,
    },
    /// For each rule: does it apply to this run now, and if not, why not. A retention
    /// rule is judged over its sweep's listing of every run of its projects (one request
    /// per 50 runs).
    Explain {
        /// The Currents run id (`runId`) to explain.
        #[arg(value_parser = parse_run_id)]
        run_id: String,
    },
    /// The decisions and actions recorded in the store, newest first.
    Audit {
        /// Decisions made since then, and older ones whose action changed since then (e.g.
        /// "24h").
        #[arg(long, value_name = "DURATION")]
        since: Option<String>,
        /// Only the decisions of the rule with this `name` (exit 2 if there is none).
        #[arg(long, value_name = "NAME")]
        rule: Option<String>,
        /// Print an aligned table, or one JSON array of the recorded entries.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
        /// At most this many entries, the newest (stderr says when more were left out).
        #[arg(long, value_name = "N", default_value_t = audit::AUDIT_MAX, value_parser = clap::value_parser!(u32).range(1..))]
        limit: u32,
    },
    /// Manage this bot's Currents webhooks.
    Webhooks {
        #[command(subcommand)]
        command: WebhooksCommand,
    },
    /// Serve the built-in Currents + GitHub simulator.
    Simulate {
        /// Address to serve the simulator on, `HOST:PORT` (port 0: any free port).
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:4000", value_parser = parse_listen)]
        listen: String,
        /// Post Currents webhooks for run changes to this URL (with the header
        /// `currents.webhook_header` = $RUNWARDEN_CURRENTS_WEBHOOK_SECRET).
        #[arg(long)]
        webhook_url: Option<String>,
    },
    /// The whole bot against the built-in simulator, narrated.
    Demo {
        /// Speed factor of the scripted day (> 0; 4 plays it four times faster).
        #[arg(
            long,
            value_name = "X",
            default_value_t = 1.0,
            value_parser = parse_speed,
            allow_negative_numbers = true
        )]
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
        /// Public URL of this bot's `POST /webhooks/currents` endpoint (http or https).
        #[arg(long)]
        url: String,
        /// Print what would be created or updated, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// When no webhook points at URL yet, point another webhook labelled `runwarden`
        /// (e.g. this bot's previous address) at URL instead of creating one.
        #[arg(long)]
        replace: bool,
    },
}

/// `demo --speed`: a finite number greater than 0 (a pause lasts its time divided by it).
fn parse_speed(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 => Ok(x),
        _ => Err("the speed factor must be a number greater than 0 (e.g. 0.5 or 4)".into()),
    }
}

/// `simulate --listen`: `HOST:PORT` (an IP address, `[IPv6]:PORT`, or a host name) with a
/// port in 0–65535, as [`config::load::listen_problem`] checks `[server] listen`; checked
/// here so that a typo is a usage error (exit 2), not a failed bind (exit 1).
fn parse_listen(s: &str) -> Result<String, String> {
    use config::load::ListenProblem;
    let why = match config::load::listen_problem(s) {
        None => return Ok(s.to_string()),
        Some(ListenProblem::NoPort) => "no port",
        Some(ListenProblem::BadPort) => "the port must be a number from 0 to 65535",
        Some(ListenProblem::BadHost) => "the host must be an IP address or a host name",
    };
    Err(format!("{why} (expected HOST:PORT, e.g. 127.0.0.1:4000)"))
}

/// `explain RUN_ID`: a Currents run id, which is one segment of the API's path
/// (`/runs/{id}`): not empty, and without `/` or white space. Checked here so that a
/// typo is a usage error (exit 2), not a failed API request (exit 1).
fn parse_run_id(s: &str) -> Result<String, String> {
    let id = s.trim();
    if id.is_empty() {
        return Err("the run id is empty; give the runId of a Currents run (the last segment of its dashboard URL)".into());
    }
    if id.contains('/') {
        return Err("a run id has no \"/\"; give the runId alone (the last segment of the run's dashboard URL), not a URL or path".into());
    }
    if id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("a run id has no spaces or control characters".into());
    }
    Ok(id.to_string())
}

/// `count` and the noun in the singular or the plural: `1 project`, `3 projects`.
pub fn plural(count: impl Into<u64>, one: &str, many: &str) -> String {
    let n = count.into();
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Checks that `--rule NAME` names a rule of the config; when not, prints
/// `PATH: no rule named "NAME"` and gives the usage exit code (2).
pub fn check_rule_exists(
    path: &std::path::Path,
    config: &config::Config,
    rule: Option<&str>,
) -> Result<(), ExitCode> {
    match rule {
        Some(r) if !config.rules.iter().any(|x| x.name == r) => {
            errln!("{}: no rule named {r:?}", path.display());
            Err(ExitCode::from(EXIT_USAGE))
        }
        _ => Ok(()),
    }
}

/// Set once stdout is gone (a closed pipe, as `runwarden audit | head -1` leaves it) or
/// failed otherwise: `outln!` prints nothing more.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// What `outln!` calls: writes `args` and a newline to the locked stdout. A broken pipe ends the output silently; another error is reported
/// once on stderr and ends it too. Never panics, unlike `println!`.
pub fn write_stdout(args: std::fmt::Arguments<'_>) {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    let result = out.write_fmt(args).and_then(|()| out.write_all(b"\n"));
    if let Err(e) = result
        && !STDOUT_CLOSED.swap(true, Ordering::Relaxed)
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        errln!("runwarden: cannot write to stdout: {e} (further output is dropped)");
    }
}

/// `println!` for the commands' output, without its panic when stdout is gone.
///
/// Same syntax as `println!` (`outln!()`, `outln!("{x} and {}", y)`); writes to the
/// locked stdout. When the reader of a pipe has gone (`runwarden audit | head -1`), the
/// write fails with `BrokenPipe`: this line and all later output are dropped silently,
/// and the command finishes normally with its usual exit code (0, 1 or 2). Any other
/// write error prints one warning on stderr and drops the rest of the output too.
/// SIGPIPE stays ignored (Rust's default), since the same processes talk HTTP through
/// hyper.
///
/// Use it from any module of the crate with `use crate::commands::outln;` (in a
/// `commands` module, `use super::outln;` works too). It is crate-internal, not
/// `#[macro_export]`ed.
macro_rules! outln {
    () => {
        $crate::commands::write_stdout(::std::format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::commands::write_stdout(::std::format_args!($($arg)*))
    };
}
pub(crate) use outln;

/// Loads the config or prints the located error; `Err` carries the exit code.
pub fn load_config(path: &std::path::Path) -> Result<Loaded, ExitCode> {
    match config::load_file(path) {
        Ok(l) => Ok(l),
        Err(e) => {
            errln!("{e}");
            Err(ExitCode::from(EXIT_USAGE))
        }
    }
}

/// Parses the command line of the process. An empty (or blank) `RUNWARDEN_CONFIG` counts
/// as unset, as an empty variable usually means one (`RUNWARDEN_CONFIG= runwarden
/// check`, or a compose file's `${RUNWARDEN_CONFIG}` with nothing behind it): clap would
/// take it for an empty `--config`. An explicit `--config ""` is still refused.
pub fn parse_cli() -> Cli {
    parse_cli_from(
        std::env::args_os(),
        std::env::var_os("RUNWARDEN_CONFIG").as_deref(),
    )
}

/// [`parse_cli`] on given arguments and value of `RUNWARDEN_CONFIG`; a usage error (or
/// `--help`) is printed and exits, as clap does (2 for an error, 0 for help).
fn parse_cli_from(
    args: impl IntoIterator<Item = std::ffi::OsString>,
    config_env: Option<&std::ffi::OsStr>,
) -> Cli {
    try_parse_cli_from(args, config_env).unwrap_or_else(|e| e.exit())
}

fn try_parse_cli_from(
    args: impl IntoIterator<Item = std::ffi::OsString>,
    config_env: Option<&std::ffi::OsStr>,
) -> Result<Cli, clap::Error> {
    let mut cmd = Cli::command();
    let blank = config_env.is_some_and(|v| v.to_str().is_some_and(|s| s.trim().is_empty()));
    if blank {
        cmd = cmd.mut_arg("config", |a| a.env(None::<&'static str>));
    }
    let matches = cmd.try_get_matches_from(args)?;
    Cli::from_arg_matches(&matches)
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = parse_cli();
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
    // A GITHUB_APP_ID that is not a number is refused by the commands that use GitHub
    // credentials (`check` tells what `serve` would refuse), rather than read as unset.
    if let Some(name) = match &cli.command {
        Command::Serve => Some("serve"),
        Command::Sweep { .. } => Some("sweep"),
        Command::Check => Some("check"),
        _ => None,
    } && let Err(e) = config::github_app_id_from_env()
    {
        errln!("runwarden {name}: {e}");
        return ExitCode::from(EXIT_USAGE);
    }
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
            limit,
        } => audit::run(
            &cli.config,
            since.as_deref(),
            rule.as_deref(),
            *format,
            *limit as usize,
        ),
        Command::Webhooks {
            command:
                WebhooksCommand::Install {
                    url,
                    dry_run,
                    replace,
                },
        } => webhooks::run_with(&cli.config, url, *dry_run, *replace),
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
    // `runUrl`, which the bot checks) come from the config when there is one. There need
    // be none (the defaults then); but one that is there and invalid is an error (exit
    // 2, as for every command), not silently replaced by the defaults the bot would
    // then disagree with.
    let currents = if path.exists() {
        match load_config(path) {
            Ok(l) => Some(l.config.currents),
            Err(code) => return code,
        }
    } else {
        if path != std::path::Path::new("rules.toml") {
            errln!(
                "runwarden simulate: {}: no such file; using the default dashboard_url and webhook_header",
                path.display()
            );
        }
        None
    };
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
            errln!("runwarden simulate: {e:#}");
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every argument of every subcommand says what it is for in `--help`, and so does
    /// every value of its value enums (`--format`, `--log-format`).
    #[test]
    fn every_argument_of_every_subcommand_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                let help = arg.get_help().or(arg.get_long_help());
                if help.is_none_or(|h| h.to_string().trim().is_empty()) {
                    missing.push(format!("{path} {id}"));
                }
                for v in arg.get_possible_values() {
                    if v.get_help().is_none() {
                        missing.push(format!("{path} {id}={}", v.get_name()));
                    }
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_name() == "help" {
                    continue;
                }
                if sub.get_about().is_none() {
                    missing.push(format!("{path} {} (about)", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut cmd = Cli::command();
        cmd.build();
        let mut missing = Vec::new();
        walk(&cmd, "runwarden", &mut missing);
        assert!(missing.is_empty(), "arguments without help: {missing:?}");
    }

    #[test]
    fn demo_speed_must_be_finite_and_positive() {
        for ok in ["1", "0.5", "8", "1e3"] {
            assert!(parse_speed(ok).is_ok(), "{ok}");
        }
        for bad in ["0", "-1", "-0.5", "nan", "inf", "-inf", "fast", ""] {
            assert!(parse_speed(bad).is_err(), "{bad}");
        }
        let parsed = Cli::try_parse_from(["runwarden", "demo", "--speed", "-1"]);
        let err = parsed.unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("greater than 0"), "{err}");
    }

    #[test]
    fn simulate_listen_must_be_host_and_port() {
        for ok in [
            "127.0.0.1:4000",
            "0.0.0.0:0",
            "[::1]:4000",
            "localhost:4000",
        ] {
            assert_eq!(parse_listen(ok).as_deref(), Ok(ok));
        }
        for bad in [
            "0.0.0.0:notaport",
            "127.0.0.1",
            "127.0.0.1:65536",
            ":4000",
            "a b:80",
        ] {
            assert!(parse_listen(bad).is_err(), "{bad}");
        }
        let err = Cli::try_parse_from(["runwarden", "simulate", "--listen", "0.0.0.0:notaport"])
            .unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("port"), "{err}");
    }

    /// (A blank `RUNWARDEN_CONFIG` counting as unset is checked on the binary, in
    /// `tests/cli_usage.rs`: clap reads the process's own environment.)
    #[test]
    fn an_empty_config_option_is_bad_usage() {
        let err = try_parse_cli_from(
            ["runwarden", "--config", "", "check"].map(std::ffi::OsString::from),
            None,
        )
        .unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn a_run_id_is_one_non_empty_path_segment() {
        assert_eq!(parse_run_id(" abc123 ").as_deref(), Ok("abc123"));
        for bad in [
            "",
            "  ",
            "a/b",
            "https://app.currents.dev/run/x",
            "a b",
            "a\tb",
        ] {
            assert!(parse_run_id(bad).is_err(), "{bad:?}");
        }
        let err = Cli::try_parse_from(["runwarden", "explain", ""]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("run id"), "{err}");
    }

    #[test]
    fn counts_read_in_the_singular_and_the_plural() {
        assert_eq!(plural(1u64, "project", "projects"), "1 project");
        assert_eq!(plural(0u64, "project", "projects"), "0 projects");
        assert_eq!(
            plural(2u32, "API request", "API requests"),
            "2 API requests"
        );
    }
}
