//! Duration history for `max_duration = "auto"` (SPEC §4 timeout): `auto_factor` times
//! the 95th percentile duration of the last 50 completed passed runs of the same project
//! and branch, or `fallback` with fewer than 10 of them.

use std::collections::HashMap;
use std::time::Duration;

use crate::currents::{CompletionState, Run, RunStatus};

/// How many of the newest samples count.
pub const HISTORY_WINDOW: usize = 50;
/// Fewer samples than this: `fallback`.
pub const HISTORY_MIN_SAMPLES: usize = 10;

/// The history group of a run: `project:branch` (an empty branch when unknown).
pub fn history_key(run: &Run) -> String {
    format!("{}:{}", run.project_id, run.branch().unwrap_or(""))
}

/// Whether a run counts as a history sample: `COMPLETE`, `PASSED`, with a duration.
pub fn is_sample(run: &Run) -> bool {
    run.completion_state == CompletionState::Complete
        && run.status == RunStatus::Passed
        && run.duration_ms.is_some()
}

/// Builds the history map from a list of runs (for `plan` and `sweep`, which read runs
/// from the API): per [`history_key`], the `durationMs` of completed passed runs, newest
/// first, at most [`HISTORY_WINDOW`] each.
pub fn build_history(runs: &[Run]) -> HashMap<String, Vec<Duration>> {
    let mut groups: HashMap<String, Vec<&Run>> = HashMap::new();
    for r in runs.iter().filter(|r| is_sample(r)) {
        groups.entry(history_key(r)).or_default().push(r);
    }
    groups
        .into_iter()
        .map(|(k, mut v)| {
            v.sort_by(|a, b| (b.created_at, &b.run_id).cmp(&(a.created_at, &a.run_id)));
            let d = v
                .into_iter()
                .take(HISTORY_WINDOW)
                .filter_map(|r| r.duration_ms.map(Duration::from_millis))
                .collect();
            (k, d)
        })
        .collect()
}

/// The 95th percentile (nearest rank: the `ceil(0.95 n)`-th smallest) of `samples`;
/// `None` when empty.
pub fn p95(samples: &[Duration]) -> Option<Duration> {
    if samples.is_empty() {
        return None;
    }
    let mut v = samples.to_vec();
    v.sort_unstable();
    let rank = (v.len() * 95).div_ceil(100);
    Some(v[rank.max(1) - 1])
}

/// The auto limit and how it was derived, from `samples` (newest first; the first
/// [`HISTORY_WINDOW`] count): `factor × p95` with at least [`HISTORY_MIN_SAMPLES`]
/// samples ("3 × p95 13m40s of 23 passed runs"), else `fallback` ("fallback: 4 passed
/// runs, fewer than 10"), else `None`. The limit is rounded to whole seconds.
pub fn auto_limit(
    samples: &[Duration],
    factor: f64,
    fallback: Option<Duration>,
) -> Option<(Duration, String)> {
    let window = &samples[..samples.len().min(HISTORY_WINDOW)];
    if window.len() < HISTORY_MIN_SAMPLES {
        return fallback.map(|f| (f, fallback_note(window.len())));
    }
    let p = p95(window)?;
    // Saturating: a large factor times a long history must not panic.
    let limit = Duration::try_from_secs_f64((p.as_secs_f64() * factor).round().max(0.0))
        .unwrap_or(Duration::MAX);
    Some((
        limit,
        format!(
            "{factor} × p95 {} of {} passed runs",
            super::human_duration(p),
            window.len()
        ),
    ))
}

fn fallback_note(n: usize) -> String {
    format!("fallback: {}", too_few_note(n))
}

/// "4 passed runs, fewer than 10".
pub(crate) fn too_few_note(n: usize) -> String {
    format!(
        "{n} passed run{}, fewer than {HISTORY_MIN_SAMPLES}",
        if n == 1 { "" } else { "s" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|s| Duration::from_secs(*s)).collect()
    }

    #[test]
    fn p95_is_the_nearest_rank() {
        // 1..=20: ceil(19) = 19th smallest.
        let v = secs(&(1..=20).rev().collect::<Vec<_>>());
        assert_eq!(p95(&v), Some(Duration::from_secs(19)));
        // 10 samples: ceil(9.5) = 10th, the maximum.
        assert_eq!(
            p95(&secs(&[5, 1, 2, 3, 4, 6, 7, 8, 9, 100])),
            Some(Duration::from_secs(100))
        );
        assert_eq!(p95(&secs(&[7])), Some(Duration::from_secs(7)));
        assert_eq!(p95(&[]), None);
        // 100 samples: the 95th.
        let v = secs(&(1..=100).collect::<Vec<_>>());
        assert_eq!(p95(&v), Some(Duration::from_secs(95)));
    }

    #[test]
    fn auto_limit_multiplies_the_p95_and_explains_it() {
        let mut v = secs(&[600; 22]);
        v.push(Duration::from_secs(13 * 60 + 40));
        v.sort();
        v.reverse();
        let (lim, why) = auto_limit(&v, 3.0, None).unwrap();
        // 23 samples: rank ceil(21.85) = 22 -> 600s; 3 × 600 = 30m
        assert_eq!(lim, Duration::from_secs(1800));
        assert_eq!(why, "3 × p95 10m of 23 passed runs");
        let (lim, why) = auto_limit(&secs(&[820; 23]), 3.0, None).unwrap();
        assert_eq!(lim, Duration::from_secs(2460));
        assert_eq!(why, "3 × p95 13m40s of 23 passed runs");
        let (lim, why) = auto_limit(&secs(&[100; 10]), 2.5, None).unwrap();
        assert_eq!(lim, Duration::from_secs(250));
        assert_eq!(why, "2.5 × p95 1m40s of 10 passed runs");
    }

    #[test]
    fn auto_limit_with_fewer_than_ten_samples_uses_the_fallback() {
        let fb = Duration::from_secs(2700);
        let (lim, why) = auto_limit(&secs(&[60; 9]), 3.0, Some(fb)).unwrap();
        assert_eq!(lim, fb);
        assert_eq!(why, "fallback: 9 passed runs, fewer than 10");
        assert_eq!(auto_limit(&secs(&[60; 9]), 3.0, None), None);
        assert_eq!(auto_limit(&[], 3.0, None), None);
        assert_eq!(
            auto_limit(&secs(&[60]), 3.0, Some(fb)).unwrap().1,
            "fallback: 1 passed run, fewer than 10"
        );
    }

    #[test]
    fn auto_limit_only_counts_the_newest_fifty() {
        // 50 newest at 10s, 100 older at 1000s: the old ones are ignored.
        let mut v = secs(&[10; 50]);
        v.extend(secs(&[1000; 100]));
        let (lim, why) = auto_limit(&v, 3.0, None).unwrap();
        assert_eq!(lim, Duration::from_secs(30));
        assert!(why.ends_with("of 50 passed runs"), "{why}");
    }
}
