//! `runwarden audit [--since DURATION] [--rule NAME] [--format table|json]`: the
//! decisions and actions recorded in the store, newest first.
//!
//! `--rule` must name a rule of the config, as for `plan` and `sweep` (exit 2 when not).
//! `--since` longer than the time since the Unix epoch (e.g. `300000y`) means everything
//! recorded, as for `GET /api/actions?since=` (see [`since_cutoff`]); a text that is not
//! a duration exits 2.
//! `audit` only reads: where the config's SQLite store file does not exist yet (nothing
//! was ever recorded, e.g. before the first `serve` or `sweep`), it creates none, says
//! `no store at PATH: nothing recorded yet` (on stderr with `--format json`, which then
//! prints `[]`) and exits 0, since an empty history is not an error. The same for a
//! database without any table yet (`the store has no tables yet: nothing recorded yet`).
//!
//! It opens the store read-only ([`Store::connect_read_only`]): it never migrates it (a
//! newer `audit` binary must not migrate the schema under older replicas) nor creates
//! runwarden's tables in a database that is not its store. A database with other tables,
//! or with runwarden's schema of another version, is refused with an error naming the
//! problem, exit 1.

use crate::commands::errln;
use std::path::PathBuf;
use std::process::ExitCode;

use chrono::{DateTime, Utc};

use super::{Format, outln};
use crate::store::{AuditEntry, Backend, Store};

/// The earliest time of the entries `audit --since SINCE` (and `GET /api/actions?since=`)
/// shows, `SINCE` (a humantime duration such as `24h`) before `now`; `None`: no lower
/// bound. A `SINCE` that reaches back before the Unix epoch, or is too large to
/// represent at all (`300000y`, `1000000000y`), means everything recorded: it is clamped,
/// not an error. Only a text that is not a duration is an error.
pub fn since_cutoff(
    since: &str,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, humantime::DurationError> {
    let d = match humantime::parse_duration(since) {
        Ok(d) => d,
        Err(humantime::DurationError::NumberOverflow) => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| now.checked_sub_signed(d))
        .filter(|t| *t >= DateTime::UNIX_EPOCH))
}

/// Runs the command.
pub fn run(
    path: &std::path::Path,
    since: Option<&str>,
    rule: Option<&str>,
    format: Format,
    limit: usize,
) -> ExitCode {
    let loaded = match super::load_config(path) {
        Ok(l) => l,
        Err(code) => return code,
    };
    if let Err(code) = super::check_rule_exists(path, &loaded.config, rule) {
        return code;
    }
    let since = match since.map(|s| since_cutoff(s, Utc::now())).transpose() {
        Ok(cutoff) => cutoff.flatten(),
        Err(e) => {
            errln!("runwarden audit: --since: {e} (expected a duration like \"24h\")");
            return ExitCode::from(super::EXIT_USAGE);
        }
    };
    let url = &loaded.config.store.url;
    if let Some(file) = sqlite_file(url)
        && !file.exists()
    {
        let note = format!("no store at {}: nothing recorded yet", file.display());
        match format {
            Format::Json => {
                errln!("runwarden audit: {note}");
                outln!("[]");
            }
            Format::Table => outln!("{note}"),
        }
        return ExitCode::SUCCESS;
    }
    let rt = super::runtime();
    rt.block_on(async move {
        // Read only: no migration (a newer binary must not migrate the schema under the
        // replicas of an older one, nor add runwarden's tables to the wrong database).
        let store = match Store::connect_read_only(url).await {
            Ok(Some(s)) => s,
            Ok(None) => {
                let note = "the store has no tables yet: nothing recorded yet";
                match format {
                    Format::Json => {
                        errln!("runwarden audit: {note}");
                        outln!("[]");
                    }
                    Format::Table => outln!("{note}"),
                }
                return ExitCode::SUCCESS;
            }
            Err(e) => {
                errln!("runwarden audit: cannot open the store: {e:#}");
                return ExitCode::from(super::EXIT_FAILED);
            }
        };
        let mut entries = match store.audit(since, rule, limit as i64 + 1).await {
            Ok(e) => e,
            Err(e) => {
                errln!("runwarden audit: {e}");
                return ExitCode::from(super::EXIT_FAILED);
            }
        };
        if entries.len() > limit {
            entries.truncate(limit);
            errln!(
                "runwarden audit: more than {limit} entries; showing the newest {limit} (narrow with --since or --rule, or raise --limit)"
            );
        }
        match format {
            Format::Json => outln!(
                "{}",
                serde_json::to_string_pretty(&entries).unwrap_or_else(|_| "[]".into())
            ),
            Format::Table => print_table(&entries),
        }
        ExitCode::SUCCESS
    })
}

/// Most entries one `audit` prints by default (`--limit`): the newest; past it, stderr
/// says so.
pub const AUDIT_MAX: u32 = 100_000;

/// Prints the entries as an aligned table under a header row.
fn print_table(entries: &[AuditEntry]) {
    if entries.is_empty() {
        outln!("no recorded decisions");
        return;
    }
    outln!(
        "{:<19} {:<22} {:<9} {:<8} {:<34} {:<8} reason",
        "at (UTC)",
        "rule",
        "kind",
        "action",
        "run",
        "outcome"
    );
    for e in entries {
        outln!(
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

/// The file of a SQLite store URL (`sqlite://PATH`, `sqlite:PATH`, relative to the
/// working directory as for [`Store::connect`]); `None` for an in-memory database or a
/// server.
fn sqlite_file(url: &str) -> Option<PathBuf> {
    if Backend::of_url(url) != Some(Backend::Sqlite) || crate::store::is_in_memory(url) {
        return None;
    }
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let file = rest.split('?').next().unwrap_or(rest);
    (!file.is_empty()).then(|| PathBuf::from(file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_of_a_sqlite_url() {
        let f = |u: &str| sqlite_file(u).map(|p| p.display().to_string());
        assert_eq!(f("sqlite://runwarden.db").as_deref(), Some("runwarden.db"));
        assert_eq!(
            f("sqlite:///var/lib/rw.db?mode=rwc").as_deref(),
            Some("/var/lib/rw.db")
        );
        assert_eq!(f("sqlite:data/rw.db").as_deref(), Some("data/rw.db"));
        assert_eq!(f("sqlite::memory:"), None);
        assert_eq!(f("sqlite://x.db?mode=memory&cache=shared"), None);
        assert_eq!(f("postgres://u:p@h/db"), None);
    }

    /// A `--since` reaching back before the epoch, or too large to represent, means
    /// everything; it never panics and never means nothing.
    #[test]
    fn since_before_the_epoch_means_everything() {
        let now = Utc::now();
        assert_eq!(
            since_cutoff("24h", now).unwrap(),
            Some(now - chrono::Duration::hours(24))
        );
        for s in ["60y", "300000y", "1000000000y", "99999999999999999999999y"] {
            assert_eq!(since_cutoff(s, now).unwrap(), None, "{s}");
        }
        assert!(since_cutoff("soon", now).is_err());
        assert!(since_cutoff("", now).is_err());
    }
}
