//! Logging setup, once per process: `tracing` with `RUST_LOG` (default given by the
//! command); human-readable text on a terminal, JSON lines otherwise (`--log-format`
//! or `RUNWARDEN_LOG_FORMAT` = `auto` | `text` | `json`). Payloads are never logged
//! above DEBUG.

use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, fmt};

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Text on a terminal, JSON otherwise.
    Auto,
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Installs the global subscriber once (`default` applies when `RUST_LOG` is unset);
/// later calls are no-ops.
pub fn init(default: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init()
    };
}
