//! `runwarden audit [--since DURATION] [--rule NAME] [--format table|json]`: the
//! decisions and actions recorded in the store, newest first.

use std::process::ExitCode;

use chrono::Utc;

use super::Format;
use crate::store::Store;

/// Runs the command.
pub fn run(
    path: &std::path::Path,
    since: Option<&str>,
    rule: Option<&str>,
    format: Format,
) -> ExitCode {
    let loaded = match super::load_config(path) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let since = match since.map(humantime::parse_duration).transpose() {
        Ok(d) => d.map(|d| Utc::now() - chrono::Duration::from_std(d).unwrap_or_default()),
        Err(e) => {
            eprintln!("runwarden audit: --since: {e} (expected a duration like \"24h\")");
            return ExitCode::from(super::EXIT_USAGE);
        }
    };
    let rt = super::runtime();
    rt.block_on(async move {
        let store = match Store::connect(&loaded.config.store.url).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("runwarden audit: cannot open the store: {e:#}");
                return ExitCode::from(super::EXIT_FAILED);
            }
        };
        let entries = match store.audit(since, rule, 100_000).await {
            Ok(e) => e,
            Err(e) => {
                eprintln!("runwarden audit: {e}");
                return ExitCode::from(super::EXIT_FAILED);
            }
        };
        match format {
            Format::Json => println!(
                "{}",
                serde_json::to_string_pretty(&entries).unwrap_or_else(|_| "[]".into())
            ),
            Format::Table => {
                if entries.is_empty() {
                    println!("no recorded decisions");
                }
                for e in &entries {
                    println!(
                        "{} {:<22} {:<9} {:<8} {:<34} {:<8} {}{}",
                        e.at.format("%Y-%m-%d %H:%M:%S"),
                        e.rule,
                        e.kind,
                        e.action,
                        e.run_id,
                        e.outcome.as_str(),
                        e.reason,
                        e.error
                            .as_deref()
                            .map(|x| format!(" — {x}"))
                            .unwrap_or_default()
                    );
                }
            }
        }
        ExitCode::SUCCESS
    })
}
