//! `runwarden demo` as a newcomer runs it: the binary in an empty directory (so the
//! example rules.toml built into it), no credentials; its narration shows every rule
//! kind at work and it exits 0.

use std::process::Command;
use std::time::{Duration, Instant};

/// `runwarden demo` in `dir`, as a newcomer runs it: no credentials, no log filter, no
/// config named.
fn demo(dir: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_runwarden"));
    c.current_dir(dir)
        .arg("demo")
        .env_remove("RUNWARDEN_CONFIG")
        .env_remove("CURRENTS_API_KEY")
        .env_remove("GITHUB_TOKEN")
        .env_remove("RUST_LOG");
    c
}

#[test]
fn the_demo_narrates_every_chore_and_exits_0_quickly() {
    let empty = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = demo(empty.path()).args(["--speed", "8"]).output().unwrap();
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
    // The narration of the failing run and its commit status tell the same numbers.
    let told = stdout
        .lines()
        .find_map(|l| {
            l.split_once("finished: 2 of 6 spec files failed (")
                .map(|x| x.1)
        })
        .unwrap_or_else(|| panic!("no narration of the failing run in:\n{stdout}"));
    let (failed, passed) = told
        .strip_suffix(" passed)")
        .and_then(|t| t.split_once(" failed, "))
        .unwrap_or_else(|| panic!("unexpected narration {told:?}"));
    let failed = failed.trim_end_matches(" tests").trim_end_matches(" test");
    let status = format!("failure   Failed: {failed} failed, {passed} passed");
    assert!(
        stdout.lines().any(|l| l.contains(&status)),
        "the narration says {told:?} but no commit status reads {status:?}:\n{stdout}"
    );
    // The pinned release run survives retention; the summary table is printed.
    has("rule                   action");
    has("demo finished in");
}

/// A speed factor that is not a number greater than 0 is a usage error, said at once
/// (it used to stretch every pause a hundredfold, and the demo seemed to hang).
#[test]
fn a_speed_that_is_not_greater_than_0_is_a_usage_error() {
    let empty = tempfile::tempdir().unwrap();
    for speed in ["0", "-1", "nan", "inf"] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_runwarden"))
            .current_dir(empty.path())
            .args(["demo", &format!("--speed={speed}")])
            .env_remove("RUNWARDEN_CONFIG")
            .env_remove("RUST_LOG")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if started.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("demo --speed={speed} still running after 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--speed={speed}: {stderr}");
        assert!(
            stderr.contains("must be a number greater than 0"),
            "--speed={speed}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "--speed={speed}: the demo started");
    }
}

/// The demo plays the user's own `rules.toml`. Where those rules do not act on a scene
/// (a supersede rule for `release/*` only, an orphan rule with a 10-minute grace), it
/// says so rather than narrating what did not happen, and does not wait out every
/// scene: it still ends in under 30 s, with exit 0.
#[test]
fn the_demo_says_when_the_users_rules_do_not_act_on_a_scene() {
    let dir = tempfile::tempdir().unwrap();
    let example = include_str!("../rules.toml")
        .replace(
            "branches = [\"*\", \"!main\", \"!release/*\"]",
            "branches = [\"release/*\"]",
        )
        .replace("grace = \"2m\"", "grace = \"10m\"");
    assert!(example.contains("\"release/*\"]") && example.contains("\"10m\""));
    std::fs::write(dir.path().join("rules.toml"), example).unwrap();
    let started = Instant::now();
    let out = demo(dir.path()).args(["--speed", "8"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}:\n{stdout}",
        started.elapsed()
    );
    assert!(
        !stdout.contains("cancel-superseded: cancel run"),
        "{stdout}"
    );
    assert!(
        stdout.contains("no cancel: the rules of this rules.toml do not act on this"),
        "{stdout}"
    );
    assert!(
        stdout.contains("within the orphan rule's grace of 10m"),
        "{stdout}"
    );
    assert!(!stdout.contains("grace has passed"), "{stdout}");
}

