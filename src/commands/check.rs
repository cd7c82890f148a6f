//! `runwarden check`: validate the config, print each rule in one line, warn about
//! risky settings; exit 2 with `PATH:LINE:COL: message` on error.

use crate::commands::errln;
use std::path::Path;
use std::process::ExitCode;

use super::{outln, plural};
use crate::config::{Config, MaxDuration, Rule, RuleKind, Secrets, Warning};
// Durations as rules' reasons write them (`30d`, `1h30m`), not humantime's `1month
// 29days 10h 30m 36s` for `60d`.
use crate::rules::human_duration as human;

/// Runs the command.
pub fn run(path: &Path) -> ExitCode {
    let loaded = match super::load_config(path) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let secrets = Secrets::from_env();
    // GitHub credentials `serve` and `sweep` would refuse (an App id without its key, a
    // key that is neither PEM text nor a readable PEM file) are refused here the same
    // way, by the same check (the GitHub client's own, as in
    // `serve::credentials_problem`), so that `check` passing means they start.
    // (`CURRENTS_API_KEY` is not needed to check a config.)
    // The client is made as `serve` makes it, and its HTTP client built now (`serve`
    // builds that at its first request: a system without root certificates is told here
    // rather than at the first summary), inside a runtime: octocrab starts its HTTP
    // service on the runtime it is built on.
    let built = {
        let rt = super::runtime();
        let _inside = rt.enter();
        crate::github::GithubClient::from_config(&loaded.config.github, &secrets)
            .and_then(|client| client.map(|c| c.connect()).transpose())
    };
    if let Err(e) = built {
        errln!("runwarden check: GitHub credentials: {e}");
        return ExitCode::from(super::EXIT_USAGE);
    }
    let mut warnings = loaded.warnings.clone();
    warnings.extend(secret_warnings(&loaded.config, &secrets));
    for r in &loaded.config.rules {
        outln!("{}", describe(r, loaded.config.dry_run));
    }
    for w in &warnings {
        errln!("warning: {w}");
    }
    outln!(
        "{}: ok ({}, {}{})",
        path.display(),
        plural(loaded.config.rules.len() as u64, "rule", "rules"),
        plural(
            loaded.config.currents.projects.len() as u64,
            "project",
            "projects"
        ),
        if loaded.config.dry_run {
            ", dry run"
        } else {
            ""
        }
    );
    ExitCode::SUCCESS
}

/// Warnings that depend on the environment rather than the file.
pub fn secret_warnings(config: &Config, secrets: &Secrets) -> Vec<Warning> {
    let mut w = Vec::new();
    if secrets.currents_webhook_secrets.is_empty() {
        // With `poll_interval = "0s"` polling is off too: no Currents run reaches the bot.
        let text = if config.currents.poll_interval.is_zero() {
            "RUNWARDEN_CURRENTS_WEBHOOK_SECRET is not set and polling is off (poll_interval = \"0s\"): POST /webhooks/currents answers 404 and runwarden learns of no Currents runs at all (neither webhooks nor polling)"
        } else {
            "RUNWARDEN_CURRENTS_WEBHOOK_SECRET is not set: POST /webhooks/currents answers 404 and runwarden relies on polling"
        };
        w.push(Warning(text.into()));
    }
    let needs_github = config.rules.iter().any(|r| {
        matches!(r.kind, RuleKind::Summary(_))
            || matches!(&r.kind, RuleKind::Orphan(_))
            || matches!(&r.kind, RuleKind::Supersede(o) if o.on_push || o.on_branch_deleted)
    });
    if needs_github && secrets.github_webhook_secrets.is_empty() {
        w.push(Warning(
            "RUNWARDEN_GITHUB_WEBHOOK_SECRET is not set: POST /webhooks/github answers 404 (push, pull_request and workflow_run events are not received)".into(),
        ));
    }
    if config
        .rules
        .iter()
        .any(|r| matches!(r.kind, RuleKind::Summary(_)))
        && secrets.github_token.is_none()
        && secrets.github_app_id.is_none()
    {
        w.push(Warning(
            "summary rules need GITHUB_TOKEN or GITHUB_APP_ID + GITHUB_APP_PRIVATE_KEY: without them `serve` ends each summary skipped (\"no GitHub credentials configured\"), and `runwarden sweep` leaves them queued for `serve`".into(),
        ));
    }
    w
}

