//! The command line as a shell uses it: bad usage exits 2 before any work (an empty
//! `RUNWARDEN_CONFIG`, a bad `RUN_ID`, a `GITHUB_APP_ID` that is not a number), and an
//! error written to a closed stderr (`runwarden check 2>&1 | true`) neither panics nor
//! aborts.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A valid config with no rules; the API at a port nothing listens on, so that a
/// command that reached it would fail (exit 1), not hang.
const CONFIG: &str = "[currents]\napi_url = \"http://127.0.0.1:9/v1\"\nprojects = [\"bAYZ4a\"]\nrequest_timeout = \"2s\"\n";

struct Dir {
    dir: tempfile::TempDir,
}

impl Dir {
    /// A directory holding `rules.toml` (and a store URL inside it).
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store.db");
        std::fs::write(
            dir.path().join("rules.toml"),
            format!("{CONFIG}[store]\nurl = \"sqlite://{}\"\n", store.display()),
        )
        .unwrap();
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn config(&self) -> PathBuf {
        self.path().join("rules.toml")
    }

    /// `runwarden ARGS` in this directory, with none of the caller's runwarden or
    /// GitHub variables.
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_runwarden"));
        c.args(args).current_dir(self.path()).stdin(Stdio::null());
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy().into_owned();
            if k.starts_with("RUNWARDEN") || k.starts_with("GITHUB_") || k == "CURRENTS_API_KEY" {
                c.env_remove(&k);
            }
        }
        c.env_remove("RUST_LOG");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `c` with its stderr the write end of a pipe whose read end is already closed (a
/// write gets EPIPE, as after `2>&1 | true`), stdout to /dev/null.
#[cfg(unix)]
fn run_with_closed_stderr(mut c: Command) -> std::process::ExitStatus {
    use std::os::fd::{FromRawFd, OwnedFd};
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe(2) writes.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both descriptors were just created and are owned here alone.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    c.stdout(Stdio::null()).stderr(Stdio::from(write));
    c.status().unwrap()
}

/// `runwarden --config nope.toml check 2>&1 | true` aborted with 134: its error went
/// through `eprintln!`, which panics on a closed stderr, and the panic hook's log line
/// panicked again. The error is dropped; the exit code is the usual one.
#[cfg(unix)]
#[test]
fn an_error_written_to_a_closed_stderr_keeps_its_exit_code() {
    use std::os::unix::process::ExitStatusExt;
    let d = Dir::new();
    let nope = d.path().join("nope.toml");
    let nope = nope.to_str().unwrap();
    let config = d.config();
    let config = config.to_str().unwrap();
    let mut bad_config = d.command(&["--config", config, "check"]);
    bad_config.env("RUNWARDEN__CURRENTS__POLL_INTERVAL", "1ms");
    let mut bad_app_id = d.command(&["--config", config, "check"]);
    bad_app_id.env("GITHUB_APP_ID", "abc");
    // No CURRENTS_API_KEY: explain's own error.
    let no_key = d.command(&["--config", config, "explain", "abc123"]);
    let unknown_rule = {
        let mut c = d.command(&["--config", config, "plan", "--rule", "nope"]);
        c.env("CURRENTS_API_KEY", "k");
        c
    };
    for (what, c, want) in [
        ("missing config", d.command(&["--config", nope, "check"]), 2),
        ("invalid config", bad_config, 2),
        ("GITHUB_APP_ID", bad_app_id, 2),
        ("explain without a key", no_key, 2),
        ("plan --rule of no rule", unknown_rule, 2),
        // clap's own errors never panicked; kept so.
        ("bad usage", d.command(&["explain", ""]), 2),
    ] {
        let status = run_with_closed_stderr(c);
        assert_eq!(
            status.code(),
            Some(want),
            "{what}: {status:?} (signal {:?})",
            status.signal()
        );
    }
}

/// A log line that cannot be written (stderr gone) was reported by tracing-subscriber with
/// `eprintln!`, which panicked inside the panic hook: the process aborted (SIGABRT, 134).
/// `serve` logs its warnings before anything else; it must end with an exit code, not a
/// signal.
#[cfg(unix)]
#[test]
fn a_log_line_to_a_closed_stderr_does_not_abort_the_process() {
    use std::os::unix::process::ExitStatusExt;
    let d = Dir::new();
    let config = d.config();
    let mut c = d.command(&["--config", config.to_str().unwrap(), "serve"]);
    // No CURRENTS_API_KEY: serve logs its warnings, then refuses to start.
    c.env("RUNWARDEN_LOG_FORMAT", "json");
    let status = run_with_closed_stderr(c);
    assert_eq!(status.signal(), None, "{status:?}");
    assert_ne!(status.code(), Some(134), "{status:?}");
}

/// `RUNWARDEN_CONFIG= runwarden check` (the variable set but empty, as a compose file's
/// `${RUNWARDEN_CONFIG}` leaves it) was a clap error about `--config`: an empty value
/// counts as unset, and `rules.toml` is read.
#[test]
fn an_empty_runwarden_config_counts_as_unset() {
    let d = Dir::new();
    for empty in ["", "  "] {
        let out = d
            .command(&["check"])
            .env("RUNWARDEN_CONFIG", empty)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{empty:?}: {}", stderr(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("rules.toml: ok"), "{empty:?}: {stdout}");
    }
    // A value is still used, and `--config` still wins over it.
    std::fs::write(d.path().join("other.toml"), "[currents]\nprojects = []\n").unwrap();
    let out = d
        .command(&["check"])
        .env("RUNWARDEN_CONFIG", "other.toml")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).starts_with("other.toml:"), "{}", stderr(&out));
    let out = d
        .command(&["--config", "rules.toml", "check"])
        .env("RUNWARDEN_CONFIG", "other.toml")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // An explicit empty `--config` is still bad usage.
    let out = d.run(&["--config", "", "check"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--config"), "{}", stderr(&out));
}

/// `runwarden explain ""` asked the API for run "" and exited 1: a run id that cannot be
/// one is bad usage (2), told by clap before the config or the API is read.
#[test]
fn a_run_id_that_cannot_be_one_is_a_usage_error() {
    let d = Dir::new();
    for bad in [
        "",
        " ",
        "runs/abc",
        "https://app.currents.dev/run/abc",
        "a b",
    ] {
        let out = d
            .command(&["explain", bad])
            .env("CURRENTS_API_KEY", "k")
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {err}");
        assert!(
            err.contains("RUN_ID") && err.contains("run id"),
            "{bad:?}: {err}"
        );
    }
}

/// `GITHUB_APP_ID=abc` was dropped as if unset, and the error then said it was not set:
/// it is refused as not a number (exit 2, as other credential errors), never shown.
#[test]
fn a_github_app_id_that_is_not_a_number_is_a_usage_error() {
    let d = Dir::new();
    for args in [&["check"][..], &["sweep", "--dry-run"][..]] {
        let out = d
            .command(args)
            .env("GITHUB_APP_ID", "Iv1.abc")
            .env("GITHUB_APP_PRIVATE_KEY", "/nonexistent.pem")
            .env("CURRENTS_API_KEY", "k")
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.starts_with(&format!(
                "runwarden {}: GITHUB_APP_ID is not a number",
                args[0]
            )),
            "{args:?}: {err}"
        );
        assert!(!err.contains("Iv1.abc"), "{err}");
    }
    // Empty is unset, as for the other variables.
    let out = d
        .command(&["check"])
        .env("GITHUB_APP_ID", "")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// GitHub App credentials `serve` and `sweep` refuse (an App id without its key, a key
/// path that does not exist) are refused by `check` too, with the same message and
/// exit 2: `check` passing means they start.
#[test]
fn github_app_credentials_serve_refuses_are_refused_by_check_alike() {
    let d = Dir::new();
    let missing = d.path().join("no-such-key.pem");
    let missing = missing.to_str().unwrap();
    for (vars, why) in [
        (
            &[("GITHUB_APP_ID", "123")][..],
            "GITHUB_APP_ID is set but GITHUB_APP_PRIVATE_KEY is not",
        ),
        (
            &[
                ("GITHUB_APP_ID", "123"),
                ("GITHUB_APP_PRIVATE_KEY", missing),
            ][..],
            "GITHUB_APP_PRIVATE_KEY is neither an RSA PEM private key nor a readable PEM file",
        ),
    ] {
        let message = |args: &[&str]| {
            let mut c = d.command(args);
            c.env("CURRENTS_API_KEY", "k");
            for (k, v) in vars {
                c.env(k, v);
            }
            let out = c.output().unwrap();
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(2), "{args:?} {vars:?}: {err}");
            assert!(err.contains(why), "{args:?} {vars:?}: {err}");
            // The message after the command's name (`serve` logs its warnings first).
            err.lines()
                .find_map(|l| l.strip_prefix(&format!("runwarden {}: ", args[0])))
                .unwrap_or_else(|| panic!("{args:?} {vars:?}: {err}"))
                .to_string()
        };
        let check = message(&["check"]);
        assert!(check.starts_with("GitHub credentials: "), "{check}");
        assert_eq!(check, message(&["serve"]), "{vars:?}");
        assert_eq!(check, message(&["sweep", "--dry-run"]), "{vars:?}");
    }
}

