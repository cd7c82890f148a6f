//! `runwarden plan [--rule NAME] [--format table|json]`: read the runs from the API,
//! evaluate every rule now, print what would be done and why. Mutates nothing.
//!
//! Only in-progress runs are listed unless a selected rule needs the whole history (a
//! retention rule, or a timeout rule with `max_duration = "auto"`).
//! `idle_for` is judged from what the listing shows of each run: a run whose counters
//! show no completed spec has made no progress since `createdAt`; one with completed
//! specs has no spec times in a listing, so its idleness is unknown here (`explain RUN`
//! reads the run with its specs and judges it). `serve` dates a run it first sees from
//! its last spec completion or `createdAt`, and only a run listed with completed specs
//! from when it first saw it, so it may act later than `plan` says, never earlier.

use crate::commands::errln;
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Serialize;

use super::{Format, outln};
use crate::config::{Config, RuleKind, Secrets};
use crate::currents::{CompletionState, CurrentsClient, Run, RunFilter};
use crate::rules::{self, Decision, RunsView, retention};

/// One line of `plan --format json` (SPEC §1).
#[derive(Debug, Serialize)]
pub struct PlanItem {
    pub rule: String,
    pub kind: String,
    pub action: String,
    pub run_id: String,
    pub project_id: String,
    pub branch: Option<String>,
    pub sha: Option<String>,
    pub reason: String,
}

impl From<&Decision> for PlanItem {
    fn from(d: &Decision) -> Self {
        Self {
            rule: d.rule.clone(),
            kind: d.kind.to_string(),
            action: d.action.as_str().to_string(),
            run_id: d.run_id.clone(),
            project_id: d.project_id.clone(),
            branch: d.branch.clone(),
            sha: d.sha.clone(),
            reason: d.reason.clone(),
        }
    }
}

/// What `plan` read from the API.
pub struct Fetched<'c> {
    /// The runs the selected supersede and timeout rules need.
    pub runs: Vec<Run>,
    /// One retention sweep per selected retention rule, fed every run as it was listed.
    pub sweeps: Vec<retention::Sweep<'c>>,
    /// How many runs were listed.
    pub read: u64,
}

/// Lists the runs the selected rules need: every run when one of them is a retention rule
/// or has `max_duration = "auto"`, else only the in-progress ones (plus, for a
/// supersede rule, the finished runs newer than them).
///
/// Retention rules (those `rule` selects) decide as the pages arrive and hold no run.
/// Every listed run is kept only when a selected rule evaluates over the whole listing
/// (supersede, which counts finished newer runs too, or `max_duration = "auto"`, which
/// needs their durations); otherwise only the in-progress runs are.
pub async fn fetch<'c>(
    config: &'c Config,
    client: &CurrentsClient,
    rule: Option<&str>,
    now: DateTime<Utc>,
) -> anyhow::Result<Fetched<'c>> {
    let selected = || {
        config
            .rules
            .iter()
            .filter(|r| rule.is_none_or(|n| r.name == n))
    };
    // The whole history only for a selected rule that needs it: `plan --rule` of a
    // supersede rule lists the runs in progress (and the finished ones newer than
    // them), whatever other rules the config has.
    let need_all = selected().any(|r| {
        matches!(r.kind, RuleKind::Retention(_))
            || matches!(&r.kind, RuleKind::Timeout(t) if t.max_duration == Some(crate::config::MaxDuration::Auto))
    });
    let keep_all = selected().any(|r| {
        matches!(r.kind, RuleKind::Supersede(_))
            || matches!(&r.kind, RuleKind::Timeout(t) if t.max_duration == Some(crate::config::MaxDuration::Auto))
    });
    let mut sweeps: Vec<retention::Sweep<'c>> = selected()
        .filter_map(|r| match &r.kind {
            RuleKind::Retention(o) => Some(retention::Sweep::new(r, o, now)),
            _ => None,
        })
        .collect();
    let mut runs = Vec::new();
    let mut read = 0;
    for project in &config.currents.projects {
        let filter = if need_all {
            RunFilter::default()
        } else {
            RunFilter {
                completion_state: vec![CompletionState::InProgress],
                ..RunFilter::default()
            }
        };
        let before = runs.len();
        let mut s = client.list_runs(project, &filter);
        while let Some(r) = s.next().await {
            let r = r?;
            read += 1;
            for sweep in &mut sweeps {
                sweep.feed(&r);
            }
            if keep_all || r.is_in_progress() {
                runs.push(r);
            }
        }
        // Without a full listing, a supersede rule still sees the finished runs newer
        // than those in progress, as `serve`'s poll does.
        let oldest = runs[before..].iter().map(|r| r.created_at).min();
        if !need_all
            && let Some(oldest) = oldest
            && selected().any(|r| matches!(r.kind, RuleKind::Supersede(_)))
        {
            let filter = crate::intake::processor::finished_runs_filter(config, oldest, now);
            let mut s = client.list_runs(project, &filter);
            while let Some(r) = s.next().await {
                let r = r?;
                read += 1;
                if !r.is_in_progress() {
                    runs.push(r);
                }
            }
        }
    }
    Ok(Fetched { runs, sweeps, read })
}

/// Evaluates the plan: (decisions, retention breaches as text).
pub fn evaluate(
    config: &Config,
    fetched: Fetched<'_>,
    rule: Option<&str>,
    now: DateTime<Utc>,
) -> (Vec<Decision>, Vec<String>) {
    let history = rules::build_history(&fetched.runs);
    let progress = Default::default();
    let view = RunsView::new(&fetched.runs, &progress, &history);
    let eval = rules::plan_with(config, &view, fetched.sweeps, now);
    let decisions = eval
        .decisions
        .into_iter()
        .filter(|d| rule.is_none_or(|r| d.rule == r))
        .collect();
    let breaches = eval
        .breaches
        .iter()
        .filter(|b| rule.is_none_or(|r| b.rule == r))
        .map(|b| format!("rule {:?}: circuit breaker: would delete {} runs > max_deletions {}, so a sweep would delete none of them and exit 1", b.rule, b.would_delete, b.max))
        .collect();
    (decisions, breaches)
}

