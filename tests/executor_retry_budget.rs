//! The executor's production retry schedule (SPEC §6: retries with exponential backoff
//! and jitter; after the last attempt the action is `failed`). An outage of the API of
//! several minutes must not fail the actions that meet it for good: `serve` does not
//! decide them again (a poll does not re-arm a failed action), so a cancel or summary
//! failed then is lost.
//!
//! The end-to-end cases of "fails after the last attempt" (`tests/faults.rs`) shorten
//! this schedule through `ExecutorOptions`; this file checks production's own.

use std::time::Duration;

use runwarden::actions::{ExecutorOptions, MAX_ATTEMPTS, backoff_ceiling, retry_delay_with};

/// The shortest and longest total wait between the first and the last attempt of an
/// action that fails every time (the jitter keeps at least half of each ceiling).
fn budget(opts: &ExecutorOptions) -> (Duration, Duration) {
    let longest: Duration = (0..opts.max_attempts - 1)
        .map(|attempts| backoff_ceiling(opts, attempts))
        .sum();
    (longest / 2, longest)
}

#[test]
fn production_retries_outlast_an_outage_of_several_minutes() {
    let opts = ExecutorOptions::default();
    assert_eq!(opts.max_attempts, MAX_ATTEMPTS);
    let (shortest, longest) = budget(&opts);
    assert!(
        shortest >= Duration::from_secs(10 * 60),
        "an action failing every attempt is failed for good after as little as {shortest:?} (at most {longest:?})"
    );
    // Not for ever: a cause that stays is reported within the half hour.
    assert!(longest <= Duration::from_secs(30 * 60), "{longest:?}");
}

#[test]
fn production_backoff_doubles_from_one_second_up_to_five_minutes() {
    let opts = ExecutorOptions::default();
    let ceilings: Vec<u64> = (0..opts.max_attempts - 1)
        .map(|attempts| backoff_ceiling(&opts, attempts).as_secs())
        .collect();
    assert_eq!(ceilings[..9], [1, 2, 4, 8, 16, 32, 64, 128, 256]);
    // Capped at 5 min, and reached.
    assert!(ceilings[9..].iter().all(|c| *c == 300), "{ceilings:?}");
    assert!(!ceilings[9..].is_empty(), "{ceilings:?}");
    assert_eq!(backoff_ceiling(&opts, 1_000), Duration::from_secs(300));
    // The delays drawn keep to the upper half of each ceiling.
    for attempts in [0, 5, 9, opts.max_attempts - 2] {
        let ceiling = backoff_ceiling(&opts, attempts);
        for _ in 0..50 {
            let d = retry_delay_with(&opts, attempts, None);
            assert!(
                d >= ceiling / 2 && d <= ceiling,
                "{attempts}: {d:?} of {ceiling:?}"
            );
        }
    }
}