/// An orphan rule about another workflow than the demo's CI job: the scene says that no
/// cancel came, although the run's end still gets its summary.
#[test]
fn the_demo_says_when_no_orphan_rule_is_about_its_ci_job() {
    let dir = tempfile::tempdir().unwrap();
    let example = include_str!("../rules.toml")
        .replace("workflows = [\"e2e.yml\"]", "workflows = [\"lint.yml\"]");
    assert!(example.contains("\"lint.yml\""));
    std::fs::write(dir.path().join("rules.toml"), example).unwrap();
    let out = demo(dir.path()).args(["--speed", "8"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(!stdout.contains("orphaned-runs: cancel run"), "{stdout}");
    assert!(
        stdout.contains("no cancel yet: the rules of this rules.toml do not act on this"),
        "{stdout}"
    );
}

/// A `rules.toml` without `[github] repos` still gets its PR comment in the demo: the
/// simulator's runs name a github.com remote, which is not the GitHub of the simulator's
/// API, so the demo maps the project as such a user would.
#[test]
fn the_demo_posts_its_comment_for_rules_without_a_repository_mapping() {
    let dir = tempfile::tempdir().unwrap();
    let example = include_str!("../rules.toml").replace("repos = { bAYZ4a = \"acme/web\" }\n", "");
    assert!(!example.contains("repos ="));
    std::fs::write(dir.path().join("rules.toml"), example).unwrap();
    let out = demo(dir.path()).args(["--speed", "8"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("<!-- runwarden:summary -->"), "{stdout}");
}

/// Ctrl-C (SIGINT) in the middle of the demo: it stops, exits 1, and leaves no
/// temporary store behind.
#[test]
fn an_interrupted_demo_leaves_no_temporary_files() {
    use std::io::BufRead as _;
    let empty = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut child = demo(empty.path())
        .env("TMPDIR", tmp.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Mid-way: once the first scene is told (the store exists by then).
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let line = lines.next().expect("the demo ended early").unwrap();
        if line.contains("the backlog") {
            break;
        }
        assert!(Instant::now() < deadline, "no first scene");
    }
    assert!(
        std::fs::read_dir(tmp.path()).unwrap().next().is_some(),
        "the demo's store is in TMPDIR while it plays"
    );
    // SAFETY: kill(2) on the pid of our own child, not reaped yet.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    std::thread::spawn(move || for _ in lines {});
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "{status}");
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// Ctrl-C (SIGINT) in the middle of `demo --keep-running`: the same as without it (it
/// was not listened for until the end, so the signal killed the demo and its temporary
/// store stayed behind): it stops, exits 1, and leaves nothing behind.
#[test]
fn an_interrupted_keep_running_demo_leaves_no_temporary_files() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut child, lines, _cwd) = demo_until(tmp.path(), &["--keep-running"], "the backlog");
    // SAFETY: kill(2) on the pid of our own child, not reaped yet.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    std::thread::spawn(move || for _ in lines {});
    let status = wait_within(&mut child, Duration::from_secs(30));
    assert_eq!(status.code(), Some(1), "{status}");
    assert_no_files_left(tmp.path());
}

/// Kept up at its end, `demo --keep-running` is stopped by Ctrl-C or by SIGTERM (as a
/// terminal or a container stops it): the bot and the simulator are shut down, its
/// temporary store removed, and it exits 0 (the demo itself went well).
#[test]
fn a_kept_up_demo_stops_cleanly_on_sigint_and_sigterm() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        let tmp = tempfile::tempdir().unwrap();
        let (mut child, lines, _cwd) = demo_until(
            tmp.path(),
            &["--keep-running", "--speed", "8"],
            "keeping the bot and simulator up",
        );
        // SAFETY: kill(2) on the pid of our own child, not reaped yet.
        assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
        std::thread::spawn(move || for _ in lines {});
        let status = wait_within(&mut child, Duration::from_secs(30));
        assert_eq!(status.code(), Some(0), "signal {signal}: {status}");
        assert_no_files_left(tmp.path());
    }
}

/// The demo's process, the rest of its stdout, and its (empty) working directory.
type Started = (
    std::process::Child,
    std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
    tempfile::TempDir,
);

/// `runwarden demo ARGS` in an empty directory with `TMPDIR` = `tmp`, read up to its
/// first stdout line containing `marker` (within 60 s); the store is in `tmp` by then.
fn demo_until(tmp: &std::path::Path, args: &[&str], marker: &str) -> Started {
    use std::io::BufRead as _;
    let empty = tempfile::tempdir().unwrap();
    let mut child = demo(empty.path())
        .args(args)
        .env("TMPDIR", tmp)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let line = lines.next().expect("the demo ended early").unwrap();
        if line.contains(marker) {
            break;
        }
        assert!(Instant::now() < deadline, "no {marker:?} line");
    }
    assert!(
        std::fs::read_dir(tmp).unwrap().next().is_some(),
        "the demo's store is in TMPDIR while it plays"
    );
    (child, lines, empty)
}

/// Waits for `child` to exit within `limit`; kills it and fails otherwise.
fn wait_within(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn assert_no_files_left(tmp: &std::path::Path) {
    let left: Vec<_> = std::fs::read_dir(tmp)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