/// The selected rules that act on events rather than on the runs as they are now, so
/// that a plan has nothing to show for them: said once each, under the table.
pub fn event_driven_notes(config: &Config, rule: Option<&str>) -> Vec<String> {
    config
        .rules
        .iter()
        .filter(|r| rule.is_none_or(|n| r.name == n))
        .filter_map(|r| event_driven(r, "a plan"))
        .collect()
}

/// For a rule that acts on events rather than on the runs as they are now (summary,
/// orphan): that it does, and not on `what` (`a plan`, `a sweep`); `None` for the
/// others.
pub fn event_driven(r: &crate::config::Rule, what: &str) -> Option<String> {
    let events = match r.kind {
        RuleKind::Summary(_) => "run events (webhooks, or a poll seeing a run start or finish)",
        RuleKind::Orphan(_) => "GitHub workflow_run completed events",
        _ => return None,
    };
    Some(format!(
        "rule {:?} ({}) acts on {events}, not on {what}",
        r.name,
        r.kind_name()
    ))
}

/// For a rule that a sweep (`sweep --rule`, `POST /api/sweep/{rule}`) can do nothing for,
/// that it acts on events instead, as [`event_driven`] says it; `None` for the others.
/// An orphan rule acts only on GitHub `workflow_run` events. A summary rule is swept: the
/// poll of its sweep posts the summaries of runs it finds ended (a missed `RUN_FINISH`).
pub fn nothing_to_sweep(r: &crate::config::Rule) -> Option<String> {
    match r.kind {
        RuleKind::Orphan(_) => event_driven(r, "a sweep"),
        _ => None,
    }
}

/// Prints decisions as an aligned table ("nothing to do" when there are none).
pub fn print_table(decisions: &[Decision]) {
    if decisions.is_empty() {
        outln!("nothing to do");
        return;
    }
    outln!(
        "{:<22} {:<9} {:<8} {:<34} {:<24} reason",
        "rule",
        "kind",
        "action",
        "run",
        "branch"
    );
    for d in decisions {
        outln!(
            "{:<22} {:<9} {:<8} {:<34} {:<24} {}{}",
            d.rule,
            d.kind,
            d.action.as_str(),
            d.run_id,
            d.branch.as_deref().unwrap_or("-"),
            d.reason,
            if d.dry_run { " (dry run)" } else { "" }
        );
    }
}

/// Runs the command.
pub fn run(path: &std::path::Path, rule: Option<&str>, format: Format) -> ExitCode {
    let loaded = match super::load_config(path) {
        Ok(l) => l,
        Err(code) => return code,
    };
    if let Err(code) = super::check_rule_exists(path, &loaded.config, rule) {
        return code;
    }
    let secrets = Secrets::from_env();
    let client = match super::serve::currents_client(&loaded.config, &secrets) {
        Ok(c) => c,
        Err(e) => {
            errln!("runwarden plan: {e:#}");
            return ExitCode::from(super::EXIT_USAGE);
        }
    };
    let rt = super::runtime();
    let now = Utc::now();
    let fetched = match rt.block_on(fetch(&loaded.config, &client, rule, now)) {
        Ok(f) => f,
        Err(e) => {
            errln!("runwarden plan: cannot list runs: {e:#}");
            return ExitCode::from(super::EXIT_FAILED);
        }
    };
    let read = fetched.read;
    let (decisions, breaches) = evaluate(&loaded.config, fetched, rule, now);
    match format {
        Format::Json => {
            let items: Vec<PlanItem> = decisions.iter().map(PlanItem::from).collect();
            outln!(
                "{}",
                serde_json::to_string_pretty(&items).unwrap_or_else(|_| "[]".into())
            );
        }
        Format::Table => {
            // A tripped breaker is what a sweep would do: it belongs with the table, not
            // only in a warning (and "nothing to do" would hide it).
            if !decisions.is_empty() || breaches.is_empty() {
                print_table(&decisions);
            }
            for b in &breaches {
                outln!("{b}");
            }
            for note in event_driven_notes(&loaded.config, rule) {
                outln!("note: {note}");
            }
            errln!(
                "{}, {}, nothing changed",
                super::plural(read, "run read", "runs read"),
                super::plural(client.request_count(), "API request", "API requests")
            );
        }
    }
    if format == Format::Json {
        // stdout holds the JSON document alone.
        for b in &breaches {
            errln!("warning: {b}");
        }
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_driven_rules_get_a_note_instead_of_a_silent_gap() {
        let text = "[currents]\nprojects = [\"p\"]\n\
            [[rules]]\nname = \"sup\"\nkind = \"supersede\"\n\
            [[rules]]\nname = \"pr\"\nkind = \"summary\"\n\
            [[rules]]\nname = \"orph\"\nkind = \"orphan\"\n";
        let config = crate::config::load_str(text, "rules.toml", &[])
            .unwrap()
            .config;
        let notes = event_driven_notes(&config, None);
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[0].starts_with("rule \"pr\" (summary) acts on run events"));
        assert!(notes[1].starts_with("rule \"orph\" (orphan) acts on GitHub workflow_run"));
        assert!(event_driven_notes(&config, Some("sup")).is_empty());
        assert_eq!(event_driven_notes(&config, Some("orph")).len(), 1);
    }
}
