//! Logging setup, once per process: `tracing` with `RUST_LOG` (default given by the
//! command); human-readable text on a terminal, JSON lines otherwise (`--log-format`
//! or `RUNWARDEN_LOG_FORMAT` = `auto` | `text` | `json`). Payloads are never logged
//! above DEBUG. Panics are logged as ERROR events in the same format.

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
    // `log_internal_errors(false)`: on a failed write (stderr a pipe whose reader has
    // gone), tracing-subscriber would report it with `eprintln!`, which panics on that
    // same stderr; inside the panic hook below that is a panic while panicking, and the
    // process aborts (exit 134). A log line that cannot be written is dropped instead.
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false);
    let installed = if json {
        builder.json().try_init()
    } else {
        builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init()
    };
    if installed.is_ok() {
        log_panics();
    }
}

/// Sends panics through the log, in its format, instead of the standard library's plain
/// text on stderr (which a collector reading JSON lines would not parse): one ERROR event
/// with the message, the place and the thread, and the backtrace when `RUST_BACKTRACE`
/// asks for one. The payload is the panic message only, never request data. When the
/// log filter drops ERROR events, the previous hook reports the panic as before.
fn log_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !tracing::enabled!(tracing::Level::ERROR) {
            previous(info);
            return;
        }
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(a panic without a message)");
        let location = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
            .unwrap_or_default();
        let thread = std::thread::current();
        let thread = thread.name().unwrap_or("(unnamed)");
        let backtrace = std::backtrace::Backtrace::capture();
        if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
            tracing::error!(panic.location = %location, panic.thread = thread, panic.backtrace = %backtrace, "panic: {message}");
        } else {
            tracing::error!(panic.location = %location, panic.thread = thread, "panic: {message}");
        }
    }));
}