/// Credentials `serve` accepts pass `check` too: a token, or none (`check` builds the
/// GitHub client as `serve` does, which once panicked outside a runtime).
#[test]
fn github_credentials_serve_accepts_pass_check() {
    let d = Dir::new();
    for vars in [&[("GITHUB_TOKEN", "ghp_example")][..], &[][..]] {
        let mut c = d.command(&["check"]);
        for (k, v) in vars {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(0), "{vars:?}: {err}");
        assert!(!err.contains("panic"), "{vars:?}: {err}");
    }
}

/// Waits for `child` to exit within 30 s; one still running then (a simulator serving
/// when it should have refused to start) is killed and the test fails.
fn exit_within_deadline(mut child: std::process::Child, what: &str) -> Output {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("{what}: still running after 30 s: {}", stderr(&out));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// `simulate` read its config with the error dropped: an invalid one was silently
/// replaced by the defaults (another dashboard URL and webhook header than the bot's,
/// whose webhooks the bot then refuses). An invalid config is an error, exit 2 with its
/// `PATH:LINE:COL: message`, as for every command; without a config file the simulator
/// still starts, on its defaults.
#[test]
fn simulate_with_an_invalid_config_is_a_usage_error_and_without_one_starts() {
    let d = Dir::new();
    std::fs::write(
        d.config(),
        "[currents]\nprojects = [\"bAYZ4a\"]\nwebhook_headr = \"x-my-secret\"\n",
    )
    .unwrap();
    let child = d
        .command(&["simulate", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = exit_within_deadline(child, "simulate with an invalid config");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.starts_with("rules.toml:3") && err.contains("webhook_headr"),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "it never served");
    // No config file at all: the defaults, and it serves; a config named that is not
    // there is said on stderr.
    std::fs::remove_file(d.config()).unwrap();
    for (args, warned) in [
        (&["simulate", "--listen", "127.0.0.1:0"][..], false),
        (
            &[
                "--config",
                "nope.toml",
                "simulate",
                "--listen",
                "127.0.0.1:0",
            ][..],
            true,
        ),
    ] {
        let mut child = d
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut first,
        )
        .unwrap();
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        let err = stderr(&out);
        assert!(
            first.starts_with("runwarden simulator listening on "),
            "{args:?}: {first:?} {err}"
        );
        assert_eq!(
            err.contains("runwarden simulate: nope.toml: no such file; using the default"),
            warned,
            "{args:?}: {err}"
        );
    }
}
