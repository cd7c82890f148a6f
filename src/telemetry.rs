//! Logging setup: `tracing` with `RUST_LOG` (default `info`); JSON when `RUNWARDEN_LOG_FORMAT=json`.
//! Payloads are never logged above DEBUG.

use tracing_subscriber::{EnvFilter, fmt};

/// Installs the global subscriber once (`default` applies when `RUST_LOG` is unset);
/// later calls are no-ops.
pub fn init(default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let json = std::env::var("RUNWARDEN_LOG_FORMAT").is_ok_and(|v| v == "json");
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
