//! `kind = "summary"` (SPEC §4), the decision seam only: a summary rule decides
//! [`Action::Summarize`] for a run event in its `events` whose run matches its filter.
//! Finding the pull request and rendering the comment or status live elsewhere.

use chrono::{DateTime, Utc};

use super::{Action, Decision, RunsView, Trigger, finish};
use crate::config::{Config, Rule, SummaryOptions};
use crate::currents::Run;

/// The canonical form of a Currents event name (`run_cancelled` -> `RUN_CANCELED`).
pub fn normalize_event(event: &str) -> String {
    let up = event.trim().to_ascii_uppercase();
    if up == "RUN_CANCELLED" {
        "RUN_CANCELED".into()
    } else {
        up
    }
}

/// The summary decision of one rule for one trigger (at most one).
pub fn decide(
    config: &Config,
    rule: &Rule,
    opts: &SummaryOptions,
    trigger: &Trigger,
    _view: &RunsView,
    _now: DateTime<Utc>,
) -> Vec<Decision> {
    let Trigger::RunSeen {
        run,
        event: Some(event),
    } = trigger
    else {
        return Vec::new();
    };
    let event = normalize_event(event);
    if !opts.events.contains(&event) || !rule.filter.matches(run) {
        return Vec::new();
    }
    let reason = format!("run event {event}");
    finish(vec![(
        run,
        Decision::new(config, rule, Action::Summarize, run, reason),
    )])
}

/// Summary rules act on run events: the run is covered when the filter matches (checked
/// by the caller).
pub fn explain(opts: &SummaryOptions, _run: &Run) -> (bool, String) {
    if opts.events.is_empty() {
        return (false, "no events configured".into());
    }
    (
        true,
        format!(
            "event-driven: summarizes this run on {}",
            opts.events.join(", ")
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_are_normalized() {
        assert_eq!(normalize_event(" run_finish "), "RUN_FINISH");
        assert_eq!(normalize_event("RUN_CANCELLED"), "RUN_CANCELED");
        assert_eq!(normalize_event("run_canceled"), "RUN_CANCELED");
    }
}
