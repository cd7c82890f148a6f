//! `runwarden explain RUN_ID`: for each rule, does it apply to this run now, and if not,
//! which condition fails. Mutates nothing.
//!
//! It reads the run, and the runs of its branch (newer runs for supersede, history for
//! `max_duration = "auto"`). A retention rule whose filter selects the run is judged as
//! a sweep of it would judge it now: over the sweep's own listing, every run of the
//! projects the rule concerns ([`processor::list_retention_runs`], fed page by page to a
//! [`retention::Sweep`], no run held), so its keep slots count the whole branch and its
//! `max_deletions` breaker the whole sweep. That listing is one request per 50 runs of
//! those projects, for each such rule.

use std::process::ExitCode;

use chrono::Utc;
use futures::StreamExt;

use super::{errln, outln};
use crate::config::{RuleKind, Secrets};
use crate::currents::RunFilter;
use crate::intake::processor;
use crate::rules::{self, RunsView, retention};

/// Runs the command.
pub fn run(path: &std::path::Path, run_id: &str) -> ExitCode {
    let loaded = match super::load_config(path) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let secrets = Secrets::from_env();
    let client = match super::serve::currents_client(&loaded.config, &secrets) {
        Ok(c) => c,
        Err(e) => {
            errln!("runwarden explain: {e:#}");
            return ExitCode::from(super::EXIT_USAGE);
        }
    };
    let rt = super::runtime();
    let config = &loaded.config;
    let projects = &config.currents.projects;
    let result = rt.block_on(async {
        let run = client.get_run(run_id).await?;
        let now = Utc::now();
        // The other runs of its branch: for supersede (newer runs) and timeout (history).
        // None for a run of a project the bot does not watch: no rule looks at it.
        let mut runs = Vec::new();
        let watched = projects.contains(&run.project_id);
        if let Some(branch) = run.branch().filter(|_| watched) {
            let filter = RunFilter {
                branches: vec![branch.to_string()],
                ..RunFilter::default()
            };
            let mut s = client.list_runs(&run.project_id, &filter);
            while let Some(r) = s.next().await {
                let r = r?;
                if r.run_id != run.run_id {
                    runs.push(r);
                }
            }
        }
        runs.push(run.clone());
        // Each retention rule that selects the run: what its sweep would decide now.
        let mut swept = Vec::new();
        for (i, rule) in config.rules.iter().enumerate() {
            let RuleKind::Retention(opts) = &rule.kind else {
                continue;
            };
            if !watched || rule.filter.check(&run).is_err() {
                continue;
            }
            swept.push((
                i,
                explain_retention(&client, projects, rule, opts, &run, now).await?,
            ));
        }
        anyhow::Ok((run, runs, swept, now))
    });
    let (run, runs, swept, now) = match result {
        Ok(x) => x,
        Err(e) => {
            errln!("runwarden explain: {e:#}");
            return ExitCode::from(super::EXIT_FAILED);
        }
    };
    let history = rules::build_history(&runs);
    let progress = Default::default();
    let view = RunsView::new(&runs, &progress, &history);
    outln!("{}", header(&run));
    if !projects.contains(&run.project_id) {
        // `serve` refuses such a run's events and `plan` never lists its project, so no
        // rule can act on it, whatever its filters say.
        let detail = format!(
            "project {} is not in [currents] projects ({}): runwarden never acts on its runs",
            run.project_id,
            projects.join(", ")
        );
        for rule in &config.rules {
            outln!(
                "✘ no       {:<22} {:<9} {detail}",
                rule.name,
                rule.kind_name()
            );
        }
        return ExitCode::SUCCESS;
    }
    let mut explained = rules::explain(config, &run, &view, now);
    for (i, (applies, detail)) in swept {
        explained[i].applies = applies;
        explained[i].detail = detail;
    }
    for e in explained {
        // A rule in dry-run mode only records its decision: said as `plan` says it.
        outln!(
            "{} {:<22} {:<9} {}{}",
            if e.applies {
                "✔ applies "
            } else {
                "✘ no      "
            },
            e.rule,
            e.kind,
            e.detail,
            if e.dry_run { " (dry run)" } else { "" }
        );
    }
    ExitCode::SUCCESS
}

/// Whether a sweep of retention rule `rule` now would delete `run` (which its filter
/// selects), and why (not): the sweep's listing fed to a [`retention::Sweep`], with `run`
/// as just read in place of its listed copy. A project the listing leaves out (refused
/// for good) is left out here too, and named.
async fn explain_retention(
    client: &crate::currents::CurrentsClient,
    projects: &[String],
    rule: &crate::config::Rule,
    opts: &crate::config::RetentionOptions,
    run: &crate::currents::Run,
    now: chrono::DateTime<Utc>,
) -> anyhow::Result<(bool, String)> {
    let mut sweep = retention::Sweep::new(rule, opts, now);
    let skipped = processor::list_retention_runs(client, projects, rule, |r| {
        if r.run_id != run.run_id {
            sweep.feed(r);
        }
    })
    .await?;
    if let Some((_, e)) = skipped.iter().find(|(p, _)| *p == run.project_id) {
        return Ok((
            false,
            format!(
                "the sweep cannot list project {} (Currents API: {e}): it leaves its runs alone",
                run.project_id
            ),
        ));
    }
    sweep.feed(run);
    let (applies, mut detail) = sweep.explain(run);
    for (project, e) in &skipped {
        detail.push_str(&format!(
            "; the sweep leaves out project {project} (Currents API: {e})"
        ));
    }
    Ok((applies, detail))
}

/// The first line: the run, its project, branch, short sha, state and creation time.
/// The sha is cut on a character boundary ([`rules::short_sha`]): it is whatever the CI
/// reported, not necessarily hex, and a byte slice could fall inside a character.
fn header(run: &crate::currents::Run) -> String {
    format!(
        "run {} · project {} · branch {} · sha {} · {} / {} · created {}",
        run.run_id,
        run.project_id,
        run.branch().unwrap_or("-"),
        run.sha().map(rules::short_sha).unwrap_or("-"),
        run.completion_state,
        run.status,
        run.created_at.format("%Y-%m-%d %H:%M:%S UTC")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_with_sha(sha: &str) -> crate::currents::Run {
        serde_json::from_value(serde_json::json!({
            "runId": "r1", "projectId": "p1", "createdAt": "2026-01-02T03:04:05Z",
            "meta": {"commit": {"branch": "main", "sha": sha}}
        }))
        .unwrap()
    }

    #[test]
    fn the_header_shortens_a_multibyte_sha_on_a_char_boundary() {
        // Byte 7 falls inside the fourth "é" (2 bytes each): a byte slice would panic.
        let line = header(&run_with_sha("ééééééééé"));
        assert!(line.contains("· sha ééééééé ·"), "{line}");
        let line = header(&run_with_sha("0123456789abcdef"));
        assert!(line.contains("· sha 0123456 ·"), "{line}");
        assert!(header(&run_with_sha("abc")).contains("· sha abc ·"));
    }
}
