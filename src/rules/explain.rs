//! `runwarden explain RUN_ID`: for each rule, does it apply to this run now, and if not,
//! which condition fails.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{RunsView, orphan, retention, summary, supersede, timeout};
use crate::config::{Config, RuleKind};
use crate::currents::Run;

/// One rule's answer about one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    pub rule: String,
    pub kind: &'static str,
    /// The rule would act on the run now (for summary rules: the run is covered).
    pub applies: bool,
    /// Why, or which condition fails: "filter: branch main does not match [...]",
    /// "run is COMPLETE, not IN_PROGRESS", "newest run of its group (...)",
    /// "running 12m < max_duration 45m", "created 3d ago < older_than 30d",
    /// "pinned by tag release", "event-driven: applies when a workflow_run completes ...".
    pub detail: String,
    /// The rule only records decisions.
    pub dry_run: bool,
}

/// Explains every rule of `config` for `run`, in config order. `view` holds the other
/// runs that matter (its group for supersede, its project's runs for retention, history
/// and progress for timeout); `run` may or may not be among them.
pub fn explain(
    config: &Config,
    run: &Run,
    view: &RunsView,
    now: DateTime<Utc>,
) -> Vec<Explanation> {
    config
        .rules
        .iter()
        .map(|rule| {
            let (applies, detail) = match rule.filter.check(run) {
                Err(why) => (false, format!("filter: {why}")),
                Ok(()) => match &rule.kind {
                    RuleKind::Supersede(o) => supersede::explain(rule, o, run, view, now),
                    RuleKind::Timeout(o) => timeout::explain(o, run, view, now),
                    RuleKind::Orphan(o) => orphan::explain(o, run),
                    RuleKind::Retention(o) => retention::explain(rule, o, run, view, now),
                    RuleKind::Summary(o) => summary::explain(o, run),
                },
            };
            Explanation {
                rule: rule.name.clone(),
                kind: rule.kind_name(),
                applies,
                detail,
                dry_run: rule.is_dry_run(config.dry_run),
            }
        })
        .collect()
}
