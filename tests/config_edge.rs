//! `rules.toml` edge cases: a non-UTF-8 environment, secrets in store URLs, errors after
//! the rules, empty and negated filter lists, drastic "0s" durations, missing sections
//! and rules overridden from the environment.

use std::ffi::OsString;
use std::process::Command;

use runwarden::config::{load_str, overrides_from};

const BASE: &str = "[currents]\nprojects = [\"bAYZ4a\"]\n";

fn err(text: &str) -> String {
    load_str(text, "rules.toml", &[]).unwrap_err().to_string()
}

fn warnings(text: &str) -> Vec<String> {
    load_str(text, "rules.toml", &[])
        .unwrap_or_else(|e| panic!("{e}"))
        .warnings
        .iter()
        .map(|w| w.to_string())
        .collect()
}

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_runwarden"));
    for v in [
        "RUNWARDEN_CURRENTS_WEBHOOK_SECRET",
        "RUNWARDEN_GITHUB_WEBHOOK_SECRET",
        "GITHUB_TOKEN",
        "RUNWARDEN_CONFIG",
    ] {
        c.env_remove(v);
    }
    c
}

#[cfg(unix)]
fn non_utf8(bytes: &[u8]) -> OsString {
    use std::os::unix::ffi::OsStringExt;
    OsString::from_vec(bytes.to_vec())
}

/// `runwarden check` on a file holding `text`, with extra environment variables.
fn check_with_env(text: &str, env: &[(OsString, OsString)]) -> (String, std::process::Output) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rules.toml");
    std::fs::write(&path, text).unwrap();
    let mut c = bin();
    c.arg("--config").arg(&path).arg("check");
    for (k, v) in env {
        c.env(k, v);
    }
    (path.display().to_string(), c.output().unwrap())
}