/// One line describing a rule.
pub fn describe(r: &Rule, global_dry_run: bool) -> String {
    let what = match &r.kind {
        RuleKind::Supersede(o) => {
            let mut s = "cancel in-progress runs superseded by a newer run".to_string();
            if o.on_push {
                s.push_str(" or push");
            }
            if !o.group_by.is_empty() {
                s.push_str(&format!(" (grouped by branch + {:?})", o.group_by));
            }
            if o.on_branch_deleted {
                s.push_str("; and runs of deleted branches / closed PRs");
            }
            if let Some(p) = o.spare_if_progress_at_least {
                s.push_str(&format!("; spare runs ≥ {:.0}% complete", p * 100.0));
            }
            s
        }
        RuleKind::Timeout(o) => {
            let mut parts = Vec::new();
            match o.max_duration {
                Some(MaxDuration::Fixed(d)) => {
                    parts.push(format!("running longer than {}", human(d)))
                }
                Some(MaxDuration::Auto) => parts.push(format!(
                    "running longer than {} × p95 of passed runs (fallback {})",
                    o.auto_factor,
                    o.fallback.map(human).unwrap_or_else(|| "none".into())
                )),
                None => {}
            }
            if let Some(i) = o.idle_for {
                parts.push(format!("idle for {}", human(i)));
            }
            format!("cancel in-progress runs {}", parts.join(" or "))
        }
        RuleKind::Orphan(o) => format!(
            "cancel runs still in progress {} after their GitHub workflow run completed (match by {})",
            human(o.grace),
            match o.match_by {
                crate::config::MatchBy::CiBuildId =>
                    format!("ciBuildId suffix {:?}", o.ci_build_id_suffix),
                crate::config::MatchBy::Commit => "branch and commit".to_string(),
            }
        ),
        RuleKind::Retention(o) => {
            let when = match &o.schedule {
                Some(s) => format!("on \"{s}\" UTC"),
                None => "on demand (no schedule)".to_string(),
            };
            let mut s = format!("{when} delete runs older than {}", human(o.older_than));
            if o.keep_latest > 0 {
                s.push_str(&format!(
                    ", keeping the {} newest per branch",
                    o.keep_latest
                ));
            }
            if o.keep_last_passed {
                s.push_str(", the last passed run per branch");
            }
            if !o.pin_tag_patterns.is_empty() {
                s.push_str(&format!(", runs tagged {:?}", o.pin_tag_patterns));
            }
            s.push_str(&format!(
                "; a sweep that would delete more than {} deletes none",
                o.max_deletions
            ));
            s
        }
        RuleKind::Summary(o) => {
            let mut outs = Vec::new();
            if o.comment {
                outs.push("a sticky PR comment");
            }
            if o.commit_status {
                outs.push("commit statuses");
            }
            format!(
                "post {} on {}{}",
                if outs.is_empty() {
                    "nothing".to_string()
                } else {
                    outs.join(" and ")
                },
                o.events.join(", "),
                if o.only_failed {
                    " (failed runs only)"
                } else {
                    ""
                }
            )
        }
    };
    let filt = if r.filter.is_empty() {
        ""
    } else {
        " [filtered]"
    };
    let dry = if r.is_dry_run(global_dry_run) {
        " (dry run)"
    } else {
        ""
    };
    format!("{:<24} {:<10} {what}{filt}{dry}", r.name, r.kind_name())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Durations read as they were written, not as humantime's months and days.
    #[test]
    fn rule_lines_write_durations_compactly() {
        let text = "[currents]\nprojects = [\"p\"]\n\
            [[rules]]\nname = \"ret\"\nkind = \"retention\"\nolder_than = \"60d\"\n\
            [rules.match]\nbranches = [\"feat/*\"]\n\
            [[rules]]\nname = \"slow\"\nkind = \"timeout\"\nmax_duration = \"90m\"\nidle_for = \"45m\"\n";
        let loaded = crate::config::load_str(text, "rules.toml", &[]).unwrap();
        let lines: Vec<String> = loaded
            .config
            .rules
            .iter()
            .map(|r| describe(r, false))
            .collect();
        assert!(lines[0].contains("delete runs older than 60d"), "{lines:?}");
        assert!(
            lines[1].contains("running longer than 1h30m") && lines[1].contains("idle for 45m"),
            "{lines:?}"
        );
    }

    /// Without a Currents webhook secret and with polling off, nothing tells the bot of a
    /// run: the warning says so instead of promising polling.
    #[test]
    fn no_currents_secret_and_no_polling_warns_that_no_run_is_seen() {
        let secrets = Secrets::default();
        let polling =
            crate::config::load_str("[currents]\nprojects = [\"p\"]\n", "rules.toml", &[])
                .unwrap()
                .config;
        let w: Vec<String> = secret_warnings(&polling, &secrets)
            .into_iter()
            .map(|w| w.0)
            .collect();
        assert!(w.iter().any(|w| w.contains("relies on polling")), "{w:?}");
        let off = crate::config::load_str(
            "[currents]\nprojects = [\"p\"]\npoll_interval = \"0s\"\n",
            "rules.toml",
            &[],
        )
        .unwrap()
        .config;
        let w: Vec<String> = secret_warnings(&off, &secrets)
            .into_iter()
            .map(|w| w.0)
            .collect();
        assert!(!w.iter().any(|w| w.contains("relies on polling")), "{w:?}");
        assert!(
            w.iter()
                .any(|w| w.contains("polling is off") && w.contains("no Currents runs at all")),
            "{w:?}"
        );
    }
}
