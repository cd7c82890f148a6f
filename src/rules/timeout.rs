//! `kind = "timeout"` (SPEC §4): cancel an `IN_PROGRESS` run that has run longer than
//! `max_duration` (from `createdAt`; fixed, or `"auto"` from history, see
//! [`super::history`]), or that has completed no spec for `idle_for`. Checked on every
//! poll ([`Trigger::Tick`]: every run of the view) and event ([`Trigger::RunSeen`]: that
//! run).
//!
//! When was the last progress? The latest of the server's [`ProgressSnapshot`]
//! (`changed_at`: when the completed-spec count last changed, see [`update_progress`])
//! and the latest `specs[].completedAt` of the run. With neither, a run whose counters
//! show no completed spec has made none since `createdAt`; otherwise progress is unknown
//! and `idle_for` does not apply.
//!
//! The first snapshot of a run does not start its idle clock at the moment the server
//! first sees it (a run created while the bot was down, or met by a fresh store, is as
//! idle as `plan` says): it dates the progress from what the run shows, the latest
//! `specs[].completedAt`, else `createdAt` when no spec has completed, else (specs
//! completed, their times unknown: a listing carries none) the time it is first seen.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::history::{history_key, too_few_note};
use super::{
    Action, Decision, ProgressSnapshot, RunsView, Trigger, auto_limit, finish, human_duration,
    not_in_progress, since,
};
use crate::config::{Config, MaxDuration, Rule, TimeoutOptions};
use crate::currents::Run;

/// The next progress snapshot of a run observed at `now`: `prev` unchanged while the
/// completed-spec count is the same, else the new count changed at `now`.
///
/// The first snapshot (`prev` is `None`) dates the run's last progress from the run
/// itself, not from when it is first seen: the latest `specs[].completedAt` when the run
/// shows one, else its `createdAt` when no spec has completed, else `now` (specs
/// completed at unknown times, as in a listing). Never later than `now`.
pub fn update_progress(
    prev: Option<&ProgressSnapshot>,
    run: &Run,
    now: DateTime<Utc>,
) -> ProgressSnapshot {
    let completed_specs = run.instance_counts().complete;
    match prev {
        Some(p) if p.completed_specs == completed_specs => *p,
        Some(_) => ProgressSnapshot {
            completed_specs,
            changed_at: now,
        },
        None => {
            let spec_done = run.specs.iter().filter_map(|s| s.completed_at).max();
            let since = match spec_done {
                Some(t) => t,
                None if completed_specs == 0 => run.created_at,
                None => now,
            };
            ProgressSnapshot {
                completed_specs,
                changed_at: since.min(now),
            }
        }
    }
}

/// When the run last made progress (see the module doc); `None`: unknown.
pub fn last_progress_at(run: &Run, snapshot: Option<&ProgressSnapshot>) -> Option<DateTime<Utc>> {
    let spec_done = run.specs.iter().filter_map(|s| s.completed_at).max();
    let known = match (snapshot.map(|s| s.changed_at), spec_done) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    known.or_else(|| {
        let c = run.instance_counts();
        (c.overall > 0 && c.complete == 0).then_some(run.created_at)
    })
}

/// One condition of a timeout rule: breached, and its description either way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub breached: bool,
    pub detail: String,
}

fn lt(a: Duration, b: Duration) -> &'static str {
    if a < b { "<" } else { "<=" }
}