/// An unrelated variable that is not UTF-8 (a locale-encoded path, say) must not stop
/// the config from loading: `std::env::vars()` panicked on it.
#[cfg(unix)]
#[test]
fn a_non_utf8_environment_variable_does_not_break_check() {
    let (_, out) = check_with_env(
        BASE,
        &[(
            "RW_TEST_LATIN1_PATH".into(),
            non_utf8(b"/home/j\xf6rg/caf\xe9"),
        )],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// A `RUNWARDEN__*` override whose value is not UTF-8 is a config error naming the
/// variable, without its value.
#[cfg(unix)]
#[test]
fn a_non_utf8_override_is_a_config_error_naming_the_variable() {
    let (_, out) = check_with_env(
        BASE,
        &[(
            "RUNWARDEN__STORE__URL".into(),
            non_utf8(b"postgres://rw:s3cr\xe9t@db/rw"),
        )],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.starts_with("RUNWARDEN__STORE__URL: the value is not valid UTF-8"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cr"), "{stderr}");

    // The same, without a process: only RUNWARDEN__* variables are kept.
    let env = overrides_from(vec![
        (OsString::from("OTHER"), non_utf8(b"\xff")),
        (non_utf8(b"ALSO\xff"), OsString::from("x")),
        (
            OsString::from("RUNWARDEN__CURRENTS__POLL_INTERVAL"),
            OsString::from("30s"),
        ),
    ])
    .unwrap();
    assert_eq!(
        env,
        [(
            "RUNWARDEN__CURRENTS__POLL_INTERVAL".to_string(),
            "30s".to_string()
        )]
    );
    let e = overrides_from(vec![(
        OsString::from("RUNWARDEN__CURRENTS__API_URL"),
        non_utf8(b"http://x\xff"),
    )])
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("RUNWARDEN__CURRENTS__API_URL: "), "{e}");
    assert!(!e.contains("http://x"), "{e}");
}

fn store_debug(url: &str) -> String {
    let text = format!("{BASE}[store]\nurl = {url:?}\n");
    let config = load_str(&text, "rules.toml", &[])
        .unwrap_or_else(|e| panic!("{e}"))
        .config;
    format!("{config:?}")
}

#[test]
fn store_url_passwords_never_reach_debug_output() {
    for url in [
        "postgres://rw@db.internal/runwarden?password=hunter2",
        "postgres://rw@db.internal/runwarden?sslmode=require&password=hunter2",
        "postgres://rw@db.internal/runwarden?sslpassword=hunter2&sslmode=verify-full",
        "postgresql://rw@db.internal/runwarden?PASSWORD=hunter2",
        "postgres://rw@db.internal/runwarden?pass%77ord=hunter2",
        "postgres://rw:hunter2@db.internal:5432/runwarden",
        "postgres://rw:hunter2@[bad/runwarden",
    ] {
        let d = store_debug(url);
        assert!(!d.contains("hunter2"), "{url}: {d}");
    }
    let d = store_debug("postgres://rw:hunter2@db.internal:5432/runwarden?sslmode=require");
    assert!(
        d.contains("postgres://rw:***@db.internal:5432/runwarden?sslmode=require"),
        "{d}"
    );
    let d = store_debug("postgres://rw@db/x?sslmode=require&password=hunter2");
    assert!(
        d.contains("postgres://rw@db/x?sslmode=require&password=***"),
        "{d}"
    );
    // Nothing secret: shown as is.
    assert!(store_debug("sqlite://data/rw.db?mode=rwc").contains("sqlite://data/rw.db?mode=rwc"));
}

#[test]
fn an_error_in_a_section_after_the_rules_is_not_blamed_on_the_last_rule() {
    let rules = "[[rules]]\nname = \"cancel-superseded\"\nkind = \"supersede\"\n[rules.match]\nbranches = [\"*\"]\n";
    let e = err(&format!("{BASE}{rules}[store]\nurll = \"sqlite://x.db\"\n"));
    assert!(e.starts_with("rules.toml:9:1: unknown key \"urll\""), "{e}");
    assert!(e.contains("did you mean \"url\""), "{e}");
    assert!(!e.contains("rule \""), "{e}");
    // A wrong type after the rules names the key, not a rule.
    let e = err(&format!("{BASE}{rules}[server]\nlisten = 8080\n"));
    assert!(e.starts_with("rules.toml:9:10: listen: "), "{e}");
    assert!(!e.contains("rule \""), "{e}");
    // A dotted section header after the rules.
    let e = err(&format!("{BASE}{rules}[github.repos]\nbAYZ4a = 1\n"));
    assert!(!e.contains("rule \""), "{e}");
    // Still named: an error in [rules.match], and in a second rule after [store].
    let e = err(&format!("{BASE}{rules}brnches = [\"x\"]\n"));
    assert!(
        e.starts_with("rules.toml:8:1: rule \"cancel-superseded\": unknown key \"brnches\""),
        "{e}"
    );
    let e = err(&format!(
        "{BASE}{rules}[store]\nurl = \"sqlite://x.db\"\n[[rules]]\nname = \"second\"\nkind = \"timeout\"\nidle_for = 5\n"
    ));
    assert!(
        e.starts_with("rules.toml:13:12: rule \"second\": idle_for: "),
        "{e}"
    );
}

#[test]
fn an_empty_match_list_is_an_error() {
    for (key, what) in [
        ("projects", "runs of every project"),
        ("branches", "runs on every branch"),
        ("tags", "runs whatever their tags"),
        ("authors", "runs by every author"),
        ("statuses", "runs of every status"),
        ("completion_states", "runs in every completion state"),
        ("frameworks", "runs of every framework"),
    ] {
        let e = err(&format!(
            "{BASE}[[rules]]\nname = \"old\"\nkind = \"retention\"\nolder_than = \"30d\"\n[rules.match]\n{key} = []\n"
        ));
        assert_eq!(
            e,
            format!(
                "rules.toml:8:1: rule \"old\": match.{key}: the list is empty; remove the key to match {what}, or list at least one value"
            )
        );
    }
}

#[test]
fn drastic_zero_durations_warn() {
    let w = warnings("[currents]\nprojects = [\"bAYZ4a\"]\nwebhook_tolerance = \"0s\"\n");
    assert!(
        w.iter().any(
            |w| w.starts_with("rules.toml:3: [currents] webhook_tolerance = \"0s\"")
                && w.contains("401")
        ),
        "{w:?}"
    );
    let w = warnings(&format!(
        "{BASE}[[rules]]\nname = \"stuck\"\nkind = \"timeout\"\nmax_duration = \"0s\"\nidle_for = \"0s\"\n"
    ));
    for (line, key) in [(6, "max_duration"), (7, "idle_for")] {
        assert!(
            w.iter().any(|w| w.starts_with(&format!(
                "rules.toml:{line}: rule \"stuck\": {key} = \"0s\": cancels every in-progress run"
            ))),
            "{key}: {w:?}"
        );
    }
    let w = warnings(&format!(
        "{BASE}[[rules]]\nname = \"stuck\"\nkind = \"timeout\"\nmax_duration = \"auto\"\nfallback = \"0s\"\n"
    ));
    assert!(
        w.iter()
            .any(|w| w.starts_with("rules.toml:7: rule \"stuck\": fallback = \"0s\"")),
        "{w:?}"
    );
    let w = warnings(&format!(
        "{BASE}[[rules]]\nname = \"old\"\nkind = \"retention\"\nschedule = \"0 3 * * *\"\nolder_than = \"0s\"\n[rules.match]\nbranches = [\"feat/*\"]\n"
    ));
    assert!(
        w.iter().any(|w| w.starts_with(
            "rules.toml:7: rule \"old\": older_than = \"0s\": deletes every finished run"
        )),
        "{w:?}"
    );
    // `check` prints them and still succeeds.
    let (_, out) = check_with_env(
        "[currents]\nprojects = [\"bAYZ4a\"]\nwebhook_tolerance = \"0s\"\n[[rules]]\nname = \"stuck\"\nkind = \"timeout\"\nidle_for = \"0s\"\n[[rules]]\nname = \"old\"\nkind = \"retention\"\nschedule = \"0 3 * * *\"\nolder_than = \"0s\"\n[rules.match]\nbranches = [\"feat/*\"]\n",
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    for want in [
        "[currents] webhook_tolerance = \"0s\"",
        "rule \"stuck\": idle_for = \"0s\"",
        "rule \"old\": older_than = \"0s\"",
    ] {
        assert!(stderr.contains(want), "{want}: {stderr}");
    }
}

#[test]
fn a_negated_tag_pattern_is_an_error_that_points_at_tag_mode_none() {
    let e = err(&format!(
        "{BASE}[[rules]]\nname = \"s\"\nkind = \"supersede\"\n[rules.match]\ntags = [\"smoke\", \"!nightly\"]\n"
    ));
    assert!(
        e.starts_with("rules.toml:7:1: rule \"s\": match.tags: \"!nightly\": tags cannot be excluded with \"!\""),
        "{e}"
    );
    assert!(e.contains("tag_mode = \"none\""), "{e}");
    let e = err(&format!(
        "{BASE}[[rules]]\nname = \"old\"\nkind = \"retention\"\nolder_than = \"30d\"\npin_tags = [\"!keep\"]\n[rules.match]\nbranches = [\"*\"]\n"
    ));
    assert!(
        e.starts_with("rules.toml:7:1: rule \"old\": pin_tags: \"!keep\": "),
        "{e}"
    );
    // Branches and authors do exclude.
    load_str(
        &format!(
            "{BASE}[[rules]]\nname = \"s\"\nkind = \"supersede\"\n[rules.match]\nbranches = [\"!main\"]\nauthors = [\"!bot@*\"]\n"
        ),
        "rules.toml",
        &[],
    )
    .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn a_required_key_of_a_missing_section_is_located_at_1_1() {
    assert_eq!(
        err("dry_run = true\n"),
        "rules.toml:1:1: [currents] projects: list at least one Currents project id, e.g. projects = [\"bAYZ4a\"]"
    );
    assert!(err("").starts_with("rules.toml:1:1: [currents] projects"));
}

#[test]
fn rules_cannot_be_set_from_the_environment() {
    for var in [
        "RUNWARDEN__RULES__0__DRY_RUN",
        "RUNWARDEN__RULES",
        "RUNWARDEN__rules__0__name",
    ] {
        let env = vec![(var.to_string(), "true".to_string())];
        let e = load_str(
            &format!("{BASE}[[rules]]\nname = \"s\"\nkind = \"supersede\"\n"),
            "rules.toml",
            &env,
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            format!(
                "{var}: rules can only be set in the config file ([[rules]]), not from the environment; remove the variable and edit the rule in the file (a rule's dry_run = true, or the global RUNWARDEN__DRY_RUN=true)"
            )
        );
    }
}

/// `dashboard_url` without a scheme passed `check`, and then every valid Currents
/// webhook was refused 400 ("runUrl is not a run of the configured dashboard") and every
/// summary link was broken: it is checked like the API URLs.
#[test]
fn a_dashboard_url_without_a_scheme_is_an_error_naming_the_key() {
    let e = err(&format!("{BASE}dashboard_url = \"app.currents.dev\"\n"));
    assert!(
        e.contains("dashboard_url") && e.contains("app.currents.dev"),
        "{e}"
    );
    assert!(e.starts_with("rules.toml:3:"), "located: {e}");
    let ok = load_str(
        &format!("{BASE}dashboard_url = \"https://currents.example.com/\"\n"),
        "rules.toml",
        &[],
    )
    .unwrap();
    assert_eq!(
        ok.config.currents.dashboard_url,
        "https://currents.example.com"
    );
}

/// A summary rule with `events = []` would never run: an error, like an empty match
/// list.
#[test]
fn a_summary_rule_with_no_events_is_an_error() {
    let e = err(&format!(
        "{BASE}[[rules]]\nname = \"sum\"\nkind = \"summary\"\nevents = []\n"
    ));
    assert!(
        e.contains("rule \"sum\"") && e.contains("events") && e.contains("empty"),
        "{e}"
    );
}
