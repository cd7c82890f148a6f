//! `runwarden demo` as a newcomer runs it: the binary in an empty directory (so the
//! example rules.toml built into it), no credentials; its narration shows every rule
//! kind at work and it exits 0.

use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn the_demo_narrates_every_chore_and_exits_0_quickly() {
    let empty = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_runwarden"))
        .current_dir(empty.path())
        .args(["demo", "--speed", "8"])
        .env_remove("RUNWARDEN_CONFIG")
        .env_remove("CURRENTS_API_KEY")
        .env_remove("GITHUB_TOKEN")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    let has = |needle: &str| {
        assert!(stdout.contains(needle), "missing {needle:?} in:\n{stdout}");
    };
    has("No policy file at rules.toml: playing with the example rules built into runwarden.");
    has("cancel-superseded: cancel run");
    has("superseded by push of 2b2b2b2 to feat/login");
    has("stuck-runs: cancel run");
    has("auto limit");
    has("orphaned-runs: cancel run");
    has("CI workflow run");
    has("nightly-retention: delete run");
    has("pr-summary: summarize run");
    // Every cancel and delete was carried out.
    let done = stdout.matches(": done (").count();
    assert!(done >= 3 + 20, "only {done} actions done:\n{stdout}");
    assert!(!stdout.contains(": failed ("), "{stdout}");
    // The pinned release run survives retention; the summary table is printed.
    has("rule                   action");
    has("demo finished in");
}