/// Both conditions of the rule for an in-progress run.
pub fn conditions(
    opts: &TimeoutOptions,
    run: &Run,
    view: &RunsView,
    now: DateTime<Utc>,
) -> Vec<Condition> {
    let mut out = Vec::new();
    let elapsed = since(run.created_at, now);
    let e = human_duration(elapsed);
    match opts.max_duration {
        Some(MaxDuration::Fixed(max)) => {
            let m = human_duration(max);
            out.push(if elapsed > max {
                Condition {
                    breached: true,
                    detail: format!("in progress {e} > max_duration {m}"),
                }
            } else {
                Condition {
                    breached: false,
                    detail: format!("running {e} {} max_duration {m}", lt(elapsed, max)),
                }
            });
        }
        Some(MaxDuration::Auto) => {
            let key = history_key(run);
            let samples = view.history.get(&key).map(Vec::as_slice).unwrap_or(&[]);
            out.push(match auto_limit(samples, opts.auto_factor, opts.fallback) {
                Some((lim, why)) => {
                    let l = human_duration(lim);
                    if elapsed > lim {
                        Condition {
                            breached: true,
                            detail: format!("in progress {e} > auto limit {l} ({why})"),
                        }
                    } else {
                        Condition {
                            breached: false,
                            detail: format!(
                                "running {e} {} auto limit {l} ({why})",
                                lt(elapsed, lim)
                            ),
                        }
                    }
                }
                None => Condition {
                    breached: false,
                    detail: format!(
                        "max_duration auto sets no limit yet for {key} ({}, and no fallback)",
                        too_few_note(samples.len().min(super::HISTORY_WINDOW))
                    ),
                },
            });
        }
        None => {}
    }
    if let Some(idle_for) = opts.idle_for {
        let i = human_duration(idle_for);
        out.push(
            match last_progress_at(run, view.progress.get(&run.run_id)) {
                Some(t) => {
                    let idle = since(t, now);
                    let d = human_duration(idle);
                    Condition {
                        breached: idle > idle_for,
                        detail: if idle > idle_for {
                            format!("no spec completed for {d} > idle_for {i}")
                        } else {
                            format!(
                                "no spec completed for {d} {} idle_for {i}",
                                lt(idle, idle_for)
                            )
                        },
                    }
                }
                None => Condition {
                    breached: false,
                    detail: format!("idle_for {i}: no progress seen yet"),
                },
            },
        );
    }
    out
}

/// The reason to cancel `run`, when a condition is breached.
fn breach(opts: &TimeoutOptions, run: &Run, view: &RunsView, now: DateTime<Utc>) -> Option<String> {
    if !run.is_in_progress() {
        return None;
    }
    let hit: Vec<String> = conditions(opts, run, view, now)
        .into_iter()
        .filter(|c| c.breached)
        .map(|c| c.detail)
        .collect();
    (!hit.is_empty()).then(|| hit.join("; "))
}

/// The timeout decisions of one rule for one trigger, sorted by run `created_at`.
pub fn decide(
    config: &Config,
    rule: &Rule,
    opts: &TimeoutOptions,
    trigger: &Trigger,
    view: &RunsView,
    now: DateTime<Utc>,
) -> Vec<Decision> {
    let runs: Box<dyn Iterator<Item = &Run>> = match trigger {
        Trigger::RunSeen { run, .. } => Box::new(std::iter::once(run)),
        Trigger::Tick => Box::new(view.runs.iter()),
        _ => return Vec::new(),
    };
    let found = runs
        .filter(|r| r.is_in_progress() && rule.filter.matches(r))
        .filter_map(|r| {
            breach(opts, r, view, now)
                .map(|why| (r, Decision::new(config, rule, Action::Cancel, r, why)))
        })
        .collect();
    finish(found)
}

