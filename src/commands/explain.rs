//! `runwarden explain RUN_ID`: for each rule, does it apply to this run now, and if not,
//! which condition fails. Reads the run and its branch's runs; mutates nothing.

use std::process::ExitCode;

use chrono::Utc;
use futures::StreamExt;

use super::{errln, outln};
use crate::config::Secrets;
use crate::currents::RunFilter;
use crate::rules::{self, RunsView};

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
    let projects = &loaded.config.currents.projects;
    let result = rt.block_on(async {
        let run = client.get_run(run_id).await?;
        // The other runs of its branch: for supersede (newer runs) and retention (newest N).
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
        anyhow::Ok((run, runs))
    });
    let (run, runs) = match result {
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
        for rule in &loaded.config.rules {
            outln!(
                "✘ no       {:<22} {:<9} {detail}",
                rule.name,
                rule.kind_name()
            );
        }
        return ExitCode::SUCCESS;
    }
    let mut breaker_note = None;
    for e in rules::explain(&loaded.config, &run, &view, Utc::now()) {
        outln!(
            "{} {:<22} {:<9} {}",
            if e.applies {
                "✔ applies "
            } else {
                "✘ no      "
            },
            e.rule,
            e.kind,
            e.detail
        );
        if e.applies && e.kind == "retention" {
            breaker_note.get_or_insert(e.rule);
        }
    }
    if let Some(rule) = breaker_note {
        // Only the run's branch was listed: the circuit breaker counts the whole sweep.
        outln!(
            "note: max_deletions counts every run the sweep would delete, in every branch; this looked at branch {} only. `runwarden plan --rule {rule}` shows whether the whole sweep stays under it.",
            run.branch().unwrap_or("-")
        );
    }
    ExitCode::SUCCESS
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