/// Whether the rule would cancel `run` now, and why (not). The caller has checked the
/// filter.
pub fn explain(
    opts: &TimeoutOptions,
    run: &Run,
    view: &RunsView,
    now: DateTime<Utc>,
) -> (bool, String) {
    if !run.is_in_progress() {
        return (false, not_in_progress(run));
    }
    let cs = conditions(opts, run, view, now);
    let applies = cs.iter().any(|c| c.breached);
    let detail = cs
        .into_iter()
        .map(|c| c.detail)
        .collect::<Vec<_>>()
        .join("; ");
    (applies, detail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, h, m, 0).unwrap()
    }

    fn run(complete: u64, overall: u64) -> Run {
        serde_json::from_value(serde_json::json!({
            "runId": "r", "projectId": "p", "createdAt": "2026-01-01T12:00:00Z",
            "completionState": "IN_PROGRESS",
            "groups": [{"groupId": "g", "instances": {"overall": overall, "complete": complete}}]
        }))
        .unwrap()
    }

    #[test]
    fn progress_snapshot_changes_only_when_the_count_does() {
        let first = update_progress(None, &run(1, 5), t(12, 5));
        assert_eq!(first.completed_specs, 1);
        assert_eq!(first.changed_at, t(12, 5));
        let same = update_progress(Some(&first), &run(1, 5), t(12, 30));
        assert_eq!(same, first);
        let moved = update_progress(Some(&first), &run(2, 5), t(12, 31));
        assert_eq!(moved.completed_specs, 2);
        assert_eq!(moved.changed_at, t(12, 31));
    }

    #[test]
    fn last_progress_is_the_latest_known_signal() {
        let snap = ProgressSnapshot {
            completed_specs: 1,
            changed_at: t(12, 10),
        };
        let mut r = run(1, 5);
        assert_eq!(last_progress_at(&r, Some(&snap)), Some(t(12, 10)));
        // unknown without snapshot once something completed
        assert_eq!(last_progress_at(&r, None), None);
        // a later spec completion wins
        r.specs.push(crate::currents::Spec {
            spec: "a".into(),
            completed_at: Some(t(12, 20)),
            ..Default::default()
        });
        assert_eq!(last_progress_at(&r, Some(&snap)), Some(t(12, 20)));
        assert_eq!(last_progress_at(&r, None), Some(t(12, 20)));
        // nothing completed: since creation
        assert_eq!(last_progress_at(&run(0, 5), None), Some(t(12, 0)));
        // no counters at all: unknown
        assert_eq!(last_progress_at(&run(0, 0), None), None);
    }

    /// The first snapshot dates progress from the run, not from when the bot first sees
    /// it: `createdAt` with no spec completed, the latest `completedAt` the run shows, else
    /// (completed specs, times unknown) `now`; never later than `now`. Later snapshots
    /// change only with the count, at `now`.
    #[test]
    fn a_first_snapshot_dates_progress_from_the_run_not_from_first_sight() {
        // Created 12:00, nothing completed, first seen at 14:00: idle since 12:00.
        let first = update_progress(None, &run(0, 5), t(14, 0));
        assert_eq!((first.completed_specs, first.changed_at), (0, t(12, 0)));
        assert_eq!(last_progress_at(&run(0, 5), Some(&first)), Some(t(12, 0)));
        // Unchanged count: the clock is not reset.
        assert_eq!(update_progress(Some(&first), &run(0, 5), t(14, 5)), first);
        // A spec completes: changed now.
        let moved = update_progress(Some(&first), &run(1, 5), t(14, 6));
        assert_eq!((moved.completed_specs, moved.changed_at), (1, t(14, 6)));
        // Completed specs with their times (a run read with its specs): the latest.
        let mut with_specs = run(2, 5);
        for m in [10, 25] {
            with_specs.specs.push(crate::currents::Spec {
                spec: format!("s{m}"),
                completed_at: Some(t(12, m)),
                ..Default::default()
            });
        }
        with_specs.specs.push(crate::currents::Spec {
            spec: "running".into(),
            ..Default::default()
        });
        let first = update_progress(None, &with_specs, t(14, 0));
        assert_eq!((first.completed_specs, first.changed_at), (2, t(12, 25)));
        // Completed specs without their times (a listing): first seen now.
        assert_eq!(
            update_progress(None, &run(2, 5), t(14, 0)).changed_at,
            t(14, 0)
        );
        // A createdAt ahead of the clock: not later than now.
        assert_eq!(
            update_progress(None, &run(0, 5), t(11, 0)).changed_at,
            t(11, 0)
        );
    }

    /// Through the rule: a run created 2h ago that has completed nothing, first seen now,
    /// is cancelled by the first check, as `plan` (no snapshot) says.
    #[test]
    fn a_run_first_seen_long_idle_is_cancelled_at_once() {
        let config = crate::config::load_str(
            "[currents]\nprojects = [\"p\"]\n[[rules]]\nname = \"idle\"\nkind = \"timeout\"\nidle_for = \"30m\"\n",
            "rules.toml",
            &[],
        )
        .unwrap()
        .config;
        let rule = &config.rules[0];
        let crate::config::RuleKind::Timeout(opts) = &rule.kind else {
            unreachable!()
        };
        let now = t(14, 0);
        let runs = [run(0, 5)];
        let mut progress = std::collections::HashMap::new();
        progress.insert("r".to_string(), update_progress(None, &runs[0], now));
        let history = std::collections::HashMap::new();
        let view = RunsView::new(&runs, &progress, &history);
        let d = decide(&config, rule, opts, &Trigger::Tick, &view, now);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].reason, "no spec completed for 2h > idle_for 30m");
        let plan = decide(
            &config,
            rule,
            opts,
            &Trigger::Tick,
            &RunsView::runs_only(&runs),
            now,
        );
        assert_eq!(plan, d);
    }
}
